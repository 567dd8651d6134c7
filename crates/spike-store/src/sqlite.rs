//! The local disk tier: one SQLite database file.
//!
//! Schema (migrated with rusqlite_migration; `PRAGMA application_id` = [`APPLICATION_ID`],
//! `user_version` 1):
//!
//! ```sql
//! entries(id INTEGER PRIMARY KEY, key TEXT UNIQUE,   -- Key::path(): blobs/<hex>, kv/<ns>/<key>
//!         size INTEGER, etag TEXT, content_type TEXT,
//!         expires_at INTEGER, modified_at INTEGER,    -- Unix milliseconds
//!         accessed_at INTEGER,                        -- Unix milliseconds, for LRU
//!         body BLOB)                                  -- last: a head never reads it
//! usage(id = 0, bytes INTEGER)                        -- sum of entries.size, kept by triggers
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BlockingRetryable, ConstantBuilder};
use bytes::Bytes;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use rusqlite_migration::{Migrations, M};

use crate::metered::evicted;
use crate::{
    check_blob, BlobHash, Condition, ETag, Entry, Freshness, Key, Listed, Meta, Prefix, PutOptions,
    StoreError, Tier,
};

const TIER: &str = "sqlite";

/// The `PRAGMA application_id` of a Spike store file: `SPKS` in ASCII. A file with another id
/// (or with tables and no id) belongs to another program and is moved aside, never written.
/// Registry of ids: <https://www.sqlite.org/src/artifact?ci=trunk&filename=magic.txt>.
pub const APPLICATION_ID: i32 = 0x5350_4B53;

const MIGRATIONS: &[M<'static>] = &[M::up(
    "PRAGMA application_id = 1397771091;
     CREATE TABLE entries (
         id INTEGER PRIMARY KEY,
         key TEXT NOT NULL UNIQUE,
         size INTEGER NOT NULL,
         etag TEXT NOT NULL,
         content_type TEXT,
         expires_at INTEGER,
         modified_at INTEGER NOT NULL,
         accessed_at INTEGER NOT NULL,
         body BLOB NOT NULL
     );
     CREATE INDEX entries_lru ON entries(accessed_at, id);
     CREATE TABLE usage (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
     INSERT INTO usage VALUES (0, 0);
     CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN
         UPDATE usage SET bytes = bytes + NEW.size WHERE id = 0;
     END;
     CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN
         UPDATE usage SET bytes = bytes - OLD.size WHERE id = 0;
     END;
     CREATE TRIGGER entries_resize AFTER UPDATE OF size ON entries BEGIN
         UPDATE usage SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
     END;",
)];

/// How a [`SqliteTier`] is opened.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The bound on the sum of stored body sizes, bytes. Before a put that would take the sum
    /// past it, the least recently used entries (other than the one being written) are evicted,
    /// in the same transaction, until the new body fits. A single body larger than this is refused ([`StoreError::TooLarge`]).
    pub max_bytes: u64,
    /// How stale a recorded access time may get before a read rewrites it. A read that would
    /// only move `accessed_at` by less than this does not write, so hits stay reads; LRU order
    /// is exact to this resolution. Default 1 s.
    pub lru_resolution: Duration,
    /// How long a call waits for another connection (another process) holding the write lock
    /// before failing with [`StoreError::Unavailable`] (SQLite `busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
    /// A hard cap on the database size in pages of 4 KiB (SQLite `max_page_count`), or `None`
    /// for the file system's limit. A write past it fails with [`StoreError::Full`] exactly as
    /// a full disk does, which is how the tests emulate one.
    pub max_page_count: Option<u32>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            lru_resolution: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(5),
            max_page_count: None,
        }
    }
}

/// The local disk tier: every entry in one SQLite database (WAL mode), bounded by bytes with
/// LRU eviction, keeping expired entries as stored (the [`Tier`] contract) until they are
/// evicted.
///
/// - **Integrity**: [`SqliteTier::open`] runs `PRAGMA quick_check` and reads the
///   `application_id`. A file that is not a SQLite database, is damaged, belongs to another
///   program, or has a schema newer than this build knows is renamed to
///   `<name>.corrupt-<unix ms>` (its `-wal` beside it) with a `tracing` warning, and a new
///   database is created in its place. It is a cache: losing it costs refetches, never a crash.
/// - **Processes**: any number of processes may open the same file. Writes take the write lock
///   up front (`BEGIN IMMEDIATE`), so a compare-and-set is atomic across processes too, and
///   wait up to [`SqliteOptions::busy_timeout`] for it.
/// - **Threads**: SQLite calls block (on the disk, on another process's lock for up to the busy
///   timeout), so each call runs on tokio's blocking pool (`spawn_blocking`) and never stalls
///   a runtime worker; outside a tokio runtime it runs inline. Reads and writes use two
///   connections, each behind a mutex, so a read never waits behind a write in this process
///   (WAL readers do not block on the writer).
/// - **Full disk**: a write that runs out of space is rolled back and fails with
///   [`StoreError::Full`]; what was stored stays readable.
/// - **Metrics**: evictions count in `spike_store_evictions_total{tier="sqlite"}`.
#[derive(Clone)]
pub struct SqliteTier {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Mutex<Connection>,
    max_bytes: u64,
    lru_resolution_ms: i64,
}

/// Why an existing file cannot be used as it is.
enum Unusable {
    /// Damaged, not a database, or another program's: move it aside.
    Damaged(String),
    /// Cannot be judged (permissions, locked): an error for the caller.
    Error(StoreError),
}

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// Maps a SQLite error to the store's: a full disk or page cap is [`StoreError::Full`], a lock
/// held past the busy timeout is [`StoreError::Unavailable`], the rest is a backend error.
fn sql_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full {
            tier: TIER,
            reason: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable {
            tier: TIER,
            reason: e.to_string(),
        },
        _ => StoreError::backend(TIER, e),
    }
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection usable: SQLite rolls back an
    // unfinished transaction when its handle is next used or dropped.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key_from_path(path: &str) -> Result<Key, StoreError> {
    let bad = |reason: &str| StoreError::backend(TIER, format!("stored key {path:?}: {reason}"));
    if let Some(hex) = path.strip_prefix("blobs/") {
        let hash: BlobHash = format!("{}{hex}", BlobHash::PREFIX)
            .parse()
            .map_err(|_| bad("not a blob hash"))?;
        return Ok(Key::Blob(hash));
    }
    let rest = path
        .strip_prefix("kv/")
        .ok_or_else(|| bad("neither blobs/ nor kv/"))?;
    let (namespace, key) = rest.split_once('/').ok_or_else(|| bad("no namespace"))?;
    Key::kv(namespace, key).map_err(|_| bad("not a valid KV key"))
}

/// The smallest string greater than every string that starts with `prefix`, if one exists: the
/// prefix with its last character incremented (UTF-8 byte order is code point order, which is
/// SQLite's BINARY collation).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn meta_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Meta> {
    let size: i64 = row.get(first)?;
    let expires_at: Option<i64> = row.get(first + 3)?;
    Ok(Meta {
        size: u64::try_from(size).unwrap_or(0),
        etag: ETag::from_raw(row.get::<_, String>(first + 1)?),
        content_type: row.get(first + 2)?,
        expires_at: expires_at.map(from_ms),
        modified_at: from_ms(row.get(first + 4)?),
    })
}

/// Opens a connection with the settings every connection of the tier shares.
fn connect(path: &Path, options: &SqliteOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(options.busy_timeout)?;
    Ok(conn)
}

/// Judges an existing file: `Ok` if it is ours (or an empty database), else why not.
fn inspect(path: &Path, options: &SqliteOptions) -> Result<(), Unusable> {
    let judge = |e: rusqlite::Error| {
        if is_damage(&e) {
            Unusable::Damaged(e.to_string())
        } else {
            Unusable::Error(sql_error(e))
        }
    };
    let conn = connect(path, options).map_err(judge)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(judge)?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(Unusable::Damaged(format!(
            "quick_check: {}",
            problems.join("; ")
        )));
    }
    // One statement, one snapshot: the id and the tables are created in one transaction.
    let (app_id, tables, version): (i32, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id()),
                    (SELECT count(*) FROM sqlite_schema),
                    (SELECT user_version FROM pragma_user_version())",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(judge)?;
    let known = MIGRATIONS.len() as i64;
    match (app_id, tables) {
        (APPLICATION_ID, _) if version > known => Err(Unusable::Damaged(format!(
            "schema version {version} is newer than this build's {known}"
        ))),
        (APPLICATION_ID, _) | (0, 0) => Ok(()),
        (0, n) => Err(Unusable::Damaged(format!(
            "another program's database ({n} schema objects, no application_id)"
        ))),
        (other, _) => Err(Unusable::Damaged(format!(
            "another program's database (application_id {other:#x})"
        ))),
    }
}

/// Renames a damaged database (and its WAL) out of the way; returns the new name.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{}", now_ms()));
    let aside = PathBuf::from(aside);
    let io = |e: std::io::Error| StoreError::backend(TIER, e);
    std::fs::rename(path, &aside).map_err(io)?;
    let sidecar = |base: &Path, suffix: &str| {
        let mut p = base.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    if sidecar(path, "-wal").exists() {
        std::fs::rename(sidecar(path, "-wal"), sidecar(&aside, "-wal")).map_err(io)?;
    }
    // The shared-memory index is rebuilt from the WAL by whoever opens the file next.
    if sidecar(path, "-shm").exists() {
        std::fs::remove_file(sidecar(path, "-shm")).map_err(io)?;
    }
    Ok(aside)
}

/// How long opening waits out another process that is creating or judging the same file: ten
/// tries 20 ms apart (with jitter).
fn racing_open() -> ConstantBuilder {
    ConstantBuilder::default()
        .with_delay(Duration::from_millis(20))
        .with_jitter()
        .with_max_times(10)
}

impl SqliteTier {
    /// Opens (creating if missing) the store database at `path`, moving a damaged or foreign
    /// file aside first (see [`SqliteTier`]). Blocks on the disk: call it from
    /// `spawn_blocking` in async code.
    ///
    /// Errors: [`StoreError::Backend`] when the file cannot be opened, judged or moved (e.g.
    /// permissions), [`StoreError::Unavailable`] when another process holds it locked past the
    /// busy timeout.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if path.exists() {
            // A file another process is creating this moment may be briefly locked.
            let judged = (|| inspect(path, &options))
                .retry(racing_open())
                .sleep(std::thread::sleep)
                .when(|e| matches!(e, Unusable::Error(StoreError::Unavailable { .. })))
                .call();
            match judged {
                Ok(()) => {}
                Err(Unusable::Error(e)) => return Err(e),
                Err(Unusable::Damaged(reason)) => {
                    let aside = move_aside(path)?;
                    tracing::warn!(
                        path = %path.display(),
                        moved_to = %aside.display(),
                        %reason,
                        "store database unusable; moved aside and starting a new one"
                    );
                }
            }
        }
        let writer = connect(path, &options).map_err(sql_error)?;
        Self::configure_writer(writer, path, &options)
    }

    fn configure_writer(
        mut writer: Connection,
        path: &Path,
        options: &SqliteOptions,
    ) -> Result<Self, StoreError> {
        // NORMAL in WAL mode: a commit survives a process crash; only an OS crash may lose the
        // last commits, which for a cache costs a refetch.
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql_error)?;
        if let Some(pages) = options.max_page_count {
            writer
                .pragma_update(None, "max_page_count", pages)
                .map_err(sql_error)?;
        }
        let migrations = Migrations::from_slice(MIGRATIONS);
        let setup = |conn: &mut Connection| -> Result<(), StoreError> {
            let _mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(sql_error)?;
            migrations
                .to_latest(conn)
                .map_err(|e| StoreError::backend(TIER, e))
        };
        // Two processes opening a new file race: both switching it to WAL is a lock upgrade
        // that SQLite refuses at once rather than deadlock (SQLITE_BUSY without the busy
        // handler), and both creating the schema fails one of them ("table exists"). A second
        // look, a moment later, finds the winner's work done.
        (|| setup(&mut writer))
            .retry(
                racing_open(),
            )
            .sleep(std::thread::sleep)
            .notify(|e, after| {
                tracing::debug!(path = %path.display(), error = %e, ?after, "store database setup raced; retrying");
            })
            .call()?;
        let reader = connect(path, options).map_err(sql_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                reader: Mutex::new(reader),
                writer: Mutex::new(writer),
                max_bytes: options.max_bytes,
                lru_resolution_ms: i64::try_from(options.lru_resolution.as_millis())
                    .unwrap_or(i64::MAX),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The sum of stored body sizes now, bytes (what [`SqliteOptions::max_bytes`] bounds).
    pub async fn used_bytes(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            let conn = lock(&inner.reader);
            let bytes: i64 = conn
                .query_row("SELECT bytes FROM usage WHERE id = 0", [], |r| r.get(0))
                .map_err(sql_error)?;
            Ok(u64::try_from(bytes).unwrap_or(0))
        })
        .await
    }

    /// Runs blocking SQLite work off the async runtime (see [`SqliteTier`], Threads).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || work(&inner))
                .await
                .map_err(|e| StoreError::backend(TIER, e))?,
            Err(_) => work(&inner),
        }
    }
}

impl Inner {
    fn get(&self, key: &Key, with_body: bool) -> Result<Option<Entry>, StoreError> {
        let path = key.path();
        let found = {
            let conn = lock(&self.reader);
            let sql = if with_body {
                "SELECT size, etag, content_type, expires_at, modified_at, accessed_at, body
                 FROM entries WHERE key = ?1"
            } else {
                "SELECT size, etag, content_type, expires_at, modified_at, accessed_at
                 FROM entries WHERE key = ?1"
            };
            let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
            stmt.query_row([&path], |r| {
                let meta = meta_from_row(r, 0)?;
                let accessed_at: i64 = r.get(5)?;
                let body = if with_body {
                    Bytes::from(r.get::<_, Vec<u8>>(6)?)
                } else {
                    Bytes::new()
                };
                Ok((meta, accessed_at, body))
            })
            .optional()
            .map_err(sql_error)?
        };
        let Some((meta, accessed_at, body)) = found else {
            return Ok(None);
        };
        if with_body {
            let now = now_ms();
            if now.saturating_sub(accessed_at) >= self.lru_resolution_ms {
                self.touch(&path, now);
            }
        }
        Ok(Some(Entry {
            meta,
            body,
            freshness: Freshness::Fresh,
        }))
    }

    /// Records a read for LRU. Skipped when this process is writing (a read never waits behind
    /// a write; the next read records it); a failure (a full disk, another process holding the
    /// lock past the timeout) costs only LRU accuracy, so it is logged, not returned.
    fn touch(&self, path: &str, now: i64) {
        let conn = match self.writer.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let touched = conn
            .prepare_cached(
                "UPDATE entries SET accessed_at = ?2 WHERE key = ?1 AND accessed_at < ?2",
            )
            .and_then(|mut s| s.execute(params![path, now]));
        if let Err(e) = touched {
            tracing::debug!(key = path, error = %e, "sqlite store: access time not recorded");
        }
    }

    fn put(&self, key: &Key, body: &[u8], options: &PutOptions) -> Result<Meta, StoreError> {
        check_blob(key, body)?;
        if body.len() as u64 > self.max_bytes {
            return Err(StoreError::TooLarge {
                size: body.len() as u64,
                limit: self.max_bytes,
            });
        }
        let is_blob = matches!(key, Key::Blob(_));
        let path = key.path();
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let current = tx
            .prepare_cached(
                "SELECT size, etag, content_type, expires_at, modified_at FROM entries WHERE key = ?1",
            )
            .and_then(|mut s| s.query_row([&path], |r| meta_from_row(r, 0)).optional())
            .map_err(sql_error)?;
        options
            .condition
            .check(key, current.as_ref().map(|m| &m.etag))?;
        let now = now_ms();
        let replaced = current.as_ref().map_or(0, |m| m.size);
        if let (true, Some(existing)) = (is_blob, current) {
            tx.execute(
                "UPDATE entries SET accessed_at = ?2 WHERE key = ?1",
                params![path, now],
            )
            .map_err(sql_error)?;
            tx.commit().map_err(sql_error)?;
            return Ok(existing);
        }
        let mut meta = Meta::for_body(
            body,
            &PutOptions {
                ttl: if is_blob { None } else { options.ttl },
                ..options.clone()
            },
        );
        // Stored at millisecond precision; answer what a later read will say.
        meta.modified_at = from_ms(to_ms(meta.modified_at));
        meta.expires_at = meta.expires_at.map(|t| from_ms(to_ms(t)));
        // Room first, so the file never holds more than the bound plus one write in flight.
        let incoming =
            i64::try_from(meta.size).unwrap_or(i64::MAX) - i64::try_from(replaced).unwrap_or(0);
        let evictions = self.evict(&tx, &path, incoming)?;
        tx.prepare_cached(
            "INSERT INTO entries
                 (key, size, etag, content_type, expires_at, modified_at, accessed_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
             ON CONFLICT (key) DO UPDATE SET
                 size = excluded.size, etag = excluded.etag,
                 content_type = excluded.content_type, expires_at = excluded.expires_at,
                 modified_at = excluded.modified_at, accessed_at = excluded.accessed_at,
                 body = excluded.body",
        )
        .and_then(|mut s| {
            s.execute(params![
                path,
                meta.size as i64,
                meta.etag.as_str(),
                meta.content_type,
                meta.expires_at.map(to_ms),
                to_ms(meta.modified_at),
                body,
            ])
        })
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        evicted(TIER, evictions);
        Ok(meta)
    }

    /// Deletes least recently used entries, never `keep`, until the stored bytes plus
    /// `incoming` are within the bound; how many went.
    fn evict(
        &self,
        tx: &rusqlite::Transaction<'_>,
        keep: &str,
        incoming: i64,
    ) -> Result<u64, StoreError> {
        let used = |tx: &rusqlite::Transaction<'_>| -> Result<i64, StoreError> {
            tx.query_row("SELECT bytes FROM usage WHERE id = 0", [], |r| r.get(0))
                .map_err(sql_error)
        };
        let limit = i64::try_from(self.max_bytes).unwrap_or(i64::MAX);
        let mut over = used(tx)?.saturating_add(incoming) - limit;
        let mut evictions = 0;
        while over > 0 {
            let victims: Vec<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT id, size FROM entries WHERE key != ?1
                     ORDER BY accessed_at, id LIMIT 64",
                )
                .and_then(|mut s| {
                    s.query_map([keep], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sql_error)?;
            if victims.is_empty() {
                break;
            }
            for (id, size) in victims {
                if over <= 0 {
                    break;
                }
                tx.prepare_cached("DELETE FROM entries WHERE id = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(sql_error)?;
                over -= size;
                evictions += 1;
            }
        }
        Ok(evictions)
    }

    fn delete(&self, key: &Key, condition: &Condition) -> Result<bool, StoreError> {
        let path = key.path();
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let current: Option<String> = tx
            .prepare_cached("SELECT etag FROM entries WHERE key = ?1")
            .and_then(|mut s| s.query_row([&path], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        let current = current.map(ETag::from_raw);
        condition.for_delete().check(key, current.as_ref())?;
        let deleted = tx
            .execute("DELETE FROM entries WHERE key = ?1", [&path])
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        Ok(deleted > 0)
    }

    fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let start = match prefix {
            Prefix::Blobs => "blobs/".to_owned(),
            Prefix::Kv {
                namespace,
                key_prefix,
            } => format!("kv/{namespace}/{key_prefix}"),
        };
        let end = prefix_end(&start);
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, size, etag, content_type, expires_at, modified_at FROM entries
                 WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key",
            )
            .map_err(sql_error)?;
        let rows = stmt
            .query_map(params![start, end], |r| {
                Ok((r.get::<_, String>(0)?, meta_from_row(r, 1)?))
            })
            .map_err(sql_error)?;
        let mut listed = Vec::new();
        for row in rows {
            let (path, meta) = row.map_err(sql_error)?;
            if !path.starts_with(&start) {
                break;
            }
            let key = key_from_path(&path)?;
            if prefix.matches(&key) {
                listed.push(Listed { key, meta });
            }
        }
        Ok(listed)
    }
}

#[async_trait::async_trait]
impl Tier for SqliteTier {
    fn name(&self) -> &'static str {
        TIER
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let key = key.clone();
        self.run(move |inner| inner.get(&key, true)).await
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        let key = key.clone();
        self.run(move |inner| Ok(inner.get(&key, false)?.map(|e| e.meta)))
            .await
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        let key = key.clone();
        self.run(move |inner| inner.put(&key, &body, &options))
            .await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        let key = key.clone();
        self.run(move |inner| inner.delete(&key, &condition)).await
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let prefix = prefix.clone();
        self.run(move |inner| inner.list(&prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_exactly_the_strings_under_a_prefix() {
        assert_eq!(prefix_end("blobs/").as_deref(), Some("blobs0"));
        assert_eq!(prefix_end("kv/npm/a").as_deref(), Some("kv/npm/b"));
        assert_eq!(
            prefix_end("kv/npm/\u{D7FF}").as_deref(),
            Some("kv/npm/\u{E000}")
        );
        assert_eq!(
            prefix_end("kv/npm/x\u{10FFFF}").as_deref(),
            Some("kv/npm/y")
        );
        let end = prefix_end("kv/npm/é").unwrap_or_default();
        for under in ["kv/npm/é", "kv/npm/éz", "kv/npm/é\u{10FFFF}"] {
            assert!(under >= "kv/npm/é" && under < end.as_str(), "{under}");
        }
        for outside in ["kv/npm/f", "kv/npm/ê", "kv/npm/e\u{10FFFF}"] {
            assert!(
                !(outside >= "kv/npm/é" && outside < end.as_str()),
                "{outside}"
            );
        }
    }

    #[test]
    fn stored_keys_parse_back() -> Result<(), StoreError> {
        for key in [Key::blob_of(b"x"), Key::kv("npm", "esm.sh/a@1/b.js")?] {
            assert_eq!(key_from_path(&key.path())?, key);
        }
        assert!(key_from_path("kv/npm").is_err());
        assert!(key_from_path("other/x").is_err());
        Ok(())
    }

    #[test]
    fn time_round_trips_at_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_ms(to_ms(t)), t);
        let before = UNIX_EPOCH - Duration::from_millis(5);
        assert_eq!(from_ms(to_ms(before)), before);
    }
}
