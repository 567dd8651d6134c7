//! The load: `clients` WebSocket clients spread round-robin over `rooms` rooms, each inserting one
//! character into a root `Y.Text` at a fixed rate, speaking the y-websocket protocol (or
//! Hocuspocus' variant of it, where every message is prefixed with the document name).
//!
//! Every client owns a yrs document holding only its own text and appends to it, so each update
//! is one struct of one client (`(client, clock)` identifies it) and the generator never pays for
//! integrating other clients' updates. A received sync update is parsed only as far as its first
//! struct group header, looked up in the shared send-time map and counted as one delivery unless
//! it is the client's own update echoed back (y-websocket-server echoes to the sender).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use spike_collab::protocol;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::encoding::read::{Cursor, Read as _};
use yrs::encoding::write::Write as _;
use yrs::updates::decoder::Decode as _;
use yrs::{Doc, Options, ReadTxn as _, Text as _, TextRef, Transact as _};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The root text every client types into.
const TEXT: &str = "bench";

/// How a server frames messages and names rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// y-websocket: the room is the last URL path segment, frames are bare y-protocols messages.
    YWebsocket,
    /// Hocuspocus: one URL, every message starts with the document name (lib0 varstring) and a
    /// document must be authenticated (message type 2, token) before it syncs.
    Hocuspocus,
}

/// Where to send the load.
#[derive(Debug, Clone)]
pub struct Target {
    /// `ws://host:port/prefix`; y-websocket rooms are `<base>/<room>`.
    pub base: String,
    /// Framing.
    pub flavor: Flavor,
}

impl Target {
    fn url(&self, room: &str) -> String {
        match self.flavor {
            Flavor::YWebsocket => format!("{}/{room}", self.base),
            Flavor::Hocuspocus => self.base.clone(),
        }
    }
}

/// The load's shape.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Clients in all.
    pub clients: usize,
    /// Rooms; client `i` joins room `i % rooms`.
    pub rooms: usize,
    /// Inserts per client per second.
    pub rate: f64,
    /// Typing before the measured window (not measured).
    pub warmup: Duration,
    /// The measured window.
    pub seconds: Duration,
    /// Room name prefix; rooms are `<prefix>-<n>`.
    pub room_prefix: String,
}

/// Samples of the server process taken at the edges of the measured window.
pub trait Probe {
    /// CPU seconds (user, system) the server has used so far, if known.
    fn cpu_seconds(&self) -> Option<(f64, f64)>;
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Updates the clients sent, whole run.
    pub sent: u64,
    /// Updates received by a client other than their author, whole run.
    pub delivered: u64,
    /// `Σ sent-in-room × (clients-in-room − 1)`: `delivered` when nothing was lost.
    pub expected: u64,
    /// Deliveries received inside the measured window.
    pub window_delivered: u64,
    /// Length of the measured window, seconds.
    pub window_seconds: f64,
    /// Delivery latencies received inside the window, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Server CPU seconds spent inside the window, if the probe knows.
    pub server_cpu_seconds: Option<f64>,
    /// Of which in the kernel (system time).
    pub server_system_seconds: Option<f64>,
    /// This process' CPU seconds inside the window (to tell a saturated generator).
    pub loadgen_cpu_seconds: Option<f64>,
}

impl LoadReport {
    /// Deliveries per second inside the window.
    pub fn delivered_per_second(&self) -> f64 {
        self.window_delivered as f64 / self.window_seconds.max(1e-9)
    }

    /// The `q` quantile (0..=1) of the window's latencies, milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Some(f64::from(self.latencies_us[i]) / 1000.0)
    }

    /// Server CPU seconds per 1,000 deliveries inside the window.
    pub fn cpu_per_1k(&self) -> Option<f64> {
        let cpu = self.server_cpu_seconds?;
        (self.window_delivered > 0).then(|| cpu * 1000.0 / self.window_delivered as f64)
    }
}

/// Counters shared by every client of a run.
struct Shared {
    /// Send time of every update by `(client, clock)`.
    sent_at: Mutex<HashMap<(u64, u32), Instant>>,
    delivered: AtomicU64,
    expected: AtomicU64,
    sent: AtomicU64,
}

impl Shared {
    fn sent_at(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u32), Instant>> {
        self.sent_at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The run's clock: typing starts at `start`, the window is `[window_start, window_end)`, typing
/// stops at `window_end`.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    window_start: Instant,
    window_end: Instant,
}

/// One connected, synced client.
struct Client {
    ws: Ws,
    doc: Doc,
    text: TextRef,
    id: u64,
    room: String,
    peers: u64,
}

/// Runs the load against `target` and measures it; `probe` samples the server at the window's
/// edges. Errors when a client cannot connect or sync within 30 s.
pub async fn run(
    target: &Target,
    config: &LoadConfig,
    probe: &dyn Probe,
) -> anyhow::Result<LoadReport> {
    if config.clients == 0 || config.rooms == 0 || config.rate <= 0.0 {
        bail!("clients, rooms and rate must be positive");
    }
    let base_id = fastrand::u64(1 << 32..1 << 48);
    let mut members = vec![0u64; config.rooms];
    for i in 0..config.clients {
        members[i % config.rooms] += 1;
    }
    let connects = futures_util::stream::iter(0..config.clients).map(|i| {
        let room = format!("{}-{}", config.room_prefix, i % config.rooms);
        let peers = members[i % config.rooms].saturating_sub(1);
        connect(target, room, base_id + i as u64, peers)
    });
    // Bounded, so that a slow accept loop sees a steady trickle rather than a thundering herd.
    let clients: Vec<Client> = connects
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    tracing::info!(clients = clients.len(), "all clients synced");

    let start = Instant::now() + Duration::from_millis(200);
    let schedule = Schedule {
        start,
        window_start: start + config.warmup,
        window_end: start + config.warmup + config.seconds,
    };
    let shared = Arc::new(Shared {
        sent_at: Mutex::default(),
        delivered: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            let flavor = target.flavor;
            tokio::spawn(drive(c, flavor, period, schedule, shared, stop))
        })
        .collect();

    tokio::time::sleep_until(schedule.window_start).await;
    let cpu0 = probe.cpu_seconds();
    let self0 = own_cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep_until(schedule.window_end).await;
    let cpu1 = probe.cpu_seconds();
    let self1 = own_cpu_seconds();
    let window_seconds = t0.elapsed().as_secs_f64();

    // Let the last updates arrive: until every expected delivery is in, or 3 s.
    let drain_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_end
        && shared.delivered.load(Ordering::Relaxed) < shared.expected.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send_replace(true);

    let mut report = LoadReport {
        window_seconds,
        server_cpu_seconds: cpu0.zip(cpu1).map(|(a, b)| (b.0 + b.1) - (a.0 + a.1)),
        server_system_seconds: cpu0.zip(cpu1).map(|(a, b)| b.1 - a.1),
        loadgen_cpu_seconds: self0.zip(self1).map(|(a, b)| b - a),
        ..LoadReport::default()
    };
    for task in tasks {
        let stats = task.await.context("client task panicked")??;
        report.window_delivered += stats.window_delivered;
        report.latencies_us.extend(stats.latencies_us);
    }
    report.latencies_us.sort_unstable();
    report.sent = shared.sent.load(Ordering::Relaxed);
    report.delivered = shared.delivered.load(Ordering::Relaxed);
    report.expected = shared.expected.load(Ordering::Relaxed);
    Ok(report)
}

/// Connects one client and runs the initial sync (and, for Hocuspocus, the authentication).
async fn connect(target: &Target, room: String, id: u64, peers: u64) -> anyhow::Result<Client> {
    let url = target.url(&room);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), None, true),
    )
    .await
    .with_context(|| format!("connecting to {url}: timed out"))?
    .with_context(|| format!("connecting to {url}"))?;
    let mut options = Options::with_client_id(yrs::ClientID::new(id));
    options.offset_kind = yrs::OffsetKind::Utf16;
    let doc = Doc::with_options(options);
    let text = doc.get_or_insert_text(TEXT);
    let flavor = target.flavor;
    if flavor == Flavor::Hocuspocus {
        // Auth: type 2, sub-type 0 (token), an empty token.
        let mut auth = Vec::new();
        auth.write_var(2u32);
        auth.write_var(0u32);
        auth.write_string("");
        ws.send(WsMessage::binary(frame(flavor, &room, auth)))
            .await?;
    }
    let step1 = protocol::sync_step1(&doc.transact().state_vector());
    ws.send(WsMessage::binary(frame(flavor, &room, step1)))
        .await?;
    let synced = async {
        while let Some(msg) = ws.next().await {
            let WsMessage::Binary(bytes) = msg? else {
                continue;
            };
            for m in parse(flavor, &bytes) {
                match m {
                    Parsed::Step1 => {
                        let step2 = protocol::sync_step2(
                            doc.transact()
                                .encode_state_as_update_v1(&yrs::StateVector::default()),
                        );
                        ws.send(WsMessage::binary(frame(flavor, &room, step2)))
                            .await?;
                    }
                    Parsed::Step2 => return Ok(()),
                    Parsed::Denied => bail!("{url}: permission denied"),
                    Parsed::Update { .. } | Parsed::Other => {}
                }
            }
        }
        bail!("{url}: closed before sync")
    };
    tokio::time::timeout(Duration::from_secs(30), synced)
        .await
        .with_context(|| format!("{url}: no sync step 2 within 30 s"))??;
    Ok(Client {
        ws,
        doc,
        text,
        id,
        room,
        peers,
    })
}

/// What one client measured.
#[derive(Default)]
struct ClientStats {
    window_delivered: u64,
    latencies_us: Vec<u32>,
}

/// Types on schedule and counts what arrives, until `stop`.
async fn drive(
    mut c: Client,
    flavor: Flavor,
    period: Duration,
    s: Schedule,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::default();
    let mut next = s.start + period.mul_f64(fastrand::f64());
    let mut clock = 0u32;
    let mut closed = false;
    loop {
        let typing = next < s.window_end;
        tokio::select! {
            _ = tokio::time::sleep_until(next), if typing && !closed => {
                let update = {
                    let mut txn = c.doc.transact_mut();
                    let len = c.text.len(&txn);
                    let ch = char::from(b'a' + (clock % 26) as u8);
                    c.text.insert(&mut txn, len, ch.encode_utf8(&mut [0; 4]));
                    txn.encode_update_v1()
                };
                shared.sent_at().insert((c.id, clock), Instant::now());
                shared.sent.fetch_add(1, Ordering::Relaxed);
                shared.expected.fetch_add(c.peers, Ordering::Relaxed);
                clock += 1;
                next += period;
                c.ws.send(WsMessage::binary(frame(flavor, &c.room, protocol::update(update)))).await?;
            }
            msg = c.ws.next(), if !closed => {
                let bytes = match msg {
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::warn!(client = c.id, error = %e, "connection failed");
                        closed = true;
                        continue;
                    }
                    None => {
                        tracing::warn!(client = c.id, "server closed the connection");
                        closed = true;
                        continue;
                    }
                };
                let now = Instant::now();
                let ids = parse(flavor, &bytes).into_iter().flat_map(|m| match m {
                    Parsed::Update(ids) => ids,
                    _ => Vec::new(),
                });
                for (client, clock) in ids {
                    if client == c.id {
                        continue;
                    }
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    if now >= s.window_start && now < s.window_end {
                        stats.window_delivered += 1;
                        if let Some(t) = shared.sent_at().get(&(client, clock)) {
                            let us = now.saturating_duration_since(*t).as_micros();
                            stats.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    let _ = c.ws.close(None).await;
    Ok(stats)
}

/// Prefixes a y-protocols message with the document name for Hocuspocus.
fn frame(flavor: Flavor, room: &str, message: Vec<u8>) -> Vec<u8> {
    match flavor {
        Flavor::YWebsocket => message,
        Flavor::Hocuspocus => {
            let mut out = Vec::with_capacity(room.len() + 1 + message.len());
            out.write_string(room);
            out.extend_from_slice(&message);
            out
        }
    }
}

/// The parts of a received message the generator cares about.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Step1,
    Step2,
    /// A sync update carrying these single-character inserts, by `(client, clock)`. Several
    /// when the server merged updates (Hocuspocus batches them).
    Update(Vec<(u64, u32)>),
    Denied,
    Other,
}

/// Reads every message of a frame; stops at the first one it cannot read.
fn parse(flavor: Flavor, frame: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::with_capacity(1);
    let mut c = Cursor::new(frame);
    while c.has_content() {
        match parse_one(flavor, &mut c) {
            Ok(Some(p)) => out.push(p),
            Ok(None) | Err(_) => break,
        }
        // Hocuspocus sends one message per frame, and not every type is self-delimiting.
        if flavor == Flavor::Hocuspocus {
            break;
        }
    }
    out
}

fn parse_one(
    flavor: Flavor,
    c: &mut Cursor<'_>,
) -> Result<Option<Parsed>, yrs::encoding::read::Error> {
    if flavor == Flavor::Hocuspocus {
        let _document: &str = c.read_string()?;
    }
    let tag: u32 = c.read_var()?;
    let parsed = match (flavor, tag) {
        // Hocuspocus answers a sync step 1 with type 4 (sync reply), same body as sync.
        (_, 0) | (Flavor::Hocuspocus, 4) => {
            let sub: u32 = c.read_var()?;
            let body = c.read_buf()?;
            match sub {
                0 => Parsed::Step1,
                1 => Parsed::Step2,
                2 => update_id(body)?,
                _ => Parsed::Other,
            }
        }
        (Flavor::YWebsocket, 1) => {
            c.read_buf()?;
            Parsed::Other
        }
        (Flavor::YWebsocket, 2) => {
            let granted: u32 = c.read_var()?;
            if granted == 0 {
                c.read_string()?;
                Parsed::Denied
            } else {
                Parsed::Other
            }
        }
        (Flavor::YWebsocket, 3) => Parsed::Other,
        (Flavor::Hocuspocus, 2) => {
            let sub: u32 = c.read_var()?;
            return Ok(Some(if sub == 1 {
                Parsed::Denied
            } else {
                Parsed::Other
            }));
        }
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}

/// `(client, clock)` of every inserted unit of a lib0 v1 update. The common case, one struct of
/// one client, is read from the header alone; anything else is decoded.
fn update_id(update: &[u8]) -> Result<Parsed, yrs::encoding::read::Error> {
    let mut c = Cursor::new(update);
    let groups: u32 = c.read_var()?;
    if groups == 0 {
        return Ok(Parsed::Other);
    }
    let structs: u32 = c.read_var()?;
    let client: u64 = c.read_var()?;
    let clock: u32 = c.read_var()?;
    if groups == 1 && structs == 1 {
        return Ok(Parsed::Update(vec![(client, clock)]));
    }
    // Not `state_vector()`: it counts only clients whose blocks start at clock 0.
    let insertions = yrs::Update::decode_v1(update)?.insertions(true);
    let mut ids = Vec::new();
    for (client, ranges) in insertions.iter() {
        for range in ranges.iter() {
            ids.extend(range.clone().map(|clock| (client.get(), clock)));
        }
    }
    Ok(Parsed::Update(ids))
}

/// This process' CPU seconds so far.
fn own_cpu_seconds() -> Option<f64> {
    crate::proc::cpu_seconds(std::process::id())
}

/// A [`Probe`] that knows nothing.
#[cfg(test)]
pub struct NoProbe;

#[cfg(test)]
impl Probe for NoProbe {
    fn cpu_seconds(&self) -> Option<(f64, f64)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::GetString as _;

    #[test]
    fn update_header_is_read() -> anyhow::Result<()> {
        let doc = Doc::with_options(Options::with_client_id(yrs::ClientID::new(77)));
        let text = doc.get_or_insert_text(TEXT);
        for clock in 0..3u32 {
            let update = {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, "x");
                txn.encode_update_v1()
            };
            let framed = frame(Flavor::Hocuspocus, "r-1", protocol::update(update.clone()));
            assert_eq!(
                parse(Flavor::Hocuspocus, &framed),
                vec![Parsed::Update(vec![(77, clock)])]
            );
            let mut two = protocol::update(update.clone());
            two.extend(protocol::update(update));
            assert_eq!(
                parse(Flavor::YWebsocket, &two),
                vec![
                    Parsed::Update(vec![(77, clock)]),
                    Parsed::Update(vec![(77, clock)])
                ]
            );
        }
        assert_eq!(text.get_string(&doc.transact()), "xxx");

        // Hocuspocus merges pending updates of several clients into one message.
        let other = Doc::with_options(Options::with_client_id(yrs::ClientID::new(78)));
        let other_text = other.get_or_insert_text(TEXT);
        let mut parts = vec![doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())];
        // Past clock 0, as a server's batch usually is.
        for i in 0..4 {
            let mut txn = other.transact_mut();
            let len = other_text.len(&txn);
            other_text.insert(&mut txn, len, "y");
            let update = txn.encode_update_v1();
            if i >= 2 {
                parts.push(update);
            }
        }
        let merged = yrs::merge_updates_v1(parts)?;
        let Some(Parsed::Update(mut ids)) = parse(Flavor::YWebsocket, &protocol::update(merged))
            .into_iter()
            .next()
        else {
            anyhow::bail!("merged update not parsed");
        };
        ids.sort_unstable();
        assert_eq!(ids, vec![(77, 0), (77, 1), (77, 2), (78, 2), (78, 3)]);
        Ok(())
    }

    /// 4 clients in one room for ~1 s against an in-process spike-server: every update reaches
    /// the 3 other clients, exactly once.
    #[test]
    fn every_update_reaches_every_other_client() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let server = spike_server::Server::new(spike_server::ServerConfig::new(data.path()))?;
        let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (down_tx, down_rx) = tokio::sync::oneshot::channel::<()>();
        let served = server_rt.spawn(server.serve(listener, async {
            let _ = down_rx.await;
        }));

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let target = Target {
            base: format!("ws://{addr}/rooms"),
            flavor: Flavor::YWebsocket,
        };
        let config = LoadConfig {
            clients: 4,
            rooms: 1,
            rate: 10.0,
            warmup: Duration::from_millis(200),
            seconds: Duration::from_millis(800),
            room_prefix: "loadgen-test".into(),
        };
        let report = rt.block_on(run(&target, &config, &NoProbe))?;
        let _ = down_tx.send(());
        let _ = server_rt.block_on(served);

        // ~10 per client per second for ~1 s.
        assert!(report.sent >= 4 * 8, "sent only {}", report.sent);
        assert_eq!(report.expected, report.sent * 3);
        assert_eq!(report.delivered, report.expected);
        assert!(report.window_delivered > 0);
        assert_eq!(report.latencies_us.len() as u64, report.window_delivered);
        Ok(())
    }
}
