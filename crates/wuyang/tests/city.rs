//! `wuyang demo` and `wuyang sim` as processes: the living city arrives
//! through the public API, vehicles sit on roads, updates keep coming,
//! Ctrl-C stops cleanly and a second run resumes on the same data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// A free port on loopback, taken and held by the returned listener.
fn occupied_port() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wuyang"))
            .args(args)
            .env("WUYANG_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start wuyang");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    /// `wuyang serve` on a free port over `dir`, and its address.
    fn serve(dir: &std::path::Path) -> (Proc, String) {
        let serve = Proc::start(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        let addr = serve
            .wait_for("listening on ", 60)
            .replace("listening on ", "");
        (serve, addr)
    }

    /// Waits for a stdout line containing `needle` and returns it.
    fn wait_for(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no line with {needle:?} in {:?}",
            self.lines.lock().unwrap()
        );
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let r = reqwest::get(url).await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let body = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

async fn count(api: &str, t: &str) -> usize {
    let (_, h, _) = get(&format!("{api}/entities?type={t}&limit=0&count=true")).await;
    h["ngsild-results-count"].to_str().unwrap().parse().unwrap()
}

/// Metres between two lon/lat points (equirectangular, fine at city scale).
fn metres(a: &Value, b: &Value) -> f64 {
    let (ax, ay) = (a[0].as_f64().unwrap(), a[1].as_f64().unwrap());
    let (bx, by) = (b[0].as_f64().unwrap(), b[1].as_f64().unwrap());
    let k = (ay.to_radians()).cos();
    ((ax - bx) * k * 111_320.0).hypot((ay - by) * 110_770.0)
}

fn dist_to_segment(p: &Value, a: &Value, b: &Value) -> f64 {
    let ab = metres(a, b);
    let (pa, pb) = (metres(p, a), metres(p, b));
    if ab < 1e-6 {
        return pa;
    }
    // Heron: the height of the triangle over ab, unless the foot falls
    // outside the segment.
    if pa * pa > pb * pb + ab * ab || pb * pb > pa * pa + ab * ab {
        return pa.min(pb);
    }
    let s = (pa + pb + ab) / 2.0;
    let area = (s * (s - pa) * (s - pb) * (s - ab)).max(0.0).sqrt();
    2.0 * area / ab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_brings_guangzhou_to_life_and_resumes() {
    jsonld::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--speed",
        "20",
        "--seed",
        "3",
    ];
    let mut demo = Proc::start(&args);
    let addr = demo
        .wait_for("listening on ", 60)
        .replace("listening on ", "");
    let api = format!("http://{addr}/ngsi-ld/v1");
    demo.wait_for("Guangzhou is alive", 120);

    assert_eq!(count(&api, "District").await, 11);
    assert_eq!(count(&api, "Township").await, 178);
    assert_eq!(count(&api, "Community").await, 2851);
    let (_, _, yuexiu) = get(&format!("{api}/entities/urn:ngsi-ld:District:440104")).await;
    assert_eq!(yuexiu["population"]["value"], 1_038_643);
    assert_eq!(yuexiu["name"]["languageMap"]["zh"], "越秀区");

    // Let the city live a little, then check vehicles are on their roads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, vehicles) = get(&format!(
        "{api}/entities?type=Vehicle&limit=30&options=keyValues"
    ))
    .await;
    let vehicles = vehicles.as_array().unwrap();
    assert_eq!(vehicles.len(), 30);
    for v in vehicles {
        let seg = v["refRoadSegment"].as_str().unwrap();
        let (_, _, s) = get(&format!("{api}/entities/{seg}?options=keyValues")).await;
        let d = dist_to_segment(
            &v["location"]["coordinates"],
            &s["startPoint"]["coordinates"],
            &s["endPoint"]["coordinates"],
        );
        assert!(d < 2.0, "{} is {d} m off {seg}", v["id"]);
    }

    // Updates keep coming: a moving vehicle's modifiedAt changes.
    let (_, _, moving) = get(&format!(
        "{api}/entities?type=Vehicle&q=serviceStatus==%22onRoute%22&limit=1&options=sysAttrs"
    ))
    .await;
    let id = moving[0]["id"].as_str().unwrap().to_string();
    let before = moving[0]["location"]["modifiedAt"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, after) = get(&format!("{api}/entities/{id}?options=sysAttrs")).await;
    assert_ne!(after["location"]["modifiedAt"], before, "{id} did not move");
    let observed = |e: &Value| {
        ngsi_model::time::parse_datetime(e["location"]["observedAt"].as_str().unwrap()).unwrap()
    };
    let first_run = observed(&after);
    assert!(count(&api, "TrafficFlowObserved").await > 100);

    // The typhoon drill starts on demand.
    let pid = demo.child.id().to_string();
    Command::new("kill").args(["-USR1", &pid]).status().unwrap();
    demo.wait_for("typhoon drill started", 10);

    let status = demo.interrupt();
    assert!(status.success(), "demo exited with {status}");
    demo.wait_for("demo stopped", 10);

    // A second run on the same data resumes without reloading, its
    // simulated clock where the first one got to (at 20x it ran ahead of
    // real time): no instant of the history is simulated twice.
    let demo = Proc::start(&args);
    demo.wait_for("resuming the simulated clock at", 60);
    let addr = demo
        .wait_for("listening on ", 60)
        .replace("listening on ", "");
    demo.wait_for("city already loaded", 120);
    demo.wait_for("Guangzhou is alive", 60);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, again) = get(&format!(
        "http://{addr}/ngsi-ld/v1/entities/{id}?options=sysAttrs"
    ))
    .await;
    assert!(observed(&again) >= first_run, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_drives_a_separate_broker() {
    jsonld::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_serve, addr) = Proc::serve(dir.path());
    let status = Command::new(env!("CARGO_BIN_EXE_wuyang"))
        .args([
            "sim",
            "--target",
            &format!("http://{addr}"),
            "--duration",
            "3",
            "--scenario",
            "typhoon",
            "--start",
            "2026-07-01T07:00:00+08:00",
            "--speed",
            "50",
        ])
        .env("WUYANG_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let api = format!("http://{addr}/ngsi-ld/v1");
    assert_eq!(count(&api, "District").await, 11);
    assert!(count(&api, "Vehicle").await >= 400);
    // The observations are stamped in simulated time from --start.
    let (_, _, t) = get(&format!(
        "{api}/entities?type=TrafficFlowObserved&limit=1&options=keyValues"
    ))
    .await;
    assert!(
        t[0]["dateObserved"]
            .as_str()
            .unwrap()
            .starts_with("2026-06-30T23:")
    );
    let (_, _, w) = get(&format!(
        "{api}/entities?type=WaterObserved&limit=1&options=keyValues"
    ))
    .await;
    assert!(w[0]["height"].as_f64().unwrap() > 0.0);
}

/// Settings are checked before anything starts: no data directory is made
/// and the message names the setting.
#[test]
fn bad_simulator_settings_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never");
    for (flag, value) in [("--speed", "0"), ("--start", "yesterday"), ("--rate", "0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_wuyang"))
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!data.exists(), "{flag} {value} made the data directory");
    }
}

/// A data directory that cannot be made is named, with what failed.
#[test]
fn an_unusable_data_directory_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wuyang"))
        .env("RUST_BACKTRACE", "0")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("creating the data directory") && stderr.contains("a-file"),
        "{stderr}"
    );
}

/// `serve` and `demo` take their address before their data directory: a port
/// in use makes no directory and says which address.
#[test]
fn a_port_in_use_is_named_and_no_data_directory_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never");
    let held = occupied_port();
    let addr = held.local_addr().unwrap().to_string();
    for command in ["serve", "demo"] {
        let out = Command::new(env!("CARGO_BIN_EXE_wuyang"))
            .env("RUST_BACKTRACE", "0")
            .args([command, "--listen", &addr, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("binding") && stderr.contains(&addr),
            "{command}: {stderr}"
        );
        assert!(!data.exists(), "{command} made the data directory");
    }
}

/// The simulator answers a word it does not know with what it knows, and a
/// run whose updates the broker did not take ends with a failure status.
#[test]
fn the_simulator_reports_lost_updates_in_its_exit_status() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (mut serve, addr) = Proc::serve(dir.path());
    let mut sim = Proc::start(&[
        "sim",
        "--target",
        &format!("http://{addr}"),
        "--duration",
        "4",
        "--speed",
        "50",
    ]);
    sim.wait_for("simulating Guangzhou", 120);
    let stdin = sim.child.stdin.as_mut().unwrap();
    writeln!(stdin, "storm").unwrap();
    stdin.flush().unwrap();
    sim.wait_for("unknown command `storm`", 10);
    // The broker goes away under the running simulator.
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let status = sim.child.wait().unwrap();
    assert!(!status.success(), "{:?}", sim.lines.lock().unwrap());
}
