//! `smf-firewall handover`: the running daemon exits leaving everything attached, for the
//! next one to take over (the package's upgrade, make-before-break).

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{
    config::DEFAULT_CONFIG,
    control::{self, Answer, Request},
    instance_lock::{InstanceLock, LockError},
};

use super::status::STATUS_TIMEOUT;

/// Make the running daemon exit leaving XDP attached and its maps and links pinned, as
/// `keep_attached_on_exit: true` does for this one stop; waits until it has exited. The
/// kernel keeps enforcing the last rules; the next `smf-firewall run` takes them over
/// without a gap (the Debian package's upgrade does this). Exit 0 once it has exited, 1
/// when no daemon answers or it does not exit in time.
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's configuration: says where its control socket is.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// How long to wait for the daemon to exit.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let ops = super::config::load(&self.config)?.operations;
        let pid = match control::call(&ops.control_socket(), Request::Handover, STATUS_TIMEOUT)?
            .answer()?
        {
            Answer::Status(status) => status.pid,
            Answer::Failed(failure) => bail!("the daemon refused: {}", failure.error),
            Answer::Reloaded(_) => bail!("the daemon answered the handover with a reload"),
        };
        // It has exited when its instance lock is free (the kernel drops it at exit).
        let deadline = Instant::now() + self.timeout;
        loop {
            match InstanceLock::acquire_existing(&ops) {
                Ok(_free) => break,
                Err(LockError::Held { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error @ LockError::Held { .. }) => {
                    bail!(
                        "the daemon (pid {pid}) has not exited after {:?}: {error}",
                        self.timeout
                    )
                }
                Err(error) => return Err(error.into()),
            }
        }
        println!(
            "the daemon (pid {pid}) exited; XDP stays attached and the rules enforced (pinned under {}): `smf-firewall run` takes over",
            ops.pin_path.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
