//! `spike serve --ai-provider …` as an operator runs it: the AI proxy answers in OpenAI's
//! streamed format through a local server speaking OpenAI's wire format, with the key from the
//! server's environment; `spike ai ask` works through it; a provider that needs a key refuses
//! to start without one.

mod common;

use std::io::{BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{read_request, Serve};

const ANSWER: &[&[u8]] = &[
    b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\nda",
    b"ta: {\"choices\":[{\"delta\":{\"content\":\"lo from the team account\"},\"finish_reason\":\"stop\"}]}\n\n",
    b"data: [DONE]\n\n",
];

/// A provider that answers every request with [`ANSWER`] and records each request's head and
/// body.
fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let mut reader = BufReader::new(socket.try_clone().expect("clone"));
            let (head, body) = read_request(&mut reader).expect("a request");
            record
                .lock()
                .expect("lock")
                .push(head + &String::from_utf8_lossy(&body));
            let _ = socket.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            );
            for piece in ANSWER {
                let _ = socket.write_all(piece).and_then(|()| socket.flush());
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    (base, seen)
}

#[test]
fn serve_runs_the_ai_proxy_with_the_key_from_its_environment() {
    let (base, seen) = upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(
        dir.path(),
        &[
            "--open",
            "--data",
            "d",
            "--ai-provider",
            "compatible",
            "--ai-base-url",
            &base,
            "--ai-model",
            "team-model",
            "--ai-rate-per-minute",
            "10",
        ],
        &[("OPENAI_API_KEY", "sk-server-cli"), ("RUST_LOG", "warn")],
        Stdio::inherit(),
    );
    let addr = serve.addr().to_owned();

    // An OpenAI streamed request on the wire.
    let body = r#"{"model":"anything","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        tcp,
        "POST /v1/ai/chat HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("text/event-stream"), "{answer}");
    assert!(
        answer.contains(r#""delta":{"content":"Hel","role":"assistant"}"#)
            || answer.contains(r#""delta":{"role":"assistant","content":"Hel"}"#),
        "{answer}"
    );
    assert!(
        answer.contains(r#""content":"lo from the team account""#),
        "{answer}"
    );
    assert!(answer.contains(r#""finish_reason":"stop""#), "{answer}");
    assert!(answer.contains(r#""model":"team-model""#), "{answer}");
    assert!(answer.contains("data: [DONE]"), "{answer}");

    // `spike ai ask` through the proxy, with a key of its own that must not go upstream.
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["ai", "ask", "--provider", "compatible", "--base-url"])
        .arg(format!("http://{addr}/v1/ai"))
        .args(["--model", "anything", "Say hello"])
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "caller-key")
        .env_remove("SPIKE_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .expect("run spike ai ask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello from the team account\n"
    );

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert!(
            request.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains("authorization: bearer sk-server-cli\r\n"),
            "{request}"
        );
        assert!(!request.contains("caller-key"), "{request}");
        assert!(request.contains(r#""model":"team-model""#), "{request}");
    }
    drop(serve);
}

#[test]
fn serve_refuses_to_start_a_keyed_provider_without_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["serve", "--listen", "127.0.0.1:0", "--open", "--data", "d"])
        .args(["--ai-provider", "anthropic"])
        .current_dir(dir.path())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("SPIKE_SECRET")
        .output()
        .expect("run spike serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "no API key for anthropic: set ANTHROPIC_API_KEY in the server's environment"
        ),
        "{stderr}"
    );
}
