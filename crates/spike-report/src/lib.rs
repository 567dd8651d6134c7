//! Error reports from Spike's clients (the desktop app, `spike mirror`) to a room server.
//!
//! A [`ReportLayer`] added to the app's `tracing` subscriber turns every `error`-level event into
//! a [`Report`], appends it to an offline [`Queue`] (a local SQLite file, WAL) before any network
//! attempt, and a sender task POSTs the queue, oldest first, to `<server>/v1/reports` (the room
//! server's endpoint, `spike_server::reports`), with a room token as `Authorization: Bearer`.
//!
//! ```no_run
//! # async fn f() -> Result<(), spike_report::ReportError> {
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use spike_report::{Reporter, ReporterConfig, Target};
//!
//! let mut config = ReporterConfig::new("/data/reports.sqlite", env!("CARGO_PKG_VERSION"));
//! config.target = Some(Target::from_rooms_url("ws://127.0.0.1:8080/rooms", None)?);
//! let (layer, handle) = Reporter::start(config)?;
//! let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
//! handle.set_room(Some("my-room")); // sent only as an anonymised id
//! # Ok(()) }
//! ```
//!
//! An app that switches rooms calls [`ReportHandle::set_target`] with the new room's server
//! ([`Target::from_rooms_url`] of its link's `server` and `token`) and
//! [`ReportHandle::set_room`] with its name; with no room open, `set_target(None)` keeps
//! reports queued. A shell whose runtime is not the current one uses [`Reporter::start_on`].
//! `spike mirror` is wired this way, with its queue in `<data>/reports.sqlite`.
//!
//! # Exactly what is sent
//! One JSON object per event: `{"kind", "message", "chain", "version", "os", "room", "at"}`,
//! with the contents described on [`ReportLayer`]: the event's kind, its message with its
//! other fields and source location, its error's causes, the app's version, `<os>-<arch>`, an
//! anonymised room id (a keyed BLAKE3 hash of the room name under a per-installation salt that
//! never leaves the machine, see [`RoomHasher`]) and the Unix time. Never document content,
//! keys or tokens: fields named like secrets or content are dropped, span fields are never
//! read, every string is capped (message 2 KiB, each cause 1 KiB, at most 16 causes), and the
//! token only ever travels in the `Authorization` header.
//!
//! # Delivery
//! - Network errors, HTTP 408, 429 and 5xx: retried with exponential backoff and jitter
//!   (backon, [`SenderOptions`]), waiting as long as `Retry-After` says when given.
//! - 2xx: the report is deleted from the queue (never before).
//! - 401/403: reports stay queued until [`ReportHandle::set_target`] gives a new server or
//!   token.
//! - 400, 413 and other 4xx: the report is dropped and counted ([`DropReason::Refused`]).
//! - The queue holds at most [`QueueLimits`] (1,000 reports, 1 MiB by default); past that the
//!   oldest are dropped and counted ([`DropReason::QueueFull`]).
//!
//! Metrics: `spike_report_queued_total`, `spike_report_attempts_total` (HTTP requests made),
//! `spike_report_sent_total`,
//! `spike_report_dropped_total{reason="queue_full"|"refused"}`.

mod layer;
pub mod queue;
pub mod report;
mod reporter;
mod room;

use std::path::PathBuf;

pub use layer::ReportLayer;
pub use queue::{DropReason, Queue, QueueLimits};
pub use report::Report;
pub use reporter::{salt_path, ReportHandle, Reporter, ReporterConfig, SenderOptions, Target};
pub use room::{RoomHasher, ROOM_ID_HEX};

/// The file name the clients use for the queue under their data folder.
pub const QUEUE_FILE: &str = "reports.sqlite";

/// What went wrong starting or running the reporter.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The queue file cannot be opened, created, migrated or written.
    #[error("error report queue {path}: {message}")]
    Queue {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The salt file cannot be read or created.
    #[error("error report salt {path}: {message}")]
    Salt {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The server URL is not usable.
    #[error("error report server `{url}`: {message}")]
    InvalidServer {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// [`Reporter::start`] was called outside a tokio runtime.
    #[error("the error reporter must be started inside a tokio runtime")]
    NoRuntime,
}
