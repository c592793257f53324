//! `smf-firewall check`: validate a rule file without touching the kernel.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use firewall_dataplane::loader::Capacity;
use firewall_rules::{
    Limits, RuleSet,
    compile::{self, RuleCounters},
    validate,
};

/// Validate a rule file without touching the kernel. Prints each interface's rules and any
/// warnings and exits 0 when the file is valid; prints every error as
/// FILE:LINE:COL: error: ... and exits 1 when it is not.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML rule file.
    file: PathBuf,
    /// Warn when an interface has more rules than this.
    #[arg(long, value_name = "N", default_value_t = validate::DEFAULT_RULES_WARNING)]
    max_rules: usize,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let file = &self.file;
        let limits = Limits {
            rules_per_interface: self.max_rules,
            ..Limits::default()
        };
        let checked = RuleSet::load_checked(file, &limits)
            .context("the rule file is not valid; nothing was loaded")?;
        // What the daemon could not load is an error here too, never "valid" with a warning.
        let slots: Vec<(String, u32)> = checked.rules.interfaces.keys().cloned().zip(0..).collect();
        let compiled = compile::ruleset(&checked.rules, &slots, &mut RuleCounters::default())
            .map_err(|error| {
                anyhow::anyhow!(
                    "{}: error: the dataplane cannot load these rules: {error}",
                    file.display()
                )
            })
            .context("the rule file is not valid; nothing was loaded")?;
        // Through fallible writes: output into a full disk is an error of one line, not a
        // panic (a closed pipe ends the command by SIGPIPE first, see main).
        let mut out = io::BufWriter::new(io::stdout().lock());
        let written = (|| -> io::Result<()> {
            writeln!(out, "{}: valid", file.display())?;
            for (interface, policy) in &checked.rules.interfaces {
                let count = policy.rules.len();
                let noun = if count == 1 { "rule" } else { "rules" };
                writeln!(
                    out,
                    "{interface}: default {}, non-IP {}, {count} {noun} (first match wins)",
                    policy.default, policy.non_ip
                )?;
                for (position, rule) in policy.rules.iter().enumerate() {
                    writeln!(out, "  {:>3}. {rule}", position + 1)?;
                }
            }
            writeln!(
                out,
                "dataplane: {} entries, {} tree nodes, {} leaf items, at most {} entries checked per tree, {:.1} MiB of kernel maps",
                compiled.entries.len(),
                compiled.nodes.len(),
                compiled.leaves.len(),
                compiled.longest_leaf(),
                Capacity::for_compiled(&compiled).bytes() as f64 / f64::from(1 << 20),
            )?;
            for warning in &checked.warnings {
                let w = &warning.0;
                writeln!(
                    out,
                    "{}:{}:{}: warning: {}",
                    file.display(),
                    w.line,
                    w.column,
                    w.message
                )?;
            }
            out.flush()
        })();
        if let Err(error) = written {
            anyhow::bail!("cannot write the output: {error}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
