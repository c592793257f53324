//! Live packet traces, as `nft monitor trace` is for nftables: `smf-firewall trace` asks the
//! daemon over the control socket, and the daemon holds the kernel's switch on
//! (`TRACE_CONTROL`, `firewall-ebpf/src/trace.rs`) for exactly as long as that connection is
//! open, sending one line per traced packet: what the parser read, whether a tracked flow
//! passed it, the rule that decided (by id, as `explain` names it) or the default, and the
//! verdict.
//!
//! The switch goes off when the client goes (Ctrl-C, SIGKILL), when `--count` packets were
//! sent, and when the daemon stops; it is a lease the daemon renews every second, so a daemon
//! killed mid-trace stops tracing within [`LEASE`]; and every load of the program (a restarted
//! daemon) writes it off. One trace at a time: the kernel has one filter. Addresses go to the
//! client only, never to metrics or logs (Art. 17).

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use firewall_common::{
    MAX_INTERFACES, TraceControl, TraceEvent, Verdict, directed_slot, direction, family, l4,
    protocol, trace,
};
use firewall_dataplane::loader::TraceMaps;
use firewall_rules::address::parse_net;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, unix::AsyncFd},
    sync::Notify,
};
use tracing::{info, warn};

use crate::{
    control::protocol::{Failure, Is, TraceDirection, TraceRequest},
    metrics::RuleLabels,
};

/// How long the kernel goes on tracing after the daemon's last renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the daemon renews the lease while its client is connected.
const RENEW: Duration = Duration::from_secs(1);
/// How long a client may leave a line unread (stopped, or not reading) before the daemon
/// ends its trace: it would hold the one trace there is.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot poll the trace ring buffer: {0}")]
    Poll(io::Error),
}

/// `--match`'s text is not a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad --match `{text}`: {problem}. Expected [PROTO] [SRC[:PORTS] -> DST[:PORTS]], e.g. \"tcp 198.19.0.0/16 -> any:22\""
)]
pub struct FilterError {
    pub text: String,
    pub problem: String,
}

/// What a trace shows: packets of a protocol, from and to networks and port ranges.
///
/// ```text
/// FILTER   = [PROTO] [ENDPOINT -> ENDPOINT]
/// PROTO    = tcp | udp | sctp | icmp | icmpv6 | 0-255 | any
/// ENDPOINT = (any | ADDRESS | ADDRESS/LEN)[:PORT | :LO-HI]
/// ```
/// IPv6 goes in brackets when a port follows (`[2001:2::/48]:443`). Ports match only
/// packets that have them (TCP, UDP, SCTP), as in rules. A filter matches IP packets only;
/// without one (`Filter::default()`) a trace shows every frame, also those that are not IP
/// or are malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// IP packets only: any filter parsed.
    pub ip: bool,
    pub protocol: Option<u8>,
    pub src: Endpoint,
    pub dst: Endpoint,
}

/// One side of a filter: a network (address words and mask as in `Entry`, and the family)
/// and a port range, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoint {
    pub net: Option<([u32; 4], [u32; 4], u8)>,
    pub ports: Option<(u16, u16)>,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let fail = |problem: String| FilterError {
            text: text.to_string(),
            problem,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (protocol, rest) = match words.as_slice() {
            [] => (None, &words[..0]),
            [_, "->", ..] => (None, &words[..]),
            [proto, rest @ ..] => (Some(*proto), rest),
        };
        let protocol = match protocol {
            None | Some("any") => None,
            Some(name) => Some(
                protocol::number(name)
                    .or_else(|| name.parse().ok())
                    .ok_or_else(|| fail(format!("unknown protocol `{name}`")))?,
            ),
        };
        let (src, dst) = match rest {
            [] => (Endpoint::default(), Endpoint::default()),
            [src, "->", dst] => (
                Endpoint::parse(src).map_err(&fail)?,
                Endpoint::parse(dst).map_err(&fail)?,
            ),
            [_, arrow, _] => return Err(fail(format!("expected `->`, found `{arrow}`"))),
            _ => return Err(fail("expected SRC -> DST after the protocol".into())),
        };
        if let (Some((_, _, a)), Some((_, _, b))) = (src.net, dst.net)
            && a != b
        {
            return Err(fail(
                "source and destination are of different IP versions".into(),
            ));
        }
        if let Some(number) = protocol
            && !protocol::has_ports(number)
            && (src.ports.is_some() || dst.ports.is_some())
        {
            return Err(fail(format!(
                "{} has no ports",
                protocol::name(number).map_or_else(|| number.to_string(), str::to_string)
            )));
        }
        Ok(Filter {
            ip: true,
            protocol,
            src,
            dst,
        })
    }

    /// The kernel's filter for tracing `slots` (by direction) at `rate` until `until_ns`.
    pub fn control(&self, slots: [u32; 2], rate: u32, until_ns: u64) -> TraceControl {
        let mut control = TraceControl {
            until_ns,
            slots,
            rate_per_second: rate,
            ..TraceControl::OFF
        };
        if self.ip {
            control.conditions |= trace::cond::IP;
        }
        if let Some(number) = self.protocol {
            control.conditions |= trace::cond::PROTOCOL;
            control.protocol = number;
        }
        if let Some((addr, mask, version)) = self.src.net {
            control.conditions |= trace::cond::SRC | trace::cond::FAMILY;
            (control.src_addr, control.src_mask, control.family) = (addr, mask, version);
        }
        if let Some((addr, mask, version)) = self.dst.net {
            control.conditions |= trace::cond::DST | trace::cond::FAMILY;
            (control.dst_addr, control.dst_mask, control.family) = (addr, mask, version);
        }
        if let Some((lo, hi)) = self.src.ports {
            control.conditions |= trace::cond::SRC_PORT;
            (control.src_port_lo, control.src_port_hi) = (lo, hi);
        }
        if let Some((lo, hi)) = self.dst.ports {
            control.conditions |= trace::cond::DST_PORT;
            (control.dst_port_lo, control.dst_port_hi) = (lo, hi);
        }
        control
    }
}

impl Endpoint {
    fn parse(text: &str) -> Result<Endpoint, String> {
        let (net, ports) = if let Some(bracketed) = text.strip_prefix('[') {
            let (net, after) = bracketed
                .split_once(']')
                .ok_or(format!("`{text}` lacks its `]`"))?;
            match after {
                "" => (net, None),
                _ => (
                    net,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or(format!("`{text}`: expected `:PORT` after `]`"))?,
                    ),
                ),
            }
        } else if text.matches(':').count() > 1 {
            // Bare IPv6: no port (that needs brackets).
            (text, None)
        } else {
            match text.split_once(':') {
                Some((net, ports)) => (net, Some(ports)),
                None => (text, None),
            }
        };
        let net = match net {
            "any" => None,
            _ => {
                let parsed =
                    parse_net(net).ok_or(format!("`{net}` is not an address or network"))?;
                let version = match parsed.network() {
                    IpAddr::V4(_) => family::IPV4,
                    IpAddr::V6(_) => family::IPV6,
                };
                Some((words(parsed.network()), words(parsed.netmask()), version))
            }
        };
        let ports = ports.map(port_range).transpose()?;
        Ok(Endpoint { net, ports })
    }
}

/// `N` or `LO-HI`.
fn port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|_| !p.starts_with('+'))
            .ok_or(format!("`{p}` is not a port (0-65535)"))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(text)?, port(text)?),
    };
    if lo > hi {
        return Err(format!("the port range `{text}` is empty"));
    }
    Ok((lo, hi))
}

/// An address as the kernel compares it: network byte order words, IPv4 in the first.
fn words(addr: IpAddr) -> [u32; 4] {
    let bytes = match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            bytes
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut out = [0u32; 4];
    for (word, chunk) in out.iter_mut().zip(bytes.chunks(4)) {
        *word = u32::from_ne_bytes(chunk.try_into().expect("4-byte chunks"));
    }
    out
}

/// The inverse of `words` for a packet of `version`.
fn address(words: [u32; 4], version: u8) -> IpAddr {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    match version {
        family::IPV6 => IpAddr::V6(Ipv6Addr::from(bytes)),
        _ => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
    }
}

/// One line the daemon sends during a trace, in this order: `Started` (or `Failed`), a
/// `Packet` per traced packet, `Done` when the trace ended by itself (`--count`, the daemon
/// stopping). Keys are alphabetical, as everywhere on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Started { ok: Is<true>, started: Started },
    Packet(Box<TracedPacket>),
    Done { done: Totals, ok: Is<true> },
    Failed(Failure),
}

/// What the daemon traces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// `in`, `out` or both.
    pub directions: Vec<TraceDirection>,
    pub interface: String,
    #[serde(rename = "match")]
    pub filter: Option<String>,
    pub rate_per_second: u32,
}

/// The kernel's counts for the trace: packets sent, not sent because of the rate, lost to a
/// full ring buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub lost: u64,
    pub sent: u64,
    pub suppressed: u64,
}

/// One traced packet: `smf-firewall trace --json` prints one per line. IP fields are null for
/// a frame that is not IP (or is malformed), ports for a packet without them, ICMP type and
/// code for one that is not ICMP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedPacket {
    /// The whole Ethernet frame, without FCS.
    pub bytes: u32,
    /// Decided by the interface's default (no rule matched).
    pub default: bool,
    pub direction: TraceDirection,
    pub dst: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// `ipv4` or `ipv6`.
    pub family: Option<String>,
    /// A non-first fragment: no ports.
    pub fragment: bool,
    /// `ip`, `non_ip` or `malformed`.
    pub frame: String,
    pub icmp_code: Option<u8>,
    pub icmp_type: Option<u8>,
    pub interface: String,
    /// `CLOCK_MONOTONIC_COARSE` when the packet was judged.
    pub ktime_ns: u64,
    /// `tcp`, `udp`, ... or the number.
    pub protocol: Option<String>,
    /// What decided: `rule`, `default`, `tracked` (a flow of a `state: true` rule), `non_ip`
    /// (the `non_ip` setting) or `malformed`.
    pub reason: String,
    /// The id of the rule that decided (as `explain` prints it); `#N` for one a reload removed
    /// since (its counter slot N).
    pub rule: Option<String>,
    /// The verdict of the rules; differs from `verdict` when the adapter is not licensed to
    /// filter (then everything passes).
    pub rules_verdict: String,
    pub src: Option<IpAddr>,
    pub src_port: Option<u16>,
    /// TCP: the flags set (`SYN`, `ACK`, ...).
    pub tcp_flags: Option<Vec<String>>,
    /// Passed by a tracked flow, before the rules.
    pub tracked: bool,
    /// `pass` or `drop`: what happened to the packet.
    pub verdict: String,
    /// The outermost VLAN id, 0 when untagged.
    pub vlan: Option<u16>,
}

const TCP_FLAGS: [(u8, &str); 8] = [
    (0x01, "FIN"),
    (0x02, "SYN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x10, "ACK"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
];

impl TracedPacket {
    /// The event's numbers named: the interface of its slot, the id of its rule.
    pub fn new(event: &TraceEvent, interface: String, rule: Option<String>) -> TracedPacket {
        let ip = event.frame == trace::frame::IP;
        let ports = ip && event.l4 == l4::PORTS;
        let icmp = ip && event.l4 == l4::ICMP;
        let tracked = event.tracked != 0;
        let reason = match event.frame {
            trace::frame::NON_IP => "non_ip",
            trace::frame::MALFORMED => "malformed",
            _ if tracked => "tracked",
            _ if rule.is_some() => "rule",
            _ => "default",
        };
        TracedPacket {
            bytes: event.bytes,
            default: reason == "default",
            direction: if event.slot >= MAX_INTERFACES {
                TraceDirection::Out
            } else {
                TraceDirection::In
            },
            dst: ip.then(|| address(event.dst, event.family)),
            dst_port: ports.then_some(event.dst_port),
            family: ip.then(|| match event.family {
                family::IPV6 => "ipv6".to_string(),
                _ => "ipv4".to_string(),
            }),
            fragment: ip && event.l4 == l4::FRAGMENT,
            frame: match event.frame {
                trace::frame::IP => "ip",
                trace::frame::NON_IP => "non_ip",
                _ => "malformed",
            }
            .to_string(),
            icmp_code: icmp.then_some(event.dst_port as u8),
            icmp_type: icmp.then_some(event.src_port as u8),
            interface,
            ktime_ns: event.ktime_ns,
            protocol: ip.then(|| {
                protocol::name(event.protocol)
                    .map_or_else(|| event.protocol.to_string(), str::to_string)
            }),
            reason: reason.to_string(),
            rule,
            rules_verdict: Verdict::from_u8(event.decided).label().to_string(),
            src: ip.then(|| address(event.src, event.family)),
            src_port: ports.then_some(event.src_port),
            tcp_flags: (ip && event.protocol == protocol::TCP && event.l4 == l4::PORTS).then(
                || {
                    TCP_FLAGS
                        .iter()
                        .filter(|(bit, _)| event.tcp_flags & bit != 0)
                        .map(|(_, name)| name.to_string())
                        .collect()
                },
            ),
            tracked,
            verdict: Verdict::from_u8(event.verdict).label().to_string(),
            vlan: ip.then_some(event.vlan),
        }
    }
}

/// The daemon's side: the trace maps, the names of slots and rules, one trace at a time.
pub struct Tracer {
    /// The ring buffer and counters, held by the trace running (one at a time).
    session: tokio::sync::Mutex<Session>,
    /// The switch, written by the trace running and by `stop`.
    control: Mutex<Array<MapData, TraceControl>>,
    stopped: AtomicBool,
    stopping: Notify,
    /// (interface, slot) as configured.
    interfaces: Vec<(String, u32)>,
    /// (interface, rule id, counter slot), kept current by reloads.
    labels: RuleLabels,
    /// Bumped by `renamed` after a reload: a running trace names rules anew.
    epoch: AtomicU64,
}

struct Session {
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
}

impl Tracer {
    pub fn new(
        maps: TraceMaps,
        interfaces: &[(String, u32)],
        labels: RuleLabels,
    ) -> Result<Tracer, TraceError> {
        // SAFETY: the RingBuf owns its map's fd, which stays open and is the one as_raw_fd
        // returns for as long as the RingBuf lives, i.e. as long as the AsyncFd that owns it.
        let ring = unsafe { AsyncFd::register_with_interest(maps.ring, Interest::READABLE) }
            .map_err(|error| TraceError::Poll(error.into_parts().1))?;
        Ok(Tracer {
            session: tokio::sync::Mutex::new(Session {
                ring,
                stats: maps.stats,
            }),
            control: Mutex::new(maps.control),
            stopped: AtomicBool::new(false),
            stopping: Notify::new(),
            interfaces: interfaces.to_vec(),
            labels,
            epoch: AtomicU64::new(0),
        })
    }

    /// After a reload changed `labels`.
    pub fn renamed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// The daemon stops: the trace running ends, none starts, and the switch is off (also for
    /// a next daemon that takes over the pinned maps).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stopping.notify_waiters();
        self.set(TraceControl::OFF);
    }

    fn set(&self, control: TraceControl) {
        let mut map = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = map.set(0, control, 0) {
            warn!(%error, "trace: cannot write the switch");
        }
    }

    /// Serves one trace on a control connection: `read` only tells when the client goes.
    pub async fn serve(
        &self,
        request: TraceRequest,
        mut read: impl AsyncRead + Unpin,
        mut write: impl AsyncWrite + Unpin,
    ) -> io::Result<()> {
        let (filter, slots) = match self.check(&request) {
            Ok(checked) => checked,
            Err(message) => return send(&mut write, &Line::Failed(Failure::new(message))).await,
        };
        let Ok(mut session) = self.session.try_lock() else {
            let busy = "another `smf-firewall trace` is running on this daemon (one at a time: the kernel has one filter)";
            return send(&mut write, &Line::Failed(Failure::new(busy.into()))).await;
        };
        if self.stopped.load(Ordering::Acquire) {
            let stopping = "the daemon is stopping".to_string();
            return send(&mut write, &Line::Failed(Failure::new(stopping))).await;
        }
        // Events of an earlier trace (sent in the instant before its switch went off).
        while session.ring.get_mut().next().is_some() {}
        let before = session.totals();
        let directions = [TraceDirection::In, TraceDirection::Out]
            .into_iter()
            .zip(slots)
            .filter(|(_, slot)| *slot != trace::NO_SLOT)
            .map(|(d, _)| d)
            .collect();
        let started = Started {
            directions,
            interface: request.interface.clone(),
            filter: request.filter.clone(),
            rate_per_second: request.rate_per_second,
        };
        // On before the client hears "started": what it then sends is traced.
        let switch = Switch {
            tracer: self,
            filter,
            slots,
            rate: request.rate_per_second,
        };
        switch.renew();
        send(&mut write, &Line::Started { ok: Is, started }).await?;
        info!(interface = %request.interface, "trace started");
        let ended = self
            .run(&mut session, &switch, request.count, &mut read, &mut write)
            .await;
        drop(switch);
        let totals = session.totals().since(before);
        info!(interface = %request.interface, sent = totals.sent, suppressed = totals.suppressed, lost = totals.lost, "trace ended");
        match ended? {
            End::ClientGone => Ok(()),
            End::Done => {
                send(
                    &mut write,
                    &Line::Done {
                        done: totals,
                        ok: Is,
                    },
                )
                .await
            }
        }
    }

    /// The request's filter and directed slots, or why not.
    fn check(&self, request: &TraceRequest) -> Result<(Filter, [u32; 2]), String> {
        let filter = match &request.filter {
            Some(text) => Filter::parse(text).map_err(|e| e.to_string())?,
            None => Filter::default(),
        };
        let Some((_, slot)) = self
            .interfaces
            .iter()
            .find(|(n, _)| *n == request.interface)
        else {
            let names: Vec<&str> = self.interfaces.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "this daemon does not serve interface `{}` (it serves: {})",
                request.interface,
                names.join(", ")
            ));
        };
        if !(1..=trace::MAX_RATE).contains(&request.rate_per_second) {
            return Err(format!(
                "the rate must be 1 to {} packets a second, not {}",
                trace::MAX_RATE,
                request.rate_per_second
            ));
        }
        if request.count == Some(0) {
            return Err("the count must be at least 1".into());
        }
        let traced = |d: TraceDirection| request.direction.is_none_or(|asked| asked == d);
        let slot_of = |d: TraceDirection, number: u32| match traced(d) {
            true => directed_slot(*slot, number),
            false => trace::NO_SLOT,
        };
        Ok((
            filter,
            [
                slot_of(TraceDirection::In, direction::IN),
                slot_of(TraceDirection::Out, direction::OUT),
            ],
        ))
    }

    /// Sends the packets as they come, renewing the lease, until the count, the client going
    /// or the daemon stopping.
    async fn run(
        &self,
        session: &mut Session,
        switch: &Switch<'_>,
        count: Option<u64>,
        read: &mut (impl AsyncRead + Unpin),
        write: &mut (impl AsyncWrite + Unpin),
    ) -> io::Result<End> {
        let mut renew = tokio::time::interval(RENEW);
        let mut names = Names::default();
        let mut sent = 0u64;
        let mut byte = [0u8; 64];
        loop {
            tokio::select! {
                guard = session.ring.readable_mut() => {
                    let mut guard = guard?;
                    let mut events = Vec::new();
                    while let Some(record) = guard.get_inner_mut().next() {
                        if let Some(event) = event(&record) {
                            events.push(event);
                        }
                    }
                    guard.clear_ready();
                    for event in events {
                        let packet = names.packet(self, &event);
                        if send(write, &Line::Packet(Box::new(packet))).await.is_err() {
                            return Ok(End::ClientGone);
                        }
                        sent += 1;
                        if count.is_some_and(|count| sent >= count) {
                            return Ok(End::Done);
                        }
                    }
                }
                _ = renew.tick() => {
                    if self.stopped.load(Ordering::Acquire) {
                        return Ok(End::Done);
                    }
                    switch.renew();
                }
                _ = self.stopping.notified() => return Ok(End::Done),
                // The client sends nothing after its request: EOF (or an error) is it going.
                read = read.read(&mut byte) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return Ok(End::ClientGone);
                    }
                }
            }
        }
    }
}

enum End {
    /// The count was reached or the daemon stops: a `Done` line follows.
    Done,
    ClientGone,
}

/// The switch on for one trace; off when dropped, however the trace ends.
struct Switch<'a> {
    tracer: &'a Tracer,
    filter: Filter,
    slots: [u32; 2],
    rate: u32,
}

impl Switch<'_> {
    /// On, for another `LEASE`; never after the daemon began to stop.
    fn renew(&self) {
        if self.tracer.stopped.load(Ordering::Acquire) {
            return;
        }
        let until = monotonic_ns() + LEASE.as_nanos() as u64;
        self.tracer
            .set(self.filter.control(self.slots, self.rate, until));
    }
}

impl Drop for Switch<'_> {
    fn drop(&mut self) {
        self.tracer.set(TraceControl::OFF);
    }
}

/// The kernel's `bpf_ktime_get_coarse_ns()` clock, a little ahead (`CLOCK_MONOTONIC`).
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Session {
    fn totals(&self) -> Totals {
        let total = |index: u32| -> u64 {
            self.stats
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        Totals {
            lost: total(trace::LOST),
            sent: total(trace::SENT),
            suppressed: total(trace::SUPPRESSED),
        }
    }
}

impl Totals {
    fn since(self, before: Totals) -> Totals {
        Totals {
            lost: self.lost.wrapping_sub(before.lost),
            sent: self.sent.wrapping_sub(before.sent),
            suppressed: self.suppressed.wrapping_sub(before.suppressed),
        }
    }
}

/// A running trace's rule ids by counter slot, built from the labels when it starts and
/// after each reload.
#[derive(Default)]
struct Names {
    epoch: Option<u64>,
    rules: HashMap<u32, String>,
}

impl Names {
    fn packet(&mut self, tracer: &Tracer, event: &TraceEvent) -> TracedPacket {
        let epoch = tracer.epoch.load(Ordering::Acquire);
        if self.epoch != Some(epoch) {
            let labels = tracer.labels.read().unwrap_or_else(|p| p.into_inner());
            self.rules = labels
                .iter()
                .map(|(_, id, slot)| (*slot, id.clone()))
                .collect();
            self.epoch = Some(epoch);
        }
        let slot = event.slot % MAX_INTERFACES;
        let interface = tracer
            .interfaces
            .iter()
            .find(|(_, s)| *s == slot)
            .map_or_else(|| format!("#{slot}"), |(name, _)| name.clone());
        let rule = (event.rule != u32::MAX).then(|| {
            self.rules
                .get(&event.rule)
                .cloned()
                .unwrap_or_else(|| format!("#{}", event.rule))
        });
        TracedPacket::new(event, interface, rule)
    }
}

/// The event in one ring buffer record; `None` if it is too short (another build's program).
pub fn event(record: &[u8]) -> Option<TraceEvent> {
    (record.len() >= size_of::<TraceEvent>()).then(|| {
        // SAFETY: the record holds at least size_of::<TraceEvent>() bytes, and TraceEvent is
        // plain data valid for any bit pattern; read_unaligned copes with any alignment.
        unsafe { record.as_ptr().cast::<TraceEvent>().read_unaligned() }
    })
}

/// Writes one line within `WRITE_LIMIT`.
async fn send(write: &mut (impl AsyncWrite + Unpin), line: &Line) -> io::Result<()> {
    let mut text = serde_json::to_vec(line)?;
    text.push(b'\n');
    let written = async {
        write.write_all(&text).await?;
        write.flush().await
    };
    tokio::time::timeout(WRITE_LIMIT, written)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Option<([u32; 4], [u32; 4], u8)> {
        let parsed = parse_net(text).unwrap();
        let version = if parsed.network().is_ipv4() { 4 } else { 6 };
        Some((words(parsed.network()), words(parsed.netmask()), version))
    }

    // Each row: the text and the filter it is.
    #[test]
    fn filters_read_as_written() {
        let any = Endpoint::default();
        let ip = Filter {
            ip: true,
            ..Filter::default()
        };
        let cases = [
            ("", ip),
            ("any", ip),
            ("any -> any", ip),
            (
                "tcp 198.19.0.0/16 -> any:22",
                Filter {
                    ip: true,
                    protocol: Some(protocol::TCP),
                    src: Endpoint {
                        net: net("198.19.0.0/16"),
                        ports: None,
                    },
                    dst: Endpoint {
                        net: None,
                        ports: Some((22, 22)),
                    },
                },
            ),
            (
                "icmp",
                Filter {
                    protocol: Some(protocol::ICMP),
                    ..ip
                },
            ),
            (
                "any:1000-2000 -> 198.18.0.1",
                Filter {
                    ip: true,
                    protocol: None,
                    src: Endpoint {
                        net: None,
                        ports: Some((1000, 2000)),
                    },
                    dst: Endpoint {
                        net: net("198.18.0.1"),
                        ports: None,
                    },
                },
            ),
            (
                "udp [2001:2::/48]:53 -> 2001:2::1",
                Filter {
                    ip: true,
                    protocol: Some(protocol::UDP),
                    src: Endpoint {
                        net: net("2001:2::/48"),
                        ports: Some((53, 53)),
                    },
                    dst: Endpoint {
                        net: net("2001:2::1"),
                        ports: None,
                    },
                },
            ),
            (
                "47 any -> any",
                Filter {
                    ip: true,
                    protocol: Some(47),
                    src: any,
                    dst: any,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Filter::parse(text), Ok(expected), "{text}");
        }
        // Host bits of a network are cleared, as in rules.
        let filter = Filter::parse("198.18.7.9/24 -> any").unwrap();
        assert_eq!(filter.src.net, net("198.18.7.0/24"));
    }

    // Each row: the text and what the error says.
    #[test]
    fn bad_filters_say_what_is_wrong() {
        let cases = [
            ("tcpp any -> any", "unknown protocol `tcpp`"),
            ("tcp any => any", "expected `->`, found `=>`"),
            ("tcp any ->", "expected SRC -> DST after the protocol"),
            ("icmp any -> any:22", "icmp has no ports"),
            (
                "198.18.0.1 -> 2001:2::1",
                "source and destination are of different IP versions",
            ),
            ("any -> 198.18.0.0/33", "`198.18.0.0/33` is not an address"),
            ("any -> any:70000", "`70000` is not a port"),
            ("any -> any:30-20", "the port range `30-20` is empty"),
            ("any -> [2001:2::1", "lacks its `]`"),
            ("any -> 198.18.010.1", "`198.18.010.1` is not an address"),
        ];
        for (text, expected) in cases {
            let error = Filter::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(
                error.starts_with(&format!("bad --match `{text}`")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_filter_becomes_the_kernels_conditions() {
        let filter = Filter::parse("tcp 198.19.0.0/16 -> any:22-23").unwrap();
        let control = filter.control([3, trace::NO_SLOT], 50, 7);
        use trace::cond;
        assert_eq!(
            control.conditions,
            cond::IP | cond::PROTOCOL | cond::SRC | cond::FAMILY | cond::DST_PORT
        );
        assert_eq!(control.protocol, protocol::TCP);
        assert_eq!(control.family, family::IPV4);
        assert_eq!(control.src_addr, words("198.19.0.0".parse().unwrap()));
        assert_eq!(control.src_mask, words("255.255.0.0".parse().unwrap()));
        assert_eq!((control.dst_port_lo, control.dst_port_hi), (22, 23));
        assert_eq!((control.until_ns, control.rate_per_second), (7, 50));
        assert_eq!(control.slots, [3, trace::NO_SLOT]);
        // No filter: every frame; any filter at all: IP packets only.
        assert_eq!(Filter::default().control([0, 64], 1, 1).conditions, 0);
        let any = Filter::parse("any").unwrap().control([0, 64], 1, 1);
        assert_eq!(any.conditions, cond::IP);
    }

    #[test]
    fn an_event_reads_as_the_packet_it_was() {
        let event = TraceEvent {
            ktime_ns: 5,
            src: words("198.18.0.2".parse().unwrap()),
            dst: words("198.18.0.1".parse().unwrap()),
            slot: MAX_INTERFACES + 1,
            rule: 9,
            bytes: 74,
            src_port: 40000,
            dst_port: 22,
            vlan: 0,
            family: family::IPV4,
            protocol: protocol::TCP,
            l4: l4::PORTS,
            tcp_flags: 0x12,
            frame: trace::frame::IP,
            tracked: 0,
            verdict: Verdict::Pass as u8,
            decided: Verdict::Drop as u8,
            _pad: [0; 6],
        };
        let packet = TracedPacket::new(&event, "lan1".into(), Some("ssh".into()));
        assert_eq!(
            serde_json::to_string(&packet).unwrap(),
            concat!(
                r#"{"bytes":74,"default":false,"direction":"out","dst":"198.18.0.1","dst_port":22,"#,
                r#""family":"ipv4","fragment":false,"frame":"ip","icmp_code":null,"icmp_type":null,"#,
                r#""interface":"lan1","ktime_ns":5,"protocol":"tcp","reason":"rule","rule":"ssh","#,
                r#""rules_verdict":"drop","src":"198.18.0.2","src_port":40000,"#,
                r#""tcp_flags":["SYN","ACK"],"tracked":false,"verdict":"pass","vlan":0}"#
            )
        );
        let non_ip = TraceEvent {
            frame: trace::frame::NON_IP,
            slot: 0,
            rule: u32::MAX,
            ..event
        };
        let packet = TracedPacket::new(&non_ip, "lan0".into(), None);
        assert_eq!(
            (
                packet.reason.as_str(),
                packet.default,
                packet.src,
                packet.tcp_flags.clone()
            ),
            ("non_ip", false, None, None)
        );
        let line = Line::Packet(Box::new(packet));
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line);
    }
}
