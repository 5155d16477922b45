//! The subscription engine: active subscriptions per tenant, the task that
//! turns the store's change feed into notifications and live-stream events,
//! periodic notifications, and the delivery status kept from the notifier's
//! reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ngsi_model::render::Format;
use ngsi_model::render::LinkedEntities;
use ngsi_model::time::{format_micros, now_micros};
use ngsi_model::{AttrValue, Attribute, Entity, Terms};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use store::{EntityChange, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::model::{Accept, Subscription, unique_suffix};
use crate::Ctx;
use crate::query::{EntityQuery, ViewOptions};

/// The delivery status of a subscription (Table 5.2.14.2-1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub times_sent: u64,
    pub times_failed: u64,
    pub last_notification: Option<i64>,
    pub last_success: Option<i64>,
    pub last_failure: Option<i64>,
    /// Whether the last delivery succeeded.
    pub ok: Option<bool>,
}

impl Status {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("timesSent".into(), json!(self.times_sent));
        m.insert("timesFailed".into(), json!(self.times_failed));
        for (k, v) in [
            ("lastNotification", self.last_notification),
            ("lastSuccess", self.last_success),
            ("lastFailure", self.last_failure),
        ] {
            if let Some(t) = v {
                m.insert(k.into(), json!(format_micros(t)));
            }
        }
        if let Some(ok) = self.ok {
            m.insert("status".into(), json!(if ok { "ok" } else { "failed" }));
        }
        Value::Object(m)
    }

    /// Counts what the notifier reports of one message at `now`.
    pub fn apply(&mut self, event: &notify::Event, now: i64) {
        match event {
            notify::Event::Sending => {
                self.times_sent += 1;
                self.last_notification = Some(now);
            }
            notify::Event::Delivered => {
                self.last_success = Some(now);
                self.ok = Some(true);
            }
            notify::Event::Failed(_) => {
                self.times_failed += 1;
                self.last_failure = Some(now);
                self.ok = Some(false);
            }
        }
    }

    pub fn from_json(v: &Value) -> Self {
        let t = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .and_then(ngsi_model::time::parse_datetime)
        };
        Self {
            times_sent: v.get("timesSent").and_then(Value::as_u64).unwrap_or(0),
            times_failed: v.get("timesFailed").and_then(Value::as_u64).unwrap_or(0),
            last_notification: t("lastNotification"),
            last_success: t("lastSuccess"),
            last_failure: t("lastFailure"),
            ok: v.get("status").and_then(Value::as_str).map(|s| s == "ok"),
        }
    }
}

/// The mutable state of one subscription, shared across its versions.
pub struct DeliveryState {
    pub tenant: Arc<str>,
    pub id: Arc<str>,
    pub status: Mutex<Status>,
    /// When the last notification was queued (throttling).
    last_queued: Mutex<Option<Instant>>,
    /// The status changed since it was last written to the store.
    dirty: AtomicBool,
}

/// One active subscription with what delivery needs.
pub struct Entry {
    pub sub: Arc<Subscription>,
    /// The notifier's key: tenant and id.
    pub key: Arc<str>,
    /// The context notifications are compacted with.
    pub notify_ctx: Ctx,
    pub state: Arc<DeliveryState>,
    periodic: Periodic,
}

/// The timer of a periodic subscription (`timeInterval`): a task that
/// runs every period while its subscription lives, and ends with it.
#[derive(Default)]
pub(crate) struct Periodic(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Periodic {
    /// Calls `each` with `owner` every `secs` seconds (the first time after
    /// one period) until `owner` is gone. A tiny interval would turn one
    /// subscription into a busy loop: the period is at least 100 ms
    /// (docs/conformance.md).
    pub(crate) fn start<T: Send + Sync + 'static>(
        &self,
        secs: f64,
        owner: std::sync::Weak<T>,
        each: impl Fn(&T) + Send + 'static,
    ) {
        let period = super::model::bounded_duration(secs.max(MIN_PERIOD_SECS));
        *self.0.lock() = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(owner) = owner.upgrade() else { break };
                each(&owner);
            }
        }));
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        if let Some(h) = self.0.get_mut().take() {
            h.abort();
        }
    }
}

/// A live-stream listener.
struct LiveSink {
    tenant: Arc<str>,
    filter: EntityQuery,
    ctx: Ctx,
    view: ViewOptions,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct Metrics {
    feed_lost: Counter,
    matched: Counter,
    throttled: Counter,
    live_dropped: Counter,
    active: Gauge,
}

/// The subscriptions of one tenant, shared by readers.
type Entries = Arc<Vec<Arc<Entry>>>;

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    notifier: notify::Notifier,
    /// Subscriptions by tenant; copied on write (writes are rare, every
    /// commit reads).
    subs: RwLock<HashMap<Arc<str>, Entries>>,
    states: RwLock<HashMap<Arc<str>, Arc<DeliveryState>>>,
    live: Mutex<Vec<LiveSink>>,
    metrics: Metrics,
}

/// Reports of the notifier, applied to the delivery status.
struct StatusReports(std::sync::Weak<Inner>);

impl notify::Reports for StatusReports {
    fn report(&self, key: &str, event: notify::Event) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let Some(state) = inner.states.read().get(key).cloned() else {
            return;
        };
        state.status.lock().apply(&event, now_micros());
        state.dirty.store(true, Ordering::Release);
    }
}

/// The shortest period of periodic notifications, in seconds.
const MIN_PERIOD_SECS: f64 = 0.1;

/// The store collection of subscription statuses.
pub(crate) const STATUS_COLLECTION: &str = "subscriptionStatus";

/// The engine handle.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn key_of(tenant: &str, id: &str) -> Arc<str> {
    Arc::from(format!("{tenant}\n{id}").as_str())
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, config: notify::NotifierConfig) -> Self {
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| Inner {
            store,
            notifier: notify::Notifier::new(config, Arc::new(StatusReports(weak.clone()))),
            subs: RwLock::new(HashMap::new()),
            states: RwLock::new(HashMap::new()),
            live: Mutex::new(Vec::new()),
            metrics: Metrics::default(),
        });
        Self { inner }
    }

    /// Starts the feed listener and the status writer. Needs a Tokio runtime.
    pub fn start(&self) {
        let mut feed = self.inner.store.changes();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let batch = feed.recv().await;
                let Some(inner) = weak.upgrade() else { break };
                match batch {
                    Ok(batch) => inner.on_commit(&batch),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "subscriptions fell behind the change feed");
                        inner.metrics.feed_lost.inc_by(n);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.flush_statuses().await;
            }
        });
    }

    /// Registers the engine's and the notifier's metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "wuyang_subscription_feed_lost",
            "Committed changes the subscription engine missed because it fell behind",
            m.feed_lost.clone(),
        );
        registry.register(
            "wuyang_subscription_matches",
            "Notifications produced by matching changes against subscriptions",
            m.matched.clone(),
        );
        registry.register(
            "wuyang_subscription_throttled",
            "Notifications suppressed by throttling",
            m.throttled.clone(),
        );
        registry.register(
            "wuyang_live_dropped",
            "Live-stream events dropped because the client read too slowly",
            m.live_dropped.clone(),
        );
        registry.register(
            "wuyang_subscriptions",
            "Subscriptions held",
            m.active.clone(),
        );
        self.inner.notifier.register_metrics(registry);
    }

    /// The entry of subscription `id` of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Arc<Entry>> {
        self.inner
            .subs
            .read()
            .get(tenant)
            .and_then(|list| list.iter().find(|e| &*e.sub.id == id).cloned())
    }

    /// Every subscription of `tenant`, by id.
    pub fn list(&self, tenant: &str) -> Vec<Arc<Entry>> {
        let mut v: Vec<Arc<Entry>> = self
            .inner
            .subs
            .read()
            .get(tenant)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.sub.id.cmp(&b.sub.id));
        v
    }

    /// The tenants that have subscriptions.
    pub fn tenants(&self) -> Vec<String> {
        self.inner
            .subs
            .read()
            .keys()
            .map(|t| t.to_string())
            .collect()
    }

    /// Sends `entities` to the receiver of `entry` as it notifies them
    /// (its projection, format and context), unless it is not active: the
    /// entities a context source notified for the copy of the subscription
    /// (clause 5.8.6).
    pub(crate) fn deliver(&self, entry: &Entry, entities: Vec<Entity>) {
        let now = now_micros();
        if !entry.sub.is_live(now) || entities.is_empty() {
            return;
        }
        let inner = &self.inner;
        let mut data: Vec<Item> = entities.iter().map(|e| inner.rendered(entry, e)).collect();
        let roots: Vec<&Entity> = entities.iter().collect();
        data.extend(inner.flat_linked(entry, &roots));
        inner.metrics.matched.inc();
        inner.send(entry, data, now, Instant::now());
    }

    /// Whether `tenant` has subscriptions.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.inner.subs.read().contains_key(tenant)
    }

    /// Installs (or replaces) a subscription, keeping its delivery status.
    pub fn install(
        &self,
        tenant: &str,
        sub: Subscription,
        notify_ctx: Ctx,
        status: Option<Status>,
    ) {
        let tenant: Arc<str> = Arc::from(tenant);
        let key = key_of(&tenant, &sub.id);
        let state = {
            let mut states = self.inner.states.write();
            states
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(DeliveryState {
                        tenant: tenant.clone(),
                        id: sub.id.clone(),
                        status: Mutex::new(status.unwrap_or_default()),
                        last_queued: Mutex::new(None),
                        dirty: AtomicBool::new(false),
                    })
                })
                .clone()
        };
        let entry = Arc::new(Entry {
            sub: Arc::new(sub),
            key,
            notify_ctx,
            state,
            periodic: Periodic::default(),
        });
        if let Some(secs) = entry.sub.time_interval {
            let weak = Arc::downgrade(&self.inner);
            entry
                .periodic
                .start(secs, Arc::downgrade(&entry), move |entry| {
                    if let Some(inner) = weak.upgrade() {
                        inner.periodic(entry);
                    }
                });
        }
        let mut subs = self.inner.subs.write();
        let list = subs.entry(tenant).or_default();
        let mut next: Vec<Arc<Entry>> = list
            .iter()
            .filter(|e| e.sub.id != entry.sub.id)
            .cloned()
            .collect();
        next.push(entry);
        *list = Arc::new(next);
        self.inner
            .metrics
            .active
            .set(subs.values().map(|l| l.len() as i64).sum());
    }

    /// Removes a subscription; true if it existed.
    pub fn remove(&self, tenant: &str, id: &str) -> bool {
        let key = key_of(tenant, id);
        let mut subs = self.inner.subs.write();
        let Some(list) = subs.get_mut(tenant) else {
            return false;
        };
        let before = list.len();
        let next: Vec<Arc<Entry>> = list.iter().filter(|e| &*e.sub.id != id).cloned().collect();
        let removed = next.len() != before;
        *list = Arc::new(next);
        self.inner
            .metrics
            .active
            .set(subs.values().map(|l| l.len() as i64).sum());
        drop(subs);
        if removed {
            self.inner.states.write().remove(&key);
            self.inner.notifier.forget(&key);
        }
        removed
    }

    /// Opens a live stream of the changes of `tenant` that match `filter`,
    /// rendered with `ctx` and `view`. Each item is one Notification JSON
    /// document. A client that reads too slowly loses events (counted).
    pub fn live(
        &self,
        tenant: &str,
        filter: EntityQuery,
        ctx: Ctx,
        view: ViewOptions,
        depth: usize,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(depth.max(1));
        self.inner.live.lock().push(LiveSink {
            tenant: Arc::from(tenant),
            filter,
            ctx,
            view,
            tx,
        });
        rx
    }
}

/// What a change did to one entity, as the triggers see it.
#[derive(Debug, Default)]
struct Diff<'a> {
    created: Vec<&'a str>,
    updated: Vec<&'a str>,
    /// Attributes that lost instances, with the instances they lost.
    deleted: Vec<(&'a str, Vec<&'a Attribute>)>,
}

/// Whether two instances hold the same content (timestamps aside).
fn same_content(a: &Attribute, b: &Attribute) -> bool {
    a.value == b.value
        && a.dataset_id == b.dataset_id
        && same_instant(a.observed_at.as_deref(), b.observed_at.as_deref())
        && a.unit_code == b.unit_code
        && a.extra == b.extra
        && a.sub.len() == b.sub.len()
        // Members of a JSON object: their order is no change.
        && a.sub.iter().all(|(name, sa)| {
            b.sub
                .iter()
                .find(|(n, _)| n == name)
                .is_some_and(|(_, sb)| same_content(sa, sb))
        })
}

/// Two spellings of one DateTime (`…00Z`, `…00.000Z`) are no change.
fn same_instant(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a != b => {
            let at = ngsi_model::time::parse_datetime;
            at(a).is_some_and(|t| at(b) == Some(t))
        }
        _ => a == b,
    }
}

fn diff<'a>(
    before: &'a Entity,
    after: &'a Entity,
    keep: impl Fn(&Attribute) -> bool + Copy,
) -> Diff<'a> {
    // Only the instances `keep` selects (a subscription's datasetId) count.
    let mut d = Diff::default();
    for (name, all) in &after.attrs {
        let instances = || all.iter().filter(move |a| keep(a));
        let old_all = before.attr(name);
        let old = || old_all.into_iter().flatten().filter(move |a| keep(a));
        if old().next().is_none() {
            if instances().next().is_some() {
                d.created.push(name);
            }
            continue;
        }
        let added = instances().any(|i| !old().any(|o| o.dataset_id == i.dataset_id));
        let removed: Vec<&Attribute> = old()
            .filter(|o| !instances().any(|i| i.dataset_id == o.dataset_id))
            .collect();
        let changed = instances().any(|i| {
            old()
                .find(|o| o.dataset_id == i.dataset_id)
                .is_some_and(|o| !same_content(o, i))
        });
        if added {
            d.created.push(name);
        }
        if changed {
            d.updated.push(name);
        }
        if !removed.is_empty() {
            d.deleted.push((name, removed));
        }
    }
    for (name, instances) in &before.attrs {
        if after.attr(name).is_none() {
            let kept: Vec<&Attribute> = instances.iter().filter(|a| keep(a)).collect();
            if !kept.is_empty() {
                d.deleted.push((name, kept));
            }
        }
    }
    d
}

/// How deletion markers are written.
struct Markers<'a> {
    format: Format,
    sys_attrs: bool,
    show_changes: bool,
    /// When the deletion was seen (deletedAt).
    now: i64,
    ctx: &'a Ctx,
}

impl Markers<'_> {
    /// The marker of a deleted attribute instance (clauses 5.2.1 and
    /// 5.8.6): the attribute with its value set to "urn:ngsi-ld:null" (a
    /// languageMap to `{"@none": "urn:ngsi-ld:null"}`), with the system
    /// attributes and deletedAt when asked for, and the previous value with
    /// showChanges. `dataset` keeps the instance's datasetId.
    fn marker(&self, old: &Attribute, dataset: bool) -> Value {
        const NULL: &str = ngsi_model::entity::core_iri::NULL;
        if self.format == Format::KeyValues {
            return json!(NULL);
        }
        let mut m = Map::new();
        let (kind, member, value) = match &old.value {
            AttrValue::Relationship { .. } => ("Relationship", "object", json!(NULL)),
            AttrValue::ListRelationship { .. } => ("ListRelationship", "objectList", json!(NULL)),
            AttrValue::LanguageProperty(_) => {
                ("LanguageProperty", "languageMap", json!({"@none": NULL}))
            }
            AttrValue::GeoProperty(_) => ("GeoProperty", "value", json!(NULL)),
            AttrValue::JsonProperty(_) => ("JsonProperty", "json", json!(NULL)),
            AttrValue::VocabProperty(_) => ("VocabProperty", "vocab", json!(NULL)),
            AttrValue::ListProperty(_) => ("ListProperty", "valueList", json!(NULL)),
            AttrValue::Property(_) => ("Property", "value", json!(NULL)),
        };
        m.insert("type".into(), json!(kind));
        m.insert(member.into(), value);
        if dataset && let Some(ds) = &old.dataset_id {
            m.insert("datasetId".into(), json!(&**ds));
        }
        if self.sys_attrs {
            m.insert("createdAt".into(), json!(format_micros(old.created_at)));
            m.insert("modifiedAt".into(), json!(format_micros(old.modified_at)));
            m.insert("deletedAt".into(), json!(format_micros(self.now)));
        }
        if self.show_changes {
            let (k, v) = previous_member(old, self.ctx, None);
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    /// The marker of a whole deleted attribute: one marker, made from its
    /// default instance (else its first), with the datasetId only when the
    /// attribute had that one instance.
    fn whole(&self, instances: &[&Attribute]) -> Value {
        let Some(first) = instances
            .iter()
            .find(|a| a.dataset_id.is_none())
            .or(instances.first())
        else {
            return Value::Null;
        };
        self.marker(first, instances.len() == 1)
    }
}

/// The previous* member for showChanges; with `lang`, a LanguageProperty
/// is shown as the Property of one language (clause 4.15), its previous
/// value too.
fn previous_member(old: &Attribute, ctx: &Ctx, lang: Option<&str>) -> (&'static str, Value) {
    match &old.value {
        AttrValue::Property(v) => ("previousValue", v.clone()),
        AttrValue::GeoProperty(v) => ("previousValue", v.clone()),
        AttrValue::Relationship { object, .. } => ("previousObject", object.clone()),
        AttrValue::LanguageProperty(m) => {
            match lang.and_then(|l| ngsi_model::render::pick_language(m, l)) {
                Some((_, v)) => ("previousValue", v.clone()),
                None => ("previousLanguageMap", Value::Object(m.clone())),
            }
        }
        AttrValue::JsonProperty(v) => ("previousJson", v.clone()),
        AttrValue::VocabProperty(v) => (
            "previousVocab",
            match v {
                Value::String(s) => json!(ctx.compact(s)),
                other => other.clone(),
            },
        ),
        AttrValue::ListProperty(l) => ("previousValueList", Value::Array(l.clone())),
        AttrValue::ListRelationship { objects, .. } => {
            ("previousObjectList", Value::Array(objects.clone()))
        }
    }
}

impl Inner {
    fn on_commit(&self, batch: &[EntityChange]) {
        let now = now_micros();
        let since = Instant::now();
        // Per subscription: what it notifies, and the entities notified
        // (for join=flat).
        type Pending = (Arc<Entry>, Vec<Item>, Vec<Arc<Entity>>);
        let mut pending: Vec<Pending> = Vec::new();
        // The subscriptions of the tenant of the previous change, kept while
        // the tenant stays the same.
        let mut current: Option<(Arc<str>, Option<Entries>)> = None;
        for change in batch {
            if current.as_ref().is_none_or(|(t, _)| *t != change.tenant) {
                let list = self.subs.read().get(&change.tenant).cloned();
                current = Some((change.tenant.clone(), list));
            }
            let Some((_, Some(list))) = &current else {
                continue;
            };
            for entry in list.iter() {
                // Throttling spaces notifications, not the entities of one:
                // once a commit notifies a subscription, its other changes
                // join that notification.
                let admitted = pending.iter().any(|(e, ..)| Arc::ptr_eq(e, entry));
                if let Some(item) = self.evaluate(entry, change, now, admitted) {
                    // Only join=flat needs the notified entities again.
                    let root = change
                        .after
                        .clone()
                        .filter(|_| entry.sub.view.join.as_ref().is_some_and(|j| j.flat));
                    match pending.iter_mut().find(|(e, ..)| Arc::ptr_eq(e, entry)) {
                        Some((_, data, roots)) => {
                            data.push(item);
                            roots.extend(root);
                        }
                        None => {
                            pending.push((entry.clone(), vec![item], root.into_iter().collect()))
                        }
                    }
                }
            }
        }
        for (entry, mut data, roots) in pending {
            // join=flat: the Linked Entities of the notified entities
            // follow them, each once.
            let roots: Vec<&Entity> = roots.iter().map(|e| &**e).collect();
            data.extend(self.flat_linked(&entry, &roots));
            self.metrics.matched.inc();
            self.send(&entry, data, now, since);
        }
        self.feed_live(batch, now);
    }

    /// An entity as `entry` notifies it, with its inline Linked Entities
    /// for `join=inline` (clause 4.5.23; ETSI 046_27–046_30).
    fn rendered(&self, entry: &Entry, entity: &Entity) -> Item {
        let (ctx, view) = (&entry.notify_ctx, &entry.sub.view);
        let shown = crate::project(entity, ctx, view);
        let inline = self.inline_linked(entry, &shown);
        Item::shown(&shown, ctx, view, entry.sub.notification.accept, &inline)
    }

    /// The Linked Entities to inline in `shown` (what `entry` shows of a
    /// notified entity) for `join=inline`; none otherwise.
    fn inline_linked(&self, entry: &Entry, shown: &Entity) -> LinkedEntities {
        let view = &entry.sub.view;
        if view.join.as_ref().is_none_or(|j| j.flat) {
            return LinkedEntities::new();
        }
        // Linked Entities are shown whole: `attributes`, `pick` and `omit`
        // select the members of the notified entities only (ETSI 046_26,
        // 046_30).
        crate::linked::inline_linked(
            &*self.store,
            &entry.state.tenant,
            shown,
            &entry.notify_ctx,
            view,
            &mut { crate::linked::MAX_LINKED },
        )
    }

    /// For `join=flat`, the Linked Entities of `roots` (as `entry` shows
    /// them) that follow them in a notification; none otherwise.
    fn flat_linked(&self, entry: &Entry, roots: &[&Entity]) -> Vec<Item> {
        let sub = &entry.sub;
        let (ctx, view) = (&entry.notify_ctx, &sub.view);
        if view.join.as_ref().is_none_or(|j| !j.flat) {
            return Vec::new();
        }
        let shown: Vec<_> = roots.iter().map(|e| crate::project(e, ctx, view)).collect();
        let shown: Vec<&Entity> = shown.iter().map(|e| &**e).collect();
        crate::linked::flat_linked(&*self.store, &entry.state.tenant, &shown, ctx, view)
            .iter()
            .map(|(e, v)| Item::rendered(e, ctx, v, sub.notification.accept))
            .collect()
    }

    /// Decides whether `change` notifies `entry`, and renders the entity.
    /// `admitted`: a change of the same commit is notified already, so the
    /// throttle was passed.
    fn evaluate(
        &self,
        entry: &Entry,
        change: &EntityChange,
        now: i64,
        admitted: bool,
    ) -> Option<Item> {
        let sub = &entry.sub;
        if sub.time_interval.is_some() || !sub.is_live(now) {
            return None;
        }
        let subject = change.after.as_deref().or(change.before.as_deref())?;
        let lookup = |id: &str| self.store.get(&change.tenant, id);
        if !sub.matcher.matches_looking_up(subject, &lookup) {
            return None;
        }
        let watched = |name: &str| {
            sub.watched
                .as_ref()
                .is_none_or(|w| w.iter().any(|x| &**x == name))
        };
        // The attribute instances the subscription selects (datasetId).
        let view = &sub.view;
        let in_datasets = |a: &Attribute| {
            view.dataset_id
                .as_ref()
                .is_none_or(|ds| ds.iter().any(|d| d.as_deref() == a.dataset_id.as_deref()))
        };
        let t = sub.triggers;
        let fire;
        // On an entity deletion, whether its (watched) attributes are
        // notified as deleted: when the deletion is notified through
        // attributeDeleted, or with showChanges.
        let mut entity_markers = false;
        let mut deleted: Vec<(&str, Vec<&Attribute>)> = Vec::new();
        match (&change.before, &change.after) {
            (None, Some(after)) => {
                let any_watched = after.attrs.iter().any(|(n, _)| watched(n));
                let any_selected = after
                    .attrs
                    .iter()
                    .any(|(n, i)| watched(n) && i.iter().any(in_datasets));
                fire = (t.entity_created && (sub.watched.is_none() || any_watched))
                    || (t.attribute_created && any_selected);
            }
            (Some(before), None) => {
                let any_watched = before.attrs.iter().any(|(n, _)| watched(n));
                let any_selected = before
                    .attrs
                    .iter()
                    .any(|(n, i)| watched(n) && i.iter().any(in_datasets));
                let by_entity = t.entity_deleted && (sub.watched.is_none() || any_watched);
                let by_attributes = t.attribute_deleted && any_selected;
                fire = by_entity || by_attributes;
                entity_markers = sub.notification.show_changes || !by_entity;
            }
            (Some(before), Some(after)) => {
                let d = diff(before, after, in_datasets);
                fire = (t.attribute_created && d.created.iter().any(|n| watched(n)))
                    || (t.attribute_updated && d.updated.iter().any(|n| watched(n)))
                    || (t.attribute_deleted && d.deleted.iter().any(|(n, _)| watched(n)));
                if t.attribute_deleted {
                    deleted = d.deleted;
                }
            }
            (None, None) => return None,
        }
        if !fire {
            return None;
        }
        if !admitted && let Some(throttle) = sub.throttle() {
            let mut last = entry.state.last_queued.lock();
            if last.is_some_and(|at| at.elapsed() < throttle) {
                self.metrics.throttled.inc();
                return None;
            }
            *last = Some(Instant::now());
        }
        let ctx = &entry.notify_ctx;
        let format = view.format;
        let shown = |name: &str| {
            view.attrs
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| &**x == name))
                && view
                    .omit
                    .as_ref()
                    .is_none_or(|o| !o.iter().any(|x| &**x == name))
        };
        let markers = Markers {
            format,
            sys_attrs: sub.notification.sys_attrs && format != Format::KeyValues,
            show_changes: sub.notification.show_changes && format != Format::KeyValues,
            now,
            ctx,
        };
        let Some(after) = change.after.as_deref() else {
            // Entity deleted: deletedAt (and the system attributes), and
            // the deleted attributes when asked for.
            let mut m = Map::new();
            if !view.omit_id {
                m.insert("id".into(), json!(&*subject.id));
            }
            if !view.omit_type {
                m.insert("type".into(), type_value(subject, ctx));
            }
            if sub.notification.sys_attrs {
                m.insert("createdAt".into(), json!(format_micros(subject.created_at)));
                m.insert(
                    "modifiedAt".into(),
                    json!(format_micros(subject.modified_at)),
                );
            }
            m.insert("deletedAt".into(), json!(format_micros(now)));
            if entity_markers {
                for (name, instances) in &subject.attrs {
                    let kept: Vec<&Attribute> =
                        instances.iter().filter(|a| in_datasets(a)).collect();
                    if watched(name) && shown(name) && !kept.is_empty() {
                        m.insert(ctx.compact(name).into_owned(), markers.whole(&kept));
                    }
                }
            }
            return Some(Item::Tree(Value::Object(m)));
        };
        let marks_changes =
            sub.notification.show_changes && format != Format::KeyValues && change.before.is_some();
        if !marks_changes && deleted.is_empty() {
            // Nothing to add to the entity as rendered.
            return Some(self.rendered(entry, after));
        }
        let after_shown = crate::project(after, ctx, view);
        let inline = self.inline_linked(entry, &after_shown);
        let mut out = match crate::shown_value(&after_shown, ctx, view, &inline) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if sub.notification.show_changes
            && format != Format::KeyValues
            && let Some(before) = change.before.as_deref()
        {
            for (name, instances) in &after.attrs {
                let Some(old) = before.attr(name) else {
                    continue;
                };
                let key = ctx.compact(name).into_owned();
                let Some(rendered) = out.get_mut(&key) else {
                    continue;
                };
                let shown_instances: Vec<&Attribute> =
                    instances.iter().filter(|a| in_datasets(a)).collect();
                let targets: Vec<&mut Value> = match rendered {
                    Value::Array(items) => items.iter_mut().collect(),
                    other => vec![other],
                };
                for (slot, instance) in targets.into_iter().zip(shown_instances) {
                    let Some(prev) = old.iter().find(|o| o.dataset_id == instance.dataset_id)
                    else {
                        continue;
                    };
                    if same_content(prev, instance) {
                        continue;
                    }
                    if let Value::Object(m) = slot {
                        let (k, v) = previous_member(prev, ctx, view.lang.as_deref());
                        m.insert(k.into(), v);
                    }
                }
            }
        }
        // Deleted attributes and instances, after the remaining ones.
        for (name, removed) in deleted {
            let removed: Vec<&Attribute> = removed.into_iter().filter(|a| in_datasets(a)).collect();
            if !shown(name) || removed.is_empty() {
                continue;
            }
            let key = ctx.compact(name).into_owned();
            match out.get_mut(&key) {
                None => {
                    out.insert(key, markers.whole(&removed));
                }
                // Simplified: the instances go in the `dataset` map, keyed
                // by datasetId (clause 4.5.4, ETSI 046_22_07).
                Some(rendered) if format == Format::KeyValues => {
                    let mut dataset = match rendered.take() {
                        Value::Object(mut m) if m.len() == 1 && m.contains_key("dataset") => {
                            match m.remove("dataset") {
                                Some(Value::Object(d)) => d,
                                _ => Map::new(),
                            }
                        }
                        one => {
                            let mut d = Map::new();
                            let remaining = after
                                .attr(name)
                                .and_then(|i| i.iter().find(|a| in_datasets(a)));
                            if let Some(a) = remaining {
                                d.insert(ngsi_model::render::dataset_key(a).to_string(), one);
                            }
                            d
                        }
                    };
                    for a in &removed {
                        dataset.insert(
                            ngsi_model::render::dataset_key(a).to_string(),
                            markers.marker(a, true),
                        );
                    }
                    *rendered = json!({ "dataset": dataset });
                }
                Some(rendered) => {
                    let mut items = match rendered.take() {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    items.extend(removed.iter().map(|a| markers.marker(a, true)));
                    *rendered = Value::Array(items);
                }
            }
        }
        Some(Item::Tree(Value::Object(out)))
    }

    /// Renders and queues one notification of `data` for `entry`.
    fn send(&self, entry: &Entry, data: Vec<Item>, now: i64, since: Instant) {
        let sub = &entry.sub;
        let ctx = &entry.notify_ctx;
        let accept = sub.notification.accept;
        let body = notification_body(&sub.id, now, accept, data, ctx, |data| {
            feature_collection(data, ctx, sub)
        });
        let mut headers = vec![("Content-Type".to_string(), accept.media_type().to_string())];
        if accept != Accept::LdJson {
            headers.push((
                "Link".to_string(),
                format!(
                    "<{}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
                    ctx.link_url()
                ),
            ));
        }
        // A subscription made on a Snapshot notifies with the Snapshot's
        // header and its owner's tenant (clause 6.3.22); the name of the
        // snapshot's tenant never leaves the broker.
        let (tenant, snapshot) = match crate::snapshots::owner_of(&entry.state.tenant) {
            Some((owner, id)) => (owner, Some(id)),
            None => (&*entry.state.tenant, None),
        };
        if !tenant.is_empty() {
            headers.push(("NGSILD-Tenant".to_string(), tenant.to_string()));
        }
        if let Some(id) = snapshot {
            headers.push((crate::snapshots::HEADER.to_string(), id.to_string()));
        }
        let message = notify::Message {
            headers,
            body: Bytes::from(body),
            since,
        };
        // A full queue is counted by the notifier.
        let _ = self
            .notifier
            .send(&entry.key, &sub.notification.endpoint, message);
    }

    /// One periodic notification: every entity that matches now.
    fn periodic(&self, entry: &Entry) {
        let now = now_micros();
        if !entry.sub.is_live(now) {
            return;
        }
        // Every entity the selectors accept has one of their type names
        // (type expressions have no negation): those are the candidates.
        let types: Vec<ngsi_model::Iri> = entry
            .sub
            .entities
            .iter()
            .flatten()
            .flat_map(|s| s.types.names())
            .map(ngsi_model::iri)
            .collect();
        let matcher =
            crate::query::resolve_links(&*self.store, &entry.state.tenant, &entry.sub.matcher);
        let page = self.store.query(
            &entry.state.tenant,
            store::Selection {
                types: Some(&types),
                ..store::Selection::default()
            },
            &|e: &Entity| matcher.matches(e),
            store::Page {
                offset: 0,
                limit: usize::MAX,
                count: false,
            },
        );
        let mut data: Vec<Item> = page
            .entities
            .iter()
            .map(|e| self.rendered(entry, e))
            .collect();
        let roots: Vec<&Entity> = page.entities.iter().map(|e| &**e).collect();
        data.extend(self.flat_linked(entry, &roots));
        if !data.is_empty() {
            self.metrics.matched.inc();
            self.send(entry, data, now, Instant::now());
        }
    }

    fn feed_live(&self, batch: &[EntityChange], now: i64) {
        let mut live = self.live.lock();
        if live.is_empty() {
            return;
        }
        live.retain(|sink| !sink.tx.is_closed());
        for sink in live.iter() {
            for change in batch.iter().filter(|c| c.tenant == sink.tenant) {
                let Some(subject) = change.after.as_deref().or(change.before.as_deref()) else {
                    continue;
                };
                let lookup = |id: &str| self.store.get(&sink.tenant, id);
                if !sink.filter.matches_looking_up(subject, &lookup) {
                    continue;
                }
                let item = match change.after.as_deref() {
                    Some(after) => Value::Object(crate::render_view(after, &sink.ctx, &sink.view)),
                    None => json!({
                        "id": &*subject.id,
                        "type": type_value(subject, &sink.ctx),
                        "deletedAt": format_micros(now),
                    }),
                };
                let event = json!({
                    "id": format!("urn:ngsi-ld:Notification:{}", unique_suffix()),
                    "type": "Notification",
                    "notifiedAt": format_micros(now),
                    "data": [item],
                });
                if sink.tx.try_send(Bytes::from(event.to_string())).is_err() {
                    self.metrics.live_dropped.inc();
                }
            }
        }
    }

    async fn flush_statuses(&self) {
        let dirty: Vec<Arc<DeliveryState>> = self
            .states
            .read()
            .values()
            .filter(|s| s.dirty.swap(false, Ordering::AcqRel))
            .cloned()
            .collect();
        for state in dirty {
            let value = state.status.lock().to_json();
            if let Err(e) = self
                .store
                .put_record(&state.tenant, STATUS_COLLECTION, &state.id, Some(value))
                .await
            {
                tracing::warn!(error = %e, "a subscription status could not be saved");
                state.dirty.store(true, Ordering::Release);
            }
        }
    }
}

fn type_value(e: &Entity, ctx: &Ctx) -> Value {
    let types: Vec<Value> = e.types.iter().map(|t| json!(ctx.compact(t))).collect();
    if types.len() == 1 {
        types.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(types)
    }
}

/// A notified entity as rendered: its JSON tree, or (when nothing is added
/// to it after rendering) its JSON text.
#[derive(Debug)]
enum Item {
    Tree(Value),
    Text(Vec<u8>),
}

impl Item {
    /// `entity` as notified with nothing added: its JSON text, with no tree
    /// built, except in GeoJSON, whose FeatureCollection is made from trees.
    fn rendered(entity: &Entity, ctx: &Ctx, view: &ViewOptions, accept: Accept) -> Self {
        Self::shown(
            &crate::project(entity, ctx, view),
            ctx,
            view,
            accept,
            &LinkedEntities::new(),
        )
    }

    /// What the view shows of an entity ([`crate::project`]), with the
    /// Linked Entities to inline, as [`Item::rendered`] gives it.
    fn shown(
        shown: &Entity,
        ctx: &Ctx,
        view: &ViewOptions,
        accept: Accept,
        linked: &LinkedEntities,
    ) -> Self {
        match accept {
            Accept::GeoJson => Item::Tree(match crate::shown_value(shown, ctx, view, linked) {
                tree @ Value::Object(_) => tree,
                _ => Value::Object(Map::new()),
            }),
            Accept::Json | Accept::LdJson => Item::Text(
                crate::shown_json(shown, ctx, view, linked).unwrap_or_else(|| b"{}".to_vec()),
            ),
        }
    }

    /// The tree (GeoJSON). [`Item::rendered`] never gives text in GeoJSON,
    /// so the parse is only a fallback (exact: serde_json parses floats
    /// with `float_roundtrip`).
    fn into_tree(self) -> Value {
        match self {
            Item::Tree(v) => v,
            Item::Text(t) => serde_json::from_slice(&t).unwrap_or(Value::Null),
        }
    }
}

/// The text of a notification (clause 5.3.1) of `data`: its members in the
/// order `id`, `type`, `subscriptionId`, `notifiedAt`, `data`; in JSON-LD
/// each entity carries the @context; in GeoJSON `data` is one
/// FeatureCollection (made by `to_geojson`).
fn notification_body(
    subscription: &str,
    now: i64,
    accept: Accept,
    data: Vec<Item>,
    ctx: &Ctx,
    to_geojson: impl FnOnce(Vec<Value>) -> Value,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        256 + data
            .iter()
            .map(|d| match d {
                Item::Text(t) => t.len() + 1,
                Item::Tree(_) => 512,
            })
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"id\":\"urn:ngsi-ld:Notification:");
    out.extend_from_slice(unique_suffix().as_bytes());
    out.extend_from_slice(b"\",\"type\":\"Notification\",\"subscriptionId\":");
    let _ = serde_json::to_writer(&mut out, subscription);
    out.extend_from_slice(b",\"notifiedAt\":\"");
    out.extend_from_slice(format_micros(now).as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    match accept {
        Accept::GeoJson => {
            let collection = to_geojson(data.into_iter().map(Item::into_tree).collect());
            let _ = serde_json::to_writer(&mut out, &collection);
        }
        Accept::Json | Accept::LdJson => {
            let context = (accept == Accept::LdJson)
                .then(|| serde_json::to_vec(&ctx.body_value()).unwrap_or_default());
            out.push(b'[');
            for (n, item) in data.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                match (item, &context) {
                    (Item::Tree(mut v), context) => {
                        if let (Value::Object(m), Some(_)) = (&mut v, context) {
                            m.insert("@context".into(), ctx.body_value());
                        }
                        let _ = serde_json::to_writer(&mut out, &v);
                    }
                    (Item::Text(t), context) => {
                        crate::push_entity_json(&mut out, &t, context.as_deref());
                    }
                }
            }
            out.push(b']');
        }
    }
    out.push(b'}');
    out
}

/// The GeoJSON form of notified entities (clause 4.5.16).
fn feature_collection(data: Vec<Value>, ctx: &Ctx, sub: &Subscription) -> Value {
    let geo_name = sub
        .geo_q_property
        .as_ref()
        .map(|p| ctx.compact(p).into_owned())
        .unwrap_or_else(|| "location".to_string());
    let features: Vec<Value> = data
        .into_iter()
        .map(|d| match d {
            Value::Object(m) => ngsi_model::render::geojson_feature(m, &geo_name),
            other => other,
        })
        .collect();
    json!({"type": "FeatureCollection", "features": features})
}

#[cfg(test)]
mod tests {
    use super::*;
    use ngsi_model::iri;

    fn entity() -> Entity {
        let mut speed = Attribute::new(AttrValue::Property(json!(42.5)));
        speed.observed_at = Some("2026-11-26T10:00:00Z".into());
        speed.unit_code = Some("KMH".into());
        Entity {
            id: "urn:ngsi-ld:Road:1".into(),
            types: vec![iri("https://uri.etsi.org/ngsi-ld/default-context/Road")],
            scopes: vec![],
            attrs: vec![(
                iri("https://uri.etsi.org/ngsi-ld/default-context/speed"),
                vec![speed].into(),
            )],
            created_at: 1,
            modified_at: 2,
            expires_at: None,
        }
    }

    /// What an update must change for attributeUpdated: sub-attributes in
    /// another order, or observedAt spelled otherwise, change nothing; a
    /// new expiresAt or a new sub-attribute value does.
    #[test]
    fn a_change_is_a_different_member_not_another_spelling_or_order() {
        let sub = |v: i64| Attribute::new(AttrValue::Property(json!(v)));
        let mut a = Attribute::new(AttrValue::Property(json!(1)));
        a.observed_at = Some("2026-11-26T10:00:00Z".into());
        a.sub = vec![(iri("urn:x:a"), sub(1)), (iri("urn:x:b"), sub(2))];
        let mut b = a.clone();
        b.sub.reverse();
        b.observed_at = Some("2026-11-26T10:00:00.000Z".into());
        assert!(same_content(&a, &b));
        let mut c = b.clone();
        c.sub[0].1 = sub(3);
        assert!(!same_content(&a, &c));
        let mut d = b.clone();
        d.observed_at = Some("2026-11-26T10:00:01Z".into());
        assert!(!same_content(&a, &d));
        let mut e = b;
        e.extra = ngsi_model::entity::AttrExtra {
            expires_at: Some("2030-01-01T00:00:00Z".into()),
            value_type: None,
        }
        .boxed();
        assert!(!same_content(&a, &e));
    }

    /// GeoJSON notifications are made from trees (a FeatureCollection is
    /// built around each entity); the others take the entity's text.
    #[test]
    fn only_geojson_renders_a_tree() {
        let ctx = Ctx::core();
        let view = ViewOptions::default();
        let e = entity();
        assert!(matches!(
            Item::rendered(&e, &ctx, &view, Accept::GeoJson),
            Item::Tree(_)
        ));
        for accept in [Accept::Json, Accept::LdJson] {
            assert!(matches!(
                Item::rendered(&e, &ctx, &view, accept),
                Item::Text(_)
            ));
        }
    }

    /// The body without its `id` (a fresh suffix in each).
    fn parsed(body: &[u8]) -> Value {
        let mut v: Value = serde_json::from_slice(body).unwrap();
        let id = v.as_object_mut().unwrap().shift_remove("id").unwrap();
        assert!(
            id.as_str()
                .unwrap()
                .starts_with("urn:ngsi-ld:Notification:")
        );
        v
    }

    /// An entity notified as text reads as the same notification as the
    /// tree it replaced, in every form, with several entities and with an
    /// empty one (pick/omit left nothing).
    #[test]
    fn text_and_tree_items_make_the_same_notification() {
        let ctx = Ctx::core();
        let e = entity();
        for format in [Format::Normalized, Format::Concise, Format::KeyValues] {
            let view = ViewOptions {
                format,
                sys_attrs: true,
                ..ViewOptions::default()
            };
            for accept in [Accept::Json, Accept::LdJson, Accept::GeoJson] {
                let text = || {
                    vec![
                        Item::rendered(&e, &ctx, &view, Accept::Json),
                        Item::Text(b"{}".to_vec()),
                    ]
                };
                let tree = || {
                    vec![
                        Item::rendered(&e, &ctx, &view, Accept::GeoJson),
                        Item::Tree(Value::Object(Map::new())),
                    ]
                };
                let geo = |data: Vec<Value>| json!({"type": "FeatureCollection", "n": data});
                let a = notification_body("urn:s:1", 7, accept, text(), &ctx, geo);
                let b = notification_body("urn:s:1", 7, accept, tree(), &ctx, geo);
                let (a, b) = (parsed(&a), parsed(&b));
                assert_eq!(a, b, "{format:?} {accept:?}");
                assert_eq!(a["subscriptionId"], "urn:s:1");
                assert_eq!(a["notifiedAt"], format_micros(7));
                if accept == Accept::LdJson {
                    assert!(a["data"][1]["@context"].is_string(), "{a}");
                    assert_eq!(a["data"][0]["id"], "urn:ngsi-ld:Road:1");
                }
            }
        }
    }
}
