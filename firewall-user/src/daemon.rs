//! `smf-firewall run`: load config and rules, attach to every interface, serve metrics, and
//! detach cleanly on SIGINT/SIGTERM. Everything that can fail is checked before the first
//! attach, and a failure part-way drops the dataplane, which detaches what was attached.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use prometheus::Registry;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::info;

use crate::{
    config::{Config, ConfigError},
    contracts::StoreError,
    license::watch::Licensing,
    loader::{self, Dataplane, LoaderError},
    metrics::{self, DataplaneCollector},
    rules::{RuleSet, RulesError, compile},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{}: interface {interface} is in the config but has no rules; add it under `interfaces:`", rules.display())]
    NoRules { interface: String, rules: PathBuf },
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
}

pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    let rules = RuleSet::load(&config.rules)?;
    info!(config = %config_path.display(), rules = %config.rules.display(), "loaded configuration");

    let mut compiled = Vec::with_capacity(config.interfaces.len());
    for (slot, name) in config.interfaces.iter().enumerate() {
        let policy = rules
            .interfaces
            .get(name)
            .ok_or_else(|| DaemonError::NoRules {
                interface: name.clone(),
                rules: config.rules.clone(),
            })?;
        let ifindex = loader::ifindex(name)?;
        compiled.push((
            name,
            ifindex,
            compile::interface(policy, slot as u32),
            policy.rules.len(),
        ));
    }
    let listener = TcpListener::bind(config.metrics.listen)
        .await
        .map_err(|source| DaemonError::Metrics {
            address: config.metrics.listen,
            source,
        })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let mut licensing = Licensing::new(config.licensing.as_ref())?;
    let mut dataplane = Dataplane::load()?;
    licensing.start(&mut dataplane).await?;
    for (name, ifindex, interface_rules, count) in &compiled {
        dataplane.install(*ifindex, interface_rules)?;
        let mode = dataplane.attach(name)?;
        info!(interface = %name, ifindex, rules = count, mode = ?mode, "enforcing rules");
    }
    let dataplane = Arc::new(Mutex::new(dataplane));

    let registry = Registry::new();
    registry
        .register(Box::new(DataplaneCollector::new(
            Arc::clone(&dataplane),
            config.interfaces.clone(),
        )))
        .expect("metric names are registered once");
    licensing
        .register(&registry)
        .expect("metric names are registered once");
    info!(listen = %config.metrics.listen, "serving Prometheus metrics on /metrics");

    let signal = tokio::select! {
        served = metrics::serve(listener, registry) => {
            return Err(DaemonError::Metrics { address: config.metrics.listen, source: served.err().unwrap_or_else(|| std::io::Error::other("server stopped")) });
        }
        failed = licensing.run(Arc::clone(&dataplane)) => {
            return Err(DaemonError::Loader(match failed { Err(error) => error }));
        }
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(signal, "stopping: detaching XDP from every interface");
    drop(dataplane);
    info!("stopped");
    Ok(())
}
