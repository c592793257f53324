//! Connection tracking in userspace: the timeouts the kernel is given, the daemon's sweep of
//! expired flows, and what `smf-firewall conntrack` (and `conntrack flush`) read and delete
//! through the maps the daemon pins. The kernel side is `firewall-ebpf/src/conntrack.rs`.

use std::{
    borrow::{Borrow, BorrowMut},
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, MapError},
};
use firewall_common::{
    ConntrackSettings, Flow, FlowKey, FlowKey4,
    conntrack::{flushed, state},
};

use firewall_common::{family, protocol};

use crate::object::maps;

/// Idle timeouts per state (SEIL's `state-ttl`), indexed by `conntrack::state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts(pub [Duration; state::COUNT]);

impl Default for Timeouts {
    /// Linux's nf_conntrack defaults: TCP SYN_SENT 120 s, SYN_RECV 60 s, ESTABLISHED 5 days,
    /// FIN_WAIT 120 s, TIME_WAIT 120 s, CLOSE 10 s; UDP 30 s, UDP stream 120 s; ICMP 30 s.
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts([
            s(120),
            s(60),
            s(432_000),
            s(120),
            s(120),
            s(10),
            s(30),
            s(120),
            s(30),
        ])
    }
}

impl Timeouts {
    /// What the kernel is given: nanoseconds, the real clock, tracking off. The daemon turns
    /// tracking on when a rule has `state: true` (a rule set without one pays nothing for the
    /// flow table), and keeps it on for the flows already tracked.
    pub fn settings(&self) -> ConntrackSettings {
        ConntrackSettings {
            timeouts_ns: self
                .0
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            fixed_clock: 0,
            fixed_now_ns: 0,
            // Filled by `Dataplane::set_conntrack`.
            tick_ns: 0,
            offset_ns: 0,
            tracking: 0,
            presence: 0,
            presence_bits: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error(
        "cannot open {path}: {error} (has `smf-firewall run` pinned its maps under this config's `pin_path`?)"
    )]
    Open { path: PathBuf, error: MapError },
    #[error("{path}: {error}")]
    Map { path: PathBuf, error: MapError },
}

/// The kernel's "now" for flows: CLOCK_MONOTONIC_COARSE (which its jiffies are calibrated to,
/// `crate::clock`), unless the settings fix it (tests).
pub fn now_ns(settings: &ConntrackSettings) -> u64 {
    if settings.fixed_clock != 0 {
        return settings.fixed_now_ns;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and has no other preconditions.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The flow table: one LRU hash per address family, each `conntrack.max_entries` long.
pub struct Flows<T> {
    /// `CONNTRACK4`.
    pub ipv4: HashMap<T, FlowKey4, Flow>,
    /// `CONNTRACK`.
    pub ipv6: HashMap<T, FlowKey, Flow>,
}

impl<T: Borrow<MapData>> Flows<T> {
    /// Every entry of both tables, expired or not; IPv4 keys in `FlowKey`'s layout.
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, Flow)> + '_ {
        let ipv4 = self.ipv4.iter().flatten();
        let ipv6 = self.ipv6.iter().flatten();
        ipv4.map(|(key, flow)| (FlowKey::from(key), flow))
            .chain(ipv6)
    }

    /// Entries of each table, expired or not: (IPv4, IPv6).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ipv4.keys().flatten().count() as u64,
            self.ipv6.keys().flatten().count() as u64,
        )
    }
}

/// What a sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Flows left, all live.
    pub live: u64,
    /// Expired flows deleted.
    pub expired: u64,
}

/// Deletes the expired flows of both tables. A flow the kernel deletes or refreshes meanwhile
/// is skipped.
pub fn sweep<T: BorrowMut<MapData>>(flows: &mut Flows<T>, settings: &ConntrackSettings) -> Swept {
    let now = now_ns(settings);
    let ipv4 = sweep_table(&mut flows.ipv4, settings, now);
    let ipv6 = sweep_table(&mut flows.ipv6, settings, now);
    Swept {
        live: ipv4.live + ipv6.live,
        expired: ipv4.expired + ipv6.expired,
    }
}

fn sweep_table<T: BorrowMut<MapData>, K: Pod>(
    flows: &mut HashMap<T, K, Flow>,
    settings: &ConntrackSettings,
    now: u64,
) -> Swept {
    let mut swept = Swept::default();
    let mut doomed = Vec::new();
    for (key, flow) in flows.iter().flatten() {
        if flow.expired(settings, now) {
            doomed.push(key);
        } else {
            swept.live += 1;
        }
    }
    for key in doomed {
        // Looked up again: a packet may have revived it since.
        let still_expired = flows
            .get(&key, 0)
            .is_ok_and(|flow| flow.expired(settings, now));
        if still_expired && flows.remove(&key).is_ok() {
            swept.expired += 1;
        }
    }
    swept
}

/// Live flows by (protocol, state) and by family (each table), and the number of expired ones
/// not swept yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub by_state: BTreeMap<(&'static str, &'static str), u64>,
    /// Live IPv4 flows (`CONNTRACK4`).
    pub ipv4: u64,
    /// Live IPv6 flows (`CONNTRACK`).
    pub ipv6: u64,
    pub expired: u64,
}

pub fn census<T: Borrow<MapData>>(flows: &Flows<T>, settings: &ConntrackSettings) -> Census {
    let now = now_ns(settings);
    let mut census = Census::default();
    for (key, flow) in flows.iter() {
        if flow.expired(settings, now) {
            census.expired += 1;
            continue;
        }
        if key.family == family::IPV4 {
            census.ipv4 += 1;
        } else {
            census.ipv6 += 1;
        }
        let protocol = protocol::name(key.protocol).unwrap_or("other");
        let state = state::NAMES
            .get(usize::from(flow.state))
            .copied()
            .unwrap_or("unknown");
        *census.by_state.entry((protocol, state)).or_default() += 1;
    }
    census
}

/// The flow table and its companions, as a daemon pinned them (`crate::pins`).
pub struct Pinned {
    dir: PathBuf,
    pub flows: Flows<MapData>,
    pub settings: ConntrackSettings,
    flushed: Array<MapData, u64>,
}

impl Pinned {
    /// The maps in the newest maps directory under `pins` (after a start, the only one).
    pub fn open_current(pins: &crate::pins::Pins) -> Result<Pinned, ConntrackError> {
        let dirs = pins.maps_dirs().unwrap_or_default();
        let dir = dirs
            .last()
            .map_or_else(|| pins.root().join("maps-*"), |d| d.path.clone());
        Pinned::open(&dir)
    }

    pub fn open(dir: &Path) -> Result<Pinned, ConntrackError> {
        let open = |file: &str| {
            let path = dir.join(file);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|error| ConntrackError::Open { path, error })
        };
        let map_error = |file: &str| {
            let path = dir.join(file);
            move |error| ConntrackError::Map { path, error }
        };
        let flows = Flows {
            ipv4: HashMap::try_from(open(maps::CONNTRACK4)?)
                .map_err(map_error(maps::CONNTRACK4))?,
            ipv6: HashMap::try_from(open(maps::CONNTRACK)?).map_err(map_error(maps::CONNTRACK))?,
        };
        let settings: Array<MapData, ConntrackSettings> =
            Array::try_from(open(maps::CONNTRACK_SETTINGS)?)
                .map_err(map_error(maps::CONNTRACK_SETTINGS))?;
        let settings = settings
            .get(&0, 0)
            .map_err(map_error(maps::CONNTRACK_SETTINGS))?;
        let flushed = Array::try_from(open(maps::CONNTRACK_FLUSHED)?)
            .map_err(map_error(maps::CONNTRACK_FLUSHED))?;
        Ok(Pinned {
            dir: dir.to_path_buf(),
            flows,
            settings,
            flushed,
        })
    }

    pub fn census(&self) -> Census {
        census(&self.flows, &self.settings)
    }

    /// Does the kernel look packets up in the flow table (the daemon's setting)?
    pub fn tracking(&self) -> bool {
        self.settings.tracking != 0
    }

    /// Deletes every flow of both tables and adds their number to the daemon's flush counter;
    /// returns it.
    pub fn flush(&mut self) -> Result<u64, ConntrackError> {
        let deleted = flush_table(&mut self.flows.ipv4) + flush_table(&mut self.flows.ipv6);
        let path = self.dir.join(maps::CONNTRACK_FLUSHED);
        let map_error = |error| ConntrackError::Map {
            path: path.clone(),
            error,
        };
        let before = self.flushed.get(&flushed::FLOWS, 0).map_err(map_error)?;
        self.flushed
            .set(flushed::FLOWS, before + deleted, 0)
            .map_err(map_error)?;
        Ok(deleted)
    }
}

/// Deletes every entry of one table; returns how many it deleted.
fn flush_table<T: BorrowMut<MapData>, K: Pod>(flows: &mut HashMap<T, K, Flow>) -> u64 {
    let keys: Vec<K> = flows.keys().flatten().collect();
    keys.iter().filter(|key| flows.remove(key).is_ok()).count() as u64
}
