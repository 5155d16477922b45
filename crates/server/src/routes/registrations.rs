//! Context source registration handlers (clauses 6.8 and 6.9): the
//! registry only; nothing is forwarded to registered sources.

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use broker::registrations::RegistrationQuery;
use serde_json::Value;

use super::created;
use super::entities::{body_and_ctx, link_ctx};
use super::subscriptions::sys_attrs;
use crate::http::{ApiResult, empty, json_response, negotiate, query_params as checked_params};
use crate::{AppState, Ngsi};

/// The path of the registrations.
const PATH: &str = "/ngsi-ld/v1/csourceRegistrations";

/// POST /csourceRegistrations
pub async fn create(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let id = state
        .broker
        .create_registration(&req.tenant, &ctx, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(created(&format!("{PATH}/{id}")))
}

/// GET /csourceRegistrations
pub async fn query(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params = checked_params(
        req.query.as_deref(),
        &[
            "id",
            "idPattern",
            "type",
            "attrs",
            "q",
            "csf",
            "scopeQ",
            "georel",
            "geometry",
            "coordinates",
            "geoproperty",
            "timeproperty",
            "timerel",
            "timeAt",
            "endTimeAt",
            "limit",
            "offset",
            "count",
            "options",
            "local",
            "lang",
            "pick",
            "omit",
        ],
    )
    .map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let paging =
        super::Paging::from_params(&params, state.broker.config()).map_err(|e| req.err(e))?;
    let query = RegistrationQuery::from_params(
        &super::query_params(&params),
        &super::temporal::temporal_params(&params),
        &ctx,
    )
    .map_err(|e| req.err(e))?;
    let page = state
        .broker
        .query_registrations(
            &req.tenant,
            &ctx,
            &query,
            paging.offset,
            paging.limit,
            sys_attrs(&params),
        )
        .map_err(|e| req.err(e))?;
    let returned = page.items.len();
    let body = Value::Array(page.items.into_iter().map(Value::Object).collect());
    let mut resp = json_response(StatusCode::OK, produce, &ctx, body);
    // The links keep the query's other parameters as the client wrote them.
    let rest: Vec<&str> = req
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && !["limit=", "offset=", "count="]
                    .iter()
                    .any(|k| p.starts_with(k))
        })
        .collect();
    let path = if rest.is_empty() {
        PATH.to_string()
    } else {
        format!("{PATH}?{}", rest.join("&"))
    };
    paging.decorate(&mut resp, &path, returned, page.total);
    Ok(resp)
}

/// GET /csourceRegistrations/{id}
pub async fn retrieve(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), &["options", "local"]).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let r = state
        .broker
        .retrieve_registration(&req.tenant, &ctx, &id, sys_attrs(&params))
        .map_err(|e| req.err(e))?;
    Ok(json_response(
        StatusCode::OK,
        produce,
        &ctx,
        Value::Object(r),
    ))
}

/// PATCH /csourceRegistrations/{id}
pub async fn update(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    state
        .broker
        .update_registration(&req.tenant, &ctx, &id, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// DELETE /csourceRegistrations/{id}
pub async fn delete(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    state
        .broker
        .delete_registration(&req.tenant, &id)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}
