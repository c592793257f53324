//! Connection tracking in userspace: the timeouts the kernel is given, the daemon's sweep of
//! expired flows, and what `smf-firewall conntrack` (and `conntrack flush`) read and delete
//! through the maps the daemon pins. The kernel side is `firewall-ebpf/src/conntrack.rs`.

use std::{
    borrow::{Borrow, BorrowMut},
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use firewall_common::{
    ConntrackSettings, Flow, FlowKey,
    conntrack::{flushed, state},
};

use firewall_common::protocol;

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
            tracking: 0,
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

/// The kernel's "now" for flows: CLOCK_MONOTONIC_COARSE, the clock of
/// `bpf_ktime_get_coarse_ns`, unless the settings fix it (tests).
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

/// What a sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Flows left, all live.
    pub live: u64,
    /// Expired flows deleted.
    pub expired: u64,
}

/// Deletes the expired flows. A flow the kernel deletes or refreshes meanwhile is skipped.
pub fn sweep<T: BorrowMut<MapData>>(
    flows: &mut HashMap<T, FlowKey, Flow>,
    settings: &ConntrackSettings,
) -> Swept {
    let now = now_ns(settings);
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

/// Live flows by (protocol, state) and the number of expired ones not swept yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub by_state: BTreeMap<(&'static str, &'static str), u64>,
    pub expired: u64,
}

pub fn census<T: Borrow<MapData>>(
    flows: &HashMap<T, FlowKey, Flow>,
    settings: &ConntrackSettings,
) -> Census {
    let now = now_ns(settings);
    let mut census = Census::default();
    for (key, flow) in flows.iter().flatten() {
        if flow.expired(settings, now) {
            census.expired += 1;
            continue;
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
    pub flows: HashMap<MapData, FlowKey, Flow>,
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
        let flows =
            HashMap::try_from(open(maps::CONNTRACK)?).map_err(map_error(maps::CONNTRACK))?;
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

    /// Deletes every flow and adds their number to the daemon's flush counter; returns it.
    pub fn flush(&mut self) -> Result<u64, ConntrackError> {
        let keys: Vec<FlowKey> = self.flows.keys().flatten().collect();
        let mut deleted = 0;
        for key in keys {
            if self.flows.remove(&key).is_ok() {
                deleted += 1;
            }
        }
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
