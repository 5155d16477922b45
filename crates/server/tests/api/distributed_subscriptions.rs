//! Distributed subscriptions (clauses 5.8.1.4, 5.8.2.4, 5.8.5.4, 5.8.6): a
//! subscription made at one broker is copied to the brokers registered as
//! its context sources, and what they notify reaches the subscriber, with
//! two real brokers and a real HTTP receiver.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::federation::prop;
use crate::subscriptions::{next, nothing, receiver};
use crate::support::{Gate, Server, enc};

const SUB: &str = "urn:ngsi-ld:Subscription:fleet";
const REG: &str = "urn:ngsi-ld:ContextSourceRegistration:b";
const CAR: &str = "urn:ngsi-ld:Vehicle:1";

/// The subscriptions `s` holds, once `ready` accepts them (within 10 s).
async fn subscriptions_when(s: &Server, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = s.get("/subscriptions").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let list = r.body.as_array().cloned().unwrap_or_default();
        if ready(&list) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the subscriptions never became as expected: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn registration_of(source: &Server, alias: &str, information: Value) -> Value {
    json!({
        "id": REG,
        "type": "ContextSourceRegistration",
        "information": information,
        "endpoint": source.origin,
        "contextSourceAlias": alias,
    })
}

/// Two brokers with their own aliases, `broker-a` and `broker-b`.
async fn brokers() -> (Server, Server) {
    (
        Server::start_as("broker-a").await,
        Server::start_as("broker-b").await,
    )
}

async fn register(at: &Server, registration: &Value) {
    let r = at.post("/csourceRegistrations", registration).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn set_speed(s: &Server, id: &str, speed: i64) {
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"speed": prop(speed)}),
    )
    .await
    .no_content();
}

#[tokio::test]
async fn a_subscription_is_copied_to_its_sources_and_their_notifications_reach_the_subscriber() {
    let (a, b) = brokers().await;
    b.create(
        json!({"id": CAR, "type": "Vehicle", "speed": prop(10), "brandName": prop("Guangqi")}),
    )
    .await;
    // b holds the vehicles' speed for a.
    let info = json!([{"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"]}]);
    register(&a, &registration_of(&b, "broker-b", info.clone())).await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let sub = json!({
        "id": SUB,
        "type": "Subscription",
        "entities": [{"type": "Vehicle"}],
        "notification": {
            "endpoint": {"uri": uri, "receiverInfo": [{"key": "X-Secret", "value": "s3"}]},
            "format": "keyValues",
            "attributes": ["speed"],
        },
    });
    assert_eq!(a.post("/subscriptions", &sub).await.status, 201);

    // The copy at b: reduced to what b registered, notifying a, without
    // what only a uses.
    let copies = subscriptions_when(&b, |l| l.len() == 1).await;
    let copy = &copies[0];
    let copy_id = copy["id"].as_str().unwrap().to_string();
    assert_ne!(copy_id, SUB);
    assert_eq!(copy["entities"], json!([{"type": "Vehicle"}]));
    assert_eq!(copy["watchedAttributes"], json!(["speed"]));
    assert_eq!(
        copy["notification"]["endpoint"]["uri"],
        json!(format!("{}/wuyang/v1/notifications", a.origin))
    );
    assert!(
        copy["notification"]["endpoint"]
            .get("receiverInfo")
            .is_none(),
        "{copy}"
    );
    assert_eq!(copy["notification"]["format"], "normalized");
    assert!(copy["notification"].get("attributes").is_none(), "{copy}");

    // A change at b reaches the subscriber under a's subscription, in its
    // format and projection, with its receiverInfo.
    set_speed(&b, CAR, 55).await;
    let got = next(&mut rx).await;
    assert_eq!(got.body["subscriptionId"], SUB, "{}", got.body);
    assert_eq!(
        got.body["data"],
        json!([{"id": CAR, "type": "Vehicle", "speed": 55}])
    );
    assert_eq!(got.headers["x-secret"], "s3");
    let status = a.get(&format!("/subscriptions/{}", enc(SUB))).await;
    assert_eq!(
        status.body["notification"]["timesSent"], 1,
        "{}",
        status.body
    );

    // What b did not register for a is not watched there.
    b.patch(
        &format!("/entities/{}/attrs", enc(CAR)),
        &json!({"brandName": prop("BYD")}),
    )
    .await
    .no_content();
    nothing(&mut rx, 400).await;

    // An update of the subscription updates the copy (5.8.2.4).
    a.patch(
        &format!("/subscriptions/{}", enc(SUB)),
        &json!({"q": "speed>100"}),
    )
    .await
    .no_content();
    subscriptions_when(&b, |l| l.len() == 1 && l[0]["q"] == "speed>100").await;
    set_speed(&b, CAR, 60).await;
    nothing(&mut rx, 400).await;
    set_speed(&b, CAR, 120).await;
    assert_eq!(next(&mut rx).await.body["data"][0]["speed"], 120);
    // A member that goes is gone from the copy too (made anew, same id).
    a.patch(&format!("/subscriptions/{}", enc(SUB)), &json!({"q": null}))
        .await
        .no_content();
    let copies = subscriptions_when(&b, |l| l.len() == 1 && l[0].get("q").is_none()).await;
    assert_eq!(copies[0]["id"], json!(copy_id));
    set_speed(&b, CAR, 70).await;
    assert_eq!(next(&mut rx).await.body["data"][0]["speed"], 70);

    // A registration that goes takes its copy with it (noLongerMatching),
    // one that comes gets a new copy (newlyMatching).
    a.delete(&format!("/csourceRegistrations/{}", enc(REG)))
        .await
        .no_content();
    subscriptions_when(&b, |l| l.is_empty()).await;
    register(&a, &registration_of(&b, "broker-b", info)).await;
    let again = subscriptions_when(&b, |l| l.len() == 1).await;
    assert_ne!(again[0]["id"], json!(copy_id));

    // The old copy's notifications are no longer taken; garbage is refused.
    let stale = json!({"id": "urn:ngsi-ld:Notification:1", "type": "Notification",
        "subscriptionId": copy_id, "notifiedAt": "2026-01-01T00:00:00Z", "data": []});
    let post = |body: String| {
        reqwest::Client::new()
            .post(format!("{}/wuyang/v1/notifications", a.origin))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = post(stale.to_string()).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(post("{".into()).await.unwrap().status(), 400);
    assert_eq!(post("{\"data\": []}".into()).await.unwrap().status(), 400);

    // Deleting the subscription deletes its copy (5.8.5.4).
    a.delete(&format!("/subscriptions/{}", enc(SUB)))
        .await
        .no_content();
    subscriptions_when(&b, |l| l.is_empty()).await;
    set_speed(&b, CAR, 130).await;
    nothing(&mut rx, 400).await;
}

#[tokio::test]
async fn a_copy_whose_source_was_down_when_its_subscription_went_is_deleted_when_it_is_back() {
    let (a, b) = brokers().await;
    let gate = Gate::to(&b.origin).await;
    let info = json!([{"entities": [{"type": "Vehicle"}]}]);
    let mut registration = registration_of(&b, "broker-b", info);
    registration["endpoint"] = json!(gate.origin);
    register(&a, &registration).await;
    let (uri, _rx) = receiver(StatusCode::OK).await;
    let sub = json!({"id": SUB, "type": "Subscription", "entities": [{"type": "Vehicle"}],
        "notification": {"endpoint": {"uri": uri}}});
    assert_eq!(a.post("/subscriptions", &sub).await.status, 201);
    subscriptions_when(&b, |l| l.len() == 1).await;

    // b is away when the subscription goes: its copy stays there for now.
    gate.close();
    a.delete(&format!("/subscriptions/{}", enc(SUB)))
        .await
        .no_content();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(subscriptions_when(&b, |_| true).await.len(), 1);

    // Once b is back, the relay's retry deletes it.
    gate.open();
    subscriptions_when(&b, |l| l.is_empty()).await;
}

#[tokio::test]
async fn copies_are_narrowed_to_the_registered_entities_and_local_only_stays_local() {
    let (a, b) = brokers().await;
    // b holds two named vehicles, all their attributes.
    let info = json!([{"entities": [
        {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
        {"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle"},
        {"type": "Building"}]}]);
    register(&a, &registration_of(&b, "broker-b", info)).await;
    let (uri, _rx) = receiver(StatusCode::OK).await;
    let sub = json!({"id": SUB, "type": "Subscription",
        "entities": [{"idPattern": "urn:ngsi-ld:Vehicle:[12]", "type": "Vehicle"}],
        "watchedAttributes": ["speed"],
        "notification": {"endpoint": {"uri": uri}}});
    let local = json!({"id": "urn:ngsi-ld:Subscription:local", "type": "Subscription",
        "entities": [{"type": "Vehicle"}], "localOnly": true,
        "notification": {"endpoint": {"uri": uri}}});
    let other = json!({"id": "urn:ngsi-ld:Subscription:shops", "type": "Subscription",
        "entities": [{"type": "Shop"}],
        "notification": {"endpoint": {"uri": uri}}});
    for s in [&sub, &local, &other] {
        assert_eq!(a.post("/subscriptions", s).await.status, 201);
    }
    let copies = subscriptions_when(&b, |l| !l.is_empty()).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        copies[0]["entities"],
        json!([{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
            {"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle"}])
    );
    // b registered no attribute names: the copy watches what a watches.
    assert_eq!(copies[0]["watchedAttributes"], json!(["speed"]));
    // A subscription that turns to what b holds otherwise follows it; one
    // that turns away from it loses its copy.
    let path = format!("/subscriptions/{}", enc(SUB));
    a.patch(&path, &json!({"entities": [{"type": "Building"}]}))
        .await
        .no_content();
    subscriptions_when(&b, |l| {
        l.len() == 1 && l[0]["entities"] == json!([{"type": "Building"}])
    })
    .await;
    a.patch(&path, &json!({"entities": [{"type": "Shop"}]}))
        .await
        .no_content();
    subscriptions_when(&b, |l| l.is_empty()).await;
}

#[tokio::test]
async fn brokers_registered_with_each_other_notify_once_and_loops_are_refused() {
    let (a, b) = brokers().await;
    let info = json!([{"entities": [{"type": "Vehicle"}]}]);
    let mut to_b = registration_of(&b, "broker-b", info.clone());
    to_b["id"] = json!("urn:ngsi-ld:ContextSourceRegistration:to-b");
    let mut to_a = registration_of(&a, "broker-a", info);
    to_a["id"] = json!("urn:ngsi-ld:ContextSourceRegistration:to-a");
    register(&a, &to_b).await;
    register(&b, &to_a).await;
    a.create(json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle", "speed": prop(1)}))
        .await;
    b.create(json!({"id": "urn:ngsi-ld:Vehicle:B", "type": "Vehicle", "speed": prop(1)}))
        .await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let sub = json!({"id": SUB, "type": "Subscription", "entities": [{"type": "Vehicle"}],
        "notification": {"endpoint": {"uri": uri}}});
    assert_eq!(a.post("/subscriptions", &sub).await.status, 201);
    // One copy at b, none back at a: b does not send a's copy to the
    // source its Via names.
    subscriptions_when(&b, |l| l.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscriptions_when(&a, |_| true).await.len(), 1);
    for (s, id) in [(&a, "urn:ngsi-ld:Vehicle:A"), (&b, "urn:ngsi-ld:Vehicle:B")] {
        set_speed(s, id, 7).await;
        let got = next(&mut rx).await;
        assert_eq!(got.body["subscriptionId"], SUB);
        assert_eq!(got.body["data"][0]["id"], id);
        nothing(&mut rx, 300).await;
    }
    // A subscription that comes back through a loop is refused.
    let mut looped = sub.clone();
    looped["id"] = json!("urn:ngsi-ld:Subscription:looped");
    a.req(Method::POST, "/subscriptions")
        .header("Via", "1.1 broker-a, 1.1 broker-b")
        .json(&looped)
        .send()
        .await
        .problem(508, "LoopDetected");
}
