//! Update, append, partial update, replace and delete of attributes.

use reqwest::Method;
use serde_json::json;

use crate::support::{Server, sorted, vehicle};

/// The NGSI-LD Null.
const NULL: &str = "urn:ngsi-ld:null";

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
async fn update_attrs_replaces_appends_and_deletes_with_the_null() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    s.patch(
        &attr("speed"),
        &json!({"type": "Property", "value": 1, "unitCode": "KMH"}),
    )
    .await
    .no_content();
    // An existing attribute is replaced as a whole (clause 5.5.8, example
    // 2: its unitCode goes); trailing slash form of the suite.
    s.patch(
        &format!("{}/", attrs()),
        &json!({"speed": {"type": "Property", "value": 2}}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert_eq!(e["speed"], json!({"type": "Property", "value": 2}));
    // One that does not exist is appended (clause 5.6.2, ETSI 011_01_03).
    s.patch(&attrs(), &json!({"speed": 3, "color": "red"}))
        .await
        .no_content();
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(
        (e["speed"].clone(), e["color"].clone()),
        (json!(3), json!("red"))
    );
    // The NGSI-LD Null deletes an attribute (example 3, ETSI 011_07) and an
    // instance given its datasetId (011_08); a new datasetId is a new
    // instance (558_01_04).
    s.patch(
        &attrs(),
        &json!({"color": {"type": "Property", "value": "urn:ngsi-ld:null"},
                "speed": {"type": "Property", "value": 4, "datasetId": "urn:ds:gps"}}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert!(e.get("color").is_none(), "{e}");
    assert_eq!(e["speed"].as_array().map(Vec::len), Some(2), "{e}");
    s.patch(
        &attrs(),
        &json!({"speed": {"type": "Property", "value": "urn:ngsi-ld:null", "datasetId": "urn:ds:gps"},
                "location": {"type": "GeoProperty", "value": "urn:ngsi-ld:null"}}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert_eq!(e["speed"]["value"], 3, "{e}");
    assert!(e.get("location").is_none(), "{e}");
    // Deleting what is not there is reported, as is a scope when the entity
    // has none (ETSI 011_05_02).
    let r = s
        .patch(
            &attrs(),
            &json!({"color": "urn:ngsi-ld:null", "scope": "/a", "brandName": "Volvo"}),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(strings(&r.body["updated"]), ["brandName"]);
    let mut not: Vec<String> = r.body["notUpdated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert!(n["reason"].as_str().is_some_and(|x| !x.is_empty()));
            n["attributeName"].as_str().unwrap().to_string()
        })
        .collect();
    not.sort();
    assert_eq!(not, ["color", "scope"]);
    assert!(s.entity(ID, "").await.get("scope").is_none());
    // New types are added and an existing scope is replaced (011_06, 011_05_01).
    s.put(
        &format!("/entities/{ID}"),
        &json!({"type": "Vehicle", "scope": "/a", "speed": 5}),
    )
    .await
    .no_content();
    s.patch(
        &attrs(),
        &json!({"type": ["Vehicle", "Car"], "scope": "/b/c"}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert_eq!(
        (e["type"].clone(), e["scope"].clone()),
        (json!(["Vehicle", "Car"]), json!("/b/c"))
    );
    // The Null only deletes whole attributes here.
    s.patch(
        &attrs(),
        &json!({"speed": {"type": "Property", "value": {"a": "urn:ngsi-ld:null"}}}),
    )
    .await
    .problem(400, "BadRequestData");
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
async fn the_type_selector_gates_the_operations_on_one_entity() {
    let s = Server::start().await;
    s.create(json!({"id": ID, "type": "Building", "name": "x", "scope": "/Madrid"}))
        .await;
    let name = |v: serde_json::Value| json!({"name": v});
    // ETSI 562_01, 563_01, 564_01_02, 565_01: a selector of other types
    // finds nothing and changes nothing; a matching one works.
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("{}?type=Vehicle", attrs()),
            name(json!("y")),
        ),
        (
            Method::POST,
            format!("{}?type=Vehicle", attrs()),
            name(json!("y")),
        ),
        (
            Method::PATCH,
            format!("{}?type=Vehicle", attr("name")),
            json!({"value": "y"}),
        ),
        (
            Method::PUT,
            format!("{}?type=Vehicle", attr("name")),
            json!({"value": "y"}),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}?type=Vehicle"),
            name(json!("y")),
        ),
    ] {
        s.send_json(method.clone(), &path, &body)
            .await
            .problem(404, "ResourceNotFound");
    }
    s.delete(&format!("{}?type=Vehicle", attr("name")))
        .await
        .problem(404, "ResourceNotFound");
    assert_eq!(s.entity(ID, "options=keyValues").await["name"], "x");
    s.patch(&format!("{}?type=Building", attrs()), &name(json!("y")))
        .await
        .no_content();
    s.patch(
        &format!("{}?type=Building", attr("name")),
        &json!({"value": "z"}),
    )
    .await
    .no_content();
    assert_eq!(s.entity(ID, "options=keyValues").await["name"], "z");
    s.delete(&format!("{}?type=Building", attr("name")))
        .await
        .no_content();
    // The scope is deleted like an attribute (ETSI 013_04), and cannot be
    // updated or replaced as one (564_01_01, 055_03_05).
    s.patch(&attr("scope"), &json!({"value": "/Barcelona"}))
        .await
        .problem(400, "BadRequestData");
    s.put(
        &attr("scope"),
        &json!({"type": "Property", "value": "/Barcelona"}),
    )
    .await
    .problem(400, "BadRequestData");
    s.delete(&attr("scope")).await.no_content();
    let e = s.entity(ID, "").await;
    assert!(e.get("scope").is_none() && e.get("name").is_none(), "{e}");
    s.delete(&attr("scope"))
        .await
        .problem(404, "ResourceNotFound");
    // An invalid attribute name in the path (055_03_03).
    s.put(&attr("@invalid"), &json!({"type": "Property", "value": 1}))
        .await
        .problem(400, "BadRequestData");
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
    // Types are added; a scope replaces the entity's scope, or with
    // noOverwrite is added to it (clause 5.6.3, ETSI 010_07).
    s.post(&attrs(), &json!({"type": "Car", "scope": "/a"}))
        .await
        .no_content();
    s.post(
        &format!("{}?options=noOverwrite", attrs()),
        &json!({"scope": ["/b", "/a"]}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert_eq!(
        (e["type"].clone(), e["scope"].clone()),
        (json!(["Vehicle", "Car"]), json!(["/a", "/b"]))
    );
    s.post(&attrs(), &json!({"scope": "/c"})).await.no_content();
    assert_eq!(s.entity(ID, "").await["scope"], "/c");
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
    // A fragment without a value changes the sub-attributes only; the type
    // of an attribute cannot change; an empty fragment and a datasetId set
    // to the Null are refused (ETSI 012_01_01, 012_02_03, 012_02_04,
    // 558_01_04).
    s.patch(
        &attrs(),
        &json!({"owner": {"type": "Relationship", "object": "urn:p:1", "since": 2020}}),
    )
    .await
    .no_content();
    s.patch(
        &attr("owner"),
        &json!({"providedBy": {"type": "Relationship", "object": "urn:p:2"}, "observedAt": "2024-01-01T00:00:00Z"}),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity(ID, "").await["owner"],
        json!({"type": "Relationship", "object": "urn:p:1", "observedAt": "2024-01-01T00:00:00Z",
               "since": {"type": "Property", "value": 2020},
               "providedBy": {"type": "Relationship", "object": "urn:p:2"}})
    );
    for fragment in [
        json!({"type": "Property", "value": 5}),
        json!({"value": 5}),
        json!({"type": "Property", "since": 2021}),
        json!({}),
        json!({"datasetId": "urn:ngsi-ld:null"}),
    ] {
        s.patch(&attr("owner"), &fragment)
            .await
            .problem(400, "BadRequestData");
    }
    s.patch(
        &attr("speed"),
        &json!({"type": "Relationship", "object": "urn:e:1"}),
    )
    .await
    .problem(400, "BadRequestData");
    assert_eq!(s.entity(ID, "options=keyValues").await["speed"], 3);
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
    // Replace does not create an instance: the one of the body's datasetId
    // (none: the default instance) must exist (ETSI D009_01_inc).
    s.create(json!({
        "id": "urn:ngsi-ld:Vehicle:ds", "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "datasetId": "urn:ds:a"},
    }))
    .await;
    let path = "/entities/urn:ngsi-ld:Vehicle:ds/attrs/speed";
    s.put(path, &json!({"type": "Property", "value": 2}))
        .await
        .problem(404, "ResourceNotFound");
    s.put(
        path,
        &json!({"type": "Property", "value": 2, "datasetId": "urn:ds:b"}),
    )
    .await
    .problem(404, "ResourceNotFound");
    assert_eq!(
        s.entity("urn:ngsi-ld:Vehicle:ds", "").await["speed"],
        json!({"type": "Property", "value": 1, "datasetId": "urn:ds:a"})
    );
    s.put(
        path,
        &json!({"type": "Property", "value": 3, "datasetId": "urn:ds:a"}),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity("urn:ngsi-ld:Vehicle:ds", "").await["speed"]["value"],
        3
    );
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

/// `datasetId=@none` names the default instance (clause 4.5.5), locally as
/// it does for a forwarded delete.
#[tokio::test]
async fn delete_attribute_with_dataset_id_none_deletes_the_default_instance() {
    let s = Server::start().await;
    s.create(json!({"id": ID, "type": "Vehicle", "temp": [
        {"type": "Property", "value": 0},
        {"type": "Property", "value": 1, "datasetId": "urn:ds:1"},
    ]}))
    .await;
    s.delete(&format!("{}?datasetId=@none", attr("temp")))
        .await
        .no_content();
    let temp = &s.entity(ID, "").await["temp"];
    assert_eq!(temp["datasetId"], "urn:ds:1", "{temp}");
    assert_eq!(temp["value"], 1, "{temp}");
    s.delete(&format!("{}?datasetId=@none", attr("temp")))
        .await
        .problem(404, "ResourceNotFound");
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

/// The NGSI-LD Null deletes `unitCode` and `observedAt` in a merge and in a
/// partial attribute update (clause 5.5.8), and is never stored; a DateTime
/// may use a comma before its fraction (clause 4.6.3) and reads back with
/// a point.
#[tokio::test]
async fn the_null_deletes_unit_code_and_observed_at() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Vehicle",
        "t": {"type": "Property", "value": 1, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00,25Z"},
        "u": {"type": "Property", "value": 2, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z"},
    }))
    .await;
    let e = s.entity(ID, "").await;
    assert_eq!(e["t"]["observedAt"], "2024-01-01T00:00:00.25Z", "{e}");
    s.patch(
        &format!("/entities/{ID}"),
        &json!({"t": {"unitCode": NULL, "observedAt": NULL}}),
    )
    .await
    .no_content();
    s.patch(&attr("u"), &json!({"unitCode": NULL}))
        .await
        .no_content();
    s.patch(&attr("u"), &json!({"observedAt": NULL}))
        .await
        .no_content();
    // A replacement or a new attribute has nothing to delete.
    s.patch(
        &attrs(),
        &json!({"w": {"type": "Property", "value": 3, "unitCode": NULL}}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert_eq!(e["t"], json!({"type": "Property", "value": 1}), "{e}");
    assert_eq!(e["u"], json!({"type": "Property", "value": 2}), "{e}");
    assert_eq!(e["w"], json!({"type": "Property", "value": 3}), "{e}");
}

/// With `lang`, a merge that gives a LanguageProperty an array of strings
/// sets that language's texts (clause 6.5.3.4).
#[tokio::test]
async fn a_merge_with_lang_takes_an_array_of_strings() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Vehicle",
        "name": {"type": "LanguageProperty", "languageMap": {"en": ["a", "b"]}},
    }))
    .await;
    s.patch(
        &format!("/entities/{ID}?lang=de"),
        &json!({"name": ["eins", "zwei"]}),
    )
    .await
    .no_content();
    let e = s.entity(ID, "").await;
    assert_eq!(
        e["name"]["languageMap"],
        json!({"en": ["a", "b"], "de": ["eins", "zwei"]}),
        "{e}"
    );
    s.patch(
        &format!("/entities/{ID}?lang=de"),
        &json!({"name": ["eins", 2]}),
    )
    .await
    .problem(400, "BadRequestData");
}
