//! The one BPF_PROG_TEST_RUN harness: a frame through the loaded XDP program (arriving) or the
//! TC egress program (leaving), without a context, so the kernel runs it as if the frame
//! arrived on (or left by) loopback, ifindex [`LOOPBACK`]: tests, replay and benchmarks bind
//! their rules there. Used by `replay`, the root-only integration tests and the benchmarks.

use std::time::Duration;

use aya::programs::{ProgramError, TestRun, TestRunOptions, TestRunResult};
use firewall_common::Verdict;
use firewall_rules::Direction;

use crate::loader::{Capacity, Dataplane, LoaderError};

/// The ifindex BPF_PROG_TEST_RUN pretends a frame arrives on or leaves by when it is given no
/// context: loopback's.
pub const LOOPBACK: u32 = 1;
/// XDP_DROP, the XDP program's action for a dropped frame.
pub const XDP_DROP: u32 = 1;
/// XDP_PASS, the XDP program's action for a passed frame.
pub const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (TCX_NEXT): the egress program passes the packet on to later programs.
pub const TC_NEXT: u32 = u32::MAX;
/// TC_ACT_SHOT: the egress program drops the packet.
pub const TC_SHOT: u32 = 2;

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The program's return value: an XDP action (`XDP_DROP`, `XDP_PASS`) or a TC action
    /// (`TC_SHOT`, `TC_NEXT`).
    pub action: u32,
    /// The kernel's measured time per run, averaged over the repeats.
    pub duration: Duration,
}

impl Outcome {
    /// The XDP program's verdict: drop for `XDP_DROP`, pass for any other action.
    pub fn verdict(&self) -> Verdict {
        if self.action == XDP_DROP {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    }
}

/// Runs `frame` through `program` `repeat` times in one BPF_PROG_TEST_RUN, without a context.
/// For programs that are not a [`Dataplane`]'s own, e.g. a second handle from a pin or a
/// benchmark's trivial program.
pub fn run<P>(program: &P, frame: &[u8], repeat: u32) -> Result<Outcome, ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let options = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    };
    let result = program.test_run(options)?;
    Ok(Outcome {
        action: result.return_value,
        duration: result.duration,
    })
}

impl Dataplane {
    /// Loads the programs with room for `capacity`, licensed (so the rules' verdicts apply: a
    /// fresh program passes everything) and with interface slot 0 bound to [`LOOPBACK`], where
    /// BPF_PROG_TEST_RUN runs frames. No rules are installed yet.
    pub fn load_for_test_run(capacity: Capacity) -> Result<Dataplane, LoaderError> {
        let mut dataplane = Dataplane::load(capacity)?;
        dataplane.set_enforcing(true)?;
        dataplane.bind(LOOPBACK, 0)?;
        Ok(dataplane)
    }

    /// Runs `frame` once through the XDP program (`In`) or the TC egress program (`Out`).
    pub fn run(&mut self, frame: &[u8], direction: Direction) -> Result<Outcome, LoaderError> {
        self.run_repeated(frame, direction, 1)
    }

    /// Runs `frame` `repeat` times in one BPF_PROG_TEST_RUN through the XDP program (`In`) or
    /// the TC egress program (`Out`); the outcome is the last run's action and the average
    /// time.
    pub fn run_repeated(
        &mut self,
        frame: &[u8],
        direction: Direction,
        repeat: u32,
    ) -> Result<Outcome, LoaderError> {
        match direction {
            Direction::In => run(self.program()?, frame, repeat),
            Direction::Out => run(self.egress_program()?, frame, repeat),
        }
        .map_err(LoaderError::Program)
    }
}
