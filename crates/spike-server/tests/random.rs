//! Randomized, seeded sessions: 2–8 clients edit random files with random disconnects, offline
//! periods, app restarts (reopen from the offline log) and server restarts; at the end every
//! replica equals the server's document.
//!
//! `SPIKE_FUZZ_SEEDS` (default 200) seeds are run from `SPIKE_FUZZ_FIRST_SEED` (default 1);
//! `cargo xtask fuzz-rooms` runs a long series. A failure names its seed; replay it with
//! `SPIKE_FUZZ_FIRST_SEED=<seed> SPIKE_FUZZ_SEEDS=1`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config, session, TestResult, TestServer, T};
use spike_collab::{Session, TextEdit};

const PIECES: &[&str] = &["a", "bc", "😀", "漢字", "e\u{301}", "👩‍👩‍👧", "\n", " ", "🎉!"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// UTF-16 offsets that do not split a surrogate pair.
fn boundaries(text: &str) -> Vec<u32> {
    let mut out = vec![0];
    let mut at = 0;
    for c in text.chars() {
        at += c.len_utf16() as u32;
        out.push(at);
    }
    out
}

struct Client {
    session: Option<Session>,
    log: Option<std::path::PathBuf>,
    online: bool,
}

fn open_client(url: &str, log: Option<&Path>, id: u64, online: bool) -> Session {
    let mut c = session(url, "fuzz");
    c.client_id = Some(id);
    c.log_path = log.map(Path::to_path_buf);
    c.online = online;
    c.compact_after = 16;
    common::open(c)
}

async fn run_seed(seed: u64) -> TestResult {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let mut server = Some(TestServer::start(config(&data)).await);
    let addr = server.as_ref().map(|s| s.addr).ok_or("no server")?;
    let url = format!("ws://{addr}/rooms");
    let n = rng.usize(2..=8);
    let mut next_id = seed * 1000;
    let mut clients: Vec<Client> = (0..n)
        .map(|i| {
            // About half the clients keep an offline log.
            let log = rng
                .bool()
                .then(|| dir.path().join(format!("client-{i}.sqlite3")));
            next_id += 1;
            Client {
                session: Some(open_client(&url, log.as_deref(), next_id, true)),
                log,
                online: true,
            }
        })
        .collect();

    let steps = rng.usize(20..60);
    for _ in 0..steps {
        let c = rng.usize(0..n);
        let roll = rng.u32(0..100);
        let client = &mut clients[c];
        let s = client.session.as_ref().ok_or("closed session")?;
        match roll {
            0..=59 => {
                let paths = s.with_doc(|d| d.paths());
                if paths.is_empty() {
                    let _ = s.create_file(&format!("f{}.ts", rng.u32(0..4)), "start");
                    continue;
                }
                let path = &paths[rng.usize(0..paths.len())];
                let text = s.read(path).unwrap_or_default();
                let cuts = boundaries(&text);
                let edit = if rng.u32(0..4) == 0 && cuts.len() > 2 {
                    let k = rng.usize(0..cuts.len() - 1);
                    let end = cuts[rng.usize(k + 1..cuts.len().min(k + 4))];
                    TextEdit::delete(cuts[k], end - cuts[k])
                } else {
                    TextEdit::insert(
                        cuts[rng.usize(0..cuts.len())],
                        PIECES[rng.usize(0..PIECES.len())],
                    )
                };
                // The file may have been deleted by a peer since `paths()`.
                match s.edit(path, &[edit]) {
                    // A peer's edit may also have arrived since `read()`.
                    Ok(())
                    | Err(spike_collab::CollabError::NoSuchFile(_))
                    | Err(spike_collab::CollabError::EditOutOfRange { .. })
                    | Err(spike_collab::CollabError::SplitsSurrogatePair { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            60..=69 => {
                let _ = s.create_file(&format!("f{}.ts", rng.u32(0..4)), "new");
            }
            70..=72 => {
                let paths = s.with_doc(|d| d.paths());
                if !paths.is_empty() {
                    // A peer may have deleted it a moment ago.
                    let _ = s.delete_file(&paths[rng.usize(0..paths.len())]);
                }
            }
            73..=82 => {
                client.online = !client.online;
                s.set_online(client.online);
            }
            83..=85 => {
                // The app restarts: a replica with a log reopens from it under a new client id.
                if client.log.is_some() {
                    if let Some(old) = client.session.take() {
                        old.close().await;
                    }
                    next_id += 1;
                    client.session = Some(open_client(
                        &url,
                        client.log.as_deref(),
                        next_id,
                        client.online,
                    ));
                }
            }
            86..=88 => {
                if let Some(s) = server.take() {
                    s.stop().await;
                }
                server = Some(TestServer::start_at(addr, config(&data)).await);
            }
            89..=94 => {
                // Let some traffic through before the next step.
                let _ = s
                    .wait_status(Duration::from_millis(50), "a moment", |st| !st.unconfirmed)
                    .await;
            }
            _ => tokio::task::yield_now().await,
        }
    }

    // Everyone online; clients without a log that went offline still hold their edits in memory.
    for c in &mut clients {
        c.online = true;
        if let Some(s) = &c.session {
            s.set_online(true);
        }
    }
    for (i, c) in clients.iter().enumerate() {
        if let Some(s) = &c.session {
            s.wait_confirmed(T).await.map_err(|e| {
                format!(
                    "client {i}: {e}: {:?} {}",
                    s.status(),
                    s.confirmation_report()
                )
            })?;
        }
    }
    next_id += 1;
    let observer = open_client(&url, None, next_id, true);
    observer.wait_confirmed(T).await?;
    let expected = observer.with_doc(|d| d.to_json());
    for (i, c) in clients.iter().enumerate() {
        if let Some(s) = &c.session {
            s.wait_doc(T, "convergence with the server", |d| {
                d.to_json() == expected
            })
            .await
            .map_err(|e| {
                format!(
                    "client {i}: {e}: {} vs {expected}",
                    s.with_doc(|d| d.to_json())
                )
            })?;
        }
    }
    observer.close().await;
    for c in clients {
        if let Some(s) = c.session {
            s.close().await;
        }
    }
    if let Some(s) = server {
        s.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_sessions_converge() -> TestResult {
    let first = env_u64("SPIKE_FUZZ_FIRST_SEED", 1);
    let count = env_u64("SPIKE_FUZZ_SEEDS", 200);
    let started = std::time::Instant::now();
    for seed in first..first + count {
        if let Err(e) = run_seed(seed).await {
            return Err(format!(
                "seed {seed} failed (replay: SPIKE_FUZZ_FIRST_SEED={seed} SPIKE_FUZZ_SEEDS=1): {e}"
            )
            .into());
        }
    }
    eprintln!(
        "{count} seeds from {first} converged in {:?}",
        started.elapsed()
    );
    Ok(())
}
