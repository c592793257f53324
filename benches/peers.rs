//! Same content, two programs: Debian's xdp-filter (xdp-tools) and ours, timed in the same run
//! on a packet that misses every entry, for both shapes of the content (a rule per host, one
//! rule over the set of hosts).

use std::collections::BTreeMap;

use firewall_benches::Row;
use firewall_dataplane::test_run::XDP_PASS;

use crate::kernel::{
    self, PEER_ADDRESSES, PEER_MISS, PEER_PORT, Result, Tracking, err, frame, peer_addresses,
    repeat, run, time_interleaved,
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

    /// The kernel's ns per run of `frame` by `bpftool prog run` (median of 3).
    pub fn time(&self, frame: &[u8]) -> Result<f64> {
        let id = program_id(&self.interface)?;
        let path = std::env::temp_dir().join(format!("smf-bench-frame-{}", std::process::id()));
        std::fs::write(&path, frame).map_err(err)?;
        let mut rounds = Vec::new();
        for _ in 0..3 {
            kernel::check()?;
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
            );
            let out = out.inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })?;
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

/// xdp-filter, then ours with the content as a rule per host (a) and as one rule over the set
/// (b), loaded as the daemon loads them. Records `xdp_filter`, `smf_hosts`, `smf_set`.
pub fn rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let addresses = peer_addresses();
    let miss = frame(PEER_MISS);
    let name = format!("smfp{}", std::process::id());
    let veth = RootVeth::new(&name, &format!("{name}p"))?;
    let peer_ns = XdpFilter::load(&veth.name, &addresses)?.time(&miss)?;
    drop(veth);
    let content = PEER_ADDRESSES + 1;
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
    measured.insert("xdp_filter", peer_ns);
    let shapes: [(&str, &str, usize, String); 2] = [
        (
            "smf_hosts",
            "udp miss: a rule per host + port rule",
            content,
            kernel::host_rules(&addresses, ""),
        ),
        (
            "smf_set",
            "udp miss: one rule over the set + port",
            2,
            kernel::set_rules(&addresses),
        ),
    ];
    let mut hosts = kernel::load(&shapes[0].3, Tracking::Daemon)?;
    let mut set = kernel::load(&shapes[1].3, Tracking::Daemon)?;
    verifier(&mut hosts, measured)?;
    let times = time_interleaved(&[
        (hosts.program().map_err(err)?, &miss, XDP_PASS),
        (set.program().map_err(err)?, &miss, XDP_PASS),
    ])?;
    for ((key, case, rules, _), ns) in shapes.into_iter().zip(times) {
        rows.push(Row::new("smf-firewall", rules, case, ns, trivial_ns).versus(peer_ns));
        measured.insert(key, ns);
    }
    Ok(())
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
