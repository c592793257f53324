//! `smf-firewall explain`: what the rules decide for one packet, and why.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use firewall_rules::{
    Direction, Rule, RuleSet, TcpFlags,
    reference::{self, Reason},
    spec::PacketSpec,
};

/// Say what the rules decide for one packet: the verdict, the rule that decided (or the
/// default), and for each earlier rule the first field that did not match.
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
    /// Print one JSON object: {"verdict":"pass"|"drop","rule":ID|null,"default":bool}.
    #[arg(long)]
    json: bool,
    /// `in`: the packet arrives on the interface (its `in` rules, then `default`); `out`:
    /// it leaves by it (its `direction: out` rules, else pass).
    #[arg(long, value_name = "in|out", default_value = "in", value_parser = parse_direction)]
    direction: Direction,
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

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Args {
            file,
            interface,
            packet,
            json,
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
        let decision = reference::decide_direction(policy, &reference::parse(&frame), direction);
        if json {
            let output = ExplainJson {
                verdict: decision.action.to_string(),
                rule: decision.rule.as_deref(),
                default: decision.reason == Reason::Default,
            };
            println!("{}", serde_json::to_string(&output)?);
            return Ok(ExitCode::SUCCESS);
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
            (Reason::Malformed(why), _) => {
                println!("verdict: {} (malformed: {why})", decision.action)
            }
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
                        "  rule `{}` (line {}): {field} does not match{}",
                        rule.id,
                        rule.line,
                        detail(field, rule, &parsed)
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
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
