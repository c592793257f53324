//! Rate limits (`limit:` on a rule): a token bucket per rule (`LIMIT_BUCKETS`, by the rule's
//! counter slot) or per source or destination address (or prefix) in an LRU hash
//! (`LIMIT_KEYS`), so that a flood of random sources evicts old keys instead of failing. A
//! limit rule matches only the packets over its limit; the others go on to later rules.
//!
//! The arithmetic here is the one the kernel and the reference classifier both run. Tokens
//! are integers: a bucket refills `Limit::refill` tokens per nanosecond and a packet (or a
//! byte) costs `Limit::cost` tokens, which the daemon chooses so that no division is left for
//! the packet path (`10/s`: refill 10, cost 10⁹).

/// `Limit::per`: whose bucket a packet takes its tokens from.
pub mod per {
    /// One bucket for the rule.
    pub const RULE: u8 = 0;
    /// One bucket per source address (or prefix, `Limit::prefix`).
    pub const SRC: u8 = 1;
    /// One bucket per destination address (or prefix).
    pub const DST: u8 = 2;
}

/// `Limit::unit`: what a packet costs.
pub mod unit {
    /// Every packet costs `Limit::cost`.
    pub const PACKETS: u8 = 0;
    /// Every byte of the frame (as metered) costs `Limit::cost`.
    pub const BYTES: u8 = 1;
}

/// Per-address buckets the `LIMIT_KEYS` table holds unless the daemon's config says
/// otherwise (`limits: {max_keys: N}`).
pub const DEFAULT_MAX_KEYS: u32 = 65_536;

/// The `LIMITS` map's value for a limit rule's counter slot, written by the daemon before the
/// rule set that uses it goes live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Tokens added per nanosecond.
    pub refill: u64,
    /// Tokens a packet (`unit::PACKETS`) or a byte (`unit::BYTES`) takes.
    pub cost: u64,
    /// Tokens a bucket holds at most: the burst times `cost`. A new bucket is full.
    pub capacity: u64,
    /// Nanoseconds that refill an empty bucket (`capacity / refill`, rounded up): longer quiet
    /// adds nothing more, which keeps `elapsed × refill` from overflowing.
    pub full_after_ns: u64,
    /// Changes whenever the limit does: a bucket of another epoch is stale and starts full.
    /// 0 is never a live limit (a zeroed map slot).
    pub epoch: u16,
    /// A `per` value.
    pub per: u8,
    /// Leading address bits that make a `per` key (capped at the family's width).
    pub prefix: u8,
    /// A `unit` value.
    pub unit: u8,
    /// Non-zero: the bucket may count time on the kernel's coarse clock (a tick's resolution,
    /// at most 10 ms), which costs a memory read where the exact one costs a helper call of
    /// ~40 ns. The daemon allows it when the burst holds at least `COARSE_TICKS_NS` of the
    /// rate, so that a tick's refill never overflows the bucket and the rate stays exact.
    pub coarse: u8,
    pub _pad: [u8; 2],
}

/// The refill a bucket must hold for `Limit::coarse`: two ticks at 100 Hz.
pub const COARSE_TICKS_NS: u64 = 20_000_000;

/// A token bucket: a rule's (`LIMIT_BUCKETS`) or an address's (`LIMIT_KEYS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitBucket {
    pub tokens: u64,
    /// When the bucket was last refilled.
    pub last_ns: u64,
    /// The `Limit::epoch` the tokens were counted for.
    pub epoch: u16,
    pub _pad: [u8; 6],
}

/// The `LIMIT_KEYS` key: a limit rule's counter slot and epoch, and the packet's address
/// masked to the limit's prefix (IPv4 in the first word, the others zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LimitKey {
    pub addr: [u32; 4],
    pub slot: u32,
    pub epoch: u16,
    /// `crate::family::IPV4` or `IPV6`: the same bits of another family are another key.
    pub family: u8,
    pub _pad: u8,
}

impl LimitBucket {
    /// A bucket for `limit` that is full at `now_ns`.
    #[inline(always)]
    pub fn full(limit: &Limit, now_ns: u64) -> LimitBucket {
        LimitBucket {
            tokens: limit.capacity,
            last_ns: now_ns,
            epoch: limit.epoch,
            _pad: [0; 6],
        }
    }

    /// Refills the bucket up to `now_ns` and takes what a packet of `len` bytes costs.
    /// True when the packet is over the limit: the bucket lacks its tokens, and keeps them.
    /// A bucket of another epoch starts full; a clock that goes backwards refills nothing.
    #[inline(always)]
    pub fn over(&mut self, limit: &Limit, now_ns: u64, len: u32) -> bool {
        if self.epoch != limit.epoch {
            *self = LimitBucket::full(limit, now_ns);
        }
        let mut elapsed = now_ns.saturating_sub(self.last_ns);
        if elapsed > limit.full_after_ns {
            elapsed = limit.full_after_ns;
        }
        let mut tokens = self.tokens + elapsed * limit.refill;
        if tokens > limit.capacity {
            tokens = limit.capacity;
        }
        if now_ns > self.last_ns {
            self.last_ns = now_ns;
        }
        let need = if limit.unit == unit::BYTES {
            u64::from(len) * limit.cost
        } else {
            limit.cost
        };
        let over = tokens < need;
        self.tokens = if over { tokens } else { tokens - need };
        over
    }
}

/// `addr` (IPv4 in the first word) with only its first `prefix` bits kept, as `LimitKey::addr`
/// holds it. Addresses are in network byte order, read as native words.
#[inline(always)]
pub fn masked(addr: &[u32; 4], prefix: u8) -> [u32; 4] {
    let mut out = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        let bits = (u32::from(prefix)).saturating_sub(32 * i as u32);
        out[i] = if bits >= 32 {
            addr[i]
        } else if bits == 0 {
            0
        } else {
            addr[i] & (u32::MAX << (32 - bits)).to_be()
        };
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const T: u64 = 1_000 * SECOND;

    /// `rate` packets per second with a burst of `burst`.
    fn packets(rate: u64, burst: u64) -> Limit {
        Limit {
            refill: rate,
            cost: SECOND,
            capacity: burst * SECOND,
            full_after_ns: (burst * SECOND).div_ceil(rate),
            epoch: 1,
            ..Limit::default()
        }
    }

    fn passed(bucket: &mut LimitBucket, limit: &Limit, now: u64, n: u32, len: u32) -> u32 {
        (0..n).filter(|_| !bucket.over(limit, now, len)).count() as u32
    }

    #[test]
    fn a_new_bucket_passes_the_burst_then_refills_at_the_rate() {
        let limit = packets(100, 100);
        let mut bucket = LimitBucket::default();
        // 10,000 packets in one instant: exactly the burst is under the limit.
        assert_eq!(passed(&mut bucket, &limit, T, 10_000, 60), 100);
        // A tenth of a second later, ten more.
        assert_eq!(passed(&mut bucket, &limit, T + SECOND / 10, 1_000, 60), 10);
        // Refills of less than a packet add up.
        assert_eq!(
            passed(&mut bucket, &limit, T + SECOND / 10 + SECOND / 200, 5, 60),
            0
        );
        assert_eq!(
            passed(&mut bucket, &limit, T + SECOND / 10 + SECOND / 100, 5, 60),
            1
        );
        // An hour of quiet refills the burst, no more.
        assert_eq!(
            passed(&mut bucket, &limit, T + 3_600 * SECOND, 1_000, 60),
            100
        );
    }

    #[test]
    fn a_burst_larger_than_the_rate_takes_longer_to_refill() {
        let limit = packets(10, 20);
        let mut bucket = LimitBucket::default();
        assert_eq!(passed(&mut bucket, &limit, T, 100, 60), 20);
        assert_eq!(passed(&mut bucket, &limit, T + SECOND, 100, 60), 10);
        assert_eq!(passed(&mut bucket, &limit, T + 10 * SECOND, 100, 60), 20);
    }

    #[test]
    fn byte_limits_charge_each_frame_its_length() {
        // 1,000 bytes/s, burst 1,500 bytes.
        let limit = Limit {
            unit: unit::BYTES,
            ..packets(1_000, 1_500)
        };
        let mut bucket = LimitBucket::default();
        assert!(!bucket.over(&limit, T, 1_000));
        assert!(bucket.over(&limit, T, 1_000), "500 bytes left");
        assert!(!bucket.over(&limit, T, 500));
        // A frame larger than the burst is always over.
        assert!(bucket.over(&limit, T + 3_600 * SECOND, 1_501));
    }

    #[test]
    fn another_epoch_starts_full_and_time_going_back_refills_nothing() {
        let limit = packets(1, 2);
        let mut bucket = LimitBucket::default();
        assert_eq!(passed(&mut bucket, &limit, T, 10, 60), 2);
        assert_eq!(passed(&mut bucket, &limit, T - SECOND, 10, 60), 0);
        assert_eq!(bucket.last_ns, T);
        let changed = Limit { epoch: 2, ..limit };
        assert_eq!(passed(&mut bucket, &changed, T, 10, 60), 2);
    }

    #[test]
    fn the_largest_limits_do_not_overflow() {
        // The daemon keeps capacity and refill below a quarter of u64 each.
        let limit = Limit {
            refill: u64::MAX / 4,
            cost: 1,
            capacity: u64::MAX / 4,
            full_after_ns: 1,
            epoch: 1,
            ..Limit::default()
        };
        let mut bucket = LimitBucket::default();
        assert!(!bucket.over(&limit, u64::MAX, 1));
        assert!(!bucket.over(&limit, u64::MAX, 1));
    }

    #[test]
    fn keys_keep_the_prefix_bits_only() {
        let v4 = [u32::from_ne_bytes([198, 18, 7, 9]), 0, 0, 0];
        assert_eq!(
            masked(&v4, 24),
            [u32::from_ne_bytes([198, 18, 7, 0]), 0, 0, 0]
        );
        assert_eq!(masked(&v4, 32), v4);
        assert_eq!(masked(&v4, 0), [0; 4]);
        let v6 = [0x2001_0002u32.to_be(), 0x0000_00ffu32.to_be(), 7, 9];
        assert_eq!(masked(&v6, 48), [0x2001_0002u32.to_be(), 0, 0, 0]);
        assert_eq!(masked(&v6, 64), [v6[0], v6[1], 0, 0]);
        assert_eq!(masked(&v6, 128), v6);
    }
}
