//! The rule pipeline, one way: YAML text → [`schema::RawRules`] (serde, with positions) →
//! [`RuleSet`] (validated, typed) → [`compile`] (the exact bytes of the kernel's map values).
//! `check`, `explain` and the daemon all start from a validated `RuleSet`. The language is
//! described in `rules/README.md`.

pub mod compile;
pub mod schema;
pub mod validate;

use std::{
    collections::BTreeMap,
    fmt, fs,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use firewall_common::Verdict;
use ipnet::IpNet;
use serde::Deserialize;

use crate::diagnostic::{Diagnostics, parse_yaml};
pub use validate::{Limits, Warning};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules from {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
}

/// What a rule (or an interface's default) does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pass,
    Drop,
}

impl Action {
    pub const fn verdict(self) -> Verdict {
        match self {
            Action::Pass => Verdict::Pass,
            Action::Drop => Verdict::Drop,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verdict().label())
    }
}

/// Which way a rule judges packets: as they arrive on its interface (XDP) or as they leave it
/// (TC egress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    In,
    Out,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::In, Direction::Out];

    /// `firewall_common::direction` of this direction.
    pub const fn index(self) -> u32 {
        match self {
            Direction::In => firewall_common::direction::IN,
            Direction::Out => firewall_common::direction::OUT,
        }
    }

    /// The `direction` label value in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The IP version a rule is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// IP protocol numbers that have names in rules.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    pub const NAMES: [(&str, u8); 5] = [
        ("tcp", TCP),
        ("udp", UDP),
        ("sctp", SCTP),
        ("icmp", ICMP),
        ("icmpv6", ICMPV6),
    ];

    pub fn name(number: u8) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(_, n)| *n == number)
            .map(|(name, _)| *name)
    }

    pub fn number(name: &str) -> Option<u8> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, number)| *number)
    }

    /// Protocols whose header starts with source and destination ports.
    pub const fn has_ports(number: u8) -> bool {
        matches!(number, TCP | UDP | SCTP)
    }

    pub const fn is_icmp(number: u8) -> bool {
        matches!(number, ICMP | ICMPV6)
    }
}

/// An inclusive range of ports.
pub type Ports = RangeInclusive<u16>;

/// A validated rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub interfaces: BTreeMap<String, Policy>,
}

/// One interface's ordered rules and what happens when none matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Action,
    /// What ARP and other frames that are neither IPv4 nor IPv6 get.
    pub non_ip: Action,
    pub rules: Vec<Rule>,
}

/// One validated rule. Every `Some` condition must match; `None` matches anything. Lists
/// match when any element does; sets are already expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub action: Action,
    /// IP protocol number (IPv6: the upper-layer header after the extension headers).
    pub protocol: Option<u8>,
    /// Written, or implied by addresses that are all of one family.
    pub family: Option<Family>,
    pub src: Option<Vec<IpNet>>,
    pub dst: Option<Vec<IpNet>>,
    pub src_port: Option<Vec<Ports>>,
    pub dst_port: Option<Vec<Ports>>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// The outermost 802.1Q/802.1ad tag's VLAN id.
    pub vlan: Option<u16>,
    /// `state: true`: a packet this (pass) rule passes opens a tracked flow.
    pub state: bool,
    pub direction: Direction,
    /// `log: true`: the packets it drops are reported in the daemon's log (drop rules only).
    pub log: bool,
    /// Position of the rule's id in its file, for messages.
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Rule {
    /// One line, as `check` prints it: `id action [conditions]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id, self.action)?;
        if self.direction == Direction::Out {
            write!(f, " out")?;
        }
        if let Some(vlan) = self.vlan {
            write!(f, " vlan {vlan}")?;
        }
        if let Some(family) = self.family {
            write!(f, " {family}")?;
        }
        match self.protocol {
            Some(number) => match protocol::name(number) {
                Some(name) => write!(f, " {name}")?,
                None => write!(f, " protocol {number}")?,
            },
            None => write!(f, " any")?,
        }
        let join = |nets: &[IpNet]| {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if let Some(src) = &self.src {
            write!(f, " src {}", join(src))?;
        }
        if let Some(dst) = &self.dst {
            write!(f, " dst {}", join(dst))?;
        }
        if let Some(ports) = &self.src_port {
            write!(f, " src_port {}", ports_text(ports))?;
        }
        if let Some(ports) = &self.dst_port {
            write!(f, " dst_port {}", ports_text(ports))?;
        }
        if let Some(icmp_type) = self.icmp_type {
            write!(f, " icmp_type {icmp_type}")?;
        }
        if let Some(icmp_code) = self.icmp_code {
            write!(f, " icmp_code {icmp_code}")?;
        }
        if self.state {
            write!(f, " state")?;
        }
        if self.log {
            write!(f, " log")?;
        }
        Ok(())
    }
}

/// `22,80-90` for a port list.
pub fn ports_text(ports: &[Ports]) -> String {
    ports
        .iter()
        .map(|p| {
            if p.start() == p.end() {
                p.start().to_string()
            } else {
                format!("{}-{}", p.start(), p.end())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A validated rule file and the warnings validation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub rules: RuleSet,
    pub warnings: Vec<Warning>,
}

impl RuleSet {
    /// Reads, parses and validates a rule file; nothing partial is ever returned.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        Ok(Self::load_checked(path, &Limits::default())?.rules)
    }

    /// Like [`RuleSet::load`], with the warnings.
    pub fn load_checked(path: &Path, limits: &Limits) -> Result<Checked, RulesError> {
        let text = fs::read_to_string(path).map_err(|error| RulesError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(Self::parse_checked(path, &text, limits)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<RuleSet, Diagnostics> {
        Ok(Self::parse_checked(path, text, &Limits::default())?.rules)
    }

    pub fn parse_checked(path: &Path, text: &str, limits: &Limits) -> Result<Checked, Diagnostics> {
        let raw: schema::RawRules = parse_yaml(path, text)?;
        validate::validate(raw, limits).map_err(|items| Diagnostics {
            file: path.display().to_string(),
            items,
        })
    }
}
