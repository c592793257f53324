//! `Policy` → the `InterfaceRules` map value the XDP program walks.

use firewall_common::{InterfaceRules, MAX_RULES, Rule as KernelRule, cond};
use ipnet::Ipv4Net;

use super::{Policy, Rule};

/// Compiles one interface's policy. `slot` is the interface's counter slot. Validation has
/// already bounded the rule count to `MAX_RULES`.
pub fn interface(policy: &Policy, slot: u32) -> InterfaceRules {
    let mut compiled = InterfaceRules {
        slot,
        rule_count: policy.rules.len().min(MAX_RULES) as u32,
        default_verdict: policy.default.verdict() as u8,
        _pad: [0; 7],
        rules: [KernelRule::default(); MAX_RULES],
    };
    for (slot, rule) in compiled.rules.iter_mut().zip(&policy.rules) {
        *slot = self::rule(rule);
    }
    compiled
}

fn rule(rule: &Rule) -> KernelRule {
    let (src_addr, src_mask) = addr_mask(rule.src);
    let (dst_addr, dst_mask) = addr_mask(rule.dst);
    let mut conditions = 0;
    let protocol = rule
        .protocol
        .number()
        .inspect(|_| conditions |= cond::PROTOCOL);
    let (dst_port_lo, dst_port_hi) = match &rule.dst_port {
        Some(range) => {
            conditions |= cond::DST_PORT;
            (*range.start(), *range.end())
        }
        None => (0, u16::MAX),
    };
    KernelRule {
        src_addr,
        src_mask,
        dst_addr,
        dst_mask,
        dst_port_lo,
        dst_port_hi,
        protocol: protocol.unwrap_or(0),
        conditions,
        verdict: rule.action.verdict() as u8,
        _pad: 0,
    }
}

/// Network and mask as the packet carries them (network byte order, read as a native u32);
/// no network means a zero mask, which matches every address.
fn addr_mask(net: Option<Ipv4Net>) -> (u32, u32) {
    net.map_or((0, 0), |net| {
        (
            u32::from_ne_bytes(net.network().octets()),
            u32::from_ne_bytes(net.netmask().octets()),
        )
    })
}

#[cfg(test)]
mod tests {
    use firewall_common::Verdict;

    use super::*;
    use crate::rules::{Action, Protocol};

    #[test]
    fn compiles_conditions_masks_and_verdicts() {
        let policy = Policy {
            default: Action::Drop,
            rules: vec![Rule {
                id: "web".into(),
                action: Action::Pass,
                protocol: Protocol::Tcp,
                src: Some("198.18.0.0/15".parse().unwrap()),
                dst: None,
                dst_port: Some(80..=443),
            }],
        };
        let compiled = interface(&policy, 3);
        assert_eq!(compiled.slot, 3);
        assert_eq!(compiled.rule_count, 1);
        assert_eq!(compiled.default_verdict, Verdict::Drop as u8);
        let rule = compiled.rules[0];
        assert_eq!(rule.src_addr.to_ne_bytes(), [198, 18, 0, 0]);
        assert_eq!(rule.src_mask.to_ne_bytes(), [255, 254, 0, 0]);
        assert_eq!((rule.dst_addr, rule.dst_mask), (0, 0));
        assert_eq!(rule.conditions, cond::PROTOCOL | cond::DST_PORT);
        assert_eq!(
            (rule.protocol, rule.dst_port_lo, rule.dst_port_hi),
            (6, 80, 443)
        );
        assert_eq!(rule.verdict, Verdict::Pass as u8);
    }

    #[test]
    fn any_protocol_without_ports_has_no_conditions() {
        let policy = Policy {
            default: Action::Pass,
            rules: vec![Rule {
                id: "all".into(),
                action: Action::Drop,
                protocol: Protocol::Any,
                src: None,
                dst: None,
                dst_port: None,
            }],
        };
        assert_eq!(interface(&policy, 0).rules[0].conditions, 0);
    }
}
