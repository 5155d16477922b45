//! `wuyang bench`: the published Stellio load scenarios against a durable
//! Wuyang server, with a null handler measured in the same run as the HTTP
//! ceiling.
//!
//! The servers run as child processes (this binary's `serve` and
//! `null-server` subcommands) so that the load generator and the server are
//! separate processes on the same machine, as with wrk.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{Value, json};

/// The Link header naming the v1.7 core context, as the Stellio scenarios send.
const LINK_V17: &str = "<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.7.jsonld>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"";

/// Settings of the benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Requests per request/response scenario.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Entities loaded (by batch upsert) for the query scenarios.
    #[arg(long, default_value_t = 100_000)]
    pub entities: u64,
    /// Entities per batch upsert request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u64,
    /// Scenarios to run (comma separated): null, create, partial, update,
    /// upsert, query, relquery, federation, notify-http, notify-mqtt, notify-http-batch,
    /// notify-mqtt-batch, history, aggregate, wide, restart. Default: all.
    #[arg(long)]
    pub only: Option<String>,
    /// Whether the benchmarked server records history (`wuyang serve
    /// --history`); run the write scenarios both ways to see its cost.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub history: bool,
    /// Temporal instances ingested by the `history` scenario (batch upserts
    /// of 1,000 one-property entities).
    #[arg(long, default_value_t = 200_000)]
    pub history_instances: u64,
    /// Instances of the one attribute that the `aggregate` scenario
    /// aggregates.
    #[arg(long, default_value_t = 100_000)]
    pub aggregate_instances: u64,
    /// The size of the `wide` scenario's entities: the instances
    /// (datasetIds) of the first one's attribute, the attributes of the
    /// second.
    #[arg(long, default_value_t = 100_000)]
    pub wide_instances: u64,
    /// Durability of the benchmarked server (`full` or `normal`, as for
    /// `wuyang serve --sync`).
    #[arg(long, default_value = "full")]
    pub sync: String,
    /// Run against an already running broker at this address (host:port)
    /// instead of starting one; memory and restart figures are skipped.
    #[arg(long)]
    pub target: Option<SocketAddr>,
}

/// A running child server.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .env("WUYANG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("the server did not start: {line:?}");
        };
        Ok(Self {
            addr: addr.parse()?,
            child,
        })
    }

    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The template entity of the Stellio load scenarios: six properties (two
/// multi-instance with datasetId, one with a sub-property, all with
/// observedAt and unitCode), one relationship and one GeoProperty.
pub fn template_entity(id: &str, entity_type: &str, n: u64) -> Value {
    let observed = "2024-03-01T08:00:00Z";
    let lon = 113.25 + (n % 1000) as f64 * 0.0002;
    let lat = 23.08 + (n / 1000 % 1000) as f64 * 0.0002;
    json!({
        "id": id,
        "type": entity_type,
        "aProperty": {"type": "Property", "value": (n % 100) as f64, "observedAt": observed, "unitCode": "CEL"},
        "anotherProperty": {"type": "Property", "value": n % 50, "observedAt": observed, "unitCode": "C62"},
        "temperature": [
            {"type": "Property", "value": 20.5, "datasetId": "urn:ngsi-ld:Dataset:sensorA", "observedAt": observed, "unitCode": "CEL"},
            {"type": "Property", "value": 21.0, "datasetId": "urn:ngsi-ld:Dataset:sensorB", "observedAt": observed, "unitCode": "CEL"}
        ],
        "humidity": [
            {"type": "Property", "value": 60, "datasetId": "urn:ngsi-ld:Dataset:sensorA", "observedAt": observed, "unitCode": "P1"},
            {"type": "Property", "value": 62, "datasetId": "urn:ngsi-ld:Dataset:sensorB", "observedAt": observed, "unitCode": "P1"}
        ],
        "pressure": {"type": "Property", "value": 1013.2, "observedAt": observed, "unitCode": "A97",
            "accuracy": {"type": "Property", "value": 0.5, "observedAt": observed, "unitCode": "A97"}},
        "windSpeed": {"type": "Property", "value": 3.4, "observedAt": observed, "unitCode": "MTS"},
        "isPartOf": {"type": "Relationship", "object": format!("urn:ngsi-ld:Group:{}", n % 100)},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}
    })
}

/// The result of one load run.
struct LoadResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// A keep-alive HTTP/1.1 connection of the load generator.
pub(crate) type Connection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a keep-alive connection to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Connection> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends `req` and reads the whole answer: status and body.
pub(crate) async fn send(
    sender: &mut Connection,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    // A keep-alive connection takes the next request only once the
    // previous exchange is fully done.
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Sends `total` requests made by `make` over `connections` keep-alive
/// connections and measures each.
async fn load(
    addr: SocketAddr,
    connections: usize,
    total: u64,
    make: MakeRequest,
) -> anyhow::Result<LoadResult> {
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let counter = counter.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = make(i);
                sender.ready().await?;
                let t0 = Instant::now();
                let (status, body) = send(&mut sender, req).await?;
                latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if !(200..300).contains(&status) {
                    errors += 1;
                    if first_error.is_none() {
                        first_error = Some(format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                }
            }
            anyhow::Ok((latencies, errors, first_error))
        }));
    }
    let mut result = LoadResult {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        first_error: None,
    };
    for t in tasks {
        let (lat, errors, first) = t.await??;
        result.requests += lat.len() as u64;
        result.latencies_us.extend(lat);
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first;
        }
    }
    result.elapsed = started.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

pub(crate) fn request(
    method: Method,
    path: String,
    body: Option<&Value>,
    link: bool,
) -> Request<Full<Bytes>> {
    let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).expect("json")));
    raw_request(method, path, bytes, link)
}

/// A request with a body already serialized.
fn raw_request(
    method: Method,
    path: String,
    body: Option<Bytes>,
    link: bool,
) -> Request<Full<Bytes>> {
    let has_body = body.is_some();
    let bytes = body.unwrap_or_default();
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench");
    if has_body {
        builder = builder
            .header("content-type", "application/json")
            .header("content-length", bytes.len());
    }
    if link {
        builder = builder.header("link", LINK_V17);
    }
    builder.body(Full::new(bytes)).expect("request")
}

struct Row {
    name: String,
    unit: &'static str,
    result: LoadResult,
    multiplier: f64,
}

/// Prints a row; `ceiling` is the request rate of the null handler for the
/// same kind of request (single entities, or batches of the same size).
fn print_row(row: &Row, ceiling: Option<f64>) {
    let rate = row.result.rate() * row.multiplier;
    let ratio = ceiling
        .map(|c| format!("{:.2}", row.result.rate() / c))
        .unwrap_or_else(|| "-".into());
    println!(
        "| {:<42} | {:>10.0} {:<10} | {:>7.2} | {:>7.2} | {:>7.2} | {:>8} | {:>6} |",
        row.name,
        rate,
        row.unit,
        row.result.percentile_ms(0.50),
        row.result.percentile_ms(0.95),
        row.result.percentile_ms(0.99),
        ratio,
        row.result.errors
    );
    if let Some(e) = &row.result.first_error {
        println!(
            "|   first error: {}",
            e.chars().take(200).collect::<String>()
        );
    }
}

fn wants(args: &BenchArgs, name: &str) -> bool {
    args.only
        .as_deref()
        .is_none_or(|o| o.split(',').any(|x| x.trim() == name))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // The load generator gets its own small runtime; the servers are separate
    // processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "Wuyang {} benchmark on {} ({} connections, sync={}, history={}, {} requests per scenario)",
        env!("CARGO_PKG_VERSION"),
        machine(),
        args.connections,
        args.sync,
        args.history,
        args.requests
    );
    println!();
    println!("| scenario | throughput | p50 ms | p95 ms | p99 ms | vs null | errors |");
    println!("|---|---|---|---|---|---|---|");
    let n = args.requests;
    let conns = args.connections;

    let mut ceiling = None;
    let mut batch_ceiling = None;
    // The batch bodies are built before the clock starts (as wrk sends a
    // body built once): building 1,000 entities costs the load generator
    // about what parsing them costs the server, on the same cores.
    let batch_bodies = std::sync::OnceLock::<Arc<Vec<Bytes>>>::new();
    let batch = |size: u64, total: u64| -> MakeRequest {
        let bodies = batch_bodies
            .get_or_init(|| {
                let started = Instant::now();
                let bodies: Vec<Bytes> = (0..total.div_ceil(size))
                    .map(|b| {
                        let items: Vec<Value> = (b * size..((b + 1) * size).min(total))
                            .map(|n| {
                                template_entity(
                                    &format!("urn:ngsi-ld:Sensor:{n}"),
                                    &format!("Sensor{}", n % 10),
                                    n,
                                )
                            })
                            .collect();
                        Bytes::from(serde_json::to_vec(&items).expect("json"))
                    })
                    .collect();
                eprintln!(
                    "built {} batch bodies ({:.0} MB) in {:.1} s",
                    bodies.len(),
                    bodies.iter().map(Bytes::len).sum::<usize>() as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
                Arc::new(bodies)
            })
            .clone();
        Arc::new(move |b| {
            raw_request(
                Method::POST,
                "/ngsi-ld/v1/entityOperations/upsert".into(),
                Some(bodies[b as usize].clone()),
                true,
            )
        })
    };
    if wants(&args, "null") {
        let null = ServerProcess::start(&["null-server", "--listen", "127.0.0.1:0"])?;
        let result = load(
            null.addr,
            conns,
            n,
            Arc::new(|i| {
                let e = template_entity(&format!("urn:ngsi-ld:Bench:null:{i}"), "Sensor", i);
                request(Method::POST, "/ngsi-ld/v1/entities".into(), Some(&e), true)
            }),
        )
        .await?;
        ceiling = Some(result.rate());
        print_row(
            &Row {
                name: "null handler: parse entity, answer 201".into(),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            None,
        );
        // The same for the batch upsert's requests: the ceiling of that row.
        let size = args.batch_size.max(1);
        let total = args.entities;
        let result = load(null.addr, conns, total.div_ceil(size), batch(size, total)).await?;
        batch_ceiling = Some(result.rate());
        print_row(
            &Row {
                name: format!("null handler: parse a batch of {size}, answer 204"),
                unit: "entities/s",
                result,
                multiplier: size as f64,
            },
            None,
        );
        null.kill();
    }

    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().context("temp dir path")?.to_string();
    let server = match args.target {
        Some(_) => None,
        None => Some(ServerProcess::start(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--sync",
            &args.sync,
            "--history",
            if args.history { "true" } else { "false" },
        ])?),
    };
    let addr = match (&server, args.target) {
        (Some(s), _) => s.addr,
        (None, Some(t)) => t,
        (None, None) => unreachable!("either a target or a started server"),
    };

    if wants(&args, "create") {
        let result = load(
            addr,
            conns,
            n,
            Arc::new(|i| {
                let e = template_entity(&format!("urn:ngsi-ld:Bench:create:{i}"), "Sensor", i);
                request(Method::POST, "/ngsi-ld/v1/entities".into(), Some(&e), true)
            }),
        )
        .await?;
        print_row(
            &Row {
                name: "create entity".into(),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }

    if wants(&args, "partial") || wants(&args, "update") {
        // 1,000 target entities, as in the Stellio scenario.
        let batch: Vec<Value> = (0..1000u64)
            .map(|i| template_entity(&format!("urn:ngsi-ld:Bench:upd:{i}"), "Sensor", i))
            .collect();
        let r = load(
            addr,
            1,
            1,
            Arc::new(move |_| {
                request(
                    Method::POST,
                    "/ngsi-ld/v1/entityOperations/upsert".into(),
                    Some(&Value::Array(batch.clone())),
                    true,
                )
            }),
        )
        .await?;
        if r.errors > 0 {
            bail!("loading the update targets failed: {:?}", r.first_error);
        }
    }
    if wants(&args, "partial") {
        let result = load(
            addr,
            conns,
            n,
            Arc::new(|i| {
                let body = json!({"type": "Property", "value": i as f64, "observedAt": "2024-03-01T09:00:00Z", "unitCode": "CEL"});
                request(Method::PATCH, format!("/ngsi-ld/v1/entities/urn:ngsi-ld:Bench:upd:{}/attrs/aProperty", i % 1000), Some(&body), true)
            }),
        )
        .await?;
        print_row(
            &Row {
                name: "partial attribute update (1,000 entities)".into(),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }
    if wants(&args, "update") {
        let result = load(
            addr,
            conns,
            n,
            Arc::new(|i| {
                let body = json!({
                    "aProperty": {"type": "Property", "value": i as f64, "observedAt": "2024-03-01T09:00:00Z", "unitCode": "CEL"},
                    "windSpeed": {"type": "Property", "value": 4.2, "observedAt": "2024-03-01T09:00:00Z", "unitCode": "MTS"}
                });
                request(Method::PATCH, format!("/ngsi-ld/v1/entities/urn:ngsi-ld:Bench:upd:{}/attrs", i % 1000), Some(&body), true)
            }),
        )
        .await?;
        print_row(
            &Row {
                name: "update attributes (1,000 entities)".into(),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }

    // The query scenarios need the dataset: loaded here on a fresh server,
    // assumed loaded (by an earlier `--only upsert`) on a --target server.
    let needs_dataset = wants(&args, "upsert")
        || (args.target.is_none()
            && (wants(&args, "query") || wants(&args, "relquery") || wants(&args, "restart")));
    if needs_dataset {
        let total = args.entities;
        let size = args.batch_size.max(1);
        let batches = total.div_ceil(size);
        let result = load(addr, conns, batches, batch(size, total)).await?;
        print_row(
            &Row {
                name: format!("batch upsert ({size} per request, {total} entities)"),
                unit: "entities/s",
                result,
                multiplier: size as f64,
            },
            batch_ceiling,
        );
    }
    if wants(&args, "query") {
        let make: MakeRequest = Arc::new(|i| {
            let path = format!(
                "/ngsi-ld/v1/entities?type=Sensor{}&q=aProperty%3E50%3BanotherProperty%3D%3D{}",
                i % 10,
                i % 50
            );
            request(Method::GET, path, None, true)
        });
        // Warm-up, not measured: the first queries build the attribute
        // indexes, and the WAL of the load above is still being checkpointed.
        load(addr, conns, (n / 10).clamp(100, 2000), make.clone()).await?;
        let result = load(addr, conns, n, make).await?;
        print_row(
            &Row {
                name: format!("query type + q ({} entities, 10 types)", args.entities),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }
    if wants(&args, "relquery") {
        let make: MakeRequest = Arc::new(|i| {
            let path = format!(
                "/ngsi-ld/v1/entities?type=Sensor{}&q=isPartOf%3D%3Durn:ngsi-ld:Group:{}",
                i % 10,
                i % 100
            );
            request(Method::GET, path, None, true)
        });
        load(addr, conns, (n / 10).clamp(100, 2000), make.clone()).await?;
        let result = load(addr, conns, n, make).await?;
        print_row(
            &Row {
                name: format!("query type + relationship ({} entities)", args.entities),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }
    for (name, transport, batch) in [
        ("notify-http", crate::bench_notify::Transport::Http, 1),
        ("notify-mqtt", crate::bench_notify::Transport::Mqtt, 1),
        (
            "notify-http-batch",
            crate::bench_notify::Transport::Http,
            10,
        ),
        (
            "notify-mqtt-batch",
            crate::bench_notify::Transport::Mqtt,
            10,
        ),
    ] {
        if !wants(&args, name) {
            continue;
        }
        let r = crate::bench_notify::run(addr, conns, n, transport, batch).await?;
        println!(
            "| {:<42} | {:>10.0} {:<10} | {:>7.2} | {:>7.2} | {:>7.2} | {:>8} | {:>6} |",
            format!(
                "notifications, 100 subscriptions, {}, {} ({}/{} delivered)",
                if transport == crate::bench_notify::Transport::Http {
                    "HTTP"
                } else {
                    "MQTT"
                },
                if batch == 1 {
                    "partial updates".to_string()
                } else {
                    format!("batch updates of {batch}")
                },
                r.delivered,
                r.updates
            ),
            r.rate(),
            "notif/s",
            r.percentile_ms(0.50),
            r.percentile_ms(0.95),
            r.percentile_ms(0.99),
            "-",
            r.update_errors
        );
    }
    if wants(&args, "federation") && args.target.is_none() {
        federation_scenario(addr, conns, n, ceiling).await?;
    }
    if wants(&args, "history") || wants(&args, "aggregate") {
        history_scenarios(&args, addr, ceiling, server.is_some().then_some(&data)).await?;
    }
    if wants(&args, "wide") {
        wide_entity(addr, args.wide_instances).await?;
    }
    println!();
    let Some(server) = server else {
        return Ok(());
    };
    if let Some(rss) = server.rss_mib() {
        println!("server resident memory after the run: {rss:.0} MiB");
    }
    if wants(&args, "restart") {
        server.kill();
        let started = Instant::now();
        let again =
            ServerProcess::start(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])?;
        let elapsed = started.elapsed();
        println!(
            "cold restart after kill -9 with the data above: {:.2} s to listening; resident memory {:.0} MiB",
            elapsed.as_secs_f64(),
            again.rss_mib().unwrap_or(0.0)
        );
        again.kill();
    }
    let _ = Path::new(&data);
    Ok(())
}

/// Registers a context source at the broker on `addr`.
async fn register_source(addr: SocketAddr, registration: Value) -> anyhow::Result<()> {
    let make: MakeRequest = Arc::new(move |_| {
        request(
            Method::POST,
            "/ngsi-ld/v1/csourceRegistrations".into(),
            Some(&registration),
            true,
        )
    });
    let r = load(addr, 1, 1, make).await?;
    anyhow::ensure!(
        r.errors == 0,
        "the registration was refused: {:?}",
        r.first_error
    );
    Ok(())
}

/// Distributed reads and writes: a second broker (a department's system)
/// registered for type `Federated` holds 1,000 template entities, the
/// benchmarked one 1,000 of its own; the same query (type + q, a page of
/// 20) is run with `local=true` (this broker only) and forwarded (both,
/// merged), and partial updates of `aProperty` on this broker's entities
/// and on the source's (through a redirect registration of their ids'
/// pattern and that attribute), in the same run.
async fn federation_scenario(
    addr: SocketAddr,
    conns: usize,
    n: u64,
    ceiling: Option<f64>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().context("temp dir path")?.to_string();
    let source = ServerProcess::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--source-alias",
        "wuyang-bench-source",
    ])?;
    let upsert = |prefix: &str| -> MakeRequest {
        let items: Vec<Value> = (0..1000)
            .map(|i| {
                template_entity(
                    &format!("urn:ngsi-ld:Federated:{prefix}:{i:04}"),
                    "Federated",
                    i,
                )
            })
            .collect();
        let body = Bytes::from(serde_json::to_vec(&items).expect("json"));
        Arc::new(move |_| {
            raw_request(
                Method::POST,
                "/ngsi-ld/v1/entityOperations/upsert".into(),
                Some(body.clone()),
                true,
            )
        })
    };
    load(source.addr, 1, 1, upsert("there")).await?;
    load(addr, 1, 1, upsert("here")).await?;
    let registration = serde_json::json!({
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Federated"}]}],
        "endpoint": format!("http://{}", source.addr),
    });
    register_source(addr, registration).await?;
    let redirect = serde_json::json!({
        "type": "ContextSourceRegistration",
        "information": [{
            "entities": [{"idPattern": "^urn:ngsi-ld:Federated:there:", "type": "Federated"}],
            "propertyNames": ["aProperty"]
        }],
        "mode": "redirect",
        "operations": ["updateOps"],
        "endpoint": format!("http://{}", source.addr),
    });
    register_source(addr, redirect).await?;
    for (name, local) in [
        (
            "query type + q, this broker only (local=true, 1,000 entities)",
            true,
        ),
        (
            "query type + q, forwarded to a registered broker (2 x 1,000)",
            false,
        ),
    ] {
        let make: MakeRequest = Arc::new(move |i| {
            let path = format!(
                "/ngsi-ld/v1/entities?type=Federated&q=aProperty%3E{}{}",
                i % 90,
                if local { "&local=true" } else { "" }
            );
            request(Method::GET, path, None, true)
        });
        load(addr, conns, (n / 10).clamp(100, 1000), make.clone()).await?;
        let result = load(addr, conns, n, make).await?;
        print_row(
            &Row {
                name: name.into(),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }
    // After the queries, whose matches the new values would change.
    for (name, prefix) in [
        ("partial update, held here (1,000 entities)", "here"),
        (
            "partial update, redirected to the registered broker",
            "there",
        ),
    ] {
        let make: MakeRequest = Arc::new(move |i| {
            let body = json!({"type": "Property", "value": i as f64});
            let path = format!(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Federated:{prefix}:{:04}/attrs/aProperty",
                i % 1000
            );
            request(Method::PATCH, path, Some(&body), true)
        });
        let result = load(addr, conns, n, make).await?;
        anyhow::ensure!(
            result.errors == 0,
            "{name}: {} errors, first {:?}",
            result.errors,
            result.first_error
        );
        print_row(
            &Row {
                name: name.into(),
                unit: "req/s",
                result,
                multiplier: 1.0,
            },
            ceiling,
        );
    }
    source.kill();
    Ok(())
}

/// The allocated bytes of the database in `dir` (pages in use × page
/// size), read through SQLite so that the write-ahead log counts.
fn db_bytes(dir: &str) -> anyhow::Result<(i64, i64)> {
    let conn = rusqlite::Connection::open_with_flags(
        Path::new(dir).join("wuyang.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // Instance rows. Not those in genesis rows (the first instances of
    // created entities, several to a row): the interval measured, a load
    // through the temporal API, writes none.
    let rows: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM history) + (SELECT count(*) FROM history_recent)",
        [],
        |r| r.get(0),
    )?;
    Ok(((pages - free) * size, rows))
}

/// The history scenarios: ingest of temporal instances by batch upsert,
/// the load of one attribute with many instances through the temporal API,
/// its disk cost, and aggregated retrieval of it (the Stellio scenario).
/// One entity with one attribute of `n` instances (one per datasetId), then
/// one with `n` attributes: the time of each operation on them, one request
/// at a time. Every step should grow with `n`, not with its square (the
/// writer is blocked meanwhile).
async fn wide_entity(addr: SocketAddr, n: u64) -> anyhow::Result<()> {
    let pid = std::process::id();
    let instances = |v: i64| -> Value {
        (0..n)
            .map(|i| json!({"type": "Property", "value": v + i as i64, "datasetId": format!("urn:ngsi-ld:Dataset:{i}")}))
            .collect()
    };
    let attributes = |v: i64| -> serde_json::Map<String, Value> {
        (0..n)
            .map(|i| {
                (
                    format!("a{i}"),
                    json!({"type": "Property", "value": v + i as i64}),
                )
            })
            .collect()
    };
    let mut conn = connect(addr).await?;
    for shape in [
        "instances of one attribute (one datasetId each)",
        "attributes",
    ] {
        let by_dataset = shape.starts_with("instances");
        let id = format!(
            "urn:ngsi-ld:Wide:{pid}:{}",
            if by_dataset {
                "instances"
            } else {
                "attributes"
            }
        );
        let fragment = |v: i64| -> Value {
            if by_dataset {
                json!({"reading": instances(v)})
            } else {
                Value::Object(attributes(v))
            }
        };
        let mut entity = fragment(0);
        entity["id"] = json!(id);
        entity["type"] = json!("Wide");
        let (one, one_patch) = if by_dataset {
            (
                "reading",
                json!({"value": -1, "datasetId": format!("urn:ngsi-ld:Dataset:{}", n / 2)}),
            )
        } else {
            ("a0", json!({"value": -1}))
        };
        let steps: Vec<(&str, Method, String, Option<Value>)> = vec![
            (
                "create",
                Method::POST,
                "/ngsi-ld/v1/entities".into(),
                Some(entity),
            ),
            (
                "partial update of one",
                Method::PATCH,
                format!("/ngsi-ld/v1/entities/{id}/attrs/{one}"),
                Some(one_patch),
            ),
            (
                "append all",
                Method::POST,
                format!("/ngsi-ld/v1/entities/{id}/attrs"),
                Some(fragment(1)),
            ),
            (
                "merge all",
                Method::PATCH,
                format!("/ngsi-ld/v1/entities/{id}"),
                Some(fragment(2)),
            ),
            (
                "temporal retrieve, lastN=1",
                Method::GET,
                format!("/ngsi-ld/v1/temporal/entities/{id}?lastN=1"),
                None,
            ),
        ];
        println!();
        println!("One entity with {n} {shape}, one request at a time:");
        println!();
        println!("| operation | status | ms |");
        println!("|---|---|---|");
        for (name, method, path, body) in steps {
            let started = Instant::now();
            let (status, _) = send(&mut conn, request(method, path, body.as_ref(), true)).await?;
            println!(
                "| {name} | {status} | {:.1} |",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    Ok(())
}

async fn history_scenarios(
    args: &BenchArgs,
    addr: SocketAddr,
    ceiling: Option<f64>,
    data: Option<&String>,
) -> anyhow::Result<()> {
    let conns = args.connections;
    if wants(args, "history") {
        // 1,000 meters with one numeric property; every batch updates all
        // of them with a new observation: 1,000 temporal instances.
        let batches = args.history_instances.div_ceil(1000);
        let result = load(
            addr,
            conns,
            batches,
            Arc::new(|b| {
                let observed = format!("2024-03-{:02}T{:02}:{:02}:00Z", 1 + b / 1440, b / 60 % 24, b % 60);
                let items: Vec<Value> = (0..1000u64)
                    .map(|k| {
                        json!({
                            "id": format!("urn:ngsi-ld:Meter:{k}"),
                            "type": "Meter",
                            "power": {"type": "Property", "value": (b * 1000 + k) as f64 * 0.5, "observedAt": observed}
                        })
                    })
                    .collect();
                request(
                    Method::POST,
                    "/ngsi-ld/v1/entityOperations/upsert?options=update".into(),
                    Some(&Value::Array(items)),
                    true,
                )
            }),
        )
        .await?;
        print_row(
            &Row {
                name: "history ingest: batch upsert, 1 attr x 1,000".into(),
                unit: "inst/s",
                result,
                multiplier: 1000.0,
            },
            ceiling,
        );
    }
    if !wants(args, "aggregate") {
        return Ok(());
    }
    let id = "urn:ngsi-ld:Meter:aggregated";
    let total = args.aggregate_instances.max(1);
    let per_request = 5000u64;
    let before = data.map(|d| db_bytes(d)).transpose()?;
    let result = load(
        addr,
        1,
        total.div_ceil(per_request),
        Arc::new(move |b| {
            // One observation a minute from 2024-01-01.
            let start = 1_704_067_200i64;
            let list: Vec<Value> = (b * per_request..((b + 1) * per_request).min(total))
                .map(|i| {
                    let t = start + i as i64 * 60;
                    let (d, s) = (t / 86_400, t % 86_400);
                    // Days since 1970 to a civil date (2024 is a leap year;
                    // 100,000 minutes stay within 2024).
                    let doy = d - 19_723;
                    let months = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
                    let (mut m, mut left) = (0usize, doy);
                    while m < 11 && left >= months[m] {
                        left -= months[m];
                        m += 1;
                    }
                    json!({"type": "Property", "value": (i % 1000) as f64 / 10.0,
                        "observedAt": format!("2024-{:02}-{:02}T{:02}:{:02}:00Z", m + 1, left + 1, s / 3600, s / 60 % 60)})
                })
                .collect();
            request(
                Method::POST,
                "/ngsi-ld/v1/temporal/entities".into(),
                Some(&json!({"id": id, "type": "Meter", "power": list})),
                true,
            )
        }),
    )
    .await?;
    if result.errors > 0 {
        bail!(
            "loading the aggregated series failed: {:?}",
            result.first_error
        );
    }
    print_row(
        &Row {
            name: format!("temporal create, {per_request} instances per request"),
            unit: "inst/s",
            result,
            multiplier: per_request as f64,
        },
        ceiling,
    );
    let make: MakeRequest = Arc::new(move |_| {
        let path = format!(
            "/ngsi-ld/v1/temporal/entities/{id}?options=aggregatedValues&aggrMethods=totalCount,sum,avg,min,max&aggrPeriodDuration=P1D&timerel=between&timeAt=2024-01-01T00:00:00Z&endTimeAt=2025-01-01T00:00:00Z"
        );
        request(Method::GET, path, None, true)
    });
    let first = load(addr, 1, 1, make.clone()).await?;
    if first.errors > 0 {
        bail!("aggregation failed: {:?}", first.first_error);
    }
    let cold_ms = first.percentile_ms(0.5);
    let result = load(addr, conns, args.requests.min(20_000), make).await?;
    print_row(
        &Row {
            name: format!("aggregated values P1D ({total} instances)"),
            unit: "req/s",
            result,
            multiplier: 1.0,
        },
        ceiling,
    );
    println!("|   first aggregation (loads the series into memory): {cold_ms:.1} ms");
    if let (Some(d), Some((bytes0, rows0))) = (data, before) {
        let (bytes1, rows1) = db_bytes(d)?;
        let added = (rows1 - rows0).max(1);
        println!(
            "|   disk: {} temporal instances added {:.1} MB, {:.1} bytes per numeric instance",
            added,
            (bytes1 - bytes0) as f64 / 1e6,
            (bytes1 - bytes0) as f64 / added as f64
        );
    }
    Ok(())
}

/// `wuyang null-server`: parses each POSTed entity and answers 201, and each
/// batch upsert body and answers 204; the HTTP ceilings the benchmark
/// reports beside every figure.
pub fn null_server(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        async fn create(body: Bytes) -> axum::response::Response {
            use axum::response::IntoResponse;
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => {
                    let id = v
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    (
                        axum::http::StatusCode::CREATED,
                        [("location", format!("/ngsi-ld/v1/entities/{id}"))],
                    )
                        .into_response()
                }
                Err(_) => axum::http::StatusCode::BAD_REQUEST.into_response(),
            }
        }
        async fn batch(body: Bytes) -> axum::http::StatusCode {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(_)) => axum::http::StatusCode::NO_CONTENT,
                _ => axum::http::StatusCode::BAD_REQUEST,
            }
        }
        let app = axum::Router::new()
            .route("/ngsi-ld/v1/entities", axum::routing::post(create))
            .route(
                "/ngsi-ld/v1/entityOperations/upsert",
                axum::routing::post(batch),
            );
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}
