//! The daemon's licence loop: decide at start and at every recheck, apply the answer to the
//! dataplane with one map update, and keep the last answer for `grace` while the store cannot
//! be reached. Metrics: `smf_firewall_license_licensed`, `smf_firewall_license_info`,
//! `smf_firewall_license_mode_info`, `smf_firewall_contract_store_up`,
//! `smf_firewall_license_checks_total`. In the grant modes (`grants`) the decision is a signed
//! grant instead, held for its own window, with `smf_firewall_license_grant_info{key_id}`,
//! `smf_firewall_license_grant_expiry_timestamp_seconds` and
//! `smf_firewall_license_grant_refused_total{reason}`.

mod applied;
pub mod grants;

pub use self::applied::Applied;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

use firewall_contracts::license::{Check, decide};
use firewall_contracts::{Store, StoreError};
use firewall_dataplane::loader::{Dataplane, LoaderError};
use firewall_grants::{Grant, Refusal};

use self::grants::{Checked, GrantSetupError, GrantSource};
use crate::{
    config::{LicenseSource, LicensingConfig},
    file_watch::{FileWatch, WatchError},
    metrics::adapter::AdapterMetrics,
};

#[derive(Debug, thiserror::Error)]
pub enum LicensingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Grants(#[from] GrantSetupError),
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// What `status` shows of the licence: the decision, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub applied: Applied,
    /// `store`, `grant`, `url` or `not_configured`.
    pub mode: &'static str,
    /// The grant in force (valid or expired), in the grant modes.
    pub grant: Option<GrantShown>,
}

/// A grant's key id and window, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantShown {
    pub key_id: String,
    pub decided_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// The `reason` label when the store could not be reached for longer than `grace`.
pub const STORE_UNREACHABLE: &str = "store_unreachable";
/// The `reason` label when the config has no `adapter`/`contracts`: rules are enforced.
pub const NOT_CONFIGURED: &str = "not_configured";

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
    /// What the grant in force (or its absence) says.
    Granted(Applied),
}

impl Outcome {
    pub fn applied(&self) -> &Applied {
        match self {
            Outcome::Decided(applied)
            | Outcome::Held(applied, _)
            | Outcome::Lapsed(applied)
            | Outcome::Granted(applied) => applied,
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
    mode: IntGaugeVec,
    store_up: IntGauge,
    checks: IntCounterVec,
    grant_info: IntGaugeVec,
    grant_expiry: IntGauge,
    grant_refused: IntCounterVec,
    /// The adapter's capacity and info follow the model the checks find (metering).
    adapter: AdapterMetrics,
    /// The decision shown, for `smf-firewall status`.
    shown: Arc<Mutex<Option<Shown>>>,
    /// `store`, `grant`, `url` or `not_configured`.
    mode_name: &'static str,
    /// The grant in force, in the grant modes.
    grant: Option<GrantShown>,
}

impl Metrics {
    fn new(adapter: AdapterMetrics, mode_name: &'static str) -> Self {
        let mode = IntGaugeVec::new(
            Opts::new(
                "smf_firewall_license_mode_info",
                "Where the licence decision comes from: store (the contract store), grant (a signed grant file), url (a grant server), or not_configured (value 1).",
            ),
            &["mode"],
        )
        .expect("valid metric definition");
        mode.with_label_values(&[mode_name]).set(1);
        let grant_refused = IntCounterVec::new(
            Opts::new(
                "smf_firewall_license_grant_refused_total",
                "Grants read or fetched and refused, by reason: grant_malformed, grant_unknown_key, grant_bad_signature, grant_other_serial, grant_not_yet_valid, grant_expired, grant_replayed.",
            ),
            &["reason"],
        )
        .expect("valid metric definition");
        for reason in Refusal::REASONS {
            grant_refused.with_label_values(&[reason]);
        }
        Self {
            adapter,
            shown: Arc::default(),
            mode,
            mode_name,
            grant: None,
            grant_info: IntGaugeVec::new(
                Opts::new(
                    "smf_firewall_license_grant_info",
                    "The grant in force (valid or expired): the id of the provider's key that signed it (value 1).",
                ),
                &["key_id"],
            )
            .expect("valid metric definition"),
            grant_expiry: IntGauge::new(
                "smf_firewall_license_grant_expiry_timestamp_seconds",
                "When the grant in force expires (its valid_until), in seconds since the epoch; 0 without a grant.",
            )
            .expect("valid metric definition"),
            grant_refused,
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
                    "Licence checks, by result: licensed, not_licensed, error (store unreachable, grant unreadable or server unreachable), or refused (a grant that does not verify).",
                ),
                &["result"],
            )
            .expect("valid metric definition"),
        }
    }

    fn show(&self, applied: &Applied) {
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = Some(Shown {
            applied: applied.clone(),
            mode: self.mode_name,
            grant: self.grant.clone(),
        });
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

    /// The grant in force, before `show`.
    fn hold(&mut self, held: Option<&Grant>) {
        self.grant = held.map(|grant| GrantShown {
            key_id: grant.key_id.clone(),
            decided_at: grant.decided_at,
            valid_until: grant.valid_until,
        });
        self.grant_info.reset();
        if let Some(grant) = held {
            self.grant_info
                .with_label_values(&[grant.key_id.as_str()])
                .set(1);
        }
        self.grant_expiry
            .set(held.map_or(0, |grant| grant.valid_until.timestamp()));
    }
}

/// The daemon's licensing: configured (a store or a grant, and a serial) or not (rules
/// always enforced).
pub struct Licensing {
    watch: Option<Watch>,
    metrics: Metrics,
    /// Notified on `reload`: re-read the grant file, fetch the grant, ask the store now.
    reread: Arc<Notify>,
}

struct Watch {
    config: LicensingConfig,
    source: Source,
    /// What the dataplane does now.
    current: Option<Applied>,
}

enum Source {
    Store {
        store: Store,
        holder: Holder,
    },
    Grants {
        grants: Box<GrantSource>,
        /// Changes of the grant file (file mode); the watch lives as long as this.
        changed: Option<(FileWatch, mpsc::UnboundedReceiver<()>)>,
    },
}

impl Licensing {
    /// Prepares the checks; nothing is asked of the store or the grant server yet, and an
    /// unreachable one is not an error here (the daemon still meters, Art. 24). Public key
    /// files are read now: a missing one stops the start. The checks' model feeds `adapter`.
    pub fn new(
        config: Option<&LicensingConfig>,
        adapter: AdapterMetrics,
    ) -> Result<Self, LicensingError> {
        let mode = config.map_or("not_configured", |c| c.source.mode());
        let watch = match config {
            None => None,
            Some(config) => Some(Watch {
                source: Source::new(config)?,
                config: config.clone(),
                current: None,
            }),
        };
        Ok(Self {
            watch,
            metrics: Metrics::new(adapter, mode),
            reread: Arc::default(),
        })
    }

    /// The decision in force, once there is one; it follows every recheck.
    pub fn decision(&self) -> Arc<Mutex<Option<Shown>>> {
        Arc::clone(&self.metrics.shown)
    }

    /// Notify it to check at once (the daemon does on `reload` and SIGHUP).
    pub fn reread(&self) -> Arc<Notify> {
        Arc::clone(&self.reread)
    }

    /// Adds the licence metrics to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.metrics.licensed.clone()))?;
        registry.register(Box::new(self.metrics.info.clone()))?;
        registry.register(Box::new(self.metrics.mode.clone()))?;
        match self.watch.as_ref().map(|w| &w.source) {
            None => {}
            Some(Source::Store { .. }) => {
                registry.register(Box::new(self.metrics.store_up.clone()))?;
                registry.register(Box::new(self.metrics.checks.clone()))?;
            }
            Some(Source::Grants { .. }) => {
                registry.register(Box::new(self.metrics.checks.clone()))?;
                registry.register(Box::new(self.metrics.grant_info.clone()))?;
                registry.register(Box::new(self.metrics.grant_expiry.clone()))?;
                registry.register(Box::new(self.metrics.grant_refused.clone()))?;
            }
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
        watch.log_start();
        let outcome = watch.check(&mut self.metrics).await;
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
        loop {
            let wait = watch.next_check();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.reread.notified() => info!("reload: checking the licence now"),
                () = watch.source.changed() => info!("the grant file changed: reading it"),
            }
            let outcome = watch.check(&mut self.metrics).await;
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

impl Source {
    fn new(config: &LicensingConfig) -> Result<Source, LicensingError> {
        if let LicenseSource::Store { url } = &config.source {
            return Ok(Source::Store {
                // A check waits for the store at most this long, and never past the next.
                store: Store::lazy(
                    url,
                    config
                        .recheck
                        .clamp(Duration::from_secs(1), Duration::from_secs(10)),
                )?,
                holder: Holder::new(&config.serial, config.grace),
            });
        }
        let grants = GrantSource::new(&config.serial, &config.source)?
            .expect("a grant mode has a grant source");
        let changed = match grants.file() {
            Some(file) => {
                let (tx, rx) = mpsc::unbounded_channel();
                Some((FileWatch::new(file, tx)?, rx))
            }
            None => None,
        };
        Ok(Source::Grants {
            grants: Box::new(grants),
            changed,
        })
    }

    /// A change of the grant file; never, in the other modes.
    async fn changed(&mut self) {
        match self {
            Source::Grants {
                changed: Some((_, rx)),
                ..
            } => {
                if rx.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            _ => std::future::pending().await,
        }
    }
}

impl Watch {
    fn log_start(&self) {
        let recheck = humantime::format_duration(self.config.recheck);
        match &self.source {
            Source::Store { .. } => info!(
                serial = %self.config.serial,
                store = %self.config.store_url().unwrap_or_default(),
                %recheck,
                grace = %humantime::format_duration(self.config.grace),
                "checking the Ultra Firewall Option licence"
            ),
            Source::Grants { grants, .. } => info!(
                serial = %self.config.serial,
                mode = self.config.source.mode(),
                keys = ?grants.key_ids(),
                %recheck,
                "checking the Ultra Firewall Option licence by signed grants"
            ),
        }
    }

    fn next_check(&self) -> Duration {
        match &self.source {
            Source::Store { .. } => self.config.recheck,
            Source::Grants { grants, .. } => grants.next_check(self.config.recheck, Utc::now()),
        }
    }

    /// On maps taken over from an earlier daemon: a licence that daemon applied, decided by
    /// the store less than the grace period ago, holds as if this daemon had decided it (so a
    /// restart while the store is unreachable does not fall open). From a grant server, the
    /// grant that daemon fetched holds likewise, for its own window.
    fn resume(&mut self, dataplane: &Dataplane) -> Result<(), LoaderError> {
        let holder = match &mut self.source {
            Source::Store { holder, .. } => holder,
            Source::Grants { grants, .. } => {
                grants.resume();
                return Ok(());
            }
        };
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
        holder.last = Some((
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

    /// Asks the store or reads the grant, counts the check and logs a failure.
    async fn check(&mut self, metrics: &mut Metrics) -> Outcome {
        match &mut self.source {
            Source::Store { store, holder } => {
                check_store(store, holder, &self.config.serial, metrics).await
            }
            Source::Grants { grants, .. } => {
                let checked = grants.check().await;
                log_grant_check(&checked);
                metrics.checks.with_label_values(&[checked.result]).inc();
                if let Some(refusal) = &checked.refusal {
                    metrics
                        .grant_refused
                        .with_label_values(&[refusal.reason()])
                        .inc();
                }
                metrics.hold(checked.held.as_ref());
                // Not `Decided`: the store's note of its decisions is not a grant's.
                Outcome::Granted(checked.applied)
            }
        }
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

/// One question to the store, counted, its failure logged.
async fn check_store(
    store: &Store,
    holder: &mut Holder,
    serial: &str,
    metrics: &Metrics,
) -> Outcome {
    let answer = decide(store, serial, Utc::now()).await;
    metrics.store_up.set(i64::from(answer.is_ok()));
    let result = match &answer {
        Ok(check) if check.decision.licensed => "licensed",
        Ok(_) => "not_licensed",
        Err(_) => "error",
    };
    metrics.checks.with_label_values(&[result]).inc();
    let outcome = holder.after(answer.as_ref().ok(), Instant::now());
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

fn log_grant_check(checked: &Checked) {
    let until = checked.held.as_ref().map(|g| g.valid_until);
    if let Some(refusal) = &checked.refusal {
        warn!(reason = refusal.reason(), error = %refusal, holding_until = ?until, "refused a grant; the grant in force (if any) holds until its expiry");
    }
    if let Some(problem) = &checked.problem {
        match until {
            Some(until) if checked.applied.reason != "grant_expired" => warn!(
                error = %problem,
                valid_until = %until,
                "cannot get a new grant; the grant in force holds until its expiry"
            ),
            _ => {
                error!(error = %problem, "cannot get a grant and none holds: not licensed, passing every packet")
            }
        }
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
