//! `RuleSet` → `Compiled`: the exact contents of one generation of the kernel's maps. Every
//! interface's rules become entries (one per combination of list elements) and a decision
//! tree per IP family over them; `tree.rs` explains the trees.

mod entries;
mod error;
mod exact;
mod leaves;
mod tree;

use std::collections::{HashMap, HashSet};

use firewall_common::{
    Entry, ExactSlot, NO_TREE, Node, Policy, TREES, Tree, VLAN_TREE, cond, directed_slot, family,
};

use crate::ruleset::{self, Action, Direction, RuleSet};

pub use entries::Expansion;
pub use error::CompileError;
pub use tree::LEAF_TARGET;

/// `ruleset` refuses more entries than this before building any, whatever the `Limits`
/// validation was given; validation's default is the same.
pub use firewall_common::MAX_ENTRIES;

/// One generation of the dataplane: the trees, leaf lists and entries of every interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub nodes: Vec<Node>,
    pub leaves: Vec<u32>,
    pub entries: Vec<Entry>,
    /// The slots of the exact-address tables.
    pub exact: Vec<ExactSlot>,
    /// Per interface slot.
    pub policies: Vec<(u32, Policy)>,
    /// Rule counter slots given to rules that had none: their counts start at zero.
    pub fresh_counters: Vec<u32>,
    /// The limit of each `limit:` rule, by its counter slot (`LIMITS`; epoch 0: the daemon
    /// gives each one, keeping the epoch, and so the buckets, of a limit that did not change).
    pub limits: Vec<(u32, firewall_common::limit::Limit)>,
}

impl Compiled {
    /// The most entries one packet can be checked against in one leaf.
    pub fn longest_leaf(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.dim == firewall_common::LEAF)
            .map(|n| usize::from(n.leaf_count()))
            .max()
            .unwrap_or(0)
    }
}

/// Stable per-rule counter slots: a rule keeps its slot (and so its counts) across reloads
/// as long as its interface and id stay. Saved with the daemon's state, so that they also
/// survive a restart that takes over the pinned counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "SavedCounters", from = "SavedCounters")]
pub struct RuleCounters {
    slots: HashMap<(String, String), u32>,
    free: Vec<u32>,
    /// Freed by the last compile: the live generation may still count into them until the
    /// new one is installed, so they are reused only from the compile after.
    released: Vec<u32>,
    next: u32,
}

/// `RuleCounters` as JSON can hold it (no tuple keys).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedCounters {
    /// (interface, rule id, slot).
    slots: Vec<(String, String, u32)>,
    free: Vec<u32>,
    released: Vec<u32>,
    next: u32,
}

impl From<RuleCounters> for SavedCounters {
    fn from(counters: RuleCounters) -> Self {
        SavedCounters {
            slots: counters
                .slots
                .into_iter()
                .map(|((interface, rule), slot)| (interface, rule, slot))
                .collect(),
            free: counters.free,
            released: counters.released,
            next: counters.next,
        }
    }
}

impl From<SavedCounters> for RuleCounters {
    fn from(saved: SavedCounters) -> Self {
        RuleCounters {
            slots: saved
                .slots
                .into_iter()
                .map(|(interface, rule, slot)| ((interface, rule), slot))
                .collect(),
            free: saved.free,
            released: saved.released,
            next: saved.next,
        }
    }
}

impl RuleCounters {
    /// The slot of a rule, allocating one (and noting it in `fresh`) for a new rule.
    fn slot(
        &mut self,
        interface: &str,
        rule: &str,
        fresh: &mut Vec<u32>,
    ) -> Result<u32, CompileError> {
        let key = (interface.to_string(), rule.to_string());
        if let Some(&slot) = self.slots.get(&key) {
            return Ok(slot);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.next < firewall_common::MAX_RULE_COUNTERS => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(CompileError::TooManyRules),
        };
        self.slots.insert(key, slot);
        fresh.push(slot);
        Ok(slot)
    }

    /// Releases the slots of rules not in `rules`; fresh slots are zeroed before use.
    fn retain(&mut self, rules: &RuleSet) {
        self.free.append(&mut self.released);
        let live: HashSet<(&str, &str)> = rules
            .interfaces
            .iter()
            .flat_map(|(interface, policy)| {
                policy
                    .rules
                    .iter()
                    .map(move |r| (interface.as_str(), r.id.as_str()))
            })
            .collect();
        let (kept, gone): (HashMap<_, _>, HashMap<_, _>) = self
            .slots
            .drain()
            .partition(|((interface, id), _)| live.contains(&(interface.as_str(), id.as_str())));
        self.slots = kept;
        self.released.extend(gone.into_values());
    }

    /// The slot of a rule, if it has one.
    pub fn get(&self, interface: &str, rule: &str) -> Option<u32> {
        self.slots
            .get(&(interface.to_string(), rule.to_string()))
            .copied()
    }

    /// Every (interface, rule id, slot).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u32)> {
        self.slots
            .iter()
            .map(|((i, r), s)| (i.as_str(), r.as_str(), *s))
    }
}

/// Compiles the rules of the given interfaces (name, slot) into one generation.
pub fn ruleset(
    rules: &RuleSet,
    interfaces: &[(String, u32)],
    counters: &mut RuleCounters,
) -> Result<Compiled, CompileError> {
    let entries: u64 = interfaces
        .iter()
        .filter_map(|(name, _)| rules.interfaces.get(name))
        .flat_map(|policy| &policy.rules)
        .map(|rule| Expansion::of(rule).entries())
        .fold(0, u64::saturating_add);
    if entries > MAX_ENTRIES {
        return Err(CompileError::TooManyEntries { entries });
    }
    counters.retain(rules);
    let mut compiled = Compiled::default();
    let mut shared_leaves = HashMap::new();
    for (name, slot) in interfaces {
        let policy = rules
            .interfaces
            .get(name)
            .ok_or_else(|| CompileError::NoRules(name.clone()))?;
        for direction in Direction::ALL {
            let policy = compile_direction(
                policy,
                direction,
                name,
                counters,
                &mut compiled,
                &mut shared_leaves,
            )?;
            compiled
                .policies
                .push((directed_slot(*slot, direction.index()), policy));
        }
    }
    Ok(compiled)
}

/// One interface's rules of one direction: their entries, trees and policy. Egress has no
/// `default` of its own: what no `direction: out` rule decides passes.
fn compile_direction(
    policy: &ruleset::Policy,
    direction: Direction,
    name: &str,
    counters: &mut RuleCounters,
    compiled: &mut Compiled,
    shared_leaves: &mut HashMap<Vec<u32>, u32>,
) -> Result<Policy, CompileError> {
    {
        let mut entries = Vec::new();
        for rule in policy.rules.iter().filter(|r| r.direction == direction) {
            let counter = counters.slot(name, &rule.id, &mut compiled.fresh_counters)?;
            if let Some(limit) = &rule.limit {
                let limit = limit.kernel().map_err(|message| CompileError::Limit {
                    rule: rule.id.clone(),
                    message,
                })?;
                compiled.limits.push((counter, limit));
            }
            entries.extend(entries::of_rule(rule, counter));
        }
        // Leaves hold indices into the generation's entries: this interface's come after the
        // others'.
        let base = compiled.entries.len() as u32;
        let mut trees = [[Tree::NONE; TREES]; 2];
        for (family_trees, family) in trees.iter_mut().zip([family::IPV4, family::IPV6]) {
            let mut parts = partition(&entries, family);
            for (kind, table, tree) in [
                (exact::Kind::Dst, EXACT_DST_TREE, DST_TREE),
                (exact::Kind::Src, EXACT_SRC_TREE, SRC_TREE),
            ] {
                let members = std::mem::take(&mut parts[table]);
                if members.is_empty() {
                    continue;
                }
                let out = exact::Out {
                    nodes: &mut compiled.nodes,
                    leaves: &mut compiled.leaves,
                    shared_leaves,
                    slots: &mut compiled.exact,
                };
                let built = exact::build(kind, &entries, base, members, out);
                if let Some((root, min_entry)) = built.root {
                    family_trees[table] =
                        Tree::new(root, min_entry, &compiled.nodes, &compiled.leaves);
                }
                // What found no slot goes to the tree of that address, in rule order.
                parts[tree].extend(built.leftovers);
                parts[tree].sort_unstable();
            }
            for (tree, members) in family_trees.iter_mut().zip(parts) {
                let Some(&min) = members.first() else {
                    continue;
                };
                let mut builder = tree::Builder::new(
                    &entries,
                    base,
                    family,
                    &mut compiled.nodes,
                    &mut compiled.leaves,
                    shared_leaves,
                );
                let root = builder.build(members)?;
                *tree = Tree::new(root, base + min, &compiled.nodes, &compiled.leaves);
            }
            // The program walks the trees in this order and skips one whose lowest entry cannot
            // beat a match already found: the tree holding the earliest rules goes first. The
            // VLAN tree stays last, where the program knows to skip it for untagged packets.
            family_trees[..VLAN_TREE].sort_by_key(|tree| tree.min_entry);
        }
        let used = trees.map(|t| t[..VLAN_TREE].iter().filter(|t| t.root != NO_TREE).count() as u8);
        compiled.entries.extend(entries);
        let (default, non_ip) = match direction {
            Direction::In => (policy.default, policy.non_ip),
            Direction::Out => (Action::Pass, Action::Pass),
        };
        Ok(Policy {
            trees,
            default_verdict: default.verdict() as u8,
            non_ip_verdict: non_ip.verdict() as u8,
            used,
        })
    }
}

/// An entry wider than this share of the rule set's span in every dimension goes to the tree
/// of wide entries.
const WIDE: f64 = 0.5;

/// Trees of `partition`, by what their entries are narrow in.
const DST_TREE: usize = 0;
const SRC_TREE: usize = 1;
const PORT_TREE: usize = 2;
const WIDE_TREE: usize = 3;
const EXACT_DST_TREE: usize = 4;
const EXACT_SRC_TREE: usize = 5;

/// The entries that can match `family`, each in one tree (see `firewall_common::TREES`):
/// - with a VLAN condition, the VLAN tree: untagged packets leave it at its first cut, and
///   the other trees never copy an entry that is wide in every address for lack of a VLAN cut;
/// - with one destination host, the destination table, if the family has at least
///   `exact::MIN_ENTRIES` such entries; else with one source host, the source table likewise;
/// - else the tree of the address it is narrowest in, relative to the span of the family's
///   entries there, if it is narrower than `WIDE` in either;
/// - else the destination port tree if its port range is narrower than `WIDE`;
/// - else the tree of wide entries.
///
/// Addresses come before ports so that the port tree holds only entries that are wide in both
/// addresses: an entry narrow in its source next to one narrow in its destination, both for
/// port 22, could only be told apart by cuts that copy one kind into every child (measured on
/// the generated 100k rules: 355 entries for port 22 in one leaf, 11 after this split).
/// (`selective_ranges` gives an entry's ranges in the first three trees' dimensions.)
fn partition(entries: &[Entry], family: u8) -> [Vec<u32>; TREES] {
    let members: Vec<u32> = (0..entries.len() as u32)
        .filter(|&i| {
            let e = &entries[i as usize];
            e.conditions & cond::FAMILY == 0 || e.family == family
        })
        .collect();
    let ranges: Vec<[(u128, u128); 3]> = members
        .iter()
        .map(|&i| selective_ranges(&entries[i as usize]))
        .collect();
    // Addresses relative to where the rule set's addresses lie; ports to the whole port space.
    let spans: [f64; 3] = std::array::from_fn(|d| {
        if d == PORT_TREE {
            return 65536.0;
        }
        let specific = ranges.iter().map(|r| r[d]).filter(|r| *r != FULL_RANGES[d]);
        let (lo, hi) = specific.fold((u128::MAX, 0), |(lo, hi), (l, h)| (lo.min(l), hi.max(h)));
        if lo > hi { 1.0 } else { (hi - lo) as f64 + 1.0 }
    });
    let untagged = |i: &&u32| entries[**i as usize].conditions & cond::VLAN == 0;
    let is_host = |kind: exact::Kind, i: u32| kind.is_host(&entries[i as usize], family);
    let dst_table = members
        .iter()
        .filter(untagged)
        .filter(|&&i| is_host(exact::Kind::Dst, i))
        .count()
        >= exact::MIN_ENTRIES;
    let src_table = members
        .iter()
        .filter(untagged)
        .filter(|&&i| !(dst_table && is_host(exact::Kind::Dst, i)) && is_host(exact::Kind::Src, i))
        .count()
        >= exact::MIN_ENTRIES;
    let mut trees: [Vec<u32>; TREES] = Default::default();
    for (&i, range) in members.iter().zip(&ranges) {
        if entries[i as usize].conditions & cond::VLAN != 0 {
            trees[VLAN_TREE].push(i);
            continue;
        }
        if dst_table && is_host(exact::Kind::Dst, i) {
            trees[EXACT_DST_TREE].push(i);
            continue;
        }
        if src_table && is_host(exact::Kind::Src, i) {
            trees[EXACT_SRC_TREE].push(i);
            continue;
        }
        let share = |d: usize| {
            if range[d] == FULL_RANGES[d] {
                f64::INFINITY
            } else {
                ((range[d].1 - range[d].0) as f64 + 1.0) / spans[d]
            }
        };
        let narrowest = |dims: &[usize]| {
            dims.iter()
                .map(|&d| (d, share(d)))
                .fold(
                    (WIDE_TREE, WIDE),
                    |best, (d, s)| if s < best.1 { (d, s) } else { best },
                )
                .0
        };
        let narrowest = match narrowest(&[DST_TREE, SRC_TREE]) {
            WIDE_TREE => narrowest(&[PORT_TREE]),
            address => address,
        };
        trees[narrowest].push(i);
    }
    trees
}

/// Whole ranges of an entry in the dimensions that choose its tree: destination address,
/// source address (as 128-bit numbers) and destination port.
const FULL_RANGES: [(u128, u128); 3] = [(0, u128::MAX), (0, u128::MAX), (0, 0xffff)];

fn selective_ranges(e: &Entry) -> [(u128, u128); 3] {
    let net = |addr: &[u32; 4], mask: &[u32; 4]| {
        let to_u128 = |words: &[u32; 4]| {
            words
                .iter()
                .fold(0u128, |acc, w| (acc << 32) | u128::from(u32::from_be(*w)))
        };
        let (a, m) = (to_u128(addr), to_u128(mask));
        (a & m, (a & m) | !m)
    };
    let mut out = FULL_RANGES;
    if e.conditions & cond::DST != 0 {
        out[0] = net(&e.dst_addr, &e.dst_mask);
    }
    if e.conditions & cond::SRC != 0 {
        out[1] = net(&e.src_addr, &e.src_mask);
    }
    if e.conditions & cond::DST_PORT != 0 {
        out[2] = (u128::from(e.dst_port_lo), u128::from(e.dst_port_hi));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
        path::Path,
    };

    use firewall_common::{LEAF, NO_TREE, Verdict, dim};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::reference::{self, L4, Packet};

    fn rules(text: &str) -> RuleSet {
        RuleSet::parse(Path::new("t.yaml"), text).unwrap()
    }

    fn lan0(rules_text: &str) -> RuleSet {
        rules(&format!(
            "version: 1\ninterfaces:\n  lan0:\n    default: drop\n    non_ip: drop\n    rules:\n{rules_text}"
        ))
    }

    fn compile(set: &RuleSet, counters: &mut RuleCounters) -> Compiled {
        ruleset(set, &[("lan0".to_string(), 0)], counters).unwrap()
    }

    #[test]
    fn entries_carry_conditions_masks_verdicts_and_counters() {
        let set = lan0(
            "      - { id: web, action: pass, protocol: tcp, src: 198.18.0.0/15, dst_port: \"80-443\" }\n",
        );
        let compiled = compile(&set, &mut RuleCounters::default());
        let (slot, policy) = compiled.policies[0];
        assert_eq!(slot, 0);
        assert_eq!(policy.default_verdict, Verdict::Drop as u8);
        assert_eq!(policy.non_ip_verdict, Verdict::Drop as u8);
        let e = compiled.entries[0];
        assert_eq!(e.src_addr[0].to_ne_bytes(), [198, 18, 0, 0]);
        assert_eq!(e.src_mask[0].to_ne_bytes(), [255, 254, 0, 0]);
        assert_eq!(
            e.conditions,
            cond::FAMILY | cond::PROTOCOL | cond::SRC | cond::DST_PORT
        );
        assert_eq!(
            (e.family, e.protocol, e.dst_port_lo, e.dst_port_hi),
            (family::IPV4, 6, 80, 443)
        );
        assert_eq!((e.counter, e.verdict), (0, Verdict::Pass as u8));
        // One IPv4 tree (the port tree, see the next test), sorted first; no IPv6 tree.
        let trees: Vec<bool> = policy.trees[0].iter().map(|t| t.root != NO_TREE).collect();
        assert_eq!(trees, [true, false, false, false, false, false, false]);
        assert_eq!(policy.trees[0][0].min_entry, 0);
        assert!(policy.trees[1].iter().all(|t| *t == Tree::NONE));
    }

    /// Issue 9: every entry of a `log: true` rule carries `entry_flag::LOG`; others none.
    #[test]
    fn log_rules_set_the_log_flag_on_each_of_their_entries() {
        let set = lan0(
            "      - { id: quiet, action: drop, protocol: udp, dst_port: 9 }\n      \
             - { id: loud, action: drop, log: true, src: [198.18.0.1, \"2001:2::1\"], protocol: tcp, dst_port: [22, 23] }\n",
        );
        let entries = compile(&set, &mut RuleCounters::default()).entries;
        let flags: Vec<u8> = entries.iter().map(|e| e.flags).collect();
        assert_eq!(
            flags,
            [
                0,
                firewall_common::entry_flag::LOG,
                firewall_common::entry_flag::LOG,
                firewall_common::entry_flag::LOG,
                firewall_common::entry_flag::LOG
            ]
        );
    }

    // Each row: a rule among others, and the tree it goes to (VLAN; else narrowest address, else
    // port, relative to the span of the rule set in that dimension).
    #[test]
    fn each_entry_goes_to_the_tree_of_its_narrowest_dimension() {
        let set = lan0(
            "      - { id: spread-dst, action: drop, dst: [198.18.0.0/24, 198.19.255.0/24] }\n      \
             - { id: spread-src, action: drop, src: [198.18.0.0/24, 198.19.255.0/24] }\n      \
             - { id: narrow-dst, action: drop, protocol: tcp, dst: 198.18.5.5, src: 198.18.0.0/16, dst_port: 1-40000 }\n      \
             - { id: narrow-src, action: drop, protocol: tcp, src: 198.18.5.5, dst: 198.18.0.0/16 }\n      \
             - { id: narrow-port, action: drop, protocol: tcp, dst_port: 22, dst: 198.18.0.0/16 }\n      \
             - { id: wide, action: drop, protocol: udp, dst: 198.18.0.0/15 }\n      \
             - { id: tagged, action: drop, vlan: 10, protocol: tcp, dst: 198.18.5.5, dst_port: 22 }\n      \
             - { id: src-before-port, action: drop, protocol: tcp, src: 198.18.1.0/24, dst_port: 22 }\n",
        );
        let entries = compile(&set, &mut RuleCounters::default()).entries;
        let trees = partition(&entries, family::IPV4);
        let tree_of = |entry: u32| trees.iter().position(|t| t.contains(&entry)).unwrap();
        // Entries 0-1 and 2-3 are the two spread rules' two networks each.
        assert_eq!(
            [4, 5, 6, 7, 8, 9].map(tree_of),
            [
                DST_TREE, SRC_TREE, PORT_TREE, WIDE_TREE, VLAN_TREE, SRC_TREE
            ]
        );
    }

    #[test]
    fn tcp_flags_compile_to_a_mask_and_a_value_on_every_entry() {
        let set = lan0(
            "      - { id: a, action: drop, protocol: tcp, dst_port: [22, 80], tcp_flags: [syn, \"!ack\"] }\n      \
             - { id: b, action: drop, protocol: tcp, tcp_flags: \"!rst\" }\n      \
             - { id: c, action: drop, protocol: tcp }\n",
        );
        let compiled = compile(&set, &mut RuleCounters::default());
        let flags: Vec<(bool, u8, u8)> = compiled
            .entries
            .iter()
            .map(|e| {
                (
                    e.conditions & cond::TCP_FLAGS != 0,
                    e.tcp_flags_mask,
                    e.tcp_flags_value,
                )
            })
            .collect();
        assert_eq!(
            flags,
            [
                (true, 0x12, 0x02),
                (true, 0x12, 0x02),
                (true, 0x04, 0x00),
                (false, 0, 0)
            ]
        );
    }

    #[test]
    fn lists_expand_in_order_and_pair_families() {
        let set = lan0(
            "      - { id: a, action: drop, protocol: udp }\n      \
             - { id: b, action: pass, protocol: tcp, src: [198.18.0.0/24, \"2001:2::/48\"], dst: [198.19.0.1, \"2001:2:1::1\"], dst_port: [22, 80] }\n",
        );
        let compiled = compile(&set, &mut RuleCounters::default());
        // a: 1 entry; b: (v4 src × v4 dst + v6 src × v6 dst) × 2 ports = 4 entries.
        let counters: Vec<u32> = compiled.entries.iter().map(|e| e.counter).collect();
        assert_eq!(counters, [0, 1, 1, 1, 1]);
        assert_eq!(
            compiled.entries[0].conditions,
            cond::PROTOCOL,
            "no family without addresses"
        );
        assert_eq!(compiled.entries[3].family, family::IPV6);
        let mask_48 = [u32::MAX, u32::from_ne_bytes([0xff, 0xff, 0, 0]), 0, 0];
        assert_eq!(compiled.entries[3].src_mask, mask_48, "2001:2::/48");
    }

    #[test]
    fn rule_counters_stay_with_their_rules_and_freed_slots_wait_a_reload() {
        let mut counters = RuleCounters::default();
        let first = compile(
            &lan0("      - { id: a, action: drop }\n      - { id: b, action: drop }\n"),
            &mut counters,
        );
        assert_eq!(first.fresh_counters, [0, 1]);
        let second = compile(
            &lan0("      - { id: b, action: drop }\n      - { id: c, action: drop }\n"),
            &mut counters,
        );
        assert_eq!(counters.get("lan0", "b"), Some(1), "b keeps its slot");
        assert_eq!(
            second.fresh_counters,
            [2],
            "a's slot 0 may still be counted by the live rules"
        );
        assert_eq!(counters.get("lan0", "a"), None);
        let third = compile(&lan0("      - { id: d, action: drop }\n"), &mut counters);
        assert_eq!(third.fresh_counters, [0], "now slot 0 is free again");
    }

    /// The key the program computes for a packet.
    fn key(p: &Packet) -> [u32; dim::COUNT] {
        let words = |addr: IpAddr| match addr {
            IpAddr::V4(a) => [u32::from(a), 0, 0, 0],
            IpAddr::V6(a) => {
                let o = a.octets();
                std::array::from_fn(|i| {
                    u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                })
            }
        };
        let (a, b) = match p.l4 {
            L4::Ports { src, dst } => (src, dst),
            L4::Icmp { icmp_type, code } => (u16::from(icmp_type), u16::from(code)),
            L4::Fragment | L4::Other => (0, 0),
        };
        let (s, d) = (words(p.src), words(p.dst));
        let vlan = u32::from(p.vlan.unwrap_or(0));
        [
            s[0],
            s[1],
            s[2],
            s[3],
            d[0],
            d[1],
            d[2],
            d[3],
            u32::from(b),
            u32::from(a),
            u32::from(p.protocol),
            vlan,
        ]
    }

    /// The entries of every leaf the program would check for `p`, as the kernel walks.
    fn reached(compiled: &Compiled, p: &Packet) -> Vec<u32> {
        let trees = compiled.policies[0].1.trees[usize::from(p.src.is_ipv6())];
        let key = key(p);
        let mut out = Vec::new();
        for tree in trees.iter().filter(|t| t.root != NO_TREE) {
            let mut node = compiled.nodes[tree.root as usize];
            if let Some(leaf) = exact_leaf(compiled, node, p) {
                node = leaf;
            }
            while node.dim != LEAF {
                let child = node.first
                    + ((key[usize::from(node.dim)] >> node.shift) & u32::from(node.child_mask()));
                node = compiled.nodes[child as usize];
            }
            out.extend_from_slice(
                &compiled.leaves[node.first as usize..][..usize::from(node.leaf_count())],
            );
        }
        out
    }

    /// The leaf an exact table's root leads `p` to, as the program probes (an empty leaf for
    /// an absent address); `None` for any other node.
    fn exact_leaf(compiled: &Compiled, root: Node, p: &Packet) -> Option<Node> {
        let addr = match root.dim {
            firewall_common::EXACT_DST => p.dst,
            firewall_common::EXACT_SRC => p.src,
            _ => return None,
        };
        let words = match addr {
            IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
            IpAddr::V6(a) => {
                let o = a.octets();
                std::array::from_fn(|i| {
                    u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                })
            }
        };
        let home = firewall_common::exact::home(&words, root.shift);
        let found = (0..firewall_common::exact::PROBES)
            .map(|i| {
                compiled.exact[(root.first
                    + ((home + i) & firewall_common::exact::mask(root.shift)))
                    as usize]
            })
            .take_while(|slot| slot.leaf.dim == LEAF)
            .find(|slot| slot.addr == words);
        Some(found.map_or(Node::leaf(0, 0), |slot| slot.leaf))
    }

    fn random_rules(rng: &mut ChaCha8Rng, count: usize) -> String {
        let nets4 = [
            "198.18.0.0/15",
            "198.18.0.0/16",
            "198.18.1.0/24",
            "198.19.7.0/24",
            "198.18.1.1/32",
            "198.19.0.0/20",
            // Hosts enough for the exact tables.
            "198.18.0.1",
            "198.18.0.2",
            "198.19.1.1",
            "198.19.2.0",
        ];
        let nets6 = [
            "2001:2::/48",
            "2001:2::/64",
            "2001:2:0:1::/64",
            "2001:2::1/128",
            "2001:2:0:1::2",
            "2001:2:0:2::1",
        ];
        let ports = ["22", "53", "80-90", "1024-65535", "443", "1-1023"];
        (0..count)
            .map(|i| {
                let v6 = rng.random_bool(0.3);
                let nets: &[&str] = if v6 { &nets6 } else { &nets4 };
                let mut fields = vec![format!("id: r{i}"), "action: drop".to_string()];
                let proto = ["tcp", "udp", "any"][rng.random_range(0..3)];
                fields.push(format!("protocol: {proto}"));
                if rng.random_bool(0.7) {
                    fields.push(format!(
                        "dst: \"{}\"",
                        nets[rng.random_range(0..nets.len())]
                    ));
                }
                if rng.random_bool(0.4) {
                    fields.push(format!(
                        "src: \"{}\"",
                        nets[rng.random_range(0..nets.len())]
                    ));
                }
                if proto != "any" && rng.random_bool(0.6) {
                    fields.push(format!(
                        "dst_port: \"{}\"",
                        ports[rng.random_range(0..ports.len())]
                    ));
                }
                if proto == "tcp" && rng.random_bool(0.3) {
                    let flags = [
                        "syn",
                        "[syn, \"!ack\"]",
                        "\"rst\"",
                        "[ack, fin]",
                        "\"!ack\"",
                    ];
                    fields.push(format!(
                        "tcp_flags: {}",
                        flags[rng.random_range(0..flags.len())]
                    ));
                }
                format!("      - {{ {} }}\n", fields.join(", "))
            })
            .collect()
    }

    fn random_packet(rng: &mut ChaCha8Rng) -> Packet {
        let (src, dst): (IpAddr, IpAddr) = if rng.random_bool(0.3) {
            let host = |rng: &mut ChaCha8Rng| {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    2,
                    0,
                    rng.random_range(0..3),
                    0,
                    0,
                    0,
                    rng.random_range(0..3),
                ))
            };
            (host(rng), host(rng))
        } else {
            let host = |rng: &mut ChaCha8Rng| {
                IpAddr::V4(Ipv4Addr::new(
                    198,
                    rng.random_range(18..20),
                    rng.random_range(0..9),
                    rng.random_range(0..3),
                ))
            };
            (host(rng), host(rng))
        };
        let protocol = [6, 17, 1][rng.random_range(0..3)];
        let l4 = match protocol {
            1 => L4::Icmp {
                icmp_type: 8,
                code: 0,
            },
            _ if rng.random_bool(0.1) => L4::Fragment,
            _ => L4::Ports {
                src: rng.random_range(1..65535),
                dst: [22, 53, 80, 85, 90, 91, 443, 1023, 1024, 65535][rng.random_range(0..10)],
            },
        };
        let tcp_flags = (protocol == 6 && matches!(l4, L4::Ports { .. })).then(|| rng.random());
        Packet {
            vlan: None,
            src,
            dst,
            protocol,
            l4,
            tcp_flags,
        }
    }

    /// The property the program relies on: the leaves a packet reaches hold an entry of the
    /// rule that decides it, whatever the cuts.
    #[test]
    fn the_leaves_a_packet_reaches_hold_its_deciding_rule() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for count in [5, 200, 3000] {
            let set = lan0(&random_rules(&mut rng, count));
            let mut counters = RuleCounters::default();
            let compiled = compile(&set, &mut counters);
            assert!(
                count < 200 || !compiled.exact.is_empty(),
                "hosts in exact tables"
            );
            let policy = &set.interfaces["lan0"];
            for _ in 0..20_000 {
                let packet = random_packet(&mut rng);
                let decision = reference::decide(policy, &reference::Frame::Ip(packet.clone()));
                let reached = reached(&compiled, &packet);
                if let Some(rule) = decision.rule {
                    let slot = counters.get("lan0", &rule).unwrap();
                    assert!(
                        reached
                            .iter()
                            .any(|&e| compiled.entries[e as usize].counter == slot),
                        "{count} rules: {packet:?} decided by {rule}, not in the leaves reached"
                    );
                }
            }
        }
    }
}
