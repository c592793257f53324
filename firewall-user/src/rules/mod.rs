//! The rule pipeline, one way: YAML text → [`schema::RawRules`] (serde, with positions) →
//! [`RuleSet`] (validated, typed) → [`compile`] (the exact bytes of the kernel's map values).
//!
//! This is the first slice of rule language v1 (see `rules/README.md`): per interface an
//! ordered list of rules with `id`, `action`, `protocol`, `src`, `dst` (IPv4 address or CIDR)
//! and `dst_port`, plus the `default` action.

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
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::diagnostic::{Diagnostics, parse_yaml};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}

/// What a rule (or an interface's default) does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// The IP protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    /// The IP protocol number, `None` for any.
    pub const fn number(self) -> Option<u8> {
        match self {
            Protocol::Any => None,
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
        }
    }

    pub const fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// A validated rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub interfaces: BTreeMap<String, Policy>,
}

/// One interface's ordered rules and what happens when none matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// One validated rule; `None` conditions match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub action: Action,
    pub protocol: Protocol,
    pub src: Option<Ipv4Net>,
    pub dst: Option<Ipv4Net>,
    pub dst_port: Option<RangeInclusive<u16>>,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verdict().label())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        })
    }
}

/// One line per rule, as `check` prints it: `id action protocol [conditions]`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.id, self.action, self.protocol)?;
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        if let Some(dst) = self.dst {
            write!(f, " dst {dst}")?;
        }
        match &self.dst_port {
            Some(ports) if ports.start() == ports.end() => write!(f, " dst_port {}", ports.start()),
            Some(ports) => write!(f, " dst_port {}-{}", ports.start(), ports.end()),
            None => Ok(()),
        }
    }
}

impl RuleSet {
    /// Reads, parses and validates a rule file; nothing partial is ever returned.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let text = fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(RuleSet::parse(path, &text)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<RuleSet, Diagnostics> {
        let raw: schema::RawRules = parse_yaml(path, text)?;
        validate::validate(raw).map_err(|items| Diagnostics {
            file: path.display().to_string(),
            items,
        })
    }
}
