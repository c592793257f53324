//! Ctrl-C and SIGTERM as a request to stop: a flag that long-running tools (the demo, the
//! benchmarks) poll, so that they return an error and every guard's `Drop` removes what it
//! made. Killed by the default disposition, a process would skip its `Drop`s and leave its
//! namespaces, pins and directories behind.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::Relaxed);
}

/// From now on SIGINT and SIGTERM set the stop flag instead of ending the process. A second
/// signal does the same, so it cannot skip the clean-up either.
pub fn install_stop_handler() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Has SIGINT or SIGTERM arrived since `install_stop_handler`?
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}
