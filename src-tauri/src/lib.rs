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
//! - `SPIKE_SERVER`: join this room server (`ws://host:port/rooms`) instead of starting one.

pub mod commands;
pub mod diff;
mod error;
pub mod preview;
pub mod room;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder};

pub use error::DesktopError;
use preview::{Preview, PreviewReport, PreviewRequest};
use room::{Room, RoomConfig};

/// The label of the sandboxed preview webview. It is in no capability: it cannot invoke commands.
pub const PREVIEW_LABEL: &str = "preview";

/// How often the peers' presence is looked at.
const PEERS_POLL: Duration = Duration::from_millis(150);

/// How long the document must be quiet before the preview re-renders and diagnostics refresh.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// What the shell tells the editor UI besides document updates.
#[derive(Debug, Clone, Serialize)]
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
        state: &'static str,
        /// Whether some local change is not confirmed by the server yet.
        unconfirmed: bool,
        /// The server's base URL.
        server: String,
        /// The room's name.
        room: String,
        /// This user's name and colour, as peers see them.
        user: spike_collab::User,
    },
}

/// Another person in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Their replica's client id.
    pub id: u64,
    /// Name and colour.
    pub user: spike_collab::User,
    /// Their selection per open file (UTF-16 code units).
    pub cursors: std::collections::BTreeMap<String, spike_collab::Selection>,
}

/// The colours people get, by client id.
const PEOPLE_COLOURS: &[&str] = &[
    "#f59e0b", "#10b981", "#3b82f6", "#ef4444", "#a855f7", "#ec4899", "#14b8a6", "#84cc16",
];

/// This user's name (`SPIKE_NAME`, or the login name) and colour (by client id).
fn local_user(client_id: u64) -> spike_collab::User {
    let name = std::env::var("SPIKE_NAME")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.chars().take(40).collect())
        .unwrap_or_else(|| format!("Guest {}", client_id % 1000));
    let colour = PEOPLE_COLOURS[(client_id % PEOPLE_COLOURS.len() as u64) as usize];
    spike_collab::User {
        name,
        color: colour.to_owned(),
    }
}

/// The app's state.
pub struct Shell {
    room: Arc<Room>,
    server: String,
    user: spike_collab::User,
    preview: Preview,
    events: Mutex<Option<Channel<ShellEvent>>>,
    changes: Mutex<mpsc::Sender<Vec<String>>>,
    app: AppHandle,
}

impl Shell {
    fn set_events(&self, events: Channel<ShellEvent>) {
        *lock(&self.events) = Some(events);
    }

    fn emit(&self, event: ShellEvent) {
        if let Some(channel) = lock(&self.events).as_ref() {
            if let Err(e) = channel.send(event) {
                tracing::warn!("sending an event to the UI failed: {e}");
            }
        }
    }

    fn emit_status(&self) {
        let status = self.room.status();
        self.emit(ShellEvent::Status {
            state: match status.state {
                spike_collab::SessionState::Offline => "offline",
                spike_collab::SessionState::Connecting => "connecting",
                spike_collab::SessionState::Syncing => "syncing",
                spike_collab::SessionState::Synced => "synced",
            },
            unconfirmed: status.unconfirmed,
            server: self.server.clone(),
            room: self.room.name().to_owned(),
            user: self.user.clone(),
        });
    }

    fn set_cursor(&self, file: Option<String>, anchor: u32, head: u32) -> Result<(), DesktopError> {
        let mut presence = spike_collab::Presence {
            user: self.user.clone(),
            cursors: Default::default(),
        };
        if let Some(file) = file {
            presence
                .cursors
                .insert(file, spike_collab::Selection { anchor, head });
        }
        self.room.set_presence(&presence)
    }

    /// Queues files for the debounced diagnostics + preview pass.
    fn changed(&self, paths: Vec<String>) {
        // The receiver lives as long as the app; a send error means it is shutting down.
        let _ = lock(&self.changes).send(paths);
    }

    /// Starts a new preview generation and tells the page to render it.
    fn render_preview(&self) -> Result<u64, DesktopError> {
        let generation = self.preview.next_generation();
        if let Some(webview) = self.app.get_webview_window(PREVIEW_LABEL) {
            webview.eval(preview::render_script(generation))?;
        }
        Ok(generation)
    }

    /// The debounced pass: diagnostics of the changed files to the UI, then either a new render
    /// or, when any file has errors, the errors over the last good render.
    fn refresh(&self, paths: &BTreeSet<String>) {
        for path in paths {
            let diagnostics = self.preview.diagnostics(&self.room, path);
            self.emit(ShellEvent::Diagnostics {
                path: path.clone(),
                diagnostics,
            });
        }
        let errors = self.preview.room_errors(&self.room);
        let result = if errors.is_empty() {
            self.render_preview().map(drop)
        } else {
            match self.app.get_webview_window(PREVIEW_LABEL) {
                Some(webview) => webview
                    .eval(preview::errors_script(&errors))
                    .map_err(DesktopError::from),
                None => Ok(()),
            }
        };
        if let Err(e) = result {
            tracing::warn!("updating the preview failed: {e}");
        }
    }
}

/// Starts the app. Blocks until the last window closes.
pub fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,spike_desktop=debug".into()),
        )
        .init();

    tauri::Builder::default()
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
        ])
        .setup(|app| {
            setup(app.handle()).map_err(|e| {
                tracing::error!("startup failed: {e:#}");
                e.into()
            })
        })
        .run(tauri::generate_context!("../tauri.conf.json"))
        .context("running the Tauri app")
}

fn setup(app: &AppHandle) -> anyhow::Result<()> {
    let data_dir = match std::env::var_os("SPIKE_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => app
            .path()
            .app_data_dir()
            .context("finding the app data directory")?,
    };
    let room_name = std::env::var("SPIKE_ROOM").unwrap_or_else(|_| "example".into());
    let server = match std::env::var("SPIKE_SERVER") {
        Ok(url) => url,
        Err(_) => start_embedded_server(&data_dir.join("server"))?,
    };
    let room = tauri::async_runtime::block_on(async {
        Room::open(&RoomConfig {
            dir: data_dir.join("rooms"),
            name: room_name.clone(),
            server: server.clone(),
            template: Some("example".into()),
            online: true,
        })
    })
    .with_context(|| format!("opening room {room_name:?} in {}", data_dir.display()))?;
    let room = Arc::new(room);
    tracing::info!(room = room_name, server, dir = %data_dir.display(), "room open");

    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let observer_tx = tx.clone();
    room.on_files_changed(move |paths| {
        let _ = observer_tx.send(paths);
    });
    let mut status = room.subscribe_status();
    let status_app = app.clone();
    tauri::async_runtime::spawn(async move {
        while status.changed().await.is_ok() {
            status_app.state::<Shell>().emit_status();
        }
    });
    let user = local_user(room.client_id());
    if let Err(e) = room.set_presence(&spike_collab::Presence {
        user: user.clone(),
        cursors: Default::default(),
    }) {
        tracing::warn!("publishing presence failed: {e}");
    }
    // Awareness has no change feed on the session: look at the peers a few times a second and
    // tell the UI when they changed.
    let peers_room = room.clone();
    let peers_app = app.clone();
    tauri::async_runtime::spawn(async move {
        let mut last = None;
        loop {
            tokio::time::sleep(PEERS_POLL).await;
            let peers: Vec<Peer> = peers_room
                .peers()
                .into_iter()
                .map(|(id, p)| Peer {
                    id,
                    user: p.user,
                    cursors: p.cursors,
                })
                .collect();
            if last.as_ref() != Some(&peers) {
                last = Some(peers.clone());
                peers_app.state::<Shell>().emit(ShellEvent::Peers { peers });
            }
        }
    });
    app.manage(Shell {
        room,
        server,
        user,
        preview: Preview::new(),
        events: Mutex::new(None),
        changes: Mutex::new(tx),
        app: app.clone(),
    });
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

/// Default port of the embedded room server.
const DEFAULT_PORT: u16 = 8717;

/// Starts the in-process room server on loopback and returns its rooms URL. When the port is
/// taken, another Spike instance is serving there: join it.
fn start_embedded_server(data: &std::path::Path) -> anyhow::Result<String> {
    let port: u16 = match std::env::var("SPIKE_PORT") {
        Ok(p) => p
            .parse()
            .with_context(|| format!("SPIKE_PORT={p:?} is not a port"))?,
        Err(_) => DEFAULT_PORT,
    };
    let url = format!("ws://127.0.0.1:{port}/rooms");
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!(port, "port taken: joining the Spike server already there");
            return Ok(url);
        }
        Err(e) => return Err(e).with_context(|| format!("binding 127.0.0.1:{port}")),
    };
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let server = spike_server::Server::new(spike_server::ServerConfig::new(data))
        .context("starting the embedded room server")?;
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
    tracing::info!(url, "embedded room server started");
    Ok(url)
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

fn debounce(app: &AppHandle, rx: &mpsc::Receiver<Vec<String>>) {
    while let Ok(first) = rx.recv() {
        let mut paths: BTreeSet<String> = first.into_iter().collect();
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(more) => paths.extend(more),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        app.state::<Shell>().refresh(&paths);
    }
}

fn serve_preview(
    app: &AppHandle,
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
    let answer = shell.preview.respond(
        &shell.room,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
