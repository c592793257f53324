//! The daemon's licence loop: decide at start and at every recheck, apply the answer to the
//! dataplane with one map update, and keep the last answer for `grace` while the store cannot
//! be reached. Metrics: `smf_firewall_license_licensed`, `smf_firewall_license_info`,
//! `smf_firewall_contract_store_up`, `smf_firewall_license_checks_total`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

use firewall_contracts::license::{Check, decide};
use firewall_contracts::{Store, StoreError};
use firewall_dataplane::loader::{Dataplane, LoaderError};

use crate::{config::LicensingConfig, metrics::adapter::AdapterMetrics};

/// The `reason` label when the store could not be reached for longer than `grace`.
pub const STORE_UNREACHABLE: &str = "store_unreachable";
/// The `reason` label when the config has no `adapter`/`contracts`: rules are enforced.
pub const NOT_CONFIGURED: &str = "not_configured";

/// What the dataplane does after a check, and the labels that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub licensed: bool,
    /// A decision's reason, [`STORE_UNREACHABLE`] or [`NOT_CONFIGURED`].
    pub reason: &'static str,
    pub serial: String,
    pub model: &'static str,
    pub role: &'static str,
}

impl Applied {
    fn from_check(check: &Check) -> Self {
        Self {
            licensed: check.decision.licensed,
            reason: check.decision.reason.name(),
            serial: check.serial.clone(),
            model: check.model.map_or("", |m| m.name()),
            role: check.role.map_or("", |r| r.name()),
        }
    }
}

/// The grace rule: a failed check keeps the last decision until `grace` has passed since the
/// last successful one; then, or with no decision ever made, the adapter is not licensed.
#[derive(Debug)]
pub struct Holder {
    grace: Duration,
    serial: String,
    last: Option<(Applied, Instant)>,
}

/// What a check led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store answered.
    Decided(Applied),
    /// The store did not answer; the last decision holds until the instant given.
    Held(Applied, Instant),
    /// The store did not answer and no decision holds any more.
    Lapsed(Applied),
}

impl Outcome {
    pub fn applied(&self) -> &Applied {
        match self {
            Outcome::Decided(applied) | Outcome::Held(applied, _) | Outcome::Lapsed(applied) => {
                applied
            }
        }
    }
}

impl Holder {
    pub fn new(serial: &str, grace: Duration) -> Self {
        Self {
            grace,
            serial: serial.to_string(),
            last: None,
        }
    }

    /// Records a check made at `now`: `Some` if the store answered, `None` if it did not.
    pub fn after(&mut self, answer: Option<&Check>, now: Instant) -> Outcome {
        if let Some(check) = answer {
            let applied = Applied::from_check(check);
            self.last = Some((applied.clone(), now));
            return Outcome::Decided(applied);
        }
        match &self.last {
            Some((applied, at)) if now < *at + self.grace => {
                Outcome::Held(applied.clone(), *at + self.grace)
            }
            _ => Outcome::Lapsed(Applied {
                licensed: false,
                reason: STORE_UNREACHABLE,
                serial: self.serial.clone(),
                model: "",
                role: "",
            }),
        }
    }
}

/// The licence metrics, registered once.
struct Metrics {
    licensed: IntGauge,
    info: IntGaugeVec,
    store_up: IntGauge,
    checks: IntCounterVec,
    /// The adapter's capacity and info follow the model the checks find (metering).
    adapter: AdapterMetrics,
    /// The decision shown, for `smf-firewall status`.
    shown: Arc<Mutex<Option<Applied>>>,
}

impl Metrics {
    fn new(adapter: AdapterMetrics) -> Self {
        Self {
            adapter,
            shown: Arc::default(),
            licensed: IntGauge::new(
                "smf_firewall_license_licensed",
                "1 while the Ultra Firewall Option is licensed for this adapter and the rules are enforced; 0 while every packet is passed.",
            )
            .expect("valid metric definition"),
            info: IntGaugeVec::new(
                Opts::new(
                    "smf_firewall_license_info",
                    "The licence state in force: adapter serial, model, role and the reason of the decision (value 1).",
                ),
                &["serial", "model", "role", "reason"],
            )
            .expect("valid metric definition"),
            store_up: IntGauge::new(
                "smf_firewall_contract_store_up",
                "1 if the last check reached the contract store, else 0.",
            )
            .expect("valid metric definition"),
            checks: IntCounterVec::new(
                Opts::new(
                    "smf_firewall_license_checks_total",
                    "Licence checks, by result: licensed, not_licensed, or error (store unreachable).",
                ),
                &["result"],
            )
            .expect("valid metric definition"),
        }
    }

    fn show(&self, applied: &Applied) {
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = Some(applied.clone());
        self.licensed.set(i64::from(applied.licensed));
        self.info.reset();
        self.info
            .with_label_values(&[
                applied.serial.as_str(),
                applied.model,
                applied.role,
                applied.reason,
            ])
            .set(1);
        self.adapter.show(&applied.serial, applied.model);
    }
}

/// The daemon's licensing: configured (a store and a serial) or not (rules always enforced).
pub struct Licensing {
    watch: Option<Watch>,
    metrics: Metrics,
}

struct Watch {
    config: LicensingConfig,
    store: Store,
    holder: Holder,
    /// What the dataplane does now.
    current: Option<Applied>,
}

impl Licensing {
    /// Prepares the checks; nothing is asked of the store yet, and an unreachable store is
    /// not an error here (the daemon still meters, Art. 24). The checks' model feeds
    /// `adapter`.
    pub fn new(
        config: Option<&LicensingConfig>,
        adapter: AdapterMetrics,
    ) -> Result<Self, StoreError> {
        let watch = match config {
            None => None,
            Some(config) => Some(Watch {
                // A check waits for the store at most this long, and never past the next.
                store: Store::lazy(
                    &config.url,
                    config
                        .recheck
                        .clamp(Duration::from_secs(1), Duration::from_secs(10)),
                )?,
                holder: Holder::new(&config.serial, config.grace),
                config: config.clone(),
                current: None,
            }),
        };
        Ok(Self {
            watch,
            metrics: Metrics::new(adapter),
        })
    }

    /// The decision in force, once there is one; it follows every recheck.
    pub fn decision(&self) -> Arc<Mutex<Option<Applied>>> {
        Arc::clone(&self.metrics.shown)
    }

    /// Adds the licence metrics to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.metrics.licensed.clone()))?;
        registry.register(Box::new(self.metrics.info.clone()))?;
        if self.watch.is_some() {
            registry.register(Box::new(self.metrics.store_up.clone()))?;
            registry.register(Box::new(self.metrics.checks.clone()))?;
        }
        Ok(())
    }

    /// The first decision, applied before XDP is attached so that the first packet already
    /// gets it.
    pub async fn start(&mut self, dataplane: &mut Dataplane) -> Result<(), LoaderError> {
        let Some(watch) = self.watch.as_mut() else {
            warn!(
                "licensing is not configured (no `adapter` and `contracts` in the config): \
                 enforcing the rules without checking the Ultra Firewall Option contract"
            );
            let applied = Applied {
                licensed: true,
                reason: NOT_CONFIGURED,
                serial: String::new(),
                model: "",
                role: "",
            };
            self.metrics.show(&applied);
            return dataplane.set_enforcing(true);
        };
        watch.resume(dataplane)?;
        info!(
            serial = %watch.config.serial,
            store = %watch.config.url,
            recheck = %humantime::format_duration(watch.config.recheck),
            grace = %humantime::format_duration(watch.config.grace),
            "checking the Ultra Firewall Option licence"
        );
        let outcome = watch.check(&self.metrics).await;
        watch.apply(outcome, &self.metrics, dataplane)
    }

    /// Rechecks forever; returns only if the dataplane refuses an update.
    pub async fn run(
        mut self,
        dataplane: Arc<Mutex<Dataplane>>,
    ) -> Result<Infallible, LoaderError> {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        let mut ticks = tokio::time::interval(watch.config.recheck);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate, and `start` has just checked.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let outcome = watch.check(&self.metrics).await;
            let mut dataplane = match dataplane.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            watch.apply(outcome, &self.metrics, &mut dataplane)?;
        }
    }
}

fn unix_now() -> u32 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

impl Watch {
    /// On maps taken over from an earlier daemon: a licence that daemon applied, decided by
    /// the store less than the grace period ago, holds as if this daemon had decided it (so a
    /// restart while the store is unreachable does not fall open).
    fn resume(&mut self, dataplane: &Dataplane) -> Result<(), LoaderError> {
        let (enforcing, at) = dataplane.noted_decision()?;
        let age = Duration::from_secs(u64::from(unix_now().saturating_sub(at)));
        if !enforcing || at == 0 || age >= self.config.grace {
            return Ok(());
        }
        let Some(decided) = Instant::now().checked_sub(age) else {
            return Ok(());
        };
        info!(
            decided = %humantime::format_duration(age),
            "the pinned dataplane was licensed by the store this long ago; that decision holds for the grace period if the store cannot be reached"
        );
        self.holder.last = Some((
            Applied {
                licensed: true,
                reason: "licensed",
                serial: self.config.serial.clone(),
                model: "",
                role: "",
            },
            decided,
        ));
        Ok(())
    }

    /// Asks the store, counts the check and logs a failure.
    async fn check(&mut self, metrics: &Metrics) -> Outcome {
        let answer = decide(&self.store, &self.config.serial, Utc::now()).await;
        metrics.store_up.set(i64::from(answer.is_ok()));
        let result = match &answer {
            Ok(check) if check.decision.licensed => "licensed",
            Ok(_) => "not_licensed",
            Err(_) => "error",
        };
        metrics.checks.with_label_values(&[result]).inc();
        let outcome = self.holder.after(answer.as_ref().ok(), Instant::now());
        if let Err(problem) = &answer {
            match &outcome {
                Outcome::Held(applied, until) => warn!(
                    error = %problem,
                    licensed = applied.licensed,
                    reason = applied.reason,
                    holds_for = %humantime::format_duration(Duration::from_secs(until.saturating_duration_since(Instant::now()).as_secs())),
                    "cannot reach the contract store; the last licence decision holds for the grace period"
                ),
                _ => error!(
                    error = %problem,
                    "cannot reach the contract store and no licence decision holds (grace over or none yet): not licensed, passing every packet"
                ),
            }
        }
        outcome
    }

    /// Writes the enforce flag when the answer changes (one map update) and logs why.
    fn apply(
        &mut self,
        outcome: Outcome,
        metrics: &Metrics,
        dataplane: &mut Dataplane,
    ) -> Result<(), LoaderError> {
        if let Outcome::Decided(_) = outcome {
            dataplane.note_decision(unix_now())?;
        }
        let applied = outcome.applied();
        metrics.show(applied);
        let changed = self.current.as_ref().map(|c| c.licensed) != Some(applied.licensed);
        if changed {
            dataplane.set_enforcing(applied.licensed)?;
            if applied.licensed {
                info!(serial = %applied.serial, model = applied.model, role = applied.role, reason = applied.reason, "licensed: enforcing the rules");
            } else {
                warn!(serial = %applied.serial, model = applied.model, role = applied.role, reason = applied.reason, "not licensed: passing every packet (still metering)");
            }
        } else if self.current.as_ref().map(|c| c.reason) != Some(applied.reason) {
            info!(serial = %applied.serial, licensed = applied.licensed, reason = applied.reason, "licence reason changed");
        }
        self.current = Some(applied.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_contracts::{
        Model, Role,
        license::{LicenseDecision, Reason},
        model::parse_day,
    };

    fn check(reason: Reason) -> Check {
        Check {
            serial: "FUJI-0001".into(),
            decision: LicenseDecision {
                licensed: reason == Reason::Licensed,
                reason,
            },
            day: parse_day("2025-05-01").unwrap(),
            time_zone: chrono_tz::Asia::Tokyo,
            model: Some(Model::X86Fuji),
            role: Some(Role::Entry),
        }
    }

    // Each step: seconds since start, the store's answer (None: unreachable), and what the
    // dataplane does (licensed, reason). Grace is 100 s.
    #[test]
    fn the_last_decision_holds_for_grace_then_lapses() {
        let start = Instant::now();
        let mut holder = Holder::new("FUJI-0001", Duration::from_secs(100));
        let steps: [(u64, Option<Reason>, bool, &str); 7] = [
            (0, None, false, STORE_UNREACHABLE), // no decision yet: not licensed
            (10, Some(Reason::Licensed), true, "licensed"),
            (20, None, true, "licensed"),          // held
            (109, None, true, "licensed"),         // held: 99 s after the last answer
            (110, None, false, STORE_UNREACHABLE), // 100 s: grace over
            (
                120,
                Some(Reason::OptionTerminated),
                false,
                "option_terminated",
            ),
            (130, None, false, "option_terminated"), // a "no" holds as well
        ];
        for (seconds, answer, licensed, reason) in steps {
            let answer = answer.map(check);
            let outcome = holder.after(answer.as_ref(), start + Duration::from_secs(seconds));
            let applied = outcome.applied();
            assert_eq!(
                (applied.licensed, applied.reason),
                (licensed, reason),
                "at {seconds} s: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_held_decision_says_until_when() {
        let start = Instant::now();
        let mut holder = Holder::new("FUJI-0001", Duration::from_secs(60));
        holder.after(Some(&check(Reason::Licensed)), start);
        assert_eq!(
            holder.after(None, start + Duration::from_secs(5)),
            Outcome::Held(
                Applied {
                    licensed: true,
                    reason: "licensed",
                    serial: "FUJI-0001".into(),
                    model: "x86-fuji",
                    role: "entry",
                },
                start + Duration::from_secs(60)
            )
        );
    }
}
