//! The Subscription data type (clause 5.2.12): parsing a document (or a
//! fragment of one) into expanded form, validating it, and rendering it back
//! compacted with the reader's context.

use std::sync::Arc;
use std::time::Duration;

use ngsi_model::render::Format;
use ngsi_model::time::{format_micros, parse_datetime};
use ngsi_model::{Iri, NgsiError, NgsiResult, Terms, iri};
use ngsi_query::{Projection, Query, ScopeQuery, TypeExpr};
use regex::Regex;
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::query::{EntityQuery, Selector, ViewOptions};

fn bad(detail: impl Into<String>) -> NgsiError {
    NgsiError::bad_data(detail)
}

/// What changes a subscription is told about (notificationTrigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Triggers {
    pub entity_created: bool,
    pub entity_deleted: bool,
    pub attribute_created: bool,
    pub attribute_updated: bool,
    pub attribute_deleted: bool,
}

impl Triggers {
    /// The default: attributeCreated and attributeUpdated.
    fn default_set() -> Self {
        Self {
            attribute_created: true,
            attribute_updated: true,
            ..Self::default()
        }
    }
}

/// One entity selector as given (for rendering) and compiled.
#[derive(Debug, Clone)]
pub struct EntitySelector {
    /// `id`: one URI or several (`None`: any).
    pub ids: Option<Vec<String>>,
    /// Whether `id` was given as an array.
    pub ids_array: bool,
    pub id_pattern: Option<String>,
    /// The type expression with expanded names.
    pub types: TypeExpr,
}

impl EntitySelector {
    /// The selector as given, its type names compacted with `ctx`.
    pub fn render(&self, ctx: &Ctx) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(ids) = &self.ids {
            m.insert(
                "id".into(),
                if self.ids_array {
                    json!(ids)
                } else {
                    json!(ids[0])
                },
            );
        }
        if let Some(p) = &self.id_pattern {
            m.insert("idPattern".into(), json!(p));
        }
        let mut t = self.types.clone();
        t.map_names(&mut |n| ctx.compact(n).into_owned());
        m.insert("type".into(), json!(t.to_string()));
        m
    }
}

/// Where and how notifications are sent (NotificationParams, 5.2.14).
#[derive(Debug, Clone)]
pub struct NotificationSpec {
    /// `attributes` (deprecated synonym of pick), expanded.
    pub attributes: Option<Vec<Iri>>,
    /// `pick` and `omit` (clause 4.21), names expanded (the entity
    /// members `id`, `type`, `scope` as they are), with the projections
    /// of Linked Entities in braces.
    pub pick: Option<Vec<Projection>>,
    pub omit: Option<Vec<Projection>>,
    pub format: Format,
    /// Show createdAt/modifiedAt (and deletedAt) in notified entities.
    pub sys_attrs: bool,
    pub show_changes: bool,
    /// Linked Entity retrieval in notifications (`join`, `joinLevel`,
    /// clause 4.5.23), as given (rendered back) and as read.
    pub join_given: Option<(String, Option<u64>)>,
    pub join: Option<crate::linked::Join>,
    /// The endpoint as given, without the parsed form.
    pub endpoint_doc: Map<String, Value>,
    pub endpoint: Arc<notify::Endpoint>,
    pub accept: Accept,
}

/// The media type of notifications (endpoint.accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Json,
    LdJson,
    GeoJson,
}

impl Accept {
    pub fn media_type(self) -> &'static str {
        match self {
            Accept::Json => "application/json",
            Accept::LdJson => "application/ld+json",
            Accept::GeoJson => "application/geo+json",
        }
    }
}

/// A subscription in expanded form.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: Arc<str>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub entities: Option<Vec<EntitySelector>>,
    pub watched: Option<Vec<Iri>>,
    /// The notificationTrigger list as given.
    pub trigger_names: Option<Vec<String>>,
    pub triggers: Triggers,
    /// Seconds between periodic notifications.
    pub time_interval: Option<f64>,
    pub q: Option<Query>,
    pub geo_q: Option<Value>,
    pub geo_q_property: Option<Iri>,
    pub scope_q: Option<ScopeQuery>,
    pub lang: Option<String>,
    pub dataset_id: Option<Vec<String>>,
    /// expandValues (expanded names): the unquoted words `q` compares these
    /// attributes with are terms, expanded with the @context of the request
    /// that gave `q` or the list (clause 4.9, example 12).
    pub expand_values: Option<Vec<Iri>>,
    /// jsonKeys (expanded names): never expanded, even if expandValues
    /// names them.
    pub json_keys: Option<Vec<Iri>>,
    /// `q` as matched: its words expanded as expandValues asks. `q` itself
    /// is kept as written, for rendering.
    pub q_matched: Option<Query>,
    pub expires_at: Option<i64>,
    /// expiresAt as the client wrote it.
    pub expires_text: Option<String>,
    pub is_active: bool,
    /// Whether the client gave isActive (it is rendered back only then).
    pub is_active_given: bool,
    /// csf as given (validated as a query, not acted on: there are no
    /// registrations to filter).
    pub csf: Option<String>,
    /// Seconds that must pass between two notifications.
    pub throttling: Option<f64>,
    pub notification: NotificationSpec,
    /// jsonldContext as given.
    pub jsonld_context: Option<String>,
    pub local_only: Option<bool>,
    /// The `Via` header of the request that created the subscription (a
    /// broker forwarding its own subscription, clause 6.3.18): its remote
    /// copies go on with it, never back to a source it names.
    pub via: Option<String>,
    /// temporalQ (clause 5.2.21) as given and as a time range; only
    /// subscriptions to context source registrations act on it.
    pub temporal_q: Option<(Value, store::TimeRange)>,
    /// The compiled filter: selectors, q, geoQ and scopeQ.
    pub matcher: EntityQuery,
    /// How notified entities are rendered.
    pub view: ViewOptions,
    pub created_at: i64,
    pub modified_at: i64,
}

/// The members a client may not write (clause 5.2.12-2, 5.2.14.2).
const READ_ONLY: &[&str] = &["status", "createdAt", "modifiedAt"];
pub(super) const READ_ONLY_NOTIFICATION: &[&str] = &[
    "status",
    "timesSent",
    "timesFailed",
    "lastNotification",
    "lastSuccess",
    "lastFailure",
];
/// Members of the request that are not data (the request's own context).
const IGNORED: &[&str] = &["@context"];

fn string(v: &Value, name: &str) -> NgsiResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(bad(format!("{name} must be a string"))),
    }
}

fn non_empty_strings(v: &Value, name: &str) -> NgsiResult<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(bad(format!("{name} must be an array of strings")));
    };
    if items.is_empty() {
        return Err(bad(format!("{name} must not be empty")));
    }
    items
        .iter()
        .map(|x| string(x, name))
        .collect::<NgsiResult<Vec<_>>>()
}

/// The longest duration a subscription member may give: a century, in
/// seconds. Longer ones are refused rather than overflowing a clock.
pub(crate) const MAX_DURATION_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// A number of `unit`s (seconds: 1, milliseconds: 1000 per second) that
/// must be greater than 0 and at most [`MAX_DURATION_SECS`].
fn positive(v: &Value, name: &str, per_second: f64) -> NgsiResult<f64> {
    let max = MAX_DURATION_SECS * per_second;
    match v.as_f64() {
        Some(n) if n > 0.0 && n <= max => Ok(n),
        _ => Err(bad(format!(
            "{name} must be a number greater than 0 and at most {max} (a century)"
        ))),
    }
}

/// `secs` as a duration, within (0, [`MAX_DURATION_SECS`]]: a stored value
/// from before that bound cannot overflow a clock either.
pub(crate) fn bounded_duration(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.clamp(0.0, MAX_DURATION_SECS))
        .unwrap_or(Duration::from_secs(MAX_DURATION_SECS as u64))
}

fn boolean(v: &Value, name: &str) -> NgsiResult<bool> {
    v.as_bool()
        .ok_or_else(|| bad(format!("{name} must be true or false")))
}

fn expand_names(names: &[String], ctx: &Ctx) -> Vec<Iri> {
    names.iter().map(|n| iri(&ctx.expand(n))).collect()
}

fn key_values(v: &Value, name: &str) -> NgsiResult<Vec<(String, String)>> {
    let Value::Array(items) = v else {
        return Err(bad(format!("{name} must be an array of key-value pairs")));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Object(m) => match (m.get("key"), m.get("value")) {
                (Some(Value::String(k)), Some(Value::String(v))) if !k.is_empty() => {
                    Ok((k.clone(), v.clone()))
                }
                _ => Err(bad(format!(
                    "each {name} entry needs a string key and a string value"
                ))),
            },
            _ => Err(bad(format!("each {name} entry must be an object"))),
        })
        .collect()
}

impl Subscription {
    /// A subscription with nothing set, to apply a create document to.
    fn empty(id: Arc<str>, now: i64) -> Self {
        Self {
            id,
            name: None,
            description: None,
            entities: None,
            watched: None,
            trigger_names: None,
            triggers: Triggers::default_set(),
            time_interval: None,
            q: None,
            geo_q: None,
            geo_q_property: None,
            scope_q: None,
            lang: None,
            dataset_id: None,
            expand_values: None,
            json_keys: None,
            q_matched: None,
            expires_at: None,
            expires_text: None,
            is_active: true,
            is_active_given: false,
            csf: None,
            throttling: None,
            notification: NotificationSpec {
                attributes: None,
                pick: None,
                omit: None,
                format: Format::Normalized,
                sys_attrs: false,
                show_changes: false,
                join_given: None,
                join: None,
                endpoint_doc: Map::new(),
                endpoint: Arc::new(notify::Endpoint {
                    // Replaced by the create document's endpoint.
                    target: notify::Target::Http("http://localhost/".parse().unwrap()),
                    receiver_info: Vec::new(),
                    timeout: None,
                    cooldown: None,
                }),
                accept: Accept::Json,
            },
            jsonld_context: None,
            local_only: None,
            via: None,
            temporal_q: None,
            matcher: EntityQuery::default(),
            view: ViewOptions::default(),
            created_at: now,
            modified_at: now,
        }
    }

    /// Parses a create document. `check_time` refuses an expiresAt in the
    /// past (off when replaying stored requests).
    pub fn create(
        doc: &Map<String, Value>,
        ctx: &Ctx,
        now: i64,
        check_time: bool,
    ) -> NgsiResult<Self> {
        match doc.get("type") {
            Some(Value::String(t)) if t == "Subscription" => {}
            Some(_) => return Err(bad("type must be \"Subscription\"")),
            None => return Err(bad("a Subscription needs \"type\": \"Subscription\"")),
        }
        let id: Arc<str> = match doc.get("id") {
            None => Arc::from(format!("urn:ngsi-ld:Subscription:{}", unique_suffix()).as_str()),
            Some(Value::String(id)) if ngsi_model::parse::is_absolute_iri(id) => {
                Arc::from(id.as_str())
            }
            Some(_) => return Err(bad("the subscription id must be a URI")),
        };
        if !doc.contains_key("notification") {
            return Err(bad("a Subscription needs a notification member"));
        }
        let mut sub = Self::empty(id, now);
        sub.apply(doc, ctx, now, check_time, false)?;
        Ok(sub)
    }

    /// Applies a fragment (PATCH, clause 5.8.2): each member given replaces
    /// the stored one; `null` removes an optional member.
    pub fn patch(
        &self,
        fragment: &Map<String, Value>,
        ctx: &Ctx,
        now: i64,
        check_time: bool,
    ) -> NgsiResult<Self> {
        if let Some(id) = fragment.get("id")
            && id.as_str() != Some(&*self.id)
        {
            return Err(bad("the id of a subscription cannot be changed"));
        }
        if let Some(t) = fragment.get("type")
            && t.as_str() != Some("Subscription")
        {
            return Err(bad("type must be \"Subscription\""));
        }
        let mut next = self.clone();
        next.apply(fragment, ctx, now, check_time, true)?;
        next.modified_at = now;
        Ok(next)
    }

    fn apply(
        &mut self,
        doc: &Map<String, Value>,
        ctx: &Ctx,
        now: i64,
        check_time: bool,
        patching: bool,
    ) -> NgsiResult<()> {
        // Whether q or the lists that say how its words are read changed.
        let mut words_changed = false;
        for (key, value) in doc {
            if READ_ONLY.contains(&key.as_str()) || IGNORED.contains(&key.as_str()) {
                continue;
            }
            // In an update, the NGSI-LD Null removes a member as JSON null
            // does (clauses 5.5.8, 5.8.2.4).
            let null = value.is_null()
                || (patching && value.as_str() == Some(ngsi_model::entity::core_iri::NULL));
            match key.as_str() {
                "id" | "type" if null => {
                    return Err(bad(format!("{key} cannot be removed")));
                }
                "id" | "type" => {}
                "subscriptionName" => {
                    self.name = (!null).then(|| string(value, key)).transpose()?
                }
                "description" => {
                    self.description = (!null).then(|| string(value, key)).transpose()?
                }
                "entities" => {
                    self.entities = if null {
                        None
                    } else {
                        Some(parse_selectors(value, ctx)?)
                    }
                }
                "watchedAttributes" => {
                    self.watched = if null {
                        None
                    } else {
                        Some(expand_names(&non_empty_strings(value, key)?, ctx))
                    }
                }
                "notificationTrigger" => {
                    if null {
                        self.trigger_names = None;
                        self.triggers = Triggers::default_set();
                    } else {
                        let names = non_empty_strings(value, key)?;
                        let mut t = Triggers::default();
                        for n in &names {
                            match n.as_str() {
                                "entityCreated" => t.entity_created = true,
                                "entityUpdated" => {
                                    t.attribute_created = true;
                                    t.attribute_updated = true;
                                    t.attribute_deleted = true;
                                }
                                "entityDeleted" => t.entity_deleted = true,
                                "attributeCreated" => t.attribute_created = true,
                                "attributeUpdated" => t.attribute_updated = true,
                                "attributeDeleted" => t.attribute_deleted = true,
                                other => {
                                    return Err(bad(format!(
                                        "unknown notificationTrigger {other:?}"
                                    )));
                                }
                            }
                        }
                        self.triggers = t;
                        self.trigger_names = Some(names);
                    }
                }
                "timeInterval" => {
                    self.time_interval = (!null).then(|| positive(value, key, 1.0)).transpose()?
                }
                "throttling" => {
                    self.throttling = (!null).then(|| positive(value, key, 1.0)).transpose()?
                }
                "expandValues" | "jsonKeys" => {
                    let parsed = if null {
                        Ok(None)
                    } else {
                        // A comma-separated string, or a list as a Query's
                        // members may be.
                        match value {
                            Value::Array(_) => non_empty_strings(value, key).map(|l| l.join(",")),
                            _ => string(value, key),
                        }
                        .and_then(|list| crate::query::expand_list(&list, ctx))
                        .map(Some)
                    };
                    // A stored request from before these members were read
                    // may hold anything: it replays without them.
                    let names = match parsed {
                        Err(_) if !check_time => None,
                        other => other?,
                    };
                    if key == "expandValues" {
                        self.expand_values = names;
                    } else {
                        self.json_keys = names;
                    }
                    words_changed = true;
                }
                "q" => {
                    words_changed = true;
                    self.q = if null {
                        None
                    } else {
                        let text = string(value, key)?;
                        let decoded = percent_encoding::percent_decode_str(&text)
                            .decode_utf8()
                            .map(|c| c.into_owned())
                            .unwrap_or(text);
                        Some(crate::query::parse_q(&decoded, ctx)?)
                    }
                }
                "geoQ" => {
                    if null {
                        self.geo_q = None;
                        self.geo_q_property = None;
                    } else {
                        if !value.is_object() {
                            return Err(bad("geoQ must be an object"));
                        }
                        let g = ngsi_geo::parse_geoquery_json(value)
                            .map_err(|e| bad(format!("invalid geoQ: {e}")))?;
                        self.geo_q_property = Some(iri(&ctx.expand(g.geoproperty_or_default())));
                        self.geo_q = Some(value.clone());
                    }
                }
                "scopeQ" => {
                    self.scope_q = if null {
                        None
                    } else {
                        Some(
                            ngsi_query::parse_scope_q(&string(value, key)?)
                                .map_err(|e| bad(format!("invalid scopeQ: {e}")))?,
                        )
                    }
                }
                "lang" => self.lang = (!null).then(|| string(value, key)).transpose()?,
                "datasetId" => {
                    let ids = (!null).then(|| non_empty_strings(value, key)).transpose()?;
                    for d in ids.iter().flatten() {
                        ngsi_model::parse::check_dataset_id(d)?;
                    }
                    self.dataset_id = ids;
                }
                "expiresAt" => {
                    self.expires_text = (!null).then(|| string(value, key)).transpose()?;
                    self.expires_at = if null {
                        None
                    } else {
                        let text = string(value, key)?;
                        let at = parse_datetime(&text)
                            .ok_or_else(|| bad("expiresAt must be a DateTime"))?;
                        if check_time && at <= now {
                            return Err(bad("expiresAt is in the past"));
                        }
                        Some(at)
                    }
                }
                "isActive" => {
                    self.is_active = null || boolean(value, key)?;
                    self.is_active_given = !null;
                }
                "csf" => {
                    self.csf = if null {
                        None
                    } else {
                        let text = string(value, key)?;
                        let csf = ngsi_query::parse_q(&text)
                            .map_err(|e| bad(format!("invalid csf: {e}")))?;
                        crate::query::refuse_links(Some(&csf), "csf")?;
                        Some(text)
                    }
                }
                "jsonldContext" => {
                    self.jsonld_context = if null {
                        None
                    } else {
                        let url = string(value, key)?;
                        if !ngsi_model::parse::is_absolute_iri(&url) {
                            return Err(bad("jsonldContext must be a URI"));
                        }
                        Some(url)
                    }
                }
                "localOnly" => {
                    self.local_only = (!null).then(|| boolean(value, key)).transpose()?
                }
                "temporalQ" => {
                    self.temporal_q = if null {
                        None
                    } else {
                        Some((value.clone(), temporal_query(value)?))
                    }
                }
                "notification" => {
                    if null {
                        return Err(bad("notification cannot be removed"));
                    }
                    self.notification =
                        parse_notification(value, ctx, patching.then_some(&self.notification))?;
                    // Refused when made; a stored one (from before the
                    // check) is kept, failing as it did.
                    if check_time {
                        let uri = self.notification.endpoint_doc.get("uri");
                        self.notification
                            .endpoint
                            .target
                            .check_publishable(uri.and_then(Value::as_str).unwrap_or_default())
                            .map_err(|e| bad(e.to_string()))?;
                    }
                }
                // Members this broker does not act on are accepted and ignored
                // (ngsildConformance, splitEntities, ...).
                _ => {}
            }
        }
        if words_changed {
            // Expanded with this request's @context: a later update that
            // changes neither keeps the words as they were read.
            self.q_matched = self.q.clone();
            if let (Some(q), Some(names)) = (self.q_matched.as_mut(), &self.expand_values) {
                crate::query::expand_words(q, names, self.json_keys.as_deref(), ctx);
            }
        }
        self.validate()?;
        self.compile()
    }

    fn validate(&self) -> NgsiResult<()> {
        if self.entities.is_none() && self.watched.is_none() && self.local_only != Some(true) {
            return Err(bad("a Subscription needs entities or watchedAttributes"));
        }
        if self.time_interval.is_some() {
            if self.watched.is_some() {
                return Err(bad("timeInterval cannot be used with watchedAttributes"));
            }
            if self.throttling.is_some() {
                return Err(bad("timeInterval cannot be used with throttling"));
            }
            if self.entities.is_none() {
                return Err(bad("timeInterval needs entities"));
            }
        }
        if self.notification.show_changes && self.notification.format == Format::KeyValues {
            return Err(bad("showChanges cannot be used with keyValues"));
        }
        Ok(())
    }

    /// Builds the matcher and the view from the parsed members.
    fn compile(&mut self) -> NgsiResult<()> {
        let mut m = EntityQuery::default();
        if let Some(sels) = &self.entities {
            m.selectors = sels
                .iter()
                .map(|s| {
                    Ok(Selector {
                        ids: s
                            .ids
                            .as_ref()
                            .map(|ids| ids.iter().map(|i| Arc::from(i.as_str())).collect()),
                        id_pattern: match (&s.ids, &s.id_pattern) {
                            // id takes precedence over idPattern.
                            (None, Some(p)) => Some(
                                crate::query::IdPattern::new(p)
                                    .map_err(|e| bad(format!("invalid idPattern: {e}")))?,
                            ),
                            _ => None,
                        },
                        types: Some(s.types.clone()),
                    })
                })
                .collect::<NgsiResult<Vec<_>>>()?;
        }
        m.q = self.q_matched.clone();
        m.scope_q = self.scope_q.clone();
        m.geo = match (&self.geo_q, &self.geo_q_property) {
            (Some(g), Some(p)) => Some((
                ngsi_geo::parse_geoquery_json(g).map_err(|e| bad(format!("invalid geoQ: {e}")))?,
                p.clone(),
            )),
            _ => None,
        };
        self.matcher = m;
        let n = &self.notification;
        let mut view = ViewOptions {
            format: n.format,
            sys_attrs: n.sys_attrs,
            lang: self.lang.clone(),
            attrs: n.attributes.clone(),
            dataset_id: self.dataset_id.as_ref().map(|ds| {
                ds.iter()
                    .map(|d| (d != "@none").then(|| d.clone()))
                    .collect()
            }),
            join: n.join.clone(),
            ..ViewOptions::default()
        };
        // pick keeps only the members it names; omit drops them; braces
        // project the Linked Entities of a Relationship (names are
        // expanded already).
        let expanded = |name: &str| iri(name);
        if let Some(p) = &n.pick {
            view.pick(p, &expanded);
        }
        if let Some(o) = &n.omit {
            view.omit(o, &expanded);
        }
        crate::query::check_projection_depth(&view)?;
        self.view = view;
        Ok(())
    }

    /// The status (Table 5.2.12-2) at time `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else if !self.is_active {
            "paused"
        } else {
            "active"
        }
    }

    /// Whether notifications go out at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.status(now) == "active"
    }

    /// The throttling or time interval as a duration.
    pub fn throttle(&self) -> Option<Duration> {
        self.throttling.map(bounded_duration)
    }

    /// Renders the subscription compacted with `ctx` (without the delivery
    /// status, which the caller adds).
    pub fn render(&self, ctx: &Ctx, now: i64, sys_attrs: bool) -> Map<String, Value> {
        let compact = |i: &Iri| Value::String(ctx.compact(i).into_owned());
        let mut out = Map::new();
        out.insert("id".into(), json!(&*self.id));
        out.insert("type".into(), json!("Subscription"));
        if let Some(n) = &self.name {
            out.insert("subscriptionName".into(), json!(n));
        }
        if let Some(d) = &self.description {
            out.insert("description".into(), json!(d));
        }
        if let Some(sels) = &self.entities {
            let list: Vec<Value> = sels.iter().map(|s| Value::Object(s.render(ctx))).collect();
            out.insert("entities".into(), Value::Array(list));
        }
        if let Some(w) = &self.watched {
            out.insert("watchedAttributes".into(), w.iter().map(compact).collect());
        }
        let triggers: Vec<String> = match &self.trigger_names {
            Some(names) => names.clone(),
            None => vec!["attributeCreated".into(), "attributeUpdated".into()],
        };
        out.insert("notificationTrigger".into(), json!(triggers));
        if let Some(t) = self.time_interval {
            out.insert("timeInterval".into(), number(t));
        }
        if let Some(q) = &self.q {
            let mut q = q.clone();
            q.map_attr_names(&mut |n| ctx.compact(n).into_owned());
            q.map_link_types(&mut |t| ctx.compact(t).into_owned());
            out.insert("q".into(), json!(q.to_string()));
        }
        if let Some(g) = &self.geo_q {
            let mut g = g.clone();
            if let (Some(m), Some(p)) = (g.as_object_mut(), &self.geo_q_property)
                && m.contains_key("geoproperty")
            {
                m.insert("geoproperty".into(), compact(p));
            }
            out.insert("geoQ".into(), g);
        }
        if let Some(s) = &self.scope_q {
            out.insert("scopeQ".into(), json!(s.to_string()));
        }
        if let Some(l) = &self.lang {
            out.insert("lang".into(), json!(l));
        }
        if let Some(d) = &self.dataset_id {
            out.insert("datasetId".into(), json!(d));
        }
        for (member, names) in [
            ("expandValues", &self.expand_values),
            ("jsonKeys", &self.json_keys),
        ] {
            if let Some(names) = names {
                let list: Vec<String> = names.iter().map(|n| ctx.compact(n).into_owned()).collect();
                out.insert(member.into(), json!(list.join(",")));
            }
        }
        if let Some(t) = &self.expires_text {
            out.insert("expiresAt".into(), json!(t));
        }
        if self.is_active_given {
            out.insert("isActive".into(), json!(self.is_active));
        }
        out.insert("status".into(), json!(self.status(now)));
        if let Some(t) = self.throttling {
            out.insert("throttling".into(), number(t));
        }
        if let Some(c) = &self.jsonld_context {
            out.insert("jsonldContext".into(), json!(c));
        }
        if let Some(c) = &self.csf {
            out.insert("csf".into(), json!(c));
        }
        if let Some(l) = self.local_only {
            out.insert("localOnly".into(), json!(l));
        }
        if let Some((t, _)) = &self.temporal_q {
            out.insert("temporalQ".into(), t.clone());
        }
        let n = &self.notification;
        let mut nm = Map::new();
        if let Some(a) = &n.attributes {
            nm.insert("attributes".into(), a.iter().map(compact).collect());
        }
        // Each projection term as a string, its names compacted.
        let terms = |list: &[Projection]| -> Value {
            list.iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.map_names(&mut |n| ctx.compact(n).into_owned());
                    Value::String(t.to_string())
                })
                .collect()
        };
        if let Some(a) = &n.pick {
            nm.insert("pick".into(), terms(a));
        }
        if let Some(a) = &n.omit {
            nm.insert("omit".into(), terms(a));
        }
        nm.insert(
            "format".into(),
            json!(match n.format {
                Format::Normalized => "normalized",
                Format::Concise => "concise",
                Format::KeyValues => "keyValues",
            }),
        );
        if n.sys_attrs {
            nm.insert("sysAttrs".into(), json!(true));
        }
        if n.show_changes {
            nm.insert("showChanges".into(), json!(true));
        }
        if let Some((join, level)) = &n.join_given {
            nm.insert("join".into(), json!(join));
            if let Some(level) = level {
                nm.insert("joinLevel".into(), json!(level));
            }
        }
        let mut ep = n.endpoint_doc.clone();
        ep.entry("accept")
            .or_insert_with(|| json!(n.accept.media_type()));
        nm.insert("endpoint".into(), Value::Object(ep));
        out.insert("notification".into(), Value::Object(nm));
        if sys_attrs {
            out.insert("createdAt".into(), json!(format_micros(self.created_at)));
            out.insert("modifiedAt".into(), json!(format_micros(self.modified_at)));
        }
        out
    }
}

/// A number as JSON, integral when it is.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// A TemporalQuery (clause 5.2.21): `timerel` with `timeAt` (and
/// `endTimeAt` for between), and `timeproperty`.
fn temporal_query(v: &Value) -> NgsiResult<store::TimeRange> {
    let Value::Object(m) = v else {
        return Err(bad("temporalQ must be an object"));
    };
    let text = |name: &str| -> NgsiResult<Option<String>> {
        m.get(name).map(|v| string(v, name)).transpose()
    };
    if let Some(k) = m.keys().find(|k| {
        !matches!(
            k.as_str(),
            "timerel" | "timeAt" | "endTimeAt" | "timeproperty"
        )
    }) {
        return Err(bad(format!("temporalQ has an unknown member {k:?}")));
    }
    let params = crate::temporal::TemporalParams {
        timerel: text("timerel")?,
        time_at: text("timeAt")?,
        end_time_at: text("endTimeAt")?,
        timeproperty: text("timeproperty")?,
        ..Default::default()
    };
    if params.timerel.is_none() {
        return Err(bad("temporalQ needs timerel"));
    }
    params.range()
}

fn parse_selectors(v: &Value, ctx: &Ctx) -> NgsiResult<Vec<EntitySelector>> {
    let Value::Array(items) = v else {
        return Err(bad("entities must be an array"));
    };
    if items.is_empty() {
        return Err(bad("entities must not be empty"));
    }
    items
        .iter()
        .map(|item| {
            let Value::Object(m) = item else {
                return Err(bad("an entity selector must be an object"));
            };
            let types = match m.get("type") {
                Some(Value::String(t)) => crate::query::parse_types(t, ctx)?,
                Some(_) => return Err(bad("the type of an entity selector must be a string")),
                None => return Err(bad("an entity selector needs a type")),
            };
            let (ids, ids_array) = match m.get("id") {
                None => (None, false),
                Some(Value::String(id)) => (Some(vec![id.clone()]), false),
                Some(Value::Array(list)) if !list.is_empty() => (
                    Some(
                        list.iter()
                            .map(|x| string(x, "id"))
                            .collect::<NgsiResult<Vec<_>>>()?,
                    ),
                    true,
                ),
                Some(_) => return Err(bad("the id of an entity selector must be a URI or URIs")),
            };
            for id in ids.iter().flatten() {
                if !ngsi_model::parse::is_absolute_iri(id) {
                    return Err(bad(format!("id {id:?} is not a URI")));
                }
            }
            let id_pattern = match m.get("idPattern") {
                None => None,
                Some(Value::String(p)) => {
                    Regex::new(p).map_err(|e| bad(format!("invalid idPattern: {e}")))?;
                    Some(p.clone())
                }
                Some(_) => return Err(bad("idPattern must be a string")),
            };
            Ok(EntitySelector {
                ids,
                ids_array,
                id_pattern,
                types,
            })
        })
        .collect()
}

fn parse_notification(
    v: &Value,
    ctx: &Ctx,
    previous: Option<&NotificationSpec>,
) -> NgsiResult<NotificationSpec> {
    let Value::Object(m) = v else {
        return Err(bad("notification must be an object"));
    };
    // A PATCH replaces the notification member as a whole, except that an
    // endpoint left out keeps the previous one.
    let endpoint_value = match (m.get("endpoint"), previous) {
        (Some(e), _) => e.clone(),
        (None, Some(p)) => Value::Object(p.endpoint_doc.clone()),
        (None, None) => return Err(bad("notification needs an endpoint")),
    };
    let Value::Object(ep) = &endpoint_value else {
        return Err(bad("endpoint must be an object"));
    };
    let uri = match ep.get("uri") {
        Some(Value::String(u)) => u.clone(),
        _ => return Err(bad("endpoint needs a uri")),
    };
    let accept = match ep.get("accept") {
        None => Accept::Json,
        Some(Value::String(a)) => match a.as_str() {
            "application/json" => Accept::Json,
            "application/ld+json" => Accept::LdJson,
            "application/geo+json" => Accept::GeoJson,
            other => return Err(bad(format!("endpoint accept {other:?} is not supported"))),
        },
        Some(_) => return Err(bad("endpoint accept must be a string")),
    };
    let receiver_info = match ep.get("receiverInfo") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => key_values(v, "receiverInfo")?,
    };
    let notifier_info = match ep.get("notifierInfo") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => key_values(v, "notifierInfo")?,
    };
    let millis = |name: &str| -> NgsiResult<Option<Duration>> {
        match ep.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(bounded_duration(positive(v, name, 1000.0)? / 1000.0))),
        }
    };
    let target = notify::parse_target(&uri, &notifier_info).map_err(|e| bad(e.to_string()))?;
    notify::check_receiver_info(&target, &receiver_info).map_err(|e| bad(e.to_string()))?;
    let endpoint = notify::Endpoint {
        target,
        receiver_info,
        timeout: millis("timeout")?,
        cooldown: millis("cooldown")?,
    };
    let names = |name: &str| -> NgsiResult<Option<Vec<Iri>>> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(expand_names(&non_empty_strings(v, name)?, ctx))),
        }
    };
    // pick and omit: strings of the projection language (clause 4.21),
    // which may name the entity members id, type and scope (kept as they
    // are) and project Linked Entities in braces.
    let members = |name: &str| -> NgsiResult<Option<Vec<Projection>>> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let mut out = Vec::new();
                for item in non_empty_strings(v, name)? {
                    let mut terms = ngsi_query::parse_projection(&item)
                        .map_err(|e| bad(format!("invalid {name}: {e}")))?;
                    for t in &mut terms {
                        t.map_names(&mut |n| match n {
                            "id" | "type" | "scope" => n.to_string(),
                            _ => ctx.expand(n).into_owned(),
                        });
                    }
                    out.extend(terms);
                }
                Ok(Some(out))
            }
        }
    };
    let attributes = names("attributes")?;
    // "A synonym for pick, except that id, type, scope are not allowed"
    // (Table 5.2.14-1).
    if let Some(a) = m.get("attributes").and_then(Value::as_array)
        && let Some(member) = a
            .iter()
            .filter_map(Value::as_str)
            .find(|n| matches!(*n, "id" | "type" | "scope"))
    {
        return Err(bad(format!(
            "notification attributes cannot name {member:?} (pick can)"
        )));
    }
    let pick = members("pick")?;
    let omit = members("omit")?;
    if attributes.is_some() && (pick.is_some() || omit.is_some()) {
        return Err(bad("attributes cannot be used with pick or omit"));
    }
    if let (Some(p), Some(o)) = (&pick, &omit)
        && p.iter().any(|x| o.iter().any(|y| y.name == x.name))
    {
        return Err(bad("an attribute cannot be both picked and omitted"));
    }
    let format = match m.get("format") {
        None | Some(Value::Null) => Format::Normalized,
        Some(Value::String(f)) => match f.as_str() {
            "normalized" => Format::Normalized,
            "concise" => Format::Concise,
            "keyValues" | "simplified" => Format::KeyValues,
            other => return Err(bad(format!("unknown notification format {other:?}"))),
        },
        Some(_) => return Err(bad("format must be a string")),
    };
    let flag = |name: &str| -> NgsiResult<bool> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => boolean(v, name),
        }
    };
    // Linked Entity retrieval (clause 4.5.23): join inline, flat or @none,
    // joinLevel an integer from 1 to 10 (containedBy is a query parameter,
    // not a notification member).
    let join_given = match (m.get("join"), m.get("joinLevel")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (Some(Value::String(j)), level) => {
            let level = match level {
                None | Some(Value::Null) => None,
                Some(l) => Some(
                    l.as_u64()
                        .filter(|l| (1..=crate::linked::MAX_JOIN_LEVEL as u64).contains(l))
                        .ok_or_else(|| {
                            bad(format!(
                                "joinLevel must be an integer from 1 to {}",
                                crate::linked::MAX_JOIN_LEVEL
                            ))
                        })?,
                ),
            };
            Some((j.clone(), level))
        }
        // As for queries: joinLevel without join changes nothing.
        (None | Some(Value::Null), Some(_)) => None,
        (Some(_), _) => return Err(bad("join must be a string")),
    };
    let join = match &join_given {
        None => None,
        Some((j, level)) => {
            crate::linked::Join::from_params(Some(j), level.map(|l| l.to_string()).as_deref(), None)
                .map_err(|e| bad(e.detail))?
        }
    };
    let mut endpoint_doc = ep.clone();
    endpoint_doc.retain(|k, _| !READ_ONLY_NOTIFICATION.contains(&k.as_str()));
    Ok(NotificationSpec {
        join_given,
        join,
        attributes,
        pick,
        omit,
        format,
        sys_attrs: flag("sysAttrs")?,
        show_changes: flag("showChanges")?,
        endpoint_doc,
        endpoint: Arc::new(endpoint),
        accept,
    })
}

/// A unique, hard-to-guess suffix for generated ids: time, a counter and
/// the process id mixed through SplitMix64, as 32 hex digits.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = ngsi_model::time::now_micros() as u64;
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(t ^ (u64::from(std::process::id()) << 32));
    let b = mix(a ^ n);
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::Subscription;
    use crate::Ctx;

    /// JSON values of every shape, small.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1.0e3f64..1.0e3).prop_map(|f| json!(f)),
            "[a-zA-Z:/.>=;|()~\\[\\]0-9 -]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("uri".to_string()),
                        Just("type".to_string()),
                        Just("key".to_string()),
                        Just("value".to_string()),
                        Just("georel".to_string()),
                        Just("geometry".to_string()),
                        Just("coordinates".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const MEMBERS: &[&str] = &[
        "id",
        "entities",
        "watchedAttributes",
        "notificationTrigger",
        "timeInterval",
        "q",
        "geoQ",
        "scopeQ",
        "lang",
        "datasetId",
        "expandValues",
        "jsonKeys",
        "expiresAt",
        "isActive",
        "throttling",
        "notification",
        "jsonldContext",
        "localOnly",
    ];

    proptest! {
        /// No document, however malformed, makes parsing or patching panic,
        /// and whatever is accepted renders and is live or not.
        #[test]
        fn parsing_never_panics(values in prop::collection::vec(any_json(), MEMBERS.len())) {
            let mut doc = Map::new();
            doc.insert("type".into(), json!("Subscription"));
            for (k, v) in MEMBERS.iter().zip(values) {
                if !v.is_null() {
                    doc.insert((*k).to_string(), v);
                }
            }
            let ctx = Ctx::core();
            if let Ok(sub) = Subscription::create(&doc, &ctx, 0, true) {
                let _ = sub.render(&ctx, 0, true);
                let _ = sub.patch(&doc, &ctx, 0, true);
            }
        }
    }

    /// What a client is refused now but may be stored from before (an
    /// MQTT topic with a wildcard, a malformed expandValues) still replays.
    #[test]
    fn stored_requests_refused_today_still_replay() {
        let ctx = Ctx::core();
        for doc in [
            json!({"type": "Subscription", "entities": [{"type": "T"}],
                   "notification": {"endpoint": {"uri": "mqtt://127.0.0.1:1883/a/#"}}}),
            json!({"type": "Subscription", "entities": [{"type": "T"}], "expandValues": 5,
                   "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}),
        ] {
            let doc = doc.as_object().unwrap();
            assert!(Subscription::create(doc, &ctx, 0, true).is_err(), "{doc:?}");
            assert!(Subscription::create(doc, &ctx, 0, false).is_ok(), "{doc:?}");
        }
    }

    #[test]
    fn a_valid_document_renders_back_what_was_given() {
        let doc = json!({
            "id": "urn:ngsi-ld:Subscription:1",
            "type": "Subscription",
            "entities": [{"type": "Vehicle", "idPattern": "^urn:ngsi-ld:Vehicle:"}],
            "watchedAttributes": ["speed"],
            "q": "speed>80",
            "geoQ": {"geometry": "Point", "coordinates": [113.3, 23.1], "georel": "near;maxDistance==2000"},
            "throttling": 5,
            "notification": {"endpoint": {"uri": "mqtt://127.0.0.1:1883/traffic"}, "format": "keyValues"},
        });
        let ctx = Ctx::core();
        let sub = Subscription::create(doc.as_object().unwrap(), &ctx, 0, true).unwrap();
        let out = Value::Object(sub.render(&ctx, 0, false));
        for key in ["id", "entities", "q", "geoQ", "throttling"] {
            assert_eq!(out[key], doc[key], "{key}: {out}");
        }
        assert_eq!(
            out["notification"]["endpoint"]["accept"],
            "application/json"
        );
        assert_eq!(out["status"], "active");
        assert!(sub.is_live(0));
    }
}
