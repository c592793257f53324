//! `direction: out` rules in the real kernel: the TC egress program (BPF_PROG_TEST_RUN, which
//! runs it as if the packet left by loopback, ifindex 1) judges leaving packets by the out
//! rules only and counts them in the interface's egress slot; the XDP program ignores out
//! rules; a `state: true` out rule opens a flow whose replies pass the XDP program.

use std::path::Path;

use firewall_common::{Verdict, directed_slot, direction};
use firewall_dataplane::{
    conntrack::Timeouts,
    test_run::{TC_NEXT, TC_SHOT, XDP_DROP, XDP_PASS},
};
use firewall_rules::{
    Action, Direction, RuleSet,
    compile::{self, RuleCounters},
    reference,
    spec::PacketSpec,
};

use crate::common::{self, run, run_egress};

const RULES: &str = "
version: 1
interfaces:
  lo:
    default: drop
    rules:
      - { id: no-discard-out, action: drop, direction: out, protocol: udp, dst_port: 9 }
      - { id: ssh-out, action: pass, direction: out, protocol: tcp, dst_port: 22, state: true }
      - { id: no-tcp-out, action: drop, direction: out, protocol: tcp }
      - { id: dns-in, action: pass, protocol: udp, src_port: 53 }
";

fn frame(spec: &str) -> Vec<u8> {
    PacketSpec::parse(spec).unwrap().frame()
}

#[test]
fn out_rules_judge_leaving_packets_and_only_them() {
    if !testbed::require_root("egress::out_rules") {
        return;
    }
    let rules = RuleSet::parse(Path::new("egress.yaml"), RULES).unwrap();
    let mut counters = RuleCounters::default();
    let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
    let mut dp = common::dataplane();
    // As the daemon sets it: the ssh-out rule has `state: true`, so the flow table is used.
    let mut settings = Timeouts::default().settings();
    settings.tracking = rules.tracked();
    dp.set_conntrack(&settings).unwrap();
    dp.install(&compiled).unwrap();
    let policy = &rules.interfaces["lo"];

    // Each row: the frame, the TC egress action, the XDP action.
    let cases = [
        ("udp 198.18.1.1:40000 -> 198.19.1.2:9", TC_SHOT, XDP_DROP),
        ("udp 198.18.1.1:40000 -> 198.19.1.2:10", TC_NEXT, XDP_DROP),
        ("udp 198.19.1.2:53 -> 198.18.1.1:40000", TC_NEXT, XDP_PASS),
        (
            "tcp 198.18.1.1:40000 -> 198.19.1.2:80 flags SYN",
            TC_SHOT,
            XDP_DROP,
        ),
        ("icmp 198.18.1.1 -> 198.19.1.2 type 8", TC_NEXT, XDP_DROP),
    ];
    for (spec, tc, xdp) in cases {
        let frame = frame(spec);
        let got_tc = run_egress(&mut dp, &frame);
        let got_xdp = run(&mut dp, &frame);
        assert_eq!((got_tc, got_xdp), (tc, xdp), "{spec}");
        // The reference agrees in both directions.
        let parsed = reference::parse(&frame);
        let out = reference::decide_direction(policy, &parsed, Direction::Out).action;
        assert_eq!(out == Action::Pass, tc == TC_NEXT, "reference out: {spec}");
        let inward = reference::decide(policy, &parsed).action;
        assert_eq!(
            inward == Action::Pass,
            xdp == XDP_PASS,
            "reference in: {spec}"
        );
    }
    let out = directed_slot(0, direction::OUT);
    assert_eq!(dp.counter(out, Verdict::Drop).unwrap().packets, 2);
    assert_eq!(dp.counter(out, Verdict::Pass).unwrap().packets, 3);
    assert_eq!(dp.counter(0, Verdict::Drop).unwrap().packets, 4);
    assert_eq!(dp.counter(0, Verdict::Pass).unwrap().packets, 1);
    let discard = counters.get("lo", "no-discard-out").unwrap();
    assert_eq!(dp.rule_counter(discard).unwrap().packets, 1);

    // A flow opened on the way out: its replies pass the XDP program despite `default: drop`.
    let syn = frame("tcp 198.18.1.1:40001 -> 198.19.1.2:22 flags SYN");
    let reply = frame("tcp 198.19.1.2:22 -> 198.18.1.1:40001 flags SYN,ACK");
    assert_eq!(run(&mut dp, &reply), XDP_DROP);
    assert_eq!(run_egress(&mut dp, &syn), TC_NEXT);
    assert_eq!(run(&mut dp, &reply), XDP_PASS);
    assert_eq!(
        dp.conntrack_hits(0).unwrap(),
        1,
        "counted in the ingress slot"
    );
}
