//! Shared pieces of the benchmarks: the frames they send, how a row is timed and reported, and
//! the synthetic rule files of [`generate`], and the reading of a loaded program's
//! instructions by source line ([`xlated`]).

pub mod generate;
pub mod xlated;

use std::{fs, io, path::PathBuf};

use serde::Serialize;

/// BPF_PROG_TEST_RUN repetitions per measurement.
pub const REPEAT: u32 = 10_000_000;

/// One row of `target/bench/dataplane.json`.
#[derive(Debug, Serialize)]
pub struct Row {
    pub program: String,
    pub rules: usize,
    pub case: String,
    pub ns_per_packet: f64,
    pub ratio_to_trivial: f64,
    /// Only on the rows of the xdp-filter comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_xdp_filter: Option<f64>,
}

impl Row {
    pub fn new(
        program: &str,
        rules: usize,
        case: &str,
        ns_per_packet: f64,
        trivial_ns: f64,
    ) -> Row {
        Row {
            program: program.to_string(),
            rules,
            case: case.to_string(),
            ns_per_packet,
            ratio_to_trivial: ns_per_packet / trivial_ns,
            ratio_to_xdp_filter: None,
        }
    }

    /// The row as a ratio to xdp-filter's time on the same content.
    pub fn versus(mut self, xdp_filter_ns: f64) -> Row {
        self.ratio_to_xdp_filter = Some(self.ns_per_packet / xdp_filter_ns);
        self
    }
}

/// The median of timings (the upper one of an even number).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Prints the rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<18} {:>7}  {:<48} {:>10} {:>10} {:>13}",
        "program", "rules", "case", "ns/packet", "x trivial", "x xdp-filter"
    );
    for row in rows {
        let peer = row
            .ratio_to_xdp_filter
            .map_or(String::new(), |r| format!("{r:.2}"));
        println!(
            "{:<18} {:>7}  {:<48} {:>10.1} {:>10.2} {:>13}",
            row.program, row.rules, row.case, row.ns_per_packet, row.ratio_to_trivial, peer
        );
    }
}

/// The workspace's target directory, where results are written.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// Writes the rows to `<target>/bench/<name>.json` and returns the path.
pub fn write_json<T: Serialize>(name: &str, rows: &[T]) -> io::Result<PathBuf> {
    write_json_value(name, rows)
}

/// Writes any value to `<target>/bench/<name>.json` and returns the path.
pub fn write_json_value<T: Serialize + ?Sized>(name: &str, value: &T) -> io::Result<PathBuf> {
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, serde_json::to_string_pretty(value)?)?;
    Ok(path)
}
