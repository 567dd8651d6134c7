//! One room actor: a thread that owns a room's document, awareness and SQLite log.
//!
//! It runs on its own thread because every persisted batch waits for an fsync; connections talk
//! to it over a bounded tokio channel, so a flooding client waits instead of growing memory.
//! Messages are handled in batches: everything queued is applied, the batch's updates are
//! committed in one SQLite transaction, and only then are broadcasts and replies sent. A reply to
//! sync step 1 therefore always follows the persistence of every update that came before it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spike_collab::yrs::sync::{Awareness, Message, SyncMessage};
use spike_collab::yrs::ClientID;
use spike_collab::{bounds, protocol, CollabError, RoomDoc, UpdateLog};
use tokio::sync::{mpsc, oneshot};

use crate::limits::{self, LimitKind};
use crate::Inner;

/// A template new rooms can be seeded from.
#[derive(Debug, Clone)]
pub struct Template {
    /// Name used in `?template=<name>`.
    pub name: String,
    /// `(path, text)` of each file.
    pub files: Vec<(String, String)>,
    /// `meta` entries.
    pub meta: Vec<(String, String)>,
}

impl Template {
    /// The example project (`spike_templates::example`) as `example`.
    pub fn example() -> Self {
        Self {
            name: "example".into(),
            files: spike_templates::example::FILES
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect(),
            meta: spike_templates::example::META
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// The client id of seed content. A room is seeded at most once, so its ids never clash.
const SEED_CLIENT: u64 = 0x5EED;
const SEEDED_KEY: &str = "seeded";
/// The permission-denied reason sent to a `view` connection that writes.
pub(crate) const READ_ONLY_REASON: &str = "read-only: this link can view the room but not edit it";

pub(crate) type ConnId = u64;

/// The most awareness client ids one connection may publish (a Yjs client has one per
/// document; a client that changes its id keeps the old one until it leaves).
pub(crate) const MAX_AWARENESS_CLIENTS_PER_CONN: usize = 8;

/// What a room sends to a connection's writer.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A binary frame; shared, not copied, between the connections it is broadcast to.
    Frame(Bytes),
    Close(u16, String),
}

/// A connection's send queue as the room sees it: bounded in frames by its channel and in
/// bytes by `queued`, which the room raises when it queues a frame and the connection's writer
/// lowers once the frame is written to the socket.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub(crate) tx: mpsc::Sender<Outgoing>,
    pub(crate) queued: Arc<AtomicUsize>,
    /// Set when the room drops this connection: its writer may be stuck writing to a client
    /// that does not read, which no queued message can interrupt.
    pub(crate) dropped: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Why [`Outbox::frame`] did not queue a frame.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The queue holds its limit of frames or bytes: the client is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

impl Outbox {
    pub(crate) fn new(tx: mpsc::Sender<Outgoing>) -> Self {
        Self {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Queues `frame` unless the queue already holds `max_bytes` or more with it (an empty
    /// queue takes any frame, so a reply larger than the limit still goes out).
    fn frame(&self, frame: &Bytes, max_bytes: usize) -> Result<(), Refused> {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + frame.len() > max_bytes {
            return Err(Refused::Full);
        }
        match self.tx.try_send(Outgoing::Frame(frame.clone())) {
            Ok(()) => {
                self.queued.fetch_add(frame.len(), Ordering::AcqRel);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Closed),
        }
    }

    fn close(&self, code: u16, reason: String) {
        let _ = self.tx.try_send(Outgoing::Close(code, reason));
    }
}

pub(crate) enum RoomMsg {
    Join {
        conn: ConnId,
        template: Option<String>,
        /// A `view` connection: its document updates are dropped.
        read_only: bool,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Frame {
        conn: ConnId,
        data: Vec<u8>,
        /// When the connection read it (for `spike_fanout_seconds`).
        received: Instant,
    },
    /// A message the connection rejected before the room saw it (a text frame).
    Bad {
        conn: ConnId,
        reason: String,
    },
    Leave {
        conn: ConnId,
    },
    Tick,
    Shutdown,
}

#[derive(Clone)]
pub(crate) struct RoomHandle {
    pub(crate) tx: mpsc::Sender<RoomMsg>,
    /// Tells actors of the same room apart (one may be unloading while the next loads).
    id: u64,
}

struct Conn {
    outbox: Outbox,
    /// The awareness client ids this connection introduced: the only ones it may publish.
    awareness_clients: HashSet<ClientID>,
    bad: u32,
    read_only: bool,
}

struct Room {
    id: u64,
    name: String,
    inner: Arc<Inner>,
    doc: RoomDoc,
    awareness: Awareness,
    log: UpdateLog,
    conns: HashMap<ConnId, Conn>,
    /// Which connection owns each awareness client id (see [`Conn::awareness_clients`]).
    awareness_owners: HashMap<ClientID, ConnId>,
    /// What the log stores, bytes (checked against `Limits::max_room_bytes`).
    stored_bytes: u64,
    pending: Pending,
    empty_since: Option<Instant>,
}

/// The name of room `room`'s file in `<data>/rooms`. Room names are case-sensitive, but the
/// file systems of macOS and Windows are not: `Team` and `team` would share one file. So each
/// capital letter `X` is written `^x` (`^` is not allowed in room names): `Team` is
/// `^team.sqlite3`, `team` is `team.sqlite3`.
pub(crate) fn room_file_name(room: &str) -> String {
    let mut name = String::with_capacity(room.len() + 8);
    for c in room.chars() {
        if c.is_ascii_uppercase() {
            name.push('^');
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name.push_str(".sqlite3");
    name
}

/// The path of room `name`'s file. A file written by an earlier server under the plain name
/// (`Team.sqlite3`) is renamed to the case-safe one first, with its WAL.
fn room_file(data_dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf, CollabError> {
    let dir = data_dir.join("rooms");
    let path = dir.join(room_file_name(name));
    let legacy = dir.join(format!("{name}.sqlite3"));
    if path != legacy && !path.exists() && legacy.exists() {
        for suffix in ["", "-wal", "-shm"] {
            let from = std::path::PathBuf::from(format!("{}{suffix}", legacy.display()));
            let to = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if from.exists() {
                std::fs::rename(&from, &to)
                    .map_err(|source| CollabError::LogFile { path: from, source })?;
            }
        }
        tracing::info!(room = name, file = %path.display(), "renamed the room's file to its case-safe name");
    }
    Ok(path)
}

/// Whether room `name` has a file (or is loaded): joining it does not create a room.
pub(crate) fn exists(inner: &Inner, name: &str) -> bool {
    inner.rooms().contains_key(name) || {
        let dir = inner.config.data_dir.join("rooms");
        dir.join(room_file_name(name)).exists() || dir.join(format!("{name}.sqlite3")).exists()
    }
}

/// Updates of a room waiting for a missing dependency: how many bytes, since when.
#[derive(Debug, Default)]
struct Pending {
    bytes: usize,
    since: Option<Instant>,
}

/// Returns the handle of room `name`, starting its actor (which loads the log) if needed.
pub(crate) fn handle(inner: &Arc<Inner>, name: &str) -> Result<RoomHandle, CollabError> {
    let mut rooms = inner.rooms();
    if let Some(h) = rooms.get(name) {
        if !h.tx.is_closed() {
            return Ok(h.clone());
        }
    }
    let path = room_file(&inner.config.data_dir, name)?;
    // A damaged file is moved aside and what survives of it loads (spike_collab::Recovery).
    let mut log = UpdateLog::open(&path)?;
    log.set_compact_after(inner.config.compact_after);
    let mut doc = RoomDoc::new();
    let recovery = match log.load_into(&doc) {
        // yrs failed part-way through a bad update: the log was recovered without it, and a
        // clean document loads what survived.
        Err(CollabError::CorruptLog { .. }) => {
            doc = RoomDoc::new();
            log.load_into(&doc)?
        }
        loaded => loaded?,
    };
    if let Some(r) = &recovery {
        tracing::warn!(
            room = name,
            moved_to = %r.moved_to.display(),
            kind = %r.kind,
            updates_recovered = r.updates_recovered,
            updates_lost = r.updates_lost,
            "room file was damaged: loading what survived, the damaged file is kept aside"
        );
    }
    let stored_bytes = log.stored_bytes()?;
    let has_pending = doc.has_pending();
    let awareness = Awareness::new(doc.doc().clone());
    let (tx, rx) = mpsc::channel(1024);
    let id = inner
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = RoomHandle { tx: tx.clone(), id };
    rooms.insert(name.to_owned(), handle.clone());
    drop(rooms);
    inner.rooms_changed(|n| *n += 1);
    tracing::info!(room = name, files = doc.paths().len(), "room loaded");
    let room = Room {
        id,
        name: name.to_owned(),
        inner: inner.clone(),
        doc,
        awareness,
        log,
        conns: HashMap::new(),
        awareness_owners: HashMap::new(),
        stored_bytes,
        pending: Pending {
            bytes: 0,
            since: has_pending.then(Instant::now),
        },
        empty_since: Some(Instant::now()),
    };
    // Ticks drive the unload grace period and turn the shutdown signal into a message.
    let tick =
        (inner.config.unload_grace / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut shutdown = inner.shutdown.subscribe();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            let stopping = tokio::select! {
                _ = interval.tick() => false,
                _ = shutdown.wait_for(|s| *s) => true,
            };
            if stopping {
                let _ = tx.send(RoomMsg::Shutdown).await;
                return;
            }
            if tx.send(RoomMsg::Tick).await.is_err() {
                return;
            }
        }
    });
    let spawned = std::thread::Builder::new()
        .name(format!("room-{name}"))
        .spawn(move || {
            // The actor's own lines (loading, persisting, unloading) carry the room too.
            let _span = tracing::info_span!(parent: None, "room", room = %room.name).entered();
            room.run(rx)
        });
    if let Err(e) = spawned {
        inner.rooms().remove(name);
        inner.rooms_changed(|n| *n -= 1);
        return Err(CollabError::Apply(format!(
            "could not start the room thread: {e}"
        )));
    }
    Ok(handle)
}

/// What a batch produced, sent after the batch is persisted.
#[derive(Default)]
struct Batch {
    /// Raw updates to persist, in arrival order.
    persist: Vec<Vec<u8>>,
    /// Frames for every connection but `from`; `true` marks a document update.
    broadcast: Vec<(ConnId, Bytes, bool)>,
    /// When each broadcast document update was received.
    received: Vec<Instant>,
    /// Frames for one connection.
    replies: Vec<(ConnId, Bytes)>,
    /// Connections to close after the sends.
    close: Vec<(ConnId, u16, String)>,
    /// The document may be damaged (yrs failed mid-update): after this batch is persisted the
    /// room reloads its document from the log, keeping its connections.
    poisoned: bool,
    /// The document holds something the log does not keep (a refused pending update): reload
    /// it from the log after this batch.
    reload: bool,
}

impl Room {
    fn run(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Batch::default();
            let mut stop = self.handle(first, &mut batch);
            let mut n = 1;
            while !stop && !batch.poisoned && n < 512 {
                match rx.try_recv() {
                    Ok(msg) => stop = self.handle(msg, &mut batch),
                    Err(_) => break,
                }
                n += 1;
            }
            if !self.flush(batch) {
                stop = true;
            }
            if stop || self.should_unload(&mut rx) {
                break;
            }
        }
        self.unload(rx);
    }

    /// Handles one message; `true` stops the room after this batch.
    fn handle(&mut self, msg: RoomMsg, batch: &mut Batch) -> bool {
        match msg {
            RoomMsg::Join {
                conn,
                template,
                read_only,
                outbox,
                reply,
            } => {
                if self.conns.len() >= self.inner.config.limits.max_connections_per_room {
                    let reason = format!("room is full ({} connections)", self.conns.len());
                    limits::refused(LimitKind::RoomConnections, None, &reason);
                    let _ = reply.send(Err(reason));
                    return false;
                }
                if let Some(t) = template {
                    if let Err(e) = self.seed(&t) {
                        tracing::error!(room = %self.name, error = %e, "seeding failed");
                        let _ = reply.send(Err("the room could not be seeded".into()));
                        return true;
                    }
                }
                // Sync step 1 first so the client sends what we lack; then who is here.
                batch
                    .replies
                    .push((conn, protocol::sync_step1(&self.doc.state_vector()).into()));
                if let Ok(update) = self.awareness.update() {
                    if !update.clients.is_empty() {
                        batch
                            .replies
                            .push((conn, protocol::awareness(update).into()));
                    }
                }
                self.conns.insert(
                    conn,
                    Conn {
                        outbox,
                        awareness_clients: HashSet::new(),
                        bad: 0,
                        read_only,
                    },
                );
                self.empty_since = None;
                let _ = reply.send(Ok(()));
                tracing::debug!(room = %self.name, conn, peers = self.conns.len(), "joined");
            }
            RoomMsg::Frame {
                conn,
                data,
                received,
            } => self.frame(conn, &data, received, batch),
            RoomMsg::Bad { conn, reason } => self.bad(conn, &reason, batch),
            RoomMsg::Leave { conn } => self.leave(conn, batch),
            RoomMsg::Tick => self.expire_pending(batch),
            RoomMsg::Shutdown => {
                for id in self.conns.keys() {
                    batch.close.push((*id, 1001, "server shutting down".into()));
                }
                return true;
            }
        }
        false
    }

    fn seed(&mut self, template: &str) -> Result<(), CollabError> {
        if self.log.meta(SEEDED_KEY)?.is_some()
            || !self.doc.paths().is_empty()
            || self.log.tail_len() > 0
            || !self.log.load()?.is_empty()
        {
            return Ok(());
        }
        let Some(t) = self
            .inner
            .config
            .templates
            .iter()
            .find(|t| t.name == template)
        else {
            return Ok(());
        };
        let seed = RoomDoc::with_client_id(SEED_CLIENT);
        let files: Vec<(&str, &str)> = t
            .files
            .iter()
            .map(|(p, s)| (p.as_str(), s.as_str()))
            .collect();
        let meta: Vec<(&str, &str)> = t
            .meta
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let Some(update) = seed.seed(&files, &meta) else {
            return Ok(());
        };
        // The update and the marker commit together: a crash can never seed twice.
        self.log
            .append_with_meta(&update, SEEDED_KEY, template.as_bytes())?;
        self.doc.apply_update(&update)?;
        tracing::info!(room = %self.name, template, files = files.len(), "seeded");
        Ok(())
    }

    fn bad(&mut self, conn: ConnId, reason: &str, batch: &mut Batch) {
        let limit = self.inner.config.limits.max_bad_messages;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.bad += 1;
        tracing::warn!(room = %self.name, conn, strikes = c.bad, %reason, "rejected a message");
        if c.bad >= limit {
            let reason = format!("too many malformed messages (the limit is {limit})");
            limits::refused(LimitKind::BadMessages, None, &reason);
            batch.close.push((conn, 1007, reason));
        }
    }

    fn frame(&mut self, conn: ConnId, data: &[u8], received: Instant, batch: &mut Batch) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let messages = match protocol::decode_frame(data) {
            Ok(m) => m,
            Err(e) => return self.bad(conn, &e.to_string(), batch),
        };
        for message in messages {
            match message {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    batch
                        .replies
                        .push((conn, protocol::sync_step2(self.doc.encode_diff(&sv)).into()));
                }
                Message::Sync(SyncMessage::SyncStep2(update))
                | Message::Sync(SyncMessage::Update(update)) => {
                    if self.conns.get(&conn).is_some_and(|c| c.read_only) {
                        self.read_only_write(conn, &update, batch);
                        continue;
                    }
                    self.update(conn, update, received, batch);
                    if batch.poisoned {
                        return;
                    }
                }
                Message::Awareness(update) => self.awareness(conn, update, batch),
                Message::AwarenessQuery => {
                    if let Ok(u) = self.awareness.update() {
                        batch.replies.push((conn, protocol::awareness(u).into()));
                    }
                }
                Message::Auth(_) | Message::Custom(..) => {}
            }
        }
    }

    /// Applies and relays an awareness update. `decode_frame` has already refused incomplete
    /// updates and states that are not JSON or are too large or deep for stock peers. A
    /// connection may publish only the client ids it introduced itself (the first connection to
    /// publish an id owns it until it leaves), and at most [`MAX_AWARENESS_CLIENTS_PER_CONN`]
    /// of them: an entry under another connection's id would replace that peer's presence in
    /// every client, the victim's own included. Such an update is refused whole.
    fn awareness(
        &mut self,
        conn: ConnId,
        update: spike_collab::yrs::sync::AwarenessUpdate,
        batch: &mut Batch,
    ) {
        let Some(owned) = self.conns.get(&conn).map(|c| c.awareness_clients.len()) else {
            return;
        };
        let mut introduced = Vec::new();
        for client in update.clients.keys() {
            match self.awareness_owners.get(client) {
                Some(owner) if *owner == conn => {}
                Some(_) => {
                    metrics::counter!("spike_awareness_refused_total", "reason" => "not_owner")
                        .increment(1);
                    let reason =
                        format!("awareness: client id {client} belongs to another connection");
                    return self.bad(conn, &reason, batch);
                }
                None => introduced.push(*client),
            }
        }
        if owned + introduced.len() > MAX_AWARENESS_CLIENTS_PER_CONN {
            metrics::counter!("spike_awareness_refused_total", "reason" => "too_many_clients")
                .increment(1);
            let reason = format!(
                "awareness: more than {MAX_AWARENESS_CLIENTS_PER_CONN} client ids from one connection"
            );
            return self.bad(conn, &reason, batch);
        }
        let relay = protocol::awareness(update.clone());
        match self.awareness.apply_update(update) {
            Ok(()) => {
                for client in introduced {
                    self.awareness_owners.insert(client, conn);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.awareness_clients.insert(client);
                    }
                }
                batch.broadcast.push((conn, relay.into(), false));
            }
            Err(e) => self.bad(conn, &format!("awareness: {e}"), batch),
        }
    }

    /// Drops a document update from a `view` connection. One that carries changes is answered
    /// with permission-denied; an empty one (the sync step 2 every client sends after
    /// connecting) is dropped silently, since a client may treat the denial as final. The
    /// update is only measured ([`bounds::check_update_v1`]), never decoded by yrs.
    fn read_only_write(&mut self, conn: ConnId, update: &[u8], batch: &mut Batch) {
        let empty = bounds::check_update_v1(update).is_ok_and(|shape| shape.is_empty());
        if empty {
            return;
        }
        tracing::info!(room = %self.name, conn, bytes = update.len(), "dropped a document update from a view-only connection");
        metrics::counter!("spike_view_writes_dropped_total").increment(1);
        batch
            .replies
            .push((conn, protocol::permission_denied(READ_ONLY_REASON).into()));
    }

    fn update(&mut self, conn: ConnId, update: Vec<u8>, received: Instant, batch: &mut Batch) {
        let quota = self.inner.config.limits.max_room_bytes;
        if self.stored_bytes + update.len() as u64 > quota {
            // Honest clients reach this too: not a strike. The author keeps its update.
            let reason = format!("the room is over its size quota of {quota} bytes");
            tracing::warn!(room = %self.name, conn, stored = self.stored_bytes, bytes = update.len(), "refused an update: {reason}");
            limits::refused(LimitKind::RoomSize, None, &reason);
            batch
                .replies
                .push((conn, protocol::permission_denied(&reason).into()));
            return;
        }
        let max_pending = self.inner.config.limits.max_pending_bytes;
        match self.doc.apply_update_in_order(&update) {
            Ok(Some(integrated)) => {
                metrics::counter!("spike_updates_in_total").increment(1);
                self.stored_bytes += update.len() as u64;
                batch.persist.push(update);
                batch
                    .broadcast
                    .push((conn, protocol::update(integrated).into(), true));
                batch.received.push(received);
                if !self.doc.has_pending() {
                    self.pending = Pending::default();
                }
            }
            Ok(None) => {
                if !self.doc.has_pending() {
                    tracing::debug!(room = %self.name, conn, "update brought nothing new (a duplicate, or only empty items)");
                } else if self.pending.bytes + update.len() > max_pending {
                    // Not kept: the document drops it when it reloads after this batch.
                    let reason = format!(
                        "more than {max_pending} bytes of updates wait for a missing dependency"
                    );
                    tracing::warn!(room = %self.name, conn, "refused an update: {reason}");
                    limits::refused(LimitKind::PendingUpdates, None, &reason);
                    batch.reload = true;
                } else {
                    // Kept (the log is lossless), not broadcast: it joins the document when its
                    // dependency arrives, or is dropped after `pending_ttl`.
                    tracing::warn!(room = %self.name, conn, "update waits for a missing dependency");
                    metrics::counter!("spike_updates_in_total").increment(1);
                    self.pending.bytes += update.len();
                    self.pending.since.get_or_insert_with(Instant::now);
                    self.stored_bytes += update.len() as u64;
                    batch.persist.push(update);
                }
            }
            Err(e @ CollabError::UpdateGap { .. }) => {
                // Not a strike: a client's update can overtake the sync step 2 that carries its
                // earlier history, which then arrives and fills the gap.
                tracing::debug!(room = %self.name, conn, "refused an update: {e}");
                metrics::counter!("spike_update_gaps_total").increment(1);
            }
            Err(e @ (CollabError::MalformedUpdate(_) | CollabError::UpdateOutOfBounds(_))) => {
                self.bad(conn, &format!("update: {e}"), batch);
            }
            Err(e) => {
                tracing::error!(room = %self.name, conn, error = %e, "update failed inside yrs; reloading the room's document");
                batch.close.push((conn, 1007, "update rejected".into()));
                batch.poisoned = true;
            }
        }
    }

    /// Drops updates that have waited for a missing dependency longer than `pending_ttl`, from
    /// the log and the document (after this batch), with a warning and a count.
    fn expire_pending(&mut self, batch: &mut Batch) {
        let ttl = self.inner.config.limits.pending_ttl;
        let due = self
            .pending
            .since
            .is_some_and(|since| since.elapsed() >= ttl);
        if !due || !self.doc.has_pending() {
            return;
        }
        match self.log.compact_discarding_pending(&self.doc) {
            Ok(c) => {
                tracing::warn!(room = %self.name, bytes = self.pending.bytes, "dropped updates that waited for a missing dependency for over {} ms", ttl.as_millis());
                metrics::counter!("spike_pending_expired_total").increment(1);
                self.stored_bytes = c.snapshot_bytes as u64;
                self.pending = Pending::default();
                batch.reload = true;
            }
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "dropping expired pending updates failed")
            }
        }
    }

    fn leave(&mut self, conn: ConnId, batch: &mut Batch) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for id in &c.awareness_clients {
            self.awareness_owners.remove(id);
        }
        let gone: Vec<ClientID> = c
            .awareness_clients
            .into_iter()
            .filter(|id| self.awareness.meta(*id).is_some())
            .collect();
        for id in &gone {
            self.awareness.remove_state(*id);
        }
        if !gone.is_empty() {
            if let Ok(u) = self.awareness.update_with_clients(gone) {
                batch
                    .broadcast
                    .push((conn, protocol::awareness(u).into(), false));
            }
        }
        if self.conns.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        tracing::debug!(room = %self.name, conn, peers = self.conns.len(), "left");
    }

    /// Persists the batch, then sends. `false` when persisting failed (the room must unload:
    /// its memory holds updates the disk does not).
    fn flush(&mut self, batch: Batch) -> bool {
        if !batch.persist.is_empty() {
            let started = Instant::now();
            let appended = self.log.append_all(batch.persist.iter().map(Vec::as_slice));
            metrics::histogram!("spike_persist_seconds").record(started.elapsed().as_secs_f64());
            if let Err(e) = appended {
                tracing::error!(room = %self.name, error = %e, "persisting failed; closing the room");
                for c in self.conns.values() {
                    c.outbox.close(1011, "storage failure".into());
                }
                return false;
            }
            // A document yrs failed on part-way is not read again (not even to compact it): it
            // is replaced below. Applying to or encoding such a document corrupted the heap in
            // a release build (found by the fuzz target); dropping it did not.
            let compacted = if batch.poisoned {
                Ok(None)
            } else {
                self.log.compact_if_due(&self.doc)
            };
            match compacted {
                Ok(Some(c)) => {
                    self.stored_bytes = self.log.stored_bytes().unwrap_or(self.stored_bytes);
                    tracing::debug!(room = %self.name, merged = c.merged, bytes = c.snapshot_bytes, "compacted")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(room = %self.name, error = %e, "compaction failed"),
            }
        }
        // Counted before the frames are queued, so whoever has read a frame finds it counted
        // (a peer could otherwise read it, and someone read /metrics, before the count).
        let recipients = |from: &ConnId| self.conns.keys().filter(|id| *id != from).count() as u64;
        let updates_out: u64 = batch
            .broadcast
            .iter()
            .filter(|(_, _, is_update)| *is_update)
            .map(|(from, _, _)| recipients(from))
            .sum();
        metrics::counter!("spike_updates_out_total").increment(updates_out);
        let fanout = metrics::histogram!("spike_fanout_seconds");
        for received in &batch.received {
            fanout.record(received.elapsed().as_secs_f64());
        }
        let max_bytes = self.inner.config.limits.max_queued_bytes;
        let mut slow = Vec::new();
        for (from, frame, _) in &batch.broadcast {
            for (id, c) in &self.conns {
                if id != from && c.outbox.frame(frame, max_bytes) == Err(Refused::Full) {
                    slow.push(*id);
                }
            }
        }
        for (to, frame) in batch.replies {
            if let Some(c) = self.conns.get(&to) {
                if c.outbox.frame(&frame, max_bytes) == Err(Refused::Full) {
                    slow.push(to);
                }
            }
        }
        for (to, code, reason) in batch.close {
            if let Some(c) = self.conns.get(&to) {
                c.outbox.close(code, reason);
            }
        }
        slow.sort_unstable();
        slow.dedup();
        for id in slow {
            if let Some(c) = self.conns.get(&id) {
                let limits = &self.inner.config.limits;
                let reason = format!(
                    "too slow: its send queue reached the limit of {} frames or {} bytes",
                    limits.max_queued_frames, limits.max_queued_bytes
                );
                tracing::warn!(room = %self.name, conn = id, queued_bytes = c.outbox.queued.load(Ordering::Relaxed), "client too slow; disconnecting");
                limits::refused(LimitKind::SlowClient, None, &reason);
                // The queue is full, and its writer may be stuck on the socket: the connection
                // stops both its halves, which closes the socket.
                c.outbox.close(1013, reason);
                c.outbox.dropped.send_replace(true);
            }
            // Its presence goes with it, as when it leaves.
            let mut gone = Batch::default();
            self.leave(id, &mut gone);
            for (from, frame, _) in gone.broadcast {
                for (other, c) in &self.conns {
                    if *other != from {
                        let _ = c.outbox.frame(&frame, max_bytes);
                    }
                }
            }
        }
        if batch.poisoned || batch.reload {
            return self.reload();
        }
        true
    }

    /// Replaces the document with one loaded from the log (every update that was persisted),
    /// after yrs failed in the middle of applying an update: the connections stay, and so does
    /// everyone's presence. `false` when the log cannot be read (the room must unload).
    fn reload(&mut self) -> bool {
        let doc = RoomDoc::new();
        if let Err(e) = self.log.load_into(&doc) {
            tracing::error!(room = %self.name, error = %e, "reloading the document failed; closing the room");
            return false;
        }
        let mut awareness = Awareness::new(doc.doc().clone());
        if let Ok(states) = self.awareness.update() {
            let _ = awareness.apply_update(states);
        }
        self.doc = doc;
        self.awareness = awareness;
        metrics::counter!("spike_room_reloads_total").increment(1);
        tracing::warn!(room = %self.name, peers = self.conns.len(), "document reloaded from the log");
        true
    }

    fn should_unload(&mut self, rx: &mut mpsc::Receiver<RoomMsg>) -> bool {
        let Some(since) = self.empty_since else {
            return false;
        };
        if since.elapsed() < self.inner.config.unload_grace {
            return false;
        }
        // Leave the registry first, under its lock, so a new joiner starts a fresh actor; then
        // refuse whatever is already queued here (joiners retry).
        let mut rooms = self.inner.rooms();
        if !rx.is_empty() {
            return false;
        }
        rooms.remove(&self.name);
        rx.close();
        true
    }

    fn unload(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        {
            let mut rooms = self.inner.rooms();
            if rooms.get(&self.name).is_some_and(|h| h.id == self.id) {
                rooms.remove(&self.name);
            }
        }
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            // Joins queued before the close get no reply; their connections retry.
            drop(msg);
        }
        for (_, c) in self.conns.drain() {
            c.outbox.close(1001, "room closed".into());
        }
        match self.log.compact_with(&self.doc) {
            Ok(c) => {
                tracing::info!(room = %self.name, merged = c.merged, bytes = c.snapshot_bytes, "room flushed and unloaded")
            }
            Err(e) => tracing::warn!(room = %self.name, error = %e, "compaction at unload failed"),
        }
        self.inner.rooms_changed(|n| *n = n.saturating_sub(1));
    }
}
