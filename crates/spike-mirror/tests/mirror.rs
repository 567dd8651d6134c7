//! The mirror end to end: real files, the real watcher, a spike-server on loopback and a second
//! spike-collab client in the room.
#![allow(missing_docs)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spike_collab::yrs::{Map, TextPrelim, Transact};
use spike_collab::{FilesChange, RoomDoc, Session, SessionConfig, SessionState, TextEdit};
use spike_mirror::{Mirror, MirrorEvent, MirrorOptions, SkipReason};
use spike_server::{Server, ServerConfig};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Every wait ends as soon as its condition holds; this only bounds a failing test.
const T: Duration = Duration::from_secs(20);

struct Rig {
    url: String,
    /// Shuts the server down when the rig is dropped.
    _server: spike_server::Running,
    _data: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Self {
        let data = tempfile::tempdir().expect("server data dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let mut config = ServerConfig::new(data.path());
        config.unload_grace = Duration::from_millis(200);
        let server = Server::new(config)
            .expect("server")
            .spawn(listener)
            .expect("serving");
        Self {
            url: server.rooms_url(),
            _server: server,
            _data: data,
        }
    }

    fn session(&self, room: &str, client_id: u64) -> Session {
        self.session_with(room, client_id, None)
    }

    fn session_with(&self, room: &str, client_id: u64, log: Option<&Path>) -> Session {
        let mut c = SessionConfig::new(&self.url, room);
        c.log_path = log.map(Path::to_path_buf);
        c.min_backoff = Duration::from_millis(5);
        c.max_backoff = Duration::from_millis(100);
        c.client_id = Some(client_id);
        Session::open(c).expect("session")
    }

    /// A peer in `room`, synced.
    async fn peer(&self, room: &str) -> Session {
        let s = self.session(room, 2);
        s.wait_confirmed(T).await.expect("peer synced");
        s
    }

    async fn mirror(&self, room: &str, dir: &Path) -> (Mirror, Arc<Mutex<Vec<MirrorEvent>>>) {
        self.mirror_with(self.session(room, 1), dir, MirrorOptions::default())
            .await
    }

    async fn mirror_with(
        &self,
        session: Session,
        dir: &Path,
        options: MirrorOptions,
    ) -> (Mirror, Arc<Mutex<Vec<MirrorEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mirror = Mirror::start(session, dir, options, move |e| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.clone());
            }
        })
        .await
        .expect("mirror");
        let started = events.clone();
        wait("the first reconciliation", || {
            started
                .lock()
                .is_ok_and(|v| v.iter().any(|e| matches!(e, MirrorEvent::Started { .. })))
        })
        .await;
        (mirror, events)
    }
}

async fn wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Records the `files` changes a session sees.
fn record(session: &Session) -> Arc<Mutex<Vec<FilesChange>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    session.with_doc(|d| {
        d.observe_files("test", move |c| {
            if let Ok(mut v) = sink.lock() {
                v.push(c.clone());
            }
        })
    });
    seen
}

const THREE: &str = "line one\nline two\nline three\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_edit_reaches_the_room_as_a_minimal_edit() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("minimal").await;
    peer.create_file("App.tsx", THREE)?;
    peer.wait_confirmed(T).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("App.tsx");
    let (mirror, _) = rig.mirror("minimal", dir.path()).await;
    wait("the room file on disk", || {
        read(&file).as_deref() == Some(THREE)
    })
    .await;

    // The peer edits the first line while offline, the disk the last: a replace-all from the
    // mirror would lose or duplicate the peer's edit when it comes back.
    peer.set_online(false);
    peer.wait_status(T, "offline", |s| s.state == SessionState::Offline)
        .await?;
    peer.edit("App.tsx", &[TextEdit::insert(4, " ONE")])?;
    std::fs::write(&file, "line one\nline two\nline THREE\n")?;
    wait("the disk edit in the mirror's room", || {
        mirror.session().read("App.tsx").as_deref() == Some("line one\nline two\nline THREE\n")
    })
    .await;
    peer.set_online(true);
    let both = "line ONE one\nline two\nline THREE\n";
    peer.wait_doc(T, "both edits", |d| {
        d.read("App.tsx").as_deref() == Some(both)
    })
    .await?;
    wait("both edits on disk", || {
        read(&file).as_deref() == Some(both)
    })
    .await;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_edit_is_written_atomically() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("remote").await;
    let dir = tempfile::tempdir()?;
    let (mirror, events) = rig.mirror("remote", dir.path()).await;
    peer.create_file("src/App.tsx", THREE)?;
    let file = dir.path().join("src/App.tsx");
    wait("the new file on disk", || {
        read(&file).as_deref() == Some(THREE)
    })
    .await;
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&file)?.ino()
    };
    peer.edit("src/App.tsx", &[TextEdit::insert(0, "// hi\n")])?;
    let want = format!("// hi\n{THREE}");
    wait("the edit on disk", || {
        read(&file).as_deref() == Some(want.as_str())
    })
    .await;
    // Replaced by a rename (a new inode), not rewritten in place, and no temporary file left.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert_ne!(std::fs::metadata(&file)?.ino(), inode);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path().join("src"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names.len(), 1, "{names:?}");
    // Its own write is recognised by hash: nothing went back to the room.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_room = events.lock().map(|v| {
        v.iter()
            .filter(|e| matches!(e, MirrorEvent::ToRoom { .. }))
            .count()
    });
    assert_eq!(to_room.ok(), Some(0));
    // A deletion in the room deletes the file.
    peer.delete_file("src/App.tsx")?;
    wait("the file deleted", || !file.exists()).await;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disk_and_remote_edits_are_both_kept() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("concurrent").await;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a.ts");
    let (mirror, _) = rig.mirror("concurrent", dir.path()).await;
    peer.create_file("a.ts", THREE)?;
    wait("the file on disk", || read(&file).as_deref() == Some(THREE)).await;
    for round in 0..5 {
        let before = read(&file).unwrap_or_default();
        let lines: Vec<&str> = before.lines().collect();
        // The disk appends to the last line, the peer to the first, at the same moment. The
        // disk goes first: written after the peer's edit, `before` could already be stale (the
        // mirror may have written the peer's edit to the file meanwhile), and saving a stale
        // text is a deletion of what it lacks, as it would be from any editor.
        let first = lines[0].encode_utf16().count() as u32;
        std::fs::write(&file, format!("{before}disk {round}\n"))?;
        peer.edit("a.ts", &[TextEdit::insert(first, format!(" r{round}"))])?;
        let both = |text: &str| {
            text.contains(&format!(" r{round}\n")) && text.contains(&format!("disk {round}\n"))
        };
        peer.wait_doc(T, "both edits in the room", |d| {
            d.read("a.ts").is_some_and(|t| both(&t))
        })
        .await?;
        wait("both edits on disk", || {
            read(&file).is_some_and(|t| both(&t))
        })
        .await;
    }
    wait("disk and room agree", || {
        read(&file) == peer.read("a.ts") && mirror.session().read("a.ts") == peer.read("a.ts")
    })
    .await;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_are_one_modification() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("saves").await;
    peer.create_file("App.tsx", THREE)?;
    peer.wait_confirmed(T).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("App.tsx");
    let (mirror, _) = rig.mirror("saves", dir.path()).await;
    wait("the file on disk", || read(&file).as_deref() == Some(THREE)).await;
    let seen = record(&peer);

    // vim/VS Code style: write a temporary file, rename it over the original.
    let tmp = dir.path().join(".App.tsx.swp");
    std::fs::write(&tmp, "line one\nline 2\nline three\n")?;
    std::fs::rename(&tmp, &file)?;
    peer.wait_doc(T, "the save", |d| {
        d.read("App.tsx").as_deref() == Some("line one\nline 2\nline three\n")
    })
    .await?;
    // Delete + create.
    std::fs::remove_file(&file)?;
    std::fs::write(&file, "line 1\nline 2\nline three\n")?;
    peer.wait_doc(T, "the second save", |d| {
        d.read("App.tsx").as_deref() == Some("line 1\nline 2\nline three\n")
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        seen.iter().all(|c| c.entries.is_empty()),
        "a save touched the files map (delete/create/temp file): {seen:?}"
    );
    assert_eq!(peer.files().into_keys().collect::<Vec<_>>(), ["App.tsx"]);
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_writes_converges() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("burst").await;
    let dir = tempfile::tempdir()?;
    let (mirror, events) = rig.mirror("burst", dir.path()).await;
    let start = Instant::now();
    for i in 0..1000 {
        let f = i % 10;
        std::fs::write(
            dir.path().join(format!("f{f}.ts")),
            format!("export const v{f} = {i};\n"),
        )?;
    }
    let wrote = start.elapsed();
    peer.wait_doc(T, "the last write of every file", |d| {
        (0..10).all(|f| {
            d.read(&format!("f{f}.ts")).as_deref()
                == Some(format!("export const v{f} = {};\n", 990 + f).as_str())
        })
    })
    .await
    .inspect_err(|_| {
        // What each side holds, to tell a lost event from a lost edit.
        for f in 0..10 {
            let path = format!("f{f}.ts");
            eprintln!(
                "{path}: disk {:?} mirror {:?} peer {:?}",
                read(&dir.path().join(&path)),
                mirror.session().read(&path),
                peer.read(&path)
            );
        }
        if let Ok(v) = events.lock() {
            eprintln!("last events: {:?}", &v[v.len().saturating_sub(20)..]);
        }
    })?;
    let converged = start.elapsed();
    println!("burst: 1000 writes to 10 files in {wrote:?}; peer converged after {converged:?}");
    assert!(converged < Duration::from_secs(15), "{converged:?}");
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_binary_and_ignored_files_are_skipped_with_a_reason() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("skips").await;
    let dir = tempfile::tempdir()?;
    let big = std::fs::File::create(dir.path().join("big.txt"))?;
    big.set_len(50 * 1024 * 1024)?;
    drop(big);
    std::fs::write(dir.path().join(".gitignore"), "dist/\n*.log\n")?;
    std::fs::create_dir_all(dir.path().join("dist"))?;
    std::fs::write(dir.path().join("dist/out.js"), "built")?;
    std::fs::create_dir_all(dir.path().join("node_modules/react"))?;
    std::fs::write(dir.path().join("node_modules/react/index.js"), "x")?;
    std::fs::write(dir.path().join("App.tsx"), "ok")?;
    let (mirror, _) = rig.mirror("skips", dir.path()).await;
    // Created while watching.
    std::fs::write(
        dir.path().join("logo.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    )?;
    std::fs::write(dir.path().join("debug.log"), "noise")?;
    std::fs::write(dir.path().join("later.ts"), "later")?;
    peer.wait_doc(T, "later.ts", |d| d.read("later.ts").is_some())
        .await?;
    wait("logo.png listed", || {
        mirror.skipped().contains_key("logo.png")
    })
    .await;
    let skipped = mirror.skipped();
    assert!(
        matches!(skipped.get("big.txt"), Some(SkipReason::TooLarge { bytes, .. }) if *bytes == 50 * 1024 * 1024),
        "{skipped:?}"
    );
    assert_eq!(skipped.get("logo.png"), Some(&SkipReason::Binary));
    assert_eq!(skipped.get("dist"), Some(&SkipReason::Ignored));
    assert_eq!(skipped.get("node_modules"), Some(&SkipReason::Excluded));
    assert_eq!(skipped.get("debug.log"), Some(&SkipReason::Ignored));
    assert_eq!(
        peer.files().into_keys().collect::<Vec<_>>(),
        [".gitignore", "App.tsx", "later.ts"]
    );
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_gitignores_apply_under_their_own_folder() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("nested-ignores").await;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::write(root.join(".gitignore"), "*.log\n")?;
    std::fs::create_dir_all(root.join("sub/deep"))?;
    // Anchored to `sub/`, a glob for `sub/` and below, and a re-include of what the root ignores.
    std::fs::write(root.join("sub/.gitignore"), "/local.ts\n*.tmp\n!keep.log\n")?;
    for (path, text) in [
        ("local.ts", "root, not ignored"),
        ("a.tmp", "root, not ignored"),
        ("root.log", "ignored by the root"),
        ("sub/local.ts", "ignored by sub"),
        ("sub/deep/local.ts", "not anchored there"),
        ("sub/deep/x.tmp", "ignored by sub"),
        ("sub/keep.log", "re-included by sub"),
        ("sub/other.log", "ignored by the root"),
        ("sub/main.ts", "kept"),
    ] {
        std::fs::write(root.join(path), text)?;
    }
    let (mirror, _) = rig.mirror("nested-ignores", root).await;
    peer.wait_doc(T, "sub/main.ts", |d| d.read("sub/main.ts").is_some())
        .await?;
    assert_eq!(
        peer.files().into_keys().collect::<Vec<_>>(),
        [
            ".gitignore",
            "a.tmp",
            "local.ts",
            "sub/.gitignore",
            "sub/deep/local.ts",
            "sub/keep.log",
            "sub/main.ts"
        ]
    );
    let skipped = mirror.skipped();
    for path in [
        "root.log",
        "sub/local.ts",
        "sub/deep/x.tmp",
        "sub/other.log",
    ] {
        assert_eq!(
            skipped.get(path),
            Some(&SkipReason::Ignored),
            "{path}: {skipped:?}"
        );
    }
    // A nested .gitignore edited while watching takes effect: sub/main.ts is now ignored, so a
    // later change to it stays on disk.
    std::fs::write(
        root.join("sub/.gitignore"),
        "/local.ts\n*.tmp\n!keep.log\nmain.ts\n",
    )?;
    wait("sub/main.ts ignored", || {
        mirror.skipped().get("sub/main.ts") == Some(&SkipReason::Ignored)
    })
    .await;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_leaving_the_folder_are_refused() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("escape").await;
    let outside = tempfile::tempdir()?;
    let parent = tempfile::tempdir()?;
    let dir = parent.path().join("mirror");
    std::fs::create_dir(&dir)?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), dir.join("link"))?;
    let (mirror, _) = rig.mirror("escape", &dir).await;

    // RoomDoc refuses such paths; a raw Yjs client does not, so forge the update with yrs.
    let forged = RoomDoc::new();
    {
        let files = forged.doc().get_or_insert_map("files");
        let mut txn = forged.doc().transact_mut();
        files.insert(&mut txn, "../evil.txt", TextPrelim::new("pwned"));
        files.insert(&mut txn, ".git/hooks/pre-commit", TextPrelim::new("pwned"));
    }
    peer.apply_local_update(&forged.encode_state())?;
    peer.create_file("link/pwned.txt", "pwned")?;
    peer.create_file("fine.txt", "fine")?;
    wait("fine.txt on disk", || read(&dir.join("fine.txt")).is_some()).await;
    wait("the refusals listed", || mirror.skipped().len() >= 3).await;
    let skipped = mirror.skipped();
    for path in ["../evil.txt", ".git/hooks/pre-commit"] {
        assert!(
            matches!(skipped.get(path), Some(SkipReason::Refused(_))),
            "{path}: {skipped:?}"
        );
    }
    assert!(!parent.path().join("evil.txt").exists());
    assert!(!dir.join(".git").exists());
    #[cfg(unix)]
    {
        assert!(skipped.contains_key("link/pwned.txt"), "{skipped:?}");
        assert!(!outside.path().join("pwned.txt").exists());
    }
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_on_disk_is_a_rename_in_the_room() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("rename").await;
    peer.create_file("Old.tsx", THREE)?;
    peer.wait_confirmed(T).await?;
    let dir = tempfile::tempdir()?;
    let (mirror, events) = rig.mirror("rename", dir.path()).await;
    wait("the file on disk", || {
        read(&dir.path().join("Old.tsx")).is_some()
    })
    .await;
    std::fs::rename(dir.path().join("Old.tsx"), dir.path().join("New.tsx"))?;
    peer.wait_doc(T, "the rename", |d| d.paths() == ["New.tsx"])
        .await?;
    assert_eq!(peer.read("New.tsx").as_deref(), Some(THREE));
    let renamed = events.lock().map(|v| {
        v.iter().any(|e| {
            matches!(e, MirrorEvent::ToRoom { change: spike_mirror::Change::Renamed { from }, .. } if from == "Old.tsx")
        })
    });
    assert_eq!(renamed.ok(), Some(true));
    // A folder renamed: its files follow as renames; then a deletion on disk.
    std::fs::create_dir(dir.path().join("ui"))?;
    std::fs::rename(dir.path().join("New.tsx"), dir.path().join("ui/New.tsx"))?;
    peer.wait_doc(T, "the move", |d| d.paths() == ["ui/New.tsx"])
        .await?;
    std::fs::rename(dir.path().join("ui"), dir.path().join("components"))?;
    peer.wait_doc(T, "the folder rename", |d| {
        d.paths() == ["components/New.tsx"]
    })
    .await?;
    assert_eq!(peer.read("components/New.tsx").as_deref(), Some(THREE));
    let folder_renamed = events.lock().map(|v| {
        v.iter().any(|e| {
            matches!(e, MirrorEvent::ToRoom { path, change: spike_mirror::Change::Renamed { from } } if from == "ui/New.tsx" && path == "components/New.tsx")
        })
    });
    assert_eq!(folder_renamed.ok(), Some(true));
    std::fs::remove_file(dir.path().join("components/New.tsx"))?;
    peer.wait_doc(T, "the deletion", |d| d.paths().is_empty())
        .await?;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_changes_sync_on_reconnection() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("offline").await;
    let dir = tempfile::tempdir()?;
    let log = tempfile::tempdir()?;
    let session = rig.session_with("offline", 1, Some(&log.path().join("room.sqlite")));
    let (mirror, _) = rig
        .mirror_with(session, dir.path(), MirrorOptions::default())
        .await;
    mirror.session().set_online(false);
    mirror
        .session()
        .wait_status(T, "offline", |s| s.state == SessionState::Offline)
        .await?;
    std::fs::write(dir.path().join("notes.md"), "written offline\n")?;
    wait("the file in the local replica", || {
        mirror.session().read("notes.md").is_some()
    })
    .await;
    assert_eq!(peer.read("notes.md"), None);
    peer.create_file("remote.md", "while you were away\n")?;
    mirror.session().set_online(true);
    peer.wait_doc(T, "the offline file", |d| {
        d.read("notes.md").as_deref() == Some("written offline\n")
    })
    .await?;
    wait("the remote file on disk", || {
        read(&dir.path().join("remote.md")).is_some()
    })
    .await;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_both_sides_while_stopped_merge_at_restart() -> TestResult {
    let rig = Rig::start().await;
    let peer = rig.peer("restart").await;
    peer.create_file("a.ts", THREE)?;
    peer.wait_confirmed(T).await?;
    let dir = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let file = dir.path().join("a.ts");
    let options = MirrorOptions {
        state_path: Some(data.path().join("mirror.json")),
        ..MirrorOptions::default()
    };
    let (mirror, _) = rig
        .mirror_with(rig.session("restart", 1), dir.path(), options.clone())
        .await;
    wait("the file on disk", || read(&file).as_deref() == Some(THREE)).await;
    mirror.stop().await;

    // While the mirror is stopped, both sides change different lines.
    peer.edit("a.ts", &[TextEdit::insert(8, " (room)")])?;
    peer.wait_confirmed(T).await?;
    std::fs::write(&file, "line one\nline two\nline three (disk)\n")?;
    let (mirror, _) = rig
        .mirror_with(rig.session("restart", 3), dir.path(), options)
        .await;
    let both = "line one (room)\nline two\nline three (disk)\n";
    peer.wait_doc(T, "both changes", |d| {
        d.read("a.ts").as_deref() == Some(both)
    })
    .await?;
    wait("both changes on disk", || {
        read(&file).as_deref() == Some(both)
    })
    .await;
    mirror.stop().await;
    peer.close().await;
    Ok(())
}
