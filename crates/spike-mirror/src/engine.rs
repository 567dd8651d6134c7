//! The mirror: a watcher, a room observer and one engine thread that reconciles paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use sha2::{Digest, Sha256};
use spike_collab::{validate_path, CollabError, Session, SessionState};

use crate::diff::merge3;
use crate::MirrorError;
use spike_collab::minimal_edits;

/// Folders never mirrored, at any depth.
const EXCLUDED_DIRS: [&str; 3] = [".git", "node_modules", ".spike"];
/// Prefix of the temporary files atomic writes go through (never mirrored).
const TMP_PREFIX: &str = ".spike-tmp-";
/// How many bytes are looked at for a NUL to call a file binary (what git does).
const BINARY_SNIFF: usize = 8000;
/// Key of the room observer.
const OBSERVER: &str = "spike-mirror";
/// How often a path is reconciled again when the room changed under a computed edit.
const RETRIES: usize = 8;
/// How long the engine waits for quiet before saving the bases.
const STATE_SAVE_IDLE: Duration = Duration::from_millis(200);

/// Tuning of a [`Mirror`]. `Default` suits an interactive editor.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Files larger than this many bytes are skipped (default 2 MiB).
    pub max_file_bytes: u64,
    /// The watcher's debounce window (default 50 ms).
    pub debounce: Duration,
    /// How long a file deleted or emptied on disk may take to come back (delete + create and
    /// truncate + write saves, or the two halves of a rename that the watcher reports apart
    /// under load) before that reaches the room (default 1 s).
    pub delete_grace: Duration,
    /// How long [`Mirror::start`] waits for the session to sync before starting from the local
    /// replica alone (default 10 s).
    pub sync_timeout: Duration,
    /// Where to keep each file's base (the text both sides last agreed on) across restarts, so
    /// that changes made on both sides while the mirror was stopped are merged three-way too.
    /// `None` (the default): bases live in memory, and at start a file that differs between
    /// the folder and the room takes the folder's text (the room's stays in its history).
    pub state_path: Option<PathBuf>,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: 2 * 1024 * 1024,
            debounce: Duration::from_millis(50),
            delete_grace: Duration::from_millis(1000),
            sync_timeout: Duration::from_secs(10),
            state_path: None,
        }
    }
}

/// Why a path is not mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A `.git`, `node_modules` or `.spike` folder.
    Excluded,
    /// Ignored by one of the folder's `.gitignore` files.
    Ignored,
    /// A symlink (followed, it could lead out of the folder).
    Symlink,
    /// Larger than [`MirrorOptions::max_file_bytes`].
    TooLarge {
        /// The file's size in bytes.
        bytes: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Holds a NUL byte or is not UTF-8.
    Binary,
    /// Neither a regular file nor missing (a folder where the room has a file).
    NotAFile,
    /// A room path that would leave the folder or enter a protected one.
    Refused(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Excluded => f.write_str("excluded folder (.git, node_modules, .spike)"),
            Self::Ignored => f.write_str("ignored by .gitignore"),
            Self::Symlink => f.write_str("symlink"),
            Self::TooLarge { bytes, limit } => {
                write!(f, "too large ({bytes} bytes, limit {limit})")
            }
            Self::Binary => f.write_str("binary (NUL byte or not UTF-8)"),
            Self::NotAFile => f.write_str("not a regular file"),
            Self::Refused(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// What happened to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created.
    Created,
    /// Changed by this many minimal edits (room side) or rewritten (disk side, `edits` 0).
    Edited {
        /// Number of [`spike_collab::TextEdit`]s applied (0 for a file written on disk).
        edits: usize,
    },
    /// Deleted.
    Deleted,
    /// Renamed from this path.
    Renamed {
        /// The old path.
        from: String,
    },
}

/// Progress of a mirror, for a face to print. Paths are room paths (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorEvent {
    /// The first full reconciliation is done.
    Started {
        /// Number of files mirrored.
        files: usize,
        /// Whether the session was not synced with the server when it ran.
        offline: bool,
    },
    /// A disk change reached the room.
    ToRoom {
        /// The file.
        path: String,
        /// What changed.
        change: Change,
    },
    /// A room change reached the disk.
    ToDisk {
        /// The file.
        path: String,
        /// What changed.
        change: Change,
    },
    /// The file changed on both sides since the last sync; both changes were merged.
    Merged {
        /// The file.
        path: String,
    },
    /// A path is not mirrored (also listed by [`Mirror::skipped`]).
    Skipped {
        /// The path.
        path: String,
        /// Why.
        reason: SkipReason,
    },
    /// The watcher lost events; the whole folder was reconciled again.
    Rescanned,
    /// An error, rendered (the mirror keeps running).
    Error(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created => f.write_str("created"),
            Change::Edited { edits: 0 } => f.write_str("written"),
            Change::Edited { edits } => write!(f, "{edits} edit(s)"),
            Change::Deleted => f.write_str("deleted"),
            Change::Renamed { from } => write!(f, "renamed from {from}"),
        }
    }
}

/// One line per event, the way `spike mirror` prints them and the desktop app lists them.
impl std::fmt::Display for MirrorEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MirrorEvent::Started { files, offline } => {
                let how = if *offline {
                    "offline: working from the local log, will sync on reconnection"
                } else {
                    "synced with the server"
                };
                write!(f, "ready: {files} file(s) in sync ({how})")
            }
            MirrorEvent::ToRoom { path, change } => write!(f, "disk → room  {path}: {change}"),
            MirrorEvent::ToDisk { path, change } => write!(f, "room → disk  {path}: {change}"),
            MirrorEvent::Merged { path } => write!(f, "merged       {path}: changed on both sides"),
            MirrorEvent::Skipped { path, reason } => write!(f, "skipped      {path}: {reason}"),
            MirrorEvent::Rescanned => f.write_str("rescanned the folder (the watcher lost events)"),
            MirrorEvent::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// A running mirror of a room into a folder. See the crate docs. Dropping it stops the engine
/// and the watcher; [`Mirror::stop`] also closes the session.
pub struct Mirror {
    session: Arc<Session>,
    root: PathBuf,
    skipped: Arc<Mutex<BTreeMap<String, SkipReason>>>,
    input: Sender<Input>,
    engine: Option<JoinHandle<()>>,
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("room", &self.session.room())
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

enum Input {
    Disk(DebounceEventResult),
    Room(Vec<String>),
    Stop,
}

impl Mirror {
    /// Waits up to [`MirrorOptions::sync_timeout`] for the session to sync, starts watching
    /// `dir` and reconciles every file of the folder and the room once (see the crate docs for
    /// the rules), then keeps them in sync on a thread of its own. `on_event` is called from that
    /// thread. Must be called inside a tokio runtime.
    ///
    /// Errors: [`MirrorError::NotADirectory`], [`MirrorError::Io`] when the folder cannot be
    /// resolved, [`MirrorError::Watch`] when the watcher cannot start.
    pub async fn start(
        session: impl Into<Arc<Session>>,
        dir: impl AsRef<Path>,
        options: MirrorOptions,
        on_event: impl Fn(&MirrorEvent) + Send + 'static,
    ) -> Result<Self, MirrorError> {
        let session: Arc<Session> = session.into();
        let dir = dir.as_ref();
        let root = dir.canonicalize().map_err(|e| MirrorError::io(dir, e))?;
        if !root.is_dir() {
            return Err(MirrorError::NotADirectory(root));
        }
        let offline = session
            .wait_status(options.sync_timeout, "synced", |s| {
                s.state == SessionState::Synced
            })
            .await
            .is_err();
        let (input, rx) = mpsc::channel();
        let room_tx = Mutex::new(input.clone());
        session.with_doc(|doc| {
            doc.observe_files(OBSERVER, move |change| {
                let mut paths = change.edited.clone();
                paths.extend(change.entries.iter().cloned());
                if let Ok(tx) = room_tx.lock() {
                    let _ = tx.send(Input::Room(paths));
                }
            })
        });
        let disk_tx = input.clone();
        let watch_err = |source| MirrorError::Watch {
            path: root.clone(),
            source,
        };
        let mut debouncer = new_debouncer(options.debounce, None, move |r| {
            let _ = disk_tx.send(Input::Disk(r));
        })
        .map_err(watch_err)?;
        debouncer
            .watch(&root, RecursiveMode::Recursive)
            .map_err(watch_err)?;
        let skipped = Arc::new(Mutex::new(BTreeMap::new()));
        let engine = Engine {
            state_dirty: false,
            session: session.clone(),
            gitignore: load_gitignore(&root),
            root: root.clone(),
            options: options.clone(),
            bases: load_bases(&root, options.state_path.as_deref()),
            settling: HashMap::new(),
            skipped: skipped.clone(),
            on_event: Box::new(on_event),
        };
        let thread = std::thread::Builder::new()
            .name("spike-mirror".into())
            .spawn(move || engine.run(rx, offline))
            .map_err(|e| MirrorError::io(&root, e))?;
        Ok(Self {
            session,
            root,
            skipped,
            input,
            engine: Some(thread),
            debouncer: Some(debouncer),
        })
    }

    /// The room session (read the room, or edit it as any local client).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The mirrored folder, canonicalized.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every path not mirrored right now, with the reason.
    pub fn skipped(&self) -> BTreeMap<String, SkipReason> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops watching, waits for the engine thread to finish what it is doing, then closes
    /// the session if the mirror was its last holder (flushing nothing: every change is already
    /// in the session's log). A session shared with its owner (the desktop app's room) stays
    /// open.
    pub async fn stop(mut self) {
        self.shutdown();
        let engine = self.engine.take();
        let debouncer = self.debouncer.take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(d) = debouncer {
                d.stop();
            }
            if let Some(t) = engine {
                let _ = t.join();
            }
        })
        .await;
        let session = self.session.clone();
        drop(self);
        if let Ok(session) = Arc::try_unwrap(session) {
            session.close().await;
        }
    }

    fn shutdown(&self) {
        let _ = self.input.send(Input::Stop);
        self.session.with_doc(|d| d.unobserve_files(OBSERVER));
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The last text both sides agreed on, and the SHA-256 of its bytes.
struct Base {
    text: String,
    hash: Hash,
}

type Hash = [u8; 32];

fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

enum Disk {
    Missing,
    Text(String, Hash),
    Skip(SkipReason),
}

struct Engine {
    session: Arc<Session>,
    root: PathBuf,
    options: MirrorOptions,
    gitignore: Gitignores,
    bases: HashMap<String, Base>,
    /// Files that vanished or became empty on disk, and when that reaches the room unless they
    /// come back first.
    settling: HashMap<String, Instant>,
    skipped: Arc<Mutex<BTreeMap<String, SkipReason>>>,
    on_event: Box<dyn Fn(&MirrorEvent) + Send>,
    /// Whether the bases changed since they were last saved to [`MirrorOptions::state_path`].
    state_dirty: bool,
}

impl Engine {
    fn run(mut self, rx: Receiver<Input>, offline: bool) {
        let files = self.full_scan();
        self.state_dirty = true;
        self.emit(MirrorEvent::Started { files, offline });
        loop {
            let wait = self
                .settling
                .values()
                .min()
                .map(|due| due.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600))
                // Bases are saved once things are quiet, not after every write of a burst.
                .min(if self.state_dirty {
                    STATE_SAVE_IDLE
                } else {
                    Duration::MAX
                });
            let mut inputs = match rx.recv_timeout(wait) {
                Ok(input) => vec![input],
                Err(RecvTimeoutError::Timeout) => {
                    self.save_bases();
                    Vec::new()
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.save_bases();
                    return;
                }
            };
            // Batch whatever else is queued: a burst of writes costs one pass per path.
            inputs.extend(rx.try_iter());
            let mut dirty = BTreeSet::new();
            let mut rescan = false;
            for input in inputs {
                match input {
                    Input::Stop => {
                        self.save_bases();
                        return;
                    }
                    Input::Room(paths) => dirty.extend(paths),
                    Input::Disk(Ok(events)) => {
                        for event in &events {
                            self.disk_event(event, &mut dirty, &mut rescan);
                        }
                    }
                    Input::Disk(Err(errors)) => {
                        for e in errors {
                            self.emit(MirrorEvent::Error(format!("watcher: {e}")));
                        }
                        rescan = true;
                    }
                }
            }
            let now = Instant::now();
            dirty.extend(
                self.settling
                    .iter()
                    .filter(|(_, due)| **due <= now)
                    .map(|(p, _)| p.clone()),
            );
            if !rescan {
                self.match_renames(&mut dirty);
            }
            self.state_dirty |= rescan || !dirty.is_empty();
            if rescan {
                self.gitignore = load_gitignore(&self.root);
                self.full_scan();
                self.emit(MirrorEvent::Rescanned);
            } else {
                for path in dirty {
                    self.sync_logged(&path);
                }
            }
        }
    }

    /// Writes the bases to [`MirrorOptions::state_path`] (a temporary file, then a rename).
    fn save_bases(&mut self) {
        let Some(path) = self.options.state_path.clone() else {
            return;
        };
        if !self.state_dirty {
            return;
        }
        let bases: serde_json::Map<String, serde_json::Value> = self
            .bases
            .iter()
            .map(|(p, b)| (p.clone(), serde_json::Value::String(b.text.clone())))
            .collect();
        let state = serde_json::json!({
            "version": 1,
            "root": self.root.to_string_lossy(),
            "bases": bases,
        });
        let tmp = path.with_extension("tmp");
        let result =
            std::fs::write(&tmp, state.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
        match result {
            Ok(()) => self.state_dirty = false,
            Err(e) => self.emit(MirrorEvent::Error(MirrorError::io(path, e).to_string())),
        }
    }

    fn emit(&self, event: MirrorEvent) {
        (self.on_event)(&event);
    }

    /// Reconciles every path of the folder, the room and the bases. Returns how many files are
    /// mirrored afterwards.
    fn full_scan(&mut self) -> usize {
        let mut paths = BTreeSet::new();
        let root = self.root.clone();
        self.walk(&root, &mut paths);
        paths.extend(self.session.files().into_keys());
        paths.extend(self.bases.keys().cloned());
        for path in &paths {
            self.sync_logged(path);
        }
        self.bases.len()
    }

    /// Adds every file under `dir` to `out`, recording what is skipped on the way.
    fn walk(&mut self, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(rel) = self.rel(&path) else { continue };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            if kind.is_dir() && EXCLUDED_DIRS.contains(&name.as_ref()) {
                self.skip(&rel, SkipReason::Excluded);
            } else if kind.is_symlink() {
                self.skip(&rel, SkipReason::Symlink);
            } else if self.gitignored(&rel, kind.is_dir()) {
                self.skip(&rel, SkipReason::Ignored);
            } else if kind.is_dir() {
                self.walk(&path, out);
            } else {
                out.insert(rel);
            }
        }
    }

    fn disk_event(
        &mut self,
        event: &notify::Event,
        dirty: &mut BTreeSet<String>,
        rescan: &mut bool,
    ) {
        if event.need_rescan() {
            *rescan = true;
            return;
        }
        match event.kind {
            // A write finishing is a change: the debouncer folds the modifications of a file it
            // saw created into that creation, which may be reported while the write is going on.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if event.paths.len() == 2 => {
                if let (Some(from), Some(to)) =
                    (self.rel(&event.paths[0]), self.rel(&event.paths[1]))
                {
                    if self.try_rename(&from, &to) {
                        return;
                    }
                }
            }
            _ => {}
        }
        for path in &event.paths {
            let Some(rel) = self.rel(path) else { continue };
            if excluded(&rel) {
                continue;
            }
            if rel == ".gitignore" || rel.ends_with("/.gitignore") {
                self.gitignore = load_gitignore(&self.root);
                *rescan = true;
            }
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => {
                    let prefix = format!("{rel}/");
                    dirty.extend(
                        self.bases
                            .keys()
                            .filter(|p| p.starts_with(&prefix))
                            .cloned(),
                    );
                    self.walk(path, dirty);
                }
                Ok(_) => {
                    dirty.insert(rel);
                }
                Err(_) => {
                    let prefix = format!("{rel}/");
                    dirty.extend(
                        self.bases
                            .keys()
                            .filter(|p| p.starts_with(&prefix))
                            .cloned(),
                    );
                    dirty.insert(rel);
                }
            }
        }
    }

    /// A rename on disk of a file in sync with the room becomes a rename in the room. Returns
    /// false when it does not apply (the caller then reconciles both paths).
    fn try_rename(&mut self, from: &str, to: &str) -> bool {
        let Some(base) = self.bases.get(from) else {
            return false;
        };
        if excluded(to) || validate_path(to).is_err() || self.gitignored(to, false) {
            return false;
        }
        let to_is_file = std::fs::symlink_metadata(self.root.join(to)).is_ok_and(|m| m.is_file());
        let from_gone = std::fs::symlink_metadata(self.root.join(from)).is_err();
        let room_in_sync = self.session.read(from).as_deref() == Some(base.text.as_str());
        if !to_is_file || !from_gone || !room_in_sync || self.session.read(to).is_some() {
            return false;
        }
        if let Err(e) = self.session.rename_file(from, to) {
            self.emit(MirrorEvent::Error(MirrorError::room(to, e).to_string()));
            return false;
        }
        if let Some(base) = self.bases.remove(from) {
            self.bases.insert(to.to_owned(), base);
        }
        self.settling.remove(from);
        self.emit(MirrorEvent::ToRoom {
            path: to.to_owned(),
            change: Change::Renamed {
                from: from.to_owned(),
            },
        });
        self.sync_logged(to);
        true
    }

    /// The debouncer folds a rename into a creation of the new path when the old one was itself
    /// created or renamed within the window (an atomic write followed by a rename): when new
    /// files appear, look for synced files that vanished with the same content, and rename those.
    fn match_renames(&mut self, dirty: &mut BTreeSet<String>) {
        let created: Vec<String> = dirty
            .iter()
            .filter(|p| !self.bases.contains_key(*p))
            .filter(|p| std::fs::symlink_metadata(self.root.join(p)).is_ok_and(|m| m.is_file()))
            .cloned()
            .collect();
        if created.is_empty() {
            return;
        }
        let mut missing: Vec<String> = self
            .bases
            .keys()
            .filter(|p| std::fs::symlink_metadata(self.root.join(p)).is_err())
            .cloned()
            .collect();
        missing.sort();
        for new in created {
            let Ok(Some(hash)) = self.disk_hash(&new) else {
                continue;
            };
            let same = missing
                .iter()
                .position(|old| self.bases.get(old).is_some_and(|b| b.hash == hash));
            if let Some(i) = same {
                let old = missing.remove(i);
                if self.try_rename(&old, &new) {
                    dirty.remove(&old);
                    dirty.remove(&new);
                }
            }
        }
        dirty.extend(missing);
    }

    /// The room path of a path under the root, if it has one.
    fn rel(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(&self.root).ok()?;
        let mut parts = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_str()?),
                _ => return None,
            }
        }
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    fn gitignored(&self, rel: &str, is_dir: bool) -> bool {
        self.gitignore.ignores(&self.root, rel, is_dir)
    }

    fn skip(&self, rel: &str, reason: SkipReason) {
        let fresh = match self.skipped.lock() {
            Ok(mut s) => s.insert(rel.to_owned(), reason.clone()).as_ref() != Some(&reason),
            Err(_) => false,
        };
        if fresh {
            self.emit(MirrorEvent::Skipped {
                path: rel.to_owned(),
                reason,
            });
        }
    }

    fn unskip(&self, rel: &str) {
        if let Ok(mut s) = self.skipped.lock() {
            s.remove(rel);
        }
    }

    fn sync_logged(&mut self, rel: &str) {
        for _ in 0..RETRIES {
            match self.sync_path(rel) {
                Ok(true) => return,
                Ok(false) => continue,
                Err(MirrorError::Refused { path, reason }) => {
                    self.skip(&path, SkipReason::Refused(reason));
                    return;
                }
                Err(e) => {
                    self.emit(MirrorEvent::Error(e.to_string()));
                    return;
                }
            }
        }
        tracing::warn!(
            path = rel,
            "room kept changing while syncing; will retry on next change"
        );
    }

    /// Reconciles one path between disk, room and base. `Ok(false)` asks for another pass (the
    /// room changed between reading it and editing it).
    fn sync_path(&mut self, rel: &str) -> Result<bool, MirrorError> {
        if let Err(e) = validate_path(rel) {
            return Err(refused(rel, &e.to_string()));
        }
        if excluded(rel) {
            return Err(refused(rel, "inside .git, node_modules or .spike"));
        }
        if self.gitignored(rel, false) {
            self.skip(rel, SkipReason::Ignored);
            return Ok(true);
        }
        let disk = match self.read_disk(rel)? {
            Disk::Skip(reason) => {
                self.skip(rel, reason);
                return Ok(true);
            }
            Disk::Missing => None,
            Disk::Text(text, hash) => Some((text, hash)),
        };
        self.unskip(rel);
        let room = self.session.read(rel);
        let base = self.bases.get(rel);
        let disk_changed = match (&disk, base) {
            (None, None) => false,
            (Some((_, h)), Some(b)) => *h != b.hash,
            _ => true,
        };
        let room_changed = room.as_deref() != base.map(|b| b.text.as_str());
        // A file that just vanished or became empty is often half-way through a save (delete +
        // create, or truncate + write): give it a moment to settle before acting on it.
        let vanished = disk.as_ref().is_none_or(|(text, _)| text.is_empty());
        if disk_changed && vanished && base.is_some_and(|b| !b.text.is_empty()) {
            let now = Instant::now();
            let due = *self
                .settling
                .entry(rel.to_owned())
                .or_insert(now + self.options.delete_grace);
            if due > now {
                return Ok(true);
            }
        }
        self.settling.remove(rel);
        match (disk_changed, room_changed) {
            (false, false) => Ok(true),
            (true, false) => self.disk_to_room(rel, disk, room),
            (false, true) => self.room_to_disk(rel, room),
            (true, true) => self.merge(rel, disk, room),
        }
    }

    fn disk_to_room(
        &mut self,
        rel: &str,
        disk: Option<(String, Hash)>,
        room: Option<String>,
    ) -> Result<bool, MirrorError> {
        match (disk, room) {
            (None, None) => {
                self.bases.remove(rel);
            }
            (None, Some(_)) => {
                self.session
                    .delete_file(rel)
                    .map_err(|e| MirrorError::room(rel, e))?;
                self.bases.remove(rel);
                self.to_room(rel, Change::Deleted);
            }
            (Some((text, hash)), None) => {
                self.session
                    .create_file(rel, &text)
                    .map_err(|e| MirrorError::room(rel, e))?;
                self.bases.insert(rel.to_owned(), Base { text, hash });
                self.to_room(rel, Change::Created);
            }
            (Some((text, hash)), Some(room)) => {
                let Some(edits) = self.edit_room(rel, &room, &text)? else {
                    return Ok(false);
                };
                self.bases.insert(rel.to_owned(), Base { text, hash });
                self.to_room(rel, Change::Edited { edits });
            }
        }
        Ok(true)
    }

    /// Applies the minimal edits from `room` to `new` ([`Session::replace_text`]), unless the
    /// room's text is no longer `room` (then `None`: reconcile again, merging three ways). The
    /// count is the number of edits, for the change report.
    fn edit_room(&self, rel: &str, room: &str, new: &str) -> Result<Option<usize>, MirrorError> {
        match self.session.replace_text(rel, room, new) {
            // A remote update landed since `room` was read: offsets computed against it would hit
            // the wrong characters, so nothing was applied.
            Err(CollabError::TextChanged { .. }) => Ok(None),
            Err(e) => Err(MirrorError::room(rel, e)),
            Ok(false) => Ok(Some(0)),
            // Counted again only for the report (the diff of one saved file is cheap).
            Ok(true) => Ok(Some(minimal_edits(room, new).len())),
        }
    }

    fn room_to_disk(&mut self, rel: &str, room: Option<String>) -> Result<bool, MirrorError> {
        let expected = self.bases.get(rel).map(|b| b.hash);
        match room {
            None => {
                let path = self.root.join(rel);
                if self.disk_hash(rel)? == expected {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(MirrorError::io(path, e)),
                    }
                    self.bases.remove(rel);
                    self.to_disk(rel, Change::Deleted);
                }
            }
            Some(text) => {
                let created = expected.is_none();
                if self.write_atomic(rel, &text, expected)? {
                    let hash = hash(text.as_bytes());
                    self.bases.insert(rel.to_owned(), Base { text, hash });
                    let change = if created {
                        Change::Created
                    } else {
                        Change::Edited { edits: 0 }
                    };
                    self.to_disk(rel, change);
                }
            }
        }
        Ok(true)
    }

    fn merge(
        &mut self,
        rel: &str,
        disk: Option<(String, Hash)>,
        room: Option<String>,
    ) -> Result<bool, MirrorError> {
        match (disk, room) {
            // Gone from the room and changed (or gone) on disk: the disk's side is kept, exactly
            // as a disk-only change would be.
            (disk, None) => return self.disk_to_room(rel, disk, None),
            // Deleted on one side, changed on the other: keep the changes.
            (None, Some(text)) => {
                if self.write_atomic(rel, &text, None)? {
                    let hash = hash(text.as_bytes());
                    self.bases.insert(rel.to_owned(), Base { text, hash });
                    self.to_disk(rel, Change::Created);
                }
            }
            (Some((disk, disk_hash)), Some(room)) => {
                if disk == room {
                    self.bases.insert(
                        rel.to_owned(),
                        Base {
                            text: disk,
                            hash: disk_hash,
                        },
                    );
                    return Ok(true);
                }
                let merged = match self.bases.get(rel) {
                    Some(base) => {
                        merge3(&base.text, &disk, &room).map_err(|e| MirrorError::room(rel, e))?
                    }
                    // No common base (first sync of a file present on both sides): the folder's
                    // text wins; the room's stays in its history.
                    None => disk.clone(),
                };
                if self.edit_room(rel, &room, &merged)?.is_none() {
                    return Ok(false);
                }
                if self.write_atomic(rel, &merged, Some(disk_hash))? {
                    let hash = hash(merged.as_bytes());
                    self.bases
                        .insert(rel.to_owned(), Base { text: merged, hash });
                } else {
                    // Saved again meanwhile: the next pass merges that save from `disk`.
                    self.bases.insert(
                        rel.to_owned(),
                        Base {
                            text: disk,
                            hash: disk_hash,
                        },
                    );
                }
                self.emit(MirrorEvent::Merged {
                    path: rel.to_owned(),
                });
            }
        }
        Ok(true)
    }

    fn to_room(&self, rel: &str, change: Change) {
        self.emit(MirrorEvent::ToRoom {
            path: rel.to_owned(),
            change,
        });
    }

    fn to_disk(&self, rel: &str, change: Change) {
        self.emit(MirrorEvent::ToDisk {
            path: rel.to_owned(),
            change,
        });
    }

    fn read_disk(&self, rel: &str) -> Result<Disk, MirrorError> {
        if self.symlink_on_the_way(rel) {
            return Ok(Disk::Skip(SkipReason::Symlink));
        }
        let path = self.root.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Disk::Missing),
            Err(e) => return Err(MirrorError::io(path, e)),
        };
        if meta.file_type().is_symlink() {
            return Ok(Disk::Skip(SkipReason::Symlink));
        }
        if !meta.is_file() {
            return Ok(Disk::Skip(SkipReason::NotAFile));
        }
        let limit = self.options.max_file_bytes;
        if meta.len() > limit {
            return Ok(Disk::Skip(SkipReason::TooLarge {
                bytes: meta.len(),
                limit,
            }));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Disk::Missing),
            Err(e) => return Err(MirrorError::io(path, e)),
        };
        if bytes.len() as u64 > limit {
            return Ok(Disk::Skip(SkipReason::TooLarge {
                bytes: bytes.len() as u64,
                limit,
            }));
        }
        if bytes[..bytes.len().min(BINARY_SNIFF)].contains(&0) {
            return Ok(Disk::Skip(SkipReason::Binary));
        }
        let hash = hash(&bytes);
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Disk::Text(text, hash)),
            Err(_) => Ok(Disk::Skip(SkipReason::Binary)),
        }
    }

    /// The hash of the file's bytes now, `None` when missing.
    fn disk_hash(&self, rel: &str) -> Result<Option<Hash>, MirrorError> {
        let path = self.root.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(hash(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(MirrorError::io(path, e)),
        }
    }

    /// Whether a folder between the root and `rel` is a symlink.
    fn symlink_on_the_way(&self, rel: &str) -> bool {
        let mut dir = self.root.clone();
        let mut parts: Vec<&str> = rel.split('/').collect();
        parts.pop();
        parts.into_iter().any(|part| {
            dir.push(part);
            std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink())
        })
    }

    /// Writes `text` to `rel` through a temporary file and a rename, creating folders, unless
    /// the file no longer holds the bytes hashed `expected` (`None`: missing); returns whether
    /// it wrote.
    fn write_atomic(
        &self,
        rel: &str,
        text: &str,
        expected: Option<Hash>,
    ) -> Result<bool, MirrorError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if self.symlink_on_the_way(rel) {
            return Err(refused(rel, "a parent folder is a symlink"));
        }
        let path = self.root.join(rel);
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| MirrorError::io(&parent, e))?;
        // Created folders may race with a symlink swap: check the resolved parent stays inside.
        let resolved = parent
            .canonicalize()
            .map_err(|e| MirrorError::io(&parent, e))?;
        if !resolved.starts_with(&self.root) {
            return Err(refused(rel, "resolves outside the folder"));
        }
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(refused(rel, "is a symlink on disk"));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(
            "{TMP_PREFIX}{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&tmp, text).map_err(|e| MirrorError::io(&tmp, e))?;
        // Last check before replacing: an editor may have saved since we looked.
        if self.disk_hash(rel)? != expected {
            let _ = std::fs::remove_file(&tmp);
            return Ok(false);
        }
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            MirrorError::io(&path, e)
        })?;
        Ok(true)
    }
}

fn refused(path: &str, reason: &str) -> MirrorError {
    MirrorError::Refused {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The bases saved by an earlier run for this same folder (none when missing or unreadable).
fn load_bases(root: &Path, path: Option<&Path>) -> HashMap<String, Base> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return HashMap::new();
    };
    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
        return HashMap::new();
    };
    if state["version"] != 1 || state["root"].as_str() != Some(&*root.to_string_lossy()) {
        return HashMap::new();
    }
    let Some(bases) = state["bases"].as_object() else {
        return HashMap::new();
    };
    bases
        .iter()
        .filter_map(|(p, text)| {
            let text = text.as_str()?.to_owned();
            let hash = hash(text.as_bytes());
            Some((p.clone(), Base { text, hash }))
        })
        .collect()
}

/// Whether a room path lies in an excluded folder or is one of the mirror's temporary files.
fn excluded(rel: &str) -> bool {
    rel.split('/')
        .any(|seg| EXCLUDED_DIRS.contains(&seg) || seg.starts_with(TMP_PREFIX))
}

/// Every `.gitignore` of a folder, each matching the paths under its own directory, as git
/// reads them (gitignore(5)): for a path, the deepest `.gitignore` with a matching pattern
/// decides, so a nested file can ignore more or re-include (`!pattern`) what a parent ignored.
struct Gitignores {
    /// `(directory relative to the root, "" for the root; its matcher)`, deepest first.
    matchers: Vec<(String, Gitignore)>,
}

impl Gitignores {
    fn ignores(&self, root: &Path, rel: &str, is_dir: bool) -> bool {
        for (dir, matcher) in &self.matchers {
            let under = dir.is_empty()
                || rel
                    .strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            if !under {
                continue;
            }
            match matcher.matched_path_or_any_parents(root.join(rel), is_dir) {
                ignore::Match::Ignore(_) => return true,
                ignore::Match::Whitelist(_) => return false,
                ignore::Match::None => {}
            }
        }
        false
    }
}

/// The folder's `.gitignore` files, found by a walk that skips the excluded folders and the
/// folders an outer `.gitignore` ignores (git never reads those). A file that does not parse
/// matches nothing.
fn load_gitignore(root: &Path) -> Gitignores {
    let walk = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .parents(false)
        .filter_entry(|entry| {
            entry
                .file_name()
                .to_str()
                .is_none_or(|n| !EXCLUDED_DIRS.contains(&n))
        })
        .build();
    let mut matchers: Vec<(String, Gitignore)> = walk
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == ".gitignore" && e.file_type().is_some_and(|t| t.is_file()))
        .filter_map(|e| {
            let dir = e.path().parent()?;
            let rel = dir.strip_prefix(root).ok()?;
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_str())
                .collect::<Option<Vec<_>>>()?
                .join("/");
            let mut builder = GitignoreBuilder::new(dir);
            if builder.add(e.path()).is_some() {
                tracing::warn!(path = %e.path().display(), "a .gitignore line does not parse; skipping it");
            }
            Some((rel, builder.build().unwrap_or_else(|_| Gitignore::empty())))
        })
        .collect();
    matchers.sort_by_key(|(dir, _)| {
        std::cmp::Reverse(dir.matches('/').count() + usize::from(!dir.is_empty()))
    });
    Gitignores { matchers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_paths() {
        assert!(excluded(".git/config"));
        assert!(excluded("a/node_modules/x.js"));
        assert!(excluded("src/.spike-tmp-1-2-App.tsx"));
        assert!(!excluded("src/App.tsx"));
        assert!(!excluded(".gitignore"));
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn events_read_as_one_line_each() {
        let to_room = MirrorEvent::ToRoom {
            path: "App.tsx".into(),
            change: Change::Edited { edits: 2 },
        };
        assert_eq!(to_room.to_string(), "disk → room  App.tsx: 2 edit(s)");
        let skipped = MirrorEvent::Skipped {
            path: "logo.png".into(),
            reason: SkipReason::Binary,
        };
        assert_eq!(
            skipped.to_string(),
            "skipped      logo.png: binary (NUL byte or not UTF-8)"
        );
    }
}
