//! Distributed writes of one entity (clauses 4.3.6.2, 4.3.6.3 and the
//! "distributed operations" paragraphs of 5.6.1–5.6.19): what a write
//! names is split over the registrations that hold it, in the order
//! exclusive, redirect, local, inclusive; each part succeeds or fails on
//! its own, and the client gets the operation's answer, the one failure,
//! or a 207 that says which part failed.
//!
//! [`Broker::plan_write`] costs one read lock when the tenant has no
//! registrations (the usual case): the write then runs as before.

use std::sync::Arc;

use ngsi_model::json::JsonDoc;
use ngsi_model::{ErrorKind, Iri, NgsiError, NgsiResult, Terms};
use serde_json::{Map, Value};

use super::{
    Failure, Forwarder, Origin, Prepared, QUERY_PARAMS, body_for, passed_on, passed_on_if,
    registration_selection, via_names,
};
use crate::registrations::model::{Cover, Mode, Registration};
use crate::{Broker, Ctx, UpdateResult};

/// The writes of one entity that are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `POST /entities`
    Create,
    /// `PATCH /entities/{id}/attrs`
    UpdateAttrs,
    /// `POST /entities/{id}/attrs`
    AppendAttrs,
    /// `PATCH /entities/{id}/attrs/{attr}`
    PartialUpdate,
    /// `PUT /entities/{id}/attrs/{attr}`
    ReplaceAttr,
    /// `DELETE /entities/{id}/attrs/{attr}`
    DeleteAttr,
    /// `PATCH /entities/{id}`
    Merge,
    /// `PUT /entities/{id}`
    Replace,
    /// `DELETE /entities/{id}`
    Delete,
    /// `DELETE /entities?<selection>` (purge)
    Purge,
}

impl WriteKind {
    /// The operation's name in Table 4.20-1.
    pub fn operation(self) -> &'static str {
        match self {
            Self::Create => "createEntity",
            Self::UpdateAttrs => "updateEntity",
            Self::AppendAttrs => "appendAttrs",
            Self::PartialUpdate => "updateAttrs",
            Self::ReplaceAttr => "replaceAttrs",
            Self::DeleteAttr => "deleteAttrs",
            Self::Merge => "mergeEntity",
            Self::Replace => "replaceEntity",
            Self::Delete => "deleteEntity",
            Self::Purge => "purgeEntity",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Self::Create | Self::AppendAttrs => reqwest::Method::POST,
            Self::UpdateAttrs | Self::PartialUpdate | Self::Merge => reqwest::Method::PATCH,
            Self::ReplaceAttr | Self::Replace => reqwest::Method::PUT,
            Self::DeleteAttr | Self::Delete | Self::Purge => reqwest::Method::DELETE,
        }
    }

    /// Whether the path names one attribute.
    fn on_attribute(self) -> bool {
        matches!(
            self,
            Self::PartialUpdate | Self::ReplaceAttr | Self::DeleteAttr
        )
    }

    /// Whether the answer reports per attribute (an UpdateResult) rather
    /// than per entity (a BatchOperationResult).
    fn by_attribute(self) -> bool {
        matches!(self, Self::UpdateAttrs | Self::AppendAttrs) || self.on_attribute()
    }

    /// The path under `/ngsi-ld/v1` of the same operation at a source.
    fn segments<'a>(self, id: &'a str, attr: &'a str) -> Vec<&'a str> {
        match self {
            Self::Create | Self::Purge => vec!["entities"],
            Self::UpdateAttrs | Self::AppendAttrs => vec!["entities", id, "attrs"],
            Self::Merge | Self::Replace | Self::Delete => vec!["entities", id],
            Self::PartialUpdate | Self::ReplaceAttr | Self::DeleteAttr => {
                vec!["entities", id, "attrs", attr]
            }
        }
    }
}

/// A write of one entity as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub kind: WriteKind,
    pub id: &'a str,
    /// The attribute of the path, as the client wrote it.
    pub attr: Option<&'a str>,
    /// The `type` parameter, as the client wrote it.
    pub type_param: Option<&'a str>,
    /// The request (its query string, `Via` and other headers; `local`).
    pub origin: Origin<'a>,
}

/// A write of one entity, as [`Broker::split`] reads it.
pub(crate) struct EntityWrite<'a> {
    pub(crate) kind: WriteKind,
    /// The operation's name in Table 4.20-1 (a batch operation's, for an
    /// entity of a batch).
    pub(crate) op: &'static str,
    pub(crate) id: &'a str,
    pub(crate) attr: Option<&'a str>,
    pub(crate) type_param: Option<&'a str>,
}

/// Members of an entity document that are not attributes: they go with
/// every part (an entity's `expiresAt` too: each place stores the entity
/// for as long, clause 4.22).
const ENTITY_MEMBERS: &[&str] = &[
    "id",
    "@id",
    "type",
    "@type",
    "@context",
    "scope",
    "expiresAt",
];

/// The parameters of the client's query string a source gets with a write.
const WRITE_PARAMS: &[&str] = &[
    "options",
    "datasetId",
    "deleteAll",
    "type",
    "lang",
    "observedAt",
];
/// Whether a source gets a purge's parameter `key`: its selection, and
/// what it keeps or drops.
fn purge_param(key: &str) -> bool {
    QUERY_PARAMS.contains(&key) || key == "keep" || key == "drop"
}

/// One registration's part of a write.
#[derive(Debug)]
struct Part {
    registration: Arc<Registration>,
    /// The attributes of the part (expanded names; none for an entity
    /// operation without attributes).
    attrs: Vec<Iri>,
    /// The document the source gets (the client's, with only the part's
    /// attributes).
    body: Option<Value>,
    /// Whether the registration offers the operation: if not, the part is
    /// a Conflict and the source is not asked.
    offered: bool,
}

/// How a write is split between this broker and the sources.
#[derive(Debug)]
pub struct Plan {
    parts: Vec<Part>,
    /// The local part: `None` when the sources hold all that was written;
    /// else the document left for it (`None` for writes without a body).
    local: Option<Option<Value>>,
    /// The attributes of the local part (expanded).
    local_attrs: Vec<Iri>,
    /// Whether an entity missing here is no failure (Delete Entity with an
    /// exclusive part: "removed locally if it exists").
    local_optional: bool,
}

impl Plan {
    /// The local part: `None` when there is none, else the document it
    /// writes (`None` inside for writes without a body).
    pub fn local(&self) -> Option<Option<&Value>> {
        self.local.as_ref().map(Option::as_ref)
    }
}

/// The answer of a distributed write.
#[derive(Debug)]
pub enum WriteAnswer {
    /// Every part succeeded: the operation's own answer.
    Done,
    /// Several parts and some failed: 207 with this body.
    Partial(Value),
}

/// The order in which modes take their parts.
fn mode_rank(m: Mode) -> u8 {
    match m {
        Mode::Exclusive => 0,
        Mode::Redirect => 1,
        Mode::Inclusive => 2,
        Mode::Auxiliary => 3,
    }
}

/// The client's document with only the members that are no attributes
/// and the attributes in `keep` (expanded names).
fn part_body(body: &Value, ctx: &Ctx, keep: &[Iri]) -> Value {
    match body {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    ENTITY_MEMBERS.contains(&k.as_str())
                        || keep.iter().any(|n| **n == *ctx.expand(k))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The one URL a JSON-LD document's `@context` names (a URL, or an
/// array of one): such a document is forwarded as JSON with that URL in a
/// Link header (clause 6.3.5), which sources read as well as any. Any other
/// `@context` travels inline: a context this broker hosts might not be
/// reachable from the source.
fn context_url(doc: &Value) -> Option<&str> {
    match doc.get("@context")? {
        Value::String(url) => Some(url),
        Value::Array(list) if list.len() == 1 => list[0].as_str(),
        _ => None,
    }
}

/// A document without its `@context`.
fn without_context(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(m) = &mut doc {
        m.remove("@context");
    }
    doc
}

/// `ctx` naming `url` in the Link header of a forwarded request.
fn linking(ctx: &Ctx, url: &str) -> Ctx {
    Ctx {
        link: Some(url.to_string()),
        ..ctx.clone()
    }
}

/// The entity types a document names (expanded).
fn body_types(body: &Value, ctx: &Ctx) -> Option<Vec<Iri>> {
    let t = body.get("type").or_else(|| body.get("@type"))?;
    let names: Vec<&str> = match t {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    Some(names.into_iter().map(|n| ctx.expand_iri(n)).collect())
}

impl Broker {
    /// How a write of one entity is split over the registrations of
    /// `tenant` (see the module); `None` when it stays local: with
    /// `local=true`, or when no registration that may take writes holds
    /// what it names. A write that would be forwarded while its `Via`
    /// names this broker already is refused (508, a loop).
    pub fn plan_write<J: JsonDoc>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        w: &Write<'_>,
        body: Option<&J>,
    ) -> NgsiResult<Option<Plan>> {
        let op = w.kind.operation();
        let Some(registrations) = self.write_registrations(tenant, &w.origin, op) else {
            return Ok(None);
        };
        let entity = EntityWrite {
            kind: w.kind,
            op,
            id: w.id,
            attr: w.attr,
            type_param: w.type_param,
        };
        let value = body.map(JsonDoc::to_value);
        let Some(plan) = self.split(tenant, ctx, &entity, value, &registrations) else {
            return Ok(None);
        };
        // No part of a request this broker would refuse goes anywhere.
        self.check_write(ctx, w, body)?;
        crate::check_uri(w.id, "entity id")?;
        self.check_loop(tenant, &w.origin)?;
        Ok(Some(plan))
    }

    /// The registrations of `tenant` that may take part in operation
    /// `op`: none (`None`) with `local=true` or when the tenant has none
    /// (one read lock); never auxiliary or expired ones, inclusive ones
    /// that do not offer `op`, nor those whose source the request has
    /// passed through.
    pub(crate) fn write_registrations(
        &self,
        tenant: &str,
        origin: &Origin<'_>,
        op: &str,
    ) -> Option<Vec<Arc<Registration>>> {
        if origin.local {
            return None;
        }
        let registrations: Vec<Arc<Registration>> = {
            let tenants = self.registrations.tenants.read();
            let list = tenants.get(tenant).filter(|l| !l.is_empty())?;
            list.values()
                .filter(|r| r.mode != Mode::Auxiliary && r.endpoint.is_some())
                .filter(|r| r.mode != Mode::Inclusive || r.offers(op))
                .cloned()
                .collect()
        };
        if registrations.is_empty() {
            return None;
        }
        let via = origin.via();
        let now = ngsi_model::time::now_micros();
        let registrations: Vec<_> = registrations
            .into_iter()
            .filter(|r| !r.expired(now))
            .filter(|r| r.alias().is_none_or(|a| !via_names(&via, a)))
            .collect();
        (!registrations.is_empty()).then_some(registrations)
    }

    /// A write that would be forwarded while its `Via` names this broker
    /// already: 508.
    pub(crate) fn check_loop(&self, tenant: &str, origin: &Origin<'_>) -> NgsiResult<()> {
        let alias = self.source_alias(tenant);
        if via_names(&origin.via(), &alias) {
            return Err(NgsiError::new(
                ErrorKind::LoopDetected,
                format!("the request has passed through this broker ({alias}) already"),
            ));
        }
        Ok(())
    }

    /// How a write of one entity is split over `registrations` (see the
    /// module); `None` when none of them takes part.
    pub(crate) fn split(
        &self,
        tenant: &str,
        ctx: &Ctx,
        w: &EntityWrite<'_>,
        body: Option<Value>,
        registrations: &[Arc<Registration>],
    ) -> Option<Plan> {
        // An attribute operation's body is an attribute: its `type` is the
        // attribute's kind.
        let types = body
            .as_ref()
            .filter(|_| !w.kind.on_attribute())
            .and_then(|b| body_types(b, ctx))
            .or_else(|| {
                w.type_param
                    .filter(|t| !t.contains([',', ';', '|', '(', ')']))
                    .map(|t| vec![ctx.expand_iri(t)])
            })
            .or_else(|| {
                (tenant.is_empty() || self.store.tenant_exists(tenant))
                    .then(|| self.store.get(tenant, w.id))
                    .flatten()
                    .map(|e| e.types.clone())
            });
        // The attributes the write names.
        let written: Vec<Iri> = match (w.kind.on_attribute(), w.attr, &body) {
            (true, Some(a), _) => vec![ctx.expand_iri(a)],
            (false, _, Some(Value::Object(m))) => m
                .keys()
                .filter(|k| !ENTITY_MEMBERS.contains(&k.as_str()))
                .map(|k| ctx.expand_iri(k))
                .collect(),
            _ => Vec::new(),
        };
        let mut candidates: Vec<(Arc<Registration>, Cover)> = registrations
            .iter()
            .filter_map(|r| {
                let cover = r.cover(w.id, types.as_deref())?;
                Some((r.clone(), cover))
            })
            .collect();
        candidates.sort_by_key(|(r, _)| mode_rank(r.mode));
        let op = w.op;
        let mut parts = Vec::new();
        let mut left = written.clone();
        // Entity-wide exclusive or redirect parts leave nothing here (but a
        // Delete Entity, which removes what is held here of an exclusive
        // registration's entity too).
        let mut taken_all = false;
        // Exclusive or redirect parts: the local part of a Delete Entity
        // then removes what is held here "if it exists".
        let mut elsewhere = false;
        // Redirect registrations share what exclusive ones left: each gets
        // all of it (4.3.6.3); they take it together.
        let mut redirected: Vec<Iri> = Vec::new();
        for (r, cover) in candidates {
            if r.mode == Mode::Inclusive && !redirected.is_empty() {
                left.retain(|a| !redirected.contains(a));
                redirected.clear();
            }
            let attrs: Vec<Iri> = match &cover {
                Cover::Entity => left.clone(),
                Cover::Attributes(names) => {
                    left.iter().filter(|a| names.contains(a)).cloned().collect()
                }
            };
            let involved = if w.kind == WriteKind::Delete {
                true
            } else if written.is_empty() {
                cover == Cover::Entity
            } else {
                !attrs.is_empty()
            };
            let offered = r.offers(op);
            if !involved || (r.mode == Mode::Inclusive && !offered) {
                continue;
            }
            let part_doc = match (&body, w.kind.on_attribute()) {
                (Some(b), false) => Some(part_body(b, ctx, &attrs)),
                (Some(b), true) => Some(b.clone()),
                (None, _) => None,
            };
            match r.mode {
                Mode::Exclusive => {
                    elsewhere = true;
                    left.retain(|a| !attrs.contains(a));
                    taken_all |= cover == Cover::Entity && w.kind != WriteKind::Delete;
                }
                Mode::Redirect => {
                    elsewhere = true;
                    redirected.extend(attrs.iter().cloned());
                    taken_all |= cover == Cover::Entity;
                }
                _ => {}
            }
            parts.push(Part {
                registration: r,
                attrs,
                body: part_doc,
                offered,
            });
        }
        left.retain(|a| !redirected.contains(a));
        if parts.is_empty() {
            return None;
        }
        let took_some = left.len() < written.len();
        let local = if taken_all || (took_some && left.is_empty()) {
            None
        } else if took_some {
            Some(body.as_ref().map(|b| part_body(b, ctx, &left)))
        } else {
            Some(body)
        };
        Some(Plan {
            parts,
            local,
            local_attrs: left,
            local_optional: elsewhere && w.kind == WriteKind::Delete,
        })
    }

    /// Checks a write as the local write would: its id, attribute, `type`
    /// parameter and document.
    fn check_write<J: JsonDoc>(
        &self,
        ctx: &Ctx,
        w: &Write<'_>,
        body: Option<&J>,
    ) -> NgsiResult<()> {
        use ngsi_model::parse::{EntityRequirements, ParseLimits, parse_attribute, parse_entity};
        if w.kind != WriteKind::Create {
            crate::check_id(w.id)?;
        }
        self.type_selector(ctx, w.type_param)?;
        let attr = w.attr.unwrap_or_default();
        let scope = attr == "scope" || ctx.expand(attr) == ngsi_model::entity::core_iri::SCOPE;
        match w.kind {
            WriteKind::PartialUpdate => {
                crate::target_attribute(attr, ctx, "partially updated")?;
            }
            WriteKind::ReplaceAttr => {
                crate::target_attribute(attr, ctx, "replaced")?;
            }
            WriteKind::DeleteAttr if !scope => {
                crate::target_attribute(attr, ctx, "deleted")?;
            }
            _ => {}
        }
        if w.kind == WriteKind::DeleteAttr {
            let dataset_id = passed_on(w.origin.query, &["datasetId"])
                .into_iter()
                .filter_map(|pair| {
                    let value = pair.split_once('=')?.1.replace('+', " ");
                    Some(
                        percent_encoding::percent_decode_str(&value)
                            .decode_utf8_lossy()
                            .into_owned(),
                    )
                })
                .next();
            if let Some(d) = dataset_id {
                ngsi_model::parse::check_dataset_id(&d)?;
            }
        }
        let Some(body) = body else {
            return Ok(());
        };
        match w.kind {
            WriteKind::Create => {
                let requirements = EntityRequirements {
                    id: true,
                    types: true,
                };
                parse_entity(body, ctx, requirements, self.config.parse).map(drop)
            }
            WriteKind::Replace => {
                let e = self.fragment_entity(ctx, w.id, body, self.config.parse)?;
                if e.types.is_empty() {
                    return Err(NgsiError::bad_data("entity type is missing"));
                }
                Ok(())
            }
            WriteKind::UpdateAttrs => {
                let e = self.fragment_entity(ctx, w.id, body, ParseLimits::patch())?;
                crate::check_no_compound_null(&e.attrs)
            }
            WriteKind::Merge => self
                .fragment_entity(ctx, w.id, body, ParseLimits::merge())
                .map(drop),
            WriteKind::AppendAttrs => self
                .fragment_entity(ctx, w.id, body, self.config.parse)
                .map(drop),
            WriteKind::PartialUpdate => {
                crate::parse_fragment_instance(attr, body, ctx, ParseLimits::patch()).map(drop)
            }
            WriteKind::ReplaceAttr => match crate::strip_context(body) {
                Some(stripped) => parse_attribute(attr, &stripped, ctx, self.config.parse),
                None => parse_attribute(attr, body, ctx, self.config.parse),
            }
            .map(drop),
            _ => Ok(()),
        }
    }

    /// Sends the parts of `plan` to their sources and combines their
    /// outcomes with the local one (`local`: the local part's result, with
    /// its UpdateResult for Update and Append Attributes), giving the
    /// client's answer and the `NGSILD-Warning`s of the sources that
    /// failed.
    pub async fn forward_write(
        &self,
        tenant: &str,
        ctx: &Ctx,
        w: &Write<'_>,
        plan: Plan,
        local: Option<NgsiResult<Option<UpdateResult>>>,
    ) -> (NgsiResult<WriteAnswer>, Vec<String>) {
        let alias = self.source_alias(tenant);
        let (asked, refused): (Vec<Part>, Vec<Part>) =
            plan.parts.into_iter().partition(|p| p.offered);
        let sources: Vec<Arc<Registration>> =
            asked.iter().map(|p| p.registration.clone()).collect();
        let bodies: Vec<(Arc<str>, Option<Value>)> = asked
            .iter()
            .map(|p| (p.registration.id.clone(), p.body.clone()))
            .collect();
        let params = match w.kind {
            WriteKind::Purge => passed_on_if(w.origin.query, purge_param),
            _ => passed_on(w.origin.query, WRITE_PARAMS),
        };
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| {
                    let body = body_for(&bodies, r).and_then(Option::as_ref);
                    f.write_request(r, w, body, params.clone(), ctx, &alias)
                },
                Forwarder::write,
                Ok,
            )
            .await;
        let warnings = answers.warnings;
        // Every part: what it wrote, and its error if it failed.
        let mut outcomes: Vec<PartOutcome> = Vec::new();
        match local {
            Some(Err(e)) if plan.local_optional && e.kind == ErrorKind::ResourceNotFound => {}
            Some(result) => outcomes.push(PartOutcome {
                attrs: plan.local_attrs.clone(),
                registration: None,
                result: result.map_err(Failed::Local),
            }),
            None => {}
        }
        let attrs_of = |r: &Registration| {
            asked
                .iter()
                .chain(refused.iter())
                .find(|p| p.registration.id == r.id)
                .map(|p| p.attrs.clone())
                .unwrap_or_default()
        };
        for (r, _) in &answers.answers {
            outcomes.push(PartOutcome {
                attrs: attrs_of(r),
                registration: Some(r.id.clone()),
                result: Ok(None),
            });
        }
        for (r, failure) in answers.failed {
            let failed = match failure {
                // A source's 207 that names what failed; one that does not
                // (no body, or no entries) failed its whole part.
                Failure::Refused(207, Some(own)) if names_failures(&own) => Failed::Partial(own),
                f => Failed::Remote(problem_of(&r, f)),
            };
            outcomes.push(PartOutcome {
                attrs: attrs_of(&r),
                registration: Some(r.id.clone()),
                result: Err(failed),
            });
        }
        for p in refused {
            let e = NgsiError::new(
                ErrorKind::Conflict,
                format!(
                    "registration {} holds this data and does not offer {}",
                    p.registration.id,
                    w.kind.operation()
                ),
            );
            outcomes.push(PartOutcome {
                attrs: p.attrs,
                registration: Some(p.registration.id.clone()),
                result: Err(Failed::Local(e)),
            });
        }
        (answer(w, ctx, outcomes), warnings)
    }
}

/// How one part of a write went.
struct PartOutcome {
    attrs: Vec<Iri>,
    /// The registration of a remote part.
    registration: Option<Arc<str>>,
    /// The local UpdateResult, or the failure.
    result: Result<Option<UpdateResult>, Failed>,
}

/// A part that failed: here, at a source (its ProblemDetails), or in part
/// at a source (its 207 answer).
enum Failed {
    Local(NgsiError),
    Remote(Value),
    Partial(Map<String, Value>),
}

impl Failed {
    fn problem(&self) -> Value {
        match self {
            Failed::Local(e) => e.problem_details(),
            Failed::Remote(p) => p.clone(),
            Failed::Partial(_) => NgsiError::new(
                ErrorKind::BadGateway,
                "the context source did only part of the operation",
            )
            .problem_details(),
        }
    }

    fn error(&self) -> NgsiError {
        match self {
            Failed::Local(e) => e.clone(),
            Failed::Remote(p) => error_of(p),
            Failed::Partial(_) => NgsiError::new(
                ErrorKind::BadGateway,
                "the context source did only part of the operation",
            ),
        }
    }
}

/// Whether a source's 207 answer lists failures (`notUpdated` of an
/// UpdateResult, `errors` of a BatchOperationResult).
fn names_failures(own: &Map<String, Value>) -> bool {
    ["notUpdated", "errors"].iter().any(|k| {
        own.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    })
}

/// A source's own 207 answer, each of its failures naming the
/// registration: entries of `errors` (a BatchOperationResult) or
/// `notUpdated` (an UpdateResult).
fn with_registration(mut own: Map<String, Value>, registration: &str) -> Map<String, Value> {
    for key in ["errors", "notUpdated"] {
        if let Some(Value::Array(entries)) = own.get_mut(key) {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.insert("registrationId".into(), Value::from(registration));
            }
        }
    }
    own
}

/// The ProblemDetails of a source's failure: its own when it answered one,
/// with the status it answered.
fn problem_of(r: &Registration, failure: Failure) -> Value {
    let (kind, status, own) = match failure {
        Failure::Refused(status, own) => (kind_of(status), status, own),
        Failure::Timeout(_) | Failure::CoolingDown => (
            ErrorKind::GatewayTimeout,
            ErrorKind::GatewayTimeout.status(),
            None,
        ),
        Failure::NoAnswer(_) | Failure::Status(_) | Failure::Invalid(_) => {
            (ErrorKind::BadGateway, ErrorKind::BadGateway.status(), None)
        }
    };
    let mut p = match own.filter(|m| m.contains_key("type")) {
        Some(m) => m,
        None => match NgsiError::new(kind, format!("context source {} failed", r.id))
            .problem_details()
        {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    };
    p.insert("status".into(), Value::from(status));
    Value::Object(p)
}

/// The error kind closest to a source's status.
fn kind_of(status: u16) -> ErrorKind {
    match status {
        400 => ErrorKind::BadRequestData,
        404 => ErrorKind::ResourceNotFound,
        409 => ErrorKind::AlreadyExists,
        422 => ErrorKind::OperationNotSupported,
        504 => ErrorKind::GatewayTimeout,
        _ => ErrorKind::BadGateway,
    }
}

/// The client's answer from the outcomes of the parts (clauses 5.6.x.4):
/// all succeeded → the operation's own; one part, failed → its error;
/// otherwise a 207 naming each failed part.
fn answer(w: &Write<'_>, ctx: &Ctx, outcomes: Vec<PartOutcome>) -> NgsiResult<WriteAnswer> {
    if let [only] = outcomes.as_slice()
        && let Err(failed) = &only.result
    {
        // A source that did part of it: its own answer, or ours when it
        // did not say which part.
        match (failed, &only.registration) {
            (Failed::Partial(own), Some(r)) => {
                return Ok(WriteAnswer::Partial(Value::Object(with_registration(
                    own.clone(),
                    r,
                ))));
            }
            (Failed::Remote(p), _) if p.get("status") == Some(&Value::from(207)) => {}
            _ => return Err(failed.error()),
        }
    }
    let failed = outcomes.iter().any(|o| o.result.is_err());
    if w.kind.by_attribute() {
        let mut result = UpdateResult::default();
        for o in outcomes {
            match o.result {
                Ok(Some(local)) => {
                    result.updated.extend(local.updated);
                    result.not_updated.extend(local.not_updated);
                }
                Ok(None) => result
                    .updated
                    .extend(o.attrs.iter().map(|a| ctx.compact(a).into_owned())),
                // What the source says it did and did not.
                Err(Failed::Partial(own)) => {
                    let registration = o.registration.clone().unwrap_or_default();
                    let own = with_registration(own, &registration);
                    let names = own.get("updated").and_then(Value::as_array);
                    result.updated.extend(
                        names
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string),
                    );
                    for e in own
                        .get("notUpdated")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let name = e.get("attributeName").and_then(Value::as_str);
                        let reason = e.get("reason").and_then(Value::as_str);
                        result
                            .registrations
                            .push((result.not_updated.len(), registration.clone()));
                        result.not_updated.push((
                            name.unwrap_or_default().to_string(),
                            reason
                                .unwrap_or("not updated by the context source")
                                .to_string(),
                        ));
                    }
                }
                Err(failed) => {
                    let problem = failed.problem();
                    let reason = problem
                        .get("detail")
                        .or_else(|| problem.get("title"))
                        .and_then(Value::as_str)
                        .unwrap_or("the context source failed")
                        .to_string();
                    let names: Vec<String> = if o.attrs.is_empty() {
                        w.attr.map(str::to_string).into_iter().collect()
                    } else {
                        o.attrs
                            .iter()
                            .map(|a| ctx.compact(a).into_owned())
                            .collect()
                    };
                    for n in names {
                        if let Some(r) = &o.registration {
                            result
                                .registrations
                                .push((result.not_updated.len(), r.clone()));
                        }
                        result.not_updated.push((n, reason.clone()));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        result.updated.retain(|n| seen.insert(n.clone()));
        return Ok(if result.is_partial() {
            WriteAnswer::Partial(result.to_json())
        } else {
            WriteAnswer::Done
        });
    }
    if !failed {
        return Ok(WriteAnswer::Done);
    }
    let mut errors: Vec<Value> = Vec::new();
    for o in &outcomes {
        // A source's own 207: its errors, naming the registration.
        if let (Err(Failed::Partial(own)), Some(r)) = (&o.result, &o.registration) {
            let own = with_registration(own.clone(), r);
            errors.extend(
                own.get("errors")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
    }
    let errors: Vec<Value> = errors
        .into_iter()
        .chain(
            outcomes
                .iter()
                .filter(|o| !matches!(o.result, Err(Failed::Partial(_))))
                .filter_map(|o| {
                    let failed = o.result.as_ref().err()?;
                    let mut e = Map::new();
                    // A purge names no entity.
                    if !w.id.is_empty() {
                        e.insert("entityId".into(), Value::from(w.id));
                    }
                    e.insert("error".into(), failed.problem());
                    if let Some(r) = &o.registration {
                        e.insert("registrationId".into(), Value::from(&**r));
                    }
                    Some(Value::Object(e))
                }),
        )
        .collect();
    let success: Vec<&str> = if !w.id.is_empty() && outcomes.iter().any(|o| o.result.is_ok()) {
        vec![w.id]
    } else {
        Vec::new()
    };
    Ok(WriteAnswer::Partial(serde_json::json!({
        "success": success,
        "errors": errors,
    })))
}

/// The error of a single failed part, for the client.
fn error_of(problem: &Value) -> NgsiError {
    let status = problem.get("status").and_then(Value::as_u64).unwrap_or(502) as u16;
    let kind = match problem.get("type").and_then(Value::as_str) {
        Some(t) if t.ends_with("/Conflict") => ErrorKind::Conflict,
        Some(t) if t.ends_with("/LoopDetected") => ErrorKind::LoopDetected,
        Some(t) if t.ends_with("/InvalidRequest") && status == 400 => ErrorKind::InvalidRequest,
        _ => kind_of(status),
    };
    let detail = problem
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("the context source failed");
    NgsiError::new(kind, detail)
}

impl Forwarder {
    /// The request that sends a part of write `w` to the source of `r`:
    /// the client's method and path, the part's document.
    fn write_request(
        &self,
        r: &Registration,
        w: &Write<'_>,
        body: Option<&Value>,
        params: Vec<String>,
        ctx: &Ctx,
        alias: &str,
    ) -> Result<Prepared, Failure> {
        let (body, ctx) = match body.and_then(|b| Some((b, context_url(b)?))) {
            Some((b, url)) => (Some(without_context(b)), linking(ctx, url)),
            None => (body.cloned(), ctx.clone()),
        };
        let origin = Origin {
            body: body.as_ref(),
            ..w.origin
        };
        let segments = w.kind.segments(w.id, w.attr.unwrap_or_default());
        let mut p = self.request(
            r,
            &segments,
            params,
            body.as_ref().map(|b| b.to_string().into_bytes()),
            &origin,
            &ctx,
            alias,
        )?;
        p.method = w.kind.method();
        Ok(p)
    }

    /// Sends a write: any 2xx but 207 is success.
    async fn write(self, p: Prepared) -> Result<Vec<Value>, Failure> {
        // A write's answer is short: at most 1 MiB is read.
        let (status, body) = self.send_once(p, 1 << 20).await?;
        if (200..300).contains(&status) && status != 207 {
            return Ok(Vec::new());
        }
        // A ProblemDetails, or the result document of a 207.
        let own = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) if status == 207 || m.contains_key("type") => Some(m),
            _ => None,
        };
        Err(Failure::Refused(status, own))
    }
}

/// An entity's id and its part of a batch (an entity fragment, or the id
/// for Delete).
type BatchItem = (String, Value);

/// A source's batch, and the context its entities all name by one URL
/// (then sent in a Link header, the entities without `@context`).
type SourceBatch = (Value, Option<Ctx>);

/// The remote parts of a batch operation's entities (clauses 5.6.7.4–
/// 5.6.10.4, 5.6.20.4): each registration gets one batch of the same
/// operation with its part of every entity it holds; the client's
/// BatchOperationResult names, per entity, each part that failed.
pub(crate) struct BatchFanout {
    /// The path segment of the operation under `/entityOperations`.
    segment: &'static str,
    /// What each registration that offers the operation gets: an entity's
    /// id and its part (an entity fragment, or the id for Delete).
    by_source: Vec<(Arc<Registration>, Vec<BatchItem>)>,
    /// The parts refused for lack of the operation: (entity id,
    /// registration).
    conflicts: Vec<(String, Arc<Registration>)>,
    /// The entities whose local part is a removal "if it exists".
    local_optional: Vec<String>,
}

impl BatchFanout {
    pub(crate) fn new(segment: &'static str) -> Self {
        Self {
            segment,
            by_source: Vec::new(),
            conflicts: Vec::new(),
            local_optional: Vec::new(),
        }
    }

    /// Takes the remote parts of entity `id`'s `plan`, and gives back its
    /// local part (see [`Plan::local`]).
    pub(crate) fn add(&mut self, id: &str, plan: Plan, delete: bool) -> Option<Option<Value>> {
        for part in plan.parts {
            if !part.offered {
                self.conflicts.push((id.to_string(), part.registration));
                continue;
            }
            let item = if delete {
                Value::from(id)
            } else {
                part.body.unwrap_or(Value::Null)
            };
            match self
                .by_source
                .iter_mut()
                .find(|(r, _)| r.id == part.registration.id)
            {
                Some((_, items)) => items.push((id.to_string(), item)),
                None => self
                    .by_source
                    .push((part.registration, vec![(id.to_string(), item)])),
            }
        }
        if plan.local_optional {
            self.local_optional.push(id.to_string());
        }
        plan.local
    }

    /// Whether some entity has a part elsewhere.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_source.is_empty() && self.conflicts.is_empty()
    }

    /// Sends each registration its batch and folds the outcomes into
    /// `result` (which holds the local outcomes): as for a write of one
    /// entity, an entity some part of which was written is in `success`,
    /// and each part that failed is an error.
    pub(crate) async fn finish(
        self,
        broker: &Broker,
        tenant: &str,
        ctx: &Ctx,
        origin: &Origin<'_>,
        op: &'static str,
        result: &mut crate::BatchResult,
    ) {
        let alias = broker.source_alias(tenant);
        let params = passed_on(origin.query, WRITE_PARAMS);
        let sources: Vec<Arc<Registration>> =
            self.by_source.iter().map(|(r, _)| r.clone()).collect();
        // Each source's batch, and the context URL its entities all name
        // (they then go as JSON with that Link; see `context_url`).
        let bodies: Vec<(Arc<str>, SourceBatch)> = self
            .by_source
            .iter()
            .map(|(r, items)| {
                let first = items.first().and_then(|(_, v)| context_url(v));
                let shared =
                    first.filter(|url| items.iter().all(|(_, v)| context_url(v) == Some(url)));
                let array = items
                    .iter()
                    .map(|(_, v)| match shared {
                        Some(_) => without_context(v),
                        None => v.clone(),
                    })
                    .collect();
                let ctx = shared.map(|url| linking(ctx, url));
                (r.id.clone(), (Value::Array(array), ctx))
            })
            .collect();
        let segment = self.segment;
        let answers = broker
            .ask_sources(
                tenant,
                sources,
                |f, r| {
                    let (body, linked) = body_for(&bodies, r)
                        .ok_or_else(|| Failure::Invalid("no batch for the source".into()))?;
                    let origin = Origin {
                        body: Some(body),
                        ..*origin
                    };
                    f.request(
                        r,
                        &["entityOperations", segment],
                        params.clone(),
                        Some(body.to_string().into_bytes()),
                        &origin,
                        linked.as_ref().unwrap_or(ctx),
                        &alias,
                    )
                },
                Forwarder::write,
                Ok,
            )
            .await;
        let ids_of = |r: &Registration| -> Vec<String> {
            self.by_source
                .iter()
                .find(|(x, _)| x.id == r.id)
                .map(|(_, items)| items.iter().map(|(id, _)| id.clone()).collect())
                .unwrap_or_default()
        };
        // (entity id, ProblemDetails, registration) of each failed part.
        let mut failed: Vec<(String, Value, Arc<str>)> = Vec::new();
        // The entities a part of which a source wrote.
        let mut written: Vec<String> = answers
            .answers
            .iter()
            .flat_map(|(r, _)| ids_of(r))
            .collect();
        for (r, f) in answers.failed {
            let ids = ids_of(&r);
            // The source's own BatchOperationResult tells which failed; one
            // that does not fails all it was sent.
            let own_errors = match &f {
                Failure::Refused(207, Some(own)) => own.get("errors").and_then(Value::as_array),
                _ => None,
            };
            match own_errors {
                Some(errors) => {
                    let mut named = Vec::new();
                    for e in errors {
                        let Some(id) = e.get("entityId").and_then(Value::as_str) else {
                            continue;
                        };
                        let problem = e.get("error").cloned().unwrap_or(Value::Null);
                        failed.push((id.to_string(), problem, r.id.clone()));
                        named.push(id.to_string());
                    }
                    written.extend(ids.into_iter().filter(|id| !named.contains(id)));
                }
                None => {
                    let problem = problem_of(&r, f);
                    failed.extend(
                        ids.into_iter()
                            .map(|id| (id, problem.clone(), r.id.clone())),
                    );
                }
            }
        }
        for (id, r) in self.conflicts {
            let e = NgsiError::new(
                ErrorKind::Conflict,
                format!(
                    "registration {} holds this data and does not offer {op}",
                    r.id
                ),
            );
            failed.push((id, e.problem_details(), r.id.clone()));
        }
        // A removal "if it exists" of an entity not held here is no failure.
        result.errors.retain(|(id, e)| {
            !(e.kind == ErrorKind::ResourceNotFound && self.local_optional.contains(id))
        });
        // As for a write of one entity: an entity some part of which was
        // written is a success, and each part that failed an error.
        for id in written {
            if !result.success.contains(&id) {
                result.success.push(id);
            }
        }
        for (id, problem, registration) in failed {
            result.remote_errors.push((id, problem, registration));
        }
        result.warnings.extend(answers.warnings);
    }
}

impl Broker {
    /// Purge Entities (clause 5.6.21) with the registrations of the tenant
    /// that offer `purgeEntity` and whose information selects the query:
    /// each gets the same DELETE with the client's selection, and this
    /// broker purges what it holds. The answer and warnings are those of
    /// [`Broker::forward_write`].
    pub async fn purge_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        params: &crate::QueryParams,
        origin: &Origin<'_>,
    ) -> (NgsiResult<WriteAnswer>, Vec<String>) {
        let sources = match self.purge_sources(tenant, ctx, params, origin) {
            Ok(s) => s,
            Err(e) => return (Err(e), Vec::new()),
        };
        let local = self.purge_entities(tenant, ctx, params, origin.local).await;
        if sources.is_empty() {
            return (local.map(|()| WriteAnswer::Done), Vec::new());
        }
        let local = match local {
            // Nothing held here: the sources hold the tenant's data.
            Err(e) if e.kind == ErrorKind::NonexistentTenant => None,
            // A request refused here goes nowhere.
            Err(e) => return (Err(e), Vec::new()),
            Ok(()) => Some(Ok(None)),
        };
        let plan = Plan {
            parts: sources
                .into_iter()
                .map(|(registration, offered)| Part {
                    registration,
                    attrs: Vec::new(),
                    body: None,
                    offered,
                })
                .collect(),
            local: None,
            local_attrs: Vec::new(),
            local_optional: false,
        };
        let w = Write {
            kind: WriteKind::Purge,
            id: "",
            attr: None,
            type_param: None,
            origin: *origin,
        };
        self.forward_write(tenant, ctx, &w, plan, local).await
    }

    /// The registrations a purge goes to (none with `local=true`), each
    /// with whether it offers `purgeEntity` (an exclusive or redirect one
    /// that does not is a Conflict; an inclusive one is left out).
    fn purge_sources(
        &self,
        tenant: &str,
        ctx: &Ctx,
        params: &crate::QueryParams,
        origin: &Origin<'_>,
    ) -> NgsiResult<Vec<(Arc<Registration>, bool)>> {
        const OP: &str = "purgeEntity";
        let Some(registrations) = self.write_registrations(tenant, origin, OP) else {
            return Ok(Vec::new());
        };
        let mut p = params.clone();
        p.limit = Some("1".into());
        let query = crate::EntityQuery::from_params(&p, ctx, 1, usize::MAX)?;
        let mut selection = registration_selection(&query);
        if selection.is_empty() {
            // A purge by attributes, q or geo-query alone.
            selection.push(crate::registrations::model::RegistrationQuery {
                attrs: query.attrs_filter.clone(),
                ..Default::default()
            });
        }
        let names_entities =
            params.r#type.is_some() || params.id.is_some() || params.id_pattern.is_some();
        let sources: Vec<(Arc<Registration>, bool)> = registrations
            .into_iter()
            .filter(|r| query.csf.as_ref().is_none_or(|c| r.passes_csf(c)))
            .filter(|r| {
                selection
                    .iter()
                    .any(|s| r.information.iter().any(|i| s.info_is_selected(i)))
            })
            .map(|r| {
                let offered = r.offers(OP);
                (r, offered)
            })
            // A purge by attributes, q or geo-query alone names no entities
            // a registration holds: one that does not take purges is left
            // out rather than a Conflict.
            .filter(|(_, offered)| *offered || names_entities)
            .collect();
        if !sources.is_empty() {
            self.check_loop(tenant, origin)?;
        }
        Ok(sources)
    }
}
