//! The AI proxy on real loopback sockets: a `spike_server::Server` with room tokens in front of a
//! local HTTP server that speaks OpenAI's streamed Chat Completions format byte for byte and
//! records what it received; the client is spike-ai's own OpenAI-compatible provider (or raw
//! HTTP where the wire itself is asserted).

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestResult, TestServer};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use spike_ai::{AiError, ChatRequest, Message, Provider as _, ProviderKind, ToolCall};
use spike_server::ai_proxy::AiConfig;
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::Access;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SERVER_KEY: &str = "sk-server-7f3a";

/// One scripted upstream answer: a status line, headers and body pieces, each written and
/// flushed on its own (so chunk boundaries fall where the test says).
struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    pieces: Vec<Vec<u8>>,
    /// After the pieces, keep the connection open until the client hangs up.
    hold_open: bool,
}

impl Reply {
    /// `data:` events as OpenAI streams them, then `data: [DONE]`; each event is cut in two
    /// mid-way, so the proxy's client must reassemble events across reads.
    fn sse(events: &[Value]) -> Reply {
        let mut pieces = Vec::new();
        for e in events {
            let text = format!("data: {e}\n\n").into_bytes();
            let (a, b) = text.split_at(text.len() / 2);
            pieces.push(a.to_vec());
            pieces.push(b.to_vec());
        }
        pieces.push(b"data: [DONE]\n\n".to_vec());
        Reply {
            status: "200 OK",
            headers: vec![("content-type", "text/event-stream".into())],
            pieces,
            hold_open: false,
        }
    }

    fn error(status: &'static str, message: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            pieces: vec![
                json!({"error": {"message": message, "type": "server_error"}})
                    .to_string()
                    .into_bytes(),
            ],
            hold_open: false,
        }
    }
}

/// What the upstream received.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: HashMap<String, String>,
    raw_head: String,
    body: Value,
}

/// The fake provider: answers connections with the script in order, then with 500s.
struct Upstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Connections held open (`Reply::hold_open`) that the client closed.
    hung_up: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    async fn start(script: Vec<Reply>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = requests.clone();
        let hung_up = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hangups = hung_up.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let script = script.clone();
                let hangups = hangups.clone();
                tokio::spawn(async move {
                    answer(socket, recorded, script, hangups).await;
                });
            }
        });
        Upstream {
            addr,
            requests,
            hung_up,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn answer(
    mut socket: tokio::net::TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    hung_up: Arc<std::sync::atomic::AtomicUsize>,
) {
    socket.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.expect("read");
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let raw_head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = raw_head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "client closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    recorded.lock().expect("lock").push(Recorded {
        path,
        headers,
        raw_head,
        body,
    });
    let reply = script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| Reply::error("500 Internal Server Error", "script ended"));
    let mut head = format!("HTTP/1.1 {}\r\nconnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for piece in reply.pieces {
        if socket.write_all(&piece).await.is_err() || socket.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if reply.hold_open {
        // Reading returns 0 (or fails) once the client closed its end.
        while matches!(socket.read(&mut chunk).await, Ok(n) if n > 0) {}
        hung_up.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return;
    }
    let _ = socket.shutdown().await;
}

/// A text answer: `pieces` as content deltas, then `finish_reason: stop` with usage.
fn text_answer(pieces: &[&str]) -> Reply {
    let mut events: Vec<Value> = pieces
        .iter()
        .map(|p| {
            json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": p},
            "finish_reason": null}]})
        })
        .collect();
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}}));
    Reply::sse(&events)
}

/// Text, then a `read_file` call whose arguments arrive in three deltas.
fn tool_answer() -> Reply {
    let delta = |d: Value| json!({"choices": [{"index": 0, "delta": d, "finish_reason": null}]});
    Reply::sse(&[
        delta(json!({"role": "assistant", "content": "Let me "})),
        delta(json!({"content": "look."})),
        delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "read_file", "arguments": ""}}]}),
        ),
        delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\":"}}]})),
        delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"App.tsx\"}"}}]})),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ])
}

struct Setup {
    server: TestServer,
    upstream: Upstream,
    key: TokenKey,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(script: Vec<Reply>, tune: impl FnOnce(&mut AiConfig)) -> Setup {
        let upstream = Upstream::start(script).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TokenKey::new(&Secret::new(vec![7u8; 32]).expect("secret"));
        let mut config = common::config(dir.path());
        config.access = Access::Tokens(key.clone());
        let mut ai = AiConfig::new(ProviderKind::Compatible);
        ai.base_url = Some(upstream.base());
        ai.api_key = Some(SERVER_KEY.into());
        ai.retry = spike_ai::RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(1),
        };
        tune(&mut ai);
        config.ai = Some(ai);
        let server = TestServer::start(config).await;
        Setup {
            server,
            upstream,
            key,
            dir,
        }
    }

    fn token(&self, role: Role, name: &str) -> String {
        let mut claims = Claims::new("team-a", role, Duration::from_secs(3600));
        claims.name = Some(name.into());
        self.key.issue(&claims).expect("token")
    }

    /// spike-ai's OpenAI-compatible provider pointed at the proxy, the token as its API key.
    fn client(&self, token: Option<String>) -> spike_ai::OpenAi {
        spike_ai::OpenAi::compatible(format!("http://{}/v1/ai", self.server.addr), token)
            .expect("client")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// POSTs `body` to `/v1/ai/chat` with `token`; returns the status, `Retry-After` and body.
async fn post(
    setup: &Setup,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, Option<String>, String), reqwest::Error> {
    let mut request = http().post(setup.url("/v1/ai/chat")).body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, retry_after, response.text().await?))
}

/// The sum of the series of `name` whose labels include every one of `labels`, in this
/// process' `/metrics`.
fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    let handle = spike_server::observe::install_recorder().expect("the Prometheus recorder");
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].clone()
}

#[tokio::test]
async fn streams_text_and_tool_calls_with_the_servers_key_never_the_callers() -> TestResult {
    let setup = Setup::start(
        vec![tool_answer(), text_answer(&["It ", "exports App."])],
        |_| {},
    )
    .await;
    let ok_before = metric(
        "spike_ai_proxy_requests_total",
        &[("provider", "compatible"), ("outcome", "ok")],
    );
    let token = setup.token(Role::Edit, "ada");
    let client = setup.client(Some(token.clone()));

    let mut request = ChatRequest::new("gpt-test", "What does App.tsx do?");
    request.tools = spike_ai::editing_tools();
    let answer = spike_ai::collect_answer(client.stream(&request).await?).await?;
    assert_eq!(answer.text, "Let me look.");
    let call = ToolCall {
        id: "call_1".into(),
        name: "read_file".into(),
        arguments: json!({"path": "App.tsx"}),
    };
    assert_eq!(answer.tool_calls, vec![call.clone()]);
    assert_eq!(answer.finish.stop_reason.as_deref(), Some("tool_calls"));

    // The next turn carries the call and its result back through the proxy.
    request
        .messages
        .push(Message::assistant("Let me look.", vec![call]));
    request.messages.push(Message::tool_result(
        "call_1",
        "export const App = () => <p/>;",
    ));
    let answer = spike_ai::collect_answer(client.stream(&request).await?).await?;
    assert_eq!(answer.text, "It exports App.");
    assert_eq!(answer.finish.stop_reason.as_deref(), Some("stop"));

    let received = setup.upstream.requests();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {SERVER_KEY}").as_str())
        );
        assert!(!r.raw_head.contains(&token), "the room token went upstream");
        assert!(!r.body.to_string().contains(&token));
        assert_eq!(r.body["model"], "gpt-test");
        assert_eq!(r.body["stream"], true);
    }
    assert_eq!(
        received[0].body["messages"],
        json!([{"role": "user", "content": "What does App.tsx do?"}])
    );
    let names: Vec<&str> = received[0].body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "read_file",
            "replace_range",
            "search_replace",
            "create_file"
        ]
    );
    assert_eq!(
        received[1].body["messages"][1],
        json!({"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": "read_file",
            "arguments": "{\"path\":\"App.tsx\"}"}}]})
    );
    assert_eq!(
        received[1].body["messages"][2],
        json!({"role": "tool", "content": "export const App = () => <p/>;",
            "tool_call_id": "call_1"})
    );

    let ok_after = metric(
        "spike_ai_proxy_requests_total",
        &[("provider", "compatible"), ("outcome", "ok")],
    );
    assert!(ok_after - ok_before >= 2.0, "{ok_before} → {ok_after}");
    assert!(
        metric(
            "spike_ai_requests_total",
            &[("provider", "compatible"), ("outcome", "ok")]
        ) >= 2.0
    );
    assert!(
        metric(
            "spike_ai_proxy_seconds_count",
            &[("provider", "compatible")]
        ) >= 2.0
    );
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_raw_stream_is_openai_chunks_ending_in_done() -> TestResult {
    let setup = Setup::start(vec![text_answer(&["Hi", " there"])], |_| {}).await;
    let token = setup.token(Role::Edit, "ada");
    let body = json!({"model": "gpt-test", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hello"}]});
    let response = http()
        .post(setup.url("/v1/ai/v1/chat/completions"))
        .bearer_auth(&token)
        .body(body.to_string())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut raw = String::new();
    let mut bytes = response.bytes_stream();
    while let Some(piece) = bytes.next().await {
        raw.push_str(std::str::from_utf8(&piece?)?);
    }
    let data: Vec<&str> = raw
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{raw}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d))
        .collect::<Result<_, _>>()?;
    assert_eq!(chunks.len(), 4, "{raw}");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-test");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "Hi"})
    );
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"content": " there"})
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["choices"], json!([]));
    assert_eq!(
        chunks[3]["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13})
    );
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_non_streamed_answer_is_one_chat_completion() -> TestResult {
    let setup = Setup::start(
        vec![text_answer(&["Hello", ", world"]), tool_answer()],
        |_| {},
    )
    .await;
    let token = setup.token(Role::Edit, "ada");
    let request = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post(&setup, Some(&token), &request.to_string()).await?;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello, world"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 13);

    let (status, _, body) = post(&setup, Some(&token), &request.to_string()).await?;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": "read_file",
            "arguments": "{\"path\":\"App.tsx\"}"}}]})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn view_tokens_missing_and_forged_tokens_are_refused_before_any_upstream_call() -> TestResult
{
    let setup = Setup::start(vec![text_answer(&["never"])], |_| {}).await;
    let body =
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let view_before = metric("spike_auth_refusals_total", &[("reason", "view_only")]);

    let view = setup.token(Role::View, "viewer");
    let (status, _, text) = post(&setup, Some(&view), &body).await?;
    assert_eq!(status, 403, "{text}");
    let error = error_of(&text);
    assert_eq!(error["type"], "permission_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("view token"),
        "{text}"
    );
    assert!(metric("spike_auth_refusals_total", &[("reason", "view_only")]) > view_before);

    let (status, _, text) = post(&setup, None, &body).await?;
    assert_eq!(status, 401, "{text}");
    assert!(
        error_of(&text)["message"]
            .as_str()
            .unwrap_or("")
            .contains("Authorization: Bearer"),
        "{text}"
    );

    let other = TokenKey::new(&Secret::new(vec![9u8; 32])?);
    let forged = other.issue(&Claims::new("team-a", Role::Edit, Duration::from_secs(60)))?;
    let (status, _, text) = post(&setup, Some(&forged), &body).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature is invalid"), "{text}");

    // spike-ai's client sees the refusals as the caller's key being refused.
    let refused = setup
        .client(Some(view))
        .stream(&ChatRequest::new("m", "hi"))
        .await;
    assert!(
        matches!(&refused, Err(AiError::Unauthorized { message, .. }) if message.contains("view token")),
        "{:?}",
        refused.err()
    );

    assert!(setup.upstream.requests().is_empty());
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_caller_over_its_quota_gets_429_with_retry_after_while_another_passes() -> TestResult {
    let setup = Setup::start(vec![text_answer(&["one"]), text_answer(&["two"])], |ai| {
        ai.limits.per_caller = Some(spike_ai::Quota::per_minute(
            std::num::NonZeroU32::MIN, // one a minute
        ));
    })
    .await;
    let ada = setup.client(Some(setup.token(Role::Edit, "ada")));
    let request = ChatRequest::new("gpt-test", "hi");
    let (text, _) = spike_ai::collect(ada.stream(&request).await?).await?;
    assert_eq!(text, "one");

    let second = ada.stream(&request).await;
    match second {
        Err(AiError::RateLimited {
            retry_after: Some(wait),
            ..
        }) => assert!(
            (Duration::from_secs(50)..=Duration::from_secs(60)).contains(&wait),
            "{wait:?}"
        ),
        other => panic!("expected 429 with Retry-After, got {:?}", other.err()),
    }
    let raw = post(
        &setup,
        Some(&setup.token(Role::Edit, "ada")),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await?;
    assert_eq!(raw.0, 429, "{}", raw.2);
    let secs: u64 = raw.1.as_deref().unwrap_or("").parse()?;
    assert!((50..=60).contains(&secs), "{secs}");
    assert_eq!(error_of(&raw.2)["type"], "rate_limit_error");
    assert_eq!(setup.upstream.requests().len(), 1);

    let bob = setup.client(Some(setup.token(Role::Edit, "bob")));
    let (text, _) = spike_ai::collect(bob.stream(&request).await?).await?;
    assert_eq!(text, "two");
    assert_eq!(setup.upstream.requests().len(), 2);
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn upstream_500s_become_a_503_after_the_retries() -> TestResult {
    let setup = Setup::start(Vec::new(), |_| {}).await;
    let token = setup.token(Role::Edit, "ada");
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, text) = post(&setup, Some(&token), &body.to_string()).await?;
    assert_eq!(status, 503, "{text}");
    assert_eq!(error_of(&text)["type"], "service_unavailable_error");
    assert!(text.contains("unavailable"), "{text}");
    // The first attempt and two retries.
    assert_eq!(setup.upstream.requests().len(), 3);
    assert!(
        metric(
            "spike_ai_requests_total",
            &[("provider", "compatible"), ("outcome", "down")]
        ) >= 1.0
    );

    let refused = setup
        .client(Some(token))
        .stream(&ChatRequest::new("gpt-test", "hi"))
        .await;
    assert!(
        matches!(&refused, Err(AiError::ProviderDown { detail, .. }) if detail.contains("503")),
        "{:?}",
        refused.err()
    );
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_refused_server_key_is_a_502_that_says_whose_key_it_was() -> TestResult {
    let setup = Setup::start(
        vec![Reply::error(
            "401 Unauthorized",
            "Incorrect API key provided",
        )],
        |_| {},
    )
    .await;
    let token = setup.token(Role::Edit, "ada");
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, text) = post(&setup, Some(&token), &body.to_string()).await?;
    assert_eq!(status, 502, "{text}");
    let message = error_of(&text)["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("refused this server's API key"), "{text}");
    assert!(message.contains("Incorrect API key provided"), "{text}");
    assert_eq!(setup.upstream.requests().len(), 1, "a 401 is not retried");
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_invalid_body_is_a_400_naming_the_field() -> TestResult {
    let setup = Setup::start(Vec::new(), |_| {}).await;
    let token = setup.token(Role::Edit, "ada");
    let body = json!({"model": "gpt-test", "messages": [
        {"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]});
    let (status, _, text) = post(&setup, Some(&token), &body.to_string()).await?;
    assert_eq!(status, 400, "{text}");
    let error = error_of(&text);
    assert_eq!(error["param"], "messages[1].role");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"wizard\" is not one of"),
        "{text}"
    );

    let (status, _, text) = post(&setup, Some(&token), "{\"model\": \"m\", ").await?;
    assert_eq!(status, 400, "{text}");
    assert_eq!(error_of(&text)["param"], "body");

    // spike-ai's client reads `param` as the field.
    let mut request = ChatRequest::new("gpt-test", "hi");
    request.temperature = Some(5.0);
    let refused = setup.client(Some(token)).stream(&request).await;
    assert!(
        matches!(&refused, Err(AiError::InvalidRequest { field: Some(f), .. }) if f == "temperature"),
        "{:?}",
        refused.err()
    );
    assert!(setup.upstream.requests().is_empty());
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn without_an_ai_provider_the_routes_answer_404() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(common::config(dir.path())).await;
    let response = http()
        .post(format!("http://{}/v1/ai/chat", server.addr))
        .body(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 404);
    let text = response.text().await?;
    assert!(
        error_of(&text)["message"]
            .as_str()
            .unwrap_or("")
            .contains("no AI provider configured"),
        "{text}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_deterministic_request_is_answered_from_the_cache_in_the_data_folder() -> TestResult {
    let setup = Setup::start(vec![text_answer(&["Cached ", "answer"])], |_| {}).await;
    let client = setup.client(Some(setup.token(Role::Edit, "ada")));
    let mut request = ChatRequest::new("gpt-test", "Explain useEffect");
    request.temperature = Some(0.0);
    for _ in 0..2 {
        let (text, finish) = spike_ai::collect(client.stream(&request).await?).await?;
        assert_eq!(text, "Cached answer");
        assert_eq!(finish.stop_reason.as_deref(), Some("stop"));
    }
    assert_eq!(
        setup.upstream.requests().len(),
        1,
        "the second came from the cache"
    );
    assert!(setup
        .dir
        .path()
        .join(spike_server::ai_proxy::CACHE_FILE)
        .exists());
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_answer_cut_upstream_ends_the_stream_with_an_error_event_not_done() -> TestResult {
    let mut cut = text_answer(&["Half an ", "answer"]);
    // Only the first event, then the connection closes: no finish_reason, no [DONE].
    cut.pieces.truncate(2);
    let setup = Setup::start(vec![cut], |_| {}).await;
    let before = metric(
        "spike_ai_proxy_requests_total",
        &[("provider", "compatible"), ("outcome", "bad_gateway")],
    );
    let client = setup.client(Some(setup.token(Role::Edit, "ada")));
    let mut answer = client.stream(&ChatRequest::new("gpt-test", "hi")).await?;
    assert_eq!(
        answer.next().await.transpose()?,
        Some(spike_ai::Chunk::Text("Half an ".into()))
    );
    match answer.next().await {
        Some(Err(AiError::ProviderDown { detail, .. })) => {
            assert!(detail.contains("cut off"), "{detail}")
        }
        other => panic!("expected the proxy's error event, got {other:?}"),
    }
    assert!(
        metric(
            "spike_ai_proxy_requests_total",
            &[("provider", "compatible"), ("outcome", "bad_gateway")]
        ) > before
    );
    assert_eq!(
        setup.upstream.requests().len(),
        1,
        "no retry once text was sent"
    );
    setup.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn in_open_mode_each_client_address_has_its_own_quota() -> TestResult {
    let upstream = Upstream::start(vec![text_answer(&["one"]), text_answer(&["two"])]).await;
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    let mut ai = AiConfig::new(ProviderKind::Compatible);
    ai.base_url = Some(upstream.base());
    ai.limits.per_caller = Some(spike_ai::Quota::per_minute(std::num::NonZeroU32::MIN));
    config.ai = Some(ai);
    let server = TestServer::start(config).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let from = |ip: [u8; 4]| -> Result<reqwest::Client, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
    };
    let url = format!("http://{}/v1/ai/chat", server.addr);
    let first = from([127, 0, 0, 1])?
        .post(&url)
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(first.status().as_u16(), 200, "no token needed in open mode");
    let again = from([127, 0, 0, 1])?
        .post(&url)
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(again.status().as_u16(), 429);
    assert!(again.headers().contains_key("retry-after"));
    // Another loopback address is another caller.
    let other = from([127, 0, 0, 2])?.post(&url).body(body).send().await?;
    assert_eq!(other.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&other.text().await?)?;
    assert_eq!(v["choices"][0]["message"]["content"], "two");
    assert_eq!(upstream.requests().len(), 2);
    assert!(!upstream.requests()[0].headers.contains_key("authorization"));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_caller_that_hangs_up_stops_the_upstream_request() -> TestResult {
    let mut slow = text_answer(&["First ", "never sent"]);
    slow.pieces.truncate(2);
    slow.hold_open = true;
    let setup = Setup::start(vec![slow], |_| {}).await;
    let before = metric(
        "spike_ai_proxy_requests_total",
        &[("provider", "compatible"), ("outcome", "client_gone")],
    );
    let client = setup.client(Some(setup.token(Role::Edit, "ada")));
    let mut answer = client.stream(&ChatRequest::new("gpt-test", "hi")).await?;
    assert_eq!(
        answer.next().await.transpose()?,
        Some(spike_ai::Chunk::Text("First ".into()))
    );
    assert_eq!(
        setup
            .upstream
            .hung_up
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    drop(answer);
    let deadline = tokio::time::Instant::now() + common::T;
    while setup
        .upstream
        .hung_up
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream request outlived its caller"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metric(
            "spike_ai_proxy_requests_total",
            &[("provider", "compatible"), ("outcome", "client_gone")]
        ) > before
    );
    setup.server.stop().await;
    Ok(())
}
