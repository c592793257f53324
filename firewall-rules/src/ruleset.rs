//! The validated, typed rule file: what `check`, `explain`, the compiler and the reference
//! all start from.

use std::{collections::BTreeMap, fmt, net::IpAddr, ops::RangeInclusive};

use firewall_common::{Verdict, conntrack::tracked};
use ipnet::IpNet;
use serde::Deserialize;

pub use firewall_common::protocol;

use crate::rate_limit::RateLimit;

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

/// The family of an address.
pub fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

/// An inclusive range of ports.
pub type Ports = RangeInclusive<u16>;

/// A validated rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub interfaces: BTreeMap<String, Policy>,
}

impl RuleSet {
    /// The protocols whose flows `state: true` rules open (`conntrack::tracked` bits; 0
    /// without such a rule): only packets of these look up the flow table.
    pub fn tracked(&self) -> u64 {
        self.interfaces
            .values()
            .flat_map(|policy| &policy.rules)
            .filter(|rule| rule.state)
            .fold(0, |bits, rule| {
                bits | rule.protocol.map_or(tracked::ALL, tracked::of)
            })
    }
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
    /// TCP flags that must be set or clear (`tcp_flags: [syn, "!ack"]`); TCP rules only.
    pub tcp_flags: Option<TcpFlags>,
    /// The outermost 802.1Q/802.1ad tag's VLAN id.
    pub vlan: Option<u16>,
    /// `state: true`: a packet this (pass) rule passes opens a tracked flow.
    pub state: bool,
    pub direction: Direction,
    /// `log: true`: the packets it drops are reported in the daemon's log (drop rules only).
    pub log: bool,
    /// `limit:`: the rule matches only the packets over this rate; the others go on to later
    /// rules.
    pub limit: Option<RateLimit>,
    /// Position of the rule's id in its file, for messages.
    pub line: u32,
    pub column: u32,
    /// The `$set`s its lists name, for messages: `check` prints a set's name and size, not
    /// its (maybe 100,000) elements.
    pub sets: Vec<SetUse>,
}

/// A `tcp_flags` condition: the packet's TCP flags byte, under `mask` (the flags the rule
/// names), equals `value` (those of them that must be set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlags {
    pub mask: u8,
    pub value: u8,
}

impl TcpFlags {
    /// The flags' names as rules write them, with their bit in the TCP header's flags byte
    /// (byte 13), in bit order.
    pub const NAMES: [(&str, u8); 8] = [
        ("fin", 0x01),
        ("syn", 0x02),
        ("rst", 0x04),
        ("psh", 0x08),
        ("ack", 0x10),
        ("urg", 0x20),
        ("ece", 0x40),
        ("cwr", 0x80),
    ];

    /// The bit of a flag's name (any case).
    pub fn bit(name: &str) -> Option<u8> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, bit)| *bit)
    }

    /// Does a TCP header with this flags byte meet the condition?
    pub const fn matches(self, flags: u8) -> bool {
        flags & self.mask == self.value
    }

    /// Does every flags byte that meets `narrower` meet `self` too?
    pub const fn implied_by(self, narrower: TcpFlags) -> bool {
        self.mask & !narrower.mask == 0 && narrower.value & self.mask == self.value
    }
}

impl fmt::Display for TcpFlags {
    /// `syn,!ack`: the named flags in bit order, `!` before those that must be clear.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        for (name, bit) in Self::NAMES {
            if self.mask & bit != 0 {
                let clear = if self.value & bit == 0 { "!" } else { "" };
                write!(f, "{separator}{clear}{name}")?;
                separator = ",";
            }
        }
        Ok(())
    }
}

/// The lists of a rule that may name sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListField {
    Src,
    Dst,
    SrcPort,
    DstPort,
}

impl ListField {
    /// The field's name in the rule file.
    pub const fn name(self) -> &'static str {
        match self {
            ListField::Src => "src",
            ListField::Dst => "dst",
            ListField::SrcPort => "src_port",
            ListField::DstPort => "dst_port",
        }
    }
}

/// A `$set` named in a rule's list: its elements are the `len` values of the expanded list
/// from index `start`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetUse {
    pub field: ListField,
    pub name: String,
    pub start: usize,
    pub len: usize,
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
        if let Some(src) = &self.src {
            self.write_list(f, ListField::Src, src, IpNet::to_string, |nets| {
                counted(nets.len() as u64, "network")
            })?;
        }
        if let Some(dst) = &self.dst {
            self.write_list(f, ListField::Dst, dst, IpNet::to_string, |nets| {
                counted(nets.len() as u64, "network")
            })?;
        }
        if let Some(ports) = &self.src_port {
            self.write_list(f, ListField::SrcPort, ports, port_text, port_count)?;
        }
        if let Some(ports) = &self.dst_port {
            self.write_list(f, ListField::DstPort, ports, port_text, port_count)?;
        }
        if let Some(flags) = self.tcp_flags {
            write!(f, " tcp_flags {flags}")?;
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
        if let Some(limit) = &self.limit {
            write!(f, " limit {limit}")?;
        }
        Ok(())
    }
}

impl Rule {
    /// ` FIELD a,b,$set (N networks)`: the values written in the rule, and each set it names
    /// by its name and `size`.
    fn write_list<T>(
        &self,
        f: &mut fmt::Formatter<'_>,
        field: ListField,
        values: &[T],
        text: fn(&T) -> String,
        size: fn(&[T]) -> String,
    ) -> fmt::Result {
        write!(f, " {}", field.name())?;
        let mut uses = self.sets.iter().filter(|set| set.field == field).peekable();
        let mut index = 0;
        let mut separator = " ";
        while index < values.len() {
            f.write_str(separator)?;
            separator = ",";
            match uses.next_if(|set| set.start == index && set.len > 0) {
                Some(set) => {
                    let end = (index + set.len).min(values.len());
                    write!(f, "${} ({})", set.name, size(&values[index..end]))?;
                    index = end;
                }
                None => {
                    f.write_str(&text(&values[index]))?;
                    index += 1;
                }
            }
        }
        Ok(())
    }
}

/// `83 ports`: the ports a list of ranges covers.
fn port_count(ranges: &[Ports]) -> String {
    let ports = ranges
        .iter()
        .map(|r| u64::from(*r.end()) - u64::from(*r.start()) + 1)
        .sum();
    counted(ports, "port")
}

/// `100,000 networks`, `1 port`.
fn counted(count: u64, unit: &str) -> String {
    let digits = count.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let plural = if count == 1 { "" } else { "s" };
    format!("{grouped} {unit}{plural}")
}

/// `22` or `80-90`.
fn port_text(p: &Ports) -> String {
    if p.start() == p.end() {
        p.start().to_string()
    } else {
        format!("{}-{}", p.start(), p.end())
    }
}

/// `22,80-90` for a port list.
pub fn ports_text(ports: &[Ports]) -> String {
    ports.iter().map(port_text).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use firewall_common::conntrack::tracked;

    use super::RuleSet;

    fn tracked_by(rules: &[&str]) -> u64 {
        let text = format!(
            "version: 1\ninterfaces:\n  eth0:\n    default: drop\n    rules:\n{}",
            rules
                .iter()
                .map(|rule| format!("      - {rule}\n"))
                .collect::<String>()
        );
        RuleSet::parse(Path::new("t.yaml"), &text)
            .unwrap()
            .tracked()
    }

    #[test]
    fn only_the_protocols_of_state_rules_are_tracked() {
        let tcp = "{ id: a, action: pass, protocol: tcp, state: true }";
        let udp = "{ id: b, action: pass, protocol: udp, dst_port: 53, state: true }";
        let ping6 = "{ id: c, action: pass, protocol: icmpv6, icmp_type: 128, state: true }";
        let any = "{ id: d, action: pass, dst: 198.18.0.0/16, state: true }";
        let sctp = "{ id: e, action: pass, protocol: sctp, state: true }";
        let stateless = "{ id: f, action: pass, protocol: udp }";
        assert_eq!(tracked_by(&[stateless]), 0);
        assert_eq!(tracked_by(&[tcp, stateless]), tracked::TCP);
        assert_eq!(tracked_by(&[tcp, udp]), tracked::TCP | tracked::UDP);
        assert_eq!(tracked_by(&[ping6]), tracked::ICMP);
        assert_eq!(tracked_by(&[tcp, any]), tracked::ALL);
        // SCTP never opens a flow, so its packets need not look one up.
        assert_eq!(tracked_by(&[sctp]), 0);
    }
}
