//! Puts the XDP program into the kernel with aya: loads the embedded object with map sizes fit
//! for the rules, writes rule sets into the generation the program does not read and flips
//! to it, attaches, and reads the counters back.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    thread,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    pin::PinError,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::TcAttachOptions,
    },
};
use firewall_common::{
    ConntrackSettings, Counter, Entry, Flow, FlowKey, FrameClass, GENERATIONS, LEAF, MAX_IFINDEX,
    MAX_INTERFACES, NO_TREE, Node, Policy, Verdict, class_index, conntrack, counter_index, enforce,
    policy_index,
};
use tracing::{info, warn};

use crate::rules::compile::Compiled;

/// The XDP program object, built by `build.rs` from `firewall-ebpf`.
pub static FIREWALL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smf-firewall"));

/// `return XDP_PASS`, built the same way: the floor for benchmarks.
pub static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-pass"));

const PROGRAM: &str = "smf_firewall";
/// The TC egress program (`direction: out` rules), attached with TCX.
const EGRESS_PROGRAM: &str = "smf_firewall_egress";

/// How long a packet may still be reading the generation that was live before a flip; the
/// daemon does not rewrite that generation sooner. XDP runs to completion within a NAPI poll,
/// far below this.
const GRACE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot load the XDP object: {0}")]
    Load(#[from] EbpfError),
    #[error("the kernel refused the XDP program: {0}")]
    Program(#[source] ProgramError),
    #[error("the XDP object lacks `{0}`; the build is broken")]
    Missing(&'static str),
    #[error("map {map}: {error}")]
    Map { map: &'static str, error: MapError },
    #[error("cannot map {map} into memory: {error}")]
    Mmap {
        map: &'static str,
        error: std::io::Error,
    },
    #[error(
        "the rules need {needed} {what}, but the dataplane was loaded with room for {capacity}; restart the daemon to grow it"
    )]
    Capacity {
        what: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error("interface index {ifindex} is not below {MAX_IFINDEX}, the most this dataplane serves", ifindex = .0)]
    Ifindex(u32),
    #[error("cannot count the CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("cannot pin {path}: {error}")]
    Pin {
        path: std::path::PathBuf,
        error: PinError,
    },
    #[error("cannot create {path} for pinned maps: {error}")]
    PinDir {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("cannot attach the egress (TC) program to {interface} with TCX: {error}")]
    AttachEgress {
        interface: String,
        error: ProgramError,
    },
    #[error("cannot attach XDP to {interface} in driver or generic mode: {error}")]
    Attach {
        interface: String,
        error: ProgramError,
    },
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> LoaderError {
    move |error| LoaderError::Map { map, error }
}

/// Room in each generation's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub nodes: u32,
    pub leaves: u32,
    pub entries: u32,
}

impl Default for Capacity {
    /// Enough for a few thousand simple rules.
    fn default() -> Self {
        Capacity {
            nodes: 1 << 16,
            leaves: 1 << 16,
            entries: 1 << 14,
        }
    }
}

impl Capacity {
    /// What `compiled` needs plus a quarter (room for reloads that grow a little), at least
    /// the default.
    pub fn for_compiled(compiled: &Compiled) -> Capacity {
        let room = |needed: usize, minimum: u32| {
            u32::try_from((needed + needed / 4).next_multiple_of(1024))
                .unwrap_or(u32::MAX)
                .max(minimum)
        };
        let minimum = Capacity::default();
        Capacity {
            nodes: room(compiled.nodes.len(), minimum.nodes),
            leaves: room(compiled.leaves.len(), minimum.leaves),
            entries: room(compiled.entries.len(), minimum.entries),
        }
    }

    /// Kernel memory of the tree maps, both generations, in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(GENERATIONS)
            * (u64::from(self.nodes) * stride_of::<Node>() as u64
                + u64::from(self.leaves) * stride_of::<u32>() as u64
                + u64::from(self.entries) * stride_of::<Entry>() as u64)
    }
}

/// The kernel lays out BPF array elements at 8-byte strides.
fn stride_of<T>() -> usize {
    size_of::<T>().next_multiple_of(8)
}

/// An mmap-able BPF array, mapped into our memory while a generation is written (mapped only
/// then, so that the daemon's resident memory does not hold the tables between reloads).
struct Mapped<'a> {
    _map: &'a MapData,
    ptr: NonNull<u8>,
    len: usize,
    stride: usize,
    capacity: usize,
    name: &'static str,
}

impl<'a> Mapped<'a> {
    fn new<T>(map: &'a MapData, name: &'static str, capacity: u32) -> Result<Self, LoaderError> {
        let stride = stride_of::<T>();
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (stride * capacity as usize).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of a map fd we own; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let error = std::io::Error::last_os_error();
            return Err(LoaderError::Mmap { map: name, error });
        }
        let ptr = NonNull::new(ptr.cast()).ok_or(LoaderError::Missing(name))?;
        Ok(Mapped {
            _map: map,
            ptr,
            len,
            stride,
            capacity: capacity as usize,
            name,
        })
    }

    /// Writes `values` from element `offset` on; `room` is what the caller may use from there.
    fn write<T: aya::Pod>(
        &mut self,
        offset: usize,
        room: usize,
        values: impl ExactSizeIterator<Item = T>,
    ) -> Result<(), LoaderError> {
        if values.len() > room || offset + room > self.capacity {
            return Err(LoaderError::Capacity {
                what: self.name,
                needed: values.len(),
                capacity: room,
            });
        }
        for (i, value) in values.enumerate() {
            // SAFETY: offset + i < offset + room <= capacity: inside the mapping.
            unsafe {
                self.ptr
                    .as_ptr()
                    .add((offset + i) * self.stride)
                    .cast::<T>()
                    .write_unaligned(value)
            };
        }
        Ok(())
    }
}

impl Drop for Mapped<'_> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The trees, leaf lists and entries of both generations, generation `g` from `g × capacity`.
struct Tables {
    nodes: MapData,
    leaves: MapData,
    entries: MapData,
}

/// The loaded program and its maps. Dropping it detaches from every interface.
pub struct Dataplane {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, Counter>,
    rule_stats: PerCpuArray<MapData, Counter>,
    class_stats: PerCpuArray<MapData, Counter>,
    tables: Tables,
    /// The generation the program reads.
    live: u32,
    last_flip: Option<Instant>,
    capacity: Capacity,
}

impl Dataplane {
    /// Loads and verifies the program with room for `capacity` and the default
    /// connection-tracking table; attaches nowhere yet.
    pub fn load(capacity: Capacity) -> Result<Self, LoaderError> {
        Self::load_with(capacity, conntrack::DEFAULT_MAX_ENTRIES)
    }

    /// Like `load`, with a connection-tracking table of `flows` entries. Tracking works from
    /// the start with the default timeouts (`crate::conntrack::Timeouts::default()`).
    pub fn load_with(capacity: Capacity, flows: u32) -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(CONNTRACK, flows.max(1))
            .map_max_entries("NODES", GENERATIONS * capacity.nodes)
            .map_max_entries("LEAVES", GENERATIONS * capacity.leaves)
            .map_max_entries("ENTRIES", GENERATIONS * capacity.entries);
        let mut ebpf = loader.load(FIREWALL_OBJECT)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "STATS")?).map_err(map_error("STATS"))?;
        let rule_stats = PerCpuArray::try_from(take(&mut ebpf, "RULE_STATS")?)
            .map_err(map_error("RULE_STATS"))?;
        let class_stats = PerCpuArray::try_from(take(&mut ebpf, "CLASS_STATS")?)
            .map_err(map_error("CLASS_STATS"))?;
        let tables = Tables {
            nodes: array(&mut ebpf, "NODES")?,
            leaves: array(&mut ebpf, "LEAVES")?,
            entries: array(&mut ebpf, "ENTRIES")?,
        };
        let mut dataplane = Dataplane {
            ebpf,
            stats,
            rule_stats,
            class_stats,
            tables,
            live: 0,
            last_flip: None,
            capacity,
        };
        dataplane.program()?.load().map_err(LoaderError::Program)?;
        dataplane
            .egress_program()?
            .load()
            .map_err(LoaderError::Program)?;
        dataplane.set_conntrack(&crate::conntrack::Timeouts::default().settings())?;
        Ok(dataplane)
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> Result<&mut Xdp, LoaderError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or(LoaderError::Missing(PROGRAM))?
            .try_into()
            .map_err(LoaderError::Program)
    }

    /// The TC egress program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn egress_program(&mut self) -> Result<&mut SchedClassifier, LoaderError> {
        self.ebpf
            .program_mut(EGRESS_PROGRAM)
            .ok_or(LoaderError::Missing(EGRESS_PROGRAM))?
            .try_into()
            .map_err(LoaderError::Program)
    }

    /// Attaches the egress program to `interface` with TCX (a link the kernel detaches when the
    /// dataplane is dropped). It runs before the qdisc, after other programs already attached.
    pub fn attach_egress(&mut self, interface: &str) -> Result<(), LoaderError> {
        let program = self.egress_program()?;
        program
            .attach_with_options(
                interface,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|error| LoaderError::AttachEgress {
                interface: interface.to_string(),
                error,
            })?;
        info!(interface, "attached TC egress program (TCX)");
        Ok(())
    }

    /// Packets arriving on `ifindex` are judged by the rules of `slot`, and packets leaving it
    /// by the rules of `directed_slot(slot, direction::OUT)`.
    pub fn bind(&mut self, ifindex: u32, slot: u32) -> Result<(), LoaderError> {
        debug_assert!(slot < MAX_INTERFACES);
        if ifindex >= MAX_IFINDEX {
            return Err(LoaderError::Ifindex(ifindex));
        }
        let map = self
            .ebpf
            .map_mut("INTERFACES")
            .ok_or(LoaderError::Missing("INTERFACES"))?;
        let mut interfaces: Array<_, u32> =
            Array::try_from(map).map_err(map_error("INTERFACES"))?;
        interfaces
            .set(ifindex, slot + 1, 0)
            .map_err(map_error("INTERFACES"))
    }

    /// Makes `compiled` the live rule set: writes it into the generation the program does
    /// not read, then flips the generation word. A packet is judged by the old rules or the
    /// new ones, never a mix. Zero the counters of rules new to this compile first
    /// (`reset_rule_counters(&compiled.fresh_counters)`).
    pub fn install(&mut self, compiled: &Compiled) -> Result<(), LoaderError> {
        let next = 1 - self.live;
        if let Some(flipped) = self.last_flip {
            thread::sleep(GRACE.saturating_sub(flipped.elapsed()));
        }
        let cap = self.capacity;
        // Indices in `compiled` count from 0; generation `next` lives from these offsets.
        let (node_base, leaf_base, entry_base) =
            (next * cap.nodes, next * cap.leaves, next * cap.entries);
        let tables = &self.tables;
        let nodes = compiled.nodes.iter().map(|node| Node {
            first: node.first
                + if node.dim == LEAF {
                    leaf_base
                } else {
                    node_base
                },
            ..*node
        });
        Mapped::new::<Node>(&tables.nodes, "NODES", GENERATIONS * cap.nodes)?.write(
            node_base as usize,
            cap.nodes as usize,
            nodes,
        )?;
        let leaves = compiled.leaves.iter().map(|entry| entry + entry_base);
        Mapped::new::<u32>(&tables.leaves, "LEAVES", GENERATIONS * cap.leaves)?.write(
            leaf_base as usize,
            cap.leaves as usize,
            leaves,
        )?;
        Mapped::new::<Entry>(&tables.entries, "ENTRIES", GENERATIONS * cap.entries)?.write(
            entry_base as usize,
            cap.entries as usize,
            compiled.entries.iter().copied(),
        )?;
        let mut policies: Array<_, Policy> = Array::try_from(
            self.ebpf
                .map_mut("POLICIES")
                .ok_or(LoaderError::Missing("POLICIES"))?,
        )
        .map_err(map_error("POLICIES"))?;
        for (slot, policy) in &compiled.policies {
            let mut policy = *policy;
            for tree in policy
                .trees
                .iter_mut()
                .flatten()
                .filter(|t| t.root != NO_TREE)
            {
                tree.root += node_base;
                tree.min_entry += entry_base;
            }
            policies
                .set(policy_index(next, *slot), policy, 0)
                .map_err(map_error("POLICIES"))?;
        }
        let mut generation: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut("GENERATION")
                .ok_or(LoaderError::Missing("GENERATION"))?,
        )
        .map_err(map_error("GENERATION"))?;
        generation
            .set(0, next, 0)
            .map_err(map_error("GENERATION"))?;
        self.live = next;
        self.last_flip = Some(Instant::now());
        Ok(())
    }

    /// Zeroes rule counter slots, for rules that are new to the dataplane.
    pub fn reset_rule_counters(&mut self, slots: &[u32]) -> Result<(), LoaderError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, error)| LoaderError::Cpus(error))?;
        for &slot in slots {
            let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])
                .map_err(LoaderError::Cpus)?;
            self.rule_stats
                .set(slot, zero, 0)
                .map_err(map_error("RULE_STATS"))?;
        }
        Ok(())
    }

    /// Applies the rules' verdicts (`true`, licensed) or passes every packet (`false`), on all
    /// interfaces at once: one map update, so no packet sees a mix. A freshly loaded program
    /// passes everything until this is called (see `firewall_common::enforce`).
    pub fn set_enforcing(&mut self, enforcing: bool) -> Result<(), LoaderError> {
        let map = self
            .ebpf
            .map_mut("ENFORCE")
            .ok_or(LoaderError::Missing("ENFORCE"))?;
        let mut flag: Array<_, u32> = Array::try_from(map).map_err(map_error("ENFORCE"))?;
        let value = if enforcing {
            enforce::RULES
        } else {
            enforce::PASS_ALL
        };
        flag.set(enforce::INDEX, value, 0)
            .map_err(map_error("ENFORCE"))
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
                    .map_err(|error| LoaderError::Attach {
                        interface: interface.to_string(),
                        error,
                    })?;
                info!(interface, mode = "skb", "attached XDP program");
                Ok(XdpMode::Skb)
            }
        }
    }

    /// Packets and bytes for a directed slot (`firewall_common::directed_slot`; an interface's
    /// ingress slot is its slot) and verdict, summed over CPUs.
    pub fn counter(&self, slot: u32, verdict: Verdict) -> Result<Counter, LoaderError> {
        sum(&self.stats, counter_index(slot, verdict), "STATS")
    }

    /// Packets and bytes of an interface slot's frames of a class, summed over CPUs.
    pub fn class_counter(&self, slot: u32, class: FrameClass) -> Result<Counter, LoaderError> {
        sum(
            &self.class_stats,
            class_index(slot, class as u32),
            "CLASS_STATS",
        )
    }

    /// Packets and bytes decided by the rule with this counter slot, summed over CPUs.
    pub fn rule_counter(&self, slot: u32) -> Result<Counter, LoaderError> {
        sum(&self.rule_stats, slot, "RULE_STATS")
    }
}

/// The connection-tracking maps (issue 8).
const CONNTRACK: &str = "CONNTRACK";
const CONNTRACK_SETTINGS: &str = "CONNTRACK_SETTINGS";
const CONNTRACK_EVENTS: &str = "CONNTRACK_EVENTS";
const CONNTRACK_HITS: &str = "CONNTRACK_HITS";
const CONNTRACK_FLUSHED: &str = "CONNTRACK_FLUSHED";

/// Files under the pin directory, for `smf-firewall conntrack` (see `crate::conntrack`).
pub const PINNED_CONNTRACK: [(&str, &str); 3] = [
    (CONNTRACK, "flows"),
    (CONNTRACK_SETTINGS, "settings"),
    (CONNTRACK_FLUSHED, "flushed"),
];

impl Dataplane {
    /// Writes the timeouts (and, in tests, a fixed clock) the kernel judges flows by.
    pub fn set_conntrack(&mut self, settings: &ConntrackSettings) -> Result<(), LoaderError> {
        let map = self
            .ebpf
            .map_mut(CONNTRACK_SETTINGS)
            .ok_or(LoaderError::Missing(CONNTRACK_SETTINGS))?;
        let mut array: Array<_, ConntrackSettings> =
            Array::try_from(map).map_err(map_error(CONNTRACK_SETTINGS))?;
        array
            .set(0, settings, 0)
            .map_err(map_error(CONNTRACK_SETTINGS))
    }

    /// The flow table.
    pub fn conntrack_flows(&mut self) -> Result<HashMap<&mut MapData, FlowKey, Flow>, LoaderError> {
        let map = self
            .ebpf
            .map_mut(CONNTRACK)
            .ok_or(LoaderError::Missing(CONNTRACK))?;
        HashMap::try_from(map).map_err(map_error(CONNTRACK))
    }

    /// Sum over CPUs of a `conntrack::event` count.
    pub fn conntrack_event(&self, event: u32) -> Result<u64, LoaderError> {
        per_cpu_sum(&self.ebpf, CONNTRACK_EVENTS, event)
    }

    /// Packets passed by tracked flows on an interface slot.
    pub fn conntrack_hits(&self, slot: u32) -> Result<u64, LoaderError> {
        per_cpu_sum(&self.ebpf, CONNTRACK_HITS, slot)
    }

    /// Flows deleted by `smf-firewall conntrack flush` since load.
    pub fn conntrack_flushed(&self) -> Result<u64, LoaderError> {
        let map = self
            .ebpf
            .map(CONNTRACK_FLUSHED)
            .ok_or(LoaderError::Missing(CONNTRACK_FLUSHED))?;
        let array: Array<_, u64> = Array::try_from(map).map_err(map_error(CONNTRACK_FLUSHED))?;
        array
            .get(&conntrack::flushed::FLOWS, 0)
            .map_err(map_error(CONNTRACK_FLUSHED))
    }

    /// Pins the flow table, its settings and the flush counter under `dir` (created if
    /// missing; stale pins of an earlier run are replaced).
    pub fn pin_conntrack(&self, dir: &std::path::Path) -> Result<(), LoaderError> {
        let pin_error = |path: std::path::PathBuf| {
            move |error| LoaderError::Pin {
                path: path.clone(),
                error,
            }
        };
        std::fs::create_dir_all(dir).map_err(|error| LoaderError::PinDir {
            path: dir.to_path_buf(),
            error,
        })?;
        for (map, file) in PINNED_CONNTRACK {
            let path = dir.join(file);
            let _ = std::fs::remove_file(&path);
            self.ebpf
                .map(map)
                .ok_or(LoaderError::Missing(map))?
                .pin(&path)
                .map_err(pin_error(path.clone()))?;
        }
        Ok(())
    }

    /// Kernel memory of the flow table in bytes, as the kernel accounts it (`memlock` in the
    /// map's fdinfo).
    pub fn conntrack_memory(&self) -> Option<u64> {
        let map = self.ebpf.map(CONNTRACK)?;
        let fd = match map {
            Map::LruHashMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => return None,
        };
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

fn per_cpu_sum(ebpf: &Ebpf, name: &'static str, index: u32) -> Result<u64, LoaderError> {
    let map = ebpf.map(name).ok_or(LoaderError::Missing(name))?;
    let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error(name))?;
    let values = array.get(&index, 0).map_err(map_error(name))?;
    Ok(values.iter().sum())
}

fn sum(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, LoaderError> {
    let per_cpu = map.get(&index, 0).map_err(map_error(name))?;
    Ok(per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
        packets: sum.packets + c.packets,
        bytes: sum.bytes + c.bytes,
    }))
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, LoaderError> {
    ebpf.take_map(name).ok_or(LoaderError::Missing(name))
}

fn array(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, LoaderError> {
    match take(ebpf, name)? {
        Map::Array(data) => Ok(data),
        _ => Err(LoaderError::Missing(name)),
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
