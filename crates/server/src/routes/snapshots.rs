//! Snapshot handlers (clauses 6.36–6.38): create and purge, retrieve,
//! update and delete one, clone one. Operations on a snapshot's data go
//! through the other handlers with the `NGSILD-Snapshot` header (see
//! `Ngsi`).

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use broker::snapshots::BASE_PATH;
use serde_json::{Value, json};

use super::created;
use super::entities::{body_and_ctx, link_ctx, resource_location};
use crate::http::{ApiResult, Produce, empty, json_response, negotiate, param, query_params};
use crate::{AppState, Ngsi};

/// POST /snapshots: Create Snapshot (clause 6.36.3.1), 201 with Location.
pub async fn create(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    query_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let id = state
        .broker
        .create_snapshot(&req.tenant, &ctx, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(created(&resource_location(BASE_PATH, &id)))
}

/// DELETE /snapshots?q=: Purge Snapshots (clause 6.36.3.2), 204, or 207
/// with a BatchOperationResult when some could not be deleted.
pub async fn purge(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params = query_params(req.query.as_deref(), &["q"]).map_err(|e| req.err(e))?;
    let results = state
        .broker
        .purge_snapshots(&req.tenant, param(&params, "q"))
        .await
        .map_err(|e| req.err(e))?;
    if results.iter().all(|(_, e)| e.is_none()) {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let (success, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, e)| e.is_none());
    let body = json!({
        "success": success.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "errors": errors.into_iter().filter_map(|(id, e)| {
            e.map(|e| json!({"entityId": id, "error": e.problem_details()}))
        }).collect::<Vec<_>>(),
    });
    Ok(json_response(
        StatusCode::MULTI_STATUS,
        Produce::Json,
        &broker::Ctx::core(),
        body,
    ))
}

/// GET /snapshots/{id}: Retrieve Snapshot Status (clause 6.37.3.1).
pub async fn retrieve(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    query_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let body = state
        .broker
        .retrieve_snapshot(&req.tenant, &id)
        .map_err(|e| req.err(e))?;
    Ok(json_response(StatusCode::OK, produce, &ctx, body))
}

/// PATCH /snapshots/{id}: Update Snapshot Status (clause 6.37.3.2), 200
/// with the Snapshot.
pub async fn update(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    query_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    let body = state
        .broker
        .update_snapshot(&req.tenant, &id, &value)
        .await
        .map_err(|e| req.err(e))?;
    Ok(json_response(StatusCode::OK, produce, &ctx, body))
}

/// DELETE /snapshots/{id}: Delete Snapshot (clause 6.37.3.3).
pub async fn delete(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    query_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    state
        .broker
        .delete_snapshot(&req.tenant, &id)
        .await
        .map_err(|e| req.err(e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// POST /snapshots/{id}/clone: Clone Snapshot (clause 6.38.3.1), 201 with
/// Location. The body (optional: an empty one clones as it is) gives the
/// clone's own members.
pub async fn clone(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    query_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let given = req
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| l.trim() != "0");
    let value: Option<Value> = if given {
        Some(body_and_ctx(&req, &state, body).await?.0)
    } else {
        None
    };
    let new_id = state
        .broker
        .clone_snapshot(&req.tenant, &id, value.as_ref())
        .await
        .map_err(|e| req.err(e))?;
    Ok(created(&resource_location(BASE_PATH, &new_id)))
}
