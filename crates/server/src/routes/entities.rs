//! Entity, batch, query and discovery handlers (clauses 6.4 to 6.28).

use crate::http::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use broker::registrations::{Origin, Write, WriteAnswer, WriteKind};
use broker::{BatchResult, Ctx, EntityQuery, Instances, UpdateResult, UpsertMode, ViewOptions};
use bytes::Bytes;
use ngsi_model::{Json, JsonDoc, NgsiError, compat};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;

use super::paging::{paging_links, post_query_target};
use super::{body_kind, created, query_params};
use crate::http::{
    ApiResult, Consume, Produce, content_type, empty, json_array_response, json_response,
    link_context, negotiate, param, parse_body, parse_doc, query_params as checked_params,
};
use crate::{AppState, Ngsi, read_body};

pub(crate) const QUERY_PARAMS: &[&str] = &[
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
    "geometryProperty",
    "lang",
    "datasetId",
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "local",
    "link",
    "csf",
    "join",
    "joinLevel",
    "entityMap",
    "entityMapLifetime",
    "containedBy",
    "expandValues",
    "jsonKeys",
    "orderBy",
    "orderFrom",
    "orderGeometry",
    "collation",
    "splitEntities",
];
pub(crate) const RETRIEVE_PARAMS: &[&str] = &[
    "type",
    "attrs",
    "pick",
    "omit",
    "geometryProperty",
    "lang",
    "options",
    "format",
    "local",
    "datasetId",
    "join",
    "joinLevel",
    "containedBy",
    "entityMap",
    "entityMapLifetime",
    "link",
];
const WRITE_PARAMS: &[&str] = &["options", "local", "format"];
/// The parameters of the writes on one entity, which also take the
/// selector of Entity types (clause 5.6).
const ENTITY_WRITE_PARAMS: &[&str] = &["options", "local", "format", "type"];
/// Merge Entity's, with its common values (Table 6.5.3.4-1).
const MERGE_PARAMS: &[&str] = &["options", "local", "format", "type", "lang", "observedAt"];

/// Reads and parses a JSON body after the Content-Type check, and resolves
/// its @context.
pub(crate) async fn body_and_ctx(
    req: &Ngsi,
    state: &AppState,
    body: Body,
) -> Result<(Value, Consume, Ctx), crate::http::ApiError> {
    let (bytes, consume) = json_body(req, state, body).await?;
    let value = parse_body(&bytes, state.config.max_json_depth).map_err(|e| req.err(e))?;
    let ctx = body_ctx(req, state, consume, &value).await?;
    Ok((value, consume, ctx))
}

/// Reads a JSON body after the Content-Type check.
async fn json_body(
    req: &Ngsi,
    state: &AppState,
    body: Body,
) -> Result<(Bytes, Consume), crate::http::ApiError> {
    let consume = content_type(&req.headers, &req.method).map_err(|e| req.err(e))?;
    let bytes = read_body(req, state, body).await?;
    Ok((bytes, consume))
}

/// Parses a body read by [`json_body`] into a [`Json`] borrowing from it.
fn body_doc<'a>(
    req: &Ngsi,
    state: &AppState,
    bytes: &'a Bytes,
) -> Result<Json<'a>, crate::http::ApiError> {
    parse_doc(bytes, state.config.max_json_depth).map_err(|e| req.err(e))
}

/// Resolves the @context of a body: its Link header, or its own @context.
async fn body_ctx(
    req: &Ngsi,
    state: &AppState,
    consume: Consume,
    doc: &(impl JsonDoc + Sync),
) -> Result<Ctx, crate::http::ApiError> {
    let link = link_context(&req.headers).map_err(|e| req.err(e))?;
    let ctx = state
        .broker
        .context_for_body(body_kind(consume), link.as_deref(), doc)
        .await
        .map_err(|e| req.err(e))?;
    Ok(state
        .broker
        .name_inline_context(ctx, &format!("http://{}", req.host)))
}

pub(crate) async fn link_ctx(req: &Ngsi, state: &AppState) -> Result<Ctx, crate::http::ApiError> {
    let link = link_context(&req.headers).map_err(|e| req.err(e))?;
    state
        .broker
        .context_from_link(link.as_deref())
        .await
        .map_err(|e| req.err(e))
}

fn update_response(result: UpdateResult, produce: Produce, ctx: &Ctx) -> Response {
    if result.is_partial() {
        json_response(StatusCode::MULTI_STATUS, produce, ctx, result.to_json())
    } else {
        empty(StatusCode::NO_CONTENT)
    }
}

/// Characters that cannot stand in a path segment as they are.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

fn entity_location(id: &str) -> String {
    resource_location("/ngsi-ld/v1/entities", id)
}

/// The URL of resource `id` under `base`, with the id percent-encoded as a
/// path segment.
pub(crate) fn resource_location(base: &str, id: &str) -> String {
    format!("{base}/{}", utf8_percent_encode(id, SEGMENT))
}

/// The `deleteAll` parameter of attribute deletions.
pub(crate) fn delete_all_param(params: &[(String, String)]) -> Result<bool, NgsiError> {
    match param(params, "deleteAll") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(NgsiError::bad_data("deleteAll must be true or false")),
    }
}

/// A write of one entity, through the registrations that hold what it
/// names (clause 4.3.6): with none, `run` writes here what the client sent;
/// otherwise the broker splits it, `run` writes the local part (the
/// document the registrations left, `None` for writes without a body), and
/// the sources get theirs. `done` answers a write whose every part
/// succeeded (given the local result when the write stayed local).
#[allow(clippy::too_many_arguments)]
async fn entity_write<T>(
    state: &AppState,
    req: &Ngsi,
    ctx: &Ctx,
    write: Write<'_>,
    doc: Option<&Json<'_>>,
    run: impl AsyncFnOnce(Option<&Json<'_>>) -> ngsi_model::NgsiResult<T>,
    report: impl FnOnce(&T) -> Option<UpdateResult>,
    done: impl FnOnce(Option<T>) -> Response,
) -> ApiResult {
    let plan = state
        .broker
        .plan_write(&req.tenant, ctx, &write, doc)
        .map_err(|e| req.err(e))?;
    let Some(plan) = plan else {
        let t = run(doc).await.map_err(|e| req.err(e))?;
        return Ok(done(Some(t)));
    };
    let local = match plan.local() {
        None => None,
        Some(part) => {
            let bytes = part.map(|v| Bytes::from(v.to_string()));
            let part_doc = bytes
                .as_ref()
                .map(|b| body_doc(req, state, b))
                .transpose()?;
            let result = run(part_doc.as_ref()).await;
            Some(result.map(|t| report(&t)))
        }
    };
    let (answer, warnings) = state
        .broker
        .forward_write(&req.tenant, ctx, &write, plan, local)
        .await;
    let mut resp = match answer {
        Ok(WriteAnswer::Done) => done(None),
        Ok(WriteAnswer::Partial(body)) => {
            json_response(StatusCode::MULTI_STATUS, Produce::Json, ctx, body)
        }
        Err(e) => axum::response::IntoResponse::into_response(req.err(e)),
    };
    add_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// The document of a write that has one, for [`entity_write`]'s `run`.
fn doc_of<'d, 'a>(d: Option<&'d Json<'a>>) -> ngsi_model::NgsiResult<&'d Json<'a>> {
    d.ok_or_else(|| NgsiError::internal("a write without its document"))
}

/// Whether a write asks to stay local (`local=true`).
pub(crate) fn local_param(params: &[(String, String)]) -> bool {
    param(params, "local") == Some("true")
}

/// The write of one entity that a request asks for.
fn write_of<'a>(
    req: &'a Ngsi,
    params: &'a [(String, String)],
    kind: WriteKind,
    id: &'a str,
    attr: Option<&'a str>,
) -> Write<'a> {
    Write {
        kind,
        id,
        attr,
        type_param: param(params, "type"),
        origin: write_origin(req, params),
    }
}

/// What a write passes on to the registrations that hold what it names.
fn write_origin<'a>(req: &'a Ngsi, params: &[(String, String)]) -> Origin<'a> {
    Origin {
        local: local_param(params),
        ..origin(req)
    }
}

/// The shape of the writes that answer 204: check the parameters, read the
/// body and its @context, write (see [`entity_write`]).
async fn write_no_content(
    state: &AppState,
    req: &Ngsi,
    body: Body,
    what: (WriteKind, &str, Option<&str>),
    op: impl AsyncFnOnce(&broker::Broker, &Ctx, &Json<'_>, Option<&str>) -> ngsi_model::NgsiResult<()>,
) -> ApiResult {
    write_no_content_with(state, req, body, ENTITY_WRITE_PARAMS, what, op).await
}

/// [`write_no_content`] for an operation that takes the parameters
/// `allowed`.
async fn write_no_content_with(
    state: &AppState,
    req: &Ngsi,
    body: Body,
    allowed: &[&str],
    (kind, id, attr): (WriteKind, &str, Option<&str>),
    op: impl AsyncFnOnce(&broker::Broker, &Ctx, &Json<'_>, Option<&str>) -> ngsi_model::NgsiResult<()>,
) -> ApiResult {
    let params = checked_params(req.query.as_deref(), allowed).map_err(|e| req.err(e))?;
    let (bytes, consume) = json_body(req, state, body).await?;
    let doc = body_doc(req, state, &bytes)?;
    let ctx = body_ctx(req, state, consume, &doc).await?;
    let write = write_of(req, &params, kind, id, attr);
    let type_param = write.type_param;
    entity_write(
        state,
        req,
        &ctx,
        write,
        Some(&doc),
        async |d| op(&state.broker, &ctx, doc_of(d)?, type_param).await,
        |_| None,
        |_| empty(StatusCode::NO_CONTENT),
    )
    .await
}

/// POST /entities
pub async fn create(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let params = checked_params(req.query.as_deref(), &["local"]).map_err(|e| req.err(e))?;
    let (bytes, consume) = json_body(&req, &state, body).await?;
    let doc = body_doc(&req, &state, &bytes)?;
    let ctx = body_ctx(&req, &state, consume, &doc).await?;
    // The broker checks the entity before any part of it is forwarded.
    let id = doc
        .get("id")
        .or_else(|| doc.get("@id"))
        .and_then(JsonDoc::as_str)
        .unwrap_or_default()
        .to_string();
    let write = write_of(&req, &params, WriteKind::Create, &id, None);
    entity_write(
        &state,
        &req,
        &ctx,
        write,
        Some(&doc),
        async |d| {
            state
                .broker
                .create_entity(&req.tenant, &ctx, doc_of(d)?)
                .await
        },
        |_| None,
        |_| created(&entity_location(&id)),
    )
    .await
}

/// `geometryProperty` is only meaningful for GeoJSON (clauses 5.7.1.4 and
/// 5.7.2.4): with any other response type it is BadRequestData.
fn check_geometry_property(
    params: &[(String, String)],
    produce: &Produce,
) -> Result<(), NgsiError> {
    if param(params, "geometryProperty").is_some() && !matches!(produce, Produce::GeoJson { .. }) {
        return Err(NgsiError::bad_data(
            "geometryProperty needs Accept: application/geo+json",
        ));
    }
    Ok(())
}

/// GET /entities/{id}
pub async fn retrieve(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
) -> ApiResult {
    let params = checked_params(req.query.as_deref(), RETRIEVE_PARAMS).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, true).map_err(|e| req.err(e))?;
    check_geometry_property(&params, &produce).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let mut view =
        ViewOptions::from_params(&query_params(&params), &ctx).map_err(|e| req.err(e))?;
    let applied = version_preference(&req, &mut view);
    view.join = join_of(&params).map_err(|e| req.err(e))?;
    let origin = Origin {
        local: param(&params, "local") == Some("true"),
        ..origin(&req)
    };
    let map = super::entity_maps::map_request(&req, &params)?;
    let (retrieved, warnings, map) = state
        .broker
        .retrieve_entity_mapped(&req.tenant, &ctx, &id, &view, &origin, &map)
        .await
        .map_err(|e| req.err(e))?;
    let gp = param(&params, "geometryProperty").unwrap_or("location");
    let body = match (produce, view.join.as_ref().is_some_and(|j| j.flat)) {
        (Produce::GeoJson { .. }, false) => {
            ngsi_model::render::geojson_feature(retrieved.entity, gp)
        }
        (_, false) => Value::Object(retrieved.entity),
        // join=flat: always an array, the entity first (clause 5.7.1.5),
        // a FeatureCollection in GeoJSON.
        (produce, true) => {
            let all = std::iter::once(Value::Object(retrieved.entity)).chain(retrieved.linked);
            match produce {
                Produce::GeoJson { .. } => serde_json::json!({
                    "type": "FeatureCollection",
                    "features": all
                        .filter_map(|e| match e {
                            Value::Object(m) => Some(ngsi_model::render::geojson_feature(m, gp)),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                }),
                _ => Value::Array(all.collect()),
            }
        }
    };
    let mut resp = json_response(StatusCode::OK, produce, &ctx, body);
    add_warnings(&mut resp, &warnings);
    mark_applied(&mut resp, applied);
    super::entity_maps::mark_map(&mut resp, map.as_ref(), false);
    Ok(resp)
}

/// The version of NGSI-LD the client prefers its entities in (`Prefer:
/// ngsi-ld=<major.minor>`, clause 4.3.6.8), as this broker answers it:
/// an earlier one amends every entity of the view, a later one is answered
/// in this broker's own. `None` when no version is preferred.
fn version_preference(req: &Ngsi, view: &mut ViewOptions) -> Option<compat::Version> {
    let prefer = req
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let applied = compat::preferred_version(prefer).and_then(compat::applied)?;
    view.version = (applied < compat::NATIVE).then_some(applied);
    Some(applied)
}

/// Linked Entity retrieval asked for with `join`, `joinLevel` and
/// `containedBy` (clause 4.5.23).
fn join_of(params: &[(String, String)]) -> Result<Option<broker::Join>, NgsiError> {
    broker::Join::from_params(
        param(params, "join"),
        param(params, "joinLevel"),
        param(params, "containedBy"),
    )
}

/// `Preference-Applied` naming the version the entities were given in.
fn mark_applied(resp: &mut Response, applied: Option<compat::Version>) {
    if let Some(v) = applied
        && let Ok(value) = HeaderValue::from_str(&compat::preference_applied(v))
    {
        resp.headers_mut().insert("Preference-Applied", value);
    }
}

/// What a read passes on to the context sources it is forwarded to.
pub(crate) fn origin(req: &Ngsi) -> Origin<'_> {
    Origin {
        query: req.query.as_deref(),
        headers: &req.headers,
        local: false,
        body: None,
        only: None,
    }
}

/// One `NGSILD-Warning` header per context source whose answer is missing
/// (clause 6.3.17).
pub(crate) fn add_warnings(resp: &mut Response, warnings: &[String]) {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(w) {
            resp.headers_mut().append("NGSILD-Warning", v);
        }
    }
}

async fn query_response(
    req: &Ngsi,
    state: &AppState,
    ctx: &Ctx,
    params: &[(String, String)],
    query: &mut EntityQuery,
    body: Option<Value>,
) -> ApiResult {
    let produce = negotiate(&req.headers, true).map_err(|e| req.err(e))?;
    let applied = version_preference(req, &mut query.view);
    // A POST query's join is a member of its body (read with the query).
    if body.is_none() {
        query.view.join = join_of(params).map_err(|e| req.err(e))?;
    }
    check_geometry_property(params, &produce).map_err(|e| req.err(e))?;
    let map = match &body {
        Some(b) => super::entity_maps::map_request_of_body(req, b)?,
        None => super::entity_maps::map_request(req, params)?,
    };
    let origin = Origin {
        body: body.as_ref(),
        ..origin(req)
    };
    let (result, map) = state
        .broker
        .query_entities_mapped(&req.tenant, ctx, query, &origin, &map)
        .await
        .map_err(|e| req.err(e))?;
    let (path, link_params) = match &body {
        Some(b) => post_query_target(
            "/ngsi-ld/v1/entities",
            "/ngsi-ld/v1/entityOperations/query",
            params,
            b,
            false,
        ),
        None => ("/ngsi-ld/v1/entities", params.to_vec()),
    };
    let links = paging_links(
        path,
        &link_params,
        query,
        result.total,
        result.entities.len(),
    );
    let gp = param(params, "geometryProperty").unwrap_or("location");
    let mut items = result.entities;
    items.extend(result.linked);
    let mut resp = json_array_response(StatusCode::OK, produce, ctx, items, |items| {
        let features: Vec<Value> = items
            .iter()
            .filter_map(|i| serde_json::from_slice(i).ok())
            .map(|e| ngsi_model::render::geojson_feature(e, gp))
            .collect();
        serde_json::json!({ "type": "FeatureCollection", "features": features })
    });
    if let Some(total) = result.total {
        resp.headers_mut()
            .insert("NGSILD-Results-Count", HeaderValue::from(total));
    }
    for l in links {
        if let Ok(v) = HeaderValue::from_str(&l) {
            resp.headers_mut().append(header::LINK, v);
        }
    }
    add_warnings(&mut resp, &result.warnings);
    mark_applied(&mut resp, applied);
    super::entity_maps::mark_map(&mut resp, map.as_ref(), true);
    Ok(resp)
}

/// GET /entities
pub async fn query(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params = checked_params(req.query.as_deref(), QUERY_PARAMS).map_err(|e| req.err(e))?;
    negotiate(&req.headers, true).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let mut query = query_of_params(&state, &req, &ctx, &params)?;
    query_response(&req, &state, &ctx, &params, &mut query, None).await
}

/// The entity query of a GET request's parameters.
pub(crate) fn query_of_params(
    state: &AppState,
    req: &Ngsi,
    ctx: &Ctx,
    params: &[(String, String)],
) -> Result<EntityQuery, crate::http::ApiError> {
    let cfg = state.broker.config();
    EntityQuery::from_params(&query_params(params), ctx, cfg.default_limit, cfg.max_limit)
        .map_err(|e| req.err(e))
}

/// The entity query of a Query body and the URL's parameters.
pub(crate) fn query_of_body(
    state: &AppState,
    req: &Ngsi,
    ctx: &Ctx,
    body: &Value,
    params: &[(String, String)],
) -> Result<EntityQuery, crate::http::ApiError> {
    let cfg = state.broker.config();
    EntityQuery::from_json(
        body,
        &query_params(params),
        ctx,
        cfg.default_limit,
        cfg.max_limit,
    )
    .map_err(|e| req.err(e))
}

/// POST /entityOperations/query
pub async fn query_post(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    // Accept is checked before the query parameters (docs/spec-notes.md §0).
    negotiate(&req.headers, true).map_err(|e| req.err(e))?;
    let params =
        checked_params(req.query.as_deref(), broker::POST_QUERY_PARAMS).map_err(|e| req.err(e))?;
    let (value, _, ctx) = body_and_ctx(&req, &state, body).await?;
    // temporalQ belongs to Query Temporal Evolution only (Table 5.2.23-1).
    if value.get("temporalQ").is_some() {
        return Err(req.err(NgsiError::bad_data(
            "temporalQ is only for POST /temporal/entityOperations/query",
        )));
    }
    let mut query = query_of_body(&state, &req, &ctx, &value, &params)?;
    query_response(&req, &state, &ctx, &params, &mut query, Some(value)).await
}

/// DELETE /entities (purge)
pub async fn purge(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    let params = checked_params(
        req.query.as_deref(),
        &[
            "type",
            "id",
            "idPattern",
            "attrs",
            "q",
            "scopeQ",
            "georel",
            "geometry",
            "coordinates",
            "geoproperty",
            "csf",
            "keep",
            "drop",
            "local",
        ],
    )
    .map_err(|e| req.err(e))?;
    let local = match param(&params, "local") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(req.err(NgsiError::bad_data("local must be true or false"))),
    };
    // "'*' is also allowed as a value and local is implicitly set to true"
    // (Table 6.4.3.3-1).
    let local = local || param(&params, "type").map(str::trim) == Some("*");
    let ctx = link_ctx(&req, &state).await?;
    let origin = Origin {
        local,
        ..origin(&req)
    };
    let (answer, warnings) = state
        .broker
        .purge_distributed(&req.tenant, &ctx, &query_params(&params), &origin)
        .await;
    let mut resp = match answer.map_err(|e| req.err(e))? {
        WriteAnswer::Done => empty(StatusCode::NO_CONTENT),
        WriteAnswer::Partial(body) => {
            json_response(StatusCode::MULTI_STATUS, Produce::Json, &ctx, body)
        }
    };
    add_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// PATCH or PUT /entities without an entity id: the id is missing
/// (clauses 5.6.17.4, 5.6.18.4).
pub async fn missing_id(req: Ngsi) -> ApiResult {
    Err(req.err(NgsiError::bad_data(
        "the entity id is missing from the path",
    )))
}

/// PATCH /entities/{id} (merge)
pub async fn merge(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let params = checked_params(req.query.as_deref(), MERGE_PARAMS).map_err(|e| req.err(e))?;
    let options = merge_options(&params).map_err(|e| req.err(e))?;
    let what = (WriteKind::Merge, id.as_str(), None);
    write_no_content_with(
        &state,
        &req,
        body,
        MERGE_PARAMS,
        what,
        async |b, ctx, v, t| b.merge_entity(&req.tenant, ctx, &id, v, t, options).await,
    )
    .await
}

/// The common values of a Merge Entity: `lang` and `observedAt` (clause
/// 5.6.17.3); `format` is checked.
fn merge_options(
    params: &[(String, String)],
) -> ngsi_model::NgsiResult<ngsi_model::update::MergeOptions> {
    let lang = match param(params, "lang").map(str::trim) {
        Some(l) if l.is_empty() || l.contains([',', ';', '*']) => {
            return Err(NgsiError::bad_data(format!(
                "lang {l:?} must be one language tag"
            )));
        }
        other => other.map(str::to_string),
    };
    // The payload's form (Table 6.5.3.4-1): the kinds are inferred either
    // way, but a value that names no form is an error, as on a read.
    if let Some(f) = param(params, "format")
        && !matches!(f, "simplified" | "keyValues" | "concise" | "normalized")
    {
        return Err(NgsiError::invalid_request(format!("unknown format {f:?}")));
    }
    let observed_at = match param(params, "observedAt") {
        Some(t) if ngsi_model::time::parse_datetime(t).is_none() => {
            return Err(NgsiError::bad_data(format!(
                "observedAt {t:?} is not a DateTime"
            )));
        }
        other => other.map(Into::into),
    };
    Ok(ngsi_model::update::MergeOptions { lang, observed_at })
}

/// PUT /entities/{id}
pub async fn replace(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let what = (WriteKind::Replace, id.as_str(), None);
    write_no_content(&state, &req, body, what, async |b, ctx, v, t| {
        b.replace_entity(&req.tenant, ctx, &id, v, t).await
    })
    .await
}

/// DELETE /entities/{id}
pub async fn delete(State(state): State<AppState>, req: Ngsi, Path(id): Path<String>) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), &["type", "local"]).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let write = write_of(&req, &params, WriteKind::Delete, &id, None);
    let type_param = write.type_param;
    delete_write(&state, &req, &ctx, write, async || {
        state
            .broker
            .delete_entity(&req.tenant, &ctx, &id, type_param)
            .await
    })
    .await
}

/// The deletes of one entity or attribute (no body; 204): see
/// [`entity_write`].
async fn delete_write(
    state: &AppState,
    req: &Ngsi,
    ctx: &Ctx,
    write: Write<'_>,
    op: impl AsyncFnOnce() -> ngsi_model::NgsiResult<()>,
) -> ApiResult {
    let none: Option<&Json<'_>> = None;
    entity_write(
        state,
        req,
        ctx,
        write,
        none,
        async |_| op().await,
        |_| None,
        |_| empty(StatusCode::NO_CONTENT),
    )
    .await
}

/// The two writes of attributes that answer an UpdateResult: read the
/// body and its @context, write (see [`entity_write`]).
async fn attrs_write(
    state: &AppState,
    req: &Ngsi,
    body: Body,
    kind: WriteKind,
    id: &str,
    op: impl AsyncFnOnce(
        &broker::Broker,
        &Ctx,
        &Json<'_>,
        Option<&str>,
        bool,
    ) -> ngsi_model::NgsiResult<UpdateResult>,
) -> ApiResult {
    let params =
        checked_params(req.query.as_deref(), ENTITY_WRITE_PARAMS).map_err(|e| req.err(e))?;
    let no_overwrite =
        param(&params, "options").is_some_and(|o| o.split(',').any(|x| x == "noOverwrite"));
    let (bytes, consume) = json_body(req, state, body).await?;
    let doc = body_doc(req, state, &bytes)?;
    let ctx = body_ctx(req, state, consume, &doc).await?;
    let write = write_of(req, &params, kind, id, None);
    let type_param = write.type_param;
    entity_write(
        state,
        req,
        &ctx,
        write,
        Some(&doc),
        async |d| op(&state.broker, &ctx, doc_of(d)?, type_param, no_overwrite).await,
        |r| Some(r.clone()),
        |r| match r {
            Some(r) => update_response(r, Produce::Json, &ctx),
            None => empty(StatusCode::NO_CONTENT),
        },
    )
    .await
}

/// POST /entities/{id}/attrs (append)
pub async fn append(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let kind = WriteKind::AppendAttrs;
    attrs_write(&state, &req, body, kind, &id, async |b, ctx, v, t, keep| {
        b.append_attrs(&req.tenant, ctx, &id, v, keep, t).await
    })
    .await
}

/// PATCH /entities/{id}/attrs (update)
pub async fn update(
    State(state): State<AppState>,
    req: Ngsi,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let kind = WriteKind::UpdateAttrs;
    attrs_write(&state, &req, body, kind, &id, async |b, ctx, v, t, _| {
        b.update_attrs(&req.tenant, ctx, &id, v, t).await
    })
    .await
}

/// PATCH /entities/{id}/attrs/{attr}
pub async fn partial_update(
    State(state): State<AppState>,
    req: Ngsi,
    Path((id, attr)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let what = (WriteKind::PartialUpdate, id.as_str(), Some(attr.as_str()));
    write_no_content(&state, &req, body, what, async |b, ctx, v, t| {
        b.partial_attr_update(&req.tenant, ctx, &id, &attr, v, t)
            .await
    })
    .await
}

/// PUT /entities/{id}/attrs/{attr}
pub async fn replace_attr(
    State(state): State<AppState>,
    req: Ngsi,
    Path((id, attr)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let what = (WriteKind::ReplaceAttr, id.as_str(), Some(attr.as_str()));
    write_no_content(&state, &req, body, what, async |b, ctx, v, t| {
        b.replace_attr(&req.tenant, ctx, &id, &attr, v, t).await
    })
    .await
}

/// DELETE /entities/{id}/attrs/{attr}
pub async fn delete_attr(
    State(state): State<AppState>,
    req: Ngsi,
    Path((id, attr)): Path<(String, String)>,
) -> ApiResult {
    let params = checked_params(
        req.query.as_deref(),
        &["datasetId", "deleteAll", "local", "type"],
    )
    .map_err(|e| req.err(e))?;
    let delete_all = delete_all_param(&params).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let write = write_of(&req, &params, WriteKind::DeleteAttr, &id, Some(&attr));
    let type_param = write.type_param;
    let instances = Instances {
        dataset_id: param(&params, "datasetId"),
        delete_all,
    };
    delete_write(&state, &req, &ctx, write, async || {
        state
            .broker
            .delete_attr(&req.tenant, &ctx, &id, &attr, instances, type_param)
            .await
    })
    .await
}

fn batch_response(result: BatchResult, all_ok: StatusCode, body: Option<Vec<String>>) -> Response {
    let mut r = batch_answer(&result, all_ok, body);
    add_warnings(&mut r, &result.warnings);
    r
}

fn batch_answer(result: &BatchResult, all_ok: StatusCode, body: Option<Vec<String>>) -> Response {
    if result.has_errors() {
        let bytes = serde_json::to_vec(&result.to_json()).unwrap_or_default();
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = StatusCode::MULTI_STATUS;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    match body {
        Some(ids) if all_ok == StatusCode::CREATED => {
            let bytes = serde_json::to_vec(&ids).unwrap_or_default();
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = StatusCode::CREATED;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => empty(all_ok),
    }
}

/// POST /entityOperations/create
pub async fn batch_create(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let params = checked_params(req.query.as_deref(), WRITE_PARAMS).map_err(|e| req.err(e))?;
    // The contexts are resolved per entity by the broker.
    let (bytes, consume) = json_body(&req, &state, body).await?;
    let doc = body_doc(&req, &state, &bytes)?;
    let link = link_context(&req.headers).map_err(|e| req.err(e))?;
    let result = state
        .broker
        .batch_create(
            &req.tenant,
            body_kind(consume),
            link.as_deref(),
            &doc,
            &write_origin(&req, &params),
        )
        .await
        .map_err(|e| req.err(e))?;
    let ids = result.success.clone();
    Ok(batch_response(result, StatusCode::CREATED, Some(ids)))
}

/// POST /entityOperations/upsert
pub async fn batch_upsert(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let params = checked_params(req.query.as_deref(), WRITE_PARAMS).map_err(|e| req.err(e))?;
    let mode = match param(&params, "options") {
        None | Some("replace") => UpsertMode::Replace,
        Some("update") => UpsertMode::Update,
        Some(o) => return Err(req.err(NgsiError::bad_data(format!("unknown upsert option {o:?}")))),
    };
    // The contexts are resolved per entity by the broker.
    let (bytes, consume) = json_body(&req, &state, body).await?;
    let doc = body_doc(&req, &state, &bytes)?;
    let link = link_context(&req.headers).map_err(|e| req.err(e))?;
    let result = state
        .broker
        .batch_upsert(
            &req.tenant,
            body_kind(consume),
            link.as_deref(),
            &doc,
            mode,
            &write_origin(&req, &params),
        )
        .await
        .map_err(|e| req.err(e))?;
    if !result.has_errors() && result.created.is_empty() {
        return Ok(batch_response(result, StatusCode::NO_CONTENT, None));
    }
    let created = result.created.clone();
    Ok(batch_response(result, StatusCode::CREATED, Some(created)))
}

/// POST /entityOperations/update
pub async fn batch_update(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let params = checked_params(req.query.as_deref(), WRITE_PARAMS).map_err(|e| req.err(e))?;
    let no_overwrite =
        param(&params, "options").is_some_and(|o| o.split(',').any(|x| x == "noOverwrite"));
    // The contexts are resolved per entity by the broker.
    let (bytes, consume) = json_body(&req, &state, body).await?;
    let doc = body_doc(&req, &state, &bytes)?;
    let link = link_context(&req.headers).map_err(|e| req.err(e))?;
    let result = state
        .broker
        .batch_update(
            &req.tenant,
            body_kind(consume),
            link.as_deref(),
            &doc,
            no_overwrite,
            &write_origin(&req, &params),
        )
        .await
        .map_err(|e| req.err(e))?;
    Ok(batch_response(result, StatusCode::NO_CONTENT, None))
}

/// POST /entityOperations/merge
pub async fn batch_merge(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let params = checked_params(req.query.as_deref(), WRITE_PARAMS).map_err(|e| req.err(e))?;
    // The contexts are resolved per entity by the broker.
    let (bytes, consume) = json_body(&req, &state, body).await?;
    let doc = body_doc(&req, &state, &bytes)?;
    let link = link_context(&req.headers).map_err(|e| req.err(e))?;
    let result = state
        .broker
        .batch_merge(
            &req.tenant,
            body_kind(consume),
            link.as_deref(),
            &doc,
            &write_origin(&req, &params),
        )
        .await
        .map_err(|e| req.err(e))?;
    Ok(batch_response(result, StatusCode::NO_CONTENT, None))
}

/// POST /entityOperations/delete
pub async fn batch_delete(State(state): State<AppState>, req: Ngsi, body: Body) -> ApiResult {
    let params = checked_params(req.query.as_deref(), WRITE_PARAMS).map_err(|e| req.err(e))?;
    let (bytes, _) = json_body(&req, &state, body).await?;
    let value = parse_body(&bytes, state.config.max_json_depth).map_err(|e| req.err(e))?;
    link_context(&req.headers).map_err(|e| req.err(e))?;
    let result = state
        .broker
        .batch_delete(&req.tenant, &value, &write_origin(&req, &params))
        .await
        .map_err(|e| req.err(e))?;
    Ok(batch_response(result, StatusCode::NO_CONTENT, None))
}

fn details(req: &Ngsi, params: &[(String, String)]) -> Result<bool, crate::http::ApiError> {
    match param(params, "details") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(req.err(NgsiError::bad_data("details must be true or false"))),
    }
}

/// The shape of every discovery handler: check the parameters and Accept,
/// resolve the Link context, call the broker (which asks the registered
/// sources unless `local=true`), answer 200 with JSON.
async fn discovery(
    state: &AppState,
    req: &Ngsi,
    allowed: &[&str],
    call: impl AsyncFnOnce(
        &broker::Broker,
        &Ctx,
        bool,
        &Origin<'_>,
    ) -> ngsi_model::NgsiResult<(Value, Vec<String>)>,
) -> ApiResult {
    let params = checked_params(req.query.as_deref(), allowed).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(req, state).await?;
    let origin = Origin {
        local: param(&params, "local") == Some("true"),
        ..origin(req)
    };
    let (body, warnings) = call(&state.broker, &ctx, details(req, &params)?, &origin)
        .await
        .map_err(|e| req.err(e))?;
    let mut resp = json_response(StatusCode::OK, produce, &ctx, body);
    add_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// GET /types
pub async fn types(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    discovery(
        &state,
        &req,
        &["details", "local"],
        async |b, ctx, details, origin| {
            b.entity_types_distributed(&req.tenant, ctx, details, origin)
                .await
        },
    )
    .await
}

/// GET /types/{type}
pub async fn type_info(
    State(state): State<AppState>,
    req: Ngsi,
    Path(type_name): Path<String>,
) -> ApiResult {
    discovery(&state, &req, &["local"], async |b, ctx, _, origin| {
        b.entity_type_info_distributed(&req.tenant, ctx, &type_name, origin)
            .await
    })
    .await
}

/// GET /attributes
pub async fn attributes(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    discovery(
        &state,
        &req,
        &["details", "local"],
        async |b, ctx, details, origin| {
            b.attributes_distributed(&req.tenant, ctx, details, origin)
                .await
        },
    )
    .await
}

/// GET /attributes/{attr}
pub async fn attribute_info(
    State(state): State<AppState>,
    req: Ngsi,
    Path(attr): Path<String>,
) -> ApiResult {
    discovery(&state, &req, &["local"], async |b, ctx, _, origin| {
        b.attribute_info_distributed(&req.tenant, ctx, &attr, origin)
            .await
    })
    .await
}
