//! A generation's leaf lists (entry indices in rule order): each without the entries that can
//! never decide, and each stored once (trees and exact tables often reach the same list).

use std::collections::HashMap;

use firewall_common::{Entry, cond, entry_flag};

/// Where `list` starts in `leaves`, appending it unless an equal list is already there.
pub fn store(leaves: &mut Vec<u32>, shared: &mut HashMap<Vec<u32>, u32>, list: Vec<u32>) -> u32 {
    *shared.entry(list).or_insert_with_key(|list| {
        let at = leaves.len() as u32;
        leaves.extend_from_slice(list);
        at
    })
}

/// Lists longer than this keep their shadowed entries: the check is quadratic, and such
/// lists are rare (the trees cut down to 8).
const MAX_PRUNED: usize = 1024;

/// `list` (indices into `entries`, in rule order) without the entries an earlier one of it
/// matches whenever they match: those are never the first match, so the kernel need not
/// check them. Generated and grown rule sets repeat a rule's match under other ids often
/// (100k generated rules: a leaf of 11 entries holds 2 distinct matches).
pub fn unshadowed(entries: &[Entry], list: Vec<u32>) -> Vec<u32> {
    if list.len() > MAX_PRUNED {
        return list;
    }
    let mut kept: Vec<u32> = Vec::with_capacity(list.len());
    for m in list {
        let later = &entries[m as usize];
        if !kept.iter().any(|&k| shadows(&entries[k as usize], later)) {
            kept.push(m);
        }
    }
    kept
}

/// The conditions `shadows` knows how to compare; an entry with any other matches no
/// superset it can prove.
const COMPARED: u16 = cond::FAMILY
    | cond::PROTOCOL
    | cond::SRC
    | cond::DST
    | cond::SRC_PORT
    | cond::DST_PORT
    | cond::ICMP_TYPE
    | cond::ICMP_CODE
    | cond::VLAN
    | cond::TCP_FLAGS;

/// Does `earlier` match every packet `later` matches, and decide it? Not if it is a limit
/// rule's: a packet under the limit goes on past it, to `later`.
fn shadows(earlier: &Entry, later: &Entry) -> bool {
    let (e, m) = (earlier, later);
    if e.conditions & !COMPARED != 0 || e.flags & entry_flag::LIMIT != 0 {
        return false;
    }
    // Each condition of `earlier` must also be one of `later`'s, at most as strict.
    if e.conditions & !m.conditions != 0 {
        return false;
    }
    let has = |c: u16| e.conditions & c != 0;
    let within = |lo: u16, hi: u16, inner_lo: u16, inner_hi: u16| lo <= inner_lo && inner_hi <= hi;
    (!has(cond::FAMILY) || e.family == m.family)
        && (!has(cond::PROTOCOL) || e.protocol == m.protocol)
        && (!has(cond::VLAN) || e.vlan == m.vlan)
        && (!has(cond::SRC) || contains(&e.src_addr, &e.src_mask, &m.src_addr, &m.src_mask))
        && (!has(cond::DST) || contains(&e.dst_addr, &e.dst_mask, &m.dst_addr, &m.dst_mask))
        && (!has(cond::SRC_PORT)
            || within(e.src_port_lo, e.src_port_hi, m.src_port_lo, m.src_port_hi))
        && (!has(cond::DST_PORT)
            || within(e.dst_port_lo, e.dst_port_hi, m.dst_port_lo, m.dst_port_hi))
        && (!has(cond::ICMP_TYPE) || e.icmp_type == m.icmp_type)
        && (!has(cond::ICMP_CODE) || e.icmp_code == m.icmp_code)
        && (!has(cond::TCP_FLAGS)
            || e.tcp_flags_mask & !m.tcp_flags_mask == 0
                && m.tcp_flags_value & e.tcp_flags_mask == e.tcp_flags_value)
}

/// Is the network `inner`/`inner_mask` inside `net`/`mask`?
fn contains(net: &[u32; 4], mask: &[u32; 4], inner: &[u32; 4], inner_mask: &[u32; 4]) -> bool {
    (0..4).all(|i| mask[i] & !inner_mask[i] == 0 && inner[i] & mask[i] == net[i])
}

#[cfg(test)]
mod tests {
    use firewall_common::family;

    use super::*;

    /// IPv4 TCP to `dst`/`prefix`, port `port_lo..=port_hi`.
    fn to(dst: [u8; 4], prefix: u32, (port_lo, port_hi): (u16, u16)) -> Entry {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Entry {
            dst_addr: [u32::from_be_bytes(dst).to_be() & mask.to_be(), 0, 0, 0],
            dst_mask: [mask.to_be(), 0, 0, 0],
            dst_port_lo: port_lo,
            dst_port_hi: port_hi,
            family: family::IPV4,
            protocol: 6,
            conditions: cond::FAMILY | cond::PROTOCOL | cond::DST | cond::DST_PORT,
            ..Entry::default()
        }
    }

    #[test]
    fn a_repeated_or_narrower_later_match_is_dropped_and_the_rest_kept_in_order() {
        let entries = [
            to([198, 18, 0, 0], 16, (22, 22)),
            to([198, 19, 0, 0], 16, (80, 80)),
            // The first again, under another rule.
            to([198, 18, 0, 0], 16, (22, 22)),
            // Inside the first: a /24 of its /16, the same port.
            to([198, 18, 7, 0], 24, (22, 22)),
            // Wider than the first (all ports): the first does not cover it.
            to([198, 18, 0, 0], 16, (0, 65535)),
        ];
        assert_eq!(unshadowed(&entries, vec![0, 1, 2, 3, 4]), vec![0, 1, 4]);
        // Order decides: a narrow entry first shadows nothing that is wider.
        assert_eq!(unshadowed(&entries, vec![3, 0]), vec![3, 0]);
    }

    #[test]
    fn a_limit_rule_shadows_nothing_but_may_be_shadowed() {
        let mut limited = to([198, 18, 0, 0], 16, (22, 22));
        limited.conditions |= cond::LIMIT;
        limited.flags = entry_flag::LIMIT;
        let plain = to([198, 18, 0, 0], 16, (22, 22));
        let entries = [limited, plain, limited];
        assert_eq!(unshadowed(&entries, vec![0, 1, 2]), vec![0, 1]);
    }

    #[test]
    fn a_condition_the_later_entry_lacks_or_sets_otherwise_keeps_it() {
        let mut syn = to([198, 18, 0, 0], 16, (22, 22));
        syn.conditions |= cond::TCP_FLAGS;
        (syn.tcp_flags_mask, syn.tcp_flags_value) = (0x12, 0x02); // SYN without ACK
        let mut syn_fin = syn;
        (syn_fin.tcp_flags_mask, syn_fin.tcp_flags_value) = (0x13, 0x03); // and FIN
        let mut ack = syn;
        (ack.tcp_flags_mask, ack.tcp_flags_value) = (0x10, 0x10);
        let any_flags = to([198, 18, 0, 0], 16, (22, 22));
        let mut vlan = any_flags;
        vlan.conditions |= cond::VLAN;
        vlan.vlan = 7;
        let entries = [syn, syn_fin, ack, any_flags, vlan];
        // SYN-not-ACK covers SYN+FIN-not-ACK, not ACK; the flag-less entry is wider than both.
        assert_eq!(unshadowed(&entries, vec![0, 1, 2, 3]), vec![0, 2, 3]);
        // A VLAN entry is narrower than the flag-less one, never the reverse.
        assert_eq!(unshadowed(&entries, vec![4, 3]), vec![4, 3]);
        assert_eq!(unshadowed(&entries, vec![3, 4]), vec![3]);
    }
}
