//! The room as the shell holds it: a spike-collab [`Session`] (the authoritative yrs document,
//! its durable offline update log, and the y-websocket connection to a room server), and the
//! editor UI's Yjs replica as one more peer that exchanges binary updates with it.
//!
//! Every change goes through this module, whatever its source: an update the UI pushed, a format,
//! a file operation, or an update from the server. The session logs local changes before they
//! are acknowledged and sends them to the server when connected; every update that changes the
//! document is forwarded to the UI (an update the UI already has is a no-op there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use spike_collab::{Presence, Session, SessionConfig, SessionStatus, TextEdit};
use tokio::sync::watch;

use crate::DesktopError;

/// Largest update the UI may push in one IPC call. A keystroke is tens of bytes and pasting a big
/// file a few hundred kilobytes; anything larger is refused rather than logged.
pub const MAX_UPDATE_BYTES: usize = 8 * 1024 * 1024;

/// How many times [`Room::format_file`] recomputes a format that collaborators' edits keep
/// overtaking before it reports [`spike_collab::CollabError::TextChanged`].
pub const FORMAT_ATTEMPTS: u32 = 5;

/// Where updates for the UI replica go (a Tauri channel in the app, a vector in tests).
pub type UpdateSink = Box<dyn Fn(Vec<u8>) + Send + Sync>;

/// How to open a room.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Folder of the offline logs (`<dir>/<room>.sqlite`).
    pub dir: PathBuf,
    /// The room's name (`A-Za-z0-9._-`).
    pub name: String,
    /// The room server's base URL, `ws://host:port/rooms`.
    pub server: String,
    /// The access token to present, if the link carried one.
    pub token: Option<String>,
    /// Template the server seeds a never-used room from (`example`), if any.
    pub template: Option<String>,
    /// Connect now (`false`: stay offline; edits still work and are logged).
    pub online: bool,
    /// The link's token grants `view` only: every write is refused here with
    /// [`DesktopError::ReadOnly`] (the server would drop it anyway).
    pub read_only: bool,
}

/// One open room.
pub struct Room {
    name: String,
    session: Arc<Session>,
    ui: Arc<Mutex<Option<UpdateSink>>>,
    /// Serializes read-modify-write operations (a format reads the text, then edits it).
    write: Mutex<()>,
    /// See [`RoomConfig::read_only`].
    read_only: bool,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Room {
    /// Opens the room from its log (no network needed) and starts syncing with the server.
    /// Must be called inside a tokio runtime.
    ///
    /// Errors: [`DesktopError::Collab`] for an invalid room name or server URL, or a log that
    /// cannot be opened or holds an update that does not apply; [`DesktopError::Io`] when the
    /// log folder cannot be created.
    pub fn open(config: &RoomConfig) -> Result<Self, DesktopError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| DesktopError::Io {
            context: format!("creating {}", config.dir.display()),
            source,
        })?;
        let mut session_config = SessionConfig::new(&config.server, &config.name);
        session_config.log_path = Some(Self::log_path(&config.dir, &config.name));
        session_config.online = config.online;
        session_config.token = config.token.clone();
        if let Some(template) = &config.template {
            session_config
                .params
                .push(("template".into(), template.clone()));
        }
        let session = Session::open(session_config)?;
        let ui: Arc<Mutex<Option<UpdateSink>>> = Arc::new(Mutex::new(None));
        let forward = ui.clone();
        session
            .with_doc(|doc| {
                doc.doc()
                    .observe_update_v1("desktop-ui", move |_txn, event| {
                        if let Some(sink) = lock(&forward).as_ref() {
                            sink(event.update.clone());
                        }
                    })
            })
            .map_err(|e| DesktopError::BadRequest(format!("observing the room document: {e}")))?;
        Ok(Self {
            name: config.name.clone(),
            session: Arc::new(session),
            ui,
            write: Mutex::new(()),
            read_only: config.read_only,
        })
    }

    /// Leaves the room: says goodbye to the server (peers see this user go at once) and closes
    /// the connection. Everything is already in the log.
    pub async fn close(self) {
        match Arc::try_unwrap(self.session) {
            Ok(session) => session.close().await,
            // A folder mirror still holds it: its last holder's drop closes the connection.
            Err(_) => tracing::warn!(room = self.name, "room closed while still shared"),
        }
    }

    /// The session itself, shared (a folder mirror edits the room through it, so disk edits
    /// reach the editor and the preview at once, online or not).
    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    /// The log file of room `name` in `dir`.
    pub fn log_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.sqlite"))
    }

    /// Whether this copy only watches (a `view` token): every write is refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Takes the write lock, unless the room is read-only.
    fn writer(&self) -> Result<std::sync::MutexGuard<'_, ()>, DesktopError> {
        if self.read_only {
            return Err(DesktopError::ReadOnly(self.name.clone()));
        }
        Ok(lock(&self.write))
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of `path`, if there is such a file.
    pub fn read(&self, path: &str) -> Option<String> {
        self.session.read(path)
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.session.with_doc(|d| d.paths())
    }

    /// Every file, `path → text`.
    pub fn files(&self) -> BTreeMap<String, String> {
        self.session.files()
    }

    /// A `meta` value (`entry`, `title`).
    pub fn meta(&self, key: &str) -> Option<String> {
        self.session.with_doc(|d| d.meta(key))
    }

    /// The entry module (the `meta.entry` key), `main.tsx` when unset.
    pub fn entry(&self) -> String {
        self.meta("entry").unwrap_or_else(|| "main.tsx".into())
    }

    /// The connection status now.
    pub fn status(&self) -> SessionStatus {
        self.session.status()
    }

    /// Every status change from now on.
    pub fn subscribe_status(&self) -> watch::Receiver<SessionStatus> {
        self.session.subscribe()
    }

    /// Sets a `meta` value. Errors: log failure.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), DesktopError> {
        let _guard = lock(&self.write);
        Ok(self.session.set_meta(key, value)?)
    }

    /// Publishes this user's presence (name, colour, cursor per file) to the room.
    pub fn set_presence(&self, presence: &Presence) -> Result<(), DesktopError> {
        Ok(self.session.set_presence(presence)?)
    }

    /// Every other peer's presence, by client id.
    pub fn peers(&self) -> BTreeMap<u64, Presence> {
        self.session.peers()
    }

    /// A counter bumped whenever a peer's presence changes (see `Session::subscribe_peers`).
    pub fn subscribe_peers(&self) -> watch::Receiver<u64> {
        self.session.subscribe_peers()
    }

    /// This replica's client id (what peers see it as).
    pub fn client_id(&self) -> u64 {
        self.session.client_id()
    }

    /// Connects or goes (and stays) offline.
    pub fn set_online(&self, online: bool) {
        self.session.set_online(online);
    }

    /// Calls `f` with the paths that changed after every change to `files`, from any source.
    pub fn on_files_changed(&self, f: impl Fn(Vec<String>) + Send + Sync + 'static) {
        self.session.with_doc(|d| {
            d.observe_files("desktop-files", move |change| {
                let mut paths = change.edited.clone();
                paths.extend(change.entries.iter().cloned());
                f(paths);
            });
        });
    }

    /// Connects the UI replica: every later update goes to `sink`. Returns the whole document as
    /// one update (lib0 v1) for the replica to start from.
    pub fn attach_ui(&self, sink: UpdateSink) -> Vec<u8> {
        let _guard = lock(&self.write);
        // The state and the sink swap under the session's document lock, so no update falls
        // between them.
        self.session.with_doc(|d| {
            *lock(&self.ui) = Some(sink);
            d.encode_state()
        })
    }

    /// Applies an update the UI replica made; it is logged before this returns and sent to the
    /// server when connected.
    ///
    /// Errors: [`DesktopError::BadRequest`] past [`MAX_UPDATE_BYTES`];
    /// [`DesktopError::Collab`] for bytes that do not decode or apply, or a log failure.
    pub fn apply_from_ui(&self, update: &[u8]) -> Result<(), DesktopError> {
        if update.len() > MAX_UPDATE_BYTES {
            return Err(DesktopError::BadRequest(format!(
                "an update of {} bytes is larger than the limit of {MAX_UPDATE_BYTES}",
                update.len()
            )));
        }
        let _guard = self.writer()?;
        Ok(self.session.apply_local_update(update)?)
    }

    /// Creates `path` with `text`. Errors: invalid path, existing file, log failure.
    pub fn create_file(&self, path: &str, text: &str) -> Result<(), DesktopError> {
        let _guard = self.writer()?;
        Ok(self.session.create_file(path, text)?)
    }

    /// Renames `from` to `to`. Errors: no such file, invalid or existing target, log failure.
    pub fn rename_file(&self, from: &str, to: &str) -> Result<(), DesktopError> {
        let _guard = self.writer()?;
        Ok(self.session.rename_file(from, to)?)
    }

    /// Deletes `path`. Errors: no such file, log failure.
    pub fn delete_file(&self, path: &str) -> Result<(), DesktopError> {
        let _guard = self.writer()?;
        Ok(self.session.delete_file(path)?)
    }

    /// Applies text edits to `path` (UTF-16 offsets, each relative to the previous edit's result).
    pub fn edit(&self, path: &str, edits: &[TextEdit]) -> Result<(), DesktopError> {
        let _guard = self.writer()?;
        Ok(self.session.edit(path, edits)?)
    }

    /// Formats `path` with spike-format and applies the result as the minimal list of edits
    /// ([`Session::replace_text`]). When a collaborator's edit lands between reading the text
    /// and writing the format, nothing is applied and the format is recomputed from the current
    /// text (up to [`FORMAT_ATTEMPTS`] times), so the collaborator's edit survives and is
    /// formatted too. Returns whether anything changed.
    ///
    /// Errors: [`DesktopError::Collab`] (no such file, or
    /// [`spike_collab::CollabError::TextChanged`] when the text changed under every attempt),
    /// [`DesktopError::Format`] (syntax error, unsupported extension, too large).
    pub fn format_file(&self, path: &str) -> Result<bool, DesktopError> {
        let _guard = self.writer()?;
        let mut attempt = 1;
        loop {
            let source = self
                .session
                .read(path)
                .ok_or_else(|| spike_collab::CollabError::NoSuchFile(path.to_owned()))?;
            let Some(formatted) =
                spike_format::format(path, &source, &spike_format::FormatConfig::default())?
            else {
                return Ok(false);
            };
            match self.session.replace_text(path, &source, &formatted) {
                Err(spike_collab::CollabError::TextChanged { .. }) if attempt < FORMAT_ATTEMPTS => {
                    attempt += 1;
                }
                changed => return Ok(changed?),
            }
        }
    }
}

/// The preview reads the room's files, its entry module and its title (`meta.title`).
impl spike_preview::ModuleSource for Room {
    fn read(&self, path: &str) -> Option<String> {
        Room::read(self, path)
    }

    fn paths(&self) -> Vec<String> {
        Room::paths(self)
    }

    fn entry(&self) -> String {
        Room::entry(self)
    }

    fn title(&self) -> Option<String> {
        self.meta("title")
    }

    /// The room's pins: `meta.packages`, a JSON object of package name → version.
    fn package_version(&self, package: &str) -> Option<String> {
        let pins = self.meta("packages")?;
        let pins: serde_json::Value = serde_json::from_str(&pins).ok()?;
        pins.get(package)?.as_str().map(str::to_owned)
    }
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: the document and the
/// log stay consistent on their own (yrs transactions, SQLite transactions).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use spike_collab::{RoomDoc, SessionState};

    use super::*;

    /// A tokio runtime and a room server on loopback for one test.
    pub(crate) struct TestServer {
        pub rt: tokio::runtime::Runtime,
        pub url: String,
        _data: tempfile::TempDir,
    }

    impl TestServer {
        pub(crate) fn start() -> Self {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let data = tempfile::tempdir().expect("tempdir");
            let server = spike_server::Server::new(spike_server::ServerConfig::new(data.path()))
                .expect("server");
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            rt.spawn(server.serve(listener, std::future::pending()));
            Self {
                rt,
                url: format!("ws://127.0.0.1:{port}/rooms"),
                _data: data,
            }
        }

        pub(crate) fn open(&self, dir: &Path, name: &str, online: bool) -> Room {
            let _enter = self.rt.enter();
            Room::open(&RoomConfig {
                dir: dir.to_owned(),
                name: name.to_owned(),
                server: self.url.clone(),
                token: None,
                template: Some("example".into()),
                online,
                read_only: false,
            })
            .expect("open")
        }

        pub(crate) fn synced(&self, room: &Room) {
            let mut status = room.subscribe_status();
            self.rt
                .block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(20),
                        status.wait_for(|s| s.state == SessionState::Synced && !s.unconfirmed),
                    )
                    .await
                })
                .expect("synced within 20 s")
                .expect("status channel open");
        }
    }

    fn collected() -> (UpdateSink, Arc<Mutex<Vec<Vec<u8>>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink_got = got.clone();
        (Box::new(move |u| lock(&sink_got).push(u)), got)
    }

    #[test]
    fn a_room_on_the_server_starts_as_the_example_and_two_replicas_converge() {
        let server = TestServer::start();
        let (a_dir, b_dir) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let a = server.open(a_dir.path(), "shared", true);
        server.synced(&a);
        assert_eq!(a.entry(), "main.tsx");
        assert!(a.paths().contains(&"App.tsx".to_owned()));

        let b = server.open(b_dir.path(), "shared", true);
        server.synced(&b);
        let (sink, got) = collected();
        let ui = RoomDoc::new();
        ui.apply_update(&b.attach_ui(sink)).expect("state applies");

        let (tx, rx) = std::sync::mpsc::channel();
        b.on_files_changed(move |paths| {
            let _ = tx.send(paths);
        });
        a.create_file("Extra.tsx", "export const x = 1;\n")
            .expect("create");
        while b.read("Extra.tsx").is_none() {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("b sees a change within 20 s");
        }
        assert_eq!(
            b.read("Extra.tsx").as_deref(),
            Some("export const x = 1;\n")
        );
        for u in lock(&got).iter() {
            ui.apply_update(u).expect("forwarded update applies");
        }
        assert_eq!(
            ui.read("Extra.tsx").as_deref(),
            Some("export const x = 1;\n")
        );
    }

    #[test]
    fn ui_updates_are_applied_and_logged_offline() {
        let server = TestServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let room = server.open(dir.path(), "offline", false);
        room.create_file("App.tsx", "export default 1;\n")
            .expect("create");
        let (sink, _got) = collected();
        let replica = RoomDoc::new();
        replica
            .apply_update(&room.attach_ui(sink))
            .expect("state applies");
        let update = replica
            .edit("App.tsx", &[TextEdit::insert(0, "// hi\n")])
            .expect("edit")
            .expect("changed");
        room.apply_from_ui(&update).expect("apply");
        assert_eq!(
            room.read("App.tsx").as_deref(),
            Some("// hi\nexport default 1;\n")
        );
        drop(room);
        let again = server.open(dir.path(), "offline", false);
        assert_eq!(
            again.read("App.tsx").as_deref(),
            Some("// hi\nexport default 1;\n")
        );
    }

    #[test]
    fn format_reaches_the_ui_as_an_update_that_keeps_concurrent_edits() {
        let server = TestServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let room = server.open(dir.path(), "fmt", false);
        room.create_file("x.ts", "const  a=1\n").expect("create");
        let (sink, got) = collected();
        let replica = RoomDoc::new();
        replica
            .apply_update(&room.attach_ui(sink))
            .expect("state applies");

        // The UI types at the end while the shell formats: both survive.
        let typed = replica
            .edit("x.ts", &[TextEdit::insert(11, "a;\n")])
            .expect("edit")
            .expect("changed");
        assert!(room.format_file("x.ts").expect("format"));
        room.apply_from_ui(&typed).expect("apply");
        for u in lock(&got).iter() {
            replica.apply_update(u).expect("shell update applies");
        }
        assert_eq!(room.read("x.ts").as_deref(), Some("const a = 1;\na;\n"));
        assert_eq!(replica.read("x.ts"), room.read("x.ts"));
        assert!(!room.format_file("x.ts").expect("format again"));
    }

    #[test]
    fn oversized_and_malformed_updates_are_refused() {
        let server = TestServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let room = server.open(dir.path(), "bad", false);
        let big = vec![0u8; MAX_UPDATE_BYTES + 1];
        assert_eq!(
            room.apply_from_ui(&big).expect_err("too big").kind(),
            "bad-request"
        );
        assert_eq!(
            room.apply_from_ui(&[0xff, 0xff, 0xff])
                .expect_err("garbage")
                .kind(),
            "collab"
        );
    }

    #[test]
    fn the_room_is_the_previews_module_source() {
        use spike_preview::{ModuleSource, Preview, PreviewRequest};
        let server = TestServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let room = server.open(dir.path(), "preview-source", false);
        for (path, text) in spike_templates::example::FILES {
            room.create_file(path, text).expect("create");
        }
        for (key, value) in spike_templates::example::META {
            room.set_meta(key, value).expect("meta");
        }
        let source: &dyn ModuleSource = &room;
        assert_eq!(source.entry(), "main.tsx");
        assert_eq!(source.title().as_deref(), Some("Spike example"));
        assert_eq!(source.paths(), room.paths());
        let preview = Preview::new();
        let get = |path: &str| {
            let response = preview.respond(
                source,
                &PreviewRequest {
                    method: "GET",
                    path,
                    body: &[],
                },
                &|_| None,
                &|_| {},
            );
            String::from_utf8(response.body).expect("utf8")
        };
        let page = get("/");
        assert!(page.contains("<meta name=\"spike-entry\" content=\"main.tsx\">"));
        assert!(page.contains("<title>Spike example</title>"));
        // `./App` from main.tsx, transpiled from the room's text.
        let app = get("/g1/App");
        assert!(app.contains("from \"react/jsx-runtime\""), "{app}");
        assert!(app.contains("from \"./components/Counter\""), "{app}");
        room.create_file("Broken.tsx", "export const x = <div>;\n")
            .expect("create");
        let errors = preview.room_errors(source);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].file.as_str(), errors[0].line), ("Broken.tsx", 2));
    }
}
