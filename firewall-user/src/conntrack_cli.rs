//! `smf-firewall conntrack [flush]`: the running daemon's connection-tracking table, read (or
//! emptied) through the maps it pins (`conntrack.pin` in its config).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use firewall_user::conntrack::{DEFAULT_PIN, Pinned};

#[derive(Args)]
pub struct ConntrackArgs {
    /// The directory the daemon pinned its table in (`conntrack.pin` of its config).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN, global = true)]
    pin: PathBuf,
    #[command(subcommand)]
    command: Option<ConntrackCommand>,
}

#[derive(Subcommand)]
enum ConntrackCommand {
    /// Delete every tracked flow (replies of open connections are judged by the rules again).
    Flush,
}

pub fn conntrack(args: ConntrackArgs) -> anyhow::Result<()> {
    let mut pinned =
        Pinned::open(&args.pin).context("cannot read the connection-tracking table")?;
    match args.command {
        Some(ConntrackCommand::Flush) => {
            let deleted = pinned.flush().context("cannot flush the table")?;
            println!("flushed {deleted} flows");
        }
        None => {
            let census = pinned.census();
            let live: u64 = census.by_state.values().sum();
            println!("{live} flows ({} expired, not swept yet)", census.expired);
            if live > 0 {
                println!("{:<8} {:<16} {:>10}", "protocol", "state", "flows");
            }
            for ((protocol, state), count) in &census.by_state {
                println!("{protocol:<8} {state:<16} {count:>10}");
            }
        }
    }
    Ok(())
}
