//! The response cache: complete answers to deterministic requests, in SQLite.
//!
//! One table, `ai_responses`, keyed by the SHA-256 (hex) of a canonical JSON of the provider's
//! name, the model, the parameters (`system`, `max_tokens`, `temperature`, `tools`) and the
//! messages. The value is the answer's chunks as JSON (`Chunk`'s serde form), replayed as a
//! stream on a hit. Only requests that [`ChatRequest::is_cacheable`] and answers that reached
//! their final `Done` are stored: an error or a stream dropped half-way stores nothing.
//!
//! A file that is not a readable SQLite database (or fails `PRAGMA quick_check`) is moved aside
//! as `<file>.corrupt-<unix seconds>` and rebuilt, with a warning: a cache is never worth a crash.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use rusqlite::{params, Connection, OptionalExtension as _};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{AiError, ChatRequest, ChatStream, Chunk};

const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE ai_responses (
        key TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        chunks TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
)];

/// Answers kept unless told otherwise ([`ResponseCache::with_max_entries`]).
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// Complete answers stored by request hash; see the module docs. Share it with an `Arc`.
#[derive(Debug)]
pub struct ResponseCache {
    path: PathBuf,
    conn: Mutex<Connection>,
    max_entries: usize,
}

#[derive(Serialize)]
struct KeyMaterial<'a> {
    provider: &'a str,
    model: &'a str,
    system: Option<&'a str>,
    max_tokens: u32,
    temperature: Option<f32>,
    tools: &'a [crate::Tool],
    messages: &'a [crate::Message],
}

impl ResponseCache {
    /// Opens (creating if missing) the cache at `path`, in WAL mode, with its schema migrated.
    /// A corrupt file is moved aside and rebuilt (see the module docs).
    ///
    /// Errors: [`AiError::Cache`] when even a fresh file cannot be created there.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AiError> {
        let path = path.as_ref().to_path_buf();
        let conn = match open_checked(&path) {
            Ok(conn) => conn,
            Err(e) => {
                let aside = move_aside(&path).map_err(|io| cache_error(&path, &io))?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "the AI response cache was unreadable; moved it aside and starting empty"
                );
                metrics::counter!("spike_ai_cache_rebuilt_total").increment(1);
                open_checked(&path).map_err(|e| cache_error(&path, &e))?
            }
        };
        Ok(ResponseCache {
            path,
            conn: Mutex::new(conn),
            max_entries: DEFAULT_MAX_ENTRIES,
        })
    }

    /// Keeps at most `n` answers (at least 1): each store drops the least recently stored
    /// beyond that.
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// The file this cache lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key of `request` sent to `provider`: 64 hex digits of SHA-256.
    pub fn key(provider: &str, request: &ChatRequest) -> String {
        let material = KeyMaterial {
            provider,
            model: &request.model,
            system: request.system.as_deref(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            tools: &request.tools,
            messages: &request.messages,
        };
        // Serializing plain structs cannot fail; an empty key would only ever miss.
        let json = serde_json::to_vec(&material).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The stored answer for `key`, if any. A read error is logged and counts as a miss.
    pub fn get(&self, key: &str) -> Option<Vec<Chunk>> {
        let conn = self.conn.lock().ok()?;
        let found: Result<Option<String>, _> = conn
            .query_row(
                "SELECT chunks FROM ai_responses WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional();
        match found {
            Ok(Some(json)) => match serde_json::from_str(&json) {
                Ok(chunks) => Some(chunks),
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable AI cache entry; ignoring it");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key, error = %e, "AI cache read failed; asking the provider");
                None
            }
        }
    }

    /// Stores a complete answer under `key` (replacing any older one). A write error is logged,
    /// not returned: the answer was already delivered.
    pub fn put(&self, key: &str, provider: &str, model: &str, chunks: &[Chunk]) {
        let Ok(json) = serde_json::to_string(chunks) else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let Ok(conn) = self.conn.lock() else {
            return;
        };
        // REPLACE deletes and reinserts, so the rowid orders entries by their last store.
        let stored = conn
            .execute(
                "INSERT OR REPLACE INTO ai_responses (key, provider, model, chunks, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, provider, model, json, now],
            )
            .and_then(|_| {
                conn.execute(
                    "DELETE FROM ai_responses WHERE rowid <=
                     (SELECT rowid FROM ai_responses ORDER BY rowid DESC LIMIT 1 OFFSET ?1)",
                    params![i64::try_from(self.max_entries).unwrap_or(i64::MAX)],
                )
            });
        if let Err(e) = stored {
            tracing::warn!(key, error = %e, "AI cache write failed");
        }
    }

    /// How many answers are stored.
    pub fn len(&self) -> usize {
        let Ok(conn) = self.conn.lock() else {
            return 0;
        };
        conn.query_row("SELECT count(*) FROM ai_responses", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
        .unwrap_or(0)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stored answer as a stream, as the provider sent it (text pieces, tool calls, `Done`).
    pub fn replay(chunks: Vec<Chunk>) -> ChatStream {
        Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)))
    }

    /// Passes `stream` through unchanged and stores the answer under `key` when, and only when,
    /// it reaches `Done`; the store happens before `Done` is handed on.
    pub fn record(
        self: &Arc<Self>,
        stream: ChatStream,
        key: String,
        provider: String,
        model: String,
    ) -> ChatStream {
        let cache = self.clone();
        let mut seen: Vec<Chunk> = Vec::new();
        Box::pin(stream.map(move |item| {
            if let Ok(chunk) = &item {
                seen.push(chunk.clone());
                if matches!(chunk, Chunk::Done(_)) {
                    cache.put(&key, &provider, &model, &seen);
                    seen.clear();
                }
            }
            item
        }))
    }
}

fn cache_error(path: &Path, e: &dyn std::fmt::Display) -> AiError {
    AiError::Cache {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Opens the file and proves it is a healthy database with our schema.
fn open_checked(path: &Path) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The first statement that reads the header: "file is not a database" shows up here.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(format!("quick_check: {check}").into());
    }
    Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
    Ok(conn)
}

/// Renames the file (and its WAL and shared-memory files) to `<file>.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{secs}"));
    let aside = PathBuf::from(aside);
    if path.exists() {
        std::fs::rename(path, &aside)?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if side.exists() {
            let mut to = aside.as_os_str().to_owned();
            to.push(suffix);
            std::fs::rename(&side, PathBuf::from(to))?;
        }
    }
    Ok(aside)
}
