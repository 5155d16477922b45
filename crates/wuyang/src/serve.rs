//! `wuyang serve`: the broker on the embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use broker::{Broker, BrokerConfig};
use server::{AppState, Metrics, ServerConfig};
use store::sqlite::{SqliteConfig, SqliteStore, SyncMode};

/// Settings of `wuyang serve`; every flag also reads a WUYANG_* variable.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WUYANG_LISTEN", default_value = "0.0.0.0:1026")]
    pub listen: SocketAddr,
    /// Directory of the durable store.
    #[arg(long, env = "WUYANG_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Largest request body in bytes; larger bodies get 413.
    #[arg(long, env = "WUYANG_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in a request body.
    #[arg(long, env = "WUYANG_MAX_JSON_DEPTH", default_value_t = 64)]
    pub max_json_depth: usize,
    /// Seconds a connection may take to send the headers of its next
    /// request (idle keep-alive time included) before it is closed.
    #[arg(long, env = "WUYANG_IDLE_TIMEOUT_S", default_value_t = 60)]
    pub idle_timeout_s: u64,
    /// Page size of queries without a limit.
    #[arg(long, env = "WUYANG_DEFAULT_LIMIT", default_value_t = 20)]
    pub default_limit: usize,
    /// Largest page size a query may ask for (TooManyResults above).
    #[arg(long, env = "WUYANG_MAX_LIMIT", default_value_t = 1000)]
    pub max_limit: usize,
    /// When a write is acknowledged: `full` after fsync (survives power
    /// loss), `normal` once the operating system has it (survives a process
    /// crash, not a power loss).
    #[arg(long, env = "WUYANG_SYNC", default_value = "full", value_parser = ["full", "normal"])]
    pub sync: String,
    /// Record every attribute change as a temporal instance (the temporal
    /// API); `--history false` or `--no-history` switches it off.
    #[arg(
        long,
        env = "WUYANG_HISTORY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub history: bool,
    /// Do not record history (same as `--history false`).
    #[arg(long)]
    pub no_history: bool,
    /// Delete temporal instances older than this many days (checked hourly);
    /// unset keeps all.
    #[arg(long, env = "WUYANG_HISTORY_DAYS")]
    pub history_days: Option<u32>,
    /// Memory for the numeric series that aggregated temporal queries read,
    /// in MiB.
    #[arg(long, env = "WUYANG_HISTORY_CACHE_MB", default_value_t = 256)]
    pub history_cache_mb: usize,
    /// The most instances of one attribute in a temporal answer; beyond it
    /// the answer is partial (206 with a Content-Range header).
    #[arg(long, env = "WUYANG_TEMPORAL_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub temporal_limit: u64,
    /// How long an EntityMap lives when its client suggests no lifetime
    /// (`entityMapLifetime`), in seconds; no map lives longer than a day.
    #[arg(long, env = "WUYANG_ENTITY_MAP_LIFETIME", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub entity_map_lifetime: u64,
    /// The most entity entries all EntityMaps hold together (a map takes
    /// one per entity it selected); the maps that expire first make room.
    #[arg(long, env = "WUYANG_ENTITY_MAP_ENTRIES", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub entity_map_entries: u64,
    /// The longest a Snapshot lives, in days: a Snapshot's
    /// `snapshotLifetime` is cut to it, and one without gets it.
    #[arg(long, env = "WUYANG_SNAPSHOT_MAX_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub snapshot_max_days: u64,
    /// Time allowed to download a remote @context, in milliseconds.
    #[arg(long, env = "WUYANG_CONTEXT_TIMEOUT_MS", default_value_t = 5000)]
    pub context_timeout_ms: u64,
    /// Seconds before a stored subscription or registration that could not
    /// be restored at start-up (say, its @context server was down) is tried
    /// again; the wait doubles each round, up to an hour.
    #[arg(long, env = "WUYANG_RESTORE_RETRY_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub restore_retry_s: u64,
    /// The Context Source alias announced by `GET /info/sourceIdentity` and
    /// added to the `Via` header of forwarded requests (an RFC 7230 token; a
    /// tenant's alias appends the tenant name). Give each broker of a
    /// federation its own: a request whose `Via` already names this alias
    /// is answered locally (loop detection).
    #[arg(long, env = "WUYANG_SOURCE_ALIAS", default_value = "wuyang", value_parser = parse_alias)]
    pub source_alias: String,
    /// The base URL other brokers reach this one at (`http://host:port`).
    /// With it, a subscription is copied to the registered context sources
    /// that offer subscriptions, and they notify
    /// `{URL}/wuyang/v1/notifications`; without it, subscriptions stay local.
    #[arg(long, env = "WUYANG_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
}

/// A public URL is an absolute http(s) URL without query or fragment.
fn parse_public_url(s: &str) -> Result<String, String> {
    match s.parse::<axum::http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && !s.contains('#') =>
        {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(
            "the public URL must be an absolute http or https URL, like http://broker.example:1026"
                .into(),
        ),
    }
}

/// A Context Source alias is an RFC 7230 pseudonym: a non-empty token.
fn parse_alias(s: &str) -> Result<String, String> {
    if server::http::is_token(s) {
        Ok(s.to_string())
    } else {
        Err(
            "the alias must be a non-empty RFC 7230 token (letters, digits, !#$%&'*+-.^_`|~)"
                .into(),
        )
    }
}

/// Builds the application state over a store opened in `args.data_dir`.
pub fn build_state(args: &ServeArgs) -> anyhow::Result<AppState> {
    let started = std::time::Instant::now();
    let sync = if args.sync == "normal" {
        SyncMode::Normal
    } else {
        SyncMode::Full
    };
    let store = SqliteStore::open(SqliteConfig {
        sync,
        history: args.history && !args.no_history,
        history_days: args.history_days,
        history_cache_bytes: args.history_cache_mb.saturating_mul(1 << 20),
        ..SqliteConfig::in_dir(&args.data_dir)
    })
    .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    tracing::info!(
        entities = store::Store::entity_count(&store),
        elapsed_ms = started.elapsed().as_millis() as u64,
        dir = %args.data_dir.display(),
        "store loaded"
    );
    let contexts = jsonld::ContextResolver::new(jsonld::ResolverConfig {
        fetch_timeout: Duration::from_millis(args.context_timeout_ms),
        ..Default::default()
    });
    let store = Arc::new(store);
    let broker = Broker::new(
        store.clone(),
        contexts,
        BrokerConfig {
            default_limit: args.default_limit,
            max_limit: args.max_limit,
            temporal_limit: usize::try_from(args.temporal_limit).unwrap_or(usize::MAX),
            source_alias: args.source_alias.clone(),
            entity_maps: broker::entity_maps::EntityMapConfig {
                lifetime_micros: i64::try_from(args.entity_map_lifetime)
                    .unwrap_or(86_400)
                    .saturating_mul(1_000_000),
                max_entries: usize::try_from(args.entity_map_entries).unwrap_or(usize::MAX),
            },
            snapshot_max_lifetime_micros: i64::try_from(args.snapshot_max_days)
                .unwrap_or(3650)
                .saturating_mul(86_400 * 1_000_000),
            public_url: args.public_url.clone(),
            restore_retry: Duration::from_secs(args.restore_retry_s),
            ..Default::default()
        },
    );
    let metrics = Metrics::new(|r| {
        store.register_metrics(r);
        broker.register_metrics(r);
    });
    Ok(AppState {
        broker: Arc::new(broker),
        config: Arc::new(ServerConfig {
            max_body_bytes: args.max_body_bytes,
            max_json_depth: args.max_json_depth,
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout_s.max(1)),
        }),
        metrics: Arc::new(metrics),
    })
}

async fn shutdown_signal() {
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
    tracing::info!("shutting down");
}

/// Runs the broker until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The address first: a port in use touches no data directory.
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let state = build_state(&args)?;
        state.broker.ready().await;
        let local = listener.local_addr()?;
        tracing::info!(address = %local, "Wuyang NGSI-LD broker listening; API at http://{local}/ngsi-ld/v1");
        // A line on stdout that tools (and the tests) can wait for.
        println!("listening on {local}");
        server::serve(listener, state, shutdown_signal()).await?;
        Ok(())
    })
}
