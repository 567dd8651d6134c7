//! Error reports: `POST /v1/reports` stores what the desktop app and the CLI send about their
//! `error`-level events in `<data>/reports.sqlite3`, counts them in
//! `spike_reports_total{kind}`, and [`ReportStore::since`] lists them (`spike reports`).
//!
//! The body is one JSON object ([`Report`]):
//!
//! ```json
//! {"kind": "error", "message": "sync failed", "chain": ["connection refused"],
//!  "version": "0.1.0", "os": "linux", "room": "9f86d081884c7d65", "at": 1764457200}
//! ```
//!
//! - `kind`: 1–64 of `[a-z0-9_.-]`; `message`: 1–4096 bytes; `chain`: the error's causes,
//!   outermost first, at most 32 of at most 4096 bytes; `version`, `os`: at most 64 bytes;
//!   `room` (optional): an anonymised room id, 8–128 hex digits (a hash, never the name);
//!   `at` (optional): when it happened, seconds since the Unix epoch. Unknown fields are
//!   refused, so a client cannot smuggle document content in under another name.
//! - Answers: 201 `{"id": N}`; 400 naming the field, or the line and column of bad JSON; 401/403
//!   as for rooms when the server needs tokens (any valid room token may report, sent as
//!   `Authorization: Bearer`); 413 over [`crate::Limits::max_report_bytes`]; 429 over
//!   [`crate::Limits::report_rate`] per client address.
//! - `spike_reports_total{kind}` labels the kinds in [`KNOWN_KINDS`] by name and every other
//!   kind as `other`, so clients cannot grow the metric without bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{params, Connection};
use rusqlite_migration::{Migrations, M};
use serde::{Deserialize, Serialize};

use crate::limits::{self, LimitKind};
use crate::{Access, Inner};

/// The file under the data folder.
pub const REPORTS_FILE: &str = "reports.sqlite3";

/// Kinds counted under their own label in `spike_reports_total`.
pub const KNOWN_KINDS: &[&str] = &[
    "error",
    "panic",
    "network",
    "storage",
    "sync",
    "preview",
    "ai",
    "transpile",
    "format",
];

const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        chain TEXT NOT NULL,
        version TEXT NOT NULL,
        os TEXT NOT NULL,
        room TEXT,
        at INTEGER
    );
    CREATE INDEX reports_received ON reports (received_ms);",
)];

/// What went wrong with a report or the store.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The body is not JSON of the documented shape.
    #[error("the report is not valid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says (it names unknown and missing fields).
        message: String,
    },
    /// A field is out of range.
    #[error("report field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The SQLite store failed.
    #[error("report store {path}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// One error report, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// What kind of failure (see the module docs).
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// Its causes, outermost first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The sender's version.
    pub version: String,
    /// The sender's operating system.
    pub os: String,
    /// An anonymised room id (hex), if the error concerned a room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// When it happened at the sender, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

impl Report {
    /// Parses and checks a body. Errors: [`ReportError::Json`], [`ReportError::Invalid`].
    pub fn parse(body: &[u8]) -> Result<Self, ReportError> {
        let report: Report = serde_json::from_slice(body).map_err(|e| ReportError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        report.check()?;
        Ok(report)
    }

    /// Checks every field against the documented bounds.
    pub fn check(&self) -> Result<(), ReportError> {
        let invalid = |field, message: &str| {
            Err(ReportError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        let kind_ok = (1..=64).contains(&self.kind.len())
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !kind_ok {
            return invalid("kind", "must be 1-64 characters of a-z, 0-9, _ . -");
        }
        if self.message.is_empty() || self.message.len() > 4096 {
            return invalid("message", "must be 1-4096 bytes");
        }
        if self.chain.len() > 32 || self.chain.iter().any(|c| c.len() > 4096) {
            return invalid("chain", "at most 32 causes of at most 4096 bytes each");
        }
        if self.version.len() > 64 {
            return invalid("version", "at most 64 bytes");
        }
        if self.os.len() > 64 {
            return invalid("os", "at most 64 bytes");
        }
        if let Some(room) = &self.room {
            if !(8..=128).contains(&room.len()) || !room.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    "room",
                    "must be an anonymised room id (8-128 hex digits), never a room name",
                );
            }
        }
        Ok(())
    }

    /// The `kind` label of `spike_reports_total`.
    pub fn metric_kind(&self) -> &'static str {
        KNOWN_KINDS
            .iter()
            .find(|k| **k == self.kind)
            .copied()
            .unwrap_or("other")
    }
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    /// Row id, increasing.
    pub id: i64,
    /// When the server received it, milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The report.
    #[serde(flatten)]
    pub report: Report,
}

/// The SQLite file of reports.
#[derive(Debug)]
pub struct ReportStore {
    conn: Connection,
    path: PathBuf,
}

impl ReportStore {
    /// Opens (creating and migrating if needed) `<data_dir>/reports.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<Self, ReportError> {
        let path = data_dir.join(REPORTS_FILE);
        let fail = |e: &dyn std::fmt::Display| ReportError::Store {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut conn = Connection::open(&path).map_err(|e| fail(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(&e))?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|e| fail(&e))?;
        Ok(Self { conn, path })
    }

    fn fail(&self, e: rusqlite::Error) -> ReportError {
        ReportError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Stores `report` as received at `received_ms`; returns its id.
    pub fn insert(&mut self, report: &Report, received_ms: u64) -> Result<i64, ReportError> {
        let chain = serde_json::to_string(&report.chain).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "INSERT INTO reports (received_ms, kind, message, chain, version, os, room, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    i64::try_from(received_ms).unwrap_or(i64::MAX),
                    report.kind,
                    report.message,
                    chain,
                    report.version,
                    report.os,
                    report.room,
                    report.at.map(|a| i64::try_from(a).unwrap_or(i64::MAX)),
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Reports received at or after `since_ms` (milliseconds since the Unix epoch), oldest
    /// first.
    pub fn since(&self, since_ms: u64) -> Result<Vec<StoredReport>, ReportError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, received_ms, kind, message, chain, version, os, room, at
                 FROM reports WHERE received_ms >= ?1 ORDER BY id",
            )
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![i64::try_from(since_ms).unwrap_or(i64::MAX)], |r| {
                let chain: String = r.get(4)?;
                Ok(StoredReport {
                    id: r.get(0)?,
                    received_ms: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    report: Report {
                        kind: r.get(2)?,
                        message: r.get(3)?,
                        chain: serde_json::from_str(&chain).unwrap_or_default(),
                        version: r.get(5)?,
                        os: r.get(6)?,
                        room: r.get(7)?,
                        at: r
                            .get::<_, Option<i64>>(8)?
                            .map(|a| u64::try_from(a).unwrap_or(0)),
                    },
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The store, opened on the first report.
pub(crate) type Store = Mutex<Option<ReportStore>>;

/// `POST /v1/reports`.
pub(crate) async fn post(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = inner.guards.report(crate::listen::peer_key(addr.ip())) {
        return *refusal;
    }
    if let Access::Tokens(key) = &inner.config.access {
        let token = crate::conn::bearer(&headers);
        if let Err(refusal) = key.verify_any(token) {
            tracing::warn!(peer = %addr.ip(), reason = refusal.kind(), "refused a report: {refusal}");
            metrics::counter!("spike_auth_refusals_total", "reason" => refusal.kind()).increment(1);
            return (refusal.status(), refusal.to_string()).into_response();
        }
    }
    let max = inner.config.limits.max_report_bytes;
    if body.len() > max {
        let reason = format!(
            "a report of {} bytes is over the limit of {max} bytes",
            body.len()
        );
        limits::refused(LimitKind::BodySize, Some(addr.ip()), &reason);
        return (StatusCode::PAYLOAD_TOO_LARGE, reason).into_response();
    }
    let report = match Report::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let kind = report.metric_kind();
    let stored = tokio::task::spawn_blocking(move || {
        let mut store = inner.reports.lock().unwrap_or_else(|p| p.into_inner());
        if store.is_none() {
            *store = Some(ReportStore::open(&inner.config.data_dir)?);
        }
        match store.as_mut() {
            Some(s) => s.insert(&report, now_ms()),
            None => Err(ReportError::Store {
                path: inner.config.data_dir.join(REPORTS_FILE),
                message: "not open".into(),
            }),
        }
    })
    .await;
    match stored {
        Ok(Ok(id)) => {
            metrics::counter!("spike_reports_total", "kind" => kind).increment(1);
            tracing::debug!(id, kind, "stored an error report");
            (StatusCode::CREATED, format!("{{\"id\":{id}}}")).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing a report failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the report could not be stored",
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "the report writer failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the report could not be stored",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            kind: "sync".into(),
            message: "sync failed".into(),
            chain: vec!["connection refused".into()],
            version: "0.1.0".into(),
            os: "linux".into(),
            room: Some("9f86d081884c7d65".into()),
            at: Some(1_764_457_200),
        }
    }

    #[test]
    fn stores_and_lists_by_time() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = ReportStore::open(dir.path())?;
        let old = store.insert(&report(), 1_000)?;
        let mut other = report();
        other.kind = "weird".into();
        other.room = None;
        let new = store.insert(&other, 5_000)?;
        assert!(new > old);
        let all = store.since(0)?;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].report, report());
        let recent = ReportStore::open(dir.path())?.since(2_000)?;
        assert_eq!(recent.len(), 1);
        assert_eq!((recent[0].id, recent[0].received_ms), (new, 5_000));
        assert_eq!(recent[0].report.metric_kind(), "other");
        Ok(())
    }

    #[test]
    fn bad_reports_name_the_field() {
        let err = |body: &str| {
            Report::parse(body.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            err(r#"{"kind":"error","message":"m","version":"1","os":"linux","room":"my-room"}"#),
            Err("report field `room`: must be an anonymised room id (8-128 hex digits), never a room name".into())
        );
        assert!(
            err(r#"{"kind":"Error!","message":"m","version":"1","os":"l"}"#)
                .is_err_and(|e| e.contains("`kind`"))
        );
        assert!(
            err(r#"{"kind":"error","message":"","version":"1","os":"l"}"#)
                .is_err_and(|e| e.contains("`message`"))
        );
        assert!(
            err(r#"{"kind":"error","message":"m","version":"1","os":"l","content":"x"}"#)
                .is_err_and(|e| e.contains("unknown field `content`"))
        );
        assert!(err("{\n\"kind\": }").is_err_and(|e| e.contains("line 2")));
        assert_eq!(
            err(r#"{"kind":"error","message":"m","version":"1","os":"l"}"#),
            Ok(())
        );
    }
}
