//! Spike's desktop app: the Tauri v2 shell around the engine crates.
//!
//! Thin by design: windows, commands, state, IPC and the `preview://` scheme. The room document
//! lives in [`room::Room`] (spike-collab's yrs document and its SQLite update log); the editor
//! UI (`ui/`) holds a Yjs replica and exchanges raw binary updates with it over IPC, exactly like a
//! network peer. The live preview ([`preview`]) runs in its own webview, labelled `preview`, served
//! from `preview://` with a strict CSP and no IPC capability.
//!
//! The embedded default needs no setup and no network: the app starts its own room server
//! (spike-server) in-process on loopback, with its data in the app data directory, and opens the
//! room `example` on it, which the server seeds with the example project. The room is a
//! spike-collab `Session`: edits are logged locally first, so the app works the same offline.
//!
//! Environment (for tests, and for running several instances side by side):
//! - `SPIKE_DATA_DIR`: where the logs and the embedded server's data live, instead of the app
//!   data directory;
//! - `SPIKE_ROOM`: the room to open (default `example`);
//! - `SPIKE_PORT`: the embedded server's port (default 8717). When the port is taken, the app
//!   assumes another Spike serves it and joins that server instead;
//! - `SPIKE_SERVER`: join this room server (`ws://host:port/rooms`) instead of starting one;
//! - `SPIKE_LISTEN`: the address the embedded server binds (default `127.0.0.1`; `0.0.0.0` lets
//!   people on the local network join, and share links then carry this machine's address);
//! - `SPIKE_NAME`: the display name when the settings have none.
//!
//! "Folder…" ([`Shell::start_mirror`], [`Shell::open_folder`]) keeps the open room in sync with a
//! folder through spike-mirror, editing through the room's own session. A link whose token has
//! the `view` role opens the room read-only: every write command fails with
//! [`DesktopError::ReadOnly`] (the server would drop the writes anyway).
//!
//! A `spike://room/…` link (or a `ws://…/<room>` URL) as the first argument opens that room.
//! Otherwise the app reopens the room that was open last (saved in the settings).

mod assistant;
pub mod bindings;
pub mod commands;
mod diagnostics;
mod error;
pub mod keys;
mod mirror;
mod npm;
pub mod room;
pub mod settings;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager, Runtime, WebviewUrl, WebviewWindowBuilder};

pub use assistant::{AiEvent, Proposal, ProposedFile, MAX_PROMPT_CHARS};
pub use diagnostics::{Diagnostics, Figure};
pub use error::{DesktopError, ErrorReply};
pub use mirror::{MirrorInfo, SkippedFile};
use room::{Room, RoomConfig};
use settings::Settings;
use spike_collab::RoomLink;
use spike_preview::{self as preview, Preview, PreviewReport, PreviewRequest};

/// The label of the sandboxed preview webview. It is in no capability: it cannot invoke commands.
pub const PREVIEW_LABEL: &str = "preview";

/// The shortest time between two preview passes (diagnostics + render). The first change after
/// a quiet spell is rendered at once; changes arriving within this time after a pass are
/// coalesced into the next one.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(30);

/// What the shell tells the editor UI besides document updates.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ShellEvent {
    /// The transpile diagnostics of one file (empty when it transpiles).
    Diagnostics {
        /// The file.
        path: String,
        /// Its errors, 1-based lines and character columns.
        diagnostics: Vec<spike_transpile::Diagnostic>,
    },
    /// Something the preview page reported (console output, an error, a finished render).
    Preview {
        /// The report.
        report: PreviewReport,
    },
    /// Who else is in the room, and where their cursors are.
    Peers {
        /// Every other peer, by client id order.
        peers: Vec<Peer>,
    },
    /// The room's connection changed.
    Status {
        /// `offline`, `connecting`, `syncing` or `synced`.
        #[ts(type = r#""offline" | "connecting" | "syncing" | "synced""#)]
        state: &'static str,
        /// Whether some local change is not confirmed by the server yet.
        unconfirmed: bool,
        /// The server's base URL.
        server: String,
        /// The room's name.
        room: String,
        /// This user's name and colour, as peers see them.
        user: spike_collab::User,
        /// The link grants `view` only: the editor must not change the room.
        #[serde(rename = "readOnly")]
        read_only: bool,
        /// Why the server refused this connection, when it did (the session stops trying).
        denied: Option<String>,
    },
    /// Something happened in the folder mirror (one line, e.g. `disk → room  App.tsx: 1 edit(s)`).
    Mirror {
        /// The event, for a person.
        line: String,
    },
}

/// Another person in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct Peer {
    /// Their replica's client id (a Yjs client id, below 2^53).
    #[ts(type = "number")]
    pub id: u64,
    /// Name and colour.
    pub user: spike_collab::User,
    /// Their selection per open file, as Yjs relative positions.
    pub cursors: std::collections::BTreeMap<String, spike_collab::Selection>,
}

/// What the share dialog shows for the open room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct ShareInfo {
    /// The room and its server, as a collaborator should use them.
    pub link: RoomLink,
    /// `spike://room/…`, for the clipboard.
    pub spike_link: String,
    /// The URL a y-websocket client connects to.
    pub websocket_url: String,
    /// Whether the room lives on this app's embedded server.
    pub embedded: bool,
    /// Whether that embedded server only accepts connections from this computer.
    pub loopback_only: bool,
}

/// The colours people get, by client id.
const PEOPLE_COLOURS: &[&str] = &[
    "#f59e0b", "#10b981", "#3b82f6", "#ef4444", "#a855f7", "#ec4899", "#14b8a6", "#84cc16",
];

/// This user's name (the settings', else `SPIKE_NAME`, else the login name) and colour (the
/// settings', else one picked by client id).
fn local_user(client_id: u64, settings: &Settings) -> spike_collab::User {
    let name = Some(settings.name.clone())
        .filter(|n| !n.trim().is_empty())
        .or_else(|| std::env::var("SPIKE_NAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.chars().take(settings::MAX_NAME_CHARS).collect())
        .unwrap_or_else(|| format!("Guest {}", client_id % 1000));
    let colour = if settings.color.is_empty() {
        PEOPLE_COLOURS[(client_id % PEOPLE_COLOURS.len() as u64) as usize].to_owned()
    } else {
        settings.color.clone()
    };
    spike_collab::User {
        name,
        color: colour,
    }
}

/// The open room and what runs for it.
struct Current {
    room: Arc<Room>,
    link: RoomLink,
    /// The status and peers watchers; aborted when the room is left.
    tasks: Vec<tauri::async_runtime::JoinHandle<()>>,
    /// This user's cursor, republished when the name or colour changes.
    cursor: Mutex<Option<(String, spike_collab::Selection)>>,
    /// The peers last sent to the UI.
    peers: Mutex<Vec<Peer>>,
}

/// The embedded room server, when this app runs one.
#[derive(Clone)]
struct Embedded {
    /// `ws://127.0.0.1:<port>/rooms`, how this app connects to it.
    url: String,
    /// The address it listens on.
    listen: std::net::IpAddr,
    /// The key its room tokens are signed with: set when it listens beyond loopback, where
    /// every connection needs a token (`None`: open, loopback only).
    key: Option<spike_server::auth::TokenKey>,
}

/// How long the tokens in share links (and this app's own) are valid.
const SHARE_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Embedded {
    /// `link` with an edit token for its room when it is on this server and tokens are needed.
    fn with_token(&self, mut link: RoomLink) -> RoomLink {
        if let (Some(key), true) = (&self.key, link.server == self.url && link.token.is_none()) {
            let claims = spike_server::auth::Claims::new(
                link.room.clone(),
                spike_server::auth::Role::Edit,
                SHARE_TOKEN_TTL,
            );
            match key.issue(&claims) {
                Ok(token) => link.token = Some(token),
                Err(e) => tracing::warn!("issuing a room token failed: {e}"),
            }
        }
        link
    }
}

/// The app's state.
pub struct Shell {
    current: RwLock<Arc<Current>>,
    /// Serializes room switches.
    switching: tokio::sync::Mutex<()>,
    settings: Mutex<Settings>,
    settings_path: PathBuf,
    /// The app's data folder (room logs, the embedded server, mirror state).
    data_dir: PathBuf,
    embedded: Option<Embedded>,
    preview: Preview,
    /// Shared with the folder mirror's thread, which reports its events here.
    events: Arc<Mutex<Option<Channel<ShellEvent>>>>,
    /// The open room's folder mirror, if any. Stopped before the room is left.
    mirror: tokio::sync::Mutex<Option<mirror::ActiveMirror>>,
    /// The AI assistant: running questions, open proposals, the provider router.
    assistant: Arc<assistant::Assistant>,
    /// The preview's npm module cache (memory and SQLite); `None` when it could not be opened,
    /// and then the preview has React only.
    npm: Option<npm::NpmCache>,
    /// Error reports: queued locally, sent to the open room's server.
    reports: Option<spike_report::ReportHandle>,
    changes: Mutex<mpsc::Sender<Vec<String>>>,
    /// Opens a room and starts its watchers (holds the app handle, whatever its runtime).
    opener: Box<RoomOpener>,
    /// Runs a script in the preview webview, if it is open.
    preview_eval: Box<PreviewEval>,
}

/// See [`Shell`]'s `opener`. The third argument names the template a never-used room is seeded
/// from (`None`: it starts empty).
type RoomOpener =
    dyn Fn(&RoomLink, &Settings, Option<&str>) -> Result<Arc<Current>, DesktopError> + Send + Sync;
/// See [`Shell`]'s `preview_eval`.
type PreviewEval = dyn Fn(&str) -> Result<(), DesktopError> + Send + Sync;

impl Shell {
    /// The open room.
    pub fn room(&self) -> Arc<Room> {
        self.current().room.clone()
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    fn user(&self) -> spike_collab::User {
        local_user(self.room().client_id(), &self.settings())
    }

    /// Validates, saves and applies settings; the name and colour reach peers at once.
    pub fn save_settings(&self, mut settings: Settings) -> Result<Settings, DesktopError> {
        settings.name = settings.name.trim().to_owned();
        settings.server = settings.server.trim().to_owned();
        settings.ai_base_url = settings.ai_base_url.trim().trim_end_matches('/').to_owned();
        settings.ai_model = settings.ai_model.trim().to_owned();
        settings.cdn = settings.cdn.trim().trim_end_matches('/').to_owned();
        {
            let kept = lock(&self.settings);
            settings.last_room = kept.last_room.clone();
            settings.mirrors = kept.mirrors.clone();
        }
        settings.save(&self.settings_path)?;
        let cdn_changed = lock(&self.settings).cdn != settings.cdn;
        *lock(&self.settings) = settings.clone();
        if cdn_changed {
            self.configure_room_services();
        }
        let cursor = lock(&self.current().cursor).clone();
        self.set_cursor(cursor)?;
        self.emit_status();
        Ok(settings)
    }

    /// The share dialog's contents for the open room.
    pub fn share_info(&self) -> ShareInfo {
        let current = self.current();
        let mut link = current.link.clone();
        let embedded = self.embedded.as_ref().filter(|e| e.url == link.server);
        let loopback_only = embedded.is_some_and(|e| e.listen.is_loopback());
        if let Some(e) = embedded {
            if !e.listen.is_loopback() {
                if let Some(ip) = lan_address() {
                    link.server = link.server.replacen("127.0.0.1", &ip.to_string(), 1);
                }
            }
        }
        ShareInfo {
            spike_link: link.to_link(),
            websocket_url: link.websocket_url(),
            link,
            embedded: embedded.is_some(),
            loopback_only,
        }
    }

    /// A link to a new room with a random name, on the settings' server, else the embedded
    /// one, else the open room's. Errors: `settings` for a bad server URL (not expected: it was
    /// validated when saved).
    pub fn new_room_link(&self) -> Result<RoomLink, DesktopError> {
        let settings = self.settings();
        let server = if !settings.server.is_empty() {
            settings.server
        } else if let Some(e) = &self.embedded {
            e.url.clone()
        } else {
            self.current().link.server.clone()
        };
        Ok(RoomLink::new(&server, &random_room_name()?)?)
    }

    /// Leaves the open room (closing its connection) and opens `link`, which the app reopens at
    /// its next start, and returns it as opened (with the token a room on the embedded server
    /// gets). The UI attaches to the new room with `open_room`.
    pub async fn switch_room(&self, link: RoomLink) -> Result<RoomLink, DesktopError> {
        self.switch_room_seeded(link, Some(EXAMPLE_TEMPLATE)).await
    }

    /// [`Shell::switch_room`], seeding a never-used room from `template` (`None`: empty).
    async fn switch_room_seeded(
        &self,
        link: RoomLink,
        template: Option<&str>,
    ) -> Result<RoomLink, DesktopError> {
        let _one_at_a_time = self.switching.lock().await;
        let next = (self.opener)(&link, &self.settings(), template)?;
        if let Some(mirror) = self.mirror.lock().await.take() {
            mirror.stop().await;
        }
        let link = next.link.clone();
        let previous = std::mem::replace(
            &mut *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            next,
        );
        *lock(&self.events) = None;
        self.remember(&link);
        self.configure_room_services();
        for task in &previous.tasks {
            task.abort();
        }
        // Say goodbye when nothing else holds the room; otherwise the last holder's drop closes
        // the connection.
        if let Ok(previous) = Arc::try_unwrap(previous) {
            if let Ok(room) = Arc::try_unwrap(previous.room) {
                room.close().await;
            }
        }
        tracing::info!(room = link.room, server = link.server, "switched room");
        Ok(link)
    }

    /// Saves `link` as the room to reopen at start.
    fn remember(&self, link: &RoomLink) {
        let mut settings = lock(&self.settings);
        settings.last_room = Some(link.clone());
        if let Err(e) = settings.save(&self.settings_path) {
            tracing::warn!("saving the last room failed: {e}");
        }
    }

    fn set_events(&self, events: Channel<ShellEvent>) {
        *lock(&self.events) = Some(events);
    }

    fn emit(&self, event: ShellEvent) {
        emit_to(&self.events, event);
    }

    /// Mirrors the open room into `dir` (created if missing), replacing any running mirror:
    /// files on disk and in the room are reconciled once (see spike-mirror), then kept in sync
    /// both ways. Errors: [`DesktopError::ReadOnly`] for a view-only room,
    /// [`DesktopError::Io`] / [`DesktopError::Mirror`] for a folder that cannot be made or
    /// watched.
    pub async fn start_mirror(&self, dir: PathBuf) -> Result<MirrorInfo, DesktopError> {
        let current = self.current();
        if current.room.read_only() {
            return Err(DesktopError::ReadOnly(current.link.room.clone()));
        }
        let mut slot = self.mirror.lock().await;
        if let Some(previous) = slot.take() {
            previous.stop().await;
        }
        let events = self.events.clone();
        let active = mirror::ActiveMirror::start(
            current.room.session(),
            &current.link.room,
            &dir,
            &self.data_dir.join("mirrors"),
            move |line| {
                emit_to(
                    &events,
                    ShellEvent::Mirror {
                        line: line.to_owned(),
                    },
                )
            },
        )
        .await?;
        let info = active.info();
        *slot = Some(active);
        self.remember_mirror(&current.link, Some(&info.dir));
        Ok(info)
    }

    /// Stops the folder mirror, if one runs, and forgets it: it is not resumed when the room
    /// opens again. Whether one ran.
    pub async fn stop_mirror(&self) -> bool {
        let stopped = match self.mirror.lock().await.take() {
            Some(active) => {
                active.stop().await;
                true
            }
            None => false,
        };
        self.remember_mirror(&self.current().link, None);
        stopped
    }

    /// Starts the open room's folder mirror again if it was running when the room was last
    /// left (a restart, a switch to another room): called when the UI attaches. A folder that
    /// no longer exists is forgotten (not recreated empty); a mirror that cannot start is
    /// logged and kept for the next time. Returns the mirror when one was started.
    pub async fn resume_mirror(&self) -> Option<MirrorInfo> {
        // No room switch while resuming, or the next room could be mirrored into this folder.
        let _one_at_a_time = self.switching.lock().await;
        if self.mirror.lock().await.is_some() {
            return None;
        }
        let link = self.current().link.clone();
        let dir = PathBuf::from(lock(&self.settings).mirrors.get(&mirror_key(&link))?);
        if !dir.is_dir() {
            tracing::warn!(room = link.room, dir = %dir.display(), "the mirrored folder is gone; not mirroring it again");
            self.remember_mirror(&link, None);
            return None;
        }
        match self.start_mirror(dir.clone()).await {
            Ok(info) => {
                tracing::info!(room = link.room, dir = %dir.display(), "resumed the folder mirror");
                Some(info)
            }
            Err(e) => {
                tracing::warn!(room = link.room, dir = %dir.display(), "could not resume the folder mirror: {e}");
                None
            }
        }
    }

    /// Records (`Some`) or forgets (`None`) the folder `link`'s room is mirrored into.
    fn remember_mirror(&self, link: &RoomLink, dir: Option<&str>) {
        let mut settings = lock(&self.settings);
        let key = mirror_key(link);
        let changed = match dir {
            Some(dir) => settings.mirrors.insert(key, dir.to_owned()).as_deref() != Some(dir),
            None => settings.mirrors.remove(&key).is_some(),
        };
        if changed {
            if let Err(e) = settings.save(&self.settings_path) {
                tracing::warn!("saving the folder mirrors failed: {e}");
            }
        }
    }

    /// Asks the assistant `prompt` about the open room (with `file`, the open file, shown to the
    /// model); the answer streams to `events`. Returns the request id. Errors: see
    /// `Assistant::ask`.
    pub fn ask_ai(
        &self,
        prompt: String,
        file: Option<String>,
        events: Channel<AiEvent>,
    ) -> Result<u64, DesktopError> {
        let user = self.user();
        let caller = format!("{}#{}", user.name, self.room().client_id());
        self.assistant
            .ask(self.room(), &self.settings(), &caller, prompt, file, events)
    }

    /// Applies the assistant's proposal `id` to the open room as this person's edits.
    pub fn apply_ai(&self, id: u64) -> Result<Vec<String>, DesktopError> {
        self.assistant.apply(&self.room(), id)
    }

    /// Drops the assistant's proposal `id`; whether it was open.
    pub fn reject_ai(&self, id: u64) -> bool {
        self.assistant.reject(id)
    }

    /// Stops the assistant's request `id`; whether it was running.
    pub fn stop_ai(&self, id: u64) -> bool {
        self.assistant.stop(id)
    }

    /// What the diagnostics panel shows: the connection, queued reports, recent problems and
    /// the store, AI and connection figures of this process.
    pub fn diagnostics(&self) -> Diagnostics {
        let current = self.current();
        let status = current.room.status();
        Diagnostics {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state: state_name(status.state).to_owned(),
            server: current.link.server.clone(),
            room: current.link.room.clone(),
            unconfirmed: status.unconfirmed,
            denied: status.denied,
            reports_queued: self.reports.as_ref().map_or(0, |r| r.queued()),
            recent: diagnostics::recent_problems().lines(),
            figures: spike_server::observe::handle()
                .map(|h| diagnostics::figures(&h.render()))
                .unwrap_or_default(),
        }
    }

    /// The running folder mirror, if any.
    pub async fn mirror_info(&self) -> Option<MirrorInfo> {
        self.mirror.lock().await.as_ref().map(|m| m.info())
    }

    /// "Open folder…": a new, empty room (on the same server as a new room would be) that
    /// takes the folder's files and stays mirrored with it. Returns the new room's link; the UI
    /// reloads and attaches to it. Errors: those of [`Shell::start_mirror`].
    pub async fn open_folder(&self, dir: PathBuf) -> Result<RoomLink, DesktopError> {
        let link = self.new_room_link()?;
        let link = self.switch_room_seeded(link, None).await?;
        self.start_mirror(dir).await?;
        Ok(link)
    }

    fn emit_status(&self) {
        let current = self.current();
        let status = current.room.status();
        self.emit(ShellEvent::Status {
            state: state_name(status.state),
            unconfirmed: status.unconfirmed,
            server: current.link.server.clone(),
            room: current.link.room.clone(),
            user: local_user(current.room.client_id(), &self.settings()),
            read_only: current.room.read_only(),
            denied: status.denied,
        });
    }

    /// Tells the UI who else is in the room, when that changed since the last time.
    fn emit_peers(&self) {
        let current = self.current();
        let peers: Vec<Peer> = current
            .room
            .peers()
            .into_iter()
            .map(|(id, p)| Peer {
                id,
                user: p.user,
                cursors: p.cursors,
            })
            .collect();
        let mut last = lock(&current.peers);
        if *last != peers {
            *last = peers.clone();
            drop(last);
            self.emit(ShellEvent::Peers { peers });
        }
    }

    /// Publishes this user's presence with `cursor` (a file and a selection in it) or none.
    fn set_cursor(
        &self,
        cursor: Option<(String, spike_collab::Selection)>,
    ) -> Result<(), DesktopError> {
        let current = self.current();
        let presence = spike_collab::Presence {
            user: self.user(),
            cursors: cursor.iter().cloned().collect(),
        };
        *lock(&current.cursor) = cursor;
        current.room.set_presence(&presence)
    }

    /// Points the preview's npm packages at the settings' CDN through the cache, with the open
    /// room's server as the shared tier (the page picks it up at its next load), and error
    /// reports at that server.
    fn configure_room_services(&self) {
        let current = self.current();
        if let Some(reports) = &self.reports {
            reports.set_target(
                spike_report::Target::from_rooms_url(
                    &current.link.server,
                    current.link.token.clone(),
                )
                .ok(),
            );
            reports.set_room(Some(&current.link.room));
        }
        let Some(cache) = &self.npm else { return };
        let fetcher = cache.fetcher(
            &self.settings().cdn,
            &current.link.server,
            current.link.token.clone(),
        );
        tracing::debug!(?fetcher, "npm packages for the preview");
        self.preview.set_npm(Some(Arc::new(fetcher)));
    }

    /// Queues files for the debounced diagnostics + preview pass.
    fn changed(&self, paths: Vec<String>) {
        // The receiver lives as long as the app; a send error means it is shutting down.
        let _ = lock(&self.changes).send(paths);
    }

    /// Starts a new preview generation and tells the page to render it.
    fn render_preview(&self) -> Result<u64, DesktopError> {
        let generation = self.preview.next_generation();
        (self.preview_eval)(&preview::render_script(generation))?;
        Ok(generation)
    }

    /// The debounced pass: diagnostics of the changed files to the UI, then either a new render
    /// or, when any file has errors, the errors over the last good render.
    fn refresh(&self, paths: &BTreeSet<String>) {
        let room = self.room();
        for path in paths {
            let diagnostics = self.preview.diagnostics(room.as_ref(), path);
            self.emit(ShellEvent::Diagnostics {
                path: path.clone(),
                diagnostics,
            });
        }
        let errors = self.preview.room_errors(room.as_ref());
        let result = if self.preview.needs_reload(room.as_ref()) {
            // A new npm package: only a fresh page has it in its import map.
            (self.preview_eval)(preview::reload_script())
        } else if errors.is_empty() {
            self.render_preview().map(drop)
        } else {
            (self.preview_eval)(&preview::errors_script(&errors))
        };
        if let Err(e) = result {
            tracing::warn!("updating the preview failed: {e}");
        }
    }
}

/// Starts the app. Blocks until the last window closes.
pub fn run() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,spike_desktop=debug".into());
    // Error reports (installed once the data folder is known) and the diagnostics panel's
    // recent problems see every warning and error; the terminal sees what RUST_LOG asks for.
    tracing_subscriber::registry()
        .with(diagnostics::report_slot())
        .with(diagnostics::recent_problems().clone())
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        .init();

    builder(tauri::Builder::default())
        .setup(|app| {
            let launch = Launch::from_env(app.handle())?;
            setup(app.handle(), launch).map_err(|e| {
                tracing::error!("startup failed: {e:#}");
                e.into()
            })
        })
        .run(tauri::generate_context!("../tauri.conf.json"))
        .context("running the Tauri app")
}

/// The app's scheme and commands on a Tauri builder (the real one, or the mock runtime's in
/// tests); `setup` is left to the caller.
pub fn builder<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        .register_asynchronous_uri_scheme_protocol(preview::SCHEME, |ctx, request, responder| {
            let app = ctx.app_handle().clone();
            // Transpiling can take milliseconds: keep it off the UI thread.
            std::thread::spawn(move || responder.respond(serve_preview(&app, &request)));
        })
        .invoke_handler(tauri::generate_handler![
            commands::open_room,
            commands::push_update,
            commands::create_file,
            commands::rename_file,
            commands::delete_file,
            commands::format_file,
            commands::preview_reload,
            commands::set_cursor,
            commands::share_room,
            commands::join_room,
            commands::new_room,
            commands::get_settings,
            commands::save_settings,
            commands::mirror_folder,
            commands::open_folder,
            commands::stop_mirror,
            commands::mirror_status,
            commands::ai_ask,
            commands::ai_stop,
            commands::ai_apply,
            commands::ai_reject,
            commands::ai_key_status,
            commands::ai_set_key,
            commands::diagnostics,
        ])
}

/// Where the app keeps its data and which room server and room it starts with.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Room logs (`rooms/`) and the embedded server's data (`server/`).
    pub data_dir: PathBuf,
    /// The settings file.
    pub settings_path: PathBuf,
    /// Join this server instead of starting the embedded one.
    pub server: Option<String>,
    /// The embedded server's address and port (0: any free port).
    pub listen: std::net::SocketAddr,
    /// The room to open (else the last one, else `example`).
    pub room: Option<String>,
    /// A `spike://` link or `ws://` URL to open, overriding the rest.
    pub link: Option<String>,
}

impl Launch {
    /// From the environment (`SPIKE_DATA_DIR`, `SPIKE_SERVER`, `SPIKE_LISTEN`, `SPIKE_PORT`,
    /// `SPIKE_ROOM`), the first argument, and the app's data and config folders.
    pub fn from_env<R: Runtime>(app: &AppHandle<R>) -> anyhow::Result<Self> {
        let custom = std::env::var_os("SPIKE_DATA_DIR").map(PathBuf::from);
        let data_dir = match &custom {
            Some(dir) => dir.clone(),
            None => app
                .path()
                .app_data_dir()
                .context("finding the app data directory")?,
        };
        let settings_path = match &custom {
            Some(dir) => dir.join("settings.json"),
            None => app
                .path()
                .app_config_dir()
                .context("finding the app config directory")?
                .join("settings.json"),
        };
        let port: u16 = match std::env::var("SPIKE_PORT") {
            Ok(p) => p
                .parse()
                .with_context(|| format!("SPIKE_PORT={p:?} is not a port"))?,
            Err(_) => DEFAULT_PORT,
        };
        let ip: std::net::IpAddr = match std::env::var("SPIKE_LISTEN") {
            Ok(a) => a
                .parse()
                .with_context(|| format!("SPIKE_LISTEN={a:?} is not an IP address"))?,
            Err(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        Ok(Self {
            data_dir,
            settings_path,
            server: std::env::var("SPIKE_SERVER").ok(),
            listen: (ip, port).into(),
            room: std::env::var("SPIKE_ROOM").ok(),
            link: std::env::args().nth(1).filter(|a| !a.starts_with('-')),
        })
    }
}

/// Starts the app's state: the embedded server (unless joining one), the first room, the
/// preview's debounce thread and its window. Used by [`run`] and by the tests (mock runtime).
pub fn setup<R: Runtime>(app: &AppHandle<R>, launch: Launch) -> anyhow::Result<()> {
    let Launch {
        data_dir,
        settings_path,
        server,
        listen,
        room,
        link,
    } = launch;
    let settings = Settings::load(&settings_path);
    let embedded = match &server {
        Some(_) => None,
        None => Some(start_embedded_server(&data_dir.join("server"), listen)?),
    };
    let first = first_room(&settings, server, embedded.as_ref(), room, link)?;
    let opener_app = app.clone();
    let opener_dir = data_dir.clone();
    let opener_server = embedded.clone();
    // Every room opens here, so a room on our own server always gets its token here.
    let opener: Box<RoomOpener> = Box::new(move |link, settings, template| {
        let link = match &opener_server {
            Some(e) => e.with_token(link.clone()),
            None => link.clone(),
        };
        open_current(&opener_app, &opener_dir, &link, settings, template)
    });
    let current = opener(&first, &settings, Some(EXAMPLE_TEMPLATE))
        .with_context(|| format!("opening room {:?} in {}", first.room, data_dir.display()))?;
    let link = current.link.clone();
    tracing::info!(room = link.room, server = link.server, dir = %data_dir.display(), "room open");
    let eval_app = app.clone();
    let preview_eval: Box<PreviewEval> =
        Box::new(
            move |script| match eval_app.get_webview_window(PREVIEW_LABEL) {
                Some(webview) => Ok(webview.eval(script)?),
                None => Ok(()),
            },
        );

    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let ai_cache = data_dir.join("ai-cache.sqlite");
    let reports = match spike_report::Reporter::start_on(
        spike_report::ReporterConfig::new(
            data_dir.join("reports.sqlite"),
            env!("CARGO_PKG_VERSION"),
        ),
        tauri::async_runtime::handle().inner(),
    ) {
        Ok((layer, handle)) => {
            diagnostics::install_report_layer(layer);
            Some(handle)
        }
        Err(e) => {
            tracing::warn!("error reports are off: {e}");
            None
        }
    };
    let npm = match npm::NpmCache::open(&data_dir.join("cache").join("npm.sqlite")) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!("npm packages are off in the preview: {e}");
            None
        }
    };
    app.manage(Shell {
        current: RwLock::new(current),
        switching: tokio::sync::Mutex::new(()),
        settings: Mutex::new(settings),
        settings_path,
        data_dir,
        embedded,
        preview: Preview::new(),
        events: Arc::default(),
        mirror: tokio::sync::Mutex::new(None),
        assistant: Arc::new(assistant::Assistant::new(ai_cache)),
        npm,
        reports,
        changes: Mutex::new(tx),
        opener,
        preview_eval,
    });
    app.state::<Shell>().remember(&link);
    app.state::<Shell>().configure_room_services();
    let handle = app.clone();
    std::thread::Builder::new()
        .name("preview-debounce".into())
        .spawn(move || debounce(&handle, &rx))
        .context("starting the preview thread")?;

    let url = preview_url().context("the preview URL")?;
    WebviewWindowBuilder::new(app, PREVIEW_LABEL, WebviewUrl::CustomProtocol(url))
        .title("Spike — preview")
        .inner_size(560.0, 800.0)
        .position(1100.0, 0.0)
        // The preview never navigates away from its scheme (links, window.location).
        .on_navigation(|url| url.scheme() == preview::SCHEME || url.as_str() == "about:blank")
        .build()
        .context("opening the preview window")?;
    Ok(())
}

/// A room's key in [`Settings::mirrors`]: `<server>/<room>`, without the token (a new token
/// for the same room keeps its folder).
fn mirror_key(link: &RoomLink) -> String {
    format!("{}/{}", link.server.trim_end_matches('/'), link.room)
}

/// The room to open at start: `link` (the first argument), else `room` on `server` or the
/// embedded server, else the room open last, else `example`.
fn first_room(
    settings: &Settings,
    server: Option<String>,
    embedded: Option<&Embedded>,
    room: Option<String>,
    link: Option<String>,
) -> anyhow::Result<RoomLink> {
    if let Some(arg) = link {
        return RoomLink::parse(&arg).with_context(|| format!("the room link {arg:?}"));
    }
    let server = match (server, embedded) {
        (Some(url), _) => url,
        (None, Some(e)) => e.url.clone(),
        (None, None) => anyhow::bail!("no room server: set SPIKE_SERVER"),
    };
    let room = match room {
        Some(room) => room,
        None => match &settings.last_room {
            Some(last) => return Ok(last.clone()),
            None => "example".into(),
        },
    };
    RoomLink::new(&server, &room).with_context(|| format!("room {room:?} on {server}"))
}

/// Opens the room `link` names (its log under `<data>/rooms/<server>/`) and starts what runs for
/// it: its file changes feed the preview, its status and peers go to the UI.
fn open_current<R: Runtime>(
    app: &AppHandle<R>,
    data_dir: &std::path::Path,
    link: &RoomLink,
    settings: &Settings,
    template: Option<&str>,
) -> Result<Arc<Current>, DesktopError> {
    // A view token makes the editor read-only. The claims are read without the server's
    // secret, for display only: the server enforces the role whatever this copy does.
    let read_only = link
        .token
        .as_deref()
        .and_then(|t| spike_server::auth::Claims::peek(t).ok())
        .is_some_and(|claims| claims.role == spike_server::auth::Role::View);
    // The session spawns its connection task: enter the runtime (a no-op inside a command).
    let runtime = tauri::async_runtime::handle();
    let _entered = runtime.inner().enter();
    let room = Room::open(&RoomConfig {
        dir: data_dir.join("rooms").join(server_folder(&link.server)),
        name: link.room.clone(),
        server: link.server.clone(),
        token: link.token.clone(),
        template: template.map(str::to_owned),
        online: true,
        read_only,
    })?;
    let room = Arc::new(room);
    let files_app = app.clone();
    room.on_files_changed(move |paths| {
        if let Some(shell) = files_app.try_state::<Shell>() {
            shell.changed(paths);
        }
    });
    let mut status = room.subscribe_status();
    let status_app = app.clone();
    let status_task = tauri::async_runtime::spawn(async move {
        // `try_state`: the first room's watchers start before the shell is managed; the UI
        // gets the status and peers of that moment when it attaches.
        while status.changed().await.is_ok() {
            if let Some(shell) = status_app.try_state::<Shell>() {
                shell.emit_status();
            }
        }
    });
    let mut peers = room.subscribe_peers();
    let peers_app = app.clone();
    let peers_task = tauri::async_runtime::spawn(async move {
        while peers.changed().await.is_ok() {
            if let Some(shell) = peers_app.try_state::<Shell>() {
                shell.emit_peers();
            }
        }
    });
    if let Err(e) = room.set_presence(&spike_collab::Presence {
        user: local_user(room.client_id(), settings),
        cursors: Default::default(),
    }) {
        tracing::warn!("publishing presence failed: {e}");
    }
    Ok(Arc::new(Current {
        room,
        link: link.clone(),
        tasks: vec![status_task, peers_task],
        cursor: Mutex::new(None),
        peers: Mutex::new(Vec::new()),
    }))
}

/// The folder of one server's room logs: its URL with everything but letters, digits, `.` and
/// `-` replaced, so rooms of the same name on two servers never share a log.
fn server_folder(server: &str) -> String {
    let rest = server.split_once("://").map_or(server, |(_, rest)| rest);
    rest.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A new room's name: `room-` and 16 random letters and digits (80 bits from the OS).
fn random_room_name() -> Result<String, DesktopError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| DesktopError::Io {
        context: "drawing a random room name".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let name: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    Ok(format!("room-{name}"))
}

/// This machine's address on the local network: the source address of a route to a public
/// address (a UDP "connect" sends nothing). `None` offline.
fn lan_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// How the UI and the diagnostics name a connection state.
fn state_name(state: spike_collab::SessionState) -> &'static str {
    match state {
        spike_collab::SessionState::Offline => "offline",
        spike_collab::SessionState::Connecting => "connecting",
        spike_collab::SessionState::Syncing => "syncing",
        spike_collab::SessionState::Synced => "synced",
    }
}

/// The template the embedded server seeds new rooms from: the example project.
const EXAMPLE_TEMPLATE: &str = "example";

/// Sends `event` to the UI, if one is attached.
fn emit_to(events: &Mutex<Option<Channel<ShellEvent>>>, event: ShellEvent) {
    if let Some(channel) = lock(events).as_ref() {
        if let Err(e) = channel.send(event) {
            tracing::warn!("sending an event to the UI failed: {e}");
        }
    }
}

/// Default port of the embedded room server.
const DEFAULT_PORT: u16 = 8717;

/// Starts the in-process room server on `listen` (port 0: any free one). When the port is
/// taken, another Spike instance is serving there: join it.
fn start_embedded_server(
    data: &std::path::Path,
    listen: std::net::SocketAddr,
) -> anyhow::Result<Embedded> {
    // Beyond loopback every connection needs a token (a secret is generated into the data
    // folder, or taken from SPIKE_SECRET); on loopback the server stays open.
    let secret = std::env::var("SPIKE_SECRET").ok();
    let (access, how) = spike_server::Access::choose(listen, data, None, secret.as_deref(), false)?;
    let key = match &access {
        spike_server::Access::Tokens(key) => Some(key.clone()),
        spike_server::Access::Open => None,
    };
    let at = |port: u16| Embedded {
        url: format!("ws://127.0.0.1:{port}/rooms"),
        listen: listen.ip(),
        key: key.clone(),
    };
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!(%listen, "port taken: joining the Spike server already there");
            return Ok(at(listen.port()));
        }
        Err(e) => return Err(e).with_context(|| format!("binding {listen}")),
    };
    let embedded = at(listener
        .local_addr()
        .context("the listener's address")?
        .port());
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let mut config = spike_server::ServerConfig::new(data);
    config.access = access;
    let server = spike_server::Server::new(config).context("starting the embedded room server")?;
    tauri::async_runtime::spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("the embedded room server cannot listen: {e}");
                return;
            }
        };
        if let Err(e) = server.serve(listener, std::future::pending()).await {
            tracing::error!("the embedded room server stopped: {e}");
        }
    });
    tracing::info!(url = embedded.url, %listen, access = how, "embedded room server started");
    Ok(embedded)
}

/// The preview page's URL: custom schemes are `scheme://localhost/` on Linux and macOS and
/// `http://scheme.localhost/` on Windows.
fn preview_url() -> anyhow::Result<tauri::Url> {
    let url = if cfg!(windows) {
        format!("http://{}.localhost/", preview::SCHEME)
    } else {
        format!("{}://localhost/", preview::SCHEME)
    };
    Ok(tauri::Url::parse(&url)?)
}

fn debounce<R: Runtime>(app: &AppHandle<R>, rx: &mpsc::Receiver<Vec<String>>) {
    // Leading edge, then a rate limit: waiting for quiet before every pass would add its whole
    // length to each keystroke's latency.
    while let Ok(first) = rx.recv() {
        let mut paths: BTreeSet<String> = first.into_iter().collect();
        loop {
            match rx.try_recv() {
                Ok(more) => paths.extend(more),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        app.state::<Shell>().refresh(&paths);
        std::thread::sleep(MIN_PASS_INTERVAL);
    }
}

fn serve_preview<R: Runtime>(
    app: &AppHandle<R>,
    request: &tauri::http::Request<Vec<u8>>,
) -> tauri::http::Response<Vec<u8>> {
    let shell = app.state::<Shell>();
    let path = percent_decode(request.uri().path());
    let assets = |path: &str| {
        app.asset_resolver()
            .get(path.to_owned())
            .map(|a| std::borrow::Cow::Owned(a.bytes))
    };
    let report = |r: PreviewReport| shell.emit(ShellEvent::Preview { report: r });
    let room = shell.room();
    let answer = shell.preview.respond(
        room.as_ref(),
        &PreviewRequest {
            method: request.method().as_str(),
            path: &path,
            body: request.body(),
        },
        &assets,
        &report,
    );
    tauri::http::Response::builder()
        .status(answer.status)
        .header(tauri::http::header::CONTENT_TYPE, answer.content_type)
        .header("Content-Security-Policy", answer.csp)
        .header(tauri::http::header::CACHE_CONTROL, "no-store")
        .body(answer.body)
        .unwrap_or_else(|e| {
            tracing::error!("building a preview response failed: {e}");
            tauri::http::Response::new(Vec::new())
        })
}

/// Decodes `%XX` escapes of a URL path (file names with spaces or non-ASCII letters). Invalid
/// escapes are kept as they are.
pub fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_paths() {
        assert_eq!(percent_decode("/g1/My%20File.tsx"), "/g1/My File.tsx");
        assert_eq!(percent_decode("/g1/caf%C3%A9.ts"), "/g1/café.ts");
        assert_eq!(percent_decode("/g1/100%"), "/g1/100%");
        assert_eq!(percent_decode("/g1/%zz"), "/g1/%zz");
        assert_eq!(percent_decode("/a%2"), "/a%2");
    }
}
