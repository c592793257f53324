//! Drop logs end to end: the real daemon in the adapter namespace of a small site,
//! real traffic hitting a `log: true` rule, the log lines on the daemon's stderr, and the
//! counts on `/metrics`, which carries no address.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use testbed::{ADAPTER_LAN, ADAPTER_WAN, LAN_HOST, Signal, WAN_HOST, sample};

use crate::common::{self, start};

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-discard, action: drop, log: true, protocol: udp, dst_port: 9 }
      - { id: no-chargen, action: drop, protocol: udp, dst_port: 19 }
  wan0:
    default: pass
";

/// Sent to the logged port: more than the rate, so that some are suppressed.
const LOGGED: usize = 30;
const RATE: u64 = 10;

fn files() -> (testbed::DaemonDir, PathBuf) {
    let dir = testbed::DaemonDir::new().unwrap();
    let path = dir
        .write(
            &format!(
                "rules: rules.yaml\ninterfaces: [lan0, wan0]\ndrop_log: {{rate_per_second: {RATE}}}\n"
            ),
            RULES,
        )
        .unwrap();
    (dir, path)
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("{name} missing from:\n{text}")) as u64
}

#[test]
fn a_log_rule_writes_sampled_log_lines_and_metrics_count_them_without_addresses() {
    let Some(site) = common::site("drop_log_e2e::log_lines") else {
        return;
    };
    let (_dir, config) = files();
    let daemon = start(&site.adapter, &config);
    let metrics = || common::scrape(&site.adapter);
    let events = |text: &str| {
        metric(
            text,
            "smf_firewall_drop_log_events_total",
            &[("interface", "lan0")],
        )
    };
    let before = metrics();
    assert_eq!(events(&before), 0);
    assert_eq!(
        metric(
            &before,
            "smf_firewall_drop_log_events_total",
            &[("interface", "wan0")]
        ),
        0
    );

    assert_eq!(site.udp_through(19, 5).unwrap(), 0, "UDP 19 is dropped");
    assert_eq!(site.udp_through(9, LOGGED).unwrap(), 0, "UDP 9 is dropped");

    // Every packet the log rule dropped is an event or suppressed, whatever the timing; the
    // first RATE always get through (a quiet rule's bucket is full).
    let hits = |text: &str| {
        metric(
            text,
            "smf_firewall_rule_hits_total",
            &[("interface", "lan0"), ("rule", "no-discard")],
        )
    };
    let suppressed = |text: &str| metric(text, "smf_firewall_drop_log_suppressed_total", &[]);
    // The reader logs asynchronously: wait (not a pass/fail timing) until it has caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let text = metrics();
        if events(&text) + suppressed(&text) >= LOGGED as u64 || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (logged, suppressed) = (events(&after), suppressed(&after));
    assert_eq!(hits(&after), LOGGED as u64);
    assert_eq!(logged + suppressed, LOGGED as u64, "{after}");
    assert!((RATE..=LOGGED as u64).contains(&logged), "{after}");
    assert_eq!(metric(&after, "smf_firewall_drop_log_lost_total", &[]), 0);
    for host in [LAN_HOST, WAN_HOST, ADAPTER_LAN, ADAPTER_WAN] {
        assert!(
            !after.contains(host),
            "{host} appears in /metrics:\n{after}"
        );
    }

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    assert!(exit.status.success(), "exit after SIGTERM: {exit:?}");
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("dropped packet"))
        .collect();
    assert_eq!(lines.len() as u64, logged, "{stderr}");
    for line in &lines {
        for field in [
            "interface=lan0".to_string(),
            "rule=no-discard".to_string(),
            "protocol=udp".to_string(),
            format!("src={LAN_HOST}"),
            format!("dst={WAN_HOST}"),
            "dst_port=9".to_string(),
            "vlan=0".to_string(),
            "bytes=142".to_string(),
        ] {
            assert!(line.contains(&field), "{field} missing: {line}");
        }
        assert!(line.contains("src_port="), "{line}");
    }
    assert!(
        !stderr.contains("no-chargen"),
        "a rule without `log` logged:\n{stderr}"
    );
}
