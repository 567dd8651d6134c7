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
fn a_mirror_resumes_when_its_room_opens_again_until_it_is_stopped() {
    let t = TestApp::start("resumed");
    let dir = t._dir.path().join("work/resumed");
    let share = t.invoke("share_room", json!({})).expect("share");
    let link = share["spikeLink"].as_str().expect("link").to_owned();
    let info = t
        .invoke("mirror_folder", json!({"dir": dir.display().to_string()}))
        .expect("mirror");
    let canonical = info["dir"].as_str().expect("dir").to_owned();
    let app = dir.join("App.tsx");
    let room_text = t.shell().room().read("App.tsx").expect("App.tsx");
    until_file(&app, "App.tsx on disk", |text| {
        text.as_deref() == Some(&room_text)
    });
    // Kept with the settings, so a restart finds it too.
    let key = |s: &Value| {
        s["mirrors"]
            .as_object()
            .map(|m| m.values().cloned().collect::<Vec<_>>())
    };
    assert_eq!(
        key(&settings_file(&t.settings_path())),
        Some(vec![json!(canonical)])
    );

    // Leave the room; edit the file while no mirror runs; come back.
    t.invoke("new_room", json!({})).expect("new room");
    assert_eq!(
        t.invoke("mirror_status", json!({})).expect("status"),
        Value::Null
    );
    assert_eq!(
        tauri::async_runtime::block_on(t.shell().resume_mirror()),
        None,
        "the new room was never mirrored"
    );
    std::fs::write(&app, "// edited while the app was elsewhere\n").expect("write");
    t.invoke("join_room", json!({"link": link})).expect("back");
    let resumed = tauri::async_runtime::block_on(t.shell().resume_mirror()).expect("resumed");
    assert_eq!(resumed.dir, canonical);
    t.until("the edit made meanwhile in the room", |s| {
        s.room().read("App.tsx").as_deref() == Some("// edited while the app was elsewhere\n")
    });
    assert_eq!(
        tauri::async_runtime::block_on(t.shell().resume_mirror()),
        None,
        "a running mirror is not started twice"
    );

    // Stopped from "Folder…": forgotten.
    assert_eq!(t.invoke("stop_mirror", json!({})).expect("stop"), true);
    assert_eq!(key(&settings_file(&t.settings_path())), None);
    t.invoke("new_room", json!({})).expect("new room");
    t.invoke("join_room", json!({"link": link})).expect("back");
    assert_eq!(
        tauri::async_runtime::block_on(t.shell().resume_mirror()),
        None
    );

    // A folder deleted while the room was closed is forgotten, not recreated empty.
    t.invoke("mirror_folder", json!({"dir": dir.display().to_string()}))
        .expect("mirror again");
    t.invoke("new_room", json!({})).expect("new room");
    std::fs::remove_dir_all(&dir).expect("delete the folder");
    t.invoke("join_room", json!({"link": link})).expect("back");
    assert_eq!(
        tauri::async_runtime::block_on(t.shell().resume_mirror()),
        None
    );
    assert!(!dir.exists(), "the deleted folder was recreated");
    assert_eq!(key(&settings_file(&t.settings_path())), None);
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

/// A model server on loopback speaking OpenAI's streamed Chat Completions: each connection gets
/// the next of `replies` (SSE `data:` events, sent as they are); every request body is kept.
/// A reply of `None` holds the connection open without answering (until the client hangs up).
struct ModelServer {
    base: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    hung_up: std::sync::mpsc::Receiver<()>,
}

impl ModelServer {
    fn start(replies: Vec<Option<Vec<Value>>>) -> Self {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let (hung_tx, hung_up) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (stream, reply) in listener.incoming().zip(replies) {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                kept.lock()
                    .expect("bodies")
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                stream.write_all(head.as_bytes()).expect("head");
                match reply {
                    Some(events) => {
                        for event in events {
                            let _ = stream.write_all(format!("data: {event}\n\n").as_bytes());
                        }
                        let _ = stream.write_all(b"data: [DONE]\n\n");
                    }
                    None => {
                        // Hold the answer back until the client closes the connection.
                        let mut rest = [0u8; 64];
                        while reader
                            .get_mut()
                            .read(&mut rest)
                            .map(|n| n > 0)
                            .unwrap_or(false)
                        {}
                        let _ = hung_tx.send(());
                    }
                }
            }
        });
        Self {
            base,
            bodies,
            hung_up,
        }
    }
}

/// OpenAI stream events: `text`, then one `search_replace` call whose arguments arrive in two
/// pieces, then the stop.
fn text_then_search_replace(text: &str, search: &str, replace: &str) -> Vec<Value> {
    let args = json!({"path": "App.tsx", "search": search, "replace": replace}).to_string();
    let (a, b) = args.split_at(20);
    vec![
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "search_replace", "arguments": a}}]}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": b}}]}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ]
}

/// A Channel collecting the assistant's events as JSON.
fn ai_events() -> (
    tauri::ipc::Channel<spike_desktop::AiEvent>,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let channel = tauri::ipc::Channel::new(move |body| {
        if let tauri::ipc::InvokeResponseBody::Json(json) = body {
            sink.lock()
                .expect("events")
                .push(serde_json::from_str(&json).unwrap_or(Value::Null));
        }
        Ok(())
    });
    (channel, got)
}

fn until_event(events: &std::sync::Mutex<Vec<Value>>, what: &str, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = events
            .lock()
            .expect("events")
            .iter()
            .find(|e| e["type"] == kind)
        {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            events.lock().expect("events")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_assistant_proposes_a_diff_and_an_accepted_edit_reaches_a_collaborator() {
    let t = TestApp::start("assisted");
    let model = ModelServer::start(vec![
        Some(text_then_search_replace(
            "Renaming the title.",
            "\"Hello from Spike\"",
            "\"Hello from the assistant\"",
        )),
        None,
    ]);
    let mut settings = t.invoke("get_settings", json!({})).expect("settings");
    settings["aiProvider"] = json!("compatible");
    settings["aiBaseUrl"] = json!(format!("{}/", model.base));
    settings["aiModel"] = json!("local-coder");
    t.invoke("save_settings", json!({"settings": settings}))
        .expect("save the assistant settings");

    let err = t
        .invoke(
            "ai_ask",
            json!({"prompt": "  ", "file": null, "events": "__CHANNEL__:1"}),
        )
        .expect_err("an empty question");
    assert_eq!(err["kind"], "bad-request");

    let (channel, events) = ai_events();
    t.shell()
        .ask_ai("Rename the title".into(), Some("App.tsx".into()), channel)
        .expect("ask");
    let proposal = until_event(&events, "the proposal", "proposal");
    until_event(&events, "the end of the answer", "done");
    assert_eq!(
        events.lock().expect("events")[0],
        json!({"type": "text", "delta": "Renaming the title."})
    );
    let file = &proposal["proposal"]["files"][0];
    assert_eq!(file["path"], "App.tsx");
    assert_eq!(file["created"], false);
    let diff = file["diff"].as_str().expect("diff");
    assert!(
        diff.starts_with("--- a/App.tsx\n+++ b/App.tsx\n@@ "),
        "{diff}"
    );
    assert!(
        diff.contains("\n-  const [title, setTitle] = useState(\"Hello from Spike\");\n+  const [title, setTitle] = useState(\"Hello from the assistant\");\n"),
        "{diff}"
    );
    // What the model was sent: the system prompt, the question with the numbered open file,
    // the four editing tools, and the configured model.
    let sent = model.bodies.lock().expect("bodies")[0].clone();
    assert_eq!(sent["model"], "local-coder");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][0]["role"], "system");
    let question = sent["messages"][1]["content"].as_str().expect("question");
    assert!(
        question.starts_with("Rename the title\n\nFiles in the room: App.tsx, "),
        "{question}"
    );
    assert!(
        question.contains("The open file, `App.tsx` (line numbers added):\n   1 | import"),
        "{question}"
    );
    let tools: Vec<&str> = sent["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(
        tools,
        [
            "read_file",
            "replace_range",
            "search_replace",
            "create_file"
        ]
    );

    // Nothing changed until accepted; then a collaborator sees the edit.
    assert!(t
        .shell()
        .room()
        .read("App.tsx")
        .is_some_and(|s| s.contains("\"Hello from Spike\"")));
    let share = t.invoke("share_room", json!({})).expect("share");
    let runtime = tauri::async_runtime::handle();
    let _entered = runtime.inner().enter();
    let peer = spike_collab::Session::open(spike_collab::SessionConfig::new(
        share["link"]["server"].as_str().expect("server"),
        "assisted",
    ))
    .expect("a collaborator");
    let id = proposal["proposal"]["id"].as_u64().expect("id");
    assert_eq!(
        t.invoke("ai_apply", json!({"id": id})).expect("apply"),
        json!(["App.tsx"])
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peer
        .read("App.tsx")
        .is_some_and(|s| s.contains("useState(\"Hello from the assistant\")"))
    {
        assert!(
            Instant::now() < deadline,
            "the collaborator never saw the edit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = t
        .invoke("ai_apply", json!({"id": id}))
        .expect_err("applied once");
    assert_eq!(again["kind"], "bad-request");

    // Stop: the held-back answer's connection is closed.
    let (channel, events) = ai_events();
    let id = t
        .shell()
        .ask_ai("Another question".into(), None, channel)
        .expect("ask");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.invoke("ai_stop", json!({"id": id})).expect("stop"), true);
    assert_eq!(
        until_event(&events, "the stop", "done"),
        json!({"type": "done", "stop": "stopped"})
    );
    model
        .hung_up
        .recv_timeout(Duration::from_secs(10))
        .expect("the model server saw the connection close");
}

#[test]
fn keys_live_in_the_keychain_or_the_refusal_says_why() {
    let t = TestApp::start("keys");
    let statuses = t.invoke("ai_key_status", json!({})).expect("status");
    let providers: Vec<&str> = statuses
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["provider"].as_str())
        .collect();
    assert_eq!(providers, ["openai", "anthropic", "compatible"]);
    let err = t
        .invoke("ai_set_key", json!({"provider": "gpt", "key": "x"}))
        .expect_err("unknown provider");
    assert_eq!(err["kind"], "bad-request");
    match t.invoke(
        "ai_set_key",
        json!({"provider": "anthropic", "key": "sk-ant-test"}),
    ) {
        // A desktop session with a Secret Service: stored, then removed again.
        Ok(status) => {
            assert_eq!(status["source"], "keychain");
            t.invoke("ai_set_key", json!({"provider": "anthropic", "key": ""}))
                .expect("delete");
        }
        // Headless (CI): no keychain service, and the message says what to do.
        Err(err) => {
            assert_eq!(err["kind"], "keychain", "{err}");
            let message = err["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("no keychain service is available")
                    && message.contains("or set the key in the environment"),
                "{message}"
            );
        }
    }
}

#[test]
fn diagnostics_show_the_connection_and_the_processs_figures() {
    let t = TestApp::start("diagnosed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d = t.invoke("diagnostics", json!({})).expect("diagnostics");
        if d["state"] == "synced" || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(d["state"], "synced", "{d}");
    assert_eq!(d["room"], "diagnosed");
    assert!(d["server"]
        .as_str()
        .is_some_and(|s| s.starts_with("ws://127.0.0.1:")));
    assert_eq!(d["denied"], Value::Null);
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    // The embedded server's recorder is this process's: its room and connection are counted.
    let figure = |name: &str| {
        d["figures"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["name"] == name))
            .and_then(|x| x["value"].as_f64())
    };
    assert_eq!(figure("spike_rooms_open"), Some(1.0), "{d}");
    assert_eq!(figure("spike_connections"), Some(1.0), "{d}");
}
