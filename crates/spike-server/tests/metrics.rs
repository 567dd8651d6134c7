//! `GET /metrics` after a scripted session, with exact counter values.
//!
//! Counters are process-wide (one global `metrics` recorder per process). nextest runs every
//! test in its own process, and this binary holds this one test only, so `cargo test` runs it
//! alone in its process too: the values below are this session's and nothing else's.

mod common;

use std::time::Duration;

use common::{config, TestResult, TestServer, T};
use futures_util::{SinkExt, StreamExt};
use spike_collab::yrs::sync::{Message, SyncMessage};
use spike_collab::{protocol, RoomDoc, TextEdit};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::Access;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads binary frames until `n` document updates arrived; returns the bytes of every frame.
async fn read_updates(
    ws: &mut Ws,
    n: usize,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let (mut seen, mut bytes) = (0, 0u64);
    while seen < n {
        let msg = tokio::time::timeout(T, ws.next())
            .await?
            .ok_or("socket closed")??;
        let WsMessage::Binary(frame) = msg else {
            continue;
        };
        bytes += frame.len() as u64;
        for m in protocol::decode_frame(&frame)? {
            if matches!(m, Message::Sync(SyncMessage::Update(_))) {
                seen += 1;
            }
        }
    }
    Ok(bytes)
}

/// Reads the first frame after joining (the server's sync step 1); returns its size.
async fn read_step1(ws: &mut Ws) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let msg = tokio::time::timeout(T, ws.next())
        .await?
        .ok_or("socket closed")??;
    let WsMessage::Binary(frame) = msg else {
        return Err(format!("expected sync step 1, got {msg:?}").into());
    };
    let messages = protocol::decode_frame(&frame)?;
    assert!(
        matches!(messages[..], [Message::Sync(SyncMessage::SyncStep1(_))]),
        "{messages:?}"
    );
    Ok(frame.len() as u64)
}

/// `GET path` over HTTP/1.1; returns the head and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(String, String), std::io::Error> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.to_owned(), body.to_owned()))
}

/// The value of one series (name and labels exactly as rendered) in a rendering.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_session_have_exact_values() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = TokenKey::new(&Secret::new(vec![3u8; 32])?);
    let mut cfg = config(dir.path());
    cfg.access = Access::Tokens(key.clone());
    // The room stays loaded while the metrics are read.
    cfg.unload_grace = Duration::from_secs(600);
    let server = TestServer::start(cfg).await;
    let url = |token: &str| format!("{}/m?token={token}", server.url());
    let token = |name: &str| {
        let mut c = Claims::new("m", Role::Edit, Duration::from_secs(600));
        c.name = Some(name.into());
        key.issue(&c)
    };

    // Two editors join; each gets the server's sync step 1.
    let (mut a, _) = tokio_tungstenite::connect_async(url(&token("a")?)).await?;
    let mut out_bytes = read_step1(&mut a).await?;
    let (mut b, _) = tokio_tungstenite::connect_async(url(&token("b")?)).await?;
    out_bytes += read_step1(&mut b).await?;

    // One forged token: signed with another secret.
    let forged = TokenKey::new(&Secret::new(vec![4u8; 32])?).issue(&Claims::new(
        "m",
        Role::Edit,
        Duration::from_secs(600),
    ))?;
    match tokio_tungstenite::connect_async(url(&forged)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    // A sends 5 updates of known size; B receives each.
    const N: usize = 5;
    let doc = RoomDoc::with_client_id(101);
    let mut frames = vec![protocol::update(
        doc.create_file("App.tsx", "x")
            .map_err(|e| e.to_string())?
            .ok_or("no update")?,
    )];
    for i in 1..N {
        let update = doc
            .edit("App.tsx", &[TextEdit::insert(i as u32, "y")])
            .map_err(|e| e.to_string())?
            .ok_or("no update")?;
        frames.push(protocol::update(update));
    }
    let in_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    for f in frames {
        a.send(WsMessage::binary(f)).await?;
    }
    out_bytes += read_updates(&mut b, N).await?;

    let (head, text) = get(server.addr, "/metrics").await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let v = |series: &str| value(&text, series);
    assert_eq!(
        v("spike_auth_refusals_total{reason=\"forged\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(v("spike_connections"), Some(2.0), "{text}");
    assert_eq!(v("spike_rooms_open"), Some(1.0), "{text}");
    assert_eq!(v("spike_updates_in_total"), Some(N as f64), "{text}");
    assert_eq!(v("spike_updates_out_total"), Some(N as f64), "{text}");
    assert_eq!(v("spike_bytes_in_total"), Some(in_bytes as f64), "{text}");
    assert_eq!(v("spike_bytes_out_total"), Some(out_bytes as f64), "{text}");
    assert_eq!(v("spike_fanout_seconds_count"), Some(N as f64), "{text}");
    assert_eq!(
        v("spike_fanout_seconds_bucket{le=\"+Inf\"}"),
        Some(N as f64),
        "{text}"
    );
    // Updates that arrive together are committed in one batch.
    let batches = v("spike_persist_seconds_count").ok_or("no persist histogram")?;
    assert!((1.0..=N as f64).contains(&batches), "{text}");
    assert!(
        text.contains("# TYPE spike_fanout_seconds histogram"),
        "{text}"
    );
    // No limit refused anything: every refusal series is published, and at zero.
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("spike_limit_refusals_total{"))
        .collect();
    assert_eq!(refusals.len(), spike_server::LimitKind::ALL.len(), "{text}");
    assert!(refusals.iter().all(|l| l.ends_with(" 0")), "{text}");

    // Leaving lowers the connection gauge.
    a.close(None).await?;
    while a.next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, text) = get(server.addr, "/metrics").await?;
        if value(&text, "spike_connections") == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
    server.stop().await;
    Ok(())
}
