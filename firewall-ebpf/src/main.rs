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
use firewall_common::{Policy, Verdict};

#[xdp]
pub fn smf_firewall(ctx: XdpContext) -> u32 {
    // An interface the daemon did not configure is none of our business.
    let Some(slot) = classify::slot(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(policy) = classify::policy(slot) else {
        return xdp_action::XDP_PASS;
    };
    let (verdict, rule) = judge(&ctx, policy);
    // Unlicensed: still metered (Art. 24), never filtered; see license.rs.
    let (verdict, rule) = license::applied(verdict, rule);
    meter::count(&ctx, slot, verdict, rule);
    match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// The verdict and, when a rule decided, that rule's counter slot (else `meter::NO_RULE`: an
/// `Option` here would have the verifier reject its undefined payload).
#[inline(always)]
fn judge(ctx: &XdpContext, policy: &Policy) -> (Verdict, u32) {
    match parse::headers(ctx) {
        Ok(parse::Frame::NonIp) => (Verdict::from_u8(policy.non_ip_verdict), meter::NO_RULE),
        Ok(parse::Frame::Ip(packet)) => match classify::first_match(policy, &packet) {
            Some(entry) => (Verdict::from_u8(entry.verdict), entry.counter),
            None => (Verdict::from_u8(policy.default_verdict), meter::NO_RULE),
        },
        // A firewall does not forward what it cannot read.
        Err(parse::Malformed) => (Verdict::Drop, meter::NO_RULE),
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
