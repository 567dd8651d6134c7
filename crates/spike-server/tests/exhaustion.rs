//! Resource exhaustion against the real `spike-server` binary over loopback sockets: clients
//! that never read, idle kept-alive HTTP connections from many addresses under a small
//! descriptor limit, and a dribbled request head. Each test starts its own server process, so
//! the `/metrics` counters read here are that process's alone (exact values, not deltas).
//!
//! Per-address limits are told apart by connecting from other loopback addresses (127.0.0.2 …
//! 127.0.0.30; all of 127/8 is loopback on Linux) while the honest sessions use 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{open, session, tcp_from, TestResult, T};
use spike_collab::{Session, TextEdit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts the `spike-server` binary under `prlimit --nofile=N:N` (soft and hard limit `N`) on a
/// free loopback port with more flags; returns the child (prlimit execs the server, so the
/// child's pid is the server's) and its rooms URL.
async fn spawn_with_nofile(
    nofile: u64,
    data: &Path,
    flags: &[&str],
) -> Result<(Child, String), BoxError> {
    let limit = format!("--nofile={nofile}:{nofile}");
    common::spawn_server_under(&["/usr/bin/prlimit", &limit], data, flags).await
}

/// A limits file in `dir` holding `json`; its path as a flag value.
fn limits_file(dir: &Path, json: &str) -> Result<String, BoxError> {
    let file = dir.join("limits.json");
    std::fs::write(&file, json)?;
    Ok(file.to_str().ok_or("a non-UTF-8 temp path")?.to_owned())
}

/// The server's socket address from its rooms URL (`ws://127.0.0.1:PORT/rooms`).
fn server_addr(url: &str) -> Result<SocketAddr, BoxError> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected rooms URL {url:?}"))?;
    Ok(host.parse()?)
}

/// `(VmRSS, VmHWM)` of process `pid`, in KiB.
fn memory(pid: u32) -> Result<(u64, u64), BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64, BoxError> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> Result<usize, BoxError> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// `GET /metrics` over a fresh connection from 127.0.0.1; the body.
async fn metrics_text(server: SocketAddr) -> Result<String, BoxError> {
    let mut tcp = TcpStream::connect(server).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(T, tcp.read_to_end(&mut out)).await??;
    let out = String::from_utf8(out)?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET /metrics: {head}").into());
    }
    Ok(body.to_owned())
}

/// The value of a series (name and labels exactly as rendered); 0 when it is absent.
fn series(text: &str, name: &str) -> Result<f64, BoxError> {
    match text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    {
        Some(v) => Ok(v.trim().parse()?),
        None => Ok(0.0),
    }
}

/// `spike_limit_refusals_total{kind}` in a rendering.
fn refusals(text: &str, kind: &str) -> Result<u64, BoxError> {
    Ok(series(
        text,
        &format!("spike_limit_refusals_total{{kind=\"{kind}\"}}"),
    )? as u64)
}

/// A fresh ASCII text of `len` bytes: a random 4 KiB block repeated (cheap to build in a
/// debug build, and never equal to an earlier one).
fn fresh_text(len: usize) -> String {
    let block: String = (0..4096).map(|_| fastrand::alphanumeric()).collect();
    let mut text = block.repeat(len / block.len() + 1);
    text.truncate(len);
    text
}

/// Replaces the whole text of `path` (ASCII, `old_len` bytes) with `text`.
fn replace(editor: &Session, path: &str, old_len: usize, text: &str) -> TestResult {
    editor.edit(
        path,
        &[TextEdit {
            offset: 0,
            delete: u32::try_from(old_len)?,
            insert: text.to_owned(),
        }],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_bounded_in_bytes() -> TestResult {
    /// Peak RSS allowed. Measured on the 2-core box: 83 MB for this load with no slow reader
    /// (47 rounds: the room keeps every replaced text, `skip_gc`, about 1.4 MB a round), and
    /// 113–131 MB with the 4 slow readers (59–81 rounds; they joined together, so their queues
    /// share the same frames). The most the load can cost: the ~16 MB of a started server, 80
    /// rounds (12 s at one per 150 ms) of history at 1.4 MB, and 4 queues sharing nothing,
    /// 4 × (16 MiB queued + the frame being written) = 68 MiB: about 200 MB. The old unbounded
    /// queues reached 1.47 GB in 40 s of this load.
    const MAX_PEAK_KIB: u64 = 250 * 1000 * 1000 / 1024;
    let dir = tempfile::tempdir()?;
    let (server, url) = common::spawn_server(&dir.path().join("data")).await?;
    let pid = server.id().ok_or("the server has no pid")?;
    let addr = server_addr(&url)?;
    let (rss_start, _) = memory(pid)?;

    let editor = open(session(&url, "big"));
    editor.wait_confirmed(T).await?;
    editor.create_file("big.txt", "")?;
    editor.wait_confirmed(T).await?;
    // A member that reads every frame as it comes (a raw WebSocket: a debug-build replica
    // applying megabyte replacements on a loaded 2-core box can itself fall behind, which is not
    // what this test is about). It counts the document updates it receives and notes a close.
    let (reader_ws, _) = tokio_tungstenite::connect_async(format!("{url}/big")).await?;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        let (mut sink, mut stream) = futures_util::StreamExt::split(reader_ws);
        let (mut updates, mut closed) = (0u64, None);
        while let Some(msg) = futures_util::StreamExt::next(&mut stream).await {
            match msg {
                Ok(tokio_tungstenite::tungstenite::Message::Binary(frame)) => {
                    for m in spike_collab::protocol::decode_frame(&frame).unwrap_or_default() {
                        match m {
                            spike_collab::yrs::sync::Message::Sync(
                                spike_collab::yrs::sync::SyncMessage::Update(_),
                            ) => {
                                updates += 1;
                                counter.store(updates, std::sync::atomic::Ordering::Relaxed);
                            }
                            // Answer the server's sync step 1, as any client does.
                            spike_collab::yrs::sync::Message::Sync(
                                spike_collab::yrs::sync::SyncMessage::SyncStep1(_),
                            ) => {
                                let empty = spike_collab::protocol::sync_step2(vec![0, 0]);
                                let _ = futures_util::SinkExt::send(
                                    &mut sink,
                                    tokio_tungstenite::tungstenite::Message::Binary(empty.into()),
                                )
                                .await;
                            }
                            _ => {}
                        }
                    }
                }
                Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                    closed = Some(format!("{frame:?}"));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    closed = Some(e.to_string());
                    break;
                }
            }
        }
        (updates, closed)
    });
    // Raw WebSockets that never read a byte: what the room sends them piles up in its queues.
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(
            tokio_tungstenite::connect_async(format!("{url}/big"))
                .await?
                .0,
        );
    }
    let deadline = Instant::now() + T;
    while series(&metrics_text(addr).await?, "spike_connections")? < 6.0 {
        assert!(Instant::now() < deadline, "the slow readers never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rss_joined, _) = memory(pid)?;

    // The editor replaces the whole text with a fresh megabyte every 150 ms (or as fast as a
    // debug build on this machine manages) for 12 s.
    let started = Instant::now();
    let mut last = String::new();
    let (mut rounds, mut max_rss) = (0, 0);
    let mut every = tokio::time::interval(Duration::from_millis(150));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < Duration::from_secs(12) {
        every.tick().await;
        let text = fresh_text(1_000_000);
        replace(&editor, "big.txt", last.len(), &text)?;
        last = text;
        rounds += 1;
        max_rss = max_rss.max(memory(pid)?.0);
    }
    let flood = started.elapsed();
    editor.wait_confirmed(T).await?;
    let caught_up = started.elapsed();
    let (rss_end, peak) = memory(pid)?;
    let metrics = metrics_text(addr).await?;
    let slow_refusals = refusals(&metrics, "slow_client")?;
    // The server closes the reader at the end (stop); until then it must have had every update.
    drop(slow);
    editor.close().await;
    // Every update the room sent it, read (the last frames may still be on their way).
    let deadline = Instant::now() + T;
    while received.load(std::sync::atomic::Ordering::Relaxed) < rounds && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = server;
    server.start_kill()?;
    let (updates, closed) = tokio::time::timeout(T, reader).await??;
    eprintln!(
        "slow readers: {rounds} rounds of 1 MB in {flood:.1?}, the editor's last edit was confirmed \
         {:.0?} after it was made; server RSS at start {rss_start} KiB, with 6 members \
         {rss_joined} KiB, highest sampled {max_rss} KiB, at the end {rss_end} KiB, peak (VmHWM) \
         {peak} KiB (bound {MAX_PEAK_KIB} KiB); slow_client refusals {slow_refusals}; the reader \
         got {updates} updates, closed by {closed:?}",
        caught_up - flood,
    );
    assert!(
        peak < MAX_PEAK_KIB,
        "the server's peak RSS {peak} KiB is over {MAX_PEAK_KIB} KiB"
    );
    // Each slow reader was refused once; the member that reads never was: it received every
    // replacement and was only closed when the server went away (no close frame naming a limit).
    assert_eq!(slow_refusals, 4);
    assert!(
        updates >= rounds,
        "the reader got {updates} of {rounds} updates"
    );
    assert!(
        !closed.as_deref().unwrap_or("").contains("1013"),
        "the reading member was refused: {closed:?}"
    );
    Ok(())
}

/// Sends `GET /healthz` on `tcp` and reads the answer: `Some(head and body)` when one came,
/// `None` when the server closed the connection (or reset it) without answering.
async fn healthz(tcp: &mut TcpStream) -> Result<Option<String>, BoxError> {
    if tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(T, tcp.read(&mut buf)).await? {
            Ok(0) | Err(_) if out.is_empty() => return Ok(None),
            Ok(0) => return Err(format!("cut-short answer {out:?}").into()),
            Err(e) => return Err(e.into()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if text.contains("\r\n\r\n") && text.ends_with("ok") {
            return Ok(Some(text.into_owned()));
        }
    }
}

/// An idle kept-alive connection that got its answer, and when.
struct Idle {
    tcp: TcpStream,
    answered: Instant,
}

/// Opens `n` connections from `from` at once, each asking `GET /healthz` once; returns the
/// answered ones (left open, idle) and how many were closed without an answer.
async fn idle_flood(
    from: String,
    server: SocketAddr,
    n: usize,
) -> Result<(Vec<Idle>, usize), BoxError> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let from = from.clone();
        tasks.spawn(async move {
            let mut tcp = tcp_from(&from, server).await?;
            let answer = healthz(&mut tcp).await?;
            if let Some(answer) = &answer {
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            }
            Ok::<_, BoxError>(answer.map(|_| Idle {
                tcp,
                answered: Instant::now(),
            }))
        });
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done?? {
            Some(idle) => held.push(idle),
            None => refused += 1,
        }
    }
    Ok((held, refused))
}

/// Opens a session in `room` and waits until it has `path` with `text`; returns it and how long
/// that took.
async fn join(
    url: &str,
    room: &str,
    path: &str,
    text: &str,
) -> Result<(Session, Duration), BoxError> {
    let started = Instant::now();
    let s = open(session(url, room));
    s.wait_doc(T, "the room's file at a new session", |d| {
        d.read(path).as_deref() == Some(text)
    })
    .await?;
    Ok((s, started.elapsed()))
}

/// `from` appends `add` to `path`; returns how long until every one of `members` has it.
async fn exchange(
    from: &Session,
    members: &[&Session],
    path: &str,
    add: &str,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let old = from.read(path).ok_or("no such file")?;
    let len = u32::try_from(old.encode_utf16().count())?;
    from.edit(path, &[TextEdit::insert(len, add)])?;
    let want = format!("{old}{add}");
    for to in members {
        to.wait_doc(T, "a member's edit at the others", |d| {
            d.read(path).as_deref() == Some(want.as_str())
        })
        .await?;
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_cannot_lock_clients_out() -> TestResult {
    // Under a descriptor limit of 256 the server caps TCP connections at 256 − 64 = 192, plain
    // HTTP ones at 192 − 192/4 = 144, and plain ones per client address at 144/4 = 36.
    const NOFILE: u64 = 256;
    const PLAIN: usize = 144;
    const PER_PEER: usize = 36;
    const HANDSHAKE: Duration = Duration::from_secs(4);
    let dir = tempfile::tempdir()?;
    let limits = limits_file(dir.path(), r#"{"handshake_timeout": "4s"}"#)?;
    let (mut server, url) =
        spawn_with_nofile(NOFILE, &dir.path().join("data"), &["--limits", &limits]).await?;
    let addr = server_addr(&url)?;
    let (a, b) = (open(session(&url, "r")), open(session(&url, "r")));
    a.create_file("seed.txt", "seed")?;
    b.wait_doc(T, "seed.txt at b", |d| {
        d.read("seed.txt").as_deref() == Some("seed")
    })
    .await?;
    a.wait_confirmed(T).await?;

    // 300 idle kept-alive connections from one address: its share is 36, the rest are closed
    // unanswered. (The server listens with a backlog of 128, so a burst of 300 connects
    // overflows its accept queue and some wait out a SYN retransmission: about 1 s.)
    let started = Instant::now();
    let (mut held, refused_one) = idle_flood("127.0.0.2".into(), addr, 300).await?;
    let flood_one = started.elapsed();
    assert_eq!(
        held.len(),
        PER_PEER,
        "answered connections from one address"
    );
    assert_eq!(refused_one, 300 - PER_PEER);
    // An honest client (127.0.0.1) still joins while they are open.
    let (c, join_during) = join(&url, "r", "seed.txt", "seed").await?;
    assert!(
        join_during < Duration::from_secs(1),
        "joining took {join_during:?}"
    );

    // Idle connections from 28 more addresses, 8 each (well under each one's share), to hold
    // every plain connection the server has: 144 − 36 more are answered, the rest closed.
    let flood_many_started = Instant::now();
    let mut floods = tokio::task::JoinSet::new();
    for i in 3..=30 {
        floods.spawn(idle_flood(format!("127.0.0.{i}"), addr, 8));
    }
    let mut refused_many = 0;
    while let Some(done) = floods.join_next().await {
        let (more, refused) = done??;
        held.extend(more);
        refused_many += refused;
    }
    let flood_many = flood_many_started.elapsed();
    assert!(
        started.elapsed() < HANDSHAKE,
        "the floods took {:?}: the first idle connections may have timed out already",
        started.elapsed()
    );
    assert_eq!(
        held.len(),
        PLAIN,
        "idle connections the server holds at once"
    );
    assert_eq!(refused_many, 28 * 8 - (PLAIN - PER_PEER));
    // The plain share is full: a new HTTP connection, from anyone, is closed unanswered (a new
    // WebSocket too, since each starts as plain HTTP) ...
    let mut probe = TcpStream::connect(addr).await?;
    assert_eq!(
        healthz(&mut probe).await?,
        None,
        "the plain share was not full"
    );
    // ... but members already connected keep editing each other's text, on the quarter kept
    // for WebSockets.
    let mut edits = Vec::new();
    for round in 0..3 {
        for (who, from) in [("a", &a), ("b", &b), ("c", &c)] {
            let add = format!("{who}{round}");
            edits.push(exchange(from, &[&a, &b, &c], "seed.txt", &add).await?);
        }
    }
    let slowest_edit = edits.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_edit < Duration::from_secs(1),
        "an edit took {slowest_edit:?} to reach every member: {edits:?}"
    );

    // Every idle connection is closed by the server (EOF) once the handshake timeout has
    // passed since its answer.
    let mut closing = tokio::task::JoinSet::new();
    for Idle { mut tcp, answered } in held {
        closing.spawn(async move {
            let mut buf = [0u8; 64];
            let read =
                tokio::time::timeout(HANDSHAKE + Duration::from_secs(10), tcp.read(&mut buf)).await;
            let after = answered.elapsed();
            match read {
                Ok(Ok(0)) => Ok(after),
                Ok(Ok(n)) => Err(format!("an idle connection got {:?}", &buf[..n])),
                Ok(Err(e)) => Err(format!("an idle connection failed: {e}")),
                Err(_) => Err(format!("an idle connection was still open after {after:?}")),
            }
        });
    }
    let mut closed_after = Vec::new();
    while let Some(done) = closing.join_next().await {
        closed_after.push(done??);
    }
    let (first, last) = (
        closed_after.iter().min().copied().unwrap_or_default(),
        closed_after.iter().max().copied().unwrap_or_default(),
    );
    assert!(
        first >= HANDSHAKE - Duration::from_millis(500)
            && last <= HANDSHAKE + Duration::from_secs(1),
        "idle connections closed between {first:?} and {last:?} after their answers"
    );
    let (d, join_after) = join(
        &url,
        "r",
        "seed.txt",
        &c.read("seed.txt").unwrap_or_default(),
    )
    .await?;
    assert!(
        join_after < Duration::from_secs(1),
        "joining took {join_after:?}"
    );

    let metrics = metrics_text(addr).await?;
    let (per_peer, connections, timeouts) = (
        refusals(&metrics, "http_connections_per_peer")?,
        refusals(&metrics, "connections")?,
        refusals(&metrics, "handshake_timeout")?,
    );
    eprintln!(
        "idle flood under nofile {NOFILE}: 300 from 127.0.0.2 in {flood_one:.0?} ({PER_PEER} \
         held, {refused_one} refused), a new session joined in {join_during:.0?}; 224 from 28 \
         more addresses in {flood_many:.0?} ({} held, {refused_many} refused); edits between \
         members during the flood took {edits:.0?}; idle connections closed {first:.2?} to \
         {last:.2?} after their answers; a new session then joined in {join_after:.0?}; \
         refusals: http_connections_per_peer {per_peer}, connections {connections}, \
         handshake_timeout {timeouts}",
        PLAIN - PER_PEER
    );
    assert_eq!(per_peer, (300 - PER_PEER) as u64);
    assert_eq!(
        connections,
        (refused_many + 1) as u64,
        "the floods' and the probe's"
    );
    assert_eq!(
        timeouts, PLAIN as u64,
        "each idle connection timed out once"
    );
    assert!(server.try_wait()?.is_none(), "the server exited");
    for s in [a, b, c, d] {
        s.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbled_second_request_is_dropped() -> TestResult {
    const HANDSHAKE: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let limits = limits_file(dir.path(), r#"{"handshake_timeout": "2s"}"#)?;
    let (mut server, url) =
        common::spawn_server_with(&dir.path().join("data"), &["--limits", &limits]).await?;
    let addr = server_addr(&url)?;
    let mut tcp = TcpStream::connect(addr).await?;
    let answer = healthz(&mut tcp)
        .await?
        .ok_or("the first request got no answer")?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answered = Instant::now();

    // The second head, one byte every 300 ms: its 34 bytes would take 10.2 s.
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let sent = Arc::new(AtomicUsize::new(0));
    let (mut rd, mut wr) = tcp.into_split();
    let dribble = tokio::spawn({
        let sent = sent.clone();
        async move {
            for byte in head {
                if wr.write_all(&[*byte]).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(T, rd.read(&mut buf)).await?;
    let closed_after = answered.elapsed();
    let sent = sent.load(Ordering::SeqCst);
    dribble.abort();
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => return Err(format!("the dribbled request got {:?}", &buf[..n]).into()),
    }
    let timeouts = refusals(&metrics_text(addr).await?, "handshake_timeout")?;
    eprintln!(
        "dribbled head: closed {closed_after:.2?} after the first answer, with {sent} of \
         {} bytes of the second head sent; handshake_timeout refusals {timeouts}",
        head.len()
    );
    assert!(
        closed_after >= HANDSHAKE - Duration::from_millis(50)
            && closed_after <= HANDSHAKE + Duration::from_secs(1),
        "closed {closed_after:?} after the first answer"
    );
    assert!(sent < head.len(), "the head was complete");
    assert_eq!(timeouts, 1);
    assert!(server.try_wait()?.is_none(), "the server exited");
    Ok(())
}

/// A slow client the room refuses is closed at once: its writer was blocked in `sink.send`
/// on a socket whose peer does not read, so the room also signals the connection, which
/// abandons the send and drops both halves of the socket (with its slot and queued frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_slow_readers_are_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let limits = limits_file(
        dir.path(),
        r#"{"max_queued_bytes": 1000000, "idle_timeout": "3s"}"#,
    )?;
    let (server, url) =
        common::spawn_server_with(&dir.path().join("data"), &["--limits", &limits]).await?;
    let pid = server.id().ok_or("the server has no pid")?;
    let addr = server_addr(&url)?;
    let editor = open(session(&url, "big"));
    editor.wait_confirmed(T).await?;
    editor.create_file("big.txt", "")?;
    editor.wait_confirmed(T).await?;
    let fds_before = open_fds(pid)?;

    // Two raw WebSockets that never read, then 200 KB texts until both are refused.
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(
            tokio_tungstenite::connect_async(format!("{url}/big"))
                .await?
                .0,
        );
    }
    let deadline = Instant::now() + T;
    while series(&metrics_text(addr).await?, "spike_connections")? < 3.0 {
        assert!(Instant::now() < deadline, "the slow readers never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fds_joined = open_fds(pid)?;
    let mut last = String::new();
    while refusals(&metrics_text(addr).await?, "slow_client")? < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow readers were never refused"
        );
        let text = fresh_text(200_000);
        replace(&editor, "big.txt", last.len(), &text)?;
        last = text;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    editor.wait_confirmed(T).await?;
    let refused = Instant::now();

    // Refused ("disconnected with close 1013"): the server should let go of their sockets
    // without their help, at the latest when their idle timeout (3 s) has passed.
    let mut fds = open_fds(pid)?;
    while fds > fds_before && refused.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds = open_fds(pid)?;
    }
    let metrics = metrics_text(addr).await?;
    eprintln!(
        "refused slow readers: server fds {fds_before} before they joined, {fds_joined} with \
         them, {fds} {:.1?} after both were refused; spike_connections {}; idle_timeout \
         refusals {}; RSS {:?} KiB",
        refused.elapsed(),
        series(&metrics, "spike_connections")?,
        refusals(&metrics, "idle_timeout")?,
        memory(pid)?,
    );
    assert_eq!(
        fds, fds_before,
        "the refused slow readers' sockets are still open in the server"
    );
    drop(slow);
    editor.close().await;
    Ok(())
}
