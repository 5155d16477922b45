//! The HTTP API of Wuyang: the NGSI-LD binding (clause 6) over [`broker`].
//!
//! **Architecture invariant:** this is the only crate that knows HTTP.
//! Handlers are thin: they extract headers, parameters and the body, call one
//! broker method, and map the result to a response.

pub mod http;
mod metrics;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use broker::Broker;
use bytes::Bytes;
use ngsi_model::{ErrorKind, NgsiError};
use tower::ServiceExt as _;

pub use metrics::Metrics;

use crate::http::{ApiError, TENANT_HEADER};

/// Limits and settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest request body accepted, in bytes (larger gets 413).
    pub max_body_bytes: usize,
    /// The deepest JSON nesting accepted in a body.
    pub max_json_depth: usize,
    /// How long a connection may take to send the headers of its next
    /// request, idle keep-alive time included, before it is closed: slow
    /// or forgotten clients do not hold connections forever.
    pub idle_timeout: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_json_depth: 64,
            idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The NGSI-LD service.
    pub broker: Arc<Broker>,
    /// HTTP settings.
    pub config: Arc<ServerConfig>,
    /// The metrics registry and the HTTP metrics.
    pub metrics: Arc<Metrics>,
}

/// The parts of a request every NGSI-LD handler needs.
pub struct Ngsi {
    /// The tenant (empty for the default tenant).
    pub tenant: String,
    /// The NGSILD-Tenant header to echo.
    pub tenant_header: Option<HeaderValue>,
    /// All request headers.
    pub headers: HeaderMap,
    /// The method.
    pub method: Method,
    /// The raw query string.
    pub query: Option<String>,
    /// The Host header, for URLs the server hands out.
    pub host: String,
}

impl Ngsi {
    /// Maps an error to a response that echoes the tenant.
    pub fn err(&self, e: NgsiError) -> ApiError {
        ApiError::from(e).with_tenant(&self.tenant_header)
    }
}

impl FromRequestParts<AppState> for Ngsi {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let echo = parts.headers.get(TENANT_HEADER).cloned();
        // A write without Content-Length is refused before anything else is
        // looked at, the tenant included (clause 6.3.2; docs/spec-notes.md §0).
        let writes = matches!(parts.method, Method::POST | Method::PATCH | Method::PUT);
        if writes
            && !parts
                .headers
                .contains_key(axum::http::header::CONTENT_LENGTH)
        {
            return Err(ApiError::from(NgsiError::new(
                ErrorKind::LengthRequired,
                "Content-Length is required",
            ))
            .with_tenant(&echo));
        }
        if writes {
            http::content_type(&parts.headers, &parts.method)
                .map_err(|e| ApiError::from(e).with_tenant(&echo))?;
        }
        let (mut tenant, tenant_header) =
            http::tenant(&parts.headers).map_err(|e| ApiError::from(e).with_tenant(&echo))?;
        if let Some(snapshot) = parts.headers.get(broker::snapshots::HEADER) {
            tenant = snapshot_tenant(state, &tenant, snapshot, parts.uri.path())
                .map_err(|e| ApiError::from(e).with_tenant(&echo))?;
        }
        Ok(Ngsi {
            tenant,
            tenant_header,
            headers: parts.headers.clone(),
            method: parts.method.clone(),
            query: parts.uri.query().map(str::to_string),
            host: parts
                .headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_string(),
        })
    }
}

/// The paths (under the base path) of the APIs a Snapshot does not offer:
/// only the Core and Temporal APIs run on one (clause 5.5.15).
const NOT_ON_SNAPSHOTS: [&str; 7] = [
    "/csourceRegistrations",
    "/csourceSubscriptions",
    "/entityMaps",
    "/temporal/entityMaps",
    "/jsonldContexts",
    "/snapshots",
    "/info",
];

/// The store tenant of the Snapshot that the `NGSILD-Snapshot` header of a
/// request of `tenant` to `path` names.
fn snapshot_tenant(
    state: &AppState,
    tenant: &str,
    header: &HeaderValue,
    path: &str,
) -> Result<String, NgsiError> {
    let path = path.strip_prefix("/ngsi-ld/v1").unwrap_or(path);
    if NOT_ON_SNAPSHOTS
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Err(NgsiError::new(
            ErrorKind::OperationNotSupported,
            "only the Core and Temporal APIs operate on a Snapshot (clause 5.5.15)",
        ));
    }
    let header = header
        .to_str()
        .map_err(|_| NgsiError::bad_data("the NGSILD-Snapshot header is not text"))?;
    state.broker.snapshot_of(tenant, header)
}

/// Reads a request body within the configured size, requiring
/// Content-Length (411 otherwise, clause 6.3.2).
pub async fn read_body(req: &Ngsi, state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let Some(len) = req.headers.get(axum::http::header::CONTENT_LENGTH) else {
        return Err(req.err(NgsiError::new(
            ErrorKind::LengthRequired,
            "Content-Length is required",
        )));
    };
    if len
        .to_str()
        .ok()
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > state.config.max_body_bytes)
    {
        return Err(req.err(too_large(state)));
    }
    // A compressed body would be read as JSON text: refused, not misread.
    if let Some(coding) = req
        .headers
        .get(axum::http::header::CONTENT_ENCODING)
        .filter(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(req.err(NgsiError::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "Content-Encoding {} is not supported",
                String::from_utf8_lossy(coding.as_bytes())
            ),
        )));
    }
    // The whole body must arrive within the idle timeout (60 s by default,
    // for at most `max_body_bytes`, 8 MiB by default): one that trickles in
    // is not waited for longer, and its connection then closes, since the
    // body was not read to its end (`close_unread`).
    let timeout = state.config.idle_timeout;
    match tokio::time::timeout(
        timeout,
        axum::body::to_bytes(body, state.config.max_body_bytes),
    )
    .await
    {
        Ok(read) => read.map_err(|_| req.err(too_large(state))),
        Err(_) => Err(req.err(NgsiError::new(
            ErrorKind::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        ))),
    }
}

fn too_large(state: &AppState) -> NgsiError {
    NgsiError::new(
        ErrorKind::PayloadTooLarge,
        format!(
            "the request body is larger than {} bytes",
            state.config.max_body_bytes
        ),
    )
}

/// Builds the whole HTTP application.
pub fn app(state: AppState) -> Router {
    let api = routes::router().layer(axum::middleware::from_fn(echo_snapshot));
    Router::new()
        .nest("/ngsi-ld/v1", api)
        .merge(routes::ops_router())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(close_unread))
        .with_state(state)
}

/// Answers with `Connection: close` a request whose body the handler did
/// not read to its end (it was refused first: 411, 415, a bad parameter).
/// The server cannot tell where the next request on that connection would
/// start, so the connection ends after the answer; saying so keeps a client
/// from sending its next request into a closed connection.
async fn close_unread(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let headers = req.headers();
    let has_body = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || headers.contains_key(axum::http::header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let read = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(ReadToEnd {
        inner: body,
        read: read.clone(),
    });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if !read.load(std::sync::atomic::Ordering::Relaxed) {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    resp
}

/// A request body that notes when it has been read to its end.
struct ReadToEnd {
    inner: Body,
    read: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Answers a request that names a Snapshot with the same header (clause
/// 6.3.22).
async fn echo_snapshot(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let snapshot = req.headers().get(broker::snapshots::HEADER).cloned();
    let mut resp = next.run(req).await;
    if let (Some(v), Ok(name)) = (
        snapshot,
        axum::http::HeaderName::from_bytes(broker::snapshots::HEADER.as_bytes()),
    ) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

fn strip_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let new = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Serves `state` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish (for at most 5 s). Paths with a trailing slash are served like
/// those without (the ETSI test suite uses both).
///
/// HTTP/1.1 through hyper directly rather than `axum::serve`, for two
/// settings it does not offer: response header names go out title-cased
/// (`Location`, `Content-Type`, `NGSILD-Results-Count`; names are
/// case-insensitive, but clients that look them up in a plain dictionary
/// exist: the ETSI test suite reads the `Location` of a created resource
/// so), and a connection that does not send the headers of its next
/// request within [`ServerConfig::idle_timeout`] is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let idle_timeout = state.config.idle_timeout;
    let app = app(state).map_request(strip_trailing_slash);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(|req: hyper::Request<hyper::body::Incoming>| req.map(Body::new));
        let conn = hyper::server::conn::http1::Builder::new()
            .title_case_headers(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(idle_timeout)
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // A live stream never ends by itself: it gets a few seconds.
    if tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open at shutdown were closed");
    }
    Ok(())
}
