//! `RawRules` → `RuleSet`: every check that keeps a mistake out of the kernel. All problems
//! are collected, so the operator sees them at once; any problem rejects the whole file.

use std::{collections::HashSet, net::Ipv4Addr, ops::RangeInclusive};

use firewall_common::MAX_RULES;
use ipnet::Ipv4Net;
use serde_saphyr::{Location, Spanned};

use super::{
    Policy, Protocol, Rule, RuleSet,
    schema::{RawPorts, RawRule, RawRules},
};
use crate::diagnostic::Diagnostic;

pub const SUPPORTED_VERSION: u32 = 1;

pub fn validate(raw: RawRules) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    if raw.version.value != SUPPORTED_VERSION {
        problems.push(Diagnostic::at(
            &raw.version.referenced,
            format!(
                "unsupported version {}: this smf-firewall reads version {SUPPORTED_VERSION}",
                raw.version.value
            ),
        ));
    }
    let mut interfaces = std::collections::BTreeMap::new();
    for (name, interface) in raw.interfaces {
        let mut ids = HashSet::new();
        let mut rules = Vec::with_capacity(interface.rules.len());
        for raw_rule in &interface.rules {
            if !ids.insert(raw_rule.id.value.clone()) {
                problems.push(Diagnostic::at(
                    &raw_rule.id.referenced,
                    format!(
                        "duplicate rule id `{}` on interface {name}",
                        raw_rule.id.value
                    ),
                ));
            }
            if let Some(rule) = rule(raw_rule, &mut problems) {
                rules.push(rule);
            }
        }
        if let Some(extra) = interface.rules.get(MAX_RULES) {
            problems.push(Diagnostic::at(
                &extra.id.referenced,
                format!(
                    "interface {name} has {} rules; this dataplane holds at most {MAX_RULES}",
                    interface.rules.len()
                ),
            ));
        }
        interfaces.insert(
            name,
            Policy {
                default: interface.default,
                rules,
            },
        );
    }
    if problems.is_empty() {
        Ok(RuleSet { interfaces })
    } else {
        Err(problems)
    }
}

/// Validates one rule; pushes its problems and returns `None` if it has any.
fn rule(raw: &RawRule, problems: &mut Vec<Diagnostic>) -> Option<Rule> {
    let before = problems.len();
    let id = &raw.id;
    if !valid_id(&id.value) {
        problems.push(Diagnostic::at(
            &id.referenced,
            format!(
                "rule id `{}` must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                id.value
            ),
        ));
    }
    let protocol = raw.protocol.as_ref().map_or(Protocol::Any, |p| p.value);
    let src = raw.src.as_ref().and_then(|s| network(s, problems));
    let dst = raw.dst.as_ref().and_then(|s| network(s, problems));
    let dst_port = raw.dst_port.as_ref().and_then(|ports| {
        if !protocol.has_ports() {
            let name = format!("{protocol:?}").to_lowercase();
            problems.push(Diagnostic::at(
                &ports.referenced,
                format!(
                    "`dst_port` needs `protocol: tcp` or `udp`; rule `{}` has protocol {name}",
                    id.value
                ),
            ));
            return None;
        }
        port_range(&ports.value, &ports.referenced, problems)
    });
    (problems.len() == before).then(|| Rule {
        id: id.value.clone(),
        action: raw.action,
        protocol,
        src,
        dst,
        dst_port,
    })
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An IPv4 address (a /32) or a CIDR whose host bits are zero.
fn network(text: &Spanned<String>, problems: &mut Vec<Diagnostic>) -> Option<Ipv4Net> {
    let value = text.value.trim();
    let parsed = if value.contains('/') {
        value.parse::<Ipv4Net>().ok()
    } else {
        value.parse::<Ipv4Addr>().ok().map(Ipv4Net::from)
    };
    let Some(net) = parsed else {
        problems.push(Diagnostic::at(
            &text.referenced,
            format!("`{value}` is not an IPv4 address or CIDR (like 198.18.0.0/15)"),
        ));
        return None;
    };
    if net.addr() != net.network() {
        problems.push(Diagnostic::at(
            &text.referenced,
            format!("`{value}` has host bits set: did you mean {}?", net.trunc()),
        ));
        return None;
    }
    Some(net)
}

/// `N` or `"lo-hi"`, ports 1 to 65535, lo ≤ hi.
fn port_range(
    raw: &RawPorts,
    at: &Location,
    problems: &mut Vec<Diagnostic>,
) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = match raw {
        RawPorts::Number(n) => (n.to_string(), n.to_string()),
        RawPorts::Range(text) => match text.split_once('-') {
            Some((lo, hi)) => (lo.trim().to_string(), hi.trim().to_string()),
            None => (text.trim().to_string(), text.trim().to_string()),
        },
    };
    let port = |text: &str| text.parse::<u16>().ok().filter(|p| *p != 0);
    match (port(&lo), port(&hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Some(lo..=hi),
        (Some(lo), Some(hi)) => {
            problems.push(Diagnostic::at(
                at,
                format!("port range {lo}-{hi} is backwards: write {hi}-{lo}"),
            ));
            None
        }
        _ => {
            let shown = if lo == hi { lo } else { format!("{lo}-{hi}") };
            problems.push(Diagnostic::at(
                at,
                format!(
                    "`{shown}` is not a port or port range (1-65535, like 22 or \"8000-8080\")"
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rules::Action;

    const HEADER: &str = "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n";

    fn parse(rules: &str) -> Result<RuleSet, crate::diagnostic::Diagnostics> {
        RuleSet::parse(Path::new("r.yaml"), &format!("{HEADER}{rules}"))
    }

    #[test]
    fn the_skeleton_example_validates() {
        let set = parse(
            "      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }\n      \
             - { id: no-ping-from-host, action: drop, protocol: icmp, src: 198.18.0.2/32 }\n",
        )
        .unwrap();
        let lan = &set.interfaces["lan0"];
        assert_eq!(lan.default, Action::Pass);
        assert_eq!(lan.rules[0].dst_port, Some(9..=9));
        assert_eq!(lan.rules[1].src, Some("198.18.0.2/32".parse().unwrap()));
        assert_eq!(lan.rules[1].protocol, Protocol::Icmp);
    }

    #[test]
    fn bare_address_is_a_host_route_and_ranges_parse() {
        let set = parse(
            "      - { id: a, action: pass, protocol: tcp, dst: 198.19.0.1, dst_port: \"8000-8080\" }\n",
        )
        .unwrap();
        let rule = &set.interfaces["lan0"].rules[0];
        assert_eq!(rule.dst, Some("198.19.0.1/32".parse().unwrap()));
        assert_eq!(rule.dst_port, Some(8000..=8080));
    }

    // Each row: one rule line, the line it is reported on, and a fragment of the message.
    #[test]
    fn each_mistake_is_reported_with_its_position() {
        let cases = [
            (
                "      - { id: a, action: drop, src: 198.18.0.1/33 }\n",
                "not an IPv4 address",
            ),
            (
                "      - { id: a, action: drop, src: 198.18.0.1/24 }\n",
                "did you mean 198.18.0.0/24",
            ),
            (
                "      - { id: a, action: drop, protocol: tcp, dst_port: 0 }\n",
                "not a port",
            ),
            (
                "      - { id: a, action: drop, protocol: tcp, dst_port: 65536 }\n",
                "not a port",
            ),
            (
                "      - { id: a, action: drop, protocol: tcp, dst_port: \"90-80\" }\n",
                "backwards",
            ),
            (
                "      - { id: a, action: drop, protocol: icmp, dst_port: 80 }\n",
                "needs `protocol: tcp`",
            ),
            (
                "      - { id: a, action: drop, dst_port: 80 }\n",
                "needs `protocol: tcp`",
            ),
            (
                "      - { id: \"a b\", action: drop }\n",
                "must be 1-64 characters",
            ),
            ("      - { id: a, action: reject }\n", "reject"),
            ("      - { id: a, action: drop, port: 80 }\n", "port"),
        ];
        for (line, fragment) in cases {
            let err = parse(line).unwrap_err();
            assert_eq!(err.items.len(), 1, "{line}: {err}");
            assert_eq!(err.items[0].line, 6, "{line}: {err}");
            assert!(err.items[0].column > 0, "{line}: {err}");
            assert!(err.to_string().contains(fragment), "{line}: {err}");
            assert!(err.to_string().starts_with("r.yaml:6:"), "{err}");
        }
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let err = parse(
            "      - { id: a, action: drop, src: 1.2.3.4/40 }\n      \
             - { id: a, action: drop, dst: 1.2.3.4/8 }\n",
        )
        .unwrap_err();
        let lines: Vec<u32> = err.items.iter().map(|d| d.line).collect();
        assert_eq!(lines, [6, 7, 7], "{err}");
    }

    #[test]
    fn version_and_default_are_required() {
        let err = RuleSet::parse(
            Path::new("r.yaml"),
            "version: 2\ninterfaces:\n  lan0: {default: pass}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unsupported version 2"), "{err}");
        let err = RuleSet::parse(Path::new("r.yaml"), "version: 1\ninterfaces:\n  lan0: {}\n")
            .unwrap_err();
        assert!(err.to_string().contains("default"), "{err}");
    }

    #[test]
    fn too_many_rules_for_the_dataplane_is_an_error() {
        let rules: String = (0..=MAX_RULES)
            .map(|i| format!("      - {{ id: r{i}, action: drop }}\n"))
            .collect();
        let err = parse(&rules).unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");
    }
}
