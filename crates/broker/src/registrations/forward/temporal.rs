//! Retrieve Temporal Evolution of an Entity and Query Temporal Evolution of
//! Entities forwarded to registered context sources (clauses 5.7.3.4,
//! 5.7.4.4). Only registrations that name `retrieveTemporal` or
//! `queryTemporal` among their `operations` are asked: no operation group
//! holds them (Table 4.20-2). A source is asked for its plain instances with
//! their system times (never a representation, aggregation or paging), and
//! the instances of every place are merged here before lastN and the
//! representation are applied to the merged series.

use std::sync::Arc;

use ngsi_model::parse::{ParseLimits, parse_attributes};
use ngsi_model::{AttrValue, Iri, NgsiResult, Terms, iri};
use serde_json::{Map, Value};
use store::{AttrHistory, TemporalInstance};

use super::{Failure, Forwarder, Origin, Prepared, RegistrationQuery, passed_on_if};
use crate::registrations::model::{Mode, Registration};
use crate::temporal::{ContentRange, TemporalFormat, TemporalQuery, TemporalResult};
use crate::{Broker, Ctx};

/// The time range of a temporal read, which a source gets besides the
/// selection of the read (Retrieve Entity's or Query Entities'
/// parameters): never paging, a representation or an aggregation, since the
/// merged series is paged and rendered here.
const TIME_RANGE_PARAMS: &[&str] = &["timerel", "timeAt", "endTimeAt", "timeproperty"];

/// The members of a Query document (clause 5.2.23) a source gets with a
/// forwarded `POST /temporal/entityOperations/query`: the selection and the
/// time range, as the GET form passes on, without `aggrParams`, the
/// projections, Linked Entity retrieval, EntityMap or ordering members.
const QUERY_MEMBERS: &[&str] = &[
    "@context",
    "type",
    "entities",
    "attrs",
    "q",
    "geoQ",
    "scopeQ",
    "temporalQ",
    "datasetId",
    "expandValues",
];

/// The members of `temporalQ` (clause 5.2.21) a source gets: the time range
/// (never an aggregation, which is done here on the merged series; `lastN`
/// is set from the query).
const TEMPORAL_Q_MEMBERS: &[&str] = &["timerel", "timeAt", "endTimeAt", "timeproperty"];

/// The Query document a source gets for a POST temporal query: `body` with
/// only the members in [`QUERY_MEMBERS`] and, in `temporalQ`, those in
/// [`TEMPORAL_Q_MEMBERS`] and `last_n`.
fn forwarded_query_body(body: &Value, last_n: Option<usize>) -> Value {
    let Value::Object(m) = body else {
        return body.clone();
    };
    let mut out: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| QUERY_MEMBERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value::Object(tq)) = out.get_mut("temporalQ") {
        tq.retain(|k, _| TEMPORAL_Q_MEMBERS.contains(&k.as_str()));
        if let Some(n) = last_n {
            tq.insert("lastN".into(), Value::from(n));
        }
    }
    Value::Object(out)
}

/// The number of last instances a source is asked for: none for the
/// aggregated representation, which aggregates the whole merged series.
fn source_last_n(q: &TemporalQuery) -> Option<usize> {
    q.last_n.filter(|_| q.format != TemporalFormat::Aggregated)
}

/// The parameters of `raw` in `selection` or the time range, and `lastN`
/// unless the query aggregates.
fn temporal_params(raw: Option<&str>, selection: &[&str], q: &TemporalQuery) -> Vec<String> {
    let mut params = passed_on_if(raw, |k| {
        selection.contains(&k) || TIME_RANGE_PARAMS.contains(&k)
    });
    if let Some(n) = source_last_n(q) {
        params.push(format!("lastN={n}"));
    }
    params.push("options=sysAttrs".into());
    params
}

/// The temporal evolution of one entity as a source answered it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteHistory {
    /// The entity id.
    pub(crate) id: Arc<str>,
    /// Its types (expanded).
    pub(crate) types: Vec<Iri>,
    /// Its attribute instances, by attribute and datasetId.
    pub(crate) attrs: Vec<AttrHistory>,
    /// From an auxiliary registration: fills gaps only.
    pub(crate) auxiliary: bool,
}

impl Forwarder {
    /// The request that asks the source of `r` for the temporal evolution
    /// of entity `id`.
    fn retrieve_temporal_request(
        &self,
        r: &Registration,
        id: &str,
        q: &TemporalQuery,
        origin: &Origin<'_>,
        ctx: &Ctx,
        alias: &str,
    ) -> Result<Prepared, Failure> {
        let params = temporal_params(origin.query, super::RETRIEVE_PARAMS, q);
        self.request(
            r,
            &["temporal", "entities", id],
            params,
            None,
            origin,
            ctx,
            alias,
        )
    }

    /// The request that asks the source of `r` for Query Temporal
    /// Evolution: GET with the selection of the client's query string, or
    /// POST `/temporal/entityOperations/query` with the selection members
    /// of the client's Query document.
    fn query_temporal_request(
        &self,
        r: &Registration,
        q: &TemporalQuery,
        origin: &Origin<'_>,
        ctx: &Ctx,
        alias: &str,
    ) -> Result<Prepared, Failure> {
        match origin.body {
            Some(b) => self.request(
                r,
                &["temporal", "entityOperations", "query"],
                vec!["options=sysAttrs".into()],
                Some(
                    forwarded_query_body(b, source_last_n(q))
                        .to_string()
                        .into_bytes(),
                ),
                origin,
                ctx,
                alias,
            ),
            None => self.request(
                r,
                &["temporal", "entities"],
                temporal_params(origin.query, super::QUERY_PARAMS, q),
                None,
                origin,
                ctx,
                alias,
            ),
        }
    }
}

impl Broker {
    /// Retrieve Temporal Evolution of an Entity (clause 5.7.3.4) with the
    /// registered sources that offer `retrieveTemporal`: the instances held
    /// here and theirs, merged (the aggregated representation aggregates
    /// the merged series). Also answers the `NGSILD-Warning`
    /// values of the sources that failed.
    pub async fn retrieve_temporal_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        q: &TemporalQuery,
        origin: &Origin<'_>,
    ) -> NgsiResult<(Map<String, Value>, Option<ContentRange>, Vec<String>)> {
        crate::check_uri(id, "entity id")?;
        let alias = self.source_alias(tenant);
        let sources = if origin.local || q.local {
            Vec::new()
        } else {
            let view = &q.entities.view;
            let selection = [RegistrationQuery {
                ids: Some(vec![id.to_string()]),
                types: view.type_filter.clone(),
                attrs: view.attrs.clone().filter(|_| view.attrs_given),
                ..Default::default()
            }];
            self.registrations
                .sources(tenant, "retrieveTemporal", &selection, None, origin, &alias)
        };
        if sources.is_empty() {
            let (entity, range) = self.retrieve_temporal(tenant, ctx, id, q).await?;
            return Ok((entity, range, Vec::new()));
        }
        let limits = self.config.parse;
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| f.retrieve_temporal_request(r, id, q, origin, ctx, &alias),
                Forwarder::retrieve,
                |items| parse_temporal_answer(items, Some(id), ctx, limits),
            )
            .await;
        let (remote, warnings) = answers.histories();
        let (entity, range) = self
            .retrieve_temporal_merged(tenant, ctx, id, q, remote)
            .await?;
        Ok((entity, range, warnings))
    }

    /// Query Temporal Evolution of Entities (clause 5.7.4.4) with the
    /// registered sources that offer `queryTemporal`: every entity a source
    /// answers (all its pages) joins the matches held here, instances merged
    /// as for a retrieval, and the union is paged here by id. The
    /// aggregated representation aggregates the merged series; `orderBy`
    /// stays local. The POST form goes to the sources as a POST.
    pub async fn query_temporal_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        q: &TemporalQuery,
        origin: &Origin<'_>,
    ) -> NgsiResult<(TemporalResult, Vec<String>)> {
        let alias = self.source_alias(tenant);
        let sources = if q.local || q.entities.order_by.is_some() || !q.has_selector() {
            Vec::new()
        } else {
            self.registrations.sources(
                tenant,
                "queryTemporal",
                &super::registration_selection(&q.entities),
                q.entities.csf.as_ref(),
                origin,
                &alias,
            )
        };
        if sources.is_empty() {
            return Ok((self.query_temporal(tenant, ctx, q).await?, Vec::new()));
        }
        let limits = self.config.parse;
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| f.query_temporal_request(r, q, origin, ctx, &alias),
                move |f, p| f.query(p, None),
                |items| parse_temporal_answer(items, None, ctx, limits),
            )
            .await;
        let (remote, warnings) = answers.histories();
        let result = self.query_temporal_merged(tenant, ctx, q, remote).await?;
        Ok((result, warnings))
    }
}

impl super::Answers<Vec<RemoteHistory>> {
    /// The histories, each marked with whether its source is auxiliary,
    /// auxiliary ones last (they only fill what nothing else has).
    fn histories(self) -> (Vec<RemoteHistory>, Vec<String>) {
        let mut remote: Vec<RemoteHistory> = Vec::new();
        for (r, histories) in self.answers {
            for mut h in histories {
                h.auxiliary = r.mode == Mode::Auxiliary;
                remote.push(h);
            }
        }
        remote.sort_by_key(|h| h.auxiliary);
        (remote, self.warnings)
    }
}

/// Reads a source's temporal entities (normalized, with system times):
/// with `id`, only that one. A payload with an item that is not a temporal
/// entity is refused whole.
fn parse_temporal_answer(
    items: Vec<Value>,
    id: Option<&str>,
    ctx: &Ctx,
    limits: ParseLimits,
) -> Result<Vec<RemoteHistory>, Failure> {
    let invalid = |what: String| Failure::Invalid(what);
    let mut out = Vec::new();
    for item in items {
        let Value::Object(map) = item else {
            return Err(invalid("a temporal entity must be a JSON object".into()));
        };
        let Some(entity_id) = map.get("id").and_then(Value::as_str) else {
            return Err(invalid("a temporal entity needs an id".into()));
        };
        if id.is_some_and(|id| id != entity_id) {
            continue;
        }
        let types = match map.get("type") {
            Some(Value::String(t)) => vec![iri(&ctx.expand(t))],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .map(|t| iri(&ctx.expand(t)))
                .collect(),
            _ => return Err(invalid("a temporal entity needs a type".into())),
        };
        let mut attrs: Vec<AttrHistory> = Vec::new();
        for (key, value) in &map {
            if matches!(
                key.as_str(),
                "id" | "type" | "@context" | "createdAt" | "modifiedAt" | "deletedAt" | "scope"
            ) {
                continue;
            }
            let list: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for instance in list {
                let (name, inst) = parse_remote_instance(key, instance, ctx, limits)
                    .map_err(|e| invalid(format!("{key}: {}", e.detail)))?;
                let dataset = inst
                    .attr
                    .as_ref()
                    .and_then(|a| a.dataset_id.clone())
                    .or_else(|| {
                        instance
                            .get("datasetId")
                            .and_then(Value::as_str)
                            .map(Into::into)
                    })
                    .map(|d: Arc<str>| Box::<str>::from(&*d));
                match attrs
                    .iter_mut()
                    .find(|h| h.attr == name && h.dataset_id == dataset)
                {
                    Some(h) => h.instances.push(inst),
                    None => attrs.push(AttrHistory {
                        attr: name,
                        dataset_id: dataset,
                        instances: vec![inst],
                        truncated: false,
                    }),
                }
            }
        }
        out.push(RemoteHistory {
            id: Arc::from(entity_id),
            types,
            attrs,
            auxiliary: false,
        });
    }
    Ok(out)
}

/// One instance of a source's temporal representation: an attribute with
/// its times, or a deletion (the NGSI-LD Null of its kind with
/// `deletedAt`).
fn parse_remote_instance(
    key: &str,
    instance: &Value,
    ctx: &Ctx,
    limits: ParseLimits,
) -> NgsiResult<(Iri, TemporalInstance)> {
    let Value::Object(m) = instance else {
        return Err(ngsi_model::NgsiError::bad_data(
            "an instance must be a JSON object",
        ));
    };
    let time = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .and_then(ngsi_model::time::parse_datetime)
    };
    let (observed, modified, created, deleted) = (
        time("observedAt"),
        time("modifiedAt"),
        time("createdAt"),
        time("deletedAt"),
    );
    let source_instance_id = m.get("instanceId").and_then(Value::as_str).map(Into::into);
    let now = ngsi_model::time::now_micros();
    if let Some(deleted_at) = deleted {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("Property");
        let kind = AttrValue::KIND_NAMES
            .into_iter()
            .find(|n| *n == kind)
            .unwrap_or("Property");
        return Ok((
            iri(&ctx.expand(key)),
            TemporalInstance {
                instance_id: 0,
                instant: deleted_at,
                modified_at: deleted_at,
                created_at: created.unwrap_or(deleted_at),
                attr: None,
                deleted_kind: Some(kind),
                source_instance_id,
            },
        ));
    }
    let mut item = m.clone();
    for k in ["instanceId", "createdAt", "modifiedAt", "deletedAt"] {
        item.remove(k);
    }
    let mut one = Map::new();
    one.insert(key.to_string(), Value::Object(item));
    let mut parsed = parse_attributes(one.iter().map(|(k, v)| (k.as_str(), v)), ctx, limits)?;
    let (name, list) = parsed
        .pop()
        .ok_or_else(|| ngsi_model::NgsiError::bad_data("no attribute"))?;
    let mut attr = list
        .iter()
        .next()
        .cloned()
        .ok_or_else(|| ngsi_model::NgsiError::bad_data("no instance"))?;
    let modified_at = modified.or(observed).unwrap_or(now);
    attr.stamp(created.unwrap_or(modified_at), modified_at);
    Ok((
        name,
        TemporalInstance {
            instance_id: 0,
            instant: observed.unwrap_or(modified_at),
            modified_at,
            created_at: created.unwrap_or(modified_at),
            attr: Some(attr),
            deleted_kind: None,
            source_instance_id,
        },
    ))
}
