//! `spike serve`'s observability as an operator meets it: `--log-format json` writes one JSON
//! object a line, each connection's lines carry its `conn` span (room, connection id) and each
//! request's its `http` span (method, path); `/metrics` answers; `--alert-rules` is checked at
//! start.

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

use common::Serve;
use tokio_tungstenite::tungstenite;

#[test]
fn json_logs_parse_and_carry_connection_and_request_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::start(
        dir.path(),
        &["--open", "--data", "d", "--log-format", "json"],
        &[("RUST_LOG", "info,spike_server=debug")],
        Stdio::piped(),
    );
    let base = serve.base.clone();

    // A client joins room `watched`, gets the server's first frame, and leaves.
    let (mut ws, _) = tungstenite::connect(format!("{base}/watched")).expect("connect");
    let first = ws.read().expect("first frame");
    assert!(first.is_binary(), "{first:?}");
    ws.close(None).expect("close");
    while ws.read().is_ok() {}

    // A scrape.
    let mut tcp = std::net::TcpStream::connect(serve.addr()).expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("spike_connections"), "{answer}");

    // A graceful stop, so every line is written whole.
    let status = Command::new("kill")
        .args(["-TERM", &serve.child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    serve.child.0.wait().expect("wait");
    let mut log = String::new();
    serve
        .child
        .0
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

/// `spike reports --since 1h` lists what arrived within the hour, oldest first, with its causes
/// and a count by kind; older reports are left out.
#[test]
fn reports_since_an_hour() {
    use spike_server::reports::{now_ms, Report, ReportStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).expect("mkdir");
    let report = |kind: &str, message: &str| Report {
        kind: kind.into(),
        message: message.into(),
        chain: vec!["connection refused".into()],
        version: "0.1.0".into(),
        os: "linux".into(),
        room: Some("9f86d081884c7d65".into()),
        at: None,
    };
    let mut store = ReportStore::open(&data).expect("store");
    let now = now_ms();
    store
        .insert(&report("sync", "two hours ago"), now - 2 * 3600 * 1000)
        .expect("insert");
    store
        .insert(&report("sync", "ten minutes ago"), now - 600 * 1000)
        .expect("insert");
    store
        .insert(&report("panic", "just now"), now)
        .expect("insert");
    drop(store);

    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["reports", "--data", "d", "--since", "1h"])
        .current_dir(dir.path())
        .output()
        .expect("run spike reports");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].ends_with("sync  0.1.0 linux  room=9f86d081884c7d65  ten minutes ago"),
        "{text}"
    );
    assert_eq!(lines[1], "    caused by: connection refused");
    assert!(lines[2].ends_with("  just now"), "{text}");
    assert_eq!(lines[4], "2 reports (panic 1, sync 1)");
    assert!(!text.contains("two hours ago"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["reports", "--data", "d", "--json"])
        .current_dir(dir.path())
        .output()
        .expect("run spike reports --json");
    let all: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["message"], "two hours ago");
    assert_eq!(all[2]["kind"], "panic");
}
