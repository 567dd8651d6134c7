//! The request and stream shapes every provider shares, and the [`Provider`] trait.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::AiError;

/// Who said a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person asking.
    User,
    /// The model.
    Assistant,
    /// The result of one of the model's tool calls, sent back to it (OpenAI: a `tool` message;
    /// Anthropic: a `tool_result` block in a user turn).
    Tool,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said (plain text); for [`Role::Tool`], the tool's result.
    pub content: String,
    /// For [`Role::Assistant`]: the tool calls the model made in this turn, to be answered by
    /// [`Role::Tool`] messages in the next.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For [`Role::Tool`]: the [`ToolCall::id`] this answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A model turn: its text and the tool calls it made (empty for none), as it answered.
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
            tool_calls,
            tool_call_id: None,
        }
    }

    /// The result of the tool call `call_id` (e.g. a file's text for `read_file`, or why an
    /// edit was refused), for the model's next turn.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
}

/// A chat request, provider-neutral; each provider maps it to its own wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The provider's model id (e.g. `gpt-4o-mini`, `claude-3-5-haiku-latest`, `llama3.2`).
    pub model: String,
    /// Optional system prompt (OpenAI: a leading `system` message; Anthropic: `system`).
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Upper bound on generated tokens (required by Anthropic, optional for OpenAI).
    pub max_tokens: u32,
    /// Sampling temperature; `None` leaves the provider's default.
    pub temperature: Option<f32>,
    /// Tools the model may call (e.g. [`crate::editing_tools`]); empty for none. Each provider
    /// sends them in its own wire format and streams the calls back as [`Chunk::ToolCall`].
    pub tools: Vec<Tool>,
    /// Whether a complete answer may be served again from the [`crate::ResponseCache`] even
    /// though `temperature` is not 0 (see [`ChatRequest::is_cacheable`]).
    pub cacheable: bool,
}

impl ChatRequest {
    /// A one-turn request with `max_tokens` 1024.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            system: None,
            messages: vec![Message::user(prompt)],
            max_tokens: 1024,
            temperature: None,
            tools: Vec::new(),
            cacheable: false,
        }
    }

    /// Whether the answer is deterministic enough to cache: temperature exactly 0, or the
    /// caller said so with [`ChatRequest::cacheable`].
    pub fn is_cacheable(&self) -> bool {
        self.cacheable || self.temperature == Some(0.0)
    }
}

/// A tool (function) the model may call, described by a JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// The name the model calls it by (`[a-zA-Z0-9_-]{1,64}` for both vendors).
    pub name: String,
    /// What it does and when to use it, for the model.
    pub description: String,
    /// JSON Schema (an `object`) of the arguments.
    pub parameters: serde_json::Value,
}

/// A complete tool call the model made: its arguments assembled from the streamed deltas and
/// parsed as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id (`call_…` for OpenAI, `toolu_…` for Anthropic).
    pub id: String,
    /// The [`Tool::name`] called.
    pub name: String,
    /// The arguments, a JSON object.
    pub arguments: serde_json::Value,
}

/// Token counts as the provider reported them (zero when it did not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// How an answer ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    /// The provider's stop reason (`stop`, `length`, `end_turn`, `max_tokens`, …), if given.
    pub stop_reason: Option<String>,
    /// Token usage, if given.
    pub usage: Usage,
}

/// One item of an answer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chunk {
    /// The next piece of text, in order.
    Text(String),
    /// A tool call, once its arguments are complete.
    ToolCall(ToolCall),
    /// The last item of a complete answer.
    Done(Finish),
}

/// An answer as it arrives: `Text` and `ToolCall` items then exactly one `Done`, or an error. Dropping it cancels the
/// upstream request.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<Chunk, AiError>> + Send>>;

/// A boxed future, so that [`Provider`] can be used as `dyn Provider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A chat model behind some wire format.
pub trait Provider: Send + Sync {
    /// A short name for messages and logs (`openai`, `anthropic`, `compatible`).
    fn name(&self) -> &str;

    /// Sends the request; resolves once the provider accepted it (HTTP status checked) to the
    /// stream of the answer. Errors before any text are returned here, not in the stream.
    fn stream<'a>(&'a self, request: &'a ChatRequest)
        -> BoxFuture<'a, Result<ChatStream, AiError>>;
}

/// A boxed provider (what [`crate::ProviderKind::build`] returns) is a provider, so it can be
/// routed like any other.
impl<P: Provider + ?Sized> Provider for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, AiError>> {
        (**self).stream(request)
    }
}

/// Connection settings shared by the HTTP providers.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Time allowed to open the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed from sending the request to the first text or tool call (or the end of
    /// the answer).
    pub first_token_timeout: Duration,
    /// Time allowed for the whole answer, from sending the request to its last event.
    pub total_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            first_token_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
        }
    }
}
