//! Properties that must hold for any input: the loader and the classifier never panic, and
//! `explain` builds exactly the packet its SPEC describes.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use firewall_rules::{
    RuleSet, TcpFlags,
    reference::{self, Frame, L4},
    spec::PacketSpec,
};
use proptest::prelude::*;

const RULES: &str = "version: 1
sets:
  mgmt: [198.18.0.10, \"2001:2::10\"]
interfaces:
  lan0:
    default: drop
    rules:
      - { id: a, action: pass, protocol: tcp, src: $mgmt, dst_port: [22, 80-90] }
      - { id: b, action: pass, protocol: icmpv6, icmp_type: 128 }
      - { id: c, action: pass, vlan: 7, protocol: udp }
      - { id: d, action: drop, family: ipv6 }
";

/// Pieces of rule files, so that generated YAML reaches validation and not only the parser.
fn yaml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("version: 1\n".to_string()),
        Just("interfaces:\n  lan0:\n    default: pass\n    rules:\n".to_string()),
        Just("sets:\n  s: [80, 198.18.0.1]\n".to_string()),
        "(src|dst|dst_port|src_port|protocol|vlan|icmp_type|tcp_flags|family|id|action|non_ip|default): [a-z0-9$:./\\[\\], !\"-]{0,20}\n",
        "      - \\{ id: [a-z]{1,3}, action: (pass|drop|x), [a-z_]{2,9}: [0-9a-z.:/$\\[\\]-]{0,16} \\}\n",
        "[ -~]{0,30}\n",
    ]
}

fn v4() -> impl Strategy<Value = IpAddr> {
    (0u8..2, any::<u8>(), any::<u8>())
        .prop_map(|(b, c, d)| IpAddr::V4(Ipv4Addr::new(198, 18 + b, c, d)))
}

fn v6() -> impl Strategy<Value = IpAddr> {
    (any::<u16>(), any::<u16>())
        .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, a, 0, 0, 0, b)))
}

/// A random SPEC and the fields its packet must have.
type Spec = (String, u8, IpAddr, IpAddr, L4, Option<u16>, Option<u8>);

fn spec() -> impl Strategy<Value = Spec> {
    let protocol = prop_oneof![Just(6u8), Just(17), Just(132), Just(1), Just(58), Just(47)];
    let addrs = prop_oneof![(v4(), v4()), (v6(), v6())];
    (
        protocol,
        addrs,
        1u16..,
        1u16..,
        any::<u8>(),
        any::<u8>(),
        proptest::option::of(1u16..4095),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(
            |(protocol, (src, dst), sport, dport, icmp_type, code, vlan, frag, flags)| {
                let protocol = match (protocol, src) {
                    (1 | 58, IpAddr::V4(_)) => 1,
                    (1 | 58, IpAddr::V6(_)) => 58,
                    (p, _) => p,
                };
                let show = |addr: IpAddr, port: Option<u16>| match (addr, port) {
                    (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
                    (a, Some(p)) => format!("{a}:{p}"),
                    (a, None) => a.to_string(),
                };
                let ports = matches!(protocol, 6 | 17 | 132);
                let name = match protocol {
                    6 => "tcp".to_string(),
                    17 => "udp".to_string(),
                    132 => "sctp".to_string(),
                    1 => "icmp".to_string(),
                    58 => "icmpv6".to_string(),
                    n => n.to_string(),
                };
                let mut text = format!(
                    "{name} {} -> {}",
                    show(src, ports.then_some(sport)),
                    show(dst, ports.then_some(dport))
                );
                let l4 = if frag {
                    L4::Fragment
                } else if ports {
                    L4::Ports {
                        src: sport,
                        dst: dport,
                    }
                } else if matches!(protocol, 1 | 58) {
                    text.push_str(&format!(" type {icmp_type} code {code}"));
                    L4::Icmp { icmp_type, code }
                } else {
                    L4::Other
                };
                let tcp_flags = (protocol == 6 && !frag).then_some(flags);
                if protocol == 6 && flags != 0 {
                    let names: Vec<&str> = TcpFlags::NAMES
                        .iter()
                        .filter(|(_, bit)| flags & bit != 0)
                        .map(|(name, _)| *name)
                        .collect();
                    text.push_str(&format!(" flags {}", names.join(",")));
                }
                if let Some(vlan) = vlan {
                    text.push_str(&format!(" vlan {vlan}"));
                }
                if frag {
                    text.push_str(" frag");
                }
                (text, protocol, src, dst, l4, vlan, tcp_flags)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_never_panics_the_loader(text in "\\PC{0,300}") {
        let _ = RuleSet::parse(Path::new("fuzz.yaml"), &text);
    }

    #[test]
    fn rule_shaped_yaml_never_panics_the_loader(pieces in proptest::collection::vec(yaml_piece(), 0..12)) {
        let _ = RuleSet::parse(Path::new("fuzz.yaml"), &pieces.concat());
    }

    #[test]
    fn any_frame_never_panics_the_classifier(frame in proptest::collection::vec(any::<u8>(), 0..160)) {
        let rules = RuleSet::parse(Path::new("p.yaml"), RULES).unwrap();
        reference::classify(&rules, "lan0", &frame).unwrap();
    }

    #[test]
    fn damaged_real_frames_never_panic_the_classifier(
        (text, ..) in spec(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let rules = RuleSet::parse(Path::new("p.yaml"), RULES).unwrap();
        let mut frame = PacketSpec::parse(&text).unwrap().frame();
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        frame.truncate(cut.index(frame.len() + 1));
        reference::classify(&rules, "lan0", &frame).unwrap();
    }

    /// Ref. "`explain` of a SPEC equals `classify` of the bytes it builds": the bytes carry
    /// exactly the fields the SPEC names, so classify judges the packet the operator described.
    #[test]
    fn the_bytes_explain_builds_carry_the_spec((text, protocol, src, dst, l4, vlan, tcp_flags) in spec()) {
        let frame = PacketSpec::parse(&text).unwrap().frame();
        match reference::parse(&frame) {
            Frame::Ip(packet) => {
                prop_assert_eq!(packet.protocol, protocol, "{}", text);
                prop_assert_eq!(packet.src, src);
                prop_assert_eq!(packet.dst, dst);
                prop_assert_eq!(packet.l4, l4, "{}", text);
                prop_assert_eq!(packet.vlan, vlan);
                prop_assert_eq!(packet.tcp_flags, tcp_flags, "{}", text);
            }
            other => prop_assert!(false, "{}: parsed as {:?}", text, other),
        }
    }
}
