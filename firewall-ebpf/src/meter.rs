//! Metering: packets and bytes per interface slot and verdict, in a per-CPU array so that the
//! hot path never contends; the daemon sums the CPUs at scrape time.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use firewall_common::{Counter, MAX_INTERFACES, Verdict, counter_index};

#[map]
static STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_INTERFACES * Verdict::COUNT, 0);

#[inline(always)]
pub fn count(ctx: &XdpContext, slot: u32, verdict: Verdict) {
    if let Some(counter) = STATS.get_ptr_mut(counter_index(slot, verdict)) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}
