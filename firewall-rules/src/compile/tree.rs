//! Builds one family's decision tree over a list of entries (HiCuts-style).
//!
//! A node cuts one dimension of the key (an address word, a port, the protocol) by a window
//! of up to 8 bits: child `(value >> shift) & mask`. An entry goes to every child its range
//! can reach, so every entry that can match a packet is in the leaf the packet reaches, and
//! the leaf check (a full match, in rule order) makes the answer exact whatever the cuts. The
//! cuts only decide the cost: each node takes the window that leaves the smallest largest
//! child, looking where the node's entries differ, and is refused when it would copy entries
//! too often (HiCuts' space factor). Nodes are split largest first until every leaf is small
//! or the tree has spent its memory budget, so the budget goes where the worst-case packet
//! cost is. A node knows the bits its ancestors fixed, so a leaf list
//! ends at the first entry that matches every packet that can reach the leaf. Identical leaf
//! lists are stored once.

use std::collections::{BinaryHeap, HashMap};

use firewall_common::{Entry, MAX_LEAF_ENTRIES, MAX_TREE_DEPTH, Node, cond, dim, family};

use super::{error::CompileError, leaves};

/// Entries at or below which a node becomes a leaf.
pub const LEAF_TARGET: usize = 8;
/// A cut may put at most this many times the node's entries into its children (plus one per
/// child), so that wide entries do not multiply without bound.
const SPACE_FACTOR: usize = 8;
/// Nodes plus entry copies one tree may spend, per entry it holds (plus a fixed allowance).
const BUDGET_PER_ENTRY: usize = 8;
const BUDGET_BASE: usize = 4096;
/// Window sizes tried at each node, in bits: wide windows make shallow trees, narrow ones
/// copy wide entries less.
const WINDOWS: [u32; 5] = [8, 6, 4, 2, 1];

/// An entry's range in every dimension, inclusive.
type Ranges = [(u32, u32); dim::COUNT];

const fn width(d: usize) -> u32 {
    match d as u8 {
        dim::DST_PORT | dim::SRC_PORT => 16,
        dim::PROTOCOL => 8,
        dim::VLAN => 12,
        _ => 32,
    }
}

const fn full(d: usize) -> (u32, u32) {
    (
        0,
        if width(d) == 32 {
            u32::MAX
        } else {
            (1 << width(d)) - 1
        },
    )
}

/// Where to cut.
struct Cut {
    dim: usize,
    shift: u32,
    bits: u32,
    /// (largest child, entries over all children): smaller is better.
    score: (usize, usize),
}

pub struct Builder<'a> {
    entries: &'a [Entry],
    /// Index of `entries[0]` in the generation's entries.
    base: u32,
    ranges: Vec<Ranges>,
    dims: &'static [usize],
    nodes: &'a mut Vec<Node>,
    leaves: &'a mut Vec<u32>,
    shared_leaves: &'a mut HashMap<Vec<u32>, u32>,
}

const V4_DIMS: [usize; 6] = [
    dim::SRC as usize,
    dim::DST as usize,
    dim::DST_PORT as usize,
    dim::SRC_PORT as usize,
    dim::PROTOCOL as usize,
    dim::VLAN as usize,
];
const V6_DIMS: [usize; dim::COUNT] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

impl<'a> Builder<'a> {
    pub fn new(
        entries: &'a [Entry],
        base: u32,
        family: u8,
        nodes: &'a mut Vec<Node>,
        leaves: &'a mut Vec<u32>,
        shared_leaves: &'a mut HashMap<Vec<u32>, u32>,
    ) -> Self {
        Builder {
            entries,
            base,
            ranges: entries.iter().map(ranges).collect(),
            dims: if family == family::IPV4 {
                &V4_DIMS
            } else {
                &V6_DIMS
            },
            nodes,
            leaves,
            shared_leaves,
        }
    }

    /// Builds a tree over `members` (indices into the entries, in rule order, all able to
    /// match this family); returns its root.
    pub fn build(&mut self, members: Vec<u32>) -> Result<u32, CompileError> {
        let budget = BUDGET_BASE + BUDGET_PER_ENTRY * members.len();
        let mut spent = 0;
        let root = self.nodes.len();
        self.nodes.push(Node::default());
        let region = Region::default();
        let mut pending = BinaryHeap::from([Pending {
            members: self.until_covering(members, &region),
            index: root,
            region,
            depth: 1,
        }]);
        let mut leaves = Vec::new();
        while let Some(node) = pending.pop() {
            let splittable =
                node.members.len() > LEAF_TARGET && node.depth < MAX_TREE_DEPTH && spent < budget;
            let Some(cut) = splittable.then(|| self.best_cut(&node.members)).flatten() else {
                leaves.push(node);
                continue;
            };
            let children = self.split(&node.members, &cut);
            let first = self.nodes.len();
            self.nodes.resize(first + children.len(), Node::default());
            self.nodes[node.index] = Node::internal(
                first as u32,
                cut.dim as u8,
                cut.shift as u8,
                (children.len() - 1) as u16,
            );
            spent += children.len() + cut.score.1.saturating_sub(node.members.len());
            for (i, child) in children.into_iter().enumerate() {
                let region = node.region.with(cut.dim, cut.shift, cut.bits, i as u32);
                pending.push(Pending {
                    members: self.until_covering(child, &region),
                    index: first + i,
                    region,
                    depth: node.depth + 1,
                });
            }
        }
        for node in leaves {
            self.leaf(node.index, node.members)?;
        }
        Ok(root as u32)
    }

    /// Entries after one that matches every packet that can reach this node never decide.
    fn until_covering(&self, mut members: Vec<u32>, region: &Region) -> Vec<u32> {
        if let Some(at) = members.iter().position(|&m| self.covers(m, region)) {
            members.truncate(at + 1);
        }
        members
    }

    /// Does entry `m` match every packet of this family whose key lies in `region`? Only
    /// conditions the key decides can be implied: not VLAN, not ports or ICMP fields (they
    /// also need the right kind of L4 header).
    fn covers(&self, m: u32, region: &Region) -> bool {
        const KEYED: u16 = cond::FAMILY | cond::SRC | cond::DST | cond::PROTOCOL;
        self.entries[m as usize].conditions & !KEYED == 0
            && (0..dim::COUNT).all(|d| {
                let (lo, hi) = self.ranges[m as usize][d];
                let (min, max) = region.bounds(d);
                lo <= min && max <= hi
            })
    }

    fn leaf(&mut self, index: usize, members: Vec<u32>) -> Result<(), CompileError> {
        if members.len() > MAX_LEAF_ENTRIES {
            return Err(CompileError::Overlap {
                entries: members.len(),
            });
        }
        let members = leaves::unshadowed(self.entries, members);
        let count = members.len() as u16;
        let members: Vec<u32> = members.into_iter().map(|m| m + self.base).collect();
        let first = leaves::store(self.leaves, self.shared_leaves, members);
        self.nodes[index] = Node::leaf(first, count);
        Ok(())
    }

    /// The cut with the smallest largest child among those that shrink the node to at most
    /// three quarters and stay within the space factor.
    fn best_cut(&self, members: &[u32]) -> Option<Cut> {
        let n = members.len();
        let mut best: Option<Cut> = None;
        for &d in self.dims {
            let specific = members
                .iter()
                .map(|&m| self.ranges[m as usize][d])
                .filter(|r| *r != full(d));
            let (lo, hi) = specific.fold((u32::MAX, 0), |(lo, hi), r| (lo.min(r.0), hi.max(r.1)));
            if lo >= hi {
                continue; // no entry is specific here, or all are the same single value
            }
            // The window starts at the first bit where the specific entries differ.
            let top = 32 - (lo ^ hi).leading_zeros();
            for window in WINDOWS {
                let bits = window.min(top);
                let cut = self.score(members, d, top - bits, bits);
                let (largest, total) = cut.score;
                let fits = largest <= n * 3 / 4 && total <= SPACE_FACTOR * n + (1 << bits);
                if fits && best.as_ref().is_none_or(|b| cut.score < b.score) {
                    best = Some(cut);
                }
            }
        }
        best
    }

    fn score(&self, members: &[u32], d: usize, shift: u32, bits: u32) -> Cut {
        let mut sizes = vec![0usize; 1 << bits];
        let mut everywhere = 0;
        for &m in members {
            match reach(self.ranges[m as usize][d], shift, bits) {
                None => everywhere += 1,
                Some((first, last, mask)) => {
                    (first..=last).for_each(|x| sizes[(x & mask) as usize] += 1)
                }
            }
        }
        let largest = sizes.iter().max().copied().unwrap_or(0) + everywhere;
        let total = sizes.iter().sum::<usize>() + everywhere * sizes.len();
        Cut {
            dim: d,
            shift,
            bits,
            score: (largest, total),
        }
    }

    fn split(&self, members: &[u32], cut: &Cut) -> Vec<Vec<u32>> {
        let mut children = vec![Vec::new(); 1 << cut.bits];
        for &m in members {
            match reach(self.ranges[m as usize][cut.dim], cut.shift, cut.bits) {
                None => children.iter_mut().for_each(|c| c.push(m)),
                Some((first, last, mask)) => {
                    (first..=last).for_each(|x| children[(x & mask) as usize].push(m))
                }
            }
        }
        children
    }
}

/// The window values `first..=last` (each taken `& mask`) that a range reaches under a window
/// of `bits` bits at `shift`; `None` when it reaches every child.
fn reach((lo, hi): (u32, u32), shift: u32, bits: u32) -> Option<(u64, u64, u64)> {
    let mask = (1u64 << bits) - 1;
    let (first, last) = (u64::from(lo) >> shift, u64::from(hi) >> shift);
    (last - first < mask).then_some((first, last, mask))
}

/// An entry's range in every dimension.
fn ranges(e: &Entry) -> Ranges {
    let mut out: Ranges = std::array::from_fn(full);
    let words = |addr: &[u32; 4], mask: &[u32; 4], base: usize, out: &mut Ranges| {
        for i in 0..4 {
            let (a, m) = (u32::from_be(addr[i]), u32::from_be(mask[i]));
            out[base + i] = (a & m, (a & m) | !m);
        }
    };
    if e.conditions & cond::SRC != 0 {
        words(&e.src_addr, &e.src_mask, dim::SRC as usize, &mut out);
    }
    if e.conditions & cond::DST != 0 {
        words(&e.dst_addr, &e.dst_mask, dim::DST as usize, &mut out);
    }
    if e.conditions & cond::DST_PORT != 0 {
        out[dim::DST_PORT as usize] = (u32::from(e.dst_port_lo), u32::from(e.dst_port_hi));
    }
    if e.conditions & cond::SRC_PORT != 0 {
        out[dim::SRC_PORT as usize] = (u32::from(e.src_port_lo), u32::from(e.src_port_hi));
    }
    if e.conditions & cond::PROTOCOL != 0 {
        out[dim::PROTOCOL as usize] = (u32::from(e.protocol), u32::from(e.protocol));
    }
    // An ICMP packet's key holds its type and code where ports go; an entry with an ICMP
    // condition matches no other packet, so it need only be found where its values lead.
    if e.conditions & cond::ICMP_TYPE != 0 {
        out[dim::SRC_PORT as usize] = (u32::from(e.icmp_type), u32::from(e.icmp_type));
    }
    if e.conditions & cond::ICMP_CODE != 0 {
        out[dim::DST_PORT as usize] = (u32::from(e.icmp_code), u32::from(e.icmp_code));
    }
    if e.conditions & cond::VLAN != 0 {
        out[dim::VLAN as usize] = (u32::from(e.vlan), u32::from(e.vlan));
    }
    out
}

/// The key values that can reach a node: per dimension, the bits its ancestors' cuts fixed.
#[derive(Clone, Default)]
struct Region {
    /// Per dimension: (mask of fixed bits, their values).
    fixed: [(u32, u32); dim::COUNT],
}

impl Region {
    fn with(&self, d: usize, shift: u32, bits: u32, child: u32) -> Region {
        let mut next = self.clone();
        let mask = (((1u64 << bits) - 1) << shift) as u32;
        let (fixed, values) = &mut next.fixed[d];
        *fixed |= mask;
        *values = (*values & !mask) | ((child << shift) & mask);
        next
    }

    /// The smallest and largest key value in dimension `d` that can reach the node.
    fn bounds(&self, d: usize) -> (u32, u32) {
        let (fixed, values) = self.fixed[d];
        let all = full(d).1;
        (values & fixed, (values & fixed) | (!fixed & all))
    }
}

/// A node not yet split or made a leaf; the largest comes out of the heap first.
struct Pending {
    members: Vec<u32>,
    index: usize,
    region: Region,
    depth: usize,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |p: &Pending| (p.members.len(), std::cmp::Reverse(p.index));
        key(self).cmp(&key(other))
    }
}
