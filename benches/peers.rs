//! Same content, two programs: Debian's xdp-filter (xdp-tools) and ours, timed in the same run
//! on a packet that misses every entry, for both shapes of the content (a rule per host, one
//! rule over the set of hosts).

use std::collections::BTreeMap;

use firewall_benches::{Row, median};
use firewall_dataplane::{
    loader::Dataplane,
    test_run::{self, XDP_PASS},
};

use crate::kernel::{
    self, PEER_ADDRESSES, PEER_MISS, PEER_PORT, Result, Tracking, err, frame, peer_addresses,
    repeat, run,
};

/// A veth pair in the root namespace, deleted on drop (its peer goes with it).
pub struct RootVeth {
    pub name: String,
}

impl RootVeth {
    pub fn new(name: &str, peer: &str) -> Result<RootVeth> {
        let _ = run("ip", &["link", "del", name]); // a leftover of a killed run
        run(
            "ip",
            &["link", "add", name, "type", "veth", "peer", "name", peer],
        )?;
        let veth = RootVeth {
            name: name.to_string(),
        };
        run("ip", &["link", "set", name, "up"])?;
        run("ip", &["link", "set", peer, "up"])?;
        Ok(veth)
    }
}

impl Drop for RootVeth {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.name]);
    }
}

/// xdp-filter attached to `interface` with the peer content: deny policy, the hosts as
/// destinations, the UDP port (TOOLCHAIN.md: the root namespace, a packet that misses every
/// entry). Unloaded on drop.
pub struct XdpFilter {
    interface: String,
}

/// xdp-filter leaves its lock behind when it is killed, and then refuses every later call.
const LOCK: &str = "/run/xdp-filter.lck";

impl XdpFilter {
    pub fn load(interface: &str, addresses: &[String]) -> Result<XdpFilter> {
        let _ = std::fs::remove_file(LOCK);
        let filter = XdpFilter {
            interface: interface.to_string(),
        };
        run(
            "xdp-filter",
            &[
                "load", interface, "-m", "native", "-p", "deny", "-f", "ipv4,udp",
            ],
        )?;
        for address in addresses {
            kernel::check()?;
            run("xdp-filter", &["ip", "-m", "dst", address])?;
        }
        run(
            "xdp-filter",
            &["port", "-m", "dst", "-p", "udp", &PEER_PORT.to_string()],
        )?;
        Ok(filter)
    }

    /// One round of `bpftool prog run` of `frame` (written at `path`): the kernel's ns per run.
    pub fn round(&self, path: &std::path::Path) -> Result<f64> {
        let id = program_id(&self.interface)?;
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
                &repeat().to_string(),
            ],
        )?;
        out.split("duration (average): ")
            .nth(1)
            .and_then(|rest| rest.split("ns").next())
            .and_then(|n| n.trim().parse::<f64>().ok())
            .ok_or(format!("cannot read bpftool's duration from: {out}"))
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = run("xdp-filter", &["unload", &self.interface]);
        let _ = std::fs::remove_file(LOCK);
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

/// xdp-filter and ours with the content as a rule per host (a) and as one rule over the set
/// (b), loaded as the daemon loads them, timed interleaved; all three loaded `kernel::LOADS`
/// times afresh, the median load counting.
/// Records `xdp_filter`, `smf_hosts`, `smf_set`.
pub fn rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let addresses = peer_addresses();
    let miss = frame(PEER_MISS);
    let name = format!("smfp{}", std::process::id());
    let veth = RootVeth::new(&name, &format!("{name}p"))?;
    let content = PEER_ADDRESSES + 1;
    let path = std::env::temp_dir().join(format!("smf-bench-frame-{}", std::process::id()));
    std::fs::write(&path, &miss).map_err(err)?;
    let mut loads: [Vec<f64>; 3] = Default::default();
    let mut timed = || -> Result<()> {
        for load in 0..kernel::LOADS {
            let filter = XdpFilter::load(&veth.name, &addresses)?;
            let mut hosts = kernel::load(&kernel::host_rules(&addresses, ""), Tracking::Daemon)?;
            let mut set = kernel::load(&kernel::set_rules(&addresses), Tracking::Daemon)?;
            if load == 0 {
                verifier(&mut hosts, measured)?;
            }
            let times = time_with_peer(&filter, &path, &mut hosts, &mut set, &miss)?;
            for (all, ns) in loads.iter_mut().zip(times) {
                all.push(ns);
            }
        }
        Ok(())
    };
    let times = timed();
    let _ = std::fs::remove_file(&path);
    times?;
    let [peer_ns, hosts_ns, set_ns] = loads.map(|l| median(&l));
    rows.push(
        Row::new(
            "xdp-filter",
            content,
            "udp miss: 1,000 dst + 1 port (its maps)",
            peer_ns,
            trivial_ns,
        )
        .versus(peer_ns),
    );
    rows.push(
        Row::new(
            "smf-firewall",
            content,
            "udp miss: a rule per host + port rule",
            hosts_ns,
            trivial_ns,
        )
        .versus(peer_ns),
    );
    rows.push(
        Row::new(
            "smf-firewall",
            2,
            "udp miss: one rule over the set + port",
            set_ns,
            trivial_ns,
        )
        .versus(peer_ns),
    );
    measured.insert("xdp_filter", peer_ns);
    measured.insert("smf_hosts", hosts_ns);
    measured.insert("smf_set", set_ns);
    Ok(())
}

/// xdp-filter, shape (a) and shape (b), their rounds interleaved (a change in the machine's
/// load hits all three alike): the median of 5 rounds each.
fn time_with_peer(
    filter: &XdpFilter,
    path: &std::path::Path,
    hosts: &mut Dataplane,
    set: &mut Dataplane,
    miss: &[u8],
) -> Result<[f64; 3]> {
    let mut rounds: [Vec<f64>; 3] = Default::default();
    for _ in 0..5 {
        rounds[0].push(filter.round(path)?);
        let ours = time_interleaved_once(hosts, set, miss)?;
        rounds[1].push(ours[0]);
        rounds[2].push(ours[1]);
    }
    Ok(rounds.map(|r| median(&r)))
}

/// One round each of shapes (a) and (b), after checking that both pass the miss.
fn time_interleaved_once(
    hosts: &mut Dataplane,
    set: &mut Dataplane,
    miss: &[u8],
) -> Result<[f64; 2]> {
    let mut out = [0.0; 2];
    for (i, dataplane) in [hosts, set].into_iter().enumerate() {
        kernel::check()?;
        let program = dataplane.program().map_err(err)?;
        let outcome = test_run::run(program, miss, 1).map_err(err)?;
        if outcome.action != XDP_PASS {
            return Err(format!(
                "the miss was not passed ({}): wrong path timed",
                outcome.action
            ));
        }
        out[i] = test_run::run(program, miss, repeat())
            .map_err(err)?
            .duration
            .as_nanos() as f64;
    }
    Ok(out)
}

/// The instructions the verifier walked for both programs (`verified_insns`).
fn verifier(
    dataplane: &mut firewall_dataplane::loader::Dataplane,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let xdp = dataplane.program().map_err(err)?.info().map_err(err)?;
    if let Some(n) = xdp.verified_instruction_count() {
        measured.insert("verified_xdp", f64::from(n));
    }
    let egress = dataplane
        .egress_program()
        .map_err(err)?
        .info()
        .map_err(err)?;
    if let Some(n) = egress.verified_instruction_count() {
        measured.insert("verified_egress", f64::from(n));
    }
    Ok(())
}
