//! The `smf-firewall` command line.

mod contracts_cli;

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use firewall_user::rules::RuleSet;
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
    /// Validate a rule file without touching the kernel. Prints each interface's rules and
    /// exits 0 when the file is valid; prints every error as FILE:LINE:COL: error: ... and
    /// exits 1 when it is not.
    Check {
        /// The YAML rule file.
        file: PathBuf,
    },
    /// Run the firewall: attach XDP to the configured interfaces, enforce the rules, serve
    /// Prometheus metrics. Stops (and detaches) on SIGINT or SIGTERM.
    Run {
        /// The daemon's YAML configuration (rules file, interfaces, metrics address).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage the contract store: management contracts, adapters, Ultra Firewall Options.
    Contracts(contracts_cli::ContractsArgs),
    /// Decide whether the Ultra Firewall Option is licensed for an adapter: exit 0 licensed,
    /// 4 not licensed, 1 on error.
    License(contracts_cli::LicenseArgs),
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
        Ok(code) => code,
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Contracts(args) => contracts_cli::contracts(args),
        Command::License(args) => contracts_cli::license(args),
        Command::Check { file } => check(&file).map(|()| ExitCode::SUCCESS),
        Command::Run { config } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime
                .block_on(firewall_user::daemon::run(&config))
                .with_context(|| format!("while running with {}", config.display()))
                .map(|()| ExitCode::SUCCESS)
        }
    }
}

fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let rules = RuleSet::load(file).context("the rule file is not valid; nothing was loaded")?;
    println!("{}: valid", file.display());
    for (interface, policy) in &rules.interfaces {
        let count = policy.rules.len();
        let noun = if count == 1 { "rule" } else { "rules" };
        println!(
            "{interface}: default {}, {count} {noun} (first match wins)",
            policy.default
        );
        for (position, rule) in policy.rules.iter().enumerate() {
            println!("  {:>3}. {rule}", position + 1);
        }
    }
    Ok(())
}
