//! `smf-firewall replay`: a capture through the real XDP program and the reference classifier.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use firewall_rules::RuleSet;

/// Exit status of `replay` when the kernel and the reference disagree on a frame.
const DISAGREEMENT: u8 = 3;

/// Run every frame of a capture through the real XDP program (loaded, attached nowhere)
/// and through the reference classifier; print counts by verdict and by rule and every
/// disagreement. Exit 0 when they agree, 3 when they do not, 1 on an error. Needs root.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML rule file.
    rules: PathBuf,
    /// The interface whose rules judge the frames.
    #[arg(long, value_name = "IF")]
    interface: String,
    /// An Ethernet capture, pcap or pcapng.
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (rules, interface, pcap) = (self.rules.as_path(), self.interface.as_str(), &self.pcap);
        let set = RuleSet::load(rules).context("the rule file is not valid")?;
        let frames = firewall_dataplane::replay::read_frames(pcap)?;
        let report = firewall_dataplane::replay::replay(&set, interface, &frames).context(
            "replay loads the XDP program, which needs root (CAP_BPF and CAP_NET_ADMIN)",
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_replay(&report, rules, interface, pcap);
        }
        Ok(if report.disagreements.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(DISAGREEMENT)
        })
    }
}

fn print_replay(
    report: &firewall_dataplane::replay::Report,
    rules: &Path,
    interface: &str,
    pcap: &Path,
) {
    println!(
        "{} frames of {} on {interface} with {} ({} skipped: shorter than an Ethernet header or longer than a page)",
        report.frames,
        pcap.display(),
        rules.display(),
        report.skipped
    );
    let verdicts: Vec<String> = report
        .verdicts
        .iter()
        .map(|(v, n)| format!("{v} {n}"))
        .collect();
    println!("verdicts: {}", verdicts.join(", "));
    let mut rules: Vec<(&String, &u64)> = report.rules.iter().collect();
    rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (rule, n) in rules {
        println!("  {n:>10}  rule {rule}");
    }
    println!("  {:>10}  default", report.default);
    println!("  {:>10}  non-IP", report.non_ip);
    println!("  {:>10}  malformed", report.malformed);
    if report.disagreements.is_empty() {
        println!("the kernel and the reference agree on every frame");
    }
    for d in &report.disagreements {
        let rule = d.reference_rule.as_deref().unwrap_or("default");
        println!(
            "DISAGREEMENT frame {}: kernel {}, reference {} ({rule}): {}",
            d.frame, d.kernel, d.reference, d.bytes
        );
    }
}
