//! `spike ai ask`: one question to a chat model, the answer streamed to stdout.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use spike_ai::{AiError, Anthropic, ChatRequest, OpenAi, Provider};

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

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProviderKind {
    /// OpenAI Chat Completions (key: OPENAI_API_KEY).
    Openai,
    /// Anthropic Messages (key: ANTHROPIC_API_KEY).
    Anthropic,
    /// Any OpenAI-compatible server (Ollama, llama.cpp, LM Studio, vLLM); OPENAI_API_KEY is
    /// sent if set.
    Compatible,
}

#[derive(clap::Args)]
struct AskArgs {
    /// Which wire format to speak.
    #[arg(long, value_enum, default_value = "openai")]
    provider: ProviderKind,
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
    let result = runtime.block_on(async {
        let (provider, model) = provider(&args)?;
        let mut request = ChatRequest::new(model, prompt);
        request.max_tokens = args.max_tokens;
        let answer = provider.stream(&request).await?;
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

fn key(var: &str) -> Result<String, AiError> {
    std::env::var(var)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| AiError::Config(format!("set {var} to your API key")))
}

fn provider(args: &AskArgs) -> Result<(Box<dyn Provider>, String), AiError> {
    let base = args.base_url.clone();
    let model = args.model.clone();
    Ok(match args.provider {
        ProviderKind::Openai => (
            Box::new(OpenAi::new(
                base.unwrap_or_else(|| spike_ai::OPENAI_BASE_URL.to_owned()),
                key("OPENAI_API_KEY")?,
            )?),
            model.unwrap_or_else(|| "gpt-4o-mini".to_owned()),
        ),
        ProviderKind::Anthropic => (
            Box::new(Anthropic::new(
                base.unwrap_or_else(|| spike_ai::ANTHROPIC_BASE_URL.to_owned()),
                key("ANTHROPIC_API_KEY")?,
            )?),
            model.unwrap_or_else(|| "claude-3-5-haiku-latest".to_owned()),
        ),
        ProviderKind::Compatible => (
            Box::new(OpenAi::compatible(
                base.unwrap_or_else(|| "http://localhost:11434".to_owned()),
                key("OPENAI_API_KEY").ok(),
            )?),
            model.unwrap_or_else(|| "llama3.2".to_owned()),
        ),
    })
}
