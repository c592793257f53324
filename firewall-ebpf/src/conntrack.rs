//! Connection tracking (SEIL's `state enable`): a packet passed by a rule with `state: true`
//! opens a flow in an LRU hash (`CONNTRACK4` for IPv4, keyed by the 16-byte `FlowKey4`, which
//! hashes faster than IPv6's 40-byte `FlowKey` in `CONNTRACK`); later packets of the flow, in either direction and
//! on any interface, pass before the rules are looked at. TCP follows SYN, SYN-ACK, ACK, FIN and
//! RST; UDP and ICMP echo have idle timeouts; an ICMP error that quotes a tracked flow passes.
//! A packet whose slot in the presence filter (`FLOW_PRESENCE`) is clear has no flow and skips
//! the lookup.
//!
//! Time is CLOCK_MONOTONIC_COARSE, read as jiffies (`now`). A flow whose idle time exceeds
//! its state's timeout (`CONNTRACK_SETTINGS`, written by the daemon from its config), or in no
//! known state, counts as absent (`firewall_common::conntrack::expired`, which the daemon's
//! sweep also uses to delete such entries). The state machine is the reference classifier's
//! (`firewall-rules/src/reference/conntrack.rs`).

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use firewall_common::{
    ConntrackSettings, Flow, FlowKey, FlowKey4, MAX_SLOTS,
    conntrack::{
        DEFAULT_MAX_ENTRIES, event, fin, origin,
        presence::{self, BLOCK},
        state, tracked,
    },
    family, protocol,
};

use crate::{
    context::Wire,
    parse::{self, L4, Packet},
};

/// The IPv4 flows; `max_entries` is set by the daemon at load time from its config.
#[map]
static CONNTRACK4: LruHashMap<FlowKey4, Flow> =
    LruHashMap::with_max_entries(DEFAULT_MAX_ENTRIES, 0);

/// The IPv6 flows; sized as `CONNTRACK4`.
#[map]
static CONNTRACK: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(DEFAULT_MAX_ENTRIES, 0);

/// The tables' presence filter (`firewall_common::conntrack::presence`): both halves, sized
/// by the daemon at load time, rebuilt by it through mmap.
#[map]
static FLOW_PRESENCE: Array<[u8; BLOCK as usize]> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Timeouts and the clock; one entry.
#[map]
static CONNTRACK_SETTINGS: Array<ConntrackSettings> = Array::with_max_entries(1, 0);

/// `conntrack::event` counts.
#[map]
static CONNTRACK_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event::COUNT, 0);

/// Packets passed by a tracked flow, per directed slot.
#[map]
static CONNTRACK_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

/// Flows flushed by `smf-firewall conntrack flush`; written by userspace only, read by the
/// daemon (for `smf_firewall_conntrack_evicted_total`).
#[map]
static CONNTRACK_FLUSHED: Array<u64> = Array::with_max_entries(1, 0);

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// What the table says about a packet.
pub enum Track {
    /// A live flow: pass before the rules (its state is already updated).
    Hit,
    /// No live flow. If the rules pass the packet with `state: true`, `open` it;
    /// `replaces_expired` says the key still holds an expired entry.
    Miss { replaces_expired: bool },
}

/// The settings, if tracking is on (the daemon turns it off while no rule has
/// `state: true` and no flow can be in the table, so that such rule sets pay nothing).
#[inline(always)]
pub fn settings() -> Option<&'static ConntrackSettings> {
    CONNTRACK_SETTINGS.get(0).filter(|s| s.tracking != 0)
}

/// The kernel's "now" for flows: jiffies in CLOCK_MONOTONIC_COARSE's nanoseconds, as the
/// loader calibrated them (`ConntrackSettings::tick_ns`). A tick's resolution is plenty for
/// timeouts of seconds, and `bpf_jiffies64` is inlined into one load, where the helper
/// `bpf_ktime_get_coarse_ns` cost an established flow 15 of its 98 ns here.
#[inline(always)]
pub fn now(settings: &ConntrackSettings) -> u64 {
    if settings.fixed_clock != 0 {
        settings.fixed_now_ns
    } else if settings.tick_ns != 0 {
        // SAFETY: a helper without arguments or preconditions.
        let jiffies = unsafe { bpf_jiffies64() };
        jiffies
            .wrapping_mul(settings.tick_ns)
            .wrapping_add(settings.offset_ns)
    } else {
        // SAFETY: as above.
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}

/// The program `smf_clock`: the kernel's two clocks at one instant, `bpf_jiffies64()` and
/// `bpf_ktime_get_coarse_ns()`, written into the frame's first 16 bytes for the loader, which
/// runs it with BPF_PROG_TEST_RUN to calibrate the flow clock (`now`).
#[inline(always)]
pub fn clocks(ctx: &XdpContext) -> u32 {
    let at = ctx.data();
    if at + 16 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the 16 bytes at `at` are the frame's, checked above; the helpers have no
    // preconditions.
    unsafe {
        let clocks = [bpf_jiffies64(), bpf_ktime_get_coarse_ns()];
        core::ptr::write_unaligned(at as *mut [u64; 2], clocks);
    }
    xdp_action::XDP_PASS
}

/// Looks the packet's flow up, if its protocol is tracked; on a live flow, advances its state
/// and last-seen time. IPv4 runs inline: a BPF-to-BPF call costs a return thunk here (5-7 ns,
/// on a hit and on a miss). IPv6 runs in a call of its own, so that its 40-byte key and spills
/// get a frame of their own instead of growing the packet path's, which the classifier's
/// `bpf_loop` callbacks share (512 bytes for the whole chain).
#[inline(always)]
pub fn track(packet: &Packet, settings: &ConntrackSettings) -> Track {
    // Only the protocols of `state: true` rules can have a flow.
    if settings.tracking & tracked::of(packet.protocol) == 0 {
        return MISS;
    }
    let Some((src_port, dst_port)) = ports_of(packet) else {
        return MISS;
    };
    if !may_hold(settings, slot(packet, src_port, dst_port, settings)) {
        return MISS;
    }
    if packet.family != family::IPV4 {
        return track6(packet, settings, src_port, dst_port);
    }
    let (key, sender) = key4(packet, src_port, dst_port);
    match CONNTRACK4.get_ptr_mut(key) {
        Some(flow) => live(flow, sender, packet, settings),
        None => MISS,
    }
}

/// The packet's flow's slot in the presence filter (`presence::slot4`, `slot6`).
#[inline(always)]
fn slot(packet: &Packet, src_port: u16, dst_port: u16, settings: &ConntrackSettings) -> u32 {
    let bits = settings.presence_bits as u32;
    if packet.family == family::IPV4 {
        presence::slot4(
            packet.src[0],
            packet.dst[0],
            src_port,
            dst_port,
            packet.protocol,
            bits,
        )
    } else {
        presence::slot6(
            &packet.src,
            &packet.dst,
            src_port,
            dst_port,
            packet.protocol,
            bits,
        )
    }
}

/// False if the presence filter proves no flow's key has `slot` (then no flow, expired or
/// not, is in the tables under the key); true if a flow may (or no filter is read yet).
#[inline(always)]
fn may_hold(settings: &ConntrackSettings, slot: u32) -> bool {
    if settings.presence == 0 {
        return true;
    }
    let half = (settings.presence as u32).wrapping_sub(1);
    let (element, byte) = presence::at(half, slot, settings.presence_bits as u32);
    match FLOW_PRESENCE.get(element) {
        Some(bytes) => bytes.get(byte).is_none_or(|&b| b != 0),
        None => true,
    }
}

/// Marks the packet's flow in both halves of the presence filter, once it is inserted.
#[inline(never)]
fn mark(packet: &Packet, settings: &ConntrackSettings) {
    let Some((src_port, dst_port)) = ports_of(packet) else {
        return;
    };
    let bits = settings.presence_bits as u32;
    let slot = slot(packet, src_port, dst_port, settings);
    for half in 0..2 {
        let (element, byte) = presence::at(half, slot, bits);
        if let Some(bytes) = FLOW_PRESENCE.get_ptr_mut(element)
            && byte < BLOCK as usize
        {
            // SAFETY: the element is the map's while the program runs; `byte` is inside it.
            // Every writer of a marked byte writes 1 (the daemon zeroes only a half no packet
            // reads), so a race between CPUs loses nothing.
            unsafe { (*bytes)[byte] = 1 };
        }
    }
}

const MISS: Track = Track::Miss {
    replaces_expired: false,
};

/// `track` for IPv6.
#[inline(never)]
fn track6(packet: &Packet, settings: &ConntrackSettings, src_port: u16, dst_port: u16) -> Track {
    let (key, sender) = normalised6(
        packet.protocol,
        &packet.src,
        &packet.dst,
        src_port,
        dst_port,
    );
    match CONNTRACK.get_ptr_mut(key) {
        Some(flow) => live(flow, sender, packet, settings),
        None => MISS,
    }
}

/// A found flow (`sender`: which endpoint of its key sent the packet): a hit if it is live,
/// its state advanced and its last-seen time now.
#[inline(always)]
fn live(flow: *mut Flow, sender: u8, packet: &Packet, settings: &ConntrackSettings) -> Track {
    // SAFETY: the kernel keeps the value alive while the program runs; concurrent updates of
    // the same flow from two CPUs may interleave, which costs at most one state step.
    let flow = unsafe { &mut *flow };
    let now = now(settings);
    if flow.expired(settings, now) {
        return Track::Miss {
            replaces_expired: true,
        };
    }
    let from_origin = sender == flow.origin;
    if packet.l4 == L4::Icmp && !echo_fits(packet, from_origin) {
        return MISS;
    }
    advance(flow, packet, from_origin);
    flow.last_seen = now;
    Track::Hit
}

/// Opens a flow for a packet the rules passed with `state: true`. Only TCP (not a RST), UDP
/// and ICMP echo requests open flows. Inserted, then marked in the presence filter: a flow
/// marked before a rebuild zeroes a half is already in the tables the rebuild walks
/// (`presence`). Two calls, each from the packet path: either one inside the other would
/// overflow the stack the chain of calls shares.
#[inline(always)]
pub fn open(packet: &Packet, replaces_expired: bool, settings: &ConntrackSettings) {
    if insert(packet, replaces_expired, settings) {
        mark(packet, settings);
    }
}

/// `open`'s insertion; true if a flow was inserted. Not inlined, as `track6`: its keys and the
/// new flow get a frame of their own.
#[inline(never)]
fn insert(packet: &Packet, replaces_expired: bool, settings: &ConntrackSettings) -> bool {
    let Some((src_port, dst_port)) = ports_of(packet) else {
        return false;
    };
    let state = match packet.protocol {
        protocol::TCP if packet.tcp_flags & TCP_RST != 0 => return false,
        protocol::TCP if packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => state::TCP_SYN_SENT,
        // Picked up mid-stream (e.g. after a restart of the daemon).
        protocol::TCP => state::TCP_ESTABLISHED,
        protocol::UDP => state::UDP_UNREPLIED,
        _ if echo_request(packet) => state::ICMP_ECHO,
        _ => return false,
    };
    let flow = |origin| Flow::new(now(settings), state, origin);
    // BPF_NOEXIST = 1, BPF_ANY = 0: never overwrite a live flow another CPU just opened.
    let flags = if replaces_expired { 0 } else { 1 };
    let inserted = if packet.family == family::IPV4 {
        let (key, sender) = key4(packet, src_port, dst_port);
        CONNTRACK4.insert(key, flow(sender), flags)
    } else {
        let (key, sender) = normalised6(
            packet.protocol,
            &packet.src,
            &packet.dst,
            src_port,
            dst_port,
        );
        CONNTRACK.insert(key, flow(sender), flags)
    };
    if inserted.is_ok() {
        count(event::CREATED);
        if replaces_expired {
            count(event::EXPIRED_REPLACED);
        }
    }
    inserted.is_ok()
}

/// Counts a packet passed by a tracked flow.
#[inline(always)]
pub fn count_hit(slot: u32) {
    if let Some(hits) = CONNTRACK_HITS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *hits += 1 };
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(n) = CONNTRACK_EVENTS.get_ptr_mut(index) {
        // SAFETY: as in `count_hit`.
        unsafe { *n += 1 };
    }
}

/// An ICMP error (`is_icmp_error`) passes when it quotes a live flow and goes back to the
/// quoted packet's sender. Not inlined, as `track6`: the quote is read in a frame of its own.
#[inline(never)]
#[allow(clippy::needless_borrows_for_generic_args)]
pub fn related<C: Wire>(ctx: &C, packet: &Packet, settings: &ConntrackSettings) -> Track {
    let Some(quoted) = parse::quoted(ctx, packet) else {
        return MISS;
    };
    if packet.dst != quoted.src {
        return MISS;
    }
    let (a, b) = match quoted.protocol {
        protocol::TCP | protocol::UDP => (quoted.src_port_or_type, quoted.dst_port_or_id),
        // Echo request (8, 128) or reply (0, 129): the flow's ports are the identifier.
        protocol::ICMP | protocol::ICMPV6 => (quoted.dst_port_or_id, quoted.dst_port_or_id),
        _ => return MISS,
    };
    // Keys by reference here (by value in `track` and `open`): whichever gives the smaller
    // frame (128 bytes each; the chain with the packet path's 368 must fit in 512). Clippy
    // would have them by value, which copies them and overflows the stack.
    let flow = if packet.family == family::IPV4 {
        let (key, _) = normalised4(quoted.protocol, quoted.src[0], quoted.dst[0], a, b);
        CONNTRACK4.get_ptr(&key)
    } else {
        let (key, _) = normalised6(quoted.protocol, &quoted.src, &quoted.dst, a, b);
        CONNTRACK.get_ptr(&key)
    };
    match flow {
        // SAFETY: as in `track`; only read here.
        Some(flow) if !unsafe { &*flow }.expired(settings, now(settings)) => Track::Hit,
        _ => MISS,
    }
}

/// The next state of a live flow after a packet from the originator (`from_origin`) or the
/// responder.
#[inline(always)]
fn advance(flow: &mut Flow, packet: &Packet, from_origin: bool) {
    match packet.protocol {
        protocol::TCP => {
            let flags = packet.tcp_flags;
            let syn_ack = flags & (TCP_SYN | TCP_ACK);
            if flags & TCP_RST != 0 {
                flow.state = state::TCP_CLOSE;
            } else if from_origin
                && syn_ack == TCP_SYN
                && (flow.state == state::TCP_CLOSE || flow.state == state::TCP_TIME_WAIT)
            {
                // The port pair is reused for a new connection.
                flow.state = state::TCP_SYN_SENT;
                flow.fins = 0;
            } else if flow.state == state::TCP_SYN_SENT {
                if !from_origin && syn_ack == TCP_SYN | TCP_ACK {
                    flow.state = state::TCP_SYN_RECV;
                }
            } else if flow.state == state::TCP_SYN_RECV {
                if from_origin && syn_ack == TCP_ACK {
                    flow.state = state::TCP_ESTABLISHED;
                }
            } else if (flow.state == state::TCP_ESTABLISHED || flow.state == state::TCP_FIN_WAIT)
                && flags & TCP_FIN != 0
            {
                flow.fins |= if from_origin { fin::ORIGIN } else { fin::REPLY };
                flow.state = if flow.fins == fin::ORIGIN | fin::REPLY {
                    state::TCP_TIME_WAIT
                } else {
                    state::TCP_FIN_WAIT
                };
            }
        }
        protocol::UDP if !from_origin => flow.state = state::UDP_REPLIED,
        _ => {}
    }
}

#[inline(always)]
fn echo_request(packet: &Packet) -> bool {
    packet.l4 == L4::Icmp
        && packet.dst_port_or_code == 0
        && (packet.protocol == protocol::ICMP && packet.src_port_or_type == 8
            || packet.protocol == protocol::ICMPV6 && packet.src_port_or_type == 128)
}

#[inline(always)]
fn echo_reply(packet: &Packet) -> bool {
    packet.l4 == L4::Icmp
        && packet.dst_port_or_code == 0
        && (packet.protocol == protocol::ICMP && packet.src_port_or_type == 0
            || packet.protocol == protocol::ICMPV6 && packet.src_port_or_type == 129)
}

/// Requests come from the originator, replies from the responder.
#[inline(always)]
fn echo_fits(packet: &Packet, from_origin: bool) -> bool {
    if from_origin {
        echo_request(packet)
    } else {
        echo_reply(packet)
    }
}

/// Is this ICMP packet an error that quotes another packet?
#[inline(always)]
pub fn is_icmp_error(packet: &Packet) -> bool {
    packet.l4 == L4::Icmp
        && (packet.protocol == protocol::ICMP
            && packet.family == family::IPV4
            && (packet.src_port_or_type == 3
                || packet.src_port_or_type == 11
                || packet.src_port_or_type == 12)
            || packet.protocol == protocol::ICMPV6
                && packet.family == family::IPV6
                && (1..=4).contains(&packet.src_port_or_type))
}

/// The packet's ports as its flow key holds them (source, destination): TCP and UDP ports,
/// the echo identifier twice for ICMP echo; `None` for what is not tracked (other protocols,
/// fragments, ICMP other than echo).
#[inline(always)]
fn ports_of(packet: &Packet) -> Option<(u16, u16)> {
    match packet.l4 {
        L4::Ports if packet.protocol == protocol::TCP || packet.protocol == protocol::UDP => {
            Some((packet.src_port_or_type, packet.dst_port_or_code))
        }
        L4::Icmp if echo_request(packet) || echo_reply(packet) => {
            Some((packet.icmp_id, packet.icmp_id))
        }
        _ => None,
    }
}

/// Does the source endpoint (address as a big-endian number, then port) come first in the
/// key? `src` and `dst` are the addresses' words, most significant first.
#[inline(always)]
fn src_first<const N: usize>(src: &[u32; N], dst: &[u32; N], src_port: u16, dst_port: u16) -> bool {
    // The most significant differing word decides (it is compared last); no early exit, so
    // the verifier walks one path.
    let mut first = src_port <= dst_port;
    for i in (0..N).rev() {
        let (s, d) = (u32::from_be(src[i]), u32::from_be(dst[i]));
        if s != d {
            first = s < d;
        }
    }
    first
}

/// An IPv4 packet's flow key and sender, as `normalised4`.
#[inline(always)]
fn key4(packet: &Packet, src_port: u16, dst_port: u16) -> (FlowKey4, u8) {
    normalised4(
        packet.protocol,
        packet.src[0],
        packet.dst[0],
        src_port,
        dst_port,
    )
}

/// The IPv4 key with the lower endpoint first, and which endpoint of it sent the packet
/// (`origin::LO` or `HI`).
#[inline(always)]
fn normalised4(protocol: u8, src: u32, dst: u32, src_port: u16, dst_port: u16) -> (FlowKey4, u8) {
    if src_first(&[src], &[dst], src_port, dst_port) {
        (
            FlowKey4::new(src, dst, src_port, dst_port, protocol),
            origin::LO,
        )
    } else {
        (
            FlowKey4::new(dst, src, dst_port, src_port, protocol),
            origin::HI,
        )
    }
}

/// The IPv6 key, as `normalised4`.
#[inline(always)]
fn normalised6(
    protocol: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
    src_port: u16,
    dst_port: u16,
) -> (FlowKey, u8) {
    let key = |lo: &[u32; 4], hi: &[u32; 4], lo_port, hi_port| FlowKey {
        lo_addr: *lo,
        hi_addr: *hi,
        lo_port,
        hi_port,
        protocol,
        family: family::IPV6,
        _pad: [0; 2],
    };
    if src_first(src, dst, src_port, dst_port) {
        (key(src, dst, src_port, dst_port), origin::LO)
    } else {
        (key(dst, src, dst_port, src_port), origin::HI)
    }
}
