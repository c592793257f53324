//! The kernel side of smf-firewall, seen from user space: the embedded XDP and TC egress
//! objects and their map layout (`object`), loading them and filling their maps (`loader`),
//! what stays pinned on the BPF filesystem (`pins`), the connection-tracking maps and their
//! sweep (`conntrack`), and captures run through the real program (`replay`). All `unsafe` of
//! the user side lives in this crate, each block with its SAFETY reason.

pub mod conntrack;
pub mod loader;
pub mod object;
pub mod pins;
pub mod replay;
