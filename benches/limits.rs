//! Rate limits' cost (issue 16): a packet through a `per: src` limit rule under its limit (it
//! takes its tokens and goes on, to the default) and over it (the rule drops it), against the
//! same rule without `limit` (it drops), and the floor of what a per-source limit adds: one
//! 24-byte LRU hash lookup alone. The three rule sets are installed in turn into one loaded
//! program and their rounds interleaved, since two loads of one program differ by several ns
//! here, a good part of a lookup. The limits count on the kernel's clock, as the daemon's do:
//! under, a bucket of 4·10⁹ packets refilled at 4·10⁹/s never empties; over, `1/h` with a
//! burst of 1 is empty after the first packet. Each round checks that every packet took the
//! path it stands for (the rule's counter). Two more rows split the over case: on the fixed
//! clock (what reading the kernel's costs) and a limit without `per` (what the hash lookup
//! costs).

use std::{collections::BTreeMap, path::Path};

use aya::programs::Xdp;
use firewall_benches::Row;
use firewall_dataplane::{
    loader::{Capacity, Dataplane},
    test_run::{self, XDP_DROP, XDP_PASS},
};
use firewall_rules::{
    RuleSet,
    compile::{self, Compiled, RuleCounters},
};

use crate::{
    floors::{self, LIMITED},
    kernel::{self, Result, err, frame, time_expecting},
};

/// A bucket no run of the benchmark empties.
const UNDER: &str = "{ over: 4000000000/s, burst: 4000000000, per: src }";
/// A bucket the first packet empties.
const OVER: &str = "{ over: 1/h, burst: 1, per: src }";
/// The same for the rule as a whole: no hash lookup.
const OVER_RULE: &str = "{ over: 1/h, burst: 1 }";

/// The rule set: one UDP port rule, with `limit` or without.
fn rules(limit: Option<&str>) -> String {
    let limit = limit.map_or(String::new(), |l| format!(", limit: {l}"));
    format!(
        "version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n      - {{ id: flood, action: drop, protocol: udp, dst_port: 53{limit} }}\n"
    )
}

struct Case {
    /// Its key in the targets.
    key: &'static str,
    case: &'static str,
    limit: Option<&'static str>,
    action: u32,
    /// Whether the rule decides the packets (its counter counts them).
    decided: bool,
    /// The limits' fixed clock instead of the kernel's (no clock read).
    fixed_clock: bool,
}

const CASES: [Case; 5] = [
    Case {
        key: "limit_under",
        case: "per: src limit rule, under it (on to the default)",
        limit: Some(UNDER),
        action: XDP_PASS,
        decided: false,
        fixed_clock: false,
    },
    Case {
        key: "limit_over",
        case: "per: src limit rule, over it (the rule drops)",
        limit: Some(OVER),
        action: XDP_DROP,
        decided: true,
        fixed_clock: false,
    },
    Case {
        key: "limit_over_fixed_clock",
        case: "  the same, over, on the fixed clock (no clock read)",
        limit: Some(OVER),
        action: XDP_DROP,
        decided: true,
        fixed_clock: true,
    },
    Case {
        key: "limit_over_rule",
        case: "  over a limit without per (no hash lookup)",
        limit: Some(OVER_RULE),
        action: XDP_DROP,
        decided: true,
        fixed_clock: false,
    },
    Case {
        key: "limit_none",
        case: "the same rule without limit (drops)",
        limit: None,
        action: XDP_DROP,
        decided: true,
        fixed_clock: false,
    },
];

/// The fixed clock's time, when a case uses it.
const FIXED_NS: u64 = 1_000_000_000_000;

/// Does case `i` find the bucket the case before it left (the same limit, installed again)?
fn shares_bucket(i: usize) -> bool {
    i > 0 && CASES[i].limit == CASES[i - 1].limit
}

/// Interleaved rounds per case; each case's figure is their median.
const ROUNDS: usize = 5;

/// Times the cases and the floor; records `limit_under`, `limit_over`,
/// `limit_over_fixed_clock`, `limit_over_rule`, `limit_none` and `limit_floor` (the 24-byte
/// LRU lookup alone).
pub fn rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let mut counters = RuleCounters::default();
    let compiled: Vec<Compiled> = CASES
        .iter()
        .map(|case| {
            let rules = RuleSet::parse(Path::new("bench.yaml"), &rules(case.limit)).map_err(err)?;
            compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).map_err(err)
        })
        .collect::<Result<_>>()?;
    let slot = counters
        .get("lo", "flood")
        .ok_or("the rule has no counter")?;
    let mut dataplane =
        Dataplane::load_for_test_run(Capacity::for_compiled(&compiled[0])).map_err(err)?;
    dataplane
        .reset_rule_counters(&compiled[0].fresh_counters)
        .map_err(err)?;
    let limited = frame(LIMITED);
    let mut rounds = vec![Vec::new(); CASES.len()];
    for _ in 0..ROUNDS {
        for (i, (case, compiled)) in CASES.iter().zip(&compiled).enumerate() {
            kernel::check()?;
            // The limit changed since the last install: a new epoch, full buckets. (Two
            // cases in a row with one limit share the bucket: the first packet of the second
            // is over already.)
            dataplane.install(compiled).map_err(err)?;
            let clock = if case.fixed_clock { FIXED_NS } else { 0 };
            dataplane.set_limit_clock(clock).map_err(err)?;
            if case.limit.is_some() && case.action == XDP_DROP && !shares_bucket(i) {
                // The first packet takes the only token.
                let first = dataplane.run(&limited, firewall_rules::Direction::In);
                if first.map_err(err)?.action != XDP_PASS {
                    return Err("the first packet was over a full bucket".into());
                }
            }
            let before = dataplane.rule_counter(slot).map_err(err)?.packets;
            let program = dataplane.program().map_err(err)?;
            let ns = time_once(program, &limited, case.action)?;
            let decided = dataplane.rule_counter(slot).map_err(err)?.packets - before;
            let runs = u64::from(kernel::repeat()) + 1;
            if decided != if case.decided { runs } else { 0 } {
                return Err(format!(
                    "{}: the rule decided {decided} of {runs} runs: another path was timed",
                    case.case
                ));
            }
            rounds[i].push(ns);
        }
    }
    for (case, mut times) in CASES.iter().zip(rounds) {
        times.sort_by(f64::total_cmp);
        let ns = times[times.len() / 2];
        rows.push(Row::new("smf-firewall", 1, case.case, ns, trivial_ns));
        measured.insert(case.key, ns);
    }
    let mut ebpf = floors::load()?;
    let floor: &mut Xdp = ebpf
        .program_mut("floor_limit_alone")
        .ok_or("floor_limit_alone missing")?
        .try_into()
        .map_err(err)?;
    let ns = time_expecting(floor, &limited, XDP_PASS)?;
    rows.push(Row::new(
        "floor_limit_alone",
        0,
        "24-byte limit-key LRU lookup alone, hit",
        ns,
        trivial_ns,
    ));
    measured.insert("limit_floor", ns);
    Ok(())
}

/// One check run (the program returns `action`) and one timed run of `repeat()` packets.
fn time_once(program: &Xdp, frame: &[u8], action: u32) -> Result<f64> {
    let got = test_run::run(program, frame, 1).map_err(err)?.action;
    if got != action {
        return Err(format!(
            "the program returned {got}, not {action}: the row would time another path"
        ));
    }
    let outcome = test_run::run(program, frame, kernel::repeat()).map_err(err)?;
    if outcome.action != action {
        return Err(format!("the last run returned {}", outcome.action));
    }
    Ok(outcome.duration.as_nanos() as f64)
}
