//! Metering: packets and bytes per interface slot and verdict, per rule, and per frame class
//! (non-IP, malformed), in per-CPU arrays so that the hot path never contends; the daemon sums
//! the CPUs at scrape time.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use firewall_common::{
    Counter, FrameClass, MAX_RULE_COUNTERS, MAX_SLOTS, Verdict, class_index, counter_index,
};

use crate::context::Wire;

#[map]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SLOTS * Verdict::COUNT, 0);

/// Per rule, by the rule's counter slot.
#[map]
static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULE_COUNTERS, 0);

/// Per interface slot and frame class.
#[map]
static CLASS_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_SLOTS * FrameClass::COUNT, 0);

/// `rule` of a packet that no rule decided.
pub const NO_RULE: u32 = u32::MAX;
/// `class` of an IP packet that parsed (counted by verdict only).
pub const IP: u32 = u32::MAX;

/// Counts the packet once for its directed slot and verdict, for the rule that decided, and
/// for its frame class. `rule` and `class` are plain numbers with sentinels: an `Option` here
/// would have the verifier reject its undefined payload.
#[inline(always)]
pub fn count<C: Wire>(ctx: &C, slot: u32, verdict: Verdict, rule: u32, class: u32) {
    let bytes = u64::from(ctx.len());
    add(&STATS, counter_index(slot, verdict), bytes);
    if rule != NO_RULE {
        add(&RULE_STATS, rule, bytes);
    }
    if class != IP {
        add(&CLASS_STATS, class_index(slot, class), bytes);
    }
}

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
