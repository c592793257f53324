//! The commands of `smf-firewall`, one module each, as in xtask: a clap `Args` struct whose
//! doc comment is the command's `--help` text, and `Args::run(self)`, which returns the exit
//! status (an error is exit 1, printed by `main`). [`command`] is the whole command line, for
//! the man pages and shell completions that `cargo xtask man` generates from it.

pub mod billing;
pub mod check;
mod config;
pub mod conntrack;
pub mod contracts;
pub mod explain;
pub mod handover;
pub mod license;
pub mod reload;
pub mod replay;
pub mod run;
pub mod status;
pub mod top;
pub mod trace;
pub mod unload;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// The XDP firewall of the SMF sx Ultra Firewall Option: its daemon and command line.
#[derive(Parser)]
#[command(name = "smf-firewall", version, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The clap definition of `smf-firewall`, subcommands included.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Declares the `Command` enum and its dispatch from one list of `Variant => module` lines,
/// in the order `--help` lists them.
macro_rules! commands {
    ($($variant:ident => $module:ident,)+) => {
        #[derive(Subcommand)]
        pub enum Command {
            $($variant($module::Args),)+
        }

        impl Command {
            pub fn run(self) -> anyhow::Result<ExitCode> {
                match self {
                    $(Command::$variant(args) => args.run(),)+
                }
            }
        }
    };
}

// In the order an operator needs them: the daemon and its rules first, watching it next,
// the contract store and its invoices, then taking it down; `replay` (the kernel against the
// reference) last.
commands! {
    Run => run,
    Check => check,
    Explain => explain,
    Reload => reload,
    Status => status,
    Top => top,
    Trace => trace,
    Conntrack => conntrack,
    License => license,
    Contracts => contracts,
    Billing => billing,
    Handover => handover,
    Unload => unload,
    Replay => replay,
}
