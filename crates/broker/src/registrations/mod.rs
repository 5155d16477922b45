//! The context source registry (clauses 5.9 and 5.10): the operations of
//! the API, their persistence, and discovery.
//!
//! A registration is stored as the list of requests that made it (the
//! create document, then each PATCH fragment) with the @context of each, so
//! that a restart replays them into exactly the same expanded form, whatever
//! contexts the requests used (as subscriptions are).

pub(crate) mod forward;
mod model;
mod subscriptions;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ngsi_model::time::now_micros;
use ngsi_model::{ErrorKind, NgsiError, NgsiResult, Terms, iri};
use parking_lot::RwLock;
use serde_json::{Map, Value};
use store::Store;

pub(crate) use forward::{BatchFanout, EntityWrite};
pub use forward::{Origin, Plan, Write, WriteAnswer, WriteKind};
pub use model::{EntityInfo, IntervalKind, Registration, RegistrationQuery};
use subscriptions::{CsrSubscriptions, Trigger};

use crate::subscriptions::{append_request, new_record};
use crate::temporal::TemporalParams;
use crate::unrestored::{Kind, Unrestored};
use crate::{Broker, Ctx, QueryParams};

/// The store collection of registrations.
const COLLECTION: &str = "csourceRegistrations";
/// The store collection of subscriptions to registrations.
const SUBSCRIPTIONS: &str = "csourceSubscriptions";

fn not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("context source registration {id} does not exist"))
}

fn check_id(id: &str) -> NgsiResult<()> {
    crate::check_uri(id, "registration id")
}

fn object(body: &Value) -> NgsiResult<&Map<String, Value>> {
    crate::json_object(body, "ContextSourceRegistration")
}

/// The registrations of one tenant, ordered by id.
type TenantRegistrations = BTreeMap<Arc<str>, Arc<Registration>>;

/// The forwarding statistics of each registration, by tenant and id.
type StatsByRegistration = HashMap<(String, Arc<str>), forward::SourceStats>;

/// The registrations of every tenant, and the subscriptions to them.
#[derive(Clone)]
pub struct Registry {
    tenants: Arc<RwLock<HashMap<String, TenantRegistrations>>>,
    /// Serialises the writes of registrations and their subscriptions
    /// (they are rare).
    pub(crate) writes: Arc<tokio::sync::Mutex<()>>,
    subscriptions: CsrSubscriptions,
    store: Arc<dyn Store>,
    /// The HTTP client of distributed operations.
    forwarder: forward::Forwarder,
    /// How the forwarding to each registration went, by tenant and id
    /// (Table 5.2.9-2); kept in memory, from the start of the process.
    stats: Arc<parking_lot::Mutex<StatsByRegistration>>,
    /// Told of every change of a tenant's registrations (their sources
    /// get the copies of the tenant's subscriptions).
    relay: crate::subscriptions::Relay,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(
        notifier: notify::NotifierConfig,
        store: Arc<dyn Store>,
        relay: crate::subscriptions::Relay,
    ) -> Self {
        Self {
            tenants: Arc::default(),
            writes: Arc::default(),
            subscriptions: CsrSubscriptions::new(notifier, store.clone()),
            store,
            forwarder: forward::Forwarder::new(),
            stats: Arc::default(),
            relay,
        }
    }

    /// The HTTP client of distributed operations.
    pub(crate) fn forwarder(&self) -> &forward::Forwarder {
        &self.forwarder
    }

    /// The registrations of `tenant` that distributed subscriptions may use:
    /// live, not auxiliary (clause 5.8.1.4 names exclusive, redirect and
    /// inclusive ones), with an endpoint.
    pub(crate) fn live(&self, tenant: &str) -> Vec<Arc<Registration>> {
        let now = now_micros();
        self.list(tenant)
            .into_iter()
            .filter(|r| !r.expired(now) && r.mode != model::Mode::Auxiliary && r.endpoint.is_some())
            .collect()
    }

    /// Starts the writer of delivery statuses and, once a second, the
    /// removal of expired registrations. Needs a Tokio runtime.
    pub fn start(&self) {
        self.subscriptions.start();
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                registry.remove_expired().await;
            }
        });
    }

    /// Deletes the registrations whose expiresAt has passed (clause 4.8:
    /// they are no longer valid); their subscribers hear noLongerMatching.
    async fn remove_expired(&self) {
        let now = now_micros();
        let expired: Vec<(String, Arc<Registration>)> = self
            .tenants
            .read()
            .iter()
            .flat_map(|(tenant, list)| {
                list.values()
                    .filter(|r| r.expired(now))
                    .map(|r| (tenant.clone(), r.clone()))
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        let _guard = self.writes.lock().await;
        for (tenant, r) in expired {
            // Replaced or deleted meanwhile: not this one any more.
            if !self
                .get(&tenant, &r.id)
                .is_some_and(|now| Arc::ptr_eq(&now, &r))
            {
                continue;
            }
            if let Err(e) = self
                .store
                .put_record(&tenant, COLLECTION, &r.id, None)
                .await
            {
                tracing::warn!(error = %e, id = %r.id, "an expired registration could not be deleted");
                continue;
            }
            self.remove(&tenant, &r.id);
            self.subscriptions.on_change(&tenant, Some(&r), None);
            self.relay.touch(&tenant);
        }
    }

    fn get(&self, tenant: &str, id: &str) -> Option<Arc<Registration>> {
        self.tenants.read().get(tenant)?.get(id).cloned()
    }

    fn install(&self, tenant: &str, r: Registration) {
        self.tenants
            .write()
            .entry(tenant.to_string())
            .or_default()
            .insert(r.id.clone(), Arc::new(r));
    }

    fn remove(&self, tenant: &str, id: &str) {
        if let Some(list) = self.tenants.write().get_mut(tenant) {
            list.remove(id);
        }
        self.stats
            .lock()
            .remove(&(tenant.to_string(), Arc::from(id)));
    }

    /// A registration rendered with the statistics of its forwarding.
    fn render(
        &self,
        tenant: &str,
        r: &Registration,
        ctx: &Ctx,
        sys_attrs: bool,
    ) -> Map<String, Value> {
        let mut out = r.render(ctx, sys_attrs);
        if let Some(stats) = self.stats.lock().get(&(tenant.to_string(), r.id.clone())) {
            stats.render(&mut out);
        }
        out
    }

    fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.read().contains_key(tenant)
    }

    fn list(&self, tenant: &str) -> Vec<Arc<Registration>> {
        self.tenants
            .read()
            .get(tenant)
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// One page of registrations.
#[derive(Debug, Default)]
pub struct RegistrationPage {
    pub items: Vec<Map<String, Value>>,
    /// Every matching registration, when counted.
    pub total: usize,
}

impl RegistrationQuery {
    /// Parses the query-string form of Query Context Source Registrations
    /// (clause 6.8.3.2).
    pub fn from_params(p: &QueryParams, t: &TemporalParams, ctx: &Ctx) -> NgsiResult<Self> {
        let mut q = RegistrationQuery::default();
        if let Some(ids) = &p.id {
            let list: Vec<String> = ids.split(',').map(|s| s.trim().to_string()).collect();
            for id in &list {
                crate::check_uri(id, "id")?;
            }
            q.ids = Some(list);
        }
        if let Some(pattern) = &p.id_pattern {
            q.id_pattern = Some(
                crate::query::IdPattern::new(pattern)
                    .map_err(|e| NgsiError::bad_data(format!("invalid idPattern: {e}")))?,
            );
        }
        if let Some(types) = &p.r#type {
            q.types = Some(crate::query::parse_types(types, ctx)?);
        }
        let members = |list: &Option<String>, name: &str| -> NgsiResult<Option<Vec<String>>> {
            list.as_deref()
                .map(|l| {
                    ngsi_query::parse_attr_list(l)
                        .map_err(|e| NgsiError::bad_data(format!("invalid {name}: {e}")))
                })
                .transpose()
        };
        q.pick = members(&p.pick, "pick")?;
        q.omit = members(&p.omit, "omit")?;
        if q.pick.is_some() && q.omit.is_some() {
            return Err(NgsiError::bad_data("pick and omit cannot go together"));
        }
        if let Some(attrs) = &p.attrs {
            let names = ngsi_query::parse_attr_list(attrs)
                .map_err(|e| NgsiError::bad_data(format!("invalid attrs: {e}")))?;
            q.attrs = Some(names.iter().map(|n| iri(&ctx.expand(n))).collect());
        }
        q.q =
            p.q.as_deref()
                .map(|s| crate::query::parse_q(s, ctx))
                .transpose()?;
        crate::query::refuse_links(q.q.as_ref(), "registration queries")?;
        q.csf = p
            .csf
            .as_deref()
            .map(|s| {
                crate::query::parse_q(s, ctx)
                    .map_err(|e| NgsiError::bad_data(format!("invalid csf: {}", e.detail)))
            })
            .transpose()?;
        crate::query::refuse_links(q.csf.as_ref(), "csf")?;
        q.scope_q = p
            .scope_q
            .as_deref()
            .map(|s| {
                ngsi_query::parse_scope_q(s)
                    .map_err(|e| NgsiError::bad_data(format!("invalid scopeQ: {e}")))
            })
            .transpose()?;
        if p.georel.is_some() || p.geometry.is_some() || p.coordinates.is_some() {
            let g = ngsi_geo::parse_geoquery_params(
                p.georel.as_deref(),
                p.geometry.as_deref(),
                p.coordinates.as_deref(),
                p.geoproperty.as_deref(),
            )
            .map_err(|e| NgsiError::bad_data(e.to_string()))?;
            let name = g.geoproperty_or_default().to_string();
            let at = RegistrationQuery::geo_member(&name)
                .or_else(|| RegistrationQuery::geo_member(&ctx.expand(&name)))
                .ok_or_else(|| {
                    NgsiError::bad_data(format!(
                        "geoproperty {name:?} is not one of location, observationSpace, operationSpace"
                    ))
                })?;
            q.geo = Some((g, at));
        }
        let range = t.range()?;
        if t.timerel.is_some() {
            q.time = Some((IntervalKind::of(range.property), range.from, range.to));
        }
        // Clause 5.10.2.4 asks for a type, attribute names, q or a
        // geo-query; ids, idPattern, csf, scopeQ and a temporal query are
        // selective enough too (ETSI 037_10_01 queries by id alone).
        let selective = q.ids.is_some()
            || q.id_pattern.is_some()
            || q.types.is_some()
            || q.attrs.is_some()
            || q.q.is_some()
            || q.csf.is_some()
            || q.geo.is_some()
            || q.scope_q.is_some()
            || q.time.is_some();
        if !selective {
            return Err(NgsiError::bad_data(
                "a query of registrations needs at least one of id, idPattern, type, attrs, q, csf, a geo-query, scopeQ or a temporal query",
            ));
        }
        Ok(q)
    }
}

impl Broker {
    /// Register Context Source (clause 5.9.2). Returns the id.
    pub async fn create_registration(
        &self,
        tenant: &str,
        ctx: &Ctx,
        body: &Value,
    ) -> NgsiResult<Arc<str>> {
        let doc = object(body)?;
        let now = now_micros();
        let r = Registration::create(doc, ctx, now, true)?;
        let _guard = self.registrations.writes.lock().await;
        if self.unrestored.holds(Kind::Registration, tenant, &r.id) {
            return Err(Unrestored::taken(Kind::Registration, &r.id));
        }
        if self
            .registrations
            .get(tenant, &r.id)
            .is_some_and(|old| !old.expired(now))
        {
            return Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("context source registration {} already exists", r.id),
            ));
        }
        let record = new_record(&self.contexts, doc, &r.id, ctx, now, None);
        self.store
            .put_record(tenant, COLLECTION, &r.id, Some(record))
            .await?;
        let id = r.id.clone();
        self.registrations
            .subscriptions
            .on_change(tenant, None, Some(&r));
        self.registrations.install(tenant, r);
        self.relay.touch(tenant);
        Ok(id)
    }

    /// The live registration `id` of `tenant`.
    fn registration(&self, tenant: &str, id: &str) -> NgsiResult<Arc<Registration>> {
        check_id(id)?;
        match self
            .registrations
            .get(tenant, id)
            .filter(|r| !r.expired(now_micros()))
        {
            Some(r) => Ok(r),
            None => {
                if let Some(e) = self.unrestored.unavailable(Kind::Registration, tenant, id) {
                    return Err(e);
                }
                // An unknown tenant is told apart (clause 5.5.10).
                self.check_tenant_holding(tenant, self.registrations.has_tenant(tenant))?;
                Err(not_found(id))
            }
        }
    }

    /// Retrieve Context Source Registration (clause 5.10.1).
    pub fn retrieve_registration(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        sys_attrs: bool,
    ) -> NgsiResult<Map<String, Value>> {
        let r = self.registration(tenant, id)?;
        Ok(self.registrations.render(tenant, &r, ctx, sys_attrs))
    }

    /// Query Context Source Registrations (clause 5.10.2), ordered by id.
    pub fn query_registrations(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &RegistrationQuery,
        offset: usize,
        limit: usize,
        sys_attrs: bool,
    ) -> NgsiResult<RegistrationPage> {
        self.check_tenant_holding(tenant, self.registrations.has_tenant(tenant))?;
        let now = now_micros();
        let matching: Vec<Arc<Registration>> = self
            .registrations
            .list(tenant)
            .into_iter()
            .filter(|r| !r.expired(now) && query.matches(r))
            .collect();
        Ok(RegistrationPage {
            total: matching.len(),
            items: matching
                .iter()
                .skip(offset)
                .take(limit)
                .map(|r| query.project(self.registrations.render(tenant, r, ctx, sys_attrs)))
                .collect(),
        })
    }

    /// Update Context Source Registration (clause 5.9.3).
    pub async fn update_registration(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &Value,
    ) -> NgsiResult<()> {
        let _guard = self.registrations.writes.lock().await;
        let current = self.registration(tenant, id)?;
        let fragment = object(body)?;
        let now = now_micros();
        let next = current.patch(fragment, ctx, now, true)?;
        append_request(
            &self.contexts,
            &self.store,
            tenant,
            COLLECTION,
            id,
            fragment,
            ctx,
            now,
            None,
        )
        .await?;
        self.registrations
            .subscriptions
            .on_change(tenant, Some(&current), Some(&next));
        self.registrations.install(tenant, next);
        self.relay.touch(tenant);
        Ok(())
    }

    /// Delete Context Source Registration (clause 5.9.4).
    pub async fn delete_registration(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        check_id(id)?;
        let _guard = self.registrations.writes.lock().await;
        if self.unrestored.holds(Kind::Registration, tenant, id) {
            self.store.put_record(tenant, COLLECTION, id, None).await?;
            self.unrestored.forget(Kind::Registration, tenant, id);
            return Ok(());
        }
        // An expired registration is gone for clients; its record goes now.
        let live = self.registration(tenant, id);
        if self.registrations.get(tenant, id).is_some() {
            self.store.put_record(tenant, COLLECTION, id, None).await?;
            self.registrations.remove(tenant, id);
        }
        self.relay.touch(tenant);
        let r = live?;
        self.registrations
            .subscriptions
            .on_change(tenant, Some(&r), None);
        Ok(())
    }
}

fn subscription_not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!(
        "context source registration subscription {id} does not exist"
    ))
}

impl Broker {
    /// Installs a subscription to the registrations of `tenant` (created
    /// or updated) and notifies it of those that match it now, unless it
    /// is periodic (newlyMatching).
    fn install_csr_subscription(
        &self,
        tenant: &str,
        sub: crate::subscriptions::Subscription,
        notify_ctx: Ctx,
    ) -> NgsiResult<()> {
        let entry = install_csr_subscription(&self.registrations, tenant, sub, notify_ctx, None)?;
        if entry.sub.time_interval.is_none() {
            self.registrations.subscriptions.notify_all(
                tenant,
                &entry,
                &self.registrations.list(tenant),
                Some(Trigger::NewlyMatching),
            );
        }
        Ok(())
    }

    /// Create Context Source Registration Subscription (clause 5.11.2).
    /// Returns the id. The registrations that match it now are notified at
    /// once (triggerReason newlyMatching).
    pub async fn create_csr_subscription(
        &self,
        tenant: &str,
        ctx: &Ctx,
        body: &Value,
        origin: &str,
    ) -> NgsiResult<Arc<str>> {
        let doc = object(body)?;
        let sub = crate::subscriptions::Subscription::create(doc, ctx, now_micros(), true)?;
        let notify_ctx = self.notify_context(&sub, ctx, origin).await?;
        let _guard = self.registrations.writes.lock().await;
        if self
            .unrestored
            .holds(Kind::CsrSubscription, tenant, &sub.id)
        {
            return Err(Unrestored::taken(Kind::CsrSubscription, &sub.id));
        }
        if self
            .registrations
            .subscriptions
            .get(tenant, &sub.id)
            .is_some()
        {
            return Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("subscription {} already exists", sub.id),
            ));
        }
        let record = new_record(
            &self.contexts,
            doc,
            &sub.id,
            ctx,
            now_micros(),
            Some(&notify_ctx),
        );
        // Checked before it is stored.
        CsrSubscriptions::check(&sub)?;
        self.store
            .put_record(tenant, SUBSCRIPTIONS, &sub.id, Some(record))
            .await?;
        let id = sub.id.clone();
        self.install_csr_subscription(tenant, sub, notify_ctx)?;
        Ok(id)
    }

    fn csr_subscription(&self, tenant: &str, id: &str) -> NgsiResult<Arc<subscriptions::Entry>> {
        check_id(id)?;
        match self.registrations.subscriptions.get(tenant, id) {
            Some(entry) => Ok(entry),
            None => {
                if let Some(e) = self
                    .unrestored
                    .unavailable(Kind::CsrSubscription, tenant, id)
                {
                    return Err(e);
                }
                self.check_tenant_holding(
                    tenant,
                    self.registrations.subscriptions.has_tenant(tenant),
                )?;
                Err(subscription_not_found(id))
            }
        }
    }

    fn render_csr_subscription(
        entry: &subscriptions::Entry,
        ctx: &Ctx,
        sys_attrs: bool,
    ) -> Map<String, Value> {
        let status = entry.status.status.lock().clone();
        let mut out = crate::subscriptions::render_with_status(&entry.sub, &status, ctx, sys_attrs);
        // notificationTrigger (the kinds of entity changes) has no meaning
        // for registrations: shown only as the client gave it.
        if entry.sub.trigger_names.is_none() {
            out.remove("notificationTrigger");
        }
        out
    }

    /// Retrieve Context Source Registration Subscription (clause 5.11.4).
    pub fn retrieve_csr_subscription(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        sys_attrs: bool,
    ) -> NgsiResult<Map<String, Value>> {
        let entry = self.csr_subscription(tenant, id)?;
        Ok(Self::render_csr_subscription(&entry, ctx, sys_attrs))
    }

    /// Query Context Source Registration Subscriptions (clause 5.11.5),
    /// ordered by id.
    pub fn query_csr_subscriptions(
        &self,
        tenant: &str,
        ctx: &Ctx,
        offset: usize,
        limit: usize,
        sys_attrs: bool,
    ) -> NgsiResult<crate::subscriptions::SubscriptionPage> {
        self.check_tenant_holding(tenant, self.registrations.subscriptions.has_tenant(tenant))?;
        let all = self.registrations.subscriptions.list(tenant);
        Ok(crate::subscriptions::SubscriptionPage {
            total: all.len(),
            items: all
                .iter()
                .skip(offset)
                .take(limit)
                .map(|e| Self::render_csr_subscription(e, ctx, sys_attrs))
                .collect(),
        })
    }

    /// Update Context Source Registration Subscription (clause 5.11.3):
    /// the members of the fragment replace the stored ones; the
    /// registrations that match it afterwards are notified.
    pub async fn update_csr_subscription(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &Value,
        origin: &str,
    ) -> NgsiResult<()> {
        check_id(id)?;
        let fragment = object(body)?;
        let _guard = self.registrations.writes.lock().await;
        let entry = self.csr_subscription(tenant, id)?;
        let next = entry.sub.patch(fragment, ctx, now_micros(), true)?;
        CsrSubscriptions::check(&next)?;
        let notify_ctx = if fragment.contains_key("jsonldContext") {
            self.notify_context(&next, ctx, origin).await?
        } else {
            entry.ctx.clone()
        };
        append_request(
            &self.contexts,
            &self.store,
            tenant,
            SUBSCRIPTIONS,
            id,
            fragment,
            ctx,
            now_micros(),
            Some(&notify_ctx),
        )
        .await?;
        self.install_csr_subscription(tenant, next, notify_ctx)?;
        Ok(())
    }

    /// Delete Context Source Registration Subscription (clause 5.11.6).
    pub async fn delete_csr_subscription(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        check_id(id)?;
        let _guard = self.registrations.writes.lock().await;
        if !self.unrestored.holds(Kind::CsrSubscription, tenant, id) {
            self.csr_subscription(tenant, id)?;
        }
        self.store
            .put_record(tenant, SUBSCRIPTIONS, id, None)
            .await?;
        self.store
            .put_record(tenant, subscriptions::STATUS_COLLECTION, id, None)
            .await?;
        self.registrations.subscriptions.remove(tenant, id);
        self.unrestored.forget(Kind::CsrSubscription, tenant, id);
        Ok(())
    }
}

fn install_csr_subscription(
    registry: &Registry,
    tenant: &str,
    sub: crate::subscriptions::Subscription,
    notify_ctx: Ctx,
    stored: Option<crate::subscriptions::Status>,
) -> NgsiResult<Arc<subscriptions::Entry>> {
    let source = registry.clone();
    let owner = tenant.to_string();
    registry
        .subscriptions
        .install(tenant, sub, notify_ctx, stored, move || source.list(&owner))
}

/// Reinstalls the stored registrations of every tenant by replaying their
/// requests; notes in `unrestored` those that fail.
pub(crate) async fn restore(
    store: Arc<dyn Store>,
    contexts: jsonld::ContextResolver,
    registry: Registry,
    unrestored: Unrestored,
) {
    let tenants = crate::tenants_with_default(&*store);
    let mut restored = 0usize;
    for tenant in tenants {
        for (id, record) in store.records(&tenant, COLLECTION) {
            match replay(&contexts, &record).await {
                Ok(r) => {
                    registry.install(&tenant, r);
                    restored += 1;
                }
                Err(e) => {
                    tracing::error!(%tenant, %id, error = %e, "a stored registration could not be restored");
                    unrestored.note(Kind::Registration, &tenant, &id, e.to_string());
                }
            }
        }
        let statuses: HashMap<String, Value> = store
            .records(&tenant, subscriptions::STATUS_COLLECTION)
            .into_iter()
            .collect();
        for (id, record) in store.records(&tenant, SUBSCRIPTIONS) {
            match restore_csr_subscription(
                &contexts,
                &registry,
                &tenant,
                &record,
                statuses.get(&id),
            )
            .await
            {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::error!(%tenant, %id, error = %e, "a stored registration subscription could not be restored");
                    unrestored.note(Kind::CsrSubscription, &tenant, &id, e.to_string());
                }
            }
        }
    }
    if restored > 0 {
        tracing::info!(
            restored,
            "context source registrations and their subscriptions restored"
        );
    }
}

/// Replays one stored subscription to registrations and installs it with
/// its stored status.
async fn restore_csr_subscription(
    contexts: &jsonld::ContextResolver,
    registry: &Registry,
    tenant: &str,
    record: &Value,
    status: Option<&Value>,
) -> NgsiResult<()> {
    let (sub, ctx) = crate::subscriptions::replay(contexts, record).await?;
    let status = status.map(crate::subscriptions::Status::from_json);
    install_csr_subscription(registry, tenant, sub, ctx, status)?;
    Ok(())
}

/// Tries again to restore registration (or subscription to registrations)
/// `id` of `tenant` (see [`crate::unrestored`]).
pub(crate) async fn retry_one(
    parts: &crate::unrestored::RetryParts,
    kind: Kind,
    tenant: &str,
    id: &str,
) {
    let registry = &parts.registry;
    let _guard = registry.writes.lock().await;
    if !parts.unrestored.holds(kind, tenant, id) {
        return;
    }
    let collection = if kind == Kind::Registration {
        COLLECTION
    } else {
        SUBSCRIPTIONS
    };
    let tried = match parts.record(tenant, collection, id) {
        // Deleted meanwhile: nothing waits any more.
        None => Ok(()),
        Some(record) if kind == Kind::Registration => {
            replay(&parts.contexts, &record).await.map(|r| {
                registry.subscriptions.on_change(tenant, None, Some(&r));
                registry.install(tenant, r);
                parts.relay.touch(tenant);
            })
        }
        Some(record) => {
            let status = parts.record(tenant, subscriptions::STATUS_COLLECTION, id);
            restore_csr_subscription(&parts.contexts, registry, tenant, &record, status.as_ref())
                .await
        }
    };
    parts.settle(kind, tenant, id, tried);
}

async fn replay(contexts: &jsonld::ContextResolver, record: &Value) -> NgsiResult<Registration> {
    crate::subscriptions::with_kept_documents(contexts, record, || {
        replay_requests(contexts, record)
    })
    .await
}

async fn replay_requests(
    contexts: &jsonld::ContextResolver,
    record: &Value,
) -> NgsiResult<Registration> {
    let Some(Value::Array(requests)) = record.get("requests") else {
        return Err(NgsiError::internal("no requests"));
    };
    let mut r: Option<Registration> = None;
    for request in requests {
        let ctx =
            crate::subscriptions::resolve(contexts, request.get("context").unwrap_or(&Value::Null))
                .await?;
        let body = object(request.get("body").unwrap_or(&Value::Null))?;
        let at = request
            .get("at")
            .and_then(Value::as_i64)
            .unwrap_or_else(now_micros);
        r = Some(match r {
            None => Registration::create(body, &ctx, at, false)?,
            Some(r) => r.patch(body, &ctx, at, false)?,
        });
    }
    r.ok_or_else(|| NgsiError::internal("no create request"))
}
