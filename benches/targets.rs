//! Issues 16's and 17's targets, each computed from measurements of this run (never across runs): a
//! report, not a pass/fail test.

use std::collections::BTreeMap;

use serde::Serialize;

/// How far a difference that should be 0 may go before it reads as a cost: the spread of
/// repeated BPF_PROG_TEST_RUN timings of one program here.
const NOISE_NS: f64 = 2.0;

#[derive(Serialize)]
pub struct Target {
    pub case: &'static str,
    /// The measured value (a ratio, ns or instructions, as `unit` says), when its parts ran.
    pub value: Option<f64>,
    pub unit: &'static str,
    pub target: String,
    pub met: Option<bool>,
    /// The parts it needs, when they did not all run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<&'static str>,
}

enum Goal {
    AtMost(f64),
    AtLeast(f64),
    /// A figure shown for reading the others, with no target of its own.
    Info,
}

/// One target: `value` from the measurements, compared with the goal.
fn target(
    case: &'static str,
    unit: &'static str,
    needs: &'static str,
    value: Option<(f64, Goal)>,
) -> Target {
    match value {
        Some((value, goal)) => {
            let (target, met) = match goal {
                Goal::AtMost(limit) => (format!("<= {}", show(limit, unit)), Some(value <= limit)),
                Goal::AtLeast(limit) => (format!(">= {}", show(limit, unit)), Some(value >= limit)),
                Goal::Info => ("-".to_string(), None),
            };
            Target {
                case,
                value: Some(value),
                unit,
                target,
                met,
                needs: None,
            }
        }
        None => Target {
            case,
            value: None,
            unit,
            target: String::new(),
            met: None,
            needs: Some(needs),
        },
    }
}

fn show(value: f64, unit: &str) -> String {
    match unit {
        "x" => format!("{value:.2}x"),
        "ns" => format!("{value:.1} ns"),
        _ => format!("{value:.0}"),
    }
}

pub fn evaluate(m: &BTreeMap<&'static str, f64>) -> Vec<Target> {
    let get = |k: &str| m.get(k).copied();
    let ratio = |a: &str, b: &str| Some(get(a)? / get(b)?);
    let minus = |a: &str, b: &str| Some(get(a)? - get(b)?);
    use Goal::{AtLeast, AtMost, Info};
    // Issue 16: what a limit adds to its rule, against one LRU lookup (the floor over the
    // trivial program).
    let limit_extra = |case: &str| {
        let extra = minus(case, "limit_none")?;
        Some((extra, AtMost(minus("limit_floor", "trivial_pass")?)))
    };
    // Issue 17: what the flow table adds to an untracked packet (on - off), against one
    // 16-byte flow lookup that misses.
    let untracked_extra = |on: &str, off: &str| {
        let extra = minus(on, off)?;
        Some((
            extra,
            AtMost(minus("floor_flow_alone_miss", "trivial_pass")?),
        ))
    };
    vec![
        target(
            "1,000 host rules + port rule, miss: smf / xdp-filter",
            "x",
            "peers",
            ratio("smf_hosts", "xdp_filter").map(|r| (r, AtMost(0.6))),
        ),
        target(
            "one rule over a set of 1,000 hosts + port rule: smf / xdp-filter",
            "x",
            "peers",
            ratio("smf_set", "xdp_filter").map(|r| (r, AtMost(0.6))),
        ),
        target(
            "one rule, no match, minus the trivial program",
            "ns",
            "rules",
            minus("rules_1_miss", "trivial_pass").map(|d| (d, AtMost(30.0))),
        ),
        target(
            "no state rule: flow-table cost (as the daemon sets it - off)",
            "ns",
            "tracking",
            minus("hosts_daemon", "hosts_off").map(|d| (d, AtMost(NOISE_NS))),
        ),
        target(
            "  (for reference: tracking forced on - off)",
            "ns",
            "tracking",
            minus("hosts_on", "hosts_off").map(|d| (d, Info)),
        ),
        target(
            "state: true present, untracked tcp (tracked protocol): extra over off",
            "ns",
            "tracking,floors",
            untracked_extra("stateful_untracked_tcp", "stateful_untracked_tcp_off"),
        ),
        target(
            "state: true present, untracked udp (no udp state rule): extra over off",
            "ns",
            "tracking,floors",
            untracked_extra("stateful_untracked", "stateful_untracked_off"),
        ),
        target(
            "established flow / floor (parse + 16-byte flow hit + counter)",
            "x",
            "tracking",
            ratio("established", "established_floor").map(|r| (r, AtMost(1.25))),
        ),
        target(
            "limit under / the rule without limit (per: src)",
            "x",
            "limits",
            ratio("limit_under", "limit_none").map(|r| (r, Info)),
        ),
        target(
            "limit over / the rule without limit (per: src)",
            "x",
            "limits",
            ratio("limit_over", "limit_none").map(|r| (r, Info)),
        ),
        target(
            "limit under - without limit, at most one 24-byte LRU lookup",
            "ns",
            "limits",
            limit_extra("limit_under"),
        ),
        target(
            "limit over - without limit, at most one 24-byte LRU lookup",
            "ns",
            "limits",
            limit_extra("limit_over"),
        ),
        target(
            "100k rules / 1k rules, last rule matches",
            "x",
            "rules",
            ratio("rules_100000_last", "rules_1000_last").map(|r| (r, AtMost(1.5))),
        ),
        target(
            "100k rules / 1k rules, no rule matches",
            "x",
            "rules",
            ratio("rules_100000_miss", "rules_1000_miss").map(|r| (r, AtMost(1.5))),
        ),
        target(
            "live: smf / trivial XDP_DROP",
            "x",
            "live",
            ratio("live_smf", "live_xdp_drop").map(|r| (r, AtLeast(0.75))),
        ),
        target(
            "live: smf / xdp-filter",
            "x",
            "live",
            ratio("live_smf", "live_xdp_filter").map(|r| (r, AtLeast(1.15))),
        ),
        target(
            "live: smf / nftables netdev ingress",
            "x",
            "live",
            ratio("live_smf", "live_nftables").map(|r| (r, AtLeast(2.4))),
        ),
        target(
            "verifier: instructions processed, XDP program",
            "insns",
            "peers",
            get("verified_xdp").map(|n| (n, AtMost(750_000.0))),
        ),
        target(
            "verifier: instructions processed, TC egress program",
            "insns",
            "peers",
            get("verified_egress").map(|n| (n, AtMost(750_000.0))),
        ),
    ]
}

pub fn print(targets: &[Target]) {
    println!("\ntargets (issues 16 and 17), from this run:");
    println!(
        "  {:<66} {:>12} {:>12} {:>5}",
        "case", "measured", "target", "met"
    );
    for t in targets {
        let value = t
            .value
            .map_or(format!("(run {})", t.needs.unwrap_or("")), |v| {
                show(v, t.unit)
            });
        let met = t.met.map_or("", |met| if met { "yes" } else { "no" });
        println!("  {:<66} {:>12} {:>12} {:>5}", t.case, value, t.target, met);
    }
}
