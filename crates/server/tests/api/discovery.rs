//! Type and attribute discovery: /types, /types/{type}, /attributes,
//! /attributes/{attr}.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Server, enc, link, serve_document, sorted};

async fn seeded() -> Server {
    let s = Server::start().await;
    s.create(json!({"id": "urn:d:1", "type": "Building", "height": 1, "owner": {"type": "Relationship", "object": "urn:p:1"}})).await;
    s.create(
        json!({"id": "urn:d:2", "type": "Building", "height": {"type": "Property", "value": 2},
                    "name": {"type": "LanguageProperty", "languageMap": {"en": "x"}}}),
    )
    .await;
    s.create(json!({"id": "urn:d:3", "type": ["House", "Building"], "height": 3}))
        .await;
    s
}

fn strings(v: &Value) -> Vec<String> {
    sorted(
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect(),
    )
}

#[tokio::test]
async fn entity_types() {
    let s = seeded().await;
    let r = s.get("/types/?details=false").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "EntityTypeList");
    assert!(
        r.body["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("urn:ngsi-ld:EntityTypeList:"))
    );
    assert_eq!(strings(&r.body["typeList"]), ["Building", "House"]);
    assert_eq!(r.body.as_object().unwrap().len(), 3, "{}", r.text);
    let r = s.get("/types?details=true").await;
    let mut list = r.body.as_array().unwrap().clone();
    list.sort_by_key(|t| t["typeName"].as_str().unwrap().to_string());
    assert_eq!(
        list[0],
        json!({"id": "https://uri.etsi.org/ngsi-ld/default-context/Building", "type": "EntityType",
               "typeName": "Building", "attributeNames": list[0]["attributeNames"]})
    );
    assert_eq!(
        strings(&list[0]["attributeNames"]),
        ["height", "name", "owner"]
    );
    assert_eq!(strings(&list[1]["attributeNames"]), ["height"]);
    s.get("/types?details=maybe")
        .await
        .problem(400, "BadRequestData");
    s.get("/types?bogus=1").await.problem(400, "InvalidRequest");
}

#[tokio::test]
async fn entity_type_info() {
    let s = seeded().await;
    let r = s.get("/types/Building").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "EntityTypeInfo");
    assert_eq!(
        r.body["id"],
        "https://uri.etsi.org/ngsi-ld/default-context/Building"
    );
    assert_eq!(r.body["typeName"], "Building");
    assert_eq!(r.body["entityCount"], 3);
    let mut details = r.body["attributeDetails"].as_array().unwrap().clone();
    details.sort_by_key(|d| d["attributeName"].as_str().unwrap().to_string());
    assert_eq!(
        details,
        [
            json!({"id": "https://uri.etsi.org/ngsi-ld/default-context/height", "type": "Attribute", "attributeName": "height", "attributeTypes": ["Property"]}),
            json!({"id": "https://uri.etsi.org/ngsi-ld/default-context/name", "type": "Attribute", "attributeName": "name", "attributeTypes": ["LanguageProperty"]}),
            json!({"id": "https://uri.etsi.org/ngsi-ld/default-context/owner", "type": "Attribute", "attributeName": "owner", "attributeTypes": ["Relationship"]}),
        ]
    );
    // A full IRI names the same type.
    let r = s
        .get(&format!(
            "/types/{}",
            enc("https://uri.etsi.org/ngsi-ld/default-context/House")
        ))
        .await;
    assert_eq!((r.status, r.body["entityCount"].clone()), (200, json!(1)));
    s.get("/types/Nothing")
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn attributes() {
    let s = seeded().await;
    let r = s.get("/attributes/").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "AttributeList");
    assert!(
        r.body["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("urn:ngsi-ld:AttributeList:"))
    );
    assert_eq!(
        strings(&r.body["attributeList"]),
        ["height", "name", "owner"]
    );
    let r = s.get("/attributes?details=true").await;
    let height = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attributeName"] == "height")
        .unwrap()
        .clone();
    assert_eq!(height["type"], "Attribute");
    assert_eq!(
        height["id"],
        "https://uri.etsi.org/ngsi-ld/default-context/height"
    );
    assert_eq!(strings(&height["typeNames"]), ["Building", "House"]);
    let r = s.get("/attributes/height").await;
    assert_eq!(r.body["attributeCount"], 3);
    assert_eq!(r.body["attributeTypes"], json!(["Property"]));
    assert_eq!(r.body["attributeName"], "height");
    assert_eq!(strings(&r.body["typeNames"]), ["Building", "House"]);
    s.get("/attributes/nothing")
        .await
        .problem(404, "ResourceNotFound");
}

async fn count(s: &Server, attr: &str) -> Value {
    s.get(&format!("/attributes/{attr}")).await.body["attributeCount"].clone()
}

/// `attributeCount` is the "number of attribute instances with this
/// attribute name" (clause 5.2.28): each datasetId counts.
#[tokio::test]
async fn attribute_count_counts_instances() {
    let s = seeded().await;
    s.create(json!({"id": "urn:d:4", "type": "Building", "height": [
        {"type": "Property", "value": 4},
        {"type": "Property", "value": 5, "datasetId": "urn:ds:a"},
        {"type": "Property", "value": 6, "datasetId": "urn:ds:b"},
    ]}))
    .await;
    assert_eq!(count(&s, "height").await, 6);
    s.delete("/entities/urn:d:4/attrs/height?datasetId=urn:ds:a")
        .await
        .no_content();
    assert_eq!(count(&s, "height").await, 5);
    s.delete("/entities/urn:d:4").await.no_content();
    assert_eq!(count(&s, "height").await, 3);
    // Types still count entities.
    assert_eq!(s.get("/types/Building").await.body["entityCount"], 3);
}

#[tokio::test]
async fn names_are_compacted_with_the_request_context_or_given_as_iris() {
    let s = Server::start().await;
    let ctx = serve_document(json!({"@context": {"Shop": "https://shops.example/Shop", "stock": "https://shops.example/stock"}})).await;
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&ctx))
        .json(&json!({"id": "urn:d:s", "type": "Shop", "stock": 1}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Without the context: full IRIs.
    assert_eq!(
        s.get("/types").await.body["typeList"],
        json!(["https://shops.example/Shop"])
    );
    assert_eq!(
        s.get("/attributes").await.body["attributeList"],
        json!(["https://shops.example/stock"])
    );
    // With it: terms, and the term works in the path.
    let r = s
        .req(Method::GET, "/types")
        .header("link", &link(&ctx))
        .send()
        .await;
    assert_eq!(r.body["typeList"], json!(["Shop"]));
    let r = s
        .req(Method::GET, "/types/Shop")
        .header("link", &link(&ctx))
        .send()
        .await;
    assert_eq!(
        (r.status, r.body["typeName"].clone()),
        (200, json!("Shop")),
        "{}",
        r.text
    );
    let r = s
        .req(Method::GET, "/attributes/stock")
        .header("link", &link(&ctx))
        .send()
        .await;
    assert_eq!(
        (r.status, r.body["attributeName"].clone()),
        (200, json!("stock")),
        "{}",
        r.text
    );
    s.get("/types/Shop").await.problem(404, "ResourceNotFound");
}

/// What the ETSI discovery TPs check beyond the happy path (577_01,
/// 5710_01): entity members are no attributes, the operations take only
/// their own parameters, and the lists are those of the request's tenant.
#[tokio::test]
async fn discovery_rules_of_the_etsi_suite() {
    let s = seeded().await;
    let r = s.get("/attributes").await;
    for member in [
        "id",
        "type",
        "scope",
        "createdAt",
        "modifiedAt",
        "deletedAt",
    ] {
        assert!(
            !strings(&r.body["attributeList"]).contains(&member.to_string()),
            "{member}"
        );
        s.get(&format!("/attributes/{member}"))
            .await
            .problem(404, "ResourceNotFound");
    }
    for path in [
        "/types/Building?details=true",
        "/attributes?limit=5",
        "/attributes/height?details=true",
    ] {
        s.get(path).await.problem(400, "InvalidRequest");
    }
    let r = s
        .req(Method::POST, "/entities")
        .header("NGSILD-Tenant", "other")
        .json(&json!({"id": "urn:d:9", "type": "OtherType", "size": 1}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(Method::GET, "/types")
        .header("NGSILD-Tenant", "other")
        .send()
        .await;
    assert_eq!(strings(&r.body["typeList"]), ["OtherType"]);
    let r = s.get("/types").await;
    assert!(!strings(&r.body["typeList"]).contains(&"OtherType".to_string()));
    s.get("/types/OtherType")
        .await
        .problem(404, "ResourceNotFound");
}
