//! The reference classifier: what the rules decide for a frame, in plain Rust with etherparse,
//! no kernel involved. It is the oracle the XDP program is tested against and the engine of
//! `explain`. The parsing rules here are the dataplane's contract (`rules/README.md`).

use std::net::IpAddr;

use etherparse::{
    Ethernet2HeaderSlice, Icmpv6Slice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use firewall_common::ethertype;
use serde::Serialize;

use crate::{
    rate_limit::RateLimit,
    ruleset::{Action, Direction, Policy, Ports, Rule, RuleSet, family_of, protocol},
};

pub mod conntrack;
pub mod limit;

pub use limit::Limiter;

/// VLAN tags (802.1Q/802.1ad) a frame may carry; more is malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before the upper-layer header; more is malformed.
pub const MAX_IPV6_EXTENSIONS: usize = 8;
/// The SCTP common header: ports, verification tag, checksum.
const SCTP_HEADER_LEN: usize = 12;
/// The ICMP header: type, code, checksum, then 4 bytes that depend on the type.
const ICMP_HEADER_LEN: usize = 8;

/// The fields of an IP packet that rules match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 protocol, or the IPv6 upper-layer header after the extension headers.
    pub protocol: u8,
    pub l4: L4,
    /// TCP with its header (not a non-first fragment): the flags byte. `None` otherwise.
    pub tcp_flags: Option<u8>,
}

/// What the packet says beyond the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Ports {
        src: u16,
        dst: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// A non-first fragment: no ports, no ICMP type.
    Fragment,
    /// A protocol whose header rules do not look into.
    Other,
}

/// A frame, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Ip(Packet),
    NonIp { vlan: Option<u16> },
    Malformed(&'static str),
}

/// Why a frame got its action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A tracked flow passed it before the rules (`state: true`, see [`conntrack`]).
    Tracked,
    Rule,
    Default,
    NonIp,
    Malformed(&'static str),
}

/// What the rules decide for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The id of the rule that decided, if one did. A limit rule decides only for a packet
    /// over its limit.
    pub rule: Option<String>,
    pub reason: Reason,
    /// The limit rules the packet matched and was under the limit of, in rule order: it took
    /// their tokens and went on.
    pub passed_limits: Vec<String>,
}

impl Decision {
    fn without_rule(action: Action, reason: Reason) -> Decision {
        Decision {
            action,
            rule: None,
            reason,
            passed_limits: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interface {0} has no rules in this rule set")]
pub struct UnknownInterface(pub String);

/// What the rules on `interface` decide for `frame`.
pub fn classify(
    rules: &RuleSet,
    interface: &str,
    frame: &[u8],
) -> Result<Decision, UnknownInterface> {
    let policy = rules
        .interfaces
        .get(interface)
        .ok_or_else(|| UnknownInterface(interface.to_string()))?;
    Ok(decide(policy, &parse(frame)))
}

/// What the rules on `interface` decide for `frame` arriving at `now_ns`, with the buckets
/// of that interface's limit rules in `limiter` (the frame charged its whole length): the
/// stateful `classify`, packet by packet as the kernel judges a sequence.
pub fn classify_at(
    rules: &RuleSet,
    interface: &str,
    frame: &[u8],
    limiter: &mut Limiter,
    now_ns: u64,
) -> Result<Decision, UnknownInterface> {
    let policy = rules
        .interfaces
        .get(interface)
        .ok_or_else(|| UnknownInterface(interface.to_string()))?;
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    Ok(decide_direction_at(
        policy,
        &parse(frame),
        Direction::In,
        limiter,
        now_ns,
        len,
    ))
}

/// The decision for a parsed frame arriving on the interface: malformed frames are dropped
/// before any rule, non-IP frames get `non_ip`, IP packets the first matching `direction: in`
/// rule or the default.
pub fn decide(policy: &Policy, frame: &Frame) -> Decision {
    decide_direction(policy, frame, Direction::In)
}

/// The decision for a parsed frame in `direction`. Leaving the interface (`out`), only
/// `direction: out` rules apply, and what none decides passes (non-IP frames too); malformed
/// frames are dropped either way.
///
/// Without a history, every limit rule is judged as by a fresh [`Limiter`] for a frame of no
/// bytes: under its limit (a new bucket is full), so the packet goes on to later rules. A
/// history, or a byte limit whose burst is smaller than the frame, needs
/// [`decide_direction_at`].
pub fn decide_direction(policy: &Policy, frame: &Frame, direction: Direction) -> Decision {
    decide_direction_with(policy, frame, direction, |_, _, _| false)
}

/// The decision for a parsed frame of `len` bytes (the whole frame, Ethernet header included,
/// as the meter counts it) in `direction` at `now_ns`, with the buckets in `limiter` (one
/// `Limiter` per interface): the rules in order, and a limit rule whose conditions match
/// decides only if the packet is over its limit; under it, the packet takes its tokens and
/// goes on. Buckets are consulted only for a limit rule whose conditions match, in rule
/// order, as the kernel does.
pub fn decide_direction_at(
    policy: &Policy,
    frame: &Frame,
    direction: Direction,
    limiter: &mut Limiter,
    now_ns: u64,
    len: u32,
) -> Decision {
    decide_direction_with(policy, frame, direction, |rule, limit, packet| {
        limiter.over(&rule.id, limit, (packet.src, packet.dst), now_ns, len)
    })
}

/// The decision in `direction`: the first rule that matches, where a limit rule counts only
/// if `over` says the packet exceeds its limit (`over` is asked only for a limit rule whose
/// conditions match, in rule order); else the default. `explain --over-limit` says every
/// limit is exceeded.
pub fn decide_direction_with(
    policy: &Policy,
    frame: &Frame,
    direction: Direction,
    mut over: impl FnMut(&Rule, &RateLimit, &Packet) -> bool,
) -> Decision {
    let (default, non_ip) = match direction {
        Direction::In => (policy.default, policy.non_ip),
        Direction::Out => (Action::Pass, Action::Pass),
    };
    let packet = match frame {
        Frame::Malformed(why) => {
            return Decision::without_rule(Action::Drop, Reason::Malformed(why));
        }
        Frame::NonIp { .. } => return Decision::without_rule(non_ip, Reason::NonIp),
        Frame::Ip(packet) => packet,
    };
    let mut passed_limits = Vec::new();
    let matching = policy
        .rules
        .iter()
        .filter(|rule| rule.direction == direction && mismatch(rule, packet).is_none());
    for rule in matching {
        if let Some(limit) = &rule.limit
            && !over(rule, limit, packet)
        {
            passed_limits.push(rule.id.clone());
            continue;
        }
        return Decision {
            action: rule.action,
            rule: Some(rule.id.clone()),
            reason: Reason::Rule,
            passed_limits,
        };
    }
    Decision {
        passed_limits,
        ..Decision::without_rule(default, Reason::Default)
    }
}

/// The first condition of `rule` that `packet` does not meet, in the order the fields are
/// listed in `rules/README.md`; `None` when the rule matches.
pub fn mismatch(rule: &Rule, packet: &Packet) -> Option<&'static str> {
    let ports = |list: &Option<Vec<Ports>>, port: fn(L4) -> Option<u16>| {
        list.as_ref().is_none_or(|ranges| {
            port(packet.l4).is_some_and(|p| ranges.iter().any(|r| r.contains(&p)))
        })
    };
    let nets = |list: &Option<Vec<ipnet::IpNet>>, addr: IpAddr| {
        list.as_ref()
            .is_none_or(|nets| nets.iter().any(|net| net.contains(&addr)))
    };
    let icmp = |field: Option<u8>, value: fn(L4) -> Option<u8>| {
        field.is_none_or(|wanted| value(packet.l4) == Some(wanted))
    };
    if rule.vlan.is_some_and(|vlan| packet.vlan != Some(vlan)) {
        Some("vlan")
    } else if rule
        .family
        .is_some_and(|family| family != family_of(packet.src))
    {
        Some("family")
    } else if rule.protocol.is_some_and(|p| p != packet.protocol) {
        Some("protocol")
    } else if !nets(&rule.src, packet.src) {
        Some("src")
    } else if !nets(&rule.dst, packet.dst) {
        Some("dst")
    } else if !ports(&rule.src_port, |l4| {
        matches!(l4, L4::Ports { .. })
            .then(|| src_port(l4))
            .flatten()
    }) {
        Some("src_port")
    } else if !ports(&rule.dst_port, dst_port) {
        Some("dst_port")
    } else if rule
        .tcp_flags
        .is_some_and(|flags| !packet.tcp_flags.is_some_and(|byte| flags.matches(byte)))
    {
        Some("tcp_flags")
    } else if !icmp(rule.icmp_type, |l4| match l4 {
        L4::Icmp { icmp_type, .. } => Some(icmp_type),
        _ => None,
    }) {
        Some("icmp_type")
    } else if !icmp(rule.icmp_code, |l4| match l4 {
        L4::Icmp { code, .. } => Some(code),
        _ => None,
    }) {
        Some("icmp_code")
    } else {
        None
    }
}

fn src_port(l4: L4) -> Option<u16> {
    match l4 {
        L4::Ports { src, .. } => Some(src),
        _ => None,
    }
}

fn dst_port(l4: L4) -> Option<u16> {
    match l4 {
        L4::Ports { dst, .. } => Some(dst),
        _ => None,
    }
}

/// Parses a frame as the dataplane does.
pub fn parse(frame: &[u8]) -> Frame {
    parse_with_transport(frame).0
}

/// Parses a frame as the dataplane does, and returns the bytes from the header after IP on
/// (empty for a non-first fragment or what is not IP), which connection tracking reads.
pub fn parse_with_transport(frame: &[u8]) -> (Frame, &[u8]) {
    let Ok(ethernet) = Ethernet2HeaderSlice::from_slice(frame) else {
        return (
            Frame::Malformed("frame shorter than an Ethernet header"),
            &[],
        );
    };
    let mut ether_type = ethernet.ether_type().0;
    let mut offset = ethernet.slice().len();
    let mut vlan = None;
    let mut tags = 0;
    while matches!(ether_type, ethertype::VLAN | ethertype::QINQ) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return (Frame::Malformed("more than two VLAN tags"), &[]);
        }
        let Ok(tag) = SingleVlanHeaderSlice::from_slice(&frame[offset..]) else {
            return (Frame::Malformed("VLAN tag cut short"), &[]);
        };
        vlan = vlan.or(Some(tag.vlan_identifier().value()));
        ether_type = tag.ether_type().0;
        offset += tag.slice().len();
    }
    let l3 = &frame[offset..];
    let parsed = match ether_type {
        ethertype::IPV4 => ipv4(l3),
        ethertype::IPV6 => ipv6(l3),
        _ => return (Frame::NonIp { vlan }, &[]),
    };
    match parsed {
        Ok((src, dst, protocol, l4, transport)) => (
            Frame::Ip(Packet {
                vlan,
                src,
                dst,
                protocol,
                l4,
                tcp_flags: tcp_flags(protocol, l4, transport),
            }),
            transport,
        ),
        Err(why) => (Frame::Malformed(why), &[]),
    }
}

/// The flags byte of a TCP header that `upper_layer` read (it checked the header is whole).
fn tcp_flags(protocol_number: u8, l4: L4, transport: &[u8]) -> Option<u8> {
    const FLAGS_BYTE: usize = 13;
    match l4 {
        L4::Ports { .. } if protocol_number == protocol::TCP => transport.get(FLAGS_BYTE).copied(),
        _ => None,
    }
}

type Parsed<'a> = Result<(IpAddr, IpAddr, u8, L4, &'a [u8]), &'static str>;

fn ipv4(l3: &[u8]) -> Parsed<'_> {
    let header = Ipv4HeaderSlice::from_slice(l3).map_err(|_| "bad or cut IPv4 header")?;
    // etherparse checks the header length against the slice, not against the total length.
    if usize::from(header.total_len()) < header.slice().len() {
        return Err("IPv4 total length below its header length");
    }
    let protocol = header.protocol().0;
    let (l4, transport) = if header.fragments_offset().value() != 0 {
        (L4::Fragment, &[][..])
    } else {
        let transport = &l3[header.slice().len()..];
        (upper_layer(protocol, transport)?, transport)
    };
    Ok((
        header.source_addr().into(),
        header.destination_addr().into(),
        protocol,
        l4,
        transport,
    ))
}

fn ipv6(l3: &[u8]) -> Parsed<'_> {
    let header = Ipv6HeaderSlice::from_slice(l3).map_err(|_| "bad or cut IPv6 header")?;
    let mut next = header.next_header();
    let mut rest = &l3[header.slice().len()..];
    let mut first_fragment = true;
    for _ in 0..=MAX_IPV6_EXTENSIONS {
        match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest)
                    .map_err(|_| "IPv6 extension header cut short")?;
                next = ext.next_header();
                rest = &rest[ext.slice().len()..];
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let frag = Ipv6FragmentHeaderSlice::from_slice(rest)
                    .map_err(|_| "IPv6 fragment header cut short")?;
                first_fragment &= frag.fragment_offset().value() == 0;
                next = frag.next_header();
                rest = &rest[frag.slice().len()..];
            }
            upper => {
                let (l4, transport) = if first_fragment {
                    (upper_layer(upper.0, rest)?, rest)
                } else {
                    (L4::Fragment, &[][..])
                };
                return Ok((
                    header.source_addr().into(),
                    header.destination_addr().into(),
                    upper.0,
                    l4,
                    transport,
                ));
            }
        }
    }
    Err("IPv6 extension header chain too long")
}

/// The fields rules need from the header after IP; a header that is cut short is malformed.
fn upper_layer(protocol_number: u8, payload: &[u8]) -> Result<L4, &'static str> {
    match protocol_number {
        protocol::TCP => {
            let tcp = TcpHeaderSlice::from_slice(payload).map_err(|_| "bad or cut TCP header")?;
            Ok(L4::Ports {
                src: tcp.source_port(),
                dst: tcp.destination_port(),
            })
        }
        protocol::UDP => {
            let udp = UdpHeaderSlice::from_slice(payload).map_err(|_| "UDP header cut short")?;
            Ok(L4::Ports {
                src: udp.source_port(),
                dst: udp.destination_port(),
            })
        }
        protocol::SCTP => match payload {
            [s0, s1, d0, d1, ..] if payload.len() >= SCTP_HEADER_LEN => Ok(L4::Ports {
                src: u16::from_be_bytes([*s0, *s1]),
                dst: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err("SCTP header cut short"),
        },
        // Not etherparse's `Icmpv4Slice`: it refuses a timestamp (request or reply) whose
        // slice is not exactly 20 bytes, and the slice here runs to the end of the frame
        // (Ethernet padding included). Rules read the type and code; the body is not checked,
        // for timestamps as for every other type (`rules/README.md`).
        protocol::ICMP => match payload {
            [icmp_type, code, ..] if payload.len() >= ICMP_HEADER_LEN => Ok(L4::Icmp {
                icmp_type: *icmp_type,
                code: *code,
            }),
            _ => Err("ICMP header cut short"),
        },
        protocol::ICMPV6 => {
            let icmp = Icmpv6Slice::from_slice(payload).map_err(|_| "ICMPv6 header cut short")?;
            Ok(L4::Icmp {
                icmp_type: icmp.type_u8(),
                code: icmp.code_u8(),
            })
        }
        _ => Ok(L4::Other),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::PacketSpec;

    const RULES: &str = "version: 1
sets:
  mgmt: [198.18.0.10, \"2001:2::10\"]
interfaces:
  lan0:
    default: drop
    non_ip: pass
    rules:
      - { id: ssh, action: pass, protocol: tcp, src: $mgmt, dst_port: 22 }
      - { id: dns, action: pass, protocol: udp, dst_port: [53, 5353] }
      - { id: high-src, action: pass, protocol: sctp, src_port: 1024-65535 }
      - { id: ping, action: pass, protocol: icmp, icmp_type: 8, icmp_code: 0 }
      - { id: ping6, action: pass, protocol: icmpv6, icmp_type: 128 }
      - { id: vlan10, action: pass, vlan: 10, protocol: tcp, dst_port: 80 }
      - { id: v6-gre, action: pass, family: ipv6, protocol: 47 }
      - { id: frag-any, action: pass, dst: 198.19.9.0/24 }
  wan0:
    default: pass
    non_ip: drop
";

    fn rules() -> RuleSet {
        RuleSet::parse(Path::new("t.yaml"), RULES).unwrap()
    }

    fn frame(spec: &str) -> Vec<u8> {
        PacketSpec::parse(spec).unwrap().frame()
    }

    fn decide_on(interface: &str, frame: &[u8]) -> (Action, Option<String>, Reason) {
        let d = classify(&rules(), interface, frame).unwrap();
        (d.action, d.rule, d.reason)
    }

    fn by_rule(id: &str) -> (Action, Option<String>, Reason) {
        (Action::Pass, Some(id.to_string()), Reason::Rule)
    }

    const DEFAULT_DROP: (Action, Option<String>, Reason) = (Action::Drop, None, Reason::Default);

    // Each row: a packet on lan0 and what decides it (the field it exercises in the comment).
    #[test]
    fn each_field_decides() {
        let cases = [
            ("tcp 198.18.0.10:40000 -> 198.19.0.1:22", by_rule("ssh")), // src via set, dst_port
            ("tcp [2001:2::10]:40000 -> [2001:2::1]:22", by_rule("ssh")), // a v6 member of the set
            ("tcp 198.18.0.11:40000 -> 198.19.0.1:22", DEFAULT_DROP),   // src outside the set
            ("tcp 198.18.0.10:40000 -> 198.19.0.1:23", DEFAULT_DROP),   // dst_port
            ("udp 198.18.0.1 -> 198.19.0.1:5353", by_rule("dns")),      // port list
            ("tcp 198.18.0.1 -> 198.19.0.1:53", DEFAULT_DROP),          // protocol
            ("sctp 198.18.0.1:1024 -> 198.19.0.1:9", by_rule("high-src")), // src_port lower edge
            ("sctp 198.18.0.1:1023 -> 198.19.0.1:9", DEFAULT_DROP),     // src_port below
            (
                "icmp 198.18.0.1 -> 198.19.0.1 type 8 code 0",
                by_rule("ping"),
            ),
            ("icmp 198.18.0.1 -> 198.19.0.1 type 8 code 1", DEFAULT_DROP), // icmp_code
            ("icmp 198.18.0.1 -> 198.19.0.1 type 0", DEFAULT_DROP),        // icmp_type
            ("icmpv6 2001:2::1 -> 2001:2::2 type 128", by_rule("ping6")),
            ("tcp 198.18.0.1 -> 198.19.0.1:80 vlan 10", by_rule("vlan10")),
            ("tcp 198.18.0.1 -> 198.19.0.1:80 vlan 11", DEFAULT_DROP), // vlan id
            ("tcp 198.18.0.1 -> 198.19.0.1:80", DEFAULT_DROP),         // untagged
            ("47 2001:2::1 -> 2001:2::2", by_rule("v6-gre")),          // family + number
            ("47 198.18.0.1 -> 198.19.0.1", DEFAULT_DROP),             // family
            ("udp 198.18.0.1 -> 198.19.9.1:53", by_rule("dns")),       // first match wins
        ];
        for (spec, expected) in cases {
            assert_eq!(decide_on("lan0", &frame(spec)), expected, "{spec}");
        }
    }

    const FLAG_RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: syn-new, action: drop, protocol: tcp, tcp_flags: [syn, \"!ack\"] }
      - { id: resets, action: drop, protocol: tcp, dst_port: 80, tcp_flags: rst }
      - { id: fin-ack, action: drop, protocol: tcp, tcp_flags: \"fin,ack\" }
";

    // Each row: a packet, the rule that decides it (None: the default) and the field on
    // which `syn-new` fails (None: it matches).
    #[test]
    fn tcp_flags_decide_only_tcp_packets_with_a_header() {
        let rules = RuleSet::parse(Path::new("f.yaml"), FLAG_RULES).unwrap();
        let policy = &rules.interfaces["lan0"];
        let cases = [
            (
                "tcp 198.18.0.1 -> 198.19.0.1:22 flags SYN",
                Some("syn-new"),
                None,
            ),
            (
                "tcp [2001:2::1]:1 -> [2001:2::2]:22 flags SYN",
                Some("syn-new"),
                None,
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:22 flags SYN,ECE,CWR",
                Some("syn-new"),
                None,
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:22 flags SYN,ACK",
                None,
                Some("tcp_flags"),
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:22 flags ACK",
                None,
                Some("tcp_flags"),
            ),
            ("tcp 198.18.0.1 -> 198.19.0.1:22", None, Some("tcp_flags")),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:80 flags RST",
                Some("resets"),
                Some("tcp_flags"),
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:80 flags RST,ACK",
                Some("resets"),
                Some("tcp_flags"),
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:81 flags RST",
                None,
                Some("tcp_flags"),
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:81 flags FIN",
                None,
                Some("tcp_flags"),
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:81 flags FIN,ACK",
                Some("fin-ack"),
                Some("tcp_flags"),
            ),
            (
                "tcp 198.18.0.1 -> 198.19.0.1:81 flags FIN,ACK,PSH",
                Some("fin-ack"),
                Some("tcp_flags"),
            ),
            // A non-first fragment has no TCP header, so no flags: it never matches.
            (
                "tcp 198.18.0.1 -> 198.19.0.1:22 flags SYN frag",
                None,
                Some("tcp_flags"),
            ),
            (
                "tcp [2001:2::1]:1 -> [2001:2::2]:22 flags SYN frag",
                None,
                Some("tcp_flags"),
            ),
            ("udp 198.18.0.1 -> 198.19.0.1:22", None, Some("protocol")),
        ];
        for (spec, rule, syn_new) in cases {
            let parsed = parse(&frame(spec));
            let decided = decide(policy, &parsed);
            assert_eq!(decided.rule.as_deref(), rule, "{spec}");
            let expected = if rule.is_some() {
                Action::Drop
            } else {
                Action::Pass
            };
            assert_eq!(decided.action, expected, "{spec}");
            let Frame::Ip(packet) = parsed else {
                panic!("{spec}: not IP");
            };
            assert_eq!(mismatch(&policy.rules[0], &packet), syn_new, "{spec}");
        }
        // The flags byte is read whole: SYN plus the reserved bits' neighbour NS (byte 12)
        // changes nothing; a zero byte is no SYN.
        let mut syn = frame("tcp 198.18.0.1 -> 198.19.0.1:22 flags SYN");
        let flags_at = 14 + 20 + 13;
        assert_eq!(syn[flags_at], 0x02);
        syn[flags_at - 1] |= 0x01;
        assert_eq!(
            decide(policy, &parse(&syn)).rule.as_deref(),
            Some("syn-new")
        );
        syn[flags_at] = 0;
        assert_eq!(decide(policy, &parse(&syn)).rule, None);
        // UDP carries no flags, whatever its bytes say.
        match parse(&frame("udp 198.18.0.1 -> 198.19.0.1:53")) {
            Frame::Ip(packet) => assert_eq!(packet.tcp_flags, None),
            other => panic!("{other:?}"),
        }
    }

    // Ref. "A non-first fragment carries no ports or ICMP type: it can only match rules without
    // port or ICMP conditions. A first fragment is classified normally."
    #[test]
    fn non_first_fragments_match_only_rules_without_ports() {
        assert_eq!(
            decide_on("lan0", &frame("udp 198.18.0.1 -> 198.19.9.1:53 frag")),
            by_rule("frag-any")
        );
        assert_eq!(
            decide_on("lan0", &frame("udp 198.18.0.1 -> 198.19.0.1:53 frag")),
            DEFAULT_DROP
        );
        assert_eq!(
            decide_on("lan0", &frame("udp [2001:2::1]:9 -> [2001:2::2]:53 frag")),
            DEFAULT_DROP
        );
        assert_eq!(
            decide_on("lan0", &frame("47 2001:2::1 -> 2001:2::2 frag")),
            by_rule("v6-gre")
        );
        // A first fragment (more-fragments set, offset 0) keeps its ports.
        let mut first = frame("udp 198.18.0.1 -> 198.19.0.1:53");
        first[14 + 6] |= 0x20;
        assert_eq!(decide_on("lan0", &first), by_rule("dns"));
    }

    #[test]
    fn non_ip_frames_get_non_ip() {
        let mut arp = vec![0xff; 6];
        arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend([0; 28]);
        assert_eq!(decide_on("lan0", &arp), (Action::Pass, None, Reason::NonIp));
        assert_eq!(decide_on("wan0", &arp), (Action::Drop, None, Reason::NonIp));
    }

    /// A TCP/IPv6 frame with `count` destination-options headers before the TCP header.
    fn ipv6_with_extensions(count: usize) -> Vec<u8> {
        let mut frame = frame("tcp [2001:2::1]:1 -> [2001:2::2]:22");
        let tcp = frame.split_off(14 + 40);
        for i in 0..count {
            let next = if i + 1 == count { 6 } else { 60 };
            frame.extend([next, 0, 0, 0, 0, 0, 0, 0]);
        }
        frame[14 + 6] = if count == 0 { 6 } else { 60 };
        frame.extend(tcp);
        frame
    }

    #[test]
    fn ipv6_extension_headers_are_walked_up_to_the_limit() {
        let ssh_from_other = (Action::Drop, None, Reason::Default);
        assert_eq!(decide_on("lan0", &ipv6_with_extensions(1)), ssh_from_other);
        let mut set = rules();
        set.interfaces.get_mut("lan0").unwrap().default = Action::Pass;
        let passes = |frame: &[u8]| classify(&set, "lan0", frame).unwrap().reason;
        assert_eq!(
            passes(&ipv6_with_extensions(MAX_IPV6_EXTENSIONS)),
            Reason::Default
        );
        assert_eq!(
            passes(&ipv6_with_extensions(MAX_IPV6_EXTENSIONS + 1)),
            Reason::Malformed("IPv6 extension header chain too long")
        );
    }

    // Each row: a broken frame and the reason it is malformed (ref. "truncated or malformed").
    #[test]
    fn malformed_frames_are_dropped_before_any_rule() {
        let tcp4 = frame("tcp 198.18.0.10:1 -> 198.19.0.1:22");
        let mut bad_ihl = tcp4.clone();
        bad_ihl[14] = 0x44;
        let mut bad_version = tcp4.clone();
        bad_version[14] = 0x55;
        let tagged = frame("tcp 198.18.0.1 -> 198.19.0.1:80 vlan 10");
        let mut three_tags = tagged[..12].to_vec();
        for _ in 0..3 {
            three_tags.extend([0x81, 0x00, 0x00, 0x0a]);
        }
        three_tags.extend(&tagged[16..]);
        let ext = ipv6_with_extensions(1);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("IHL 4", bad_ihl, "bad or cut IPv4 header"),
            ("version 5", bad_version, "bad or cut IPv4 header"),
            (
                "IPv4 header cut",
                tcp4[..14 + 19].to_vec(),
                "bad or cut IPv4 header",
            ),
            (
                "TCP header cut",
                tcp4[..14 + 20 + 19].to_vec(),
                "bad or cut TCP header",
            ),
            (
                "UDP header cut",
                frame("udp 198.18.0.1 -> 198.19.0.1:53")[..14 + 20 + 7].to_vec(),
                "UDP header cut short",
            ),
            (
                "ICMP header cut",
                frame("icmp 198.18.0.1 -> 198.19.0.1")[..14 + 20 + 7].to_vec(),
                "ICMP header cut short",
            ),
            (
                "SCTP header cut",
                frame("sctp 198.18.0.1:1 -> 198.19.0.1:2")[..14 + 20 + 11].to_vec(),
                "SCTP header cut short",
            ),
            (
                "IPv6 header cut",
                frame("tcp [2001:2::1]:1 -> [2001:2::2]:2")[..14 + 39].to_vec(),
                "bad or cut IPv6 header",
            ),
            (
                "IPv6 extension cut",
                ext[..14 + 40 + 7].to_vec(),
                "IPv6 extension header cut short",
            ),
            ("VLAN tag cut", tagged[..15].to_vec(), "VLAN tag cut short"),
            ("three VLAN tags", three_tags, "more than two VLAN tags"),
            ("runt", vec![0; 13], "frame shorter than an Ethernet header"),
        ];
        for (what, frame, why) in cases {
            assert_eq!(
                decide_on("lan0", &frame),
                (Action::Drop, None, Reason::Malformed(why)),
                "{what}"
            );
            assert_eq!(
                decide_on("wan0", &frame).2,
                Reason::Malformed(why),
                "{what}: even with default pass"
            );
        }
    }

    /// What decides a frame: the action, the rule, the reason.
    type Decided = (Action, Option<String>, Reason);

    const PASS_DEFAULT: Decided = (Action::Pass, None, Reason::Default);

    fn malformed(why: &'static str) -> Decided {
        (Action::Drop, None, Reason::Malformed(why))
    }

    /// UDP/IPv4 to port 53 (rule `dns` on lan0) with header length `ihl` (options of NOPs),
    /// total length `total`, then `extra` bytes after the UDP header; `cut` bytes removed
    /// from the end.
    fn udp4(ihl: u8, total: impl Fn(usize, usize) -> usize, extra: usize, cut: usize) -> Vec<u8> {
        let mut frame = PacketSpec::parse("udp 198.18.0.1:9 -> 198.19.0.1:53")
            .unwrap()
            .frame_with_payload(&vec![0; extra]);
        let header = usize::from(ihl) * 4;
        frame.splice(34..34, vec![1; header.saturating_sub(20)]);
        frame[14] = 0x40 | ihl;
        let l3_len = frame.len() - 14;
        let total = total(header, l3_len) as u16;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        frame.truncate(frame.len() - cut);
        frame
    }

    // Ref. "IPv4: ... header length (IHL) below 20 bytes, total length below the header
    // length, or the header cut short" and "the IPv4 total length may be shorter than the
    // frame". Each row: IHL, total length (from the header length and the bytes from the IP
    // header on), bytes after UDP, bytes cut from the end, and the decision on lan0.
    #[test]
    fn ipv4_total_length_against_header_and_frame_length() {
        type Total = fn(usize, usize) -> usize;
        let exact: Total = |_, l3| l3;
        let cases: Vec<(u8, Total, usize, usize, Decided)> = vec![
            (5, exact, 0, 0, by_rule("dns")),
            (
                5,
                |h, _| h - 1,
                0,
                0,
                malformed("IPv4 total length below its header length"),
            ),
            (
                5,
                |_, _| 0,
                0,
                0,
                malformed("IPv4 total length below its header length"),
            ),
            // Equal to the header length: the UDP header is in what would be padding; the
            // bytes after the IP header are read from the frame, not bounded by the length.
            (5, |h, _| h, 0, 0, by_rule("dns")),
            (5, |h, _| h + 1, 0, 0, by_rule("dns")),
            (5, |_, l3| l3 - 1, 0, 0, by_rule("dns")),
            // Longer than the frame: not checked (bytes after the headers never are).
            (5, |_, l3| l3 + 1, 0, 0, by_rule("dns")),
            (5, |_, _| 0xffff, 0, 0, by_rule("dns")),
            // Shorter than the frame: Ethernet padding to 60 bytes.
            (5, |_, l3| l3, 18, 0, by_rule("dns")),
            (6, exact, 0, 0, by_rule("dns")),
            (
                6,
                |h, _| h - 1,
                0,
                0,
                malformed("IPv4 total length below its header length"),
            ),
            (6, |h, _| h, 0, 0, by_rule("dns")),
            (
                10,
                |h, _| h - 1,
                0,
                0,
                malformed("IPv4 total length below its header length"),
            ),
            (10, |h, _| h, 0, 0, by_rule("dns")),
            (15, exact, 0, 0, by_rule("dns")),
            (
                15,
                |h, _| h - 1,
                0,
                0,
                malformed("IPv4 total length below its header length"),
            ),
            (15, |h, _| h, 0, 0, by_rule("dns")),
            (15, |_, l3| l3 + 1, 0, 0, by_rule("dns")),
            // 60 bytes of header, then 7 of UDP; then the header itself cut by one byte.
            (15, exact, 0, 1, malformed("UDP header cut short")),
            (15, exact, 0, 9, malformed("bad or cut IPv4 header")),
            (5, exact, 0, 9, malformed("bad or cut IPv4 header")),
            (4, exact, 0, 0, malformed("bad or cut IPv4 header")),
            (0, exact, 0, 0, malformed("bad or cut IPv4 header")),
        ];
        for (ihl, total, extra, cut, expected) in cases {
            let frame = udp4(ihl, total, extra, cut);
            let what = format!("IHL {ihl}, total length {:?}", &frame[16..18]);
            assert_eq!(decide_on("lan0", &frame), expected, "{what}");
            if expected.2 != Reason::Rule {
                assert_eq!(
                    decide_on("wan0", &frame).2,
                    expected.2,
                    "{what}, default pass"
                );
            }
        }
    }

    /// UDP/IPv6 to port 53 after destination-options headers of `units` 8-byte units each
    /// beyond their first 8 (the length byte: 0-255, at most 2,048 bytes a header).
    fn udp6_after(units: &[u8]) -> Vec<u8> {
        let mut frame = frame("udp [2001:2::1]:9 -> [2001:2::2]:53");
        let udp = frame.split_off(14 + 40);
        for (i, &n) in units.iter().enumerate() {
            let next = if i + 1 == units.len() { 17 } else { 60 };
            frame.extend([next, n]);
            frame.extend(vec![0; 6 + 8 * usize::from(n)]);
        }
        frame[14 + 6] = if units.is_empty() { 17 } else { 60 };
        let payload = (frame.len() - 54 + udp.len()) as u16;
        frame[18..20].copy_from_slice(&payload.to_be_bytes());
        frame.extend(udp);
        frame
    }

    // Ref. "IPv6 extension headers ... are walked to the upper-layer header, at most 8 of
    // them": wherever the upper-layer header lies (the dataplane once gave up past byte
    // 1,024). Each row: the extension headers' length bytes, where UDP starts, the decision.
    #[test]
    fn ipv6_headers_are_walked_wherever_they_end() {
        let cases: Vec<(Vec<u8>, usize, Decided)> = vec![
            (vec![], 54, by_rule("dns")),
            (vec![120], 1022, by_rule("dns")),
            (vec![121], 1030, by_rule("dns")),
            (vec![255], 2102, by_rule("dns")),
            (vec![255, 255], 4150, by_rule("dns")),
            (vec![255; 8], 16438, by_rule("dns")),
            (vec![0, 0, 0, 0, 0, 0, 0, 255], 2158, by_rule("dns")),
            (
                vec![255; 9],
                18486,
                malformed("IPv6 extension header chain too long"),
            ),
            (
                vec![0; 9],
                126,
                malformed("IPv6 extension header chain too long"),
            ),
        ];
        for (units, udp_at, expected) in cases {
            let frame = udp6_after(&units);
            // UDP, then 8 bytes of payload.
            assert_eq!(frame.len(), udp_at + 16, "{units:?}: the frame as built");
            assert_eq!(decide_on("lan0", &frame), expected, "{units:?}");
            let mut cut = frame.clone();
            cut.truncate(udp_at + 7);
            let why = if units.len() > MAX_IPV6_EXTENSIONS {
                "IPv6 extension header chain too long"
            } else {
                "UDP header cut short"
            };
            assert_eq!(decide_on("wan0", &cut), malformed(why), "{units:?}, cut");
            if let Some(&last) = units.last().filter(|_| units.len() <= 8) {
                let mut cut = frame.clone();
                cut.truncate(udp_at - 1);
                let why = "IPv6 extension header cut short";
                assert_eq!(decide_on("wan0", &cut), malformed(why), "{units:?}/{last}");
            }
        }
    }

    /// An ICMP message of `len` bytes (8 of header, then the body), `pad` bytes of Ethernet
    /// padding after it; the IPv4 total length counts the message only.
    fn icmp4(icmp_type: u8, code: u8, len: usize, pad: usize) -> Vec<u8> {
        let spec = format!("icmp 198.18.0.1 -> 198.19.0.1 type {icmp_type} code {code}");
        let mut frame = PacketSpec::parse(&spec)
            .unwrap()
            .frame_with_payload(&vec![0; len.saturating_sub(8)]);
        frame.truncate(14 + 20 + len);
        frame.extend(vec![0; pad]);
        frame
    }

    // ICMP timestamp request (13) and reply (14): RFC 792 gives them a 20-byte format, but
    // a firewall reads the type and code only, like every other ICMP message, and never
    // checks the body (ref. "Bytes after the headers are not checked"): 8 bytes of header
    // are enough, and 20-byte timestamps with Ethernet padding are not dropped. Each row:
    // type, code, ICMP length, padding, the decision on wan0 (default pass).
    #[test]
    fn icmp_timestamps_of_any_length_are_classified() {
        let cases = [
            (13, 0, 20, 0, PASS_DEFAULT),
            (13, 0, 20, 6, PASS_DEFAULT), // padded to 60 bytes on the wire
            (14, 0, 20, 6, PASS_DEFAULT),
            (13, 0, 8, 0, PASS_DEFAULT),
            (13, 0, 12, 0, PASS_DEFAULT),
            (13, 0, 19, 0, PASS_DEFAULT),
            (13, 0, 21, 0, PASS_DEFAULT),
            (14, 0, 19, 0, PASS_DEFAULT),
            (14, 0, 21, 0, PASS_DEFAULT),
            (14, 0, 64, 0, PASS_DEFAULT),
            (13, 1, 9, 0, PASS_DEFAULT),
            (8, 0, 8, 0, PASS_DEFAULT),
            (13, 0, 7, 0, malformed("ICMP header cut short")),
            (14, 0, 7, 0, malformed("ICMP header cut short")),
            (14, 0, 0, 0, malformed("ICMP header cut short")),
        ];
        for (icmp_type, code, len, pad, expected) in cases {
            let frame = icmp4(icmp_type, code, len, pad);
            let what = format!("type {icmp_type} code {code}, {len} bytes, {pad} padding");
            assert_eq!(decide_on("wan0", &frame), expected, "{what}");
            if expected.2 == Reason::Default {
                match parse(&frame) {
                    Frame::Ip(packet) => {
                        assert_eq!(packet.l4, L4::Icmp { icmp_type, code }, "{what}")
                    }
                    other => panic!("{what}: {other:?}"),
                }
            }
        }
        // Echo requests of any length still meet the ping rule.
        for len in [8, 19, 20, 21] {
            assert_eq!(decide_on("lan0", &icmp4(8, 0, len, 0)), by_rule("ping"));
        }
    }

    // Ref. "vlan: N matches the outermost tag, and tagged frames are classified on their inner
    // headers".
    #[test]
    fn double_tagged_frames_match_the_outer_tag() {
        let single = frame("tcp 198.18.0.1 -> 198.19.0.1:80 vlan 10");
        let mut double = single[..12].to_vec();
        double.extend([0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14]);
        double.extend(&single[16..]);
        assert_eq!(decide_on("lan0", &double), by_rule("vlan10"));
        match parse(&double) {
            Frame::Ip(packet) => assert_eq!(packet.vlan, Some(10)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_interface_is_an_error() {
        let err =
            classify(&rules(), "eth9", &frame("udp 198.18.0.1 -> 198.19.0.1:53")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface eth9 has no rules in this rule set"
        );
    }
}
