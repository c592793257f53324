//! `smf-firewall status`: what the running daemon does, from its control socket.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use crate::{
    config::DEFAULT_CONFIG,
    control::{self, Answer, Request, protocol::Status},
};
use anyhow::bail;

/// Status is immediate.
pub(super) const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// What the running daemon does: interfaces and XDP mode, rules and generation, the last
/// reload, the licence, connection tracking, uptime.
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's configuration: says where its control socket is.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let socket = super::config::load(&self.config)?
            .operations
            .control_socket();
        let reply = control::call(&socket, Request::Status, STATUS_TIMEOUT)?;
        if self.json {
            println!("{reply}");
        }
        let status = match reply.answer()? {
            Answer::Status(status) => status,
            Answer::Failed(failure) if self.json => {
                eprintln!("error: the daemon cannot say: {}", failure.error);
                return Ok(ExitCode::FAILURE);
            }
            Answer::Failed(failure) => bail!("the daemon cannot say: {}", failure.error),
            Answer::Reloaded(_) => bail!("the daemon answered the status with a reload"),
        };
        if !self.json {
            print(&status);
        }
        Ok(report_unattached(&status))
    }
}

/// A configured interface without our program lets all its traffic through: an error on
/// stderr and exit 1, for `status` and `reload` alike.
pub(super) fn report_unattached(status: &Status) -> ExitCode {
    let unattached: Vec<&str> = status
        .interfaces
        .iter()
        .filter(|i| !i.attached)
        .map(|i| i.name.as_str())
        .collect();
    for name in &unattached {
        eprintln!(
            "error: {name} is configured but not attached: its traffic is NOT filtered (the interface is gone; the daemon attaches again as soon as it is back)"
        );
    }
    match unattached.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

fn print(status: &Status) {
    println!(
        "smf-firewall {} running, pid {}, up {}",
        status.version,
        status.pid,
        humantime::format_duration(Duration::from_secs(status.uptime_seconds))
    );
    println!(
        "rules: {} from {}, generation {}",
        status.rules,
        status.rules_file.display(),
        status.generation
    );
    for interface in &status.interfaces {
        let rules = interface.rules;
        println!(
            "  {:<16} {:<7} {:<8} {rules} {}",
            interface.name,
            interface.mode,
            if interface.attached {
                "attached"
            } else {
                "GONE"
            },
            if rules == 1 { "rule" } else { "rules" }
        );
    }
    match &status.last_reload {
        None => println!("last reload: none since start"),
        Some(last) => println!(
            "last reload: {} at {} ({}){}",
            last.result,
            last.at,
            last.trigger,
            last.error
                .as_deref()
                .map(|e| format!("\n  {e}"))
                .unwrap_or_default()
        ),
    }
    println!(
        "reloads: {} succeeded, {} failed",
        status.reloads.success, status.reloads.error
    );
    match &status.license {
        None => println!("license: not decided yet"),
        Some(license) => {
            println!(
                "license: {} ({}), from {}",
                if license.licensed {
                    "licensed, rules enforced"
                } else {
                    "NOT licensed, passing every packet"
                },
                license.reason,
                match license.mode.as_str() {
                    "grant" => "a grant file",
                    "url" => "a grant server",
                    "not_configured" => "no licensing configured",
                    _ => "the contract store",
                }
            );
            if let (Some(key_id), Some(valid_until)) = (&license.key_id, &license.valid_until) {
                println!("  grant signed by key {key_id}, valid until {valid_until}");
            }
        }
    }
    println!(
        "conntrack: {} flows, room for {} per address family (IPv4, IPv6)",
        status.conntrack.entries, status.conntrack.capacity
    );
    println!(
        "pinned under {}{}",
        status.pin_path.display(),
        if status.keep_attached_on_exit {
            " (kept attached on exit)"
        } else {
            ""
        }
    );
}
