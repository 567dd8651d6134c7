//! Every provider against a local HTTP server that speaks its documented format, byte by byte
//! (so the tests choose the chunk boundaries), and records what it received.

mod common;

use std::time::Duration;

use common::{fast_policy, request, Reply, Server};
use serde_json::json;
use spike_ai::{collect, AiError, Anthropic, HttpOptions, OpenAi, Router};

async fn ask(provider: &dyn spike_ai::Provider) -> Result<(String, spike_ai::Finish), AiError> {
    let req = request();
    collect(provider.stream(&req).await?).await
}

// "héllo wörld 🦀" cut inside `data:`, inside `é` (c3 a9) and inside 🦀 (f0 9f a6 80).
const OPENAI_AWKWARD: &[&[u8]] = &[
    b"da",
    b"ta: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\nd",
    b"ata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\xc3",
    b"\xa9llo w\xc3\xb6rld \xf0\x9f",
    b"\xa6\x80\"},\"finish_reason\":null}]}\n",
    b"\n",
    b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\ndata: [DO",
    b"NE]\n\n",
];

#[tokio::test]
async fn openai_request_matches_the_documented_format_and_awkward_chunks_assemble() {
    let server = Server::start(vec![Reply::sse(OPENAI_AWKWARD)]).await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let (text, finish) = ask(&provider).await.expect("answer");
    assert_eq!(text, "héllo wörld 🦀");
    assert_eq!(finish.stop_reason.as_deref(), Some("stop"));
    assert_eq!(
        (finish.usage.input_tokens, finish.usage.output_tokens),
        (9, 4)
    );

    let req = &server.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(req.headers["authorization"], "Bearer sk-test");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(
        req.body,
        json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello"}
            ],
            "max_tokens": 64,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[tokio::test]
async fn compatible_sends_no_key_and_accepts_a_base_url_ending_in_v1() {
    let server = Server::start(vec![Reply::sse(&[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n",
        b"data: [DONE]\n\n",
    ])])
    .await;
    let provider = OpenAi::compatible(format!("{}/v1/", server.base()), None).expect("provider");
    assert_eq!(ask(&provider).await.expect("answer").0, "ok");
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert!(!req.headers.contains_key("authorization"));
    assert_eq!(req.body["stream"], json!(true));
    assert!(req.body.get("stream_options").is_none());
}

const ANTHROPIC_AWKWARD: &[&[u8]] = &[
    b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"test-model\",\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: ping\nda",
    b"ta: {\"type\": \"ping\"}\n\n",
    b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Gr\xc3",
    b"\xbc\xc3\x9fe \xf0\x9f\xa6",
    b"\x80\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"!\"}}\n\n",
    b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5}}\n\n",
    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

#[tokio::test]
async fn anthropic_request_matches_the_documented_format_and_awkward_chunks_assemble() {
    let server = Server::start(vec![Reply::sse(ANTHROPIC_AWKWARD)]).await;
    let provider = Anthropic::new(server.base(), "ak-test").expect("provider");
    let (text, finish) = ask(&provider).await.expect("answer");
    assert_eq!(text, "Grüße 🦀!");
    assert_eq!(finish.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        (finish.usage.input_tokens, finish.usage.output_tokens),
        (12, 5)
    );

    let req = &server.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(req.headers["x-api-key"], "ak-test");
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    assert_eq!(req.headers["content-type"], "application/json");
    assert!(!req.headers.contains_key("authorization"));
    assert_eq!(
        req.body,
        json!({
            "model": "test-model",
            "max_tokens": 64,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello"}],
            "stream": true
        })
    );
}

#[tokio::test]
async fn http_429_with_retry_after_is_rate_limited() {
    let server = Server::start(vec![Reply::error(
        "429 Too Many Requests",
        json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
    )
    .header("retry-after", "7")])
    .await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let err = ask(&provider).await.expect_err("429");
    assert!(
        matches!(err, AiError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    assert!(err.to_string().contains("retry after 7 s"), "{err}");
}

#[tokio::test]
async fn http_529_is_overloaded() {
    let server = Server::start(vec![Reply::error(
        "529 Overloaded",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )])
    .await;
    let provider = Anthropic::new(server.base(), "ak-test").expect("provider");
    let err = ask(&provider).await.expect_err("529");
    assert!(matches!(err, AiError::Overloaded { .. }), "{err:?}");
}

#[tokio::test]
async fn an_overloaded_error_event_mid_stream_is_overloaded() {
    let server = Server::start(vec![Reply::sse(&[
        ANTHROPIC_AWKWARD[0],
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ])])
    .await;
    let provider = Anthropic::new(server.base(), "ak-test").expect("provider");
    let err = ask(&provider).await.expect_err("error event");
    assert!(matches!(err, AiError::Overloaded { .. }), "{err:?}");
}

#[tokio::test]
async fn http_401_is_unauthorized_and_names_the_key() {
    let server = Server::start(vec![Reply::error(
        "401 Unauthorized",
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
    )])
    .await;
    let provider = OpenAi::new(server.base(), "sk-wrong").expect("provider");
    let err = ask(&provider).await.expect_err("401");
    assert!(matches!(err, AiError::Unauthorized { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("Incorrect API key provided") && message.contains("OPENAI_API_KEY"),
        "{message}"
    );
}

#[tokio::test]
async fn http_400_is_invalid_request_naming_the_field() {
    let server = Server::start(vec![Reply::error(
        "400 Bad Request",
        json!({"error": {"message": "The model `nope` does not exist", "type": "invalid_request_error", "param": "model"}}),
    )])
    .await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let err = ask(&provider).await.expect_err("400");
    assert!(
        matches!(&err, AiError::InvalidRequest { field: Some(f), .. } if f == "model"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn invalid_json_in_the_stream_is_malformed() {
    let server = Server::start(vec![Reply::sse(&[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\n\n",
        b"data: [DONE]\n\n",
    ])])
    .await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let err = ask(&provider).await.expect_err("bad json");
    assert!(matches!(err, AiError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn an_openai_stream_that_stops_half_way_is_cut() {
    let server = Server::start(vec![Reply::sse(&[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"half\"}}]}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\" an ans",
    ])])
    .await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let err = ask(&provider).await.expect_err("cut");
    assert!(matches!(err, AiError::StreamCut { .. }), "{err:?}");
}

#[tokio::test]
async fn an_anthropic_stream_without_message_stop_is_cut() {
    let server = Server::start(vec![Reply::sse(&ANTHROPIC_AWKWARD[..7])]).await;
    let provider = Anthropic::new(server.base(), "ak-test").expect("provider");
    let err = ask(&provider).await.expect_err("cut");
    assert!(matches!(err, AiError::StreamCut { .. }), "{err:?}");
}

#[tokio::test]
async fn a_slow_first_token_times_out() {
    let mut reply = Reply::sse(OPENAI_AWKWARD);
    reply.delay = Duration::from_secs(5);
    let server = Server::start(vec![reply]).await;
    let provider = OpenAi::new(server.base(), "sk-test")
        .and_then(|p| {
            p.with_options(HttpOptions {
                first_token_timeout: Duration::from_millis(200),
                ..HttpOptions::default()
            })
        })
        .expect("provider");
    let err = ask(&provider).await.expect_err("timeout");
    assert!(
        matches!(
            err,
            AiError::Timeout {
                stage: "first token",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_router_waits_retry_after_then_retries_and_succeeds() {
    let server = Server::start(vec![
        Reply::error(
            "429 Too Many Requests",
            json!({"error": {"message": "slow down"}}),
        )
        .header("retry-after", "1"),
        Reply::sse(OPENAI_AWKWARD),
    ])
    .await;
    let router = Router::new()
        .route(
            OpenAi::new(server.base(), "sk-test").expect("provider"),
            None,
        )
        .retry_policy(fast_policy(2));
    let started = std::time::Instant::now();
    let (text, _) = ask(&router).await.expect("answer after a retry");
    assert_eq!(text, "héllo wörld 🦀");
    assert_eq!(server.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
}

#[tokio::test]
async fn the_router_falls_back_to_the_next_provider_after_retries() {
    let down = Server::start(vec![
        Reply::error(
            "500 Internal Server Error",
            json!({"error": {"message": "boom"}}),
        ),
        Reply::error(
            "503 Service Unavailable",
            json!({"error": {"message": "boom"}}),
        ),
    ])
    .await;
    let up = Server::start(vec![Reply::sse(ANTHROPIC_AWKWARD)]).await;
    let router = Router::new()
        .route(OpenAi::new(down.base(), "sk-test").expect("provider"), None)
        .route(
            Anthropic::new(up.base(), "ak-test").expect("provider"),
            Some("claude-test".to_owned()),
        )
        .retry_policy(fast_policy(1));
    let (text, _) = ask(&router).await.expect("fallback answer");
    assert_eq!(text, "Grüße 🦀!");
    assert_eq!(down.requests().len(), 2, "one try and one retry");
    assert_eq!(up.requests()[0].body["model"], json!("claude-test"));
}

#[tokio::test]
async fn the_router_does_not_retry_a_401() {
    let server = Server::start(vec![Reply::error(
        "401 Unauthorized",
        json!({"error": {"message": "bad key"}}),
    )])
    .await;
    let router = Router::new()
        .route(
            OpenAi::new(server.base(), "sk-test").expect("provider"),
            None,
        )
        .retry_policy(fast_policy(3));
    let err = ask(&router).await.expect_err("401");
    assert!(matches!(err, AiError::Unauthorized { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let mut reply = Reply::sse(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n"]);
    reply.hold_open = true;
    let mut server = Server::start(vec![reply]).await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let req = request();
    let mut answer = spike_ai::Provider::stream(&provider, &req)
        .await
        .expect("stream");
    let first = futures_util::StreamExt::next(&mut answer).await;
    assert!(
        matches!(first, Some(Ok(spike_ai::Chunk::Text(ref t))) if t == "first"),
        "{first:?}"
    );
    drop(answer);
    let closed = tokio::time::timeout(Duration::from_secs(5), server.hung_up.recv()).await;
    assert!(
        matches!(closed, Ok(Some(()))),
        "the upstream request is still open"
    );
}

#[tokio::test]
async fn http_500_is_provider_down_and_retryable() {
    let server = Server::start(vec![Reply::error(
        "500 Internal Server Error",
        json!({"error": {"message": "The server had an error"}}),
    )])
    .await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let err = ask(&provider).await.expect_err("500");
    assert!(matches!(err, AiError::ProviderDown { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("The server had an error"), "{err}");
}

async fn rate_limited_after(reply: Reply, anthropic: bool) -> Option<Duration> {
    let server = Server::start(vec![reply]).await;
    let err = if anthropic {
        ask(&Anthropic::new(server.base(), "ak-test").expect("provider")).await
    } else {
        ask(&OpenAi::new(server.base(), "sk-test").expect("provider")).await
    }
    .expect_err("429");
    match err {
        AiError::RateLimited { retry_after, .. } => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

fn too_many() -> Reply {
    Reply::error(
        "429 Too Many Requests",
        json!({"error": {"message": "Rate limit reached"}}),
    )
}

#[tokio::test]
async fn openai_429_without_retry_after_waits_for_the_exhausted_limit_to_reset() {
    let exhausted_requests = too_many()
        .header("x-ratelimit-limit-requests", "60")
        .header("x-ratelimit-remaining-requests", "0")
        .header("x-ratelimit-reset-requests", "6m0s")
        .header("x-ratelimit-remaining-tokens", "149000")
        .header("x-ratelimit-reset-tokens", "20ms");
    assert_eq!(
        rate_limited_after(exhausted_requests, false).await,
        Some(Duration::from_secs(360))
    );
    let exhausted_tokens = too_many()
        .header("x-ratelimit-remaining-requests", "59")
        .header("x-ratelimit-reset-requests", "6m0s")
        .header("x-ratelimit-remaining-tokens", "0")
        .header("x-ratelimit-reset-tokens", "1.5s");
    assert_eq!(
        rate_limited_after(exhausted_tokens, false).await,
        Some(Duration::from_millis(1500))
    );
    // Neither says which limit was hit: the longer wait is the safe one.
    let unmarked = too_many()
        .header("x-ratelimit-reset-requests", "1s")
        .header("x-ratelimit-reset-tokens", "20ms");
    assert_eq!(
        rate_limited_after(unmarked, false).await,
        Some(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn retry_after_wins_over_the_reset_headers() {
    let both = too_many()
        .header("retry-after", "4")
        .header("x-ratelimit-remaining-requests", "0")
        .header("x-ratelimit-reset-requests", "6m0s");
    assert_eq!(
        rate_limited_after(both, false).await,
        Some(Duration::from_secs(4))
    );
    let anthropic = too_many().header("retry-after", "2").header(
        "anthropic-ratelimit-requests-reset",
        &humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(50))
            .to_string(),
    );
    assert_eq!(
        rate_limited_after(anthropic, true).await,
        Some(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn anthropic_429_without_retry_after_waits_until_the_reset_time() {
    let now = std::time::SystemTime::now();
    let at = |secs| humantime::format_rfc3339_seconds(now + Duration::from_secs(secs)).to_string();
    let reply = too_many()
        .header("anthropic-ratelimit-requests-limit", "50")
        .header("anthropic-ratelimit-requests-remaining", "0")
        .header("anthropic-ratelimit-requests-reset", &at(30))
        .header("anthropic-ratelimit-tokens-remaining", "1000")
        .header("anthropic-ratelimit-tokens-reset", &at(90));
    let wait = rate_limited_after(reply, true).await.expect("a wait");
    // The reset time has whole seconds: the wait is 29–30 s after the fraction is cut off.
    assert!(
        wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

#[tokio::test]
async fn the_total_timeout_ends_an_answer_that_never_finishes() {
    let mut reply = Reply::sse(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"slow\"}}]}\n\n"]);
    reply.hold_open = true;
    let server = Server::start(vec![reply]).await;
    let provider = OpenAi::new(server.base(), "sk-test")
        .and_then(|p| {
            p.with_options(HttpOptions {
                first_token_timeout: Duration::from_secs(10),
                total_timeout: Duration::from_millis(400),
                ..HttpOptions::default()
            })
        })
        .expect("provider");
    let started = std::time::Instant::now();
    let mut answer = spike_ai::Provider::stream(&provider, &request())
        .await
        .expect("stream");
    let first = futures_util::StreamExt::next(&mut answer).await;
    assert!(
        matches!(first, Some(Ok(spike_ai::Chunk::Text(ref t))) if t == "slow"),
        "{first:?}"
    );
    let second = futures_util::StreamExt::next(&mut answer).await;
    assert!(
        matches!(second, Some(Err(AiError::Timeout { stage: "total", .. }))),
        "{second:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(futures_util::StreamExt::next(&mut answer).await.is_none());
}

#[tokio::test]
async fn openai_tools_are_sent_as_functions_and_streamed_calls_are_assembled() {
    // Two calls; arguments cut inside a key and a string.
    let server = Server::start(vec![Reply::sse(&[
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"search_replace\",\"arguments\":\"\"}}]}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"pa\"}}]}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"th\\\": \\\"App.tsx\\\", \\\"search\\\": \\\"hi\\\", \\\"replace\\\": \\\"h\xc3\xa9\"}}]}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"llo\\\"}\"}}]}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\\\"a.ts\\\"}\"}}]}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        b"data: [DONE]\n\n",
    ])])
    .await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let mut req = request();
    req.tools = spike_ai::editing_tools();
    let answer = spike_ai::collect_answer(
        spike_ai::Provider::stream(&provider, &req)
            .await
            .expect("stream"),
    )
    .await
    .expect("answer");
    assert_eq!(answer.text, "");
    assert_eq!(answer.finish.stop_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        answer.tool_calls,
        vec![
            spike_ai::ToolCall {
                id: "call_a".to_owned(),
                name: "search_replace".to_owned(),
                arguments: json!({"path": "App.tsx", "search": "hi", "replace": "héllo"}),
            },
            spike_ai::ToolCall {
                id: "call_b".to_owned(),
                name: "read_file".to_owned(),
                arguments: json!({"path": "a.ts"}),
            },
        ]
    );
    let body = &server.requests()[0].body;
    let tools = body["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 4);
    assert_eq!(tools[0]["type"], json!("function"));
    assert_eq!(tools[0]["function"]["name"], json!("read_file"));
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["path"])
    );
    assert!(tools[2]["function"]["description"].is_string());
}

#[tokio::test]
async fn anthropic_tools_are_sent_with_input_schema_and_tool_use_blocks_are_assembled() {
    let server = Server::start(vec![Reply::sse(&[
        ANTHROPIC_AWKWARD[0],
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Creating it.\"}}\n\n",
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"create_file\",\"input\":{}}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\\\": \\\"ut\"}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"il.ts\\\", \\\"content\\\": \\\"export {}\\\\n\\\"}\"}}\n\n",
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ])])
    .await;
    let provider = Anthropic::new(server.base(), "ak-test").expect("provider");
    let mut req = request();
    req.tools = spike_ai::editing_tools();
    let answer = spike_ai::collect_answer(
        spike_ai::Provider::stream(&provider, &req)
            .await
            .expect("stream"),
    )
    .await
    .expect("answer");
    assert_eq!(answer.text, "Creating it.");
    assert_eq!(answer.finish.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        answer.tool_calls,
        vec![spike_ai::ToolCall {
            id: "toolu_1".to_owned(),
            name: "create_file".to_owned(),
            arguments: json!({"path": "util.ts", "content": "export {}\n"}),
        }]
    );
    let tools = server.requests()[0].body["tools"].clone();
    assert_eq!(tools.as_array().map(Vec::len), Some(4));
    assert_eq!(tools[3]["name"], json!("create_file"));
    assert_eq!(
        tools[3]["input_schema"]["required"],
        json!(["path", "content"])
    );
    assert!(tools[3].get("type").is_none() && tools[3].get("function").is_none());
}

#[tokio::test]
async fn a_connection_that_never_completes_its_handshake_is_a_connect_timeout() {
    // TCP is accepted but the TLS handshake never answered: the connect phase never ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let provider = OpenAi::new(format!("https://{addr}"), "sk-test")
        .and_then(|p| {
            p.with_options(HttpOptions {
                connect_timeout: Duration::from_millis(300),
                first_token_timeout: Duration::from_secs(20),
                ..HttpOptions::default()
            })
        })
        .expect("provider");
    let started = std::time::Instant::now();
    let err = ask(&provider).await.expect_err("timeout");
    assert!(
        matches!(
            err,
            AiError::Timeout {
                stage: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

/// A tool round: the model read a file, the caller answers it; then the next request.
fn tool_round() -> spike_ai::ChatRequest {
    let mut req = request();
    let doc = spike_collab::RoomDoc::new();
    doc.create_file("App.tsx", "export {};\n").expect("create");
    let calls = vec![
        spike_ai::ToolCall {
            id: "call_1".to_owned(),
            name: "read_file".to_owned(),
            arguments: json!({"path": "App.tsx"}),
        },
        spike_ai::ToolCall {
            id: "call_2".to_owned(),
            name: "read_file".to_owned(),
            arguments: json!({"path": "Nope.tsx"}),
        },
    ];
    req.messages
        .push(spike_ai::Message::assistant("Let me look.", calls));
    req.messages
        .push(spike_ai::read_result(&doc, "call_1", "App.tsx"));
    req.messages
        .push(spike_ai::read_result(&doc, "call_2", "Nope.tsx"));
    req
}

#[tokio::test]
async fn openai_tool_results_go_back_as_tool_messages_after_the_assistant_calls() {
    let server = Server::start(vec![common::openai_text("done")]).await;
    let provider = OpenAi::new(server.base(), "sk-test").expect("provider");
    let req = tool_round();
    collect(
        spike_ai::Provider::stream(&provider, &req)
            .await
            .expect("stream"),
    )
    .await
    .expect("answer");
    assert_eq!(
        server.requests()[0].body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "read_file", "arguments": "{\"path\":\"App.tsx\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "read_file", "arguments": "{\"path\":\"Nope.tsx\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "export {};\n"},
            {"role": "tool", "tool_call_id": "call_2",
             "content": "There is no file \"Nope.tsx\" in the room. Files: App.tsx"}
        ])
    );
}

#[tokio::test]
async fn anthropic_tool_results_go_back_as_tool_result_blocks_of_one_user_turn() {
    let server = Server::start(vec![Reply::sse(ANTHROPIC_AWKWARD)]).await;
    let provider = Anthropic::new(server.base(), "ak-test").expect("provider");
    let req = tool_round();
    collect(
        spike_ai::Provider::stream(&provider, &req)
            .await
            .expect("stream"),
    )
    .await
    .expect("answer");
    assert_eq!(
        server.requests()[0].body["messages"],
        json!([
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "App.tsx"}},
                {"type": "tool_use", "id": "call_2", "name": "read_file", "input": {"path": "Nope.tsx"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "export {};\n"},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": "There is no file \"Nope.tsx\" in the room. Files: App.tsx"}
            ]}
        ])
    );
}
