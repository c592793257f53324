//! `cargo xtask fuzz TARGET --seconds N`: one libFuzzer target of `fuzz/` (cargo-fuzz, nightly,
//! AddressSanitizer) for N seconds, its corpus seeded from the repository's own files. A
//! crash, a leak, a timeout or an out-of-memory stops it with the input saved under
//! `fuzz/artifacts/TARGET/`. `cargo xtask test` runs each target briefly.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{nightly_cargo, run, setup, workspace_root};

/// The targets, each what smf-firewall reads from outside.
pub const TARGETS: [&str; 5] = [
    "rule_file",
    "daemon_config",
    "contract_import",
    "control_request",
    "capture",
];

/// Run one fuzz target (or `all`, one after the other) for a while: rule_file, daemon_config,
/// contract_import, control_request, capture. Needs cargo-fuzz (`cargo xtask setup`).
#[derive(clap::Args)]
pub struct Args {
    /// The target, or `all`.
    target: String,
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        let targets: Vec<&str> = match self.target.as_str() {
            "all" => TARGETS.to_vec(),
            one if TARGETS.contains(&one) => vec![one],
            other => bail!(
                "unknown fuzz target `{other}`: one of {}",
                TARGETS.join(", ")
            ),
        };
        for target in targets {
            fuzz(target, self.seconds)?;
        }
        Ok(())
    }
}

/// Runs `target` for `seconds` on its corpus (kept between runs, not in git).
pub fn fuzz(target: &str, seconds: u64) -> Result<()> {
    let dir = workspace_root().join("fuzz");
    let corpus = dir.join("corpus").join(target);
    seed(target, &corpus)?;
    run(nightly_cargo(&dir)
        .args(["fuzz", "run", "--release", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // Any single input slower than this, or a process above this, is a finding.
        .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=65536"]))
    .with_context(|| format!("fuzz target {target}: see fuzz/artifacts/{target}/"))
}

/// Copies the repository's examples of `target`'s input into its corpus.
fn seed(target: &str, corpus: &Path) -> Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let root = workspace_root();
    let files: Vec<PathBuf> = match target {
        "rule_file" => yaml_below(&root.join("rules"))?,
        "daemon_config" => vec![root.join("deploy/config.yaml")],
        "contract_import" => vec![root.join("deploy/contracts.yaml")],
        _ => Vec::new(),
    };
    for file in files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('/', "_");
        fs::copy(&file, corpus.join(name))
            .with_context(|| format!("copying {}", file.display()))?;
    }
    for (name, bytes) in built_seeds(target) {
        fs::write(corpus.join(name), bytes).with_context(|| format!("writing seed {name}"))?;
    }
    Ok(())
}

/// Seeds that no file in the repository holds.
fn built_seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "control_request" => vec![
            ("status", br#"{"command":"status"}"#.to_vec()),
            ("reload", br#"{"command":"reload"}"#.to_vec()),
            ("failed", br#"{"ok":false,"error":"no"}"#.to_vec()),
        ],
        "capture" => vec![("udp.pcap", udp_capture())],
        _ => Vec::new(),
    }
}

/// A pcap file (microsecond, Ethernet) holding one 60-byte UDP/IPv4 frame.
fn udp_capture() -> Vec<u8> {
    let mut frame = vec![0u8; 60];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14..34].copy_from_slice(&[
        0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 19, 0, 1,
    ]);
    frame[34..42].copy_from_slice(&[0x9c, 0x40, 0, 53, 0, 26, 0, 0]);
    let mut pcap = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65_535, 1] {
        pcap.extend_from_slice(&word.to_le_bytes());
    }
    let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    for word in [0u32, 0, length, length] {
        pcap.extend_from_slice(&word.to_le_bytes());
    }
    pcap.extend_from_slice(&frame);
    pcap
}

/// Every `.yaml` file below `dir`.
fn yaml_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(yaml_below(&path)?);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
    Ok(found)
}
