//! Create, retrieve (forms and projections), merge, replace, delete and
//! purge of entities.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Server, enc, sorted, vehicle};

const ID: &str = "urn:ngsi-ld:Vehicle:A1";

#[tokio::test]
async fn create_answers_201_with_location_and_no_body() {
    let s = Server::start().await;
    let r = s.post("/entities", &vehicle(ID, 10)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.header("location")
            .is_some_and(|l| l.contains(ID) && l.starts_with("/ngsi-ld/v1/entities/"))
    );
    assert!(r.text.is_empty());
    // Trailing slash form of the suite.
    let r = s
        .post("/entities/", &vehicle("urn:ngsi-ld:Vehicle:A2", 1))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let e = s.entity(ID, "").await;
    assert_eq!(e["speed"], json!({"type": "Property", "value": 10}));
}

#[tokio::test]
async fn create_of_an_existing_entity_is_409_already_exists() {
    let s = Server::start().await;
    s.create(vehicle(ID, 10)).await;
    let r = s.post("/entities", &vehicle(ID, 20)).await;
    r.problem(409, "AlreadyExists");
    assert_eq!(s.entity(ID, "").await["speed"]["value"], 10);
}

/// Every rejected create is a 400 of the given type, and creates nothing.
#[tokio::test]
async fn invalid_creates_are_rejected_and_create_nothing() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:T:bad";
    let with = |extra: Value| {
        let mut e = json!({"id": id, "type": "T"});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("application/json", "{\"id\": ".into(), "InvalidRequest"),
        ("application/json", "".into(), "InvalidRequest"),
        ("application/json", "   ".into(), "InvalidRequest"),
        (
            "application/json",
            json!({"id": "not a uri", "type": "T"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"id": "urn:x y", "type": "T"}).to_string(),
            "BadRequestData",
        ),
        // Invisible and bidirectional-control characters hide what an id
        // really is (zero width space, right-to-left override, BOM).
        (
            "application/json",
            json!({"id": "urn:ngsi-ld:T:\u{200B}bad", "type": "T"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"id": "urn:ngsi-ld:T:\u{202E}bad", "type": "T"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"id": "urn:ngsi-ld:T:bad\u{FEFF}", "type": "T"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"type": "T"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"id": id}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"id": id, "type": "type"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!({"id": id, "type": "1abc"}).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            json!([{"id": id, "type": "T"}]).to_string(),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": {"type": "Property"}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": {"type": "Property", "value": null}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": null})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"r": {"type": "Relationship", "object": "no uri"}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"r": {"type": "Relationship"}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"l": {"type": "LanguageProperty"}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": {"type": "Weird", "value": 1}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"location": {"type": "Property", "value": 1}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"g": {"type": "GeoProperty", "value": {"type": "Point"}}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(
                json!({"p": {"type": "Property", "value": 1, "observedAt": "2024-01-01T00:00:00+02:00"}}),
            ),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": {"type": "Property", "value": "urn:ngsi-ld:null"}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": {"type": "Property", "value": {"a": "urn:ngsi-ld:null"}}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"datasetId": {"type": "Property", "value": 1}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"observedAt": {"type": "Property", "value": 1}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"p": {"type": "Property", "value": 1, "@context": {}}})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"scope": "no-slash"})),
            "BadRequestData",
        ),
        (
            "application/json",
            with(json!({"@context": "https://example.org/ctx.jsonld"})),
            "BadRequestData",
        ),
        (
            "application/ld+json",
            json!({"id": id, "type": "T"}).to_string(),
            "BadRequestData",
        ),
        // A second attribute is fine, the first is bad: still nothing created.
        (
            "application/json",
            with(json!({"ok": 1, "p": {"type": "Property"}})),
            "BadRequestData",
        ),
    ];
    // Members that an attribute of a kind shall never have (clauses
    // 4.5.2.2, 4.5.3.2, 4.5.21, 4.5.24; ETSI 452_01, 453_01, 4522_01_03,
    // 4524_01, 452_03_02/03, 5232_01_02).
    let mut cases = cases;
    for attr in [
        json!({"type": "Property", "value": 1, "object": "urn:o:1"}),
        json!({"type": "Property", "value": 1, "languageMap": {"en": "x"}}),
        json!({"type": "Property", "value": 1, "valueList": [1]}),
        json!({"type": "Property", "value": 1, "previousValue": 0}),
        json!({"type": "Property", "value": 1, "entityIdSealed": "urn:x"}),
        json!({"type": "Relationship", "object": "urn:o:1", "unitCode": "MTR"}),
        json!({"type": "Relationship", "object": "urn:o:1", "value": 42}),
        json!({"type": "Relationship", "object": "urn:o:1", "previousObject": "urn:o:0"}),
        json!({"type": "ListProperty", "valueList": [1.2], "value": 3}),
        json!({"type": "JsonProperty", "json": {"a": 1}, "unitCode": "MTR"}),
        json!({"type": "JsonProperty", "json": {"a": 1}, "value": 1}),
        json!({"type": "JsonProperty", "json": 5}),
        json!({"type": "LanguageProperty", "languageMap": {"en": "x"}, "valueType": "xsd:string"}),
    ] {
        cases.push((
            "application/json",
            with(json!({"p": attr})),
            "BadRequestData",
        ));
    }
    for proof in [
        json!({"type": "Property", "value": "not-a-proof-object"}),
        json!({"type": "Property", "value": {"type": "DataIntegrityProof"}, "entityTypeSealed": 42}),
    ] {
        cases.push((
            "application/json",
            with(json!({"ngsildproof": proof})),
            "BadRequestData",
        ));
    }
    for (ct, body, kind) in cases {
        // An empty body gets no Content-Length from the client otherwise.
        let r = s
            .req(Method::POST, "/entities")
            .header("content-length", &body.len().to_string())
            .body(ct, body.clone())
            .send()
            .await;
        assert_eq!(r.status, 400, "{ct} {body}: {}", r.text);
        r.problem(400, kind);
        let get = s.get(&format!("/entities/{}", enc(id))).await;
        assert_eq!(get.status, 404, "created by {body}");
    }
}

#[tokio::test]
async fn optional_attribute_members_are_accepted() {
    let s = Server::start().await;
    // valueType is a legal member (ETSI 452_01_06, 5232_01_01) and
    // objectType too (453_01_05); a sub-attribute may be named like the
    // output members' prefix.
    s.create(json!({
        "id": "urn:ngsi-ld:T:opt", "type": "T",
        "speed": {"type": "Property", "value": 1, "valueType": "xsd:double", "previousOwner": "x"},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "x"}, "valueType": "langString"},
        "parked": {"type": "Relationship", "object": "urn:o:1", "objectType": "Parking"},
    }))
    .await;
    let e = s.entity("urn:ngsi-ld:T:opt", "").await;
    assert_eq!(e["speed"]["previousOwner"]["value"], "x", "{e}");
    assert_eq!(e["parked"]["objectType"], "Parking", "{e}");
}

#[tokio::test]
async fn at_id_and_at_type_are_accepted_and_answered_as_id_and_type() {
    let s = Server::start().await;
    s.create(json!({"@id": ID, "@type": "Vehicle", "speed": 3}))
        .await;
    let e = s.entity(ID, "").await;
    assert_eq!(
        e,
        json!({"id": ID, "type": "Vehicle", "speed": {"type": "Property", "value": 3}})
    );
}

#[tokio::test]
async fn retrieve_forms() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Vehicle",
        "speed": {"type": "Property", "value": 55, "unitCode": "KMH", "observedAt": "2024-05-01T08:30:00Z"},
        "brandName": {"type": "Property", "value": "Mercedes"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
        "meta": {"type": "Property", "value": {"a": 1}},
    }))
    .await;
    let normalized = json!({
        "id": ID, "type": "Vehicle",
        "speed": {"type": "Property", "value": 55, "unitCode": "KMH", "observedAt": "2024-05-01T08:30:00Z"},
        "brandName": {"type": "Property", "value": "Mercedes"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
        "meta": {"type": "Property", "value": {"a": 1}},
    });
    let concise = json!({
        "id": ID, "type": "Vehicle",
        "speed": {"value": 55, "unitCode": "KMH", "observedAt": "2024-05-01T08:30:00Z"},
        "brandName": "Mercedes",
        "owner": {"object": "urn:ngsi-ld:Person:1"},
        "meta": {"value": {"a": 1}},
    });
    let key_values = json!({
        "id": ID, "type": "Vehicle", "speed": 55, "brandName": "Mercedes",
        "owner": "urn:ngsi-ld:Person:1", "meta": {"a": 1},
    });
    let cases = [
        ("", &normalized),
        ("options=normalized", &normalized),
        ("format=normalized", &normalized),
        ("options=concise", &concise),
        ("format=concise", &concise),
        ("options=keyValues", &key_values),
        ("options=simplified", &key_values),
        ("format=simplified", &key_values),
        ("options=concise,keyValues", &key_values),
        ("format=concise&options=keyValues", &concise),
    ];
    for (params, expected) in cases {
        assert_eq!(&s.entity(ID, params).await, expected, "{params}");
    }
    // Concise output read back as input gives the same entity.
    let mut copy = concise.clone();
    copy["id"] = json!("urn:ngsi-ld:Vehicle:copy");
    s.create(copy).await;
    let mut back = s.entity("urn:ngsi-ld:Vehicle:copy", "").await;
    back["id"] = json!(ID);
    assert_eq!(back, normalized);
}

#[tokio::test]
async fn sys_attrs_are_shown_on_request_only() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let plain = s.entity(ID, "").await;
    assert!(plain.get("createdAt").is_none() && plain["speed"].get("createdAt").is_none());
    let e = s.entity(ID, "options=sysAttrs").await;
    for v in [
        &e["createdAt"],
        &e["modifiedAt"],
        &e["speed"]["createdAt"],
        &e["speed"]["modifiedAt"],
    ] {
        let t = v.as_str().unwrap_or_else(|| panic!("no timestamp in {e}"));
        assert!(t.ends_with('Z') && t.len() >= 20, "{t}");
    }
    let kv = s.entity(ID, "options=keyValues,sysAttrs").await;
    assert!(kv.get("createdAt").is_none(), "{kv}");
    let c = s.entity(ID, "options=concise,sysAttrs").await;
    assert!(
        c["speed"]["createdAt"].is_string() && c["speed"]["value"] == 1,
        "{c}"
    );
    // modifiedAt moves with an update; createdAt does not.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.patch(&format!("/entities/{ID}/attrs"), &json!({"speed": 2}))
        .await
        .no_content();
    let after = s.entity(ID, "options=sysAttrs").await;
    assert_eq!(after["createdAt"], e["createdAt"]);
    assert_eq!(after["speed"]["createdAt"], e["speed"]["createdAt"]);
    assert!(
        after["modifiedAt"].as_str() > e["modifiedAt"].as_str(),
        "{after}"
    );
    assert!(after["speed"]["modifiedAt"].as_str() > e["speed"]["modifiedAt"].as_str());
}

#[tokio::test]
async fn retrieve_projections() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let names = |v: Value| sorted(v.as_object().unwrap().keys().cloned().collect());
    let cases: [(&str, &[&str]); 6] = [
        ("attrs=speed", &["id", "speed", "type"]),
        (
            "attrs=speed,brandName",
            &["brandName", "id", "speed", "type"],
        ),
        ("pick=id,speed", &["id", "speed"]),
        ("pick=type", &["type"]),
        ("omit=speed,location", &["brandName", "id", "type"]),
        ("omit=id", &["brandName", "location", "speed", "type"]),
    ];
    for (params, expected) in cases {
        assert_eq!(names(s.entity(ID, params).await), expected, "{params}");
    }
    let r = s.get(&format!("/entities/{ID}?pick=id&omit=speed")).await;
    r.problem(400, "BadRequestData");
}

/// Retrieve Entity answers ResourceNotFound when the entity has none of
/// the attributes asked for with attrs (ETSI 018_03_02), or when pick/omit
/// leave nothing (ETSI 018_19); attrs does not go with pick or omit, nor
/// name entity members (ETSI 018_18_02/03).
#[tokio::test]
async fn retrieve_finds_nothing_when_nothing_asked_for_is_there() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    for params in [
        "attrs=nothing",
        "attrs=nothing,nowhere",
        "pick=nothing",
        "omit=id,type,speed,brandName,location",
    ] {
        s.get(&format!("/entities/{ID}?{params}"))
            .await
            .problem(404, "ResourceNotFound");
    }
    assert_eq!(
        s.entity(ID, "attrs=nothing,speed&options=keyValues").await,
        json!({"id": ID, "type": "Vehicle", "speed": 1})
    );
    for params in [
        "pick=speed&attrs=speed",
        "omit=speed&attrs=speed",
        "attrs=id,speed",
    ] {
        s.get(&format!("/entities/{ID}?{params}"))
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn retrieve_errors() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    s.get("/entities/urn:ngsi-ld:Vehicle:none")
        .await
        .problem(404, "ResourceNotFound");
    s.get("/entities/notauri")
        .await
        .problem(400, "BadRequestData");
    // Unknown options and formats are InvalidRequest (ETSI 018_16), checked
    // before the entity is looked up.
    for params in [
        "options=bogus",
        "format=bogus",
        "options=keyValues,bogus",
        "format=keyValues&options=bogus",
    ] {
        s.get(&format!("/entities/urn:ngsi-ld:Vehicle:none?{params}"))
            .await
            .problem(400, "InvalidRequest");
    }
    // The type selector of retrieve.
    assert_eq!(
        s.get(&format!("/entities/{ID}?type=Vehicle")).await.status,
        200
    );
    s.get(&format!("/entities/{ID}?type=Car"))
        .await
        .problem(404, "ResourceNotFound");
}

/// The NGSI-LD Null in a merge deletes what is there; in a new attribute
/// or instance there is nothing to delete, and it is never stored. An
/// untyped object with an instance's members but no value is a Property
/// without its value, not a compound value that would overwrite the
/// default instance (found by a model-based test): a merge merges it into
/// the instance it names (clause 5.5.12), other writes refuse it.
#[tokio::test]
async fn a_merge_never_stores_the_null_and_instance_members_are_no_value() {
    let s = Server::start().await;
    let ngsi_null = json!({"type": "Property", "value": "urn:ngsi-ld:null"});
    s.create(json!({"id": "urn:x:1", "type": "T", "a": {"type": "Property", "value": 1}}))
        .await;
    let r = s
        .patch(
            "/entities/urn:x:1",
            &json!({"b": {"type": "Property", "value": 2, "sp": ngsi_null.clone(),
                          "kept": {"type": "Property", "value": 3, "gone": ngsi_null.clone()}}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "/entityOperations/merge",
            &json!([{"id": "urn:x:1", "type": "T",
                     "d": {"type": "Property", "value": 1, "sp": ngsi_null}}]),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = s.entity("urn:x:1", "").await;
    assert_eq!(e["b"]["value"], 2, "{e}");
    assert_eq!(e["b"].get("sp"), None, "{e}");
    assert_eq!(e["b"]["kept"]["value"], 3, "{e}");
    assert_eq!(e["b"]["kept"].get("gone"), None, "{e}");
    assert_eq!(e["d"].get("sp"), None, "{e}");

    s.create(json!({"id": "urn:x:2", "type": "T", "a": [
        {"type": "Property", "value": 1},
        {"type": "Property", "value": 5, "datasetId": "urn:ds:1"}]}))
        .await;
    let fragment = json!({"observedAt": "2024-01-01T00:00:00Z", "datasetId": "urn:ds:1"});
    s.patch("/entities/urn:x:2", &json!({"a": fragment}))
        .await
        .no_content();
    let r = s
        .post(
            "/entityOperations/merge",
            &json!([{"id": "urn:x:2", "a": {"type": "Property", "unitCode": "MTR",
                                          "accuracy": {"type": "Property", "value": 0.5}}}]),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = s.entity("urn:x:2", "").await;
    let a = e["a"]
        .as_array()
        .unwrap_or_else(|| panic!("two instances: {e}"));
    let default = a.iter().find(|i| i.get("datasetId").is_none()).unwrap();
    let ds1 = a.iter().find(|i| i["datasetId"] == "urn:ds:1").unwrap();
    assert_eq!(
        (
            &default["value"],
            &default["unitCode"],
            &default["accuracy"]["value"]
        ),
        (&json!(1), &json!("MTR"), &json!(0.5)),
        "{e}"
    );
    assert_eq!(
        (&ds1["value"], &ds1["observedAt"]),
        (&json!(5), &json!("2024-01-01T00:00:00Z")),
        "{e}"
    );
    // With nothing to merge into, it is refused.
    let before = s.entity("urn:x:2", "").await;
    s.patch(
        "/entities/urn:x:2",
        &json!({"a": {"observedAt": "2024-01-01T00:00:00Z", "datasetId": "urn:ds:9"}}),
    )
    .await
    .problem(400, "BadRequestData");
    s.patch(
        "/entities/urn:x:2",
        &json!({"a": {"value": 2, "accuracy": {"unitCode": "MTR"}, "precision": {"unitCode": "MTR"}}}),
    )
    .await
    .problem(400, "BadRequestData");
    let r = s
        .post(
            "/entityOperations/merge",
            &json!([{"id": "urn:x:2", "b": {"observedAt": "2024-01-01T00:00:00Z"}}]),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["error"]["type"], "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
        "{}",
        r.text
    );
    s.patch(
        "/entities/urn:x:2/attrs",
        &json!({"a": {"unitCode": "MTR", "datasetId": "urn:ds:7"}}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        "/entities",
        &json!({"id": "urn:x:3", "type": "T", "a": {"observedAt": "2024-01-01T00:00:00Z"}}),
    )
    .await
    .problem(400, "BadRequestData");
    assert_eq!(s.entity("urn:x:2", "").await, before);
    // A compound value in concise form, with no instance members, is
    // still a compound value.
    s.create(json!({"id": "urn:x:4", "type": "T", "address": {"street": "Tiyu West Road"}}))
        .await;
    let e = s.entity("urn:x:4", "").await;
    assert_eq!(e["address"]["value"]["street"], "Tiyu West Road", "{e}");

    // The concise Null deletes a GeoProperty too (`location` must otherwise
    // be one), and the geo index forgets it.
    s.create(json!({"id": "urn:x:5", "type": "G",
                    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [113.3, 23.1]}}}))
        .await;
    let near =
        "type=G&georel=near%3BmaxDistance%3D%3D100&geometry=Point&coordinates=%5B113.3%2C23.1%5D";
    assert_eq!(s.ids(near).await, ["urn:x:5"]);
    let r = s
        .patch(
            "/entities/urn:x:5",
            &json!({"location": "urn:ngsi-ld:null"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.entity("urn:x:5", "").await.get("location"), None);
    assert!(s.ids(near).await.is_empty());
}

#[tokio::test]
async fn merge_entity_merges_adds_and_deletes_with_the_ngsi_ld_null() {
    let s = Server::start().await;
    s.create(json!({
        "id": ID, "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "accuracy": {"type": "Property", "value": 0.5}},
        "brandName": "Mercedes",
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
        "config": {"type": "Property", "value": {"a": 1, "b": 2, "c": 3}},
    }))
    .await;
    let r = s
        .patch(
            &format!("/entities/{ID}"),
            &json!({
                "speed": {"type": "Property", "value": 2, "observedAt": "2024-01-01T00:00:00Z"},
                "brandName": "urn:ngsi-ld:null",
                "owner": {"type": "Relationship", "object": "urn:ngsi-ld:null"},
                "color": "red",
                "config": {"type": "Property", "value": {"b": 20, "c": "urn:ngsi-ld:null"}},
            }),
        )
        .await;
    r.no_content();
    // `format` names the payload's form; anything else is refused, as on
    // a read.
    s.patch(
        &format!("/entities/{ID}?format=bogus"),
        &json!({"color": "blue"}),
    )
    .await
    .problem(400, "InvalidRequest");
    let e = s.entity(ID, "").await;
    assert_eq!(
        e,
        json!({
            "id": ID, "type": "Vehicle",
            "speed": {"type": "Property", "value": 2, "observedAt": "2024-01-01T00:00:00Z",
                      "accuracy": {"type": "Property", "value": 0.5}},
            "config": {"type": "Property", "value": {"a": 1, "b": 20}},
            "color": {"type": "Property", "value": "red"},
        })
    );
    // merge-patch+json is accepted too.
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}"))
        .body(
            "application/merge-patch+json",
            json!({"color": "blue"}).to_string(),
        )
        .send()
        .await;
    r.no_content();
    assert_eq!(s.entity(ID, "options=keyValues").await["color"], "blue");
    // Errors.
    s.patch("/entities/urn:ngsi-ld:Vehicle:none", &json!({"a": 1}))
        .await
        .problem(404, "ResourceNotFound");
    s.patch(
        &format!("/entities/{ID}"),
        &json!({"id": "urn:other", "a": 1}),
    )
    .await
    .problem(400, "BadRequestData");
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}"))
        .body("application/json", "{")
        .send()
        .await;
    r.problem(400, "InvalidRequest");
}

#[tokio::test]
async fn replace_entity_drops_attributes_not_given_and_keeps_created_at() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let before = s.entity(ID, "options=sysAttrs").await;
    let r = s
        .put(
            &format!("/entities/{ID}"),
            &json!({"type": "Car", "color": "red"}),
        )
        .await;
    r.no_content();
    let after = s.entity(ID, "options=sysAttrs").await;
    assert_eq!(after["createdAt"], before["createdAt"]);
    let e = s.entity(ID, "options=keyValues").await;
    assert_eq!(e, json!({"id": ID, "type": "Car", "color": "red"}));
    s.put(
        &format!("/entities/{ID}"),
        &json!({"id": ID, "type": "Car", "x": 1}),
    )
    .await
    .no_content();
    s.put(
        &format!("/entities/{ID}"),
        &json!({"id": "urn:x:other", "type": "Car"}),
    )
    .await
    .problem(400, "BadRequestData");
    s.put(&format!("/entities/{ID}"), &json!({"x": 1}))
        .await
        .problem(400, "BadRequestData");
    s.put(
        "/entities/urn:ngsi-ld:Vehicle:none",
        &json!({"type": "Car"}),
    )
    .await
    .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn delete_entity() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let r = s.delete(&format!("/entities/{ID}")).await;
    r.no_content();
    assert!(r.header("content-length").is_none(), "{:?}", r.headers);
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete("/entities/notauri")
        .await
        .problem(400, "BadRequestData");
    // The id can be created again.
    s.create(vehicle(ID, 2)).await;
    // The `type` selector: a different type means not found, and nothing is
    // deleted; the right type deletes.
    s.delete(&format!("/entities/{ID}?type=Building"))
        .await
        .problem(404, "ResourceNotFound");
    assert_eq!(s.get(&format!("/entities/{ID}")).await.status, 200);
    s.delete(&format!("/entities/{ID}?type=Vehicle"))
        .await
        .no_content();
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn purge_entities() {
    let s = Server::start().await;
    for (id, t) in [("urn:a:1", "A"), ("urn:a:2", "A"), ("urn:b:1", "B")] {
        s.create(json!({"id": id, "type": t, "x": 1, "y": 2, "z": 3}))
            .await;
    }
    s.delete("/entities?type=A&drop=x,y").await.no_content();
    assert_eq!(
        s.entity("urn:a:1", "options=keyValues").await,
        json!({"id": "urn:a:1", "type": "A", "z": 3})
    );
    s.delete("/entities?id=urn:b:1&keep=y").await.no_content();
    assert_eq!(
        s.entity("urn:b:1", "options=keyValues").await,
        json!({"id": "urn:b:1", "type": "B", "y": 2})
    );
    s.delete("/entities?type=A&q=z==3").await.no_content();
    assert_eq!(s.ids("type=A,B").await, ["urn:b:1"]);
    s.delete("/entities").await.problem(400, "BadRequestData");
    s.delete("/entities?type=B&keep=x&drop=y")
        .await
        .problem(400, "BadRequestData");
    s.delete("/entities?type=B&bogus=1")
        .await
        .problem(400, "InvalidRequest");
    assert_eq!(s.ids("type=B").await, ["urn:b:1"]);
    // Too wide: ids, an id pattern, system attributes only (clause
    // 5.6.21.4, ETSI 060_06); linked-entity terms (5621_01).
    for query in [
        "id=urn:b:1",
        "idPattern=.*",
        "attrs=createdAt",
        "q=modifiedAt%3E%222020-01-01T00:00:00Z%22",
        "type=B&q=owner%7Bname%7D==%22x%22",
        "type=B&attrs=owner%7Bname%7D",
    ] {
        s.delete(&format!("/entities?{query}"))
            .await
            .problem(400, "BadRequestData");
    }
    assert_eq!(s.ids("type=B").await, ["urn:b:1"]);
    // attrs names a non-system attribute; local=true alone purges all
    // (060_03_03).
    s.delete("/entities?attrs=nothing").await.no_content();
    assert_eq!(s.ids("type=B").await, ["urn:b:1"]);
    s.delete("/entities?local=true").await.no_content();
    assert!(s.ids("type=A,B").await.is_empty());
    // type=* purges every type, local implied (Table 6.4.3.3-1).
    for (id, t) in [("urn:a:3", "A"), ("urn:b:3", "B")] {
        s.create(json!({"id": id, "type": t, "x": 1})).await;
    }
    s.delete("/entities?type=*").await.no_content();
    assert!(s.ids("type=A,B").await.is_empty());
}

#[tokio::test]
async fn ids_with_reserved_characters_round_trip_through_location() {
    let s = Server::start().await;
    let id = "https://example.org/things/a?b=c#d";
    let r = s.post("/entities", &json!({"id": id, "type": "T"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").unwrap().to_string();
    let r = s
        .req(Method::GET, location.trim_start_matches("/ngsi-ld/v1"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{location}: {}", r.text);
    assert_eq!(r.body["id"], id);
}

#[tokio::test]
async fn merge_with_a_null_scope_removes_the_scope() {
    let s = Server::start().await;
    s.create(json!({"id": ID, "type": "Vehicle", "scope": ["/a", "/b"], "speed": 1}))
        .await;
    s.patch(&format!("/entities/{ID}"), &json!({"scope": "/c"}))
        .await
        .no_content();
    assert_eq!(s.entity(ID, "").await["scope"], "/c");
    s.patch(
        &format!("/entities/{ID}"),
        &json!({"scope": "urn:ngsi-ld:null"}),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity(ID, "options=keyValues").await,
        json!({"id": ID, "type": "Vehicle", "speed": 1})
    );
    // A null scope on create is refused.
    let r = s
        .post(
            "/entities",
            &json!({"id": "urn:x:s", "type": "T", "scope": "urn:ngsi-ld:null"}),
        )
        .await;
    r.problem(400, "BadRequestData");
}

#[tokio::test]
async fn system_attributes_in_input_are_not_taken() {
    let s = Server::start().await;
    s.create(json!({"id": ID, "type": "Vehicle", "createdAt": "2000-01-01T00:00:00Z",
                    "speed": {"type": "Property", "value": 1, "createdAt": "2000-01-01T00:00:00Z"}}))
        .await;
    let e = s.entity(ID, "options=sysAttrs").await;
    assert!(
        e["createdAt"]
            .as_str()
            .is_some_and(|t| !t.starts_with("2000")),
        "{e}"
    );
    assert!(
        e["speed"]["createdAt"]
            .as_str()
            .is_some_and(|t| !t.starts_with("2000")),
        "{e}"
    );
}

#[tokio::test]
async fn an_application_json_body_with_context_is_refused_on_every_write() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let ctx = json!({"@context": {"x": "https://x.example/x"}});
    let with = |mut v: Value| {
        v.as_object_mut()
            .unwrap()
            .extend(ctx.as_object().unwrap().clone());
        v
    };
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/entities/{ID}"),
            with(json!({"speed": 2})),
        ),
        (
            Method::PUT,
            format!("/entities/{ID}"),
            with(json!({"type": "Vehicle"})),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs"),
            with(json!({"speed": 2})),
        ),
        (
            Method::POST,
            format!("/entities/{ID}/attrs"),
            with(json!({"speed": 2})),
        ),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs/speed"),
            with(json!({"value": 2})),
        ),
        (
            Method::PUT,
            format!("/entities/{ID}/attrs/speed"),
            with(json!({"value": 2})),
        ),
    ] {
        s.send_json(method.clone(), &path, &body)
            .await
            .problem(400, "BadRequestData");
    }
    assert_eq!(s.entity(ID, "options=keyValues").await["speed"], 1);
    // The same bodies as ld+json are fine.
    let r = s
        .req(Method::PATCH, &format!("/entities/{ID}/attrs"))
        .ld(&with(json!({"speed": 3})))
        .send()
        .await;
    r.no_content();
    assert_eq!(s.entity(ID, "options=keyValues").await["speed"], 3);
}

#[tokio::test]
async fn an_earlier_version_is_answered_when_the_client_prefers_it() {
    // Clause 4.3.6.8: `Prefer: ngsi-ld=<version>` amends the entities of
    // Retrieve Entity and Query Entities to that version and names it in
    // Preference-Applied.
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Building:canton-tower";
    s.create(json!({
        "id": id,
        "type": ["Building", "Venue"],
        "scope": "/Guangzhou/Haizhu",
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Canton Tower", "zh": "广州塔"}},
        "category": {"type": "VocabProperty", "vocab": "tower"},
        "levels": {"type": "ListProperty", "valueList": [1, 2]},
        "street": {"type": "Relationship", "object": "urn:ngsi-ld:Street:yuejiang", "objectType": "Street"},
        "height": [
            {"type": "Property", "value": 604, "unitCode": "MTR", "datasetId": "urn:ngsi-ld:Dataset:total"},
            {"type": "Property", "value": 454, "unitCode": "MTR", "observedAt": "2026-11-27T00:00:00Z"}
        ]
    }))
    .await;
    let get = |path: String, prefer: &'static str| {
        let r = s.req(Method::GET, &path);
        async move {
            if prefer.is_empty() {
                r
            } else {
                r.header("Prefer", prefer)
            }
            .send()
            .await
        }
    };

    let r = get(format!("/entities/{id}"), "ngsi-ld=1.5").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("Preference-Applied"), Some("ngsi-ld=1.5"));
    let e = &r.body;
    assert_eq!(
        e["category"],
        json!({"type": "Property", "value": "tower"}),
        "{e}"
    );
    assert_eq!(
        e["levels"],
        json!({"type": "Property", "value": [1, 2]}),
        "{e}"
    );
    assert_eq!(
        e["street"],
        json!({"type": "Relationship", "object": "urn:ngsi-ld:Street:yuejiang"}),
        "{e}"
    );
    assert_eq!(
        e["name"]["type"], "LanguageProperty",
        "introduced in 1.4: {e}"
    );
    assert_eq!(e["scope"], "/Guangzhou/Haizhu");
    assert_eq!(e["height"].as_array().map(Vec::len), Some(2));

    // Version 1.0: one type, one instance (the default one), no scope, no
    // unitCode nor observedAt, no LanguageProperty.
    let r = get(
        format!("/entities/{id}"),
        "respond-async, NGSI-LD=\"1.0\";q=1",
    )
    .await;
    assert_eq!(r.header("Preference-Applied"), Some("ngsi-ld=1.0"));
    let e = &r.body;
    assert_eq!(e["type"], "Building", "{e}");
    assert!(e.get("scope").is_none(), "{e}");
    assert_eq!(
        e["height"],
        json!({"type": "Property", "value": 454}),
        "{e}"
    );
    assert_eq!(
        e["name"],
        json!({"type": "Property", "value": {"en": "Canton Tower", "zh": "广州塔"}}),
        "{e}"
    );

    // This broker's own version, and a later one, leave the entity alone.
    let native = get(format!("/entities/{id}"), "").await;
    assert_eq!(native.header("Preference-Applied"), None);
    for (prefer, applied) in [
        ("ngsi-ld=1.9", "ngsi-ld=1.9"),
        ("ngsi-ld=2.0", "ngsi-ld=1.9"),
    ] {
        let r = get(format!("/entities/{id}"), prefer).await;
        assert_eq!(r.header("Preference-Applied"), Some(applied));
        assert_eq!(r.body, native.body);
    }
    // Other preferences apply no version.
    let r = get(format!("/entities/{id}"), "respond-async").await;
    assert_eq!(r.header("Preference-Applied"), None);
    assert_eq!(r.body, native.body);

    // Queries (GET and POST) and the other representations too.
    let r = get(
        "/entities?type=Building&options=keyValues".into(),
        "ngsi-ld=1.7",
    )
    .await;
    assert_eq!(r.header("Preference-Applied"), Some("ngsi-ld=1.7"));
    assert_eq!(r.body[0]["levels"], json!([1, 2]), "{}", r.text);
    assert_eq!(r.body[0]["street"], "urn:ngsi-ld:Street:yuejiang");
    let r = s
        .req(Method::POST, "/entityOperations/query")
        .header("Prefer", "ngsi-ld=1.2")
        .json(&json!({"type": "Query", "entities": [{"type": "Building"}]}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("Preference-Applied"), Some("ngsi-ld=1.2"));
    assert_eq!(r.body[0]["type"], "Building", "{}", r.text);
    assert_eq!(r.body[0]["height"]["value"], 454);
}

/// A merge keeps the type of the attributes it merges into (clause
/// 5.6.17.4): a simplified value becomes a value of that kind, or is
/// refused; a new object keeps the Relationship's objectType (5.5.8
/// Example 1).
#[tokio::test]
async fn a_merge_keeps_the_type_of_what_it_merges_into() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Bus:merge";
    s.create(json!({"id": id, "type": "Bus",
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Line 1"}},
        "route": {"type": "Relationship", "object": "urn:ngsi-ld:Route:1", "objectType": "Route"},
        "stops": {"type": "ListProperty", "valueList": [1]},
        "fleet": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Bus:2"}]}}))
        .await;
    let path = format!("/entities/{}", enc(id));
    let r = s
        .patch(
            &path,
            &json!({"route": "urn:ngsi-ld:Route:9", "name": {"zh": "一号线"}, "stops": [5, 6],
                    "fleet": ["urn:ngsi-ld:Bus:3"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = s.entity(id, "").await;
    assert_eq!(
        e["route"],
        json!({"type": "Relationship", "object": "urn:ngsi-ld:Route:9", "objectType": "Route"}),
        "{e}"
    );
    assert_eq!(
        e["name"],
        json!({"type": "LanguageProperty", "languageMap": {"en": "Line 1", "zh": "一号线"}}),
        "{e}"
    );
    assert_eq!(
        e["stops"],
        json!({"type": "ListProperty", "valueList": [5, 6]}),
        "{e}"
    );
    assert_eq!(e["fleet"]["type"], "ListRelationship", "{e}");
    assert_eq!(
        e["fleet"]["objectList"],
        json!([{"object": "urn:ngsi-ld:Bus:3"}]),
        "{e}"
    );

    // A value that cannot be of the attribute's type is refused, whole.
    let before = s.entity(id, "").await;
    s.patch(&path, &json!({"route": 5, "stops": [7]}))
        .await
        .problem(400, "BadRequestData");
    assert_eq!(s.entity(id, "").await, before);

    // A partial update with a new object keeps the objectType.
    s.patch(
        &format!("{path}/attrs/route"),
        &json!({"object": "urn:ngsi-ld:Route:4"}),
    )
    .await
    .no_content();
    let e = s.entity(id, "").await;
    assert_eq!(e["route"]["object"], "urn:ngsi-ld:Route:4", "{e}");
    assert_eq!(e["route"]["objectType"], "Route", "{e}");
}

/// Merge Entity's common values (clause 5.6.17.4, Table 6.5.3.4-1):
/// `lang` says which text of a LanguageProperty a string replaces;
/// `observedAt` stamps the merged attributes that had an observedAt,
/// unless the fragment gives its own.
#[tokio::test]
async fn a_merge_takes_a_common_language_and_observed_at() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Bus:common";
    let t0 = "2026-11-27T07:00:00Z";
    s.create(json!({"id": id, "type": "Bus",
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Line 1", "zh": "一号线"}},
        "speed": {"type": "Property", "value": 30, "observedAt": t0},
        "load": {"type": "Property", "value": 0.5, "observedAt": t0},
        "seats": {"type": "Property", "value": 40}}))
        .await;
    let path = format!("/entities/{}", enc(id));
    let t1 = "2026-11-27T08:00:00Z";
    let r = s
        .patch(
            &format!("{path}?lang=zh&observedAt={t1}"),
            &json!({"name": "二号线", "speed": 35, "seats": 41,
                    "load": {"value": 0.7, "observedAt": "2026-11-27T07:59:00Z"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = s.entity(id, "").await;
    assert_eq!(
        e["name"]["languageMap"],
        json!({"en": "Line 1", "zh": "二号线"}),
        "{e}"
    );
    assert_eq!(e["speed"]["observedAt"], t1, "{e}");
    assert_eq!(e["load"]["observedAt"], "2026-11-27T07:59:00Z", "{e}");
    assert_eq!(e["seats"].get("observedAt"), None, "{e}");
    assert_eq!(e["seats"]["value"], 41, "{e}");
    for bad in ["observedAt=yesterday", "lang=*", "lang=en,zh"] {
        s.patch(&format!("{path}?{bad}"), &json!({"speed": 1}))
            .await
            .problem(400, "BadRequestData");
    }
}
