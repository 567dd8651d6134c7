//! Anthropic Messages API with SSE streaming.
//!
//! Wire format: <https://docs.anthropic.com/en/api/messages> and
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>: `POST {base}/v1/messages` with
//! `x-api-key`, `anthropic-version: 2023-06-01`, `max_tokens` (required) and `"stream": true`. The
//! answer is SSE events `message_start`, `content_block_start`, `content_block_delta` (a
//! `text_delta` carries the text), `content_block_stop`, `message_delta` (stop reason, output
//! usage), `message_stop`, plus `ping` and `error`. Errors: <https://docs.anthropic.com/en/api/errors>
//! (529 / `overloaded_error`).

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::http::{self, Context, EventParser};
use crate::{
    AiError, BoxFuture, ChatRequest, ChatStream, Chunk, Finish, HttpOptions, Provider, ToolCall,
};

/// The public Anthropic API.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The API version this module speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Anthropic's Messages API.
#[derive(Debug, Clone)]
pub struct Anthropic {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    options: HttpOptions,
}

impl Anthropic {
    /// Anthropic at `base_url` (usually [`ANTHROPIC_BASE_URL`]).
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, AiError> {
        Self::build(base_url.into(), api_key.into(), HttpOptions::default())
    }

    /// Replaces the connection options.
    pub fn with_options(self, options: HttpOptions) -> Result<Self, AiError> {
        Self::build(self.base_url, self.api_key, options)
    }

    fn build(base_url: String, api_key: String, options: HttpOptions) -> Result<Self, AiError> {
        Ok(Anthropic {
            client: http::client(&options)?,
            base_url,
            api_key,
            options,
        })
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
}

/// A turn: plain text as a string; with tool calls or results, content blocks.
#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlockOut<'a>>),
}

/// The content blocks we send (<https://docs.anthropic.com/en/api/messages>, `content`).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlockOut<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a serde_json::Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

/// Maps the conversation: an assistant turn's tool calls become `tool_use` blocks after its
/// text, and consecutive [`crate::Role::Tool`] results become `tool_result` blocks of one user
/// turn, as the API wants them answered.
fn wire_messages(messages: &[crate::Message]) -> Vec<WireMessage<'_>> {
    let mut out: Vec<WireMessage<'_>> = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role {
            crate::Role::Tool => {
                let block = WireBlockOut::ToolResult {
                    tool_use_id: m.tool_call_id.as_deref().unwrap_or_default(),
                    content: &m.content,
                };
                match out.last_mut() {
                    Some(WireMessage {
                        role: "user",
                        content: WireContent::Blocks(blocks),
                    }) if blocks
                        .iter()
                        .all(|b| matches!(b, WireBlockOut::ToolResult { .. })) =>
                    {
                        blocks.push(block)
                    }
                    _ => out.push(WireMessage {
                        role: "user",
                        content: WireContent::Blocks(vec![block]),
                    }),
                }
            }
            crate::Role::Assistant if !m.tool_calls.is_empty() => {
                let mut blocks = Vec::with_capacity(m.tool_calls.len() + 1);
                if !m.content.is_empty() {
                    blocks.push(WireBlockOut::Text { text: &m.content });
                }
                blocks.extend(m.tool_calls.iter().map(|c| WireBlockOut::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input: &c.arguments,
                }));
                out.push(WireMessage {
                    role: "assistant",
                    content: WireContent::Blocks(blocks),
                });
            }
            role => out.push(WireMessage {
                role: if role == crate::Role::User {
                    "user"
                } else {
                    "assistant"
                },
                content: WireContent::Text(&m.content),
            }),
        }
    }
    out
}

/// `{"name", "description", "input_schema"}`
/// (<https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use>).
#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a serde_json::Value,
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, AiError>> {
        Box::pin(async move {
            let cx = Context::new("anthropic", "ANTHROPIC_API_KEY", &self.options);
            let body = Body {
                model: &request.model,
                max_tokens: request.max_tokens,
                system: request.system.as_deref(),
                messages: wire_messages(&request.messages),
                temperature: request.temperature,
                stream: true,
                tools: request
                    .tools
                    .iter()
                    .map(|t| WireTool {
                        name: &t.name,
                        description: &t.description,
                        input_schema: &t.parameters,
                    })
                    .collect(),
            };
            let builder = self
                .client
                .post(http::endpoint(&self.base_url, "messages"))
                .header("x-api-key", &self.api_key)
                .header("anthropic-version", ANTHROPIC_VERSION)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(&body);
            let response = http::send(&cx, builder).await?;
            Ok(http::sse_stream(&cx, response, EventsParser::default()))
        })
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStart,
    },
    ContentBlockStart {
        index: u32,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: WireDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: WireStop,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStart {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStop {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// A `tool_use` block being streamed: its input arrives as `input_json_delta` pieces of one
/// JSON object, complete at `content_block_stop`.
struct PartialToolUse {
    id: String,
    name: String,
    input: String,
}

#[derive(Default)]
struct EventsParser {
    finish: Finish,
    tool_uses: BTreeMap<u32, PartialToolUse>,
}

impl EventParser for EventsParser {
    fn event(
        &mut self,
        name: &str,
        event: &eventsource_stream::Event,
    ) -> Result<Vec<Chunk>, AiError> {
        // The `type` field in the data repeats the SSE event name; the data is authoritative.
        let parsed: WireEvent = http::json(name, &event.data)?;
        let provider = name.to_owned();
        Ok(match parsed {
            WireEvent::MessageStart { message } => {
                if let Some(u) = message.usage {
                    self.finish.usage.input_tokens = u.input_tokens.unwrap_or(0);
                    self.finish.usage.output_tokens = u.output_tokens.unwrap_or(0);
                }
                vec![]
            }
            WireEvent::ContentBlockStart {
                index,
                content_block: WireBlock::ToolUse { id, name },
            } => {
                self.tool_uses.insert(
                    index,
                    PartialToolUse {
                        id,
                        name,
                        input: String::new(),
                    },
                );
                vec![]
            }
            WireEvent::ContentBlockStart { .. } => vec![],
            WireEvent::ContentBlockDelta {
                delta: WireDelta::TextDelta { text },
                ..
            } if !text.is_empty() => vec![Chunk::Text(text)],
            WireEvent::ContentBlockDelta {
                index,
                delta: WireDelta::InputJsonDelta { partial_json },
            } => {
                let Some(tool_use) = self.tool_uses.get_mut(&index) else {
                    return Err(AiError::Malformed {
                        provider,
                        detail: format!(
                            "input_json_delta for block {index}, which is not a tool_use"
                        ),
                    });
                };
                tool_use.input.push_str(&partial_json);
                vec![]
            }
            WireEvent::ContentBlockDelta { .. } => vec![],
            WireEvent::ContentBlockStop { index } => match self.tool_uses.remove(&index) {
                Some(tool_use) => {
                    // A tool without parameters streams no delta at all.
                    let arguments = if tool_use.input.trim().is_empty() {
                        serde_json::json!({})
                    } else {
                        http::json(name, &tool_use.input)?
                    };
                    vec![Chunk::ToolCall(ToolCall {
                        id: tool_use.id,
                        name: tool_use.name,
                        arguments,
                    })]
                }
                None => vec![],
            },
            WireEvent::MessageDelta { delta, usage } => {
                self.finish.stop_reason = delta.stop_reason;
                if let Some(u) = usage {
                    if let Some(n) = u.input_tokens {
                        self.finish.usage.input_tokens = n;
                    }
                    if let Some(n) = u.output_tokens {
                        self.finish.usage.output_tokens = n;
                    }
                }
                vec![]
            }
            WireEvent::MessageStop => vec![Chunk::Done(std::mem::take(&mut self.finish))],
            WireEvent::Error { error } => {
                return Err(match error.kind.as_str() {
                    "overloaded_error" => AiError::Overloaded { provider },
                    "rate_limit_error" => AiError::RateLimited {
                        provider,
                        retry_after: None,
                    },
                    "invalid_request_error" => AiError::InvalidRequest {
                        provider,
                        field: None,
                        message: error.message,
                    },
                    _ => AiError::ProviderDown {
                        provider,
                        detail: format!("{}: {}", error.kind, error.message),
                    },
                })
            }
            WireEvent::Other => vec![],
        })
    }
}
