//! The `wuyang` command: wires the library crates together.

mod backup;
mod bench;
mod bench_notify;
mod serve;
// The living city: `wuyang demo` and `wuyang sim`.
mod demo;
mod simulate;

use clap::{Parser, Subcommand};

// The broker allocates many small objects per request; mimalloc measurably
// beats the system allocator on that pattern (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Wuyang (五羊): the smart-city data hub of Guangzhou, an NGSI-LD context
/// broker on durable embedded storage.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the NGSI-LD broker.
    Serve(serve::ServeArgs),
    /// Run the load scenarios against a fresh durable server and print the
    /// results beside the HTTP ceiling of a null handler.
    Bench(bench::BenchArgs),
    /// Run the platform with a living Guangzhou in it: the broker, the city
    /// model and the simulator, with live figures.
    Demo(demo::DemoArgs),
    /// Run only the city simulator against a running NGSI-LD broker.
    Sim(simulate::SimCommand),
    /// Copy the database of a data directory to a file, consistently, while
    /// the server runs.
    Backup(backup::BackupArgs),
    /// Put a backup in place as the database of a data directory (no server
    /// may run on it).
    Restore(backup::RestoreArgs),
    /// A handler that only parses the entity and answers 201 (the baseline
    /// of `wuyang bench`).
    #[command(hide = true)]
    NullServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WUYANG_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in files or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Sim(args) => simulate::run(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::NullServer { listen } => bench::null_server(listen),
    }
}
