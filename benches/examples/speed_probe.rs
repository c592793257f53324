//! A quick look at the dataplane's main costs while developing it: BPF_PROG_TEST_RUN ns per
//! packet of a few rule shapes next to the trivial program, interleaved, the fastest of 7 (the least disturbed by other work). Not the
//! benchmark (`cargo xtask bench` is); a developer's probe. Needs root.
//!
//! `cargo run --release -p firewall-benches --features kernel --example speed_probe`
//! (`SMF_PROBE_HOLD=NAME` holds one case for a profiler instead, see below)
use std::path::Path;

use aya::{Ebpf, programs::Xdp};
use firewall_benches::generate;
use firewall_common::{TraceControl, protocol, trace};
use firewall_dataplane::{
    conntrack::Timeouts,
    loader::{Capacity, Dataplane},
    object::XDP_PASS_OBJECT,
    test_run,
};
use firewall_rules::{
    RuleSet,
    compile::{self, RuleCounters},
    spec::PacketSpec,
};

const REPEAT: u32 = 2_000_000;

fn frame(spec: &str) -> Vec<u8> {
    let mut frame = PacketSpec::parse(spec).unwrap().frame();
    frame.resize(frame.len().max(60), 0);
    frame
}

fn load(text: &str) -> Dataplane {
    let rules = RuleSet::parse(Path::new("probe.yaml"), text).unwrap();
    // Its first interface as slot 0, which a test run's loopback is bound to.
    let interface = rules.interfaces.keys().next().unwrap().clone();
    let compiled =
        compile::ruleset(&rules, &[(interface, 0)], &mut RuleCounters::default()).unwrap();
    let mut dataplane = Dataplane::load_for_test_run(Capacity::for_compiled(&compiled)).unwrap();
    let mut settings = Timeouts::default().settings();
    settings.tracking = rules.tracked();
    dataplane.set_conntrack(&settings).unwrap();
    dataplane.install(&compiled).unwrap();
    dataplane
}

fn ns(program: &Xdp, frame: &[u8]) -> f64 {
    test_run::run(program, frame, REPEAT)
        .unwrap()
        .duration
        .as_nanos() as f64
}

fn set(rules: &str) -> String {
    format!("version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n{rules}")
}

fn main() {
    let hosts: Vec<String> = (0..1000)
        .map(|i| format!("198.19.{}.{}", i / 250, 1 + i % 250))
        .collect();
    let own_rules: String = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| format!("      - {{ id: h{i}, action: drop, dst: {h} }}\n"))
        .collect();
    let port = "      - { id: port, action: drop, protocol: udp, dst_port: 9 }\n";
    let state = "      - { id: st, action: pass, state: true, protocol: tcp, dst_port: 7 }\n";
    let miss = frame("udp 198.18.9.9:40000 -> 198.18.200.1:53");
    let reply = frame("tcp 198.18.200.1:7 -> 198.18.9.9:40000 flags ack");
    let hit = frame("udp 198.18.9.9:40000 -> 198.19.3.250:53");
    // The benchmark's generated rules (`cargo xtask bench`'s 1k and 100k rows).
    let generated_hit = frame(generate::MIDDLE_PACKET);
    let generated_miss = frame(generate::MISS_PACKET);
    let cases: Vec<(&str, String, &[u8])> = vec![
        ("1 rule, no match", set(port), &miss),
        (
            "1k host rules + port, miss",
            set(&(own_rules.clone() + port)),
            &miss,
        ),
        (
            "1 rule over 1k hosts + port, miss",
            set(&format!(
                "      - {{ id: hosts, action: drop, dst: [{}] }}\n{port}",
                hosts.join(", ")
            )),
            &miss,
        ),
        (
            "1k host rules + port, last host",
            set(&(own_rules.clone() + port)),
            &hit,
        ),
        (
            "1k generated rules, last",
            generate::rules(1_000, 1),
            &generated_hit,
        ),
        (
            "100k generated rules, last",
            generate::rules(100_000, 1),
            &generated_hit,
        ),
        (
            "100k generated rules, none",
            generate::rules(100_000, 1),
            &generated_miss,
        ),
        (
            "state rule, untracked miss",
            set(&(state.to_string() + port)),
            &miss,
        ),
        (
            "state rule, reply (untracked)",
            set(&(state.to_string() + port)),
            &reply,
        ),
    ];
    // The same packet with a live trace on (`smf-firewall trace`): one whose filter this packet
    // does not match, and one that traces everything at one event a second (the rest are
    // suppressed, the flood case).
    let traced = |conditions: u16, rate: u32| {
        let mut dataplane = load(&set(port));
        let on = TraceControl {
            until_ns: u64::MAX,
            slots: [0, trace::NO_SLOT],
            rate_per_second: rate,
            conditions,
            protocol: protocol::TCP,
            ..TraceControl::OFF
        };
        dataplane.set_trace(on).unwrap();
        dataplane
    };
    // A flow opened by its SYN (the state rule), then its reply timed: the tracked path.
    let established = |opener: &str| {
        let mut dataplane = load(&set(&(state.to_string() + port)));
        test_run::run(dataplane.program().unwrap(), &frame(opener), 1).unwrap();
        dataplane
    };
    let reply6 = frame("tcp [2001:2::200:1]:7 -> [2001:2::9]:40000 flags ack");
    let extra = [
        (
            "1 rule, trace on, not matched",
            traced(trace::cond::PROTOCOL, 100),
            &miss[..],
        ),
        ("1 rule, trace on, rate-suppressed", traced(0, 1), &miss[..]),
        (
            "state rule, established IPv4 reply",
            established("tcp 198.18.9.9:40000 -> 198.18.200.1:7 flags syn"),
            &reply[..],
        ),
        (
            "state rule, established IPv6 reply",
            established("tcp [2001:2::9]:40000 -> [2001:2::200:1]:7 flags syn"),
            &reply6[..],
        ),
    ];
    let mut trivial_ebpf = Ebpf::load(XDP_PASS_OBJECT).unwrap();
    let trivial: &mut Xdp = trivial_ebpf
        .program_mut("xdp_pass")
        .unwrap()
        .try_into()
        .unwrap();
    trivial.load().unwrap();
    let mut loaded: Vec<(String, Dataplane, &[u8])> = cases
        .into_iter()
        .map(|(name, text, frame)| (name.to_string(), load(&text), frame))
        .chain(
            extra
                .into_iter()
                .map(|(name, dataplane, frame)| (name.to_string(), dataplane, frame)),
        )
        .collect();
    let verified = |dataplane: &mut Dataplane| {
        let xdp = dataplane.program().unwrap().info().unwrap();
        let tc = dataplane.egress_program().unwrap().info().unwrap();
        (
            xdp.verified_instruction_count(),
            tc.verified_instruction_count(),
        )
    };
    println!(
        "verifier: instructions processed (XDP, TC egress): {:?}",
        verified(&mut loaded[0].1)
    );
    // `SMF_PROBE_HOLD=NAME`: runs the first case whose name contains NAME for 12 s, printing
    // its program id and thread, for `perf record -t` and `bpftool prog dump xlated linum`.
    if let Ok(hold) = std::env::var("SMF_PROBE_HOLD") {
        let (name, dataplane, frame) = loaded
            .iter_mut()
            .find(|(name, _, _)| name.contains(&hold))
            .expect("SMF_PROBE_HOLD names a case");
        let program = dataplane.program().unwrap();
        let id = program.info().unwrap().id();
        // `/proc/thread-self` links to `PID/task/TID`: the TID is what `perf record -t` takes.
        let thread = std::fs::read_link("/proc/thread-self").unwrap();
        let tid = thread.file_name().unwrap().to_string_lossy();
        println!("holding {name}: prog id {id} tid {tid}");
        let start = std::time::Instant::now();
        while start.elapsed().as_secs() < 12 {
            ns(program, frame);
        }
        return;
    }
    let mut samples = vec![Vec::new(); loaded.len() + 1];
    for _ in 0..7 {
        samples[0].push(ns(trivial, &miss));
        for (i, (_, dataplane, frame)) in loaded.iter_mut().enumerate() {
            samples[i + 1].push(ns(dataplane.program().unwrap(), frame));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[0]
    };
    let t = median(&mut samples[0]);
    println!("{:<40} {:>8} {:>8}", "case", "ns", "-trivial");
    println!("{:<40} {:>8.1}", "trivial XDP_PASS", t);
    for i in 0..loaded.len() {
        let name = loaded[i].0.clone();
        let m = median(&mut samples[i + 1]);
        let frame = loaded[i].2;
        let action = test_run::run(loaded[i].1.program().unwrap(), frame, 1)
            .unwrap()
            .action;
        let id = loaded[i].1.program().unwrap().info().unwrap().id();
        let tracked = loaded[i].1.conntrack_hits(0).unwrap_or(0);
        println!(
            "{name:<40} {m:>8.1} {:>8.1}  action {action}  tracked {tracked}  prog id {id}",
            m - t
        );
    }
    if std::env::var_os("SMF_PROBE_PAUSE").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
}
