//! `smf-firewall trace`: live packets on an interface and how the running daemon's rules
//! judged them, through its control socket (`crate::trace`).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use firewall_common::trace::{DEFAULT_RATE, MAX_RATE};

use crate::{
    config::DEFAULT_CONFIG,
    control::{
        ControlError,
        protocol::{TraceDirection, TraceRequest},
    },
    trace::{Filter, Line, Started, Totals, TracedPacket},
};

/// Watch live packets on an interface, as `nft monitor trace` does: for each packet that
/// matches, the fields the parser read, whether a tracked flow passed it, the rule that
/// decided (with the ids `explain` prints) or the default, and the verdict. The daemon turns
/// the kernel's trace on for as long as this runs (Ctrl-C ends it) and off when it ends,
/// however it ends; at most --rate packets a second are shown. One trace at a time. The
/// output stays on this terminal, like drop logs (never in metrics). Needs root.
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's configuration: says where its control socket is.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The interface to trace (one the daemon serves).
    #[arg(long, value_name = "IF")]
    interface: String,
    /// `in`: packets arriving (XDP); `out`: packets leaving (TC egress). Both if not given.
    #[arg(long, value_name = "in|out", value_parser = parse_direction)]
    direction: Option<TraceDirection>,
    /// Only these packets: `[PROTO] [SRC[:PORTS] -> DST[:PORTS]]`, each side `any`, an
    /// address or a network, ports `N` or `LO-HI`, IPv6 in brackets before a port. Example:
    /// "tcp 198.19.0.0/16 -> any:22".
    #[arg(long = "match", value_name = "FILTER")]
    filter: Option<String>,
    /// Stop after this many packets.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Packets a second at most, limited in the kernel (1 to 10,000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    rate: u32,
    /// Print one JSON object per packet, per line (see the README for its keys).
    #[arg(long)]
    json: bool,
}

fn parse_direction(text: &str) -> Result<TraceDirection, String> {
    match text {
        "in" => Ok(TraceDirection::In),
        "out" => Ok(TraceDirection::Out),
        _ => Err(format!("`{text}` is not a direction: in or out")),
    }
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if let Some(text) = &self.filter {
            Filter::parse(text)?;
        }
        let socket = super::config::load(&self.config)?
            .operations
            .control_socket();
        let request = crate::control::Request::Trace(TraceRequest {
            count: self.count,
            direction: self.direction,
            interface: self.interface.clone(),
            filter: self.filter.clone(),
            rate_per_second: self.rate,
        });
        let connect = |source| ControlError::Connect {
            path: socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&socket).map_err(connect)?;
        let mut text = serde_json::to_vec(&request)?;
        text.push(b'\n');
        stream
            .write_all(&text)
            .context("cannot send the trace request")?;
        let mut stdout = std::io::stdout().lock();
        let mut shown = 0u64;
        for line in BufReader::new(stream).lines() {
            let line = line.context("the daemon's trace broke off")?;
            let parsed: Line = serde_json::from_str(&line).with_context(|| {
                format!("the daemon sent a line this smf-firewall does not understand: {line}")
            })?;
            match parsed {
                Line::Started { started, .. } => eprintln!("{}", heading(&started)),
                Line::Packet(packet) => {
                    // A closed stdout (`| head`) ends the trace: the daemon sees us go.
                    let written = match self.json {
                        true => writeln!(stdout, "{line}"),
                        false => writeln!(stdout, "{}", describe(&packet)),
                    };
                    if written.and_then(|()| stdout.flush()).is_err() {
                        return Ok(ExitCode::SUCCESS);
                    }
                    shown += 1;
                }
                Line::Done { done, .. } => {
                    eprintln!("{}", summary(shown, done));
                    return Ok(ExitCode::SUCCESS);
                }
                Line::Failed(failure) => bail!("the daemon cannot trace: {}", failure.error),
            }
        }
        bail!(
            "the daemon ended the trace without a word (it was killed, or this client did not read its output for 10 s)"
        )
    }
}

fn heading(started: &Started) -> String {
    let directions: Vec<&str> = started
        .directions
        .iter()
        .map(|d| match d {
            TraceDirection::In => "in",
            TraceDirection::Out => "out",
        })
        .collect();
    format!(
        "tracing {} ({}), {}, at most {} packets a second; Ctrl-C stops",
        started.interface,
        directions.join(" and "),
        started
            .filter
            .as_deref()
            .map_or_else(|| "every packet".to_string(), |f| format!("match `{f}`")),
        started.rate_per_second
    )
}

fn summary(shown: u64, totals: Totals) -> String {
    format!(
        "{shown} packets shown; {} more matched but were over the rate, {} lost (the daemon fell behind)",
        totals.suppressed, totals.lost
    )
}

/// One line: `lan0 in tcp 198.18.0.2:40000 -> 198.18.0.1:22 [SYN], 74 bytes: drop by rule `ssh``.
pub fn describe(packet: &TracedPacket) -> String {
    let way = match packet.direction {
        TraceDirection::In => "in",
        TraceDirection::Out => "out",
    };
    let what = match (packet.frame.as_str(), packet.src, packet.dst) {
        ("ip", Some(src), Some(dst)) => {
            let endpoint = |addr: std::net::IpAddr, port: Option<u16>| match (addr, port) {
                (std::net::IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
                (addr, Some(port)) => format!("{addr}:{port}"),
                (addr, None) => addr.to_string(),
            };
            let mut text = format!(
                "{} {} -> {}",
                packet.protocol.as_deref().unwrap_or("?"),
                endpoint(src, packet.src_port),
                endpoint(dst, packet.dst_port)
            );
            if let (Some(t), Some(c)) = (packet.icmp_type, packet.icmp_code) {
                text += &format!(" type {t} code {c}");
            }
            if let Some(flags) = packet.tcp_flags.as_ref().filter(|f| !f.is_empty()) {
                text += &format!(" [{}]", flags.join(","));
            }
            if packet.fragment {
                text += " frag";
            }
            if let Some(vlan) = packet.vlan.filter(|v| *v != 0) {
                text += &format!(" vlan {vlan}");
            }
            text
        }
        ("non_ip", ..) => "not IP".to_string(),
        _ => "malformed".to_string(),
    };
    let why = match (packet.reason.as_str(), &packet.rule) {
        ("rule", Some(rule)) => format!("by rule `{rule}`"),
        ("tracked", _) => "by a tracked flow".to_string(),
        ("non_ip", _) => "(not IP: `non_ip`)".to_string(),
        ("malformed", _) => "(malformed)".to_string(),
        _ => "by the default (no rule matched)".to_string(),
    };
    let unlicensed = match packet.verdict == packet.rules_verdict {
        true => String::new(),
        false => format!(
            " (not licensed to filter: the rules say {})",
            packet.rules_verdict
        ),
    };
    format!(
        "{} {way} {what}, {} bytes: {} {why}{unlicensed}",
        packet.interface, packet.bytes, packet.verdict
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_reads_as_one_line() {
        let json = concat!(
            r#"{"bytes":74,"default":false,"direction":"in","dst":"2001:2::1","dst_port":22,"#,
            r#""family":"ipv6","fragment":false,"frame":"ip","icmp_code":null,"icmp_type":null,"#,
            r#""interface":"lan0","ktime_ns":5,"protocol":"tcp","reason":"rule","rule":"ssh","#,
            r#""rules_verdict":"drop","src":"2001:2::2","src_port":40000,"#,
            r#""tcp_flags":["SYN"],"tracked":false,"verdict":"pass","vlan":7}"#
        );
        let packet: TracedPacket = serde_json::from_str(json).unwrap();
        assert_eq!(
            describe(&packet),
            "lan0 in tcp [2001:2::2]:40000 -> [2001:2::1]:22 [SYN] vlan 7, 74 bytes: pass by rule `ssh` (not licensed to filter: the rules say drop)"
        );
        let tracked = TracedPacket {
            reason: "tracked".into(),
            rule: None,
            rules_verdict: "pass".into(),
            tcp_flags: Some(vec!["ACK".into()]),
            vlan: Some(0),
            ..packet
        };
        assert_eq!(
            describe(&tracked),
            "lan0 in tcp [2001:2::2]:40000 -> [2001:2::1]:22 [ACK], 74 bytes: pass by a tracked flow"
        );
    }
}
