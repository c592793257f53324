//! What Prometheus needs to turn traffic into pressure on this adapter (Art. 24):
//! `smf_firewall_adapter_capacity_bits_per_second`, the rated capacity of the adapter's model
//! (from `models:` in the config), and `smf_firewall_adapter_info{serial,model,next_model}`,
//! which the alert joins to name the adapter, its model and the model to propose.

use std::sync::{Arc, Mutex};

use prometheus::{IntGaugeVec, Opts, Registry};
use tracing::{info, warn};

use crate::config::Models;

/// The adapter's capacity and identity, as the licence check found its model.
#[derive(Clone)]
pub struct AdapterMetrics {
    models: Models,
    /// Without labels; a vector so that it can be absent while the model is unknown.
    capacity: IntGaugeVec,
    info: IntGaugeVec,
    /// (serial, model) shown now, to log only changes.
    shown: Arc<Mutex<Option<(String, String)>>>,
}

impl AdapterMetrics {
    pub fn new(models: Models) -> Self {
        Self {
            models,
            capacity: IntGaugeVec::new(
                Opts::new(
                    "smf_firewall_adapter_capacity_bits_per_second",
                    "The rated capacity of this adapter's model, from `models` in the config; absent while the model is unknown or not listed.",
                ),
                &[],
            )
            .expect("valid metric definition"),
            info: IntGaugeVec::new(
                Opts::new(
                    "smf_firewall_adapter_info",
                    "This adapter: serial, model (from the licence check) and the model to propose when its bandwidth is tight (value 1).",
                ),
                &["serial", "model", "next_model"],
            )
            .expect("valid metric definition"),
            shown: Arc::new(Mutex::new(None)),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.capacity.clone()))?;
        registry.register(Box::new(self.info.clone()))
    }

    /// Shows `serial` of `model` (the store's short name). An empty model (the store could not
    /// be reached) keeps what is shown: an adapter's model does not change with the store's
    /// health.
    pub fn show(&self, serial: &str, model: &str) {
        if model.is_empty() {
            return;
        }
        let mut shown = match self.shown.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if shown
            .as_ref()
            .is_some_and(|(s, m)| s == serial && m == model)
        {
            return;
        }
        let entry = self.models.get(model);
        let next = entry.and_then(|e| e.next).map_or("", |next| next.name());
        self.info.reset();
        self.info.with_label_values(&[serial, model, next]).set(1);
        self.capacity.reset();
        match entry {
            Some(entry) => {
                let bps = i64::try_from(entry.capacity_bps).unwrap_or(i64::MAX);
                self.capacity.with_label_values::<&str>(&[]).set(bps);
                info!(
                    serial,
                    model,
                    capacity_bps = entry.capacity_bps,
                    next_model = next,
                    "metering against the model's rated capacity"
                );
            }
            None => warn!(
                serial,
                model, "the model has no capacity under `models` in the config: no utilization"
            ),
        }
        *shown = Some((serial.to_string(), model.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn metrics() -> (AdapterMetrics, Registry) {
        let config = Config::parse(
            Path::new("c.yaml"),
            "rules: r.yaml\ninterfaces: [lan0]\nmodels:\n  x1: {capacity_bps: 500, next: x2}\n  x2: {capacity_bps: 1000}\n",
        )
        .unwrap();
        let metrics = AdapterMetrics::new(config.models);
        let registry = Registry::new();
        metrics.register(&registry).unwrap();
        (metrics, registry)
    }

    fn exposed(registry: &Registry) -> Vec<String> {
        let mut lines = Vec::new();
        for family in registry.gather() {
            for metric in family.get_metric() {
                let labels: Vec<String> = metric
                    .get_label()
                    .iter()
                    .map(|l| format!("{}={}", l.name(), l.value()))
                    .collect();
                let value = metric.get_gauge().get_value();
                lines.push(format!("{} {} {value}", family.name(), labels.join(",")));
            }
        }
        lines
    }

    // Each step: the model the licence check found, and what is exposed after it.
    #[test]
    fn capacity_and_info_follow_the_model_and_outlive_an_unreachable_store() {
        let (metrics, registry) = metrics();
        assert!(exposed(&registry).is_empty(), "nothing before a check");
        let steps: [(&str, &[&str]); 4] = [
            (
                "x1",
                &[
                    "smf_firewall_adapter_capacity_bits_per_second  500",
                    "smf_firewall_adapter_info model=x1,next_model=x2,serial=S 1",
                ],
            ),
            // The store was unreachable: the model is not known, what was shown stays.
            (
                "",
                &[
                    "smf_firewall_adapter_capacity_bits_per_second  500",
                    "smf_firewall_adapter_info model=x1,next_model=x2,serial=S 1",
                ],
            ),
            (
                "x2",
                &[
                    "smf_firewall_adapter_capacity_bits_per_second  1000",
                    "smf_firewall_adapter_info model=x2,next_model=,serial=S 1",
                ],
            ),
            // Not under `models`: no capacity, so no utilization, but still identified.
            (
                "turbo",
                &["smf_firewall_adapter_info model=turbo,next_model=,serial=S 1"],
            ),
        ];
        for (model, expected) in steps {
            metrics.show("S", model);
            assert_eq!(exposed(&registry), expected, "after {model:?}");
        }
    }
}
