//! Context source registration subscriptions (clause 5.11): subscriptions
//! whose notifications tell about registrations, not entities. A
//! subscription is the Subscription data type (clause 5.2.12) read by the
//! same model as entity subscriptions; its entity selectors, watched
//! attributes, `q`, `csf`, `geoQ` and `scopeQ` select registrations as a
//! discovery query does (clause 5.12). Each notification carries a
//! `triggerReason`: `newlyMatching`, `updated` or `noLongerMatching`
//! (clause 5.11.7); its type is ContextSourceNotification (clause 5.3.2).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ngsi_model::Iri;
use ngsi_model::time::{format_micros, now_micros};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use store::Store;

use super::model::{IntervalKind, Registration, RegistrationQuery};
use crate::Ctx;
use crate::query::IdPattern;
use crate::subscriptions::{Periodic, Status, Subscription, unique_suffix};

/// Why a notification about a registration was sent (clause 5.11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    NewlyMatching,
    Updated,
    NoLongerMatching,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::NewlyMatching => "newlyMatching",
            Trigger::Updated => "updated",
            Trigger::NoLongerMatching => "noLongerMatching",
        }
    }
}

/// One subscription with what delivery needs.
pub struct Entry {
    pub sub: Subscription,
    /// The context notifications are compacted with.
    pub ctx: Ctx,
    key: Arc<str>,
    /// Discovery queries, one per entity selector (or one without).
    queries: Vec<RegistrationQuery>,
    pub status: Arc<StatusCell>,
    periodic: Periodic,
}

impl Entry {
    /// Whether `r` is a registration this subscription is about.
    fn matches(&self, r: &Registration) -> bool {
        self.queries.iter().any(|q| q.matches(r))
    }

    /// `r` with only the RegistrationInfo entries that match (clause
    /// 5.11.7: the notification carries what the subscription asked for).
    fn narrowed(&self, r: &Registration) -> Registration {
        let mut out = r.clone();
        out.information = r
            .information
            .iter()
            .filter(|info| self.queries.iter().any(|q| q.info_is_selected(info)))
            .cloned()
            .collect();
        if out.information.is_empty() {
            out.information = r.information.clone();
        }
        out
    }
}

/// The discovery queries of a subscription.
fn queries_of(sub: &Subscription) -> Result<Vec<RegistrationQuery>, ngsi_model::NgsiError> {
    let bad = |e: String| ngsi_model::NgsiError::bad_data(e);
    // "The combination of the watchedAttributes and the attributes in the
    // NotificationParams" are the attributes matched (clause 5.12).
    let attrs = match (&sub.watched, &sub.notification.attributes) {
        (None, None) => None,
        (watched, shown) => {
            let mut all: Vec<Iri> = watched.iter().chain(shown).flatten().cloned().collect();
            all.sort();
            all.dedup();
            Some(all)
        }
    };
    let mut base = RegistrationQuery {
        attrs,
        q: sub.q_matched.clone(),
        scope_q: sub.scope_q.clone(),
        time: sub
            .temporal_q
            .as_ref()
            .map(|(_, range)| (IntervalKind::of(range.property), range.from, range.to)),
        ..Default::default()
    };
    crate::query::refuse_links(
        sub.q.as_ref(),
        "subscriptions to context source registrations",
    )?;
    if let Some(csf) = &sub.csf {
        base.csf = Some(ngsi_query::parse_q(csf).map_err(|e| bad(format!("invalid csf: {e}")))?);
    }
    if let (Some(geo), Some(property)) = (&sub.geo_q, &sub.geo_q_property) {
        let g =
            ngsi_geo::parse_geoquery_json(geo).map_err(|e| bad(format!("invalid geoQ: {e}")))?;
        let at = RegistrationQuery::geo_member(property).ok_or_else(|| {
            bad(
                "the geoproperty of geoQ must be location, observationSpace or operationSpace"
                    .into(),
            )
        })?;
        base.geo = Some((g, at));
    }
    let Some(selectors) = &sub.entities else {
        return Ok(vec![base]);
    };
    selectors
        .iter()
        .map(|s| {
            let mut q = base.clone();
            q.ids = s.ids.clone();
            q.id_pattern = s
                .id_pattern
                .as_deref()
                .map(IdPattern::new)
                .transpose()
                .map_err(|e| bad(format!("invalid idPattern: {e}")))?;
            q.types = Some(s.types.clone());
            Ok(q)
        })
        .collect()
}

/// The delivery status of one subscription, kept across its updates and
/// written to the store at most once a second when it changed.
pub struct StatusCell {
    tenant: String,
    id: Arc<str>,
    pub status: Mutex<Status>,
    dirty: AtomicBool,
}

/// The store collection of the delivery statuses.
pub(crate) const STATUS_COLLECTION: &str = "csourceSubscriptionStatus";

/// The subscriptions of one tenant, ordered by id.
type TenantEntries = BTreeMap<Arc<str>, Arc<Entry>>;

struct Inner {
    entries: RwLock<HashMap<String, TenantEntries>>,
    /// Delivery status by notifier key, kept across updates.
    statuses: RwLock<HashMap<Arc<str>, Arc<StatusCell>>>,
    store: Arc<dyn Store>,
    notifier: Mutex<Option<notify::Notifier>>,
    config: notify::NotifierConfig,
}

/// The CSR subscriptions of every tenant and their notifier.
#[derive(Clone)]
pub struct CsrSubscriptions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CsrSubscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrSubscriptions").finish_non_exhaustive()
    }
}

/// Reports of the notifier, applied to the delivery status.
struct StatusReports(std::sync::Weak<Inner>);

impl notify::Reports for StatusReports {
    fn report(&self, key: &str, event: notify::Event) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let Some(cell) = inner.statuses.read().get(key).cloned() else {
            return;
        };
        cell.status.lock().apply(&event, now_micros());
        cell.dirty.store(true, Ordering::Release);
    }
}

fn key_of(tenant: &str, id: &str) -> Arc<str> {
    Arc::from(format!("csr\n{tenant}\n{id}").as_str())
}

impl CsrSubscriptions {
    pub fn new(config: notify::NotifierConfig, store: Arc<dyn Store>) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::default(),
                statuses: RwLock::default(),
                store,
                notifier: Mutex::new(None),
                config,
            }),
        }
    }

    /// Starts the status writer. Needs a Tokio runtime.
    pub fn start(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let dirty: Vec<Arc<StatusCell>> = inner
                    .statuses
                    .read()
                    .values()
                    .filter(|c| c.dirty.swap(false, Ordering::AcqRel))
                    .cloned()
                    .collect();
                for cell in dirty {
                    let value = cell.status.lock().to_json();
                    let saved = inner
                        .store
                        .put_record(&cell.tenant, STATUS_COLLECTION, &cell.id, Some(value))
                        .await;
                    if let Err(e) = saved {
                        tracing::warn!(error = %e, "a registration subscription status could not be saved");
                        cell.dirty.store(true, Ordering::Release);
                    }
                }
            }
        });
    }

    /// The notifier, made on first use (it needs a Tokio runtime).
    fn notifier(&self) -> notify::Notifier {
        self.inner
            .notifier
            .lock()
            .get_or_insert_with(|| {
                notify::Notifier::new(
                    self.inner.config.clone(),
                    Arc::new(StatusReports(Arc::downgrade(&self.inner))),
                )
            })
            .clone()
    }

    pub fn get(&self, tenant: &str, id: &str) -> Option<Arc<Entry>> {
        self.inner.entries.read().get(tenant)?.get(id).cloned()
    }

    pub fn list(&self, tenant: &str) -> Vec<Arc<Entry>> {
        self.inner
            .entries
            .read()
            .get(tenant)
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.inner.entries.read().contains_key(tenant)
    }

    /// Checks that `sub` can select registrations.
    pub fn check(sub: &Subscription) -> Result<(), ngsi_model::NgsiError> {
        queries_of(sub).map(|_| ())
    }

    /// Installs (or replaces) a subscription, keeping its delivery status
    /// (or starting from `stored`), and starts its periodic notifications.
    /// `registrations` gives the registrations of the tenant for those.
    pub fn install(
        &self,
        tenant: &str,
        sub: Subscription,
        ctx: Ctx,
        stored: Option<Status>,
        registrations: impl Fn() -> Vec<Arc<Registration>> + Send + Sync + 'static,
    ) -> Result<Arc<Entry>, ngsi_model::NgsiError> {
        let queries = queries_of(&sub)?;
        let key = key_of(tenant, &sub.id);
        let status = self
            .inner
            .statuses
            .write()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(StatusCell {
                    tenant: tenant.to_string(),
                    id: sub.id.clone(),
                    status: Mutex::new(stored.unwrap_or_default()),
                    dirty: AtomicBool::new(false),
                })
            })
            .clone();
        let entry = Arc::new(Entry {
            sub,
            ctx,
            key,
            queries,
            status,
            periodic: Periodic::default(),
        });
        if let Some(secs) = entry.sub.time_interval {
            let this = self.clone();
            let tenant = tenant.to_string();
            entry
                .periodic
                .start(secs, Arc::downgrade(&entry), move |entry| {
                    this.notify_all(&tenant, entry, &registrations(), None);
                });
        }
        self.inner
            .entries
            .write()
            .entry(tenant.to_string())
            .or_default()
            .insert(entry.sub.id.clone(), entry.clone());
        Ok(entry)
    }

    pub fn remove(&self, tenant: &str, id: &str) {
        let key = key_of(tenant, id);
        if let Some(list) = self.inner.entries.write().get_mut(tenant) {
            list.remove(id);
        }
        self.inner.statuses.write().remove(&key);
        self.notifier().forget(&key);
    }

    /// Notifies `entry` of every registration that matches it now (on
    /// creation or update of the subscription, `trigger` newlyMatching; on
    /// its timer, none).
    pub fn notify_all(
        &self,
        tenant: &str,
        entry: &Entry,
        registrations: &[Arc<Registration>],
        trigger: Option<Trigger>,
    ) {
        let now = now_micros();
        if !entry.sub.is_live(now) {
            return;
        }
        let data: Vec<Registration> = registrations
            .iter()
            .filter(|r| !r.expired(now) && entry.matches(r))
            .map(|r| entry.narrowed(r))
            .collect();
        if !data.is_empty() {
            self.send(tenant, entry, &data, trigger, now);
        }
    }

    /// Tells the subscriptions of `tenant` that registration `before`
    /// became `after` (`None`: did not exist, or was deleted).
    pub fn on_change(
        &self,
        tenant: &str,
        before: Option<&Registration>,
        after: Option<&Registration>,
    ) {
        let now = now_micros();
        for entry in self.list(tenant) {
            if !entry.sub.is_live(now) || entry.sub.time_interval.is_some() {
                continue;
            }
            let was = before.is_some_and(|r| entry.matches(r));
            let is = after.is_some_and(|r| entry.matches(r));
            let (trigger, r) = match (was, is, before, after) {
                (false, true, _, Some(r)) => (Trigger::NewlyMatching, r),
                (true, true, _, Some(r)) => (Trigger::Updated, r),
                (true, false, Some(r), _) => (Trigger::NoLongerMatching, r),
                _ => continue,
            };
            if entry.sub.throttle().is_some_and(|t| {
                entry
                    .status
                    .status
                    .lock()
                    .last_notification
                    .is_some_and(|at| now - at < i64::try_from(t.as_micros()).unwrap_or(i64::MAX))
            }) {
                continue;
            }
            self.send(tenant, &entry, &[entry.narrowed(r)], Some(trigger), now);
        }
    }

    fn send(
        &self,
        tenant: &str,
        entry: &Entry,
        data: &[Registration],
        trigger: Option<Trigger>,
        now: i64,
    ) {
        let ctx = &entry.ctx;
        let ld = entry.sub.notification.accept == crate::subscriptions::Accept::LdJson;
        let items: Vec<Value> = data
            .iter()
            .map(|r| {
                let mut m = r.render(ctx, false);
                if ld {
                    m.insert("@context".into(), ctx.body_value());
                }
                Value::Object(m)
            })
            .collect();
        let mut body = Map::new();
        body.insert(
            "id".into(),
            json!(format!("urn:ngsi-ld:Notification:{}", unique_suffix())),
        );
        body.insert("type".into(), json!("ContextSourceNotification"));
        body.insert("subscriptionId".into(), json!(&*entry.sub.id));
        body.insert("notifiedAt".into(), json!(format_micros(now)));
        body.insert("data".into(), Value::Array(items));
        if let Some(t) = trigger {
            body.insert("triggerReason".into(), json!(t.as_str()));
        }
        let media = if ld {
            "application/ld+json"
        } else {
            "application/json"
        };
        let mut headers = vec![("Content-Type".to_string(), media.to_string())];
        if !ld {
            headers.push((
                "Link".to_string(),
                format!(
                    "<{}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
                    ctx.link_url()
                ),
            ));
        }
        if !tenant.is_empty() {
            headers.push(("NGSILD-Tenant".to_string(), tenant.to_string()));
        }
        let message = notify::Message {
            headers,
            body: Bytes::from(Value::Object(body).to_string()),
            since: Instant::now(),
        };
        // A full queue is counted by the notifier.
        let _ = self
            .notifier()
            .send(&entry.key, &entry.sub.notification.endpoint, message);
    }
}
