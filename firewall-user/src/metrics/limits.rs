//! Rate-limit metrics, per limit rule and never per address (Art. 17):
//! `smf_firewall_rule_limited_{packets,bytes}_total{interface,rule}`, the packets (and their
//! bytes) over the rule's limit, which the rule decided (a limit rule matches only those, so
//! they are also its `smf_firewall_rule_{hits,bytes}_total`), and
//! `smf_firewall_rule_limit_keys{interface,rule}`, its live per-address buckets (`per:`),
//! with `smf_firewall_limit_keys_capacity` (`limits.max_keys`).
//!
//! Counting the buckets walks the kernel's table (one system call per key): a thread of its
//! own does it every `CENSUS_EVERY` (at least) on handles of its own, never holding the
//! dataplane, and scrapes show its last count.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use prometheus::{
    IntCounterVec, IntGauge, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tracing::warn;

use firewall_dataplane::loader::Dataplane;

use super::RuleLabels;

/// How often the bucket census runs.
const CENSUS_EVERY: Duration = Duration::from_secs(5);

/// Live per-address buckets by counter slot, as of the last census.
type Census = Arc<Mutex<HashMap<u32, u64>>>;

pub struct LimitCollector {
    dataplane: Arc<Mutex<Dataplane>>,
    rules: RuleLabels,
    /// Only describe the families; each scrape fills vectors of its own.
    described: Vectors,
    capacity: IntGauge,
    census: Census,
}

struct Vectors {
    packets: IntCounterVec,
    bytes: IntCounterVec,
    keys: IntGaugeVec,
}

fn vectors() -> Vectors {
    let by_rule = ["interface", "rule"];
    let counter = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), &by_rule).expect("valid metric definition")
    };
    Vectors {
        packets: counter(
            "smf_firewall_rule_limited_packets_total",
            "Packets over each limit rule's limit (the rule decided them).",
        ),
        bytes: counter(
            "smf_firewall_rule_limited_bytes_total",
            "Bytes of the packets over each limit rule's limit.",
        ),
        keys: IntGaugeVec::new(
            Opts::new(
                "smf_firewall_rule_limit_keys",
                "Live per-address buckets of each `per:` limit rule (counted every few seconds).",
            ),
            &by_rule,
        )
        .expect("valid metric definition"),
    }
}

impl LimitCollector {
    pub fn new(dataplane: Arc<Mutex<Dataplane>>, rules: RuleLabels) -> Self {
        let capacity = IntGauge::new(
            "smf_firewall_limit_keys_capacity",
            "Per-address buckets the kernel's LRU table holds at most (limits.max_keys).",
        )
        .expect("valid metric definition");
        let census = Census::default();
        match lock(&dataplane).limit_tables() {
            Ok(tables) => {
                capacity.set(i64::from(tables.capacity()));
                let weak = Arc::downgrade(&census);
                let spawned = std::thread::Builder::new()
                    .name("limit-census".into())
                    .spawn(move || count_forever(&tables, &weak));
                if let Err(error) = spawned {
                    warn!(%error, "cannot start counting the rate limits' buckets");
                }
            }
            Err(error) => warn!(%error, "cannot open the rate limits' tables"),
        }
        LimitCollector {
            dataplane,
            rules,
            described: vectors(),
            capacity,
            census,
        }
    }
}

/// Counts the live buckets every `CENSUS_EVERY` (or ten times as long as a count took, so
/// that a huge table costs at most a tenth of a CPU) until the collector is gone.
fn count_forever(
    tables: &firewall_dataplane::limits::LimitTables,
    census: &Weak<Mutex<HashMap<u32, u64>>>,
) {
    loop {
        let started = std::time::Instant::now();
        let counted = tables.census().unwrap_or_else(|error| {
            warn!(%error, "cannot count the rate limits' buckets");
            HashMap::new()
        });
        let Some(census) = census.upgrade() else {
            return;
        };
        *lock(&census) = counted;
        drop(census);
        std::thread::sleep(CENSUS_EVERY.max(started.elapsed() * 10));
    }
}

impl Collector for LimitCollector {
    fn desc(&self) -> Vec<&Desc> {
        let d = &self.described;
        [
            d.packets.desc(),
            d.bytes.desc(),
            d.keys.desc(),
            self.capacity.desc(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let dataplane = lock(&self.dataplane);
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let limited: Vec<_> = rules
            .iter()
            .filter(|(_, _, slot)| dataplane.is_limited(*slot))
            .collect();
        let out = vectors();
        let census = lock(&self.census).clone();
        for (interface, rule, slot) in limited {
            let labels = [interface.as_str(), rule.as_str()];
            match dataplane.rule_counter(*slot) {
                Ok(counter) => {
                    out.packets
                        .with_label_values(&labels)
                        .inc_by(counter.packets);
                    out.bytes.with_label_values(&labels).inc_by(counter.bytes);
                }
                Err(error) => warn!(interface, rule, %error, "cannot read rule counters"),
            }
            let keys = census.get(slot).copied().unwrap_or(0);
            out.keys
                .with_label_values(&labels)
                .set(i64::try_from(keys).unwrap_or(i64::MAX));
        }
        [
            out.packets.collect(),
            out.bytes.collect(),
            out.keys.collect(),
            self.capacity.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
