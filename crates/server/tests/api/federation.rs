//! Distributed reads (clauses 4.3.6, 5.7.1.4, 5.7.2.4): Retrieve Entity and
//! Query Entities forwarded to registered context sources. The sources are
//! real: a second Wuyang server, or an HTTP receiver that records what it
//! is asked and answers what the test says.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::federation_writes::{Received, source_answering};
use crate::support::{Server, ids_of, link, serve_document, silent_url};

pub(crate) fn terms() -> Value {
    json!({"@context": {
        "Vehicle": "https://ngsi-ld-test-suite/context#Vehicle",
        "brandName": "https://ngsi-ld-test-suite/context#brandName",
        "speed": "https://ngsi-ld-test-suite/context#speed",
        "isParked": "https://ngsi-ld-test-suite/context#isParked"
    }})
}

/// A registration of `endpoint` for Vehicles, with `extra` members.
pub(crate) fn registration(id: &str, endpoint: &str, extra: Value) -> Value {
    let mut r = json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}]}],
        "endpoint": endpoint
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

pub(crate) async fn register(s: &Server, ctx: &str, body: &Value) {
    let r = s
        .req(Method::POST, "/csourceRegistrations")
        .header("Link", &link(ctx))
        .json(body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Creates `entities` in one batch.
pub(crate) async fn hold(s: &Server, ctx: &str, entities: Vec<Value>) {
    let r = s
        .req(Method::POST, "/entityOperations/create")
        .header("Link", &link(ctx))
        .json(&Value::Array(entities))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// A Property of `value`.
pub(crate) fn prop(value: impl Into<Value>) -> Value {
    json!({"type": "Property", "value": value.into()})
}

pub(crate) async fn get(s: &Server, ctx: &str, path: &str) -> crate::support::Resp {
    s.req(Method::GET, path)
        .header("Link", &link(ctx))
        .send()
        .await
}

fn brand(v: &str, observed: &str) -> Value {
    json!({"type": "Property", "value": v, "observedAt": observed})
}

/// An HTTP context source that records every request and answers `status`
/// with `body` as JSON.
async fn recording_source(
    status: StatusCode,
    body: String,
) -> (String, mpsc::UnboundedReceiver<Received>) {
    source_answering(status, body).await
}

/// POST /temporal/entityOperations/query?`params` with `body`, with the
/// test context as Link header.
async fn post_temporal_query(
    s: &Server,
    ctx: &str,
    params: &str,
    body: &Value,
) -> crate::support::Resp {
    s.req(
        Method::POST,
        &format!("/temporal/entityOperations/query?{params}"),
    )
    .header("Link", &link(ctx))
    .json(body)
    .send()
    .await
}

#[tokio::test]
async fn queries_and_retrievals_merge_what_a_registered_broker_holds() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    // Held here: A with an older brand; B only here.
    hold(
        &here,
        &ctx,
        vec![
            json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle",
        "brandName": brand("BMW", "2024-01-01T00:00:00Z")}),
            json!({"id": "urn:ngsi-ld:Vehicle:B", "type": "Vehicle",
        "brandName": brand("Volvo", "2024-01-01T00:00:00Z")}),
        ],
    )
    .await;
    // Held there: A with a newer brand and a speed; C only there.
    hold(
        &there,
        &ctx,
        vec![
            json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle",
        "brandName": brand("Mercedes", "2024-06-01T00:00:00Z"),
        "speed": prop(80)}),
            json!({"id": "urn:ngsi-ld:Vehicle:C", "type": "Vehicle",
        "speed": prop(30)}),
        ],
    )
    .await;
    // Before any registration only the local entities are answered.
    let r = get(&here, &ctx, "/entities?type=Vehicle").await;
    assert_eq!(ids_of(&r.body).len(), 2);
    register(
        &here,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:there",
            &there.origin,
            json!({}),
        ),
    )
    .await;

    let r = get(&here, &ctx, "/entities?type=Vehicle&count=true").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(&r.body),
        [
            "urn:ngsi-ld:Vehicle:A",
            "urn:ngsi-ld:Vehicle:B",
            "urn:ngsi-ld:Vehicle:C"
        ],
        "merged by id, in id order"
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("3"));
    assert!(r.header("NGSILD-Warning").is_none());
    let a = &r.body[0];
    assert_eq!(
        a["brandName"]["value"], "Mercedes",
        "the later observedAt wins: {a}"
    );
    assert_eq!(a["speed"]["value"], 80);
    // Paging cuts the merged list; representations apply to it.
    let r = get(
        &here,
        &ctx,
        "/entities?type=Vehicle&limit=1&offset=2&options=keyValues",
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:ngsi-ld:Vehicle:C", "type": "Vehicle", "speed": 30}])
    );
    // The query applies to each source's entities as a whole.
    let r = get(&here, &ctx, "/entities?type=Vehicle&q=speed>50&count=true").await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:A"]);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("1"));
    // Filtered at the source on an attribute it then projected away; what
    // this broker holds of A joins it although it did not match here.
    let r = get(
        &here,
        &ctx,
        "/entities?type=Vehicle&q=speed>50&attrs=brandName&options=keyValues",
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle", "brandName": "Mercedes"}])
    );
    let r = get(
        &here,
        &ctx,
        "/entities?type=Vehicle&q=brandName==%22Volvo%22&options=keyValues",
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:ngsi-ld:Vehicle:B", "type": "Vehicle", "brandName": "Volvo"}])
    );
    let r = get(&here, &ctx, "/entities?type=Vehicle&attrs=speed").await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:C"]
    );
    assert!(r.body[0].get("brandName").is_none(), "{}", r.body[0]);
    // POST /entityOperations/query is forwarded as itself (queryBatch), as
    // JSON with the Link header or as JSON-LD with the @context inline.
    let query = json!({"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed>10"});
    let r = here
        .req(Method::POST, "/entityOperations/query?count=true")
        .header("Link", &link(&ctx))
        .json(&query)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:C"]
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("2"));
    let mut ld = query.clone();
    ld["@context"] = json!([ctx]);
    let r = here
        .req(Method::POST, "/entityOperations/query")
        .ld(&ld)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:C"]
    );
    // local=true keeps to this broker.
    let r = get(&here, &ctx, "/entities?type=Vehicle&local=true").await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:B"]
    );

    let r = here
        .get("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:there")
        .await;
    assert_eq!(r.body["status"], "ok", "{}", r.body);
    assert_eq!(r.body["timesFailed"], 0);
    assert!(r.body["timesSent"].as_u64().unwrap() >= 7 && r.body["lastSuccess"].is_string());
    // Retrieve Entity: an entity only the source holds, and a merged one.
    let r = get(&here, &ctx, "/entities/urn:ngsi-ld:Vehicle:C").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["speed"]["value"], 30);
    let r = get(
        &here,
        &ctx,
        "/entities/urn:ngsi-ld:Vehicle:A?options=keyValues",
    )
    .await;
    assert_eq!(r.body["brandName"], "Mercedes");
    assert_eq!(r.body["speed"], 80);
    let r = get(&here, &ctx, "/entities/urn:ngsi-ld:Vehicle:C?local=true").await;
    r.problem(404, "ResourceNotFound");
    get(&here, &ctx, "/entities/urn:ngsi-ld:Vehicle:Z")
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn an_auxiliary_source_only_adds_what_nothing_else_has() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    hold(
        &here,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle",
        "brandName": brand("BMW", "2024-01-01T00:00:00Z")})],
    )
    .await;
    hold(
        &there,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle",
        "brandName": brand("Mercedes", "2024-06-01T00:00:00Z"),
        "isParked": {"type": "Relationship", "object": "urn:ngsi-ld:Parking:P1"}})],
    )
    .await;
    register(
        &here,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:aux",
            &there.origin,
            json!({"mode": "auxiliary", "operations": ["retrieveOps"]}),
        ),
    )
    .await;
    for path in [
        "/entities/urn:ngsi-ld:Vehicle:A?options=keyValues",
        "/entities?type=Vehicle&options=keyValues",
    ] {
        let r = get(&here, &ctx, path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let a = if r.body.is_array() {
            r.body[0].clone()
        } else {
            r.body.clone()
        };
        assert_eq!(
            a["brandName"], "BMW",
            "held here, so not taken from an auxiliary source: {a}"
        );
        assert_eq!(a["isParked"], "urn:ngsi-ld:Parking:P1");
    }
}

#[tokio::test]
async fn forwarded_requests_carry_the_selection_via_tenant_and_context_source_info() {
    let s = Server::start().await;
    let ctx = serve_document(terms()).await;
    let answer = json!([{"id": "urn:ngsi-ld:Vehicle:R", "type": "Vehicle", "speed": prop(7)}]);
    let (src, mut asked) = recording_source(StatusCode::OK, answer.to_string()).await;
    register(
        &s,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:rec",
            // The API sits under the endpoint's path; its query string is
            // kept, its fragment dropped.
            &format!("{src}/broker1/?token=abc#frag"),
            json!({
                "tenant": "city",
                "department": "transport",
                "operations": ["queryEntity"],
                "contextSourceInfo": [{"key": "X-Auth-Token", "value": "secret"},
                                      {"key": "X-Request-Id", "value": "urn:ngsi-ld:request"}]
            }),
        ),
    )
    .await;
    // A registration that offers no reads is never asked.
    let (silent_src, mut never) = recording_source(StatusCode::OK, "[]".into()).await;
    register(
        &s,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:upd",
            &silent_src,
            json!({"operations": ["updateOps"]}),
        ),
    )
    .await;

    let r = s
        .req(
            Method::GET,
            "/entities?type=Vehicle&attrs=speed&limit=5&options=keyValues&count=true",
        )
        .header("Link", &link(&ctx))
        .header("X-Request-Id", "r-42")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!([{"id": "urn:ngsi-ld:Vehicle:R", "type": "Vehicle", "speed": 7}])
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("1"));
    let got = asked.recv().await.unwrap();
    assert_eq!(got.uri.path(), "/broker1/ngsi-ld/v1/entities");
    assert_eq!(
        got.uri.query(),
        Some("token=abc&type=Vehicle&attrs=speed"),
        "the endpoint's query, then the selection as the client wrote it, nothing else"
    );
    let h = |n: &str| {
        got.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(h("via"), "1.1 wuyang-test");
    assert_eq!(h("ngsild-tenant"), "city");
    assert_eq!(h("x-auth-token"), "secret");
    assert_eq!(h("x-request-id"), "r-42");
    assert!(h("link").contains(&ctx), "{}", h("link"));
    assert_eq!(h("accept"), "application/json");
    assert!(never.try_recv().is_err());

    // Neither is a POST query (queryBatch) nor Retrieve Entity offered by
    // the registration: not asked.
    let r = s
        .req(Method::POST, "/entityOperations/query")
        .header("Link", &link(&ctx))
        .json(&json!({"type": "Query", "entities": [{"type": "Vehicle"}]}))
        .send()
        .await;
    assert_eq!(r.body, json!([]));
    get(&s, &ctx, "/entities/urn:ngsi-ld:Vehicle:R")
        .await
        .problem(404, "ResourceNotFound");
    // A request that has passed here before (its Via names this broker) is
    // answered locally: no loop.
    let r = s
        .req(Method::GET, "/entities?type=Vehicle")
        .header("Link", &link(&ctx))
        .header("Via", "1.1 other, 1.1 wuyang-test")
        .send()
        .await;
    assert_eq!(r.body, json!([]));
    // Another hop is appended to the Via it came with.
    get(&s, &ctx, "/entities?type=Vehicle").await;
    let r = s
        .req(Method::GET, "/entities?type=Vehicle")
        .header("Link", &link(&ctx))
        .header("Via", "1.1 other")
        .send()
        .await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:R"]);
    asked.recv().await.unwrap();
    let got = asked.recv().await.unwrap();
    assert_eq!(
        got.headers.get("via").unwrap(),
        "1.1 other, 1.1 wuyang-test"
    );
    assert!(asked.try_recv().is_err() && never.try_recv().is_err());
    // A context source filter picks registrations by their properties, in
    // a query string or a Query document.
    let r = get(
        &s,
        &ctx,
        "/entities?type=Vehicle&csf=department==%22water%22",
    )
    .await;
    assert_eq!(r.body, json!([]));
    let r = get(
        &s,
        &ctx,
        "/entities?type=Vehicle&csf=department==%22transport%22",
    )
    .await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:R"]);
    let got = asked.recv().await.unwrap();
    assert_eq!(
        got.uri.query(),
        Some("token=abc&type=Vehicle"),
        "csf is this broker's, not passed on"
    );
    assert!(asked.try_recv().is_err());
    // splitEntities=true: the source is asked for its parts of the
    // selected entities, the filters stay here.
    let r = get(
        &s,
        &ctx,
        "/entities?type=Vehicle&attrs=speed&q=speed%3E5&georel=near;maxDistance==10\
         &geometry=Point&coordinates=[1,2]&splitEntities=true&limit=3",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = asked.recv().await.unwrap();
    assert_eq!(got.uri.query(), Some("token=abc&type=Vehicle&limit=100"));
    // How the words of q are read goes along with q.
    get(
        &s,
        &ctx,
        "/entities?type=Vehicle&q=speed==fast&expandValues=speed&jsonKeys=speed",
    )
    .await;
    let got = asked.recv().await.unwrap();
    assert_eq!(
        got.uri.query(),
        Some("token=abc&type=Vehicle&q=speed==fast&expandValues=speed&jsonKeys=speed")
    );
}

#[tokio::test]
async fn a_failing_source_leaves_the_rest_of_the_answer_and_a_warning() {
    let s = Server::start().await;
    let ctx = serve_document(terms()).await;
    hold(
        &s,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:L", "type": "Vehicle", "speed": prop(1)})],
    )
    .await;
    let (failing, _a) = recording_source(StatusCode::INTERNAL_SERVER_ERROR, "{}".into()).await;
    let (garbage, _b) = recording_source(StatusCode::OK, "[{\"no\": \"id\"}]".into()).await;
    let (_listener, silent) = silent_url();
    let silent = silent.trim_end_matches("/context.jsonld").to_string();
    register(
        &s,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:f",
            &failing,
            json!({}),
        ),
    )
    .await;
    register(
        &s,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:g",
            &garbage,
            json!({}),
        ),
    )
    .await;
    register(
        &s,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:s",
            &silent,
            json!({"management": {"timeout": 300, "cooldown": 60000}}),
        ),
    )
    .await;
    let started = Instant::now();
    let r = get(&s, &ctx, "/entities?type=Vehicle").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the registration's timeout"
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:L"]);
    let mut codes: Vec<&str> = r
        .headers
        .get_all("NGSILD-Warning")
        .iter()
        .map(|v| &v.to_str().unwrap()[..3])
        .collect();
    codes.sort();
    assert_eq!(codes, ["111", "199", "299"], "{:?}", r.headers);
    let w = r.header("NGSILD-Warning").unwrap();
    assert!(w.contains("urn:ngsi-ld:ContextSourceRegistration:"), "{w}");
    // A source that timed out is not asked again during its cooldown: the
    // timeout is answered at once.
    let started = Instant::now();
    let r = get(&s, &ctx, "/entities?type=Vehicle").await;
    assert!(started.elapsed() < Duration::from_millis(250));
    let cooling: Vec<&str> = r
        .headers
        .get_all("NGSILD-Warning")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|w| w.contains("cooling down"))
        .collect();
    assert_eq!(cooling.len(), 1, "{:?}", r.headers);
    assert!(cooling[0].starts_with("199 "));
    let r = s
        .get("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:s")
        .await;
    assert_eq!(r.body["timesSent"], 1, "not asked during the cooldown");
    // The registration tells how its forwarding went (Table 5.2.9-2).
    let r = s
        .get("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:f")
        .await;
    assert_eq!(r.body["status"], "failed", "{}", r.body);
    assert_eq!(
        (r.body["timesSent"].as_u64(), r.body["timesFailed"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(r.body["lastFailure"].is_string() && r.body.get("lastSuccess").is_none());
}

#[tokio::test]
async fn two_brokers_registered_with_each_other_answer_once() {
    let (a, b) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    hold(
        &a,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "speed": prop(1)})],
    )
    .await;
    hold(
        &b,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle", "speed": prop(2)})],
    )
    .await;
    register(
        &a,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:b",
            &b.origin,
            json!({}),
        ),
    )
    .await;
    register(
        &b,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:a",
            &a.origin,
            json!({}),
        ),
    )
    .await;
    for s in [&a, &b] {
        let r = get(s, &ctx, "/entities?type=Vehicle").await;
        assert_eq!(
            ids_of(&r.body),
            ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2"]
        );
        assert!(r.header("NGSILD-Warning").is_none(), "{:?}", r.headers);
    }
}

#[tokio::test]
async fn types_and_attributes_include_what_registered_sources_hold() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    hold(
        &here,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:H", "type": "Vehicle",
        "brandName": prop("BMW")})],
    )
    .await;
    hold(
        &there,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:T", "type": "Vehicle",
        "speed": prop(5),
        "isParked": {"type": "Relationship", "object": "urn:ngsi-ld:Parking:P"}})],
    )
    .await;
    // Held there but not registered: never taken.
    hold(
        &there,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Bus:B", "type": "Bus",
        "route": prop("B1")})],
    )
    .await;
    register(&here, &ctx, &registration("urn:ngsi-ld:ContextSourceRegistration:d", &there.origin,
        json!({"information": [{"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"], "relationshipNames": ["isParked"]}]}))).await;

    let r = get(&here, &ctx, "/types").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["typeList"], json!(["Vehicle"]));
    let r = get(&here, &ctx, "/types?details=true").await;
    assert_eq!(
        r.body[0]["attributeNames"],
        json!(["brandName", "isParked", "speed"]),
        "{}",
        r.body
    );
    let r = get(&here, &ctx, "/types/Vehicle").await;
    assert_eq!(r.body["entityCount"], 2, "{}", r.body);
    let kinds: Vec<(String, Value)> = r.body["attributeDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attributeName"].as_str().unwrap().to_string(),
                a["attributeTypes"].clone(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("isParked".into(), json!(["Relationship"]))),
        "{kinds:?}"
    );
    get(&here, &ctx, "/types/Bus")
        .await
        .problem(404, "ResourceNotFound");
    let r = get(&here, &ctx, "/attributes").await;
    assert_eq!(
        r.body["attributeList"],
        json!(["brandName", "isParked", "speed"])
    );
    let r = get(&here, &ctx, "/attributes?details=true").await;
    let speed = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attributeName"] == "speed")
        .unwrap();
    assert_eq!(speed["typeNames"], json!(["Vehicle"]));
    let r = get(&here, &ctx, "/attributes/speed").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            r.body["attributeCount"].clone(),
            r.body["attributeTypes"].clone()
        ),
        (json!(1), json!(["Property"]))
    );
    get(&here, &ctx, "/attributes/route")
        .await
        .problem(404, "ResourceNotFound");
    // local=true: this broker's own.
    let r = get(&here, &ctx, "/types/Vehicle?local=true").await;
    assert_eq!(r.body["entityCount"], 1);
    get(&here, &ctx, "/attributes/speed?local=true")
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn long_answers_are_paged_through_and_bounds_hold() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    hold(
        &here,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:000", "type": "Vehicle",
        "speed": prop(1)})],
    )
    .await;
    let many: Vec<Value> = (1..=30)
        .map(|i| {
            json!({"id": format!("urn:ngsi-ld:Vehicle:{i:03}"), "type": "Vehicle",
            "speed": prop(i), "brandName": prop("B")})
        })
        .collect();
    let r = there
        .req(Method::POST, "/entityOperations/create")
        .header("Link", &link(&ctx))
        .json(&Value::Array(many))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A timeout far beyond any bound is held to one (no panic).
    register(
        &here,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:p",
            &there.origin,
            json!({"management": {"timeout": 1e30}}),
        ),
    )
    .await;
    // The source answers 20 a page: its next links are followed (one holds
    // a comma in attrs), for GET and for POST.
    for path in [
        "/entities?type=Vehicle&limit=100&count=true",
        "/entities?type=Vehicle&attrs=speed,brandName&limit=100&count=true",
    ] {
        let r = get(&here, &ctx, path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(ids_of(&r.body).len(), 31, "{path}: {:?}", r.headers);
        assert_eq!(r.header("NGSILD-Results-Count"), Some("31"), "{path}");
        assert!(
            r.header("NGSILD-Warning").is_none(),
            "{path}: {:?}",
            r.headers
        );
    }
    let r = here
        .req(Method::POST, "/entityOperations/query?limit=100&count=true")
        .header("Link", &link(&ctx))
        .json(&json!({"type": "Query", "entities": [{"type": "Vehicle"}]}))
        .send()
        .await;
    assert_eq!(ids_of(&r.body).len(), 31, "{:?} {}", r.headers, r.text);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("31"));
    // A page in the middle of the merged list.
    let r = get(
        &here,
        &ctx,
        "/entities?type=Vehicle&offset=25&limit=3&options=keyValues&attrs=speed",
    )
    .await;
    assert_eq!(
        ids_of(&r.body),
        [
            "urn:ngsi-ld:Vehicle:025",
            "urn:ngsi-ld:Vehicle:026",
            "urn:ngsi-ld:Vehicle:027"
        ]
    );
    // type=* implies local=true: nothing is forwarded.
    let r = get(&here, &ctx, "/entities?type=*").await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:000"]);
}

#[tokio::test]
async fn where_two_places_disagree_the_merged_entity_still_answers_the_query() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    // Here the later observation, there an older one.
    hold(
        &here,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle",
        "brandName": brand("BMW", "2024-06-01T00:00:00Z"),
        "speed": prop(10)})],
    )
    .await;
    hold(
        &there,
        &ctx,
        vec![
            json!({"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle",
        "brandName": brand("Mercedes", "2024-01-01T00:00:00Z"),
        "speed": prop(80)}),
            json!({"id": "urn:ngsi-ld:Vehicle:T", "type": "Vehicle",
        "speed": prop(5)}),
        ],
    )
    .await;
    register(
        &here,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:x",
            &there.origin,
            json!({}),
        ),
    )
    .await;
    let r = get(
        &here,
        &ctx,
        "/entities/urn:ngsi-ld:Vehicle:A?options=keyValues",
    )
    .await;
    assert_eq!(
        r.body["brandName"], "BMW",
        "the later observedAt, held here: {}",
        r.body
    );
    // No observedAt on either speed, and no way to tell: the one held here
    // stays, and A no longer satisfies a query the source matched it by.
    let r = get(&here, &ctx, "/entities?type=Vehicle&q=speed>50&count=true").await;
    assert_eq!(r.body, json!([]), "{}", r.text);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("0"));
    // The source's system attributes are asked for and shown.
    let r = get(
        &here,
        &ctx,
        "/entities/urn:ngsi-ld:Vehicle:T?options=sysAttrs",
    )
    .await;
    let created = r.body["createdAt"].as_str().unwrap_or_default();
    assert!(
        created.starts_with("20") && !created.starts_with("1970"),
        "{}",
        r.body
    );
    assert!(
        r.body["speed"]["modifiedAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn many_registrations_are_all_asked_a_few_at_a_time() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    hold(
        &there,
        &ctx,
        vec![json!({"id": "urn:ngsi-ld:Vehicle:M", "type": "Vehicle", "speed": prop(3)})],
    )
    .await;
    for i in 0..20 {
        let id = format!("urn:ngsi-ld:ContextSourceRegistration:m{i:02}");
        register(&here, &ctx, &registration(&id, &there.origin, json!({}))).await;
    }
    let r = get(&here, &ctx, "/entities?type=Vehicle&count=true").await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:M"]);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("1"));
    assert!(r.header("NGSILD-Warning").is_none(), "{:?}", r.headers);
    for i in [0, 19] {
        let r = here
            .get(&format!(
                "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:m{i:02}"
            ))
            .await;
        assert_eq!(
            (r.body["timesSent"].clone(), r.body["status"].clone()),
            (json!(1), json!("ok"))
        );
    }
}

/// Creates a temporal entity at `s`.
async fn hold_history(s: &Server, ctx: &str, entity: Value) {
    let r = s
        .req(Method::POST, "/temporal/entities")
        .header("Link", &link(ctx))
        .json(&entity)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

fn observed(value: impl Into<Value>, at: &str) -> Value {
    json!({"type": "Property", "value": value.into(), "observedAt": at})
}

/// The values of an attribute of a temporal entity in the temporalValues
/// form, without their times.
fn temporal_values(entity: &Value, attr: &str) -> Vec<Value> {
    entity[attr]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|pair| pair[0].clone())
        .collect()
}

/// Registers `endpoint` at `s` for the temporal operation `op`.
async fn register_history(s: &Server, ctx: &str, id: &str, endpoint: &str, op: &str) {
    register(
        s,
        ctx,
        &registration(id, endpoint, json!({"operations": [op]})),
    )
    .await;
}

#[tokio::test]
async fn temporal_retrievals_merge_the_instances_of_registered_sources() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    let id = "urn:ngsi-ld:Vehicle:T";
    hold_history(
        &here,
        &ctx,
        json!({"id": id, "type": "Vehicle",
               "speed": [observed(1, "2024-01-01T10:00:00Z")]}),
    )
    .await;
    // There: the same instant again (recorded later), two later ones, an
    // attribute only there, and an entity only there.
    hold_history(
        &there,
        &ctx,
        json!({"id": id, "type": "Vehicle",
               "speed": [observed(100, "2024-01-01T10:00:00Z"),
                         observed(2, "2024-01-01T11:00:00Z"),
                         observed(3, "2024-01-01T12:00:00Z")],
               "brandName": [observed("Volvo", "2024-01-01T11:30:00Z")]}),
    )
    .await;
    hold_history(
        &there,
        &ctx,
        json!({"id": "urn:ngsi-ld:Vehicle:U", "type": "Vehicle",
               "speed": [observed(7, "2024-01-01T09:00:00Z")]}),
    )
    .await;
    let path = format!("/temporal/entities/{id}");
    let values = |r: &crate::support::Resp, attr: &str| temporal_values(&r.body, attr);
    // A registration without operations offers federationOps, which holds
    // no temporal operation: it is not asked.
    register(
        &here,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:entities-only",
            &there.origin,
            json!({}),
        ),
    )
    .await;
    let r = get(&here, &ctx, &format!("{path}?options=temporalValues")).await;
    assert_eq!(values(&r, "speed"), [json!(1)], "{}", r.text);
    register_history(
        &here,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:history",
        &there.origin,
        "retrieveTemporal",
    )
    .await;
    let r = get(&here, &ctx, &format!("{path}?options=temporalValues")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // One instance per instant: the one recorded later wins.
    assert_eq!(values(&r, "speed"), [json!(100), json!(2), json!(3)]);
    assert_eq!(values(&r, "brandName"), [json!("Volvo")]);
    assert!(r.header("ngsild-warning").is_none());
    // Aggregation runs over the merged series: 100, 2 and 3.
    let r = get(
        &here,
        &ctx,
        &format!("{path}?options=aggregatedValues&aggrMethods=avg,totalCount&attrs=speed"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["speed"]["avg"][0][0], json!(35.0), "{}", r.text);
    assert_eq!(r.body["speed"]["totalCount"][0][0], json!(3), "{}", r.text);
    // lastN and the time range apply to the merged series.
    let r = get(
        &here,
        &ctx,
        &format!("{path}?options=temporalValues&lastN=2"),
    )
    .await;
    assert_eq!(values(&r, "speed"), [json!(2), json!(3)]);
    let r = get(
        &here,
        &ctx,
        &format!("{path}?timerel=before&timeAt=2024-01-01T11:00:00Z&attrs=speed"),
    )
    .await;
    let speeds = r.body["speed"].as_array().cloned().unwrap_or_default();
    assert_eq!(speeds.len(), 1, "{}", r.text);
    assert_eq!(speeds[0]["value"], 100);
    assert!(r.body.get("brandName").is_none());
    // The normalized form keeps the source's instanceIds.
    let r = get(&here, &ctx, &path).await;
    let ids: Vec<&str> = r.body["speed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["instanceId"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{}", r.text);
    // local=true keeps the read here.
    let r = get(
        &here,
        &ctx,
        &format!("{path}?options=temporalValues&local=true"),
    )
    .await;
    assert_eq!(values(&r, "speed"), [json!(1)]);
    // An entity only there is found; one nowhere is not.
    let r = get(&here, &ctx, "/temporal/entities/urn:ngsi-ld:Vehicle:U").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["speed"].as_array().map(Vec::len), Some(1));
    get(&here, &ctx, "/temporal/entities/urn:ngsi-ld:Vehicle:none")
        .await
        .problem(404, "ResourceNotFound");
    // A failing source leaves the rest of the answer and a warning; what a
    // source is asked holds the time range but no representation.
    let (failing, mut asked) =
        recording_source(StatusCode::INTERNAL_SERVER_ERROR, "{}".into()).await;
    register_history(
        &here,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:failing",
        &failing,
        "retrieveTemporal",
    )
    .await;
    let r = get(
        &here,
        &ctx,
        &format!("{path}?options=temporalValues&lastN=2&timerel=after&timeAt=2024-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(values(&r, "speed"), [json!(2), json!(3)]);
    assert!(r.header("ngsild-warning").is_some(), "{:?}", r.headers);
    let request = asked.recv().await.unwrap();
    assert_eq!(
        request.uri.path(),
        format!("/ngsi-ld/v1/temporal/entities/{id}")
    );
    let query = request.uri.query().unwrap_or_default();
    for wanted in ["lastN=2", "timerel=after", "options=sysAttrs"] {
        assert!(query.contains(wanted), "{query}");
    }
    assert!(!query.contains("temporalValues"), "{query}");
}

#[tokio::test]
async fn temporal_queries_page_through_what_here_and_the_sources_hold() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    let vehicle = |id: &str, speeds: &[(i64, &str)]| {
        json!({"id": format!("urn:ngsi-ld:Vehicle:{id}"), "type": "Vehicle",
               "speed": speeds.iter().map(|(v, t)| observed(*v, t)).collect::<Vec<_>>()})
    };
    hold_history(&here, &ctx, vehicle("A", &[(1, "2024-01-01T10:00:00Z")])).await;
    hold_history(&here, &ctx, vehicle("C", &[(5, "2024-01-01T10:00:00Z")])).await;
    hold_history(&there, &ctx, vehicle("A", &[(2, "2024-01-01T11:00:00Z")])).await;
    hold_history(
        &there,
        &ctx,
        vehicle(
            "B",
            &[(7, "2024-01-01T09:00:00Z"), (8, "2024-01-01T12:00:00Z")],
        ),
    )
    .await;
    register_history(
        &here,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:history",
        &there.origin,
        "queryTemporal",
    )
    .await;
    let base = "/temporal/entities?type=Vehicle&timerel=after&timeAt=2024-01-01T00:00:00Z&options=temporalValues";
    let speeds = |r: &crate::support::Resp| -> Vec<Vec<Value>> {
        r.body
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", r.text))
            .iter()
            .map(|e| temporal_values(e, "speed"))
            .collect()
    };
    let r = get(&here, &ctx, &format!("{base}&count=true")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(&r.body),
        [
            "urn:ngsi-ld:Vehicle:A",
            "urn:ngsi-ld:Vehicle:B",
            "urn:ngsi-ld:Vehicle:C"
        ]
    );
    assert_eq!(r.header("ngsild-results-count"), Some("3"));
    assert_eq!(
        speeds(&r),
        [
            vec![json!(1), json!(2)],
            vec![json!(7), json!(8)],
            vec![json!(5)]
        ]
    );
    // Aggregation runs over each entity's merged series.
    let sums = |r: &crate::support::Resp| -> Vec<Value> {
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", r.text))
            .iter()
            .map(|e| e["speed"]["sum"][0][0].clone())
            .collect()
    };
    let sum = base.replace("temporalValues", "aggregatedValues&aggrMethods=sum");
    let r = get(&here, &ctx, &sum).await;
    assert_eq!(sums(&r), [json!(3.0), json!(15.0), json!(5.0)]);
    // Pages partition the union.
    let r = get(&here, &ctx, &format!("{base}&limit=2")).await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:B"]
    );
    let r = get(&here, &ctx, &format!("{base}&limit=2&offset=2")).await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:C"]);
    // lastN applies to the merged series, and never cuts what is
    // aggregated.
    let r = get(&here, &ctx, &format!("{base}&lastN=1")).await;
    assert_eq!(speeds(&r), [vec![json!(2)], vec![json!(8)], vec![json!(5)]]);
    let r = get(&here, &ctx, &format!("{sum}&lastN=1")).await;
    assert_eq!(sums(&r), [json!(3.0), json!(15.0), json!(5.0)]);
    // The POST form goes to the source as a POST.
    let query = json!({"type": "Query", "entities": [{"type": "Vehicle"}],
        "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T10:30:00Z", "lastN": 1},
        "q": "speed>1"});
    let r = post_temporal_query(&here, &ctx, "options=temporalValues", &query).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:B"]
    );
    assert_eq!(speeds(&r), [vec![json!(2)], vec![json!(8)]]);
    // q goes to the source, which tests its own instances.
    let r = get(&here, &ctx, &format!("{base}&q=speed%3E6")).await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:B"], "{}", r.text);
    // local=true keeps the query here.
    let r = get(&here, &ctx, &format!("{base}&local=true")).await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:C"]
    );
    // What a source is asked: the selection and the range, never paging
    // or a representation.
    let (recording, mut asked) = recording_source(StatusCode::OK, "[]".into()).await;
    register_history(
        &here,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:recording",
        &recording,
        "queryTemporal",
    )
    .await;
    let r = get(&here, &ctx, &format!("{base}&limit=1&count=true")).await;
    assert_eq!(r.header("ngsild-results-count"), Some("3"), "{}", r.text);
    let request = asked.recv().await.unwrap();
    assert_eq!(request.uri.path(), "/ngsi-ld/v1/temporal/entities");
    let query = request.uri.query().unwrap_or_default();
    for wanted in ["type=Vehicle", "timerel=after", "options=sysAttrs"] {
        assert!(query.contains(wanted), "{query}");
    }
    for unwanted in ["limit", "count", "temporalValues"] {
        assert!(!query.contains(unwanted), "{query}");
    }
    // A POST query goes as a Query document with its selection and time
    // range only; an aggregation, a projection or lastN stays here.
    let body = json!({"type": "Query", "entities": [{"type": "Vehicle"}],
        "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T00:00:00Z", "lastN": 1,
                      "aggrMethods": ["sum"]},
        "aggrParams": {"aggrMethods": ["max"]}, "pick": "speed", "q": "speed>1"});
    let r = post_temporal_query(&here, &ctx, "limit=1&count=true", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let request = loop {
        let request = asked.recv().await.unwrap();
        if request.method == Method::POST {
            break request;
        }
    };
    assert_eq!(
        request.uri.path(),
        "/ngsi-ld/v1/temporal/entityOperations/query"
    );
    assert_eq!(request.uri.query(), Some("options=sysAttrs"));
    assert_eq!(
        request.body,
        json!({"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed>1",
               "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T00:00:00Z"}})
    );
}

/// splitEntities=true (Table 6.4.3.2-1): the parts of an entity held here
/// and at a source are joined before `q`, `attrs` and the count apply; with
/// false each place filters what it holds.
#[tokio::test]
async fn split_entities_are_joined_before_the_filters_apply() {
    let (here, there) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    let vehicle = |id: &str, members: Value| {
        let mut v = json!({"id": format!("urn:ngsi-ld:Vehicle:{id}"), "type": "Vehicle"});
        v.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        v
    };
    hold(
        &here,
        &ctx,
        vec![
            vehicle("A", json!({"brandName": prop("BMW")})),
            vehicle("C", json!({"brandName": prop("BMW"), "speed": prop(100)})),
            vehicle("D", json!({"brandName": prop("BMW"), "speed": prop(20)})),
        ],
    )
    .await;
    hold(
        &there,
        &ctx,
        vec![
            vehicle("A", json!({"speed": prop(80)})),
            vehicle("B", json!({"brandName": prop("Audi"), "speed": prop(90)})),
        ],
    )
    .await;
    register(
        &here,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:split",
            &there.origin,
            json!({}),
        ),
    )
    .await;
    let q = "/entities?type=Vehicle&q=brandName==%22BMW%22;speed%3E50&count=true";
    // Each place alone: only C matches; A's speed is at the source.
    let r = get(&here, &ctx, &format!("{q}&splitEntities=false")).await;
    assert_eq!(ids_of(&r.body), ["urn:ngsi-ld:Vehicle:C"], "{}", r.text);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("1"));
    // Joined: A has both parts.
    let r = get(&here, &ctx, &format!("{q}&splitEntities=true")).await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:C"],
        "{}",
        r.text
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("2"));
    assert_eq!(r.body[0]["speed"]["value"], 80, "{}", r.text);
    // attrs projects the joined entity; q still tests what it leaves out.
    let r = get(
        &here,
        &ctx,
        &format!("{q}&splitEntities=true&attrs=speed&limit=1&options=keyValues"),
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:ngsi-ld:Vehicle:A", "type": "Vehicle", "speed": 80}]),
        "{}",
        r.text
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("2"));
    // attrs as a filter: B has brandName only at the source.
    let r = get(
        &here,
        &ctx,
        "/entities?type=Vehicle&attrs=brandName&splitEntities=true&q=speed%3E85",
    )
    .await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:B", "urn:ngsi-ld:Vehicle:C"],
        "{}",
        r.text
    );
    // The Query of a POST query has the member (Table 5.2.23-1); a
    // projection applies to the joined entities, not to the parts.
    let r = here
        .req(Method::POST, "/entityOperations/query")
        .header("Link", &link(&ctx))
        .json(&json!({"type": "Query", "entities": [{"type": "Vehicle"}],
                      "q": "brandName==\"BMW\";speed>50", "splitEntities": true,
                      "pick": ["id", "type", "brandName"], "lang": "en"}))
        .send()
        .await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:C"],
        "{}",
        r.text
    );
    // An EntityMap lists what each place matched alone: not made here.
    get(
        &here,
        &ctx,
        &format!("{q}&splitEntities=true&entityMap=true"),
    )
    .await
    .problem(422, "OperationNotSupported");
}
