//! `wuyang sim`: runs the city simulator against any NGSI-LD broker through
//! its public API, and the driver that `wuyang demo` shares.
//!
//! The city is loaded with batch upserts of at most 1,000 entities; then the
//! simulator's updates go out as `POST /entityOperations/upsert?options=update`
//! batches over a few keep-alive connections. A thread steps the simulator
//! at the pace the options ask for; the sender tasks post its batches.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

/// Options of the simulator (shared by `wuyang sim` and `wuyang demo`).
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Seed of the simulation: the same seed replays the same city life.
    #[arg(long, env = "WUYANG_SIM_SEED", default_value_t = 2026)]
    pub seed: u64,
    /// Speed-up of the simulated clock over real time.
    #[arg(long, env = "WUYANG_SIM_SPEED", default_value_t = 10.0)]
    pub speed: f64,
    /// Updates per second to send: the clock then runs as fast as needed to
    /// produce them (at least --speed), and never sends more.
    #[arg(long, env = "WUYANG_SIM_RATE")]
    pub rate: Option<f64>,
    /// How much of the city: small (old city, ~12k entities), medium (the
    /// four central districts), full (the built-up city, ~150k entities).
    #[arg(long, env = "WUYANG_SIM_SIZE", default_value = "small", value_parser = ["small", "medium", "full"])]
    pub size: String,
    /// normal, or typhoon (the typhoon-and-flood drill, from the start).
    #[arg(long, env = "WUYANG_SIM_SCENARIO", default_value = "normal", value_parser = ["normal", "typhoon"])]
    pub scenario: String,
    /// Simulated start time, RFC 3339 (e.g. 2026-07-01T07:00:00+08:00);
    /// default: now. The same seed and start replay the same events.
    #[arg(long, env = "WUYANG_SIM_START")]
    pub start: Option<String>,
    /// Connections used to send updates.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// Settings of `wuyang sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimCommand {
    /// Base URL of the broker, e.g. http://localhost:1026.
    #[arg(long, env = "WUYANG_SIM_TARGET")]
    pub target: String,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// Where to send: `host:port` and a path prefix.
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    prefix: String,
}

impl Target {
    /// Parses `http://host:port[/prefix]`.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .context("the target must be an http:// URL")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        anyhow::ensure!(!authority.is_empty(), "the target has no host");
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let prefix = if path.ends_with("/ngsi-ld/v1") {
            path.to_string()
        } else {
            format!("{path}/ngsi-ld/v1")
        };
        Ok(Target { authority, prefix })
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .with_context(|| format!("connecting to {}", target.authority))?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request; reconnects once if the connection was lost.
async fn send(
    conn: &mut Option<Sender>,
    target: &Target,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    for attempt in 0..2 {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(connect(target).await?);
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", target.prefix))
            .header("host", &target.authority);
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .header("content-length", body.len());
        }
        let req = req.body(Full::new(body.clone()))?;
        match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let bytes = resp.into_body().collect().await?.to_bytes();
                return Ok((status, headers, bytes));
            }
            Err(e) if attempt == 0 => {
                tracing::debug!(error = %e, "reconnecting");
                *conn = None;
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("request failed")
}

/// Counts the errors of a batch answer (207 lists them).
fn batch_errors(status: StatusCode, body: &[u8]) -> (u64, Option<String>) {
    if status == StatusCode::MULTI_STATUS {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let errors = v["errors"].as_array().map_or(1, Vec::len) as u64;
        let first = v["errors"].get(0).map(|e| e.to_string());
        (errors, first)
    } else if status.is_success() {
        (0, None)
    } else {
        (
            1,
            Some(format!("{status}: {}", String::from_utf8_lossy(body))),
        )
    }
}

/// Live counters of a run.
#[derive(Debug, Default)]
pub struct Live {
    /// Entity updates acknowledged by the broker.
    pub sent: AtomicU64,
    /// Updates the broker rejected.
    pub errors: AtomicU64,
    /// Simulated time (Unix ms).
    pub sim_ms: AtomicI64,
    /// Congested segments at the last count.
    pub congested: AtomicU64,
    /// Flooded segments now.
    pub flooded: AtomicU64,
    /// Urban-management cases so far.
    pub cases: AtomicU64,
    /// First error seen.
    pub first_error: Mutex<Option<String>>,
    /// Set to stop.
    pub stop: AtomicBool,
    /// Set to start the typhoon drill now.
    pub typhoon: AtomicBool,
}

/// Builds the city of `size`, printing how long it took.
pub fn build_city(size: &str) -> anyhow::Result<city::City> {
    let t = Instant::now();
    let size: city::Size = size.parse()?;
    let c = city::City::build(size)?;
    println!(
        "city model ({}): {} districts, {} streets, {} communities, {} unit grids, {} road segments, {} vehicles, built in {:.1} s",
        size.as_str(),
        c.admin.districts.len(),
        c.admin.streets.len(),
        c.admin.communities.len(),
        c.grids.len(),
        c.roads.segments.len(),
        c.assets.vehicles.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(c)
}

impl SimArgs {
    /// The simulated start time (Unix ms).
    /// Checks the settings before anything starts: the start time and a
    /// positive speed.
    pub fn check(&self) -> anyhow::Result<()> {
        self.start_ms()?;
        if !(self.speed.is_finite() && self.speed > 0.0) {
            anyhow::bail!("--speed must be a number greater than 0");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            anyhow::bail!("--rate must be a number greater than 0");
        }
        Ok(())
    }

    pub fn start_ms(&self) -> anyhow::Result<i64> {
        match &self.start {
            Some(s) => city::ngsi::parse_iso(s)
                .with_context(|| format!("--start {s:?} is not an RFC 3339 time")),
            None => Ok(now_ms() / 1000 * 1000),
        }
    }
}

/// The wall clock, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Loads the city's entities in batches of 1,000 (upsert). With
/// `skip_existing`, a type whose entities are all already there is skipped,
/// so a restarted demo resumes without reloading. Returns the count loaded.
pub async fn load_city(
    target: &Target,
    entities: Vec<Value>,
    connections: usize,
    skip_existing: bool,
) -> anyhow::Result<usize> {
    let started = Instant::now();
    let mut conn = None;
    // Group by type, in load order.
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for e in entities {
        let t = e["type"].as_str().unwrap_or_default().to_string();
        match groups.last_mut() {
            Some((gt, v)) if *gt == t => v.push(e),
            _ => groups.push((t, vec![e])),
        }
    }
    let mut todo: Vec<Value> = Vec::new();
    let mut skipped = 0;
    for (t, v) in groups {
        if skip_existing {
            let (status, headers, _) = send(
                &mut conn,
                target,
                Method::GET,
                &format!("/entities?type={t}&limit=0&count=true"),
                Bytes::new(),
            )
            .await?;
            let have: usize = headers
                .get("ngsild-results-count")
                .and_then(|h| h.to_str().ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status.is_success() && have >= v.len() {
                skipped += v.len();
                continue;
            }
        }
        todo.extend(v);
    }
    if skipped > 0 {
        println!("city already loaded: {skipped} entities kept from the previous run");
    }
    let total = todo.len();
    if total == 0 {
        return Ok(0);
    }
    // Batches of at most 1,000 entities and 4 MiB (half the default body
    // limit: district boundaries are large).
    let mut chunks: Vec<(Bytes, u64)> = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut n = 0u64;
    for e in &todo {
        let doc = serde_json::to_vec(e)?;
        if n > 0 && (n == 1000 || body.len() + doc.len() + 2 > 4 << 20) {
            body.push(b']');
            chunks.push((Bytes::from(std::mem::take(&mut body)), n));
            n = 0;
        }
        body.push(if n == 0 { b'[' } else { b',' });
        body.extend_from_slice(&doc);
        n += 1;
    }
    if n > 0 {
        body.push(b']');
        chunks.push((Bytes::from(body), n));
    }
    let chunks = Arc::new(Mutex::new(chunks.into_iter().rev().collect::<Vec<_>>()));
    let done = Arc::new(AtomicU64::new(0));
    let tty = std::io::stderr().is_terminal();
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, 8) {
        let (chunks, done, target) = (chunks.clone(), done.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let Some((body, n)) = chunks.lock().unwrap_or_else(PoisonError::into_inner).pop()
                else {
                    break;
                };
                let (status, _, resp) = send(
                    &mut conn,
                    &target,
                    Method::POST,
                    "/entityOperations/upsert",
                    body,
                )
                .await?;
                let (errors, first) = batch_errors(status, &resp);
                if errors > 0 {
                    anyhow::bail!("loading the city: {}", first.unwrap_or_default());
                }
                let before = done.fetch_add(n, Ordering::Relaxed);
                progress(before as usize, (before + n) as usize, total, tty);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    if tty {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "city loaded: {total} entities in {secs:.1} s ({:.0} entities/s)",
        total as f64 / secs.max(1e-9)
    );
    Ok(total)
}

fn progress(before: usize, done: usize, total: usize, tty: bool) {
    let pct = done * 100 / total.max(1);
    let decile = |n: usize| n * 10 / total.max(1);
    if tty {
        let bar = "#".repeat(pct / 4) + &" ".repeat(25 - pct / 4);
        eprint!("\rloading the city [{bar}] {done}/{total} ({pct}%)");
        let _ = std::io::stderr().flush();
    } else if decile(before) != decile(done) {
        eprintln!("loading the city: {done}/{total} entities ({pct}%)");
    }
}

/// Runs the simulator against `target` until `live.stop` is set (or the
/// duration passes), sending its updates.
pub async fn run_sim(
    target: &Target,
    city: Arc<city::City>,
    args: &SimArgs,
    live: Arc<Live>,
) -> anyhow::Result<()> {
    let scenario: sim::Scenario = args.scenario.parse()?;
    let mut cfg = sim::SimConfig::new(args.seed, args.start_ms()?);
    cfg.scenario = scenario;
    let (tx, rx) = tokio::sync::mpsc::channel::<(Bytes, u64)>(args.connections.max(1) * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut senders = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (rx, live, target) = (rx.clone(), live.clone(), target.clone());
        senders.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((body, n)) = next else {
                    break;
                };
                match send(
                    &mut conn,
                    &target,
                    Method::POST,
                    "/entityOperations/upsert?options=update",
                    body,
                )
                .await
                {
                    Ok((status, _, resp)) => {
                        let (errors, first) = batch_errors(status, &resp);
                        live.sent.fetch_add(n - errors.min(n), Ordering::Relaxed);
                        live.errors.fetch_add(errors, Ordering::Relaxed);
                        if let Some(f) = first {
                            live.first_error
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_or_insert(f);
                        }
                    }
                    Err(e) => {
                        live.errors.fetch_add(n, Ordering::Relaxed);
                        live.first_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e.to_string());
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }));
    }
    let speed = args.speed.max(0.0);
    let rate = args.rate;
    let duration = args.duration;
    let producer_live = live.clone();
    let producer = std::thread::Builder::new()
        .name("simulator".into())
        .spawn(move || {
            let live = producer_live;
            let mut sim = sim::Sim::new(city, cfg);
            let started = Instant::now();
            let mut ticks: f64 = 0.0;
            let mut produced: f64 = 0.0;
            let mut batch: Vec<Value> = Vec::new();
            let flush = |batch: &mut Vec<Value>| -> bool {
                if batch.is_empty() {
                    return true;
                }
                let n = batch.len() as u64;
                let body = serde_json::to_vec(&*batch)
                    .map(Bytes::from)
                    .unwrap_or_default();
                batch.clear();
                tx.blocking_send((body, n)).is_ok()
            };
            loop {
                if live.stop.load(Ordering::Relaxed) {
                    break;
                }
                let elapsed = started.elapsed().as_secs_f64();
                if duration.is_some_and(|d| elapsed >= d) {
                    break;
                }
                let behind_clock = ticks < speed * elapsed;
                let (want, can) = match rate {
                    Some(r) => (
                        behind_clock || produced < r * elapsed,
                        produced < r * elapsed + r * 0.05 + 1.0,
                    ),
                    None => (behind_clock, true),
                };
                if live.typhoon.swap(false, Ordering::Relaxed) {
                    sim.start_typhoon();
                    println!("typhoon drill started: the storm peaks in about 5 simulated hours");
                }
                if want && can {
                    let updates = sim.step();
                    ticks += 1.0;
                    produced += updates.len() as f64;
                    batch.extend(updates);
                    if batch.len() >= 500 && !flush(&mut batch) {
                        break;
                    }
                    if (ticks as u64).is_multiple_of(10) {
                        let s = sim.stats();
                        live.sim_ms.store(sim.now_ms(), Ordering::Relaxed);
                        live.congested
                            .store(s.congested_segments as u64, Ordering::Relaxed);
                        live.flooded
                            .store(s.flooded_segments as u64, Ordering::Relaxed);
                        live.cases.store(s.cases, Ordering::Relaxed);
                    }
                } else {
                    if !flush(&mut batch) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            flush(&mut batch);
        })?;
    let joined = tokio::task::spawn_blocking(move || producer.join()).await?;
    for s in senders {
        s.await?;
    }
    joined.map_err(|_| anyhow::anyhow!("the simulator thread panicked"))
}

/// Prints live figures every few seconds until `live.stop`.
pub async fn report(live: Arc<Live>, entities: impl Fn() -> Option<usize>) {
    let mut last = (Instant::now(), 0u64, live.sim_ms.load(Ordering::Relaxed));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    while !live.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = live.sent.load(Ordering::Relaxed);
        let now = Instant::now();
        let sim_ms = live.sim_ms.load(Ordering::Relaxed);
        let secs = now.duration_since(last.0).as_secs_f64();
        let rate = (sent - last.1) as f64 / secs;
        // The clock's effective speed-up, once two readings exist.
        let speed = if last.2 > 0 {
            format!(", {:.0}x", (sim_ms - last.2) as f64 / 1000.0 / secs)
        } else {
            String::new()
        };
        last = (now, sent, sim_ms);
        let local = city::ngsi::iso(sim_ms + sim::profile::UTC8_MS);
        let ents = entities().map_or(String::new(), |n| format!("{n} entities, "));
        println!(
            "[city {} local{speed}] {ents}{rate:.0} updates/s, {sent} sent, {} errors, {} congested segments, {} flooded, {} cases",
            &local[..16].replace('T', " "),
            live.errors.load(Ordering::Relaxed),
            live.congested.load(Ordering::Relaxed),
            live.flooded.load(Ordering::Relaxed),
            live.cases.load(Ordering::Relaxed),
        );
        if let Some(e) = live
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            println!("  first error: {e}");
        }
    }
}

/// Starts the typhoon drill when a line `typhoon` (or `t`) is typed, or on
/// SIGUSR1.
pub fn typhoon_on_demand(live: Arc<Live>) {
    let from_stdin = live.clone();
    let _ = std::thread::Builder::new()
        .name("drill-trigger".into())
        .spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                match line.trim() {
                    "" => {}
                    "t" | "typhoon" => from_stdin.typhoon.store(true, Ordering::Relaxed),
                    other => println!(
                        "unknown command `{other}`: type `typhoon` (or `t`) to start the drill, Ctrl-C stops"
                    ),
                }
            }
        });
    #[cfg(unix)]
    tokio::spawn(async move {
        if let Ok(mut s) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            while s.recv().await.is_some() {
                live.typhoon.store(true, Ordering::Relaxed);
            }
        }
    });
}

/// Stops `live` on Ctrl-C or SIGTERM.
pub async fn stop_on_signal(live: Arc<Live>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    println!("stopping: sending the last updates");
    live.stop.store(true, Ordering::Relaxed);
}

/// `wuyang sim`.
pub fn run(cmd: SimCommand) -> anyhow::Result<()> {
    cmd.sim.check()?;
    let target = Target::parse(&cmd.target)?;
    let city = Arc::new(build_city(&cmd.sim.size)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let entities = city.entities(cmd.sim.start_ms()?);
        load_city(&target, entities, cmd.sim.connections, true).await?;
        let live = Arc::new(Live::default());
        tokio::spawn(stop_on_signal(live.clone()));
        typhoon_on_demand(live.clone());
        let reporter = tokio::spawn(report(live.clone(), || None));
        println!(
            "simulating Guangzhou against {} (seed {}, speed {}x, scenario {}); type `typhoon` to start the drill, Ctrl-C stops",
            cmd.target, cmd.sim.seed, cmd.sim.speed, cmd.sim.scenario
        );
        run_sim(&target, city, &cmd.sim, live.clone()).await?;
        live.stop.store(true, Ordering::Relaxed);
        reporter.abort();
        let (sent, errors) = (
            live.sent.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
        );
        println!("simulator stopped: {sent} updates sent, {errors} errors");
        // Updates the broker did not take are lost: a script running the
        // simulator learns it from the exit status.
        if errors > 0 {
            let first = live
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            anyhow::bail!("{errors} updates were not accepted; the first error: {first}");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_to_authority_and_api_prefix() {
        let t = Target::parse("http://localhost:1026").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("localhost:1026", "/ngsi-ld/v1")
        );
        let t = Target::parse("http://broker/orion/ngsi-ld/v1/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("broker:80", "/orion/ngsi-ld/v1")
        );
        assert!(Target::parse("https://x").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn batch_answers_count_their_errors() {
        assert_eq!(batch_errors(StatusCode::NO_CONTENT, b"").0, 0);
        let body = br#"{"success": ["a"], "errors": [{"entityId": "b"}, {"entityId": "c"}]}"#;
        assert_eq!(batch_errors(StatusCode::MULTI_STATUS, body).0, 2);
        assert_eq!(batch_errors(StatusCode::BAD_REQUEST, b"{}").0, 1);
    }
}
