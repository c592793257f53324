//! Puts the XDP program into the kernel with aya: loads the embedded object with map sizes fit
//! for the rules, writes rule sets into the generation the program does not read and flips
//! to it, attaches, and reads the counters back.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
    ptr::NonNull,
    thread,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::{XdpLink, XdpLinkId},
    },
};
use firewall_common::{
    ConntrackSettings, Counter, DropLogControl, EXACT_DST, EXACT_SRC, Entry, ExactSlot, FrameClass,
    GENERATIONS, LEAF, MAX_IFINDEX, MAX_INTERFACES, NO_ENTRY, NO_TREE, Node, Policy, TraceControl,
    UNCONFIGURED, Verdict, class_index, conntrack, counter_index, enforce,
    limit::{self, Limit},
    policy_index,
};
use tracing::{info, warn};

use firewall_rules::compile::Compiled;

use crate::{
    conntrack::Flows,
    object::{CLOCK_PROGRAM, EGRESS_PROGRAM, FIREWALL_OBJECT, PROGRAM, maps},
    presence::Presence,
};

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
    #[error(transparent)]
    LimitTable(#[from] crate::limits::TableError),
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
    #[error("cannot poll the drop-log ring buffer: {0}")]
    DropLogPoll(std::io::Error),
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
    #[error("cannot pin the XDP link of {interface}: {reason}")]
    PinLink { interface: String, reason: String },
    #[error("cannot take over the pinned XDP link {}: {reason}", path.display())]
    AdoptLink {
        path: std::path::PathBuf,
        reason: String,
    },
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> LoaderError {
    move |error| LoaderError::Map { map, error }
}

/// The maps of live packet traces (`Dataplane::take_trace`).
pub struct TraceMaps {
    /// `TraceEvent`s.
    pub ring: RingBuf<MapData>,
    /// The one `TraceControl`.
    pub control: Array<MapData, TraceControl>,
    /// Per-CPU `firewall_common::trace` counters (`SENT`, ...).
    pub stats: PerCpuArray<MapData, u64>,
}

/// Entries of the LRU tables, which the daemon's config sizes: the flow table
/// (`conntrack.max_entries`) and the rate limits' per-address buckets (`limits.max_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LruSizes {
    /// Flows per address family: `CONNTRACK4` and `CONNTRACK` each hold this many.
    pub flows: u32,
    pub limit_keys: u32,
}

impl Default for LruSizes {
    fn default() -> Self {
        LruSizes {
            flows: conntrack::DEFAULT_MAX_ENTRIES,
            limit_keys: limit::DEFAULT_MAX_KEYS,
        }
    }
}

/// Room in each generation's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub nodes: u32,
    pub leaves: u32,
    pub entries: u32,
    /// Slots of the exact-address tables.
    pub exact: u32,
}

impl Default for Capacity {
    /// Enough for a few thousand simple rules.
    fn default() -> Self {
        Capacity {
            nodes: 1 << 16,
            leaves: 1 << 16,
            entries: 1 << 14,
            exact: 1 << 12,
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
            exact: room(compiled.exact.len(), minimum.exact),
        }
    }

    /// Kernel memory of the tree maps, both generations, in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(GENERATIONS)
            * (u64::from(self.nodes) * stride_of::<Node>() as u64
                + u64::from(self.leaves) * stride_of::<u32>() as u64
                + u64::from(self.entries) * stride_of::<Entry>() as u64
                + u64::from(self.exact) * stride_of::<ExactSlot>() as u64)
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

    /// The whole mapping as bytes.
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes from `ptr` are mapped (`new`) for as long as `self` lives, and
        // `&mut self` makes this the only reference into them on our side.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
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
    exact: MapData,
}

/// A pinned link taken over (`attach_pinned`, `attach_egress_pinned`).
enum Adopted {
    Xdp(XdpLinkId),
    Egress(aya::programs::tc::SchedClassifierLinkId),
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
    /// Pinned links this dataplane made, by interface; closed (not detached) on drop.
    held_links: Vec<(String, FdLink)>,
    /// Pinned links taken over, by interface: the programs hold them.
    adopted: Vec<(String, Adopted)>,
    /// The counter slots of the live generation's limit rules.
    limited: std::collections::HashSet<u32>,
    /// The kernel's tick, for the flow clock (`crate::clock`); `None` if it could not be
    /// measured, and the kernel then reads its clock with a helper.
    tick_ns: Option<u64>,
    /// `FLOW_PRESENCE` and its size.
    presence_map: MapData,
    presence: Presence,
}

impl Dataplane {
    /// Loads and verifies the program with room for `capacity` and the default
    /// connection-tracking table; attaches nowhere yet.
    pub fn load(capacity: Capacity) -> Result<Self, LoaderError> {
        Self::load_with(capacity, LruSizes::default())
    }

    /// Like `load`, with LRU tables of `lru` entries. Tracking works from the start with the
    /// default timeouts (`crate::conntrack::Timeouts::default()`).
    pub fn load_with(capacity: Capacity, lru: LruSizes) -> Result<Self, LoaderError> {
        Self::load_maps(capacity, lru, None)
    }

    /// Loads the program on the maps pinned in `dir` (`pins::pinned_maps()` by name): those
    /// already there are taken over with their contents, the others are created and pinned.
    /// `capacity` and `lru` must be those of maps already there (`pinned_capacity`,
    /// `pinned_lru`).
    pub fn load_pinned(capacity: Capacity, lru: LruSizes, dir: &Path) -> Result<Self, LoaderError> {
        Self::load_maps(capacity, lru, Some(dir))
    }

    fn load_maps(
        capacity: Capacity,
        lru: LruSizes,
        pin_dir: Option<&Path>,
    ) -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::CONNTRACK, lru.flows.max(1))
            .map_max_entries(maps::CONNTRACK4, lru.flows.max(1))
            .map_max_entries(maps::LIMIT_KEYS, lru.limit_keys.max(1))
            .map_max_entries(
                maps::FLOW_PRESENCE,
                conntrack::presence::elements(conntrack::presence::bits(lru.flows.max(1))),
            )
            .map_max_entries(maps::NODES, GENERATIONS * capacity.nodes)
            .map_max_entries(maps::LEAVES, GENERATIONS * capacity.leaves)
            .map_max_entries(maps::ENTRIES, GENERATIONS * capacity.entries)
            .map_max_entries(maps::EXACT, GENERATIONS * capacity.exact);
        if let Some(dir) = pin_dir {
            for name in crate::object::pinned_maps() {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(FIREWALL_OBJECT)?;
        let stats =
            PerCpuArray::try_from(take(&mut ebpf, maps::STATS)?).map_err(map_error(maps::STATS))?;
        let rule_stats = PerCpuArray::try_from(take(&mut ebpf, maps::RULE_STATS)?)
            .map_err(map_error(maps::RULE_STATS))?;
        let class_stats = PerCpuArray::try_from(take(&mut ebpf, maps::CLASS_STATS)?)
            .map_err(map_error(maps::CLASS_STATS))?;
        let tables = Tables {
            nodes: array(&mut ebpf, maps::NODES)?,
            leaves: array(&mut ebpf, maps::LEAVES)?,
            entries: array(&mut ebpf, maps::ENTRIES)?,
            exact: array(&mut ebpf, maps::EXACT)?,
        };
        let presence_map = array(&mut ebpf, maps::FLOW_PRESENCE)?;
        let presence = Presence::new(
            presence_map
                .info()
                .map_err(map_error(maps::FLOW_PRESENCE))?
                .max_entries(),
        );
        let mut dataplane = Dataplane {
            ebpf,
            stats,
            rule_stats,
            class_stats,
            tables,
            live: 0,
            last_flip: None,
            capacity,
            held_links: Vec::new(),
            adopted: Vec::new(),
            limited: std::collections::HashSet::new(),
            tick_ns: None,
            presence_map,
            presence,
        };
        // Maps taken over from a running dataplane: a packet may be reading the live
        // generation right now.
        dataplane.live = dataplane.read_generation()?;
        if pin_dir.is_some() {
            dataplane.last_flip = Some(Instant::now());
        }
        dataplane.program()?.load().map_err(LoaderError::Program)?;
        dataplane
            .egress_program()?
            .load()
            .map_err(LoaderError::Program)?;
        dataplane
            .clock_program()?
            .load()
            .map_err(LoaderError::Program)?;
        dataplane.tick_ns =
            crate::clock::calibrate(dataplane.clock_program()?).map_err(LoaderError::Program)?;
        if dataplane.tick_ns.is_none() {
            warn!(
                "the kernel's jiffies did not move in a second; flows use the slower clock helper"
            );
        }
        dataplane.set_conntrack(&crate::conntrack::Timeouts::default().settings())?;
        dataplane.set_drop_log(DropLogControl {
            rate_per_second: firewall_common::drop_log::DEFAULT_RATE,
            ..DropLogControl::default()
        })?;
        // A trace a killed daemon left on (pinned maps) ends with the next load.
        dataplane.set_trace(TraceControl::OFF)?;
        Ok(dataplane)
    }

    /// The capacity of the tree maps pinned in `dir`, or `None` if there are none.
    pub fn pinned_capacity(dir: &Path) -> Result<Option<Capacity>, LoaderError> {
        let size = |name: &'static str| -> Result<Option<u32>, LoaderError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let map = MapData::from_pin(&path).map_err(map_error(name))?;
            let info = map.info().map_err(map_error(name))?;
            Ok(Some(info.max_entries() / GENERATIONS))
        };
        Ok(
            match (
                size(maps::NODES)?,
                size(maps::LEAVES)?,
                size(maps::ENTRIES)?,
                size(maps::EXACT)?,
            ) {
                (Some(nodes), Some(leaves), Some(entries), Some(exact)) => Some(Capacity {
                    nodes,
                    leaves,
                    entries,
                    exact,
                }),
                _ => None,
            },
        )
    }

    /// The sizes of the LRU tables pinned in `dir`, if all are there and both flow tables
    /// (one per family) have the same size.
    pub fn pinned_lru(dir: &Path) -> Result<Option<LruSizes>, LoaderError> {
        let size = |name: &'static str| -> Result<Option<u32>, LoaderError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let map = MapData::from_pin(&path).map_err(map_error(name))?;
            Ok(Some(map.info().map_err(map_error(name))?.max_entries()))
        };
        Ok(
            match (
                size(maps::CONNTRACK4)?,
                size(maps::CONNTRACK)?,
                size(maps::LIMIT_KEYS)?,
            ) {
                (Some(flows), Some(flows6), Some(limit_keys)) if flows == flows6 => {
                    Some(LruSizes { flows, limit_keys })
                }
                _ => None,
            },
        )
    }

    /// The generation the program reads (0 or 1), as counted by installs.
    pub fn generation(&self) -> u32 {
        self.live
    }

    fn read_generation(&self) -> Result<u32, LoaderError> {
        let generation: Array<_, u32> = self.array(maps::GENERATION)?;
        Ok(generation.get(&0, 0).map_err(map_error(maps::GENERATION))? & 1)
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// One of the program's arrays, to read.
    fn array<V: aya::Pod>(&self, name: &'static str) -> Result<Array<&MapData, V>, LoaderError> {
        let map = self.ebpf.map(name).ok_or(LoaderError::Missing(name))?;
        Array::try_from(map).map_err(map_error(name))
    }

    /// One of the program's arrays, to write.
    fn array_mut<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<Array<&mut MapData, V>, LoaderError> {
        let map = self.ebpf.map_mut(name).ok_or(LoaderError::Missing(name))?;
        Array::try_from(map).map_err(map_error(name))
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

    /// The program that reads the kernel's clocks (`crate::clock`).
    fn clock_program(&mut self) -> Result<&mut Xdp, LoaderError> {
        self.ebpf
            .program_mut(CLOCK_PROGRAM)
            .ok_or(LoaderError::Missing(CLOCK_PROGRAM))?
            .try_into()
            .map_err(LoaderError::Program)
    }

    /// Attaches the egress program to `interface` with TCX: it runs before the qdisc, after
    /// other programs already attached.
    fn attach_egress_link(
        &mut self,
        interface: &str,
    ) -> Result<aya::programs::tc::SchedClassifierLinkId, LoaderError> {
        let program = self.egress_program()?;
        let id = program
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
        Ok(id)
    }

    /// `attach_pinned` for the egress program: takes over the TCX link pinned at `path`
    /// (swapping this program in atomically) or attaches anew and pins the link there.
    pub fn attach_egress_pinned(
        &mut self,
        interface: &str,
        path: &Path,
    ) -> Result<(), LoaderError> {
        if path.exists() {
            let link: SchedClassifierLink = pinned_link(path)?;
            let id = self
                .egress_program()?
                .attach_to_link(link)
                .map_err(|e| adopt_error(path, e))?;
            self.adopted
                .push((interface.to_string(), Adopted::Egress(id)));
            info!(interface, pin = %path.display(), "took over the pinned TC egress link");
            return Ok(());
        }
        let id = self.attach_egress_link(interface)?;
        let link = self
            .egress_program()?
            .take_link(id)
            .map_err(|e| pin_error(interface, e))?;
        self.held_links
            .push((interface.to_string(), pin_link(link, interface, path)?));
        Ok(())
    }

    /// Lets go of the links of `interface` (made or taken over) without detaching anything:
    /// for an interface that went away, whose links the kernel detached, once their pins
    /// are removed (`Pins::unpin_link`). The kernel frees them when the last holder lets go.
    pub fn release_links(&mut self, interface: &str) -> Result<(), LoaderError> {
        self.held_links.retain(|(name, _)| name != interface);
        let (ours, others) = std::mem::take(&mut self.adopted)
            .into_iter()
            .partition(|(name, _)| name == interface);
        self.adopted = others;
        for (_, adopted) in ours {
            // Closes our file descriptor of the link; a pinned or still attached link stays.
            match adopted {
                Adopted::Xdp(id) => self.program()?.detach(id),
                Adopted::Egress(id) => self.egress_program()?.detach(id),
            }
            .map_err(LoaderError::Program)?;
        }
        Ok(())
    }

    /// Packets arriving on `ifindex` are judged by the rules of `slot`, and packets leaving it
    /// by the rules of `directed_slot(slot, direction::OUT)`.
    pub fn bind(&mut self, ifindex: u32, slot: u32) -> Result<(), LoaderError> {
        debug_assert!(slot < MAX_INTERFACES);
        if ifindex >= MAX_IFINDEX {
            return Err(LoaderError::Ifindex(ifindex));
        }
        let mut interfaces: Array<_, u32> = self.array_mut(maps::INTERFACES)?;
        interfaces
            .set(ifindex, slot + 1, 0)
            .map_err(map_error(maps::INTERFACES))
    }

    /// Forgets the interface with this index: its packets are no longer judged by any
    /// slot's rules (an index the kernel may give to another device).
    pub fn unbind(&mut self, ifindex: u32) -> Result<(), LoaderError> {
        if ifindex >= MAX_IFINDEX {
            return Ok(());
        }
        let mut interfaces: Array<_, u32> = self.array_mut(maps::INTERFACES)?;
        interfaces
            .set(ifindex, UNCONFIGURED, 0)
            .map_err(map_error(maps::INTERFACES))
    }

    /// Forgets every interface but those with these indexes: maps taken over from an earlier
    /// daemon may still bind interfaces that the configuration no longer names.
    pub fn unbind_others(&mut self, keep: &[u32]) -> Result<(), LoaderError> {
        let mut interfaces: Array<_, u32> = self.array_mut(maps::INTERFACES)?;
        let bound: Vec<u32> = (0..MAX_IFINDEX)
            .filter(|ifindex| !keep.contains(ifindex))
            .filter(|ifindex| interfaces.get(ifindex, 0).is_ok_and(|v| v != UNCONFIGURED))
            .collect();
        for ifindex in bound {
            interfaces
                .set(ifindex, UNCONFIGURED, 0)
                .map_err(map_error(maps::INTERFACES))?;
        }
        Ok(())
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
        let (node_base, leaf_base, entry_base, exact_base) = (
            next * cap.nodes,
            next * cap.leaves,
            next * cap.entries,
            next * cap.exact,
        );
        let tables = &self.tables;
        let placed = |node: &Node| Node {
            first: node.first
                + match node.dim {
                    LEAF => leaf_base,
                    EXACT_DST | EXACT_SRC => exact_base,
                    _ => node_base,
                },
            ..*node
        };
        let nodes = compiled.nodes.iter().map(placed);
        Mapped::new::<Node>(&tables.nodes, maps::NODES, GENERATIONS * cap.nodes)?.write(
            node_base as usize,
            cap.nodes as usize,
            nodes,
        )?;
        let leaves = compiled.leaves.iter().map(|entry| entry + entry_base);
        Mapped::new::<u32>(&tables.leaves, maps::LEAVES, GENERATIONS * cap.leaves)?.write(
            leaf_base as usize,
            cap.leaves as usize,
            leaves,
        )?;
        Mapped::new::<Entry>(&tables.entries, maps::ENTRIES, GENERATIONS * cap.entries)?.write(
            entry_base as usize,
            cap.entries as usize,
            compiled.entries.iter().copied(),
        )?;
        let exact = compiled.exact.iter().map(|slot| match slot.leaf.dim {
            LEAF => ExactSlot {
                leaf: Node {
                    first: slot.leaf.first + leaf_base,
                    ..slot.leaf
                },
                ..*slot
            },
            _ => *slot,
        });
        Mapped::new::<ExactSlot>(&tables.exact, maps::EXACT, GENERATIONS * cap.exact)?.write(
            exact_base as usize,
            cap.exact as usize,
            exact,
        )?;
        self.write_limits(&compiled.limits, &compiled.fresh_counters)?;
        let mut policies: Array<_, Policy> = self.array_mut(maps::POLICIES)?;
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
                tree.node = placed(&tree.node);
                if tree.entry != NO_ENTRY {
                    tree.entry += entry_base;
                }
            }
            policies
                .set(policy_index(next, *slot), policy, 0)
                .map_err(map_error(maps::POLICIES))?;
        }
        let mut generation: Array<_, u32> = self.array_mut(maps::GENERATION)?;
        generation
            .set(0, next, 0)
            .map_err(map_error(maps::GENERATION))?;
        self.live = next;
        self.last_flip = Some(Instant::now());
        self.limited = compiled.limits.iter().map(|(slot, _)| *slot).collect();
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
                .map_err(map_error(maps::RULE_STATS))?;
        }
        Ok(())
    }

    /// Applies the rules' verdicts (`true`, licensed) or passes every packet (`false`), on all
    /// interfaces at once: one map update, so no packet sees a mix. A freshly loaded program
    /// passes everything until this is called (see `firewall_common::enforce`).
    pub fn set_enforcing(&mut self, enforcing: bool) -> Result<(), LoaderError> {
        let mut flag: Array<_, u32> = self.array_mut(maps::ENFORCE)?;
        let value = if enforcing {
            enforce::RULES
        } else {
            enforce::PASS_ALL
        };
        flag.set(enforce::INDEX, value, 0)
            .map_err(map_error(maps::ENFORCE))
    }

    /// Notes that the contract store answered at `unix_seconds` (see `enforce::DECIDED_AT`).
    pub fn note_decision(&mut self, unix_seconds: u32) -> Result<(), LoaderError> {
        let mut flag: Array<_, u32> = self.array_mut(maps::ENFORCE)?;
        flag.set(enforce::DECIDED_AT, unix_seconds, 0)
            .map_err(map_error(maps::ENFORCE))
    }

    /// What maps taken over from an earlier daemon say of the licence: enforcing, and when
    /// the store last answered (Unix seconds, 0 if never).
    pub fn noted_decision(&self) -> Result<(bool, u32), LoaderError> {
        let flag: Array<_, u32> = self.array(maps::ENFORCE)?;
        let enforcing = flag
            .get(&enforce::INDEX, 0)
            .map_err(map_error(maps::ENFORCE))?;
        let at = flag
            .get(&enforce::DECIDED_AT, 0)
            .map_err(map_error(maps::ENFORCE))?;
        Ok((enforcing == enforce::RULES, at))
    }

    /// Sets how many drop-log events per second each `log: true` rule may send.
    pub fn set_drop_log(&mut self, control: DropLogControl) -> Result<(), LoaderError> {
        let mut config: Array<_, DropLogControl> = self.array_mut(maps::DROP_LOG_CONFIG)?;
        config
            .set(0, control, 0)
            .map_err(map_error(maps::DROP_LOG_CONFIG))
    }

    /// The drop-log ring buffer and its per-CPU counters (`drop_log::SENT`, ...), for their
    /// one reader (`firewall_user::drop_log::DropLog`); missing the second time.
    pub fn take_drop_log(
        &mut self,
    ) -> Result<(RingBuf<MapData>, PerCpuArray<MapData, u64>), LoaderError> {
        let ring = RingBuf::try_from(take(&mut self.ebpf, maps::DROP_LOG)?)
            .map_err(map_error(maps::DROP_LOG))?;
        let stats = PerCpuArray::try_from(take(&mut self.ebpf, maps::DROP_LOG_STATS)?)
            .map_err(map_error(maps::DROP_LOG_STATS))?;
        Ok((ring, stats))
    }

    /// Sets the live trace's switch, slots and filter (`TraceControl::OFF`: no trace).
    pub fn set_trace(&mut self, control: TraceControl) -> Result<(), LoaderError> {
        let mut map: Array<_, TraceControl> = self.array_mut(maps::TRACE_CONTROL)?;
        map.set(0, control, 0)
            .map_err(map_error(maps::TRACE_CONTROL))
    }

    /// The live trace's maps, for their one user (`firewall_user::trace::Tracer`); missing
    /// the second time.
    pub fn take_trace(&mut self) -> Result<TraceMaps, LoaderError> {
        let ring = RingBuf::try_from(take(&mut self.ebpf, maps::TRACE)?)
            .map_err(map_error(maps::TRACE))?;
        let control = Array::try_from(take(&mut self.ebpf, maps::TRACE_CONTROL)?)
            .map_err(map_error(maps::TRACE_CONTROL))?;
        let stats = PerCpuArray::try_from(take(&mut self.ebpf, maps::TRACE_STATS)?)
            .map_err(map_error(maps::TRACE_STATS))?;
        Ok(TraceMaps {
            ring,
            control,
            stats,
        })
    }

    /// Attaches in native (driver) mode, falling back to generic (skb) mode with a warning.
    fn attach_link(&mut self, interface: &str) -> Result<(XdpMode, XdpLinkId), LoaderError> {
        let program = self.program()?;
        match program.attach(interface, XdpMode::Driver) {
            Ok(id) => {
                info!(interface, mode = "driver", "attached XDP program");
                Ok((XdpMode::Driver, id))
            }
            Err(ProgramError::UnknownInterface { name }) => {
                Err(LoaderError::UnknownInterface(name))
            }
            Err(driver_error) => {
                warn!(interface, error = %driver_error, "native XDP refused; falling back to generic (skb) mode, which is slower");
                let id = program.attach(interface, XdpMode::Skb).map_err(|error| {
                    LoaderError::Attach {
                        interface: interface.to_string(),
                        error,
                    }
                })?;
                info!(interface, mode = "skb", "attached XDP program");
                Ok((XdpMode::Skb, id))
            }
        }
    }

    /// Attaches through the link pinned at `path`, or attaches anew and pins the link there.
    /// A pinned link is taken over by swapping this program into it, atomically: no packet
    /// goes unjudged. Returns the mode of a new attachment, `None` for a link taken over.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        path: &Path,
    ) -> Result<Option<XdpMode>, LoaderError> {
        if path.exists() {
            let link: XdpLink = pinned_link(path)?;
            let id = self
                .program()?
                .attach_to_link(link)
                .map_err(|e| adopt_error(path, e))?;
            self.adopted.push((interface.to_string(), Adopted::Xdp(id)));
            info!(interface, pin = %path.display(), "took over the pinned XDP link");
            return Ok(None);
        }
        let (mode, id) = self.attach_link(interface)?;
        let link = self
            .program()?
            .take_link(id)
            .map_err(|e| pin_error(interface, e))?;
        // Held while we run, as the program holds the links it made.
        self.held_links
            .push((interface.to_string(), pin_link(link, interface, path)?));
        Ok(Some(mode))
    }

    /// Packets and bytes for a directed slot (`firewall_common::directed_slot`; an interface's
    /// ingress slot is its slot) and verdict, summed over CPUs.
    pub fn counter(&self, slot: u32, verdict: Verdict) -> Result<Counter, LoaderError> {
        sum(&self.stats, counter_index(slot, verdict), maps::STATS)
    }

    /// Packets and bytes of an interface slot's frames of a class, summed over CPUs.
    pub fn class_counter(&self, slot: u32, class: FrameClass) -> Result<Counter, LoaderError> {
        sum(
            &self.class_stats,
            class_index(slot, class as u32),
            maps::CLASS_STATS,
        )
    }

    /// Packets and bytes decided by the rule with this counter slot, summed over CPUs.
    pub fn rule_counter(&self, slot: u32) -> Result<Counter, LoaderError> {
        sum(&self.rule_stats, slot, maps::RULE_STATS)
    }
}

impl Dataplane {
    /// Writes each limit rule's `Limit` by counter slot, before `install` makes its entries
    /// live. A limit equal to the one its slot holds keeps that epoch, and so its buckets (a
    /// reload keeps the buckets of unchanged rules); a changed limit, or a slot new to its
    /// rule (`fresh`), gets the next epoch, whose buckets start full.
    fn write_limits(&mut self, limits: &[(u32, Limit)], fresh: &[u32]) -> Result<(), LoaderError> {
        let mut array: Array<_, Limit> = self.array_mut(maps::LIMITS)?;
        for &(slot, limit) in limits {
            let held = array.get(&slot, 0).map_err(map_error(maps::LIMITS))?;
            let unchanged =
                held.epoch != 0 && !fresh.contains(&slot) && Limit { epoch: 0, ..held } == limit;
            if unchanged {
                continue;
            }
            let epoch = match held.epoch.wrapping_add(1) {
                0 => 1,
                next => next,
            };
            array
                .set(slot, Limit { epoch, ..limit }, 0)
                .map_err(map_error(maps::LIMITS))?;
        }
        Ok(())
    }

    /// Is the rule with counter slot `slot` a limit rule of the live rule set?
    pub fn is_limited(&self, slot: u32) -> bool {
        self.limited.contains(&slot)
    }

    /// The limit of a counter slot as the kernel holds it (epoch 0: none was written).
    pub fn limit(&self, slot: u32) -> Result<Limit, LoaderError> {
        let array: Array<_, Limit> = self.array(maps::LIMITS)?;
        array.get(&slot, 0).map_err(map_error(maps::LIMITS))
    }

    /// Makes the limits count time from a fixed clock (nanoseconds; 0: the kernel's clock
    /// again). Tests only: the daemon never sets it.
    pub fn set_limit_clock(&mut self, now_ns: u64) -> Result<(), LoaderError> {
        let mut array: Array<_, u64> = self.array_mut(maps::LIMIT_CLOCK)?;
        array
            .set(0, now_ns, 0)
            .map_err(map_error(maps::LIMIT_CLOCK))
    }

    /// The rate limits' tables on handles of their own (`crate::limits::LimitTables`), for
    /// the census, which must not hold the dataplane while it walks every key.
    pub fn limit_tables(&self) -> Result<crate::limits::LimitTables, LoaderError> {
        let id = |name: &'static str| -> Result<u32, LoaderError> {
            let map = self.ebpf.map(name).ok_or(LoaderError::Missing(name))?;
            let data = match map {
                Map::LruHashMap(data) | Map::Array(data) => data,
                _ => return Err(LoaderError::Missing(name)),
            };
            Ok(data.info().map_err(map_error(name))?.id())
        };
        Ok(crate::limits::LimitTables::open(
            id(maps::LIMIT_KEYS)?,
            id(maps::LIMITS)?,
        )?)
    }

    /// Live per-address buckets by limit rule counter slot (`LimitTables::census`).
    pub fn limit_census(&self) -> Result<std::collections::HashMap<u32, u64>, LoaderError> {
        Ok(self.limit_tables()?.census()?)
    }

    /// Writes the timeouts (and, in tests, a fixed clock) the kernel judges flows by, with the
    /// flow clock related afresh to CLOCK_MONOTONIC_COARSE (`crate::clock`). The presence
    /// filter's half stays the one read (`presence` of `settings` is ignored); with none read
    /// yet (new maps), the filter is built and read from now on.
    pub fn set_conntrack(&mut self, settings: &ConntrackSettings) -> Result<(), LoaderError> {
        let mut settings = *settings;
        if let Some(tick_ns) = self.tick_ns {
            let reading =
                crate::clock::read(self.clock_program()?).map_err(LoaderError::Program)?;
            settings.tick_ns = tick_ns;
            settings.offset_ns = reading.offset_ns(tick_ns);
        }
        settings.presence = self.conntrack_settings()?.presence;
        settings.presence_bits = u64::from(self.presence.bits);
        self.write_conntrack_settings(settings)?;
        if settings.presence == 0 {
            self.rebuild_presence()?;
        }
        Ok(())
    }

    /// Rebuilds the half of the presence filter that the kernel does not read from the keys
    /// in the flow tables, then has the kernel read it (`firewall_common::conntrack::presence`),
    /// so that flows gone since the last rebuild (expired, evicted, flushed) no longer cost
    /// a packet without a flow its lookup. On an error the kernel keeps reading the old half,
    /// which is complete.
    pub fn rebuild_presence(&mut self) -> Result<(), LoaderError> {
        let mut settings = self.conntrack_settings()?;
        let half = Presence::other(settings.presence);
        let mut mapped = Mapped::new::<[u8; conntrack::presence::BLOCK as usize]>(
            &self.presence_map,
            maps::FLOW_PRESENCE,
            self.presence.elements(),
        )?;
        // Zeroed before the walk: a flow inserted before this is found by the walk, one
        // inserted after it is marked by the kernel.
        self.presence.zero(mapped.bytes(), half);
        let bits = self.presence.bits;
        let flows = flows_in(&mut self.ebpf)?;
        let mut slots = Vec::new();
        for key in flows.ipv4.keys() {
            let key = key.map_err(map_error(maps::CONNTRACK4))?;
            slots.push(conntrack::presence::of_key4(&key, bits));
        }
        for key in flows.ipv6.keys() {
            let key = key.map_err(map_error(maps::CONNTRACK))?;
            slots.push(conntrack::presence::of_key6(&key, bits));
        }
        self.presence.mark(mapped.bytes(), half, slots.into_iter());
        drop(mapped);
        settings.presence = u64::from(half) + 1;
        settings.presence_bits = u64::from(bits);
        self.write_conntrack_settings(settings)?;
        self.presence.switched();
        Ok(())
    }

    /// The `ConntrackSettings` the kernel reads.
    fn conntrack_settings(&self) -> Result<ConntrackSettings, LoaderError> {
        let array: Array<_, ConntrackSettings> = self.array(maps::CONNTRACK_SETTINGS)?;
        array
            .get(&0, 0)
            .map_err(map_error(maps::CONNTRACK_SETTINGS))
    }

    fn write_conntrack_settings(&mut self, settings: ConntrackSettings) -> Result<(), LoaderError> {
        let mut array: Array<_, ConntrackSettings> = self.array_mut(maps::CONNTRACK_SETTINGS)?;
        array
            .set(0, settings, 0)
            .map_err(map_error(maps::CONNTRACK_SETTINGS))
    }

    /// The flow table, both families.
    pub fn conntrack_flows(&mut self) -> Result<Flows<&mut MapData>, LoaderError> {
        flows_in(&mut self.ebpf)
    }

    /// Sum over CPUs of a `conntrack::event` count.
    pub fn conntrack_event(&self, event: u32) -> Result<u64, LoaderError> {
        per_cpu_sum(&self.ebpf, maps::CONNTRACK_EVENTS, event)
    }

    /// Packets passed by tracked flows on an interface slot.
    pub fn conntrack_hits(&self, slot: u32) -> Result<u64, LoaderError> {
        per_cpu_sum(&self.ebpf, maps::CONNTRACK_HITS, slot)
    }

    /// Flows deleted by `smf-firewall conntrack flush` since load.
    pub fn conntrack_flushed(&self) -> Result<u64, LoaderError> {
        let array: Array<_, u64> = self.array(maps::CONNTRACK_FLUSHED)?;
        array
            .get(&conntrack::flushed::FLOWS, 0)
            .map_err(map_error(maps::CONNTRACK_FLUSHED))
    }

    /// Kernel memory of the flow table (both families) and its presence filter in bytes, as
    /// the kernel accounts it (`memlock` in the maps' fdinfo).
    pub fn conntrack_memory(&self) -> Option<u64> {
        let lru = |name| match self.ebpf.map(name)? {
            Map::LruHashMap(data) => memlock(data),
            _ => None,
        };
        Some(lru(maps::CONNTRACK4)? + lru(maps::CONNTRACK)? + memlock(&self.presence_map)?)
    }
}

/// The flow tables of `ebpf` (`Dataplane::conntrack_flows`), borrowing only the object.
fn flows_in(ebpf: &mut Ebpf) -> Result<Flows<&mut MapData>, LoaderError> {
    let [ipv4, ipv6] = ebpf.maps_disjoint_mut([maps::CONNTRACK4, maps::CONNTRACK]);
    let ipv4 = ipv4.ok_or(LoaderError::Missing(maps::CONNTRACK4))?;
    let ipv6 = ipv6.ok_or(LoaderError::Missing(maps::CONNTRACK))?;
    Ok(Flows {
        ipv4: HashMap::try_from(ipv4).map_err(map_error(maps::CONNTRACK4))?,
        ipv6: HashMap::try_from(ipv6).map_err(map_error(maps::CONNTRACK))?,
    })
}

/// `memlock` of a map, from its fdinfo.
fn memlock(map: &MapData) -> Option<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

fn per_cpu_sum(ebpf: &Ebpf, name: &'static str, index: u32) -> Result<u64, LoaderError> {
    let map = ebpf.map(name).ok_or(LoaderError::Missing(name))?;
    let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error(name))?;
    let values = array.get(&index, 0).map_err(map_error(name))?;
    Ok(values.iter().sum())
}

/// The link pinned at `path`, as the program type's link.
fn pinned_link<L: TryFrom<FdLink, Error = LinkError>>(path: &Path) -> Result<L, LoaderError> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| adopt_error(path, e))?;
    L::try_from(FdLink::from(pinned)).map_err(|e| adopt_error(path, e))
}

/// Pins a link the program made at `path`; returns it, to be held while the daemon runs.
fn pin_link<L>(link: L, interface: &str, path: &Path) -> Result<FdLink, LoaderError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let fd_link = FdLink::try_from(link).map_err(|e| {
        pin_error(
            interface,
            format!("{e} (the kernel attached through netlink, which has no link to pin)"),
        )
    })?;
    let pinned = fd_link.pin(path).map_err(|e| pin_error(interface, e))?;
    Ok(FdLink::from(pinned))
}

fn adopt_error(path: &Path, reason: impl std::fmt::Display) -> LoaderError {
    LoaderError::AdoptLink {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn pin_error(interface: &str, reason: impl std::fmt::Display) -> LoaderError {
    LoaderError::PinLink {
        interface: interface.to_string(),
        reason: reason.to_string(),
    }
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

/// The interface a pinned XDP or TCX link is attached to: `Some(0)` once the kernel detached
/// it (its device went away), `None` if nothing is pinned at `path`. An interface deleted
/// and re-created under the same name is a new device that such a link is not on.
pub fn pinned_link_ifindex(path: &Path) -> Result<Option<u32>, LoaderError> {
    use std::os::fd::{FromRawFd, OwnedFd};

    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return Err(adopt_error(path, "the path has a NUL byte"));
    };
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags, path_fd.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let attr = ObjGet {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `attr` is a valid BPF_OBJ_GET attribute whose pathname points to `c_path`,
    // alive for the call; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            7, // BPF_OBJ_GET
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(adopt_error(path, error));
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then a union whose xdp and tcx members both
    // start with the ifindex, at offset 16.
    let mut info = [0u64; 32];
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = GetInfo {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `info` is a writable buffer of `info_len` bytes, alive for the call; the
    // kernel writes at most that many bytes into it and updates `info_len`.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            15, // BPF_OBJ_GET_INFO_BY_FD
            &mut attr as *mut GetInfo,
            std::mem::size_of::<GetInfo>(),
        )
    };
    if result < 0 {
        return Err(adopt_error(path, std::io::Error::last_os_error()));
    }
    drop(fd);
    let bytes = info[2].to_ne_bytes();
    Ok(Some(u32::from_ne_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3],
    ])))
}
