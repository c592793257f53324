//! Licensing end to end: the real daemon in the adapter namespace of a small site,
//! its contract store changed with the real `smf-firewall contracts` commands while it runs,
//! real traffic through it, and the licence metrics read from `/metrics`.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use chrono::{Days, Utc};
use testbed::{NetNs, Process, Signal, Site};

use crate::{
    common::{self, DISCARD_RULES, metric},
    smf_firewall,
};

const SERIAL: &str = "FUJI-0001";

/// `smf-firewall ARGS --db DB`, which must succeed.
fn contracts(db: &str, args: &[&str]) {
    let out = Command::new(smf_firewall())
        .args(args)
        .args(["--db", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Today and yesterday in the store's time zone (the default, Asia/Tokyo).
fn today_and_yesterday() -> (String, String) {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .date_naive();
    let yesterday = today - Days::new(1);
    (today.to_string(), yesterday.to_string())
}

/// A licensed x86 Fuji adapter: management, entry and option since 2020.
fn seed(db: &str) {
    contracts(db, &["contracts", "init"]);
    contracts(
        db,
        &[
            "contracts",
            "management",
            "add",
            "--id",
            "M-1",
            "--start",
            "2020-01-01",
        ],
    );
    contracts(
        db,
        &[
            "contracts",
            "adapter",
            "add",
            "--serial",
            SERIAL,
            "--model",
            "x86-fuji",
            "--management",
            "M-1",
            "--role",
            "entry",
            "--since",
            "2020-01-01",
        ],
    );
    contracts(
        db,
        &[
            "contracts",
            "option",
            "add",
            "--id",
            "UFO-1",
            "--serial",
            SERIAL,
            "--start",
            "2020-01-01",
        ],
    );
}

fn start(adapter: &NetNs, dir: &testbed::DaemonDir, db: &str, grace: &str) -> Process {
    let config = dir
        .write(
            &format!(
                "rules: rules.yaml\ninterfaces: [lan0, wan0]\nadapter: {{serial: {SERIAL}}}\n\
                 contracts: {{url: \"{db}\"}}\nlicense: {{recheck: 1s, grace: {grace}}}\n"
            ),
            DISCARD_RULES,
        )
        .unwrap();
    testbed::start_daemon(adapter, smf_firewall(), &config, common::metrics_address()).unwrap()
}

/// Waits (at most `limit`) until `smf_firewall_license_licensed` is `value`.
fn until_licensed_is(adapter: &NetNs, value: f64, limit: Duration) {
    assert!(
        testbed::eventually(limit, || {
            metric(adapter, "smf_firewall_license_licensed", &[]) == Some(value)
        }),
        "smf_firewall_license_licensed did not become {value} within {limit:?}"
    );
}

fn info(adapter: &NetNs, role: &str, reason: &str) -> Option<f64> {
    metric(
        adapter,
        "smf_firewall_license_info",
        &[
            ("serial", SERIAL),
            ("model", "x86-fuji"),
            ("role", role),
            ("reason", reason),
        ],
    )
}

fn counted(adapter: &NetNs, verdict: &str) -> f64 {
    metric(
        adapter,
        "smf_firewall_packets_total",
        &[("interface", "lan0"), ("verdict", verdict)],
    )
    .unwrap()
}

#[test]
fn terminating_the_option_stops_filtering_within_a_recheck_and_a_new_option_restores_it() {
    let Some(site) = common::site("license_e2e::terminate_and_readd") else {
        return;
    };
    let dir = testbed::DaemonDir::new().unwrap();
    let db = format!("sqlite:{}", dir.path().join("contracts.db").display());
    seed(&db);
    let daemon = start(&site.adapter, &dir, &db, "1h");

    // Licensed: the rule drops, and the metrics say why.
    assert_eq!(
        metric(&site.adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    assert_eq!(info(&site.adapter, "entry", "licensed"), Some(1.0));
    assert_eq!(
        metric(&site.adapter, "smf_firewall_contract_store_up", &[]),
        Some(1.0)
    );
    assert!(site.udp_through(10, 3).unwrap() == 3, "other ports pass");
    assert_eq!(
        site.udp_through(9, 3).unwrap(),
        0,
        "licensed: UDP 9 is dropped"
    );
    let dropped = counted(&site.adapter, "drop");
    assert!(dropped >= 3.0);

    // The provider ends the option yesterday: within one recheck (1 s) the rule stops.
    let (today, yesterday) = today_and_yesterday();
    contracts(
        &db,
        &[
            "contracts",
            "terminate",
            "--id",
            "UFO-1",
            "--on",
            &yesterday,
            "--by",
            "provider",
        ],
    );
    // One recheck, plus the time to scrape and to run the check.
    until_licensed_is(&site.adapter, 0.0, Duration::from_millis(2500));
    assert_eq!(info(&site.adapter, "entry", "option_terminated"), Some(1.0));
    assert_eq!(
        info(&site.adapter, "entry", "licensed"),
        None,
        "one info series"
    );
    let passed = counted(&site.adapter, "pass");
    assert_eq!(
        site.udp_through(9, 3).unwrap(),
        3,
        "not licensed: UDP 9 passes"
    );
    // Still metered, as passed (Art. 24); nothing more dropped.
    assert!(counted(&site.adapter, "pass") >= passed + 3.0);
    assert_eq!(counted(&site.adapter, "drop"), dropped);
    assert!(site.adapter.has_xdp("lan0").unwrap(), "XDP stays attached");

    // A new option from today (Art. 4-2: the old one has ended): dropping again.
    contracts(
        &db,
        &[
            "contracts",
            "option",
            "add",
            "--id",
            "UFO-2",
            "--serial",
            SERIAL,
            "--start",
            &today,
        ],
    );
    until_licensed_is(&site.adapter, 1.0, Duration::from_millis(2500));
    assert_eq!(info(&site.adapter, "entry", "licensed"), Some(1.0));
    assert_eq!(
        site.udp_through(9, 3).unwrap(),
        0,
        "licensed again: UDP 9 is dropped"
    );
    assert_eq!(counted(&site.adapter, "drop"), dropped + 3.0);

    let checks = |result| {
        metric(
            &site.adapter,
            "smf_firewall_license_checks_total",
            &[("result", result)],
        )
    };
    assert!(checks("licensed").unwrap() >= 2.0);
    assert!(checks("not_licensed").unwrap() >= 1.0);
    assert_eq!(checks("error"), None, "the store always answered");

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    assert!(exit.status.success(), "exit after SIGTERM: {exit:?}");
    let log = String::from_utf8_lossy(&exit.stderr);
    assert!(log.contains("not licensed: passing every packet"), "{log}");
    assert!(
        log.contains("reason=\"option_terminated\"") || log.contains("reason=option_terminated"),
        "{log}"
    );
    assert!(!site.adapter.has_xdp("lan0").unwrap(), "XDP left on lan0");
}

#[test]
fn an_unreachable_store_holds_the_last_decision_for_grace_then_passes_everything() {
    if !testbed::require_root("license_e2e::grace") {
        return;
    }
    // Its own server, so that stopping it disturbs no other test.
    let Some(_) = testbed::require_postgres("license_e2e::grace") else {
        return;
    };
    let server = testbed::Postgres::start().unwrap();
    let db = server.database().unwrap();
    seed(&db);
    let site = Site::new().unwrap();
    let dir = testbed::DaemonDir::new().unwrap();
    let daemon = start(&site.adapter, &dir, &db, "3s");
    assert_eq!(
        metric(&site.adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    assert_eq!(site.udp_through(9, 2).unwrap(), 0, "licensed: dropped");

    let stopped = Instant::now();
    drop(server);
    // Held: the store is down, the decision stands.
    let start = Instant::now();
    while metric(&site.adapter, "smf_firewall_contract_store_up", &[]) != Some(0.0) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "store_up did not drop to 0"
        );
        thread::sleep(Duration::from_millis(100));
    }
    if stopped.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            metric(&site.adapter, "smf_firewall_license_licensed", &[]),
            Some(1.0)
        );
        assert_eq!(info(&site.adapter, "entry", "licensed"), Some(1.0));
    }
    // Lapsed after grace: not licensed, every packet passes.
    until_licensed_is(&site.adapter, 0.0, Duration::from_secs(8));
    // The last answer came at most one recheck (1 s) before the stop; grace is 3 s.
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "lapsed before grace"
    );
    assert_eq!(
        metric(
            &site.adapter,
            "smf_firewall_license_info",
            &[
                ("serial", SERIAL),
                ("model", ""),
                ("role", ""),
                ("reason", "store_unreachable")
            ],
        ),
        Some(1.0)
    );
    assert_eq!(site.udp_through(9, 2).unwrap(), 2, "grace over: passed");
    assert!(
        metric(
            &site.adapter,
            "smf_firewall_license_checks_total",
            &[("result", "error")]
        )
        .unwrap()
            >= 1.0
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    let log = String::from_utf8_lossy(&exit.stderr);
    assert!(
        log.contains("the last licence decision holds for the grace period"),
        "{log}"
    );
    assert!(log.contains("no licence decision holds"), "{log}");
}

#[test]
fn a_restart_while_the_store_is_unreachable_holds_the_licence_of_the_pinned_dataplane() {
    let Some(site) = common::site("license_e2e::restart_store_unreachable") else {
        return;
    };
    let dir = testbed::DaemonDir::new().unwrap();
    let file = dir.path().join("contracts.db");
    let db = format!("sqlite:{}", file.display());
    seed(&db);
    let daemon = start(&site.adapter, &dir, &db, "1h");
    assert_eq!(
        site.udp_through(9, 3).unwrap(),
        0,
        "licensed: UDP 9 is dropped"
    );
    daemon.signal(Signal::SIGKILL).unwrap();
    daemon.wait().unwrap();
    // The store goes away while no daemon runs: the kernel keeps enforcing...
    std::fs::rename(&file, dir.path().join("contracts.db.away")).unwrap();
    assert_eq!(
        site.udp_through(9, 3).unwrap(),
        0,
        "enforced with no daemon"
    );
    // ...and the restarted daemon, unable to ask, holds the decision the store made.
    let daemon = start(&site.adapter, &dir, &db, "1h");
    assert_eq!(
        metric(&site.adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric(&site.adapter, "smf_firewall_contract_store_up", &[]),
        Some(0.0)
    );
    assert_eq!(
        site.udp_through(9, 3).unwrap(),
        0,
        "still dropped after the restart"
    );
    daemon.signal(Signal::SIGTERM).unwrap();
    let log = String::from_utf8_lossy(&daemon.wait().unwrap().stderr).into_owned();
    assert!(
        log.contains("that decision holds for the grace period"),
        "{log}"
    );
}
