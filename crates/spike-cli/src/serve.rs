//! `spike serve`: the room server (spike-server) on a loopback or public address.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;

/// Arguments of `spike serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; y-websocket clients use `ws://<listen>/rooms` as their serverUrl.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Folder for the rooms' SQLite logs (created if missing).
    #[arg(long, default_value = "spike-data")]
    data: PathBuf,
    /// How long an empty room stays in memory, in seconds.
    #[arg(long, default_value_t = 30)]
    unload_after: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut config = spike_server::ServerConfig::new(&args.data);
        config.unload_grace = Duration::from_secs(args.unload_after);
        let server = spike_server::Server::new(config)
            .with_context(|| format!("opening the data folder {}", args.data.display()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!(
            "listening on ws://{}/rooms (data in {})",
            listener.local_addr()?,
            args.data.display()
        );
        server
            .serve(listener, spike_server::shutdown_signal())
            .await
            .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}
