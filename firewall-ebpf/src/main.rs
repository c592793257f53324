//! The smf-firewall programs: XDP for packets arriving on an interface, TC egress for packets
//! leaving it (`direction: out` rules), one packet path for both. It reads top to bottom:
//! find the interface's live rule set for the direction, parse the headers, let a tracked flow
//! pass, else take the first matching rule's verdict (or the default) and open a flow for a
//! `state: true` pass, count the packet once, report it if its rule logs drops, and to a
//! live trace if one is on and wants it.
#![no_std]
#![no_main]

mod classify;
mod conntrack;
mod context;
mod drop_log;
mod license;
mod limit;
mod meter;
mod parse;
mod trace;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use firewall_common::{FrameClass, Policy, Verdict, direction, entry_flag};

use crate::context::Wire;

#[xdp]
pub fn smf_firewall(ctx: XdpContext) -> u32 {
    match firewall(&ctx, direction::IN) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// Never attached: run by the loader with BPF_PROG_TEST_RUN to read the kernel's clocks
/// (`conntrack::clocks`).
#[xdp]
pub fn smf_clock(ctx: XdpContext) -> u32 {
    conntrack::clocks(&ctx)
}

/// Headers the egress program makes readable before parsing (a locally built packet may keep
/// them outside the linear part of its buffer).
const EGRESS_HEADERS: u32 = 256;

#[classifier]
pub fn smf_firewall_egress(ctx: TcContext) -> i32 {
    let _ = ctx.pull_data(ctx.len().min(EGRESS_HEADERS));
    match firewall(&ctx, direction::OUT) {
        // TCX_NEXT: later programs on the interface still see the packet.
        Verdict::Pass => TC_ACT_UNSPEC,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// The packet path, in one direction.
#[inline(always)]
fn firewall<C: Wire>(ctx: &C, direction: u32) -> Verdict {
    // An interface the daemon did not configure is none of our business.
    let Some(slot) = classify::slot(ctx, direction) else {
        return Verdict::Pass;
    };
    let Some(policy) = classify::policy(slot) else {
        return Verdict::Pass;
    };
    let mut packet = MaybeUninit::uninit();
    let frame = parse::headers(ctx, &mut packet);
    let judged = judge(ctx, policy, &frame);
    // Unlicensed: still metered (Art. 24), never filtered; see license.rs.
    let (verdict, rule) = license::applied(judged.verdict, judged.rule);
    meter::count(ctx, slot, verdict, rule, judged.class);
    if judged.tracked {
        conntrack::count_hit(slot);
    }
    if let Ok(parse::Frame::Ip(packet)) = &frame {
        drop_log::report(ctx, slot, verdict, rule, judged.flags, packet);
    }
    let outcome = trace::Outcome {
        tracked: judged.tracked,
        class: judged.class,
        decided: judged.verdict,
        applied: verdict,
    };
    trace::report(ctx, slot, &frame, judged.rule, outcome);
    verdict
}

/// What `judge` decided for a packet.
struct Judged {
    verdict: Verdict,
    /// The counter slot of the rule that decided, or `meter::NO_RULE`.
    rule: u32,
    /// That rule's `entry_flag`s (0 without one).
    flags: u8,
    /// The frame class to count, or `meter::IP`.
    class: u32,
    /// Passed by a tracked flow, before the rules.
    tracked: bool,
}

#[inline(always)]
fn judge<C: Wire>(
    ctx: &C,
    policy: &Policy,
    frame: &Result<parse::Frame, parse::Malformed>,
) -> Judged {
    let (verdict, class) = match frame {
        Ok(parse::Frame::Ip(packet)) => return judge_ip(ctx, policy, packet),
        Ok(parse::Frame::NonIp) => (
            Verdict::from_u8(policy.non_ip_verdict),
            FrameClass::NonIp as u32,
        ),
        // A firewall does not forward what it cannot read.
        Err(parse::Malformed) => (Verdict::Drop, FrameClass::Malformed as u32),
    };
    Judged {
        verdict,
        rule: meter::NO_RULE,
        flags: 0,
        class,
        tracked: false,
    }
}

/// An IP packet: its tracked flow, else the rules (and a new flow if a `state: true` rule
/// passes it).
#[inline(always)]
fn judge_ip<C: Wire>(ctx: &C, policy: &Policy, packet: &parse::Packet) -> Judged {
    let settings = conntrack::settings();
    let mut replaces_expired = false;
    if let Some(settings) = settings {
        let track = if conntrack::is_icmp_error(packet) {
            conntrack::related(ctx, packet, settings)
        } else {
            conntrack::track(packet, settings)
        };
        match track {
            conntrack::Track::Hit => {
                return Judged {
                    verdict: Verdict::Pass,
                    rule: meter::NO_RULE,
                    flags: 0,
                    class: meter::IP,
                    tracked: true,
                };
            }
            conntrack::Track::Miss {
                replaces_expired: expired,
            } => replaces_expired = expired,
        }
    }
    let (verdict, rule, flags) = match classify::deciding(policy, packet, ctx.len()) {
        Some(entry) => {
            let verdict = Verdict::from_u8(entry.verdict);
            if verdict == Verdict::Pass
                && entry.flags & entry_flag::STATE != 0
                && let Some(settings) = settings
            {
                conntrack::open(packet, replaces_expired, settings);
            }
            (verdict, entry.counter, entry.flags)
        }
        None => (Verdict::from_u8(policy.default_verdict), meter::NO_RULE, 0),
    };
    Judged {
        verdict,
        rule,
        flags,
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
