//! Connection tracking in the real kernel (BPF_PROG_TEST_RUN on loopback, ifindex 1): replies
//! to a `state: true` rule pass before the rules and are counted apart, unsolicited packets do
//! not, flows expire by the kernel's clock (fixed by the test through `ConntrackSettings`, so
//! no test depends on timing), ICMP errors quoting a flow pass, a reload keeps flows, the sweep
//! deletes expired flows; and random packet *sequences*, arriving (XDP) and leaving (TC
//! egress), through the kernel and the reference tracker (`reference::conntrack::Tracker`)
//! with the same clock agree packet by packet.

use std::path::Path;

use firewall_common::{
    ConntrackSettings, Verdict,
    conntrack::{event, origin, state, tracked},
    directed_slot, direction, protocol,
};
use firewall_dataplane::{
    conntrack::{self, Timeouts},
    loader::{Capacity, Dataplane, LruSizes},
    test_run::{LOOPBACK, TC_NEXT, XDP_DROP, XDP_PASS},
};
use firewall_rules::{
    Action, Direction, RuleSet,
    compile::{self, RuleCounters},
    reference::{self, Reason, conntrack::Tracker},
    spec::PacketSpec,
};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

use crate::common::{self, run, run_egress};

const SECOND: u64 = 1_000_000_000;

const RULES: &str = "
version: 1
interfaces:
  lo:
    default: drop
    rules:
      - { id: tcp-out, action: pass, protocol: tcp, src: 198.18.0.0/16, state: true }
      - { id: udp-out, action: pass, protocol: udp, src: 198.18.0.0/16, state: true }
      - { id: ping-out, action: pass, protocol: icmp, icmp_type: 8, src: 198.18.0.0/16, state: true }
      - { id: web-in, action: pass, protocol: tcp, dst: 198.18.0.0/16, dst_port: 80 }
";

/// Rules that pass nothing from outside and open no flows.
const NO_STATE: &str = "
version: 1
interfaces:
  lo:
    default: drop
    rules:
      - { id: tcp-out, action: pass, protocol: tcp, src: 198.18.0.0/16 }
";

fn install(dataplane: &mut Dataplane, text: &str, counters: &mut RuleCounters) -> RuleSet {
    let rules = RuleSet::parse(Path::new("conntrack-test.yaml"), text).unwrap();
    let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], counters).unwrap();
    dataplane
        .reset_rule_counters(&compiled.fresh_counters)
        .unwrap();
    dataplane.install(&compiled).unwrap();
    rules
}

/// A licensed dataplane on loopback with `text`, its clock fixed at 0.
fn dataplane(text: &str, timeouts: &Timeouts) -> (Dataplane, RuleSet, RuleCounters) {
    let mut dataplane = common::dataplane();
    let mut counters = RuleCounters::default();
    let rules = install(&mut dataplane, text, &mut counters);
    set_clock(&mut dataplane, timeouts, 0);
    (dataplane, rules, counters)
}

/// The daemon's settings for a rule set with a `state: true` rule for every protocol, on a
/// clock the test steps.
fn settings(timeouts: &Timeouts, now: u64) -> ConntrackSettings {
    ConntrackSettings {
        fixed_clock: 1,
        fixed_now_ns: now,
        tracking: tracked::ALL,
        ..timeouts.settings()
    }
}

fn set_clock(dataplane: &mut Dataplane, timeouts: &Timeouts, now: u64) {
    dataplane.set_conntrack(&settings(timeouts, now)).unwrap();
}

fn frame(spec: &str) -> Vec<u8> {
    PacketSpec::parse(spec).unwrap().frame()
}

/// An ICMP echo request (8) or reply (0) with identifier `id`.
fn echo(src: &str, dst: &str, icmp_type: u8, id: u16) -> Vec<u8> {
    let mut frame = frame(&format!("icmp {src} -> {dst} type {icmp_type}"));
    frame[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&id.to_be_bytes());
    frame
}

const OUT: &str = "tcp 198.18.1.2:40000 -> 198.19.1.2:443";
const BACK: &str = "tcp 198.19.1.2:443 -> 198.18.1.2:40000";

#[test]
fn replies_pass_before_the_rules_and_are_counted_apart() {
    if !testbed::require_root("conntrack::replies") {
        return;
    }
    let timeouts = Timeouts::default();
    let (mut dp, _, counters) = dataplane(RULES, &timeouts);
    // Each row: what it checks, the frame, the XDP action, tracked?
    let cases: Vec<(&str, Vec<u8>, u32, bool)> = vec![
        (
            "a SYN-ACK nobody asked for",
            frame(&format!("{BACK} flags SYN,ACK")),
            XDP_DROP,
            false,
        ),
        (
            "the LAN host's SYN: rule tcp-out, opens a flow",
            frame(&format!("{OUT} flags SYN")),
            XDP_PASS,
            false,
        ),
        (
            "the SYN-ACK: tracked",
            frame(&format!("{BACK} flags SYN,ACK")),
            XDP_PASS,
            true,
        ),
        (
            "the ACK: tracked (before tcp-out)",
            frame(&format!("{OUT} flags ACK")),
            XDP_PASS,
            true,
        ),
        (
            "data from the WAN host: tracked",
            frame(&format!("{BACK} flags PSH,ACK")),
            XDP_PASS,
            true,
        ),
        (
            "a new connection from the WAN host: dropped",
            frame("tcp 198.19.1.2:50000 -> 198.18.1.2:22 flags SYN"),
            XDP_DROP,
            false,
        ),
        (
            "the same ports from another WAN host: dropped",
            frame("tcp 198.19.1.3:443 -> 198.18.1.2:40000 flags ACK"),
            XDP_DROP,
            false,
        ),
        (
            "udp out opens a flow",
            frame("udp 198.18.1.2:5000 -> 198.19.1.2:53"),
            XDP_PASS,
            false,
        ),
        (
            "the udp answer: tracked",
            frame("udp 198.19.1.2:53 -> 198.18.1.2:5000"),
            XDP_PASS,
            true,
        ),
        (
            "udp from another port of the WAN host: dropped",
            frame("udp 198.19.1.2:54 -> 198.18.1.2:5000"),
            XDP_DROP,
            false,
        ),
        (
            "ping out opens a flow",
            echo("198.18.1.2", "198.19.1.2", 8, 7),
            XDP_PASS,
            false,
        ),
        (
            "the echo reply: tracked",
            echo("198.19.1.2", "198.18.1.2", 0, 7),
            XDP_PASS,
            true,
        ),
        (
            "an echo reply with another identifier: dropped",
            echo("198.19.1.2", "198.18.1.2", 0, 8),
            XDP_DROP,
            false,
        ),
        (
            "an echo request from the WAN host on the same identifier: dropped",
            echo("198.19.1.2", "198.18.1.2", 8, 7),
            XDP_DROP,
            false,
        ),
    ];
    let mut hits = 0;
    for (what, frame, action, tracked) in &cases {
        let before = dp.conntrack_hits(0).unwrap();
        assert_eq!(run(&mut dp, frame), *action, "{what}");
        let counted = dp.conntrack_hits(0).unwrap() - before;
        assert_eq!(
            counted,
            u64::from(*tracked),
            "{what}: conntrack hit counted"
        );
        hits += counted;
    }
    assert_eq!(hits, 5);
    assert_eq!(dp.conntrack_event(event::CREATED).unwrap(), 3);
    // Tracked packets are passes decided by no rule: the rule counters saw only the openers.
    let passes = cases.iter().filter(|c| c.2 == XDP_PASS).count() as u64;
    assert_eq!(dp.counter(0, Verdict::Pass).unwrap().packets, passes);
    let tcp_out = counters.get("lo", "tcp-out").unwrap();
    assert_eq!(dp.rule_counter(tcp_out).unwrap().packets, 1);
    let flows = dp.conntrack_flows().unwrap();
    let census = conntrack::census(&flows, &settings(&timeouts, 0));
    assert_eq!(census.by_state[&("tcp", "tcp_established")], 1);
    assert_eq!(census.by_state[&("udp", "udp_stream")], 1);
    assert_eq!(census.by_state[&("icmp", "icmp")], 1);
}

#[test]
fn flows_expire_by_their_state_timeout_and_the_sweep_deletes_them() {
    if !testbed::require_root("conntrack::expiry") {
        return;
    }
    let timeouts = Timeouts::default();
    let (mut dp, _, _) = dataplane(RULES, &timeouts);
    assert_eq!(run(&mut dp, &frame(&format!("{OUT} flags SYN"))), XDP_PASS);
    assert_eq!(
        run(&mut dp, &frame("udp 198.18.1.2:5000 -> 198.19.1.2:53")),
        XDP_PASS
    );
    // 30 s later: the unreplied UDP flow is at its timeout (30 s), still live; SYN_SENT too.
    set_clock(&mut dp, &timeouts, 30 * SECOND);
    assert_eq!(
        run(&mut dp, &frame("udp 198.19.1.2:53 -> 198.18.1.2:5000")),
        XDP_PASS
    );
    // SYN_SENT lasts 120 s: the SYN-ACK at 121 s is too late.
    set_clock(&mut dp, &timeouts, 121 * SECOND);
    assert_eq!(
        run(&mut dp, &frame(&format!("{BACK} flags SYN,ACK"))),
        XDP_DROP
    );
    // The replied UDP flow (stream, 120 s from 30 s) lives until 150 s.
    set_clock(&mut dp, &timeouts, 150 * SECOND);
    assert_eq!(
        run(&mut dp, &frame("udp 198.19.1.2:53 -> 198.18.1.2:5000")),
        XDP_PASS
    );
    set_clock(&mut dp, &timeouts, 271 * SECOND);
    assert_eq!(
        run(&mut dp, &frame("udp 198.19.1.2:53 -> 198.18.1.2:5000")),
        XDP_DROP
    );
    // Both flows are expired now; the sweep deletes them.
    let now = settings(&timeouts, 271 * SECOND);
    let swept = conntrack::sweep(&mut dp.conntrack_flows().unwrap(), &now);
    assert_eq!(
        swept,
        conntrack::Swept {
            live: 0,
            expired: 2
        }
    );
    assert_eq!(dp.conntrack_flows().unwrap().counts(), (0, 0));
    // A new SYN re-opens the TCP flow; one whose old entry the kernel finds expired counts
    // as expired-and-replaced.
    assert_eq!(run(&mut dp, &frame(&format!("{OUT} flags SYN"))), XDP_PASS);
    set_clock(&mut dp, &timeouts, 400 * SECOND);
    assert_eq!(run(&mut dp, &frame(&format!("{OUT} flags SYN"))), XDP_PASS);
    assert_eq!(dp.conntrack_event(event::CREATED).unwrap(), 4);
    assert_eq!(dp.conntrack_event(event::EXPIRED_REPLACED).unwrap(), 1);
}

/// The kernel stamps flows by jiffies (an inlined load, not a helper call), which the loader
/// relates to CLOCK_MONOTONIC_COARSE: the clock the sweep and `smf-firewall conntrack` age
/// flows by. A flow opened now is stamped now, to within a tick or two, also after a second
/// `set_conntrack` (the daemon's reload) relates them afresh.
#[test]
fn flows_are_stamped_with_the_coarse_monotonic_clock() {
    if !testbed::require_root("conntrack::real_clock") {
        return;
    }
    let timeouts = Timeouts::default();
    let (mut dp, _, _) = dataplane(RULES, &timeouts);
    let real = ConntrackSettings {
        tracking: tracked::ALL,
        ..timeouts.settings()
    };
    for (round, port) in [(0, 5000), (1, 5001)] {
        dp.set_conntrack(&real).unwrap();
        let before = conntrack::now_ns(&real);
        let opener = format!("udp 198.18.1.2:{port} -> 198.19.1.2:53");
        assert_eq!(run(&mut dp, &frame(&opener)), XDP_PASS);
        let after = conntrack::now_ns(&real);
        let stamps: Vec<u64> = dp
            .conntrack_flows()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.lo_port == port || key.hi_port == port)
            .map(|(_, flow)| flow.last_seen)
            .collect();
        assert_eq!(stamps.len(), 1, "round {round}: one flow on port {port}");
        // A tick is at most 10 ms (HZ=100); the readings may straddle two.
        let slack = 20_000_000;
        assert!(
            stamps[0] + slack >= before && stamps[0] <= after + slack,
            "round {round}: stamped {} against CLOCK_MONOTONIC_COARSE {before}..{after}",
            stamps[0]
        );
        // And the flow is live by the sweep's clock: a reply passes, tracked.
        let hits = dp.conntrack_hits(0).unwrap();
        let reply = format!("udp 198.19.1.2:53 -> 198.18.1.2:{port}");
        assert_eq!(run(&mut dp, &frame(&reply)), XDP_PASS);
        assert_eq!(dp.conntrack_hits(0).unwrap(), hits + 1, "round {round}");
        let swept = conntrack::sweep(&mut dp.conntrack_flows().unwrap(), &real);
        assert_eq!(swept.expired, 0, "round {round}: nothing expired");
    }
}

#[test]
fn timeouts_from_the_config_reach_the_kernel() {
    if !testbed::require_root("conntrack::configured_timeouts") {
        return;
    }
    let mut timeouts = Timeouts::default();
    timeouts.0[usize::from(state::UDP_UNREPLIED)] = std::time::Duration::from_secs(5);
    let (mut dp, _, _) = dataplane(RULES, &timeouts);
    assert_eq!(
        run(&mut dp, &frame("udp 198.18.1.2:5000 -> 198.19.1.2:53")),
        XDP_PASS
    );
    set_clock(&mut dp, &timeouts, 6 * SECOND);
    assert_eq!(
        run(&mut dp, &frame("udp 198.19.1.2:53 -> 198.18.1.2:5000")),
        XDP_DROP
    );
}

#[test]
fn an_icmp_error_quoting_a_flow_passes_and_others_do_not() {
    if !testbed::require_root("conntrack::icmp_errors") {
        return;
    }
    let (mut dp, _, _) = dataplane(RULES, &Timeouts::default());
    let out = frame("udp 198.18.1.2:5000 -> 198.19.1.2:53");
    assert_eq!(run(&mut dp, &out), XDP_PASS);
    let quote = &out[14..14 + 28];
    let error = |spec: &str| PacketSpec::parse(spec).unwrap().frame_with_payload(quote);
    // Each row: the error, the XDP action.
    let cases = [
        ("icmp 198.19.1.1 -> 198.18.1.2 type 3 code 3", XDP_PASS),
        ("icmp 198.19.7.7 -> 198.18.1.2 type 11 code 0", XDP_PASS),
        // Sent to someone else than the quoted sender.
        ("icmp 198.19.1.1 -> 198.18.1.3 type 3 code 3", XDP_DROP),
        // Not an error type.
        ("icmp 198.19.1.1 -> 198.18.1.2 type 5 code 0", XDP_DROP),
    ];
    for (spec, action) in cases {
        assert_eq!(run(&mut dp, &error(spec)), action, "{spec}");
    }
    let other = frame("udp 198.18.1.2:5001 -> 198.19.1.2:53");
    let stray = PacketSpec::parse("icmp 198.19.1.1 -> 198.18.1.2 type 3 code 3")
        .unwrap()
        .frame_with_payload(&other[14..14 + 28]);
    assert_eq!(run(&mut dp, &stray), XDP_DROP, "quotes an untracked flow");
}

#[test]
fn a_reload_keeps_the_flows() {
    if !testbed::require_root("conntrack::reload") {
        return;
    }
    let (mut dp, _, mut counters) = dataplane(RULES, &Timeouts::default());
    assert_eq!(run(&mut dp, &frame(&format!("{OUT} flags SYN"))), XDP_PASS);
    install(&mut dp, NO_STATE, &mut counters);
    assert_eq!(
        run(&mut dp, &frame(&format!("{BACK} flags SYN,ACK"))),
        XDP_PASS,
        "the flow opened under the old rules survives the reload"
    );
    assert_eq!(
        run(&mut dp, &frame("udp 198.18.1.2:5000 -> 198.19.1.2:53")),
        XDP_DROP,
        "the new rules apply to everything else"
    );
}

#[test]
fn the_table_holds_a_million_flows() {
    if !testbed::require_root("conntrack::million") {
        return;
    }
    const FLOWS: u32 = 1_000_000;
    let mut dp = Dataplane::load_with(
        Capacity::default(),
        LruSizes {
            flows: FLOWS,
            ..LruSizes::default()
        },
    )
    .unwrap();
    dp.set_enforcing(true).unwrap();
    dp.bind(LOOPBACK, 0).unwrap();
    let mut counters = RuleCounters::default();
    install(&mut dp, RULES, &mut counters);
    let timeouts = Timeouts::default();
    set_clock(&mut dp, &timeouts, 0);
    // Fill the table from userspace with distinct UDP flows, then open one more by a packet.
    {
        let mut flows = dp.conntrack_flows().unwrap();
        for i in 0..FLOWS - 1 {
            let key = firewall_common::FlowKey4 {
                lo_addr: u32::from_ne_bytes([198, 18, (i >> 8) as u8, i as u8]),
                hi_addr: u32::from_ne_bytes([198, 19, 0, 1]),
                lo_port: (i >> 16) as u16 + 1024,
                hi_port: 53,
                protocol: protocol::UDP,
                _pad: [0; 3],
            };
            let flow = firewall_common::Flow {
                state: state::UDP_UNREPLIED,
                ..Default::default()
            };
            flows.ipv4.insert(key, flow, 0).unwrap();
        }
    }
    assert_eq!(
        run(&mut dp, &frame("udp 198.18.1.2:5000 -> 198.19.1.2:53")),
        XDP_PASS
    );
    assert_eq!(
        run(&mut dp, &frame("udp 198.19.1.2:53 -> 198.18.1.2:5000")),
        XDP_PASS,
        "the newest flow is found in a full table"
    );
    let live = conntrack::census(&dp.conntrack_flows().unwrap(), &settings(&timeouts, 0))
        .by_state
        .values()
        .sum::<u64>();
    // An LRU hash may evict a little before it is full (per-CPU free lists).
    assert!(
        live > u64::from(FLOWS) * 99 / 100 && live <= u64::from(FLOWS),
        "{live} live flows"
    );
    eprintln!(
        "conntrack: {live} flows, {} bytes of kernel memory",
        dp.conntrack_memory().unwrap_or(0)
    );
}

/// Stateful rules for both families.
const BOTH: &str = "
version: 1
interfaces:
  lo:
    default: drop
    rules:
      - { id: tcp-out, action: pass, protocol: tcp, src: [198.18.0.0/16, 2001:2::/64], state: true }
      - { id: udp-out, action: pass, protocol: udp, src: [198.18.0.0/16, 2001:2::/64], state: true }
      - { id: ping-out, action: pass, protocol: icmp, icmp_type: 8, src: 198.18.0.0/16, state: true }
";

#[test]
fn each_family_has_its_own_table_and_sweep_census_flush_see_both() {
    if !testbed::require_root("conntrack::families") {
        return;
    }
    // Pinned maps, so that `conntrack::Pinned` (what `smf-firewall conntrack` opens) can
    // flush them; the directory goes with `pins`.
    let pins = testbed::DaemonDir::new().unwrap();
    let dir = pins.pin_path().join("maps");
    std::fs::create_dir_all(&dir).unwrap();
    let mut dp = Dataplane::load_pinned(Capacity::default(), LruSizes::default(), &dir).unwrap();
    dp.set_enforcing(true).unwrap();
    dp.bind(LOOPBACK, 0).unwrap();
    let timeouts = Timeouts::default();
    install(&mut dp, BOTH, &mut RuleCounters::default());
    set_clock(&mut dp, &timeouts, 0);
    let v6_tcp = "tcp [2001:2::2]:40000 -> [2001:2:0:1::2]:443";
    let v6_back = "tcp [2001:2:0:1::2]:443 -> [2001:2::2]:40000";
    let v4_udp = frame("udp 198.18.1.2:5000 -> 198.19.1.2:53");
    let v6_udp = frame("udp [2001:2::2]:5000 -> [2001:2:0:1::2]:53");
    // Openers: 3 IPv4 flows (the ping to a lower address: its key starts with the responder),
    // 2 IPv6 flows.
    for opener in [
        frame(&format!("{OUT} flags SYN")),
        v4_udp.clone(),
        echo("198.18.1.2", "198.18.0.9", 8, 7),
        frame(&format!("{v6_tcp} flags SYN")),
        v6_udp.clone(),
    ] {
        assert_eq!(run(&mut dp, &opener), XDP_PASS);
    }
    assert_eq!(dp.conntrack_flows().unwrap().counts(), (3, 2));
    // The IPv4 keys are normalised: lower endpoint first, `origin` says who opened.
    let ipv4: Vec<_> = {
        let flows = dp.conntrack_flows().unwrap();
        let mut keys: Vec<_> = flows.ipv4.iter().flatten().collect();
        keys.sort_by_key(|(key, _)| *key);
        keys.into_iter().map(|(k, f)| (k, f.origin)).collect()
    };
    let addr = |a: [u8; 4]| u32::from_ne_bytes(a);
    let key = |lo, hi, lo_port, hi_port, protocol| firewall_common::FlowKey4 {
        lo_addr: addr(lo),
        hi_addr: addr(hi),
        lo_port,
        hi_port,
        protocol,
        _pad: [0; 3],
    };
    let mut want = vec![
        (
            key([198, 18, 1, 2], [198, 19, 1, 2], 40000, 443, protocol::TCP),
            origin::LO,
        ),
        (
            key([198, 18, 1, 2], [198, 19, 1, 2], 5000, 53, protocol::UDP),
            origin::LO,
        ),
        (
            key([198, 18, 0, 9], [198, 18, 1, 2], 7, 7, protocol::ICMP),
            origin::HI,
        ),
    ];
    want.sort_by_key(|(key, _)| *key);
    assert_eq!(ipv4, want);
    // Replies of each family are tracked; an ICMP error quoting a flow of each passes.
    let hits = dp.conntrack_hits(0).unwrap();
    let v4_error = PacketSpec::parse("icmp 198.19.9.9 -> 198.18.1.2 type 3 code 3")
        .unwrap()
        .frame_with_payload(&v4_udp[14..14 + 28]);
    let v6_error = PacketSpec::parse("icmpv6 2001:2:0:2::1 -> 2001:2::2 type 1 code 4")
        .unwrap()
        .frame_with_payload(&v6_udp[14..14 + 48]);
    for reply in [
        frame(&format!("{BACK} flags SYN,ACK")),
        echo("198.18.0.9", "198.18.1.2", 0, 7),
        frame(&format!("{v6_back} flags SYN,ACK")),
        v4_error,
        v6_error,
    ] {
        assert_eq!(run(&mut dp, &reply), XDP_PASS);
    }
    assert_eq!(dp.conntrack_hits(0).unwrap() - hits, 5);
    let census = conntrack::census(&dp.conntrack_flows().unwrap(), &settings(&timeouts, 0));
    assert_eq!((census.ipv4, census.ipv6, census.expired), (3, 2, 0));
    assert_eq!(census.by_state[&("tcp", "tcp_syn_recv")], 2);
    assert_eq!(census.by_state[&("udp", "udp")], 2);
    assert_eq!(census.by_state[&("icmp", "icmp")], 1);
    // At 31 s the UDP flows (30 s unreplied) and the echo (30 s) are expired in both tables.
    let later = settings(&timeouts, 31 * SECOND);
    let census = conntrack::census(&dp.conntrack_flows().unwrap(), &later);
    assert_eq!((census.ipv4, census.ipv6, census.expired), (1, 1, 3));
    let swept = conntrack::sweep(&mut dp.conntrack_flows().unwrap(), &later);
    assert_eq!(
        swept,
        conntrack::Swept {
            live: 2,
            expired: 3
        }
    );
    assert_eq!(dp.conntrack_flows().unwrap().counts(), (1, 1));
    // `smf-firewall conntrack flush` empties both tables.
    let mut pinned = conntrack::Pinned::open(&dir).unwrap();
    assert_eq!(pinned.flush().unwrap(), 2);
    assert_eq!(dp.conntrack_flows().unwrap().counts(), (0, 0));
    assert_eq!(dp.conntrack_flushed().unwrap(), 2);
    for (reply, what) in [(BACK, "IPv4"), (v6_back, "IPv6")] {
        assert_eq!(
            run(&mut dp, &frame(&format!("{reply} flags ACK"))),
            XDP_DROP,
            "the {what} flow is gone"
        );
    }
}

// ---- differential: random packet sequences through the kernel and the reference ----

const LAN4: [&str; 2] = ["198.18.0.1", "198.18.0.2"];
const WAN4: [&str; 2] = ["198.19.0.1", "198.19.0.2"];
const LAN6: [&str; 2] = ["2001:2::1", "2001:2::2"];
const WAN6: [&str; 2] = ["2001:2:0:1::1", "2001:2:0:1::2"];
const PORTS: [u16; 4] = [40000, 40001, 53, 80];

/// Rules a random set is drawn from (some open flows, some do not).
const RULE_POOL: [&str; 11] = [
    "{ id: tcp-out, action: pass, protocol: tcp, src: [198.18.0.0/16, 2001:2::/64], state: true }",
    "{ id: udp-out, action: pass, protocol: udp, src: [198.18.0.0/16, 2001:2::/64], state: true }",
    "{ id: ping-out, action: pass, protocol: icmp, icmp_type: 8, src: 198.18.0.0/16, state: true }",
    "{ id: ping6-out, action: pass, protocol: icmpv6, icmp_type: 128, src: 2001:2::/64, state: true }",
    "{ id: any-out, action: pass, src: [198.18.0.0/16, 2001:2::/64], state: true }",
    "{ id: web-in, action: pass, protocol: tcp, dst_port: 80 }",
    "{ id: no-dns, action: drop, protocol: udp, dst_port: 53 }",
    "{ id: udp-in, action: pass, protocol: udp, src_port: 53 }",
    "{ id: tcp-out-egress, action: pass, direction: out, protocol: tcp, dst_port: 80, state: true }",
    "{ id: no-udp-egress, action: drop, direction: out, protocol: udp }",
    "{ id: ping-egress, action: pass, direction: out, protocol: icmp, state: true }",
];

fn rule_set(rng: &mut ChaCha8Rng) -> String {
    let mut rules: Vec<&str> = RULE_POOL
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    rules.sort_by_key(|_| rng.random::<u32>());
    let default = if rng.random_bool(0.8) { "drop" } else { "pass" };
    let mut text = format!("version: 1\ninterfaces:\n  lo:\n    default: {default}\n    rules:\n");
    for rule in rules {
        text.push_str(&format!("      - {rule}\n"));
    }
    text
}

/// One flow of the pool: (v6?, protocol, lan host, wan host, lan port, wan port or echo id).
type PoolFlow = (bool, &'static str, &'static str, &'static str, u16, u16);

fn pool_flow(rng: &mut ChaCha8Rng) -> PoolFlow {
    let v6 = rng.random_bool(0.3);
    let protocol = *["tcp", "udp", "icmp"].choose(rng).unwrap();
    let (lan, wan) = if v6 { (&LAN6, &WAN6) } else { (&LAN4, &WAN4) };
    (
        v6,
        protocol,
        lan.choose(rng).unwrap(),
        wan.choose(rng).unwrap(),
        *PORTS.choose(rng).unwrap(),
        *PORTS.choose(rng).unwrap(),
    )
}

fn endpoint(v6: bool, addr: &str, port: u16) -> String {
    if v6 {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// A packet of `flow`, from the LAN side or the WAN side.
fn packet(rng: &mut ChaCha8Rng, flow: &PoolFlow, from_lan: bool) -> Vec<u8> {
    let (v6, protocol, lan, wan, lan_port, wan_port) = *flow;
    let (src, dst, sport, dport) = if from_lan {
        (lan, wan, lan_port, wan_port)
    } else {
        (wan, lan, wan_port, lan_port)
    };
    match protocol {
        "tcp" => {
            let flags = *[
                "SYN", "SYN,ACK", "ACK", "PSH,ACK", "FIN,ACK", "RST", "RST,ACK",
            ]
            .choose(rng)
            .unwrap();
            frame(&format!(
                "tcp {} -> {} flags {flags}",
                endpoint(v6, src, sport),
                endpoint(v6, dst, dport)
            ))
        }
        "udp" => frame(&format!(
            "udp {} -> {}",
            endpoint(v6, src, sport),
            endpoint(v6, dst, dport)
        )),
        _ => {
            let (name, request, reply) = if v6 {
                ("icmpv6", 128, 129)
            } else {
                ("icmp", 8, 0)
            };
            let icmp_type = if rng.random_bool(0.5) { request } else { reply };
            let mut out = frame(&format!("{name} {src} -> {dst} type {icmp_type}"));
            let at = 14 + if v6 { 40 } else { 20 } + 4;
            out[at..at + 2].copy_from_slice(&lan_port.to_be_bytes());
            out
        }
    }
}

/// An ICMP error about a packet of `flow`, sent back to the quoted packet's sender (or, now
/// and then, to someone else).
fn error_about(rng: &mut ChaCha8Rng, quoted: &[u8], flow: &PoolFlow, from_lan: bool) -> Vec<u8> {
    let (v6, _, lan, wan, _, _) = *flow;
    let ip_len = if v6 { 40 } else { 20 };
    let quote = &quoted[14..(14 + ip_len + 8).min(quoted.len())];
    let (sender, other) = if from_lan { (lan, wan) } else { (wan, lan) };
    let to = if rng.random_bool(0.9) { sender } else { other };
    let spec = if v6 {
        format!("icmpv6 2001:2:0:2::1 -> {to} type 1 code 4")
    } else {
        format!("icmp 198.19.9.9 -> {to} type 3 code 3")
    };
    PacketSpec::parse(&spec).unwrap().frame_with_payload(quote)
}

/// Short timeouts, so that random steps of time cross them often.
fn test_timeouts() -> Timeouts {
    Timeouts([20, 10, 300, 20, 20, 5, 10, 30, 10].map(std::time::Duration::from_secs))
}

#[test]
fn the_kernel_tracks_random_sequences_as_the_reference_does() {
    if !testbed::require_root("conntrack::differential") {
        return;
    }
    let sequences: usize = std::env::var("SMF_FIREWALL_CONNTRACK_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("SMF_FIREWALL_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xc0_22ec7);
    eprintln!("conntrack differential: seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let timeouts = test_timeouts();
    let kernel_timeouts: [u64; state::COUNT] = timeouts.settings().timeouts_ns;
    let (mut packets, mut tracked, mut passed) = (0u64, 0u64, 0u64);
    for _ in 0..sequences {
        // A fresh table per sequence, as the reference's.
        let text = rule_set(&mut rng);
        let (mut dp, rules, _) = dataplane(&text, &timeouts);
        let policy = rules.interfaces["lo"].clone();
        let mut reference = Tracker::new(kernel_timeouts);
        let pool: Vec<PoolFlow> = (0..6).map(|_| pool_flow(&mut rng)).collect();
        let mut now = 0u64;
        let mut log = String::new();
        for _ in 0..300 {
            now += match rng.random_range(0..10) {
                0..=6 => rng.random_range(0..3) * SECOND,
                7 | 8 => rng.random_range(3..40) * SECOND,
                _ => rng.random_range(40..400) * SECOND,
            };
            let flow = pool.choose(&mut rng).unwrap();
            let from_lan = rng.random_bool(0.6);
            let mut frame = packet(&mut rng, flow, from_lan);
            if rng.random_bool(0.1) {
                frame = error_about(&mut rng, &frame, flow, from_lan);
            }
            // Now and then the packet leaves by the interface (TC egress) instead.
            let leaving = rng.random_bool(0.25);
            let (direction, slot) = if leaving {
                (Direction::Out, directed_slot(0, direction::OUT))
            } else {
                (Direction::In, 0)
            };
            // As the daemon sets it: only the protocols of this rule set's `state: true` rules
            // look their flow up, which must lose no flow.
            let at = ConntrackSettings {
                tracking: rules.tracked(),
                ..settings(&timeouts, now)
            };
            dp.set_conntrack(&at).unwrap();
            // Now and then the daemon's sweep, and the presence filter's rebuild after it.
            if rng.random_bool(0.02) {
                conntrack::sweep(&mut dp.conntrack_flows().unwrap(), &at);
                dp.rebuild_presence().unwrap();
            }
            let hits = dp.conntrack_hits(slot).unwrap();
            let got = if leaving {
                match run_egress(&mut dp, &frame) {
                    TC_NEXT => XDP_PASS,
                    _ => XDP_DROP,
                }
            } else {
                run(&mut dp, &frame)
            };
            let got_tracked = dp.conntrack_hits(slot).unwrap() > hits;
            let want = reference.judge_direction(&policy, &frame, now, direction);
            let want_action = if want.action == Action::Pass {
                XDP_PASS
            } else {
                XDP_DROP
            };
            log.push_str(&format!(
                "t={}s {direction:?} {:?} -> {:?}\n",
                now / SECOND,
                reference::parse(&frame),
                want.reason
            ));
            assert_eq!(
                (got, got_tracked),
                (want_action, want.reason == Reason::Tracked),
                "kernel (action, tracked) vs reference {want:?}\nrules:\n{text}\nsequence:\n{log}"
            );
            packets += 1;
            tracked += u64::from(got_tracked);
            passed += u64::from(got == XDP_PASS);
        }
        // The tables agree too: live flows by state.
        let mut kernel_states: Vec<u8> = {
            let flows = dp.conntrack_flows().unwrap();
            let at = settings(&timeouts, now);
            flows
                .iter()
                .filter(|(_, f)| !f.expired(&at, now))
                .map(|(_, f)| f.state)
                .collect()
        };
        let mut reference_states: Vec<u8> = reference
            .flows
            .values()
            .filter(|f| {
                now.checked_sub(f.last_seen)
                    .is_none_or(|idle| idle <= kernel_timeouts[usize::from(f.state)])
            })
            .map(|f| f.state)
            .collect();
        kernel_states.sort_unstable();
        reference_states.sort_unstable();
        assert_eq!(
            kernel_states, reference_states,
            "live flows by state\nrules:\n{text}\n{log}"
        );
    }
    eprintln!(
        "conntrack differential: {packets} packets in {sequences} sequences agree ({tracked} tracked, {passed} passed)"
    );
    assert!(
        tracked > 0 && passed > tracked,
        "sequences must exercise tracking"
    );
}

#[test]
fn with_tracking_off_the_table_is_not_consulted() {
    if !testbed::require_root("conntrack::tracking_off") {
        return;
    }
    let timeouts = Timeouts::default();
    let (mut dp, _, _) = dataplane(RULES, &timeouts);
    assert_eq!(run(&mut dp, &frame(&format!("{OUT} flags SYN"))), XDP_PASS);
    let off = ConntrackSettings {
        tracking: 0,
        ..settings(&timeouts, 0)
    };
    dp.set_conntrack(&off).unwrap();
    assert_eq!(
        run(&mut dp, &frame(&format!("{BACK} flags SYN,ACK"))),
        XDP_DROP,
        "the daemon turns tracking off only when no rule has state: true"
    );
    assert_eq!(
        run(&mut dp, &frame("udp 198.18.1.2:5000 -> 198.19.1.2:53")),
        XDP_PASS
    );
    assert_eq!(dp.conntrack_event(event::CREATED).unwrap(), 1, "nor opened");
}

/// The presence filter (`conntrack::presence`) decides before the table: a flow written into
/// the table behind the kernel's back (so not marked) is not found until a rebuild marks it;
/// flows the kernel opened stay found across rebuilds, which zero each half in turn; and the
/// mark of a flow gone is dropped by the next rebuild.
#[test]
fn the_presence_filter_is_rebuilt_from_the_tables() {
    if !testbed::require_root("conntrack::presence") {
        return;
    }
    let timeouts = Timeouts::default();
    let (mut dp, _, _) = dataplane(RULES, &timeouts);
    assert_eq!(run(&mut dp, &frame(&format!("{OUT} flags SYN"))), XDP_PASS);
    let udp_back = frame("udp 198.19.1.2:53 -> 198.18.1.2:5000");
    let key = firewall_common::FlowKey4 {
        lo_addr: u32::from_ne_bytes([198, 18, 1, 2]),
        hi_addr: u32::from_ne_bytes([198, 19, 1, 2]),
        lo_port: 5000,
        hi_port: 53,
        protocol: protocol::UDP,
        _pad: [0; 3],
    };
    let behind_the_kernel = |dp: &mut Dataplane| {
        let flow = firewall_common::Flow {
            state: state::UDP_UNREPLIED,
            origin: origin::LO,
            ..Default::default()
        };
        dp.conntrack_flows()
            .unwrap()
            .ipv4
            .insert(key, flow, 0)
            .unwrap();
    };
    behind_the_kernel(&mut dp);
    assert_eq!(run(&mut dp, &udp_back), XDP_DROP, "no mark: no lookup");
    dp.rebuild_presence().unwrap();
    assert_eq!(run(&mut dp, &udp_back), XDP_PASS, "the rebuild marked it");
    for _ in 0..3 {
        dp.rebuild_presence().unwrap();
    }
    assert_eq!(
        run(&mut dp, &frame(&format!("{BACK} flags SYN,ACK"))),
        XDP_PASS,
        "the kernel's flow after both halves were rebuilt"
    );
    assert_eq!(run(&mut dp, &udp_back), XDP_PASS);
    // Gone from the table, then written again unmarked: the stale mark lets it be found
    // until a rebuild drops it.
    dp.conntrack_flows().unwrap().ipv4.remove(&key).unwrap();
    behind_the_kernel(&mut dp);
    assert_eq!(
        run(&mut dp, &udp_back),
        XDP_PASS,
        "a mark is kept until a rebuild"
    );
    dp.conntrack_flows().unwrap().ipv4.remove(&key).unwrap();
    dp.rebuild_presence().unwrap();
    behind_the_kernel(&mut dp);
    assert_eq!(
        run(&mut dp, &udp_back),
        XDP_DROP,
        "the rebuild dropped the mark"
    );
}

/// A packet of a protocol that `tracking` leaves out does not look its flow up: with UDP
/// tracked no more, a UDP flow's reply meets the rules, while TCP's still passes.
#[test]
fn only_the_tracked_protocols_look_their_flow_up() {
    if !testbed::require_root("conntrack::tracked_protocols") {
        return;
    }
    let timeouts = Timeouts::default();
    let (mut dp, _, _) = dataplane(RULES, &timeouts);
    let udp_out = "udp 198.18.1.2:5000 -> 198.19.1.2:5353";
    let udp_back = "udp 198.19.1.2:5353 -> 198.18.1.2:5000";
    for out in [format!("{OUT} flags SYN"), udp_out.to_string()] {
        assert_eq!(run(&mut dp, &frame(&out)), XDP_PASS, "{out} opens a flow");
    }
    assert_eq!(dp.conntrack_event(event::CREATED).unwrap(), 2);
    assert_eq!(run(&mut dp, &frame(udp_back)), XDP_PASS, "tracked");
    let tcp_only = ConntrackSettings {
        tracking: tracked::TCP,
        ..settings(&timeouts, 0)
    };
    dp.set_conntrack(&tcp_only).unwrap();
    let hits = dp.conntrack_hits(0).unwrap();
    assert_eq!(
        run(&mut dp, &frame(udp_back)),
        XDP_DROP,
        "UDP is not looked up"
    );
    assert_eq!(
        run(&mut dp, &frame(&format!("{BACK} flags SYN,ACK"))),
        XDP_PASS,
        "TCP still is"
    );
    assert_eq!(dp.conntrack_hits(0).unwrap(), hits + 1);
}
