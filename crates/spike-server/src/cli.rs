//! The room server's command line, shared by `spike serve` and the `spike-server` binary (one
//! set of flags, one way to turn them into a [`ServerConfig`], one startup line).
//!
//! Access (see [`Access::choose`]): `--open` serves without tokens, on loopback only; else a
//! secret from `--secret-file` or `SPIKE_SECRET`, or the one in `<data>/secret`, makes every
//! room need a token (`spike room token`); with none of those, loopback stays open and any other
//! address gets a secret generated into `<data>/secret` (mode 0600).
//!
//! Observability: `GET /metrics` (Prometheus text, see [`crate::observe`]); logs on stderr,
//! human-readable by default or one JSON object a line with `--log-format json` (each with the
//! `span` it happened in and the `spans` around it: `conn` carries `room`, `conn`, `peer` and
//! `role`, `http` carries `request`, `method` and `path`); `RUST_LOG` filters them (default
//! `info`). `--alert-rules FILE` evaluates threshold rules on the metrics and POSTs what fires to
//! a webhook (the file's format: [`crate::alerts`]).
//!
//! Abuse limits: `--limits FILE` is a JSON object with any of [`Limits`]' fields (the others
//! keep their defaults): sizes in bytes, counts, durations as text (`"60s"`, `"500ms"`), rates
//! as `{"per_second": N, "burst": M}` or `null` for no limit. For example
//! `{"max_frame_bytes": 1048576, "idle_timeout": "30s", "ip_connection_rate": {"per_second": 20, "burst": 100}}`.
//!
//! AI proxy (see [`crate::ai_proxy`]): `--ai-provider openai|anthropic|compatible` serves
//! `POST /v1/ai/chat` (and `/v1/ai/v1/chat/completions` for OpenAI clients with base URL
//! `http://host:port/v1/ai`) through the server's own account. The key comes from the server's
//! environment (`OPENAI_API_KEY`, or `ANTHROPIC_API_KEY` for `anthropic`), never from a flag,
//! which `ps` would show; `--ai-base-url`, `--ai-model` (replacing the callers' model) and
//! `--ai-rate-per-minute` (requests per caller: each token's room and name, or in open mode each
//! client address) tune it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{Access, Limits, Server, ServerConfig, ServerError};

/// The flags of `spike serve` and `spike-server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; y-websocket clients use `ws://<listen>/rooms` as their serverUrl.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Folder for the rooms' SQLite logs (created if missing).
    #[arg(long, default_value = "spike-data")]
    pub data: PathBuf,
    /// How long an empty room stays in memory, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub unload_after: u64,
    /// File holding the token-signing secret (at least 32 bytes; whitespace around it is
    /// ignored). Default: `SPIKE_SECRET`, else `<data>/secret`.
    #[arg(long, value_name = "FILE", conflicts_with = "open")]
    pub secret_file: Option<PathBuf>,
    /// Serve without tokens: anyone who reaches the server edits every room. Loopback only.
    #[arg(long)]
    pub open: bool,
    /// Backing store of the blob/KV API (`/v1/blobs`, `/v1/kv`): a folder, `file:///path`, or
    /// `s3://bucket/prefix` (credentials and region from `AWS_*`; `AWS_ENDPOINT_URL` for R2 or
    /// MinIO). Default: `<data>/objects`.
    #[arg(long, value_name = "URL")]
    pub object_store: Option<String>,
    /// A CDN the server fills its shared npm cache from (`GET /v1/kv/npm/<host>/<path>` fetches
    /// `https://<host>/<path>` on a miss only for these): `https://host[:port]`, `http://` on
    /// loopback only. Repeat for several; `--npm-cdn ''` alone fills nothing.
    #[arg(long, value_name = "URL", default_value = crate::store_api::DEFAULT_NPM_CDN, value_parser = npm_cdn)]
    pub npm_cdn: Vec<Option<crate::store_api::NpmCdn>>,
    /// Log format on stderr: `text` (for people) or `json` (one object a line, for collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// JSON file of alert rules evaluated on the server's own metrics; an alert that fires is
    /// logged and POSTed to the file's webhook.
    #[arg(long, value_name = "FILE")]
    pub alert_rules: Option<PathBuf>,
    /// JSON file of abuse limits replacing the defaults, e.g. `{"max_frame_bytes": 1048576,
    /// "idle_timeout": "30s", "ip_connection_rate": {"per_second": 20, "burst": 100}}`.
    #[arg(long, value_name = "FILE")]
    pub limits: Option<PathBuf>,
    /// Serve the AI proxy (`POST /v1/ai/chat`) through this provider, with the key in
    /// OPENAI_API_KEY (openai, compatible) or ANTHROPIC_API_KEY (anthropic).
    #[arg(long, value_name = "KIND", value_parser = ai_provider)]
    pub ai_provider: Option<spike_ai::ProviderKind>,
    /// The AI provider's base URL. Default: the provider's own (Ollama's for compatible).
    #[arg(long, value_name = "URL", requires = "ai_provider")]
    pub ai_base_url: Option<String>,
    /// The model every AI request uses. Default: the one each caller asks for.
    #[arg(long, value_name = "MODEL", requires = "ai_provider")]
    pub ai_model: Option<String>,
    /// AI requests each caller may make a minute (bursts of as many).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub ai_rate_per_minute: u32,
    /// The largest max_tokens one AI request may ask for.
    #[arg(long, value_name = "N", default_value_t = crate::ai_proxy::DEFAULT_MAX_TOKENS_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
    pub ai_max_tokens: u32,
}

fn npm_cdn(s: &str) -> Result<Option<crate::store_api::NpmCdn>, String> {
    (!s.trim().is_empty()).then(|| s.parse()).transpose()
}

fn ai_provider(s: &str) -> Result<spike_ai::ProviderKind, String> {
    s.parse().map_err(|e: spike_ai::AiError| e.to_string())
}

/// How the server writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object a line, with the current span and the span list.
    Json,
}

/// Why the server could not start from its flags.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Access, the data folder, the object store or the AI proxy.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The alert rules file.
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
    /// The limits file could not be read.
    #[error("reading the limits file {path}: {source}")]
    LimitsRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The limits file is not valid: the message names the field, line and column.
    #[error("the limits file {path}: {reason}")]
    LimitsInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (serde_json's line and column).
        reason: String,
    },
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The `--listen` address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ServeArgs {
    /// Installs the process's tracing subscriber on stderr: `--log-format`, filtered by
    /// `RUST_LOG` (default `info`). Call once, first.
    pub fn init_logs(&self) {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        let logs = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => logs.init(),
            LogFormat::Json => logs
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .init(),
        }
    }

    /// The server's configuration from these flags and the environment (`SPIKE_SECRET`, the
    /// AI provider's key variable), and a line saying how access is controlled.
    ///
    /// Errors: [`CliError::Server`] (open mode off loopback, a secret that cannot be read or
    /// made, an object store URL that does not open), [`CliError::Alerts`],
    /// [`CliError::LimitsRead`] / [`CliError::LimitsInvalid`].
    pub fn config(&self) -> Result<(ServerConfig, String), CliError> {
        let env_secret = std::env::var("SPIKE_SECRET").ok();
        let (access, how) = Access::choose(
            self.listen,
            &self.data,
            self.secret_file.as_deref(),
            env_secret.as_deref(),
            self.open,
        )?;
        let mut config = ServerConfig::new(&self.data);
        config.access = access;
        config.check_listen(self.listen)?;
        config.unload_grace = Duration::from_secs(self.unload_after);
        config.store.npm_cdns = self.npm_cdn.iter().flatten().cloned().collect();
        if let Some(path) = &self.limits {
            config.limits = limits_from_file(path)?;
        }
        if let Some(url) = &self.object_store {
            let tier = spike_store::ObjectTier::from_url(url).map_err(ServerError::from)?;
            config.store.backend = Some(Arc::new(tier));
        }
        if let Some(path) = &self.alert_rules {
            let rules = crate::alerts::AlertRules::from_file(path)?;
            tracing::info!(
                rules = rules.rules.len(),
                webhook = rules.webhook.as_deref().unwrap_or("none"),
                "alert rules loaded"
            );
            config.alerts = Some(rules);
        }
        config.ai = self.ai_config();
        if let Some(ai) = &config.ai {
            tracing::info!(
                provider = %ai.provider,
                base_url = ai.base_url.as_deref().unwrap_or(ai.provider.default_base_url()),
                model = ai.model.as_deref().unwrap_or("(the caller's)"),
                key = if ai.api_key.is_some() { ai.provider.key_variable() } else { "none" },
                "AI proxy on /v1/ai/chat"
            );
        }
        Ok((config, how))
    }

    /// The AI proxy's configuration from the flags, with the key from the server's environment.
    fn ai_config(&self) -> Option<crate::ai_proxy::AiConfig> {
        let kind = self.ai_provider?;
        let mut ai = crate::ai_proxy::AiConfig::new(kind);
        ai.base_url.clone_from(&self.ai_base_url);
        ai.model.clone_from(&self.ai_model);
        ai.api_key = std::env::var(kind.key_variable())
            .ok()
            .filter(|k| !k.trim().is_empty());
        let per_minute =
            std::num::NonZeroU32::new(self.ai_rate_per_minute).unwrap_or(std::num::NonZeroU32::MIN);
        ai.limits.per_caller = Some(spike_ai::Quota::per_minute(per_minute));
        ai.max_tokens = self.ai_max_tokens;
        Some(ai)
    }
}

/// [`Limits`] from a JSON file of any of its fields (the rest default).
///
/// Errors: [`CliError::LimitsRead`], or [`CliError::LimitsInvalid`] naming the unknown or
/// mistyped field with its line and column.
pub fn limits_from_file(path: &Path) -> Result<Limits, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::LimitsRead {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CliError::LimitsInvalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Starts the server from `args` and serves until Ctrl-C or SIGTERM. The first line on stdout
/// is `listening on ws://<addr>/rooms (data in <dir>; <access>)`; scripts and tests wait for it
/// (the port may have been 0).
///
/// Errors: those of [`ServeArgs::config`], [`CliError::Bind`], and the server's own.
pub async fn serve(args: &ServeArgs) -> Result<(), CliError> {
    let (config, how) = args.config()?;
    let server = Server::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServerError::from)?;
    tracing::info!(%addr, data = %args.data.display(), "{how}");
    println!(
        "listening on ws://{addr}/rooms (data in {}; {how})",
        args.data.display()
    );
    server.serve(listener, crate::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rate;

    #[test]
    fn a_limits_file_replaces_the_fields_it_names() -> Result<(), CliError> {
        let dir = tempfile::tempdir().map_err(|source| CliError::LimitsRead {
            path: PathBuf::new(),
            source,
        })?;
        let path = dir.path().join("limits.json");
        let write = |text: &str| std::fs::write(&path, text).expect("write");
        write(
            r#"{
                "max_frame_bytes": 1048576,
                "idle_timeout": "30s",
                "handshake_timeout": "1500ms",
                "ip_connection_rate": {"per_second": 20, "burst": 100},
                "token_byte_rate": null
            }"#,
        );
        let limits = limits_from_file(&path)?;
        assert_eq!(limits.max_frame_bytes, 1 << 20);
        assert_eq!(limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(limits.handshake_timeout, Duration::from_millis(1500));
        assert_eq!(limits.ip_connection_rate, Some(Rate::new(20, 100)));
        assert_eq!(limits.token_byte_rate, None);
        let defaults = Limits::default();
        assert_eq!(limits.max_queued_frames, defaults.max_queued_frames);
        assert_eq!(limits.token_connection_rate, defaults.token_connection_rate);

        write(r#"{"idle_timeout": 30}"#);
        match limits_from_file(&path) {
            Err(CliError::LimitsInvalid { reason, .. }) => {
                assert!(reason.contains("line 1 column"), "{reason}")
            }
            other => panic!("expected LimitsInvalid, got {other:?}"),
        }
        write(r#"{"ip_connection_rate": {"per_second": 20}}"#);
        match limits_from_file(&path) {
            Err(CliError::LimitsInvalid { reason, .. }) => {
                assert!(reason.contains("missing field `burst`"), "{reason}")
            }
            other => panic!("expected LimitsInvalid, got {other:?}"),
        }
        match limits_from_file(&dir.path().join("absent.json")) {
            Err(CliError::LimitsRead { path, .. }) => assert!(path.ends_with("absent.json")),
            other => panic!("expected LimitsRead, got {other:?}"),
        }
        Ok(())
    }
}
