//! Connection tracking end to end: the real daemon in the adapter namespace with "pass LAN → WAN with
//! state enable" and everything from the WAN dropped. A real TCP connection (and a ping) from
//! the LAN host to the WAN host works, a new connection from the WAN host is dropped, the
//! conntrack metrics and `smf-firewall conntrack [flush]` see the flows (through the pins).

use std::{fs, path::Path, process::Command, time::Duration};

use firewall_dataplane::{conntrack::Pinned, pins::Pins};
use firewall_user::config::Config;
use testbed::{LAN_HOST, NetNs, Signal, WAN_HOST};

use crate::{
    common::{self, required_metric as metric, start},
    smf_firewall,
};

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: drop
    rules:
      - { id: lan-out, action: pass, src: 198.18.1.0/24, state: true }
  wan0:
    default: drop
";

/// A TCP connection from `from` to `to_host:port` that carries one message to a listener in
/// `to`; true when the message arrived.
fn tcp(from: &NetNs, to: &NetNs, to_host: &str, port: u16) -> bool {
    testbed::tcp_message(
        from,
        to,
        to_host,
        port,
        "stateful hello",
        Duration::from_secs(2),
    )
}

fn cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(smf_firewall())
        .arg("conntrack")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lan_connections_get_their_replies_and_the_wan_cannot_connect() {
    let Some(site) = common::site("conntrack_e2e::lan_out_state") else {
        return;
    };
    let (dir, config) = common::files(
        "rules: rules.yaml\ninterfaces: [lan0, wan0]\nconntrack: {sweep: 200ms}\n",
        RULES,
    );
    let daemon = start(&site.adapter, &config);

    assert!(
        tcp(&site.lan, &site.wan, WAN_HOST, 8080),
        "TCP from the LAN host to the WAN host must work: its replies are tracked"
    );
    assert!(
        site.lan
            .exec("ping", &["-c", "2", "-i", "0.2", "-W", "1", WAN_HOST])
            .is_ok(),
        "echo replies to the LAN host's pings are tracked"
    );
    let wan_drops = metric(
        &site.adapter,
        "smf_firewall_packets_total",
        &[("interface", "wan0"), ("verdict", "drop")],
    );
    assert!(
        !tcp(&site.wan, &site.lan, LAN_HOST, 8081),
        "a new connection from the WAN host must be dropped"
    );
    assert!(
        metric(
            &site.adapter,
            "smf_firewall_packets_total",
            &[("interface", "wan0"), ("verdict", "drop")]
        ) > wan_drops,
        "the WAN host's SYNs were dropped on wan0"
    );

    // The replies came in on wan0 and were passed by the table.
    let hits = metric(
        &site.adapter,
        "smf_firewall_conntrack_hits_total",
        &[("interface", "wan0"), ("direction", "in")],
    );
    assert!(hits >= 3.0, "SYN-ACK, data ACKs and 2 echo replies: {hits}");
    assert!(metric(&site.adapter, "smf_firewall_conntrack_created_total", &[]) >= 2.0);
    assert_eq!(
        metric(&site.adapter, "smf_firewall_conntrack_capacity", &[]),
        65536.0
    );
    // The sweep (every 200 ms) counts the live flows.
    assert!(
        testbed::eventually(Duration::from_secs(5), || {
            metric(&site.adapter, "smf_firewall_conntrack_entries", &[]) >= 2.0
        }),
        "entries never reached 2"
    );
    let text = common::scrape(&site.adapter);
    assert!(
        !text
            .lines()
            .filter(|l| l.starts_with("smf_firewall_conntrack"))
            .any(|l| l.contains(LAN_HOST) || l.contains(WAN_HOST)),
        "no addresses in metrics (Art. 17)"
    );

    // The operator's view, then a flush.
    let shown = cli(&config, &[]);
    assert!(shown.contains("tcp "), "{shown}");
    assert!(shown.contains("icmp "), "{shown}");
    let flushed = cli(&config, &["flush"]);
    let n: u64 = flushed
        .trim()
        .strip_prefix("flushed ")
        .and_then(|rest| rest.strip_suffix(" flows"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{flushed}"));
    assert!(n >= 2, "{flushed}");
    assert!(cli(&config, &[]).starts_with("0 flows"));

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    assert!(exit.status.success(), "{exit:?}");
    assert!(!dir.pin_path().exists(), "the pins go with the daemon");
}

/// The daemon's own setting, read back from the kernel's settings map: no packet looks the
/// flow table up while no rule has `state: true`, and a reload that brings the first such rule
/// turns the lookups on.
#[test]
fn the_flow_table_is_consulted_only_once_a_rule_has_state() {
    let Some(site) = common::site("conntrack_e2e::tracking_setting") else {
        return;
    };
    let stateless = RULES.replace(", state: true", "");
    assert_ne!(stateless, RULES);
    let (dir, config) = common::files("rules: rules.yaml\ninterfaces: [lan0, wan0]\n", &stateless);
    let daemon = start(&site.adapter, &config);
    let pins = Pins::new(Config::load(&config).unwrap().operations.pin_path);
    let tracking = || Pinned::open_current(&pins).unwrap().tracking();
    assert!(
        !tracking(),
        "no rule has state: true, so the table must not be consulted"
    );

    fs::write(config.with_file_name("rules.yaml"), RULES).unwrap();
    let out = Command::new(smf_firewall())
        .arg("reload")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        tracking(),
        "a state: true rule is loaded: the table must be consulted"
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().status.success());
    drop(dir);
}
