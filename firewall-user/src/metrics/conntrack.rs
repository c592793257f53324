//! Connection-tracking metrics, aggregates only, never a flow (Art. 17):
//! `smf_firewall_conntrack_{entries,capacity}` (gauges),
//! `smf_firewall_conntrack_{created,expired,evicted}_total` and
//! `smf_firewall_conntrack_hits_total{interface,direction}` (packets passed by a tracked flow; they are
//! also in `smf_firewall_packets_total{verdict="pass"}`).
//!
//! `created` and `hits` are counted by the kernel. `expired` is the flows the daemon's sweep
//! deleted plus the expired entries the kernel replaced by a new flow. `entries` is the number
//! of live flows the last sweep saw. `evicted` is derived at each sweep as
//! `created - expired - flushed - entries` (flows the LRU table dropped to make room), kept
//! monotonic; it is an estimate between sweeps.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use firewall_common::{conntrack::event, directed_slot};
use prometheus::{
    IntCounter, IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tracing::{debug, warn};

use firewall_dataplane::{conntrack, loader::Dataplane};
use firewall_rules::Direction;

/// What the sweeps found so far, shared by the sweeper and the collector.
#[derive(Debug, Default)]
pub struct SweepTotals {
    pub live: AtomicU64,
    pub swept: AtomicU64,
    pub evicted: AtomicU64,
}

/// Deletes expired flows every `interval`, forever, and rebuilds the presence filter
/// (`Dataplane::rebuild_presence`); updates `totals`.
pub async fn sweeper(
    dataplane: Arc<Mutex<Dataplane>>,
    settings: firewall_common::ConntrackSettings,
    interval: std::time::Duration,
    totals: Arc<SweepTotals>,
) {
    loop {
        sweep_once(&dataplane, &settings, &totals);
        tokio::time::sleep(interval).await;
    }
}

/// One sweep of the table (holding the dataplane lock while it walks the table).
pub fn sweep_once(
    dataplane: &Mutex<Dataplane>,
    settings: &firewall_common::ConntrackSettings,
    totals: &SweepTotals,
) {
    let mut dataplane = match dataplane.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let swept = match dataplane.conntrack_flows() {
        Ok(mut flows) => conntrack::sweep(&mut flows, settings),
        Err(error) => {
            warn!(%error, "cannot sweep the connection-tracking table");
            return;
        }
    };
    // The flows just deleted, and those the LRU evicted or a flush removed, leave the filter.
    if let Err(error) = dataplane.rebuild_presence() {
        warn!(%error, "cannot rebuild the flow tables' presence filter");
    }
    totals.live.store(swept.live, Ordering::Relaxed);
    let swept_total = totals.swept.fetch_add(swept.expired, Ordering::Relaxed) + swept.expired;
    let created = dataplane.conntrack_event(event::CREATED).unwrap_or(0);
    let replaced = dataplane
        .conntrack_event(event::EXPIRED_REPLACED)
        .unwrap_or(0);
    let flushed = dataplane.conntrack_flushed().unwrap_or(0);
    let evicted = created
        .saturating_sub(swept_total + replaced)
        .saturating_sub(flushed)
        .saturating_sub(swept.live);
    totals.evicted.fetch_max(evicted, Ordering::Relaxed);
    debug!(
        live = swept.live,
        expired = swept.expired,
        "swept the connection-tracking table"
    );
}

/// Reads the conntrack metrics at scrape time.
pub struct ConntrackCollector {
    dataplane: Arc<Mutex<Dataplane>>,
    totals: Arc<SweepTotals>,
    /// Interface names by counter slot.
    interfaces: Vec<String>,
    entries: IntGauge,
    capacity: IntGauge,
    created: IntCounter,
    expired: IntCounter,
    evicted: IntCounter,
    hits: IntCounterVec,
}

impl ConntrackCollector {
    pub fn new(
        dataplane: Arc<Mutex<Dataplane>>,
        totals: Arc<SweepTotals>,
        interfaces: Vec<String>,
        capacity: u32,
    ) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric definition")
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric definition")
        };
        let collector = Self {
            dataplane,
            totals,
            interfaces,
            entries: gauge(
                "smf_firewall_conntrack_entries",
                "Live flows in the connection-tracking table at the last sweep.",
            ),
            capacity: gauge(
                "smf_firewall_conntrack_capacity",
                "Flows the connection-tracking table holds per address family (conntrack.max_entries; IPv4 and IPv6 each).",
            ),
            created: counter(
                "smf_firewall_conntrack_created_total",
                "Flows opened by packets that a rule with state: true passed.",
            ),
            expired: counter(
                "smf_firewall_conntrack_expired_total",
                "Flows that reached their idle timeout (deleted by the sweep or replaced).",
            ),
            evicted: counter(
                "smf_firewall_conntrack_evicted_total",
                "Live flows the full table dropped to make room (derived at each sweep).",
            ),
            hits: IntCounterVec::new(
                Opts::new(
                    "smf_firewall_conntrack_hits_total",
                    "Packets passed by a tracked flow before the rules, by interface and direction.",
                ),
                &["interface", "direction"],
            )
            .expect("valid metric definition"),
        };
        collector.capacity.set(i64::from(capacity));
        collector
    }
}

impl Collector for ConntrackCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.entries.desc(),
            self.capacity.desc(),
            self.created.desc(),
            self.expired.desc(),
            self.evicted.desc(),
            self.hits.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        {
            let dataplane = match self.dataplane.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let live = self.totals.live.load(Ordering::Relaxed);
            self.entries.set(i64::try_from(live).unwrap_or(i64::MAX));
            let created = dataplane.conntrack_event(event::CREATED).unwrap_or(0);
            let replaced = dataplane
                .conntrack_event(event::EXPIRED_REPLACED)
                .unwrap_or(0);
            for (counter, value) in [
                (&self.created, created),
                (
                    &self.expired,
                    self.totals.swept.load(Ordering::Relaxed) + replaced,
                ),
                (&self.evicted, self.totals.evicted.load(Ordering::Relaxed)),
            ] {
                counter.reset();
                counter.inc_by(value);
            }
            self.hits.reset();
            for (slot, interface) in self.interfaces.iter().enumerate() {
                for direction in Direction::ALL {
                    let directed = directed_slot(slot as u32, direction.index());
                    match dataplane.conntrack_hits(directed) {
                        Ok(hits) => self
                            .hits
                            .with_label_values(&[interface.as_str(), direction.label()])
                            .inc_by(hits),
                        Err(error) => warn!(interface, %error, "cannot read conntrack hits"),
                    }
                }
            }
        }
        [
            self.entries.collect(),
            self.capacity.collect(),
            self.created.collect(),
            self.expired.collect(),
            self.evicted.collect(),
            self.hits.collect(),
        ]
        .concat()
    }
}
