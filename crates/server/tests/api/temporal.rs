//! The temporal API (clauses 5.6.11–5.6.16, 5.7.3, 5.7.4, 6.18–6.24):
//! history recorded by ordinary writes, the three representations, time
//! ranges, the temporal writes and the pagination of long histories.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Server, enc, vehicle};

/// `2024-07-01T00:00:00Z` plus `hours`, as the server renders it.
fn at(hours: i64) -> String {
    let day = 1 + hours / 24;
    let hour = hours % 24;
    format!("2024-07-{day:02}T{hour:02}:00:00Z")
}

fn speed(value: Value, hours: i64) -> Value {
    json!({"type": "Property", "value": value, "observedAt": at(hours)})
}

/// Creates a temporal entity `id` of type Vehicle with speed instances
/// `(value, hours)` through POST /temporal/entities.
async fn temporal_vehicle(s: &Server, id: &str, instances: &[(i64, i64)]) {
    let list: Vec<Value> = instances.iter().map(|(v, h)| speed(json!(v), *h)).collect();
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Vehicle", "speed": list}),
        )
        .await;
    assert!(r.status == 201 || r.status == 204, "{}", r.text);
}

async fn temporal(s: &Server, id: &str, params: &str) -> Value {
    let r = s
        .get(&format!("/temporal/entities/{}?{params}", enc(id)))
        .await;
    assert_eq!(r.status, 200, "{params}: {}", r.text);
    r.body
}

/// The values of the simplified representation of `speed`.
async fn values(s: &Server, id: &str, params: &str) -> Vec<Value> {
    let body = temporal(
        s,
        id,
        &format!("options=temporalValues&attrs=speed&{params}"),
    )
    .await;
    body["speed"]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values: {body}"))
        .iter()
        .map(|pair| pair[0].clone())
        .collect()
}

#[tokio::test]
async fn entity_updates_and_batch_upserts_are_recorded() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:rec";
    let mut v = vehicle(id, 1);
    v["speed"]["observedAt"] = json!(at(0));
    s.create(v).await;
    s.patch(
        &format!("/entities/{id}/attrs"),
        &json!({"speed": speed(json!(2), 1)}),
    )
    .await
    .no_content();
    s.patch(
        &format!("/entities/{id}/attrs/speed"),
        &json!({"value": 3, "observedAt": at(2)}),
    )
    .await
    .no_content();
    let r = s
        .post(
            "/entityOperations/upsert?options=update",
            &json!([{"id": id, "type": "Vehicle", "speed": speed(json!(4), 3)}]),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // An update that does not change an attribute records nothing for it:
    // brandName has only the instance of the create.
    let body = temporal(&s, id, "").await;
    let speeds = body["speed"].as_array().unwrap();
    assert_eq!(speeds.len(), 4, "{body}");
    for (i, inst) in speeds.iter().enumerate() {
        assert_eq!(inst["value"], json!(i + 1));
        assert_eq!(inst["observedAt"], json!(at(i as i64)));
        assert_eq!(inst["type"], "Property");
        assert!(
            inst["instanceId"]
                .as_str()
                .unwrap()
                .starts_with("urn:ngsi-ld:")
        );
    }
    assert_eq!(body["brandName"].as_array().unwrap().len(), 1);
    assert_eq!(body["type"], "Vehicle");
    // sysAttrs shows createdAt and modifiedAt of each instance.
    let body = temporal(&s, id, "options=sysAttrs&attrs=speed").await;
    assert!(body["speed"][0]["modifiedAt"].is_string(), "{body}");
    assert!(body["speed"][0]["createdAt"].is_string());
    assert!(body.get("brandName").is_none());
    // Deleting an attribute records its deletion.
    s.delete(&format!("/entities/{id}/attrs/brandName"))
        .await
        .no_content();
    let body = temporal(&s, id, "attrs=brandName").await;
    let brand = body["brandName"].as_array().unwrap();
    assert_eq!(brand.len(), 2, "{body}");
    assert_eq!(brand[1]["value"], "urn:ngsi-ld:null");
    assert!(brand[1]["deletedAt"].is_string());
    // Deleting the entity keeps its history.
    s.delete(&format!("/entities/{id}")).await.no_content();
    let body = temporal(&s, id, "attrs=speed").await;
    assert_eq!(body["speed"].as_array().unwrap().len(), 5);
    // Batch creates are recorded too.
    let r = s
        .post(
            "/entityOperations/create",
            &json!([vehicle("urn:ngsi-ld:Vehicle:b1", 7)]),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(values(&s, "urn:ngsi-ld:Vehicle:b1", "").await, [json!(7)]);
}

#[tokio::test]
async fn temporal_values_time_ranges_last_n_and_time_property() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:tv";
    temporal_vehicle(&s, id, &[(10, 1), (20, 2), (30, 3), (40, 4)]).await;
    let body = temporal(&s, id, "options=temporalValues").await;
    assert_eq!(
        body["speed"],
        json!({"type": "Property", "values": [[10, at(1)], [20, at(2)], [30, at(3)], [40, at(4)]]})
    );
    let t = |h| enc(&at(h));
    assert_eq!(
        values(&s, id, &format!("timerel=before&timeAt={}", t(3))).await,
        [json!(10), json!(20)]
    );
    // Clause 4.11: before excludes timeAt, after includes it, between
    // includes timeAt and excludes endTimeAt.
    assert_eq!(
        values(&s, id, &format!("timerel=after&timeAt={}", t(2))).await,
        [json!(20), json!(30), json!(40)]
    );
    assert_eq!(
        values(
            &s,
            id,
            &format!(
                "timerel=after&timeAt={}",
                enc("2024-07-01T02:00:00.000001Z")
            )
        )
        .await,
        [json!(30), json!(40)]
    );
    assert_eq!(
        values(
            &s,
            id,
            &format!("timerel=between&timeAt={}&endTimeAt={}", t(2), t(4))
        )
        .await,
        [json!(20), json!(30)]
    );
    assert_eq!(values(&s, id, "lastN=2").await, [json!(30), json!(40)]);
    assert_eq!(
        values(&s, id, &format!("lastN=1&timerel=before&timeAt={}", t(3))).await,
        [json!(20)]
    );
    // All instances were stored just now: by modifiedAt, none is before
    // 2024 and all are after it.
    let body = temporal(
        &s,
        id,
        &format!("timeproperty=modifiedAt&timerel=before&timeAt={}", t(0)),
    )
    .await;
    assert!(body.get("speed").is_none(), "{body}");
    assert_eq!(
        values(
            &s,
            id,
            &format!("timeproperty=modifiedAt&timerel=after&timeAt={}", t(0))
        )
        .await
        .len(),
        4
    );
    assert_eq!(
        values(
            &s,
            id,
            &format!("timeproperty=createdAt&timerel=after&timeAt={}", t(0))
        )
        .await
        .len(),
        4
    );
    // Relationships use `objects`, LanguageProperties `languageMaps`.
    let r = s
        .post(
            &format!("/temporal/entities/{}/attrs", enc(id)),
            &json!({
                "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1", "observedAt": at(1)},
                "label": {"type": "LanguageProperty", "languageMap": {"en": "car"}, "observedAt": at(1)},
                "specs": {"type": "JsonProperty", "json": {"doors": 4}, "observedAt": at(1)},
                "category": {"type": "VocabProperty", "vocab": "urn:ngsi-ld:taxi", "observedAt": at(1)},
                "crew": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Person:1"}], "observedAt": at(1)},
            }),
        )
        .await;
    r.no_content();
    let body = temporal(
        &s,
        id,
        "options=temporalValues&attrs=owner,label,specs,category,crew",
    )
    .await;
    assert_eq!(
        body["owner"]["objects"],
        json!([["urn:ngsi-ld:Person:1", at(1)]])
    );
    // Clause 4.5.9: a languageMap, json or vocab is given inside an object
    // with that one member; an objectList as the list of URIs.
    assert_eq!(
        body["label"]["languageMaps"],
        json!([[{"languageMap": {"en": "car"}}, at(1)]]),
        "{body}"
    );
    assert_eq!(
        body["specs"]["jsons"],
        json!([[{"json": {"doors": 4}}, at(1)]])
    );
    assert_eq!(
        body["category"]["vocabs"],
        json!([[{"vocab": "urn:ngsi-ld:taxi"}, at(1)]])
    );
    assert_eq!(
        body["crew"]["objectLists"],
        json!([[["urn:ngsi-ld:Person:1"], at(1)]])
    );
}

#[tokio::test]
async fn concise_temporal_representation_out_and_in() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:concise";
    // Instances in the concise form: no "type" where the member that
    // carries the value tells the kind.
    let r = s
        .post(
            "/temporal/entities",
            &json!({
                "id": id, "type": "Vehicle",
                "speed": [{"value": 10, "observedAt": at(1)}, {"value": 20, "observedAt": at(2)}],
                "owner": {"object": "urn:ngsi-ld:Person:1", "observedAt": at(1)},
                "location": {"value": {"type": "Point", "coordinates": [113.26, 23.13]}, "observedAt": at(1)},
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({
            "speed": {"value": 30, "observedAt": at(3)},
            "label": {"languageMap": {"en": "car"}, "observedAt": at(3)},
        }),
    )
    .await
    .no_content();
    let body = temporal(&s, id, "").await;
    assert_eq!(body["speed"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(body["speed"][2]["type"], "Property");
    assert_eq!(body["owner"][0]["type"], "Relationship");
    assert_eq!(body["location"][0]["type"], "GeoProperty");
    assert_eq!(body["label"][0]["type"], "LanguageProperty");
    // The concise output: the same instances without "type", for
    // format=concise and options=concise, in Retrieve and in Query.
    for params in ["format=concise", "options=concise"] {
        let body = temporal(&s, id, params).await;
        assert_eq!(body["type"], "Vehicle", "{body}");
        let speeds = body["speed"].as_array().unwrap();
        assert_eq!(speeds.len(), 3);
        assert_eq!(speeds[0]["value"], 10);
        assert_eq!(speeds[0]["observedAt"], at(1));
        assert!(speeds[0]["instanceId"].is_string());
        for attr in ["speed", "owner", "location", "label"] {
            for inst in body[attr].as_array().unwrap() {
                assert!(inst.get("type").is_none(), "{params}: {inst}");
            }
        }
        assert_eq!(body["owner"][0]["object"], "urn:ngsi-ld:Person:1");
        assert_eq!(body["location"][0]["value"]["type"], "Point");
        assert_eq!(body["label"][0]["languageMap"], json!({"en": "car"}));
        let r = s
            .get(&format!("/temporal/entities?type=Vehicle&{params}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.body[0]["speed"][0].get("type").is_none(), "{}", r.text);
    }
    // The concise output is valid input: written back under another id,
    // it reads the same.
    let mut copy = temporal(&s, id, "format=concise").await;
    copy["id"] = json!("urn:ngsi-ld:Vehicle:concise-copy");
    let r = s.post("/temporal/entities", &copy).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let again = temporal(
        &s,
        "urn:ngsi-ld:Vehicle:concise-copy",
        "options=temporalValues",
    )
    .await;
    let original = temporal(&s, id, "options=temporalValues").await;
    for attr in ["speed", "owner", "location", "label"] {
        assert_eq!(again[attr], original[attr], "{attr}");
    }
    // A deleted attribute's instance in the concise form.
    s.create(json!({"id": "urn:ngsi-ld:Vehicle:c2", "type": "Vehicle", "speed": 5}))
        .await;
    s.delete("/entities/urn:ngsi-ld:Vehicle:c2/attrs/speed")
        .await
        .no_content();
    let body = temporal(&s, "urn:ngsi-ld:Vehicle:c2", "format=concise").await;
    let deleted = &body["speed"][1];
    assert_eq!(deleted["value"], "urn:ngsi-ld:null", "{body}");
    assert!(deleted["deletedAt"].is_string());
    assert!(deleted.get("type").is_none());
    // Concise input that is no attribute is refused.
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({"speed": [{}]}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({"speed": [null]}),
    )
    .await
    .problem(400, "BadRequestData");
}

/// Values that are not numbers aggregate as Tables 4.5.19.1-1 to -3 say:
/// strings and date-times by lexical order, booleans as 1 and 0, arrays by
/// size, relationships and objects counted only; a method that does not
/// apply is InvalidRequest (clause 5.7.4.4).
#[tokio::test]
async fn values_of_every_kind_aggregate_as_the_tables_say() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Sensor:kinds";
    let at = |h: u32| format!("2024-03-01T{h:02}:00:00Z");
    let series = |values: Vec<Value>| -> Value {
        values
            .into_iter()
            .enumerate()
            .map(|(h, mut v)| {
                v["observedAt"] = json!(at(h as u32));
                v
            })
            .collect()
    };
    let prop = |v: Value| json!({"type": "Property", "value": v});
    let rel = |o: &str| json!({"type": "Relationship", "object": o});
    let r = s
        .post(
            "/temporal/entities",
            &json!({
                "id": id, "type": "Sensor",
                "status": series(vec![prop(json!("ok")), prop(json!("alarm")), prop(json!("ok"))]),
                "on": series(vec![prop(json!(true)), prop(json!(false)), prop(json!(true))]),
                "readings": series(vec![prop(json!([1, 2])), prop(json!([1, 2, 3, 4]))]),
                "road": series(vec![rel("urn:r:a"), rel("urn:r:b"), rel("urn:r:a")]),
                "meta": series(vec![prop(json!({"a": 1}))]),
                "level": series(vec![prop(json!(5)), prop(json!(7))]),
                "mixed": series(vec![prop(json!(5)), prop(json!("x"))]),
                "since": series(vec![
                    prop(json!({"@type": "DateTime", "@value": "2024-01-02T00:00:00Z"})),
                    prop(json!({"@type": "DateTime", "@value": "2024-01-01T00:00:00Z"})),
                ]),
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let aggregate = |attr: &'static str, methods: &'static str| {
        let s = &s;
        async move {
            let body = temporal(
                s,
                id,
                &format!("attrs={attr}&options=aggregatedValues&aggrMethods={methods}"),
            )
            .await;
            let first = |m: &str| body[attr][m][0][0].clone();
            methods.split(',').map(first).collect::<Vec<Value>>()
        }
    };
    assert_eq!(
        aggregate("status", "totalCount,distinctCount,min,max").await,
        [json!(3), json!(2), json!("alarm"), json!("ok")]
    );
    assert_eq!(
        aggregate("on", "sum,min,max,sumsq").await,
        [json!(2.0), json!(0.0), json!(1.0), json!(2.0)]
    );
    assert_eq!(
        aggregate("readings", "sum,avg,min,max,distinctCount").await,
        [json!(6.0), json!(3.0), json!(2.0), json!(4.0), json!(2)]
    );
    assert_eq!(
        aggregate("road", "totalCount,distinctCount").await,
        [json!(3), json!(2)]
    );
    assert_eq!(aggregate("meta", "totalCount").await, [json!(1)]);
    assert_eq!(
        aggregate("since", "min,max").await,
        [json!("2024-01-01T00:00:00Z"), json!("2024-01-02T00:00:00Z")]
    );
    // A series of numbers, aggregated (and so held in columns), then given
    // a string: every instance counts, and sum no longer applies.
    assert_eq!(
        aggregate("level", "totalCount,sum").await,
        [json!(2), json!(12.0)]
    );
    let r = s
        .post(
            &format!("/temporal/entities/{}/attrs", enc(id)),
            &json!({"level": {"type": "Property", "value": "high", "observedAt": at(5)}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        aggregate("level", "totalCount,max").await,
        [json!(3), json!(7.0)]
    );
    assert_eq!(aggregate("mixed", "totalCount").await, [json!(2)]);
    for (attr, method) in [
        ("level", "sum"),
        ("mixed", "avg"),
        ("status", "sum"),
        ("status", "avg"),
        ("road", "max"),
        ("readings", "stddev"),
        ("meta", "min"),
    ] {
        s.get(&format!(
            "/temporal/entities/{}?attrs={attr}&options=aggregatedValues&aggrMethods={method}",
            enc(id)
        ))
        .await
        .problem(400, "InvalidRequest");
    }
}

#[tokio::test]
async fn aggregated_values_with_every_method_and_a_period() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:agg";
    temporal_vehicle(&s, id, &[(1, 0), (2, 1), (3, 25), (3, 26)]).await;
    let methods = "totalCount,distinctCount,sum,avg,min,max,stddev,sumsq";
    let body = temporal(
        &s,
        id,
        &format!(
            "options=aggregatedValues&aggrMethods={methods}&aggrPeriodDuration=P1D&timerel=between&timeAt={}&endTimeAt={}",
            enc(&at(0)),
            enc(&at(48))
        ),
    )
    .await;
    let a = &body["speed"];
    assert_eq!(a["type"], "Property", "{body}");
    let day = |m: &str, i: usize| a[m][i].clone();
    assert_eq!(day("totalCount", 0), json!([2, at(0), at(24)]));
    assert_eq!(day("totalCount", 1), json!([2, at(24), at(48)]));
    assert_eq!(day("distinctCount", 0)[0], 2);
    assert_eq!(day("distinctCount", 1)[0], 1);
    assert_eq!(day("sum", 0)[0], 3.0);
    assert_eq!(day("sum", 1)[0], 6.0);
    assert_eq!(day("avg", 0)[0], 1.5);
    assert_eq!(day("min", 0)[0], 1.0);
    assert_eq!(day("max", 1)[0], 3.0);
    assert_eq!(day("sumsq", 0)[0], 5.0);
    assert_eq!(day("stddev", 1)[0], 0.0);
    let sd = day("stddev", 0)[0].as_f64().unwrap();
    assert!((sd - 0.5f64.sqrt()).abs() < 1e-9, "{sd}");
    // An hour period: empty hours are left out.
    let body = temporal(
        &s,
        id,
        &format!(
            "options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=PT1H&timerel=after&timeAt={}",
            enc("2024-06-30T23:30:00Z")
        ),
    )
    .await;
    assert_eq!(body["speed"]["sum"].as_array().unwrap().len(), 4, "{body}");
    // Without a period (or PT0S): one period over the whole range.
    for extra in ["", "&aggrPeriodDuration=PT0S"] {
        let body = temporal(
            &s,
            id,
            &format!("options=aggregatedValues&aggrMethods=totalCount,max{extra}"),
        )
        .await;
        assert_eq!(body["speed"]["totalCount"][0][0], 4, "{body}");
        assert_eq!(body["speed"]["max"][0][0], 3.0);
    }
    // A write after the first aggregation is counted by the next one.
    temporal_vehicle(&s, id, &[(100, 30)]).await;
    let body = temporal(&s, id, "options=aggregatedValues&aggrMethods=max").await;
    assert_eq!(body["speed"]["max"][0][0], 100.0);
}

#[tokio::test]
async fn temporal_query_selects_like_query_entities() {
    let s = Server::start().await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:q1", 10)).await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:q2", 1)).await;
    s.create(json!({"id": "urn:ngsi-ld:Bus:q3", "type": "Bus", "speed": {"type": "Property", "value": 50}}))
        .await;
    let ids = |r: &crate::support::Resp| crate::support::ids_of(&r.body);
    let r = s.get("/temporal/entities?type=Vehicle").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids(&r),
        ["urn:ngsi-ld:Vehicle:q1", "urn:ngsi-ld:Vehicle:q2"]
    );
    let r = s.get("/temporal/entities?type=Vehicle&q=speed>5").await;
    assert_eq!(ids(&r), ["urn:ngsi-ld:Vehicle:q1"]);
    let r = s
        .get("/temporal/entities?attrs=speed&count=true&limit=1")
        .await;
    assert_eq!(ids(&r), ["urn:ngsi-ld:Bus:q3"]);
    assert_eq!(r.header("ngsild-results-count"), Some("3"));
    assert!(
        r.headers
            .get_all("link")
            .iter()
            .any(|l| l.to_str().unwrap().contains("rel=\"next\""))
    );
    let r = s
        .get("/temporal/entities?type=Vehicle&idPattern=.*q2&options=temporalValues")
        .await;
    assert_eq!(r.body[0]["speed"]["values"][0][0], 1, "{}", r.text);
    let r = s
        .get("/temporal/entities?georel=near;maxDistance==1000&geometry=Point&coordinates=[113.26,23.13]&type=Vehicle")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r).len(), 2);
    // POST /temporal/entityOperations/query with a temporalQ.
    let r = s
        .post(
            "/temporal/entityOperations/query?options=temporalValues",
            &json!({
                "type": "Query",
                "entities": [{"type": "Bus"}],
                "attrs": ["speed"],
                "temporalQ": {"timerel": "after", "timeAt": "2000-01-01T00:00:00Z", "timeproperty": "modifiedAt", "lastN": 1}
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r), ["urn:ngsi-ld:Bus:q3"]);
    assert_eq!(r.body[0]["speed"]["values"][0][0], 50);
    // A query needs a selector: ids or system attributes alone are too
    // wide (clause 5.7.4.4), local=true is enough.
    for params in [
        "",
        "?id=urn:ngsi-ld:Vehicle:q1",
        "?idPattern=.*q1",
        "?attrs=createdAt",
    ] {
        s.get(&format!("/temporal/entities{params}"))
            .await
            .problem(400, "BadRequestData");
    }
    let r = s.get("/temporal/entities?local=true").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r).len(), 3);
    // There are no registrations, but a malformed csf is still refused.
    s.get("/temporal/entities?type=Vehicle&csf=))bad((")
        .await
        .problem(400, "BadRequestData");
    // Parts of a temporal entity are merged, never filtered after the
    // merge: splitEntities=true is refused, not ignored.
    s.post(
        "/temporal/entityOperations/query",
        &json!({"type": "Query", "entities": [{"type": "Bus"}], "splitEntities": true,
                "temporalQ": {"timerel": "after", "timeAt": "2000-01-01T00:00:00Z"}}),
    )
    .await
    .problem(422, "OperationNotSupported");
}

#[tokio::test]
async fn temporal_q_and_geo_queries_test_the_instances_in_the_time_range() {
    let s = Server::start().await;
    let ids = |r: &crate::support::Resp| crate::support::ids_of(&r.body);
    let t = |h| enc(&at(h));
    // A current entity whose speed was 100 at hour 1 and is 10 now.
    let id = "urn:ngsi-ld:Vehicle:slowed";
    let mut v = vehicle(id, 100);
    v["speed"]["observedAt"] = json!(at(1));
    s.create(v).await;
    s.patch(
        &format!("/entities/{id}/attrs"),
        &json!({"speed": speed(json!(10), 3)}),
    )
    .await
    .no_content();
    // A temporal entity with no current state: speeds 120, 80 and a
    // location that moved from Guangzhou to Shenzhen.
    let only = "urn:ngsi-ld:Vehicle:history-only";
    let r = s
        .post(
            "/temporal/entities",
            &json!({
                "id": only, "type": "Vehicle",
                "speed": [speed(json!(120), 1), speed(json!(80), 3)],
                "location": [
                    {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [113.26, 23.13]}, "observedAt": at(1)},
                    {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [114.06, 22.54]}, "observedAt": at(3)},
                ],
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let query = |params: String| {
        let s = &s;
        async move {
            let r = s
                .get(&format!("/temporal/entities?type=Vehicle&{params}"))
                .await;
            assert_eq!(r.status, 200, "{params}: {}", r.text);
            r
        }
    };
    // Over the whole history both had a speed above 90, although neither
    // has one now.
    let r = query(format!("q=speed>90&timerel=after&timeAt={}", t(0))).await;
    assert_eq!(ids(&r), [only, id]);
    // Every instance in the range is returned, not only the matching ones.
    let speeds = r.body[1]["speed"].as_array().unwrap();
    assert_eq!(speeds.len(), 2, "{}", r.text);
    // From hour 2 on, no speed above 90 is left; 10 and 80 are below 50...
    let r = query(format!("q=speed>90&timerel=after&timeAt={}", t(2))).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
    let r = query(format!("q=speed<50&timerel=after&timeAt={}", t(2))).await;
    assert_eq!(ids(&r), [id]);
    // ... and before hour 2 no speed was below 50.
    let r = query(format!("q=speed<50&timerel=before&timeAt={}", t(2))).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
    // Each term may hold at a different instant; `|` and `!attr` too.
    let r = query(format!(
        "q=speed>110;speed<90&timerel=between&timeAt={}&endTimeAt={}",
        t(0),
        t(4)
    ))
    .await;
    assert_eq!(ids(&r), [only]);
    let r = query(format!(
        "q=speed==10|speed==120&timerel=after&timeAt={}",
        t(0)
    ))
    .await;
    assert_eq!(ids(&r), [only, id]);
    // brandName was recorded without observedAt: an observedAt range holds
    // none of its instances (clause 4.11), a modifiedAt range does.
    let r = query(format!("q=!brandName&timerel=after&timeAt={}", t(0))).await;
    assert_eq!(ids(&r), [only, id]);
    let r = query(format!(
        "q=!brandName&timerel=after&timeAt={}&timeproperty=modifiedAt",
        t(0)
    ))
    .await;
    assert_eq!(ids(&r), [only]);
    // The geo-query tests the GeoProperty instances in the range: the
    // history-only vehicle was near Shenzhen at hour 3, not at hour 1.
    let near_shenzhen = "georel=near;maxDistance==1000&geometry=Point&coordinates=[114.06,22.54]";
    let r = query(format!("{near_shenzhen}&timerel=after&timeAt={}", t(2))).await;
    assert_eq!(ids(&r), [only]);
    let r = query(format!("{near_shenzhen}&timerel=before&timeAt={}", t(2))).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
    // The same through POST /temporal/entityOperations/query.
    let r = s
        .post(
            "/temporal/entityOperations/query",
            &json!({
                "type": "Query",
                "entities": [{"type": "Vehicle"}],
                "q": "speed>90",
                "geoQ": {"georel": "near;maxDistance==1000", "geometry": "Point", "coordinates": [113.26, 23.13]},
                "temporalQ": {"timerel": "before", "timeAt": at(2)}
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The location of the current vehicle was recorded at its creation,
    // now, outside the range.
    assert_eq!(ids(&r), [only]);
    // An entity without instances (of the projected attributes) in the
    // range is not in the answer, and not counted.
    let r = query(format!("count=true&timerel=before&timeAt={}", t(2))).await;
    assert_eq!(ids(&r), [only, id]);
    let r = query(format!("count=true&timerel=before&timeAt={}", t(0))).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
    assert_eq!(r.header("ngsild-results-count"), Some("0"));
    let r = query(format!("attrs=brandName&timerel=before&timeAt={}", t(2))).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
}

/// History written through the temporal API alone makes its tenant, and
/// one instant however it is spelled holds one instance (the last).
#[tokio::test]
async fn a_history_only_tenant_is_readable_and_an_instant_is_one_however_spelled() {
    let s = Server::start().await;
    let body = json!({"id": "urn:ngsi-ld:G:1", "type": "G", "level": [
        {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"},
        {"type": "Property", "value": 2, "observedAt": "2026-01-01T00:00:00.000Z"},
        {"type": "Property", "value": 3, "observedAt": "2026-01-01T00:00:00.000000Z"},
        {"type": "Property", "value": 4, "observedAt": "2026-01-01T00:00:01Z"}]});
    let r = s
        .req(Method::POST, "/temporal/entities")
        .header("NGSILD-Tenant", "history-only")
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for path in [
        "/temporal/entities/urn:ngsi-ld:G:1?options=temporalValues",
        "/temporal/entities?type=G&options=temporalValues",
    ] {
        let r = s
            .req(Method::GET, path)
            .header("NGSILD-Tenant", "history-only")
            .send()
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let e = if r.body.is_array() {
            &r.body[0]
        } else {
            &r.body
        };
        let values: Vec<i64> = e["level"]["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {}", r.text))
            .iter()
            .map(|p| p[0].as_i64().unwrap())
            .collect();
        assert_eq!(values, [3, 4], "{path}");
    }
}

#[tokio::test]
async fn temporal_writes_create_append_modify_and_delete() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:w";
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Vehicle", "speed": [speed(json!(1), 1), speed(json!(2), 2)]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.header("location"),
        Some("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Vehicle:w")
    );
    // The temporal entity does not exist as a current entity.
    s.get(&format!("/entities/{id}"))
        .await
        .problem(404, "ResourceNotFound");
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Vehicle", "speed": speed(json!(3), 3)}),
        )
        .await;
    r.no_content();
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({"speed": [speed(json!(4), 4)], "fuel": {"type": "Property", "value": 0.5, "datasetId": "urn:ngsi-ld:tank:1", "observedAt": at(4)}}),
    )
    .await
    .no_content();
    assert_eq!(
        values(&s, id, "").await,
        [json!(1), json!(2), json!(3), json!(4)]
    );
    let body = temporal(&s, id, "attrs=fuel").await;
    assert_eq!(body["fuel"][0]["datasetId"], "urn:ngsi-ld:tank:1", "{body}");
    // Modify, then delete, one instance by its instanceId.
    let body = temporal(&s, id, "attrs=speed").await;
    let second = body["speed"][1]["instanceId"].as_str().unwrap().to_string();
    s.patch(
        &format!("/temporal/entities/{id}/attrs/speed/{}", enc(&second)),
        &json!({"type": "Property", "value": 20}),
    )
    .await
    .no_content();
    assert_eq!(
        values(&s, id, "").await,
        [json!(1), json!(20), json!(3), json!(4)]
    );
    s.delete(&format!(
        "/temporal/entities/{id}/attrs/speed/{}",
        enc(&second)
    ))
    .await
    .no_content();
    assert_eq!(values(&s, id, "").await, [json!(1), json!(3), json!(4)]);
    s.delete(&format!(
        "/temporal/entities/{id}/attrs/speed/{}",
        enc(&second)
    ))
    .await
    .problem(404, "ResourceNotFound");
    s.delete(&format!(
        "/temporal/entities/{id}/attrs/speed/not-an-instance"
    ))
    .await
    .problem(400, "BadRequestData");
    // Delete an attribute's history: one datasetId, then all.
    s.delete(&format!(
        "/temporal/entities/{id}/attrs/fuel?datasetId=urn:ngsi-ld:tank:1"
    ))
    .await
    .no_content();
    assert!(temporal(&s, id, "").await.get("fuel").is_none());
    s.delete(&format!(
        "/temporal/entities/{id}/attrs/speed?deleteAll=true"
    ))
    .await
    .no_content();
    s.delete(&format!("/temporal/entities/{id}/attrs/speed"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("/temporal/entities/{id}"))
        .await
        .no_content();
    s.get(&format!("/temporal/entities/{id}"))
        .await
        .problem(404, "ResourceNotFound");
    s.delete(&format!("/temporal/entities/{id}"))
        .await
        .problem(404, "ResourceNotFound");
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({"speed": speed(json!(1), 1)}),
    )
    .await
    .problem(404, "ResourceNotFound");
    // Invalid temporal entities.
    s.post(
        "/temporal/entities",
        &json!({"id": id, "speed": speed(json!(1), 1)}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        "/temporal/entities",
        &json!({"id": id, "type": "Vehicle", "speed": {"type": "Property"}}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post("/temporal/entities", &json!([1, 2]))
        .await
        .problem(400, "BadRequestData");
}

#[tokio::test]
async fn long_histories_are_cut_with_content_range_and_206() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:long";
    // 1,050 instances, one a minute from 2024-07-01T00:00Z, in requests
    // under the test server's body limit.
    let minute = |m: i64| format!("2024-07-01T{:02}:{:02}:00Z", m / 60, m % 60);
    for chunk in 0..7 {
        let list: Vec<Value> = (chunk * 150..(chunk + 1) * 150)
            .map(|m| json!({"type": "Property", "value": m, "observedAt": minute(m)}))
            .collect();
        let r = s
            .post(
                "/temporal/entities",
                &json!({"id": id, "type": "Vehicle", "speed": list}),
            )
            .await;
        assert!(r.status == 201 || r.status == 204, "{}", r.text);
    }
    let r = s
        .get(&format!(
            "/temporal/entities/{}?options=temporalValues",
            enc(id)
        ))
        .await;
    assert_eq!(r.status, 206, "{}", &r.text[..200.min(r.text.len())]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("date-time {}-{}/*", minute(0), minute(999)).as_str())
    );
    assert_eq!(r.body["speed"]["values"].as_array().unwrap().len(), 1000);
    // The next page starts at the end of the range (after is inclusive,
    // so the last instance comes again and none at that instant is lost).
    let r = s
        .get(&format!(
            "/temporal/entities/{}?options=temporalValues&timerel=after&timeAt={}",
            enc(id),
            enc(&minute(999))
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rest = r.body["speed"]["values"].as_array().unwrap();
    assert_eq!(rest.len(), 51);
    assert_eq!(rest[0][0], 999);
    // With a lower bound the range starts at it.
    let r = s
        .get(&format!(
            "/temporal/entities/{}?options=temporalValues&timerel=after&timeAt={}",
            enc(id),
            enc("2024-06-30T00:00:00Z")
        ))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("date-time 2024-06-30T00:00:00Z-{}/*", minute(999)).as_str())
    );
    let r = s
        .get(&format!(
            "/temporal/entities/{}?timerel=between&timeAt={}&endTimeAt={}",
            enc(id),
            enc(&minute(10)),
            enc(&minute(1040))
        ))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body["speed"].as_array().unwrap().len(), 1000);
    assert_eq!(
        r.header("content-range"),
        Some(format!("date-time {}-{}/*", minute(10), minute(1009)).as_str())
    );
    // lastN within the limit is complete; above it, the last ones come
    // with the size in the range.
    let r = s
        .get(&format!(
            "/temporal/entities/{}?options=temporalValues&lastN=3",
            enc(id)
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["speed"]["values"][0][0], 1047);
    let r = s
        .get(&format!(
            "/temporal/entities/{}?options=temporalValues&lastN=1040",
            enc(id)
        ))
        .await;
    // The range of a lastN answer runs from the most recent instant (or
    // the requested upper bound) down to the earliest one answered.
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("date-time {}-{}/1040", minute(1049), minute(50)).as_str())
    );
    let values = r.body["speed"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 1000);
    assert_eq!(values[0][0], 50);
    let r = s
        .get(&format!(
            "/temporal/entities/{}?lastN=1030&timerel=before&timeAt={}",
            enc(id),
            enc(&minute(1040))
        ))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("date-time {}-{}/1030", minute(1040), minute(40)).as_str())
    );
    let speeds = r.body["speed"].as_array().unwrap();
    assert_eq!(speeds.len(), 1000);
    assert_eq!(speeds[999]["value"], 1039);
    // An aggregation into more periods than the limit is cut too.
    let r = s
        .get(&format!(
            "/temporal/entities/{}?options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=PT1M",
            enc(id)
        ))
        .await;
    assert_eq!(r.status, 206, "{}", &r.text[..200.min(r.text.len())]);
    assert_eq!(r.body["speed"]["sum"].as_array().unwrap().len(), 1000);
    assert_eq!(
        r.header("content-range"),
        Some(format!("date-time {}-{}/*", minute(0), minute(1000)).as_str())
    );
    // A query answer is cut the same way.
    let r = s.get("/temporal/entities?type=Vehicle").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body[0]["speed"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn invalid_temporal_requests_are_refused() {
    let s = Server::start().await;
    temporal_vehicle(&s, "urn:ngsi-ld:Vehicle:e", &[(1, 1)]).await;
    let base = "/temporal/entities/urn:ngsi-ld:Vehicle:e";
    for (params, kind) in [
        (
            "timerel=between&timeAt=2024-07-01T00:00:00Z",
            "BadRequestData",
        ),
        (
            "timerel=during&timeAt=2024-07-01T00:00:00Z",
            "BadRequestData",
        ),
        ("timerel=before", "BadRequestData"),
        ("timeAt=2024-07-01T00:00:00Z", "BadRequestData"),
        ("timerel=before&timeAt=yesterday", "BadRequestData"),
        (
            "timerel=between&timeAt=2024-07-02T00:00:00Z&endTimeAt=2024-07-01T00:00:00Z",
            "BadRequestData",
        ),
        ("timeproperty=bogusAt", "BadRequestData"),
        ("lastN=0", "BadRequestData"),
        ("lastN=-1", "BadRequestData"),
        ("options=aggregatedValues", "BadRequestData"),
        (
            "options=aggregatedValues&aggrMethods=median",
            "BadRequestData",
        ),
        (
            "options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=P1X",
            "BadRequestData",
        ),
        (
            "options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=1D",
            "BadRequestData",
        ),
        ("options=temporalValues&unknown=1", "InvalidRequest"),
        // Linked-entity projections are not offered (clause 5.7.3.4).
        ("pick=owner{name}", "BadRequestData"),
        // An unknown representation is InvalidRequest (clause 6.3.12).
        ("options=temporalValues,invalidOptions", "InvalidRequest"),
        ("format=invalidFormat", "InvalidRequest"),
    ] {
        let r = s.get(&format!("{base}?{params}")).await;
        assert_eq!(r.status, 400, "{params}: {}", r.text);
        r.problem(400, kind);
    }
    s.get("/temporal/entities/urn:ngsi-ld:Vehicle:none")
        .await
        .problem(404, "ResourceNotFound");
    s.get("/temporal/entities/not-a-uri")
        .await
        .problem(400, "BadRequestData");
    s.req(Method::GET, base)
        .header("NGSILD-Tenant", "nobody")
        .send()
        .await
        .problem(404, "NonexistentTenant");
    s.post(
        "/temporal/entityOperations/query",
        &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "temporalQ": {"timerel": "between"}}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        "/temporal/entityOperations/query",
        &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "temporalQ": 5}),
    )
    .await
    .problem(400, "BadRequestData");
}

#[tokio::test]
async fn temporal_queries_order_by_id_only() {
    let s = Server::start().await;
    for n in [2, 1, 3] {
        temporal_vehicle(&s, &format!("urn:ngsi-ld:Vehicle:o{n}"), &[(n, 1)]).await;
    }
    let ids = crate::support::ids_of;
    let query = "/temporal/entities?type=Vehicle&timerel=after&timeAt=1970-01-01T00:00:00Z";
    let asc = [
        "urn:ngsi-ld:Vehicle:o1",
        "urn:ngsi-ld:Vehicle:o2",
        "urn:ngsi-ld:Vehicle:o3",
    ];
    for (order, reversed) in [("id", false), ("id;asc", false), ("id;desc", true)] {
        let r = s.get(&format!("{query}&orderBy={}", enc(order))).await;
        assert_eq!(r.status, 200, "{order}: {}", r.text);
        let mut want = asc.to_vec();
        if reversed {
            want.reverse();
        }
        assert_eq!(ids(&r.body), want, "orderBy={order}");
    }
    // A page of the reversed order.
    let r = s
        .get(&format!("{query}&orderBy=id;desc&limit=1&offset=1"))
        .await;
    assert_eq!(ids(&r.body), ["urn:ngsi-ld:Vehicle:o2"]);
    // Clause 5.7.4.4: anything but id is BadRequestData (ETSI 021_23).
    for order in ["speed", "createdAt", "speed.observedAt", "id,speed"] {
        s.get(&format!("{query}&orderBy={}", enc(order)))
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn pages_of_a_range_query_skip_entities_without_instances_in_the_range() {
    let s = Server::start().await;
    // p1 and p3 have instances after hour 10, p2 and p4 only before.
    for (n, hour) in [(1, 20), (2, 1), (3, 30), (4, 2), (5, 40)] {
        temporal_vehicle(&s, &format!("urn:ngsi-ld:Vehicle:p{n}"), &[(n, hour)]).await;
    }
    let page = |extra: &str| {
        let s = &s;
        let extra = extra.to_string();
        async move {
            let r = s
                .get(&format!(
                    "/temporal/entities?type=Vehicle&timerel=after&timeAt={}{extra}",
                    enc(&at(10))
                ))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            (
                crate::support::ids_of(&r.body),
                r.header("NGSILD-Results-Count").map(str::to_string),
            )
        }
    };
    let v = |n: &[i32]| -> Vec<String> {
        n.iter()
            .map(|n| format!("urn:ngsi-ld:Vehicle:p{n}"))
            .collect()
    };
    assert_eq!(page("&limit=2").await.0, v(&[1, 3]));
    assert_eq!(page("&limit=2&offset=1").await.0, v(&[3, 5]));
    assert_eq!(page("&limit=1&offset=2").await.0, v(&[5]));
    assert_eq!(page("&limit=1&offset=3").await.0, v(&[]));
    assert_eq!(page("&limit=2&orderBy=id;desc").await.0, v(&[5, 3]));
    let (ids, count) = page("&limit=1&count=true").await;
    assert_eq!((ids, count.as_deref()), (v(&[1]), Some("3")));
}

#[tokio::test]
async fn pick_omit_attrs_and_dataset_id_project_the_temporal_representation() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:p";
    let fuel = |v: i64, h: i64, ds: Option<&str>| {
        let mut f = json!({"type": "Property", "value": v, "observedAt": at(h)});
        if let Some(d) = ds {
            f["datasetId"] = json!(d);
        }
        f
    };
    let r = s
        .post(
            "/temporal/entities",
            &json!({
                "id": id, "type": "Vehicle",
                "speed": [speed(json!(1), 1), speed(json!(2), 2)],
                "fuel": [fuel(10, 1, None), fuel(20, 2, Some("urn:ngsi-ld:tank:2"))],
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // pick and omit choose the members, id and type included.
    assert_eq!(keys(&temporal(&s, id, "pick=speed").await), ["speed"]);
    assert_eq!(
        keys(&temporal(&s, id, "pick=id,speed").await),
        ["id", "speed"]
    );
    assert_eq!(
        keys(&temporal(&s, id, "omit=speed").await),
        ["fuel", "id", "type"]
    );
    assert_eq!(
        keys(&temporal(&s, id, "omit=type,speed").await),
        ["fuel", "id"]
    );
    // attrs cannot go with pick or omit.
    for params in [
        "pick=speed&attrs=fuel",
        "omit=speed&attrs=fuel",
        "pick=speed&omit=fuel",
    ] {
        s.get(&format!("/temporal/entities/{id}?{params}"))
            .await
            .problem(400, "BadRequestData");
    }
    // Nothing left to show, or no history of the attributes asked for:
    // ResourceNotFound.
    for params in ["pick=unknown", "omit=id,type,speed,fuel", "attrs=unknown"] {
        s.get(&format!("/temporal/entities/{id}?{params}"))
            .await
            .problem(404, "ResourceNotFound");
    }
    // datasetId keeps the instances of those datasetIds (@none: the default).
    let body = temporal(&s, id, "datasetId=urn:ngsi-ld:tank:2").await;
    assert_eq!(keys(&body), ["fuel", "id", "type"]);
    assert_eq!(body["fuel"][0]["value"], 20, "{body}");
    let body = temporal(&s, id, "datasetId=@none&attrs=fuel").await;
    assert_eq!(body["fuel"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["fuel"][0]["value"], 10, "{body}");
    // In a query, pick and omit only project: pick=id still returns the
    // entity; datasetId also selects.
    let r = s
        .get(&format!(
            "/temporal/entities?type=Vehicle&pick=id&timerel=after&timeAt={}",
            enc(&at(0))
        ))
        .await;
    assert_eq!(r.body, json!([{"id": id}]), "{}", r.text);
    for (params, found) in [
        ("datasetId=urn:ngsi-ld:tank:2", true),
        ("attrs=speed&datasetId=urn:ngsi-ld:tank:2", false),
        ("attrs=fuel&datasetId=urn:ngsi-ld:tank:9", false),
    ] {
        let r = s
            .get(&format!(
                "/temporal/entities?type=Vehicle&{params}&timerel=after&timeAt={}",
                enc(&at(0))
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            !r.body.as_array().unwrap().is_empty(),
            found,
            "{params}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn deleted_attributes_keep_their_kind_and_are_selected_by_deleted_at() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:del";
    s.create(json!({
        "id": id, "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "observedAt": at(1)},
        "isParkedIn": {"type": "Relationship", "object": "urn:ngsi-ld:Parking:1", "observedAt": at(1)},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "car"}, "observedAt": at(1)},
    }))
    .await;
    for attr in ["speed", "isParkedIn", "name"] {
        s.delete(&format!("/entities/{id}/attrs/{attr}"))
            .await
            .no_content();
    }
    // Only the deletions, each as the NGSI-LD Null of its kind.
    let body = temporal(&s, id, "timeproperty=deletedAt").await;
    let one = |attr: &str| {
        let list = body[attr].as_array().unwrap_or_else(|| panic!("{body}"));
        assert_eq!(list.len(), 1, "{body}");
        let mut i = list[0].clone();
        assert!(i["deletedAt"].is_string(), "{body}");
        let m = i.as_object_mut().unwrap();
        m.remove("deletedAt");
        m.remove("instanceId");
        i
    };
    assert_eq!(
        one("speed"),
        json!({"type": "Property", "value": "urn:ngsi-ld:null"})
    );
    assert_eq!(
        one("isParkedIn"),
        json!({"type": "Relationship", "object": "urn:ngsi-ld:null"})
    );
    assert_eq!(
        one("name"),
        json!({"type": "LanguageProperty", "languageMap": {"@none": "urn:ngsi-ld:null"}})
    );
    let body = temporal(&s, id, "timeproperty=deletedAt&options=temporalValues").await;
    assert_eq!(body["isParkedIn"]["type"], "Relationship", "{body}");
    assert_eq!(body["isParkedIn"]["objects"][0][0], "urn:ngsi-ld:null");
    assert_eq!(
        body["name"]["languageMaps"][0][0],
        json!({"languageMap": {"@none": "urn:ngsi-ld:null"}})
    );
    // A deletion is no observation: an observedAt range leaves it out.
    let body = temporal(
        &s,
        id,
        &format!("timerel=after&timeAt={}&attrs=speed", enc(&at(0))),
    )
    .await;
    assert_eq!(body["speed"].as_array().map(Vec::len), Some(1), "{body}");
    // A deletedAt range selects by the deletion time.
    let body = temporal(
        &s,
        id,
        &format!(
            "timeproperty=deletedAt&timerel=before&timeAt={}",
            enc(&at(0))
        ),
    )
    .await;
    assert!(body.get("speed").is_none(), "{body}");
}

#[tokio::test]
async fn an_observed_at_range_selects_only_instances_with_observed_at() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:obs";
    s.create(json!({
        "id": id, "type": "Vehicle",
        "speed": {"type": "Property", "value": 1, "observedAt": at(1)},
        "fuel": {"type": "Property", "value": 5},
    }))
    .await;
    s.patch(
        &format!("/entities/{id}/attrs"),
        &json!({"speed": {"type": "Property", "value": 2}}),
    )
    .await
    .no_content();
    // Without a range every instance is there.
    assert_eq!(values(&s, id, "").await, [json!(1), json!(2)]);
    // An observedAt range (the default time property) holds only the
    // instances with an observedAt (clause 4.11)...
    let range = format!("timerel=after&timeAt={}", enc(&at(0)));
    assert_eq!(values(&s, id, &range).await, [json!(1)]);
    let body = temporal(&s, id, &range).await;
    assert!(body.get("fuel").is_none(), "{body}");
    let body = temporal(
        &s,
        id,
        &format!("{range}&options=aggregatedValues&aggrMethods=totalCount,sum"),
    )
    .await;
    assert_eq!(body["speed"]["totalCount"][0][0], 1, "{body}");
    assert_eq!(body["speed"]["sum"][0][0], 1.0, "{body}");
    // ... a modifiedAt range all of them.
    let modified = format!("{range}&timeproperty=modifiedAt");
    assert_eq!(values(&s, id, &modified).await, [json!(1), json!(2)]);
    let body = temporal(
        &s,
        id,
        &format!("{modified}&options=aggregatedValues&aggrMethods=totalCount"),
    )
    .await;
    assert_eq!(body["speed"]["totalCount"][0][0], 2, "{body}");
    // A query selects an entity by the instances of its range.
    let r = s
        .get(&format!(
            "/temporal/entities?type=Vehicle&attrs=fuel&{range}"
        ))
        .await;
    assert_eq!(r.body, json!([]), "{}", r.text);
}

#[tokio::test]
async fn format_wins_over_options_and_query_bodies_ask_for_aggregation() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:fmt";
    temporal_vehicle(&s, id, &[(1, 1), (3, 2)]).await;
    let range = format!("timerel=after&timeAt={}", enc(&at(0)));
    let r = s
        .get(&format!(
            "/temporal/entities?type=Vehicle&{range}&format=temporalValues&options=aggregatedValues&aggrMethods=sum"
        ))
        .await;
    assert_eq!(
        r.body[0]["speed"]["values"],
        json!([[1, at(1)], [3, at(2)]]),
        "{}",
        r.text
    );
    // simplified is the simplified temporal representation.
    let body = temporal(&s, id, "format=simplified").await;
    assert_eq!(body["speed"]["values"][1][0], 3, "{body}");
    // Aggregation methods in the Query body ask for the aggregated form,
    // in temporalQ or in aggrParams (clause 5.2.44).
    for body in [
        json!({"type": "Query", "entities": [{"type": "Vehicle"}],
               "temporalQ": {"timerel": "after", "timeAt": at(0), "aggrMethods": ["sum"]}}),
        json!({"type": "Query", "entities": [{"type": "Vehicle"}],
               "temporalQ": {"timerel": "after", "timeAt": at(0), "aggrMethods": "sum"}}),
        json!({"type": "Query", "entities": [{"type": "Vehicle"}],
               "temporalQ": {"timerel": "after", "timeAt": at(0)},
               "aggrParams": {"aggrMethods": ["sum"], "aggrPeriodDuration": "PT0S"}}),
    ] {
        let r = s.post("/temporal/entityOperations/query", &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text);
        assert_eq!(r.body[0]["speed"]["sum"][0][0], 4.0, "{body}: {}", r.text);
    }
    for (aggr, word) in [
        (json!({"aggrMethods": ["median"]}), "aggrMethods"),
        (
            json!({"aggrMethods": ["sum"], "aggrPeriodDuration": "bogus"}),
            "aggrPeriodDuration",
        ),
    ] {
        let r = s
            .post(
                "/temporal/entityOperations/query",
                &json!({"type": "Query", "entities": [{"type": "Vehicle"}],
                        "temporalQ": {"timerel": "after", "timeAt": at(0)}, "aggrParams": aggr}),
            )
            .await;
        r.problem(400, "BadRequestData");
        assert!(r.text.contains(word), "{}", r.text);
    }
}

#[tokio::test]
async fn temporal_upserts_replace_instances_observed_at_the_same_instant() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:up";
    temporal_vehicle(&s, id, &[(120, 1), (80, 2)]).await;
    // The same instants again, one with a new value, and a new one.
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": ["Vehicle", "Truck"],
                    "speed": [speed(json!(121), 1), speed(json!(80), 2), speed(json!(100), 3)]}),
        )
        .await;
    r.no_content();
    assert_eq!(
        values(&s, id, "").await,
        [json!(121), json!(80), json!(100)]
    );
    // The type names are added to those the entity had.
    let body = temporal(&s, id, "attrs=speed").await;
    assert_eq!(body["type"], json!(["Vehicle", "Truck"]), "{body}");
    // An instance whose value is the NGSI-LD Null records a deleted value
    // (clause 4.5.7); the Null as a member value is refused.
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({"speed": [speed(json!("urn:ngsi-ld:null"), 4)]}),
    )
    .await
    .no_content();
    assert_eq!(values(&s, id, "").await[3], json!("urn:ngsi-ld:null"));
    let other = "urn:ngsi-ld:Vehicle:null";
    s.post(
        "/temporal/entities",
        &json!({"id": other, "type": "Vehicle", "expiresAt": "urn:ngsi-ld:null", "speed": [speed(json!(1), 1)]}),
    )
    .await
    .problem(400, "BadRequestData");
    s.get(&format!("/temporal/entities/{other}"))
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn attribute_names_and_instance_ids_of_temporal_paths_are_checked() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:names";
    temporal_vehicle(&s, id, &[(1, 1)]).await;
    let body = temporal(&s, id, "").await;
    let instance = body["speed"][0]["instanceId"].as_str().unwrap().to_string();
    // Not a name (a dot segment, percent-encoded or not): BadRequestData,
    // and nothing is deleted. The requests are sent raw: the client
    // library would resolve the encoded dot segments itself.
    for attr in ["invalid(Name", "%2e%2e", "%252e%252e", "%2e"] {
        for path in [
            format!("/ngsi-ld/v1/temporal/entities/{id}/attrs/{attr}"),
            format!(
                "/ngsi-ld/v1/temporal/entities/{id}/attrs/{attr}/{}",
                enc(&instance)
            ),
        ] {
            let answer = crate::support::raw(
                &s,
                &format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
            assert!(
                answer.contains("/errors/BadRequestData"),
                "{path}: {answer}"
            );
        }
    }
    s.patch(
        &format!(
            "/temporal/entities/{id}/attrs/invalid(Name/{}",
            enc(&instance)
        ),
        &json!({"type": "Property", "value": 2}),
    )
    .await
    .problem(400, "BadRequestData");
    assert_eq!(values(&s, id, "").await, [json!(1)]);
    // An instanceId that is a URI but names no instance: ResourceNotFound.
    let unknown = "urn:ngsi-ld:01234567890123456789";
    s.delete(&format!("/temporal/entities/{id}/attrs/speed/{unknown}"))
        .await
        .problem(404, "ResourceNotFound");
    s.patch(
        &format!("/temporal/entities/{id}/attrs/speed/{unknown}"),
        &json!({"type": "Property", "value": 2}),
    )
    .await
    .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn the_scope_has_a_history_and_scope_q_tests_it_over_time() {
    let s = Server::start().await;
    // A Core API change of the scope is an instance of a Property whose
    // observedAt copies modifiedAt (clause 4.5.6).
    let id = "urn:ngsi-ld:Vehicle:scoped";
    s.create(json!({"id": id, "type": "Vehicle", "scope": "/Old", "speed": {"type": "Property", "value": 1}}))
        .await;
    s.patch(
        &format!("/entities/{id}"),
        &json!({"scope": ["/New", "/Other"]}),
    )
    .await
    .no_content();
    let body = temporal(&s, id, "options=sysAttrs").await;
    let scopes = body["scope"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(scopes.len(), 2, "{body}");
    assert_eq!(scopes[1]["type"], "Property");
    assert_eq!(scopes[1]["value"], json!(["/New", "/Other"]));
    assert_eq!(scopes[1]["observedAt"], scopes[1]["modifiedAt"], "{body}");
    assert!(temporal(&s, id, "omit=scope").await.get("scope").is_none());
    let body = temporal(&s, id, "options=aggregatedValues&aggrMethods=totalCount").await;
    assert!(body.get("scope").is_none(), "{body}");
    assert!(temporal(&s, id, "pick=speed").await.get("scope").is_none());
    // Removing the scope records its deletion.
    s.patch(
        &format!("/entities/{id}"),
        &json!({"scope": "urn:ngsi-ld:null"}),
    )
    .await
    .no_content();
    let body = temporal(&s, id, "timeproperty=deletedAt").await;
    assert_eq!(body["scope"][0]["value"], "urn:ngsi-ld:null", "{body}");

    // Temporal entities with scope instances: a scope is valid from its
    // instant until the next one (clause 4.18); scopeQ selects the
    // entities whose scope matched in the range, and only the instances of
    // the intervals in which it matched (annex C.5.16).
    let h = |m: i64| format!("2024-07-01T12:{m:02}:00Z");
    let p = |v: &str, m: i64| json!({"type": "Property", "value": v, "observedAt": h(m)});
    for (id, scope, speed) in [
        (
            "urn:ngsi-ld:Vehicle:ab",
            json!([p("/A/B", 0)]),
            json!([p("ab", 5)]),
        ),
        (
            "urn:ngsi-ld:Vehicle:plain",
            json!("/X"),
            json!([p("plain", 5)]),
        ),
        (
            "urn:ngsi-ld:Vehicle:mid",
            json!([p("/M", 10)]),
            json!([p("pre", 5), p("post", 15)]),
        ),
        (
            "urn:ngsi-ld:Vehicle:rep",
            json!([p("/R", 0), p("/S", 30)]),
            json!([p("old", 15), p("new", 45)]),
        ),
        (
            "urn:ngsi-ld:Vehicle:late",
            json!([p("/Z", 59)]),
            json!([p("late", 5)]),
        ),
    ] {
        let r = s
            .post(
                "/temporal/entities",
                &json!({"id": id, "type": "Bus", "scope": scope, "speed": speed}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let query = |scope_q: &str| {
        let url = format!(
            "/temporal/entities?type=Bus&scopeQ={}&timerel=between&timeAt={}&endTimeAt={}",
            enc(scope_q),
            enc(&h(1)),
            enc(&h(50))
        );
        let s = &s;
        async move {
            let r = s.get(&url).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r
        }
    };
    let r = query("/A/B").await;
    assert_eq!(crate::support::ids_of(&r.body), ["urn:ngsi-ld:Vehicle:ab"]);
    // The scope set before the range is shown with the entity.
    assert_eq!(r.body[0]["scope"][0]["value"], "/A/B", "{}", r.text);
    let r = query("/#").await;
    // "plain" got its scope when it was written, after the range; "late"
    // only at minute 59.
    assert_eq!(
        crate::support::ids_of(&r.body),
        [
            "urn:ngsi-ld:Vehicle:ab",
            "urn:ngsi-ld:Vehicle:mid",
            "urn:ngsi-ld:Vehicle:rep"
        ]
    );
    let speeds = |r: &crate::support::Resp| -> Vec<Value> {
        r.body[0]["speed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["value"].clone())
            .collect()
    };
    assert_eq!(speeds(&query("/M").await), [json!("post")]);
    assert_eq!(speeds(&query("/R").await), [json!("old")]);
    assert_eq!(speeds(&query("/S").await), [json!("new")]);
    assert_eq!(query("/Z").await.body, json!([]));
    assert_eq!(query("/X").await.body, json!([]));
}

#[tokio::test]
async fn expand_values_expands_the_words_q_compares_a_vocab_property_with() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:ngsi-ld:Shop:v", "type": "Shop", "category": {"type": "VocabProperty", "vocab": "commercial"}}))
        .await;
    let base = format!(
        "/temporal/entities?type=Shop&q=category==commercial&timerel=after&timeAt={}&timeproperty=createdAt",
        enc("2000-01-01T00:00:00Z")
    );
    let r = s.get(&format!("{base}&expandValues=category")).await;
    assert_eq!(
        crate::support::ids_of(&r.body),
        ["urn:ngsi-ld:Shop:v"],
        "{}",
        r.text
    );
    // The stored value is an IRI: the bare word alone does not match it.
    let r = s.get(&base).await;
    assert_eq!(r.body, json!([]), "{}", r.text);
}

#[tokio::test]
async fn attributes_without_instances_in_the_range_are_left_out() {
    // ETSI TP 020_04_01: an attribute with no instance in the range is
    // not in the answer (not an empty array); with none at all the entity
    // is answered with its id and type. An attribute the server cut to
    // nothing at its limit is an empty array (TP 020_14, see
    // long_histories_are_cut_with_content_range_and_206).
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:gap";
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Vehicle",
                    "speed": [speed(json!(1), 1)],
                    "fuel": [{"type": "Property", "value": 9, "observedAt": at(5)}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = temporal(&s, id, &format!("timerel=after&timeAt={}", enc(&at(3)))).await;
    assert!(body.get("speed").is_none(), "{body}");
    assert_eq!(body["fuel"][0]["value"], 9, "{body}");
    let body = temporal(&s, id, &format!("timerel=after&timeAt={}", enc(&at(9)))).await;
    assert_eq!(body, json!({"id": id, "type": "Vehicle"}));
}

#[tokio::test]
async fn simplified_pairs_of_geo_and_list_properties() {
    // Clause 4.5.9 (ETSI TP 459_01): GeoProperties under `values`, the
    // bare list of a ListProperty under `valueLists`, of a
    // ListRelationship under `objectLists`.
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:lists";
    let point = |x: f64| json!({"type": "Point", "coordinates": [x, 2.0]});
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Vehicle",
                    "location": [
                        {"type": "GeoProperty", "value": point(1.0), "observedAt": at(1)},
                        {"type": "GeoProperty", "value": point(3.0), "observedAt": at(2)}],
                    "depths": {"type": "ListProperty", "valueList": [1.2, 3.4], "observedAt": at(1)},
                    "route": {"type": "ListRelationship", "objectList": ["urn:ngsi-ld:Road:1", "urn:ngsi-ld:Road:2"], "observedAt": at(1)}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = temporal(&s, id, "options=temporalValues").await;
    assert_eq!(
        body["location"],
        json!({"type": "GeoProperty", "values": [[point(1.0), at(1)], [point(3.0), at(2)]]})
    );
    assert_eq!(
        body["depths"],
        json!({"type": "ListProperty", "valueLists": [[[1.2, 3.4], at(1)]]})
    );
    assert_eq!(
        body["route"],
        json!({"type": "ListRelationship", "objectLists": [[["urn:ngsi-ld:Road:1", "urn:ngsi-ld:Road:2"], at(1)]]})
    );
}

#[tokio::test]
async fn temporal_names_are_expanded_and_compacted_with_the_request_context() {
    // ETSI TPs 020_01, 020_02, 021_04: names come back expanded without
    // the @context they were written with, compacted with it.
    let s = Server::start().await;
    let ctx = json!({"Car": "https://cars.example/Car", "speed": "https://cars.example/speed"});
    let url = crate::support::serve_document(json!({"@context": ctx})).await;
    let id = "urn:ngsi-ld:Car:ctx";
    let r = s
        .req(Method::POST, "/temporal/entities")
        .ld(&json!({"id": id, "type": "Car", "speed": [speed(json!(1), 1)], "@context": [url]}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = temporal(&s, id, "").await;
    assert_eq!(body["type"], "https://cars.example/Car", "{body}");
    assert_eq!(body["https://cars.example/speed"][0]["value"], 1, "{body}");
    let link = crate::support::link(&url);
    let r = s
        .req(Method::GET, &format!("/temporal/entities/{id}"))
        .header("Link", &link)
        .send()
        .await;
    assert_eq!(r.body["type"], "Car", "{}", r.text);
    assert_eq!(r.body["speed"][0]["value"], 1, "{}", r.text);
    let r = s
        .req(
            Method::GET,
            &format!(
                "/temporal/entities?type=Car&timerel=after&timeAt={}",
                enc(&at(0))
            ),
        )
        .header("Link", &link)
        .send()
        .await;
    assert_eq!(r.body[0]["speed"][0]["value"], 1, "{}", r.text);
}

/// An entity of many datasetIds and many attributes, edited by fragments as
/// large (past every size where lookups go through maps): the entity and
/// its history come out as editing one instance at a time would leave them.
#[tokio::test]
async fn wide_entities_are_edited_and_recorded_instance_by_instance() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Wide:1";
    let reading = |d: usize, v: i64| json!({"type": "Property", "value": v, "datasetId": format!("urn:ngsi-ld:Dataset:{d}")});
    let mut entity = json!({"id": id, "type": "Wide", "reading": (0..300).map(|d| reading(d, 0)).collect::<Vec<_>>()});
    for a in 0..100 {
        entity[format!("a{a}")] = json!({"type": "Property", "value": a});
    }
    s.create(entity).await;
    // Merge: datasetIds 0..150 deleted, 150..300 changed, 300..400 added;
    // attributes a0..a50 deleted, the rest changed, b0..b50 added.
    let mut merge = json!({"reading": (0..400).map(|d| if d < 150 {
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "datasetId": format!("urn:ngsi-ld:Dataset:{d}")})
    } else {
        reading(d, 1)
    }).collect::<Vec<_>>()});
    for a in 0..100 {
        merge[format!("a{a}")] = if a < 50 {
            json!("urn:ngsi-ld:null")
        } else {
            json!(-1)
        };
        merge[format!("b{a}")] = json!(a);
    }
    s.patch(&format!("/entities/{id}"), &merge)
        .await
        .no_content();
    // Append without overwriting: only 400..450 are new.
    let append = json!({"reading": (350..450).map(|d| reading(d, 2)).collect::<Vec<_>>()});
    let r = s
        .post(
            &format!("/entities/{id}/attrs?options=noOverwrite"),
            &append,
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text);

    let e = s.entity(id, "").await;
    let mut got: Vec<(usize, i64)> = e["reading"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let d = i["datasetId"].as_str().unwrap();
            (
                d.rsplit(':').next().unwrap().parse().unwrap(),
                i["value"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort_unstable();
    let expected: Vec<(usize, i64)> = (150..450)
        .map(|d| (d, if d < 400 { 1 } else { 2 }))
        .collect();
    assert_eq!(got, expected);
    let names = e.as_object().unwrap();
    assert!((0..50).all(|a| !names.contains_key(&format!("a{a}"))));
    assert!((50..100).all(|a| e[format!("a{a}")]["value"] == -1));
    assert!((0..100).all(|a| e[format!("b{a}")]["value"] == a));

    // History: a deletion for 0..150, two instances for 150..300, one for
    // 300..450; two for each attribute a (a0..a50 end deleted), one for b.
    // The normalized temporal representation: one element per instance.
    let h = temporal(&s, id, "").await;
    let mut series: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for i in h["reading"].as_array().unwrap() {
        let d = i["datasetId"].as_str().unwrap();
        let counts = series
            .entry(d.rsplit(':').next().unwrap().parse().unwrap())
            .or_default();
        counts.0 += 1;
        counts.1 += usize::from(i.get("deletedAt").is_some());
    }
    let series: Vec<(usize, usize, usize)> = series
        .into_iter()
        .map(|(d, (n, gone))| (d, n, gone))
        .collect();
    let expected: Vec<(usize, usize, usize)> = (0..450)
        .map(|d| match d {
            0..150 => (d, 2, 1),
            150..300 => (d, 2, 0),
            _ => (d, 1, 0),
        })
        .collect();
    assert_eq!(series, expected);
    for a in 0..100 {
        let count = |name: &str| h[name].as_array().map_or(1, Vec::len);
        assert_eq!(count(&format!("a{a}")), 2, "a{a}: {}", h[format!("a{a}")]);
        assert_eq!(count(&format!("b{a}")), 1, "b{a}");
    }
}

/// Findings of a spec review of the temporal API, each as the clause
/// words it: a fragment that names another attribute replaces no
/// instance (6.22.3.1); Add Attributes adds the fragment's type names
/// (5.6.12.4); a Query's datasetId selects the instances shown (Table
/// 5.2.23-1); aggregated values are labelled with their attribute's kind
/// (4.5.19.0); an attribute whose last instance went is gone; `lang`
/// makes the simplified LanguageProperty a Property (4.15).
#[tokio::test]
async fn temporal_fragments_datasets_kinds_and_languages_as_the_clauses_word_them() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Vehicle:review";
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Vehicle",
                "speed": [speed(json!(1), 1), speed(json!(2), 2)],
                "road": [{"type": "Relationship", "object": "urn:ngsi-ld:Road:1", "observedAt": at(1)},
                         {"type": "Relationship", "object": "urn:ngsi-ld:Road:2", "observedAt": at(2)}],
                "name": {"type": "LanguageProperty", "languageMap": {"en": "bus", "zh": "公交"}, "observedAt": at(1)},
                "fuel": [{"type": "Property", "value": 0.5, "datasetId": "urn:ngsi-ld:tank:1", "observedAt": at(1)},
                         {"type": "Property", "value": 0.7, "datasetId": "urn:ngsi-ld:tank:2", "observedAt": at(1)}],
                "gone": {"type": "Property", "value": 9, "observedAt": at(1)}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // A fragment that names another attribute, or this one and another.
    let body = temporal(&s, id, "attrs=speed").await;
    let first = body["speed"][0]["instanceId"].as_str().unwrap().to_string();
    let path = format!("/temporal/entities/{id}/attrs/speed/{}", enc(&first));
    for fragment in [
        json!({"fuel": [{"type": "Property", "value": 555}]}),
        json!({"speed": [{"type": "Property", "value": 5}], "fuel": [{"type": "Property", "value": 6}]}),
    ] {
        s.patch(&path, &fragment)
            .await
            .problem(400, "BadRequestData");
    }
    s.patch(
        &path,
        &json!({"speed": [{"type": "Property", "value": 10}]}),
    )
    .await
    .no_content();
    assert_eq!(values(&s, id, "").await, [json!(10), json!(2)]);

    // Add Attributes adds type names.
    s.post(
        &format!("/temporal/entities/{id}/attrs"),
        &json!({"type": "Bus", "speed": speed(json!(3), 3)}),
    )
    .await
    .no_content();
    let body = temporal(&s, id, "attrs=speed").await;
    assert_eq!(body["type"], json!(["Vehicle", "Bus"]), "{body}");
    let r = s
        .get("/temporal/entities?type=Bus&timerel=after&timeAt=2024-01-01T00:00:00Z")
        .await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.text);

    // A Query's datasetId, as the query string's.
    let r = s
        .post(
            "/temporal/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "attrs": ["fuel"],
                    "datasetId": ["urn:ngsi-ld:tank:2"],
                    "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fuel = &r.body[0]["fuel"];
    let fuel = fuel
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![fuel.clone()]);
    assert_eq!(fuel.len(), 1, "{}", r.text);
    assert_eq!(fuel[0]["datasetId"], "urn:ngsi-ld:tank:2", "{}", r.text);
    let r = s
        .post(
            "/temporal/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "datasetId": ["not a uri"],
                    "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T00:00:00Z"}}),
        )
        .await;
    r.problem(400, "BadRequestData");

    // Aggregated values are labelled with the attribute's kind.
    let body = temporal(
        &s,
        id,
        "attrs=road,speed&options=aggregatedValues&aggrMethods=totalCount",
    )
    .await;
    assert_eq!(body["road"]["type"], "Relationship", "{body}");
    assert_eq!(body["speed"]["type"], "Property", "{body}");

    // The last instance of an attribute takes the attribute with it.
    let body = temporal(&s, id, "attrs=gone").await;
    let only = body["gone"][0]["instanceId"].as_str().unwrap().to_string();
    s.delete(&format!(
        "/temporal/entities/{id}/attrs/gone/{}",
        enc(&only)
    ))
    .await
    .no_content();
    let body = temporal(&s, id, "").await;
    assert_eq!(body.get("gone"), None, "{body}");
    let r = s
        .get("/temporal/entities?type=Vehicle&attrs=gone&timerel=after&timeAt=2024-01-01T00:00:00Z")
        .await;
    assert_eq!(r.body, json!([]), "{}", r.text);

    // lang: the simplified LanguageProperty is the Property of one language.
    let body = temporal(&s, id, "attrs=name&lang=zh&options=temporalValues").await;
    assert_eq!(
        body["name"],
        json!({"type": "Property", "values": [["公交", at(1)]]}),
        "{body}"
    );
}

/// Found by a black-box review: the simplified pairs of an attribute that
/// changed kind, distinct JSON objects, averages of huge numbers and an
/// instance modified with another datasetId.
#[tokio::test]
async fn pairs_counts_and_instances_hold_whatever_the_values_are() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Sensor:kinds";
    s.create(json!({"id": id, "type": "Sensor", "p": speed(json!(1), 1)}))
        .await;
    for p in [
        json!({"type": "Relationship", "object": "urn:x:1", "observedAt": at(2)}),
        json!({"type": "LanguageProperty", "languageMap": {"en": "x"}, "observedAt": at(3)}),
    ] {
        s.post(&format!("/entities/{id}/attrs"), &json!({"p": p}))
            .await
            .no_content();
    }
    // Each pair holds its instance's own value (clause 4.5.9).
    let body = temporal(&s, id, "options=temporalValues&attrs=p").await;
    let firsts: Vec<Value> = body["p"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].clone())
        .collect();
    assert_eq!(
        firsts,
        [
            json!(1),
            json!("urn:x:1"),
            json!({"languageMap": {"en": "x"}})
        ],
        "{body}"
    );

    let id = "urn:ngsi-ld:Sensor:aggregates";
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Sensor",
                "o": [speed(json!({"a": 1, "b": [{"x": 1, "y": 2}]}), 1),
                      speed(json!({"b": [{"y": 2, "x": 1}], "a": 1}), 2)],
                "big": [speed(json!(1e308), 1), speed(json!(1e308), 2)]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = temporal(
        &s,
        id,
        "options=aggregatedValues&aggrMethods=distinctCount&attrs=o",
    )
    .await;
    // Object members are unordered (RFC 8259): one distinct value.
    assert_eq!(body["o"]["distinctCount"][0][0], 1, "{body}");
    let body = temporal(
        &s,
        id,
        "options=aggregatedValues&aggrMethods=avg,stddev&attrs=big",
    )
    .await;
    // The sum overflows; the mean does not.
    assert_eq!(body["big"]["avg"][0][0], 1e308, "{body}");
    assert_eq!(body["big"]["stddev"][0][0], 0.0, "{body}");

    // An instance stays in its series: another datasetId is refused, the
    // same one is taken.
    let r = s
        .post(
            "/temporal/entities",
            &json!({"id": "urn:ngsi-ld:Sensor:ds", "type": "Sensor",
                "q": [{"type": "Property", "value": 1, "datasetId": "urn:ds:b", "observedAt": at(1)}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = temporal(&s, "urn:ngsi-ld:Sensor:ds", "").await;
    let one = |body: &Value| body["q"].get(0).unwrap_or(&body["q"]).clone();
    let instance = one(&body)["instanceId"].as_str().unwrap().to_string();
    let path = format!(
        "/temporal/entities/urn:ngsi-ld:Sensor:ds/attrs/q/{}",
        enc(&instance)
    );
    let with = |ds: &str| json!({"q": [{"type": "Property", "value": 2, "datasetId": ds}]});
    s.patch(&path, &with("urn:ds:a"))
        .await
        .problem(400, "BadRequestData");
    s.patch(&path, &with("urn:ds:b")).await.no_content();
    let body = one(&temporal(&s, "urn:ngsi-ld:Sensor:ds", "").await);
    assert_eq!(
        (&body["value"], &body["datasetId"]),
        (&json!(2), &json!("urn:ds:b")),
        "{body}"
    );
    // datasetId parameters are URIs or @none (Table 6.19.3.1-1).
    s.get("/temporal/entities/urn:ngsi-ld:Sensor:ds?datasetId=notauri")
        .await
        .problem(400, "BadRequestData");
}
