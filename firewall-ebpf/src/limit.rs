//! Rate limits: is a packet over the limit of the rule that matched it? The rule's bucket is
//! in `LIMIT_BUCKETS` (by counter slot), or, with `per:`, the packet's address's in the LRU
//! `LIMIT_KEYS`, where a flood of new sources evicts the least recently used keys. The
//! arithmetic is `firewall_common::limit`'s, the reference classifier's too.
//!
//! Buckets are shared by all CPUs and updated without atomics, as the drop log's are: two
//! CPUs in the same instant may both take the last tokens, so a few packets more than the
//! limit can pass under it, at most one per CPU per race.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, LruHashMap},
};
use firewall_common::{
    MAX_RULE_COUNTERS,
    limit::{DEFAULT_MAX_KEYS, Limit, LimitBucket, LimitKey, masked, per},
};

use crate::parse::Packet;

/// Each limit rule's `Limit`, by counter slot, written by the daemon.
#[map]
static LIMITS: Array<Limit> = Array::with_max_entries(MAX_RULE_COUNTERS, 0);

/// The bucket of each limit rule without `per:`, by counter slot.
#[map]
static LIMIT_BUCKETS: Array<LimitBucket> = Array::with_max_entries(MAX_RULE_COUNTERS, 0);

/// The buckets of `per:` keys; sized by the daemon at load time (`limits.max_keys`).
#[map]
static LIMIT_KEYS: LruHashMap<LimitKey, LimitBucket> =
    LruHashMap::with_max_entries(DEFAULT_MAX_KEYS, 0);

/// 0: the kernel's monotonic clock. Anything else: a fixed clock in nanoseconds, so that
/// tests can send many packets "in one instant" and step time; the daemon never sets it.
#[map]
static LIMIT_CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// The time `limit` counts in: a fixed clock if a test set one, else the kernel's monotonic
/// clock, coarse where the limit allows it (`Limit::coarse`).
#[inline(always)]
fn now(limit: &Limit) -> u64 {
    match LIMIT_CLOCK.get(0) {
        Some(&fixed) if fixed != 0 => fixed,
        // SAFETY: the clock helpers have no preconditions.
        _ if limit.coarse != 0 => unsafe { bpf_ktime_get_coarse_ns() },
        _ => unsafe { bpf_ktime_get_ns() },
    }
}

/// Room for a key and a new bucket off the stack, which the classifier's callbacks have
/// almost none of: a part of the per-CPU `Scan`.
#[repr(C)]
pub struct Scratch {
    key: LimitKey,
    bucket: LimitBucket,
}

/// Is the packet (`len` bytes) over the limit of the rule with counter slot `slot`? Under
/// it, the packet's tokens are taken. A slot without a limit (which the daemon never lets a
/// live entry have) counts as over, so that the rule applies rather than falls open.
// The key and bucket are passed by reference so that the helpers read them where they are,
// in `Scan`: by value they would be copied onto the stack first.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
pub fn over(slot: u32, packet: &Packet, len: u32, scratch: &mut Scratch) -> bool {
    let Some(limit) = LIMITS.get(slot) else {
        return true;
    };
    if limit.epoch == 0 {
        return true;
    }
    let now = now(limit);
    if limit.per == per::RULE {
        return match LIMIT_BUCKETS.get_ptr_mut(slot) {
            // SAFETY: a valid map value; races between CPUs are described above.
            Some(bucket) => unsafe { (*bucket).over(limit, now, len) },
            None => true,
        };
    }
    let addr = if limit.per == per::SRC {
        &packet.src
    } else {
        &packet.dst
    };
    scratch.key.addr = masked(addr, limit.prefix);
    scratch.key.slot = slot;
    scratch.key.epoch = limit.epoch;
    scratch.key.family = packet.family;
    scratch.key._pad = 0;
    if let Some(bucket) = LIMIT_KEYS.get_ptr_mut(&scratch.key) {
        // SAFETY: as above; an eviction racing with this update loses at most this packet's
        // tokens.
        return unsafe { (*bucket).over(limit, now, len) };
    }
    scratch.bucket = LimitBucket::full(limit, now);
    let over = scratch.bucket.over(limit, now, len);
    // A table that cannot take the key (it always can: LRU evicts) leaves the packet judged
    // as a new key's first.
    let _ = LIMIT_KEYS.insert(&scratch.key, &scratch.bucket, 0);
    over
}
