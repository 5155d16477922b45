//! Snapshots (clauses 4.3.7, 5.2.41, 5.5.15, 5.16, 6.36–6.38): what a
//! snapshot's queries selected is frozen, read and changed through the
//! `NGSILD-Snapshot` header, and snapshots are updated, cloned, purged and
//! expire.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::federation_writes::source_answering;
use crate::subscriptions::{next, receiver};
use crate::support::{API, Resp, Server, enc, ids_of, sorted, vehicle};

const HEADER: &str = "NGSILD-Snapshot";

fn fast_vehicles() -> Value {
    json!({
        "type": "Snapshot",
        "snapshotQueries": [{"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed>50"}]
    })
}

/// Creates a snapshot; its id (from the Location, which must name it).
async fn create(s: &Server, tenant: Option<&str>, doc: &Value) -> String {
    let mut req = s.req(Method::POST, "/snapshots").json(doc);
    if let Some(t) = tenant {
        req = req.header("NGSILD-Tenant", t);
    }
    created_id(&req.send().await)
}

/// The id of the snapshot a 201 answer's Location names.
#[track_caller]
fn created_id(r: &Resp) -> String {
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").expect("a Location");
    let id = location
        .strip_prefix(&format!("{API}/snapshots/"))
        .expect("the Location names the snapshot");
    percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

/// Retrieves snapshot `id` until it is no longer preparing (8 s at most).
async fn ready(s: &Server, tenant: Option<&str>, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let mut req = s.req(Method::GET, &format!("/snapshots/{}", enc(id)));
        if let Some(t) = tenant {
            req = req.header("NGSILD-Tenant", t);
        }
        let r = req.send().await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["snapshotStatus"] != "preparing" {
            return r.body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "still preparing: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` on snapshot `id`.
async fn on(s: &Server, id: &str, path: &str) -> Resp {
    s.req(Method::GET, path).header(HEADER, id).send().await
}

/// The simplified history of entity `id` in snapshot `snap`.
async fn temporal_values(s: &Server, snap: &str, id: &str) -> Resp {
    let path = format!("/temporal/entities/{}?options=temporalValues", enc(id));
    on(s, snap, &path).await
}

#[tokio::test]
async fn a_snapshot_freezes_what_its_queries_selected_and_can_be_changed_apart() {
    let s = Server::start().await;
    let (fast, slow) = (
        "urn:ngsi-ld:Vehicle:snapfast",
        "urn:ngsi-ld:Vehicle:snapslow",
    );
    s.create(vehicle(fast, 80)).await;
    s.create(vehicle(slow, 30)).await;
    s.create(json!({"id": "urn:ngsi-ld:Bus:1", "type": "Bus", "speed": {"type": "Property", "value": 90}}))
        .await;
    let (endpoint, mut told) = receiver(StatusCode::OK).await;
    let mut doc = fast_vehicles();
    doc["endpoint"] = json!(endpoint);
    doc["receiverInfo"] = json!([{"key": "X-City", "value": "Guangzhou"}]);
    let id = create(&s, None, &doc).await;
    let snapshot = ready(&s, None, &id).await;
    assert_eq!(snapshot["id"], json!(id));
    assert_eq!(snapshot["type"], "Snapshot");
    assert_eq!(snapshot["snapshotStatus"], "success", "{snapshot}");
    assert_eq!(snapshot["snapshotPriority"], 5);
    assert_eq!(
        snapshot["snapshotQueriesDetails"],
        json!([{"resultStatus": "success"}])
    );
    assert_eq!(snapshot["snapshotQueries"], doc["snapshotQueries"]);
    for member in ["createdAt", "modifiedAt", "expiresAt", "lastUsedAt"] {
        assert!(snapshot[member].is_string(), "{member} in {snapshot}");
    }
    // The endpoint hears that it is ready (clause 5.16.6).
    let n = next(&mut told).await;
    assert_eq!(n.body["type"], "SnapshotNotification");
    assert_eq!(n.body["snapshotId"], json!(id));
    assert_eq!(n.body["snapshotStatus"], "success");
    assert_eq!(n.headers["x-city"], "Guangzhou");

    // Read through the header: only what the query selected, and the
    // header comes back.
    let r = on(&s, &id, "/entities?type=Vehicle,Bus").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header(HEADER), Some(id.as_str()));
    assert_eq!(ids_of(&r.body), vec![fast]);
    let types = on(&s, &id, "/types").await;
    assert_eq!(types.body["typeList"], json!(["Vehicle"]), "{}", types.text);

    // The city moves on; the snapshot does not.
    s.patch(
        &format!("/entities/{}/attrs", enc(fast)),
        &json!({"speed": {"type": "Property", "value": 10}}),
    )
    .await
    .no_content();
    let frozen = on(&s, &id, &format!("/entities/{}", enc(fast))).await;
    assert_eq!(frozen.body["speed"]["value"], 80, "{}", frozen.text);
    assert_eq!(s.entity(fast, "").await["speed"]["value"], 10);
    // A snapshot's own copy keeps the entity's system attributes.
    let created_live = s.entity(fast, "options=sysAttrs").await["createdAt"].clone();
    let frozen = on(
        &s,
        &id,
        &format!("/entities/{}?options=sysAttrs", enc(fast)),
    )
    .await;
    assert_eq!(frozen.body["createdAt"], created_live);

    // What-if: a change made on the snapshot stays there, and a
    // subscription made on it notifies with the snapshot's header.
    let (sub_endpoint, mut notified) = receiver(StatusCode::OK).await;
    let r = s
        .req(Method::POST, "/subscriptions")
        .header(HEADER, &id)
        .json(&json!({
            "type": "Subscription", "entities": [{"type": "Vehicle"}],
            "watchedAttributes": ["speed"],
            "notification": {"endpoint": {"uri": sub_endpoint}}
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(Method::PATCH, &format!("/entities/{}/attrs", enc(fast)))
        .header(HEADER, &id)
        .json(&json!({"speed": {"type": "Property", "value": 120}}))
        .send()
        .await;
    r.no_content();
    let n = next(&mut notified).await;
    assert_eq!(n.headers[HEADER], id.as_str());
    assert!(n.headers.get("NGSILD-Tenant").is_none());
    assert_eq!(n.body["data"][0]["speed"]["value"], 120);
    assert_eq!(s.entity(fast, "").await["speed"]["value"], 10);
    assert!(
        s.get("/subscriptions")
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
    let frozen = on(&s, &id, &format!("/entities/{}", enc(fast))).await;
    assert_eq!(frozen.body["speed"]["value"], 120);

    // Only the Core and Temporal APIs run on a snapshot.
    for path in [
        "/csourceRegistrations",
        "/entityMaps?type=Vehicle",
        "/jsonldContexts",
        "/snapshots/x",
    ] {
        on(&s, &id, path)
            .await
            .problem(422, "OperationNotSupported");
    }
    // A snapshot nobody made.
    let r = on(&s, "urn:ngsi-ld:snapshot:absent", "/entities?type=Vehicle").await;
    r.problem(404, "ResourceNotFound");
    on(&s, "not a uri", "/entities?type=Vehicle")
        .await
        .problem(400, "BadRequestData");

    // Deleted: the header finds nothing, the endpoint is told (expiresAt
    // before notifiedAt), and the snapshot's subscription is gone.
    s.delete(&format!("/snapshots/{}", enc(&id)))
        .await
        .no_content();
    s.get(&format!("/snapshots/{}", enc(&id)))
        .await
        .problem(404, "ResourceNotFound");
    on(&s, &id, "/entities?type=Vehicle")
        .await
        .problem(404, "ResourceNotFound");
    let n = next(&mut told).await;
    assert!(
        n.body["expiresAt"].as_str().unwrap() <= n.body["notifiedAt"].as_str().unwrap(),
        "{}",
        n.body
    );
    s.patch(
        &format!("/entities/{}/attrs", enc(fast)),
        &json!({"speed": {"type": "Property", "value": 11}}),
    )
    .await
    .no_content();
    crate::subscriptions::nothing(&mut notified, 300).await;
    // The same id can be taken again, and starts from the city as it is.
    let mut again = fast_vehicles();
    again["id"] = json!(id);
    again["snapshotQueries"][0]["q"] = json!("speed>0");
    assert_eq!(create(&s, None, &again).await, id);
    assert_eq!(ready(&s, None, &id).await["snapshotStatus"], "success");
    let r = on(&s, &id, &format!("/entities/{}", enc(fast))).await;
    assert_eq!(r.body["speed"]["value"], 11, "{}", r.text);
}

#[tokio::test]
async fn snapshots_are_checked_updated_cloned_purged_and_expire() {
    let s = Server::start().await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:a", 80)).await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:b", 30)).await;
    // Invalid snapshots (clause 5.16.1.4).
    for bad in [
        json!({"type": "Snapshot"}),
        json!({"snapshotQueries": fast_vehicles()["snapshotQueries"]}),
        json!({"type": "Snapshot", "snapshotQueries": [{"type": "Query", "entities": [{"type": "Vehicle"}],
               "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"}}]}),
        json!({"type": "Snapshot", "snapshotTemporalQueries": [{"type": "Query", "entities": [{"type": "Vehicle"}]}]}),
        json!({"type": "Snapshot", "snapshotQueries": [{"type": "Query", "q": "speed>"}]}),
        json!({"type": "Snapshot", "snapshotQueries": "all"}),
        {
            let mut d = fast_vehicles();
            d["snapshotPriority"] = json!(11);
            d
        },
        {
            let mut d = fast_vehicles();
            d["snapshotLifetime"] = json!("a day");
            d
        },
        {
            let mut d = fast_vehicles();
            d["id"] = json!("not a uri");
            d
        },
    ] {
        s.post("/snapshots", &bad)
            .await
            .problem(400, "BadRequestData");
    }
    let mut doc = fast_vehicles();
    doc["id"] = json!("urn:ngsi-ld:Snapshot:checked");
    let id = create(&s, None, &doc).await;
    s.post("/snapshots", &doc)
        .await
        .problem(409, "AlreadyExists");
    ready(&s, None, &id).await;
    let path = format!("/snapshots/{}", enc(&id));

    // Update (clause 5.16.4): 200 with the Snapshot; the queries and the
    // id cannot change; members the broker sets are ignored.
    let r = s
        .patch(
            &path,
            &json!({"snapshotPriority": 2, "snapshotStatus": "failure"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["snapshotPriority"], 2);
    assert_eq!(r.body["snapshotStatus"], "success");
    s.patch(&path, &json!({"snapshotQueries": []}))
        .await
        .problem(400, "BadRequestData");
    s.patch(&path, &json!({"id": "urn:ngsi-ld:Snapshot:other"}))
        .await
        .problem(400, "BadRequestData");
    s.patch(
        "/snapshots/urn:ngsi-ld:Snapshot:none",
        &json!({"snapshotPriority": 3}),
    )
    .await
    .problem(404, "ResourceNotFound");
    s.get("/snapshots/not%20a%20uri")
        .await
        .problem(400, "BadRequestData");

    // Clone (clause 5.16.2): a copy of the data with its own members.
    let r = s
        .post(
            &format!("{path}/clone"),
            &json!({"type": "Snapshot", "snapshotPriority": 9}),
        )
        .await;
    let clone = created_id(&r);
    assert_ne!(clone, id);
    let cloned = ready(&s, None, &clone).await;
    assert_eq!(cloned["snapshotStatus"], "success");
    assert_eq!(cloned["snapshotPriority"], 9);
    assert_eq!(cloned["snapshotQueries"], doc["snapshotQueries"]);
    s.post(
        &format!("{path}/clone"),
        &json!({"type": "Snapshot", "snapshotQueries": []}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        "/snapshots/urn:ngsi-ld:Snapshot:none/clone",
        &json!({"type": "Snapshot"}),
    )
    .await
    .problem(404, "ResourceNotFound");
    // A change on the original is not in the clone.
    s.req(
        Method::DELETE,
        &format!("/entities/{}", enc("urn:ngsi-ld:Vehicle:a")),
    )
    .header(HEADER, &id)
    .send()
    .await
    .no_content();
    assert!(ids_of(&on(&s, &id, "/entities?type=Vehicle").await.body).is_empty());
    let r = on(&s, &clone, "/entities?type=Vehicle").await;
    assert_eq!(ids_of(&r.body), vec!["urn:ngsi-ld:Vehicle:a"], "{}", r.text);

    // Purge (clause 5.16.7): q over the Snapshot's members only.
    s.delete("/snapshots").await.problem(400, "BadRequestData");
    s.delete("/snapshots?q=speed%3E50")
        .await
        .problem(400, "BadRequestData");
    s.delete("/snapshots?q=snapshotPriority%3E10")
        .await
        .problem(404, "ResourceNotFound");
    s.delete("/snapshots?q=snapshotPriority%3C5")
        .await
        .no_content();
    s.get(&path).await.problem(404, "ResourceNotFound");
    assert_eq!(
        s.get(&format!("/snapshots/{}", enc(&clone))).await.status,
        200
    );
    s.delete("/snapshots?q=snapshotStatus%3D%3D%22success%22")
        .await
        .no_content();
    s.get(&format!("/snapshots/{}", enc(&clone)))
        .await
        .problem(404, "ResourceNotFound");

    // Tenants: a snapshot belongs to the tenant that made it, and only
    // sees that tenant's data (clause 5.5.15).
    let r = s
        .req(Method::POST, "/entities")
        .header("NGSILD-Tenant", "haizhu")
        .json(&vehicle("urn:ngsi-ld:Vehicle:hz", 99))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let hz = create(&s, Some("haizhu"), &fast_vehicles()).await;
    ready(&s, Some("haizhu"), &hz).await;
    let r = s
        .req(Method::GET, "/entities?type=Vehicle")
        .header("NGSILD-Tenant", "haizhu")
        .header(HEADER, &hz)
        .send()
        .await;
    assert_eq!(
        ids_of(&r.body),
        vec!["urn:ngsi-ld:Vehicle:hz"],
        "{}",
        r.text
    );
    on(&s, &hz, "/entities?type=Vehicle")
        .await
        .problem(404, "ResourceNotFound");
    s.get(&format!("/snapshots/{}", enc(&hz)))
        .await
        .problem(404, "ResourceNotFound");

    // A lifetime ends it (within about a second).
    let mut short = fast_vehicles();
    short["snapshotLifetime"] = json!("PT1S");
    let brief = create(&s, None, &short).await;
    let start = Instant::now();
    while s.get(&format!("/snapshots/{}", enc(&brief))).await.status == 200 {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the snapshot did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    on(&s, &brief, "/entities?type=Vehicle")
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn temporal_queries_copy_history_and_empty_queries_make_a_partial_snapshot() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:WaterLevel:zhujiang";
    s.create(json!({"id": id, "type": "WaterLevel",
                    "level": {"type": "Property", "value": 1.0, "observedAt": "2026-09-01T00:00:00Z"}}))
        .await;
    for (level, at) in [(2.0, "2026-09-01T01:00:00Z"), (3.5, "2026-09-01T02:00:00Z")] {
        s.patch(
            &format!("/entities/{}/attrs", enc(id)),
            &json!({"level": {"type": "Property", "value": level, "observedAt": at}}),
        )
        .await
        .no_content();
    }
    let doc = json!({
        "type": "Snapshot",
        "snapshotQueries": [
            {"type": "Query", "entities": [{"type": "WaterLevel"}]},
            {"type": "Query", "entities": [{"type": "Typhoon"}]}
        ],
        "snapshotTemporalQueries": [{
            "type": "Query", "entities": [{"type": "WaterLevel"}],
            "temporalQ": {"timerel": "after", "timeAt": "2026-09-01T00:30:00Z"}
        }]
    });
    let snap = create(&s, None, &doc).await;
    let ready = ready(&s, None, &snap).await;
    assert_eq!(ready["snapshotStatus"], "partial", "{ready}");
    assert_eq!(
        ready["snapshotQueriesDetails"],
        json!([{"resultStatus": "success"}, {"resultStatus": "empty"}])
    );
    assert_eq!(
        ready["snapshotTemporalQueriesDetails"],
        json!([{"resultStatus": "success"}])
    );
    // The live entity goes, with its history.
    s.delete(&format!("/entities/{}", enc(id)))
        .await
        .no_content();
    s.delete(&format!("/temporal/entities/{}", enc(id)))
        .await
        .no_content();
    // The snapshot holds the instances its temporal query selected, each
    // once (the current one was recorded when the entity was copied).
    let r = temporal_values(&s, &snap, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["level"]["values"],
        json!([[2.0, "2026-09-01T01:00:00Z"], [3.5, "2026-09-01T02:00:00Z"]]),
        "{}",
        r.text
    );
    let r = on(&s, &snap, &format!("/entities/{}", enc(id))).await;
    assert_eq!(r.body["level"]["value"], 3.5);
    // A clone holds the same history.
    let r = s
        .post(
            &format!("/snapshots/{}/clone", enc(&snap)),
            &json!({"type": "Snapshot"}),
        )
        .await;
    let clone = created_id(&r);
    let cloned = self::ready(&s, None, &clone).await;
    assert_eq!(cloned["snapshotStatus"], "partial");
    let r = temporal_values(&s, &clone, id).await;
    assert_eq!(
        r.body["level"]["values"],
        json!([[2.0, "2026-09-01T01:00:00Z"], [3.5, "2026-09-01T02:00:00Z"]]),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn history_alone_is_copied_with_its_dataset_ids() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:AirQualityObserved:tianhe";
    let no2 = |dataset: &str, v: f64, at: &str| json!({"type": "Property", "value": v, "observedAt": at, "datasetId": dataset});
    s.create(json!({"id": id, "type": "AirQualityObserved",
                    "no2": [no2("urn:ngsi-ld:Dataset:a", 30.0, "2026-09-01T00:00:00Z"),
                            no2("urn:ngsi-ld:Dataset:b", 41.0, "2026-09-01T00:00:00Z")]}))
        .await;
    s.patch(
        &format!("/entities/{}/attrs", enc(id)),
        &json!({"no2": no2("urn:ngsi-ld:Dataset:b", 44.0, "2026-09-01T01:00:00Z")}),
    )
    .await
    .no_content();
    // Only a temporal query: the snapshot holds history and no entity.
    let doc = json!({
        "type": "Snapshot",
        "snapshotTemporalQueries": [{
            "type": "Query", "entities": [{"type": "AirQualityObserved"}],
            "temporalQ": {"timerel": "after", "timeAt": "2026-08-01T00:00:00Z"}
        }]
    });
    let snap = create(&s, None, &doc).await;
    assert_eq!(ready(&s, None, &snap).await["snapshotStatus"], "success");
    let r = temporal_values(&s, &snap, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut series: Vec<(String, Value)> = r.body["no2"]
        .as_array()
        .unwrap_or_else(|| panic!("two series of no2: {}", r.text))
        .iter()
        .map(|h| {
            (
                h["datasetId"].as_str().unwrap_or("").to_string(),
                h["values"].clone(),
            )
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        series,
        vec![
            (
                "urn:ngsi-ld:Dataset:a".to_string(),
                json!([[30.0, "2026-09-01T00:00:00Z"]])
            ),
            (
                "urn:ngsi-ld:Dataset:b".to_string(),
                json!([
                    [41.0, "2026-09-01T00:00:00Z"],
                    [44.0, "2026-09-01T01:00:00Z"]
                ])
            ),
        ],
        "{}",
        r.text
    );
    let r = on(&s, &snap, &format!("/entities/{}", enc(id))).await;
    r.problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn a_snapshot_takes_what_registered_sources_hold() {
    let s = Server::start().await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:here", 80)).await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:slow", 30)).await;
    let remote = vehicle("urn:ngsi-ld:Vehicle:remote", 88);
    let (source, mut asked) = source_answering(StatusCode::OK, json!([remote]).to_string()).await;
    let r = s
        .post(
            "/csourceRegistrations",
            &json!({
                "type": "ContextSourceRegistration",
                "information": [{"entities": [{"type": "Vehicle"}]}],
                "operations": ["queryEntity", "queryBatch"],
                "endpoint": source
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let snap = create(&s, None, &fast_vehicles()).await;
    assert_eq!(ready(&s, None, &snap).await["snapshotStatus"], "success");
    let got = tokio::time::timeout(Duration::from_secs(5), asked.recv())
        .await
        .expect("the source was asked")
        .unwrap();
    // A query that Query Entities can say goes as one (registrations
    // that offer queryEntity only are asked too).
    assert!(
        got.uri.path().ends_with("/ngsi-ld/v1/entities"),
        "{}",
        got.uri
    );
    assert!(
        got.uri.query().unwrap().contains("q=speed%3E50"),
        "{}",
        got.uri
    );
    let r = on(&s, &snap, "/entities?type=Vehicle").await;
    assert_eq!(
        sorted(ids_of(&r.body)),
        vec!["urn:ngsi-ld:Vehicle:here", "urn:ngsi-ld:Vehicle:remote"],
        "{}",
        r.text
    );
    // One it cannot say goes as the Query itself.
    let mixed = json!({"type": "Snapshot", "snapshotQueries": [{"type": "Query",
        "entities": [{"type": "Vehicle"}, {"type": "Bus", "id": "urn:ngsi-ld:Bus:1"}]}]});
    let other = create(&s, None, &mixed).await;
    ready(&s, None, &other).await;
    let got = tokio::time::timeout(Duration::from_secs(5), asked.recv())
        .await
        .expect("the source was asked")
        .unwrap();
    assert!(
        got.uri.path().ends_with("/entityOperations/query"),
        "{}",
        got.uri
    );
    assert_eq!(
        got.body["entities"],
        mixed["snapshotQueries"][0]["entities"]
    );
    // A snapshot is local: its reads ask no source.
    while asked.try_recv().is_ok() {}
    on(&s, &snap, "/entities?type=Vehicle").await;
    assert!(
        asked.try_recv().is_err(),
        "a read on a snapshot was forwarded"
    );
}
