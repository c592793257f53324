//! Live packet traces end to end: the real daemon in the adapter namespace of a small site,
//! `smf-firewall trace` as its client while the LAN host pings and opens TCP connections,
//! the JSON lines checked field by field against the rules (and `explain`), and the kernel's
//! switch (the pinned `TRACE_CONTROL`) read back: off after the count, after the client is
//! killed, after a daemon restart mid-trace; one trace at a time.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use aya::maps::{Array, Map, MapData};
use firewall_common::{TraceControl, directed_slot, direction, trace};
use serde_json::Value;
use testbed::{LAN_HOST, NetNs, Signal, Site, WAN_HOST, eventually, tcp_message};

use crate::{
    common::{self, cli, files, start, text},
    smf_firewall,
};

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-ssh, action: drop, protocol: tcp, dst_port: 22 }
      - { id: pings, action: pass, protocol: icmp }
      - { id: web-state, action: pass, state: true, protocol: tcp, dst_port: 80 }
  wan0:
    default: pass
";

/// How long a wait for the daemon or the kernel may take before the test gives up (a limit,
/// not a timing under test).
const PATIENCE: Duration = Duration::from_secs(15);

/// The pinned `TRACE_CONTROL` of the running daemon (its `status --json` names its maps).
fn maps_dir(adapter: &NetNs, config: &Path) -> PathBuf {
    let out = cli(adapter, &["status", "--json"], config);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(status["maps"].as_str().expect("status names its maps"))
}

fn switch(maps: &Path) -> TraceControl {
    let data = MapData::from_pin(maps.join("TRACE_CONTROL")).unwrap();
    let array: Array<MapData, TraceControl> = Array::try_from(Map::Array(data)).unwrap();
    array.get(&0, 0).unwrap()
}

/// `smf-firewall trace ARGS` in the adapter, started: its first stderr line (the heading) was
/// read, so the kernel traces from now on. Returns the process and that line.
fn trace(site: &Site, config: &Path, args: &[&str]) -> (Child, String) {
    let mut child = site
        .adapter
        .command(smf_firewall())
        .arg("trace")
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut heading = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut heading)
        .unwrap();
    (child, heading)
}

fn ping(site: &Site) {
    let out = site
        .lan
        .exec("ping", &["-c", "1", "-W", "2", WAN_HOST])
        .unwrap();
    assert!(out.status.success(), "ping: {out:?}");
}

/// One TCP SYN to the WAN host's `port` (dropped, or refused: nothing listens).
fn syn(site: &Site, port: u16) {
    let to = SocketAddr::from((WAN_HOST.parse::<std::net::Ipv4Addr>().unwrap(), port));
    let _ = site
        .lan
        .run(move || TcpStream::connect_timeout(&to, Duration::from_millis(300)))
        .unwrap();
}

/// The trace's stdout once it exited by itself (`--count`): one JSON object per line.
fn lines(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "trace: {out:?}");
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// What `explain` says decides `packet` on lan0.
fn explained(site: &Site, config: &Path, packet: &str) -> Value {
    let rules = config.with_file_name("rules.yaml");
    let out = site
        .adapter
        .command(smf_firewall())
        .args(["explain", rules.to_str().unwrap(), "--interface", "lan0"])
        .args(["--packet", packet, "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_traced_ping_and_tcp_syn_show_their_fields_rules_and_verdicts() {
    let Some(site) = common::site("trace_e2e::ping_and_syn") else {
        return;
    };
    let (_dir, config) = files(common::CONFIG, RULES);
    let _daemon = start(&site.adapter, &config);
    let maps = maps_dir(&site.adapter, &config);
    assert_eq!(switch(&maps), TraceControl::OFF, "off before any trace");

    // From the LAN host only: no ARP, no IPv6 neighbour discovery.
    let filter = format!("{LAN_HOST} -> any");
    let (child, heading) = trace(
        &site,
        &config,
        &[
            "--interface",
            "lan0",
            "--direction",
            "in",
            "--json",
            "--count",
            "5",
            "--match",
            &filter,
        ],
    );
    assert!(heading.starts_with("tracing lan0 (in)"), "{heading}");
    let on = switch(&maps);
    assert_ne!(on.until_ns, 0, "on while tracing");
    assert_eq!(
        on.slots,
        [directed_slot(0, direction::IN), trace::NO_SLOT],
        "lan0 is slot 0, in only"
    );
    ping(&site);
    syn(&site, 22);
    syn(&site, 81);
    // To port 80, listened to: the SYN opens a flow (`state: true`), the LAN host's next
    // packet (the handshake's ACK) is passed by it.
    assert!(tcp_message(
        &site.lan,
        &site.wan,
        WAN_HOST,
        80,
        "hello",
        Duration::from_secs(2)
    ));
    let packets = lines(child);
    assert_eq!(switch(&maps), TraceControl::OFF, "off after the count");
    assert_eq!(packets.len(), 5, "{packets:#?}");
    let [echo, ssh, other, web, tracked] = &packets[..] else {
        unreachable!()
    };

    for packet in &packets {
        assert_eq!(packet["interface"], "lan0");
        assert_eq!(packet["direction"], "in");
        assert_eq!(packet["src"], LAN_HOST);
        assert_eq!(packet["dst"], WAN_HOST);
        assert_eq!(packet["family"], "ipv4");
        assert_eq!(packet["frame"], "ip");
        assert_eq!(packet["vlan"], 0);
        assert_eq!(packet["fragment"], false);
    }
    assert_eq!(echo["protocol"], "icmp");
    assert_eq!(
        (&echo["icmp_type"], &echo["icmp_code"]),
        (&8.into(), &0.into())
    );
    assert_eq!(
        (&echo["src_port"], &echo["tcp_flags"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(echo["rule"], "pings");
    assert_eq!(echo["reason"], "rule");
    assert_eq!(echo["verdict"], "pass");
    assert_eq!(echo["default"], false);
    // A ping is 98 bytes of Ethernet frame (20 IP + 8 ICMP + 56 data + 14).
    assert_eq!(echo["bytes"], 98);

    assert_eq!(ssh["protocol"], "tcp");
    assert_eq!(ssh["dst_port"], 22);
    assert!(ssh["src_port"].as_u64().unwrap() > 1023, "{ssh}");
    assert_eq!(ssh["tcp_flags"], serde_json::json!(["SYN"]));
    assert_eq!(ssh["icmp_type"], Value::Null);
    assert_eq!(ssh["rule"], "no-ssh");
    assert_eq!(ssh["reason"], "rule");
    assert_eq!(
        (&ssh["verdict"], &ssh["rules_verdict"]),
        (&"drop".into(), &"drop".into())
    );

    // No rule for TCP 81: the default.
    assert_eq!(other["dst_port"], 81);
    assert_eq!(other["rule"], Value::Null);
    assert_eq!(other["reason"], "default");
    assert_eq!(other["default"], true);
    assert_eq!(other["verdict"], "pass");

    assert_eq!(
        (&web["dst_port"], &web["rule"]),
        (&80.into(), &"web-state".into())
    );
    assert_eq!(web["tcp_flags"], serde_json::json!(["SYN"]));
    assert_eq!(web["tracked"], false);
    assert_eq!(tracked["dst_port"], 80);
    assert_eq!(tracked["src_port"], web["src_port"]);
    assert_eq!(tracked["tcp_flags"], serde_json::json!(["ACK"]));
    assert_eq!(tracked["tracked"], true);
    assert_eq!(tracked["reason"], "tracked");
    assert_eq!(tracked["rule"], Value::Null);
    assert_eq!(
        (&tracked["default"], &tracked["verdict"]),
        (&false.into(), &"pass".into())
    );
    for packet in [echo, ssh, other, web] {
        assert_eq!(packet["tracked"], false, "{packet}");
    }

    // The same rule ids as `explain` for the same packets.
    let port = ssh["src_port"].as_u64().unwrap();
    let cases = [
        (echo, format!("icmp {LAN_HOST} -> {WAN_HOST}")),
        (
            ssh,
            format!("tcp {LAN_HOST}:{port} -> {WAN_HOST}:22 flags SYN"),
        ),
        (
            other,
            format!("tcp {LAN_HOST}:{port} -> {WAN_HOST}:81 flags SYN"),
        ),
        (
            web,
            format!("tcp {LAN_HOST}:{port} -> {WAN_HOST}:80 flags SYN"),
        ),
    ];
    for (packet, spec) in cases {
        let explain = explained(&site, &config, &spec);
        assert_eq!(packet["rule"], explain["rule"], "{spec}: {explain}");
        assert_eq!(packet["verdict"], explain["verdict"], "{spec}: {explain}");
        assert_eq!(packet["default"], explain["default"], "{spec}: {explain}");
    }
}

#[test]
fn a_killed_client_a_second_trace_and_a_daemon_restart_all_leave_tracing_off() {
    let Some(site) = common::site("trace_e2e::switch_off") else {
        return;
    };
    let config_text = format!("{}keep_attached_on_exit: true\n", common::CONFIG);
    let (_dir, config) = files(&config_text, RULES);
    let daemon = start(&site.adapter, &config);
    let maps = maps_dir(&site.adapter, &config);

    // A client killed with SIGKILL: the daemon sees its connection close.
    let (mut first, heading) = trace(&site, &config, &["--interface", "wan0"]);
    assert!(
        heading.starts_with("tracing wan0 (in and out)"),
        "{heading}"
    );
    let on = switch(&maps);
    assert_eq!(
        on.slots,
        [
            directed_slot(1, direction::IN),
            directed_slot(1, direction::OUT)
        ]
    );
    // One at a time: a second trace is refused while the first runs, and changes nothing.
    let second = cli(&site.adapter, &["trace", "--interface", "lan0"], &config);
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        text(&second.stderr).contains("another `smf-firewall trace` is running"),
        "{second:?}"
    );
    assert_eq!(switch(&maps).slots, on.slots, "the first trace's switch");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        eventually(PATIENCE, || switch(&maps) == TraceControl::OFF),
        "still on after the client was killed: {:?}",
        switch(&maps)
    );

    // Free again: a new trace runs (and ends at its count).
    let (child, _) = trace(
        &site,
        &config,
        &[
            "--interface",
            "lan0",
            "--json",
            "--count",
            "1",
            "--match",
            "icmp",
        ],
    );
    ping(&site);
    let packets = lines(child);
    assert_eq!(packets[0]["rule"], "pings", "{packets:?}");
    assert_eq!(switch(&maps), TraceControl::OFF);

    // The daemon killed mid-trace (keep_attached_on_exit: the maps stay pinned, the switch
    // as it was): the client is told, and the next daemon starts with tracing off.
    let (client, _) = trace(&site, &config, &["--interface", "lan0"]);
    assert_ne!(switch(&maps).until_ns, 0);
    daemon.signal(Signal::SIGKILL).unwrap();
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("ended the trace"), "{out:?}");
    drop(daemon);
    let _next = start(&site.adapter, &config);
    assert_eq!(
        maps_dir(&site.adapter, &config),
        maps,
        "the maps taken over"
    );
    assert_eq!(switch(&maps), TraceControl::OFF, "off after the restart");
}

#[test]
fn a_bad_request_is_refused_with_the_reason() {
    let Some(site) = common::site("trace_e2e::refused") else {
        return;
    };
    let (_dir, config) = files(common::CONFIG, RULES);
    let _daemon = start(&site.adapter, &config);
    let cases: [(&[&str], &str); 3] = [
        (
            &["trace", "--interface", "eth9"],
            "does not serve interface `eth9` (it serves: lan0, wan0)",
        ),
        (
            &[
                "trace",
                "--interface",
                "lan0",
                "--match",
                "tcp any -> any:99999",
            ],
            "`99999` is not a port",
        ),
        (
            &["trace", "--interface", "lan0", "--rate", "0"],
            "0 is not in 1..=10000",
        ),
    ];
    for (args, expected) in cases {
        let out = cli(&site.adapter, args, &config);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(text(&out.stderr).contains(expected), "{args:?}: {out:?}");
    }
    assert_eq!(switch(&maps_dir(&site.adapter, &config)), TraceControl::OFF);
}
