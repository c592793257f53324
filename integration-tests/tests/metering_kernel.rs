//! Counters are monotonic across a rule change (metering): what Prometheus reads from the
//! kernel after a new rule set is installed is never less than before. Interface counters run
//! on, a rule that stays keeps its counter, a new rule starts from 0.

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use firewall_dataplane::loader::Dataplane;
use firewall_rules::{
    Direction, RuleSet,
    compile::{self, Compiled, RuleCounters},
    spec::PacketSpec,
};
use firewall_user::metrics::DataplaneCollector;
use prometheus::{Encoder, Registry, TextEncoder};
use testbed::sample;

use crate::common;

fn compile(rules: &str, counters: &mut RuleCounters) -> Compiled {
    let text = format!("version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n{rules}");
    let rules = RuleSet::parse(Path::new("reload.yaml"), &text).unwrap();
    compile::ruleset(&rules, &[("lo".to_string(), 0)], counters).unwrap()
}

/// Runs `count` UDP packets to `port` through the program.
fn udp(dataplane: &Mutex<Dataplane>, port: u16, count: u32) {
    let frame = PacketSpec::parse(&format!("udp 198.18.0.1:5000 -> 198.19.0.1:{port}"))
        .unwrap()
        .frame();
    let mut dataplane = dataplane.lock().unwrap();
    dataplane
        .run_repeated(&frame, Direction::In, count)
        .unwrap();
}

/// What a scrape shows, as Prometheus' text format.
fn scrape(collector: DataplaneCollector) -> String {
    let registry = Registry::new();
    registry.register(Box::new(collector)).unwrap();
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    String::from_utf8(text).unwrap()
}

fn collector(dataplane: &Arc<Mutex<Dataplane>>, counters: &RuleCounters) -> DataplaneCollector {
    let rules = counters
        .iter()
        .map(|(i, r, s)| (i.to_string(), r.to_string(), s))
        .collect();
    DataplaneCollector::new(
        Arc::clone(dataplane),
        vec!["lo".to_string()],
        Arc::new(RwLock::new(rules)),
    )
}

#[test]
fn counters_run_on_across_a_rule_change() {
    if !testbed::require_root("metering_kernel::reload") {
        return;
    }
    let mut counters = RuleCounters::default();
    let first = compile(
        "      - { id: keep, action: drop, protocol: udp, dst_port: 9 }\n      \
         - { id: gone, action: drop, protocol: udp, dst_port: 10 }\n",
        &mut counters,
    );
    let mut dataplane = common::dataplane();
    dataplane
        .reset_rule_counters(&first.fresh_counters)
        .unwrap();
    dataplane.install(&first).unwrap();
    let dataplane = Arc::new(Mutex::new(dataplane));
    udp(&dataplane, 9, 30);
    udp(&dataplane, 10, 20);
    udp(&dataplane, 11, 10);
    let before = scrape(collector(&dataplane, &counters));

    // The rule set changes: `keep` stays, `gone` goes, `new` comes.
    let second = compile(
        "      - { id: new, action: drop, protocol: udp, dst_port: 11 }\n      \
         - { id: keep, action: drop, protocol: udp, dst_port: 9 }\n",
        &mut counters,
    );
    {
        let mut dataplane = dataplane.lock().unwrap();
        dataplane
            .reset_rule_counters(&second.fresh_counters)
            .unwrap();
        dataplane.install(&second).unwrap();
    }
    udp(&dataplane, 9, 3);
    udp(&dataplane, 11, 4);
    let after = scrape(collector(&dataplane, &counters));

    let value = |text: &str, name, labels: &[(&str, &str)]| sample(text, name, labels);
    let by_verdict = |text: &str, verdict| {
        value(
            text,
            "smf_firewall_packets_total",
            &[("interface", "lo"), ("verdict", verdict)],
        )
    };
    let hits = |text: &str, rule| {
        value(
            text,
            "smf_firewall_rule_hits_total",
            &[("interface", "lo"), ("rule", rule)],
        )
    };
    // Each row: a series, before and after the change.
    let rows = [
        (
            "drop",
            by_verdict(&before, "drop"),
            by_verdict(&after, "drop"),
            Some(50.0),
            Some(57.0),
        ),
        (
            "pass",
            by_verdict(&before, "pass"),
            by_verdict(&after, "pass"),
            Some(10.0),
            Some(10.0),
        ),
        (
            "keep",
            hits(&before, "keep"),
            hits(&after, "keep"),
            Some(30.0),
            Some(33.0),
        ),
        (
            "new",
            hits(&before, "new"),
            hits(&after, "new"),
            None,
            Some(4.0),
        ),
        (
            "gone",
            hits(&before, "gone"),
            hits(&after, "gone"),
            Some(20.0),
            None,
        ),
    ];
    for (series, got_before, got_after, want_before, want_after) in rows {
        assert_eq!(
            (got_before, got_after),
            (want_before, want_after),
            "{series}"
        );
    }
}
