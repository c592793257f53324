//! End to end: the real `smf-firewall run` in the adapter namespace of a small site, real
//! traffic between a LAN host and a WAN host, counters read from `/metrics`.

use std::{path::Path, time::Duration};

use testbed::{LAN_HOST, NetNs, Signal, Site, WAN_HOST, sample};

use crate::{
    common::{self, start},
    smf_firewall,
};

/// Ethernet 14 + IPv4 20 + UDP 8 + payload 100.
const UDP_FRAME: u64 = 142;
/// Ethernet 14 + IPv4 20 + ICMP 8 + ping's default 56 bytes of data.
const PING_FRAME: u64 = 98;

const RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }
      - { id: no-ping-from-host, action: drop, protocol: icmp, src: 198.18.1.2/32 }
  wan0:
    default: pass
";

fn counter(adapter: &NetNs, name: &str, interface: &str, verdict: &str) -> u64 {
    let text = common::scrape(adapter);
    sample(
        &text,
        name,
        &[("interface", interface), ("verdict", verdict)],
    )
    .unwrap_or_else(|| panic!("{name}{{{interface},{verdict}}} missing from:\n{text}")) as u64
}

/// A TCP connection from the LAN host to the WAN host that carries one message.
fn tcp_through(site: &Site) -> bool {
    testbed::tcp_message(
        &site.lan,
        &site.wan,
        WAN_HOST,
        8080,
        "hello through the firewall",
        Duration::from_secs(3),
    )
}

fn pings_answered(site: &Site, count: u32) -> bool {
    site.lan
        .exec(
            "ping",
            &["-c", &count.to_string(), "-i", "0.2", "-W", "1", WAN_HOST],
        )
        .is_ok()
}

#[test]
fn drops_what_the_rules_drop_passes_the_rest_counts_both_and_detaches_on_sigterm() {
    let Some(site) = common::site("e2e::drops_passes_counts_detaches") else {
        return;
    };
    let (_dir, config) = common::files("rules: rules.yaml\ninterfaces: [lan0, wan0]\n", RULES);
    let daemon = start(&site.adapter, &config);
    assert!(site.adapter.has_xdp("lan0").unwrap() && site.adapter.has_xdp("wan0").unwrap());

    // Allowed flows work (this also resolves ARP on both sides).
    assert!(tcp_through(&site), "TCP from LAN to WAN must pass");
    let drop_packets = counter(&site.adapter, "smf_firewall_packets_total", "lan0", "drop");
    let drop_bytes = counter(&site.adapter, "smf_firewall_bytes_total", "lan0", "drop");
    let pass_packets = counter(&site.adapter, "smf_firewall_packets_total", "lan0", "pass");
    let wan_pass = counter(&site.adapter, "smf_firewall_packets_total", "wan0", "pass");

    assert_eq!(
        site.udp_through(10, 5).unwrap(),
        5,
        "UDP to port 10 must pass"
    );
    assert_eq!(
        site.udp_through(9, 5).unwrap(),
        0,
        "UDP to port 9 must be dropped"
    );
    assert!(
        !pings_answered(&site, 3),
        "pings from {LAN_HOST} must be dropped"
    );

    // Exactly the dropped frames were counted as dropped, to the byte.
    let dropped =
        counter(&site.adapter, "smf_firewall_packets_total", "lan0", "drop") - drop_packets;
    let dropped_bytes =
        counter(&site.adapter, "smf_firewall_bytes_total", "lan0", "drop") - drop_bytes;
    assert_eq!(dropped, 5 + 3);
    assert_eq!(dropped_bytes, 5 * UDP_FRAME + 3 * PING_FRAME);
    // The passed datagrams were counted on lan0 (ARP and the like may add more).
    assert!(
        counter(&site.adapter, "smf_firewall_packets_total", "lan0", "pass") >= pass_packets + 5
    );
    // wan0 saw the replies of the TCP exchange earlier, and nothing is dropped there.
    assert!(wan_pass > 0);
    assert_eq!(
        counter(&site.adapter, "smf_firewall_packets_total", "wan0", "drop"),
        0
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    assert!(exit.status.success(), "exit after SIGTERM: {exit:?}");
    assert!(!site.adapter.has_xdp("lan0").unwrap(), "XDP left on lan0");
    assert!(!site.adapter.has_xdp("wan0").unwrap(), "XDP left on wan0");
    assert_eq!(
        site.udp_through(9, 2).unwrap(),
        2,
        "traffic flows again once detached"
    );
    assert!(pings_answered(&site, 1));
}

/// Runs the daemon to completion and returns its exit code and stderr.
fn run_to_exit(adapter: &NetNs, config: &Path) -> (Option<i32>, String) {
    let out = adapter
        .command(smf_firewall())
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_interface_is_exit_1_with_nothing_attached() {
    let Some(site) = common::site("e2e::missing_interface") else {
        return;
    };
    let rules = format!("{RULES}  nosuch0:\n    default: drop\n");
    let (dir, config) = common::files("rules: rules.yaml\ninterfaces: [lan0, nosuch0]\n", &rules);
    let (code, stderr) = run_to_exit(&site.adapter, &config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("interface nosuch0 does not exist"),
        "{stderr}"
    );
    assert!(!site.adapter.has_xdp("lan0").unwrap());
    assert!(!dir.pin_path().exists(), "nothing pinned, nothing left");
}

#[test]
fn a_bad_rule_file_is_exit_1_with_its_position_and_nothing_attached() {
    let Some(site) = common::site("e2e::bad_rules") else {
        return;
    };
    let rules = RULES.replace("198.18.1.2/32", "198.18.1.2/33");
    let (dir, config) = common::files("rules: rules.yaml\ninterfaces: [lan0, wan0]\n", &rules);
    let (code, stderr) = run_to_exit(&site.adapter, &config);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!("{}:7:", dir.path().join("rules.yaml").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("`198.18.1.2/33` is not an IP address or CIDR"),
        "{stderr}"
    );
    assert!(!site.adapter.has_xdp("lan0").unwrap());
}

#[test]
fn a_config_interface_without_rules_is_exit_1() {
    let Some(site) = common::site("e2e::interface_without_rules") else {
        return;
    };
    let rules = "version: 1\ninterfaces:\n  lan0: {default: pass}\n";
    let (_dir, config) = common::files("rules: rules.yaml\ninterfaces: [lan0, wan0]\n", rules);
    let (code, stderr) = run_to_exit(&site.adapter, &config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("interface `wan0` has no rules in"),
        "{stderr}"
    );
    assert!(!site.adapter.has_xdp("lan0").unwrap());
}
