//! Turning whatever a request carries as `@context` into a shared
//! [`Context`], with caches and a bounded-time fetcher.
//!
//! Resolution happens in two phases. First every document the context
//! references (transitively) is obtained, asynchronously: hosted documents and
//! cached downloads are used directly, embedded core contexts never touch the
//! network, and anything else goes through the [`Fetch`] implementation under
//! a time bound, once per URL even when several requests ask at the same
//! time. Then the context is processed synchronously from those documents.
//! The processed result is cached under the canonical JSON text of the input,
//! so an identical inline context is processed once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::context::{Context, MAX_INCLUSIONS, MAX_REMOTE_DEPTH, remote_context_member};
use crate::core;
use crate::error::ContextError;

/// A boxed, sendable future, as returned by [`Fetch::fetch`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Obtains the JSON document published at a context URL.
///
/// The resolver bounds the time of every call (see
/// [`ResolverConfig::fetch_timeout`]); an implementation only reports what
/// went wrong: [`ContextError::NotAvailable`] when the document could not be
/// obtained, [`ContextError::Invalid`] when it was obtained but is not JSON.
pub trait Fetch: Send + Sync {
    /// Fetches and parses the document at `url`.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Value, ContextError>>;
}

/// Installs ring as the process-wide TLS crypto provider when the `tls`
/// feature is on (reqwest is built without a provider of its own, so any
/// reqwest client in the process needs this first); a no-op otherwise, and
/// when a provider is installed already.
pub fn install_tls_provider() {
    #[cfg(feature = "tls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The default [`Fetch`]: an HTTP GET asking for `application/ld+json`, with
/// a total time bound and a bound on the body size.
///
/// Without the crate's `tls` feature only `http://` URLs can be fetched.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl HttpFetcher {
    /// Creates a fetcher whose requests give up after `timeout` and whose
    /// bodies may not exceed `max_body_bytes`.
    pub fn new(timeout: Duration, max_body_bytes: usize) -> Self {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        HttpFetcher {
            client,
            max_body_bytes,
        }
    }

    async fn get(&self, url: &str) -> Result<Value, ContextError> {
        let unavailable = |reason: String| ContextError::NotAvailable {
            url: url.to_owned(),
            reason,
        };
        let mut response = self
            .client
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/ld+json, application/json;q=0.9",
            )
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!(
                "the server answered with HTTP status {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body_bytes as u64)
        {
            return Err(unavailable(format!(
                "the document is larger than {} bytes",
                self.max_body_bytes
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(unavailable(format!(
                    "the document is larger than {} bytes",
                    self.max_body_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        // Retrieved but not JSON: an invalid context, not an unavailable one
        // (clause 5.5.6).
        serde_json::from_slice(&body)
            .map_err(|e| ContextError::Invalid(format!("the document at {url} is not JSON: {e}")))
    }
}

impl Fetch for HttpFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Value, ContextError>> {
        Box::pin(self.get(url))
    }
}

/// Joins an error and its sources into one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Bounds and sizes of a [`ContextResolver`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// The longest one download may take, including connecting (default 5 s).
    pub fetch_timeout: Duration,
    /// The largest context document accepted, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// How many downloaded documents are kept; the least recently used is
    /// dropped first. Hosted documents do not count (default 256).
    pub max_cached_documents: usize,
    /// How many processed contexts are kept (default 1024).
    pub max_processed_contexts: usize,
    /// How long a failed download is remembered: within it, the URL fails
    /// again at once instead of waiting out another timeout (a batch of a
    /// thousand entities naming one dead URL waits once). Default 10 s.
    pub failure_ttl: Duration,
}

/// The most failed URLs remembered at once.
const MAX_FAILURES: usize = 1024;

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            fetch_timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
            max_cached_documents: 256,
            max_processed_contexts: 1024,
            failure_ttl: Duration::from_secs(10),
        }
    }
}

/// How a context document came to be held by the broker (the `kind` member of
/// the `@context` metadata of GET `/jsonldContexts`, ETSI GS CIM 009 v1.9.1
/// clause 5.13.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextKind {
    /// Given to the broker by a client (`POST /jsonldContexts`).
    Hosted,
    /// Downloaded from its URL while resolving a request.
    Cached,
    /// An inline `@context` of a request, kept so that a response's Link
    /// header can name it.
    ImplicitlyCreated,
}

impl ContextKind {
    /// The name the NGSI-LD API uses (`Hosted`, `Cached`,
    /// `ImplicitlyCreated`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContextKind::Hosted => "Hosted",
            ContextKind::Cached => "Cached",
            ContextKind::ImplicitlyCreated => "ImplicitlyCreated",
        }
    }
}

/// What GET `/jsonldContexts?details=true` reports about one held document.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextInfo {
    /// The URL the document is known by.
    pub url: String,
    /// Hosted or cached.
    pub kind: ContextKind,
    /// When the broker stored it.
    pub created_at: SystemTime,
    /// When a request last used it, if one has.
    pub last_usage: Option<SystemTime>,
    /// How many times requests used it after it was stored.
    pub number_of_hits: u64,
}

/// Counters of the resolver's caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Document look-ups answered by a hosted or cached document.
    pub document_hits: u64,
    /// Document look-ups that needed a download.
    pub document_misses: u64,
    /// Resolutions answered by an already processed context.
    pub processed_hits: u64,
    /// Resolutions that processed a context.
    pub processed_misses: u64,
}

/// One held document.
#[derive(Debug)]
struct DocEntry {
    doc: Arc<Value>,
    kind: ContextKind,
    created_at: SystemTime,
    last_usage: Option<SystemTime>,
    hits: u64,
    /// Recency, for least-recently-used eviction.
    tick: u64,
}

/// One processed context and the documents it was built from.
#[derive(Debug)]
struct ProcessedEntry {
    context: Arc<Context>,
    urls: Vec<String>,
    tick: u64,
}

#[derive(Debug, Default)]
struct Caches {
    docs: HashMap<String, DocEntry>,
    processed: HashMap<String, ProcessedEntry>,
    /// Bumped whenever a document changes, so that a resolution that started
    /// before the change does not cache a stale result.
    generation: u64,
    tick: u64,
}

type InFlight = Arc<OnceCell<Result<Arc<Value>, ContextError>>>;

struct Inner {
    fetcher: Arc<dyn Fetch>,
    config: ResolverConfig,
    caches: Mutex<Caches>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// Downloads that failed lately: when, and how.
    failures: Mutex<HashMap<String, (std::time::Instant, ContextError)>>,
    document_hits: AtomicU64,
    document_misses: AtomicU64,
    processed_hits: AtomicU64,
    processed_misses: AtomicU64,
}

/// Resolves `@context` values to processed [`Context`]s, with caches; cheap
/// to clone and safe to share between tasks.
#[derive(Clone)]
pub struct ContextResolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ContextResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextResolver")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for ContextResolver {
    fn default() -> Self {
        ContextResolver::new(ResolverConfig::default())
    }
}

impl ContextResolver {
    /// Creates a resolver that downloads with [`HttpFetcher`].
    pub fn new(config: ResolverConfig) -> Self {
        let fetcher = Arc::new(HttpFetcher::new(
            config.fetch_timeout,
            config.max_body_bytes,
        ));
        ContextResolver::with_fetcher(config, fetcher)
    }

    /// Creates a resolver that downloads with `fetcher`.
    pub fn with_fetcher(config: ResolverConfig, fetcher: Arc<dyn Fetch>) -> Self {
        ContextResolver {
            inner: Arc::new(Inner {
                fetcher,
                config,
                caches: Mutex::new(Caches::default()),
                in_flight: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                document_hits: AtomicU64::new(0),
                document_misses: AtomicU64::new(0),
                processed_hits: AtomicU64::new(0),
                processed_misses: AtomicU64::new(0),
            }),
        }
    }

    /// Resolves what a request carries as `@context` (a URL string, an
    /// object, an array of those, or `null`; a `Link` header's URL is passed
    /// as a string) into the active context, with the core context applied
    /// last.
    pub async fn resolve(&self, ctx: &Value) -> Result<Arc<Context>, ContextError> {
        if is_only_core(ctx) {
            return Ok(Context::core());
        }
        let key = canonical_json(ctx);
        let generation = {
            let mut caches = self.inner.caches.lock();
            caches.tick += 1;
            let tick = caches.tick;
            let now = SystemTime::now();
            let Caches {
                processed, docs, ..
            } = &mut *caches;
            if let Some(entry) = processed.get_mut(&key) {
                entry.tick = tick;
                for url in &entry.urls {
                    if let Some(doc) = docs.get_mut(url) {
                        doc.hits += 1;
                        doc.last_usage = Some(now);
                        doc.tick = tick;
                    }
                }
                self.inner.processed_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::clone(&entry.context));
            }
            caches.generation
        };
        self.inner.processed_misses.fetch_add(1, Ordering::Relaxed);
        let docs = self.load_all(ctx).await?;
        let context = Arc::new(Context::process(ctx, &|url| docs.get(url).cloned())?);
        let mut caches = self.inner.caches.lock();
        if caches.generation == generation {
            if caches.processed.len() >= self.inner.config.max_processed_contexts {
                evict_oldest(&mut caches.processed, |e| e.tick);
            }
            caches.tick += 1;
            let tick = caches.tick;
            caches.processed.insert(
                key,
                ProcessedEntry {
                    context: Arc::clone(&context),
                    urls: docs.keys().cloned().collect(),
                    tick,
                },
            );
        }
        Ok(context)
    }

    /// Obtains every document `ctx` references, transitively, keyed by URL.
    async fn load_all(&self, ctx: &Value) -> Result<HashMap<String, Arc<Value>>, ContextError> {
        let mut docs: HashMap<String, Arc<Value>> = HashMap::new();
        let mut walked: HashSet<String> = HashSet::new();
        let mut roots = Vec::new();
        collect_urls(ctx, &mut roots);
        // Depth-first, with the chain of including URLs for loop detection.
        let mut stack: Vec<(String, Vec<String>)> =
            roots.into_iter().rev().map(|u| (u, Vec::new())).collect();
        let mut steps = 0usize;
        while let Some((url, chain)) = stack.pop() {
            steps += 1;
            if steps > MAX_INCLUSIONS {
                return Err(ContextError::Invalid(format!(
                    "context overflow: more than {MAX_INCLUSIONS} remote context inclusions"
                )));
            }
            if core::is_current_core_url(&url) {
                continue;
            }
            if chain.contains(&url) {
                return Err(ContextError::Invalid(format!(
                    "recursive context inclusion: {url} includes itself"
                )));
            }
            if chain.len() >= MAX_REMOTE_DEPTH {
                return Err(ContextError::Invalid(format!(
                    "context overflow: more than {MAX_REMOTE_DEPTH} nested remote contexts at {url}"
                )));
            }
            if walked.contains(&url) {
                // Its includes were walked without finding a loop.
                continue;
            }
            let doc = match docs.get(&url) {
                Some(doc) => Arc::clone(doc),
                None => {
                    let doc = self.document_for(&url).await?;
                    docs.insert(url.clone(), Arc::clone(&doc));
                    doc
                }
            };
            let inner = remote_context_member(&url, &doc)?;
            let mut children = Vec::new();
            collect_urls(inner, &mut children);
            let mut child_chain = chain.clone();
            child_chain.push(url.clone());
            // Children first, then mark this URL walked once they are done:
            // pushing a marker keeps the order without recursion.
            if children.is_empty() {
                walked.insert(url);
            } else {
                for child in children.into_iter().rev() {
                    stack.push((child, child_chain.clone()));
                }
            }
        }
        Ok(docs)
    }

    /// The document at `url`: hosted, cached, embedded or downloaded.
    async fn document_for(&self, url: &str) -> Result<Arc<Value>, ContextError> {
        if let Some(doc) = self.touch(url) {
            self.inner.document_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(doc);
        }
        if let Some(doc) = core::core_document_arc(url) {
            return Ok(doc);
        }
        self.inner.document_misses.fetch_add(1, Ordering::Relaxed);
        if !is_http_url(url) {
            // A client's mistake, not a context that is unavailable.
            return Err(ContextError::Invalid(format!(
                "the @context reference {url:?} is neither an http(s) URL nor a context held here"
            )));
        }
        if let Some(error) = self.recent_failure(url) {
            return Err(error);
        }
        let cell = {
            let mut in_flight = self.inner.in_flight.lock();
            Arc::clone(in_flight.entry(url.to_owned()).or_default())
        };
        let result = cell
            .get_or_init(|| async {
                // Another task may have finished the download just before
                // this one registered.
                if let Some(doc) = self.peek(url) {
                    return Ok(doc);
                }
                self.download(url).await
            })
            .await
            .clone();
        let mut in_flight = self.inner.in_flight.lock();
        if in_flight.get(url).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            in_flight.remove(url);
        }
        result
    }

    /// Downloads `url` within the time bound and caches the document, or
    /// remembers the failure for [`ResolverConfig::failure_ttl`].
    async fn download(&self, url: &str) -> Result<Arc<Value>, ContextError> {
        let result = self.try_download(url).await;
        let mut failures = self.inner.failures.lock();
        match &result {
            Ok(_) => {
                failures.remove(url);
            }
            Err(error) => {
                if failures.len() >= MAX_FAILURES {
                    let ttl = self.inner.config.failure_ttl;
                    failures.retain(|_, (at, _)| at.elapsed() < ttl);
                    if failures.len() >= MAX_FAILURES {
                        failures.clear();
                    }
                }
                failures.insert(url.to_owned(), (std::time::Instant::now(), error.clone()));
            }
        }
        result
    }

    async fn try_download(&self, url: &str) -> Result<Arc<Value>, ContextError> {
        let timeout = self.inner.config.fetch_timeout;
        let doc = match tokio::time::timeout(timeout, self.inner.fetcher.fetch(url)).await {
            Err(_) => {
                return Err(ContextError::NotAvailable {
                    url: url.to_owned(),
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                });
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(doc)) => Arc::new(doc),
        };
        remote_context_member(url, &doc)?;
        self.store(url, Arc::clone(&doc), ContextKind::Cached);
        Ok(doc)
    }

    /// The failure of a download of `url` within the last
    /// [`ResolverConfig::failure_ttl`], said to be remembered.
    fn recent_failure(&self, url: &str) -> Option<ContextError> {
        let ttl = self.inner.config.failure_ttl;
        let failures = self.inner.failures.lock();
        let (at, error) = failures.get(url).filter(|(at, _)| at.elapsed() < ttl)?;
        let ago = at.elapsed().as_secs_f64();
        Some(match error {
            ContextError::NotAvailable { url, reason } => ContextError::NotAvailable {
                url: url.clone(),
                reason: format!(
                    "{reason} ({ago:.1} s ago; tried again {} s after a failure)",
                    ttl.as_secs()
                ),
            },
            other => other.clone(),
        })
    }

    /// Stores a document, evicting the least recently used cached one if the
    /// cache is full.
    fn store(&self, url: &str, doc: Arc<Value>, kind: ContextKind) {
        let mut caches = self.inner.caches.lock();
        // Cached and implicitly created documents share one bound; hosted
        // ones are never evicted.
        if kind != ContextKind::Hosted {
            let evictable = |k: ContextKind| k != ContextKind::Hosted;
            let cached = caches.docs.values().filter(|e| evictable(e.kind)).count();
            if cached >= self.inner.config.max_cached_documents {
                let victim = caches
                    .docs
                    .iter()
                    .filter(|(_, e)| evictable(e.kind))
                    .min_by_key(|(_, e)| e.tick)
                    .map(|(u, _)| u.clone());
                if let Some(victim) = victim {
                    caches.docs.remove(&victim);
                }
            }
        }
        caches.tick += 1;
        let tick = caches.tick;
        let replaced = caches.docs.insert(
            url.to_owned(),
            DocEntry {
                doc,
                kind,
                created_at: SystemTime::now(),
                last_usage: None,
                hits: 0,
                tick,
            },
        );
        // A new URL cannot be behind any processed context (resolution would
        // have needed it), but a replaced document changes their meaning.
        if replaced.is_some() {
            caches.generation += 1;
            caches.processed.clear();
        }
    }

    /// Looks a document up and records the use.
    fn touch(&self, url: &str) -> Option<Arc<Value>> {
        let mut caches = self.inner.caches.lock();
        caches.tick += 1;
        let tick = caches.tick;
        let entry = caches.docs.get_mut(url)?;
        entry.hits += 1;
        entry.last_usage = Some(SystemTime::now());
        entry.tick = tick;
        Some(Arc::clone(&entry.doc))
    }

    /// Looks a document up without recording a use.
    fn peek(&self, url: &str) -> Option<Arc<Value>> {
        let caches = self.inner.caches.lock();
        caches.docs.get(url).map(|e| Arc::clone(&e.doc))
    }

    /// Hosts `document` (a JSON object with an `@context` member) under `url`,
    /// so that requests naming `url` resolve without HTTP. Replaces any
    /// document held under that URL.
    pub fn insert_local(&self, url: &str, document: Value) -> Result<(), ContextError> {
        match document.get("@context") {
            Some(Value::Object(_) | Value::Array(_) | Value::String(_)) if document.is_object() => {
            }
            _ => {
                return Err(ContextError::Invalid(
                    "a hosted context must be a JSON object with an @context member holding an object, an array or a URL"
                        .into(),
                ));
            }
        }
        self.store(url, Arc::new(document), ContextKind::Hosted);
        Ok(())
    }

    /// Keeps an inline `@context` (the whole document, `{"@context": ...}`)
    /// under `url` as ImplicitlyCreated, unless something is held there
    /// already.
    pub fn insert_implicit(&self, url: &str, document: Value) {
        if self.peek(url).is_none() {
            self.store(url, Arc::new(document), ContextKind::ImplicitlyCreated);
        }
    }

    /// The downloaded documents held here that `ctx` names, directly or
    /// through the documents it names (neither the embedded core contexts
    /// nor hosted ones), by URL: what resolving `ctx` again needs when their
    /// servers do not answer (give them back with [`Self::insert_cached`]).
    pub fn documents_of(&self, ctx: &Value) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut todo = Vec::new();
        collect_urls(ctx, &mut todo);
        while let Some(url) = todo.pop() {
            if seen.len() >= MAX_INCLUSIONS
                || core::core_document_arc(&url).is_some()
                || !seen.insert(url.clone())
            {
                continue;
            }
            let held = {
                let caches = self.inner.caches.lock();
                caches.docs.get(&url).map(|e| (Arc::clone(&e.doc), e.kind))
            };
            let Some((doc, kind)) = held else {
                continue;
            };
            if let Ok(inner) = remote_context_member(&url, &doc) {
                collect_urls(inner, &mut todo);
            }
            // Hosted documents are the client's to keep or delete.
            if kind != ContextKind::Hosted {
                out.push((url, (*doc).clone()));
            }
        }
        out
    }

    /// Keeps `document` as the cached document of `url`, unless one is held
    /// there already: gives back what [`Self::documents_of`] returned.
    pub fn insert_cached(&self, url: &str, document: Value) {
        if self.peek(url).is_none() {
            self.store(url, Arc::new(document), ContextKind::Cached);
        }
    }

    /// Stops hosting the document under `url`; tells whether one was hosted.
    pub fn remove_local(&self, url: &str) -> bool {
        let mut caches = self.inner.caches.lock();
        if caches
            .docs
            .get(url)
            .is_some_and(|e| e.kind == ContextKind::Hosted)
        {
            caches.docs.remove(url);
            caches.generation += 1;
            caches.processed.clear();
            true
        } else {
            false
        }
    }

    /// The document hosted under `url`, if any.
    pub fn local(&self, url: &str) -> Option<Arc<Value>> {
        let caches = self.inner.caches.lock();
        caches
            .docs
            .get(url)
            .filter(|e| e.kind == ContextKind::Hosted)
            .map(|e| Arc::clone(&e.doc))
    }

    /// The document held under `url`, hosted or cached, or the embedded core
    /// context of that URL; `None` if the broker holds nothing for it.
    pub fn document(&self, url: &str) -> Option<Arc<Value>> {
        self.peek(url).or_else(|| core::core_document_arc(url))
    }

    /// Metadata of every hosted and cached document, sorted by URL.
    pub fn entries(&self) -> Vec<ContextInfo> {
        let caches = self.inner.caches.lock();
        let mut list: Vec<ContextInfo> = caches
            .docs
            .iter()
            .map(|(url, e)| ContextInfo {
                url: url.clone(),
                kind: e.kind,
                created_at: e.created_at,
                last_usage: e.last_usage,
                number_of_hits: e.hits,
            })
            .collect();
        list.sort_by(|a, b| a.url.cmp(&b.url));
        list
    }

    /// Metadata of the document held under `url`, if any.
    pub fn entry(&self, url: &str) -> Option<ContextInfo> {
        let caches = self.inner.caches.lock();
        caches.docs.get(url).map(|e| ContextInfo {
            url: url.to_owned(),
            kind: e.kind,
            created_at: e.created_at,
            last_usage: e.last_usage,
            number_of_hits: e.hits,
        })
    }

    /// Records a use of the document held under `url` by a request that
    /// found it in the storage without resolving a context (Serve @context),
    /// and gives its metadata, that use counted.
    pub fn hit(&self, url: &str) -> Option<ContextInfo> {
        self.touch(url)?;
        self.entry(url)
    }

    /// Forgets the document held under `url`, hosted or cached; tells whether
    /// there was one.
    pub fn remove(&self, url: &str) -> bool {
        let mut caches = self.inner.caches.lock();
        let removed = caches.docs.remove(url).is_some();
        if removed {
            caches.generation += 1;
            caches.processed.clear();
        }
        removed
    }

    /// Downloads the cached document of `url` again and replaces it (DELETE
    /// `/jsonldContexts/{id}?reload=true`). On failure the old copy is kept.
    /// Hosted documents have nothing to reload from and fail as
    /// [`ContextError::Invalid`].
    pub async fn reload(&self, url: &str) -> Result<(), ContextError> {
        if self.local(url).is_some() {
            return Err(ContextError::Invalid(format!(
                "{url} is hosted by this broker and cannot be reloaded"
            )));
        }
        self.inner.document_misses.fetch_add(1, Ordering::Relaxed);
        self.download(url).await.map(|_| ())
    }

    /// The cache counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            document_hits: self.inner.document_hits.load(Ordering::Relaxed),
            document_misses: self.inner.document_misses.load(Ordering::Relaxed),
            processed_hits: self.inner.processed_hits.load(Ordering::Relaxed),
            processed_misses: self.inner.processed_misses.load(Ordering::Relaxed),
        }
    }
}

/// Removes the entry with the least `tick`.
/// Whether `url` is an absolute http or https URL with a host.
fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    rest.chars().next().is_some_and(|c| c != '/')
}

fn evict_oldest<V>(map: &mut HashMap<String, V>, tick: impl Fn(&V) -> u64) {
    if let Some(key) = map
        .iter()
        .min_by_key(|(_, v)| tick(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&key);
    }
}

/// Tells whether `ctx` adds nothing to the core context.
fn is_only_core(ctx: &Value) -> bool {
    match ctx {
        Value::Null => true,
        Value::String(url) => core::is_current_core_url(url),
        Value::Array(items) => items.iter().all(is_only_core_item),
        _ => false,
    }
}

/// Like [`is_only_core`] for an array item, where `null` is a reset that
/// still leaves only the core context.
fn is_only_core_item(ctx: &Value) -> bool {
    match ctx {
        Value::Null => true,
        Value::String(url) => core::is_current_core_url(url),
        _ => false,
    }
}

/// Collects the URLs a local context refers to directly: string items and
/// `@import` values, not the scoped contexts of term definitions (those are
/// not processed).
fn collect_urls(ctx: &Value, out: &mut Vec<String>) {
    match ctx {
        Value::String(url) => out.push(url.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_urls(i, out)),
        Value::Object(map) => {
            if let Some(Value::String(url)) = map.get("@import") {
                out.push(url.clone());
            }
        }
        _ => {}
    }
}

/// The JSON text of `value` with object members sorted by key, so that equal
/// contexts written in different member orders share one cache entry.
pub fn canonical_json(value: &Value) -> String {
    // Sized for the common key, one URL (a Link header's), in one go.
    let mut out = String::with_capacity(match value {
        Value::String(s) => s.len() + 2,
        _ => 64,
    });
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, key);
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::String(s) => push_json_string(out, s),
        other => out.push_str(&other.to_string()),
    }
}

/// `s` as a JSON string, as serde_json writes it. Every request with a
/// Link header makes the key of one URL: most need no escape, and
/// serde_json's formatter took a third of the lookup.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&Value::String(s.to_string()).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}
