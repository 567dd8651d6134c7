//! Spike rooms, client side: the document model, the wire protocol, the offline log and the
//! reconnecting session.
//!
//! - [`RoomDoc`]: one yrs document per room, UTF-16 offsets, a `files` map of path → text and a
//!   `meta` map; a typed API to list, create, rename, delete, read and edit files, and to encode
//!   and apply updates (lib0 v1, interchangeable with Yjs 13).
//! - [`bounds`]: bounded decoding: every update, state vector and awareness state from outside
//!   the process is checked for nesting, declared counts and clock ranges before yrs decodes it,
//!   so no message can overflow a stack or reserve memory it does not carry.
//! - [`protocol`]: the y-websocket wire messages (sync step 1/2, update, awareness, query
//!   awareness, auth) over `yrs::sync`, with strict frame decoding, and [`Presence`], the
//!   awareness state (name, colour, cursor per file).
//! - [`UpdateLog`]: the SQLite log every local update is appended to before it is acknowledged;
//!   a replica opens from it with no network; compaction merges it into a snapshot losslessly;
//!   a damaged file is moved aside and what survives is recovered ([`Recovery`]).
//! - [`Session`]: a client of one room over tokio-tungstenite: sync handshake, streaming updates
//!   both ways, awareness, reconnect with exponential backoff and jitter forever while open, and
//!   its [`SessionState`] (offline / connecting / syncing / synced) for observers.
//!   [`Session::replace_text`] is the one way a whole-text change (a format, a mirrored file
//!   save, an accepted assistant edit) reaches a room: the [`minimal_edits`] from the text the
//!   caller read, applied under the replica lock only if the file still holds that text
//!   ([`CollabError::TextChanged`] otherwise, so the caller re-reads and retries).
//!
//! ```
//! use spike_collab::{RoomDoc, TextEdit};
//! let a = RoomDoc::new();
//! let b = RoomDoc::new();
//! let update = a.create_file("App.tsx", "hi 👋").unwrap().unwrap();
//! b.apply_update(&update).unwrap();
//! // Offsets are UTF-16 code units: the emoji counts two.
//! b.edit("App.tsx", &[TextEdit::insert(5, "!")]).unwrap();
//! assert_eq!(b.read("App.tsx").as_deref(), Some("hi 👋!"));
//! ```

pub mod bounds;
mod diff;
mod doc;
mod error;
pub mod link;
mod log;
pub mod protocol;
mod recover;
mod session;

pub use diff::minimal_edits;
pub use doc::{
    decode_update, encode_state_vector, validate_path, FilesChange, RoomDoc, TextEdit, FILES,
    MAX_PATH_BYTES, META,
};
pub use error::{AwarenessError, CollabError};
pub use link::{http_base, RoomLink};
pub use log::{Compaction, UpdateLog, DEFAULT_COMPACT_AFTER};
pub use protocol::{Presence, Selection, User};
pub use recover::{DamageKind, LostUpdate, Recovery};
pub use session::{validate_room, Session, SessionConfig, SessionState, SessionStatus};

pub use yrs;
