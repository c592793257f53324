//! Types shared by the XDP program and the userspace daemon: map keys, map values and the
//! enums both sides must agree on. Everything here is `#[repr(C)]` plain data; logic that only
//! one side needs lives on that side.
#![no_std]

/// Interfaces one program instance can serve; each gets a counter slot.
pub const MAX_INTERFACES: u32 = 64;

/// Rules per interface that the linear classifier walks.
pub const MAX_RULES: usize = 64;

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

/// The `ENFORCE` map: one `u32` that says whether the rules' verdicts are applied (issue 6,
/// licensing). The map starts zeroed, so a program that no licence decision has reached yet
/// never filters: it passes and meters every packet (metering is part of the base service,
/// Art. 24; filtering needs the Ultra Firewall Option, Art. 2).
pub mod enforce {
    /// The map's only index.
    pub const INDEX: u32 = 0;
    /// Pass every packet, counted as passed: the adapter's option is not licensed.
    pub const PASS_ALL: u32 = 0;
    /// Apply the rules' verdicts: the adapter's option is licensed.
    pub const RULES: u32 = 1;
}

/// Packets and bytes (whole Ethernet frames, without FCS) seen with one verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `Rule::matches` bits: which optional conditions a rule has.
pub mod cond {
    pub const PROTOCOL: u8 = 1 << 0;
    pub const DST_PORT: u8 = 1 << 1;
}

/// One compiled IPv4 rule. Addresses and masks are in network byte order as they appear in
/// the packet (compared as raw `u32`s); ports are in host order, inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub src_addr: u32,
    pub src_mask: u32,
    pub dst_addr: u32,
    pub dst_mask: u32,
    pub dst_port_lo: u16,
    pub dst_port_hi: u16,
    pub protocol: u8,
    pub conditions: u8,
    pub verdict: u8,
    pub _pad: u8,
}

/// The value of the `INTERFACES` map, keyed by ifindex: one interface's whole rule set. The
/// daemon replaces it with one map update, so a packet is judged by the old or the new rules,
/// never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InterfaceRules {
    /// Counter slot of this interface (its position in the daemon's config).
    pub slot: u32,
    pub rule_count: u32,
    pub default_verdict: u8,
    pub _pad: [u8; 7],
    pub rules: [Rule; MAX_RULES],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data with explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::InterfaceRules {}
}
