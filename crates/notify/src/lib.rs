//! Delivery of notifications over HTTP and MQTT.
//!
//! The [`Notifier`] knows nothing of NGSI-LD matching: it receives finished
//! messages (headers and a JSON body) for a subscription key and an
//! [`Endpoint`], and delivers them. Every key has one bounded queue and one
//! sender task, so messages of one subscription stay in order and a slow or
//! dead receiver fills only its own queue; a message that does not fit is
//! dropped and counted. Failed deliveries are retried with exponential
//! back-off. What happens to each message is told to a [`Reports`] sink
//! (the subscription engine keeps timesSent, lastSuccess, ... from it).

pub mod endpoint;
mod metrics;
mod mqtt;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

pub use endpoint::{
    Endpoint, EndpointError, MqttEndpoint, MqttVersion, Target, check_receiver_info, parse_target,
};

/// One notification ready to send.
#[derive(Debug, Clone)]
pub struct Message {
    /// HTTP headers, or the `metadata` members of an MQTT message
    /// (Content-Type, Link, receiverInfo, ...).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Bytes,
    /// When the change that caused it was acknowledged (for the latency
    /// metric).
    pub since: Instant,
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The message is about to go out (reported before the first attempt,
    /// so a receiver that looks at the subscription when the message
    /// arrives sees it counted).
    Sending,
    /// The receiver accepted it.
    Delivered,
    /// Every attempt failed; the reason of the last one.
    Failed(String),
}

/// The sink of delivery events.
pub trait Reports: Send + Sync + 'static {
    /// `event` happened to a message of subscription `key`.
    fn report(&self, key: &str, event: Event);
}

/// Settings of the notifier.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Messages waiting per subscription before new ones are dropped.
    pub queue_depth: usize,
    /// Attempts per message (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Timeout of one attempt when the endpoint sets none.
    pub default_timeout: Duration,
    /// How long an idle connection to a receiver is kept for the next
    /// notification before it is closed.
    pub idle_timeout: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            queue_depth: 1024,
            max_attempts: 3,
            backoff: Duration::from_millis(100),
            default_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

struct Queue {
    tx: mpsc::Sender<Message>,
    endpoint: Arc<RwLock<Arc<Endpoint>>>,
}

/// The client of plain `http://` endpoints (see [`deliver`]).
type PlainClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

struct Inner {
    config: NotifierConfig,
    /// `http://` endpoints; `None` behind a proxy.
    plain: Option<PlainClient>,
    /// `https://` endpoints.
    http: reqwest::Client,
    mqtt: mqtt::Connections,
    queues: Mutex<HashMap<Arc<str>, Queue>>,
    reports: Arc<dyn Reports>,
    metrics: metrics::Metrics,
}

/// Delivers notifications; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The subscription's queue is full (its receiver is too slow).
    QueueFull,
}

/// The `User-Agent` of notifications.
const USER_AGENT: &str = concat!("wuyang/", env!("CARGO_PKG_VERSION"));

impl Notifier {
    /// A notifier reporting to `reports`. Must be created inside a Tokio
    /// runtime (sender tasks are spawned on it).
    pub fn new(config: NotifierConfig, reports: Arc<dyn Reports>) -> Self {
        // reqwest is built without a TLS provider of its own: any client in
        // the process needs one installed first (a no-op when it is).
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Header names go out title-cased (`Link`, `X-Department`): HTTP
        // says case does not matter, but receivers that keep the names in a
        // plain dictionary (Python's http.server, the ETSI test harness)
        // look them up as the spec and receiverInfo write them.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .http1_title_case_headers()
            .user_agent(USER_AGENT)
            .pool_idle_timeout(config.idle_timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        // hyper's pool closes idle connections only with a timer. Behind an
        // HTTP proxy (set in the environment, which reqwest follows) every
        // endpoint takes reqwest's path.
        let proxied = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        let plain = (!proxied).then(|| {
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http1_title_case_headers(true)
                .pool_idle_timeout(config.idle_timeout)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build_http()
        });
        Self {
            inner: Arc::new(Inner {
                config,
                plain,
                http,
                mqtt: mqtt::Connections::default(),
                queues: Mutex::new(HashMap::new()),
                reports,
                metrics: metrics::Metrics::default(),
            }),
        }
    }

    /// Queues `message` for subscription `key`, to be delivered to
    /// `endpoint` (which replaces the key's previous endpoint).
    pub fn send(
        &self,
        key: &Arc<str>,
        endpoint: &Arc<Endpoint>,
        message: Message,
    ) -> Result<(), Rejected> {
        let mut queues = self.inner.queues.lock();
        let queue = queues.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.inner.config.queue_depth.max(1));
            let cell = Arc::new(RwLock::new(endpoint.clone()));
            tokio::spawn(run(self.inner.clone(), key.clone(), cell.clone(), rx));
            Queue { tx, endpoint: cell }
        });
        if !Arc::ptr_eq(&queue.endpoint.read(), endpoint) {
            *queue.endpoint.write() = endpoint.clone();
        }
        match queue.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.inner.metrics.dropped_queue_full.inc();
                Err(Rejected::QueueFull)
            }
        }
    }

    /// Forgets subscription `key`: messages already queued are still
    /// delivered, then its sender task ends.
    pub fn forget(&self, key: &str) {
        self.inner.queues.lock().remove(key);
    }

    /// Registers the delivery metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
    }
}

/// The sender task of one subscription.
async fn run(
    inner: Arc<Inner>,
    key: Arc<str>,
    endpoint: Arc<RwLock<Arc<Endpoint>>>,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut last_failure: Option<Instant> = None;
    while let Some(message) = rx.recv().await {
        let endpoint = endpoint.read().clone();
        if let (Some(cooldown), Some(at)) = (endpoint.cooldown, last_failure)
            && at.elapsed() < cooldown
        {
            inner.metrics.dropped_cooldown.inc();
            continue;
        }
        inner.reports.report(&key, Event::Sending);
        let transport = match endpoint.target {
            Target::Http(_) => "http",
            Target::Mqtt(_) => "mqtt",
        };
        let mut attempt = 1;
        loop {
            match deliver(&inner, &endpoint, &message).await {
                Ok(()) => {
                    inner.metrics.delivered(transport, message.since.elapsed());
                    inner.reports.report(&key, Event::Delivered);
                    last_failure = None;
                    break;
                }
                Err(reason) => {
                    if attempt >= inner.config.max_attempts {
                        tracing::debug!(subscription = %key, %reason, "notification failed");
                        inner.metrics.failed(transport);
                        inner.reports.report(&key, Event::Failed(reason));
                        last_failure = Some(Instant::now());
                        break;
                    }
                    inner.metrics.retries.inc();
                    tokio::time::sleep(inner.config.backoff * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
            }
        }
    }
}

async fn deliver(inner: &Inner, endpoint: &Endpoint, message: &Message) -> Result<(), String> {
    let timeout = endpoint.timeout.unwrap_or(inner.config.default_timeout);
    match &endpoint.target {
        // Plain HTTP on hyper's client directly: reqwest's layers (its own
        // copy of the URL, redirect handling, a timer per request) cost a
        // third of the notifier's work per notification. Redirects are not
        // followed, on either path: a 3xx answer is a failed delivery (a
        // redirected POST would lose its body, and the subscription names
        // its endpoint). A URL with credentials (reqwest sends them as
        // Basic authentication) or a fragment (reqwest leaves it out) takes
        // reqwest's path.
        Target::Http(url)
            if url.scheme() == "http"
                && url.username().is_empty()
                && url.password().is_none()
                && url.fragment().is_none()
                && inner.plain.is_some() =>
        {
            let Some(plain) = &inner.plain else {
                return Err("no client for plain HTTP".into());
            };
            let mut request = http::Request::post(url.as_str());
            if let Some(headers) = request.headers_mut() {
                for (k, v) in message.headers.iter().chain(&endpoint.receiver_info) {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| format!("header {k}: {e}"))?;
                    let value =
                        http::HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
                    headers.append(name, value);
                }
                // reqwest's defaults, where the headers above set none.
                headers
                    .entry(http::header::USER_AGENT)
                    .or_insert(http::HeaderValue::from_static(USER_AGENT));
                headers
                    .entry(http::header::ACCEPT)
                    .or_insert(http::HeaderValue::from_static("*/*"));
            }
            let request = request
                .body(http_body_util::Full::new(message.body.clone()))
                .map_err(|e| e.to_string())?;
            let response = tokio::time::timeout(timeout, plain.request(request))
                .await
                .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {}", response.status()))
            }
        }
        Target::Http(url) => {
            let mut request = inner.http.post(url.clone()).timeout(timeout);
            for (k, v) in message.headers.iter().chain(&endpoint.receiver_info) {
                request = request.header(k.as_str(), v.as_str());
            }
            let response = request
                .body(message.body.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {}", response.status()))
            }
        }
        Target::Mqtt(m) => {
            let mut metadata = serde_json::Map::new();
            for (k, v) in message.headers.iter().chain(&endpoint.receiver_info) {
                metadata.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            let mut payload = Vec::with_capacity(message.body.len() + 128);
            payload.extend_from_slice(b"{\"metadata\":");
            payload.extend_from_slice(serde_json::Value::Object(metadata).to_string().as_bytes());
            payload.extend_from_slice(b",\"body\":");
            payload.extend_from_slice(&message.body);
            payload.push(b'}');
            inner.mqtt.publish(m, payload, timeout).await
        }
    }
}
