//! `spike ai ask`: one question to a chat model, the answer streamed to stdout.
//!
//! Keys come from the environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`) or, when a variable is
//! absent, from the config file: `$SPIKE_CONFIG`, else `spike/config.toml` in the platform config
//! folder (`$XDG_CONFIG_HOME` or `~/.config` on Linux, `~/Library/Application Support` on macOS,
//! `%APPDATA%` on Windows). Its keys, all optional:
//!
//! ```toml
//! openai_api_key = "sk-…"
//! anthropic_api_key = "sk-ant-…"
//! provider = "anthropic"          # openai | anthropic | compatible
//! model = "claude-3-5-haiku-latest"
//! base_url = "https://api.anthropic.com"
//! ```
//!
//! `model` and `base_url` are the defaults of the config's `provider` (openai when unset) and
//! are not used when `--provider` names another one. Flags win over the file.
//!
//! The question goes through the same [`spike_ai::Router`] as the app's assistant: a provider
//! that answers 429 or 5xx is retried with backoff, honouring `Retry-After`, behind a circuit
//! breaker, and deterministic answers (temperature 0) are cached in `spike/ai-cache.sqlite` in
//! the platform cache folder (`$XDG_CACHE_HOME` or `~/.cache` on Linux).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use spike_ai::{AiError, ChatRequest, Provider, ProviderKind, ResponseCache, Router};

/// Arguments of `spike ai`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Ask a question; the answer streams to stdout.
    Ask(AskArgs),
}

/// The `--provider` values (clap's face of [`ProviderKind`]).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProviderArg {
    /// OpenAI Chat Completions (key: OPENAI_API_KEY).
    Openai,
    /// Anthropic Messages (key: ANTHROPIC_API_KEY).
    Anthropic,
    /// Any OpenAI-compatible server (Ollama, llama.cpp, LM Studio, vLLM); OPENAI_API_KEY is
    /// sent if set.
    Compatible,
}

impl From<ProviderArg> for ProviderKind {
    fn from(arg: ProviderArg) -> Self {
        match arg {
            ProviderArg::Openai => ProviderKind::Openai,
            ProviderArg::Anthropic => ProviderKind::Anthropic,
            ProviderArg::Compatible => ProviderKind::Compatible,
        }
    }
}

#[derive(clap::Args)]
struct AskArgs {
    /// Which wire format to speak [default: the config file's `provider`, else openai].
    #[arg(long, value_enum)]
    provider: Option<ProviderArg>,
    /// The API's base URL [default: https://api.openai.com, https://api.anthropic.com or
    /// http://localhost:11434 (Ollama)].
    #[arg(long)]
    base_url: Option<String>,
    /// The model id [default: gpt-4o-mini, claude-3-5-haiku-latest or llama3.2].
    #[arg(long)]
    model: Option<String>,
    /// Adds this file's content to the prompt.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 1024)]
    max_tokens: u32,
    /// The question.
    prompt: String,
}

/// Files beyond this size are refused rather than sent as a prompt.
const MAX_FILE_BYTES: u64 = 512 * 1024;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Ask(args) => ask(args),
    }
}

fn ask(args: AskArgs) -> anyhow::Result<ExitCode> {
    let mut prompt = args.prompt.clone();
    if let Some(path) = &args.file {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        anyhow::ensure!(
            size <= MAX_FILE_BYTES,
            "{} is {size} bytes; at most {MAX_FILE_BYTES} can be sent",
            path.display()
        );
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        prompt = format!("{prompt}\n\nFile `{}`:\n```\n{text}\n```\n", path.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config = Config::load()?;
    let result = runtime.block_on(async {
        let (provider, model) = provider(&args, &config)?;
        let router = with_cache(Router::new().route(provider, Some(model.clone())));
        let mut request = ChatRequest::new(model, prompt);
        request.max_tokens = args.max_tokens;
        let answer = router.stream_for("cli", &request).await?;
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) is not an error of the answer; stop writing quietly.
        let mut open = true;
        spike_ai::forward(answer, |text| {
            open = open
                && stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_ok();
        })
        .await?;
        if open {
            let _ = writeln!(stdout);
        }
        Ok::<(), AiError>(())
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `router` with the response cache in the platform cache folder, when it can be opened (a
/// cache that cannot is skipped with a warning: the question still goes out).
fn with_cache(router: Router) -> Router {
    let Some(path) = dirs::cache_dir().map(|d| d.join("spike").join("ai-cache.sqlite")) else {
        return router;
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match ResponseCache::open(&path) {
        Ok(cache) => router.cache(Arc::new(cache)),
        Err(e) => {
            eprintln!(
                "warning: the AI response cache {} is unavailable: {e}",
                path.display()
            );
            router
        }
    }
}

/// The config file's contents; see the module docs.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    openai_api_key: Option<String>,
    anthropic_api_key: Option<String>,
    provider: Option<ProviderKind>,
    model: Option<String>,
    base_url: Option<String>,
}

/// Config files beyond this size are refused (it holds a few short keys).
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

impl Config {
    /// `$SPIKE_CONFIG` (which must exist), else the platform file (which may not).
    fn load() -> anyhow::Result<Config> {
        let (path, required) = match std::env::var_os("SPIKE_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => (PathBuf::from(path), true),
            None => match dirs::config_dir() {
                Some(dir) => (dir.join("spike").join("config.toml"), false),
                None => return Ok(Config::default()),
            },
        };
        if !required && !path.exists() {
            return Ok(Config::default());
        }
        Config::read(&path).with_context(|| format!("reading the config file {}", path.display()))
    }

    fn read(path: &Path) -> anyhow::Result<Config> {
        let size = std::fs::metadata(path)?.len();
        anyhow::ensure!(
            size <= MAX_CONFIG_BYTES,
            "it is {size} bytes; at most {MAX_CONFIG_BYTES} are read"
        );
        warn_if_readable_by_others(path);
        let text = std::fs::read_to_string(path)?;
        // toml's message names the line and column, and the key for an unknown or mistyped one.
        Ok(toml::from_str(&text)?)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} holds API keys and is readable by other users; run chmod 600 on it",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// The key from `var`, else from the config file's `field`.
fn key(var: &str, from_config: Option<&String>) -> Option<String> {
    std::env::var(var)
        .ok()
        .or_else(|| from_config.cloned())
        .filter(|k| !k.trim().is_empty())
}

fn provider(args: &AskArgs, config: &Config) -> Result<(Box<dyn Provider>, String), AiError> {
    let kind = args
        .provider
        .map(ProviderKind::from)
        .or(config.provider)
        .unwrap_or(ProviderKind::Openai);
    // The file's model and base URL belong to its provider.
    let same = kind == config.provider.unwrap_or(ProviderKind::Openai);
    let base = args
        .base_url
        .clone()
        .or_else(|| config.base_url.clone().filter(|_| same));
    let model = args
        .model
        .clone()
        .or_else(|| config.model.clone().filter(|_| same))
        .unwrap_or_else(|| kind.default_model().to_owned());
    let (from_config, field) = match kind {
        ProviderKind::Anthropic => (config.anthropic_api_key.as_ref(), "anthropic_api_key"),
        ProviderKind::Openai | ProviderKind::Compatible => {
            (config.openai_api_key.as_ref(), "openai_api_key")
        }
    };
    let var = kind.key_variable();
    let provider = kind.build(
        base.as_deref(),
        key(var, from_config),
        &format!(
            "set {var} to your API key, or `{field}` in the config file ($SPIKE_CONFIG or spike/config.toml in the config folder)"
        ),
    )?;
    Ok((provider, model))
}
