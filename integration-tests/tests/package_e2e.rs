//! The Debian package on this machine: `cargo xtask deb` builds it (lintian: no error),
//! `dpkg -i` installs it, the installed unit and rules are checked, an upgrade to a rebuilt
//! package with traffic running never lets a dropped packet through, and a purge leaves
//! nothing behind.
//!
//! systemd is not PID 1 on these machines, so the test runs the daemon itself, exactly as
//! the installed unit's `ExecStart` says, and starts the new one where the new postinst would
//! (`systemctl start`); the old package's prerm does the rest for real: it asks the running
//! daemon to hand over (exit leaving XDP attached and everything pinned).

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use testbed::{NetNs, Process, Site, WAN_HOST};

use crate::{
    common::{self, DROPPED, PASSED, text},
    smf_firewall,
};

const ETC: &str = "/etc/smf-firewall";
const PINS: &str = "/sys/fs/bpf/smf-firewall";
const UNIT: &str = "/lib/systemd/system/smf-firewall.service";
/// Where the package puts what it owns outside dpkg's own listing, and must not leave.
const LEFT_BEHIND: [&str; 5] = [
    ETC,
    "/var/lib/smf-firewall",
    "/run/smf-firewall",
    "/run/smf-firewall.upgrade",
    PINS,
];

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `cargo xtask deb` of this build's binary at `version` into `out`.
fn package(version: &str, out: &Path, lintian: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args([
            "xtask",
            "deb",
            "--binary",
            smf_firewall(),
            "--version",
            version,
        ])
        .arg("--out")
        .arg(out);
    if !lintian {
        command.arg("--no-lintian");
    }
    run(&mut command);
    out.join(format!("smf-firewall_{version}_amd64.deb"))
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", "smf-firewall"])
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    shown
        .strip_prefix("install ok installed ")
        .map(str::to_string)
}

/// Purges the package, even when the test fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "smf-firewall"])
            .output();
    }
}

/// The installed unit's ExecStart, as a program and its arguments.
fn exec_start() -> Vec<String> {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart");
    line.split_whitespace().map(str::to_string).collect()
}

/// The daemon as systemd would start it, in the adapter namespace, once it serves metrics.
fn start_daemon(adapter: &NetNs) -> Process {
    let words = exec_start();
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    adapter
        .start_until(&words[0], &args, || {
            testbed::scrape(adapter, common::metrics_address()).is_ok()
        })
        .unwrap()
}

/// Datagrams from the LAN host to the WAN host's `DROPPED` and `PASSED` ports, one each per
/// millisecond until `stop`; returns (sent to each, arrived at DROPPED, arrived at PASSED).
fn traffic(site: &Site, stop: &AtomicBool) -> (u64, u64, u64) {
    let receiver = |port: u16| {
        let socket = site
            .wan
            .run(move || UdpSocket::bind(("0.0.0.0", port)))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        socket
    };
    let (dropped_rx, passed_rx) = (receiver(DROPPED), receiver(PASSED));
    let tx = site
        .lan
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let to = |port: u16| SocketAddr::from((WAN_HOST.parse::<std::net::Ipv4Addr>().unwrap(), port));
    thread::scope(|scope| {
        let count = |socket: UdpSocket| {
            move || {
                let mut buf = [0; 200];
                let mut arrived = 0u64;
                loop {
                    match socket.recv(&mut buf) {
                        Ok(_) => arrived += 1,
                        // Quiet for the read timeout after the senders stopped: all in.
                        Err(_) if stop.load(Ordering::Relaxed) => break arrived,
                        Err(_) => {}
                    }
                }
            }
        };
        let dropped = scope.spawn(count(dropped_rx));
        let passed = scope.spawn(count(passed_rx));
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _ = tx.send_to(&[7; 100], to(DROPPED));
            let _ = tx.send_to(&[7; 100], to(PASSED));
            sent += 1;
            thread::sleep(Duration::from_millis(1));
        }
        (sent, dropped.join().unwrap(), passed.join().unwrap())
    })
}

#[test]
fn the_package_installs_upgrades_without_a_gap_and_purges_clean() {
    if !testbed::require_root("package_e2e") {
        return;
    }
    // Never on a machine where an operator installed or configured smf-firewall.
    assert!(
        installed_version().is_none() && !Path::new(ETC).exists() && !Path::new(PINS).exists(),
        "smf-firewall is installed or configured on this machine ({ETC}, {PINS}): the test would overwrite it"
    );
    let out = tempfile::tempdir().unwrap();
    let first = package("0.1.0~test1", out.path(), true);
    let second = package("0.1.0~test2", out.path(), false);

    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&first));
    assert_eq!(installed_version().as_deref(), Some("0.1.0~test1"));
    let owned = text(&run(Command::new("dpkg").args(["-L", "smf-firewall"])).stdout);
    for path in [
        "/usr/sbin/smf-firewall",
        UNIT,
        "/etc/smf-firewall/config.yaml",
        "/etc/smf-firewall/rules.yaml",
        "/var/lib/smf-firewall",
        "/usr/share/smf-firewall/prometheus/rules.yml",
        "/usr/share/smf-firewall/grafana/smf-firewall.json",
        "/usr/share/man/man8/smf-firewall.8.gz",
        "/usr/share/man/man8/smf-firewall-check.8.gz",
        "/usr/share/bash-completion/completions/smf-firewall",
        "/usr/share/zsh/vendor-completions/_smf-firewall",
        "/usr/share/fish/vendor_completions.d/smf-firewall.fish",
    ] {
        assert!(owned.lines().any(|l| l == path), "{path} not in:\n{owned}");
        assert!(Path::new(path).exists(), "{path}");
    }
    let conffiles = text(
        &run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "smf-firewall"])).stdout,
    );
    assert!(
        conffiles.contains("/etc/smf-firewall/config.yaml")
            && conffiles.contains("/etc/smf-firewall/rules.yaml"),
        "{conffiles}"
    );
    // Installed, not started: no daemon, nothing pinned.
    assert!(!Path::new(PINS).exists(), "a daemon started on install");
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    let complaints: Vec<String> = text(&verify.stderr)
        .lines()
        .filter(|l| l.contains("smf-firewall"))
        .map(str::to_string)
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
    assert_eq!(exec_start()[0], "/usr/sbin/smf-firewall");
    let checked =
        run(Command::new("/usr/sbin/smf-firewall").args(["check", "/etc/smf-firewall/rules.yaml"]));
    assert!(text(&checked.stdout).contains("/etc/smf-firewall/rules.yaml: valid"));
    assert!(
        text(&run(Command::new("man").args(["smf-firewall-check"])).stdout).contains("SYNOPSIS")
    );

    // The operator's edit of a conffile, which the upgrade must keep.
    let config = format!("{ETC}/config.yaml");
    let edited = format!(
        "{}# edited by the operator\n",
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&config, &edited).unwrap();

    // The packaged config names lan0 and wan0 and the example rules drop UDP to port 9 on
    // lan0: the site's adapter, as installed.
    let site = Site::new().unwrap();
    let old = start_daemon(&site.adapter);
    let stop = AtomicBool::new(false);
    let (sent, dropped, passed, attached_between) = thread::scope(|scope| {
        let flow = scope.spawn(|| traffic(&site, &stop));
        thread::sleep(Duration::from_millis(500));
        // The upgrade: the old prerm hands over, dpkg unpacks, the new postinst configures.
        let upgrade = Command::new("dpkg")
            .arg("-i")
            .arg(&second)
            .output()
            .unwrap();
        // Between the old daemon's exit and the new one's start the kernel enforces alone.
        let attached_between = site.adapter.has_xdp("lan0").unwrap();
        let old_exit = old.wait().unwrap();
        let new = start_daemon(&site.adapter);
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let (sent, dropped, passed) = flow.join().unwrap();
        assert!(
            upgrade.status.success(),
            "{}{}",
            text(&upgrade.stdout),
            text(&upgrade.stderr)
        );
        assert!(old_exit.status.success(), "{old_exit:?}");
        (sent, dropped, passed, (attached_between, new))
    });
    let (attached_between, new) = attached_between;
    eprintln!(
        "figure: upgrade under traffic: {sent} datagrams to each port, {passed} passed arrived, {dropped} dropped arrived"
    );
    assert_eq!(
        dropped, 0,
        "datagrams the rules drop got through during the upgrade"
    );
    assert!(passed > 0 && sent > 0);
    assert!(attached_between, "XDP was detached between the two daemons");
    assert_eq!(installed_version().as_deref(), Some("0.1.0~test2"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "the upgrade lost the operator's edit"
    );
    // The new daemon took the old one's pins over: one maps directory, its counters going on.
    let drops = common::required_metric(
        &site.adapter,
        "smf_firewall_rule_hits_total",
        &[("interface", "lan0"), ("rule", "no-discard")],
    );
    assert!(drops >= sent as f64, "no-discard counted {drops} of {sent}");

    // Purge with the daemon running: prerm stops it and unpins; nothing is left.
    let paths: Vec<String> = owned.lines().map(str::to_string).collect();
    run(Command::new("dpkg").args(["--purge", "smf-firewall"]));
    drop(new);
    assert_eq!(installed_version(), None);
    for path in LEFT_BEHIND {
        assert!(!Path::new(path).exists(), "{path} left behind");
    }
    for path in paths
        .iter()
        .filter(|p| p.contains("smf-firewall") || p.contains("smf_firewall"))
    {
        assert!(!Path::new(path).exists(), "{path} left behind");
    }
    assert!(
        !site.adapter.has_xdp("lan0").unwrap(),
        "XDP left attached on lan0"
    );
}
