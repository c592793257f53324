//! The floors: each building block of the packet path alone, as a tiny program of
//! `firewall-ebpf/src/bin/bench-programs.rs` timed in the same run as the firewall. Each is
//! checked to take the path it stands for (a flow found, a host missed) before it is timed.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::Xdp,
};
use firewall_benches::Row;
use firewall_common::{
    FlowKey4, family,
    limit::{LimitBucket, LimitKey},
};
use firewall_dataplane::{
    object::BENCH_PROGRAMS_OBJECT,
    test_run::{XDP_DROP, XDP_PASS},
};

use crate::kernel::{self, PEER_MISS, Result, err, frame, peer_addresses, time_expecting};

/// The tracked reply the established-flow row times: the floor parses and looks up the same.
pub const ESTABLISHED: &str = "tcp 198.19.200.1:443 -> 198.18.7.1:40000 flags ACK";

/// The bench programs' flow key of an IPv4 frame without options: the firewall's `FlowKey4`,
/// not normalised (addresses as on the wire, ports in host order, in the frame's order).
fn flow_key(frame: &[u8]) -> FlowKey4 {
    let word =
        |at: usize| u32::from_ne_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    FlowKey4::new(word(26), word(30), port(34), port(36), frame[23])
}

/// The packet the limits part's rule meets, and whose source the limit floor's key holds.
pub const LIMITED: &str = "udp 198.18.0.2:40000 -> 198.19.0.1:53";

/// The bench programs' per-source limit key of an IPv4 frame without options: its source
/// address, rule slot 0, epoch 1.
fn limit_key(frame: &[u8]) -> LimitKey {
    let mut addr = [0; 4];
    addr[0] = u32::from_ne_bytes([frame[26], frame[27], frame[28], frame[29]]);
    LimitKey {
        addr,
        slot: 0,
        epoch: 1,
        family: family::IPV4,
        _pad: 0,
    }
}

pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(format!("{name} missing from the bench object"))?
        .try_into()
        .map_err(err)
}

/// The bench object with every program loaded, its flow table holding the established frame's
/// flow and its host set the peer comparison's 1,000 hosts.
pub fn load() -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(BENCH_PROGRAMS_OBJECT).map_err(err)?;
    for name in [
        "xdp_drop",
        "xdp_tx",
        "floor_parse",
        "floor_flow",
        "floor_flow_alone",
        "floor_hosts_alone",
        "floor_limit_alone",
    ] {
        program(&mut ebpf, name)?.load().map_err(err)?;
    }
    let mut flows: HashMap<&mut MapData, FlowKey4, [u8; 16]> =
        HashMap::try_from(ebpf.map_mut("FLOWS").ok_or("FLOWS missing")?).map_err(err)?;
    flows
        .insert(flow_key(&frame(ESTABLISHED)), [0; 16], 0)
        .map_err(err)?;
    let mut hosts: HashMap<&mut MapData, u32, u32> =
        HashMap::try_from(ebpf.map_mut("HOSTS").ok_or("HOSTS missing")?).map_err(err)?;
    for (i, address) in peer_addresses().iter().enumerate() {
        let address: std::net::Ipv4Addr = address.parse().map_err(err)?;
        hosts
            .insert(u32::from_ne_bytes(address.octets()), i as u32, 0)
            .map_err(err)?;
    }
    let mut limits: HashMap<&mut MapData, LimitKey, LimitBucket> =
        HashMap::try_from(ebpf.map_mut("LIMIT_KEYS").ok_or("LIMIT_KEYS missing")?).map_err(err)?;
    limits
        .insert(limit_key(&frame(LIMITED)), LimitBucket::default(), 0)
        .map_err(err)?;
    Ok(ebpf)
}

/// Times each floor; records `floor_drop`, `floor_parse`, `floor_flow` (the established-flow
/// floor), `floor_flow_alone_hit`, `floor_flow_alone_miss`, `floor_hosts`, `floor_limit_alone`.
pub fn rows(
    trivial_ns: f64,
    rows: &mut Vec<Row>,
    measured: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    // Each floor's figure is the median over fresh loads of the object, as the rows they are
    // compared with (`kernel::LOADS`).
    let mut objects = (0..kernel::LOADS)
        .map(|_| load())
        .collect::<Result<Vec<_>>>()?;
    let established = frame(ESTABLISHED);
    let miss = frame(PEER_MISS);
    let limited = frame(LIMITED);
    let floors: [(&str, &str, &str, &[u8], u32); 7] = [
        ("floor_drop", "xdp_drop", "return XDP_DROP", &miss, XDP_DROP),
        (
            "floor_parse",
            "floor_parse",
            "full parse (tcp)",
            &established,
            XDP_PASS,
        ),
        (
            "floor_flow",
            "floor_flow",
            "parse + 16-byte flow hit + counter",
            &established,
            XDP_PASS,
        ),
        (
            "floor_flow_alone_hit",
            "floor_flow_alone",
            "16-byte flow lookup alone, hit",
            &established,
            XDP_PASS,
        ),
        (
            "floor_flow_alone_miss",
            "floor_flow_alone",
            "16-byte flow lookup alone, miss",
            &miss,
            XDP_DROP,
        ),
        (
            "floor_hosts",
            "floor_hosts_alone",
            "hash set of 1,000 hosts, miss",
            &miss,
            XDP_PASS,
        ),
        (
            "floor_limit_alone",
            "floor_limit_alone",
            "24-byte limit-key LRU lookup alone, hit",
            &limited,
            XDP_PASS,
        ),
    ];
    for (key, name, case, frame, action) in floors {
        let mut loads = objects.iter_mut();
        let ns = kernel::over_loads(|| {
            let ebpf = loads.next().ok_or("fewer objects than loads")?;
            time_expecting(program(ebpf, name)?, frame, action)
        })?;
        rows.push(Row::new(name, 0, case, ns, trivial_ns));
        measured.insert(key, ns);
    }
    Ok(())
}
