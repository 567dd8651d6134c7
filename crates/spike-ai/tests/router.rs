//! The router's rate limits, circuit breaker, response cache and cancellation, against local
//! servers that count what reaches them.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use common::{fast_policy, openai_text, request, Reply, Server};
use futures_util::StreamExt as _;
use serde_json::json;
use spike_ai::{
    collect, AiError, BreakerPolicy, ChatRequest, Chunk, OpenAi, Provider as _, Quota, RateLimits,
    ResponseCache, Router,
};

fn openai(server: &Server) -> OpenAi {
    OpenAi::new(server.base(), "sk-test").expect("provider")
}

fn one_per(period: Duration) -> Quota {
    Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MIN)
}

fn down() -> Reply {
    Reply::error(
        "500 Internal Server Error",
        json!({"error": {"message": "boom"}}),
    )
}

async fn text_of(router: &Router, req: &ChatRequest) -> Result<String, AiError> {
    Ok(collect(router.stream(req).await?).await?.0)
}

/// `err` is a local refusal whose wait is what remains of `period` since the accepted request,
/// which was sent at `since` (GCRA on the nanosecond std clock: exact up to the time between).
fn assert_wait(err: &AiError, period: Duration, since: std::time::Instant) {
    let Some(wait) = err.retry_after() else {
        panic!("expected RateLimited with a wait, got {err:?}");
    };
    assert!(matches!(err, AiError::RateLimited { .. }), "{err:?}");
    let elapsed = since.elapsed();
    assert!(
        wait <= period && wait + elapsed + Duration::from_millis(1) >= period,
        "wait {wait:?}, period {period:?}, {elapsed:?} since the accepted request"
    );
}

#[tokio::test]
async fn a_caller_over_its_quota_is_refused_with_the_wait_and_others_are_not() {
    let server = Server::start(vec![openai_text("one"), openai_text("two")]).await;
    let router = Router::new()
        .route(openai(&server), None)
        .rate_limits(RateLimits {
            per_caller: Some(one_per(Duration::from_secs(2))),
            per_provider: None,
        });
    let req = request();
    let sent = std::time::Instant::now();
    let alice = router.stream_for("alice", &req).await.expect("first");
    assert_eq!(collect(alice).await.expect("answer").0, "one");
    let refused = router
        .stream_for("alice", &req)
        .await
        .err()
        .expect("over quota");
    assert_wait(&refused, Duration::from_secs(2), sent);
    assert!(refused.to_string().contains("alice"), "{refused}");
    let bob = router
        .stream_for("bob", &req)
        .await
        .expect("another caller");
    assert_eq!(collect(bob).await.expect("answer").0, "two");
    assert_eq!(
        server.requests().len(),
        2,
        "the refusal never reached the server"
    );
}

#[tokio::test]
async fn a_provider_over_its_quota_is_skipped_for_the_next_and_refused_when_alone() {
    let a = Server::start(vec![openai_text("from a")]).await;
    let b = Server::start(vec![openai_text("from b")]).await;
    let limits = RateLimits {
        per_provider: Some(one_per(Duration::from_secs(1))),
        per_caller: None,
    };
    let router = Router::new()
        .route(openai(&a), None)
        .route(openai(&b), None)
        .rate_limits(limits.clone());
    let req = request();
    assert_eq!(text_of(&router, &req).await.expect("a"), "from a");
    assert_eq!(text_of(&router, &req).await.expect("b"), "from b");
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));

    let alone = Server::start(vec![openai_text("once")]).await;
    let router = Router::new()
        .route(openai(&alone), None)
        .rate_limits(limits);
    let sent = std::time::Instant::now();
    assert_eq!(text_of(&router, &req).await.expect("first"), "once");
    let refused = text_of(&router, &req).await.expect_err("over quota");
    assert_wait(&refused, Duration::from_secs(1), sent);
    assert_eq!(alone.requests().len(), 1);
}

#[tokio::test]
async fn the_breaker_opens_after_the_failures_falls_back_then_half_opens_and_closes() {
    let flaky = Server::start(vec![
        down(),
        down(),
        openai_text("flaky is back"),
        openai_text("flaky again"),
    ])
    .await;
    let steady = Server::start(vec![
        openai_text("steady 1"),
        openai_text("steady 2"),
        openai_text("steady 3"),
    ])
    .await;
    let router = Router::new()
        .route(openai(&flaky), None)
        .route(openai(&steady), None)
        .retry_policy(fast_policy(0))
        .breaker_policy(BreakerPolicy {
            failures: 2,
            open_for: Duration::from_millis(1500),
        });
    let req = request();
    assert_eq!(text_of(&router, &req).await.expect("1"), "steady 1");
    assert_eq!(text_of(&router, &req).await.expect("2"), "steady 2");
    assert_eq!(flaky.requests().len(), 2);
    // Open: the next request goes straight to the fallback.
    assert_eq!(text_of(&router, &req).await.expect("3"), "steady 3");
    assert_eq!(flaky.requests().len(), 2, "an open breaker does not call");
    assert_eq!(steady.requests().len(), 3);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Half-open: one call goes through; it succeeds and closes the breaker.
    assert_eq!(text_of(&router, &req).await.expect("4"), "flaky is back");
    assert_eq!(text_of(&router, &req).await.expect("5"), "flaky again");
    assert_eq!(flaky.requests().len(), 4);
    assert_eq!(steady.requests().len(), 3);
}

#[tokio::test]
async fn an_open_breaker_alone_is_a_circuit_open_error() {
    let server = Server::start(vec![down()]).await;
    let router = Router::new()
        .route(openai(&server), None)
        .retry_policy(fast_policy(0))
        .breaker_policy(BreakerPolicy {
            failures: 1,
            open_for: Duration::from_secs(60),
        });
    let first = text_of(&router, &request()).await.expect_err("500");
    assert!(matches!(first, AiError::ProviderDown { .. }), "{first:?}");
    let second = text_of(&router, &request()).await.expect_err("open");
    assert!(matches!(second, AiError::CircuitOpen { .. }), "{second:?}");
    assert_eq!(server.requests().len(), 1);
}

fn cache_in(dir: &tempfile::TempDir) -> Arc<ResponseCache> {
    Arc::new(ResponseCache::open(dir.path().join("ai-cache.sqlite")).expect("cache"))
}

#[tokio::test]
async fn a_repeated_deterministic_request_reaches_the_server_once_and_replays_as_a_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(vec![openai_text("the same answer"), openai_text("x")]).await;
    let cache = cache_in(&dir);
    let router = Router::new()
        .route(openai(&server), None)
        .cache(cache.clone());
    let mut req = request();
    req.temperature = Some(0.0);
    assert_eq!(text_of(&router, &req).await.expect("1"), "the same answer");
    assert_eq!(cache.len(), 1);

    let mut replay = router.stream(&req).await.expect("2");
    let mut pieces = Vec::new();
    while let Some(chunk) = replay.next().await {
        pieces.push(chunk.expect("chunk"));
    }
    assert_eq!(server.requests().len(), 1, "served from the cache");
    assert_eq!(
        pieces[..3],
        [
            Chunk::Text("the ".to_owned()),
            Chunk::Text("same ".to_owned()),
            Chunk::Text("answer".to_owned())
        ]
    );
    assert!(
        matches!(pieces.last(), Some(Chunk::Done(f)) if f.stop_reason.as_deref() == Some("stop"))
    );

    // Another prompt is another key.
    let mut other = req.clone();
    other.messages[0].content.push('!');
    assert_eq!(text_of(&router, &other).await.expect("3"), "x");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn an_explicitly_cacheable_request_is_cached_and_a_sampled_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(vec![
        openai_text("sampled 1"),
        openai_text("sampled 2"),
        openai_text("kept"),
    ])
    .await;
    let router = Router::new()
        .route(openai(&server), None)
        .cache(cache_in(&dir));
    let mut sampled = request();
    sampled.temperature = Some(0.7);
    assert_eq!(text_of(&router, &sampled).await.expect("1"), "sampled 1");
    assert_eq!(text_of(&router, &sampled).await.expect("2"), "sampled 2");
    assert_eq!(server.requests().len(), 2, "not deterministic: asked twice");

    let mut flagged = sampled.clone();
    flagged.cacheable = true;
    assert_eq!(text_of(&router, &flagged).await.expect("3"), "kept");
    assert_eq!(text_of(&router, &flagged).await.expect("4"), "kept");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_stream_that_stops_half_way_is_not_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(vec![
        Reply::sse(&[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"half\"}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\" an ans",
        ]),
        openai_text("whole answer"),
    ])
    .await;
    let cache = cache_in(&dir);
    let router = Router::new()
        .route(openai(&server), None)
        .cache(cache.clone());
    let mut req = request();
    req.temperature = Some(0.0);
    let cut = text_of(&router, &req).await.expect_err("cut");
    assert!(matches!(cut, AiError::StreamCut { .. }), "{cut:?}");
    assert!(cache.is_empty());
    assert_eq!(text_of(&router, &req).await.expect("2"), "whole answer");
    assert_eq!(text_of(&router, &req).await.expect("3"), "whole answer");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn the_cache_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(vec![openai_text("kept on disk")]).await;
    let mut req = request();
    req.temperature = Some(0.0);
    {
        let router = Router::new()
            .route(openai(&server), None)
            .cache(cache_in(&dir));
        assert_eq!(text_of(&router, &req).await.expect("1"), "kept on disk");
    }
    let router = Router::new()
        .route(openai(&server), None)
        .cache(cache_in(&dir));
    assert_eq!(text_of(&router, &req).await.expect("2"), "kept on disk");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_corrupt_cache_file_is_moved_aside_and_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ai-cache.sqlite");
    let garbage = b"this is not a SQLite database, just bytes on disk ".repeat(200);
    std::fs::write(&path, &garbage).expect("write garbage");
    let cache = ResponseCache::open(&path).expect("rebuilt, not an error");
    assert!(cache.is_empty());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ai-cache.sqlite.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the bad file was moved aside");
    assert_eq!(std::fs::read(aside[0].path()).expect("read"), garbage);
    let chunks = vec![
        Chunk::Text("ok".to_owned()),
        Chunk::Done(spike_ai::Finish::default()),
    ];
    cache.put("k", "openai", "m", &chunks);
    assert_eq!(cache.get("k"), Some(chunks));
}

#[test]
fn the_key_covers_provider_model_parameters_and_messages() {
    let base = request();
    let key = ResponseCache::key("openai", &base);
    assert_eq!(key.len(), 64);
    assert_eq!(key, ResponseCache::key("openai", &base.clone()));
    assert_ne!(key, ResponseCache::key("anthropic", &base));
    let variants: [fn(&mut ChatRequest); 5] = [
        |r| r.model.push('2'),
        |r| r.max_tokens += 1,
        |r| r.temperature = Some(0.0),
        |r| r.system = None,
        |r| r.tools = spike_ai::editing_tools(),
    ];
    for change in variants {
        let mut r = base.clone();
        change(&mut r);
        assert_ne!(key, ResponseCache::key("openai", &r));
    }
}

#[tokio::test]
async fn dropping_a_router_stream_closes_the_upstream_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reply = Reply::sse(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n"]);
    reply.hold_open = true;
    let mut server = Server::start(vec![reply]).await;
    let cache = cache_in(&dir);
    let router = Router::new()
        .route(openai(&server), None)
        .cache(cache.clone());
    let mut req = request();
    req.temperature = Some(0.0);
    let mut answer = router.stream(&req).await.expect("stream");
    assert!(matches!(answer.next().await, Some(Ok(Chunk::Text(_)))));
    drop(answer);
    let closed = tokio::time::timeout(Duration::from_secs(5), server.hung_up.recv()).await;
    assert!(
        matches!(closed, Ok(Some(()))),
        "the upstream request is still open"
    );
    assert!(cache.is_empty(), "a cancelled answer is not cached");
}

#[test]
fn the_cache_keeps_at_most_max_entries_dropping_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = ResponseCache::open(dir.path().join("c.sqlite"))
        .expect("cache")
        .with_max_entries(2);
    let answer = |t: &str| {
        vec![
            Chunk::Text(t.to_owned()),
            Chunk::Done(spike_ai::Finish::default()),
        ]
    };
    cache.put("a", "openai", "m", &answer("a"));
    cache.put("b", "openai", "m", &answer("b"));
    cache.put("a", "openai", "m", &answer("a2"));
    cache.put("c", "openai", "m", &answer("c"));
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.get("b"), None, "the least recently stored went first");
    assert_eq!(cache.get("a"), Some(answer("a2")));
    assert_eq!(cache.get("c"), Some(answer("c")));
}

#[tokio::test]
async fn answers_that_break_off_count_against_the_breaker_too() {
    let cut = || Reply::sse(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"half\"}}]}\n\n"]);
    let flaky = Server::start(vec![cut(), cut()]).await;
    let steady = Server::start(vec![openai_text("steady")]).await;
    let router = Router::new()
        .route(openai(&flaky), None)
        .route(openai(&steady), None)
        .retry_policy(fast_policy(0))
        .breaker_policy(BreakerPolicy {
            failures: 2,
            open_for: Duration::from_secs(60),
        });
    let req = request();
    for _ in 0..2 {
        let err = text_of(&router, &req).await.expect_err("cut");
        assert!(matches!(err, AiError::StreamCut { .. }), "{err:?}");
    }
    assert_eq!(text_of(&router, &req).await.expect("fallback"), "steady");
    assert_eq!(flaky.requests().len(), 2, "the open breaker skipped it");
}
