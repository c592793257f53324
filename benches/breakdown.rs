//! The stage breakdown: where each nanosecond of the main cases goes. `perf record` samples
//! (cpu-clock) the thread that runs the case through BPF_PROG_TEST_RUN, with
//! `net.core.bpf_jit_kallsyms=1` so the JIT-ed program has a symbol; each symbol's share of
//! the samples times the case's ns per packet (timed by the same runs) is the time it
//! explains. The JIT-ed body's own samples are then split by the part of the source they run
//! (`jit_lines`): each source file, and each map an inlined lookup reads. When perf cannot
//! resolve the JIT-ed program, the breakdown says so and the floors table (each building
//! block alone) is the ablation to read instead.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use aya::programs::Xdp;
use firewall_benches::generate;
use firewall_dataplane::test_run;
use firewall_rules::Direction;
use serde::Serialize;

use crate::{
    floors::ESTABLISHED,
    jit_lines::{self, JitMap},
    kernel::{self, PEER_MISS, Result, Tracking, env_or, err, frame, peer_addresses},
};

const KALLSYMS: &str = "/proc/sys/net/core/bpf_jit_kallsyms";
/// Runs per BPF_PROG_TEST_RUN call while perf samples.
const PROFILE_REPEAT: u32 = 1_000_000;
/// Symbols under this share of the samples are summed as "other".
const MIN_SHARE: f64 = 0.5;

/// A sysctl set for the guard's life, restored on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Result<Sysctl> {
        let old = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        std::fs::write(path, value).map_err(|e| format!("{path}: {e}"))?;
        Ok(Sysctl {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.old) {
            eprintln!("cannot restore {}: {e}", self.path);
        }
    }
}

/// One symbol's part of a case.
#[derive(Serialize)]
pub struct Share {
    pub symbol: String,
    pub what: &'static str,
    pub percent: f64,
    pub ns: f64,
}

#[derive(Serialize)]
pub struct Breakdown {
    pub case: String,
    pub ns_per_packet: f64,
    pub samples: u64,
    /// Whether perf named the JIT-ed program; without it the shares are not a breakdown.
    pub jit_resolved: bool,
    pub shares: Vec<Share>,
    /// The JIT-ed body's samples by part of the source, largest first.
    pub body: Vec<Part>,
    /// Why `body` is empty, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_missing: Option<String>,
}

/// A part of the source inside the JIT-ed body: a file of the program, an inlined crate, or
/// an inlined map lookup ("lookup NAME").
#[derive(Serialize)]
pub struct Part {
    pub part: String,
    pub percent: f64,
    pub ns: f64,
}

/// Profiles the three main cases: 1k host rules and a miss, an established flow, one rule
/// and no match. Each is loaded after the sysctl is set (a program gets its symbol at load).
pub fn table() -> Result<Vec<Breakdown>> {
    let _kallsyms = Sysctl::set(KALLSYMS, "1")?;
    let secs: f64 = env_or("SMF_BENCH_PERF_SECS", 5.0);
    let mut out = Vec::new();

    let mut hosts = kernel::load(&kernel::host_rules(&peer_addresses(), ""), Tracking::Daemon)?;
    out.push(profile(
        "1k host rules + port rule, miss",
        hosts.program().map_err(err)?,
        &frame(PEER_MISS),
        secs,
    )?);
    drop(hosts);

    let mut tracked = kernel::load(&crate::tracking::stateful_rules(), Tracking::Daemon)?;
    let (syn, reply) = (
        frame("tcp 198.18.7.1:40000 -> 198.19.200.1:443 flags SYN"),
        frame(ESTABLISHED),
    );
    tracked.run(&syn, Direction::In).map_err(err)?;
    tracked.run(&reply, Direction::In).map_err(err)?;
    if tracked.conntrack_hits(0).map_err(err)? != 1 {
        return Err("the reply was not tracked: the breakdown would profile the rules".into());
    }
    out.push(profile(
        "established flow (tracked reply)",
        tracked.program().map_err(err)?,
        &reply,
        secs,
    )?);
    drop(tracked);

    let mut one = kernel::load(&generate::rules(1, 1), Tracking::Daemon)?;
    out.push(profile(
        "one rule, no match",
        one.program().map_err(err)?,
        &frame(generate::MISS_PACKET),
        secs,
    )?);
    Ok(out)
}

/// Runs `frame` through `program` on a thread of its own while perf samples that thread for
/// `secs`; the shares of its samples by symbol.
fn profile(case: &str, program: &Xdp, frame: &[u8], secs: f64) -> Result<Breakdown> {
    let data = std::env::temp_dir().join(format!("smf-bench-perf-{}.data", std::process::id()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let durations = std::thread::scope(|scope| -> Result<Vec<f64>> {
        let runner = scope.spawn({
            let stop = stop.clone();
            move || -> Result<Vec<f64>> {
                let _ = tid_tx.send(nix::unistd::gettid().as_raw());
                let mut durations = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    kernel::check()?;
                    let outcome = test_run::run(program, frame, PROFILE_REPEAT).map_err(err)?;
                    durations.push(outcome.duration.as_nanos() as f64);
                }
                Ok(durations)
            }
        });
        let recorded = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(err)
            .and_then(|tid| record(tid, &data, secs));
        stop.store(true, Ordering::Relaxed);
        let durations = runner
            .join()
            .map_err(|_| "the profiled thread panicked".to_string())??;
        recorded?;
        Ok(durations)
    })?;
    let report = report(&data);
    let body = program
        .info()
        .map_err(err)
        .and_then(|info| body_parts(info.id(), &data));
    let _ = std::fs::remove_file(&data);
    let (samples, symbols) = report?;
    let ns = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    let mut breakdown = breakdown(case, ns, samples, symbols);
    match body {
        Ok(parts) => {
            breakdown.body = parts
                .into_iter()
                .map(|(part, percent)| Part {
                    part,
                    percent,
                    ns: ns * percent / 100.0,
                })
                .collect();
        }
        Err(e) => breakdown.body_missing = Some(e),
    }
    Ok(breakdown)
}

/// The JIT-ed body's samples in `data`, by part of the source, each as a percentage of all
/// the samples (so that its share times the case's ns is the time it explains).
fn body_parts(program_id: u32, data: &Path) -> Result<Vec<(String, f64)>> {
    let map = JitMap::read(program_id)?;
    let addresses = jit_lines::sample_addresses(data)?;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for &ip in &addresses {
        if let Some(part) = map.part(ip) {
            *counts.entry(part).or_default() += 1;
        }
    }
    let total = addresses.len().max(1) as f64;
    let mut parts: Vec<(String, f64)> = counts
        .into_iter()
        .map(|(part, n)| (part.to_string(), 100.0 * n as f64 / total))
        .collect();
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(parts)
}

/// `perf record` of thread `tid` for `secs`.
fn record(tid: i32, data: &PathBuf, secs: f64) -> Result<()> {
    let out = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "10000", "-t"])
        .arg(tid.to_string())
        .arg("-o")
        .arg(data)
        .args(["--", "sleep", &secs.to_string()])
        .output()
        .map_err(|e| format!("perf: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "perf record: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The number of samples and each symbol's percentage, from `perf report`.
fn report(data: &PathBuf) -> Result<(u64, Vec<(String, f64)>)> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "sym", "-i"])
        .arg(data)
        .output()
        .map_err(|e| format!("perf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "perf report: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // "# Samples: 50K of event 'cpu-clock'", then "    45.12%  [k] symbol".
    let samples = text
        .lines()
        .find_map(|l| l.strip_prefix("# Samples: "))
        .and_then(|s| s.split_whitespace().next())
        .map_or(0, parse_count);
    let symbols = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
            let _space = words.next()?; // [k] or [.]
            Some((words.collect::<Vec<_>>().join(" "), percent))
        })
        .collect();
    Ok((samples, symbols))
}

/// "50K" → 50000.
fn parse_count(text: &str) -> u64 {
    let (digits, scale) = match text.strip_suffix('K') {
        Some(d) => (d, 1_000.0),
        None => match text.strip_suffix('M') {
            Some(d) => (d, 1e6),
            None => (text, 1.0),
        },
    };
    digits.parse::<f64>().map_or(0, |n| (n * scale) as u64)
}

/// What a symbol is, for the reader.
fn what(symbol: &str) -> &'static str {
    let kinds: [(&str, &str); 19] = [
        ("bpf_prog_", "JIT-ed program (or subprog)"),
        ("htab_map_hash", "jhash of the key"),
        ("lookup_nulls_elem", "hash bucket walk"),
        ("memcmp", "key compare"),
        ("htab_lru", "LRU hash lookup"),
        ("bpf_lru", "LRU list upkeep"),
        ("htab_map", "hash lookup"),
        ("__htab", "hash lookup"),
        ("jhash", "hash of the key"),
        ("trie", "LPM trie lookup"),
        ("ktime", "clock"),
        ("timespec", "clock"),
        ("jiffies", "clock"),
        ("bpf_loop", "bpf_loop"),
        ("return_thunk", "return thunk (mitigation)"),
        ("srso", "return thunk (mitigation)"),
        ("bpf_test", "the test-run loop"),
        ("local_bh_enable", "the test-run loop"),
        ("bpf_dispatcher_xdp", "XDP dispatcher"),
    ];
    kinds
        .iter()
        .find(|(pattern, _)| symbol.contains(pattern))
        .map_or("kernel", |(_, kind)| kind)
}

fn breakdown(case: &str, ns: f64, samples: u64, symbols: Vec<(String, f64)>) -> Breakdown {
    let jit_resolved = symbols.iter().any(|(s, _)| s.starts_with("bpf_prog_"));
    let mut shares: Vec<Share> = symbols
        .iter()
        .filter(|(_, p)| *p >= MIN_SHARE)
        .map(|(symbol, percent)| Share {
            symbol: symbol.clone(),
            what: what(symbol),
            percent: *percent,
            ns: ns * percent / 100.0,
        })
        .collect();
    let other: f64 = symbols
        .iter()
        .filter(|(_, p)| *p < MIN_SHARE)
        .map(|(_, p)| p)
        .sum();
    if other > 0.0 {
        shares.push(Share {
            symbol: format!("(other, each < {MIN_SHARE}%)"),
            what: "",
            percent: other,
            ns: ns * other / 100.0,
        });
    }
    Breakdown {
        case: case.to_string(),
        ns_per_packet: ns,
        samples,
        jit_resolved,
        shares,
        body: Vec::new(),
        body_missing: None,
    }
}

/// Prints one table per case; when perf did not name the JIT-ed program, says so and points at
/// the ablation (the floors) instead, with the floors' differences when they were measured.
pub fn print(breakdowns: &[Breakdown], measured: &BTreeMap<&'static str, f64>) {
    for b in breakdowns {
        println!(
            "\nbreakdown: {} ({:.1} ns/packet, {} samples)",
            b.case, b.ns_per_packet, b.samples
        );
        if !b.jit_resolved {
            println!(
                "  perf did not resolve the JIT-ed program's symbol here: read the ablation below"
            );
        }
        println!(
            "  {:<52} {:<28} {:>7} {:>8}",
            "symbol", "what", "share %", "ns"
        );
        for s in &b.shares {
            println!(
                "  {:<52} {:<28} {:>7.1} {:>8.1}",
                truncate(&s.symbol, 52),
                s.what,
                s.percent,
                s.ns
            );
        }
        print_body(b);
    }
    if breakdowns.iter().any(|b| !b.jit_resolved) {
        print_ablation(measured);
    }
}

/// The JIT-ed body's parts, those under `MIN_SHARE` summed.
fn print_body(b: &Breakdown) {
    if let Some(why) = &b.body_missing {
        println!("  inside the JIT-ed body: not read ({why})");
        return;
    }
    if b.body.is_empty() {
        return;
    }
    println!("  inside the JIT-ed body, by part of the source:");
    let (small, large): (Vec<&Part>, Vec<&Part>) =
        b.body.iter().partition(|p| p.percent < MIN_SHARE);
    for p in large {
        println!(
            "    {:<78} {:>7.1} {:>8.1}",
            truncate(&p.part, 78),
            p.percent,
            p.ns
        );
    }
    let (percent, ns) = small
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.percent, b + p.ns));
    if percent > 0.0 {
        let label = format!("(other parts, each < {MIN_SHARE}%)");
        println!("    {label:<78} {percent:>7.1} {ns:>8.1}");
    }
}

/// The floors' differences: what each building block adds, measured alone.
fn print_ablation(measured: &BTreeMap<&'static str, f64>) {
    let get = |k: &str| measured.get(k).copied();
    let (Some(trivial), Some(parse), Some(flow), Some(alone)) = (
        get("trivial_pass"),
        get("floor_parse"),
        get("floor_flow"),
        get("floor_flow_alone_hit"),
    ) else {
        println!("  (ablation: run the floors part in the same run)");
        return;
    };
    println!("\nablation (the floors, over the trivial program):");
    println!(
        "  full parse                      {:>6.1} ns",
        parse - trivial
    );
    println!(
        "  16-byte flow lookup (hit)       {:>6.1} ns",
        alone - trivial
    );
    println!(
        "  counter struct + glue           {:>6.1} ns",
        flow - parse - (alone - trivial)
    );
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
