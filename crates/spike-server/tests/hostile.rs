//! The hostile-frame suite: a real `spike-server` process with tokens on, attacked over real
//! WebSockets by connections holding view (and, for a few kinds, edit) tokens, while honest
//! clients work: two Spike sessions and a stock y-websocket peer (Node, `yjs` from npm) in the
//! attacked room, one session in another room.
//!
//! Kinds: updates nested thousands of levels deep (`Any` arrays and objects, embedded JSON),
//! declared sizes far past the bytes sent (update client and struct counts, state vectors,
//! `Any` lengths), clocks at and past 2³¹ and 2³², awareness states nested, oversized or with
//! too many members, awareness entries spoofing another client's id, and thousands of mutations
//! of valid frames. After every kind the process must still run and an honest edit must cross
//! the attacked room within a second; at the end the honest sessions never reconnected, the Node
//! peer is alive with its own presence intact, the other room never noticed, and the server's
//! peak RSS stayed under [`PEAK_RSS_BOUND_KB`].

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{open, session, spawn_server_with, TestResult, T};
use futures_util::SinkExt as _;
use spike_collab::yrs::encoding::write::Write as _;
use spike_collab::{Presence, RoomDoc, Session, SessionState, TextEdit, User};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message as Ws;

/// The server's peak resident set under the whole attack, KiB. A debug build serving three
/// rooms idles near 16 MB (measured); every refused message is dropped without being decoded by yrs, so
/// nothing an attacker sends should be held.
const PEAK_RSS_BOUND_KB: u64 = 64 * 1024;
/// How long an honest edit may take to cross the attacked room after an attack wave.
const HONEST_LATENCY: Duration = Duration::from_secs(1);

struct Target {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    addr: SocketAddr,
    key: TokenKey,
    issued: std::sync::atomic::AtomicU64,
}

impl Target {
    fn token(
        &self,
        room: &str,
        role: Role,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        // Its own name, so per-token limits count each token apart.
        let mut claims = Claims::new(room, role, Duration::from_secs(3600));
        claims.name = Some(format!(
            "peer-{}",
            self.issued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Ok(self.key.issue(&claims)?)
    }

    /// The server process is still running.
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `(VmRSS, VmHWM)` of the server process, KiB.
    fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Sends `frames` to `room` over connections holding `role` tokens, at most five frames
    /// per connection (below the bad-message limit, so every frame reaches the room), each
    /// connection from another loopback address. Returns how many frames were sent.
    async fn send(
        &self,
        room: &str,
        role: Role,
        frames: &[Vec<u8>],
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let mut sent = 0;
        for (i, chunk) in frames.chunks(5).enumerate() {
            let token = self.token(room, role)?;
            let source: SocketAddr = format!("127.0.{}.{}:0", 1 + i / 200, 10 + i % 200).parse()?;
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(source)?;
            let tcp = socket.connect(self.addr).await?;
            let url = format!("{}/{room}?token={token}", self.url);
            let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
            for frame in chunk {
                if ws.send(Ws::Binary(frame.clone().into())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            let _ = ws.close(None).await;
        }
        Ok(sent)
    }
}

async fn start() -> Result<(Target, tempfile::TempDir), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    // A secret in the data folder turns tokens on, on loopback too.
    let (secret, _) = Secret::load_or_generate(dir.path())?;
    let (child, url) = spawn_server_with(dir.path(), &[]).await?;
    let pid = child.id().ok_or("the server has no pid")?;
    let addr = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or("no address in the URL")?
        .parse()?;
    let key = TokenKey::new(&secret);
    Ok((
        Target {
            child,
            pid,
            url,
            addr,
            key,
            issued: 0.into(),
        },
        dir,
    ))
}

fn honest(
    target: &Target,
    room: &str,
    name: &str,
) -> Result<Session, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = session(&target.url, room);
    config.token = Some(target.token(room, Role::Edit)?);
    config.presence = Some(Presence {
        user: User {
            name: name.into(),
            color: "#336699".into(),
        },
        ..Presence::default()
    });
    Ok(open(config))
}

/// An honest edit crosses the room: `from` creates a new file, `to` sees it. Returns how long
/// that took.
async fn probe(
    from: &Session,
    to: &Session,
    n: usize,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let path = format!("probe-{n}.txt");
    let started = Instant::now();
    from.create_file(&path, "honest")?;
    to.wait_doc(T, "the probe", |doc| doc.read(&path).is_some())
        .await?;
    Ok(started.elapsed())
}

// Frame builders (y-websocket framing around lib0 v1 payloads).

fn frame(tag: u8, sub: Option<u8>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if let Some(sub) = sub {
        out.push(sub);
    }
    out.write_buf(payload);
    out
}

fn update_frame(update: &[u8]) -> Vec<u8> {
    frame(0, Some(2), update)
}

/// An update of one struct of client `client` at `clock` under the root map `files`, key `k`:
/// content tag `tag` followed by `content`.
fn item(client: u64, clock: u32, tag: u8, content: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.write_var(1u32);
    u.write_var(1u32);
    u.write_var(client);
    u.write_var(clock);
    u.push(tag | 0b0010_0000);
    u.write_var(1u32);
    u.write_string("files");
    u.write_string("k");
    u.extend_from_slice(content);
    u.write_var(0u32);
    u
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut c = vec![1];
    for _ in 0..depth {
        c.extend([117, 1]);
    }
    c.push(126);
    c
}

fn nested_objects(depth: usize) -> Vec<u8> {
    let mut c = vec![1];
    for _ in 0..depth {
        c.extend([118, 1, 1, b'k']);
    }
    c.push(126);
    c
}

fn awareness_frame(client: u64, clock: u32, state: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.write_var(1u32);
    p.write_var(client);
    p.write_var(clock);
    p.write_string(state);
    frame(1, None, &p)
}

/// Valid frames to mutate: real updates (files, edits, meta, nested values), a state vector, an
/// awareness update.
fn corpus() -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
    use spike_collab::yrs::{Map as _, Transact as _};
    let doc = RoomDoc::with_client_id(900_001);
    let mut frames = Vec::new();
    let mut push = |u: Option<Vec<u8>>| {
        if let Some(u) = u {
            frames.push(update_frame(&u));
        }
    };
    push(doc.create_file("a.tsx", "export const A = () => <b>hi 👋</b>;\n")?);
    push(doc.edit(
        "a.tsx",
        &[TextEdit::insert(3, "«»"), TextEdit::delete(0, 2)],
    )?);
    push(doc.set_meta("packages", r#"{"react":"19"}"#));
    push(doc.create_file("b/c.ts", &"x".repeat(300))?);
    push(doc.delete_file("b/c.ts")?);
    {
        let map = doc.doc().get_or_insert_map("other");
        let mut txn = doc.doc().transact_mut();
        map.insert(
            &mut txn,
            "v",
            spike_collab::yrs::Any::from_json(r#"{"a":[1,2.5,"s",true,null,{"b":[[]]}]}"#)?,
        );
    }
    frames.push(update_frame(&doc.encode_state()));
    frames.push(spike_collab::protocol::sync_step1(&doc.state_vector()));
    frames.push(awareness_frame(
        900_001,
        3,
        r##"{"user":{"name":"x","color":"#000000"},"cursors":{}}"##,
    ));
    Ok(frames)
}

fn mutate(rng: &mut fastrand::Rng, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(0..f.len().max(1));
        match rng.u8(0..6) {
            0 if !f.is_empty() => {
                let i = at.min(f.len() - 1);
                f[i] ^= 1 << rng.u8(0..8);
            }
            1 if !f.is_empty() => {
                let i = at.min(f.len() - 1);
                f[i] = rng.u8(..);
            }
            2 => f.insert(at.min(f.len()), rng.u8(..)),
            3 => f.truncate(at),
            4 => {
                let at = at.min(f.len());
                f.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => {
                let at = at.min(f.len());
                let tail = f[at..].to_vec();
                f.extend(tail);
            }
        }
    }
    if f.is_empty() {
        f.push(0);
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_never_take_a_room_down() -> TestResult {
    let (mut target, _dir) = start().await?;
    let a = honest(&target, "attacked", "ada")?;
    let b = honest(&target, "attacked", "bob")?;
    let c = honest(&target, "quiet", "cy")?;
    for s in [&a, &b, &c] {
        s.wait_status(T, "synced", |st| st.state == SessionState::Synced)
            .await?;
    }
    // A stock y-websocket peer in the attacked room for the whole attack.
    let node_dir = common::node_dir();
    let mut node = tokio::process::Command::new("node")
        .arg("rooms-watch.mjs")
        .args([
            &target.url,
            "attacked",
            &target.token("attacked", Role::Edit)?,
        ])
        .current_dir(&node_dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut node_out = tokio::io::BufReader::new(node.stdout.take().ok_or("node stdout")?).lines();
    let first = tokio::time::timeout(T, node_out.next_line())
        .await??
        .ok_or("node exited before syncing")?;
    let node_id = serde_json::from_str::<serde_json::Value>(&first)?["clientID"]
        .as_u64()
        .ok_or("no clientID")?;
    let (rss_before, _) = target.rss();

    let mut tried = 0usize;
    let mut worst = Duration::ZERO;
    let mut n = 0usize;
    let wave = |name: &str, sent: usize, took: Duration, alive: bool| -> TestResult {
        assert!(alive, "the server died after {name}");
        assert!(
            took < HONEST_LATENCY,
            "after {name} an honest edit took {took:?}"
        );
        eprintln!(
            "{name}: {sent} messages, honest edit crossed in {} ms",
            took.as_millis()
        );
        Ok(())
    };

    // 1. Nesting: Any arrays and objects far past the limit, embedded JSON, from view tokens.
    let deep: Vec<Vec<u8>> = vec![
        update_frame(&item(77, 0, 8, &nested_arrays(8_000))),
        update_frame(&item(77, 0, 8, &nested_arrays(100_000))),
        update_frame(&item(77, 0, 8, &nested_objects(5_000))),
        update_frame(&item(77, 0, 9, &{
            let mut c = Vec::new();
            c.write_string("guid");
            c.extend(&nested_arrays(20_000)[1..]);
            c
        })),
        update_frame(&item(77, 0, 5, &{
            let mut c = Vec::new();
            c.write_string(&format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)));
            c
        })),
        // As a sync step 2 too, the message every client sends after connecting.
        frame(0, Some(1), &item(77, 0, 8, &nested_arrays(8_000))),
    ];
    for role in [Role::View, Role::Edit] {
        let sent = target.send("attacked", role, &deep).await?;
        tried += sent;
        n += 1;
        let took = probe(&a, &b, n).await?;
        worst = worst.max(took);
        wave(
            &format!("nesting ({})", role.as_str()),
            sent,
            took,
            target.alive(),
        )?;
    }

    // 2. Declared sizes: counts of 2³²−1 and 2²⁸ in a few bytes.
    let huge: Vec<Vec<u8>> = vec![
        update_frame(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0]),
        update_frame(&[0x80, 0x80, 0x80, 0x80, 0x01, 0, 0, 0]),
        update_frame(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 7, 0]),
        frame(0, Some(0), &[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]),
        frame(0, Some(0), &[0x80, 0x80, 0x80, 0x80, 0x01, 1, 1]),
        update_frame(&item(
            77,
            0,
            8,
            &[1, 117, 0xff, 0xff, 0xff, 0xff, 0x0f, 126],
        )),
        update_frame(&item(
            77,
            0,
            8,
            &[1, 118, 0xff, 0xff, 0xff, 0xff, 0x0f, 126],
        )),
        update_frame(&item(77, 0, 2, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0])),
        // An awareness update announcing 2³²−1 entries.
        frame(1, None, &[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]),
    ];
    for role in [Role::View, Role::Edit] {
        let sent = target.send("attacked", role, &huge).await?;
        tried += sent;
        n += 1;
        let took = probe(&a, &b, n).await?;
        worst = worst.max(took);
        wave(
            &format!("declared sizes ({})", role.as_str()),
            sent,
            took,
            target.alive(),
        )?;
    }

    // 3. Clocks at and past 2³¹ and 2³², in structs and in deleted ranges, from edit tokens.
    let mut clocks = Vec::new();
    for clock in [
        (1u32 << 31) - 10,
        (1 << 31) - 2,
        1 << 31,
        u32::MAX - 1,
        u32::MAX,
    ] {
        let mut s = Vec::new();
        s.write_string("abcdef");
        clocks.push(update_frame(&item(0x7777, clock, 4, &s)));
        let mut ds = vec![0, 1];
        ds.write_var(0x7777u64);
        ds.write_var(1u32);
        ds.write_var(clock);
        ds.write_var(100u32);
        clocks.push(update_frame(&ds));
    }
    let sent = target.send("attacked", Role::Edit, &clocks).await?;
    tried += sent;
    n += 1;
    let took = probe(&a, &b, n).await?;
    worst = worst.max(took);
    wave("clocks", sent, took, target.alive())?;

    // 4. Poisoned presence: deep, oversized and many-membered states.
    let members = format!(
        "{{{}}}",
        (0..5_000)
            .map(|i| format!("\"k{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let poisoned = vec![
        awareness_frame(
            4242,
            1,
            &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        awareness_frame(
            4243,
            1,
            &format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)),
        ),
        awareness_frame(4244, 1, &format!("\"{}\"", "x".repeat(1 << 20))),
        awareness_frame(4245, 1, &members),
    ];
    let sent = target.send("attacked", Role::View, &poisoned).await?;
    tried += sent;
    n += 1;
    let took = probe(&a, &b, n).await?;
    worst = worst.max(took);
    wave("poisoned presence", sent, took, target.alive())?;

    // 5. Spoofed presence: the Node peer's and a session's ids, with higher clocks.
    let spoofed = vec![
        awareness_frame(
            node_id,
            1_000,
            r##"{"user":{"name":"mallory","color":"#ff0000"}}"##,
        ),
        awareness_frame(
            a.client_id(),
            1_000,
            r##"{"user":{"name":"mallory","color":"#ff0000"}}"##,
        ),
        awareness_frame(node_id, 1_001, "null"),
    ];
    let sent = target.send("attacked", Role::View, &spoofed).await?;
    tried += sent;
    n += 1;
    let took = probe(&a, &b, n).await?;
    worst = worst.max(took);
    wave("spoofed presence", sent, took, target.alive())?;

    // 6. Mutations of valid frames, from view and edit tokens (seeded: a failure replays).
    let seed = 0x5eed_0013;
    let mut rng = fastrand::Rng::with_seed(seed);
    let corpus = corpus()?;
    for (role, count) in [(Role::View, 2_500), (Role::Edit, 1_500)] {
        let mutated: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let base = rng.usize(0..corpus.len());
                mutate(&mut rng, &corpus[base])
            })
            .collect();
        let sent = target.send("attacked", role, &mutated).await?;
        tried += sent;
        n += 1;
        let took = probe(&a, &b, n).await?;
        worst = worst.max(took);
        wave(
            &format!("mutations ({}, seed {seed:#x})", role.as_str()),
            sent,
            took,
            target.alive(),
        )?;
    }

    // The end: nobody honest noticed. The sessions see the Node peer as it is (checked before
    // it leaves, which removes its presence).
    assert_eq!(
        b.peers().get(&node_id).map(|p| p.user.name.as_str()),
        Some("node")
    );
    a.create_file("done.txt", "")?;
    let last = tokio::time::timeout(T, node_out.next_line())
        .await??
        .ok_or("the Node peer died")?;
    let status = tokio::time::timeout(T, node.wait()).await??;
    assert!(status.success(), "the Node peer exited with {status}");
    let seen: serde_json::Value = serde_json::from_str(&last)?;
    assert_eq!(seen["local"]["user"]["name"], "node", "{seen}");
    assert_eq!(seen["disconnects"], 0, "{seen}");
    let names: Vec<&str> = seen["peers"]
        .as_object()
        .ok_or("peers")?
        .values()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(!names.contains(&"mallory"), "{seen}");
    assert_eq!(seen["peers"][node_id.to_string()], "node", "{seen}");
    assert_eq!(seen["peers"][a.client_id().to_string()], "ada", "{seen}");
    // The sessions see each other as they are, never reconnected, and the quiet room never
    // noticed.
    assert_eq!(
        b.peers().get(&a.client_id()).map(|p| p.user.name.as_str()),
        Some("ada")
    );
    for (s, name) in [(&a, "ada"), (&b, "bob"), (&c, "cy")] {
        let st = s.status();
        assert_eq!(
            (st.state, st.syncs),
            (SessionState::Synced, 1),
            "{name}: {st:?}"
        );
    }
    c.create_file("still.txt", "here")?;
    c.wait_confirmed(T).await?;
    assert!(target.alive(), "the server died");
    let (rss_after, peak) = target.rss();
    eprintln!(
        "hostile suite: {tried} messages, 0 crashes, worst honest latency {} ms, RSS {} MB before, {} MB after, peak {} MB (bound {} MB)",
        worst.as_millis(),
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024,
        PEAK_RSS_BOUND_KB / 1024
    );
    assert!(peak < PEAK_RSS_BOUND_KB, "peak RSS {peak} KiB");
    assert!(tried > 4_000, "only {tried} messages were sent");
    a.close().await;
    b.close().await;
    c.close().await;
    Ok(())
}
