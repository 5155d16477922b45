//! EntityMaps (clauses 4.5.25, 5.5.9.3, 5.14, 6.32, 6.34, 6.35): made by
//! `/entityMaps` and by reads with `entityMap=true`, named back with the
//! `NGSILD-EntityMap` header to page through a fixed set of entities.

use reqwest::Method;
use serde_json::{Value, json};

use crate::federation::{get, hold, prop, register, registration, terms};
use crate::support::{Resp, Server, enc, ids_of, serve_document, vehicle};

fn v(n: u32) -> String {
    format!("urn:ngsi-ld:Vehicle:M{n}")
}

/// The map id a response's `NGSILD-EntityMap` header names.
fn map_id(r: &Resp) -> String {
    let h = r
        .header("ngsild-entitymap")
        .unwrap_or_else(|| panic!("no NGSILD-EntityMap header: {} {}", r.status, r.text));
    assert!(h.starts_with("/ngsi-ld/v1/entityMaps/"), "{h}");
    let last = h.rsplit('/').next().unwrap();
    percent_encoding::percent_decode_str(last)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

fn keys(map: &Value) -> Vec<String> {
    let mut k: Vec<String> = map["entityMap"]
        .as_object()
        .unwrap_or_else(|| panic!("no entityMap in {map}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

async fn with_map(s: &Server, path: &str, map: &str) -> Resp {
    s.req(Method::GET, path)
        .header(
            "NGSILD-EntityMap",
            &format!("/ngsi-ld/v1/entityMaps/{}", enc(map)),
        )
        .send()
        .await
}

fn expires_in_micros(map: &Value) -> i64 {
    let t = map["expiresAt"].as_str().expect("expiresAt");
    ngsi_model::time::parse_datetime(t).unwrap() - ngsi_model::time::now_micros()
}

#[tokio::test]
async fn maps_are_made_retrieved_updated_and_deleted() {
    let s = Server::start().await;
    for (n, speed) in [(1, 10), (2, 60), (3, 70), (4, 80)] {
        s.create(vehicle(&v(n), speed)).await;
    }
    s.create(json!({"id": "urn:ngsi-ld:Bus:1", "type": "Bus", "speed": prop(90)}))
        .await;
    let r = s.get("/entityMaps?type=Vehicle").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = map_id(&r);
    assert!(id.starts_with("urn:ngsi-ld:EntityMap:"), "{id}");
    assert_eq!(r.body["id"], json!(id));
    assert_eq!(r.body["type"], "EntityMap");
    assert_eq!(keys(&r.body), [v(1), v(2), v(3), v(4)]);
    assert_eq!(r.body["entityMap"][v(1)], json!(["@none"]));
    assert_eq!(r.body["linkedMaps"], json!({}));
    // The default lifetime: five minutes.
    let left = expires_in_micros(&r.body);
    assert!((290_000_000..=300_000_000).contains(&left), "{left}");
    // q narrows the map; limit is ignored.
    let r = s.get("/entityMaps?type=Vehicle&q=speed%3E50&limit=1").await;
    assert_eq!((r.status, keys(&r.body)), (201, vec![v(2), v(3), v(4)]));
    // The rules of Query Entities hold.
    s.get(&format!("/entityMaps?id={}", v(1)))
        .await
        .problem(400, "BadRequestData");
    s.get("/entityMaps?type=Vehicle&entityMapLifetime=1hour")
        .await
        .problem(400, "BadRequestData");
    s.get("/entityMaps?type=Vehicle&q=speed%3D%3D")
        .await
        .problem(400, "BadRequestData");
    // A suggested lifetime is kept within a day.
    let r = s
        .get("/entityMaps?type=Vehicle&entityMapLifetime=P3650D")
        .await;
    assert_eq!(r.status, 201);
    let left = expires_in_micros(&r.body);
    assert!((86_000_000_000..=86_400_000_000).contains(&left), "{left}");
    let r = s
        .get("/entityMaps?type=Vehicle&entityMapLifetime=PT1M")
        .await;
    assert!(expires_in_micros(&r.body) <= 60_000_000);

    // Retrieve.
    let path = format!("/entityMaps/{}", enc(&id));
    let r = s.get(&path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), [v(1), v(2), v(3), v(4)]);
    s.get("/entityMaps/not%20a%20uri")
        .await
        .problem(400, "BadRequestData");
    s.get("/entityMaps/urn:ngsi-ld:EntityMap:doesnotexist")
        .await
        .problem(404, "ResourceNotFound");
    // Another tenant neither sees nor deletes it.
    s.req(Method::POST, "/entities")
        .header("NGSILD-Tenant", "other")
        .json(&vehicle("urn:x:1", 1))
        .send()
        .await;
    for method in [Method::GET, Method::DELETE] {
        s.req(method, &path)
            .header("NGSILD-Tenant", "other")
            .send()
            .await
            .problem(404, "ResourceNotFound");
    }
    assert_eq!(s.get(&path).await.status, 200);

    // Update: only expiresAt, within a day; output-only members ignored.
    let r = s
        .patch(
            &path,
            &json!({"expiresAt": "2099-01-01T00:00:00Z",
                    "entityMap": {"urn:ngsi-ld:Vehicle:injected": ["@none"]}}),
        )
        .await;
    r.no_content();
    let r = s.get(&path).await;
    assert_eq!(keys(&r.body), [v(1), v(2), v(3), v(4)]);
    assert!(expires_in_micros(&r.body) <= 86_400_000_000);
    assert!(expires_in_micros(&r.body) > 86_000_000_000);
    s.patch(&path, &json!({"expiresAt": "tomorrow"}))
        .await
        .problem(400, "BadRequestData");
    s.patch(
        "/entityMaps/urn:ngsi-ld:EntityMap:doesnotexist",
        &json!({"expiresAt": "2099-01-01T00:00:00Z"}),
    )
    .await
    .problem(404, "ResourceNotFound");
    // An expiry in the past ends the map.
    let other = map_id(&s.get("/entityMaps?type=Vehicle").await);
    let other_path = format!("/entityMaps/{}", enc(&other));
    s.patch(&other_path, &json!({"expiresAt": "2000-01-01T00:00:00Z"}))
        .await
        .no_content();
    s.get(&other_path).await.problem(404, "ResourceNotFound");

    // Delete.
    s.delete(&path).await.no_content();
    s.get(&path).await.problem(404, "ResourceNotFound");
    s.delete(&path).await.problem(404, "ResourceNotFound");
    s.delete("/entityMaps/not%20a%20uri")
        .await
        .problem(400, "BadRequestData");

    // POST: a Query body, with a suggested lifetime.
    let r = s
        .post(
            "/entityMaps",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}],
                    "q": "speed>65", "entityMapLifetime": "PT2M"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(keys(&r.body), [v(3), v(4)]);
    assert!(expires_in_micros(&r.body) <= 120_000_000);
    map_id(&r);
}

#[tokio::test]
async fn queries_page_through_a_fixed_set_of_entities() {
    let s = Server::start().await;
    for n in 1..=5 {
        s.create(vehicle(&v(n), 10 * n as i64)).await;
    }
    let q = "/entities?type=Vehicle&q=speed%3E5";
    // entityMap=true makes a map and answers 201 with its location.
    let r = s.get(&format!("{q}&entityMap=true&limit=2")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(ids_of(&r.body), [v(1), v(2)]);
    let map = map_id(&r);
    // An entity created afterwards is not in the map.
    s.create(vehicle(&v(0), 100)).await;
    assert_eq!(
        ids_of(&s.get(&format!("{q}&limit=2")).await.body),
        [v(0), v(1)]
    );
    let r = with_map(&s, &format!("{q}&limit=2"), &map).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(map_id(&r), map);
    assert_eq!(ids_of(&r.body), [v(1), v(2)]);
    let r = with_map(&s, &format!("{q}&limit=2&offset=2"), &map).await;
    assert_eq!(ids_of(&r.body), [v(3), v(4)]);
    let links = r.headers.get_all("link").iter().count();
    assert!(links >= 2, "prev and next links: {:?}", r.headers);
    // A deleted entity is skipped, the page stays full, and the map loses it.
    s.delete(&format!("/entities/{}", v(2))).await.no_content();
    let r = with_map(&s, &format!("{q}&limit=3"), &map).await;
    assert_eq!(ids_of(&r.body), [v(1), v(3), v(4)]);
    let held = s.get(&format!("/entityMaps/{}", enc(&map))).await;
    assert_eq!(keys(&held.body), [v(1), v(3), v(4), v(5)]);
    // An entity that no longer matches is skipped too, and counted out.
    s.patch(
        &format!("/entities/{}/attrs", v(5)),
        &json!({"speed": prop(1)}),
    )
    .await
    .no_content();
    let r = with_map(&s, &format!("{q}&count=true&limit=10"), &map).await;
    assert_eq!(r.header("ngsild-results-count"), Some("3"));
    assert_eq!(ids_of(&r.body), [v(1), v(3), v(4)]);
    let held = s.get(&format!("/entityMaps/{}", enc(&map))).await;
    assert_eq!(keys(&held.body), [v(1), v(3), v(4)]);
    // The map restricts, the query still filters: a narrower q.
    let r = with_map(&s, "/entities?type=Vehicle&q=speed%3E35", &map).await;
    assert_eq!(ids_of(&r.body), [v(4)]);
    // A map that is gone is made anew (201, another location).
    let r = with_map(&s, &format!("{q}&limit=2"), "urn:ngsi-ld:EntityMap:gone").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let fresh = map_id(&r);
    assert_ne!(fresh, "urn:ngsi-ld:EntityMap:gone");
    assert_eq!(ids_of(&r.body), [v(0), v(1)]);
    // A header that names no URI is refused.
    s.req(Method::GET, q)
        .header("NGSILD-EntityMap", "not a uri")
        .send()
        .await
        .problem(400, "BadRequestData");
    s.get(&format!("{q}&entityMap=maybe"))
        .await
        .problem(400, "BadRequestData");
    // Without a map nothing changes: 200 and no header.
    let r = s.get(q).await;
    assert_eq!((r.status, r.header("ngsild-entitymap")), (200, None));
    // POST queries take entityMap in their body.
    let r = s
        .post(
            "/entityOperations/query?limit=1",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "entityMap": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let posted = map_id(&r);
    let held = s.get(&format!("/entityMaps/{}", enc(&posted))).await;
    assert_eq!(keys(&held.body), [v(0), v(1), v(3), v(4), v(5)]);
    let r = s
        .req(Method::POST, "/entityOperations/query?limit=1&offset=1")
        .header("NGSILD-EntityMap", &posted)
        .json(&json!({"type": "Query", "entities": [{"type": "Vehicle"}]}))
        .send()
        .await;
    assert_eq!((r.status, ids_of(&r.body)), (200, vec![v(1)]));
}

#[tokio::test]
async fn retrievals_and_temporal_reads_take_maps() {
    let s = Server::start().await;
    s.create(vehicle(&v(1), 10)).await;
    s.create(vehicle(&v(2), 20)).await;
    let path = format!("/entities/{}", v(1));
    let r = s.get(&format!("{path}?entityMap=true")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("entityMap").is_none());
    let map = map_id(&r);
    let held = s.get(&format!("/entityMaps/{}", enc(&map))).await;
    assert_eq!(held.body["entityMap"], json!({v(1): ["@none"]}));
    let r = with_map(&s, &path, &map).await;
    assert_eq!((r.status, map_id(&r)), (200, map.clone()));
    let r = with_map(&s, &path, "urn:ngsi-ld:EntityMap:gone").await;
    assert_eq!(r.status, 200);
    assert_ne!(map_id(&r), "urn:ngsi-ld:EntityMap:gone");

    // Temporal queries: 201 when the map is made, the map restricts later.
    let tq = "/temporal/entities?type=Vehicle&timerel=after&timeAt=2000-01-01T00:00:00Z&timeproperty=modifiedAt";
    let r = s.get(&format!("{tq}&q=speed%3C15&entityMap=true")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(ids_of(&r.body), [v(1)]);
    let tmap = map_id(&r);
    let r = with_map(&s, tq, &tmap).await;
    assert_eq!((r.status, ids_of(&r.body)), (200, vec![v(1)]));
    assert_eq!(map_id(&r), tmap);
    let r = with_map(&s, tq, "urn:ngsi-ld:EntityMap:gone").await;
    assert_eq!((r.status, ids_of(&r.body)), (201, vec![v(1), v(2)]));
    let r = s
        .get(&format!("/temporal/entities/{}?entityMap=true", v(2)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let one = map_id(&r);
    let held = s.get(&format!("/entityMaps/{}", enc(&one))).await;
    assert_eq!(held.body["entityMap"], json!({v(2): ["@none"]}));

    // /temporal/entityMaps needs the temporal query.
    s.get("/temporal/entityMaps?type=Vehicle")
        .await
        .problem(400, "BadRequestData");
    let r = s
        .get("/temporal/entityMaps?type=Vehicle&timerel=before&timeAt=2999-01-01T00:00:00Z&timeproperty=createdAt")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(keys(&r.body), [v(1), v(2)]);
    let r = s
        .get("/temporal/entityMaps?type=Vehicle&timerel=before&timeAt=2000-01-01T00:00:00Z&timeproperty=createdAt")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(keys(&r.body).is_empty());
    let r = s
        .post(
            "/temporal/entityMaps",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed>15",
                    "temporalQ": {"timerel": "after", "timeAt": "2000-01-01T00:00:00Z", "timeproperty": "modifiedAt"}}),
        )
        .await;
    assert_eq!((r.status, keys(&r.body)), (201, vec![v(2)]));
    s.post(
        "/temporal/entityMaps",
        &json!({"type": "Query", "entities": [{"type": "Vehicle"}]}),
    )
    .await
    .problem(400, "BadRequestData");
}

#[tokio::test]
async fn a_map_names_the_registrations_that_hold_each_entity() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    hold(
        &here,
        &ctx,
        vec![
            json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle", "speed": prop(1)}),
            json!({"id": "urn:ngsi-ld:Vehicle:B", "type": "Vehicle", "speed": prop(2)}),
        ],
    )
    .await;
    hold(
        &there,
        &ctx,
        vec![
            json!({"id": "urn:ngsi-ld:Vehicle:B", "type": "Vehicle", "brandName": prop("Volvo")}),
            json!({"id": "urn:ngsi-ld:Vehicle:C", "type": "Vehicle", "speed": prop(3)}),
        ],
    )
    .await;
    let reg = "urn:ngsi-ld:ContextSourceRegistration:there";
    register(&here, &ctx, &registration(reg, &there.origin, json!({}))).await;
    let r = get(&here, &ctx, "/entityMaps?type=Vehicle").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["entityMap"],
        json!({
            "urn:ngsi-ld:Vehicle:A": ["@none"],
            "urn:ngsi-ld:Vehicle:B": ["@none", reg],
            "urn:ngsi-ld:Vehicle:C": [reg],
        })
    );
    let map = map_id(&r);
    // Paging through the map merges what each place holds.
    let r = here
        .req(
            Method::GET,
            "/entities?type=Vehicle&limit=2&offset=1&options=keyValues",
        )
        .header("Link", &crate::support::link(&ctx))
        .header("NGSILD-EntityMap", &map)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:B", "urn:ngsi-ld:Vehicle:C"]
    );
    assert_eq!(r.body[0]["brandName"], "Volvo");
    // An entity the source gains later is not in the map.
    hold(
        &there,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:0", "type": "Vehicle", "speed": prop(0)})],
    )
    .await;
    let r = here
        .req(Method::GET, "/entities?type=Vehicle&limit=10")
        .header("Link", &crate::support::link(&ctx))
        .header("NGSILD-EntityMap", &map)
        .send()
        .await;
    assert_eq!(ids_of(&r.body).len(), 3, "{}", r.text);
    // A retrieval of one entity with entityMap=true names where it was found.
    let r = get(
        &here,
        &ctx,
        "/entities/urn:ngsi-ld:Vehicle:C?entityMap=true",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let one = map_id(&r);
    let held = get(&here, &ctx, &format!("/entityMaps/{}", enc(&one))).await;
    assert_eq!(
        held.body["entityMap"],
        json!({"urn:ngsi-ld:Vehicle:C": [reg]})
    );
}
