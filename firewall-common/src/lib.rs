//! Types shared by the XDP program and the userspace daemon: map keys, map values and the
//! enums both sides must agree on. Everything here is `#[repr(C)]` plain data; logic that only
//! one side needs lives on that side.
#![no_std]

pub mod limit;

use limit::{Limit, LimitBucket, LimitKey};

/// IP protocol numbers, and the names rules give them.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// IPv6 extension headers the parser walks (no rule names them).
    pub const IPV6_HOPOPTS: u8 = 0;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const IPV6_DSTOPTS: u8 = 60;

    pub const NAMES: [(&str, u8); 5] = [
        ("tcp", TCP),
        ("udp", UDP),
        ("sctp", SCTP),
        ("icmp", ICMP),
        ("icmpv6", ICMPV6),
    ];

    pub fn name(number: u8) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(_, n)| *n == number)
            .map(|(name, _)| *name)
    }

    pub fn number(name: &str) -> Option<u8> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, number)| *number)
    }

    /// Protocols whose header starts with source and destination ports.
    pub const fn has_ports(number: u8) -> bool {
        matches!(number, TCP | UDP | SCTP)
    }

    pub const fn is_icmp(number: u8) -> bool {
        matches!(number, ICMP | ICMPV6)
    }
}

/// Ethertypes the parser knows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

/// Interfaces one program instance can serve; each gets a counter slot.
pub const MAX_INTERFACES: u32 = 64;

/// Interface indexes the program can serve are below this (an array indexed by ifindex is
/// faster than a hash map on the packet path).
pub const MAX_IFINDEX: u32 = 1 << 16;

/// `INTERFACES` value of an interface the daemon did not configure; a configured one holds
/// its slot plus one.
pub const UNCONFIGURED: u32 = 0;

/// Levels of a classification tree the program walks before it must reach a leaf.
pub const MAX_TREE_DEPTH: usize = 16;

/// Entries one leaf may hold (`Node::leaf_count` is a u16). The program checks a leaf under
/// `bpf_loop`, so the verifier does not bound it.
pub const MAX_LEAF_ENTRIES: usize = u16::MAX as usize;

/// Per-rule counter slots (rules across all interfaces).
pub const MAX_RULE_COUNTERS: u32 = 1 << 18;

/// Entries one generation may hold, over all interfaces (4 per rule counter slot): 176 MiB
/// of the entry map for both generations, and the trees' budget is linear in it.
pub const MAX_ENTRIES: u64 = 4 * MAX_RULE_COUNTERS as u64;

/// Rule sets held at once: the live one and the one being written.
pub const GENERATIONS: u32 = 2;

/// VLAN tags a frame may carry; more is malformed.
pub const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers walked before the upper-layer header; more is malformed.
pub const MAX_IPV6_EXTENSIONS: usize = 8;

/// What the program decided for a packet. Indexes the per-interface counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
}

impl Verdict {
    /// Number of verdicts, i.e. counters per interface slot.
    pub const COUNT: u32 = 2;
    pub const ALL: [Verdict; 2] = [Verdict::Pass, Verdict::Drop];

    /// The `verdict` label value in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        }
    }

    pub const fn from_u8(value: u8) -> Verdict {
        match value {
            0 => Verdict::Pass,
            _ => Verdict::Drop,
        }
    }
}

/// Index into the `STATS` per-CPU array for an interface slot and a verdict.
pub const fn counter_index(slot: u32, verdict: Verdict) -> u32 {
    slot * Verdict::COUNT + verdict as u32
}

/// The `ENFORCE` map (licensing): one `u32` that says whether the rules' verdicts are
/// applied. The map starts zeroed, so a program that no licence decision has reached yet
/// never filters: it passes and meters every packet (metering is part of the base service,
/// Art. 24; filtering needs the Ultra Firewall Option, Art. 2).
pub mod enforce {
    /// The index the program reads.
    pub const INDEX: u32 = 0;
    /// The index where the daemon keeps when the contract store last answered (Unix seconds;
    /// 0: never). Only the daemon reads it: a daemon that takes over the pinned maps holds
    /// that decision for the grace period if the store is unreachable (never falls open).
    pub const DECIDED_AT: u32 = 1;
    /// Entries of the map.
    pub const ENTRIES: u32 = 2;
    /// Pass every packet, counted as passed: the adapter's option is not licensed.
    pub const PASS_ALL: u32 = 0;
    /// Apply the rules' verdicts: the adapter's option is licensed.
    pub const RULES: u32 = 1;
}

/// Frames counted apart as well as by their verdict: neither IPv4 nor IPv6, or malformed.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameClass {
    NonIp = 0,
    Malformed = 1,
}

impl FrameClass {
    pub const COUNT: u32 = 2;
    pub const ALL: [FrameClass; 2] = [FrameClass::NonIp, FrameClass::Malformed];
}

/// Index into the `CLASS_STATS` per-CPU array for an interface slot and a frame class
/// (`FrameClass as u32`, the number the packet path carries).
pub const fn class_index(slot: u32, class: u32) -> u32 {
    slot * FrameClass::COUNT + class
}

/// Packets and bytes (whole Ethernet frames, without FCS) seen with one verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `Entry::conditions` bits: which conditions an entry has. Absent conditions match anything.
pub mod cond {
    pub const FAMILY: u16 = 1 << 0;
    pub const PROTOCOL: u16 = 1 << 1;
    pub const SRC: u16 = 1 << 2;
    pub const DST: u16 = 1 << 3;
    pub const SRC_PORT: u16 = 1 << 4;
    pub const DST_PORT: u16 = 1 << 5;
    pub const ICMP_TYPE: u16 = 1 << 6;
    pub const ICMP_CODE: u16 = 1 << 7;
    pub const VLAN: u16 = 1 << 8;
    /// The rule has a `limit:` (`entry_flag::LIMIT`): not a condition the entry checks, but
    /// one the trees must not take as met (the entry covers no region).
    pub const LIMIT: u16 = 1 << 10;
    /// TCP with a TCP header (not a non-first fragment) whose flags byte, under
    /// `Entry::tcp_flags_mask`, equals `Entry::tcp_flags_value`.
    pub const TCP_FLAGS: u16 = 1 << 9;
}

/// IP version numbers as `Entry::family` holds them.
pub mod family {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// One compiled rule (or one combination of a rule's list elements). Addresses and masks are
/// in network byte order as they appear in the packet, read as native `u32`s; an IPv4 address
/// uses the first word and leaves the others zero. Ports are in host order, inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub src_addr: [u32; 4],
    pub src_mask: [u32; 4],
    pub dst_addr: [u32; 4],
    pub dst_mask: [u32; 4],
    pub src_port_lo: u16,
    pub src_port_hi: u16,
    pub dst_port_lo: u16,
    pub dst_port_hi: u16,
    /// The rule's counter slot in `RULE_STATS`.
    pub counter: u32,
    pub vlan: u16,
    pub conditions: u16,
    pub family: u8,
    pub protocol: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub verdict: u8,
    /// `entry_flag` bits: what the dataplane does besides the verdict.
    pub flags: u8,
    /// `cond::TCP_FLAGS`: the flags the rule names, and which of them must be set.
    pub tcp_flags_mask: u8,
    pub tcp_flags_value: u8,
}

/// `Entry::flags`: per-rule options the dataplane acts on after the verdict.
pub mod entry_flag {
    /// `state: true`: a passed packet opens a connection-tracking flow.
    pub const STATE: u8 = 1 << 0;
    /// `log: true`: a dropped packet sends a (rate-limited) drop-log event.
    pub const LOG: u8 = 1 << 1;
    /// `limit:`: the entry matches only a packet over the rule's limit (`crate::limit`).
    pub const LIMIT: u8 = 1 << 2;
}

/// Drop logs (`log: true` on a drop rule): the program sends a sampled event for each packet
/// such a rule drops, at most `DropLogControl::rate_per_second` per rule (a token bucket per
/// rule counter slot), through a ring buffer the daemon reads and writes as log lines.
pub mod drop_log {
    /// Events per second and rule unless the daemon's config says otherwise.
    pub const DEFAULT_RATE: u32 = 10;
    /// The most events per second and rule the config may ask for.
    pub const MAX_RATE: u32 = 100_000;
    /// Bytes of the `DROP_LOG` ring buffer (a power of two, a multiple of the page size):
    /// 3,276 events of 72 bytes (each with an 8-byte header in the ring).
    pub const RING_BYTES: u32 = 1 << 18;
    /// `DROP_LOG_STATS` indices (per-CPU `u64` counters).
    /// Events put into the ring buffer.
    pub const SENT: u32 = 0;
    /// Events not sent because the rule's rate limit was reached.
    pub const SUPPRESSED: u32 = 1;
    /// Events lost because the ring buffer was full (the daemon did not keep up).
    pub const LOST: u32 = 2;
    /// Number of `DROP_LOG_STATS` counters.
    pub const COUNTERS: u32 = 3;
}

/// What follows the IP header(s) of a logged packet (`DropEvent::l4`).
pub mod l4 {
    /// TCP, UDP or SCTP: `DropEvent::src_port` and `dst_port` are the ports.
    pub const PORTS: u8 = 0;
    /// ICMP or ICMPv6: `src_port` holds the type, `dst_port` the code.
    pub const ICMP: u8 = 1;
    /// A non-first fragment: no ports.
    pub const FRAGMENT: u8 = 2;
    /// Another protocol: no ports.
    pub const OTHER: u8 = 3;
}

/// One dropped packet, as the program reports it for a rule with `log: true`. Addresses are
/// as in `Entry` (network byte order, IPv4 in the first word); they go to the daemon's local
/// log only, never into metrics (Art. 17).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()` when the packet was dropped (monotonic, since boot).
    pub ktime_ns: u64,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub ifindex: u32,
    /// The interface's slot (its position in the daemon's `interfaces`).
    pub interface: u32,
    /// The counter slot of the rule that dropped the packet (`Entry::counter`).
    pub rule: u32,
    /// The whole Ethernet frame, without FCS.
    pub bytes: u32,
    /// Ports (or ICMP type and code, see `l4`), host order.
    pub src_port: u16,
    pub dst_port: u16,
    /// The outermost VLAN id, 0 when untagged.
    pub vlan: u16,
    /// `family::IPV4` or `family::IPV6`.
    pub family: u8,
    pub protocol: u8,
    /// An `l4` value.
    pub l4: u8,
    pub _pad: [u8; 7],
}

/// The `DROP_LOG_CONFIG` map's one value, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropLogControl {
    /// Events per second per rule; also the burst a quiet rule may send at once. 0: none.
    pub rate_per_second: u32,
    pub _pad: u32,
    /// 0: the kernel's monotonic clock. Anything else: a fixed clock in nanoseconds, so that
    /// tests can step time; the daemon never sets it.
    pub clock_ns: u64,
}

/// A per-rule token bucket for drop-log events (`DROP_LOG_BUCKETS`, by rule counter slot).
/// Tokens are counted in units of 1/`TOKEN` so that a refill of less than a whole event is
/// kept, with no division on the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

impl RateBucket {
    /// One event's worth of tokens: `rate` events per second refill `rate × TOKEN` per second,
    /// i.e. `rate` units per nanosecond.
    pub const TOKEN: u64 = 1_000_000_000;

    /// Takes one event's token at `now_ns` if there is one. The bucket holds at most `rate`
    /// events, so a full second (or more) of quiet refills it completely; a new (zeroed)
    /// bucket counts as quiet since time 0. A clock that goes backwards refills nothing.
    #[inline(always)]
    pub fn admit(&mut self, now_ns: u64, rate: u32) -> bool {
        let rate = rate as u64;
        let elapsed = now_ns.saturating_sub(self.last_ns);
        // Capped at a second: refills at most the whole bucket, and cannot overflow.
        let refill = if elapsed < Self::TOKEN {
            elapsed * rate
        } else {
            Self::TOKEN * rate
        };
        let capacity = Self::TOKEN * rate;
        let mut tokens = self.tokens + refill;
        if tokens > capacity {
            tokens = capacity;
        }
        self.last_ns = now_ns;
        let admitted = tokens >= Self::TOKEN;
        self.tokens = if admitted {
            tokens - Self::TOKEN
        } else {
            tokens
        };
        admitted
    }
}

/// Live packet traces (`smf-firewall trace`): while the daemon holds the switch on, the
/// program reports each packet of the traced slots that matches the trace's filter, with the
/// rule that decided it, through the `TRACE` ring buffer (at most
/// `TraceControl::rate_per_second`, one token bucket). Off, the packet path pays one read of
/// `TraceControl::until_ns`.
pub mod trace {
    /// Bytes of the `TRACE` ring buffer: 3,276 events of 72 bytes (each with an 8-byte header).
    pub const RING_BYTES: u32 = 1 << 18;
    /// Events per second unless the trace asks otherwise.
    pub const DEFAULT_RATE: u32 = 100;
    /// The most events per second a trace may ask for.
    pub const MAX_RATE: u32 = 10_000;
    /// `TraceControl::slots` of a direction not traced.
    pub const NO_SLOT: u32 = u32::MAX;
    /// `TRACE_STATS` indices (per-CPU `u64` counters), as in `drop_log`.
    pub const SENT: u32 = 0;
    pub const SUPPRESSED: u32 = 1;
    pub const LOST: u32 = 2;
    pub const COUNTERS: u32 = 3;

    /// `TraceControl::conditions` bits: which parts of the filter apply.
    pub mod cond {
        pub const FAMILY: u16 = 1 << 0;
        pub const PROTOCOL: u16 = 1 << 1;
        pub const SRC: u16 = 1 << 2;
        pub const DST: u16 = 1 << 3;
        pub const SRC_PORT: u16 = 1 << 4;
        pub const DST_PORT: u16 = 1 << 5;
        /// IP packets only (any filter at all: frames that are not IP match none).
        pub const IP: u16 = 1 << 6;
    }

    /// `TraceEvent::frame`: what the parser made of the frame.
    pub mod frame {
        pub const IP: u8 = 0;
        pub const NON_IP: u8 = 1;
        pub const MALFORMED: u8 = 2;
    }
}

/// The `TRACE_CONTROL` map's one value, written by the daemon only: the switch, the traced
/// slots and the filter. Addresses and masks as in `Entry`; ports in host order, inclusive,
/// matching only packets with ports (as a rule's `src_port`/`dst_port`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceControl {
    /// The switch. 0: off (the loader writes it at every load, so a daemon that starts turns
    /// off a trace its predecessor left). Else the trace's lease: the program traces while
    /// `bpf_ktime_get_coarse_ns()` is below it, and the daemon renews it while its client
    /// is connected, so that a daemon killed mid-trace stops tracing within the lease.
    pub until_ns: u64,
    pub src_addr: [u32; 4],
    pub src_mask: [u32; 4],
    pub dst_addr: [u32; 4],
    pub dst_mask: [u32; 4],
    /// The directed slots traced (`directed_slot`), by direction; `trace::NO_SLOT` for none.
    pub slots: [u32; 2],
    /// Events per second (and the burst of a quiet trace).
    pub rate_per_second: u32,
    pub src_port_lo: u16,
    pub src_port_hi: u16,
    pub dst_port_lo: u16,
    pub dst_port_hi: u16,
    /// `trace::cond` bits.
    pub conditions: u16,
    pub family: u8,
    pub protocol: u8,
}

impl TraceControl {
    /// Tracing off.
    pub const OFF: TraceControl = TraceControl {
        until_ns: 0,
        src_addr: [0; 4],
        src_mask: [0; 4],
        dst_addr: [0; 4],
        dst_mask: [0; 4],
        slots: [trace::NO_SLOT; 2],
        rate_per_second: 0,
        src_port_lo: 0,
        src_port_hi: 0,
        dst_port_lo: 0,
        dst_port_hi: 0,
        conditions: 0,
        family: 0,
        protocol: 0,
    };
}

/// One traced packet: what the parser read, how it was judged. Fields past `frame` are zero
/// for a frame that is not IP (or is malformed). Local output only, never metrics (Art. 17).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEvent {
    /// `bpf_ktime_get_coarse_ns()` when the packet was judged.
    pub ktime_ns: u64,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// The directed slot (`directed_slot`): the interface and the direction.
    pub slot: u32,
    /// The counter slot of the rule that decided (`Entry::counter`), or `u32::MAX`: none
    /// (the default, a tracked flow, a frame that is not IP).
    pub rule: u32,
    /// The whole Ethernet frame, without FCS.
    pub bytes: u32,
    /// Ports, or ICMP type and code (see `l4`), host order.
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: u16,
    pub family: u8,
    pub protocol: u8,
    /// An `l4` value.
    pub l4: u8,
    /// TCP: the flags byte; else 0.
    pub tcp_flags: u8,
    /// A `trace::frame` value.
    pub frame: u8,
    /// 1: passed by a tracked flow, before the rules.
    pub tracked: u8,
    /// The verdict applied (`Verdict as u8`).
    pub verdict: u8,
    /// The verdict the rules (or the default, the flow) gave: it differs from `verdict` when
    /// the adapter is not licensed to filter (everything passes).
    pub decided: u8,
    pub _pad: [u8; 6],
}

/// Dimensions of the classification key: the words a tree node can cut on.
pub mod dim {
    /// Source address words 0-3 (IPv4 uses word 0), as in `Entry::src_addr`, read big-endian.
    pub const SRC: u8 = 0;
    /// Destination address words 0-3.
    pub const DST: u8 = 4;
    /// Destination port (or ICMP code).
    pub const DST_PORT: u8 = 8;
    /// Source port (or ICMP type).
    pub const SRC_PORT: u8 = 9;
    pub const PROTOCOL: u8 = 10;
    /// The outermost VLAN id, 0 when untagged.
    pub const VLAN: u8 = 11;
    /// Number of dimensions.
    pub const COUNT: usize = 12;
}

/// `Node::dim` of a leaf.
pub const LEAF: u8 = 0xff;

/// `Node::dim` of a tree root that is an exact-address table over the destination (source)
/// address: see [`exact`].
pub const EXACT_DST: u8 = 0xfe;
pub const EXACT_SRC: u8 = 0xfd;

/// Exact-address tables: the entries whose destination (or source) is one host, grouped by
/// that address, in an open-addressing hash table the program probes itself (cheaper than a
/// kernel hash map: no helper call, no jhash). The table's root node says where its slots
/// start in `EXACT` (`Node::first`) and their number, `1 << (32 - Node::shift)`; an address
/// lives in one of the `PROBES` slots from its home slot on, and its slot holds the leaf of
/// its entries (in rule order, ending at the first that matches every packet to or from it).
/// xdp-filter's whole rule language (hosts and ports) is this one lookup here.
pub mod exact {
    /// Slots probed from an address's home slot before the program decides it is absent.
    pub const PROBES: u32 = 4;

    /// The home slot of `addr` (words as in `Entry`) in a table of `1 << (32 - shift)` slots
    /// (`shift` in 1..=31): a multiplicative hash of the address's words, its top bits.
    #[inline(always)]
    pub fn home(addr: &[u32; 4], shift: u8) -> u32 {
        let folded =
            addr[0] ^ addr[1].rotate_left(7) ^ addr[2].rotate_left(13) ^ addr[3].rotate_left(19);
        folded
            .wrapping_mul(0x9e37_79b1)
            .wrapping_shr(u32::from(shift))
    }

    /// The mask of a slot number in a table of `1 << (32 - shift)` slots.
    #[inline(always)]
    pub const fn mask(shift: u8) -> u32 {
        u32::MAX.wrapping_shr(shift as u32)
    }
}

/// One slot of an exact-address table. `leaf.dim != LEAF`: empty (a zeroed slot is empty).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExactSlot {
    /// The address, as in `Entry` (IPv4 in the first word).
    pub addr: [u32; 4],
    /// The leaf of the entries with this address.
    pub leaf: Node,
}

/// One node of a classification tree. An internal node sends a packet to child
/// `first + ((key[dim] >> shift) & child_mask)`; a leaf (`dim == LEAF`) lists `leaf_count`
/// entries (as indices into the generation's `ENTRIES`) from `first` in `LEAVES`, in rule
/// order. Build nodes with `internal` and `leaf`, read the shared field with `child_mask` and
/// `leaf_count`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Internal: the index in `NODES` of child 0. Leaf: the index in `LEAVES` of its first
    /// entry index.
    pub first: u32,
    /// Internal: the mask of the key bits that pick the child (children minus one). Leaf: the
    /// number of entries it lists.
    pub mask_or_count: u16,
    /// The `dim` the node cuts on, or `LEAF`.
    pub dim: u8,
    /// Internal: how far the key word is shifted right before the mask. Leaf: 0.
    pub shift: u8,
}

impl Node {
    /// An internal node cutting on `dim`: child `first + ((key[dim] >> shift) & child_mask)`.
    pub const fn internal(first: u32, dim: u8, shift: u8, child_mask: u16) -> Node {
        Node {
            first,
            mask_or_count: child_mask,
            dim,
            shift,
        }
    }

    /// A leaf listing `count` entry indices from `first` in `LEAVES`.
    pub const fn leaf(first: u32, count: u16) -> Node {
        Node {
            first,
            mask_or_count: count,
            dim: LEAF,
            shift: 0,
        }
    }

    /// Internal node: the mask of the key bits that pick the child.
    #[inline(always)]
    pub const fn child_mask(&self) -> u16 {
        self.mask_or_count
    }

    /// Leaf: the number of entries it lists.
    #[inline(always)]
    pub const fn leaf_count(&self) -> u16 {
        self.mask_or_count
    }
}

/// No tree: no entry can match.
pub const NO_TREE: u32 = u32::MAX;

/// Trees per family. An entry with a VLAN condition goes to the VLAN tree; one whose
/// destination (else source) is a single host to that address's exact table, when the
/// family has enough of them; any other to the tree of the address it is narrowest in
/// (destination or source), else to the destination port tree, else to the tree of wide
/// entries; so that a tree's cuts rarely have to copy entries that are wide in the dimension
/// they cut (EffiCuts).
pub const TREES: usize = 7;

/// The VLAN tree's place among a family's trees: always the last (the others are sorted by
/// their lowest entry). It holds only entries with a VLAN condition, which no untagged packet
/// matches, so the program skips it for untagged packets.
pub const VLAN_TREE: usize = TREES - 1;

/// One decision tree: its root node, and the lowest entry index in it, so that a packet
/// skips a tree that cannot hold an earlier match than one already found. The root node and,
/// when it is a leaf, its first entry are copied here, so that the common case (a tree that
/// is one leaf, an exact table) costs the packet no lookup of `NODES` or `LEAVES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    /// The root's index in `NODES`, or `NO_TREE`.
    pub root: u32,
    pub min_entry: u32,
    /// A copy of `NODES[root]`.
    pub node: Node,
    /// A leaf root's first entry index (`LEAVES[node.first]`), else `NO_ENTRY`.
    pub entry: u32,
}

/// `Tree::entry` of a root that is not a leaf, or an empty one: above every entry index, so
/// the program's check stops at it.
pub const NO_ENTRY: u32 = u32::MAX;

impl Tree {
    pub const NONE: Tree = Tree {
        root: NO_TREE,
        min_entry: u32::MAX,
        node: Node::leaf(0, 0),
        entry: NO_ENTRY,
    };

    /// The tree rooted at `root` (`nodes[root]`) with its lowest entry `min_entry`, the
    /// root's copy and first entry taken from `nodes` and `leaves`.
    pub fn new(root: u32, min_entry: u32, nodes: &[Node], leaves: &[u32]) -> Tree {
        let node = nodes[root as usize];
        let entry = match node.dim {
            LEAF if node.leaf_count() > 0 => leaves[node.first as usize],
            _ => NO_ENTRY,
        };
        Tree {
            root,
            min_entry,
            node,
            entry,
        }
    }
}

/// One interface's rule set in one generation: what the program needs besides the trees.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The trees for IPv4 packets, then for IPv6 packets.
    /// Per family: the trees in use come first (sorted by their lowest entry), then unused
    /// ones, then the VLAN tree at `VLAN_TREE`.
    pub trees: [[Tree; TREES]; 2],
    pub default_verdict: u8,
    /// What frames that are neither IPv4 nor IPv6 get.
    pub non_ip_verdict: u8,
    /// Per family: the trees in use before `VLAN_TREE`.
    pub used: [u8; 2],
}

/// The directions a packet is judged in: arriving (XDP) or leaving (TC egress, `direction: out` rules).
pub mod direction {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Slots of (interface, direction): counters, policies and conntrack hits are kept per slot.
pub const MAX_SLOTS: u32 = MAX_INTERFACES * direction::COUNT;

/// The slot of an interface's rules and counters in one direction: its `INTERFACES` slot
/// itself for `direction::IN`, that plus `MAX_INTERFACES` for `direction::OUT`.
pub const fn directed_slot(slot: u32, direction: u32) -> u32 {
    direction * MAX_INTERFACES + slot
}

/// Index of a directed slot's `Policy` in the `POLICIES` array.
pub const fn policy_index(generation: u32, slot: u32) -> u32 {
    generation * MAX_SLOTS + slot
}

/// Connection tracking: two LRU hashes, one per address family, each sized by
/// `conntrack.max_entries`: `CONNTRACK4` maps an IPv4 flow's [`FlowKey4`] (16 bytes, which
/// hashes and compares faster on every tracked packet) to a [`Flow`], `CONNTRACK` an IPv6
/// flow's [`FlowKey`].
pub mod conntrack {
    /// Entries of the table unless the daemon's config says otherwise (SEIL/x86 Fuji's limit).
    pub const DEFAULT_MAX_ENTRIES: u32 = 65_536;

    /// Has a flow in `flow_state`, last seen at `last_seen`, been idle longer than its state's
    /// timeout at `now` (nanoseconds, `Flow::last_seen`'s clock)? The one judgement both the
    /// kernel (on lookup) and the daemon (sweep, census) make. A state with no timeout (not a
    /// `state` value) is expired: a flow nothing says how long to keep is not kept (fail
    /// closed). A clock that went backwards expires nothing. No floating point, no panic, a
    /// bounds-checked index: fit for the packet path.
    #[inline(always)]
    pub fn expired(
        flow_state: u8,
        last_seen: u64,
        now: u64,
        timeouts_ns: &[u64; state::COUNT],
    ) -> bool {
        let timeout = match timeouts_ns.get(flow_state as usize) {
            Some(&t) => t,
            None => return true,
        };
        now > last_seen && now - last_seen > timeout
    }

    /// `Flow::state` values. Each has its own timeout, `ConntrackSettings::timeouts_ns[state]`.
    pub mod state {
        /// TCP: the originator's SYN was seen.
        pub const TCP_SYN_SENT: u8 = 0;
        /// TCP: the responder's SYN-ACK was seen.
        pub const TCP_SYN_RECV: u8 = 1;
        /// TCP: the originator's ACK after the SYN-ACK (or a flow picked up mid-stream).
        pub const TCP_ESTABLISHED: u8 = 2;
        /// TCP: a FIN from one side.
        pub const TCP_FIN_WAIT: u8 = 3;
        /// TCP: FINs from both sides.
        pub const TCP_TIME_WAIT: u8 = 4;
        /// TCP: a RST from either side.
        pub const TCP_CLOSE: u8 = 5;
        /// UDP: only the originator has sent.
        pub const UDP_UNREPLIED: u8 = 6;
        /// UDP: the responder has answered.
        pub const UDP_REPLIED: u8 = 7;
        /// ICMP or ICMPv6 echo: a request was seen.
        pub const ICMP_ECHO: u8 = 8;
        /// Number of states (length of `ConntrackSettings::timeouts_ns`).
        pub const COUNT: usize = 9;
        /// Names as `smf-firewall conntrack` prints them and as config keys of timeouts.
        pub const NAMES: [&str; COUNT] = [
            "tcp_syn_sent",
            "tcp_syn_recv",
            "tcp_established",
            "tcp_fin_wait",
            "tcp_time_wait",
            "tcp_close",
            "udp",
            "udp_stream",
            "icmp",
        ];
    }

    /// `ConntrackSettings::tracking` bits: the protocols whose packets look their flow up.
    /// Flows exist only for TCP, UDP and ICMP echo, and only for the protocols of `state: true`
    /// rules, so a packet of any other protocol skips the table.
    pub mod tracked {
        use crate::protocol;

        pub const TCP: u64 = 1;
        pub const UDP: u64 = 1 << 1;
        /// ICMP and ICMPv6 echo.
        pub const ICMP: u64 = 1 << 2;
        /// What a `state: true` rule without a protocol may open a flow for.
        pub const ALL: u64 = TCP | UDP | ICMP;

        /// The bit of packets (and rules) of IP protocol `protocol`; 0 for one that never has a
        /// flow.
        #[inline(always)]
        pub const fn of(protocol: u8) -> u64 {
            match protocol {
                protocol::TCP => TCP,
                protocol::UDP => UDP,
                protocol::ICMP | protocol::ICMPV6 => ICMP,
                _ => 0,
            }
        }
    }

    /// `Flow::fins` bits: which side has sent a FIN.
    pub mod fin {
        pub const ORIGIN: u8 = 1 << 0;
        pub const REPLY: u8 = 1 << 1;
    }

    /// `Flow::origin`: which endpoint of the normalised key opened the flow.
    pub mod origin {
        /// The `lo` endpoint of the key (the one that compares lower).
        pub const LO: u8 = 0;
        pub const HI: u8 = 1;
    }

    /// Indices of the per-CPU `CONNTRACK_EVENTS` array.
    pub mod event {
        /// Flows the kernel created.
        pub const CREATED: u32 = 0;
        /// Expired flows the kernel found and replaced by a new one (the daemon's sweep counts
        /// the ones it deletes itself).
        pub const EXPIRED_REPLACED: u32 = 1;
        pub const COUNT: u32 = 2;
    }

    /// Indices of the `CONNTRACK_FLUSHED` array, written by userspace only.
    pub mod flushed {
        /// Flows deleted by `smf-firewall conntrack flush`.
        pub const FLOWS: u32 = 0;
    }

    /// The flow tables' presence filter (`FLOW_PRESENCE`), so that a packet with no flow, the
    /// common case of a flood or a scan behind a `state: true` rule, skips the hash lookup: a
    /// byte per slot, non-zero at every slot a key of either table hashes to (`of_key4`,
    /// `of_key6`), 16 slots per flow of `conntrack.max_entries`. A zero byte proves the key is
    /// in no table; a non-zero one (the key's, or another's sharing its slot) means look.
    ///
    /// It has two halves. The kernel marks a new flow's slot in both, after inserting it; it
    /// reads the half `ConntrackSettings::presence` names. The daemon drops the marks of flows
    /// gone (expired, evicted, flushed) by rebuilding the other half: zero it, mark the slot
    /// of every key in the tables, then name it. A flow inserted before the zeroing is in the
    /// tables when they are walked; one marked after it is marked in the new half: none is
    /// lost. The daemon zeroes a half only `GRACE_MS` after it stopped being read.
    pub mod presence {
        use crate::{FlowKey, FlowKey4};

        /// Bytes of one `FLOW_PRESENCE` element.
        pub const BLOCK: u32 = 64;
        /// Slots per flow of the table: when the tables are full, a key with no flow still
        /// skips the lookup 15 times in 16.
        pub const SLOTS_PER_FLOW: u32 = 16;
        /// The fewest and most slots of a half, as powers of two.
        pub const MIN_BITS: u32 = 16;
        pub const MAX_BITS: u32 = 26;
        /// How long after a half stopped being read the daemon may zero it: far longer than a
        /// packet's run, which read `ConntrackSettings::presence` before the switch.
        pub const GRACE_MS: u64 = 50;

        /// log2 of the slots of a half for tables of `flows` entries each.
        pub const fn bits(flows: u32) -> u32 {
            let slots = (flows as u64) * SLOTS_PER_FLOW as u64;
            let bits = 64 - slots.saturating_sub(1).leading_zeros();
            if bits < MIN_BITS {
                MIN_BITS
            } else if bits > MAX_BITS {
                MAX_BITS
            } else {
                bits
            }
        }

        /// `FLOW_PRESENCE` elements for halves of `1 << bits` slots.
        pub const fn elements(bits: u32) -> u32 {
            2 << (bits - BLOCK.trailing_zeros())
        }

        /// The element and the byte in it of `slot` in `half` (0 or 1).
        #[inline(always)]
        pub fn at(half: u32, slot: u32, bits: u32) -> (u32, usize) {
            let shift = BLOCK.trailing_zeros();
            let element = (half & 1) << (bits.wrapping_sub(shift) & 31) | slot >> shift;
            (element, (slot & (BLOCK - 1)) as usize)
        }

        /// The slot of an IPv4 flow between endpoints (`a`, `a_port`) and (`b`, `b_port`), in
        /// halves of `1 << bits` slots: the same for either order, so that the kernel hashes a
        /// packet's endpoints as they come, before it builds (normalises) the key, and a
        /// packet without a flow returns before that work too.
        #[inline(always)]
        pub fn slot4(a: u32, b: u32, a_port: u16, b_port: u16, protocol: u8, bits: u32) -> u32 {
            finish(mix(0, pair(a, b)), a_port, b_port, protocol, bits)
        }

        /// `slot4` for IPv6 endpoints.
        #[inline(always)]
        pub fn slot6(
            a: &[u32; 4],
            b: &[u32; 4],
            a_port: u16,
            b_port: u16,
            protocol: u8,
            bits: u32,
        ) -> u32 {
            // Two words folded into each step (rotated apart, so that equal words do not
            // cancel): three multiplications instead of five.
            let fold = |i: usize| pair(a[i], b[i]) ^ pair(a[i + 1], b[i + 1]).rotate_left(23);
            finish(
                mix(mix(0, fold(0)), fold(2)),
                a_port,
                b_port,
                protocol,
                bits,
            )
        }

        /// The slot of a key of `CONNTRACK4`.
        pub fn of_key4(key: &FlowKey4, bits: u32) -> u32 {
            slot4(
                key.lo_addr,
                key.hi_addr,
                key.lo_port,
                key.hi_port,
                key.protocol,
                bits,
            )
        }

        /// The slot of a key of `CONNTRACK`.
        pub fn of_key6(key: &FlowKey, bits: u32) -> u32 {
            slot6(
                &key.lo_addr,
                &key.hi_addr,
                key.lo_port,
                key.hi_port,
                key.protocol,
                bits,
            )
        }

        /// Two words in an order-free form: their sum and their exclusive or.
        #[inline(always)]
        fn pair(a: u32, b: u32) -> u64 {
            u64::from(a.wrapping_add(b)) | u64::from(a ^ b) << 32
        }

        #[inline(always)]
        fn finish(h: u64, a_port: u16, b_port: u16, protocol: u8, bits: u32) -> u32 {
            let ports = (u64::from(a_port) + u64::from(b_port))
                | u64::from(a_port ^ b_port) << 17
                | u64::from(protocol) << 33;
            mix(h, ports).wrapping_shr(64u32.wrapping_sub(bits)) as u32
        }

        /// One step of a multiplicative hash: the product's top bits depend on every bit of
        /// `h ^ word`, and folding them into the low half carries them into the next step.
        /// No division, no table: a few instructions on the packet path.
        #[inline(always)]
        fn mix(h: u64, word: u64) -> u64 {
            let product = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            product ^ product >> 32
        }
    }
}

/// An IPv6 flow (`CONNTRACK`), the same for both directions: the endpoint that compares lower
/// (address, then port) first. Addresses as in `Entry`; ports in host order; for ICMP echo both
/// ports hold the echo identifier. IPv4 flows are [`FlowKey4`]s in their own table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub lo_addr: [u32; 4],
    pub hi_addr: [u32; 4],
    pub lo_port: u16,
    pub hi_port: u16,
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// An IPv4 flow (`CONNTRACK4`), normalised as [`FlowKey`]: the endpoint whose (address as a
/// big-endian number, port) is lower comes first. Addresses as in `Entry`'s first word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey4 {
    pub lo_addr: u32,
    pub hi_addr: u32,
    pub lo_port: u16,
    pub hi_port: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

impl FlowKey4 {
    /// The key with its padding zeroed, built as four words: a literal's 3-byte `_pad` becomes
    /// a call to compiler-builtins' `memset` in BPF (a BPF-to-BPF call and a byte loop on
    /// every flow lookup).
    #[inline(always)]
    pub fn new(lo_addr: u32, hi_addr: u32, lo_port: u16, hi_port: u16, protocol: u8) -> FlowKey4 {
        let ports = if cfg!(target_endian = "little") {
            u32::from(lo_port) | u32::from(hi_port) << 16
        } else {
            u32::from(hi_port) | u32::from(lo_port) << 16
        };
        // The protocol is the last word's first byte, in either byte order.
        let last = u32::from_ne_bytes([protocol, 0, 0, 0]);
        // SAFETY: `FlowKey4` is `repr(C)`, 16 bytes of integers without implicit padding, and
        // any bit pattern is a valid value.
        unsafe { core::mem::transmute::<[u32; 4], FlowKey4>([lo_addr, hi_addr, ports, last]) }
    }
}

impl From<FlowKey4> for FlowKey {
    /// The same flow in the IPv6 table's layout (IPv4 in the first word), so that listings
    /// see one kind of key.
    fn from(key: FlowKey4) -> FlowKey {
        FlowKey {
            lo_addr: [key.lo_addr, 0, 0, 0],
            hi_addr: [key.hi_addr, 0, 0, 0],
            lo_port: key.lo_port,
            hi_port: key.hi_port,
            protocol: key.protocol,
            family: family::IPV4,
            _pad: [0; 2],
        }
    }
}

/// What the table holds for a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// `bpf_ktime_get_coarse_ns()` (or the settings' fixed clock) of the last packet.
    pub last_seen: u64,
    /// A `conntrack::state` value.
    pub state: u8,
    /// `conntrack::origin`: the endpoint that opened the flow.
    pub origin: u8,
    /// `conntrack::fin` bits.
    pub fins: u8,
    pub _pad: [u8; 5],
}

impl Flow {
    /// A new flow with its padding zeroed, built as two words (as `FlowKey4::new`, whose
    /// literal would call `memset`).
    #[inline(always)]
    pub fn new(last_seen: u64, state: u8, origin: u8) -> Flow {
        let rest = u64::from_ne_bytes([state, origin, 0, 0, 0, 0, 0, 0]);
        // SAFETY: `Flow` is `repr(C)`, 16 bytes of integers without implicit padding, and any
        // bit pattern is a valid value.
        unsafe { core::mem::transmute::<[u64; 2], Flow>([last_seen, rest]) }
    }

    /// `conntrack::expired` for this flow under `settings`' timeouts.
    #[inline(always)]
    pub fn expired(&self, settings: &ConntrackSettings, now: u64) -> bool {
        conntrack::expired(self.state, self.last_seen, now, &settings.timeouts_ns)
    }
}

/// The one entry of the `CONNTRACK_SETTINGS` array: what the daemon's config says about
/// connection tracking.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Idle timeout per `conntrack::state`, in nanoseconds.
    pub timeouts_ns: [u64; conntrack::state::COUNT],
    /// Non-zero: the kernel's "now" is `fixed_now_ns` instead of its flow clock. Tests use it to
    /// step time exactly as the reference classifier's clock; the daemon never sets it.
    pub fixed_clock: u64,
    pub fixed_now_ns: u64,
    /// The flow clock: `bpf_jiffies64()` × `tick_ns` + `offset_ns` (wrapping), which the loader
    /// calibrates to equal CLOCK_MONOTONIC_COARSE to within a tick. Reading jiffies is a memory
    /// load; `bpf_ktime_get_coarse_ns()`, used while `tick_ns` is zero, is a helper call.
    pub tick_ns: u64,
    pub offset_ns: u64,
    /// `conntrack::tracked` bits: the protocols whose packets look their flow up (those of the
    /// `state: true` rules). Zero: no lookups at all, so that rule sets without stateful rules
    /// pay nothing for tracking.
    pub tracking: u64,
    /// The half of the presence filter (`conntrack::presence`) the kernel reads, plus one;
    /// zero: none (every tracked packet looks its flow up). Written by the daemon only.
    pub presence: u64,
    /// log2 of the slots of each half (`conntrack::presence::bits`).
    pub presence_bits: u64,
}

/// Every type the kernel and user space exchange through a map, with its size and alignment:
/// both sides compile these assertions, so a layout change that one side would read
/// differently fails the build instead of misreading a map. With `user`, each is also
/// `aya::Pod`.
macro_rules! map_types {
    ($($name:ident: $size:literal bytes, align $align:literal;)*) => {
        $(
            const _: () = assert!(
                core::mem::size_of::<$name>() == $size && core::mem::align_of::<$name>() == $align,
                concat!("the layout of ", stringify!($name), " changed: update both sides"),
            );
            #[cfg(feature = "user")]
            // SAFETY: `#[repr(C)]` plain integers and arrays of them, padding spelled out as
            // fields (the asserted size is the sum of the fields), valid for any bit pattern.
            unsafe impl aya::Pod for $name {}
        )*
    };
}

map_types! {
    Counter: 16 bytes, align 8;
    DropEvent: 72 bytes, align 8;
    DropLogControl: 16 bytes, align 8;
    RateBucket: 16 bytes, align 8;
    Entry: 88 bytes, align 4;
    Node: 8 bytes, align 4;
    Policy: 284 bytes, align 4;
    Tree: 20 bytes, align 4;
    ExactSlot: 24 bytes, align 4;
    FlowKey: 40 bytes, align 4;
    FlowKey4: 16 bytes, align 4;
    Flow: 16 bytes, align 8;
    ConntrackSettings: 128 bytes, align 8;
    TraceControl: 96 bytes, align 8;
    TraceEvent: 72 bytes, align 8;
    Limit: 40 bytes, align 8;
    LimitBucket: 24 bytes, align 8;
    LimitKey: 24 bytes, align 4;
}

#[cfg(test)]
mod tests {
    use super::{
        Flow, FlowKey, FlowKey4, RateBucket,
        conntrack::{expired, presence, state},
        family,
    };

    #[test]
    fn flow_constructors_match_their_literals() {
        let key = FlowKey4::new(0x0102_0304, 0xa0b0_c0d0, 40_000, 443, 6);
        let literal = FlowKey4 {
            lo_addr: 0x0102_0304,
            hi_addr: 0xa0b0_c0d0,
            lo_port: 40_000,
            hi_port: 443,
            protocol: 6,
            _pad: [0; 3],
        };
        assert_eq!(key, literal);
        let flow = Flow::new(u64::MAX - 7, state::TCP_SYN_SENT, 1);
        let literal = Flow {
            last_seen: u64::MAX - 7,
            state: state::TCP_SYN_SENT,
            origin: 1,
            fins: 0,
            _pad: [0; 5],
        };
        assert_eq!(flow, literal);
    }

    #[test]
    fn presence_filters_are_sized_by_the_table_and_slots_stay_inside_a_half() {
        assert_eq!(presence::bits(65_536), 20);
        assert_eq!(presence::bits(1), presence::MIN_BITS);
        assert_eq!(presence::bits(u32::MAX), presence::MAX_BITS);
        assert_eq!(presence::elements(20), 2 * (1 << 20) / presence::BLOCK);
        let bits = 20;
        let last = (1u32 << bits) - 1;
        assert_eq!(presence::at(0, last, bits), (16_383, 63));
        assert_eq!(presence::at(1, 0, bits), (16_384, 0));
        assert_eq!(presence::at(1, last, bits), (32_767, 63));
    }

    /// A flood's keys differ in a port or the last address byte: they must spread over the
    /// slots as random ones would (65,536 keys in 2^20 slots share about 2,000 of them).
    #[test]
    fn presence_slots_spread_keys_that_differ_in_a_few_bits() {
        const BITS: u32 = 20;
        let mut seen = [0u64; 1 << (BITS - 6)];
        let mut shared = 0;
        let mut mark = |slot: u32| {
            assert!(slot < 1 << BITS);
            let (word, bit) = ((slot >> 6) as usize, slot & 63);
            shared += usize::from(seen[word] >> bit & 1 == 1);
            seen[word] |= 1 << bit;
        };
        for i in 0..32_768u32 {
            let v4 = FlowKey4 {
                lo_addr: u32::from_be_bytes([198, 18, (i >> 8) as u8, i as u8]),
                hi_addr: u32::from_be_bytes([198, 19, 0, 1]),
                lo_port: 40_000,
                hi_port: 443,
                protocol: 6,
                _pad: [0; 3],
            };
            mark(presence::of_key4(&v4, BITS));
            let v6 = FlowKey {
                lo_addr: [0x2001_0002u32.to_be(), 0, 0, i.to_be()],
                hi_addr: [0x2001_0002u32.to_be(), 0, 0, 0xffff_ffff],
                lo_port: 40_000,
                hi_port: 443,
                protocol: 6,
                family: family::IPV6,
                _pad: [0; 2],
            };
            mark(presence::of_key6(&v6, BITS));
        }
        assert!(shared < 3_000, "{shared} of 65,536 keys shared a slot");
    }

    #[test]
    fn a_flow_expires_after_its_states_timeout_and_an_unknown_state_at_once() {
        let mut timeouts = [0u64; state::COUNT];
        for (i, t) in timeouts.iter_mut().enumerate() {
            *t = 100 * (i as u64 + 1);
        }
        let udp = state::UDP_UNREPLIED;
        let timeout = timeouts[udp as usize];
        // Idle exactly the timeout is still live; one nanosecond more is expired.
        assert!(!expired(udp, T, T + timeout, &timeouts));
        assert!(expired(udp, T, T + timeout + 1, &timeouts));
        // A clock behind the flow's last packet expires nothing.
        assert!(!expired(udp, T, T - 1, &timeouts));
        assert!(!expired(udp, u64::MAX, 0, &timeouts));
        // Each state has its own timeout.
        for s in 0..state::COUNT as u8 {
            let t = timeouts[s as usize];
            assert!(!expired(s, T, T + t, &timeouts), "state {s}");
            assert!(expired(s, T, T + t + 1, &timeouts), "state {s}");
        }
        // Not a state: expired, whatever the clocks say (fail closed).
        for s in [state::COUNT as u8, 200, u8::MAX] {
            assert!(expired(s, T, T, &timeouts), "state {s}");
            assert!(expired(s, T, 0, &timeouts), "state {s}");
        }
        // A timeout of u64::MAX never expires a known state.
        assert!(!expired(udp, 0, u64::MAX, &[u64::MAX; state::COUNT]));
    }

    const SECOND: u64 = 1_000_000_000;
    /// Some time after boot.
    const T: u64 = 1_000 * SECOND;

    /// Admits events at `now` until one is refused; returns how many were admitted (at most
    /// 1,000).
    fn burst(bucket: &mut RateBucket, now: u64, rate: u32) -> u32 {
        (0..1_000).take_while(|_| bucket.admit(now, rate)).count() as u32
    }

    // Each row: rate, then (time since T, events admitted in a burst at that time).
    #[test]
    fn the_bucket_admits_the_rate_per_second_and_refills_with_time() {
        let cases: [(u32, &[(u64, u32)]); 5] = [
            // A new bucket is full: one second's worth at once, then nothing.
            (10, &[(0, 10), (0, 0)]),
            // A tenth of a second refills one event at 10/s; half a second five.
            (
                10,
                &[(0, 10), (SECOND / 10, 1), (SECOND / 10 + SECOND / 2, 5)],
            ),
            // Refills below one event add up rather than being lost.
            (
                10,
                &[
                    (0, 10),
                    (SECOND / 20, 0),
                    (SECOND / 10 - 1, 0),
                    (SECOND / 10, 1),
                ],
            ),
            // Long quiet refills the bucket to its size, no more.
            (10, &[(0, 10), (3_600 * SECOND, 10)]),
            // Rate 0 admits nothing, ever.
            (0, &[(0, 0), (10 * SECOND, 0)]),
        ];
        for (rate, steps) in cases {
            let mut bucket = RateBucket::default();
            for &(at, admitted) in steps {
                assert_eq!(
                    burst(&mut bucket, T + at, rate),
                    admitted,
                    "rate {rate}, at T+{at} ns: {steps:?}"
                );
            }
        }
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing_and_large_rates_do_not_overflow() {
        let mut bucket = RateBucket::default();
        assert_eq!(burst(&mut bucket, T, 3), 3);
        assert_eq!(burst(&mut bucket, T - SECOND, 3), 0);
        let mut bucket = RateBucket::default();
        assert!(bucket.admit(u64::MAX, u32::MAX));
        assert!(bucket.admit(u64::MAX, u32::MAX));
    }
}
