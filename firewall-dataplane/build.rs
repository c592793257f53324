//! Builds the XDP programs in `../firewall-ebpf` with the nightly toolchain
//! (`cargo +nightly build -Z build-std=core --target bpfel-unknown-none --release`) and copies
//! the objects into OUT_DIR, so that the `smf-firewall` binary embeds them.
//!
//! The eBPF crate is its own workspace with its own target directory: a nested cargo on the
//! same target directory would wait on the lock that the outer cargo holds.

use std::{env, fs, path::PathBuf, process::Command};

const PROGRAMS: [&str; 3] = ["smf-firewall", "xdp-pass", "bench-programs"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let ebpf_dir = manifest_dir.join("../firewall-ebpf");
    for input in ["src", "Cargo.toml", "Cargo.lock", "../firewall-common/src"] {
        println!("cargo::rerun-if-changed={}", ebpf_dir.join(input).display());
    }

    let target_dir = ebpf_dir.join("target");
    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", "nightly", "cargo", "build", "--release", "--bins"])
        .args(["-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir);
    // The outer cargo's toolchain and flags are for the host, not for BPF.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cargo.env_remove(key);
    }
    // BTF lets the kernel and bpftool describe our maps' keys and values.
    cargo.env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Cdebuginfo=2\x1f-Clink-arg=--btf",
    );

    let status = cargo.status().unwrap_or_else(|err| {
        panic!("cannot run {cargo:?}: {err}; run `cargo xtask setup` to install the toolchain")
    });
    assert!(
        status.success(),
        "building the XDP programs failed ({status}); `cargo xtask setup` installs nightly rust-src and bpf-linker"
    );
    for program in PROGRAMS {
        let built = target_dir.join("bpfel-unknown-none/release").join(program);
        fs::copy(&built, out_dir.join(program))
            .unwrap_or_else(|err| panic!("cannot copy {}: {err}", built.display()));
    }
}
