//! JSON-LD context processing for NGSI-LD: term tables, expansion and compaction.
//!
//! * [`Context`] is a processed `@context`: a term table that expands terms
//!   to IRIs ([`Context::expand_term`]) and compacts IRIs back to terms
//!   ([`Context::compact_iri`]). The NGSI-LD core context is always part of
//!   it and always wins over user definitions.
//! * [`ContextResolver`] turns a request's `@context` (URL, object, array, or
//!   the `Link` header's URL) into an `Arc<Context>`, downloading remote
//!   contexts under a time bound and caching both documents and processed
//!   contexts. It also holds the documents the broker hosts for
//!   `/jsonldContexts`.
//! * The core context of every published NGSI-LD version is embedded
//!   ([`core_context_document`]) and never fetched.

mod context;
mod core;
mod error;
mod resolver;

pub use crate::context::{Context, TermDefinition, is_keyword};
pub use crate::core::{
    CORE_CONTEXT_URL, DEFAULT_VOCAB, core_context_document, core_context_urls, is_core_context_url,
};
pub use crate::error::ContextError;
pub use crate::resolver::{
    BoxFuture, CacheStats, ContextInfo, ContextKind, ContextResolver, Fetch, HttpFetcher,
    ResolverConfig, canonical_json, install_tls_provider,
};

#[cfg(test)]
mod tests;
