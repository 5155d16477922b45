//! `wuyang demo`: the platform on the embedded store with a living
//! Guangzhou in it. Starts the broker in-process (the same wiring as
//! `wuyang serve`), loads the city through the public API, runs the
//! simulator against it and prints live figures. Ctrl-C stops it cleanly;
//! running it again on the same data directory resumes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;

use crate::serve::{self, ServeArgs};
use crate::simulate::{self, Live, SimArgs, Target};

/// Settings of `wuyang demo`: those of `wuyang serve` and of the simulator.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// The file in the data directory that keeps the simulated time reached,
/// so that a demo run again carries on from there.
const SIM_CLOCK: &str = "sim-clock";

/// Where a demo on `data_dir` starts its simulated clock when `--start` is
/// not given: now, or later if an earlier run got further (its clock runs
/// ahead of real time). Starting earlier would replay instants already in
/// the history.
fn resumed_start(data_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(SIM_CLOCK)).ok()?;
    let reached: i64 = text.trim().parse().ok()?;
    // The next whole second after the last simulated instant.
    let start = (reached / 1000).checked_add(1)?.checked_mul(1000)?;
    (start > simulate::now_ms()).then(|| city::ngsi::iso(start))
}

/// Writes the simulated time reached (atomically: a crash leaves the old
/// value or the new one).
fn save_clock(data_dir: &std::path::Path, live: &Live) {
    let reached = live.sim_ms.load(Ordering::Relaxed);
    if reached <= 0 {
        return;
    }
    let tmp = data_dir.join(format!("{SIM_CLOCK}.tmp"));
    let done = std::fs::write(&tmp, reached.to_string())
        .and_then(|()| std::fs::rename(&tmp, data_dir.join(SIM_CLOCK)));
    if let Err(e) = done {
        tracing::warn!(error = %e, "could not save the simulated time");
    }
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(mut args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    args.sim.check()?;
    if args.sim.start.is_none()
        && let Some(start) = resumed_start(&args.serve.data_dir)
    {
        println!("resuming the simulated clock at {start}, where the last run got to");
        args.sim.start = Some(start);
    }
    let city = Arc::new(simulate::build_city(&args.sim.size)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // The address first, as with `serve`: a port in use touches no data
        // directory.
        let listener = tokio::net::TcpListener::bind(args.serve.listen)
            .await
            .with_context(|| format!("binding {}", args.serve.listen))?;
        let state = serve::build_state(&args.serve)?;
        // Subscriptions restored before anything changes, as with `serve`.
        state.broker.ready().await;
        let store = state.broker.store().clone();
        let local = listener.local_addr()?;
        println!("listening on {local}");
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, state, async move {
            let _ = server_stopped.await;
        }));
        let host = if local.ip().is_unspecified() {
            format!("localhost:{}", local.port())
        } else {
            local.to_string()
        };
        // The simulator talks to the server over loopback, as a client.
        let own = if local.ip().is_unspecified() {
            let loopback = if local.is_ipv6() { "[::1]" } else { "127.0.0.1" };
            format!("{loopback}:{}", local.port())
        } else {
            local.to_string()
        };
        let target = Target::parse(&format!("http://{own}"))?;

        let live = Arc::new(Live::default());
        tokio::spawn(simulate::stop_on_signal(live.clone()));
        let entities = city.entities(args.sim.start_ms()?);
        tokio::select! {
            loaded = simulate::load_city(&target, entities, args.sim.connections, true) => { loaded?; }
            _ = wait_stop(live.clone()) => {}
        }
        if !live.stop.load(Ordering::Relaxed) {
            simulate::typhoon_on_demand(live.clone());
            print_where_to_look(&host, started);
            let count_store = store.clone();
            let reporter = tokio::spawn(simulate::report(live.clone(), move || {
                Some(count_store.entity_count())
            }));
            let (clock_live, clock_dir) = (live.clone(), args.serve.data_dir.clone());
            let clock = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    save_clock(&clock_dir, &clock_live);
                }
            });
            let ran = simulate::run_sim(&target, city, &args.sim, live.clone()).await;
            live.stop.store(true, Ordering::Relaxed);
            reporter.abort();
            clock.abort();
            save_clock(&args.serve.data_dir, &live);
            ran?;
        }
        let _ = stop_server.send(());
        server.await??;
        println!(
            "demo stopped: {} updates sent, {} entities stored in {}; run the same command to resume",
            live.sent.load(Ordering::Relaxed),
            store.entity_count(),
            args.serve.data_dir.display()
        );
        Ok(())
    })
}

async fn wait_stop(live: Arc<Live>) {
    while !live.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn print_where_to_look(host: &str, started: Instant) {
    let api = format!("http://{host}/ngsi-ld/v1");
    println!(
        "\nGuangzhou is alive (up in {:.1} s). The NGSI-LD API is at {api}\n\
         Try:\n  \
         curl '{api}/types'\n  \
         curl '{api}/entities?type=District&options=concise&attrs=name,population'\n  \
         curl '{api}/entities?type=Vehicle&limit=3&options=keyValues'\n  \
         curl '{api}/entities?type=TrafficFlowObserved&q=congested==true&limit=5&options=keyValues'\n  \
         curl -G '{api}/entities' --data-urlencode 'type=Alert' --data-urlencode 'georel=near;maxDistance==2000' \\\n       \
         --data-urlencode 'geometry=Point' --data-urlencode 'coordinates=[113.2668,23.1195]'\n  \
         curl -N 'http://{host}/wuyang/v1/live?type=Alert&options=keyValues'   # live stream\n\
         Live figures follow every 5 s. Type `typhoon` (or send SIGUSR1) to start the \
         typhoon-and-flood drill; Ctrl-C stops.\n",
        started.elapsed().as_secs_f64()
    );
}
