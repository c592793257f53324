//! `smf-firewall top`: a live view of a running daemon, read from its `/metrics` like
//! Prometheus reads it. Two readings a refresh apart give the rates: per interface and verdict
//! packets/s and bits/s, the adapter's utilization against its model's capacity, the busiest
//! rules, and the licence state.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use ureq::{
    Agent,
    tls::{PemItem, RootCerts, TlsConfig},
};

use crate::metrics::text::{self, ParseError, Sample};

/// Rules listed under "busiest rules".
pub const BUSIEST_RULES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("cannot read {url}: {source}")]
    Fetch { url: String, source: ureq::Error },
    #[error("cannot read the CA certificate {}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{url}: {source}")]
    Parse { url: String, source: ParseError },
}

/// The daemon's `/metrics`, and how to reach it.
pub struct Source {
    url: String,
    agent: Agent,
    /// `user:password` for basic auth.
    credentials: Option<(String, String)>,
}

impl Source {
    /// `ca_file`: trust only this certificate (PEM) for https, e.g. the daemon's self-signed
    /// one; without it, the usual web roots.
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        credentials: Option<(String, String)>,
    ) -> Result<Self, TopError> {
        let mut config = Agent::config_builder().timeout_global(Some(Duration::from_secs(5)));
        if let Some(path) = ca_file {
            config = config.tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&certificates(path)?))
                    .build(),
            );
        }
        Ok(Self {
            url: url.to_string(),
            agent: config.build().into(),
            credentials,
        })
    }

    /// One reading of every sample, with when it was taken.
    pub fn read(&self) -> Result<Snapshot, TopError> {
        let fetch = |source| TopError::Fetch {
            url: self.url.clone(),
            source,
        };
        let mut request = self.agent.get(&self.url);
        if let Some((user, password)) = &self.credentials {
            request = request.header("Authorization", basic_auth(user, password));
        }
        let body = request
            .call()
            .map_err(fetch)?
            .body_mut()
            .read_to_string()
            .map_err(fetch)?;
        let samples = text::parse(&body).map_err(|source| TopError::Parse {
            url: self.url.clone(),
            source,
        })?;
        Ok(Snapshot {
            at: Instant::now(),
            samples,
        })
    }
}

pub(crate) fn certificates(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, TopError> {
    let pem = std::fs::read(path).map_err(|source| TopError::Ca {
        path: path.to_path_buf(),
        source,
    })?;
    let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(certificate)) => Some(certificate),
            _ => None,
        })
        .collect();
    if certificates.is_empty() {
        return Err(TopError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

fn basic_auth(user: &str, password: &str) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Every sample of one reading.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub samples: Vec<Sample>,
}

impl Snapshot {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    fn first(&self, name: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.name == name)
    }
}

/// Packets and bits per second of one interface and verdict, and their totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub interface: String,
    pub verdict: String,
    pub packets_per_second: f64,
    pub bits_per_second: f64,
    pub packets: f64,
    pub bytes: f64,
}

/// One rule's hits.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleHits {
    pub interface: String,
    pub rule: String,
    pub hits_per_second: f64,
    pub hits: f64,
}

/// What one refresh shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub seconds: f64,
    /// serial, model, next model (`smf_firewall_adapter_info`).
    pub adapter: Option<(String, String, String)>,
    pub capacity_bps: Option<f64>,
    /// licensed, reason.
    pub license: Option<(bool, String)>,
    pub store_up: Option<bool>,
    /// interface, mode, attached.
    pub attached: Vec<(String, String, bool)>,
    pub traffic: Vec<Traffic>,
    /// Busiest first.
    pub rules: Vec<RuleHits>,
}

impl Frame {
    /// The rates between two readings of the same daemon.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Frame {
        let seconds = after
            .at
            .saturating_duration_since(before.at)
            .as_secs_f64()
            .max(1e-3);
        let earlier = index(before);
        let rate = |sample: &Sample| {
            let old = earlier.get(&key(sample)).copied().unwrap_or(0.0);
            // A counter that went down was reset (the daemon restarted): count from zero.
            let delta = if sample.value >= old {
                sample.value - old
            } else {
                sample.value
            };
            delta / seconds
        };
        let traffic = after
            .all("smf_firewall_packets_total")
            .map(|packets| {
                let labels = label_pairs(packets, &["interface", "verdict"]);
                let bytes = after
                    .all("smf_firewall_bytes_total")
                    .find(|b| label_pairs(b, &["interface", "verdict"]) == labels);
                Traffic {
                    interface: labels[0].clone(),
                    verdict: labels[1].clone(),
                    packets_per_second: rate(packets),
                    bits_per_second: bytes.map_or(0.0, |b| 8.0 * rate(b)),
                    packets: packets.value,
                    bytes: bytes.map_or(0.0, |b| b.value),
                }
            })
            .collect();
        let mut rules: Vec<RuleHits> = after
            .all("smf_firewall_rule_hits_total")
            .map(|hits| {
                let labels = label_pairs(hits, &["interface", "rule"]);
                RuleHits {
                    interface: labels[0].clone(),
                    rule: labels[1].clone(),
                    hits_per_second: rate(hits),
                    hits: hits.value,
                }
            })
            .collect();
        rules.sort_by(|a, b| {
            b.hits_per_second
                .total_cmp(&a.hits_per_second)
                .then(b.hits.total_cmp(&a.hits))
        });
        rules.truncate(BUSIEST_RULES);
        Frame {
            seconds,
            adapter: after.first("smf_firewall_adapter_info").map(|info| {
                let labels = label_pairs(info, &["serial", "model", "next_model"]);
                (labels[0].clone(), labels[1].clone(), labels[2].clone())
            }),
            capacity_bps: after
                .first("smf_firewall_adapter_capacity_bits_per_second")
                .map(|s| s.value),
            license: after.first("smf_firewall_license_licensed").map(|l| {
                let reason = after
                    .first("smf_firewall_license_info")
                    .and_then(|info| info.label("reason"))
                    .unwrap_or("");
                (l.value == 1.0, reason.to_string())
            }),
            store_up: after
                .first("smf_firewall_contract_store_up")
                .map(|s| s.value == 1.0),
            attached: after
                .all("smf_firewall_xdp_attached")
                .map(|a| {
                    let labels = label_pairs(a, &["interface", "mode"]);
                    (labels[0].clone(), labels[1].clone(), a.value == 1.0)
                })
                .collect(),
            traffic,
            rules,
        }
    }

    /// Bits per second over all interfaces: each packet is counted once, where it enters.
    pub fn total_bits_per_second(&self) -> f64 {
        self.traffic.iter().map(|t| t.bits_per_second).sum()
    }

    /// Total bits per second over the model's rated capacity, when that is known.
    pub fn utilization(&self) -> Option<f64> {
        self.capacity_bps
            .filter(|capacity| *capacity > 0.0)
            .map(|capacity| self.total_bits_per_second() / capacity)
    }
}

fn key(sample: &Sample) -> (String, Vec<(String, String)>) {
    (sample.name.clone(), sample.labels.clone())
}

fn index(snapshot: &Snapshot) -> HashMap<(String, Vec<(String, String)>), f64> {
    snapshot.samples.iter().map(|s| (key(s), s.value)).collect()
}

fn label_pairs(sample: &Sample, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| sample.label(name).unwrap_or("").to_string())
        .collect()
}

/// A value with an SI prefix: `si(96300.0, "bit/s")` is "96.3 kbit/s".
pub fn si(value: f64, unit: &str) -> String {
    let prefixes = [(1e9, "G"), (1e6, "M"), (1e3, "k")];
    match prefixes.iter().find(|(scale, _)| value.abs() >= *scale) {
        Some((scale, prefix)) => format!("{:.1} {prefix}{unit}", value / scale),
        None => format!("{value:.0} {unit}"),
    }
}

/// The frame as text, under a title line.
pub fn render(frame: &Frame, title: &str) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_frame(&mut out, frame, title);
    out
}

fn write_frame(out: &mut String, frame: &Frame, title: &str) -> std::fmt::Result {
    writeln!(out, "{title}")?;
    match &frame.adapter {
        Some((serial, model, _)) => write!(out, "adapter {serial} ({model})")?,
        None => write!(out, "adapter: model unknown")?,
    }
    match &frame.license {
        Some((true, reason)) => write!(out, "   licence: enforcing ({reason})")?,
        Some((false, reason)) => write!(out, "   licence: NOT LICENSED, passing all ({reason})")?,
        None => write!(out, "   licence: unknown")?,
    }
    match frame.store_up {
        Some(true) => writeln!(out, "   store: up")?,
        Some(false) => writeln!(out, "   store: DOWN")?,
        None => writeln!(out)?,
    }
    let total = frame.total_bits_per_second();
    match (frame.capacity_bps, frame.utilization()) {
        (Some(capacity), Some(utilization)) => {
            write!(
                out,
                "traffic {} of {} capacity: utilization {:.1}%",
                si(total, "bit/s"),
                si(capacity, "bit/s"),
                100.0 * utilization
            )?;
            match frame.adapter.as_ref().map(|(_, _, next)| next.as_str()) {
                Some("") | None => writeln!(out)?,
                Some(next) => writeln!(out, "   (next model: {next})")?,
            }
        }
        _ => writeln!(
            out,
            "traffic {}; capacity unknown (no model, or not under `models`)",
            si(total, "bit/s")
        )?,
    }
    let attached: Vec<String> = frame
        .attached
        .iter()
        .map(|(interface, mode, up)| {
            let state = if *up { mode.as_str() } else { "NOT ATTACHED" };
            format!("{interface} {state}")
        })
        .collect();
    writeln!(out, "xdp: {}", attached.join(", "))?;
    writeln!(
        out,
        "\n{:<12} {:<7} {:>10} {:>14} {:>12} {:>14}",
        "interface", "verdict", "packets/s", "bits/s", "packets", "bytes"
    )?;
    for t in &frame.traffic {
        writeln!(
            out,
            "{:<12} {:<7} {:>10.1} {:>14} {:>12} {:>14}",
            t.interface,
            t.verdict,
            t.packets_per_second,
            si(t.bits_per_second, "bit/s"),
            t.packets,
            t.bytes
        )?;
    }
    writeln!(
        out,
        "\nbusiest rules\n{:<12} {:<24} {:>10} {:>12}",
        "interface", "rule", "hits/s", "hits"
    )?;
    for r in &frame.rules {
        writeln!(
            out,
            "{:<12} {:<24} {:>10.1} {:>12}",
            r.interface, r.rule, r.hits_per_second, r.hits
        )?;
    }
    if frame.rules.is_empty() {
        writeln!(out, "(no rules)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(at: Instant, text: &str) -> Snapshot {
        Snapshot {
            at,
            samples: text::parse(text).unwrap(),
        }
    }

    const BEFORE: &str = "\
smf_firewall_packets_total{interface=\"lan0\",verdict=\"pass\"} 100
smf_firewall_bytes_total{interface=\"lan0\",verdict=\"pass\"} 10000
smf_firewall_packets_total{interface=\"lan0\",verdict=\"drop\"} 10
smf_firewall_bytes_total{interface=\"lan0\",verdict=\"drop\"} 1000
smf_firewall_rule_hits_total{interface=\"lan0\",rule=\"quiet\"} 900
smf_firewall_rule_hits_total{interface=\"lan0\",rule=\"busy\"} 10
";

    const AFTER: &str = "\
smf_firewall_packets_total{interface=\"lan0\",verdict=\"pass\"} 300
smf_firewall_bytes_total{interface=\"lan0\",verdict=\"pass\"} 60000
smf_firewall_packets_total{interface=\"lan0\",verdict=\"drop\"} 30
smf_firewall_bytes_total{interface=\"lan0\",verdict=\"drop\"} 3500
smf_firewall_rule_hits_total{interface=\"lan0\",rule=\"quiet\"} 900
smf_firewall_rule_hits_total{interface=\"lan0\",rule=\"busy\"} 30
smf_firewall_adapter_info{model=\"x1\",next_model=\"x2\",serial=\"S-1\"} 1
smf_firewall_adapter_capacity_bits_per_second 1e6
smf_firewall_license_licensed 1
smf_firewall_license_info{model=\"x1\",reason=\"licensed\",role=\"entry\",serial=\"S-1\"} 1
smf_firewall_contract_store_up 1
smf_firewall_xdp_attached{interface=\"lan0\",mode=\"driver\"} 1
";

    #[test]
    fn rates_utilization_and_busiest_rules_over_two_seconds() {
        let start = Instant::now();
        let frame = Frame::between(
            &snapshot(start, BEFORE),
            &snapshot(start + Duration::from_secs(2), AFTER),
        );
        let pass = &frame.traffic[0];
        assert_eq!(
            (pass.interface.as_str(), pass.verdict.as_str()),
            ("lan0", "pass")
        );
        assert_eq!(pass.packets_per_second, 100.0); // 200 packets in 2 s
        assert_eq!(pass.bits_per_second, 200_000.0); // 50,000 bytes in 2 s
        assert_eq!(frame.traffic[1].bits_per_second, 10_000.0);
        assert_eq!(frame.total_bits_per_second(), 210_000.0);
        assert_eq!(frame.utilization(), Some(0.21));
        // By rate, not by total: "busy" is busier now though "quiet" hit more in the past.
        assert_eq!(frame.rules[0].rule, "busy");
        assert_eq!(frame.rules[0].hits_per_second, 10.0);
        assert_eq!(frame.license, Some((true, "licensed".to_string())));
        let text = render(&frame, "title");
        for expected in [
            "adapter S-1 (x1)",
            "licence: enforcing (licensed)",
            "store: up",
            "traffic 210.0 kbit/s of 1.0 Mbit/s capacity: utilization 21.0%   (next model: x2)",
            "xdp: lan0 driver",
            "lan0         pass         100.0   200.0 kbit/s          300          60000",
            "lan0         busy                           10.0           30",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn a_reset_counter_counts_from_zero_and_unknowns_are_said() {
        let start = Instant::now();
        let after = "smf_firewall_packets_total{interface=\"lan0\",verdict=\"pass\"} 5\n\
                     smf_firewall_license_licensed 0\n\
                     smf_firewall_xdp_attached{interface=\"lan0\",mode=\"skb\"} 0\n";
        let frame = Frame::between(
            &snapshot(start, BEFORE),
            &snapshot(start + Duration::from_secs(1), after),
        );
        assert_eq!(frame.traffic[0].packets_per_second, 5.0);
        assert_eq!(frame.utilization(), None);
        let text = render(&frame, "title");
        for expected in [
            "adapter: model unknown",
            "NOT LICENSED",
            "capacity unknown",
            "lan0 NOT ATTACHED",
            "(no rules)",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn si_prefixes() {
        let cases = [
            (0.0, "0 bit/s"),
            (999.0, "999 bit/s"),
            (96_300.0, "96.3 kbit/s"),
            (2.5e9, "2.5 Gbit/s"),
        ];
        for (value, text) in cases {
            assert_eq!(si(value, "bit/s"), text);
        }
    }
}
