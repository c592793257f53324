//! `cargo xtask bench`: the benchmarks in `benches/`, one table each.

use anyhow::Result;

use crate::{cargo, run, setup, workspace_root};

/// Time the XDP program with BPF_PROG_TEST_RUN (10 million repetitions of a 60-byte frame) at
/// 1, 1k, 10k and 100k generated rules next to a trivial XDP_PASS program from the same build
/// and Debian's xdp-filter, in the same run, and connection tracking (a tracked reply on an
/// established flow, opening a flow, the table's kernel memory at 65,536 and 1,000,000
/// entries, target/bench/conntrack.json); print a table of ns/packet and ratios and write
/// target/bench/dataplane.json; then the time to compile and swap in 10k and 100k rules and
/// the daemon's RSS with 100k (target/bench/control.json). Needs root. Then the criterion
/// benches of the rule pipeline: parse + validate of 1k, 10k and 100k rules and the reference
/// `classify` per packet at those sizes; a table and target/bench/rules.json.
#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        // The daemon whose memory the dataplane bench measures.
        run(cargo().args(["build", "--release", "-p", "firewall-user"]))?;
        let daemon = workspace_root().join("target/release/smf-firewall");
        run(cargo()
            .args(["bench", "-p", "firewall-benches", "--features", "kernel"])
            .args(["--bench", "dataplane"])
            .env("SMF_FIREWALL_BIN", daemon))?;
        run(cargo().args(["bench", "-p", "firewall-benches", "--bench", "rules"]))
    }
}
