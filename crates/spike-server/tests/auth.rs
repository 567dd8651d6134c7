//! Access control over real loopback sockets: token refusals, `view` connections that cannot
//! write (sent by a raw WebSocket, not only a Session), and open mode's loopback-only rule.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{config, open, session, TestResult, TestServer, T};
use futures_util::{SinkExt, StreamExt};
use spike_collab::yrs::sync::{Awareness, Message, SyncMessage};
use spike_collab::{protocol, RoomDoc, TextEdit};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::{Access, ServerConfig, ServerError};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn key(fill: u8) -> TokenKey {
    TokenKey::new(&Secret::new(vec![fill; 32]).expect("secret"))
}

fn token(key: &TokenKey, room: &str, role: Role) -> String {
    key.issue(&Claims::new(room, role, Duration::from_secs(3600)))
        .expect("token")
}

fn tokens_config(dir: &std::path::Path, key: &TokenKey) -> ServerConfig {
    let mut c = config(dir);
    c.access = Access::Tokens(key.clone());
    c
}

/// `spike_auth_refusals_total{reason}` as `/metrics` renders it. Counters are process-wide and
/// `cargo test` runs these tests in parallel in one process, so assertions compare deltas.
fn refused(reason: &str) -> u64 {
    common::metric(&format!("spike_auth_refusals_total{{reason=\"{reason}\"}}")) as u64
}

/// Connects and expects an HTTP refusal; returns its status and body.
async fn refusal(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

async fn raw(url: &str) -> Result<RawWs, Box<dyn std::error::Error + Send + Sync>> {
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

/// Reads frames until `want` returns something for a message, applying sync updates to `doc`.
async fn read_until<R>(
    ws: &mut RawWs,
    doc: &RoomDoc,
    mut want: impl FnMut(&Message, &RoomDoc) -> Option<R>,
) -> Result<R, Box<dyn std::error::Error + Send + Sync>> {
    let wait = async {
        while let Some(msg) = ws.next().await {
            let WsMessage::Binary(frame) = msg? else {
                continue;
            };
            for m in protocol::decode_frame(&frame)? {
                if let Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) = &m {
                    doc.apply_update(u)?;
                }
                if let Some(r) = want(&m, doc) {
                    return Ok(r);
                }
            }
        }
        Err("socket closed".into())
    };
    tokio::time::timeout(T, wait).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_the_reason_and_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let k = key(7);
    let server = TestServer::start(tokens_config(dir.path(), &k)).await;
    let url = |room: &str, token: &str| format!("{}/{room}?token={token}", server.url());
    let before: Vec<u64> = ["missing", "malformed", "forged", "expired", "wrong_room"]
        .iter()
        .map(|r| refused(r))
        .collect();

    let (status, body) = refusal(&format!("{}/r1", server.url())).await;
    assert_eq!(status, 401);
    assert!(body.contains("requires an access token"), "{body}");

    let (status, body) = refusal(&url("r1", "not-a-token")).await;
    assert_eq!(status, 401);
    assert!(body.contains("malformed"), "{body}");

    // Another room.
    let other = token(&k, "r2", Role::Edit);
    let (status, body) = refusal(&url("r1", &other)).await;
    assert_eq!(status, 403);
    assert!(body.contains(r#"for room "r2", not "r1""#), "{body}");
    // A prefix covers only the rooms that start with it.
    let team = token(&k, "team-*", Role::Edit);
    let (status, _) = refusal(&url("r1", &team)).await;
    assert_eq!(status, 403);

    // Expired a minute ago.
    let mut old = Claims::new("r1", Role::Edit, Duration::ZERO);
    old.exp -= 60;
    let (status, body) = refusal(&url("r1", &k.issue(&old)?)).await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");

    // Signed with another secret.
    let foreign = token(&key(8), "r1", Role::Edit);
    let (status, body) = refusal(&url("r1", &foreign)).await;
    assert_eq!(status, 401);
    assert!(body.contains("signature is invalid"), "{body}");

    // A genuine view token whose payload was changed to say `edit`.
    let view = token(&k, "r1", Role::View);
    let parts: Vec<&str> = view.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1])?)?;
    assert!(payload.contains(r#""role":"view""#), "{payload}");
    let altered = b64.encode(payload.replace(r#""role":"view""#, r#""role":"edit""#));
    let tampered = format!("{}.{altered}.{}", parts[0], parts[2]);
    let (status, body) = refusal(&url("r1", &tampered)).await;
    assert_eq!(status, 401);
    assert!(body.contains("signature is invalid"), "{body}");
    assert!(!body.contains(&tampered) && !body.contains(&view));

    let after: Vec<u64> = ["missing", "malformed", "forged", "expired", "wrong_room"]
        .iter()
        .map(|r| refused(r))
        .collect();
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![1, 1, 2, 1, 2],
        "missing, malformed, forged, expired, wrong_room"
    );

    // The right token works, in the query and as a bearer header; a prefix token too.
    let mut edit = session(&server.url(), "team-a");
    edit.token = Some(team);
    let a = open(edit);
    a.create_file("App.tsx", "hi")?;
    a.wait_confirmed(T).await?;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}/r1", server.url()),
    )?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&k, "r1", Role::Edit)).parse()?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let doc = RoomDoc::new();
    read_until(&mut ws, &doc, |m, _| {
        matches!(m, Message::Sync(SyncMessage::SyncStep1(_))).then_some(())
    })
    .await?;
    a.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_connection_reads_and_shows_presence_but_cannot_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let k = key(9);
    let server = TestServer::start(tokens_config(dir.path(), &k)).await;
    let mut ca = session(&server.url(), "watched");
    ca.token = Some(token(&k, "watched", Role::Edit));
    let a = open(ca);
    a.create_file("App.tsx", "hello")?;
    a.wait_confirmed(T).await?;

    // A raw y-websocket client with a view token.
    let view_url = format!(
        "{}/watched?token={}",
        server.url(),
        token(&k, "watched", Role::View)
    );
    let mut v = raw(&view_url).await?;
    let mirror = RoomDoc::new();
    v.send(WsMessage::binary(protocol::sync_step1(
        &mirror.state_vector(),
    )))
    .await?;
    read_until(&mut v, &mirror, |_, d| {
        (d.read("App.tsx").as_deref() == Some("hello")).then_some(())
    })
    .await?;

    // It writes, as an update and as a sync step 2: both are refused with permission-denied.
    let evil = RoomDoc::with_client_id(4242);
    let update = evil
        .create_file("evil.ts", "pwned")
        .map_err(|e| e.to_string())?
        .ok_or("no update")?;
    for frame in [
        protocol::update(update.clone()),
        protocol::sync_step2(update.clone()),
    ] {
        v.send(WsMessage::binary(frame)).await?;
        let reason = read_until(&mut v, &mirror, |m, _| match m {
            Message::Auth(Some(reason)) => Some(reason.clone()),
            _ => None,
        })
        .await?;
        assert!(reason.contains("read-only"), "{reason}");
    }

    // It may publish presence: the editor sees it.
    let mut aw = Awareness::new(spike_collab::yrs::Doc::new());
    aw.set_local_state(serde_json::json!({
        "user": {"name": "Watcher", "color": "#00aa00"},
        "cursors": {}
    }))?;
    v.send(WsMessage::binary(protocol::awareness(aw.update()?)))
        .await?;
    a.wait_doc(T, "the viewer's presence at a", |_| {
        a.peers().values().any(|p| p.user.name == "Watcher")
    })
    .await?;

    // It still receives the editor's edits.
    a.edit("App.tsx", &[TextEdit::insert(5, " world")])?;
    read_until(&mut v, &mirror, |_, d| {
        (d.read("App.tsx").as_deref() == Some("hello world")).then_some(())
    })
    .await?;
    a.wait_confirmed(T).await?;

    // A Session with a view token syncs, sees edits, and is not denied (its empty sync step 2
    // after connecting is not a write).
    let mut cv = session(&server.url(), "watched");
    cv.token = Some(token(&k, "watched", Role::View));
    let viewer = open(cv);
    viewer
        .wait_doc(T, "the document at the view session", |d| {
            d.read("App.tsx").as_deref() == Some("hello world")
        })
        .await?;
    a.edit("App.tsx", &[TextEdit::insert(0, "// ")])?;
    viewer
        .wait_doc(T, "a's later edit at the view session", |d| {
            d.read("App.tsx").as_deref() == Some("// hello world")
        })
        .await?;
    assert_eq!(viewer.status().denied, None);

    // Nothing the viewer wrote reached the editor, the server's document, or its log.
    a.wait_confirmed(T).await?;
    assert_eq!(a.read("evil.ts"), None);
    viewer.close().await;
    drop(v);
    a.close().await;
    server.stop().await;
    let reloaded = TestServer::start(tokens_config(dir.path(), &k)).await;
    let mut cc = session(&reloaded.url(), "watched");
    cc.token = Some(token(&k, "watched", Role::Edit));
    let c = open(cc);
    c.wait_doc(T, "the reloaded room", |d| d.read("App.tsx").is_some())
        .await?;
    assert_eq!(
        c.files().into_iter().collect::<Vec<_>>(),
        vec![("App.tsx".to_owned(), "// hello world".to_owned())]
    );
    c.close().await;
    reloaded.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_on_loopback_needs_no_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    // The desktop app's configuration: `ServerConfig::new` is open.
    let cfg = ServerConfig::new(dir.path());
    assert!(matches!(cfg.access, Access::Open));
    let server = TestServer::start(cfg).await;
    let a = open(session(&server.url(), "free"));
    a.create_file("App.tsx", "x")?;
    a.wait_confirmed(T).await?;
    // A token is ignored in open mode, whatever it says.
    let mut ws = raw(&format!("{}/free?token=whatever", server.url())).await?;
    let doc = RoomDoc::new();
    ws.send(WsMessage::binary(protocol::update(
        RoomDoc::with_client_id(99)
            .create_file("b.ts", "y")
            .map_err(|e| e.to_string())?
            .ok_or("no update")?,
    )))
    .await?;
    a.wait_doc(T, "the raw client's file at a", |d| {
        d.read("b.ts").is_some()
    })
    .await?;
    drop(doc);
    a.close().await;
    server.stop().await;
    Ok(())
}

#[test]
fn open_mode_refuses_a_network_address() -> TestResult {
    let dir = tempfile::tempdir()?;
    let open = ServerConfig::new(dir.path());
    open.check_listen("127.0.0.1:8787".parse()?)?;
    open.check_listen("[::1]:8787".parse()?)?;
    let err = open
        .check_listen("0.0.0.0:8787".parse()?)
        .expect_err("0.0.0.0 in open mode");
    assert!(matches!(err, ServerError::OpenOnNetwork(_)));
    assert!(err.to_string().contains("open mode"), "{err}");

    let mut tokens = ServerConfig::new(dir.path());
    tokens.access = Access::Tokens(key(1));
    tokens.check_listen("0.0.0.0:8787".parse()?)?;

    // How the faces choose: `--open` off loopback is refused; loopback without a secret is
    // open; a network address without a secret gets one generated (0600) and reused.
    let public = "0.0.0.0:8787".parse()?;
    let local = "127.0.0.1:8787".parse()?;
    assert!(matches!(
        Access::choose(public, dir.path(), None, None, true),
        Err(ServerError::OpenOnNetwork(_))
    ));
    let (access, _) = Access::choose(local, dir.path(), None, None, false)?;
    assert!(matches!(access, Access::Open));
    let (access, how) = Access::choose(public, dir.path(), None, None, false)?;
    assert!(matches!(access, Access::Tokens(_)));
    assert!(how.contains("generated"), "{how}");
    // Now that a secret exists in the data folder, loopback uses it too.
    let (access, how) = Access::choose(local, dir.path(), None, None, false)?;
    assert!(matches!(access, Access::Tokens(_)) && !how.contains("generated"));
    let (_, how) = Access::choose(public, dir.path(), None, Some(&"s".repeat(40)), false)?;
    assert!(how.contains("SPIKE_SECRET"), "{how}");
    assert!(matches!(
        Access::choose(public, dir.path(), None, Some("short"), false),
        Err(ServerError::Secret(_))
    ));
    Ok(())
}

#[test]
fn the_server_binary_refuses_open_mode_on_a_network_address() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spike-server"))
        .args(["--listen", "0.0.0.0:0", "--open", "--data"])
        .arg(dir.path())
        .env_remove("SPIKE_SECRET")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 in open mode"),
        "{stderr}"
    );
    assert!(stderr.contains("--secret-file"), "{stderr}");
    Ok(())
}

/// The refusal is logged with its reason, and the token never reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_without_the_token() -> TestResult {
    use std::io::{BufRead as _, BufReader, Read as _};
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("key");
    std::fs::write(&secret, "q".repeat(40))?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spike-server"))
        .args(["--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&secret)
        .arg("--data")
        .arg(dir.path().join("d"))
        .env_remove("SPIKE_SECRET")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .ok_or("no address")?
        .to_owned();
    let forged = token(&key(3), "r", Role::Edit);
    let (status, _) = refusal(&format!("{base}/r?token={forged}")).await;
    assert_eq!(status, 401);
    let good = TokenKey::new(&Secret::from_file(&secret)?);
    let mut ws = raw(&format!("{base}/r?token={}", token(&good, "r", Role::Edit))).await?;
    read_until(&mut ws, &RoomDoc::new(), |m, _| {
        matches!(m, Message::Sync(SyncMessage::SyncStep1(_))).then_some(())
    })
    .await?;
    drop(ws);
    child.kill()?;
    child.wait()?;
    let mut log = String::new();
    child
        .stderr
        .take()
        .ok_or("stderr")?
        .read_to_string(&mut log)?;
    // Without the terminal colour codes the formatter may add.
    let mut plain = String::new();
    let mut in_escape = false;
    for ch in log.chars() {
        match (in_escape, ch) {
            (false, '\u{1b}') => in_escape = true,
            (false, c) => plain.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    let log = plain;
    assert!(log.contains("refused a connection"), "{log}");
    assert!(
        log.contains("reason=\"forged\"") || log.contains("reason=forged"),
        "{log}"
    );
    assert!(log.contains("tokens required"), "{log}");
    // Neither the forged token nor its signature appear anywhere.
    let signature = forged.rsplit('.').next().ok_or("signature")?;
    assert!(!log.contains(signature), "{log}");
    Ok(())
}
