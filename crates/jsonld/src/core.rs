//! The NGSI-LD core `@context` documents shipped inside the binary.
//!
//! Every published version of the core context is embedded (see
//! `contexts/README.md` for where each copy comes from) so that a request
//! naming any of them resolves without the network. The URL of a core context
//! is recognised with either the `https` or the `http` scheme: `uri.etsi.org`
//! serves both and clients in the wild use both, and accepting the plain-HTTP
//! spelling costs nothing because the content never leaves the binary.

use std::sync::{Arc, LazyLock};

use serde_json::Value;

use crate::context::Context;

/// The URL of the core `@context` of the NGSI-LD version this broker
/// implements (ETSI GS CIM 009 v1.9.1). Responses name it in `Link` headers
/// and in `@context` members.
pub const CORE_CONTEXT_URL: &str =
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld";

/// The `@vocab` of every NGSI-LD core context: where undefined terms go.
pub const DEFAULT_VOCAB: &str = "https://uri.etsi.org/ngsi-ld/default-context/";

/// The common prefix of the core context URLs, after the scheme.
const CORE_URL_STEM: &str = "//uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context";

/// One embedded core context: the version suffix of its URL and its text.
struct Embedded {
    /// The part of the URL between `ngsi-ld-core-context` and `.jsonld`.
    suffix: &'static str,
    /// The JSON text as published.
    text: &'static str,
}

/// The embedded documents. v1.4 was not found in any public copy, so its URL
/// is served with the v1.5 document, the nearest later version (see
/// `contexts/README.md`).
const EMBEDDED: &[Embedded] = &[
    Embedded {
        suffix: "",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.0.jsonld"),
    },
    Embedded {
        suffix: "-v1.3",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.3.jsonld"),
    },
    Embedded {
        suffix: "-v1.4",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.5.jsonld"),
    },
    Embedded {
        suffix: "-v1.5",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.5.jsonld"),
    },
    Embedded {
        suffix: "-v1.6",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.6.jsonld"),
    },
    Embedded {
        suffix: "-v1.7",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.7.jsonld"),
    },
    Embedded {
        suffix: "-v1.8",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.8.jsonld"),
    },
    Embedded {
        suffix: "-v1.9",
        text: include_str!("../contexts/ngsi-ld-core-context-v1.9.jsonld"),
    },
];

/// The parsed documents, in the order of [`EMBEDDED`].
static DOCUMENTS: LazyLock<Vec<Arc<Value>>> = LazyLock::new(|| {
    EMBEDDED
        .iter()
        .map(|e| {
            // The files are checked by the tests in this module; a broken one
            // is a build defect, not a runtime condition.
            Arc::new(serde_json::from_str(e.text).expect("embedded core context is valid JSON"))
        })
        .collect()
});

/// The processed current core context.
static CORE: LazyLock<Arc<Context>> = LazyLock::new(|| {
    let doc = core_document_arc(CORE_CONTEXT_URL).expect("current core context is embedded");
    Arc::new(Context::build_core(&doc).expect("current core context processes"))
});

/// Finds the index in [`EMBEDDED`] of a core context URL, if it is one.
fn embedded_index(url: &str) -> Option<usize> {
    let rest = url
        .strip_prefix("https:")
        .or_else(|| url.strip_prefix("http:"))?;
    let rest = rest.strip_prefix(CORE_URL_STEM)?;
    let suffix = rest.strip_suffix(".jsonld")?;
    EMBEDDED.iter().position(|e| e.suffix == suffix)
}

/// Returns the embedded document (`{"@context": {...}}`) of the NGSI-LD core
/// context published at `url`, for every version from v1.0 (the unversioned
/// `ngsi-ld-core-context.jsonld`) to v1.9, with `https` or `http`.
pub fn core_context_document(url: &str) -> Option<&'static Value> {
    embedded_index(url).map(|i| &*DOCUMENTS[i])
}

/// Like [`core_context_document`] but shares the document.
pub(crate) fn core_document_arc(url: &str) -> Option<Arc<Value>> {
    embedded_index(url).map(|i| Arc::clone(&DOCUMENTS[i]))
}

/// Tells whether `url` names any embedded NGSI-LD core context.
pub fn is_core_context_url(url: &str) -> bool {
    embedded_index(url).is_some()
}

/// Tells whether `url` names the core context of the implemented version,
/// which is applied to every request anyway.
pub(crate) fn is_current_core_url(url: &str) -> bool {
    match (embedded_index(url), embedded_index(CORE_CONTEXT_URL)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The URLs of all embedded core contexts (https spelling), oldest first.
pub fn core_context_urls() -> impl Iterator<Item = String> {
    EMBEDDED
        .iter()
        .map(|e| format!("https:{CORE_URL_STEM}{}.jsonld", e.suffix))
}

/// The processed current core context, built on first use.
pub(crate) fn core() -> Arc<Context> {
    Arc::clone(&CORE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_document_is_a_context_document() {
        for url in core_context_urls() {
            let doc = core_context_document(&url).unwrap();
            let ctx = doc.get("@context").unwrap();
            assert!(ctx.is_object(), "{url}");
            assert_eq!(ctx["@vocab"], DEFAULT_VOCAB, "{url}");
        }
    }

    #[test]
    fn urls_are_recognised_with_both_schemes_only() {
        for url in [
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
            "http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld",
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.4.jsonld",
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
            CORE_CONTEXT_URL,
        ] {
            assert!(is_core_context_url(url), "{url}");
        }
        for url in [
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.2.jsonld",
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.json",
            "ftp://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
            "https://example.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        ] {
            assert!(!is_core_context_url(url), "{url}");
        }
        assert!(is_current_core_url(
            "http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
        ));
        assert!(!is_current_core_url(
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
        ));
    }

    #[test]
    fn every_embedded_version_processes() {
        for url in core_context_urls() {
            let doc = core_context_document(&url).unwrap();
            Context::build_core(doc).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}
