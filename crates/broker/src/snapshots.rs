//! Snapshots (clauses 4.3.7, 5.2.41, 5.5.15, 5.16): the entities and the
//! history a set of queries selected, copied once and kept under a hidden
//! tenant of the store, so that a client can page through, analyse and
//! change a frozen view (ARCHITECTURE.md, "crates/broker/src/snapshots.rs").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use ngsi_model::time::{IsoDuration, format_micros, now_micros};
use ngsi_model::{Entity, ErrorKind, Iri, NgsiError};
use ngsi_query::{JsonTarget, Query};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use store::{Change, HistoryOp, Op, Store};

use crate::registrations::Origin;
use crate::temporal::TemporalParams;
use crate::{Broker, Ctx, EntityQuery, NgsiResult, QueryParams, TemporalQuery};

/// The header naming the snapshot an operation applies to (clause 6.3.22).
pub const HEADER: &str = "NGSILD-Snapshot";
/// The path of the Snapshot API under the base path.
pub const BASE_PATH: &str = "/ngsi-ld/v1/snapshots";
/// Where the records of a tenant's snapshots are kept.
const COLLECTION: &str = "snapshots";
/// What starts the name of a snapshot's tenant: a control character, which
/// no `NGSILD-Tenant` header may carry.
const MARK: &str = "\u{1}snapshot\u{1}";
/// Entities written to a snapshot per store write.
const CHUNK: usize = 1000;
/// How long a snapshot lives at most (and without `snapshotLifetime`).
pub const DEFAULT_MAX_LIFETIME_MICROS: i64 = 30 * 86_400 * 1_000_000;

/// The members a client gives (Table 5.2.41-1); the broker sets the rest.
const CLIENT_MEMBERS: [&str; 8] = [
    "id",
    "type",
    "snapshotQueries",
    "snapshotTemporalQueries",
    "snapshotLifetime",
    "snapshotPriority",
    "endpoint",
    "receiverInfo",
];
/// The members a Snapshot Fragment may change (clause 5.16.4.4).
const UPDATABLE: [&str; 4] = [
    "snapshotLifetime",
    "snapshotPriority",
    "endpoint",
    "receiverInfo",
];
/// The members a `q` of Purge Snapshots may name (clause 5.16.7).
const FILTER_MEMBERS: [&str; 10] = [
    "id",
    "type",
    "snapshotStatus",
    "snapshotPriority",
    "snapshotLifetime",
    "endpoint",
    "createdAt",
    "modifiedAt",
    "expiresAt",
    "lastUsedAt",
];

/// The tenant of the store that holds snapshot `id` of tenant `owner`
/// made at `created` (its `createdAt` as recorded): a snapshot made again
/// with the same id never shares the tenant of one being emptied.
fn snapshot_tenant(owner: &str, id: &str, created: &str) -> String {
    format!("{MARK}{owner}\u{1}{id}\u{1}{created}")
}

/// The owner tenant and the snapshot id of a snapshot's tenant; `None` for
/// any other tenant.
pub fn owner_of(tenant: &str) -> Option<(&str, &str)> {
    let mut parts = tenant.strip_prefix(MARK)?.splitn(3, '\u{1}');
    Some((parts.next()?, parts.next()?))
}

/// The snapshot id a `NGSILD-Snapshot` header names: the id itself, or a
/// path ending in `/snapshots/{id}`.
fn id_of_header(header: &str) -> NgsiResult<String> {
    let header = header.trim();
    let id = match header.rfind("/snapshots/") {
        Some(at) => percent_encoding::percent_decode_str(&header[at + "/snapshots/".len()..])
            .decode_utf8()
            .map_err(|_| NgsiError::bad_data("the NGSILD-Snapshot header is not UTF-8"))?
            .into_owned(),
        None => header.to_string(),
    };
    if ngsi_model::parse::is_absolute_iri(&id) {
        Ok(id)
    } else {
        Err(NgsiError::bad_data(format!(
            "the NGSILD-Snapshot header {header:?} names no snapshot URI"
        )))
    }
}

fn bad(msg: impl Into<String>) -> NgsiError {
    NgsiError::bad_data(msg)
}

fn unknown(id: &str) -> NgsiError {
    NgsiError::not_found(format!("snapshot {id} does not exist"))
}

/// The state of a snapshot's preparation (Table 5.2.41-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Preparing,
    Success,
    Partial,
    Empty,
    Failure,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Success => "success",
            Self::Partial => "partial",
            Self::Empty => "empty",
            Self::Failure => "failure",
        }
    }

    /// The status named `s`.
    fn parse(s: &str) -> Option<Self> {
        [
            Self::Preparing,
            Self::Success,
            Self::Partial,
            Self::Empty,
            Self::Failure,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// The status of a snapshot whose queries ended with `details`
    /// (ExecutionResultDetails, clause 5.2.42).
    fn of<'a>(details: impl IntoIterator<Item = &'a Value>) -> Self {
        let (mut all, mut success, mut failure) = (0, 0, 0);
        for d in details {
            all += 1;
            match d.get("resultStatus").and_then(Value::as_str) {
                Some("success") => success += 1,
                Some("failure") => failure += 1,
                _ => {}
            }
        }
        if success == all && success > 0 {
            Self::Success
        } else if success > 0 {
            Self::Partial
        } else if failure > 0 {
            Self::Failure
        } else {
            Self::Empty
        }
    }
}

fn result(status: &str, problem: Option<&NgsiError>) -> Value {
    let mut m = Map::new();
    m.insert("resultStatus".into(), json!(status));
    if let Some(e) = problem {
        m.insert("problemDetails".into(), e.problem_details());
    }
    Value::Object(m)
}

/// One snapshot: its document and what changes without rewriting it.
struct Entry {
    /// The Snapshot as stored: the client's members as given, the broker's
    /// as set here (without `lastUsedAt`).
    doc: Mutex<Map<String, Value>>,
    /// `expiresAt` in microseconds.
    expires_at: AtomicI64,
    /// `lastUsedAt` in microseconds (kept in memory between rewrites).
    last_used: AtomicI64,
    /// The `lastUsedAt` the stored record holds.
    saved_used: AtomicI64,
    /// Held while the record is written or deleted, so that a write never
    /// follows the deletion.
    writing: tokio::sync::Mutex<()>,
    /// Set when the snapshot is deleted: a preparation stops.
    gone: AtomicBool,
    /// The tenant of the store that holds its data.
    tenant: String,
}

impl Entry {
    fn new(owner: &str, doc: Map<String, Value>, expires_at: i64, last_used: i64) -> Arc<Self> {
        let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
        let tenant = snapshot_tenant(owner, text("id"), text("createdAt"));
        Arc::new(Self {
            tenant,
            doc: Mutex::new(doc),
            expires_at: AtomicI64::new(expires_at),
            last_used: AtomicI64::new(last_used),
            saved_used: AtomicI64::new(last_used),
            writing: tokio::sync::Mutex::new(()),
            gone: AtomicBool::new(false),
        })
    }

    fn status(&self) -> Option<String> {
        self.doc
            .lock()
            .get("snapshotStatus")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The Snapshot document as answered (and stored).
    fn render(&self) -> Map<String, Value> {
        let mut doc = self.doc.lock().clone();
        doc.insert(
            "lastUsedAt".into(),
            json!(format_micros(self.last_used.load(Ordering::Relaxed))),
        );
        doc
    }

    /// The target of a `q` over the Snapshot members: each member a
    /// Property.
    fn filter_target(&self) -> Value {
        let doc = self.render();
        Value::Object(
            doc.into_iter()
                .filter(|(k, _)| FILTER_MEMBERS.contains(&k.as_str()))
                .map(|(k, v)| (k, json!({"type": "Property", "value": v})))
                .collect(),
        )
    }
}

/// The snapshots of all tenants.
#[derive(Clone)]
pub(crate) struct Snapshots {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    subscriptions: crate::subscriptions::Engine,
    entries: RwLock<HashMap<(String, String), Arc<Entry>>>,
    max_lifetime: i64,
    client: reqwest::Client,
}

impl Snapshots {
    /// The snapshots recorded in `store`. A snapshot still preparing did
    /// not finish before the last stop: it is marked failed (inside a
    /// runtime, where the store can be written).
    pub(crate) fn restore(
        store: Arc<dyn Store>,
        subscriptions: crate::subscriptions::Engine,
        max_lifetime: i64,
    ) -> Self {
        let mut entries = HashMap::new();
        let mut owners = crate::tenants_with_default(&*store);
        owners.retain(|t| owner_of(t).is_none());
        let now = now_micros();
        let mut interrupted = Vec::new();
        for owner in owners {
            for (id, record) in store.records(&owner, COLLECTION) {
                let Value::Object(mut doc) = record else {
                    continue;
                };
                let time = |doc: &Map<String, Value>, k: &str| {
                    doc.get(k)
                        .and_then(Value::as_str)
                        .and_then(ngsi_model::time::parse_datetime)
                };
                let expires_at = time(&doc, "expiresAt").unwrap_or(i64::MAX);
                let last_used = time(&doc, "lastUsedAt").unwrap_or(now);
                doc.remove("lastUsedAt");
                if doc.get("snapshotStatus").and_then(Value::as_str) == Some("preparing") {
                    doc.insert("snapshotStatus".into(), json!(Status::Failure.as_str()));
                    interrupted.push((owner.clone(), id.clone()));
                }
                entries.insert(
                    (owner.clone(), id),
                    Entry::new(&owner, doc, expires_at, last_used),
                );
            }
        }
        let snapshots = Self {
            inner: Arc::new(Inner {
                store,
                subscriptions,
                entries: RwLock::new(entries),
                max_lifetime,
                client: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(5))
                    .build()
                    .unwrap_or_default(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let this = snapshots.clone();
            tokio::spawn(async move {
                for (owner, id) in interrupted {
                    tracing::warn!(%owner, %id, "a snapshot was still preparing at the last stop");
                    if let Some(e) = this.get(&owner, &id) {
                        this.save(&owner, &id, &e).await;
                    }
                }
                this.empty_orphans().await;
                this.reap().await;
            });
        }
        snapshots
    }

    fn get(&self, owner: &str, id: &str) -> Option<Arc<Entry>> {
        self.inner
            .entries
            .read()
            .get(&(owner.to_string(), id.to_string()))
            .cloned()
    }

    /// Stores the record of a snapshot.
    async fn save(&self, owner: &str, id: &str, entry: &Entry) {
        let _writing = entry.writing.lock().await;
        if entry.gone.load(Ordering::Relaxed) {
            return;
        }
        let used = entry.last_used.load(Ordering::Relaxed);
        let doc = Value::Object(entry.render());
        entry.saved_used.store(used, Ordering::Relaxed);
        if let Err(e) = self
            .inner
            .store
            .put_record(owner, COLLECTION, id, Some(doc))
            .await
        {
            tracing::error!(%owner, %id, error = %e, "a snapshot record could not be stored");
        }
    }

    /// Removes snapshot `id` of `owner`: its record and entry now, its
    /// data in the background.
    async fn remove(&self, owner: &str, id: &str) -> NgsiResult<()> {
        let Some(entry) = self
            .inner
            .entries
            .write()
            .remove(&(owner.to_string(), id.to_string()))
        else {
            return Err(unknown(id));
        };
        {
            let _writing = entry.writing.lock().await;
            entry.gone.store(true, Ordering::Relaxed);
            self.inner
                .store
                .put_record(owner, COLLECTION, id, None)
                .await?;
        }
        entry.expires_at.store(now_micros(), Ordering::Relaxed);
        self.notify(id, &entry);
        let this = self.clone();
        tokio::spawn(async move { this.empty(&entry.tenant).await });
        Ok(())
    }

    /// Deletes everything a snapshot's tenant holds: its subscriptions,
    /// its entities, their history.
    async fn empty(&self, tenant: &str) {
        let store = &self.inner.store;
        crate::subscriptions::forget_tenant(&**store, &self.inner.subscriptions, tenant).await;
        let mut ids: Vec<Arc<str>> = Vec::new();
        store.scan(tenant, &mut |e| ids.push(e.id.clone()));
        for chunk in ids.chunks(CHUNK) {
            let ops = chunk
                .iter()
                .map(|id| Op::new(id.clone(), |_| Ok(Change::delete())))
                .collect();
            if let Err(e) = store.write(tenant, ops).await {
                tracing::error!(error = %e, "a snapshot's entities could not be deleted");
                return;
            }
        }
        if store.history_enabled() {
            for he in store.history_entities(tenant, &mut |_, _| true) {
                if let Err(e) = store
                    .write_history(tenant, HistoryOp::DeleteEntity { id: he.id })
                    .await
                {
                    tracing::error!(error = %e, "a snapshot's history could not be deleted");
                    return;
                }
            }
        }
    }

    /// Empties the snapshot tenants that have no snapshot any more (a stop
    /// while one was being deleted).
    async fn empty_orphans(&self) {
        for tenant in self.inner.store.tenants() {
            if let Some((owner, id)) = owner_of(&tenant)
                && self.get(owner, id).is_none_or(|e| e.tenant != tenant)
            {
                self.empty(&tenant).await;
            }
        }
    }

    /// Deletes the snapshots whose `expiresAt` has passed, every second,
    /// and writes the `lastUsedAt` that changed to disk every minute.
    async fn reap(&self) {
        for round in 0u64.. {
            if round % 60 == 59 {
                let used: Vec<((String, String), Arc<Entry>)> = self
                    .inner
                    .entries
                    .read()
                    .iter()
                    .filter(|(_, e)| {
                        e.last_used.load(Ordering::Relaxed) != e.saved_used.load(Ordering::Relaxed)
                    })
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                for ((owner, id), entry) in used {
                    self.save(&owner, &id, &entry).await;
                }
            }
            let now = now_micros();
            let due: Vec<(String, String)> = self
                .inner
                .entries
                .read()
                .iter()
                .filter(|(_, e)| e.expires_at.load(Ordering::Relaxed) <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for (owner, id) in due {
                tracing::info!(%owner, %id, "a snapshot expired");
                let _ = self.remove(&owner, &id).await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Sends the Snapshot Status Notification (clause 5.16.6) to the
    /// snapshot's endpoint, if it has one; a deleted snapshot's
    /// `expiresAt` is earlier than `notifiedAt`.
    fn notify(&self, id: &str, entry: &Entry) {
        let doc = entry.render();
        let Some(endpoint) = doc.get("endpoint").and_then(Value::as_str) else {
            return;
        };
        let now = now_micros();
        let mut body = Map::new();
        body.insert(
            "id".into(),
            json!(format!(
                "urn:ngsi-ld:Notification:{}",
                crate::subscriptions::unique_suffix()
            )),
        );
        body.insert("type".into(), json!("SnapshotNotification"));
        body.insert("notifiedAt".into(), json!(format_micros(now)));
        body.insert("snapshotId".into(), json!(id));
        for (from, to) in [
            ("snapshotStatus", "snapshotStatus"),
            ("snapshotPriority", "snapshotPriority"),
            ("snapshotQueriesDetails", "snapshotQueriesDetails"),
            // Table 5.3.4-1 names it so (Table 5.2.41-2 the other way).
            (
                "snapshotTemporalQueriesDetails",
                "temporalSnapshotQueriesDetails",
            ),
        ] {
            if let Some(v) = doc.get(from) {
                body.insert(to.into(), v.clone());
            }
        }
        let expires = entry.expires_at.load(Ordering::Relaxed);
        if expires != i64::MAX {
            body.insert("expiresAt".into(), json!(format_micros(expires)));
        }
        let mut request = self
            .inner
            .client
            .post(endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Value::Object(body).to_string());
        for pair in doc
            .get("receiverInfo")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(k), Some(v)) = (
                pair.get("key").and_then(Value::as_str),
                pair.get("value").and_then(Value::as_str),
            ) {
                request = request.header(k, v);
            }
        }
        let endpoint = endpoint.to_string();
        tokio::spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::info!(%endpoint, status = %r.status(), "a snapshot notification was refused")
                }
                Err(e) => tracing::info!(%endpoint, error = %e, "a snapshot notification failed"),
            }
        });
    }
}

/// The checked client members of a Snapshot or Snapshot Fragment that
/// the broker computes with (`endpoint` and `receiverInfo` are kept as
/// given once checked).
struct Members {
    /// `snapshotLifetime` in microseconds.
    lifetime: Option<i64>,
    priority: Option<u64>,
}

fn is_null(v: &Value) -> bool {
    v.as_str() == Some(ngsi_model::entity::core_iri::NULL)
}

/// Whether `kv` is a `{key, value}` pair that can go out as a header.
fn header_pair(kv: &Value) -> bool {
    let text = |k: &str| kv.get(k).and_then(Value::as_str);
    text("key").is_some_and(|k| reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok())
        && text("value").is_some_and(|v| reqwest::header::HeaderValue::from_str(v).is_ok())
}

/// Checks the members both Create and Update take (Table 5.2.41-1);
/// `patch`: the NGSI-LD Null may remove `endpoint` and `receiverInfo`.
fn check_members(doc: &Map<String, Value>, patch: bool) -> NgsiResult<Members> {
    let lifetime = match doc.get("snapshotLifetime") {
        None => None,
        Some(Value::String(s)) => Some(
            IsoDuration::parse(s)
                .and_then(|d| d.add_to(0))
                .ok_or_else(|| {
                    bad(format!(
                        "snapshotLifetime {s:?} is not an ISO 8601 duration"
                    ))
                })?,
        ),
        Some(_) => return Err(bad("snapshotLifetime must be an ISO 8601 duration string")),
    };
    let priority = match doc.get("snapshotPriority") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(p @ 1..=10) => Some(p),
            _ => {
                return Err(bad("snapshotPriority must be an integer from 1 to 10"));
            }
        },
    };
    match doc.get("endpoint") {
        None => {}
        Some(v) if patch && is_null(v) => {}
        Some(Value::String(s))
            if reqwest::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => {}
        Some(_) => return Err(bad("endpoint must be an http or https URI")),
    }
    match doc.get("receiverInfo") {
        None => {}
        Some(v) if patch && is_null(v) => {}
        Some(Value::Array(items)) if items.iter().all(header_pair) => {}
        Some(_) => {
            return Err(bad(
                "receiverInfo must be an array of {key, value} pairs that are valid headers",
            ));
        }
    }
    Ok(Members { lifetime, priority })
}

/// A list member of a Snapshot: absent, or an array of objects.
fn query_list<'a>(doc: &'a Map<String, Value>, key: &str) -> NgsiResult<&'a [Value]> {
    match doc.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(items),
        Some(_) => Err(bad(format!("{key} must be an array of Query objects"))),
    }
}

/// The id a Snapshot document gives, checked, or a new one.
fn new_id(doc: &Map<String, Value>) -> NgsiResult<String> {
    match doc.get("id") {
        None => Ok(format!(
            "urn:ngsi-ld:Snapshot:{}",
            crate::subscriptions::unique_suffix()
        )),
        Some(Value::String(s)) => {
            crate::check_uri(s, "snapshot id")?;
            Ok(s.clone())
        }
        Some(_) => Err(bad("a snapshot id must be a URI")),
    }
}

/// What a snapshot's preparation runs.
struct Plan {
    queries: Vec<(EntityQuery, Value)>,
    temporal: Vec<TemporalQuery>,
}

impl Broker {
    /// The tenant of the store an operation with `NGSILD-Snapshot: header`
    /// of `tenant` works on (clause 5.5.15); the snapshot counts as used.
    pub fn snapshot_of(&self, tenant: &str, header: &str) -> NgsiResult<String> {
        let id = id_of_header(header)?;
        let entry = self
            .snapshots
            .get(tenant, &id)
            .ok_or_else(|| unknown(&id))?;
        entry.last_used.store(now_micros(), Ordering::Relaxed);
        Ok(entry.tenant.clone())
    }

    fn parse_plan(&self, doc: &Map<String, Value>, ctx: &Ctx) -> NgsiResult<Plan> {
        let max = usize::MAX;
        let queries = query_list(doc, "snapshotQueries")?;
        let temporal = query_list(doc, "snapshotTemporalQueries")?;
        if queries.is_empty() && temporal.is_empty() {
            return Err(bad(
                "a Snapshot needs snapshotQueries or snapshotTemporalQueries",
            ));
        }
        let mut plan = Plan {
            queries: Vec::new(),
            temporal: Vec::new(),
        };
        for q in queries {
            if q.get("temporalQ").is_some() {
                return Err(bad(
                    "a query of snapshotQueries has no temporalQ (use snapshotTemporalQueries)",
                ));
            }
            let query = EntityQuery::from_json(q, &QueryParams::default(), ctx, max, max)?;
            if !query.wide_enough {
                return Err(crate::query::too_wide());
            }
            plan.queries.push((query, q.clone()));
        }
        if !temporal.is_empty() && !self.store.history_enabled() {
            return Err(NgsiError::new(
                ErrorKind::OperationNotSupported,
                "this broker keeps no history: snapshotTemporalQueries cannot be taken",
            ));
        }
        for q in temporal {
            if q.get("temporalQ").is_none() {
                return Err(bad("a query of snapshotTemporalQueries needs temporalQ"));
            }
            let query = TemporalQuery::from_json(
                q,
                &QueryParams::default(),
                &TemporalParams::default(),
                ctx,
                max,
                max,
            )?;
            if !query.has_selector() {
                return Err(crate::temporal::too_wide());
            }
            plan.temporal.push(query);
        }
        Ok(plan)
    }

    fn expiry(&self, lifetime: Option<i64>, now: i64) -> i64 {
        let max = self.snapshots.inner.max_lifetime;
        now.saturating_add(lifetime.unwrap_or(max).clamp(0, max))
    }

    /// Create Snapshot (clause 5.16.1): the snapshot is recorded as
    /// `preparing` and its id returned; its queries run in the background.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        tenant: &str,
        ctx: &Ctx,
        body: &Value,
    ) -> NgsiResult<String> {
        let doc = crate::json_object(body, "Snapshot")?;
        if doc.get("type").and_then(Value::as_str) != Some("Snapshot") {
            return Err(bad("a Snapshot needs \"type\": \"Snapshot\""));
        }
        let id = new_id(doc)?;
        let members = check_members(doc, false)?;
        let plan = self.parse_plan(doc, ctx)?;
        self.check_tenant(tenant)?;
        let mut stored = Map::new();
        for k in CLIENT_MEMBERS {
            if let Some(v) = doc.get(k) {
                stored.insert(k.into(), v.clone());
            }
        }
        let entry = self.insert_snapshot(tenant, &id, stored, &members).await?;
        let this = self.clone();
        let (owner, sid, ctx) = (tenant.to_string(), id.clone(), ctx.clone());
        tokio::spawn(async move { this.prepare(&owner, &sid, &entry, plan, &ctx).await });
        Ok(id)
    }

    /// Records a new snapshot made of the client members `doc`: the
    /// broker sets its id, priority, times and status (`preparing`).
    /// AlreadyExists when the tenant has one of that id.
    async fn insert_snapshot(
        &self,
        tenant: &str,
        id: &str,
        given: Map<String, Value>,
        members: &Members,
    ) -> NgsiResult<Arc<Entry>> {
        let now = now_micros();
        let expires_at = self.expiry(members.lifetime, now);
        let mut doc = Map::new();
        doc.insert("id".into(), json!(id));
        doc.insert("type".into(), json!("Snapshot"));
        doc.extend(given.into_iter().filter(|(k, _)| k != "id" && k != "type"));
        doc.insert(
            "snapshotPriority".into(),
            json!(members.priority.unwrap_or(5)),
        );
        doc.insert("snapshotStatus".into(), json!(Status::Preparing.as_str()));
        doc.insert("createdAt".into(), json!(format_micros(now)));
        doc.insert("modifiedAt".into(), json!(format_micros(now)));
        doc.insert("expiresAt".into(), json!(format_micros(expires_at)));
        let entry = Entry::new(tenant, doc, expires_at, now);
        {
            let mut entries = self.snapshots.inner.entries.write();
            let key = (tenant.to_string(), id.to_string());
            if entries.contains_key(&key) {
                return Err(NgsiError::new(
                    ErrorKind::AlreadyExists,
                    format!("snapshot {id} already exists"),
                ));
            }
            entries.insert(key, entry.clone());
        }
        self.snapshots.save(tenant, id, &entry).await;
        Ok(entry)
    }

    /// Runs a snapshot's queries and stores what they select, then its
    /// status.
    async fn prepare(&self, owner: &str, id: &str, entry: &Entry, plan: Plan, ctx: &Ctx) {
        let target = &entry.tenant;
        let mut details = Vec::new();
        let mut entities: BTreeMap<Arc<str>, Entity> = BTreeMap::new();
        for (query, raw) in &plan.queries {
            match self.all_matches(owner, ctx, query, raw).await {
                Ok(found) => {
                    details.push(result(
                        if found.is_empty() { "empty" } else { "success" },
                        None,
                    ));
                    for e in found {
                        match entities.get_mut(&e.id) {
                            Some(held) => union(held, e),
                            None => {
                                entities.insert(e.id.clone(), e);
                            }
                        }
                    }
                }
                Err(e) => details.push(result("failure", Some(&e))),
            }
        }
        let mut temporal_details = Vec::new();
        let failed = self
            .store_entities(target, entities.values(), entry)
            .await
            .err();
        for query in &plan.temporal {
            if failed.is_some() || entry.gone.load(Ordering::Relaxed) {
                break;
            }
            match self.copy_history(owner, target, query, &entities).await {
                Ok(copied) => {
                    temporal_details.push(result(if copied { "success" } else { "empty" }, None))
                }
                Err(e) => temporal_details.push(result("failure", Some(&e))),
            }
        }
        if let Some(e) = &failed {
            // The store failed: nothing of the snapshot can be trusted.
            for d in details.iter_mut().chain(temporal_details.iter_mut()) {
                *d = result("failure", Some(e));
            }
        }
        let status = Status::of(details.iter().chain(&temporal_details));
        self.finish(owner, id, entry, status, |doc| {
            if !plan.queries.is_empty() {
                doc.insert("snapshotQueriesDetails".into(), Value::Array(details));
            }
            if !plan.temporal.is_empty() {
                doc.insert(
                    "snapshotTemporalQueriesDetails".into(),
                    Value::Array(temporal_details),
                );
            }
        })
        .await;
    }

    /// Sets the final status of a prepared snapshot, stores it and tells
    /// the endpoint; nothing for a snapshot deleted meanwhile.
    async fn finish(
        &self,
        owner: &str,
        id: &str,
        entry: &Entry,
        status: Status,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) {
        if entry.gone.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut doc = entry.doc.lock();
            edit(&mut doc);
            doc.insert("snapshotStatus".into(), json!(status.as_str()));
            doc.insert("modifiedAt".into(), json!(format_micros(now_micros())));
        }
        self.snapshots.save(owner, id, entry).await;
        self.snapshots.notify(id, entry);
    }

    /// Every entity `query` selects here and at the registered sources,
    /// all pages, merged by id and projected as the query asks.
    async fn all_matches(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        raw: &Value,
    ) -> NgsiResult<Vec<Entity>> {
        crate::query::check_link_depth(query)?;
        let query = &*crate::query::resolve_links(&*self.store, tenant, query);
        let headers = reqwest::header::HeaderMap::new();
        // Sources are asked with Query Entities when the query can be said
        // so (registrations that offer queryEntity only are asked too),
        // else with the Query itself (queryBatch).
        let get = get_form(raw);
        let origin = Origin {
            query: get.as_deref(),
            headers: &headers,
            local: query.local,
            body: if get.is_some() { None } else { Some(raw) },
            only: None,
        };
        let sources = self.query_sources(tenant, query, &origin);
        let local_tenant = tenant.is_empty() || self.store.tenant_exists(tenant);
        let found = Mutex::new(BTreeMap::new());
        if local_tenant {
            query.with_selection(|selection| {
                self.visit_matches(tenant, query, selection, |e| {
                    found.lock().insert(e.id.clone(), e.clone());
                });
            });
        }
        let mut found = found.into_inner();
        if !sources.is_empty() {
            let (answers, _) = self.source_entities(tenant, ctx, &origin, sources).await;
            let entities = crate::registrations::forward::marked_auxiliary(answers);
            let mut total = 0;
            self.join_answers(
                tenant,
                query,
                local_tenant,
                &mut found,
                &mut total,
                entities,
            );
        }
        let now = now_micros();
        Ok(found
            .into_values()
            .map(|e| {
                let mut e = crate::project(&e, ctx, &query.view).into_owned();
                stamp_unknown(&mut e, now);
                e
            })
            .collect())
    }

    /// Stores `entities` in a snapshot's tenant as they are, in chunks.
    async fn store_entities<'e>(
        &self,
        target: &str,
        entities: impl Iterator<Item = &'e Entity>,
        entry: &Entry,
    ) -> NgsiResult<()> {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut entities = entities.peekable();
        while entities.peek().is_some() {
            if entry.gone.load(Ordering::Relaxed) {
                return Ok(());
            }
            chunk.extend(entities.by_ref().take(CHUNK).map(|e| {
                let e = e.clone();
                Op::new(e.id.clone(), move |_| Ok(Change::put(e)))
            }));
            for outcome in self.store.write(target, std::mem::take(&mut chunk)).await? {
                outcome?;
            }
        }
        Ok(())
    }

    /// Copies the history a temporal query selects in `owner` into the
    /// snapshot's tenant `target`; whether anything was selected. An
    /// instance that storing an entity of `held` recorded already (its
    /// current state) is not copied again; deletion instances and the
    /// Scope's history are not copied.
    async fn copy_history(
        &self,
        owner: &str,
        target: &str,
        query: &TemporalQuery,
        held: &BTreeMap<Arc<str>, Entity>,
    ) -> NgsiResult<bool> {
        self.check_tenant(owner)?;
        let matched = self.temporal_matches(owner, query, usize::MAX).await?;
        let any = !matched.is_empty();
        for (he, _) in matched {
            let history = self
                .read_history(owner, &he, query, usize::MAX, false)
                .await?;
            let current = held.get(&he.id);
            let mut attrs: Vec<(Iri, Vec<ngsi_model::Attribute>)> = Vec::new();
            for h in history {
                if *h.attr == *store::history::SCOPE {
                    continue;
                }
                let recorded = |modified: i64| {
                    current.and_then(|e| e.attr(&h.attr)).is_some_and(|list| {
                        list.iter().any(|a| {
                            a.dataset_id.as_deref() == h.dataset_id.as_deref()
                                && a.modified_at == modified
                        })
                    })
                };
                let instances: Vec<_> = h
                    .instances
                    .into_iter()
                    .filter(|i| !recorded(i.modified_at))
                    .filter_map(|i| {
                        // The series holds the datasetId, not its instances.
                        let mut a = i.attr?;
                        a.dataset_id = h.dataset_id.as_deref().map(Into::into);
                        a.created_at = i.created_at;
                        a.modified_at = i.modified_at;
                        Some(a)
                    })
                    .collect();
                if instances.is_empty() {
                    continue;
                }
                match attrs.iter_mut().find(|(n, _)| *n == h.attr) {
                    Some((_, list)) => list.extend(instances),
                    None => attrs.push((h.attr.clone(), instances)),
                }
            }
            if attrs.is_empty() && current.is_some() {
                continue;
            }
            self.store
                .write_history(
                    target,
                    HistoryOp::Add {
                        id: he.id.clone(),
                        types: he.types.clone(),
                        attrs,
                    },
                )
                .await??;
        }
        Ok(any)
    }

    /// Retrieve Snapshot Status (clause 5.16.3).
    pub fn retrieve_snapshot(&self, tenant: &str, id: &str) -> NgsiResult<Value> {
        crate::check_uri(id, "snapshot id")?;
        let entry = self.snapshots.get(tenant, id).ok_or_else(|| unknown(id))?;
        Ok(Value::Object(entry.render()))
    }

    /// Update Snapshot Status (clause 5.16.4): the members of Table
    /// 5.2.41-1 that can change, patched (clause 5.5.8); the query members
    /// cannot; the broker's members are ignored. Answers the Snapshot.
    pub async fn update_snapshot(&self, tenant: &str, id: &str, body: &Value) -> NgsiResult<Value> {
        crate::check_uri(id, "snapshot id")?;
        let entry = self.snapshots.get(tenant, id).ok_or_else(|| unknown(id))?;
        let fragment = crate::json_object(body, "Snapshot Fragment")?;
        for (k, v) in fragment {
            match k.as_str() {
                "snapshotQueries" | "snapshotTemporalQueries" => {
                    return Err(bad(format!("{k} cannot be updated")));
                }
                "id" if v.as_str() != Some(id) => return Err(bad("the id cannot be updated")),
                "type" if v.as_str() != Some("Snapshot") => {
                    return Err(bad("the type of a Snapshot is Snapshot"));
                }
                _ => {}
            }
        }
        let members = check_members(fragment, true)?;
        let now = now_micros();
        {
            let mut doc = entry.doc.lock();
            for k in UPDATABLE {
                match fragment.get(k) {
                    Some(v) if is_null(v) => {
                        doc.remove(k);
                    }
                    Some(v) => {
                        doc.insert(k.into(), v.clone());
                    }
                    None => {}
                }
            }
            if let Some(lifetime) = members.lifetime {
                let expires_at = self.expiry(Some(lifetime), now);
                entry.expires_at.store(expires_at, Ordering::Relaxed);
                doc.insert("expiresAt".into(), json!(format_micros(expires_at)));
            }
            doc.insert("modifiedAt".into(), json!(format_micros(now)));
        }
        self.snapshots.save(tenant, id, &entry).await;
        self.snapshots.notify(id, &entry);
        Ok(Value::Object(entry.render()))
    }

    /// Delete Snapshot (clause 5.16.5).
    pub async fn delete_snapshot(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        crate::check_uri(id, "snapshot id")?;
        self.snapshots.remove(tenant, id).await
    }

    /// Purge Snapshots (clause 5.16.7): deletes the snapshots of `tenant`
    /// whose members satisfy `q`; the ids deleted and those that could not
    /// be, with why. ResourceNotFound when `q` matches none.
    pub async fn purge_snapshots(
        &self,
        tenant: &str,
        q: Option<&str>,
    ) -> NgsiResult<Vec<(String, Option<NgsiError>)>> {
        let Some(q) = q else {
            return Err(bad("Purge Snapshots needs q"));
        };
        let query: Query = ngsi_query::parse_q(q).map_err(|e| bad(format!("invalid q: {e}")))?;
        if let Some(p) = query
            .paths()
            .into_iter()
            .find(|p| !FILTER_MEMBERS.contains(&p.attr.as_str()))
        {
            return Err(bad(format!(
                "q may only name members of a Snapshot, not {}",
                p.attr
            )));
        }
        let matching: Vec<String> = {
            let entries = self.snapshots.inner.entries.read();
            let mut ids: Vec<String> = entries
                .iter()
                .filter(|((owner, _), e)| {
                    owner == tenant && query.matches(&JsonTarget(&e.filter_target()))
                })
                .map(|((_, id), _)| id.clone())
                .collect();
            ids.sort();
            ids
        };
        if matching.is_empty() {
            return Err(NgsiError::not_found("q matches no snapshot"));
        }
        let mut out = Vec::with_capacity(matching.len());
        for id in matching {
            let r = self.snapshots.remove(tenant, &id).await.err();
            out.push((id, r));
        }
        Ok(out)
    }

    /// Clone Snapshot (clause 5.16.2): a new snapshot holding what snapshot
    /// `id` holds (entities and history), with the members `body` gives
    /// (priority, lifetime, endpoint, receiverInfo, its own id). Its
    /// copying waits for the source to finish preparing.
    pub async fn clone_snapshot(
        self: &Arc<Self>,
        tenant: &str,
        id: &str,
        body: Option<&Value>,
    ) -> NgsiResult<String> {
        crate::check_uri(id, "snapshot id")?;
        let empty = Map::new();
        let fragment = match body {
            None => &empty,
            Some(b) => crate::json_object(b, "Snapshot")?,
        };
        for k in ["snapshotQueries", "snapshotTemporalQueries"] {
            if fragment.contains_key(k) {
                return Err(bad(format!(
                    "a clone takes the queries of its source, not {k}"
                )));
            }
        }
        if fragment
            .get("type")
            .is_some_and(|t| t.as_str() != Some("Snapshot"))
        {
            return Err(bad("the type of a Snapshot is Snapshot"));
        }
        let members = check_members(fragment, false)?;
        let source = self.snapshots.get(tenant, id).ok_or_else(|| unknown(id))?;
        let new_id = new_id(fragment)?;
        let mut doc = Map::new();
        {
            let source_doc = source.doc.lock();
            for k in ["snapshotQueries", "snapshotTemporalQueries"] {
                if let Some(v) = source_doc.get(k) {
                    doc.insert(k.into(), v.clone());
                }
            }
        }
        for k in UPDATABLE {
            if let Some(v) = fragment.get(k) {
                doc.insert(k.into(), v.clone());
            }
        }
        let entry = self.insert_snapshot(tenant, &new_id, doc, &members).await?;
        let this = self.clone();
        let (owner, from, to) = (tenant.to_string(), id.to_string(), new_id.clone());
        tokio::spawn(async move {
            this.copy_snapshot(&owner, &from, &source, &to, &entry)
                .await
        });
        Ok(new_id)
    }

    /// Copies snapshot `from` into the new snapshot `to`.
    async fn copy_snapshot(
        &self,
        owner: &str,
        from: &str,
        source: &Entry,
        to: &str,
        entry: &Entry,
    ) {
        while source.status().as_deref() == Some(Status::Preparing.as_str())
            && !source.gone.load(Ordering::Relaxed)
            && !entry.gone.load(Ordering::Relaxed)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (source_tenant, target) = (&source.tenant, &entry.tenant);
        let copied = async {
            if source.gone.load(Ordering::Relaxed) {
                return Err(unknown(from));
            }
            let mut entities: BTreeMap<Arc<str>, Entity> = BTreeMap::new();
            self.store.scan(source_tenant, &mut |e| {
                entities.insert(e.id.clone(), e.clone());
            });
            self.store_entities(target, entities.values(), entry)
                .await?;
            if self.store.history_enabled() {
                let all = TemporalQuery {
                    entities: EntityQuery {
                        local: true,
                        ..Default::default()
                    },
                    range: Default::default(),
                    last_n: None,
                    format: Default::default(),
                    methods: Vec::new(),
                    period: None,
                    local: true,
                };
                self.copy_history(source_tenant, target, &all, &entities)
                    .await?;
            }
            Ok(())
        }
        .await;
        let source_doc = source.doc.lock().clone();
        let status = match &copied {
            Ok(()) => source_doc
                .get("snapshotStatus")
                .and_then(Value::as_str)
                .and_then(Status::parse)
                .unwrap_or(Status::Failure),
            Err(_) => Status::Failure,
        };
        self.finish(owner, to, entry, status, |doc| {
            for k in ["snapshotQueriesDetails", "snapshotTemporalQueriesDetails"] {
                if let Some(v) = source_doc.get(k) {
                    doc.insert(k.into(), v.clone());
                }
            }
            if let Err(e) = &copied {
                doc.insert(
                    "snapshotQueriesDetails".into(),
                    json!([result("failure", Some(e))]),
                );
            }
        })
        .await;
    }
}

/// The Query Entities parameters (clause 6.4.3.2) that say what a Query
/// document (clause 5.2.23) asks of a source, when they can: one entity
/// selector or selectors of types only, and no member beyond those the
/// parameters carry (`pick`, `omit`, `lang` and `csf` are applied here).
fn get_form(query: &Value) -> Option<String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|list| list.join(",")),
        _ => None,
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    for (k, v) in query.as_object()? {
        match k.as_str() {
            "type" | "@context" | "pick" | "omit" | "lang" | "csf" => {}
            "attrs" => params.push(("attrs", text(v)?)),
            "q" | "scopeQ" => params.push((k.as_str(), v.as_str()?.to_string())),
            "geoQ" => {
                for (gk, gv) in v.as_object()? {
                    let value = match (gk.as_str(), gv) {
                        ("georel" | "geometry" | "geoproperty", Value::String(s)) => s.clone(),
                        ("coordinates", Value::String(s)) => s.clone(),
                        ("coordinates", Value::Array(_)) => gv.to_string(),
                        _ => return None,
                    };
                    params.push((gk.as_str(), value));
                }
            }
            "entities" => match v.as_array()?.as_slice() {
                [one] => {
                    for (sk, sv) in one.as_object()? {
                        match sk.as_str() {
                            "id" | "idPattern" | "type" => params.push((sk.as_str(), text(sv)?)),
                            _ => return None,
                        }
                    }
                }
                many => {
                    let types = many
                        .iter()
                        .map(
                            |s| match s.as_object()?.iter().collect::<Vec<_>>().as_slice() {
                                [(k, Value::String(t))] if k.as_str() == "type" => Some(t.clone()),
                                _ => None,
                            },
                        )
                        .collect::<Option<Vec<_>>>()?;
                    params.push(("type", types.join(",")));
                }
            },
            _ => return None,
        }
    }
    Some(
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// Adds to `held` the attribute instances of `more` (the same entity
/// selected by another query of the snapshot); `more`'s win.
fn union(held: &mut Entity, more: Entity) {
    for (name, instances) in more.attrs {
        match held.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some((_, list)) => {
                for a in instances.iter() {
                    match list.iter_mut().find(|b| b.dataset_id == a.dataset_id) {
                        Some(b) => *b = a.clone(),
                        None => list.push(a.clone()),
                    }
                }
            }
            None => held.attrs.push((name, instances)),
        }
    }
    for t in more.types {
        if !held.types.contains(&t) {
            held.types.push(t);
        }
    }
}

/// Gives the system attributes a source did not send the time the
/// snapshot took them.
fn stamp_unknown(e: &mut Entity, now: i64) {
    if e.created_at == 0 {
        e.created_at = now;
    }
    if e.modified_at == 0 {
        e.modified_at = now;
    }
    for (_, instances) in &mut e.attrs {
        if instances.iter().any(|a| a.modified_at == 0) {
            for a in instances.iter_mut().filter(|a| a.modified_at == 0) {
                a.stamp(now, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_tenants_are_told_apart_from_client_tenants() {
        let t = snapshot_tenant("city", "urn:ngsi-ld:Snapshot:1", "2026-11-27T00:00:00Z");
        assert_eq!(owner_of(&t), Some(("city", "urn:ngsi-ld:Snapshot:1")));
        assert_eq!(
            owner_of(&snapshot_tenant("", "urn:a", "t")),
            Some(("", "urn:a"))
        );
        assert_ne!(
            t,
            snapshot_tenant("city", "urn:ngsi-ld:Snapshot:1", "2026-11-27T00:00:01Z")
        );
        assert_eq!(owner_of("city"), None);
        assert!(t.chars().any(char::is_control));
    }

    #[test]
    fn the_header_names_an_id_or_its_path() {
        assert_eq!(
            id_of_header("urn:ngsi-ld:Snapshot:1").unwrap(),
            "urn:ngsi-ld:Snapshot:1"
        );
        assert_eq!(
            id_of_header("/ngsi-ld/v1/snapshots/urn%3Angsi-ld%3ASnapshot%3A1").unwrap(),
            "urn:ngsi-ld:Snapshot:1"
        );
        assert!(id_of_header("not a uri").is_err());
    }

    #[test]
    fn queries_a_get_can_say_are_sent_as_one() {
        let q = json!({"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed>50",
                       "attrs": ["speed", "name"], "pick": "speed",
                       "geoQ": {"georel": "near;maxDistance==10", "geometry": "Point",
                                "coordinates": [113.2, 23.1]}});
        assert_eq!(
            get_form(&q).unwrap(),
            "type=Vehicle&q=speed%3E50&attrs=speed%2Cname&georel=near%3BmaxDistance%3D%3D10\
             &geometry=Point&coordinates=%5B113%2E2%2C23%2E1%5D"
        );
        let types = json!({"type": "Query", "entities": [{"type": "A"}, {"type": "B"}]});
        assert_eq!(get_form(&types).unwrap(), "type=A%2CB");
        let mixed =
            json!({"type": "Query", "entities": [{"type": "A"}, {"type": "B", "id": "urn:b"}]});
        assert_eq!(get_form(&mixed), None);
        let joined = json!({"type": "Query", "entities": [{"type": "A"}], "join": "inline"});
        assert_eq!(get_form(&joined), None);
    }

    #[test]
    fn the_status_follows_the_details() {
        let d = |s: &str| result(s, None);
        assert_eq!(Status::of(&[d("success"), d("success")]), Status::Success);
        assert_eq!(Status::of(&[d("success"), d("empty")]), Status::Partial);
        assert_eq!(Status::of(&[d("success"), d("failure")]), Status::Partial);
        assert_eq!(Status::of(&[d("empty"), d("failure")]), Status::Failure);
        assert_eq!(Status::of(&[d("empty")]), Status::Empty);
        assert_eq!(Status::parse("partial"), Some(Status::Partial));
    }

    #[test]
    fn members_are_checked() {
        let m = |v: Value| check_members(v.as_object().unwrap(), false);
        assert!(m(json!({"snapshotPriority": 0})).is_err());
        assert!(m(json!({"snapshotPriority": 11})).is_err());
        assert_eq!(
            m(json!({"snapshotPriority": 10})).unwrap().priority,
            Some(10)
        );
        assert!(m(json!({"snapshotLifetime": "1 day"})).is_err());
        assert_eq!(
            m(json!({"snapshotLifetime": "PT1M"})).unwrap().lifetime,
            Some(60_000_000)
        );
        assert!(m(json!({"endpoint": "mqtt://x/y"})).is_err());
        assert!(m(json!({"receiverInfo": [{"key": "a b", "value": "c"}]})).is_err());
        assert!(m(json!({"endpoint": ngsi_model::entity::core_iri::NULL})).is_err());
        assert!(
            check_members(
                json!({"endpoint": ngsi_model::entity::core_iri::NULL})
                    .as_object()
                    .unwrap(),
                true
            )
            .is_ok()
        );
    }
}
