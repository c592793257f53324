//! Licensing: whether this adapter may filter at all. The daemon writes one `u32` after each
//! licence decision; an unlicensed adapter passes every packet but still meters it.

use aya_ebpf::{macros::map, maps::Array};
use firewall_common::{Verdict, enforce};

/// `enforce::RULES` or `enforce::PASS_ALL`; zeroed (= pass all) until the daemon decides.
#[map]
static ENFORCE: Array<u32> = Array::with_max_entries(1, 0);

/// The verdict to apply and count: the rules' one when licensed, else `Pass`.
#[inline(always)]
pub fn applied(verdict: Verdict) -> Verdict {
    match ENFORCE.get(enforce::INDEX) {
        Some(&enforce::RULES) => verdict,
        _ => Verdict::Pass,
    }
}
