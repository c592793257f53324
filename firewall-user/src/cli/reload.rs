//! `smf-firewall reload`: the running daemon reads, validates and swaps in its rules again.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use firewall_user::{
    config::DEFAULT_CONFIG,
    control::{self, Request},
};

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
        let socket = super::config(&self.config)?.operations.control_socket();
        let answer = control::call(&socket, Request::Reload, RELOAD_TIMEOUT)?;
        if self.json {
            println!("{answer}");
        }
        if answer["ok"] != true {
            let error = answer["error"]
                .as_str()
                .unwrap_or("the daemon gave no reason");
            eprintln!("error: reload failed; the rules in force are unchanged");
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
        if !self.json {
            let summary = &answer["summary"];
            for change in summary["interfaces"].as_array().into_iter().flatten() {
                let ids = |key: &str| {
                    let list: Vec<&str> = change[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|id| id.as_str())
                        .collect();
                    match list.len() {
                        0 => "0".to_string(),
                        n if n <= 5 => format!("{n} ({})", list.join(", ")),
                        n => format!("{n} ({}, ...)", list[..5].join(", ")),
                    }
                };
                println!(
                    "{}: {} rules: added {}, removed {}, changed {}, unchanged {}{}",
                    change["interface"].as_str().unwrap_or("?"),
                    change["rules"],
                    ids("added"),
                    ids("removed"),
                    ids("changed"),
                    change["unchanged"],
                    if change["reordered"] == true {
                        ", order changed"
                    } else {
                        ""
                    }
                );
            }
            println!(
                "reloaded: generation {} live after {} ms",
                summary["generation"], summary["milliseconds"]
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
