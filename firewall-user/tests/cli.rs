//! The command line without the kernel: `check`, exit codes and error format.

use std::process::Command;

const SMF_FIREWALL: &str = env!("CARGO_BIN_EXE_smf-firewall");

fn check(file: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(SMF_FIREWALL)
        .arg("check")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_and_lists_its_rules_in_order() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/example.yaml");
    let (code, stdout, stderr) = check(&example);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("lan0: default pass, non-IP pass, 2 rules"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  1. no-discard drop udp dst_port 9\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  2. no-ping-from-host drop ipv4 icmp src 198.18.1.2/32\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  1. no-telnet-in drop ipv4 tcp dst 198.18.1.0/24 dst_port 23 log\n"),
        "{stdout}"
    );
}

#[test]
fn check_rejects_a_bad_file_with_every_error_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n      \
         - { id: a, action: drop, src: 198.18.0.1/24 }\n      \
         - { id: a, action: drop, protocol: udp, dst_port: \"90-80\" }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(&file);
    assert_eq!(code, Some(1), "{stdout}");
    let shown = file.display();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&*shown.to_string()))
        .collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with(&format!("{shown}:6:")), "{stderr}");
    assert!(
        lines[0]
            .contains(": error: `198.18.0.1/24` has host bits set: did you mean 198.18.0.0/24?"),
        "{stderr}"
    );
    assert!(
        lines[1].contains(":7:") && lines[1].contains("duplicate rule id `a`"),
        "{stderr}"
    );
    assert!(
        lines[2].contains(":7:") && lines[2].contains("port range 90-80 is backwards"),
        "{stderr}"
    );
}

#[test]
fn check_of_a_missing_file_is_exit_1() {
    let (code, _, stderr) = check(std::path::Path::new("/nonexistent/rules.yaml"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot read rules from /nonexistent/rules.yaml"),
        "{stderr}"
    );
}

/// `direction: out` rules judge leaving packets only; `state: true` is shown by `check`, and on
/// a drop rule it is an error at its position.
#[test]
fn explain_judges_each_direction_by_its_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(
        &file,
        "version: 1\ninterfaces:\n  wan0:\n    default: drop\n    rules:\n      - { id: no-ping-out, action: drop, direction: out, protocol: icmp }\n      - { id: web-out, action: pass, direction: out, protocol: tcp, dst_port: 80, state: true }\n",
    )
    .unwrap();
    let explain = |direction: &str, packet: &str| {
        let out = Command::new(SMF_FIREWALL)
            .args([
                "explain",
                file.to_str().unwrap(),
                "--interface",
                "wan0",
                "--json",
            ])
            .args(["--packet", packet, "--direction", direction])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Each row: direction, packet, the JSON answer.
    let cases = [
        (
            "out",
            "icmp 198.19.1.1 -> 198.19.1.2 type 8",
            r#"{"verdict":"drop","rule":"no-ping-out","default":false}"#,
        ),
        (
            "in",
            "icmp 198.19.1.2 -> 198.19.1.1 type 8",
            r#"{"verdict":"drop","rule":null,"default":true}"#,
        ),
        (
            "out",
            "udp 198.19.1.1:5000 -> 198.19.1.2:53",
            r#"{"verdict":"pass","rule":null,"default":true}"#,
        ),
        (
            "in",
            "tcp 198.19.1.2:80 -> 198.19.1.1:40000",
            r#"{"verdict":"drop","rule":null,"default":true}"#,
        ),
        (
            "out",
            "tcp 198.19.1.1:40000 -> 198.19.1.2:80",
            r#"{"verdict":"pass","rule":"web-out","default":false}"#,
        ),
    ];
    for (direction, packet, want) in cases {
        assert_eq!(
            explain(direction, packet).trim(),
            want,
            "{direction} {packet}"
        );
    }
    let (code, stdout, _) = check(&file);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("  2. web-out pass out tcp dst_port 80 state\n"),
        "{stdout}"
    );
    std::fs::write(
        &file,
        "version: 1\ninterfaces:\n  wan0:\n    default: drop\n    rules:\n      - { id: a, action: drop, state: true }\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&file);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "{}:6:39: error: `state: true` needs `action: pass`",
            file.display()
        )),
        "{stderr}"
    );
}

/// Issue 16: `explain` names each limit rule the packet meets (its limit as written, its
/// bucket, its action over the limit), shows the first packet's verdict (under every limit)
/// and the one over every limit; `--over-limit` swaps them. Without a matching limit rule the
/// JSON is what it always was.
#[test]
fn explain_shows_each_limit_and_what_it_decides_over_it() {
    let (_dir, file) = rule_file(
        b"version: 1\ninterfaces:\n  lan0:\n    default: drop\n    rules:\n      - { id: ssh-flood, action: drop, protocol: tcp, dst_port: 22, limit: { over: 10/s, burst: 20, per: src } }\n      - { id: dns-cap, action: drop, protocol: udp, dst_port: 53, limit: { over: 50000/s } }\n      - { id: nets, action: pass, protocol: udp, limit: { over: 2mbit/s, burst: 64, per: src/24 } }\n      - { id: ssh, action: pass, protocol: tcp, dst_port: 22 }\n      - { id: dns, action: pass, protocol: udp, dst_port: 53 }\n",
    );
    let explain = |packet: &str, extra: &[&str]| {
        let out = Command::new(SMF_FIREWALL)
            .args(["explain", file.to_str().unwrap(), "--interface", "lan0"])
            .args(["--packet", packet])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let ssh = "tcp 198.18.0.7:40000 -> 198.19.0.1:22";
    let ssh_limit = r#"{"rule":"ssh-flood","line":6,"limit":"over 10/s, burst 20, per src","bucket":"src 198.18.0.7","over":"drop"}"#;
    let over_ssh = r#""over_limit":{"verdict":"drop","rule":"ssh-flood","default":false}"#;
    // Each row: the packet, extra options, the JSON answer.
    let cases = [
        (
            ssh,
            vec![],
            format!(
                r#"{{"verdict":"pass","rule":"ssh","default":false,"limits":[{ssh_limit}],{over_ssh}}}"#
            ),
        ),
        (
            ssh,
            vec!["--over-limit"],
            format!(
                r#"{{"verdict":"drop","rule":"ssh-flood","default":false,"limits":[{ssh_limit}],{over_ssh}}}"#
            ),
        ),
        // The 50-byte DNS frame is under both `dns-cap` and the byte limit of `nets`.
        (
            "udp 198.18.0.7:5000 -> 198.19.0.1:53",
            vec![],
            r#"{"verdict":"pass","rule":"dns","default":false,"limits":[{"rule":"dns-cap","line":7,"limit":"over 50000/s, burst 50000","bucket":"the rule","over":"drop"},{"rule":"nets","line":8,"limit":"over 2000000bit/s, burst 64 bytes, per src/24","bucket":"src 198.18.0.0/24","over":"pass"}],"over_limit":{"verdict":"drop","rule":"dns-cap","default":false}}"#.to_string(),
        ),
        // UDP to another port meets `nets` only, then the default.
        (
            "udp 198.18.3.4:5000 -> 198.19.0.1:9",
            vec!["--over-limit"],
            r#"{"verdict":"pass","rule":"nets","default":false,"limits":[{"rule":"nets","line":8,"limit":"over 2000000bit/s, burst 64 bytes, per src/24","bucket":"src 198.18.3.0/24","over":"pass"}],"over_limit":{"verdict":"pass","rule":"nets","default":false}}"#.to_string(),
        ),
        (
            "icmp 198.18.0.7 -> 198.19.0.1",
            vec![],
            r#"{"verdict":"drop","rule":null,"default":true}"#.to_string(),
        ),
    ];
    for (packet, extra, want) in cases {
        let mut args = vec!["--json"];
        args.extend(&extra);
        assert_eq!(explain(packet, &args).trim(), want, "{packet} {extra:?}");
    }
    // A frame larger than a byte limit's burst is over it even as the first packet: the IPv6
    // UDP frame with 8 bytes of payload is 70 bytes, the burst of `nets` 64.
    let text = explain("udp [2001:2::7]:5000 -> [2001:2::1]:9", &[]);
    assert_eq!(
        text,
        "lan0: udp [2001:2::7]:5000 -> [2001:2::1]:9\n\
         verdict: pass by rule `nets` (the first packet: every bucket full)\n  \
         rule `ssh-flood` (line 6): protocol does not match\n  \
         rule `dns-cap` (line 7): dst_port does not match\n  \
         rule `nets` (line 8): matches; limit over 2000000bit/s, burst 64 bytes, per src/24 (bucket: src 2001::/24): under it the packet goes on, over it this rule decides: pass\n\
         over every limit: pass by rule `nets`\n",
    );
    let text = explain(ssh, &[]);
    assert_eq!(
        text,
        "lan0: tcp 198.18.0.7:40000 -> 198.19.0.1:22\n\
         verdict: pass by rule `ssh` (the first packet: every bucket full)\n  \
         rule `ssh-flood` (line 6): matches; limit over 10/s, burst 20, per src (bucket: src 198.18.0.7): under it the packet goes on, over it this rule decides: drop\n  \
         rule `dns-cap` (line 7): protocol does not match\n  \
         rule `nets` (line 8): protocol does not match\n\
         over every limit: drop by rule `ssh-flood`\n",
    );
    let (code, stdout, stderr) = check(&file);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "    1. ssh-flood drop tcp dst_port 22 limit over 10/s, burst 20, per src\n    \
             2. dns-cap drop udp dst_port 53 limit over 50000/s, burst 50000\n    \
             3. nets pass udp limit over 2000000bit/s, burst 64 bytes, per src/24\n"
        ),
        "{stdout}"
    );
}

/// `rules/limits.yaml`, the example of rules/README.md's "Rate limits", is valid and explains
/// as the README shows.
#[test]
fn the_limits_example_is_valid_and_explains_as_documented() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/limits.yaml");
    let (code, stdout, stderr) = check(&example);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(
        stdout.contains(
            "    4. v6-bytes drop ipv6 any limit over 2000000bit/s, burst 65536 bytes, per src/64\n"
        ),
        "{stdout}"
    );
    let out = Command::new(SMF_FIREWALL)
        .args(["explain", example.to_str().unwrap(), "--interface", "wan0"])
        .args([
            "--packet",
            "tcp 198.18.0.7:40000 -> 198.19.0.1:22",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"verdict":"pass","rule":"ssh","default":false,"limits":[{"rule":"ssh-flood","line":11,"limit":"over 10/s, burst 20, per src","bucket":"src 198.18.0.7","over":"drop"}],"over_limit":{"verdict":"drop","rule":"ssh-flood","default":false}}"#
    );
}

/// `check` shows a rule's `tcp_flags`; `explain` says which flags the packet has when they
/// are why a rule did not match.
#[test]
fn explain_and_check_show_tcp_flags() {
    let (_dir, file) = rule_file(
        b"version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n      - { id: syn-new, action: drop, protocol: tcp, tcp_flags: [syn, \"!ack\"] }\n      - { id: web, action: pass, protocol: tcp, dst_port: 80 }\n",
    );
    let (code, stdout, _) = check(&file);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("  1. syn-new drop tcp tcp_flags syn,!ack\n"),
        "{stdout}"
    );
    let explain = |packet: &str| {
        let out = Command::new(SMF_FIREWALL)
            .args(["explain", file.to_str().unwrap(), "--interface", "lan0"])
            .args(["--packet", packet])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Each row: the packet, then the verdict line and the line about syn-new.
    let cases = [
        (
            "tcp 198.18.0.1:4000 -> 198.19.0.1:80 flags syn,ack",
            "verdict: pass by rule `web`\n  rule `syn-new` (line 6): tcp_flags does not match (the packet has syn,ack, the rule wants syn,!ack)\n",
        ),
        (
            "tcp 198.18.0.1:4000 -> 198.19.0.1:80",
            "verdict: pass by rule `web`\n  rule `syn-new` (line 6): tcp_flags does not match (the packet has no flags, the rule wants syn,!ack)\n",
        ),
        (
            "tcp 198.18.0.1:4000 -> 198.19.0.1:81 frag",
            "verdict: pass by the default (no rule matched)\n  rule `syn-new` (line 6): tcp_flags does not match (the packet has no TCP header, the rule wants syn,!ack)\n  rule `web` (line 7): dst_port does not match\n",
        ),
        (
            "tcp 198.18.0.1:4000 -> 198.19.0.1:80 flags SYN,ECE",
            "verdict: drop by rule `syn-new`\n",
        ),
    ];
    for (packet, want) in cases {
        let out = explain(packet);
        assert_eq!(out, format!("lan0: {packet}\n{want}"), "{packet}");
    }
}

/// A rule file in a fresh directory.
fn rule_file(text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// Never fall open: a 13 KB rule of 64 sources x 64 destinations x 2,000 ports is refused
/// by validation at the rule, before anything is expanded (it used to be "valid" after
/// minutes and gigabytes).
#[test]
fn check_refuses_a_rule_that_expands_beyond_the_cap_at_its_position() {
    let list = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(", ");
    let text = format!(
        "version: 1\ninterfaces:\n  lan0:\n    default: drop\n    rules:\n      - id: bomb\n        action: drop\n        protocol: tcp\n        src: [{}]\n        dst: [{}]\n        dst_port: [{}]\n",
        list(64, &|i| format!("198.18.{i}.0/24")),
        list(64, &|i| format!("198.19.{i}.0/24")),
        list(2000, &|i| (1000 + i).to_string()),
    );
    let (_dir, file) = rule_file(text.as_bytes());
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = check(&file);
    println!("check of {} bytes took {:?}", text.len(), started.elapsed());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:6:13: error: rule `bomb` expands to 8192000 entries (64 sources x 64 destinations x 2000 destination ports); at most 65535 per rule",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("valid"), "{stdout}");
}

/// More rules than the kernel has counter slots for is an error (exit 1), not "valid" with
/// a warning.
#[test]
fn check_refuses_more_rules_than_the_dataplane_counts() {
    let mut text =
        String::from("version: 1\ninterfaces:\n  lan0:\n    default: drop\n    rules:\n");
    for i in 0..=262_144 {
        text.push_str(&format!("      - {{id: r{i}, action: drop}}\n"));
    }
    let (_dir, file) = rule_file(text.as_bytes());
    let (code, stdout, stderr) = check(&file);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:262150:14: error: rule `r262144` on lan0 is rule 262145 of the file; the dataplane counts at most 262144 rules",
            file.display()
        )),
        "{stderr}"
    );
}

// Each row: a rule file's bytes, and the error `check` reports (after the file name).
#[test]
fn check_refuses_unclean_input_with_positions() {
    let head = "version: 1\ninterfaces:\n  lan0:\n    default: drop\n    rules:\n";
    let cases: [(Vec<u8>, &str); 4] = [
        (
            format!("{head}      - {{ id: a, action: drop, src: 198.18.010.0/24 }}\n").into_bytes(),
            ":6:37: error: `198.18.010.0/24` is not an IP address or CIDR",
        ),
        (
            format!("{head}      - {{ id: a, action: pass, state: yes }}\n").into_bytes(),
            ":6:39: error: expected true or false",
        ),
        (
            format!("{head}# caf\u{e9}\n      - {{ id: a, action: drop }}\n")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0xa9 { 0x28 } else { b })
                .collect(),
            ":6:6: error: invalid UTF-8 at byte 65",
        ),
        (
            b"version: 1\ninterfaces:\n  \"lan\\0\": {default: drop}\n".to_vec(),
            ":3:12: error: `lan\\0` is not a valid interface name",
        ),
    ];
    for (bytes, want) in cases {
        let (_dir, file) = rule_file(&bytes);
        let (code, _, stderr) = check(&file);
        assert_eq!(code, Some(1), "{want}: {stderr}");
        assert!(
            stderr.contains(&format!("{}{want}", file.display())),
            "{want}: {stderr}"
        );
    }
}

/// A rule over a large set prints the set's name and size, not its elements: `check` of a
/// 30,000-network blocklist is a few lines, not megabytes.
#[test]
fn check_prints_a_set_by_name_and_size() {
    let hosts: Vec<String> = (0..30_000u32)
        .map(|i| std::net::Ipv4Addr::from(0xC612_0000 + i).to_string())
        .collect();
    let text = format!(
        "version: 1\nsets:\n  blocklist: [{}]\n  admin: [22, 2222]\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n      - {{ id: block, action: drop, src: $blocklist }}\n      - {{ id: ssh, action: drop, protocol: tcp, src: [198.19.0.0/16, $blocklist], dst_port: $admin }}\n",
        hosts.join(", ")
    );
    let (_dir, file) = rule_file(text.as_bytes());
    let (code, stdout, stderr) = check(&file);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("  1. block drop ipv4 any src $blocklist (30,000 networks)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  2. ssh drop ipv4 tcp src 198.19.0.0/16,$blocklist (30,000 networks) dst_port $admin (2 ports)\n"
        ),
        "{stdout}"
    );
    assert!(stdout.len() < 1000, "{} bytes of output", stdout.len());
}

/// `--help` lists the commands in the order an operator needs them: the daemon and its
/// rules, watching it, the contract store and its invoices, taking it down, and `replay` last.
#[test]
fn help_lists_the_commands_in_the_order_an_operator_needs_them() {
    let out = Command::new(SMF_FIREWALL).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "run",
            "check",
            "explain",
            "reload",
            "status",
            "top",
            "trace",
            "conntrack",
            "license",
            "contracts",
            "billing",
            "handover",
            "unload",
            "replay",
            "help"
        ],
        "{help}"
    );
}
