//! The composed store over real tiers (memory in front of a SQLite file): read-through with
//! fills, revalidation by ETag, stale-if-error, write-through with the authority's conditions,
//! and fetching from an origin.
//!
//! A failed write is real: another connection holds SQLite's write lock, so the tier waits out
//! its busy timeout and fails with [`StoreError::Unavailable`]. A failed *read* cannot be made
//! that way (WAL readers never wait for a writer), so the reads that need an unreachable
//! slower tier use [`RoomServerDown`], which answers every call as the remote tier does while
//! its server is unreachable or its breaker open. The remote tier lives on another branch; once
//! merged, these tests can point at it with its server stopped.

mod recorded;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use metrics_util::debugging::DebuggingRecorder;
use recorded::Recorded;
use spike_store::{
    Condition, ETag, Fetched, Freshness, Key, MemoryTier, PutOptions, SqliteOptions, SqliteTier,
    Store, StoreError, Tier,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn kv(key: &str) -> Result<Key, StoreError> {
    Key::kv("npm", key)
}

fn ttl(d: Duration) -> PutOptions {
    PutOptions {
        ttl: Some(d),
        content_type: Some("text/javascript".to_owned()),
        ..PutOptions::default()
    }
}

struct Tiers {
    memory: Arc<MemoryTier>,
    sqlite: Arc<SqliteTier>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn tiers() -> Result<Tiers, StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("test", e))?;
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(100),
        ..SqliteOptions::default()
    };
    let sqlite = Arc::new(SqliteTier::open(dir.path().join("store.db"), options)?);
    let memory = Arc::new(MemoryTier::new(8 * 1024 * 1024));
    let store = Store::new([
        Arc::clone(&memory) as Arc<dyn Tier>,
        Arc::clone(&sqlite) as Arc<dyn Tier>,
    ]);
    Ok(Tiers {
        memory,
        sqlite,
        store,
        _dir: dir,
    })
}

/// Takes and keeps SQLite's write lock on `path`, as another process in a long write would.
fn hold_write_lock(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("BEGIN IMMEDIATE;")?;
    Ok(conn)
}

/// The slowest tier while the room server cannot be reached: every call fails the way the
/// remote tier's does then (see the module doc for why this stands in for it).
struct RoomServerDown;

#[async_trait::async_trait]
impl Tier for RoomServerDown {
    fn name(&self) -> &'static str {
        "remote"
    }

    async fn get(&self, _key: &Key) -> Result<Option<spike_store::Entry>, StoreError> {
        Err(down())
    }

    async fn put(&self, _: &Key, _: Bytes, _: PutOptions) -> Result<spike_store::Meta, StoreError> {
        Err(down())
    }

    async fn delete(&self, _key: &Key, _condition: Condition) -> Result<bool, StoreError> {
        Err(down())
    }

    async fn list(
        &self,
        _prefix: &spike_store::Prefix,
    ) -> Result<Vec<spike_store::Listed>, StoreError> {
        Err(down())
    }
}

fn down() -> StoreError {
    StoreError::Unavailable {
        tier: "remote",
        reason: "connection refused (circuit open)".to_owned(),
    }
}

/// Memory and SQLite in front of a room server that cannot be reached.
fn tiers_with_server_down(t: &Tiers) -> Store {
    Store::new([
        Arc::clone(&t.memory) as Arc<dyn Tier>,
        Arc::clone(&t.sqlite) as Arc<dyn Tier>,
        Arc::new(RoomServerDown) as Arc<dyn Tier>,
    ])
}

#[test]
fn store_reads_through_and_fills_the_faster_tier() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || -> TestResult {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let t = tiers()?;
            let key = kv("react@19/index.js")?;
            let body = Bytes::from_static(b"export const x = 1;");
            let at_authority = t
                .sqlite
                .put(&key, body.clone(), ttl(Duration::from_secs(600)))
                .await?;
            let got = t.store.get(&key).await?.ok_or("miss")?;
            assert_eq!((&got.body, &got.freshness), (&body, &Freshness::Fresh));
            let filled = t.memory.get(&key).await?.ok_or("memory was not filled")?;
            assert_eq!(filled.meta.etag, at_authority.etag);
            assert_eq!(filled.meta.content_type.as_deref(), Some("text/javascript"));
            // The fill keeps the authority's expiry (to the millisecond the TTL was carried in).
            let drift = filled
                .meta
                .expires_at
                .zip(at_authority.expires_at)
                .and_then(|(a, b)| {
                    a.duration_since(b)
                        .ok()
                        .or_else(|| b.duration_since(a).ok())
                })
                .ok_or("expiry lost")?;
            assert!(drift < Duration::from_secs(1), "{drift:?}");
            let again = t.store.get(&key).await?.ok_or("miss")?;
            assert_eq!(again.body, body);
            assert!(t.store.get(&kv("absent.js")?).await?.is_none());
            Ok::<_, Box<dyn std::error::Error>>(())
        })
    })?;
    let r = Recorded::take(&snapshotter);
    // get 1: memory miss, sqlite hit; get 2: memory hit; get 3: both miss.
    assert_eq!(
        r.get("spike_store_misses_total", &[("tier", "memory")]),
        Some(2)
    );
    assert_eq!(
        r.get("spike_store_hits_total", &[("tier", "memory")]),
        Some(1)
    );
    assert_eq!(
        r.get("spike_store_hits_total", &[("tier", "sqlite")]),
        Some(1)
    );
    assert_eq!(
        r.get("spike_store_misses_total", &[("tier", "sqlite")]),
        Some(1)
    );
    assert_eq!(
        r.get(
            "spike_store_bytes_total",
            &[("tier", "memory"), ("op", "put")]
        ),
        Some(19)
    );
    assert_eq!(
        r.get(
            "spike_store_latency_seconds",
            &[("tier", "sqlite"), ("op", "get")]
        ),
        Some(2)
    );
    Ok(())
}

#[test]
fn store_revalidates_an_expired_copy_by_etag_without_refetching_the_body() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || -> TestResult {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let t = tiers()?;
            let key = kv("lodash-es@4/lodash.js")?;
            let body = Bytes::from(vec![b'x'; 50_000]);
            t.memory
                .put(&key, body.clone(), ttl(Duration::from_millis(5)))
                .await?;
            t.sqlite
                .put(&key, body.clone(), ttl(Duration::from_secs(600)))
                .await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
            let got = t.store.get(&key).await?.ok_or("miss")?;
            assert_eq!(
                (got.body.len(), &got.freshness),
                (50_000, &Freshness::Fresh)
            );
            let refreshed = t.memory.head(&key).await?.ok_or("memory lost it")?;
            let fresh_for = refreshed
                .expires_at
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .ok_or("memory copy still expired")?;
            assert!(fresh_for > Duration::from_secs(590), "{fresh_for:?}");
            Ok::<_, Box<dyn std::error::Error>>(())
        })
    })?;
    let r = Recorded::take(&snapshotter);
    assert_eq!(
        r.get(
            "spike_store_latency_seconds",
            &[("tier", "sqlite"), ("op", "head")]
        ),
        Some(1),
        "revalidated with one head"
    );
    assert_eq!(
        r.get(
            "spike_store_latency_seconds",
            &[("tier", "sqlite"), ("op", "get")]
        ),
        None,
        "the body was not read from the slower tier"
    );
    assert_eq!(
        r.get(
            "spike_store_bytes_total",
            &[("tier", "sqlite"), ("op", "get")]
        ),
        None
    );
    Ok(())
}

#[tokio::test]
async fn store_replaces_an_expired_copy_that_changed_in_the_slower_tier() -> TestResult {
    let t = tiers()?;
    let key = kv("pkg@latest/index.js")?;
    t.memory
        .put(
            &key,
            Bytes::from_static(b"old"),
            ttl(Duration::from_millis(5)),
        )
        .await?;
    t.sqlite
        .put(
            &key,
            Bytes::from_static(b"new"),
            ttl(Duration::from_secs(600)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let got = t.store.get(&key).await?.ok_or("miss")?;
    assert_eq!(
        (got.body.as_ref(), got.freshness),
        (b"new".as_slice(), Freshness::Fresh)
    );
    let cached = t.memory.get(&key).await?.ok_or("memory lost it")?;
    assert_eq!(cached.body.as_ref(), b"new");
    Ok(())
}

#[tokio::test]
async fn store_serves_an_expired_copy_stale_when_the_slower_tier_is_unavailable() -> TestResult {
    let t = tiers()?;
    let store = tiers_with_server_down(&t);
    let key = kv("canvas-confetti@1/index.js")?;
    t.memory
        .put(
            &key,
            Bytes::from_static(b"confetti"),
            ttl(Duration::from_millis(5)),
        )
        .await?;
    t.sqlite
        .put(
            &key,
            Bytes::from_static(b"confetti"),
            ttl(Duration::from_millis(5)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let got = store.get(&key).await?.ok_or("nothing served")?;
    assert_eq!(got.body.as_ref(), b"confetti");
    match &got.freshness {
        Freshness::Stale { reason } => {
            assert!(
                reason.contains("remote unavailable: connection refused"),
                "{reason}"
            )
        }
        Freshness::Fresh => return Err("an expired copy served as fresh".into()),
    }
    // Only in memory (SQLite evicted it): the same.
    t.sqlite.delete(&key, Condition::None).await?;
    let got = store.get(&key).await?.ok_or("nothing served")?;
    assert!(
        matches!(got.freshness, Freshness::Stale { .. }),
        "{:?}",
        got.freshness
    );
    // A miss everywhere while the authority cannot answer is not "absent".
    match store.get(&kv("never-cached")?).await {
        Err(StoreError::Unavailable { tier: "remote", .. }) => {}
        other => return Err(format!("expected Unavailable, got {other:?}").into()),
    }
    // A fresh copy in a faster tier answers without asking the server.
    t.sqlite
        .put(
            &key,
            Bytes::from_static(b"fresh"),
            ttl(Duration::from_secs(60)),
        )
        .await?;
    let got = store.get(&key).await?.ok_or("nothing served")?;
    assert_eq!(
        (got.body.as_ref(), got.freshness),
        (b"fresh".as_slice(), Freshness::Fresh)
    );
    // With no slower tier to ask, an expired copy is still served, and says why.
    t.memory
        .put(
            &key,
            Bytes::from_static(b"old"),
            ttl(Duration::from_millis(5)),
        )
        .await?;
    t.sqlite
        .put(
            &key,
            Bytes::from_static(b"old"),
            ttl(Duration::from_millis(5)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let got = t.store.get(&key).await?.ok_or("nothing served")?;
    assert!(
        matches!(got.freshness, Freshness::Stale { ref reason } if reason.contains("no slower tier"))
    );
    Ok(())
}

#[tokio::test]
async fn store_write_that_the_authority_cannot_take_reaches_no_cache() -> TestResult {
    let t = tiers()?;
    let key = kv("room/title")?;
    t.store
        .put(&key, Bytes::from_static(b"before"), PutOptions::default())
        .await?;
    let lock = hold_write_lock(t.sqlite.path())?;
    match t
        .store
        .put(&key, Bytes::from_static(b"after"), PutOptions::default())
        .await
    {
        Err(StoreError::Unavailable {
            tier: "sqlite",
            reason,
        }) => {
            assert!(reason.contains("locked"), "{reason}")
        }
        other => return Err(format!("expected Unavailable, got {other:?}").into()),
    }
    assert_eq!(
        t.memory.get(&key).await?.map(|e| e.body),
        Some(Bytes::from_static(b"before"))
    );
    drop(lock);
    t.store
        .put(&key, Bytes::from_static(b"after"), PutOptions::default())
        .await?;
    assert_eq!(
        t.store.get(&key).await?.map(|e| e.body),
        Some(Bytes::from_static(b"after"))
    );
    Ok(())
}

#[tokio::test]
async fn store_writes_through_with_the_authority_checking_conditions() -> TestResult {
    let t = tiers()?;
    let key = kv("room/meta.json")?;
    let v1 = t
        .store
        .put(&key, Bytes::from_static(b"v1"), PutOptions::default())
        .await?;
    assert_eq!(
        t.memory.get(&key).await?.map(|e| e.meta.etag),
        Some(v1.etag.clone())
    );
    assert_eq!(
        t.sqlite.get(&key).await?.map(|e| e.meta.etag),
        Some(v1.etag.clone())
    );
    // Someone else changes the authority; the cache still has v1.
    t.sqlite
        .put(&key, Bytes::from_static(b"v2"), PutOptions::default())
        .await?;
    let stale_cas = PutOptions {
        condition: Condition::IfMatch(v1.etag.clone()),
        ..PutOptions::default()
    };
    match t
        .store
        .put(&key, Bytes::from_static(b"v3"), stale_cas)
        .await
    {
        Err(StoreError::PreconditionFailed {
            current: Some(c), ..
        }) if c == ETag::of(b"v2") => {}
        other => return Err(format!("expected the authority to refuse, got {other:?}").into()),
    }
    assert_eq!(
        t.memory.get(&key).await?.map(|e| e.body),
        Some(Bytes::from_static(b"v1")),
        "a refused write reaches no cache"
    );
    let cas = PutOptions {
        condition: Condition::IfMatch(ETag::of(b"v2")),
        ..PutOptions::default()
    };
    t.store.put(&key, Bytes::from_static(b"v3"), cas).await?;
    assert_eq!(
        t.memory.get(&key).await?.map(|e| e.body),
        Some(Bytes::from_static(b"v3"))
    );
    assert_eq!(
        t.sqlite.get(&key).await?.map(|e| e.body),
        Some(Bytes::from_static(b"v3"))
    );

    assert!(
        t.store
            .delete(&key, Condition::IfMatch(ETag::of(b"v3")))
            .await?
    );
    assert!(t.memory.get(&key).await?.is_none() && t.sqlite.get(&key).await?.is_none());
    assert!(!t.store.delete(&key, Condition::None).await?);
    Ok(())
}

#[tokio::test]
async fn store_fetches_from_the_origin_once_then_serves_from_the_tiers() -> TestResult {
    let t = tiers()?;
    let key = kv("esm.sh/canvas-confetti@1.9.3/es2022/canvas-confetti.mjs")?;
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = |calls: Arc<AtomicUsize>, answer: Result<&'static [u8], &'static str>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        match answer {
            Ok(body) => Ok(Fetched {
                body: Bytes::from_static(body),
                content_type: Some("text/javascript".to_owned()),
                // Long enough that the second read below is surely within it.
                ttl: Some(Duration::from_secs(1)),
            }),
            Err(reason) => Err(StoreError::Unavailable {
                tier: "origin",
                reason: reason.to_owned(),
            }),
        }
    };
    let first = t
        .store
        .get_or_fetch(&key, || {
            origin(Arc::clone(&calls), Ok(b"export default confetti;"))
        })
        .await?;
    assert_eq!(
        (first.body.as_ref(), first.freshness),
        (b"export default confetti;".as_slice(), Freshness::Fresh)
    );
    assert_eq!(first.meta.content_type.as_deref(), Some("text/javascript"));
    assert!(t.sqlite.get(&key).await?.is_some() && t.memory.get(&key).await?.is_some());
    let second = t
        .store
        .get_or_fetch(&key, || {
            origin(Arc::clone(&calls), Err("must not be called"))
        })
        .await?;
    assert_eq!(second.body, first.body);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second read came from the tiers"
    );

    // Past its TTL, with the origin down: the cached copy, marked stale, with the origin's reason.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = t
        .store
        .get_or_fetch(&key, || {
            origin(Arc::clone(&calls), Err("connection refused"))
        })
        .await?;
    assert_eq!(offline.body, first.body);
    match offline.freshness {
        Freshness::Stale { reason } => assert!(
            reason.contains("origin") && reason.contains("connection refused"),
            "{reason}"
        ),
        Freshness::Fresh => return Err("served as fresh".into()),
    }
    // Nothing cached and the origin down: the origin's error.
    match t
        .store
        .get_or_fetch(&kv("never/seen.js")?, || {
            origin(Arc::clone(&calls), Err("offline"))
        })
        .await
    {
        Err(StoreError::Unavailable {
            tier: "origin",
            reason,
        }) => assert_eq!(reason, "offline"),
        other => return Err(format!("expected the origin's error, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn store_keeps_a_fetched_module_locally_while_the_authority_is_unavailable() -> TestResult {
    let t = tiers()?;
    let store = tiers_with_server_down(&t);
    let key = kv("esm.sh/lodash-es@4.17.21/es2022/lodash-es.mjs")?;
    let got = store
        .get_or_fetch(&key, || async {
            Ok(Fetched {
                body: Bytes::from_static(b"export {};"),
                content_type: None,
                ttl: None,
            })
        })
        .await?;
    assert_eq!(got.body.as_ref(), b"export {};");
    assert!(
        t.memory.get(&key).await?.is_some(),
        "the memory tier took it"
    );
    assert!(
        t.sqlite.get(&key).await?.is_some(),
        "the SQLite tier took it"
    );
    // And serves it with the server still down.
    let again = store.get(&key).await?.ok_or("lost")?;
    assert_eq!(
        (again.body.as_ref(), again.freshness),
        (b"export {};".as_slice(), Freshness::Fresh)
    );
    Ok(())
}

#[tokio::test]
async fn store_refuses_fetched_bytes_that_are_not_the_blob_asked_for() -> TestResult {
    let t = tiers()?;
    let key = Key::blob_of(b"the real bytes");
    let got = t
        .store
        .get_or_fetch(&key, || async {
            Ok(Fetched {
                body: Bytes::from_static(b"tampered bytes"),
                content_type: None,
                ttl: None,
            })
        })
        .await;
    assert!(
        matches!(got, Err(StoreError::HashMismatch { .. })),
        "{got:?}"
    );
    assert!(t.memory.get(&key).await?.is_none() && t.sqlite.get(&key).await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_key_fetch_from_the_origin_once() -> TestResult {
    let t = Arc::new(tiers()?);
    let key = kv("esm.sh/react-confetti@6/es2022/react-confetti.mjs")?;
    let calls = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (t, key, calls) = (t.clone(), key.clone(), calls.clone());
            tokio::spawn(async move {
                t.store
                    .get_or_fetch(&key, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Slow enough that every reader misses while this one is in flight.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(Fetched {
                            body: Bytes::from_static(b"export default 1;"),
                            content_type: None,
                            ttl: None,
                        })
                    })
                    .await
            })
        })
        .collect();
    for reader in readers {
        let entry = reader.await??;
        assert_eq!(entry.body.as_ref(), b"export default 1;");
        assert_eq!(entry.freshness, Freshness::Fresh);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one fetch for eight readers"
    );

    // A failed fetch is not shared: the next reader that waited tries its own.
    let other = kv("esm.sh/flaky@1/es2022/flaky.mjs")?;
    let attempts = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (t, other, attempts) = (t.clone(), other.clone(), attempts.clone());
            tokio::spawn(async move {
                t.store
                    .get_or_fetch(&other, || async move {
                        let n = attempts.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if n == 0 {
                            Err(StoreError::Unavailable {
                                tier: "origin",
                                reason: "reset".to_owned(),
                            })
                        } else {
                            Ok(Fetched {
                                body: Bytes::from_static(b"export {};"),
                                content_type: None,
                                ttl: None,
                            })
                        }
                    })
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for reader in readers {
        outcomes.push(reader.await?.map(|e| e.body));
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert!(outcomes.iter().any(|o| o.is_err()));
    assert!(outcomes
        .iter()
        .any(|o| o.as_ref().is_ok_and(|b| b.as_ref() == b"export {};")));
    Ok(())
}
