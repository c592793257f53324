//! The daemon's configuration, for the commands that find the daemon through it.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;

pub fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("cannot read the configuration {}", path.display()))
}
