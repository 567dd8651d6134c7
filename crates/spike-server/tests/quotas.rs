//! Per-room and per-token quotas over real loopback sockets: a room's size quota, updates
//! waiting for a missing dependency (capped and expired), rooms a prefix token may create, and
//! room files that stay apart when names differ only in case.

mod common;

use std::time::Duration;

use common::{config, metric, open, session, TestResult, TestServer, T};
use futures_util::{SinkExt as _, StreamExt as _};
use spike_collab::{protocol, RoomDoc, SessionState, TextEdit};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::Access;
use tokio_tungstenite::tungstenite::Message as Ws;

fn refusals(kind: &str) -> u64 {
    metric(&format!("spike_limit_refusals_total{{kind=\"{kind}\"}}")) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_over_its_size_quota_refuses_updates_and_keeps_what_it_has() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_room_bytes = 64 << 10;
    let server = TestServer::start(cfg).await;
    let before = refusals("room_size");
    let a = open(session(&server.url(), "big"));
    let b = open(session(&server.url(), "big"));
    a.create_file("a.txt", &"a".repeat(40 << 10))?;
    a.wait_confirmed(T).await?;
    b.wait_doc(T, "the first file", |d| d.read("a.txt").is_some())
        .await?;
    // 40 KiB stored; another 40 KiB would pass the 64 KiB quota.
    a.create_file("b.txt", &"b".repeat(40 << 10))?;
    let denied = a
        .wait_status(T, "denied", |s| s.denied.is_some())
        .await?
        .denied
        .unwrap_or_default();
    assert!(denied.contains("size quota of 65536 bytes"), "{denied}");
    assert_eq!(refusals("room_size") - before, 1);
    // The room keeps what it had and still serves; the refused file stays with its author.
    let c = open(session(&server.url(), "big"));
    c.wait_status(T, "synced", |s| s.state == SessionState::Synced)
        .await?;
    assert_eq!(c.files().keys().collect::<Vec<_>>(), vec!["a.txt"]);
    assert!(a.read("b.txt").is_some());
    assert_eq!(b.status().syncs, 1);
    for s in [a, b, c] {
        s.close().await;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_waiting_for_a_dependency_are_capped_and_expire() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.limits.max_pending_bytes = 3 << 10;
    cfg.limits.pending_ttl = Duration::from_millis(800);
    let server = TestServer::start(cfg).await;
    let (capped, expired) = (
        refusals("pending_updates"),
        metric("spike_pending_expired_total"),
    );
    let keep = open(session(&server.url(), "pend"));
    keep.wait_status(T, "synced", |s| s.state == SessionState::Synced)
        .await?;

    // A writer editing a file whose creation (by another client) never reaches the room: each
    // of its updates waits for that dependency.
    let creator = RoomDoc::with_client_id(4444);
    let base = creator.create_file("p.txt", "")?.ok_or("no update")?;
    let author = RoomDoc::with_client_id(5555);
    author.apply_update(&base)?;
    let mut dependent = Vec::new();
    for i in 0..4 {
        let u = author
            .edit(
                "p.txt",
                &[TextEdit::insert(0, format!("{i}{}", "x".repeat(1200)))],
            )?
            .ok_or("no update")?;
        dependent.push(u);
    }
    // In order, as the writer sends them: the first starts at its clock 0.
    assert_eq!(
        spike_collab::bounds::check_update_v1(&dependent[0])?.sections[0].1,
        0
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}/pend", server.url())).await?;
    for u in &dependent {
        ws.send(Ws::Binary(protocol::update(u.clone()).into()))
            .await?;
    }
    // Two fit in 3 KiB; the third and fourth are refused.
    let deadline = tokio::time::Instant::now() + T;
    while refusals("pending_updates") - capped < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no pending refusal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After the TTL the two kept are dropped too.
    while metric("spike_pending_expired_total") - expired < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pending updates never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Now the dependency arrives: the room has the file, without the expired edits.
    ws.send(Ws::Binary(protocol::update(base).into())).await?;
    keep.wait_doc(T, "p.txt", |d| d.read("p.txt").is_some())
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(keep.read("p.txt").as_deref(), Some(""));
    // A room that restarts from its log agrees.
    let fresh = open(session(&server.url(), "pend"));
    fresh
        .wait_doc(T, "p.txt", |d| d.read("p.txt").is_some())
        .await?;
    assert_eq!(fresh.read("p.txt").as_deref(), Some(""));
    assert_eq!(keep.status().syncs, 1);
    keep.close().await;
    fresh.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_token_creates_a_bounded_number_of_rooms() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = TokenKey::new(&Secret::new(vec![9u8; 32])?);
    let mut cfg = config(dir.path());
    cfg.access = Access::Tokens(key.clone());
    cfg.limits.max_rooms_per_token = 2;
    let server = TestServer::start(cfg).await;
    let before = refusals("token_rooms");
    let issue = |name: &str| {
        let mut claims = Claims::new("team-*", Role::Edit, Duration::from_secs(600));
        claims.name = Some(name.into());
        key.issue(&claims)
    };
    let (one, two) = (issue("one")?, issue("two")?);
    let url = |room: &str, token: &str| format!("{}/{room}?token={token}", server.url());
    let mut open_ws = Vec::new();
    for room in ["team-a", "team-b"] {
        open_ws.push(tokio_tungstenite::connect_async(url(room, &one)).await?.0);
    }
    match tokio_tungstenite::connect_async(url("team-c", &one)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("limit of 2 rooms"), "{body}");
        }
        other => panic!("team-c was not refused: {:?}", other.map(|_| ())),
    }
    assert_eq!(refusals("token_rooms") - before, 1);
    // Rooms it created, and rooms that exist, stay open to it; another token has its own count.
    open_ws.push(
        tokio_tungstenite::connect_async(url("team-a", &one))
            .await?
            .0,
    );
    let (mut by_two, _) = tokio_tungstenite::connect_async(url("team-c", &two)).await?;
    // The room exists once it has loaded and greeted its first member.
    tokio::time::timeout(T, by_two.next())
        .await?
        .ok_or("no greeting")??;
    open_ws.push(by_two);
    open_ws.push(
        tokio_tungstenite::connect_async(url("team-c", &one))
            .await?
            .0,
    );
    for mut ws in open_ws {
        let _ = ws.close(None).await;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_that_differ_in_case_have_their_own_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(config(dir.path())).await;
    let upper = open(session(&server.url(), "Team"));
    let lower = open(session(&server.url(), "team"));
    upper.create_file("who.txt", "upper")?;
    lower.create_file("who.txt", "lower")?;
    upper.wait_confirmed(T).await?;
    lower.wait_confirmed(T).await?;
    upper.close().await;
    lower.close().await;
    server.stop().await;
    let rooms = dir.path().join("rooms");
    assert!(rooms.join("^team.sqlite3").exists());
    assert!(rooms.join("team.sqlite3").exists());
    // A file an earlier server wrote under the plain name is renamed on first use.
    std::fs::rename(rooms.join("^team.sqlite3"), rooms.join("Team.sqlite3"))?;

    let server = TestServer::start(config(dir.path())).await;
    for (room, text) in [("Team", "upper"), ("team", "lower")] {
        let s = open(session(&server.url(), room));
        s.wait_doc(T, "who.txt", |d| d.read("who.txt").is_some())
            .await?;
        assert_eq!(s.read("who.txt").as_deref(), Some(text), "room {room}");
        s.close().await;
    }
    server.stop().await;
    assert!(rooms.join("^team.sqlite3").exists());
    assert!(!rooms.join("Team.sqlite3").exists());
    Ok(())
}
