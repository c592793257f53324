//! Drop logs in the real kernel: frames run through the XDP program with
//! BPF_PROG_TEST_RUN (as if they arrived on loopback, ifindex 1), events read back from the
//! ring buffer. The program's clock is fixed through `DropLogControl::clock_ns`, so the rate
//! limit is checked by counts alone, with no timing in any assertion.

use std::path::Path;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use firewall_common::{DropEvent, DropLogControl, drop_log, family, l4, protocol};
use firewall_dataplane::{
    loader::Dataplane,
    test_run::{LOOPBACK, XDP_DROP, XDP_PASS},
};
use firewall_rules::Direction;
use firewall_rules::{
    RuleSet,
    compile::{self, RuleCounters},
    spec::PacketSpec,
};
use firewall_user::drop_log::{self as reader, DroppedPacket, Layer4, Names};

use crate::common;

const SECOND: u64 = 1_000_000_000;
/// The program's fixed clock at the start of each test.
const T: u64 = 5_000 * SECOND;

const RULES: &str = "
version: 1
interfaces:
  lo:
    default: pass
    rules:
      - { id: logged, action: drop, log: true, protocol: udp, dst_port: 9 }
      - { id: quiet, action: drop, protocol: udp, dst_port: 10 }
      - { id: web, action: pass, protocol: tcp, dst_port: 80 }
      - { id: logged-v6, action: drop, log: true, family: ipv6, protocol: icmpv6 }
";

const DISCARD: &str = "udp 198.18.0.2:40000 -> 198.19.0.1:9";

struct Fixture {
    dataplane: Dataplane,
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    counters: RuleCounters,
}

impl Fixture {
    /// The program with RULES on `lo`, enforcing, at `rate` events per second and the clock
    /// at T.
    fn new(rate: u32) -> Fixture {
        let rules = RuleSet::parse(Path::new("drop-log-test.yaml"), RULES).unwrap();
        let mut counters = RuleCounters::default();
        let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
        let mut dataplane = common::dataplane();
        dataplane.install(&compiled).unwrap();
        let (ring, stats) = dataplane.take_drop_log().unwrap();
        let mut fixture = Fixture {
            dataplane,
            ring,
            stats,
            counters,
        };
        fixture.control(rate, T);
        fixture
    }

    fn control(&mut self, rate: u32, clock_ns: u64) {
        self.dataplane
            .set_drop_log(DropLogControl {
                rate_per_second: rate,
                clock_ns,
                ..DropLogControl::default()
            })
            .unwrap();
    }

    /// Runs `spec`'s frame `times` times in one BPF_PROG_TEST_RUN; returns the XDP action.
    fn run(&mut self, spec: &str, times: u32) -> u32 {
        let frame = PacketSpec::parse(spec).unwrap().frame();
        self.dataplane
            .run_repeated(&frame, Direction::In, times)
            .unwrap()
            .action
    }

    fn events(&mut self) -> Vec<DropEvent> {
        reader::drain(&mut self.ring)
    }

    /// (sent, suppressed, lost) so far.
    fn totals(&self) -> (u64, u64, u64) {
        let total = |index| reader::total(&self.stats, index).unwrap();
        (
            total(drop_log::SENT),
            total(drop_log::SUPPRESSED),
            total(drop_log::LOST),
        )
    }

    fn slot(&self, rule: &str) -> u32 {
        self.counters.get("lo", rule).unwrap()
    }
}

#[test]
fn a_log_rule_sends_at_most_its_rate_and_counts_the_rest_as_suppressed() {
    if !testbed::require_root("drop_log_kernel::rate") {
        return;
    }
    let mut f = Fixture::new(10);
    let frame_len = PacketSpec::parse(DISCARD).unwrap().frame().len() as u32;

    // 100 drops within one instant: the full bucket's 10 events, 90 suppressed.
    assert_eq!(f.run(DISCARD, 100), XDP_DROP);
    let events = f.events();
    assert_eq!(events.len(), 10);
    let v4 = |a: [u8; 4]| [u32::from_ne_bytes(a), 0, 0, 0];
    let expected = DropEvent {
        ktime_ns: T,
        src: v4([198, 18, 0, 2]),
        dst: v4([198, 19, 0, 1]),
        ifindex: LOOPBACK,
        interface: 0,
        rule: f.slot("logged"),
        bytes: frame_len,
        src_port: 40000,
        dst_port: 9,
        vlan: 0,
        family: family::IPV4,
        protocol: protocol::UDP,
        l4: l4::PORTS,
        _pad: [0; 7],
    };
    assert!(events.iter().all(|e| *e == expected), "{events:?}");
    assert_eq!(f.totals(), (10, 90, 0));

    // The daemon's view of one: names for the slots.
    let logged: Vec<(u32, String)> = f
        .counters
        .iter()
        .map(|(_, rule, slot)| (slot, rule.to_string()))
        .collect();
    let names = Names::new(&[("lo".to_string(), 0)], &logged);
    let line = DroppedPacket::new(&events[0], &names);
    assert_eq!(
        (
            line.interface.as_str(),
            line.rule.as_str(),
            line.protocol.as_str()
        ),
        ("lo", "logged", "udp")
    );
    assert_eq!(
        (line.src.to_string(), line.dst.to_string(), line.layer4),
        (
            "198.18.0.2".to_string(),
            "198.19.0.1".to_string(),
            Layer4::Ports { src: 40000, dst: 9 }
        )
    );

    // A drop without `log`, a pass, a default pass: no events, nothing suppressed.
    assert_eq!(
        f.run("udp 198.18.0.2:40000 -> 198.19.0.1:10", 100),
        XDP_DROP
    );
    assert_eq!(
        f.run("tcp 198.18.0.2:40000 -> 198.19.0.1:80", 100),
        XDP_PASS
    );
    assert_eq!(
        f.run("udp 198.18.0.2:40000 -> 198.19.0.1:11", 100),
        XDP_PASS
    );
    assert!(f.events().is_empty());
    assert_eq!(f.totals(), (10, 90, 0));

    // A tenth of a second later: one more event's worth of tokens.
    f.control(10, T + SECOND / 10);
    f.run(DISCARD, 5);
    assert_eq!(f.events().len(), 1);
    assert_eq!(f.totals(), (11, 94, 0));

    // Ten seconds later: a full bucket again, never more than the rate.
    f.control(10, T + 10 * SECOND);
    f.run(DISCARD, 100);
    let events = f.events();
    assert_eq!(events.len(), 10);
    assert!(events.iter().all(|e| e.ktime_ns == T + 10 * SECOND));
    assert_eq!(f.totals(), (21, 184, 0));

    // Another rate from the daemon: 1,000 a second, a second later.
    f.control(1_000, T + 11 * SECOND);
    f.run(DISCARD, 1_500);
    assert_eq!(f.events().len(), 1_000);
    assert_eq!(f.totals(), (1_021, 684, 0));
}

#[test]
fn rules_have_a_bucket_each_and_ipv6_vlan_fields_are_reported() {
    if !testbed::require_root("drop_log_kernel::ipv6") {
        return;
    }
    let mut f = Fixture::new(3);
    f.run(DISCARD, 50);
    let ping = "icmpv6 [2001:2::1] -> [2001:2::2] type 128 code 0 vlan 10";
    assert_eq!(f.run(ping, 50), XDP_DROP);
    let events = f.events();
    assert_eq!(events.len(), 6, "3 per rule: {events:?}");
    let v6 = events.iter().filter(|e| e.family == family::IPV6).count();
    assert_eq!(v6, 3);
    let last = events.last().unwrap();
    assert_eq!(
        (last.rule, last.vlan, last.protocol, last.l4),
        (f.slot("logged-v6"), 10, 58, l4::ICMP)
    );
    let logged: Vec<(u32, String)> = f
        .counters
        .iter()
        .map(|(_, rule, slot)| (slot, rule.to_string()))
        .collect();
    let names = Names::new(&[("lo".to_string(), 0)], &logged);
    let line = DroppedPacket::new(last, &names);
    assert_eq!(
        (
            line.rule.as_str(),
            line.src.to_string(),
            line.dst.to_string()
        ),
        (
            "logged-v6",
            "2001:2::1".to_string(),
            "2001:2::2".to_string()
        )
    );
    assert_eq!(
        line.layer4,
        Layer4::Icmp {
            icmp_type: 128,
            icmp_code: 0
        }
    );
    assert_eq!(f.totals(), (6, 94, 0));
}

#[test]
fn an_unlicensed_adapter_drops_nothing_and_so_logs_nothing() {
    if !testbed::require_root("drop_log_kernel::unlicensed") {
        return;
    }
    let mut f = Fixture::new(10);
    f.dataplane.set_enforcing(false).unwrap();
    assert_eq!(f.run(DISCARD, 20), XDP_PASS);
    assert!(f.events().is_empty());
    assert_eq!(f.totals(), (0, 0, 0));
}

/// With no limit that bites, a burst larger than the ring fills it: what does not fit is
/// counted as lost, exactly, and the ring holds what was sent.
#[test]
fn a_full_ring_counts_lost_events() {
    if !testbed::require_root("drop_log_kernel::lost") {
        return;
    }
    let mut f = Fixture::new(u32::MAX);
    f.run(DISCARD, 5_000);
    let (sent, suppressed, lost) = f.totals();
    // Each record: an 8-byte header and the 72-byte event.
    let fits = u64::from(drop_log::RING_BYTES) / (8 + 72);
    assert_eq!((sent, suppressed, lost), (fits, 0, 5_000 - fits));
    assert_eq!(f.events().len() as u64, fits);
    // Read, the ring has room again.
    f.run(DISCARD, 1);
    assert_eq!(f.events().len(), 1);
}
