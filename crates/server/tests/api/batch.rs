//! Batch create, upsert, update, merge and delete, with the 201/204/207
//! bodies of docs/spec-notes.md §16.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Server, check_problem_texts, sorted, vehicle};

fn strings(v: &Value) -> Vec<String> {
    sorted(
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect(),
    )
}

/// Asserts a 207 BatchOperationResult: the success ids and the failed ids
/// with their error type.
#[track_caller]
fn check_result(r: &crate::support::Resp, success: &[&str], errors: &[(&str, &str)]) {
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(strings(&r.body["success"]), success, "{}", r.text);
    let got = r.body["errors"].as_array().unwrap();
    assert_eq!(got.len(), errors.len(), "{}", r.text);
    for (id, kind) in errors {
        let e = got
            .iter()
            .find(|e| e["entityId"] == *id)
            .unwrap_or_else(|| panic!("no error for {id}: {}", r.text));
        assert_eq!(
            e["error"]["type"],
            format!("https://uri.etsi.org/ngsi-ld/errors/{kind}")
        );
        check_problem_texts(&e["error"]);
    }
}

#[tokio::test]
async fn batch_create() {
    let s = Server::start().await;
    let r = s
        .post(
            "/entityOperations/create",
            &json!([vehicle("urn:b:1", 1), vehicle("urn:b:2", 2)]),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(strings(&r.body), ["urn:b:1", "urn:b:2"]);
    assert_eq!(s.entity("urn:b:2", "options=keyValues").await["speed"], 2);
    // One exists already, one is invalid, one is new: 207.
    let r = s
        .post(
            "/entityOperations/create",
            &json!([vehicle("urn:b:1", 9), {"id": "urn:b:bad", "type": "T", "p": {"type": "Property"}}, vehicle("urn:b:3", 3)]),
        )
        .await;
    check_result(
        &r,
        &["urn:b:3"],
        &[
            ("urn:b:1", "AlreadyExists"),
            ("urn:b:bad", "BadRequestData"),
        ],
    );
    assert_eq!(s.entity("urn:b:1", "options=keyValues").await["speed"], 1);
    s.get("/entities/urn:b:bad")
        .await
        .problem(404, "ResourceNotFound");
    // Every entity failing is still 207 (TP 043_01_04).
    let r = s
        .post("/entityOperations/create", &json!([vehicle("urn:b:1", 1)]))
        .await;
    check_result(&r, &[], &[("urn:b:1", "AlreadyExists")]);
}

#[tokio::test]
async fn batch_requests_that_are_invalid_as_a_whole() {
    let s = Server::start().await;
    for op in ["create", "upsert", "update", "merge", "delete"] {
        let path = format!("/entityOperations/{op}");
        for body in [
            json!([]),
            json!({"id": "urn:b:1"}),
            json!([null]),
            json!([vehicle("urn:b:1", 1), null]),
        ] {
            s.post(&path, &body).await.problem(400, "BadRequestData");
        }
        // Entities are objects; Batch Delete takes ids (strings).
        let wrong = if op == "delete" {
            json!(["urn:b:1", {"id": "urn:b:2"}])
        } else {
            json!([vehicle("urn:b:1", 1), 2])
        };
        s.post(&path, &wrong).await.problem(400, "BadRequestData");
        let r = s
            .req(Method::POST, &path)
            .body("application/json", "[{")
            .send()
            .await;
        r.problem(400, "InvalidRequest");
        let r = s
            .req(Method::POST, &path)
            .body("text/plain", "[]")
            .send()
            .await;
        assert_eq!(r.status, 415, "{op}");
    }
    s.get("/entities/urn:b:1")
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn batch_upsert_replace_and_update() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:b:1", "type": "T", "a": 1, "b": 2}))
        .await;
    // Mixed: 201 with only the new id.
    let r = s
        .post("/entityOperations/upsert", &json!([{"id": "urn:b:1", "type": "T", "a": 10}, {"id": "urn:b:2", "type": "T", "a": 1}]))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(strings(&r.body), ["urn:b:2"]);
    // Replace (the default): b is gone.
    assert_eq!(
        s.entity("urn:b:1", "options=keyValues").await,
        json!({"id": "urn:b:1", "type": "T", "a": 10})
    );
    // All existing: 204; update mode keeps the other attributes.
    let r = s
        .post("/entityOperations/upsert?options=update", &json!([{"id": "urn:b:1", "type": "T", "c": 3}, {"id": "urn:b:2", "type": "T", "a": 5}]))
        .await;
    r.no_content();
    assert_eq!(
        s.entity("urn:b:1", "options=keyValues").await,
        json!({"id": "urn:b:1", "type": "T", "a": 10, "c": 3})
    );
    assert_eq!(s.entity("urn:b:2", "options=keyValues").await["a"], 5);
    s.post(
        "/entityOperations/upsert?options=replace",
        &json!([{"id": "urn:b:2", "type": "T", "z": 0}]),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity("urn:b:2", "options=keyValues").await,
        json!({"id": "urn:b:2", "type": "T", "z": 0})
    );
    // The same id twice: applied in order, the last one wins.
    s.post(
        "/entityOperations/upsert",
        &json!([{"id": "urn:b:3", "type": "T", "v": 1}, {"id": "urn:b:3", "type": "T", "v": 2}]),
    )
    .await;
    assert_eq!(s.entity("urn:b:3", "options=keyValues").await["v"], 2);
    // A failure: 207.
    let r = s
        .post(
            "/entityOperations/upsert",
            &json!([{"id": "urn:b:4", "type": "T"}, {"id": "urn:b:5"}]),
        )
        .await;
    check_result(&r, &["urn:b:4"], &[("urn:b:5", "BadRequestData")]);
    s.post(
        "/entityOperations/upsert?options=bogus",
        &json!([{"id": "urn:b:4", "type": "T"}]),
    )
    .await
    .problem(400, "BadRequestData");
}

#[tokio::test]
async fn batch_update() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:b:1", "type": "T", "a": 1, "b": 2}))
        .await;
    s.create(json!({"id": "urn:b:2", "type": "T", "a": 1}))
        .await;
    s.post(
        "/entityOperations/update",
        &json!([{"id": "urn:b:1", "a": 10, "c": 3}, {"id": "urn:b:2", "type": "T", "a": 20}]),
    )
    .await
    .no_content();
    assert_eq!(
        s.entity("urn:b:1", "options=keyValues").await,
        json!({"id": "urn:b:1", "type": "T", "a": 10, "b": 2, "c": 3})
    );
    assert_eq!(s.entity("urn:b:2", "options=keyValues").await["a"], 20);
    let r = s
        .post(
            "/entityOperations/update",
            &json!([{"id": "urn:b:1", "a": 11}, {"id": "urn:b:9", "a": 1}]),
        )
        .await;
    check_result(&r, &["urn:b:1"], &[("urn:b:9", "ResourceNotFound")]);
    s.get("/entities/urn:b:9")
        .await
        .problem(404, "ResourceNotFound");
    // noOverwrite keeps existing attributes and adds new ones.
    let r = s
        .post(
            "/entityOperations/update?options=noOverwrite",
            &json!([{"id": "urn:b:1", "a": 99, "d": 4}]),
        )
        .await;
    // An entity whose attributes were kept is not fully updated: 207, the
    // entity in errors (clause 5.6.9, ETSI 005_02_01 and 005_02_03); its
    // new attributes are appended all the same.
    check_result(&r, &[], &[("urn:b:1", "AlreadyExists")]);
    let e = s.entity("urn:b:1", "options=keyValues").await;
    assert_eq!((e["a"].clone(), e["d"].clone()), (json!(11), json!(4)));
    // New types are added (ETSI 005_05).
    s.post(
        "/entityOperations/update",
        &json!([{"id": "urn:b:2", "type": ["T", "U"]}]),
    )
    .await
    .no_content();
    assert_eq!(s.entity("urn:b:2", "").await["type"], json!(["T", "U"]));
}

#[tokio::test]
async fn batch_merge() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:b:1", "type": "T", "a": 1, "b": 2, "c": {"type": "Property", "value": {"x": 1, "y": 2}}})).await;
    let r = s
        .post("/entityOperations/merge", &json!([{"id": "urn:b:1", "a": 10, "b": "urn:ngsi-ld:null", "n": 1, "c": {"value": {"y": 3}}}]))
        .await;
    r.no_content();
    assert_eq!(
        s.entity("urn:b:1", "options=keyValues").await,
        json!({"id": "urn:b:1", "type": "T", "a": 10, "c": {"x": 1, "y": 3}, "n": 1})
    );
    let r = s
        .post(
            "/entityOperations/merge",
            &json!([{"id": "urn:b:1", "a": 11}, {"id": "urn:b:none", "a": 1}]),
        )
        .await;
    check_result(&r, &["urn:b:1"], &[("urn:b:none", "ResourceNotFound")]);
}

#[tokio::test]
async fn batch_delete() {
    let s = Server::start().await;
    for id in ["urn:b:1", "urn:b:2", "urn:b:3"] {
        s.create(vehicle(id, 1)).await;
    }
    s.post("/entityOperations/delete", &json!(["urn:b:1", "urn:b:2"]))
        .await
        .no_content();
    s.get("/entities/urn:b:1")
        .await
        .problem(404, "ResourceNotFound");
    let r = s
        .post("/entityOperations/delete", &json!(["urn:b:3", "urn:b:9"]))
        .await;
    check_result(&r, &["urn:b:3"], &[("urn:b:9", "ResourceNotFound")]);
    let r = s
        .post("/entityOperations/delete", &json!(["urn:b:1"]))
        .await;
    check_result(&r, &[], &[("urn:b:1", "ResourceNotFound")]);
}

#[tokio::test]
async fn batch_with_per_entity_contexts() {
    let s = Server::start().await;
    let body = json!([
        {"id": "urn:b:1", "type": "Car", "speed": 1, "@context": {"Car": "https://a.example/Car"}},
        {"id": "urn:b:2", "type": "Car", "speed": 1, "@context": {"Car": "https://b.example/Car"}},
        {"id": "urn:b:3", "type": "Car"},
    ]);
    let r = s
        .req(Method::POST, "/entityOperations/create")
        .ld(&body)
        .send()
        .await;
    // The entity without @context fails alone.
    check_result(
        &r,
        &["urn:b:1", "urn:b:2"],
        &[("urn:b:3", "BadRequestData")],
    );
    assert_eq!(
        s.entity("urn:b:1", "").await["type"],
        "https://a.example/Car"
    );
    assert_eq!(
        s.entity("urn:b:2", "").await["type"],
        "https://b.example/Car"
    );
    // application/json entities cannot carry @context.
    let r = s
        .post(
            "/entityOperations/create",
            &json!([{"id": "urn:b:4", "type": "T", "@context": {}}]),
        )
        .await;
    check_result(&r, &[], &[("urn:b:4", "BadRequestData")]);
}
