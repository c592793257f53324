//! `watch: true`: a debounced watch on the rules file. Editors save by writing a new file and
//! renaming it over the old one, so the watch is on the file's directory, filtered by name;
//! one save makes one reload.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use notify_debouncer_mini::{
    DebounceEventResult, Debouncer, new_debouncer,
    notify::{RecommendedWatcher, RecursiveMode},
};
use tokio::sync::mpsc;
use tracing::warn;

/// Changes closer together than this are one change.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", path.display())]
pub struct WatchError {
    path: PathBuf,
    source: notify_debouncer_mini::notify::Error,
}

/// Watching while it lives.
pub struct FileWatch {
    _debouncer: Debouncer<RecommendedWatcher>,
}

impl FileWatch {
    /// Sends `()` on `changed` after each (debounced) change to `file`.
    pub fn new(file: &Path, changed: mpsc::UnboundedSender<()>) -> Result<FileWatch, WatchError> {
        let error = |source| WatchError {
            path: file.to_path_buf(),
            source,
        };
        let file = std::path::absolute(file).map_err(|e| error(e.into()))?;
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = file.file_name().map(ToOwned::to_owned);
        let mut debouncer =
            new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
                Ok(events) => {
                    if events
                        .iter()
                        .any(|event| event.path.file_name() == name.as_deref())
                    {
                        let _ = changed.send(());
                    }
                }
                Err(error) => warn!(%error, "file watch error"),
            })
            .map_err(error)?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(error)?;
        Ok(FileWatch {
            _debouncer: debouncer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_save_by_rename_is_one_change_and_other_files_none() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.yaml");
        std::fs::write(&rules, "a").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watch = FileWatch::new(&rules, tx).unwrap();
        std::fs::write(dir.path().join("other.yaml"), "b").unwrap();
        let quiet = tokio::time::timeout(DEBOUNCE * 3, rx.recv()).await;
        assert!(quiet.is_err(), "another file is no change: {quiet:?}");
        // As editors save: a temporary file renamed over the rules.
        let temporary = dir.path().join(".rules.yaml.swp");
        std::fs::write(&temporary, "c").unwrap();
        std::fs::rename(&temporary, &rules).unwrap();
        let change = tokio::time::timeout(DEBOUNCE * 6, rx.recv()).await;
        assert_eq!(change.unwrap(), Some(()));
        let again = tokio::time::timeout(DEBOUNCE * 3, rx.recv()).await;
        assert!(again.is_err(), "one save, one change: {again:?}");
    }
}
