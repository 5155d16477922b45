//! Cross-cutting HTTP behaviour: ProblemDetails, limits, unknown query
//! parameters, trailing slashes, 411, 404/405 for routes.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::{MAX_BODY, Server, raw, vehicle};

const ID: &str = "urn:ngsi-ld:Vehicle:E1";

#[tokio::test]
async fn unknown_query_parameters_are_invalid_request() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let cases = [
        (
            Method::POST,
            "/entities?bogus=1".to_string(),
            Some(vehicle("urn:x:2", 1)),
        ),
        (
            Method::GET,
            "/entities?type=Vehicle&bogus=1".to_string(),
            None,
        ),
        (Method::GET, format!("/entities/{ID}?bogus=1"), None),
        (Method::DELETE, format!("/entities/{ID}?bogus=1"), None),
        (
            Method::DELETE,
            "/entities?type=Vehicle&bogus=1".to_string(),
            None,
        ),
        (Method::GET, "/types?bogus=1".to_string(), None),
        (Method::GET, "/attributes?bogus=1".to_string(), None),
        (
            Method::PATCH,
            format!("/entities/{ID}/attrs?bogus=1"),
            Some(json!({"speed": 1})),
        ),
        (
            Method::POST,
            "/entityOperations/create?bogus=1".to_string(),
            Some(json!([vehicle("urn:x:3", 1)])),
        ),
        (Method::GET, "/jsonldContexts?bogus=1".to_string(), None),
    ];
    for (method, path, body) in cases {
        let mut req = s.req(method.clone(), &path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        req.send().await.problem(400, "InvalidRequest");
    }
    // Nothing happened.
    assert_eq!(s.ids("type=Vehicle").await, [ID]);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let s = Server::start().await;
    let big = "x".repeat(MAX_BODY + 1);
    let r = s
        .post("/entities", &json!({"id": ID, "type": "T", "p": big}))
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
    // Just under the limit is fine.
    let ok = "x".repeat(MAX_BODY - 100);
    assert_eq!(
        s.post("/entities", &json!({"id": ID, "type": "T", "p": ok}))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_not_a_crash() {
    let s = Server::start().await;
    let depth = 10_000;
    let body = format!(
        "{{\"id\":\"{ID}\",\"type\":\"T\",\"p\":{}1{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let r = s
        .req(Method::POST, "/entities")
        .body("application/json", body)
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .req(Method::POST, "/entityOperations/upsert")
        .body("application/json", "[".repeat(depth))
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // Deep sub-attributes within the JSON limit are refused by the model.
    let mut attr = json!({"type": "Property", "value": 1});
    for _ in 0..30 {
        attr = json!({"type": "Property", "value": 1, "sub": attr});
    }
    s.post("/entities", &json!({"id": ID, "type": "T", "p": attr}))
        .await
        .problem(400, "BadRequestData");
    // The server still works.
    s.create(vehicle(ID, 1)).await;
}

#[tokio::test]
async fn trailing_slashes_route_like_the_bare_path() {
    let s = Server::start().await;
    s.post("/entities/", &vehicle(ID, 1)).await;
    for path in [
        "/entities/?type=Vehicle",
        "/types/",
        "/attributes/",
        &format!("/entities/{ID}/"),
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    s.post(&format!("/entities/{ID}/attrs/"), &json!({"x": 1}))
        .await
        .no_content();
}

#[tokio::test]
async fn no_content_responses_have_no_content_length() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let responses = [
        s.patch(&format!("/entities/{ID}/attrs"), &json!({"speed": 2}))
            .await,
        s.post(&format!("/entities/{ID}/attrs"), &json!({"x": 2}))
            .await,
        s.patch(&format!("/entities/{ID}"), &json!({"x": 3})).await,
        s.delete(&format!("/entities/{ID}/attrs/x")).await,
        s.delete(&format!("/entities/{ID}")).await,
    ];
    for r in responses {
        r.no_content();
        assert!(r.header("content-length").is_none(), "{:?}", r.headers);
    }
}

#[tokio::test]
async fn a_write_without_content_length_is_411_with_an_empty_body() {
    let s = Server::start().await;
    let body = vehicle(ID, 1).to_string();
    let request = format!(
        "POST /ngsi-ld/v1/entities HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nngsild-tenant: nobody\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let answer = raw(&s, &request).await;
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    let (_, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(rest.is_empty(), "{answer}");
    s.get(&format!("/entities/{ID}"))
        .await
        .problem(404, "ResourceNotFound");
}

#[tokio::test]
async fn routes_that_do_not_exist() {
    let s = Server::start().await;
    s.get("/nothing").await.problem(404, "ResourceNotFound");
    let r = s
        .req(Method::PUT, "/entityOperations/create")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, 405);
    // Merge and Replace Entity without an id: the id is missing (ETSI
    // 056_02_02, 054_02_02).
    for method in [Method::PATCH, Method::PUT] {
        s.req(method, "/entities/")
            .json(&json!({"type": "T"}))
            .send()
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn errors_are_problem_details() {
    let s = Server::start().await;
    let r = s.get("/entities/urn:ngsi-ld:none").await;
    r.problem(404, "ResourceNotFound");
    assert_eq!(r.body["status"], 404);
    // Internal details never show; every 4xx above has both texts.
    let r = s
        .req(Method::POST, "/entities")
        .body("application/json", "{\"id\":")
        .send()
        .await;
    r.problem(400, "InvalidRequest");
    // A compressed body is refused, not read as JSON.
    let r = s
        .req(Method::POST, "/entities")
        .header("content-encoding", "gzip")
        .body("application/json", "{\"id\": \"urn:x:1\", \"type\": \"T\"}")
        .send()
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    s.get("/entities/urn:x:1")
        .await
        .problem(404, "ResourceNotFound");
    // A path segment that is no UTF-8 once decoded, on any route.
    for path in [
        "/entities/urn:a%FF",
        "/subscriptions/urn:a%FF",
        "/temporal/entities/urn:a%FF",
        "/csourceRegistrations/urn:a%C0",
    ] {
        s.get(path).await.problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let r = reqwest::get(format!("{}/health", s.origin)).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "ok");
    let text = s.metrics().await;
    assert!(text.contains("# EOF"));
    // Entities and tenants are gauges read at the scrape.
    for line in ["wuyang_store_entities 1", "wuyang_store_tenants 1"] {
        assert!(text.lines().any(|l| l == line), "{line} not in {text}");
    }
    s.create(vehicle("urn:ngsi-ld:Vehicle:second", 1)).await;
    let text = s.metrics().await;
    assert!(
        text.lines().any(|l| l == "wuyang_store_entities 2"),
        "{text}"
    );
}

/// A write refused before its body was read ends its connection, and the
/// answer says so; one whose body was read keeps the connection open.
#[tokio::test]
async fn a_write_refused_before_its_body_is_read_says_connection_close() {
    let s = Server::start().await;
    let body = serde_json::to_string(&vehicle(ID, 1)).unwrap();
    let cases = [
        // Refused before the body was read: the connection ends.
        ("/entities", "text/plain", body.as_str(), 415, Some("close")),
        (
            "/entities?bogus=1",
            "application/json",
            &body,
            400,
            Some("close"),
        ),
        // Read, then refused or done: the connection stays.
        (
            "/entities",
            "application/json",
            "{\"id\": \"urn:x:1\"}",
            400,
            None,
        ),
        ("/entities", "application/json", &body, 201, None),
    ];
    for (path, content_type, body, status, close) in cases {
        let r = s
            .req(Method::POST, path)
            .body(content_type, body)
            .send()
            .await;
        assert_eq!(r.status, status, "{path} {content_type}");
        let connection = r.headers.get("connection").map(|v| v.to_str().unwrap());
        assert_eq!(connection, close, "{path} {content_type}");
    }
    let r = s.req(Method::GET, &format!("/entities/{ID}")).send().await;
    assert_eq!(r.headers.get("connection"), None);
}

#[tokio::test]
async fn check_order_411_then_415_then_406_then_unknown_parameters() {
    let s = Server::start().await;
    let chunked = |path: &str, ct: &str| {
        format!(
            "POST /ngsi-ld/v1{path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ct}\r\naccept: application/xml\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        )
    };
    for path in [
        "/entities?bogus=1",
        "/entityOperations/query?bogus=1",
        "/entityOperations/upsert",
    ] {
        let answer = raw(&s, &chunked(path, "text/plain")).await;
        assert!(answer.starts_with("HTTP/1.1 411"), "{path}: {answer}");
    }
    let r = s
        .req(Method::POST, "/entityOperations/query?bogus=1")
        .header("accept", "application/xml")
        .body("text/plain", "{}")
        .send()
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    let r = s
        .req(Method::POST, "/entityOperations/query?bogus=1")
        .header("accept", "application/xml")
        .json(&json!({"type": "Query", "entities": [{"type": "T"}]}))
        .send()
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
}

/// A client that sends half a request and stops, or keeps an idle
/// connection open, loses the connection after the idle timeout: slow
/// clients cannot hold connections (and the server's memory) forever. A
/// client that goes on within the timeout keeps its connection.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = Server::start_with(Duration::from_millis(500)).await;
    let addr = s.origin.trim_start_matches("http://").to_string();
    // Half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /ngsi-ld/v1/types HTT").await.unwrap();
    // A keep-alive connection that answers one request, then idles.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /ngsi-ld/v1/types HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let started = std::time::Instant::now();
    for (name, conn) in [("slow", &mut slow), ("idle", &mut idle)] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the {name} connection is still open after 5 s"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed too early"
    );
    // A body announced but not sent is not waited for either: 408, and
    // the connection ends.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(
            b"POST /ngsi-ld/v1/entities HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), trickle.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the trickling request is still open after 5 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Requests within the timeout keep one connection.
    let mut busy = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for _ in 0..4 {
        busy.write_all(b"GET /ngsi-ld/v1/types HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = busy.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
