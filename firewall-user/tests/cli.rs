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
