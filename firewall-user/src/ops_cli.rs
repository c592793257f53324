//! `smf-firewall reload`, `status` and `unload`: the operator's side of a running daemon.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use firewall_dataplane::pins::Pins;
use firewall_user::{
    config::{Config, DEFAULT_CONFIG, Operations},
    control::{self, Request},
};

/// A reload of 100,000 rules takes a few seconds; status is immediate.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct ReloadArgs {
    /// The daemon's configuration: says where its control socket is.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print the daemon's answer as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The daemon's configuration: says where its control socket is.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UnloadArgs {
    /// The configuration whose `pin_path` and `runtime_dir` to clear.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

fn config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("cannot read the configuration {}", path.display()))
}

pub fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let socket = config(&args.config)?.operations.control_socket();
    let answer = control::call(&socket, Request::Reload, RELOAD_TIMEOUT)?;
    if args.json {
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
    if !args.json {
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

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let socket = config(&args.config)?.operations.control_socket();
    let answer = control::call(&socket, Request::Status, STATUS_TIMEOUT)?;
    if args.json {
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

pub fn unload(args: UnloadArgs) -> anyhow::Result<ExitCode> {
    // After an uninstall the config may be gone, the pins not: the defaults find those.
    let ops = if !args.config.exists() && args.config == Path::new(DEFAULT_CONFIG) {
        eprintln!("{DEFAULT_CONFIG} does not exist: using the default pin_path and runtime_dir");
        Operations::default()
    } else {
        config(&args.config)?.operations
    };
    let socket = ops.control_socket();
    if control::call(&socket, Request::Status, STATUS_TIMEOUT).is_ok() {
        anyhow::bail!(
            "the daemon is running (it answers on {}); stop it first (systemctl stop smf-firewall, or SIGTERM)",
            socket.display()
        );
    }
    let pins = Pins::new(&ops.pin_path);
    let removed = pins
        .remove_all()
        .with_context(|| format!("cannot unpin everything under {}", pins.root().display()))?;
    for interface in &removed.links {
        println!("detached XDP from {interface}");
    }
    for dir in &removed.maps_dirs {
        println!("unpinned maps {}", dir.display());
    }
    for leftover in [ops.state_file(), socket] {
        match std::fs::remove_file(&leftover) {
            Ok(()) => println!("removed {}", leftover.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).context(format!("cannot remove {}", leftover.display()));
            }
        }
    }
    if removed.links.is_empty() && removed.maps_dirs.is_empty() {
        println!("nothing pinned under {}", pins.root().display());
    }
    Ok(ExitCode::SUCCESS)
}
