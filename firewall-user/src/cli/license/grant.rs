//! `smf-firewall license grant --serial S | --all`.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use crate::grant_server::{decision, issue};
use anyhow::{Context as _, bail};
use firewall_contracts::{Store, fleet};
use firewall_grants::SigningKey;

use super::when;
use crate::cli::contracts::runtime;

/// Write signed grants from the store's decisions.
///
/// A grant of adapter S's licence, decided from the store now (or `--at`) and
/// valid for `--valid`; or, with `--all --out-dir DIR`, one grant per adapter of the store
/// as DIR/SERIAL.grant. Files are replaced whole (written aside, then renamed), so that an
/// adapter watching one never reads half of it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The adapter's serial number, exactly.
    #[arg(
        long,
        value_name = "S",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    serial: Option<String>,
    /// Every adapter of the store.
    #[arg(long, requires = "out_dir")]
    all: bool,
    /// How long the grant holds from its decision: the adapter keeps its licence this long
    /// without a new grant, and a revocation (a not-licensed grant) must reach it within it.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    valid: String,
    /// The provider's signing key (`license keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Where to write the grant [default: stdout].
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    out: Option<PathBuf>,
    /// With --all: the directory for the grants.
    #[arg(long, value_name = "DIR", requires = "all")]
    out_dir: Option<PathBuf>,
    /// The instant to decide for, and the grant's start [default: now].
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
}

impl Args {
    pub fn run(self, url: &str) -> anyhow::Result<ExitCode> {
        let valid = when::validity(&self.valid)?;
        let at = when::instant(self.at.as_deref())?;
        let key = SigningKey::read(&self.key)?;
        runtime()?.block_on(async {
            let store = Store::open(url).await.context("no grant was written")?;
            let Some(dir) = &self.out_dir else {
                let serial = self.serial.as_deref().unwrap_or_default();
                let (_, text) = issue(&store, &key, serial, at, valid)
                    .await
                    .context("no grant was written")?;
                match &self.out {
                    None => println!("{text}"),
                    Some(path) => replace(path, &text)?,
                }
                return Ok(ExitCode::SUCCESS);
            };
            fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
            let started = Instant::now();
            let checks = fleet::decide_all(&store, at).await.context("no grant was written")?;
            let (mut licensed, mut unsafe_names) = (0, Vec::new());
            for check in &checks {
                if !file_name_safe(&check.serial) {
                    unsafe_names.push(check.serial.as_str());
                    continue;
                }
                let (grant, text) = key.issue(&decision(check, at), valid);
                licensed += usize::from(grant.licensed);
                replace(&dir.join(format!("{}.grant", check.serial)), &text)?;
            }
            let written = checks.len() - unsafe_names.len();
            eprintln!(
                "wrote {written} grants ({licensed} licensed, {} not) to {} in {:.1} s, signed by key {}",
                written - licensed,
                dir.display(),
                started.elapsed().as_secs_f64(),
                key.id()
            );
            if !unsafe_names.is_empty() {
                bail!(
                    "no grant written for {} serial(s) that cannot be a file name (`/`, `.`, `..`): {}",
                    unsafe_names.len(),
                    unsafe_names.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// A serial that is one file name in the directory.
fn file_name_safe(serial: &str) -> bool {
    !serial.is_empty() && serial != "." && serial != ".." && !serial.contains(['/', '\0'])
}

/// Writes `text` and a newline beside `path`, then renames it over `path`.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let written = fs::File::create(&temporary)
        .and_then(|mut file| writeln!(file, "{text}"))
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_files() {
        for (serial, safe) in [
            ("FUJI-0001", true),
            (".hidden", true),
            ("a/b", false),
            ("..", false),
            (".", false),
            ("", false),
        ] {
            assert_eq!(file_name_safe(serial), safe, "{serial:?}");
        }
    }
}
