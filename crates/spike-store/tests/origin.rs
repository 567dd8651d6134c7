//! The HTTP origin against a real server on loopback, and a store that fetches through it once,
//! then serves from its tiers, across a reopen, with the origin gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use spike_store::{
    Freshness, HttpOrigin, Key, MemoryTier, OriginConfig, SqliteOptions, SqliteTier, Store,
    StoreError, Tier,
};

/// An ESM CDN in miniature: a redirect to a versioned module, a flaky path, a 404. Counts hits.
async fn cdn() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(AtomicUsize::new(0));
    let count = |hits: Arc<AtomicUsize>| {
        move || {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (h1, h2) = (count(hits.clone()), count(hits.clone()));
    let app = axum::Router::new()
        .route(
            "/confetti",
            get(move || async move {
                h1();
                (StatusCode::FOUND, [(header::LOCATION, "/confetti@1.0.0")]).into_response()
            }),
        )
        .route(
            "/confetti@1.0.0",
            get(move || async move {
                h2();
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            "application/javascript; charset=utf-8",
                        ),
                        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                    ],
                    "export default 'confetti';\n",
                )
                    .into_response()
            }),
        )
        .route(
            "/flaky",
            get(move || async move {
                if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "0")],
                        "busy",
                    )
                        .into_response()
                } else {
                    ([(header::CACHE_CONTROL, "max-age=60")], "ok").into_response()
                }
            }),
        )
        .route(
            "/missing",
            get(|| async {
                (StatusCode::NOT_FOUND, "Package \"missing\" not found").into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, hits, task)
}

fn fast() -> OriginConfig {
    OriginConfig {
        min_delay: Duration::from_millis(10),
        ..OriginConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_follows_redirects_retries_and_names_failures() -> Result<(), StoreError> {
    let (base, hits, server) = cdn().await;
    let origin = HttpOrigin::new(fast())?;
    let fetched = origin.fetch(&format!("{base}/confetti")).await?;
    assert_eq!(&fetched.body[..], b"export default 'confetti';\n");
    assert_eq!(
        fetched.content_type.as_deref(),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(fetched.ttl, Some(Duration::from_secs(31_536_000)));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the redirect and its target"
    );

    let flaky = origin.fetch(&format!("{base}/flaky")).await?;
    assert_eq!(
        (&flaky.body[..], flaky.ttl),
        (&b"ok"[..], Some(Duration::from_secs(60)))
    );

    match origin.fetch(&format!("{base}/missing")).await {
        Err(StoreError::Backend {
            tier: "origin",
            source,
        }) => assert_eq!(
            source.to_string(),
            format!("404 Not Found from {base}/missing: Package \"missing\" not found")
        ),
        other => panic!("expected a 404 error, got {other:?}"),
    }
    server.abort();
    let _ = server.await;
    match origin.fetch(&format!("{base}/confetti")).await {
        Err(StoreError::Unavailable {
            tier: "origin",
            reason,
        }) => assert!(
            reason.starts_with(&format!("{base}/confetti: could not connect (offline?)")),
            "{reason}"
        ),
        other => panic!("expected unavailable, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_module_is_served_from_the_cache_after_a_restart_with_the_origin_gone(
) -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("test", e))?;
    let (base, hits, server) = cdn().await;
    let origin = HttpOrigin::new(fast())?;
    let url = format!("{base}/confetti");
    let key = Key::kv("npm", url.trim_start_matches("http://"))?;
    let open = || -> Result<Store, StoreError> {
        let sqlite: Arc<dyn Tier> = Arc::new(SqliteTier::open(
            dir.path().join("store.sqlite"),
            SqliteOptions::default(),
        )?);
        let memory: Arc<dyn Tier> = Arc::new(MemoryTier::new(1 << 20));
        Ok(Store::new([memory, sqlite]))
    };
    let store = open()?;
    let first = store.get_or_fetch(&key, || origin.fetch(&url)).await?;
    assert_eq!(&first.body[..], b"export default 'confetti';\n");
    let again = store.get_or_fetch(&key, || origin.fetch(&url)).await?;
    assert_eq!(again.body, first.body);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the second read came from the tiers"
    );
    drop(store);

    server.abort();
    let _ = server.await;
    let reopened = open()?;
    let offline = reopened.get_or_fetch(&key, || origin.fetch(&url)).await?;
    assert_eq!(offline.body, first.body);
    assert_eq!(offline.freshness, Freshness::Fresh);
    // Never fetched: the origin's error, naming it.
    let other = Key::kv(
        "npm",
        format!("{}/left-pad", base.trim_start_matches("http://")),
    )?;
    let left_pad = format!("{base}/left-pad");
    let err = reopened
        .get_or_fetch(&other, || origin.fetch(&left_pad))
        .await
        .expect_err("offline and not cached");
    assert!(
        matches!(err, StoreError::Unavailable { tier: "origin", .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_opens_the_breaker_and_later_fetches_fail_at_once(
) -> Result<(), StoreError> {
    // A listener that accepts and never answers: each fetch costs its whole timeout.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StoreError::backend("test", e))?;
    let url = format!(
        "http://{}/confetti",
        hanging
            .local_addr()
            .map_err(|e| StoreError::backend("test", e))?
    );
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            sockets.push(socket);
        }
    });
    let origin = HttpOrigin::new(OriginConfig {
        timeout: Duration::from_millis(300),
        max_retries: 0,
        breaker_failures: 2,
        breaker_open_for: Duration::from_secs(30),
        ..fast()
    })?;
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let err = origin.fetch(&url).await.expect_err("it never answers");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it waited for the timeout"
        );
    }
    let started = std::time::Instant::now();
    match origin.fetch(&url).await {
        Err(StoreError::Unavailable { reason, .. }) => {
            assert!(reason.ends_with("(circuit breaker open)"), "{reason}");
        }
        other => panic!("expected a fast refusal, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "an open breaker fails at once, not after the timeout: {:?}",
        started.elapsed()
    );
    held.abort();
    Ok(())
}
