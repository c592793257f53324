//! Header parsing: Ethernet, up to two VLAN tags, IPv4 or IPv6 (walking extension headers),
//! then the fields rules match in TCP, UDP, SCTP and ICMP. The rules for what is malformed are
//! the reference classifier's (`firewall-rules/src/reference.rs`), step for step. Every read
//! goes through `ptr_at`, the one place that proves to the verifier that bytes lie in the frame.

use core::mem;

use firewall_common::{MAX_IPV6_EXTENSIONS, MAX_VLAN_TAGS, ethertype, family, protocol};

use crate::context::Wire;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

/// The frame ends before a header it announces, or a header field is impossible.
pub struct Malformed;

pub enum Frame {
    NonIp,
    Ip(Packet),
}

/// What is after the IP header(s).
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP, UDP or SCTP: `a` and `b` are the source and destination ports.
    Ports,
    /// ICMP or ICMPv6: `a` is the type, `b` the code.
    Icmp,
    /// A non-first fragment: nothing beyond IP.
    Fragment,
    /// A protocol whose header rules do not look into.
    Other,
}

/// The fields rules can match on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Packet {
    /// The outermost VLAN id, 0 when untagged.
    pub vlan: u16,
    pub family: u8,
    /// Addresses as in `firewall_common::Entry`: IPv4 in the first word.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub protocol: u8,
    pub l4: L4,
    /// TCP, UDP, SCTP: the source port; ICMP: the type.
    pub src_port_or_type: u16,
    /// TCP, UDP, SCTP: the destination port; ICMP: the code.
    pub dst_port_or_code: u16,
    /// TCP: the flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); else 0.
    pub tcp_flags: u8,
    /// ICMP: the echo identifier (bytes 4-5 of the header, meaningful for echo only).
    pub icmp_id: u16,
    /// Where the header after IP starts (connection tracking reads what an ICMP error quotes).
    pub l4_offset: u16,
}

/// The flow an ICMP error quotes: the header of the packet that caused it and its ports (or
/// echo identifier), as that packet was sent.
#[derive(Clone, Copy)]
pub struct Quoted {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub protocol: u8,
    /// TCP, UDP: the source port; ICMP echo: the type.
    pub src_port_or_type: u16,
    /// TCP, UDP: the destination port; ICMP echo: the identifier.
    pub dst_port_or_id: u16,
}

const VLAN_TAG_LEN: usize = 4;
const VLAN_ID_MASK: u16 = 0x0fff;

/// Fragment offset bits of the IPv4 flags/fragment field.
const FRAG_OFFSET_MASK: u16 = 0x1fff;
/// The longest IPv6 extension header: its length byte counts 8-byte units beyond the first 8.
const MAX_EXTENSION_LEN: usize = (255 + 1) * 8;
/// Where the deepest read of any frame can start: after Ethernet, the VLAN tags, an IPv6
/// header and the longest chain of extension headers walked, the 8-byte ICMPv6 header and
/// the IP header an ICMP error quotes (IPv4: at most 60 bytes).
const DEEPEST_READ: usize = EthHdr::LEN
    + MAX_VLAN_TAGS * VLAN_TAG_LEN
    + Ipv6Hdr::LEN
    + MAX_IPV6_EXTENSIONS * MAX_EXTENSION_LEN
    + 8
    + 60;
/// Offsets are checked against this only so that the verifier sees them bounded (a packet
/// pointer's variable offset must stay below 64 KiB). No parse reaches it: it lies beyond
/// `DEEPEST_READ`, so the limits that decide are the documented ones (tags, extension
/// headers), never the offset of a header.
const MAX_OFFSET: usize = 1 << 15;
const _: () = assert!(DEEPEST_READ < MAX_OFFSET && MAX_EXTENSION_LEN < MAX_OFFSET);

#[inline(always)]
fn ptr_at<T, C: Wire>(ctx: &C, offset: usize) -> Result<*const T, Malformed> {
    let start = ctx.data();
    if offset > MAX_OFFSET || start + offset + mem::size_of::<T>() > ctx.data_end() {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

/// Reads `T` at `offset`; `T` is plain bytes, so any value is valid.
#[inline(always)]
fn read<T: Copy, C: Wire>(ctx: &C, offset: usize) -> Result<T, Malformed> {
    // SAFETY: ptr_at checked that the bytes lie inside the frame; read_unaligned copes with
    // any alignment.
    ptr_at::<T, C>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// Does the frame hold at least `len` bytes from `offset`?
#[inline(always)]
fn has<C: Wire>(ctx: &C, offset: usize, len: usize) -> bool {
    offset <= MAX_OFFSET && len <= MAX_OFFSET && ctx.data() + offset + len <= ctx.data_end()
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

#[inline(always)]
pub fn headers<C: Wire>(ctx: &C) -> Result<Frame, Malformed> {
    let eth: EthHdr = read(ctx, 0)?;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut offset = EthHdr::LEN;
    let mut vlan = 0;
    for tag in 0..=MAX_VLAN_TAGS {
        if ether_type != ethertype::VLAN && ether_type != ethertype::QINQ {
            break;
        }
        if tag == MAX_VLAN_TAGS {
            return Err(Malformed);
        }
        let tci: [u8; 4] = read(ctx, offset)?;
        if tag == 0 {
            vlan = be16([tci[0], tci[1]]) & VLAN_ID_MASK;
        }
        ether_type = be16([tci[2], tci[3]]);
        offset += VLAN_TAG_LEN;
    }
    match ether_type {
        ethertype::IPV4 => ipv4(ctx, offset, vlan).map(Frame::Ip),
        ethertype::IPV6 => ipv6(ctx, offset, vlan).map(Frame::Ip),
        _ => Ok(Frame::NonIp),
    }
}

#[inline(always)]
fn ipv4<C: Wire>(ctx: &C, offset: usize, vlan: u16) -> Result<Packet, Malformed> {
    let ip: Ipv4Hdr = read(ctx, offset)?;
    let header_len = usize::from(ip.ihl()); // already in bytes
    if ip.version() != 4
        || header_len < Ipv4Hdr::LEN
        || usize::from(be16(ip.tot_len)) < header_len
        || !has(ctx, offset, header_len)
    {
        return Err(Malformed);
    }
    let first_fragment = be16(ip.frags) & FRAG_OFFSET_MASK == 0;
    let mut packet = Packet {
        vlan,
        family: family::IPV4,
        src: [u32::from_ne_bytes(ip.src_addr), 0, 0, 0],
        dst: [u32::from_ne_bytes(ip.dst_addr), 0, 0, 0],
        protocol: ip.proto,
        l4: L4::Fragment,
        src_port_or_type: 0,
        dst_port_or_code: 0,
        tcp_flags: 0,
        icmp_id: 0,
        l4_offset: 0,
    };
    if first_fragment {
        upper_layer(ctx, offset + header_len, &mut packet)?;
    }
    Ok(packet)
}

#[inline(always)]
fn ipv6<C: Wire>(ctx: &C, offset: usize, vlan: u16) -> Result<Packet, Malformed> {
    let ip: Ipv6Hdr = read(ctx, offset)?;
    if ip.version() != 6 {
        return Err(Malformed);
    }
    let words = |addr: [u8; 16]| {
        let mut out = [0u32; 4];
        for (i, word) in out.iter_mut().enumerate() {
            *word = u32::from_ne_bytes([
                addr[4 * i],
                addr[4 * i + 1],
                addr[4 * i + 2],
                addr[4 * i + 3],
            ]);
        }
        out
    };
    let mut packet = Packet {
        vlan,
        family: family::IPV6,
        src: words(ip.src_addr),
        dst: words(ip.dst_addr),
        protocol: ip.next_hdr,
        l4: L4::Fragment,
        src_port_or_type: 0,
        dst_port_or_code: 0,
        tcp_flags: 0,
        icmp_id: 0,
        l4_offset: 0,
    };
    let mut next = ip.next_hdr;
    let mut offset = offset + Ipv6Hdr::LEN;
    let mut first_fragment = true;
    for _ in 0..=MAX_IPV6_EXTENSIONS {
        match next {
            protocol::IPV6_HOPOPTS | protocol::IPV6_ROUTING | protocol::IPV6_DSTOPTS => {
                // Next header, then the length in 8-byte units, not counting the first 8.
                let head: [u8; 2] = read(ctx, offset)?;
                let len = (usize::from(head[1]) + 1) * 8;
                if !has(ctx, offset, len) {
                    return Err(Malformed);
                }
                next = head[0];
                offset += len;
            }
            protocol::IPV6_FRAGMENT => {
                let fragment: [u8; 8] = read(ctx, offset)?;
                first_fragment &= be16([fragment[2], fragment[3]]) >> 3 == 0;
                next = fragment[0];
                offset += 8;
            }
            upper => {
                packet.protocol = upper;
                if first_fragment {
                    upper_layer(ctx, offset, &mut packet)?;
                }
                return Ok(packet);
            }
        }
    }
    Err(Malformed)
}

/// Reads the ports or ICMP type and code at `offset`; a header cut short is malformed.
#[inline(always)]
fn upper_layer<C: Wire>(ctx: &C, offset: usize, packet: &mut Packet) -> Result<(), Malformed> {
    packet.l4_offset = offset as u16;
    match packet.protocol {
        protocol::TCP => {
            // Ports, sequence, acknowledgement, the data offset in 32-bit words, the flags.
            let head: [u8; 14] = read(ctx, offset)?;
            let header_len = usize::from(head[12] >> 4) * 4;
            if header_len < 20 || !has(ctx, offset, header_len) {
                return Err(Malformed);
            }
            ports(packet, head[0], head[1], head[2], head[3]);
            packet.tcp_flags = head[13];
        }
        protocol::UDP => {
            let head: [u8; 8] = read(ctx, offset)?;
            ports(packet, head[0], head[1], head[2], head[3]);
        }
        protocol::SCTP => {
            let head: [u8; 12] = read(ctx, offset)?;
            ports(packet, head[0], head[1], head[2], head[3]);
        }
        protocol::ICMP | protocol::ICMPV6 => {
            let head: [u8; 8] = read(ctx, offset)?;
            packet.l4 = L4::Icmp;
            packet.src_port_or_type = u16::from(head[0]);
            packet.dst_port_or_code = u16::from(head[1]);
            packet.icmp_id = be16([head[4], head[5]]);
        }
        _ => packet.l4 = L4::Other,
    }
    Ok(())
}

#[inline(always)]
fn ports(packet: &mut Packet, s0: u8, s1: u8, d0: u8, d1: u8) {
    packet.l4 = L4::Ports;
    packet.src_port_or_type = be16([s0, s1]);
    packet.dst_port_or_code = be16([d0, d1]);
}

/// The packet an ICMP error quotes (after the 8-byte ICMP header): its IP header, then the
/// first bytes of its TCP/UDP header or ICMP echo. IPv6: only a quoted packet without
/// extension headers. `None` when the quote is too short or of another protocol.
#[inline(always)]
pub fn quoted<C: Wire>(ctx: &C, packet: &Packet) -> Option<Quoted> {
    let offset = usize::from(packet.l4_offset) + 8;
    let (src, dst, protocol, inner) = if packet.family == family::IPV4 {
        let ip: Ipv4Hdr = read(ctx, offset).ok()?;
        let header_len = usize::from(ip.ihl());
        if ip.version() != 4 || header_len < Ipv4Hdr::LEN {
            return None;
        }
        (
            [u32::from_ne_bytes(ip.src_addr), 0, 0, 0],
            [u32::from_ne_bytes(ip.dst_addr), 0, 0, 0],
            ip.proto,
            offset + header_len,
        )
    } else {
        let ip: Ipv6Hdr = read(ctx, offset).ok()?;
        if ip.version() != 6 {
            return None;
        }
        let words = |addr: [u8; 16]| {
            let mut out = [0u32; 4];
            for (i, word) in out.iter_mut().enumerate() {
                *word = u32::from_ne_bytes([
                    addr[4 * i],
                    addr[4 * i + 1],
                    addr[4 * i + 2],
                    addr[4 * i + 3],
                ]);
            }
            out
        };
        (
            words(ip.src_addr),
            words(ip.dst_addr),
            ip.next_hdr,
            offset + Ipv6Hdr::LEN,
        )
    };
    let head: [u8; 8] = read(ctx, inner).ok()?;
    let (src_port_or_type, dst_port_or_id) = match protocol {
        protocol::TCP | protocol::UDP => (be16([head[0], head[1]]), be16([head[2], head[3]])),
        // An echo request or reply: its type, and its identifier.
        protocol::ICMP | protocol::ICMPV6 => (u16::from(head[0]), be16([head[4], head[5]])),
        _ => return None,
    };
    Some(Quoted {
        src,
        dst,
        protocol,
        src_port_or_type,
        dst_port_or_id,
    })
}
