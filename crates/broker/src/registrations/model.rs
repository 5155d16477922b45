//! The CSourceRegistration data type (clause 5.2.9): parsing a document (or
//! a PATCH fragment, member by member) into expanded form, rendering it back
//! compacted with the reader's context, and matching it against a discovery
//! query (clauses 5.10.2 and 5.12).

use std::sync::Arc;

use ngsi_geo::{GeoQuery, Geometry};
use ngsi_model::time::{format_micros, parse_datetime};
use ngsi_model::{Iri, NgsiError, NgsiResult, Terms};
use ngsi_query::{JsonTarget, Query, ScopeQuery, TypeExpr};
use regex::Regex;
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::query::IdPattern;

fn bad(detail: impl Into<String>) -> NgsiError {
    NgsiError::bad_data(detail)
}

/// The NGSI-LD Null (clause 4.5.0): a member set to it is deleted.
const NGSI_NULL: &str = "urn:ngsi-ld:null";

/// The single operations of clause 4.20 (Table 4.20-1).
const OPERATIONS: &[&str] = &[
    "createEntity",
    "updateEntity",
    "appendAttrs",
    "updateAttrs",
    "deleteAttrs",
    "deleteEntity",
    "createBatch",
    "upsertBatch",
    "updateBatch",
    "deleteBatch",
    "upsertTemporal",
    "appendAttrsTemporal",
    "deleteAttrsTemporal",
    "updateAttrInstanceTemporal",
    "deleteAttrInstanceTemporal",
    "deleteTemporal",
    "mergeEntity",
    "replaceEntity",
    "replaceAttrs",
    "mergeBatch",
    "purgeEntity",
    "retrieveEntity",
    "queryEntity",
    "queryBatch",
    "retrieveTemporal",
    "queryTemporal",
    "retrieveEntityTypes",
    "retrieveEntityTypeDetails",
    "retrieveEntityTypeInfo",
    "retrieveAttrTypes",
    "retrieveAttrTypeDetails",
    "retrieveAttrTypeInfo",
    "createSubscription",
    "updateSubscription",
    "retrieveSubscription",
    "querySubscription",
    "deleteSubscription",
    "retrieveEntityMap",
    "updateEntityMap",
    "deleteEntityMap",
    "createEntityMapQueryEntity",
    "createEntityMapQueryTemporal",
    "retrieveContextSourceIdentity",
];

/// The operation groups of clause 4.20 (Table 4.20-2).
const GROUPS: &[&str] = &[
    "federationOps",
    "associationOps",
    "updateOps",
    "retrieveOps",
    "redirectionOps",
];

/// What an auxiliary registration may offer (clause 5.9.2.4): reads only.
const AUXILIARY_OPERATIONS: &[&str] = &["retrieveOps", "retrieveEntity", "queryEntity"];

/// The GeoProperties of a registration, in rendering order.
const GEO_MEMBERS: [&str; 3] = ["location", "observationSpace", "operationSpace"];

/// Members that the broker fills in (Table 5.2.9-2) or that are system
/// attributes: ignored on input, as the specification says.
const READ_ONLY: &[&str] = &[
    "status",
    "timesSent",
    "timesFailed",
    "lastSuccess",
    "lastFailure",
    "createdAt",
    "modifiedAt",
    "@context",
];

/// Plain members kept as the client wrote them once checked, in rendering
/// order.
const PLAIN: [&str; 4] = ["registrationName", "description", "tenant", "refreshRate"];

/// A DateTime as an instant and as the client wrote it (echoed byte for
/// byte).
#[derive(Debug, Clone, PartialEq)]
pub struct Instant {
    pub micros: i64,
    pub text: String,
}

/// A TimeInterval (clause 5.2.11): `endAt` absent means open-ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub start: Instant,
    pub end: Option<Instant>,
}

/// One EntityInfo (clause 5.2.8).
#[derive(Debug, Clone)]
pub struct EntityInfo {
    pub id: Option<String>,
    pub id_pattern: Option<IdPattern>,
    /// Expanded type names.
    pub types: Vec<Iri>,
    /// Whether `type` was given as an array.
    pub types_array: bool,
}

/// One RegistrationInfo (clause 5.2.10).
#[derive(Debug, Clone, Default)]
pub struct RegistrationInfo {
    pub entities: Option<Vec<EntityInfo>>,
    /// Expanded attribute names.
    pub property_names: Option<Vec<Iri>>,
    pub relationship_names: Option<Vec<Iri>>,
}

/// What a registration holds of one entity (see [`Registration::cover`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cover {
    /// All of it.
    Entity,
    /// These attributes (expanded names).
    Attributes(Vec<Iri>),
}

/// The mode of a registration (clause 4.3.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Inclusive,
    Exclusive,
    Redirect,
    Auxiliary,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Inclusive => "inclusive",
            Mode::Exclusive => "exclusive",
            Mode::Redirect => "redirect",
            Mode::Auxiliary => "auxiliary",
        }
    }
}

/// A context source registration in expanded form.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: Arc<str>,
    pub information: Vec<RegistrationInfo>,
    pub endpoint: Option<String>,
    pub mode: Mode,
    /// `None`: the default, federationOps.
    pub operations: Option<Vec<String>>,
    pub expires_at: Option<Instant>,
    pub observation_interval: Option<Interval>,
    pub management_interval: Option<Interval>,
    /// location, observationSpace, operationSpace: as given and parsed.
    pub geo: [Option<(Value, Geometry)>; 3],
    /// `scope` as given, and its scopes.
    pub scope: Option<(Value, Vec<String>)>,
    pub context_source_info: Option<Vec<(String, String)>>,
    pub management: Option<Map<String, Value>>,
    /// registrationName, description, tenant, refreshRate.
    pub plain: [Option<String>; 4],
    /// Context Source Properties: every other member, by expanded name.
    pub properties: Vec<(Iri, Value)>,
    pub created_at: i64,
    pub modified_at: i64,
}

fn string<'a>(v: &'a Value, name: &str) -> NgsiResult<&'a str> {
    v.as_str()
        .ok_or_else(|| bad(format!("{name} must be a string")))
}

fn instant(v: &Value, name: &str) -> NgsiResult<Instant> {
    let text = string(v, name)?;
    let micros =
        parse_datetime(text).ok_or_else(|| bad(format!("{name} {text:?} is not a DateTime")))?;
    Ok(Instant {
        micros,
        text: text.to_string(),
    })
}

fn interval(v: &Value, name: &str) -> NgsiResult<Interval> {
    let Value::Object(m) = v else {
        return Err(bad(format!("{name} must be a TimeInterval object")));
    };
    if let Some(k) = m.keys().find(|k| *k != "startAt" && *k != "endAt") {
        return Err(bad(format!("{name} has an unknown member {k:?}")));
    }
    let start = instant(
        m.get("startAt")
            .ok_or_else(|| bad(format!("{name} needs startAt")))?,
        &format!("{name}.startAt"),
    )?;
    let end = m
        .get("endAt")
        .map(|e| instant(e, &format!("{name}.endAt")))
        .transpose()?;
    if end.as_ref().is_some_and(|e| e.micros <= start.micros) {
        return Err(bad(format!("{name}.endAt must be after its startAt")));
    }
    Ok(Interval { start, end })
}

/// A non-empty array of strings.
fn names(v: &Value, name: &str) -> NgsiResult<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(bad(format!("{name} must be an array of strings")));
    };
    if items.is_empty() {
        return Err(bad(format!("{name} must not be an empty array")));
    }
    items
        .iter()
        .map(|x| string(x, name).map(str::to_string))
        .collect()
}

fn expanded_names(v: &Value, name: &str, ctx: &Ctx) -> NgsiResult<Vec<Iri>> {
    let list = names(v, name)?;
    for n in &list {
        if !ngsi_model::parse::is_valid_name(n) && !ngsi_model::parse::is_absolute_iri(n) {
            return Err(bad(format!(
                "{n:?} in {name} is not a valid attribute name"
            )));
        }
    }
    let mut out: Vec<Iri> = Vec::with_capacity(list.len());
    for n in &list {
        let e = ctx.expand_iri(n);
        if out.contains(&e) {
            return Err(bad(format!("{n:?} appears twice in {name}")));
        }
        out.push(e);
    }
    Ok(out)
}

fn entity_info(v: &Value, ctx: &Ctx) -> NgsiResult<EntityInfo> {
    let Value::Object(m) = v else {
        return Err(bad("an EntityInfo must be an object"));
    };
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "idPattern" | "type"))
    {
        return Err(bad(format!("an EntityInfo has an unknown member {k:?}")));
    }
    let (types, types_array) = match m.get("type") {
        None => return Err(bad("an EntityInfo needs a type")),
        Some(Value::String(t)) => (vec![t.clone()], false),
        Some(v @ Value::Array(_)) => (names(v, "type")?, true),
        Some(_) => return Err(bad("the type of an EntityInfo must be a string or strings")),
    };
    // An entity type name as Create Entity takes it (clauses 5.2.8, 4.6.2).
    if let Some(t) = types.iter().find(|t| !ngsi_model::parse::is_valid_name(t)) {
        return Err(bad(format!(
            "the type {t:?} of an EntityInfo is not a valid entity type name"
        )));
    }
    let id = m
        .get("id")
        .map(|v| {
            let id = string(v, "id")?;
            crate::check_uri(id, "EntityInfo id").map(|()| id.to_string())
        })
        .transpose()?;
    let id_pattern = m
        .get("idPattern")
        .map(|v| {
            let p = string(v, "idPattern")?;
            IdPattern::new(p).map_err(|e| bad(format!("invalid idPattern: {e}")))
        })
        .transpose()?;
    Ok(EntityInfo {
        id,
        id_pattern,
        types: types.iter().map(|t| ctx.expand_iri(t)).collect(),
        types_array,
    })
}

fn registration_info(v: &Value, ctx: &Ctx) -> NgsiResult<RegistrationInfo> {
    let Value::Object(m) = v else {
        return Err(bad("a RegistrationInfo must be an object"));
    };
    let mut info = RegistrationInfo::default();
    for (k, v) in m {
        match k.as_str() {
            "entities" => {
                let Value::Array(items) = v else {
                    return Err(bad("entities must be an array of EntityInfo"));
                };
                if items.is_empty() {
                    return Err(bad("entities must not be an empty array"));
                }
                info.entities = Some(
                    items
                        .iter()
                        .map(|e| entity_info(e, ctx))
                        .collect::<NgsiResult<_>>()?,
                );
            }
            "propertyNames" => info.property_names = Some(expanded_names(v, k, ctx)?),
            "relationshipNames" => info.relationship_names = Some(expanded_names(v, k, ctx)?),
            other => {
                return Err(bad(format!(
                    "a RegistrationInfo has an unknown member {other:?}"
                )));
            }
        }
    }
    if info.entities.is_none() && info.property_names.is_none() && info.relationship_names.is_none()
    {
        return Err(bad(
            "a RegistrationInfo needs entities, propertyNames or relationshipNames",
        ));
    }
    Ok(info)
}

fn key_values(v: &Value) -> NgsiResult<Vec<(String, String)>> {
    let Value::Array(items) = v else {
        return Err(bad("contextSourceInfo must be an array of key-value pairs"));
    };
    if items.is_empty() {
        return Err(bad("contextSourceInfo must not be an empty array"));
    }
    items
        .iter()
        .map(|item| {
            let pair = match item {
                Value::Object(m) if m.len() == 2 => (m.get("key"), m.get("value")),
                _ => (None, None),
            };
            match pair {
                (Some(Value::String(k)), Some(Value::String(v))) if !k.is_empty() => {
                    check_source_info(k, v)?;
                    Ok((k.clone(), v.clone()))
                }
                _ => Err(bad(
                    "each contextSourceInfo entry must be {\"key\": string, \"value\": string}",
                )),
            }
        })
        .collect()
}

/// The keys of clause 4.3.6.6 whose values are constrained.
fn check_source_info(key: &str, value: &str) -> NgsiResult<()> {
    let ok = match key {
        "accept" | "contentType" => {
            matches!(value, "application/json" | "application/ld+json")
        }
        "jsonldContext" => ngsi_model::parse::is_absolute_iri(value),
        "ngsildConformance" => value.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "contextSourceInfo {key:?} has an invalid value {value:?}"
        )))
    }
}

fn management(v: &Value) -> NgsiResult<Map<String, Value>> {
    let Value::Object(m) = v else {
        return Err(bad("management must be an object"));
    };
    for (k, v) in m {
        let ok = match k.as_str() {
            "localOnly" => v.is_boolean(),
            "cacheDuration" => v.as_str().is_some_and(is_duration),
            "timeout" | "cooldown" => v.as_f64().is_some_and(|n| n > 0.0 && n.is_finite()),
            _ => return Err(bad(format!("management has an unknown member {k:?}"))),
        };
        if !ok {
            return Err(bad(format!("management.{k} has an invalid value")));
        }
    }
    Ok(m.clone())
}

/// An ISO 8601 duration such as `PT1H30M` or `P1D`.
fn is_duration(s: &str) -> bool {
    static RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^P(?:\d+(?:\.\d+)?Y)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?W)?(?:\d+(?:\.\d+)?D)?(?:T(?:\d+(?:\.\d+)?H)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?S)?)?$")
            .expect("a valid pattern")
    });
    s.len() > 1 && !s.ends_with('T') && RE.is_match(s)
}

fn operations(v: &Value) -> NgsiResult<Vec<String>> {
    let list = names(v, "operations")?;
    for op in &list {
        if !OPERATIONS.contains(&op.as_str()) && !GROUPS.contains(&op.as_str()) {
            return Err(bad(format!(
                "{op:?} is not an operation or operation group of clause 4.20"
            )));
        }
    }
    Ok(list)
}

fn scope(v: &Value) -> NgsiResult<Vec<String>> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(_) => names(v, "scope")?,
        _ => return Err(bad("scope must be a string or an array of strings")),
    };
    for s in &list {
        ngsi_query::validate_scope(s).map_err(|e| bad(format!("invalid scope {s:?}: {e}")))?;
    }
    Ok(list)
}

/// Whether `v` deletes the member it is given for in a PATCH.
fn is_null(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some(NGSI_NULL)
}

impl Registration {
    fn empty(id: Arc<str>, now: i64) -> Self {
        Self {
            id,
            information: Vec::new(),
            endpoint: None,
            mode: Mode::default(),
            operations: None,
            expires_at: None,
            observation_interval: None,
            management_interval: None,
            geo: [None, None, None],
            scope: None,
            context_source_info: None,
            management: None,
            plain: [None, None, None, None],
            properties: Vec::new(),
            created_at: now,
            modified_at: now,
        }
    }

    /// Register (clause 5.9.2): a whole document. `fresh` checks what only a
    /// new request must meet (expiresAt in the future); a replay at startup
    /// skips it.
    pub fn create(doc: &Map<String, Value>, ctx: &Ctx, now: i64, fresh: bool) -> NgsiResult<Self> {
        let id: Arc<str> = match doc.get("id") {
            Some(Value::String(id)) => {
                crate::check_uri(id, "registration id")?;
                id.as_str().into()
            }
            Some(_) => return Err(bad("the id of a registration must be a URI string")),
            None => format!(
                "urn:ngsi-ld:ContextSourceRegistration:{}",
                crate::subscriptions::unique_suffix()
            )
            .into(),
        };
        match doc.get("type") {
            Some(Value::String(t)) if t == "ContextSourceRegistration" => {}
            Some(_) => return Err(bad("type must be \"ContextSourceRegistration\"")),
            None => {
                return Err(bad(
                    "a registration needs type \"ContextSourceRegistration\"",
                ));
            }
        }
        let mut r = Self::empty(id, now);
        for (k, v) in doc {
            if k == "id" || k == "type" {
                continue;
            }
            if v.is_null() {
                return Err(bad(format!("{k} must not be null")));
            }
            r.apply(k, v, ctx)?;
        }
        r.validate(now, fresh)?;
        Ok(r)
    }

    /// Update (clause 5.9.3): each member of the fragment replaces the
    /// stored one whole; null (or the NGSI-LD Null) deletes it.
    pub fn patch(
        &self,
        fragment: &Map<String, Value>,
        ctx: &Ctx,
        now: i64,
        fresh: bool,
    ) -> NgsiResult<Self> {
        let mut r = self.clone();
        for (k, v) in fragment {
            match k.as_str() {
                "id" => {
                    if v.as_str() != Some(&*self.id) {
                        return Err(bad("the id of a registration cannot change"));
                    }
                }
                "type" => {
                    if v.as_str() != Some("ContextSourceRegistration") {
                        return Err(bad("type must be \"ContextSourceRegistration\""));
                    }
                }
                "information" | "endpoint" if is_null(v) => {
                    return Err(bad(format!("{k} is mandatory and cannot be deleted")));
                }
                _ if is_null(v) => r.delete(k, ctx),
                _ => r.apply(k, v, ctx)?,
            }
        }
        r.modified_at = now;
        r.validate(now, fresh)?;
        Ok(r)
    }

    fn delete(&mut self, key: &str, ctx: &Ctx) {
        match key {
            "mode" => self.mode = Mode::default(),
            "operations" => self.operations = None,
            "expiresAt" => self.expires_at = None,
            "observationInterval" => self.observation_interval = None,
            "managementInterval" => self.management_interval = None,
            "scope" => self.scope = None,
            "contextSourceInfo" => self.context_source_info = None,
            "management" => self.management = None,
            _ => {
                if let Some(i) = GEO_MEMBERS.iter().position(|g| *g == key) {
                    self.geo[i] = None;
                } else if let Some(i) = PLAIN.iter().position(|p| *p == key) {
                    self.plain[i] = None;
                } else {
                    let name = ctx.expand_iri(key);
                    self.properties.retain(|(n, _)| *n != name);
                }
            }
        }
    }

    /// Sets one member.
    fn apply(&mut self, key: &str, v: &Value, ctx: &Ctx) -> NgsiResult<()> {
        match key {
            "information" => {
                let Value::Array(items) = v else {
                    return Err(bad("information must be an array of RegistrationInfo"));
                };
                if items.is_empty() {
                    return Err(bad("information must not be an empty array"));
                }
                self.information = items
                    .iter()
                    .map(|i| registration_info(i, ctx))
                    .collect::<NgsiResult<_>>()?;
            }
            "endpoint" => {
                let e = string(v, "endpoint")?;
                check_endpoint(e)?;
                self.endpoint = Some(e.to_string());
            }
            "mode" => {
                self.mode = match v.as_str() {
                    Some("inclusive") => Mode::Inclusive,
                    Some("exclusive") => Mode::Exclusive,
                    Some("redirect") => Mode::Redirect,
                    Some("auxiliary") => Mode::Auxiliary,
                    _ => {
                        return Err(bad(
                            "mode must be one of inclusive, exclusive, redirect, auxiliary",
                        ));
                    }
                }
            }
            "operations" => self.operations = Some(operations(v)?),
            "expiresAt" => self.expires_at = Some(instant(v, "expiresAt")?),
            "observationInterval" => self.observation_interval = Some(interval(v, key)?),
            "managementInterval" => self.management_interval = Some(interval(v, key)?),
            "scope" => self.scope = Some((v.clone(), scope(v)?)),
            "contextSourceInfo" => self.context_source_info = Some(key_values(v)?),
            "management" => self.management = Some(management(v)?),
            "refreshRate" => {
                let s = string(v, key)?;
                if !is_duration(s) {
                    return Err(bad(format!(
                        "refreshRate {s:?} is not an ISO 8601 duration"
                    )));
                }
                self.plain[3] = Some(s.to_string());
            }
            _ if READ_ONLY.contains(&key) => {}
            _ => {
                if let Some(i) = GEO_MEMBERS.iter().position(|g| *g == key) {
                    let geometry = ngsi_geo::parse_geojson(v)
                        .map_err(|e| bad(format!("{key} is not a valid GeoJSON geometry: {e}")))?;
                    self.geo[i] = Some((v.clone(), geometry));
                } else if let Some(i) = PLAIN.iter().position(|p| *p == key) {
                    let s = string(v, key)?;
                    if s.is_empty() {
                        return Err(bad(format!("{key} must not be empty")));
                    }
                    self.plain[i] = Some(s.to_string());
                } else {
                    if !ngsi_model::parse::is_valid_name(key)
                        && !ngsi_model::parse::is_absolute_iri(key)
                    {
                        return Err(bad(format!(
                            "{key:?} is not a valid name for a Context Source Property"
                        )));
                    }
                    let name = ctx.expand_iri(key);
                    match self.properties.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = v.clone(),
                        None => self.properties.push((name, v.clone())),
                    }
                }
            }
        }
        Ok(())
    }

    fn validate(&self, now: i64, fresh: bool) -> NgsiResult<()> {
        if self.information.is_empty() {
            return Err(bad("a registration needs information"));
        }
        if self.endpoint.is_none() {
            return Err(bad("a registration needs an endpoint"));
        }
        if fresh && self.expires_at.as_ref().is_some_and(|e| e.micros <= now) {
            return Err(bad("expiresAt is in the past"));
        }
        if self.mode == Mode::Auxiliary
            && self.operations.as_ref().is_none_or(|ops| {
                ops.iter()
                    .any(|o| !AUXILIARY_OPERATIONS.contains(&o.as_str()))
            })
        {
            return Err(bad(
                "an auxiliary registration may only offer retrieveOps, retrieveEntity or queryEntity",
            ));
        }
        Ok(())
    }

    /// Whether the registration offers operation `op` (clause 4.20): named
    /// in `operations` or in one of its groups (Table 4.20-2); without
    /// `operations`, the group federationOps. The groups are known for the
    /// operations that are forwarded: reads, the writes of one entity and
    /// subscriptions.
    pub fn offers(&self, op: &str) -> bool {
        const DISCOVERY: [&str; 6] = [
            "retrieveEntityTypes",
            "retrieveEntityTypeDetails",
            "retrieveEntityTypeInfo",
            "retrieveAttrTypes",
            "retrieveAttrTypeDetails",
            "retrieveAttrTypeInfo",
        ];
        const UPDATES: [&str; 4] = [
            "updateEntity",
            "updateAttrs",
            "replaceEntity",
            "replaceAttrs",
        ];
        const REDIRECTED_WRITES: [&str; 6] = [
            "createEntity",
            "appendAttrs",
            "deleteAttrs",
            "deleteEntity",
            "mergeEntity",
            "purgeEntity",
        ];
        const SUBSCRIPTIONS: [&str; 5] = [
            "createSubscription",
            "updateSubscription",
            "retrieveSubscription",
            "querySubscription",
            "deleteSubscription",
        ];
        let in_group = |group: &str| match group {
            "federationOps" | "associationOps" => {
                matches!(op, "retrieveEntity" | "queryEntity" | "queryBatch")
                    || DISCOVERY.contains(&op)
                    || SUBSCRIPTIONS.contains(&op)
            }
            "redirectionOps" => {
                matches!(op, "retrieveEntity" | "queryEntity")
                    || DISCOVERY.contains(&op)
                    || UPDATES.contains(&op)
                    || REDIRECTED_WRITES.contains(&op)
            }
            "updateOps" => UPDATES.contains(&op),
            "retrieveOps" => matches!(op, "retrieveEntity" | "queryEntity"),
            _ => false,
        };
        match &self.operations {
            None => in_group("federationOps"),
            Some(ops) => ops.iter().any(|o| o == op || in_group(o)),
        }
    }

    /// What of entity `id` (of `types`, when known) the registration
    /// holds: nothing (`None`), the whole entity, or some attributes
    /// (expanded names), over the RegistrationInfos that select the
    /// entity. An idPattern selects an id it matches anywhere. When the
    /// entity's types are not known, only an EntityInfo that names the id
    /// (or a pattern of it) selects it: one of a type alone might be of
    /// another type.
    pub fn cover(&self, id: &str, types: Option<&[Iri]>) -> Option<Cover> {
        let mut names: Vec<Iri> = Vec::new();
        let mut selected = false;
        for info in &self.information {
            let selects = info.entities.as_ref().is_none_or(|list| {
                list.iter().any(|e| {
                    types.is_none_or(|ts| e.types.iter().any(|t| ts.contains(t)))
                        && match (&e.id, &e.id_pattern) {
                            (Some(x), _) => x == id,
                            (None, Some(p)) => p.is_match(id),
                            (None, None) => types.is_some(),
                        }
                })
            });
            if !selects {
                continue;
            }
            selected = true;
            if info.property_names.is_none() && info.relationship_names.is_none() {
                return Some(Cover::Entity);
            }
            for n in info
                .property_names
                .iter()
                .chain(info.relationship_names.iter())
                .flatten()
            {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        selected.then_some(Cover::Attributes(names))
    }

    /// Whether some RegistrationInfo may hold entities of type `t` (one
    /// without entities holds any).
    pub fn covers_type(&self, t: &str) -> bool {
        self.information.iter().any(|i| {
            i.entities
                .as_ref()
                .is_none_or(|list| list.iter().any(|e| e.types.iter().any(|x| **x == *t)))
        })
    }

    /// Whether some RegistrationInfo may hold attribute `a` (one without
    /// property or relationship names holds any).
    pub fn covers_attr(&self, a: &str) -> bool {
        self.information.iter().any(|i| {
            (i.property_names.is_none() && i.relationship_names.is_none())
                || i.property_names
                    .iter()
                    .chain(i.relationship_names.iter())
                    .flatten()
                    .any(|n| **n == *a)
        })
    }

    /// `management.timeout` (clause 5.2.34), in milliseconds.
    pub fn timeout_ms(&self) -> Option<f64> {
        self.management
            .as_ref()?
            .get("timeout")
            .and_then(Value::as_f64)
    }

    /// `management.cooldown` (clause 5.2.34), in milliseconds.
    pub fn cooldown_ms(&self) -> Option<f64> {
        self.management
            .as_ref()?
            .get("cooldown")
            .and_then(Value::as_f64)
    }

    /// `management.localOnly`: the source is asked with `local=true`.
    pub fn local_only(&self) -> bool {
        self.management
            .as_ref()
            .and_then(|m| m.get("localOnly"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The tenant to name in requests to the source (`tenant`).
    pub fn tenant(&self) -> Option<&str> {
        self.plain[2].as_deref()
    }

    /// `contextSourceAlias`: the source's own alias, as it appears in the
    /// `Via` header of requests it forwarded (clause 4.3.6.4).
    pub fn alias(&self) -> Option<&str> {
        let name = Ctx::core().expand("contextSourceAlias").into_owned();
        self.properties
            .iter()
            .find(|(n, _)| **n == *name)
            .and_then(|(_, v)| v.as_str())
    }

    /// Whether a context source filter holds for the registration.
    pub fn passes_csf(&self, csf: &Query) -> bool {
        csf.matches(&JsonTarget(&self.filter_target()))
    }

    /// Whether the registration has expired (clause 4.8: it no longer
    /// counts).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.as_ref().is_some_and(|e| e.micros <= now)
    }

    /// The registration compacted with `ctx`.
    pub fn render(&self, ctx: &Ctx, sys_attrs: bool) -> Map<String, Value> {
        let compact = |n: &Iri| Value::String(ctx.compact(n).into_owned());
        let mut out = Map::new();
        out.insert("id".into(), json!(&*self.id));
        out.insert("type".into(), json!("ContextSourceRegistration"));
        for (i, name) in PLAIN.iter().enumerate().take(2) {
            if let Some(v) = &self.plain[i] {
                out.insert((*name).into(), json!(v));
            }
        }
        let information: Vec<Value> = self
            .information
            .iter()
            .map(|info| {
                let mut m = Map::new();
                if let Some(entities) = &info.entities {
                    let list = entities
                        .iter()
                        .map(|e| {
                            let mut o = Map::new();
                            if let Some(id) = &e.id {
                                o.insert("id".into(), json!(id));
                            }
                            if let Some(p) = &e.id_pattern {
                                o.insert("idPattern".into(), json!(p.as_str()));
                            }
                            let types: Vec<Value> = e.types.iter().map(compact).collect();
                            o.insert(
                                "type".into(),
                                if e.types_array {
                                    Value::Array(types)
                                } else {
                                    types.into_iter().next().unwrap_or(Value::Null)
                                },
                            );
                            Value::Object(o)
                        })
                        .collect();
                    m.insert("entities".into(), Value::Array(list));
                }
                if let Some(p) = &info.property_names {
                    m.insert("propertyNames".into(), p.iter().map(compact).collect());
                }
                if let Some(r) = &info.relationship_names {
                    m.insert("relationshipNames".into(), r.iter().map(compact).collect());
                }
                Value::Object(m)
            })
            .collect();
        out.insert("information".into(), Value::Array(information));
        if let Some(t) = &self.plain[2] {
            out.insert("tenant".into(), json!(t));
        }
        let interval = |i: &Interval| {
            let mut m = Map::new();
            m.insert("startAt".into(), json!(i.start.text));
            if let Some(e) = &i.end {
                m.insert("endAt".into(), json!(e.text));
            }
            Value::Object(m)
        };
        if let Some(i) = &self.observation_interval {
            out.insert("observationInterval".into(), interval(i));
        }
        if let Some(i) = &self.management_interval {
            out.insert("managementInterval".into(), interval(i));
        }
        for (i, name) in GEO_MEMBERS.iter().enumerate() {
            if let Some((v, _)) = &self.geo[i] {
                out.insert((*name).into(), v.clone());
            }
        }
        if let Some(e) = &self.expires_at {
            out.insert("expiresAt".into(), json!(e.text));
        }
        if let Some(e) = &self.endpoint {
            out.insert("endpoint".into(), json!(e));
        }
        if let Some(info) = &self.context_source_info {
            out.insert(
                "contextSourceInfo".into(),
                info.iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect(),
            );
        }
        if let Some((v, _)) = &self.scope {
            out.insert("scope".into(), v.clone());
        }
        out.insert("mode".into(), json!(self.mode.as_str()));
        out.insert(
            "operations".into(),
            match &self.operations {
                Some(ops) => json!(ops),
                None => json!(["federationOps"]),
            },
        );
        if let Some(r) = &self.plain[3] {
            out.insert("refreshRate".into(), json!(r));
        }
        if let Some(m) = &self.management {
            out.insert("management".into(), Value::Object(m.clone()));
        }
        for (name, v) in &self.properties {
            out.insert(ctx.compact(name).into_owned(), v.clone());
        }
        if sys_attrs {
            out.insert("createdAt".into(), json!(format_micros(self.created_at)));
            out.insert("modifiedAt".into(), json!(format_micros(self.modified_at)));
        }
        out
    }

    /// The Context Source Properties (and the registration's own string
    /// members, by their core IRIs) as a normalized-entity-like document for
    /// `q` and `csf`.
    fn filter_target(&self) -> Value {
        let mut m = Map::new();
        let core = Ctx::core();
        let mut put = |name: &str, v: Value| {
            m.insert(core.expand(name).into_owned(), v);
        };
        if let Some(e) = &self.endpoint {
            put("endpoint", json!(e));
        }
        put("mode", json!(self.mode.as_str()));
        for (i, name) in PLAIN.iter().enumerate() {
            if let Some(v) = &self.plain[i] {
                put(name, json!(v));
            }
        }
        for (name, v) in &self.properties {
            m.insert(name.to_string(), v.clone());
        }
        Value::Object(m)
    }

    fn has_property(&self, name: &str) -> bool {
        self.properties.iter().any(|(n, _)| **n == *name)
    }
}

/// Which interval a temporal discovery query tests (clause 5.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalKind {
    /// observedAt: `observationInterval`.
    Observation,
    /// createdAt, modifiedAt, deletedAt: `managementInterval`.
    Management,
}

impl IntervalKind {
    /// The interval a temporal query on `property` tests.
    pub fn of(property: store::TimeProperty) -> Self {
        match property {
            store::TimeProperty::ObservedAt => IntervalKind::Observation,
            _ => IntervalKind::Management,
        }
    }
}

/// A discovery query (Query Context Source Registrations, clause 5.10.2).
#[derive(Debug, Clone, Default)]
pub struct RegistrationQuery {
    pub ids: Option<Vec<String>>,
    pub id_pattern: Option<IdPattern>,
    pub types: Option<TypeExpr>,
    /// Expanded attribute names.
    pub attrs: Option<Vec<Iri>>,
    pub q: Option<Query>,
    pub csf: Option<Query>,
    /// The query and the index of the GeoProperty it tests.
    pub geo: Option<(GeoQuery, usize)>,
    pub scope_q: Option<ScopeQuery>,
    /// The interval tested and the query's range: `from` inclusive, `to`
    /// exclusive.
    pub time: Option<(IntervalKind, Option<i64>, Option<i64>)>,
    /// `pick` and `omit` (clause 4.21): the members of each registration
    /// shown, by the names of the answer.
    pub pick: Option<Vec<String>>,
    pub omit: Option<Vec<String>>,
}

impl RegistrationQuery {
    /// Applies `pick` and `omit` to a rendered registration.
    pub fn project(&self, mut r: Map<String, Value>) -> Map<String, Value> {
        if let Some(keep) = &self.pick {
            r.retain(|k, _| keep.iter().any(|p| p == k));
        }
        if let Some(drop) = &self.omit {
            r.retain(|k, _| !drop.iter().any(|o| o == k));
        }
        r
    }
}

impl RegistrationQuery {
    /// The index of a GeoProperty of registrations, by the name a query
    /// gives (short or expanded).
    pub fn geo_member(name: &str) -> Option<usize> {
        let core = Ctx::core();
        GEO_MEMBERS
            .iter()
            .position(|g| *g == name || core.expand(g) == name)
    }

    /// Whether `r` matches (clause 5.12).
    pub fn matches(&self, r: &Registration) -> bool {
        // q filters the Context Source Properties when it names only
        // those; otherwise its names are attributes the source must offer,
        // like `attrs` (clause 5.10.2.4).
        let mut attrs: Vec<&str> = self.attrs.iter().flatten().map(|a| &**a as &str).collect();
        if let Some(q) = &self.q {
            let paths = q.paths();
            if !paths.is_empty() && paths.iter().all(|p| r.has_property(&p.attr)) {
                if !q.matches(&JsonTarget(&r.filter_target())) {
                    return false;
                }
            } else {
                attrs.extend(paths.iter().map(|p| &*p.attr));
            }
        }
        if !r
            .information
            .iter()
            .any(|info| self.info_matches(info, &attrs))
        {
            return false;
        }
        if let Some(csf) = &self.csf
            && !csf.matches(&JsonTarget(&r.filter_target()))
        {
            return false;
        }
        if let Some((g, at)) = &self.geo {
            match &r.geo[*at] {
                Some((_, geometry)) if g.matches(geometry) => {}
                _ => return false,
            }
        }
        if let Some(s) = &self.scope_q {
            let scopes: Vec<&str> = r
                .scope
                .iter()
                .flat_map(|(_, list)| list.iter().map(String::as_str))
                .collect();
            if !s.matches(&scopes) {
                return false;
            }
        }
        match self.time {
            // Without a temporal query, only sources of the latest
            // information (no interval) match.
            None => r.observation_interval.is_none() && r.management_interval.is_none(),
            Some((kind, from, to)) => {
                let interval = match kind {
                    IntervalKind::Observation => &r.observation_interval,
                    IntervalKind::Management => &r.management_interval,
                };
                interval.as_ref().is_some_and(|i| {
                    to.is_none_or(|to| i.start.micros < to)
                        && from.is_none_or(|from| i.end.as_ref().is_none_or(|e| e.micros >= from))
                })
            }
        }
    }

    /// Whether `info` is one this query selects (its entities and
    /// attributes; the registration's other members aside).
    pub(crate) fn info_is_selected(&self, info: &RegistrationInfo) -> bool {
        let attrs: Vec<&str> = self.attrs.iter().flatten().map(|a| &**a as &str).collect();
        self.info_matches(info, &attrs)
    }

    pub(crate) fn info_matches(&self, info: &RegistrationInfo, attrs: &[&str]) -> bool {
        let entity_criteria =
            self.ids.is_some() || self.id_pattern.is_some() || self.types.is_some();
        if entity_criteria
            && let Some(entities) = &info.entities
            && !entities.iter().any(|e| self.entity_matches(e))
        {
            return false;
        }
        if attrs.is_empty() || (info.property_names.is_none() && info.relationship_names.is_none())
        {
            return true;
        }
        info.property_names
            .iter()
            .chain(info.relationship_names.iter())
            .flatten()
            .any(|n| attrs.contains(&&**n))
    }

    pub(crate) fn entity_matches(&self, e: &EntityInfo) -> bool {
        if let Some(t) = &self.types
            && !t.matches_with(&|name| e.types.iter().any(|x| **x == *name))
        {
            return false;
        }
        if self.ids.is_none() && self.id_pattern.is_none() {
            return true;
        }
        match (&e.id, &e.id_pattern) {
            (None, None) => true,
            (Some(id), _) => {
                self.ids.as_ref().is_some_and(|ids| ids.contains(id))
                    || self.id_pattern.as_ref().is_some_and(|p| p.is_match(id))
            }
            (None, Some(pattern)) => {
                self.ids
                    .as_ref()
                    .is_some_and(|ids| ids.iter().any(|id| pattern.is_match(id)))
                    // Two patterns may always select a common id.
                    || self.id_pattern.is_some()
            }
        }
    }
}

/// A registration's endpoint: the HTTP(S) URL under which the source
/// serves the NGSI-LD API (clause 5.2.9), with a host to send requests to.
fn check_endpoint(e: &str) -> NgsiResult<()> {
    crate::check_uri(e, "endpoint")?;
    match reqwest::Url::parse(e) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(bad(format!(
            "endpoint {e:?} is not an http or https URL with a host"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn base() -> Value {
        json!({
            "id": "urn:ngsi-ld:ContextSourceRegistration:1",
            "type": "ContextSourceRegistration",
            "information": [
                {"entities": [{"id": "urn:ngsi-ld:Vehicle:A456", "type": "Vehicle"}],
                 "propertyNames": ["brandName", "speed"], "relationshipNames": ["isParked"]},
                {"entities": [{"idPattern": ".*downtown$", "type": "OffStreetParking"}]}
            ],
            "endpoint": "http://my.csource.org:1026"
        })
    }

    #[test]
    fn operations_and_groups_offer_what_tables_4_20_say() {
        let ctx = Ctx::core();
        let with = |ops: Option<Value>| {
            let mut d = base();
            if let Some(ops) = ops {
                d["operations"] = ops;
            }
            Registration::create(&doc(d), &ctx, 0, true).unwrap()
        };
        let all = [
            "retrieveEntity",
            "queryEntity",
            "queryBatch",
            "retrieveEntityTypes",
            "retrieveAttrTypeInfo",
            "createSubscription",
            "deleteSubscription",
        ];
        let offered = |r: &Registration| {
            all.iter()
                .filter(|op| r.offers(op))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(offered(&with(None)), all, "federationOps by default");
        assert_eq!(offered(&with(Some(json!(["associationOps"])))), all);
        assert_eq!(
            offered(&with(Some(json!(["redirectionOps"])))),
            [
                "retrieveEntity",
                "queryEntity",
                "retrieveEntityTypes",
                "retrieveAttrTypeInfo"
            ]
        );
        assert_eq!(
            offered(&with(Some(json!(["retrieveOps"])))),
            ["retrieveEntity", "queryEntity"]
        );
        assert!(offered(&with(Some(json!(["updateOps", "createEntity"])))).is_empty());
        assert_eq!(offered(&with(Some(json!(["queryBatch"])))), ["queryBatch"]);
        assert_eq!(
            offered(&with(Some(json!(["createSubscription"])))),
            ["createSubscription"]
        );
        let r = with(None);
        assert!(r.covers_type(&ctx.expand("Vehicle")) && !r.covers_type(&ctx.expand("Bus")));
        assert!(r.covers_attr(&ctx.expand("speed")));
        // The second RegistrationInfo names no attributes: any.
        assert!(r.covers_attr(&ctx.expand("anything")));
    }

    #[test]
    fn a_valid_document_renders_back_what_was_given() {
        let ctx = Ctx::core();
        let mut given = base();
        given["expiresAt"] = json!("2035-11-29T14:53:15Z");
        given["location"] = json!({"type": "Point", "coordinates": [-8.521, 41.2]});
        given["csourceProperty1"] = json!("aValue");
        let r = Registration::create(&doc(given.clone()), &ctx, 0, true).unwrap();
        let mut out = Value::Object(r.render(&ctx, false));
        assert_eq!(out["mode"], json!("inclusive"));
        assert_eq!(out["operations"], json!(["federationOps"]));
        out.as_object_mut().unwrap().remove("mode");
        out.as_object_mut().unwrap().remove("operations");
        assert_eq!(out, given);
    }

    #[test]
    fn invalid_documents_are_refused() {
        let ctx = Ctx::core();
        let now = parse_datetime("2026-01-01T00:00:00Z").unwrap();
        let cases: Vec<(&str, Value)> = vec![
            ("information", json!(null)),
            ("information", json!([])),
            ("information", json!([{}])),
            ("information", json!([{"entities": []}])),
            ("information", json!([{"entities": [{"id": "urn:a:b"}]}])),
            (
                "information",
                json!([{"entities": [{"type": "T", "idPattern": "("}]}]),
            ),
            ("information", json!([{"propertyNames": ["a", "a"]}])),
            ("endpoint", json!("not a uri")),
            ("expiresAt", json!("2018-11-29T14:53:15Z")),
            ("expiresAt", json!(" 2040-11-29T14:53:15Z")),
            ("mode", json!("sometimes")),
            ("operations", json!(["fly"])),
            (
                "observationInterval",
                json!({"endAt": "2020-01-01T00:00:00Z"}),
            ),
            (
                "managementInterval",
                json!({"startAt": "2021-01-01T00:00:00Z", "endAt": "2020-01-01T00:00:00Z"}),
            ),
            (
                "location",
                json!({"type": "Point", "coordinates": [500, 0]}),
            ),
            ("contextSourceInfo", json!([{"key": "k", "value": 1}])),
            (
                "contextSourceInfo",
                json!([{"key": "accept", "value": "text/plain"}]),
            ),
            ("refreshRate", json!("soon")),
            ("management", json!({"timeout": -1})),
            ("scope", json!("no-slash")),
            ("type", json!("Registration")),
        ];
        for (member, value) in cases {
            let mut d = base();
            d[member] = value.clone();
            assert!(
                Registration::create(&doc(d), &ctx, now, true).is_err(),
                "{member} = {value} was accepted"
            );
        }
        let mut aux = base();
        aux["mode"] = json!("auxiliary");
        aux["operations"] = json!(["updateOps"]);
        assert!(Registration::create(&doc(aux.clone()), &ctx, now, true).is_err());
        aux["operations"] = json!(["retrieveOps"]);
        assert!(Registration::create(&doc(aux), &ctx, now, true).is_ok());
        // Read-only members are ignored, as the specification says.
        let mut d = base();
        d["status"] = json!("failed");
        d["timesSent"] = json!(3);
        let r = Registration::create(&doc(d), &ctx, now, true).unwrap();
        assert!(r.render(&ctx, false).get("status").is_none());
    }

    #[test]
    fn a_patch_replaces_members_whole_and_null_deletes() {
        let ctx = Ctx::core();
        let mut d = base();
        d["expiresAt"] = json!("2035-11-29T14:53:15Z");
        d["p"] = json!(1);
        let r = Registration::create(&doc(d), &ctx, 0, true).unwrap();
        let next = r
            .patch(
                &doc(json!({"expiresAt": null, "p": "urn:ngsi-ld:null",
                    "information": [{"propertyNames": ["x"]}]})),
                &ctx,
                5,
                true,
            )
            .unwrap();
        let out = next.render(&ctx, true);
        assert!(out.get("expiresAt").is_none());
        assert!(out.get("p").is_none());
        assert_eq!(out["information"], json!([{"propertyNames": ["x"]}]));
        assert_eq!(next.modified_at, 5);
        for bad in [
            json!({"information": null}),
            json!({"endpoint": "urn:ngsi-ld:null"}),
            json!({"type": "building"}),
            json!({"id": "urn:other:1"}),
        ] {
            assert!(r.patch(&doc(bad.clone()), &ctx, 5, true).is_err(), "{bad}");
        }
    }

    fn query(f: impl FnOnce(&mut RegistrationQuery)) -> RegistrationQuery {
        let mut q = RegistrationQuery::default();
        f(&mut q);
        q
    }

    #[test]
    fn discovery_matches_entities_attributes_and_properties() {
        let ctx = Ctx::core();
        let mut d = base();
        d["csourceProperty1"] = json!("aValue");
        let r = Registration::create(&doc(d), &ctx, 0, true).unwrap();
        let types = |t: &str| Some(crate::query::parse_types(t, &ctx).unwrap());
        let attrs = |a: &[&str]| Some(a.iter().map(|n| ctx.expand_iri(n)).collect());
        let q = |s: &str| Some(crate::query::parse_q(s, &ctx).unwrap());
        let pattern = |p: &str| Some(IdPattern::new(p).unwrap());
        let yes = [
            query(|x| x.types = types("Vehicle")),
            query(|x| x.types = types("Bus|Vehicle")),
            query(|x| x.ids = Some(vec!["urn:ngsi-ld:Vehicle:A456".into()])),
            // An id against the idPattern of an EntityInfo.
            query(|x| x.ids = Some(vec!["urn:ngsi-ld:OffStreetParking:downtown".into()])),
            query(|x| x.id_pattern = pattern("A45")),
            query(|x| {
                x.types = types("Vehicle");
                x.attrs = attrs(&["speed", "nothing"]);
            }),
            // The second RegistrationInfo registers every attribute.
            query(|x| x.attrs = attrs(&["anything"])),
            query(|x| x.q = q("csourceProperty1==\"aValue\"")),
            query(|x| x.csf = q("csourceProperty1==\"aValue\"")),
        ];
        for (i, x) in yes.iter().enumerate() {
            assert!(x.matches(&r), "case {i} should match");
        }
        let no = [
            query(|x| x.types = types("Bus")),
            query(|x| x.ids = Some(vec!["urn:ngsi-ld:Vehicle:B1".into()])),
            query(|x| {
                x.types = types("Vehicle");
                x.attrs = attrs(&["nothing"]);
            }),
            query(|x| x.q = q("csourceProperty1==\"other\"")),
            query(|x| x.csf = q("csourceProperty2==\"aValue\"")),
            query(|x| x.time = Some((IntervalKind::Observation, None, Some(10)))),
        ];
        for (i, x) in no.iter().enumerate() {
            assert!(!x.matches(&r), "case {i} should not match");
        }
    }

    #[test]
    fn temporal_discovery_tests_the_chosen_interval() {
        let ctx = Ctx::core();
        let t = |s: &str| parse_datetime(s).unwrap();
        let mut d = base();
        d["observationInterval"] =
            json!({"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"});
        let r = Registration::create(&doc(d), &ctx, 0, true).unwrap();
        let at = |kind, from: Option<&str>, to: Option<&str>| {
            query(|x| x.time = Some((kind, from.map(t), to.map(t))))
        };
        use IntervalKind::*;
        assert!(at(Observation, None, Some("2021-08-01T22:00:00Z")).matches(&r));
        assert!(!at(Observation, None, Some("2020-08-01T22:07:00Z")).matches(&r));
        assert!(at(Observation, Some("2021-08-01T21:07:00Z"), None).matches(&r));
        assert!(!at(Observation, Some("2021-08-01T21:07:01Z"), None).matches(&r));
        assert!(!at(Management, None, Some("2021-08-01T22:00:00Z")).matches(&r));
        // No temporal query: only sources of the latest information.
        assert!(!RegistrationQuery::default().matches(&r));
    }
}
