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

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let city = Arc::new(simulate::build_city(&args.sim.size)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let state = serve::build_state(&args.serve)?;
        // Subscriptions restored before anything changes, as with `serve`.
        state.broker.ready().await;
        let store = state.broker.store().clone();
        let listener = tokio::net::TcpListener::bind(args.serve.listen)
            .await
            .with_context(|| format!("binding {}", args.serve.listen))?;
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
            simulate::run_sim(&target, city, &args.sim, live.clone()).await?;
            live.stop.store(true, Ordering::Relaxed);
            reporter.abort();
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
