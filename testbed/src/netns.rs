//! Network namespaces and veth pairs, removed on drop.

use std::{
    fs::File,
    io,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sched::{CloneFlags, setns},
    sys::signal::Signal,
};

use crate::process::{Process, checked, command};

/// Makes names unique within this process (they also carry its pid).
pub(crate) static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// How long a started process may take to become ready before a test gives up on it.
pub const READY_LIMIT: Duration = Duration::from_secs(90);

/// A network namespace, deleted (with every link in it) on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `smf-<role>-<pid>-<n>` with its loopback up.
    pub fn new(role: &str) -> io::Result<NetNs> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("smf-{role}-{}-{id}", std::process::id());
        command("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS ARGS...` and fails with its stderr if it fails.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        command("ip", &full)
    }

    /// A command that runs inside this namespace. `nsenter --net` rather than `ip netns exec`:
    /// the latter also remounts /sys, which hides the BPF filesystem where the daemon pins.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs a program inside the namespace and fails with its stderr if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        checked(self.command(program).args(args))
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv4.ip_forward=1`.
    pub fn sysctl(&self, setting: &str) -> io::Result<()> {
        self.exec("sysctl", &["-qw", setting]).map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens live here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Spawns a long-running process inside the namespace; it is killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> io::Result<Process> {
        let child = self
            .command(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Process::from(child))
    }

    /// Spawns a long-running process inside the namespace and waits until `ready` says it
    /// serves; fails with its output if it exits first. A process that is still starting is
    /// given up to [`READY_LIMIT`]: on a loaded machine loading and verifying the XDP program
    /// alone can take many seconds, and a ready process returns at once whatever the limit.
    pub fn start_until(
        &self,
        program: &str,
        args: &[&str],
        ready: impl Fn() -> bool,
    ) -> io::Result<Process> {
        let mut process = self.spawn(program, args)?;
        let start = Instant::now();
        while !ready() {
            if process.exited()? {
                let output = process.wait()?;
                return Err(io::Error::other(format!("{program} exited: {output:?}")));
            }
            if start.elapsed() > READY_LIMIT {
                // Its output says how far it got.
                process.signal(Signal::SIGKILL)?;
                let output = process.wait()?;
                return Err(io::Error::other(format!(
                    "{program} did not become ready in {} s: {output:?}",
                    READY_LIMIT.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(process)
    }

    /// Does the XDP program show up on `interface` (in any mode)?
    pub fn has_xdp(&self, interface: &str) -> io::Result<bool> {
        let out = self.ip(&["-details", "link", "show", "dev", interface])?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.contains("prog/xdp"))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = command("ip", &["netns", "delete", &self.name]) {
            eprintln!("testbed: cannot delete namespace {}: {err}", self.name);
        }
    }
}

/// Connects `a_if` in `a` to `b_if` in `b` with a veth pair and brings both ends up.
/// The pair goes away with either namespace.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> io::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
