//! `spike serve`: the room server (spike-server) on a loopback or public address.
//!
//! Access (see `spike_server::Access::choose`): `--open` serves without tokens, on loopback only;
//! else a secret from `--secret-file` or `SPIKE_SECRET`, or the one in `<data>/secret`, makes
//! every room need a token (`spike room token`); with none of those, loopback stays open and any
//! other address gets a secret generated into `<data>/secret` (mode 0600).
//!
//! Observability: `GET /metrics` (Prometheus text, see `spike_server::observe`); logs on stderr,
//! human-readable by default or one JSON object a line with `--log-format json` (each with the
//! `span` it happened in and the `spans` around it: `conn` carries `room`, `conn`, `peer` and
//! `role`, `http` carries `request`, `method` and `path`); `RUST_LOG` filters them (default
//! `info`). `--alert-rules FILE` evaluates threshold rules on the metrics and POSTs what fires to a
//! webhook (the file's format: `spike_server::alerts`).
//!
//! AI proxy (see `spike_server::ai_proxy`): `--ai-provider openai|anthropic|compatible` serves
//! `POST /v1/ai/chat` (and `/v1/ai/v1/chat/completions` for OpenAI clients with base URL
//! `http://host:port/v1/ai`) through the server's own account. The key comes from the server's
//! environment (`OPENAI_API_KEY`, or `ANTHROPIC_API_KEY` for `anthropic`), never from a flag,
//! which `ps` would show; `--ai-base-url`, `--ai-model` (replacing the callers' model) and
//! `--ai-rate-per-minute` (requests per caller: each token's room and name, or in open mode each
//! client address) tune it.

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
    /// Log format on stderr: `text` (for people) or `json` (one object a line, for collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// JSON file of alert rules evaluated on the server's own metrics (see the module docs).
    #[arg(long, value_name = "FILE")]
    alert_rules: Option<PathBuf>,
    /// Serve the AI proxy (`POST /v1/ai/chat`) through this provider, with the key in
    /// OPENAI_API_KEY (openai, compatible) or ANTHROPIC_API_KEY (anthropic).
    #[arg(long, value_name = "KIND", value_parser = ai_provider)]
    ai_provider: Option<spike_ai::ProviderKind>,
    /// The AI provider's base URL. Default: the provider's own (Ollama's for compatible).
    #[arg(long, value_name = "URL", requires = "ai_provider")]
    ai_base_url: Option<String>,
    /// The model every AI request uses. Default: the one each caller asks for.
    #[arg(long, value_name = "MODEL", requires = "ai_provider")]
    ai_model: Option<String>,
    /// AI requests each caller may make a minute (bursts of as many).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    ai_rate_per_minute: u32,
}

fn ai_provider(s: &str) -> Result<spike_ai::ProviderKind, String> {
    s.parse().map_err(|e: spike_ai::AiError| e.to_string())
}

/// The proxy's configuration from the flags, with the key from the server's environment.
fn ai_config(args: &Args) -> Option<spike_server::ai_proxy::AiConfig> {
    let kind = args.ai_provider?;
    let mut ai = spike_server::ai_proxy::AiConfig::new(kind);
    ai.base_url.clone_from(&args.ai_base_url);
    ai.model.clone_from(&args.ai_model);
    ai.api_key = std::env::var(kind.key_variable())
        .ok()
        .filter(|k| !k.trim().is_empty());
    let per_minute =
        std::num::NonZeroU32::new(args.ai_rate_per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    ai.limits.per_caller = Some(spike_ai::Quota::per_minute(per_minute));
    Some(ai)
}

/// How `spike serve` writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object a line, with the current span and the span list.
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    let alerts = args
        .alert_rules
        .as_deref()
        .map(spike_server::alerts::AlertRules::from_file)
        .transpose()?;
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
        if let Some(rules) = alerts {
            tracing::info!(
                rules = rules.rules.len(),
                webhook = rules.webhook.as_deref().unwrap_or("none"),
                "alert rules loaded"
            );
            config.alerts = Some(rules);
        }
        config.ai = ai_config(&args);
        if let Some(ai) = &config.ai {
            tracing::info!(
                provider = %ai.provider,
                base_url = ai.base_url.as_deref().unwrap_or(ai.provider.default_base_url()),
                model = ai.model.as_deref().unwrap_or("(the caller's)"),
                key = if ai.api_key.is_some() { ai.provider.key_variable() } else { "none" },
                "AI proxy on /v1/ai/chat"
            );
        }
        let server = spike_server::Server::new(config).with_context(|| {
            format!("starting the server (data folder {})", args.data.display())
        })?;
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
