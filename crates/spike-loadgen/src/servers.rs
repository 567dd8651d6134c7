//! The servers under load, each started as a child process on a free loopback port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::load::{Flavor, Probe, Target};

/// A server the bench knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `spike-server` (what `spike serve` runs), with a fresh `--data` folder.
    Spike,
    /// `@y/websocket-server`'s bin, without persistence.
    YWebsocketServer,
    /// `@hocuspocus/server` through `tests/node/bench-hocuspocus.mjs`, without extensions.
    Hocuspocus,
}

impl Kind {
    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::YWebsocketServer => "y-websocket-server",
            Kind::Hocuspocus => "hocuspocus",
        }
    }

    /// Parses [`Kind::name`].
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        [Kind::Spike, Kind::YWebsocketServer, Kind::Hocuspocus]
            .into_iter()
            .find(|k| k.name() == name)
            .with_context(|| {
                format!("unknown server {name:?}: expected spike, y-websocket-server or hocuspocus")
            })
    }
}

/// Where the servers' programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `spike-server` binary.
    pub spike_server: PathBuf,
    /// `tests/node`, with `node_modules` installed.
    pub node_dir: PathBuf,
    /// Parent of the spike server's temporary data folder.
    pub scratch: PathBuf,
}

/// A running server; killed on drop.
pub struct Running {
    child: Child,
    _data: Option<tempfile::TempDir>,
    /// How to reach it.
    pub target: Target,
}

impl Running {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Probe for Running {
    fn cpu_seconds(&self) -> Option<(f64, f64)> {
        crate::proc::cpu_split(self.pid())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kind` and returns once it accepts TCP connections. Errors when the program is
/// missing, exits, or does not listen within 30 s.
pub fn start(kind: Kind, programs: &Programs) -> anyhow::Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut data = None;
    let (mut cmd, target) = match kind {
        Kind::Spike => {
            let dir = tempfile::Builder::new()
                .prefix("spike-loadgen-")
                .tempdir_in(&programs.scratch)
                .with_context(|| format!("temp dir in {}", programs.scratch.display()))?;
            let mut cmd = Command::new(&programs.spike_server);
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--data")
                .arg(dir.path())
                .env("RUST_LOG", "warn");
            data = Some(dir);
            let target = Target {
                base: format!("ws://{addr}/rooms"),
                flavor: Flavor::YWebsocket,
            };
            (cmd, target)
        }
        Kind::YWebsocketServer => {
            let script = programs
                .node_dir
                .join("node_modules/@y/websocket-server/src/server.js");
            let mut cmd = Command::new("node");
            cmd.arg(script).env_remove("YPERSISTENCE");
            let target = Target {
                base: format!("ws://{addr}"),
                flavor: Flavor::YWebsocket,
            };
            (cmd, target)
        }
        Kind::Hocuspocus => {
            let mut cmd = Command::new("node");
            cmd.arg(programs.node_dir.join("bench-hocuspocus.mjs"));
            let target = Target {
                base: format!("ws://{addr}"),
                flavor: Flavor::Hocuspocus,
            };
            (cmd, target)
        }
    };
    cmd.env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .current_dir(&programs.node_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} ({cmd:?})", kind.name()))?;
    let mut running = Running {
        child,
        _data: data,
        target,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(running);
        }
        if let Some(status) = running.child.try_wait()? {
            bail!("{} exited with {status} before listening", kind.name());
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {addr} within 30 s", kind.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
