//! `spike mirror`: keep a room and a local folder in sync, both ways, until Ctrl+C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use spike_collab::{RoomLink, Session, SessionConfig};
use spike_mirror::{Mirror, MirrorEvent, MirrorOptions};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The target of the mirror's error events: reported to the room's server, not printed again
/// (the mirror prints its events itself).
const REPORTED: &str = "spike_mirror::reported";

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
        let reports = start_reports(&link, &data)?;
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
        // Reports name files relative to the mirrored folder, never the local paths around it.
        let local = [args.dir.display().to_string(), data.display().to_string()];
        let mirror = Mirror::start(session, &args.dir, options, move |event| match &event {
            MirrorEvent::Error(e) => {
                eprintln!("{event}");
                let e = local
                    .iter()
                    .fold(e.clone(), |e, prefix| e.replace(prefix.as_str(), "<dir>"));
                tracing::error!(target: REPORTED, error = %e, "mirroring failed");
            }
            _ => println!("{event}"),
        })
        .await?;
        spike_server::shutdown_signal().await;
        println!("stopping");
        mirror.stop().await;
        // Give queued reports a moment to leave; what does not stays queued for the next run.
        reports.flush(std::time::Duration::from_secs(2)).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Sends this process's `error` events to the room's server (`POST /v1/reports`, with the
/// link's token), queued in `<data>/reports.sqlite` while it is offline, and logs warnings
/// (`RUST_LOG` to change) to stderr.
fn start_reports(
    link: &RoomLink,
    data: &std::path::Path,
) -> anyhow::Result<spike_report::ReportHandle> {
    let mut config = spike_report::ReporterConfig::new(
        data.join(spike_report::QUEUE_FILE),
        env!("CARGO_PKG_VERSION"),
    );
    config.target = Some(spike_report::Target::from_rooms_url(
        &link.server,
        link.token.clone(),
    )?);
    let (layer, handle) = spike_report::Reporter::start(config)?;
    handle.set_room(Some(&link.room));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn".into())
        .add_directive(format!("{REPORTED}=off").parse()?);
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // A subscriber set earlier (none today) wins; reporting is then off, not an error.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(layer)
        .try_init();
    Ok(handle)
}
