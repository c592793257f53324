//! The rate limits' tables seen from user space on handles of their own: the census of live
//! per-address buckets walks every key of `LIMIT_KEYS` (one system call each), which must not
//! hold the dataplane (reloads, scrapes and `status` wait on it) for the seconds a large table
//! takes.

use std::collections::HashMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError};
use firewall_common::limit::{Limit, LimitBucket, LimitKey};

use crate::object::maps;

/// A rate-limit table that could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {error}")]
pub struct TableError {
    map: &'static str,
    #[source]
    error: MapError,
}

/// `LIMIT_KEYS` and `LIMITS`, opened by id.
pub struct LimitTables {
    keys: BpfHashMap<MapData, LimitKey, LimitBucket>,
    limits: Array<MapData, Limit>,
    capacity: u32,
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> TableError {
    move |error| TableError { map, error }
}

impl LimitTables {
    pub(crate) fn open(keys: u32, limits: u32) -> Result<LimitTables, TableError> {
        let keys = MapData::from_id(keys).map_err(map_error(maps::LIMIT_KEYS))?;
        let capacity = keys
            .info()
            .map_err(map_error(maps::LIMIT_KEYS))?
            .max_entries();
        let keys = BpfHashMap::try_from(aya::maps::Map::LruHashMap(keys))
            .map_err(map_error(maps::LIMIT_KEYS))?;
        let limits = MapData::from_id(limits).map_err(map_error(maps::LIMITS))?;
        let limits =
            Array::try_from(aya::maps::Map::Array(limits)).map_err(map_error(maps::LIMITS))?;
        Ok(LimitTables {
            keys,
            limits,
            capacity,
        })
    }

    /// Entries the per-address bucket table holds at most (`limits.max_keys`).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Live per-address buckets by limit rule counter slot: the keys whose epoch is their
    /// slot's current one (the others are stale and wait for the LRU to evict them). At most
    /// the table's size in keys, since a key evicted under the walk restarts it from the
    /// first: under a flood the census is an estimate.
    pub fn census(&self) -> Result<HashMap<u32, u64>, TableError> {
        let mut epochs = HashMap::new();
        let mut census = HashMap::new();
        for key in self.keys.keys().take(self.capacity as usize) {
            let Ok(key) = key else { break };
            let epoch = *epochs
                .entry(key.slot)
                .or_insert_with(|| self.limits.get(&key.slot, 0).map_or(0, |l| l.epoch));
            if epoch != 0 && epoch == key.epoch {
                *census.entry(key.slot).or_insert(0) += 1;
            }
        }
        Ok(census)
    }
}
