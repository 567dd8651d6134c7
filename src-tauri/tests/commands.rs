//! The app's commands through Tauri's IPC on the mock runtime: the real command handlers, the
//! real shell state, a real embedded room server on loopback and real SQLite logs; only the
//! windowing system is mocked.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spike_desktop::{Launch, Shell};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, mock_context, noop_assets, MockRuntime};
use tauri::webview::InvokeRequest;
use tauri::{App, Manager, WebviewWindow, WebviewWindowBuilder};

struct TestApp {
    app: App<MockRuntime>,
    main: WebviewWindow<MockRuntime>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// The app on room `room` of its own embedded server (any free port), data in a temp dir.
    fn start(room: &str) -> Self {
        Self::start_on(room, "127.0.0.1:0")
    }

    /// The same, with the embedded server listening on `listen`.
    fn start_on(room: &str, listen: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let launch = Launch {
            data_dir: dir.path().join("data"),
            settings_path: dir.path().join("settings.json"),
            server: None,
            listen: listen.parse().expect("address"),
            room: Some(room.to_owned()),
            link: None,
        };
        let app = spike_desktop::builder(mock_builder())
            .build(mock_context(noop_assets()))
            .expect("the app builds on the mock runtime");
        // The mock runtime has no event loop to run `setup` from: call it as the app does.
        spike_desktop::setup(app.handle(), launch).expect("setup");
        let main = WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("main window");
        let test = Self {
            app,
            main,
            _dir: dir,
        };
        test.until("the example project from the server", |s| {
            s.room().read("App.tsx").is_some()
        });
        test
    }

    fn shell(&self) -> tauri::State<'_, Shell> {
        self.app.state::<Shell>()
    }

    fn settings_path(&self) -> std::path::PathBuf {
        self._dir.path().join("settings.json")
    }

    fn until(&self, what: &str, check: impl Fn(&Shell) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check(&self.shell()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Invokes `cmd` from the main window with a JSON body: the reply, or the error as the UI
    /// receives it.
    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        self.invoke_body(cmd, InvokeBody::Json(args))
    }

    fn invoke_body(&self, cmd: &str, body: InvokeBody) -> Result<Value, Value> {
        get_ipc_response(
            &self.main,
            InvokeRequest {
                cmd: cmd.into(),
                callback: CallbackFn(0),
                error: CallbackFn(1),
                url: "tauri://localhost".parse().expect("url"),
                body,
                headers: Default::default(),
                invoke_key: tauri::test::INVOKE_KEY.into(),
            },
        )
        .map(|reply| reply.deserialize::<Value>().unwrap_or(Value::Null))
    }
}

fn settings_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("settings file")).expect("json")
}

#[test]
fn file_commands_change_the_room_and_errors_arrive_typed() {
    let t = TestApp::start("files");
    t.invoke(
        "create_file",
        json!({"path": "lib/x.ts", "text": "const  a=1\n"}),
    )
    .expect("create");
    assert_eq!(
        t.shell().room().read("lib/x.ts").as_deref(),
        Some("const  a=1\n")
    );
    assert_eq!(
        t.invoke("format_file", json!({"path": "lib/x.ts"})),
        Ok(json!(true))
    );
    assert_eq!(
        t.shell().room().read("lib/x.ts").as_deref(),
        Some("const a = 1;\n")
    );
    t.invoke("rename_file", json!({"from": "lib/x.ts", "to": "lib/y.ts"}))
        .expect("rename");
    assert_eq!(t.shell().room().read("lib/x.ts"), None);
    assert!(t.shell().room().read("lib/y.ts").is_some());

    // A syntax error: the UI gets the kind, the message and the diagnostics with positions.
    t.invoke(
        "create_file",
        json!({"path": "bad.tsx", "text": "\nconst = 1;\n"}),
    )
    .expect("create");
    let err = t
        .invoke("format_file", json!({"path": "bad.tsx"}))
        .expect_err("a syntax error");
    assert_eq!(err["kind"], "format");
    assert_eq!(err["diagnostics"][0]["file"], "bad.tsx");
    assert_eq!(err["diagnostics"][0]["line"], 2);
    let err = t
        .invoke("create_file", json!({"path": "lib/y.ts", "text": ""}))
        .expect_err("exists");
    assert_eq!(err["kind"], "collab");
    t.invoke("delete_file", json!({"path": "lib/y.ts"}))
        .expect("delete");
    assert_eq!(t.shell().room().read("lib/y.ts"), None);

    // Updates are raw bytes, never JSON; a cursor needs its file.
    let err = t
        .invoke("push_update", json!([0, 0]))
        .expect_err("a JSON body");
    assert_eq!(err["kind"], "bad-request");
    let err = t
        .invoke_body("push_update", InvokeBody::Raw(vec![0xff, 0xff, 0xff]))
        .expect_err("garbage");
    assert_eq!(err["kind"], "collab");
    let selection =
        json!({"anchor": {"tname": "x", "assoc": 0}, "head": {"tname": "x", "assoc": 0}});
    let err = t
        .invoke("set_cursor", json!({"file": null, "selection": selection}))
        .expect_err("no file");
    assert_eq!(err["kind"], "bad-request");
}

#[test]
fn settings_are_validated_saved_and_applied() {
    let t = TestApp::start("settings");
    let settings = t.invoke("get_settings", json!({})).expect("get");
    assert_eq!(settings["formatOnSave"], true);
    assert_eq!(settings["name"], "");

    let err = t
        .invoke(
            "save_settings",
            json!({"settings": {"name": "Ada", "color": "red", "server": "", "formatOnSave": true}}),
        )
        .expect_err("a bad colour");
    assert_eq!(err["kind"], "settings");
    assert_eq!(err["message"], "settings field `color`: expected #rrggbb");

    let saved = t
        .invoke(
            "save_settings",
            json!({"settings": {"name": " Ada ", "color": "#10b981", "server": "", "formatOnSave": false}}),
        )
        .expect("saved");
    assert_eq!(saved["name"], "Ada");
    let file = settings_file(&t.settings_path());
    assert_eq!(file["color"], "#10b981");
    assert_eq!(file["formatOnSave"], false);
    // The room opened at start is remembered with the settings.
    assert_eq!(file["lastRoom"]["room"], "settings");
}

#[test]
fn share_new_room_and_join_by_link() {
    let t = TestApp::start("share");
    let share = t.invoke("share_room", json!({})).expect("share");
    let link = share["spikeLink"].as_str().expect("link").to_owned();
    assert!(
        link.starts_with("spike://room/share?server=ws%3A%2F%2F127.0.0.1%3A"),
        "{link}"
    );
    assert_eq!(share["embedded"], true);
    assert_eq!(share["loopbackOnly"], true);
    assert!(share["websocketUrl"]
        .as_str()
        .is_some_and(|u| u.starts_with("ws://127.0.0.1:") && u.ends_with("/rooms/share")));

    let err = t
        .invoke("join_room", json!({"link": "spike://room/x"}))
        .expect_err("no server");
    assert_eq!(err["kind"], "collab");
    assert_eq!(
        err["message"],
        "invalid room link \"spike://room/x\": no server= parameter"
    );

    let created = t.invoke("new_room", json!({})).expect("new room");
    let name = created["room"].as_str().expect("room").to_owned();
    assert!(
        name.starts_with("room-") && name.len() == 21,
        "a random name: {name}"
    );
    assert_eq!(t.shell().room().name(), name);
    t.until("the new room seeded with the example", |s| {
        s.room().read("App.tsx").is_some()
    });
    assert_eq!(
        settings_file(&t.settings_path())["lastRoom"]["room"],
        name.as_str()
    );

    // Back to the first room by its link: its files are still there.
    t.invoke(
        "create_file",
        json!({"path": "only-in-new.ts", "text": "1"}),
    )
    .expect("create");
    let joined = t.invoke("join_room", json!({"link": link})).expect("join");
    assert_eq!(joined["room"], "share");
    assert_eq!(t.shell().room().name(), "share");
    t.until("the first room's files", |s| {
        s.room().read("App.tsx").is_some()
    });
    assert_eq!(t.shell().room().read("only-in-new.ts"), None);
}

#[test]
fn on_the_network_the_embedded_server_needs_tokens_and_share_links_carry_one() {
    // Syncing the example at start proves the app's own connection carries a valid token.
    let t = TestApp::start_on("lan", "0.0.0.0:0");
    let share = t.invoke("share_room", json!({})).expect("share");
    assert_eq!(share["loopbackOnly"], false);
    let link = share["spikeLink"].as_str().expect("link");
    assert!(link.contains("&token="), "{link}");
    let ws = share["websocketUrl"].as_str().expect("ws");
    assert!(ws.contains("/rooms/lan?token="), "{ws}");
    assert!(
        t._dir.path().join("data/server/secret").is_file(),
        "a secret is generated in the data folder"
    );
    // A new room gets its own token, and the app joins it.
    let created = t.invoke("new_room", json!({})).expect("new room");
    assert!(created["token"].as_str().is_some_and(|s| !s.is_empty()));
    t.until("the new room synced through its token", |s| {
        s.room().read("App.tsx").is_some()
    });
}

/// Waits until `check` holds for the file `path` on disk (its text, `None` when missing).
fn until_file(path: &Path, what: &str, check: impl Fn(Option<String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check(std::fs::read_to_string(path).ok()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mirror_folder_keeps_the_room_and_a_folder_in_sync_until_stopped() {
    let t = TestApp::start("mirrored");
    let dir = t._dir.path().join("work/mirrored");
    let err = t
        .invoke("mirror_folder", json!({"dir": "relative/dir"}))
        .expect_err("a relative folder");
    assert_eq!(err["kind"], "bad-request");

    let info = t
        .invoke("mirror_folder", json!({"dir": dir.display().to_string()}))
        .expect("mirror");
    let canonical = dir.canonicalize().expect("the folder was created");
    assert_eq!(info["dir"], canonical.display().to_string());
    assert_eq!(info["room"], "mirrored");
    // Room → disk: the example's files are written, with the room's exact text.
    let app = dir.join("App.tsx");
    let room_text = t.shell().room().read("App.tsx").expect("App.tsx");
    until_file(&app, "App.tsx on disk", |text| {
        text.as_deref() == Some(&room_text)
    });
    // Disk → room, through the app's own session: the editor's copy changes at once.
    std::fs::write(&app, format!("{room_text}// saved in another editor\n")).expect("write");
    t.until("the disk edit in the room", |s| {
        s.room()
            .read("App.tsx")
            .is_some_and(|t| t.ends_with("// saved in another editor\n"))
    });
    // A file created in the app appears on disk.
    t.invoke(
        "create_file",
        json!({"path": "lib/util.ts", "text": "export const x = 1;\n"}),
    )
    .expect("create");
    until_file(&dir.join("lib/util.ts"), "lib/util.ts on disk", |text| {
        text.as_deref() == Some("export const x = 1;\n")
    });
    let status = t.invoke("mirror_status", json!({})).expect("status");
    assert_eq!(status["dir"], canonical.display().to_string());
    assert!(
        status["recent"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| l == "disk → room  App.tsx: 1 edit(s)")),
        "{status}"
    );

    assert_eq!(t.invoke("stop_mirror", json!({})).expect("stop"), true);
    assert_eq!(
        t.invoke("mirror_status", json!({})).expect("status"),
        Value::Null
    );
    std::fs::write(&app, "// after the mirror stopped\n").expect("write");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        t.shell()
            .room()
            .read("App.tsx")
            .is_some_and(|t| t.ends_with("// saved in another editor\n")),
        "a stopped mirror no longer changes the room"
    );
    assert_eq!(t.invoke("stop_mirror", json!({})).expect("stop"), false);
}

#[test]
fn open_folder_makes_a_new_room_from_the_folder_alone() {
    let t = TestApp::start("before-folder");
    let dir = t._dir.path().join("project");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    std::fs::write(dir.join("index.tsx"), "export default () => <p>hi</p>;\n").expect("write");
    std::fs::write(dir.join("src/math.ts"), "export const two = 2;\n").expect("write");
    std::fs::write(dir.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0").expect("write");

    let link = t
        .invoke("open_folder", json!({"dir": dir.display().to_string()}))
        .expect("open folder");
    let room = link["room"].as_str().expect("room").to_owned();
    assert_ne!(room, "before-folder");
    assert_eq!(t.shell().room().name(), room);
    t.until("the folder's files in the room", |s| {
        s.room().read("src/math.ts").as_deref() == Some("export const two = 2;\n")
    });
    let room_paths = t.shell().room().paths();
    assert_eq!(
        room_paths,
        vec!["index.tsx".to_owned(), "src/math.ts".to_owned()],
        "only the folder's text files: no example project, no binary"
    );
    assert!(
        !dir.join("App.tsx").exists(),
        "the example never reached the folder"
    );
    let status = t.invoke("mirror_status", json!({})).expect("status");
    assert_eq!(status["room"], room.as_str());
    assert_eq!(
        status["skipped"],
        json!([{"path": "logo.png", "reason": "binary (NUL byte or not UTF-8)"}])
    );
    // Leaving the room stops its mirror.
    t.invoke("new_room", json!({})).expect("new room");
    assert_eq!(
        t.invoke("mirror_status", json!({})).expect("status"),
        Value::Null
    );
}

#[test]
fn a_view_link_opens_the_room_read_only_and_it_still_follows_editors() {
    use spike_server::auth::{Claims, Role, Secret, TokenKey};
    let t = TestApp::start_on("watched", "0.0.0.0:0");
    let share = t.invoke("share_room", json!({})).expect("share");
    let server = share["link"]["server"].as_str().expect("server").to_owned();
    let key = TokenKey::new(
        &Secret::from_file(&t._dir.path().join("data/server/secret")).expect("the secret"),
    );
    let token = |role| {
        key.issue(&Claims::new("watched", role, Duration::from_secs(600)))
            .expect("token")
    };
    let view = spike_collab::RoomLink {
        token: Some(token(Role::View)),
        ..spike_collab::RoomLink::new(&server, "watched").expect("link")
    };
    t.invoke("join_room", json!({"link": view.to_link()}))
        .expect("join as a viewer");
    t.until("the room's files, watched", |s| {
        s.room().read("App.tsx").is_some()
    });
    assert!(t.shell().room().read_only());

    for (cmd, args) in [
        ("create_file", json!({"path": "x.ts", "text": ""})),
        ("delete_file", json!({"path": "App.tsx"})),
        ("rename_file", json!({"from": "App.tsx", "to": "B.tsx"})),
        ("format_file", json!({"path": "App.tsx"})),
        (
            "mirror_folder",
            json!({"dir": t._dir.path().join("m").display().to_string()}),
        ),
    ] {
        let err = t.invoke(cmd, args).expect_err(cmd);
        assert_eq!(err["kind"], "read-only", "{cmd}: {err}");
        assert_eq!(
            err["message"],
            "room watched is view-only: this link lets you watch, not edit (ask for an edit link)"
        );
    }
    let err = t
        .invoke_body("push_update", InvokeBody::Raw(vec![0, 0]))
        .expect_err("push");
    assert_eq!(err["kind"], "read-only");

    // An editor's change reaches the viewer.
    let runtime = tauri::async_runtime::handle();
    let _entered = runtime.inner().enter();
    let mut config = spike_collab::SessionConfig::new(&server, "watched");
    config.token = Some(token(Role::Edit));
    let editor = spike_collab::Session::open(config).expect("editor session");
    editor
        .create_file("from-editor.ts", "export const seen = true;\n")
        .expect("edit");
    t.until("the editor's file at the viewer", |s| {
        s.room().read("from-editor.ts").as_deref() == Some("export const seen = true;\n")
    });
}
