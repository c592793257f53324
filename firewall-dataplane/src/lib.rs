//! The kernel side of smf-firewall, seen from user space: the embedded XDP and TC egress
//! objects and their map layout (`object`), loading them and filling their maps (`loader`),
//! what stays pinned on the BPF filesystem (`pins`), the connection-tracking maps and their
//! sweep (`conntrack`), presence filter (`presence`) and clock (`clock`), captures run through the real program (`replay`), and the one
//! BPF_PROG_TEST_RUN harness (`test_run`). All `unsafe` of
//! the user side lives in this crate, each block with its SAFETY reason.

pub mod clock;
pub mod conntrack;
pub mod limits;
pub mod loader;
pub mod object;
pub mod pins;
mod presence;
pub mod replay;
pub mod test_run;
