//! Update, append, partial update, replace and delete of attributes.

use reqwest::Method;
use serde_json::json;

use crate::support::{Server, sorted, vehicle};

const ID: &str = "urn:ngsi-ld:Vehicle:B1";

fn attrs() -> String {
    format!("/entities/{ID}/attrs")
}

fn attr(name: &str) -> String {
    format!("/entities/{ID}/attrs/{name}")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    sorted(
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect(),
    )
}

#[tokio::test]
async fn update_attrs_writes_existing_attributes_only() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    // All exist: 204 (trailing slash form of the suite).
    s.patch(
        &format!("{}/", attrs()),
        &json!({"speed": {"type": "Property", "value": 2}}),
    )
    .await
    .no_content();
    assert_eq!(s.entity(ID, "options=keyValues").await["speed"], 2);
    // One does not exist: 207 with an UpdateResult; it is not added.
    let r = s
        .patch(&attrs(), &json!({"speed": 3, "color": "red"}))
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(strings(&r.body["updated"]), ["speed"]);
    let not = r.body["notUpdated"].as_array().unwrap();
    assert_eq!(not.len(), 1);
    assert_eq!(not[0]["attributeName"], "color");
    assert!(not[0]["reason"].as_str().is_some_and(|x| !x.is_empty()));
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(e["speed"], 3);
    assert!(e.get("color").is_none());
    // Errors.
    s.patch(
        "/entities/urn:ngsi-ld:Vehicle:none/attrs",
        &json!({"speed": 1}),
    )
    .await
    .problem(404, "ResourceNotFound");
    s.patch(&attrs(), &json!({"speed": {"type": "Property"}}))
        .await
        .problem(400, "BadRequestData");
    let r = s
        .req(Method::PATCH, &attrs())
        .body("application/json", "[")
        .send()
        .await;
    r.problem(400, "InvalidRequest");
}

#[tokio::test]
async fn append_attrs_adds_and_overwrites_unless_no_overwrite() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    s.post(
        &format!("{}/", attrs()),
        &json!({"color": "red", "speed": 5}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(
        (e["color"].clone(), e["speed"].clone()),
        (json!("red"), json!(5))
    );
    let r = s
        .post(
            &format!("{}?options=noOverwrite", attrs()),
            &json!({"color": "blue", "weight": 1200}),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(strings(&r.body["updated"]), ["weight"]);
    assert_eq!(r.body["notUpdated"][0]["attributeName"], "color");
    assert!(
        r.body["notUpdated"][0]["reason"]
            .as_str()
            .is_some_and(|x| !x.is_empty())
    );
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(
        (e["color"].clone(), e["weight"].clone()),
        (json!("red"), json!(1200))
    );
    // noOverwrite with nothing existing: 204.
    s.post(
        &format!("{}?options=noOverwrite", attrs()),
        &json!({"height": 2}),
    )
    .await
    .no_content();
    // A new datasetId is a new instance, even with noOverwrite.
    s.post(
        &format!("{}?options=noOverwrite", attrs()),
        &json!({"color": {"value": "green", "datasetId": "urn:ds:1"}}),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity(ID, "options=keyValues").await["color"],
        json!({"dataset": {"@none": "red", "urn:ds:1": "green"}})
    );
    s.post("/entities/urn:ngsi-ld:Vehicle:none/attrs", &json!({"a": 1}))
        .await
        .problem(404, "ResourceNotFound");
    s.post(&attrs(), &json!({"location": 5}))
        .await
        .problem(400, "BadRequestData");
}

#[tokio::test]
async fn partial_attribute_update_merges_the_fragment() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "unitCode": "KMH",
                  "accuracy": {"type": "Property", "value": 0.5}, "source": {"type": "Property", "value": "gps"}},
        "temp": [{"type": "Property", "value": 10}, {"type": "Property", "value": 11, "datasetId": "urn:ds:1"}],
    }))
    .await;
    s.patch(
        &attr("speed"),
        &json!({"value": 2, "observedAt": "2024-01-01T00:00:00Z", "source": "urn:ngsi-ld:null"}),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity(ID, "").await["speed"],
        json!({"type": "Property", "value": 2, "unitCode": "KMH", "observedAt": "2024-01-01T00:00:00Z",
               "accuracy": {"type": "Property", "value": 0.5}})
    );
    // merge-patch+json is accepted (TP 044_01_01), and the trailing slash.
    let r = s
        .req(Method::PATCH, &format!("{}/", attr("speed")))
        .body(
            "application/merge-patch+json",
            json!({"value": 3}).to_string(),
        )
        .send()
        .await;
    r.no_content();
    assert_eq!(s.entity(ID, "options=keyValues").await["speed"], 3);
    // The datasetId in the body selects the instance.
    s.patch(
        &attr("temp"),
        &json!({"value": 12, "datasetId": "urn:ds:1"}),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity(ID, "options=keyValues").await["temp"],
        json!({"dataset": {"@none": 10, "urn:ds:1": 12}})
    );
    // Errors.
    s.patch(&attr("nothing"), &json!({"value": 1}))
        .await
        .problem(404, "ResourceNotFound");
    s.patch(
        &attr("temp"),
        &json!({"value": 1, "datasetId": "urn:ds:none"}),
    )
    .await
    .problem(404, "ResourceNotFound");
    s.patch(
        "/entities/urn:ngsi-ld:Vehicle:none/attrs/speed",
        &json!({"value": 1}),
    )
    .await
    .problem(404, "ResourceNotFound");
    s.patch(&attr("speed"), &json!({"value": {"a": "urn:ngsi-ld:null"}}))
        .await
        .problem(400, "BadRequestData");
    let r = s
        .req(Method::PATCH, &attr("speed"))
        .body("text/plain", "x")
        .send()
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn replace_attribute_replaces_the_whole_instance() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "unitCode": "KMH", "accuracy": {"type": "Property", "value": 0.5}},
    }))
    .await;
    s.put(&attr("speed"), &json!({"type": "Property", "value": 9}))
        .await
        .no_content();
    assert_eq!(
        s.entity(ID, "").await["speed"],
        json!({"type": "Property", "value": 9})
    );
    // Concise body, and another kind.
    s.put(&attr("speed"), &json!({"object": "urn:ngsi-ld:X:1"}))
        .await
        .no_content();
    assert_eq!(
        s.entity(ID, "").await["speed"],
        json!({"type": "Relationship", "object": "urn:ngsi-ld:X:1"})
    );
    s.put(&attr("nothing"), &json!({"type": "Property", "value": 9}))
        .await
        .problem(404, "ResourceNotFound");
    s.put(
        "/entities/urn:ngsi-ld:Vehicle:none/attrs/speed",
        &json!({"value": 9}),
    )
    .await
    .problem(404, "ResourceNotFound");
    s.put(&attr("speed"), &json!({"type": "Property"}))
        .await
        .problem(400, "BadRequestData");
}

#[tokio::test]
async fn delete_attribute_default_instance_dataset_id_and_delete_all() {
    let s = Server::start().await;
    let instances = json!([
        {"type": "Property", "value": 0},
        {"type": "Property", "value": 1, "datasetId": "urn:ds:1"},
        {"type": "Property", "value": 2, "datasetId": "urn:ds:2"},
    ]);
    s.create(
        json!({"id": ID, "type": "Vehicle", "temp": instances, "speed": 1, "other": [
            {"type": "Property", "value": 1, "datasetId": "urn:ds:1"},
            {"type": "Property", "value": 2, "datasetId": "urn:ds:2"},
        ]}),
    )
    .await;
    // The suite sends Content-Type and a Link header on this DELETE.
    let r = s
        .req(Method::DELETE, &attr("temp"))
        .header("content-type", "application/json")
        .send()
        .await;
    r.no_content();
    assert_eq!(
        s.entity(ID, "options=keyValues").await["temp"],
        json!({"dataset": {"urn:ds:1": 1, "urn:ds:2": 2}})
    );
    s.delete(&format!("{}?datasetId=urn:ds:1", attr("temp")))
        .await
        .no_content();
    assert_eq!(s.entity(ID, "options=keyValues").await["temp"], 2);
    s.delete(&format!("{}?datasetId=urn:ds:1", attr("temp")))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&attr("other"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("{}?deleteAll=true", attr("other")))
        .await
        .no_content();
    s.delete(&attr("speed")).await.no_content();
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(e, json!({"id": ID, "type": "Vehicle", "temp": 2}));
    s.delete(&attr("speed"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("{}?datasetId=not%20a%20uri", attr("temp")))
        .await
        .problem(400, "BadRequestData");
    s.delete("/entities/urn:ngsi-ld:Vehicle:none/attrs/temp")
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("{}?deleteAll=maybe", attr("temp")))
        .await
        .problem(400, "BadRequestData");
}

#[tokio::test]
async fn attribute_names_in_paths_are_expanded_with_the_link_context() {
    let s = Server::start().await;
    let ctx =
        crate::support::serve_document(json!({"@context": {"speed": "https://example.org/speed"}}))
            .await;
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &crate::support::link(&ctx))
        .json(&json!({"id": ID, "type": "Vehicle", "speed": 1}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Without the context, `speed` is another attribute.
    s.patch(&attr("speed"), &json!({"value": 2}))
        .await
        .problem(404, "ResourceNotFound");
    let r = s
        .req(Method::PATCH, &attr("speed"))
        .header("link", &crate::support::link(&ctx))
        .json(&json!({"value": 2}))
        .send()
        .await;
    r.no_content();
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(e["https://example.org/speed"], 2, "{e}");
    let r = s
        .req(Method::DELETE, &attr("speed"))
        .header("link", &crate::support::link(&ctx))
        .send()
        .await;
    r.no_content();
    assert_eq!(s.entity(ID, "").await, json!({"id": ID, "type": "Vehicle"}));
}
