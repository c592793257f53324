//! Rate limits in the real kernel: frames run through the XDP program with
//! BPF_PROG_TEST_RUN (as if they arrived on loopback), the limits' clock fixed through
//! `LIMIT_CLOCK` so that "one instant" and "100 ms later" are exact and no assertion depends
//! on timing. Verdicts are read from the counters.

use std::path::Path;

use firewall_common::{DropLogControl, Verdict};
use firewall_dataplane::{
    loader::{Capacity, Dataplane, LruSizes},
    test_run::LOOPBACK,
};
use firewall_rules::{
    Direction, RuleSet,
    compile::{self, RuleCounters},
    spec::PacketSpec,
};
use firewall_user::drop_log;

const SECOND: u64 = 1_000_000_000;
/// The limits' fixed clock at the start of each test.
const T: u64 = 5_000 * SECOND;

struct Fixture {
    dataplane: Dataplane,
    counters: RuleCounters,
}

impl Fixture {
    fn new(rules: &str) -> Fixture {
        Fixture::with_keys(rules, firewall_common::limit::DEFAULT_MAX_KEYS)
    }

    /// The program with `rules` on `lo`, enforcing, `max_keys` per-address buckets, the
    /// clock at T.
    fn with_keys(rules: &str, max_keys: u32) -> Fixture {
        let lru = LruSizes {
            limit_keys: max_keys,
            ..LruSizes::default()
        };
        let mut dataplane = Dataplane::load_with(Capacity::default(), lru)
            .expect("the verifier accepts the programs");
        dataplane.set_enforcing(true).unwrap();
        dataplane.bind(LOOPBACK, 0).unwrap();
        dataplane.set_limit_clock(T).unwrap();
        let mut fixture = Fixture {
            dataplane,
            counters: RuleCounters::default(),
        };
        fixture.install(rules);
        fixture
    }

    fn install(&mut self, rules: &str) {
        let text =
            format!("version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n{rules}");
        let rules = RuleSet::parse(Path::new("limits-test.yaml"), &text).unwrap();
        let compiled =
            compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut self.counters).unwrap();
        self.dataplane.install(&compiled).unwrap();
    }

    fn at(&mut self, ns: u64) {
        self.dataplane.set_limit_clock(ns).unwrap();
    }

    /// Runs `spec`'s frame `times` times in one BPF_PROG_TEST_RUN.
    fn run(&mut self, spec: &str, times: u32) {
        let frame = PacketSpec::parse(spec).unwrap().frame();
        self.run_frame(&frame, times);
    }

    fn run_frame(&mut self, frame: &[u8], times: u32) {
        self.dataplane
            .run_repeated(frame, Direction::In, times)
            .unwrap();
    }

    fn hits(&self, rule: &str) -> u64 {
        let slot = self.counters.get("lo", rule).unwrap();
        self.dataplane.rule_counter(slot).unwrap().packets
    }

    fn verdicts(&self) -> (u64, u64) {
        let count = |v| self.dataplane.counter(0, v).unwrap().packets;
        (count(Verdict::Pass), count(Verdict::Drop))
    }
}

const FLOOD: &str = "udp 198.18.0.2:40000 -> 198.19.0.1:53";

#[test]
fn one_instant_passes_exactly_the_burst_and_drops_the_rest() {
    if !testbed::require_root("limits_kernel::burst") {
        return;
    }
    let mut f = Fixture::new(
        "      - { id: cap, action: drop, protocol: udp, dst_port: 53, limit: { over: 100/s, burst: 100, per: src } }\n",
    );
    f.run(FLOOD, 10_000);
    assert_eq!(f.verdicts(), (100, 9_900));
    assert_eq!(f.hits("cap"), 9_900);
    // A tenth of a second refills ten.
    f.at(T + SECOND / 10);
    f.run(FLOOD, 1_000);
    assert_eq!(f.verdicts(), (110, 10_890));
    // Another source has its own bucket; another port is not the rule's.
    f.run("udp 198.18.0.3:40000 -> 198.19.0.1:53", 150);
    f.run("udp 198.18.0.2:40000 -> 198.19.0.1:54", 10);
    assert_eq!(f.verdicts(), (220, 10_940));
}

#[test]
fn packets_under_the_limit_go_on_to_later_rules_in_order() {
    if !testbed::require_root("limits_kernel::order") {
        return;
    }
    let mut f = Fixture::new(concat!(
        "      - { id: first, action: drop, protocol: udp, limit: { over: 10/s, burst: 10 } }\n",
        "      - { id: second, action: pass, protocol: udp, dst_port: 53, limit: { over: 5/s, burst: 5 } }\n",
        "      - { id: rest, action: drop, protocol: udp, dst_port: 53 }\n",
    ));
    // 10 go through `first`'s bucket; of those, 5 through `second`'s to `rest`, which
    // drops them, and 5 are over `second` (pass); the other 20 are over `first` (drop).
    f.run(FLOOD, 30);
    assert_eq!(
        (f.hits("first"), f.hits("second"), f.hits("rest")),
        (20, 5, 5)
    );
    assert_eq!(f.verdicts(), (5, 25));
    // Over `first`, a packet never reaches `second`: its bucket is still empty, not spent.
    f.at(T + SECOND);
    f.run("udp 198.18.0.2:40000 -> 198.19.0.1:54", 10);
    assert_eq!(f.hits("rest"), 5);
    assert_eq!(
        f.verdicts(),
        (15, 25),
        "port 54: under `first`, then the default"
    );
}

#[test]
fn polite_sources_are_never_limited_while_one_floods() {
    if !testbed::require_root("limits_kernel::polite") {
        return;
    }
    let mut f = Fixture::new(
        "      - { id: per-source, action: drop, protocol: udp, limit: { over: 100/s, burst: 100, per: src } }\n",
    );
    // 1 s in steps of 100 ms: each of 200 sources sends 5 (50/s), the flooder 10,000
    // (100,000/s).
    for step in 0..10u64 {
        f.at(T + step * SECOND / 10);
        for host in 0..200u32 {
            let spec = format!(
                "udp 198.18.{}.{}:40000 -> 198.19.0.1:53",
                1 + host / 250,
                1 + host % 250
            );
            f.run(&spec, 5);
        }
        f.run("udp 198.19.9.9:40000 -> 198.19.0.1:53", 10_000);
    }
    // The flooder: its burst of 100, then 10 per step; all of the others pass.
    let flood_passed = 100 + 9 * 10;
    assert_eq!(f.hits("per-source"), 100_000 - flood_passed);
    assert_eq!(
        f.verdicts(),
        (10_000 + flood_passed, 100_000 - flood_passed)
    );
}

#[test]
fn a_prefix_shares_a_bucket_and_byte_rates_charge_the_frame() {
    if !testbed::require_root("limits_kernel::prefix") {
        return;
    }
    let mut f = Fixture::new(concat!(
        "      - { id: net, action: drop, protocol: udp, dst_port: 53, limit: { over: 1/s, burst: 4, per: src/24 } }\n",
        "      - { id: bytes, action: drop, protocol: udp, dst_port: 54, limit: { over: 8kbit/s, burst: 1000 } }\n",
        "      - { id: v6, action: drop, family: ipv6, protocol: udp, limit: { over: 1/s, burst: 2, per: src/64 } }\n",
    ));
    for host in 1..=4 {
        f.run(&format!("udp 198.18.7.{host}:40000 -> 198.19.0.1:53"), 2);
    }
    assert_eq!(f.hits("net"), 4, "one /24, one bucket of 4");
    f.run("udp 198.18.8.1:40000 -> 198.19.0.1:53", 4);
    assert_eq!(f.hits("net"), 4, "another /24 has its own");
    let frame = PacketSpec::parse("udp 198.18.0.2:40000 -> 198.19.0.1:54")
        .unwrap()
        .frame();
    let per_burst = 1000 / frame.len() as u64;
    f.run_frame(&frame, 100);
    assert_eq!(f.hits("bytes"), 100 - per_burst);
    f.run("udp [2001:2::1]:40000 -> [2001:2:0:1::1]:55", 3);
    f.run("udp [2001:2::ffff]:40000 -> [2001:2:0:1::1]:55", 3);
    assert_eq!(f.hits("v6"), 4, "one /64: a burst of 2 for 6 packets");
}

#[test]
fn a_reload_keeps_the_buckets_of_unchanged_rules_and_refills_changed_ones() {
    if !testbed::require_root("limits_kernel::reload") {
        return;
    }
    let rules = |burst: u32| {
        format!(
            concat!(
                "      - {{ id: one, action: drop, protocol: udp, dst_port: 53, limit: {{ over: 1/s, burst: 3 }} }}\n",
                "      - {{ id: keyed, action: drop, protocol: udp, dst_port: 54, limit: {{ over: 1/s, burst: {}, per: src }} }}\n",
            ),
            burst
        )
    };
    let mut f = Fixture::new(&rules(3));
    f.run(FLOOD, 5);
    f.run("udp 198.18.0.2:40000 -> 198.19.0.1:54", 5);
    assert_eq!((f.hits("one"), f.hits("keyed")), (2, 2));
    let epoch = |f: &Fixture, rule: &str| {
        let slot = f.counters.get("lo", rule).unwrap();
        f.dataplane.limit(slot).unwrap().epoch
    };
    let before = (epoch(&f, "one"), epoch(&f, "keyed"));
    // The same rules again: both buckets stay empty.
    f.install(&rules(3));
    assert_eq!((epoch(&f, "one"), epoch(&f, "keyed")), before);
    f.run(FLOOD, 1);
    f.run("udp 198.18.0.2:40000 -> 198.19.0.1:54", 1);
    assert_eq!((f.hits("one"), f.hits("keyed")), (3, 3));
    // `keyed` changed: its buckets start full; `one` did not.
    f.install(&rules(4));
    assert_eq!(
        (epoch(&f, "one"), epoch(&f, "keyed")),
        (before.0, before.1 + 1)
    );
    f.run(FLOOD, 1);
    f.run("udp 198.18.0.2:40000 -> 198.19.0.1:54", 5);
    assert_eq!((f.hits("one"), f.hits("keyed")), (4, 4));
    assert_eq!(
        f.dataplane.limit_census().unwrap().values().sum::<u64>(),
        1,
        "the stale key is not counted"
    );
}

#[test]
fn a_flood_of_distinct_sources_keeps_the_table_at_its_size() {
    if !testbed::require_root("limits_kernel::flood") {
        return;
    }
    // Each BPF_PROG_TEST_RUN of XDP swaps the kernel's dispatcher (an RCU grace period), so
    // this runs thousands of sources, not the million of the daemon's flood test
    // (limits_e2e): enough to overflow the table twice.
    const KEYS: u32 = 1_024;
    const SOURCES: u32 = 2 * KEYS;
    let mut f = Fixture::with_keys(
        "      - { id: per-source, action: drop, protocol: udp, limit: { over: 1/s, burst: 1, per: src } }\n",
        KEYS,
    );
    let mut frame = PacketSpec::parse(FLOOD).unwrap().frame();
    // The IPv4 source is at bytes 26-29 of the frame (198.18.0.0/15); its checksum is not
    // checked.
    for n in 0..SOURCES {
        frame[26..30].copy_from_slice(&(0xc612_0000u32 | n).to_be_bytes());
        f.run_frame(&frame, 2);
    }
    let slot = f.counters.get("lo", "per-source").unwrap();
    let census = f.dataplane.limit_census().unwrap();
    let keys = census.get(&slot).copied().unwrap_or(0);
    assert!(
        keys <= u64::from(KEYS) && keys > u64::from(KEYS) / 2,
        "{keys} keys"
    );
    // Every source's second frame was over its burst of one: an evicted key never made a
    // new source's first frame over.
    let sources = u64::from(SOURCES);
    assert_eq!(f.hits("per-source"), sources);
    assert_eq!(f.verdicts(), (sources, sources));
}

#[test]
fn a_logged_limit_rule_samples_what_it_limits_into_the_drop_log() {
    if !testbed::require_root("limits_kernel::log") {
        return;
    }
    let mut f = Fixture::new(
        "      - { id: cap, action: drop, log: true, protocol: udp, dst_port: 53, limit: { over: 1/s, burst: 2 } }\n",
    );
    let (mut ring, stats) = f.dataplane.take_drop_log().unwrap();
    f.dataplane
        .set_drop_log(DropLogControl {
            rate_per_second: 5,
            clock_ns: T,
            ..DropLogControl::default()
        })
        .unwrap();
    f.run(FLOOD, 20);
    // 2 under the limit pass unlogged; of the 18 over it, the drop log's 5 a second.
    assert_eq!(f.verdicts(), (2, 18));
    let events = drop_log::drain(&mut ring);
    let slot = f.counters.get("lo", "cap").unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.rule == slot && e.dst_port == 53));
    let suppressed = drop_log::total(&stats, firewall_common::drop_log::SUPPRESSED).unwrap();
    assert_eq!(suppressed, 13);
}

// A rule whose values overlap has several entries a packet matches (here ports 65535 and
// 1024-65535): its bucket charges the packet once, not once per entry. The differential test
// found this.
#[test]
fn a_rule_with_overlapping_values_charges_a_packet_once() {
    if !testbed::require_root("limits_kernel::overlap") {
        return;
    }
    let mut f = Fixture::new(concat!(
        "      - { id: overlap, action: drop, protocol: udp, src_port: [\"65535\", \"1024-65535\"], dst: [198.19.0.0/16, 198.19.0.1], limit: { over: 1/h, burst: 3, per: src } }\n",
        "      - { id: after, action: drop, protocol: udp, dst_port: 53 }\n",
    ));
    f.run("udp 198.18.0.2:65535 -> 198.19.0.1:53", 3);
    assert_eq!(
        (f.hits("overlap"), f.hits("after")),
        (0, 3),
        "three under a burst of 3"
    );
    f.run("udp 198.18.0.2:65535 -> 198.19.0.1:53", 2);
    assert_eq!((f.hits("overlap"), f.hits("after")), (2, 3), "then over");
}
