//! Every attribute kind through create and retrieve in the three forms,
//! multi-instance attributes with datasetId, sub-attributes, observedAt,
//! unitCode and LanguageProperty with `lang`.

use serde_json::{Value, json};

use crate::support::Server;

/// The NGSI-LD Null.
const NULL: &str = "urn:ngsi-ld:null";

const ID: &str = "urn:ngsi-ld:Thing:1";

fn every_kind() -> Value {
    json!({
        "id": ID, "type": "Thing",
        "prop": {"type": "Property", "value": 7.5, "unitCode": "CEL", "observedAt": "2024-05-01T08:30:00Z"},
        "compound": {"type": "Property", "value": {"street": "Main", "nested": {"n": [1, 2]}}},
        "arrayProp": {"type": "Property", "value": [1, "two", true]},
        "rel": {"type": "Relationship", "object": "urn:ngsi-ld:Other:1", "objectType": "Other"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Bridge", "fr": "Pont", "@none": "Brug"}},
        "doc": {"type": "JsonProperty", "json": {"speed": 1, "type": "raw", "@id": "x"}},
        "category": {"type": "VocabProperty", "vocab": "Commercial"},
        "readings": {"type": "ListProperty", "valueList": [3, 1, 2]},
        "path": {"type": "ListRelationship", "objectList": [{"object": "urn:a:1"}, {"object": "urn:a:2"}]},
    })
}

#[tokio::test]
async fn every_kind_round_trips_in_normalized_form() {
    let s = Server::start().await;
    s.create(every_kind()).await;
    assert_eq!(s.entity(ID, "").await, every_kind());
}

#[tokio::test]
async fn every_kind_in_concise_form() {
    let s = Server::start().await;
    s.create(every_kind()).await;
    let expected = json!({
        "id": ID, "type": "Thing",
        "prop": {"value": 7.5, "unitCode": "CEL", "observedAt": "2024-05-01T08:30:00Z"},
        "compound": {"value": {"street": "Main", "nested": {"n": [1, 2]}}},
        "arrayProp": [1, "two", true],
        "rel": {"object": "urn:ngsi-ld:Other:1", "objectType": "Other"},
        "location": {"type": "Point", "coordinates": [2.35, 48.85]},
        "name": {"languageMap": {"en": "Bridge", "fr": "Pont", "@none": "Brug"}},
        "doc": {"json": {"speed": 1, "type": "raw", "@id": "x"}},
        "category": {"vocab": "Commercial"},
        "readings": {"valueList": [3, 1, 2]},
        "path": {"objectList": [{"object": "urn:a:1"}, {"object": "urn:a:2"}]},
    });
    let concise = s.entity(ID, "options=concise").await;
    assert_eq!(concise, expected);
    // Concise input (bare objectList URIs included) gives the same entity.
    let mut input = expected.clone();
    input["id"] = json!("urn:ngsi-ld:Thing:2");
    input["path"] = json!({"objectList": ["urn:a:1", "urn:a:2"]});
    s.create(input).await;
    let mut back = s.entity("urn:ngsi-ld:Thing:2", "").await;
    back["id"] = json!(ID);
    assert_eq!(back, every_kind());
}

#[tokio::test]
async fn every_kind_in_key_values_form() {
    let s = Server::start().await;
    s.create(every_kind()).await;
    let kv = s.entity(ID, "options=keyValues").await;
    assert_eq!(kv["prop"], 7.5);
    assert_eq!(
        kv["compound"],
        json!({"street": "Main", "nested": {"n": [1, 2]}})
    );
    assert_eq!(kv["rel"], "urn:ngsi-ld:Other:1");
    assert_eq!(
        kv["location"],
        json!({"type": "Point", "coordinates": [2.35, 48.85]})
    );
    // JsonProperty, LanguageProperty and VocabProperty keep their member
    // (clause 4.5.4; ETSI 454_01), so that the keys of the value are not
    // read as terms.
    assert_eq!(
        kv["doc"],
        json!({"json": {"speed": 1, "type": "raw", "@id": "x"}})
    );
    assert_eq!(kv["category"], json!({"vocab": "Commercial"}));
    assert_eq!(kv["readings"], json!([3, 1, 2]));
    assert_eq!(kv["path"], json!(["urn:a:1", "urn:a:2"]));
    assert_eq!(
        kv["name"],
        json!({"languageMap": {"en": "Bridge", "fr": "Pont", "@none": "Brug"}})
    );
}

#[tokio::test]
async fn lang_picks_one_string_of_a_language_property() {
    let s = Server::start().await;
    s.create(every_kind()).await;
    let cases = [
        (
            "lang=fr",
            json!({"type": "Property", "value": "Pont", "lang": "fr"}),
        ),
        (
            "lang=en-GB",
            json!({"type": "Property", "value": "Bridge", "lang": "en"}),
        ),
        (
            "lang=de",
            json!({"type": "Property", "value": "Brug", "lang": "@none"}),
        ),
        // `*` is any language: the @none entry, else the first (ETSI
        // 018_07_03).
        (
            "lang=*",
            json!({"type": "Property", "value": "Brug", "lang": "@none"}),
        ),
        // q-weights rank the ranges, whatever their order (clause 4.15).
        (
            "lang=de;q=0.1,fr;q=0.2,en;q=0.9",
            json!({"type": "Property", "value": "Bridge", "lang": "en"}),
        ),
        // A range with weight 0 is never chosen.
        (
            "lang=fr;q=0,en",
            json!({"type": "Property", "value": "Bridge", "lang": "en"}),
        ),
        // A list is in order of preference: the first tag that matches wins.
        (
            "lang=de,fr,en",
            json!({"type": "Property", "value": "Pont", "lang": "fr"}),
        ),
        (
            "lang=nl,de",
            json!({"type": "Property", "value": "Brug", "lang": "@none"}),
        ),
    ];
    for (params, expected) in cases {
        assert_eq!(s.entity(ID, params).await["name"], expected, "{params}");
    }
    assert_eq!(
        s.entity(ID, "lang=fr&options=keyValues").await["name"],
        "Pont"
    );
    assert_eq!(
        s.entity(ID, "lang=fr&options=concise").await["name"],
        json!({"value": "Pont", "lang": "fr"})
    );
}

#[tokio::test]
async fn json_property_keys_are_never_expanded_or_compacted() {
    let s = Server::start().await;
    let ctx = json!({"speed": "https://example.org/speed"});
    let r = s
        .req(reqwest::Method::POST, "/entities")
        .ld(&json!({
            "id": ID, "type": "Thing",
            "doc": {"type": "JsonProperty", "json": {"speed": 1, "https://example.org/speed": 2}},
            "@context": [ctx],
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let e = s.entity(ID, "").await;
    assert_eq!(
        e["doc"],
        json!({"type": "JsonProperty", "json": {"speed": 1, "https://example.org/speed": 2}})
    );
}

#[tokio::test]
async fn multi_instance_attributes_with_dataset_ids() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Thing",
        "temp": [
            {"type": "Property", "value": 20},
            {"type": "Property", "value": 21, "datasetId": "urn:ds:a"},
            {"type": "Property", "value": 22, "datasetId": "urn:ds:b"},
        ],
    }))
    .await;
    let e = s.entity(ID, "").await;
    assert_eq!(
        e["temp"],
        json!([
            {"type": "Property", "value": 20},
            {"type": "Property", "value": 21, "datasetId": "urn:ds:a"},
            {"type": "Property", "value": 22, "datasetId": "urn:ds:b"},
        ])
    );
    assert_eq!(
        s.entity(ID, "options=keyValues").await["temp"],
        json!({"dataset": {"@none": 20, "urn:ds:a": 21, "urn:ds:b": 22}})
    );
    assert_eq!(
        s.entity(ID, "datasetId=urn:ds:b").await["temp"],
        json!({"type": "Property", "value": 22, "datasetId": "urn:ds:b"})
    );
    assert_eq!(
        s.entity(ID, "datasetId=@none").await["temp"],
        json!({"type": "Property", "value": 20})
    );
    // "@none" names the default instance and is never echoed.
    s.create(json!({"id": "urn:x:none", "type": "T", "p": {"type": "Property", "value": 1, "datasetId": "@none"}})).await;
    assert_eq!(
        s.entity("urn:x:none", "").await["p"],
        json!({"type": "Property", "value": 1})
    );
    // Two default instances, or two equal datasetIds, are rejected.
    for dup in [
        json!([{"type": "Property", "value": 1}, {"type": "Property", "value": 2}]),
        json!([{"type": "Property", "value": 1, "datasetId": "urn:d"}, {"type": "Property", "value": 2, "datasetId": "urn:d"}]),
        json!([{"type": "Property", "value": 1, "datasetId": "@none"}, {"type": "Property", "value": 2}]),
    ] {
        let r = s
            .post(
                "/entities",
                &json!({"id": "urn:x:dup", "type": "T", "p": dup}),
            )
            .await;
        r.problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn sub_attributes_nest_and_render_in_every_form() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Thing",
        "speed": {
            "type": "Property", "value": 50, "observedAt": "2024-05-01T08:30:00Z",
            "accuracy": {"type": "Property", "value": 0.9, "unitCode": "P1",
                         "method": {"type": "Property", "value": "radar"}},
            "measuredBy": {"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1"},
        },
    }))
    .await;
    let e = s.entity(ID, "").await;
    assert_eq!(
        e["speed"]["accuracy"]["method"],
        json!({"type": "Property", "value": "radar"})
    );
    assert_eq!(
        e["speed"]["measuredBy"],
        json!({"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1"})
    );
    let c = s.entity(ID, "options=concise").await;
    assert_eq!(
        c["speed"],
        json!({"value": 50, "observedAt": "2024-05-01T08:30:00Z",
               "accuracy": {"value": 0.9, "unitCode": "P1", "method": "radar"},
               "measuredBy": {"object": "urn:ngsi-ld:Sensor:1"}})
    );
    assert_eq!(s.entity(ID, "options=keyValues").await["speed"], 50);
}

#[tokio::test]
async fn geometry_given_as_a_string_is_served_as_an_object() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Thing",
        "location": {"type": "GeoProperty", "value": "{\"type\":\"Point\",\"coordinates\":[1,2]}"},
    }))
    .await;
    assert_eq!(
        s.entity(ID, "").await["location"]["value"],
        json!({"type": "Point", "coordinates": [1, 2]})
    );
    let r = s
        .post(
            "/entities",
            &json!({"id": "urn:x:gc", "type": "T", "location": {"type": "GeoProperty", "value":
                {"type": "GeometryCollection", "geometries": []}}}),
        )
        .await;
    r.problem(400, "BadRequestData");
}

#[tokio::test]
async fn values_with_markup_characters_are_stored_verbatim() {
    let s = Server::start().await;
    let text = "<b>\"quoted\" 'single' a=b; (x) 中文 ✓</b>";
    s.create(json!({"id": ID, "type": "Thing", "text": text}))
        .await;
    let r = s.get(&format!("/entities/{ID}?options=keyValues")).await;
    assert_eq!(r.body["text"], text);
    assert!(
        r.text.contains("<b>") && r.text.contains("中文"),
        "{}",
        r.text
    );
}

/// Numbers come back as they were sent, digit for digit (each written in
/// the shortest form of its double): serde_json's default float parser
/// rounds `-116.83361554809613` to the neighbouring double, which reads
/// back as `-116.83361554809612`. In a value and in coordinates,
/// through create, retrieve, query and the temporal representation. The
/// bodies are compared as text, so no JSON parser on the test's side can
/// hide a difference.
#[tokio::test]
async fn numbers_read_back_digit_for_digit() {
    let s = Server::start().await;
    let body = r#"{"id": "urn:ngsi-ld:Thing:f", "type": "Thing",
        "v": {"type": "Property", "value": -116.83361554809613},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-116.83361554809613, 23.129163292975672]}}}"#;
    let r = s
        .req(reqwest::Method::POST, "/entities")
        .body("application/json", body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for path in [
        "/entities/urn:ngsi-ld:Thing:f",
        "/entities?type=Thing&options=keyValues",
        "/temporal/entities/urn:ngsi-ld:Thing:f",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        for digits in ["-116.83361554809613", "23.129163292975672"] {
            assert!(r.text.contains(digits), "{path} lost {digits}: {}", r.text);
        }
    }
}

/// The concise form stays lossless for a multi-attribute: every instance in
/// the array is an object with its value (clause 4.5.2.3), so the answer
/// posted back gives the same entity.
#[tokio::test]
async fn concise_multi_attributes_round_trip() {
    let s = Server::start().await;
    let entity = json!({
        "id": "urn:ngsi-ld:Gauge:1", "type": "Gauge",
        "level": [
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:b"},
        ],
    });
    s.create(entity.clone()).await;
    let concise = s.entity("urn:ngsi-ld:Gauge:1", "options=concise").await;
    assert_eq!(
        concise["level"],
        json!([{"value": 1}, {"value": 2, "datasetId": "urn:ngsi-ld:Dataset:b"}]),
        "{concise}"
    );
    let mut again = concise.clone();
    again["id"] = json!("urn:ngsi-ld:Gauge:2");
    s.create(again).await;
    let mut back = s.entity("urn:ngsi-ld:Gauge:2", "").await;
    back["id"] = json!("urn:ngsi-ld:Gauge:1");
    assert_eq!(back, entity);
}

/// The NGSI-LD Null is refused where nothing can be deleted, in the
/// concise form too (clause 5.5.4), and `["urn:ngsi-ld:null"]` as an
/// objectList deletes a ListRelationship (clause 4.5.22.3).
#[tokio::test]
async fn the_null_in_concise_form_and_in_lists() {
    let s = Server::start().await;
    s.post(
        "/entities",
        &json!({"id": "urn:ngsi-ld:N:1", "type": "N", "a": NULL}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        "/entities",
        &json!({"id": "urn:ngsi-ld:N:1", "type": "N", "a": {"value": 1, "unitCode": NULL}}),
    )
    .await
    .problem(400, "BadRequestData");
    s.create(json!({
        "id": "urn:ngsi-ld:N:1", "type": "N",
        "a": 1,
        "path": {"type": "ListRelationship", "objectList": [{"object": "urn:a:1"}]},
        "hops": {"type": "ListRelationship", "objectList": [{"object": "urn:a:2"}]},
    }))
    .await;
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/entities/urn:ngsi-ld:N:1/attrs",
            json!({"b": NULL}),
        ),
        (
            reqwest::Method::PUT,
            "/entities/urn:ngsi-ld:N:1",
            json!({"type": "N", "c": NULL}),
        ),
    ] {
        s.send_json(method, path, &body)
            .await
            .problem(400, "BadRequestData");
    }
    s.patch(
        "/entities/urn:ngsi-ld:N:1/attrs",
        &json!({"path": {"type": "ListRelationship", "objectList": [NULL]}}),
    )
    .await
    .no_content();
    s.patch(
        "/entities/urn:ngsi-ld:N:1",
        &json!({"hops": {"objectList": [NULL]}}),
    )
    .await
    .no_content();
    let e = s.entity("urn:ngsi-ld:N:1", "").await;
    assert!(e.get("path").is_none() && e.get("hops").is_none(), "{e}");
    assert_eq!(e["a"]["value"], 1);
}
