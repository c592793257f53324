//! `smf-firewall reload`: the running daemon reads, validates and swaps in its rules again.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use crate::{
    config::DEFAULT_CONFIG,
    control::{self, Answer, Request},
    reload::Summary,
};
use anyhow::bail;

/// A reload of 100,000 rules takes a few seconds.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Make the running daemon read, validate and compile its rules file again and swap it in
/// atomically (as SIGHUP does). Prints what changed per interface and exits 0; on a bad
/// file prints FILE:LINE:COL: error: ..., changes nothing and exits 1.
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's configuration: says where its control socket is.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print the daemon's answer as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let socket = super::config::load(&self.config)?
            .operations
            .control_socket();
        let reply = control::call(&socket, Request::Reload, RELOAD_TIMEOUT)?;
        if self.json {
            println!("{reply}");
        }
        let summary = match reply.answer()? {
            Answer::Reloaded(reloaded) => reloaded.summary,
            Answer::Failed(failure) => {
                eprintln!("error: reload failed; the rules in force are unchanged");
                eprintln!("{}", failure.error);
                return Ok(ExitCode::FAILURE);
            }
            Answer::Status(_) => bail!("the daemon answered the reload with its status"),
        };
        if !self.json {
            print_summary(&summary);
        }
        // The rules are in force only where the program is attached.
        match control::call(&socket, Request::Status, super::status::STATUS_TIMEOUT)?.answer()? {
            Answer::Status(status) => Ok(super::status::report_unattached(&status)),
            Answer::Failed(failure) => bail!("the daemon cannot say: {}", failure.error),
            Answer::Reloaded(_) => bail!("the daemon answered the status with a reload"),
        }
    }
}

/// Per interface what changed, then the generation now live.
fn print_summary(summary: &Summary) {
    let ids = |list: &[String]| match list.len() {
        0 => "0".to_string(),
        n if n <= 5 => format!("{n} ({})", list.join(", ")),
        n => format!("{n} ({}, ...)", list[..5].join(", ")),
    };
    for change in &summary.interfaces {
        println!(
            "{}: {} rules: added {}, removed {}, changed {}, unchanged {}{}",
            change.interface,
            change.rules,
            ids(&change.added),
            ids(&change.removed),
            ids(&change.changed),
            change.unchanged,
            if change.reordered {
                ", order changed"
            } else {
                ""
            }
        );
    }
    println!(
        "reloaded: generation {} live after {} ms",
        summary.generation, summary.milliseconds
    );
}
