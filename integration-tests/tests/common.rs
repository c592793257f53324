//! What the root-only tests share: the daemon's metrics address, its start and its samples,
//! and frames through the kernel programs of a `Dataplane` (firewall_dataplane's
//! BPF_PROG_TEST_RUN harness), with every error a test failure.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
};

use firewall_dataplane::loader::{Capacity, Dataplane};
use firewall_rules::Direction;
use testbed::{DaemonDir, NetNs, Process, Site, sample};

use crate::smf_firewall;

/// The daemon's config of most end-to-end tests: these rules on both of the adapter's
/// interfaces (and the pins and runtime dir `files` adds).
pub const CONFIG: &str = "rules: rules.yaml\ninterfaces: [lan0, wan0]\n";

/// lan0 drops UDP to the discard port (`DROPPED`) and passes the rest; wan0 passes all.
pub const DISCARD_RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }
  wan0:
    default: pass
";

/// The UDP ports the tests send to through `DISCARD_RULES`: one dropped, one passed.
pub const DROPPED: u16 = 9;
pub const PASSED: u16 = 10;

/// Where every end-to-end daemon serves `/metrics`, inside the adapter namespace.
pub const METRICS: &str = "127.0.0.1:9775";

pub fn metrics_address() -> SocketAddr {
    METRICS.parse().unwrap()
}

/// The daemon under test, `smf-firewall run` with `config`, in `adapter`, serving METRICS.
pub fn start(adapter: &NetNs, config: &Path) -> Process {
    testbed::start_daemon(adapter, smf_firewall(), config, metrics_address()).unwrap()
}

/// The daemon's `/metrics` text.
pub fn scrape(adapter: &NetNs) -> String {
    testbed::scrape(adapter, metrics_address()).unwrap()
}

/// A licensed dataplane with room for the default capacity, slot 0 bound to loopback (where
/// BPF_PROG_TEST_RUN runs frames), no rules yet.
pub fn dataplane() -> Dataplane {
    Dataplane::load_for_test_run(Capacity::default()).expect("the verifier accepts the programs")
}

/// The XDP program's action on `frame`.
pub fn run(dataplane: &mut Dataplane, frame: &[u8]) -> u32 {
    dataplane.run(frame, Direction::In).unwrap().action
}

/// The TC egress program's action on `frame`.
pub fn run_egress(dataplane: &mut Dataplane, frame: &[u8]) -> u32 {
    dataplane.run(frame, Direction::Out).unwrap().action
}

/// The daemon's sample of `name` with `labels`, if it has one.
pub fn metric(adapter: &NetNs, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&scrape(adapter), name, labels)
}

/// The daemon's sample of `name` with `labels`, which must be there.
pub fn required_metric(adapter: &NetNs, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = scrape(adapter);
    sample(&text, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} missing from:\n{text}"))
}

/// The small site an end-to-end test runs in, or None (the test skips) without root.
pub fn site(test: &str) -> Option<Site> {
    testbed::require_root(test).then(|| Site::new().unwrap())
}

/// A config and rules file in a temporary directory, with pins of their own; returns the
/// directory and the config's path.
pub fn files(config: &str, rules: &str) -> (DaemonDir, PathBuf) {
    let dir = DaemonDir::new().unwrap();
    let path = dir.write(config, rules).unwrap();
    (dir, path)
}

/// `smf-firewall ARGS --config CONFIG` in `adapter`.
pub fn cli(adapter: &NetNs, args: &[&str], config: &Path) -> Output {
    adapter
        .command(smf_firewall())
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap()
}

/// Process output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
