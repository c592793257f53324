//! Classification: the interface's ordered entries, first match wins, else the default.
//! A linear walk over at most `MAX_ENTRIES` entries.

use aya_ebpf::{bindings::BPF_F_NO_PREALLOC, macros::map, maps::HashMap, programs::XdpContext};
use firewall_common::{Entry, InterfaceRules, MAX_ENTRIES, MAX_INTERFACES, Verdict, cond};

use crate::parse::{L4, Packet};

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
    for i in 0..MAX_ENTRIES {
        if i as u32 >= rules.entry_count {
            break;
        }
        let entry = &rules.entries[i];
        if matches(entry, packet) {
            return Verdict::from_u8(entry.verdict);
        }
    }
    Verdict::from_u8(rules.default_verdict)
}

#[inline(always)]
fn has(entry: &Entry, condition: u16) -> bool {
    entry.conditions & condition != 0
}

#[inline(always)]
fn in_net(addr: &[u32; 4], net: &[u32; 4], mask: &[u32; 4]) -> bool {
    addr[0] & mask[0] == net[0]
        && addr[1] & mask[1] == net[1]
        && addr[2] & mask[2] == net[2]
        && addr[3] & mask[3] == net[3]
}

#[inline(always)]
fn matches(entry: &Entry, packet: &Packet) -> bool {
    if has(entry, cond::VLAN) && entry.vlan != packet.vlan
        || has(entry, cond::FAMILY) && entry.family != packet.family
        || has(entry, cond::PROTOCOL) && entry.protocol != packet.protocol
        || has(entry, cond::SRC) && !in_net(&packet.src, &entry.src_addr, &entry.src_mask)
        || has(entry, cond::DST) && !in_net(&packet.dst, &entry.dst_addr, &entry.dst_mask)
    {
        return false;
    }
    let ports = packet.l4 == L4::Ports;
    if has(entry, cond::SRC_PORT)
        && !(ports && entry.src_port_lo <= packet.a && packet.a <= entry.src_port_hi)
        || has(entry, cond::DST_PORT)
            && !(ports && entry.dst_port_lo <= packet.b && packet.b <= entry.dst_port_hi)
    {
        return false;
    }
    let icmp = packet.l4 == L4::Icmp;
    !(has(entry, cond::ICMP_TYPE) && !(icmp && u16::from(entry.icmp_type) == packet.a)
        || has(entry, cond::ICMP_CODE) && !(icmp && u16::from(entry.icmp_code) == packet.b))
}
