//! Child processes, killed and reaped on drop, and commands whose failure is an error.

use std::{
    io,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A child process, killed and reaped on drop unless it was waited for.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
}

impl Process {
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (e.g. `SIGTERM`) to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.id() as i32);
        nix::sys::signal::kill(pid, signal).map_err(io::Error::from)
    }

    /// Waits for the process to exit and returns its status and output.
    pub fn wait(mut self) -> io::Result<Output> {
        let child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("already waited"))?;
        child.wait_with_output()
    }

    /// Sends SIGTERM and gives the process `grace` to exit on its own (a daemon detaches and
    /// unpins then); kills it after that. Returns how it ended.
    pub fn terminate(mut self, grace: Duration) -> io::Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| io::Error::other("already waited"))?;
        // A child that `exited` reaped has no pid any more: it may be another process's.
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(io::Error::from)?;
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // On an error here, `Drop` still kills and reaps it.
        child.kill()?;
        child.wait()
    }

    /// Has the process exited already? (Reaps it if so; `wait` still returns its output.)
    pub fn exited(&mut self) -> io::Result<bool> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?.is_some()),
            None => Ok(true),
        }
    }
}

impl From<Child> for Process {
    fn from(child: Child) -> Self {
        Process { child: Some(child) }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn command(program: &str, args: &[&str]) -> io::Result<Output> {
    checked(Command::new(program).args(args))
}

pub(crate) fn checked(cmd: &mut Command) -> io::Result<Output> {
    let output = cmd.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
