//! The commands of `smf-firewall`, one module each, as in xtask: a clap `Args` struct whose
//! doc comment is the command's `--help` text, and `Args::run(self)`, which returns the exit
//! status (an error is exit 1, printed by `main`).

pub mod check;
pub mod conntrack;
pub mod contracts;
pub mod explain;
pub mod license;
pub mod reload;
pub mod replay;
pub mod run;
pub mod status;
pub mod top;
pub mod unload;

use std::path::Path;

use anyhow::Context as _;
use firewall_user::config::Config;

/// The daemon's configuration, for the commands that find the daemon through it.
fn config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("cannot read the configuration {}", path.display()))
}
