//! `direction: out` rules in the real kernel: the TC egress program (BPF_PROG_TEST_RUN, which
//! runs it as if the packet left by loopback, ifindex 1) judges leaving packets by the out
//! rules only and counts them in the interface's egress slot; the XDP program ignores out
//! rules; a `state: true` out rule opens a flow whose replies pass the XDP program.

use std::path::Path;

use aya::programs::{TestRun, TestRunOptions};
use firewall_common::{Verdict, directed_slot, direction};
use firewall_dataplane::loader::{Capacity, Dataplane};
use firewall_rules::{
    Action, Direction, RuleSet,
    compile::{self, RuleCounters},
    reference,
    spec::PacketSpec,
};

const LOOPBACK: u32 = 1;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (TCX_NEXT): pass on to later programs.
const TC_NEXT: u32 = u32::MAX;
const TC_SHOT: u32 = 2;

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

fn options(frame: &[u8]) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(frame),
        ..TestRunOptions::default()
    }
}

#[test]
fn out_rules_judge_leaving_packets_and_only_them() {
    if !testbed::require_root("egress::out_rules") {
        return;
    }
    let rules = RuleSet::parse(Path::new("egress.yaml"), RULES).unwrap();
    let mut counters = RuleCounters::default();
    let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
    let mut dp = Dataplane::load(Capacity::default()).expect("the verifier accepts both programs");
    dp.set_enforcing(true).unwrap();
    dp.bind(LOOPBACK, 0).unwrap();
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
        let got_tc = dp
            .egress_program()
            .unwrap()
            .test_run(options(&frame))
            .unwrap();
        let got_xdp = dp.program().unwrap().test_run(options(&frame)).unwrap();
        assert_eq!(
            (got_tc.return_value, got_xdp.return_value),
            (tc, xdp),
            "{spec}"
        );
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
    assert_eq!(
        dp.program()
            .unwrap()
            .test_run(options(&reply))
            .unwrap()
            .return_value,
        XDP_DROP
    );
    assert_eq!(
        dp.egress_program()
            .unwrap()
            .test_run(options(&syn))
            .unwrap()
            .return_value,
        TC_NEXT
    );
    assert_eq!(
        dp.program()
            .unwrap()
            .test_run(options(&reply))
            .unwrap()
            .return_value,
        XDP_PASS
    );
    assert_eq!(
        dp.conntrack_hits(0).unwrap(),
        1,
        "counted in the ingress slot"
    );
}
