//! `smf-firewall run`: load config and rules, attach to every interface, serve metrics, and
//! detach cleanly on SIGINT/SIGTERM. Everything that can fail is checked before the first
//! attach, and a failure part-way drops the dataplane, which detaches what was attached.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use prometheus::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    config::{Config, ConfigError},
    contracts::StoreError,
    license::watch::Licensing,
    loader::{self, Capacity, Dataplane, LoaderError},
    metrics::{
        self, DataplaneCollector,
        adapter::AdapterMetrics,
        conntrack::{ConntrackCollector, SweepTotals, sweeper},
        server::{Endpoint, ServeError},
        status::{self, Attachment},
    },
    rules::{
        RuleSet, RulesError,
        compile::{self, CompileError, RuleCounters},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{}: interface {interface} is in the config but has no rules; add it under `interfaces:`", rules.display())]
    NoRules { interface: String, rules: PathBuf },
    #[error("{}: {error}", rules.display())]
    Compile { rules: PathBuf, error: CompileError },
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    let rules = RuleSet::load(&config.rules)?;
    info!(config = %config_path.display(), rules = %config.rules.display(), "loaded configuration");

    let slots: Vec<(String, u32)> = config.interfaces.iter().cloned().zip(0..).collect();
    if let Some((missing, _)) = slots
        .iter()
        .find(|(name, _)| !rules.interfaces.contains_key(name))
    {
        return Err(DaemonError::NoRules {
            interface: missing.clone(),
            rules: config.rules.clone(),
        });
    }
    let mut counters = RuleCounters::default();
    let compiled =
        compile::ruleset(&rules, &slots, &mut counters).map_err(|error| DaemonError::Compile {
            rules: config.rules.clone(),
            error,
        })?;
    let ifindexes = slots
        .iter()
        .map(|(name, _)| loader::ifindex(name))
        .collect::<Result<Vec<u32>, _>>()?;
    let endpoint = Endpoint::bind(&config.metrics).await?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let adapter = AdapterMetrics::new(config.models.clone());
    let mut licensing = Licensing::new(config.licensing.as_ref(), adapter.clone())?;
    let capacity = Capacity::for_compiled(&compiled);
    let mut dataplane = Dataplane::load_with(capacity, config.conntrack.max_entries)?;
    let mut conntrack_settings = config.conntrack.timeouts.settings();
    // Without stateful rules, no packet looks the table up (a reload that adds some must
    // turn this on before installing them, and keep it on while flows may exist).
    conntrack_settings.tracking = u64::from(
        rules
            .interfaces
            .values()
            .any(|policy| policy.rules.iter().any(|rule| rule.state)),
    );
    dataplane.set_conntrack(&conntrack_settings)?;
    let pinned = pin_conntrack(
        &dataplane,
        config.conntrack.pin.as_deref(),
        conntrack_settings.tracking != 0,
    );
    licensing.start(&mut dataplane).await?;
    dataplane.reset_rule_counters(&compiled.fresh_counters)?;
    dataplane.install(&compiled)?;
    info!(
        entries = compiled.entries.len(),
        tree_nodes = compiled.nodes.len(),
        leaf_items = compiled.leaves.len(),
        longest_leaf = compiled.longest_leaf(),
        kernel_bytes = capacity.bytes(),
        "rules compiled and loaded"
    );
    let mut attachments = Vec::new();
    for ((name, slot), ifindex) in slots.iter().zip(ifindexes) {
        dataplane.bind(ifindex, *slot)?;
        let mode = dataplane.attach(name)?;
        dataplane.attach_egress(name)?;
        let count = rules.interfaces[name].rules.len();
        info!(interface = %name, ifindex, rules = count, mode = ?mode, "enforcing rules");
        attachments.push(Attachment {
            interface: name.clone(),
            ifindex,
            mode,
            rules: count,
        });
    }
    // The kernel holds the rules now; give the parse and compile peak back to the system.
    drop(compiled);
    drop(rules);
    release_freed_memory();
    let dataplane = Arc::new(Mutex::new(dataplane));

    let registry = Registry::new();
    registry
        .register(Box::new(DataplaneCollector::new(
            Arc::clone(&dataplane),
            config.interfaces.clone(),
            counters
                .iter()
                .map(|(i, r, s)| (i.to_string(), r.to_string(), s))
                .collect(),
        )))
        .expect("metric names are registered once");
    licensing
        .register(&registry)
        .expect("metric names are registered once");
    adapter
        .register(&registry)
        .expect("metric names are registered once");
    status::register(&registry, &attachments).expect("metric names are registered once");
    let sweeps = Arc::new(SweepTotals::default());
    registry
        .register(Box::new(ConntrackCollector::new(
            Arc::clone(&dataplane),
            Arc::clone(&sweeps),
            config.interfaces.clone(),
            config.conntrack.max_entries,
        )))
        .expect("metric names are registered once");
    info!(
        listen = %config.metrics.listen,
        scheme = endpoint.scheme(),
        basic_auth = !config.metrics.basic_auth_users.is_empty(),
        "serving Prometheus metrics on /metrics"
    );

    let signal = tokio::select! {
        served = metrics::serve(endpoint, registry) => {
            return Err(match served {
                Err(error) => error.into(),
                Ok(()) => DaemonError::Metrics { address: config.metrics.listen, source: std::io::Error::other("server stopped") },
            });
        }
        failed = licensing.run(Arc::clone(&dataplane)) => {
            return Err(DaemonError::Loader(match failed { Err(error) => error }));
        }
        () = sweeper(Arc::clone(&dataplane), conntrack_settings, config.conntrack.sweep, sweeps) => {
            unreachable!("the sweeper runs forever")
        }
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(signal, "stopping: detaching XDP from every interface");
    drop(dataplane);
    if let Some(dir) = pinned {
        unpin_conntrack(&dir);
    }
    info!("stopped");
    Ok(())
}

/// Returns freed heap to the system (glibc keeps it otherwise), so that resident memory shows
/// what the daemon holds, not the peak of parsing a large rule file.
fn release_freed_memory() {
    // SAFETY: malloc_trim only releases memory that is free; it has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// Pins the flow table for `smf-firewall conntrack`; a failure is a warning when rules track
/// flows (the firewall works without the command), else a note. Returns the directory pinned.
fn pin_conntrack(dataplane: &Dataplane, dir: Option<&Path>, tracking: bool) -> Option<PathBuf> {
    let dir = dir?;
    match dataplane.pin_conntrack(dir) {
        Ok(()) => {
            info!(pin = %dir.display(), "pinned the connection-tracking table");
            Some(dir.to_path_buf())
        }
        Err(error) if tracking => {
            warn!(%error, "cannot pin the connection-tracking table; `smf-firewall conntrack` will not see it");
            None
        }
        Err(error) => {
            info!(%error, "cannot pin the (unused) connection-tracking table");
            None
        }
    }
}

/// Removes what `pin_conntrack` pinned (the kernel frees the maps with their last user).
fn unpin_conntrack(dir: &Path) {
    for (_, file) in loader::PINNED_CONNTRACK {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let _ = std::fs::remove_dir(dir);
}
