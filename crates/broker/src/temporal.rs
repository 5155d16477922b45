//! The temporal API (clauses 5.6.11–5.6.16 and 5.7.3–5.7.4): the history of
//! entities in the temporal representation (clause 4.5.7, also with concise
//! instances), its simplified form (`temporalValues`, 4.5.9) and its
//! aggregated form (4.5.19).
//!
//! The store records the history of every write; here the temporal query
//! parameters are parsed, the history is read and rendered, and the writes
//! of the temporal API are turned into store operations.

use std::sync::Arc;

use ngsi_model::parse::{EntityRequirements, parse_attributes, parse_entity};
use ngsi_model::render::{Format, RenderOptions, render_attribute};
use ngsi_model::time::{IsoDuration, format_instant, format_micros, now_micros, parse_datetime};
use ngsi_model::{AttrValue, Attribute, Iri, NgsiError, NgsiResult, Terms, iri};
use ngsi_query::Query;
use ngsi_query::q::Predicate;
use serde_json::{Map, Value, json};
use store::{
    AggregateBucket, AggregateRequest, AttrHistory, HistoryEntity, HistoryOp, HistoryRequest,
    TemporalInstance, TimeProperty, TimeRange,
};

use crate::registrations::forward::temporal::RemoteHistory;
use crate::{Broker, Ctx, EntityQuery, QueryParams, ViewOptions, check_id};

/// The temporal parameters as the client wrote them (clause 5.2.21 and the
/// HTTP binding's query parameters).
#[derive(Debug, Clone, Default)]
pub struct TemporalParams {
    pub timerel: Option<String>,
    pub time_at: Option<String>,
    pub end_time_at: Option<String>,
    pub timeproperty: Option<String>,
    pub last_n: Option<String>,
    pub aggr_methods: Option<String>,
    pub aggr_period_duration: Option<String>,
    /// `local=true`: the query is limited to this broker, which also
    /// waives the need for a selector (clause 5.7.4.4).
    pub local: Option<String>,
    /// The context source filter; only checked (there are no
    /// registrations to filter).
    pub csf: Option<String>,
}

/// The URL parameters of POST /temporal/entityOperations/query: paging,
/// view and aggregation; the selection and time range are the body's.
pub const POST_TEMPORAL_QUERY_PARAMS: &[&str] = &[
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "local",
    "lang",
    "lastN",
    "aggrMethods",
    "aggrPeriodDuration",
    "orderBy",
];

/// An aggregation function (clause 4.5.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggrMethod {
    TotalCount,
    DistinctCount,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    Sumsq,
}

impl AggrMethod {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "totalCount" => Self::TotalCount,
            "distinctCount" => Self::DistinctCount,
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "stddev" => Self::Stddev,
            "sumsq" => Self::Sumsq,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::TotalCount => "totalCount",
            Self::DistinctCount => "distinctCount",
            Self::Sum => "sum",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Stddev => "stddev",
            Self::Sumsq => "sumsq",
        }
    }

    /// The kinds of value ([`store::value_class`] bits) the method applies
    /// to (Tables 4.5.19.1-1 to -3): counts to all; sum and avg to numbers,
    /// booleans and array sizes; min and max to those and strings
    /// (lexical order, date-times included); stddev and sumsq to numbers
    /// and booleans. Objects and relationships are only counted.
    fn applies_to(self) -> u8 {
        use store::value_class::*;
        match self {
            Self::TotalCount | Self::DistinctCount => u8::MAX,
            Self::Sum | Self::Avg => NUMBER | BOOLEAN | ARRAY,
            Self::Min | Self::Max => NUMBER | BOOLEAN | ARRAY | STRING,
            Self::Stddev | Self::Sumsq => NUMBER | BOOLEAN,
        }
    }

    fn value(self, b: &AggregateBucket) -> Value {
        let f = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        let nums = b.classes & !(store::value_class::STRING) != 0;
        match self {
            Self::TotalCount => json!(b.count),
            Self::DistinctCount => json!(b.distinct.unwrap_or(0)),
            Self::Sum => f(b.sum),
            Self::Avg => f(b.mean),
            Self::Min => match &b.text_min {
                Some(t) if !nums => json!(t),
                _ => f(b.min),
            },
            Self::Max => match &b.text_max {
                Some(t) if !nums => json!(t),
                _ => f(b.max),
            },
            Self::Stddev => f(b.stddev),
            Self::Sumsq => f(b.sumsq),
        }
    }
}

/// The names of the kinds of value in `classes`, for an error detail.
fn class_names(classes: u8) -> String {
    use store::value_class::*;
    [
        (NUMBER, "numbers"),
        (BOOLEAN, "booleans"),
        (ARRAY, "arrays"),
        (STRING, "strings"),
        (OBJECT, "objects"),
        (RELATIONSHIP, "relationship objects or terms"),
    ]
    .iter()
    .filter(|(c, _)| classes & c != 0)
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join(" and ")
}

/// The representation of a temporal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemporalFormat {
    /// Every instance as a full attribute (clause 4.5.7).
    #[default]
    Normalized,
    /// `[value, time]` pairs (clause 4.5.9).
    TemporalValues,
    /// Aggregates per period (clause 4.5.19).
    Aggregated,
}

/// A parsed temporal query or retrieval.
#[derive(Debug, Clone)]
pub struct TemporalQuery {
    /// The entity selection, paging and view (as for Query Entities): the
    /// `attrs` parameter selects (`attrs_filter`) and projects; `pick`,
    /// `omit` and `datasetId` only project (`view`).
    pub entities: EntityQuery,
    /// The time range and property.
    pub range: TimeRange,
    /// Only the last N instances of each attribute.
    pub last_n: Option<usize>,
    /// The representation.
    pub format: TemporalFormat,
    /// The aggregation functions.
    pub methods: Vec<AggrMethod>,
    /// The aggregation period.
    pub period: Option<IsoDuration>,
    /// `local=true` was given.
    pub local: bool,
}
/// The part of the instances an answer holds when the server cut
/// attributes at its limit (the `Content-Range` of clause 6.3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Where the range starts: its earliest instant (the requested lower
    /// bound when there is one), or with lastN its latest (the requested
    /// upper bound when there is one).
    pub start: i64,
    /// Where the range ends: the last instant answered, or with lastN the
    /// earliest.
    pub end: i64,
    /// lastN when asked for (`*` otherwise).
    pub size: Option<usize>,
}

impl ContentRange {
    /// The header value: `date-time <start>-<end>/<size>`.
    pub fn header(&self) -> String {
        format!(
            "date-time {}-{}/{}",
            format_instant(self.start),
            format_instant(self.end),
            self.size.map_or("*".to_string(), |n| n.to_string())
        )
    }
}

/// One page of rendered temporal entities.
#[derive(Debug, Default)]
pub struct TemporalResult {
    /// The temporal entities.
    pub entities: Vec<Map<String, Value>>,
    /// All matches, when counted.
    pub total: Option<usize>,
    /// Set when some attribute was cut at the server's limit (answer 206).
    pub range: Option<ContentRange>,
}

fn bad(detail: impl Into<String>) -> NgsiError {
    NgsiError::bad_data(detail)
}

fn datetime(s: &str, name: &str) -> NgsiResult<i64> {
    parse_datetime(s).ok_or_else(|| bad(format!("{name} {s:?} is not a DateTime")))
}

/// A representation a temporal answer can be asked for in (clause 6.3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Representation {
    Normalized,
    Concise,
    TemporalValues,
    Aggregated,
}

/// Whether a word of `options` or `format` names a representation of a
/// temporal answer.
pub fn is_temporal_representation(word: &str) -> bool {
    Representation::parse(word).is_some()
}

impl Representation {
    /// The representation a name of `options` or `format` asks for;
    /// `simplified` (and its old name keyValues) is the simplified temporal
    /// representation (clause 4.5.9).
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "normalized" => Self::Normalized,
            "concise" => Self::Concise,
            "temporalValues" | "simplified" | "keyValues" => Self::TemporalValues,
            "aggregatedValues" => Self::Aggregated,
            _ => return None,
        })
    }
}

/// Splits the representation of a temporal answer from the other view
/// options (sysAttrs), which the entity view parses: `format` wins over
/// `options`, and among options the aggregated form wins over the
/// simplified one, which wins over concise. An unknown option or format is
/// InvalidRequest (clause 6.3.12; ETSI TP 021_20). The representation is
/// `None` when neither names one.
fn split_options(p: &QueryParams) -> NgsiResult<(QueryParams, Option<Representation>)> {
    let mut chosen: Option<Representation> = None;
    let mut rest = p.clone();
    rest.options = None;
    rest.format = None;
    if let Some(options) = &p.options {
        for o in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match (o, Representation::parse(o)) {
                ("sysAttrs", _) => rest.options = Some("sysAttrs".into()),
                (_, Some(r)) => chosen = chosen.max(Some(r)),
                _ => {
                    return Err(NgsiError::invalid_request(format!(
                        "unknown option {o:?} for a temporal request"
                    )));
                }
            }
        }
    }
    if let Some(f) = &p.format {
        chosen = Some(Representation::parse(f).ok_or_else(|| {
            NgsiError::invalid_request(format!("unknown format {f:?} for a temporal request"))
        })?);
    }
    if chosen == Some(Representation::Concise) {
        rest.format = Some("concise".into());
    }
    Ok((rest, chosen))
}

fn temporal_format(r: Option<Representation>) -> TemporalFormat {
    match r {
        Some(Representation::TemporalValues) => TemporalFormat::TemporalValues,
        Some(Representation::Aggregated) => TemporalFormat::Aggregated,
        _ => TemporalFormat::Normalized,
    }
}

impl TemporalParams {
    pub(crate) fn range(&self) -> NgsiResult<TimeRange> {
        let property = match self.timeproperty.as_deref() {
            None | Some("observedAt") => TimeProperty::ObservedAt,
            Some("modifiedAt") => TimeProperty::ModifiedAt,
            Some("createdAt") => TimeProperty::CreatedAt,
            Some("deletedAt") => TimeProperty::DeletedAt,
            Some(other) => {
                return Err(bad(format!(
                    "timeproperty {other:?} is not one of observedAt, createdAt, modifiedAt, deletedAt"
                )));
            }
        };
        let time_at = self
            .time_at
            .as_deref()
            .map(|t| datetime(t, "timeAt"))
            .transpose()?;
        let end = self
            .end_time_at
            .as_deref()
            .map(|t| datetime(t, "endTimeAt"))
            .transpose()?;
        let (from, to) = match (self.timerel.as_deref(), time_at) {
            (None, None) if end.is_none() => (None, None),
            (None, _) => return Err(bad("timeAt and endTimeAt need timerel")),
            (Some(_), None) => return Err(bad("timerel needs timeAt")),
            (Some("before"), Some(t)) => (None, Some(t)),
            // Clause 4.11: timeAt is an exclusive bound for before, an
            // inclusive one for after; between includes timeAt and
            // excludes endTimeAt.
            (Some("after"), Some(t)) => (Some(t), None),
            (Some("between"), Some(t)) => {
                let end = end.ok_or_else(|| bad("timerel=between needs endTimeAt"))?;
                if end <= t {
                    return Err(bad("endTimeAt must be after timeAt"));
                }
                (Some(t), Some(end))
            }
            (Some(other), Some(_)) => {
                return Err(bad(format!(
                    "timerel {other:?} is not one of before, after, between"
                )));
            }
        };
        if end.is_some() && self.timerel.as_deref() != Some("between") {
            return Err(bad("endTimeAt is only allowed with timerel=between"));
        }
        Ok(TimeRange { property, from, to })
    }

    fn last_n(&self) -> NgsiResult<Option<usize>> {
        self.last_n
            .as_deref()
            .map(|n| match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad("lastN must be a positive integer")),
            })
            .transpose()
    }

    fn aggregation(&self) -> NgsiResult<(Vec<AggrMethod>, Option<IsoDuration>)> {
        let methods = match &self.aggr_methods {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    AggrMethod::parse(m).ok_or_else(|| {
                        bad(format!(
                            "aggrMethods: {m:?} is not one of totalCount, distinctCount, sum, avg, min, max, stddev, sumsq"
                        ))
                    })
                })
                .collect::<NgsiResult<Vec<_>>>()?,
        };
        let period = self
            .aggr_period_duration
            .as_deref()
            .map(|d| {
                IsoDuration::parse(d).ok_or_else(|| {
                    bad(format!(
                        "aggrPeriodDuration {d:?} is not an ISO 8601 duration"
                    ))
                })
            })
            .transpose()?;
        Ok((methods, period))
    }
}

/// The error for a temporal query that selects by too little (clause
/// 5.7.4.4).
pub(crate) fn too_wide() -> NgsiError {
    NgsiError::bad_data(
        "a temporal query needs an entity type, attrs or q naming a non-system attribute, a geo-query or local=true",
    )
}

impl TemporalQuery {
    fn build(
        entities: EntityQuery,
        t: &TemporalParams,
        p: &QueryParams,
        format: TemporalFormat,
    ) -> NgsiResult<Self> {
        crate::query::refuse_links(entities.q.as_ref(), "temporal queries")?;
        // Clauses 5.7.3.4 and 5.7.4.4: no Linked Entity retrieval here.
        if entities.view.projection_depth() > 0 {
            return Err(NgsiError::bad_data(
                "linked-entity projections (attr{...}) in pick or omit are not supported in temporal reads",
            ));
        }
        // The temporal parts of an entity are merged, but not filtered
        // after the merge.
        if entities.split {
            return Err(NgsiError::new(
                ngsi_model::ErrorKind::OperationNotSupported,
                "splitEntities=true is not supported in temporal queries",
            ));
        }
        // Clause 5.7.4.4: a temporal query orders by id only.
        if entities
            .order_by
            .iter()
            .flatten()
            .any(|k| k.path != crate::order::OrderPath::Id)
        {
            return Err(bad(
                "orderBy of a temporal query may only name id (clause 5.7.4.4)",
            ));
        }
        // Clause 4.21: the projections pick and omit replace attrs.
        if p.attrs.is_some() && (p.pick.is_some() || p.omit.is_some()) {
            return Err(bad("attrs cannot be used together with pick or omit"));
        }
        if let Some(csf) = &t.csf {
            ngsi_query::parse_q(csf).map_err(|e| bad(format!("invalid csf: {e}")))?;
        }
        let local = match t.local.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(bad("local must be true or false")),
        };
        let (methods, period) = t.aggregation()?;
        if format == TemporalFormat::Aggregated && methods.is_empty() {
            return Err(bad("aggregatedValues needs aggrMethods"));
        }
        Ok(Self {
            entities,
            range: t.range()?,
            last_n: t.last_n()?,
            format,
            methods,
            period,
            local,
        })
    }

    /// Parses GET /temporal/entities.
    pub fn from_params(
        p: &QueryParams,
        t: &TemporalParams,
        ctx: &Ctx,
        default_limit: usize,
        max_limit: usize,
    ) -> NgsiResult<Self> {
        let (view_params, representation) = split_options(p)?;
        let entities = EntityQuery::from_params(&view_params, ctx, default_limit, max_limit)?;
        Self::build(entities, t, p, temporal_format(representation))
    }

    /// Parses GET /temporal/entities/{id}: the view and temporal parameters.
    pub fn for_retrieve(p: &QueryParams, t: &TemporalParams, ctx: &Ctx) -> NgsiResult<Self> {
        let (view_params, representation) = split_options(p)?;
        let entities = EntityQuery {
            view: ViewOptions::from_params(&view_params, ctx)?,
            ..Default::default()
        };
        Self::build(entities, t, p, temporal_format(representation))
    }

    /// Parses POST /temporal/entityOperations/query: a Query (clause
    /// 5.2.23) whose `temporalQ` member (5.2.21) holds the temporal
    /// parameters and whose `aggrParams` member (5.2.44) the aggregation;
    /// the URL may give lastN, aggrMethods and aggrPeriodDuration too.
    /// Aggregation methods in the body ask for the aggregated form unless
    /// `options` or `format` name another.
    pub fn from_json(
        body: &Value,
        p: &QueryParams,
        url: &TemporalParams,
        ctx: &Ctx,
        default_limit: usize,
        max_limit: usize,
    ) -> NgsiResult<Self> {
        let (view_params, representation) = split_options(p)?;
        let entities = EntityQuery::from_json(body, &view_params, ctx, default_limit, max_limit)?;
        let mut t = url.clone();
        let mut aggregation_in_body = false;
        if let Some(tq) = body.get("temporalQ") {
            let Value::Object(m) = tq else {
                return Err(bad("temporalQ must be an object"));
            };
            let text = |k: &str| -> NgsiResult<Option<String>> {
                match m.get(k) {
                    None => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(Value::Number(n)) if k == "lastN" => Ok(Some(n.to_string())),
                    Some(_) => Err(bad(format!("temporalQ.{k} must be a string"))),
                }
            };
            t.timerel = text("timerel")?;
            t.time_at = text("timeAt")?;
            t.end_time_at = text("endTimeAt")?;
            t.timeproperty = text("timeproperty")?;
            if let Some(n) = text("lastN")? {
                t.last_n = Some(n);
            }
            aggregation_in_body |= aggregation_members(m, &mut t, "temporalQ")?;
        }
        if let Some(ap) = body.get("aggrParams") {
            let Value::Object(m) = ap else {
                return Err(bad("aggrParams must be an object"));
            };
            aggregation_in_body |= aggregation_members(m, &mut t, "aggrParams")?;
        }
        let format = match representation {
            None if aggregation_in_body => TemporalFormat::Aggregated,
            r => temporal_format(r),
        };
        Self::build(entities, &t, p, format)
    }

    /// Whether a temporal query names enough to select by (clause
    /// 5.7.4.4: an entity type, attrs or q with a non-system attribute, a
    /// geo-query, or local=true; ids alone are too wide, ETSI TP 021_24, as
    /// are system attributes alone, 5741_01, and a scopeQ alone, which the
    /// clause's list lacks).
    pub(crate) fn has_selector(&self) -> bool {
        let system = crate::query::is_system_attribute;
        let e = &self.entities;
        self.local
            || e.selectors.iter().any(|s| s.types.is_some())
            || e.attrs_filter
                .as_ref()
                .is_some_and(|a| a.iter().any(|n| !system(n)))
            || e.q
                .as_ref()
                .is_some_and(|q| q.paths().iter().any(|p| !system(&p.attr)))
            || e.geo.is_some()
    }

    /// The attributes of `he` the answer shows (`attrs` or `pick`, less
    /// `omit`); `None`: all.
    fn shown_attrs(&self, he: &HistoryEntity) -> Option<Vec<Iri>> {
        let view = &self.entities.view;
        if view.attrs.is_none() && view.omit.is_none() && !view.omit_scope {
            return None;
        }
        let mut out: Vec<Iri> = Vec::new();
        for (a, _) in &he.attrs {
            // The Scope is an entity member: pick and omit name it as
            // `scope`, attrs does not select it.
            let kept = if **a == *store::history::SCOPE {
                !view.omit_scope
            } else {
                view.attrs.as_ref().is_none_or(|keep| keep.contains(a))
                    && view.omit.as_ref().is_none_or(|drop| !drop.contains(a))
            };
            if kept && !out.contains(a) {
                out.push(a.clone());
            }
        }
        Some(out)
    }

    /// The attribute instances the answer shows (`datasetId`, clause
    /// 4.5.5); `None`: all.
    fn shown_datasets(&self) -> Option<Vec<Option<Box<str>>>> {
        self.entities
            .view
            .dataset_id
            .as_ref()
            .map(|list| list.iter().map(|d| d.as_deref().map(Box::from)).collect())
    }
}

/// Reads `aggrMethods` and `aggrPeriodDuration` from a member of a Query
/// body (`temporalQ` or `aggrParams`) into `t`; `true` when methods were
/// given. aggrMethods is a list of strings or one comma-separated string.
fn aggregation_members(
    m: &Map<String, Value>,
    t: &mut TemporalParams,
    member: &str,
) -> NgsiResult<bool> {
    match m.get("aggrPeriodDuration") {
        None => {}
        Some(Value::String(s)) => t.aggr_period_duration = Some(s.clone()),
        Some(_) => return Err(bad(format!("{member}.aggrPeriodDuration must be a string"))),
    }
    match m.get("aggrMethods") {
        None => Ok(false),
        Some(Value::Array(a)) => {
            let names: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
            let names =
                names.ok_or_else(|| bad(format!("{member}.aggrMethods must hold strings")))?;
            t.aggr_methods = Some(names.join(","));
            Ok(true)
        }
        Some(Value::String(s)) => {
            t.aggr_methods = Some(s.clone());
            Ok(true)
        }
        Some(_) => Err(bad(format!(
            "{member}.aggrMethods must be an array of strings"
        ))),
    }
}

/// The most instances in one temporal answer, over all its entities and
/// attributes.
const MAX_ANSWER_INSTANCES: usize = 100_000;

/// Adds the types and attributes that sources answered of an entity to
/// what is known here of it.
fn join_remote(he: &mut HistoryEntity, remote: &[RemoteHistory]) {
    for r in remote {
        ngsi_model::entity::extend_unique(&mut he.types, r.types.clone());
        for h in &r.attrs {
            let key = (h.attr.clone(), h.dataset_id.clone());
            if !he.attrs.contains(&key) {
                he.attrs.push(key);
            }
        }
    }
}

/// Adds the instances registered sources answered to those held here
/// (clause 5.7.3.4): by attribute and datasetId, one instance per time of
/// the query's time property. Where two places have one, the more recently
/// modified wins (clause 4.5.5.3; this broker's on a tie); an auxiliary
/// source only fills times nothing else has. The merged series is
/// ordered, kept within the range, and cut to lastN (not for the
/// aggregated form, which aggregates the merged series here).
fn merge_histories(history: &mut Vec<AttrHistory>, remote: Vec<RemoteHistory>, q: &TemporalQuery) {
    let property = q.range.property;
    let bounded = q.range.bounded();
    let in_range = |i: &TemporalInstance| {
        let t = property.time_of(i);
        property.selects(i, bounded)
            && q.range.from.is_none_or(|f| t >= f)
            && q.range.to.is_none_or(|to| t < to)
    };
    let shown = q.shown_datasets();
    for r in remote {
        for h in r.attrs {
            if shown
                .as_ref()
                .is_some_and(|want| !want.iter().any(|w| w.as_deref() == h.dataset_id.as_deref()))
            {
                continue;
            }
            let at = match history
                .iter()
                .position(|l| l.attr == h.attr && l.dataset_id == h.dataset_id)
            {
                Some(at) => at,
                None => {
                    history.push(AttrHistory {
                        attr: h.attr.clone(),
                        dataset_id: h.dataset_id.clone(),
                        instances: Vec::new(),
                        truncated: false,
                    });
                    history.len() - 1
                }
            };
            let target = &mut history[at].instances;
            for inst in h.instances.into_iter().filter(|i| in_range(i)) {
                let t = property.time_of(&inst);
                match target.iter_mut().find(|x| property.time_of(x) == t) {
                    None => target.push(inst),
                    Some(x) if !r.auxiliary && inst.modified_at > x.modified_at => *x = inst,
                    Some(_) => {}
                }
            }
        }
    }
    for h in history.iter_mut() {
        h.instances
            .sort_by_key(|i| (property.time_of(i), i.instance_id));
        if let Some(n) = q.last_n.filter(|_| q.format != TemporalFormat::Aggregated)
            && h.instances.len() > n
        {
            h.instances.drain(..h.instances.len() - n);
        }
    }
    history.retain(|h| !h.instances.is_empty());
}

/// The instanceId of an instance.
pub fn instance_uri(id: i64) -> String {
    format!("urn:ngsi-ld:instance:{id}")
}

/// The instance number of an instanceId: a URI that this broker did not
/// give names no instance (ResourceNotFound, ETSI TPs 016_03, 017_03);
/// anything else is BadRequestData.
fn parse_instance_id(s: &str) -> NgsiResult<i64> {
    match s
        .strip_prefix("urn:ngsi-ld:instance:")
        .and_then(|n| n.parse::<i64>().ok())
    {
        Some(n) => Ok(n),
        None if ngsi_model::parse::is_absolute_iri(s) => {
            Err(NgsiError::not_found(format!("no attribute instance {s}")))
        }
        None => Err(bad(format!("instanceId {s:?} is not a URI"))),
    }
}

/// An attribute name of a request path (clause 4.6.2; a dot segment such
/// as `..`, percent-encoded or not, is no name: ETSI TP 015_04).
fn check_attr_name(attr: &str) -> NgsiResult<()> {
    if ngsi_model::parse::is_valid_name(attr) {
        Ok(())
    } else {
        Err(bad(format!("{attr:?} is not a valid attribute name")))
    }
}

/// The time of an instance on the selected time property.
fn time_of(i: &TemporalInstance, p: TimeProperty) -> i64 {
    p.time_of(i)
}

/// The member that holds the value of each attribute kind, and its plural
/// in the simplified temporal representation.
fn value_members(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Relationship" => ("object", "objects"),
        "LanguageProperty" => ("languageMap", "languageMaps"),
        "JsonProperty" => ("json", "jsons"),
        "VocabProperty" => ("vocab", "vocabs"),
        "ListProperty" => ("valueList", "valueLists"),
        "ListRelationship" => ("objectList", "objectLists"),
        _ => ("value", "values"),
    }
}

/// The first element of a pair of the simplified temporal representation
/// (clause 4.5.9), from the normalized rendering of the instance: the
/// value, object, value list or object list (URIs) itself; a languageMap,
/// json or vocab inside an object with that one member.
fn simplified_value(rendered: Value, member: &str) -> Value {
    let Value::Object(mut m) = rendered else {
        return rendered;
    };
    // A LanguageProperty rendered for one language (`lang`) is a Property.
    let (member, v) = match m.remove(member) {
        Some(v) => (member, v),
        None => ("value", m.remove("value").unwrap_or(Value::Null)),
    };
    match (member, v) {
        ("languageMap" | "json" | "vocab", v) => {
            let mut wrapped = Map::new();
            wrapped.insert(member.into(), v);
            Value::Object(wrapped)
        }
        ("objectList", Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|o| match o {
                    Value::Object(mut o) => o.remove("object").unwrap_or(Value::Null),
                    other => other,
                })
                .collect(),
        ),
        (_, v) => v,
    }
}

/// Cuts the histories at the server's limit consistently: every attribute
/// keeps only the instances inside the range that all cut attributes cover
/// completely. Returns that range when something was cut.
fn cut(histories: &mut [&mut Vec<AttrHistory>], q: &TemporalQuery) -> Option<ContentRange> {
    let p = q.range.property;
    let cut_ones = || {
        histories
            .iter()
            .flat_map(|h| h.iter())
            .filter(|a| a.truncated && !a.instances.is_empty())
    };
    if q.last_n.is_some() {
        // The last instances are kept: the complete range starts at the
        // latest first instance of a cut attribute. The range is written
        // in the order of lastN, from the most recent instant (the end of
        // the requested range when it has one) down to that first kept
        // one, as the ETSI tests of clause 6.3.10 expect.
        let first = cut_ones()
            .filter_map(|a| a.instances.first().map(|i| time_of(i, p)))
            .max()?;
        let mut last = first;
        for h in histories.iter_mut() {
            for a in h.iter_mut() {
                a.instances.retain(|i| time_of(i, p) >= first);
                if let Some(l) = a.instances.last() {
                    last = last.max(time_of(l, p));
                }
            }
        }
        return Some(ContentRange {
            start: q.range.to.unwrap_or(last),
            end: first,
            size: q.last_n,
        });
    }
    let end = cut_ones()
        .filter_map(|a| a.instances.last().map(|i| time_of(i, p)))
        .min()?;
    let mut start = end;
    for h in histories.iter_mut() {
        for a in h.iter_mut() {
            a.instances.retain(|i| time_of(i, p) <= end);
            if let Some(f) = a.instances.first() {
                start = start.min(time_of(f, p));
            }
        }
    }
    Some(ContentRange {
        start: q.range.from.unwrap_or(start),
        end,
        size: None,
    })
}

impl Broker {
    /// Retrieve Temporal Evolution of an Entity (clause 5.7.3).
    pub async fn retrieve_temporal(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        q: &TemporalQuery,
    ) -> NgsiResult<(Map<String, Value>, Option<ContentRange>)> {
        self.retrieve_temporal_merged(tenant, ctx, id, q, Vec::new())
            .await
    }

    /// Retrieve Temporal Evolution with what registered sources answered
    /// (`remote`, auxiliary ones last): their instances join those held
    /// here before lastN, the cut and the representation (clause 5.7.3.4).
    pub(crate) async fn retrieve_temporal_merged(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        q: &TemporalQuery,
        remote: Vec<RemoteHistory>,
    ) -> NgsiResult<(Map<String, Value>, Option<ContentRange>)> {
        check_id(id)?;
        if remote.is_empty() {
            self.check_tenant(tenant)?;
        }
        let not_found = || NgsiError::not_found(format!("entity {id} has no history"));
        let local = (tenant.is_empty() || self.store.tenant_exists(tenant))
            .then(|| self.store.history_entity(tenant, id))
            .flatten();
        let mut he = match local.clone() {
            Some(he) => he,
            None if !remote.is_empty() => HistoryEntity {
                id: Arc::from(id),
                types: Vec::new(),
                attrs: Vec::new(),
            },
            None => return Err(not_found()),
        };
        join_remote(&mut he, &remote);
        if let Some(types) = &q.entities.view.type_filter
            && !types.matches_with(&|n| he.types.iter().any(|t| **t == *n))
        {
            return Err(not_found());
        }
        // Attributes asked for (attrs or pick) of which the entity has no
        // history at all: ResourceNotFound (clause 5.7.3.4; ETSI TPs
        // 020_08, 020_23).
        if let Some(asked) = q.entities.view.attrs.as_ref().filter(|a| !a.is_empty())
            && !asked.iter().any(|a| he.attrs.iter().any(|(h, _)| h == a))
        {
            return Err(NgsiError::not_found(format!(
                "entity {id} has no history of the attributes asked for"
            )));
        }
        let limit = self.instance_limit(std::slice::from_ref(&he), q);
        let mut history = match &local {
            Some(local) => {
                self.read_history(tenant, local, q, limit, !remote.is_empty())
                    .await?
            }
            None => Vec::new(),
        };
        if !remote.is_empty() {
            merge_histories(&mut history, remote, q);
        }
        let mut histories = vec![history];
        let range = {
            let mut refs: Vec<&mut Vec<AttrHistory>> = histories.iter_mut().collect();
            cut(&mut refs, q)
        };
        let history = histories.pop().unwrap_or_default();
        let mut periods_cut = None;
        let entity = self
            .render_temporal(tenant, ctx, &he, history, q, limit, &mut periods_cut)
            .await?;
        if entity.is_empty() {
            return Err(NgsiError::not_found(format!(
                "pick and omit leave nothing of entity {id}"
            )));
        }
        Ok((entity, range.or(periods_cut)))
    }

    /// Query Temporal Evolution of Entities (clause 5.7.4).
    pub async fn query_temporal(
        &self,
        tenant: &str,
        ctx: &Ctx,
        q: &TemporalQuery,
    ) -> NgsiResult<TemporalResult> {
        if !q.has_selector() {
            return Err(too_wide());
        }
        self.check_tenant(tenant)?;
        // Each candidate costs a read of its history in the range: without
        // count, stop once the page is full.
        let wanted = if q.entities.count {
            usize::MAX
        } else {
            q.entities.offset.saturating_add(q.entities.limit)
        };
        let matched = self.temporal_matches(tenant, q, wanted).await?;
        let total = q.entities.count.then_some(matched.len());
        let (page, windows): (Vec<HistoryEntity>, Vec<Option<ScopeWindows>>) = matched
            .into_iter()
            .skip(q.entities.offset)
            .take(q.entities.limit)
            .unzip();
        let limit = self.instance_limit(&page, q);
        let mut histories = Vec::with_capacity(page.len());
        for (he, windows) in page.iter().zip(windows) {
            let mut history = self.read_history(tenant, he, q, limit, false).await?;
            if let Some(w) = windows {
                w.restrict(&mut history, q);
            }
            histories.push(history);
        }
        self.render_page(tenant, ctx, q, &page, histories, limit, total)
            .await
    }

    /// Query Temporal Evolution with what registered sources answered
    /// (clause 5.7.4.4): the entities held here that match and those the
    /// sources answered (within the query's selection), by id; each
    /// entity's instances here and there merged as for a retrieval, then
    /// the union paged and cut.
    pub(crate) async fn query_temporal_merged(
        &self,
        tenant: &str,
        ctx: &Ctx,
        q: &TemporalQuery,
        remote: Vec<RemoteHistory>,
    ) -> NgsiResult<TemporalResult> {
        type Place = (
            Option<(HistoryEntity, Option<ScopeWindows>)>,
            Vec<RemoteHistory>,
        );
        let here = tenant.is_empty() || self.store.tenant_exists(tenant);
        let matched = if here {
            self.temporal_matches(tenant, q, usize::MAX).await?
        } else {
            Vec::new()
        };
        let mut by_id: std::collections::BTreeMap<Arc<str>, Place> = Default::default();
        for (he, windows) in matched {
            let id = he.id.clone();
            by_id.entry(id).or_default().0 = Some((he, windows));
        }
        for r in remote {
            if q.entities.selects_history(&r.id, &r.types) {
                by_id.entry(r.id.clone()).or_default().1.push(r);
            }
        }
        let total = q.entities.count.then_some(by_id.len());
        let page: Vec<(Arc<str>, Place)> = by_id
            .into_iter()
            .skip(q.entities.offset)
            .take(q.entities.limit)
            .collect();
        // What is held here of an entity a source answered joins it.
        let mut entities: Vec<(
            HistoryEntity,
            Option<ScopeWindows>,
            bool,
            Vec<RemoteHistory>,
        )> = Vec::with_capacity(page.len());
        for (id, (local, remote)) in page {
            let (he, windows, held) = match local {
                Some((he, windows)) => (he, windows, true),
                None => match here
                    .then(|| self.store.history_entity(tenant, &id))
                    .flatten()
                {
                    Some(he) => (he, None, true),
                    None => (
                        HistoryEntity {
                            id,
                            types: Vec::new(),
                            attrs: Vec::new(),
                        },
                        None,
                        false,
                    ),
                },
            };
            let mut he = he;
            join_remote(&mut he, &remote);
            entities.push((he, windows, held, remote));
        }
        let hes: Vec<HistoryEntity> = entities.iter().map(|(he, ..)| he.clone()).collect();
        let limit = self.instance_limit(&hes, q);
        let mut histories = Vec::with_capacity(entities.len());
        for (he, windows, held, remote) in &mut entities {
            let mut history = if *held {
                self.read_history(tenant, he, q, limit, !remote.is_empty())
                    .await?
            } else {
                Vec::new()
            };
            if let Some(w) = windows.take() {
                w.restrict(&mut history, q);
            }
            merge_histories(&mut history, std::mem::take(remote), q);
            histories.push(history);
        }
        self.render_page(tenant, ctx, q, &hes, histories, limit, total)
            .await
    }

    /// A page of a temporal query: its entities' histories cut at the
    /// answer's limit (clause 6.3.10), then rendered.
    #[allow(clippy::too_many_arguments)]
    async fn render_page(
        &self,
        tenant: &str,
        ctx: &Ctx,
        q: &TemporalQuery,
        page: &[HistoryEntity],
        mut histories: Vec<Vec<AttrHistory>>,
        limit: usize,
        total: Option<usize>,
    ) -> NgsiResult<TemporalResult> {
        let range = {
            let mut refs: Vec<&mut Vec<AttrHistory>> = histories.iter_mut().collect();
            cut(&mut refs, q)
        };
        let mut entities = Vec::with_capacity(page.len());
        let mut periods_cut = None;
        for (he, history) in page.iter().zip(histories) {
            entities.push(
                self.render_temporal(tenant, ctx, he, history, q, limit, &mut periods_cut)
                    .await?,
            );
        }
        Ok(TemporalResult {
            entities,
            total,
            range: range.or(periods_cut),
        })
    }

    /// The entities a temporal query selects (clause 5.7.4.4), in order,
    /// with the Scope windows of each, stopping after `wanted`.
    pub(crate) async fn temporal_matches(
        &self,
        tenant: &str,
        q: &TemporalQuery,
        wanted: usize,
    ) -> NgsiResult<Vec<(HistoryEntity, Option<ScopeWindows>)>> {
        // Ids and types first (no copies of the others), then attrs and
        // scopeQ (on the current entity), then the time range, q and the
        // geo-query on the instances in the range (clause 5.7.4.4).
        let datasets = q.shown_datasets();
        let mut candidates: Vec<HistoryEntity> = self
            .store
            .history_entities(tenant, &mut |id, types| {
                q.entities.selects_history(id, types)
            })
            .into_iter()
            .filter(|he| {
                // datasetId selects too: an entity without such an
                // attribute instance is not part of the answer.
                let attrs: Vec<Iri> = he
                    .attrs
                    .iter()
                    .filter(|(_, d)| {
                        datasets
                            .as_ref()
                            .is_none_or(|want| want.iter().any(|w| w.as_deref() == d.as_deref()))
                    })
                    .map(|(a, _)| a.clone())
                    .collect();
                if datasets.is_some() && attrs.is_empty() {
                    return false;
                }
                q.entities
                    .attrs_filter
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|n| attrs.contains(n)))
            })
            .collect();
        // Candidates come in id order; orderBy can only ask for it reversed.
        if q.entities
            .order_by
            .as_ref()
            .and_then(|keys| keys.first())
            .is_some_and(|k| k.descending)
        {
            candidates.reverse();
        }
        // The range is tested for a chunk of candidates in one store read:
        // one read per candidate cost 1.4 s for a count over 10,000
        // entities (debug build), chunks 0.03 s.
        let mut matched = Vec::new();
        let mut rest = candidates.into_iter().peekable();
        while matched.len() < wanted && rest.peek().is_some() {
            let chunk_len = wanted
                .saturating_sub(matched.len())
                .clamp(MIN_RANGE_CHUNK, MAX_RANGE_CHUNK);
            let chunk: Vec<HistoryEntity> = rest.by_ref().take(chunk_len).collect();
            let in_range = self.have_instances_in_range(tenant, &chunk, q).await?;
            for (he, inside) in chunk.into_iter().zip(in_range) {
                if matched.len() >= wanted {
                    break;
                }
                if !inside {
                    continue;
                }
                let windows = self.scope_windows(tenant, &he, q).await?;
                if windows.as_ref().is_some_and(|w| w.intervals.is_empty()) {
                    continue;
                }
                if self.history_filter_matches(tenant, &he, q).await? {
                    matched.push((he, windows));
                }
            }
        }
        Ok(matched)
    }

    /// The intervals of the query's range in which the entity's Scope
    /// matched `scopeQ` (clause 5.7.4.4, S4): a Scope is valid from its
    /// instant until the next one or its deletion (clause 4.18), so the one
    /// set last before the range is valid at its start. `None` without
    /// scopeQ.
    async fn scope_windows(
        &self,
        tenant: &str,
        he: &HistoryEntity,
        q: &TemporalQuery,
    ) -> NgsiResult<Option<ScopeWindows>> {
        let Some(sq) = &q.entities.scope_q else {
            return Ok(None);
        };
        let scope = iri(store::history::SCOPE);
        let mut w = ScopeWindows {
            scope: scope.clone(),
            intervals: Vec::new(),
            instances: Vec::new(),
        };
        if !he.attrs.iter().any(|(a, _)| *a == scope) {
            return Ok(Some(w));
        }
        // Every Scope instance: Scopes change seldom, and the validity of
        // each ends with the next, deletions included.
        let req = HistoryRequest {
            attrs: Some(vec![scope]),
            datasets: None,
            range: TimeRange::default(),
            last_n: None,
            limit: MAX_ANSWER_INSTANCES,
        };
        let history = self
            .store
            .history(tenant, &he.id, req)
            .await?
            .unwrap_or_default();
        let (from, to) = (
            q.range.from.unwrap_or(i64::MIN),
            q.range.to.unwrap_or(i64::MAX),
        );
        let mut all: Vec<TemporalInstance> =
            history.into_iter().flat_map(|h| h.instances).collect();
        all.sort_by_key(|i| (i.instant, i.instance_id));
        for (k, i) in all.iter().enumerate() {
            let start = i.instant.max(from);
            let end = all.get(k + 1).map_or(to, |next| next.instant).min(to);
            if start >= end {
                continue;
            }
            let scopes = scope_values(i);
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            if !scopes.is_empty() && sq.matches(&scopes) {
                w.intervals.push((start, end));
                w.instances.push(i.clone());
            }
        }
        Ok(Some(w))
    }

    /// For each entity, whether it has an instance of the selected
    /// attributes (and datasetIds) in the query's time range (clause
    /// 5.7.4.4: an entity whose time series hold no data in the interval is
    /// not part of the result). Without a time range every entity with
    /// history has.
    async fn have_instances_in_range(
        &self,
        tenant: &str,
        entities: &[HistoryEntity],
        q: &TemporalQuery,
    ) -> NgsiResult<Vec<bool>> {
        if !q.range.bounded() && q.range.property != TimeProperty::DeletedAt {
            return Ok(vec![true; entities.len()]);
        }
        let req = HistoryRequest {
            attrs: q.entities.attrs_filter.clone(),
            datasets: q.shown_datasets(),
            range: q.range,
            last_n: None,
            limit: 1,
        };
        let ids = entities.iter().map(|he| he.id.clone()).collect();
        Ok(self.store.history_has_instances(tenant, ids, req).await?)
    }

    /// Whether `q` and the geo-query of a temporal query hold on the
    /// entity's instances in the time range (clause 5.7.4.4: "the values
    /// filter query shall be checked against all the Attribute instances"
    /// of the interval, the geoquery "against the GeoProperty instances
    /// that are within the interval"). A term of `q` holds when some
    /// instance in the range satisfies it (`!attr` when none exists), as
    /// for the instances of several datasetIds in Query Entities. The
    /// instances of the attributes the filters name are read in pages, so
    /// a long history is never held whole.
    async fn history_filter_matches(
        &self,
        tenant: &str,
        he: &HistoryEntity,
        q: &TemporalQuery,
    ) -> NgsiResult<bool> {
        let Some(mut filter) = HistoryFilter::new(&q.entities) else {
            return Ok(true);
        };
        let p = q.range.property;
        let mut range = q.range;
        loop {
            let req = HistoryRequest {
                attrs: Some(filter.attrs.clone()),
                datasets: None,
                range,
                last_n: None,
                limit: FILTER_PAGE,
            };
            let page = self
                .store
                .history(tenant, &he.id, req)
                .await?
                .unwrap_or_default();
            filter.add_page(he, &page);
            if filter.decided() {
                break;
            }
            // The next page starts at the earliest last instant of a cut
            // series: instances read twice change no existence test.
            let Some(next) = page
                .iter()
                .filter(|a| a.truncated)
                .filter_map(|a| a.instances.last().map(|i| time_of(i, p)))
                .min()
            else {
                break;
            };
            let from = range.from.unwrap_or(i64::MIN);
            range.from = Some(if next > from {
                next
            } else {
                next.saturating_add(1)
            });
        }
        Ok(filter.result())
    }

    /// The most instances per attribute instance for an answer about
    /// `entities`: the configured limit, lowered so that the whole answer
    /// holds at most `MAX_ANSWER_INSTANCES` (memory stays bounded for a
    /// page of many entities; the answer is then cut with a Content-Range).
    fn instance_limit(&self, entities: &[HistoryEntity], q: &TemporalQuery) -> usize {
        let datasets = q.shown_datasets();
        let series: usize = entities
            .iter()
            .map(|he| {
                let shown = q.shown_attrs(he);
                he.attrs
                    .iter()
                    .filter(|(a, d)| {
                        shown.as_ref().is_none_or(|keep| keep.contains(a))
                            && datasets.as_ref().is_none_or(|want| {
                                want.iter().any(|w| w.as_deref() == d.as_deref())
                            })
                    })
                    .count()
            })
            .sum();
        let share = MAX_ANSWER_INSTANCES / series.max(1);
        self.config.temporal_limit.min(share).max(1)
    }

    /// The instances of an entity's history the query asks for (none for
    /// the aggregated form, which reads the store's aggregates, unless they
    /// are to be merged with what sources answered: then every instance in
    /// the range, up to the answer's bound).
    pub(crate) async fn read_history(
        &self,
        tenant: &str,
        he: &HistoryEntity,
        q: &TemporalQuery,
        limit: usize,
        merged: bool,
    ) -> NgsiResult<Vec<AttrHistory>> {
        let aggregated = q.format == TemporalFormat::Aggregated;
        if aggregated && !merged {
            return Ok(Vec::new());
        }
        let req = HistoryRequest {
            attrs: q.shown_attrs(he),
            datasets: q.shown_datasets(),
            range: q.range,
            last_n: if aggregated { None } else { q.last_n },
            limit: if aggregated {
                MAX_ANSWER_INSTANCES
            } else {
                limit
            },
        };
        Ok(self
            .store
            .history(tenant, &he.id, req)
            .await?
            .unwrap_or_default())
    }

    /// Renders one temporal entity. In the aggregated form an attribute
    /// keeps at most `limit` periods; when some are cut, every attribute
    /// keeps the periods before the cut, and `periods_cut` (narrowed over
    /// the entities of an answer) tells the range answered.
    #[allow(clippy::too_many_arguments)]
    async fn render_temporal(
        &self,
        tenant: &str,
        ctx: &Ctx,
        he: &HistoryEntity,
        history: Vec<AttrHistory>,
        q: &TemporalQuery,
        limit: usize,
        periods_cut: &mut Option<ContentRange>,
    ) -> NgsiResult<Map<String, Value>> {
        let view = &q.entities.view;
        let mut out = Map::new();
        if !view.omit_id {
            out.insert("id".into(), Value::String(he.id.to_string()));
        }
        if !view.omit_type {
            let types: Vec<Value> = he
                .types
                .iter()
                .map(|t| Value::String(ctx.compact(t).into_owned()))
                .collect();
            out.insert(
                "type".into(),
                match types.len() {
                    1 => types.into_iter().next().unwrap_or(Value::Null),
                    _ => Value::Array(types),
                },
            );
        }
        let opts = RenderOptions {
            format: Format::Normalized,
            sys_attrs: view.sys_attrs,
            lang: view.lang.as_deref(),
            ..RenderOptions::default()
        };
        // The concise temporal representation: each instance in the concise
        // form (no "type" where the value member tells the kind).
        let instance_opts = RenderOptions {
            format: match view.format {
                Format::Concise => Format::Concise,
                _ => Format::Normalized,
            },
            ..opts
        };
        let mut attrs: Vec<(String, Vec<Value>)> = Vec::new();
        // Each name's place in `attrs` (an entity may have thousands).
        let mut places: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut push = |name: &Iri, v: Vec<Value>| {
            let key = ctx.compact(name).into_owned();
            match places.get(&key) {
                Some(&i) => attrs[i].1.extend(v),
                None => {
                    places.insert(key.clone(), attrs.len());
                    attrs.push((key, v));
                }
            }
        };
        match q.format {
            TemporalFormat::Aggregated => {
                let mut all = Vec::new();
                let shown = q.shown_attrs(he);
                let datasets = q.shown_datasets();
                // A Scope is no number to aggregate.
                let selected: Vec<(&Iri, &Option<Box<str>>)> = he
                    .attrs
                    .iter()
                    .filter(|(attr, dataset)| {
                        **attr != *store::history::SCOPE
                            && shown.as_ref().is_none_or(|keep| keep.contains(attr))
                            && datasets.as_ref().is_none_or(|want| {
                                want.iter().any(|w| w.as_deref() == dataset.as_deref())
                            })
                    })
                    .map(|(a, d)| (a, d))
                    .collect();
                // Each attribute is labelled with its kind (clause
                // 4.5.19.0): that of its instances read here, else of the
                // entity as it is now, else of its last instance.
                let live = self.store.get(tenant, &he.id);
                let known_kind = |attr: &Iri, dataset: &Option<Box<str>>| {
                    history
                        .iter()
                        .find(|h| h.attr == *attr && h.dataset_id == *dataset)
                        .and_then(|h| {
                            h.instances
                                .iter()
                                .find_map(|i| i.attr.as_ref().map(|a| a.value.kind_name()))
                        })
                        .or_else(|| {
                            let list = live.as_ref()?.attr(attr)?;
                            let a = list
                                .iter()
                                .find(|a| a.dataset_id.as_deref() == dataset.as_deref())?;
                            Some(a.value.kind_name())
                        })
                };
                let unknown: Vec<Iri> = selected
                    .iter()
                    .filter(|(a, d)| known_kind(a, d).is_none())
                    .map(|(a, _)| (*a).clone())
                    .collect();
                let last_ones = if unknown.is_empty() {
                    Vec::new()
                } else {
                    let req = HistoryRequest {
                        attrs: Some(unknown),
                        last_n: Some(1),
                        limit: 1,
                        ..HistoryRequest::default()
                    };
                    self.store
                        .history(tenant, &he.id, req)
                        .await?
                        .unwrap_or_default()
                };
                let kind_of = |attr: &Iri, dataset: &Option<Box<str>>| -> &'static str {
                    known_kind(attr, dataset)
                        .or_else(|| {
                            let h = last_ones
                                .iter()
                                .find(|h| h.attr == *attr && h.dataset_id == *dataset)?;
                            let i = h.instances.last()?;
                            i.attr
                                .as_ref()
                                .map(|a| a.value.kind_name())
                                .or(i.deleted_kind)
                        })
                        .unwrap_or("Property")
                };
                for (attr, dataset) in selected.iter().copied() {
                    let distinct = q.methods.contains(&AggrMethod::DistinctCount);
                    // Instances merged with what sources answered are
                    // aggregated here; otherwise the store aggregates.
                    let buckets = if history.is_empty() {
                        self.store
                            .aggregate(
                                tenant,
                                &he.id,
                                attr.clone(),
                                dataset.clone(),
                                AggregateRequest {
                                    range: q.range,
                                    period: q.period,
                                    distinct,
                                },
                            )
                            .await?
                    } else {
                        history
                            .iter()
                            .find(|h| h.attr == *attr && h.dataset_id == *dataset)
                            .map(|h| {
                                store::history::aggregate_instances(
                                    &h.instances,
                                    &q.range,
                                    q.period.as_ref(),
                                    distinct,
                                )
                            })
                            .unwrap_or_default()
                    };
                    // "If ... any of the requested Attributes is not
                    // eligible for at least one of the aggregation methods
                    // ..., an error of type InvalidRequest" (5.7.4.4).
                    let classes = buckets.iter().fold(0, |c, b| c | b.classes);
                    if let Some(m) = q.methods.iter().find(|m| classes & !m.applies_to() != 0) {
                        return Err(NgsiError::invalid_request(format!(
                            "{} cannot be aggregated with {}: it holds {} (clause 4.5.19.1)",
                            ctx.compact(attr),
                            m.name(),
                            class_names(classes & !m.applies_to())
                        )));
                    }
                    all.push((attr, dataset, kind_of(attr, dataset), buckets));
                }
                // The end of the first cut attribute's last kept period.
                let cut_at = all
                    .iter()
                    .filter(|(.., b)| b.len() > limit)
                    .map(|(.., b)| b[limit - 1].end)
                    .min();
                if let Some(end) = cut_at {
                    let start = all
                        .iter()
                        .filter_map(|(.., b)| b.first().map(|x| x.start))
                        .min()
                        .unwrap_or(end);
                    for (.., b) in &mut all {
                        b.retain(|x| x.end <= end);
                    }
                    let narrowed = match *periods_cut {
                        Some(r) => ContentRange {
                            start: r.start.min(start),
                            end: r.end.min(end),
                            size: None,
                        },
                        None => ContentRange {
                            start,
                            end,
                            size: None,
                        },
                    };
                    *periods_cut = Some(narrowed);
                }
                for (attr, dataset, kind, buckets) in all {
                    let mut m = Map::new();
                    m.insert("type".into(), Value::String(kind.into()));
                    if let Some(d) = dataset {
                        m.insert("datasetId".into(), Value::String(d.to_string()));
                    }
                    for method in &q.methods {
                        let series: Vec<Value> = buckets
                            .iter()
                            .map(|b| {
                                json!([
                                    method.value(b),
                                    format_instant(b.start),
                                    format_instant(b.end)
                                ])
                            })
                            .collect();
                        m.insert(method.name().into(), Value::Array(series));
                    }
                    push(attr, vec![Value::Object(m)]);
                }
            }
            TemporalFormat::TemporalValues => {
                // With `lang`, a LanguageProperty is shown as the Property
                // of its one language (clause 4.15).
                let as_shown = |kind: &'static str| match kind {
                    "LanguageProperty" if opts.lang.is_some() => "Property",
                    k => k,
                };
                for h in history {
                    let kind = as_shown(
                        h.instances
                            .iter()
                            .find_map(|i| {
                                i.attr
                                    .as_ref()
                                    .map(|a| a.value.kind_name())
                                    .or(i.deleted_kind)
                            })
                            .unwrap_or("Property"),
                    );
                    let plural = value_members(kind).1;
                    let pairs: Vec<Value> = h
                        .instances
                        .iter()
                        .map(|i| {
                            // Each instance by its own kind: an attribute
                            // may change kind over time.
                            let v = match &i.attr {
                                Some(a) => {
                                    let own = as_shown(a.value.kind_name());
                                    let rendered = render_attribute(a, ctx, &opts);
                                    simplified_value(rendered, value_members(own).0)
                                }
                                None => {
                                    let own = as_shown(i.deleted_kind.unwrap_or(kind));
                                    let (m, null) = deleted_value(own);
                                    let mut one = Map::new();
                                    one.insert(m.into(), null);
                                    simplified_value(Value::Object(one), value_members(own).0)
                                }
                            };
                            json!([v, format_instant(time_of(i, q.range.property))])
                        })
                        .collect();
                    let mut m = Map::new();
                    m.insert("type".into(), Value::String(kind.into()));
                    if let Some(d) = &h.dataset_id {
                        m.insert("datasetId".into(), Value::String(d.to_string()));
                    }
                    m.insert(plural.into(), Value::Array(pairs));
                    push(&h.attr, vec![Value::Object(m)]);
                }
            }
            TemporalFormat::Normalized => {
                for h in history {
                    let rendered: Vec<Value> = h
                        .instances
                        .iter()
                        .map(|i| render_instance(i, h.dataset_id.as_deref(), ctx, &instance_opts))
                        .collect();
                    push(&h.attr, rendered);
                }
            }
        }
        let single_object = q.format != TemporalFormat::Normalized;
        for (key, mut list) in attrs {
            let v = if single_object && list.len() == 1 {
                list.pop().unwrap_or(Value::Null)
            } else {
                Value::Array(list)
            };
            out.insert(key, v);
        }
        Ok(out)
    }

    /// Create or Update Temporal Representation of an Entity (clause
    /// 5.6.11): adds the instances of the body; `true` when the temporal
    /// entity is new.
    pub async fn create_temporal(
        &self,
        tenant: &str,
        ctx: &Ctx,
        body: &Value,
    ) -> NgsiResult<(Arc<str>, bool)> {
        let Value::Object(map) = body else {
            return Err(bad("a temporal entity must be a JSON object"));
        };
        let mut head = Map::new();
        for k in ["id", "@id", "type", "@type"] {
            if let Some(v) = map.get(k) {
                head.insert(k.into(), v.clone());
            }
        }
        let entity = parse_entity(
            &Value::Object(head),
            ctx,
            EntityRequirements {
                id: true,
                types: true,
            },
            self.config.parse,
        )?;
        let attrs = self.temporal_attrs(ctx, map)?;
        // An update adds type names to those the entity had (clause
        // 5.6.11.4).
        let mut types = entity.types;
        if let Some(he) = self.store.history_entity(tenant, &entity.id) {
            let mut all = he.types;
            ngsi_model::entity::extend_unique(&mut all, types);
            types = all;
        }
        let created = self
            .store
            .write_history(
                tenant,
                HistoryOp::Add {
                    id: entity.id.clone(),
                    types,
                    attrs,
                },
            )
            .await??;
        Ok((entity.id, created))
    }

    /// Add Attributes to Temporal Representation of an Entity (clause
    /// 5.6.12).
    pub async fn append_temporal(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &Value,
    ) -> NgsiResult<()> {
        check_id(id)?;
        self.check_tenant(tenant)?;
        crate::check_fragment(body, id)?;
        let Value::Object(map) = body else {
            return Err(bad("an entity fragment must be a JSON object"));
        };
        let Some(he) = self.store.history_entity(tenant, id) else {
            return Err(NgsiError::not_found(format!("entity {id} has no history")));
        };
        // Type names the entity lacks are added (clause 5.6.12.4).
        let mut types = Vec::new();
        if map.contains_key("type") || map.contains_key("@type") {
            let mut head = Map::new();
            for k in ["type", "@type"] {
                if let Some(v) = map.get(k) {
                    head.insert(k.into(), v.clone());
                }
            }
            let named = parse_entity(
                &Value::Object(head),
                ctx,
                EntityRequirements::default(),
                self.config.parse,
            )?
            .types;
            if named.iter().any(|t| !he.types.contains(t)) {
                types = he.types;
                ngsi_model::entity::extend_unique(&mut types, named);
            }
        }
        let attrs = self.temporal_attrs(ctx, map)?;
        self.store
            .write_history(
                tenant,
                HistoryOp::Add {
                    id: id.into(),
                    types,
                    attrs,
                },
            )
            .await??;
        Ok(())
    }

    /// Parses the attributes of a temporal entity fragment: each attribute
    /// holds one instance or an array of instances (any datasetIds).
    fn temporal_attrs(
        &self,
        ctx: &Ctx,
        map: &Map<String, Value>,
    ) -> NgsiResult<Vec<(Iri, Vec<Attribute>)>> {
        let now = now_micros();
        let mut out: Vec<(Iri, Vec<Attribute>)> = Vec::new();
        for (key, value) in map {
            if matches!(
                key.as_str(),
                "id" | "@id" | "type" | "@type" | "@context" | "createdAt" | "modifiedAt"
            ) {
                continue;
            }
            if key == "scope" {
                out.push((iri(store::history::SCOPE), temporal_scope(value, now)?));
                continue;
            }
            let items: Vec<&Value> = match value {
                Value::Array(items) if !items.is_empty() => items.iter().collect(),
                Value::Array(_) => {
                    return Err(bad(format!("attribute {key} has no instances")));
                }
                other => vec![other],
            };
            const NULL: &str = ngsi_model::entity::core_iri::NULL;
            for item in items {
                // The NGSI-LD Null is no member value (clause 5.5.4, ETSI
                // TP 5611_01); an instance whose value is the Null records
                // a deleted value (clause 4.5.7) and is kept as given.
                if item.as_str() == Some(NULL) {
                    return Err(bad(format!(
                        "{key}: the NGSI-LD Null is only allowed as the value of a temporal instance"
                    )));
                }
                let mut item = item.clone();
                let mut null_value = false;
                if let Value::Object(m) = &mut item {
                    // Set by the broker, never taken from the client.
                    for k in ["instanceId", "createdAt", "modifiedAt", "deletedAt"] {
                        m.remove(k);
                    }
                    if m.get("value").and_then(Value::as_str) == Some(NULL) {
                        m.insert("value".into(), Value::Bool(false));
                        null_value = true;
                    }
                }
                let mut one = Map::new();
                one.insert(key.clone(), item);
                for (name, instances) in parse_attributes(
                    one.iter().map(|(k, v)| (k.as_str(), v)),
                    ctx,
                    self.config.parse,
                )? {
                    for mut inst in instances {
                        inst.stamp(now, now);
                        if null_value && let AttrValue::Property(v) = &mut inst.value {
                            *v = Value::String(NULL.into());
                        }
                        match out.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, list)) => list.push(inst),
                            None => out.push((name.clone(), vec![inst])),
                        }
                    }
                }
            }
        }
        for (_, list) in &mut out {
            last_of_each_instant(list);
        }
        Ok(out)
    }

    /// Delete Temporal Representation of an Entity (clause 5.6.16).
    pub async fn delete_temporal(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        check_id(id)?;
        self.check_tenant(tenant)?;
        self.store
            .write_history(tenant, HistoryOp::DeleteEntity { id: id.into() })
            .await??;
        Ok(())
    }

    /// Delete Attribute from Temporal Representation of an Entity (clause
    /// 5.6.13): the default instance, one datasetId, or all (`deleteAll`).
    pub async fn delete_temporal_attr(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        attr: &str,
        dataset_id: Option<&str>,
        delete_all: bool,
    ) -> NgsiResult<()> {
        check_id(id)?;
        check_attr_name(attr)?;
        self.check_tenant(tenant)?;
        if let Some(d) = dataset_id {
            ngsi_model::parse::check_dataset_id(d)?;
        }
        let dataset = if delete_all {
            None
        } else {
            Some(dataset_id.filter(|d| *d != "@none").map(Into::into))
        };
        self.store
            .write_history(
                tenant,
                HistoryOp::DeleteAttr {
                    id: id.into(),
                    attr: iri(&ctx.expand(attr)),
                    dataset,
                },
            )
            .await??;
        Ok(())
    }

    /// Modify Attribute Instance in Temporal Representation of an Entity
    /// (clause 5.6.14): replaces the content of one instance.
    pub async fn modify_temporal_instance(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        attr: &str,
        instance_id: &str,
        body: &Value,
    ) -> NgsiResult<()> {
        check_id(id)?;
        check_attr_name(attr)?;
        self.check_tenant(tenant)?;
        let instance = parse_instance_id(instance_id)?;
        let Value::Object(fragment) = body else {
            return Err(bad("an attribute instance must be a JSON object"));
        };
        // The body is an EntityTemporal fragment naming the attribute
        // (`{"speed": [{...}]}`, clause 6.22.3.1) and no other, or the
        // instance itself (it has a value member).
        let expanded = ctx.expand(attr);
        let named = fragment
            .keys()
            .find(|k| *k == attr || ctx.expand(k) == expanded);
        let inner = match named {
            Some(key) => {
                if let Some(other) = fragment.keys().find(|k| {
                    *k != key && !matches!(k.as_str(), "@context" | "id" | "@id" | "type" | "@type")
                }) {
                    return Err(bad(format!(
                        "the fragment names {other:?} too: it replaces one instance of {attr}"
                    )));
                }
                fragment[key].clone()
            }
            None if ngsi_model::parse::VALUE_MEMBERS
                .iter()
                .any(|m| fragment.contains_key(*m)) =>
            {
                let mut m = fragment.clone();
                m.remove("@context");
                Value::Object(m)
            }
            None => {
                return Err(bad(format!(
                    "the body must be a fragment naming attribute {attr} with the instance"
                )));
            }
        };
        let mut map = Map::new();
        map.insert(attr.to_string(), inner);
        let mut parsed = self.temporal_attrs(ctx, &map)?;
        let value = match parsed.pop() {
            Some((_, mut list)) if list.len() == 1 && parsed.is_empty() => list.remove(0),
            _ => return Err(bad("the body must hold exactly one attribute instance")),
        };
        if let AttrValue::Property(Value::String(s)) = &value.value
            && s == ngsi_model::entity::core_iri::NULL
        {
            return Err(bad("an instance cannot be set to the NGSI-LD Null"));
        }
        self.store
            .write_history(
                tenant,
                HistoryOp::ModifyInstance {
                    id: id.into(),
                    attr: iri(&ctx.expand(attr)),
                    instance,
                    value: Box::new(value),
                },
            )
            .await??;
        Ok(())
    }

    /// Delete Attribute Instance from Temporal Representation of an Entity
    /// (clause 5.6.15).
    pub async fn delete_temporal_instance(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        attr: &str,
        instance_id: &str,
    ) -> NgsiResult<()> {
        check_id(id)?;
        check_attr_name(attr)?;
        self.check_tenant(tenant)?;
        let instance = parse_instance_id(instance_id)?;
        self.store
            .write_history(
                tenant,
                HistoryOp::DeleteInstance {
                    id: id.into(),
                    attr: iri(&ctx.expand(attr)),
                    instance,
                },
            )
            .await??;
        Ok(())
    }
}

/// The instances of the Scope in a temporal entity (clause 4.5.6): the
/// scope as an entity has it (a string or an array of strings: one
/// instance, recorded now), or Property instances whose value is one.
fn temporal_scope(value: &Value, now: i64) -> NgsiResult<Vec<Attribute>> {
    fn scope_value(v: &Value) -> NgsiResult<Value> {
        let check =
            |s: &str| ngsi_query::validate_scope(s).map_err(|e| bad(format!("invalid scope: {e}")));
        match v {
            Value::String(s) => check(s).map(|()| v.clone()),
            Value::Array(items) if !items.is_empty() => {
                for i in items {
                    check(i.as_str().ok_or_else(|| bad("a scope must be a string"))?)?;
                }
                Ok(v.clone())
            }
            _ => Err(bad("a scope must be a string or an array of strings")),
        }
    }
    let instance = |value: Value, observed: Option<&Value>| -> NgsiResult<Attribute> {
        let mut a = Attribute::new(AttrValue::Property(value));
        a.stamp(now, now);
        if let Some(o) = observed {
            let text = o
                .as_str()
                .ok_or_else(|| bad("observedAt must be a DateTime"))?;
            datetime(text, "observedAt")?;
            a.observed_at = Some(text.into());
        }
        Ok(a)
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) if items.iter().all(Value::is_object) => items.iter().collect(),
        Value::Object(_) => vec![value],
        plain => return Ok(vec![instance(scope_value(plain)?, None)?]),
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Object(m) = item else {
                return Err(bad("a scope instance must be an object"));
            };
            if let Some(t) = m.get("type")
                && t != "Property"
            {
                return Err(bad("a scope instance is a Property"));
            }
            let v = m
                .get("value")
                .ok_or_else(|| bad("a scope instance needs a value"))?;
            instance(scope_value(v)?, m.get("observedAt"))
        })
        .collect()
}

/// Where the Scope of an entity matched a temporal query's scopeQ: the
/// intervals (of the instants) and the Scope instances valid in them.
pub(crate) struct ScopeWindows {
    scope: Iri,
    intervals: Vec<(i64, i64)>,
    instances: Vec<TemporalInstance>,
}

impl ScopeWindows {
    /// Keeps the instances of the other attributes that lie in the
    /// intervals, and shows the Scope instances valid in them, also the
    /// one set before the range (annex C.5.16).
    fn restrict(self, history: &mut Vec<AttrHistory>, q: &TemporalQuery) {
        let p = q.range.property;
        let inside = |t: i64| self.intervals.iter().any(|(a, b)| *a <= t && t < *b);
        let mut scope_shown = false;
        for h in history.iter_mut() {
            if h.attr == self.scope {
                h.instances.clone_from(&self.instances);
                scope_shown = true;
            } else {
                h.instances.retain(|i| inside(time_of(i, p)));
            }
        }
        if !scope_shown && !q.entities.view.omit_scope {
            history.push(AttrHistory {
                attr: self.scope,
                dataset_id: None,
                instances: self.instances,
                truncated: false,
            });
        }
    }
}

/// The scopes an instance of the Scope holds (none for a deletion).
fn scope_values(i: &TemporalInstance) -> Vec<String> {
    match i.attr.as_ref().map(|a| &a.value) {
        Some(AttrValue::Property(Value::String(s))) => vec![s.clone()],
        Some(AttrValue::Property(Value::Array(items))) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The fewest and most candidates of a temporal query whose time range is
/// tested in one store read.
const MIN_RANGE_CHUNK: usize = 16;
const MAX_RANGE_CHUNK: usize = 1024;

/// The instances of one series read at once by [`HistoryFilter`].
const FILTER_PAGE: usize = 10_000;

/// `q` and the geo-query of a temporal query, evaluated over the pages of
/// an entity's instances in the time range. Each term of `q` is decided
/// over all pages (some instance satisfies it; for `!attr`, no page has an
/// instance), then the terms are combined as the query says.
struct HistoryFilter<'a> {
    query: &'a EntityQuery,
    /// The attributes the filters name (expanded).
    attrs: Vec<Iri>,
    /// The terms of `q`, depth first.
    terms: Vec<TermState>,
    /// Whether some page satisfied the geo-query.
    geo: bool,
}

/// One term of `q` as a query of its own, and whether it holds so far.
struct TermState {
    term: Query,
    /// `!attr`: holds while no page has an instance.
    negative: bool,
    holds: bool,
}

impl<'a> HistoryFilter<'a> {
    fn new(query: &'a EntityQuery) -> Option<Self> {
        fn collect(q: &Query, out: &mut Vec<TermState>) {
            match q {
                Query::And(items) | Query::Or(items) => items.iter().for_each(|i| collect(i, out)),
                Query::Term(t) => {
                    let negative = matches!(t.predicate, Predicate::NotExists);
                    out.push(TermState {
                        term: Query::Term(t.clone()),
                        negative,
                        holds: negative,
                    });
                }
            }
        }
        if query.q.is_none() && query.geo.is_none() {
            return None;
        }
        let mut terms = Vec::new();
        let mut attrs: Vec<Iri> = Vec::new();
        if let Some(q) = &query.q {
            collect(q, &mut terms);
            for path in q.paths() {
                let a = iri(&path.attr);
                if !attrs.contains(&a) {
                    attrs.push(a);
                }
            }
        }
        if let Some((_, prop)) = &query.geo
            && !attrs.contains(prop)
        {
            attrs.push(prop.clone());
        }
        Some(Self {
            query,
            attrs,
            terms,
            geo: query.geo.is_none(),
        })
    }

    /// Takes the instances of one page into account.
    fn add_page(&mut self, he: &HistoryEntity, page: &[AttrHistory]) {
        let mut entity = ngsi_model::Entity {
            id: he.id.clone(),
            types: he.types.clone(),
            scopes: Vec::new(),
            attrs: Vec::new(),
            created_at: 0,
            modified_at: 0,
            expires_at: None,
        };
        for h in page {
            // Deletions are no values: they satisfy no term.
            let instances = h.instances.iter().filter_map(|i| {
                i.attr.as_ref().map(|a| {
                    let mut a = a.clone();
                    a.dataset_id = h.dataset_id.as_deref().map(Into::into);
                    a
                })
            });
            match entity.attrs.iter_mut().find(|(n, _)| *n == h.attr) {
                Some((_, list)) => list.extend(instances),
                None => entity.attrs.push((h.attr.clone(), instances.collect())),
            }
        }
        entity.attrs.retain(|(_, list)| !list.is_empty());
        let target = crate::target::EntityTarget(&entity);
        for t in &mut self.terms {
            let here = t.term.matches(&target);
            t.holds = if t.negative {
                t.holds && here
            } else {
                t.holds || here
            };
        }
        self.geo = self.geo || self.query.matches_geo(&entity);
    }

    /// Whether further pages cannot change the result: every term is
    /// positive (so results only turn true) and the result already holds.
    fn decided(&self) -> bool {
        self.terms.iter().all(|t| !t.negative) && self.result()
    }

    /// Whether the filters hold on the pages seen.
    fn result(&self) -> bool {
        fn combine(q: &Query, terms: &[TermState], i: &mut usize) -> bool {
            // Every operand is visited so that `i` follows the depth-first
            // order of `terms`.
            let mut operands = |items: &[Query]| -> Vec<bool> {
                items.iter().map(|x| combine(x, terms, i)).collect()
            };
            match q {
                Query::And(items) => operands(items).into_iter().all(|b| b),
                Query::Or(items) => operands(items).into_iter().any(|b| b),
                Query::Term(_) => {
                    let holds = terms.get(*i).is_some_and(|t| t.holds);
                    *i += 1;
                    holds
                }
            }
        }
        let q = self
            .query
            .q
            .as_ref()
            .is_none_or(|q| combine(q, &self.terms, &mut 0));
        q && self.geo
    }
}

/// The member and value that represent a deleted attribute of `kind`
/// (clause 4.5.7, the NGSI-LD Null of each kind: `object` of a
/// Relationship, `languageMap` `{"@none": null}` of a LanguageProperty,
/// and so on; as deletions are notified).
fn deleted_value(kind: &str) -> (&'static str, Value) {
    const NULL: &str = ngsi_model::entity::core_iri::NULL;
    match kind {
        "Relationship" => ("object", json!(NULL)),
        "ListRelationship" => ("objectList", json!(NULL)),
        "LanguageProperty" => ("languageMap", json!({"@none": NULL})),
        "JsonProperty" => ("json", json!(NULL)),
        "VocabProperty" => ("vocab", json!(NULL)),
        "ListProperty" => ("valueList", json!(NULL)),
        _ => ("value", json!(NULL)),
    }
}

/// One instance in the normalized temporal representation: the attribute
/// with its instanceId; a deletion as the NGSI-LD Null of its kind with
/// deletedAt.
fn render_instance(
    i: &TemporalInstance,
    dataset: Option<&str>,
    ctx: &Ctx,
    opts: &RenderOptions,
) -> Value {
    let mut m = match &i.attr {
        Some(a) => {
            let mut a = a.clone();
            a.dataset_id = dataset.map(Into::into);
            match render_attribute(&a, ctx, opts) {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("value".into(), other);
                    m
                }
            }
        }
        None => {
            let mut m = Map::new();
            let kind = i.deleted_kind.unwrap_or("Property");
            if opts.format != Format::Concise {
                m.insert("type".into(), Value::String(kind.into()));
            }
            let (member, null) = deleted_value(kind);
            m.insert(member.into(), null);
            if let Some(d) = dataset {
                m.insert("datasetId".into(), Value::String(d.into()));
            }
            m.insert(
                "deletedAt".into(),
                Value::String(format_micros(i.modified_at)),
            );
            m
        }
    };
    let instance_id = match &i.source_instance_id {
        Some(given) => given.to_string(),
        None => instance_uri(i.instance_id),
    };
    m.insert("instanceId".into(), Value::String(instance_id));
    Value::Object(m)
}

/// Keeps one instance per attribute instance (datasetId) and observedAt:
/// the last given wins, as it replaces a recorded one (see the store).
/// Instances without observedAt are all kept. One pass from the end with a
/// set of what was seen: a request of thousands of instances of one
/// attribute (the temporal API's batch load) scanned the rest of the list
/// per instance before.
/// What identifies the instant of an `observedAt`: its time when it reads
/// as one, else its text.
fn instant_key(t: &str) -> Result<i64, &str> {
    ngsi_model::time::parse_datetime(t).ok_or(t)
}

fn last_of_each_instant(list: &mut Vec<Attribute>) {
    if list.len() < 2 {
        return;
    }
    let keep: Vec<bool> = {
        let mut seen = std::collections::HashSet::with_capacity(list.len());
        let mut keep = vec![true; list.len()];
        for (i, a) in list.iter().enumerate().rev() {
            if let Some(t) = a.observed_at.as_deref() {
                // The instant, not its spelling: `…00Z` and `…00.000Z` are one.
                keep[i] = seen.insert((a.dataset_id.as_deref(), instant_key(t)));
            }
        }
        keep
    };
    let mut flags = keep.into_iter();
    list.retain(|_| flags.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reading `last_of_each_instant` replaced: for each instance, a
    /// scan of the ones after it.
    fn reference(list: &mut Vec<Attribute>) {
        let mut keep = vec![true; list.len()];
        for (i, a) in list.iter().enumerate() {
            keep[i] = a.observed_at.is_none()
                || !list[i + 1..].iter().any(|b| {
                    b.dataset_id == a.dataset_id
                        && b.observed_at.as_deref().map(instant_key)
                            == a.observed_at.as_deref().map(instant_key)
                });
        }
        let mut flags = keep.into_iter();
        list.retain(|_| flags.next().unwrap_or(true));
    }

    /// One instant written three ways is one instant: the last is kept.
    #[test]
    fn spellings_of_one_instant_are_one_instant() {
        let mut list: Vec<Attribute> = [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T08:00:00+08:00",
            "2026-01-01T00:00:01Z",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut a = Attribute::new(AttrValue::Property(serde_json::json!(i)));
            a.observed_at = Some((*t).into());
            a
        })
        .collect();
        last_of_each_instant(&mut list);
        let kept: Vec<_> = list.iter().map(|a| a.value.clone()).collect();
        assert_eq!(
            kept,
            [
                AttrValue::Property(serde_json::json!(2)),
                AttrValue::Property(serde_json::json!(3))
            ]
        );
    }

    proptest! {
        #[test]
        fn the_last_instance_of_each_instant_is_kept_as_by_the_scan(
            items in prop::collection::vec((prop::option::of(0u8..3), prop::option::of(0u8..3)), 0..40)
        ) {
            let list: Vec<Attribute> = items
                .iter()
                .enumerate()
                .map(|(i, (d, t))| {
                    let mut a = Attribute::new(AttrValue::Property(serde_json::json!(i)));
                    a.dataset_id = d.map(|d| format!("urn:d:{d}").into());
                    // Two spellings of each instant.
                    a.observed_at = t.map(|t| match i % 2 {
                        0 => format!("2024-01-01T00:00:0{t}Z"),
                        _ => format!("2024-01-01T00:00:0{t}.000Z"),
                    }.into());
                    a
                })
                .collect();
            let (mut fast, mut slow) = (list.clone(), list);
            last_of_each_instant(&mut fast);
            reference(&mut slow);
            prop_assert_eq!(fast, slow);
        }
    }
}
