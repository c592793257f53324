//! Header parsing: Ethernet, IPv4 and the first bytes of TCP/UDP/ICMP. Every read goes through
//! `ptr_at`, the one place that proves to the verifier that a header lies inside the frame.

use core::mem;

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
    udp::UdpHdr,
};

/// The frame ends before a header it announces, or a header field is impossible.
pub struct Malformed;

pub enum Frame {
    NonIp,
    Ipv4(Packet),
}

/// The fields rules can match on.
pub struct Packet {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub protocol: u8,
    /// `None` for protocols without ports and for non-first fragments.
    pub dst_port: Option<u16>,
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Fragment offset bits of the IPv4 flags/fragment field.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Malformed> {
    let start = ctx.data();
    if start + offset + mem::size_of::<T>() > ctx.data_end() {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn headers(ctx: &XdpContext) -> Result<Frame, Malformed> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return Ok(Frame::NonIp);
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.ihl()); // already in bytes
    if header_len < Ipv4Hdr::LEN {
        return Err(Malformed);
    }
    let first_fragment = u16::from_be_bytes(ip.frags) & FRAG_OFFSET_MASK == 0;
    let dst_port = match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP if first_fragment => {
            // TCP and UDP both start with the source and destination ports.
            let ports: *const UdpHdr = ptr_at(ctx, EthHdr::LEN + header_len)?;
            // SAFETY: as above.
            Some(u16::from_be_bytes(unsafe { (*ports).dst }))
        }
        _ => None,
    };
    Ok(Frame::Ipv4(Packet {
        src_addr: u32::from_ne_bytes(ip.src_addr),
        dst_addr: u32::from_ne_bytes(ip.dst_addr),
        protocol: ip.proto,
        dst_port,
    }))
}
