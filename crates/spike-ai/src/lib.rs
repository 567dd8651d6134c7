//! `spike-ai`: chat models for Spike, streamed.
//!
//! A [`Provider`] sends a [`ChatRequest`] and returns a [`ChatStream`]: text deltas in order, then
//! one [`Chunk::Done`] with the stop reason and token [`Usage`]. Three wire formats, spoken over
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
//! Failures are one typed [`AiError`] with a message a person can act on. A [`Router`] retries a
//! provider with exponential backoff (honouring `Retry-After`) and falls back to the next one.
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

mod anthropic;
mod error;
mod http;
mod openai;
mod provider;
mod router;

pub use anthropic::{Anthropic, ANTHROPIC_BASE_URL, ANTHROPIC_VERSION};
pub use error::AiError;
pub use openai::{OpenAi, OPENAI_BASE_URL};
pub use provider::{
    BoxFuture, ChatRequest, ChatStream, Chunk, Finish, HttpOptions, Message, Provider, Role, Usage,
};
pub use router::{RetryPolicy, Router};

/// Hands each piece of text to `on_text` as it arrives; returns how the answer finished.
pub async fn forward(
    mut stream: ChatStream,
    mut on_text: impl FnMut(&str),
) -> Result<Finish, AiError> {
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        match chunk? {
            Chunk::Text(t) => on_text(&t),
            Chunk::Done(finish) => return Ok(finish),
        }
    }
    // Unreachable for the built-in providers (they end with Done or an error), kept for others.
    Err(AiError::Config(
        "the answer stream ended without finishing".to_owned(),
    ))
}

/// Collects a whole answer: its text and how it finished.
pub async fn collect(stream: ChatStream) -> Result<(String, Finish), AiError> {
    let mut text = String::new();
    let finish = forward(stream, |t| text.push_str(t)).await?;
    Ok((text, finish))
}
