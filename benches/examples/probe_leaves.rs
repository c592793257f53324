//! Which entries the benchmark's probe packets (`generate::MIDDLE_PACKET`, `MISS_PACKET`) meet
//! in each IPv4 tree of the generated rules, the cuts on the way, and by what kind of rule
//! and which conditions: how docs/dataplane.md's leaf sizes were found. No kernel needed.
//!
//! `cargo run --release -p firewall-benches --example probe_leaves -- 1000 10000 100000`
use std::{collections::HashMap, net::Ipv4Addr, path::Path};

use firewall_benches::generate;
use firewall_common::{
    EXACT_DST, EXACT_SRC, Entry, ExactSlot, LEAF, NO_TREE, Node, cond, dim, exact,
};
use firewall_rules::{
    RuleSet,
    compile::{self, RuleCounters},
};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    for count in sizes {
        let text = generate::rules(count, 1);
        let rules = RuleSet::parse(Path::new("g.yaml"), &text).unwrap();
        let mut counters = RuleCounters::default();
        let t = std::time::Instant::now();
        let c =
            compile::ruleset(&rules, &[(generate::INTERFACE.into(), 0)], &mut counters).unwrap();
        let names: HashMap<u32, String> = counters
            .iter()
            .map(|(_, r, s)| (s, r.to_string()))
            .collect();
        println!(
            "== {count} rules: {} entries, {} nodes, {} leaf items, longest leaf {}, compile {:?}",
            c.entries.len(),
            c.nodes.len(),
            c.leaves.len(),
            c.longest_leaf(),
            t.elapsed()
        );
        let probes = [("middle", [198, 19, 255, 1]), ("miss", [198, 19, 255, 129])];
        for (name, src) in probes {
            let mut key = [0u32; dim::COUNT];
            key[0] = u32::from(Ipv4Addr::from(src));
            key[4] = u32::from(Ipv4Addr::new(198, 19, 255, 2));
            key[dim::DST_PORT as usize] = 22;
            key[dim::SRC_PORT as usize] = 40000;
            key[dim::PROTOCOL as usize] = 6;
            let policy = c.policies[0].1;
            let mut total = 0;
            for (ti, tree) in policy.trees[0].iter().enumerate() {
                if tree.root == NO_TREE {
                    continue;
                }
                let mut node = c.nodes[tree.root as usize];
                let mut path = Vec::new();
                if matches!(node.dim, EXACT_DST | EXACT_SRC) {
                    let word = if node.dim == EXACT_DST {
                        key[4]
                    } else {
                        key[0]
                    };
                    let addr = [word.to_be(), 0, 0, 0];
                    path.push(format!(
                        "exact d{} {} slots",
                        node.dim,
                        exact::mask(node.shift) + 1
                    ));
                    match exact_leaf(&c.exact, &node, &addr) {
                        Some(leaf) => node = leaf,
                        None => {
                            println!(
                                "  {name} tree{ti} min {}: exact table, no slot",
                                tree.min_entry
                            );
                            continue;
                        }
                    }
                }
                while node.dim != LEAF {
                    path.push(format!(
                        "d{}>>{}&{:x}",
                        node.dim,
                        node.shift,
                        node.child_mask()
                    ));
                    let child = node.first
                        + ((key[usize::from(node.dim)] >> node.shift)
                            & u32::from(node.child_mask()));
                    node = c.nodes[child as usize];
                }
                let items = &c.leaves[node.first as usize..][..usize::from(node.leaf_count())];
                total += items.len();
                // Classify items.
                let mut kinds: HashMap<String, usize> = HashMap::new();
                let mut conds: HashMap<String, usize> = HashMap::new();
                for &i in items {
                    let e: &Entry = &c.entries[i as usize];
                    if std::env::var("PROBE_DUMP").is_ok() && items.len() > 8 {
                        println!(
                            "       {i}: {} src {:?}/{:x} dst {:?}/{:x}",
                            describe(e),
                            Ipv4Addr::from(u32::from_be(e.src_addr[0])),
                            u32::from_be(e.src_mask[0]),
                            Ipv4Addr::from(u32::from_be(e.dst_addr[0])),
                            u32::from_be(e.dst_mask[0])
                        );
                    }
                    let n = &names[&e.counter];
                    let kind = n.split('-').next().unwrap().to_string();
                    *kinds.entry(kind).or_default() += 1;
                    *conds.entry(describe(e)).or_default() += 1;
                }
                let mut kinds: Vec<_> = kinds.into_iter().collect();
                kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
                let mut conds: Vec<_> = conds.into_iter().collect();
                conds.sort_by_key(|k| std::cmp::Reverse(k.1));
                println!(
                    "  {name} tree{ti} min {} depth {} leaf {}: {}\n     kinds {:?}\n     conds {:?}",
                    tree.min_entry,
                    path.len(),
                    items.len(),
                    path.join(" "),
                    kinds,
                    &conds[..conds.len().min(8)]
                );
            }
            println!("  {name}: total entries checked {total}");
        }
    }
}

/// The kernel's `exact_leaf`: the leaf of `addr` in the exact table at `root`, if any.
fn exact_leaf(slots: &[ExactSlot], root: &Node, addr: &[u32; 4]) -> Option<Node> {
    let home = exact::home(addr, root.shift);
    (0..exact::PROBES)
        .map(|i| slots[(root.first + (home.wrapping_add(i) & exact::mask(root.shift))) as usize])
        .take_while(|slot| slot.leaf.dim == LEAF)
        .find(|slot| slot.addr == *addr)
        .map(|slot| slot.leaf)
}

fn describe(e: &Entry) -> String {
    let mut s = String::new();
    let p = |m: u32| u32::from_be(m).leading_ones();
    if e.conditions & cond::VLAN != 0 {
        s += "vlan ";
    }
    if e.conditions & cond::PROTOCOL != 0 {
        s += &format!("p{} ", e.protocol);
    }
    if e.conditions & cond::SRC != 0 {
        s += &format!("src/{} ", p(e.src_mask[0]));
    }
    if e.conditions & cond::DST != 0 {
        s += &format!("dst/{} ", p(e.dst_mask[0]));
    }
    if e.conditions & cond::SRC_PORT != 0 {
        s += &format!("sp{}-{} ", e.src_port_lo, e.src_port_hi);
    }
    if e.conditions & cond::DST_PORT != 0 {
        s += &format!("dp{}-{} ", e.dst_port_lo, e.dst_port_hi);
    }
    s
}
