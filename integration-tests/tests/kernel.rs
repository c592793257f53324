//! The real XDP program in the real kernel, fed frames with BPF_PROG_TEST_RUN. Without a
//! context, the kernel runs the program as if the frame arrived on loopback (ifindex 1), so
//! the rules are installed there.

use std::path::Path;

use etherparse::PacketBuilder;
use firewall_common::{FrameClass, Verdict};
use firewall_dataplane::{
    loader::{Capacity, Dataplane},
    test_run::{LOOPBACK, XDP_DROP, XDP_PASS},
};
use firewall_rules::{
    RuleSet,
    compile::{self, RuleCounters},
};

use crate::common::{self, run};

const RULES: &str = "
version: 1
interfaces:
  lo:
    default: pass
    rules:
      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }
      - { id: no-ping-from-host, action: drop, protocol: icmp, src: 198.18.0.2/32 }
      - { id: no-alt-http, action: drop, protocol: tcp, dst: 198.19.0.0/16, dst_port: \"8000-8080\" }
";

const HOST: [u8; 4] = [198, 18, 0, 2];
const OTHER: [u8; 4] = [198, 18, 0, 3];
const SERVER: [u8; 4] = [198, 19, 0, 1];
const OUTSIDE: [u8; 4] = [198, 18, 7, 1];

/// Builds a whole Ethernet frame from an etherparse builder chain and a payload.
macro_rules! frame {
    ($builder:expr, $payload:expr) => {{
        let builder = $builder;
        let payload: &[u8] = $payload;
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, payload).unwrap();
        out
    }};
}

fn ipv4(src: [u8; 4], dst: [u8; 4]) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64)
}

fn udp(src: [u8; 4], dst: [u8; 4], dst_port: u16) -> Vec<u8> {
    frame!(ipv4(src, dst).udp(40000, dst_port), &[0; 18])
}

fn tcp(dst: [u8; 4], dst_port: u16) -> Vec<u8> {
    frame!(ipv4(HOST, dst).tcp(40000, dst_port, 1, 1024), &[])
}

fn ping(src: [u8; 4]) -> Vec<u8> {
    frame!(ipv4(src, SERVER).icmpv4_echo_request(1, 1), &[0; 56])
}

/// The same UDP datagram as a non-first fragment: it carries no ports.
fn later_fragment(dst_port: u16) -> Vec<u8> {
    let mut frame = udp(HOST, SERVER, dst_port);
    frame[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]); // offset 16 × 8 bytes
    frame
}

fn arp() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.extend([0; 28]);
    frame
}

/// Compiles `text` for `lo` (slot 0) and makes it live.
fn install(dataplane: &mut Dataplane, text: &str) {
    let rules = RuleSet::parse(Path::new("kernel-test.yaml"), text).unwrap();
    let compiled = compile::ruleset(
        &rules,
        &[("lo".to_string(), 0)],
        &mut RuleCounters::default(),
    )
    .unwrap();
    dataplane.install(&compiled).unwrap();
}

fn dataplane() -> Dataplane {
    let mut dataplane = common::dataplane();
    install(&mut dataplane, RULES);
    dataplane
}

#[test]
fn verdicts_follow_the_rules_and_every_packet_is_counted_once() {
    if !testbed::require_root("kernel::verdicts") {
        return;
    }
    let mut dataplane = dataplane();
    // Each row: what it checks, the frame, the expected XDP action.
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "udp to the discard port: rule no-discard",
            udp(HOST, SERVER, 9),
            XDP_DROP,
        ),
        (
            "udp to another port: default pass",
            udp(HOST, SERVER, 10),
            XDP_PASS,
        ),
        ("tcp to port 9: protocol differs", tcp(SERVER, 9), XDP_PASS),
        (
            "ping from the host: rule no-ping-from-host",
            ping(HOST),
            XDP_DROP,
        ),
        (
            "ping from another host: /32 does not cover it",
            ping(OTHER),
            XDP_PASS,
        ),
        (
            "tcp 8000 into 198.19/16: lower range edge",
            tcp(SERVER, 8000),
            XDP_DROP,
        ),
        (
            "tcp 8080 into 198.19/16: upper range edge",
            tcp(SERVER, 8080),
            XDP_DROP,
        ),
        ("tcp 8081: just past the range", tcp(SERVER, 8081), XDP_PASS),
        (
            "tcp 7999: just below the range",
            tcp(SERVER, 7999),
            XDP_PASS,
        ),
        ("tcp 8000 outside 198.19/16", tcp(OUTSIDE, 8000), XDP_PASS),
        (
            "non-first fragment carries no port",
            later_fragment(9),
            XDP_PASS,
        ),
        ("ARP is not IP: passes", arp(), XDP_PASS),
        (
            "UDP header cut short: malformed, dropped",
            udp(HOST, SERVER, 9)[..14 + 20 + 4].to_vec(),
            XDP_DROP,
        ),
    ];
    let mut expected = [(0u64, 0u64); 2];
    for (what, frame, action) in &cases {
        assert_eq!(run(&mut dataplane, frame), *action, "{what}");
        let verdict = if *action == XDP_DROP {
            Verdict::Drop
        } else {
            Verdict::Pass
        };
        expected[verdict as usize].0 += 1;
        expected[verdict as usize].1 += frame.len() as u64;
    }
    for verdict in Verdict::ALL {
        let counter = dataplane.counter(0, verdict).unwrap();
        let (packets, bytes) = expected[verdict as usize];
        assert_eq!(
            (counter.packets, counter.bytes),
            (packets, bytes),
            "{verdict:?} counter"
        );
    }
    // One ARP frame, one frame cut short: counted apart as well.
    let class = |c| dataplane.class_counter(0, c).unwrap().packets;
    assert_eq!(
        (class(FrameClass::NonIp), class(FrameClass::Malformed)),
        (1, 1)
    );
}

#[test]
fn an_interface_without_rules_is_left_alone_and_uncounted() {
    if !testbed::require_root("kernel::unconfigured") {
        return;
    }
    let mut dataplane = Dataplane::load(Capacity::default()).unwrap();
    assert_eq!(run(&mut dataplane, &udp(HOST, SERVER, 9)), XDP_PASS);
    let counted = dataplane.counter(0, Verdict::Pass).unwrap().packets
        + dataplane.counter(0, Verdict::Drop).unwrap().packets;
    assert_eq!(counted, 0);
}

#[test]
fn installing_new_rules_replaces_the_old_ones() {
    if !testbed::require_root("kernel::replace") {
        return;
    }
    let mut dataplane = dataplane();
    let frame = udp(HOST, SERVER, 9);
    assert_eq!(run(&mut dataplane, &frame), XDP_DROP);
    install(
        &mut dataplane,
        "version: 1
interfaces:
  lo: {default: pass}
",
    );
    assert_eq!(run(&mut dataplane, &frame), XDP_PASS);
}

/// Loads the program with RULES on `lo`, enforcing or not; returns it and the counter slot
/// of rule `no-discard`.
fn licensed_dataplane(enforcing: Option<bool>) -> (Dataplane, u32) {
    let rules = RuleSet::parse(Path::new("kernel-test.yaml"), RULES).unwrap();
    let mut counters = RuleCounters::default();
    let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
    let mut dataplane = Dataplane::load(Capacity::default()).unwrap();
    if let Some(enforcing) = enforcing {
        dataplane.set_enforcing(enforcing).unwrap();
    }
    dataplane.bind(LOOPBACK, 0).unwrap();
    dataplane.install(&compiled).unwrap();
    let slot = counters
        .iter()
        .find(|(_, rule, _)| *rule == "no-discard")
        .unwrap()
        .2;
    (dataplane, slot)
}

/// Issue 6: an unlicensed adapter passes what the rules drop, and meters it as passed and
/// decided by no rule; the switch back is one map update.
#[test]
fn an_unlicensed_adapter_passes_and_counts_everything_as_passed() {
    if !testbed::require_root("kernel::unlicensed") {
        return;
    }
    let (mut dataplane, no_discard) = licensed_dataplane(Some(true));
    let frame = udp(HOST, SERVER, 9);
    assert_eq!(
        run(&mut dataplane, &frame),
        XDP_DROP,
        "licensed: rule no-discard"
    );
    assert_eq!(dataplane.rule_counter(no_discard).unwrap().packets, 1);

    dataplane.set_enforcing(false).unwrap();
    assert_eq!(run(&mut dataplane, &frame), XDP_PASS, "unlicensed: passed");
    assert_eq!(
        run(&mut dataplane, &ping(HOST)),
        XDP_PASS,
        "unlicensed: passed"
    );
    assert_eq!(dataplane.counter(0, Verdict::Pass).unwrap().packets, 2);
    assert_eq!(dataplane.counter(0, Verdict::Drop).unwrap().packets, 1);
    assert_eq!(
        dataplane.rule_counter(no_discard).unwrap().packets,
        1,
        "no rule decided while unlicensed"
    );

    dataplane.set_enforcing(true).unwrap();
    assert_eq!(run(&mut dataplane, &frame), XDP_DROP, "licensed again");
    assert_eq!(dataplane.counter(0, Verdict::Drop).unwrap().packets, 2);
    assert_eq!(dataplane.rule_counter(no_discard).unwrap().packets, 2);
}

#[test]
fn a_freshly_loaded_program_passes_until_a_licence_decision_reaches_it() {
    if !testbed::require_root("kernel::fresh_program_passes") {
        return;
    }
    let (mut dataplane, _) = licensed_dataplane(None);
    assert_eq!(run(&mut dataplane, &udp(HOST, SERVER, 9)), XDP_PASS);
    assert_eq!(dataplane.counter(0, Verdict::Pass).unwrap().packets, 1);
}

/// The verifier walks every path of the packet path once per state; that count grows with the
/// leaf checks inlined, the trees and the steps added (conntrack, drop logs). Keep a margin to
/// the kernel's limit (1,000,000) so that a small change does not turn a load into a refusal.
#[test]
fn both_programs_stay_well_within_the_verifiers_limit() {
    if !testbed::require_root("kernel::verifier_headroom") {
        return;
    }
    const LIMIT: u32 = 1_000_000;
    let mut dataplane =
        Dataplane::load(Capacity::default()).expect("the verifier accepts the program");
    let ingress = dataplane.program().unwrap().info().unwrap();
    let egress = dataplane.egress_program().unwrap().info().unwrap();
    for (name, info) in [("xdp", ingress), ("tc egress", egress)] {
        let verified = info
            .verified_instruction_count()
            .expect("kernel 5.16+ reports verified instructions");
        eprintln!("{name}: {verified} instructions verified of {LIMIT}");
        assert!(
            verified < LIMIT * 3 / 4,
            "{name}: {verified} verified instructions, within 25% of the limit"
        );
    }
}
