//! `spike serve`'s observability as an operator meets it: `--log-format json` writes one JSON
//! object a line, each connection's lines carry its `conn` span (room, connection id) and each
//! request's its `http` span (method, path); `/metrics` answers; `--alert-rules` is checked at
//! start.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};

use tokio_tungstenite::tungstenite;

fn spawn_serve(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["serve", "--listen", "127.0.0.1:0", "--open", "--data", "d"])
        .args(extra)
        .current_dir(dir)
        .env_remove("SPIKE_SECRET")
        .env("RUST_LOG", "info,spike_server=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spike serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no ws:// address in {line:?}"))
        .to_owned();
    (child, base)
}

/// The `host:port` of a `ws://host:port/rooms` base.
fn host(base: &str) -> &str {
    base.trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host")
}

#[test]
fn json_logs_parse_and_carry_connection_and_request_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = spawn_serve(dir.path(), &["--log-format", "json"]);

    // A client joins room `watched`, gets the server's first frame, and leaves.
    let (mut ws, _) = tungstenite::connect(format!("{base}/watched")).expect("connect");
    let first = ws.read().expect("first frame");
    assert!(first.is_binary(), "{first:?}");
    ws.close(None).expect("close");
    while ws.read().is_ok() {}

    // A scrape.
    let mut tcp = std::net::TcpStream::connect(host(&base)).expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("spike_connections"), "{answer}");

    // A graceful stop, so every line is written whole.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait().expect("wait");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("stderr");

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    for l in &lines {
        assert!(
            l["timestamp"].is_string() && l["level"].is_string() && l["fields"].is_object(),
            "{l}"
        );
    }
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_owned();

    // Both connection lines are in the connection's span, with its room and id.
    let conn_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| ["connection opened", "connection closed"].contains(&message(l).as_str()))
        .collect();
    assert_eq!(conn_lines.len(), 2, "{log}");
    let ids: Vec<u64> = conn_lines
        .iter()
        .map(|l| {
            assert_eq!(l["span"]["name"], "conn", "{l}");
            assert_eq!(l["span"]["room"], "watched", "{l}");
            assert_eq!(l["span"]["peer"], "127.0.0.1", "{l}");
            l["span"]["conn"]
                .as_u64()
                .unwrap_or_else(|| panic!("no conn id: {l}"))
        })
        .collect();
    assert_eq!(ids[0], ids[1], "one connection");

    // Each request's line is in its `http` span, with method and path (never the query).
    let requests: Vec<(String, String)> = lines
        .iter()
        .filter(|l| message(l) == "request")
        .map(|l| {
            assert_eq!(l["span"]["name"], "http", "{l}");
            assert!(l["span"]["request"].is_u64(), "{l}");
            (
                l["span"]["method"].as_str().unwrap_or("").to_owned(),
                l["span"]["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        requests,
        vec![
            ("GET".to_owned(), "/rooms/watched".to_owned()),
            ("GET".to_owned(), "/metrics".to_owned()),
        ],
        "{log}"
    );
}

#[test]
fn bad_alert_rules_stop_the_server_with_where_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("rules.json"),
        "{\n  \"rules\": [{\"name\": \"a\", \"metric\": \"m\", \"over\": 1}]\n}\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--open",
            "--alert-rules",
            "rules.json",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run spike serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("alert rules rules.json, line 2") && err.contains("window_secs"),
        "{err}"
    );
}
