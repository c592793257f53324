//! `smf-firewall explain`: what the rules decide for one packet, and why.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use firewall_rules::{
    Direction, Policy, Rule, RuleSet, TcpFlags,
    reference::{self, Decision, Limiter, Reason, limit::bucket_text},
    spec::PacketSpec,
};

/// Say what the rules decide for one packet: the verdict, the rule that decided (or the
/// default), and for each earlier rule the first field that did not match. A rule with
/// `limit:` that matches decides only for a packet over its limit: the verdict is the first
/// packet's (every bucket full, so it goes on past each limit rule unless the frame is
/// longer than a byte limit's burst), each such rule is listed with its limit, its bucket and
/// what it decides over the limit, and the verdict over every limit follows.
#[derive(clap::Args)]
pub struct Args {
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
    /// Print one JSON object: {"verdict":"pass"|"drop","rule":ID|null,"default":bool}. When
    /// limit rules match, also "limits":[{"rule":ID,"line":N,"limit":"over 10/s, burst 20,
    /// per src","bucket":"src 198.18.0.7","over":"drop"}] (in rule order, up to the rule
    /// that decides) and "over_limit":{"verdict","rule","default"}: the decision over every
    /// limit.
    #[arg(long)]
    json: bool,
    /// Judge the packet as over every limit (each bucket empty): the first matching limit
    /// rule decides. The first packet's decision is then the alternative shown.
    #[arg(long)]
    over_limit: bool,
    /// `in`: the packet arrives on the interface (its `in` rules, then `default`); `out`:
    /// it leaves by it (its `direction: out` rules, else pass).
    #[arg(long, value_name = "in|out", default_value = "in", value_parser = parse_direction)]
    direction: Direction,
}

/// `explain --json`, fields in this order; the limit fields only when a limit rule matches.
#[derive(serde::Serialize)]
struct ExplainJson<'a> {
    verdict: String,
    rule: Option<&'a str>,
    default: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    limits: Vec<LimitJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    over_limit: Option<VerdictJson<'a>>,
}

/// A decision in `explain --json`.
#[derive(serde::Serialize)]
struct VerdictJson<'a> {
    verdict: String,
    rule: Option<&'a str>,
    default: bool,
}

impl<'a> VerdictJson<'a> {
    fn of(decision: &'a Decision) -> VerdictJson<'a> {
        VerdictJson {
            verdict: decision.action.to_string(),
            rule: decision.rule.as_deref(),
            default: decision.reason == Reason::Default,
        }
    }
}

/// A limit rule the packet matches, up to the rule that decides the first packet.
#[derive(serde::Serialize)]
struct LimitJson {
    rule: String,
    line: u32,
    /// As `check` shows it: `over 10/s, burst 20, per src`.
    limit: String,
    /// The bucket the packet takes from: `the rule`, `src 198.18.0.0/24`.
    bucket: String,
    /// What the rule decides for a packet over the limit.
    over: String,
}

fn parse_direction(text: &str) -> Result<Direction, String> {
    match text {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        _ => Err(format!("`{text}` is not a direction: in or out")),
    }
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Args {
            file,
            interface,
            packet,
            json,
            over_limit,
            direction,
        } = self;
        let (file, interface, packet) = (file.as_path(), interface.as_str(), packet.as_str());
        let rules = RuleSet::load(file).context("the rule file is not valid")?;
        let spec = PacketSpec::parse(packet)?;
        let frame = spec.frame();
        let policy = rules
            .interfaces
            .get(interface)
            .ok_or_else(|| reference::UnknownInterface(interface.to_string()))?;
        let parsed = reference::parse(&frame);
        // The first packet: every bucket full, the frame charged its length.
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let under =
            reference::decide_direction_at(policy, &parsed, direction, &mut Limiter::new(), 0, len);
        let over = reference::decide_direction_with(policy, &parsed, direction, |_, _, _| true);
        let limits = matching_limits(policy, &parsed, direction, &under);
        let (decision, alternative) = if over_limit {
            (&over, &under)
        } else {
            (&under, &over)
        };
        if json {
            let shown = VerdictJson::of(decision);
            let output = ExplainJson {
                verdict: shown.verdict,
                rule: shown.rule,
                default: shown.default,
                over_limit: (!limits.is_empty()).then(|| VerdictJson::of(&over)),
                limits,
            };
            println!("{}", serde_json::to_string(&output)?);
            return Ok(ExitCode::SUCCESS);
        }
        let way = match direction {
            Direction::In => "",
            Direction::Out => " (leaving)",
        };
        println!("{interface}{way}: {packet}");
        let over_note = match (limits.is_empty(), over_limit) {
            (true, _) => "",
            (false, false) => " (the first packet: every bucket full)",
            (false, true) => " (over every limit: --over-limit)",
        };
        println!("verdict: {}{over_note}", verdict_text(decision));
        if let reference::Frame::Ip(packet) = &parsed {
            let same_way = policy.rules.iter().filter(|r| r.direction == direction);
            for rule in same_way {
                if let Some(field) = reference::mismatch(rule, packet) {
                    println!(
                        "  rule `{}` (line {}): {field} does not match{}",
                        rule.id,
                        rule.line,
                        detail(field, rule, packet)
                    );
                } else if let Some(limit) = limits.iter().find(|l| l.rule == rule.id) {
                    println!(
                        "  rule `{}` (line {}): matches; limit {} (bucket: {}): under it the packet goes on, over it this rule decides: {}",
                        limit.rule, limit.line, limit.limit, limit.bucket, limit.over
                    );
                }
                if under.rule.as_deref() == Some(rule.id.as_str()) {
                    break;
                }
            }
        }
        if !limits.is_empty() {
            let other = if over_limit {
                "the first packet (every bucket full)"
            } else {
                "over every limit"
            };
            println!("{other}: {}", verdict_text(alternative));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `pass by rule `ssh``, `drop by the default (no rule matched)`, ...
fn verdict_text(decision: &Decision) -> String {
    let action = decision.action;
    match (&decision.reason, &decision.rule) {
        (Reason::Rule, Some(id)) => format!("{action} by rule `{id}`"),
        (Reason::Default, _) if decision.passed_limits.is_empty() => {
            format!("{action} by the default (no rule matched)")
        }
        (Reason::Default, _) => format!("{action} by the default (no rule decided)"),
        (Reason::Tracked, _) => format!("{action} by a tracked flow"),
        (Reason::NonIp, _) => format!("{action} (not IP: `non_ip`)"),
        (Reason::Malformed(why), _) => format!("{action} (malformed: {why})"),
        (Reason::Rule, None) => unreachable!("a rule decision names its rule"),
    }
}

/// The limit rules of `direction` that the packet matches, in order, up to the rule that
/// decides the first packet (`under`).
fn matching_limits(
    policy: &Policy,
    frame: &reference::Frame,
    direction: Direction,
    under: &Decision,
) -> Vec<LimitJson> {
    let reference::Frame::Ip(packet) = frame else {
        return Vec::new();
    };
    let mut limits = Vec::new();
    for rule in policy.rules.iter().filter(|r| r.direction == direction) {
        if let Some(limit) = &rule.limit
            && reference::mismatch(rule, packet).is_none()
        {
            limits.push(LimitJson {
                rule: rule.id.clone(),
                line: rule.line,
                limit: limit.to_string(),
                bucket: bucket_text(limit, packet.src, packet.dst),
                over: rule.action.to_string(),
            });
        }
        if under.rule.as_deref() == Some(rule.id.as_str()) {
            break;
        }
    }
    limits
}

/// What a mismatch on `field` needs besides its name: for `tcp_flags`, the packet's flags and
/// the rule's (a flags byte is not visible in the SPEC when none is written).
fn detail(field: &str, rule: &Rule, packet: &reference::Packet) -> String {
    match (field, rule.tcp_flags) {
        ("tcp_flags", Some(wanted)) => {
            let has = match packet.tcp_flags {
                Some(0) => "no flags".to_string(),
                Some(byte) => TcpFlags {
                    mask: byte,
                    value: byte,
                }
                .to_string(),
                None => "no TCP header".to_string(),
            };
            format!(" (the packet has {has}, the rule wants {wanted})")
        }
        _ => String::new(),
    }
}
