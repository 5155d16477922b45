//! Tests of context processing, expansion, compaction and resolution.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::*;

const NGSI: &str = "https://uri.etsi.org/ngsi-ld/";
const GEO: &str = "https://purl.org/geojson/vocab#";

/// Expands each term with `ctx` and compares with the expected IRI.
fn check_expand(ctx: &Context, cases: &[(&str, &str)]) {
    for (term, expected) in cases {
        assert_eq!(ctx.expand_term(term), *expected, "expanding {term}");
    }
}

/// Compacts each IRI with `ctx` and compares with the expected name.
fn check_compact(ctx: &Context, cases: &[(&str, &str)]) {
    for (iri, expected) in cases {
        assert_eq!(ctx.compact_iri(iri), *expected, "compacting {iri}");
    }
}

/// Processes an inline user context, which must succeed.
fn user(ctx: Value) -> Context {
    Context::from_value(&ctx).unwrap_or_else(|e| panic!("{ctx}: {e}"))
}

/// Processes an inline user context, which must fail as invalid.
fn check_invalid(ctx: Value, needle: &str) {
    match Context::from_value(&ctx) {
        Err(ContextError::Invalid(msg)) => {
            assert!(msg.contains(needle), "{ctx}: {msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
        other => panic!("{ctx}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn core_context_expands_terms() {
    let core = Context::core();
    let default = format!("{DEFAULT_VOCAB}Vehicle");
    let speed = format!("{DEFAULT_VOCAB}speed");
    check_expand(
        &core,
        &[
            ("type", "@type"),
            ("id", "@id"),
            ("@value", "@value"),
            ("@context", "@context"),
            ("Property", &format!("{NGSI}Property")),
            ("Relationship", &format!("{NGSI}Relationship")),
            ("value", &format!("{NGSI}hasValue")),
            ("object", &format!("{NGSI}hasObject")),
            ("location", &format!("{NGSI}location")),
            ("Point", &format!("{GEO}Point")),
            ("coordinates", &format!("{GEO}coordinates")),
            ("ngsi-ld:foo", &format!("{NGSI}foo")),
            ("geojson:Thing", &format!("{GEO}Thing")),
            ("Vehicle", &default),
            ("speed", &speed),
            ("https://example.org/speed", "https://example.org/speed"),
            ("urn:ngsi-ld:Vehicle:A1", "urn:ngsi-ld:Vehicle:A1"),
            ("_:b0", "_:b0"),
        ],
    );
}

#[test]
fn core_context_compacts_iris() {
    let core = Context::core();
    check_compact(
        &core,
        &[
            ("@type", "type"),
            ("@id", "id"),
            ("@value", "@value"),
            (&format!("{NGSI}Property"), "Property"),
            (&format!("{NGSI}hasValue"), "value"),
            (&format!("{NGSI}createdAt"), "createdAt"),
            (&format!("{GEO}Point"), "Point"),
            (&format!("{DEFAULT_VOCAB}Vehicle"), "Vehicle"),
            (&format!("{NGSI}somethingNew"), "ngsi-ld:somethingNew"),
            (&format!("{GEO}Thing"), "geojson:Thing"),
            ("https://example.org/speed", "https://example.org/speed"),
            ("urn:ngsi-ld:Vehicle:A1", "urn:ngsi-ld:Vehicle:A1"),
        ],
    );
    // "type" is a term mapping elsewhere, so the vocabulary-relative name
    // would not come back: a compact IRI with the ngsi-ld prefix does.
    let iri = format!("{DEFAULT_VOCAB}type");
    assert_eq!(core.compact_iri(&iri), "ngsi-ld:default-context/type");
}

#[test]
fn core_context_exposes_term_definitions() {
    let core = Context::core();
    let created = core.term("createdAt").unwrap();
    assert_eq!(created.id(), format!("{NGSI}createdAt"));
    assert_eq!(created.type_mapping(), Some(&*format!("{NGSI}DateTime")));
    assert!(created.is_protected() && created.is_core());
    assert_eq!(core.term("object").unwrap().type_mapping(), Some("@id"));
    assert_eq!(core.term("json").unwrap().type_mapping(), Some("@json"));
    assert_eq!(
        core.term("typeName").unwrap().type_mapping(),
        Some("@vocab")
    );
    assert!(core.term("coordinates").unwrap().has_container("@list"));
    assert_eq!(core.term("languageMap").unwrap().container(), ["@language"]);
    assert!(core.term("ngsi-ld").unwrap().is_prefix());
    assert!(!core.term("Property").unwrap().is_prefix());
    assert!(core.term("ngsildproof").unwrap().scoped_context().is_some());
    assert!(core.term("nonsense").is_none());
    assert_eq!(core.vocab(), DEFAULT_VOCAB);
}

#[test]
fn self_referencing_core_terms_go_to_vocab() {
    let doc =
        core_context_document("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld")
            .unwrap();
    let ctx = Context::build_core(doc).unwrap();
    assert_eq!(
        ctx.expand_term("attributeCount"),
        format!("{DEFAULT_VOCAB}attributeCount")
    );
}

#[test]
fn user_contexts_define_terms() {
    let ctx = user(json!({
        "schema": "https://schema.org/",
        "ex": {"@id": "http://example.org/ns#", "@prefix": true},
        "name": "schema:name",
        "speed": {"@id": "http://example.org/speed", "@type": "http://www.w3.org/2001/XMLSchema#float"},
        "owner": {"@id": "ex:owner", "@type": "@id"},
        "tags": {"@id": "ex:tags", "@container": ["@set", "@list"]},
        "Car": "ex:Car",
        "schema:brand": {"@type": "@vocab"},
        "parentOf": {"@reverse": "ex:childOf"},
        "@base": "http://ignored.example/",
        "@language": "en"
    }));
    check_expand(
        &ctx,
        &[
            ("name", "https://schema.org/name"),
            ("speed", "http://example.org/speed"),
            ("owner", "http://example.org/ns#owner"),
            ("Car", "http://example.org/ns#Car"),
            ("schema:color", "https://schema.org/color"),
            ("ex:other", "http://example.org/ns#other"),
            ("schema:brand", "https://schema.org/brand"),
            ("parentOf", "http://example.org/ns#childOf"),
            ("type", "@type"),
            ("unknown", &format!("{DEFAULT_VOCAB}unknown")),
        ],
    );
    let speed = ctx.term("speed").unwrap();
    assert_eq!(
        speed.type_mapping(),
        Some("http://www.w3.org/2001/XMLSchema#float")
    );
    assert!(!speed.is_core() && !speed.is_protected());
    assert_eq!(ctx.term("tags").unwrap().container(), ["@list", "@set"]);
    assert_eq!(ctx.term("owner").unwrap().type_mapping(), Some("@id"));
    assert!(ctx.term("parentOf").unwrap().is_reverse());
    check_compact(
        &ctx,
        &[
            ("https://schema.org/name", "name"),
            ("https://schema.org/color", "schema:color"),
            ("http://example.org/ns#Car", "Car"),
            ("http://example.org/ns#other", "ex:other"),
            // Reverse terms are never chosen.
            ("http://example.org/ns#childOf", "ex:childOf"),
        ],
    );
}

#[test]
fn user_contexts_may_use_core_prefixes_and_terms() {
    let ctx = user(json!({
        "temperature": "ngsi-ld:temperature",
        "when": {"@id": "http://example.org/when", "@type": "DateTime"}
    }));
    assert_eq!(ctx.expand_term("temperature"), format!("{NGSI}temperature"));
    assert_eq!(
        ctx.term("when").unwrap().type_mapping(),
        Some(&*format!("{NGSI}DateTime"))
    );
}

#[test]
fn user_contexts_cannot_redefine_core_terms() {
    let ctx = user(json!([
        {
            "type": "http://example.org/type",
            "id": "http://example.org/id",
            "Property": "http://example.org/Property",
            "location": {"@id": "http://example.org/location", "@type": "@id"},
            "ngsi-ld": "http://example.org/evil/",
            "value": null
        },
        null,
        {"Relationship": {"@id": "http://example.org/R"}}
    ]));
    check_expand(
        &ctx,
        &[
            ("type", "@type"),
            ("id", "@id"),
            ("Property", &format!("{NGSI}Property")),
            ("Relationship", &format!("{NGSI}Relationship")),
            ("location", &format!("{NGSI}location")),
            ("value", &format!("{NGSI}hasValue")),
            ("ngsi-ld:x", &format!("{NGSI}x")),
        ],
    );
    assert!(ctx.term("location").unwrap().type_mapping().is_none());
    // Even the core context named explicitly first cannot be overridden by
    // what follows it.
    let ctx = user(json!([CORE_CONTEXT_URL, {"Property": "http://example.org/P"}]));
    assert_eq!(ctx.expand_term("Property"), format!("{NGSI}Property"));
}

#[test]
fn null_resets_user_terms_but_keeps_the_core() {
    let ctx = user(
        json!([{"a": "http://example.org/a", "@vocab": "http://example.org/v/"}, null, {"b": "http://example.org/b"}]),
    );
    assert_eq!(ctx.expand_term("a"), format!("{DEFAULT_VOCAB}a"));
    assert_eq!(ctx.expand_term("b"), "http://example.org/b");
    assert_eq!(ctx.expand_term("Property"), format!("{NGSI}Property"));
    let only_null = user(Value::Null);
    assert_eq!(only_null.expand_term("type"), "@type");
}

#[test]
fn user_vocab_takes_over_undefined_terms() {
    let ctx = user(json!({"@vocab": "http://example.org/v/"}));
    assert_eq!(ctx.vocab(), "http://example.org/v/");
    assert_eq!(ctx.expand_term("speed"), "http://example.org/v/speed");
    assert_eq!(ctx.compact_iri("http://example.org/v/speed"), "speed");
    assert_eq!(ctx.expand_term("Property"), format!("{NGSI}Property"));
    // A vocabulary relative to the previous one, and a reset to the core's.
    let ctx = user(json!([{"@vocab": "http://example.org/v/"}, {"@vocab": "sub/"}]));
    assert_eq!(ctx.vocab(), "http://example.org/v/sub/");
    let ctx = user(json!([{"@vocab": "http://example.org/v/"}, {"@vocab": null}]));
    assert_eq!(ctx.vocab(), DEFAULT_VOCAB);
}

#[test]
fn nested_arrays_and_older_core_urls_process() {
    let ctx = user(json!([
        [[{"a": "http://example.org/a"}]],
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        "http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld"
    ]));
    assert_eq!(ctx.expand_term("a"), "http://example.org/a");
    // v1.0 defines "name"; the current core keeps "coordinates" in geojson.
    assert_eq!(ctx.expand_term("name"), format!("{NGSI}name"));
    assert_eq!(ctx.expand_term("coordinates"), format!("{GEO}coordinates"));
}

#[test]
fn compaction_prefers_plain_then_shortest_then_least_term() {
    let ctx = user(json!({
        "speedy": "http://example.org/speed",
        "spd": {"@id": "http://example.org/speed", "@type": "http://www.w3.org/2001/XMLSchema#float"},
        "speed": "http://example.org/speed",
        "sped": "http://example.org/speed",
        "b": "http://example.org/same",
        "a": "http://example.org/same",
        "listy": {"@id": "http://example.org/list", "@container": "@list"}
    }));
    check_compact(
        &ctx,
        &[
            ("http://example.org/speed", "sped"),
            ("http://example.org/same", "a"),
            ("http://example.org/list", "listy"),
        ],
    );
}

#[test]
fn vocab_relative_names_that_are_terms_are_not_used() {
    let ctx = user(json!({"speed": "http://example.org/speed"}));
    let iri = format!("{DEFAULT_VOCAB}speed");
    assert_eq!(ctx.compact_iri(&iri), "ngsi-ld:default-context/speed");
    let ctx = user(json!({"speed": "http://example.org/speed", "@vocab": "http://example.org/v/"}));
    assert_eq!(
        ctx.compact_iri("http://example.org/v/speed"),
        "http://example.org/v/speed"
    );
    assert_eq!(ctx.expand_term(&ctx.compact_iri(&iri)), iri);
}

#[test]
fn invalid_contexts_are_rejected() {
    check_invalid(json!(42), "invalid local context");
    check_invalid(json!({"a": 42}), "invalid term definition for a");
    check_invalid(
        json!({"a": {"@id": "http://example.org/a", "@container": "@bag"}}),
        "invalid container mapping @bag",
    );
    check_invalid(
        json!({"a": {"@id": "http://example.org/a", "@type": "@list"}}),
        "invalid type mapping",
    );
    check_invalid(
        json!({"a": {"@id": "http://example.org/a", "@type": 3}}),
        "invalid type mapping",
    );
    check_invalid(json!({"a": {"@id": 3}}), "invalid IRI mapping for a");
    check_invalid(json!({"@version": 1.0}), "invalid @version value");
    check_invalid(json!({"@vocab": 3}), "invalid vocab mapping");
    check_invalid(json!({"a": {"@id": "@context"}}), "invalid keyword alias");
    check_invalid(
        json!({"a": {"@id": "http://example.org/a", "@prefix": "yes"}}),
        "invalid @prefix value",
    );
    check_invalid(
        json!([
            {"@protected": true, "a": "http://example.org/a"},
            {"a": "http://example.org/other"}
        ]),
        "protected term redefinition: a",
    );
    let mut deep = json!({});
    for _ in 0..40 {
        deep = json!([deep]);
    }
    check_invalid(deep, "context overflow");
}

#[test]
fn protected_terms_may_be_restated_identically() {
    let ctx = user(json!([
        {"@protected": true, "a": "http://example.org/a"},
        {"a": "http://example.org/a", "@version": 1.1}
    ]));
    assert!(ctx.term("a").unwrap().is_protected());
}

#[test]
fn keyword_like_terms_and_values_are_ignored() {
    let ctx = user(json!({"@foo": "http://example.org/foo", "bar": "@baz", "x": {"@id": "@bar"}}));
    assert!(ctx.term("@foo").is_none());
    assert!(ctx.term("bar").is_none());
    assert!(ctx.term("x").is_none());
}

#[test]
fn remote_urls_need_a_resolver() {
    let err = Context::from_value(&json!("http://example.org/ctx.jsonld")).unwrap_err();
    assert!(
        matches!(err, ContextError::NotAvailable { ref url, .. } if url == "http://example.org/ctx.jsonld")
    );
    assert!(!err.to_string().ends_with('.'));
}

#[test]
fn canonical_json_sorts_members() {
    assert_eq!(
        canonical_json(&json!({"b": [1, {"d": null, "c": "x"}], "a": true})),
        r#"{"a":true,"b":[1,{"c":"x","d":null}]}"#
    );
}

mod resolver {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A fetcher serving fixed documents and counting calls per URL.
    #[derive(Default)]
    struct MapFetcher {
        docs: parking_lot::Mutex<HashMap<String, Value>>,
        calls: AtomicUsize,
        delay: Option<Duration>,
    }

    impl MapFetcher {
        fn with(docs: &[(&str, Value)]) -> Arc<MapFetcher> {
            let fetcher = MapFetcher::default();
            for (url, doc) in docs {
                fetcher.docs.lock().insert((*url).to_owned(), doc.clone());
            }
            Arc::new(fetcher)
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Fetch for MapFetcher {
        fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Value, ContextError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(d) = self.delay {
                    tokio::time::sleep(d).await;
                }
                self.docs
                    .lock()
                    .get(url)
                    .cloned()
                    .ok_or_else(|| ContextError::NotAvailable {
                        url: url.to_owned(),
                        reason: "404 not found".to_owned(),
                    })
            })
        }
    }

    /// A fetcher that never answers.
    struct Hanging;

    impl Fetch for Hanging {
        fn fetch<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<Value, ContextError>> {
            Box::pin(std::future::pending())
        }
    }

    fn config(timeout_ms: u64) -> ResolverConfig {
        ResolverConfig {
            fetch_timeout: Duration::from_millis(timeout_ms),
            ..ResolverConfig::default()
        }
    }

    fn resolver(fetcher: Arc<dyn Fetch>) -> ContextResolver {
        ContextResolver::with_fetcher(config(2000), fetcher)
    }

    const A: &str = "http://contexts.test/a.jsonld";
    const B: &str = "http://contexts.test/b.jsonld";

    #[tokio::test]
    async fn core_urls_resolve_without_fetching() {
        let fetcher = MapFetcher::with(&[]);
        let r = resolver(fetcher.clone());
        for ctx in [
            json!(CORE_CONTEXT_URL),
            Value::Null,
            json!([]),
            json!(["http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"]),
        ] {
            let resolved = r.resolve(&ctx).await.unwrap();
            assert!(Arc::ptr_eq(&resolved, &Context::core()), "{ctx}");
        }
        let old = r
            .resolve(&json!(
                "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld"
            ))
            .await
            .unwrap();
        assert_eq!(old.expand_term("Property"), format!("{NGSI}Property"));
        assert_eq!(fetcher.calls(), 0);
        assert!(r.entries().is_empty());
    }

    #[tokio::test]
    async fn remote_contexts_are_fetched_once() {
        let fetcher = MapFetcher::with(&[(
            A,
            json!({"@context": {"speed": "http://example.org/speed"}}),
        )]);
        let r = resolver(fetcher.clone());
        let first = r.resolve(&json!(A)).await.unwrap();
        assert_eq!(first.expand_term("speed"), "http://example.org/speed");
        let second = r.resolve(&json!(A)).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        // A different context naming the same URL reuses the document.
        let third = r
            .resolve(&json!([A, {"x": "http://example.org/x"}]))
            .await
            .unwrap();
        assert_eq!(third.expand_term("speed"), "http://example.org/speed");
        assert_eq!(fetcher.calls(), 1);
        let stats = r.stats();
        assert_eq!(stats.document_misses, 1);
        assert_eq!(stats.document_hits, 1);
        assert_eq!(stats.processed_hits, 1);
        assert_eq!(stats.processed_misses, 2);
        let entries = r.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].url, A);
        assert_eq!(entries[0].kind, ContextKind::Cached);
        assert_eq!(entries[0].kind.as_str(), "Cached");
        assert_eq!(entries[0].number_of_hits, 2);
        assert!(entries[0].last_usage.is_some());
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_download() {
        let fetcher = Arc::new(MapFetcher {
            delay: Some(Duration::from_millis(100)),
            ..MapFetcher::default()
        });
        fetcher.docs.lock().insert(
            A.into(),
            json!({"@context": {"speed": "http://example.org/speed"}}),
        );
        let r = resolver(fetcher.clone());
        let (c1, c2, c3) = (
            json!(A),
            json!([A]),
            json!([A, {"a": "http://example.org/a"}]),
        );
        let (x, y, z) = tokio::join!(r.resolve(&c1), r.resolve(&c2), r.resolve(&c3));
        assert!(x.is_ok() && y.is_ok() && z.is_ok());
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test]
    async fn identical_inline_contexts_are_processed_once() {
        let r = resolver(MapFetcher::with(&[]));
        let one = r
            .resolve(&json!({"a": "http://example.org/a", "b": "http://example.org/b"}))
            .await
            .unwrap();
        let two = r
            .resolve(&json!({"b": "http://example.org/b", "a": "http://example.org/a"}))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(r.stats().processed_misses, 1);
    }

    #[tokio::test]
    async fn failing_fetch_is_not_available() {
        let r = resolver(MapFetcher::with(&[]));
        let start = Instant::now();
        let err = r.resolve(&json!([A])).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(
            err,
            ContextError::NotAvailable {
                url: A.into(),
                reason: "404 not found".into()
            }
        );
        assert!(r.entries().is_empty());
    }

    #[tokio::test]
    async fn hanging_fetch_is_not_available_within_the_bound() {
        let r = ContextResolver::with_fetcher(config(200), Arc::new(Hanging));
        let start = Instant::now();
        let err = r.resolve(&json!(A)).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(err, ContextError::NotAvailable { ref reason, .. } if reason.contains("200 ms")),
            "{err}"
        );
    }

    /// A reference that no HTTP request could fetch is the client's
    /// mistake (400), not an unavailable context (503), and is not fetched.
    #[tokio::test]
    async fn references_that_are_no_http_urls_are_invalid() {
        let fetcher = MapFetcher::with(&[]);
        let r = resolver(fetcher.clone());
        for bad in [
            "urn:x",
            "",
            "not a url",
            "file:///etc/passwd",
            "http:///x",
            "ftp://a.test/c",
        ] {
            let err = r.resolve(&json!(bad)).await.unwrap_err();
            assert!(matches!(err, ContextError::Invalid(_)), "{bad}: {err}");
        }
        assert_eq!(fetcher.calls(), 0);
        // An http(s) URL that is not held is fetched (and here fails: 503).
        for url in [A, "HTTPS://contexts.test/c.jsonld"] {
            let err = r.resolve(&json!(url)).await.unwrap_err();
            assert!(
                matches!(err, ContextError::NotAvailable { .. }),
                "{url}: {err}"
            );
        }
        assert_eq!(fetcher.calls(), 2);
    }

    /// A URL that failed fails again at once for `failure_ttl` (a batch
    /// naming one dead URL waits out one timeout, not one per entity), then
    /// is tried again; a success clears the memory of the failure.
    #[tokio::test]
    async fn a_failed_download_is_remembered_for_a_while() {
        let fetcher = MapFetcher::with(&[]);
        let r = ContextResolver::with_fetcher(
            ResolverConfig {
                failure_ttl: Duration::from_millis(300),
                ..config(2000)
            },
            fetcher.clone(),
        );
        assert!(r.resolve(&json!(A)).await.is_err());
        assert_eq!(fetcher.calls(), 1);
        for _ in 0..5 {
            let err = r.resolve(&json!(A)).await.unwrap_err();
            assert!(
                matches!(err, ContextError::NotAvailable { ref reason, .. } if reason.contains("ago")),
                "{err}"
            );
        }
        assert_eq!(fetcher.calls(), 1, "the failure was not remembered");
        // Another URL is not held back by it.
        assert!(r.resolve(&json!(B)).await.is_err());
        assert_eq!(fetcher.calls(), 2);
        // Once the failure is old, the URL is tried again, and now works.
        fetcher
            .docs
            .lock()
            .insert(A.to_owned(), json!({"@context": {"a": "http://a.test/a"}}));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let ctx = r.resolve(&json!(A)).await.unwrap();
        assert_eq!(ctx.expand_term("a"), "http://a.test/a");
        assert_eq!(fetcher.calls(), 3);
    }

    /// Many concurrent and sequential resolutions of a hanging URL wait out
    /// one timeout between them.
    #[tokio::test]
    async fn a_hanging_url_costs_one_timeout_for_many_resolutions() {
        let r = ContextResolver::with_fetcher(config(200), Arc::new(Hanging));
        let start = Instant::now();
        for _ in 0..20 {
            assert!(r.resolve(&json!(A)).await.is_err());
        }
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn silent_server_is_not_available_within_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept connections and never answer.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        let r = ContextResolver::new(config(300));
        let url = format!("http://{addr}/ctx.jsonld");
        let start = Instant::now();
        let err = r.resolve(&json!(url)).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(err, ContextError::NotAvailable { url: ref u, .. } if *u == url),
            "{err}"
        );
        server.abort();
    }

    /// Serves `body` with `status` to every connection, counting them.
    async fn serve(status: &'static str, body: String) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/ld+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}/ctx.jsonld"), hits)
    }

    #[tokio::test]
    async fn http_fetcher_downloads_contexts() {
        let doc = json!({"@context": {"speed": "http://example.org/speed"}}).to_string();
        let (url, hits) = serve("200 OK", doc).await;
        let r = ContextResolver::new(config(2000));
        let ctx = r.resolve(&json!(url)).await.unwrap();
        assert_eq!(ctx.expand_term("speed"), "http://example.org/speed");
        r.resolve(&json!([url.clone(), {"a": "http://example.org/a"}]))
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            r.document(&url).unwrap()["@context"]["speed"],
            "http://example.org/speed"
        );
    }

    #[tokio::test]
    async fn http_fetcher_reports_status_and_size() {
        let (url, _) = serve("404 Not Found", "{}".into()).await;
        let r = ContextResolver::new(config(2000));
        let err = r.resolve(&json!(url)).await.unwrap_err();
        assert!(
            matches!(err, ContextError::NotAvailable { ref reason, .. } if reason.contains("404")),
            "{err}"
        );

        let big = json!({"@context": {"x": "y".repeat(2000)}}).to_string();
        let (url, _) = serve("200 OK", big).await;
        let r = ContextResolver::new(ResolverConfig {
            max_body_bytes: 1000,
            ..config(2000)
        });
        let err = r.resolve(&json!(url)).await.unwrap_err();
        assert!(
            matches!(err, ContextError::NotAvailable { ref reason, .. } if reason.contains("larger")),
            "{err}"
        );

        let (url, _) = serve("200 OK", "not json".into()).await;
        let err = ContextResolver::new(config(2000))
            .resolve(&json!(url))
            .await
            .unwrap_err();
        // Retrieved but not JSON: invalid, not unavailable (clause 5.5.6).
        assert!(
            matches!(err, ContextError::Invalid(ref m) if m.contains("not JSON")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn documents_without_a_context_member_are_invalid() {
        let r = resolver(MapFetcher::with(&[(
            A,
            json!({"speed": "http://example.org/speed"}),
        )]));
        let err = r.resolve(&json!(A)).await.unwrap_err();
        assert!(
            matches!(err, ContextError::Invalid(ref m) if m.contains("@context member")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nested_remote_contexts_resolve() {
        let r = resolver(MapFetcher::with(&[
            (A, json!({"@context": [B, {"a": "http://example.org/a"}]})),
            (
                B,
                json!({"@context": {"b": "http://example.org/b", "@vocab": "http://example.org/v/"}}),
            ),
        ]));
        let ctx = r.resolve(&json!(A)).await.unwrap();
        assert_eq!(ctx.expand_term("a"), "http://example.org/a");
        assert_eq!(ctx.expand_term("b"), "http://example.org/b");
        assert_eq!(ctx.expand_term("c"), "http://example.org/v/c");
        assert_eq!(r.entries().len(), 2);
    }

    #[tokio::test]
    async fn imported_contexts_merge() {
        let r = resolver(MapFetcher::with(&[(
            A,
            json!({"@context": {"a": "http://example.org/a", "b": "http://example.org/b"}}),
        )]));
        let ctx = r
            .resolve(&json!({"@import": A, "b": "http://example.org/mine"}))
            .await
            .unwrap();
        assert_eq!(ctx.expand_term("a"), "http://example.org/a");
        assert_eq!(ctx.expand_term("b"), "http://example.org/mine");
    }

    #[tokio::test]
    async fn loops_of_remote_contexts_fail() {
        let r = resolver(MapFetcher::with(&[
            (A, json!({"@context": [B]})),
            (B, json!({"@context": [{"x": "http://example.org/x"}, A]})),
        ]));
        let err = r.resolve(&json!(A)).await.unwrap_err();
        assert!(
            matches!(err, ContextError::Invalid(ref m) if m.contains("recursive context inclusion")),
            "{err}"
        );

        let r = resolver(MapFetcher::with(&[(A, json!({"@context": A}))]));
        assert!(matches!(
            r.resolve(&json!([A])).await,
            Err(ContextError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn deep_chains_of_remote_contexts_fail() {
        let urls: Vec<String> = (0..40)
            .map(|i| format!("http://contexts.test/{i}.jsonld"))
            .collect();
        let docs: Vec<(&str, Value)> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                (
                    u.as_str(),
                    json!({"@context": urls.get(i + 1).map_or(json!({}), |n| json!(n))}),
                )
            })
            .collect();
        let r = resolver(MapFetcher::with(&docs));
        let err = r.resolve(&json!(urls[0])).await.unwrap_err();
        assert!(
            matches!(err, ContextError::Invalid(ref m) if m.contains("context overflow")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn diamonds_of_remote_contexts_are_bounded() {
        // Each level includes the next one twice: 2^30 inclusions if unbounded.
        let urls: Vec<String> = (0..30)
            .map(|i| format!("http://contexts.test/d{i}.jsonld"))
            .collect();
        let docs: Vec<(&str, Value)> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let next = urls.get(i + 1).map_or(json!({}), |n| json!([n, n]));
                (u.as_str(), json!({"@context": next}))
            })
            .collect();
        let r = resolver(MapFetcher::with(&docs));
        let start = Instant::now();
        let result = r.resolve(&json!(urls[0])).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(result, Err(ContextError::Invalid(ref m)) if m.contains("context overflow")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn user_contexts_cannot_override_the_core_remotely() {
        let r = resolver(MapFetcher::with(&[(
            A,
            json!({"@context": {"type": "http://example.org/type", "Property": "http://example.org/P", "GeoProperty": {"@id": "http://example.org/G"}}}),
        )]));
        let ctx = r.resolve(&json!(A)).await.unwrap();
        assert_eq!(ctx.expand_term("type"), "@type");
        assert_eq!(ctx.expand_term("Property"), format!("{NGSI}Property"));
        assert_eq!(ctx.expand_term("GeoProperty"), format!("{NGSI}GeoProperty"));
    }

    #[tokio::test]
    async fn hosted_contexts_resolve_without_http() {
        let fetcher = MapFetcher::with(&[]);
        let r = resolver(fetcher.clone());
        let url = "http://broker.test/ngsi-ld/v1/jsonldContexts/abc";
        r.insert_local(
            url,
            json!({"@context": {"speed": "http://example.org/speed"}}),
        )
        .unwrap();
        let ctx = r.resolve(&json!(url)).await.unwrap();
        assert_eq!(ctx.expand_term("speed"), "http://example.org/speed");
        assert_eq!(fetcher.calls(), 0);
        assert!(r.local(url).is_some());
        let info = r.entry(url).unwrap();
        assert_eq!(info.kind, ContextKind::Hosted);
        assert_eq!(info.number_of_hits, 1);
        // Replacing it changes what the URL means.
        r.insert_local(
            url,
            json!({"@context": {"speed": "http://example.org/v2/speed"}}),
        )
        .unwrap();
        let ctx = r.resolve(&json!(url)).await.unwrap();
        assert_eq!(ctx.expand_term("speed"), "http://example.org/v2/speed");
        assert!(r.remove_local(url));
        assert!(!r.remove_local(url));
        assert!(r.local(url).is_none());
        assert!(matches!(
            r.resolve(&json!(url)).await,
            Err(ContextError::NotAvailable { .. })
        ));
        assert!(matches!(
            r.insert_local(url, json!({"speed": 1})),
            Err(ContextError::Invalid(_))
        ));
        assert!(matches!(
            r.insert_local(url, json!({"@context": 1})),
            Err(ContextError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn cached_documents_can_be_deleted_and_reloaded() {
        let fetcher = MapFetcher::with(&[(
            A,
            json!({"@context": {"speed": "http://example.org/speed"}}),
        )]);
        let r = resolver(fetcher.clone());
        r.resolve(&json!(A)).await.unwrap();
        fetcher.docs.lock().insert(
            A.into(),
            json!({"@context": {"speed": "http://example.org/v2/speed"}}),
        );
        assert_eq!(
            r.resolve(&json!(A)).await.unwrap().expand_term("speed"),
            "http://example.org/speed"
        );
        r.reload(A).await.unwrap();
        assert_eq!(fetcher.calls(), 2);
        assert_eq!(
            r.resolve(&json!(A)).await.unwrap().expand_term("speed"),
            "http://example.org/v2/speed"
        );
        assert!(r.remove(A));
        assert!(!r.remove(A));
        assert!(r.entries().is_empty());
        r.resolve(&json!(A)).await.unwrap();
        assert_eq!(fetcher.calls(), 3);
        // A failed reload keeps the old copy.
        fetcher.docs.lock().clear();
        assert!(matches!(
            r.reload(A).await,
            Err(ContextError::NotAvailable { .. })
        ));
        assert!(r.document(A).is_some());
        // Hosted documents cannot be reloaded.
        r.insert_local(B, json!({"@context": {}})).unwrap();
        assert!(matches!(r.reload(B).await, Err(ContextError::Invalid(_))));
    }

    #[tokio::test]
    async fn the_document_cache_is_bounded() {
        let urls: Vec<String> = (0..5)
            .map(|i| format!("http://contexts.test/c{i}.jsonld"))
            .collect();
        let docs: Vec<(&str, Value)> = urls
            .iter()
            .map(|u| (u.as_str(), json!({"@context": {}})))
            .collect();
        let r = ContextResolver::with_fetcher(
            ResolverConfig {
                max_cached_documents: 3,
                max_processed_contexts: 2,
                ..config(2000)
            },
            MapFetcher::with(&docs),
        );
        r.insert_local("http://broker.test/hosted", json!({"@context": {}}))
            .unwrap();
        for u in &urls {
            r.resolve(&json!(u)).await.unwrap();
        }
        let entries = r.entries();
        let cached: Vec<&str> = entries
            .iter()
            .filter(|e| e.kind == ContextKind::Cached)
            .map(|e| e.url.as_str())
            .collect();
        assert_eq!(cached, [&urls[2], &urls[3], &urls[4]]);
        assert!(r.local("http://broker.test/hosted").is_some());
    }

    #[test]
    fn the_resolver_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<ContextResolver>();
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Term names that are not core terms.
    fn term() -> impl Strategy<Value = String> {
        "[a-z][a-zA-Z0-9]{0,12}"
            .prop_filter("not a core term", |t| Context::core().term(t).is_none())
    }

    /// A user context of terms with distinct IRIs, some coerced.
    fn user_context() -> impl Strategy<Value = BTreeMap<String, (String, u8)>> {
        prop::collection::btree_map(term(), ("[a-z]{1,8}", 0u8..4), 0..12)
    }

    fn to_json(terms: &BTreeMap<String, (String, u8)>) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("ex".into(), json!("http://example.org/ns/"));
        for (i, (t, (seg, kind))) in terms.iter().enumerate() {
            let iri = format!("http://example.org/ns/{seg}{i}");
            let def = match kind {
                0 => json!(iri),
                1 => json!({"@id": iri, "@type": "@id"}),
                2 => json!({"@id": iri, "@container": "@list"}),
                _ => json!({"@id": iri, "@type": "DateTime"}),
            };
            map.insert(t.clone(), def);
        }
        Value::Object(map)
    }

    proptest! {
        /// The cache key of a context is its canonical JSON text: strings
        /// in it (written by hand where they need no escape) read back as
        /// themselves, and a key is the text serde_json writes for the
        /// same value once its object members are sorted.
        #[test]
        fn canonical_keys_write_strings_as_serde_json_does(
            s in "\\PC{0,20}|[\"\\\\\\x00-\\x1f a-z]{0,12}",
            k in "\\PC{0,8}",
        ) {
            prop_assert_eq!(canonical_json(&json!(s)), serde_json::to_string(&s).unwrap());
            let key = canonical_json(&json!({ k.clone(): [s.clone(), 1] }));
            let back: Value = serde_json::from_str(&key).unwrap();
            prop_assert_eq!(back, json!({ k: [s, 1] }));
        }

        #[test]
        fn compact_inverts_expand_for_terms(terms in user_context(), extra in term()) {
            let ctx = Context::from_value(&to_json(&terms)).unwrap();
            for t in terms.keys().chain([&extra]) {
                if t == "ex" { continue; }
                let iri = ctx.expand_term(t).into_owned();
                prop_assert_eq!(ctx.compact_iri(&iri), t.as_str());
            }
        }

        #[test]
        fn expand_inverts_compact_for_iris(terms in user_context(), suffix in "[a-zA-Z0-9/#._-]{1,16}") {
            let ctx = Context::from_value(&to_json(&terms)).unwrap();
            for iri in [
                format!("http://example.org/ns/{suffix}"),
                format!("{DEFAULT_VOCAB}{suffix}"),
                format!("{NGSI}{suffix}"),
                format!("urn:ngsi-ld:{suffix}"),
            ] {
                let compacted = ctx.compact_iri(&iri).into_owned();
                prop_assert_eq!(ctx.expand_term(&compacted), iri.as_str());
            }
        }

        #[test]
        fn core_round_trips_any_expanded_name(name in "[a-zA-Z_@][a-zA-Z0-9_:/#.@-]{0,20}") {
            let core = Context::core();
            let iri = core.expand_term(&name).into_owned();
            let compacted = core.compact_iri(&iri).into_owned();
            prop_assert_eq!(core.expand_term(&compacted), iri.as_str());
        }

        /// The allocation-free check that compaction uses agrees with
        /// expansion, for the term's own expansion and for a near miss.
        #[test]
        fn expands_to_agrees_with_expand_term(terms in user_context(), term in "[a-zA-Z_@][a-zA-Z0-9_:/#.@-]{0,20}") {
            let ctx = Context::from_value(&to_json(&terms)).unwrap();
            let iri = ctx.expand_term(&term).into_owned();
            prop_assert!(ctx.expands_to(&term, &iri));
            let longer = format!("{iri}x");
            prop_assert!(!ctx.expands_to(&term, &longer));
            prop_assert!(!ctx.expands_to(&term, &iri[..iri.len() - 1]));
        }

        #[test]
        fn processing_arbitrary_json_never_panics(value in arbitrary_json()) {
            let _ = Context::from_value(&value);
            let _ = Context::from_value(&json!({"a": value.clone()}));
            let _ = Context::from_value(&json!([{"a": {"@id": "http://example.org/a", "@context": value}}]));
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            prop_oneof![
                Just("@id".to_owned()),
                Just("@type".to_owned()),
                Just("@vocab".to_owned()),
                Just("@list".to_owned()),
                Just("ngsi-ld:x".to_owned()),
                Just("http://example.org/x".to_owned()),
                "[a-z@:/]{0,8}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("@id".to_owned()),
                        Just("@type".to_owned()),
                        Just("@container".to_owned()),
                        Just("@vocab".to_owned()),
                        Just("@protected".to_owned()),
                        Just("@prefix".to_owned()),
                        Just("@reverse".to_owned()),
                        Just("@version".to_owned()),
                        Just("type".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[test]
fn shared_expansions_are_remembered_per_context() {
    let ctx = user(json!({"level": "https://data.example/water#level", "ex": "https://ex.org/"}));
    let made = AtomicUsize::new(0);
    let share = |s: &str| {
        made.fetch_add(1, Ordering::Relaxed);
        Arc::<str>::from(s)
    };
    for term in ["level", "ex:depth", "temperature", "level"] {
        let first = ctx.expand_term_shared(term, share);
        let again = ctx.expand_term_shared(term, share);
        assert_eq!(*first, *ctx.expand_term(term), "{term}");
        assert!(Arc::ptr_eq(&first, &again), "{term}: remembered");
    }
    assert_eq!(
        made.load(Ordering::Relaxed),
        3,
        "one share per distinct term"
    );
    // A clone (a context derived from this one) starts without the memo.
    let copy = ctx.clone();
    copy.expand_term_shared("level", share);
    assert_eq!(made.load(Ordering::Relaxed), 4);
}
