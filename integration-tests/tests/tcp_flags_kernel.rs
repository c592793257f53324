//! `tcp_flags` rules in the real XDP program (BPF_PROG_TEST_RUN): the flags byte under the
//! rule's mask decides, only TCP packets with their header match, and the per-rule counters
//! count exactly the packets each rule decided, whether the entry sits in a leaf of its own,
//! in an exact-address table or deep in a decision tree.

use std::{collections::HashMap, path::Path};

use firewall_dataplane::{
    loader::Dataplane,
    test_run::{XDP_DROP, XDP_PASS},
};
use firewall_rules::{
    RuleSet,
    compile::{self, Compiled, RuleCounters},
    spec::PacketSpec,
};

use crate::common::{self, run};

const RULES: &str = "
version: 1
interfaces:
  lo:
    default: pass
    rules:
      - { id: syn-new, action: drop, protocol: tcp, tcp_flags: [syn, \"!ack\"] }
      - { id: v6-rst, action: drop, protocol: tcp, family: ipv6, tcp_flags: rst }
      - { id: fin-ack-80, action: drop, protocol: tcp, dst_port: 80, tcp_flags: \"fin,ack\" }
      - { id: no-ack, action: drop, protocol: tcp, dst: 198.19.9.0/24, tcp_flags: \"!ack\" }
";

/// Compiles `text` for `lo` (slot 0), makes it live with zeroed rule counters; the counter
/// slot of each rule by id.
fn install(dataplane: &mut Dataplane, text: &str) -> (Compiled, HashMap<String, u32>) {
    let rules = RuleSet::parse(Path::new("tcp-flags.yaml"), text).unwrap();
    let mut counters = RuleCounters::default();
    let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
    dataplane
        .reset_rule_counters(&compiled.fresh_counters)
        .unwrap();
    dataplane.install(&compiled).unwrap();
    let slots = rules.interfaces["lo"]
        .rules
        .iter()
        .map(|r| (r.id.clone(), counters.get("lo", &r.id).unwrap()))
        .collect();
    (compiled, slots)
}

fn frame(spec: &str) -> Vec<u8> {
    PacketSpec::parse(spec).unwrap().frame()
}

/// Runs each (packet, deciding rule or `None` for the default pass) and checks the action;
/// then every rule's counter against the packets it decided.
fn check(dataplane: &mut Dataplane, slots: &HashMap<String, u32>, cases: &[(&str, Option<&str>)]) {
    let mut decided: HashMap<&str, u64> = HashMap::new();
    for &(spec, rule) in cases {
        let want = if rule.is_some() { XDP_DROP } else { XDP_PASS };
        assert_eq!(run(dataplane, &frame(spec)), want, "{spec}: by {rule:?}");
        if let Some(rule) = rule {
            *decided.entry(rule).or_default() += 1;
        }
    }
    for (id, slot) in slots {
        assert_eq!(
            dataplane.rule_counter(*slot).unwrap().packets,
            decided.get(id.as_str()).copied().unwrap_or(0),
            "rule {id}'s counter"
        );
    }
}

#[test]
fn tcp_flags_rules_match_the_flags_byte_of_tcp_headers_only() {
    if !testbed::require_root("tcp_flags_kernel::verdicts") {
        return;
    }
    let mut dataplane = common::dataplane();
    let (_, slots) = install(&mut dataplane, RULES);
    let cases = [
        (
            "tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags SYN",
            Some("syn-new"),
        ),
        (
            "tcp [2001:2::1]:40000 -> [2001:2::2]:22 flags SYN",
            Some("syn-new"),
        ),
        (
            "tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags SYN,ECE,CWR",
            Some("syn-new"),
        ),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags SYN,ACK", None),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags ACK", None),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags ACK,PSH", None),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:22", None),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags RST", None),
        (
            "tcp [2001:2::1]:40000 -> [2001:2::2]:22 flags RST",
            Some("v6-rst"),
        ),
        (
            "tcp [2001:2::1]:40000 -> [2001:2::2]:22 flags RST,ACK",
            Some("v6-rst"),
        ),
        ("tcp [2001:2::1]:40000 -> [2001:2::2]:22 flags FIN", None),
        (
            "tcp 198.18.0.1:40000 -> 198.19.0.1:80 flags FIN,ACK",
            Some("fin-ack-80"),
        ),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:80 flags FIN", None),
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:81 flags FIN,ACK", None),
        // Only flags that must be clear: a packet with none set matches, if it has a header.
        (
            "tcp 198.18.0.1:40000 -> 198.19.9.1:22 flags FIN",
            Some("no-ack"),
        ),
        ("tcp 198.18.0.1:40000 -> 198.19.9.1:22", Some("no-ack")),
        ("tcp 198.18.0.1:40000 -> 198.19.9.1:22 flags FIN,ACK", None),
        ("tcp 198.18.0.1:40000 -> 198.19.9.1:22 frag", None),
        ("udp 198.18.0.1:40000 -> 198.19.9.1:22", None),
        // No TCP header, no flags: a later fragment of a SYN, and UDP.
        ("tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags SYN frag", None),
        (
            "tcp [2001:2::1]:40000 -> [2001:2::2]:22 flags RST frag",
            None,
        ),
        ("udp 198.18.0.1:40000 -> 198.19.0.1:22", None),
        (
            "tcp 198.18.0.1:40000 -> 198.19.0.1:22 flags SYN",
            Some("syn-new"),
        ),
    ];
    check(&mut dataplane, &slots, &cases);
}

/// 16 destination hosts, each with its own SYN rule (enough for the exact-address table),
/// then 300 rules over /24s with a flag each (a tree to walk), then a catch-all SYN rule.
fn many_rules() -> String {
    let mut text = String::from("version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n");
    for host in 0..16 {
        text.push_str(&format!(
            "      - {{ id: host{host}, action: drop, protocol: tcp, dst: 198.19.0.{host}, tcp_flags: [syn, \"!ack\"] }}\n"
        ));
    }
    let flags = ["rst", "[fin, ack]", "\"!ack\"", "[syn, ack]"];
    for net in 0..300 {
        text.push_str(&format!(
            "      - {{ id: net{net}, action: drop, protocol: tcp, dst: 198.18.{}.{}/30, tcp_flags: {} }}\n",
            net / 60,
            (net % 60) * 4,
            flags[net % flags.len()]
        ));
    }
    text.push_str("      - { id: syn-any, action: drop, protocol: tcp, tcp_flags: syn }\n");
    text
}

#[test]
fn tcp_flags_are_checked_in_exact_tables_and_tree_leaves() {
    if !testbed::require_root("tcp_flags_kernel::tables") {
        return;
    }
    let mut dataplane = common::dataplane();
    let (compiled, slots) = install(&mut dataplane, &many_rules());
    assert!(
        !compiled.exact.is_empty(),
        "the hosts are in an exact table"
    );
    // net0 is 198.18.0.0/30 rst; net1 .4/30 fin,ack; net2 .8/30 !ack; net3 .12/30 syn,ack;
    // net298 198.18.4.232/30 !ack, net299 .236/30 syn,ack.
    let cases = [
        ("tcp 198.18.0.1:1 -> 198.19.0.3:22 flags SYN", Some("host3")),
        (
            "tcp 198.18.0.1:1 -> 198.19.0.3:22 flags SYN,ACK",
            Some("syn-any"),
        ),
        ("tcp 198.18.0.1:1 -> 198.19.0.3:22 flags ACK", None),
        (
            "tcp 198.18.0.1:1 -> 198.19.0.16:22 flags SYN",
            Some("syn-any"),
        ),
        (
            "tcp 198.18.0.1:1 -> 198.19.0.15:22 flags SYN,ACK,PSH",
            Some("syn-any"),
        ),
        ("tcp 198.18.0.1:1 -> 198.18.0.2:22 flags RST", Some("net0")),
        ("tcp 198.18.0.1:1 -> 198.18.0.2:22 flags ACK", None),
        (
            "tcp 198.18.0.1:1 -> 198.18.0.5:22 flags FIN,ACK",
            Some("net1"),
        ),
        ("tcp 198.18.0.1:1 -> 198.18.0.5:22 flags FIN", None),
        ("tcp 198.18.0.1:1 -> 198.18.0.9:22 flags FIN", Some("net2")),
        ("tcp 198.18.0.1:1 -> 198.18.0.9:22 flags FIN,ACK", None),
        (
            "tcp 198.18.0.1:1 -> 198.18.0.13:22 flags SYN",
            Some("syn-any"),
        ),
        (
            "tcp 198.18.0.1:1 -> 198.18.0.13:22 flags SYN,ACK",
            Some("net3"),
        ),
        (
            "tcp 198.18.0.1:1 -> 198.18.4.237:22 flags SYN,ACK",
            Some("net299"),
        ),
        ("tcp 198.18.0.1:1 -> 198.18.4.237:22 flags RST", None),
        (
            "tcp 198.18.0.1:1 -> 198.18.4.233:22 flags RST",
            Some("net298"),
        ),
        ("tcp 198.18.0.1:1 -> 198.18.4.233:22 flags RST,ACK", None),
        ("tcp 198.18.0.1:1 -> 198.19.0.3:22 flags SYN frag", None),
    ];
    check(&mut dataplane, &slots, &cases);
}
