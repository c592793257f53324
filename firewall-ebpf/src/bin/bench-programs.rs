//! The benchmarks' tiny programs, one object: the floors the XDP program's timings are read
//! against (each building block alone, built the same way), the trivial receivers of the live
//! table and its traffic generator. Never in the production binary (firewall-dataplane's
//! `xdp-pass` feature embeds this object for the benchmarks only).
//!
//! The floors return a verdict that proves they did their work (a flow found, a host missed), so
//! the benchmark checks each one before timing it. Programs named `floor_*_alone` build their
//! key from fixed IPv4/UDP offsets behind one bounds check: the block's cost without a parse.
#![no_std]
#![no_main]

// The main program's parser itself, so "a full parse" is the one the firewall pays.
#[path = "../context.rs"]
#[allow(dead_code)]
mod context;
#[path = "../parse.rs"]
#[allow(dead_code)]
mod parse;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use firewall_common::{
    Counter, FlowKey4, family,
    limit::{LimitBucket, LimitKey},
};

/// What a flow entry holds: when it was last seen and its state.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Flow {
    pub last_seen: u64,
    pub state: u32,
    pub flags: u32,
}

#[map]
static FLOWS: LruHashMap<FlowKey4, Flow> = LruHashMap::with_max_entries(65_536, 0);

#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(1, 0);

/// Destination hosts (IPv4, as on the wire) to a rule index.
#[map]
static HOSTS: HashMap<u32, u32> = HashMap::with_max_entries(1_024, 0);

/// Per-source rate-limit buckets, keyed as the firewall's `LIMIT_KEYS` (24 bytes).
#[map]
static LIMIT_KEYS: LruHashMap<LimitKey, LimitBucket> = LruHashMap::with_max_entries(65_536, 0);

#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The live table's generator: every frame goes back out of the interface it "arrived" on.
#[xdp]
pub fn xdp_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// A full parse of the frame: XDP_PASS for IP (its fields folded so none is optimised away).
#[xdp]
pub fn floor_parse(ctx: XdpContext) -> u32 {
    let mut packet = MaybeUninit::uninit();
    match parse::headers(&ctx, &mut packet) {
        Ok(parse::Frame::Ip(p)) => {
            let fold = p.src[0] ^ p.dst[0] ^ p.src[3] ^ p.dst[3] ^ u32::from(p.vlan);
            let fold = fold
                ^ u32::from(p.src_port_or_type)
                ^ (u32::from(p.dst_port_or_code) << 16)
                ^ u32::from(p.protocol)
                ^ u32::from(p.tcp_flags)
                ^ u32::from(p.l4 as u8);
            if fold == 0x5a5a_5a5a {
                xdp_action::XDP_ABORTED
            } else {
                xdp_action::XDP_PASS
            }
        }
        _ => xdp_action::XDP_DROP,
    }
}

/// The established-flow floor: a full parse, one 16-byte flow lookup, one per-CPU counter
/// struct. XDP_PASS when the flow is found, XDP_DROP when not.
#[xdp]
pub fn floor_flow(ctx: XdpContext) -> u32 {
    let mut packet = MaybeUninit::uninit();
    let Ok(parse::Frame::Ip(p)) = parse::headers(&ctx, &mut packet) else {
        return xdp_action::XDP_ABORTED;
    };
    // Not normalised: the packet's own order, which the benchmark's key holds.
    let key = FlowKey4::new(
        p.src[0],
        p.dst[0],
        p.src_port_or_type,
        p.dst_port_or_code,
        p.protocol,
    );
    // SAFETY: the value is read once, while the program runs.
    let found = unsafe { FLOWS.get(key) }.is_some_and(|flow| flow.state != u32::MAX);
    if let Some(counter) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, this CPU's only.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
    if found {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Ethernet + IPv4 (no options) + the ports: what the `_alone` floors read.
const FIXED_LEN: usize = 14 + 20 + 4;

/// One 16-byte flow lookup alone: XDP_PASS when found, XDP_DROP when not.
#[xdp]
pub fn floor_flow_alone(ctx: XdpContext) -> u32 {
    let Some(key) = fixed_key(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: only whether it is there is used.
    if unsafe { FLOWS.get(key) }.is_some() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// A kernel hash set of hosts, probed with the destination: XDP_DROP on a listed host, else
/// XDP_PASS.
#[xdp]
pub fn floor_hosts_alone(ctx: XdpContext) -> u32 {
    let Some(key) = fixed_key(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: only whether it is there is used.
    if unsafe { HOSTS.get(key.hi_addr) }.is_some() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// One 24-byte rate-limit key lookup alone (the source's per-address key of rule slot 0,
/// epoch 1), the lookup a `per: src` limit adds: XDP_PASS when found, XDP_DROP when not.
#[xdp]
pub fn floor_limit_alone(ctx: XdpContext) -> u32 {
    let Some(flow) = fixed_key(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let key = LimitKey {
        addr: [flow.lo_addr, 0, 0, 0],
        slot: 0,
        epoch: 1,
        family: family::IPV4,
        _pad: 0,
    };
    // SAFETY: only whether it is there is used.
    if unsafe { LIMIT_KEYS.get(key) }.is_some() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// The flow key from fixed offsets, behind one bounds check.
#[inline(always)]
fn fixed_key(ctx: &XdpContext) -> Option<FlowKey4> {
    let start = ctx.data();
    if start + FIXED_LEN > ctx.data_end() {
        return None;
    }
    // SAFETY: the bounds check above covers every byte read; reads are unaligned-safe.
    unsafe {
        let at = |offset: usize| (start + offset) as *const u8;
        let word = |offset: usize| (at(offset) as *const u32).read_unaligned();
        let port = |offset: usize| u16::from_be((at(offset) as *const u16).read_unaligned());
        Some(FlowKey4::new(
            word(26),
            word(30),
            port(34),
            port(36),
            *at(23),
        ))
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
