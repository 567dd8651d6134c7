//! Mirror a Spike room to a local folder, both ways, so people keep their own editor.
//!
//! [`Mirror::start`] takes an open [`spike_collab::Session`] and a folder and keeps the room's
//! `files` map and the folder's text files in sync until [`Mirror::stop`]:
//!
//! - **Disk → room**: a recursive watcher (notify + notify-debouncer-full) reports changes; a
//!   changed file becomes the [`spike_collab::minimal_edits`] between the room's current text and the file
//!   (UTF-16 offsets), never a replace-all, so collaborators' concurrent edits elsewhere in the
//!   file survive; [`spike_collab::Session::replace_text`] applies them only if the room's text
//!   is still the one they were computed from (else the file is reconciled again). Creations, deletions and renames map to the room's file operations.
//! - **Room → disk**: remote changes are written atomically (a temporary file in the same folder,
//!   then a rename). The watcher events those writes cause are recognised by content hash
//!   (SHA-256 of the bytes last synced), not by timing.
//! - **Conflicts**: every file has a *base*, the text both sides last agreed on. When the file
//!   changed on disk and in the room since then, [`merge3`] replays `base → disk` and
//!   `base → room` on two scratch CRDT replicas and merges them, so both sides' changes survive;
//!   the room receives the minimal edits to the merged text and the file is rewritten with it.
//!   With [`MirrorOptions::state_path`] the bases outlive the process, so changes made on both
//!   sides while the mirror was stopped merge the same way at the next start.
//! - **Editor saves**: a save by delete + create is one modification (a deletion on disk waits
//!   [`MirrorOptions::delete_grace`] before it reaches the room); a save by temporary file +
//!   rename arrives as a change of the target file.
//! - **Skipped**, with a [`SkipReason`] listed by [`Mirror::skipped`]: `.git`, `node_modules`
//!   and `.spike` folders, what the folder's `.gitignore` files ignore (each under its own folder, as git reads them), symlinks, binary files
//!   and files over [`MirrorOptions::max_file_bytes`].
//! - **Refused**: a room path that is not a clean relative path (`..`, absolute, backslash), that
//!   points into `.git`, or whose parent folder on disk is a symlink is never written.
//! - **Offline**: the mirror only talks to the session's local replica; a session with an update
//!   log keeps every change while offline and syncs it on reconnection.
//!
//! Progress is reported as [`MirrorEvent`]s to a callback.

mod diff;
mod engine;
mod error;

pub use diff::merge3;
pub use engine::{Change, Mirror, MirrorEvent, MirrorOptions, SkipReason};
pub use error::MirrorError;
