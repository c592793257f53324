//! Metering end to end: the real daemon in the adapter namespace of a small site,
//! real traffic, and a real Prometheus server (Debian's) scraping it and evaluating
//! deploy/prometheus/rules.yml; TLS and basic auth on a namespace address; and no address or
//! flow in any label (Art. 17).

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use firewall_user::{
    metrics::text,
    top::{Source, TopError},
};
use serde_json::Value;
use testbed::{
    ADAPTER_LAN, LAN_HOST, NetNs, Process, Prometheus, Signal, Site, WAN_HOST, sample, scrape,
};

use crate::{common, smf_firewall};

const SERIAL: &str = "X1-0001";
/// The test's rated capacity of an x1, far below any real one so that a few hundred packets a
/// second make pressure.
const X1_CAPACITY: f64 = 100_000.0;

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }
      - { id: web, action: pass, protocol: tcp, dst_port: [80, 443, 8080] }
      - { id: no-ping-from-host, action: drop, protocol: icmp, src: 198.18.1.2/32 }
  wan0:
    default: pass
    rules:
      - { id: no-telnet-in, action: drop, protocol: tcp, dst_port: 23 }
";

/// A licensed SEIL/X1 (the store is seeded from this, as an operator would).
const CONTRACTS: &str = "managements:
  - {id: M-1, start: 2020-01-01}
adapters:
  - {serial: X1-0001, model: x1, management: M-1, role: entry, since: 2020-01-01}
options:
  - {id: UFO-1, serial: X1-0001, start: 2020-01-01}
";

/// Rules, a licensed contract store and a config with `extra` appended, in a temporary
/// directory; returns it and the config's path.
fn files(extra: &str) -> (testbed::DaemonDir, PathBuf) {
    let dir = testbed::DaemonDir::new().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let seed = dir.path().join("contracts.yaml");
    std::fs::write(&seed, CONTRACTS).unwrap();
    let db = format!("sqlite:{}", dir.path().join("contracts.db").display());
    for args in [
        vec!["contracts", "init"],
        vec!["contracts", "import", seed.to_str().unwrap()],
    ] {
        let out = Command::new(smf_firewall())
            .args(&args)
            .args(["--db", &db])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "rules: rules.yaml\ninterfaces: [lan0, wan0]\nadapter: {{serial: {SERIAL}}}\n\
             contracts: {{url: \"{db}\"}}\n\
             models:\n  x1: {{capacity_bps: {X1_CAPACITY}, next: x2}}\n  x2: {{capacity_bps: 1000000}}\n{extra}{}",
            dir.operations_yaml()
        ),
    )
    .unwrap();
    (dir, config)
}

/// Starts the daemon in the adapter namespace and waits until `ready` says it serves.
fn start(adapter: &NetNs, config: &Path, ready: impl Fn() -> bool) -> Process {
    let args = ["run", "--config", config.to_str().unwrap()];
    adapter.start_until(smf_firewall(), &args, ready).unwrap()
}

fn metrics(adapter: &NetNs) -> String {
    common::scrape(adapter)
}

/// Sends `per_second` datagrams of `payload` bytes from `ns` to `to` on a fixed schedule until
/// `stop`; returns how many were sent.
fn steady(ns: &NetNs, to: SocketAddr, payload: usize, per_second: f64, stop: &AtomicBool) -> u64 {
    let socket = ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    let data = vec![7u8; payload];
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * per_second) as u64;
        while sent < due {
            socket.send_to(&data, to).unwrap();
            sent += 1;
        }
        thread::sleep(Duration::from_millis(2));
    }
    sent
}

/// Raises its flag when dropped, so that senders stop also when the test panics (a scope
/// waits for its threads before it lets the panic through).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A UDP socket bound in `ns`, so that datagrams to `port` are received, not answered with
/// ICMP port unreachable (which would be traffic too).
fn sink(ns: &NetNs, port: u16) -> UdpSocket {
    ns.run(move || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap()
}

/// (panel title, PromQL) of every target of deploy/grafana/smf-firewall.json, with Grafana's
/// variables as a dashboard showing all adapters and interfaces would send them.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/smf-firewall.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let promql = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "4s")
                .replace("$__range", "1m")
                .replace("$job", ".+")
                .replace("$instance", ".+")
                .replace("$interface", ".+");
            assert!(!promql.contains('$'), "a variable left in {promql}");
            queries.push((panel["title"].as_str().unwrap().to_string(), promql));
        }
    }
    queries
}

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yml")
}

/// The one value `promql` has in `prometheus`, polling until `accept` takes it (at most
/// `limit`); panics with the last answer and Prometheus' log otherwise.
fn until(
    prometheus: &Prometheus,
    promql: &str,
    limit: Duration,
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let start = Instant::now();
    loop {
        let answer = prometheus.query(promql).unwrap();
        if let [(_, value)] = answer.as_slice()
            && accept(*value)
        {
            return *value;
        }
        assert!(
            start.elapsed() < limit,
            "{promql}: {answer:?} not accepted within {limit:?}\n{}",
            prometheus.log()
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// The raw samples (timestamp in seconds, value) of a range vector selector, e.g. `x[5m]`.
fn raw(prometheus: &Prometheus, selector: &str) -> Vec<(f64, f64)> {
    let data = prometheus.query_data(selector).unwrap();
    let series = data["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{selector}: {data}");
    series[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_f64().unwrap(),
                pair[1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_daemon_and_records_utilization_of_known_traffic() {
    if !testbed::require_root("metering_e2e::prometheus")
        || !testbed::require_prometheus("metering_e2e::prometheus")
    {
        return;
    }
    let began = Instant::now();
    let site = Site::new().unwrap();
    let (_dir, config) = files("");
    let daemon = start(&site.adapter, &config, || {
        scrape(&site.adapter, common::metrics_address()).is_ok_and(|m| {
            sample(&m, "smf_firewall_adapter_capacity_bits_per_second", &[]).is_some()
        })
    });
    let _lan_sink = sink(&site.lan, 6000);
    let _wan_sink = sink(&site.wan, 5000);
    let stop = AtomicBool::new(false);
    // LAN -> WAN 200/s of 1,042-byte frames counted on lan0, WAN -> LAN 100/s of 542-byte
    // frames counted on wan0: 262,600 bytes/s over both interfaces.
    const RATE: f64 = 200.0 * 1042.0 + 100.0 * 542.0;
    let lan_before = counter(&site.adapter, "lan0", "pass");
    thread::scope(|scope| {
        let to_wan: SocketAddr = format!("{WAN_HOST}:5000").parse().unwrap();
        let to_lan: SocketAddr = format!("{LAN_HOST}:6000").parse().unwrap();
        let (site, stop) = (&site, &stop);
        let stopper = StopOnDrop(stop);
        let lan = scope.spawn(move || steady(&site.lan, to_wan, 1000, 200.0, stop));
        let wan = scope.spawn(move || steady(&site.wan, to_lan, 500, 100.0, stop));
        thread::sleep(Duration::from_secs(1));

        let started = Instant::now();
        let prometheus = Prometheus::start(
            &site.adapter,
            "127.0.0.1:9090".parse().unwrap(),
            common::metrics_address(),
            Duration::from_secs(1),
            &[&rules_file()],
        )
        .unwrap();
        eprintln!(
            "figure: Prometheus started and scraped the daemon in {:.2} s",
            started.elapsed().as_secs_f64()
        );

        // 50 datagrams that lan0 drops (no-discard): exactly 50 x 142 bytes, seen by
        // Prometheus at its next scrape.
        let tx = site
            .lan
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        for _ in 0..50 {
            tx.send_to(&[0; 100], format!("{WAN_HOST}:9")).unwrap();
        }
        let seen = Instant::now();
        until(
            &prometheus,
            "smf_firewall_bytes_total{interface=\"lan0\",verdict=\"drop\"}",
            Duration::from_secs(5),
            |v| v == 50.0 * 142.0,
        );
        eprintln!(
            "figure: dropped bytes in Prometheus after {:.2} s",
            seen.elapsed().as_secs_f64()
        );

        // Let 20 s of samples gather, then read the recording rules.
        thread::sleep(Duration::from_secs(20));
        // The rules' arithmetic, exact: utilization = 8 x bytes/s / the x1's capacity.
        until(
            &prometheus,
            "instance:smf_firewall_adapter_utilization:ratio_rate5m / (8 * instance:smf_firewall_bytes:rate5m)",
            Duration::from_secs(5),
            |v| (v * X1_CAPACITY - 1.0).abs() < 1e-9,
        );
        // The value: rate() over 5 minutes divides what the series increased by 300 s, and
        // the series is younger than that: the expected rate is RATE x (covered span / 300),
        // the span being from the first scrape to the last evaluation plus half a scrape
        // interval of extrapolation at the start.
        let recorded = raw(&prometheus, "instance:smf_firewall_bytes:rate5m[5m]");
        let first_scrape = raw(
            &prometheus,
            "smf_firewall_bytes_total{interface=\"wan0\",verdict=\"pass\"}[5m]",
        )[0]
        .0;
        let (evaluated, value) = *recorded.last().unwrap();
        let expected = RATE * (evaluated - first_scrape + 0.5) / 300.0;
        eprintln!(
            "figure: instance:smf_firewall_bytes:rate5m {value:.0} B/s after {:.1} s of samples, expected {expected:.0}",
            evaluated - first_scrape
        );
        // The senders keep their schedule to a few packets; ARP adds a little.
        assert!(
            (value / expected - 1.0).abs() < 0.08,
            "bytes rate {value} vs expected {expected}"
        );
        let utilization = until(
            &prometheus,
            "instance:smf_firewall_adapter_utilization:ratio_rate5m",
            Duration::from_secs(5),
            |v| v > 0.8,
        );
        eprintln!("figure: utilization {utilization:.3}");

        // Over 0.8, the pressure alert is pending (for: 1h), naming the adapter, its model
        // and the model to propose.
        let alerts = prometheus.api("/api/v1/alerts").unwrap();
        let pressure: Vec<&Value> = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "SmfAdapterBandwidthPressure")
            .collect();
        assert_eq!(pressure.len(), 1, "{alerts}");
        assert_eq!(pressure[0]["state"], "pending", "{alerts}");
        for (label, value) in [("serial", SERIAL), ("model", "x1"), ("next_model", "x2")] {
            assert_eq!(pressure[0]["labels"][label], value, "{alerts}");
        }
        // Every rule evaluates without error against the real series.
        let groups = prometheus.api("/api/v1/rules").unwrap();
        let rules: Vec<&Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        // As many as rules.yml defines (alerts and recording rules alike).
        let written = std::fs::read_to_string(rules_file())
            .unwrap()
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
            })
            .count();
        assert_eq!(rules.len(), written, "{groups}");
        for rule in rules {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
        // Every query of every panel of the Grafana dashboard has data here.
        let panels = dashboard_queries();
        assert!(panels.len() >= 19, "{panels:?}");
        for (panel, promql) in panels {
            let data = prometheus.query_data(&promql).unwrap();
            let result = data["result"].as_array().unwrap();
            assert!(!result.is_empty(), "panel {panel}: no data for {promql}");
        }

        drop(stopper);
        let sent = (lan.join().unwrap(), wan.join().unwrap());
        // Quiet now (frames still queued arrive within a moment): Prometheus' counter
        // reaches exactly what the daemon serves.
        let quiet = Instant::now();
        let direct = loop {
            let direct = counter(&site.adapter, "lan0", "pass");
            let scraped = prometheus
                .query("smf_firewall_bytes_total{interface=\"lan0\",verdict=\"pass\"}")
                .unwrap();
            if scraped.first().map(|(_, v)| *v) == Some(direct) {
                break direct;
            }
            assert!(
                quiet.elapsed() < Duration::from_secs(10),
                "Prometheus has {scraped:?}, the daemon {direct}"
            );
            thread::sleep(Duration::from_millis(250));
        };
        assert!(
            direct - lan_before >= sent.0 as f64 * 1042.0,
            "lan0 counted {} bytes for {} frames of 1042",
            direct - lan_before,
            sent.0
        );
    });
    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().status.success());
    eprintln!(
        "figure: Prometheus end to end in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

fn counter(adapter: &NetNs, interface: &str, verdict: &str) -> f64 {
    sample(
        &metrics(adapter),
        "smf_firewall_bytes_total",
        &[("interface", interface), ("verdict", verdict)],
    )
    .unwrap()
}

/// Reads `url` with the client of `smf-firewall top`, from inside `ns`.
fn read_as(
    ns: &NetNs,
    url: &str,
    ca: &Path,
    credentials: Option<(&str, &str)>,
) -> Result<(), TopError> {
    let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
    let (url, ca) = (url.to_string(), ca.to_path_buf());
    ns.run(move || Source::new(&url, Some(&ca), credentials)?.read().map(drop))
        .unwrap()
}

fn status(result: Result<(), TopError>) -> Option<u16> {
    match result {
        Ok(()) => Some(200),
        Err(TopError::Fetch {
            source: ureq::Error::StatusCode(code),
            ..
        }) => Some(code),
        Err(_) => None,
    }
}

#[test]
fn tls_and_basic_auth_on_a_namespace_address_admit_only_the_right_password() {
    let Some(site) = common::site("metering_e2e::tls_and_basic_auth") else {
        return;
    };
    let key = rcgen::generate_simple_self_signed(vec![ADAPTER_LAN.to_string()]).unwrap();
    let hash = bcrypt::hash("right-password", 4).unwrap();
    let (dir, config) = files(&format!(
        "metrics:\n  listen: {ADAPTER_LAN}:9775\n  tls: {{cert_file: cert.pem, key_file: key.pem}}\n  \
         basic_auth_users: {{prometheus: \"{hash}\"}}\n"
    ));
    let ca = dir.path().join("cert.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    let url = format!("https://{ADAPTER_LAN}:9775/metrics");
    // Read from the LAN host: the endpoint is on the network, not only on loopback.
    let right = Some(("prometheus", "right-password"));
    let daemon = start(&site.adapter, &config, || {
        read_as(&site.lan, &url, &ca, right).is_ok()
    });

    // Each row: credentials, the HTTP status (None: no HTTP answer at all).
    let cases = [
        (right, Some(200)),
        (Some(("prometheus", "wrong-password")), Some(401)),
        (Some(("nobody", "right-password")), Some(401)),
        (None, Some(401)),
    ];
    for (credentials, expected) in cases {
        let got = status(read_as(&site.lan, &url, &ca, credentials));
        assert_eq!(got, expected, "{credentials:?}");
    }
    // Plain HTTP to the TLS port, and TLS to a client that trusts another CA, get nothing.
    let plain = format!("http://{ADAPTER_LAN}:9775/metrics");
    assert_eq!(status(read_as(&site.lan, &plain, &ca, right)), None);
    let other = dir.path().join("other.pem");
    let stranger = rcgen::generate_simple_self_signed(vec![ADAPTER_LAN.to_string()]).unwrap();
    std::fs::write(&other, stranger.cert.pem()).unwrap();
    assert_eq!(status(read_as(&site.lan, &url, &other, right)), None);

    // `smf-firewall top` through TLS and basic auth, the password from the environment.
    let top = |password: &str| {
        site.lan
            .command(smf_firewall())
            .args(["top", "--once", "--url", &url, "--user", "prometheus"])
            .args(["--cacert", ca.to_str().unwrap()])
            .env("SMF_FIREWALL_METRICS_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let shown = top("right-password");
    let screen = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        screen.contains(&format!("adapter {SERIAL} (x1)")),
        "{screen}"
    );
    assert!(screen.contains("lan0"), "{screen}");
    let refused = top("wrong-password");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().status.success());
}

#[test]
fn an_exposed_listener_without_tls_and_auth_is_refused_with_its_position() {
    let (dir, config) = files("metrics:\n  listen: 0.0.0.0:9775\n");
    let out = Command::new(smf_firewall())
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The line of `listen:` in the config `files` writes (after 8 lines of its own).
    let position = format!(
        "{}:9:11: error: `listen: 0.0.0.0:9775` is not a loopback address",
        dir.path().join("config.yaml").display()
    );
    assert!(stderr.contains(&position), "{stderr}");
}

/// Label names that may appear: aggregates only (Art. 17). A new one must be added here on
/// purpose, after checking that it cannot identify a communication.
const AGGREGATE_LABELS: &[&str] = &[
    "interface",
    "verdict",
    "rule",
    "serial",
    "model",
    "next_model",
    "role",
    "reason",
    "result",
    "version",
    "mode",
    // `in` or `out` (egress rules): which way packets crossed an interface, never which flow.
    "direction",
];

/// Connections and datagrams of many kinds in both directions, passed and dropped.
fn varied_traffic(site: &Site) {
    let servers: Vec<TcpListener> = [80, 443, 8080]
        .into_iter()
        .map(|port| {
            site.wan
                .run(move || TcpListener::bind(("0.0.0.0", port)))
                .unwrap()
                .unwrap()
        })
        .collect();
    for (server, port) in servers.iter().zip([80, 443, 8080]) {
        let to: SocketAddr = format!("{WAN_HOST}:{port}").parse().unwrap();
        let sent = site
            .lan
            .run(move || {
                let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
                conn.write_all(b"GET / HTTP/1.0\r\n\r\n")
            })
            .unwrap();
        assert!(sent.is_ok(), "TCP {port}: {sent:?}");
        let (mut conn, _) = server.accept().unwrap();
        let mut buf = [0; 64];
        let _ = conn.read(&mut buf);
    }
    let _sinks: Vec<UdpSocket> = [53, 123, 5000]
        .into_iter()
        .map(|p| sink(&site.wan, p))
        .collect();
    for port in [53, 123, 5000, 9, 9, 7777] {
        // Each from a new source port: flows that a per-flow label would tell apart.
        let tx = site
            .lan
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        tx.send_to(&[1; 64], format!("{WAN_HOST}:{port}")).unwrap();
    }
    let _ = site
        .lan
        .exec("ping", &["-c", "2", "-i", "0.2", "-W", "1", WAN_HOST]);
    let telnet: SocketAddr = format!("{LAN_HOST}:23").parse().unwrap();
    let _ = site
        .wan
        .run(move || TcpStream::connect_timeout(&telnet, Duration::from_millis(300)));
    thread::sleep(Duration::from_millis(300));
}

/// Each series as its name and labels, without the value.
fn series(exposition: &str) -> BTreeSet<String> {
    text::parse(exposition)
        .unwrap()
        .into_iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{}{{{}}}", s.name, labels.join(","))
        })
        .collect()
}

#[test]
fn no_label_carries_an_address_a_port_or_a_flow_after_varied_traffic() {
    if !testbed::require_root("metering_e2e::no_address_labels")
        || !testbed::require_prometheus("metering_e2e::no_address_labels")
    {
        return;
    }
    let site = Site::new().unwrap();
    let (_dir, config) = files("");
    let daemon = start(&site.adapter, &config, || {
        scrape(&site.adapter, common::metrics_address()).is_ok_and(|m| {
            sample(
                &m,
                "smf_firewall_adapter_info",
                &[("serial", SERIAL), ("model", "x1"), ("next_model", "x2")],
            )
            .is_some()
        })
    });
    let before = metrics(&site.adapter);
    varied_traffic(&site);
    let after = metrics(&site.adapter);

    // Traffic moves values, never the set of series: no series per flow.
    assert_eq!(
        series(&before),
        series(&after),
        "traffic created or removed series"
    );
    for sample in text::parse(&after).unwrap() {
        for (name, value) in &sample.labels {
            assert!(
                AGGREGATE_LABELS.contains(&name.as_str()),
                "label `{name}` is not a known aggregate: {sample}"
            );
            let address = value.parse::<IpAddr>().is_ok()
                || value.parse::<SocketAddr>().is_ok()
                || value.parse::<ipnet::IpNet>().is_ok();
            assert!(!address, "an address in a label: {sample}");
        }
    }
    for host in [LAN_HOST, WAN_HOST, ADAPTER_LAN, testbed::ADAPTER_WAN] {
        assert!(
            !after.contains(host),
            "{host} appears in /metrics:\n{after}"
        );
    }
    // The traffic was counted: dropped on both interfaces, by their rules.
    for (interface, rule) in [
        ("lan0", "no-discard"),
        ("lan0", "no-ping-from-host"),
        ("wan0", "no-telnet-in"),
        ("lan0", "web"),
    ] {
        let hits = sample(
            &after,
            "smf_firewall_rule_hits_total",
            &[("interface", interface), ("rule", rule)],
        );
        assert!(
            hits.is_some_and(|h| h > 0.0),
            "{interface} {rule}: {hits:?}"
        );
    }
    // Prometheus' own linter has nothing to say about the exposition, but for one name: it
    // wants bytes where metering names the capacity in bits per second, as link and model
    // capacities are rated.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    let problems: Vec<String> = String::from_utf8_lossy(&lint.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&lint.stderr).lines())
        .filter(|line| {
            !line.starts_with("smf_firewall_adapter_capacity_bits_per_second use base unit")
        })
        .map(str::to_string)
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics: {problems:?} ({})",
        lint.status
    );

    // An interface that goes away takes the program with it: attached becomes 0 there.
    site.adapter.ip(&["link", "del", "wan0"]).unwrap();
    let now = metrics(&site.adapter);
    let attached = |interface| {
        sample(
            &now,
            "smf_firewall_xdp_attached",
            &[("interface", interface), ("mode", "driver")],
        )
    };
    assert_eq!(
        (attached("lan0"), attached("wan0")),
        (Some(1.0), Some(0.0)),
        "{now}"
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().status.success());
}
