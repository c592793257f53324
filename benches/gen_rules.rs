//! `gen-rules`: writes a synthetic rule file (see `firewall_benches::generate`). Run it as
//! `cargo xtask gen-rules`.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use firewall_benches::generate;

/// Write a realistic synthetic rule file for benchmarks and scale tests: COUNT rules on lan0
/// (IPv4 and IPv6 networks, ports and port ranges, sets, ICMP and VLAN rules, default drop).
/// The same count and seed always give the same file.
#[derive(Parser)]
#[command(name = "gen-rules")]
struct Args {
    /// How many rules.
    #[arg(long)]
    count: usize,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = generate::rules(args.count, args.seed);
    fs::write(&args.out, &text).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} rules (seed {}, {} bytes) to {}",
        args.count,
        args.seed,
        text.len(),
        args.out.display()
    );
    Ok(())
}
