//! The flow tables' presence filter from user space (`firewall_common::conntrack::presence`):
//! its size, and the rebuild of the half the kernel does not read from the keys in the tables,
//! which drops the marks of flows gone since the last one. The kernel side marks and reads it
//! (`firewall-ebpf/src/conntrack.rs`).

use std::time::{Duration, Instant};

use aya::maps::MapData;
use firewall_common::conntrack::presence::{self, BLOCK};

use crate::{
    loader::{LoaderError, Mapped, map_error},
    object::maps,
};

/// `FLOW_PRESENCE` and when its halves last switched.
pub(crate) struct Presence {
    map: MapData,
    /// log2 of the slots of a half, from the map's own size (a pinned map keeps its size).
    pub bits: u32,
    switched: Option<Instant>,
}

impl Presence {
    pub fn new(map: MapData) -> Result<Self, LoaderError> {
        let elements = map
            .info()
            .map_err(map_error(maps::FLOW_PRESENCE))?
            .max_entries();
        let slots = u64::from(elements / 2) * u64::from(BLOCK);
        Ok(Presence {
            map,
            bits: slots.trailing_zeros(),
            switched: None,
        })
    }

    pub fn map(&self) -> &MapData {
        &self.map
    }

    /// The half to rebuild while `read` (`ConntrackSettings::presence`) is read.
    pub fn other(read: u64) -> u32 {
        // 0 (none read): half 0; 1 (half 0): half 1; 2 (half 1): half 0.
        (read & 1) as u32
    }

    /// Zeroes `half`, once no packet can still be reading it (`presence::GRACE_MS` after the
    /// last switch).
    pub fn zero(&mut self, half: u32) -> Result<(), LoaderError> {
        if let Some(rest) = self.switched.and_then(|switched| {
            Duration::from_millis(presence::GRACE_MS).checked_sub(switched.elapsed())
        }) {
            std::thread::sleep(rest);
        }
        let (mapped, len) = self.half(half)?;
        // SAFETY: the half's `len` bytes from its start are inside the mapping (`half`).
        unsafe { std::ptr::write_bytes(mapped.ptr().as_ptr().add(half_start(half, len)), 0, len) };
        Ok(())
    }

    /// Marks `slots` in `half`.
    pub fn mark(&mut self, half: u32, slots: impl Iterator<Item = u32>) -> Result<(), LoaderError> {
        let (mapped, len) = self.half(half)?;
        let start = half_start(half, len);
        for slot in slots {
            let at = slot as usize & (len - 1);
            // SAFETY: start + at < start + len: inside the mapping (`half`).
            unsafe { mapped.ptr().as_ptr().add(start + at).write_volatile(1) };
        }
        Ok(())
    }

    /// Records that the kernel now reads the other half.
    pub fn switched(&mut self) {
        self.switched = Some(Instant::now());
    }

    /// The whole map, mapped, and the length of a half in bytes.
    fn half(&self, half: u32) -> Result<(Mapped<'_>, usize), LoaderError> {
        debug_assert!(half < 2);
        let elements = presence::elements(self.bits);
        let mapped = Mapped::new::<[u8; BLOCK as usize]>(&self.map, maps::FLOW_PRESENCE, elements)?;
        Ok((mapped, 1 << self.bits))
    }
}

fn half_start(half: u32, len: usize) -> usize {
    (half as usize & 1) * len
}
