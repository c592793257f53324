//! Licensing: whether this adapter may filter at all. The daemon writes one `u32` after each
//! licence decision; an unlicensed adapter passes every packet but still meters it.

use aya_ebpf::{macros::map, maps::Array};
use firewall_common::{Verdict, enforce};

use crate::meter;

/// At `enforce::INDEX`: `enforce::RULES` or `enforce::PASS_ALL`; zeroed (= pass all) until
/// the daemon decides. At `enforce::DECIDED_AT`: the daemon's own note, see there.
#[map]
static ENFORCE: Array<u32> = Array::with_max_entries(enforce::ENTRIES, 0);

/// The verdict to apply and count, and the rule counter slot to count it for: the rules'
/// when licensed; else `Pass`, decided by no rule (the rules were not applied).
#[inline(always)]
pub fn applied(verdict: Verdict, rule: u32) -> (Verdict, u32) {
    match ENFORCE.get(enforce::INDEX) {
        Some(&enforce::RULES) => (verdict, rule),
        _ => (Verdict::Pass, meter::NO_RULE),
    }
}
