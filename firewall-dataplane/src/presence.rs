//! The flow tables' presence filter from user space (`firewall_common::conntrack::presence`):
//! its size, which half to rebuild, and the rebuild's writes into the mapped array (the
//! loader maps it and walks the tables, `Dataplane::rebuild_presence`). The kernel side marks
//! and reads it (`firewall-ebpf/src/conntrack.rs`).

use std::time::{Duration, Instant};

use firewall_common::conntrack::presence::{self, BLOCK};

/// The filter's size and when its halves last switched.
pub(crate) struct Presence {
    /// log2 of the slots of a half, from the map's own size (a pinned map keeps its size).
    pub bits: u32,
    switched: Option<Instant>,
}

impl Presence {
    /// The filter of a `FLOW_PRESENCE` array of `elements` elements.
    pub fn new(elements: u32) -> Self {
        let slots = u64::from(elements / 2) * u64::from(BLOCK);
        Presence {
            bits: slots.trailing_zeros(),
            switched: None,
        }
    }

    /// `FLOW_PRESENCE` elements, both halves.
    pub fn elements(&self) -> u32 {
        presence::elements(self.bits)
    }

    /// The half to rebuild while `read` (`ConntrackSettings::presence`) is read.
    pub fn other(read: u64) -> u32 {
        // 0 (none read): half 0; 1 (half 0): half 1; 2 (half 1): half 0.
        (read & 1) as u32
    }

    /// Zeroes `half` of the mapped array `bytes`, once no packet can still be reading it
    /// (`presence::GRACE_MS` after the last switch).
    pub fn zero(&self, bytes: &mut [u8], half: u32) {
        if let Some(rest) = self.switched.and_then(|switched| {
            Duration::from_millis(presence::GRACE_MS).checked_sub(switched.elapsed())
        }) {
            std::thread::sleep(rest);
        }
        if let Some(half) = self.half(bytes, half) {
            // Volatile: the kernel writes the same memory meanwhile.
            for byte in half {
                // SAFETY: a valid, exclusive reference into the mapping.
                unsafe { std::ptr::write_volatile(byte, 0) };
            }
        }
    }

    /// Marks `slots` in `half` of the mapped array `bytes`.
    pub fn mark(&self, bytes: &mut [u8], half: u32, slots: impl Iterator<Item = u32>) {
        if let Some(half) = self.half(bytes, half) {
            let mask = half.len() - 1;
            for slot in slots {
                // SAFETY: a valid, exclusive reference into the mapping.
                unsafe { std::ptr::write_volatile(&mut half[slot as usize & mask], 1) };
            }
        }
    }

    /// Records that the kernel now reads the other half.
    pub fn switched(&mut self) {
        self.switched = Some(Instant::now());
    }

    /// Half `half` (0 or 1) of the mapped array `bytes`, if it is as large as the filter.
    fn half<'a>(&self, bytes: &'a mut [u8], half: u32) -> Option<&'a mut [u8]> {
        let len = 1usize << self.bits;
        let start = (half as usize & 1) * len;
        bytes.get_mut(start..start + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_zeroes_and_marks_only_its_half() {
        let mut presence = Presence::new(presence::elements(presence::MIN_BITS));
        assert_eq!(presence.bits, presence::MIN_BITS);
        let len = 1usize << presence.bits;
        let mut bytes = vec![1u8; 2 * len];
        assert_eq!(Presence::other(0), 0);
        assert_eq!(Presence::other(1), 1);
        assert_eq!(Presence::other(2), 0);
        presence.zero(&mut bytes, 1);
        presence.mark(&mut bytes, 1, [3, 7 + len as u32].into_iter());
        assert!(bytes[..len].iter().all(|&b| b == 1), "half 0 untouched");
        let marked: Vec<usize> = (0..len).filter(|&i| bytes[len + i] != 0).collect();
        assert_eq!(marked, [3, 7], "slots wrap into the half");
        presence.switched();
        let started = Instant::now();
        presence.zero(&mut bytes, 0);
        assert!(started.elapsed() >= Duration::from_millis(presence::GRACE_MS - 1));
        assert!(bytes[..len].iter().all(|&b| b == 0));
    }
}
