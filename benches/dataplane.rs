//! Times the XDP program with BPF_PROG_TEST_RUN next to trivial programs from the same build,
//! the building blocks alone and Debian's xdp-filter, in one run, and reports ratios from that
//! run; pushes live frames through veth into each receiver; profiles where the time goes; and
//! times compiling and swapping large rule sets. Never a pass/fail test. Needs root.
//!
//! Parts (`--only PART[,PART...]`, default all): `rules` (generated rule sets, 1 to 100k),
//! `peers` (xdp-filter and the same content in both shapes), `tracking` (the flow table's
//! costs), `limits` (rate limits under and over, against the rule without one, and their
//! lookup's floor), `floors` (the building blocks), `live`, `breakdown`, `control` (compile,
//! swap, memory). Then the targets of issues 16 and 17, each computed from the parts that ran.
//!
//! Without a context the kernel runs a program as if the frame arrived on loopback
//! (ifindex 1), so the rules are bound there (`firewall_dataplane::test_run`).

mod breakdown;
mod control;
mod floors;
mod jit_lines;
mod kernel;
mod limits;
mod live;
mod peers;
mod targets;
mod tracking;

use std::collections::BTreeMap;

use aya::{Ebpf, programs::Xdp};
use firewall_benches::{Row, generate, print_table, write_json, write_json_value};
use firewall_dataplane::{object::XDP_PASS_OBJECT, test_run::XDP_PASS};

use crate::kernel::{Result, Tracking, err, frame, time_expecting};

const SIZES: [usize; 4] = [1, 1_000, 10_000, 100_000];

/// The parts, in the order they run.
const PARTS: [&str; 8] = [
    "rules",
    "peers",
    "tracking",
    "limits",
    "floors",
    "live",
    "breakdown",
    "control",
];

/// The parts named by `--only a,b` (or `--only=a,b`, repeatable); all without it.
fn parts() -> Result<Vec<&'static str>> {
    let args: Vec<String> = std::env::args().collect();
    let mut named = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let value = match arg.strip_prefix("--only") {
            Some("") => args.get(i + 1).cloned().ok_or("--only needs a part")?,
            Some(rest) => match rest.strip_prefix('=') {
                Some(value) => value.to_string(),
                None => continue,
            },
            None => continue,
        };
        named.extend(value.split(',').map(str::to_string));
    }
    if named.is_empty() {
        return Ok(PARTS.to_vec());
    }
    for name in &named {
        if !PARTS.contains(&name.as_str()) {
            return Err(format!(
                "unknown part {name:?}: the parts are {}",
                PARTS.join(", ")
            ));
        }
    }
    Ok(PARTS
        .into_iter()
        .filter(|p| named.iter().any(|n| n == p))
        .collect())
}

fn trivial(frame: &[u8]) -> Result<f64> {
    kernel::over_loads(|| {
        let mut ebpf = Ebpf::load(XDP_PASS_OBJECT).map_err(err)?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .ok_or("xdp_pass missing")?
            .try_into()
            .map_err(err)?;
        program.load().map_err(err)?;
        time_expecting(program, frame, XDP_PASS)
    })
}

/// The generated rules with the probe rule moved to the front or the back (or left alone).
fn with_probe_at(text: &str, place: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let probe = lines
        .iter()
        .position(|l| l.contains(&format!("id: {}", generate::MIDDLE_RULE)));
    let first_rule = lines.iter().position(|l| l.trim_start().starts_with("- {"));
    if let (Some(probe), Some(first)) = (probe, first_rule) {
        let line = lines.remove(probe);
        match place {
            "first" => lines.insert(first, line),
            "last" => lines.push(line),
            _ => lines.insert(probe, line),
        }
    }
    lines.join("\n") + "\n"
}

/// The largest rule set to time (`SMF_BENCH_MAX_RULES`, default all of `SIZES`), for quick runs.
fn max_rules() -> usize {
    kernel::env_or("SMF_BENCH_MAX_RULES", usize::MAX)
}

/// The generated rule sets at each size, the probe rule first, last, and a packet no rule
/// matches, as the daemon loads them. Records `rules_N_first`, `rules_N_last`, `rules_N_miss`.
fn firewall_rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let hit = frame(generate::MIDDLE_PACKET);
    let miss = frame(generate::MISS_PACKET);
    for count in SIZES.into_iter().filter(|&n| n <= max_rules()) {
        let text = generate::rules(count, 1);
        let cases: [(&str, &str, &[u8]); 3] = [
            ("first", "tcp, matches the first rule", &hit),
            ("last", "tcp, matches the last rule", &hit),
            ("miss", "tcp, matches no rule", &miss),
        ];
        for (place, case, frame) in cases {
            let rules = with_probe_at(&text, place);
            let ns = kernel::over_loads(|| {
                let mut dataplane = kernel::load(&rules, Tracking::Daemon)?;
                kernel::time(dataplane.program().map_err(err)?, frame)
            })?;
            rows.push(Row::new("smf-firewall", count, case, ns, trivial_ns));
            let key: &'static str = format!("rules_{count}_{place}").leak();
            measured.insert(key, ns);
        }
    }
    Ok(())
}

/// A part that failed (a peer missing, perf refused) is reported and the others still run;
/// after a Ctrl-C nothing more does.
fn skipped(part: &str, e: String) -> Result<()> {
    kernel::check()?;
    eprintln!("{part} skipped: {e}");
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a `cargo test` of the benches must not run them.
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(());
    }
    let parts = parts()?;
    kernel::install_stop_handler()?;
    let mut measured = BTreeMap::new();
    let trivial_ns = trivial(&frame(generate::MIDDLE_PACKET))?;
    measured.insert("trivial_pass", trivial_ns);
    let mut rows = vec![Row::new(
        "xdp-pass",
        0,
        "return XDP_PASS (tcp 60 bytes)",
        trivial_ns,
        trivial_ns,
    )];
    let mut memory = None;
    let mut timed = false;
    for part in &parts {
        kernel::check()?;
        match *part {
            "rules" => firewall_rows(trivial_ns, &mut rows, &mut measured)?,
            "peers" => {
                if let Err(e) = peers::rows(trivial_ns, &mut rows, &mut measured) {
                    skipped("xdp-filter comparison", e)?;
                }
            }
            "tracking" => {
                tracking::switch_rows(trivial_ns, &mut rows, &mut measured)?;
                memory = Some(tracking::conntrack_rows(
                    trivial_ns,
                    &mut rows,
                    &mut measured,
                )?);
            }
            "limits" => limits::rows(trivial_ns, &mut rows, &mut measured)?,
            "floors" => floors::rows(trivial_ns, &mut rows, &mut measured)?,
            _ => continue,
        }
        timed = true;
    }
    if timed {
        println!();
        print_table(&rows);
        println!(
            "wrote {}",
            write_json("dataplane", &rows).map_err(err)?.display()
        );
    }
    if let Some(memory) = memory {
        println!("\n{:>12} {:>20}", "flows", "conntrack kernel MiB");
        for m in &memory {
            println!("{:>12} {:>20.1}", m.max_entries, m.kernel_mib());
        }
        println!(
            "wrote {}",
            write_json_value("conntrack", &memory)
                .map_err(err)?
                .display()
        );
    }
    if parts.contains(&"live") {
        match live::table(&mut measured) {
            Ok(rates) => {
                live::print(&rates);
                let path = write_json_value("live", &rates).map_err(err)?;
                println!("wrote {}", path.display());
            }
            Err(e) => skipped("live table", e)?,
        }
    }
    if parts.contains(&"breakdown") {
        match breakdown::table() {
            Ok(breakdowns) => {
                breakdown::print(&breakdowns, &measured);
                let path = write_json_value("breakdown", &breakdowns).map_err(err)?;
                println!("wrote {}", path.display());
            }
            Err(e) => skipped("breakdown", e)?,
        }
    }
    if parts.contains(&"control") {
        let control: Vec<control::Control> = [10_000, 100_000]
            .into_iter()
            .filter(|&n| n <= max_rules())
            .map(control::control)
            .collect::<Result<_>>()?;
        control::print(&control);
        println!(
            "wrote {}",
            write_json_value("control", &control)
                .map_err(err)?
                .display()
        );
    }
    let targets = targets::evaluate(&measured);
    targets::print(&targets);
    println!(
        "wrote {}",
        write_json_value("targets", &targets)
            .map_err(err)?
            .display()
    );
    Ok(())
}
