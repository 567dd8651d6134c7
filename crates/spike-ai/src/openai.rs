//! OpenAI Chat Completions with SSE streaming, and any OpenAI-compatible server.
//!
//! Wire format: <https://platform.openai.com/docs/api-reference/chat/create> and
//! <https://platform.openai.com/docs/api-reference/chat-streaming>: `POST {base}/v1/chat/completions`
//! with `Authorization: Bearer <key>` and `"stream": true`; the answer is SSE `data:` lines, each a
//! `chat.completion.chunk` whose `choices[0].delta.content` is the next text, ending with
//! `data: [DONE]`.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::http::{self, Context, EventParser};
use crate::{
    AiError, BoxFuture, ChatRequest, ChatStream, Chunk, Finish, HttpOptions, Provider, ToolCall,
    Usage,
};

/// The public OpenAI API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com";

/// An OpenAI-format provider: OpenAI itself, or a compatible server (Ollama, llama.cpp, LM Studio,
/// vLLM) by base URL, where the key is optional.
#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    name: String,
    base_url: String,
    api_key: Option<String>,
    options: HttpOptions,
}

impl OpenAi {
    /// OpenAI at `base_url` (usually [`OPENAI_BASE_URL`]) with an API key.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, AiError> {
        Self::build(
            "openai",
            base_url.into(),
            Some(api_key.into()),
            HttpOptions::default(),
        )
    }

    /// An OpenAI-compatible server at `base_url`; `api_key` is sent as a bearer token if given.
    pub fn compatible(
        base_url: impl Into<String>,
        api_key: Option<String>,
    ) -> Result<Self, AiError> {
        Self::build(
            "compatible",
            base_url.into(),
            api_key,
            HttpOptions::default(),
        )
    }

    /// Replaces the connection options.
    pub fn with_options(self, options: HttpOptions) -> Result<Self, AiError> {
        Self::build(&self.name.clone(), self.base_url, self.api_key, options)
    }

    fn build(
        name: &str,
        base_url: String,
        api_key: Option<String>,
        options: HttpOptions,
    ) -> Result<Self, AiError> {
        Ok(OpenAi {
            client: http::client(&options)?,
            name: name.to_owned(),
            base_url,
            api_key,
            options,
        })
    }

    fn context(&self) -> Context {
        let key_hint = if self.name == "openai" {
            "OPENAI_API_KEY"
        } else {
            "the server's API key (OPENAI_API_KEY)"
        };
        Context::new(&self.name, key_hint, &self.options)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
}

/// `{"type": "function", "function": {"name", "description", "parameters"}}`.
#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: &'a crate::Tool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    /// `null` for an assistant turn that only called tools.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

/// An earlier tool call, replayed: `{"id", "type": "function", "function": {"name",
/// "arguments"}}` with the arguments as a JSON string, as the model sent them.
#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCallFunction<'a>,
}

#[derive(Serialize)]
struct WireCallFunction<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

fn body<'a>(request: &'a ChatRequest, include_usage: bool) -> Body<'a> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(WireMessage {
            role: "system",
            content: Some(system),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
    }
    messages.extend(request.messages.iter().map(|m| {
        WireMessage {
            role: match m.role {
                crate::Role::User => "user",
                crate::Role::Assistant => "assistant",
                crate::Role::Tool => "tool",
            },
            content: (!m.content.is_empty() || m.tool_calls.is_empty()).then_some(&m.content),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| WireCall {
                    id: &c.id,
                    kind: "function",
                    function: WireCallFunction {
                        name: &c.name,
                        arguments: c.arguments.to_string(),
                    },
                })
                .collect(),
            tool_call_id: m.tool_call_id.as_deref(),
        }
    }));
    Body {
        model: &request.model,
        messages,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        stream: true,
        stream_options: include_usage.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: request
            .tools
            .iter()
            .map(|function| WireTool {
                kind: "function",
                function,
            })
            .collect(),
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, AiError>> {
        Box::pin(async move {
            let cx = self.context();
            let mut builder = self
                .client
                .post(http::endpoint(&self.base_url, "chat/completions"))
                .header(reqwest::header::ACCEPT, "text/event-stream")
                // Some compatible servers reject `stream_options`; OpenAI documents it.
                .json(&body(request, self.name == "openai"));
            if let Some(key) = &self.api_key {
                builder = builder.bearer_auth(key);
            }
            let response = http::send(&cx, builder).await?;
            Ok(http::sse_stream(&cx, response, ChunkParser::default()))
        })
    }
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    delta: WireDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolDelta>,
}

/// One piece of a streamed tool call: the first names it (`id`, `function.name`), the rest add
/// to `function.arguments`, all under the call's `index`.
#[derive(Deserialize)]
struct WireToolDelta {
    index: u32,
    id: Option<String>,
    #[serde(default)]
    function: WireFunctionDelta,
}

#[derive(Deserialize, Default)]
struct WireFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct ChunkParser {
    finish: Finish,
    calls: BTreeMap<u32, PartialCall>,
}

impl ChunkParser {
    /// The tool calls assembled so far, complete: called when the choice finishes.
    fn take_calls(&mut self, name: &str) -> Result<Vec<Chunk>, AiError> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|call| {
                let arguments = if call.arguments.trim().is_empty() {
                    serde_json::json!({})
                } else {
                    http::json(name, &call.arguments)?
                };
                Ok(Chunk::ToolCall(ToolCall {
                    id: call.id,
                    name: call.name,
                    arguments,
                }))
            })
            .collect()
    }
}

impl EventParser for ChunkParser {
    fn event(
        &mut self,
        name: &str,
        event: &eventsource_stream::Event,
    ) -> Result<Vec<Chunk>, AiError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            let mut chunks = self.take_calls(name)?;
            chunks.push(Chunk::Done(std::mem::take(&mut self.finish)));
            return Ok(chunks);
        }
        let chunk: WireChunk = http::json(name, data)?;
        if let Some(error) = chunk.error {
            // Mid-stream errors are the server's (the request was accepted with a 200).
            let (message, _) =
                http::error_message(&serde_json::json!({ "error": error }).to_string());
            return Err(AiError::ProviderDown {
                provider: name.to_owned(),
                detail: message,
            });
        }
        if let Some(u) = chunk.usage {
            self.finish.usage = Usage {
                input_tokens: u.prompt_tokens,
                output_tokens: u.completion_tokens,
            };
        }
        let mut chunks = Vec::new();
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                chunks.push(Chunk::Text(text));
            }
            for delta in choice.delta.tool_calls {
                let call = self.calls.entry(delta.index).or_default();
                if let Some(id) = delta.id {
                    call.id = id;
                }
                if let Some(n) = delta.function.name {
                    call.name.push_str(&n);
                }
                if let Some(a) = delta.function.arguments {
                    call.arguments.push_str(&a);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish.stop_reason = Some(reason);
                chunks.extend(self.take_calls(name)?);
            }
        }
        Ok(chunks)
    }
}
