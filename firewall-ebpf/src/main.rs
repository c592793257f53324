//! The smf-firewall XDP program. The packet path reads top to bottom: find the interface's
//! live rule set, parse the headers, take the first matching rule's verdict (or the
//! default), count the packet once, report it if its rule logs drops.
#![no_std]
#![no_main]

mod classify;
mod droplog;
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
    let frame = parse::headers(&ctx);
    let (verdict, rule, flags, class) = judge(policy, &frame);
    // Unlicensed: still metered (Art. 24), never filtered; see license.rs.
    let (verdict, rule) = license::applied(verdict, rule);
    meter::count(&ctx, slot, verdict, rule, class);
    if let Ok(parse::Frame::Ip(packet)) = &frame {
        droplog::report(&ctx, slot, verdict, rule, flags, packet);
    }
    match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// The verdict, the counter slot of the rule that decided (or `meter::NO_RULE`), that rule's
/// `entry_flag`s (0 without one), and the frame class to count (or `meter::IP`).
#[inline(always)]
fn judge(
    policy: &Policy,
    frame: &Result<parse::Frame, parse::Malformed>,
) -> (Verdict, u32, u8, u32) {
    match frame {
        Ok(parse::Frame::NonIp) => (
            Verdict::from_u8(policy.non_ip_verdict),
            meter::NO_RULE,
            0,
            FrameClass::NonIp as u32,
        ),
        Ok(parse::Frame::Ip(packet)) => match classify::first_match(policy, packet) {
            Some(entry) => (
                Verdict::from_u8(entry.verdict),
                entry.counter,
                entry.flags,
                meter::IP,
            ),
            None => (
                Verdict::from_u8(policy.default_verdict),
                meter::NO_RULE,
                0,
                meter::IP,
            ),
        },
        // A firewall does not forward what it cannot read.
        Err(parse::Malformed) => (
            Verdict::Drop,
            meter::NO_RULE,
            0,
            FrameClass::Malformed as u32,
        ),
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
