//! Interoperability with the Yjs ecosystem, with real npm clients and servers (installed in
//! `tests/node` by `cargo xtask setup`): stock y-websocket clients in a Spike room, a Spike client
//! against the reference `@y/websocket-server`, and a Yjs history decoded by yrs.

mod common;

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::{node, node_dir, open, session, spawn_server, TestResult, T};
use spike_collab::{RoomDoc, TextEdit};

const PIECES: &[&str] = &["😀", "漢字", "e\u{301}", "👩‍👩‍👧", "ｚ", "!"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_clients_and_a_spike_client_converge_in_a_spike_room() -> TestResult {
    node_dir();
    let dir = tempfile::tempdir()?;
    let (_server, url) = spawn_server(dir.path()).await?;
    let spike = open(session(&url, "interop"));
    spike.create_file("shared.ts", "start 😀 end")?;
    spike.wait_confirmed(T).await?;

    let opts = serde_json::json!({
        "serverUrl": url, "room": "interop", "path": "shared.ts", "edits": 60, "seed": 7,
        "peers": ["node-a", "node-b", "spike"],
    })
    .to_string();
    let clients = tokio::spawn(async move { node("rooms-clients.mjs", &[&opts]).await });

    // The Spike client types concurrently, half the time right after an emoji.
    let mut rng = fastrand::Rng::with_seed(11);
    for i in 0..60 {
        let text = spike.read("shared.ts").unwrap_or_default();
        let units: Vec<u16> = text.encode_utf16().collect();
        let mut at = if rng.bool() {
            text.find('😀')
                .map(|b| text[..b].encode_utf16().count() + 2)
                .unwrap_or(0)
        } else {
            rng.usize(0..=units.len())
        };
        // Step off the middle of a surrogate pair.
        if at < units.len() && (0xDC00..=0xDFFF).contains(&units[at]) {
            at += 1;
        }
        spike.edit(
            "shared.ts",
            &[TextEdit::insert(
                at as u32,
                PIECES[rng.usize(0..PIECES.len())],
            )],
        )?;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    spike.set_meta("done-spike", "1")?;
    let out = clients.await??;
    let report: serde_json::Value = serde_json::from_str(out.trim())?;
    spike
        .wait_doc(T, "both node clients done", |d| {
            d.meta("done-node-a").is_some() && d.meta("done-node-b").is_some()
        })
        .await?;
    let ours = spike.read("shared.ts").ok_or("shared.ts missing")?;
    assert_eq!(report["texts"]["node-a"], ours.as_str());
    assert_eq!(report["texts"]["node-b"], ours.as_str());
    for piece in PIECES {
        assert!(ours.contains(piece), "{piece} missing from {ours}");
    }
    assert!(ours.encode_utf16().count() > 150, "too little text: {ours}");
    spike.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_client_syncs_with_the_reference_server() -> TestResult {
    let dir = node_dir();
    let data = tempfile::tempdir()?;
    let port = common::free_port();
    let _reference = tokio::process::Command::new("node")
        .arg("node_modules/@y/websocket-server/src/server.js")
        .current_dir(&dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("YPERSISTENCE", data.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    common::wait_listening(format!("127.0.0.1:{port}").parse()?).await;
    // The reference server takes the whole path as the room name: serverUrl has no /rooms.
    let url = format!("ws://127.0.0.1:{port}");
    let a = open(session(&url, "reference"));
    a.create_file("App.tsx", "export default () => <p>👋 漢字</p>;\n")?;
    a.create_file("lib/x.ts", "export const x = 1;\n")?;
    a.edit("App.tsx", &[TextEdit::insert(24, "e\u{301}")])?;
    a.set_meta("entry", "App.tsx")?;
    a.wait_confirmed(T).await?;
    let expected = a.with_doc(RoomDoc::to_json);

    let b = open(session(&url, "reference"));
    b.wait_doc(T, "a's files at b", |d| d.to_json() == expected)
        .await?;
    b.edit("lib/x.ts", &[TextEdit::insert(0, "// b\n")])?;
    a.wait_doc(T, "b's edit at a", |d| {
        d.read("lib/x.ts").is_some_and(|t| t.starts_with("// b\n"))
    })
    .await?;
    b.wait_confirmed(T).await?;

    let out = node("rooms-read.mjs", &[&url, "reference", "2"]).await?;
    let yjs: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(yjs, a.with_doc(RoomDoc::to_json));
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_client_syncs_while_a_peer_that_sent_invalid_awareness_stays() -> TestResult {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    node_dir();
    let dir = tempfile::tempdir()?;
    let (_server, url) = spawn_server(dir.path()).await?;
    let spike = open(session(&url, "awareness"));
    spike.create_file("App.tsx", "safe")?;
    spike.wait_confirmed(T).await?;
    let expected = spike.with_doc(RoomDoc::to_json);

    // QA's frame: awareness for client 77 whose state `{not json` makes `JSON.parse` throw in
    // every stock peer. The sender stays connected (one strike is under the limit).
    let (mut evil, _) = tokio_tungstenite::connect_async(format!("{url}/awareness")).await?;
    tokio::time::timeout(T, evil.next())
        .await?
        .ok_or("no sync step 1")??;
    let mut frame = vec![1, 13, 1, 77, 1, 9];
    frame.extend_from_slice(b"{not json");
    evil.send(WsMessage::binary(frame)).await?;
    // A frame the room handles after the bad one: once the reply arrives, it was processed.
    evil.send(WsMessage::binary(spike_collab::protocol::query_awareness()))
        .await?;
    tokio::time::timeout(T, evil.next())
        .await?
        .ok_or("no awareness reply")??;

    let out = node("rooms-read.mjs", &[&url, "awareness", "1"]).await?;
    let yjs: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(yjs, expected);
    spike.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yjs_multi_client_history_decodes_to_the_same_json() -> TestResult {
    for seed in 1..=5 {
        let out = node("rooms-history.mjs", &[&seed.to_string()]).await?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let update = base64::engine::general_purpose::STANDARD
            .decode(v["update"].as_str().ok_or("no update")?)?;
        let doc = RoomDoc::new();
        doc.apply_update(&update)?;
        assert!(
            !doc.has_pending(),
            "seed {seed}: pending after a whole-state update"
        );
        assert_eq!(doc.to_json(), v["json"], "seed {seed}");
        // Round trip: what yrs encodes, Yjs-compatible bytes, decodes to the same again.
        let again = RoomDoc::new();
        again.apply_update(&doc.encode_state())?;
        assert_eq!(again.to_json(), v["json"], "seed {seed} after re-encoding");
    }
    Ok(())
}
