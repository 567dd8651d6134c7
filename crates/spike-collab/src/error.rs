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
    /// A whole-text replacement ([`crate::Session::replace_text`], [`crate::RoomDoc::replace_text`])
    /// found the file no longer holding the text it was computed from (a collaborator's edit
    /// landed between the caller's read and its write); nothing was applied. Re-read and retry.
    #[error("{path:?} changed since it was read; nothing applied (re-read and retry)")]
    TextChanged {
        /// The file.
        path: String,
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
    /// An awareness message whose update is cut short or carries a state that is not JSON text;
    /// `message` is its index in the frame. Stock y-protocols peers `JSON.parse` every state
    /// unguarded, so such a message must never be applied, stored or relayed.
    #[error("invalid awareness update in message {message}: {source}")]
    InvalidAwareness {
        /// The message's index in its frame.
        message: usize,
        /// What is wrong with it.
        source: AwarenessError,
    },
    /// An update outside the decoding bounds (too deep, a count its bytes cannot hold, a clock
    /// overflow, …; see [`crate::bounds`]): refused before yrs saw it, nothing applied.
    #[error("update refused: {0}")]
    UpdateOutOfBounds(#[from] crate::bounds::BoundsError),
    /// An update whose structs for `client` start at `starts_at` while this replica holds that
    /// client's history only up to `have`: it skips part of the client's own history. Refused by
    /// [`crate::RoomDoc::apply_update_in_order`]; nothing applied.
    #[error("update skips history: client {client} starts at clock {starts_at}, this replica has {have}")]
    UpdateGap {
        /// The client whose history has a gap.
        client: u64,
        /// Where the update's structs for it start.
        starts_at: u32,
        /// This replica's clock for it.
        have: u32,
    },
    /// yrs refused (or panicked on) a decoded update.
    #[error("update could not be applied: {0}")]
    Apply(String),
    /// The SQLite update log failed.
    #[error("update log: {0}")]
    Log(#[from] rusqlite::Error),
    /// The update log's schema could not be migrated.
    #[error("update log migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A damaged update log could not be moved aside, copied or replaced by a new one (see
    /// [`crate::Recovery`]); `path` is the file the operation failed on.
    #[error("update log file {}: {source}", path.display())]
    LogFile {
        /// The file being moved, copied or created.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
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
    /// A room link that cannot be read (see [`crate::RoomLink::parse`]).
    #[error("invalid room link {link:?}: {reason}")]
    InvalidLink {
        /// The link as given (at most 200 characters).
        link: String,
        /// What is wrong with it.
        reason: String,
    },
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

/// Why an awareness update (the body of a y-protocols awareness message: varuint count, then
/// per client varuint id, varuint clock, varstring JSON state) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    /// The payload ends (or holds a bad varint or non-UTF-8 string) inside entry `entry` of
    /// `count`; `entry == count` is never used.
    #[error("entry {entry} of {count} is cut short or undecodable: {reason}")]
    Truncated {
        /// The index of the entry being read.
        entry: u64,
        /// The number of entries the payload announced (0 if the count itself is bad).
        count: u64,
        /// The decoder's message.
        reason: String,
    },
    /// A client id that does not fit in 53 bits (the Yjs range, exact in a JavaScript number).
    #[error("client id {0} is out of range (more than 53 bits)")]
    ClientIdOutOfRange(u64),
    /// A client's state is not valid JSON text (`null`, meaning the client left, is valid), or
    /// is larger or deeper than [`crate::protocol::validate_awareness_state`] accepts.
    #[error("the state of client {client} (clock {clock}) is refused: {reason}")]
    InvalidState {
        /// The client whose state is bad.
        client: u64,
        /// Its clock in the update.
        clock: u32,
        /// The JSON parser's message, or the bound it passes.
        reason: String,
    },
    /// Bytes left in the payload after the announced entries.
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
}
