//! The smf-firewall XDP program. The packet path reads top to bottom: find the interface's
//! live rule set, parse the headers, take the first matching rule's verdict (or the
//! default), count the packet once.
#![no_std]
#![no_main]

mod classify;
mod license;
mod meter;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use firewall_common::{FrameClass, Policy, Verdict};

#[xdp]
pub fn smf_firewall(ctx: XdpContext) -> u32 {
    // An interface the daemon did not configure is none of our business.
    let Some(slot) = classify::slot(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(policy) = classify::policy(slot) else {
        return xdp_action::XDP_PASS;
    };
    let (verdict, rule, class) = judge(&ctx, policy);
    // Unlicensed: still metered (Art. 24), never filtered; see license.rs.
    let (verdict, rule) = license::applied(verdict, rule);
    meter::count(&ctx, slot, verdict, rule, class);
    match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// The verdict, the counter slot of the rule that decided (or `meter::NO_RULE`), and the frame
/// class to count (or `meter::IP`).
#[inline(always)]
fn judge(ctx: &XdpContext, policy: &Policy) -> (Verdict, u32, u32) {
    match parse::headers(ctx) {
        Ok(parse::Frame::NonIp) => (
            Verdict::from_u8(policy.non_ip_verdict),
            meter::NO_RULE,
            FrameClass::NonIp as u32,
        ),
        Ok(parse::Frame::Ip(packet)) => match classify::first_match(policy, &packet) {
            Some(entry) => (Verdict::from_u8(entry.verdict), entry.counter, meter::IP),
            None => (
                Verdict::from_u8(policy.default_verdict),
                meter::NO_RULE,
                meter::IP,
            ),
        },
        // A firewall does not forward what it cannot read.
        Err(parse::Malformed) => (Verdict::Drop, meter::NO_RULE, FrameClass::Malformed as u32),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
