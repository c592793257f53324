//! `smf-firewall replay` on captures written here, pcap and pcapng, through the real binary:
//! exact counts by verdict and by rule, no disagreement, exit 0.

use std::{borrow::Cow, fs::File, path::Path, process::Command, time::Duration};

use firewall_rules::spec::PacketSpec;
use pcap_file::{
    DataLink,
    pcap::{PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};

use crate::smf_firewall;

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }
      - { id: ssh, action: pass, protocol: tcp, dst: 198.19.0.0/16, dst_port: 22 }
";

/// Three frames for no-discard, two for ssh, one ARP, one cut short, two for the default and
/// one runt that XDP never sees.
fn frames() -> Vec<Vec<u8>> {
    let spec = |s: &str| PacketSpec::parse(s).unwrap().frame();
    let mut frames: Vec<Vec<u8>> = (1..=3)
        .map(|i| spec(&format!("udp 198.18.0.{i}:5000 -> 198.19.0.1:9")))
        .collect();
    frames.push(spec("tcp 198.18.0.1:40000 -> 198.19.3.4:22"));
    frames.push(spec("tcp [2001:2::1]:40000 -> [2001:2::2]:22")); // outside ssh's dst: default
    frames.push(spec("tcp 198.18.0.2:40000 -> 198.19.3.5:22"));
    let mut arp = vec![0xff; 6];
    arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend([0; 28]);
    frames.push(arp);
    frames.push(spec("udp 198.18.0.1:5000 -> 198.19.0.1:9")[..14 + 20 + 4].to_vec());
    frames.push(spec("udp 198.18.0.1:5000 -> 198.19.0.1:53"));
    frames.push(vec![0; 10]);
    frames
}

const EXPECTED: &str = r#"{"frames":10,"skipped":1,"verdicts":{"drop":4,"pass":5},"rules":{"no-discard":3,"ssh":2},"default":2,"non_ip":1,"malformed":1,"disagreements":[]}"#;

fn replay(dir: &Path, capture: &Path, json: bool) -> (Option<i32>, String, String) {
    replay_rules(dir, capture, RULES, json)
}

fn replay_rules(
    dir: &Path,
    capture: &Path,
    rules: &str,
    json: bool,
) -> (Option<i32>, String, String) {
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let rules = dir.join("rules.yaml");
    let mut args = vec![
        "replay",
        rules.to_str().unwrap(),
        "--interface",
        "lan0",
        "--pcap",
        capture.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    let out = Command::new(smf_firewall()).args(&args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_pcap_replays_with_exact_counts_and_no_disagreement() {
    if !testbed::require_root("replay::pcap") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.pcap");
    let mut writer = PcapWriter::new(File::create(&capture).unwrap()).unwrap();
    for frame in frames() {
        writer
            .write_packet(&PcapPacket::new(Duration::ZERO, frame.len() as u32, &frame))
            .unwrap();
    }
    drop(writer);
    let (code, stdout, stderr) = replay(dir.path(), &capture, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), EXPECTED);
    let (code, stdout, _) = replay(dir.path(), &capture, false);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("the kernel and the reference agree on every frame"),
        "{stdout}"
    );
    assert!(stdout.contains("verdicts: drop 4, pass 5"), "{stdout}");
}

#[test]
fn a_pcapng_replays_the_same() {
    if !testbed::require_root("replay::pcapng") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&capture).unwrap()).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
    for frame in frames() {
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::ZERO,
                original_len: frame.len() as u32,
                data: Cow::Owned(frame),
                options: vec![],
            })
            .unwrap();
    }
    drop(writer);
    let (code, stdout, stderr) = replay(dir.path(), &capture, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), EXPECTED);
}

#[test]
fn a_capture_of_another_link_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("raw.pcap");
    let header = pcap_file::pcap::PcapHeader {
        datalink: DataLink::RAW,
        ..Default::default()
    };
    let writer =
        pcap_file::pcap::PcapWriter::with_header(File::create(&capture).unwrap(), header).unwrap();
    drop(writer);
    let (code, _, stderr) = replay(dir.path(), &capture, false);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("replay reads Ethernet captures only"),
        "{stderr}"
    );
}

/// Rate limits count the capture's time: ten frames at each of 0 s, 0.5 s and 2 s through
/// `over: 10/s, burst: 5` give 5 over the limit each time (the bucket refills 5 in half a
/// second, and no more than its burst in two), in the kernel and the reference alike.
#[test]
fn rate_limits_replay_on_the_captures_clock() {
    if !testbed::require_root("replay::limits") {
        return;
    }
    let rules = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: dns-cap, action: drop, protocol: udp, dst_port: 53, limit: { over: 10/s, burst: 5, per: src } }
";
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("limits.pcap");
    let mut writer = PcapWriter::new(File::create(&capture).unwrap()).unwrap();
    let frame = PacketSpec::parse("udp 198.18.0.1:5000 -> 198.19.0.1:53")
        .unwrap()
        .frame();
    let start = Duration::from_secs(1_700_000_000);
    for at in [0, 500, 2_000] {
        for _ in 0..10 {
            let time = start + Duration::from_millis(at);
            writer
                .write_packet(&PcapPacket::new(time, frame.len() as u32, &frame))
                .unwrap();
        }
    }
    drop(writer);
    let (code, stdout, stderr) = replay_rules(dir.path(), &capture, rules, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        r#"{"frames":30,"skipped":0,"verdicts":{"drop":15,"pass":15},"rules":{"dns-cap":15},"default":15,"non_ip":0,"malformed":0,"disagreements":[]}"#
    );
}
