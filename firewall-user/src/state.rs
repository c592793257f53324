//! What a daemon leaves in `runtime_dir/state.json` for the next one: which pinned maps it
//! used, the rules' counter slots in them, and how each interface is attached. With it, a
//! restarted daemon takes over the pinned counters with each rule's counts continuing.

use std::{collections::BTreeMap, fs, io, path::Path, path::PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use firewall_rules::compile::RuleCounters;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The pinned maps the counter slots refer to.
    pub maps_dir: PathBuf,
    pub counters: RuleCounters,
    /// Interface -> `driver` or `skb`.
    pub modes: BTreeMap<String, String>,
}

impl Saved {
    /// The saved state, if there is one that can be read; a damaged one is ignored (counters
    /// then start again) with a warning.
    pub fn read(path: &Path) -> Option<Saved> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot read the saved state; rule counters start again");
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(saved) => Some(saved),
            Err(error) => {
                warn!(path = %path.display(), %error, "the saved state is damaged; rule counters start again");
                None
            }
        }
    }

    /// Writes the state whole or not at all (a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let temporary = path.with_extension("json.tmp");
        fs::write(&temporary, serde_json::to_vec(self)?)?;
        fs::rename(&temporary, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_write_and_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(Saved::read(&path), None);
        let saved = Saved {
            maps_dir: "/sys/fs/bpf/smf-firewall/maps-0123456789abcdef-0".into(),
            counters: RuleCounters::default(),
            modes: [("lan0".to_string(), "driver".to_string())].into(),
        };
        saved.write(&path).unwrap();
        assert_eq!(Saved::read(&path), Some(saved));
        fs::write(&path, "{").unwrap();
        assert_eq!(Saved::read(&path), None);
    }
}
