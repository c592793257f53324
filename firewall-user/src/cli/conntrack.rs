//! `smf-firewall conntrack [flush]`: the running daemon's connection-tracking table, read (or
//! emptied) through the maps it pins under its config's `pin_path`.

use std::{path::PathBuf, process::ExitCode};

use crate::config::DEFAULT_CONFIG;
use anyhow::Context as _;
use clap::Subcommand;
use firewall_dataplane::{conntrack::Pinned, pins::Pins};

/// The running daemon's connection-tracking table: live flows by protocol and state, and by
/// address family (each family has its own table of `conntrack.max_entries`; no addresses).
/// `conntrack flush` deletes every flow of both. Reads the maps the daemon pinned under its
/// config's `pin_path`. Needs root.
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's configuration: says where it pins its maps.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG, global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<ConntrackCommand>,
}

#[derive(Subcommand)]
enum ConntrackCommand {
    /// Delete every tracked flow (replies of open connections are judged by the rules again).
    Flush,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let config = super::config::load(&self.config)?;
        let pins = Pins::new(&config.operations.pin_path);
        let mut pinned =
            Pinned::open_current(&pins).context("cannot read the connection-tracking table")?;
        match self.command {
            Some(ConntrackCommand::Flush) => {
                let deleted = pinned.flush().context("cannot flush the table")?;
                println!("flushed {deleted} flows");
            }
            None => {
                let census = pinned.census();
                let live: u64 = census.by_state.values().sum();
                println!(
                    "{live} flows ({} expired, not swept yet); IPv4 {}, IPv6 {}",
                    census.expired, census.ipv4, census.ipv6
                );
                if live > 0 {
                    println!("{:<8} {:<16} {:>10}", "protocol", "state", "flows");
                }
                for ((protocol, state), count) in &census.by_state {
                    println!("{protocol:<8} {state:<16} {count:>10}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
