//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while mirroring; every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The mirrored folder is missing or not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Reading or writing a file or folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file watcher could not be started or could not watch the folder.
    #[error("watching {path}: {source}")]
    Watch {
        /// The watched folder.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
    /// A room operation on a file failed.
    #[error("room file {path:?}: {source}")]
    Room {
        /// The room path (`/`-separated, relative).
        path: String,
        /// The room's error.
        source: spike_collab::CollabError,
    },
    /// A path that would leave the mirrored folder (a `..` segment, an absolute path, a symlink
    /// on the way) or land in a protected folder (`.git`); nothing was read or written.
    #[error("refused path {path:?}: {reason}")]
    Refused {
        /// The offending path, as the room or the disk named it.
        path: String,
        /// Why it was refused.
        reason: String,
    },
}

impl MirrorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn room(path: &str, source: spike_collab::CollabError) -> Self {
        Self::Room {
            path: path.to_owned(),
            source,
        }
    }
}
