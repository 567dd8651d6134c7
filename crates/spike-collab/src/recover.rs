//! Recovery of a damaged update log: what counts as damage, moving the file aside, reading what
//! survives from a copy of it (repairing a destroyed header first), and checking each update.
//! [`crate::UpdateLog`] drives it and writes the survivors into a new log; see its docs.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::{CollabError, RoomDoc};

/// Counter: damaged update logs moved aside and recovered, by `kind` ([`DamageKind::as_str`]).
pub(crate) const RECOVERIES_TOTAL: &str = "spike_log_recoveries_total";
/// Counter: updates (the snapshot counts as one) copied from damaged logs into new ones, by
/// `kind`.
pub(crate) const UPDATES_RECOVERED_TOTAL: &str = "spike_log_updates_recovered_total";
/// Counter: updates (the snapshot counts as one) of damaged logs that could not be read or did
/// not apply, by `kind`; they stay in the moved-aside file.
pub(crate) const UPDATES_LOST_TOTAL: &str = "spike_log_updates_lost_total";

/// At most this many lost updates are listed one by one in [`Recovery::lost`].
pub(crate) const MAX_LOST_LISTED: usize = 1000;
/// At most this many row lookups when a damaged table is read row by row.
const MAX_PROBES: i64 = 10_000_000;
/// Page sizes SQLite allows (bytes).
const PAGE_SIZES: [u32; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
/// The 16 bytes every SQLite database file starts with.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// How an update log was found damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DamageKind {
    /// The file exists with 0 bytes and has no write-ahead log content (truncated).
    Empty,
    /// SQLite does not recognise the file (`SQLITE_NOTADB`): its header is damaged, or it is not
    /// a database.
    NotADatabase,
    /// SQLite found a damaged page or record (`SQLITE_CORRUPT`) while opening, migrating or
    /// reading.
    Corrupt,
    /// The database is sound but an update in it does not decode or does not apply.
    BadUpdate,
}

impl DamageKind {
    /// The `kind` label of the recovery metrics: `empty`, `not_a_database`, `corrupt` or
    /// `bad_update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotADatabase => "not_a_database",
            Self::Corrupt => "corrupt",
            Self::BadUpdate => "bad_update",
        }
    }
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An update of a damaged log that was not recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostUpdate {
    /// Its sequence number in the damaged file (0 for the snapshot).
    pub seq: i64,
    /// Why: SQLite's error for an unreadable row, the decoder's or yrs's for a bad update.
    pub reason: String,
}

/// What [`crate::UpdateLog`] did with a damaged file.
///
/// A log is damaged when its file has 0 bytes and no WAL content, when SQLite reports it not a
/// database or corrupt while it is opened, migrated or read, or when one of its updates does
/// not decode or apply. The damaged file (and its `-wal`/`-shm` companions, when present) was
/// renamed to `moved_to`, nothing was deleted; every update that could still be read (a
/// destroyed header is rebuilt in a copy; a damaged table is read row by row) and applied, in
/// order and snapshot first, keeping its sequence number, and every readable `meta` row, were
/// written into a new log at the original path. It was logged (`tracing` warning, or error when
/// updates are lost) and counted in the counters `spike_log_recoveries_total{kind}`,
/// `spike_log_updates_recovered_total{kind}` and `spike_log_updates_lost_total{kind}` (`kind`
/// is [`DamageKind::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// How the damage showed.
    pub kind: DamageKind,
    /// The error that revealed it.
    pub reason: String,
    /// Where the damaged file is now: `<stem>.damaged-<unix ms>.<ext>` beside it (`-1`, `-2`, …
    /// appended to the milliseconds if that name is taken).
    pub moved_to: PathBuf,
    /// The file's 100-byte header was unreadable and was rebuilt (in a copy) to read it.
    pub header_repaired: bool,
    /// Updates in the new log (the snapshot counts as one).
    pub updates_recovered: usize,
    /// Updates that could not be read or did not apply (the snapshot counts as one). Rows whose
    /// page is gone without a trace cannot be counted when the table's range of sequence
    /// numbers cannot be read either.
    pub updates_lost: usize,
    /// The lost updates, in order (the first 1000).
    pub lost: Vec<LostUpdate>,
    /// `meta` rows copied into the new log.
    pub meta_recovered: usize,
}

/// The damage an SQLite error shows, if it is one.
pub(crate) fn damage_kind(e: &rusqlite::Error) -> Option<DamageKind> {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Some(DamageKind::NotADatabase),
        Some(ErrorCode::DatabaseCorrupt) => Some(DamageKind::Corrupt),
        _ => None,
    }
}

/// `path` with `suffix` appended to its name (`room.sqlite3` + `-wal`).
pub(crate) fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Whether `path` exists with 0 bytes while its `-wal` is missing or empty (a brand-new log
/// can have an empty main file while its first commits sit in the WAL).
pub(crate) fn is_truncated(path: &Path) -> bool {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    len(path) == Some(0) && len(&companion(path, "-wal")).unwrap_or(0) == 0
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CollabError + '_ {
    move |source| CollabError::LogFile {
        path: path.to_owned(),
        source,
    }
}

/// Renames `path` and its `-wal`/`-shm` companions to a free `<stem>.damaged-<ms>.<ext>`
/// sibling name; returns the new name of the main file.
pub(crate) fn move_aside(path: &Path) -> Result<PathBuf, CollabError> {
    let stem = path
        .file_stem()
        .map_or_else(|| "log".into(), |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let ms = now_ms();
    let mut aside = path.with_file_name(format!("{stem}.damaged-{ms}{ext}"));
    let mut n = 0u32;
    while aside.exists() || companion(&aside, "-wal").exists() {
        n += 1;
        aside = path.with_file_name(format!("{stem}.damaged-{ms}-{n}{ext}"));
    }
    std::fs::rename(path, &aside).map_err(io_error(path))?;
    for suffix in ["-wal", "-shm"] {
        let from = companion(path, suffix);
        if from.exists() {
            std::fs::rename(&from, companion(&aside, suffix)).map_err(io_error(&from))?;
        }
    }
    Ok(aside)
}

/// The snapshot row: its bytes and its `merged` count.
pub(crate) type Snapshot = (Vec<u8>, i64);
/// An update row: its sequence number and bytes.
pub(crate) type Row = (i64, Vec<u8>);

/// What could be read from a damaged file.
#[derive(Debug, Default)]
pub(crate) struct Salvage {
    /// The snapshot, if readable.
    pub snapshot: Option<Snapshot>,
    /// Readable updates, by sequence number, ascending.
    pub updates: Vec<Row>,
    /// Rows that could not be read.
    pub lost: Vec<LostUpdate>,
    /// Readable `meta` rows.
    pub meta: Vec<(String, Vec<u8>)>,
    /// The header was rebuilt to read the file.
    pub header_repaired: bool,
    /// Why nothing at all could be read, if so.
    pub unreadable: Option<String>,
}

/// Reads what survives of the damaged log at `aside` from a copy of it (`<aside>.reading`,
/// removed afterwards), so the damaged file itself is never written, not even by a
/// checkpoint. `user_version` is the schema version a rebuilt header gets.
pub(crate) fn salvage(aside: &Path, user_version: u32) -> Salvage {
    let scratch = companion(aside, ".reading");
    let result = salvage_copy(aside, &scratch, user_version);
    for suffix in ["", "-wal", "-shm"] {
        let p = companion(&scratch, suffix);
        if p.exists() {
            // Our own copy of the aside file: the aside file stays as it was.
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove a scratch copy");
            }
        }
    }
    result.unwrap_or_else(|reason| Salvage {
        unreadable: Some(reason),
        ..Salvage::default()
    })
}

fn salvage_copy(aside: &Path, scratch: &Path, user_version: u32) -> Result<Salvage, String> {
    std::fs::copy(aside, scratch).map_err(|e| format!("copying the damaged file: {e}"))?;
    let wal = companion(aside, "-wal");
    if wal.exists() {
        std::fs::copy(&wal, companion(scratch, "-wal"))
            .map_err(|e| format!("copying the damaged file's WAL: {e}"))?;
    }
    let mut header_repaired = false;
    let conn = match open_readable(scratch) {
        Ok(conn) => conn,
        Err(e) if damage_kind(&e) == Some(DamageKind::NotADatabase) => {
            let conn = repair_header(scratch, user_version)
                .map_err(|why| format!("{e}; the header could not be rebuilt: {why}"))?;
            header_repaired = true;
            conn
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Salvage {
        header_repaired,
        ..Salvage::default()
    };
    read_all(&conn, &mut out);
    Ok(out)
}

/// Opens `path` and reads its schema, the first thing that fails on a bad header.
fn open_readable(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(conn)
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Whether page 1 of `file` read with `page_size` starts a plausible table b-tree page at
/// offset 100 (the schema table's root): a table page type (0x05 interior, 0x0D leaf), a cell
/// content area and cell pointers inside the page, and for an interior page a right child
/// inside the file.
fn plausible_page_one(file: &[u8], page_size: u32) -> bool {
    let size = page_size as usize;
    let Some(page) = file.get(..size) else {
        return false;
    };
    let (header_len, leaf) = match page.get(100) {
        Some(0x0D) => (8usize, true),
        Some(0x05) => (12usize, false),
        _ => return false,
    };
    let (Some(cells), Some(content)) = (be16(page, 103), be16(page, 105)) else {
        return false;
    };
    let content = if content == 0 {
        65536
    } else {
        content as usize
    };
    let pointers_end = 100 + header_len + 2 * cells as usize;
    if content > size || pointers_end > size || (cells > 0 && content < pointers_end) {
        return false;
    }
    let pointers_ok = (0..cells as usize).all(|i| {
        be16(page, 100 + header_len + 2 * i)
            .is_some_and(|p| (p as usize) >= content && (p as usize) < size)
    });
    let pages = (file.len() / size) as u32;
    pointers_ok && (leaf || be32(page, 108).is_some_and(|c| c >= 2 && c <= pages))
}

/// Rebuilds the 100-byte header of the SQLite file at `path` (see
/// <https://www.sqlite.org/fileformat2.html>, "The Database Header") and opens it. The page
/// size is guessed: the WAL's page size first if it has a valid header, then every allowed
/// size, smallest first, that divides the file's length and gives page 1 a plausible b-tree
/// header (page 1's cell content sits at its end, so a smaller size than the true one fails);
/// the first candidate whose schema reads wins. The rest is what this log's files hold: WAL
/// mode (versions 2/2), no reserved bytes, payload fractions 64/32/32, no freelist (a lost
/// freelist only wastes pages), schema format 4, UTF-8, `user_version`.
fn repair_header(path: &Path, user_version: u32) -> Result<Connection, String> {
    let mut file = std::fs::read(path).map_err(|e| e.to_string())?;
    let len = file.len();
    if len < 512 {
        return Err(format!("{len} bytes is shorter than one page"));
    }
    let wal_hint = std::fs::read(companion(path, "-wal")).ok().and_then(|wal| {
        let magic = be32(&wal, 0)?;
        let size = be32(&wal, 8)?;
        ((magic & !1) == 0x377f_0682 && PAGE_SIZES.contains(&size)).then_some(size)
    });
    let mut candidates: Vec<u32> = wal_hint.into_iter().collect();
    candidates.extend(PAGE_SIZES.iter().filter(|s| Some(**s) != wal_hint));
    let mut tried = Vec::new();
    for size in candidates {
        if len % size as usize != 0 || !plausible_page_one(&file, size) {
            continue;
        }
        let pages = (len / size as usize) as u32;
        let mut h = [0u8; 100];
        h[..16].copy_from_slice(MAGIC);
        // 65536 is stored as 1.
        let stored = if size == 65536 { 1 } else { size as u16 };
        h[16..18].copy_from_slice(&stored.to_be_bytes());
        h[18] = 2; // write version: WAL
        h[19] = 2; // read version: WAL
        h[20] = 0; // reserved bytes per page
        h[21] = 64; // max embedded payload fraction
        h[22] = 32; // min embedded payload fraction
        h[23] = 32; // leaf payload fraction
        h[24..28].copy_from_slice(&1u32.to_be_bytes()); // file change counter
        h[28..32].copy_from_slice(&pages.to_be_bytes()); // size in pages
                                                         // 32..40: no freelist.
        h[40..44].copy_from_slice(&1u32.to_be_bytes()); // schema cookie
        h[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
                                                        // 48..56: default cache size, no auto-vacuum.
        h[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
        h[60..64].copy_from_slice(&user_version.to_be_bytes());
        // 64..92: no incremental vacuum, no application id, reserved zeros.
        h[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for = change counter
        let version = u32::try_from(rusqlite::version_number()).unwrap_or(0);
        h[96..100].copy_from_slice(&version.to_be_bytes());
        file[..100].copy_from_slice(&h);
        std::fs::write(path, &file).map_err(|e| e.to_string())?;
        match open_readable(path) {
            Ok(conn) => {
                tracing::info!(path = %path.display(), page_size = size, "rebuilt the header");
                return Ok(conn);
            }
            Err(e) => tried.push(format!("{size}: {e}")),
        }
    }
    if tried.is_empty() {
        Err("no page size fits the file's length and its first page".into())
    } else {
        Err(format!(
            "no page size reads the schema ({})",
            tried.join("; ")
        ))
    }
}

/// Reads the snapshot, the updates and the meta rows, each as far as it goes.
fn read_all(conn: &Connection, out: &mut Salvage) {
    // The first sequence number still in `updates`, if it can be known: after the snapshot's
    // `merged` updates (compaction deletes them all, numbering never restarts), or 1 when there
    // was never a snapshot.
    let first_seq = match conn
        .query_row("SELECT data, merged FROM snapshot WHERE id = 1", [], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()
    {
        Ok(Some((data, merged))) => {
            out.snapshot = Some((data, merged));
            merged.checked_add(1)
        }
        Ok(None) => Some(1),
        Err(e) => {
            if damage_kind(&e).is_some() {
                out.lost.push(LostUpdate {
                    seq: 0,
                    reason: e.to_string(),
                });
            } else {
                tracing::warn!(error = %e, "the damaged log's snapshot table cannot be read");
            }
            None
        }
    };
    read_updates(conn, first_seq, out);
    read_meta(conn, out);
}

/// Reads rows with `sql` (two columns) as far as they go; returns the error that stopped it.
fn scan<A, B>(conn: &Connection, sql: &str, out: &mut Vec<(A, B)>) -> Option<rusqlite::Error>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
{
    let mut stmt = match conn.prepare(sql) {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    let mut rows = match stmt.query([]) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    loop {
        match rows.next() {
            Ok(Some(row)) => match (row.get(0), row.get(1)) {
                (Ok(a), Ok(b)) => out.push((a, b)),
                (Err(e), _) | (_, Err(e)) => return Some(e),
            },
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fn single(conn: &Connection, sql: &str) -> Option<i64> {
    conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .ok()
        .flatten()
}

/// Reads `updates` in one scan; when the scan fails, row by row (`WHERE seq = ?`) from after the
/// last row read up to the highest sequence number known (`sqlite_sequence`, `max(seq)`), so a
/// bad page costs only its own rows.
fn read_updates(conn: &Connection, first_seq: Option<i64>, out: &mut Salvage) {
    let Some(error) = scan(
        conn,
        "SELECT seq, data FROM updates ORDER BY seq",
        &mut out.updates,
    ) else {
        return;
    };
    tracing::warn!(error = %error, read = out.updates.len(), "reading the damaged log's updates row by row");
    let last = out.updates.last().map(|(s, _)| *s);
    let high = [
        single(
            conn,
            "SELECT seq FROM sqlite_sequence WHERE name = 'updates'",
        ),
        single(conn, "SELECT max(seq) FROM updates"),
    ]
    .into_iter()
    .flatten()
    .max();
    let Some(high) = high else {
        tracing::warn!("the damaged log's highest update number cannot be read");
        return;
    };
    // Numbering has no gaps between the first remaining row and the last, so inside a known
    // range a missing row is a lost one.
    let (start, known) = match last {
        Some(s) => (s.saturating_add(1), true),
        None => match single(conn, "SELECT min(seq) FROM updates").or(first_seq) {
            Some(s) => (s, true),
            None => (1, false),
        },
    };
    let end = if high.saturating_sub(start) >= MAX_PROBES {
        tracing::warn!(
            start,
            high,
            "too many update numbers to try; reading the first {MAX_PROBES}"
        );
        start.saturating_add(MAX_PROBES - 1)
    } else {
        high
    };
    let Ok(mut stmt) = conn.prepare("SELECT data FROM updates WHERE seq = ?1") else {
        return;
    };
    for seq in start..=end {
        match stmt
            .query_row(params![seq], |r| r.get::<_, Vec<u8>>(0))
            .optional()
        {
            Ok(Some(data)) => out.updates.push((seq, data)),
            Ok(None) if known => out.lost.push(LostUpdate {
                seq,
                reason: "row missing".into(),
            }),
            Ok(None) => {}
            Err(e) => out.lost.push(LostUpdate {
                seq,
                reason: e.to_string(),
            }),
        }
    }
}

/// Reads `meta` in one scan; when the scan fails, row by row by rowid.
fn read_meta(conn: &Connection, out: &mut Salvage) {
    let Some(error) = scan(
        conn,
        "SELECT key, value FROM meta ORDER BY rowid",
        &mut out.meta,
    ) else {
        return;
    };
    tracing::warn!(error = %error, read = out.meta.len(), "reading the damaged log's meta rows one by one");
    let Some(high) = single(conn, "SELECT max(rowid) FROM meta") else {
        return;
    };
    let Ok(mut stmt) = conn.prepare("SELECT key, value FROM meta WHERE rowid = ?1") else {
        return;
    };
    for rowid in 1..=high.min(100_000) {
        if let Ok(Some((key, value))) = stmt
            .query_row(params![rowid], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        {
            if !out.meta.iter().any(|(k, _)| *k == key) {
                out.meta.push((key, value));
            }
        }
    }
}

/// Applies the salvaged snapshot and updates, in order, to a scratch document and keeps those
/// that apply; the others join `salvage.lost`. After a failure that may have changed the
/// document part-way ([`CollabError::Apply`]), the scratch document is rebuilt from what was
/// kept, so a fragment never decides the fate of a later update.
pub(crate) fn keep_applicable(salvage: &mut Salvage) -> (Option<Snapshot>, Vec<Row>) {
    let mut doc = RoomDoc::new();
    let mut snapshot = salvage.snapshot.take();
    if let Some((data, _)) = &snapshot {
        if let Err(e) = doc.apply_update(data) {
            salvage.lost.push(LostUpdate {
                seq: 0,
                reason: e.to_string(),
            });
            snapshot = None;
            doc = RoomDoc::new();
        }
    }
    let mut kept: Vec<Row> = Vec::with_capacity(salvage.updates.len());
    for (seq, data) in std::mem::take(&mut salvage.updates) {
        match doc.apply_update(&data) {
            Ok(_) => kept.push((seq, data)),
            Err(e) => {
                let partial = matches!(e, CollabError::Apply(_));
                salvage.lost.push(LostUpdate {
                    seq,
                    reason: e.to_string(),
                });
                if partial {
                    doc = RoomDoc::new();
                    let history = snapshot
                        .iter()
                        .map(|(d, _)| d)
                        .chain(kept.iter().map(|(_, d)| d));
                    for d in history {
                        let _ = doc.apply_update(d);
                    }
                }
            }
        }
    }
    salvage.lost.sort_by_key(|l| l.seq);
    (snapshot, kept)
}

/// Logs a recovery and counts it in the metrics.
pub(crate) fn report(path: &Path, r: &Recovery) {
    let kind = r.kind.as_str();
    metrics::counter!(RECOVERIES_TOTAL, "kind" => kind).increment(1);
    metrics::counter!(UPDATES_RECOVERED_TOTAL, "kind" => kind)
        .increment(r.updates_recovered as u64);
    metrics::counter!(UPDATES_LOST_TOTAL, "kind" => kind).increment(r.updates_lost as u64);
    let lost: Vec<String> = r
        .lost
        .iter()
        .take(20)
        .map(|l| format!("seq {}: {}", l.seq, l.reason))
        .collect();
    if r.updates_lost > 0 || (r.kind != DamageKind::Empty && r.updates_recovered == 0) {
        tracing::error!(
            path = %path.display(),
            moved_to = %r.moved_to.display(),
            kind,
            reason = %r.reason,
            header_repaired = r.header_repaired,
            updates_recovered = r.updates_recovered,
            updates_lost = r.updates_lost,
            meta_recovered = r.meta_recovered,
            lost = ?lost,
            "update log was damaged: moved it aside and recovered what could be read; some updates are lost (they stay in the moved-aside file)"
        );
    } else {
        tracing::warn!(
            path = %path.display(),
            moved_to = %r.moved_to.display(),
            kind,
            reason = %r.reason,
            header_repaired = r.header_repaired,
            updates_recovered = r.updates_recovered,
            meta_recovered = r.meta_recovered,
            "update log was damaged: moved it aside and recovered every update"
        );
    }
}
