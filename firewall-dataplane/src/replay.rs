//! `smf-firewall replay`: a capture through the real XDP program (loaded, attached nowhere,
//! run with BPF_PROG_TEST_RUN) and through the reference classifier, frame by frame. Operators
//! try a rule change on real traffic before deploying it; it is also the oracle check on
//! traffic no one here wrote. Any disagreement is a bug in one of the two.

use std::{collections::BTreeMap, fs, path::Path};

use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;

use firewall_common::Verdict;
use firewall_rules::{
    Action, Direction, RuleSet,
    compile::{self, CompileError, RuleCounters},
    reference::{self, Limiter, Reason},
};

/// Where the replay's clock starts: the kernel's fixed clock is 0 only when it is off.
const SECOND_NS: u64 = 1_000_000_000;

use crate::loader::{Capacity, Dataplane, LoaderError};

/// The largest frame BPF_PROG_TEST_RUN takes for XDP without fragments (a page less the
/// headroom and the shared info).
const MAX_FRAME: usize = 3_500;
const MIN_FRAME: usize = 14;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a pcap or pcapng capture: {error}")]
    Capture {
        path: String,
        error: pcap_file::PcapError,
    },
    #[error("{path}: link type {link:?}; replay reads Ethernet captures only")]
    LinkType { path: String, link: DataLink },
    #[error("interface {0} has no rules in this rule set")]
    UnknownInterface(String),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// Where the kernel and the reference differ on a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// 1-based position in the capture.
    pub frame: u64,
    pub kernel: String,
    pub reference: String,
    /// The rule the reference says decides, if any.
    pub reference_rule: Option<String>,
    pub bytes: String,
}

/// Counts by verdict and by what decided, and every disagreement.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub frames: u64,
    /// Frames XDP would never be handed (shorter than an Ethernet header) or that
    /// BPF_PROG_TEST_RUN cannot take (longer than a page).
    pub skipped: u64,
    pub verdicts: BTreeMap<String, u64>,
    pub rules: BTreeMap<String, u64>,
    pub default: u64,
    pub non_ip: u64,
    pub malformed: u64,
    pub disagreements: Vec<Disagreement>,
}

/// A frame of a capture and when it was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Nanoseconds since the Unix epoch, as the capture says (a simple pcapng packet, which
    /// has no time, takes the one before it).
    pub at_ns: u64,
    pub bytes: Vec<u8>,
}

/// The Ethernet frames of a pcap or pcapng file.
pub fn read_frames(path: &Path) -> Result<Vec<Captured>, ReplayError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).map_err(|error| ReplayError::Read {
        path: shown.clone(),
        error,
    })?;
    parse_frames(&shown, &bytes)
}

/// The Ethernet frames of a pcap or pcapng capture held in memory; `name` names it in errors.
pub fn parse_frames(name: &str, bytes: &[u8]) -> Result<Vec<Captured>, ReplayError> {
    let capture = |error| ReplayError::Capture {
        path: name.to_string(),
        error,
    };
    let link = |link: DataLink| match link {
        DataLink::ETHERNET => Ok(()),
        link => Err(ReplayError::LinkType {
            path: name.to_string(),
            link,
        }),
    };
    if let Ok(mut reader) = PcapReader::new(bytes) {
        link(reader.header().datalink)?;
        let mut frames = Vec::new();
        while let Some(packet) = reader.next_packet() {
            let packet = packet.map_err(capture)?;
            frames.push(Captured {
                at_ns: nanos(packet.timestamp),
                bytes: packet.data.into_owned(),
            });
        }
        return Ok(frames);
    }
    let mut reader = PcapNgReader::new(bytes).map_err(capture)?;
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.map_err(capture)? {
            Block::InterfaceDescription(interface) => link(interface.linktype)?,
            Block::EnhancedPacket(packet) => frames.push(Captured {
                at_ns: nanos(packet.timestamp),
                bytes: packet.data.into_owned(),
            }),
            Block::SimplePacket(packet) => frames.push(Captured {
                at_ns: frames.last().map_or(0, |f: &Captured| f.at_ns),
                bytes: packet.data.into_owned(),
            }),
            _ => {}
        }
    }
    Ok(frames)
}

fn nanos(timestamp: std::time::Duration) -> u64 {
    u64::try_from(timestamp.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs every frame through the kernel program and the reference, with the rules of
/// `interface`. Rate limits count time as the capture does: both run on the capture's clock
/// (the kernel's fixed limit clock, the reference's `Limiter`), from one second at the first
/// frame. Needs the privileges to load an XDP program.
pub fn replay(
    rules: &RuleSet,
    interface: &str,
    frames: &[Captured],
) -> Result<Report, ReplayError> {
    if !rules.interfaces.contains_key(interface) {
        return Err(ReplayError::UnknownInterface(interface.to_string()));
    }
    let mut counters = RuleCounters::default();
    let compiled = compile::ruleset(rules, &[(interface.to_string(), 0)], &mut counters)?;
    // BPF_PROG_TEST_RUN runs a frame as if it arrived on loopback, where the rules are bound.
    let mut dataplane = Dataplane::load_for_test_run(Capacity::for_compiled(&compiled))?;
    dataplane.install(&compiled)?;
    let mut report = Report::default();
    let mut limiter = Limiter::default();
    let start = frames.first().map_or(0, |f| f.at_ns);
    for (i, captured) in frames.iter().enumerate() {
        report.frames += 1;
        let frame = &captured.bytes;
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            report.skipped += 1;
            continue;
        }
        // A clock that goes back in the capture stays where it was, as the kernel's does.
        let now = SECOND_NS.saturating_add(captured.at_ns.saturating_sub(start));
        dataplane.set_limit_clock(now)?;
        let decision = reference::classify_at(rules, interface, frame, &mut limiter, now)
            .map_err(|e| ReplayError::UnknownInterface(e.0))?;
        let slot = decision
            .rule
            .as_deref()
            .and_then(|rule| counters.get(interface, rule));
        let before = slot.map(|s| dataplane.rule_counter(s)).transpose()?;
        let kernel = match dataplane.run(frame, Direction::In)?.verdict() {
            Verdict::Drop => Action::Drop,
            Verdict::Pass => Action::Pass,
        };
        let rule_counted = match (slot, before) {
            (Some(s), Some(before)) => dataplane.rule_counter(s)?.packets == before.packets + 1,
            _ => true,
        };
        if kernel != decision.action || !rule_counted {
            report.disagreements.push(Disagreement {
                frame: i as u64 + 1,
                kernel: kernel.to_string(),
                reference: decision.action.to_string(),
                reference_rule: decision.rule.clone(),
                bytes: frame.iter().map(|b| format!("{b:02x}")).collect(),
            });
        }
        *report
            .verdicts
            .entry(decision.action.to_string())
            .or_default() += 1;
        match (&decision.reason, decision.rule) {
            (Reason::Rule, Some(rule)) => *report.rules.entry(rule).or_default() += 1,
            (Reason::NonIp, _) => report.non_ip += 1,
            (Reason::Malformed(_), _) => report.malformed += 1,
            _ => report.default += 1,
        }
    }
    Ok(report)
}
