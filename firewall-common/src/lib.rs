//! Types shared by the XDP program and the userspace daemon: map keys, map values and the
//! enums both sides must agree on. Everything here is `#[repr(C)]` plain data; logic that only
//! one side needs lives on that side.
#![no_std]

/// Interfaces one program instance can serve; each gets a counter slot.
pub const MAX_INTERFACES: u32 = 64;

/// Entries per interface that the linear classifier walks. A rule with lists takes one entry
/// per combination of its list elements.
pub const MAX_ENTRIES: usize = 128;

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
    pub vlan: u16,
    pub conditions: u16,
    /// Position of the rule this entry belongs to, in the interface's rule list.
    pub rule: u16,
    pub family: u8,
    pub protocol: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub verdict: u8,
    pub _pad: [u8; 1],
}

/// The value of the `INTERFACES` map, keyed by ifindex: one interface's whole rule set. The
/// daemon replaces it with one map update, so a packet is judged by the old or the new rules,
/// never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InterfaceRules {
    /// Counter slot of this interface (its position in the daemon's config).
    pub slot: u32,
    pub entry_count: u32,
    pub default_verdict: u8,
    /// What frames that are neither IPv4 nor IPv6 get.
    pub non_ip_verdict: u8,
    pub _pad: [u8; 6],
    pub entries: [Entry; MAX_ENTRIES],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data with explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Entry {}
    unsafe impl aya::Pod for super::InterfaceRules {}
}
