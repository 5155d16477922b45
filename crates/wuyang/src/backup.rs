//! `wuyang backup` and `wuyang restore`: the database of a data directory
//! copied out while the server runs, and put back while it does not.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use store::datadir::{self, DbSummary};

/// Arguments of `wuyang backup`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// The data directory to back up (a server may be running on it).
    #[arg(long, env = "WUYANG_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The file to write; it must not exist.
    #[arg(long)]
    pub to: PathBuf,
}

/// Arguments of `wuyang restore`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// A file written by `wuyang backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to restore into (no server may be running on it).
    #[arg(long, env = "WUYANG_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Move a database the directory holds aside (as
    /// `wuyang.db.replaced-<unix time>`) instead of refusing.
    #[arg(long)]
    pub replace: bool,
}

/// Runs `wuyang backup`.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let summary = datadir::backup(&args.data_dir, &args.to, &|copied, total| {
        eprint!(
            "\rbackup: {} of {} copied",
            size(copied),
            size(total.max(copied))
        );
        let _ = std::io::stderr().flush();
    })
    .with_context(|| format!("backing up {}", args.data_dir.display()))?;
    eprintln!();
    println!(
        "backed up {} to {}: {} in {:.1} s",
        args.data_dir.join(datadir::DB_FILE).display(),
        args.to.display(),
        describe(&summary),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `wuyang restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (summary, moved) = datadir::restore(&args.from, &args.data_dir, args.replace)
        .with_context(|| format!("restoring into {}", args.data_dir.display()))?;
    if let Some(moved) = moved {
        println!("moved the database that was there to {}", moved.display());
    }
    println!(
        "restored {} into {}: {}",
        args.from.display(),
        args.data_dir.display(),
        describe(&summary)
    );
    Ok(())
}

fn describe(s: &DbSummary) -> String {
    format!(
        "{}, {} entities in {} tenant{}, storage format {}",
        size(s.bytes),
        s.entities,
        s.tenants,
        if s.tenants == 1 { "" } else { "s" },
        s.format
    )
}

fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / MIB / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}
