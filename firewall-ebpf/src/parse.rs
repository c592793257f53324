//! Header parsing: Ethernet, up to two VLAN tags, IPv4 or IPv6 (walking extension headers),
//! then the fields rules match in TCP, UDP, SCTP and ICMP. The rules for what is malformed are
//! the reference classifier's (`firewall-rules/src/reference.rs`), step for step. Every read
//! goes through `ptr_at`, the one place that proves to the verifier that bytes lie in the frame.

use core::{mem::MaybeUninit, ptr};

use firewall_common::{MAX_IPV6_EXTENSIONS, MAX_VLAN_TAGS, ethertype, family, protocol};

use crate::context::Wire;

/// The frame ends before a header it announces, or a header field is impossible.
pub struct Malformed;

pub enum Frame<'a> {
    NonIp,
    /// The packet, written where the caller asked (`headers`).
    Ip(&'a Packet),
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
    /// 1 when the packet is TCP with its header (so `tcp_flags` was read), else 0.
    pub tcp_header: u8,
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

const ETH_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const VLAN_ID_MASK: u16 = 0x0fff;

/// Fragment offset bits of the IPv4 flags/fragment field.
const FRAG_OFFSET_MASK: u16 = 0x1fff;
/// The longest IPv6 extension header: its length byte counts 8-byte units beyond the first 8.
const MAX_EXTENSION_LEN: usize = (255 + 1) * 8;
/// Where the deepest read of any frame can start: after Ethernet, the VLAN tags, an IPv6
/// header and the longest chain of extension headers walked, the 8-byte ICMPv6 header and
/// the IP header an ICMP error quotes (IPv4: at most 60 bytes).
const DEEPEST_READ: usize = ETH_LEN
    + MAX_VLAN_TAGS * VLAN_TAG_LEN
    + IPV6_LEN
    + MAX_IPV6_EXTENSIONS * MAX_EXTENSION_LEN
    + 8
    + 60;
/// Offsets are checked against this only so that the verifier sees them bounded (a packet
/// pointer's variable offset must stay below 64 KiB). No parse reaches it: it lies beyond
/// `DEEPEST_READ`, so the limits that decide are the documented ones (tags, extension
/// headers), never the offset of a header.
const MAX_OFFSET: usize = 1 << 15;
const _: () = assert!(DEEPEST_READ < MAX_OFFSET && MAX_EXTENSION_LEN < MAX_OFFSET);

/// A header of at least `len` bytes at `offset`: the start of it, proven to the verifier to
/// lie in the frame with all `len` bytes (one bounds check for all the header's fields).
#[inline(always)]
fn header<C: Wire>(ctx: &C, offset: usize, len: usize) -> Result<Header, Malformed> {
    let start = ctx.data();
    if offset > MAX_OFFSET || start + offset + len > ctx.data_end() {
        return Err(Malformed);
    }
    Ok(Header(start + offset))
}

/// The start of a header that `header` checked; its readers take offsets within that length.
#[derive(Clone, Copy)]
struct Header(usize);

impl Header {
    #[inline(always)]
    fn u8(self, at: usize) -> u8 {
        // SAFETY: `header` checked that the bytes lie in the frame.
        unsafe { *((self.0 + at) as *const u8) }
    }

    /// A big-endian 16-bit field.
    #[inline(always)]
    fn be16(self, at: usize) -> u16 {
        u16::from_be(self.word(at))
    }

    /// `T` (u16 or u32) as it lies in the frame. One load of the word's width: packet headers
    /// after the 14-byte Ethernet header lie at 2-byte offsets, and an unaligned read would make
    /// LLVM's BPF backend split it into byte loads (216 of them, half the parse). The verifier
    /// and the x86 JIT take misaligned packet loads as they are
    /// (CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS), as every C XDP program's `iph->saddr` relies on.
    #[inline(always)]
    fn word<T: Copy>(self, at: usize) -> T {
        // SAFETY: `header` checked that the bytes lie in the frame; see above for alignment.
        unsafe { ((self.0 + at) as *const T).read() }
    }

    /// An IPv6 address at `at`, as `Packet` holds it.
    #[inline(always)]
    fn addr6(self, at: usize) -> [u32; 4] {
        [
            self.word(at),
            self.word(at + 4),
            self.word(at + 8),
            self.word(at + 12),
        ]
    }
}

/// Does the frame hold at least `len` bytes from `offset`?
#[inline(always)]
fn has<C: Wire>(ctx: &C, offset: usize, len: usize) -> bool {
    offset <= MAX_OFFSET && len <= MAX_OFFSET && ctx.data() + offset + len <= ctx.data_end()
}

/// Parses the frame; an IP packet's fields go into `packet`, each written once where its path
/// reads it. Volatile stores: the IPv4 and IPv6 paths (and each kind of L4 header) would
/// otherwise be merged by LLVM into one copy of every field at their meeting point, each
/// spilled and reloaded on the way (9% of a rule set's miss, profiled).
#[inline(always)]
pub fn headers<'a, C: Wire>(
    ctx: &C,
    packet: &'a mut MaybeUninit<Packet>,
) -> Result<Frame<'a>, Malformed> {
    let mut ether_type = header(ctx, 0, ETH_LEN)?.be16(12);
    let mut offset = ETH_LEN;
    let mut vlan = 0;
    for tag in 0..=MAX_VLAN_TAGS {
        if ether_type != ethertype::VLAN && ether_type != ethertype::QINQ {
            break;
        }
        if tag == MAX_VLAN_TAGS {
            return Err(Malformed);
        }
        let tci = header(ctx, offset, VLAN_TAG_LEN)?;
        if tag == 0 {
            vlan = tci.be16(0) & VLAN_ID_MASK;
        }
        ether_type = tci.be16(2);
        offset += VLAN_TAG_LEN;
    }
    let out = packet.as_mut_ptr();
    match ether_type {
        ethertype::IPV4 => ipv4(ctx, offset, vlan, out)?,
        ethertype::IPV6 => ipv6(ctx, offset, vlan, out)?,
        _ => return Ok(Frame::NonIp),
    }
    // SAFETY: `ipv4` and `ipv6` wrote every field of an IP packet.
    Ok(Frame::Ip(unsafe { packet.assume_init_ref() }))
}

/// `(*out).field = value`, as a volatile store (see `headers`).
macro_rules! put {
    ($out:expr, $field:ident, $value:expr) => {
        // SAFETY: `$out` is the caller's `MaybeUninit<Packet>`, writable; a field's place is
        // aligned for it.
        unsafe { ptr::addr_of_mut!((*$out).$field).write_volatile($value) }
    };
}

#[inline(always)]
fn ipv4<C: Wire>(ctx: &C, offset: usize, vlan: u16, out: *mut Packet) -> Result<(), Malformed> {
    let ip = header(ctx, offset, IPV4_LEN)?;
    let version_ihl = ip.u8(0);
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4
        || header_len < IPV4_LEN
        || usize::from(ip.be16(2)) < header_len
        || !has(ctx, offset, header_len)
    {
        return Err(Malformed);
    }
    let protocol = ip.u8(9);
    put!(out, vlan, vlan);
    put!(out, family, family::IPV4);
    put!(out, src, [ip.word(12), 0, 0, 0]);
    put!(out, dst, [ip.word(16), 0, 0, 0]);
    put!(out, protocol, protocol);
    if ip.be16(6) & FRAG_OFFSET_MASK == 0 {
        upper_layer(ctx, offset + header_len, protocol, out)
    } else {
        fragment(out);
        Ok(())
    }
}

#[inline(always)]
fn ipv6<C: Wire>(ctx: &C, offset: usize, vlan: u16, out: *mut Packet) -> Result<(), Malformed> {
    let ip = header(ctx, offset, IPV6_LEN)?;
    if ip.u8(0) >> 4 != 6 {
        return Err(Malformed);
    }
    put!(out, vlan, vlan);
    put!(out, family, family::IPV6);
    put!(out, src, ip.addr6(8));
    put!(out, dst, ip.addr6(24));
    let mut next = ip.u8(6);
    let mut offset = offset + IPV6_LEN;
    let mut first_fragment = true;
    for _ in 0..=MAX_IPV6_EXTENSIONS {
        match next {
            protocol::IPV6_HOPOPTS | protocol::IPV6_ROUTING | protocol::IPV6_DSTOPTS => {
                // Next header, then the length in 8-byte units, not counting the first 8.
                let head = header(ctx, offset, 2)?;
                let len = (usize::from(head.u8(1)) + 1) * 8;
                if !has(ctx, offset, len) {
                    return Err(Malformed);
                }
                next = head.u8(0);
                offset += len;
            }
            protocol::IPV6_FRAGMENT => {
                let fragment = header(ctx, offset, 8)?;
                first_fragment &= fragment.be16(2) >> 3 == 0;
                next = fragment.u8(0);
                offset += 8;
            }
            upper => {
                put!(out, protocol, upper);
                if first_fragment {
                    return upper_layer(ctx, offset, upper, out);
                }
                fragment(out);
                return Ok(());
            }
        }
    }
    Err(Malformed)
}

/// Reads the ports or ICMP type and code of the `protocol` header at `offset`; a header cut
/// short is malformed.
#[inline(always)]
fn upper_layer<C: Wire>(
    ctx: &C,
    offset: usize,
    protocol: u8,
    out: *mut Packet,
) -> Result<(), Malformed> {
    match protocol {
        protocol::TCP => {
            // Ports, sequence, acknowledgement, the data offset in 32-bit words, the flags.
            let tcp = header(ctx, offset, 14)?;
            let header_len = usize::from(tcp.u8(12) >> 4) * 4;
            if header_len < 20 || !has(ctx, offset, header_len) {
                return Err(Malformed);
            }
            put!(out, tcp_flags, tcp.u8(13));
            put!(out, tcp_header, 1);
            ports(out, offset, tcp);
            return Ok(());
        }
        protocol::UDP => ports(out, offset, header(ctx, offset, 8)?),
        protocol::SCTP => ports(out, offset, header(ctx, offset, 12)?),
        protocol::ICMP | protocol::ICMPV6 => {
            let icmp = header(ctx, offset, 8)?;
            let type_code = (u16::from(icmp.u8(0)), u16::from(icmp.u8(1)));
            put_l4(out, offset, L4::Icmp, type_code, icmp.be16(4));
        }
        _ => put_l4(out, offset, L4::Other, (0, 0), 0),
    }
    no_tcp(out);
    Ok(())
}

/// TCP, UDP or SCTP ports (the TCP fields are the caller's).
#[inline(always)]
fn ports(out: *mut Packet, offset: usize, l4: Header) {
    put_l4(out, offset, L4::Ports, (l4.be16(0), l4.be16(2)), 0);
}

/// What follows IP: its kind, the ports (or ICMP type and code), the echo identifier, and
/// where the header starts. The TCP fields are the caller's.
#[inline(always)]
fn put_l4(out: *mut Packet, offset: usize, l4: L4, (a, b): (u16, u16), icmp_id: u16) {
    put!(out, l4, l4);
    put!(out, src_port_or_type, a);
    put!(out, dst_port_or_code, b);
    put!(out, icmp_id, icmp_id);
    put!(out, l4_offset, offset as u16);
}

/// Not TCP (or a fragment of it): no flags read.
#[inline(always)]
fn no_tcp(out: *mut Packet) {
    put!(out, tcp_flags, 0);
    put!(out, tcp_header, 0);
}

/// A non-first fragment: nothing beyond IP.
#[inline(always)]
fn fragment(out: *mut Packet) {
    put_l4(out, 0, L4::Fragment, (0, 0), 0);
    no_tcp(out);
}

/// The packet an ICMP error quotes (after the 8-byte ICMP header): its IP header, then the
/// first bytes of its TCP/UDP header or ICMP echo. IPv6: only a quoted packet without
/// extension headers. `None` when the quote is too short or of another protocol.
#[inline(always)]
pub fn quoted<C: Wire>(ctx: &C, packet: &Packet) -> Option<Quoted> {
    let offset = usize::from(packet.l4_offset) + 8;
    let (src, dst, protocol, inner) = if packet.family == family::IPV4 {
        let ip = header(ctx, offset, IPV4_LEN).ok()?;
        let version_ihl = ip.u8(0);
        let header_len = usize::from(version_ihl & 0x0f) * 4;
        if version_ihl >> 4 != 4 || header_len < IPV4_LEN {
            return None;
        }
        (
            [ip.word(12), 0, 0, 0],
            [ip.word(16), 0, 0, 0],
            ip.u8(9),
            offset + header_len,
        )
    } else {
        let ip = header(ctx, offset, IPV6_LEN).ok()?;
        if ip.u8(0) >> 4 != 6 {
            return None;
        }
        (ip.addr6(8), ip.addr6(24), ip.u8(6), offset + IPV6_LEN)
    };
    let head = header(ctx, inner, 8).ok()?;
    let (src_port_or_type, dst_port_or_id) = match protocol {
        protocol::TCP | protocol::UDP => (head.be16(0), head.be16(2)),
        // An echo request or reply: its type, and its identifier.
        protocol::ICMP | protocol::ICMPV6 => (u16::from(head.u8(0)), head.be16(4)),
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
