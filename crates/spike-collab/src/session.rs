//! A client session: one room, one local replica, one reconnecting WebSocket.
//!
//! The replica always works: edits apply to the local [`RoomDoc`] and are appended to the
//! [`UpdateLog`] (when the session has one) before the call returns, whether or not a server is
//! reachable. A background task keeps a WebSocket to `<server>/<room>` open, speaking
//! y-websocket: on every (re)connection it sends sync step 1 and answers the server's step 1 with
//! step 2, so each side receives exactly what it lacks; then it streams updates both ways.
//! Connection failures are retried with exponential backoff and jitter, forever, until the
//! session is closed.
//!
//! Confirmation: the server answers every sync step 1 with a step 2, in order. After sending
//! local updates the session sends a step 1 "probe"; the answer means the server has processed
//! (and, for Spike's server, durably persisted) everything sent before it, and the state vector
//! the probe carried becomes the confirmed state. [`SessionStatus::unconfirmed`] says whether
//! anything local is not confirmed yet.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::StateVector;

use crate::protocol::{self, Presence};
use crate::{CollabError, RoomDoc, TextEdit, UpdateLog};

/// Connection state, as shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Not connected; waiting to retry, or told to stay offline.
    Offline,
    /// Opening the WebSocket.
    Connecting,
    /// Connected; the sync handshake has not completed.
    Syncing,
    /// Connected and caught up with the server.
    Synced,
}

/// What observers see of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// The connection state.
    pub state: SessionState,
    /// How many times a connection completed the sync handshake.
    pub syncs: u64,
    /// Whether some local change has not been confirmed by the server yet.
    pub unconfirmed: bool,
    /// Set when the server denied access (the session stops reconnecting).
    pub denied: Option<String>,
    /// The last connection error, for diagnostics.
    pub last_error: Option<String>,
}

/// How to open a [`Session`]. Build with [`SessionConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Base URL of the rooms, `ws://host:port/rooms` (the y-websocket `serverUrl`).
    pub server: String,
    /// Room name: 1–128 of `A-Za-z0-9._-`, not starting with `.`.
    pub room: String,
    /// Capability token, sent as the `token` query parameter.
    pub token: Option<String>,
    /// Extra query parameters (e.g. `template=example`).
    pub params: Vec<(String, String)>,
    /// Where the offline update log lives; `None` keeps the replica in memory only.
    pub log_path: Option<PathBuf>,
    /// Compact the log after this many updates.
    pub compact_after: usize,
    /// Fixed client id (tests); random when `None`.
    pub client_id: Option<u64>,
    /// Initial presence published through awareness.
    pub presence: Option<Presence>,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Give up one connection attempt after this long; also how long the server has, once the
    /// WebSocket is open, to send its first message (a y-websocket server opens with its sync
    /// step 1).
    pub connect_timeout: Duration,
    /// A connection on which nothing arrives for this long is dropped and reconnected (the
    /// y-websocket client's `messageReconnectTimeout`, 30 s there too). After a third of it
    /// in silence the session sends a WebSocket ping, which any server must answer (RFC 6455
    /// §5.5.2), so only a dead or wedged connection reaches the limit.
    pub message_timeout: Duration,
    /// Whether to connect at once (`false`: start offline until [`Session::set_online`]).
    pub online: bool,
}

impl SessionConfig {
    /// Defaults: no token, no log, random client id, backoff 100 ms … 5 s, connect timeout
    /// 10 s, message timeout 30 s, online.
    pub fn new(server: impl Into<String>, room: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            room: room.into(),
            token: None,
            params: Vec::new(),
            log_path: None,
            compact_after: crate::DEFAULT_COMPACT_AFTER,
            client_id: None,
            presence: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(30),
            online: true,
        }
    }

    fn url(&self) -> String {
        let mut url = format!("{}/{}", self.server.trim_end_matches('/'), self.room);
        let mut params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(token) = &self.token {
            params.push(("token", token));
        }
        for (i, (k, v)) in params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&percent_encode(k));
            url.push('=');
            url.push_str(&percent_encode(v));
        }
        url
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a room name: 1–128 of `A-Za-z0-9._-`, not starting with `.` (it becomes a file name on
/// the server). Errors: [`CollabError::InvalidRoom`].
pub fn validate_room(room: &str) -> Result<(), CollabError> {
    let ok = !room.is_empty()
        && room.len() <= 128
        && !room.starts_with('.')
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CollabError::InvalidRoom(room.to_owned()))
    }
}

struct Replica {
    doc: RoomDoc,
    awareness: Awareness,
    log: Option<UpdateLog>,
    /// What the server has confirmed (see the module docs).
    confirmed: StateVector,
    /// Count of local changes; deletions do not move the state vector, so confirmation of
    /// "everything so far" is tracked with this counter too.
    local_seq: u64,
    /// The highest `local_seq` the server confirmed.
    confirmed_seq: u64,
}

impl Replica {
    fn unconfirmed(&self) -> bool {
        self.local_seq > self.confirmed_seq
    }

    fn log_update(&mut self, update: &[u8]) -> Result<(), CollabError> {
        if let Some(log) = &mut self.log {
            log.append(update)?;
            if let Some(c) = log.compact_if_due(&self.doc)? {
                tracing::debug!(merged = c.merged, bytes = c.snapshot_bytes, "compacted log");
            }
        }
        Ok(())
    }

    fn confirm(&mut self, sv: &StateVector, seq: u64) {
        self.confirmed_seq = self.confirmed_seq.max(seq);
        for (client, clock) in sv.iter() {
            self.confirmed.set_max(*client, *clock);
        }
        if let Some(log) = &mut self.log {
            if let Err(e) = log.set_meta(CONFIRMED_KEY, &self.confirmed.encode_v1()) {
                tracing::warn!(error = %e, "could not record the confirmed state vector");
            }
        }
    }
}

const CONFIRMED_KEY: &str = "confirmed_sv";

struct Shared {
    replica: Mutex<Replica>,
    status: watch::Sender<SessionStatus>,
    /// Bumped after every change to the document (local or remote).
    changed: watch::Sender<u64>,
    /// Bumped whenever awareness (someone's presence) changes.
    peers: watch::Sender<u64>,
    outbound: mpsc::UnboundedSender<Vec<u8>>,
    online: watch::Sender<bool>,
    closed: watch::Sender<bool>,
}

impl Shared {
    fn replica(&self) -> MutexGuard<'_, Replica> {
        // A panic while holding the lock leaves the replica as consistent as yrs left it; keep
        // serving rather than poisoning every later call.
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, state: SessionState) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            if state == SessionState::Synced && changed {
                s.syncs += 1;
            }
            changed
        });
    }

    fn refresh_unconfirmed(&self, unconfirmed: bool) {
        self.status.send_if_modified(|s| {
            let changed = s.unconfirmed != unconfirmed;
            s.unconfirmed = unconfirmed;
            changed
        });
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// A client of one room. See the module docs. Dropping it stops the connection task.
pub struct Session {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    room: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("room", &self.room)
            .field("status", &*self.shared.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens the replica (from the log when there is one, with no network) and starts the
    /// connection task. Must be called inside a tokio runtime.
    ///
    /// Errors: [`CollabError::InvalidRoom`], [`CollabError::InvalidUrl`], log errors.
    pub fn open(config: SessionConfig) -> Result<Self, CollabError> {
        validate_room(&config.room)?;
        if !(config.server.starts_with("ws://") || config.server.starts_with("wss://")) {
            return Err(CollabError::InvalidUrl(config.server));
        }
        let doc = match config.client_id {
            Some(id) => RoomDoc::with_client_id(id),
            None => RoomDoc::new(),
        };
        let mut confirmed = StateVector::default();
        let mut local_seq = 0;
        let log = match &config.log_path {
            Some(path) => {
                let mut log = UpdateLog::open(path)?;
                log.set_compact_after(config.compact_after);
                log.load_into(&doc)?;
                if let Some(bytes) = log.meta(CONFIRMED_KEY)? {
                    confirmed = StateVector::decode_v1(&bytes).unwrap_or_default();
                }
                // The log may hold changes the server never confirmed (deletions do not even
                // show in state vectors): count the log unconfirmed until the first handshake's
                // probe is answered, unless it was compacted right after a confirmation.
                let ahead = doc
                    .state_vector()
                    .iter()
                    .any(|(c, clock)| *clock > confirmed.get(c));
                if ahead || log.tail_len() > 0 {
                    local_seq = 1;
                }
                Some(log)
            }
            None => None,
        };
        let mut awareness = Awareness::new(doc.doc().clone());
        if let Some(p) = &config.presence {
            awareness
                .set_local_state(p)
                .map_err(|e| CollabError::MalformedMessage(e.to_string()))?;
        }
        let replica = Replica {
            doc,
            awareness,
            log,
            confirmed,
            local_seq,
            confirmed_seq: 0,
        };
        let unconfirmed = replica.unconfirmed();
        let (status, _) = watch::channel(SessionStatus {
            state: SessionState::Offline,
            syncs: 0,
            unconfirmed,
            denied: None,
            last_error: None,
        });
        let (outbound, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            replica: Mutex::new(replica),
            status,
            changed: watch::channel(0).0,
            peers: watch::channel(0).0,
            outbound,
            online: watch::channel(config.online).0,
            closed: watch::channel(false).0,
        });
        let room = config.room.clone();
        let task = tokio::spawn(run(shared.clone(), config, out_rx));
        Ok(Self {
            shared,
            task: Some(task),
            room,
        })
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// This replica's client id.
    pub fn client_id(&self) -> u64 {
        self.shared.replica().doc.client_id()
    }

    /// What the server has confirmed (durably persisted, for Spike's server): a state vector.
    /// A local change with clock `c` by client `id` is confirmed when `confirmed().get(id) > c`.
    pub fn confirmed(&self) -> StateVector {
        self.shared.replica().confirmed.clone()
    }

    /// Diagnostics: local and confirmed counters and state vectors, and the tracked own ids.
    pub fn confirmation_report(&self) -> String {
        let r = self.shared.replica();
        format!(
            "local_seq {} confirmed_seq {} local {:?} confirmed {:?}",
            r.local_seq,
            r.confirmed_seq,
            r.doc.state_vector(),
            r.confirmed,
        )
    }

    /// The local state vector.
    pub fn state_vector(&self) -> StateVector {
        self.shared.replica().doc.state_vector()
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<SessionStatus> {
        self.shared.status.subscribe()
    }

    /// Connects (`true`) or disconnects and stays offline (`false`). Edits keep working offline.
    pub fn set_online(&self, online: bool) {
        self.shared.online.send_replace(online);
    }

    /// Runs `f` on the local document (read it, register observers). Do not mutate through it:
    /// changes made that way are neither logged nor sent.
    pub fn with_doc<R>(&self, f: impl FnOnce(&RoomDoc) -> R) -> R {
        f(&self.shared.replica().doc)
    }

    /// The text of `path`.
    pub fn read(&self, path: &str) -> Option<String> {
        self.with_doc(|d| d.read(path))
    }

    /// Every file, `path → text`.
    pub fn files(&self) -> BTreeMap<String, String> {
        self.with_doc(RoomDoc::files)
    }

    /// See [`RoomDoc::create_file`].
    pub fn create_file(&self, path: &str, text: &str) -> Result<(), CollabError> {
        self.local(|d| d.create_file(path, text))
    }

    /// See [`RoomDoc::delete_file`].
    pub fn delete_file(&self, path: &str) -> Result<(), CollabError> {
        self.local(|d| d.delete_file(path))
    }

    /// See [`RoomDoc::rename_file`].
    pub fn rename_file(&self, from: &str, to: &str) -> Result<(), CollabError> {
        self.local(|d| d.rename_file(from, to))
    }

    /// See [`RoomDoc::edit`].
    pub fn edit(&self, path: &str, edits: &[TextEdit]) -> Result<(), CollabError> {
        self.local(|d| d.edit(path, edits))
    }

    /// See [`RoomDoc::set_meta`].
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), CollabError> {
        self.local(|d| Ok(d.set_meta(key, value)))
    }

    /// Applies an update made by a local editor replica (the UI's Yjs doc), logs and sends it.
    pub fn apply_local_update(&self, update: &[u8]) -> Result<(), CollabError> {
        let mut r = self.shared.replica();
        r.doc.apply_update(update)?;
        r.log_update(update)?;
        r.local_seq += 1;
        let unconfirmed = r.unconfirmed();
        // Queued while the replica is locked: a probe's state vector (taken under the lock)
        // never covers an update that is not in the queue yet.
        let _ = self.shared.outbound.send(protocol::update(update.to_vec()));
        // Published under the lock too, or a confirmation racing in between would be
        // overwritten by this older value.
        self.shared.refresh_unconfirmed(unconfirmed);
        drop(r);
        self.shared.bump();
        Ok(())
    }

    /// Replaces the text of `path` with `new` as the minimal CRDT edits from `expected_old` (the
    /// text the caller read and computed `new` from), if and only if the file still holds exactly
    /// `expected_old`. The check and the edits happen under the replica lock, so no remote update
    /// can land between them; the diff itself is computed before taking the lock. This is the
    /// one way whole-text changes (a format, a file saved on disk, an accepted assistant edit)
    /// reach a room: collaborators' concurrent edits elsewhere in the file and every cursor
    /// survive, and offsets never land on characters they were not computed for.
    ///
    /// Offsets are internal: the edits are [`crate::minimal_edits`] in UTF-16 code units, but
    /// callers pass and get whole texts. Returns whether anything changed (`false` when
    /// `new == expected_old`); a change is logged and sent like any local edit.
    ///
    /// Errors: [`CollabError::NoSuchFile`]; [`CollabError::TextChanged`] when the file no longer
    /// holds `expected_old` (a collaborator's edit landed after the caller's read): nothing is
    /// applied, and the caller re-reads and retries (recompute a format from the current text,
    /// merge, or report); log errors.
    pub fn replace_text(
        &self,
        path: &str,
        expected_old: &str,
        new: &str,
    ) -> Result<bool, CollabError> {
        let edits = crate::diff::minimal_edits(expected_old, new);
        self.local_changed(|d| crate::diff::apply_if_unchanged(d, path, expected_old, &edits))
    }

    /// Runs a local change, logs its update (durably) and queues it for the server.
    fn local(
        &self,
        f: impl FnOnce(&RoomDoc) -> Result<Option<Vec<u8>>, CollabError>,
    ) -> Result<(), CollabError> {
        self.local_changed(f).map(|_| ())
    }

    /// [`Session::local`], returning whether `f` changed anything.
    fn local_changed(
        &self,
        f: impl FnOnce(&RoomDoc) -> Result<Option<Vec<u8>>, CollabError>,
    ) -> Result<bool, CollabError> {
        let mut r = self.shared.replica();
        let Some(update) = f(&r.doc)? else {
            return Ok(false);
        };
        r.log_update(&update)?;
        r.local_seq += 1;
        let unconfirmed = r.unconfirmed();
        // Queued under the replica lock (see `apply_local_update`). Offline, the queue is
        // dropped at the next connection: the handshake's state-vector exchange sends it instead.
        let _ = self.shared.outbound.send(protocol::update(update));
        self.shared.refresh_unconfirmed(unconfirmed);
        drop(r);
        self.shared.bump();
        Ok(true)
    }

    /// Publishes this peer's presence.
    pub fn set_presence(&self, presence: &Presence) -> Result<(), CollabError> {
        let mut r = self.shared.replica();
        r.awareness
            .set_local_state(presence)
            .map_err(|e| CollabError::MalformedMessage(e.to_string()))?;
        let own = r.awareness.client_id();
        let update = r.awareness.update_with_clients([own]);
        drop(r);
        if let Ok(update) = update {
            let _ = self.shared.outbound.send(protocol::awareness(update));
        }
        Ok(())
    }

    /// Every other peer's presence, by client id.
    pub fn peers(&self) -> BTreeMap<u64, Presence> {
        protocol::peers(&self.shared.replica().awareness)
    }

    /// A counter bumped whenever a peer's presence arrives or is cleared: wait on it with
    /// `changed()`, then read [`Session::peers`]. Replaces polling.
    pub fn subscribe_peers(&self) -> watch::Receiver<u64> {
        self.shared.peers.subscribe()
    }

    /// Waits until `pred` holds for the status. Errors: [`CollabError::Timeout`].
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: &'static str,
        pred: impl Fn(&SessionStatus) -> bool,
    ) -> Result<SessionStatus, CollabError> {
        let mut rx = self.shared.status.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Ok(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(CollabError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CollabError::Timeout(timeout, what))?
    }

    /// Waits until connected, synced and with nothing unconfirmed.
    pub async fn wait_confirmed(&self, timeout: Duration) -> Result<(), CollabError> {
        self.wait_status(timeout, "synced with everything confirmed", |s| {
            s.state == SessionState::Synced && !s.unconfirmed
        })
        .await
        .map(|_| ())
    }

    /// Waits until `pred` holds for the document (checked after every change).
    pub async fn wait_doc(
        &self,
        timeout: Duration,
        what: &'static str,
        pred: impl Fn(&RoomDoc) -> bool,
    ) -> Result<(), CollabError> {
        let mut rx = self.shared.changed.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                // A clone shares the document; `pred` runs without the replica lock, so it may
                // call back into the session.
                let doc = self.with_doc(RoomDoc::clone);
                if pred(&doc) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(CollabError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CollabError::Timeout(timeout, what))?
    }

    /// Says goodbye (clears this peer's awareness), closes the socket and stops the task.
    pub async fn close(mut self) {
        self.shared.closed.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.closed.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

enum Exit {
    Closed,
    WentOffline,
    Lost(String),
    Denied(String),
}

async fn run(
    shared: Arc<Shared>,
    config: SessionConfig,
    mut out_rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let url = config.url();
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let mut online = shared.online.subscribe();
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow_and_update() {
            return;
        }
        if !*online.borrow_and_update() {
            shared.set_state(SessionState::Offline);
            tokio::select! {
                _ = online.changed() => continue,
                _ = closed.changed() => return,
            }
        }
        shared.set_state(SessionState::Connecting);
        let attempt = tokio::time::timeout(
            config.connect_timeout,
            tokio_tungstenite::connect_async(url.as_str()),
        );
        let result = tokio::select! {
            r = attempt => r,
            _ = closed.changed() => return,
        };
        let exit = match result {
            Ok(Ok((ws, _response))) => {
                let syncs_before = shared.status.borrow().syncs;
                let timing = Timing {
                    handshake: config.connect_timeout,
                    silence: config.message_timeout,
                };
                let exit =
                    connection(&shared, ws, timing, &mut out_rx, &mut online, &mut closed).await;
                if shared.status.borrow().syncs > syncs_before {
                    backoff = new_backoff();
                }
                exit
            }
            Ok(Err(e)) => Exit::Lost(format!("connect: {e}")),
            Err(_) => Exit::Lost("connect: timed out".into()),
        };
        shared.set_state(SessionState::Offline);
        match exit {
            Exit::Closed => return,
            Exit::WentOffline => continue,
            Exit::Denied(reason) => {
                tracing::warn!(room = %config.room, %reason, "permission denied; not reconnecting");
                shared.status.send_modify(|s| s.denied = Some(reason));
                let _ = closed.changed().await;
                return;
            }
            Exit::Lost(reason) => {
                tracing::debug!(room = %config.room, %reason, "connection lost");
                shared.status.send_modify(|s| s.last_error = Some(reason));
            }
        }
        let delay = backoff.next().unwrap_or(config.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = online.changed() => {}
            _ = closed.changed() => return,
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a connection may stay without an answer to the handshake, or without any frame.
#[derive(Clone, Copy)]
struct Timing {
    handshake: Duration,
    silence: Duration,
}

async fn connection(
    shared: &Shared,
    ws: Ws,
    timing: Timing,
    out_rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    online: &mut watch::Receiver<bool>,
    closed: &mut watch::Receiver<bool>,
) -> Exit {
    shared.set_state(SessionState::Syncing);
    let (mut sink, mut stream) = ws.split();
    // Whatever was queued while offline reaches the server through the handshake instead.
    while out_rx.try_recv().is_ok() {}
    // Each entry answers one sync step 1 we sent: the state vector to confirm, or `None` for the
    // opening step 1 (the server answers it before it has our step 2).
    let mut probes: VecDeque<Option<(StateVector, u64)>> = VecDeque::new();
    let mut need_probe = false;
    // Until our sync step 2 is out, local updates are not sent one by one: the step 2 carries
    // them, and an update that reached the server before the changes it depends on would wait
    // there as a pending update.
    let mut step2_sent = false;
    let opening = {
        let r = shared.replica();
        let mut frames = vec![protocol::sync_step1(&r.doc.state_vector())];
        if r.awareness.local_state_raw().is_some() {
            if let Ok(u) = r.awareness.update_with_clients([r.awareness.client_id()]) {
                frames.push(protocol::awareness(u));
            }
        }
        frames
    };
    probes.push_back(None);
    for frame in opening {
        if let Err(e) = sink.send(WsMessage::binary(frame)).await {
            return Exit::Lost(format!("send: {e}"));
        }
    }
    // A server that upgrades the socket and then says nothing (one wedged mid-shutdown, a proxy
    // holding a dead upstream) would leave the session `Syncing` for good. Its first frame
    // (a y-websocket server opens with its sync step 1) must come within the connect timeout,
    // and its answer to our sync step 1 within the message timeout (pings do not count);
    // after that, a silent connection gets a ping and then is dropped. Only whole messages
    // count, so a very large one on a slow link must arrive within the message timeout.
    let opened = tokio::time::Instant::now();
    let mut heard = opened;
    let mut heard_any = false;
    let mut pinged = false;
    loop {
        let quiet = heard
            + if pinged {
                timing.silence
            } else {
                timing.silence / 3
            };
        let synced = shared.status.borrow().state == SessionState::Synced;
        let mut wake = quiet;
        if !heard_any {
            wake = wake.min(opened + timing.handshake);
        }
        if !synced {
            wake = wake.min(opened + timing.silence);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if !heard_any && now >= opened + timing.handshake {
                    return Exit::Lost(format!(
                        "the server sent nothing within {} ms of opening the connection",
                        timing.handshake.as_millis()
                    ));
                }
                if !synced && now >= opened + timing.silence {
                    return Exit::Lost(format!(
                        "the server did not answer the sync handshake within {} ms",
                        timing.silence.as_millis()
                    ));
                }
                if now >= heard + timing.silence {
                    return Exit::Lost(format!(
                        "nothing received for {} ms (the message timeout)",
                        timing.silence.as_millis()
                    ));
                }
                if !pinged && now >= heard + timing.silence / 3 {
                    pinged = true;
                    if let Err(e) = sink.send(WsMessage::Ping(Default::default())).await {
                        return Exit::Lost(format!("send: {e}"));
                    }
                }
            }
            incoming = stream.next() => {
                heard = tokio::time::Instant::now();
                heard_any = true;
                pinged = false;
                let frame = match incoming {
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Close(c))) => {
                        return Exit::Lost(format!("server closed: {c:?}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Exit::Lost(format!("receive: {e}")),
                    None => return Exit::Lost("server closed the socket".into()),
                };
                let messages = match protocol::decode_frame(&frame) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a malformed frame from the server");
                        continue;
                    }
                };
                let mut replies = Vec::new();
                for message in messages {
                    if matches!(message, Message::Sync(SyncMessage::SyncStep1(_))) {
                        step2_sent = true;
                    }
                    match handle(shared, message, &mut probes, &mut need_probe, &mut replies) {
                        Ok(()) => {}
                        Err(CollabError::PermissionDenied(reason)) => {
                            let _ = sink.send(WsMessage::Close(None)).await;
                            return Exit::Denied(reason);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not apply a server message"),
                    }
                }
                if need_probe && probes.is_empty() {
                    need_probe = false;
                    // The probe claims everything in the replica: send what is queued first.
                    let snapshot = drain_with_snapshot(shared, out_rx, &mut replies);
                    replies.push(probe(snapshot, &mut probes));
                }
                for frame in replies {
                    if let Err(e) = sink.send(WsMessage::binary(frame)).await {
                        return Exit::Lost(format!("send: {e}"));
                    }
                }
            }
            out = out_rx.recv() => {
                let Some(first) = out else { return Exit::Closed };
                let mut frames = vec![first];
                let snapshot = drain_with_snapshot(shared, out_rx, &mut frames);
                if !step2_sent {
                    // Keep awareness (tag 1); the step 2 will carry the document updates.
                    frames.retain(|f| f.first() == Some(&1));
                    for frame in frames {
                        if let Err(e) = sink.send(WsMessage::binary(frame)).await {
                            return Exit::Lost(format!("send: {e}"));
                        }
                    }
                    continue;
                }
                if probes.is_empty() {
                    frames.push(probe(snapshot, &mut probes));
                } else {
                    need_probe = true;
                }
                for frame in frames {
                    if let Err(e) = sink.feed(WsMessage::binary(frame)).await {
                        return Exit::Lost(format!("send: {e}"));
                    }
                }
                if let Err(e) = sink.flush().await {
                    return Exit::Lost(format!("send: {e}"));
                }
            }
            _ = online.changed() => {
                if !*online.borrow_and_update() {
                    goodbye(shared, &mut sink).await;
                    return Exit::WentOffline;
                }
            }
            _ = closed.changed() => {
                // Send what is queued before saying goodbye.
                while let Ok(frame) = out_rx.try_recv() {
                    let _ = sink.feed(WsMessage::binary(frame)).await;
                }
                goodbye(shared, &mut sink).await;
                return Exit::Closed;
            }
        }
    }
}

/// Moves every queued update into `frames` and returns the replica's state vector and local
/// sequence number, for a probe that claims exactly those updates. Both happen under the
/// replica lock, which local changes hold while they queue their update, so no update can be
/// queued between the two: one that were would be sent without being claimed, and with no later
/// change to trigger another probe it would stay unconfirmed.
fn drain_with_snapshot(
    shared: &Shared,
    out_rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    frames: &mut Vec<Vec<u8>>,
) -> (StateVector, u64) {
    let r = shared.replica();
    while let Ok(frame) = out_rx.try_recv() {
        frames.push(frame);
    }
    (r.doc.state_vector(), r.local_seq)
}

/// A sync step 1 that confirms `snapshot` once answered. Everything the snapshot covers must have
/// been sent before it on this connection.
fn probe(
    (sv, seq): (StateVector, u64),
    probes: &mut VecDeque<Option<(StateVector, u64)>>,
) -> Vec<u8> {
    let frame = protocol::sync_step1(&sv);
    tracing::debug!(seq, outstanding = probes.len(), "probe");
    probes.push_back(Some((sv, seq)));
    frame
}

async fn goodbye(shared: &Shared, sink: &mut futures_util::stream::SplitSink<Ws, WsMessage>) {
    let frame = {
        let mut r = shared.replica();
        let own = r.awareness.client_id();
        let had_state = r.awareness.local_state_raw();
        // Send a "gone" state for this client, then restore the local state for the next
        // connection.
        r.awareness.clean_local_state();
        let frame = r
            .awareness
            .update_with_clients([own])
            .ok()
            .map(protocol::awareness);
        if let Some(state) = had_state {
            r.awareness.set_local_state_raw(state);
        }
        frame
    };
    if let Some(frame) = frame {
        let _ = sink.send(WsMessage::binary(frame)).await;
    }
    let _ = sink.send(WsMessage::Close(None)).await;
}

fn handle(
    shared: &Shared,
    message: Message,
    probes: &mut VecDeque<Option<(StateVector, u64)>>,
    need_probe: &mut bool,
    replies: &mut Vec<Vec<u8>>,
) -> Result<(), CollabError> {
    match message {
        Message::Sync(SyncMessage::SyncStep1(sv)) => {
            let diff = shared.replica().doc.encode_diff(&sv);
            replies.push(protocol::sync_step2(diff));
            // Our step 2 may carry offline changes: confirm them with a probe after it.
            *need_probe = true;
        }
        Message::Sync(SyncMessage::SyncStep2(update)) => {
            // The answer counts even if applying fails, or every later probe would be misread.
            let applied = apply_remote(shared, &update);
            let answered = probes.pop_front();
            tracing::debug!(?answered, "sync step 2");
            if let Some(answered) = answered {
                let mut r = shared.replica();
                if let Some((sv, seq)) = answered {
                    r.confirm(&sv, seq);
                }
                let unconfirmed = r.unconfirmed();
                shared.refresh_unconfirmed(unconfirmed);
                drop(r);
            }
            shared.set_state(SessionState::Synced);
            applied.map_err(|e| CollabError::Apply(format!("sync step 2: {e}")))?;
        }
        Message::Sync(SyncMessage::Update(update)) => {
            apply_remote(shared, &update)
                .map_err(|e| CollabError::Apply(format!("update: {e}")))?;
        }
        Message::Awareness(update) => {
            let mut r = shared.replica();
            r.awareness
                .apply_update(update)
                .map_err(|e| CollabError::MalformedMessage(e.to_string()))?;
            drop(r);
            shared.peers.send_modify(|n| *n += 1);
            shared.bump();
        }
        Message::AwarenessQuery => {
            let r = shared.replica();
            if let Ok(u) = r.awareness.update() {
                replies.push(protocol::awareness(u));
            }
        }
        Message::Auth(Some(reason)) => return Err(CollabError::PermissionDenied(reason)),
        Message::Auth(None) | Message::Custom(..) => {}
    }
    Ok(())
}

fn apply_remote(shared: &Shared, update: &[u8]) -> Result<(), CollabError> {
    let mut r = shared.replica();
    if r.doc.apply_update(update)?.is_some() || r.doc.has_pending() {
        r.log_update(update)?;
        drop(r);
        shared.bump();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_room_names() {
        let mut c = SessionConfig::new("ws://127.0.0.1:1/rooms/", "r-1");
        c.token = Some("a b&c".into());
        c.params.push(("template".into(), "example".into()));
        assert_eq!(
            c.url(),
            "ws://127.0.0.1:1/rooms/r-1?template=example&token=a%20b%26c"
        );
        assert!(validate_room("My_room.v2").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_room(bad).is_err(), "{bad}");
        }
    }
}
