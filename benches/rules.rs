//! Criterion benches of the rule pipeline on generated rule files (`firewall_benches::generate`,
//! seed 1): parse + validate of 1k, 10k and 100k rules, and `reference::classify` of one frame
//! at each size, for a packet that no rule matches (every rule is tried, then the default) and
//! one that the rule in the middle of the list decides. After criterion's own lines, prints a
//! table of the medians and writes `target/bench/rules.json`. Never a pass/fail test.

use std::{
    fs,
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use firewall_benches::{generate, target_dir, write_json};
use firewall_rules::{RuleSet, reference::classify, spec::PacketSpec};
use serde::{Deserialize, Serialize};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const SEED: u64 = 1;
/// Few samples: a 100k-rule parse takes about a second, and the whole bench should stay
/// within a couple of minutes.
const SAMPLES: usize = 10;
const PARSE: &str = "parse+validate";
const CLASSIFY: &str = "classify";

/// A packet sent through `classify`, and the rule that must decide it.
struct Probe {
    name: &'static str,
    spec: &'static str,
    rule: Option<&'static str>,
}

const PROBES: [Probe; 2] = [
    Probe {
        name: "no-match",
        spec: generate::MISS_PACKET,
        rule: None,
    },
    Probe {
        name: "middle-rule",
        spec: generate::MIDDLE_PACKET,
        rule: Some(generate::MIDDLE_RULE),
    },
];

fn main() {
    let started = SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args();
    let files: Vec<(usize, String)> = SIZES
        .iter()
        .map(|&count| (count, generate::rules(count, SEED)))
        .collect();
    parse_and_validate(&mut criterion, &files);
    classify_probes(&mut criterion, &files);
    criterion.final_summary();
    summarize(started);
}

fn parse(text: &str) -> RuleSet {
    RuleSet::parse(Path::new("generated.yaml"), text)
        .expect("generated rule files are valid (firewall_benches::generate's tests)")
}

fn parse_and_validate(criterion: &mut Criterion, files: &[(usize, String)]) {
    let mut group = criterion.benchmark_group(PARSE);
    // Flat: the same number of iterations in every sample, so that a slow parse is run two or
    // three times per sample rather than the 55 times or more of criterion's linear sampling.
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1));
    for (count, text) in files {
        group.measurement_time(time_for_samples(|| parse(text)));
        group.throughput(Throughput::Elements(*count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), text, |b, text| {
            // Freeing a large rule set is not part of parsing it.
            b.iter_with_large_drop(|| parse(black_box(text)))
        });
    }
    group.finish();
}

/// Time for two runs of `run` (timed once now) per sample, and at least a second. Criterion
/// warns that the time is too short whenever a sample is a single run; asking for two keeps
/// it at two or three even when warm runs are somewhat slower or faster than this cold one.
fn time_for_samples<T>(run: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    let output = run();
    let once = start.elapsed();
    drop(output);
    once.mul_f64(2.0 * SAMPLES as f64)
        .max(Duration::from_secs(1))
}

fn classify_probes(criterion: &mut Criterion, files: &[(usize, String)]) {
    let mut group = criterion.benchmark_group(CLASSIFY);
    group
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for (count, text) in files {
        let rules = parse(text);
        for probe in &PROBES {
            let frame = PacketSpec::parse(probe.spec)
                .expect("the probe specs are constants that parse")
                .frame();
            let decided = classify(&rules, generate::INTERFACE, &frame)
                .expect("generated files have rules on generate::INTERFACE");
            // A bench that measured another path than its name says would mislead.
            assert_eq!(
                decided.rule.as_deref(),
                probe.rule,
                "{} at {count} rules",
                probe.name
            );
            group.bench_with_input(BenchmarkId::new(probe.name, count), &frame, |b, frame| {
                b.iter(|| classify(black_box(&rules), generate::INTERFACE, black_box(frame)))
            });
        }
    }
    group.finish();
}

/// One median of this run, as `target/bench/rules.json` records it.
#[derive(Serialize)]
struct Figure {
    bench: String,
    rules: usize,
    median_ns: f64,
}

/// The part of criterion's `estimates.json` that the summary reads.
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Prints the medians of the benches that ran (none under `cargo test` or `--list`, fewer
/// with a filter) as one row per size, and writes them to `target/bench/rules.json`.
fn summarize(started: SystemTime) {
    let columns: Vec<(String, PathBuf)> =
        std::iter::once((PARSE.to_string(), PathBuf::from(PARSE)))
            .chain(PROBES.iter().map(|probe| {
                (
                    format!("{CLASSIFY} {}", probe.name),
                    Path::new(CLASSIFY).join(probe.name),
                )
            }))
            .collect();
    let figures: Vec<Figure> = SIZES
        .iter()
        .flat_map(|&rules| {
            columns.iter().filter_map(move |(bench, dir)| {
                let median_ns = median_ns(&dir.join(rules.to_string()), started)?;
                Some(Figure {
                    bench: bench.clone(),
                    rules,
                    median_ns,
                })
            })
        })
        .collect();
    if figures.is_empty() {
        return;
    }
    print_table(&columns, &figures);
    match write_json("rules", &figures) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(err) => eprintln!("cannot write target/bench/rules.json: {err}"),
    }
}

/// The median that criterion wrote for the bench in `dir` during this run, in nanoseconds.
/// Criterion writes under `$CRITERION_HOME`, else `<target>/criterion`.
fn median_ns(dir: &Path, started: SystemTime) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map_or_else(|| target_dir().join("criterion"), PathBuf::from);
    let path = home.join(dir).join("new/estimates.json");
    // An older file is a previous run's figure for a bench that this run skipped.
    let written = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < started {
        return None;
    }
    let text = fs::read_to_string(&path).ok()?;
    let estimates: Estimates = serde_json::from_str(&text).ok()?;
    Some(estimates.median.point_estimate)
}

fn print_table(columns: &[(String, PathBuf)], figures: &[Figure]) {
    println!("\nmedians (seed {SEED}; classify is per packet)");
    print!("{:>8}", "rules");
    for (bench, _) in columns {
        print!("  {bench:>20}");
    }
    println!();
    for rules in SIZES {
        print!("{rules:>8}");
        for (bench, _) in columns {
            let cell = figures
                .iter()
                .find(|f| f.rules == rules && f.bench == *bench)
                .map_or_else(|| "-".to_string(), |f| duration_text(f.median_ns));
            print!("  {cell:>20}");
        }
        println!();
    }
}

/// `1.23 ms`, `456.7 ns`: criterion's units.
fn duration_text(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{:.2} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.1} ns"),
    }
}
