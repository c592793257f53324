//! The flow clock: the kernel reads jiffies (an inlined load) where CLOCK_MONOTONIC_COARSE
//! would be a helper call, and turns them into that clock's nanoseconds with a tick length
//! and an offset (`ConntrackSettings::tick_ns`, `offset_ns`). Both come from the kernel's own
//! two clocks read at one instant by the program `smf_clock` (`firewall-ebpf`), run here with
//! BPF_PROG_TEST_RUN: the tick from two readings a few ticks apart, the offset from one.
//! The kernel advances jiffies from the monotonic clock, a tick at a time, so the two stay
//! in step once related.

use std::time::{Duration, Instant};

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};

/// The kernel's clocks at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub jiffies: u64,
    /// CLOCK_MONOTONIC_COARSE, in nanoseconds.
    pub coarse_ns: u64,
}

impl Reading {
    /// The offset that makes `jiffies × tick_ns + offset` this reading's coarse time.
    pub fn offset_ns(&self, tick_ns: u64) -> u64 {
        self.coarse_ns
            .wrapping_sub(self.jiffies.wrapping_mul(tick_ns))
    }
}

/// Reads both clocks through `program` (`smf_clock`).
pub fn read(program: &Xdp) -> Result<Reading, ProgramError> {
    // The smallest frame BPF_PROG_TEST_RUN takes for XDP: an Ethernet header's worth.
    let frame = [0u8; 16];
    let mut out = [0u8; 16];
    program.test_run(TestRunOptions {
        data_in: Some(&frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    let word = |i: usize| u64::from_ne_bytes(out[i..i + 8].try_into().expect("8 bytes"));
    Ok(Reading {
        jiffies: word(0),
        coarse_ns: word(8),
    })
}

/// The kernel's tick (its `TICK_NSEC`) from two readings at least one tick apart: the nearest
/// whole HZ to the ticks per second they show. `None` if they are not.
pub fn tick_ns(first: Reading, second: Reading) -> Option<u64> {
    let ticks = second.jiffies.checked_sub(first.jiffies)?;
    let ns = second.coarse_ns.checked_sub(first.coarse_ns)?;
    if ticks == 0 || ns == 0 {
        return None;
    }
    let hz = (ticks as f64 * 1e9 / ns as f64).round() as u64;
    // The kernel's TICK_NSEC for that HZ.
    (hz > 0).then(|| (1_000_000_000 + hz / 2) / hz)
}

/// Ticks between the two readings `calibrate` takes: enough that a reading taken just before
/// a tick and one just after cannot round to the wrong HZ.
const CALIBRATION_TICKS: u64 = 4;

/// The tick, from readings `CALIBRATION_TICKS` apart (under 50 ms at HZ=100); `None` if the
/// kernel's jiffies did not move in a second.
pub fn calibrate(program: &Xdp) -> Result<Option<u64>, ProgramError> {
    let first = read(program)?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
        let second = read(program)?;
        if second.jiffies >= first.jiffies + CALIBRATION_TICKS {
            return Ok(tick_ns(first, second));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(jiffies: u64, coarse_ns: u64) -> Reading {
        Reading { jiffies, coarse_ns }
    }

    #[test]
    fn the_tick_is_the_kernels_tick_nsec_for_the_hz_the_readings_show() {
        // HZ=250: 4 ms a tick; readings at tick boundaries are exact.
        assert_eq!(tick_ns(at(1000, 0), at(1004, 16_000_000)), Some(4_000_000));
        // HZ=300, whose TICK_NSEC rounds: 3,333,333 ns.
        assert_eq!(tick_ns(at(7, 5), at(11, 5 + 13_333_332)), Some(3_333_333));
        // HZ=1000 and 100, with the coarse clock a little off a whole number of ticks.
        assert_eq!(tick_ns(at(0, 0), at(4, 4_000_300)), Some(1_000_000));
        assert_eq!(tick_ns(at(0, 0), at(4, 39_990_000)), Some(10_000_000));
    }

    #[test]
    fn readings_that_did_not_move_or_went_back_give_no_tick() {
        assert_eq!(tick_ns(at(5, 100), at(5, 200)), None);
        assert_eq!(tick_ns(at(5, 100), at(9, 100)), None);
        assert_eq!(tick_ns(at(9, 100), at(5, 200)), None);
    }

    #[test]
    fn the_offset_maps_the_readings_jiffies_onto_its_coarse_time() {
        let reading = at(4_294_967_296 + 12, 77_000_000);
        let offset = reading.offset_ns(4_000_000);
        assert_eq!(
            reading.jiffies.wrapping_mul(4_000_000).wrapping_add(offset),
            77_000_000
        );
        // Later jiffies land on later coarse times, across the wrap of the product.
        let later = (reading.jiffies + 250)
            .wrapping_mul(4_000_000)
            .wrapping_add(offset);
        assert_eq!(later, 1_077_000_000);
    }
}
