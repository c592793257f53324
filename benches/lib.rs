//! Shared pieces of the benchmarks: the frames they send, how a row is timed and reported, and
//! the synthetic rule files of [`generate`].

pub mod generate;

use std::{fs, io, path::PathBuf, time::Instant};

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use serde::Serialize;

/// BPF_PROG_TEST_RUN repetitions per measurement.
pub const REPEAT: u32 = 10_000_000;
/// Measurements per row; the median is reported.
pub const ROUNDS: usize = 3;

/// A 60-byte UDP/IPv4 frame (14 + 20 + 8 + 18 bytes of payload).
pub fn udp_frame(src: [u8; 4], dst: [u8; 4], dst_port: u16) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(40000, dst_port);
    let payload = [0u8; 18];
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, &payload)
        .expect("writing to a Vec cannot fail");
    frame
}

/// Nanoseconds per packet: the median of `ROUNDS` runs of `REPEAT` repetitions, by wall clock
/// around the syscall (the kernel's own figure is rounded to whole nanoseconds).
pub fn ns_per_packet(program: &Xdp, frame: &[u8]) -> Result<f64, ProgramError> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..TestRunOptions::default()
        };
        let start = Instant::now();
        program.test_run(options)?;
        rounds.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(REPEAT));
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[ROUNDS / 2])
}

/// One row of `target/bench/dataplane.json`.
#[derive(Debug, Serialize)]
pub struct Row {
    pub program: String,
    pub rules: usize,
    pub case: String,
    pub ns_per_packet: f64,
    pub ratio_to_trivial: f64,
}

/// Prints the rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<14} {:>7}  {:<28} {:>10} {:>10}",
        "program", "rules", "case", "ns/packet", "x trivial"
    );
    for row in rows {
        println!(
            "{:<14} {:>7}  {:<28} {:>10.1} {:>10.2}",
            row.program, row.rules, row.case, row.ns_per_packet, row.ratio_to_trivial
        );
    }
}

/// Writes the rows to `<target>/bench/<name>.json` and returns the path.
pub fn write_json(name: &str, rows: &[Row]) -> io::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("bench");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, serde_json::to_string_pretty(rows)?)?;
    Ok(path)
}
