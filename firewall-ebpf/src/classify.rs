//! Classification: the interface's ordered rules, first match wins, else the default.
//! A linear walk over at most `MAX_RULES` rules.

use aya_ebpf::{bindings::BPF_F_NO_PREALLOC, macros::map, maps::HashMap, programs::XdpContext};
use firewall_common::{InterfaceRules, MAX_INTERFACES, MAX_RULES, Rule, Verdict, cond};

use crate::parse::Packet;

/// ifindex -> that interface's rules. Not preallocated, so an update swaps the whole value
/// under RCU and a packet in flight keeps reading the old one.
#[map]
static INTERFACES: HashMap<u32, InterfaceRules> =
    HashMap::with_max_entries(MAX_INTERFACES, BPF_F_NO_PREALLOC);

#[inline(always)]
pub fn ruleset(ctx: &XdpContext) -> Option<&'static InterfaceRules> {
    // SAFETY: the value is only read, and stays valid for the program's run (RCU).
    unsafe { INTERFACES.get(ctx.ingress_ifindex() as u32) }
}

#[inline(always)]
pub fn first_match(rules: &InterfaceRules, packet: &Packet) -> Verdict {
    for i in 0..MAX_RULES {
        if i as u32 >= rules.rule_count {
            break;
        }
        let rule = &rules.rules[i];
        if matches(rule, packet) {
            return Verdict::from_u8(rule.verdict);
        }
    }
    Verdict::from_u8(rules.default_verdict)
}

#[inline(always)]
fn matches(rule: &Rule, packet: &Packet) -> bool {
    if packet.src_addr & rule.src_mask != rule.src_addr
        || packet.dst_addr & rule.dst_mask != rule.dst_addr
    {
        return false;
    }
    if rule.conditions & cond::PROTOCOL != 0 && rule.protocol != packet.protocol {
        return false;
    }
    if rule.conditions & cond::DST_PORT != 0 {
        return match packet.dst_port {
            Some(port) => rule.dst_port_lo <= port && port <= rule.dst_port_hi,
            None => false,
        };
    }
    true
}
