//! One daemon per pin_path and runtime_dir, end to end: two daemons started at the same
//! instant, a second daemon on the same pin_path with a runtime_dir and metrics port of its
//! own, and `unload` while a daemon holds the lock but its socket does not answer. Each time
//! the first daemon's pins, counters and enforcement are untouched.

use std::{
    net::SocketAddr,
    path::Path,
    process::Output,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use testbed::{NetNs, Process, Signal, Site};

use crate::{
    common::{self, CONFIG, DISCARD_RULES, DROPPED, PASSED, metric, text},
    smf_firewall,
};

fn spawn(adapter: &NetNs, config: &Path) -> Process {
    adapter
        .spawn(
            smf_firewall(),
            &["run", "--config", config.to_str().unwrap()],
        )
        .unwrap()
}

fn serves(adapter: &NetNs, address: SocketAddr) -> bool {
    testbed::scrape(adapter, address).is_ok()
}

/// The rules are enforced: dropped port dropped, passed port passed.
fn enforcing(site: &Site) -> bool {
    site.udp_through(DROPPED, 3).unwrap() == 0 && site.udp_through(PASSED, 3).unwrap() == 3
}

fn hits(adapter: &NetNs) -> f64 {
    metric(
        adapter,
        "smf_firewall_rule_hits_total",
        &[("interface", "lan0"), ("rule", "no-discard")],
    )
    .unwrap()
}

fn pins_of(pin_path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["links", "egress"] {
        for entry in std::fs::read_dir(pin_path.join(dir)).unwrap() {
            found.push(format!(
                "{dir}/{}",
                entry.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    for entry in std::fs::read_dir(pin_path).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("maps-") {
            found.push(name);
        }
    }
    found.sort();
    found
}

/// The process's output once it exited; fails (killing it) if it runs for `limit`.
fn exits_within(mut process: Process, limit: Duration) -> Output {
    let start = Instant::now();
    while !process.exited().unwrap() {
        if start.elapsed() > limit {
            process.signal(Signal::SIGKILL).unwrap();
            panic!(
                "still running after {limit:?}: {:?}",
                process.wait().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    process.wait().unwrap()
}

fn stop(daemon: Process) -> Output {
    daemon.signal(Signal::SIGTERM).unwrap();
    daemon.wait().unwrap()
}

#[test]
fn of_two_daemons_started_at_once_one_runs_and_the_other_names_it() {
    let Some(site) = common::site("instances_e2e::two_at_once") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let barrier = Arc::new(Barrier::new(2));
    let [mut a, mut b] = thread::scope(|scope| {
        let started = [0, 1].map(|_| {
            let (barrier, site, config) = (Arc::clone(&barrier), &site, &config);
            scope.spawn(move || {
                barrier.wait();
                spawn(&site.adapter, config)
            })
        });
        started.map(|handle| handle.join().unwrap())
    });
    // The loser exits at once; the winner serves once it has attached.
    let start = Instant::now();
    let loser_first = loop {
        if a.exited().unwrap() {
            break true;
        }
        if b.exited().unwrap() {
            break false;
        }
        assert!(
            start.elapsed() < testbed::READY_LIMIT,
            "neither daemon exited"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let (loser, winner) = if loser_first { (a, b) } else { (b, a) };
    let out = loser.wait().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("another smf-firewall (pid {})", winner.id())),
        "{stderr}"
    );
    assert!(
        testbed::eventually(testbed::READY_LIMIT, || serves(
            &site.adapter,
            common::metrics_address()
        )),
        "the winner never served"
    );
    let mut winner = winner;
    assert!(!winner.exited().unwrap(), "the winner runs");
    assert!(enforcing(&site));
    assert!(site.adapter.has_xdp("lan0").unwrap());
    let pins = pins_of(dir.pin_path());
    assert!(
        pins.contains(&"links/lan0".to_string())
            && pins.contains(&"egress/wan0".to_string())
            && pins.iter().any(|p| p.starts_with("maps-")),
        "{pins:?}"
    );
    let out = stop(winner);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_second_daemon_on_the_same_pin_path_is_refused_and_changes_nothing() {
    let Some(site) = common::site("instances_e2e::same_pin_path") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let first = common::start(&site.adapter, &config);
    assert!(enforcing(&site));
    assert_eq!(hits(&site.adapter), 3.0);
    let pins_before = pins_of(dir.pin_path());

    // Its own runtime_dir and metrics port, the first one's pin_path.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("rules.yaml"), DISCARD_RULES).unwrap();
    let second_config = other.path().join("config.yaml");
    std::fs::write(
        &second_config,
        format!(
            "{CONFIG}metrics:\n  listen: 127.0.0.1:9776\npin_path: {}\nruntime_dir: {}\n",
            dir.pin_path().display(),
            other.path().join("run").display()
        ),
    )
    .unwrap();
    let out = exits_within(
        spawn(&site.adapter, &second_config),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("another smf-firewall (pid {})", first.id()))
            && stderr.contains(&dir.pin_path().display().to_string()),
        "{stderr}"
    );
    // The first one's counters, pins and enforcement are untouched.
    assert_eq!(hits(&site.adapter), 3.0, "the counters were not reset");
    assert_eq!(pins_of(dir.pin_path()), pins_before);
    assert!(enforcing(&site));
    assert_eq!(hits(&site.adapter), 6.0);
    // And a crash of the first still leaves the kernel enforcing: nothing was unpinned.
    first.signal(Signal::SIGKILL).unwrap();
    first.wait().unwrap();
    assert!(site.adapter.has_xdp("lan0").unwrap());
    assert!(enforcing(&site));
    let out = site
        .adapter
        .command(smf_firewall())
        .args(["unload", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn unload_refuses_while_a_daemon_holds_the_lock_even_if_its_socket_is_gone() {
    let Some(site) = common::site("instances_e2e::unload_locked") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let daemon = common::start(&site.adapter, &config);
    // The socket removed (by hand, or a tmpfiles cleaner): the daemon cannot be asked.
    std::fs::remove_file(dir.path().join("run/control.sock")).unwrap();
    let out = site
        .adapter
        .command(smf_firewall())
        .args(["unload", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the daemon is running")
            && stderr.contains(&format!("pid {}", daemon.id())),
        "{stderr}"
    );
    assert!(site.adapter.has_xdp("lan0").unwrap());
    assert!(enforcing(&site));
    assert!(!pins_of(dir.pin_path()).is_empty());
    let out = stop(daemon);
    assert!(out.status.success(), "{out:?}");
}
