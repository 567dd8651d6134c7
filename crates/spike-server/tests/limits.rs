//! Abuse limits over real loopback sockets: each limit refuses with its status or close code and
//! a reason naming it, is counted in `spike_limit_refusals_total{kind}`, and leaves the
//! well-behaved clients of the same room editing and converging.
//!
//! Per-address limits are told apart by connecting the abuser from 127.0.0.2 (all of 127/8 is
//! loopback on Linux) while the well-behaved sessions use 127.0.0.1. Counters are process-wide
//! and `cargo test` runs tests in parallel in one process, so assertions compare deltas.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{config, metric, open, session, TestResult, TestServer, T};
use futures_util::{SinkExt, StreamExt};
use spike_collab::{protocol, Session, TextEdit};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::{Access, Rate, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

const ABUSER: &str = "127.0.0.2";

fn refusals(kind: &str) -> u64 {
    metric(&format!("spike_limit_refusals_total{{kind=\"{kind}\"}}")) as u64
}

fn key() -> TokenKey {
    TokenKey::new(&Secret::new(vec![5u8; 32]).expect("secret"))
}

fn token(key: &TokenKey, room: &str, name: &str) -> String {
    let mut claims = Claims::new(room, Role::Edit, Duration::from_secs(3600));
    claims.name = Some(name.into());
    key.issue(&claims).expect("token")
}

/// A TCP connection to `server` from the loopback address `from`.
async fn tcp_from(from: &str, server: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        from.parse::<IpAddr>().map_err(std::io::Error::other)?,
        0,
    ))?;
    socket.connect(server).await
}

/// A WebSocket to `url` (on `server`) from the loopback address `from`.
async fn ws_from(from: &str, server: SocketAddr, url: &str) -> Result<Ws, tungstenite::Error> {
    let tcp = tcp_from(from, server).await?;
    Ok(tokio_tungstenite::client_async(url, tcp).await?.0)
}

/// Expects an HTTP refusal of the upgrade; returns status, `Retry-After` and body.
async fn refusal(from: &str, server: SocketAddr, url: &str) -> (u16, Option<String>, String) {
    match ws_from(from, server, url).await {
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

/// Reads until the server's close frame; returns its code and reason.
async fn closed(ws: &mut Ws) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    let wait = async {
        while let Some(msg) = ws.next().await {
            if let WsMessage::Close(frame) = msg? {
                let frame = frame.ok_or("a close frame without a code")?;
                return Ok((u16::from(frame.code), frame.reason.to_string()));
            }
        }
        Err("the socket ended without a close frame".into())
    };
    tokio::time::timeout(T, wait).await?
}

/// Sends `frame` `n` times at once, then reads the server's close code and reason. Tests send
/// exactly one message past the limit: the server stops reading there, and a socket closed with
/// unread data is reset, which could beat the close frame to the client.
async fn flood(
    ws: &mut Ws,
    frame: Vec<u8>,
    n: usize,
) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    for _ in 0..n {
        ws.feed(WsMessage::binary(frame.clone())).await?;
    }
    ws.flush().await?;
    closed(ws).await
}

/// Two editors keep editing each other's file while the abuser is cut off.
async fn still_converge(a: &Session, b: &Session, round: &str) -> TestResult {
    let path = format!("{round}.ts");
    a.create_file(&path, "a")?;
    b.wait_doc(T, "a's file at b", |d| {
        d.read(&path).as_deref() == Some("a")
    })
    .await?;
    b.edit(&path, &[TextEdit::insert(1, "b")])?;
    a.wait_doc(T, "b's edit at a", |d| {
        d.read(&path).as_deref() == Some("ab")
    })
    .await?;
    a.wait_confirmed(T).await?;
    b.wait_confirmed(T).await?;
    Ok(())
}

/// An awareness frame of about `len` bytes that every peer would accept.
fn awareness_frame(len: usize) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut aw = spike_collab::yrs::sync::Awareness::new(spike_collab::yrs::Doc::new());
    aw.set_local_state(serde_json::json!({ "pad": "x".repeat(len) }))?;
    Ok(protocol::awareness(aw.update()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_per_address_answers_429_with_retry_after() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.ip_connection_rate = Some(Rate::new(1, 3));
    let server = TestServer::start(cfg).await;
    let url = format!("{}/r", server.url());
    let before = refusals("ip_connection_rate");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_from(ABUSER, server.addr, &url).await?);
    }
    let (status, retry_after, body) = refusal(ABUSER, server.addr, &url).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("1"), "one connection a second");
    assert!(
        body.contains("connection rate limit") && body.contains("per client address"),
        "{body}"
    );
    assert_eq!(refusals("ip_connection_rate") - before, 1);
    // Another address has its own allowance, and the held connections still work.
    let a = open(session(&server.url(), "r"));
    let b = open(session(&server.url(), "r"));
    still_converge(&a, &b, "after").await?;
    // After the advertised wait, the address may connect again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    held.push(ws_from(ABUSER, server.addr, &url).await?);
    a.close().await;
    b.close().await;
    drop(held);
    server.stop().await;
    Ok(())
}

fn tokens_config(dir: &std::path::Path) -> ServerConfig {
    let mut cfg = config(dir);
    cfg.access = Access::Tokens(key());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_and_concurrency_per_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let k = key();
    let mut cfg = tokens_config(dir.path());
    cfg.limits.token_connection_rate = Some(Rate::new(1, 2));
    cfg.limits.max_connections_per_token = 3;
    let server = TestServer::start(cfg).await;
    let abuser = token(&k, "r", "Mallory");
    let url = format!("{}/r?token={abuser}", server.url());
    let (rate0, conc0) = (
        refusals("token_connection_rate"),
        refusals("token_connections"),
    );
    let mut held = vec![
        ws_from("127.0.0.1", server.addr, &url).await?,
        ws_from(ABUSER, server.addr, &url).await?,
    ];
    // The same token from another address is the same token.
    let (status, retry_after, body) = refusal("127.0.0.3", server.addr, &url).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    assert!(body.contains("per token"), "{body}");
    assert_eq!(refusals("token_connection_rate") - rate0, 1);

    // Another token is not limited by this one's use.
    let mut ca = session(&server.url(), "r");
    ca.token = Some(token(&k, "r", "Ada"));
    let mut cb = session(&server.url(), "r");
    cb.token = Some(token(&k, "r", "Bob"));
    let (a, b) = (open(ca), open(cb));
    still_converge(&a, &b, "rate").await?;

    // Concurrency: a third connection fits, a fourth does not; closing one frees its slot.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    held.push(ws_from(ABUSER, server.addr, &url).await?);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, retry_after, body) = refusal(ABUSER, server.addr, &url).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    assert!(
        body.contains("at most 3 open connections per token"),
        "{body}"
    );
    assert_eq!(refusals("token_connections") - conc0, 1);
    let mut gone = held.pop().ok_or("a held connection")?;
    gone.close(None).await?;
    while gone.next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = Instant::now() + T;
    loop {
        match ws_from(ABUSER, server.addr, &url).await {
            Ok(ws) => {
                held.push(ws);
                break;
            }
            // The server notices the close a moment later.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1100)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    still_converge(&a, &b, "concurrency").await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rate_per_token_cuts_off_the_flooder_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let k = key();
    let mut cfg = tokens_config(dir.path());
    cfg.limits.token_message_rate = Some(Rate::new(1, 50));
    let server = TestServer::start(cfg).await;
    let mut ca = session(&server.url(), "shared");
    ca.token = Some(token(&k, "shared", "Ada"));
    let mut cb = session(&server.url(), "shared");
    cb.token = Some(token(&k, "shared", "Bob"));
    let (a, b) = (open(ca), open(cb));
    still_converge(&a, &b, "before").await?;

    let before = refusals("token_message_rate");
    let url = format!(
        "{}/shared?token={}",
        server.url(),
        token(&k, "shared", "Mallory")
    );
    let mut ws = ws_from("127.0.0.1", server.addr, &url).await?;
    let (code, reason) = flood(&mut ws, awareness_frame(10)?, 51).await?;
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(reason, "message rate limit: over 1 a second per token");
    assert_eq!(refusals("token_message_rate") - before, 1);
    still_converge(&a, &b, "after").await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_rate_per_token_cuts_off_the_flooder_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let k = key();
    let mut cfg = tokens_config(dir.path());
    cfg.limits.token_byte_rate = Some(Rate::new(1000, 40_000));
    let server = TestServer::start(cfg).await;
    let mut ca = session(&server.url(), "shared");
    ca.token = Some(token(&k, "shared", "Ada"));
    let mut cb = session(&server.url(), "shared");
    cb.token = Some(token(&k, "shared", "Bob"));
    let (a, b) = (open(ca), open(cb));

    let before = refusals("token_byte_rate");
    let url = format!(
        "{}/shared?token={}",
        server.url(),
        token(&k, "shared", "Mallory")
    );
    let mut ws = ws_from("127.0.0.1", server.addr, &url).await?;
    // 9 KB messages: the fifth is over the 40 KB burst.
    let (code, reason) = flood(&mut ws, awareness_frame(9_000)?, 5).await?;
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(reason, "byte rate limit: over 1000 a second per token");
    assert_eq!(refusals("token_byte_rate") - before, 1);
    still_converge(&a, &b, "after").await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_and_byte_rates_per_address_spare_other_addresses() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.ip_message_rate = Some(Rate::new(5, 60));
    cfg.limits.ip_byte_rate = Some(Rate::new(1000, 100_000));
    let server = TestServer::start(cfg).await;
    let (a, b) = (
        open(session(&server.url(), "r")),
        open(session(&server.url(), "r")),
    );
    let url = format!("{}/r", server.url());
    let (m0, b0) = (refusals("ip_message_rate"), refusals("ip_byte_rate"));

    let mut ws = ws_from(ABUSER, server.addr, &url).await?;
    let (code, reason) = flood(&mut ws, awareness_frame(10)?, 61).await?;
    assert_eq!(
        (code, reason.as_str()),
        (
            1008,
            "message rate limit: over 5 a second per client address"
        )
    );
    assert_eq!(refusals("ip_message_rate") - m0, 1);
    still_converge(&a, &b, "messages").await?;

    // 30 KB messages from a fresh address: the fourth is over the 100 KB burst.
    let mut ws = ws_from("127.0.0.4", server.addr, &url).await?;
    let (code, reason) = flood(&mut ws, awareness_frame(30_000)?, 4).await?;
    assert_eq!(
        (code, reason.as_str()),
        (
            1008,
            "byte rate limit: over 1000 a second per client address"
        )
    );
    assert_eq!(refusals("ip_byte_rate") - b0, 1);
    still_converge(&a, &b, "bytes").await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_size_limit_close_with_1009() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_frame_bytes = 4096;
    let server = TestServer::start(cfg).await;
    let (a, b) = (
        open(session(&server.url(), "r")),
        open(session(&server.url(), "r")),
    );
    let before = refusals("frame_size");
    let mut ws = ws_from(ABUSER, server.addr, &format!("{}/r", server.url())).await?;
    ws.send(WsMessage::binary(vec![0u8; 5000])).await?;
    // The server refuses the frame from its header and never reads its payload, so the socket
    // may be reset before the close frame is read: the reason is checked when it arrives.
    match closed(&mut ws).await {
        Ok((code, reason)) => assert_eq!(
            (code, reason.as_str()),
            (1009, "frame larger than the limit of 4096 bytes")
        ),
        Err(e) => assert!(e.to_string().contains("reset"), "{e}"),
    }
    assert_eq!(refusals("frame_size") - before, 1);
    still_converge(&a, &b, "after").await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

/// Sends raw HTTP and reads the whole answer (the server closes after it).
async fn http(server: SocketAddr, request: &[u8]) -> Result<String, std::io::Error> {
    let mut tcp = tcp_from(ABUSER, server).await?;
    tcp.write_all(request).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_size_limit_get_413() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_body_bytes = 1000;
    let server = TestServer::start(cfg).await;
    let before = refusals("body_size");
    let answer = http(
        server.addr,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.ends_with("request body of 5000 bytes is over the limit of 1000 bytes"),
        "{answer}"
    );
    assert_eq!(refusals("body_size") - before, 1);
    // Within the limit the request reaches its route (GET-only here: 405, not 413).
    let mut ok =
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
            .to_vec();
    ok.extend_from_slice(&[b'x'; 10]);
    let answer = http(server.addr, &ok).await?;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(refusals("body_size") - before, 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_handshake_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.handshake_timeout = Duration::from_millis(400);
    let server = TestServer::start(cfg).await;
    let (a, b) = (
        open(session(&server.url(), "r")),
        open(session(&server.url(), "r")),
    );
    let before = refusals("handshake_timeout");

    // Half a request head, then silence (a slowloris): dropped at the deadline, no answer.
    let started = Instant::now();
    let mut slow = tcp_from(ABUSER, server.addr).await?;
    slow.write_all(b"GET /rooms/r HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(T, slow.read_to_end(&mut out)).await?;
    let elapsed = started.elapsed();
    assert!(read.is_err() || out.is_empty(), "got an answer: {out:?}");
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );
    assert_eq!(refusals("handshake_timeout") - before, 1);

    // Complete requests on a kept-alive connection are answered while each head comes in time.
    let mut tcp = tcp_from(ABUSER, server.addr).await?;
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        tcp.write_all(get).await?;
        let n = tokio::time::timeout(T, tcp.read(&mut buf)).await??;
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refusals("handshake_timeout") - before, 1);
    // Every later head is timed too: a kept-alive connection left idle past the deadline is
    // closed (an idle flood cannot hold descriptors), and so is one dribbling its second head.
    let n = tokio::time::timeout(T, tcp.read(&mut buf))
        .await?
        .unwrap_or(0);
    assert_eq!(n, 0, "an idle kept-alive connection got {:?}", &buf[..n]);
    let mut dribble = tcp_from(ABUSER, server.addr).await?;
    dribble.write_all(get).await?;
    let n = tokio::time::timeout(T, dribble.read(&mut buf)).await??;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    dribble.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(T, dribble.read_to_end(&mut out)).await?;
    assert!(read.is_err() || out.is_empty(), "got an answer: {out:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refusals("handshake_timeout") - before, 3);
    // The room's clients, whose handshakes finished long ago, were never touched.
    still_converge(&a, &b, "after").await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_full_rooms_are_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.idle_timeout = Duration::from_millis(500);
    cfg.limits.max_connections_per_room = 2;
    let server = TestServer::start(cfg).await;
    let (idle0, full0) = (refusals("idle_timeout"), refusals("room_connections"));
    let url = format!("{}/r", server.url());
    // A raw client that never reads (so never answers a ping) goes idle.
    // Each joins before the next connects (the first frame, sync step 1, follows the join).
    let joined = |mut ws: Ws| async move {
        let first = tokio::time::timeout(T, ws.next())
            .await?
            .ok_or("closed")??;
        assert!(first.is_binary(), "{first:?}");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ws)
    };
    let mut quiet = joined(ws_from(ABUSER, server.addr, &url).await?).await?;
    let _second = joined(ws_from("127.0.0.1", server.addr, &url).await?).await?;
    let mut third = ws_from("127.0.0.1", server.addr, &url).await?;
    let (code, reason) = closed(&mut third).await?;
    assert_eq!(
        (code, reason.as_str()),
        (1013, "room is full (2 connections)")
    );
    assert_eq!(refusals("room_connections") - full0, 1);
    let deadline = Instant::now() + T;
    while refusals("idle_timeout") - idle0 < 1 {
        assert!(
            Instant::now() < deadline,
            "the quiet client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, reason) = closed(&mut quiet).await.unwrap_or((0, String::new()));
    assert!(
        (code, reason.as_str()) == (1000, "idle for 500 ms (the idle timeout)") || code == 0,
        "{code} {reason}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binary_takes_its_limits_from_a_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("limits.json");
    std::fs::write(
        &file,
        r#"{"max_rooms_per_peer": 1, "idle_timeout": "45s", "token_byte_rate": null}"#,
    )?;
    let data = dir.path().join("d");
    let path = file.to_str().ok_or("path")?;
    let (_server, url) = common::spawn_server_with(&data, &["--limits", path]).await?;
    let _first = tokio_tungstenite::connect_async(format!("{url}/one")).await?;
    match tokio_tungstenite::connect_async(format!("{url}/two")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 429),
        other => return Err(format!("expected 429, got {:?}", other.map(|_| ())).into()),
    }

    // A misspelt field stops the start, named with its line.
    std::fs::write(
        &file,
        "{\n  \"max_rooms_per_peer\": 1,\n  \"idle_timout\": \"45s\"\n}\n",
    )?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spike-server"))
        .args(["--listen", "127.0.0.1:0", "--limits", path, "--data"])
        .arg(&data)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the limits file"), "{stderr}");
    assert!(stderr.contains("unknown field `idle_timout`"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    Ok(())
}
