//! `spike serve`: the room server (spike-server) on a loopback or public address.
//!
//! Access (see `spike_server::Access::choose`): `--open` serves without tokens, on loopback only;
//! else a secret from `--secret-file` or `SPIKE_SECRET`, or the one in `<data>/secret`, makes
//! every room need a token (`spike room token`); with none of those, loopback stays open and any
//! other address gets a secret generated into `<data>/secret` (mode 0600).

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
    /// File holding the token-signing secret (at least 32 bytes; whitespace around it is
    /// ignored). Default: `SPIKE_SECRET`, else `<data>/secret`.
    #[arg(long, value_name = "FILE", conflicts_with = "open")]
    secret_file: Option<PathBuf>,
    /// Serve without tokens: anyone who reaches the server edits every room. Loopback only.
    #[arg(long)]
    open: bool,
    /// Backing store of the blob/KV API (`/v1/blobs`, `/v1/kv`): a folder, `file:///path`, or
    /// `s3://bucket/prefix` (credentials and region from `AWS_*`; `AWS_ENDPOINT_URL` for R2 or
    /// MinIO). Default: `<data>/objects`.
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
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
        let env_secret = std::env::var("SPIKE_SECRET").ok();
        let (access, how) = spike_server::Access::choose(
            args.listen,
            &args.data,
            args.secret_file.as_deref(),
            env_secret.as_deref(),
            args.open,
        )?;
        let mut config = spike_server::ServerConfig::new(&args.data);
        config.access = access;
        config.check_listen(args.listen)?;
        config.unload_grace = Duration::from_secs(args.unload_after);
        if let Some(url) = &args.object_store {
            let tier = spike_store::ObjectTier::from_url(url)
                .with_context(|| format!("opening the object store {url}"))?;
            config.store.backend = Some(std::sync::Arc::new(tier));
        }
        let server = spike_server::Server::new(config)
            .with_context(|| format!("opening the data folder {}", args.data.display()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!(
            "listening on ws://{}/rooms (data in {}; {how})",
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
