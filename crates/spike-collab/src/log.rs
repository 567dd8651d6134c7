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

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use rusqlite_migration::{Migrations, M};

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

/// A SQLite update log. See the module docs for the format.
#[derive(Debug)]
pub struct UpdateLog {
    conn: Connection,
    tail: usize,
    compact_after: usize,
}

impl UpdateLog {
    /// Opens (creating if missing) the log at `path` and migrates its schema.
    ///
    /// Errors: [`CollabError::Log`] (cannot open, not a database, locked),
    /// [`CollabError::Migration`].
    pub fn open(path: &Path) -> Result<Self, CollabError> {
        let mut conn = Connection::open(path)?;
        // Before anything that may take a lock: another connection (a room actor still
        // unloading) may hold the file for a moment.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL: a commit reaches the OS before it returns (survives a process crash) without
        // an fsync per update; FULL measured 2x the peers' CPU per update in the rooms bench,
        // 70 % of it kernel time in fsync.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let migrations = Migrations::from_slice(MIGRATIONS);
        if migrations.to_latest(&mut conn).is_err() {
            // Two openers of a new file can race to create the schema: the loser sees the
            // winner's tables on a second look.
            std::thread::sleep(std::time::Duration::from_millis(50));
            migrations.to_latest(&mut conn)?;
        }
        let tail: i64 = conn.query_row("SELECT count(*) FROM updates", [], |r| r.get(0))?;
        Ok(Self {
            conn,
            tail: usize::try_from(tail).unwrap_or(usize::MAX),
            compact_after: DEFAULT_COMPACT_AFTER,
        })
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

    /// Applies the whole log to `doc`. Errors: [`CollabError::CorruptLog`] for an update that
    /// does not decode or apply.
    pub fn load_into(&self, doc: &RoomDoc) -> Result<(), CollabError> {
        for (seq, update) in self.load()? {
            doc.apply_update(&update)
                .map_err(|e| CollabError::CorruptLog {
                    seq,
                    reason: e.to_string(),
                })?;
        }
        Ok(())
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

        let log = UpdateLog::open(&path)?;
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
