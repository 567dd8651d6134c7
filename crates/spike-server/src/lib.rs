//! The Spike room server as a library: axum WebSocket rooms persisted in SQLite.
//!
//! - `GET /rooms/<room>` upgrades to a WebSocket that speaks y-websocket (y-protocols sync,
//!   awareness, auth), so a stock `y-websocket` client with `serverUrl = ws://host:port/rooms`
//!   joins room `<room>`. Query parameters: `template=<name>` seeds a room that has never held
//!   anything from a template (the example project is `example`), exactly once.
//! - `GET /healthz` answers `ok`.
//! - `POST /v1/reports` stores an error report ([`reports`]; `spike reports` lists them).
//! - `GET /metrics` answers Prometheus text ([`observe`] lists the metrics). The recorder is
//!   process-wide: every server in one process reports into the same counters.
//!
//! Access ([`Access`]): in [`Access::Open`] mode (the default, meant for loopback: see
//! [`ServerConfig::check_listen`]) anyone who reaches the server edits every room. With
//! [`Access::Tokens`] every upgrade needs a token signed by the server ([`auth`]): `token=<JWT>`
//! in the query (or `Authorization: Bearer <JWT>`). A refused upgrade gets 401 (missing,
//! malformed, forged, expired) or 403 (another room) with the reason as its body; it is logged
//! without the token and counted in `spike_auth_refusals_total{reason}` (the `metrics` facade).
//! A `view` connection receives everything and may publish awareness, but its document updates
//! are dropped and answered with the y-protocols permission-denied auth message.
//!
//! Blobs and KV entries ([`store_api`]): `PUT /v1/blobs`, `GET|HEAD /v1/blobs/<hash>`,
//! `GET|HEAD|PUT|DELETE /v1/kv/<namespace>/<key…>` and `GET /v1/kv/<namespace>?prefix=`, over
//! [`ServerConfig::store`] (by default an object store in `<data>/objects`), behind the same
//! tokens as rooms.
//!
//! AI proxy ([`ai_proxy`]): `POST /v1/ai/chat` (and `POST /v1/ai/v1/chat/completions`, so an
//! OpenAI client with base URL `http://host:port/v1/ai` works unchanged) speaks OpenAI's Chat
//! Completions format, streamed or not, and answers through the provider in
//! [`ServerConfig::ai`] with the server's own key, behind per-caller quotas, retries, a circuit
//! breaker and a response cache (`<data>/ai-cache.sqlite`). It takes an `edit` room token as
//! the caller's API key (a `view` token gets 403) and never forwards it. Without an AI
//! configuration it answers 404.
//!
//! Each open room is one actor (a thread owning the yrs document, the awareness and the room's
//! SQLite log, `<data>/rooms/<room>.sqlite3`, capitals written `^` + the letter). It loads the
//! log before it answers any message,
//! persists every update (WAL, `synchronous = NORMAL`: durable against a process crash) before broadcasting it or answering a later
//! sync step 1 (which is how clients learn it is durable), relays awareness, compacts its log,
//! and unloads after the last client left and a grace period passed.
//!
//! Hostile input: frames over [`Limits::max_frame_bytes`] close the connection (1009). Every
//! update, state vector and awareness state is checked before yrs decodes it
//! ([`spike_collab::bounds`]: nesting, declared counts, clocks, client ids, repeated client
//! sections) and a room applies updates in each client's order
//! ([`spike_collab::RoomDoc::apply_update_in_order`]); a `view` connection's update is only
//! measured, never decoded. A frame or update that fails, or an awareness update that is cut
//! short, carries a state that is not JSON or passes the presence bounds, or names a client id
//! another connection introduced, is dropped whole with a logged reason (never applied, stored
//! or relayed) and counted, and a connection that sends [`Limits::max_bad_messages`] of them is
//! closed (1007). Neither the room nor its other clients notice; if yrs still fails part-way
//! through an update, the room reloads its document from its log and keeps its connections.
//! A damaged room file is moved aside and what survives of it loads ([`spike_collab::Recovery`]).
//!
//! Abuse limits ([`Limits`], [`LimitKind`]): per client address (an IPv6 address by its /64,
//! [`listen::peer_key`]) and per token, governor rate limits on new connections (HTTP 429 with
//! `Retry-After`), on messages and on bytes received (close 1008); open connections per address
//! and per token (429) and per room (1013); TCP connections below the open-file limit, with a
//! share kept for WebSockets ([`listen`]); request bodies (413); every HTTP request head timed
//! (a connection that does not send one in time is dropped, kept-alive ones included); bytes
//! queued for a client that does not read (1013); the idle timeout; a room's stored bytes and
//! its updates waiting for a missing dependency (refused, the connection stays); rooms a prefix
//! token may create (403). Every refusal names its limit, is logged, and is
//! counted in `spike_limit_refusals_total{kind}`. There is no limit on messages pending
//! authentication because none can be pending: the token is checked on the HTTP upgrade, before
//! the WebSocket exists, and a y-protocols auth message on an open connection authorises
//! nothing (it is ignored); until a connection has joined its room the server does not read
//! from it, so what a client sends early waits in its own TCP window, not in server memory.
//!
//! Logs: `tracing`, with a `conn` span on every connection (`room`, `conn`, `peer`, `role`), an
//! `http` span on every request (`request`, `method`, `path`; never the query, which may hold a
//! token) and a `room` span on each room actor. Alerts: [`ServerConfig::alerts`] evaluates
//! threshold rules on the metrics and POSTs what fires to a webhook ([`alerts`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), spike_server::ServerError> {
//! let server = spike_server::Server::new(spike_server::ServerConfig::new("data"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! server.serve(listener, spike_server::shutdown_signal()).await
//! # }
//! ```

pub mod ai_proxy;
pub mod alerts;
pub mod auth;
pub mod cli;
mod conn;
mod limits;
pub mod listen;
pub mod observe;
pub mod reports;
mod room;
pub mod store_api;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::get;
use tokio::sync::watch;

pub use limits::{LimitKind, Rate};
pub use room::Template;

/// Everything that can go wrong running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding, accepting or creating the data folder failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A room's log failed.
    #[error(transparent)]
    Collab(#[from] spike_collab::CollabError),
    /// Open mode (no tokens) on an address other machines can reach.
    #[error(
        "refusing to serve {0} in open mode: anyone who can reach it could read and edit every room. \
         Give a secret (--secret-file FILE or SPIKE_SECRET) so that rooms need tokens, \
         or listen on a loopback address such as 127.0.0.1"
    )]
    OpenOnNetwork(SocketAddr),
    /// The secret could not be read or generated.
    #[error(transparent)]
    Secret(#[from] auth::SecretError),
    /// The blob/KV backing store could not be opened.
    #[error(transparent)]
    Store(#[from] spike_store::ObjectUrlError),
    /// The AI proxy's provider could not be set up (no key, a bad URL) or its cache opened.
    #[error("AI proxy: {0}")]
    Ai(#[from] spike_ai::AiError),
}

/// Who may join rooms.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// No tokens: everyone who reaches the server may edit every room. For loopback only
    /// (the desktop app's embedded server); see [`ServerConfig::check_listen`].
    #[default]
    Open,
    /// Every connection needs a token signed with this key ([`auth::TokenKey::verify`]).
    Tokens(auth::TokenKey),
}

impl Access {
    /// The access mode of a server face (`spike serve`, `spike-server`) listening on `listen`
    /// with data in `data_dir`, and a line saying where it came from. In order: `open` asks
    /// for [`Access::Open`] (refused with [`ServerError::OpenOnNetwork`] off loopback); a
    /// `secret_file`, or else an `env_secret` (`SPIKE_SECRET`), gives tokens; else an existing
    /// `<data_dir>/secret` does; else loopback stays open; else a secret is generated into
    /// `<data_dir>/secret` (mode 0600) and reused on later starts.
    pub fn choose(
        listen: SocketAddr,
        data_dir: &std::path::Path,
        secret_file: Option<&std::path::Path>,
        env_secret: Option<&str>,
        open: bool,
    ) -> Result<(Self, String), ServerError> {
        let tokens = |secret: &auth::Secret| Access::Tokens(auth::TokenKey::new(secret));
        if open {
            if !listen.ip().is_loopback() {
                return Err(ServerError::OpenOnNetwork(listen));
            }
            return Ok((Access::Open, "open mode: no tokens (loopback only)".into()));
        }
        if let Some(path) = secret_file {
            let secret = auth::Secret::from_file(path)?;
            let how = format!("tokens required (secret from {})", path.display());
            return Ok((tokens(&secret), how));
        }
        if let Some(value) = env_secret.filter(|v| !v.trim().is_empty()) {
            let secret = auth::Secret::new(value.trim().as_bytes())?;
            return Ok((
                tokens(&secret),
                "tokens required (secret from SPIKE_SECRET)".into(),
            ));
        }
        if !auth::Secret::exists_in(data_dir) && listen.ip().is_loopback() {
            return Ok((Access::Open, "open mode: no tokens (loopback only)".into()));
        }
        let (secret, generated) = auth::Secret::load_or_generate(data_dir)?;
        let path = data_dir.join(auth::SECRET_FILE);
        let how = if generated {
            format!("tokens required (generated a secret in {})", path.display())
        } else {
            format!("tokens required (secret in {})", path.display())
        };
        Ok((tokens(&secret), how))
    }
}

/// Limits on what one client may send or hold. "Per token" limits apply to connections that
/// presented a verified token ([`Access::Tokens`]), keyed by the token itself (two links are two
/// tokens, even for the same room and name); "per client address" ones to every connection,
/// keyed by the peer's IP address (behind a reverse proxy that is the proxy's: raise them there).
/// A rate that is `None` is not limited. See [`LimitKind`] for how each refusal is answered.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted WebSocket message (and frame), bytes. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Open room connections one client address may hold at once. A y-websocket connection
    /// carries exactly one room, so this bounds the rooms a client can open. Default 4096.
    pub max_rooms_per_peer: usize,
    /// Connections one room accepts. Default 1024.
    pub max_connections_per_room: usize,
    /// A connection that sends nothing (not even a pong) for this long is closed. The server
    /// pings every third of it. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Malformed messages tolerated per connection before it is closed. Default 8.
    pub max_bad_messages: u32,
    /// Frames queued for one slow client before it is disconnected (it resyncs on reconnect).
    /// Default 4096.
    pub max_queued_frames: usize,
    /// Bytes queued for one slow client before it is disconnected, whatever the frame count:
    /// what a room holds for clients that do not read is at most this per connection (an empty
    /// queue takes one frame of any size). Default 16 MiB.
    pub max_queued_bytes: usize,
    /// New WebSocket connections per client address. Checked before the token, so it also
    /// bounds token guessing. Default 200/s, burst 2000 (a load generator opening 1000
    /// connections from one address at once fits).
    pub ip_connection_rate: Option<Rate>,
    /// New WebSocket connections per token. Default 20/s, burst 100.
    pub token_connection_rate: Option<Rate>,
    /// Open connections one token may hold at once. Default 256.
    pub max_connections_per_token: usize,
    /// WebSocket messages received per client address, all its connections together.
    /// Default 20 000/s, burst 40 000.
    pub ip_message_rate: Option<Rate>,
    /// WebSocket messages received per token. Default 5000/s, burst 20 000 (a folder import
    /// by `spike mirror` sends one update per file at once).
    pub token_message_rate: Option<Rate>,
    /// WebSocket payload bytes received per client address. A message larger than the burst
    /// never fits, so keep the burst at least [`Limits::max_frame_bytes`]. Default 64 MiB/s,
    /// burst 128 MiB.
    pub ip_byte_rate: Option<Rate>,
    /// WebSocket payload bytes received per token. Default 16 MiB/s, burst 32 MiB.
    pub token_byte_rate: Option<Rate>,
    /// Largest HTTP request body, bytes: a larger `Content-Length` gets 413 before any handler
    /// runs, and extractors stop reading a body without one there. Default 32 MiB.
    pub max_body_bytes: usize,
    /// A TCP connection must send each whole HTTP request head within this of the server
    /// starting to wait for it (on a kept-alive connection, from the end of the previous
    /// answer), or it is dropped. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Bytes a room may store (its log: snapshot and later updates; deleted text stays in
    /// it). Past this, updates to the room are refused with a permission-denied message naming
    /// the quota, and their authors keep them. Default 128 MiB.
    pub max_room_bytes: u64,
    /// Bytes of updates one room keeps waiting for a missing dependency. Past this, further
    /// such updates are refused (their authors send them again when they resync). Default
    /// 4 MiB.
    pub max_pending_bytes: usize,
    /// How long updates may wait for a missing dependency before the room drops them from its
    /// document and log. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// Rooms one token whose room is a prefix (`team-*`) may create. Counted per server
    /// process. Default 100.
    pub max_rooms_per_token: usize,
    /// Open TCP connections, HTTP and WebSocket together. `None`: the open-file limit (raised
    /// to its hard limit at start) less [`listen::FD_HEADROOM`]. A quarter is kept for
    /// WebSockets: plain HTTP connections get at most the other three quarters.
    pub max_connections: Option<usize>,
    /// Open plain HTTP connections (not yet WebSockets) per client address. `None`: a quarter
    /// of the HTTP share of [`Limits::max_connections`].
    pub max_http_connections_per_peer: Option<usize>,
    /// Error reports ([`reports`]) per client address. Default 2/s, burst 60.
    pub report_rate: Option<Rate>,
    /// Largest error report body, bytes. Default 64 KiB.
    pub max_report_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            max_rooms_per_peer: 4096,
            max_connections_per_room: 1024,
            idle_timeout: Duration::from_secs(60),
            max_bad_messages: 8,
            max_queued_frames: 4096,
            max_queued_bytes: 16 << 20,
            ip_connection_rate: Some(Rate::new(200, 2000)),
            token_connection_rate: Some(Rate::new(20, 100)),
            max_connections_per_token: 256,
            ip_message_rate: Some(Rate::new(20_000, 40_000)),
            token_message_rate: Some(Rate::new(5_000, 20_000)),
            ip_byte_rate: Some(Rate::new(64 << 20, 128 << 20)),
            token_byte_rate: Some(Rate::new(16 << 20, 32 << 20)),
            max_body_bytes: 32 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_room_bytes: 128 << 20,
            max_pending_bytes: 4 << 20,
            pending_ttl: Duration::from_secs(600),
            max_rooms_per_token: 100,
            max_connections: None,
            max_http_connections_per_peer: None,
            report_rate: Some(Rate::new(2, 60)),
            max_report_bytes: 64 << 10,
        }
    }
}

/// How to run a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where room logs live (`<data_dir>/rooms/<room>.sqlite3`, a capital `X` written `^x`);
    /// created if missing.
    pub data_dir: PathBuf,
    /// Input limits.
    pub limits: Limits,
    /// How long an empty room stays loaded. Default 30 s.
    pub unload_grace: Duration,
    /// Compact a room's log after this many updates. Default 500.
    pub compact_after: usize,
    /// Templates a new room can be seeded from, by name. Default: the example project as
    /// `example`.
    pub templates: Vec<Template>,
    /// Who may join. Default: [`Access::Open`].
    pub access: Access,
    /// The blob/KV API's backing store and size limits. Default: an object store on
    /// `<data_dir>/objects`.
    pub store: store_api::StoreConfig,
    /// Alert rules evaluated while serving ([`alerts`]). Default: none.
    pub alerts: Option<alerts::AlertRules>,
    /// The AI proxy's provider ([`ai_proxy`]). Default: none (its routes answer 404).
    pub ai: Option<ai_proxy::AiConfig>,
}

impl ServerConfig {
    /// Defaults for everything but the data folder.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            limits: Limits::default(),
            unload_grace: Duration::from_secs(30),
            compact_after: spike_collab::DEFAULT_COMPACT_AFTER,
            templates: vec![Template::example()],
            access: Access::Open,
            store: store_api::StoreConfig::default(),
            alerts: None,
            ai: None,
        }
    }

    /// Whether serving on `addr` is safe with this configuration. Errors:
    /// [`ServerError::OpenOnNetwork`] for [`Access::Open`] on an address that is not loopback.
    /// Faces that bind addresses given by people (`spike serve`, `spike-server`) call it before
    /// binding.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ServerError> {
        match self.access {
            Access::Open if !addr.ip().is_loopback() => Err(ServerError::OpenOnNetwork(addr)),
            _ => Ok(()),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    pub(crate) rooms: Mutex<HashMap<String, room::RoomHandle>>,
    pub(crate) peers: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) next_conn: std::sync::atomic::AtomicU64,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Number of live room actors.
    pub(crate) live_rooms: watch::Sender<usize>,
    pub(crate) guards: limits::Guards,
    pub(crate) reports: reports::Store,
    pub(crate) ai: Option<ai_proxy::Proxy>,
    /// Rooms each prefix token created (by the token's keyed hash), for
    /// [`Limits::max_rooms_per_token`].
    pub(crate) room_creations: Mutex<HashMap<u64, std::collections::HashSet<String>>>,
}

impl Inner {
    pub(crate) fn rooms(&self) -> MutexGuard<'_, HashMap<String, room::RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn room_creations(
        &self,
    ) -> MutexGuard<'_, HashMap<u64, std::collections::HashSet<String>>> {
        self.room_creations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn peers(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the live room count and `spike_rooms_open` with it.
    pub(crate) fn rooms_changed(&self, change: impl FnOnce(&mut usize)) {
        self.live_rooms.send_modify(change);
        metrics::gauge!("spike_rooms_open").set(*self.live_rooms.borrow() as f64);
    }
}

/// The room server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    /// Creates the data folder and the blob/KV backing store when none is configured
    /// (`<data>/objects`), and installs the process' Prometheus recorder
    /// ([`observe::install_recorder`]) if it is not yet, and the AI proxy's provider and cache
    /// when [`ServerConfig::ai`] is set. Errors: [`ServerError::Io`], [`ServerError::Store`],
    /// [`ServerError::Ai`].
    pub fn new(mut config: ServerConfig) -> Result<Self, ServerError> {
        std::fs::create_dir_all(config.data_dir.join("rooms"))?;
        config.store = config.store.resolved(&config.data_dir)?;
        observe::install_recorder();
        let ai = config
            .ai
            .as_ref()
            .map(|ai| ai_proxy::Proxy::open(ai, &config.data_dir))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                ai,
                guards: limits::Guards::new(&config.limits),
                reports: reports::Store::default(),
                config,
                rooms: Mutex::default(),
                peers: Mutex::default(),
                room_creations: Mutex::default(),
                next_conn: 1.into(),
                shutdown: watch::channel(false).0,
                live_rooms: watch::channel(0).0,
            }),
        })
    }

    /// The axum router: `/rooms/{room}`, `/healthz`, `/metrics`, the blob/KV API
    /// ([`store_api`]), `POST /v1/reports` and the AI proxy ([`ai_proxy`]), every route behind
    /// the body size limit and in an `http` span.
    pub fn router(&self) -> axum::Router {
        let max_body = self.inner.config.limits.max_body_bytes;
        axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(observe::metrics))
            .route("/rooms/{room}", get(conn::upgrade))
            .merge(store_api::routes())
            .merge(ai_proxy::routes())
            .route("/v1/reports", axum::routing::post(reports::post))
            .layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                limits::body_limit,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(max_body))
            .layer(axum::middleware::from_fn(observe::http_span))
            .with_state(self.inner.clone())
    }

    /// Rooms loaded in memory now.
    pub fn open_rooms(&self) -> usize {
        *self.inner.live_rooms.borrow()
    }

    /// Serves on `listener` until `shutdown` resolves, then closes every connection (1001),
    /// flushes and compacts every room, and returns when all rooms are unloaded (or after 30 s).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let inner = self.inner.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections and flushing rooms");
            inner.shutdown.send_replace(true);
        };
        if let Some(handle) = observe::handle() {
            // Histograms are folded into their buckets at upkeep (also on each render).
            let mut stop = self.inner.shutdown.subscribe();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = every.tick() => handle.run_upkeep(),
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            });
        }
        match (&self.inner.config.alerts, observe::handle()) {
            (Some(rules), Some(handle)) => {
                let stop = self.inner.shutdown.subscribe();
                tokio::spawn(alerts::run(rules.clone(), handle, stop));
            }
            (Some(_), None) => {
                tracing::warn!("alert rules are off: the metrics recorder is not ours")
            }
            (None, _) => {}
        }
        listen::serve(listener, self.router(), self.inner.clone(), signal).await;
        self.inner.shutdown.send_replace(true);
        let mut live = self.inner.live_rooms.subscribe();
        let drained = tokio::time::timeout(Duration::from_secs(30), live.wait_for(|n| *n == 0));
        if drained.await.is_err() {
            tracing::warn!("some rooms did not flush within 30 s");
        }
        tracing::info!("all rooms flushed");
        Ok(())
    }
}

impl Server {
    /// Serves on `listener` in a task of the current tokio runtime (an embedded server, a
    /// test's) until [`Running::stop`], or until the [`Running`] is dropped.
    ///
    /// Errors: [`ServerError::Io`] when the listener has no local address.
    pub fn spawn(self, listener: tokio::net::TcpListener) -> Result<Running, ServerError> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async {
            // A sent signal or a dropped sender: either way, shut down.
            let _ = stopped.await;
        }));
        Ok(Running {
            addr,
            stop: Some(stop),
            task,
        })
    }
}

/// A server started by [`Server::spawn`]. Dropping it shuts the server down without waiting.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its rooms' WebSocket base URL, `ws://<addr>/rooms` (a y-websocket `serverUrl`).
    pub fn rooms_url(&self) -> String {
        format!("ws://{}/rooms", self.addr)
    }

    /// Its HTTP base URL, `http://<addr>` (the blob/KV, reports and AI APIs).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: closes every connection, flushes every room, and waits for that, at most
    /// `timeout`. Errors: the server's own, or [`ServerError::Io`] (`TimedOut`) when it did not
    /// finish in time.
    pub async fn stop(mut self, timeout: Duration) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(Ok(served)) => served,
            Ok(Err(join)) => Err(ServerError::Io(std::io::Error::other(join))),
            Err(_) => Err(ServerError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the server did not stop within {} ms", timeout.as_millis()),
            ))),
        }
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
