//! Test support: the real room server on a loopback port, and a reporter that retries fast.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use spike_report::{ReportHandle, ReportLayer, Reporter, ReporterConfig, SenderOptions, Target};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::reports::{ReportStore, StoredReport};
use spike_server::{Access, Running, Server, ServerConfig};

/// Generous: the machine is a loaded 2-core box. Waits end as soon as their condition holds.
pub const T: Duration = Duration::from_secs(60);

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The token key every test server uses.
pub fn key() -> TokenKey {
    TokenKey::new(&Secret::new(vec![9u8; 32]).expect("a 32-byte secret"))
}

/// A valid token for `room`.
pub fn token(room: &str) -> String {
    key()
        .issue(&Claims::new(room, Role::View, Duration::from_secs(600)))
        .expect("a token")
}

/// The server with tokens required, storing in `dir`, on `addr` (port 0: any).
pub async fn start_server(addr: SocketAddr, dir: &Path) -> Running {
    let mut config = ServerConfig::new(dir);
    config.access = Access::Tokens(key());
    start_server_with(addr, config).await
}

/// The server with `config` on `addr`.
pub async fn start_server_with(addr: SocketAddr, config: ServerConfig) -> Running {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("binding the test server");
    Server::new(config)
        .expect("server")
        .spawn(listener)
        .expect("serving")
}

/// What the server stored, read from its SQLite file as `spike reports` does.
pub fn stored(dir: &Path) -> Vec<StoredReport> {
    ReportStore::open(dir)
        .and_then(|s| s.since(0))
        .expect("the server's report store")
}

/// A free loopback port (nothing listens on it until a test starts a server there).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A reporter on `queue`, sending to `rooms_url` with `token`, retrying every 20–200 ms.
pub fn reporter(
    queue: &Path,
    rooms_url: &str,
    token: Option<String>,
) -> (ReportLayer, ReportHandle) {
    let mut config = ReporterConfig::new(queue, "9.9.9-test");
    config.target = Some(Target::from_rooms_url(rooms_url, token).expect("a rooms URL"));
    config.sender = SenderOptions {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..SenderOptions::default()
    };
    Reporter::start(config).expect("the reporter")
}

/// Routes this thread's events (the test body's) to `layer`, and to the test output.
pub fn subscribe(layer: ReportLayer) -> tracing::subscriber::DefaultGuard {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(layer);
    tracing::subscriber::set_default(subscriber)
}

/// One value from the process' Prometheus recorder (the server installs it).
pub fn metric(series: &str) -> f64 {
    let handle = spike_server::observe::install_recorder().expect("the Prometheus recorder");
    handle
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().expect("a number"))
        .sum()
}
