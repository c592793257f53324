//! The reference's rate-limit buckets (`limit:` on a rule): the kernel's token arithmetic
//! (`firewall_common::limit`) over buckets kept in plain maps, with a clock the caller
//! controls. One `Limiter` holds the buckets of one interface's rules, as the kernel keeps
//! them per (interface, rule).
//!
//! The kernel's per-address table is an LRU of `limits.max_keys` entries; here nothing is
//! evicted, so the two agree while the table is not full.

use std::{collections::HashMap, net::IpAddr};

use firewall_common::{
    family,
    limit::{self as kernel, LimitBucket},
};

use crate::{
    rate_limit::{LimitKey, RateLimit},
    ruleset::Policy,
};

/// A rule's buckets: one (`per` absent) or one per masked address and family.
#[derive(Debug, Clone)]
struct RuleBuckets {
    /// The limit the buckets were counted for: another one starts them all full.
    limit: RateLimit,
    /// The kernel's form of `limit` (epoch 1: a zeroed bucket is stale and starts full).
    kernel: kernel::Limit,
    buckets: HashMap<Option<(u8, [u32; 4])>, LimitBucket>,
}

/// The token buckets of one interface's limit rules, by rule id.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    rules: HashMap<String, RuleBuckets>,
}

impl Limiter {
    pub fn new() -> Limiter {
        Limiter::default()
    }

    /// Is a frame of `len` bytes (the whole frame, as the meter counts it) from `src` to `dst`
    /// over the limit of rule `id` at `now_ns`? Under the limit it takes its
    /// tokens; over it, nothing is taken. A rule seen for the first time, or whose limit
    /// changed, starts with full buckets.
    pub fn over(
        &mut self,
        id: &str,
        limit: &RateLimit,
        (src, dst): (IpAddr, IpAddr),
        now_ns: u64,
        len: u32,
    ) -> bool {
        let Ok(kernel) = limit.kernel() else {
            // Validation refuses limits the arithmetic cannot hold; such a rule never loads.
            return false;
        };
        let kernel = kernel::Limit { epoch: 1, ..kernel };
        let rule = match self.rules.get_mut(id) {
            Some(rule) if rule.limit == *limit => rule,
            _ => self
                .rules
                .entry(id.to_string())
                .insert_entry(RuleBuckets {
                    limit: *limit,
                    kernel,
                    buckets: HashMap::new(),
                })
                .into_mut(),
        };
        let key = bucket_key(limit.key, kernel.prefix, src, dst);
        rule.buckets
            .entry(key)
            .or_default()
            .over(&rule.kernel, now_ns, len)
    }

    /// A reload to `policy`: the buckets of rules no longer in it go, so that a rule that
    /// comes back in a later reload starts full, as the kernel gives its new counter slot a
    /// new epoch. A rule that stays keeps its buckets, even if it lost its limit meanwhile (its
    /// slot keeps the limit, and an unchanged one takes it up again).
    pub fn reload(&mut self, policy: &Policy) {
        self.rules
            .retain(|id, _| policy.rules.iter().any(|rule| rule.id == *id));
    }

    /// Live buckets of rule `id` (per-address buckets, or 1 for a per-rule limit once used).
    pub fn buckets(&self, id: &str) -> usize {
        self.rules.get(id).map_or(0, |rule| rule.buckets.len())
    }
}

/// The bucket a packet takes from: the rule's own, or its source's or destination's address
/// masked to the limit's prefix (capped at the family's width), with the family.
fn bucket_key(key: LimitKey, prefix: u8, src: IpAddr, dst: IpAddr) -> Option<(u8, [u32; 4])> {
    let addr = match key {
        LimitKey::Rule => return None,
        LimitKey::Src { .. } => src,
        LimitKey::Dst { .. } => dst,
    };
    let (family, words) = address_words(addr);
    Some((family, kernel::masked(&words, prefix)))
}

/// `addr` as the kernel reads it: network byte order in native words, IPv4 in the first.
fn address_words(addr: IpAddr) -> (u8, [u32; 4]) {
    match addr {
        IpAddr::V4(v4) => (family::IPV4, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (family::IPV6, [word(0), word(4), word(8), word(12)])
        }
    }
}

/// The bucket a packet from `src` to `dst` takes from for `limit`, in the operator's words:
/// `the rule`, `src 198.18.0.0/24`, `dst 2001:2::1`.
pub fn bucket_text(limit: &RateLimit, src: IpAddr, dst: IpAddr) -> String {
    let (field, addr, prefix) = match limit.key {
        LimitKey::Rule => return "the rule".to_string(),
        LimitKey::Src { prefix } => ("src", src, prefix),
        LimitKey::Dst { prefix } => ("dst", dst, prefix),
    };
    let width = if addr.is_ipv4() { 32 } else { 128 };
    match prefix.filter(|p| *p < width) {
        None => format!("{field} {addr}"),
        Some(p) => match ipnet::IpNet::new(addr, p) {
            Ok(net) => format!("{field} {}", net.trunc()),
            Err(_) => format!("{field} {addr}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::Path};

    use super::*;
    use crate::{
        reference::{
            Decision, Reason, classify_at, conntrack::Tracker, decide, decide_direction_at, parse,
        },
        ruleset::{Action, Direction, Policy, RuleSet},
        spec::PacketSpec,
    };

    const SECOND: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    /// An instant far from zero, as a kernel clock is.
    const T: u64 = 1_000 * SECOND;

    fn policy(rules: &str) -> Policy {
        let text =
            format!("version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n{rules}");
        RuleSet::parse(Path::new("t.yaml"), &text)
            .unwrap()
            .interfaces["lan0"]
            .clone()
    }

    /// One interface's rules and buckets.
    struct Interface {
        policy: Policy,
        limiter: Limiter,
    }

    impl Interface {
        fn new(rules: &str) -> Interface {
            Interface {
                policy: policy(rules),
                limiter: Limiter::new(),
            }
        }

        fn frame(&mut self, frame: &[u8], now: u64) -> Decision {
            let len = frame.len() as u32;
            decide_direction_at(
                &self.policy,
                &parse(frame),
                Direction::In,
                &mut self.limiter,
                now,
                len,
            )
        }

        fn judge(&mut self, spec: &str, now: u64) -> Decision {
            self.frame(&PacketSpec::parse(spec).unwrap().frame(), now)
        }

        /// The id of the rule that decided, or `default`.
        fn by(&mut self, spec: &str, now: u64) -> String {
            self.judge(spec, now)
                .rule
                .unwrap_or_else(|| "default".to_string())
        }
    }

    fn udp_from(src: Ipv4Addr) -> String {
        format!("udp {src}:4000 -> 198.19.0.1:53")
    }

    // Issue 16: 10,000 frames from one source in one instant through `over: 100/s, burst: 100`.
    #[test]
    fn one_instant_passes_exactly_the_burst() {
        let mut lan = Interface::new(
            "      - { id: cap, action: drop, protocol: udp, limit: { over: 100/s, burst: 100 } }\n",
        );
        let decisions: Vec<Decision> = (0..10_000)
            .map(|_| lan.judge("udp 198.18.0.1:4000 -> 198.19.0.1:53", T))
            .collect();
        let under = Decision {
            action: Action::Pass,
            rule: None,
            reason: Reason::Default,
            passed_limits: vec!["cap".to_string()],
        };
        let over = Decision {
            action: Action::Drop,
            rule: Some("cap".to_string()),
            reason: Reason::Rule,
            passed_limits: vec![],
        };
        assert!(decisions[..100].iter().all(|d| *d == under));
        assert!(decisions[100..].iter().all(|d| *d == over));
        assert_eq!(lan.limiter.buckets("cap"), 1, "one bucket for the rule");
        // The same through `classify_at`, from the rule file and the frame's bytes.
        let rules = RuleSet::parse(
            Path::new("t.yaml"),
            "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n      - { id: cap, action: drop, protocol: udp, limit: { over: 100/s, burst: 100 } }\n",
        )
        .unwrap();
        let frame = PacketSpec::parse("udp 198.18.0.1:4000 -> 198.19.0.1:53")
            .unwrap()
            .frame();
        let mut limiter = Limiter::new();
        let limited = (0..10_000)
            .filter(|_| {
                classify_at(&rules, "lan0", &frame, &mut limiter, T)
                    .unwrap()
                    .rule
                    .is_some()
            })
            .count();
        assert_eq!(limited, 9_900);
    }

    // Issue 16: 200 sources at 50/s each over 2 s are never limited by `over: 100/s per src`
    // while one source floods at 100,000/s.
    #[test]
    fn per_source_buckets_limit_the_flooder_only() {
        let mut lan = Interface::new(
            "      - { id: per-src, action: drop, protocol: udp, limit: { over: 100/s, per: src } }\n",
        );
        let flooder = Ipv4Addr::new(198, 18, 9, 9);
        // (time, source): each quiet source every 20 ms from its own offset, the flooder
        // every 10 µs.
        let mut sends: Vec<(u64, Ipv4Addr)> = (0..200u32)
            .flat_map(|i| {
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i + 1);
                (0..100u64).map(move |n| (T + u64::from(i) * 100_000 + n * 20 * MS, src))
            })
            .chain((0..200_000u64).map(|k| (T + k * 10_000, flooder)))
            .collect();
        sends.sort();
        let (mut quiet_limited, mut flood_passed, mut flood_sent) = (0, 0, 0);
        for (now, src) in sends {
            let decided = lan.by(&udp_from(src), now);
            if src == flooder {
                flood_sent += 1;
                flood_passed += usize::from(decided == "default");
            } else {
                quiet_limited += usize::from(decided != "default");
            }
        }
        assert_eq!(quiet_limited, 0);
        assert_eq!(flood_sent, 200_000);
        // The burst of 100 at once, then one every 10 ms for the remaining 1.99 s.
        assert_eq!(flood_passed, 100 + 199);
        assert_eq!(lan.limiter.buckets("per-src"), 201);
    }

    // `per: src/24`: a /24 shares one bucket; another /24, or the same bits of the other
    // family, has its own.
    #[test]
    fn a_prefix_groups_its_network() {
        let mut lan = Interface::new(
            "      - { id: net, action: drop, limit: { over: 10/s, burst: 3, per: src/24 } }\n",
        );
        let cases = [
            ("udp 198.18.5.1 -> 198.19.0.1:53", "default"),
            ("tcp 198.18.5.2 -> 198.19.0.1:80", "default"),
            ("udp 198.18.5.255 -> 198.19.0.2:53", "default"),
            ("udp 198.18.5.1 -> 198.19.0.1:53", "net"), // the /24's fourth packet
            ("udp 198.18.6.1 -> 198.19.0.1:53", "default"), // another /24
            // c612:0500:: has 198.18.5's bits in its first 24, but is IPv6.
            ("udp c612:5ff::1 -> 2001:2::1", "default"),
            ("udp c612:500::1 -> 2001:2::1", "default"),
            ("udp c612:5ff:ffff::9 -> 2001:2::2", "default"),
            ("udp c612:5aa::7 -> 2001:2::1", "net"),
        ];
        for (spec, by) in cases {
            assert_eq!(lan.by(spec, T), by, "{spec}");
        }
        assert_eq!(lan.limiter.buckets("net"), 3);
    }

    // `per: src` without a prefix keys on the whole address of either family.
    #[test]
    fn per_address_keys_the_whole_address() {
        let mut lan = Interface::new(
            "      - { id: host, action: drop, limit: { over: 1/min, burst: 1, per: src } }\n",
        );
        let cases = [
            ("udp 198.18.5.1 -> 198.19.0.1:53", "default"),
            ("udp 198.18.5.2 -> 198.19.0.1:53", "default"),
            ("udp 198.18.5.1 -> 198.19.0.1:53", "host"),
            ("udp [2001:2::1]:1 -> [2001:2::9]:53", "default"),
            ("udp [2001:2::1:1]:1 -> [2001:2::9]:53", "default"),
            ("udp [2001:2::1]:1 -> [2001:2::9]:53", "host"),
        ];
        for (spec, by) in cases {
            assert_eq!(lan.by(spec, T), by, "{spec}");
        }
        // A minute later each has one packet again.
        assert_eq!(
            lan.by("udp 198.18.5.1 -> 198.19.0.1:53", T + 60 * SECOND),
            "default"
        );
        assert_eq!(
            lan.by("udp 198.18.5.1 -> 198.19.0.1:53", T + 60 * SECOND),
            "host"
        );
    }

    // `per: dst`: every source sending to one destination shares its bucket.
    #[test]
    fn per_destination_buckets() {
        let mut lan = Interface::new(
            "      - { id: victim, action: drop, protocol: udp, limit: { over: 5/s, burst: 2, per: dst } }\n",
        );
        let cases = [
            ("udp 198.18.0.1 -> 198.19.0.1:53", "default"),
            ("udp 198.18.0.2 -> 198.19.0.1:53", "default"),
            ("udp 198.18.0.3 -> 198.19.0.1:53", "victim"),
            ("udp 198.18.0.3 -> 198.19.0.2:53", "default"),
            ("tcp 198.18.0.3 -> 198.19.0.1:53", "default"), // the rule is UDP only
        ];
        for (spec, by) in cases {
            assert_eq!(lan.by(spec, T), by, "{spec}");
        }
        // 200 ms refill one packet (5/s) for 198.19.0.1.
        let later = T + 200 * MS;
        assert_eq!(lan.by("udp 198.18.0.9 -> 198.19.0.1:53", later), "default");
        assert_eq!(lan.by("udp 198.18.0.9 -> 198.19.0.1:53", later), "victim");
        assert_eq!(lan.limiter.buckets("victim"), 2);
    }

    // A reload forgets the buckets of rules that left; a rule that stays keeps them.
    #[test]
    fn a_reload_forgets_the_rules_that_left() {
        let cap = "      - { id: cap, action: drop, limit: { over: 1/h, burst: 1 } }\n";
        let other = "      - { id: other, action: drop, protocol: tcp }\n";
        let both = format!("{cap}{other}");
        let udp = "udp 198.18.0.1 -> 198.19.0.1:53";
        let mut lan = Interface::new(&both);
        assert_eq!(lan.by(udp, T), "default");
        assert_eq!(lan.by(udp, T), "cap");
        lan.limiter.reload(&policy(&both));
        assert_eq!(lan.by(udp, T), "cap", "a rule that stays keeps its bucket");
        lan.limiter.reload(&policy(other));
        assert_eq!(lan.limiter.buckets("cap"), 0);
        lan.limiter.reload(&policy(&both));
        assert_eq!(lan.by(udp, T), "default", "back, it starts full");
    }

    /// A UDP/IPv4 frame of exactly `len` bytes.
    fn udp_frame(len: usize) -> Vec<u8> {
        let frame = PacketSpec::parse("udp 198.18.0.1:9 -> 198.19.0.1:53")
            .unwrap()
            .frame_with_payload(&vec![0; len - 42]);
        assert_eq!(frame.len(), len);
        frame
    }

    // Byte and bit rates charge each frame its whole length (Ethernet header included).
    #[test]
    fn byte_rates_charge_the_frame_length() {
        // 8 kbit/s is 1,000 bytes a second; a burst of 1,500 bytes.
        for over in ["8kbit/s", "1000bytes/s"] {
            let mut lan = Interface::new(&format!(
                "      - {{ id: bw, action: drop, limit: {{ over: {over}, burst: 1500 }} }}\n"
            ));
            let by = |lan: &mut Interface, len: usize, now: u64| {
                lan.frame(&udp_frame(len), now).rule.is_some()
            };
            assert!(!by(&mut lan, 600, T), "{over}: 900 bytes left");
            assert!(!by(&mut lan, 600, T), "{over}: 300 bytes left");
            assert!(by(&mut lan, 301, T), "{over}: over by one byte");
            assert!(!by(&mut lan, 300, T), "{over}: the last 300 bytes");
            assert!(by(&mut lan, 60, T), "{over}: empty");
            // 100 ms refill 100 bytes.
            assert!(!by(&mut lan, 100, T + 100 * MS), "{over}");
            assert!(by(&mut lan, 60, T + 100 * MS), "{over}");
            // A frame longer than the burst is over even in a full bucket.
            assert!(by(&mut lan, 1501, T + 3_600 * SECOND), "{over}");
            assert!(!by(&mut lan, 1500, T + 3_600 * SECOND), "{over}");
        }
        // The default burst of a bit rate: one second's worth, in bytes.
        let mut lan =
            Interface::new("      - { id: bw, action: drop, limit: { over: 8kbit/s } }\n");
        assert!(lan.frame(&udp_frame(1000), T).rule.is_none());
        assert_eq!(lan.frame(&udp_frame(60), T).rule.as_deref(), Some("bw"));
    }

    // Two limit rules on the same traffic: the first takes its tokens from every packet under
    // its limit; the second sees only those, and over the first's limit decides nothing.
    #[test]
    fn two_limit_rules_in_a_row() {
        let mut lan = Interface::new(
            "      - { id: wide, action: drop, limit: { over: 100/s, burst: 5 } }\n      - { id: narrow, action: drop, protocol: udp, limit: { over: 100/s, burst: 3 } }\n",
        );
        let udp = "udp 198.18.0.1 -> 198.19.0.1:53";
        let seen: Vec<(Option<String>, Vec<String>)> = (0..7)
            .map(|_| {
                let d = lan.judge(udp, T);
                (d.rule, d.passed_limits)
            })
            .collect();
        let both = vec!["wide".to_string(), "narrow".to_string()];
        let wide = vec!["wide".to_string()];
        assert_eq!(
            seen,
            [
                (None, both.clone()),
                (None, both.clone()),
                (None, both),
                (Some("narrow".to_string()), wide.clone()),
                (Some("narrow".to_string()), wide),
                (Some("wide".to_string()), vec![]),
                (Some("wide".to_string()), vec![]),
            ]
        );
        // TCP does not match `narrow`, and `wide` is empty.
        assert_eq!(lan.by("tcp 198.18.0.1 -> 198.19.0.1:80", T), "wide");
        // 10 ms later `wide` has one token; `narrow` has had its 1 too.
        assert_eq!(lan.by(udp, T + 10 * MS), "default");
    }

    // A limit rule, then a rule that drops some of what passes under the limit.
    #[test]
    fn what_passes_under_a_limit_meets_the_later_rules() {
        let mut lan = Interface::new(
            "      - { id: ssh-flood, action: drop, protocol: tcp, dst_port: 22, limit: { over: 10/s, burst: 2, per: src } }\n      - { id: banned, action: drop, src: 198.18.9.0/24 }\n      - { id: ssh, action: pass, protocol: tcp, dst_port: 22 }\n",
        );
        lan.policy.default = Action::Drop;
        let banned = "tcp 198.18.9.1:4000 -> 198.19.0.1:22";
        let friend = "tcp 198.18.1.1:4000 -> 198.19.0.1:22";
        let order = [
            (banned, "banned"),
            (friend, "ssh"),
            (banned, "banned"),
            (friend, "ssh"),
            (banned, "ssh-flood"),
            (friend, "ssh-flood"),
            ("tcp 198.18.9.1:4000 -> 198.19.0.1:80", "banned"),
            ("tcp 198.18.1.1:4000 -> 198.19.0.1:80", "default"),
        ];
        for (spec, by) in order {
            assert_eq!(lan.by(spec, T), by, "{spec}");
        }
    }

    // Buckets survive a reload while the rule and its limit are unchanged; a changed limit
    // starts full. A rule whose conditions do not match is never consulted.
    #[test]
    fn buckets_survive_a_reload_of_the_same_limit() {
        let rules = |burst: u32| {
            format!(
                "      - {{ id: cap, action: drop, protocol: udp, limit: {{ over: 1/h, burst: {burst} }} }}\n"
            )
        };
        let mut lan = Interface::new(&rules(2));
        let udp = "udp 198.18.0.1 -> 198.19.0.1:53";
        assert_eq!(lan.by("tcp 198.18.0.1 -> 198.19.0.1:53", T), "default");
        assert_eq!(
            lan.limiter.buckets("cap"),
            0,
            "TCP never reached the bucket"
        );
        let passed =
            |lan: &mut Interface, n: usize| (0..n).filter(|_| lan.by(udp, T) == "default").count();
        assert_eq!(passed(&mut lan, 5), 2);
        lan.policy = policy(&rules(2));
        assert_eq!(passed(&mut lan, 5), 0, "the same limit keeps its bucket");
        lan.policy = policy(&rules(3));
        assert_eq!(passed(&mut lan, 5), 3, "a changed limit starts full");
    }

    // Without a history (`decide`), a limit rule never decides: a new bucket is full.
    #[test]
    fn the_stateless_decision_is_the_first_packets() {
        let policy = policy(
            "      - { id: cap, action: drop, limit: { over: 1/h, burst: 1 } }\n      - { id: web, action: drop, protocol: tcp, dst_port: 80 }\n",
        );
        let frame = PacketSpec::parse("tcp 198.18.0.1:1 -> 198.19.0.1:80")
            .unwrap()
            .frame();
        for _ in 0..3 {
            let d = decide(&policy, &parse(&frame));
            assert_eq!(d.rule.as_deref(), Some("web"));
            assert_eq!(d.passed_limits, ["cap"]);
        }
    }

    // A tracked flow passes before the rules: limits apply to new traffic only.
    #[test]
    fn tracked_flows_pass_before_the_limit() {
        let mut policy = policy(
            "      - { id: syn-new, action: drop, protocol: tcp, limit: { over: 1/s, burst: 1 } }\n      - { id: web, action: pass, protocol: tcp, dst_port: 80, state: true }\n",
        );
        policy.default = Action::Drop;
        let mut tracker = Tracker::new([120 * SECOND; firewall_common::conntrack::state::COUNT]);
        let frame = |spec: &str| PacketSpec::parse(spec).unwrap().frame();
        let judge = |t: &mut Tracker, spec: &str| {
            let d = t.judge(&policy, &frame(spec), T);
            (d.reason, d.rule)
        };
        let out = "tcp 198.18.0.1:40000 -> 198.19.0.1:80";
        let back = "tcp 198.19.0.1:80 -> 198.18.0.1:40000";
        let web = (Reason::Rule, Some("web".to_string()));
        assert_eq!(judge(&mut tracker, &format!("{out} flags SYN")), web);
        for _ in 0..10 {
            assert_eq!(
                judge(&mut tracker, &format!("{back} flags ACK")).0,
                Reason::Tracked
            );
            assert_eq!(
                judge(&mut tracker, &format!("{out} flags ACK")).0,
                Reason::Tracked
            );
        }
        // A second new flow in the same instant is over the limit.
        assert_eq!(
            judge(
                &mut tracker,
                "tcp 198.18.0.1:40001 -> 198.19.0.1:80 flags SYN"
            ),
            (Reason::Rule, Some("syn-new".to_string()))
        );
        assert_eq!(tracker.limiter.buckets("syn-new"), 1);
    }

    #[test]
    fn buckets_are_named_as_the_operator_writes_them() {
        let packet = |spec: &str| match parse(&PacketSpec::parse(spec).unwrap().frame()) {
            crate::reference::Frame::Ip(p) => p,
            other => panic!("{other:?}"),
        };
        let v4 = packet("udp 198.18.7.9 -> 198.19.0.1:53");
        let v6 = packet("udp 2001:2::7 -> 2001:2:0:1::9");
        let limit = |per: &str| {
            let text = if per.is_empty() {
                String::new()
            } else {
                format!(", per: {per}")
            };
            policy(&format!(
                "      - {{ id: a, action: drop, family: ipv6, limit: {{ over: 1/s{text} }} }}\n"
            ))
            .rules[0]
                .limit
                .unwrap()
        };
        let cases = [
            ("", &v4, "the rule"),
            ("src", &v4, "src 198.18.7.9"),
            ("src/24", &v4, "src 198.18.7.0/24"),
            ("src/64", &v4, "src 198.18.7.9"),
            ("dst/16", &v4, "dst 198.19.0.0/16"),
            ("src/48", &v6, "src 2001:2::/48"),
            ("dst", &v6, "dst 2001:2:0:1::9"),
            ("dst/128", &v6, "dst 2001:2:0:1::9"),
        ];
        for (per, packet, text) in cases {
            assert_eq!(
                bucket_text(&limit(per), packet.src, packet.dst),
                text,
                "{per}"
            );
        }
    }
}
