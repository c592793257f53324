//! Classification: the interface's live rule set (one of two generations), a walk down each
//! decision tree of the packet's family to a leaf, and a check of the leaf's few entries in
//! rule order; the lowest matching entry decides. The trees are built by the daemon
//! (`firewall-rules/src/compile/tree.rs`); the cost per packet is the trees' depth plus
//! one leaf each, whatever the number of rules.
//!
//! Both generations live in the same arrays at different offsets (the daemon writes indices
//! already offset), so one copy of this code serves both. The leaf check runs under
//! `bpf_loop`, which the verifier checks once rather than once per iteration.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE, cty::c_void, helpers::generated::bpf_loop, macros::map, maps::Array,
};
use firewall_common::{
    Entry, GENERATIONS, LEAF, MAX_IFINDEX, MAX_SLOTS, MAX_TREE_DEPTH, NO_TREE, Node, Policy,
    UNCONFIGURED, VLAN_TREE, cond, dim, directed_slot, family, policy_index,
};

use crate::{
    context::Wire,
    parse::{L4, Packet},
};

/// ifindex -> 1 + the interface's slot (its counters and its `Policy`), or `UNCONFIGURED`.
#[map]
static INTERFACES: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

/// The live generation: one word, flipped by the daemon after it wrote the other generation.
#[map]
static GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Per generation and slot: roots, default and non-IP verdicts.
#[map]
static POLICIES: Array<Policy> = Array::with_max_entries(GENERATIONS * MAX_SLOTS, 0);

// The trees, leaf lists and entries of both generations. Sized by the daemon at load time
// and written by it through mmap.
#[map]
static NODES: Array<Node> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static LEAVES: Array<u32> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static ENTRIES: Array<Entry> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The interface's slot in `direction` (`firewall_common::directed_slot`), if the daemon
/// configured the interface.
#[inline(always)]
pub fn slot<C: Wire>(ctx: &C, direction: u32) -> Option<u32> {
    let value = *INTERFACES.get(ctx.ifindex())?;
    (value != UNCONFIGURED).then(|| directed_slot(value - 1, direction))
}

/// The slot's policy in the live generation.
#[inline(always)]
pub fn policy(slot: u32) -> Option<&'static Policy> {
    let generation = *GENERATION.get(0)? & 1;
    POLICIES.get(policy_index(generation, slot))
}

/// The first entry, in rule order, that matches the packet: the lowest matching entry index
/// over the family's trees.
#[inline(always)]
pub fn first_match(policy: &Policy, packet: &Packet) -> Option<&'static Entry> {
    let trees = &policy.trees[usize::from(packet.family == family::IPV6)];
    let key = key(packet);
    let mut scan = LeafScan {
        packet: *packet,
        first: 0,
        best: u32::MAX,
    };
    for (t, tree) in trees.iter().enumerate() {
        // The VLAN tree's entries all need a VLAN id, which an untagged packet lacks.
        if tree.root == NO_TREE || tree.min_entry >= scan.best || t == VLAN_TREE && packet.vlan == 0
        {
            continue;
        }
        let Some(leaf) = leaf(tree.root, &key) else {
            continue;
        };
        scan.first = leaf.first;
        // The first entries inline: most leaves are that short, and a helper call is not free.
        let count = u32::from(leaf.leaf_count());
        let mut stopped = false;
        for i in 0..INLINE_ENTRIES {
            if i >= count || stopped {
                break;
            }
            stopped = check(&mut scan, i);
        }
        if !stopped && count > INLINE_ENTRIES {
            scan.first = leaf.first + INLINE_ENTRIES;
            // SAFETY: `scan_entry` has the callback signature bpf_loop expects and reads
            // `scan` only as a `LeafScan`, which lives on this stack frame for the whole call.
            unsafe {
                bpf_loop(
                    count - INLINE_ENTRIES,
                    scan_entry as *mut c_void,
                    (&mut scan as *mut LeafScan).cast(),
                    0,
                );
            }
        }
    }
    ENTRIES.get(scan.best)
}

/// Walks a tree from `root` to the leaf the key leads to.
#[inline(always)]
fn leaf(root: u32, key: &[u32; dim::COUNT]) -> Option<Node> {
    let mut node = *NODES.get(root)?;
    for _ in 0..MAX_TREE_DEPTH {
        if node.dim == LEAF {
            return Some(node);
        }
        let value = *key.get(usize::from(node.dim))?;
        let child =
            node.first + (value.wrapping_shr(u32::from(node.shift)) & u32::from(node.child_mask()));
        node = *NODES.get(child)?;
    }
    (node.dim == LEAF).then_some(node)
}

/// The state of one leaf check under `bpf_loop`.
#[repr(C)]
struct LeafScan {
    packet: Packet,
    /// The leaf's first item in `LEAVES`.
    first: u32,
    /// The lowest matching entry index so far (`u32::MAX`: none).
    best: u32,
}

/// Leaf entries checked inline before `bpf_loop` takes over. More would save the helper call
/// for leaves of 3-8 entries (20-30 ns), but each inline check multiplies the states the
/// verifier walks through five trees, conntrack and drop logs: at 2, 575k of the 1M
/// instructions it allows; at 4, 746k; at 6 it refuses the program
/// (`tests/kernel.rs::both_programs_stay_well_within_the_verifiers_limit`).
const INLINE_ENTRIES: u32 = 2;

/// `bpf_loop`'s callback: checks the `i`-th entry from `scan.first`; 1 stops the loop.
extern "C" fn scan_entry(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `LeafScan` pointer `first_match` gave it.
    let scan = unsafe { &mut *ctx.cast::<LeafScan>() };
    i64::from(check(scan, i as u32))
}

/// Checks the `i`-th entry from `scan.first`; true (stop) at the first match or at an entry
/// that cannot beat the best so far (leaves list entries in rule order).
#[inline(always)]
fn check(scan: &mut LeafScan, i: u32) -> bool {
    let Some(&index) = LEAVES.get(scan.first.wrapping_add(i)) else {
        return true;
    };
    if index >= scan.best {
        return true;
    }
    match ENTRIES.get(index) {
        Some(entry) if matches(entry, &scan.packet) => {
            scan.best = index;
            true
        }
        Some(_) => false,
        None => true,
    }
}

/// The packet's values in the trees' dimensions; addresses as big-endian numbers so that
/// a node's bit window counts from the address's first bit.
#[inline(always)]
fn key(packet: &Packet) -> [u32; dim::COUNT] {
    [
        u32::from_be(packet.src[0]),
        u32::from_be(packet.src[1]),
        u32::from_be(packet.src[2]),
        u32::from_be(packet.src[3]),
        u32::from_be(packet.dst[0]),
        u32::from_be(packet.dst[1]),
        u32::from_be(packet.dst[2]),
        u32::from_be(packet.dst[3]),
        u32::from(packet.dst_port_or_code),
        u32::from(packet.src_port_or_type),
        u32::from(packet.protocol),
        u32::from(packet.vlan),
    ]
}

#[inline(always)]
fn has(entry: &Entry, condition: u16) -> bool {
    entry.conditions & condition != 0
}

#[inline(always)]
fn in_net(addr: &[u32; 4], net: &[u32; 4], mask: &[u32; 4]) -> bool {
    addr[0] & mask[0] == net[0]
        && addr[1] & mask[1] == net[1]
        && addr[2] & mask[2] == net[2]
        && addr[3] & mask[3] == net[3]
}

#[inline(always)]
fn matches(entry: &Entry, packet: &Packet) -> bool {
    if has(entry, cond::VLAN) && entry.vlan != packet.vlan
        || has(entry, cond::FAMILY) && entry.family != packet.family
        || has(entry, cond::PROTOCOL) && entry.protocol != packet.protocol
        || has(entry, cond::SRC) && !in_net(&packet.src, &entry.src_addr, &entry.src_mask)
        || has(entry, cond::DST) && !in_net(&packet.dst, &entry.dst_addr, &entry.dst_mask)
    {
        return false;
    }
    let ports = packet.l4 == L4::Ports;
    if has(entry, cond::SRC_PORT)
        && !(ports
            && entry.src_port_lo <= packet.src_port_or_type
            && packet.src_port_or_type <= entry.src_port_hi)
        || has(entry, cond::DST_PORT)
            && !(ports
                && entry.dst_port_lo <= packet.dst_port_or_code
                && packet.dst_port_or_code <= entry.dst_port_hi)
    {
        return false;
    }
    let icmp = packet.l4 == L4::Icmp;
    !(has(entry, cond::ICMP_TYPE)
        && !(icmp && u16::from(entry.icmp_type) == packet.src_port_or_type)
        || has(entry, cond::ICMP_CODE)
            && !(icmp && u16::from(entry.icmp_code) == packet.dst_port_or_code))
}
