//! `cargo xtask gen-rules`: a large synthetic rule file, written by the `gen-rules` binary of
//! the benches crate. It runs through cargo so that xtask itself never depends on
//! firewall-user, whose build needs the eBPF toolchain that `cargo xtask setup` installs.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{cargo, run};

/// Write a realistic synthetic rule file for benchmarks and scale tests: COUNT rules on lan0
/// (IPv4 and IPv6 networks of varied prefix lengths, ports and port ranges, sets, ICMP and
/// VLAN rules, default drop). The same count and seed always give the same file.
#[derive(clap::Args)]
pub struct Args {
    /// How many rules.
    #[arg(long)]
    count: usize,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The file to write (relative to the current directory).
    #[arg(long)]
    out: PathBuf,
}

impl Args {
    pub fn run(self) -> Result<()> {
        // cargo runs in the workspace root, not where the user typed the command.
        let out = std::path::absolute(&self.out)
            .with_context(|| format!("cannot resolve {}", self.out.display()))?;
        run(cargo()
            .args(["run", "--release", "-q", "-p", "firewall-benches"])
            .args(["--bin", "gen-rules", "--"])
            .args(["--count", &self.count.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .arg("--out")
            .arg(out))
    }
}
