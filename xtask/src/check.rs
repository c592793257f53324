//! `cargo xtask test`: what CI runs (`.ci/run`). Setup, then formatting, lints and tests of
//! both workspaces, stopping at the first failure.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, command_line, nightly_cargo, run, setup, workspace_root};

/// Set up, then check fmt and clippy, check and test the Prometheus rules with promtool, and
/// run all tests (what CI runs).
///
/// Covers the userspace workspace and the eBPF crate, then runs the kernel and namespace tests
/// of `integration-tests` (SMF_FIREWALL_KERNEL_TESTS=1, which needs root), and stops at the
/// first failure.
#[derive(clap::Args)]
pub struct Args {}

/// The checks, in order. Later checks are added to this list.
fn steps() -> Vec<Step> {
    let ebpf = workspace_root().join("firewall-ebpf");
    let prometheus = workspace_root().join("deploy/prometheus");
    let deny_warnings = ["--", "-D", "warnings"];
    vec![
        Step::new("fmt", cargo()).args(&["fmt", "--all", "--", "--check"]),
        Step::new("fmt (eBPF)", nightly_cargo(&ebpf)).args(&["fmt", "--", "--check"]),
        Step::new("clippy", cargo())
            // The feature builds smf-firewall-docs, the man page and completion writer.
            .args(&["clippy", "--workspace", "--all-targets"])
            .args(&["--features", "firewall-user/docs"])
            .args(&deny_warnings),
        Step::new("clippy (eBPF)", nightly_cargo(&ebpf))
            .args(&["clippy", "--release", "-Z", "build-std=core"])
            .args(&["--target", "bpfel-unknown-none"])
            .args(&deny_warnings),
        // The alerting and recording rules, and the example Prometheus config that loads them
        // (setup installs Debian's prometheus, which has promtool; missing, the step fails).
        Step::new("promtool check rules", promtool(&prometheus)).args(&[
            "check",
            "rules",
            "rules.yml",
        ]),
        Step::new("promtool check config", promtool(&prometheus)).args(&[
            "check",
            "config",
            "prometheus.yml",
        ]),
        Step::new("promtool test rules", promtool(&prometheus)).args(&[
            "test",
            "rules",
            "tests.yml",
        ]),
        Step::new("tests", cargo())
            .args(&["test", "--workspace", "--exclude", "integration-tests"])
            .counting_tests(),
        // The root-only crate runs the binary that the step before built.
        Step::new("kernel and namespace tests", cargo())
            .args(&["test", "-p", "integration-tests"])
            .env("SMF_FIREWALL_KERNEL_TESTS", "1")
            .env("SMF_FIREWALL_BIN", &smf_firewall_bin())
            .counting_tests(),
        // Each fuzz target briefly, so that they keep compiling and their seeds stay clean.
        Step::new("fuzz (each target 20 s)", xtask()).args(&["fuzz", "all", "--seconds", "20"]),
    ]
}

/// This xtask again, for a step that is one of its own commands.
fn xtask() -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|_| "xtask".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The debug `smf-firewall` that `cargo test --workspace` builds for the CLI's own tests.
fn smf_firewall_bin() -> String {
    workspace_root()
        .join("target/debug/smf-firewall")
        .display()
        .to_string()
}

fn promtool(dir: &Path) -> Command {
    let mut cmd = Command::new("promtool");
    cmd.current_dir(dir);
    cmd
}

struct Step {
    name: &'static str,
    command: Command,
    /// Echo stdout through us and add up libtest's "test result:" lines.
    counts_tests: bool,
}

impl Step {
    fn new(name: &'static str, command: Command) -> Self {
        Self {
            name,
            command,
            counts_tests: false,
        }
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.command.args(args);
        self
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    fn counting_tests(mut self) -> Self {
        self.counts_tests = true;
        self
    }

    fn run(&mut self, counts: &mut TestCounts) -> Result<()> {
        if self.counts_tests {
            run_counting(&mut self.command, counts)
        } else {
            run(&mut self.command)
        }
    }
}

/// One step's outcome, for the summary line.
struct Outcome {
    name: &'static str,
    time: Duration,
    ok: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let mut outcomes = Vec::new();
        let start = Instant::now();
        let setup = setup::ensure();
        outcomes.push(Outcome {
            name: "setup",
            time: start.elapsed(),
            ok: setup.is_ok(),
        });
        if let Err(err) = setup {
            summarise(&outcomes, &[], None);
            return Err(err.context("step `setup` failed"));
        }

        let mut steps = steps();
        let mut counts = TestCounts::default();
        for index in 0..steps.len() {
            let step = &mut steps[index];
            println!("\n== {} ==", step.name);
            let start = Instant::now();
            let result = step.run(&mut counts);
            outcomes.push(Outcome {
                name: step.name,
                time: start.elapsed(),
                ok: result.is_ok(),
            });
            if let Err(err) = result {
                let counted = steps[index].counts_tests.then_some(&counts);
                summarise(&outcomes, &steps[index + 1..], counted);
                return Err(err.context(format!("step `{}` failed", steps[index].name)));
            }
        }
        summarise(&outcomes, &[], Some(&counts));
        Ok(())
    }
}

/// Prints one line with each step's result and duration, then (when the tests ran) the totals
/// as the last line, in the plain "N passed, N failed" form that CI reads.
fn summarise(outcomes: &[Outcome], not_run: &[Step], counts: Option<&TestCounts>) {
    let mut parts: Vec<String> = outcomes
        .iter()
        .map(|o| {
            let state = if o.ok { "ok" } else { "FAILED" };
            format!("{} {state} {:.1} s", o.name, o.time.as_secs_f64())
        })
        .collect();
    parts.extend(not_run.iter().map(|step| format!("{} not run", step.name)));
    println!("\nsummary: {}", parts.join(", "));
    if let Some(c) = counts {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            c.passed, c.failed, c.ignored
        );
    }
}

#[derive(Default, Debug, PartialEq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Adds a libtest line such as
    /// "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...".
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(number), Some(word)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// Like `run`, but echoes the command's stdout line by line while counting its test results.
fn run_counting(cmd: &mut Command, counts: &mut TestCounts) -> Result<()> {
    let line = command_line(cmd);
    println!("$ {line}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = child.stdout.take().context("child stdout was not piped")?;
    for text in BufReader::new(stdout).lines() {
        let text = text.context("reading test output")?;
        println!("{text}");
        counts.add_line(&text);
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_libtest_result_lines() {
        let mut counts = TestCounts::default();
        for line in [
            "running 4 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.01s",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 1.50s",
            "test foo ... ok",
        ] {
            counts.add_line(line);
        }
        let expected = TestCounts {
            passed: 5,
            failed: 1,
            ignored: 1,
        };
        assert_eq!(counts, expected);
    }
}
