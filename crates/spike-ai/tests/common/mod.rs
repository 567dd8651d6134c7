//! A local HTTP server that speaks the providers' documented formats byte by byte (so the tests
//! choose the chunk boundaries) and records what it received; shared by the test binaries.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One scripted answer: a status, headers and the body as separately written (and flushed) pieces.
pub struct Reply {
    pub status: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub pieces: Vec<Vec<u8>>,
    /// Wait before the first body byte.
    pub delay: Duration,
    /// After the pieces, keep the connection open until the client hangs up.
    pub hold_open: bool,
}

impl Reply {
    /// An SSE answer, close-delimited, written in the given pieces.
    pub fn sse(pieces: &[&[u8]]) -> Reply {
        Reply {
            status: "200 OK",
            headers: vec![("content-type", "text/event-stream".to_owned())],
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
            delay: Duration::ZERO,
            hold_open: false,
        }
    }

    /// A JSON error answer.
    pub fn error(status: &'static str, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            pieces: vec![body.to_string().into_bytes()],
            delay: Duration::ZERO,
            hold_open: false,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// What the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// One message per connection the client closed while the server held it open.
    pub hung_up: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Server {
    /// Serves `replies` in order, one per connection; then 500s.
    pub async fn start(replies: Vec<Reply>) -> Server {
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

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
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

/// A complete OpenAI stream answering `text` (one delta per word).
pub fn openai_text(text: &str) -> Reply {
    let mut pieces: Vec<Vec<u8>> = text
        .split_inclusive(' ')
        .map(|w| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]})
            )
            .into_bytes()
        })
        .collect();
    pieces.push(
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"
            .to_vec(),
    );
    Reply {
        status: "200 OK",
        headers: vec![("content-type", "text/event-stream".to_owned())],
        pieces,
        delay: Duration::ZERO,
        hold_open: false,
    }
}

/// The request every test sends unless it needs another.
pub fn request() -> spike_ai::ChatRequest {
    let mut r = spike_ai::ChatRequest::new("test-model", "Say hello");
    r.system = Some("Be brief.".to_owned());
    r.max_tokens = 64;
    r
}

/// Retries quick enough for tests.
pub fn fast_policy(max_retries: usize) -> spike_ai::RetryPolicy {
    spike_ai::RetryPolicy {
        max_retries,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}
