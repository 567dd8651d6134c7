//! `RemoteTier` against a real `spike_server::Server` on loopback: the shared conformance suite
//! through HTTP with tokens, ETag revalidation, and the circuit breaker when the server stops,
//! hangs, and comes back on the same port. (Here rather than in spike-store's tests: spike-store
//! sits below the server, so its tests may not depend on it.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::{Access, Server, ServerConfig};
use spike_store::conformance::check_tier;
use spike_store::{
    BreakerState, Key, Metered, PutOptions, RemoteConfig, RemoteTier, Revalidated, StoreError, Tier,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key() -> Result<TokenKey, Box<dyn std::error::Error>> {
    Ok(TokenKey::new(&Secret::new(vec![7u8; 32])?))
}

async fn serve(
    data: &Path,
    listener: TcpListener,
) -> Result<spike_server::Running, Box<dyn std::error::Error>> {
    let mut config = ServerConfig::new(data);
    config.access = Access::Tokens(key()?);
    Ok(Server::new(config)?.spawn(listener)?)
}

/// How long a graceful stop may take.
const STOP: Duration = Duration::from_secs(60);

/// An admin token for every room: the suite writes shared namespaces and lists every blob,
/// which a room's edit token may not.
fn token() -> Result<String, Box<dyn std::error::Error>> {
    Ok(key()?.issue(&Claims::new("*", Role::Admin, Duration::from_secs(3600)))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tier_passes_the_suite_and_revalidates() -> TestResult {
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let running = serve(dir.path(), listener).await?;
    let mut config = RemoteConfig::new(format!("http://{addr}"));
    config.token = Some(token()?);
    let remote = Arc::new(RemoteTier::new(config)?);
    check_tier(remote.clone()).await;

    let key = Key::kv("app", "config.json")?;
    let v1 = remote
        .put(
            &key,
            Bytes::from_static(b"{\"a\":1}"),
            PutOptions::default(),
        )
        .await?;
    match remote.revalidate(&key, &v1.etag).await? {
        Revalidated::NotModified(meta) => {
            assert_eq!((meta.etag, meta.size), (v1.etag.clone(), 7));
        }
        other => panic!("expected NotModified, got {other:?}"),
    }
    remote
        .put(
            &key,
            Bytes::from_static(b"{\"a\":2}"),
            PutOptions::default(),
        )
        .await?;
    match remote.revalidate(&key, &v1.etag).await? {
        Revalidated::Modified(entry) => assert_eq!(&entry.body[..], b"{\"a\":2}"),
        other => panic!("expected Modified, got {other:?}"),
    }
    remote.delete(&key, Default::default()).await?;
    assert_eq!(
        remote.revalidate(&key, &v1.etag).await?,
        Revalidated::Missing
    );

    // Without a token the server refuses, and the tier says so (no retries, no breaker).
    let anonymous = RemoteTier::new(RemoteConfig::new(format!("http://{addr}")))?;
    match anonymous.get(&key).await {
        Err(StoreError::Forbidden { reason, .. }) => {
            assert!(reason.contains("requires an access token"), "{reason}")
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert_eq!(anonymous.breaker_state(), BreakerState::Closed);
    Ok(running.stop(STOP).await?)
}

/// Accepts connections on `addr` and never answers: a server that hangs.
async fn black_hole(addr: SocketAddr) -> Result<JoinHandle<()>, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_breaker_fails_fast_while_open_and_closes_when_the_server_is_back() -> TestResult {
    // nextest runs each test in its own process, so this recorder sees this test only.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let running = serve(dir.path(), listener).await?;
    let timeout = Duration::from_millis(800);
    let mut config = RemoteConfig::new(format!("http://{addr}"));
    config.token = Some(token()?);
    config.timeout = timeout;
    config.max_retries = 2;
    config.min_delay = Duration::from_millis(20);
    config.max_delay = Duration::from_millis(50);
    config.breaker_failures = 3;
    config.breaker_open_for = Duration::from_secs(1);
    config.breaker_max_open = Duration::from_secs(2);
    // Metered, as a Store holds it: hits and latency below are its figures.
    let remote = Metered::new(RemoteTier::new(config)?);
    let key = Key::kv("app", "x")?;
    remote
        .put(&key, Bytes::from_static(b"before"), PutOptions::default())
        .await?;
    assert_eq!(remote.inner().breaker_state(), BreakerState::Closed);

    // The server stops: the call's three attempts fail and open the breaker.
    running.stop(STOP).await?;
    let first = remote.get(&key).await;
    assert!(
        matches!(first, Err(StoreError::Unavailable { .. })),
        "{first:?}"
    );
    assert_eq!(remote.inner().breaker_state(), BreakerState::Open);

    // Something now holds the port and never answers: a call that went out would cost the
    // full timeout. While the breaker is open, reads fail at once instead.
    let hole = black_hole(addr).await?;
    for _ in 0..5 {
        let started = Instant::now();
        let result = remote.get(&key).await;
        let took = started.elapsed();
        match result {
            Err(StoreError::Unavailable { reason, .. }) => {
                assert!(reason.contains("circuit breaker open"), "{reason}")
            }
            other => panic!("expected a fast Unavailable, got {other:?}"),
        }
        assert!(took < timeout / 10, "an open breaker answered in {took:?}");
    }

    // After the open period one trial goes out, hangs for the timeout, and reopens it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let trial = remote.get(&key).await;
    assert!(
        matches!(trial, Err(StoreError::Unavailable { .. })),
        "{trial:?}"
    );
    assert!(started.elapsed() >= timeout, "the trial call went out");
    assert_eq!(remote.inner().breaker_state(), BreakerState::Open);

    // The server is back on the same port: after the open period a trial succeeds and closes it.
    hole.abort();
    let _ = hole.await;
    let listener = TcpListener::bind(addr).await?;
    let running = serve(dir.path(), listener).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        match remote.get(&key).await {
            Ok(Some(entry)) => break entry,
            Ok(None) => panic!("the entry written before the outage is on disk"),
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(&entry.body[..], b"before");
    assert_eq!(remote.inner().breaker_state(), BreakerState::Closed);

    let metrics = snapshotter.snapshot().into_vec();
    let this_remote = format!("http://{addr}");
    let counter = |name: &str, label: Option<(&str, &str)>| -> u64 {
        metrics
            .iter()
            .filter(|(key, _, _, _)| key.key().name() == name)
            // Breaker metrics carry the remote: count this test's only (under `cargo test`
            // the other test of this binary shares the recorder).
            .filter(|(key, _, _, _)| {
                key.key()
                    .labels()
                    .all(|l| l.key() != "remote" || l.value() == this_remote)
            })
            .filter(|(key, _, _, _)| {
                label
                    .is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(
        counter(
            "spike_store_breaker_transitions_total",
            Some(("state", "open"))
        ),
        2
    );
    assert!(
        counter(
            "spike_store_breaker_transitions_total",
            Some(("state", "half_open"))
        ) >= 2
    );
    // failsafe reports "closed" once when the breaker is built, then once per recovery.
    assert_eq!(
        counter(
            "spike_store_breaker_transitions_total",
            Some(("state", "closed"))
        ),
        2
    );
    assert!(counter("spike_store_breaker_rejections_total", None) >= 5);
    assert!(counter("spike_store_hits_total", None) >= 1);
    assert!(counter("spike_store_errors_total", Some(("kind", "unavailable"))) >= 7);
    let latencies = metrics
        .iter()
        .filter(|(key, _, _, _)| key.key().name() == "spike_store_latency_seconds")
        .map(|(_, _, _, value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum::<usize>();
    assert!(
        latencies >= 8,
        "every call's latency is recorded ({latencies})"
    );
    Ok(running.stop(STOP).await?)
}
