//! A session against servers that accept the WebSocket and then misbehave: one that never
//! sends anything, one that greets but never answers the sync handshake, and one that answers
//! it and then stops reading (so it answers no ping either); and a healthy one that is merely
//! quiet. The first three must be left and retried; the quiet one must be kept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use spike_collab::{protocol, Session, SessionConfig, SessionState};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Copy)]
enum Behaviour {
    /// Upgrades, then never sends or reads anything.
    Silent,
    /// Sends its own sync step 1 and answers pings, but never answers the client's step 1.
    GreetsButNeverAnswers,
    /// Answers the opening sync step 1 with an empty sync step 2, then stops reading.
    AnswersThenWedges,
    /// Answers the handshake and keeps reading (so pings get their pongs), sending nothing.
    AnswersAndListens,
}

/// A WebSocket server on loopback; returns its rooms URL and a count of accepted upgrades.
async fn server(behaviour: Behaviour) -> Result<(String, Arc<AtomicUsize>), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/rooms", listener.local_addr()?);
    let upgrades = Arc::new(AtomicUsize::new(0));
    let counter = upgrades.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            match behaviour {
                Behaviour::Silent => held.push(ws),
                Behaviour::GreetsButNeverAnswers => {
                    tokio::spawn(async move {
                        let hello = protocol::sync_step1(&Default::default());
                        if ws.send(Message::binary(hello)).await.is_ok() {
                            // Reading answers the client's pings.
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    });
                }
                Behaviour::AnswersThenWedges | Behaviour::AnswersAndListens => {
                    tokio::spawn(async move {
                        // The client's first binary frame is its sync step 1.
                        while let Some(Ok(m)) = ws.next().await {
                            if m.is_binary() {
                                break;
                            }
                        }
                        let empty_update = vec![0, 0];
                        let step2 = protocol::sync_step2(empty_update);
                        if ws.send(Message::binary(step2)).await.is_err() {
                            return;
                        }
                        if matches!(behaviour, Behaviour::AnswersAndListens) {
                            while let Some(Ok(_)) = ws.next().await {}
                        } else {
                            // Hold the socket open without reading it.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(ws);
                        }
                    });
                }
            }
        }
    });
    Ok((url, upgrades))
}

/// A session with short timeouts: 300 ms for the first message, 600 ms of silence (or for the
/// handshake), so misbehaving servers are left quickly.
fn open(url: &str) -> Result<Session, spike_collab::CollabError> {
    open_with(url, Duration::from_millis(300), Duration::from_millis(600))
}

fn open_with(
    url: &str,
    connect: Duration,
    message: Duration,
) -> Result<Session, spike_collab::CollabError> {
    let mut c = SessionConfig::new(url, "wedged");
    c.min_backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(50);
    c.connect_timeout = connect;
    c.message_timeout = message;
    Session::open(c)
}

async fn wait_upgrades(upgrades: &AtomicUsize, n: usize) -> TestResult {
    tokio::time::timeout(Duration::from_secs(20), async {
        while upgrades.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .map_err(|_| format!("fewer than {n} connections in 20 s"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_says_anything_is_left_and_retried() -> TestResult {
    let (url, upgrades) = server(Behaviour::Silent).await?;
    let session = open(&url)?;
    wait_upgrades(&upgrades, 3).await?;
    let status = session.status();
    assert_eq!(status.syncs, 0);
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("the server sent nothing within 300 ms of opening the connection"),
        "{error}"
    );
    session.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_sync_handshake_is_left_and_retried() -> TestResult {
    let (url, upgrades) = server(Behaviour::GreetsButNeverAnswers).await?;
    let session = open(&url)?;
    wait_upgrades(&upgrades, 2).await?;
    let status = session.status();
    assert_eq!(status.syncs, 0);
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("the server did not answer the sync handshake within 600 ms"),
        "{error}"
    );
    session.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_silent_is_dropped_after_the_message_timeout() -> TestResult {
    let (url, upgrades) = server(Behaviour::AnswersThenWedges).await?;
    let session = open(&url)?;
    session
        .wait_status(Duration::from_secs(20), "a second sync", |s| s.syncs >= 2)
        .await?;
    assert!(upgrades.load(Ordering::SeqCst) >= 2);
    let error = session.status().last_error.unwrap_or_default();
    assert!(
        error.contains("nothing received for 600 ms (the message timeout)"),
        "{error}"
    );
    session.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_server_that_answers_pings_keeps_its_connection() -> TestResult {
    let (url, upgrades) = server(Behaviour::AnswersAndListens).await?;
    // Margins wide enough for a loaded CI machine: a ping after 500 ms of silence has 1 s to be
    // answered.
    let session = open_with(&url, Duration::from_secs(5), Duration::from_millis(1500))?;
    session
        .wait_status(Duration::from_secs(20), "synced", |s| {
            s.state == SessionState::Synced
        })
        .await?;
    // Three message timeouts of silence from the server's side: the pings keep it alive.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let status = session.status();
    assert_eq!(status.state, SessionState::Synced);
    assert_eq!(status.syncs, 1);
    assert_eq!(upgrades.load(Ordering::SeqCst), 1);
    assert_eq!(status.last_error, None);
    session.close().await;
    Ok(())
}
