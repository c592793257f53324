//! `cargo xtask fuzz-dataplane`: the long run of the differential test, the XDP program
//! against the reference classifier on random rule sets and frames.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::{cargo, run, setup};

/// Run random rule sets and `--frames` random frames (biased to rule edges, VLAN tags, IPv6
/// extension headers, fragments, truncation; rate-limit rules on a clock the kernel and the
/// reference step together) through the loaded XDP program with BPF_PROG_TEST_RUN and through
/// the reference classifier; fail on the first disagreement in verdict or deciding rule,
/// printing the frame and the rules. Needs root.
#[derive(clap::Args)]
pub struct Args {
    /// How many frames to run.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// The random seed (default: a new one, printed so a failure can be reproduced).
    #[arg(long)]
    seed: Option<u64>,
}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        let seed = self.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        println!("fuzz-dataplane: {} frames, seed {seed}", self.frames);
        run(cargo()
            .args([
                "test",
                "--release",
                "-p",
                "integration-tests",
                "--",
                "differential::",
                "--nocapture",
            ])
            .env("SMF_FIREWALL_DIFFERENTIAL_FRAMES", self.frames.to_string())
            .env("SMF_FIREWALL_DIFFERENTIAL_SEED", seed.to_string())
            .env("SMF_FIREWALL_KERNEL_TESTS", "1"))
    }
}
