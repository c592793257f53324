//! The smf-firewall XDP program. The packet path reads top to bottom: find the interface's
//! live rule set, parse the headers, let a tracked flow pass, else take the first matching
//! rule's verdict (or the default) and open a flow for a `state: true` pass, count the packet
//! once.
#![no_std]
#![no_main]

mod classify;
mod conntrack;
mod license;
mod meter;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use firewall_common::{FrameClass, Policy, Verdict, entry_flag};

#[xdp]
pub fn smf_firewall(ctx: XdpContext) -> u32 {
    // An interface the daemon did not configure is none of our business.
    let Some(slot) = classify::slot(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(policy) = classify::policy(slot) else {
        return xdp_action::XDP_PASS;
    };
    let judged = judge(&ctx, policy);
    // Unlicensed: still metered (Art. 24), never filtered; see license.rs.
    let (verdict, rule) = license::applied(judged.verdict, judged.rule);
    meter::count(&ctx, slot, verdict, rule, judged.class);
    if judged.tracked {
        conntrack::count_hit(slot);
    }
    match verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// What `judge` decided for a packet.
struct Judged {
    verdict: Verdict,
    /// The counter slot of the rule that decided, or `meter::NO_RULE`.
    rule: u32,
    /// The frame class to count, or `meter::IP`.
    class: u32,
    /// Passed by a tracked flow, before the rules.
    tracked: bool,
}

#[inline(always)]
fn judge(ctx: &XdpContext, policy: &Policy) -> Judged {
    let (verdict, rule, class) = match parse::headers(ctx) {
        Ok(parse::Frame::Ip(packet)) => return judge_ip(ctx, policy, &packet),
        Ok(parse::Frame::NonIp) => (
            Verdict::from_u8(policy.non_ip_verdict),
            meter::NO_RULE,
            FrameClass::NonIp as u32,
        ),
        // A firewall does not forward what it cannot read.
        Err(parse::Malformed) => (Verdict::Drop, meter::NO_RULE, FrameClass::Malformed as u32),
    };
    Judged {
        verdict,
        rule,
        class,
        tracked: false,
    }
}

/// An IP packet: its tracked flow, else the rules (and a new flow if a `state: true` rule
/// passes it).
#[inline(always)]
fn judge_ip(ctx: &XdpContext, policy: &Policy, packet: &parse::Packet) -> Judged {
    let now = conntrack::now();
    let quoted = if conntrack::is_icmp_error(packet) {
        parse::quoted(ctx, packet)
    } else {
        None
    };
    let replaces_expired = match conntrack::track(packet, quoted, now) {
        conntrack::Track::Hit => {
            return Judged {
                verdict: Verdict::Pass,
                rule: meter::NO_RULE,
                class: meter::IP,
                tracked: true,
            };
        }
        conntrack::Track::Miss { replaces_expired } => replaces_expired,
    };
    let (verdict, rule) = match classify::first_match(policy, packet) {
        Some(entry) => {
            let verdict = Verdict::from_u8(entry.verdict);
            if verdict == Verdict::Pass && entry.flags & entry_flag::STATE != 0 {
                conntrack::open(packet, replaces_expired, now);
            }
            (verdict, entry.counter)
        }
        None => (Verdict::from_u8(policy.default_verdict), meter::NO_RULE),
    };
    Judged {
        verdict,
        rule,
        class: meter::IP,
        tracked: false,
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
