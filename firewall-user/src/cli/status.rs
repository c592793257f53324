//! `smf-firewall status`: what the running daemon does, from its control socket.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use firewall_user::{
    config::DEFAULT_CONFIG,
    control::{self, Request},
};

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
        let socket = super::config(&self.config)?.operations.control_socket();
        let answer = control::call(&socket, Request::Status, STATUS_TIMEOUT)?;
        if self.json {
            println!("{answer}");
            return Ok(ExitCode::SUCCESS);
        }
        let text = |value: &serde_json::Value| match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!(
            "smf-firewall {} running, pid {}, up {}",
            text(&answer["version"]),
            answer["pid"],
            humantime::format_duration(Duration::from_secs(
                answer["uptime_seconds"].as_u64().unwrap_or(0)
            ))
        );
        println!(
            "rules: {} from {}, generation {}",
            answer["rules"],
            text(&answer["rules_file"]),
            answer["generation"]
        );
        for interface in answer["interfaces"].as_array().into_iter().flatten() {
            let rules = interface["rules"].as_u64().unwrap_or(0);
            println!(
                "  {:<16} {:<7} {:<8} {rules} {}",
                text(&interface["name"]),
                text(&interface["mode"]),
                if interface["attached"] == true {
                    "attached"
                } else {
                    "GONE"
                },
                if rules == 1 { "rule" } else { "rules" }
            );
        }
        match &answer["last_reload"] {
            serde_json::Value::Null => println!("last reload: none since start"),
            last => println!(
                "last reload: {} at {} ({}){}",
                text(&last["result"]),
                text(&last["at"]),
                text(&last["trigger"]),
                last["error"]
                    .as_str()
                    .map(|e| format!("\n  {e}"))
                    .unwrap_or_default()
            ),
        }
        println!(
            "reloads: {} succeeded, {} failed",
            answer["reloads"]["success"], answer["reloads"]["error"]
        );
        match &answer["license"] {
            serde_json::Value::Null => println!("license: not decided yet"),
            license => println!(
                "license: {} ({})",
                if license["licensed"] == true {
                    "licensed, rules enforced"
                } else {
                    "NOT licensed, passing every packet"
                },
                text(&license["reason"])
            ),
        }
        match &answer["conntrack"] {
            serde_json::Value::Null => println!("conntrack: not in use"),
            conntrack => println!(
                "conntrack: {} of {} entries",
                conntrack["entries"], conntrack["capacity"]
            ),
        }
        println!(
            "pinned under {}{}",
            text(&answer["pin_path"]),
            if answer["keep_attached_on_exit"] == true {
                " (kept attached on exit)"
            } else {
                ""
            }
        );
        Ok(ExitCode::SUCCESS)
    }
}
