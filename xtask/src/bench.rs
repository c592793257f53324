//! `cargo xtask bench`: the benchmarks in `benches/`, one table each.

use anyhow::Result;

use crate::{cargo, run, setup};

/// Time the XDP program with BPF_PROG_TEST_RUN (10 million repetitions of a 60-byte UDP/IPv4
/// frame) next to a trivial XDP_PASS program from the same build, in the same run; print a
/// table of ns/packet and ratios, and write target/bench/dataplane.json. Needs root. Then the
/// criterion benches of the rule pipeline on generated files: parse + validate of 1k, 10k and
/// 100k rules and `classify` per packet at those sizes; a table and target/bench/rules.json.
#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        run(cargo().args(["bench", "-p", "firewall-benches", "--bench", "dataplane"]))?;
        run(cargo().args(["bench", "-p", "firewall-benches", "--bench", "rules"]))
    }
}
