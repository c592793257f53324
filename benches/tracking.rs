//! Connection tracking's costs: what the flow table costs a rule set without `state: true`
//! (as the daemon sets the switch, against it off and forced on), what an untracked packet
//! pays once a `state: true` rule exists, the established-flow fast path, opening a flow, and
//! the table's kernel memory.

use std::collections::BTreeMap;

use aya::programs::Xdp;
use firewall_benches::{Row, generate};
use firewall_dataplane::{
    conntrack::Timeouts,
    loader::{Capacity, Dataplane, LruSizes},
    test_run::{self, XDP_PASS},
};
use firewall_rules::Direction;
use serde::Serialize;

use crate::{
    floors::{self, ESTABLISHED},
    kernel::{
        self, PEER_ADDRESSES, PEER_MISS, Result, STATE_RULE, Tracking, err, frame, peer_addresses,
        time,
    },
};

/// A row of the switch table: its key in the targets, its case, the switch.
type Case = (&'static str, &'static str, Tracking);

/// A TCP packet that misses shape (a)'s content and, coming from outside 198.18.0.0/16, the
/// state rule: an untracked packet of a tracked protocol.
const TCP_MISS: &str = "tcp 198.19.250.9:40000 -> 198.18.200.1:443 flags ACK";

/// The flow table's switch around shape (a)'s content (1,000 host rules + a port rule), on
/// a miss: without a `state: true` rule (as the daemon sets it, off, forced on) and behind a
/// TCP one the packet does not match (as the daemon sets it, and off), for shape (a)'s UDP
/// miss (a protocol no flow is tracked for) and a TCP miss. Each rule set is loaded once and
/// only the switch changes between rounds, interleaved: two loads of one program differ by
/// several ns here, more than what is measured. Records `hosts_daemon`, `hosts_off`,
/// `hosts_on`, `stateful_untracked`, `stateful_untracked_off`, `stateful_untracked_tcp`,
/// `stateful_untracked_tcp_off`.
pub fn switch_rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let addresses = peer_addresses();
    let plain = kernel::host_rules(&addresses, "");
    let stateful = kernel::host_rules(&addresses, STATE_RULE);
    let sets: [(&String, &str, Vec<Case>); 3] = [
        (
            &plain,
            PEER_MISS,
            vec![
                (
                    "hosts_daemon",
                    "no state rule, tracking as the daemon sets it",
                    Tracking::Daemon,
                ),
                ("hosts_off", "no state rule, tracking off", Tracking::Off),
                (
                    "hosts_on",
                    "no state rule, tracking forced on",
                    Tracking::On,
                ),
            ],
        ),
        (
            &stateful,
            PEER_MISS,
            vec![
                (
                    "stateful_untracked",
                    "tcp state rule, untracked udp, as the daemon sets it",
                    Tracking::Daemon,
                ),
                (
                    "stateful_untracked_off",
                    "tcp state rule, untracked udp, tracking off",
                    Tracking::Off,
                ),
            ],
        ),
        (
            &stateful,
            TCP_MISS,
            vec![
                (
                    "stateful_untracked_tcp",
                    "tcp state rule, untracked tcp, as the daemon sets it",
                    Tracking::Daemon,
                ),
                (
                    "stateful_untracked_tcp_off",
                    "tcp state rule, untracked tcp, tracking off",
                    Tracking::Off,
                ),
            ],
        ),
    ];
    for (text, miss, cases) in sets {
        let mut dataplane = kernel::load(text, Tracking::Daemon)?;
        let switches: Vec<u64> = cases
            .iter()
            .map(|(_, _, tracking)| kernel::tracking_switch(text, *tracking))
            .collect::<Result<_>>()?;
        let times = time_switched(&mut dataplane, &frame(miss), &switches)?;
        for ((key, case, _), ns) in cases.into_iter().zip(times) {
            rows.push(Row::new(
                "smf-firewall",
                PEER_ADDRESSES + 1,
                case,
                ns,
                trivial_ns,
            ));
            measured.insert(key, ns);
        }
    }
    Ok(())
}

/// Times `miss` (a frame the rules pass) through `dataplane` with each value of the tracking
/// switch, the rounds interleaved; the median of 5 rounds each.
fn time_switched(dataplane: &mut Dataplane, miss: &[u8], switches: &[u64]) -> Result<Vec<f64>> {
    let mut rounds = vec![Vec::new(); switches.len()];
    for _ in 0..5 {
        for (i, switch) in switches.iter().enumerate() {
            kernel::check()?;
            let mut settings = Timeouts::default().settings();
            settings.tracking = *switch;
            dataplane.set_conntrack(&settings).map_err(err)?;
            let program = dataplane.program().map_err(err)?;
            let action = test_run::run(program, miss, 1).map_err(err)?.action;
            if action != XDP_PASS {
                return Err(format!(
                    "the miss was not passed ({action}): wrong path timed"
                ));
            }
            let outcome = test_run::run(program, miss, kernel::repeat()).map_err(err)?;
            rounds[i].push(outcome.duration.as_nanos() as f64);
        }
    }
    Ok(rounds
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect())
}

/// Distinct flows opened to time flow creation.
const NEW_FLOWS: usize = 50_000;

/// The kernel's average time for one run of each frame (repeat 1, so its timing overhead is
/// included).
fn time_each(program: &Xdp, frames: &[Vec<u8>]) -> Result<f64> {
    let mut total = 0.0;
    for frame in frames {
        kernel::check()?;
        total += test_run::run(program, frame, 1)
            .map_err(err)?
            .duration
            .as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

/// Rounds of the established flow and of its floor, interleaved (a change in the machine's
/// load hits both alike, and their ratio is a target): the median of 5 rounds each.
const PAIRED_ROUNDS: usize = 5;

/// Opens the flow of `reply` in `dataplane` with `syn`, then times `reply` through it and
/// through a fresh load of its floor (`floor_flow`), their rounds interleaved.
fn established_beside_floor(
    dataplane: &mut Dataplane,
    syn: &[u8],
    reply: &[u8],
) -> Result<(f64, f64)> {
    dataplane.run(syn, Direction::In).map_err(err)?;
    dataplane.run(reply, Direction::In).map_err(err)?;
    if dataplane.conntrack_hits(0).map_err(err)? != 1 {
        return Err("the reply was not tracked: the established row would time the rules".into());
    }
    let mut object = floors::load()?;
    let programs: [&Xdp; 2] = [
        dataplane.program().map_err(err)?,
        floors::program(&mut object, "floor_flow")?,
    ];
    for program in programs {
        let action = test_run::run(program, reply, 1).map_err(err)?.action;
        if action != XDP_PASS {
            return Err(format!(
                "the reply was not passed ({action}): wrong path timed"
            ));
        }
    }
    let mut rounds = [Vec::new(), Vec::new()];
    for _ in 0..PAIRED_ROUNDS {
        for (i, program) in programs.into_iter().enumerate() {
            kernel::check()?;
            let outcome = test_run::run(program, reply, kernel::repeat()).map_err(err)?;
            rounds[i].push(outcome.duration.as_nanos() as f64);
        }
    }
    Ok((
        firewall_benches::median(&rounds[0]),
        firewall_benches::median(&rounds[1]),
    ))
}

/// Kernel memory of the connection-tracking table at one size.
#[derive(Serialize)]
pub struct ConntrackMemory {
    pub max_entries: u32,
    pub kernel_bytes: u64,
}

/// Rules of the 1,000-rule file behind a `state: true` rule for the tracked flow.
pub fn stateful_rules() -> String {
    let text = generate::rules(1_000, 1);
    let marker = "    rules:\n";
    text.replacen(
        marker,
        &format!("{marker}      - {{ id: state-out, action: pass, protocol: tcp, src: 198.18.0.0/16, state: true }}\n"),
        1,
    )
}

/// The established-flow fast path (a tracked reply), the cost of opening a flow (every SYN
/// finds its entry expired, as all timeouts are 0, and replaces it), and the table's kernel
/// memory at 65,536 and 1,000,000 entries. Records `established` and `established_floor`, its
/// floor timed beside it.
pub fn conntrack_rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<Vec<ConntrackMemory>> {
    let syn = frame("tcp 198.18.7.1:40000 -> 198.19.200.1:443 flags SYN");
    let reply = frame(ESTABLISHED);
    // Fresh loads of both, as every compared row (`kernel::LOADS`); this load goes on below.
    let mut dataplane = kernel::load(&stateful_rules(), Tracking::Daemon)?;
    let mut pairs = vec![established_beside_floor(&mut dataplane, &syn, &reply)?];
    for _ in 1..kernel::LOADS {
        let mut fresh = kernel::load(&stateful_rules(), Tracking::Daemon)?;
        pairs.push(established_beside_floor(&mut fresh, &syn, &reply)?);
    }
    let established = firewall_benches::median(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let floor = firewall_benches::median(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    measured.insert("established", established);
    measured.insert("established_floor", floor);
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "conntrack: established flow (tracked reply)",
        established,
        trivial_ns,
    ));
    rows.push(Row::new(
        "floor_flow",
        0,
        "its floor, timed beside it (parse + flow hit + counter)",
        floor,
        trivial_ns,
    ));
    let program = dataplane.program().map_err(err)?;
    let untracked = time(program, &frame(generate::MIDDLE_PACKET))?;
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "conntrack on: untracked tcp (miss + rules)",
        untracked,
        trivial_ns,
    ));
    // Opening a flow: distinct SYNs, one run each (BPF_PROG_TEST_RUN repeats one frame, which
    // would hit the flow it opened), with tracking on, then the same SYNs with tracking off
    // (the rules alone). Both include the kernel's per-run timing overhead; the difference is
    // what opening a flow costs.
    let syns: Vec<Vec<u8>> = (0..NEW_FLOWS)
        .map(|i| {
            frame(&format!(
                "tcp 198.18.{}.{}:{} -> 198.19.200.1:443 flags SYN",
                i / 60_000 + 10,
                (i / 250) % 240 + 1,
                1024 + i % 60_000
            ))
        })
        .collect();
    let program = dataplane.program().map_err(err)?;
    let opening = time_each(program, &syns)?;
    let mut off = firewall_dataplane::conntrack::Timeouts::default().settings();
    off.tracking = 0;
    dataplane.set_conntrack(&off).map_err(err)?;
    let rules_only = time_each(dataplane.program().map_err(err)?, &syns)?;
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "conntrack: new flow (SYN, rules + insert; 1 run each)",
        opening,
        trivial_ns,
    ));
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "same SYNs, tracking off (rules; 1 run each)",
        rules_only,
        trivial_ns,
    ));
    [firewall_common::conntrack::DEFAULT_MAX_ENTRIES, 1_000_000]
        .into_iter()
        .map(|max_entries| {
            let dataplane = Dataplane::load_with(
                Capacity::default(),
                LruSizes {
                    flows: max_entries,
                    ..LruSizes::default()
                },
            )
            .map_err(err)?;
            Ok(ConntrackMemory {
                max_entries,
                kernel_bytes: dataplane.conntrack_memory().ok_or("no memlock in fdinfo")?,
            })
        })
        .collect()
}

impl ConntrackMemory {
    pub fn kernel_mib(&self) -> f64 {
        self.kernel_bytes as f64 / f64::from(1 << 20)
    }
}
