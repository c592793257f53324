//! `cargo xtask demo`: the main job, for a newcomer to watch. A LAN host, the adapter running
//! smf-firewall with rules/example.yaml, and a WAN host, in network namespaces; a contract
//! store that licenses the adapter's Ultra Firewall Option; traffic that the rules pass and
//! drop; a live table of the daemon's metrics; then everything removed.

use std::{
    fs::{self, File},
    io::{IsTerminal, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use testbed::{LAN_HOST, Process, Signal, Site, WAN_HOST, sample, scrape};

use crate::{cargo, run, setup, workspace_root};

const METRICS: &str = "127.0.0.1:9775";
const INTERFACES: [&str; 2] = ["lan0", "wan0"];
const VERDICTS: [&str; 2] = ["pass", "drop"];
/// The licensed adapter of deploy/contracts.yaml.
const DEMO_SERIAL: &str = "FUJI-DEMO-0001";

/// Build smf-firewall, run it on an adapter between a LAN host and a WAN host (network
/// namespaces), send traffic that rules/example.yaml passes and drops, and show a live table
/// of the metrics. Needs root. Removes everything at the end unless --keep.
#[derive(clap::Args)]
pub struct Args {
    /// How long to send traffic and show the table.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Leave the namespaces and the daemon running, and print how to look and clean up.
    #[arg(long)]
    keep: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        run(cargo().args(["build", "--release", "-p", "firewall-user"]))?;
        let root = workspace_root();
        let work = std::env::temp_dir().join(format!("smf-firewall-demo-{}", std::process::id()));
        fs::create_dir_all(&work)?;
        let result = demo(&self, &root, &work);
        if !self.keep {
            fs::remove_dir_all(&work).ok();
        }
        result
    }
}

fn demo(args: &Args, root: &Path, work: &Path) -> Result<()> {
    println!("\nSetting up: LAN host {LAN_HOST} -- lan0 [adapter] wan0 -- WAN host {WAN_HOST}");
    let site = Site::new().context("cannot create the demo's network namespaces")?;
    let config = work.join("config.yaml");
    let rules = root.join("rules/example.yaml");
    let store = seed_contracts(root, work)?;
    fs::write(
        &config,
        format!(
            "rules: {}\ninterfaces: [lan0, wan0]\nmetrics:\n  listen: {METRICS}\n\
             adapter: {{serial: {DEMO_SERIAL}}}\ncontracts: {{url: \"{store}\"}}\n",
            rules.display()
        ),
    )?;
    let log = work.join("smf-firewall.log");
    let daemon = start_daemon(&site, root, &config, &log)?;
    println!(
        "smf-firewall is running in namespace {}; its log:",
        site.adapter.name()
    );
    print!("{}", fs::read_to_string(&log).unwrap_or_default());

    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| traffic(&site, &stop));
        let shown = watch(&site, Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
        shown
    })?;

    if args.keep {
        keep(site, daemon, &log);
        return Ok(());
    }
    daemon.signal(Signal::SIGTERM)?;
    let exit = daemon.wait()?;
    let attached = INTERFACES
        .iter()
        .filter(|interface| site.adapter.has_xdp(interface).unwrap_or(true))
        .count();
    println!(
        "\nSIGTERM: smf-firewall exited with {}; XDP still attached on {attached} interfaces.",
        exit.status
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
/// (deploy/contracts.yaml), and one licence check shown; returns the store's URL.
fn seed_contracts(root: &Path, work: &Path) -> Result<String> {
    let store = format!("sqlite:{}", work.join("contracts.db").display());
    let seed = root.join("deploy/contracts.yaml");
    println!("\nContract store {store}, seeded from {}:", seed.display());
    for args in [
        vec!["contracts", "init"],
        vec!["contracts", "import", &seed.to_string_lossy()],
        vec!["license", "--serial", DEMO_SERIAL],
    ] {
        run(Command::new(binary(root))
            .args(&args)
            .args(["--db", &store]))?;
    }
    Ok(store)
}

fn start_daemon(site: &Site, root: &Path, config: &Path, log: &Path) -> Result<Process> {
    let binary = binary(root);
    let child = site
        .adapter
        .command(&binary.to_string_lossy())
        .args(["run", "--config", &config.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        .spawn()
        .context("cannot start smf-firewall")?;
    let mut daemon = Process::from(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while scrape(&site.adapter, METRICS.parse()?).is_err() {
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
        let _ = udp.send_to(&[0; 100], wan_host(53));
        let _ = udp.send_to(&[0; 100], wan_host(9));
        let _ = site.lan.exec("ping", &["-c", "1", "-W", "0.2", WAN_HOST]);
        let _ = site
            .wan
            .run(|| TcpStream::connect_timeout(&telnet, Duration::from_millis(200)));
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Prints the metrics as a table once a second for `how_long`, with rates since the last one.
fn watch(site: &Site, how_long: Duration) -> Result<()> {
    let address: SocketAddr = METRICS.parse()?;
    let start = Instant::now();
    let mut last = scrape(&site.adapter, address)?;
    let tty = std::io::stdout().is_terminal();
    while start.elapsed() < how_long {
        thread::sleep(Duration::from_secs(1));
        let now = scrape(&site.adapter, address)?;
        let mut table = String::new();
        if tty {
            table.push_str("\x1b[2J\x1b[H");
        }
        table.push_str(&format!(
            "smf-firewall demo, {:>2}s of {}s. Traffic: LAN->WAN tcp/8080 and udp/53 (pass), udp/9 and ping\n\
             (dropped on lan0 by no-discard, no-ping-from-host); WAN->LAN tcp/23 (dropped on wan0 by no-telnet-in).\n\n\
             {:<10} {:<8} {:>9} {:>11} {:>8} {:>11}\n",
            start.elapsed().as_secs(),
            how_long.as_secs(),
            "interface", "verdict", "packets", "bytes", "pkt/s", "bit/s"
        ));
        for interface in INTERFACES {
            for verdict in VERDICTS {
                let labels = [("interface", interface), ("verdict", verdict)];
                let value = |text: &str, name| sample(text, name, &labels).unwrap_or(0.0);
                let packets = value(&now, "smf_firewall_packets_total");
                let bytes = value(&now, "smf_firewall_bytes_total");
                let pps = packets - value(&last, "smf_firewall_packets_total");
                let bps = 8.0 * (bytes - value(&last, "smf_firewall_bytes_total"));
                table.push_str(&format!(
                    "{interface:<10} {verdict:<8} {packets:>9} {bytes:>11} {pps:>8} {bps:>11}\n"
                ));
            }
        }
        print!("{table}");
        std::io::stdout().flush()?;
        last = now;
    }
    Ok(())
}

/// Leaves everything running and says how to look at it and how to remove it.
fn keep(site: Site, daemon: Process, log: &Path) {
    let (lan, adapter, wan) = (site.lan.name(), site.adapter.name(), site.wan.name());
    println!(
        "\nLeft running (--keep). smf-firewall is pid {pid}, logging to {log}.\n\
         Look:\n  ip netns exec {adapter} curl -s http://{METRICS}/metrics | grep smf_firewall\n  \
         ip netns exec {lan} ping -c 3 {WAN_HOST}      # dropped by no-ping-from-host\n  \
         ip -n {adapter} -details link show lan0        # prog/xdp\n\
         Clean up:\n  kill {pid}; ip netns delete {lan}; ip netns delete {adapter}; ip netns delete {wan}",
        pid = daemon.id(),
        log = log.display(),
    );
    std::mem::forget(daemon);
    std::mem::forget(site);
}
