//! The HTTP conventions of the NGSI-LD binding (clause 6.3): content
//! negotiation, the Link header, tenants, body limits and ProblemDetails.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ngsi_model::{ErrorKind, Json, NgsiError};
use percent_encoding::percent_decode_str;
use serde_json::Value;

/// The link relation of a JSON-LD context in a Link header.
pub const CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";

/// The tenant header.
pub const TENANT_HEADER: &str = "ngsild-tenant";

/// The segments of a route's path (axum's extractor), with a segment that
/// cannot be read (invalid UTF-8 once percent-decoded) answered as
/// BadRequestData ProblemDetails rather than axum's plain text.
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            // A route without the segments its handler reads: a bug here.
            Err(e @ axum::extract::rejection::PathRejection::MissingPathParams(_)) => Err(
                ApiError::from(NgsiError::new(ErrorKind::InternalError, e.body_text())),
            ),
            Err(e) => Err(ApiError::from(NgsiError::bad_data(format!(
                "the request path cannot be read: {}",
                e.body_text()
            )))
            .with_tenant(&parts.headers.get(TENANT_HEADER).cloned())),
        }
    }
}

/// An error as the HTTP layer answers it.
#[derive(Debug)]
pub struct ApiError {
    pub error: NgsiError,
    pub tenant: Option<HeaderValue>,
}

impl From<NgsiError> for ApiError {
    fn from(error: NgsiError) -> Self {
        Self {
            error,
            tenant: None,
        }
    }
}

impl ApiError {
    pub fn with_tenant(mut self, tenant: &Option<HeaderValue>) -> Self {
        self.tenant = tenant.clone();
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.kind.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.error.kind == ErrorKind::InternalError {
            tracing::error!(detail = %self.error.detail, "internal error");
        }
        let mut resp = if status == StatusCode::LENGTH_REQUIRED {
            Response::new(Body::empty())
        } else {
            let body = serde_json::to_vec(&self.error.problem_details()).unwrap_or_default();
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            r
        };
        *resp.status_mut() = status;
        if let Some(t) = self.tenant {
            resp.headers_mut().insert(TENANT_HEADER, t);
        }
        resp
    }
}

/// The result type of handlers.
pub type ApiResult = Result<Response, ApiError>;

/// The media types a response can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produce {
    Json,
    LdJson,
    /// GeoJSON, with the @context in the body unless the client sent
    /// `Prefer: body=json` (clause 6.3.15).
    GeoJson {
        context_in_body: bool,
    },
}

/// Whether the `Prefer` header asks for a plain JSON body (`body=json`), which
/// moves the @context of a GeoJSON response into a Link header.
fn prefers_json_body(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| p.trim().strip_prefix("body="))
        .any(|v| v.trim().trim_matches('"').eq_ignore_ascii_case("json"))
}

/// Chooses the response media type from Accept (clause 6.3.4): q-values
/// first, ties broken by the spec's order json, ld+json, geo+json; the most
/// specific range decides a type's weight; nothing acceptable gives 406.
pub fn negotiate(headers: &HeaderMap, geo_allowed: bool) -> Result<Produce, NgsiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Produce::Json);
    };
    if accept.trim().is_empty() {
        return Ok(Produce::Json);
    }
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let range = pieces.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            for p in pieces {
                if let Some(v) = p.trim().strip_prefix("q=")
                    && let Ok(parsed) = v.trim().parse::<f32>()
                    && (0.0..=1.0).contains(&parsed)
                {
                    q = parsed;
                }
            }
            Some((range, q))
        })
        .collect();
    let mut offered = vec![
        (Produce::Json, "application/json"),
        (Produce::LdJson, "application/ld+json"),
    ];
    if geo_allowed {
        let context_in_body = !prefers_json_body(headers);
        offered.push((Produce::GeoJson { context_in_body }, "application/geo+json"));
    }
    // A 406 lists what the resource is available as (clause 6.3.4).
    let available: Vec<&str> = offered.iter().map(|(_, mime)| *mime).collect();
    let mut best: Option<(Produce, f32)> = None;
    for (produce, mime) in offered {
        // The most specific matching range gives the weight.
        let mut weight: Option<(u8, f32)> = None;
        for (range, q) in &ranges {
            let specificity = if range == mime {
                3
            } else if range == "application/*" {
                2
            } else if range == "*/*" {
                1
            } else {
                continue;
            };
            if weight.is_none_or(|(s, _)| specificity > s) {
                weight = Some((specificity, *q));
            }
        }
        if let Some((_, q)) = weight
            && q > 0.0
            && best.is_none_or(|(_, bq)| q > bq)
        {
            best = Some((produce, q));
        }
    }
    best.map(|(p, _)| p).ok_or_else(|| {
        NgsiError::new(
            ErrorKind::NotAcceptable,
            format!(
                "cannot produce any of the media types in Accept: {accept}; available: {}",
                available.join(", ")
            ),
        )
    })
}

/// The media type of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    Json,
    LdJson,
    MergePatch,
}

/// Checks the Content-Type of a request with a body (clause 6.3.4).
pub fn content_type(headers: &HeaderMap, method: &Method) -> Result<Consume, NgsiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(Consume::Json),
        "application/ld+json" => Ok(Consume::LdJson),
        "application/merge-patch+json" if method == Method::PATCH => Ok(Consume::MergePatch),
        "" => Err(NgsiError::new(
            ErrorKind::UnsupportedMediaType,
            "a Content-Type is required",
        )),
        _ => Err(NgsiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("unsupported Content-Type {raw}"),
        )),
    }
}

/// The URL of the JSON-LD context named by the Link header, if any.
pub fn link_context(headers: &HeaderMap) -> Result<Option<String>, NgsiError> {
    thread_local! {
        /// The last single Link header read on this thread and its context
        /// URL: a client sends the same header with every request.
        static LAST: std::cell::RefCell<Option<SeenLink>> =
            const { std::cell::RefCell::new(None) };
    }
    let mut values = headers.get_all(header::LINK).iter();
    let only = match (values.next(), values.next()) {
        (Some(only), None) => Some(only.as_bytes()),
        _ => None,
    };
    if let Some(bytes) = only {
        let hit = LAST.with(|last| match &*last.borrow() {
            Some((seen, url)) if **seen == *bytes => Some(url.clone()),
            _ => None,
        });
        if let Some(url) = hit {
            return Ok(url);
        }
    }
    let found = read_link_context(headers)?;
    if let Some(bytes) = only {
        LAST.with(|last| *last.borrow_mut() = Some((bytes.into(), found.clone())));
    }
    Ok(found)
}

/// A Link header's bytes and the context URL read from them.
type SeenLink = (Box<[u8]>, Option<String>);

/// [`link_context`] without the cache.
fn read_link_context(headers: &HeaderMap) -> Result<Option<String>, NgsiError> {
    let mut found = None;
    for value in headers.get_all(header::LINK) {
        let Ok(text) = value.to_str() else {
            return Err(NgsiError::bad_data("the Link header is not valid text"));
        };
        for link in split_links(text) {
            let Some((target, params)) = parse_link(link) else {
                continue;
            };
            let is_context = params.split(';').any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim().trim_matches('"') == CONTEXT_REL
                })
            });
            if is_context {
                if found.is_some() {
                    return Err(NgsiError::bad_data(
                        "more than one JSON-LD context in Link headers",
                    ));
                }
                found = Some(target);
            }
        }
    }
    // Every write and most reads come here: the header is read in place,
    // and only the context's URL is copied.
    Ok(found.map(str::to_string))
}

/// The links of a Link header: commas separate them, but may also appear
/// inside `<...>` and quotes. (The delimiters are ASCII, so a byte scan
/// never splits a character.)
fn split_links(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let (mut depth, mut quoted) = (0i32, false);
        for (i, b) in text.bytes().enumerate() {
            match b {
                b'<' if !quoted => depth += 1,
                b'>' if !quoted => depth -= 1,
                b'"' => quoted = !quoted,
                b',' if depth == 0 && !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

/// A link's target and the text of its parameters (`; k=v; ...`).
fn parse_link(link: &str) -> Option<(&str, &str)> {
    let rest = link.trim().strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// The tenant named by the request (empty for the default tenant) and the
/// header value to echo.
pub fn tenant(headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), NgsiError> {
    match headers.get(TENANT_HEADER) {
        None => Ok((String::new(), None)),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| NgsiError::bad_data("the tenant name is not valid text"))?;
            if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control()) {
                return Err(NgsiError::bad_data("invalid tenant name"));
            }
            Ok((s.to_string(), Some(v.clone())))
        }
    }
}

/// One name or value of a query string, decoded as HTML forms and HTTP
/// clients encode it (application/x-www-form-urlencoded): `+` is a space
/// (a plus sign itself comes as `%2B`), then percent-decoding.
fn decode_query_part(part: &str) -> Result<String, NgsiError> {
    let spaced = part.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| NgsiError::invalid_request("query parameter is not UTF-8"))
}

/// Query parameters of a request, decoded, checked against the names the
/// operation accepts (unknown names are InvalidRequest, clause 6.3.20).
pub fn query_params(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, NgsiError> {
    let mut out = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode_query_part(k)?;
        let v = decode_query_part(v)?;
        if !allowed.contains(&k.as_str()) {
            return Err(NgsiError::invalid_request(format!(
                "unknown query parameter {k}"
            )));
        }
        if out.iter().any(|(name, _): &(String, String)| *name == k) {
            return Err(NgsiError::bad_data(format!(
                "query parameter {k} is repeated"
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The value of parameter `name`, if given.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether the JSON text nests deeper than `max` (objects and arrays),
/// checked on the bytes before parsing so that no parser recursion happens
/// on hostile input.
pub fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Refuses an empty body and one that nests deeper than `max_depth`.
fn check_json_text(bytes: &[u8], max_depth: usize) -> Result<(), NgsiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(NgsiError::invalid_request("the request body is empty"));
    }
    if nesting_exceeds(bytes, max_depth) {
        return Err(NgsiError::bad_data(format!(
            "the JSON nests deeper than {max_depth} levels"
        )));
    }
    Ok(())
}

fn not_json(e: serde_json::Error) -> NgsiError {
    NgsiError::invalid_request(format!("the body is not valid JSON: {e}"))
}

/// Parses a request body as JSON within the nesting limit.
pub fn parse_body(bytes: &Bytes, max_depth: usize) -> Result<Value, NgsiError> {
    check_json_text(bytes, max_depth)?;
    serde_json::from_slice(bytes).map_err(not_json)
}

/// Parses a request body as JSON within the nesting limit, borrowing its
/// strings (the entity write path, see [`Json`]). The parser checks the
/// nesting as it goes; only a body it refuses is scanned, to answer as
/// [`parse_body`] does.
pub fn parse_doc(bytes: &[u8], max_depth: usize) -> Result<Json<'_>, NgsiError> {
    Json::from_slice_nested(bytes, max_depth).map_err(|e| match check_json_text(bytes, max_depth) {
        Err(refused) => refused,
        Ok(()) => not_json(e),
    })
}

/// The value of a Link header pointing at a context URL.
pub fn context_link_value(url: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "<{url}>; rel=\"{CONTEXT_REL}\"; type=\"application/ld+json\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A JSON response in the negotiated media type: for JSON the context goes in
/// a Link header, for JSON-LD into the body (each element of an array).
pub fn json_response(
    status: StatusCode,
    produce: Produce,
    ctx: &broker::Ctx,
    mut body: Value,
) -> Response {
    let mut headers = HeaderMap::new();
    match produce {
        Produce::Json => json_headers(&mut headers, ctx, false),
        Produce::LdJson => {
            json_headers(&mut headers, ctx, true);
            let context = ctx.body_value();
            match &mut body {
                Value::Object(m) => {
                    m.insert("@context".into(), context);
                }
                Value::Array(items) => {
                    for item in items {
                        if let Value::Object(m) = item {
                            m.insert("@context".into(), context.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        Produce::GeoJson { context_in_body } => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/geo+json"),
            );
            match &mut body {
                Value::Object(m) if context_in_body => {
                    m.insert("@context".into(), ctx.body_value());
                }
                _ => {
                    headers.insert(header::LINK, context_link_value(ctx.link_url()));
                }
            }
        }
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    (status, headers, bytes).into_response()
}

/// A JSON array response whose items are already JSON text, each an
/// object (as [`broker::QueryResult`] holds them): for JSON the context goes
/// in a Link header, for JSON-LD into each item. GeoJSON takes the tree
/// path of [`json_response`] through `to_tree`.
pub fn json_array_response(
    status: StatusCode,
    produce: Produce,
    ctx: &broker::Ctx,
    items: Vec<Vec<u8>>,
    to_tree: impl FnOnce(Vec<Vec<u8>>) -> Value,
) -> Response {
    let context = match produce {
        Produce::Json => None,
        Produce::LdJson => Some(serde_json::to_vec(&ctx.body_value()).unwrap_or_default()),
        Produce::GeoJson { .. } => return json_response(status, produce, ctx, to_tree(items)),
    };
    let extra = context.as_ref().map_or(0, |c| c.len() + 14);
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1 + extra).sum::<usize>() + 2);
    body.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        broker::push_entity_json(&mut body, item, context.as_deref());
    }
    body.push(b']');
    let mut headers = HeaderMap::new();
    json_headers(&mut headers, ctx, context.is_some());
    (status, headers, body).into_response()
}

/// The Content-Type of a JSON (with the context in a Link header) or a
/// JSON-LD answer (whose body carries the context).
fn json_headers(headers: &mut HeaderMap, ctx: &broker::Ctx, ld: bool) {
    if ld {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ld+json"),
        );
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::LINK, context_link_value(ctx.link_url()));
    }
}

/// A response with a status and no body (204 without Content-Length).
pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// Whether `s` is an RFC 7230 token: one or more `tchar`s.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Link header reading as first written (a vector of links, the
    /// parameters copied into strings): the reference the reading in
    /// place must agree with.
    fn reference(text: &str) -> Result<Option<String>, ()> {
        let mut links = Vec::new();
        let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
        for (i, c) in text.char_indices() {
            match c {
                '<' if !quoted => depth += 1,
                '>' if !quoted => depth -= 1,
                '"' => quoted = !quoted,
                ',' if depth == 0 && !quoted => {
                    links.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        links.push(&text[start..]);
        let mut found = None;
        for link in links {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                continue;
            };
            let Some(end) = rest.find('>') else {
                continue;
            };
            let params: Vec<(String, String)> = rest[end + 1..]
                .split(';')
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            if params
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("rel") && v == CONTEXT_REL)
            {
                if found.is_some() {
                    return Err(());
                }
                found = Some(rest[..end].to_string());
            }
        }
        Ok(found)
    }

    fn read(text: &str) -> Result<Option<String>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::LINK, text.parse().unwrap());
        link_context(&headers).map_err(drop)
    }

    #[test]
    fn the_context_link_is_found_among_others() {
        let ctx = format!(
            "<https://example.org/ctx.jsonld>; rel=\"{CONTEXT_REL}\"; type=\"application/ld+json\""
        );
        assert_eq!(
            read(&ctx),
            Ok(Some("https://example.org/ctx.jsonld".into()))
        );
        let two = format!("<https://a.example/x,y>; rel=\"next\", {ctx}");
        assert_eq!(
            read(&two),
            Ok(Some("https://example.org/ctx.jsonld".into()))
        );
        assert_eq!(read(&format!("{ctx}, {ctx}")), Err(()));
        assert_eq!(read("<https://a.example/>; rel=\"next\""), Ok(None));
        assert_eq!(
            read(&format!("<https://a.example/>; REL={CONTEXT_REL}")),
            Ok(Some("https://a.example/".into()))
        );
    }

    /// Two Link headers are read together, never from the cache of one.
    #[test]
    fn two_link_headers_are_read_together() {
        let ctx = format!("<https://example.org/ctx.jsonld>; rel=\"{CONTEXT_REL}\"");
        assert_eq!(
            read(&ctx),
            Ok(Some("https://example.org/ctx.jsonld".into()))
        );
        let mut headers = HeaderMap::new();
        headers.append(header::LINK, ctx.parse().unwrap());
        headers.append(header::LINK, ctx.parse().unwrap());
        assert!(link_context(&headers).is_err(), "two contexts");
        let mut headers = HeaderMap::new();
        headers.append(header::LINK, ctx.parse().unwrap());
        headers.append(
            header::LINK,
            "<https://a.example/>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(
            link_context(&headers).ok().flatten().as_deref(),
            Some("https://example.org/ctx.jsonld")
        );
        assert_eq!(read("<https://a.example/>; rel=\"next\""), Ok(None));
    }

    proptest! {
        /// Any header text (made of the characters that matter to the
        /// reading) is read as the reference reads it.
        #[test]
        fn reading_in_place_agrees_with_the_reference(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("<".to_string()), Just(">".to_string()), Just(",".to_string()),
                    Just(";".to_string()), Just("=".to_string()), Just("\"".to_string()),
                    Just(" ".to_string()), Just("rel".to_string()), Just("Rel".to_string()),
                    Just(CONTEXT_REL.to_string()), Just("https://e.example/c".to_string()),
                    "[a-z]{1,3}",
                ],
                0..24,
            )
        ) {
            let text = parts.concat();
            prop_assert_eq!(read(&text), reference(&text));
            // Again: now from the thread's cache of the last header.
            prop_assert_eq!(read(&text), reference(&text));
        }
    }
}
