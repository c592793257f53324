//! Prometheus metrics. Dataplane counters are read from the kernel's per-CPU map at scrape
//! time and summed, so they are exact and never double counted. Labels are aggregates
//! (interface, verdict): never an address or a flow (Art. 17).

use std::sync::{Arc, Mutex, RwLock};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use firewall_common::{FrameClass, Verdict, directed_slot};
use prometheus::{
    Encoder, IntCounterVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tracing::warn;

use firewall_dataplane::loader::Dataplane;
use firewall_rules::Direction;

/// (interface, rule id, rule counter slot) of the loaded rules; a reload replaces it.
pub type RuleLabels = Arc<RwLock<Vec<(String, String, u32)>>>;

/// Reads `smf_firewall_{packets,bytes}_total{interface,verdict}` (arriving packets, as
/// before egress existed), `smf_firewall_{packets,bytes}_by_direction_total{interface,
/// direction,verdict}` (both directions) and
/// `smf_firewall_rule_{hits,bytes}_total{interface,rule}` from the dataplane.
pub struct DataplaneCollector {
    dataplane: Arc<Mutex<Dataplane>>,
    /// Interface names by counter slot.
    interfaces: Vec<String>,
    rules: RuleLabels,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    /// Only describe the rule families; each scrape fills vectors of its own.
    rule_hits: IntCounterVec,
    rule_bytes: IntCounterVec,
    non_ip: IntCounterVec,
    malformed: IntCounterVec,
    packets_by_direction: IntCounterVec,
    bytes_by_direction: IntCounterVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl DataplaneCollector {
    pub fn new(
        dataplane: Arc<Mutex<Dataplane>>,
        interfaces: Vec<String>,
        rules: RuleLabels,
    ) -> Self {
        let by_verdict = ["interface", "verdict"];
        let by_direction = ["interface", "direction", "verdict"];
        Self {
            dataplane,
            interfaces,
            rules,
            packets: counter_vec(
                "smf_firewall_packets_total",
                "Packets seen by the XDP program, by interface and verdict.",
                &by_verdict,
            ),
            bytes: counter_vec(
                "smf_firewall_bytes_total",
                "Bytes of Ethernet frames (without FCS) seen by the XDP program, by interface and verdict.",
                &by_verdict,
            ),
            rule_hits: rule_vectors().0,
            rule_bytes: rule_vectors().1,
            non_ip: counter_vec(
                "smf_firewall_non_ip_packets_total",
                "Frames that are neither IPv4 nor IPv6 (ARP, ...), by interface; also counted by verdict.",
                &["interface"],
            ),
            malformed: counter_vec(
                "smf_firewall_malformed_packets_total",
                "Malformed frames, dropped before any rule, by interface; also counted as drop.",
                &["interface"],
            ),
            packets_by_direction: counter_vec(
                "smf_firewall_packets_by_direction_total",
                "Packets by interface, direction (in: arriving, XDP; out: leaving, TC egress) and verdict.",
                &by_direction,
            ),
            bytes_by_direction: counter_vec(
                "smf_firewall_bytes_by_direction_total",
                "Bytes of frames by interface, direction and verdict.",
                &by_direction,
            ),
        }
    }
}

/// `smf_firewall_rule_{hits,bytes}_total`. Made anew for each scrape: with 100k rules their
/// children take tens of MB, which a reset would keep allocated between scrapes.
fn rule_vectors() -> (IntCounterVec, IntCounterVec) {
    let by_rule = ["interface", "rule"];
    (
        counter_vec(
            "smf_firewall_rule_hits_total",
            "Packets decided by each rule.",
            &by_rule,
        ),
        counter_vec(
            "smf_firewall_rule_bytes_total",
            "Bytes of the packets decided by each rule.",
            &by_rule,
        ),
    )
}

impl DataplaneCollector {
    /// Every vector this collector fills but the rules' (see `rule_vectors`).
    fn vectors(&self) -> [&IntCounterVec; 6] {
        [
            &self.packets,
            &self.bytes,
            &self.non_ip,
            &self.malformed,
            &self.packets_by_direction,
            &self.bytes_by_direction,
        ]
    }
}

impl Collector for DataplaneCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.vectors()
            .into_iter()
            .chain([&self.rule_hits, &self.rule_bytes])
            .flat_map(|vec| vec.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // The lock also serialises concurrent scrapes, which reset and refill the vectors.
        let dataplane = match self.dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for vec in self.vectors() {
            vec.reset();
        }
        for (slot, interface) in self.interfaces.iter().enumerate() {
            for (direction, verdict) in Direction::ALL
                .into_iter()
                .flat_map(|d| Verdict::ALL.map(|v| (d, v)))
            {
                let directed = directed_slot(slot as u32, direction.index());
                match dataplane.counter(directed, verdict) {
                    Ok(counter) => {
                        let labels = [interface.as_str(), direction.label(), verdict.label()];
                        self.packets_by_direction
                            .with_label_values(&labels)
                            .inc_by(counter.packets);
                        self.bytes_by_direction
                            .with_label_values(&labels)
                            .inc_by(counter.bytes);
                    }
                    Err(error) => warn!(interface, %error, "cannot read counters"),
                }
            }
            for verdict in Verdict::ALL {
                match dataplane.counter(slot as u32, verdict) {
                    Ok(counter) => {
                        let labels = [interface.as_str(), verdict.label()];
                        self.packets
                            .with_label_values(&labels)
                            .inc_by(counter.packets);
                        self.bytes.with_label_values(&labels).inc_by(counter.bytes);
                    }
                    Err(error) => warn!(interface, %error, "cannot read counters"),
                }
            }
            for (class, vec) in [
                (FrameClass::NonIp, &self.non_ip),
                (FrameClass::Malformed, &self.malformed),
            ] {
                match dataplane.class_counter(slot as u32, class) {
                    Ok(counter) => vec
                        .with_label_values(&[interface.as_str()])
                        .inc_by(counter.packets),
                    Err(error) => warn!(interface, %error, "cannot read frame class counters"),
                }
            }
        }
        let rules = match self.rules.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (rule_hits, rule_bytes) = rule_vectors();
        for (interface, rule, slot) in rules.iter() {
            match dataplane.rule_counter(*slot) {
                Ok(counter) => {
                    let labels = [interface.as_str(), rule.as_str()];
                    rule_hits.with_label_values(&labels).inc_by(counter.packets);
                    rule_bytes.with_label_values(&labels).inc_by(counter.bytes);
                }
                Err(error) => warn!(interface, rule, %error, "cannot read rule counters"),
            }
        }
        self.vectors()
            .into_iter()
            .chain([&rule_hits, &rule_bytes])
            .flat_map(|vec| vec.collect())
            .collect()
    }
}

pub mod adapter;
pub mod conntrack;
pub mod limits;
pub mod server;
pub mod status;
pub mod text;

/// Serves `GET /metrics` in the Prometheus text format on `endpoint` until the task is
/// dropped.
pub async fn serve(
    endpoint: server::Endpoint,
    registry: Registry,
) -> Result<(), server::ServeError> {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(Arc::new(registry));
    endpoint.serve(app).await
}

async fn render(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    // A scrape of 100k rules allocates tens of MB for an instant (the samples, then the text,
    // freed once sent): give back what the last one left, and what this one used.
    release_freed_memory();
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(error) = encoder.encode(&registry.gather(), &mut body) {
        warn!(%error, "cannot encode metrics");
    }
    release_freed_memory();
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        body,
    )
}

/// Returns freed heap to the system (glibc keeps it otherwise), so that resident memory shows
/// what the daemon holds, not its last peak.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only releases memory that is free; it has no preconditions.
    unsafe { libc::malloc_trim(0) };
}
