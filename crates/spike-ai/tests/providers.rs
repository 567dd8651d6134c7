//! Every provider against a local HTTP server that speaks its documented format, byte by byte
//! (so the tests choose the chunk boundaries), and records what it received.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use spike_ai::{
    collect, AiError, Anthropic, ChatRequest, HttpOptions, OpenAi, RetryPolicy, Router,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One scripted answer: a status, headers and the body as separately written (and flushed) pieces.
struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    pieces: Vec<Vec<u8>>,
    /// Wait before the first body byte.
    delay: Duration,
    /// After the pieces, keep the connection open until the client hangs up.
    hold_open: bool,
}

impl Reply {
    /// An SSE answer, close-delimited, written in the given pieces.
    fn sse(pieces: &[&[u8]]) -> Reply {
        Reply {
            status: "200 OK",
            headers: vec![("content-type", "text/event-stream".to_owned())],
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
            delay: Duration::ZERO,
            hold_open: false,
        }
    }

    /// A JSON error answer.
    fn error(status: &'static str, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            pieces: vec![body.to_string().into_bytes()],
            delay: Duration::ZERO,
            hold_open: false,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// What the server received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Value,
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// One message per connection the client closed while the server held it open.
    hung_up: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Server {
    /// Serves `replies` in order, one per connection; then 500s.
    async fn start(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
        let recorded = requests.clone();
        let (hung_up_tx, hung_up) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let reply = queue.lock().expect("lock").pop_front();
                let recorded = recorded.clone();
                let hung_up_tx = hung_up_tx.clone();
                tokio::spawn(async move {
                    let reply = reply.unwrap_or_else(|| {
                        Reply::error(
                            "500 Internal Server Error",
                            json!({"error": {"message": "script ended"}}),
                        )
                    });
                    serve(socket, reply, recorded, hung_up_tx).await;
                });
            }
        });
        Server {
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

async fn serve(
    mut socket: TcpStream,
    reply: Reply,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    hung_up: tokio::sync::mpsc::UnboundedSender<()>,
) {
    socket.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.expect("read");
        assert!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf8 head");
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().expect("request line").split(' ');
    let method = request_line.next().expect("method").to_owned();
    let path = request_line.next().expect("path").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map(|l| l.parse().expect("length"))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "client closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    recorded.lock().expect("lock").push(Recorded {
        method,
        path,
        headers,
        body,
    });

    let mut head = format!("HTTP/1.1 {}\r\nconnection: close\r\n", reply.status);
    let sse = reply.status.starts_with("200");
    if !sse {
        let len: usize = reply.pieces.iter().map(Vec::len).sum();
        head.push_str(&format!("content-length: {len}\r\n"));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    tokio::time::sleep(reply.delay).await;
    for piece in &reply.pieces {
        if socket.write_all(piece).await.is_err() || socket.flush().await.is_err() {
            return;
        }
        // Separate TCP segments, so the client really sees these boundaries.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if reply.hold_open {
        let mut byte = [0u8; 1];
        while let Ok(n) = socket.read(&mut byte).await {
            if n == 0 {
                break;
            }
        }
        let _ = hung_up.send(());
        return;
    }
    let _ = socket.shutdown().await;
}

fn request() -> ChatRequest {
    let mut r = ChatRequest::new("test-model", "Say hello");
    r.system = Some("Be brief.".to_owned());
    r.max_tokens = 64;
    r
}

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

fn fast_policy(max_retries: usize) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
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
