//! Subscriptions (clauses 5.8, 6.10, 6.11) and notifications (5.8.6) with a
//! real HTTP receiver and the MQTT broker on 127.0.0.1:1883, and the live
//! stream extension.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::{CORE, Server, enc, link, serve_document};

/// A notification as received: headers and JSON body.
pub(crate) struct Received {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

/// An HTTP receiver that answers `status`; returns its URL and a channel of
/// what it got.
pub(crate) async fn receiver(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/notify",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send(Received { headers, body });
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/notify"), rx)
}

pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .expect("receiver closed")
}

/// Asserts that nothing arrives within `ms` milliseconds.
pub(crate) async fn nothing(rx: &mut mpsc::UnboundedReceiver<Received>, ms: u64) {
    if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("unexpected notification: {}", r.body);
    }
}

fn sensor(id: &str, level: f64) -> Value {
    json!({
        "id": id,
        "type": "WaterLevelSensor",
        "level": {"type": "Property", "value": level, "unitCode": "MTR"},
        "district": {"type": "Property", "value": "Haizhu"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [113.32, 23.10]}}
    })
}

fn subscription(id: &str, uri: &str) -> Value {
    json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "WaterLevelSensor"}],
        "watchedAttributes": ["level"],
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
    })
}

async fn subscribe(s: &Server, body: &Value) {
    let r = s.post("/subscriptions", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn set_level(s: &Server, id: &str, level: f64) {
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"level": {"type": "Property", "value": level, "unitCode": "MTR"}}),
    )
    .await
    .no_content();
}

#[tokio::test]
async fn subscriptions_are_created_retrieved_listed_updated_and_deleted() {
    let s = Server::start().await;
    let body = subscription("urn:ngsi-ld:Subscription:crud", "http://127.0.0.1:9/n");
    let r = s.post("/subscriptions", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.header("location"),
        Some("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:crud")
    );
    s.post("/subscriptions", &body)
        .await
        .problem(409, "AlreadyExists");
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:crud").await;
    assert_eq!(got.status, 200, "{}", got.text);
    let b = &got.body;
    assert_eq!(b["type"], "Subscription");
    assert_eq!(b["status"], "active");
    assert!(
        b.get("isActive").is_none(),
        "isActive is rendered only when it was given: {b}"
    );
    assert_eq!(b["entities"], json!([{"type": "WaterLevelSensor"}]));
    assert_eq!(b["watchedAttributes"], json!(["level"]));
    assert_eq!(
        b["notificationTrigger"],
        json!(["attributeCreated", "attributeUpdated"])
    );
    assert_eq!(b["notification"]["format"], "normalized");
    assert_eq!(b["notification"]["endpoint"]["uri"], "http://127.0.0.1:9/n");
    assert!(b.get("timesSent").is_none() && b["notification"].get("timesSent").is_none());

    // A generated id, and the list with paging.
    let mut generated = subscription("x", "http://127.0.0.1:9/n");
    generated.as_object_mut().unwrap().remove("id");
    let r = s.post("/subscriptions", &generated).await;
    assert_eq!(r.status, 201);
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:"));
    subscribe(
        &s,
        &subscription("urn:ngsi-ld:Subscription:z", "http://127.0.0.1:9/n"),
    )
    .await;
    let all = s.get("/subscriptions?count=true").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body.as_array().unwrap().len(), 3);
    assert_eq!(all.header("ngsild-results-count"), Some("3"));
    let page = s.get("/subscriptions?limit=1&offset=1").await;
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    let links: Vec<&str> = page
        .headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(links.contains(
        &"</ngsi-ld/v1/subscriptions?limit=1&offset=0>;rel=\"prev\";type=\"application/ld+json\""
    ), "{links:?}");
    assert!(links.contains(
        &"</ngsi-ld/v1/subscriptions?limit=1&offset=2>;rel=\"next\";type=\"application/ld+json\""
    ), "{links:?}");
    // count=true stays in the links (clause 5.5.9.1); count is a boolean.
    let page = s.get("/subscriptions?limit=1&count=true").await;
    let next = page.paging_link("next").expect("a next link");
    assert_eq!(next, "/subscriptions?count=true&limit=1&offset=1");
    s.get("/subscriptions?count=maybe")
        .await
        .problem(400, "BadRequestData");

    // Pause, then reactivate with a future expiry.
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:crud",
        &json!({"isActive": false}),
    )
    .await
    .no_content();
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:crud").await;
    assert_eq!(got.body["status"], "paused");
    assert_eq!(got.body["isActive"], false);
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:crud",
        &json!({"isActive": true, "expiresAt": "2999-01-01T00:00:00Z", "q": "level>2"}),
    )
    .await
    .no_content();
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:crud").await;
    assert_eq!(got.body["status"], "active");
    assert_eq!(got.body["q"], "level>2");
    assert_eq!(got.body["expiresAt"], "2999-01-01T00:00:00Z");
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:crud",
        &json!({"expiresAt": "2000-01-01T00:00:00Z"}),
    )
    .await
    .problem(400, "BadRequestData");
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:nope",
        &json!({"isActive": true}),
    )
    .await
    .problem(404, "ResourceNotFound");
    let r = s
        .req(Method::PATCH, "/subscriptions")
        .json(&json!({"isActive": true}))
        .send()
        .await;
    assert_eq!(r.status, 405);

    s.delete("/subscriptions/urn:ngsi-ld:Subscription:crud")
        .await
        .no_content();
    s.get("/subscriptions/urn:ngsi-ld:Subscription:crud")
        .await
        .problem(404, "ResourceNotFound");
    s.delete("/subscriptions/urn:ngsi-ld:Subscription:crud")
        .await
        .problem(404, "ResourceNotFound");
    s.get("/subscriptions/not%20a%20uri")
        .await
        .problem(400, "BadRequestData");
}

#[tokio::test]
async fn invalid_subscriptions_are_refused_with_the_spec_errors() {
    let s = Server::start().await;
    let ok = subscription("urn:ngsi-ld:Subscription:bad", "http://127.0.0.1:9/n");
    let with = |patch: Value| {
        let mut b = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        ("bad q", with(json!({"q": "level>>2"}))),
        (
            "bad geometry",
            with(
                json!({"geoQ": {"geometry": "Point", "coordinates": [500, 23], "georel": "near;maxDistance==10"}}),
            ),
        ),
        (
            "bad georel",
            with(
                json!({"geoQ": {"geometry": "Point", "coordinates": [113, 23], "georel": "close"}}),
            ),
        ),
        (
            "unsupported scheme",
            with(json!({"notification": {"endpoint": {"uri": "ftp://example.org/x"}}})),
        ),
        (
            "not a uri",
            with(json!({"notification": {"endpoint": {"uri": "nowhere"}}})),
        ),
        (
            "an MQTT topic with a wildcard",
            with(json!({"notification": {"endpoint": {"uri": "mqtt://127.0.0.1:1883/a/#"}}})),
        ),
        (
            "bad MQTT QoS",
            with(
                json!({"notification": {"endpoint": {"uri": "mqtt://127.0.0.1:1883/t",
                "notifierInfo": [{"key": "MQTT-QoS", "value": "7"}]}}}),
            ),
        ),
        (
            "receiverInfo that is no header",
            with(
                json!({"notification": {"endpoint": {"uri": "http://127.0.0.1:9/n",
                "receiverInfo": [{"key": "X Bad Header", "value": "v"}]}}}),
            ),
        ),
        (
            "expired",
            with(json!({"expiresAt": "2001-01-01T00:00:00Z"})),
        ),
        ("wrong type", with(json!({"type": "Subscriptions"}))),
        ("no type", with(json!({"type": null}))),
        ("no notification", with(json!({"notification": null}))),
        (
            "nothing selected",
            with(json!({"entities": null, "watchedAttributes": null})),
        ),
        ("empty entities", with(json!({"entities": []}))),
        (
            "selector without type",
            with(json!({"entities": [{"id": "urn:a:b"}]})),
        ),
        ("negative throttling", with(json!({"throttling": -1}))),
        (
            "attributes naming the id",
            with(
                json!({"notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}, "attributes": ["id", "level"]}}),
            ),
        ),
        (
            "datasetId not a URI",
            with(json!({"datasetId": ["not a uri"]})),
        ),
        // Durations beyond a century would overflow a clock.
        ("throttling of 1e20 s", with(json!({"throttling": 1e20}))),
        (
            "timeInterval of 1e20 s",
            with(json!({"timeInterval": 1e20, "watchedAttributes": null})),
        ),
        (
            "endpoint timeout of 1e30 ms",
            with(
                json!({"notification": {"endpoint": {"uri": "http://127.0.0.1:9/n", "timeout": 1e30}}}),
            ),
        ),
        (
            "endpoint cooldown of 1e30 ms",
            with(
                json!({"notification": {"endpoint": {"uri": "http://127.0.0.1:9/n", "cooldown": 1e30}}}),
            ),
        ),
        ("interval with watched", with(json!({"timeInterval": 10}))),
        (
            "interval with throttling",
            with(json!({"timeInterval": 10, "watchedAttributes": null, "throttling": 5})),
        ),
        (
            "unknown trigger",
            with(json!({"notificationTrigger": ["sometimes"]})),
        ),
        (
            "showChanges with keyValues",
            with(
                json!({"notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"},
                "format": "keyValues", "showChanges": true}}),
            ),
        ),
        ("bad id", with(json!({"id": "not a uri"}))),
        ("csf that is no query", with(json!({"csf": "(("}))),
        ("empty object", json!({})),
    ];
    for (what, body) in cases {
        let r = s.post("/subscriptions", &body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        r.problem(400, "BadRequestData");
    }
    s.req(Method::POST, "/subscriptions")
        .body("application/json", "{\"type\": ")
        .send()
        .await
        .problem(400, "InvalidRequest");
    assert_eq!(
        s.get("/subscriptions").await.body,
        json!([]),
        "nothing was created"
    );

    // The same bounds hold in updates, and for registration subscriptions.
    assert_eq!(s.post("/subscriptions", &ok).await.status, 201);
    for patch in [
        json!({"throttling": 1e20}),
        json!({"notification": {"endpoint": {"uri": "http://127.0.0.1:9/n", "timeout": 1e30}}}),
    ] {
        s.req(Method::PATCH, "/subscriptions/urn:ngsi-ld:Subscription:bad")
            .json(&patch)
            .send()
            .await
            .problem(400, "BadRequestData");
    }
    let mut csr_sub = with(json!({"timeInterval": 1e20, "watchedAttributes": null}));
    csr_sub["id"] = json!("urn:ngsi-ld:Subscription:csr-bad");
    s.post("/csourceSubscriptions", &csr_sub)
        .await
        .problem(400, "BadRequestData");
    assert_eq!(s.get("/csourceSubscriptions").await.body, json!([]));
}

#[tokio::test]
async fn a_change_of_a_watched_attribute_is_notified_over_http() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:1", 1.0))
        .await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:http", &uri);
    sub["notification"]["endpoint"]["receiverInfo"] =
        json!([{"key": "X-Department", "value": "water"}]);
    sub["q"] = json!("level>2");
    subscribe(&s, &sub).await;

    // Not matching q after the change: nothing.
    set_level(&s, "urn:ngsi-ld:WaterLevelSensor:1", 1.5).await;
    // A change of an attribute that is not watched: nothing.
    s.patch(
        "/entities/urn:ngsi-ld:WaterLevelSensor:1/attrs",
        &json!({"district": {"type": "Property", "value": "Liwan"}}),
    )
    .await
    .no_content();
    nothing(&mut rx, 300).await;

    set_level(&s, "urn:ngsi-ld:WaterLevelSensor:1", 2.5).await;
    let n = next(&mut rx).await;
    assert_eq!(n.headers["content-type"], "application/json");
    assert_eq!(n.headers["x-department"], "water");
    assert_eq!(n.headers["link"].to_str().unwrap(), link(CORE));
    let b = &n.body;
    assert_eq!(b["type"], "Notification");
    assert_eq!(b["subscriptionId"], "urn:ngsi-ld:Subscription:http");
    assert!(
        b["id"]
            .as_str()
            .unwrap()
            .starts_with("urn:ngsi-ld:Notification:")
    );
    assert!(b["notifiedAt"].as_str().unwrap().ends_with('Z'));
    let data = b["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "urn:ngsi-ld:WaterLevelSensor:1");
    assert_eq!(data[0]["level"]["value"], 2.5);
    assert_eq!(
        data[0]["district"]["value"], "Liwan",
        "the whole entity is notified"
    );
    assert!(data[0].get("@context").is_none());

    // The same value again is no change (clause 5.8.6): nothing.
    set_level(&s, "urn:ngsi-ld:WaterLevelSensor:1", 2.5).await;
    nothing(&mut rx, 300).await;

    // The status is kept (and reported before the receiver answered).
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:http").await;
    let n = &got.body["notification"];
    assert_eq!(n["timesSent"], 1, "{n}");
    assert_eq!(n["status"], "ok", "{n}");
    assert!(
        n["lastNotification"].is_string() && n["lastSuccess"].is_string(),
        "{n}"
    );
    assert!(n.get("lastFailure").is_none());
}

#[tokio::test]
async fn notifications_use_the_subscription_context_format_and_attributes() {
    let s = Server::start().await;
    let context = serve_document(json!({"@context": {
        "level": "https://example.org/water#level",
        "WaterLevelSensor": "https://example.org/water#WaterLevelSensor"
    }}))
    .await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let (ld_uri, mut ld_rx) = receiver(StatusCode::OK).await;
    let r = s
        .req(Method::POST, "/subscriptions")
        .header("link", &link(&context))
        .json(&json!({
            "id": "urn:ngsi-ld:Subscription:ctx",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "notification": {
                "endpoint": {"uri": uri},
                "format": "keyValues",
                "attributes": ["level"],
            },
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(Method::POST, "/subscriptions")
        .ld(&json!({
            "@context": context,
            "id": "urn:ngsi-ld:Subscription:ld",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "notification": {"endpoint": {"uri": ld_uri, "accept": "application/ld+json"}, "format": "concise"},
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Read back without the context: the names stay expanded.
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:ctx").await;
    assert_eq!(
        got.body["entities"][0]["type"],
        "https://example.org/water#WaterLevelSensor"
    );
    assert_eq!(
        got.body["notification"]["attributes"],
        json!(["https://example.org/water#level"])
    );
    let got = s
        .req(Method::GET, "/subscriptions/urn:ngsi-ld:Subscription:ctx")
        .header("link", &link(&context))
        .send()
        .await;
    assert_eq!(got.body["entities"][0]["type"], "WaterLevelSensor");

    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&context))
        .json(&sensor("urn:ngsi-ld:WaterLevelSensor:ctx", 3.0))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let n = next(&mut rx).await;
    assert_eq!(n.headers["link"].to_str().unwrap(), link(&context));
    assert_eq!(
        n.body["data"],
        json!([{"id": "urn:ngsi-ld:WaterLevelSensor:ctx", "type": "WaterLevelSensor", "level": 3.0}])
    );
    let n = next(&mut ld_rx).await;
    assert_eq!(n.headers["content-type"], "application/ld+json");
    assert!(n.headers.get("link").is_none());
    let d = &n.body["data"][0];
    assert_eq!(d["@context"], json!(context));
    assert_eq!(
        d["level"],
        json!({"value": 3.0, "unitCode": "MTR"}),
        "concise: {d}"
    );
}

#[tokio::test]
async fn triggers_cover_creation_deletion_and_attribute_deletion_with_changes() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:triggers",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "notificationTrigger": ["entityCreated", "entityUpdated", "entityDeleted"],
            "notification": {"endpoint": {"uri": uri}, "showChanges": true},
        }),
    )
    .await;
    let id = "urn:ngsi-ld:WaterLevelSensor:t";
    s.create(sensor(id, 1.0)).await;
    let created = next(&mut rx).await;
    assert_eq!(created.body["data"][0]["level"]["value"], 1.0);
    assert!(
        created.body["data"][0]["level"]
            .get("previousValue")
            .is_none(),
        "no previousValue on creation"
    );
    set_level(&s, id, 4.0).await;
    let updated = next(&mut rx).await;
    assert_eq!(updated.body["data"][0]["level"]["value"], 4.0);
    assert_eq!(updated.body["data"][0]["level"]["previousValue"], 1.0);
    assert!(
        updated.body["data"][0]["district"]
            .get("previousValue")
            .is_none()
    );
    s.delete(&format!("/entities/{}/attrs/district", enc(id)))
        .await
        .no_content();
    let deleted_attr = next(&mut rx).await;
    assert_eq!(
        deleted_attr.body["data"][0]["district"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": "Haizhu"})
    );
    s.delete(&format!("/entities/{}", enc(id)))
        .await
        .no_content();
    let deleted = next(&mut rx).await;
    let d = deleted.body["data"][0].as_object().unwrap();
    assert_eq!(d["id"], id);
    assert_eq!(d["type"], "WaterLevelSensor");
    assert!(d["deletedAt"].is_string());
    // With showChanges the deleted attributes come with their last values
    // (ETSI 046_37).
    assert_eq!(
        d["level"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": 4.0}),
        "{d:?}"
    );
    assert_eq!(d.len(), 5, "id, type, deletedAt, level, location: {d:?}");
    // Other tenants' changes are not seen.
    s.req(Method::POST, "/entities")
        .header("NGSILD-Tenant", "panyu")
        .json(&sensor(id, 9.0))
        .send()
        .await;
    nothing(&mut rx, 300).await;
}

#[tokio::test]
async fn batch_writes_notify_and_throttling_holds_back() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:batch", &uri);
    sub["notificationTrigger"] = json!(["attributeCreated", "attributeUpdated"]);
    subscribe(&s, &sub).await;
    let entities: Vec<Value> = (0..5)
        .map(|i| sensor(&format!("urn:ngsi-ld:WaterLevelSensor:b{i}"), f64::from(i)))
        .collect();
    let r = s.post("/entityOperations/create", &json!(entities)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let n = next(&mut rx).await;
        for d in n.body["data"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    assert_eq!(seen.len(), 5);

    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:throttled", &uri);
    sub["throttling"] = json!(60);
    subscribe(&s, &sub).await;
    set_level(&s, "urn:ngsi-ld:WaterLevelSensor:b1", 10.0).await;
    next(&mut rx).await;
    set_level(&s, "urn:ngsi-ld:WaterLevelSensor:b1", 11.0).await;
    nothing(&mut rx, 400).await;

    // Throttling spaces notifications, not the entities of one: a batch
    // change reaches a throttled subscription whole (clause 5.8.6).
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:throttled-batch", &uri);
    sub["throttling"] = json!(60);
    subscribe(&s, &sub).await;
    let updates: Vec<Value> = (0..3)
        .map(|i| {
            sensor(
                &format!("urn:ngsi-ld:WaterLevelSensor:b{i}"),
                20.0 + f64::from(i),
            )
        })
        .collect();
    let r = s
        .post("/entityOperations/upsert?options=update", &json!(updates))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let n = next(&mut rx).await;
    let mut ids: Vec<&str> = n.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "urn:ngsi-ld:WaterLevelSensor:b0",
            "urn:ngsi-ld:WaterLevelSensor:b1",
            "urn:ngsi-ld:WaterLevelSensor:b2"
        ],
        "{}",
        n.body
    );
    nothing(&mut rx, 300).await;
}

#[tokio::test]
async fn a_failing_receiver_is_reported_and_periodic_notifications_run() {
    let s = Server::start().await;
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:p", 1.0))
        .await;
    let (uri, mut rx) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    subscribe(&s, &subscription("urn:ngsi-ld:Subscription:failing", &uri)).await;
    set_level(&s, "urn:ngsi-ld:WaterLevelSensor:p", 2.0).await;
    next(&mut rx).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = s
            .get("/subscriptions/urn:ngsi-ld:Subscription:failing")
            .await;
        let n = &got.body["notification"];
        if n["status"] == "failed" {
            assert_eq!(n["timesFailed"], 1, "{n}");
            assert!(n["lastFailure"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "never failed: {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What failed and what was retried is counted.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("wuyang_notifications_failed_total{transport=\"http\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wuyang_notification_retries_total 2"),
        "{metrics}"
    );
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:periodic",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "timeInterval": 0.3,
            "notification": {"endpoint": {"uri": uri}, "attributes": ["level"]},
        }),
    )
    .await;
    for _ in 0..2 {
        let n = next(&mut rx).await;
        assert_eq!(n.body["data"][0]["id"], "urn:ngsi-ld:WaterLevelSensor:p");
        assert_eq!(n.body["data"][0]["level"]["value"], 2.0);
        assert!(n.body["data"][0].get("district").is_none());
    }
}

#[tokio::test]
async fn notifications_are_published_over_mqtt() {
    let s = Server::start().await;
    let topic = format!("wuyang/api-test/{}", std::process::id());
    let mut options = rumqttc::MqttOptions::new(
        format!("wuyang-api-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe(&topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut messages) = mpsc::unbounded_channel::<Value>();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(serde_json::from_slice(&p.payload).unwrap_or(Value::Null));
                }
                Ok(_) => {}
                Err(e) => panic!("MQTT broker on 127.0.0.1:1883 not reachable: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("no SUBACK")
        .unwrap();
    let mut sub = subscription(
        "urn:ngsi-ld:Subscription:mqtt",
        &format!("mqtt://127.0.0.1:1883/{topic}"),
    );
    sub["notification"]["endpoint"]["notifierInfo"] = json!([{"key": "MQTT-QoS", "value": "1"}]);
    sub["notification"]["endpoint"]["receiverInfo"] =
        json!([{"key": "X-District", "value": "Haizhu"}]);
    subscribe(&s, &sub).await;
    // ETSI 058_01_03, 058_02_03, 058_03_02: a user in the URI, QoS 2, MQTT
    // 3.1.1 (the broker of the tests lets anyone in).
    let mut v311 = subscription(
        "urn:ngsi-ld:Subscription:mqtt311",
        &format!("mqtt://guest@127.0.0.1:1883/{topic}"),
    );
    v311["notification"]["endpoint"]["notifierInfo"] = json!([
        {"key": "MQTT-QoS", "value": "2"},
        {"key": "MQTT-Version", "value": "mqtt3.1.1"}
    ]);
    subscribe(&s, &v311).await;
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:mqtt", 3.0))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            tokio::time::timeout(Duration::from_secs(10), messages.recv())
                .await
                .expect("no MQTT notification")
                .unwrap(),
        );
    }
    got.sort_by_key(|m| m["body"]["subscriptionId"].as_str().map(str::to_string));
    assert_eq!(
        got[1]["body"]["subscriptionId"],
        "urn:ngsi-ld:Subscription:mqtt311"
    );
    let m = got.swap_remove(0);
    assert_eq!(m["metadata"]["Content-Type"], "application/json");
    assert_eq!(m["metadata"]["X-District"], "Haizhu");
    assert_eq!(m["metadata"]["Link"], link(CORE));
    assert_eq!(m["body"]["type"], "Notification");
    assert_eq!(m["body"]["subscriptionId"], "urn:ngsi-ld:Subscription:mqtt");
    assert_eq!(m["body"]["data"][0]["level"]["value"], 3.0);
}

/// The first Server-Sent Event of `stream` (within 10 s).
async fn first_event(stream: &mut reqwest::Response) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("no event")
            .unwrap()
            .expect("stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n").next().unwrap().to_string()
}

#[tokio::test]
async fn the_live_stream_sends_matching_changes_as_server_sent_events() {
    let s = Server::start().await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!(
            "{}/wuyang/v1/live?type=WaterLevelSensor&q=level%3E5&options=keyValues",
            s.origin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:low", 1.0))
        .await;
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:high", 6.0))
        .await;
    let event = first_event(&mut stream).await;
    assert!(event.contains("event: notification"), "{event}");
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        v["data"],
        json!([{
            "id": "urn:ngsi-ld:WaterLevelSensor:high", "type": "WaterLevelSensor",
            "level": 6.0, "district": "Haizhu",
            "location": {"type": "Point", "coordinates": [113.32, 23.10]}
        }])
    );
    let r = client
        .get(format!("{}/wuyang/v1/live?q=level%3E%3E", s.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a bad filter is refused before the stream opens"
    );
}

#[tokio::test]
async fn geojson_notifications_carry_a_feature_collection() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:geo", &uri);
    sub["notification"]["endpoint"]["accept"] = json!("application/geo+json");
    sub["geoQ"] = json!({"geometry": "Point", "coordinates": [113.32, 23.10], "georel": "near;maxDistance==1000"});
    subscribe(&s, &sub).await;
    // Far from the reference point: not notified.
    let mut far = sensor("urn:ngsi-ld:WaterLevelSensor:far", 1.0);
    far["location"]["value"]["coordinates"] = json!([113.60, 23.40]);
    s.create(far).await;
    nothing(&mut rx, 300).await;
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:near", 1.0))
        .await;
    let n = next(&mut rx).await;
    assert_eq!(n.headers["content-type"], "application/geo+json");
    let fc = &n.body["data"];
    assert_eq!(fc["type"], "FeatureCollection");
    let f = &fc["features"][0];
    assert_eq!(f["type"], "Feature");
    assert_eq!(f["id"], "urn:ngsi-ld:WaterLevelSensor:near");
    assert_eq!(
        f["geometry"],
        json!({"type": "Point", "coordinates": [113.32, 23.10]})
    );
    assert_eq!(f["properties"]["level"]["value"], 1.0);
    // The id is the Feature's, not one of its properties (clause 4.5.16.2).
    assert_eq!(f["properties"].get("id"), None, "{f}");
    assert_eq!(f["properties"]["type"], "WaterLevelSensor", "{f}");
    // With join, inline Linked Entities sit in the properties and flat
    // ones are Features of their own.
    s.create(json!({"id": "urn:ngsi-ld:River:pearl", "type": "River",
        "name": {"type": "Property", "value": "Pearl River"}}))
        .await;
    for (join, id) in [
        ("inline", "urn:ngsi-ld:WaterLevelSensor:in"),
        ("flat", "urn:ngsi-ld:WaterLevelSensor:fl"),
    ] {
        let (uri, mut rx) = receiver(StatusCode::OK).await;
        let mut sub = subscription(&format!("urn:ngsi-ld:Subscription:geo-{join}"), &uri);
        sub["entities"] = json!([{"id": id, "type": "WaterLevelSensor"}]);
        sub["notification"]["endpoint"]["accept"] = json!("application/geo+json");
        sub["notification"]["join"] = json!(join);
        subscribe(&s, &sub).await;
        let mut e = sensor(id, 2.0);
        e["river"] = json!({"type": "Relationship", "object": "urn:ngsi-ld:River:pearl"});
        s.create(e).await;
        let n = next(&mut rx).await;
        let features = n.body["data"]["features"].as_array().unwrap().clone();
        if join == "inline" {
            assert_eq!(features.len(), 1, "{}", n.body);
            assert_eq!(
                features[0]["properties"]["river"]["entity"]["name"]["value"], "Pearl River",
                "{}",
                n.body
            );
        } else {
            assert_eq!(features.len(), 2, "{}", n.body);
            assert_eq!(features[1]["id"], "urn:ngsi-ld:River:pearl", "{}", n.body);
            assert_eq!(features[1]["geometry"], Value::Null, "{}", n.body);
        }
    }
}

#[tokio::test]
async fn a_subscription_renders_back_the_members_given() {
    let s = Server::start().await;
    let mut body = subscription("urn:ngsi-ld:Subscription:given", "http://127.0.0.1:9/n");
    body["csf"] = json!("endpoint==\"http://127.0.0.1:9\"");
    subscribe(&s, &body).await;
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:given").await;
    // isActive was not given: only the status tells (ETSI 028_01, 030_03).
    assert!(got.body.get("isActive").is_none(), "{}", got.text);
    assert_eq!(got.body["status"], "active");
    assert_eq!(got.body["csf"], "endpoint==\"http://127.0.0.1:9\"");
    let mut paused = subscription("urn:ngsi-ld:Subscription:paused", "http://127.0.0.1:9/n");
    paused["isActive"] = json!(false);
    subscribe(&s, &paused).await;
    let list = s.get("/subscriptions").await;
    let paused = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "urn:ngsi-ld:Subscription:paused")
        .unwrap()
        .clone();
    assert_eq!(paused["isActive"], false);
    assert_eq!(paused["status"], "paused");
    // Removing isActive with null goes back to the default, unwritten.
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:paused",
        &json!({"isActive": null}),
    )
    .await
    .no_content();
    let got = s
        .get("/subscriptions/urn:ngsi-ld:Subscription:paused")
        .await;
    assert!(got.body.get("isActive").is_none(), "{}", got.text);
    assert_eq!(got.body["status"], "active");
}

/// A receiver that keeps each request as it came over the wire (head and
/// body as text), as Python's http.server keeps header names.
async fn raw_receiver() -> (String, mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            let _ = tx.send(String::from_utf8_lossy(&buf).to_string());
                            let _ = socket
                                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (format!("http://{addr}/notify"), rx)
}

#[tokio::test]
async fn notification_headers_are_title_cased_and_name_the_request_context() {
    let s = Server::start().await;
    let context = serve_document(json!({"@context": {
        "level": "https://example.org/water#level",
        "WaterLevelSensor": "https://example.org/water#WaterLevelSensor"
    }}))
    .await;
    let (uri, mut rx) = raw_receiver().await;
    // The @context is an array holding one URL (the ETSI documents' form):
    // the Link header names that URL (ETSI 046_10).
    let r = s
        .req(Method::POST, "/subscriptions")
        .ld(&json!({
            "@context": [context],
            "id": "urn:ngsi-ld:Subscription:raw",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "notification": {"endpoint": {"uri": uri, "accept": "application/json",
                "receiverInfo": [{"key": "X-Additional-Key", "value": "Value"}]}},
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(Method::POST, "/entities")
        .header("link", &link(&context))
        .json(&sensor("urn:ngsi-ld:WaterLevelSensor:raw", 1.0))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let raw = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    let lines: Vec<&str> = head.lines().collect();
    // Receivers that keep header names in a plain dictionary look them up
    // as written here (ETSI 046_09, 046_10).
    assert!(
        lines.contains(&format!("Link: {}", link(&context)).as_str()),
        "{head}"
    );
    assert!(lines.contains(&"X-Additional-Key: Value"), "{head}");
    assert!(lines.contains(&"Content-Type: application/json"), "{head}");
    let body: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["data"][0]["type"], "WaterLevelSensor", "{body}");
    assert!(body["data"][0].get("level").is_some(), "{body}");
}

#[tokio::test]
async fn pick_and_omit_name_entity_members_in_notifications() {
    let s = Server::start().await;
    let (picked, mut picked_rx) = receiver(StatusCode::OK).await;
    let (omitted, mut omitted_rx) = receiver(StatusCode::OK).await;
    let mut pick = subscription("urn:ngsi-ld:Subscription:pick", &picked);
    pick["notification"]["pick"] = json!(["id", "level"]);
    subscribe(&s, &pick).await;
    let mut omit = subscription("urn:ngsi-ld:Subscription:omit", &omitted);
    omit["notification"]["omit"] = json!(["type", "district"]);
    subscribe(&s, &omit).await;
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:pick").await;
    assert_eq!(got.body["notification"]["pick"], json!(["id", "level"]));
    let id = "urn:ngsi-ld:WaterLevelSensor:pick";
    s.create(sensor(id, 1.0)).await;
    // ETSI 046_42 and 046_43: the entity members are picked and omitted
    // like the attributes.
    let n = next(&mut picked_rx).await;
    assert_eq!(
        n.body["data"][0],
        json!({"id": id, "level": {"type": "Property", "value": 1.0, "unitCode": "MTR"}})
    );
    let n = next(&mut omitted_rx).await;
    let d = n.body["data"][0].as_object().unwrap();
    assert_eq!(d["id"], id);
    assert!(
        d.get("type").is_none() && d.get("district").is_none(),
        "{d:?}"
    );
    assert!(
        d.get("level").is_some() && d.get("location").is_some(),
        "{d:?}"
    );
}

fn building(id: &str) -> Value {
    json!({
        "id": id,
        "type": "Building",
        "name": [
            {"type": "Property", "value": "Canton Tower"},
            {"type": "Property", "value": "Tour de Canton", "datasetId": "urn:ngsi-ld:Dataset:fr"},
            {"type": "Property", "value": "Kantonturm", "datasetId": "urn:ngsi-ld:Dataset:de"},
        ],
        "street": {"type": "LanguageProperty", "languageMap": {"en": "Yuejiang West Road", "zh": "阅江西路"}},
        "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:District:Haizhu"},
        "height": {"type": "Property", "value": 600},
    })
}

/// In the simplified form a multi-attribute is a `dataset` map (clause
/// 4.5.4): a deleted instance is its datasetId's marker there, beside the
/// remaining instances (ETSI 046_22_07); one instance left and one deleted
/// make a map too.
#[tokio::test]
async fn deleted_instances_in_key_values_go_in_the_dataset_map() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:deleted-kv",
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "watchedAttributes": ["name"],
            "notificationTrigger": ["attributeDeleted"],
            "notification": {"endpoint": {"uri": uri}, "format": "keyValues"},
        }),
    )
    .await;
    let id = "urn:ngsi-ld:Building:canton-kv";
    s.create(building(id)).await;
    let attr = |query: &str| format!("/entities/{}/attrs/name{query}", enc(id));
    s.delete(&attr("?datasetId=urn:ngsi-ld:Dataset:fr"))
        .await
        .no_content();
    let n = next(&mut rx).await;
    assert_eq!(
        n.body["data"][0]["name"],
        json!({"dataset": {
            "@none": "Canton Tower",
            "urn:ngsi-ld:Dataset:de": "Kantonturm",
            "urn:ngsi-ld:Dataset:fr": "urn:ngsi-ld:null",
        }})
    );
    s.delete(&attr("?datasetId=urn:ngsi-ld:Dataset:de"))
        .await
        .no_content();
    let n = next(&mut rx).await;
    assert_eq!(
        n.body["data"][0]["name"],
        json!({"dataset": {"@none": "Canton Tower", "urn:ngsi-ld:Dataset:de": "urn:ngsi-ld:null"}})
    );
}

#[tokio::test]
async fn deletions_are_notified_with_markers_system_attributes_and_previous_values() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:deleted",
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "watchedAttributes": ["name", "street", "locatedAt"],
            "notificationTrigger": ["attributeDeleted"],
            "notification": {"endpoint": {"uri": uri}, "sysAttrs": true, "showChanges": true},
        }),
    )
    .await;
    let id = "urn:ngsi-ld:Building:canton";
    s.create(building(id)).await;
    let attr = |name: &str, query: &str| format!("/entities/{}/attrs/{name}{query}", enc(id));

    // One instance deleted: the remaining ones, then the deleted one with
    // its datasetId (ETSI 046_22_06), deletedAt (046_22_05) and previous
    // value (046_34).
    s.delete(&attr("name", "?datasetId=urn:ngsi-ld:Dataset:fr"))
        .await
        .no_content();
    let n = next(&mut rx).await;
    let name = n.body["data"][0]["name"].as_array().unwrap().clone();
    assert_eq!(name.len(), 3, "{name:?}");
    assert_eq!(name[0]["value"], "Canton Tower");
    assert_eq!(name[1]["value"], "Kantonturm");
    let marker = name[2].as_object().unwrap();
    assert_eq!(marker["type"], "Property");
    assert_eq!(marker["value"], "urn:ngsi-ld:null");
    assert_eq!(marker["datasetId"], "urn:ngsi-ld:Dataset:fr");
    assert_eq!(marker["previousValue"], "Tour de Canton");
    for member in ["createdAt", "modifiedAt", "deletedAt"] {
        assert!(
            marker[member].as_str().is_some_and(|t| t.ends_with('Z')),
            "{marker:?}"
        );
    }

    // Every instance deleted: one marker for the attribute (046_22_08).
    s.delete(&attr("name", "?deleteAll=true"))
        .await
        .no_content();
    let n = next(&mut rx).await;
    let name = &n.body["data"][0]["name"];
    assert_eq!(name["value"], "urn:ngsi-ld:null", "{name}");
    assert_eq!(name["previousValue"], "Canton Tower", "{name}");
    assert!(name.get("datasetId").is_none(), "{name}");

    // A LanguageProperty: the languageMap is {"@none": null} (clause 5.2.1).
    s.delete(&attr("street", "")).await.no_content();
    let n = next(&mut rx).await;
    let street = &n.body["data"][0]["street"];
    assert_eq!(street["type"], "LanguageProperty");
    assert_eq!(street["languageMap"], json!({"@none": "urn:ngsi-ld:null"}));
    assert_eq!(
        street["previousLanguageMap"],
        json!({"en": "Yuejiang West Road", "zh": "阅江西路"})
    );

    // An attribute that is not watched: nothing (046_22_03).
    s.delete(&attr("height", "")).await.no_content();
    nothing(&mut rx, 300).await;

    // The entity deleted: attributeDeleted notifies the watched attributes
    // it still had, as deleted (046_22_12, 046_22_13).
    s.delete(&format!("/entities/{}", enc(id)))
        .await
        .no_content();
    let n = next(&mut rx).await;
    let d = n.body["data"][0].as_object().unwrap();
    let mut keys: Vec<&str> = d.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "createdAt",
            "deletedAt",
            "id",
            "locatedAt",
            "modifiedAt",
            "type"
        ],
        "{d:?}"
    );
    assert_eq!(d["locatedAt"]["object"], "urn:ngsi-ld:null");
    assert_eq!(
        d["locatedAt"]["previousObject"],
        "urn:ngsi-ld:District:Haizhu"
    );
    assert!(d["locatedAt"]["deletedAt"].is_string(), "{d:?}");
}

#[tokio::test]
async fn an_entity_deletion_is_notified_bare_unless_changes_are_shown() {
    let s = Server::start().await;
    let (bare, mut bare_rx) = receiver(StatusCode::OK).await;
    let (changes, mut changes_rx) = receiver(StatusCode::OK).await;
    let (sys, mut sys_rx) = receiver(StatusCode::OK).await;
    for (id, uri, show, sys_attrs) in [
        ("bare", &bare, false, false),
        ("changes", &changes, true, false),
        ("sys", &sys, false, true),
    ] {
        subscribe(
            &s,
            &json!({
                "id": format!("urn:ngsi-ld:Subscription:{id}"),
                "type": "Subscription",
                "entities": [{"type": "Building"}],
                "notificationTrigger": ["entityDeleted"],
                "notification": {"endpoint": {"uri": uri}, "showChanges": show, "sysAttrs": sys_attrs},
            }),
        )
        .await;
    }
    let id = "urn:ngsi-ld:Building:gone";
    s.create(building(id)).await;
    s.delete(&format!("/entities/{}", enc(id)))
        .await
        .no_content();
    // ETSI 046_21: id, type and deletedAt only.
    let n = next(&mut bare_rx).await;
    let d = n.body["data"][0].as_object().unwrap();
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d["deletedAt"].is_string());
    // ETSI 046_21_02: and createdAt, modifiedAt with sysAttrs.
    let n = next(&mut sys_rx).await;
    let d = n.body["data"][0].as_object().unwrap();
    assert_eq!(d.len(), 5, "{d:?}");
    assert!(
        d["createdAt"].is_string() && d["modifiedAt"].is_string(),
        "{d:?}"
    );
    // ETSI 046_37: with showChanges every attribute, deleted, with its last
    // value.
    let n = next(&mut changes_rx).await;
    let d = &n.body["data"][0];
    assert_eq!(
        d["height"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": 600})
    );
    assert_eq!(
        d["name"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": "Canton Tower"})
    );
    assert_eq!(
        d["locatedAt"]["previousObject"],
        "urn:ngsi-ld:District:Haizhu"
    );
    assert_eq!(
        d["street"]["languageMap"],
        json!({"@none": "urn:ngsi-ld:null"})
    );
}

#[tokio::test]
async fn creation_and_update_rules_of_the_etsi_suite() {
    let s = Server::start().await;
    let ok = subscription("urn:ngsi-ld:Subscription:rules", "http://127.0.0.1:9/n");
    let with_notification = |extra: Value| {
        let mut b = ok.clone();
        for (k, v) in extra.as_object().unwrap() {
            b["notification"][k] = v.clone();
        }
        b
    };
    let with_endpoint = |extra: Value| {
        let mut b = ok.clone();
        for (k, v) in extra.as_object().unwrap() {
            b["notification"]["endpoint"][k] = v.clone();
        }
        b
    };
    let mut invalid_context = ok.clone();
    invalid_context["jsonldContext"] = json!("unknownContext");
    // ETSI 028_07_01, 028_09, 028_10.
    for (what, body) in [
        ("jsonldContext not a URI", invalid_context),
        (
            "simplified with showChanges",
            with_notification(json!({"format": "simplified", "showChanges": true})),
        ),
        (
            "empty attributes",
            with_notification(json!({"attributes": []})),
        ),
        ("empty pick", with_notification(json!({"pick": []}))),
        ("empty omit", with_notification(json!({"omit": []}))),
        (
            "number as receiverInfo value",
            with_endpoint(json!({"receiverInfo": [{"key": "K", "value": 42}]})),
        ),
        (
            "object as notifierInfo value",
            with_endpoint(json!({"notifierInfo": [{"key": "K", "value": {"a": 1}}]})),
        ),
        (
            "receiverInfo without value",
            with_endpoint(json!({"receiverInfo": [{"key": "K"}]})),
        ),
        (
            "number as receiverInfo key",
            with_endpoint(json!({"receiverInfo": [{"key": 5, "value": "v"}]})),
        ),
    ] {
        let r = s.post("/subscriptions", &body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        r.problem(400, "BadRequestData");
    }
    // ETSI 028_08: pick with omit on one member, attributes with either.
    for extra in [
        json!({"pick": ["id"], "omit": ["id"]}),
        json!({"pick": ["level"], "attributes": ["level"]}),
        json!({"omit": ["level"], "attributes": ["level"]}),
    ] {
        s.post("/subscriptions", &with_notification(extra))
            .await
            .problem(400, "BadRequestData");
    }
    // ETSI 028_07_02: a jsonldContext that cannot be fetched.
    let mut unavailable = ok.clone();
    unavailable["jsonldContext"] = json!("http://127.0.0.1:9/missing.jsonld");
    s.post("/subscriptions", &unavailable)
        .await
        .problem(503, "LdContextNotAvailable");

    // ETSI 5811_02_04: read-only and unknown members are ignored, not
    // echoed.
    let mut read_only = ok.clone();
    read_only["status"] = json!("expired");
    read_only["__context"] = json!("http://127.0.0.1:9/hijacked.jsonld");
    read_only["notification"]["timesSent"] = json!(42);
    subscribe(&s, &read_only).await;
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:rules").await;
    assert_eq!(got.body["status"], "active");
    assert!(!got.text.contains("hijacked"), "{}", got.text);
    assert!(
        got.body["notification"].get("timesSent").is_none(),
        "{}",
        got.text
    );

    // ETSI 029_01, 032_01: no id is 405, an id that is no URI is 400.
    let r = s.req(Method::DELETE, "/subscriptions/").send().await;
    assert_eq!(r.status, 405);
    s.delete("/subscriptions/InvalidUri")
        .await
        .problem(400, "BadRequestData");
    s.patch("/subscriptions/InvalidUri", &json!({"isActive": true}))
        .await
        .problem(400, "BadRequestData");
    // ETSI 029_06: the notification member is replaced.
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:rules",
        &json!({"type": "Subscription", "notification": {"format": "keyValues",
            "endpoint": {"uri": "http://my.second.endpoint.org/notify", "accept": "application/json"}}}),
    )
    .await
    .no_content();
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:rules").await;
    assert_eq!(
        got.body["notification"],
        json!({"format": "keyValues",
            "endpoint": {"uri": "http://my.second.endpoint.org/notify", "accept": "application/json"}})
    );
    // ETSI 029_04: the endpoint cannot be removed.
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:rules",
        &json!({"type": "Subscription", "notification": {"format": "keyValues", "endpoint": null}}),
    )
    .await
    .problem(400, "BadRequestData");

    // ETSI 029_10: an expired subscription is active again once expiresAt
    // is moved to the future.
    let soon = ngsi_model::time::format_micros(ngsi_model::time::now_micros() + 1_200_000);
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:rules",
        &json!({"expiresAt": soon}),
    )
    .await
    .no_content();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:rules").await;
    assert_eq!(got.body["status"], "expired", "{}", got.text);
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:rules",
        &json!({"type": "Subscription", "expiresAt": "2999-08-01T22:07:00Z"}),
    )
    .await
    .no_content();
    let got = s.get("/subscriptions/urn:ngsi-ld:Subscription:rules").await;
    assert_eq!(got.body["status"], "active", "{}", got.text);
}

#[tokio::test]
async fn notifications_select_types_instances_and_system_attributes() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    // ETSI 046_16: a type expression selects the entities.
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:types",
            "type": "Subscription",
            "entities": [{"type": "(Building|Tower)"}],
            "notificationTrigger": ["entityCreated"],
            "notification": {"endpoint": {"uri": uri}, "sysAttrs": true},
        }),
    )
    .await;
    s.create(sensor("urn:ngsi-ld:WaterLevelSensor:no", 1.0))
        .await;
    nothing(&mut rx, 300).await;
    s.create(building("urn:ngsi-ld:Building:types")).await;
    let n = next(&mut rx).await;
    let d = &n.body["data"][0];
    assert_eq!(d["id"], "urn:ngsi-ld:Building:types");
    // ETSI 046_17: sysAttrs shows createdAt and modifiedAt.
    assert!(
        d["createdAt"].is_string() && d["modifiedAt"].is_string(),
        "{d}"
    );
    s.delete("/subscriptions/urn:ngsi-ld:Subscription:types")
        .await
        .no_content();

    // ETSI 046_19: datasetId keeps only those instances; 046_20: the
    // jsonldContext compacts the notification, here the core context alone.
    let (ld_uri, mut ld_rx) = receiver(StatusCode::OK).await;
    let core_v18 = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:datasets",
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "datasetId": ["urn:ngsi-ld:Dataset:fr"],
            "jsonldContext": core_v18,
            "notification": {"endpoint": {"uri": ld_uri, "accept": "application/ld+json"}},
        }),
    )
    .await;
    s.patch(
        &format!("/entities/{}/attrs", enc("urn:ngsi-ld:Building:types")),
        &json!({"name": {"type": "Property", "value": "Tour de Canton (fr)", "datasetId": "urn:ngsi-ld:Dataset:fr"}}),
    )
    .await
    .no_content();
    let n = next(&mut ld_rx).await;
    let d = n.body["data"][0].as_object().unwrap();
    assert_eq!(d["@context"], core_v18);
    let name = &d["name"];
    assert_eq!(
        name,
        &json!({"type": "Property", "value": "Tour de Canton (fr)", "datasetId": "urn:ngsi-ld:Dataset:fr"}),
        "{d:?}"
    );
    assert!(
        d.keys()
            .all(|k| !k.ends_with("height") && !k.ends_with("street")),
        "only attributes with an instance in the datasets: {d:?}"
    );
}

#[tokio::test]
async fn deletions_by_merge_and_partial_update_and_the_previous_json_and_vocab() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let (kv_uri, mut kv_rx) = receiver(StatusCode::OK).await;
    // ETSI 5212_01: paused, nothing is delivered.
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:changes",
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "isActive": false,
            "notificationTrigger": ["attributeUpdated", "attributeDeleted", "entityDeleted"],
            "notification": {"endpoint": {"uri": uri}, "showChanges": true, "sysAttrs": true},
        }),
    )
    .await;
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:kv",
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "watchedAttributes": ["street"],
            "notificationTrigger": ["attributeDeleted"],
            "notification": {"endpoint": {"uri": kv_uri}, "format": "keyValues"},
        }),
    )
    .await;
    let id = "urn:ngsi-ld:Building:merge";
    let mut entity = building(id);
    entity["doc"] = json!({"type": "JsonProperty", "json": {"floors": 108, "null": null}});
    entity["kind"] = json!({"type": "VocabProperty", "vocab": "tower"});
    s.create(entity).await;
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"height": {"type": "Property", "value": 604}}),
    )
    .await
    .no_content();
    nothing(&mut rx, 300).await;
    s.patch(
        "/subscriptions/urn:ngsi-ld:Subscription:changes",
        &json!({"isActive": true}),
    )
    .await
    .no_content();

    // ETSI 046_32, 046_33: previousJson and previousVocab.
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"doc": {"type": "JsonProperty", "json": {"floors": 109}},
                "kind": {"type": "VocabProperty", "vocab": "mast"}}),
    )
    .await
    .no_content();
    let n = next(&mut rx).await;
    let d = &n.body["data"][0];
    assert_eq!(
        d["doc"]["previousJson"],
        json!({"floors": 108, "null": null})
    );
    assert_eq!(d["kind"]["previousVocab"], "tower", "{d}");

    // ETSI 046_22_09/10/11: a merge with the NGSI-LD Null and a partial
    // update with it delete the attribute, which is notified as deleted.
    s.patch(
        &format!("/entities/{}", enc(id)),
        &json!({"locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:null"}}),
    )
    .await
    .no_content();
    let n = next(&mut rx).await;
    let located = &n.body["data"][0]["locatedAt"];
    assert_eq!(located["object"], "urn:ngsi-ld:null", "{located}");
    assert_eq!(located["previousObject"], "urn:ngsi-ld:District:Haizhu");
    assert!(located["deletedAt"].is_string(), "{located}");
    s.patch(
        &format!("/entities/{}/attrs/street", enc(id)),
        &json!({"type": "LanguageProperty", "languageMap": {"@none": "urn:ngsi-ld:null"}}),
    )
    .await
    .no_content();
    let n = next(&mut rx).await;
    assert_eq!(
        n.body["data"][0]["street"]["languageMap"],
        json!({"@none": "urn:ngsi-ld:null"})
    );
    // ETSI 046_22_01/02: in keyValues the deleted attribute is the Null.
    let n = next(&mut kv_rx).await;
    let d = &n.body["data"][0];
    assert_eq!(d["street"], "urn:ngsi-ld:null", "{d}");
    assert_eq!(d["height"], 604, "{d}");

    // ETSI 046_35, 046_36: deleted JsonProperty and VocabProperty.
    s.delete(&format!("/entities/{}/attrs/doc", enc(id)))
        .await
        .no_content();
    let n = next(&mut rx).await;
    let doc = &n.body["data"][0]["doc"];
    assert_eq!(doc["json"], "urn:ngsi-ld:null", "{doc}");
    assert_eq!(doc["previousJson"], json!({"floors": 109}));

    // ETSI 046_21_02, 046_38, 046_39: the entity deleted, with the system
    // attributes and the last values.
    s.delete(&format!("/entities/{}", enc(id)))
        .await
        .no_content();
    let n = next(&mut rx).await;
    let d = n.body["data"][0].as_object().unwrap();
    assert!(
        d["createdAt"].is_string() && d["deletedAt"].is_string(),
        "{d:?}"
    );
    assert_eq!(d["kind"]["vocab"], "urn:ngsi-ld:null", "{d:?}");
    assert_eq!(d["kind"]["previousVocab"], "mast", "{d:?}");
    assert!(d.get("doc").is_none(), "deleted before: {d:?}");
}

/// Update Attributes (5.6.2) appends an attribute that did not exist and
/// deletes one with the NGSI-LD Null: both are notified, as attributeCreated
/// and attributeDeleted (ETSI 046_20, 046_41, 046_22_09/10/11 case 02).
#[tokio::test]
async fn update_attributes_that_append_and_delete_are_notified() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({
            "id": "urn:ngsi-ld:Subscription:update-attrs",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "notificationTrigger": ["attributeCreated", "attributeDeleted"],
            "notification": {"endpoint": {"uri": uri}, "showChanges": true},
        }),
    )
    .await;
    let id = "urn:ngsi-ld:WaterLevelSensor:ua";
    s.create(sensor(id, 1.0)).await;
    // The creation creates its attributes.
    next(&mut rx).await;
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"name": {"type": "Property", "value": "Liede"}}),
    )
    .await
    .no_content();
    let created = next(&mut rx).await;
    assert_eq!(
        created.body["data"][0]["name"],
        json!({"type": "Property", "value": "Liede"}),
        "no previousValue for a new attribute: {}",
        created.body
    );
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"district": {"type": "Property", "value": "urn:ngsi-ld:null"}}),
    )
    .await
    .no_content();
    let deleted = next(&mut rx).await;
    assert_eq!(
        deleted.body["data"][0]["district"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": "Haizhu"})
    );
    assert!(s.entity(id, "").await.get("district").is_none());
}

#[tokio::test]
async fn a_linked_entity_term_in_q_follows_the_relationship_at_notification_time() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    s.create(json!({"id": "urn:ngsi-ld:Battery:1", "type": "Battery",
        "batteryLevel": {"type": "Property", "value": 0.9}}))
        .await;
    s.create(json!({"id": "urn:ngsi-ld:Robot:1", "type": "Robot",
        "isConnectedTo": {"type": "Relationship", "object": "urn:ngsi-ld:Battery:1"},
        "speed": {"type": "Property", "value": 1}}))
        .await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:linked", &uri);
    sub["entities"] = json!([{"type": "Robot"}]);
    sub["watchedAttributes"] = json!(["speed"]);
    sub["q"] = json!("isConnectedTo{Battery:batteryLevel}<0.5");
    subscribe(&s, &sub).await;
    let speed = |v: i64| json!({"speed": {"type": "Property", "value": v}});
    // The battery is full: a change of the robot notifies nothing.
    s.patch("/entities/urn:ngsi-ld:Robot:1/attrs", &speed(2))
        .await
        .no_content();
    nothing(&mut rx, 300).await;
    // The battery runs low; the next change of the robot is notified.
    s.patch(
        "/entities/urn:ngsi-ld:Battery:1/attrs",
        &json!({"batteryLevel": {"type": "Property", "value": 0.3}}),
    )
    .await
    .no_content();
    s.patch("/entities/urn:ngsi-ld:Robot:1/attrs", &speed(3))
        .await
        .no_content();
    let n = next(&mut rx).await;
    assert_eq!(n.body["data"][0]["id"], "urn:ngsi-ld:Robot:1");
    assert_eq!(n.body["data"][0]["speed"]["value"], 3);
    // The q reads back with its type hint compacted.
    let got = s
        .get("/subscriptions/urn:ngsi-ld:Subscription:linked")
        .await
        .body;
    assert_eq!(got["q"], "isConnectedTo{Battery:batteryLevel}<0.5");
    // Periodic notifications select with the same term: the robot on a
    // full battery is left out.
    s.create(json!({"id": "urn:ngsi-ld:Battery:2", "type": "Battery",
        "batteryLevel": {"type": "Property", "value": 0.8}}))
        .await;
    s.create(json!({"id": "urn:ngsi-ld:Robot:2", "type": "Robot",
        "isConnectedTo": {"type": "Relationship", "object": "urn:ngsi-ld:Battery:2"}}))
        .await;
    let (uri, mut periodic) = receiver(StatusCode::OK).await;
    let mut sub = subscription("urn:ngsi-ld:Subscription:linked-periodic", &uri);
    sub["entities"] = json!([{"type": "Robot"}]);
    sub.as_object_mut().unwrap().remove("watchedAttributes");
    sub["timeInterval"] = json!(1);
    sub["q"] = json!("isConnectedTo{batteryLevel}<0.5");
    subscribe(&s, &sub).await;
    let n = next(&mut periodic).await;
    assert_eq!(n.body["data"][0]["id"], "urn:ngsi-ld:Robot:1");
    assert_eq!(n.body["data"].as_array().unwrap().len(), 1, "{}", n.body);
    // Deeper than joinLevel may go, or in csf: refused.
    let deep = format!(
        "{}batteryLevel{}<0.5",
        "isConnectedTo{".repeat(11),
        "}".repeat(11)
    );
    for (member, value) in [("q", deep.as_str()), ("csf", "isConnectedTo{batteryLevel}")] {
        let mut bad = subscription(
            "urn:ngsi-ld:Subscription:linked-bad",
            "http://127.0.0.1:1/notify",
        );
        bad[member] = json!(value);
        s.post("/subscriptions", &bad)
            .await
            .problem(400, "BadRequestData");
    }
    // A type hint that excludes the battery: the robot never matches.
    let mut sub = subscription("urn:ngsi-ld:Subscription:linked-none", &uri);
    sub["entities"] = json!([{"type": "Robot"}]);
    sub["q"] = json!("isConnectedTo{Robot:batteryLevel}<0.5");
    sub["watchedAttributes"] = json!(["speed"]);
    let (uri, mut none) = receiver(StatusCode::OK).await;
    sub["notification"]["endpoint"]["uri"] = json!(uri);
    subscribe(&s, &sub).await;
    s.patch("/entities/urn:ngsi-ld:Robot:1/attrs", &speed(4))
        .await
        .no_content();
    nothing(&mut none, 300).await;
}

/// A building located in a city, and a subscription to buildings that
/// notifies with `notification` (endpoint added).
async fn linked_notification(s: &Server, id: &str, notification: Value) -> Received {
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    let building = format!("urn:ngsi-ld:Building:{id}");
    s.create(json!({"id": building, "type": "Building",
        "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:Guangzhou"}}))
        .await;
    let mut n = notification;
    n["endpoint"] = json!({"uri": uri, "accept": "application/json"});
    subscribe(
        s,
        &json!({"id": format!("urn:ngsi-ld:Subscription:{id}"), "type": "Subscription",
                "entities": [{"id": building, "type": "Building"}], "notification": n}),
    )
    .await;
    s.patch(
        &format!("/entities/{}/attrs", enc(&building)),
        &json!({"name": {"type": "Property", "value": "Canton Tower"}}),
    )
    .await
    .no_content();
    next(&mut rx).await
}

#[tokio::test]
async fn notifications_carry_linked_entities_with_join() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:ngsi-ld:City:Guangzhou", "type": "City",
        "name": {"type": "Property", "value": "Guangzhou"},
        "isInCountry": {"type": "Relationship", "object": "urn:ngsi-ld:Country:China"}}))
        .await;
    s.create(json!({"id": "urn:ngsi-ld:Country:China", "type": "Country",
        "name": {"type": "Property", "value": "China"}}))
        .await;
    // Flat: the Linked Entity follows the entity in `data`.
    let n = linked_notification(&s, "flat", json!({"join": "flat", "joinLevel": 1})).await;
    let data = n.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{}", n.body);
    assert_eq!(data[0]["id"], "urn:ngsi-ld:Building:flat");
    assert_eq!(data[0]["name"]["value"], "Canton Tower");
    assert_eq!(data[1]["id"], "urn:ngsi-ld:City:Guangzhou");
    assert_eq!(data[1]["name"]["value"], "Guangzhou");
    // Two levels reach the country; `attributes` selects the members of the
    // notified entity only (ETSI 046_26): the Linked Entities stay whole.
    let n = linked_notification(
        &s,
        "flat2",
        json!({"join": "flat", "joinLevel": 2, "attributes": ["locatedAt"]}),
    )
    .await;
    let data = n.body["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "urn:ngsi-ld:Building:flat2",
            "urn:ngsi-ld:City:Guangzhou",
            "urn:ngsi-ld:Country:China"
        ]
    );
    assert!(data[0].get("name").is_none(), "{}", data[0]);
    assert_eq!(
        data[1]["isInCountry"]["object"],
        "urn:ngsi-ld:Country:China"
    );
    // Inline: inside the Relationship (ETSI 046_27, 046_30).
    let n = linked_notification(
        &s,
        "inline",
        json!({"join": "inline", "attributes": ["locatedAt"]}),
    )
    .await;
    let data = n.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", n.body);
    let city = &data[0]["locatedAt"]["entity"];
    assert_eq!(city["name"]["value"], "Guangzhou", "{}", n.body);
    assert!(city["isInCountry"].get("entity").is_none(), "one level");
    // keyValues: the Linked Entity stands in for the object (046_29).
    let n = linked_notification(
        &s,
        "inline-kv",
        json!({"join": "inline", "joinLevel": 2, "format": "keyValues"}),
    )
    .await;
    let b = &n.body["data"][0];
    assert_eq!(b["locatedAt"]["name"], "Guangzhou", "{b}");
    assert_eq!(b["locatedAt"]["isInCountry"]["name"], "China", "{b}");
    // With showChanges too (the entity is built member by member there).
    let n = linked_notification(
        &s,
        "inline-changes",
        json!({"join": "inline", "showChanges": true}),
    )
    .await;
    assert_eq!(
        n.body["data"][0]["locatedAt"]["entity"]["name"]["value"], "Guangzhou",
        "{}",
        n.body
    );
    // Without join nothing is added, and the members read back as given.
    let n = linked_notification(&s, "none", json!({"join": "@none"})).await;
    assert_eq!(n.body["data"].as_array().unwrap().len(), 1);
    assert!(n.body["data"][0]["locatedAt"].get("entity").is_none());
    let got = s
        .get("/subscriptions/urn:ngsi-ld:Subscription:flat2")
        .await
        .body;
    assert_eq!(got["notification"]["join"], "flat");
    assert_eq!(got["notification"]["joinLevel"], 2);
    // Two buildings in one commit linked to one city: the city once.
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({"id": "urn:ngsi-ld:Subscription:flat-batch", "type": "Subscription",
                "entities": [{"idPattern": "^urn:ngsi-ld:Building:flat", "type": "Building"}],
                "notification": {"join": "flat", "endpoint": {"uri": uri, "accept": "application/json"}}}),
    )
    .await;
    let r = s
        .post(
            "/entityOperations/update",
            &json!([
                {"id": "urn:ngsi-ld:Building:flat", "type": "Building",
                 "name": {"type": "Property", "value": "One"}},
                {"id": "urn:ngsi-ld:Building:flat2", "type": "Building",
                 "name": {"type": "Property", "value": "Two"}}
            ]),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let n = next(&mut rx).await;
    let ids: Vec<&str> = n.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "urn:ngsi-ld:Building:flat",
            "urn:ngsi-ld:Building:flat2",
            "urn:ngsi-ld:City:Guangzhou"
        ],
        "{}",
        n.body
    );
    // Braces in pick and omit project the Linked Entities (clause 4.21),
    // level by level, and read back as given.
    let n = linked_notification(
        &s,
        "inline-pick",
        json!({"join": "inline", "joinLevel": 2,
               "pick": ["id", "locatedAt{name,isInCountry{name}}"]}),
    )
    .await;
    assert_eq!(
        n.body["data"][0],
        json!({"id": "urn:ngsi-ld:Building:inline-pick",
               "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:Guangzhou",
                   "entity": {"name": {"type": "Property", "value": "Guangzhou"},
                       "isInCountry": {"type": "Relationship", "object": "urn:ngsi-ld:Country:China",
                           "entity": {"name": {"type": "Property", "value": "China"}}}}}}),
        "{}",
        n.body
    );
    let got = s
        .get("/subscriptions/urn:ngsi-ld:Subscription:inline-pick")
        .await
        .body;
    assert_eq!(
        got["notification"]["pick"],
        json!(["id", "locatedAt{name,isInCountry{name}}"])
    );
    let n = linked_notification(
        &s,
        "flat-omit",
        json!({"join": "flat", "omit": ["name", "locatedAt{isInCountry}"]}),
    )
    .await;
    let data = n.body["data"].as_array().unwrap();
    assert_eq!(data[0].get("name"), None, "{}", n.body);
    assert_eq!(data[1]["id"], "urn:ngsi-ld:City:Guangzhou", "{}", n.body);
    assert_eq!(data[1]["name"]["value"], "Guangzhou", "{}", n.body);
    assert_eq!(data[1].get("isInCountry"), None, "{}", n.body);
    // Invalid members are refused, braces without join or deeper than
    // joinLevel too.
    for bad in [
        json!({"join": "deep"}),
        json!({"join": 1}),
        json!({"join": "inline", "joinLevel": 0}),
        json!({"join": "inline", "joinLevel": 11}),
        json!({"join": "inline", "joinLevel": "2"}),
        json!({"pick": ["locatedAt{name}"]}),
        json!({"join": "flat", "omit": ["locatedAt{isInCountry{name}}"]}),
        json!({"join": "flat", "pick": ["locatedAt{{name}"]}),
    ] {
        let mut n = bad.clone();
        n["endpoint"] = json!({"uri": "http://127.0.0.1:1/notify"});
        s.post(
            "/subscriptions",
            &json!({"type": "Subscription", "entities": [{"type": "Building"}], "notification": n}),
        )
        .await
        .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn the_live_stream_follows_linked_entity_terms() {
    let s = Server::start().await;
    for (id, level) in [("low", 0.2), ("full", 0.9)] {
        s.create(
            json!({"id": format!("urn:ngsi-ld:Battery:{id}"), "type": "Battery",
            "batteryLevel": {"type": "Property", "value": level}}),
        )
        .await;
    }
    let mut stream = reqwest::Client::new()
        .get(format!(
            "{}/wuyang/v1/live?type=Robot&q={}",
            s.origin,
            enc("isConnectedTo{batteryLevel}<0.5")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // The robot on the full battery is created first: a wrong match would
    // be the first event.
    for id in ["full", "low"] {
        s.create(json!({"id": format!("urn:ngsi-ld:Robot:{id}"), "type": "Robot",
            "isConnectedTo": {"type": "Relationship", "object": format!("urn:ngsi-ld:Battery:{id}")}}))
            .await;
    }
    let event = first_event(&mut stream).await;
    assert!(event.contains("urn:ngsi-ld:Robot:low"), "{event}");
    assert!(!event.contains("urn:ngsi-ld:Robot:full"), "{event}");
}

/// In an update the NGSI-LD Null removes a member, as JSON null does
/// (clauses 5.5.8 and 5.8.2.4); in a create it is no value.
#[tokio::test]
async fn the_ngsi_ld_null_removes_members_in_an_update() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Subscription:nulls";
    let sub = json!({"id": id, "type": "Subscription", "entities": [{"type": "Vehicle"}],
        "watchedAttributes": ["speed"], "q": "speed>5", "description": "fast cars",
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}});
    assert_eq!(s.post("/subscriptions", &sub).await.status, 201);
    let path = format!("/subscriptions/{}", enc(id));
    s.patch(
        &path,
        &json!({"watchedAttributes": "urn:ngsi-ld:null", "q": "urn:ngsi-ld:null",
                "description": null}),
    )
    .await
    .no_content();
    let got = s.get(&path).await.body;
    for gone in ["watchedAttributes", "q", "description"] {
        assert!(got.get(gone).is_none(), "{gone}: {got}");
    }
    assert_eq!(got["entities"], json!([{"type": "Vehicle"}]));
    let mut bad = sub.clone();
    bad["id"] = json!("urn:ngsi-ld:Subscription:bad");
    bad["watchedAttributes"] = json!("urn:ngsi-ld:null");
    s.post("/subscriptions", &bad)
        .await
        .problem(400, "BadRequestData");
}

/// expandValues and jsonKeys of a Subscription (Table 5.2.12-1): the words
/// `q` compares the listed attributes with are terms, expanded as a
/// VocabProperty's vocab is; jsonKeys keeps them literal. An update that
/// changes neither keeps the words as they were read.
#[tokio::test]
async fn expand_values_and_json_keys_of_a_subscription_apply_to_q() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:v:shop", "type": "Shop",
                    "category": {"type": "VocabProperty", "vocab": "commercial"},
                    "visitors": {"type": "Property", "value": 1}}))
        .await;
    let mut receivers = Vec::new();
    for (name, members) in [
        ("expanded", json!({"expandValues": "category"})),
        ("literal", json!({})),
        (
            "json",
            json!({"expandValues": "category", "jsonKeys": "category"}),
        ),
    ] {
        let (uri, rx) = receiver(StatusCode::OK).await;
        let mut body = json!({
            "id": format!("urn:ngsi-ld:Subscription:{name}"),
            "type": "Subscription",
            "entities": [{"type": "Shop"}],
            "q": "category==commercial",
            "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
        });
        body.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        subscribe(&s, &body).await;
        receivers.push(rx);
    }
    let visit = |n: i64| {
        let s = &s;
        async move {
            s.patch(
                "/entities/urn:v:shop/attrs",
                &json!({"visitors": {"type": "Property", "value": n}}),
            )
            .await
            .no_content();
        }
    };
    visit(2).await;
    let got = next(&mut receivers[0]).await;
    assert_eq!(got.body["data"][0]["id"], "urn:v:shop", "{}", got.body);
    nothing(&mut receivers[1], 300).await;
    nothing(&mut receivers[2], 0).await;
    // Rendered back as given, the names compacted.
    let sub = s.get("/subscriptions/urn:ngsi-ld:Subscription:json").await;
    assert_eq!(sub.body["expandValues"], "category", "{}", sub.text);
    assert_eq!(sub.body["jsonKeys"], "category", "{}", sub.text);
    assert_eq!(sub.body["q"], "category==commercial", "{}", sub.text);
    // Another member changed: the words stay expanded.
    let expanded = "/subscriptions/urn:ngsi-ld:Subscription:expanded";
    s.patch(expanded, &json!({"description": "shops"}))
        .await
        .no_content();
    visit(3).await;
    next(&mut receivers[0]).await;
    // expandValues removed: the word is compared as written again.
    s.patch(expanded, &json!({"expandValues": null}))
        .await
        .no_content();
    visit(4).await;
    nothing(&mut receivers[0], 300).await;
    assert!(s.get(expanded).await.body.get("expandValues").is_none());
    // Given back (as a list, like a Query's members): it applies again.
    s.patch(expanded, &json!({"expandValues": ["category"]}))
        .await
        .no_content();
    visit(5).await;
    next(&mut receivers[0]).await;
    s.post(
        "/subscriptions",
        &json!({"type": "Subscription", "entities": [{"type": "Shop"}],
                "expandValues": 5,
                "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}),
    )
    .await
    .problem(400, "BadRequestData");
}

/// A subscription's datasetId selects the attribute instances it is about
/// (Table 5.2.12-1): a change of another instance notifies nothing.
#[tokio::test]
async fn a_change_of_an_instance_the_dataset_id_leaves_out_notifies_nothing() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({"id": "urn:ngsi-ld:Subscription:ds", "type": "Subscription",
                "entities": [{"type": "Meter"}], "datasetId": ["urn:ds:b"],
                "notificationTrigger": ["attributeCreated", "attributeUpdated", "attributeDeleted"],
                "notification": {"endpoint": {"uri": uri}}}),
    )
    .await;
    s.create(json!({"id": "urn:m:1", "type": "Meter",
        "v": [{"type": "Property", "value": 1},
              {"type": "Property", "value": 2, "datasetId": "urn:ds:a"}]}))
        .await;
    let set = |ds: &'static str, value: i64| {
        let s = &s;
        async move {
            s.patch(
                "/entities/urn:m:1/attrs/v",
                &json!({"type": "Property", "value": value, "datasetId": ds}),
            )
            .await
            .no_content();
        }
    };
    set("urn:ds:a", 20).await;
    s.delete("/entities/urn:m:1/attrs/v?datasetId=urn:ds:a")
        .await
        .no_content();
    nothing(&mut rx, 300).await;
    // The selected instance appears: attributeCreated; then it changes.
    s.post(
        "/entities/urn:m:1/attrs",
        &json!({"v": {"type": "Property", "value": 3, "datasetId": "urn:ds:b"}}),
    )
    .await
    .no_content();
    let got = next(&mut rx).await;
    assert_eq!(
        got.body["data"][0]["v"]["datasetId"], "urn:ds:b",
        "{}",
        got.body
    );
    set("urn:ds:b", 30).await;
    let got = next(&mut rx).await;
    assert_eq!(got.body["data"][0]["v"]["value"], 30, "{}", got.body);
    // The default instance changes: still nothing.
    s.patch(
        "/entities/urn:m:1/attrs/v",
        &json!({"type": "Property", "value": 10}),
    )
    .await
    .no_content();
    nothing(&mut rx, 300).await;
}

/// With `lang`, a LanguageProperty is notified as the Property of one
/// language (clause 4.15), and showChanges gives its previous value in that
/// language.
#[tokio::test]
async fn show_changes_with_lang_gives_the_previous_value_in_that_language() {
    let s = Server::start().await;
    let (uri, mut rx) = receiver(StatusCode::OK).await;
    subscribe(
        &s,
        &json!({"type": "Subscription", "entities": [{"type": "Sign"}], "lang": "fr",
                "notification": {"showChanges": true, "endpoint": {"uri": uri}}}),
    )
    .await;
    s.create(json!({"id": "urn:sign:1", "type": "Sign",
        "n": {"type": "LanguageProperty", "languageMap": {"fr": "bonjour", "en": "hello"}}}))
        .await;
    next(&mut rx).await;
    s.patch(
        "/entities/urn:sign:1/attrs/n",
        &json!({"type": "LanguageProperty", "languageMap": {"fr": "salut", "en": "hi"}}),
    )
    .await
    .no_content();
    let got = next(&mut rx).await;
    let n = &got.body["data"][0]["n"];
    assert_eq!(
        (&n["type"], &n["value"], &n["previousValue"]),
        (&json!("Property"), &json!("salut"), &json!("bonjour")),
        "{}",
        got.body
    );
    assert!(n.get("previousLanguageMap").is_none(), "{}", got.body);
}
