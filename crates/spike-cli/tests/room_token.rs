//! `spike room token` and `spike serve`'s access rules, as a user runs them.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Serve;
use spike_collab::RoomLink;
use spike_server::auth::{Role, Secret, TokenKey, SECRET_FILE};

fn spike(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(args)
        .current_dir(dir)
        .env_remove("SPIKE_SECRET")
        .output()
        .expect("run spike");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn prints_a_view_token_and_a_link_signed_with_the_data_folder_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = spike(
        &[
            "room", "token", "demo", "--role", "view", "--ttl", "7d", "--name", "Ada", "--data",
            "d",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let token = lines[0];
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(
        lines[1].starts_with("spike://room/demo?server=ws%3A%2F%2F127.0.0.1%3A8787%2Frooms&token="),
        "{}",
        lines[1]
    );
    let link = RoomLink::parse(lines[1]).expect("the link parses");
    assert_eq!(link.room, "demo");
    assert_eq!(link.server, "ws://127.0.0.1:8787/rooms");
    assert_eq!(link.token.as_deref(), Some(token));
    assert!(err.contains("generated a new secret"), "{err}");
    assert!(err.contains("view token for room demo for Ada"), "{err}");

    // The secret was generated into the data folder, private, and signs the token.
    let secret_path = dir.path().join("d").join(SECRET_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret_path)
            .expect("secret")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = TokenKey::new(&Secret::from_file(&secret_path).expect("secret"));
    let claims = key.verify(Some(token), "demo").expect("valid token");
    assert_eq!(claims.role, Role::View);
    assert_eq!(claims.name.as_deref(), Some("Ada"));
    let week = 7 * 24 * 3600;
    assert!(claims.exp.abs_diff(now() + week) < 60, "exp {}", claims.exp);
    assert!(key.verify(Some(token), "demo2").is_err());

    // A second token reuses the same secret.
    let (code, out, err) = spike(
        &[
            "room", "token", "demo", "--role", "edit", "--ttl", "2h", "--data", "d",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("generated"), "{err}");
    let second = out.lines().next().expect("token line");
    let claims = key.verify(Some(second), "demo").expect("same secret");
    assert_eq!(claims.role, Role::Edit);
    assert!(claims.exp.abs_diff(now() + 7200) < 60);
}

#[test]
fn secret_file_server_url_and_prefixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), format!("{}\n", "k".repeat(40))).expect("write");
    let (code, out, err) = spike(
        &[
            "room",
            "token",
            "team-*",
            "--role",
            "edit",
            "--secret-file",
            "key",
            "--server",
            "wss://spike.example.com/rooms",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    // A prefix names several rooms: the token only.
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("names several rooms"), "{err}");
    let key = TokenKey::new(&Secret::new("k".repeat(40)).expect("secret"));
    assert!(key.verify(out.lines().next(), "team-a").is_ok());
    assert!(key.verify(out.lines().next(), "other").is_err());
    assert!(
        !dir.path().join("spike-data").exists(),
        "no secret generated"
    );

    let (code, out, _) = spike(
        &[
            "room",
            "token",
            "r",
            "--role",
            "view",
            "--secret-file",
            "key",
            "--server",
            "wss://spike.example.com/rooms",
        ],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert!(out.lines().nth(1).is_some_and(
        |l| l.starts_with("spike://room/r?server=wss%3A%2F%2Fspike.example.com%2Frooms&token=")
    ));
}

#[test]
fn usage_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("short"), "tiny").expect("write");
    let cases: &[(&[&str], &str)] = &[
        (&["room", "token", "r", "--role", "owner"], "owner"),
        (
            &["room", "token", "r", "--role", "view", "--ttl", "soon"],
            "soon",
        ),
        (
            &["room", "token", "r", "--role", "view", "--ttl", "0s"],
            "longer than zero",
        ),
        (&["room", "token", "../x", "--role", "view"], "x"),
        (
            &[
                "room",
                "token",
                "r",
                "--role",
                "view",
                "--secret-file",
                "short",
            ],
            "at least 32",
        ),
        (
            &[
                "room",
                "token",
                "r",
                "--role",
                "view",
                "--secret-file",
                "missing",
            ],
            "missing",
        ),
        (
            &[
                "room",
                "token",
                "r",
                "--role",
                "view",
                "--server",
                "http://x/rooms",
            ],
            "http://x",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = spike(args, dir.path());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn serve_refuses_open_mode_on_a_network_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = spike(&["serve", "--listen", "0.0.0.0:0", "--open"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("refusing to serve 0.0.0.0:0 in open mode"),
        "{err}"
    );
    assert!(
        err.contains("SPIKE_SECRET") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(!dir.path().join("spike-data").join(SECRET_FILE).exists());
}

/// `spike serve` with a secret file on loopback requires tokens; a token from `spike room
/// token` with the same file opens the room.
#[test]
fn serve_with_a_secret_accepts_its_tokens_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), "s".repeat(48)).expect("write");
    let serve = Serve::start(
        dir.path(),
        &["--secret-file", "key", "--data", "d"],
        &[("RUST_LOG", "warn")],
        Stdio::null(),
    );
    let (line, base) = (&serve.line, &serve.base);
    assert!(line.contains("tokens required (secret from key)"), "{line}");

    let (code, out, err) = spike(
        &[
            "room",
            "token",
            "doc",
            "--role",
            "edit",
            "--secret-file",
            "key",
            "--server",
            base,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let link = RoomLink::parse(out.lines().nth(1).expect("link")).expect("link parses");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        let mut cfg = spike_collab::SessionConfig::new(&link.server, &link.room);
        cfg.token = link.token.clone();
        let s = spike_collab::Session::open(cfg).map_err(|e| e.to_string())?;
        s.create_file("a.ts", "1").map_err(|e| e.to_string())?;
        s.wait_confirmed(Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        s.close().await;
        // Without a token the upgrade is refused with 401 and the reason.
        match tokio_tungstenite::connect_async(format!("{}/doc", link.server)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Ok::<_, String>((
                resp.status().as_u16(),
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
            )),
            other => Err(format!("expected a refusal, got {:?}", other.map(|_| ()))),
        }
    });
    drop(serve);
    let (status, body) = result.expect("session with the token");
    assert_eq!(status, 401);
    assert!(body.contains("requires an access token"), "{body}");
}
