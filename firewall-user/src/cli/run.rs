//! `smf-firewall run`: the daemon (`crate::daemon`) on a tokio runtime.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;

/// Run the firewall: attach XDP (and the TC egress program) to the configured interfaces,
/// enforce the rules, serve Prometheus metrics and the control socket; pins maps and links
/// so that the kernel keeps enforcing if the daemon dies. SIGHUP reloads the rules.
/// SIGINT or SIGTERM detach and unpin (unless `keep_attached_on_exit: true`).
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's YAML configuration (rules file, interfaces, metrics address).
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    config: PathBuf,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let config = self.config;
        let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
        let result = runtime.block_on(crate::daemon::run(&config));
        // Dropping the runtime would wait for every blocking task, also a reload's read that
        // never returns (a hung mount): the daemon has cleaned up, so it does not wait long.
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
            .with_context(|| format!("while running with {}", config.display()))
            .map(|()| ExitCode::SUCCESS)
    }
}
