//! What the daemon leaves on the BPF filesystem so that the kernel goes on enforcing while the
//! daemon is gone, and so that the next daemon can take over without a gap:
//!
//! ```text
//! /sys/fs/bpf/smf-firewall/            (`pin_path` in the config)
//!   links/<interface>                  the XDP link of each interface
//!   egress/<interface>                 the TC egress (TCX) link of each interface
//!   maps-<layout>-<seq>/<MAP>          the program's maps
//! ```
//!
//! `<layout>` hashes the maps' definitions in the program object: a binary whose maps differ
//! does not adopt these, it loads its own beside them and swaps make-before-break. `<seq>`
//! tells apart two sets of the same layout (the rules outgrew the old one's capacity).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Directories of the XDP and the TC egress links.
const LINKS: &str = "links";
const EGRESS: &str = "egress";

/// `statfs(2)` magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{} is not on a BPF filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or set `pin_path` to a directory on one",
        .0.display()
    )]
    NotBpffs(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One set of pinned maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsDir {
    pub path: PathBuf,
    pub layout: String,
    pub seq: u64,
}

/// The pin directory of one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Pins { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directories, after checking that they are on a BPF filesystem (pins
    /// anywhere else would fail, or vanish with a mount namespace). Returns those it made,
    /// outermost first, so that a failed start can remove what it made and nothing else.
    pub fn prepare(&self) -> Result<Vec<PathBuf>, PinError> {
        let mut existing = self.root.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        if !on_bpffs(existing) {
            return Err(PinError::NotBpffs(self.root.clone()));
        }
        let mut made = Vec::new();
        for path in [
            self.root.clone(),
            self.root.join(LINKS),
            self.root.join(EGRESS),
        ] {
            if !path.exists() {
                fs::create_dir_all(&path).map_err(at(&path))?;
                made.push(path);
            }
        }
        Ok(made)
    }

    pub fn link(&self, interface: &str) -> PathBuf {
        self.root.join(LINKS).join(interface)
    }

    pub fn egress_link(&self, interface: &str) -> PathBuf {
        self.root.join(EGRESS).join(interface)
    }

    /// Interfaces with a pinned link (XDP, egress or both).
    pub fn linked_interfaces(&self) -> Result<Vec<String>, PinError> {
        let mut names = names_in(&self.root.join(LINKS))?;
        names.extend(names_in(&self.root.join(EGRESS))?);
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every set of pinned maps, oldest first.
    pub fn maps_dirs(&self) -> Result<Vec<MapsDir>, PinError> {
        let mut dirs: Vec<MapsDir> = names_in(&self.root)?
            .into_iter()
            .filter_map(|name| {
                let (layout, seq) = name.strip_prefix("maps-")?.rsplit_once('-')?;
                Some(MapsDir {
                    path: self.root.join(&name),
                    layout: layout.to_string(),
                    seq: seq.parse().ok()?,
                })
            })
            .collect();
        dirs.sort_by_key(|dir| dir.seq);
        Ok(dirs)
    }

    /// A new, empty directory for maps of `layout`.
    pub fn new_maps_dir(&self, layout: &str) -> Result<PathBuf, PinError> {
        let seq = self.maps_dirs()?.last().map_or(0, |dir| dir.seq + 1);
        let path = self.root.join(format!("maps-{layout}-{seq}"));
        fs::create_dir_all(&path).map_err(at(&path))?;
        Ok(path)
    }

    /// Unpins the links of `interface`: the kernel detaches them once no process holds them.
    pub fn unpin_link(&self, interface: &str) -> Result<(), PinError> {
        for path in [self.link(interface), self.egress_link(interface)] {
            match fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(at(&path)(error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Unpins a set of maps; the kernel frees them once no program uses them.
    pub fn remove_maps_dir(&self, dir: &Path) -> Result<(), PinError> {
        remove_dir_with_files(dir)
    }

    /// Unpins everything: links first (detaching XDP), then maps. Returns what was there.
    pub fn remove_all(&self) -> Result<Removed, PinError> {
        let mut removed = Removed::default();
        if !self.root.exists() {
            return Ok(removed);
        }
        for interface in self.linked_interfaces()? {
            self.unpin_link(&interface)?;
            removed.links.push(interface);
        }
        for dir in self.maps_dirs()? {
            self.remove_maps_dir(&dir.path)?;
            removed.maps_dirs.push(dir.path);
        }
        for dir in [LINKS, EGRESS] {
            let path = self.root.join(dir);
            if path.exists() {
                fs::remove_dir(&path).map_err(at(&path))?;
            }
        }
        fs::remove_dir(&self.root).map_err(at(&self.root))?;
        Ok(removed)
    }
}

/// What `Pins::remove_all` unpinned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub links: Vec<String>,
    pub maps_dirs: Vec<PathBuf>,
}

fn on_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c_path is NUL-terminated; statfs writes only into `stat`.
    if unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type is i64 on x86_64 but not on every target"
    )]
    let magic = stat.f_type as i64;
    magic == BPF_FS_MAGIC
}

fn names_in(dir: &Path) -> Result<Vec<String>, PinError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(at(dir)(error)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(at(dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn remove_dir_with_files(dir: &Path) -> Result<(), PinError> {
    for name in names_in(dir)? {
        let path = dir.join(name);
        fs::remove_file(&path).map_err(at(&path))?;
    }
    fs::remove_dir(dir).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_dirs_are_read_back_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path());
        for name in [
            "maps-abc-10",
            "maps-abc-2",
            "maps-def-3",
            "links",
            "egress",
            "other",
        ] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        let found: Vec<(String, u64)> = pins
            .maps_dirs()
            .unwrap()
            .into_iter()
            .map(|d| (d.layout, d.seq))
            .collect();
        assert_eq!(
            found,
            [("abc".into(), 2), ("def".into(), 3), ("abc".into(), 10)]
        );
        assert_eq!(
            pins.new_maps_dir("abc").unwrap(),
            dir.path().join("maps-abc-11")
        );
    }

    #[test]
    fn a_plain_directory_is_not_a_bpf_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path().join("smf-firewall"));
        assert!(matches!(pins.prepare(), Err(PinError::NotBpffs(_))));
    }
}
