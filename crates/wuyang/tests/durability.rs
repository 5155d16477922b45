//! Process-level tests of `wuyang serve`: what only a real process shows.
//! The server is killed with SIGKILL in the middle of a write load and
//! restarted; every write it acknowledged must still be there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0", extra)
    }

    fn start_on(data_dir: &std::path::Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wuyang"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("WUYANG_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start wuyang");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        Server {
            child,
            base: format!("http://{addr}/ngsi-ld/v1"),
        }
    }

    fn kill9(mut self) {
        // Child::kill sends SIGKILL on Unix: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The values of the `level` history of `id`, oldest first (empty when
/// there is none).
async fn level_history(client: &reqwest::Client, base: &str, id: &str) -> Vec<i64> {
    let h: Value = client
        .get(format!(
            "{base}/temporal/entities/{id}?attrs=level&options=temporalValues"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h["level"]["values"]
        .as_array()
        .map(|v| v.iter().map(|p| p[0].as_i64().unwrap()).collect())
        .unwrap_or_default()
}

/// The status of `GET url`, in `tenant` if given.
async fn status_of(client: &reqwest::Client, url: &str, tenant: Option<&str>) -> u16 {
    let mut get = client.get(url);
    if let Some(t) = tenant {
        get = get.header("NGSILD-Tenant", t);
    }
    get.send().await.unwrap().status().as_u16()
}

fn entity(id: &str) -> Value {
    json!({
        "id": id,
        "type": "WaterLevelSensor",
        "level": {"type": "Property", "value": 0, "unitCode": "MTR", "observedAt": "2024-07-01T00:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [113.27, 23.13]}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive_kill_9_with(&[]).await;
}

/// `--sync normal` acknowledges once the operating system has the WAL, not
/// the disk: that too survives the death of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_sync_normal() {
    acknowledged_writes_survive_kill_9_with(&["--sync", "normal"]).await;
}

async fn acknowledged_writes_survive_kill_9_with(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), extra);
    let base = server.base.clone();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();

    // Acknowledged state: created ids, and for each id the highest level
    // value whose update was acknowledged.
    let acked: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    // The writers run until the server dies (or, should it never, this).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("urn:ngsi-ld:WaterLevelSensor:w{w}-{n}");
                n += 1;
                let Ok(r) = client
                    .post(format!("{base}/entities"))
                    .json(&entity(&id))
                    .send()
                    .await
                else {
                    break;
                };
                if r.status() != 201 {
                    panic!("create answered {}", r.status());
                }
                acked.lock().insert(id.clone(), 0);
                for level in 1..=3i64 {
                    let body = json!({"type": "Property", "value": level, "unitCode": "MTR"});
                    let Ok(r) = client
                        .patch(format!("{base}/entities/{id}/attrs/level"))
                        .json(&body)
                        .send()
                        .await
                    else {
                        return;
                    };
                    assert_eq!(r.status(), 204);
                    acked.lock().insert(id.clone(), level);
                }
            }
        }));
    }
    // Kill the server while the writers are busy, once they have had a
    // load worth checking acknowledged (a busy machine takes longer).
    let started = Instant::now();
    while acked.lock().len() < 300 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 50,
        "the load was too small to mean anything: {}",
        acked.len()
    );

    let server = Server::start_with(dir.path(), extra);
    for (id, level) in &acked {
        let r = client
            .get(format!("{}/entities/{id}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged entity {id} was lost");
        let e: Value = r.json().await.unwrap();
        let stored = e["level"]["value"].as_i64().unwrap();
        assert!(
            stored >= *level,
            "{id}: acknowledged level {level} but found {stored}"
        );
        // Every acknowledged write left its temporal instance, in order.
        let values = level_history(&client, &server.base, id).await;
        let expected: Vec<i64> = (0..=*level).collect();
        assert!(
            values.len() >= expected.len() && values[..expected.len()] == expected[..],
            "{id}: acknowledged levels up to {level} but the history holds {values:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_tenants_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let hosted;
    let hosted_by_tenant;
    {
        let server = Server::start(dir.path());
        let r = client
            .post(format!("{}/entities", server.base))
            .json(&entity("urn:ngsi-ld:WaterLevelSensor:restart"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = client
            .post(format!("{}/entities", server.base))
            .header("NGSILD-Tenant", "panyu")
            .json(&entity("urn:ngsi-ld:WaterLevelSensor:tenant"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = client
            .post(format!("{}/jsonldContexts", server.base))
            .json(&json!({"@context": {"level": "https://data.guangzhou.example/ontology#waterLevel"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        hosted = r.headers()["location"].to_str().unwrap().to_string();
        let r = client
            .post(format!("{}/jsonldContexts", server.base))
            .header("NGSILD-Tenant", "panyu")
            .json(&json!({"@context": {"depth": "https://data.guangzhou.example/ontology#depth"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        hosted_by_tenant = r.headers()["location"].to_str().unwrap().to_string();
    }
    let server = Server::start(dir.path());
    // The hosted @context is still served, and still usable in a Link header.
    let origin = server.base.trim_end_matches("/ngsi-ld/v1").to_string();
    let r = client
        .get(format!("{origin}{hosted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A tenant's hosted @context is still its own.
    let url = format!("{origin}{hosted_by_tenant}");
    assert_eq!(status_of(&client, &url, Some("panyu")).await, 200);
    assert_eq!(status_of(&client, &url, None).await, 404);
    let r = client
        .get(format!("{}/entities/urn:ngsi-ld:WaterLevelSensor:restart", server.base))
        .header("Link", format!("<{origin}{hosted}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!(
            "{}/entities/urn:ngsi-ld:WaterLevelSensor:restart",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["location"]["value"]["coordinates"],
        json!([113.27, 23.13])
    );
    // The tenant exists after restart, and its data stays its own.
    let url = format!(
        "{}/entities/urn:ngsi-ld:WaterLevelSensor:tenant",
        server.base
    );
    assert_eq!(status_of(&client, &url, Some("panyu")).await, 200);
    assert_eq!(status_of(&client, &url, None).await, 404);
}

/// A notification receiver on a free port: returns its URL and the bodies.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: bytes::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/notify"), rx)
}

async fn notification(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_their_status_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let (uri, mut rx) = receiver().await;
    let sub_url = |base: &str| format!("{base}/subscriptions/urn:ngsi-ld:Subscription:flood");
    let level = |v: f64| json!({"level": {"type": "Property", "value": v}});
    let attrs = |base: &str| format!("{base}/entities/urn:ngsi-ld:WaterLevelSensor:s/attrs");
    {
        let server = Server::start(dir.path());
        let r = client
            .post(format!("{}/entities", server.base))
            .header("NGSILD-Tenant", "tianhe")
            .json(&entity("urn:ngsi-ld:WaterLevelSensor:s"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // Created with an inline @context, then patched under another one.
        let r = client
            .post(format!("{}/subscriptions", server.base))
            .header("NGSILD-Tenant", "tianhe")
            .header("Content-Type", "application/ld+json")
            .body(
                json!({
                    "@context": [{"level": "https://data.guangzhou.example/water#level"},
                                 "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"],
                    "id": "urn:ngsi-ld:Subscription:flood",
                    "type": "Subscription",
                    "entities": [{"type": "WaterLevelSensor"}],
                    "watchedAttributes": ["level"],
                    "q": "level>100",
                    "notification": {"endpoint": {"uri": uri}, "format": "keyValues"},
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = client
            .patch(sub_url(&server.base))
            .header("NGSILD-Tenant", "tianhe")
            .header("Content-Type", "application/ld+json")
            .body(
                json!({
                    "@context": {"waterLevel": "https://data.guangzhou.example/water#level"},
                    "q": "waterLevel>2",
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        let r = client
            .patch(attrs(&server.base))
            .header("NGSILD-Tenant", "tianhe")
            .header("Content-Type", "application/ld+json")
            .body(
                json!({"@context": {"level": "https://data.guangzhou.example/water#level"},
                       "level": {"type": "Property", "value": 3.0}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        // level is a new attribute here: Update Attributes appends it (5.6.2).
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        let n = notification(&mut rx).await;
        assert_eq!(
            n["data"][0]["level"], 3.0,
            "compacted with the creation context: {n}"
        );
        // The status is written within a second.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        server.kill9();
    }
    let server = Server::start(dir.path());
    let r = client
        .get(sub_url(&server.base))
        .header("NGSILD-Tenant", "tianhe")
        .header(
            "Link",
            "<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s["q"], "https://data.guangzhou.example/water#level>2",
        "{s}"
    );
    assert_eq!(s["notification"]["timesSent"], 1, "{s}");
    assert_eq!(s["notification"]["status"], "ok", "{s}");
    // Still notifying, below and above the patched threshold.
    for (v, notified) in [(1.0, false), (5.0, true)] {
        let r = client
            .post(attrs(&server.base))
            .header("NGSILD-Tenant", "tianhe")
            .header("Content-Type", "application/ld+json")
            .body(
                json!({"@context": {"level": "https://data.guangzhou.example/water#level"},
                       "level": level(v)["level"]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        if notified {
            let n = notification(&mut rx).await;
            assert_eq!(n["data"][0]["level"], 5.0, "{n}");
        }
    }
    assert!(rx.try_recv().is_err(), "level 1 was not notified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_retention_deletes_old_instances_on_start() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let id = "urn:ngsi-ld:WaterLevelSensor:old";
    let server = Server::start(dir.path());
    post_three_levels(&client, &server.base, id, "2099-01-01T00:00:00Z").await;
    server.kill9();
    // The sweep runs when the server starts, then hourly.
    let server = Server::start_with(dir.path(), &["--history-days", "30"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let values = level_history(&client, &server.base, id).await;
        if values == [3] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old instances are still there: {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscription whose @context is an array holding one URL is notified
/// with that URL in the Link header; after a restart it is replayed with the
/// same context, fetched again, and still notifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_with_a_context_url_notifies_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let (uri, mut rx) = receiver().await;
    let app = axum::Router::new().route(
        "/context.jsonld",
        axum::routing::get(|| async {
            json!({"@context": {"level": "https://data.guangzhou.example/water#level"}}).to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let context = format!("http://{}/context.jsonld", listener.local_addr().unwrap());
    let context_server = tokio::spawn(async move { axum::serve(listener, app).await });
    let update = |base: &str, v: f64| {
        client
            .post(format!(
                "{base}/entities/urn:ngsi-ld:WaterLevelSensor:u/attrs"
            ))
            .header("Content-Type", "application/ld+json")
            .body(
                json!({"@context": [&context], "level": {"type": "Property", "value": v}})
                    .to_string(),
            )
            .send()
    };
    let created;
    {
        let server = Server::start(dir.path());
        let r = client
            .post(format!("{}/subscriptions", server.base))
            .header("Content-Type", "application/ld+json")
            .body(
                json!({
                    "@context": [&context],
                    "id": "urn:ngsi-ld:Subscription:url",
                    "type": "Subscription",
                    "entities": [{"type": "WaterLevelSensor"}],
                    "watchedAttributes": ["level"],
                    "notification": {"endpoint": {"uri": uri}, "format": "keyValues"},
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = client
            .post(format!("{}/entities", server.base))
            .json(&entity("urn:ngsi-ld:WaterLevelSensor:u"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(update(&server.base, 1.0).await.unwrap().status(), 204);
        let n = notification(&mut rx).await;
        assert_eq!(n["data"][0]["level"], 1.0, "{n}");
        created = sys_attrs(&client, &server.base).await;
        server.kill9();
    }
    // The context's server is gone: the subscription kept its document.
    context_server.abort();
    let _ = context_server.await;
    let server = Server::start(dir.path());
    assert_eq!(
        sys_attrs(&client, &server.base).await,
        created,
        "the subscription and its createdAt/modifiedAt survive"
    );
    assert_eq!(update(&server.base, 2.0).await.unwrap().status(), 204);
    let n = notification(&mut rx).await;
    assert_eq!(
        n["data"][0]["level"], 2.0,
        "compacted with the URL's context: {n}"
    );
}

/// The createdAt and modifiedAt of the subscription of
/// [`a_subscription_with_a_context_url_notifies_after_a_restart`].
async fn sys_attrs(client: &reqwest::Client, base: &str) -> (Value, Value) {
    let r = client
        .get(format!(
            "{base}/subscriptions/urn:ngsi-ld:Subscription:url?options=sysAttrs"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["createdAt"].is_string(), "{body}");
    (body["createdAt"].clone(), body["modifiedAt"].clone())
}

/// A context source registration, made with an inline @context and then
/// updated without one, reads back the same after SIGKILL and a restart;
/// a deleted one stays deleted; a subscription to registrations is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let kept = "urn:ngsi-ld:ContextSourceRegistration:water-bureau";
    let gone = "urn:ngsi-ld:ContextSourceRegistration:gone";
    let register = |base: String, id: &'static str| {
        client
            .post(format!("{base}/csourceRegistrations"))
            .header("Content-Type", "application/ld+json")
            .header("NGSILD-Tenant", "panyu")
            .body(
                json!({
                    "@context": [{"level": "https://data.guangzhou.example/water#level"}],
                    "id": id,
                    "type": "ContextSourceRegistration",
                    "information": [{"entities": [{"type": "WaterLevelSensor"}],
                                     "propertyNames": ["level"]}],
                    "endpoint": "http://water.guangzhou.example/ngsi-ld",
                    "expiresAt": "2099-01-01T00:00:00Z",
                })
                .to_string(),
            )
            .send()
    };
    let read = |base: String| {
        client
            .get(format!(
                "{base}/csourceRegistrations/{kept}?options=sysAttrs"
            ))
            .header("NGSILD-Tenant", "panyu")
            .send()
    };
    let read_sub = |base: String| {
        client
            .get(format!(
                "{base}/csourceSubscriptions/urn:ngsi-ld:Subscription:water-sources"
            ))
            .header("NGSILD-Tenant", "panyu")
            .send()
    };
    let before: Value;
    {
        let server = Server::start(dir.path());
        for id in [kept, gone] {
            let r = register(server.base.clone(), id).await.unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
        let r = client
            .patch(format!("{}/csourceRegistrations/{kept}", server.base))
            .header("NGSILD-Tenant", "panyu")
            .json(
                &json!({"endpoint": "http://water2.guangzhou.example/ngsi-ld", "expiresAt": null}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        let r = client
            .delete(format!("{}/csourceRegistrations/{gone}", server.base))
            .header("NGSILD-Tenant", "panyu")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = client
            .post(format!("{}/csourceSubscriptions", server.base))
            .header("NGSILD-Tenant", "panyu")
            .header("Content-Type", "application/ld+json")
            .body(
                json!({
                    "@context": [{"level": "https://data.guangzhou.example/water#level"}],
                    "id": "urn:ngsi-ld:Subscription:water-sources",
                    "type": "Subscription",
                    "entities": [{"type": "WaterLevelSensor"}],
                    "watchedAttributes": ["level"],
                    "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        // The registration it matches is notified at once, to a receiver
        // that is not there: wait for the failure to be counted, and for
        // the status writer (once a second).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sub: Value = read_sub(server.base.clone())
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if sub["notification"]["timesFailed"] == json!(1) {
                break;
            }
            assert!(Instant::now() < deadline, "no failed delivery: {sub}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        before = read(server.base.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            before["information"][0]["propertyNames"],
            json!(["https://data.guangzhou.example/water#level"]),
            "{before}"
        );
        server.kill9();
    }
    let server = Server::start(dir.path());
    let after: Value = read(server.base.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, before);
    let sub: Value = read_sub(server.base.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sub["watchedAttributes"],
        json!(["https://data.guangzhou.example/water#level"]),
        "{sub}"
    );
    // Its delivery status too.
    assert_eq!(sub["notification"]["timesSent"], json!(1), "{sub}");
    assert_eq!(sub["notification"]["timesFailed"], json!(1), "{sub}");
    assert_eq!(sub["notification"]["status"], json!("failed"), "{sub}");
    assert!(after.get("expiresAt").is_none(), "{after}");
    let url = format!("{}/csourceRegistrations/{gone}", server.base);
    assert_eq!(status_of(&client, &url, Some("panyu")).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_limit_flag_cuts_long_histories() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let id = "urn:ngsi-ld:WaterLevelSensor:cut";
    let server = Server::start_with(dir.path(), &["--temporal-limit", "2"]);
    post_three_levels(&client, &server.base, id, "2020-01-03T00:00:00Z").await;
    let r = client
        .get(format!(
            "{}/temporal/entities/{id}?options=temporalValues",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        "date-time 2020-01-01T00:00:00Z-2020-01-02T00:00:00Z/*"
    );
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["level"]["values"].as_array().map(Vec::len), Some(2));
}

/// Creates temporal entity `id` with three `level` instances, observed on
/// 2020-01-01, 2020-01-02 and at `last_at`.
async fn post_three_levels(client: &reqwest::Client, base: &str, id: &str, last_at: &str) {
    let level =
        |value: i64, at: &str| json!({"type": "Property", "value": value, "observedAt": at});
    let r = client
        .post(format!("{base}/temporal/entities"))
        .json(&json!({
            "id": id,
            "type": "WaterLevelSensor",
            "level": [level(1, "2020-01-01T00:00:00Z"), level(2, "2020-01-02T00:00:00Z"), level(3, last_at)]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Transient data (clause 4.22) expires across a restart: the store's
/// index finds, on loading, what falls due while the server was down, in
/// every tenant.
#[tokio::test]
async fn what_expires_while_the_server_is_down_is_removed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let soon = ngsi_model::time::format_micros(ngsi_model::time::now_micros() + 1_500_000);
    let id = "urn:ngsi-ld:WaterLevelSensor:transient";
    {
        let server = Server::start(dir.path());
        for tenant in ["", "panyu"] {
            let mut e = entity(id);
            e["expiresAt"] = json!(soon);
            let mut req = client.post(format!("{}/entities", server.base)).json(&e);
            if !tenant.is_empty() {
                req = req.header("NGSILD-Tenant", tenant);
            }
            assert_eq!(req.send().await.unwrap().status(), 201);
        }
        server.kill9();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = Server::start(dir.path());
    for tenant in ["", "panyu"] {
        let start = Instant::now();
        loop {
            let mut req = client.get(format!("{}/entities/{id}", server.base));
            if !tenant.is_empty() {
                req = req.header("NGSILD-Tenant", tenant);
            }
            let status = req.send().await.unwrap().status();
            if status == 404 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{tenant:?}: still there"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// GET `path` on snapshot `snapshot` of tenant `tenant`.
async fn on_snapshot(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    snapshot: &str,
    path: &str,
) -> (u16, Value) {
    let r = client
        .get(format!("{base}{path}"))
        .header("NGSILD-Tenant", tenant)
        .header("NGSILD-Snapshot", snapshot)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn snapshots_and_what_they_hold_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let (tenant, kept, deleted) = (
        "liwan",
        "urn:ngsi-ld:Snapshot:kept",
        "urn:ngsi-ld:Snapshot:deleted",
    );
    let id = "urn:ngsi-ld:WaterLevelSensor:snap";
    let snapshot = |sid: &str| {
        json!({"id": sid, "type": "Snapshot", "snapshotPriority": 7,
               "snapshotQueries": [{"type": "Query", "entities": [{"type": "WaterLevelSensor"}]}]})
    };
    {
        let server = Server::start(dir.path());
        let r = client
            .post(format!("{}/entities", server.base))
            .header("NGSILD-Tenant", tenant)
            .json(&entity(id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for sid in [kept, deleted] {
            let r = client
                .post(format!("{}/snapshots", server.base))
                .header("NGSILD-Tenant", tenant)
                .json(&snapshot(sid))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        // Wait until both hold the entity, then delete one.
        for sid in [kept, deleted] {
            let start = Instant::now();
            while on_snapshot(
                &client,
                &server.base,
                tenant,
                sid,
                &format!("/entities/{id}"),
            )
            .await
            .0 != 200
            {
                assert!(start.elapsed() < Duration::from_secs(5), "{sid} not filled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let r = client
            .delete(format!("{}/snapshots/{deleted}", server.base))
            .header("NGSILD-Tenant", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        // The live entity changes after the snapshot was taken.
        let r = client
            .delete(format!("{}/entities/{id}", server.base))
            .header("NGSILD-Tenant", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        server.kill9();
    }
    let server = Server::start(dir.path());
    let r = client
        .get(format!("{}/snapshots/{kept}", server.base))
        .header("NGSILD-Tenant", tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["snapshotStatus"], "success", "{doc}");
    assert_eq!(doc["snapshotPriority"], 7);
    let (status, e) = on_snapshot(
        &client,
        &server.base,
        tenant,
        kept,
        &format!("/entities/{id}"),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["id"], id);
    let (status, _) = on_snapshot(
        &client,
        &server.base,
        tenant,
        deleted,
        "/entities?type=WaterLevelSensor",
    )
    .await;
    assert_eq!(status, 404);
    let r = client
        .get(format!("{}/entities/{id}", server.base))
        .header("NGSILD-Tenant", tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The subscriptions a server holds, once `ready` accepts them (within 10 s).
async fn subscriptions_when(
    client: &reqwest::Client,
    base: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let list: Value = client
            .get(format!("{base}/subscriptions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = list.as_array().cloned().unwrap_or_default();
        if ready(&list) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the subscriptions never became as expected: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscription's copy at a registered broker outlives kill -9 of the
/// broker that made it: after the restart it is neither made twice nor
/// forgotten, and what the source notifies still reaches the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_copies_at_sources_survive_kill_9() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let (uri, mut rx) = receiver().await;
    // a restarts on the port its copies name.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://{listen}");
    let a_args = ["--public-url", public.as_str(), "--source-alias", "a"];
    let b = Server::start_with(dir_b.path(), &["--source-alias", "b"]);
    let id = "urn:ngsi-ld:WaterLevelSensor:far";
    let r = client
        .post(format!("{}/entities", b.base))
        .json(&entity(id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub = "urn:ngsi-ld:Subscription:levels";
    let copy_id = {
        let a = Server::start_on(dir_a.path(), &listen, &a_args);
        let registration = json!({
            "id": "urn:ngsi-ld:ContextSourceRegistration:b",
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "WaterLevelSensor"}]}],
            "endpoint": b.base.trim_end_matches("/ngsi-ld/v1"),
            "contextSourceAlias": "b",
        });
        let r = client
            .post(format!("{}/csourceRegistrations", a.base))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = client
            .post(format!("{}/subscriptions", a.base))
            .json(&json!({"id": sub, "type": "Subscription",
                "entities": [{"type": "WaterLevelSensor"}], "watchedAttributes": ["level"],
                "notification": {"endpoint": {"uri": uri}, "format": "keyValues"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let copies = subscriptions_when(&client, &b.base, |l| l.len() == 1).await;
        let copy_id = copies[0]["id"].as_str().unwrap().to_string();
        a.kill9();
        copy_id
    };
    let a = Server::start_on(dir_a.path(), &listen, &a_args);
    // Give the restarted relay time to act, then look: still the one copy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copies = subscriptions_when(&client, &b.base, |l| l.len() == 1).await;
    assert_eq!(copies[0]["id"], json!(copy_id));
    let r = client
        .patch(format!("{}/entities/{id}/attrs/level", b.base))
        .json(&json!({"type": "Property", "value": 4.2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let got = notification(&mut rx).await;
    assert_eq!(got["subscriptionId"], sub, "{got}");
    assert_eq!(got["data"][0]["level"], 4.2);
    drop(a);
}

/// Runs `wuyang ARGS` to completion (a minute at most) and returns its exit
/// status, stdout and stderr.
async fn wuyang(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wuyang"))
            .args(&args)
            .env("WUYANG_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("wuyang {args:?} did not finish within a minute"))
    .expect("run wuyang");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `wuyang backup --data-dir DIR --to FILE`.
async fn backup(dir: &std::path::Path, to: &std::path::Path) -> (bool, String, String) {
    let args = [
        os("backup"),
        os("--data-dir"),
        dir.as_os_str(),
        os("--to"),
        to.as_os_str(),
    ];
    wuyang(&args).await
}

/// `wuyang restore --from FILE --data-dir DIR [--replace]`.
async fn restore(
    from: &std::path::Path,
    dir: &std::path::Path,
    replace: bool,
) -> (bool, String, String) {
    let mut args = vec![
        os("restore"),
        os("--from"),
        from.as_os_str(),
        os("--data-dir"),
        dir.as_os_str(),
    ];
    if replace {
        args.push(os("--replace"));
    }
    wuyang(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let first = Server::start(dir.path());
    let create = |id: &str| {
        client
            .post(format!("{}/entities", first.base))
            .json(&entity(id))
            .send()
    };
    assert_eq!(
        create("urn:ngsi-ld:WaterLevelSensor:a")
            .await
            .unwrap()
            .status(),
        201
    );

    let (ok, _, stderr) = wuyang(&[
        os("serve"),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        dir.path().as_os_str(),
    ])
    .await;
    assert!(!ok, "a second server started on a directory in use");
    let pid = first.child.id().to_string();
    assert!(
        stderr.contains("in use") && stderr.contains(&pid),
        "the refusal should name the holder (pid {pid}): {stderr}"
    );
    // The first server is untouched and goes on.
    assert_eq!(
        create("urn:ngsi-ld:WaterLevelSensor:b")
            .await
            .unwrap()
            .status(),
        201
    );

    // The kernel drops the lock with the process, even on kill -9.
    first.kill9();
    let second = Server::start(dir.path());
    for id in ["a", "b"] {
        let r = client
            .get(format!(
                "{}/entities/urn:ngsi-ld:WaterLevelSensor:{id}",
                second.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "entity {id}");
    }
}

/// A backup taken while writers keep the server busy holds every write
/// acknowledged before it began (and only writes that were sent), with the
/// tenants, history and subscriptions; it restores into a new directory
/// that a server then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_what_was_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = server.base.clone();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();

    // Something of every kind besides entities: a tenant with a
    // subscription in it, and history.
    let r = client
        .post(format!("{base}/subscriptions"))
        .header("NGSILD-Tenant", "water")
        .json(&json!({
            "id": "urn:ngsi-ld:Subscription:levels",
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}
        }))
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Writers create sensors and raise their levels: `acked` is what the
    // server acknowledged, `sent` the highest level each writer sent.
    let acked: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let sent: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, base) = (client.clone(), base.clone());
        let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("urn:ngsi-ld:WaterLevelSensor:w{w}-{n}");
                n += 1;
                sent.lock().insert(id.clone(), 0);
                let r = client
                    .post(format!("{base}/entities"))
                    .json(&entity(&id))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                acked.lock().insert(id.clone(), 0);
                for level in 1..=2i64 {
                    sent.lock().insert(id.clone(), level);
                    let r = client
                        .patch(format!("{base}/entities/{id}/attrs/level"))
                        .json(&json!({"type": "Property", "value": level}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 204);
                    acked.lock().insert(id.clone(), level);
                }
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().len() < 200 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = acked.lock().clone();
    let file = out.path().join("city.backup");
    let (ok, stdout, stderr) = backup(dir.path(), &file).await;
    assert!(ok, "backup failed: {stdout} {stderr}");
    assert!(stdout.contains("backed up"), "{stdout}");
    assert!(stderr.contains("copied"), "no progress shown: {stderr}");
    let acked_during = acked.lock().len() - before.len();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let sent = sent.lock().clone();
    server.kill9();
    assert!(before.len() >= 50, "too small a load: {}", before.len());

    // A backup never overwrites.
    let (ok, _, stderr) = backup(dir.path(), &file).await;
    assert!(!ok && stderr.contains("exists already"), "{stderr}");

    let restored = out.path().join("restored");
    let (ok, stdout, stderr) = restore(&file, &restored, false).await;
    assert!(ok, "restore failed: {stdout} {stderr}");
    assert!(stdout.contains("restored"), "{stdout}");

    let server = Server::start(&restored);
    let mut found: HashMap<String, i64> = HashMap::new();
    loop {
        let r = client
            .get(format!(
                "{}/entities?type=WaterLevelSensor&limit=1000&offset={}",
                server.base,
                found.len()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page: Vec<Value> = r.json().await.unwrap();
        if page.is_empty() {
            break;
        }
        for e in page {
            found.insert(
                e["id"].as_str().unwrap().to_string(),
                e["level"]["value"].as_i64().unwrap(),
            );
        }
    }
    for (id, level) in &before {
        let held = found
            .get(id)
            .unwrap_or_else(|| panic!("{id}, acknowledged before the backup, is not in it"));
        assert!(
            held >= level,
            "{id}: acknowledged {level} before the backup, holds {held}"
        );
    }
    for (id, level) in &found {
        let max = sent
            .get(id)
            .unwrap_or_else(|| panic!("{id} was never sent"));
        assert!(
            level <= max,
            "{id}: holds {level}, but {max} was the most sent"
        );
    }
    eprintln!(
        "{} acknowledged before the backup, {acked_during} during it, {} in it",
        before.len(),
        found.len()
    );
    // History and the tenant's subscription came along.
    let (id, level) = before.iter().max_by_key(|(_, l)| **l).unwrap();
    let values = level_history(&client, &server.base, id).await;
    assert!(values.len() as i64 > *level, "{values:?}");
    let url = format!(
        "{}/subscriptions/urn:ngsi-ld:Subscription:levels",
        server.base
    );
    assert_eq!(status_of(&client, &url, Some("water")).await, 200);

    // Restoring where a server runs is refused; `--replace` moves the
    // database there aside once the server is gone.
    let (ok, _, stderr) = restore(&file, &restored, true).await;
    assert!(!ok && stderr.contains("in use"), "{stderr}");
    drop(server);
    let (ok, _, stderr) = restore(&file, &restored, false).await;
    assert!(!ok && stderr.contains("--replace"), "{stderr}");
    let (ok, stdout, stderr) = restore(&file, &restored, true).await;
    assert!(ok, "{stdout} {stderr}");
    let aside = std::fs::read_dir(&restored)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".replaced-"))
        .count();
    assert!(aside >= 1, "the replaced database was not kept: {stdout}");

    // What is not a backup is refused before anything is touched.
    let junk = out.path().join("junk.db");
    std::fs::write(&junk, b"a shopping list, not a database").unwrap();
    let (ok, _, stderr) = restore(&junk, &restored, true).await;
    assert!(!ok && stderr.contains("junk.db"), "{stderr}");
    let server = Server::start(&restored);
    let r = client
        .get(format!(
            "{}/entities?type=WaterLevelSensor&count=true&limit=0",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["NGSILD-Results-Count"].to_str().unwrap(),
        found.len().to_string()
    );
}

/// /metrics tells an operator how much disk the database and its WAL take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_the_disk_the_database_takes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    for n in 0..3 {
        let id = format!("urn:ngsi-ld:WaterLevelSensor:m{n}");
        let r = client
            .post(format!("{}/entities", server.base))
            .json(&entity(&id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let origin = server.base.trim_end_matches("/ngsi-ld/v1");
    let text = client
        .get(format!("{origin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(gauge("wuyang_store_entities"), 3);
    let on_disk = |file: &str| std::fs::metadata(dir.path().join(file)).unwrap().len();
    assert_eq!(gauge("wuyang_store_database_bytes"), on_disk("wuyang.db"));
    let wal = gauge("wuyang_store_wal_bytes");
    assert!(wal > 0, "three commits wrote no WAL");
    assert!(wal <= on_disk("wuyang.db-wal"), "{wal}");
}

/// A stored subscription that cannot be restored at start-up keeps its id:
/// reading it says so, a create with its id is refused rather than written
/// over it, deleting it frees the id, and one whose @context server was
/// down comes back by itself once the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_cannot_be_restored_keeps_its_id_until_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let (uri, _rx) = receiver().await;
    let context_app = || {
        axum::Router::new().route(
            "/context.jsonld",
            axum::routing::get(|| async {
                json!({"@context": {"level": "https://data.guangzhou.example/water#level"}})
                    .to_string()
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let context_addr = listener.local_addr().unwrap();
    let context = format!("http://{context_addr}/context.jsonld");
    let app = context_app();
    let context_server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (remote, broken) = (
        "urn:ngsi-ld:Subscription:remote-context",
        "urn:ngsi-ld:Subscription:broken",
    );
    let subscription = |id: &str, context: &str| {
        json!({
            "@context": [context],
            "id": id,
            "type": "Subscription",
            "entities": [{"type": "WaterLevelSensor"}],
            "watchedAttributes": ["level"],
            "notification": {"endpoint": {"uri": &uri}},
        })
        .to_string()
    };
    let create = |base: String, body: String| {
        client
            .post(format!("{base}/subscriptions"))
            .header("Content-Type", "application/ld+json")
            .body(body)
            .send()
    };
    let core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";
    {
        let server = Server::start(dir.path());
        for (id, ctx) in [(remote, context.as_str()), (broken, core)] {
            let r = create(server.base.clone(), subscription(id, ctx))
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
        server.kill9();
    }
    // One record loses the copy of its @context (as records made before
    // copies were kept), the other gets a request that no longer parses.
    {
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        let changed = db
            .execute(
                "UPDATE records SET value = json_remove(value, '$.documents') \
                 WHERE collection = 'subscriptions' AND key = ?1",
                [remote],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let changed = db
            .execute(
                "UPDATE records SET value = json_set(value, '$.requests[0].body.q', '((') \
                 WHERE collection = 'subscriptions' AND key = ?1",
                [broken],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    context_server.abort();
    let _ = context_server.await;
    let server = Server::start_with(dir.path(), &["--restore-retry-s", "1"]);
    let url = |id: &str| format!("{}/subscriptions/{id}", server.base);
    for id in [remote, broken] {
        assert_eq!(status_of(&client, &url(id), None).await, 500, "{id}");
    }
    let r = create(server.base.clone(), subscription(broken, core))
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the stored record is not written over");
    let r = client.delete(url(broken)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = create(server.base.clone(), subscription(broken, core))
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(status_of(&client, &url(broken), None).await, 200);

    // The @context server answers again, on the same address.
    let listener = tokio::net::TcpListener::bind(context_addr).await.unwrap();
    let app = context_app();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(url(remote)).send().await.unwrap();
        if r.status() == 200 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["id"], remote, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restored after the context came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
