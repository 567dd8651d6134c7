//! Damaged update logs: each test writes a real SQLite room file with known updates through
//! `UpdateLog`, damages it on disk, reopens it and checks exactly what was moved aside,
//! reported and recovered.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use spike_collab::{CollabError, DamageKind, Recovery, RoomDoc, TextEdit, UpdateLog};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `n` updates that depend on nothing: update `i` (seq `i + 1` in a fresh log) creates file
/// `f{i:03}.ts` as client `1000 + i`, with `len` characters of text ending in `<i:END>`.
fn independent_updates(n: usize, len: usize) -> (Vec<Vec<u8>>, BTreeMap<String, String>) {
    let mut updates = Vec::new();
    let mut files = BTreeMap::new();
    for i in 0..n {
        let author = RoomDoc::with_client_id(1000 + i as u64);
        let mut text = String::new();
        let mut j = 0;
        while text.len() < len {
            text.push_str(&format!("<{i}:{j:04}>"));
            j += 1;
        }
        text.push_str(&format!("<{i}:END>"));
        let path = format!("f{i:03}.ts");
        let update = author
            .create_file(&path, &text)
            .expect("create")
            .expect("an update");
        updates.push(update);
        files.insert(path, text);
    }
    (updates, files)
}

/// Writes `updates` one row each (no compaction) and closes the log (checkpointing its WAL).
fn write_log(path: &Path, updates: &[Vec<u8>]) -> TestResult {
    let mut log = UpdateLog::open(path)?;
    log.set_compact_after(usize::MAX);
    for u in updates {
        log.append(u)?;
    }
    drop(log);
    assert!(!wal(path).exists(), "the WAL outlived the last connection");
    Ok(())
}

fn wal(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Opens the log at `path` and loads it into a new document.
fn reopen(
    path: &Path,
) -> Result<(UpdateLog, RoomDoc, Option<Recovery>), Box<dyn std::error::Error>> {
    let mut log = UpdateLog::open(path)?;
    let doc = RoomDoc::new();
    let recovery = log.load_into(&doc)?;
    Ok((log, doc, recovery))
}

/// The files named `<stem>.damaged-*` in `dir`.
fn aside_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("room.damaged-") && n.ends_with(".sqlite3"))
        })
        .collect();
    out.sort();
    out
}

/// Asserts that the recovered log is sound now: reopening it reports nothing and holds `files`.
fn assert_sound(path: &Path, files: &BTreeMap<String, String>) -> TestResult {
    let (_, doc, recovery) = reopen(path)?;
    assert_eq!(recovery, None);
    assert_eq!(&doc.files(), files);
    Ok(())
}

#[test]
fn a_truncated_file_is_moved_aside_and_the_room_opens_empty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let (updates, _) = independent_updates(5, 10);
    write_log(&path, &updates)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(0)?;

    let (mut log, doc, recovery) = reopen(&path)?;
    let r = recovery.ok_or("no recovery reported")?;
    assert_eq!(r.kind, DamageKind::Empty);
    assert_eq!(aside_files(dir.path()), vec![r.moved_to.clone()]);
    assert_eq!(std::fs::metadata(&r.moved_to)?.len(), 0);
    assert_eq!((r.updates_recovered, r.updates_lost), (0, 0));
    assert!(r.lost.is_empty());
    assert!(!r.header_repaired);
    assert_eq!(log.recovery(), Some(&r));
    assert!(doc.files().is_empty());
    assert_eq!(log.tail_len(), 0);

    // The new log is a working log.
    log.append(&updates[0])?;
    drop(log);
    let (_, doc, recovery) = reopen(&path)?;
    assert_eq!(recovery, None);
    assert_eq!(doc.paths(), vec!["f000.ts".to_owned()]);
    Ok(())
}

#[test]
fn a_zeroed_header_is_rebuilt_and_every_update_recovered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    // A snapshot (compacted history) followed by raw updates, one author editing in order, and
    // a meta row: order matters, so a recovery that reorders or drops anything shows.
    let author = RoomDoc::with_client_id(7);
    let mut log = UpdateLog::open(&path)?;
    log.set_compact_after(usize::MAX);
    log.append(&author.create_file("a.ts", "")?.ok_or("no update")?)?;
    for i in 0..40u32 {
        if i == 25 {
            log.compact_with(&author)?;
        }
        let u = author
            .edit("a.ts", &[TextEdit::insert(0, format!("{i},"))])?
            .ok_or("no update")?;
        log.append(&u)?;
        if i % 10 == 0 {
            log.append(
                &author
                    .create_file(&format!("b{i}.ts"), &"x".repeat(3000))?
                    .ok_or("no update")?,
            )?;
        }
    }
    log.set_meta("seeded", b"example")?;
    let tail = log.tail_len();
    drop(log);
    assert_eq!(tail, 16);
    let original = std::fs::read(&path)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .write_all(&[0u8; 100])?;

    let (log, doc, recovery) = reopen(&path)?;
    let r = recovery.ok_or("no recovery reported")?;
    assert_eq!(r.kind, DamageKind::NotADatabase);
    assert!(r.header_repaired);
    assert_eq!(r.updates_lost, 0, "{:?}", r.lost);
    assert_eq!(
        r.updates_recovered,
        1 + tail,
        "the snapshot and every update"
    );
    assert_eq!(r.meta_recovered, 1);
    assert_eq!(doc.files(), author.files());
    assert_eq!(doc.state_vector(), author.state_vector());
    assert!(!doc.has_pending());
    assert_eq!(log.meta("seeded")?.as_deref(), Some(&b"example"[..]));
    assert_eq!(log.tail_len(), tail);
    // The damaged file is kept as it was found.
    let aside = std::fs::read(&r.moved_to)?;
    assert_eq!(aside.len(), original.len());
    assert!(aside[..100].iter().all(|b| *b == 0));
    assert_eq!(aside[100..], original[100..]);
    assert_eq!(aside_files(dir.path()), vec![r.moved_to.clone()]);
    drop(log);
    assert_sound(&path, &author.files())
}

#[test]
fn a_bad_page_costs_only_the_updates_on_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let total = 400;
    let (updates, files) = independent_updates(total, 200);
    write_log(&path, &updates)?;
    let bytes = std::fs::read(&path)?;
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    let pages = bytes.len() / page_size;
    assert!(pages > 20, "only {pages} pages");
    // Overwrite one page in the middle (1-based page number `pages / 2`).
    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.seek(SeekFrom::Start(((pages / 2 - 1) * page_size) as u64))?;
    f.write_all(&vec![0xA5; page_size])?;
    drop(f);

    let (log, doc, recovery) = reopen(&path)?;
    let r = recovery.ok_or("no recovery reported")?;
    assert_eq!(r.kind, DamageKind::Corrupt);
    assert!(!r.header_repaired);
    assert_eq!(r.updates_recovered + r.updates_lost, total);
    assert!(r.updates_recovered > 0);
    assert!(r.updates_lost > 0, "a page of updates must be lost");
    assert_eq!(r.lost.len(), r.updates_lost);
    // Exactly the readable updates are in the room: every file but those of the lost rows.
    let lost: Vec<i64> = r.lost.iter().map(|l| l.seq).collect();
    let expected: BTreeMap<String, String> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| !lost.contains(&(*i as i64 + 1)))
        .map(|(_, (p, t))| (p.clone(), t.clone()))
        .collect();
    assert_eq!(expected.len(), r.updates_recovered);
    assert_eq!(doc.files(), expected);
    // The new log keeps the sequence numbers.
    let seqs: Vec<i64> = log.load()?.iter().map(|(s, _)| *s).collect();
    let want: Vec<i64> = (1..=total as i64).filter(|s| !lost.contains(s)).collect();
    assert_eq!(seqs, want);
    assert_eq!(std::fs::read(&r.moved_to)?.len(), bytes.len());
    drop(log);
    assert_sound(&path, &expected)
}

#[test]
fn a_bad_overflow_page_found_while_loading_costs_one_update() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let total = 12;
    // ~10 kB each: every row spills into two overflow pages, which opening never reads.
    let (updates, files) = independent_updates(total, 10_000);
    write_log(&path, &updates)?;
    let bytes = std::fs::read(&path)?;
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    // A marker about 2.4 kB into update 5's text lies in its first overflow page.
    let marker = b"<5:0300>";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .ok_or("marker not found")?;
    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.seek(SeekFrom::Start((at / page_size * page_size) as u64))?;
    f.write_all(&vec![0xA5; page_size])?;
    drop(f);

    let mut log = UpdateLog::open(&path)?;
    assert_eq!(log.recovery(), None, "opening does not read overflow pages");
    let doc = RoomDoc::new();
    let r = log.load_into(&doc)?.ok_or("no recovery reported")?;
    assert_eq!(r.kind, DamageKind::Corrupt);
    assert_eq!(r.updates_recovered, total - 1);
    assert_eq!(r.lost.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![6]);
    let mut expected = files.clone();
    expected.remove("f005.ts");
    assert_eq!(doc.files(), expected);
    drop(log);
    assert_sound(&path, &expected)
}

#[test]
fn a_bad_update_among_good_ones_is_skipped_and_reported_by_seq() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let total = 20;
    let (updates, files) = independent_updates(total, 50);
    write_log(&path, &updates)?;
    let garbage: &[u8] = b"\x01\x05not an update";
    {
        let conn = rusqlite::Connection::open(&path)?;
        let changed = conn.execute(
            "UPDATE updates SET data = ?1 WHERE seq = 7",
            rusqlite::params![garbage],
        )?;
        assert_eq!(changed, 1);
    }

    let mut log = UpdateLog::open(&path)?;
    assert_eq!(log.recovery(), None, "the database itself is sound");
    let doc = RoomDoc::new();
    let r = log.load_into(&doc)?.ok_or("no recovery reported")?;
    assert_eq!(r.kind, DamageKind::BadUpdate);
    assert_eq!(r.updates_recovered, total - 1);
    assert_eq!(r.updates_lost, 1);
    assert_eq!(r.lost.len(), 1);
    assert_eq!(r.lost[0].seq, 7);
    assert!(!r.lost[0].reason.is_empty());
    assert!(r.reason.contains("seq 7"), "{}", r.reason);
    let mut expected = files.clone();
    expected.remove("f006.ts");
    assert_eq!(doc.files(), expected);
    let seqs: Vec<i64> = log.load()?.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=20).filter(|s| *s != 7).collect::<Vec<i64>>());
    drop(log);
    // The bad blob stays in the moved-aside copy.
    let aside = rusqlite::Connection::open_with_flags(
        &r.moved_to,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let kept: Vec<u8> = aside.query_row("SELECT data FROM updates WHERE seq = 7", [], |row| {
        row.get(0)
    })?;
    assert_eq!(kept, garbage);
    drop(aside);
    assert_sound(&path, &expected)
}

#[test]
fn a_file_that_is_not_sqlite_is_kept_aside_and_the_room_opens_empty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let junk = "this is not a database\n".repeat(500);
    std::fs::write(&path, &junk)?;

    let (_, doc, recovery) = reopen(&path)?;
    let r = recovery.ok_or("no recovery reported")?;
    assert_eq!(r.kind, DamageKind::NotADatabase);
    assert!(!r.header_repaired);
    assert_eq!((r.updates_recovered, r.updates_lost), (0, 0));
    assert!(doc.files().is_empty());
    assert_eq!(std::fs::read_to_string(&r.moved_to)?, junk);
    assert_sound(&path, &BTreeMap::new())
}

#[test]
fn a_sound_log_reports_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let (updates, files) = independent_updates(3, 10);
    write_log(&path, &updates)?;
    assert_sound(&path, &files)?;
    assert!(aside_files(dir.path()).is_empty());
    Ok(())
}

/// An update that decodes but that yrs refuses part-way ([`CollabError::Apply`]): client 2's
/// insert into file `x.ts` of client 1, re-pointed at client 1's `meta` value (not a type).
fn refused_update(base: &RoomDoc) -> Vec<u8> {
    let b = RoomDoc::with_client_id(2);
    b.apply_update(&base.encode_state()).expect("apply");
    let insert = b
        .edit("x.ts", &[TextEdit::insert(0, "q")])
        .expect("edit")
        .expect("an update");
    // The parent id (client 1, clock 0) is encoded as the varuints 1, 0: point it at clock 1.
    (1..insert.len())
        .filter(|i| insert[*i - 1] == 1 && insert[*i] == 0)
        .map(|i| {
            let mut patched = insert.clone();
            patched[i] = 1;
            patched
        })
        .find(|p| {
            let probe = RoomDoc::new();
            probe.apply_update(&base.encode_state()).expect("apply");
            matches!(probe.apply_update(p), Err(CollabError::Apply(_)))
        })
        .expect("a patch yrs refuses")
}

#[test]
fn an_update_yrs_refuses_part_way_is_recovered_and_a_second_load_is_clean() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("room.sqlite3");
    let a = RoomDoc::with_client_id(1);
    let (mut updates, _) = independent_updates(3, 10);
    updates.insert(0, a.create_file("x.ts", "")?.ok_or("no update")?);
    updates.insert(1, a.set_meta("k", "v").ok_or("no update")?);
    updates.insert(3, refused_update(&a));
    write_log(&path, &updates)?;

    let mut log = UpdateLog::open(&path)?;
    let first = RoomDoc::new();
    match log.load_into(&first) {
        Err(CollabError::CorruptLog { seq, .. }) => assert_eq!(seq, 4),
        other => return Err(format!("expected CorruptLog, got {other:?}").into()),
    }
    let r = log.recovery().cloned().ok_or("no recovery")?;
    assert_eq!(r.kind, DamageKind::BadUpdate);
    assert_eq!(r.lost.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![4]);
    assert_eq!(r.updates_recovered, updates.len() - 1);
    // Loading again, into a new document, gives what survived.
    let doc = RoomDoc::new();
    assert_eq!(log.load_into(&doc)?, Some(r));
    let mut paths = doc.paths();
    paths.sort();
    assert_eq!(paths, ["f000.ts", "f001.ts", "f002.ts", "x.ts"]);
    assert_eq!(doc.read("x.ts").as_deref(), Some(""));
    assert_eq!(doc.meta("k").as_deref(), Some("v"));
    drop(log);
    let (_, again, recovery) = reopen(&path)?;
    assert_eq!(recovery, None);
    assert_eq!(again.files(), doc.files());
    Ok(())
}
