//! `cargo xtask <command>`: the project's tasks, written in Rust so that CI (`.ci/run`) and
//! developers run exactly the same steps.
//!
//! Each command lives in its own module with a clap `Args` struct, whose doc comment is the
//! command's `--help` text, and an `Args::run(self) -> Result<()>` method. Adding a command is
//! two lines: its `mod` line and its line in the `commands!` list below.

mod bench;
mod build;
mod check;
mod deb;
mod demo;
mod fuzz;
mod fuzz_dataplane;
mod gen_rules;
mod man;
#[cfg(test)]
mod module_graph;
mod probe;
mod setup;

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Declares the `Task` enum and its dispatch from one list of `Variant => module` lines.
macro_rules! commands {
    ($($variant:ident => $module:ident,)+) => {
        #[derive(Subcommand)]
        enum Task {
            $($variant($module::Args),)+
        }

        impl Task {
            fn run(self) -> Result<()> {
                match self {
                    $(Task::$variant(args) => args.run(),)+
                }
            }
        }
    };
}

commands! {
    Setup => setup,
    Probe => probe,
    Build => build,
    Test => check,
    Demo => demo,
    Bench => bench,
    Fuzz => fuzz,
    FuzzDataplane => fuzz_dataplane,
    GenRules => gen_rules,
    Man => man,
    Deb => deb,
}

/// Project tasks for smf-firewall. Most need root: they install packages and load XDP programs.
#[derive(Parser)]
#[command(bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

fn main() -> ExitCode {
    match Cli::parse().task.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The cargo that runs us (the workspace's stable toolchain), in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// `rustup run nightly cargo` in `dir`, cleared of the outer (stable) cargo's settings, which
/// would otherwise leak into the nightly build (same list as firewall-dataplane/build.rs).
pub fn nightly_cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(dir);
    for key in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

/// Runs `cmd` with inherited stdio, printing its command line first; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = command_line(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` without echoing it or its output, for routine steps; on a non-zero exit the error
/// carries the command line and its stderr.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    let line = command_line(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{line}` failed ({}): {}", out.status, stderr.trim());
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout, whatever its exit status (callers that need
/// success check the output); fails only if it cannot be started.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", command_line(cmd)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd` as a shell-like line, with the variables it sets and its directory when that is not the workspace root.
pub fn command_line(cmd: &Command) -> String {
    // Show cargo by name rather than as the full toolchain path that `CARGO` holds.
    let program = Path::new(cmd.get_program());
    let program = match program.file_name() {
        Some(name) if name == "cargo" => name,
        _ => program.as_os_str(),
    };
    // Variables set for the command belong in the line (`LLVM_PREFIX=... cargo install ...`).
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.display(), quote(value?))))
        .collect();
    words.push(quote(program));
    words.extend(cmd.get_args().map(quote));
    let mut line = words.join(" ");
    if let Some(dir) = cmd.get_current_dir()
        && dir != workspace_root()
    {
        line.push_str(&format!("   (in {})", dir.display()));
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if word.is_empty() || word.contains([' ', '\'', '"']) {
        format!("'{}'", word.replace('\'', r"'\''"))
    } else {
        word.into_owned()
    }
}

/// Fails unless we are root, with `why` as the reason.
pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{why}");
    }
    Ok(())
}
