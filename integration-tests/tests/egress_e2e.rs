//! Egress rules end to end: `direction: out` rules on traffic the adapter itself originates. The
//! real daemon attaches the TC egress program (TCX) to `wan0`: the adapter's own pings to the
//! WAN host are dropped on the way out, its own TCP connection (opened by a `state: true` out
//! rule) gets its replies through `wan0`'s `default: drop`, and the WAN host cannot connect
//! to the adapter. Counted with `direction="out"`.

use std::time::Duration;

use testbed::{ADAPTER_WAN, NetNs, Signal, WAN_HOST};

use crate::common::{self, required_metric as metric, start};

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
  wan0:
    default: drop
    rules:
      - { id: no-ping-out, action: drop, direction: out, protocol: icmp }
      - { id: adapter-tcp-out, action: pass, direction: out, protocol: tcp, state: true }
";

/// A TCP connection from `from` to a listener in `to` on `host:port` carrying one message.
fn tcp(from: &NetNs, to: &NetNs, host: &str, port: u16) -> bool {
    testbed::tcp_message(
        from,
        to,
        host,
        port,
        "from the adapter",
        Duration::from_secs(2),
    )
}

#[test]
fn out_rules_judge_what_the_adapter_itself_sends() {
    let Some(site) = common::site("egress_e2e::adapter_originated") else {
        return;
    };
    let (_dir, config) = common::files("rules: rules.yaml\ninterfaces: [lan0, wan0]\n", RULES);
    let daemon = start(&site.adapter, &config);

    assert!(
        site.adapter
            .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", WAN_HOST])
            .is_err(),
        "the adapter's pings must be dropped on the way out"
    );
    // A drop on the way out is ENOBUFS for the sender, which ping retries: at least 3.
    let ping_drops = metric(
        &site.adapter,
        "smf_firewall_rule_hits_total",
        &[("interface", "wan0"), ("rule", "no-ping-out")],
    );
    assert!(ping_drops >= 3.0, "{ping_drops}");
    assert_eq!(
        metric(
            &site.adapter,
            "smf_firewall_packets_by_direction_total",
            &[
                ("interface", "wan0"),
                ("direction", "out"),
                ("verdict", "drop")
            ]
        ),
        ping_drops,
        "every drop on the way out was the ping rule's"
    );
    assert_eq!(
        metric(
            &site.adapter,
            "smf_firewall_packets_by_direction_total",
            &[
                ("interface", "lan0"),
                ("direction", "out"),
                ("verdict", "drop")
            ]
        ),
        0.0
    );
    assert!(
        tcp(&site.adapter, &site.wan, WAN_HOST, 8080),
        "the adapter's own TCP connection works: opened on the way out, replies tracked"
    );
    assert!(
        metric(
            &site.adapter,
            "smf_firewall_conntrack_hits_total",
            &[("interface", "wan0"), ("direction", "in")]
        ) >= 1.0
    );
    assert!(
        !tcp(&site.wan, &site.adapter, ADAPTER_WAN, 8081),
        "the WAN host cannot connect to the adapter (wan0 default drop)"
    );
    // Arriving packets are still counted as before (no direction label).
    assert!(
        metric(
            &site.adapter,
            "smf_firewall_packets_total",
            &[("interface", "wan0"), ("verdict", "drop")]
        ) >= 1.0
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    assert!(exit.status.success(), "{exit:?}");
}
