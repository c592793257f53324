//! The `smf-firewall` command line.

mod conntrack_cli;
mod contracts_cli;
mod ops_cli;
mod top_cli;

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use firewall_dataplane::loader::Capacity;
use firewall_rules::{
    Direction, Limits, RuleSet,
    compile::{self, RuleCounters},
    reference::{self, Reason},
    spec::PacketSpec,
    validate,
};
use tracing_subscriber::EnvFilter;

/// smf-firewall: the XDP firewall dataplane of the SMF sx Ultra Firewall Option.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every frame of a capture through the real XDP program (loaded, attached nowhere)
    /// and through the reference classifier; print counts by verdict and by rule and every
    /// disagreement. Exit 0 when they agree, 3 when they do not, 1 on an error. Needs root.
    Replay {
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
    },
    /// Validate a rule file without touching the kernel. Prints each interface's rules and any
    /// warnings and exits 0 when the file is valid; prints every error as
    /// FILE:LINE:COL: error: ... and exits 1 when it is not.
    Check {
        /// The YAML rule file.
        file: PathBuf,
        /// Warn when an interface has more rules than this.
        #[arg(long, value_name = "N", default_value_t = validate::DEFAULT_RULES_WARNING)]
        max_rules: usize,
    },
    /// Say what the rules decide for one packet: the verdict, the rule that decided (or the
    /// default), and for each earlier rule the first field that did not match.
    Explain {
        /// The YAML rule file.
        file: PathBuf,
        /// The interface the packet arrives on.
        #[arg(long, value_name = "IF")]
        interface: String,
        /// The packet: `PROTO SRC[:PORT] -> DST[:PORT]` with IPv6 in brackets before a port,
        /// then optionally `type N code N` (icmp), `flags SYN,ACK` (tcp), `vlan N`, `frag`
        /// (a non-first fragment). Example: "tcp 198.18.0.10:40000 -> 198.19.0.1:22".
        #[arg(long, value_name = "SPEC")]
        packet: String,
        /// Print one JSON object: {"verdict":"pass"|"drop","rule":ID|null,"default":bool}.
        #[arg(long)]
        json: bool,
        /// `in`: the packet arrives on the interface (its `in` rules, then `default`); `out`:
        /// it leaves by it (its `direction: out` rules, else pass).
        #[arg(long, value_name = "in|out", default_value = "in", value_parser = parse_direction)]
        direction: Direction,
    },
    /// Run the firewall: attach XDP (and the TC egress program) to the configured interfaces,
    /// enforce the rules, serve Prometheus metrics and the control socket; pins maps and links
    /// so that the kernel keeps enforcing if the daemon dies. SIGHUP reloads the rules.
    /// SIGINT or SIGTERM detach and unpin (unless `keep_attached_on_exit: true`).
    Run {
        /// The daemon's YAML configuration (rules file, interfaces, metrics address).
        #[arg(long, value_name = "FILE", default_value = firewall_user::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make the running daemon read, validate and compile its rules file again and swap it in
    /// atomically (as SIGHUP does). Prints what changed per interface and exits 0; on a bad
    /// file prints FILE:LINE:COL: error: ..., changes nothing and exits 1.
    Reload(ops_cli::ReloadArgs),
    /// What the running daemon does: interfaces and XDP mode, rules and generation, the last
    /// reload, the licence, connection tracking, uptime.
    Status(ops_cli::StatusArgs),
    /// Detach and unpin whatever a daemon left behind (after `keep_attached_on_exit` or a
    /// kill -9). Refuses while the daemon is running.
    Unload(ops_cli::UnloadArgs),
    /// Manage the contract store: management contracts, adapters, Ultra Firewall Options.
    Contracts(contracts_cli::ContractsArgs),
    /// Decide whether the Ultra Firewall Option is licensed for an adapter: exit 0 licensed,
    /// 4 not licensed, 1 on error.
    License(contracts_cli::LicenseArgs),
    /// A live view of the running daemon from its /metrics: packets/s and bits/s per
    /// interface and verdict, utilization against the model's capacity, the busiest rules,
    /// the licence state. Refreshes every second; --once prints one frame and exits.
    Top(top_cli::TopArgs),
    /// The running daemon's connection-tracking table: live flows by protocol and state (no
    /// addresses). `conntrack flush` deletes every flow. Reads the maps the daemon pinned
    /// under its config's `pin_path`. Needs root.
    Conntrack(conntrack_cli::ConntrackArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SMF_FIREWALL_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            // Our errors' messages already carry their causes: print the context, then the
            // cause, so that each `FILE:LINE:COL: error: ...` starts its own line.
            eprintln!("error: {error}");
            if let Some(cause) = error.chain().nth(1) {
                eprintln!("{cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Contracts(args) => contracts_cli::contracts(args),
        Command::Conntrack(args) => conntrack_cli::conntrack(args).map(|()| ExitCode::SUCCESS),
        Command::License(args) => contracts_cli::license(args),
        Command::Top(args) => top_cli::top(args)
            .context("cannot show the daemon's metrics")
            .map(|()| ExitCode::SUCCESS),
        Command::Replay {
            rules,
            interface,
            pcap,
            json,
        } => replay(&rules, &interface, &pcap, json),
        Command::Check { file, max_rules } => check(&file, max_rules).map(|()| ExitCode::SUCCESS),
        Command::Explain {
            file,
            interface,
            packet,
            json,
            direction,
        } => explain(&file, &interface, &packet, json, direction).map(|()| ExitCode::SUCCESS),
        Command::Reload(args) => ops_cli::reload(args),
        Command::Status(args) => ops_cli::status(args),
        Command::Unload(args) => ops_cli::unload(args),
        Command::Run { config } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime
                .block_on(firewall_user::daemon::run(&config))
                .with_context(|| format!("while running with {}", config.display()))
                .map(|()| ExitCode::SUCCESS)
        }
    }
}

fn check(file: &Path, max_rules: usize) -> anyhow::Result<()> {
    let limits = Limits {
        rules_per_interface: max_rules,
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
    println!("{}: valid", file.display());
    for (interface, policy) in &checked.rules.interfaces {
        let count = policy.rules.len();
        let noun = if count == 1 { "rule" } else { "rules" };
        println!(
            "{interface}: default {}, non-IP {}, {count} {noun} (first match wins)",
            policy.default, policy.non_ip
        );
        for (position, rule) in policy.rules.iter().enumerate() {
            println!("  {:>3}. {rule}", position + 1);
        }
    }
    println!(
        "dataplane: {} entries, {} tree nodes, {} leaf items, at most {} entries checked per tree, {:.1} MiB of kernel maps",
        compiled.entries.len(),
        compiled.nodes.len(),
        compiled.leaves.len(),
        compiled.longest_leaf(),
        Capacity::for_compiled(&compiled).bytes() as f64 / f64::from(1 << 20),
    );
    for warning in &checked.warnings {
        let w = &warning.0;
        println!(
            "{}:{}:{}: warning: {}",
            file.display(),
            w.line,
            w.column,
            w.message
        );
    }
    Ok(())
}

/// `explain --json`, fields in this order.
#[derive(serde::Serialize)]
struct ExplainJson<'a> {
    verdict: String,
    rule: Option<&'a str>,
    default: bool,
}

fn parse_direction(text: &str) -> Result<Direction, String> {
    match text {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        _ => Err(format!("`{text}` is not a direction: in or out")),
    }
}

fn explain(
    file: &Path,
    interface: &str,
    packet: &str,
    json: bool,
    direction: Direction,
) -> anyhow::Result<()> {
    let rules = RuleSet::load(file).context("the rule file is not valid")?;
    let spec = PacketSpec::parse(packet)?;
    let frame = spec.frame();
    let policy = rules
        .interfaces
        .get(interface)
        .ok_or_else(|| reference::UnknownInterface(interface.to_string()))?;
    let decision = reference::decide_direction(policy, &reference::parse(&frame), direction);
    if json {
        let output = ExplainJson {
            verdict: decision.action.to_string(),
            rule: decision.rule.as_deref(),
            default: decision.reason == Reason::Default,
        };
        println!("{}", serde_json::to_string(&output)?);
        return Ok(());
    }
    let way = match direction {
        Direction::In => "",
        Direction::Out => " (leaving)",
    };
    println!("{interface}{way}: {packet}");
    match (&decision.reason, &decision.rule) {
        (Reason::Rule, Some(id)) => println!("verdict: {} by rule `{id}`", decision.action),
        (Reason::Default, _) => println!(
            "verdict: {} by the default (no rule matched)",
            decision.action
        ),
        (Reason::Tracked, _) => println!("verdict: {} by a tracked flow", decision.action),
        (Reason::NonIp, _) => println!("verdict: {} (not IP: `non_ip`)", decision.action),
        (Reason::Malformed(why), _) => println!("verdict: {} (malformed: {why})", decision.action),
        (Reason::Rule, None) => unreachable!("a rule decision names its rule"),
    }
    if let reference::Frame::Ip(parsed) = reference::parse(&frame) {
        let same_way = policy.rules.iter().filter(|r| r.direction == direction);
        for rule in same_way {
            if decision.rule.as_deref() == Some(rule.id.as_str()) {
                break;
            }
            if let Some(field) = reference::mismatch(rule, &parsed) {
                println!(
                    "  rule `{}` (line {}): {field} does not match",
                    rule.id, rule.line
                );
            }
        }
    }
    Ok(())
}

/// Exit status of `replay` when the kernel and the reference disagree on a frame.
const DISAGREEMENT: u8 = 3;

fn replay(rules: &Path, interface: &str, pcap: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let set = RuleSet::load(rules).context("the rule file is not valid")?;
    let frames = firewall_dataplane::replay::read_frames(pcap)?;
    let report = firewall_dataplane::replay::replay(&set, interface, &frames)
        .context("replay loads the XDP program, which needs root (CAP_BPF and CAP_NET_ADMIN)")?;
    if json {
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
