//! `spike-ai`: chat models for Spike, streamed.
//!
//! A [`Provider`] sends a [`ChatRequest`] and returns a [`ChatStream`]: text deltas and complete
//! tool calls in order, then one [`Chunk::Done`] with the stop reason and token [`Usage`]. Three wire formats, spoken over
//! reqwest (rustls on `ring`) with SSE parsed by `eventsource-stream`:
//!
//! - [`OpenAi::new`]: OpenAI Chat Completions, streamed
//!   (<https://platform.openai.com/docs/api-reference/chat/create>,
//!   <https://platform.openai.com/docs/api-reference/chat-streaming>).
//! - [`Anthropic`]: the Anthropic Messages API, streamed
//!   (<https://docs.anthropic.com/en/api/messages>,
//!   <https://docs.anthropic.com/en/docs/build-with-claude/streaming>,
//!   <https://docs.anthropic.com/en/api/errors>).
//! - [`OpenAi::compatible`]: any OpenAI-compatible server by base URL (Ollama, llama.cpp, LM Studio,
//!   vLLM), key optional.
//!
//! Failures are one typed [`AiError`] with a message a person can act on. Every provider has
//! three deadlines ([`HttpOptions`]): connect, first token and total, each a distinct
//! [`AiError::Timeout`] stage. Dropping a [`ChatStream`] closes the upstream connection. A 429's
//! wait is `Retry-After`, else the providers' rate-limit reset headers (OpenAI's
//! `x-ratelimit-reset-*` durations, Anthropic's `anthropic-ratelimit-*-reset` times).
//!
//! A [`Router`] puts providers in order of preference, in the seed's order: local quotas
//! ([`RateLimits`], `governor`, per provider and per caller via [`Router::stream_for`]) →
//! [`ResponseCache`] lookup (SQLite, keyed by a SHA-256 of provider, model, parameters and
//! messages; only complete answers to deterministic requests, replayed as a stream) → the
//! provider with retries ([`RetryPolicy`], `backon`) behind a circuit breaker
//! ([`BreakerPolicy`], `failsafe`), falling back to the next provider → cache store.
//!
//! Tools: a [`ChatRequest`] may carry [`Tool`]s, sent in each vendor's format (OpenAI
//! `tools`/`tool_calls`, Anthropic `tools`/`tool_use`); the calls stream back as
//! [`Chunk::ToolCall`] once their arguments are complete ([`collect_answer`] gathers them).
//! [`editing_tools`] are the four code-editing tools (read a file, replace a range of lines,
//! search and replace, create a file); [`ToolRequest::from_call`] reads a call into an [`Edit`],
//! [`read_result`] answers a `read_file` call from the room as a [`Message::tool_result`] for the
//! next turn, and [`plan_edits`] / [`apply_to_doc`] / [`apply_to_session`] validate edits against a
//! `spike_collab` room (typed [`EditError`]s: stale range, text not found or ambiguous, file
//! exists) and apply them as minimal CRDT edits, never a whole-file overwrite.
//!
//! ```no_run
//! # async fn demo() -> Result<(), spike_ai::AiError> {
//! use futures_util::StreamExt as _;
//! use spike_ai::{ChatRequest, Chunk, OpenAi, Provider as _};
//! let provider = OpenAi::compatible("http://localhost:11434", None)?;
//! let mut answer = provider.stream(&ChatRequest::new("llama3.2", "Say hi")).await?;
//! while let Some(chunk) = answer.next().await {
//!     if let Chunk::Text(text) = chunk? {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! A router with two providers, quotas, a breaker and a cache, asked on behalf of a caller:
//!
//! ```no_run
//! # async fn demo() -> Result<(), spike_ai::AiError> {
//! use std::{num::NonZeroU32, sync::Arc};
//! use spike_ai::{
//!     collect, Anthropic, BreakerPolicy, ChatRequest, OpenAi, RateLimits, ResponseCache, Router,
//! };
//! let router = Router::new()
//!     .route(OpenAi::new(spike_ai::OPENAI_BASE_URL, "sk-…")?, None)
//!     .route(
//!         Anthropic::new(spike_ai::ANTHROPIC_BASE_URL, "sk-ant-…")?,
//!         Some("claude-3-5-haiku-latest".to_owned()),
//!     )
//!     .rate_limits(RateLimits::per_minute(
//!         NonZeroU32::new(500).unwrap_or(NonZeroU32::MIN),
//!         NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
//!     ))
//!     .breaker_policy(BreakerPolicy::default())
//!     .cache(Arc::new(ResponseCache::open("ai-cache.sqlite")?));
//! let mut request = ChatRequest::new("gpt-4o-mini", "Explain this hook");
//! request.temperature = Some(0.0); // deterministic: cached
//! let (text, _finish) = collect(router.stream_for("alice", &request).await?).await?;
//! # Ok(()) }
//! ```

mod anthropic;
mod cache;
mod edit;
mod error;
mod http;
mod kind;
mod openai;
mod provider;
mod router;

pub use anthropic::{Anthropic, ANTHROPIC_BASE_URL, ANTHROPIC_VERSION};
pub use cache::{ResponseCache, DEFAULT_MAX_ENTRIES};
pub use edit::{
    apply_to_doc, apply_to_session, editing_tools, plan_edits, read_result, Edit, EditError,
    FileChange, ToolRequest, CREATE_FILE, READ_FILE, REPLACE_RANGE, SEARCH_REPLACE,
};
pub use error::AiError;
pub use governor::Quota;
pub use kind::ProviderKind;
pub use openai::{OpenAi, OPENAI_BASE_URL};
pub use provider::{
    BoxFuture, ChatRequest, ChatStream, Chunk, Finish, HttpOptions, Message, Provider, Role, Tool,
    ToolCall, Usage,
};
pub use router::{BreakerPolicy, RateLimits, RetryPolicy, Router};

/// Hands each piece of text to `on_text` as it arrives; returns how the answer finished.
pub async fn forward(
    mut stream: ChatStream,
    mut on_text: impl FnMut(&str),
) -> Result<Finish, AiError> {
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        match chunk? {
            Chunk::Text(t) => on_text(&t),
            Chunk::ToolCall(_) => {}
            Chunk::Done(finish) => return Ok(finish),
        }
    }
    // Unreachable for the built-in providers (they end with Done or an error), kept for others.
    Err(AiError::Config(
        "the answer stream ended without finishing".to_owned(),
    ))
}

/// A whole answer: its text, the tool calls it made (in order) and how it finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// All text pieces, joined.
    pub text: String,
    /// Every [`Chunk::ToolCall`], in order.
    pub tool_calls: Vec<ToolCall>,
    /// The stop reason and usage.
    pub finish: Finish,
}

/// Collects a whole answer, tool calls included.
pub async fn collect_answer(mut stream: ChatStream) -> Result<Answer, AiError> {
    use futures_util::StreamExt as _;
    let mut answer = Answer::default();
    while let Some(chunk) = stream.next().await {
        match chunk? {
            Chunk::Text(t) => answer.text.push_str(&t),
            Chunk::ToolCall(call) => answer.tool_calls.push(call),
            Chunk::Done(finish) => {
                answer.finish = finish;
                return Ok(answer);
            }
        }
    }
    Err(AiError::Config(
        "the answer stream ended without finishing".to_owned(),
    ))
}

/// Collects a whole answer: its text and how it finished (tool calls are dropped; see
/// [`collect_answer`]).
pub async fn collect(stream: ChatStream) -> Result<(String, Finish), AiError> {
    let mut text = String::new();
    let finish = forward(stream, |t| text.push_str(t)).await?;
    Ok((text, finish))
}
