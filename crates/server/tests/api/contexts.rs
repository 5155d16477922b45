//! User @contexts: inline (ld+json), by Link header, hosted by
//! /jsonldContexts, remote and unreachable.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::{
    CORE, Server, link, serve_document, serve_document_times, serve_text, silent_url,
};

const ID: &str = "urn:ngsi-ld:Car:1";

fn user_context() -> serde_json::Value {
    json!({"Car": "https://cars.example/Car", "speed": "https://cars.example/speed", "cars": "https://cars.example/"})
}

#[tokio::test]
async fn an_inline_context_expands_and_a_link_context_compacts() {
    let s = Server::start().await;
    let r = s
        .req(Method::POST, "/entities")
        .ld(&json!({"id": ID, "type": "Car", "speed": 5, "cars:color": "red", "@context": [user_context(), CORE]}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Without the context the names come back as full IRIs.
    assert_eq!(
        s.entity(ID, "options=keyValues").await,
        json!({"id": ID, "type": "https://cars.example/Car", "https://cars.example/speed": 5, "https://cars.example/color": "red"})
    );
    // A Link to the same terms compacts them again, and the term selects.
    let url = serve_document(json!({"@context": user_context()})).await;
    let r = s
        .req(
            Method::GET,
            "/entities?type=Car&q=speed==5&options=keyValues",
        )
        .header("link", &link(&url))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!([{"id": ID, "type": "Car", "speed": 5, "cars:color": "red"}])
    );
    assert_eq!(r.header("link"), Some(link(&url).as_str()));
    // The same request with another meaning of Car finds nothing.
    assert_eq!(s.ids("type=Car").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_link_context_expands_on_create_and_inline_context_compacts_on_ld_json_output() {
    let s = Server::start().await;
    let url = serve_document(json!({"@context": user_context()})).await;
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&url))
        .json(&json!({"id": ID, "type": "Car", "speed": 5}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(Method::GET, &format!("/entities/{ID}?options=keyValues"))
        .header("link", &link(&url))
        .header("accept", "application/ld+json")
        .send()
        .await;
    assert_eq!(r.header("content-type"), Some("application/ld+json"));
    assert_eq!(
        r.body,
        json!({"id": ID, "type": "Car", "speed": 5, "@context": url})
    );
}

#[tokio::test]
async fn a_user_context_cannot_redefine_core_terms() {
    let s = Server::start().await;
    let r = s
        .req(Method::POST, "/entities")
        .ld(&json!({
            "id": ID, "type": "Car",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
            "@context": {"location": "https://evil.example/location"},
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .get(&format!(
            "/entities?{}",
            "georel=near;maxDistance==10&geometry=Point&coordinates=[1,2]"
        ))
        .await;
    assert_eq!(crate::support::ids_of(&r.body), [ID], "{}", r.text);
}

#[tokio::test]
async fn hosted_contexts_add_list_get_use_delete() {
    let s = Server::start().await;
    let doc = json!({"@context": user_context()});
    // Members beside @context are discarded (clause 5.13.2.3).
    let mut with_extra = doc.clone();
    with_extra["id"] = json!("urn:x");
    with_extra["comment"] = json!("not served");
    let r = s.post("/jsonldContexts", &with_extra).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.text.is_empty());
    let location = r.header("location").unwrap().to_string();
    assert!(
        location.starts_with("/ngsi-ld/v1/jsonldContexts/"),
        "{location}"
    );
    let local_id = location.rsplit('/').next().unwrap().to_string();
    // Served back.
    let r = s.get(&format!("/jsonldContexts/{local_id}")).await;
    assert_eq!((r.status, r.body.clone()), (200, doc.clone()));
    // Listed, by URL, and with details.
    let r = s.get("/jsonldContexts").await;
    let urls: Vec<String> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    let url = urls
        .iter()
        .find(|u| u.ends_with(&location))
        .unwrap_or_else(|| panic!("{urls:?}"))
        .clone();
    let r = s.get("/jsonldContexts?details=true&kind=Hosted").await;
    let d = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["URL"] == url.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (d["kind"].clone(), d["localId"].clone()),
        (json!("Hosted"), json!(local_id))
    );
    assert!(d["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let r = s
        .get(&format!("/jsonldContexts/{local_id}?details=true"))
        .await;
    assert_eq!(r.body["kind"], "Hosted");
    // A Link header naming the hosted context works.
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&url))
        .json(&json!({"id": ID, "type": "Car", "speed": 1}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(s.entity(ID, "").await["type"], "https://cars.example/Car");
    // Deleted.
    s.delete(&format!("/jsonldContexts/{local_id}"))
        .await
        .no_content();
    s.get(&format!("/jsonldContexts/{local_id}"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("/jsonldContexts/{local_id}"))
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn hosted_context_errors() {
    let s = Server::start().await;
    // Not JSON or no @context member: InvalidRequest (ETSI 050_02); an
    // @context that is no JSON-LD context: BadRequestData (5132_01).
    for (body, error) in [
        ("{", "InvalidRequest"),
        ("[]", "InvalidRequest"),
        ("{\"x\": 1}", "InvalidRequest"),
        ("{\"@context\": 5}", "BadRequestData"),
        ("{\"@context\": true}", "BadRequestData"),
        (
            "{\"@context\": [\"https://e.example/c\", 5]}",
            "BadRequestData",
        ),
    ] {
        let r = s
            .req(Method::POST, "/jsonldContexts")
            .body("application/json", body)
            .send()
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(
            r.body["type"],
            format!("https://uri.etsi.org/ngsi-ld/errors/{error}"),
            "{body}"
        );
        assert!(r.header("location").is_none(), "{body}");
    }
    // details and reload are booleans (ETSI 052_04, 051_04_04).
    for path in [
        "/jsonldContexts?details=other",
        "/jsonldContexts?details=other&kind=Hosted",
        "/jsonldContexts/nothing?details=yes",
    ] {
        s.get(path).await.problem(400, "BadRequestData");
    }
    s.delete("/jsonldContexts/nothing?reload=xxx")
        .await
        .problem(400, "BadRequestData");
    // Reloading needs a Cached context: an unknown id is none (051_04_01);
    // without reload it is not found (051_04_02/03).
    s.delete("/jsonldContexts/nothing?reload=true")
        .await
        .problem(400, "BadRequestData");
    s.delete("/jsonldContexts/nothing?reload=false")
        .await
        .problem(404, "ResourceNotFound");
    s.get("/jsonldContexts/nothing")
        .await
        .problem(404, "ResourceNotFound");
    // The core context is served and cannot be deleted.
    let r = s
        .get(&format!("/jsonldContexts/{}", crate::support::enc(CORE)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["@context"].is_object() || r.body["@context"].is_array(),
        "{}",
        r.text
    );
    let r = s
        .delete(&format!("/jsonldContexts/{}", crate::support::enc(CORE)))
        .await;
    r.problem(400, "BadRequestData");
    s.delete(&format!(
        "/jsonldContexts/{}?reload=false",
        crate::support::enc(CORE)
    ))
    .await
    .problem(400, "BadRequestData");
    // Reloading the built-in core context has nothing to do (ETSI 051_09).
    s.delete(&format!(
        "/jsonldContexts/{}?reload=true",
        crate::support::enc(CORE)
    ))
    .await
    .no_content();
    assert_eq!(
        s.get(&format!("/jsonldContexts/{}", crate::support::enc(CORE)))
            .await
            .status,
        200
    );
}

/// A Cached context whose server went away cannot be reloaded:
/// LdContextNotAvailable, and the stored copy stays until a plain delete
/// (clause 5.13.5.4, ETSI 051_05, 5135_01).
#[tokio::test]
async fn a_failed_reload_keeps_the_cached_context() {
    let s = Server::start().await;
    let url = serve_document_times(json!({"@context": user_context()}), 1).await;
    let r = s
        .req(Method::GET, "/entities?type=Car")
        .header("link", &link(&url))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = crate::support::enc(&url);
    let r = s.get(&format!("/jsonldContexts/{id}?details=true")).await;
    assert_eq!(r.body["kind"], "Cached", "{}", r.text);
    s.delete(&format!("/jsonldContexts/{id}?reload=true"))
        .await
        .problem(503, "LdContextNotAvailable");
    let r = s.get(&format!("/jsonldContexts/{id}?details=true")).await;
    assert_eq!(
        (r.status, &r.body["kind"]),
        (200, &json!("Cached")),
        "{}",
        r.text
    );
    s.delete(&format!("/jsonldContexts/{id}"))
        .await
        .no_content();
    s.get(&format!("/jsonldContexts/{id}?details=true"))
        .await
        .problem(404, "ResourceNotFound");
}

/// A Cached context is a copy of a document served elsewhere: the broker
/// gives its metadata but not its content, OperationNotSupported (clause
/// 5.13.4.4, HTTP 422 by 6.30.3.1), whether by its URL or its local id.
#[tokio::test]
async fn a_cached_context_is_described_but_not_served() {
    let s = Server::start().await;
    let url = serve_document(json!({"@context": user_context()})).await;
    let r = s
        .req(Method::GET, "/entities?type=Car")
        .header("link", &link(&url))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = crate::support::enc(&url);
    for query in ["", "?details=false"] {
        s.get(&format!("/jsonldContexts/{id}{query}"))
            .await
            .problem(422, "OperationNotSupported");
    }
    let r = s.get(&format!("/jsonldContexts/{id}?details=true")).await;
    assert_eq!(
        (r.status, &r.body["kind"], &r.body["URL"]),
        (200, &json!("Cached"), &json!(url)),
        "{}",
        r.text
    );
    // Its local id names it as well as its URL does.
    let local_id = r.body["localId"].as_str().unwrap().to_string();
    s.get(&format!(
        "/jsonldContexts/{}",
        crate::support::enc(&local_id)
    ))
    .await
    .problem(422, "OperationNotSupported");
    // A hosted context is served as before.
    let r = s
        .post("/jsonldContexts", &json!({"@context": user_context()}))
        .await;
    let location = r.header("location").unwrap().to_string();
    let local_id = location.rsplit('/').next().unwrap();
    let r = s.get(&format!("/jsonldContexts/{local_id}")).await;
    assert_eq!(
        (r.status, r.body),
        (200, json!({"@context": user_context()}))
    );
}

/// numberOfHits counts the times the @context was found in the storage
/// (clause 5.13.3.5): a request that uses the cached copy, and a Serve
/// @context, which finds it there too and reports its own hit. The download
/// that stored it is no hit (ETSI 053_06: 1, then 3 after one more use).
#[tokio::test]
async fn serving_a_context_finds_it_in_the_storage_and_counts_a_hit() {
    let s = Server::start().await;
    let url = serve_document(json!({"@context": user_context()})).await;
    let id = crate::support::enc(&url);
    let r#use = || async {
        let r = s
            .req(Method::GET, "/entities?type=Car")
            .header("link", &link(&url))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    };
    let details = || async {
        let r = s.get(&format!("/jsonldContexts/{id}?details=true")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    };
    r#use().await;
    let d = details().await;
    assert_eq!(d["numberOfHits"], 1, "{d}");
    assert!(
        d["lastUsage"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{d}"
    );
    r#use().await;
    assert_eq!(details().await["numberOfHits"], 3);
    // Listing finds no particular @context: it counts nothing.
    let r = s.get("/jsonldContexts?details=true&kind=Cached").await;
    assert_eq!(r.body[0]["numberOfHits"], 3, "{}", r.text);
    assert_eq!(details().await["numberOfHits"], 4);
}

/// A hosted @context is information of the tenant that added it (clause
/// 5.5.10): another tenant, the default one included, can neither serve,
/// list nor delete it. Cached copies of remote documents stay shared.
/// (ETSI 5134_01.)
#[tokio::test]
async fn a_hosted_context_belongs_to_the_tenant_that_added_it() {
    let s = Server::start().await;
    let term = "TenantOnlyTerm";
    let doc = json!({"@context": {term: "urn:ngsi-ld:attributes:TenantOnlyTerm"}});
    let as_tenant = |method: Method, path: &str, tenant: &str| {
        let r = s.req(method, path);
        if tenant.is_empty() {
            r
        } else {
            r.header("NGSILD-Tenant", tenant)
        }
    };
    let r = as_tenant(Method::POST, "/jsonldContexts", "ctx-a")
        .json(&doc)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let local_id = r
        .header("location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    // Adding it created the tenant.
    let r = as_tenant(Method::GET, "/entities?type=Car", "ctx-a")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for other in ["ctx-b", ""] {
        for query in ["", "?details=true"] {
            let r = as_tenant(
                Method::GET,
                &format!("/jsonldContexts/{local_id}{query}"),
                other,
            )
            .send()
            .await;
            r.problem(404, "ResourceNotFound");
            assert!(!r.text.contains(term), "{}", r.text);
        }
        for query in ["", "?details=true", "?kind=Hosted"] {
            let r = as_tenant(Method::GET, &format!("/jsonldContexts{query}"), other)
                .send()
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert!(!r.text.contains(&local_id), "{other:?}{query}: {}", r.text);
        }
        as_tenant(
            Method::DELETE,
            &format!("/jsonldContexts/{local_id}"),
            other,
        )
        .send()
        .await
        .problem(404, "ResourceNotFound");
    }
    // The owner still has it, listed and served, and deletes it.
    let r = as_tenant(Method::GET, "/jsonldContexts?details=true", "ctx-a")
        .send()
        .await;
    assert!(r.text.contains(&local_id), "{}", r.text);
    let r = as_tenant(Method::GET, &format!("/jsonldContexts/{local_id}"), "ctx-a")
        .send()
        .await;
    assert_eq!((r.status, r.body), (200, doc));
    // A remote @context fetched for one tenant is one cached copy for all.
    let url = serve_document(json!({"@context": user_context()})).await;
    let r = as_tenant(Method::GET, "/entities?type=Car", "ctx-a")
        .header("link", &link(&url))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = as_tenant(Method::GET, "/jsonldContexts?kind=Cached", "ctx-b")
        .send()
        .await;
    assert_eq!(r.body, json!([url]), "{}", r.text);
    as_tenant(
        Method::DELETE,
        &format!("/jsonldContexts/{local_id}"),
        "ctx-a",
    )
    .send()
    .await
    .no_content();
    as_tenant(Method::GET, &format!("/jsonldContexts/{local_id}"), "ctx-a")
        .send()
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn an_unreachable_remote_context_is_503_quickly() {
    let s = Server::start().await;
    let (_keep, url) = silent_url();
    let started = Instant::now();
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&url))
        .json(&json!({"id": ID, "type": "Car"}))
        .send()
        .await;
    r.problem(503, "LdContextNotAvailable");
    let r = s
        .req(Method::POST, "/entities")
        .ld(&json!({"id": ID, "type": "Car", "@context": url}))
        .send()
        .await;
    r.problem(503, "LdContextNotAvailable");
    let r = s
        .req(Method::GET, "/entities?type=Car")
        .header("link", &link(&url))
        .send()
        .await;
    r.problem(503, "LdContextNotAvailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
    // In a batch, each entity fails alone: 207.
    let r = s
        .req(Method::POST, "/entityOperations/create")
        .ld(&json!([{"id": ID, "type": "Car", "@context": url}]))
        .send()
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["error"]["type"],
        "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"
    );
}

#[tokio::test]
async fn a_fetched_document_that_is_no_context_is_bad_request_data() {
    let s = Server::start().await;
    let url = serve_document(json!({"no": "context"})).await;
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&url))
        .json(&json!({"id": ID, "type": "Car"}))
        .send()
        .await;
    r.problem(400, "BadRequestData");
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
    // Retrieved but not JSON is invalid too, not unavailable (clause 5.5.6,
    // ETSI 556_01_02).
    let url = serve_text("this is { not json".into()).await;
    s.req(Method::POST, "/entities")
        .ld(&json!({"id": ID, "type": "Car", "@context": url}))
        .send()
        .await
        .problem(400, "BadRequestData");
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn link_header_rules() {
    let s = Server::start().await;
    let url = serve_document(json!({"@context": user_context()})).await;
    // ld+json with a body @context: the body wins or the request is refused, never a mix.
    let two = format!("{}, {}", link(&url), link(&url));
    let r = s
        .req(Method::GET, "/entities?type=Car")
        .header("link", &two)
        .send()
        .await;
    r.problem(400, "BadRequestData");
    // application/ld+json carries the context in the body: a JSON-LD Link
    // header besides it is refused (clause 6.3.5, ETSI 001_09, 003_09).
    let body = json!({"id": "urn:c:1", "type": "Car", "@context": url});
    s.req(Method::POST, "/entities")
        .header("link", &link(&url))
        .ld(&body)
        .send()
        .await
        .problem(400, "BadRequestData");
    s.req(Method::POST, "/entityOperations/upsert")
        .header("link", &link(&url))
        .ld(&json!([body]))
        .send()
        .await
        .problem(400, "BadRequestData");
    s.get("/entities/urn:c:1")
        .await
        .problem(404, "ResourceNotFound");
    // A user context may not hold scoped contexts (clause 5.5.7, ETSI
    // 557_01_01).
    s.req(Method::POST, "/entities")
        .ld(&json!({"id": "urn:c:1", "type": "Car", "@context": [{"Car": {"@id": "https://e.example/Car", "@context": {"speed": "https://e.example/s"}}}]}))
        .send()
        .await
        .problem(400, "BadRequestData");
    // A Link that is not a JSON-LD context is ignored.
    let r = s
        .req(Method::GET, "/entities?type=Car")
        .header("link", "<https://x.example/>; rel=\"alternate\"")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn reloading_a_hosted_context_is_bad_request_data() {
    let s = Server::start().await;
    let r = s
        .post("/jsonldContexts", &json!({"@context": user_context()}))
        .await;
    let location = r.header("location").unwrap().to_string();
    let local_id = location.rsplit('/').next().unwrap();
    s.delete(&format!("/jsonldContexts/{local_id}?reload=true"))
        .await
        .problem(400, "BadRequestData");
    assert_eq!(
        s.get(&format!("/jsonldContexts/{local_id}")).await.status,
        200
    );
    // A remote context used by a request is listed as Cached.
    let url = serve_document(json!({"@context": user_context()})).await;
    let r = s
        .req(Method::GET, "/entities?type=Car")
        .header("link", &link(&url))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let r = s.get("/jsonldContexts?kind=Cached&details=true").await;
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["URL"] == url.as_str() && d["kind"] == "Cached"),
        "{}",
        r.text
    );
}

/// A JSON answer to a request with an inline @context names, in its Link
/// header, a URL of this broker that serves that very context (kind
/// ImplicitlyCreated), so that the client can read the answer's terms.
#[tokio::test]
async fn an_inline_context_gets_a_url_for_json_answers() {
    let s = Server::start().await;
    let inline = json!([user_context(), CORE]);
    let r = s
        .req(Method::POST, "/entities")
        .ld(&json!({"id": ID, "type": "Car", "speed": 5, "@context": inline}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let query = json!({"type": "Query", "entities": [{"type": "Car"}], "@context": inline});
    let r = s
        .req(Method::POST, "/entityOperations/query")
        .header("accept", "application/json")
        .ld(&query)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body[0]["speed"]["value"], json!(5), "{}", r.text);
    let link = r.header("link").expect("a Link header").to_string();
    let url = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    assert!(url.contains("/ngsi-ld/v1/jsonldContexts/"), "{link}");
    assert!(!url.contains("ngsi-ld-core-context"), "{link}");
    // The URL serves the inline context, and the listing says how it came.
    let path = &url[url.find("/ngsi-ld/v1").unwrap() + "/ngsi-ld/v1".len()..];
    let served = s.get(path).await;
    assert_eq!(served.status, 200, "{}", served.text);
    assert_eq!(served.body, json!({"@context": inline}));
    let listed = s.get("/jsonldContexts?kind=ImplicitlyCreated").await;
    assert_eq!(listed.body, json!([url]));
    // The same context asked again gets the same URL.
    let again = s
        .req(Method::POST, "/entityOperations/query")
        .ld(&query)
        .send()
        .await;
    assert_eq!(again.header("link"), Some(link.as_str()));
}

#[tokio::test]
async fn an_inline_context_of_one_url_is_named_by_that_url() {
    let s = Server::start().await;
    let url = serve_document(json!({"@context": user_context()})).await;
    // The core context beside it applies anyway: the Link header names the
    // one context the client gave, not a served copy.
    for inline in [json!([url]), json!([url, CORE])] {
        let query = json!({"type": "Query", "entities": [{"type": "Car"}], "@context": inline});
        let r = s
            .req(Method::POST, "/entityOperations/query")
            .header("accept", "application/json")
            .ld(&query)
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("link"), Some(link(&url).as_str()), "{inline}");
    }
    let listed = s.get("/jsonldContexts?kind=ImplicitlyCreated").await;
    assert_eq!(listed.body, json!([]));
}
