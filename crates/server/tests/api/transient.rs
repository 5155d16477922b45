//! Transient storage (clause 4.22): `expiresAt` on entities and attribute
//! instances, shown under sysAttrs only (clause 6.3.11), and what expires
//! removed, notified and recorded as a deletion; `valueType` (clause
//! 4.5.2.2) kept and shown.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::subscriptions::{next, receiver};
use crate::support::{Server, enc};

const FUTURE: &str = "2100-01-01T00:00:00Z";
const PAST: &str = "2020-01-01T00:00:00Z";
const XSD_DOUBLE: &str = "http://www.w3.org/2001/XMLSchema#double";

/// A DateTime `secs` seconds from now.
fn in_secs(secs: i64) -> String {
    ngsi_model::time::format_micros(ngsi_model::time::now_micros() + secs * 1_000_000)
}

fn property(value: Value, expires_at: Option<&str>) -> Value {
    let mut p = json!({"type": "Property", "value": value});
    if let Some(x) = expires_at {
        p["expiresAt"] = json!(x);
    }
    p
}

/// Retrieves entity `id` until `done` holds of the answer (status, body),
/// for at most 8 s; the last answer.
async fn until(s: &Server, id: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let r = s.get(&format!("/entities/{}", enc(id))).await;
        if done(r.status, &r.body) || start.elapsed() > Duration::from_secs(8) {
            return (r.status, r.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn expiry_and_value_types_are_kept_and_shown_as_the_specification_says() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:transient";
    s.create(json!({
        "id": id, "type": "Vehicle", "expiresAt": FUTURE,
        "speed": {"type": "Property", "value": 7, "valueType": XSD_DOUBLE,
                  "observedAt": "2026-08-13T00:00:00Z", "expiresAt": FUTURE,
                  "accuracy": property(json!(0.5), Some(FUTURE))},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1", "expiresAt": FUTURE},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "bus"},
                 "valueType": "langString", "expiresAt": FUTURE}
    }))
    .await;
    // Without sysAttrs expiresAt is nowhere; valueType always is.
    let r = s.get(&format!("/entities/{}", enc(id))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("expiresAt"), "{}", r.text);
    assert_eq!(r.body["speed"]["valueType"], json!(XSD_DOUBLE));
    assert_eq!(r.body["name"]["valueType"], json!("langString"));
    // With it, as the producer wrote it, at every level.
    let e = s.entity(id, "options=sysAttrs").await;
    assert_eq!(e["expiresAt"], json!(FUTURE));
    assert_eq!(e["speed"]["expiresAt"], json!(FUTURE));
    assert_eq!(e["speed"]["accuracy"]["expiresAt"], json!(FUTURE));
    assert_eq!(e["owner"]["expiresAt"], json!(FUTURE));
    assert!(e["createdAt"].is_string());
    // Concise keeps an attribute with a valueType an object.
    let e = s.entity(id, "format=concise").await;
    assert_eq!(e["speed"]["valueType"], json!(XSD_DOUBLE));
    assert_eq!(e["speed"]["value"], json!(7));
    // An earlier version knows neither.
    let r = s
        .req(
            Method::GET,
            &format!("/entities/{}?options=sysAttrs", enc(id)),
        )
        .header("Prefer", "ngsi-ld=1.8")
        .send()
        .await;
    assert!(
        !r.text.contains("expiresAt") && !r.text.contains("valueType"),
        "{}",
        r.text
    );
    // The temporal representation follows the same gate.
    let path = format!(
        "/temporal/entities/{}?timerel=after&timeAt=2020-01-01T00:00:00Z",
        enc(id)
    );
    let r = s.get(&path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("expiresAt"), "{}", r.text);
    let r = s.get(&format!("{path}&options=sysAttrs")).await;
    assert!(r.text.contains("expiresAt"), "{}", r.text);
    // Merge changes the entity's and keeps an instance's it does not name;
    // the NGSI-LD Null removes one.
    let later = "2101-01-01T00:00:00Z";
    s.patch(
        &format!("/entities/{}", enc(id)),
        &json!({"expiresAt": later, "speed": {"type": "Property", "value": 8},
                "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:2",
                          "expiresAt": "urn:ngsi-ld:null"}}),
    )
    .await
    .no_content();
    let e = s.entity(id, "options=sysAttrs").await;
    assert_eq!(e["expiresAt"], json!(later));
    assert_eq!(e["speed"]["expiresAt"], json!(FUTURE));
    assert_eq!(e["speed"]["valueType"], json!(XSD_DOUBLE));
    assert_eq!(e["owner"].get("expiresAt"), None, "{e}");
    // Malformed values are BadRequestData, at both levels.
    for bad in [
        json!({"id": "urn:ngsi-ld:Vehicle:bad", "type": "Vehicle", "expiresAt": "not-a-date"}),
        json!({"id": "urn:ngsi-ld:Vehicle:bad", "type": "Vehicle", "expiresAt": 5}),
        json!({"id": "urn:ngsi-ld:Vehicle:bad", "type": "Vehicle",
               "speed": property(json!(1), Some("2026-13-45T00:00:00Z"))}),
        json!({"id": "urn:ngsi-ld:Vehicle:bad", "type": "Vehicle",
               "speed": {"type": "Property", "value": 1, "valueType": 5}}),
        json!({"id": "urn:ngsi-ld:Vehicle:bad", "type": "Vehicle",
               "name": {"type": "LanguageProperty", "languageMap": {"en": "x"},
                        "valueType": "xsd:string"}}),
    ] {
        s.post("/entities", &bad)
            .await
            .problem(400, "BadRequestData");
    }
    // The NGSI-LD Null is for merges only.
    s.post(
        "/entities",
        &json!({"id": "urn:ngsi-ld:Vehicle:bad", "type": "Vehicle",
                "expiresAt": "urn:ngsi-ld:null"}),
    )
    .await
    .problem(400, "BadRequestData");
}

#[tokio::test]
async fn what_expires_is_removed_notified_and_recorded_as_a_deletion() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let r = s
        .post(
            "/subscriptions",
            &json!({"type": "Subscription", "entities": [{"type": "Vehicle"}],
                    "notificationTrigger": ["entityDeleted", "attributeDeleted"],
                    "notification": {"endpoint": {"uri": uri}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Created expired: accepted, never stored (the id is free again).
    let gone = "urn:ngsi-ld:Vehicle:gone";
    let born_dead = json!({"id": gone, "type": "Vehicle", "expiresAt": PAST,
                           "speed": property(json!(1), None)});
    s.create(born_dead.clone()).await;
    s.get(&format!("/entities/{}", enc(gone)))
        .await
        .problem(404, "ResourceNotFound");
    s.create(born_dead).await;
    // A merge with a past expiresAt ends the entity at once.
    let merged = "urn:ngsi-ld:Vehicle:merged";
    s.create(json!({"id": merged, "type": "Vehicle", "speed": property(json!(1), None)}))
        .await;
    s.patch(
        &format!("/entities/{}", enc(merged)),
        &json!({"expiresAt": PAST}),
    )
    .await
    .no_content();
    s.get(&format!("/entities/{}", enc(merged)))
        .await
        .problem(404, "ResourceNotFound");
    let n = next(&mut rx).await;
    assert_eq!(n.body["data"][0]["id"], json!(merged), "{}", n.body);
    // What expires later goes when its time comes.
    // Far enough ahead that the writes below all land before it, also on
    // a loaded machine.
    let soon = in_secs(4);
    let whole = "urn:ngsi-ld:Vehicle:whole";
    let parts = "urn:ngsi-ld:Vehicle:parts";
    s.create(json!({"id": whole, "type": "Vehicle", "expiresAt": soon,
                    "speed": property(json!(1), None)}))
        .await;
    s.create(json!({
        "id": parts, "type": "Vehicle",
        "alert": property(json!("flood"), Some(&soon)),
        "speed": [
            {"type": "Property", "value": 40, "datasetId": "urn:ngsi-ld:Dataset:gps",
             "expiresAt": soon},
            {"type": "Property", "value": 41, "datasetId": "urn:ngsi-ld:Dataset:odometer"}
        ],
        "humidity": property(json!(60), Some(&soon)),
        "pressure": property(json!(1000), Some(&soon)),
        "level": property(json!(3), None)
    }))
    .await;
    // Update Attributes replaces humidity whole: it no longer expires;
    // Partial Attribute Update keeps pressure's expiry.
    s.patch(
        &format!("/entities/{}/attrs", enc(parts)),
        &json!({"humidity": property(json!(61), None)}),
    )
    .await
    .no_content();
    s.patch(
        &format!("/entities/{}/attrs/pressure", enc(parts)),
        &json!({"value": 1001}),
    )
    .await
    .no_content();
    assert_eq!(s.ids("type=Vehicle").await, [parts, whole]);
    let (status, _) = until(&s, whole, |status, _| status == 404).await;
    assert_eq!(status, 404);
    let (_, e) = until(&s, parts, |_, e| e.get("alert").is_none()).await;
    assert_eq!(e.get("alert"), None, "{e}");
    assert_eq!(e.get("pressure"), None, "{e}");
    assert_eq!(e["humidity"]["value"], json!(61), "{e}");
    assert_eq!(e["level"]["value"], json!(3), "{e}");
    assert_eq!(e["speed"]["value"], json!(41), "{e}");
    assert_eq!(
        e["speed"]["datasetId"],
        json!("urn:ngsi-ld:Dataset:odometer"),
        "{e}"
    );
    assert_eq!(s.ids("type=Vehicle").await, [parts]);
    // Subscribers hear of both removals (one reaping writes them together:
    // one notification may carry both).
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let n = next(&mut rx).await;
        for e in n.body["data"].as_array().expect("data") {
            heard.push(e["id"].as_str().unwrap_or_default().to_string());
            if e["id"] == json!(parts) {
                assert_eq!(e["alert"]["value"], json!("urn:ngsi-ld:null"), "{}", n.body);
            }
        }
    }
    heard.sort();
    assert_eq!(heard, [parts, whole]);
    // History keeps the instances and records the removal.
    let r = s
        .get(&format!(
            "/temporal/entities/{}?attrs=alert&timerel=after&timeAt=2020-01-01T00:00:00Z&timeproperty=modifiedAt&options=sysAttrs",
            enc(parts)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let alert = r.body["alert"].as_array().expect("alert instances").clone();
    assert_eq!(alert.len(), 2, "{}", r.text);
    assert_eq!(alert[0]["value"], json!("flood"));
    assert_eq!(alert[0]["expiresAt"], json!(soon), "{}", r.text);
    assert_eq!(alert[1]["value"], json!("urn:ngsi-ld:null"));
    assert!(alert[1]["deletedAt"].is_string(), "{}", r.text);
}
