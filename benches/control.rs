//! What it costs to change and hold large rule sets: parse, compile and swap 10k and 100k
//! rules, and the real daemon's memory with 100k.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use firewall_benches::generate;
use firewall_dataplane::loader::{Capacity, Dataplane};
use firewall_rules::{
    RuleSet,
    compile::{self, RuleCounters},
};
use serde::Serialize;
use testbed::{NetNs, Signal, sample, scrape};

use crate::kernel::{Result, err};

/// What it costs to change and hold large rule sets.
#[derive(Serialize)]
pub struct Control {
    rules: usize,
    parse_ms: f64,
    compile_and_swap_ms: f64,
    daemon_rss_mib: Option<f64>,
}

pub fn control(count: usize) -> Result<Control> {
    let text = generate::rules(count, 1);
    let started = Instant::now();
    let rules = RuleSet::parse(Path::new("bench.yaml"), &text).map_err(err)?;
    let parse = started.elapsed();
    let slots = [(generate::INTERFACE.to_string(), 0)];
    let mut counters = RuleCounters::default();
    let first = compile::ruleset(&rules, &slots, &mut counters).map_err(err)?;
    let mut dataplane = Dataplane::load(Capacity::for_compiled(&first)).map_err(err)?;
    dataplane.install(&first).map_err(err)?;
    // The swap that counts is the second: into the generation the program does not read.
    let started = Instant::now();
    let compiled = compile::ruleset(&rules, &slots, &mut counters).map_err(err)?;
    dataplane
        .reset_rule_counters(&compiled.fresh_counters)
        .map_err(err)?;
    dataplane.install(&compiled).map_err(err)?;
    let swap = started.elapsed();
    Ok(Control {
        rules: count,
        parse_ms: ms(parse),
        compile_and_swap_ms: ms(swap),
        daemon_rss_mib: if count == 100_000 {
            daemon_rss(&text)?
        } else {
            None
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The resident memory of the real daemon with these rules loaded on `lan0` (a veth end), in MiB;
/// `None` when the release binary was not built (`cargo xtask bench` builds it).
fn daemon_rss(rules: &str) -> Result<Option<f64>> {
    let binary = std::env::var_os("SMF_FIREWALL_BIN").map(PathBuf::from);
    let Some(binary) = binary.filter(|b| b.exists()) else {
        eprintln!("daemon RSS: skipped, SMF_FIREWALL_BIN does not name a built smf-firewall");
        return Ok(None);
    };
    let dir = std::env::temp_dir().join(format!("smf-bench-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    std::fs::write(dir.join("rules.yaml"), rules).map_err(err)?;
    // Pins of its own, and a SIGTERM at the end: nothing is left attached or pinned.
    let pins = PathBuf::from(format!("/sys/fs/bpf/smf-bench-{}", std::process::id()));
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "rules: rules.yaml\ninterfaces: [{}]\npin_path: {}\nruntime_dir: {}\n",
            generate::INTERFACE,
            pins.display(),
            dir.join("run").display()
        ),
    )
    .map_err(err)?;
    let ns = NetNs::new("bench").map_err(err)?;
    ns.ip(&[
        "link",
        "add",
        generate::INTERFACE,
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    ])
    .map_err(err)?;
    ns.ip(&["link", "set", generate::INTERFACE, "up"])
        .map_err(err)?;
    let config = dir.join("config.yaml");
    let mut daemon = ns
        .spawn(
            &binary.to_string_lossy(),
            &["run", "--config", &config.to_string_lossy()],
        )
        .map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = "127.0.0.1:9775".parse().map_err(err)?;
    while scrape(&ns, address)
        .map(|t| {
            sample(
                &t,
                "smf_firewall_packets_total",
                &[("interface", generate::INTERFACE), ("verdict", "pass")],
            )
            .is_none()
        })
        .unwrap_or(true)
    {
        if daemon.exited().map_err(err)? || Instant::now() > deadline {
            return Err(format!(
                "the daemon did not start: {:?}",
                daemon.wait().map_err(err)?
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id())).map_err(err)?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    daemon.signal(Signal::SIGTERM).map_err(err)?;
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(kib / 1024.0))
}

/// Prints the control table.
pub fn print(control: &[Control]) {
    println!(
        "\n{:>8} {:>10} {:>22} {:>16}",
        "rules", "parse ms", "compile + swap ms", "daemon RSS MiB"
    );
    for c in control {
        let rss = c
            .daemon_rss_mib
            .map_or("-".to_string(), |m| format!("{m:.1}"));
        println!(
            "{:>8} {:>10.0} {:>22.0} {:>16}",
            c.rules, c.parse_ms, c.compile_and_swap_ms, rss
        );
    }
}
