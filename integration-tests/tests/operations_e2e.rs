//! Operating the daemon, end to end in a small site: reloads (command, SIGHUP, file
//! watch) with traffic running, a `kill -9` and a restart that takes over the pinned program,
//! `keep_attached_on_exit` and `unload`, make-before-break into larger maps, `status`.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use testbed::{NetNs, Process, Signal, Site, WAN_HOST};

use crate::{
    common::{self, CONFIG, DISCARD_RULES, DROPPED, PASSED, cli, metric, start, text},
    smf_firewall,
};

/// Port 9 is dropped by every rule set here; port 10 is passed by every one.
/// DISCARD_RULES plus a rule for port 7, and another order of things before it.
const RULES_B: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-echo, action: drop, protocol: udp, dst_port: 7 }
      - { id: web, action: pass, protocol: tcp, dst_port: [80, 443] }
      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }
  wan0:
    default: pass
";

fn rule_hits(adapter: &NetNs, rule: &str) -> u64 {
    metric(
        adapter,
        "smf_firewall_rule_hits_total",
        &[("interface", "lan0"), ("rule", rule)],
    )
    .unwrap_or_else(|| panic!("no hits for {rule}")) as u64
}

/// `smf-firewall ARGS --config CONFIG` from the adapter's namespace.
fn stop(daemon: Process) -> Output {
    daemon.signal(Signal::SIGTERM).unwrap();
    daemon.wait().unwrap()
}

/// UDP from the LAN host to the WAN host on `DROPPED` and `PASSED`, one packet to each every
/// millisecond, until dropped; counts what was sent and what arrived.
struct Traffic {
    running: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    arrived: [Arc<AtomicU64>; 2],
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(site: &Site) -> Traffic {
        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicU64::new(0));
        let arrived = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let mut threads = Vec::new();
        for (port, count) in [DROPPED, PASSED].into_iter().zip(&arrived) {
            let socket = site
                .wan
                .run(move || UdpSocket::bind(("0.0.0.0", port)))
                .unwrap()
                .unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let (running, count) = (Arc::clone(&running), Arc::clone(count));
            threads.push(thread::spawn(move || {
                let mut buf = [0; 200];
                // Keeps reading a little after the sender stops, for packets in flight.
                let mut quiet_since = None;
                loop {
                    match socket.recv(&mut buf) {
                        Ok(_) => {
                            count.fetch_add(1, Ordering::Relaxed);
                            quiet_since = None;
                        }
                        Err(_) if running.load(Ordering::Relaxed) => {}
                        Err(_) => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(300) {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        let sender = site
            .lan
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        let wan: std::net::Ipv4Addr = WAN_HOST.parse().unwrap();
        let (run, count) = (Arc::clone(&running), Arc::clone(&sent));
        threads.push(thread::spawn(move || {
            while run.load(Ordering::Relaxed) {
                for port in [DROPPED, PASSED] {
                    sender
                        .send_to(&[7; 100], SocketAddr::from((wan, port)))
                        .unwrap();
                }
                count.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        }));
        Traffic {
            running,
            sent,
            arrived,
            threads,
        }
    }

    /// Stops, and checks that not one packet for `DROPPED` arrived and not one for `PASSED`
    /// was lost; returns how many were sent to each.
    fn stop_judged_right(self) -> u64 {
        let (sent, dropped_arrived, passed_arrived) = self.stop();
        assert_eq!(dropped_arrived, 0, "a packet the rules drop got through");
        assert_eq!(passed_arrived, sent, "a packet the rules pass was lost");
        sent
    }

    /// (packets sent to each port, arrived on DROPPED, arrived on PASSED).
    fn stop(self) -> (u64, u64, u64) {
        self.running.store(false, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.arrived[0].load(Ordering::Relaxed),
            self.arrived[1].load(Ordering::Relaxed),
        )
    }
}

#[test]
fn reload_swaps_in_good_rules_refuses_bad_ones_and_keeps_counters_of_unchanged_rules() {
    let Some(site) = common::site("operations_e2e::reload") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let daemon = start(&site.adapter, &config);
    assert_eq!(site.udp_through(DROPPED, 5).unwrap(), 0);
    assert_eq!(site.udp_through(7, 5).unwrap(), 5);
    assert_eq!(rule_hits(&site.adapter, "no-discard"), 5);
    let loaded_at = metric(
        &site.adapter,
        "smf_firewall_rules_last_reload_success_timestamp_seconds",
        &[],
    )
    .unwrap();
    assert!(loaded_at > 1.7e9, "{loaded_at}");

    // A good file: one rule added, one unchanged (its counts go on).
    std::fs::write(dir.path().join("rules.yaml"), RULES_B).unwrap();
    let out = cli(&site.adapter, &["reload"], &config);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout)
            .contains("lan0: 3 rules: added 2 (no-echo, web), removed 0, changed 0, unchanged 1\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(site.udp_through(7, 5).unwrap(), 0);
    assert_eq!(site.udp_through(DROPPED, 5).unwrap(), 0);
    assert_eq!(rule_hits(&site.adapter, "no-discard"), 10);
    assert_eq!(rule_hits(&site.adapter, "no-echo"), 5);

    // A bad file: the error with its position, and nothing changes in the kernel.
    std::fs::write(
        dir.path().join("rules.yaml"),
        DISCARD_RULES.replace("dst_port: 9 }", "dst_port: 70000 }"),
    )
    .unwrap();
    let out = cli(&site.adapter, &["reload"], &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let expected = format!("{}:6:", dir.path().join("rules.yaml").display());
    assert!(
        text(&out.stderr).contains(&expected) && text(&out.stderr).contains("70000"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(site.udp_through(7, 5).unwrap(), 0, "rules B still in force");
    let reloads = |result| {
        metric(
            &site.adapter,
            "smf_firewall_rules_reloads_total",
            &[("result", result)],
        )
    };
    assert_eq!(
        (reloads("success"), reloads("error")),
        (Some(1.0), Some(1.0))
    );

    // SIGHUP does the same as the command: back to A, and port 7 passes again.
    std::fs::write(dir.path().join("rules.yaml"), DISCARD_RULES).unwrap();
    daemon.signal(Signal::SIGHUP).unwrap();
    testbed::eventually(Duration::from_secs(10), || reloads("success") == Some(2.0));
    assert_eq!(reloads("success"), Some(2.0));
    assert_eq!(site.udp_through(7, 5).unwrap(), 5);
    assert_eq!(rule_hits(&site.adapter, "no-discard"), 10);

    // status --json tells the same story.
    let out = cli(&site.adapter, &["status", "--json"], &config);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["interfaces"][0]["name"], "lan0");
    assert_eq!(status["interfaces"][0]["rules"], 1);
    assert_eq!(status["interfaces"][0]["attached"], true);
    assert!(
        ["driver", "skb"].contains(&status["interfaces"][0]["mode"].as_str().unwrap()),
        "{status}"
    );
    assert_eq!(status["rules"], 1);
    assert_eq!(status["last_reload"]["result"], "success");
    assert_eq!(status["last_reload"]["trigger"], "SIGHUP");
    assert_eq!(status["reloads"]["error"], 1);
    assert_eq!(status["license"]["licensed"], true);
    assert!(status["uptime_seconds"].as_u64().is_some(), "{status}");
    let out = cli(&site.adapter, &["status"], &config);
    assert!(
        text(&out.stdout).contains("last reload: success"),
        "{}",
        text(&out.stdout)
    );
    let out = stop(daemon);
    let log = text(&out.stderr);
    assert!(
        log.contains("reloaded: rules changed") && log.contains("added_ids=[\"no-echo\", \"web\"]"),
        "{log}"
    );
    assert!(
        log.contains("reload failed; the rules in force are unchanged"),
        "{log}"
    );
}

#[test]
fn no_packet_is_misjudged_while_rules_are_reloaded_over_and_over() {
    let Some(site) = common::site("operations_e2e::no_misjudged_packet") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let daemon = start(&site.adapter, &config);
    let traffic = Traffic::start(&site);
    for round in 0..20 {
        let rules = if round % 2 == 0 {
            RULES_B
        } else {
            DISCARD_RULES
        };
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        let out = cli(&site.adapter, &["reload"], &config);
        assert!(out.status.success(), "{out:?}");
    }
    let sent = traffic.stop_judged_right();
    assert!(sent > 100, "{sent}");
    // no-discard was in every rule set: its counter saw every packet, across 20 swaps.
    assert_eq!(rule_hits(&site.adapter, "no-discard"), sent);
    stop(daemon);
}

#[test]
fn the_file_watch_reloads_a_saved_rules_file() {
    let Some(site) = common::site("operations_e2e::watch") else {
        return;
    };
    let (dir, config) = common::files(&format!("{CONFIG}watch: true\n"), DISCARD_RULES);
    let daemon = start(&site.adapter, &config);
    assert_eq!(site.udp_through(7, 3).unwrap(), 3);
    // As an editor saves: a new file renamed over the old one.
    let temporary = dir.path().join(".rules.yaml.new");
    std::fs::write(&temporary, RULES_B).unwrap();
    std::fs::rename(&temporary, dir.path().join("rules.yaml")).unwrap();
    let rules_loaded = || {
        metric(
            &site.adapter,
            "smf_firewall_rules_loaded",
            &[("interface", "lan0")],
        )
    };
    testbed::eventually(Duration::from_secs(10), || rules_loaded() == Some(3.0));
    assert_eq!(rules_loaded(), Some(3.0));
    assert_eq!(site.udp_through(7, 3).unwrap(), 0);
    let log = text(&stop(daemon).stderr);
    assert!(log.contains("trigger=\"file watch\""), "{log}");
}

#[test]
fn after_kill_9_the_kernel_keeps_enforcing_and_a_restart_takes_over_without_a_gap() {
    let Some(site) = common::site("operations_e2e::kill_9") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let daemon = start(&site.adapter, &config);
    let traffic = Traffic::start(&site);
    thread::sleep(Duration::from_millis(300));
    daemon.signal(Signal::SIGKILL).unwrap();
    daemon.wait().unwrap();
    assert!(site.adapter.has_xdp("lan0").unwrap(), "still attached");
    thread::sleep(Duration::from_millis(500));
    let daemon = start(&site.adapter, &config);
    thread::sleep(Duration::from_millis(300));
    let sent = traffic.stop_judged_right();
    // Counted by the kernel the whole time, dead daemon or not.
    assert_eq!(rule_hits(&site.adapter, "no-discard"), sent);
    let out = stop(daemon);
    assert!(out.status.success(), "{out:?}");
    let log = text(&out.stderr);
    assert!(
        log.contains("taking over the pinned maps")
            && log.contains("took over the pinned XDP link"),
        "{log}"
    );
    // SIGTERM: detached and unpinned.
    assert!(!site.adapter.has_xdp("lan0").unwrap());
    assert!(!dir.pin_path().exists());
    assert_eq!(site.udp_through(DROPPED, 3).unwrap(), 3);
}

#[test]
fn keep_attached_on_exit_leaves_the_rules_enforced_until_unload() {
    let Some(site) = common::site("operations_e2e::keep_attached") else {
        return;
    };
    let (dir, config) = common::files(
        &format!("{CONFIG}keep_attached_on_exit: true\n"),
        DISCARD_RULES,
    );
    let daemon = start(&site.adapter, &config);
    let out = cli(&site.adapter, &["unload"], &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("the daemon is running"),
        "{}",
        text(&out.stderr)
    );
    let out = stop(daemon);
    assert!(out.status.success(), "{out:?}");
    assert!(site.adapter.has_xdp("lan0").unwrap());
    assert_eq!(site.udp_through(DROPPED, 3).unwrap(), 0);
    assert_eq!(site.udp_through(PASSED, 3).unwrap(), 3);

    let out = cli(&site.adapter, &["unload"], &config);
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    assert!(
        printed.contains("detached XDP from lan0") && printed.contains("detached XDP from wan0"),
        "{printed}"
    );
    assert!(!site.adapter.has_xdp("lan0").unwrap());
    assert!(!dir.pin_path().exists());
    assert_eq!(site.udp_through(DROPPED, 3).unwrap(), 3);
    let out = cli(&site.adapter, &["unload"], &config);
    assert!(
        out.status.success() && text(&out.stdout).contains("nothing pinned"),
        "{out:?}"
    );
}

#[test]
fn a_restart_with_rules_that_outgrow_the_maps_swaps_in_larger_ones_make_before_break() {
    let Some(site) = common::site("operations_e2e::make_before_break") else {
        return;
    };
    let (dir, config) = common::files(
        &format!("{CONFIG}keep_attached_on_exit: true\n"),
        DISCARD_RULES,
    );
    let daemon = start(&site.adapter, &config);
    let first_maps: Vec<_> = maps_dirs(dir.pin_path());
    assert_eq!(first_maps.len(), 1, "{first_maps:?}");
    let traffic = Traffic::start(&site);
    assert!(stop(daemon).status.success());
    // More rules than the first maps have room for (16,384 entries by default).
    let extra: String = (0..17_000)
        .map(|i| {
            format!(
                "      - {{ id: r{i}, action: drop, protocol: tcp, src: 198.18.{}.{}/32, dst_port: 22 }}\n",
                100 + i / 250,
                i % 250
            )
        })
        .collect();
    let rules = DISCARD_RULES.replace("  wan0:\n", &format!("{extra}  wan0:\n"));
    std::fs::write(dir.path().join("rules.yaml"), &rules).unwrap();
    let daemon = start(&site.adapter, &config);
    thread::sleep(Duration::from_millis(300));
    traffic.stop_judged_right();
    let second_maps = maps_dirs(dir.pin_path());
    assert_eq!(second_maps.len(), 1, "{second_maps:?}");
    assert_ne!(first_maps, second_maps);
    let out = cli(&site.adapter, &["unload"], &config);
    assert_eq!(out.status.code(), Some(1), "the daemon still runs: {out:?}");
    let log = text(&stop(daemon).stderr);
    assert!(
        log.contains("too small for these rules") && log.contains("unpinned maps no longer in use"),
        "{log}"
    );
    assert!(cli(&site.adapter, &["unload"], &config).status.success());
}

#[test]
fn maps_of_another_layout_are_replaced_make_before_break() {
    let Some(site) = common::site("operations_e2e::other_layout") else {
        return;
    };
    let (dir, config) = common::files(
        &format!("{CONFIG}keep_attached_on_exit: true\n"),
        DISCARD_RULES,
    );
    let daemon = start(&site.adapter, &config);
    assert!(stop(daemon).status.success());
    // As an older binary would have left them: the same pins under another layout's name.
    let [ours] = maps_dirs(dir.pin_path()).try_into().unwrap();
    let theirs = "maps-0123456789abcdef-0";
    std::fs::rename(dir.pin_path().join(&ours), dir.pin_path().join(theirs)).unwrap();
    let traffic = Traffic::start(&site);
    thread::sleep(Duration::from_millis(200));
    let daemon = start(&site.adapter, &config);
    thread::sleep(Duration::from_millis(300));
    traffic.stop_judged_right();
    let now = maps_dirs(dir.pin_path());
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], theirs);
    let log = text(&stop(daemon).stderr);
    assert!(log.contains("of another layout"), "{log}");
    assert!(cli(&site.adapter, &["unload"], &config).status.success());
    assert!(!site.adapter.has_xdp("lan0").unwrap());
}

fn maps_dirs(pins: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("maps-"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/smf-firewall.service"),
    )
    .unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/usr/local/bin/smf-firewall reload --config /etc/smf-firewall/config.yaml",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "{line} in:\n{unit}"
        );
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing; `cargo xtask setup` installs it"
        );
        eprintln!("skip: systemd-analyze is not installed");
        return;
    }
    // systemd-analyze checks that ExecStart's program exists: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smf-firewall.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/smf-firewall", smf_firewall()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("smf-firewall"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
