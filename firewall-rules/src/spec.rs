//! `explain --packet SPEC`: a packet described in one line, built as real bytes so that it
//! goes through the same `reference::classify` as any captured frame.
//!
//! ```text
//! SPEC  = PROTO SRC[:PORT] -> DST[:PORT] [type N] [code N] [flags F,F] [vlan N] [frag]
//! PROTO = tcp | udp | sctp | icmp | icmpv6 | 0-255
//! ```
//! IPv6 addresses go in brackets when a port follows (`[2001:2::1]:443`).

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, TcpHeader};
use firewall_common::ethertype;

use crate::ruleset::{TcpFlags, protocol};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad packet spec `{spec}`: {problem}. Expected PROTO SRC[:PORT] -> DST[:PORT] [type N] [code N] [flags SYN,ACK] [vlan N] [frag]"
)]
pub struct SpecError {
    pub spec: String,
    pub problem: String,
}

/// A packet as `explain` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSpec {
    pub protocol: u8,
    pub src: IpAddr,
    pub src_port: Option<u16>,
    pub dst: IpAddr,
    pub dst_port: Option<u16>,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub tcp_flags: Vec<String>,
    pub vlan: Option<u16>,
    /// A non-first fragment.
    pub fragment: bool,
}

const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Offset of a non-first fragment, in 8-byte units.
const FRAGMENT_OFFSET: u16 = 185;
const PAYLOAD: [u8; 8] = [0; 8];

impl PacketSpec {
    pub fn parse(spec: &str) -> Result<PacketSpec, SpecError> {
        let fail = |problem: String| SpecError {
            spec: spec.to_string(),
            problem,
        };
        let words: Vec<&str> = spec.split_whitespace().collect();
        let [proto, src, arrow, dst, options @ ..] = words.as_slice() else {
            return Err(fail("too short".into()));
        };
        if *arrow != "->" {
            return Err(fail(format!(
                "expected `->` after the source, found `{arrow}`"
            )));
        }
        let protocol = protocol::number(proto)
            .or_else(|| proto.parse().ok())
            .ok_or_else(|| fail(format!("unknown protocol `{proto}`")))?;
        let (src, src_port) = endpoint(src).map_err(&fail)?;
        let (dst, dst_port) = endpoint(dst).map_err(&fail)?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(fail(
                "source and destination are of different IP versions".into(),
            ));
        }
        let has_ports = protocol::has_ports(protocol);
        if !has_ports && (src_port.is_some() || dst_port.is_some()) {
            return Err(fail(format!("{proto} has no ports")));
        }
        let mut packet = PacketSpec {
            protocol,
            src,
            src_port: src_port.or(has_ports.then_some(40000)),
            dst,
            dst_port: dst_port.or(has_ports.then_some(80)),
            icmp_type: 8,
            icmp_code: 0,
            tcp_flags: Vec::new(),
            vlan: None,
            fragment: false,
        };
        packet.options(options).map_err(fail)?;
        if protocol == protocol::ICMPV6 && packet.icmp_type == 8 && !options.contains(&"type") {
            packet.icmp_type = 128; // echo request
        }
        Ok(packet)
    }

    fn options(&mut self, mut words: &[&str]) -> Result<(), String> {
        while let [word, rest @ ..] = words {
            let mut value = |name: &str| -> Result<&str, String> {
                let (value, rest) = rest
                    .split_first()
                    .ok_or(format!("`{name}` needs a value"))?;
                words = rest;
                Ok(value)
            };
            match *word {
                "type" | "code" if !protocol::is_icmp(self.protocol) => {
                    return Err(format!("`{word}` is for icmp and icmpv6 packets"));
                }
                "type" => self.icmp_type = number(value("type")?, 255)? as u8,
                "code" => self.icmp_code = number(value("code")?, 255)? as u8,
                "flags" if self.protocol != protocol::TCP => {
                    return Err("`flags` is for tcp packets".into());
                }
                "flags" => {
                    let flags = value("flags")?;
                    self.tcp_flags = flags.split(',').map(str::to_ascii_uppercase).collect();
                    if let Some(bad) = self.tcp_flags.iter().find(|f| TcpFlags::bit(f).is_none()) {
                        return Err(format!("unknown TCP flag `{bad}`"));
                    }
                }
                "vlan" => self.vlan = Some(number(value("vlan")?, 4094)? as u16),
                "frag" => {
                    self.fragment = true;
                    words = rest;
                }
                other => return Err(format!("unknown option `{other}`")),
            }
        }
        Ok(())
    }

    /// The packet as an Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        self.frame_with_payload(&PAYLOAD)
    }

    /// The packet as an Ethernet frame with `payload` after the L4 header (e.g. the quote of
    /// an ICMP error).
    pub fn frame_with_payload(&self, payload: &[u8]) -> Vec<u8> {
        let mut l4 = self.l4_bytes(payload);
        let mut ip = self.ip_bytes(l4.len());
        let mut frame = Vec::with_capacity(22 + ip.len() + l4.len());
        frame.extend_from_slice(&MAC_DST);
        frame.extend_from_slice(&MAC_SRC);
        if let Some(vlan) = self.vlan {
            frame.extend_from_slice(&ethertype::VLAN.to_be_bytes());
            frame.extend_from_slice(&vlan.to_be_bytes());
        }
        let ether_type = if self.src.is_ipv4() {
            ethertype::IPV4
        } else {
            ethertype::IPV6
        };
        frame.extend_from_slice(&ether_type.to_be_bytes());
        frame.append(&mut ip);
        frame.append(&mut l4);
        frame
    }

    /// The bytes after the IP header(s): the L4 header and a small payload, or for a non-first
    /// fragment just payload. Checksums are left zero: classification never reads them.
    fn l4_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = (self.src_port.unwrap_or(0), self.dst_port.unwrap_or(0));
        let mut out = match self.protocol {
            _ if self.fragment => Vec::new(),
            protocol::TCP => {
                let mut tcp = TcpHeader::new(src, dst, 1, 1024).to_bytes().to_vec();
                tcp[TCP_FLAGS_BYTE] = self
                    .tcp_flags
                    .iter()
                    .filter_map(|f| TcpFlags::bit(f))
                    .fold(0, |byte, bit| byte | bit);
                tcp
            }
            protocol::UDP => {
                let len = (8 + payload.len()) as u16;
                [
                    src.to_be_bytes(),
                    dst.to_be_bytes(),
                    len.to_be_bytes(),
                    [0; 2],
                ]
                .concat()
            }
            protocol::SCTP => [&src.to_be_bytes()[..], &dst.to_be_bytes(), &[0; 8]].concat(),
            protocol::ICMP | protocol::ICMPV6 => {
                vec![self.icmp_type, self.icmp_code, 0, 0, 0, 0, 0, 0]
            }
            _ => Vec::new(),
        };
        out.extend_from_slice(payload);
        out
    }

    fn ip_bytes(&self, payload_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let number = IpNumber(self.protocol);
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut header =
                    Ipv4Header::new(payload_len as u16, 64, number, src.octets(), dst.octets())
                        .expect("payload fits");
                if self.fragment {
                    header.fragment_offset = fragment_offset();
                }
                header.header_checksum = header.calc_header_checksum();
                header
                    .write(&mut out)
                    .expect("writing to a Vec cannot fail");
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let fragment_len = if self.fragment {
                    Ipv6FragmentHeader::LEN
                } else {
                    0
                };
                let header = Ipv6Header {
                    payload_length: (payload_len + fragment_len) as u16,
                    next_header: if self.fragment {
                        IpNumber::IPV6_FRAGMENTATION_HEADER
                    } else {
                        number
                    },
                    hop_limit: 64,
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Ipv6Header::default()
                };
                header
                    .write(&mut out)
                    .expect("writing to a Vec cannot fail");
                if self.fragment {
                    let fragment = Ipv6FragmentHeader::new(number, fragment_offset(), false, 1);
                    out.extend_from_slice(&fragment.to_bytes());
                }
            }
            _ => unreachable!("parse checks that both addresses are of one version"),
        }
        out
    }
}

fn fragment_offset() -> IpFragOffset {
    IpFragOffset::try_new(FRAGMENT_OFFSET).expect("below 2^13")
}

/// Where the flags lie in a TCP header (the header `TcpHeader::new` writes has none set).
const TCP_FLAGS_BYTE: usize = 13;

fn number(text: &str, max: u32) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or(format!("`{text}` is not a number from 0 to {max}"))
}

/// `198.18.0.1`, `198.18.0.1:80`, `2001:2::1`, `[2001:2::1]:443`.
fn endpoint(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Some(addr) = crate::address::parse_addr(text) {
        return Ok((addr, None));
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Ok((socket.ip(), Some(socket.port())));
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    crate::address::parse_addr(bare)
        .map(|addr| (addr, None))
        .ok_or_else(|| format!("`{text}` is not an address or address:port"))
}
