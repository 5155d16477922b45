//! EntityMap handlers (clauses 6.32, 6.34, 6.35) and what the reads that
//! take an EntityMap share: the `entityMap` and `entityMapLifetime`
//! parameters, the `NGSILD-EntityMap` header.

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use broker::TemporalQuery;
use broker::entity_maps::{self, MapAnswer, MapRequest};
use ngsi_model::NgsiError;
use serde_json::Value;

use super::entities::{QUERY_PARAMS, body_and_ctx, link_ctx, origin};
use super::temporal::TEMPORAL_PARAMS;
use crate::http::{
    ApiError, ApiResult, empty, json_response, negotiate, param, query_params as checked_params,
};
use crate::{AppState, Ngsi};

/// The parameter suggesting a map's lifetime (Table 6.4.3.2-1).
pub(crate) const LIFETIME: &str = "entityMapLifetime";

/// What a read asks of EntityMaps through its URL and headers.
pub(crate) fn map_request(req: &Ngsi, params: &[(String, String)]) -> Result<MapRequest, ApiError> {
    MapRequest::from_parts(
        param(params, "entityMap"),
        param(params, LIFETIME),
        header(req)?,
    )
    .map_err(|e| req.err(e))
}

/// What a query asks of EntityMaps through its Query body (clause 5.2.23:
/// `entityMap`, `entityMapLifetime`) and headers.
pub(crate) fn map_request_of_body(req: &Ngsi, body: &Value) -> Result<MapRequest, ApiError> {
    let wanted = match body.get("entityMap") {
        None => None,
        Some(Value::Bool(b)) => Some(if *b { "true" } else { "false" }),
        Some(_) => {
            return Err(req.err(NgsiError::bad_data("entityMap must be a boolean")));
        }
    };
    let lifetime = match body.get(LIFETIME) {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(req.err(NgsiError::bad_data(
                "entityMapLifetime must be an ISO 8601 duration string",
            )));
        }
    };
    MapRequest::from_parts(wanted, lifetime, header(req)?).map_err(|e| req.err(e))
}

fn header(req: &Ngsi) -> Result<Option<&str>, ApiError> {
    req.headers
        .get(entity_maps::HEADER)
        .map(|v| {
            v.to_str().map_err(|_| {
                req.err(NgsiError::bad_data(
                    "the NGSILD-EntityMap header is not text",
                ))
            })
        })
        .transpose()
}

/// Names the map a read used in its answer (`NGSILD-EntityMap`), and for
/// a query that made it answers 201 (Table 6.4.3.2-3).
pub(crate) fn mark_map(resp: &mut Response, map: Option<&MapAnswer>, created_is_201: bool) {
    let Some(map) = map else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&entity_maps::location(&map.id)) {
        resp.headers_mut().insert(entity_maps::HEADER, v);
    }
    if map.created && created_is_201 && resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::CREATED;
    }
}

/// The answer of a map's creation: 201, the map, its location.
fn created_map(
    state: &AppState,
    req: &Ngsi,
    produce: crate::http::Produce,
    ctx: &broker::Ctx,
    id: &str,
    warnings: &[String],
) -> ApiResult {
    let body = state
        .broker
        .entity_map(&req.tenant, id)
        .map_err(|e| req.err(e))?;
    let mut resp = json_response(StatusCode::CREATED, produce, ctx, body);
    mark_map(
        &mut resp,
        Some(&MapAnswer {
            id: id.into(),
            created: true,
        }),
        false,
    );
    super::entities::add_warnings(&mut resp, warnings);
    Ok(resp)
}

/// The Query Entities parameters without paging: a map holds every match
/// (clause 5.14.4.3: limit is ignored).
fn without_paging(params: &[(String, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(k, _)| k != "limit" && k != "offset")
        .cloned()
        .collect()
}

fn lifetime_of(req: &Ngsi, lifetime: Option<&str>) -> Result<Option<i64>, ApiError> {
    lifetime
        .map(entity_maps::parse_lifetime)
        .transpose()
        .map_err(|e| req.err(e))
}

/// GET /entityMaps: Create EntityMap for Query Entities (clause 6.34.3.1).
pub async fn create(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params = checked_params(req.query.as_deref(), QUERY_PARAMS).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let query = super::entities::query_of_params(&state, &req, &ctx, &without_paging(&params))?;
    let lifetime = lifetime_of(&req, param(&params, LIFETIME))?;
    let local = super::entities::local_param(&params);
    let origin = broker::registrations::Origin {
        local,
        ..origin(&req)
    };
    query_map(&state, &req, produce, &ctx, &query, &origin, lifetime).await
}

/// POST /entityMaps: Create EntityMap for Query Entities from a Query
/// (clause 6.34.3.2).
pub async fn create_post(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let params = checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let query = super::entities::query_of_body(&state, &req, &ctx, &value, &params)?;
    let lifetime = map_request_of_body(&req, &value)?.lifetime_micros;
    let origin = broker::registrations::Origin {
        body: Some(&value),
        ..origin(&req)
    };
    query_map(&state, &req, produce, &ctx, &query, &origin, lifetime).await
}

/// Makes the map of an entity query and answers its creation.
async fn query_map(
    state: &AppState,
    req: &Ngsi,
    produce: crate::http::Produce,
    ctx: &broker::Ctx,
    query: &broker::EntityQuery,
    origin: &broker::registrations::Origin<'_>,
    lifetime: Option<i64>,
) -> ApiResult {
    let (view, warnings) = state
        .broker
        .make_entity_map(&req.tenant, ctx, query, origin, lifetime)
        .await
        .map_err(|e| req.err(e))?;
    created_map(state, req, produce, ctx, &view.id, &warnings)
}

/// A temporal query needs its time range to make a map (clause 5.14.5.4).
fn temporal_range_given(req: &Ngsi, given: bool) -> Result<(), ApiError> {
    if given {
        Ok(())
    } else {
        Err(req.err(NgsiError::bad_data(
            "an EntityMap for a temporal query needs the temporal query (timerel)",
        )))
    }
}

/// GET /temporal/entityMaps: Create EntityMap for Query Temporal Evolution
/// (clause 6.35.3.1).
pub async fn create_temporal(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let allowed: Vec<&str> = QUERY_PARAMS
        .iter()
        .chain(TEMPORAL_PARAMS)
        .copied()
        .collect();
    let params = checked_params(req.query.as_deref(), &allowed).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    temporal_range_given(&req, param(&params, "timerel").is_some())?;
    let ctx = link_ctx(&req, &state).await?;
    let params = without_paging(&params);
    let query = super::temporal::query_of_params(&state, &req, &ctx, &params)?;
    let lifetime = lifetime_of(&req, param(&params, LIFETIME))?;
    temporal_map(&state, &req, produce, &ctx, &query, lifetime).await
}

/// Makes the map of a temporal query and answers its creation.
async fn temporal_map(
    state: &AppState,
    req: &Ngsi,
    produce: crate::http::Produce,
    ctx: &broker::Ctx,
    query: &TemporalQuery,
    lifetime: Option<i64>,
) -> ApiResult {
    let view = state
        .broker
        .make_temporal_entity_map(&req.tenant, query, lifetime)
        .await
        .map_err(|e| req.err(e))?;
    created_map(state, req, produce, ctx, &view.id, &[])
}

/// POST /temporal/entityMaps: the same from a Query with `temporalQ`
/// (clause 6.35.3.2).
pub async fn create_temporal_post(
    State(state): State<AppState>,
    req: Ngsi,
    body: Body,
) -> ApiResult {
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let params = checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    temporal_range_given(&req, value.get("temporalQ").is_some())?;
    let query = super::temporal::query_of_body(&state, &req, &ctx, &value, &params)?;
    let lifetime = map_request_of_body(&req, &value)?.lifetime_micros;
    temporal_map(&state, &req, produce, &ctx, &query, lifetime).await
}

/// GET /entityMaps/{entityMapId} (clause 6.32.3.1).
pub async fn retrieve(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let body = state
        .broker
        .entity_map(&req.tenant, &id)
        .map_err(|e| req.err(e))?;
    Ok(json_response(StatusCode::OK, produce, &ctx, body))
}

/// PATCH /entityMaps/{entityMapId} (clause 6.32.3.2): 204.
pub async fn update(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let (value, _, _) = body_and_ctx(&req, &state, body).await?;
    state
        .broker
        .update_entity_map(&req.tenant, &id, &value)
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// DELETE /entityMaps/{entityMapId} (clause 6.32.3.3): 204.
pub async fn delete(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    state
        .broker
        .delete_entity_map(&req.tenant, &id)
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}
