//! Puts the XDP program into the kernel with aya: loads the embedded object, writes each
//! interface's compiled rules, attaches, and reads the counters back.

use aya::{
    Ebpf, EbpfError,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
};
use firewall_common::{Counter, InterfaceRules, MAX_INTERFACES, Verdict, counter_index, enforce};
use tracing::{info, warn};

/// The XDP program object, built by `build.rs` from `firewall-ebpf`.
pub static FIREWALL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smf-firewall"));

/// `return XDP_PASS`, built the same way: the floor for benchmarks.
pub static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-pass"));

const PROGRAM: &str = "smf_firewall";

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot load the XDP object: {0}")]
    Load(#[from] EbpfError),
    #[error("the kernel refused the XDP program: {0}")]
    Program(#[source] ProgramError),
    #[error("the XDP object lacks `{0}`; the build is broken")]
    Missing(&'static str),
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error("cannot attach XDP to {interface} in driver or generic mode: {source}")]
    Attach {
        interface: String,
        source: ProgramError,
    },
}

/// The loaded program and its maps. Dropping it detaches from every interface.
pub struct Dataplane {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, Counter>,
}

impl Dataplane {
    /// Loads and verifies the program; attaches nowhere yet.
    pub fn load() -> Result<Self, LoaderError> {
        let mut ebpf = Ebpf::load(FIREWALL_OBJECT)?;
        let stats = ebpf
            .take_map("STATS")
            .ok_or(LoaderError::Missing("STATS"))?;
        let stats = PerCpuArray::try_from(stats).map_err(|source| LoaderError::Map {
            map: "STATS",
            source,
        })?;
        let mut dataplane = Dataplane { ebpf, stats };
        dataplane.program()?.load().map_err(LoaderError::Program)?;
        Ok(dataplane)
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> Result<&mut Xdp, LoaderError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or(LoaderError::Missing(PROGRAM))?
            .try_into()
            .map_err(LoaderError::Program)
    }

    /// Makes `rules` the live rule set for packets arriving on `ifindex`: one map update, so
    /// a packet sees the old rules or the new ones, never a mix.
    pub fn install(&mut self, ifindex: u32, rules: &InterfaceRules) -> Result<(), LoaderError> {
        let map = self
            .ebpf
            .map_mut("INTERFACES")
            .ok_or(LoaderError::Missing("INTERFACES"))?;
        let mut interfaces: HashMap<_, u32, InterfaceRules> =
            HashMap::try_from(map).map_err(|source| LoaderError::Map {
                map: "INTERFACES",
                source,
            })?;
        interfaces
            .insert(ifindex, rules, 0)
            .map_err(|source| LoaderError::Map {
                map: "INTERFACES",
                source,
            })
    }

    /// Applies the rules' verdicts (`true`, licensed) or passes every packet (`false`), on all
    /// interfaces at once: one map update, so no packet sees a mix. A freshly loaded program
    /// passes everything until this is called (see `firewall_common::enforce`).
    pub fn set_enforcing(&mut self, enforcing: bool) -> Result<(), LoaderError> {
        let map = self
            .ebpf
            .map_mut("ENFORCE")
            .ok_or(LoaderError::Missing("ENFORCE"))?;
        let mut flag: Array<_, u32> = Array::try_from(map).map_err(|source| LoaderError::Map {
            map: "ENFORCE",
            source,
        })?;
        let value = if enforcing {
            enforce::RULES
        } else {
            enforce::PASS_ALL
        };
        flag.set(enforce::INDEX, value, 0)
            .map_err(|source| LoaderError::Map {
                map: "ENFORCE",
                source,
            })
    }

    /// Attaches in native (driver) mode, falling back to generic (skb) mode with a warning.
    pub fn attach(&mut self, interface: &str) -> Result<XdpMode, LoaderError> {
        let program = self.program()?;
        match program.attach(interface, XdpMode::Driver) {
            Ok(_) => {
                info!(interface, mode = "driver", "attached XDP program");
                Ok(XdpMode::Driver)
            }
            Err(ProgramError::UnknownInterface { name }) => {
                Err(LoaderError::UnknownInterface(name))
            }
            Err(driver_error) => {
                warn!(interface, error = %driver_error, "native XDP refused; falling back to generic (skb) mode, which is slower");
                program
                    .attach(interface, XdpMode::Skb)
                    .map_err(|source| LoaderError::Attach {
                        interface: interface.to_string(),
                        source,
                    })?;
                info!(interface, mode = "skb", "attached XDP program");
                Ok(XdpMode::Skb)
            }
        }
    }

    /// Packets and bytes for an interface slot and verdict, summed over CPUs.
    pub fn counter(&self, slot: u32, verdict: Verdict) -> Result<Counter, LoaderError> {
        debug_assert!(slot < MAX_INTERFACES);
        let per_cpu = self
            .stats
            .get(&counter_index(slot, verdict), 0)
            .map_err(|source| LoaderError::Map {
                map: "STATS",
                source,
            })?;
        Ok(per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
            packets: sum.packets + c.packets,
            bytes: sum.bytes + c.bytes,
        }))
    }
}

/// The index of a network interface in this namespace.
pub fn ifindex(name: &str) -> Result<u32, LoaderError> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| LoaderError::UnknownInterface(name.to_string()))?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(LoaderError::UnknownInterface(name.to_string())),
        index => Ok(index),
    }
}
