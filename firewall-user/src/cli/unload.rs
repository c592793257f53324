//! `smf-firewall unload`: detach and unpin what a daemon left behind.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    config::{DEFAULT_CONFIG, Operations},
    control::{self, Request},
    instance_lock::{InstanceLock, LockError},
};
use anyhow::Context as _;
use firewall_dataplane::pins::Pins;

use super::status::STATUS_TIMEOUT;

/// Detach and unpin whatever a daemon left behind (after `keep_attached_on_exit` or a
/// kill -9). Refuses while the daemon is running.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration whose `pin_path` and `runtime_dir` to clear.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // After an uninstall the config may be gone, the pins not: the defaults find those.
        let ops = if !self.config.exists() && self.config == Path::new(DEFAULT_CONFIG) {
            eprintln!(
                "{DEFAULT_CONFIG} does not exist: using the default pin_path and runtime_dir"
            );
            Operations::default()
        } else {
            super::config::load(&self.config)?.operations
        };
        let socket = ops.control_socket();
        if control::call(&socket, Request::Status, STATUS_TIMEOUT).is_ok() {
            anyhow::bail!(
                "the daemon is running (it answers on {}); stop it first (systemctl stop smf-firewall, or SIGTERM)",
                socket.display()
            );
        }
        // The lock is the authority: a daemon that does not answer (busy, or its socket
        // removed) still holds it, and so does one still starting.
        let _lock = match InstanceLock::acquire_existing(&ops) {
            Ok(lock) => lock,
            Err(error @ LockError::Held { .. }) => {
                anyhow::bail!("the daemon is running: {error}")
            }
            Err(error) => return Err(error.into()),
        };
        let pins = Pins::new(&ops.pin_path);
        let removed = pins
            .remove_all()
            .with_context(|| format!("cannot unpin everything under {}", pins.root().display()))?;
        for interface in &removed.links {
            println!("detached XDP from {interface}");
        }
        for dir in &removed.maps_dirs {
            println!("unpinned maps {}", dir.display());
        }
        for leftover in [ops.state_file(), socket] {
            match std::fs::remove_file(&leftover) {
                Ok(()) => println!("removed {}", leftover.display()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).context(format!("cannot remove {}", leftover.display()));
                }
            }
        }
        if removed.links.is_empty() && removed.maps_dirs.is_empty() {
            println!("nothing pinned under {}", pins.root().display());
        }
        Ok(ExitCode::SUCCESS)
    }
}
