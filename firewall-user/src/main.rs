//! The `smf-firewall` binary: logging, then the command line of `firewall_user::cli`.

use std::{
    io::{IsTerminal, Write as _},
    process::ExitCode,
};

use clap::Parser as _;
use firewall_user::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SMF_FIREWALL_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(firewall_user::logging::Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A command's output into a closed pipe (`| head -1`) ends it quietly, as for other
        // Unix tools (exit 141 in the shell). Not the daemon: it ignores SIGPIPE and gets
        // EPIPE from a write, so that a lost log reader or client never stops it.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        quiet_output_errors();
    }
    match cli.command.run() {
        Ok(code) => code,
        Err(error) => {
            // Our errors' messages already carry their causes: print the context, then the
            // cause, so that each `FILE:LINE:COL: error: ...` starts its own line.
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {error}");
            if let Some(cause) = error.chain().nth(1) {
                let _ = writeln!(stderr, "{cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `println!` panics when stdout cannot be written (a full disk): a command's output that
/// cannot be written ends it with one line of error and exit 1, not a panic and a backtrace.
/// (`check` writes through fallible writes; this covers every other command's output.)
fn quiet_output_errors() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(reason) = message.strip_prefix("failed printing to stdout: ") {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot write the output: {reason}"
            );
            std::process::exit(1);
        }
        default(info);
    }));
}
