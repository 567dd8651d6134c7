//! The offline queue: reports wait in a local SQLite file (WAL) until the server has them.
//!
//! Schema (rusqlite_migration, version 1):
//! - `queue(id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT, bytes INTEGER, queued_ms INTEGER)`:
//!   one row per report, `body` the exact JSON that will be POSTed;
//! - `dropped(reason TEXT PRIMARY KEY, count INTEGER)`: reports dropped without being delivered,
//!   by [`DropReason`], kept across restarts.
//!
//! A file that is not a SQLite database, or fails `PRAGMA quick_check`, is renamed to
//! `<file>.corrupt-<unix ms>` (with its `-wal`/`-shm`) and a fresh queue is created in its place,
//! with a warning.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension as _};
use rusqlite_migration::{Migrations, M};

use crate::report::now_ms;
use crate::{Report, ReportError};

const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL
    );
    CREATE TABLE dropped (
        reason TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    );",
)];

/// How many reports, and how many bytes of them, the queue keeps; past either bound the
/// oldest reports are dropped ([`DropReason::QueueFull`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most reports queued. Default 1,000.
    pub max_reports: u64,
    /// Most bytes of report JSON queued. Default 1 MiB.
    pub max_bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_reports: 1_000,
            max_bytes: 1 << 20,
        }
    }
}

/// Why a report was dropped without reaching the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue was over [`QueueLimits`]; the oldest report made room.
    QueueFull,
    /// The server refused it for good (HTTP 400, 413 or another 4xx that is not about
    /// credentials or rates).
    Refused,
}

impl DropReason {
    /// Its name in the `dropped` table and the `reason` label of
    /// `spike_report_dropped_total`: `queue_full`, `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Refused => "refused",
        }
    }
}

/// One queued report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Row id, increasing in queue order.
    pub id: i64,
    /// The JSON body to POST.
    pub body: String,
}

/// The SQLite queue file.
#[derive(Debug)]
pub struct Queue {
    conn: Connection,
    path: PathBuf,
    limits: QueueLimits,
}

impl Queue {
    /// Opens (creating and migrating if needed) the queue at `path`; a corrupt file is moved
    /// aside and replaced (see the module docs).
    ///
    /// Errors: [`ReportError::Queue`] when the file cannot be opened, created or migrated
    /// (e.g. a missing folder, no permission, a newer schema).
    pub fn open(path: &Path, limits: QueueLimits) -> Result<Self, ReportError> {
        match Self::open_checked(path, limits) {
            Err(Opened::Corrupt(why)) => {
                let aside = Self::move_aside(path)?;
                tracing::warn!(
                    queue = %path.display(),
                    moved_to = %aside.display(),
                    reason = %why,
                    "the error report queue was corrupt; moved it aside and started a new one"
                );
                Self::open_checked(path, limits).map_err(|e| match e {
                    Opened::Corrupt(message) | Opened::Failed(message) => ReportError::Queue {
                        path: path.to_owned(),
                        message,
                    },
                })
            }
            Err(Opened::Failed(message)) => Err(ReportError::Queue {
                path: path.to_owned(),
                message,
            }),
            Ok(queue) => Ok(queue),
        }
    }

    fn open_checked(path: &Path, limits: QueueLimits) -> Result<Self, Opened> {
        let mut conn = Connection::open(path).map_err(Opened::from)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(Opened::from)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(Opened::from)?;
        if check != "ok" {
            return Err(Opened::Corrupt(format!("quick_check: {check}")));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(Opened::from)?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|e| match e {
                rusqlite_migration::Error::RusqliteError { err, .. } => Opened::from(err),
                other => Opened::Failed(other.to_string()),
            })?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            limits,
        })
    }

    fn move_aside(path: &Path) -> Result<PathBuf, ReportError> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{}", now_ms()));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| ReportError::Queue {
            path: path.to_owned(),
            message: format!("moving the corrupt queue to {}: {e}", aside.display()),
        })?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let mut side_aside = aside.as_os_str().to_owned();
            side_aside.push(suffix);
            // A missing side file is the usual case; anything else would resurface on open.
            let _ = std::fs::rename(&side, &side_aside);
        }
        Ok(aside)
    }

    fn fail(&self, e: rusqlite::Error) -> ReportError {
        ReportError::Queue {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `report`, then drops the oldest reports while the queue is over its limits;
    /// returns how many were dropped (counted as [`DropReason::QueueFull`]).
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn push(&mut self, report: &Report) -> Result<u64, ReportError> {
        let body = serde_json::to_string(report).map_err(|e| ReportError::Queue {
            path: self.path.clone(),
            message: format!("encoding a report: {e}"),
        })?;
        let bytes = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let limits = self.limits;
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| ReportError::Queue {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(fail)?;
        let mut dropped = 0u64;
        let result = (|| {
            tx.execute(
                "INSERT INTO queue (body, bytes, queued_ms) VALUES (?1, ?2, ?3)",
                params![body, bytes, i64::try_from(now_ms()).unwrap_or(i64::MAX)],
            )?;
            loop {
                let (count, total): (i64, i64) = tx.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM queue",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let over = u64::try_from(count).unwrap_or(0) > limits.max_reports
                    || u64::try_from(total).unwrap_or(0) > limits.max_bytes;
                if !over || count == 0 {
                    break;
                }
                tx.execute(
                    "DELETE FROM queue WHERE id = (SELECT MIN(id) FROM queue)",
                    [],
                )?;
                dropped += 1;
            }
            if dropped > 0 {
                count_drop(&tx, DropReason::QueueFull, dropped)?;
            }
            Ok(())
        })();
        result.map_err(fail)?;
        tx.commit().map_err(fail)?;
        if dropped > 0 {
            metrics::counter!("spike_report_dropped_total", "reason" => DropReason::QueueFull.as_str())
                .increment(dropped);
        }
        Ok(dropped)
    }

    /// The oldest queued report, if any.
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn oldest(&self) -> Result<Option<Queued>, ReportError> {
        self.conn
            .query_row("SELECT id, body FROM queue ORDER BY id LIMIT 1", [], |r| {
                Ok(Queued {
                    id: r.get(0)?,
                    body: r.get(1)?,
                })
            })
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Removes a delivered report.
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn remove(&mut self, id: i64) -> Result<(), ReportError> {
        self.conn
            .execute("DELETE FROM queue WHERE id = ?1", params![id])
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// Removes an undeliverable report and counts it under `reason`.
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn drop_report(&mut self, id: i64, reason: DropReason) -> Result<(), ReportError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| ReportError::Queue {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(fail)?;
        let result = (|| {
            let removed = tx.execute("DELETE FROM queue WHERE id = ?1", params![id])?;
            count_drop(&tx, reason, u64::try_from(removed).unwrap_or(0))
        })();
        result.map_err(fail)?;
        // Counted before the commit, so whoever sees the queue empty also sees the count.
        metrics::counter!("spike_report_dropped_total", "reason" => reason.as_str()).increment(1);
        tx.commit().map_err(fail)?;
        Ok(())
    }

    /// How many reports are queued.
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn len(&self) -> Result<u64, ReportError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.fail(e))
    }

    /// Whether no report is queued.
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn is_empty(&self) -> Result<bool, ReportError> {
        Ok(self.len()? == 0)
    }

    /// How many reports were dropped for `reason`, over the file's life.
    ///
    /// Errors: [`ReportError::Queue`] when SQLite fails.
    pub fn dropped(&self, reason: DropReason) -> Result<u64, ReportError> {
        self.conn
            .query_row(
                "SELECT count FROM dropped WHERE reason = ?1",
                params![reason.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
            .map_err(|e| self.fail(e))
    }
}

fn count_drop(conn: &Connection, reason: DropReason, n: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO dropped (reason, count) VALUES (?1, ?2)
         ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count",
        params![reason.as_str(), i64::try_from(n).unwrap_or(i64::MAX)],
    )
    .map(|_| ())
}

/// Why opening failed: a corrupt file (move it aside) or anything else (report it).
enum Opened {
    Corrupt(String),
    Failed(String),
}

impl From<rusqlite::Error> for Opened {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                Opened::Corrupt(e.to_string())
            }
            _ => Opened::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(message: &str) -> Report {
        Report {
            kind: "sync".into(),
            message: message.into(),
            chain: vec![],
            version: "0.1.0".into(),
            os: "linux-x86_64".into(),
            room: None,
            at: Some(1),
        }
    }

    #[test]
    fn bounded_by_count_oldest_dropped_and_counted() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("reports.sqlite");
        let limits = QueueLimits {
            max_reports: 3,
            max_bytes: 1 << 20,
        };
        let mut queue = Queue::open(&path, limits)?;
        for i in 0..5 {
            queue.push(&report(&format!("m{i}")))?;
        }
        assert_eq!(queue.len()?, 3);
        assert_eq!(queue.dropped(DropReason::QueueFull)?, 2);
        let oldest = queue.oldest()?.ok_or("empty")?;
        assert!(oldest.body.contains("\"m2\""), "{}", oldest.body);
        // Counts survive a reopen.
        drop(queue);
        let queue = Queue::open(&path, limits)?;
        assert_eq!(
            (queue.len()?, queue.dropped(DropReason::QueueFull)?),
            (3, 2)
        );
        Ok(())
    }

    #[test]
    fn bounded_by_bytes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let one = serde_json::to_string(&report("m0"))?.len() as u64;
        let limits = QueueLimits {
            max_reports: 100,
            max_bytes: one * 2 + one / 2,
        };
        let mut queue = Queue::open(&dir.path().join("q.sqlite"), limits)?;
        for i in 0..4 {
            queue.push(&report(&format!("m{i}")))?;
        }
        assert_eq!(
            (queue.len()?, queue.dropped(DropReason::QueueFull)?),
            (2, 2)
        );
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_rebuilt() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("reports.sqlite");
        let garbage = vec![0x5au8; 8192];
        std::fs::write(&path, &garbage)?;
        let mut queue = Queue::open(&path, QueueLimits::default())?;
        queue.push(&report("after"))?;
        assert_eq!(queue.len()?, 1);
        let aside: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("reports.sqlite.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(dir.path().join(&aside[0]))?;
        assert_eq!(kept, garbage);
        Ok(())
    }
}
