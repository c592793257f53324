//! An interface that goes away and comes back under the same name (a driver reset, a VLAN,
//! bond or veth re-created), end to end with traffic running: while it is gone `status` and
//! `reload` fail naming it; once it is back the daemon attaches to the new device within a
//! second, and not one packet that the rules drop reaches the far side.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Output,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use testbed::{ADAPTER_LAN, LAN_HOST, NetNs, Signal, Site, WAN_HOST};

use crate::common::{self, CONFIG, DISCARD_RULES, DROPPED, PASSED, cli, metric, start, text};

fn status(adapter: &NetNs, config: &Path) -> (Output, serde_json::Value) {
    let out = cli(adapter, &["status", "--json"], config);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out, json)
}

/// UDP from the LAN host to the WAN host, one packet to `DROPPED` and one to `PASSED` every
/// millisecond (send errors, while the LAN link is gone, ignored); records when each
/// passed packet arrived and counts the dropped port's.
struct Traffic {
    running: Arc<AtomicBool>,
    dropped_arrived: Arc<AtomicU64>,
    passed_at: Arc<Mutex<Vec<Instant>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(site: &Site) -> Traffic {
        let running = Arc::new(AtomicBool::new(true));
        let dropped_arrived = Arc::new(AtomicU64::new(0));
        let passed_at = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for port in [DROPPED, PASSED] {
            let socket = site
                .wan
                .run(move || UdpSocket::bind(("0.0.0.0", port)))
                .unwrap()
                .unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let running = Arc::clone(&running);
            let (dropped, passed) = (Arc::clone(&dropped_arrived), Arc::clone(&passed_at));
            threads.push(thread::spawn(move || {
                let mut buf = [0; 200];
                let mut quiet_since = None;
                loop {
                    match socket.recv(&mut buf) {
                        Ok(_) if port == DROPPED => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => passed.lock().unwrap().push(Instant::now()),
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
        let run = Arc::clone(&running);
        threads.push(thread::spawn(move || {
            while run.load(Ordering::Relaxed) {
                for port in [DROPPED, PASSED] {
                    let _ = sender.send_to(&[7; 100], SocketAddr::from((wan, port)));
                }
                thread::sleep(Duration::from_millis(1));
            }
        }));
        Traffic {
            running,
            dropped_arrived,
            passed_at,
            threads,
        }
    }

    fn passed_since(&self, since: Instant) -> Option<Instant> {
        self.passed_at
            .lock()
            .unwrap()
            .iter()
            .copied()
            .find(|at| *at > since)
    }

    /// (dropped port's packets that arrived, arrival times on the passed port).
    fn stop(self) -> (u64, Vec<Instant>) {
        self.running.store(false, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        (
            self.dropped_arrived.load(Ordering::Relaxed),
            self.passed_at.lock().unwrap().clone(),
        )
    }
}

/// Deletes the LAN link (both ends of the veth pair go).
fn delete_lan(site: &Site) {
    site.adapter.ip(&["link", "del", "lan0"]).unwrap();
}

/// Makes the LAN link again, as `Site::new` did: same names, same addresses, same route.
fn recreate_lan(site: &Site) {
    site.adapter
        .ip(&[
            "link",
            "add",
            "lan0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            site.lan.name(),
        ])
        .unwrap();
    site.adapter
        .ip(&["addr", "add", &format!("{ADAPTER_LAN}/24"), "dev", "lan0"])
        .unwrap();
    site.lan
        .ip(&["addr", "add", &format!("{LAN_HOST}/24"), "dev", "eth0"])
        .unwrap();
    site.adapter.ip(&["link", "set", "lan0", "up"]).unwrap();
    site.lan.ip(&["link", "set", "eth0", "up"]).unwrap();
    site.lan
        .ip(&["route", "add", "default", "via", ADAPTER_LAN])
        .unwrap();
}

fn xdp_attached(adapter: &NetNs, mode: &str) -> Option<f64> {
    metric(
        adapter,
        "smf_firewall_xdp_attached",
        &[("interface", "lan0"), ("mode", mode)],
    )
}

#[test]
fn a_re_created_interface_is_attached_again_and_never_falls_open() {
    let Some(site) = common::site("interfaces_e2e::re_created") else {
        return;
    };
    let (_dir, config) = common::files(CONFIG, DISCARD_RULES);
    let daemon = start(&site.adapter, &config);
    let (out, before) = status(&site.adapter, &config);
    assert!(out.status.success(), "{out:?}");
    let old_ifindex = before["interfaces"][0]["ifindex"].as_u64().unwrap();
    let mode = before["interfaces"][0]["mode"]
        .as_str()
        .unwrap()
        .to_string();
    let traffic = Traffic::start(&site);
    thread::sleep(Duration::from_millis(300));
    assert!(
        traffic
            .passed_since(Instant::now() - Duration::from_millis(300))
            .is_some()
    );

    delete_lan(&site);
    // Gone: status and reload say so and fail.
    assert!(
        testbed::eventually(Duration::from_secs(3), || {
            status(&site.adapter, &config).1["interfaces"][0]["attached"] == false
        }),
        "status still says attached"
    );
    let (out, gone) = status(&site.adapter, &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(gone["interfaces"][0]["name"], "lan0");
    assert!(
        text(&out.stderr).contains("lan0 is configured but not attached"),
        "{out:?}"
    );
    let out = cli(&site.adapter, &["status"], &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("GONE"), "{out:?}");
    let out = cli(&site.adapter, &["reload"], &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("lan0 is configured but not attached"),
        "{out:?}"
    );
    assert_eq!(xdp_attached(&site.adapter, &mode), Some(0.0));

    // Back, with traffic running: attached to the new device, the drop rule in force.
    let recreating = Instant::now();
    recreate_lan(&site);
    let back = Instant::now();
    assert!(
        testbed::eventually(Duration::from_secs(5), || traffic
            .passed_since(back)
            .is_some()),
        "the passed port's packets never arrived again"
    );
    let latency = traffic.passed_since(back).unwrap() - recreating;
    eprintln!(
        "interfaces_e2e: first passed packet {latency:?} after `ip link add` (the link, addresses and route took {:?})",
        back - recreating
    );
    thread::sleep(Duration::from_millis(1000));
    let (dropped_arrived, _) = traffic.stop();
    assert_eq!(
        dropped_arrived, 0,
        "a packet the rules drop got through the re-created interface"
    );
    assert!(latency < Duration::from_millis(1500), "{latency:?}");

    let (out, after) = status(&site.adapter, &config);
    assert!(out.status.success(), "{out:?}");
    let lan0 = &after["interfaces"][0];
    assert_eq!(lan0["attached"], true, "{after}");
    assert_ne!(lan0["ifindex"].as_u64().unwrap(), old_ifindex, "{after}");
    let mode = lan0["mode"].as_str().unwrap();
    assert_eq!(xdp_attached(&site.adapter, mode), Some(1.0));
    assert!(site.adapter.has_xdp("lan0").unwrap());
    let out = cli(&site.adapter, &["reload"], &config);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(site.udp_through(DROPPED, 3).unwrap(), 0);
    assert_eq!(site.udp_through(PASSED, 3).unwrap(), 3);

    daemon.signal(Signal::SIGTERM).unwrap();
    let out = daemon.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = text(&out.stderr);
    assert!(
        log.contains("interface vanished") && log.contains("interface=lan0"),
        "{log}"
    );
    assert!(log.contains("re-attached: enforcing rules again"), "{log}");
}
