//! The JSON-LD context of a request, as the rest of the broker sees it.

use std::borrow::Cow;
use std::sync::Arc;

use ngsi_model::{NgsiError, NgsiResult, Terms};
use serde_json::Value;

/// The resolved @context of one request: the term table, plus where it came
/// from so that responses can point at it.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The processed context (user terms over the core context).
    pub table: Arc<jsonld::Context>,
    /// The context as the client gave it (a URL, an object or an array);
    /// `None` when the client gave none and the core context applies.
    pub source: Option<Value>,
    /// A URL this broker serves the inline `source` under, for Link headers
    /// (see [`crate::Broker::name_inline_context`]).
    pub link: Option<String>,
}

impl Terms for Ctx {
    fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
        self.table.expand_term(term)
    }

    fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        self.table.compact_iri(iri)
    }

    fn expand_iri(&self, term: &str) -> ngsi_model::Iri {
        self.table.expand_term_shared(term, ngsi_model::iri)
    }
}

impl Ctx {
    /// The core context alone.
    pub fn core() -> Self {
        Self {
            table: jsonld::Context::core(),
            source: None,
            link: None,
        }
    }

    /// The URL to put in a response's Link header: the client's context when
    /// it was a single URL, else the default core context URL.
    pub fn link_url(&self) -> &str {
        match (&self.link, &self.source) {
            (Some(url), _) | (None, Some(Value::String(url))) => url,
            _ => jsonld::CORE_CONTEXT_URL,
        }
    }

    /// The value for `@context` in a JSON-LD response body.
    pub fn body_value(&self) -> Value {
        match &self.source {
            Some(v) => v.clone(),
            None => Value::String(jsonld::CORE_CONTEXT_URL.to_string()),
        }
    }
}

/// The store collection of hosted @contexts.
const HOSTED_CONTEXTS: &str = "jsonldContexts";

/// Where the @context of a request body comes from (clause 6.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (or merge-patch+json): from the Link header only.
    Json,
    /// `application/ld+json`: from the body's `@context` member.
    LdJson,
}

/// The error of an `application/ld+json` request that also names a
/// @context in a Link header (clause 6.3.5).
pub(crate) fn ld_json_with_link() -> NgsiError {
    NgsiError::bad_data(
        "an application/ld+json request carries its @context in the body and cannot have a JSON-LD Link header",
    )
}

pub(crate) fn context_error(e: jsonld::ContextError) -> NgsiError {
    match e {
        jsonld::ContextError::NotAvailable { url, reason } => NgsiError::new(
            ngsi_model::ErrorKind::LdContextNotAvailable,
            format!("the @context {url} could not be retrieved: {reason}"),
        ),
        other => NgsiError::bad_data(format!("invalid @context: {other}")),
    }
}

impl crate::Broker {
    /// Resolves the context named by a Link header (or the core context).
    pub async fn context_from_link(&self, link: Option<&str>) -> NgsiResult<Ctx> {
        match link {
            None => Ok(Ctx::core()),
            Some(url) => {
                let source = Value::String(url.to_string());
                let table = self
                    .contexts
                    .resolve(&source)
                    .await
                    .map_err(context_error)?;
                Ok(Ctx {
                    table,
                    source: Some(source),
                    link: None,
                })
            }
        }
    }

    /// Resolves the context of a request body: the Link header for JSON, the
    /// body's `@context` for JSON-LD, with the rules of clause 6.3.5 between
    /// them.
    pub async fn context_for_body(
        &self,
        kind: BodyKind,
        link: Option<&str>,
        body: &impl ngsi_model::JsonDoc,
    ) -> NgsiResult<Ctx> {
        let inline = body.get("@context").map(ngsi_model::JsonDoc::to_value);
        match kind {
            BodyKind::Json => {
                if inline.is_some() {
                    return Err(NgsiError::bad_data(
                        "an application/json body cannot carry @context; use a Link header or application/ld+json",
                    ));
                }
                self.context_from_link(link).await
            }
            BodyKind::LdJson => {
                if link.is_some() {
                    return Err(ld_json_with_link());
                }
                let Some(source) = inline else {
                    return Err(NgsiError::bad_data(
                        "an application/ld+json body must carry @context",
                    ));
                };
                self.context_from_value(&source).await
            }
        }
    }

    /// Hosts `document` under `url` for the @context serving endpoint, on
    /// behalf of `tenant`, durably: hosted contexts survive a restart. Like
    /// any record, it creates the tenant.
    pub async fn host_context(&self, tenant: &str, url: &str, document: Value) -> NgsiResult<()> {
        self.contexts
            .insert_local(url, document.clone())
            .map_err(|e| NgsiError::invalid_request(e.to_string()))?;
        self.hosted_tenants
            .write()
            .insert(url.to_string(), tenant.to_string());
        self.store
            .put_record(tenant, HOSTED_CONTEXTS, url, Some(document))
            .await?;
        Ok(())
    }

    /// Forgets a held context (hosted or cached).
    pub async fn forget_context(&self, url: &str) -> NgsiResult<bool> {
        let removed = self.contexts.remove(url);
        let owner = self.hosted_tenants.write().remove(url);
        if let Some(tenant) = owner {
            self.store
                .put_record(&tenant, HOSTED_CONTEXTS, url, None)
                .await?;
        }
        Ok(removed)
    }

    /// Whether the @context storage entry `info` is visible to requests of
    /// `tenant` (clause 5.5.10): a Hosted context belongs to the tenant that
    /// added it; Cached and ImplicitlyCreated ones are the broker's copies
    /// of what requests named, shared by every tenant.
    pub fn context_visible(&self, tenant: &str, info: &jsonld::ContextInfo) -> bool {
        info.kind != jsonld::ContextKind::Hosted
            || self
                .hosted_tenants
                .read()
                .get(&info.url)
                .map_or(tenant.is_empty(), |owner| owner == tenant)
    }

    /// Hosts again the contexts that were hosted before a restart, each for
    /// its tenant.
    pub(crate) fn restore_hosted_contexts(&self) {
        let tenants = crate::tenants_with_default(&*self.store);
        for tenant in tenants {
            for (url, doc) in self.store.records(&tenant, HOSTED_CONTEXTS) {
                if let Err(e) = self.contexts.insert_local(&url, doc) {
                    tracing::warn!(%url, error = %e, "a stored hosted @context could not be restored");
                    continue;
                }
                self.hosted_tenants.write().insert(url, tenant.clone());
            }
        }
    }

    /// Gives an inline `@context` (an object or an array) a URL that this
    /// broker serves under `{origin}/ngsi-ld/v1/jsonldContexts/{id}` (kind
    /// ImplicitlyCreated), so that a JSON response's Link header can name
    /// the context the request used (clause 6.3.5). The id is a hash of the
    /// context, so the same context always gets the same URL.
    pub fn name_inline_context(&self, ctx: Ctx, origin: &str) -> Ctx {
        let Some(source @ (Value::Object(_) | Value::Array(_))) = &ctx.source else {
            return ctx;
        };
        // An array of URLs that names one context besides the core context
        // (which applies anyway) is that one context: the Link header names
        // it, as the client did.
        if let Value::Array(items) = source
            && let Some(urls) = items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<&str>>>()
        {
            let own: Vec<&str> = urls
                .iter()
                .copied()
                .filter(|u| !jsonld::is_core_context_url(u))
                .collect();
            let named = match (own.as_slice(), urls.first()) {
                ([one], _) => Some(one.to_string()),
                ([], Some(core)) => Some(core.to_string()),
                _ => None,
            };
            if let Some(url) = named {
                return Ctx {
                    link: Some(url),
                    ..ctx
                };
            }
        }
        // FNV-1a over the canonical JSON: stable across runs and builds.
        let canonical = jsonld::canonical_json(source);
        let hash = canonical.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let url = format!("{origin}/ngsi-ld/v1/jsonldContexts/implicit-{hash:016x}");
        self.contexts
            .insert_implicit(&url, serde_json::json!({ "@context": source }));
        Ctx {
            link: Some(url),
            ..ctx
        }
    }

    /// Resolves an inline `@context` value.
    pub async fn context_from_value(&self, source: &Value) -> NgsiResult<Ctx> {
        let table = self.contexts.resolve(source).await.map_err(context_error)?;
        Ok(Ctx {
            table,
            source: Some(source.clone()),
            link: None,
        })
    }
}
