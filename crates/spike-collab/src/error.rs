//! The crate's error type.

/// Everything that can go wrong in spike-collab.
#[derive(Debug, thiserror::Error)]
pub enum CollabError {
    /// A file path is not a clean relative path.
    #[error("invalid file path {path:?}: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No file at that path.
    #[error("no file {0:?} in the room")]
    NoSuchFile(String),
    /// A file already exists at that path.
    #[error("file {0:?} already exists")]
    FileExists(String),
    /// An edit reaches past the end of the text (all numbers in UTF-16 code units).
    #[error("edit of {path:?} out of range: offset {offset} + delete {delete} > length {len} (UTF-16 code units)")]
    EditOutOfRange {
        /// The edited file.
        path: String,
        /// The edit's offset.
        offset: u32,
        /// The edit's delete count.
        delete: u32,
        /// The text's length before the edit.
        len: u32,
    },
    /// An edit boundary falls between the two UTF-16 code units of an astral character.
    #[error("edit of {path:?} splits a surrogate pair at UTF-16 offset {offset}")]
    SplitsSurrogatePair {
        /// The edited file.
        path: String,
        /// The offending boundary.
        offset: u32,
    },
    /// Bytes that do not decode as a lib0 v1 update.
    #[error("malformed update: {0}")]
    MalformedUpdate(String),
    /// A WebSocket frame that does not decode as y-protocols messages.
    #[error("malformed message: {0}")]
    MalformedMessage(String),
    /// yrs refused (or panicked on) a decoded update.
    #[error("update could not be applied: {0}")]
    Apply(String),
    /// The SQLite update log failed.
    #[error("update log: {0}")]
    Log(#[from] rusqlite::Error),
    /// The update log's schema could not be migrated.
    #[error("update log migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// An update in the log does not decode (the file is damaged or not ours).
    #[error("update log holds an undecodable update at seq {seq}: {reason}")]
    CorruptLog {
        /// The row's sequence number (0 for the snapshot).
        seq: i64,
        /// The decoder's message.
        reason: String,
    },
    /// A session URL that is not `ws://` or `wss://`.
    #[error("invalid server URL {0:?}: expected ws://host[:port]/path")]
    InvalidUrl(String),
    /// The room name is empty, too long, or has characters other than `A-Za-z0-9._-`.
    #[error("invalid room name {0:?}")]
    InvalidRoom(String),
    /// The server refused access (y-protocols auth message, permission denied).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A wait gave up.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The session was closed.
    #[error("the session is closed")]
    Closed,
}
