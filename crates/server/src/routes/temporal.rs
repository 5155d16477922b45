//! Temporal API handlers (clauses 6.18 to 6.24): the history of entities.

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use broker::{Ctx, TemporalParams, TemporalQuery, TemporalResult};
use serde_json::Value;

use super::entities::{
    QUERY_PARAMS, RETRIEVE_PARAMS, body_and_ctx, delete_all_param, link_ctx, resource_location,
};
use super::paging::{paging_links, post_query_target};
use super::{created, query_params};
use crate::http::{
    ApiResult, Produce, empty, json_response, negotiate, param, query_params as checked_params,
};
use crate::{AppState, Ngsi};

/// The temporal parameters of GET requests (clause 6.18.3.1).
pub(crate) const TEMPORAL_PARAMS: &[&str] = &[
    "timerel",
    "timeAt",
    "endTimeAt",
    "timeproperty",
    "lastN",
    "aggrMethods",
    "aggrPeriodDuration",
];

const BASE: &str = "/ngsi-ld/v1/temporal/entities";
const POST_QUERY: &str = "/ngsi-ld/v1/temporal/entityOperations/query";

fn allowed(base: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(TEMPORAL_PARAMS).copied().collect()
}

pub(super) fn temporal_params(params: &[(String, String)]) -> TemporalParams {
    let get = |n: &str| param(params, n).map(str::to_string);
    TemporalParams {
        timerel: get("timerel"),
        time_at: get("timeAt"),
        end_time_at: get("endTimeAt"),
        timeproperty: get("timeproperty"),
        last_n: get("lastN"),
        aggr_methods: get("aggrMethods"),
        aggr_period_duration: get("aggrPeriodDuration"),
        local: get("local"),
        csf: get("csf"),
    }
}

/// 200, or 206 with Content-Range when the server cut some attribute's
/// instances at its limit (clause 6.3.10).
fn temporal_response(
    produce: Produce,
    ctx: &Ctx,
    body: Value,
    range: Option<broker::ContentRange>,
) -> Response {
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = json_response(status, produce, ctx, body);
    if let Some(r) = range
        && let Ok(v) = HeaderValue::from_str(&r.header())
    {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// GET /temporal/entities/{id}
pub async fn retrieve(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), &allowed(RETRIEVE_PARAMS)).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let query =
        TemporalQuery::for_retrieve(&query_params(&params), &temporal_params(&params), &ctx)
            .map_err(|e| req.err(e))?;
    let map = super::entity_maps::map_request(&req, &params)?;
    let origin = broker::registrations::Origin {
        local: super::entities::local_param(&params),
        ..super::entities::origin(&req)
    };
    let (entity, range, warnings) = state
        .broker
        .retrieve_temporal_distributed(&req.tenant, &ctx, &id, &query, &origin)
        .await
        .map_err(|e| req.err(e))?;
    let map = state
        .broker
        .entity_map_of_one(&req.tenant, &id, &map)
        .map_err(|e| req.err(e))?;
    let mut resp = temporal_response(produce, &ctx, Value::Object(entity), range);
    super::entities::add_warnings(&mut resp, &warnings);
    super::entity_maps::mark_map(&mut resp, map.as_ref(), false);
    Ok(resp)
}

/// Runs a temporal query and answers it with paging links, the count and,
/// for a cut answer, Content-Range.
async fn run_query(
    state: &AppState,
    req: &Ngsi,
    produce: Produce,
    ctx: &Ctx,
    params: &[(String, String)],
    query: &TemporalQuery,
    body: Option<&Value>,
) -> ApiResult {
    let map = match body {
        Some(b) => super::entity_maps::map_request_of_body(req, b)?,
        None => super::entity_maps::map_request(req, params)?,
    };
    let origin = broker::registrations::Origin {
        body,
        ..super::entities::origin(req)
    };
    let (result, warnings, map) = state
        .broker
        .query_temporal_mapped(&req.tenant, ctx, query, &origin, &map)
        .await
        .map_err(|e| req.err(e))?;
    let (path, link_params) = match body {
        Some(b) => post_query_target(BASE, POST_QUERY, params, b, true),
        None => (BASE, params.to_vec()),
    };
    let mut resp = query_response(produce, ctx, (path, &link_params), query, result);
    super::entities::add_warnings(&mut resp, &warnings);
    super::entity_maps::mark_map(&mut resp, map.as_ref(), true);
    Ok(resp)
}

/// The answer of a temporal query; its paging links go to `links`, a path
/// and its parameters.
fn query_response(
    produce: Produce,
    ctx: &Ctx,
    links: (&str, &[(String, String)]),
    query: &TemporalQuery,
    result: TemporalResult,
) -> Response {
    let links = paging_links(
        links.0,
        links.1,
        &query.entities,
        result.total,
        result.entities.len(),
    );
    let body = Value::Array(result.entities.into_iter().map(Value::Object).collect());
    let mut resp = temporal_response(produce, ctx, body, result.range);
    if let Some(total) = result.total {
        resp.headers_mut()
            .insert("NGSILD-Results-Count", HeaderValue::from(total));
    }
    for l in links {
        if let Ok(v) = HeaderValue::from_str(&l) {
            resp.headers_mut().append(header::LINK, v);
        }
    }
    resp
}

/// The temporal query of a GET request's parameters.
pub(super) fn query_of_params(
    state: &AppState,
    req: &Ngsi,
    ctx: &Ctx,
    params: &[(String, String)],
) -> Result<TemporalQuery, crate::http::ApiError> {
    let cfg = state.broker.config();
    TemporalQuery::from_params(
        &query_params(params),
        &temporal_params(params),
        ctx,
        cfg.default_limit,
        cfg.max_limit,
    )
    .map_err(|e| req.err(e))
}

/// The temporal query of a Query body (with `temporalQ`) and the URL's
/// parameters.
pub(super) fn query_of_body(
    state: &AppState,
    req: &Ngsi,
    ctx: &Ctx,
    body: &Value,
    params: &[(String, String)],
) -> Result<TemporalQuery, crate::http::ApiError> {
    let cfg = state.broker.config();
    TemporalQuery::from_json(
        body,
        &query_params(params),
        &temporal_params(params),
        ctx,
        cfg.default_limit,
        cfg.max_limit,
    )
    .map_err(|e| req.err(e))
}

/// GET /temporal/entities
pub async fn query(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), &allowed(QUERY_PARAMS)).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let query = query_of_params(&state, &req, &ctx, &params)?;
    run_query(&state, &req, produce, &ctx, &params, &query, None).await
}

/// POST /temporal/entityOperations/query
pub async fn query_post(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let params = checked_params(req.query.as_deref(), broker::POST_TEMPORAL_QUERY_PARAMS)
        .map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let query = query_of_body(&state, &req, &ctx, &value, &params)?;
    run_query(&state, &req, produce, &ctx, &params, &query, Some(&value)).await
}

/// POST /temporal/entities: 201 when the temporal entity is new, else 204.
pub async fn create(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let (id, new) = state
        .broker
        .create_temporal(&req.tenant, &ctx, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(if new {
        created(&resource_location(BASE, &id))
    } else {
        empty(StatusCode::NO_CONTENT)
    })
}

/// POST /temporal/entities/{id}/attrs
pub async fn append(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    state
        .broker
        .append_temporal(&req.tenant, &ctx, &id, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// DELETE /temporal/entities/{id}
pub async fn delete(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    checked_params(req.query.as_deref(), &["type", "local"]).map_err(|e| req.err(e))?;
    state
        .broker
        .delete_temporal(&req.tenant, &id)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// DELETE /temporal/entities/{id}/attrs/{attr}
pub async fn delete_attr(
    State(state): State<AppState>,
    req: Ngsi,
    Path((id, attr)): Path<(String, String)>,
) -> ApiResult {
    let params = checked_params(req.query.as_deref(), &["datasetId", "deleteAll", "local"])
        .map_err(|e| req.err(e))?;
    let delete_all = delete_all_param(&params).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    state
        .broker
        .delete_temporal_attr(
            &req.tenant,
            &ctx,
            &id,
            &attr,
            param(&params, "datasetId"),
            delete_all,
        )
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// PATCH /temporal/entities/{id}/attrs/{attr}/{instanceId}
pub async fn modify_instance(
    State(state): State<AppState>,
    req: Ngsi,
    Path((id, attr, instance)): Path<(String, String, String)>,
    body: Body,
) -> ApiResult {
    checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    state
        .broker
        .modify_temporal_instance(&req.tenant, &ctx, &id, &attr, &instance, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// DELETE /temporal/entities/{id}/attrs/{attr}/{instanceId}
pub async fn delete_instance(
    State(state): State<AppState>,
    req: Ngsi,
    Path((id, attr, instance)): Path<(String, String, String)>,
) -> ApiResult {
    checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    state
        .broker
        .delete_temporal_instance(&req.tenant, &ctx, &id, &attr, &instance)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}
