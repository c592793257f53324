//! Metering: packets and bytes per interface slot and verdict, and per rule, in per-CPU arrays
//! so that the hot path never contends; the daemon sums the CPUs at scrape time.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use firewall_common::{Counter, MAX_INTERFACES, MAX_RULE_COUNTERS, Verdict, counter_index};

#[map]
static STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_INTERFACES * Verdict::COUNT, 0);

/// Per rule, by the rule's counter slot.
#[map]
static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULE_COUNTERS, 0);

/// `rule` of a packet that no rule decided.
pub const NO_RULE: u32 = u32::MAX;

/// Counts the packet once for its interface and verdict, and for the rule that decided.
#[inline(always)]
pub fn count(ctx: &XdpContext, slot: u32, verdict: Verdict, rule: u32) {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    add(&STATS, counter_index(slot, verdict), bytes);
    if rule != NO_RULE {
        add(&RULE_STATS, rule, bytes);
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
