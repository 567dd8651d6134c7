//! Room server behaviour over real loopback WebSockets with Spike client sessions.

mod common;

use std::time::Duration;

use common::{config, open, session, TestResult, TestServer, T};
use futures_util::{SinkExt, StreamExt};
use spike_collab::{Presence, SessionState, TextEdit, User};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_converge_and_see_presence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let mut ca = session(&server.url(), "pair");
    ca.presence = Some(Presence {
        user: User {
            name: "Ada".into(),
            color: "#ff0000".into(),
        },
        cursors: Default::default(),
    });
    let a = open(ca);
    let b = open(session(&server.url(), "pair"));
    a.wait_confirmed(T).await?;
    b.wait_confirmed(T).await?;
    a.create_file("App.tsx", "hello 😀 world")?;
    b.wait_doc(T, "App.tsx at b", |d| d.read("App.tsx").is_some())
        .await?;
    // Ada selects "ell" (UTF-16 offsets 1..4); the selection travels as relative positions.
    let mut peers_changed = b.subscribe_peers();
    let selection = a
        .with_doc(|d| d.selection("App.tsx", 1, 4))
        .ok_or("no App.tsx at a")?;
    a.set_presence(&Presence {
        user: User {
            name: "Ada".into(),
            color: "#ff0000".into(),
        },
        cursors: [("App.tsx".to_owned(), selection.clone())].into(),
    })?;
    let has_cursor = || {
        b.peers()
            .values()
            .any(|p| p.cursors.contains_key("App.tsx"))
    };
    tokio::time::timeout(T, peers_changed.wait_for(|_| has_cursor())).await??;
    a.edit("App.tsx", &[TextEdit::insert(8, "漢")])?;
    b.edit("App.tsx", &[TextEdit::insert(0, "e\u{301} ")])?;
    a.wait_doc(T, "both edits at a", |d| {
        d.read("App.tsx")
            .is_some_and(|t| t.contains('漢') && t.starts_with('e'))
    })
    .await?;
    b.wait_doc(T, "both edits at b", |d| {
        d.read("App.tsx")
            .is_some_and(|t| t.contains('漢') && t.starts_with('e'))
    })
    .await?;
    assert_eq!(
        a.read("App.tsx").as_deref(),
        Some("e\u{301} hello 😀漢 world")
    );
    assert_eq!(a.files(), b.files());
    let peers = b.peers();
    let ada = peers.values().next().ok_or("no peer")?;
    assert_eq!(ada.user.name, "Ada");
    assert_eq!(ada.cursors["App.tsx"], selection);
    // b inserted three code units before it: the same characters are now at 4..7, in b's
    // replica and in a's.
    assert_eq!(
        b.with_doc(|d| d.resolve_selection("App.tsx", &ada.cursors["App.tsx"])),
        Some((4, 7))
    );
    assert_eq!(
        a.with_doc(|d| d.resolve_selection("App.tsx", &selection)),
        Some((4, 7))
    );
    // A position in another file's text does not resolve there.
    a.create_file("Other.tsx", "0123456789")?;
    assert_eq!(
        a.with_doc(|d| d.resolve_selection("Other.tsx", &selection)),
        None
    );
    a.close().await;
    b.wait_doc(T, "a's presence gone", |_| b.peers().is_empty())
        .await?;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_joiners_seed_the_template_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let with_template = |room: &str| {
        let mut c = session(&server.url(), room);
        c.params.push(("template".into(), "example".into()));
        c
    };
    let sessions: Vec<_> = (0..4).map(|_| open(with_template("seeded"))).collect();
    for s in &sessions {
        s.wait_confirmed(T).await?;
    }
    let expected: std::collections::BTreeMap<String, String> = spike_templates::example::FILES
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    for s in &sessions {
        assert_eq!(s.files(), expected);
        assert_eq!(s.with_doc(|d| d.meta("entry")).as_deref(), Some("main.tsx"));
    }
    // Delete everything; a later joiner asking for the template must not bring it back.
    for path in expected.keys() {
        sessions[0].delete_file(path)?;
    }
    sessions[0].wait_confirmed(T).await?;
    for s in sessions {
        s.close().await;
    }
    let late = open(with_template("seeded"));
    late.wait_confirmed(T).await?;
    assert!(
        late.files().is_empty(),
        "reseeded: {:?}",
        late.files().keys()
    );
    late.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_then_online_edits_reach_everyone_and_persist() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let log = dir.path().join("client-a.sqlite3");
    let mut ca = session(&server.url(), "offline");
    ca.log_path = Some(log.clone());
    let a = open(ca);
    let b = open(session(&server.url(), "offline"));
    a.wait_confirmed(T).await?;
    a.create_file("notes.md", "")?;
    a.wait_confirmed(T).await?;

    a.set_online(false);
    a.wait_status(T, "offline", |s| s.state == SessionState::Offline)
        .await?;
    for i in 0..20 {
        a.edit("notes.md", &[TextEdit::insert(0, format!("off{i} "))])?;
    }
    assert!(a.status().unconfirmed);
    // The offline replica survives a restart of the app: reopen from the log, no network.
    drop(a);
    let mut ca = session(&server.url(), "offline");
    ca.log_path = Some(log.clone());
    ca.online = false;
    let a = open(ca);
    assert!(a.read("notes.md").is_some_and(|t| t.starts_with("off19 ")));
    assert!(a.status().unconfirmed);
    b.edit("notes.md", &[TextEdit::insert(0, "b-while-a-away ")])
        .or_else(|_| b.create_file("other.md", "b"))?;

    a.set_online(true);
    a.wait_confirmed(T).await?;
    for i in 0..5 {
        a.edit("notes.md", &[TextEdit::insert(0, format!("on{i} "))])?;
    }
    a.wait_confirmed(T).await?;
    let has_all = |t: &str| {
        (0..20).all(|i| t.contains(&format!("off{i} ")))
            && (0..5).all(|i| t.contains(&format!("on{i} ")))
    };
    b.wait_doc(T, "both batches at b", |d| {
        d.read("notes.md").is_some_and(|t| has_all(&t))
    })
    .await?;
    a.close().await;
    b.close().await;
    server.stop().await;

    // Both batches are on the server's disk: a fresh client after a restart gets them.
    let server = TestServer::start(config(dir.path())).await;
    let c = open(session(&server.url(), "offline"));
    c.wait_confirmed(T).await?;
    assert!(c.read("notes.md").is_some_and(|t| has_all(&t)));
    c.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_then_immediate_connect_gets_the_full_document() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let addr = server.addr;
    let a = open(session(&server.url(), "restart"));
    for i in 0..50 {
        let path = format!("f{}.ts", i % 5);
        if a.read(&path).is_none() {
            a.create_file(&path, "")?;
        }
        a.edit(&path, &[TextEdit::insert(0, format!("{i};"))])?;
    }
    a.wait_confirmed(T).await?;
    let expected = a.files();
    a.close().await;
    server.stop().await;

    let server = TestServer::start_at(addr, config(dir.path())).await;
    // Connect at once: the room must load before it answers the handshake.
    let b = open(session(&server.url(), "restart"));
    b.wait_status(T, "first sync", |s| s.state == SessionState::Synced)
        .await?;
    assert_eq!(b.files(), expected);
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_unloads_after_the_grace_period_and_reloads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let a = open(session(&server.url(), "grace"));
    a.create_file("x.ts", "kept")?;
    a.wait_confirmed(T).await?;
    assert_eq!(server.server.open_rooms(), 1);
    a.close().await;
    let deadline = tokio::time::Instant::now() + T;
    while server.server.open_rooms() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "room never unloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = open(session(&server.url(), "grace"));
    b.wait_confirmed(T).await?;
    assert_eq!(b.read("x.ts").as_deref(), Some("kept"));
    b.close().await;
    server.stop().await;
    Ok(())
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> Result<RawWs, Box<dyn std::error::Error + Send + Sync>> {
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut RawWs) -> Option<u16> {
    let wait = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(WsMessage::Close(Some(frame))) => return Some(u16::from(frame.code)),
                Ok(WsMessage::Close(None)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    };
    tokio::time::timeout(T, wait).await.ok().flatten()
}

/// A sync update message around raw update bytes.
fn update_frame(update: &[u8]) -> Vec<u8> {
    spike_collab::protocol::update(update.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_rejected_and_the_room_carries_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_bad_messages = 5;
    cfg.limits.max_frame_bytes = 64 * 1024;
    let server = TestServer::start(cfg).await;
    let a = open(session(&server.url(), "hostile"));
    let b = open(session(&server.url(), "hostile"));
    a.create_file("App.tsx", "safe")?;
    a.wait_confirmed(T).await?;
    b.wait_doc(T, "file at b", |d| d.read("App.tsx").is_some())
        .await?;

    let url = format!("{}/hostile", server.url());
    let mut evil = raw(&url).await?;
    // An update that skips part of its own client's history (the create it follows is
    // missing): refused before yrs sees it; its author would resend it from the state vector.
    let orphan = {
        let src = spike_collab::RoomDoc::with_client_id(777);
        let first = src
            .create_file("ghost.ts", "a")
            .map_err(|e| e.to_string())?;
        let second = src
            .edit("ghost.ts", &[TextEdit::insert(1, "b")])
            .map_err(|e| e.to_string())?;
        drop(first);
        second.ok_or("no update")?
    };
    let frames: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0xfd],       // garbage
        vec![0, 2, 0x80, 0x80, 0x80], // truncated varint
        vec![0, 1],                   // truncated sync step 2
        vec![0, 0, 5, 1, 2],          // sync step 1 cut short
        // A string item of zero length: the decoder drops it; nothing is applied or stored.
        update_frame(&[1, 1, 42, 0, 0x04, 1, 5, b'f', b'i', b'l', b'e', b's', 0, 0]),
        update_frame(&orphan), // a gap in its client's history: refused, not applied
    ];
    for f in frames {
        evil.send(WsMessage::binary(f)).await?;
    }
    evil.send(WsMessage::text("hello")).await?;
    assert_eq!(close_code(&mut evil).await, Some(1007));

    // The room and its clients carry on.
    a.edit("App.tsx", &[TextEdit::insert(4, " and sound")])?;
    b.wait_doc(T, "edit after the attack", |d| {
        d.read("App.tsx").as_deref() == Some("safe and sound")
    })
    .await?;
    assert!(b.read("ghost.ts").is_none());

    // An oversized frame closes that connection with 1009 (message too big).
    let mut big = raw(&url).await?;
    big.send(WsMessage::binary(vec![0u8; 65 * 1024])).await?;
    let code = close_code(&mut big).await;
    assert!(matches!(code, Some(1009) | None), "got {code:?}");
    a.edit("App.tsx", &[TextEdit::insert(0, "still ")])?;
    b.wait_doc(T, "edit after the big frame", |d| {
        d.read("App.tsx").as_deref() == Some("still safe and sound")
    })
    .await?;
    a.close().await;
    b.close().await;
    server.stop().await;

    // Nothing was lost: the log reloads with the text.
    let server = TestServer::start(config(dir.path())).await;
    let c = open(session(&server.url(), "hostile"));
    c.wait_confirmed(T).await?;
    assert_eq!(c.read("App.tsx").as_deref(), Some("still safe and sound"));
    c.close().await;
    server.stop().await;
    Ok(())
}

/// An awareness message around a raw awareness update payload.
fn awareness_frame(payload: &[u8]) -> Vec<u8> {
    use spike_collab::yrs::encoding::write::Write;
    let mut frame = vec![1];
    frame.write_buf(payload);
    frame
}

/// QA's frame: an awareness update for client 77, clock 1, whose state is `{not json`.
fn not_json_awareness_frame() -> Vec<u8> {
    let mut frame = vec![1, 13, 1, 77, 1, 9];
    frame.extend_from_slice(b"{not json");
    frame
}

/// Reads frames (answering nothing) until one carries an awareness state for `client`; every
/// frame must decode (the client's own strict decoder refuses states that are not JSON) and none
/// may mention client 77 or the bad state.
async fn read_until_awareness_of(ws: &mut RawWs, client: u64) -> TestResult {
    use spike_collab::yrs::sync::Message;
    let wait = async {
        while let Some(msg) = ws.next().await {
            let WsMessage::Binary(frame) = msg? else {
                continue;
            };
            assert!(
                !frame.windows(8).any(|w| w == b"not json"),
                "the invalid state was forwarded: {frame:?}"
            );
            for m in spike_collab::protocol::decode_frame(&frame)? {
                if let Message::Awareness(u) = m {
                    let ids: Vec<u64> = u.clients.keys().map(|id| id.get()).collect();
                    assert!(!ids.contains(&77), "client 77's awareness was forwarded");
                    if ids.contains(&client) {
                        return Ok(());
                    }
                }
            }
        }
        Err("the socket closed first".into())
    };
    tokio::time::timeout(T, wait).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_awareness_is_rejected_never_relayed_and_joiners_still_sync() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_bad_messages = 3;
    let server = TestServer::start(cfg).await;
    let a = open(session(&server.url(), "aware"));
    a.create_file("App.tsx", "safe")?;
    a.wait_confirmed(T).await?;

    let url = format!("{}/aware", server.url());
    // A raw peer already in the room (it would get any relay) and the sender; each has joined
    // once the server's sync step 1 arrives.
    let mut watcher = raw(&url).await?;
    let mut evil = raw(&url).await?;
    for ws in [&mut watcher, &mut evil] {
        tokio::time::timeout(T, ws.next())
            .await?
            .ok_or("no sync step 1")??;
    }
    evil.send(WsMessage::binary(not_json_awareness_frame()))
        .await?;
    // Truncated: two entries announced, one present (the second's state is not JSON either).
    let mut cut = vec![2, 77, 2, 2, b'{', b'}'];
    cut.extend_from_slice(&[78, 1, 9]);
    cut.extend_from_slice(b"{not js");
    evil.send(WsMessage::binary(awareness_frame(&cut))).await?;
    // The sender is kept (two strikes of three) and its valid awareness still goes through:
    // relayed after the rejected ones, so it marks that they were never forwarded.
    let presence = r##"{"user":{"name":"Mallory","color":"#00ff00"},"cursors":{}}"##;
    let mut good = vec![1, 78, 1, presence.len() as u8];
    good.extend_from_slice(presence.as_bytes());
    evil.send(WsMessage::binary(awareness_frame(&good))).await?;
    read_until_awareness_of(&mut watcher, 78).await?;

    // While the sender stays connected, a client joining gets the stored awareness (only the
    // valid state) and syncs.
    let mut late = raw(&url).await?;
    read_until_awareness_of(&mut late, 78).await?;
    let b = open(session(&server.url(), "aware"));
    b.wait_confirmed(T).await?;
    assert_eq!(b.read("App.tsx").as_deref(), Some("safe"));
    b.wait_doc(T, "the valid presence at b", |_| {
        b.peers().values().any(|p| p.user.name == "Mallory")
    })
    .await?;
    assert!(!b.peers().contains_key(&77));

    // The room carries on.
    a.edit("App.tsx", &[TextEdit::insert(4, " and sound")])?;
    b.wait_doc(T, "edit after the attack", |d| {
        d.read("App.tsx").as_deref() == Some("safe and sound")
    })
    .await?;

    // The third bad message reaches the limit: the sender is closed like any malformed sender.
    evil.send(WsMessage::binary(not_json_awareness_frame()))
        .await?;
    assert_eq!(close_code(&mut evil).await, Some(1007));
    a.edit("App.tsx", &[TextEdit::insert(0, "still ")])?;
    b.wait_doc(T, "edit after the close", |d| {
        d.read("App.tsx").as_deref() == Some("still safe and sound")
    })
    .await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_rooms_per_peer_and_idle_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_rooms_per_peer = 2;
    cfg.limits.idle_timeout = Duration::from_millis(600);
    let server = TestServer::start(cfg).await;
    let mut r1 = raw(&format!("{}/one", server.url())).await?;
    let mut r2 = raw(&format!("{}/two", server.url())).await?;
    let third = tokio_tungstenite::connect_async(format!("{}/three", server.url())).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
        }
        other => panic!("expected HTTP 429, got {:?}", other.map(|_| ())),
    }
    // r1 reads (so it answers pings) and stays; r2 never reads, never answers a ping, and is
    // closed as idle, after which its room unloads.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = r1.next().await {} });
    let deadline = tokio::time::Instant::now() + T;
    // Both rooms load first (joins run after the upgrades answered), else "one room open"
    // could be seen before the second loaded, and reading r2 below would answer its pings.
    while server.server.open_rooms() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rooms never loaded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while server.server.open_rooms() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle room never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reading now answers the queued pings on a socket the server has closed, so the close
    // frame may arrive or the read may see the reset first.
    let code = close_code(&mut r2).await;
    assert!(matches!(code, Some(1000) | None), "got {code:?}");
    assert!(!reader.is_finished(), "the live connection was closed too");
    reader.abort();
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_clients_and_they_reconnect() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let addr = server.addr;
    let a = open(session(&server.url(), "bounce"));
    a.create_file("a.ts", "1")?;
    a.wait_confirmed(T).await?;
    let syncs = a.status().syncs;
    server.stop().await;
    a.wait_status(T, "offline", |s| s.state != SessionState::Synced)
        .await?;
    a.edit("a.ts", &[TextEdit::insert(1, "2")])?;
    let server = TestServer::start_at(addr, config(dir.path())).await;
    a.wait_status(T, "resynced", |s| s.syncs > syncs && !s.unconfirmed)
        .await?;
    let b = open(session(&server.url(), "bounce"));
    b.wait_doc(T, "a's offline edit at b", |d| {
        d.read("a.ts").as_deref() == Some("12")
    })
    .await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_to_read_is_closed_once_it_reads_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_queued_frames = 8;
    let server = TestServer::start(cfg).await;
    // `slow` joins and then reads nothing, so the socket backs up and its queue fills; a small
    // receive buffer makes that happen after a few megabytes.
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.set_recv_buffer_size(4096)?;
    let tcp = tcp.connect(server.addr).await?;
    let (mut slow, _) = tokio_tungstenite::client_async(
        format!("{}/slow", server.url()),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await?;
    let writer = open(session(&server.url(), "slow"));
    writer.wait_confirmed(T).await?;
    writer.create_file("big.txt", "")?;
    let megabyte = "x".repeat(1 << 20);
    // 24 MB: well past what the server's socket buffers (a few MB on loopback) and the 8-frame
    // queue hold together.
    for _ in 0..24 {
        writer.edit("big.txt", &[TextEdit::insert(0, &megabyte)])?;
        writer.wait_confirmed(T).await?;
    }
    // The room dropped `slow` when its queue was full, so its close frame could not be queued:
    // once it reads again it gets what was queued and then a close, not silence.
    let code = close_code(&mut slow).await;
    assert_eq!(code, Some(1013));
    writer.close().await;
    server.stop().await;
    Ok(())
}
