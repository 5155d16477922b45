//! The test harness: a real Wuyang server on a free port of 127.0.0.1, an
//! HTTP client, and the few assertions every module shares.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, BrokerConfig};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use server::{AppState, Metrics, ServerConfig};
use store::sqlite::{SqliteConfig, SqliteStore};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The base path of the API.
pub const API: &str = "/ngsi-ld/v1";
/// The NGSI-LD core context URL the server puts in Link headers.
pub const CORE: &str = jsonld::CORE_CONTEXT_URL;
/// The JSON-LD context link relation.
pub const CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";
/// The body size limit of the test servers.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest `limit` of the test servers.
pub const MAX_LIMIT: usize = 100;

/// A running server and a client for it.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    client: reqwest::Client,
}

/// A Link header value naming `url` as the JSON-LD context.
pub fn link(url: &str) -> String {
    format!("<{url}>; rel=\"{CONTEXT_REL}\"; type=\"application/ld+json\"")
}

impl Server {
    /// Starts a server over an in-memory store, with a short @context fetch
    /// timeout so that unreachable contexts fail fast.
    pub async fn start() -> Server {
        Self::start_with(ServerConfig::default().idle_timeout).await
    }

    /// As [`Server::start`], closing connections that take longer than
    /// `idle_timeout` to send a request's headers.
    pub async fn start_with(idle_timeout: Duration) -> Server {
        Self::start_full(idle_timeout, "wuyang-test").await
    }

    /// As [`Server::start`], with its own Context Source alias (brokers
    /// that forward to each other need different ones).
    pub async fn start_as(alias: &str) -> Server {
        Self::start_full(ServerConfig::default().idle_timeout, alias).await
    }

    async fn start_full(idle_timeout: Duration, alias: &str) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        let store = SqliteStore::open(SqliteConfig::default()).expect("in-memory store");
        let contexts = jsonld::ContextResolver::new(jsonld::ResolverConfig {
            fetch_timeout: Duration::from_millis(400),
            ..Default::default()
        });
        let store = Arc::new(store);
        let broker = Broker::new(
            store.clone(),
            contexts,
            BrokerConfig {
                default_limit: 20,
                max_limit: MAX_LIMIT,
                notifier: notify::NotifierConfig {
                    backoff: Duration::from_millis(20),
                    default_timeout: Duration::from_secs(2),
                    ..Default::default()
                },
                source_alias: alias.into(),
                public_url: Some(origin.clone()),
                source_retry: Duration::from_millis(200),
                ..Default::default()
            },
        );
        let metrics = Metrics::new(|r| {
            store.register_metrics(r);
            broker.register_metrics(r);
        });
        broker.ready().await;
        let state = AppState {
            broker: Arc::new(broker),
            config: Arc::new(ServerConfig {
                max_body_bytes: MAX_BODY,
                max_json_depth: 64,
                idle_timeout,
            }),
            metrics: Arc::new(metrics),
        };
        tokio::spawn(server::serve(listener, state, pending()));
        jsonld::install_tls_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Server { origin, client }
    }

    /// The absolute URL of `path` under the API base (`/entities/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.origin)
    }

    /// A request builder for `path` under the API base.
    pub fn req(&self, method: Method, path: &str) -> Req {
        Req {
            inner: self.client.request(method, self.url(path)),
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path).send().await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path).send().await
    }

    /// `method` `path` with an `application/json` body.
    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Resp {
        self.req(method, path).json(body).send().await
    }

    /// POST `path` with an `application/json` body.
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::POST, path, body).await
    }

    /// PATCH `path` with an `application/json` body.
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PATCH, path, body).await
    }

    /// PUT `path` with an `application/json` body.
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PUT, path, body).await
    }

    /// Creates `entity` (application/json) and expects 201.
    pub async fn create(&self, entity: Value) {
        let r = self.post("/entities", &entity).await;
        assert_eq!(r.status, 201, "create {entity}: {}", r.text);
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(format!("{}/metrics", self.origin))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Retrieves entity `id` with extra query `params` (`""` for none) and
    /// expects 200.
    pub async fn entity(&self, id: &str, params: &str) -> Value {
        let r = self.get(&format!("/entities/{}?{params}", enc(id))).await;
        assert_eq!(r.status, 200, "retrieve {id}: {}", r.text);
        r.body
    }

    /// The ids returned by GET /entities?`query`, in order.
    pub async fn ids(&self, query: &str) -> Vec<String> {
        let r = self.get(&format!("/entities?{query}")).await;
        assert_eq!(r.status, 200, "query {query}: {}", r.text);
        ids_of(&r.body)
    }
}

/// The `id` members of a JSON array of entities.
pub fn ids_of(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Sorted copy of string list.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Percent-encodes a value for a query string or a path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request being built.
pub struct Req {
    inner: reqwest::RequestBuilder,
}

impl Req {
    /// Adds a header.
    pub fn header(self, name: &str, value: &str) -> Req {
        Req {
            inner: self.inner.header(name, value),
        }
    }

    /// Sets an `application/json` body.
    pub fn json(self, body: &Value) -> Req {
        self.body("application/json", body.to_string())
    }

    /// Sets an `application/ld+json` body.
    pub fn ld(self, body: &Value) -> Req {
        self.body("application/ld+json", body.to_string())
    }

    /// Sets a body of any media type.
    pub fn body(self, content_type: &str, body: impl Into<String>) -> Req {
        Req {
            inner: self
                .inner
                .header("content-type", content_type)
                .body(body.into()),
        }
    }

    /// Sends the request.
    pub async fn send(self) -> Resp {
        let r = self.inner.send().await.expect("request failed");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }
}

/// A response, with the body read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The target of the paging link `rel` (`"next"` or `"prev"`), as a
    /// path under the API base.
    pub fn paging_link(&self, rel: &str) -> Option<String> {
        let mark = format!("rel=\"{rel}\"");
        self.headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.contains(&mark))
            .and_then(|l| l.strip_prefix('<')?.split_once('>'))
            .and_then(|(target, _)| target.strip_prefix(API))
            .map(str::to_string)
    }

    /// Asserts an NGSI-LD error: status, `application/problem+json`, the
    /// ProblemDetails `type`, and a non-empty `title` and `detail` that
    /// differ (the ETSI test suite's rule).
    #[track_caller]
    pub fn problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "status of {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            json!(format!("https://uri.etsi.org/ngsi-ld/errors/{kind}")),
            "{}",
            self.text
        );
        check_problem_texts(&self.body);
    }

    /// Asserts an empty success status (204 without a body).
    #[track_caller]
    pub fn no_content(&self) {
        assert_eq!(self.status, 204, "{}", self.text);
        assert!(self.text.is_empty(), "204 with a body: {}", self.text);
    }
}

/// Asserts the `title`/`detail` rule of ProblemDetails.
#[track_caller]
pub fn check_problem_texts(p: &Value) {
    let title = p["title"].as_str().unwrap_or_default();
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(
        !title.is_empty() && !detail.is_empty() && title != detail,
        "ProblemDetails texts: {p}"
    );
}

/// Serves `doc` as `application/ld+json` to every GET, on a fresh port;
/// returns its URL. The task ends with the test's runtime.
pub async fn serve_document(doc: Value) -> String {
    serve_text(doc.to_string()).await
}

/// Serves `body` verbatim, JSON or not, as `application/ld+json`.
pub async fn serve_text(body: String) -> String {
    serve_text_times(body, usize::MAX).await
}

/// Serves `doc` to the first `times` connections, then closes the port: a
/// context server that goes away.
pub async fn serve_document_times(doc: Value, times: usize) -> String {
    serve_text_times(doc.to_string(), times).await
}

async fn serve_text_times(body: String, times: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/context.jsonld",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move {
        for _ in 0..times {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            // The last connection is answered before the listener closes.
            let answer = tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/ld+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
            if times != usize::MAX {
                let _ = answer.await;
            }
        }
    });
    url
}

/// A URL on 127.0.0.1 whose listener accepts connections and never answers.
/// Keep the returned listener alive for as long as the URL is used.
pub fn silent_url() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/context.jsonld",
        listener.local_addr().expect("address")
    );
    (listener, url)
}

/// A TCP relay to another server that can be closed and opened again: a
/// server that goes away and comes back, at one address.
pub struct Gate {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Gate {
    /// An open gate to `target` (`http://host:port`).
    pub async fn to(target: &str) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        let target = target.trim_start_matches("http://").to_string();
        let open = Arc::new(tokio::sync::watch::Sender::new(true));
        let state = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut closed = state.subscribe();
                if !*closed.borrow_and_update() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { origin, open }
    }

    /// Drops every connection through the gate and refuses new ones.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// Sends raw bytes over a fresh connection and returns the status line and
/// the rest of the response (for requests a client library will not make).
pub async fn raw(server: &Server, request: &str) -> String {
    let addr = server.origin.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A small vehicle entity with a speed, a brand and a location.
pub fn vehicle(id: &str, speed: i64) -> Value {
    json!({
        "id": id,
        "type": "Vehicle",
        "speed": { "type": "Property", "value": speed },
        "brandName": { "type": "Property", "value": "Mercedes" },
        "location": { "type": "GeoProperty", "value": { "type": "Point", "coordinates": [113.26, 23.13] } },
    })
}
