//! The embedded program object: the XDP and TC egress programs built by `build.rs` from
//! `firewall-ebpf`, their names, and the maps they declare (which the daemon pins, and whose
//! definitions name the pinned layout).

use std::sync::OnceLock;

/// The XDP program object, built by `build.rs` from `firewall-ebpf`.
pub static FIREWALL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smf-firewall"));

/// `return XDP_PASS`, built the same way: the floor for benchmarks.
#[cfg(feature = "xdp-pass")]
pub static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-pass"));

/// The benchmarks' other tiny programs (`firewall-ebpf/src/bin/bench-programs.rs`): floors of
/// the building blocks, trivial XDP_DROP and the live table's XDP_TX generator.
#[cfg(feature = "xdp-pass")]
pub static BENCH_PROGRAMS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-programs"));

pub const PROGRAM: &str = "smf_firewall";
/// The TC egress program (`direction: out` rules), attached with TCX.
pub const EGRESS_PROGRAM: &str = "smf_firewall_egress";
/// Never attached: reads the kernel's clocks for the flow clock (`crate::clock`).
pub const CLOCK_PROGRAM: &str = "smf_clock";

/// The names of the maps the program declares with `#[map]`, each spelled once: userspace
/// names a map only through these. A test checks them against the embedded object, so a map
/// renamed, added or removed on one side only fails `cargo test`.
pub mod maps {
    macro_rules! names {
        ($($(#[$doc:meta])* $name:ident,)*) => {
            $($(#[$doc])* pub const $name: &str = stringify!($name);)*
            /// Every map, sorted by name (as `super::pinned_maps` yields them).
            pub const ALL: [&str; [$(stringify!($name)),*].len()] = [$($name),*];
        };
    }

    names! {
        /// Per-CPU packets and bytes of an interface slot's non-IP and malformed frames.
        CLASS_STATS,
        /// Connection tracking: the IPv6 flow table (LRU hash, `FlowKey` to `Flow`).
        CONNTRACK,
        /// Connection tracking: the IPv4 flow table (LRU hash, `FlowKey4` to `Flow`).
        CONNTRACK4,
        /// Per-CPU `conntrack::event` counts.
        CONNTRACK_EVENTS,
        /// Flows deleted by `smf-firewall conntrack flush`; written by userspace only.
        CONNTRACK_FLUSHED,
        /// Per-CPU packets passed by a tracked flow, per directed slot.
        CONNTRACK_HITS,
        /// The one `ConntrackSettings`.
        CONNTRACK_SETTINGS,
        /// Drop logs: the ring buffer of `DropEvent`s.
        DROP_LOG,
        /// Drop logs: a `RateBucket` per rule counter slot.
        DROP_LOG_BUCKETS,
        /// Drop logs: the one `DropLogControl`.
        DROP_LOG_CONFIG,
        /// Drop logs: per-CPU `drop_log` counters.
        DROP_LOG_STATS,
        /// Licensing: whether the rules' verdicts are applied (`firewall_common::enforce`).
        ENFORCE,
        /// The compiled rules of both generations.
        ENTRIES,
        /// The exact-address tables' slots of both generations.
        EXACT,
        /// Connection tracking: the tables' presence filter (`conntrack::presence`), two
        /// halves of bytes, rebuilt by the daemon through mmap.
        FLOW_PRESENCE,
        /// The generation the program reads.
        GENERATION,
        /// Interface index to its slot plus one.
        INTERFACES,
        /// The entry indices the tree leaves list, of both generations.
        LEAVES,
        /// Rate limits: each limit rule's `Limit`, by counter slot.
        LIMITS,
        /// Rate limits: a `LimitBucket` per limit rule without `per:`, by counter slot.
        LIMIT_BUCKETS,
        /// Rate limits: a fixed clock for tests (0: the kernel's); written by userspace only.
        LIMIT_CLOCK,
        /// Rate limits: the `per:` buckets (LRU hash, `LimitKey` to `LimitBucket`).
        LIMIT_KEYS,
        /// The tree nodes of both generations.
        NODES,
        /// A `Policy` per generation and directed slot.
        POLICIES,
        /// Per-CPU packets and bytes per rule counter slot.
        RULE_STATS,
        /// The program's per-CPU classification state (scratch, never read by userspace).
        SCAN,
        /// Per-CPU packets and bytes per directed slot and verdict.
        STATS,
        /// Live packet traces: the ring buffer of `TraceEvent`s.
        TRACE,
        /// Live packet traces: the one `RateBucket`.
        TRACE_BUCKET,
        /// Live packet traces: the one `TraceControl` (the switch, the slots, the filter).
        TRACE_CONTROL,
        /// Live packet traces: per-CPU `trace` counters.
        TRACE_STATS,
    }
}

/// The maps of the embedded program object that the daemon pins, by name: those declared
/// with `#[map]` (the object's `.rodata`/`.bss` sections are the program's own, not shared).
/// Parsed once.
fn declared_maps() -> &'static [(String, aya_obj::Map)] {
    static MAPS: OnceLock<Vec<(String, aya_obj::Map)>> = OnceLock::new();
    MAPS.get_or_init(|| {
        let object = aya_obj::Object::parse(FIREWALL_OBJECT).expect("the embedded object parses");
        let mut maps: Vec<_> = object
            .maps
            .into_iter()
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        maps.sort_by(|a, b| a.0.cmp(&b.0));
        maps
    })
}

/// The names of the maps the daemon pins.
pub fn pinned_maps() -> impl Iterator<Item = &'static str> {
    declared_maps().iter().map(|(name, _)| name.as_str())
}

/// A hash of the maps' definitions (name, type, key and value size, flags, declared size):
/// two binaries share pinned maps only when it is equal. FNV-1a, stable across builds.
pub fn layout() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, map) in declared_maps() {
        feed(name.as_bytes());
        for word in [
            map.map_type(),
            map.key_size(),
            map.value_size(),
            map.map_flags(),
            map.max_entries(),
        ] {
            feed(&word.to_le_bytes());
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable_and_names_only_declared_maps() {
        assert_eq!(layout(), layout());
        assert_eq!(layout().len(), 16);
        let maps: Vec<&str> = pinned_maps().collect();
        assert!(maps.iter().all(|m| !m.starts_with('.')), "{maps:?}");
    }

    /// `maps::ALL` holds every constant of `maps` (the macro declares both), so this checks
    /// both ways: every constant names a map the object declares, and every declared map has
    /// a constant.
    #[test]
    fn the_map_names_are_exactly_the_declared_maps() {
        let declared: Vec<&str> = pinned_maps().collect();
        assert_eq!(maps::ALL.as_slice(), declared.as_slice());
        assert!(maps::ALL.is_sorted(), "keep maps sorted: {:?}", maps::ALL);
    }
}
