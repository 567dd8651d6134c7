//! The update log: a room's updates in SQLite, durable before they are acknowledged.
//!
//! One SQLite file per replica (a client's offline copy, or one room on the server), in
//! write-ahead-log mode with `synchronous = NORMAL`: when [`UpdateLog::append`] returns, the update
//! is committed to the WAL in the operating system's hands, so it survives SIGKILL or a crash of
//! the process; the WAL is fsynced at checkpoints, so a power loss can lose the last commits but
//! never corrupts the database (SQLite's documented guarantee for WAL + NORMAL).
//!
//! Schema (migrated with rusqlite_migration, `user_version` 1):
//! - `snapshot(id = 1, data BLOB, merged INTEGER)`: every update up to a compaction merged into
//!   one (lib0 v1, `Y.mergeUpdates`), and how many updates went into it over time;
//! - `updates(seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB)`: updates since, raw, in order;
//! - `meta(key TEXT PRIMARY KEY, value BLOB)`: small facts (the seeded flag, the server's
//!   confirmed state vector).
//!
//! Compaction merges the raw bytes (snapshot + updates) rather than re-encoding a document, so
//! nothing is lost: not updates the server has not confirmed yet, not updates still waiting for a
//! missing dependency (which a document encoding would drop).
//!
//! # Damaged files
//!
//! A log is damaged when its file exists with 0 bytes and no WAL content, when SQLite calls it
//! not a database (`SQLITE_NOTADB`, e.g. a destroyed header) or damaged (`SQLITE_CORRUPT`, e.g.
//! a bad page) while [`UpdateLog::open`] opens and migrates it or [`UpdateLog::load_into`] reads
//! it, or when an update in it does not decode or apply ([`RoomDoc::apply_update`] fails).
//! Then, never deleting anything:
//! 1. the file and its `-wal`/`-shm` companions are renamed to `<stem>.damaged-<unix ms>.<ext>`
//!    beside it (e.g. `rooms/a.damaged-1718000000000.sqlite3`);
//! 2. a copy of it is read as far as it goes: a destroyed 100-byte header is rebuilt in the copy
//!    first (page size guessed from the file), and a table that fails to scan is read row by
//!    row (`WHERE seq = ?` up to the highest sequence number), so one bad page or row does not
//!    hide the others;
//! 3. every update read is applied, in order and snapshot first, to a scratch document; those
//!    that apply are written, with their sequence numbers, into a new log at the original path,
//!    with every readable `meta` row;
//! 4. a `tracing` warning (error when updates are lost) names both files, the damage and the
//!    counts, and the metrics `spike_log_recoveries_total{kind}`,
//!    `spike_log_updates_recovered_total{kind}` and `spike_log_updates_lost_total{kind}` count
//!    it (`kind` as in [`DamageKind::as_str`]); the caller gets a [`Recovery`] report.
//!
//! If nothing can be read the new log is empty, and the damaged file stays aside.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use rusqlite_migration::{Migrations, M};

use crate::recover::{self, damage_kind, DamageKind, Recovery};
use crate::{CollabError, RoomDoc};

const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE snapshot (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        data BLOB NOT NULL,
        merged INTEGER NOT NULL
    );
    CREATE TABLE updates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        data BLOB NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
)];

/// Compact once this many updates follow the snapshot, unless told otherwise.
pub const DEFAULT_COMPACT_AFTER: usize = 500;

/// What [`UpdateLog::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Updates merged into the snapshot by this compaction.
    pub merged: usize,
    /// Size of the new snapshot, bytes.
    pub snapshot_bytes: usize,
}

/// A SQLite update log. See the module docs for the format; a damaged file is moved aside and
/// recovered, see [`Recovery`].
#[derive(Debug)]
pub struct UpdateLog {
    conn: Connection,
    path: PathBuf,
    tail: usize,
    compact_after: usize,
    recovery: Option<Recovery>,
}

/// Why [`open_sound`] did not open a log.
enum OpenFailure {
    /// The file is damaged: recover it.
    Damaged(DamageKind, String),
    /// Anything else (permissions, locked, a schema from a newer build): the caller's error.
    Error(CollabError),
}

impl From<rusqlite::Error> for OpenFailure {
    fn from(e: rusqlite::Error) -> Self {
        match damage_kind(&e) {
            Some(kind) => Self::Damaged(kind, e.to_string()),
            None => Self::Error(e.into()),
        }
    }
}

impl From<rusqlite_migration::Error> for OpenFailure {
    fn from(e: rusqlite_migration::Error) -> Self {
        match e {
            rusqlite_migration::Error::RusqliteError { err, .. } if damage_kind(&err).is_some() => {
                err.into()
            }
            other => Self::Error(other.into()),
        }
    }
}

/// Closes a connection to a damaged file without the checkpoint SQLite runs on close, so the
/// file and its WAL are moved aside exactly as they were found.
fn close_as_is(conn: Connection) {
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    drop(conn);
}

/// Opens (creating if missing), configures and migrates the log at `path` and counts its
/// tail. Damage is reported, not repaired.
fn open_sound(path: &Path) -> Result<(Connection, usize), OpenFailure> {
    if recover::is_truncated(path) {
        // Another opener may have created the file this instant: look again before judging.
        std::thread::sleep(Duration::from_millis(50));
        if recover::is_truncated(path) {
            return Err(OpenFailure::Damaged(
                DamageKind::Empty,
                "the file is 0 bytes and has no write-ahead log".into(),
            ));
        }
    }
    let mut conn = Connection::open(path)?;
    match configure(&mut conn) {
        Ok(tail) => Ok((conn, tail)),
        Err(e) => {
            close_as_is(conn);
            Err(e)
        }
    }
}

fn configure(conn: &mut Connection) -> Result<usize, OpenFailure> {
    // Before anything that may take a lock: another connection (a room actor still
    // unloading) may hold the file for a moment.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: a commit reaches the OS before it returns (survives a process crash) without
    // an fsync per update; FULL measured 2x the peers' CPU per update in the rooms bench,
    // 70 % of it kernel time in fsync.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let migrations = Migrations::from_slice(MIGRATIONS);
    if let Err(first) = migrations.to_latest(conn) {
        if let failure @ OpenFailure::Damaged(..) = OpenFailure::from(first) {
            return Err(failure);
        }
        // Two openers of a new file can race to create the schema: the loser sees the
        // winner's tables on a second look.
        std::thread::sleep(Duration::from_millis(50));
        migrations.to_latest(conn)?;
    }
    let tail: i64 = conn.query_row("SELECT count(*) FROM updates", [], |r| r.get(0))?;
    Ok(usize::try_from(tail).unwrap_or(usize::MAX))
}

/// Moves the damaged log at `path` aside, salvages it and writes what survives into a new log
/// at `path` (see the module docs). Returns the new log's connection and tail, and the report.
fn recover_file(
    path: &Path,
    kind: DamageKind,
    reason: String,
) -> Result<(Connection, usize, Recovery), CollabError> {
    let moved_to = recover::move_aside(path)?;
    let mut salvage = if kind == DamageKind::Empty {
        recover::Salvage::default()
    } else {
        recover::salvage(&moved_to, MIGRATIONS.len() as u32)
    };
    if let Some(why) = &salvage.unreadable {
        tracing::error!(path = %moved_to.display(), reason = %why, "nothing could be read from the damaged update log");
    }
    let (snapshot, updates) = recover::keep_applicable(&mut salvage);
    let (mut conn, _) = open_sound(path).map_err(|failure| match failure {
        OpenFailure::Error(e) => e,
        OpenFailure::Damaged(_, reason) => CollabError::LogFile {
            path: path.to_owned(),
            source: std::io::Error::other(format!("the new log is damaged too: {reason}")),
        },
    })?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((data, merged)) = &snapshot {
        tx.execute(
            "INSERT INTO snapshot (id, data, merged) VALUES (1, ?1, ?2)",
            params![data, merged],
        )?;
    }
    {
        let mut insert = tx.prepare("INSERT INTO updates (seq, data) VALUES (?1, ?2)")?;
        for (seq, data) in &updates {
            insert.execute(params![seq, data])?;
        }
        let mut insert = tx.prepare(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?;
        for (key, value) in &salvage.meta {
            insert.execute(params![key, value])?;
        }
    }
    tx.commit()?;
    let mut lost = salvage.lost;
    let updates_lost = lost.len();
    lost.truncate(recover::MAX_LOST_LISTED);
    let recovery = Recovery {
        kind,
        reason,
        moved_to,
        header_repaired: salvage.header_repaired,
        updates_recovered: updates.len() + usize::from(snapshot.is_some()),
        updates_lost,
        lost,
        meta_recovered: salvage.meta.len(),
    };
    recover::report(path, &recovery);
    Ok((conn, updates.len(), recovery))
}

impl UpdateLog {
    /// Opens (creating if missing) the log at `path` and migrates its schema. A damaged file
    /// (0 bytes, not a database, a bad page met while opening) is moved aside and what survives
    /// is recovered into a new log at `path` (see the module docs); [`UpdateLog::recovery`]
    /// then reports it. Blocks on the disk (and up to 10 s on another connection's lock).
    ///
    /// Errors: [`CollabError::Log`] (cannot open, locked), [`CollabError::Migration`] (e.g. a
    /// schema from a newer build), [`CollabError::LogFile`] (a damaged file cannot be moved
    /// aside or replaced).
    pub fn open(path: &Path) -> Result<Self, CollabError> {
        let (conn, tail, recovery) = match open_sound(path) {
            Ok((conn, tail)) => (conn, tail, None),
            Err(OpenFailure::Error(e)) => return Err(e),
            Err(OpenFailure::Damaged(kind, reason)) => {
                let (conn, tail, recovery) = recover_file(path, kind, reason)?;
                (conn, tail, Some(recovery))
            }
        };
        Ok(Self {
            conn,
            path: path.to_owned(),
            tail,
            compact_after: DEFAULT_COMPACT_AFTER,
            recovery,
        })
    }

    /// The recovery this log went through since it was opened (in [`UpdateLog::open`] or
    /// [`UpdateLog::load_into`]), if its file was damaged; the latest one if there were two.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Moves this log's damaged file aside and continues on a new one holding what survives.
    fn recover(&mut self, kind: DamageKind, reason: String) -> Result<(), CollabError> {
        let damaged = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        close_as_is(damaged);
        let (conn, tail, recovery) = recover_file(&self.path, kind, reason)?;
        self.conn = conn;
        self.tail = tail;
        self.recovery = Some(recovery);
        Ok(())
    }

    /// Sets the compaction threshold used by [`UpdateLog::compact_if_due`].
    pub fn set_compact_after(&mut self, updates: usize) {
        self.compact_after = updates.max(1);
    }

    /// Appends one update; durable when this returns.
    pub fn append(&mut self, update: &[u8]) -> Result<(), CollabError> {
        self.append_all(std::iter::once(update))
    }

    /// Appends updates in one transaction (one fsync); durable when this returns.
    pub fn append_all<'a>(
        &mut self,
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), CollabError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut insert = tx.prepare_cached("INSERT INTO updates (data) VALUES (?1)")?;
            for u in updates {
                insert.execute(params![u])?;
                n += 1;
            }
        }
        tx.commit()?;
        self.tail += n;
        Ok(())
    }

    /// Updates after the snapshot.
    pub fn tail_len(&self) -> usize {
        self.tail
    }

    /// The snapshot (if any) followed by every later update, in order.
    pub fn load(&self) -> Result<Vec<(i64, Vec<u8>)>, CollabError> {
        let mut out = Vec::with_capacity(self.tail + 1);
        if let Some(snapshot) = self
            .conn
            .query_row("SELECT data FROM snapshot WHERE id = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?
        {
            out.push((0, snapshot));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT seq, data FROM updates ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Applies the whole log to `doc` (a new, empty document), snapshot first. When the file
    /// turns out damaged (a bad page while reading, an update that does not decode or apply),
    /// the bad updates are skipped, the file is moved aside and what survives is recovered into
    /// a new log (see the module docs): `doc` then holds every update the new log holds.
    ///
    /// Returns the log's [`Recovery`] (from this call or from [`UpdateLog::open`]), `None` when
    /// the file was sound.
    ///
    /// Errors: [`CollabError::Log`] for a read failure that is not damage (e.g. I/O),
    /// [`CollabError::LogFile`] when the damaged file cannot be moved aside or replaced, and
    /// [`CollabError::CorruptLog`] when yrs failed part-way through an update
    /// ([`CollabError::Apply`]), so `doc` may hold a fragment of it: the file is recovered all
    /// the same, and loading again into a new document gives the recovered content.
    pub fn load_into(&mut self, doc: &RoomDoc) -> Result<Option<Recovery>, CollabError> {
        let rows = match self.load() {
            Ok(rows) => rows,
            Err(CollabError::Log(e)) => match damage_kind(&e) {
                Some(kind) => {
                    self.recover(kind, e.to_string())?;
                    self.load()?
                }
                None => return Err(CollabError::Log(e)),
            },
            Err(e) => return Err(e),
        };
        let mut bad: Vec<(i64, String)> = Vec::new();
        let mut partial = None;
        for (seq, update) in &rows {
            if let Err(e) = doc.apply_update(update) {
                tracing::warn!(path = %self.path.display(), seq, error = %e, "skipping an update of the log that does not apply");
                bad.push((*seq, e.to_string()));
                if matches!(e, CollabError::Apply(_)) {
                    partial = Some((*seq, e.to_string()));
                    break;
                }
            }
        }
        if let Some((seq, reason)) = bad.first() {
            let reason = format!(
                "{} update(s) do not apply, the first at seq {seq}: {reason}",
                bad.len()
            );
            self.recover(DamageKind::BadUpdate, reason)?;
        }
        if let Some((seq, reason)) = partial {
            return Err(CollabError::CorruptLog {
                seq,
                reason: format!(
                    "{reason} (the document may hold part of it; the log was recovered without \
                     it: load it again into a new document)"
                ),
            });
        }
        Ok(self.recovery.clone())
    }

    /// Compacts when more than the threshold of updates follow the snapshot. `doc` is the
    /// document this log holds, see [`UpdateLog::compact_with`].
    pub fn compact_if_due(&mut self, doc: &RoomDoc) -> Result<Option<Compaction>, CollabError> {
        if self.tail >= self.compact_after {
            self.compact_with(doc).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Replaces snapshot and updates with `doc`'s encoded state, in one transaction. `doc` must
    /// hold exactly what the log holds (every applied update was appended). When the doc has
    /// updates waiting for a missing dependency (which its encoding would drop), this merges the
    /// raw bytes instead ([`UpdateLog::compact`]).
    ///
    /// Why not always merge: yrs 0.28's merge turns gaps between updates into skip blocks, and
    /// applying such a snapshot later can panic inside yrs (`block_store.rs`, "attempt to
    /// subtract with overflow"); a document encoding has no skips.
    pub fn compact_with(&mut self, doc: &RoomDoc) -> Result<Compaction, CollabError> {
        if doc.has_pending() {
            return self.compact();
        }
        self.snapshot(doc)
    }

    /// Replaces snapshot and updates with `doc`'s encoded state even when `doc` has updates
    /// waiting for a missing dependency: those are dropped from the log (a server expires
    /// updates whose dependency never came; their author still holds them and sends them again
    /// on its next sync).
    pub fn compact_discarding_pending(&mut self, doc: &RoomDoc) -> Result<Compaction, CollabError> {
        self.snapshot(doc)
    }

    /// Bytes the log stores for its document: the snapshot plus every later update.
    pub fn stored_bytes(&self) -> Result<u64, CollabError> {
        let bytes: i64 = self.conn.query_row(
            "SELECT (SELECT coalesce(sum(length(data)), 0) FROM updates)
                  + (SELECT coalesce(sum(length(data)), 0) FROM snapshot)",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    fn snapshot(&mut self, doc: &RoomDoc) -> Result<Compaction, CollabError> {
        let data = doc.encode_state();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let merged_before: i64 = tx
            .query_row("SELECT merged FROM snapshot WHERE id = 1", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let merged = tx.execute("DELETE FROM updates", [])?;
        tx.execute(
            "INSERT INTO snapshot (id, data, merged) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, merged = excluded.merged",
            params![data, merged_before + merged as i64],
        )?;
        tx.commit()?;
        self.tail = 0;
        Ok(Compaction {
            merged,
            snapshot_bytes: data.len(),
        })
    }

    /// Merges the snapshot and every later update into a new snapshot, in one transaction.
    pub fn compact(&mut self) -> Result<Compaction, CollabError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (snapshot, merged_before): (Option<Vec<u8>>, i64) = tx
            .query_row("SELECT data, merged FROM snapshot WHERE id = 1", [], |r| {
                Ok((Some(r.get(0)?), r.get(1)?))
            })
            .optional()?
            .unwrap_or((None, 0));
        let mut updates: Vec<Vec<u8>> = Vec::new();
        let mut last_seq = 0i64;
        {
            let mut stmt = tx.prepare("SELECT seq, data FROM updates ORDER BY seq")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))?;
            for row in rows {
                let (seq, data) = row?;
                last_seq = seq;
                updates.push(data);
            }
        }
        let merged = updates.len();
        if merged == 0 {
            return Ok(Compaction {
                merged: 0,
                snapshot_bytes: snapshot.map_or(0, |s| s.len()),
            });
        }
        let all = snapshot.iter().chain(updates.iter());
        let data = yrs::merge_updates_v1(all).map_err(|e| CollabError::CorruptLog {
            seq: last_seq,
            reason: e.to_string(),
        })?;
        tx.execute(
            "INSERT INTO snapshot (id, data, merged) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, merged = excluded.merged",
            params![data, merged_before + merged as i64],
        )?;
        tx.execute("DELETE FROM updates WHERE seq <= ?1", params![last_seq])?;
        tx.commit()?;
        self.tail = 0;
        Ok(Compaction {
            merged,
            snapshot_bytes: data.len(),
        })
    }

    /// A value from the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, CollabError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a value in the `meta` table (durable when this returns).
    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), CollabError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Appends `update` and sets a meta value in one transaction: the room server seeds a room
    /// and marks it seeded atomically, so a crash can never seed twice.
    pub fn append_with_meta(
        &mut self,
        update: &[u8],
        key: &str,
        value: &[u8],
    ) -> Result<(), CollabError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT INTO updates (data) VALUES (?1)", params![update])?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        tx.commit()?;
        self.tail += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TextEdit;

    #[test]
    fn reopen_compact_and_keep_everything() -> Result<(), CollabError> {
        let dir = tempfile::tempdir().map_err(|e| CollabError::Apply(e.to_string()))?;
        let path = dir.path().join("room.sqlite3");
        let author = RoomDoc::with_client_id(1);
        let other = RoomDoc::with_client_id(2);
        let mut log = UpdateLog::open(&path)?;
        log.set_compact_after(10);
        let mut held_back = None;
        for i in 0..25u32 {
            let u = if i == 0 {
                author.create_file("a.ts", "")?
            } else {
                author.edit("a.ts", &[TextEdit::insert(0, format!("{i},"))])?
            };
            let u = u.ok_or(CollabError::Closed)?;
            log.append(&u)?;
            log.compact_if_due(&author)?;
        }
        // An update whose dependency never arrives: it must survive compaction too.
        let base = other.create_file("b.ts", "x")?.ok_or(CollabError::Closed)?;
        let dependent = other
            .edit("b.ts", &[TextEdit::insert(1, "y")])?
            .ok_or(CollabError::Closed)?;
        log.append(&dependent)?;
        held_back.replace(base);
        log.compact()?;
        assert_eq!(log.tail_len(), 0);
        drop(log);

        let mut log = UpdateLog::open(&path)?;
        let replica = RoomDoc::with_client_id(3);
        log.load_into(&replica)?;
        assert_eq!(replica.read("a.ts"), author.read("a.ts"));
        assert!(replica.has_pending());
        replica.apply_update(&held_back.unwrap_or_default())?;
        assert_eq!(replica.read("b.ts").as_deref(), Some("xy"));
        assert!(!replica.has_pending());
        Ok(())
    }

    #[test]
    fn seed_marker_is_atomic_with_update() -> Result<(), CollabError> {
        let dir = tempfile::tempdir().map_err(|e| CollabError::Apply(e.to_string()))?;
        let path = dir.path().join("room.sqlite3");
        let mut log = UpdateLog::open(&path)?;
        assert_eq!(log.meta("seeded")?, None);
        let doc = RoomDoc::with_client_id(9);
        let u = doc
            .seed(&[("App.tsx", "x")], &[])
            .ok_or(CollabError::Closed)?;
        log.append_with_meta(&u, "seeded", b"example")?;
        drop(log);
        let log = UpdateLog::open(&path)?;
        assert_eq!(log.meta("seeded")?.as_deref(), Some(&b"example"[..]));
        assert_eq!(log.tail_len(), 1);
        Ok(())
    }
}
