//! Network namespaces, veth links and processes for smf-firewall's kernel tests and demo.
//!
//! Every resource is a guard that removes what it made in `Drop`, also when a test panics
//! (the pattern of cilium/ebpf's `NewNetNS` + `t.Cleanup`). Names carry the process id and a
//! counter, so tests can run in parallel. Addresses come from 198.18.0.0/15 only.

use std::{
    thread,
    time::{Duration, Instant},
};

mod daemon_dir;
mod netns;
mod postgres;
mod process;
mod prometheus;
mod scrape;
mod site;
mod stop;

pub use daemon_dir::{DaemonDir, remove_pins, start_daemon};
pub use netns::{NetNs, READY_LIMIT, veth};
pub use nix::sys::signal::Signal;
pub use postgres::{Postgres, require_postgres};
pub use process::Process;
pub use prometheus::{Prometheus, require_prometheus};
pub use scrape::{http_get, sample, scrape};
pub use site::{ADAPTER_LAN, ADAPTER_WAN, LAN_HOST, Site, WAN_HOST, tcp_message};
pub use stop::{install_stop_handler, stop_requested};

/// Polls `done` every 100 ms until it holds or `limit` has passed; returns whether it held.
/// For state that settles asynchronously (a reload, a sweep, a recheck): waiting, not timing.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Kernel tests need root. Without it they are skipped with a note, except where skipping
/// would hide a failure (`CI=true` or `SMF_FIREWALL_KERNEL_TESTS=1`): there they fail.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let must_run = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SMF_FIREWALL_KERNEL_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !must_run,
        "{test}: needs root to load XDP programs and create namespaces"
    );
    eprintln!("skip: {test} needs root");
    false
}
