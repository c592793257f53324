//! A rule → its kernel entries: one per combination of its list elements (source network ×
//! destination network of the same family × source ports × destination ports), in order. An
//! entry with an address condition always carries that address's family.

use firewall_common::{Entry, cond, entry_flag, family};
use ipnet::IpNet;

use crate::ruleset::{Family, Ports, Rule, family_of};

/// The factors of a rule's expansion into entries, counted from its lists without building
/// any entry (validation and `ruleset` bound the expansion before anything is allocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expansion {
    /// Lengths of the written lists; `None` where a field is absent (it matches anything and
    /// multiplies by one).
    pub sources: Option<u64>,
    pub destinations: Option<u64>,
    pub src_ports: Option<u64>,
    pub dst_ports: Option<u64>,
    /// Source × destination pairs of one family: the product, unless both lists are written
    /// and mix families.
    pub pairs: u64,
}

impl Expansion {
    pub fn of(rule: &Rule) -> Expansion {
        let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let count_v4 = |nets: &[IpNet]| len(nets.iter().filter(|n| n.addr().is_ipv4()).count());
        let pairs = match (&rule.src, &rule.dst) {
            (Some(src), Some(dst)) => {
                let (src4, dst4) = (count_v4(src), count_v4(dst));
                let (src6, dst6) = (len(src.len()) - src4, len(dst.len()) - dst4);
                src4.saturating_mul(dst4)
                    .saturating_add(src6.saturating_mul(dst6))
            }
            (Some(one), None) | (None, Some(one)) => len(one.len()),
            (None, None) => 1,
        };
        Expansion {
            sources: rule.src.as_ref().map(|l| len(l.len())),
            destinations: rule.dst.as_ref().map(|l| len(l.len())),
            src_ports: rule.src_port.as_ref().map(|l| len(l.len())),
            dst_ports: rule.dst_port.as_ref().map(|l| len(l.len())),
            pairs,
        }
    }

    /// The number of entries `of_rule` makes (saturating, never overflowing).
    pub fn entries(&self) -> u64 {
        self.pairs
            .saturating_mul(self.src_ports.unwrap_or(1))
            .saturating_mul(self.dst_ports.unwrap_or(1))
    }
}

/// `64 sources x 64 destinations x 2000 destination ports`: the written factors.
impl std::fmt::Display for Expansion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut factors = Vec::new();
        let both = self.sources.zip(self.destinations);
        if let Some((s, d)) = both
            && s.saturating_mul(d) != self.pairs
        {
            factors.push(format!(
                "{} source/destination pairs of one family ({s} sources, {d} destinations)",
                self.pairs
            ));
        } else {
            for (count, noun) in [
                (self.sources, "sources"),
                (self.destinations, "destinations"),
            ] {
                factors.extend(count.map(|n| format!("{n} {noun}")));
            }
        }
        for (count, noun) in [
            (self.src_ports, "source ports"),
            (self.dst_ports, "destination ports"),
        ] {
            factors.extend(count.map(|n| format!("{n} {noun}")));
        }
        f.write_str(&factors.join(" x "))
    }
}

pub fn of_rule(rule: &Rule, counter: u32) -> Vec<Entry> {
    let nets = |list: &Option<Vec<IpNet>>| {
        list.as_ref()
            .map_or(vec![None], |l| l.iter().copied().map(Some).collect())
    };
    let ports = |list: &Option<Vec<Ports>>| {
        list.as_ref()
            .map_or(vec![None], |l| l.iter().cloned().map(Some).collect())
    };
    let mut out = Vec::new();
    for src in nets(&rule.src) {
        for dst in nets(&rule.dst) {
            // A mixed-family list pairs each source with the destinations of its own family.
            if let (Some(s), Some(d)) = (src, dst)
                && s.addr().is_ipv4() != d.addr().is_ipv4()
            {
                continue;
            }
            for src_port in ports(&rule.src_port) {
                for dst_port in ports(&rule.dst_port) {
                    out.push(entry(
                        rule,
                        counter,
                        src,
                        dst,
                        src_port.as_ref(),
                        dst_port.as_ref(),
                    ));
                }
            }
        }
    }
    out
}

fn entry(
    rule: &Rule,
    counter: u32,
    src: Option<IpNet>,
    dst: Option<IpNet>,
    src_port: Option<&Ports>,
    dst_port: Option<&Ports>,
) -> Entry {
    let mut e = Entry {
        counter,
        verdict: rule.action.verdict() as u8,
        flags: if rule.state { entry_flag::STATE } else { 0 }
            | if rule.log { entry_flag::LOG } else { 0 }
            | if rule.limit.is_some() {
                entry_flag::LIMIT
            } else {
                0
            },
        ..Entry::default()
    };
    if rule.limit.is_some() {
        e.conditions |= cond::LIMIT;
    }
    let address_family = src.or(dst).map(|net| family_of(net.addr()));
    if let Some(f) = rule.family.or(address_family) {
        e.conditions |= cond::FAMILY;
        e.family = match f {
            Family::Ipv4 => family::IPV4,
            Family::Ipv6 => family::IPV6,
        };
    }
    if let Some(protocol) = rule.protocol {
        e.conditions |= cond::PROTOCOL;
        e.protocol = protocol;
    }
    if let Some(net) = src {
        e.conditions |= cond::SRC;
        (e.src_addr, e.src_mask) = words(net);
    }
    if let Some(net) = dst {
        e.conditions |= cond::DST;
        (e.dst_addr, e.dst_mask) = words(net);
    }
    if let Some(range) = src_port {
        e.conditions |= cond::SRC_PORT;
        (e.src_port_lo, e.src_port_hi) = (*range.start(), *range.end());
    }
    if let Some(range) = dst_port {
        e.conditions |= cond::DST_PORT;
        (e.dst_port_lo, e.dst_port_hi) = (*range.start(), *range.end());
    }
    if let Some(icmp_type) = rule.icmp_type {
        e.conditions |= cond::ICMP_TYPE;
        e.icmp_type = icmp_type;
    }
    if let Some(icmp_code) = rule.icmp_code {
        e.conditions |= cond::ICMP_CODE;
        e.icmp_code = icmp_code;
    }
    if let Some(flags) = rule.tcp_flags {
        e.conditions |= cond::TCP_FLAGS;
        (e.tcp_flags_mask, e.tcp_flags_value) = (flags.mask, flags.value);
    }
    if let Some(vlan) = rule.vlan {
        e.conditions |= cond::VLAN;
        e.vlan = vlan;
    }
    e
}

/// Network and mask as the packet carries them (network byte order, read as native u32s);
/// IPv4 uses the first word.
fn words(net: IpNet) -> ([u32; 4], [u32; 4]) {
    let to_words = |bytes: &[u8]| {
        let mut out = [0u32; 4];
        for (word, chunk) in out.iter_mut().zip(bytes.chunks(4)) {
            *word = u32::from_ne_bytes(chunk.try_into().expect("4-byte chunks"));
        }
        out
    };
    match net {
        IpNet::V4(v4) => (
            to_words(&v4.network().octets()),
            to_words(&v4.netmask().octets()),
        ),
        IpNet::V6(v6) => (
            to_words(&v6.network().octets()),
            to_words(&v6.netmask().octets()),
        ),
    }
}
