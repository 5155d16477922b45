//! Routes of the NGSI-LD API. Each handler extracts, calls one broker method
//! and maps the result.

mod contexts;
mod entities;
mod entity_maps;
mod info;
mod paging;
mod registrations;
mod snapshots;
mod subscriptions;
mod temporal;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use broker::{BodyKind, QueryParams};
use ngsi_model::{ErrorKind, NgsiError};

use crate::AppState;
use crate::http::{ApiError, Consume, param};

/// The routes under `/ngsi-ld/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/entities",
            post(entities::create)
                .get(entities::query)
                .delete(entities::purge)
                .patch(entities::missing_id)
                .put(entities::missing_id),
        )
        .route(
            "/entities/{id}",
            get(entities::retrieve)
                .patch(entities::merge)
                .put(entities::replace)
                .delete(entities::delete),
        )
        .route(
            "/entities/{id}/attrs",
            post(entities::append).patch(entities::update),
        )
        .route(
            "/entities/{id}/attrs/{attr}",
            patch(entities::partial_update)
                .put(entities::replace_attr)
                .delete(entities::delete_attr),
        )
        .route("/entityOperations/create", post(entities::batch_create))
        .route("/entityOperations/upsert", post(entities::batch_upsert))
        .route("/entityOperations/update", post(entities::batch_update))
        .route("/entityOperations/merge", post(entities::batch_merge))
        .route("/entityOperations/delete", post(entities::batch_delete))
        .route("/entityOperations/query", post(entities::query_post))
        .route("/types", get(entities::types))
        .route("/types/{type}", get(entities::type_info))
        .route("/attributes", get(entities::attributes))
        .route("/attributes/{attr}", get(entities::attribute_info))
        .route(
            "/csourceRegistrations",
            post(registrations::create).get(registrations::query),
        )
        .route(
            "/csourceRegistrations/{id}",
            get(registrations::retrieve)
                .patch(registrations::update)
                .delete(registrations::delete),
        )
        .route(
            "/csourceSubscriptions",
            post(subscriptions::create::<true>).get(subscriptions::query::<true>),
        )
        .route(
            "/csourceSubscriptions/{id}",
            get(subscriptions::retrieve::<true>)
                .patch(subscriptions::update::<true>)
                .delete(subscriptions::delete::<true>),
        )
        .route(
            "/subscriptions",
            post(subscriptions::create::<false>).get(subscriptions::query::<false>),
        )
        .route(
            "/subscriptions/{id}",
            get(subscriptions::retrieve::<false>)
                .patch(subscriptions::update::<false>)
                .delete(subscriptions::delete::<false>),
        )
        .route(
            "/temporal/entities",
            post(temporal::create).get(temporal::query),
        )
        .route(
            "/temporal/entities/{id}",
            get(temporal::retrieve).delete(temporal::delete),
        )
        .route("/temporal/entities/{id}/attrs", post(temporal::append))
        .route(
            "/temporal/entities/{id}/attrs/{attr}",
            delete(temporal::delete_attr),
        )
        .route(
            "/temporal/entities/{id}/attrs/{attr}/{instance}",
            patch(temporal::modify_instance).delete(temporal::delete_instance),
        )
        .route(
            "/temporal/entityOperations/query",
            post(temporal::query_post),
        )
        .route(
            "/entityMaps",
            get(entity_maps::create).post(entity_maps::create_post),
        )
        .route(
            "/entityMaps/{id}",
            get(entity_maps::retrieve)
                .patch(entity_maps::update)
                .delete(entity_maps::delete),
        )
        .route(
            "/temporal/entityMaps",
            get(entity_maps::create_temporal).post(entity_maps::create_temporal_post),
        )
        .route(
            "/snapshots",
            post(snapshots::create).delete(snapshots::purge),
        )
        .route(
            "/snapshots/{id}",
            get(snapshots::retrieve)
                .patch(snapshots::update)
                .delete(snapshots::delete),
        )
        .route("/snapshots/{id}/clone", post(snapshots::clone))
        .route("/jsonldContexts", post(contexts::add).get(contexts::list))
        .route("/info/sourceIdentity", get(info::source_identity))
        .route(
            "/jsonldContexts/{id}",
            get(contexts::serve).delete(contexts::remove),
        )
}

/// Operational routes outside the NGSI-LD base path.
pub fn ops_router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/wuyang/v1/live", get(subscriptions::live))
        .route(
            broker::subscriptions::CALLBACK_PATH,
            post(subscriptions::remote_notification),
        )
        .route(
            "/",
            delete(not_found)
                .get(|| async { "Wuyang NGSI-LD context broker: the API is under /ngsi-ld/v1\n" }),
        )
}

async fn health(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "entities": state.broker.store().entity_count(),
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The answer for paths the API does not have.
pub async fn not_found() -> ApiError {
    ApiError::from(NgsiError::new(
        ErrorKind::ResourceNotFound,
        "no such resource",
    ))
}

/// The JSON-LD rule for a body of the given media type.
pub(crate) fn body_kind(c: Consume) -> BodyKind {
    match c {
        Consume::LdJson => BodyKind::LdJson,
        Consume::Json | Consume::MergePatch => BodyKind::Json,
    }
}

/// Builds [`QueryParams`] from checked parameters.
pub(crate) fn query_params(params: &[(String, String)]) -> QueryParams {
    let get = |n: &str| param(params, n).map(str::to_string);
    QueryParams {
        id: get("id"),
        id_pattern: get("idPattern"),
        r#type: get("type"),
        attrs: get("attrs"),
        pick: get("pick"),
        omit: get("omit"),
        q: get("q"),
        scope_q: get("scopeQ"),
        georel: get("georel"),
        geometry: get("geometry"),
        coordinates: get("coordinates"),
        geoproperty: get("geoproperty"),
        limit: get("limit"),
        offset: get("offset"),
        count: get("count"),
        options: get("options"),
        format: get("format"),
        lang: get("lang"),
        dataset_id: get("datasetId"),
        keep: get("keep"),
        drop: get("drop"),
        order_by: get("orderBy"),
        local: get("local"),
        csf: get("csf"),
        order_from: get("orderFrom"),
        collation: get("collation"),
        expand_values: get("expandValues"),
        json_keys: get("jsonKeys"),
        order_geometry: get("orderGeometry"),
        split_entities: get("splitEntities"),
    }
}

/// The paging of a listing of subscriptions or registrations: `limit`,
/// `offset` and `count` (clause 5.5.9).
pub(crate) struct Paging {
    pub offset: usize,
    pub limit: usize,
    pub count: bool,
}

impl Paging {
    /// Reads and checks the parameters against the server's limits.
    pub(crate) fn from_params(
        params: &[(String, String)],
        cfg: &broker::BrokerConfig,
    ) -> Result<Self, NgsiError> {
        let number = |name: &str, default: usize| -> Result<usize, NgsiError> {
            match param(params, name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    NgsiError::bad_data(format!("{name} must be a non-negative integer"))
                }),
            }
        };
        let limit = number("limit", cfg.default_limit)?;
        let offset = number("offset", 0)?;
        if limit > cfg.max_limit {
            return Err(NgsiError::new(
                ErrorKind::TooManyResults,
                format!("limit {limit} is above the maximum of {}", cfg.max_limit),
            ));
        }
        let count = match param(params, "count") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(NgsiError::bad_data("count must be true or false")),
        };
        if limit == 0 && !count {
            return Err(NgsiError::bad_data(
                "limit=0 is only allowed with count=true",
            ));
        }
        Ok(Self {
            offset,
            limit,
            count,
        })
    }

    /// Adds `NGSILD-Results-Count` (when counted) and the `prev`/`next`
    /// links of the page to `resp`. `path` is the listing's path and query
    /// string without limit and offset, which the links append.
    pub(crate) fn decorate(&self, resp: &mut Response, path: &str, returned: usize, total: usize) {
        if self.count {
            resp.headers_mut()
                .insert("NGSILD-Results-Count", HeaderValue::from(total));
        }
        let limit = self.limit;
        let sep = if path.contains('?') { '&' } else { '?' };
        // The links carry every parameter of the page (clause 5.5.9.1), in
        // the form of ETSI 031_02 and 037_11 (`;rel` without a space and
        // the type application/ld+json, whatever the answer's).
        let count = if self.count { "count=true&" } else { "" };
        let link = |offset: usize, rel: &str| {
            format!(
                "<{path}{sep}{count}limit={limit}&offset={offset}>;rel=\"{rel}\";type=\"application/ld+json\""
            )
        };
        if self.offset > 0 && limit > 0 {
            let v = link(self.offset.saturating_sub(limit), "prev");
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::LINK, v);
            }
        }
        if limit > 0 && self.offset + returned < total {
            let v = link(self.offset + limit, "next");
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::LINK, v);
            }
        }
    }
}

/// 201 Created with a Location header.
pub(crate) fn created(location: &str) -> Response {
    let mut r = crate::http::empty(StatusCode::CREATED);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
