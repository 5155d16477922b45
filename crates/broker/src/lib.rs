//! The NGSI-LD operations, independent of any transport.
//!
//! Every operation of the API is one method of [`Broker`]. The HTTP server,
//! the simulator's in-process path and (later) MQTT ingestion call the same
//! methods; none of them holds business logic of its own.

mod batch;
mod context;
mod discovery;
pub mod entity_maps;
mod expiry;
pub mod linked;
pub mod order;
mod query;
pub mod registrations;
pub mod snapshots;
pub mod subscriptions;
mod target;
mod temporal;
mod unrestored;

use std::sync::Arc;

use ngsi_model::parse::{EntityRequirements, ParseLimits, parse_attribute, parse_entity};
use ngsi_model::render::{JsonSink, LinkedEntities, RenderOptions, Sink, ValueSink, write_entity};
use ngsi_model::time::now_micros;
use ngsi_model::update::{self, AttrPatch, UpdateReport};
use ngsi_model::{Entity, ErrorKind, JsonDoc, NgsiError, NgsiResult, Terms, iri};
use ngsi_query::TypeExpr;
use serde_json::{Map, Value};
use store::{Change, Next, Op, Outcome, Store};

pub use batch::{BatchResult, UpsertMode};
pub use context::{BodyKind, Ctx};
pub use linked::Join;
pub use query::{EntityQuery, POST_QUERY_PARAMS, QueryParams, QueryResult, ViewOptions};
pub use temporal::{
    AggrMethod, ContentRange, POST_TEMPORAL_QUERY_PARAMS, TemporalFormat, TemporalParams,
    TemporalQuery, TemporalResult, instance_uri, is_temporal_representation,
};

/// Settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Page size when the client gives no `limit`.
    pub default_limit: usize,
    /// The largest `limit` accepted; above it the spec's TooManyResults.
    pub max_limit: usize,
    /// Limits for parsing documents.
    pub parse: ParseLimits,
    /// Notification delivery: queue depth, retries, timeouts.
    pub notifier: notify::NotifierConfig,
    /// The most instances of one attribute in a temporal answer; beyond it
    /// the answer is partial (206 with Content-Range).
    pub temporal_limit: usize,
    /// This broker's Context Source alias (clause 5.2.40): announced by
    /// `GET /info/sourceIdentity` and added to the `Via` header of the
    /// requests it forwards. Keep it unique among federated brokers.
    pub source_alias: String,
    /// The lifetime and bound of EntityMaps.
    pub entity_maps: entity_maps::EntityMapConfig,
    /// The longest a Snapshot lives (its `snapshotLifetime` is cut to it,
    /// and a Snapshot without one gets it), in microseconds.
    pub snapshot_max_lifetime_micros: i64,
    /// The base URL other brokers reach this one at (`http://host:port`):
    /// the copies of subscriptions at registered sources notify
    /// `{public_url}/wuyang/v1/notifications`. `None`: subscriptions are
    /// not forwarded.
    pub public_url: Option<String>,
    /// How long the relay of distributed subscriptions waits before it
    /// asks a context source that did not answer again.
    pub source_retry: std::time::Duration,
    /// How long a stored subscription or registration that could not be
    /// restored at start-up waits before it is tried again (doubling each
    /// round, up to an hour).
    pub restore_retry: std::time::Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            default_limit: 20,
            max_limit: 1000,
            parse: ParseLimits::default(),
            notifier: notify::NotifierConfig::default(),
            temporal_limit: 1000,
            source_alias: "wuyang".into(),
            entity_maps: entity_maps::EntityMapConfig::default(),
            snapshot_max_lifetime_micros: snapshots::DEFAULT_MAX_LIFETIME_MICROS,
            public_url: None,
            source_retry: std::time::Duration::from_secs(10),
            restore_retry: std::time::Duration::from_secs(60),
        }
    }
}

/// The Context Source alias of a tenant: the broker's alias, then a dot and
/// the tenant name with the bytes that are not token characters
/// percent-encoded, so that it stays an RFC 7230 pseudonym and a valid URN
/// part. The default tenant has the broker's alias.
pub fn tenant_alias(alias: &str, tenant: &str) -> String {
    use std::fmt::Write as _;
    if tenant.is_empty() {
        return alias.to_string();
    }
    let mut out = format!("{alias}.");
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The NGSI-LD service.
pub struct Broker {
    store: Arc<dyn Store>,
    contexts: jsonld::ContextResolver,
    config: BrokerConfig,
    subscriptions: subscriptions::Engine,
    /// Serialises the writes of subscriptions (they are rare).
    subscription_writes: Arc<tokio::sync::Mutex<()>>,
    /// Stored subscriptions and registrations not restored at start-up.
    unrestored: unrestored::Unrestored,
    /// The context source registry.
    registrations: registrations::Registry,
    /// Becomes true once the stored subscriptions are installed.
    restored: tokio::sync::watch::Receiver<bool>,
    /// The tenant that added each hosted @context, by URL (see
    /// [`Broker::context_visible`]).
    hosted_tenants: parking_lot::RwLock<std::collections::HashMap<String, String>>,
    /// The EntityMaps of all tenants (clause 5.14).
    entity_maps: entity_maps::EntityMaps,
    /// The Snapshots of all tenants (clause 5.16).
    snapshots: snapshots::Snapshots,
    /// The copies of subscriptions at registered context sources.
    relay: subscriptions::Relay,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Which instances of an attribute Delete Entity Attribute removes (clause 5.6.5).
#[derive(Debug, Clone, Copy, Default)]
pub struct Instances<'a> {
    /// The instance with this datasetId; `None` (or "@none") is the default instance.
    pub dataset_id: Option<&'a str>,
    /// Every instance, whatever its datasetId.
    pub delete_all: bool,
}

/// The per-attribute result of an update, ready to render (clause 5.2.18).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateResult {
    /// Compacted names of the attributes written.
    pub updated: Vec<String>,
    /// Compacted names of the attributes not written, with the reason.
    pub not_updated: Vec<(String, String)>,
    /// The registration whose source did not write an entry of
    /// `not_updated` (by index; distributed writes).
    pub registrations: Vec<(usize, Arc<str>)>,
}

impl UpdateResult {
    fn from_report(report: UpdateReport, ctx: &Ctx) -> Self {
        Self {
            updated: report
                .updated
                .iter()
                .map(|n| ctx.compact(n).into_owned())
                .collect(),
            not_updated: report
                .not_updated
                .iter()
                .map(|(n, r)| (ctx.compact(n).into_owned(), r.clone()))
                .collect(),
            registrations: Vec::new(),
        }
    }

    /// Whether some attribute was not written (the API answers 207).
    pub fn is_partial(&self) -> bool {
        !self.not_updated.is_empty()
    }

    /// The UpdateResult JSON body.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "updated": self.updated,
            "notUpdated": self.not_updated.iter().enumerate().map(|(i, (n, r))| {
                let mut entry = serde_json::json!({"attributeName": n, "reason": r});
                if let Some((_, id)) = self.registrations.iter().find(|(at, _)| *at == i) {
                    entry["registrationId"] = Value::from(&**id);
                }
                entry
            }).collect::<Vec<_>>(),
        })
    }
}

/// Checks that an entity id taken from a URL is a URI.
pub(crate) fn check_id(id: &str) -> NgsiResult<()> {
    check_uri(id, "entity id")
}

/// A request body that must be a JSON object: `what` names its data type
/// in the error.
fn json_object<'a>(body: &'a Value, what: &str) -> NgsiResult<&'a Map<String, Value>> {
    body.as_object()
        .ok_or_else(|| NgsiError::bad_data(format!("a {what} must be a JSON object")))
}

/// Checks that `id`, a `what` taken from a URL, is a URI.
fn check_uri(id: &str, what: &str) -> NgsiResult<()> {
    if ngsi_model::parse::is_absolute_iri(id) {
        Ok(())
    } else {
        Err(NgsiError::bad_data(format!("{what} {id:?} is not a URI")))
    }
}

/// Every tenant of `store`, the default one (empty name) first even when
/// nothing was written to it: what the records are restored from.
pub(crate) fn tenants_with_default(store: &dyn Store) -> Vec<String> {
    let mut tenants = store.tenants();
    if let Some(at) = tenants.iter().position(String::is_empty) {
        tenants.remove(at);
    }
    tenants.insert(0, String::new());
    tenants
}

fn not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("entity {id} does not exist"))
}

impl Broker {
    /// A broker over `store`, resolving contexts with `contexts`.
    ///
    /// Inside a Tokio runtime this also starts the subscription engine
    /// (notifications, live streams) and restores the stored
    /// subscriptions; without one, subscriptions stay inert.
    pub fn new(
        store: Arc<dyn Store>,
        contexts: jsonld::ContextResolver,
        config: BrokerConfig,
    ) -> Self {
        // The notifier's HTTP client needs the TLS provider installed first.
        jsonld::install_tls_provider();
        let engine = subscriptions::Engine::new(store.clone(), config.notifier.clone());
        let relay = subscriptions::Relay::default();
        let registry =
            registrations::Registry::new(config.notifier.clone(), store.clone(), relay.clone());
        let (restored_tx, restored) = tokio::sync::watch::channel(false);
        let entity_maps = entity_maps::EntityMaps::new(config.entity_maps);
        let snapshots = snapshots::Snapshots::restore(
            store.clone(),
            engine.clone(),
            config.snapshot_max_lifetime_micros,
        );
        let broker = Self {
            store,
            contexts,
            config,
            subscriptions: engine,
            subscription_writes: Arc::default(),
            unrestored: unrestored::Unrestored::default(),
            registrations: registry,
            restored,
            hosted_tenants: parking_lot::RwLock::default(),
            entity_maps,
            snapshots,
            relay,
        };
        broker.restore_hosted_contexts();
        if tokio::runtime::Handle::try_current().is_ok() {
            broker.subscriptions.start();
            broker.registrations.start();
            tokio::spawn(expiry::run(broker.store.clone()));
            broker.relay.start(subscriptions::RelayParts {
                engine: broker.subscriptions.clone(),
                registry: broker.registrations.clone(),
                store: broker.store.clone(),
                alias: broker.config.source_alias.clone(),
                public_url: broker.config.public_url.clone(),
                restored: broker.restored.clone(),
                retry: broker.config.source_retry,
            });
            let parts = unrestored::RetryParts {
                unrestored: broker.unrestored.clone(),
                store: broker.store.clone(),
                contexts: broker.contexts.clone(),
                engine: broker.subscriptions.clone(),
                registry: broker.registrations.clone(),
                relay: broker.relay.clone(),
                subscription_writes: broker.subscription_writes.clone(),
                every: broker.config.restore_retry,
            };
            tokio::spawn(async move {
                let p = &parts;
                registrations::restore(
                    p.store.clone(),
                    p.contexts.clone(),
                    p.registry.clone(),
                    p.unrestored.clone(),
                )
                .await;
                subscriptions::restore(
                    p.store.clone(),
                    p.contexts.clone(),
                    p.engine.clone(),
                    p.unrestored.clone(),
                )
                .await;
                let _ = restored_tx.send(true);
                unrestored::retry(parts).await;
            });
        } else {
            let _ = restored_tx.send(true);
            tracing::warn!("no async runtime: subscriptions are inert");
        }
        broker
    }

    /// Waits until the stored subscriptions are installed: a server answers
    /// requests only after this, so no change goes unnoticed by them.
    pub async fn ready(&self) {
        let mut restored = self.restored.clone();
        let _ = restored.wait_for(|r| *r).await;
    }

    /// Registers the metrics of subscriptions and notification delivery.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.subscriptions.register_metrics(registry);
    }

    /// The store (for metrics and health).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The context resolver (for the @context serving endpoint).
    pub fn contexts(&self) -> &jsonld::ContextResolver {
        &self.contexts
    }

    /// The settings.
    /// The Context Source alias of `tenant` (see [`tenant_alias`]).
    pub fn source_alias(&self, tenant: &str) -> String {
        tenant_alias(&self.config.source_alias, tenant)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// [`Self::check_tenant`] for the resources a tenant may hold without
    /// any entity (subscriptions, registrations): `holds` says whether it
    /// holds some.
    pub(crate) fn check_tenant_holding(&self, tenant: &str, holds: bool) -> NgsiResult<()> {
        if holds {
            Ok(())
        } else {
            self.check_tenant(tenant)
        }
    }

    /// Fails with NonexistentTenant unless `tenant` exists. The default
    /// tenant (empty name) always exists.
    pub fn check_tenant(&self, tenant: &str) -> NgsiResult<()> {
        // A snapshot's tenant exists while its snapshot does, even empty.
        if tenant.is_empty()
            || self.store.tenant_exists(tenant)
            || snapshots::owner_of(tenant).is_some()
        {
            Ok(())
        } else {
            Err(NgsiError::new(
                ErrorKind::NonexistentTenant,
                format!("tenant {tenant} does not exist"),
            ))
        }
    }

    async fn write_one(&self, tenant: &str, op: Op) -> NgsiResult<Outcome> {
        let mut results = self
            .store
            .write(tenant, vec![expiry::transient(op)])
            .await?;
        results
            .pop()
            .unwrap_or_else(|| Err(NgsiError::internal("the store returned no result")))
    }

    /// Create Entity (clause 5.6.1). Returns the new entity's id.
    pub async fn create_entity<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        body: &J,
    ) -> NgsiResult<Arc<str>> {
        let mut entity = parse_entity(
            body,
            ctx,
            EntityRequirements {
                id: true,
                types: true,
            },
            self.config.parse,
        )?;
        let id = entity.id.clone();
        self.write_one(
            tenant,
            Op::new(id.clone(), move |current| {
                if current.is_some() {
                    return Err(NgsiError::new(
                        ErrorKind::AlreadyExists,
                        format!("entity {} already exists", entity.id),
                    ));
                }
                update::stamp_new(&mut entity, now_micros());
                Ok(Change::put(entity))
            }),
        )
        .await?;
        Ok(id)
    }

    /// Retrieve Entity (clause 5.7.1), rendered for the client.
    pub fn retrieve_entity(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        view: &ViewOptions,
    ) -> NgsiResult<Retrieved> {
        check_id(id)?;
        self.check_tenant(tenant)?;
        let entity = self.store.get(tenant, id).ok_or_else(|| not_found(id))?;
        self.finish_retrieve(tenant, &entity, ctx, id, view)
    }

    /// Retrieve Entity's checks of the found entity against the view, and
    /// its rendering.
    pub(crate) fn finish_retrieve(
        &self,
        tenant: &str,
        entity: &Entity,
        ctx: &Ctx,
        id: &str,
        view: &ViewOptions,
    ) -> NgsiResult<Retrieved> {
        if let Some(types) = &view.type_filter
            && !types.matches(&entity.types.iter().map(|t| &**t).collect::<Vec<_>>())
        {
            return Err(not_found(id));
        }
        // Clause 5.7.1.4 as the ETSI suite reads it (018_03_02): an entity
        // that has none of the attributes asked for with attrs is not found.
        if view.attrs_given
            && let Some(wanted) = &view.attrs
            && !wanted.iter().any(|a| entity.attr(a).is_some())
        {
            return Err(NgsiError::not_found(format!(
                "entity {id} has none of the attributes requested"
            )));
        }
        let shown = project(entity, ctx, view);
        let inline = self.inline_of(tenant, &shown, ctx, view, &mut { linked::MAX_LINKED });
        let out = match shown_value(&shown, ctx, view, &inline) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        // Nothing left after pick/omit (clause 4.21, ETSI 018_19).
        if out.is_empty() {
            return Err(NgsiError::not_found(format!(
                "nothing of entity {id} is left after pick/omit"
            )));
        }
        let linked = linked::flat_linked(&*self.store, tenant, &[&shown], ctx, view)
            .iter()
            .map(|(e, v)| shown_value(e, ctx, v, &LinkedEntities::new()))
            .collect();
        Ok(Retrieved {
            entity: out,
            linked,
            held_by: Vec::new(),
        })
    }

    /// Update Entity Attributes (clause 5.6.2): a partial update patch
    /// (clause 5.5.8). Attributes that exist are replaced, the others are
    /// appended, and an attribute given as the NGSI-LD Null is deleted; new
    /// types are added; the scope replaces the entity's scope if it has one.
    pub async fn update_attrs<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &J,
        type_filter: Option<&str>,
    ) -> NgsiResult<UpdateResult> {
        let fragment = self.fragment_entity(ctx, id, body, ParseLimits::patch())?;
        check_no_compound_null(&fragment.attrs)?;
        let types = self.type_selector(ctx, type_filter)?;
        let report = self
            .modify(tenant, id, types, move |entity, now| {
                Ok(update::update_attrs(entity, fragment, now))
            })
            .await?;
        Ok(UpdateResult::from_report(report, ctx))
    }

    /// Append Entity Attributes (clause 5.6.3), optionally without
    /// overwriting existing ones; the fragment's types and scopes are added
    /// too.
    pub async fn append_attrs<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &J,
        no_overwrite: bool,
        type_filter: Option<&str>,
    ) -> NgsiResult<UpdateResult> {
        let fragment = self.fragment_entity(ctx, id, body, self.config.parse)?;
        let types = self.type_selector(ctx, type_filter)?;
        let report = self
            .modify(tenant, id, types, move |entity, now| {
                Ok(update::append(entity, fragment, no_overwrite, now))
            })
            .await?;
        Ok(UpdateResult::from_report(report, ctx))
    }

    /// Partial Attribute Update (clause 5.6.4).
    pub async fn partial_attr_update<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        attr: &str,
        body: &J,
        type_filter: Option<&str>,
    ) -> NgsiResult<()> {
        check_id(id)?;
        let name = target_attribute(attr, ctx, "partially updated")?;
        let patch = parse_fragment_instance(attr, body, ctx, ParseLimits::patch())?;
        let types = self.type_selector(ctx, type_filter)?;
        self.modify_entity(tenant, id, types, move |entity, now| {
            update::partial_update(entity, &name, patch, now)
        })
        .await
    }

    /// Replace Attribute (clause 5.6.19).
    pub async fn replace_attr<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        attr: &str,
        body: &J,
        type_filter: Option<&str>,
    ) -> NgsiResult<()> {
        check_id(id)?;
        let name = target_attribute(attr, ctx, "replaced")?;
        let instances = match strip_context(body) {
            Some(stripped) => parse_attribute(attr, &stripped, ctx, self.config.parse)?,
            None => parse_attribute(attr, body, ctx, self.config.parse)?,
        };
        let types = self.type_selector(ctx, type_filter)?;
        self.modify_entity(tenant, id, types, move |entity, now| {
            update::replace_attribute(entity, &name, instances, now)
        })
        .await
    }

    /// Delete Entity Attribute (clause 5.6.5).
    pub async fn delete_attr(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        attr: &str,
        instances: Instances<'_>,
        type_filter: Option<&str>,
    ) -> NgsiResult<()> {
        check_id(id)?;
        let Instances {
            dataset_id,
            delete_all,
        } = instances;
        if let Some(d) = dataset_id {
            ngsi_model::parse::check_dataset_id(d)?;
        }
        let types = self.type_selector(ctx, type_filter)?;
        // The scope is deleted like an attribute (clause 5.6.5).
        if attr == "scope" || ctx.expand(attr) == ngsi_model::entity::core_iri::SCOPE {
            return self
                .modify_entity(tenant, id, types, update::delete_scope)
                .await;
        }
        let name = target_attribute(attr, ctx, "deleted")?;
        let dataset_id = dataset_id.filter(|d| *d != "@none").map(str::to_string);
        self.modify_entity(tenant, id, types, move |entity, now| {
            update::delete_attribute(entity, &name, dataset_id.as_deref(), delete_all, now)
        })
        .await
    }

    /// Merge Entity (clause 5.6.17).
    pub async fn merge_entity<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &J,
        type_filter: Option<&str>,
        options: update::MergeOptions,
    ) -> NgsiResult<()> {
        let fragment = self.fragment_entity(ctx, id, body, ParseLimits::merge())?;
        let types = self.type_selector(ctx, type_filter)?;
        self.modify_entity(tenant, id, types, move |entity, now| {
            update::merge_with(entity, fragment, now, &options)
        })
        .await
    }

    /// Replace Entity (clause 5.6.18).
    pub async fn replace_entity<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &J,
        type_filter: Option<&str>,
    ) -> NgsiResult<()> {
        let mut new = self.fragment_entity(ctx, id, body, self.config.parse)?;
        if new.types.is_empty() {
            return Err(NgsiError::bad_data("entity type is missing"));
        }
        new.id = id.into();
        let types = self.type_selector(ctx, type_filter)?;
        self.check_tenant(tenant)?;
        self.write_one(
            tenant,
            Op::new(id, move |current| {
                let old = current
                    .filter(|e| selected(e, types.as_ref()))
                    .ok_or_else(|| not_found(&new.id))?;
                Ok(Change::put(update::replace(old, new, now_micros())))
            }),
        )
        .await?;
        Ok(())
    }

    /// Delete Entity (clause 5.6.6).
    pub async fn delete_entity(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        type_filter: Option<&str>,
    ) -> NgsiResult<()> {
        check_id(id)?;
        self.check_tenant(tenant)?;
        // The optional `type` selector: an entity of another type is not
        // the one the client meant, so it is not found.
        let types = self.type_selector(ctx, type_filter)?;
        let owned: Arc<str> = id.into();
        let id2 = owned.clone();
        self.write_one(
            tenant,
            Op::new(owned, move |current| match current {
                Some(e) if selected(e, types.as_ref()) => Ok(Change::delete()),
                _ => Err(not_found(&id2)),
            }),
        )
        .await?;
        Ok(())
    }

    /// [`Self::modify`] for the operations that report nothing per
    /// attribute: they either change the entity or fail.
    async fn modify_entity(
        &self,
        tenant: &str,
        id: &str,
        types: Option<TypeExpr>,
        f: impl FnOnce(&mut Entity, i64) -> NgsiResult<()> + Send + 'static,
    ) -> NgsiResult<()> {
        self.modify(tenant, id, types, move |entity, now| {
            f(entity, now).map(|()| UpdateReport::default())
        })
        .await
        .map(drop)
    }

    /// Runs `f` on the latest version of entity `id` inside the writer and
    /// stores the result. With `types`, an entity of other types is not
    /// found (the selector of Entity types of clause 5.6).
    async fn modify(
        &self,
        tenant: &str,
        id: &str,
        types: Option<TypeExpr>,
        f: impl FnOnce(&mut Entity, i64) -> NgsiResult<UpdateReport> + Send + 'static,
    ) -> NgsiResult<UpdateReport> {
        check_id(id)?;
        self.check_tenant(tenant)?;
        let owned: Arc<str> = id.into();
        let id2 = owned.clone();
        let outcome = self
            .write_one(
                tenant,
                Op::new(owned, move |current| {
                    let mut entity = current
                        .filter(|e| selected(e, types.as_ref()))
                        .cloned()
                        .ok_or_else(|| not_found(&id2))?;
                    let report = f(&mut entity, now_micros())?;
                    let unchanged = report.updated.is_empty() && !report.not_updated.is_empty();
                    Ok(Change {
                        next: if unchanged {
                            Next::Keep
                        } else {
                            Next::Put(entity)
                        },
                        report: Some(report),
                    })
                }),
            )
            .await?;
        Ok(outcome.report.unwrap_or_default())
    }

    /// Parses the optional `type` selector of the operations on one entity.
    pub(crate) fn type_selector(
        &self,
        ctx: &Ctx,
        type_filter: Option<&str>,
    ) -> NgsiResult<Option<TypeExpr>> {
        type_filter.map(|t| query::parse_types(t, ctx)).transpose()
    }

    pub(crate) fn fragment_entity<J: JsonDoc>(
        &self,
        ctx: &Ctx,
        id: &str,
        body: &J,
        limits: ParseLimits,
    ) -> NgsiResult<Entity> {
        check_fragment(body, id)?;
        parse_entity(body, ctx, EntityRequirements::default(), limits)
    }
}

/// Checks an entity fragment for the operations on entity `id`: a JSON
/// object whose `id` member, if present, must match.
fn check_fragment<J: JsonDoc>(body: &J, id: &str) -> NgsiResult<()> {
    check_id(id)?;
    if !body.is_object() {
        return Err(NgsiError::bad_data(
            "an entity fragment must be a JSON object",
        ));
    }
    match body.get("id").or_else(|| body.get("@id")) {
        Some(v) if v.as_str() == Some(id) => Ok(()),
        Some(_) => Err(NgsiError::bad_data(
            "the id in the body differs from the id in the path",
        )),
        None => Ok(()),
    }
}

/// The attribute fragment without its `@context` member, if it has one.
pub(crate) fn strip_context<J: JsonDoc>(body: &J) -> Option<Value> {
    body.get("@context")?;
    let mut value = body.to_value();
    if let Value::Object(m) = &mut value {
        m.remove("@context");
    }
    Some(value)
}

/// Parses the body of a partial attribute update: an attribute fragment in
/// which the value member may be missing (only metadata or sub-attributes
/// change) and the type, if given, names the kind the target must have.
/// The fragment goes through a `Value` only when it has an `@context` or no
/// value member.
pub(crate) fn parse_fragment_instance<J: JsonDoc>(
    name: &str,
    body: &J,
    ctx: &Ctx,
    limits: ParseLimits,
) -> NgsiResult<AttrPatch> {
    if !body.is_object() {
        return Err(NgsiError::bad_data(
            "an attribute fragment must be a JSON object",
        ));
    }
    let kind = match body.get("type") {
        None => None,
        Some(t) => match t.as_str() {
            Some(t) => Some(
                t.strip_prefix(ngsi_model::entity::core_iri::NGSI_LD)
                    .unwrap_or(t)
                    .to_string(),
            ),
            None => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: type must be a string"
                )));
            }
        },
    };
    let value_given = ngsi_model::parse::VALUE_MEMBERS
        .iter()
        .any(|m| body.get(m).is_some());
    let mut instances = if value_given && body.get("@context").is_none() {
        parse_attribute(name, body, ctx, limits)?
    } else {
        let mut value = body.to_value();
        let Value::Object(members) = &mut value else {
            unreachable!("checked to be an object")
        };
        members.remove("@context");
        if members.is_empty() {
            return Err(NgsiError::bad_data(
                "an empty attribute fragment changes nothing",
            ));
        }
        if !value_given {
            // Only metadata and sub-attributes: parse them under a
            // placeholder value, which the update leaves out.
            members.insert("type".into(), Value::String("Property".into()));
            members.insert("value".into(), Value::Bool(true));
        }
        parse_attribute(name, &value, ctx, limits)?
    };
    if instances.len() != 1 {
        return Err(NgsiError::bad_data(
            "a partial update carries one attribute instance",
        ));
    }
    let attr = instances.remove(0);
    // The Null deletes a whole attribute or sub-attribute here; unlike in a
    // merge it cannot delete a key inside a compound value (clause 5.5.8).
    if let ngsi_model::AttrValue::Property(v @ (Value::Object(_) | Value::Array(_))) = &attr.value
        && ngsi_model::parse::json_has_null(v)
    {
        return Err(NgsiError::bad_data(format!(
            "attribute {name}: the NGSI-LD Null cannot appear inside a compound value in a partial update"
        )));
    }
    Ok(AttrPatch {
        attr,
        value_given,
        kind,
    })
}

/// Whether `entity` is selected by the optional selector of Entity types.
fn selected(entity: &Entity, types: Option<&TypeExpr>) -> bool {
    types.is_none_or(|t| t.matches_with(&|n| entity.has_type(n)))
}

/// The expanded name of the attribute an operation on one attribute
/// targets (clauses 5.6.4, 5.6.5, 5.6.19): a valid attribute name, and not
/// the scope.
pub(crate) fn target_attribute(attr: &str, ctx: &Ctx, what: &str) -> NgsiResult<ngsi_model::Iri> {
    if attr == "scope" {
        return Err(NgsiError::bad_data(format!(
            "the scope cannot be {what} as an attribute"
        )));
    }
    if !ngsi_model::parse::is_valid_name(attr) {
        return Err(NgsiError::bad_data(format!(
            "invalid attribute name {attr:?}"
        )));
    }
    Ok(iri(&ctx.expand(attr)))
}

/// In Update Entity Attributes the NGSI-LD Null deletes a whole attribute
/// instance; anywhere else inside an instance (a sub-attribute, a key of a
/// compound value) it is refused, as the instance replaces the old one.
pub(crate) fn check_no_compound_null(
    attrs: &[(ngsi_model::Iri, ngsi_model::entity::InstanceList)],
) -> NgsiResult<()> {
    fn has_null(a: &ngsi_model::Attribute) -> bool {
        use ngsi_model::AttrValue as V;
        use ngsi_model::parse::json_has_null;
        let in_value = match &a.value {
            V::Property(v) | V::GeoProperty(v) | V::VocabProperty(v) => json_has_null(v),
            V::JsonProperty(_) => false,
            V::Relationship { object, .. } => json_has_null(object),
            V::LanguageProperty(m) => m.values().any(json_has_null),
            V::ListProperty(items) | V::ListRelationship { objects: items, .. } => {
                items.iter().any(json_has_null)
            }
        };
        in_value || a.sub.iter().any(|(_, s)| has_null(s))
    }
    for (name, instances) in attrs {
        for a in instances {
            let nested = if update::is_ngsi_null(a) {
                a.sub.iter().any(|(_, s)| has_null(s))
            } else {
                has_null(a)
            };
            if nested {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: the NGSI-LD Null can only delete a whole attribute here"
                )));
            }
        }
    }
    Ok(())
}

/// A retrieved entity, rendered for the client.
#[derive(Debug)]
pub struct Retrieved {
    /// The entity (with its Linked Entities inline for `join=inline`).
    pub entity: Map<String, Value>,
    /// With `join=flat`, the Linked Entities that follow it (clause
    /// 4.5.23.3).
    pub linked: Vec<Value>,
    /// Where the entity was found, for an EntityMap: [`entity_maps::HERE`]
    /// and the registrations whose sources answered it; empty when it was
    /// read here only (no allocation on the common path).
    pub held_by: Vec<Arc<str>>,
}

/// Renders an entity with the view's projection and options.
pub(crate) fn render_view(entity: &Entity, ctx: &Ctx, view: &ViewOptions) -> Map<String, Value> {
    match shown_value(
        &project(entity, ctx, view),
        ctx,
        view,
        &LinkedEntities::new(),
    ) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Appends the JSON text of an entity to `out`, with `context` (JSON text)
/// as its last member `@context` when given: `{...}` becomes
/// `{...,"@context":<context>}`, `{}` becomes `{"@context":<context>}`.
/// Text that is no object is appended as it is.
pub fn push_entity_json(out: &mut Vec<u8>, entity: &[u8], context: Option<&[u8]>) {
    match (context, entity.split_last()) {
        (Some(c), Some((b'}', open))) => {
            out.extend_from_slice(open);
            if open.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"@context\":");
            out.extend_from_slice(c);
            out.push(b'}');
        }
        _ => out.extend_from_slice(entity),
    }
}

/// What the view shows of an entity: the attributes `attrs`/`pick`, `omit`
/// and `datasetId` select, amended to the version the client prefers.
pub(crate) fn project<'e>(
    entity: &'e Entity,
    ctx: &Ctx,
    view: &ViewOptions,
) -> std::borrow::Cow<'e, Entity> {
    if view.attrs.is_none()
        && view.omit.is_none()
        && view.dataset_id.is_none()
        && view.version.is_none()
    {
        return std::borrow::Cow::Borrowed(entity);
    }
    let mut projected = entity.clone();
    if let Some(keep) = &view.attrs {
        projected
            .attrs
            .retain(|(n, _)| keep.iter().any(|k| **k == **n));
    }
    if let Some(drop) = &view.omit {
        projected
            .attrs
            .retain(|(n, _)| !drop.iter().any(|k| **k == **n));
    }
    if let Some(ds) = &view.dataset_id {
        for (_, instances) in &mut projected.attrs {
            instances.retain(|a| ds.iter().any(|d| a.dataset_id.as_deref() == d.as_deref()));
        }
        projected.attrs.retain(|(_, i)| !i.is_empty());
    }
    if let Some(version) = view.version {
        ngsi_model::compat::amend(&mut projected, version, ctx);
    }
    std::borrow::Cow::Owned(projected)
}

/// Writes what [`project`] shows of an entity, with its inline Linked
/// Entities (`linked`, empty for none).
fn write_shown<S: Sink>(
    shown: &Entity,
    ctx: &Ctx,
    view: &ViewOptions,
    linked: &LinkedEntities,
    out: &mut S,
) {
    let opts = RenderOptions {
        format: view.format,
        sys_attrs: view.sys_attrs,
        lang: view.lang.as_deref(),
        omit_id: view.omit_id,
        omit_type: view.omit_type,
        omit_scope: view.omit_scope,
        linked: Some(linked).filter(|l| !l.is_empty()),
    };
    write_entity(shown, ctx, &opts, out);
}

/// What [`project`] shows of an entity as JSON text, `None` when nothing
/// is left of it.
pub(crate) fn shown_json(
    shown: &Entity,
    ctx: &Ctx,
    view: &ViewOptions,
    linked: &LinkedEntities,
) -> Option<Vec<u8>> {
    let mut sink = JsonSink::new(Vec::with_capacity(1024));
    write_shown(shown, ctx, view, linked, &mut sink);
    (sink.out != b"{}").then_some(sink.out)
}

/// What [`project`] shows of an entity as a JSON value.
pub(crate) fn shown_value(
    shown: &Entity,
    ctx: &Ctx,
    view: &ViewOptions,
    linked: &LinkedEntities,
) -> Value {
    let mut sink = ValueSink::default();
    write_shown(shown, ctx, view, linked, &mut sink);
    sink.finish()
}
