//! `cargo xtask deb`: the Debian package, assembled in a staging tree and built with
//! `dpkg-deb` (always there on Debian; cargo-deb is not packaged for offline use here).
//! The maintainer scripts are deploy/debian/{postinst,prerm,postrm}.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, man, output, run, run_quiet, setup, workspace_root};

const PACKAGE: &str = "smf-firewall";
const ARCH: &str = "amd64";

/// Build target/debian/smf-firewall_VERSION_amd64.deb: the release binary in /usr/sbin, the
/// systemd unit, /etc/smf-firewall/{config,rules}.yaml as conffiles, /var/lib/smf-firewall,
/// the Prometheus rules and Grafana dashboard under /usr/share/smf-firewall, man pages and
/// bash, zsh and fish completions; then lintian, which must report no error.
#[derive(clap::Args)]
pub struct Args {
    /// The package version (default: the workspace's).
    #[arg(long)]
    version: Option<String>,
    /// Package this binary instead of building target/release/smf-firewall (it is stripped).
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// Where to write the package, relative to the current directory.
    #[arg(long, value_name = "DIR", default_value = "target/debian")]
    out: PathBuf,
    /// Skip lintian.
    #[arg(long)]
    no_lintian: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let version = self
            .version
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        let binary = match self.binary {
            Some(binary) => std::path::absolute(binary)?,
            None => {
                setup::ensure()?;
                run(cargo().args(["build", "--release", "-p", "firewall-user"]))?;
                workspace_root().join("target/release/smf-firewall")
            }
        };
        let out = std::path::absolute(&self.out)?;
        let deb = build(&version, &binary, &out)?;
        if !self.no_lintian {
            lintian(&deb)?;
        }
        println!("built {}", deb.display());
        Ok(())
    }
}

/// Stages and builds the package; returns its path.
fn build(version: &str, binary: &Path, out: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    let stage = out.join(format!("{PACKAGE}_{version}_{ARCH}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    let docs = out.join("docs");
    man::generate(&docs)?;

    let sbin = stage.join("usr/sbin/smf-firewall");
    copy(binary, &sbin, 0o755)?;
    run_quiet(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment"])
            .arg(&sbin),
    )?;
    let unit = fs::read_to_string(root.join("deploy/smf-firewall.service"))?
        .replace("/usr/local/bin/smf-firewall", "/usr/sbin/smf-firewall")
        .replace(
            "Documentation=file:///usr/share/doc/smf-firewall/README.md",
            "Documentation=man:smf-firewall(8)",
        );
    write(
        &stage.join("lib/systemd/system/smf-firewall.service"),
        &unit,
        0o644,
    )?;
    copy(
        &root.join("deploy/config.yaml"),
        &stage.join("etc/smf-firewall/config.yaml"),
        0o644,
    )?;
    copy(
        &root.join("rules/example.yaml"),
        &stage.join("etc/smf-firewall/rules.yaml"),
        0o644,
    )?;
    dir(&stage.join("var/lib/smf-firewall"), 0o755)?;
    let share = stage.join("usr/share/smf-firewall");
    copy(
        &root.join("deploy/prometheus/rules.yml"),
        &share.join("prometheus/rules.yml"),
        0o644,
    )?;
    copy(
        &root.join("deploy/grafana/smf-firewall.json"),
        &share.join("grafana/smf-firewall.json"),
        0o644,
    )?;
    for page in fs::read_dir(docs.join("man8"))? {
        let page = page?.path();
        let name = page
            .file_name()
            .context("a page")?
            .to_string_lossy()
            .into_owned();
        let target = stage.join("usr/share/man/man8").join(format!("{name}.gz"));
        gzip(&page, &target)?;
    }
    let completions = docs.join("completions");
    for (from, to) in [
        (
            "smf-firewall.bash",
            "usr/share/bash-completion/completions/smf-firewall",
        ),
        (
            "_smf-firewall",
            "usr/share/zsh/vendor-completions/_smf-firewall",
        ),
        (
            "smf-firewall.fish",
            "usr/share/fish/vendor_completions.d/smf-firewall.fish",
        ),
    ] {
        copy(&completions.join(from), &stage.join(to), 0o644)?;
    }
    let doc = stage.join("usr/share/doc/smf-firewall");
    copy(
        &root.join("deploy/debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    // A native package (no Debian revision): its changelog is changelog.gz.
    let changelog = out.join("changelog");
    fs::write(&changelog, changelog_text(version))?;
    gzip(&changelog, &doc.join("changelog.gz"))?;

    let control = stage.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &root.join("deploy/debian").join(script),
            &control.join(script),
            0o755,
        )?;
    }
    write(
        &control.join("conffiles"),
        "/etc/smf-firewall/config.yaml\n/etc/smf-firewall/rules.yaml\n",
        0o644,
    )?;
    write(&control.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    let fields = control_text(version, &depends(&sbin, out)?, installed_kib(&stage)?);
    write(&control.join("control"), &fields, 0o644)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{ARCH}.deb"));
    run_quiet(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}

fn control_text(version: &str, depends: &str, kib: u64) -> String {
    format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: {ARCH}
Maintainer: smf-firewall developers <smf-firewall@example.org>
Installed-Size: {kib}
Depends: {depends}
Section: net
Priority: optional
Description: XDP firewall of the SMF sx Ultra Firewall Option
 smf-firewall enforces first-match rules on network interfaces in the kernel
 (XDP for arriving packets, TC for leaving ones), with connection tracking,
 drop logs, Prometheus metrics and licence checks against a contract store.
 The daemon is not started on install: name the interfaces in
 /etc/smf-firewall/config.yaml, check the rules with
 `smf-firewall check /etc/smf-firewall/rules.yaml`, then enable the service.
"
    )
}

fn changelog_text(version: &str) -> String {
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium

  * Built by cargo xtask deb.

 -- smf-firewall developers <smf-firewall@example.org>  Mon, 01 Jun 2026 00:00:00 +0000
"
    )
}

/// The shared libraries the binary needs, as dpkg-shlibdeps reads them from its ELF.
fn depends(binary: &Path, out: &Path) -> Result<String> {
    let scratch = out.join("shlibdeps");
    fs::create_dir_all(scratch.join("debian"))?;
    fs::write(
        scratch.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: {ARCH}\n"),
    )?;
    let printed = output(
        Command::new("dpkg-shlibdeps")
            .args(["-O", "-xlibc-dev"])
            .arg(format!("-e{}", binary.display()))
            .current_dir(&scratch),
    )?;
    fs::remove_dir_all(&scratch)?;
    match printed.trim().strip_prefix("shlibs:Depends=") {
        Some(depends) if !depends.is_empty() => Ok(depends.to_string()),
        _ => bail!(
            "dpkg-shlibdeps found no dependencies of {}",
            binary.display()
        ),
    }
}

/// `md5sum` lines of every file below `stage` outside DEBIAN/, paths relative to it.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    files.sort();
    let listing = output(Command::new("md5sum").args(&files).current_dir(stage))?;
    if listing.lines().count() != files.len() {
        bail!("md5sum did not sum every file");
    }
    Ok(listing)
}

fn collect_files(stage: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let relative = path.strip_prefix(stage)?.to_path_buf();
        if relative.starts_with("DEBIAN") {
            continue;
        }
        if path.is_dir() {
            collect_files(stage, &path, files)?;
        } else {
            files.push(relative);
        }
    }
    Ok(())
}

/// Installed-Size: the files' sizes in KiB, rounded up per file as dpkg-gencontrol does.
fn installed_kib(stage: &Path) -> Result<u64> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    let mut kib = 0;
    for file in files {
        kib += fs::metadata(stage.join(file))?.len().div_ceil(1024);
    }
    Ok(kib)
}

/// lintian on the package: an error (E:) fails the build; warnings are printed.
fn lintian(deb: &Path) -> Result<()> {
    let report = output(
        Command::new("lintian")
            .args(["--no-tag-display-limit"])
            .arg(deb),
    )?;
    print!("{report}");
    let errors: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E:"))
        .collect();
    if !errors.is_empty() {
        bail!(
            "lintian reports {} error(s):\n{}",
            errors.len(),
            errors.join("\n")
        );
    }
    Ok(())
}

fn dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn parent(path: &Path) -> Result<()> {
    let parent = path.parent().context("a path with a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    parent(to)?;
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    parent(to)?;
    fs::write(to, text).with_context(|| format!("cannot write {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n` (no name or time stamp, as Debian wants man pages and changelogs).
fn gzip(from: &Path, to: &Path) -> Result<()> {
    parent(to)?;
    let file = fs::File::create(to)?;
    let status = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(from)
        .stdout(file)
        .status()?;
    if !status.success() {
        bail!("gzip {} failed", from.display());
    }
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}
