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
    directed_slot, entry_flag, exact, family, policy_index,
};

use crate::{
    context::Wire,
    limit,
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

/// The entry that decides the packet (`len` bytes): the first, in rule order, that matches
/// it (the lowest matching entry index over the family's trees), unless that is a limit
/// rule's and the packet is under the limit: then the packet goes on to the first match after
/// it, through as many limit rules as it is under.
///
/// The common case runs inline on the stack: the first `INLINE_TREES` trees in use when their
/// root is a leaf or an exact table (a table of hosts and a port rule, say), and the first
/// entry of each leaf. Whatever is left (trees to walk, more trees, longer leaves,
/// the VLAN tree of a tagged packet, a limit rule's match) runs under one `bpf_loop`, which
/// the verifier checks once rather than once per tree or entry, from a per-CPU `Scan` (the
/// stack is nearly full: 512 bytes for the whole call chain), set up only then.
#[inline(always)]
pub fn deciding(policy: &Policy, packet: &Packet, len: u32) -> Option<&'static Entry> {
    let family = usize::from(packet.family == family::IPV6);
    let trees = policy.trees.get(family)?;
    let used = u32::from(*policy.used.get(family)?);
    let mut best = u32::MAX;
    // The first tree left to `bpf_loop` (all of it, again if its leaf was begun inline:
    // checking an entry twice changes nothing).
    let mut from = used.min(INLINE_TREES);
    for t in 0..INLINE_TREES {
        if t >= used {
            break;
        }
        let tree = trees[t as usize];
        if tree.min_entry >= best {
            continue;
        }
        // A root that is a leaf or an exact table inline, its first entry checked; a tree to
        // walk under `bpf_loop` (its unrolled walk, inline, would cost the verifier more than
        // the loop costs). A leaf root's first entry is in the policy: no lookup.
        let (leaf, first) = match tree.node.dim {
            LEAF => (tree.node, tree.entry),
            EXACT_DST | EXACT_SRC => match exact_leaf(&tree.node, packet) {
                Some(leaf) => match LEAVES.get(leaf.first) {
                    Some(&first) => (leaf, first),
                    None => continue,
                },
                None => continue,
            },
            _ => {
                from = t;
                break;
            }
        };
        if !check_entry(first, packet, &mut best, 0) && leaf.leaf_count() > 1 {
            from = t;
            break;
        }
    }
    let vlan = u32::from(packet.vlan != 0 && trees[VLAN_TREE].root != NO_TREE);
    let limited = ENTRIES
        .get(best)
        .is_some_and(|entry| entry.flags & entry_flag::LIMIT != 0);
    if from < used || vlan != 0 || limited {
        let left = Round {
            from,
            trees: used - from + vlan,
        };
        best = rest(packet, len, best, trees, left, used + vlan)?;
    }
    ENTRIES.get(best)
}

/// Trees walked inline before `bpf_loop` takes over: each one inline multiplies the states
/// the verifier walks.
const INLINE_TREES: u32 = 2;

/// Trees one round of `scan_tree` walks: `trees` of them from `from` (the VLAN tree as the
/// last, if `trees` reaches past the trees in use).
struct Round {
    from: u32,
    trees: u32,
}

/// Walks the trees of round `left` under `bpf_loop`, from this CPU's `Scan`, and then, while
/// the best entry is a limit rule's that the packet is under, all `all` trees again for the
/// first match after it; the entry index that decides.
#[inline(always)]
fn rest(
    packet: &Packet,
    len: u32,
    best: u32,
    trees: &[Tree; TREES],
    left: Round,
    all: u32,
) -> Option<u32> {
    // A raw pointer throughout, never a `&mut Scan` held across a `bpf_loop` call: the
    // callbacks write through their own copy of the pointer, which a live `&mut` would forbid
    // (LLVM would keep `best` in a register across the call).
    let scan = SCAN.get_ptr_mut(0)?;
    let mut at = ScanAt { scan };
    let ctx = (&mut at as *mut ScanAt).cast::<c_void>();
    // SAFETY: the per-CPU value is this CPU's alone while the program runs; `scan_tree` has
    // the callback signature bpf_loop expects and reads `ctx` only as the `ScanAt` it is,
    // which lives on this stack frame for the whole call. The trees are copied explicitly:
    // an assignment would be a call to memmove, which the BPF backend does not inline (a
    // `Policy` in its map and the `Scan` could alias, for all it knows).
    unsafe {
        (*scan).packet = *packet;
        (*scan).best = best;
        core::ptr::copy_nonoverlapping(trees, &mut (*scan).trees, 1);
        (*scan).trees_from = left.from;
        (*scan).round = left.trees;
        (*scan).t = 0;
        (*scan).all = all;
        (*scan).after = 0;
        (*scan).passed = NO_COUNTER;
        (*scan).len = len;
        // A limit entry the inline pass found, with no tree left to walk: judged here, so
        // that a packet over the limit (a flood's) never enters `bpf_loop`.
        if left.trees == 0 && !next_round(scan) {
            return Some((*scan).best);
        }
        // Each round moves past at least one entry: the entries and trees bound the steps.
        bpf_loop(MAX_STEPS, scan_tree as *mut c_void, ctx, 0);
        Some((*scan).best)
    }
}

/// No rule's counter slot (they are below `MAX_RULE_COUNTERS`).
const NO_COUNTER: u32 = u32::MAX;

/// `bpf_loop`'s most iterations (its own limit): far more than entries times trees.
const MAX_STEPS: u32 = 1 << 23;

/// What the `bpf_loop` callbacks get: where this CPU's `Scan` is.
#[repr(C)]
struct ScanAt {
    scan: *mut Scan,
}

/// The `Scan` a callback was given.
///
/// SAFETY: `ctx` must be the `ScanAt` pointer `rest` gave bpf_loop.
#[inline(always)]
unsafe fn scan_of(ctx: *mut c_void) -> *mut Scan {
    unsafe { (*ctx.cast::<ScanAt>()).scan }
}

/// `bpf_loop`'s callback over trees: the next tree of the round (`scan.trees_from +
/// scan.t`; past the trees in use, the VLAN tree), walked and its whole leaf checked (under a
/// nested `bpf_loop`). At the end of a round, `next_round` decides whether to go on; 1 stops.
extern "C" fn scan_tree(_: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer `rest` gave it; the references end before the
    // nested `bpf_loop`.
    unsafe {
        let scan = scan_of(ctx);
        let mut t = (*scan).trees_from.wrapping_add((*scan).t) as usize;
        (*scan).t = (*scan).t.wrapping_add(1);
        if (*scan).trees.get(t).is_none_or(|tree| tree.root == NO_TREE) {
            t = VLAN_TREE;
        }
        if let Some(&tree) = (*scan).trees.get(t)
            && tree.root != NO_TREE
            && tree.min_entry < (*scan).best
            && let Some(leaf) = leaf(tree.node, &(*scan).packet)
        {
            let count = u32::from(leaf.leaf_count());
            (*scan).first = leaf.first;
            (*scan).count = count;
            bpf_loop(count.div_ceil(BATCH), scan_entries as *mut c_void, ctx, 0);
        }
        if (*scan).t >= (*scan).round && !next_round(scan) {
            return 1;
        }
    }
    0
}

/// At the end of a round: false (stop) if the best entry decides (none, or one without a
/// limit, or a limit the packet is over); else the packet takes its tokens and the next round
/// looks for the first match after it, in all trees. A rule whose values overlap (ports
/// `[65535, 1024-65535]`) has several entries the packet matches, one after another in rule
/// order: the first charges the packet, the others let it go on, so a rule takes a packet's
/// tokens once, as the reference's does.
///
/// SAFETY: `scan` must be this CPU's `Scan`, as `rest` set it up.
#[inline(never)]
unsafe fn next_round(scan: *mut Scan) -> bool {
    unsafe {
        let best = (*scan).best;
        let Some(entry) = ENTRIES.get(best) else {
            return false;
        };
        if entry.flags & entry_flag::LIMIT == 0 {
            return false;
        }
        if entry.counter != (*scan).passed {
            let (packet, scratch) = (&(*scan).packet, &mut (*scan).limit);
            if limit::over(entry.counter, packet, (*scan).len, scratch) {
                return false;
            }
            (*scan).passed = entry.counter;
        }
        (*scan).after = best.wrapping_add(1);
        (*scan).best = u32::MAX;
        (*scan).trees_from = 0;
        (*scan).t = 0;
        (*scan).round = (*scan).all;
        (*scan).all != 0
    }
}

/// Entries one `scan_entries` call checks: each call costs a BPF-to-BPF call and its return
/// thunk, so a leaf's entries go a few at a time.
const BATCH: u32 = 4;

/// `bpf_loop`'s callback over a leaf: checks its `i`-th batch of `BATCH` items from
/// `scan.first`; 1 stops.
extern "C" fn scan_entries(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `ScanAt` pointer `rest` gave it; the references last
    // one check each.
    unsafe {
        let scan = scan_of(ctx);
        let from = (i as u32).wrapping_mul(BATCH);
        // A constant trip count, unrolled: a loop over a runtime range would be walked by
        // the verifier as unbounded.
        for j in 0..BATCH {
            let k = from.wrapping_add(j);
            if k >= (*scan).count {
                return 1;
            }
            let at = (*scan).first.wrapping_add(k);
            if check(at, &(*scan).packet, &mut (*scan).best, (*scan).after) {
                return 1;
            }
        }
    }
    0
}

/// Walks a tree from its `root` node to the leaf the packet leads to; an exact table's root
/// probes for the packet's address instead.
#[inline(always)]
fn leaf(root: Node, packet: &Packet) -> Option<Node> {
    let mut node = root;
    if matches!(node.dim, EXACT_DST | EXACT_SRC) {
        return exact_leaf(&node, packet);
    }
    for _ in 0..MAX_TREE_DEPTH {
        if node.dim == LEAF {
            return Some(node);
        }
        let value = key_word(packet, node.dim);
        let child =
            node.first + (value.wrapping_shr(u32::from(node.shift)) & u32::from(node.child_mask()));
        node = *NODES.get(child)?;
    }
    (node.dim == LEAF).then_some(node)
}

/// The leaf of the packet's destination (`EXACT_DST`) or source address in the exact table
/// at `root`, probing from its home slot until the address or an empty slot
/// (`firewall_common::exact`).
#[inline(always)]
fn exact_leaf(root: &Node, packet: &Packet) -> Option<Node> {
    let addr = if root.dim == EXACT_DST {
        &packet.dst
    } else {
        &packet.src
    };
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

/// State for the `bpf_loop` callbacks.
#[repr(C)]
struct Scan {
    /// The packet's family's trees.
    trees: [Tree; TREES],
    packet: Packet,
    /// The first tree of this round.
    trees_from: u32,
    /// Trees in this round, and how many of them were walked.
    round: u32,
    t: u32,
    /// Trees in a round after a limit rule (all of them).
    all: u32,
    /// The leaf's first item in `LEAVES`, and its length.
    first: u32,
    count: u32,
    /// The lowest matching entry index so far (`u32::MAX`: none).
    best: u32,
    /// Entries below this are not candidates (they are limit rules the packet is under).
    after: u32,
    /// The counter slot of the limit rule the packet went on under last (`NO_COUNTER`: none).
    passed: u32,
    /// The packet's length, for byte limits.
    len: u32,
    limit: limit::Scratch,
}

/// Checks the entry that `LEAVES[at]` names if it is not below `after`; true (stop) at a
/// match or at an entry that cannot beat the best so far (leaves list entries in rule order).
#[inline(always)]
fn check(at: u32, packet: &Packet, best: &mut u32, after: u32) -> bool {
    match LEAVES.get(at) {
        Some(&index) => check_entry(index, packet, best, after),
        None => true,
    }
}

/// Checks entry `index` if it is not below `after`; true (stop) at a match or at an entry
/// that cannot beat the best so far (`NO_ENTRY` cannot).
#[inline(always)]
fn check_entry(index: u32, packet: &Packet, best: &mut u32, after: u32) -> bool {
    if index >= *best {
        return true;
    }
    if index < after {
        return false;
    }
    match ENTRIES.get(index) {
        Some(entry) if matches(entry, packet) => {
            *best = index;
            true
        }
        Some(_) => false,
        None => true,
    }
}

/// The packet's value in a tree dimension (`firewall_common::dim`); addresses as big-endian
/// numbers so that a node's bit window counts from the address's first bit.
#[inline(always)]
fn key_word(packet: &Packet, d: u8) -> u32 {
    // Masked indices: LLVM may bound one copy of an index and read with another, which the
    // verifier cannot follow; a mask bounds the read itself.
    let word = usize::from(d) & 3;
    match d {
        dim::DST_PORT => u32::from(packet.dst_port_or_code),
        dim::SRC_PORT => u32::from(packet.src_port_or_type),
        dim::PROTOCOL => u32::from(packet.protocol),
        dim::VLAN => u32::from(packet.vlan),
        _ if d < dim::DST => u32::from_be(packet.src[word]),
        _ => u32::from_be(packet.dst[word]),
    }
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
    if !tcp_flags_match(entry, packet) {
        return false;
    }
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

/// `cond::TCP_FLAGS`: the packet is TCP with its header, and its flags under the entry's mask
/// equal the entry's value. Computed without a branch but the one test: the flags with bit 8
/// set for a TCP header, against the mask and value with bit 8 added when the entry has the
/// condition (and both zeroed when it has not). Every branch here would be walked by the
/// verifier in every inlined copy of `matches` (a branchy version cost 128k instructions).
#[inline(always)]
fn tcp_flags_match(entry: &Entry, packet: &Packet) -> bool {
    // 0x100 with the condition, else 0; and all ones with it, else 0.
    let header = (entry.conditions & cond::TCP_FLAGS) >> 1;
    let with = 0u16.wrapping_sub(header >> 8);
    let flags = u16::from(packet.tcp_flags) | u16::from(packet.tcp_header) << 8;
    let mask = (header | u16::from(entry.tcp_flags_mask)) & with;
    let value = (header | u16::from(entry.tcp_flags_value)) & with;
    flags & mask == value
}

const _: () = assert!(cond::TCP_FLAGS >> 1 == 0x100, "bit 8: above the flags byte");
