//! The contract commands through the real binary, for the CLI tests that need a store.

use std::process::Command;

pub const SMF_FIREWALL: &str = env!("CARGO_BIN_EXE_smf-firewall");

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `smf-firewall ARGS --db DB`.
pub fn smf(db: &str, args: &[&str]) -> Out {
    let out = Command::new(SMF_FIREWALL)
        .args(args)
        .args(["--db", db])
        .output()
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(db: &str, args: &[&str]) -> String {
    let out = smf(db, args);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    out.stdout
}
