//! Tenants: implicit creation, isolation, NonexistentTenant and the echoed
//! NGSILD-Tenant header.

use reqwest::Method;
use serde_json::json;

use crate::support::{Server, vehicle};

const ID: &str = "urn:ngsi-ld:Vehicle:T1";
const TENANT: &str = "ngsildtenant";

#[tokio::test]
async fn a_create_makes_the_tenant_and_data_stays_in_it() {
    let s = Server::start().await;
    let r = s
        .req(Method::POST, "/entities")
        .header("NGSILD-Tenant", TENANT)
        .json(&vehicle(ID, 1))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("ngsild-tenant"), Some(TENANT));
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header("NGSILD-Tenant", TENANT)
        .send()
        .await;
    assert_eq!((r.status, r.header("ngsild-tenant")), (200, Some(TENANT)));
    // The default tenant does not see it, nor can it create a clash.
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
    assert!(s.ids("type=Vehicle").await.is_empty());
    s.create(vehicle(ID, 2)).await;
    let r = s
        .req(Method::GET, &format!("/entities/{ID}?options=keyValues"))
        .header("NGSILD-Tenant", TENANT)
        .send()
        .await;
    assert_eq!(r.body["speed"], 1);
    // Another tenant that exists does not see it either.
    let r = s
        .req(Method::POST, "/entities")
        .header("NGSILD-Tenant", "other")
        .json(&vehicle("urn:x:1", 1))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header("NGSILD-Tenant", "other")
        .send()
        .await;
    r.problem(404, "ResourceNotFound");
    assert_eq!(r.header("ngsild-tenant"), Some("other"));
    let r = s
        .req(Method::GET, "/types")
        .header("NGSILD-Tenant", "other")
        .send()
        .await;
    assert_eq!(r.body["typeList"], json!(["Vehicle"]));
    // Batch create makes a tenant too.
    let r = s
        .req(Method::POST, "/entityOperations/create")
        .header("NGSILD-Tenant", "third")
        .json(&json!([vehicle(ID, 3)]))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(Method::GET, &format!("/entities/{ID}?options=keyValues"))
        .header("NGSILD-Tenant", "third")
        .send()
        .await;
    assert_eq!(r.body["speed"], 3);
}

#[tokio::test]
async fn operations_on_an_unknown_tenant_are_nonexistent_tenant() {
    let s = Server::start().await;
    let cases = [
        (Method::GET, format!("/entities/{ID}"), None),
        (Method::GET, "/entities?type=Vehicle".to_string(), None),
        (Method::GET, "/types".to_string(), None),
        (Method::GET, "/types/Vehicle".to_string(), None),
        (Method::GET, "/attributes".to_string(), None),
        (Method::DELETE, format!("/entities/{ID}"), None),
        (Method::DELETE, "/entities?type=Vehicle".to_string(), None),
        (Method::DELETE, format!("/entities/{ID}/attrs/speed"), None),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs"),
            Some(json!({"speed": 1})),
        ),
        (
            Method::POST,
            format!("/entities/{ID}/attrs"),
            Some(json!({"speed": 1})),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}"),
            Some(json!({"speed": 1})),
        ),
        (
            Method::PUT,
            format!("/entities/{ID}"),
            Some(json!({"type": "Vehicle"})),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs/speed"),
            Some(json!({"value": 1})),
        ),
        (
            Method::PUT,
            format!("/entities/{ID}/attrs/speed"),
            Some(json!({"value": 1})),
        ),
        (
            Method::POST,
            "/entityOperations/update".to_string(),
            Some(json!([{"id": ID, "speed": 1}])),
        ),
        (
            Method::POST,
            "/entityOperations/merge".to_string(),
            Some(json!([{"id": ID, "speed": 1}])),
        ),
        (
            Method::POST,
            "/entityOperations/delete".to_string(),
            Some(json!([ID])),
        ),
        (
            Method::POST,
            "/entityOperations/query".to_string(),
            Some(json!({"type": "Query", "entities": [{"type": "V"}]})),
        ),
        (
            Method::GET,
            "/subscriptions/urn:ngsi-ld:Subscription:1".to_string(),
            None,
        ),
        (
            Method::PATCH,
            "/subscriptions/urn:ngsi-ld:Subscription:1".to_string(),
            Some(json!({"isActive": true})),
        ),
        (
            Method::DELETE,
            "/subscriptions/urn:ngsi-ld:Subscription:1".to_string(),
            None,
        ),
    ];
    // The same for registrations and their subscriptions (clause 5.5.10).
    let mut cases = cases.to_vec();
    for path in [
        "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:1",
        "/csourceSubscriptions/urn:ngsi-ld:Subscription:1",
    ] {
        cases.push((Method::GET, path.to_string(), None));
        cases.push((
            Method::PATCH,
            path.to_string(),
            Some(json!({"expiresAt": "2040-01-01T00:00:00Z"})),
        ));
        cases.push((Method::DELETE, path.to_string(), None));
    }
    for (method, path, body) in cases {
        let mut req = s
            .req(method.clone(), &path)
            .header("NGSILD-Tenant", "nobody");
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        r.problem(404, "NonexistentTenant");
        assert_eq!(r.header("ngsild-tenant"), Some("nobody"), "{method} {path}");
    }
    // Nothing was created by those.
    let r = s
        .req(Method::GET, "/types")
        .header("NGSILD-Tenant", "nobody")
        .send()
        .await;
    r.problem(404, "NonexistentTenant");
}

#[tokio::test]
async fn the_tenant_header_is_echoed_on_errors() {
    let s = Server::start().await;
    let r = s
        .req(Method::POST, "/entities")
        .header("NGSILD-Tenant", TENANT)
        .body("application/json", "{")
        .send()
        .await;
    r.problem(400, "InvalidRequest");
    assert_eq!(r.header("ngsild-tenant"), Some(TENANT));
    let r = s
        .req(Method::GET, "/entities?bogus=1")
        .header("NGSILD-Tenant", TENANT)
        .send()
        .await;
    assert_eq!((r.status, r.header("ngsild-tenant")), (400, Some(TENANT)));
}

#[tokio::test]
async fn the_tenant_header_is_echoed_on_every_success() {
    let s = Server::start().await;
    let t = |m: Method, p: &str| s.req(m, p).header("NGSILD-Tenant", TENANT);
    assert_eq!(
        t(Method::POST, "/entities")
            .json(&vehicle(ID, 1))
            .send()
            .await
            .header("ngsild-tenant"),
        Some(TENANT)
    );
    let responses = [
        t(Method::PATCH, &format!("/entities/{ID}/attrs"))
            .json(&json!({"speed": 2}))
            .send()
            .await,
        t(Method::PATCH, &format!("/entities/{ID}/attrs"))
            .json(&json!({"nothing": 2}))
            .send()
            .await,
        t(Method::GET, "/entities?type=Vehicle").send().await,
        t(Method::POST, "/entityOperations/upsert")
            .json(&json!([vehicle(ID, 1)]))
            .send()
            .await,
        t(Method::DELETE, &format!("/entities/{ID}")).send().await,
    ];
    for r in responses {
        assert_eq!(
            r.header("ngsild-tenant"),
            Some(TENANT),
            "{} {}",
            r.status,
            r.text
        );
    }
    let r = s
        .req(Method::GET, "/types")
        .header("NGSILD-Tenant", "bad\tname")
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

/// Retrieve Context Source Identity Information (5.15.1, Table 5.2.40-1):
/// the mandatory members, an alias per tenant that stays the same, and the
/// core @context on the JSON-LD form [X 061_01].
#[tokio::test]
async fn the_source_identity_names_the_broker_and_each_tenant() {
    let s = Server::start().await;
    let default = s.get("/info/sourceIdentity").await;
    assert_eq!(default.status, 200, "{}", default.text);
    let body = &default.body;
    assert_eq!(body["type"], "ContextSourceIdentity");
    assert_eq!(body["id"], "urn:ngsi-ld:ContextSource:wuyang-test");
    assert_eq!(body["contextSourceAlias"], "wuyang-test");
    let uptime = body["contextSourceUptime"].as_str().unwrap();
    assert!(
        uptime.starts_with('P') && uptime.contains('T') && uptime.ends_with('S'),
        "{uptime}"
    );
    let at = body["contextSourceTimeAt"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && ngsi_model::time::parse_datetime(at).is_some(),
        "{at}"
    );
    assert!(
        default.header("link").is_some(),
        "the core context is linked"
    );
    let alias = async |tenant: &str| {
        let r = s
            .req(Method::GET, "/info/sourceIdentity")
            .header("NGSILD-Tenant", tenant)
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("ngsild-tenant"), Some(tenant));
        r.body["contextSourceAlias"].as_str().unwrap().to_string()
    };
    // Tenants unknown to the store have an identity too.
    let a = alias("urnalias-a").await;
    assert_eq!(a, "wuyang-test.urnalias-a");
    assert_ne!(a, alias("urnalias-b").await);
    assert_eq!(a, alias("urnalias-a").await);
    let ld = s
        .req(Method::GET, "/info/sourceIdentity")
        .header("Accept", "application/ld+json")
        .send()
        .await;
    assert_eq!(ld.status, 200);
    assert!(ld.body.get("@context").is_some(), "{}", ld.text);
    s.get("/info/sourceIdentity?local=true")
        .await
        .problem(400, "InvalidRequest");
}
