//! The daemon's own state: `smf_firewall_build_info{version}`,
//! `smf_firewall_rules_loaded{interface}`, `smf_firewall_xdp_attached{interface,mode}` and the
//! process metrics (CPU, resident memory, open file descriptors).

use aya::programs::XdpMode;
use prometheus::{
    Gauge, IntCounterVec, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    process_collector::ProcessCollector,
    proto::MetricFamily,
};

use firewall_dataplane::loader;

/// One interface the program was attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    /// The interface's index when we attached: a new interface of the same name is a new
    /// device that our program is not on.
    pub ifindex: u32,
    pub mode: XdpMode,
    /// Rules of this interface in the live rule set.
    pub rules: usize,
    /// Our XDP and TC programs are on `ifindex`: false from when the interface vanished
    /// until it is back and attached again (`crate::interfaces`).
    pub attached: bool,
}

impl Attachment {
    /// Attached, and the interface of that name still has the index we attached to.
    pub fn enforcing(&self) -> bool {
        self.attached && loader::ifindex(&self.interface).ok() == Some(self.ifindex)
    }
}

/// The attachments as `smf_firewall_xdp_attached` reports them, kept up to date by the
/// interface watch.
pub type SharedAttachments = std::sync::Arc<std::sync::RwLock<Vec<Attachment>>>;

/// The `mode` label, in `ip link`'s words for the two modes the loader uses.
pub fn mode_label(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "driver",
        XdpMode::Skb => "skb",
        XdpMode::Hardware => "hardware",
        XdpMode::Default => "default",
    }
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

/// The metrics a reload updates.
#[derive(Clone)]
pub struct Reloads {
    /// `smf_firewall_rules_loaded{interface}`.
    pub rules_loaded: IntGaugeVec,
    /// `smf_firewall_rules_reloads_total{result}`.
    pub total: IntCounterVec,
    /// `smf_firewall_rules_last_reload_success_timestamp_seconds`.
    pub last_success: Gauge,
}

impl Reloads {
    /// Counts a reload that took effect (or the first load) and the rules now loaded.
    pub fn succeeded(&self, rule_counts: &[(String, usize)], first: bool) {
        if !first {
            self.total.with_label_values(&["success"]).inc();
        }
        for (interface, count) in rule_counts {
            self.rules_loaded
                .with_label_values(&[interface.as_str()])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
    }

    pub fn failed(&self) {
        self.total.with_label_values(&["error"]).inc();
    }
}

/// Registers the build, rules, reload, attachment and process metrics.
pub fn register(
    registry: &Registry,
    attachments: &SharedAttachments,
) -> prometheus::Result<Reloads> {
    let build = gauge_vec(
        "smf_firewall_build_info",
        "The running smf-firewall's version (value 1).",
        &["version"],
    );
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(build))?;
    let rules = gauge_vec(
        "smf_firewall_rules_loaded",
        "Rules of each interface in the live rule set.",
        &["interface"],
    );
    for attachment in attachments.read().unwrap_or_else(|p| p.into_inner()).iter() {
        rules
            .with_label_values(&[attachment.interface.as_str()])
            .set(i64::try_from(attachment.rules).unwrap_or(i64::MAX));
    }
    registry.register(Box::new(rules.clone()))?;
    let total = IntCounterVec::new(
        Opts::new(
            "smf_firewall_rules_reloads_total",
            "Rule reloads (reload command, SIGHUP, file watch), by result: success, or error (nothing changed).",
        ),
        &["result"],
    )
    .expect("valid metric definition");
    // Both results exist from the start, so that rate() and alerts see the first error.
    for result in ["success", "error"] {
        total.with_label_values(&[result]);
    }
    registry.register(Box::new(total.clone()))?;
    let last_success = Gauge::new(
        "smf_firewall_rules_last_reload_success_timestamp_seconds",
        "When the live rules were last loaded successfully (at start or by a reload), in seconds since the epoch.",
    )
    .expect("valid metric definition");
    registry.register(Box::new(last_success.clone()))?;
    registry.register(Box::new(AttachedCollector::new(std::sync::Arc::clone(
        attachments,
    ))))?;
    registry.register(Box::new(ProcessCollector::for_self()))?;
    Ok(Reloads {
        rules_loaded: rules,
        total,
        last_success,
    })
}

/// `smf_firewall_xdp_attached`, checked at scrape time: the daemon holds the XDP links for as
/// long as it runs, so the program stays on an interface until that interface goes away
/// (deleted, or replaced by a new device of the same name), and is back on it once the
/// interface watch has attached to the new device.
struct AttachedCollector {
    attachments: SharedAttachments,
    attached: IntGaugeVec,
}

impl AttachedCollector {
    fn new(attachments: SharedAttachments) -> Self {
        Self {
            attachments,
            attached: gauge_vec(
                "smf_firewall_xdp_attached",
                "1 while the XDP program is attached to the interface in this mode, 0 once the interface is gone.",
                &["interface", "mode"],
            ),
        }
    }
}

impl Collector for AttachedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.attached.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A re-attach may have changed the mode: only the current one is reported.
        self.attached.reset();
        let attachments = self.attachments.read().unwrap_or_else(|p| p.into_inner());
        for attachment in attachments.iter() {
            let present = attachment.enforcing();
            self.attached
                .with_label_values(&[attachment.interface.as_str(), mode_label(attachment.mode)])
                .set(i64::from(present));
        }
        self.attached.collect()
    }
}
