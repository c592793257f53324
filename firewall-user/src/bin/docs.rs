//! `smf-firewall-docs OUT`: the man pages and shell completions of `smf-firewall`, from its
//! clap definitions (`firewall_user::cli::command`), so that they never disagree with
//! `--help`. `cargo xtask man` runs it; the Debian package ships what it writes.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Parser as _;
use clap_complete::Shell;

/// Write OUT/man8/smf-firewall.8 and one page per subcommand (smf-firewall-check.8, ...),
/// and OUT/completions/{smf-firewall.bash, _smf-firewall, smf-firewall.fish}.
#[derive(clap::Parser)]
struct Args {
    /// The folder to write into (created if missing).
    out: PathBuf,
}

const NAME: &str = "smf-firewall";
/// System administration commands and daemons.
const SECTION: &str = "8";

fn main() -> anyhow::Result<()> {
    let out = Args::parse().out;
    let man = out.join(format!("man{SECTION}"));
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut command = firewall_user::cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    man_pages(&command, &man, &mut pages)?;
    let top = man.join(format!("{NAME}.{SECTION}"));
    see_also(&top, &pages).with_context(|| format!("cannot write {}", top.display()))?;
    let mut command = firewall_user::cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, NAME, &completions)
            .with_context(|| format!("cannot write the {shell} completions"))?;
    }
    println!(
        "wrote {} man pages to {} and bash, zsh and fish completions to {}",
        pages.len() + 1,
        man.display(),
        completions.display()
    );
    Ok(())
}

/// A page for `command` and, recursively, for each of its subcommands; the subcommands'
/// page names are added to `pages`.
fn man_pages(command: &clap::Command, dir: &Path, pages: &mut Vec<String>) -> anyhow::Result<()> {
    let page = clap_mangen::Man::new(command.clone())
        .section(SECTION)
        .manual("System Manager's Manual");
    let path = page
        .generate_to(dir)
        .with_context(|| format!("cannot write the man page of {}", command.get_name()))?;
    if command.get_name() != NAME {
        pages.push(page_name(&path));
    }
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        man_pages(sub, dir, pages)?;
    }
    Ok(())
}

/// `smf-firewall-check` of `.../smf-firewall-check.8`.
fn page_name(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Appends FILES and SEE ALSO to the top page: where the configuration is, and every
/// command's page.
fn see_also(top: &Path, pages: &[String]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().append(true).open(top)?;
    writeln!(file, ".SH FILES")?;
    for (path, what) in [
        (
            firewall_user::config::DEFAULT_CONFIG,
            "the daemon's configuration",
        ),
        ("/etc/smf-firewall/rules.yaml", "the rules it names"),
    ] {
        writeln!(file, ".TP\n\\fI{path}\\fR\n{what}")?;
    }
    writeln!(file, ".SH \"SEE ALSO\"")?;
    let refs: Vec<String> = pages
        .iter()
        .map(|page| format!("\\fB{}\\fR({SECTION})", page.replace('-', "\\-")))
        .collect();
    writeln!(file, "{}", refs.join(",\n"))
}
