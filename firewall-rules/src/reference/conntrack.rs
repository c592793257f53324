//! The reference connection tracker: the kernel's state machine (`firewall-ebpf/src/
//! conntrack.rs`) written again in plain Rust over `reference::parse`, with a clock the caller
//! controls. It is the oracle of the differential sequence tests; `rules/README.md` describes
//! the behaviour both implement.

use std::{collections::HashMap, net::IpAddr};

use firewall_common::conntrack::state;

use super::{
    Decision, Frame, L4, Limiter, Packet, Reason, decide_direction_at, parse_with_transport,
};
use crate::ruleset::{Action, Direction, Policy, protocol};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// One end of a flow: address and port (for ICMP echo, the identifier).
pub type Endpoint = (IpAddr, u16);

/// A flow, the same for both directions: the lower endpoint first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub protocol: u8,
    pub lo: Endpoint,
    pub hi: Endpoint,
}

impl Key {
    fn new(protocol: u8, a: Endpoint, b: Endpoint) -> Key {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Key { protocol, lo, hi }
    }
}

/// What the tracker keeps per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// A `firewall_common::conntrack::state` value.
    pub state: u8,
    /// The endpoint that opened the flow.
    pub origin: Endpoint,
    pub last_seen: u64,
    pub origin_fin: bool,
    pub reply_fin: bool,
}

/// Flows and their timeouts, and the buckets of the limit rules; time is whatever the caller
/// says it is (nanoseconds).
#[derive(Debug, Clone)]
pub struct Tracker {
    pub flows: HashMap<Key, Flow>,
    /// Idle timeout per state, in nanoseconds.
    pub timeouts_ns: [u64; state::COUNT],
    /// The limit rules' buckets, judged at each packet's `now` with its frame length. They
    /// are kept by rule id, so a `Tracker` judges one interface's policy (as the tests do).
    pub limiter: Limiter,
}

impl Tracker {
    pub fn new(timeouts_ns: [u64; state::COUNT]) -> Tracker {
        Tracker {
            flows: HashMap::new(),
            timeouts_ns,
            limiter: Limiter::new(),
        }
    }

    /// What the dataplane decides for `frame` at `now` on an interface with `policy`: a live
    /// tracked flow passes it (reason `Tracked`), else the rules do (limit rules with the
    /// tracker's buckets and the frame's length), and a pass by a rule with `state: true`
    /// opens a flow.
    pub fn judge(&mut self, policy: &Policy, frame: &[u8], now: u64) -> Decision {
        self.judge_direction(policy, frame, now, Direction::In)
    }

    /// Like `judge`, for a packet arriving (`In`) or leaving (`Out`) the interface: the same
    /// table, the rules of that direction.
    pub fn judge_direction(
        &mut self,
        policy: &Policy,
        frame: &[u8],
        now: u64,
        direction: Direction,
    ) -> Decision {
        let (parsed, transport) = parse_with_transport(frame);
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let Frame::Ip(packet) = &parsed else {
            return decide_direction_at(policy, &parsed, direction, &mut self.limiter, now, len);
        };
        if self.tracked(packet, transport, now) {
            return Decision::without_rule(Action::Pass, Reason::Tracked);
        }
        let decision = decide_direction_at(policy, &parsed, direction, &mut self.limiter, now, len);
        let opens = decision.action == Action::Pass
            && decision
                .rule
                .as_ref()
                .and_then(|id| policy.rules.iter().find(|r| &r.id == id))
                .is_some_and(|rule| rule.state);
        if opens {
            self.open(packet, transport, now);
        }
        decision
    }

    /// Live flows at `now`.
    pub fn live(&self, now: u64) -> usize {
        self.flows
            .values()
            .filter(|f| !self.expired(f, now))
            .count()
    }

    /// Deletes expired flows, as the daemon's sweep does; returns how many.
    pub fn sweep(&mut self, now: u64) -> usize {
        let before = self.flows.len();
        let timeouts = self.timeouts_ns;
        self.flows.retain(|_, f| !expired_with(&timeouts, f, now));
        before - self.flows.len()
    }

    fn expired(&self, flow: &Flow, now: u64) -> bool {
        expired_with(&self.timeouts_ns, flow, now)
    }

    /// Is there a live flow for the packet? Advances it if so.
    fn tracked(&mut self, packet: &Packet, transport: &[u8], now: u64) -> bool {
        if let Some(quoted) = icmp_error_quote(packet, transport) {
            return quoted.is_some_and(|key| {
                self.flows
                    .get(&key)
                    .is_some_and(|flow| !self.expired(flow, now))
            });
        }
        let Some((key, sender)) = key_of(packet, transport) else {
            return false;
        };
        let timeouts = self.timeouts_ns;
        let Some(flow) = self.flows.get_mut(&key) else {
            return false;
        };
        if expired_with(&timeouts, flow, now) {
            return false;
        }
        let from_origin = sender == flow.origin;
        if let L4::Icmp { icmp_type, .. } = packet.l4 {
            let wanted = match (packet.protocol, from_origin) {
                (protocol::ICMP, true) => 8,
                (protocol::ICMP, false) => 0,
                (_, true) => 128,
                (_, false) => 129,
            };
            if icmp_type != wanted {
                return false;
            }
        }
        if packet.protocol == protocol::TCP {
            tcp_step(flow, tcp_flags(transport), from_origin);
        } else if packet.protocol == protocol::UDP && !from_origin {
            flow.state = state::UDP_REPLIED;
        }
        flow.last_seen = now;
        true
    }

    fn open(&mut self, packet: &Packet, transport: &[u8], now: u64) {
        let Some((key, sender)) = key_of(packet, transport) else {
            return;
        };
        let flags = tcp_flags(transport);
        let state = match (packet.protocol, packet.l4) {
            (protocol::TCP, _) if flags & TCP_RST != 0 => return,
            (protocol::TCP, _) if flags & (TCP_SYN | TCP_ACK) == TCP_SYN => state::TCP_SYN_SENT,
            (protocol::TCP, _) => state::TCP_ESTABLISHED,
            (protocol::UDP, _) => state::UDP_UNREPLIED,
            (protocol::ICMP, L4::Icmp { icmp_type: 8, .. })
            | (protocol::ICMPV6, L4::Icmp { icmp_type: 128, .. }) => state::ICMP_ECHO,
            _ => return,
        };
        // A live flow is never replaced (the kernel inserts with BPF_NOEXIST).
        if self.flows.get(&key).is_some_and(|f| !self.expired(f, now)) {
            return;
        }
        self.flows.insert(
            key,
            Flow {
                state,
                origin: sender,
                last_seen: now,
                origin_fin: false,
                reply_fin: false,
            },
        );
    }
}

fn expired_with(timeouts: &[u64; state::COUNT], flow: &Flow, now: u64) -> bool {
    let timeout = timeouts[usize::from(flow.state)];
    now.checked_sub(flow.last_seen)
        .is_some_and(|idle| idle > timeout)
}

/// The TCP state after a packet with `flags` from the originator or the responder.
fn tcp_step(flow: &mut Flow, flags: u8, from_origin: bool) {
    let syn_ack = flags & (TCP_SYN | TCP_ACK);
    if flags & TCP_RST != 0 {
        flow.state = state::TCP_CLOSE;
        return;
    }
    match flow.state {
        state::TCP_CLOSE | state::TCP_TIME_WAIT if from_origin && syn_ack == TCP_SYN => {
            flow.state = state::TCP_SYN_SENT;
            flow.origin_fin = false;
            flow.reply_fin = false;
        }
        state::TCP_SYN_SENT if !from_origin && syn_ack == TCP_SYN | TCP_ACK => {
            flow.state = state::TCP_SYN_RECV;
        }
        state::TCP_SYN_RECV if from_origin && syn_ack == TCP_ACK => {
            flow.state = state::TCP_ESTABLISHED;
        }
        state::TCP_ESTABLISHED | state::TCP_FIN_WAIT if flags & TCP_FIN != 0 => {
            if from_origin {
                flow.origin_fin = true;
            } else {
                flow.reply_fin = true;
            }
            flow.state = if flow.origin_fin && flow.reply_fin {
                state::TCP_TIME_WAIT
            } else {
                state::TCP_FIN_WAIT
            };
        }
        _ => {}
    }
}

fn tcp_flags(transport: &[u8]) -> u8 {
    transport.get(13).copied().unwrap_or(0)
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The packet's flow and its sender; `None` for what is not tracked.
fn key_of(packet: &Packet, transport: &[u8]) -> Option<(Key, Endpoint)> {
    let (src, dst) = match (packet.protocol, packet.l4) {
        (protocol::TCP | protocol::UDP, L4::Ports { src, dst }) => (src, dst),
        (
            protocol::ICMP,
            L4::Icmp {
                icmp_type: 0 | 8,
                code: 0,
            },
        )
        | (
            protocol::ICMPV6,
            L4::Icmp {
                icmp_type: 128 | 129,
                code: 0,
            },
        ) => {
            let id = be16(transport, 4)?;
            (id, id)
        }
        _ => return None,
    };
    let sender = (packet.src, src);
    Some((Key::new(packet.protocol, sender, (packet.dst, dst)), sender))
}

/// `Some(quote)` when the packet is an ICMP error (IPv4 types 3, 11, 12; ICMPv6 types 1-4):
/// the key of the flow its quoted packet belongs to, if the quote can be read and the error
/// goes back to the quoted packet's sender.
fn icmp_error_quote(packet: &Packet, transport: &[u8]) -> Option<Option<Key>> {
    let L4::Icmp { icmp_type, .. } = packet.l4 else {
        return None;
    };
    let is_error = match (packet.protocol, packet.src) {
        (protocol::ICMP, IpAddr::V4(_)) => matches!(icmp_type, 3 | 11 | 12),
        (protocol::ICMPV6, IpAddr::V6(_)) => (1..=4).contains(&icmp_type),
        _ => false,
    };
    if !is_error {
        return None;
    }
    Some(quoted_key(packet, transport.get(8..).unwrap_or_default()))
}

fn quoted_key(packet: &Packet, quote: &[u8]) -> Option<Key> {
    let version = quote.first()? >> 4;
    let (src, dst, protocol, inner): (IpAddr, IpAddr, u8, usize) = match packet.src {
        IpAddr::V4(_) => {
            let header_len = usize::from(quote.first()? & 0x0f) * 4;
            if quote.len() < 20 || version != 4 || header_len < 20 {
                return None;
            }
            let addr = |at: usize| -> IpAddr {
                std::net::Ipv4Addr::new(quote[at], quote[at + 1], quote[at + 2], quote[at + 3])
                    .into()
            };
            (addr(12), addr(16), quote[9], header_len)
        }
        IpAddr::V6(_) => {
            if quote.len() < 40 || version != 6 {
                return None;
            }
            let addr = |at: usize| -> IpAddr {
                let bytes: [u8; 16] = quote[at..at + 16].try_into().expect("16 bytes");
                std::net::Ipv6Addr::from(bytes).into()
            };
            (addr(8), addr(24), quote[6], 40)
        }
    };
    let head = quote.get(inner..inner + 8)?;
    let (a, b) = match protocol {
        protocol::TCP | protocol::UDP => (be16(head, 0)?, be16(head, 2)?),
        protocol::ICMP | protocol::ICMPV6 => {
            let id = be16(head, 4)?;
            (id, id)
        }
        _ => return None,
    };
    if packet.dst != src {
        return None;
    }
    Some(Key::new(protocol, (src, a), (dst, b)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{ruleset::RuleSet, spec::PacketSpec};

    const SECOND: u64 = 1_000_000_000;

    fn policy() -> Policy {
        let text = "version: 1
interfaces:
  lan0:
    default: drop
    rules:
      - { id: out, action: pass, src: 198.18.0.0/16, state: true }
";
        RuleSet::parse(Path::new("t.yaml"), text)
            .unwrap()
            .interfaces["lan0"]
            .clone()
    }

    fn frame(spec: &str) -> Vec<u8> {
        PacketSpec::parse(spec).unwrap().frame()
    }

    fn timeouts() -> [u64; state::COUNT] {
        [120, 60, 432_000, 120, 120, 10, 30, 120, 30].map(|s| s * SECOND)
    }

    fn reason(t: &mut Tracker, spec: &str, now: u64) -> Reason {
        t.judge(&policy(), &frame(spec), now).reason
    }

    #[test]
    fn a_tcp_handshake_and_close_walk_the_states() {
        let mut t = Tracker::new(timeouts());
        let out = "tcp 198.18.1.2:40000 -> 198.19.1.2:80";
        let back = "tcp 198.19.1.2:80 -> 198.18.1.2:40000";
        let state = |t: &Tracker| t.flows.values().next().unwrap().state;
        // Each row: the packet, the reason the tracker gives, the state after it.
        let rows = [
            (format!("{back} flags SYN"), Reason::Default, None),
            (
                format!("{out} flags SYN"),
                Reason::Rule,
                Some(state::TCP_SYN_SENT),
            ),
            (
                format!("{back} flags SYN,ACK"),
                Reason::Tracked,
                Some(state::TCP_SYN_RECV),
            ),
            (
                format!("{out} flags ACK"),
                Reason::Tracked,
                Some(state::TCP_ESTABLISHED),
            ),
            (
                format!("{back} flags FIN,ACK"),
                Reason::Tracked,
                Some(state::TCP_FIN_WAIT),
            ),
            (
                format!("{out} flags FIN,ACK"),
                Reason::Tracked,
                Some(state::TCP_TIME_WAIT),
            ),
            (
                format!("{back} flags ACK"),
                Reason::Tracked,
                Some(state::TCP_TIME_WAIT),
            ),
        ];
        for (i, (spec, want, after)) in rows.into_iter().enumerate() {
            assert_eq!(reason(&mut t, &spec, i as u64 * SECOND), want, "{spec}");
            if let Some(after) = after {
                assert_eq!(state(&t), after, "{spec}");
            }
        }
        // TIME_WAIT lasts 120 s after the last packet (at 6 s).
        assert_eq!(
            reason(&mut t, &format!("{back} flags ACK"), 126 * SECOND),
            Reason::Tracked
        );
        assert_eq!(
            reason(&mut t, &format!("{back} flags ACK"), 247 * SECOND),
            Reason::Default
        );
        assert_eq!(t.sweep(247 * SECOND), 1);
    }

    #[test]
    fn udp_and_echo_replies_pass_until_idle() {
        let mut t = Tracker::new(timeouts());
        assert_eq!(
            reason(&mut t, "udp 198.18.1.2:5000 -> 198.19.1.2:53", 0),
            Reason::Rule
        );
        assert_eq!(
            reason(&mut t, "udp 198.19.1.2:53 -> 198.18.1.2:5000", 30 * SECOND),
            Reason::Tracked
        );
        // Replied: the stream timeout (120 s) now applies.
        assert_eq!(
            reason(&mut t, "udp 198.19.1.2:53 -> 198.18.1.2:5000", 140 * SECOND),
            Reason::Tracked
        );
        assert_eq!(
            reason(&mut t, "udp 198.19.1.2:53 -> 198.18.1.2:5000", 261 * SECOND),
            Reason::Default
        );
        // A reply from another port is another flow.
        assert_eq!(
            reason(&mut t, "udp 198.19.1.2:54 -> 198.18.1.2:5000", 0),
            Reason::Default
        );
    }

    #[test]
    fn an_icmp_error_quoting_a_flow_passes() {
        let mut t = Tracker::new(timeouts());
        let out = "udp 198.18.1.2:5000 -> 198.19.1.2:53";
        assert_eq!(reason(&mut t, out, 0), Reason::Rule);
        let mut quote = frame(out)[14..].to_vec();
        quote.truncate(28);
        let error = PacketSpec::parse("icmp 198.19.1.1 -> 198.18.1.2 type 3 code 3")
            .unwrap()
            .frame_with_payload(&quote);
        assert_eq!(t.judge(&policy(), &error, SECOND).reason, Reason::Tracked);
        // The same error sent to the other end does not pass.
        let stray = PacketSpec::parse("icmp 198.19.1.1 -> 198.19.1.2 type 3 code 3")
            .unwrap()
            .frame_with_payload(&quote);
        assert_eq!(t.judge(&policy(), &stray, SECOND).reason, Reason::Default);
    }
}
