//! Subscription handlers (clauses 6.10 and 6.11) and the live stream
//! (this project's extension).

use std::convert::Infallible;
use std::time::Duration;

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use broker::EntityQuery;
use ngsi_model::{ErrorKind, NgsiError};
use serde_json::Value;

use super::created;
use super::entities::{body_and_ctx, link_ctx};
use crate::http::{
    ApiResult, empty, json_response, negotiate, param, query_params as checked_params,
};
use crate::{AppState, Ngsi};

pub(super) fn sys_attrs(params: &[(String, String)]) -> bool {
    param(params, "options").is_some_and(|o| o.split(',').any(|x| x.trim() == "sysAttrs"))
}

/// The handlers below serve subscriptions to entities (`/subscriptions`,
/// clause 5.8) and, with `CSR`, subscriptions to context source
/// registrations (`/csourceSubscriptions`, clause 5.11): the same data
/// type, the same requests.
fn base(csr: bool) -> &'static str {
    if csr {
        "/ngsi-ld/v1/csourceSubscriptions"
    } else {
        "/ngsi-ld/v1/subscriptions"
    }
}

/// POST /subscriptions, POST /csourceSubscriptions
pub async fn create<const CSR: bool>(
    State(state): State<AppState>,
    req: Ngsi,
    body: Body,
) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let origin = format!("http://{}", req.host);
    let broker = &state.broker;
    let id = if CSR {
        broker
            .create_csr_subscription(&req.tenant, &ctx, &value, &origin)
            .await
    } else {
        let via: Vec<&str> = req
            .headers
            .get_all(axum::http::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let via = (!via.is_empty()).then(|| via.join(", "));
        broker
            .create_subscription(&req.tenant, &ctx, &value, &origin, via.as_deref())
            .await
    }
    .map_err(|e| req.err(e))?;
    Ok(created(&format!("{}/{id}", base(CSR))))
}

/// GET /subscriptions, GET /csourceSubscriptions
pub async fn query<const CSR: bool>(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params = checked_params(
        req.query.as_deref(),
        &["limit", "offset", "count", "options", "local"],
    )
    .map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let paging =
        super::Paging::from_params(&params, state.broker.config()).map_err(|e| req.err(e))?;
    let (offset, limit, sys) = (paging.offset, paging.limit, sys_attrs(&params));
    let broker = &state.broker;
    let page = if CSR {
        broker.query_csr_subscriptions(&req.tenant, &ctx, offset, limit, sys)
    } else {
        broker.query_subscriptions(&req.tenant, &ctx, offset, limit, sys)
    }
    .map_err(|e| req.err(e))?;
    let returned = page.items.len();
    let body = Value::Array(page.items.into_iter().map(Value::Object).collect());
    let mut resp = json_response(StatusCode::OK, produce, &ctx, body);
    paging.decorate(&mut resp, base(CSR), returned, page.total);
    Ok(resp)
}

/// GET /subscriptions/{id}, GET /csourceSubscriptions/{id}
pub async fn retrieve<const CSR: bool>(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), &["options", "local"]).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let sys = sys_attrs(&params);
    let sub = if CSR {
        state
            .broker
            .retrieve_csr_subscription(&req.tenant, &ctx, &id, sys)
    } else {
        state
            .broker
            .retrieve_subscription(&req.tenant, &ctx, &id, sys)
    }
    .map_err(|e| req.err(e))?;
    Ok(json_response(
        StatusCode::OK,
        produce,
        &ctx,
        Value::Object(sub),
    ))
}

/// PATCH /subscriptions/{id}, PATCH /csourceSubscriptions/{id}
pub async fn update<const CSR: bool>(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let origin = format!("http://{}", req.host);
    let broker = &state.broker;
    if CSR {
        broker
            .update_csr_subscription(&req.tenant, &ctx, &id, &value, &origin)
            .await
    } else {
        broker
            .update_subscription(&req.tenant, &ctx, &id, &value, &origin)
            .await
    }
    .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// DELETE /subscriptions/{id}, DELETE /csourceSubscriptions/{id}
pub async fn delete<const CSR: bool>(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    if CSR {
        state.broker.delete_csr_subscription(&req.tenant, &id).await
    } else {
        state.broker.delete_subscription(&req.tenant, &id).await
    }
    .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// POST /wuyang/v1/notifications: a notification that a registered context
/// source sends for the copy of one of this broker's subscriptions (clause
/// 5.8.6); the copy's id finds the subscription and its tenant. 200 once
/// the entities are queued for the subscription's receiver.
pub async fn remote_notification(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, crate::http::ApiError> {
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            NgsiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the request body is larger than {} bytes",
                    state.config.max_body_bytes
                ),
            )
        })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| NgsiError::invalid_request(format!("the Notification is not JSON: {e}")))?;
    state.broker.remote_notification(&value)?;
    Ok(empty(StatusCode::OK))
}

/// GET /wuyang/v1/live: Server-Sent Events, one `notification` event per
/// matching change, with the query parameters of GET /entities as filter
/// (type, id, idPattern, q, scopeQ, geo-query, attrs, pick, omit, options).
pub async fn live(
    State(state): State<AppState>,
    req: Ngsi,
) -> Result<Response, crate::http::ApiError> {
    let params = checked_params(
        req.query.as_deref(),
        &[
            "id",
            "idPattern",
            "type",
            "attrs",
            "pick",
            "omit",
            "q",
            "scopeQ",
            "georel",
            "geometry",
            "coordinates",
            "geoproperty",
            "lang",
            "options",
            "format",
        ],
    )
    .map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let query = EntityQuery::from_params(&super::query_params(&params), &ctx, 1, usize::MAX)
        .map_err(|e| req.err(e))?;
    let rx = state.broker.live_stream(&req.tenant, ctx, query);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        let event = Event::default()
            .event("notification")
            .data(String::from_utf8_lossy(&item));
        Some((Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
