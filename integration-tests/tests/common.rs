//! What the root-only tests share: frames through the kernel programs of a `Dataplane`
//! (firewall_dataplane's BPF_PROG_TEST_RUN harness) with every error a test failure.

use firewall_dataplane::loader::{Capacity, Dataplane};
use firewall_rules::Direction;

/// A licensed dataplane with room for the default capacity, slot 0 bound to loopback (where
/// BPF_PROG_TEST_RUN runs frames), no rules yet.
pub fn dataplane() -> Dataplane {
    Dataplane::load_for_test_run(Capacity::default()).expect("the verifier accepts the programs")
}

/// The XDP program's action on `frame`.
pub fn run(dataplane: &mut Dataplane, frame: &[u8]) -> u32 {
    dataplane.run(frame, Direction::In).unwrap().action
}

/// The TC egress program's action on `frame`.
pub fn run_egress(dataplane: &mut Dataplane, frame: &[u8]) -> u32 {
    dataplane.run(frame, Direction::Out).unwrap().action
}
