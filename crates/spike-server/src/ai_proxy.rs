//! The AI proxy: chat completions through the server's own provider account, so a team shares
//! one key without handing it out.
//!
//! The proxy speaks the OpenAI Chat Completions wire format
//! (<https://platform.openai.com/docs/api-reference/chat/create>,
//! <https://platform.openai.com/docs/api-reference/chat-streaming>) towards its callers, whatever
//! provider it talks to upstream ([`AiConfig::provider`]: OpenAI, Anthropic or any
//! OpenAI-compatible server, through a [`spike_ai::Router`]):
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/ai/chat` | as below |
//! | `POST /v1/ai/v1/chat/completions` | the same handler, so that an OpenAI client whose base URL is `http://host:port/v1/ai` (e.g. [`spike_ai::OpenAi::compatible`]) works unchanged |
//!
//! The body ([`parse_request`]) is an OpenAI chat request: `model`, `messages` (roles `system`,
//! `developer`, `user`, `assistant` with `tool_calls`, `tool` with `tool_call_id`; content a
//! string, `null` or an array of `text` parts), `tools` (`function` tools), `max_completion_tokens`
//! or `max_tokens` (default [`DEFAULT_MAX_TOKENS`], at most [`AiConfig::max_tokens`]), `temperature` (0 to 2; exactly 0 makes the
//! answer cacheable in `<data>/ai-cache.sqlite`), `stream`, `stream_options.include_usage` and
//! `n` (1 only). Other fields are ignored. A bad field is `400` naming it (`param`).
//!
//! With `"stream": true` the answer is SSE: `chat.completion.chunk` objects whose
//! `choices[0].delta` carries `role` (first chunk), `content` pieces and complete `tool_calls`
//! (one delta each, `arguments` as a JSON string), then one chunk with `finish_reason`, a usage
//! chunk when asked for, and `data: [DONE]`. An error after the answer started is one
//! `data: {"error": {...}}` event and the stream ends without `[DONE]`. Otherwise the answer is one
//! `chat.completion` object with `choices[0].message` (`content`, `tool_calls`), `finish_reason`
//! and `usage`. Stop reasons are mapped to OpenAI's (`end_turn` → `stop`, `max_tokens` →
//! `length`, `tool_use` → `tool_calls`).
//!
//! Errors are OpenAI-shaped, `{"error": {"message", "type", "param", "code"}}`:
//!
//! | status | when |
//! |---|---|
//! | `400` | the body is not a valid chat request, or the provider refused it as invalid |
//! | `401` | [`crate::Access::Tokens`] and no, a malformed, forged or expired room token |
//! | `403` | a `view` token: the proxy spends the team's money, so it takes an `edit` token |
//! | `404` | the server has no AI provider configured ([`crate::ServerConfig::ai`]) |
//! | `429` + `Retry-After` | the caller's quota ([`AiConfig::limits`]) or the provider's rate limit |
//! | `502` | the provider refused the server's key, or answered something malformed |
//! | `503` | the provider is down, overloaded, or its circuit breaker is open |
//! | `504` | the provider timed out |
//!
//! Who may call: with tokens, any `edit` room token, sent as `Authorization: Bearer <token>`
//! (what an OpenAI client sends as its API key); refusals are logged without the token and
//! counted in `spike_auth_refusals_total{reason}` (`view_only` for a view token). In open mode,
//! anyone. The caller's token is never sent upstream: the provider gets the server's key
//! ([`AiConfig::api_key`]). Each caller has its own quota ([`spike_ai::RateLimits::per_caller`]),
//! keyed by the token's room and name, or in open mode by the client address.
//!
//! Metrics: `spike_ai_proxy_requests_total{provider, outcome}` (outcomes: `ok`,
//! `unauthenticated`, `forbidden`, `bad_request`, `rate_limited`, `upstream_unauthorized`,
//! `unavailable`, `timeout`, `bad_gateway`, `internal`, `client_gone`, `not_configured`) and
//! `spike_ai_proxy_seconds{provider}`, from the request to the end of its answer (the last
//! event of a stream). The router adds `spike_ai_requests_total{provider, outcome}` per
//! provider consulted.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt as _;
use serde_json::{json, Map, Value};
use spike_ai::{
    AiError, BreakerPolicy, ChatRequest, ChatStream, Chunk, Finish, Message, ProviderKind,
    RateLimits, ResponseCache, RetryPolicy, Router, Tool, ToolCall,
};

use crate::auth::Role;
use crate::{Access, Inner};

/// The response cache's file under the data folder.
pub const CACHE_FILE: &str = "ai-cache.sqlite";

/// `max_tokens` when the request names none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The largest `max_tokens` a caller may ask for unless the server says otherwise
/// ([`AiConfig::max_tokens`]).
pub const DEFAULT_MAX_TOKENS_LIMIT: u32 = 16_384;

/// The AI provider behind the proxy, and its quotas and policies.
#[derive(Clone)]
pub struct AiConfig {
    /// Which wire format the provider speaks.
    pub provider: ProviderKind,
    /// The provider's base URL; `None`: [`ProviderKind::default_base_url`].
    pub base_url: Option<String>,
    /// The model every request uses, replacing the caller's `model` (the server decides what the
    /// team spends on). `None`: the caller's `model`, which is then required.
    pub model: Option<String>,
    /// The server's own key, sent upstream (required for `openai` and `anthropic`). Faces read
    /// it from the server's environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`), never from a
    /// flag, which `ps` would show.
    pub api_key: Option<String>,
    /// Requests per caller and per provider. Default: 20 a minute per caller, no provider quota.
    pub limits: RateLimits,
    /// Retries of one provider call. Default: [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// The provider's circuit breaker. Default: [`BreakerPolicy::default`].
    pub breaker: BreakerPolicy,
    /// Whether deterministic answers are cached in `<data>/ai-cache.sqlite`. Default: true.
    pub cache: bool,
    /// The largest `max_tokens` (or `max_completion_tokens`) a caller may ask for: what one
    /// request can spend. A larger one is refused (400, naming the field). Default
    /// [`DEFAULT_MAX_TOKENS_LIMIT`].
    pub max_tokens: u32,
}

impl AiConfig {
    /// `provider` at its default base URL, with the caller's model, no key, and the defaults
    /// given on each field.
    pub fn new(provider: ProviderKind) -> Self {
        Self {
            provider,
            base_url: None,
            model: None,
            api_key: None,
            limits: RateLimits {
                per_provider: None,
                per_caller: Some(spike_ai::Quota::per_minute(
                    std::num::NonZeroU32::new(20).unwrap_or(std::num::NonZeroU32::MIN),
                )),
            },
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            cache: true,
            max_tokens: DEFAULT_MAX_TOKENS_LIMIT,
        }
    }
}

impl std::fmt::Debug for AiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("cache", &self.cache)
            .finish()
    }
}

/// The running proxy: the router and what the handler needs to know about it.
pub(crate) struct Proxy {
    router: Router,
    provider: &'static str,
    model: Option<String>,
    max_tokens: u32,
}

impl Proxy {
    /// Builds the provider and its router, and opens the cache under `data_dir`.
    ///
    /// Errors: [`AiError::Config`] (no key for a provider that needs one), [`AiError::Cache`].
    pub(crate) fn open(config: &AiConfig, data_dir: &Path) -> Result<Self, AiError> {
        let where_keys_live = format!(
            "set {} in the server's environment",
            config.provider.key_variable()
        );
        let provider = config.provider.build(
            config.base_url.as_deref(),
            config.api_key.clone(),
            &where_keys_live,
        )?;
        let mut router = Router::new()
            .route(provider, config.model.clone())
            .retry_policy(config.retry.clone())
            .breaker_policy(config.breaker.clone())
            .rate_limits(config.limits.clone());
        if config.cache {
            router = router.cache(Arc::new(ResponseCache::open(data_dir.join(CACHE_FILE))?));
        }
        describe();
        Ok(Self {
            router,
            provider: config.provider.as_str(),
            model: config.model.clone(),
            max_tokens: config.max_tokens,
        })
    }
}

fn describe() {
    metrics::describe_counter!(
        "spike_ai_proxy_requests_total",
        "AI proxy requests, by provider and outcome."
    );
    metrics::describe_histogram!(
        "spike_ai_proxy_seconds",
        metrics::Unit::Seconds,
        "AI proxy requests, from the request to the end of the answer."
    );
}

/// The proxy's routes, to merge into the server's router.
pub(crate) fn routes() -> axum::Router<Arc<Inner>> {
    axum::Router::new()
        .route("/v1/ai/chat", post(chat))
        .route("/v1/ai/v1/chat/completions", post(chat))
}

/// A chat request the proxy accepted: the provider-neutral request and how to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyRequest {
    /// What to send upstream.
    pub chat: ChatRequest,
    /// Answer as SSE chunks (`true`) or one `chat.completion` object.
    pub stream: bool,
    /// Send a usage chunk before `[DONE]` (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// A body that is not a chat request the proxy can send: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {message}")]
pub struct BadRequest {
    /// The field's path in the body (`messages[2].role`, `tools[0].function.name`), or `body`
    /// for the body as a whole.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, BadRequest> {
    Err(BadRequest {
        field: field.into(),
        message: message.into(),
    })
}

/// Refuses a request asking for more than `limit` output tokens; one that named none asks for
/// [`DEFAULT_MAX_TOKENS`], or `limit` when that is lower.
///
/// Errors: [`BadRequest`] on `max_tokens`.
pub fn within_max_tokens(
    mut request: ProxyRequest,
    limit: u32,
) -> Result<ProxyRequest, BadRequest> {
    if request.chat.max_tokens > limit {
        if request.chat.max_tokens == DEFAULT_MAX_TOKENS {
            request.chat.max_tokens = limit;
        } else {
            return bad(
                "max_tokens",
                format!(
                    "{} is over this server's limit of {limit}",
                    request.chat.max_tokens
                ),
            );
        }
    }
    Ok(request)
}

/// Reads an OpenAI chat request (see the module docs for the fields). `pinned_model`, when
/// given, is used if the body names no model (the router replaces the body's model with it
/// anyway).
///
/// Errors: [`BadRequest`] naming the first field that is missing or wrong.
pub fn parse_request(body: &[u8], pinned_model: Option<&str>) -> Result<ProxyRequest, BadRequest> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return bad(
                "body",
                format!(
                    "is not valid JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        }
    };
    let Value::Object(obj) = value else {
        return bad("body", "must be a JSON object");
    };
    let model = match (obj.get("model"), pinned_model) {
        (Some(Value::String(m)), _) if !m.trim().is_empty() => m.clone(),
        (None | Some(Value::Null), Some(pinned)) => pinned.to_owned(),
        (None | Some(Value::Null), None) => return bad("model", "is required"),
        _ => return bad("model", "must be a non-empty string"),
    };
    let mut chat = ChatRequest::new(model, "");
    chat.messages.clear();
    chat.max_tokens = DEFAULT_MAX_TOKENS;
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return bad("messages", "is required: an array of messages");
    };
    let mut system: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match message(&at, m)? {
            Parsed::System(text) => system.push(text),
            Parsed::Turn(message) => chat.messages.push(message),
        }
    }
    if chat.messages.is_empty() {
        return bad("messages", "needs at least one user message");
    }
    chat.system = (!system.is_empty()).then(|| system.join("\n\n"));
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            for (i, t) in tools.iter().enumerate() {
                chat.tools.push(tool(&format!("tools[{i}]"), t)?);
            }
        }
        Some(_) => return bad("tools", "must be an array of function tools"),
    }
    for field in ["max_completion_tokens", "max_tokens"] {
        match obj.get(field) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                chat.max_tokens = v
                    .as_u64()
                    .filter(|n| *n > 0)
                    .and_then(|n| u32::try_from(n).ok())
                    .map_or_else(
                        || bad(field, "must be a whole number from 1 to 4294967295"),
                        Ok,
                    )?;
                break;
            }
        }
    }
    match obj.get("temperature") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_f64().filter(|t| (0.0..=2.0).contains(t)) {
            Some(t) => chat.temperature = Some(t as f32),
            None => return bad("temperature", "must be a number from 0 to 2"),
        },
    }
    match obj.get("n") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => return bad("n", "must be 1: the proxy answers with one choice"),
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("stream", "must be true or false"),
    };
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return bad("stream_options.include_usage", "must be true or false"),
        },
        Some(_) => return bad("stream_options", "must be an object"),
    };
    Ok(ProxyRequest {
        chat,
        stream,
        include_usage,
    })
}

enum Parsed {
    System(String),
    Turn(Message),
}

fn message(at: &str, m: &Value) -> Result<Parsed, BadRequest> {
    let Value::Object(m) = m else {
        return bad(at, "must be an object with `role` and `content`");
    };
    let Some(Value::String(role)) = m.get("role") else {
        return bad(format!("{at}.role"), "is required: a string");
    };
    let content = content(&format!("{at}.content"), m.get("content"))?;
    Ok(match role.as_str() {
        "system" | "developer" => Parsed::System(content),
        "user" => Parsed::Turn(Message::user(content)),
        "assistant" => {
            let calls = match m.get("tool_calls") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(calls)) => calls
                    .iter()
                    .enumerate()
                    .map(|(j, c)| tool_call(&format!("{at}.tool_calls[{j}]"), c))
                    .collect::<Result<_, _>>()?,
                Some(_) => return bad(format!("{at}.tool_calls"), "must be an array"),
            };
            Parsed::Turn(Message::assistant(content, calls))
        }
        "tool" => match m.get("tool_call_id") {
            Some(Value::String(id)) if !id.is_empty() => {
                Parsed::Turn(Message::tool_result(id.clone(), content))
            }
            _ => {
                return bad(
                    format!("{at}.tool_call_id"),
                    "is required for a tool message: the id of the call it answers",
                )
            }
        },
        _ => {
            return bad(
                format!("{at}.role"),
                format!("{role:?} is not one of system, developer, user, assistant, tool"),
            )
        }
    })
}

/// A message's text: a string, `null`, or an array of `{"type": "text", "text"}` parts.
fn content(at: &str, value: Option<&Value>) -> Result<String, BadRequest> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (k, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some("text"), _) => {
                        return bad(format!("{at}[{k}].text"), "is required: a string")
                    }
                    _ => {
                        return bad(
                            format!("{at}[{k}].type"),
                            "must be \"text\": the proxy forwards text only",
                        )
                    }
                }
            }
            Ok(text)
        }
        Some(_) => bad(at, "must be a string, null or an array of text parts"),
    }
}

fn tool_call(at: &str, c: &Value) -> Result<ToolCall, BadRequest> {
    let Some(Value::String(id)) = c.get("id") else {
        return bad(format!("{at}.id"), "is required: a string");
    };
    let Some(Value::Object(function)) = c.get("function") else {
        return bad(
            format!("{at}.function"),
            "is required: {\"name\", \"arguments\"}",
        );
    };
    let Some(Value::String(name)) = function.get("name") else {
        return bad(format!("{at}.function.name"), "is required: a string");
    };
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(a)) if a.trim().is_empty() => json!({}),
        Some(Value::String(a)) => match serde_json::from_str(a) {
            Ok(v) => v,
            Err(e) => {
                return bad(
                    format!("{at}.function.arguments"),
                    format!("is not JSON: {e}"),
                )
            }
        },
        Some(_) => {
            return bad(
                format!("{at}.function.arguments"),
                "must be the arguments as a JSON string",
            )
        }
    };
    Ok(ToolCall {
        id: id.clone(),
        name: name.clone(),
        arguments,
    })
}

fn tool(at: &str, t: &Value) -> Result<Tool, BadRequest> {
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        _ => return bad(format!("{at}.type"), "must be \"function\""),
    }
    let Some(Value::Object(function)) = t.get("function") else {
        return bad(
            format!("{at}.function"),
            "is required: {\"name\", \"description\", \"parameters\"}",
        );
    };
    let name = match function.get("name") {
        Some(Value::String(n))
            if (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            n.clone()
        }
        _ => {
            return bad(
                format!("{at}.function.name"),
                "must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
            )
        }
    };
    let description = match function.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => return bad(format!("{at}.function.description"), "must be a string"),
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return bad(
                format!("{at}.function.parameters"),
                "must be a JSON Schema object",
            )
        }
    };
    Ok(Tool {
        name,
        description,
        parameters,
    })
}

/// Counts one proxy request and its latency once, however it ends: a stream the client drops
/// before its end counts as `client_gone`.
struct Outcome {
    provider: &'static str,
    started: Instant,
    done: bool,
}

impl Outcome {
    fn start(provider: &'static str) -> Self {
        Self {
            provider,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        metrics::counter!("spike_ai_proxy_requests_total",
            "provider" => self.provider, "outcome" => outcome)
        .increment(1);
        metrics::histogram!("spike_ai_proxy_seconds", "provider" => self.provider)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.finish("client_gone");
    }
}

/// An OpenAI-shaped error answer.
fn error_response(status: StatusCode, kind: &str, message: &str, param: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": null}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The status, OpenAI error type and outcome label of a router error.
fn classify(e: &AiError) -> (StatusCode, &'static str, &'static str) {
    match e {
        AiError::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
        ),
        // Never 401: that would tell the caller their own token was refused.
        AiError::Unauthorized { .. } => (
            StatusCode::BAD_GATEWAY,
            "upstream_authentication_error",
            "upstream_unauthorized",
        ),
        AiError::Overloaded { .. } | AiError::ProviderDown { .. } | AiError::CircuitOpen { .. } => {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "unavailable",
            )
        }
        AiError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout"),
        AiError::InvalidRequest { .. } => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad_request",
        ),
        AiError::Malformed { .. } | AiError::StreamCut { .. } => {
            (StatusCode::BAD_GATEWAY, "upstream_error", "bad_gateway")
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal",
        ),
    }
}

/// What the caller is told about a router error; for a refused key, that it is the server's.
fn error_message(e: &AiError) -> String {
    match e {
        AiError::Unauthorized {
            provider, message, ..
        } => format!(
            "{provider} refused this server's API key ({message}); the server's operator must \
             check the key in its environment. Your own token was accepted"
        ),
        other => other.to_string(),
    }
}

fn ai_error_response(e: &AiError) -> Response {
    let (status, kind, _) = classify(e);
    let param = match e {
        AiError::InvalidRequest { field, .. } => field.as_deref(),
        _ => None,
    };
    let mut response = error_response(status, kind, &error_message(e), param);
    if let Some(wait) = e
        .retry_after()
        .filter(|_| status == StatusCode::TOO_MANY_REQUESTS)
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
    }
    response
}

/// A refused caller: the status and reason to answer with.
struct Refused {
    status: StatusCode,
    reason: String,
}

impl Refused {
    fn response(&self) -> Response {
        let error_type = if self.status == StatusCode::FORBIDDEN {
            "permission_error"
        } else {
            "authentication_error"
        };
        error_response(self.status, error_type, &self.reason, None)
    }

    fn outcome(&self) -> &'static str {
        if self.status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "unauthenticated"
        }
    }
}

/// Checks the caller's token; returns the caller's quota key, or why it is refused.
fn authorize(inner: &Inner, headers: &HeaderMap, peer: SocketAddr) -> Result<String, Refused> {
    let Access::Tokens(key) = &inner.config.access else {
        return Ok(format!("address {}", crate::listen::peer_key(peer.ip())));
    };
    let refused = |kind: &'static str, status: StatusCode, reason: String| {
        tracing::warn!(peer = %peer.ip(), reason = kind, "refused an AI request: {reason}");
        metrics::counter!("spike_auth_refusals_total", "reason" => kind).increment(1);
        Refused { status, reason }
    };
    match key.verify_any(crate::conn::bearer(headers)) {
        Ok(claims) if claims.role == Role::View => Err(refused(
            "view_only",
            StatusCode::FORBIDDEN,
            "a view token may not use the AI proxy (it spends the team's provider account); \
             ask for an edit token"
                .into(),
        )),
        Ok(claims) => Ok(format!(
            "room {} / {}",
            claims.room,
            claims.name.as_deref().unwrap_or("(no name)")
        )),
        Err(crate::auth::Refusal::Missing) => Err(refused(
            "missing",
            StatusCode::UNAUTHORIZED,
            "this server requires a room token: send an edit token as \
             `Authorization: Bearer <token>` (an OpenAI client's API key)"
                .into(),
        )),
        Err(refusal) => Err(refused(
            refusal.kind(),
            refusal.status(),
            refusal.to_string(),
        )),
    }
}

/// `POST /v1/ai/chat` and `POST /v1/ai/v1/chat/completions`.
async fn chat(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(proxy) = &inner.ai else {
        metrics::counter!("spike_ai_proxy_requests_total",
            "provider" => "none", "outcome" => "not_configured")
        .increment(1);
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "this server has no AI provider configured (start it with --ai-provider)",
            None,
        );
    };
    let mut outcome = Outcome::start(proxy.provider);
    let caller = match authorize(&inner, &headers, peer) {
        Ok(caller) => caller,
        Err(refused) => {
            outcome.finish(refused.outcome());
            return refused.response();
        }
    };
    let request = match parse_request(&body, proxy.model.as_deref())
        .and_then(|r| within_max_tokens(r, proxy.max_tokens))
    {
        Ok(r) => r,
        Err(e) => {
            outcome.finish("bad_request");
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
                Some(&e.field),
            );
        }
    };
    let answer = match proxy.router.stream_for(&caller, &request.chat).await {
        Ok(answer) => answer,
        Err(e) => {
            let (_, _, label) = classify(&e);
            tracing::warn!(provider = proxy.provider, error = %e, "AI request failed");
            outcome.finish(label);
            return ai_error_response(&e);
        }
    };
    let head = Head::new(proxy.model.as_deref().unwrap_or(&request.chat.model));
    if request.stream {
        streamed(answer, head, request.include_usage, outcome)
    } else {
        whole(answer, head, outcome).await
    }
}

/// The fields every answer object repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
}

impl Head {
    fn new(model: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            id: format!(
                "chatcmpl-spike-{created:x}-{}",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            created,
            model: model.to_owned(),
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

/// OpenAI's `finish_reason` for a provider's stop reason.
fn finish_reason(stop: Option<&str>, called_tools: bool) -> Cow<'_, str> {
    match stop {
        Some("end_turn" | "stop_sequence" | "stop") => "stop".into(),
        Some("max_tokens" | "length") => "length".into(),
        Some("tool_use" | "tool_calls") => "tool_calls".into(),
        Some("refusal" | "content_filter") => "content_filter".into(),
        Some(other) => other.into(),
        None if called_tools => "tool_calls".into(),
        None => "stop".into(),
    }
}

fn usage(finish: &Finish) -> Value {
    let u = finish.usage;
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

fn wire_call(call: &ToolCall) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(call.id));
    m.insert("type".into(), json!("function"));
    m.insert(
        "function".into(),
        json!({"name": call.name, "arguments": call.arguments.to_string()}),
    );
    m
}

/// The state of one streamed answer.
struct Streaming {
    answer: ChatStream,
    head: Head,
    include_usage: bool,
    outcome: Outcome,
    sent_role: bool,
    tool_calls: u32,
    ended: bool,
}

impl Streaming {
    fn delta(&mut self, mut delta: Map<String, Value>) -> Event {
        if !std::mem::replace(&mut self.sent_role, true) {
            delta.insert("role".into(), json!("assistant"));
        }
        data(
            &self.head.chunk(
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            ),
        )
    }

    /// The events for the next item of the answer; `None` once it has ended.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.ended {
            return None;
        }
        let item = self.answer.next().await;
        Some(match item {
            Some(Ok(Chunk::Text(text))) => {
                let mut d = Map::new();
                d.insert("content".into(), json!(text));
                vec![self.delta(d)]
            }
            Some(Ok(Chunk::ToolCall(call))) => {
                let mut c = wire_call(&call);
                c.insert("index".into(), json!(self.tool_calls));
                self.tool_calls += 1;
                let mut d = Map::new();
                d.insert("tool_calls".into(), json!([c]));
                vec![self.delta(d)]
            }
            Some(Ok(Chunk::Done(finish))) => {
                self.ended = true;
                let mut events = Vec::new();
                if !self.sent_role {
                    events.push(self.delta(Map::new()));
                }
                let reason = finish_reason(finish.stop_reason.as_deref(), self.tool_calls > 0);
                events.push(data(&self.head.chunk(
                    json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]),
                )));
                if self.include_usage {
                    let mut last = self.head.chunk(json!([]));
                    last["usage"] = usage(&finish);
                    events.push(data(&last));
                }
                events.push(Event::default().data("[DONE]"));
                self.outcome.finish("ok");
                events
            }
            Some(Err(e)) => {
                self.ended = true;
                let (_, kind, label) = classify(&e);
                tracing::warn!(error = %e, "the AI answer broke off");
                self.outcome.finish(label);
                vec![data(
                    &json!({"error": {"message": error_message(&e), "type": kind, "param": null, "code": null}}),
                )]
            }
            None => {
                self.ended = true;
                self.outcome.finish("bad_gateway");
                vec![data(&json!({"error": {
                    "message": "the provider's answer ended before it finished; try again",
                    "type": "upstream_error", "param": null, "code": null}}))]
            }
        })
    }
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

fn streamed(answer: ChatStream, head: Head, include_usage: bool, outcome: Outcome) -> Response {
    let state = Streaming {
        answer,
        head,
        include_usage,
        outcome,
        sent_role: false,
        tool_calls: 0,
        ended: false,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        let events = st.next().await?;
        Some((events, st))
    })
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>)));
    // Comments keep idle connections (and proxies in between) open while the model thinks.
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn whole(answer: ChatStream, head: Head, mut outcome: Outcome) -> Response {
    let answer = match spike_ai::collect_answer(answer).await {
        Ok(a) => a,
        Err(e) => {
            let (_, _, label) = classify(&e);
            outcome.finish(label);
            return ai_error_response(&e);
        }
    };
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if answer.text.is_empty() && !answer.tool_calls.is_empty() {
            Value::Null
        } else {
            json!(answer.text)
        },
    );
    if !answer.tool_calls.is_empty() {
        let calls: Vec<Value> = answer
            .tool_calls
            .iter()
            .map(|c| Value::Object(wire_call(c)))
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let reason = finish_reason(
        answer.finish.stop_reason.as_deref(),
        !answer.tool_calls.is_empty(),
    );
    let body = json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": reason}],
        "usage": usage(&answer.finish),
    });
    outcome.finish("ok");
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ProxyRequest, BadRequest> {
        parse_request(body.to_string().as_bytes(), None)
    }

    fn field(body: Value) -> String {
        match parse(body) {
            Err(e) => e.field,
            Ok(r) => panic!("accepted {r:?}"),
        }
    }

    #[test]
    fn a_full_request_maps_every_field() -> Result<(), BadRequest> {
        let r = parse(json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use TSX."}]},
                {"role": "user", "content": "Fix App.tsx"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "read_file",
                    "arguments": "{\"path\":\"App.tsx\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "export {}"},
            ],
            "tools": [{"type": "function", "function": {"name": "read_file",
                "description": "Read a file", "parameters": {"type": "object"}}}],
            "max_completion_tokens": 300,
            "max_tokens": 7,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "ignored",
        }))?;
        assert!(r.stream && r.include_usage);
        assert_eq!(r.chat.model, "gpt-x");
        assert_eq!(r.chat.system.as_deref(), Some("Be brief.\n\nUse TSX."));
        assert_eq!(r.chat.max_tokens, 300);
        assert_eq!(r.chat.temperature, Some(0.0));
        assert!(r.chat.is_cacheable());
        assert_eq!(
            r.chat.messages,
            vec![
                Message::user("Fix App.tsx"),
                Message::assistant(
                    "",
                    vec![ToolCall {
                        id: "call_1".into(),
                        name: "read_file".into(),
                        arguments: json!({"path": "App.tsx"}),
                    }]
                ),
                Message::tool_result("call_1", "export {}"),
            ]
        );
        assert_eq!(r.chat.tools.len(), 1);
        assert_eq!(r.chat.tools[0].parameters, json!({"type": "object"}));
        Ok(())
    }

    #[test]
    fn defaults_and_the_pinned_model() -> Result<(), BadRequest> {
        let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
        let r = parse_request(body.as_bytes(), Some("pinned"))?;
        assert_eq!(r.chat.model, "pinned");
        assert_eq!(r.chat.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(r.chat.temperature, None);
        assert!(!r.stream && !r.include_usage);
        Ok(())
    }

    #[test]
    fn max_tokens_past_the_limit_are_refused() -> Result<(), BadRequest> {
        let hi = json!([{"role": "user", "content": "hi"}]);
        let asked = |n: u64| parse(json!({"model": "m", "messages": hi, "max_tokens": n}));
        assert_eq!(within_max_tokens(asked(1000)?, 2000)?.chat.max_tokens, 1000);
        assert_eq!(within_max_tokens(asked(2000)?, 2000)?.chat.max_tokens, 2000);
        let refused = within_max_tokens(asked(4_000_000_000)?, 2000).err();
        assert_eq!(
            refused.map(|e| (e.field, e.message)),
            Some((
                "max_tokens".into(),
                "4000000000 is over this server's limit of 2000".into()
            ))
        );
        // A request that names none gets the default, or the limit when that is lower.
        let none = parse(json!({"model": "m", "messages": hi}))?;
        assert_eq!(
            within_max_tokens(none.clone(), 100_000)?.chat.max_tokens,
            DEFAULT_MAX_TOKENS
        );
        assert_eq!(within_max_tokens(none, 512)?.chat.max_tokens, 512);
        Ok(())
    }

    #[test]
    fn bad_fields_are_named() {
        let hi = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(field(json!({"messages": hi})), "model");
        assert_eq!(field(json!({"model": "", "messages": hi})), "model");
        assert_eq!(field(json!({"model": "m"})), "messages");
        assert_eq!(
            field(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]})),
            "messages"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": [{"role": "user", "content": 3}]})),
            "messages[0].content"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": [{"role": "user",
                "content": [{"type": "image_url", "image_url": {}}]}]})),
            "messages[0].content[0].type"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})),
            "messages[0].tool_call_id"
        );
        assert_eq!(
            field(
                json!({"model": "m", "messages": [{"role": "assistant", "content": "",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]})
            ),
            "messages[0].tool_calls[0].function.arguments"
        );
        assert_eq!(
            field(
                json!({"model": "m", "messages": hi, "tools": [{"type": "function",
                "function": {"name": "no spaces"}}]})
            ),
            "tools[0].function.name"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": hi, "max_tokens": 0})),
            "max_tokens"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": hi, "max_completion_tokens": -1})),
            "max_completion_tokens"
        );
        assert_eq!(
            field(json!({"model": "m", "messages": hi, "temperature": 3})),
            "temperature"
        );
        assert_eq!(field(json!({"model": "m", "messages": hi, "n": 2})), "n");
        assert_eq!(
            field(json!({"model": "m", "messages": hi, "stream": "yes"})),
            "stream"
        );
        assert_eq!(field(json!([1])), "body");
        assert!(matches!(
            parse_request(b"{\"model\":", None),
            Err(BadRequest { field, message }) if field == "body" && message.contains("line 1")
        ));
    }

    #[test]
    fn stop_reasons_are_openai_s() {
        assert_eq!(finish_reason(Some("end_turn"), false), "stop");
        assert_eq!(finish_reason(Some("max_tokens"), false), "length");
        assert_eq!(finish_reason(Some("tool_use"), true), "tool_calls");
        assert_eq!(finish_reason(None, true), "tool_calls");
        assert_eq!(finish_reason(None, false), "stop");
        assert_eq!(finish_reason(Some("pause_turn"), false), "pause_turn");
    }

    #[test]
    fn a_refused_server_key_is_a_bad_gateway_never_a_401() {
        let e = AiError::Unauthorized {
            provider: "openai".into(),
            message: "Incorrect API key provided".into(),
            hint: "OPENAI_API_KEY".into(),
        };
        assert_eq!(classify(&e).0, StatusCode::BAD_GATEWAY);
        assert!(error_message(&e).contains("refused this server's API key"));
        let limited = ai_error_response(&AiError::RateLimited {
            provider: "openai".into(),
            retry_after: Some(Duration::from_millis(2500)),
        });
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(3u64))
        );
    }
}
