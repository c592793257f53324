//! What the kernel benchmarks share: timing a program with BPF_PROG_TEST_RUN, the frames, the
//! peer comparison's content, loading rules as the daemon does, commands, and the stop flag
//! that turns Ctrl-C into an error so that every guard's `Drop` cleans up.

use std::{path::Path, process::Command};

use aya::programs::Xdp;
use firewall_benches::REPEAT;
use firewall_common::conntrack::tracked;
use firewall_dataplane::{
    conntrack::Timeouts,
    loader::{Capacity, Dataplane},
    test_run,
};
use firewall_rules::{
    RuleSet,
    compile::{self, RuleCounters},
    spec::PacketSpec,
};

pub type Result<T> = std::result::Result<T, String>;

pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// BPF_PROG_TEST_RUN repetitions per round: `SMF_BENCH_REPEAT` for quick runs, else `REPEAT`.
pub fn repeat() -> u32 {
    env_or("SMF_BENCH_REPEAT", REPEAT)
}

/// An environment setting, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Ctrl-C and SIGTERM set testbed's stop flag instead of killing the process: the next
/// `check` fails, and the guards of what was created (namespaces, programs, nft tables,
/// sysctls) undo it as the error unwinds.
pub fn install_stop_handler() -> Result<()> {
    testbed::install_stop_handler().map_err(err)
}

/// Fails once a stop was asked for.
pub fn check() -> Result<()> {
    if testbed::stop_requested() {
        Err("interrupted".to_string())
    } else {
        Ok(())
    }
}

/// The kernel's average nanoseconds per run of `frame`, over `repeat()` runs (the median of
/// 3), after checking that the program returns `action` for it.
pub fn time_expecting(program: &Xdp, frame: &[u8], action: u32) -> Result<f64> {
    let got = test_run::run(program, frame, 1).map_err(err)?.action;
    if got != action {
        return Err(format!(
            "the program returned {got}, not {action}: the row would time another path"
        ));
    }
    time(program, frame)
}

/// Fresh loads of a program whose time is a row's figure: where the kernel places a
/// program's image moves its time by several ns from one load to the next (the same program,
/// the same run), so a row is the median over this many loads.
pub const LOADS: usize = 3;

/// The median of `LOADS` calls of `timed`, each of which loads its program afresh.
pub fn over_loads(mut timed: impl FnMut() -> Result<f64>) -> Result<f64> {
    let times = (0..LOADS).map(|_| timed()).collect::<Result<Vec<_>>>()?;
    Ok(firewall_benches::median(&times))
}

/// The kernel's average nanoseconds per run of `frame`, over `repeat()` runs (the median of 3).
pub fn time(program: &Xdp, frame: &[u8]) -> Result<f64> {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        check()?;
        let outcome = test_run::run(program, frame, repeat()).map_err(err)?;
        rounds.push(outcome.duration.as_nanos() as f64);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[1])
}

pub fn frame(spec: &str) -> Vec<u8> {
    let mut frame = PacketSpec::parse(spec).expect("bench specs parse").frame();
    frame.resize(frame.len().max(60), 0); // Ethernet minimum, as on the wire
    frame
}

/// How the flow table's switch is set for a load.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// As the daemon sets it: on when some rule has `state: true`.
    Daemon,
    Off,
    On,
}

/// Compiles `text` for its (first) interface as slot 0, loads it licensed with slot 0 bound to
/// loopback (where BPF_PROG_TEST_RUN runs frames) and installs it.
pub fn load(text: &str, tracking: Tracking) -> Result<Dataplane> {
    let rules = RuleSet::parse(Path::new("bench.yaml"), text).map_err(err)?;
    let interface = rules
        .interfaces
        .keys()
        .next()
        .ok_or("no interface")?
        .clone();
    let compiled =
        compile::ruleset(&rules, &[(interface, 0)], &mut RuleCounters::default()).map_err(err)?;
    let mut dataplane =
        Dataplane::load_for_test_run(Capacity::for_compiled(&compiled)).map_err(err)?;
    let mut settings = Timeouts::default().settings();
    settings.tracking = switch(&rules, tracking);
    dataplane.set_conntrack(&settings).map_err(err)?;
    dataplane.install(&compiled).map_err(err)?;
    Ok(dataplane)
}

/// The tracking switch for `rules`: the daemon's rule (firewall-user's reload) tracks the
/// protocols of the `state: true` rules.
fn switch(rules: &RuleSet, tracking: Tracking) -> u64 {
    match tracking {
        Tracking::Daemon => Timeouts::default().settings().tracking | rules.tracked(),
        Tracking::Off => 0,
        Tracking::On => tracked::ALL,
    }
}

/// The tracking switch for the rules of `text`, as `load` sets it.
pub fn tracking_switch(text: &str, tracking: Tracking) -> Result<u64> {
    let rules = RuleSet::parse(Path::new("bench.yaml"), text).map_err(err)?;
    Ok(switch(&rules, tracking))
}

/// Runs a command to completion; its stdout and stderr, or an error naming it.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{program} {args:?}: {text}"))
    }
}

/// The peer comparison's content: this many destination hosts and one UDP port, dropped.
pub const PEER_ADDRESSES: usize = 1_000;
pub const PEER_PORT: u16 = 9;
/// A 60-byte UDP/IPv4 frame that misses every entry of the peer comparison.
pub const PEER_MISS: &str = "udp 198.18.9.9:40000 -> 198.18.200.1:53";

pub fn peer_addresses() -> Vec<String> {
    (0..PEER_ADDRESSES)
        .map(|i| format!("198.19.{}.{}", i / 250, 1 + i % 250))
        .collect()
}

const PEER_HEADER: &str = "version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n";

/// The port rule both shapes end with.
fn port_rule() -> String {
    format!("      - {{ id: blocked-port, action: drop, protocol: udp, dst_port: {PEER_PORT} }}\n")
}

/// Shape (a), xdp-filter's own: one drop rule per host, then the port rule. `extra` goes
/// first (e.g. a `state: true` rule the packet misses).
pub fn host_rules(addresses: &[String], extra: &str) -> String {
    let mut text = format!("{PEER_HEADER}{extra}");
    for (i, address) in addresses.iter().enumerate() {
        text.push_str(&format!(
            "      - {{ id: host-{i}, action: drop, dst: {address} }}\n"
        ));
    }
    text + &port_rule()
}

/// Shape (b): one rule over the list of hosts, then the port rule.
pub fn set_rules(addresses: &[String]) -> String {
    format!(
        "{PEER_HEADER}      - {{ id: blocked-hosts, action: drop, dst: [{}] }}\n{}",
        addresses.join(", "),
        port_rule()
    )
}

/// `text` with its interface's default turned to drop: what the live table loads, so that every
/// receiver drops the miss (as xdp-filter's deny policy does) and none pays the stack's cost.
pub fn default_drop(text: &str) -> String {
    text.replacen("default: pass", "default: drop", 1)
}

/// A `state: true` rule that the peer packet (UDP) does not match.
pub const STATE_RULE: &str =
    "      - { id: state-out, action: pass, protocol: tcp, src: 198.18.0.0/16, state: true }\n";
