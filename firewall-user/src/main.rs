//! The `smf-firewall` command line.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// smf-firewall: the XDP firewall dataplane of the SMF sx Ultra Firewall Option.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the firewall: attach XDP to the configured interfaces, enforce the rules, serve
    /// Prometheus metrics. Stops (and detaches) on SIGINT or SIGTERM.
    Run {
        /// The daemon's YAML configuration (rules file, interfaces, metrics address).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SMF_FIREWALL_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Our errors' messages already carry their causes: print the context, then the
            // cause, so that each `FILE:LINE:COL: error: ...` starts its own line.
            eprintln!("error: {error}");
            if let Some(cause) = error.chain().nth(1) {
                eprintln!("{cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime
                .block_on(firewall_user::daemon::run(&config))
                .with_context(|| format!("while running with {}", config.display()))
        }
    }
}
