//! `spike mirror`: keep a room and a local folder in sync, both ways, until Ctrl+C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use spike_collab::{RoomLink, Session, SessionConfig};
use spike_mirror::{Mirror, MirrorEvent, MirrorOptions};

/// Arguments of `spike mirror`.
#[derive(clap::Args)]
pub struct Args {
    /// The room: a `spike://room/<room>?server=…` link or its WebSocket URL
    /// (`ws://host:port/rooms/<room>`).
    link: String,
    /// The folder to mirror (created if missing).
    dir: PathBuf,
    /// Folder for the room's offline update log and the mirror's sync state
    /// [default: <DIR>/.spike, which is never mirrored].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Files larger than this many bytes are skipped.
    #[arg(long, default_value_t = MirrorOptions::default().max_file_bytes)]
    max_file_bytes: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let link = RoomLink::parse(&args.link)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let data = args.data.unwrap_or_else(|| args.dir.join(".spike"));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut config = SessionConfig::new(&link.server, &link.room);
        config.token = link.token.clone();
        config.log_path = Some(data.join(format!("{}.sqlite", link.room)));
        let session = Session::open(config).context("opening the room")?;
        println!(
            "mirroring room {} ({}) into {} — Ctrl+C to stop",
            link.room,
            link.websocket_url(),
            args.dir.display()
        );
        let options = MirrorOptions {
            max_file_bytes: args.max_file_bytes,
            state_path: Some(data.join(format!("{}.mirror.json", link.room))),
            ..MirrorOptions::default()
        };
        let mirror = Mirror::start(session, &args.dir, options, |event| match event {
            MirrorEvent::Error(_) => eprintln!("{event}"),
            _ => println!("{event}"),
        })
        .await?;
        spike_server::shutdown_signal().await;
        println!("stopping");
        mirror.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
