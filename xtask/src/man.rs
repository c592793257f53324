//! `cargo xtask man`: the man pages and shell completions of smf-firewall, written by
//! `smf-firewall-docs` (firewall-user's `docs` feature) from the clap definitions. xtask
//! cannot link firewall-user itself: its build needs the eBPF toolchain that `setup` installs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{cargo, run_quiet};

/// Write the man pages (OUT/man8: smf-firewall.8 and one page per command) and the bash,
/// zsh and fish completions (OUT/completions) of smf-firewall.
#[derive(clap::Args)]
pub struct Args {
    /// The folder to write into, relative to the current directory.
    #[arg(long, default_value = "target/man")]
    out: PathBuf,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let out = std::path::absolute(&self.out)
            .with_context(|| format!("bad folder {}", self.out.display()))?;
        generate(&out)?;
        println!(
            "wrote {}/man8/*.8 and {}/completions",
            out.display(),
            out.display()
        );
        Ok(())
    }
}

/// Runs smf-firewall-docs into `out` (an absolute path).
pub fn generate(out: &Path) -> Result<()> {
    run_quiet(
        cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "firewall-user",
                "--features",
                "docs",
            ])
            .args(["--bin", "smf-firewall-docs", "--"])
            .arg(out),
    )
}

#[cfg(test)]
mod tests {
    use std::{fs, process::Command};

    use super::*;

    /// A fresh folder under target/, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = crate::workspace_root()
                .join("target/xtask-tests")
                .join(format!("{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn output(command: &mut Command) -> (bool, String, String) {
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every page renders with `man -l` without a groff warning, and names its command; the
    /// top page and each command of `--help` has one; each shell loads its completions.
    #[test]
    fn man_pages_render_and_completions_load() {
        let scratch = Scratch::new("man");
        generate(&scratch.0).unwrap();
        let man8 = scratch.0.join("man8");
        let mut pages: Vec<String> = fs::read_dir(&man8)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        for command in [
            "",
            "-run",
            "-check",
            "-explain",
            "-reload",
            "-status",
            "-top",
            "-conntrack",
            "-license",
            "-contracts",
            "-billing",
            "-unload",
            "-replay",
        ] {
            let page = format!("smf-firewall{command}.8");
            assert!(pages.contains(&page), "{page} missing from {pages:?}");
        }
        for page in &pages {
            let (ok, text, warnings) = output(
                Command::new("man")
                    .args(["--warnings", "-l"])
                    .arg(man8.join(page))
                    .env("MANWIDTH", "80"),
            );
            assert!(ok && warnings.is_empty(), "{page}: {warnings}");
            let name = page.trim_end_matches(".8");
            assert!(
                text.contains("SYNOPSIS") && text.contains(name),
                "{page}: {text}"
            );
        }
        let top = fs::read_to_string(man8.join("smf-firewall.8")).unwrap();
        assert!(top.contains(r"\fBsmf\-firewall\-replay\fR(8)"), "{top}");

        let completions = scratch.0.join("completions");
        let bash = completions.join("smf-firewall.bash");
        let (ok, shown, errors) = output(
            Command::new("bash")
                .arg("-c")
                .arg(r#"source "$1" && complete -p smf-firewall"#)
                .arg("bash")
                .arg(&bash),
        );
        assert!(ok, "{errors}");
        assert!(shown.trim_end().ends_with(" smf-firewall"), "{shown}");
        // zsh: the file is a completion function, loaded by compinit from $fpath.
        let zsh = completions.join("_smf-firewall");
        let (ok, _, errors) = output(Command::new("zsh").arg("-n").arg(&zsh));
        assert!(ok, "zsh: {errors}");
        let (ok, listed, errors) = output(
            Command::new("zsh")
                .args(["-f", "-c"])
                .arg(r#"fpath=("$1" $fpath); autoload -Uz compinit && compinit -u && print -r -- $_comps[smf-firewall]"#)
                .arg("zsh")
                .arg(&completions),
        );
        assert!(
            ok && listed.trim() == "_smf-firewall",
            "zsh: {listed} {errors}"
        );
        let fish = completions.join("smf-firewall.fish");
        let (ok, listed, errors) = output(
            Command::new("fish")
                .arg("-c")
                .arg(r#"source $argv[1]; complete -C "smf-firewall ch""#)
                .arg(&fish),
        );
        assert!(ok, "fish: {errors}");
        assert!(listed.starts_with("check"), "fish: {listed}");
    }
}
