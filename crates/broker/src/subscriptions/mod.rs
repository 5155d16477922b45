//! Subscriptions (clause 5.8): the operations of the API, their
//! persistence, and the engine that sends notifications.
//!
//! A subscription is stored as the list of requests that made it (the
//! create document, then each PATCH fragment) with the @context of each, so
//! that a restart replays them into exactly the same expanded form, whatever
//! contexts the requests used.

mod engine;
mod model;
mod remote;

use std::sync::Arc;

use ngsi_model::time::now_micros;
use ngsi_model::{ErrorKind, NgsiError, NgsiResult};
use serde_json::{Map, Value, json};
use store::Store;

pub(crate) use engine::Periodic;
pub use engine::{Engine, Status};
pub(crate) use model::unique_suffix;
pub use model::{Accept, Subscription};
pub(crate) use remote::Parts as RelayParts;
pub use remote::{CALLBACK_PATH, Relay};

use crate::unrestored::{Kind, Unrestored};
use crate::{Broker, Ctx};

/// The store collection of subscriptions.
const COLLECTION: &str = "subscriptions";

fn not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("subscription {id} does not exist"))
}

fn check_id(id: &str) -> NgsiResult<()> {
    crate::check_uri(id, "subscription id")
}

fn object(body: &Value) -> NgsiResult<&Map<String, Value>> {
    crate::json_object(body, "Subscription")
}

/// One page of subscriptions.
#[derive(Debug, Default)]
pub struct SubscriptionPage {
    pub items: Vec<Map<String, Value>>,
    /// All subscriptions, when counted.
    pub total: usize,
}

impl Broker {
    /// The context notifications of `sub` are compacted with: its
    /// jsonldContext, else the context of the request that created it.
    pub(crate) async fn notify_context(
        &self,
        sub: &Subscription,
        request: &Ctx,
        origin: &str,
    ) -> NgsiResult<Ctx> {
        match &sub.jsonld_context {
            Some(url) => self.context_from_link(Some(url)).await,
            None => Ok(self.name_inline_context(request.clone(), origin)),
        }
    }

    /// Create Subscription (clause 5.8.1). Returns the id. `via` is the
    /// request's `Via` header: a subscription that names this broker there
    /// came back through a loop of registered brokers (clause 6.3.18).
    pub async fn create_subscription(
        &self,
        tenant: &str,
        ctx: &Ctx,
        body: &Value,
        origin: &str,
        via: Option<&str>,
    ) -> NgsiResult<Arc<str>> {
        let doc = object(body)?;
        let now = now_micros();
        let mut sub = Subscription::create(doc, ctx, now, true)?;
        if let Some(v) = via {
            let alias = crate::tenant_alias(&self.config.source_alias, tenant);
            if crate::registrations::forward::via_names(v, &alias) {
                return Err(NgsiError::new(
                    ErrorKind::LoopDetected,
                    format!("the subscription came back to {alias}: its Via header names it"),
                ));
            }
            sub.via = Some(v.to_string());
        }
        let notify_ctx = self.notify_context(&sub, ctx, origin).await?;
        let _guard = self.subscription_writes.lock().await;
        if self.unrestored.holds(Kind::Subscription, tenant, &sub.id) {
            return Err(Unrestored::taken(Kind::Subscription, &sub.id));
        }
        if self.subscriptions.get(tenant, &sub.id).is_some() {
            return Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("subscription {} already exists", sub.id),
            ));
        }
        let mut record = new_record(&self.contexts, doc, &sub.id, ctx, now, Some(&notify_ctx));
        if let Some(v) = &sub.via {
            record["via"] = json!(v);
        }
        self.store
            .put_record(tenant, COLLECTION, &sub.id, Some(record))
            .await?;
        let id = sub.id.clone();
        self.subscriptions.install(tenant, sub, notify_ctx, None);
        self.relay.touch(tenant);
        Ok(id)
    }

    fn render_subscription(
        &self,
        entry: &engine::Entry,
        ctx: &Ctx,
        sys_attrs: bool,
    ) -> Map<String, Value> {
        let status = entry.state.status.lock().clone();
        render_with_status(&entry.sub, &status, ctx, sys_attrs)
    }

    /// NonexistentTenant for a tenant that has neither data nor
    /// subscriptions (clause 5.5.10).
    fn check_subscription_tenant(&self, tenant: &str) -> NgsiResult<()> {
        self.check_tenant_holding(tenant, self.subscriptions.has_tenant(tenant))
    }

    /// The error for subscription `id` that `tenant` does not hold: its
    /// tenant's, else ResourceNotFound.
    fn missing_subscription(&self, tenant: &str, id: &str) -> NgsiError {
        if let Some(e) = self.unrestored.unavailable(Kind::Subscription, tenant, id) {
            return e;
        }
        match self.check_subscription_tenant(tenant) {
            Err(e) => e,
            Ok(()) => not_found(id),
        }
    }

    /// Retrieve Subscription (clause 5.8.3).
    pub fn retrieve_subscription(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        sys_attrs: bool,
    ) -> NgsiResult<Map<String, Value>> {
        check_id(id)?;
        let entry = self
            .subscriptions
            .get(tenant, id)
            .ok_or_else(|| self.missing_subscription(tenant, id))?;
        Ok(self.render_subscription(&entry, ctx, sys_attrs))
    }

    /// Query Subscriptions (clause 5.8.4), ordered by id.
    pub fn query_subscriptions(
        &self,
        tenant: &str,
        ctx: &Ctx,
        offset: usize,
        limit: usize,
        sys_attrs: bool,
    ) -> NgsiResult<SubscriptionPage> {
        self.check_subscription_tenant(tenant)?;
        let all = self.subscriptions.list(tenant);
        Ok(SubscriptionPage {
            total: all.len(),
            items: all
                .iter()
                .skip(offset)
                .take(limit)
                .map(|e| self.render_subscription(e, ctx, sys_attrs))
                .collect(),
        })
    }

    /// Update Subscription (clause 5.8.2): the members of the fragment
    /// replace the stored ones.
    pub async fn update_subscription(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        body: &Value,
        origin: &str,
    ) -> NgsiResult<()> {
        check_id(id)?;
        let fragment = object(body)?;
        let _guard = self.subscription_writes.lock().await;
        let entry = self
            .subscriptions
            .get(tenant, id)
            .ok_or_else(|| self.missing_subscription(tenant, id))?;
        let now = now_micros();
        let next = entry.sub.patch(fragment, ctx, now, true)?;
        let notify_ctx = if fragment.contains_key("jsonldContext") {
            self.notify_context(&next, ctx, origin).await?
        } else {
            entry.notify_ctx.clone()
        };
        append_request(
            &self.contexts,
            &self.store,
            tenant,
            COLLECTION,
            id,
            fragment,
            ctx,
            now,
            Some(&notify_ctx),
        )
        .await?;
        let status = entry.state.status.lock().clone();
        self.subscriptions
            .install(tenant, next, notify_ctx, Some(status));
        self.relay.touch(tenant);
        Ok(())
    }

    /// Delete Subscription (clause 5.8.5).
    pub async fn delete_subscription(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        check_id(id)?;
        let _guard = self.subscription_writes.lock().await;
        let waiting = self.unrestored.holds(Kind::Subscription, tenant, id);
        if !waiting && self.subscriptions.get(tenant, id).is_none() {
            return Err(self.missing_subscription(tenant, id));
        }
        self.store.put_record(tenant, COLLECTION, id, None).await?;
        self.store
            .put_record(tenant, engine::STATUS_COLLECTION, id, None)
            .await?;
        self.subscriptions.remove(tenant, id);
        self.unrestored.forget(Kind::Subscription, tenant, id);
        self.relay.touch(tenant);
        Ok(())
    }

    /// Opens a live stream (this project's extension): every change of
    /// `tenant` matching `query`, as Notification documents.
    pub fn live_stream(
        &self,
        tenant: &str,
        ctx: Ctx,
        query: crate::EntityQuery,
    ) -> tokio::sync::mpsc::Receiver<bytes::Bytes> {
        let view = query.view.clone();
        self.subscriptions.live(tenant, query, ctx, view, 1024)
    }
}

/// Deletes every subscription of `tenant` (a Snapshot's, when the
/// Snapshot goes): records, status and engine entries.
pub(crate) async fn forget_tenant(store: &dyn Store, engine: &Engine, tenant: &str) {
    for entry in engine.list(tenant) {
        let id = entry.sub.id.to_string();
        for collection in [COLLECTION, engine::STATUS_COLLECTION] {
            if let Err(e) = store.put_record(tenant, collection, &id, None).await {
                tracing::error!(%id, error = %e, "a subscription record could not be deleted");
            }
        }
        engine.remove(tenant, &id);
    }
}

/// The stored record of a subscription or registration made by `doc`
/// (written with `ctx` at `at`, named `id`): the list of its requests, and
/// the context its notifications use when it has them (`notify`).
pub(crate) fn new_record(
    contexts: &jsonld::ContextResolver,
    doc: &Map<String, Value>,
    id: &str,
    ctx: &Ctx,
    at: i64,
    notify: Option<&Ctx>,
) -> Value {
    let mut stored = doc.clone();
    stored.remove("@context");
    stored.insert("id".into(), json!(id));
    let mut record = json!({"requests": [{"context": ctx.source, "body": stored, "at": at}]});
    if let Some(n) = notify {
        record["notifyContext"] = n.source.clone().unwrap_or(Value::Null);
        record["notifyLink"] = json!(n.link);
    }
    keep_documents(contexts, &mut record, ctx, notify);
    record
}

/// Keeps in `record` the remote @context documents that `ctx` and
/// `notify` name (under `documents`, by URL), so that a restart resolves
/// them when their servers do not answer: a subscription or registration
/// is never lost to an unreachable context.
fn keep_documents(
    contexts: &jsonld::ContextResolver,
    record: &mut Value,
    ctx: &Ctx,
    notify: Option<&Ctx>,
) {
    let sources = [ctx.source.as_ref(), notify.and_then(|n| n.source.as_ref())];
    let documents: Vec<(String, Value)> = sources
        .into_iter()
        .flatten()
        .flat_map(|source| contexts.documents_of(source))
        .collect();
    if documents.is_empty() {
        return;
    }
    if !record.get("documents").is_some_and(Value::is_object) {
        record["documents"] = json!({});
    }
    if let Some(kept) = record["documents"].as_object_mut() {
        kept.extend(documents);
    }
}

/// Appends the update `fragment` (written with `ctx` at `at`) to the stored
/// record `id` of `collection` (see [`new_record`]); resolves once durable.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append_request(
    contexts: &jsonld::ContextResolver,
    store: &Arc<dyn Store>,
    tenant: &str,
    collection: &str,
    id: &str,
    fragment: &Map<String, Value>,
    ctx: &Ctx,
    at: i64,
    notify: Option<&Ctx>,
) -> NgsiResult<()> {
    let mut record = store
        .records(tenant, collection)
        .into_iter()
        .find(|(k, _)| k == id)
        .map(|(_, v)| v)
        .ok_or_else(|| NgsiError::internal(format!("{id} has no stored record")))?;
    let mut stored = fragment.clone();
    stored.remove("@context");
    if let Some(Value::Array(requests)) = record.get_mut("requests") {
        requests.push(json!({"context": ctx.source, "body": stored, "at": at}));
    }
    if let Some(n) = notify {
        record["notifyContext"] = n.source.clone().unwrap_or(Value::Null);
        record["notifyLink"] = json!(n.link);
    }
    keep_documents(contexts, &mut record, ctx, notify);
    store
        .put_record(tenant, collection, id, Some(record))
        .await?;
    Ok(())
}

/// `sub` compacted with `ctx`, its delivery status in `notification`
/// (counts of zero left out).
pub(crate) fn render_with_status(
    sub: &Subscription,
    status: &Status,
    ctx: &Ctx,
    sys_attrs: bool,
) -> Map<String, Value> {
    let mut out = sub.render(ctx, now_micros(), sys_attrs);
    if let (Some(Value::Object(n)), Value::Object(s)) =
        (out.get_mut("notification"), status.to_json())
    {
        for (k, v) in s {
            if (k == "timesSent" || k == "timesFailed") && v == json!(0) {
                continue;
            }
            n.insert(k, v);
        }
    }
    out
}

/// Reinstalls the stored subscriptions of every tenant by replaying their
/// requests; notes in `unrestored` those that fail.
pub(crate) async fn restore(
    store: Arc<dyn Store>,
    contexts: jsonld::ContextResolver,
    engine: Engine,
    unrestored: Unrestored,
) {
    let tenants = crate::tenants_with_default(&*store);
    let mut restored = 0usize;
    for tenant in tenants {
        let statuses: std::collections::HashMap<String, Value> = store
            .records(&tenant, engine::STATUS_COLLECTION)
            .into_iter()
            .collect();
        for (id, record) in store.records(&tenant, COLLECTION) {
            match restore_one(&contexts, &engine, &tenant, &record, statuses.get(&id)).await {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::error!(%tenant, %id, error = %e, "a stored subscription could not be restored");
                    unrestored.note(Kind::Subscription, &tenant, &id, e.to_string());
                }
            }
        }
    }
    if restored > 0 {
        tracing::info!(subscriptions = restored, "subscriptions restored");
    }
}

/// Replays one stored subscription and installs it with its stored status.
async fn restore_one(
    contexts: &jsonld::ContextResolver,
    engine: &Engine,
    tenant: &str,
    record: &Value,
    status: Option<&Value>,
) -> NgsiResult<()> {
    let (sub, notify_ctx) = replay(contexts, record).await?;
    engine.install(tenant, sub, notify_ctx, status.map(Status::from_json));
    Ok(())
}

/// Tries again to restore subscription `id` of `tenant` (see
/// [`crate::unrestored`]).
pub(crate) async fn retry_one(parts: &crate::unrestored::RetryParts, tenant: &str, id: &str) {
    let _guard = parts.subscription_writes.lock().await;
    if !parts.unrestored.holds(Kind::Subscription, tenant, id) {
        return;
    }
    let tried = match parts.record(tenant, COLLECTION, id) {
        // Deleted meanwhile: nothing waits any more.
        None => Ok(()),
        Some(record) => {
            let status = parts.record(tenant, engine::STATUS_COLLECTION, id);
            let tried = restore_one(
                &parts.contexts,
                &parts.engine,
                tenant,
                &record,
                status.as_ref(),
            )
            .await;
            if tried.is_ok() {
                parts.relay.touch(tenant);
            }
            tried
        }
    };
    parts.settle(Kind::Subscription, tenant, id, tried);
}

pub(crate) async fn resolve(contexts: &jsonld::ContextResolver, source: &Value) -> NgsiResult<Ctx> {
    if source.is_null() {
        return Ok(Ctx::core());
    }
    let table = contexts
        .resolve(source)
        .await
        .map_err(crate::context::context_error)?;
    Ok(Ctx {
        table,
        source: Some(source.clone()),
        link: None,
    })
}

/// Runs `replay` on a stored record; when an @context it names cannot be
/// downloaded, gives the resolver the documents the record kept (see
/// [`new_record`]) and runs it again. The kept copies are only a fallback:
/// a context that answers is read afresh.
pub(crate) async fn with_kept_documents<T, F: Future<Output = NgsiResult<T>>>(
    contexts: &jsonld::ContextResolver,
    record: &Value,
    replay: impl Fn() -> F,
) -> NgsiResult<T> {
    match replay().await {
        Err(e) if e.kind == ErrorKind::LdContextNotAvailable => {
            let Some(Value::Object(documents)) = record.get("documents") else {
                return Err(e);
            };
            for (url, document) in documents {
                contexts.insert_cached(url, document.clone());
            }
            tracing::warn!(error = %e, "replaying a stored request with the @context documents it kept");
            replay().await
        }
        other => other,
    }
}

pub(crate) async fn replay(
    contexts: &jsonld::ContextResolver,
    record: &Value,
) -> NgsiResult<(Subscription, Ctx)> {
    with_kept_documents(contexts, record, || replay_requests(contexts, record)).await
}

async fn replay_requests(
    contexts: &jsonld::ContextResolver,
    record: &Value,
) -> NgsiResult<(Subscription, Ctx)> {
    let Some(Value::Array(requests)) = record.get("requests") else {
        return Err(NgsiError::internal("no requests"));
    };
    let now = now_micros();
    let mut sub: Option<Subscription> = None;
    for r in requests {
        let ctx = resolve(contexts, r.get("context").unwrap_or(&Value::Null)).await?;
        let body = object(r.get("body").unwrap_or(&Value::Null))?;
        // Each request at the time it was made (createdAt, modifiedAt).
        let at = r.get("at").and_then(Value::as_i64).unwrap_or(now);
        sub = Some(match sub {
            None => Subscription::create(body, &ctx, at, false)?,
            Some(s) => s.patch(body, &ctx, at, false)?,
        });
    }
    let mut sub = sub.ok_or_else(|| NgsiError::internal("no create request"))?;
    sub.via = record
        .get("via")
        .and_then(Value::as_str)
        .map(str::to_string);
    let source = record.get("notifyContext").cloned().unwrap_or(Value::Null);
    let link = record
        .get("notifyLink")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(url) = &link {
        contexts.insert_implicit(url, json!({ "@context": source }));
    }
    let mut notify_ctx = resolve(contexts, &source).await?;
    notify_ctx.link = link;
    Ok((sub, notify_ctx))
}
