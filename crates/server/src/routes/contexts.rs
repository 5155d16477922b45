//! The @context serving endpoint (clause 5.13, HTTP binding 6.30).

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonld::{ContextInfo, ContextKind};
use ngsi_model::NgsiError;
use ngsi_model::time::format_micros;
use serde_json::{Value, json};

use super::created;
use crate::http::{ApiResult, empty, param, query_params as checked_params};
use crate::{AppState, Ngsi, read_body};

const BASE: &str = "/ngsi-ld/v1/jsonldContexts/";

fn json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn micros(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn info_json(i: &ContextInfo) -> Value {
    let local_id = i
        .url
        .rsplit_once(BASE)
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| i.url.clone());
    let mut v = json!({
        "URL": i.url,
        "localId": local_id,
        "kind": i.kind.as_str(),
        "createdAt": format_micros(micros(i.created_at)),
    });
    if i.kind == ContextKind::Cached {
        v["numberOfHits"] = json!(i.number_of_hits);
        if let Some(l) = i.last_usage {
            v["lastUsage"] = json!(format_micros(micros(l)));
        }
    }
    v
}

/// The value of a boolean parameter (`details`, `reload`): absent is false,
/// anything but `true` or `false` is BadRequestData (ETSI 052_04, 051_04_04).
fn flag(params: &[(String, String)], name: &str) -> Result<bool, NgsiError> {
    match param(params, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(NgsiError::bad_data(format!(
            "{name} must be true or false, not {v:?}"
        ))),
    }
}

/// Finds a held context from the id in the path: a local id of a hosted
/// context, or the (decoded) URL of any held context; only among those the
/// tenant sees (another tenant's hosted context is not found).
fn find(state: &AppState, tenant: &str, id: &str) -> Option<ContextInfo> {
    let broker = &state.broker;
    let resolver = broker.contexts();
    let visible = |e: &ContextInfo| broker.context_visible(tenant, e);
    resolver.entry(id).filter(visible).or_else(|| {
        let suffix = format!("{BASE}{id}");
        resolver
            .entries()
            .into_iter()
            .find(|e| e.url.ends_with(&suffix) && visible(e))
    })
}

/// POST /jsonldContexts
pub async fn add(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    checked_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let bytes = read_body(&req, &state, body).await?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|_| req.err(NgsiError::invalid_request("the body is not valid JSON")))?;
    let local = |v: &Value| matches!(v, Value::Object(_) | Value::String(_));
    match doc.get("@context") {
        Some(Value::Object(_) | Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(local) => {}
        // Well-formed JSON whose @context is no JSON-LD context: invalid
        // JSON-LD (clauses 5.13.2.4, 5.5.4; ETSI 5132_01).
        Some(_) => {
            return Err(req.err(NgsiError::bad_data(
                "the @context member must be a string, an object or an array of them",
            )));
        }
        None => {
            return Err(req.err(NgsiError::invalid_request(
                "the body must be an object with an @context member",
            )));
        }
    }
    // Check that the context is valid before hosting it.
    state
        .broker
        .context_from_value(&doc["@context"])
        .await
        .map_err(|e| req.err(e))?;
    let id = format!("{:016x}", rand_id());
    let url = format!("http://{}{BASE}{id}", req.host);
    // "All extra information located outside of the @context subtree ...
    // shall be discarded" (clause 5.13.2.3).
    let doc = serde_json::json!({ "@context": doc["@context"] });
    state
        .broker
        .host_context(&req.tenant, &url, doc)
        .await
        .map_err(|e| req.err(e))?;
    Ok(created(&format!("{BASE}{id}")))
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(ngsi_model::time::now_micros());
    h.finish()
}

/// GET /jsonldContexts
pub async fn list(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), &["details", "kind"]).map_err(|e| req.err(e))?;
    let details = flag(&params, "details").map_err(|e| req.err(e))?;
    let kind = match param(&params, "kind") {
        None => None,
        Some("Hosted") => Some(ContextKind::Hosted),
        Some("Cached") => Some(ContextKind::Cached),
        Some("ImplicitlyCreated") => Some(ContextKind::ImplicitlyCreated),
        Some(k) => return Err(req.err(NgsiError::bad_data(format!("unknown kind {k:?}")))),
    };
    let entries: Vec<ContextInfo> = state
        .broker
        .contexts()
        .entries()
        .into_iter()
        .filter(|e| {
            kind.is_none_or(|k| e.kind == k) && state.broker.context_visible(&req.tenant, e)
        })
        .collect();
    let body = if details {
        Value::Array(entries.iter().map(info_json).collect())
    } else {
        Value::Array(
            entries
                .iter()
                .map(|e| Value::String(e.url.clone()))
                .collect(),
        )
    };
    Ok(json(StatusCode::OK, &body))
}

/// GET /jsonldContexts/{id}
pub async fn serve(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    let params = checked_params(req.query.as_deref(), &["details"]).map_err(|e| req.err(e))?;
    let details = flag(&params, "details").map_err(|e| req.err(e))?;
    if let Some(doc) = jsonld::core_context_document(&id) {
        return Ok(json(StatusCode::OK, doc));
    }
    let info = find(&state, &req.tenant, &id)
        .ok_or_else(|| req.err(NgsiError::not_found(format!("no @context {id}"))))?;
    // A Cached context is a local copy of a document served elsewhere: its
    // metadata is served, its content is not (clauses 5.13.1, 5.13.4.4).
    if !details && info.kind == ContextKind::Cached {
        return Err(req.err(NgsiError::new(
            ngsi_model::ErrorKind::OperationNotSupported,
            format!(
                "{} is a cached copy of a remote @context; fetch it from that URL, or ask for details=true",
                info.url
            ),
        )));
    }
    // Serving finds the @context in the storage: that is one more hit
    // (numberOfHits, clause 5.13.3.5), counted in the details given now.
    let info = state.broker.contexts().hit(&info.url).unwrap_or(info);
    if details {
        return Ok(json(StatusCode::OK, &info_json(&info)));
    }
    let doc = state
        .broker
        .contexts()
        .document(&info.url)
        .ok_or_else(|| req.err(NgsiError::not_found(format!("no @context {id}"))))?;
    Ok(json(StatusCode::OK, &doc))
}

/// DELETE /jsonldContexts/{id}
pub async fn remove(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    let params = checked_params(req.query.as_deref(), &["reload"]).map_err(|e| req.err(e))?;
    let reload = flag(&params, "reload").map_err(|e| req.err(e))?;
    if jsonld::is_core_context_url(&id) {
        // The core context is built in: it cannot be deleted, and reloading
        // it has nothing to download (ETSI 051_08, 051_09).
        if reload {
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        return Err(req.err(NgsiError::bad_data("the core @context cannot be deleted")));
    }
    let info = find(&state, &req.tenant, &id);
    let resolver = state.broker.contexts();
    if reload {
        // Only a Cached context can be reloaded; an id that names none is
        // not one either (clause 5.13.5.4, ETSI 051_04_01).
        let Some(info) = info.filter(|i| i.kind == ContextKind::Cached) else {
            return Err(req.err(NgsiError::bad_data(
                "only a cached @context can be reloaded",
            )));
        };
        // A failed download, or an invalid document, is LdContextNotAvailable
        // and leaves the stored copy in place (clause 5.13.5.4).
        resolver.reload(&info.url).await.map_err(|e| {
            req.err(NgsiError::new(
                ngsi_model::ErrorKind::LdContextNotAvailable,
                format!("the @context {} could not be reloaded: {e}", info.url),
            ))
        })?;
    } else {
        let info =
            info.ok_or_else(|| req.err(NgsiError::not_found(format!("no @context {id}"))))?;
        state
            .broker
            .forget_context(&info.url)
            .await
            .map_err(|e| req.err(e))?;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}
