//! Live packet traces in the real kernel: frames run through the XDP and TC programs with
//! BPF_PROG_TEST_RUN (as if on loopback, ifindex 1, slot 0), the `TRACE_CONTROL` switch set
//! as the daemon sets it, events read back from the `TRACE` ring buffer.

use std::path::Path;

use firewall_common::{
    MAX_INTERFACES, TraceControl, TraceEvent, Verdict, directed_slot, direction, family, l4,
    protocol, trace,
};
use firewall_dataplane::loader::{Dataplane, TraceMaps};
use firewall_rules::{
    Direction, RuleSet,
    compile::{self, RuleCounters},
    spec::PacketSpec,
};
use firewall_user::trace::{Filter, event};

use crate::common;

const RULES: &str = "
version: 1
interfaces:
  lo:
    default: pass
    rules:
      - { id: discard, action: drop, protocol: udp, dst_port: 9 }
      - { id: web, action: pass, protocol: tcp, dst_port: 80 }
";

const DISCARD: &str = "udp 198.18.0.2:40000 -> 198.19.0.1:9";
const WEB: &str = "tcp 198.18.0.2:40000 -> 198.19.0.1:80 flags SYN";

/// A lease that does not run out during a test.
const ON: u64 = u64::MAX;
const IN: u32 = directed_slot(0, direction::IN);
const OUT: u32 = directed_slot(0, direction::OUT);

struct Fixture {
    dataplane: Dataplane,
    maps: TraceMaps,
    counters: RuleCounters,
}

impl Fixture {
    fn new() -> Fixture {
        let rules = RuleSet::parse(Path::new("trace-test.yaml"), RULES).unwrap();
        let mut counters = RuleCounters::default();
        let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
        let mut dataplane = common::dataplane();
        dataplane.install(&compiled).unwrap();
        let maps = dataplane.take_trace().unwrap();
        Fixture {
            dataplane,
            maps,
            counters,
        }
    }

    /// The switch on with `filter` (none: every frame) until `until_ns`.
    fn set(&mut self, filter: Option<&str>, slots: [u32; 2], rate: u32, until_ns: u64) {
        let filter = filter.map_or_else(Filter::default, |f| Filter::parse(f).unwrap());
        let control = filter.control(slots, rate, until_ns);
        self.maps.control.set(0, control, 0).unwrap();
    }

    fn run(&mut self, frame: &[u8], way: Direction, times: u32) {
        self.dataplane.run_repeated(frame, way, times).unwrap();
    }

    fn events(&mut self) -> Vec<TraceEvent> {
        let mut events = Vec::new();
        while let Some(record) = self.maps.ring.next() {
            events.push(event(&record).expect("a whole event"));
        }
        events
    }

    /// (sent, suppressed, lost) so far.
    fn totals(&self) -> (u64, u64, u64) {
        let total = |index| -> u64 { self.maps.stats.get(&index, 0).unwrap().iter().sum() };
        (
            total(trace::SENT),
            total(trace::SUPPRESSED),
            total(trace::LOST),
        )
    }
}

fn frame(spec: &str) -> Vec<u8> {
    PacketSpec::parse(spec).unwrap().frame()
}

fn words(a: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

#[test]
fn a_trace_reports_only_while_on_only_its_slots_and_only_what_matches() {
    if !testbed::require_root("trace_kernel::switch") {
        return;
    }
    let mut f = Fixture::new();
    let discard = frame(DISCARD);
    // Loaded: off.
    assert_eq!(f.maps.control.get(&0, 0).unwrap(), TraceControl::OFF);
    f.run(&discard, Direction::In, 10);
    assert_eq!((f.events().len(), f.totals()), (0, (0, 0, 0)));

    f.set(Some("udp any -> any:9"), [IN, trace::NO_SLOT], 1000, ON);
    f.run(&discard, Direction::In, 1);
    f.run(&frame(WEB), Direction::In, 1);
    f.run(&discard, Direction::Out, 1);
    let events = f.events();
    let expected = TraceEvent {
        ktime_ns: events.first().map_or(0, |e| e.ktime_ns),
        src: words([198, 18, 0, 2]),
        dst: words([198, 19, 0, 1]),
        slot: IN,
        rule: f.counters.get("lo", "discard").unwrap(),
        bytes: discard.len() as u32,
        src_port: 40000,
        dst_port: 9,
        vlan: 0,
        family: family::IPV4,
        protocol: protocol::UDP,
        l4: l4::PORTS,
        tcp_flags: 0,
        frame: trace::frame::IP,
        tracked: 0,
        verdict: Verdict::Drop as u8,
        decided: Verdict::Drop as u8,
        _pad: [0; 6],
    };
    // Only the matching packet in the traced direction.
    assert_eq!(events, [expected]);
    assert_ne!(expected.ktime_ns, 0);

    // Everything, both directions: the web SYN by its rule, the egress pass by none, frames
    // that are not IP or are malformed with what the parser said.
    f.set(None, [IN, OUT], 1000, ON);
    f.run(&frame(WEB), Direction::In, 1);
    f.run(&discard, Direction::Out, 1);
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    f.run(&arp, Direction::In, 1);
    // Ethernet and 6 bytes of an IPv4 header.
    let truncated = discard[..20].to_vec();
    f.run(&truncated, Direction::In, 1);
    let events = f.events();
    let summary: Vec<(u32, u32, u8, u8, u16, u8)> = events
        .iter()
        .map(|e| (e.slot, e.rule, e.frame, e.verdict, e.dst_port, e.tcp_flags))
        .collect();
    let web = f.counters.get("lo", "web").unwrap();
    assert_eq!(
        summary,
        [
            (IN, web, trace::frame::IP, Verdict::Pass as u8, 80, 0x02),
            (OUT, u32::MAX, trace::frame::IP, Verdict::Pass as u8, 9, 0),
            (
                IN,
                u32::MAX,
                trace::frame::NON_IP,
                Verdict::Pass as u8,
                0,
                0
            ),
            (
                IN,
                u32::MAX,
                trace::frame::MALFORMED,
                Verdict::Drop as u8,
                0,
                0
            ),
        ]
    );
    assert!(events[1].slot >= MAX_INTERFACES);
    assert_eq!(
        events[2].src, [0; 4],
        "no address for a frame that is not IP"
    );

    // Any filter, even `any -> any`, leaves out what is not IP; a lease run out traces
    // nothing.
    f.set(Some("any -> any"), [IN, OUT], 1000, ON);
    f.run(&arp, Direction::In, 1);
    f.set(None, [IN, OUT], 1000, 1);
    f.run(&discard, Direction::In, 1);
    assert_eq!(f.events(), []);
    assert_eq!(f.totals(), (5, 0, 0));
}

#[test]
fn the_rate_holds_in_the_kernel_and_the_rest_is_counted_as_suppressed() {
    if !testbed::require_root("trace_kernel::rate") {
        return;
    }
    let mut f = Fixture::new();
    f.set(None, [IN, OUT], 1, ON);
    // A thousand packets in one BPF_PROG_TEST_RUN at one event a second: the full bucket's
    // one, a few more only if the run took seconds.
    f.run(&frame(DISCARD), Direction::In, 1000);
    let (sent, suppressed, lost) = f.totals();
    assert_eq!(sent + suppressed, 1000);
    assert!((1..10).contains(&sent), "sent {sent}");
    assert_eq!(lost, 0);
    assert_eq!(f.events().len() as u64, sent);
}
