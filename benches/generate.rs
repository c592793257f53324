//! Synthetic rule files for benchmarks and scale tests. [`rules`] writes `count` rules on
//! [`INTERFACE`] that look like an operator's: services on a pool of server addresses, single
//! ports, port ranges and lists, address and port sets, ICMP and ICMPv6 types, VLAN rules,
//! blocked networks and other IP protocols, over IPv4 and IPv6 networks of varied prefix
//! lengths. Each rule is one flow-style line, so 100k rules stay a few MB.
//!
//! What callers may rely on:
//! - the text is a valid rule file for every `count` and `seed`, and the same `(count, seed)`
//!   always gives the same text (ChaCha8 and rand's sampling give the same values on every
//!   platform);
//! - blocked networks come from their own half of each address space, so that a block rule
//!   shadows no service after it (only, now and then, another block rule);
//! - no rule covers an address of the probe network 198.19.255.0/24 except [`MIDDLE_RULE`],
//!   rule number `count / 2 + 1`, so that benches and tests can aim at a known position:
//!   [`MIDDLE_PACKET`] is decided by that rule and [`MISS_PACKET`] by the default, after every
//!   rule was tried.

use std::{
    fmt::Display,
    net::{Ipv4Addr, Ipv6Addr},
};

use rand::{RngExt, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

/// The interface that holds the generated rules.
pub const INTERFACE: &str = "lan0";
/// The only rule that matches packets from the probe network, in the middle of the list.
pub const MIDDLE_RULE: &str = "probe-middle";
/// A packet that [`MIDDLE_RULE`] decides, and no rule before it matches.
pub const MIDDLE_PACKET: &str = "tcp 198.19.255.1:40000 -> 198.19.255.2:22";
/// A packet that no rule matches (outside [`MIDDLE_RULE`]'s `src`), so the default decides.
pub const MISS_PACKET: &str = "tcp 198.19.255.129:40000 -> 198.19.255.2:22";

/// 198.18.0.0/15 (RFC 2544 benchmarking), the only IPv4 space rules are drawn from.
const V4_BASE: u32 = 0xc612_0000;
const V4_HOST_BITS: u32 = 17;
/// 198.19.128.0/17, where blocked networks are drawn from, and only they.
const V4_BLOCKED: u32 = 0xc613_8000;
const V4_BLOCKED_PREFIX: u32 = 17;
/// 198.19.255.0/24, inside the blocked space, kept out of every generated address.
const PROBE_NET: u32 = 0xc613_ff00;
const PROBE_PREFIX: u32 = 24;
/// 2001:2::/48 (RFC 5180 benchmarking), the only IPv6 space rules are drawn from.
const V6_BASE: u128 = 0x2001_0002_0000 << 80;
/// The first bit after /48, the top bit of the subnet id: set in blocked networks
/// (2001:2:0:8000::/49), clear in the others.
const V6_BLOCKED_BIT: u128 = 1 << 79;

/// Prefix lengths and how often they occur: mostly /24 networks and single hosts.
const V4_PREFIXES: [(u32, u32); 10] = [
    (16, 1),
    (20, 2),
    (22, 3),
    (24, 10),
    (26, 3),
    (27, 2),
    (28, 4),
    (29, 2),
    (30, 2),
    (32, 8),
];
/// Mostly /64 subnets and single hosts; never the whole /48.
const V6_PREFIXES: [(u32, u32); 10] = [
    (52, 1),
    (56, 3),
    (60, 2),
    (64, 10),
    (80, 1),
    (96, 2),
    (112, 2),
    (120, 2),
    (124, 1),
    (128, 6),
];
/// Blocked networks are attackers' hosts and networks.
const BLOCKED_V4_PREFIXES: [(u32, u32); 3] = [(24, 1), (28, 2), (32, 9)];
const BLOCKED_V6_PREFIXES: [(u32, u32); 3] = [(56, 1), (64, 4), (128, 3)];
/// Servers are hosts or small networks.
const SERVER_V4_PREFIXES: [(u32, u32); 4] = [(32, 8), (31, 1), (30, 1), (28, 1)];
const SERVER_V6_PREFIXES: [(u32, u32); 3] = [(128, 8), (126, 1), (124, 1)];

const WELL_KNOWN_PORTS: [u16; 28] = [
    22, 25, 53, 80, 110, 123, 143, 161, 389, 443, 445, 465, 514, 587, 636, 993, 995, 1433, 1521,
    3306, 3389, 5060, 5432, 6379, 8080, 8443, 9090, 9200,
];
/// Named port sets every file has, as an operator would write them.
const NAMED_PORT_SETS: [(&str, &str); 4] = [
    ("web", "[80, 443, \"8000-8080\"]"),
    ("mail", "[25, 465, 587, 993, 995]"),
    ("dns", "[53]"),
    ("db", "[1433, 1521, 3306, 5432]"),
];
const ICMP_TYPES: [u8; 6] = [0, 3, 5, 8, 11, 13];
/// ICMP destination unreachable, the type whose codes rules name.
const ICMP_UNREACHABLE: u8 = 3;
const ICMPV6_TYPES: [u8; 10] = [1, 2, 3, 4, 128, 129, 133, 134, 135, 136];
/// GRE, ESP, AH, OSPF, VRRP.
const OTHER_PROTOCOLS: [u8; 5] = [47, 50, 51, 89, 112];

/// The kinds of rule and their share of a file.
#[derive(Clone, Copy)]
enum Kind {
    Service,
    Block,
    Icmp,
    Icmpv6,
    Vlan,
    OtherProtocol,
}

const KINDS: [(Kind, u32); 6] = [
    (Kind::Service, 60),
    (Kind::Block, 12),
    (Kind::Icmp, 8),
    (Kind::Icmpv6, 6),
    (Kind::Vlan, 8),
    (Kind::OtherProtocol, 6),
];

/// Where a network is drawn from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Space {
    /// Servers and clients.
    Regular,
    /// Networks that block rules drop.
    Blocked,
}

/// Which addresses a rule names. Rules never mix an IPv4-only side with an IPv6-only side,
/// which validation rejects as unmatchable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    /// Both versions in one list or set.
    Dual,
}

/// A synthetic rule file of `count` rules on [`INTERFACE`], the same for the same `seed`.
pub fn rules(count: usize, seed: u64) -> String {
    Generator::new(count, seed).file(count)
}

/// The random source and what the rules of one file share: servers, sets, VLANs.
struct Generator {
    rng: ChaCha8Rng,
    servers_v4: Vec<String>,
    servers_v6: Vec<String>,
    /// Address sets by family, and port sets, as `(name, YAML list)`.
    sets_v4: Vec<(String, String)>,
    sets_v6: Vec<(String, String)>,
    sets_dual: Vec<(String, String)>,
    /// Blocked networks of both versions.
    sets_blocked: Vec<(String, String)>,
    /// Each blocklist set is dropped by one rule: the first `blocked_sets_used` so far.
    blocked_sets_used: usize,
    sets_ports: Vec<(String, String)>,
    vlans: Vec<u16>,
}

impl Generator {
    /// Pools and sets grow with the file, as they do in real rule sets.
    fn new(count: usize, seed: u64) -> Self {
        let mut generator = Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            servers_v4: Vec::new(),
            servers_v6: Vec::new(),
            sets_v4: Vec::new(),
            sets_v6: Vec::new(),
            sets_dual: Vec::new(),
            sets_blocked: Vec::new(),
            blocked_sets_used: 0,
            sets_ports: NAMED_PORT_SETS
                .iter()
                .map(|(name, list)| (name.to_string(), list.to_string()))
                .collect(),
            vlans: Vec::new(),
        };
        let servers = (count / 20).max(16);
        generator.servers_v4 = (0..servers)
            .map(|_| generator.v4_net(Space::Regular, &SERVER_V4_PREFIXES))
            .collect();
        generator.servers_v6 = (0..servers / 2)
            .map(|_| generator.v6_net(Space::Regular, &SERVER_V6_PREFIXES))
            .collect();
        let sets = (count / 250).clamp(2, 40);
        for k in 0..sets {
            let v4 = generator.address_list(Family::V4, Space::Regular, 2..=8);
            generator.sets_v4.push((format!("nets4-{k}"), v4));
            let v6 = generator.address_list(Family::V6, Space::Regular, 2..=8);
            generator.sets_v6.push((format!("nets6-{k}"), v6));
            let dual = generator.address_list(Family::Dual, Space::Regular, 2..=8);
            generator.sets_dual.push((format!("nets46-{k}"), dual));
            let blocked = generator.address_list(Family::Dual, Space::Blocked, 2..=8);
            generator
                .sets_blocked
                .push((format!("blocked-{k}"), blocked));
            let ports = generator.port_set();
            generator.sets_ports.push((format!("ports-{k}"), ports));
        }
        generator.vlans = (0..(count / 100).clamp(4, 64))
            .map(|_| generator.rng.random_range(1..=4094))
            .collect();
        generator
    }

    fn file(mut self, count: usize) -> String {
        let mut text = format!(
            "# {count} synthetic rules for benchmarks and scale tests (firewall_benches::generate).\n\
             version: 1\nsets:\n"
        );
        for (name, list) in [
            &self.sets_v4,
            &self.sets_v6,
            &self.sets_dual,
            &self.sets_blocked,
            &self.sets_ports,
        ]
        .into_iter()
        .flatten()
        {
            text.push_str(&format!("  {name}: {list}\n"));
        }
        text.push_str(&format!(
            "interfaces:\n  {INTERFACE}:\n    default: drop\n    non_ip: pass\n"
        ));
        if count == 0 {
            text.push_str("    rules: []\n");
            return text;
        }
        text.push_str("    rules:\n");
        for index in 0..count {
            let rule = if index == count / 2 {
                probe_rule()
            } else {
                self.rule(index + 1)
            };
            text.push_str(&rule.line());
        }
        text
    }

    /// Rule number `n` (1-based, which makes its id unique).
    fn rule(&mut self, n: usize) -> Fields {
        let mut rule = match weighted(&mut self.rng, &KINDS) {
            Kind::Service => self.service(n),
            Kind::Block => self.block(n),
            Kind::Icmp => self.icmp(n),
            Kind::Icmpv6 => self.icmpv6(n),
            Kind::Vlan => self.vlan(n),
            Kind::OtherProtocol => self.other_protocol(n),
        };
        if self.rng.random_bool(0.03) {
            rule.add("description", format!("\"change request {n}\""));
        }
        rule
    }

    /// A TCP, UDP or SCTP service on servers, mostly passed.
    fn service(&mut self, n: usize) -> Fields {
        let protocol = weighted(&mut self.rng, &[("tcp", 6), ("udp", 3), ("sctp", 1)]);
        let mut rule = Fields::new(format!("svc-{n}"), self.action(0.8));
        rule.add("protocol", protocol);
        match weighted(
            &mut self.rng,
            &[(Family::V4, 14), (Family::V6, 5), (Family::Dual, 1)],
        ) {
            // A dual-stack client set reaching a service wherever it runs.
            Family::Dual => rule.add("src", self.set_ref(Family::Dual)),
            family => {
                if self.rng.random_bool(0.6) {
                    let src = self.sources(family);
                    rule.add("src", src);
                }
                let dst = self.destination(family);
                rule.add("dst", dst);
            }
        }
        if protocol != "sctp" && self.rng.random_bool(0.1) {
            rule.add("src_port", "\"1024-65535\"");
        }
        let ports = self.ports();
        rule.add("dst_port", ports);
        rule
    }

    /// A network that is dropped whatever it sends.
    fn block(&mut self, n: usize) -> Fields {
        let mut rule = Fields::new(format!("block-{n}"), "drop");
        if self.rng.random_bool(0.2) {
            rule.add("protocol", "any");
        }
        let unused_set = self.sets_blocked.get(self.blocked_sets_used);
        if let Some((name, _)) = unused_set.filter(|_| self.rng.random_bool(0.2)) {
            rule.add("src", format!("${name}"));
            self.blocked_sets_used += 1;
        } else {
            let family = weighted(&mut self.rng, &[(Family::V4, 3), (Family::V6, 1)]);
            let net = self.net(family, Space::Blocked);
            rule.add("src", net);
            if family == Family::V4 && self.rng.random_bool(0.1) {
                rule.add("family", "ipv4");
            }
        }
        rule
    }

    fn icmp(&mut self, n: usize) -> Fields {
        let mut rule = Fields::new(format!("icmp-{n}"), self.action(0.7));
        rule.add("protocol", "icmp");
        let icmp_type = *pick(&mut self.rng, &ICMP_TYPES);
        rule.add("icmp_type", icmp_type);
        if icmp_type == ICMP_UNREACHABLE && self.rng.random_bool(0.5) {
            rule.add("icmp_code", self.rng.random_range(0..=15u8));
        }
        // Pings and errors to one server: rules without an address, or with a wide one, would
        // cover most ICMP rules after them.
        rule.add("dst", pick(&mut self.rng, &self.servers_v4));
        rule
    }

    fn icmpv6(&mut self, n: usize) -> Fields {
        let mut rule = Fields::new(format!("icmp6-{n}"), self.action(0.7));
        rule.add("protocol", "icmpv6");
        rule.add("icmp_type", *pick(&mut self.rng, &ICMPV6_TYPES));
        rule.add("dst", pick(&mut self.rng, &self.servers_v6));
        rule
    }

    /// A service on one VLAN of a small pool, as trunked adapters have.
    fn vlan(&mut self, n: usize) -> Fields {
        let mut rule = Fields::new(format!("vlan-{n}"), self.action(0.6));
        rule.add("vlan", *pick(&mut self.rng, &self.vlans));
        rule.add(
            "protocol",
            weighted(&mut self.rng, &[("tcp", 2), ("udp", 1)]),
        );
        if self.rng.random_bool(0.5) {
            let dst = self.net(Family::V4, Space::Regular);
            rule.add("dst", dst);
        }
        let ports = self.ports();
        rule.add("dst_port", ports);
        rule
    }

    /// Tunnels and routing protocols between two networks or hosts.
    fn other_protocol(&mut self, n: usize) -> Fields {
        let mut rule = Fields::new(format!("proto-{n}"), self.action(0.7));
        rule.add("protocol", *pick(&mut self.rng, &OTHER_PROTOCOLS));
        let family = weighted(&mut self.rng, &[(Family::V4, 3), (Family::V6, 1)]);
        let src = self.net(family, Space::Regular);
        rule.add("src", src);
        let dst = self.destination(family);
        rule.add("dst", dst);
        rule
    }

    fn action(&mut self, pass: f64) -> &'static str {
        if self.rng.random_bool(pass) {
            "pass"
        } else {
            "drop"
        }
    }

    /// Clients: a network, a short list, or a set.
    fn sources(&mut self, family: Family) -> String {
        match self.rng.random_range(0..10) {
            0..6 => self.net(family, Space::Regular),
            6..8 => self.address_list(family, Space::Regular, 2..=4),
            _ => self.set_ref(family),
        }
    }

    /// Mostly a server from the pool, sometimes a network or a set.
    fn destination(&mut self, family: Family) -> String {
        let servers = match family {
            Family::V6 => &self.servers_v6,
            _ => &self.servers_v4,
        };
        match self.rng.random_range(0..10) {
            0..7 => pick(&mut self.rng, servers).clone(),
            7..9 => self.net(family, Space::Regular),
            _ => self.set_ref(family),
        }
    }

    /// `$name` of a random address set of `family`.
    fn set_ref(&mut self, family: Family) -> String {
        let sets = match family {
            Family::V4 => &self.sets_v4,
            Family::V6 => &self.sets_v6,
            Family::Dual => &self.sets_dual,
        };
        format!("${}", pick(&mut self.rng, sets).0)
    }

    /// A YAML list of networks; `Dual` lists start with one of each version.
    fn address_list(
        &mut self,
        family: Family,
        space: Space,
        len: std::ops::RangeInclusive<usize>,
    ) -> String {
        let len = self.rng.random_range(len);
        let items: Vec<String> = (0..len)
            .map(|i| match (family, i) {
                (Family::Dual, 0) => self.net(Family::V4, space),
                (Family::Dual, 1) => self.net(Family::V6, space),
                (Family::Dual, _) => {
                    let family = weighted(&mut self.rng, &[(Family::V4, 1), (Family::V6, 1)]);
                    self.net(family, space)
                }
                (family, _) => self.net(family, space),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    fn net(&mut self, family: Family, space: Space) -> String {
        match (family, space) {
            (Family::V6, Space::Regular) => self.v6_net(space, &V6_PREFIXES),
            (Family::V6, Space::Blocked) => self.v6_net(space, &BLOCKED_V6_PREFIXES),
            (_, Space::Regular) => self.v4_net(space, &V4_PREFIXES),
            (_, Space::Blocked) => self.v4_net(space, &BLOCKED_V4_PREFIXES),
        }
    }

    /// A network in `space` with host bits zero, never overlapping the probe network.
    fn v4_net(&mut self, space: Space, prefixes: &[(u32, u32)]) -> String {
        let prefix = weighted(&mut self.rng, prefixes);
        let random = self.rng.random::<u32>();
        let mut addr = match space {
            Space::Regular => V4_BASE | (random & low_bits_u32(V4_HOST_BITS)),
            Space::Blocked => V4_BLOCKED | (random & low_bits_u32(32 - V4_BLOCKED_PREFIX)),
        } & !low_bits_u32(32 - prefix);
        // A regular network that reaches into the blocked space moves to the same place in
        // 198.18.0.0/16; a blocked one on the probe network to 198.19.254.0/24.
        if space == Space::Regular && overlaps(addr, prefix, V4_BLOCKED, V4_BLOCKED_PREFIX) {
            addr &= !(1 << 16);
        }
        if overlaps(addr, prefix, PROBE_NET, PROBE_PREFIX) {
            addr &= !(1 << 8);
        }
        let addr = Ipv4Addr::from(addr);
        if prefix == 32 {
            addr.to_string()
        } else {
            format!("{addr}/{prefix}")
        }
    }

    /// A network in `space` with host bits zero, quoted for YAML. Like a real addressing
    /// plan, it has a 16-bit subnet id and an interface id of at most 32 bits (which also
    /// keeps the text short).
    fn v6_net(&mut self, space: Space, prefixes: &[(u32, u32)]) -> String {
        let prefix = weighted(&mut self.rng, prefixes);
        let subnet = u128::from(self.rng.random::<u16>()) << 64;
        let interface = u128::from(self.rng.random::<u32>());
        let host = match space {
            Space::Regular => subnet & !V6_BLOCKED_BIT,
            Space::Blocked => subnet | V6_BLOCKED_BIT,
        } | interface;
        let addr = Ipv6Addr::from((V6_BASE | host) & !low_bits_u128(128 - prefix));
        if prefix == 128 {
            format!("\"{addr}\"")
        } else {
            format!("\"{addr}/{prefix}\"")
        }
    }

    /// A single well-known or high port, a range, a list, or a port set.
    fn ports(&mut self) -> String {
        match self.rng.random_range(0..20) {
            0..7 => pick(&mut self.rng, &WELL_KNOWN_PORTS).to_string(),
            7..10 => self.rng.random_range(1024..=65535u16).to_string(),
            10..14 => self.port_range(),
            14..17 => {
                let len = self.rng.random_range(2..=4);
                let ports: Vec<String> = WELL_KNOWN_PORTS
                    .sample(&mut self.rng, len)
                    .map(u16::to_string)
                    .collect();
                format!("[{}]", ports.join(", "))
            }
            _ => format!("${}", pick(&mut self.rng, &self.sets_ports).0),
        }
    }

    /// `"lo-hi"` within 1024-65535, up to 2,000 ports wide.
    fn port_range(&mut self) -> String {
        let lo = self.rng.random_range(1024..=63_000u16);
        let hi = lo + self.rng.random_range(1..=2000u16);
        format!("\"{lo}-{hi}\"")
    }

    /// A set of 2 to 6 single ports and ranges.
    fn port_set(&mut self) -> String {
        let len = self.rng.random_range(2..=6);
        let items: Vec<String> = (0..len)
            .map(|_| {
                if self.rng.random_bool(0.7) {
                    pick(&mut self.rng, &WELL_KNOWN_PORTS).to_string()
                } else {
                    self.port_range()
                }
            })
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// The rule that [`MIDDLE_PACKET`] matches and [`MISS_PACKET`] does not (its source is in
/// the other half of the probe network).
fn probe_rule() -> Fields {
    let mut rule = Fields::new(MIDDLE_RULE.to_string(), "pass");
    rule.add("protocol", "tcp");
    rule.add("src", "198.19.255.0/25");
    rule.add("dst", "198.19.255.0/24");
    rule.add("dst_port", 22);
    rule
}

/// One rule as a YAML flow mapping, built field by field.
struct Fields(Vec<String>);

impl Fields {
    fn new(id: String, action: &str) -> Self {
        Fields(vec![format!("id: {id}"), format!("action: {action}")])
    }

    fn add(&mut self, key: &str, value: impl Display) {
        self.0.push(format!("{key}: {value}"));
    }

    fn line(&self) -> String {
        format!("      - {{ {} }}\n", self.0.join(", "))
    }
}

/// A value of `table`, with a probability proportional to its weight.
fn weighted<T: Copy>(rng: &mut ChaCha8Rng, table: &[(T, u32)]) -> T {
    table
        .choose_weighted(rng, |(_, weight)| *weight)
        .expect("weight tables are non-empty constants with positive weights")
        .0
}

/// A uniformly chosen element; `items` is never empty (pools and sets have a minimum size).
fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Whether two IPv4 networks share an address: they agree on the shorter prefix.
fn overlaps(addr: u32, prefix: u32, other: u32, other_prefix: u32) -> bool {
    (addr ^ other) & !low_bits_u32(32 - prefix.min(other_prefix)) == 0
}

fn low_bits_u32(bits: u32) -> u32 {
    u32::MAX.checked_shr(32 - bits).unwrap_or(0)
}

fn low_bits_u128(bits: u32) -> u128 {
    u128::MAX.checked_shr(128 - bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use firewall_rules::{
        RuleSet,
        reference::{Reason, classify},
        spec::PacketSpec,
        validate::Limits,
    };

    use super::*;

    fn parse(text: &str) -> RuleSet {
        RuleSet::parse(Path::new("generated.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_count_and_seed_gives_a_valid_file_with_that_many_rules() {
        for count in [0, 1, 2, 3, 17, 500, 3000] {
            for seed in [0, 1, 2, 42, u64::MAX] {
                let set = parse(&rules(count, seed));
                assert_eq!(
                    set.interfaces[INTERFACE].rules.len(),
                    count,
                    "count {count} seed {seed}"
                );
            }
        }
    }

    /// 30k rules are some 300k YAML nodes, beyond serde-saphyr's default budget of 250k.
    #[test]
    fn files_beyond_the_parsers_default_budget_parse() {
        let set = parse(&rules(30_000, 5));
        assert_eq!(set.interfaces[INTERFACE].rules.len(), 30_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_text_and_another_seed_another() {
        assert_eq!(rules(1000, 7), rules(1000, 7));
        assert_ne!(rules(1000, 7), rules(1000, 8));
    }

    #[test]
    fn the_probe_packets_hit_the_middle_rule_and_no_rule() {
        for (count, seed) in [(1, 3), (2, 0), (1000, 1), (3001, 9)] {
            let set = parse(&rules(count, seed));
            let rules = &set.interfaces[INTERFACE].rules;
            assert_eq!(rules[count / 2].id, MIDDLE_RULE);
            let decide = |spec: &str| {
                let frame = PacketSpec::parse(spec).expect("probe specs parse").frame();
                classify(&set, INTERFACE, &frame).expect("the interface exists")
            };
            let middle = decide(MIDDLE_PACKET);
            assert_eq!(middle.rule.as_deref(), Some(MIDDLE_RULE), "count {count}");
            let miss = decide(MISS_PACKET);
            assert_eq!(
                (miss.rule, miss.reason),
                (None, Reason::Default),
                "count {count}"
            );
        }
    }

    /// The file has what the module doc promises, not just valid syntax.
    #[test]
    fn a_large_file_mixes_every_kind_of_rule_compactly() {
        let text = rules(10_000, 1);
        let set = parse(&text);
        let rules = &set.interfaces[INTERFACE].rules;
        let has = |what: &str, test: &dyn Fn(&firewall_rules::Rule) -> bool| {
            assert!(rules.iter().any(test), "no rule with {what}");
        };
        has("IPv6", &|r| {
            r.src
                .iter()
                .chain(&r.dst)
                .flatten()
                .any(|n| n.addr().is_ipv6())
        });
        has("a short prefix", &|r| {
            r.src.iter().flatten().any(|n| n.prefix_len() <= 20)
        });
        has("a port range", &|r| {
            r.dst_port.iter().flatten().any(|p| p.start() != p.end())
        });
        has("a VLAN", &|r| r.vlan.is_some());
        has("an ICMP type", &|r| r.icmp_type.is_some());
        has("an ICMP code", &|r| r.icmp_code.is_some());
        has("sctp", &|r| r.protocol == Some(132));
        has("drop", &|r| r.action == firewall_rules::Action::Drop);
        assert!(text.contains("dst_port: $web") && text.contains("src: $nets46-"));
        assert!(
            text.len() / 10_000 < 120,
            "{} bytes per rule",
            text.len() / 10_000
        );
    }

    /// Random rules shadow each other now and then, as real ones do, but not wholesale.
    #[test]
    fn few_rules_are_shadowed() {
        let checked = RuleSet::parse_checked(
            Path::new("generated.yaml"),
            &rules(1000, 1),
            &Limits::default(),
        )
        .unwrap();
        assert!(checked.warnings.len() < 50, "{:?}", checked.warnings);
    }
}
