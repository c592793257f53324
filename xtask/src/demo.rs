//! `cargo xtask demo`: the main job, for a newcomer to watch. A LAN host, the adapter running
//! smf-firewall with rules/example.yaml, and a WAN host, in network namespaces; a contract
//! store that licenses the adapter's Ultra Firewall Option (and bills it); traffic that the rules pass and
//! drop; `smf-firewall top` showing the daemon's metrics live (and with `--prometheus` a real
//! Prometheus scraping it); then everything removed, also when Ctrl-C or SIGTERM ends it early.

use std::{
    fs::{self, File},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use testbed::{LAN_HOST, Process, Prometheus, Site, WAN_HOST, scrape, stop_requested};

use crate::{cargo, run, setup, workspace_root};

const METRICS: &str = "127.0.0.1:9775";
const INTERFACES: [&str; 2] = ["lan0", "wan0"];
/// Where `--prometheus` serves, on the adapter namespace's loopback.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// The demo's rated capacity of its SEIL/x86 Fuji: a demo figure, small enough for the
/// demo's trickle of traffic to show as utilization (deploy/config.yaml has example figures).
const DEMO_CAPACITY_BPS: u64 = 1_000_000;
/// The licensed adapter of deploy/contracts.yaml.
const DEMO_SERIAL: &str = "FUJI-DEMO-0001";
/// The first service month of deploy/contracts.yaml, whose invoice the demo prints.
const DEMO_FIRST_MONTH: &str = "2025-04";
/// How long the daemon has to detach and unpin after SIGTERM before it is killed.
const DAEMON_GRACE: Duration = Duration::from_secs(10);
/// The error of a demo that Ctrl-C or SIGTERM ended, as its guards clean up.
const INTERRUPTED: &str = "interrupted";

/// Build smf-firewall, run it on an adapter between a LAN host and a WAN host (network
/// namespaces), send traffic that rules/example.yaml passes and drops, and show it live with
/// `smf-firewall top`. Needs root. Removes everything at the end unless --keep.
#[derive(clap::Args)]
pub struct Args {
    /// How long to send traffic and show the table.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Leave the namespaces and the daemon running, and print how to look and clean up.
    #[arg(long)]
    keep: bool,
    /// Also run a real Prometheus (Debian's) next to the daemon, scraping it every second with
    /// deploy/prometheus/rules.yml, and print what it recorded at the end.
    #[arg(long)]
    prometheus: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        run(cargo().args(["build", "--release", "-p", "firewall-user"]))?;
        // From here on, a signal ends the demo through its guards' `Drop`s, not around them.
        testbed::install_stop_handler()?;
        let root = workspace_root();
        let work = std::env::temp_dir().join(format!("smf-firewall-demo-{}", std::process::id()));
        fs::create_dir_all(&work)?;
        let result = demo(&self, &root, &work);
        // --keep keeps it for a demo left running, not for one that failed or was stopped.
        if !self.keep || result.is_err() {
            fs::remove_dir_all(&work).ok();
        }
        result
    }
}

fn demo(args: &Args, root: &Path, work: &Path) -> Result<()> {
    println!("\nSetting up: LAN host {LAN_HOST} -- lan0 [adapter] wan0 -- WAN host {WAN_HOST}");
    let site = Site::new().context("cannot create the demo's network namespaces")?;
    let config = work.join("config.yaml");
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/smf-firewall-demo-{}",
        std::process::id()
    ));
    let rules = root.join("rules/example.yaml");
    let store = seed_contracts(root, work)?;
    fs::write(
        &config,
        format!(
            "rules: {}\ninterfaces: [lan0, wan0]\nmetrics:\n  listen: {METRICS}\n\
             adapter: {{serial: {DEMO_SERIAL}}}\ncontracts: {{url: \"{store}\"}}\n\
             models: {{x86-fuji: {{capacity_bps: {DEMO_CAPACITY_BPS}}}}}\n\
             pin_path: {}\nruntime_dir: {}\n",
            rules.display(),
            pins.display(),
            work.join("run").display()
        ),
    )?;
    let log = work.join("smf-firewall.log");
    let daemon = start_daemon(&site, root, &config, &log, pins)?;
    println!(
        "smf-firewall is running in namespace {}; its log:",
        site.adapter.name()
    );
    print!("{}", fs::read_to_string(&log).unwrap_or_default());

    let prometheus = if args.prometheus {
        let prometheus = start_prometheus(&site, root)?;
        println!(
            "Prometheus {} scrapes it every second in the same namespace, with deploy/prometheus/rules.yml.",
            prometheus.address()
        );
        Some(prometheus)
    } else {
        None
    };

    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| traffic(&site, &stop));
        let shown = top(&site, root, Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
        shown
    })?;
    if let Some(prometheus) = &prometheus {
        recorded(prometheus)?;
    }
    println!("\n$ smf-firewall status");
    let status = site
        .adapter
        .command(&binary(root).to_string_lossy())
        .args(["status", "--config"])
        .arg(&config)
        .output()?;
    print!("{}", String::from_utf8_lossy(&status.stdout));
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let drops: Vec<&str> = log_text
        .lines()
        .filter(|line| line.contains("dropped packet"))
        .collect();
    println!(
        "\nDrop logs of the `log: true` rule (sampled, at most 10/s; {} in the log), the last 3:",
        drops.len()
    );
    for line in drops.iter().rev().take(3).rev() {
        println!("  {line}");
    }

    // A Ctrl-C since `top` reached the daemon too: nothing is left to keep running.
    if stop_requested() {
        bail!(INTERRUPTED);
    }
    if args.keep {
        let prometheus_pid = prometheus.as_ref().map(Prometheus::pid);
        std::mem::forget(prometheus);
        keep(site, daemon, prometheus_pid, work, &log);
        return Ok(());
    }
    drop(prometheus);
    let exit = daemon.stop()?;
    let attached = INTERFACES
        .iter()
        .filter(|interface| site.adapter.has_xdp(interface).unwrap_or(true))
        .count();
    println!(
        "\nSIGTERM: smf-firewall exited with {exit}; XDP still attached on {attached} interfaces."
    );
    println!("Removing the namespaces. Read on: README.md, rules/README.md.");
    Ok(())
}

/// The release binary that `cargo build --release` made.
fn binary(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/smf-firewall")
}

/// An embedded SQLite contract store with one licensed SEIL/x86 Fuji adapter
/// (deploy/contracts.yaml), one licence check and the customer's first invoice (priced by
/// deploy/prices.yaml) shown; returns the store's URL.
fn seed_contracts(root: &Path, work: &Path) -> Result<String> {
    let store = format!("sqlite:{}", work.join("contracts.db").display());
    let seed = root.join("deploy/contracts.yaml");
    let prices = root.join("deploy/prices.yaml");
    println!("\nContract store {store}, seeded from {}:", seed.display());
    for args in [
        vec!["contracts", "init"],
        vec!["contracts", "import", &seed.to_string_lossy()],
        vec!["license", "--serial", DEMO_SERIAL],
        vec![
            "billing",
            "invoice",
            "--month",
            DEMO_FIRST_MONTH,
            "--prices",
            &prices.to_string_lossy(),
        ],
    ] {
        run(Command::new(binary(root))
            .args(&args)
            .args(["--db", &store]))?;
    }
    Ok(store)
}

/// The daemon and its pin directory. Dropped before the demo's end (an error, Ctrl-C), it is
/// stopped as at the end: SIGTERM, so that it detaches and unpins before its namespace goes.
/// Then its pin directory is removed: a daemon killed before its handlers were up leaves one.
struct Daemon {
    process: Option<Process>,
    pins: PathBuf,
}

impl Daemon {
    fn id(&self) -> u32 {
        self.process.as_ref().expect("running").id()
    }

    fn exited(&mut self) -> Result<bool> {
        Ok(self.process.as_mut().expect("running").exited()?)
    }

    fn stop(mut self) -> Result<ExitStatus> {
        let process = self.process.take().expect("stopped only once");
        Ok(process.terminate(DAEMON_GRACE)?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(process) = self.process.take()
            && let Err(err) = process.terminate(DAEMON_GRACE)
        {
            eprintln!("cannot stop smf-firewall: {err}");
        }
        testbed::remove_pins(&self.pins);
    }
}

fn start_daemon(
    site: &Site,
    root: &Path,
    config: &Path,
    log: &Path,
    pins: PathBuf,
) -> Result<Daemon> {
    // A Ctrl-C while the store was seeded: no daemon to start only to stop it.
    if stop_requested() {
        bail!(INTERRUPTED);
    }
    let binary = binary(root);
    let child = site
        .adapter
        .command(&binary.to_string_lossy())
        .args(["run", "--config", &config.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        .spawn()
        .context("cannot start smf-firewall")?;
    let mut daemon = Daemon {
        process: Some(Process::from(child)),
        pins,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while scrape(&site.adapter, METRICS.parse()?).is_err() {
        if stop_requested() {
            bail!(INTERRUPTED);
        }
        if daemon.exited()? || Instant::now() > deadline {
            bail!("smf-firewall did not start:\n{}", fs::read_to_string(log)?);
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(daemon)
}

/// Five kinds of traffic, a few times a second, until `stop`: what rules/example.yaml passes
/// (TCP 8080 and UDP 53 from the LAN) and drops (UDP 9 and pings from the LAN host on lan0,
/// telnet from the WAN on wan0).
fn traffic(site: &Site, stop: &AtomicBool) -> Result<()> {
    let web = site.wan.run(|| TcpListener::bind("0.0.0.0:8080"))??;
    let dns = site.wan.run(|| UdpSocket::bind("0.0.0.0:53"))??;
    let udp = site.lan.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    // Servers on the WAN host; they end with the demo process.
    thread::spawn(move || {
        for mut conn in web.incoming().flatten() {
            let mut buf = [0; 64];
            let _ = conn.read(&mut buf).and_then(|_| conn.write_all(b"ok"));
        }
    });
    thread::spawn(move || {
        let mut buf = [0; 512];
        while dns.recv(&mut buf).is_ok() {}
    });
    let wan_host = |port| SocketAddr::from(([198, 19, 1, 2], port));
    let telnet = SocketAddr::from(([198, 18, 1, 2], 23));
    while !stop.load(Ordering::Relaxed) {
        // Each attempt may fail by design (that is the firewall at work): outcomes are read
        // from the counters, not from here.
        let _ = site.lan.run(|| {
            TcpStream::connect_timeout(&wan_host(8080), Duration::from_millis(300))
                .and_then(|mut conn| conn.write_all(b"hello"))
        });
        // A bulk of passed datagrams, so that utilization shows against the demo capacity.
        for _ in 0..25 {
            let _ = udp.send_to(&[0; 1000], wan_host(53));
        }
        let _ = udp.send_to(&[0; 100], wan_host(9));
        let _ = site.lan.exec("ping", &["-c", "1", "-W", "0.2", WAN_HOST]);
        let _ = site
            .wan
            .run(|| TcpStream::connect_timeout(&telnet, Duration::from_millis(200)));
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs `smf-firewall top` in the adapter's namespace for `how_long`: what an operator on the
/// adapter would watch.
fn top(site: &Site, root: &Path, how_long: Duration) -> Result<()> {
    let child = site
        .adapter
        .command(&binary(root).to_string_lossy())
        .args(["top", "--url", &format!("http://{METRICS}/metrics")])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start smf-firewall top")?;
    let mut top = Process::from(child);
    let start = Instant::now();
    while start.elapsed() < how_long && !stop_requested() {
        // Ctrl-C ends `top` too, which is no failure of its own.
        if top.exited()? && !stop_requested() {
            bail!("smf-firewall top stopped early: {:?}", top.wait()?);
        }
        thread::sleep(Duration::from_millis(200));
    }
    top.terminate(Duration::from_secs(2))?;
    if stop_requested() {
        bail!(INTERRUPTED);
    }
    Ok(())
}

fn start_prometheus<'a>(site: &'a Site, root: &Path) -> Result<Prometheus<'a>> {
    if !testbed::require_prometheus("demo --prometheus") {
        bail!("--prometheus needs Debian's prometheus (cargo xtask setup installs it)");
    }
    let rules = root.join("deploy/prometheus/rules.yml");
    Ok(Prometheus::start(
        &site.adapter,
        PROMETHEUS.parse()?,
        METRICS.parse()?,
        Duration::from_secs(1),
        &[&rules],
    )?)
}

/// Prints what Prometheus recorded: the counters, the recording rules and the alerts' states.
fn recorded(prometheus: &Prometheus) -> Result<()> {
    println!("\nPrometheus {}, /api/v1/query:", prometheus.address());
    for promql in [
        "smf_firewall_bytes_total",
        "instance:smf_firewall_bytes:rate5m",
        "instance:smf_firewall_adapter_utilization:ratio_rate5m",
        "smf_firewall_adapter_info",
        "smf_firewall_xdp_attached",
    ] {
        for (labels, value) in prometheus.query(promql)? {
            let shown: Vec<String> = labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            println!("  {promql}{{{}}} {value}", shown.join(","));
        }
    }
    println!(
        "  (a 5-minute rate over a younger series is its increase over 300 s: it grows for five minutes)"
    );
    let alerts = prometheus.api("/api/v1/alerts")?;
    let states: Vec<String> = alerts["alerts"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|a| format!("{} {}", a["labels"]["alertname"], a["state"]))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "Alerts: {}",
        if states.is_empty() {
            "none pending or firing".to_string()
        } else {
            states.join(", ")
        }
    );
    Ok(())
}

/// Leaves everything running and says how to look at it and how to remove it.
fn keep(site: Site, daemon: Daemon, prometheus: Option<u32>, work: &Path, log: &Path) {
    let (lan, adapter, wan) = (site.lan.name(), site.adapter.name(), site.wan.name());
    let (prometheus_look, prometheus_kill) = match prometheus {
        Some(pid) => (
            format!(
                "\n  ip netns exec {adapter} curl -s 'http://{PROMETHEUS}/api/v1/query?query=instance:smf_firewall_adapter_utilization:ratio_rate5m'"
            ),
            format!("kill {pid}; "),
        ),
        None => (String::new(), String::new()),
    };
    println!(
        "\nLeft running (--keep). smf-firewall is pid {pid}, logging to {log}.\n\
         Look:\n  ip netns exec {adapter} {binary} top\n  \
         ip netns exec {adapter} curl -s http://{METRICS}/metrics | grep smf_firewall\n  \
         ip netns exec {lan} ping -c 3 {WAN_HOST}      # dropped by no-ping-from-host\n  \
         ip -n {adapter} -details link show lan0        # prog/xdp{prometheus_look}\n\
         Clean up:\n  {prometheus_kill}kill {pid}; ip netns delete {lan}; ip netns delete {adapter}; ip netns delete {wan}; rm -r {work}",
        pid = daemon.id(),
        log = log.display(),
        work = work.display(),
        binary = binary(&workspace_root()).display(),
    );
    std::mem::forget(daemon);
    std::mem::forget(site);
}
