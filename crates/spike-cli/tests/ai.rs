//! `spike ai ask` as a user runs it, against a local server speaking OpenAI's streaming format.

mod common;

use std::io::{BufReader, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::read_request;

/// Answers one request with `pieces` (each written and flushed on its own); returns the request.
fn serve_once(pieces: &'static [&'static [u8]]) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let (head, body) = read_request(&mut reader).expect("a request");
        socket
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .expect("write");
        for piece in pieces {
            socket.write_all(piece).expect("write");
            socket.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(5));
        }
        head + &String::from_utf8(body).expect("utf8")
    });
    (base, handle)
}

#[test]
fn ai_ask_streams_the_answer_to_stdout() {
    let (base, server) = serve_once(&[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\nda",
        b"ta: {\"choices\":[{\"delta\":{\"content\":\", w\xc3",
        b"\xb6rld\"},\"finish_reason\":\"stop\"}]}\n\n",
        b"data: [DONE]\n\n",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("App.tsx"),
        "export const App = () => <p/>;\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args([
            "ai",
            "ask",
            "--base-url",
            &base,
            "--model",
            "gpt-test",
            "--file",
            "App.tsx",
        ])
        .arg("What does this do?")
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "sk-cli")
        .env_remove("SPIKE_CONFIG")
        .env("XDG_CACHE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .expect("run spike");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, wörld\n");
    let request = server.join().expect("server");
    assert!(
        request.starts_with("POST /v1/chat/completions "),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-cli"),
        "{request}"
    );
    assert!(request.contains("\"model\":\"gpt-test\""), "{request}");
    assert!(
        request.contains("export const App"),
        "the file is in the prompt: {request}"
    );
}

/// Answers the first request with 429 and `Retry-After: 1`, the second with `pieces`; returns
/// how long after the first the second request came.
fn serve_429_then(pieces: &'static [&'static [u8]]) -> (String, std::thread::JoinHandle<Duration>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(first.try_clone().expect("clone"));
        read_request(&mut reader).expect("a request");
        let refused = std::time::Instant::now();
        first
            .write_all(
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
                  content-length: 47\r\nconnection: close\r\n\r\n\
                  {\"error\":{\"message\":\"rate limited, slow down\"}}",
            )
            .expect("write");
        drop(first);
        let (mut second, _) = listener.accept().expect("accept the retry");
        let waited = refused.elapsed();
        let mut reader = BufReader::new(second.try_clone().expect("clone"));
        read_request(&mut reader).expect("a request");
        second
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .expect("write");
        for piece in pieces {
            second.write_all(piece).expect("write");
        }
        waited
    });
    (base, handle)
}

/// The CLI asks through the same router as the app: a provider's 429 with `Retry-After: 1` is
/// waited out and retried, and the answer printed.
#[test]
fn ai_ask_retries_after_a_429_and_prints_the_answer() {
    let (base, server) = serve_429_then(OPENAI_OK);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args([
            "ai",
            "ask",
            "--base-url",
            &base,
            "--model",
            "gpt-test",
            "hi",
        ])
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "sk-cli")
        .env_remove("SPIKE_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_CACHE_HOME", dir.path())
        .output()
        .expect("run spike");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let waited = server.join().expect("server");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "the retry came {waited:?} after the 429"
    );
}

#[test]
fn ai_ask_without_a_key_exits_1_and_says_which_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["ai", "ask", "--provider", "anthropic", "hi"])
        .current_dir(dir.path())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("SPIKE_CONFIG")
        .env("XDG_CACHE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .expect("run spike");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ANTHROPIC_API_KEY"));
}

const OPENAI_OK: &[&[u8]] = &[
    b"data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n",
    b"data: [DONE]\n\n",
];

/// `spike ai ask` with no key in the environment and `config` as the file at `$SPIKE_CONFIG`.
fn ask_with_config(config: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spike.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_spike"));
    command
        .args(["ai", "ask"])
        .args(args)
        .arg("hi")
        .current_dir(dir.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("SPIKE_CONFIG", &path)
        .env("XDG_CACHE_HOME", dir.path());
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("run spike")
}

#[test]
fn ai_ask_takes_the_key_provider_model_and_base_url_from_the_config_file() {
    let (base, server) = serve_once(&[
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"from claude\"}}\n\n",
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ]);
    let config = format!(
        "anthropic_api_key = \"ak-from-config\"\nprovider = \"anthropic\"\nmodel = \"claude-cfg\"\nbase_url = \"{base}\"\n"
    );
    let out = ask_with_config(&config, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from claude\n");
    assert!(
        stderr.contains("readable by other users"),
        "a 0644 key file is warned about: {stderr}"
    );
    let request = server.join().expect("server");
    assert!(request.starts_with("POST /v1/messages "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("x-api-key: ak-from-config"),
        "{request}"
    );
    assert!(request.contains("\"model\":\"claude-cfg\""), "{request}");
}

#[test]
fn the_environment_wins_over_the_config_file_and_flags_over_its_defaults() {
    let (base, server) = serve_once(OPENAI_OK);
    // The file's model belongs to its provider (anthropic), not to --provider openai.
    let config =
        "openai_api_key = \"sk-config\"\nprovider = \"anthropic\"\nmodel = \"claude-cfg\"\n";
    let out = ask_with_config(
        config,
        &["--provider", "openai", "--base-url", &base],
        &[("OPENAI_API_KEY", "sk-env")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request = server.join().expect("server");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-env"),
        "{request}"
    );
    assert!(request.contains("\"model\":\"gpt-4o-mini\""), "{request}");
}

#[test]
fn the_platform_config_file_is_read_when_spike_config_is_unset() {
    let (base, server) = serve_once(OPENAI_OK);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("spike")).expect("mkdir");
    std::fs::write(
        dir.path().join("spike/config.toml"),
        format!("openai_api_key = \"sk-platform\"\nbase_url = \"{base}\"\n"),
    )
    .expect("write config");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.path().join("spike/config.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["ai", "ask", "hi"])
        .current_dir(dir.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("SPIKE_CONFIG")
        .env("XDG_CACHE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .expect("run spike");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "a 0600 file is fine: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let request = server.join().expect("server");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-platform"),
        "{request}"
    );
}

#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_what_is_wrong() {
    let out = ask_with_config("openai_api_key = \"sk\"\nmodle = \"gpt\"\n", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spike.toml") && stderr.contains("modle"),
        "{stderr}"
    );
    assert!(stderr.contains("line 2"), "{stderr}");

    let out = ask_with_config("openai_api_key = \n", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spike.toml") && stderr.contains("line 1"),
        "{stderr}"
    );

    let out = ask_with_config("provider = \"gemini\"\n", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gemini"), "{stderr}");
}
