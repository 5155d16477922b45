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
        let mut child = Command::new(env!("CARGO_BIN_EXE_wuyang"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
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
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = server.base.clone();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();

    // Acknowledged state: created ids, and for each id the highest level
    // value whose update was acknowledged.
    let acked: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_millis(1500);
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
    // Kill the server while the writers are busy.
    tokio::time::sleep(Duration::from_millis(1000)).await;
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

    let server = Server::start(dir.path());
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_tenants_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    jsonld::install_tls_provider();
    let client = reqwest::Client::new();
    let hosted;
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
    let r = client
        .get(format!(
            "{}/entities/urn:ngsi-ld:WaterLevelSensor:tenant",
            server.base
        ))
        .header("NGSILD-Tenant", "panyu")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!(
            "{}/entities/urn:ngsi-ld:WaterLevelSensor:tenant",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
