//! `spike ai ask` as a user runs it, against a local server speaking OpenAI's streaming format.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

/// Answers one request with `pieces` (each written and flushed on its own); returns the request.
fn serve_once(pieces: &'static [&'static [u8]]) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().expect("length");
                }
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        socket
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .expect("write");
        for piece in pieces {
            socket.write_all(piece).expect("write");
            socket.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(5));
        }
        head + &String::from_utf8(body).expect("utf8")
    });
    (base, handle)
}

#[test]
fn ai_ask_streams_the_answer_to_stdout() {
    let (base, server) = serve_once(&[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\nda",
        b"ta: {\"choices\":[{\"delta\":{\"content\":\", w\xc3",
        b"\xb6rld\"},\"finish_reason\":\"stop\"}]}\n\n",
        b"data: [DONE]\n\n",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("App.tsx"),
        "export const App = () => <p/>;\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args([
            "ai",
            "ask",
            "--base-url",
            &base,
            "--model",
            "gpt-test",
            "--file",
            "App.tsx",
        ])
        .arg("What does this do?")
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "sk-cli")
        .output()
        .expect("run spike");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, wörld\n");
    let request = server.join().expect("server");
    assert!(
        request.starts_with("POST /v1/chat/completions "),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-cli"),
        "{request}"
    );
    assert!(request.contains("\"model\":\"gpt-test\""), "{request}");
    assert!(
        request.contains("export const App"),
        "the file is in the prompt: {request}"
    );
}

#[test]
fn ai_ask_without_a_key_exits_1_and_says_which_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["ai", "ask", "--provider", "anthropic", "hi"])
        .current_dir(dir.path())
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .expect("run spike");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ANTHROPIC_API_KEY"));
}
