//! `Policy` → the `InterfaceRules` map value that the XDP program walks.
//!
//! Each rule becomes one kernel entry per combination of its list elements (source network ×
//! destination network × source ports × destination ports), in rule order, so the first
//! matching entry belongs to the first matching rule. An entry with an address condition
//! always carries that address's family.

use firewall_common::{Entry, InterfaceRules, MAX_ENTRIES, cond, family};
use ipnet::IpNet;

use super::{Family, Policy, Ports, Rule};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the rules need {0} dataplane entries (one per combination of list elements); this dataplane holds {MAX_ENTRIES} per interface"
    )]
    TooManyEntries(usize),
}

/// Compiles one interface's policy; `slot` is the interface's counter slot.
pub fn interface(policy: &Policy, slot: u32) -> Result<InterfaceRules, CompileError> {
    let entries: Vec<Entry> = policy
        .rules
        .iter()
        .enumerate()
        .flat_map(|(index, rule)| entries(rule, index))
        .collect();
    if entries.len() > MAX_ENTRIES {
        return Err(CompileError::TooManyEntries(entries.len()));
    }
    let mut compiled = InterfaceRules {
        slot,
        entry_count: entries.len() as u32,
        default_verdict: policy.default.verdict() as u8,
        non_ip_verdict: policy.non_ip.verdict() as u8,
        _pad: [0; 6],
        entries: [Entry::default(); MAX_ENTRIES],
    };
    compiled.entries[..entries.len()].copy_from_slice(&entries);
    Ok(compiled)
}

/// The entries of one rule: the cross product of its lists (an absent list is one "any").
fn entries(rule: &Rule, index: usize) -> Vec<Entry> {
    let nets = |list: &Option<Vec<IpNet>>| {
        list.as_ref()
            .map_or(vec![None], |l| l.iter().copied().map(Some).collect())
    };
    let ports = |list: &Option<Vec<Ports>>| {
        list.as_ref()
            .map_or(vec![None], |l| l.iter().cloned().map(Some).collect())
    };
    let mut out = Vec::new();
    for src in nets(&rule.src) {
        for dst in nets(&rule.dst) {
            // A mixed-family list pairs each source with the destinations of its own family.
            if let (Some(s), Some(d)) = (src, dst)
                && s.addr().is_ipv4() != d.addr().is_ipv4()
            {
                continue;
            }
            for src_port in ports(&rule.src_port) {
                for dst_port in ports(&rule.dst_port) {
                    out.push(entry(
                        rule,
                        index,
                        src,
                        dst,
                        src_port.as_ref(),
                        dst_port.as_ref(),
                    ));
                }
            }
        }
    }
    out
}

fn entry(
    rule: &Rule,
    index: usize,
    src: Option<IpNet>,
    dst: Option<IpNet>,
    src_port: Option<&Ports>,
    dst_port: Option<&Ports>,
) -> Entry {
    let mut e = Entry {
        rule: u16::try_from(index).unwrap_or(u16::MAX),
        verdict: rule.action.verdict() as u8,
        ..Entry::default()
    };
    let address_family = src.or(dst).map(|net| {
        if net.addr().is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    });
    if let Some(f) = rule.family.or(address_family) {
        e.conditions |= cond::FAMILY;
        e.family = match f {
            Family::Ipv4 => family::IPV4,
            Family::Ipv6 => family::IPV6,
        };
    }
    if let Some(protocol) = rule.protocol {
        e.conditions |= cond::PROTOCOL;
        e.protocol = protocol;
    }
    if let Some(net) = src {
        e.conditions |= cond::SRC;
        (e.src_addr, e.src_mask) = words(net);
    }
    if let Some(net) = dst {
        e.conditions |= cond::DST;
        (e.dst_addr, e.dst_mask) = words(net);
    }
    if let Some(range) = src_port {
        e.conditions |= cond::SRC_PORT;
        (e.src_port_lo, e.src_port_hi) = (*range.start(), *range.end());
    }
    if let Some(range) = dst_port {
        e.conditions |= cond::DST_PORT;
        (e.dst_port_lo, e.dst_port_hi) = (*range.start(), *range.end());
    }
    if let Some(icmp_type) = rule.icmp_type {
        e.conditions |= cond::ICMP_TYPE;
        e.icmp_type = icmp_type;
    }
    if let Some(icmp_code) = rule.icmp_code {
        e.conditions |= cond::ICMP_CODE;
        e.icmp_code = icmp_code;
    }
    if let Some(vlan) = rule.vlan {
        e.conditions |= cond::VLAN;
        e.vlan = vlan;
    }
    e
}

/// Network and mask as the packet carries them (network byte order, read as native u32s);
/// IPv4 uses the first word.
fn words(net: IpNet) -> ([u32; 4], [u32; 4]) {
    let to_words = |bytes: &[u8]| {
        let mut out = [0u32; 4];
        for (word, chunk) in out.iter_mut().zip(bytes.chunks(4)) {
            *word = u32::from_ne_bytes(chunk.try_into().expect("4-byte chunks"));
        }
        out
    };
    match net {
        IpNet::V4(v4) => (
            to_words(&v4.network().octets()),
            to_words(&v4.netmask().octets()),
        ),
        IpNet::V6(v6) => (
            to_words(&v6.network().octets()),
            to_words(&v6.netmask().octets()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use firewall_common::Verdict;

    use super::*;
    use crate::rules::RuleSet;

    fn policy(rules: &str) -> Policy {
        let text = format!(
            "version: 1\ninterfaces:\n  lan0:\n    default: drop\n    non_ip: drop\n    rules:\n{rules}"
        );
        RuleSet::parse(Path::new("t.yaml"), &text)
            .unwrap()
            .interfaces["lan0"]
            .clone()
    }

    #[test]
    fn compiles_conditions_masks_and_verdicts() {
        let compiled = interface(
            &policy("      - { id: web, action: pass, protocol: tcp, src: 198.18.0.0/15, dst_port: \"80-443\" }\n"),
            3,
        )
        .unwrap();
        assert_eq!((compiled.slot, compiled.entry_count), (3, 1));
        assert_eq!(compiled.default_verdict, Verdict::Drop as u8);
        assert_eq!(compiled.non_ip_verdict, Verdict::Drop as u8);
        let e = compiled.entries[0];
        assert_eq!(e.src_addr[0].to_ne_bytes(), [198, 18, 0, 0]);
        assert_eq!(e.src_mask[0].to_ne_bytes(), [255, 254, 0, 0]);
        assert_eq!(&e.src_mask[1..], &[0, 0, 0]);
        assert_eq!(
            e.conditions,
            cond::FAMILY | cond::PROTOCOL | cond::SRC | cond::DST_PORT
        );
        assert_eq!(
            (e.family, e.protocol, e.dst_port_lo, e.dst_port_hi),
            (family::IPV4, 6, 80, 443)
        );
        assert_eq!((e.rule, e.verdict), (0, Verdict::Pass as u8));
    }

    #[test]
    fn lists_expand_in_order_and_pair_families() {
        let compiled = interface(
            &policy(
                "      - { id: a, action: drop, protocol: udp }\n      \
                 - { id: b, action: pass, protocol: tcp, src: [198.18.0.0/24, \"2001:2::/48\"], dst: [198.19.0.1, \"2001:2:1::1\"], dst_port: [22, 80] }\n",
            ),
            0,
        )
        .unwrap();
        // a: 1 entry; b: (v4 src × v4 dst + v6 src × v6 dst) × 2 ports = 4 entries.
        assert_eq!(compiled.entry_count, 5);
        let entries = &compiled.entries[..5];
        assert_eq!(
            entries.iter().map(|e| e.rule).collect::<Vec<_>>(),
            [0, 1, 1, 1, 1]
        );
        assert_eq!(
            entries[0].conditions,
            cond::PROTOCOL,
            "no family without addresses"
        );
        assert_eq!(entries[3].family, family::IPV6);
        let mask_48 = [u32::MAX, u32::from_ne_bytes([0xff, 0xff, 0, 0]), 0, 0];
        assert_eq!(entries[3].src_mask, mask_48, "2001:2::/48");
    }

    #[test]
    fn too_many_combinations_are_refused() {
        let ports: Vec<String> = (1..=(MAX_ENTRIES + 1)).map(|p| p.to_string()).collect();
        let rule = format!(
            "      - {{ id: a, action: drop, protocol: tcp, dst_port: [{}] }}\n",
            ports.join(", ")
        );
        assert_eq!(
            interface(&policy(&rule), 0).unwrap_err(),
            CompileError::TooManyEntries(MAX_ENTRIES + 1)
        );
    }
}
