//! The SQLite tier on real files: the shared contract, persistence, LRU eviction within the
//! byte bound, damaged and foreign files moved aside, a full disk, and two processes sharing
//! one database.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spike_store::conformance;
use spike_store::{Key, Prefix, PutOptions, SqliteOptions, SqliteTier, StoreError, Tier};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn kv(key: &str) -> Result<Key, StoreError> {
    Key::kv("disk", key)
}

fn open(path: &Path) -> Result<SqliteTier, StoreError> {
    SqliteTier::open(path, SqliteOptions::default())
}

/// The files in `dir` whose names start with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tier_keeps_the_tier_contract() -> TestResult {
    let dir = tempfile::tempdir()?;
    conformance::check_tier(Arc::new(open(&dir.path().join("store.db"))?)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_compare_and_set_is_atomic_under_concurrent_writers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tier: Arc<dyn Tier> = Arc::new(open(&dir.path().join("store.db"))?);
    conformance::check_compare_and_set_is_atomic(tier, 4, 50).await?;
    Ok(())
}

#[tokio::test]
async fn sqlite_entries_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    let body = Bytes::from(vec![42u8; 1 << 20]);
    let meta = {
        let tier = open(&path)?;
        tier.put(&kv("big.js")?, body.clone(), PutOptions::default())
            .await?
    };
    let tier = open(&path)?;
    let entry = tier
        .get(&kv("big.js")?)
        .await?
        .ok_or("lost across a reopen")?;
    assert_eq!((entry.body, entry.meta), (body, meta));
    assert_eq!(tier.used_bytes().await?, 1 << 20);
    Ok(())
}

#[tokio::test]
async fn sqlite_evicts_the_least_recently_used_to_stay_within_its_bound() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = SqliteOptions {
        max_bytes: 10_000,
        lru_resolution: Duration::ZERO,
        ..SqliteOptions::default()
    };
    let tier = SqliteTier::open(dir.path().join("store.db"), options)?;
    let body = |b: u8| Bytes::from(vec![b; 3000]);
    for name in ["a", "b", "c"] {
        tier.put(&kv(name)?, body(1), PutOptions::default()).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Reading `a` makes `b` the least recently used.
    assert!(tier.get(&kv("a")?).await?.is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    tier.put(&kv("d")?, body(2), PutOptions::default()).await?;
    let left: Vec<String> = tier
        .list(&Prefix::kv("disk", "")?)
        .await?
        .into_iter()
        .map(|l| l.key.to_string())
        .collect();
    assert_eq!(left, ["disk/a", "disk/c", "disk/d"]);
    assert_eq!(tier.used_bytes().await?, 9000);
    // An overwrite counts its new size, not both.
    tier.put(
        &kv("d")?,
        Bytes::from(vec![3u8; 5000]),
        PutOptions::default(),
    )
    .await?;
    let used = tier.used_bytes().await?;
    assert!(used <= 10_000, "{used}");
    assert!(
        tier.get(&kv("d")?).await?.is_some(),
        "the entry just written is never evicted"
    );
    match tier
        .put(
            &kv("huge")?,
            Bytes::from(vec![0u8; 10_001]),
            PutOptions::default(),
        )
        .await
    {
        Err(StoreError::TooLarge {
            size: 10_001,
            limit: 10_000,
        }) => Ok(()),
        other => Err(format!("expected TooLarge, got {other:?}").into()),
    }
}

/// Opens `path` after it was spoiled, and checks that the spoiled file was moved aside intact
/// and a working, empty store stands in its place.
async fn assert_moved_aside_and_rebuilt(dir: &Path, path: &Path, spoiled: &[u8]) -> TestResult {
    let tier = open(path)?;
    let aside = files_starting(dir, "store.db.corrupt-");
    let main_aside: Vec<&PathBuf> = aside
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with("-wal"))
        .collect();
    assert_eq!(main_aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(main_aside[0])?,
        spoiled,
        "moved aside as it was"
    );
    assert!(
        tier.list(&Prefix::kv("disk", "")?).await?.is_empty(),
        "a new, empty store"
    );
    tier.put(
        &kv("after")?,
        Bytes::from_static(b"works"),
        PutOptions::default(),
    )
    .await?;
    drop(tier);
    let reopened = open(path)?;
    assert!(reopened.get(&kv("after")?).await?.is_some());
    assert_eq!(
        files_starting(dir, "store.db.corrupt-").len(),
        aside.len(),
        "a good file stays put"
    );
    Ok(())
}

#[tokio::test]
async fn sqlite_moves_aside_a_file_that_is_not_a_database() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    let garbage =
        b"this is not a SQLite database, just some text that was here first\n".repeat(100);
    std::fs::write(&path, &garbage)?;
    assert_moved_aside_and_rebuilt(dir.path(), &path, &garbage).await
}

#[tokio::test]
async fn sqlite_moves_aside_another_programs_database() -> TestResult {
    for application_id in [0, 0x1234_5678] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("store.db");
        {
            let conn = rusqlite::Connection::open(&path)?;
            conn.execute_batch(&format!(
                "PRAGMA application_id = {application_id};
                 CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);
                 INSERT INTO notes (text) VALUES ('someone else''s data');"
            ))?;
        }
        let original = std::fs::read(&path)?;
        assert_moved_aside_and_rebuilt(dir.path(), &path, &original).await?;
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_moves_aside_a_damaged_database() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    {
        let tier = open(&path)?;
        for i in 0..20 {
            tier.put(
                &kv(&format!("k{i}"))?,
                Bytes::from(vec![i as u8; 6000]),
                PutOptions::default(),
            )
            .await?;
        }
    }
    // Closing the last connection checkpointed the WAL into the file; now overwrite pages 2-4
    // (the tables' b-tree roots) with noise, leaving the header intact.
    let mut bytes = std::fs::read(&path)?;
    assert!(bytes.len() > 5 * 4096, "{} bytes", bytes.len());
    for (i, b) in bytes[4096..4 * 4096].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&path, &bytes)?;
    assert_moved_aside_and_rebuilt(dir.path(), &path, &bytes).await
}

#[tokio::test]
async fn sqlite_full_disk_fails_the_write_with_a_typed_error_and_loses_nothing() -> TestResult {
    // The disk is emulated by SQLite's max_page_count (64 pages of 4 KiB = 256 KiB): a write
    // that needs more pages fails with SQLITE_FULL exactly as on a full file system.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    let options = SqliteOptions {
        max_page_count: Some(64),
        ..SqliteOptions::default()
    };
    let tier = SqliteTier::open(&path, options)?;
    let body = |i: usize| Bytes::from(vec![i as u8; 16 * 1024]);
    let mut stored = Vec::new();
    let mut failure = None;
    for i in 0..64 {
        match tier
            .put(&kv(&format!("k{i}"))?, body(i), PutOptions::default())
            .await
        {
            Ok(_) => stored.push(i),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    match &failure {
        Some(StoreError::Full {
            tier: "sqlite",
            reason,
        }) => assert!(reason.contains("full"), "{reason}"),
        other => {
            return Err(
                format!("expected Full, got {other:?} after {} writes", stored.len()).into(),
            )
        }
    }
    assert!(stored.len() >= 8, "only {} writes fit", stored.len());
    let check_all = |tier: SqliteTier, stored: Vec<usize>, others: usize| async move {
        for &i in &stored {
            let entry = tier
                .get(&kv(&format!("k{i}"))?)
                .await?
                .ok_or(format!("k{i} lost"))?;
            assert_eq!(entry.body, body(i), "k{i}");
        }
        let listed = tier.list(&Prefix::kv("disk", "")?).await?.len();
        assert_eq!(
            listed,
            stored.len() + others,
            "the failed write left nothing behind"
        );
        Ok::<_, Box<dyn std::error::Error>>(tier)
    };
    let tier = check_all(tier, stored.clone(), 0).await?;
    // Space freed is usable again.
    assert!(
        tier.delete(&kv("k0")?, spike_store::Condition::None)
            .await?
    );
    tier.put(
        &kv("small")?,
        Bytes::from_static(b"fits"),
        PutOptions::default(),
    )
    .await?;
    drop(tier);
    // And the file is a sound database for a fresh opener (quick_check passes: not moved aside).
    let reopened = open(&path)?;
    assert!(files_starting(dir.path(), "store.db.corrupt-").is_empty());
    check_all(reopened, stored[1..].to_vec(), 1).await?;
    Ok(())
}

const CHILD_DB: &str = "SPIKE_STORE_TEST_CHILD_DB";
const WRITES_PER_PROCESS: u64 = 150;

/// One process's half of the two-process test: opens the shared file (racing the other
/// process's open), writes its own entries, adds to a shared counter by compare-and-set, and
/// reads whatever the other process has written so far.
fn share_the_database(path: &Path, me: &str, other: &str) -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tier = open(path)?;
        let counter = Key::kv("shared", "counter")?;
        for i in 0..WRITES_PER_PROCESS {
            let body = Bytes::from(format!("{me} wrote {i}"));
            tier.put(
                &Key::kv("shared", format!("{me}/{i:04}"))?,
                body,
                PutOptions::default(),
            )
            .await?;
            conformance::increment(&tier, &counter, 1).await?;
            if i % 10 == 0 {
                for listed in tier
                    .list(&Prefix::kv("shared", format!("{other}/"))?)
                    .await?
                {
                    let entry = tier.get(&listed.key).await?.ok_or("listed but gone")?;
                    assert!(entry.body.starts_with(format!("{other} wrote ").as_bytes()));
                }
            }
        }
        Ok(())
    })
}

#[test]
#[ignore = "the child half of two_processes_share_one_database, which runs it"]
fn two_processes_child() -> TestResult {
    let path = std::env::var_os(CHILD_DB).ok_or("run by two_processes_share_one_database")?;
    share_the_database(Path::new(&path), "child", "parent")
}

#[test]
fn two_processes_share_one_database() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    // The same test binary, running only the child half, at the same moment as this one.
    let child = Command::new(std::env::current_exe()?)
        .args([
            "two_processes_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mine = share_the_database(&path, "parent", "child");
    let child = child.wait_with_output()?;
    mine?;
    assert!(
        child.status.success(),
        "child process: {}\n{}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tier = open(&path)?;
        let counter = conformance::read_counter(&tier, &Key::kv("shared", "counter")?).await?;
        assert_eq!(
            counter,
            2 * WRITES_PER_PROCESS,
            "no increment lost across processes"
        );
        for who in ["parent", "child"] {
            let listed = tier.list(&Prefix::kv("shared", format!("{who}/"))?).await?;
            assert_eq!(listed.len() as u64, WRITES_PER_PROCESS, "{who}");
        }
        assert!(files_starting(dir.path(), "store.db.corrupt-").is_empty());
        Ok(())
    })
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn sqlite_warns_when_it_moves_a_file_aside() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    std::fs::write(&path, b"not a database")?;
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || open(&path))?;
    let text = String::from_utf8(logs.0.lock().map_err(|_| "poisoned")?.clone())?;
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("moved aside"), "{text}");
    assert!(
        text.contains("not a database"),
        "the reason is logged: {text}"
    );
    assert!(
        text.contains(".corrupt-"),
        "where it went is logged: {text}"
    );
    Ok(())
}
