//! Test support: an in-process server on a loopback port, fast-retrying sessions, Node peers.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spike_collab::{Session, SessionConfig};
use spike_server::{Server, ServerConfig};

/// Generous: the machine is a loaded 2-core box. Waits end as soon as their condition holds.
pub const T: Duration = Duration::from_secs(60);

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Logs to the test's captured output (`RUST_LOG` to change the level; warnings by default).
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Server,
    running: spike_server::Running,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("loopback address"), config).await
    }

    pub async fn start_at(addr: SocketAddr, config: ServerConfig) -> Self {
        trace();
        let listener = bind(addr).await;
        let server = Server::new(config).expect("server");
        let running = server.clone().spawn(listener).expect("serving");
        Self {
            addr: running.addr(),
            server,
            running,
        }
    }

    pub fn url(&self) -> String {
        self.running.rooms_url()
    }

    /// Graceful stop: closes connections and flushes every room.
    pub async fn stop(self) {
        let _ = self.running.stop(T).await;
    }
}

/// Binds, retrying while the port is still held by a server that is shutting down.
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    }
}

pub fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.unload_grace = Duration::from_millis(200);
    c
}

/// A session that retries fast (5–100 ms), so reconnection tests do not wait long.
pub fn session(url: &str, room: &str) -> SessionConfig {
    let mut c = SessionConfig::new(url, room);
    c.min_backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_millis(100);
    c
}

pub fn open(config: SessionConfig) -> Session {
    Session::open(config).expect("session")
}

/// `<workspace>/tests/node`, with a clear failure when its packages are not installed.
pub fn node_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node");
    assert!(
        dir.join("node_modules/yjs").exists() && dir.join("node_modules/y-websocket").exists(),
        "{}/node_modules is missing yjs/y-websocket: run `cargo xtask setup` (or `npm ci \
         --ignore-scripts` in tests/node) first",
        dir.display()
    );
    dir
}

/// Runs a Node script from tests/node and returns its stdout; fails with its stderr.
pub async fn node(script: &str, args: &[&str]) -> Result<String, String> {
    let dir = node_dir();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("node {script} took over 120 s"))?
    .map_err(|e| format!("starting node: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "node {script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free loopback port (for servers that must be told one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until a TCP connection to `addr` succeeds.
pub async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + T;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the `spike-server` binary (what `spike serve` runs) on a free loopback port, as a
/// process the test can SIGKILL; returns the child and its rooms URL (`ws://…/rooms`).
pub async fn spawn_server(
    data: &Path,
) -> Result<(tokio::process::Child, String), Box<dyn std::error::Error + Send + Sync>> {
    spawn_server_with(data, &[]).await
}

/// [`spawn_server`] with more flags.
pub async fn spawn_server_with(
    data: &Path,
    flags: &[&str],
) -> Result<(tokio::process::Child, String), Box<dyn std::error::Error + Send + Sync>> {
    spawn_server_under(&[], data, flags).await
}

/// [`spawn_server_with`] through a command that execs the server, such as
/// `["/usr/bin/prlimit", "--nofile=256:256"]`: the child's pid is then the server's.
pub async fn spawn_server_under(
    wrapper: &[&str],
    data: &Path,
    flags: &[&str],
) -> Result<(tokio::process::Child, String), Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::AsyncBufReadExt as _;
    let server = env!("CARGO_BIN_EXE_spike-server");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(server);
            c
        }
        None => tokio::process::Command::new(server),
    };
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::time::timeout(T, tokio::io::BufReader::new(stdout).lines().next_line())
        .await??
        .ok_or("server exited before listening")?;
    // `listening on ws://127.0.0.1:PORT/rooms (data in …; …)`
    let url = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok((child, url))
}

/// The value of one series in this process' `/metrics` rendering, by its exact name and labels
/// as rendered (`name{label="value"}`); 0 when the series does not exist yet. Installs the
/// recorder if no server has yet.
pub fn metric(series: &str) -> f64 {
    let handle = spike_server::observe::install_recorder().expect("the Prometheus recorder");
    handle
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().expect("a number"))
        .sum()
}

/// A TCP connection to `server` from the loopback address `from` (on Linux any 127.x.y.z is
/// loopback), so one test can be several clients to per-address limits.
pub async fn tcp_from(from: &str, server: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    let ip = from
        .parse::<std::net::IpAddr>()
        .map_err(std::io::Error::other)?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(server).await
}
