//! `cargo xtask build`: the release daemon, with its XDP programs embedded.

use anyhow::Result;

use crate::{cargo, run, setup};

/// Set up, then build the release binary target/release/smf-firewall.
///
/// firewall-dataplane's build script builds the XDP programs with nightly and embeds them.
#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        run(cargo().args(["build", "--release", "-p", "firewall-user"]))?;
        println!("built target/release/smf-firewall");
        Ok(())
    }
}
