//! The kernel program against the reference classifier: random rule sets and random frames
//! biased to the edges (CIDR and port-range boundaries, VLAN tags, IPv4 options and lengths,
//! IPv6 extension headers and lengths, fragments, truncation, ICMP timestamps, padding, TCP
//! flags; see `alter`), each frame through BPF_PROG_TEST_RUN and through
//! `reference::classify_at`. Rule sets have rate limits too (`limit:`, see `limit`): the
//! kernel's fixed limit clock and the reference's `now` step together, frame by frame, and
//! the reference's buckets live on over reloads as the kernel's do. Verdicts must agree, each
//! frame's deciding rule must have counted it, and the counters must add up to the frames run.
//! `SMF_FIREWALL_DIFFERENTIAL_FRAMES` sets the number of frames (default 120,000) and
//! `SMF_FIREWALL_DIFFERENTIAL_SEED` the seed (default fixed); `cargo xtask fuzz-dataplane`
//! runs the long version with a new seed each time.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    path::Path,
};

use firewall_common::{Verdict, ethertype};
use firewall_dataplane::loader::Dataplane;
use firewall_rules::{
    Action, Direction, RuleSet,
    compile::{self, RuleCounters},
    rate_limit::{LimitKey, RateLimit, RateUnit},
    reference::{self, Limiter},
    spec::PacketSpec,
};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

use crate::common;

const FRAMES_PER_SET: usize = 2_000;

const V4_NETS: [&str; 7] = [
    "198.18.0.0/15",
    "198.18.0.0/16",
    "198.18.1.0/24",
    "198.18.1.128/25",
    "198.18.1.1/32",
    "198.19.255.0/24",
    "198.19.0.0/17",
];
const V6_NETS: [&str; 5] = [
    "2001:2::/48",
    "2001:2::/64",
    "2001:2:0:1::/64",
    "2001:2::1/128",
    "2001:2:0:8000::/49",
];
const V4_HOSTS: [&str; 10] = [
    "198.18.0.0",
    "198.18.1.0",
    "198.18.1.1",
    "198.18.1.127",
    "198.18.1.128",
    "198.18.1.255",
    "198.18.2.0",
    "198.19.255.255",
    "198.19.127.255",
    "198.19.128.0",
];
const V6_HOSTS: [&str; 7] = [
    "2001:2::",
    "2001:2::1",
    "2001:2::2",
    "2001:2:0:1::",
    "2001:2:0:1:ffff:ffff:ffff:ffff",
    "2001:2:0:7fff::1",
    "2001:2:0:8000::",
];
const PORTS: [&str; 7] = ["22", "53", "80", "1024-65535", "80-90", "65535", "1-1023"];
const FRAME_PORTS: [u16; 10] = [22, 53, 79, 80, 90, 91, 1023, 1024, 65535, 1];
// 13 and 14: timestamp request and reply, whose body is 12 bytes.
const ICMP_TYPES: [u8; 7] = [0, 3, 8, 13, 14, 128, 135];

fn pick<'a, T: ?Sized>(rng: &mut ChaCha8Rng, items: &'a [&'a T]) -> &'a T {
    items.choose(rng).expect("non-empty")
}

fn list(rng: &mut ChaCha8Rng, items: &[&str]) -> String {
    let n = rng.random_range(1..=2);
    let chosen: Vec<String> = (0..n)
        .map(|_| format!("\"{}\"", pick(rng, items)))
        .collect();
    format!("[{}]", chosen.join(", "))
}

/// One random, valid rule; with `limit_odds`, one with `limit:`.
fn rule(rng: &mut ChaCha8Rng, id: usize, limit_odds: f64) -> String {
    let mut fields = vec![
        format!("id: r{id}"),
        format!(
            "action: {}",
            if rng.random_bool(0.5) { "pass" } else { "drop" }
        ),
    ];
    let family = rng.random_range(0..3); // 0 any, 1 v4, 2 v6
    let protocol = match (family, rng.random_range(0..7)) {
        (_, 0) => None,
        (_, 1) => Some("tcp"),
        (_, 2) => Some("udp"),
        (_, 3) => Some("sctp"),
        (2, 4) => Some("icmpv6"),
        (_, 4) => Some("icmp"),
        (_, 5) => Some("47"),
        _ => Some("tcp"),
    };
    if let Some(p) = protocol {
        fields.push(format!("protocol: {p}"));
    }
    // What `per: src/N` with N above 32 needs.
    let mut ipv6_only = protocol == Some("icmpv6");
    if family != 0 {
        // Often single hosts, the frames' own: large sets then have enough of them for the
        // exact-address tables.
        let nets: &[&str] = match (family == 1, rng.random_bool(0.4)) {
            (true, false) => &V4_NETS,
            (true, true) => &V4_HOSTS,
            (false, false) => &V6_NETS,
            (false, true) => &V6_HOSTS,
        };
        if rng.random_bool(0.6) {
            fields.push(format!("src: {}", list(rng, nets)));
        }
        if rng.random_bool(0.6) {
            fields.push(format!("dst: {}", list(rng, nets)));
        }
        if rng.random_bool(0.3) {
            fields.push(format!(
                "family: {}",
                if family == 1 { "ipv4" } else { "ipv6" }
            ));
            ipv6_only |= family == 2;
        }
    }
    if matches!(protocol, Some("tcp" | "udp" | "sctp")) {
        if rng.random_bool(0.5) {
            fields.push(format!("dst_port: {}", list(rng, &PORTS)));
        }
        if rng.random_bool(0.2) {
            fields.push(format!("src_port: {}", list(rng, &PORTS)));
        }
    }
    if protocol == Some("tcp") && rng.random_bool(0.6) {
        fields.push(format!("tcp_flags: {}", tcp_flags(rng)));
    }
    if matches!(protocol, Some("icmp" | "icmpv6")) && rng.random_bool(0.6) {
        fields.push(format!(
            "icmp_type: {}",
            ICMP_TYPES.choose(rng).expect("non-empty")
        ));
        if rng.random_bool(0.3) {
            fields.push(format!("icmp_code: {}", rng.random_range(0..2)));
        }
    }
    if rng.random_bool(0.15) {
        fields.push(format!(
            "vlan: {}",
            if rng.random_bool(0.5) { 10 } else { 20 }
        ));
    }
    if rng.random_bool(limit_odds) {
        // Often IPv6-only, so that IPv6 prefixes (longer than 32) come up.
        if family == 2 && !ipv6_only && rng.random_bool(0.5) {
            fields.push("family: ipv6".to_string());
            ipv6_only = true;
        }
        fields.push(format!("limit: {}", limit(rng, ipv6_only)));
    }
    format!("      - {{ {} }}\n", fields.join(", "))
}

/// A random `limit:` small enough that the frames of one rule set (some 35 s of the stepping
/// clock, see `step`) go both over and under it: packets per second or minute, bytes or bits
/// per second, a burst or the default one, one bucket for the rule or one per address or
/// prefix (IPv6 prefixes such as /64 on an IPv6-only rule).
fn limit(rng: &mut ChaCha8Rng, ipv6_only: bool) -> String {
    let (over, bytes) = match rng.random_range(0..8) {
        0..=3 => (format!("{}/s", rng.random_range(1..=6)), false),
        4 => (format!("{}/min", rng.random_range(1..=120)), false),
        5 => (format!("{}bytes/s", rng.random_range(50..=2_000)), true),
        6 => (format!("{}kbytes/s", rng.random_range(1..=2)), true),
        _ => (format!("{}kbit/s", rng.random_range(1..=24)), true),
    };
    let mut fields = vec![format!("over: {over}")];
    match (rng.random_range(0..4), bytes) {
        (0, _) => {}
        (1, true) => fields.push(format!("burst: {}kbytes", rng.random_range(1..=2))),
        (_, true) => fields.push(format!("burst: {}", rng.random_range(60..=2_000))),
        (_, false) => fields.push(format!("burst: {}", rng.random_range(1..=4))),
    }
    let field = if rng.random_bool(0.7) { "src" } else { "dst" };
    let mut prefixes = vec![8, 16, 24, 25, 31, 32];
    if ipv6_only {
        prefixes.extend([48, 49, 63, 64, 127, 128]);
    }
    match rng.random_range(0..4) {
        0 => {}
        1 => fields.push(format!("per: {field}")),
        _ => fields.push(format!(
            "per: {field}/{}",
            prefixes.choose(rng).expect("non-empty")
        )),
    }
    format!("{{ {} }}", fields.join(", "))
}

const TCP_FLAGS: [&str; 8] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"];

/// A random `tcp_flags` value: one to three distinct flags, each set or (`!`) clear, most
/// often on SYN and ACK; written as one name, a list or a comma-separated string.
fn tcp_flags(rng: &mut ChaCha8Rng) -> String {
    let mut names: Vec<&str> = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let name = if rng.random_bool(0.6) {
            *["syn", "ack"].choose(rng).expect("non-empty")
        } else {
            pick(rng, &TCP_FLAGS)
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let flags: Vec<String> = names
        .iter()
        .map(|name| {
            let clear = if rng.random_bool(0.4) { "!" } else { "" };
            format!("{clear}{name}")
        })
        .collect();
    match (flags.as_slice(), rng.random_range(0..3)) {
        ([one], 0) if !one.starts_with('!') => one.clone(),
        (_, 1) => format!("\"{}\"", flags.join(",")),
        _ => {
            let quoted: Vec<String> = flags.iter().map(|f| format!("\"{f}\"")).collect();
            format!("[{}]", quoted.join(", "))
        }
    }
}

/// A random TCP flags byte for a frame: mostly the handshake's and teardown's, sometimes any.
fn frame_tcp_flags(rng: &mut ChaCha8Rng) -> Vec<&'static str> {
    const COMMON: [&[&str]; 7] = [
        &["syn"],
        &["syn", "ack"],
        &["ack"],
        &["rst"],
        &["rst", "ack"],
        &["fin", "ack"],
        &["psh", "ack"],
    ];
    if rng.random_bool(0.7) {
        COMMON.choose(rng).expect("non-empty").to_vec()
    } else {
        TCP_FLAGS
            .into_iter()
            .filter(|_| rng.random_bool(0.4))
            .collect()
    }
}

fn rule_set(rng: &mut ChaCha8Rng) -> String {
    let mut text = format!(
        "version: 1\ninterfaces:\n  lo:\n    default: {}\n    non_ip: {}\n    rules:\n",
        if rng.random_bool(0.5) { "pass" } else { "drop" },
        if rng.random_bool(0.8) { "pass" } else { "drop" },
    );
    // Small sets test the rules; large ones make deep decision trees. Either has limit rules
    // among the others, a few in a large set (each adds keys to the kernel's table, which
    // must not fill: the reference never evicts).
    let (count, limit_odds) = if rng.random_bool(0.3) {
        (rng.random_range(100..1500), 0.004)
    } else {
        (rng.random_range(1..16), 0.35)
    };
    for id in 0..count {
        text.push_str(&rule(rng, id, limit_odds));
    }
    text
}

/// A random frame: a well-formed packet near the rules' edges, often altered.
fn frame(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let v6 = rng.random_bool(0.4);
    let hosts: &[&str] = if v6 { &V6_HOSTS } else { &V4_HOSTS };
    let protocol = *["tcp", "udp", "sctp", "icmp", "icmp", "47"]
        .choose(rng)
        .expect("non-empty");
    let protocol = if protocol == "icmp" && v6 {
        "icmpv6"
    } else {
        protocol
    };
    let host = |rng: &mut ChaCha8Rng, port: Option<u16>| {
        let addr = pick(rng, hosts);
        match port {
            Some(p) if v6 => format!("[{addr}]:{p}"),
            Some(p) => format!("{addr}:{p}"),
            None => addr.to_string(),
        }
    };
    let ports = matches!(protocol, "tcp" | "udp" | "sctp");
    let (sport, dport) = (
        FRAME_PORTS.choose(rng).copied(),
        FRAME_PORTS.choose(rng).copied(),
    );
    let mut spec = format!(
        "{protocol} {} -> {}",
        host(rng, sport.filter(|_| ports)),
        host(rng, dport.filter(|_| ports))
    );
    if matches!(protocol, "icmp" | "icmpv6") {
        let _ = write!(
            spec,
            " type {} code {}",
            ICMP_TYPES.choose(rng).expect("non-empty"),
            rng.random_range(0..2)
        );
    }
    if protocol == "tcp" {
        let flags = frame_tcp_flags(rng);
        if !flags.is_empty() {
            let _ = write!(spec, " flags {}", flags.join(","));
        }
    }
    if rng.random_bool(0.2) {
        let _ = write!(spec, " vlan {}", if rng.random_bool(0.5) { 10 } else { 20 });
    }
    if rng.random_bool(0.1) {
        spec.push_str(" frag");
    }
    // The bytes after the L4 header: none, a few, or (ICMP) around the 12 a timestamp's
    // body has, so that timestamps of 20 bytes and of every length near it come up.
    let payload_len = match rng.random_range(0..5) {
        0 => 0,
        1 => rng.random_range(1..=16),
        2 => rng.random_range(10..=14),
        3 => 12,
        _ => 8,
    };
    let payload: Vec<u8> = (0..payload_len).map(|_| rng.random()).collect();
    let mut frame = PacketSpec::parse(&spec)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
        .frame_with_payload(&payload);
    alter(rng, &mut frame, v6, payload_len);
    frame
}

/// BPF_PROG_TEST_RUN takes an XDP frame of at most a page less headroom and tail room
/// (3,520 bytes with 4 KiB pages); extension headers are sized to stay below this.
const MAX_FRAME: usize = 3_400;

/// Where the IP header starts: after Ethernet and every VLAN tag.
fn l3_offset(frame: &[u8]) -> usize {
    let mut offset = 12;
    while frame.len() >= offset + 4
        && matches!(
            u16::from_be_bytes([frame[offset], frame[offset + 1]]),
            ethertype::VLAN | ethertype::QINQ
        )
    {
        offset += 4;
    }
    offset + 2
}

fn set_be16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Often, and independently: IPv4 options (IHL 5-15), IPv6 extension header chains up to and
/// past the limit (some long enough to push the upper-layer header past byte 1,024), VLAN
/// tags up to and past the limit, IPv4 total length and IPv6 payload length at and around
/// the header and frame lengths, a non-IP ether type, a bad version or IHL, truncation (often
/// inside the L4 header) and Ethernet padding. `tail` is how many bytes follow the L4 header.
fn alter(rng: &mut ChaCha8Rng, frame: &mut Vec<u8>, v6: bool, tail: usize) {
    let l3 = l3_offset(frame);
    if !v6 && rng.random_bool(0.2) {
        let ihl = rng.random_range(5..=15u8);
        let options: Vec<u8> = (0..(usize::from(ihl) - 5) * 4)
            .map(|_| {
                if rng.random_bool(0.7) {
                    1
                } else {
                    rng.random()
                }
            })
            .collect();
        frame.splice(l3 + 20..l3 + 20, options);
        frame[l3] = 0x40 | ihl;
        let total = (frame.len() - l3) as u16;
        set_be16(frame, l3 + 2, total);
    }
    if v6 && rng.random_bool(0.3) {
        // Up to and past MAX_IPV6_EXTENSIONS (8), most often right at it.
        let count = *[1, 2, 3, 7, 8, 8, 9, 10].choose(rng).expect("non-empty");
        let long = rng.random_bool(0.5);
        let rest = frame.split_off(l3 + 40);
        // Each header as its kind and its bytes after the next-header byte.
        let mut headers: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut room = MAX_FRAME - l3 - 40 - rest.len() - 8 * count;
        for _ in 0..count {
            let kind = *[0u8, 43, 60, 60, 44].choose(rng).expect("non-empty");
            let body = if kind == 44 {
                // Mostly a first fragment (offset 0), sometimes a later one.
                let offset: u16 = if rng.random_bool(0.8) { 0 } else { 185 << 3 };
                let mut body = vec![0];
                body.extend(offset.to_be_bytes());
                body.extend([0, 0, 0, 1]);
                body
            } else {
                let units = if long && rng.random_bool(0.5) {
                    rng.random_range(0..=255usize).min(room / 8)
                } else {
                    rng.random_range(0..=2usize).min(room / 8)
                };
                room -= units * 8;
                let mut body = vec![units as u8];
                body.extend((0..6 + units * 8).map(|_| rng.random::<u8>()));
                body
            };
            headers.push((kind, body));
        }
        let mut chain = Vec::new();
        let upper = frame[l3 + 6];
        for (i, (_, body)) in headers.iter().enumerate() {
            chain.push(headers.get(i + 1).map_or(upper, |(kind, _)| *kind));
            chain.extend(body);
        }
        frame[l3 + 6] = headers[0].0;
        frame.extend(chain);
        frame.extend(rest);
        let payload = (frame.len() - l3 - 40) as u16;
        set_be16(frame, l3 + 4, payload);
    }
    if rng.random_bool(0.15) {
        // Up to and past MAX_VLAN_TAGS (2), counting a tag the frame may already have.
        for _ in 0..rng.random_range(1..=3) {
            let kind = if rng.random_bool(0.5) {
                ethertype::VLAN
            } else {
                ethertype::QINQ
            };
            let id: u16 = rng.random_range(0..4096);
            let mut tag = kind.to_be_bytes().to_vec();
            tag.extend(id.to_be_bytes());
            frame.splice(12..12, tag);
        }
    }
    let l3 = l3_offset(frame);
    if frame.len() >= l3 + 20 && rng.random_bool(0.25) {
        let l3_len = frame.len() - l3;
        if v6 {
            let payload = l3_len.saturating_sub(40);
            let value = match rng.random_range(0..5) {
                0 => 0,
                1 => payload.saturating_sub(1),
                2 => payload + 1,
                3 => 0xffff,
                _ => usize::from(rng.random::<u16>()),
            };
            set_be16(frame, l3 + 4, value as u16);
        } else {
            let header = usize::from(frame[l3] & 0x0f) * 4;
            let value = match rng.random_range(0..8) {
                0 => header.saturating_sub(1),
                1 => header,
                2 => header + 1,
                3 => l3_len - 1,
                4 => l3_len + 1,
                5 => 0,
                6 => rng.random_range(0..header.max(1)),
                _ => rng.random_range(0..=0xffff),
            };
            set_be16(frame, l3 + 2, value as u16);
        }
    }
    match rng.random_range(0..40) {
        0 | 1 => frame[12..14].copy_from_slice(&[0x08, 0x06]),
        2 | 3 if !v6 => frame[l3] = 0x40 | rng.random_range(0..6),
        4 if frame.len() > l3 => frame[l3] = (frame[l3] & 0x0f) | rng.random::<u8>() & 0xf0,
        _ => {}
    }
    // XDP never sees less than an Ethernet header (and BPF_PROG_TEST_RUN refuses it).
    match rng.random_range(0..10) {
        0 => {
            let cut = rng.random_range(14..frame.len());
            frame.truncate(cut);
        }
        // Inside or at the end of the L4 header (or of the IP header just before it).
        1 | 2 => {
            let end = frame.len() - tail;
            let cut = end.saturating_sub(rng.random_range(0..=24)).max(14);
            frame.truncate(cut);
        }
        _ => {}
    }
    match rng.random_range(0..5) {
        // Ethernet padding to the 60-byte minimum, as on the wire.
        0 if frame.len() < 60 => frame.resize(60, 0),
        1 => frame.extend((0..rng.random_range(1..=16)).map(|_| rng.random::<u8>())),
        _ => {}
    }
}

fn kernel_verdict(dataplane: &mut Dataplane, frame: &[u8]) -> Verdict {
    dataplane.run(frame, Direction::In).unwrap().verdict()
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// Levels of the deepest tree in `compiled`.
fn depth(compiled: &compile::Compiled) -> usize {
    fn walk(nodes: &[firewall_common::Node], at: u32) -> usize {
        let node = nodes[at as usize];
        // An exact table's root leads straight to a leaf.
        if matches!(
            node.dim,
            firewall_common::LEAF | firewall_common::EXACT_DST | firewall_common::EXACT_SRC
        ) {
            return 1;
        }
        1 + (0..=u32::from(node.child_mask()))
            .map(|c| walk(nodes, node.first + c))
            .max()
            .unwrap_or(0)
    }
    compiled
        .policies
        .iter()
        .flat_map(|(_, p)| p.trees.into_iter().flatten())
        .filter(|tree| tree.root != firewall_common::NO_TREE)
        .map(|tree| walk(&compiled.nodes, tree.root))
        .max()
        .unwrap_or(0)
}

const MS: u64 = 1_000_000;
/// The limits' clock at the first frame: far from zero, as a kernel clock is (0 would mean
/// the kernel's own clock).
const START_NS: u64 = 1_000_000 * MS;

/// Nanoseconds the limits' clock advances before a frame: often none (frames in one
/// instant, as a burst), else up to 50 ms.
fn step(rng: &mut ChaCha8Rng) -> u64 {
    if rng.random_bool(0.3) {
        0
    } else {
        rng.random_range(0..=50 * MS)
    }
}

/// How the frames met the limit rules, over a run.
#[derive(Default)]
struct LimitStats {
    /// Frames decided by a limit rule (over its limit), by a per-rule, a per-address or
    /// -prefix, and an IPv6 prefix (longer than 32) limit, and by a byte or bit rate.
    over: u64,
    over_per_rule: u64,
    over_per_key: u64,
    over_ipv6_prefix: u64,
    over_bytes: u64,
    /// Frames under at least one limit, and under two or more.
    under: u64,
    under_two: u64,
    /// Keys the kernel's per-address table was given (an upper bound: a key of a rule that
    /// stays for several sets counts once per set).
    keys: u64,
}

impl LimitStats {
    fn count(&mut self, decision: &reference::Decision, limits: &HashMap<String, RateLimit>) {
        self.under += u64::from(!decision.passed_limits.is_empty());
        self.under_two += u64::from(decision.passed_limits.len() > 1);
        let Some(limit) = decision.rule.as_ref().and_then(|id| limits.get(id)) else {
            return;
        };
        self.over += 1;
        self.over_per_rule += u64::from(limit.key == LimitKey::Rule);
        self.over_per_key += u64::from(limit.key != LimitKey::Rule);
        self.over_ipv6_prefix += u64::from(limit.key.ipv6_prefix().is_some());
        self.over_bytes += u64::from(limit.unit != RateUnit::Packets);
    }
}

#[test]
fn the_kernel_agrees_with_the_reference_on_random_rules_and_frames() {
    if !testbed::require_root("differential") {
        return;
    }
    let total: usize = std::env::var("SMF_FIREWALL_DIFFERENTIAL_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_000);
    let seed: u64 = std::env::var("SMF_FIREWALL_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("differential: seed {seed} (SMF_FIREWALL_DIFFERENTIAL_SEED reproduces a run)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Licensed: the rules' verdicts apply (a fresh program passes everything).
    let mut dataplane = common::dataplane();
    let key_capacity = u64::from(dataplane.limit_tables().unwrap().capacity());
    let mut counters = RuleCounters::default();
    // The limits' clock, the kernel's fixed one and the reference's `now`, and the
    // reference's buckets, kept over reloads as the kernel keeps those of unchanged rules.
    let (mut now, mut limiter) = (START_NS, Limiter::new());
    let mut limit_stats = LimitStats::default();
    let (mut frames, mut sets, mut by_verdict, mut deepest, mut with_tables) =
        (0, 0, [0u64; 2], 0, 0);
    // Frames decided by a rule with `tcp_flags`.
    let mut by_flag_rule = 0u64;
    while frames < total {
        let text = rule_set(&mut rng);
        let rules = RuleSet::parse(Path::new("random.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let policy = &rules.interfaces["lo"];
        let compiled = compile::ruleset(&rules, &[("lo".to_string(), 0)], &mut counters).unwrap();
        dataplane
            .reset_rule_counters(&compiled.fresh_counters)
            .unwrap();
        dataplane.install(&compiled).unwrap();
        limiter.reload(policy);
        deepest = deepest.max(depth(&compiled));
        with_tables += usize::from(!compiled.exact.is_empty());
        let before = Verdict::ALL.map(|v| dataplane.counter(0, v).unwrap().packets);
        let slots: HashMap<String, u32> = policy
            .rules
            .iter()
            .map(|r| (r.id.clone(), counters.get("lo", &r.id).unwrap()))
            .collect();
        // Each rule's counter as the frames so far must have left it.
        let mut rule_counts: HashMap<String, u64> = slots
            .iter()
            .map(|(id, s)| (id.clone(), dataplane.rule_counter(*s).unwrap().packets))
            .collect();
        let with_flags: HashSet<String> = policy
            .rules
            .iter()
            .filter(|r| r.tcp_flags.is_some())
            .map(|r| r.id.clone())
            .collect();
        let limits: HashMap<String, RateLimit> = policy
            .rules
            .iter()
            .filter_map(|r| Some((r.id.clone(), r.limit?)))
            .collect();
        let mut expected = [0u64; 2];
        for _ in 0..FRAMES_PER_SET {
            let frame = frame(&mut rng);
            if !limits.is_empty() {
                now += step(&mut rng);
                dataplane.set_limit_clock(now).unwrap();
            }
            let decision = reference::classify_at(&rules, "lo", &frame, &mut limiter, now).unwrap();
            let want = match decision.action {
                Action::Pass => Verdict::Pass,
                Action::Drop => Verdict::Drop,
            };
            let got = kernel_verdict(&mut dataplane, &frame);
            let context = || {
                format!(
                    "frame {} ({decision:?}) at {now} ns, {} keys given to a table of {key_capacity}, under rules:\n{text}",
                    hex(&frame),
                    limit_stats.keys
                )
            };
            assert_eq!(got, want, "{}", context());
            expected[want as usize] += 1;
            // The deciding rule, frame by frame (the others, set by set below).
            if let Some(rule) = &decision.rule {
                by_flag_rule += u64::from(with_flags.contains(rule));
                let count = rule_counts.get_mut(rule).expect("a rule of the set");
                *count += 1;
                let counted = dataplane.rule_counter(slots[rule]).unwrap().packets;
                assert_eq!(counted, *count, "rule {rule} counter: {}", context());
            }
            limit_stats.count(&decision, &limits);
        }
        for verdict in Verdict::ALL {
            let counted = dataplane.counter(0, verdict).unwrap().packets - before[verdict as usize];
            assert_eq!(
                counted, expected[verdict as usize],
                "{verdict:?} counter under rules:\n{text}"
            );
            by_verdict[verdict as usize] += counted;
        }
        // No rule counted a frame that another rule or the default decided.
        for (id, slot) in &slots {
            let counted = dataplane.rule_counter(*slot).unwrap().packets;
            assert_eq!(
                counted, rule_counts[id],
                "rule {id} counter under rules:\n{text}"
            );
        }
        limit_stats.keys += limits
            .iter()
            .filter(|(_, limit)| limit.key != LimitKey::Rule)
            .map(|(id, _)| limiter.buckets(id) as u64)
            .sum::<u64>();
        frames += FRAMES_PER_SET;
        sets += 1;
    }
    let l = &limit_stats;
    eprintln!(
        "differential: {frames} frames over {sets} rule sets agree ({} pass, {} drop), deepest tree {deepest} levels, {with_tables} sets with exact-address tables, {by_flag_rule} frames decided by tcp_flags rules",
        by_verdict[0], by_verdict[1]
    );
    eprintln!(
        "differential: limits over {:.1} s of the clock: {} frames over a limit ({} per rule, {} per address or prefix, {} per IPv6 prefix, {} of a byte rate), {} under one or more ({} under two or more), at most {} keys in a table of {key_capacity}",
        (now - START_NS) as f64 / 1e9,
        l.over,
        l.over_per_rule,
        l.over_per_key,
        l.over_ipv6_prefix,
        l.over_bytes,
        l.under,
        l.under_two,
        l.keys
    );
    assert!(by_flag_rule > 0, "tcp_flags rules must decide some frames");
    assert!(
        by_verdict[0] > 0 && by_verdict[1] > 0,
        "both verdicts must be exercised"
    );
    assert!(
        with_tables > 0,
        "the exact-address tables must be exercised"
    );
    for (what, n) in [
        ("frames over a limit", l.over),
        ("frames over a per-rule limit", l.over_per_rule),
        ("frames over a per-address limit", l.over_per_key),
        ("frames over an IPv6-prefix limit", l.over_ipv6_prefix),
        ("frames over a byte limit", l.over_bytes),
        ("frames under a limit", l.under),
        ("frames under two limits", l.under_two),
    ] {
        assert!(n > 0, "{what} must come up");
    }
    assert!(
        l.keys < key_capacity,
        "the kernel's table must not fill (the reference never evicts)"
    );
}

/// The generator, without the kernel: over the differential test's 120,000 frames, every
/// class of frame at a parser limit comes up many times.
#[test]
fn the_generator_reaches_every_limit_many_times() {
    use std::collections::BTreeMap;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    let mut hit = |class: String| *hits.entry(class).or_default() += 1;
    for _ in 0..120_000 / FRAMES_PER_SET {
        let _ = rule_set(&mut rng);
        for _ in 0..FRAMES_PER_SET {
            let frame = frame(&mut rng);
            let (parsed, transport) = reference::parse_with_transport(&frame);
            let l3 = l3_offset(&frame);
            if frame.len() > l3 && frame[l3 - 2..l3] == ethertype::IPV4.to_be_bytes() {
                hit(format!("IPv4 IHL {}", frame[l3] & 0x0f));
            }
            match parsed {
                reference::Frame::Malformed(why) => hit(format!("malformed: {why}")),
                reference::Frame::Ip(packet) => {
                    let l4 = frame.len() - transport.len();
                    if !transport.is_empty() && l4 > 1024 {
                        hit("classified, upper-layer header past byte 1,024".into());
                    }
                    match packet.tcp_flags.map(|f| f & 0x12) {
                        Some(0x02) => hit("classified, TCP SYN without ACK".into()),
                        Some(0x12) => hit("classified, TCP SYN-ACK".into()),
                        _ => {}
                    }
                    if packet.protocol == 6 && packet.l4 == reference::L4::Fragment {
                        hit("classified, TCP non-first fragment".into());
                    }
                    if packet.protocol == 1
                        && matches!(
                            packet.l4,
                            reference::L4::Icmp {
                                icmp_type: 13 | 14,
                                ..
                            }
                        )
                    {
                        let exact = if transport.len() == 20 { "" } else { " not" };
                        hit(format!("classified, ICMP timestamp{exact} 20 bytes"));
                    }
                }
                reference::Frame::NonIp { .. } => hit("non-IP".into()),
            }
        }
    }
    let report: String = hits.iter().map(|(k, v)| format!("{v:>7}  {k}\n")).collect();
    eprintln!("{report}");
    let mut wanted: Vec<String> = (5..=15).map(|ihl| format!("IPv4 IHL {ihl}")).collect();
    wanted.extend(
        [
            "classified, upper-layer header past byte 1,024",
            "classified, ICMP timestamp 20 bytes",
            "classified, ICMP timestamp not 20 bytes",
            "classified, TCP SYN without ACK",
            "classified, TCP SYN-ACK",
            "classified, TCP non-first fragment",
            "malformed: IPv4 total length below its header length",
            "malformed: bad or cut IPv4 header",
            "malformed: more than two VLAN tags",
            "malformed: VLAN tag cut short",
            "malformed: IPv6 extension header chain too long",
            "malformed: IPv6 extension header cut short",
            "malformed: bad or cut IPv6 header",
            "malformed: bad or cut TCP header",
            "malformed: UDP header cut short",
            "malformed: SCTP header cut short",
            "malformed: ICMP header cut short",
            "malformed: ICMPv6 header cut short",
            "non-IP",
        ]
        .map(String::from),
    );
    for class in wanted {
        let n = hits.get(&class).copied().unwrap_or(0);
        assert!(n >= 200, "{class}: {n} frames of 120,000\n{report}");
    }
}
