//! `smf-firewall run`: load config and rules, take over (or make) the pinned dataplane, attach
//! to every interface, serve metrics and the control socket, reload on request, and on
//! SIGTERM detach and unpin (or leave everything in place, `keep_attached_on_exit`).
//!
//! Everything that can fail is checked before the first attach. The maps and XDP links are
//! pinned, so the kernel goes on enforcing the last rules if the daemon dies; the next daemon
//! loads its program on the same maps and swaps it into the same links, atomically.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use firewall_contracts::StoreError;
use firewall_dataplane::{
    loader::{self, Capacity, Dataplane, LoaderError, LruSizes},
    object,
    pins::{PinError, Pins},
};
use firewall_rules::{RuleSet, RulesError, compile::Compiled};
use prometheus::Registry;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, oneshot},
};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    control::{
        self, Answer, ControlError, Request,
        protocol::{self, Is},
    },
    drop_log::DropLog,
    file_watch::{FileWatch, WatchError},
    instance_lock::{InstanceLock, LockError},
    interfaces::{self, Interfaces},
    licensing::Licensing,
    metrics::{
        self, DataplaneCollector, RuleLabels,
        adapter::AdapterMetrics,
        conntrack::{ConntrackCollector, SweepTotals, sweeper},
        limits::LimitCollector,
        release_freed_memory,
        server::{Endpoint, ServeError},
        status::{self, Attachment, Reloads, SharedAttachments, mode_label},
    },
    reload::{Loaded, ReloadError, Summary},
    state::Saved,
    trace::{TraceError, Tracer},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Watch(#[from] WatchError),
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
    Licensing(#[from] crate::licensing::LicensingError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    // Before any pin is touched, and held until the process ends: a second daemon on this
    // runtime_dir or pin_path is refused here, having changed nothing.
    let mut lock = InstanceLock::acquire(&config.operations)?;
    let pins = Pins::new(&config.operations.pin_path);
    let result = match pins.prepare() {
        Ok(made) => {
            lock.made(made);
            serve(config_path, config, &pins).await
        }
        Err(error) => Err(error.into()),
    };
    if result.is_err() {
        // Still under the lock: only the empty directories this process made.
        lock.remove_created();
    }
    result
}

async fn serve(config_path: &Path, config: Config, pins: &Pins) -> Result<(), DaemonError> {
    let prepared = prepare(config_path, config, pins).await?;
    let attached = attach(prepared, pins)?;
    let metrics = register_metrics(&attached);
    run_until_stopped(config_path, attached, metrics, pins).await
}

/// The signals that stop or reload the daemon.
struct Signals {
    sigterm: Signal,
    sigint: Signal,
    sighup: Signal,
}

/// Everything that can fail, done before the first attach: the rules read and compiled into
/// the (taken over or new) maps, the sockets bound, the licence decided.
struct Prepared {
    started: Instant,
    config: Config,
    rules: RuleSet,
    saved: Option<Saved>,
    loaded: Loaded,
    compiled: Compiled,
    ifindexes: Vec<u32>,
    endpoint: Endpoint,
    control: control::Server,
    signals: Signals,
    changed: mpsc::UnboundedReceiver<()>,
    watch: Option<FileWatch>,
    adapter: AdapterMetrics,
    licensing: Licensing,
    dataplane: Dataplane,
    maps_dir: PathBuf,
    drop_log: DropLog,
    /// Rule ids by counter slot, for metrics and traces; reloads keep them current.
    labels: RuleLabels,
    tracer: Arc<Tracer>,
}

async fn prepare(config_path: &Path, config: Config, pins: &Pins) -> Result<Prepared, DaemonError> {
    let started = Instant::now();
    let ops = config.operations.clone();
    let rules = config.load_rules()?;
    info!(config = %config_path.display(), rules = %config.rules.display(), "loaded configuration");

    let saved = Saved::read(&ops.state_file());
    let slots: Vec<(String, u32)> = config.interfaces.iter().cloned().zip(0..).collect();
    let counters = saved
        .as_ref()
        .map(|s| s.counters.clone())
        .unwrap_or_default();
    let conntrack = config.conntrack.timeouts.settings();
    let (loaded, compiled) = Loaded::compile(&config.rules, &rules, slots, counters, conntrack)?;
    let ifindexes = config
        .interfaces
        .iter()
        .map(|name| loader::ifindex(name))
        .collect::<Result<Vec<u32>, _>>()?;
    let endpoint = Endpoint::bind(&config.metrics).await?;
    let control = control::Server::bind(&ops.control_socket())?;
    let sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let (changed_tx, changed) = mpsc::unbounded_channel();
    let watch = match ops.watch {
        true => Some(FileWatch::new(&config.rules, changed_tx)?),
        false => None,
    };

    let adapter = AdapterMetrics::new(config.models.clone());
    let mut licensing = Licensing::new(config.licensing.as_ref(), adapter.clone())?;
    let lru = LruSizes {
        flows: config.conntrack.max_entries,
        limit_keys: config.limits.max_keys,
    };
    let (mut dataplane, maps_dir) = open_dataplane(pins, &compiled, lru)?;
    dataplane.set_conntrack(&loaded.conntrack)?;
    licensing.start(&mut dataplane).await?;
    if saved.as_ref().map(|s| &s.maps_dir) != Some(&maps_dir) {
        // Counts in these maps belong to slots that the saved state does not describe.
        let all: Vec<u32> = loaded.counters.iter().map(|(_, _, slot)| slot).collect();
        dataplane.reset_rule_counters(&all)?;
    }
    dataplane.reset_rule_counters(&compiled.fresh_counters)?;
    dataplane.install(&compiled)?;
    let drop_log = DropLog::start(
        &mut dataplane,
        &config.drop_log,
        loaded.slots(),
        &loaded.logged,
    )?;
    let labels: RuleLabels = Arc::new(RwLock::new(loaded.rule_labels()));
    let tracer = Arc::new(Tracer::new(
        dataplane.take_trace()?,
        loaded.slots(),
        Arc::clone(&labels),
    )?);
    info!(
        entries = compiled.entries.len(),
        tree_nodes = compiled.nodes.len(),
        leaf_items = compiled.leaves.len(),
        exact_slots = compiled.exact.len(),
        longest_leaf = compiled.longest_leaf(),
        kernel_bytes = dataplane.capacity().bytes(),
        generation = dataplane.generation(),
        "rules compiled and loaded"
    );
    Ok(Prepared {
        started,
        config,
        rules,
        saved,
        loaded,
        compiled,
        ifindexes,
        endpoint,
        control,
        signals: Signals {
            sigterm,
            sigint,
            sighup,
        },
        changed,
        watch,
        adapter,
        licensing,
        dataplane,
        maps_dir,
        drop_log,
        labels,
        tracer,
    })
}

/// The daemon enforcing its rules on every configured interface.
struct Attached {
    started: Instant,
    config: Config,
    loaded: Loaded,
    endpoint: Endpoint,
    control: control::Server,
    signals: Signals,
    changed: mpsc::UnboundedReceiver<()>,
    /// Kept for as long as the daemon runs: dropping it stops the watch.
    _watch: Option<FileWatch>,
    adapter: AdapterMetrics,
    licensing: Licensing,
    dataplane: Arc<Mutex<Dataplane>>,
    maps_dir: PathBuf,
    drop_log: DropLog,
    labels: RuleLabels,
    tracer: Arc<Tracer>,
    attachments: Vec<Attachment>,
    /// The attachments as the metrics see them, kept up to date by `Interfaces`.
    shared: SharedAttachments,
    /// Rules per interface as first loaded.
    counts: Vec<(String, usize)>,
}

/// Attaches (or takes over) every interface, then retires what the config no longer names
/// and saves the state.
fn attach(prepared: Prepared, pins: &Pins) -> Result<Attached, DaemonError> {
    let Prepared {
        started,
        config,
        rules,
        saved,
        loaded,
        compiled,
        ifindexes,
        endpoint,
        control,
        signals,
        changed,
        watch,
        adapter,
        licensing,
        mut dataplane,
        maps_dir,
        drop_log,
        labels,
        tracer,
    } = prepared;
    let ops = &config.operations;
    let attachments = attach_all(&mut dataplane, pins, &loaded, &ifindexes, saved.as_ref())?;
    let counts = loaded.rule_counts();
    dataplane.unbind_others(&ifindexes)?;
    retire(pins, &config.interfaces, &maps_dir)?;
    save(&ops.state_file(), &maps_dir, &loaded, &attachments);
    // The kernel holds the rules now; give the parse and compile peak back to the system.
    drop(compiled);
    drop(rules);
    release_freed_memory();
    let dataplane = Arc::new(Mutex::new(dataplane));
    let shared = interfaces::share(&attachments);
    Ok(Attached {
        started,
        config,
        loaded,
        endpoint,
        control,
        signals,
        changed,
        _watch: watch,
        adapter,
        licensing,
        dataplane,
        maps_dir,
        drop_log,
        labels,
        tracer,
        attachments,
        shared,
        counts,
    })
}

/// The registry behind /metrics and what the running daemon updates in it.
struct Metrics {
    registry: Registry,
    labels: RuleLabels,
    reloads: Reloads,
    sweeps: Arc<SweepTotals>,
}

fn register_metrics(attached: &Attached) -> Metrics {
    let config = &attached.config;
    let registry = Registry::new();
    let labels = Arc::clone(&attached.labels);
    registry
        .register(Box::new(DataplaneCollector::new(
            Arc::clone(&attached.dataplane),
            config.interfaces.clone(),
            Arc::clone(&labels),
        )))
        .expect("metric names are registered once");
    registry
        .register(Box::new(LimitCollector::new(
            Arc::clone(&attached.dataplane),
            Arc::clone(&labels),
        )))
        .expect("metric names are registered once");
    attached
        .licensing
        .register(&registry)
        .expect("metric names are registered once");
    attached
        .adapter
        .register(&registry)
        .expect("metric names are registered once");
    let reloads =
        status::register(&registry, &attached.shared).expect("metric names are registered once");
    reloads.succeeded(&attached.counts, true);
    let sweeps = Arc::new(SweepTotals::default());
    registry
        .register(Box::new(ConntrackCollector::new(
            Arc::clone(&attached.dataplane),
            Arc::clone(&sweeps),
            config.interfaces.clone(),
            config.conntrack.max_entries,
        )))
        .expect("metric names are registered once");
    attached
        .drop_log
        .register(&registry)
        .expect("metric names are registered once");
    Metrics {
        registry,
        labels,
        reloads,
        sweeps,
    }
}

/// Serves metrics and the control socket, rechecks the licence, sweeps the flow table and
/// reloads on request, until a signal stops it (or one of those fails); then stops.
async fn run_until_stopped(
    config_path: &Path,
    attached: Attached,
    metrics: Metrics,
    pins: &Pins,
) -> Result<(), DaemonError> {
    let Attached {
        started,
        config,
        loaded,
        endpoint,
        control,
        signals:
            Signals {
                mut sigterm,
                mut sigint,
                mut sighup,
            },
        mut changed,
        _watch,
        adapter: _,
        licensing,
        dataplane,
        maps_dir,
        drop_log,
        labels: _,
        tracer,
        attachments,
        shared,
        counts: _,
    } = attached;
    let Metrics {
        registry,
        labels,
        reloads,
        sweeps,
    } = metrics;
    let ops = config.operations.clone();
    info!(
        listen = %config.metrics.listen,
        scheme = endpoint.scheme(),
        basic_auth = !config.metrics.basic_auth_users.is_empty(),
        "serving Prometheus metrics on /metrics"
    );
    info!(socket = %ops.control_socket().display(), watch = ops.watch, "ready: `smf-firewall reload`, SIGHUP{} reload the rules", if ops.watch { " and saving the rules file" } else { "" });
    notify_systemd(&[sd_notify::NotifyState::Ready]);

    let interfaces = Interfaces::new(pins.clone(), loaded.slots().to_vec(), shared);
    let mut links = interfaces::watch();
    let mut recheck_links = tokio::time::interval(interfaces::PERIOD);
    recheck_links.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (generation, tracking) = (
        lock(&dataplane).generation(),
        loaded.conntrack.tracking != 0,
    );
    let mut operator = Operator {
        config_path: config_path.to_path_buf(),
        rules_path: config.rules.clone(),
        started,
        loaded: Arc::new(Mutex::new(loaded)),
        dataplane: Arc::clone(&dataplane),
        labels,
        reloads,
        attachments,
        maps_dir,
        state_file: ops.state_file(),
        pins: pins.clone(),
        license: licensing.decision(),
        reread_license: licensing.reread(),
        last_reload: None,
        keep_attached_on_exit: ops.keep_attached_on_exit,
        watch: ops.watch,
        drop_log,
        tracer: Arc::clone(&tracer),
        flows: (Arc::clone(&sweeps), config.conntrack.max_entries),
        interfaces,
        generation,
        tracking,
        reading: Arc::new(AtomicBool::new(false)),
    };
    let (calls_tx, mut calls) = mpsc::channel(8);
    let serve_metrics = metrics::serve(endpoint, registry);
    let serve_control = control.serve(calls_tx, Some(Arc::clone(&tracer)));
    // Their own tasks: they take the dataplane lock, which a reload holds while it swaps.
    let mut recheck = AbortOnDrop(tokio::spawn(licensing.run(Arc::clone(&dataplane))));
    let mut sweep = AbortOnDrop(tokio::spawn(sweeper(
        Arc::clone(&dataplane),
        config.conntrack.timeouts.settings(),
        config.conntrack.sweep,
        sweeps,
    )));
    // A reload runs off this loop (see `Operator::start_reload`): one at a time, and its
    // outcome comes back here. Meanwhile the loop answers metrics, `status` and signals; a
    // `reload` or SIGHUP is refused, a change seen by the file watch is queued (one reload
    // after this one).
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut reloading: Option<Reloading> = None;
    let mut watch_queued = false;
    tokio::pin!(serve_metrics, serve_control);
    let signal = loop {
        tokio::select! {
            served = &mut serve_metrics => {
                return Err(match served {
                    Err(error) => error.into(),
                    Ok(()) => DaemonError::Metrics { address: config.metrics.listen, source: std::io::Error::other("server stopped") },
                });
            }
            served = &mut serve_control => {
                let source = served.err().unwrap_or_else(|| std::io::Error::other("stopped"));
                return Err(ControlError::Bind { path: ops.control_socket(), source }.into());
            }
            failed = &mut recheck.0 => {
                return Err(DaemonError::Loader(match failed {
                    Ok(Err(error)) => error,
                    Err(panic) => std::panic::resume_unwind(panic.into_panic()),
                }));
            }
            _ = &mut sweep.0 => unreachable!("the sweeper runs forever"),
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            Some(interfaces::LinkEvent) = links.recv() => {
                // One reconcile for a burst of events.
                while links.try_recv().is_ok() {}
                operator.reconcile();
            }
            _ = recheck_links.tick() => operator.reconcile(),
            _ = sighup.recv() => {
                operator.begin_reload("SIGHUP", None, &mut reloading, &done_tx);
            }
            Some(()) = changed.recv() => {
                if reloading.is_some() {
                    watch_queued = true;
                } else {
                    operator.begin_reload("file watch", None, &mut reloading, &done_tx);
                }
            }
            Some((request, reply)) = calls.recv() => match request {
                Request::Reload => {
                    operator.begin_reload("reload command", Some(reply), &mut reloading, &done_tx);
                }
                Request::Status => {
                    let _ = reply.send(operator.status());
                }
                Request::Handover => {
                    let _ = reply.send(operator.status());
                    break HANDOVER;
                }
                // Served on their connection (`control::answer`), never sent here.
                Request::Trace(_) => {
                    let _ = reply.send(control::failure("a trace is served on its connection".into()));
                }
            },
            Some(outcome) = done.recv() => {
                let Some(Reloading { trigger, reply, .. }) = reloading.take() else {
                    continue;
                };
                let answer = operator.finish_reload(trigger, outcome);
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
                if std::mem::take(&mut watch_queued) {
                    operator.begin_reload("file watch", None, &mut reloading, &done_tx);
                }
            }
        }
    };
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    // Before anything goes: a trace's switch is off also for a daemon taking over the maps.
    tracer.stop();
    // A reload still reading is abandoned (its outcome is never applied); one swapping rules
    // in holds the dataplane lock: wait for it, so that nothing writes maps while they go.
    drop(reloading);
    drop((recheck, sweep));
    drop(lock(&dataplane));
    drop(dataplane);
    operator.stop(signal)
}

/// What ends the loop on a `handover` request: a stop that leaves everything attached.
const HANDOVER: &str = "handover request";

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a reload may take to read and compile the rules file before it is given up.
pub const RELOAD_READ_LIMIT: Duration = Duration::from_secs(30);

/// The reload under way: what started it, who waits for its answer, and its task.
struct Reloading {
    trigger: &'static str,
    reply: Option<oneshot::Sender<Answer>>,
    _task: AbortOnDrop<()>,
}

/// What a reload that took effect changed, for the loop to publish.
struct Reloaded {
    summary: Summary,
    labels: Vec<(String, String, u32)>,
    counts: Vec<(String, usize)>,
    logged: Vec<(u32, String)>,
    generation: u32,
    tracking: bool,
}

/// Takes over the newest pinned maps of this binary's layout that can hold `compiled`, or
/// makes new ones beside whatever is pinned (make-before-break: the old maps stay in use
/// until the links are swapped to the new program).
fn open_dataplane(
    pins: &Pins,
    compiled: &Compiled,
    lru: LruSizes,
) -> Result<(Dataplane, PathBuf), DaemonError> {
    let layout = object::layout();
    let existing = pins.maps_dirs()?;
    for dir in existing.iter().rev().filter(|dir| dir.layout == layout) {
        let Some(capacity) = Dataplane::pinned_capacity(&dir.path)? else {
            continue;
        };
        if Dataplane::pinned_lru(&dir.path)? != Some(lru) {
            info!(maps = %dir.path.display(), flows = lru.flows, limit_keys = lru.limit_keys, "the pinned flow table or limit buckets have another size than `conntrack.max_entries` or `limits.max_keys`: loading new maps beside them (tracked flows and buckets start again)");
            continue;
        }
        if fits(compiled, capacity) {
            info!(maps = %dir.path.display(), "taking over the pinned maps: counters and tracked flows continue");
            return Ok((
                Dataplane::load_pinned(capacity, lru, &dir.path)?,
                dir.path.clone(),
            ));
        }
        info!(maps = %dir.path.display(), "the pinned maps are too small for these rules: loading larger ones beside them");
    }
    if !existing.is_empty() && existing.iter().all(|dir| dir.layout != layout) {
        info!(
            layout,
            "the pinned maps are of another layout (another version): loading new maps beside them, then swapping (counters start again)"
        );
    }
    let dir = pins.new_maps_dir(&layout)?;
    match Dataplane::load_pinned(Capacity::for_compiled(compiled), lru, &dir) {
        Ok(dataplane) => Ok((dataplane, dir)),
        Err(error) => {
            if let Err(cleanup) = pins.remove_maps_dir(&dir) {
                warn!(%cleanup, "cannot remove the maps just made");
            }
            Err(error.into())
        }
    }
}

fn fits(compiled: &Compiled, capacity: Capacity) -> bool {
    compiled.nodes.len() <= capacity.nodes as usize
        && compiled.leaves.len() <= capacity.leaves as usize
        && compiled.entries.len() <= capacity.entries as usize
        && compiled.exact.len() <= capacity.exact as usize
}

/// Binds and attaches (or takes over) the XDP and egress links of every configured interface.
fn attach_all(
    dataplane: &mut Dataplane,
    pins: &Pins,
    loaded: &Loaded,
    ifindexes: &[u32],
    saved: Option<&Saved>,
) -> Result<Vec<Attachment>, DaemonError> {
    let mut attachments = Vec::new();
    for (((name, slot), ifindex), (_, rules)) in loaded
        .slots()
        .iter()
        .zip(ifindexes)
        .zip(loaded.rule_counts())
    {
        dataplane.bind(*ifindex, *slot)?;
        unpin_stale_links(pins, name, *ifindex)?;
        let mode = match dataplane.attach_pinned(name, &pins.link(name))? {
            Some(mode) => mode,
            None => saved_mode(saved, name),
        };
        dataplane.attach_egress_pinned(name, &pins.egress_link(name))?;
        info!(interface = %name, ifindex, rules, mode = mode_label(mode), "enforcing rules");
        attachments.push(Attachment {
            interface: name.clone(),
            ifindex: *ifindex,
            mode,
            rules,
            attached: true,
        });
    }
    Ok(attachments)
}

/// Links pinned by an earlier daemon on a device that has gone since (the interface was
/// re-created while no daemon ran): the kernel detached them, they cannot be taken over and
/// filter nothing. Unpinned, so that the interface is attached anew.
fn unpin_stale_links(pins: &Pins, name: &str, ifindex: u32) -> Result<(), DaemonError> {
    for path in [pins.link(name), pins.egress_link(name)] {
        match loader::pinned_link_ifindex(&path)? {
            Some(on) if on != ifindex => {
                warn!(interface = %name, pin = %path.display(), ifindex, pinned_on = on, "the pinned link is not on this device (the interface was re-created): attaching anew");
                pins.unpin_link(name)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Once every configured interface runs our program: detaches interfaces that the config no
/// longer names and unpins maps that no program uses any more.
fn retire(pins: &Pins, interfaces: &[String], maps_dir: &Path) -> Result<(), DaemonError> {
    for interface in pins.linked_interfaces()? {
        if !interfaces.contains(&interface) {
            pins.unpin_link(&interface)?;
            info!(interface, "detached: no longer in the config");
        }
    }
    for dir in pins.maps_dirs()? {
        if dir.path != maps_dir {
            pins.remove_maps_dir(&dir.path)?;
            info!(maps = %dir.path.display(), "unpinned maps no longer in use");
        }
    }
    Ok(())
}

fn saved_mode(saved: Option<&Saved>, interface: &str) -> XdpMode {
    match saved
        .and_then(|s| s.modes.get(interface))
        .map(String::as_str)
    {
        Some("driver") => XdpMode::Driver,
        Some("skb") => XdpMode::Skb,
        _ => XdpMode::Default,
    }
}

fn save(path: &Path, maps_dir: &Path, loaded: &Loaded, attachments: &[Attachment]) {
    let saved = Saved {
        maps_dir: maps_dir.to_path_buf(),
        counters: loaded.counters.clone(),
        modes: attachments
            .iter()
            .map(|a| (a.interface.clone(), mode_label(a.mode).to_string()))
            .collect(),
    };
    if let Err(error) = saved.write(path) {
        warn!(path = %path.display(), %error, "cannot save the state; a restarted daemon will start rule counters again");
    }
}

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(state) {
        warn!(%error, "cannot notify systemd");
    }
}

/// The last reload, for `status`.
struct LastReload {
    at: chrono::DateTime<chrono::Utc>,
    trigger: &'static str,
    error: Option<String>,
}

/// What the running daemon needs to reload, report and stop.
struct Operator {
    config_path: PathBuf,
    rules_path: PathBuf,
    started: Instant,
    loaded: Arc<Mutex<Loaded>>,
    dataplane: Arc<Mutex<Dataplane>>,
    labels: RuleLabels,
    reloads: Reloads,
    attachments: Vec<Attachment>,
    maps_dir: PathBuf,
    state_file: PathBuf,
    pins: Pins,
    license: Arc<Mutex<Option<crate::licensing::Shown>>>,
    /// Told on every reload request: the grant file is re-read, the grant fetched anew.
    reread_license: Arc<tokio::sync::Notify>,
    last_reload: Option<LastReload>,
    keep_attached_on_exit: bool,
    watch: bool,
    /// Its rule names follow reloads.
    drop_log: DropLog,
    /// Told of reloads, as the drop log.
    tracer: Arc<Tracer>,
    /// The flow table's fill as of the last sweep, and its size.
    flows: (Arc<SweepTotals>, u32),
    /// Re-attaches interfaces that went away and came back.
    interfaces: Interfaces,
    /// The live generation and whether flows are tracked, as of the last swap: `status`
    /// answers without the locks a reload holds.
    generation: u32,
    tracking: bool,
    /// Whether a reload's read of the rules file has not returned yet, also one given up on
    /// (a hung mount): no second read is started behind it.
    reading: Arc<AtomicBool>,
}

impl Operator {
    /// After a link event, or every second: every configured interface attached, or a
    /// loud warning that it is not (`interfaces`).
    fn reconcile(&mut self) {
        if self
            .interfaces
            .reconcile(&self.dataplane, &mut self.attachments)
        {
            save(
                &self.state_file,
                &self.maps_dir,
                &lock(&self.loaded),
                &self.attachments,
            );
        }
    }

    /// Starts a reload, unless one runs (then `reply` gets an error at once: refused, not
    /// queued) or an earlier read of the rules file has still not returned.
    fn begin_reload(
        &mut self,
        trigger: &'static str,
        reply: Option<oneshot::Sender<Answer>>,
        reloading: &mut Option<Reloading>,
        done: &mpsc::UnboundedSender<Result<Reloaded, ReloadError>>,
    ) {
        self.reread_license.notify_one();
        let busy = match (&*reloading, self.reading.load(Ordering::Acquire)) {
            (Some(running), _) => Some(format!(
                "a reload ({}) is already running; try again when it is done",
                running.trigger
            )),
            (None, true) => Some(format!(
                "an earlier reload's read of {} has not returned yet (a hung mount?); try again later",
                self.rules_path.display()
            )),
            (None, false) => None,
        };
        if let Some(message) = busy {
            warn!(trigger, "reload refused: {message}");
            if let Some(reply) = reply {
                let _ = reply.send(control::failure(message));
            }
            return;
        }
        notify_systemd(&[sd_notify::NotifyState::Reloading]);
        info!(trigger, rules = %self.rules_path.display(), "reloading the rules");
        let task = tokio::spawn(reload(
            Arc::clone(&self.loaded),
            Arc::clone(&self.dataplane),
            Arc::clone(&self.reading),
            self.rules_path.clone(),
            done.clone(),
        ));
        *reloading = Some(Reloading {
            trigger,
            reply,
            _task: AbortOnDrop(task),
        });
    }

    /// Publishes a reload's outcome; logs and counts either way and answers as the control
    /// socket does.
    fn finish_reload(
        &mut self,
        trigger: &'static str,
        outcome: Result<Reloaded, ReloadError>,
    ) -> control::Answer {
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        let at = chrono::Utc::now();
        match outcome {
            Ok(Reloaded {
                summary,
                labels,
                counts,
                logged,
                generation,
                tracking,
            }) => {
                *self.labels.write().unwrap_or_else(|p| p.into_inner()) = labels;
                self.generation = generation;
                self.tracking = tracking;
                let loaded = lock(&self.loaded).clone();
                self.drop_log.rename(loaded.slots(), &logged);
                self.tracer.renamed();
                self.reloads.succeeded(&counts, false);
                for attachment in &mut self.attachments {
                    if let Some((_, count)) =
                        counts.iter().find(|(i, _)| *i == attachment.interface)
                    {
                        attachment.rules = *count;
                    }
                }
                save(&self.state_file, &self.maps_dir, &loaded, &self.attachments);
                drop(loaded);
                // As after the first load: the parse and compile peak goes back to the system.
                release_freed_memory();
                log_summary(trigger, &summary);
                self.last_reload = Some(LastReload {
                    at,
                    trigger,
                    error: None,
                });
                Answer::Reloaded(protocol::Reloaded { ok: Is, summary })
            }
            Err(error) => {
                self.reloads.failed();
                error!(trigger, %error, "reload failed; the rules in force are unchanged");
                self.last_reload = Some(LastReload {
                    at,
                    trigger,
                    error: Some(error.to_string()),
                });
                control::failure(error.to_string())
            }
        }
    }

    /// `smf-firewall status --json`, as one object.
    fn status(&self) -> control::Answer {
        let generation = self.generation;
        let interfaces = self
            .attachments
            .iter()
            .map(|a| protocol::InterfaceStatus {
                attached: a.enforcing(),
                ifindex: a.ifindex,
                mode: mode_label(a.mode).to_string(),
                name: a.interface.clone(),
                rules: a.rules,
            })
            .collect();
        let license = lock(&self.license)
            .as_ref()
            .map(|shown| protocol::LicenseStatus {
                decided_at: shown.grant.as_ref().map(|g| seconds(g.decided_at)),
                key_id: shown.grant.as_ref().map(|g| g.key_id.clone()),
                licensed: shown.applied.licensed,
                mode: shown.mode.to_string(),
                reason: shown.applied.reason.to_string(),
                valid_until: shown.grant.as_ref().map(|g| seconds(g.valid_until)),
            });
        let last_reload = self.last_reload.as_ref().map(|last| protocol::LastReload {
            at: seconds(last.at),
            error: last.error.clone(),
            result: match last.error {
                None => protocol::ReloadResult::Success,
                Some(_) => protocol::ReloadResult::Error,
            },
            trigger: last.trigger.to_string(),
        });
        Answer::Status(Box::new(protocol::Status {
            config: self.config_path.clone(),
            conntrack: protocol::ConntrackStatus {
                capacity: self.flows.1,
                entries: self.flows.0.live.load(std::sync::atomic::Ordering::Relaxed),
                tracking: self.tracking,
            },
            generation,
            interfaces,
            keep_attached_on_exit: self.keep_attached_on_exit,
            last_reload,
            license,
            maps: self.maps_dir.clone(),
            ok: Is,
            pid: std::process::id(),
            pin_path: self.pins.root().to_path_buf(),
            reloads: protocol::ReloadCounts {
                error: self.reloads.total.with_label_values(&["error"]).get(),
                success: self.reloads.total.with_label_values(&["success"]).get(),
            },
            rules: self.attachments.iter().map(|a| a.rules).sum(),
            rules_file: self.rules_path.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            watch: self.watch,
        }))
    }

    /// After the dataplane handle is dropped: detach and unpin, or leave it all in place.
    fn stop(self, signal: &str) -> Result<(), DaemonError> {
        if self.keep_attached_on_exit || signal == HANDOVER {
            info!(
                signal,
                pins = %self.pins.root().display(),
                "stopping; keep_attached_on_exit: XDP stays attached and the rules enforced (pinned); the next daemon takes over, `smf-firewall unload` removes it"
            );
            return Ok(());
        }
        info!(
            signal,
            "stopping: detaching XDP from every interface and unpinning"
        );
        // The links go first: once they are gone no packet meets the program.
        let removed = self.pins.remove_all()?;
        if let Err(error) = std::fs::remove_file(&self.state_file) {
            warn!(path = %self.state_file.display(), %error, "cannot remove the saved state");
        }
        info!(interfaces = ?removed.links, "stopped");
        Ok(())
    }
}

/// One reload, off the event loop: reads and compiles a copy of the loaded state on a blocking
/// thread within [`RELOAD_READ_LIMIT`] (past it the read is abandoned and its result, should
/// it ever come, dropped), then swaps the result in on another; sends the outcome to `done`.
async fn reload(
    loaded: Arc<Mutex<Loaded>>,
    dataplane: Arc<Mutex<Dataplane>>,
    reading: Arc<AtomicBool>,
    rules: PathBuf,
    done: mpsc::UnboundedSender<Result<Reloaded, ReloadError>>,
) {
    let started = Instant::now();
    let current = lock(&loaded).clone();
    reading.store(true, Ordering::Release);
    let read = tokio::task::spawn_blocking(move || {
        let prepared = current.prepare();
        reading.store(false, Ordering::Release);
        prepared
    });
    let outcome = match tokio::time::timeout(RELOAD_READ_LIMIT, read).await {
        Err(_) => Err(ReloadError::TimedOut {
            rules,
            seconds: RELOAD_READ_LIMIT.as_secs(),
        }),
        Ok(joined) => match joined {
            Ok(prepared) => prepared,
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        },
    };
    let outcome = match outcome {
        Err(error) => Err(error),
        Ok((next, compiled)) => tokio::task::spawn_blocking(move || {
            let mut loaded = lock(&loaded);
            let summary = loaded.apply(next, &compiled, started, &dataplane)?;
            drop(compiled);
            Ok(Reloaded {
                generation: summary.generation,
                summary,
                labels: loaded.rule_labels(),
                counts: loaded.rule_counts(),
                logged: loaded.logged.clone(),
                tracking: loaded.conntrack.tracking != 0,
            })
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic())),
    };
    let _ = done.send(outcome);
}

fn log_summary(trigger: &str, summary: &Summary) {
    for change in &summary.interfaces {
        if change.is_empty() {
            info!(trigger, interface = %change.interface, rules = change.rules, "reloaded: no rule changed");
        } else {
            info!(
                trigger,
                interface = %change.interface,
                rules = change.rules,
                added = change.added.len(),
                removed = change.removed.len(),
                changed = change.changed.len(),
                unchanged = change.unchanged,
                reordered = change.reordered,
                added_ids = ?change.added,
                removed_ids = ?change.removed,
                changed_ids = ?change.changed,
                "reloaded: rules changed"
            );
        }
    }
    info!(
        trigger,
        generation = summary.generation,
        milliseconds = summary.milliseconds,
        "reload done: the new rules are live"
    );
}

/// RFC 3339, UTC, whole seconds, as `status` shows instants.
fn seconds(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
