//! `cargo xtask gen-rules`: a large synthetic rule file from `firewall_benches::generate`,
//! which needs no eBPF toolchain.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};
use firewall_benches::generate;

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
        let text = generate::rules(self.count, self.seed);
        fs::write(&self.out, &text)
            .with_context(|| format!("cannot write {}", self.out.display()))?;
        println!(
            "wrote {} rules (seed {}, {} bytes) to {}",
            self.count,
            self.seed,
            text.len(),
            self.out.display()
        );
        Ok(())
    }
}
