//! "Mirror to folder…" and "Open folder…": the open room kept in sync with a folder on disk by
//! spike-mirror, so people can edit its files with any editor.
//!
//! The mirror edits the room through the app's own session (not a second connection): a file
//! saved in another editor reaches the editor and the preview at once, online or offline, and
//! arrives at collaborators as this person's edit. Its sync state (each file's last agreed text,
//! the three-way merge base) lives in `<data>/mirrors/`, one file per room and folder, so edits
//! made on both sides while the mirror was stopped merge when it starts again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use spike_mirror::{Mirror, MirrorEvent, MirrorOptions};

use crate::DesktopError;

/// How many event lines [`MirrorInfo::recent`] keeps.
const RECENT_LINES: usize = 50;

/// A running mirror of the open room.
pub(crate) struct ActiveMirror {
    mirror: Mirror,
    room: String,
    recent: Arc<Mutex<VecDeque<String>>>,
}

/// A file the mirror leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct SkippedFile {
    /// Its path relative to the folder, `/`-separated.
    pub path: String,
    /// Why it is not mirrored (binary, too large, ignored by `.gitignore`, …).
    pub reason: String,
}

/// The open room's folder mirror, as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct MirrorInfo {
    /// The folder, absolute.
    pub dir: String,
    /// The room it mirrors.
    pub room: String,
    /// Files not mirrored, with the reason.
    pub skipped: Vec<SkippedFile>,
    /// The last events, oldest first, one line each (`disk → room  App.tsx: 1 edit(s)`).
    pub recent: Vec<String>,
}

impl ActiveMirror {
    /// Starts mirroring `session` (room `room`) into `dir` (created if missing), with its sync
    /// state under `state_dir`. `on_event` gets every event line (from the mirror's thread).
    ///
    /// Errors: [`DesktopError::Io`] when the folder cannot be created, [`DesktopError::Mirror`]
    /// when it is not a folder or cannot be watched.
    pub(crate) async fn start(
        session: Arc<spike_collab::Session>,
        room: &str,
        dir: &Path,
        state_dir: &Path,
        on_event: impl Fn(&str) + Send + 'static,
    ) -> Result<Self, DesktopError> {
        let io = |what: &str, path: &Path| {
            let context = format!("{what} {}", path.display());
            move |source| DesktopError::Io { context, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        std::fs::create_dir_all(state_dir).map_err(io("creating", state_dir))?;
        let canonical = dir.canonicalize().map_err(io("resolving", dir))?;
        let options = MirrorOptions {
            state_path: Some(state_dir.join(state_file(room, &canonical))),
            // The app's session is usually synced already; offline, waiting buys nothing.
            sync_timeout: Duration::from_secs(1),
            ..MirrorOptions::default()
        };
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let log = recent.clone();
        let mirror = Mirror::start(session, &canonical, options, move |event: &MirrorEvent| {
            let line = event.to_string();
            match event {
                MirrorEvent::Error(_) => tracing::warn!(target: "spike_desktop::mirror", "{line}"),
                _ => tracing::debug!(target: "spike_desktop::mirror", "{line}"),
            }
            if let Ok(mut recent) = log.lock() {
                if recent.len() == RECENT_LINES {
                    recent.pop_front();
                }
                recent.push_back(line.clone());
            }
            on_event(&line);
        })
        .await?;
        tracing::info!(room, dir = %canonical.display(), "mirroring the room into a folder");
        Ok(Self {
            mirror,
            room: room.to_owned(),
            recent,
        })
    }

    /// What the UI shows.
    pub(crate) fn info(&self) -> MirrorInfo {
        MirrorInfo {
            dir: self.mirror.root().display().to_string(),
            room: self.room.clone(),
            skipped: self
                .mirror
                .skipped()
                .into_iter()
                .map(|(path, reason)| SkippedFile {
                    path,
                    reason: reason.to_string(),
                })
                .collect(),
            recent: self
                .recent
                .lock()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Stops watching; the room stays open (the app's session is shared).
    pub(crate) async fn stop(self) {
        let dir = self.mirror.root().to_owned();
        self.mirror.stop().await;
        tracing::info!(room = self.room, dir = %dir.display(), "stopped mirroring");
    }
}

/// The sync state file of `room` mirrored into `dir`: one per room and folder (the folder's
/// name and a BLAKE3 hash of its whole path, so the name stays short), so a room mirrored into a
/// second folder never merges against the first folder's bases.
fn state_file(room: &str, dir: &Path) -> PathBuf {
    let name: String = dir
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    let hash = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
    PathBuf::from(format!("{room}@{name}-{}.json", &hash[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_differ_per_room_and_folder() {
        let a = state_file("demo", Path::new("/home/ada/my demo"));
        let name = a.to_string_lossy().into_owned();
        assert!(name.starts_with("demo@my_demo-"), "{name}");
        assert_eq!(name.len(), "demo@my_demo-".len() + 16 + ".json".len());
        assert_ne!(a, state_file("demo", Path::new("/home/ada/other")));
        assert_ne!(a, state_file("other", Path::new("/home/ada/demo")));
    }
}
