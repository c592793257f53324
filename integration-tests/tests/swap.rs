//! A rule change is atomic: packets keep running through the program on one thread while
//! another flips between two rule sets many times; no packet is ever judged by a mix.
//!
//! Both sets drop every test frame with one UDP rule and pass what they do not match; around
//! it, each has 300 TCP decoys, before it in one set and after it in the other. So the entry
//! index that one set's tree leads a test frame to is a TCP decoy in the other set: a packet
//! that read one generation's trees with the other's entries (or a half-written generation)
//! would match nothing and pass. Every packet must be dropped, and the two drop rules'
//! counters must add up to the packets run.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use firewall_common::Verdict;
use firewall_dataplane::test_run;
use firewall_rules::{
    RuleSet,
    compile::{self, Compiled, RuleCounters},
    spec::PacketSpec,
};

use crate::common;

const FLIPS: usize = 150;
const REPEAT: u32 = 2_000;

const DECOYS: u16 = 300;

/// The drop rule, then the decoys (`first`), or the decoys, then the drop rule.
fn rule_set(drop_rule: &str, first: bool) -> String {
    let decoys: String = (0..DECOYS)
        .map(|i| {
            format!(
                "      - {{ id: decoy-{i}, action: pass, protocol: tcp, dst_port: {} }}\n",
                1 + i
            )
        })
        .collect();
    let drop_rule = format!("      - {drop_rule}\n");
    let rules = if first {
        drop_rule + &decoys
    } else {
        decoys + &drop_rule
    };
    format!("version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n{rules}")
}

fn compile(text: &str, counters: &mut RuleCounters) -> Compiled {
    let rules = RuleSet::parse(Path::new("swap.yaml"), text).unwrap();
    compile::ruleset(&rules, &[("lo".to_string(), 0)], counters).unwrap()
}

/// Removes the pin on drop.
struct Pin(PathBuf);

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn no_packet_is_judged_by_a_mix_of_two_rule_sets() {
    if !testbed::require_root("swap") {
        return;
    }
    // One counter book for both sets: each rule keeps its own slot (noted right after its
    // compile; nothing compiles again, so neither slot is reused).
    let mut counters = RuleCounters::default();
    let by_port = compile(
        &rule_set(
            "{ id: by-port, action: drop, protocol: udp, dst_port: 1000-1999 }",
            true,
        ),
        &mut counters,
    );
    let slots = [counters.get("lo", "by-port").unwrap(), 0];
    let by_network = compile(
        &rule_set(
            "{ id: by-network, action: drop, protocol: udp, dst: 198.19.0.0/16 }",
            false,
        ),
        &mut counters,
    );
    let slots = [slots[0], counters.get("lo", "by-network").unwrap()];
    let sets = [by_port, by_network];
    // Licensed: the rules' verdicts apply (a fresh program passes everything).
    let mut dataplane = common::dataplane();
    dataplane.install(&sets[0]).unwrap();
    // A second handle on the same program, for the packet thread.
    let pin = Pin(PathBuf::from(format!(
        "/sys/fs/bpf/smf-firewall-swap-test-{}",
        std::process::id()
    )));
    dataplane.program().unwrap().pin(&pin.0).unwrap();
    let program = Xdp::from_pin(&pin.0, XdpAttachType::Interface).unwrap();
    let frames: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            PacketSpec::parse(&format!(
                "udp 198.18.0.{i}:5000 -> 198.19.0.{i}:{}",
                1000 + 111 * i
            ))
            .unwrap()
            .frame()
        })
        .collect();

    let done = AtomicBool::new(false);
    let runs = thread::scope(|scope| {
        let packets = scope.spawn(|| {
            let mut runs = 0u64;
            while !done.load(Ordering::Relaxed) {
                for frame in &frames {
                    let outcome = test_run::run(&program, frame, REPEAT).unwrap();
                    assert_eq!(
                        outcome.action,
                        test_run::XDP_DROP,
                        "a packet passed: judged by a mix"
                    );
                    runs += u64::from(REPEAT);
                }
            }
            runs
        });
        for flip in 0..FLIPS {
            dataplane.install(&sets[(flip + 1) % 2]).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        packets.join().unwrap()
    });

    let dropped = dataplane.counter(0, Verdict::Drop).unwrap().packets;
    let passed = dataplane.counter(0, Verdict::Pass).unwrap().packets;
    let per_rule: Vec<u64> = slots
        .iter()
        .map(|&s| dataplane.rule_counter(s).unwrap().packets)
        .collect();
    let by_rule: u64 = per_rule.iter().sum();
    assert_eq!(
        (dropped, passed),
        (runs, 0),
        "every packet dropped by one of the two sets"
    );
    assert_eq!(
        by_rule, runs,
        "each packet counted for exactly one of the two rules"
    );
    assert!(
        per_rule.iter().all(|&n| n > 0),
        "both sets judged packets: {per_rule:?}"
    );
    eprintln!("swap: {runs} packets over {FLIPS} flips, {per_rule:?} by rule");
}
