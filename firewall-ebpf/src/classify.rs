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
    bindings::BPF_F_MMAPABLE,
    cty::c_void,
    helpers::generated::bpf_loop,
    macros::map,
    maps::{Array, PerCpuArray},
};
use firewall_common::{
    EXACT_DST, EXACT_SRC, Entry, ExactSlot, GENERATIONS, LEAF, MAX_IFINDEX, MAX_SLOTS,
    MAX_TREE_DEPTH, NO_TREE, Node, Policy, TREES, Tree, UNCONFIGURED, VLAN_TREE, cond, dim,
    directed_slot, exact, family, policy_index,
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
#[map]
static EXACT: Array<ExactSlot> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// This CPU's classification state (`first_match`).
#[map]
static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

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
/// over the family's trees. The first `INLINE_TREES` trees in use are walked inline (one or
/// two is the common case: a table of hosts and a port rule); any others, and the VLAN tree
/// for a tagged packet, under `bpf_loop`, which the verifier checks once rather than once per
/// tree. The state lives in a per-CPU scratch value, not on the stack, which the packet path's
/// other steps nearly fill (512 bytes in all).
#[inline(always)]
pub fn first_match(policy: &Policy, packet: &Packet) -> Option<&'static Entry> {
    let family = usize::from(packet.family == family::IPV6);
    let used = u32::from(*policy.used.get(family)?);
    // A raw pointer throughout, never a `&mut Scan` held across a `bpf_loop` call: the
    // callbacks write through their own copy of the pointer, which a live `&mut` would
    // forbid (and LLVM would keep `best` in a register across the call).
    let scan = SCAN.get_ptr_mut(0)?;
    // SAFETY: the per-CPU value is this CPU's alone while the program runs; it is written
    // field by field (a `Scan` built whole would be built on the stack first), the trees with
    // an explicit copy (an assignment would be a call to memmove, which the BPF backend does
    // not inline, because a `Policy` in its map and the `Scan` could alias for all it knows).
    unsafe {
        core::ptr::copy_nonoverlapping(policy.trees.get(family)?, &mut (*scan).trees, 1);
        fill_key(&mut (*scan).key, packet);
        (*scan).packet = *packet;
        (*scan).best = u32::MAX;
    }
    let mut at = ScanAt { scan };
    let ctx = (&mut at as *mut ScanAt).cast::<c_void>();
    for t in 0..INLINE_TREES {
        if t < used {
            walk_tree(scan, t, ctx);
        }
    }
    // SAFETY: `scan_tree` has the callback signature bpf_loop expects and reads `ctx` only as
    // the `ScanAt` it is, which lives on this stack frame for the whole call.
    unsafe {
        if used > INLINE_TREES {
            (*scan).trees_from = INLINE_TREES;
            bpf_loop(used - INLINE_TREES, scan_tree as *mut c_void, ctx, 0);
        }
        if (*scan).packet.vlan != 0 && (*scan).trees[VLAN_TREE].root != NO_TREE {
            (*scan).trees_from = VLAN_TREE as u32;
            bpf_loop(1, scan_tree as *mut c_void, ctx, 0);
        }
        ENTRIES.get((*scan).best)
    }
}

/// Trees walked inline before `bpf_loop` takes over: each one inline multiplies the states
/// the verifier walks.
const INLINE_TREES: u32 = 2;

/// What the `bpf_loop` callbacks get: where this CPU's `Scan` is.
#[repr(C)]
struct ScanAt {
    scan: *mut Scan,
}

/// The `Scan` a callback was given.
///
/// SAFETY: `ctx` must be the `ScanAt` pointer `first_match` gave bpf_loop.
#[inline(always)]
unsafe fn scan_of(ctx: *mut c_void) -> *mut Scan {
    unsafe { (*ctx.cast::<ScanAt>()).scan }
}

/// `bpf_loop`'s callback over trees: the tree `scan.trees_from + t`, walked and its leaf checked.
extern "C" fn scan_tree(t: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer `first_match` gave it.
    let scan = unsafe { scan_of(ctx) };
    // SAFETY: `scan` is this CPU's `Scan`.
    let t = unsafe { (*scan).trees_from }.wrapping_add(t as u32);
    walk_tree(scan, t, ctx);
    0
}

/// Tree `t`'s leaf for the packet, checked, unless the tree cannot beat the best match so far.
#[inline(always)]
fn walk_tree(scan: *mut Scan, t: u32, ctx: *mut c_void) {
    // SAFETY: `scan` is this CPU's `Scan`; the references end before `check_leaf`.
    let leaf = unsafe {
        let Some(&tree) = (*scan).trees.get(t as usize) else {
            return;
        };
        if tree.root == NO_TREE || tree.min_entry >= (*scan).best {
            return;
        }
        leaf(tree.root, &(*scan).key, &(*scan).packet)
    };
    if let Some(leaf) = leaf {
        check_leaf(scan, leaf, ctx);
    }
}

/// Checks a leaf's entries in order: the first few inline (most leaves are that short, and a
/// helper call is not free), the rest under `bpf_loop`.
#[inline(always)]
fn check_leaf(scan: *mut Scan, leaf: Node, ctx: *mut c_void) {
    let count = u32::from(leaf.leaf_count());
    // SAFETY: `scan` is this CPU's `Scan`; each `&mut` lasts one `check`, which calls nothing
    // that touches it.
    unsafe {
        (*scan).first = leaf.first;
        for i in 0..INLINE_ENTRIES {
            if i >= count || check(&mut *scan, i) {
                return;
            }
        }
        if count > INLINE_ENTRIES {
            (*scan).first = leaf.first + INLINE_ENTRIES;
            // `ctx` is the `ScanAt` this step was given.
            bpf_loop(count - INLINE_ENTRIES, scan_entry as *mut c_void, ctx, 0);
        }
    }
}

/// Walks a tree from `root` to the leaf the key leads to; an exact table's root probes for
/// the packet's address instead.
#[inline(always)]
fn leaf(root: u32, key: &Key, packet: &Packet) -> Option<Node> {
    let mut node = *NODES.get(root)?;
    match node.dim {
        EXACT_DST => return exact_leaf(&node, &packet.dst),
        EXACT_SRC => return exact_leaf(&node, &packet.src),
        _ => {}
    }
    for _ in 0..MAX_TREE_DEPTH {
        if node.dim == LEAF {
            return Some(node);
        }
        // Masked, not bounds-checked: LLVM may test one copy of the index and read with
        // another, which the verifier cannot follow; a mask bounds the read itself.
        let value = key[usize::from(node.dim) & (KEY_WORDS - 1)];
        let child =
            node.first + (value.wrapping_shr(u32::from(node.shift)) & u32::from(node.child_mask()));
        node = *NODES.get(child)?;
    }
    (node.dim == LEAF).then_some(node)
}

/// The leaf of `addr` in the exact table at `root`, probing from its home slot until the
/// address or an empty slot (`firewall_common::exact`).
#[inline(always)]
fn exact_leaf(root: &Node, addr: &[u32; 4]) -> Option<Node> {
    let home = exact::home(addr, root.shift);
    let mask = exact::mask(root.shift);
    for i in 0..exact::PROBES {
        let slot = EXACT.get(root.first.wrapping_add(home.wrapping_add(i) & mask))?;
        if slot.leaf.dim != LEAF {
            return None;
        }
        if slot.addr == *addr {
            return Some(slot.leaf);
        }
    }
    None
}

/// The state of one classification, shared with the `bpf_loop` callbacks.
#[repr(C)]
struct Scan {
    /// The packet's family's trees.
    trees: [Tree; TREES],
    key: Key,
    packet: Packet,
    /// The first tree the `scan_tree` loop walks.
    trees_from: u32,
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
const INLINE_ENTRIES: u32 = 1;

/// `bpf_loop`'s callback: checks the `i`-th entry from `scan.first`; 1 stops the loop.
extern "C" fn scan_entry(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `ScanAt` pointer `check_leaf` gave it; the `&mut`
    // lasts this one check.
    let scan = unsafe { &mut *scan_of(ctx) };
    i64::from(check(scan, i as u32))
}

/// Checks the `i`-th entry from `scan.first`; true (stop) at the first match or at an entry
/// that cannot beat the best so far (leaves list entries in rule order).
#[inline(always)]
fn check(scan: &mut Scan, i: u32) -> bool {
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
fn fill_key(key: &mut Key, packet: &Packet) {
    for i in 0..4 {
        key[dim::SRC as usize + i] = u32::from_be(packet.src[i]);
        key[dim::DST as usize + i] = u32::from_be(packet.dst[i]);
    }
    key[dim::DST_PORT as usize] = u32::from(packet.dst_port_or_code);
    key[dim::SRC_PORT as usize] = u32::from(packet.src_port_or_type);
    key[dim::PROTOCOL as usize] = u32::from(packet.protocol);
    key[dim::VLAN as usize] = u32::from(packet.vlan);
}

/// The classification key: the `dim::COUNT` dimensions, padded to a power of two.
const KEY_WORDS: usize = 16;
const _: () = assert!(dim::COUNT <= KEY_WORDS);
type Key = [u32; KEY_WORDS];

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
