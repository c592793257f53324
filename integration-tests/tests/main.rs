//! The root-only tests: kernel tests that run frames through the real XDP and TC programs with
//! BPF_PROG_TEST_RUN, and end-to-end tests that run the real daemon in network namespaces with
//! real traffic. One test binary; `cargo xtask test` builds `smf-firewall` and runs it with
//! `SMF_FIREWALL_KERNEL_TESTS=1`. Each test says why it skips (no root) and fails instead under
//! `CI=true`.

use std::{path::PathBuf, sync::OnceLock};

mod common;
mod conntrack;
mod conntrack_e2e;
mod differential;
mod drop_log_e2e;
mod drop_log_kernel;
mod e2e;
mod egress;
mod egress_e2e;
mod grants_e2e;
mod instances_e2e;
mod interfaces_e2e;
mod kernel;
mod license_e2e;
mod limits_e2e;
mod limits_kernel;
mod metering_e2e;
mod metering_kernel;
mod operations_e2e;
mod package_e2e;
mod replay;
mod resilience_e2e;
mod swap;
mod tcp_flags_kernel;
mod trace_e2e;
mod trace_kernel;

/// The `smf-firewall` binary under test: `SMF_FIREWALL_BIN` (set by `cargo xtask test`, which
/// builds it first), else the workspace's debug build.
pub fn smf_firewall() -> &'static str {
    static BINARY: OnceLock<String> = OnceLock::new();
    BINARY.get_or_init(|| {
        let path = std::env::var_os("SMF_FIREWALL_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/smf-firewall"),
            PathBuf::from,
        );
        assert!(
            path.is_file(),
            "{} is missing: run `cargo xtask test`, or `cargo build -p firewall-user` first",
            path.display()
        );
        path.to_string_lossy().into_owned()
    })
}
