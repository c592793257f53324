//! Drop logs: for a packet dropped by a rule with `log: true`, an event in the `DROP_LOG`
//! ring buffer, which the daemon reads and writes as a log line. Sampled per rule by a token
//! bucket (`firewall_common::RateBucket`) at the rate the daemon writes into
//! `DROP_LOG_CONFIG`, so that a flood costs a few events a second, not one per packet.
//! Events not sent are counted: suppressed by the rate limit, or lost to a full ring.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use firewall_common::{
    DropEvent, DropLogControl, MAX_RULE_COUNTERS, RateBucket, Verdict, drop_log, entry_flag, l4,
};

use crate::{
    context::Wire,
    meter,
    parse::{L4, Packet},
};

#[map]
static DROP_LOG: RingBuf = RingBuf::with_byte_size(drop_log::RING_BYTES, 0);

/// One `DropLogControl`, written by the daemon (the loader writes the default rate).
#[map]
static DROP_LOG_CONFIG: Array<DropLogControl> = Array::with_max_entries(1, 0);

/// A token bucket per rule counter slot. Shared by all CPUs and updated without atomics: two
/// CPUs dropping for the same rule in the same instant may both take the last token, so a few
/// events more than the rate can pass. Never fewer, and never more than one per CPU per race.
#[map]
static DROP_LOG_BUCKETS: Array<RateBucket> = Array::with_max_entries(MAX_RULE_COUNTERS, 0);

/// Per CPU: events sent, suppressed and lost (`drop_log::SENT`, ...).
#[map]
static DROP_LOG_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_log::COUNTERS, 0);

/// Reports the packet if the rule that decided it (counter slot `rule`, entry flags `flags`)
/// dropped it and has `log: true`. Unlicensed, nothing is dropped, so nothing is reported.
#[inline(always)]
pub fn report<C: Wire>(
    ctx: &C,
    slot: u32,
    verdict: Verdict,
    rule: u32,
    flags: u8,
    packet: &Packet,
) {
    if verdict != Verdict::Drop || rule == meter::NO_RULE || flags & entry_flag::LOG == 0 {
        return;
    }
    send(slot, rule, ctx.ifindex(), ctx.len(), packet);
}

/// The report proper, a BPF-to-BPF call: its event and spills take a frame of their own, not
/// the packet path's (which the stack limit leaves no room to grow).
#[inline(never)]
fn send(slot: u32, rule: u32, ifindex: u32, bytes: u32, packet: &Packet) {
    let Some(config) = DROP_LOG_CONFIG.get(0) else {
        return;
    };
    let now = match config.clock_ns {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        0 => unsafe { bpf_ktime_get_ns() },
        fixed => fixed,
    };
    let Some(bucket) = DROP_LOG_BUCKETS.get_ptr_mut(rule) else {
        return;
    };
    // SAFETY: a valid map value; a concurrent update by another CPU only risks the extra
    // events described at DROP_LOG_BUCKETS.
    if !unsafe { (*bucket).admit(now, config.rate_per_second) } {
        count(drop_log::SUPPRESSED);
        return;
    }
    let event = DropEvent {
        ktime_ns: now,
        src: packet.src,
        dst: packet.dst,
        ifindex,
        interface: slot,
        rule,
        bytes,
        src_port: packet.src_port_or_type,
        dst_port: packet.dst_port_or_code,
        vlan: packet.vlan,
        family: packet.family,
        protocol: packet.protocol,
        l4: match packet.l4 {
            L4::Ports => l4::PORTS,
            L4::Icmp => l4::ICMP,
            L4::Fragment => l4::FRAGMENT,
            L4::Other => l4::OTHER,
        },
        _pad: [0; 7],
    };
    match DROP_LOG.output::<DropEvent>(&event, 0) {
        Ok(()) => count(drop_log::SENT),
        Err(_) => count(drop_log::LOST),
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = DROP_LOG_STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}
