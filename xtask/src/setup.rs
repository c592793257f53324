//! `cargo xtask setup`: installs, idempotently, what the build and the tests need, then checks
//! the kernel. A new machine has none of the packages below, so CI depends on this; when
//! everything is there it takes a second or two, which is why build and test run it first.

use std::{collections::HashSet, fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, output, probe, require_root, run};

/// Install what the build and tests need (idempotent), mount bpffs, check the kernel.
///
/// Debian packages, nightly components, bpf-linker 0.13.0: each is reported as "ok (already
/// there)" or "installed". Needs root. `build` and `test` run it first.
#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self) -> Result<()> {
        ensure()
    }
}

/// Debian packages: LLVM 22 for bpf-linker (it must match the LLVM inside rustc), and the
/// tools that the tests, benchmarks and demo drive.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "iputils-ping",
    "bpftool",
    "xdp-tools",
    "tcpdump",
    "netcat-openbsd",
    "iperf3",
    // Provides promtool, which checks our metrics and alert rules.
    "prometheus",
    // The contract store's tests start throwaway PostgreSQL servers (testbed::Postgres).
    "postgresql",
    // systemd-analyze verifies deploy/smf-firewall.service.
    "systemd",
    // nsenter: the tests enter network namespaces without hiding the BPF filesystem.
    "util-linux",
    // The man pages are rendered with `man -l` in a test; the completions are loaded by
    // each shell; the Debian package is checked by lintian.
    "man-db",
    "groff-base",
    "bash-completion",
    "zsh",
    "fish",
    "lintian",
    // The bench's live table: nftables is one of its receivers, ethtool turns on veth's GRO
    // (its NAPI, without which a veth with no XDP program takes no XDP frames); its
    // breakdown samples with perf.
    "nftables",
    "ethtool",
    "linux-perf",
];

/// What the eBPF crate's nightly build and its checks need (`-Z build-std=core` needs rust-src).
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];

/// What `cargo xtask test` needs from the workspace's own (stable) toolchain.
const STABLE_COMPONENTS: &[&str] = &["clippy", "rustfmt"];

const BPFFS: &str = "/sys/fs/bpf";

/// Runs every setup step; the entry point for `build` and `test` too.
pub fn ensure() -> Result<()> {
    require_root("setup needs root: it installs packages and the tests load XDP programs")?;
    let start = Instant::now();
    packages()?;
    nightly_toolchain()?;
    components(Some("nightly"), NIGHTLY_COMPONENTS)?;
    components(None, STABLE_COMPONENTS)?;
    bpf_linker()?;
    cargo_fuzz()?;
    bpffs()?;
    probe::check()?;
    println!("setup done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn report(item: &str, installed: bool) {
    let state = if installed {
        "installed"
    } else {
        "ok (already there)"
    };
    println!("  {item:<40} {state}");
}

fn packages() -> Result<()> {
    let missing = missing_packages(PACKAGES)?;
    if !missing.is_empty() {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Recommends would add prometheus-node-exporter and ~40 packages we never use.
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing))?;
        let still = missing_packages(&missing)?;
        if !still.is_empty() {
            bail!("apt-get did not install: {}", still.join(" "));
        }
    }
    for package in PACKAGES {
        report(&format!("package {package}"), missing.contains(package));
    }
    Ok(())
}

/// The packages of `packages` that dpkg does not report as "install ok installed".
fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    // One dpkg-query for all; it exits non-zero when some are unknown, which just means missing.
    let listing = output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\\n"])
            .args(packages),
    )?;
    let installed: HashSet<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(name, _)| name)
        .collect();
    Ok(packages
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect())
}

fn nightly_toolchain() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        bail!(
            "the rustup toolchain `nightly` is missing; the eBPF crate is built with it, and no \
             toolchain can be downloaded on this machine (do not pin a dated nightly)"
        );
    }
    report("toolchain nightly", false);
    Ok(())
}

/// Adds the missing `wanted` components to `toolchain` (None: the one running this cargo).
fn components(toolchain: Option<&str>, wanted: &[&str]) -> Result<()> {
    let rustup = |args: &[&str]| {
        let mut cmd = Command::new("rustup");
        cmd.args(args);
        if let Some(toolchain) = toolchain {
            cmd.args(["--toolchain", toolchain]);
        }
        cmd
    };
    let installed = output(&mut rustup(&["component", "list", "--installed"]))?;
    let label = toolchain.unwrap_or("workspace toolchain");
    for component in wanted {
        // Listed with the host triple appended ("clippy-x86_64-unknown-linux-gnu"), or bare.
        let present = installed.lines().any(|line| {
            line == *component
                || line
                    .strip_prefix(component)
                    .is_some_and(|rest| rest.starts_with('-'))
        });
        if !present {
            run(&mut rustup(&["component", "add", component]))?;
        }
        report(&format!("component {component} ({label})"), !present);
    }
    Ok(())
}

/// The bpf-linker that `setup` installs: one version on every machine, so that two machines
/// build the same object (bpf-linker 0.12.0 and 0.13.0 gave the same verifier count here) and
/// a newer release cannot break a fresh machine's setup.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn bpf_linker() -> Result<()> {
    let installed = || {
        Command::new("bpf-linker")
            .arg("--version")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| linker_version(&String::from_utf8_lossy(&out.stdout)).map(String::from))
    };
    let found = installed();
    let missing = found.as_deref() != Some(BPF_LINKER_VERSION);
    if missing {
        if let Some(other) = &found {
            println!("  bpf-linker {other} found; replacing it with {BPF_LINKER_VERSION}");
        }
        // The default feature wants LLVM 23; Debian's LLVM 22 matches the LLVM inside rustc.
        run(cargo()
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--locked", "--force", "--no-default-features"])
            .args(["--features", "llvm-22"]))?;
        match installed() {
            Some(version) if version == BPF_LINKER_VERSION => {}
            Some(version) => bail!(
                "bpf-linker {BPF_LINKER_VERSION} was installed in ~/.cargo/bin, but the bpf-linker first on PATH is {version}: remove it or put ~/.cargo/bin first"
            ),
            None => bail!(
                "bpf-linker was installed but `bpf-linker --version` fails: is ~/.cargo/bin on PATH?"
            ),
        }
    }
    report(&format!("bpf-linker {BPF_LINKER_VERSION}"), missing);
    Ok(())
}

/// The version in `bpf-linker --version`'s output (`bpf-linker 0.13.0`).
fn linker_version(output: &str) -> Option<&str> {
    output
        .lines()
        .next()?
        .strip_prefix("bpf-linker ")
        .map(str::trim)
}

/// cargo-fuzz runs the libFuzzer targets of `fuzz/` (`cargo xtask fuzz`).
fn cargo_fuzz() -> Result<()> {
    let present = || {
        Command::new("cargo")
            .args(["fuzz", "--version"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let missing = !present();
    if missing {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
        if !present() {
            bail!(
                "cargo-fuzz was installed but `cargo fuzz --version` fails: is ~/.cargo/bin on PATH?"
            );
        }
    }
    report("cargo-fuzz", missing);
    Ok(())
}

fn bpffs() -> Result<()> {
    let mounted = bpffs_mounted()?;
    if !mounted {
        run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    }
    report(&format!("bpffs at {BPFFS}"), !mounted);
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string(Path::new("/proc/mounts")).context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1..3) == Some(&[BPFFS, "bpf"][..])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bpf_linkers_version_line() {
        assert_eq!(linker_version("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(linker_version("bpf-linker 0.12.0"), Some("0.12.0"));
        assert_eq!(linker_version("rustc 1.95.0\n"), None);
        assert_eq!(linker_version(""), None);
    }
}
