//! Exact-address tables (`firewall_common::exact`): a family's entries whose destination (or
//! source) is one host, grouped by that address and placed by linear probing in a table the
//! program probes, so that a thousand host rules cost one probe instead of a tree walk and a
//! leaf scan. Each address's leaf lists its entries in rule order and ends at the first one
//! that the address alone decides.

use std::collections::HashMap;

use firewall_common::{
    EXACT_DST, EXACT_SRC, Entry, ExactSlot, MAX_LEAF_ENTRIES, Node, cond, exact,
};

/// Where a table goes: the generation's nodes, leaf lists (shared when equal) and slots.
pub struct Out<'a> {
    pub nodes: &'a mut Vec<Node>,
    pub leaves: &'a mut Vec<u32>,
    pub shared_leaves: &'a mut HashMap<Vec<u32>, u32>,
    pub slots: &'a mut Vec<ExactSlot>,
}

/// Fewer host entries of one kind than this stay in the trees: a tree leaf that short costs
/// no more than a probe.
pub const MIN_ENTRIES: usize = 8;

/// A table is at most this many times larger than the smallest power of two that holds
/// twice its addresses; addresses that still find no free slot within `exact::PROBES` stay
/// in the trees.
const MAX_GROWTH_BITS: u32 = 3;

/// The address an exact table is keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dst,
    Src,
}

impl Kind {
    /// The root's `Node::dim`.
    pub const fn dim(self) -> u8 {
        match self {
            Kind::Dst => EXACT_DST,
            Kind::Src => EXACT_SRC,
        }
    }

    const fn condition(self) -> u16 {
        match self {
            Kind::Dst => cond::DST,
            Kind::Src => cond::SRC,
        }
    }

    fn addr_and_mask(self, e: &Entry) -> ([u32; 4], [u32; 4]) {
        match self {
            Kind::Dst => (e.dst_addr, e.dst_mask),
            Kind::Src => (e.src_addr, e.src_mask),
        }
    }

    /// Does `e`, an entry that can match `family`, name exactly one host in this address?
    pub fn is_host(self, e: &Entry, family: u8) -> bool {
        let host = if family == firewall_common::family::IPV4 {
            [u32::MAX, 0, 0, 0]
        } else {
            [u32::MAX; 4]
        };
        e.conditions & self.condition() != 0 && self.addr_and_mask(e).1 == host
    }

    /// Does `e` match every packet of its family with its address here?
    fn decided_by_address(self, e: &Entry) -> bool {
        e.conditions & !(cond::FAMILY | self.condition()) == 0
    }
}

/// A built table: its root node's index and its lowest member, and the members that found no
/// slot (the caller gives them to the trees).
pub struct Built {
    pub root: Option<(u32, u32)>,
    pub leftovers: Vec<u32>,
}

/// Builds the `kind` table over `members` (indices into `entries`, in rule order, each a host
/// in that address) into `out`; `base` is the index of `entries[0]` in the generation.
pub fn build(kind: Kind, entries: &[Entry], base: u32, members: Vec<u32>, out: Out) -> Built {
    let mut groups: Vec<([u32; 4], Vec<u32>)> = Vec::new();
    let mut by_addr: HashMap<[u32; 4], usize> = HashMap::new();
    for m in members {
        let addr = kind.addr_and_mask(&entries[m as usize]).0;
        let group = *by_addr.entry(addr).or_insert_with(|| {
            groups.push((addr, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(m);
    }
    let mut leftovers = Vec::new();
    let mut lists = Vec::with_capacity(groups.len());
    for (addr, mut list) in groups {
        // Entries after one the address alone decides can never be the first match.
        if let Some(at) = list
            .iter()
            .position(|&m| kind.decided_by_address(&entries[m as usize]))
        {
            list.truncate(at + 1);
            // (The entries cut off are still in no other structure: they cannot match first.)
        }
        if list.len() > MAX_LEAF_ENTRIES {
            leftovers.extend(list);
        } else {
            lists.push((addr, list));
        }
    }
    let (shift, table, unplaced) = place(&lists);
    for i in unplaced {
        leftovers.extend_from_slice(&lists[i].1);
    }
    leftovers.sort_unstable();
    let Some(lowest) = table.iter().flatten().map(|&i| lists[i].1[0]).min() else {
        return Built {
            root: None,
            leftovers,
        };
    };
    let first = out.slots.len() as u32;
    let (leaves, shared_leaves) = (out.leaves, out.shared_leaves);
    for placed in table {
        out.slots.push(match placed {
            None => ExactSlot::default(),
            Some(i) => {
                let (addr, list) = &lists[i];
                let list = super::leaves::unshadowed(entries, list.clone());
                let list: Vec<u32> = list.into_iter().map(|m| m + base).collect();
                let count = list.len() as u16;
                let at = super::leaves::store(leaves, shared_leaves, list);
                ExactSlot {
                    addr: *addr,
                    leaf: Node::leaf(at, count),
                }
            }
        });
    }
    let root = out.nodes.len() as u32;
    out.nodes.push(Node::internal(first, kind.dim(), shift, 0));
    Built {
        root: Some((root, base + lowest)),
        leftovers,
    }
}

/// Places each address within `exact::PROBES` slots of its home: the smallest table (at least
/// twice the addresses) where all fit, else the largest tried with the ones that did not fit.
/// Returns the shift, each slot's list index, and the lists left out.
fn place(lists: &[([u32; 4], Vec<u32>)]) -> (u8, Vec<Option<usize>>, Vec<usize>) {
    let smallest = (2 * lists.len())
        .next_power_of_two()
        .trailing_zeros()
        .max(1);
    let mut attempt = None;
    for bits in smallest..=(smallest + MAX_GROWTH_BITS).min(31) {
        let shift = (32 - bits) as u8;
        let mut table = vec![None; 1 << bits];
        let mut unplaced = Vec::new();
        for (i, (addr, _)) in lists.iter().enumerate() {
            let home = exact::home(addr, shift);
            let free = (0..exact::PROBES)
                .map(|p| (home + p) & exact::mask(shift))
                .find(|&s| table[s as usize].is_none());
            match free {
                Some(s) => table[s as usize] = Some(i),
                None => unplaced.push(i),
            }
        }
        let done = unplaced.is_empty();
        attempt = Some((shift, table, unplaced));
        if done {
            break;
        }
    }
    attempt.expect("at least one size is tried")
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_common::{LEAF, family};

    /// A generation's parts, as the compiler holds them.
    #[derive(Default)]
    struct Compiled {
        nodes: Vec<Node>,
        leaves: Vec<u32>,
        shared: HashMap<Vec<u32>, u32>,
        exact: Vec<ExactSlot>,
    }

    impl Compiled {
        fn out(&mut self) -> Out<'_> {
            Out {
                nodes: &mut self.nodes,
                leaves: &mut self.leaves,
                shared_leaves: &mut self.shared,
                slots: &mut self.exact,
            }
        }
    }

    fn host(i: u32) -> Entry {
        Entry {
            dst_addr: [u32::to_be(0xc613_0000 + i), 0, 0, 0],
            dst_mask: [u32::MAX, 0, 0, 0],
            conditions: cond::FAMILY | cond::DST,
            family: family::IPV4,
            counter: i,
            ..Entry::default()
        }
    }

    /// The program's probe, in Rust.
    fn probe(root: Node, slots: &[ExactSlot], addr: [u32; 4]) -> Option<Node> {
        let home = exact::home(&addr, root.shift);
        (0..exact::PROBES)
            .map(|p| slots[(root.first + ((home + p) & exact::mask(root.shift))) as usize])
            .take_while(|s| s.leaf.dim == LEAF)
            .find(|s| s.addr == addr)
            .map(|s| s.leaf)
    }

    #[test]
    fn every_host_is_found_within_the_probes_and_absent_ones_are_not() {
        for n in [8u32, 1_000, 100_000] {
            let entries: Vec<Entry> = (0..n).map(host).collect();
            let mut c = Compiled::default();
            let built = build(Kind::Dst, &entries, 10, (0..n).collect(), c.out());
            assert!(built.leftovers.is_empty(), "{n}: {}", built.leftovers.len());
            let (root, lowest) = built.root.unwrap();
            assert_eq!(lowest, 10);
            let (root, slots, leaves) = (c.nodes[root as usize], &c.exact, &c.leaves);
            assert_eq!(root.dim, EXACT_DST);
            assert!(slots.len() >= 2 * n as usize);
            for i in 0..n {
                let leaf = probe(root, slots, entries[i as usize].dst_addr).unwrap();
                assert_eq!(&leaves[leaf.first as usize..][..1], [i + 10]);
            }
            assert!(probe(root, slots, [u32::to_be(0x0a00_0001), 0, 0, 0]).is_none());
        }
    }

    #[test]
    fn a_host_lists_its_entries_in_order_up_to_the_one_its_address_decides() {
        let mut entries: Vec<Entry> = (0..8).map(host).collect();
        // Entry 8: host 0 again, only for UDP; 9: host 0, any packet; 10: host 0 for TCP.
        let udp = Entry {
            conditions: cond::FAMILY | cond::DST | cond::PROTOCOL,
            protocol: 17,
            ..host(0)
        };
        entries[0] = udp;
        entries.extend([host(0), udp, Entry { protocol: 6, ..udp }]);
        let mut c = Compiled::default();
        let built = build(Kind::Dst, &entries, 0, (0..11).collect(), c.out());
        let root = c.nodes[built.root.unwrap().0 as usize];
        let leaf = probe(root, &c.exact, entries[0].dst_addr).unwrap();
        assert_eq!(
            &c.leaves[leaf.first as usize..][..usize::from(leaf.leaf_count())],
            [0, 8]
        );
    }
}
