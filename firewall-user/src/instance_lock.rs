//! One daemon per config: an exclusive `flock` on `runtime_dir/lock` and on the `pin_path`
//! directory itself, taken before any pin is touched and held for the daemon's whole life
//! (the kernel drops it when the process ends, however it ends).
//!
//! The runtime lock file holds the owner's pid. The pin directory lives on the BPF
//! filesystem, which has no regular files: its owner is found in `/proc/locks` by the
//! directory's device and inode. Two daemons on one `pin_path` would share maps and links,
//! so the second must never start, whatever its `runtime_dir`; `unload` takes the same locks.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use crate::config::Operations;

/// The name of the lock file in `runtime_dir`.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another smf-firewall (pid {}) holds {}: only one daemon may use a runtime_dir and a pin_path; stop it first",
        holder.map_or_else(|| "unknown".to_string(), |pid| pid.to_string()),
        path.display()
    )]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl LockError {
    /// The pid of the process that holds the lock, if known.
    pub fn holder(&self) -> Option<u32> {
        match self {
            LockError::Held { holder, .. } => *holder,
            LockError::Io { .. } => None,
        }
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Both locks, held until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _runtime: Option<File>,
    _pins: Option<File>,
    /// The pin directories this process made (outermost first): a failed start removes
    /// those, if empty, and nothing else.
    created: Vec<PathBuf>,
}

impl InstanceLock {
    /// Locks `runtime_dir/lock` (writing our pid into it), then the `pin_path` directory,
    /// making both if missing. Fails with the holder's pid if another process has either.
    pub fn acquire(ops: &Operations) -> Result<InstanceLock, LockError> {
        let runtime = lock_runtime(&ops.runtime_dir, true)?.expect("made when missing");
        let mut created = Vec::new();
        let mut missing = Vec::new();
        let mut dir = ops.pin_path.as_path();
        while !dir.exists() {
            missing.push(dir.to_path_buf());
            dir = dir.parent().unwrap_or(Path::new("/"));
        }
        for dir in missing.into_iter().rev() {
            match fs::create_dir(&dir) {
                Ok(()) => created.push(dir),
                // Made by another process at the same time: not ours to remove.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(at(&dir)(error)),
            }
        }
        let pins = lock_dir(&ops.pin_path)?;
        Ok(InstanceLock {
            _runtime: Some(runtime),
            _pins: Some(pins),
            created,
        })
    }

    /// For `unload`: the same locks, without making anything that is not there (no daemon
    /// can hold a lock on a directory that does not exist).
    pub fn acquire_existing(ops: &Operations) -> Result<InstanceLock, LockError> {
        let runtime = lock_runtime(&ops.runtime_dir, false)?;
        let pins = match ops.pin_path.is_dir() {
            true => Some(lock_dir(&ops.pin_path)?),
            false => None,
        };
        Ok(InstanceLock {
            _runtime: runtime,
            _pins: pins,
            created: Vec::new(),
        })
    }

    /// Marks directories this process made under the locked pin directory.
    pub fn made(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        self.created.extend(dirs);
    }

    /// After a failed start, still under the lock: removes the directories this process
    /// made that are still empty, innermost first. Pins made by another daemon are never
    /// touched.
    pub fn remove_created(&self) {
        for dir in self.created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn lock_runtime(dir: &Path, create: bool) -> Result<Option<File>, LockError> {
    if !create && !dir.is_dir() {
        return Ok(None);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at(dir))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(at(&path))?;
    if !try_flock(&file).map_err(at(&path))? {
        let mut text = String::new();
        let holder = file
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| text.trim().parse().ok())
            .or_else(|| holder_in_proc_locks(&path));
        return Err(LockError::Held { path, holder });
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(at(&path))?;
    Ok(Some(file))
}

fn lock_dir(dir: &Path) -> Result<File, LockError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(at(dir))?;
    if !try_flock(&file).map_err(at(dir))? {
        return Err(LockError::Held {
            path: dir.to_path_buf(),
            holder: holder_in_proc_locks(dir),
        });
    }
    Ok(file)
}

/// `flock(LOCK_EX | LOCK_NB)`: false if another open file holds it.
fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: the fd is open for as long as `file` lives; flock touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        error if error.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        error => Err(error),
    }
}

/// The pid of the process with a `flock` on `path`, from `/proc/locks`.
fn holder_in_proc_locks(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    find_holder(&locks, meta.dev(), meta.ino())
}

/// In `/proc/locks` text, the pid of a FLOCK on the file with device `dev` and inode `ino`
/// (written `MAJOR:MINOR:INODE`, the device numbers in hex, the inode in decimal).
fn find_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 4242 00:1c:2345 0 EOF"; a waiter has "->" after the id.
        let fields: Vec<&str> = fields.into_iter().filter(|f| *f != "->").collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let found_major = u32::from_str_radix(id.next()?, 16).ok()?;
        let found_minor = u32::from_str_radix(id.next()?, 16).ok()?;
        let found_ino: u64 = id.next()?.parse().ok()?;
        (found_major == major && found_minor == minor && found_ino == ino).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(dir: &Path) -> Operations {
        Operations {
            pin_path: dir.join("pins"),
            runtime_dir: dir.join("run"),
            ..Operations::default()
        }
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(&ops(dir.path())).unwrap();
        let error = InstanceLock::acquire(&ops(dir.path())).unwrap_err();
        assert_eq!(error.holder(), Some(std::process::id()), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        assert!(InstanceLock::acquire_existing(&ops(dir.path())).is_err());
        drop(first);
        assert!(InstanceLock::acquire(&ops(dir.path())).is_ok());
    }

    #[test]
    fn the_pin_directory_alone_is_locked_too() {
        let dir = tempfile::tempdir().unwrap();
        let _first = InstanceLock::acquire(&ops(dir.path())).unwrap();
        let other = Operations {
            runtime_dir: dir.path().join("other-run"),
            ..ops(dir.path())
        };
        let error = InstanceLock::acquire(&other).unwrap_err();
        assert!(
            matches!(&error, LockError::Held { path, .. } if path == &dir.path().join("pins")),
            "{error}"
        );
        // Found in /proc/locks by the directory's inode.
        assert_eq!(error.holder(), Some(std::process::id()), "{error}");
    }

    #[test]
    fn a_failed_start_removes_only_what_it_made() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pins")).unwrap();
        let mut lock = InstanceLock::acquire(&Operations {
            pin_path: dir.path().join("pins/deeper"),
            ..ops(dir.path())
        })
        .unwrap();
        lock.made([dir.path().join("pins/deeper/links")]);
        fs::create_dir(dir.path().join("pins/deeper/links")).unwrap();
        lock.remove_created();
        assert!(!dir.path().join("pins/deeper").exists());
        assert!(dir.path().join("pins").exists(), "not made by this lock");
    }

    #[test]
    fn proc_locks_lines_are_read_by_device_and_inode() {
        let text = "1: POSIX  ADVISORY  WRITE 10 00:1c:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 00:1c:2345 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 4343 00:1c:2345 0 EOF\n";
        let dev = libc::makedev(0, 0x1c);
        assert_eq!(find_holder(text, dev, 2345), Some(4242));
        assert_eq!(find_holder(text, dev, 77), None, "a POSIX lock is not ours");
        assert_eq!(find_holder(text, libc::makedev(0, 0x1d), 2345), None);
    }
}
