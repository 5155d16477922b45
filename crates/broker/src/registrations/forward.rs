//! Distributed reads (clauses 4.3.6, 5.7.1.4 and 5.7.2.4): Retrieve Entity
//! and Query Entities asked of the registered context sources as well as
//! of the local store, and the answers merged (clause 4.5.5).
//!
//! The local-only path is untouched: a tenant without registrations costs
//! one read lock. Sources are asked over HTTP with the client's selection
//! parameters as the client wrote them and the client's @context, so that
//! a source reads the names exactly as this broker did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ngsi_model::entity::same_iri;
use ngsi_model::parse::{EntityRequirements, ParseLimits, parse_entity};
use ngsi_model::time::parse_datetime;
use ngsi_model::{Attribute, Entity, NgsiResult, Terms};
use ngsi_query::Query;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use store::Page;

mod discovery;
pub(crate) mod temporal;
mod write;

pub(crate) use write::{BatchFanout, EntityWrite};
pub use write::{Plan, Write, WriteAnswer, WriteKind};

use super::Registry;
use super::model::{Mode, Registration, RegistrationQuery};
use crate::{Broker, Ctx, EntityQuery, QueryResult, ViewOptions};

/// How long a source may take when its registration sets no
/// `management.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a source may take, whatever its registration says.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The most bytes read from one source for one read, all pages together.
const MAX_BODY: usize = 32 << 20;
/// The most sources one read asks at the same time (a tenant may have
/// many registrations; the rest wait for a turn).
const MAX_ASKED_AT_ONCE: usize = 16;
/// The most pages of one source's answer followed through `next` links.
const MAX_PAGES: usize = 50;
/// The query parameters a source receives, as the client wrote them: the
/// selection. Paging, representation and projection stay here: sources
/// answer the normalized form, which merging needs.
const QUERY_PARAMS: &[&str] = &[
    "id",
    "idPattern",
    "type",
    "attrs",
    "q",
    "scopeQ",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "datasetId",
    "expandValues",
    "jsonKeys",
];
/// The parameters of a query with `splitEntities=true` passed on: only
/// the selection, as a source's part of an entity may not satisfy the
/// filters on its own.
const SPLIT_QUERY_PARAMS: &[&str] = &["id", "idPattern", "type"];
/// The members of a Query document sent with `splitEntities=true`: the
/// selection only (no filter, projection or language: the parts must come
/// whole).
const SPLIT_QUERY_MEMBERS: &[&str] = &["type", "entities", "@context"];
/// The page size asked of a source with `splitEntities=true`, where every
/// page is read: larger pages than a default of 20 keep a big answer within
/// [`MAX_PAGES`].
const SPLIT_PAGE: usize = 100;
/// The same for Retrieve Entity.
const RETRIEVE_PARAMS: &[&str] = &["type", "attrs", "datasetId"];
/// contextSourceInfo keys that tell the broker how to talk to the source
/// (clause 4.3.6.6) rather than headers to send.
const SPECIAL_KEYS: &[&str] = &[
    "jsonldContext",
    "accept",
    "contentType",
    "ngsildConformance",
];
/// Headers that belong to the connection, never taken from
/// contextSourceInfo.
const CONNECTION_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "via",
    "link",
    "accept",
    "content-type",
    "ngsild-tenant",
];
/// contextSourceInfo's value that copies the client's header (4.3.6.5).
const FROM_REQUEST: &str = "urn:ngsi-ld:request";

/// What a read brings from its request for forwarding (borrowed: nothing
/// is copied unless a source is asked).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The request's headers (`Via`, and those contextSourceInfo copies).
    pub headers: &'a HeaderMap,
    /// `local=true` (Retrieve Entity; a query carries its own).
    pub local: bool,
    /// The Query document of `POST /entityOperations/query`, as received
    /// (with its `@context` when it came as JSON-LD): forwarded as the
    /// body of the same operation.
    pub body: Option<&'a Value>,
    /// Only these registrations may be asked (those an EntityMap names,
    /// clause 5.7.2.4); `None`: any.
    pub only: Option<&'a [Arc<str>]>,
}

impl Origin<'_> {
    /// The request's `Via` header values, joined.
    fn via(&self) -> String {
        self.headers
            .get_all(reqwest::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether a `Via` header names `alias` as a received-by pseudonym.
pub(crate) fn via_names(via: &str, alias: &str) -> bool {
    via.split(',').any(|hop| {
        let mut parts = hop.split_whitespace();
        parts.next();
        parts.next() == Some(alias)
    })
}

/// How the forwarding to one registration went (Table 5.2.9-2).
#[derive(Debug, Default, Clone)]
pub struct SourceStats {
    sent: u64,
    failed: u64,
    last_success: Option<i64>,
    last_failure: Option<i64>,
    last_ok: bool,
    /// When the source last timed out.
    timed_out_at: Option<i64>,
}

impl SourceStats {
    fn record<T>(&mut self, result: &Result<T, Failure>, now: i64) {
        let ok = result.is_ok();
        if matches!(result, Err(Failure::Timeout(_))) {
            self.timed_out_at = Some(now);
        }
        self.sent += 1;
        self.last_ok = ok;
        if ok {
            self.last_success = Some(now);
        } else {
            self.failed += 1;
            self.last_failure = Some(now);
        }
    }

    /// Adds `status`, `timesSent`, `timesFailed`, `lastSuccess` and
    /// `lastFailure` to a rendered registration.
    pub(crate) fn render(&self, out: &mut Map<String, Value>) {
        use ngsi_model::time::format_micros;
        out.insert(
            "status".into(),
            Value::from(if self.last_ok { "ok" } else { "failed" }),
        );
        out.insert("timesSent".into(), Value::from(self.sent));
        out.insert("timesFailed".into(), Value::from(self.failed));
        if let Some(t) = self.last_success {
            out.insert("lastSuccess".into(), Value::from(format_micros(t)));
        }
        if let Some(t) = self.last_failure {
            out.insert("lastFailure".into(), Value::from(format_micros(t)));
        }
    }
}

/// The HTTP client that asks the sources.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
}

impl Forwarder {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Header names as written in the specification (`Via`, not
            // `via`): some sources, the ETSI test mock among them, read
            // them case-sensitively.
            .http1_title_case_headers()
            .user_agent(concat!("wuyang/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { client }
    }
}

/// Why a source's answer is not in the result: each becomes an
/// `NGSILD-Warning` (clause 6.3.17).
#[derive(Debug)]
pub(super) enum Failure {
    /// No answer at all (199).
    NoAnswer(String),
    /// No answer within the registration's timeout (199); the source is
    /// not asked again for the registration's `cooldown`.
    Timeout(Duration),
    /// Not asked: the source timed out less than `cooldown` ago (199).
    CoolingDown,
    /// An error status (299).
    Status(u16),
    /// A write refused with an error status (299), and the source's
    /// ProblemDetails when it gave one.
    Refused(u16, Option<Map<String, Value>>),
    /// An answer that is not what NGSI-LD says (111).
    Invalid(String),
}

impl Failure {
    fn warning(&self, r: &Registration) -> String {
        let agent = r
            .endpoint
            .as_deref()
            .and_then(|e| reqwest::Url::parse(e).ok())
            .map(|u| match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => "-".into(),
            })
            .unwrap_or_else(|| "-".into());
        let (code, text) = match self {
            Failure::NoAnswer(why) => (199, format!("no answer from {}: {why}", r.id)),
            Failure::Timeout(t) => (
                199,
                format!("no answer from {} within {} ms", r.id, t.as_millis()),
            ),
            Failure::CoolingDown => (
                199,
                format!("{} timed out recently and is cooling down", r.id),
            ),
            Failure::Status(s) | Failure::Refused(s, _) => {
                (299, format!("{} answered status {s}", r.id))
            }
            Failure::Invalid(why) => (111, format!("{} answered an invalid payload: {why}", r.id)),
        };
        let text = text.replace(['"', '\\', '\r', '\n'], "'");
        format!("{code} {agent} \"{text}\"")
    }
}

/// The pairs of a raw query string whose (decoded) key is in `keep`, as
/// the client encoded them.
fn passed_on(raw: Option<&str>, keep: &[&str]) -> Vec<String> {
    passed_on_if(raw, |key| keep.contains(&key))
}

/// The pairs of a raw query string whose (decoded) key `keep` accepts, as
/// the client encoded them.
fn passed_on_if(raw: Option<&str>, keep: impl Fn(&str) -> bool) -> Vec<String> {
    raw.unwrap_or("")
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            keep(&percent_encoding::percent_decode_str(key).decode_utf8_lossy())
        })
        .map(str::to_string)
        .collect()
}

/// What a query selects, as registrations are selected: one per entity
/// selector, each with the query's `attrs`.
fn registration_selection(query: &EntityQuery) -> Vec<RegistrationQuery> {
    query
        .selectors
        .iter()
        .map(|s| RegistrationQuery {
            ids: s
                .ids
                .as_ref()
                .map(|l| l.iter().map(|i| i.to_string()).collect()),
            id_pattern: s.id_pattern.clone(),
            types: s.types.clone(),
            attrs: query.attrs_filter.clone(),
            ..Default::default()
        })
        .collect()
}

/// The body of `r` among `bodies` (by registration id).
fn body_for<'b, T>(bodies: &'b [(Arc<str>, T)], r: &Registration) -> Option<&'b T> {
    bodies.iter().find(|(id, _)| *id == r.id).map(|(_, b)| b)
}

/// Sets the query of `url` to `query`, followed by the pairs of `from`'s
/// query whose key `keep` accepts.
fn set_query_keeping(
    url: &mut reqwest::Url,
    query: Option<&str>,
    from: &reqwest::Url,
    keep: impl Fn(&str) -> bool,
) {
    let kept: Vec<(String, String)> = from
        .query_pairs()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(query);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
}

/// Whether a paging link of a POST query names some selection of its own
/// (a parameter that the URL of a POST query does not take, nor the
/// `first` request had, as an endpoint's token), and so can be followed
/// without the query's body.
fn selects(link: &reqwest::Url, first: &reqwest::Url) -> bool {
    link.query_pairs().any(|(k, _)| {
        !crate::query::POST_QUERY_PARAMS.contains(&k.as_ref())
            && !crate::temporal::POST_TEMPORAL_QUERY_PARAMS.contains(&k.as_ref())
            && !first.query_pairs().any(|(f, _)| f == k)
    })
}

/// The `next` link of a paged answer, resolved against `base`; only one
/// on the same origin (a source cannot send this broker, with the headers
/// meant for it, elsewhere).
fn next_link(headers: &HeaderMap, base: &reqwest::Url) -> Option<reqwest::Url> {
    for value in headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        // link-value = "<" URI-Reference ">" *( ";" link-param ); the
        // target may hold commas, so split on the brackets.
        let mut rest = value;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('>') else {
                break;
            };
            let target = &after[..end];
            let params_end = after[end..].find('<').map_or(after.len(), |i| end + i);
            let params = &after[end + 1..params_end];
            if params.contains("rel=\"next\"") || params.contains("rel=next") {
                return base
                    .join(target)
                    .ok()
                    .filter(|u| u.origin() == base.origin());
            }
            rest = &after[params_end..];
        }
    }
    None
}

impl Forwarder {
    /// The headers of a request to the source of `r` (clauses 4.3.6.4 and
    /// 4.3.6.5).
    fn headers(&self, r: &Registration, origin: &Origin<'_>, ctx: &Ctx, alias: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        // A JSON-LD document, or a batch of them, carries its @context.
        let inline = origin.body.as_ref().is_some_and(|b| {
            b.get("@context").is_some()
                || b.as_array()
                    .is_some_and(|items| items.iter().any(|i| i.get("@context").is_some()))
        });
        if origin.body.is_some() {
            h.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static(if inline {
                    "application/ld+json"
                } else {
                    "application/json"
                }),
            );
        }
        let link = ctx.link_url();
        if !inline
            && link != jsonld::CORE_CONTEXT_URL
            && let Ok(v) = HeaderValue::from_str(&format!(
                "<{link}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\""
            ))
        {
            h.insert(reqwest::header::LINK, v);
        }
        let via = origin.via();
        let hop = format!("1.1 {alias}");
        let via = if via.is_empty() {
            hop
        } else {
            format!("{via}, {hop}")
        };
        if let Ok(v) = HeaderValue::from_str(&via) {
            h.insert(reqwest::header::VIA, v);
        }
        if let Some(t) = r.tenant()
            && let Ok(v) = HeaderValue::from_str(t)
        {
            h.insert("ngsild-tenant", v);
        }
        for (k, v) in r.context_source_info.iter().flatten() {
            if SPECIAL_KEYS.contains(&k.as_str())
                || CONNECTION_HEADERS.contains(&k.to_ascii_lowercase().as_str())
            {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                continue;
            };
            let value = if v == FROM_REQUEST {
                origin.headers.get(&name).cloned()
            } else {
                HeaderValue::from_str(v).ok()
            };
            if let Some(value) = value {
                h.insert(name, value);
            }
        }
        h
    }

    /// One request to the source (a GET, or a POST of `body`), bounded in
    /// time and size.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        headers: HeaderMap,
        body: Option<&[u8]>,
        timeout: Duration,
        deadline: tokio::time::Instant,
        budget: &mut usize,
    ) -> Result<(u16, HeaderMap, Vec<u8>), Failure> {
        let fetch = async {
            let mut req = self.client.request(method, url);
            if let Some(b) = body {
                req = req.body(b.to_vec());
            }
            let mut resp = req
                .headers(headers)
                .send()
                .await
                .map_err(|e| Failure::NoAnswer(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| Failure::NoAnswer(e.to_string()))?
            {
                if chunk.len() > *budget {
                    return Err(Failure::Invalid(format!("more than {MAX_BODY} bytes")));
                }
                *budget -= chunk.len();
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, body))
        };
        tokio::time::timeout_at(deadline, fetch)
            .await
            .unwrap_or(Err(Failure::Timeout(timeout)))
    }

    /// A request to `{endpoint}/ngsi-ld/v1/{segments}` of the source of
    /// `r`: a POST of `body`, else a GET; with `params` and, under
    /// `management.localOnly`, `local=true` as the query string.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        r: &Registration,
        segments: &[&str],
        mut params: Vec<String>,
        body: Option<Vec<u8>>,
        origin: &Origin<'_>,
        ctx: &Ctx,
        alias: &str,
    ) -> Result<Prepared, Failure> {
        let mut url = reqwest::Url::parse(r.endpoint.as_deref().unwrap_or_default())
            .map_err(|e| Failure::Invalid(format!("endpoint: {e}")))?;
        url.set_fragment(None);
        // The API sits under the endpoint's path; a query string of the
        // endpoint (a token, say) goes first.
        let base: Vec<String> = url
            .path_segments()
            .ok_or_else(|| Failure::Invalid("endpoint cannot be a base".into()))?
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        url.path_segments_mut()
            .map_err(|_| Failure::Invalid("endpoint cannot be a base".into()))?
            .clear()
            .extend(&base)
            .extend(["ngsi-ld", "v1"])
            .extend(segments);
        if let Some(q) = url.query().filter(|q| !q.is_empty()) {
            params.insert(0, q.to_string());
        }
        if r.local_only() {
            params.push("local=true".into());
        }
        url.set_query((!params.is_empty()).then(|| params.join("&")).as_deref());
        Ok(Prepared {
            method: if body.is_some() {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            },
            url,
            headers: self.headers(r, origin, ctx, alias),
            body,
            timeout: timeout_of(r),
        })
    }

    /// The request that asks the source of `r` for Query Entities: GET
    /// /entities with the selection of the query string, or POST
    /// /entityOperations/query with the Query document.
    fn query_request(
        &self,
        r: &Registration,
        origin: &Origin<'_>,
        ctx: &Ctx,
        alias: &str,
        sys_attrs: bool,
        split: bool,
    ) -> Result<Prepared, Failure> {
        // With splitEntities=true a source is asked for what it holds of
        // the selected entities, the filters left out.
        let filtered;
        let body = match origin.body {
            Some(Value::Object(m)) if split => {
                let mut m = m.clone();
                m.retain(|k, _| SPLIT_QUERY_MEMBERS.contains(&k.as_str()));
                filtered = Value::Object(m);
                Some(&filtered)
            }
            other => other,
        };
        let mut params = match body {
            Some(_) => Vec::new(),
            None => passed_on(
                origin.query,
                if split {
                    SPLIT_QUERY_PARAMS
                } else {
                    QUERY_PARAMS
                },
            ),
        };
        if split {
            params.push(format!("limit={SPLIT_PAGE}"));
        }
        // The system attributes, when the client wants them, come from the
        // source (they also order its instances against others).
        if sys_attrs {
            params.push("options=sysAttrs".into());
        }
        match body {
            Some(b) => self.request(
                r,
                &["entityOperations", "query"],
                params,
                Some(b.to_string().into_bytes()),
                origin,
                ctx,
                alias,
            ),
            None => self.request(r, &["entities"], params, None, origin, ctx, alias),
        }
    }

    /// The request that asks the source of `r` for Retrieve Entity.
    fn retrieve_request(
        &self,
        r: &Registration,
        id: &str,
        origin: &Origin<'_>,
        ctx: &Ctx,
        alias: &str,
        sys_attrs: bool,
    ) -> Result<Prepared, Failure> {
        let mut params = passed_on(origin.query, RETRIEVE_PARAMS);
        if sys_attrs {
            params.push("options=sysAttrs".into());
        }
        self.request(r, &["entities", id], params, None, origin, ctx, alias)
    }

    /// Query Entities at a source: the entity objects of its answer,
    /// following `next` links until `want` are read (`None`: all).
    async fn query(self, p: Prepared, want: Option<usize>) -> Result<Vec<Value>, Failure> {
        let deadline = tokio::time::Instant::now() + p.timeout;
        let mut budget = MAX_BODY;
        let mut url = p.url.clone();
        let (mut method, mut body) = (p.method.clone(), p.body.as_deref());
        let mut out = Vec::new();
        for page in 0.. {
            if page == MAX_PAGES {
                return Err(Failure::Invalid(format!(
                    "more than {MAX_PAGES} pages; the answer would be cut"
                )));
            }
            let (status, headers, answer) = self
                .send(
                    method.clone(),
                    url.clone(),
                    p.headers.clone(),
                    body,
                    p.timeout,
                    deadline,
                    &mut budget,
                )
                .await?;
            if status != 200 {
                return Err(Failure::Status(status));
            }
            match serde_json::from_slice(&answer) {
                Ok(Value::Array(items)) => out.extend(items),
                Ok(_) => return Err(Failure::Invalid("not a JSON array".into())),
                Err(e) => return Err(Failure::Invalid(e.to_string())),
            }
            if want.is_some_and(|w| out.len() >= w) {
                break;
            }
            match next_link(&headers, &url) {
                // A POST query's link that carries the selection (this
                // broker's links give a Query body as GET parameters) is
                // followed as it is.
                Some(next) if body.is_some() && selects(&next, &p.url) => {
                    (method, body) = (reqwest::Method::GET, None);
                    url = next;
                }
                // Other POST queries page by the parameters of their link,
                // sent with the same document to the same resource.
                // What the link does not repeat of the first request's
                // query (the endpoint's own, a token say) is kept.
                Some(next) if body.is_some() => {
                    url = p.url.clone();
                    let named = |k: &str| next.query_pairs().any(|(n, _)| n == k);
                    set_query_keeping(&mut url, next.query(), &p.url, |k| !named(k));
                }
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// One request of `p` (no paging), within its timeout and `budget`
    /// bytes: the status and the body.
    async fn send_once(&self, p: Prepared, budget: usize) -> Result<(u16, Vec<u8>), Failure> {
        let (status, _, body) = self.exchange(p, budget).await?;
        Ok((status, body))
    }

    /// As [`Forwarder::send_once`], with the answer's headers.
    async fn exchange(
        &self,
        p: Prepared,
        budget: usize,
    ) -> Result<(u16, HeaderMap, Vec<u8>), Failure> {
        let deadline = tokio::time::Instant::now() + p.timeout;
        let mut budget = budget;
        self.send(
            p.method,
            p.url,
            p.headers,
            p.body.as_deref(),
            p.timeout,
            deadline,
            &mut budget,
        )
        .await
    }

    /// Retrieve Entity at a source: its entity, or nothing when it has
    /// none.
    async fn retrieve(self, p: Prepared) -> Result<Vec<Value>, Failure> {
        let (status, body) = self.send_once(p, MAX_BODY).await?;
        match status {
            200 => match serde_json::from_slice(&body) {
                Ok(v @ Value::Object(_)) => Ok(vec![v]),
                Ok(_) => Err(Failure::Invalid("not a JSON object".into())),
                Err(e) => Err(Failure::Invalid(e.to_string())),
            },
            404 => Ok(Vec::new()),
            s => Err(Failure::Status(s)),
        }
    }
}

/// How a source answered a subscription request: its status and, for a
/// create, the `Location` header.
pub(crate) type SubscriptionAnswer = Result<(u16, Option<String>), String>;

impl Forwarder {
    /// A subscription request to the source of `r` (clauses 5.8.1.4,
    /// 5.8.2.4, 5.8.5.4): `method` on `/subscriptions[/{id}]` with `body`
    /// (a JSON-LD document carries its `@context`; otherwise `ctx` goes in
    /// a Link header), with `via` and this broker's `alias` in `Via`, the
    /// registration's tenant and contextSourceInfo headers, within its
    /// `management.timeout`. An error is the reason no status came back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn subscription_request(
        &self,
        r: &Registration,
        method: reqwest::Method,
        id: Option<&str>,
        body: Option<&Value>,
        ctx: &Ctx,
        via: Option<&str>,
        alias: &str,
    ) -> SubscriptionAnswer {
        let mut headers = HeaderMap::new();
        if let Some(v) = via.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(reqwest::header::VIA, v);
        }
        let origin = Origin {
            query: None,
            headers: &headers,
            local: false,
            body,
            only: None,
        };
        let segments: Vec<&str> = std::iter::once("subscriptions").chain(id).collect();
        let mut p = self
            .request(
                r,
                &segments,
                Vec::new(),
                body.map(|b| b.to_string().into_bytes()),
                &origin,
                ctx,
                alias,
            )
            .map_err(|f| format!("{f:?}"))?;
        // `management.localOnly` concerns entity reads, not subscriptions;
        // the endpoint's own query string stays.
        let first = p.url.clone();
        set_query_keeping(&mut p.url, None, &first, |k| k != "local");
        p.method = method;
        let (status, headers, _) = self
            .exchange(p, 1 << 20)
            .await
            .map_err(|f| format!("{f:?}"))?;
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((status, location))
    }
}

/// Parses the entities of a notification that a source sent for a copy of
/// a subscription, with the subscription's @context (clause 5.8.6).
pub(crate) fn parse_notified(
    items: Vec<Value>,
    ctx: &Ctx,
    limits: ParseLimits,
) -> NgsiResult<Vec<Entity>> {
    parse_answer(items, ctx, limits).map_err(|f| match f {
        Failure::Invalid(why) => ngsi_model::NgsiError::bad_data(why),
        other => ngsi_model::NgsiError::bad_data(format!("{other:?}")),
    })
}

/// A request to a source, ready to send.
#[derive(Debug)]
pub(super) struct Prepared {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

/// The time a source has for one read, all pages together:
/// `management.timeout`, within 1 ms and [`MAX_TIMEOUT`].
fn timeout_of(r: &Registration) -> Duration {
    r.timeout_ms()
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .map_or(DEFAULT_TIMEOUT, |t| {
            t.clamp(Duration::from_millis(1), MAX_TIMEOUT)
        })
}

impl Registry {
    /// The registrations of `tenant` a read is forwarded to: those that
    /// offer `op`, pass `csf`, and whose information some of `selection`
    /// selects; none when `Via` shows the request has passed here before
    /// (a loop), nor those whose source it has passed.
    pub(crate) fn sources(
        &self,
        tenant: &str,
        op: &str,
        selection: &[RegistrationQuery],
        csf: Option<&Query>,
        origin: &Origin<'_>,
        alias: &str,
    ) -> Vec<Arc<Registration>> {
        let candidates: Vec<Arc<Registration>> = {
            let tenants = self.tenants.read();
            let Some(list) = tenants.get(tenant).filter(|l| !l.is_empty()) else {
                return Vec::new();
            };
            list.values()
                .filter(|r| r.offers(op) && r.endpoint.is_some())
                .cloned()
                .collect()
        };
        if candidates.is_empty() {
            return candidates;
        }
        let via = origin.via();
        if via_names(&via, alias) {
            return Vec::new();
        }
        let now = ngsi_model::time::now_micros();
        candidates
            .into_iter()
            .filter(|r| !r.expired(now))
            .filter(|r| origin.only.is_none_or(|only| only.contains(&r.id)))
            .filter(|r| r.alias().is_none_or(|a| !via_names(&via, a)))
            .filter(|r| csf.is_none_or(|c| r.passes_csf(c)))
            .filter(|r| {
                selection
                    .iter()
                    .any(|s| r.information.iter().any(|i| s.info_is_selected(i)))
            })
            .collect()
    }
}

/// The answers of the sources, parsed: each source's entities, whether it
/// is auxiliary, and the warnings of those that failed.
pub(super) struct Answers<T> {
    /// What each source that answered gave, read by the caller's check.
    pub(super) answers: Vec<(Arc<Registration>, T)>,
    pub(super) warnings: Vec<String>,
    /// The sources that failed, and how.
    pub(super) failed: Vec<(Arc<Registration>, Failure)>,
}

impl Answers<Vec<Entity>> {
    /// The entities, each with whether its source is auxiliary.
    fn entities(self) -> (Vec<(Entity, bool)>, Vec<String>) {
        (marked_auxiliary(self.answers), self.warnings)
    }
}

/// The entities the sources answered, each marked with whether its
/// registration is auxiliary.
pub(crate) fn marked_auxiliary(
    answers: Vec<(Arc<Registration>, Vec<Entity>)>,
) -> Vec<(Entity, bool)> {
    answers
        .into_iter()
        .flat_map(|(r, list)| {
            let aux = r.mode == Mode::Auxiliary;
            list.into_iter().map(move |e| (e, aux))
        })
        .collect()
}

/// Parses one source's entity objects with the request's @context; a
/// payload with an invalid entity is rejected whole (clause 6.3.17).
fn parse_answer(items: Vec<Value>, ctx: &Ctx, limits: ParseLimits) -> Result<Vec<Entity>, Failure> {
    items
        .iter()
        .map(|item| {
            let mut e = parse_entity(
                item,
                ctx,
                EntityRequirements {
                    id: true,
                    types: true,
                },
                limits,
            )
            .map_err(|e| Failure::Invalid(e.detail))?;
            // The source's system attributes, when it gave them, order its
            // instances against others (clause 4.5.5.3).
            let (created, modified) = system_times(item);
            e.created_at = created;
            e.modified_at = modified;
            for (name, list) in e.attrs.iter_mut() {
                let Some(raw) = item.get(&*ctx.compact(name)).or_else(|| item.get(&**name)) else {
                    continue;
                };
                let raws: Vec<&Value> = match raw {
                    Value::Array(items) => items.iter().collect(),
                    one => vec![one],
                };
                for inst in list.iter_mut() {
                    let given = raws.iter().find(|r| {
                        r.get("datasetId").and_then(Value::as_str) == inst.dataset_id.as_deref()
                    });
                    if let Some(r) = given {
                        (inst.created_at, inst.modified_at) = system_times(r);
                    }
                }
            }
            Ok(e)
        })
        .collect()
}

/// The createdAt and modifiedAt of a rendered entity or attribute, 0 when
/// absent.
fn system_times(v: &Value) -> (i64, i64) {
    let time = |k: &str| v.get(k).and_then(Value::as_str).and_then(parse_datetime);
    (
        time("createdAt").unwrap_or(0),
        time("modifiedAt").unwrap_or(0),
    )
}

/// Whether instance `a` is more recent than `b` (clause 4.5.5.3): by
/// observedAt, else by modifiedAt; `false` when neither tells.
fn more_recent(a: &Attribute, b: &Attribute) -> bool {
    let at = |i: &Attribute| i.observed_at.as_deref().and_then(parse_datetime);
    match (at(a), at(b)) {
        (Some(x), Some(y)) if x != y => x > y,
        _ => a.modified_at > b.modified_at && b.modified_at > 0,
    }
}

/// Which of two instances with one datasetId a merge keeps (clause
/// 4.5.5.3): one whose `expiresAt` has passed is discarded, then the more
/// recent wins. Whether `from` replaces `mine`.
fn replaces(from: &Attribute, mine: &Attribute, now: i64) -> bool {
    use ngsi_model::expiry::expired;
    match (expired(from, now), expired(mine, now)) {
        (true, false) => false,
        (false, true) => true,
        _ => more_recent(from, mine),
    }
}

/// Merges `from` into `into` (clause 4.5.5): types and scopes joined,
/// instances of an attribute keyed by datasetId, the one [`replaces`]
/// prefers kept; the entity keeps an `expiresAt` only when both versions
/// have one, the later (clause 4.5.5.3). An auxiliary `from` only adds
/// attributes that `into` lacks.
pub(crate) fn merge(into: &mut Entity, from: Entity, auxiliary: bool) {
    let now = ngsi_model::time::now_micros();
    if !auxiliary {
        into.expires_at = match (into.expires_at.take(), from.expires_at) {
            (Some(a), Some(b)) => {
                let at = |x: &str| parse_datetime(x).unwrap_or(i64::MIN);
                Some(if at(&b) > at(&a) { b } else { a })
            }
            _ => None,
        };
    }
    for t in from.types {
        if !into.types.iter().any(|x| same_iri(x, &t)) {
            into.types.push(t);
        }
    }
    for s in from.scopes {
        if !into.scopes.contains(&s) {
            into.scopes.push(s);
        }
    }
    for (name, list) in from.attrs {
        match into.attrs.iter_mut().find(|(n, _)| same_iri(n, &name)) {
            None => into.attrs.push((name, list)),
            Some(_) if auxiliary => {}
            Some((_, mine)) => {
                for inst in list.iter() {
                    match mine.iter_mut().find(|m| m.dataset_id == inst.dataset_id) {
                        None => mine.push(inst.clone()),
                        Some(m) if replaces(inst, m, now) => *m = inst.clone(),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    into.modified_at = into.modified_at.max(from.modified_at);
}

impl Broker {
    /// Asks every source at once: `prepare` makes the request for one,
    /// `ask` sends it and reads the entity objects of the answer.
    /// `check` reads an answer (a failure if it is not what NGSI-LD says).
    pub(super) async fn ask_sources<T, P, F, Fut, C>(
        &self,
        tenant: &str,
        sources: Vec<Arc<Registration>>,
        prepare: P,
        ask: F,
        check: C,
    ) -> Answers<T>
    where
        P: Fn(&Forwarder, &Registration) -> Result<Prepared, Failure>,
        F: Fn(Forwarder, Prepared) -> Fut,
        Fut: Future<Output = Result<Vec<Value>, Failure>> + Send + 'static,
        C: Fn(Vec<Value>) -> Result<T, Failure>,
    {
        let mut results: Vec<Option<Result<Vec<Value>, Failure>>> =
            sources.iter().map(|_| None).collect();
        let now = ngsi_model::time::now_micros();
        let mut set = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_ASKED_AT_ONCE));
        for (i, r) in sources.iter().enumerate() {
            if self.cooling_down(tenant, r, now) {
                results[i] = Some(Err(Failure::CoolingDown));
                continue;
            }
            let forwarder = &self.registrations.forwarder;
            match prepare(forwarder, r) {
                Ok(p) => {
                    let fut = ask(forwarder.clone(), p);
                    let permits = permits.clone();
                    set.spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        (i, fut.await)
                    });
                }
                Err(f) => results[i] = Some(Err(f)),
            }
        }
        while let Some(done) = set.join_next().await {
            if let Ok((i, r)) = done {
                results[i] = Some(r);
            }
        }
        let mut answers = Answers {
            answers: Vec::new(),
            warnings: Vec::new(),
            failed: Vec::new(),
        };
        let now = ngsi_model::time::now_micros();
        for (r, result) in sources.iter().zip(results) {
            let result = result
                .unwrap_or_else(|| Err(Failure::NoAnswer("the request failed".into())))
                .and_then(&check);
            if !matches!(result, Err(Failure::CoolingDown)) {
                self.registrations
                    .stats
                    .lock()
                    .entry((tenant.to_string(), r.id.clone()))
                    .or_default()
                    .record(&result, now);
            }
            match result {
                Ok(t) => answers.answers.push((r.clone(), t)),
                Err(f) => {
                    tracing::debug!(registration = %r.id, failure = ?f, "a context source failed");
                    answers.warnings.push(f.warning(r));
                    answers.failed.push((r.clone(), f));
                }
            }
        }
        answers
    }

    /// Whether `r` timed out less than its `management.cooldown` ago
    /// (clause 5.2.34): then it is not asked, and a timeout is answered.
    fn cooling_down(&self, tenant: &str, r: &Registration, now: i64) -> bool {
        let Some(cooldown) = r.cooldown_ms() else {
            return false;
        };
        self.registrations
            .stats
            .lock()
            .get(&(tenant.to_string(), r.id.clone()))
            .and_then(|s| s.timed_out_at)
            .is_some_and(|t| ((now - t) as f64) < cooldown * 1000.0)
    }

    /// Query Entities (clause 5.7.2) with the registered context sources:
    /// local matches and those of each source that offers queryEntity,
    /// merged by id.
    pub async fn query_entities_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        origin: &Origin<'_>,
    ) -> NgsiResult<QueryResult> {
        crate::query::check_link_depth(query)?;
        let query = &*crate::query::resolve_links(&*self.store, tenant, query);
        let sources = self.query_sources(tenant, query, origin);
        if sources.is_empty() {
            return self.query_entities(tenant, ctx, query);
        }
        let window = query.offset.saturating_add(query.limit);
        // Split entities: every part a source holds is read, whether or not
        // it matches on its own.
        let want = (!query.count && !query.split).then_some(window);
        let alias = self.source_alias(tenant);
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| {
                    let sys_attrs = query.view.sys_attrs;
                    f.query_request(r, origin, ctx, &alias, sys_attrs, query.split)
                },
                move |f, p| f.query(p, want),
                |items| parse_answer(items, ctx, self.config.parse),
            )
            .await
            .entities();
        if query.split {
            return self.merge_split_query(tenant, ctx, query, answers, window);
        }
        self.merge_query(tenant, ctx, query, answers, window)
    }

    /// Query Entities with `splitEntities=true`: the parts of the selected
    /// entities the sources hold (`entities`, unfiltered) are joined with
    /// what is held here of them, and the query's filters apply to the
    /// joined entities; entities held only here match as stored.
    fn merge_split_query(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        (entities, warnings): (Vec<(Entity, bool)>, Vec<String>),
        window: usize,
    ) -> NgsiResult<QueryResult> {
        let local_tenant = tenant.is_empty() || self.store.tenant_exists(tenant);
        let held_here = |id: &str| local_tenant.then(|| self.store.get(tenant, id)).flatten();
        // The joined entities by id, each with whether its part held here
        // matches alone; sources first, auxiliary ones last (they only fill
        // gaps).
        let mut joined: BTreeMap<Arc<str>, (Entity, bool)> = BTreeMap::new();
        let (main, aux): (Vec<_>, Vec<_>) = entities.into_iter().partition(|(_, aux)| !aux);
        for (part, auxiliary) in main.into_iter().chain(aux) {
            match joined.get_mut(&part.id) {
                Some((entity, _)) => merge(entity, part, auxiliary),
                None => {
                    let (entity, matched) = match held_here(&part.id) {
                        Some(e) => {
                            let matched = query.matches(&e);
                            let mut e = (*e).clone();
                            merge(&mut e, part, auxiliary);
                            (e, matched)
                        }
                        None => (part, false),
                    };
                    joined.insert(entity.id.clone(), (entity, matched));
                }
            }
        }
        // The matches held here, enough of them that the window is full
        // once those with parts elsewhere are set aside.
        let page = if local_tenant {
            self.store_page(
                tenant,
                query,
                Page {
                    offset: 0,
                    limit: window.saturating_add(joined.len()),
                    count: query.count,
                },
            )
        } else {
            store::QueryPage::default()
        };
        let mut total = page.total.unwrap_or(0);
        let mut merged: BTreeMap<Arc<str>, Entity> = page
            .entities
            .iter()
            .filter(|e| !joined.contains_key(&e.id))
            .map(|e| (e.id.clone(), (**e).clone()))
            .collect();
        for (id, (entity, matched_here)) in joined {
            // A part held here that matched alone was counted already.
            if matched_here {
                total = total.saturating_sub(1);
            }
            if query.matches(&entity) {
                total += 1;
                merged.insert(id, entity);
            }
        }
        Ok(self.page_of(tenant, ctx, query, &merged, total, warnings))
    }

    /// The page `query` asks for of `merged`, the matches by id, with
    /// `total`, their count, when it is asked for.
    fn page_of(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        merged: &BTreeMap<Arc<str>, Entity>,
        total: usize,
        warnings: Vec<String>,
    ) -> QueryResult {
        let roots: Vec<&Entity> = merged
            .values()
            .skip(query.offset)
            .take(query.limit)
            .collect();
        let mut budget = crate::linked::MAX_LINKED;
        QueryResult {
            entities: roots
                .iter()
                .filter_map(|e| self.answer_json(tenant, e, ctx, &query.view, &mut budget))
                .collect(),
            linked: self.flat_answer(tenant, &roots, ctx, &query.view),
            total: query.count.then_some(total),
            warnings,
        }
    }

    /// The registrations a query is forwarded to: those of the tenant that
    /// offer the operation and whose information selects the query, unless
    /// it is local or ordered.
    pub(crate) fn query_sources(
        &self,
        tenant: &str,
        query: &EntityQuery,
        origin: &Origin<'_>,
    ) -> Vec<Arc<Registration>> {
        if query.local || query.order_by.is_some() || !query.wide_enough {
            return Vec::new();
        }
        let mut selection = registration_selection(query);
        if query.split {
            // Any part of a selected entity may be what the filters or
            // `attrs` need.
            for s in &mut selection {
                s.attrs = None;
            }
        }
        self.registrations.sources(
            tenant,
            if origin.body.is_some() {
                "queryBatch"
            } else {
                "queryEntity"
            },
            &selection,
            query.csf.as_ref(),
            origin,
            &self.source_alias(tenant),
        )
    }

    /// Every entity the sources answer a query with, by source, all their
    /// pages (for an EntityMap).
    pub(crate) async fn source_entities(
        &self,
        tenant: &str,
        ctx: &Ctx,
        origin: &Origin<'_>,
        sources: Vec<Arc<Registration>>,
    ) -> (Vec<(Arc<Registration>, Vec<Entity>)>, Vec<String>) {
        let alias = self.source_alias(tenant);
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| f.query_request(r, origin, ctx, &alias, false, false),
                move |f, p| f.query(p, None),
                |items| parse_answer(items, ctx, self.config.parse),
            )
            .await;
        (answers.answers, answers.warnings)
    }

    fn merge_query(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        (entities, warnings): (Vec<(Entity, bool)>, Vec<String>),
        window: usize,
    ) -> NgsiResult<QueryResult> {
        let local_tenant = tenant.is_empty() || self.store.tenant_exists(tenant);
        let page = if local_tenant {
            self.store_page(
                tenant,
                query,
                Page {
                    offset: 0,
                    limit: window,
                    count: query.count,
                },
            )
        } else {
            store::QueryPage::default()
        };
        let mut merged: BTreeMap<Arc<str>, Entity> = page
            .entities
            .iter()
            .map(|e| (e.id.clone(), (**e).clone()))
            .collect();
        let mut total = page.total.unwrap_or(0);
        self.join_answers(
            tenant,
            query,
            local_tenant,
            &mut merged,
            &mut total,
            entities,
        );
        Ok(self.page_of(tenant, ctx, query, &merged, total, warnings))
    }

    /// Joins the entities the sources answered `query` with (`auxiliary`
    /// marks those of auxiliary registrations) into `merged`, the matches
    /// held here by id, keeping `total`, their count, true (clause
    /// 4.5.5). `local_tenant` tells whether the tenant exists here.
    pub(crate) fn join_answers(
        &self,
        tenant: &str,
        query: &EntityQuery,
        local_tenant: bool,
        merged: &mut BTreeMap<Arc<str>, Entity>,
        total: &mut usize,
        entities: Vec<(Entity, bool)>,
    ) {
        // The entities whose data came from more than one place.
        let mut joined: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
        // Sources first, auxiliary ones last: they only fill gaps.
        let (main, aux): (Vec<_>, Vec<_>) = entities.into_iter().partition(|(_, aux)| !aux);
        for (remote, auxiliary) in main.into_iter().chain(aux) {
            // The source applied the filters to what it holds; its answer
            // must still be what was asked for (a source that ignores the
            // selection cannot widen the answer).
            if !query.selects(&remote) {
                continue;
            }
            if let Some(mine) = merged.get_mut(&remote.id) {
                joined.insert(remote.id.clone());
                merge(mine, remote, auxiliary);
                continue;
            }
            // What this broker holds of the entity joins it, whether or not
            // it matched on its own; a local match was counted already.
            let local = local_tenant
                .then(|| self.store.get(tenant, &remote.id))
                .flatten();
            if !local.as_ref().is_some_and(|e| query.matches(e)) {
                *total += 1;
            }
            let entity = match local {
                Some(e) => {
                    joined.insert(e.id.clone());
                    let mut e = (*e).clone();
                    merge(&mut e, remote, auxiliary);
                    e
                }
                None => remote,
            };
            merged.insert(entity.id.clone(), entity);
        }
        // A joined entity must still match as merged: where two places
        // disagree and neither tells which is later, the one held here is
        // kept, and it may not satisfy q (with `attrs` the sources may have
        // projected away what q tests, so it cannot be told). Linked terms
        // were resolved against the entities held here only, so an entity
        // linked to one only a source holds cannot be re-checked either.
        if query.attrs_filter.is_none() && !query.q.as_ref().is_some_and(Query::has_links) {
            for id in joined {
                if merged.get(&id).is_some_and(|e| !query.matches(e)) {
                    merged.remove(&id);
                    *total = total.saturating_sub(1);
                }
            }
        }
    }

    /// Retrieve Entity (clause 5.7.1) with the registered context sources
    /// that offer retrieveEntity: the local entity and theirs merged.
    pub async fn retrieve_entity_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        view: &ViewOptions,
        origin: &Origin<'_>,
    ) -> NgsiResult<(crate::Retrieved, Vec<String>)> {
        crate::check_uri(id, "entity id")?;
        let sources = if origin.local {
            Vec::new()
        } else {
            let selection = [RegistrationQuery {
                ids: Some(vec![id.to_string()]),
                types: view.type_filter.clone(),
                attrs: view.attrs.clone().filter(|_| view.attrs_given),
                ..Default::default()
            }];
            self.registrations.sources(
                tenant,
                "retrieveEntity",
                &selection,
                None,
                origin,
                &self.source_alias(tenant),
            )
        };
        if sources.is_empty() {
            return Ok((self.retrieve_entity(tenant, ctx, id, view)?, Vec::new()));
        }
        let alias = self.source_alias(tenant);
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| f.retrieve_request(r, id, origin, ctx, &alias, view.sys_attrs),
                Forwarder::retrieve,
                |items| parse_answer(items, ctx, self.config.parse),
            )
            .await;
        let local = (tenant.is_empty() || self.store.tenant_exists(tenant))
            .then(|| self.store.get(tenant, id))
            .flatten();
        let mut held_by: Vec<Arc<str>> = Vec::new();
        if local.is_some() {
            held_by.push(Arc::from(crate::entity_maps::HERE));
        }
        held_by.extend(
            answers
                .answers
                .iter()
                .filter(|(_, list)| list.iter().any(|e| *e.id == *id))
                .map(|(r, _)| r.id.clone()),
        );
        let (entities, warnings) = answers.entities();
        let mut entity: Option<Entity> = local.map(|e| (*e).clone());
        let (main, aux): (Vec<_>, Vec<_>) = entities.into_iter().partition(|(_, aux)| !aux);
        for (remote, auxiliary) in main.into_iter().chain(aux) {
            if *remote.id != *id {
                continue;
            }
            match entity.as_mut() {
                Some(mine) => merge(mine, remote, auxiliary),
                None => entity = Some(remote),
            }
        }
        let entity = entity.ok_or_else(|| crate::not_found(id))?;
        let mut retrieved = self.finish_retrieve(tenant, &entity, ctx, id, view)?;
        retrieved.held_by = held_by;
        Ok((retrieved, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_selection_is_passed_on_as_written() {
        let raw =
            "type=Vehicle&limit=5&attrs=speed%2CbrandName&q=speed%3E3&options=keyValues&count=true";
        assert_eq!(
            passed_on(Some(raw), QUERY_PARAMS),
            vec!["type=Vehicle", "attrs=speed%2CbrandName", "q=speed%3E3"]
        );
        assert!(passed_on(None, QUERY_PARAMS).is_empty());
    }

    /// Clause 4.5.5.3: an instance whose expiresAt has passed loses to
    /// one that has not, however recent; the entity keeps the later
    /// expiresAt only when every version has one.
    #[test]
    fn merges_discard_expired_instances_and_keep_a_common_entity_expiry() {
        let instance = |value: i64, observed: &str, expires: Option<&str>| {
            let mut a = Attribute::new(ngsi_model::AttrValue::Property(value.into()));
            a.observed_at = Some(observed.into());
            a.extra = ngsi_model::AttrExtra {
                expires_at: expires.map(Into::into),
                value_type: None,
            }
            .boxed();
            a
        };
        let version = |a: Attribute, expires: Option<&str>| Entity {
            id: "urn:ngsi-ld:Vehicle:1".into(),
            types: vec![ngsi_model::iri("https://example.org/Vehicle")],
            scopes: Vec::new(),
            attrs: vec![(ngsi_model::iri("https://example.org/speed"), vec![a].into())],
            created_at: 0,
            modified_at: 0,
            expires_at: expires.map(Into::into),
        };
        let speed = |e: &Entity| e.attrs[0].1[0].value.clone();
        let (old, new) = ("2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z");
        let past = Some("2020-01-01T00:00:00Z");
        let (later, latest) = (Some("2100-01-01T00:00:00Z"), Some("2101-01-01T00:00:00Z"));
        // The more recent instance has expired: the older one stays.
        let mut mine = version(instance(1, old, None), later);
        merge(&mut mine, version(instance(2, new, past), latest), false);
        assert_eq!(speed(&mine), ngsi_model::AttrValue::Property(1.into()));
        assert_eq!(mine.expires_at.as_deref(), latest);
        // Neither expired: the more recent wins; one version without an
        // entity expiry removes it.
        let mut mine = version(instance(1, old, later), latest);
        merge(&mut mine, version(instance(2, new, None), None), false);
        assert_eq!(speed(&mine), ngsi_model::AttrValue::Property(2.into()));
        assert_eq!(mine.expires_at, None);
        // The held one has expired (the reaper has not come yet).
        let mut mine = version(instance(1, new, past), None);
        merge(&mut mine, version(instance(2, old, None), None), false);
        assert_eq!(speed(&mine), ngsi_model::AttrValue::Property(2.into()));
    }

    #[test]
    fn via_is_read_by_pseudonym() {
        assert!(via_names("1.1 a, 1.1 wuyang-x", "wuyang-x"));
        assert!(via_names("HTTP/1.1 wuyang-x (comment)", "wuyang-x"));
        assert!(!via_names("1.1 wuyang-xy", "wuyang-x"));
        assert!(!via_names("", "wuyang-x"));
    }

    #[test]
    fn post_query_links_with_a_selection_are_followed_as_they_are() {
        let url = |q: &str| reqwest::Url::parse(&format!("http://s/ngsi-ld/v1/x?{q}")).unwrap();
        let first = url("limit=2");
        assert!(selects(&url("limit=2&offset=2&type=A"), &first));
        assert!(selects(&url("q=a%3E1&offset=2"), &first));
        assert!(!selects(
            &url("limit=2&offset=2&count=true&options=keyValues"),
            &first
        ));
        assert!(!selects(&url("lastN=3&aggrMethods=sum&offset=4"), &first));
        // The endpoint's own query repeated in the link selects nothing.
        let tokened = url("token=x&limit=2");
        assert!(!selects(&url("limit=2&offset=2&token=x"), &tokened));
    }

    #[test]
    fn next_links_resolve_against_the_source() {
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<https://x/ctx.jsonld>; rel=\"http://www.w3.org/ns/json-ld#context\"",
            ),
        );
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static("</ngsi-ld/v1/entities?type=A&offset=20&limit=20>; rel=\"next\";type=\"application/json\""),
        );
        let base = reqwest::Url::parse("http://src:1026/ngsi-ld/v1/entities?type=A").unwrap();
        assert_eq!(
            next_link(&h, &base).unwrap().as_str(),
            "http://src:1026/ngsi-ld/v1/entities?type=A&offset=20&limit=20"
        );
        // Several link-values in one header, a comma inside the target.
        let one = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.append(reqwest::header::LINK, HeaderValue::from_static(v));
            next_link(&h, &base).map(|u| u.to_string())
        };
        assert_eq!(
            one("</x?attrs=a,b&offset=0>; rel=\"prev\", </x?attrs=a,b&offset=40>; rel=\"next\""),
            Some("http://src:1026/x?attrs=a,b&offset=40".into())
        );
        // Never to another origin.
        assert_eq!(one("<http://elsewhere:80/x>; rel=\"next\""), None);
        assert_eq!(one("<https://src:1026/x>; rel=next"), None);
        assert_eq!(one("</x>; rel=\"prev\""), None);
    }
}
