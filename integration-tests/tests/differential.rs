//! The kernel program against the reference classifier: random rule sets and random frames
//! biased to the edges (CIDR and port-range boundaries, VLAN tags, IPv6 extension headers,
//! fragments, truncation), each frame through BPF_PROG_TEST_RUN and through
//! `reference::classify`. Verdicts must agree, and the counters must add up to the frames run.
//! `SMF_FIREWALL_DIFFERENTIAL_FRAMES` sets the number of frames (default 120,000) and
//! `SMF_FIREWALL_DIFFERENTIAL_SEED` the seed (default fixed); `cargo xtask fuzz-dataplane`
//! runs the long version with a new seed each time.

use std::{fmt::Write as _, path::Path};

use firewall_common::{Verdict, ethertype};
use firewall_dataplane::loader::Dataplane;
use firewall_rules::{
    Action, Direction, RuleSet,
    compile::{self, RuleCounters},
    reference,
    spec::PacketSpec,
};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

use crate::common;

const FRAMES_PER_SET: usize = 2_000;

const V4_NETS: [&str; 7] = [
    "198.18.0.0/15",
    "198.18.0.0/16",
    "198.18.1.0/24",
    "198.18.1.128/25",
    "198.18.1.1/32",
    "198.19.255.0/24",
    "198.19.0.0/17",
];
const V6_NETS: [&str; 5] = [
    "2001:2::/48",
    "2001:2::/64",
    "2001:2:0:1::/64",
    "2001:2::1/128",
    "2001:2:0:8000::/49",
];
const V4_HOSTS: [&str; 10] = [
    "198.18.0.0",
    "198.18.1.0",
    "198.18.1.1",
    "198.18.1.127",
    "198.18.1.128",
    "198.18.1.255",
    "198.18.2.0",
    "198.19.255.255",
    "198.19.127.255",
    "198.19.128.0",
];
const V6_HOSTS: [&str; 7] = [
    "2001:2::",
    "2001:2::1",
    "2001:2::2",
    "2001:2:0:1::",
    "2001:2:0:1:ffff:ffff:ffff:ffff",
    "2001:2:0:7fff::1",
    "2001:2:0:8000::",
];
const PORTS: [&str; 7] = ["22", "53", "80", "1024-65535", "80-90", "65535", "1-1023"];
const FRAME_PORTS: [u16; 10] = [22, 53, 79, 80, 90, 91, 1023, 1024, 65535, 1];
const ICMP_TYPES: [u8; 5] = [0, 3, 8, 128, 135];

fn pick<'a, T: ?Sized>(rng: &mut ChaCha8Rng, items: &'a [&'a T]) -> &'a T {
    items.choose(rng).expect("non-empty")
}

fn list(rng: &mut ChaCha8Rng, items: &[&str]) -> String {
    let n = rng.random_range(1..=2);
    let chosen: Vec<String> = (0..n)
        .map(|_| format!("\"{}\"", pick(rng, items)))
        .collect();
    format!("[{}]", chosen.join(", "))
}

/// One random, valid rule.
fn rule(rng: &mut ChaCha8Rng, id: usize) -> String {
    let mut fields = vec![
        format!("id: r{id}"),
        format!(
            "action: {}",
            if rng.random_bool(0.5) { "pass" } else { "drop" }
        ),
    ];
    let family = rng.random_range(0..3); // 0 any, 1 v4, 2 v6
    let protocol = match (family, rng.random_range(0..7)) {
        (_, 0) => None,
        (_, 1) => Some("tcp"),
        (_, 2) => Some("udp"),
        (_, 3) => Some("sctp"),
        (2, 4) => Some("icmpv6"),
        (_, 4) => Some("icmp"),
        (_, 5) => Some("47"),
        _ => Some("tcp"),
    };
    if let Some(p) = protocol {
        fields.push(format!("protocol: {p}"));
    }
    if family != 0 {
        let nets: &[&str] = if family == 1 { &V4_NETS } else { &V6_NETS };
        if rng.random_bool(0.6) {
            fields.push(format!("src: {}", list(rng, nets)));
        }
        if rng.random_bool(0.6) {
            fields.push(format!("dst: {}", list(rng, nets)));
        }
        if rng.random_bool(0.3) {
            fields.push(format!(
                "family: {}",
                if family == 1 { "ipv4" } else { "ipv6" }
            ));
        }
    }
    if matches!(protocol, Some("tcp" | "udp" | "sctp")) {
        if rng.random_bool(0.5) {
            fields.push(format!("dst_port: {}", list(rng, &PORTS)));
        }
        if rng.random_bool(0.2) {
            fields.push(format!("src_port: {}", list(rng, &PORTS)));
        }
    }
    if matches!(protocol, Some("icmp" | "icmpv6")) && rng.random_bool(0.6) {
        fields.push(format!(
            "icmp_type: {}",
            ICMP_TYPES.choose(rng).expect("non-empty")
        ));
        if rng.random_bool(0.3) {
            fields.push(format!("icmp_code: {}", rng.random_range(0..2)));
        }
    }
    if rng.random_bool(0.15) {
        fields.push(format!(
            "vlan: {}",
            if rng.random_bool(0.5) { 10 } else { 20 }
        ));
    }
    format!("      - {{ {} }}\n", fields.join(", "))
}

fn rule_set(rng: &mut ChaCha8Rng) -> String {
    let mut text = format!(
        "version: 1\ninterfaces:\n  lo:\n    default: {}\n    non_ip: {}\n    rules:\n",
        if rng.random_bool(0.5) { "pass" } else { "drop" },
        if rng.random_bool(0.8) { "pass" } else { "drop" },
    );
    // Small sets test the rules; large ones make deep decision trees.
    let count = if rng.random_bool(0.3) {
        rng.random_range(100..1500)
    } else {
        rng.random_range(1..16)
    };
    for id in 0..count {
        text.push_str(&rule(rng, id));
    }
    text
}

/// A random frame: a well-formed packet near the rules' edges, often altered.
fn frame(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let v6 = rng.random_bool(0.4);
    let hosts: &[&str] = if v6 { &V6_HOSTS } else { &V4_HOSTS };
    let protocol = *["tcp", "udp", "sctp", "icmp", "47"]
        .choose(rng)
        .expect("non-empty");
    let protocol = if protocol == "icmp" && v6 {
        "icmpv6"
    } else {
        protocol
    };
    let host = |rng: &mut ChaCha8Rng, port: Option<u16>| {
        let addr = pick(rng, hosts);
        match port {
            Some(p) if v6 => format!("[{addr}]:{p}"),
            Some(p) => format!("{addr}:{p}"),
            None => addr.to_string(),
        }
    };
    let ports = matches!(protocol, "tcp" | "udp" | "sctp");
    let (sport, dport) = (
        FRAME_PORTS.choose(rng).copied(),
        FRAME_PORTS.choose(rng).copied(),
    );
    let mut spec = format!(
        "{protocol} {} -> {}",
        host(rng, sport.filter(|_| ports)),
        host(rng, dport.filter(|_| ports))
    );
    if matches!(protocol, "icmp" | "icmpv6") {
        let _ = write!(
            spec,
            " type {} code {}",
            ICMP_TYPES.choose(rng).expect("non-empty"),
            rng.random_range(0..2)
        );
    }
    if rng.random_bool(0.2) {
        let _ = write!(spec, " vlan {}", if rng.random_bool(0.5) { 10 } else { 20 });
    }
    if rng.random_bool(0.1) {
        spec.push_str(" frag");
    }
    let mut frame = PacketSpec::parse(&spec)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
        .frame();
    alter(rng, &mut frame, v6);
    frame
}

/// Sometimes: IPv6 extension headers, extra VLAN tags, a non-IP ether type, a bad IPv4 header
/// length, random truncation.
fn alter(rng: &mut ChaCha8Rng, frame: &mut Vec<u8>, v6: bool) {
    let tagged = frame[12..14] == ethertype::VLAN.to_be_bytes();
    let l3 = if tagged { 18 } else { 14 };
    match rng.random_range(0..12) {
        0 if v6 => {
            let count = rng.random_range(1..=10);
            let upper = frame[l3 + 6];
            let tail = frame.split_off(l3 + 40);
            for i in 0..count {
                let next = if i + 1 == count {
                    upper
                } else {
                    [0u8, 43, 60][i % 3]
                };
                frame.extend([next, 0, 0, 0, 0, 0, 0, 0]);
            }
            frame[l3 + 6] = if count > 0 { 60 } else { upper };
            frame.extend(tail);
        }
        1 => {
            let tag = [0x81, 0x00, 0x00, 0x1e];
            frame.splice(
                12..12,
                tag.iter().copied().chain(if rng.random_bool(0.5) {
                    tag
                } else {
                    [0x88, 0xa8, 0, 10]
                }),
            );
        }
        2 => frame[12..14].copy_from_slice(&[0x08, 0x06]),
        3 if !v6 => frame[l3] = 0x40 | rng.random_range(0..6),
        // XDP never sees less than an Ethernet header (and BPF_PROG_TEST_RUN refuses it).
        4 | 5 => {
            let cut = rng.random_range(14..frame.len());
            frame.truncate(cut);
        }
        _ => {}
    }
}

fn kernel_verdict(dataplane: &mut Dataplane, frame: &[u8]) -> Verdict {
    dataplane.run(frame, Direction::In).unwrap().verdict()
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// Levels of the deepest tree in `compiled`.
fn depth(compiled: &compile::Compiled) -> usize {
    fn walk(nodes: &[firewall_common::Node], at: u32) -> usize {
        let node = nodes[at as usize];
        if node.dim == firewall_common::LEAF {
            return 1;
        }
        1 + (0..=u32::from(node.child_mask()))
            .map(|c| walk(nodes, node.first + c))
            .max()
            .unwrap_or(0)
    }
    compiled
        .policies
        .iter()
        .flat_map(|(_, p)| p.trees.into_iter().flatten())
        .filter(|tree| tree.root != firewall_common::NO_TREE)
        .map(|tree| walk(&compiled.nodes, tree.root))
        .max()
        .unwrap_or(0)
}

#[test]
fn the_kernel_agrees_with_the_reference_on_random_rules_and_frames() {
    if !testbed::require_root("differential") {
        return;
    }
    let total: usize = std::env::var("SMF_FIREWALL_DIFFERENTIAL_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_000);
    let seed: u64 = std::env::var("SMF_FIREWALL_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("differential: seed {seed} (SMF_FIREWALL_DIFFERENTIAL_SEED reproduces a run)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Licensed: the rules' verdicts apply (a fresh program passes everything).
    let mut dataplane = common::dataplane();
    let mut counters = RuleCounters::default();
    let (mut frames, mut sets, mut by_verdict, mut deepest) = (0, 0, [0u64; 2], 0);
    while frames < total {
        let text = rule_set(&mut rng);
        let rules = RuleSet::parse(Path::new("random.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
        dataplane
            .reset_rule_counters(&compiled.fresh_counters)
            .unwrap();
        dataplane.install(&compiled).unwrap();
        deepest = deepest.max(depth(&compiled));
        let before = Verdict::ALL.map(|v| dataplane.counter(0, v).unwrap().packets);
        let rule_slots: Vec<(String, u32)> = rules.interfaces["lo"]
            .rules
            .iter()
            .map(|r| (r.id.clone(), counters.get("lo", &r.id).unwrap()))
            .collect();
        let rules_before: Vec<u64> = rule_slots
            .iter()
            .map(|(_, s)| dataplane.rule_counter(*s).unwrap().packets)
            .collect();
        let mut by_rule: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut expected = [0u64; 2];
        for _ in 0..FRAMES_PER_SET {
            let frame = frame(&mut rng);
            let decision = reference::classify(&rules, "lo", &frame).unwrap();
            let want = match decision.action {
                Action::Pass => Verdict::Pass,
                Action::Drop => Verdict::Drop,
            };
            let got = kernel_verdict(&mut dataplane, &frame);
            assert_eq!(
                got,
                want,
                "frame {} ({decision:?}) under rules:\n{text}",
                hex(&frame)
            );
            expected[want as usize] += 1;
            if let Some(rule) = decision.rule {
                *by_rule.entry(rule).or_default() += 1;
            }
        }
        for verdict in Verdict::ALL {
            let counted = dataplane.counter(0, verdict).unwrap().packets - before[verdict as usize];
            assert_eq!(
                counted, expected[verdict as usize],
                "{verdict:?} counter under rules:\n{text}"
            );
            by_verdict[verdict as usize] += counted;
        }
        // The deciding rule, as the per-rule counters saw it.
        for ((id, slot), before) in rule_slots.iter().zip(rules_before) {
            let counted = dataplane.rule_counter(*slot).unwrap().packets - before;
            assert_eq!(
                counted,
                by_rule.get(id).copied().unwrap_or(0),
                "rule {id} counter under rules:\n{text}"
            );
        }
        frames += FRAMES_PER_SET;
        sets += 1;
    }
    eprintln!(
        "differential: {frames} frames over {sets} rule sets agree ({} pass, {} drop), deepest tree {deepest} levels",
        by_verdict[0], by_verdict[1]
    );
    assert!(
        by_verdict[0] > 0 && by_verdict[1] > 0,
        "both verdicts must be exercised"
    );
}
