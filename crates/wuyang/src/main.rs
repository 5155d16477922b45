//! The `wuyang` command: wires the library crates together.

mod serve;

use clap::{Parser, Subcommand};

/// Wuyang (五羊): the smart-city data hub of Guangzhou, an NGSI-LD context
/// broker on durable embedded storage.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the NGSI-LD broker.
    Serve(serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WUYANG_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
