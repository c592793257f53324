//! Times the XDP program with BPF_PROG_TEST_RUN next to a trivial `XDP_PASS` program from the
//! same build and Debian's xdp-filter, in one run, and reports ratios; also the time to
//! compile and swap in large rule sets, and the daemon's memory with 100k rules. Never a
//! pass/fail test. Needs root.
//!
//! Without a context the kernel runs a program as if the frame arrived on loopback
//! (ifindex 1), so the rules are bound there (`firewall_dataplane::test_run`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aya::{Ebpf, programs::Xdp};
use firewall_benches::{REPEAT, Row, generate, print_table, write_json};
use firewall_dataplane::{
    loader::{Capacity, Dataplane},
    object::XDP_PASS_OBJECT,
    test_run,
};
use firewall_rules::{
    Direction, RuleSet,
    compile::{self, Compiled, RuleCounters},
    spec::PacketSpec,
};
use serde::Serialize;
use testbed::{NetNs, Signal, sample, scrape};

type Result<T> = std::result::Result<T, String>;

const SIZES: [usize; 4] = [1, 1_000, 10_000, 100_000];
/// The xdp-filter comparison: this many destination addresses and one UDP port.
const PEER_ADDRESSES: usize = 1_000;
const PEER_PORT: u16 = 9;
/// A 60-byte UDP/IPv4 frame that misses every entry of the peer comparison.
const PEER_MISS: &str = "udp 198.18.9.9:40000 -> 198.18.200.1:53";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The kernel's average nanoseconds per run of `frame`, over `REPEAT` runs (the median of 3).
fn time(program: &Xdp, frame: &[u8]) -> Result<f64> {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let outcome = test_run::run(program, frame, REPEAT).map_err(err)?;
        rounds.push(outcome.duration.as_nanos() as f64);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[1])
}

fn frame(spec: &str) -> Vec<u8> {
    let mut frame = PacketSpec::parse(spec).expect("bench specs parse").frame();
    frame.resize(frame.len().max(60), 0); // Ethernet minimum, as on the wire
    frame
}

fn trivial(frame: &[u8]) -> Result<f64> {
    let mut ebpf = Ebpf::load(XDP_PASS_OBJECT).map_err(err)?;
    let program: &mut Xdp = ebpf
        .program_mut("xdp_pass")
        .ok_or("xdp_pass missing")?
        .try_into()
        .map_err(err)?;
    program.load().map_err(err)?;
    time(program, frame)
}

/// Compiles `text` for the generator's interface, bound to loopback, and loads it.
fn load(text: &str) -> Result<(Dataplane, Compiled)> {
    let rules = RuleSet::parse(Path::new("bench.yaml"), text).map_err(err)?;
    let interface = rules
        .interfaces
        .keys()
        .next()
        .ok_or("no interface")?
        .clone();
    let compiled =
        compile::ruleset(&rules, &[(interface, 0)], &mut RuleCounters::default()).map_err(err)?;
    // Licensed (time the rules' path, not the pass-all one) and bound to loopback.
    let mut dataplane =
        Dataplane::load_for_test_run(Capacity::for_compiled(&compiled)).map_err(err)?;
    // As the daemon: the table is looked up only when some rule has `state: true`.
    let mut settings = firewall_dataplane::conntrack::Timeouts::default().settings();
    settings.tracking = u64::from(rules.stateful());
    dataplane.set_conntrack(&settings).map_err(err)?;
    dataplane.install(&compiled).map_err(err)?;
    Ok((dataplane, compiled))
}

/// The generated rules with the probe rule moved to the front or the back (or left alone).
fn with_probe_at(text: &str, place: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let probe = lines
        .iter()
        .position(|l| l.contains(&format!("id: {}", generate::MIDDLE_RULE)));
    let first_rule = lines.iter().position(|l| l.trim_start().starts_with("- {"));
    if let (Some(probe), Some(first)) = (probe, first_rule) {
        let line = lines.remove(probe);
        match place {
            "first" => lines.insert(first, line),
            "last" => lines.push(line),
            _ => lines.insert(probe, line),
        }
    }
    lines.join("\n") + "\n"
}

/// The largest rule set to time (`SMF_BENCH_MAX_RULES`, default all of `SIZES`), for quick runs.
fn max_rules() -> usize {
    std::env::var("SMF_BENCH_MAX_RULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

fn firewall_rows(trivial_ns: f64, rows: &mut Vec<Row>) -> Result<()> {
    let hit = frame(generate::MIDDLE_PACKET);
    let miss = frame(generate::MISS_PACKET);
    for count in SIZES.into_iter().filter(|&n| n <= max_rules()) {
        let text = generate::rules(count, 1);
        let cases: [(&str, &str, &[u8]); 3] = [
            ("first", "tcp, matches the first rule", &hit),
            ("last", "tcp, matches the last rule", &hit),
            ("middle", "tcp, matches no rule", &miss),
        ];
        for (place, case, frame) in cases {
            let (mut dataplane, _) = load(&with_probe_at(&text, place))?;
            let ns = time(dataplane.program().map_err(err)?, frame)?;
            rows.push(Row::new("smf-firewall", count, case, ns, trivial_ns));
        }
    }
    Ok(())
}

/// The peer's content as smf-firewall rules: drop the addresses, drop the UDP port.
fn peer_rules(addresses: &[String]) -> String {
    format!(
        "version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n      - {{ id: blocked-hosts, action: drop, dst: [{}] }}\n      - {{ id: blocked-port, action: drop, protocol: udp, dst_port: {PEER_PORT} }}\n",
        addresses.join(", ")
    )
}

fn peer_addresses() -> Vec<String> {
    (0..PEER_ADDRESSES)
        .map(|i| format!("198.19.{}.{}", i / 250, 1 + i % 250))
        .collect()
}

/// Debian's xdp-filter (xdp-tools) with the same content, timed by `bpftool prog run`. It runs
/// in the root namespace on a throwaway veth pair; deny policy and a packet that misses every
/// entry (the full lookup), as TOOLCHAIN.md advises.
struct XdpFilter {
    interface: &'static str,
}

impl XdpFilter {
    fn load(addresses: &[String]) -> Result<XdpFilter> {
        let _ = std::fs::remove_file("/run/xdp-filter.lck");
        run(
            "ip",
            &[
                "link",
                "add",
                "smfbench0",
                "type",
                "veth",
                "peer",
                "name",
                "smfbench1",
            ],
        )?;
        let filter = XdpFilter {
            interface: "smfbench0",
        };
        run("ip", &["link", "set", "smfbench0", "up"])?;
        run(
            "xdp-filter",
            &["load", filter.interface, "-p", "deny", "-f", "ipv4,udp"],
        )?;
        for address in addresses {
            run("xdp-filter", &["ip", "-m", "dst", address])?;
        }
        run(
            "xdp-filter",
            &["port", "-m", "dst", "-p", "udp", &PEER_PORT.to_string()],
        )?;
        Ok(filter)
    }

    fn time(&self, frame: &[u8]) -> Result<f64> {
        let id = program_id(self.interface)?;
        let path = std::env::temp_dir().join(format!("smf-bench-frame-{}", std::process::id()));
        std::fs::write(&path, frame).map_err(err)?;
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let out = run(
                "bpftool",
                &[
                    "prog",
                    "run",
                    "id",
                    &id,
                    "data_in",
                    path.to_str().unwrap_or_default(),
                    "repeat",
                    &REPEAT.to_string(),
                ],
            )?;
            let ns = out
                .split("duration (average): ")
                .nth(1)
                .and_then(|rest| rest.split("ns").next())
                .and_then(|n| n.trim().parse::<f64>().ok())
                .ok_or(format!("cannot read bpftool's duration from: {out}"))?;
            rounds.push(ns);
        }
        let _ = std::fs::remove_file(&path);
        rounds.sort_by(f64::total_cmp);
        Ok(rounds[1])
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = run("xdp-filter", &["unload", self.interface]);
        let _ = run("ip", &["link", "del", self.interface]);
        let _ = std::fs::remove_file("/run/xdp-filter.lck");
    }
}

/// The id of the XDP program attached to `interface`.
fn program_id(interface: &str) -> Result<String> {
    let out = run("ip", &["-details", "link", "show", "dev", interface])?;
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .ok_or(format!("no XDP program on {interface}: {out}"))
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{program} {args:?}: {text}"))
    }
}

fn peer_rows(trivial_ns: f64, rows: &mut Vec<Row>) -> Result<()> {
    let addresses = peer_addresses();
    let miss = frame(PEER_MISS);
    let case = "udp, 1,000 dst + 1 port, miss";
    let peer_ns = XdpFilter::load(&addresses)?.time(&miss)?;
    let (mut dataplane, _) = load(&peer_rules(&addresses))?;
    let ours = time(dataplane.program().map_err(err)?, &miss)?;
    rows.push(
        Row::new("xdp-filter", PEER_ADDRESSES + 1, case, peer_ns, trivial_ns).versus(peer_ns),
    );
    rows.push(Row::new("smf-firewall", 2, case, ours, trivial_ns).versus(peer_ns));
    Ok(())
}

/// What it costs to change and hold large rule sets.
#[derive(Serialize)]
struct Control {
    rules: usize,
    parse_ms: f64,
    compile_and_swap_ms: f64,
    daemon_rss_mib: Option<f64>,
}

fn control(count: usize) -> Result<Control> {
    let text = generate::rules(count, 1);
    let started = Instant::now();
    let rules = RuleSet::parse(Path::new("bench.yaml"), &text).map_err(err)?;
    let parse = started.elapsed();
    let slots = [(generate::INTERFACE.to_string(), 0)];
    let mut counters = RuleCounters::default();
    let first = compile::ruleset(&rules, &slots, &mut counters).map_err(err)?;
    let mut dataplane = Dataplane::load(Capacity::for_compiled(&first)).map_err(err)?;
    dataplane.install(&first).map_err(err)?;
    // The swap that counts is the second: into the generation the program does not read.
    let started = Instant::now();
    let compiled = compile::ruleset(&rules, &slots, &mut counters).map_err(err)?;
    dataplane
        .reset_rule_counters(&compiled.fresh_counters)
        .map_err(err)?;
    dataplane.install(&compiled).map_err(err)?;
    let swap = started.elapsed();
    Ok(Control {
        rules: count,
        parse_ms: ms(parse),
        compile_and_swap_ms: ms(swap),
        daemon_rss_mib: if count == 100_000 {
            daemon_rss(&text)?
        } else {
            None
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The resident memory of the real daemon with these rules loaded on `lan0` (a veth end), in MiB;
/// `None` when the release binary was not built (`cargo xtask bench` builds it).
fn daemon_rss(rules: &str) -> Result<Option<f64>> {
    let binary = std::env::var_os("SMF_FIREWALL_BIN").map(PathBuf::from);
    let Some(binary) = binary.filter(|b| b.exists()) else {
        eprintln!("daemon RSS: skipped, SMF_FIREWALL_BIN does not name a built smf-firewall");
        return Ok(None);
    };
    let dir = std::env::temp_dir().join(format!("smf-bench-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    std::fs::write(dir.join("rules.yaml"), rules).map_err(err)?;
    // Pins of its own, and a SIGTERM at the end: nothing is left attached or pinned.
    let pins = PathBuf::from(format!("/sys/fs/bpf/smf-bench-{}", std::process::id()));
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "rules: rules.yaml\ninterfaces: [{}]\npin_path: {}\nruntime_dir: {}\n",
            generate::INTERFACE,
            pins.display(),
            dir.join("run").display()
        ),
    )
    .map_err(err)?;
    let ns = NetNs::new("bench").map_err(err)?;
    ns.ip(&[
        "link",
        "add",
        generate::INTERFACE,
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    ])
    .map_err(err)?;
    ns.ip(&["link", "set", generate::INTERFACE, "up"])
        .map_err(err)?;
    let config = dir.join("config.yaml");
    let mut daemon = ns
        .spawn(
            &binary.to_string_lossy(),
            &["run", "--config", &config.to_string_lossy()],
        )
        .map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = "127.0.0.1:9775".parse().map_err(err)?;
    while scrape(&ns, address)
        .map(|t| {
            sample(
                &t,
                "smf_firewall_packets_total",
                &[("interface", generate::INTERFACE), ("verdict", "pass")],
            )
            .is_none()
        })
        .unwrap_or(true)
    {
        if daemon.exited().map_err(err)? || Instant::now() > deadline {
            return Err(format!(
                "the daemon did not start: {:?}",
                daemon.wait().map_err(err)?
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id())).map_err(err)?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    daemon.signal(Signal::SIGTERM).map_err(err)?;
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(kib / 1024.0))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a `cargo test` of the benches must not run them.
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(());
    }
    let hit = frame(generate::MIDDLE_PACKET);
    let trivial_ns = trivial(&hit)?;
    let mut rows = vec![Row::new(
        "xdp-pass",
        0,
        "tcp 60 bytes",
        trivial_ns,
        trivial_ns,
    )];
    firewall_rows(trivial_ns, &mut rows)?;
    let memory = conntrack_rows(trivial_ns, &mut rows)?;
    match peer_rows(trivial_ns, &mut rows) {
        Ok(()) => {}
        Err(e) => eprintln!("xdp-filter comparison skipped: {e}"),
    }
    print_table(&rows);
    let path = write_json("dataplane", &rows).map_err(err)?;
    println!("wrote {}", path.display());

    let control: Vec<Control> = [10_000, 100_000]
        .into_iter()
        .filter(|&n| n <= max_rules())
        .map(control)
        .collect::<Result<_>>()?;
    println!(
        "\n{:>8} {:>10} {:>22} {:>16}",
        "rules", "parse ms", "compile + swap ms", "daemon RSS MiB"
    );
    for c in &control {
        let rss = c
            .daemon_rss_mib
            .map_or("-".to_string(), |m| format!("{m:.1}"));
        println!(
            "{:>8} {:>10.0} {:>22.0} {:>16}",
            c.rules, c.parse_ms, c.compile_and_swap_ms, rss
        );
    }
    let path = firewall_benches::write_json_value("control", &control).map_err(err)?;
    println!("wrote {}", path.display());

    println!("\n{:>12} {:>20}", "flows", "conntrack kernel MiB");
    for m in &memory {
        println!(
            "{:>12} {:>20.1}",
            m.max_entries,
            m.kernel_bytes as f64 / f64::from(1 << 20)
        );
    }
    let path = firewall_benches::write_json_value("conntrack", &memory).map_err(err)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Distinct flows opened to time flow creation.
const NEW_FLOWS: usize = 50_000;

/// The kernel's average time for one run of each frame (repeat 1, so its timing overhead is
/// included).
fn time_each(program: &Xdp, frames: &[Vec<u8>]) -> Result<f64> {
    let mut total = 0.0;
    for frame in frames {
        total += test_run::run(program, frame, 1)
            .map_err(err)?
            .duration
            .as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

/// Kernel memory of the connection-tracking table at one size.
#[derive(Serialize)]
struct ConntrackMemory {
    max_entries: u32,
    kernel_bytes: u64,
}

/// Rules of the 1,000-rule file behind a `state: true` rule for the tracked flow.
fn stateful_rules() -> String {
    let text = generate::rules(1_000, 1);
    let marker = "    rules:\n";
    text.replacen(
        marker,
        &format!("{marker}      - {{ id: state-out, action: pass, protocol: tcp, src: 198.18.0.0/16, state: true }}\n"),
        1,
    )
}

/// The established-flow fast path (a tracked reply), the cost of opening a flow (every SYN
/// finds its entry expired, as all timeouts are 0, and replaces it), and the table's kernel
/// memory at 65,536 and 1,000,000 entries.
fn conntrack_rows(trivial_ns: f64, rows: &mut Vec<Row>) -> Result<Vec<ConntrackMemory>> {
    let syn = frame("tcp 198.18.7.1:40000 -> 198.19.200.1:443 flags SYN");
    let reply = frame("tcp 198.19.200.1:443 -> 198.18.7.1:40000 flags ACK");
    let (mut dataplane, _) = load(&stateful_rules())?;
    dataplane.run(&syn, Direction::In).map_err(err)?;
    dataplane.run(&reply, Direction::In).map_err(err)?;
    if dataplane.conntrack_hits(0).map_err(err)? != 1 {
        return Err("the reply was not tracked: the established row would time the rules".into());
    }
    let program = dataplane.program().map_err(err)?;
    let established = time(program, &reply)?;
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "conntrack: established flow (tracked reply)",
        established,
        trivial_ns,
    ));
    let untracked = time(program, &frame(generate::MIDDLE_PACKET))?;
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "conntrack on: untracked tcp (miss + rules)",
        untracked,
        trivial_ns,
    ));
    // Opening a flow: distinct SYNs, one run each (BPF_PROG_TEST_RUN repeats one frame, which
    // would hit the flow it opened), with tracking on, then the same SYNs with tracking off
    // (the rules alone). Both include the kernel's per-run timing overhead; the difference is
    // what opening a flow costs.
    let syns: Vec<Vec<u8>> = (0..NEW_FLOWS)
        .map(|i| {
            frame(&format!(
                "tcp 198.18.{}.{}:{} -> 198.19.200.1:443 flags SYN",
                i / 60_000 + 10,
                (i / 250) % 240 + 1,
                1024 + i % 60_000
            ))
        })
        .collect();
    let program = dataplane.program().map_err(err)?;
    let opening = time_each(program, &syns)?;
    let mut off = firewall_dataplane::conntrack::Timeouts::default().settings();
    off.tracking = 0;
    dataplane.set_conntrack(&off).map_err(err)?;
    let rules_only = time_each(dataplane.program().map_err(err)?, &syns)?;
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "conntrack: new flow (SYN, rules + insert; 1 run each)",
        opening,
        trivial_ns,
    ));
    rows.push(Row::new(
        "smf-firewall",
        1_001,
        "same SYNs, tracking off (rules; 1 run each)",
        rules_only,
        trivial_ns,
    ));
    [firewall_common::conntrack::DEFAULT_MAX_ENTRIES, 1_000_000]
        .into_iter()
        .map(|max_entries| {
            let dataplane = Dataplane::load_with(Capacity::default(), max_entries).map_err(err)?;
            Ok(ConntrackMemory {
                max_entries,
                kernel_bytes: dataplane.conntrack_memory().ok_or("no memlock in fdinfo")?,
            })
        })
        .collect()
}
