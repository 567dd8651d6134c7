//! `Session::replace_text` against a collaborator: two sessions sync through a tiny in-test relay
//! (a y-websocket server holding one `RoomDoc`), and a collaborator's keystroke lands between a
//! format's read and its write. The write is refused with `TextChanged` and applies nothing; the
//! caller re-reads and formats again, and the result keeps the keystroke and is formatted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use spike_collab::yrs::sync::{Message as YMessage, SyncMessage};
use spike_collab::{
    minimal_edits, protocol, CollabError, RoomDoc, Session, SessionConfig, TextEdit,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const T: Duration = Duration::from_secs(20);
const FILE: &str = "App.ts";

/// A relay on loopback: answers every sync step 1 from its document, applies every update and
/// forwards it to the other connections. Returns the rooms URL.
async fn relay() -> Result<String, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/rooms", listener.local_addr()?);
    let doc = Arc::new(Mutex::new(RoomDoc::new()));
    let (tx, _) = broadcast::channel::<(usize, Vec<u8>)>(1024);
    tokio::spawn(async move {
        let mut next_id = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            next_id += 1;
            let id = next_id;
            let (doc, tx) = (doc.clone(), tx.clone());
            tokio::spawn(async move {
                let mut rx = tx.subscribe();
                let (mut sink, mut stream) = ws.split();
                let hello = protocol::sync_step1(&lock(&doc).state_vector());
                if sink.send(Message::binary(hello)).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        incoming = stream.next() => {
                            let Some(Ok(m)) = incoming else { return };
                            if !m.is_binary() {
                                continue;
                            }
                            let Ok(messages) = protocol::decode_frame(&m.into_data()) else {
                                return;
                            };
                            for message in messages {
                                let reply = match message {
                                    YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                                        let diff = lock(&doc).encode_diff(&sv);
                                        Some(protocol::sync_step2(diff))
                                    }
                                    YMessage::Sync(SyncMessage::SyncStep2(u))
                                    | YMessage::Sync(SyncMessage::Update(u)) => {
                                        if lock(&doc).apply_update(&u).is_err() {
                                            return;
                                        }
                                        let _ = tx.send((id, protocol::update(u)));
                                        None
                                    }
                                    _ => None,
                                };
                                if let Some(reply) = reply {
                                    if sink.send(Message::binary(reply)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        forwarded = rx.recv() => {
                            let Ok((from, frame)) = forwarded else { return };
                            if from != id && sink.send(Message::binary(frame)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(url)
}

fn lock(doc: &Mutex<RoomDoc>) -> std::sync::MutexGuard<'_, RoomDoc> {
    doc.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open(url: &str, client_id: u64) -> Result<Session, CollabError> {
    let mut c = SessionConfig::new(url, "replace-text");
    c.client_id = Some(client_id);
    c.min_backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(100);
    Session::open(c)
}

/// A toy formatter: one space around `=`, single spaces, a `;` at the end of every line.
fn format(source: &str) -> String {
    source
        .lines()
        .map(|line| {
            let spaced = line.replace('=', " = ");
            let mut line = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
            if !line.is_empty() && !line.ends_with(';') {
                line.push(';');
            }
            line + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keystroke_between_a_formats_read_and_write_survives_the_format() -> TestResult {
    let url = relay().await?;
    let alice = open(&url, 1)?;
    let bob = open(&url, 2)?;
    alice.wait_confirmed(T).await?;
    bob.wait_confirmed(T).await?;
    alice.create_file(FILE, "const  a=1\nlet b  =2\n")?;
    bob.wait_doc(T, "the file", |d| d.read(FILE).is_some())
        .await?;

    // Alice's format reads the text and computes the formatted one…
    let read = alice.read(FILE).ok_or("no file")?;
    let formatted = format(&read);
    assert_eq!(formatted, "const a = 1;\nlet b = 2;\n");
    // …while Bob types an `x` before the `a`, and it reaches Alice before her write.
    bob.edit(FILE, &[TextEdit::insert(7, "x")])?;
    let typed = "const  xa=1\nlet b  =2\n";
    alice
        .wait_doc(T, "Bob's keystroke", |d| {
            d.read(FILE).as_deref() == Some(typed)
        })
        .await?;

    // Offsets computed against the old text would now hit the wrong characters.
    let scratch = RoomDoc::new();
    scratch.create_file(FILE, typed)?;
    scratch.edit(FILE, &minimal_edits(&read, &formatted))?;
    let misplaced = scratch.read(FILE).ok_or("no file")?;
    assert_ne!(misplaced, format(typed), "stale offsets happened to fit");

    // So the write is refused, naming the file, and applies nothing.
    let refused = alice.replace_text(FILE, &read, &formatted);
    assert!(
        matches!(&refused, Err(CollabError::TextChanged { path }) if path == FILE),
        "{refused:?}"
    );
    assert_eq!(alice.read(FILE).as_deref(), Some(typed));

    // The caller re-reads and formats again: the keystroke survives, formatted.
    let current = alice.read(FILE).ok_or("no file")?;
    assert!(alice.replace_text(FILE, &current, &format(&current))?);
    let expected = "const xa = 1;\nlet b = 2;\n";
    assert_eq!(alice.read(FILE).as_deref(), Some(expected));
    assert_eq!(format(expected), expected);
    bob.wait_doc(T, "the formatted text", |d| {
        d.read(FILE).as_deref() == Some(expected)
    })
    .await?;
    alice.wait_confirmed(T).await?;

    // Replacing a text with itself changes nothing; a missing file is an error.
    assert!(!alice.replace_text(FILE, expected, expected)?);
    assert!(matches!(
        alice.replace_text("Missing.ts", "", "x"),
        Err(CollabError::NoSuchFile(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replaces_of_different_lines_both_survive() -> TestResult {
    let url = relay().await?;
    let alice = open(&url, 3)?;
    let bob = open(&url, 4)?;
    alice.wait_confirmed(T).await?;
    bob.wait_confirmed(T).await?;
    alice.create_file(FILE, "one\ntwo\nthree\n")?;
    bob.wait_doc(T, "the file", |d| d.read(FILE).is_some())
        .await?;
    // Offline, each replaces the text it read: both apply locally (each replica still held the
    // text it read), and merge as minimal edits once they reconnect.
    alice.set_online(false);
    bob.set_online(false);
    assert!(alice.replace_text(FILE, "one\ntwo\nthree\n", "ONE\ntwo\nthree\n")?);
    assert!(bob.replace_text(FILE, "one\ntwo\nthree\n", "one\ntwo\nthree!\n")?);
    alice.set_online(true);
    bob.set_online(true);
    let merged = "ONE\ntwo\nthree!\n";
    for s in [&alice, &bob] {
        s.wait_doc(T, "both replaces", |d| {
            d.read(FILE).as_deref() == Some(merged)
        })
        .await?;
    }
    Ok(())
}
