//! `RemoteTier`'s retry policy against a local HTTP server that answers what each test scripts:
//! 5xx and 429 are retried (waiting what `Retry-After` asks), other answers are not, and a
//! server that does not answer costs one timeout per attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use spike_store::{BreakerState, Key, RemoteConfig, RemoteTier, StoreError, Tier};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One scripted answer: status, `Retry-After`, delay before answering.
#[derive(Clone, Copy)]
struct Step(u16, Option<&'static str>, Duration);

struct Script {
    steps: Mutex<Vec<Step>>,
    requests: AtomicUsize,
}

async fn answer(script: Arc<Script>) -> axum::response::Response {
    script.requests.fetch_add(1, Ordering::SeqCst);
    let step = {
        let mut steps = script.steps.lock().unwrap_or_else(|p| p.into_inner());
        if steps.len() > 1 {
            steps.remove(0)
        } else {
            steps[0]
        }
    };
    tokio::time::sleep(step.2).await;
    let status = StatusCode::from_u16(step.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Some(wait) = step.1 {
        headers.insert("retry-after", wait.parse().unwrap_or(0.into()));
    }
    if status == StatusCode::OK {
        headers.insert("etag", "\"abc\"".parse().unwrap_or(0.into()));
        headers.insert("spike-size", 2.into());
        return (status, headers, "ok").into_response();
    }
    (status, headers, format!("scripted {status}")).into_response()
}

async fn scripted(steps: &[Step]) -> Result<(String, Arc<Script>), Box<dyn std::error::Error>> {
    let script = Arc::new(Script {
        steps: Mutex::new(steps.to_vec()),
        requests: AtomicUsize::new(0),
    });
    let for_handler = script.clone();
    let app = axum::Router::new().fallback(move || answer(for_handler.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), script))
}

fn tier(base: &str, retries: usize) -> Result<RemoteTier, StoreError> {
    let mut config = RemoteConfig::new(base);
    config.max_retries = retries;
    config.min_delay = Duration::from_millis(10);
    config.max_delay = Duration::from_millis(20);
    config.timeout = Duration::from_millis(400);
    RemoteTier::new(config)
}

const NOW: Duration = Duration::ZERO;

#[tokio::test]
async fn remote_retries_a_429_after_the_wait_it_asks_for() -> TestResult {
    let (base, script) = scripted(&[Step(429, Some("1"), NOW), Step(200, None, NOW)]).await?;
    let remote = tier(&base, 3)?;
    let started = Instant::now();
    let entry = remote.get(&Key::kv("ns", "k")?).await?.ok_or("found")?;
    assert_eq!(&entry.body[..], b"ok");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After: 1"
    );
    assert_eq!(script.requests.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn remote_retries_5xx_then_succeeds() -> TestResult {
    let (base, script) = scripted(&[
        Step(503, None, NOW),
        Step(502, None, NOW),
        Step(200, None, NOW),
    ])
    .await?;
    let remote = tier(&base, 3)?;
    assert!(remote.get(&Key::kv("ns", "k")?).await?.is_some());
    assert_eq!(script.requests.load(Ordering::SeqCst), 3);
    assert_eq!(remote.breaker_state(), BreakerState::Closed);
    Ok(())
}

#[tokio::test]
async fn remote_gives_up_after_its_retries() -> TestResult {
    let (base, script) = scripted(&[Step(500, None, NOW)]).await?;
    let remote = tier(&base, 2)?;
    match remote.get(&Key::kv("ns", "k")?).await {
        Err(StoreError::Unavailable { reason, .. }) => {
            assert!(reason.contains("500"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        script.requests.load(Ordering::SeqCst),
        3,
        "1 attempt + 2 retries"
    );
    Ok(())
}

#[tokio::test]
async fn remote_does_not_wait_a_retry_after_past_its_limit() -> TestResult {
    let (base, script) = scripted(&[Step(503, Some("120"), NOW), Step(200, None, NOW)]).await?;
    let remote = tier(&base, 3)?;
    let started = Instant::now();
    let result = remote.get(&Key::kv("ns", "k")?).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(script.requests.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn remote_does_not_retry_client_errors() -> TestResult {
    let (base, script) = scripted(&[Step(400, None, NOW), Step(200, None, NOW)]).await?;
    let remote = tier(&base, 3)?;
    let result = remote.get(&Key::kv("ns", "k")?).await;
    match result {
        Err(StoreError::Backend { source, .. }) => {
            assert!(source.to_string().contains("400"), "{source}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    assert_eq!(script.requests.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn remote_times_out_each_attempt() -> TestResult {
    let (base, script) = scripted(&[Step(200, None, Duration::from_secs(5))]).await?;
    let remote = tier(&base, 1)?;
    match remote.get(&Key::kv("ns", "k")?).await {
        Err(StoreError::Unavailable { reason, .. }) => {
            assert!(reason.contains("no answer within 400ms"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(script.requests.load(Ordering::SeqCst), 2);
    Ok(())
}
