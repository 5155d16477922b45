//! Distributed writes of one entity (clauses 4.3.6.2, 4.3.6.3, 5.6.x.4):
//! what a write names goes to the registrations that hold it, exclusive
//! first, then redirect, then here, then inclusive. The sources are real:
//! a second Wuyang server, or an HTTP receiver that records each request
//! and answers the status the test says.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::federation::{get, prop, register, registration, terms};
use crate::support::{Server, link, serve_document};

const V1: &str = "urn:ngsi-ld:Vehicle:w1";

/// A request a source received.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) method: HttpMethod,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

/// An HTTP source that records every request and answers `status` with no
/// body (as the ETSI mock does).
async fn source(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Received>) {
    source_answering(status, String::new()).await
}

/// The same, answering `answer` (JSON when not empty).
pub(crate) async fn source_answering(
    status: StatusCode,
    answer: String,
) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().fallback(
        move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (tx, answer) = (tx.clone(), answer.clone());
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send(Received {
                    method,
                    uri,
                    headers,
                    body,
                });
                let kind = if answer.is_empty() {
                    "text/plain"
                } else {
                    "application/json"
                };
                (status, [("content-type", kind)], answer)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

/// Everything a source has received so far.
fn drain(rx: &mut mpsc::UnboundedReceiver<Received>) -> Vec<Received> {
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        out.push(r);
    }
    out
}

/// Registers a registration of entity `V1` (type Vehicle) at `endpoint`.
async fn register_v1(s: &Server, ctx: &str, id: &str, endpoint: &str, extra: Value) {
    register(s, ctx, &reg_v1(id, endpoint, extra)).await;
}

/// A registration of entity `V1` (type Vehicle) at `endpoint`.
fn reg_v1(id: &str, endpoint: &str, extra: Value) -> Value {
    let mut r = registration(id, endpoint, extra);
    if r["information"][0]["entities"][0].get("id").is_none() {
        r["information"][0]["entities"][0]["id"] = json!(V1);
    }
    r
}

async fn send(
    s: &Server,
    ctx: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> crate::support::Resp {
    let mut req = s.req(method, path).header("Link", &link(ctx));
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await
}

fn vehicle() -> Value {
    json!({
        "id": V1,
        "type": "Vehicle",
        "speed": prop(50),
        "brandName": prop("Mercedes")
    })
}

#[tokio::test]
async fn exclusive_attributes_are_written_at_their_source_only() {
    let (hub, dept) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    let mut reg = reg_v1(
        "urn:ngsi-ld:ContextSourceRegistration:x",
        &dept.origin,
        json!({"mode": "exclusive", "operations": ["redirectionOps"]}),
    );
    reg["information"][0]["propertyNames"] = json!(["speed"]);
    register(&hub, &ctx, &reg).await;

    // Create: speed goes to the department's broker, brandName stays here.
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.header("Location"),
        Some(&*format!("/ngsi-ld/v1/entities/{V1}"))
    );
    let there = get(&dept, &ctx, &format!("/entities/{V1}")).await;
    assert_eq!(there.status, 200, "{}", there.text);
    assert_eq!(there.body["speed"]["value"], 50);
    assert!(there.body.get("brandName").is_none(), "{}", there.body);
    let here = get(&hub, &ctx, &format!("/entities/{V1}?local=true")).await;
    assert_eq!(here.body["brandName"]["value"], "Mercedes");
    assert!(here.body.get("speed").is_none(), "{}", here.body);
    // A read through the hub sees both halves.
    let merged = get(&hub, &ctx, &format!("/entities/{V1}")).await;
    assert_eq!(merged.body["speed"]["value"], 50, "{}", merged.body);
    assert_eq!(merged.body["brandName"]["value"], "Mercedes");

    // Partial update of the exclusive attribute: there only.
    let r = send(
        &hub,
        &ctx,
        Method::PATCH,
        &format!("/entities/{V1}/attrs/speed"),
        Some(&json!({"value": 60})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let there = get(&dept, &ctx, &format!("/entities/{V1}")).await;
    assert_eq!(there.body["speed"]["value"], 60);

    // Append: each attribute to where it belongs.
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        &format!("/entities/{V1}/attrs"),
        Some(&json!({"speed": prop(70), "isParked": prop(false)})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let there = get(&dept, &ctx, &format!("/entities/{V1}")).await;
    assert_eq!(there.body["speed"]["value"], 70);
    assert!(there.body.get("isParked").is_none(), "{}", there.body);
    let here = get(&hub, &ctx, &format!("/entities/{V1}?local=true")).await;
    assert_eq!(here.body["isParked"]["value"], false);
    assert!(here.body.get("speed").is_none(), "{}", here.body);

    // Delete the exclusive attribute: there; nothing here to delete is no
    // error.
    let r = send(
        &hub,
        &ctx,
        Method::DELETE,
        &format!("/entities/{V1}/attrs/speed"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let there = get(&dept, &ctx, &format!("/entities/{V1}")).await;
    assert!(there.body.get("speed").is_none(), "{}", there.body);

    // Delete Entity: in both places.
    let r = send(&hub, &ctx, Method::DELETE, &format!("/entities/{V1}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        get(&dept, &ctx, &format!("/entities/{V1}")).await.status,
        404
    );
    assert_eq!(
        get(&hub, &ctx, &format!("/entities/{V1}?local=true"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn redirect_writes_go_to_every_source_as_the_client_wrote_them() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (one, mut one_rx) = source(StatusCode::NO_CONTENT).await;
    let (two, mut two_rx) = source(StatusCode::NO_CONTENT).await;
    for (id, endpoint) in [("r1", format!("{one}/broker1/")), ("r2", two.clone())] {
        register_v1(
            &hub,
            &ctx,
            &format!("urn:ngsi-ld:ContextSourceRegistration:{id}"),
            &endpoint,
            json!({"mode": "redirect", "operations": ["redirectionOps"]}),
        )
        .await;
    }
    let alias = hub.get("/info/sourceIdentity").await.body["contextSourceAlias"]
        .as_str()
        .unwrap()
        .to_string();

    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Nothing stays here.
    assert_eq!(
        get(&hub, &ctx, &format!("/entities/{V1}?local=true"))
            .await
            .status,
        404
    );
    for (rx, path) in [
        (&mut one_rx, "/broker1/ngsi-ld/v1/entities"),
        (&mut two_rx, "/ngsi-ld/v1/entities"),
    ] {
        let got = drain(rx);
        assert_eq!(got.len(), 1, "{got:?}");
        let g = &got[0];
        assert_eq!((&g.method, g.uri.path()), (&HttpMethod::POST, path));
        // The client's document with its short names and its @context.
        assert_eq!(g.body, vehicle());
        assert_eq!(g.headers["content-type"], "application/json");
        assert!(
            g.headers["link"].to_str().unwrap().contains(&ctx),
            "{:?}",
            g.headers
        );
        assert_eq!(g.headers["via"], format!("1.1 {alias}").as_str());
    }

    // Every other write of one entity, with its own method, path and
    // parameters; an entity missing here is no error.
    let cases: [(Method, String, Option<Value>, HttpMethod, String); 7] = [
        (
            Method::PATCH,
            format!("/entities/{V1}/attrs?options=noOverwrite&local=false"),
            Some(json!({"speed": prop(1)})),
            HttpMethod::PATCH,
            format!("/ngsi-ld/v1/entities/{V1}/attrs"),
        ),
        (
            Method::POST,
            format!("/entities/{V1}/attrs"),
            Some(json!({"speed": prop(2)})),
            HttpMethod::POST,
            format!("/ngsi-ld/v1/entities/{V1}/attrs"),
        ),
        (
            Method::PATCH,
            format!("/entities/{V1}/attrs/speed"),
            Some(json!({"speed": {"value": 3}})),
            HttpMethod::PATCH,
            format!("/ngsi-ld/v1/entities/{V1}/attrs/speed"),
        ),
        (
            Method::PUT,
            format!("/entities/{V1}/attrs/speed"),
            Some(json!({"speed": prop(4)})),
            HttpMethod::PUT,
            format!("/ngsi-ld/v1/entities/{V1}/attrs/speed"),
        ),
        (
            Method::PATCH,
            format!("/entities/{V1}"),
            Some(json!({"speed": prop(5)})),
            HttpMethod::PATCH,
            format!("/ngsi-ld/v1/entities/{V1}"),
        ),
        (
            Method::PUT,
            format!("/entities/{V1}"),
            Some(json!({"type": "Vehicle", "speed": prop(6)})),
            HttpMethod::PUT,
            format!("/ngsi-ld/v1/entities/{V1}"),
        ),
        (
            Method::DELETE,
            format!("/entities/{V1}/attrs/speed?deleteAll=true"),
            None,
            HttpMethod::DELETE,
            format!("/ngsi-ld/v1/entities/{V1}/attrs/speed"),
        ),
    ];
    for (method, path, body, want_method, want_path) in cases {
        let r = send(&hub, &ctx, method.clone(), &path, body.as_ref()).await;
        assert_eq!(r.status, 204, "{method} {path}: {}", r.text);
        let got = drain(&mut two_rx);
        assert_eq!(got.len(), 1, "{method} {path}: {got:?}");
        assert_eq!(
            (&got[0].method, got[0].uri.path()),
            (&want_method, &*want_path)
        );
        assert_eq!(got[0].body, body.unwrap_or(Value::Null), "{method} {path}");
        // The operation's own parameters go along; `local` does not.
        let query = got[0].uri.query().unwrap_or("");
        assert!(!query.contains("local"), "{query}");
        if path.contains("noOverwrite") {
            assert_eq!(query, "options=noOverwrite");
        }
        if path.contains("deleteAll") {
            assert_eq!(query, "deleteAll=true");
        }
        assert_eq!(drain(&mut one_rx).len(), 1, "{method} {path}");
    }
    let r = send(&hub, &ctx, Method::DELETE, &format!("/entities/{V1}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(drain(&mut two_rx)[0].method, HttpMethod::DELETE);
    assert_eq!(drain(&mut one_rx)[0].method, HttpMethod::DELETE);

    // local=true keeps a write here: nothing is forwarded.
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entities?local=true",
        Some(&vehicle()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(drain(&mut one_rx).is_empty() && drain(&mut two_rx).is_empty());
    // A request this broker refuses reaches no source.
    let mut bad = vehicle();
    bad["id"] = json!("not a uri");
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&bad)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(drain(&mut one_rx).is_empty() && drain(&mut two_rx).is_empty());
    let r = send(
        &hub,
        &ctx,
        Method::PATCH,
        &format!("/entities/{V1}/attrs"),
        Some(&json!({"speed": {"type": "Property"}})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(drain(&mut one_rx).is_empty() && drain(&mut two_rx).is_empty());
}

#[tokio::test]
async fn a_registration_that_does_not_offer_the_write_is_a_conflict() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (src, mut rx) = source(StatusCode::CREATED).await;
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:q",
        &src,
        json!({"mode": "exclusive", "operations": ["queryEntity"]}),
    )
    .await;
    // The whole entity belongs to a source that does not take creates.
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    r.problem(409, "Conflict");
    assert!(drain(&mut rx).is_empty());
    // Delete Entity removes what is held here and reports the refusal.
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entities?local=true",
        Some(&vehicle()),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = send(&hub, &ctx, Method::DELETE, &format!("/entities/{V1}"), None).await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.body["success"], json!([V1]));
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", r.body);
    assert_eq!(errors[0]["entityId"], V1);
    assert_eq!(errors[0]["error"]["status"], 409);
    assert_eq!(
        errors[0]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:q"
    );
    assert_eq!(
        get(&hub, &ctx, &format!("/entities/{V1}?local=true"))
            .await
            .status,
        404
    );
    assert!(drain(&mut rx).is_empty());
    // An inclusive registration that does not take the write is left out.
    let hub = Server::start().await;
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:i",
        &src,
        json!({"operations": ["retrieveOps"]}),
    )
    .await;
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn inclusive_writes_happen_here_and_there_and_a_failure_is_a_207() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (refusing, mut refusing_rx) = source(StatusCode::CONFLICT).await;
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:c",
        &refusing,
        json!({"mode": "inclusive", "operations": ["redirectionOps"]}),
    )
    .await;
    // Created here; the source refused: one part of two failed.
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.body["success"], json!([V1]));
    assert_eq!(r.body["errors"][0]["error"]["status"], 409, "{}", r.body);
    assert_eq!(
        r.body["errors"][0]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:c"
    );
    assert!(r.header("NGSILD-Warning").unwrap().starts_with("299 "));
    assert_eq!(drain(&mut refusing_rx).len(), 1);
    let here = get(&hub, &ctx, &format!("/entities/{V1}?local=true")).await;
    assert_eq!(here.body["speed"]["value"], 50);
    // Both failed: still a 207, with both errors.
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    assert_eq!(r.status, 207, "{}", r.text);
    let statuses: Vec<&Value> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e.get("error").unwrap()["status"])
        .collect();
    assert_eq!(statuses, [&json!(409), &json!(409)], "{}", r.body);
    assert_eq!(r.body["success"], json!([]));
    // An attribute operation reports per attribute (an UpdateResult).
    let r = send(
        &hub,
        &ctx,
        Method::PATCH,
        &format!("/entities/{V1}/attrs"),
        Some(&json!({"speed": prop(80)})),
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.body["updated"], json!(["speed"]), "{}", r.body);
    assert_eq!(r.body["notUpdated"][0]["attributeName"], "speed");
    assert_eq!(
        r.body["notUpdated"][0]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:c"
    );
    let here = get(&hub, &ctx, &format!("/entities/{V1}?local=true")).await;
    assert_eq!(here.body["speed"]["value"], 80);

    // A source that answers nothing in time: 504 when it was the only part.
    let hub = Server::start().await;
    let (_silent, silent) = crate::support::silent_url();
    let silent = silent.trim_end_matches("/context.jsonld").to_string();
    register_v1(&hub, &ctx, "urn:ngsi-ld:ContextSourceRegistration:s", &silent, json!({"mode": "redirect", "operations": ["redirectionOps"], "management": {"timeout": 200}})).await;
    let r = send(&hub, &ctx, Method::DELETE, &format!("/entities/{V1}"), None).await;
    r.problem(504, "GatewayTimeout");
    assert!(r.header("NGSILD-Warning").unwrap().starts_with("199 "));
}

#[tokio::test]
async fn a_write_that_comes_back_through_a_registration_is_a_loop() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (src, mut rx) = source(StatusCode::NO_CONTENT).await;
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:l",
        &src,
        json!({"operations": ["redirectionOps"]}),
    )
    .await;
    let alias = hub.get("/info/sourceIdentity").await.body["contextSourceAlias"]
        .as_str()
        .unwrap()
        .to_string();
    let r = hub
        .req(Method::DELETE, &format!("/entities/{V1}"))
        .header("Via", &format!("1.1 other, 1.1 {alias}"))
        .send()
        .await;
    r.problem(508, "LoopDetected");
    assert!(drain(&mut rx).is_empty());
    // A Via of other brokers only is passed on with this one added.
    let r = hub
        .req(Method::DELETE, &format!("/entities/{V1}"))
        .header("Via", "1.1 other")
        .send()
        .await;
    assert_eq!(r.status, 207, "not held here, deleted there: {}", r.text);
    let got = drain(&mut rx);
    assert_eq!(
        got[0].headers["via"],
        format!("1.1 other, 1.1 {alias}").as_str()
    );
}

#[tokio::test]
async fn forwarded_header_names_are_written_as_the_specification_writes_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    // A source that reads the request's bytes as they came (header names
    // included, which HTTP libraries lowercase).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let raw = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:t",
        &endpoint,
        json!({"mode": "redirect", "operations": ["redirectionOps"]}),
    )
    .await;
    let r = send(&hub, &ctx, Method::DELETE, &format!("/entities/{V1}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let head = raw.await.unwrap();
    assert!(
        head.starts_with(&format!("DELETE /ngsi-ld/v1/entities/{V1} HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nVia: 1.1 "), "{head}");
}

#[tokio::test]
async fn batches_send_each_registration_its_part_of_every_entity() {
    let (hub, dept) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    let batch_ops = json!([
        "createBatch",
        "upsertBatch",
        "updateBatch",
        "mergeBatch",
        "deleteBatch",
        "retrieveEntity"
    ]);
    let mut reg = registration(
        "urn:ngsi-ld:ContextSourceRegistration:bx",
        &dept.origin,
        json!({"mode": "exclusive", "operations": batch_ops}),
    );
    reg["information"][0]["entities"][0]["idPattern"] = json!("urn:ngsi-ld:Vehicle:b");
    reg["information"][0]["propertyNames"] = json!(["speed"]);
    register(&hub, &ctx, &reg).await;
    let ids = ["urn:ngsi-ld:Vehicle:b1", "urn:ngsi-ld:Vehicle:b2"];
    let batch = |speed: i64| {
        Value::Array(
            ids.iter()
                .map(|id| json!({"id": id, "type": "Vehicle", "speed": prop(speed), "brandName": prop("BMW")}))
                .collect(),
        )
    };
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entityOperations/create",
        Some(&batch(10)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body, json!(ids));
    for id in ids {
        let there = get(&dept, &ctx, &format!("/entities/{id}")).await;
        assert_eq!(there.body["speed"]["value"], 10, "{}", there.body);
        assert!(there.body.get("brandName").is_none());
        let here = get(&hub, &ctx, &format!("/entities/{id}?local=true")).await;
        assert_eq!(here.body["brandName"]["value"], "BMW");
        assert!(here.body.get("speed").is_none(), "{}", here.body);
    }
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entityOperations/upsert?options=update",
        Some(&batch(20)),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let there = get(&dept, &ctx, &format!("/entities/{}", ids[1])).await;
    assert_eq!(there.body["speed"]["value"], 20);
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entityOperations/delete",
        Some(&json!(ids)),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for id in ids {
        assert_eq!(
            get(&dept, &ctx, &format!("/entities/{id}")).await.status,
            404
        );
        assert_eq!(
            get(&hub, &ctx, &format!("/entities/{id}?local=true"))
                .await
                .status,
            404
        );
    }

    // A source's own 207 says which of its entities failed; a registration
    // that does not take the batch operation fails its part of each.
    let hub = Server::start().await;
    let answer = json!({"success": [ids[0]], "errors": [{"entityId": ids[1], "error": {
        "type": "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists", "title": "Already exists",
        "detail": "it exists there", "status": 409}}]});
    let (partial, mut partial_rx) =
        source_answering(StatusCode::MULTI_STATUS, answer.to_string()).await;
    let (reads_only, mut reads_rx) = source(StatusCode::CREATED).await;
    let mut inclusive = registration(
        "urn:ngsi-ld:ContextSourceRegistration:bi",
        &partial,
        json!({"operations": batch_ops}),
    );
    inclusive["information"][0]["entities"][0]["idPattern"] = json!("urn:ngsi-ld:Vehicle:b");
    register(&hub, &ctx, &inclusive).await;
    let mut refusing = registration(
        "urn:ngsi-ld:ContextSourceRegistration:br",
        &reads_only,
        json!({"mode": "redirect", "operations": ["retrieveOps"]}),
    );
    refusing["information"][0]["entities"][0]["id"] = json!(ids[0]);
    refusing["information"][0]["propertyNames"] = json!(["brandName"]);
    register(&hub, &ctx, &refusing).await;
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entityOperations/create",
        Some(&batch(30)),
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text);
    // Each entity was written in part (here, and b1 at the inclusive
    // source), and each has a part that failed.
    assert_eq!(r.body["success"], json!(ids), "{}", r.body);
    let mut errors: Vec<(String, String, i64)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["entityId"].as_str().unwrap().to_string(),
                e["registrationId"].as_str().unwrap_or("").to_string(),
                e["error"]["status"].as_i64().unwrap(),
            )
        })
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            (
                ids[0].to_string(),
                "urn:ngsi-ld:ContextSourceRegistration:br".to_string(),
                409
            ),
            (
                ids[1].to_string(),
                "urn:ngsi-ld:ContextSourceRegistration:bi".to_string(),
                409
            ),
        ]
    );
    // One batch went to the inclusive source, with both entities whole
    // (but for what the redirect registration took); none to the other.
    let got = drain(&mut partial_rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].uri.path(), "/ngsi-ld/v1/entityOperations/create");
    assert_eq!(got[0].body.as_array().unwrap().len(), 2);
    assert!(got[0].body[0].get("brandName").is_none(), "{}", got[0].body);
    assert_eq!(got[0].body[1]["brandName"]["value"], "BMW");
    assert!(drain(&mut reads_rx).is_empty());
    // What stayed here was written here.
    let here = get(&hub, &ctx, &format!("/entities/{}?local=true", ids[1])).await;
    assert_eq!(here.body["speed"]["value"], 30);
}

#[tokio::test]
async fn a_purge_goes_to_the_registrations_that_select_it() {
    let (hub, dept) = (Server::start().await, Server::start().await);
    let ctx = serve_document(terms()).await;
    register(
        &hub,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:p",
            &dept.origin,
            json!({"operations": ["redirectionOps"]}),
        ),
    )
    .await;
    let (src, mut rx) = source(StatusCode::NO_CONTENT).await;
    register(
        &hub,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:p2",
            &src,
            json!({"mode": "redirect", "operations": ["redirectionOps"]}),
        ),
    )
    .await;
    let held = |id: &str| json!({"id": id, "type": "Vehicle", "speed": prop(1)});
    for (s, id) in [
        (&hub, "urn:ngsi-ld:Vehicle:ph"),
        (&dept, "urn:ngsi-ld:Vehicle:pd"),
    ] {
        let r = send(
            s,
            &ctx,
            Method::POST,
            "/entities?local=true",
            Some(&held(id)),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = send(
        &hub,
        &ctx,
        Method::DELETE,
        "/entities?type=Vehicle&local=false",
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for (s, id) in [
        (&hub, "urn:ngsi-ld:Vehicle:ph"),
        (&dept, "urn:ngsi-ld:Vehicle:pd"),
    ] {
        assert_eq!(
            get(s, &ctx, &format!("/entities/{id}?local=true"))
                .await
                .status,
            404
        );
    }
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, HttpMethod::DELETE);
    assert_eq!(got[0].uri.path(), "/ngsi-ld/v1/entities");
    assert_eq!(got[0].uri.query(), Some("type=Vehicle"));
    // A purge of another type selects neither registration.
    let r = send(&hub, &ctx, Method::DELETE, "/entities?type=Building", None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(drain(&mut rx).is_empty());
    // A source that fails makes the answer partial.
    let hub = Server::start().await;
    let (failing, _rx) = source(StatusCode::INTERNAL_SERVER_ERROR).await;
    register(
        &hub,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:pf",
            &failing,
            json!({"operations": ["redirectionOps"]}),
        ),
    )
    .await;
    let r = send(&hub, &ctx, Method::DELETE, "/entities?type=Vehicle", None).await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:pf"
    );
    assert_eq!(r.body["errors"][0]["error"]["status"], 500, "{}", r.body);
    // A purge this broker refuses goes nowhere.
    let r = send(&hub, &ctx, Method::DELETE, "/entities", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A redirect registration that does not take purges is a Conflict;
    // a purge that comes back through a registration is a loop.
    let hub = Server::start().await;
    let (reads_only, mut reads_rx) = source(StatusCode::NO_CONTENT).await;
    register(
        &hub,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:pr",
            &reads_only,
            json!({"mode": "redirect", "operations": ["retrieveOps"]}),
        ),
    )
    .await;
    let r = send(&hub, &ctx, Method::DELETE, "/entities?type=Vehicle", None).await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.body["errors"][0]["error"]["status"], 409, "{}", r.body);
    assert!(drain(&mut reads_rx).is_empty());
    let alias = hub.get("/info/sourceIdentity").await.body["contextSourceAlias"]
        .as_str()
        .unwrap()
        .to_string();
    let r = hub
        .req(Method::DELETE, "/entities?type=Vehicle")
        .header("Link", &link(&ctx))
        .header("Via", &format!("1.1 {alias}"))
        .send()
        .await;
    r.problem(508, "LoopDetected");
}

#[tokio::test]
async fn a_source_that_does_part_of_a_write_is_answered_in_its_own_words() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let own =
        json!({"updated": [], "notUpdated": [{"attributeName": "speed", "reason": "exists"}]});
    let (partial, mut rx) = source_answering(StatusCode::MULTI_STATUS, own.to_string()).await;
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:s207",
        &partial,
        json!({"mode": "redirect", "operations": ["redirectionOps"]}),
    )
    .await;
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        &format!("/entities/{V1}/attrs?options=noOverwrite"),
        Some(&json!({"speed": prop(1)})),
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.body["notUpdated"][0]["attributeName"], "speed");
    assert_eq!(
        r.body["notUpdated"][0]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:s207"
    );
    assert_eq!(drain(&mut rx)[0].uri.query(), Some("options=noOverwrite"));
}

#[tokio::test]
async fn what_this_broker_refuses_reaches_no_source() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (src, mut rx) = source(StatusCode::NO_CONTENT).await;
    let mut reg = reg_v1(
        "urn:ngsi-ld:ContextSourceRegistration:v",
        &src,
        json!({"mode": "exclusive", "operations": ["redirectionOps"]}),
    );
    reg["information"][0]["propertyNames"] = json!(["speed"]);
    register(&hub, &ctx, &reg).await;
    let refused: [(Method, String, Option<Value>); 4] = [
        // Not an attribute fragment.
        (
            Method::PATCH,
            format!("/entities/{V1}/attrs/speed"),
            Some(json!([1, 2])),
        ),
        // No type in a replacement.
        (
            Method::PUT,
            format!("/entities/{V1}"),
            Some(json!({"speed": prop(1)})),
        ),
        // A bad type selector.
        (
            Method::DELETE,
            format!("/entities/{V1}/attrs/speed?type=%28"),
            None,
        ),
        // An attribute that is no instance.
        (
            Method::PUT,
            format!("/entities/{V1}/attrs/speed"),
            Some(json!({"value": {"type": "Property"}, "type": 3})),
        ),
    ];
    for (method, path, body) in refused {
        let r = send(&hub, &ctx, method.clone(), &path, body.as_ref()).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text);
        assert!(drain(&mut rx).is_empty(), "{method} {path} was forwarded");
    }
    // Dot segments, which a URL would fold into another resource (sent as
    // bytes: HTTP clients fold them before sending), to a registration of
    // the whole entity.
    let whole = Server::start().await;
    register_v1(
        &whole,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:w",
        &src,
        json!({"mode": "redirect", "operations": ["redirectionOps"]}),
    )
    .await;
    let body = json!({"speed": prop(1)}).to_string();
    for (method, attr, body) in [("PATCH", "%2E%2E", body.as_str()), ("DELETE", "%2E", "")] {
        let answer = crate::support::raw(
            &whole,
            &format!(
                "{method} /ngsi-ld/v1/entities/{V1}/attrs/{attr} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nLink: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                link(&ctx),
                body.len()
            ),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{method} {attr}: {answer}"
        );
        assert!(drain(&mut rx).is_empty(), "{method} {attr} was forwarded");
    }
    // Delete Entity with an attribute-scoped exclusive or redirect part
    // removes what is held here "if it exists": nothing held is no failure.
    let r = send(&hub, &ctx, Method::DELETE, &format!("/entities/{V1}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(drain(&mut rx).len(), 1);
    // An entity whose type nothing tells is not given to a registration of
    // a type alone: it may be of another type.
    let hub = Server::start().await;
    register(
        &hub,
        &ctx,
        &registration(
            "urn:ngsi-ld:ContextSourceRegistration:b",
            &src,
            json!({"mode": "redirect", "operations": ["redirectionOps"]}),
        ),
    )
    .await;
    let r = send(
        &hub,
        &ctx,
        Method::DELETE,
        "/entities/urn:ngsi-ld:Other:1",
        None,
    )
    .await;
    r.problem(404, "ResourceNotFound");
    assert!(drain(&mut rx).is_empty());
    // With its type given, it is.
    let r = send(
        &hub,
        &ctx,
        Method::DELETE,
        "/entities/urn:ngsi-ld:Other:1?type=Vehicle",
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(drain(&mut rx).len(), 1);
}

#[tokio::test]
async fn an_attribute_operation_is_matched_by_the_entity_not_its_body() {
    // A redirect registration of an id pattern's `speed`: a partial update
    // whose body names its kind (`"type": "Property"`) is still a write to
    // a Vehicle of that pattern.
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (src, mut rx) = source(StatusCode::NO_CONTENT).await;
    let mut reg = registration(
        "urn:ngsi-ld:ContextSourceRegistration:ip",
        &src,
        json!({"mode": "redirect", "operations": ["updateOps"]}),
    );
    reg["information"][0]["entities"][0]["idPattern"] = json!("^urn:ngsi-ld:Vehicle:there:");
    reg["information"][0]["propertyNames"] = json!(["speed"]);
    register(&hub, &ctx, &reg).await;
    for (method, body) in [
        (Method::PATCH, json!({"type": "Property", "value": 5})),
        (Method::PUT, json!({"type": "Property", "value": 6})),
    ] {
        let r = send(
            &hub,
            &ctx,
            method.clone(),
            "/entities/urn:ngsi-ld:Vehicle:there:1/attrs/speed",
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 204, "{method}: {}", r.text);
        let got = drain(&mut rx);
        assert_eq!(got.len(), 1, "{method}");
        assert_eq!(got[0].body, body);
    }
    // Another attribute of it is not the registration's.
    let r = send(
        &hub,
        &ctx,
        Method::PATCH,
        "/entities/urn:ngsi-ld:Vehicle:there:1/attrs/brandName",
        Some(&json!({"type": "Property", "value": "x"})),
    )
    .await;
    r.problem(404, "ResourceNotFound");
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn a_json_ld_write_goes_with_its_context_as_a_link_when_one_url_names_it() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (src, mut rx) = source(StatusCode::CREATED).await;
    register_v1(
        &hub,
        &ctx,
        "urn:ngsi-ld:ContextSourceRegistration:ld",
        &src,
        json!({"mode": "redirect", "operations": ["redirectionOps", "createBatch"]}),
    )
    .await;
    let with = |context: Value| {
        let mut e = vehicle();
        e["@context"] = context;
        e
    };
    // One URL (alone or in an array of one): JSON with that Link, for
    // one entity and for a batch.
    for (path, doc) in [
        ("/entities", with(json!(ctx))),
        ("/entities", with(json!([ctx]))),
        ("/entityOperations/create", json!([with(json!([ctx]))])),
    ] {
        let r = hub.req(Method::POST, path).ld(&doc).send().await;
        assert!(r.status == 201, "{path}: {}", r.text);
        let got = drain(&mut rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].headers["content-type"], "application/json");
        assert!(got[0].headers["link"].to_str().unwrap().contains(&ctx));
        let sent = match &got[0].body {
            Value::Array(items) => items[0].clone(),
            one => one.clone(),
        };
        assert_eq!(sent, vehicle(), "{path}");
    }
    // A context that no one URL names travels inline.
    let inline = with(json!([ctx, {"extra": "https://example.org/extra"}]));
    let r = hub.req(Method::POST, "/entities").ld(&inline).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let got = drain(&mut rx);
    assert_eq!(got[0].headers["content-type"], "application/ld+json");
    assert!(got[0].headers.get("link").is_none());
    assert_eq!(got[0].body, inline);
}

#[tokio::test]
async fn a_source_207_that_names_no_failure_fails_its_whole_part() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    // No body, as the ETSI mock answers.
    let (bare, _rx) = source(StatusCode::MULTI_STATUS).await;
    let mut reg = reg_v1(
        "urn:ngsi-ld:ContextSourceRegistration:bare",
        &bare,
        json!({"mode": "redirect", "operations": ["redirectionOps"]}),
    );
    reg["information"][0]["propertyNames"] = json!(["speed"]);
    register(&hub, &ctx, &reg).await;
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        &format!("/entities/{V1}/attrs"),
        Some(&json!({"speed": prop(1)})),
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(
        r.body["notUpdated"][0]["attributeName"], "speed",
        "{}",
        r.body
    );
    assert_eq!(
        r.body["notUpdated"][0]["registrationId"],
        "urn:ngsi-ld:ContextSourceRegistration:bare"
    );
    // With a part held here too: the local attribute is updated, speed is not.
    let r = send(
        &hub,
        &ctx,
        Method::POST,
        "/entities?local=true",
        Some(&vehicle()),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = send(
        &hub,
        &ctx,
        Method::PATCH,
        &format!("/entities/{V1}/attrs"),
        Some(&json!({"speed": prop(2), "brandName": prop("Audi")})),
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.body["updated"], json!(["brandName"]), "{}", r.body);
    assert_eq!(r.body["notUpdated"][0]["attributeName"], "speed");
    // A bad datasetId is refused here, not forwarded.
    let r = send(
        &hub,
        &ctx,
        Method::DELETE,
        &format!("/entities/{V1}/attrs/speed?datasetId=not%20a%20uri"),
        None,
    )
    .await;
    r.problem(400, "BadRequestData");
}

#[tokio::test]
async fn a_purge_by_q_alone_leaves_out_registrations_that_do_not_take_purges() {
    let hub = Server::start().await;
    let ctx = serve_document(terms()).await;
    let (reads_only, mut rx) = source(StatusCode::NO_CONTENT).await;
    let mut reg = registration(
        "urn:ngsi-ld:ContextSourceRegistration:bld",
        &reads_only,
        json!({"mode": "redirect", "operations": ["retrieveOps"]}),
    );
    reg["information"][0]["entities"][0]["type"] = json!("Building");
    register(&hub, &ctx, &reg).await;
    let r = send(&hub, &ctx, Method::POST, "/entities", Some(&vehicle())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = send(&hub, &ctx, Method::DELETE, "/entities?q=speed==50", None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        get(&hub, &ctx, &format!("/entities/{V1}?local=true"))
            .await
            .status,
        404
    );
    assert!(drain(&mut rx).is_empty());
}
