//! Distributed subscriptions (clauses 5.8.1.4, 5.8.2.4, 5.8.5.4 and the
//! inbound part of 5.8.6): the copies of this broker's subscriptions at the
//! registered context sources, and the notifications the sources send for
//! them.
//!
//! The relay is level-based: a change of a tenant's subscriptions or
//! registrations marks the tenant, and one task computes the copies the
//! tenant should have, compares them with what each source was sent, and
//! sends the difference (POST, PATCH, DELETE). What was sent is a durable
//! record, so a restart sends nothing that did not change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ngsi_model::time::now_micros;
use ngsi_model::{ErrorKind, NgsiError, NgsiResult, Terms};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use store::Store;

use super::Engine;
use super::model::{EntitySelector, Subscription};
use crate::Ctx;
use crate::query::IdPattern;
use crate::registrations::forward::via_names;
use crate::registrations::{EntityInfo, Registration, Registry};

/// The store collection of what each source was sent.
pub(crate) const COLLECTION: &str = "remoteSubscriptions";

/// How long the relay keeps asking a source that does not answer to delete
/// a copy; then the copy is forgotten (its notifications are refused).
const GIVE_UP_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;

/// The path, under `--public-url`, where sources send the notifications of
/// the copies.
pub const CALLBACK_PATH: &str = "/wuyang/v1/notifications";

/// What one source was sent for one subscription.
#[derive(Debug, Clone)]
struct Sent {
    registration: Arc<Registration>,
    copy_id: String,
    /// The copy as last sent (with its id).
    doc: Value,
    /// The source refused `doc` with an error status: it is not sent again
    /// until the copy changes.
    refused: bool,
    /// The copy is no longer wanted and the source has not answered its
    /// deletion since then (microseconds): it is asked again.
    undeleted_since: Option<i64>,
}

impl Sent {
    fn to_json(&self) -> Value {
        json!({
            "registration": &*self.registration.id,
            "endpoint": self.registration.endpoint,
            "tenant": self.registration.tenant(),
            "copyId": self.copy_id,
            "doc": self.doc,
            "refused": self.refused,
            "undeletedSince": self.undeleted_since,
        })
    }

    /// A stored record entry; the registration is the live one, else one
    /// rebuilt from the endpoint and tenant it was sent to (enough to
    /// delete the copy).
    fn from_json(v: &Value, live: &[Arc<Registration>]) -> Option<Self> {
        let id = v.get("registration")?.as_str()?;
        let endpoint = v.get("endpoint")?.as_str()?;
        let registration = match live
            .iter()
            .find(|r| &*r.id == id && r.endpoint.as_deref() == Some(endpoint))
        {
            Some(r) => r.clone(),
            None => {
                let mut doc = json!({
                    "id": id,
                    "type": "ContextSourceRegistration",
                    "endpoint": endpoint,
                    "information": [{"propertyNames": ["gone"]}],
                });
                if let Some(t) = v.get("tenant").and_then(Value::as_str) {
                    doc["tenant"] = json!(t);
                }
                let doc = doc.as_object()?;
                Arc::new(Registration::create(doc, &Ctx::core(), now_micros(), false).ok()?)
            }
        };
        Some(Self {
            registration,
            copy_id: v.get("copyId")?.as_str()?.to_string(),
            doc: v.get("doc")?.clone(),
            refused: v.get("refused").and_then(Value::as_bool).unwrap_or(false),
            undeleted_since: v.get("undeletedSince").and_then(Value::as_i64),
        })
    }
}

/// The copies of one subscription, by registration.
type Copies = Vec<Sent>;

#[derive(Default)]
struct Inner {
    /// Tenants whose copies may be out of date.
    dirty: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
    /// What was sent, by tenant and subscription id.
    sent: Mutex<HashMap<(String, String), Copies>>,
    /// Copy id → tenant and subscription id.
    by_copy: Mutex<HashMap<String, (String, String)>>,
}

/// The relay handle (cheap to clone).
#[derive(Clone, Default)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

/// What the relay task works with.
pub(crate) struct Parts {
    pub engine: Engine,
    pub registry: Registry,
    pub store: Arc<dyn Store>,
    /// This broker's Context Source alias (before the tenant part).
    pub alias: String,
    /// Where sources reach this broker (`--public-url`).
    pub public_url: Option<String>,
    pub restored: tokio::sync::watch::Receiver<bool>,
    /// How long a source that did not answer waits before it is asked
    /// again.
    pub retry: Duration,
}

impl Relay {
    /// Marks `tenant`: its copies are compared again soon.
    pub(crate) fn touch(&self, tenant: &str) {
        self.inner.dirty.lock().insert(tenant.to_string());
        self.inner.wake.notify_one();
    }

    /// The tenant and subscription a copy id stands for.
    pub(crate) fn subscription_of(&self, copy_id: &str) -> Option<(String, String)> {
        self.inner.by_copy.lock().get(copy_id).cloned()
    }

    /// Starts the relay task. Needs a Tokio runtime.
    pub(crate) fn start(&self, parts: Parts) {
        let relay = self.clone();
        tokio::spawn(async move { relay.run(parts).await });
    }

    async fn run(self, mut parts: Parts) {
        let _ = parts.restored.wait_for(|r| *r).await;
        let Some(public_url) = parts.public_url.clone() else {
            if parts
                .engine
                .tenants()
                .iter()
                .any(|t| !parts.registry.live(t).is_empty())
            {
                tracing::warn!(
                    "no --public-url: subscriptions are not forwarded to registered context sources"
                );
            }
            return;
        };
        let callback = format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/'));
        self.load(&parts);
        let mut retry: HashSet<String> = HashSet::new();
        loop {
            let woken = self.inner.wake.notified();
            let mut tenants: Vec<String> = self.inner.dirty.lock().drain().collect();
            tenants.extend(retry.drain());
            tenants.sort();
            tenants.dedup();
            for tenant in tenants {
                if self.reconcile(&parts, &callback, &tenant).await {
                    retry.insert(tenant);
                }
            }
            if retry.is_empty() {
                woken.await;
            } else {
                let _ = tokio::time::timeout(parts.retry, woken).await;
            }
        }
    }

    /// Reads what was sent before the last stop, and marks every tenant
    /// with copies or subscriptions.
    fn load(&self, parts: &Parts) {
        let mut tenants: Vec<String> = crate::tenants_with_default(&*parts.store);
        tenants.extend(parts.engine.tenants());
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let live = parts.registry.live(&tenant);
            for (sub_id, record) in parts.store.records(&tenant, COLLECTION) {
                let copies: Copies = record
                    .get("copies")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| Sent::from_json(c, &live))
                    .collect();
                let mut by_copy = self.inner.by_copy.lock();
                for c in &copies {
                    by_copy.insert(c.copy_id.clone(), (tenant.clone(), sub_id.clone()));
                }
                drop(by_copy);
                self.inner
                    .sent
                    .lock()
                    .insert((tenant.clone(), sub_id), copies);
            }
            self.touch(&tenant);
        }
    }

    /// Brings the copies of `tenant` in line with its subscriptions and
    /// registrations. True when a source did not answer (ask again later).
    async fn reconcile(&self, parts: &Parts, callback: &str, tenant: &str) -> bool {
        if crate::snapshots::owner_of(tenant).is_some() {
            return false;
        }
        let alias = crate::tenant_alias(&parts.alias, tenant);
        let registrations = parts.registry.live(tenant);
        // What should be: per subscription, the copy each source gets.
        let mut wanted: HashMap<String, Vec<(Arc<Registration>, Value)>> = HashMap::new();
        let mut contexts: HashMap<String, (Ctx, Option<String>)> = HashMap::new();
        for entry in parts.engine.list(tenant) {
            let sub = &entry.sub;
            if sub.local_only == Some(true) {
                continue;
            }
            let copies: Vec<(Arc<Registration>, Value)> = registrations
                .iter()
                .filter(|r| r.offers("createSubscription"))
                .filter(|r| {
                    r.alias()
                        .is_none_or(|a| !sub.via.as_deref().is_some_and(|v| via_names(v, a)))
                })
                .filter_map(|r| {
                    reduced_copy(sub, &entry.notify_ctx, r, callback).map(|doc| (r.clone(), doc))
                })
                .collect();
            if !copies.is_empty() {
                contexts.insert(
                    sub.id.to_string(),
                    (entry.notify_ctx.clone(), sub.via.clone()),
                );
                wanted.insert(sub.id.to_string(), copies);
            }
        }
        let held: Vec<String> = self
            .inner
            .sent
            .lock()
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, s)| s.clone())
            .collect();
        let mut subs: Vec<String> = wanted.keys().cloned().chain(held).collect();
        subs.sort();
        subs.dedup();
        let mut unanswered = false;
        for sub_id in subs {
            let key = (tenant.to_string(), sub_id.clone());
            let before: Copies = self
                .inner
                .sent
                .lock()
                .get(&key)
                .cloned()
                .unwrap_or_default();
            let want = wanted.remove(&sub_id).unwrap_or_default();
            let mut after: Copies = Vec::new();
            // Copies no longer wanted, or at a source whose endpoint moved:
            // deleted there, or kept to be deleted on the retry while the
            // source does not answer.
            for old in &before {
                let kept = want.iter().any(|(r, _)| same_source(r, &old.registration));
                if kept {
                    continue;
                }
                self.inner.by_copy.lock().remove(&old.copy_id);
                if old.refused || self.delete(parts, old, &alias).await {
                    continue;
                }
                let since = old.undeleted_since.unwrap_or_else(now_micros);
                if now_micros() - since < GIVE_UP_MICROS {
                    unanswered = true;
                    after.push(Sent {
                        undeleted_since: Some(since),
                        ..old.clone()
                    });
                } else {
                    tracing::warn!(registration = %old.registration.id, copy = %old.copy_id,
                        "a context source did not answer for a week: the copy of a subscription is forgotten there");
                }
            }
            for (r, mut doc) in want {
                let Some((ctx, via)) = contexts.get(&sub_id) else {
                    continue;
                };
                let previous = before
                    .iter()
                    .find(|s| same_source(r.as_ref(), &s.registration));
                let mut copy_id = previous
                    .map(|p| p.copy_id.clone())
                    .unwrap_or_else(new_copy_id);
                doc["id"] = json!(copy_id);
                if let Some(p) = previous
                    && p.doc == doc
                {
                    after.push(Sent {
                        registration: r.clone(),
                        undeleted_since: None,
                        ..p.clone()
                    });
                    continue;
                }
                // The source holds the previous copy: a PATCH turns it into
                // this one, unless a member went (a PATCH cannot say so in
                // a way every broker reads); then it is deleted and made
                // anew, beside it when the source cannot delete.
                let held = previous.filter(|p| !p.refused);
                let patch = held.is_some_and(|p| {
                    r.offers("updateSubscription") && !drops_members(&p.doc, &doc)
                });
                if let Some(p) = held
                    && !patch
                    && !r.offers("deleteSubscription")
                {
                    self.inner.by_copy.lock().remove(&p.copy_id);
                    copy_id = new_copy_id();
                    doc["id"] = json!(copy_id);
                }
                self.inner
                    .by_copy
                    .lock()
                    .insert(copy_id.clone(), key.clone());
                let send = ToSource {
                    parts,
                    registration: &r,
                    ctx,
                    via: via.as_deref(),
                    alias: &alias,
                };
                let outcome = if patch {
                    match send.patch(&copy_id, &doc).await {
                        // The source lost it: made anew.
                        Ok(404) => send.post(&doc).await,
                        other => other,
                    }
                } else {
                    if let Some(p) = held
                        && r.offers("deleteSubscription")
                    {
                        let _ = send.delete(&p.copy_id).await;
                    }
                    send.post(&doc).await
                };
                match outcome {
                    Ok(status) if (200..300).contains(&status) => after.push(Sent {
                        registration: r.clone(),
                        copy_id,
                        doc,
                        refused: false,
                        undeleted_since: None,
                    }),
                    Ok(status) => {
                        tracing::warn!(%tenant, subscription = %sub_id, registration = %r.id, status,
                            "a context source refused the copy of a subscription");
                        after.push(Sent {
                            registration: r.clone(),
                            copy_id,
                            doc,
                            refused: true,
                            undeleted_since: None,
                        });
                    }
                    Err(why) => {
                        tracing::warn!(%tenant, subscription = %sub_id, registration = %r.id, %why,
                            "a context source did not answer for the copy of a subscription");
                        unanswered = true;
                        // Still as before: compared again on the retry.
                        let mut by_copy = self.inner.by_copy.lock();
                        by_copy.remove(&copy_id);
                        if let Some(p) = previous {
                            by_copy.insert(p.copy_id.clone(), key.clone());
                            // Wanted again: no longer one to delete.
                            after.push(Sent {
                                undeleted_since: None,
                                ..p.clone()
                            });
                        }
                    }
                }
            }
            if !same_copies(&before, &after) {
                self.save(parts, tenant, &sub_id, &after).await;
            }
            let mut sent = self.inner.sent.lock();
            if after.is_empty() {
                sent.remove(&key);
            } else {
                sent.insert(key, after);
            }
        }
        unanswered
    }

    /// Deletes a copy at its source. False when the source did not answer
    /// or failed (5xx): ask again later. A source that cannot delete, or
    /// refuses to, keeps the copy and hears 404 for its notifications.
    async fn delete(&self, parts: &Parts, old: &Sent, alias: &str) -> bool {
        let r = &old.registration;
        if !r.offers("deleteSubscription") {
            return true;
        }
        let send = ToSource {
            parts,
            registration: r,
            ctx: &Ctx::core(),
            via: None,
            alias,
        };
        let why = match send.delete(&old.copy_id).await {
            Ok(status) if status < 500 => return true,
            Ok(status) => format!("status {status}"),
            Err(why) => why,
        };
        tracing::warn!(registration = %r.id, copy = %old.copy_id, %why,
            "the copy of a subscription could not be deleted at its source yet");
        false
    }

    async fn save(&self, parts: &Parts, tenant: &str, sub_id: &str, copies: &Copies) {
        let record = (!copies.is_empty())
            .then(|| json!({"copies": copies.iter().map(Sent::to_json).collect::<Vec<_>>()}));
        if let Err(e) = parts
            .store
            .put_record(tenant, COLLECTION, sub_id, record)
            .await
        {
            tracing::error!(%tenant, subscription = %sub_id, error = %e,
                "what was sent to context sources could not be recorded");
        }
    }
}

/// One source's subscription requests for one copy.
struct ToSource<'a> {
    parts: &'a Parts,
    registration: &'a Registration,
    ctx: &'a Ctx,
    via: Option<&'a str>,
    alias: &'a str,
}

impl ToSource<'_> {
    async fn request(
        &self,
        method: reqwest::Method,
        id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<u16, String> {
        self.parts
            .registry
            .forwarder()
            .subscription_request(
                self.registration,
                method,
                id,
                body,
                self.ctx,
                self.via,
                self.alias,
            )
            .await
            .map(|(status, _)| status)
    }

    /// The copy as a JSON-LD document: its @context inline, unless it is
    /// the core context (then plain JSON).
    fn document(&self, doc: &Value) -> Value {
        let mut doc = doc.clone();
        if self.ctx.source.is_some() {
            doc["@context"] = self.ctx.body_value();
        }
        doc
    }

    async fn post(&self, doc: &Value) -> Result<u16, String> {
        let body = self.document(doc);
        self.request(reqwest::Method::POST, None, Some(&body)).await
    }

    async fn patch(&self, id: &str, doc: &Value) -> Result<u16, String> {
        let mut body = self.document(doc);
        if let Some(m) = body.as_object_mut() {
            m.remove("id");
        }
        self.request(reqwest::Method::PATCH, Some(id), Some(&body))
            .await
    }

    async fn delete(&self, id: &str) -> Result<u16, String> {
        self.request(reqwest::Method::DELETE, Some(id), None).await
    }
}

/// Whether `new` lacks a member that `old` has (at the top or in
/// `notification`).
fn drops_members(old: &Value, new: &Value) -> bool {
    let lacks = |a: Option<&Map<String, Value>>, b: Option<&Map<String, Value>>| {
        a.is_some_and(|a| a.keys().any(|k| !b.is_some_and(|b| b.contains_key(k))))
    };
    lacks(old.as_object(), new.as_object())
        || lacks(
            old.get("notification").and_then(Value::as_object),
            new.get("notification").and_then(Value::as_object),
        )
}

fn new_copy_id() -> String {
    format!("urn:ngsi-ld:Subscription:{}", super::unique_suffix())
}

/// Whether two registrations are one source: the same id and endpoint.
fn same_source(a: &Registration, b: &Registration) -> bool {
    a.id == b.id && a.endpoint == b.endpoint
}

fn same_copies(a: &Copies, b: &Copies) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            same_source(&x.registration, &y.registration)
                && x.copy_id == y.copy_id
                && x.doc == y.doc
                && x.refused == y.refused
                && x.undeleted_since == y.undeleted_since
        })
}

/// The copy of `sub` that the source of `r` gets (clause 5.8.1.4: "reduced
/// to what is matched by the registration information"), or `None` when
/// no RegistrationInfo of `r` selects what `sub` watches. Rendered with
/// `ctx` (the subscription's notification context), notifying `callback`.
pub(crate) fn reduced_copy(
    sub: &Subscription,
    ctx: &Ctx,
    r: &Registration,
    callback: &str,
) -> Option<Value> {
    let compact = |n: &str| ctx.compact(n).into_owned();
    let mut selectors: Vec<Value> = Vec::new();
    // The registered attribute names of the matching entries; `None`: one
    // of them holds every attribute.
    let mut names: Option<Vec<String>> = Some(Vec::new());
    let mut matched = false;
    for info in &r.information {
        let given: Vec<&str> = info
            .property_names
            .iter()
            .chain(info.relationship_names.iter())
            .flatten()
            .map(|n| &**n)
            .collect();
        let holds_all = info.property_names.is_none() && info.relationship_names.is_none();
        if !holds_all
            && let Some(w) = &sub.watched
            && !w.iter().any(|a| given.contains(&&**a))
        {
            continue;
        }
        let found: Vec<Value> = match (&sub.entities, &info.entities) {
            (Some(sels), None) => sels.iter().map(|s| selector(s, None, ctx)).collect(),
            (Some(sels), Some(infos)) => sels
                .iter()
                .flat_map(|s| infos.iter().filter_map(move |e| narrowed(s, e, ctx)))
                .collect(),
            (None, Some(infos)) => infos.iter().map(|e| info_selector(e, ctx)).collect(),
            (None, None) => Vec::new(),
        };
        if info.entities.is_some() && found.is_empty() {
            continue;
        }
        matched = true;
        for f in found {
            if !selectors.contains(&f) {
                selectors.push(f);
            }
        }
        match (&mut names, holds_all) {
            (_, true) => names = None,
            (Some(list), false) => list.extend(given.iter().map(|n| n.to_string())),
            (None, false) => {}
        }
    }
    if !matched {
        return None;
    }
    let mut out = sub.render(ctx, now_micros(), false);
    for member in [
        "status",
        "createdAt",
        "modifiedAt",
        "csf",
        "localOnly",
        "jsonldContext",
        "lang",
    ] {
        out.remove(member);
    }
    if !selectors.is_empty() {
        out.insert("entities".into(), Value::Array(selectors));
    }
    if let Some(registered) = names {
        let watched: Vec<Value> = match &sub.watched {
            Some(w) => w
                .iter()
                .filter(|a| registered.iter().any(|n| n == &***a))
                .map(|a| json!(compact(a)))
                .collect(),
            None => {
                let mut all: Vec<Value> = Vec::new();
                for n in &registered {
                    let v = json!(compact(n));
                    if !all.contains(&v) {
                        all.push(v);
                    }
                }
                all
            }
        };
        out.insert("watchedAttributes".into(), Value::Array(watched));
    }
    let mut notification = match out.remove("notification") {
        Some(Value::Object(n)) => n,
        _ => Map::new(),
    };
    let local = [
        "attributes",
        "pick",
        "omit",
        "join",
        "joinLevel",
        "showChanges",
    ];
    for member in local.iter().chain(super::model::READ_ONLY_NOTIFICATION) {
        notification.remove(*member);
    }
    notification.insert("format".into(), json!("normalized"));
    notification.insert("sysAttrs".into(), json!(true));
    notification.insert(
        "endpoint".into(),
        json!({"uri": callback, "accept": "application/json"}),
    );
    out.insert("notification".into(), Value::Object(notification));
    Some(Value::Object(out))
}

/// A subscription's selector as rendered, with `ids` in place of its own
/// when given (then without idPattern).
fn selector(s: &EntitySelector, narrowed_ids: Option<Vec<String>>, ctx: &Ctx) -> Value {
    let mut m = s.render(ctx);
    if let Some(ids) = narrowed_ids {
        m.remove("idPattern");
        let id = match <[String; 1]>::try_from(ids) {
            Ok([one]) => json!(one),
            Err(many) => json!(many),
        };
        m.insert("id".into(), id);
    }
    Value::Object(m)
}

/// The part of selector `s` that registered entity `e` holds: `None` when
/// they share no entity.
fn narrowed(s: &EntitySelector, e: &EntityInfo, ctx: &Ctx) -> Option<Value> {
    if !s
        .types
        .matches_with(&|name| e.types.iter().any(|t| **t == *name))
    {
        return None;
    }
    let pattern = s.id_pattern.as_deref().and_then(|p| IdPattern::new(p).ok());
    let ids: Option<Vec<String>> = match (&s.ids, &e.id, &e.id_pattern) {
        (Some(ids), Some(id), _) => ids.contains(id).then(|| vec![id.clone()]),
        (Some(ids), None, Some(p)) => {
            let kept: Vec<String> = ids.iter().filter(|i| p.is_match(i)).cloned().collect();
            (!kept.is_empty()).then_some(kept)
        }
        (Some(ids), None, None) => Some(ids.clone()),
        (None, Some(id), _) => pattern
            .as_ref()
            .is_none_or(|p| p.is_match(id))
            .then(|| vec![id.clone()]),
        (None, None, _) => {
            let mut v = selector(s, None, ctx);
            if s.id_pattern.is_none()
                && let Some(p) = &e.id_pattern
            {
                v["idPattern"] = json!(p.as_str());
            }
            return Some(v);
        }
    };
    ids.map(|ids| selector(s, Some(ids), ctx))
}

/// An entity selector for what registered entity `e` names (a subscription
/// without entity selectors).
fn info_selector(e: &EntityInfo, ctx: &Ctx) -> Value {
    let mut m = Map::new();
    if let Some(id) = &e.id {
        m.insert("id".into(), json!(id));
    } else if let Some(p) = &e.id_pattern {
        m.insert("idPattern".into(), json!(p.as_str()));
    }
    let types: Vec<String> = e
        .types
        .iter()
        .map(|t| ctx.compact(t).into_owned())
        .collect();
    m.insert("type".into(), json!(types.join(",")));
    Value::Object(m)
}

impl crate::Broker {
    /// A notification a context source sent for the copy of one of this
    /// broker's subscriptions (clause 5.8.6): its entities go to the
    /// subscription's own receiver, as the subscription renders them and
    /// under its id.
    pub fn remote_notification(&self, body: &Value) -> NgsiResult<()> {
        let Some(doc) = body.as_object() else {
            return Err(NgsiError::bad_data("a Notification must be a JSON object"));
        };
        let Some(copy) = doc.get("subscriptionId").and_then(Value::as_str) else {
            return Err(NgsiError::bad_data(
                "the Notification has no subscriptionId",
            ));
        };
        let unknown = || {
            NgsiError::new(
                ErrorKind::ResourceNotFound,
                format!("{copy} is not the copy of a subscription here"),
            )
        };
        let (tenant, id) = self.relay.subscription_of(copy).ok_or_else(unknown)?;
        let entry = self.subscriptions.get(&tenant, &id).ok_or_else(unknown)?;
        let Some(Value::Array(data)) = doc.get("data") else {
            return Err(NgsiError::bad_data("the Notification has no data array"));
        };
        if data.len() > self.config.max_limit.max(1000) {
            return Err(NgsiError::bad_data(format!(
                "a Notification may carry at most {} entities",
                self.config.max_limit.max(1000)
            )));
        }
        let entities = crate::registrations::forward::parse_notified(
            data.clone(),
            &entry.notify_ctx,
            self.config.parse,
        )?;
        self.subscriptions.deliver(&entry, entities);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Subscription, reduced_copy};
    use crate::Ctx;
    use crate::registrations::Registration;

    const CALLBACK: &str = "http://here:1026/wuyang/v1/notifications";

    fn subscription(doc: Value) -> Subscription {
        let mut doc = doc;
        doc["id"] = json!("urn:ngsi-ld:Subscription:s");
        doc["type"] = json!("Subscription");
        doc["notification"] = json!({"endpoint": {"uri": "http://receiver/notify"},
            "attributes": ["speed"], "format": "keyValues"});
        Subscription::create(doc.as_object().unwrap(), &Ctx::core(), 0, false).unwrap()
    }

    fn registration(information: Value) -> Registration {
        let doc = json!({"id": "urn:ngsi-ld:ContextSourceRegistration:r",
            "type": "ContextSourceRegistration", "information": information,
            "endpoint": "http://there:1026"});
        Registration::create(doc.as_object().unwrap(), &Ctx::core(), 0, false).unwrap()
    }

    fn copy(sub: Value, information: Value) -> Option<Value> {
        reduced_copy(
            &subscription(sub),
            &Ctx::core(),
            &registration(information),
            CALLBACK,
        )
    }

    #[test]
    fn the_copy_notifies_here_in_full_and_keeps_the_filters() {
        let c = copy(
            json!({"entities": [{"type": "Vehicle"}], "q": "speed>5", "throttling": 2,
                   "csf": "a==1", "localOnly": false}),
            json!([{"entities": [{"type": "Vehicle"}]}]),
        )
        .unwrap();
        assert_eq!(c["q"], "speed>5");
        assert_eq!(c["throttling"], 2);
        assert_eq!(c["entities"], json!([{"type": "Vehicle"}]));
        for gone in ["csf", "localOnly", "status", "createdAt"] {
            assert!(c.get(gone).is_none(), "{gone}: {c}");
        }
        assert_eq!(
            c["notification"],
            json!({"format": "normalized", "sysAttrs": true,
                   "endpoint": {"uri": CALLBACK, "accept": "application/json"}})
        );
    }

    #[test]
    fn watched_attributes_are_cut_to_the_registered_names() {
        let info = json!([{"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"],
                           "relationshipNames": ["parkedAt"]}]);
        let c = copy(
            json!({"entities": [{"type": "Vehicle"}], "watchedAttributes": ["speed", "fuel"]}),
            info.clone(),
        )
        .unwrap();
        assert_eq!(c["watchedAttributes"], json!(["speed"]));
        // Watching everything here: the copy watches what is registered.
        let c = copy(json!({"entities": [{"type": "Vehicle"}]}), info.clone()).unwrap();
        assert_eq!(c["watchedAttributes"], json!(["speed", "parkedAt"]));
        // Nothing watched is registered: no copy.
        assert!(
            copy(
                json!({"entities": [{"type": "Vehicle"}], "watchedAttributes": ["fuel"]}),
                info
            )
            .is_none()
        );
    }

    #[test]
    fn entity_selectors_are_narrowed_to_the_registered_entities() {
        let info = json!([
            {"entities": [{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
                          {"idPattern": "urn:ngsi-ld:Vehicle:9.*", "type": "Vehicle"},
                          {"type": "Building"}]},
            {"entities": [{"type": "Vehicle"}], "propertyNames": ["fuel"]}]);
        // An id the registration names, a pattern it names, a type it does
        // not: the second entry is left out for its attributes.
        let c = copy(
            json!({"entities": [{"type": "Vehicle"}], "watchedAttributes": ["speed"]}),
            info.clone(),
        )
        .unwrap();
        assert_eq!(
            c["entities"],
            json!([{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
                   {"type": "Vehicle", "idPattern": "urn:ngsi-ld:Vehicle:9.*"}])
        );
        // The subscriber's ids meet the registered ones.
        let c = copy(
            json!({"entities": [{"id": ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2"],
                                 "type": "Vehicle"}], "watchedAttributes": ["speed"]}),
            info.clone(),
        )
        .unwrap();
        assert_eq!(
            c["entities"],
            json!([{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}])
        );
        // A type the registration does not hold: no copy.
        assert!(copy(json!({"entities": [{"type": "Shop"}]}), info.clone()).is_none());
        // A registration without entities holds every entity of its names.
        let c = copy(
            json!({"entities": [{"type": "Shop"}]}),
            json!([{"propertyNames": ["speed"]}]),
        )
        .unwrap();
        assert_eq!(c["entities"], json!([{"type": "Shop"}]));
        assert_eq!(c["watchedAttributes"], json!(["speed"]));
    }
}
