//! The live table: frames pushed through a veth into each receiver, its rate from the
//! receiving device's counters.
//!
//! The generator is a tiny XDP program returning XDP_TX, run by BPF_PROG_TEST_RUN with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` on the generator's veth end (in a namespace of its own, where
//! `ctx_in`'s ingress ifindex is resolved): each frame leaves by that end and arrives on its
//! peer in the root namespace (where xdp-filter must run), whose receiver takes it in native
//! XDP mode, or in netdev ingress for nftables. One pair per receiver, all set up once; runs
//! alternate between receivers. The receive runs on the generator's CPU (veth's NAPI is
//! scheduled where the frames are sent), so each frame costs the generator's time plus the
//! receiver's: the ratios are diluted by the generator's share.
//!
//! The frame is shape (a)'s miss (`PEER_MISS`), and every receiver drops it by its default:
//! xdp-filter's deny policy drops what misses its entries, so smf-firewall is loaded with
//! `default: drop` and nftables with `policy drop`. (A verdict costs nothing in a test run, but
//! live a pass costs the stack's receive: `xdp-pass` shows how much, for reading only.)

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use firewall_benches::median;
use firewall_dataplane::{loader, object::XDP_PASS_OBJECT};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use serde::Serialize;
use testbed::NetNs;

use crate::{
    floors,
    kernel::{
        self, PEER_MISS, PEER_PORT, Result, Tracking, env_or, err, frame, peer_addresses, run,
    },
    peers::XdpFilter,
};

/// Frames per BPF_PROG_TEST_RUN call of the generator, and per batch within it.
const CHUNK: u32 = 1 << 20;
const BATCH: u32 = 64;

/// What each receiver runs, in the order of the table.
const RECEIVERS: [&str; 5] = [
    "xdp-drop",
    "xdp-pass",
    "xdp-filter",
    "smf-firewall",
    "nftables",
];

/// One receiver's rates, frames per second, one per run, and their median.
#[derive(Serialize)]
pub struct Rate {
    pub receiver: String,
    pub mpps_runs: Vec<f64>,
    pub mpps: f64,
    /// Frames the receiver's own counters saw per second (smf-firewall, nftables), median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted_mpps: Option<f64>,
}

/// What keeps a receiver attached; dropped (detached) before its veth goes away.
enum Attached {
    Program { _ebpf: Box<Ebpf> },
    XdpFilter { _filter: XdpFilter },
    Firewall(Box<loader::Dataplane>),
    Nft(Nft),
}

struct Receiver {
    name: &'static str,
    /// The root-namespace end, where the receiver runs.
    device: String,
    /// The generator's end's ifindex, in the generator's namespace.
    generator_ifindex: u32,
    attached: Option<Attached>,
}

impl Receiver {
    /// Frames the receiver's device took in (veth counts every frame its NAPI received,
    /// whatever XDP decided).
    fn received(&self) -> Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", self.device);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{path}: {e}"))?
            .trim()
            .parse()
            .map_err(err)
    }

    /// Frames the receiver itself counted, where it counts them.
    fn counted(&self) -> Result<Option<u64>> {
        Ok(match &self.attached {
            Some(Attached::Firewall(dataplane)) => {
                let pass = dataplane
                    .counter(0, firewall_common::Verdict::Pass)
                    .map_err(err)?;
                let drop = dataplane
                    .counter(0, firewall_common::Verdict::Drop)
                    .map_err(err)?;
                Some(pass.packets + drop.packets)
            }
            Some(Attached::Nft(nft)) => Some(nft.counted()?),
            _ => None,
        })
    }
}

/// An nftables netdev table with the peer content on `device`: the hosts in a set, the UDP
/// port, both dropped, a counter of every frame, and the default drop. Deleted on drop.
struct Nft {
    table: String,
}

impl Nft {
    fn load(device: &str, addresses: &[String]) -> Result<Nft> {
        let table = format!("smfbench{}", std::process::id());
        let _ = run("nft", &["delete", "table", "netdev", &table]);
        let script = format!(
            "table netdev {table} {{\n  set hosts {{ type ipv4_addr; elements = {{ {} }} }}\n  chain ingress {{\n    type filter hook ingress device \"{device}\" priority 0; policy drop;\n    counter\n    ip daddr @hosts drop\n    udp dport {PEER_PORT} drop\n  }}\n}}\n",
            addresses.join(", ")
        );
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, script).map_err(err)?;
        let loaded = run("nft", &["-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        loaded?;
        Ok(Nft { table })
    }

    /// The packets the chain's first rule (`counter`) saw.
    fn counted(&self) -> Result<u64> {
        let out = run("nft", &["list", "chain", "netdev", &self.table, "ingress"])?;
        out.split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or(format!("no counter in: {out}"))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "netdev", &self.table]);
    }
}

/// The live set-up: the generator's namespace (deleting it deletes every pair), the
/// receivers, the generator program.
struct Live {
    receivers: Vec<Receiver>,
    programs: Ebpf,
    ns: NetNs,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Detach before the devices go (with `ns`, dropped after this).
        for receiver in &mut self.receivers {
            receiver.attached = None;
        }
    }
}

impl Live {
    fn new() -> Result<Live> {
        let ns = NetNs::new("live").map_err(err)?;
        let mut live = Live {
            receivers: Vec::new(),
            programs: floors::load()?,
            ns,
        };
        let addresses = peer_addresses();
        for (i, name) in RECEIVERS.into_iter().enumerate() {
            kernel::check()?;
            let device = format!("smfl{}x{i}", std::process::id());
            let generator = format!("gen{i}");
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &device,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &generator,
                    "netns",
                    live.ns.name(),
                ],
            )?;
            run("ip", &["link", "set", &device, "up"])?;
            live.ns
                .ip(&["link", "set", &generator, "up"])
                .map_err(err)?;
            // The same receive path for all: veth's NAPI (needed without XDP, for nftables)
            // and GRO for what is passed up.
            run("ethtool", &["-K", &device, "gro", "on"])?;
            let generator_ifindex = live
                .ns
                .run(|| loader::ifindex(&generator))
                .map_err(err)?
                .map_err(err)?;
            let mut receiver = Receiver {
                name,
                device,
                generator_ifindex,
                attached: None,
            };
            receiver.attached = Some(attach(name, &receiver.device, &addresses)?);
            live.receivers.push(receiver);
        }
        Ok(live)
    }

    /// Pushes frames into `receiver` for `duration`; its received and counted frames per
    /// second.
    fn measure(&self, receiver: &Receiver, duration: Duration, cpu: usize) -> Result<(f64, f64)> {
        let tx: &Xdp = self
            .programs
            .program("xdp_tx")
            .ok_or("xdp_tx missing")?
            .try_into()
            .map_err(err)?;
        let frame = frame(PEER_MISS);
        let (received, counted) = (receiver.received()?, receiver.counted()?);
        let started = Instant::now();
        self.ns
            .run(|| generate(tx, receiver.generator_ifindex, &frame, duration, cpu))
            .map_err(err)??;
        let elapsed = started.elapsed().as_secs_f64();
        let received = receiver.received()? - received;
        let counted = match (receiver.counted()?, counted) {
            (Some(after), Some(before)) => after - before,
            _ => received,
        };
        Ok((received as f64 / elapsed, counted as f64 / elapsed))
    }
}

/// Attaches receiver `name` to `device`, loaded with the peer content where it has rules.
fn attach(name: &str, device: &str, addresses: &[String]) -> Result<Attached> {
    Ok(match name {
        "xdp-drop" | "xdp-pass" => {
            let (mut ebpf, program) = if name == "xdp-drop" {
                (floors::load()?, "xdp_drop")
            } else {
                (Ebpf::load(XDP_PASS_OBJECT).map_err(err)?, "xdp_pass")
            };
            let xdp: &mut Xdp = ebpf
                .program_mut(program)
                .ok_or("program missing")?
                .try_into()
                .map_err(err)?;
            if name == "xdp-pass" {
                xdp.load().map_err(err)?;
            }
            xdp.attach(device, XdpMode::Driver).map_err(err)?;
            Attached::Program {
                _ebpf: Box::new(ebpf),
            }
        }
        "xdp-filter" => Attached::XdpFilter {
            _filter: XdpFilter::load(device, addresses)?,
        },
        "smf-firewall" => {
            let mut dataplane = kernel::load(
                &kernel::default_drop(&kernel::host_rules(addresses, "")),
                Tracking::Daemon,
            )?;
            // The rules' slot 0 also on this device, so its frames take the rules' path.
            dataplane
                .bind(loader::ifindex(device).map_err(err)?, 0)
                .map_err(err)?;
            dataplane
                .program()
                .map_err(err)?
                .attach(device, XdpMode::Driver)
                .map_err(err)?;
            Attached::Firewall(Box::new(dataplane))
        }
        "nftables" => Attached::Nft(Nft::load(device, addresses)?),
        other => return Err(format!("no receiver {other}")),
    })
}

/// The generator, on the calling thread (which must be in the generator's namespace): pinned
/// to `cpu`, it runs the XDP_TX program on live frames from `ifindex` until `duration` is up.
fn generate(tx: &Xdp, ifindex: u32, frame: &[u8], duration: Duration, cpu: usize) -> Result<()> {
    let mut cpus = CpuSet::new();
    cpus.set(cpu).map_err(err)?;
    sched_setaffinity(Pid::from_raw(0), &cpus).map_err(err)?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let started = Instant::now();
    while started.elapsed() < duration {
        kernel::check()?;
        let options = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: CHUNK,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..TestRunOptions::default()
        };
        tx.test_run(options).map_err(err)?;
    }
    Ok(())
}

/// How long each measurement pushes frames (`SMF_BENCH_LIVE_SECS`, default 10), how many
/// interleaved runs (`SMF_BENCH_LIVE_RUNS`, default 3), on which CPU (`SMF_BENCH_CPU`,
/// default the last).
pub fn table(measured: &mut BTreeMap<&'static str, f64>) -> Result<Vec<Rate>> {
    let duration = Duration::from_secs_f64(env_or("SMF_BENCH_LIVE_SECS", 10.0));
    let runs: usize = env_or("SMF_BENCH_LIVE_RUNS", 3).max(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = env_or("SMF_BENCH_CPU", cpus - 1);
    let live = Live::new()?;
    let mut received = vec![Vec::new(); live.receivers.len()];
    let mut counted = vec![Vec::new(); live.receivers.len()];
    for run in 0..runs {
        // Each run starts with another receiver, so none always follows the same one.
        for k in 0..live.receivers.len() {
            let i = (k + run) % live.receivers.len();
            let (rate, seen) = live.measure(&live.receivers[i], duration, cpu)?;
            eprintln!(
                "live run {}: {:<13} {:>6.3} Mpps",
                run + 1,
                live.receivers[i].name,
                rate / 1e6
            );
            received[i].push(rate / 1e6);
            counted[i].push(seen / 1e6);
        }
    }
    let rates: Vec<Rate> = live
        .receivers
        .iter()
        .zip(received.into_iter().zip(counted))
        .map(|(receiver, (runs, counted))| Rate {
            receiver: receiver.name.to_string(),
            mpps: median(&runs),
            mpps_runs: runs,
            counted_mpps: matches!(
                receiver.attached,
                Some(Attached::Firewall(_) | Attached::Nft(_))
            )
            .then(|| median(&counted)),
        })
        .collect();
    for rate in &rates {
        let key = match rate.receiver.as_str() {
            "xdp-drop" => "live_xdp_drop",
            "xdp-pass" => "live_xdp_pass",
            "xdp-filter" => "live_xdp_filter",
            "smf-firewall" => "live_smf",
            _ => "live_nftables",
        };
        measured.insert(key, rate.mpps);
    }
    Ok(rates)
}

/// Prints the live table: the median rates and smf-firewall's ratio to each receiver.
pub fn print(rates: &[Rate]) {
    let smf = rates
        .iter()
        .find(|r| r.receiver == "smf-firewall")
        .map(|r| r.mpps);
    println!(
        "\n{:<13} {:>8} {:>26} {:>14} {:>12}",
        "receiver", "Mpps", "runs", "own counter", "smf / this"
    );
    for rate in rates {
        let runs: Vec<String> = rate.mpps_runs.iter().map(|r| format!("{r:.2}")).collect();
        let own = rate
            .counted_mpps
            .map_or(String::new(), |c| format!("{c:.2}"));
        let ratio = smf.map_or(String::new(), |s| format!("{:.2}", s / rate.mpps));
        println!(
            "{:<13} {:>8.3} {:>26} {:>14} {:>12}",
            rate.receiver,
            rate.mpps,
            runs.join(" "),
            own,
            ratio
        );
    }
}
