//! Live packet traces (`smf-firewall trace`): while the daemon holds `TRACE_CONTROL`'s switch
//! on, each packet of the traced slots that matches its filter is reported in the `TRACE`
//! ring buffer with what the parser read and how it was judged, at most
//! `TraceControl::rate_per_second` (one token bucket). Off, the packet path reads one word.

use core::ptr;

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use firewall_common::{
    FrameClass, RateBucket, TraceControl, TraceEvent, Verdict, l4, trace,
    trace::{cond, frame},
};

use crate::{
    context::Wire,
    meter,
    parse::{Frame, L4, Malformed, Packet},
};

#[map]
static TRACE: RingBuf = RingBuf::with_byte_size(trace::RING_BYTES, 0);

/// One `TraceControl`, written by the daemon (the loader writes `TraceControl::OFF`).
#[map]
static TRACE_CONTROL: Array<TraceControl> = Array::with_max_entries(1, 0);

/// The trace's token bucket, shared by all CPUs without atomics (as `DROP_LOG_BUCKETS`: a
/// race may let one event per CPU more through, never fewer).
#[map]
static TRACE_BUCKET: Array<RateBucket> = Array::with_max_entries(1, 0);

/// Per CPU: events sent, suppressed by the rate and lost to a full ring (`trace::SENT`, ...).
#[map]
static TRACE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(trace::COUNTERS, 0);

/// How the packet path judged a packet.
pub struct Outcome {
    /// Passed by a tracked flow, before the rules.
    pub tracked: bool,
    /// `meter::IP` or a `FrameClass`.
    pub class: u32,
    /// The verdict of the rules (the default, the flow).
    pub decided: Verdict,
    /// The verdict applied (see `license::applied`).
    pub applied: Verdict,
}

impl Outcome {
    /// In one register (a BPF call takes at most five arguments).
    #[inline(always)]
    fn packed(&self) -> u32 {
        let frame = match self.class {
            meter::IP => frame::IP,
            c if c == FrameClass::NonIp as u32 => frame::NON_IP,
            _ => frame::MALFORMED,
        };
        u32::from(self.tracked)
            | u32::from(frame) << 8
            | (self.decided as u32) << 16
            | (self.applied as u32) << 24
    }
}

/// Reports the packet on directed slot `slot`, decided by rule counter slot `rule` (or
/// `meter::NO_RULE`), if a trace is on and wants it. Off, this is the one read of the switch.
#[inline(always)]
pub fn report<C: Wire>(
    ctx: &C,
    slot: u32,
    frame: &Result<Frame, Malformed>,
    rule: u32,
    outcome: Outcome,
) {
    match TRACE_CONTROL.get(0) {
        Some(control) if control.until_ns != 0 => {
            let packet = match frame {
                Ok(Frame::Ip(packet)) => *packet as *const Packet,
                _ => ptr::null(),
            };
            record(slot, packet, rule, outcome.packed(), ctx.len());
        }
        _ => {}
    }
}

/// The trace proper, a BPF-to-BPF call: its event pointer and spills take a frame of their
/// own, not the packet path's. The event is written into the ring's memory, never the stack.
/// Its arguments are plain numbers and a pointer (null: not IP): the kernel refuses the BTF
/// that a Rust enum with data (`Result<Frame, _>`) would give its parameters, and a context
/// type parameter would give the program two copies.
#[inline(never)]
fn record(slot: u32, packet: *const Packet, rule: u32, outcome: u32, bytes: u32) {
    let Some(control) = TRACE_CONTROL.get(0) else {
        return;
    };
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now >= control.until_ns || (slot != control.slots[0] && slot != control.slots[1]) {
        return;
    }
    // SAFETY: null or the caller's parsed packet, alive for this call.
    let packet = match unsafe { packet.as_ref() } {
        Some(packet) if matches(control, packet) => Some(packet),
        None if control.conditions == 0 => None,
        _ => return,
    };
    let Some(bucket) = TRACE_BUCKET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid map value; a concurrent update by another CPU only risks the extra
    // events described at TRACE_BUCKET.
    if !unsafe { (*bucket).admit(now, control.rate_per_second) } {
        count(trace::SUPPRESSED);
        return;
    }
    let Some(mut entry) = TRACE.reserve::<TraceEvent>(0) else {
        count(trace::LOST);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reserved, writable record of size_of::<TraceEvent>(); every
    // field is written (the ring's memory holds older records' bytes).
    unsafe {
        (*event).ktime_ns = now;
        (*event).slot = slot;
        (*event).rule = rule;
        (*event).bytes = bytes;
        (*event).frame = (outcome >> 8) as u8;
        (*event).tracked = outcome as u8;
        (*event).decided = (outcome >> 16) as u8;
        (*event).verdict = (outcome >> 24) as u8;
        (*event)._pad = [0; 6];
        fields(event, packet);
    }
    entry.submit(0);
    count(trace::SENT);
}

/// Writes the parsed fields (zeros for a frame that is not IP).
///
/// # Safety
/// `event` must point to a writable `TraceEvent`.
#[inline(always)]
unsafe fn fields(event: *mut TraceEvent, packet: Option<&Packet>) {
    // SAFETY: the caller's.
    unsafe {
        match packet {
            Some(packet) => {
                (*event).src = packet.src;
                (*event).dst = packet.dst;
                (*event).src_port = packet.src_port_or_type;
                (*event).dst_port = packet.dst_port_or_code;
                (*event).vlan = packet.vlan;
                (*event).family = packet.family;
                (*event).protocol = packet.protocol;
                (*event).l4 = match packet.l4 {
                    L4::Ports => l4::PORTS,
                    L4::Icmp => l4::ICMP,
                    L4::Fragment => l4::FRAGMENT,
                    L4::Other => l4::OTHER,
                };
                (*event).tcp_flags = packet.tcp_flags;
            }
            None => {
                (*event).src = [0; 4];
                (*event).dst = [0; 4];
                (*event).src_port = 0;
                (*event).dst_port = 0;
                (*event).vlan = 0;
                (*event).family = 0;
                (*event).protocol = 0;
                (*event).l4 = l4::OTHER;
                (*event).tcp_flags = 0;
            }
        }
    }
}

/// The trace's filter: what `smf-firewall trace --match` asked for.
#[inline(always)]
fn matches(control: &TraceControl, packet: &Packet) -> bool {
    let has = |condition: u16| control.conditions & condition != 0;
    let ports = packet.l4 == L4::Ports;
    !(has(cond::FAMILY) && control.family != packet.family
        || has(cond::PROTOCOL) && control.protocol != packet.protocol
        || has(cond::SRC) && !in_net(&packet.src, &control.src_addr, &control.src_mask)
        || has(cond::DST) && !in_net(&packet.dst, &control.dst_addr, &control.dst_mask)
        || has(cond::SRC_PORT)
            && !(ports
                && control.src_port_lo <= packet.src_port_or_type
                && packet.src_port_or_type <= control.src_port_hi)
        || has(cond::DST_PORT)
            && !(ports
                && control.dst_port_lo <= packet.dst_port_or_code
                && packet.dst_port_or_code <= control.dst_port_hi))
}

#[inline(always)]
fn in_net(addr: &[u32; 4], net: &[u32; 4], mask: &[u32; 4]) -> bool {
    addr[0] & mask[0] == net[0]
        && addr[1] & mask[1] == net[1]
        && addr[2] & mask[2] == net[2]
        && addr[3] & mask[3] == net[3]
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = TRACE_STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}
