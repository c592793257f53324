//! A daemon's files for one test: a temporary directory (config, rules, runtime_dir) and a
//! pin directory of its own on the BPF filesystem, so that daemons of tests running in
//! parallel never share pins. Both go on drop, also after a `kill -9` left pins behind.

use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use crate::{
    netns::{NEXT_ID, NetNs},
    process::Process,
    scrape,
};

pub struct DaemonDir {
    dir: tempfile::TempDir,
    pins: PathBuf,
}

impl DaemonDir {
    pub fn new() -> io::Result<DaemonDir> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(DaemonDir {
            dir: tempfile::tempdir()?,
            pins: PathBuf::from(format!("/sys/fs/bpf/smf-test-{}-{id}", std::process::id())),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pin_path(&self) -> &Path {
        &self.pins
    }

    /// Config lines that keep the daemon's pins and runtime files in here.
    pub fn operations_yaml(&self) -> String {
        format!(
            "pin_path: {}\nruntime_dir: {}\n",
            self.pins.display(),
            self.dir.path().join("run").display()
        )
    }

    /// Writes `rules.yaml` and `config.yaml` (with `operations_yaml` appended); returns the
    /// config's path.
    pub fn write(&self, config: &str, rules: &str) -> io::Result<PathBuf> {
        fs::write(self.dir.path().join("rules.yaml"), rules)?;
        let path = self.dir.path().join("config.yaml");
        fs::write(&path, format!("{config}{}", self.operations_yaml()))?;
        Ok(path)
    }
}

impl Drop for DaemonDir {
    fn drop(&mut self) {
        remove_pins(&self.pins);
    }
}

/// Removes a daemon's pin directory, if it left one (a `kill -9`, a daemon killed before its
/// signal handlers were up); unpinning its links detaches them. Failures are only reported:
/// this runs in `Drop`s.
pub fn remove_pins(pins: &Path) {
    match fs::remove_dir_all(pins) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => eprintln!("testbed: cannot remove {}: {error}", pins.display()),
    }
}

/// Starts `BINARY run --config CONFIG` (the daemon) in `ns` and waits until it serves
/// `/metrics` on `metrics`; fails with its output if it exits first, or after 15 seconds.
pub fn start_daemon(
    ns: &NetNs,
    binary: &str,
    config: &Path,
    metrics: SocketAddr,
) -> io::Result<Process> {
    let config = config
        .to_str()
        .ok_or_else(|| io::Error::other("config path"))?;
    ns.start_until(binary, &["run", "--config", config], || {
        scrape(ns, metrics).is_ok()
    })
}
