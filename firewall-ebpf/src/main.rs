//! The smf-firewall XDP program. The packet path reads top to bottom: parse the headers, find
//! the interface's rules, take the first matching rule's verdict, count the packet once.
#![no_std]
#![no_main]

mod classify;
mod license;
mod meter;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use firewall_common::{InterfaceRules, Verdict};

#[xdp]
pub fn smf_firewall(ctx: XdpContext) -> u32 {
    // An interface the daemon did not configure is none of our business.
    let Some(rules) = classify::ruleset(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // Unlicensed: still metered (Art. 24), never filtered; see license.rs.
    let verdict = license::applied(judge(&ctx, rules));
    meter::count(&ctx, rules.slot, verdict);
    match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

fn judge(ctx: &XdpContext, rules: &InterfaceRules) -> Verdict {
    match parse::headers(ctx) {
        Ok(parse::Frame::NonIp) => Verdict::Pass,
        Ok(parse::Frame::Ipv4(packet)) => classify::first_match(rules, &packet),
        // A firewall does not forward what it cannot read.
        Err(parse::Malformed) => Verdict::Drop,
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
