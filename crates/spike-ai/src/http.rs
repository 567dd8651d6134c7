//! What the HTTP providers share: the client, status → [`AiError`] mapping, and the SSE loop.

use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use reqwest::{header::HeaderMap, RequestBuilder, Response, StatusCode};

use crate::{AiError, ChatStream, Chunk, Finish, HttpOptions};

/// Error bodies are read for their message only; a misbehaving server cannot make us buffer more.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// A reqwest client with rustls on the `ring` provider.
pub(crate) fn client(options: &HttpOptions) -> Result<reqwest::Client, AiError> {
    // reqwest is built without a default crypto provider (so aws-lc-sys is never compiled);
    // installing ours fails harmlessly when one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .build()
        .map_err(|e| AiError::Config(format!("cannot start the HTTP client: {e}")))
}

/// `{base}/v1/{path}`, accepting a base given with or without the trailing `/v1`.
pub(crate) fn endpoint(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/{path}")
}

/// Who is talking, for error messages.
pub(crate) struct Context {
    pub name: String,
    /// Where the key comes from, for [`AiError::Unauthorized`].
    pub key_hint: String,
    pub first_token_timeout: Duration,
}

/// Sends the request and checks the status; a non-2xx answer becomes its typed error.
pub(crate) async fn send(cx: &Context, request: RequestBuilder) -> Result<Response, AiError> {
    let response = tokio::time::timeout(cx.first_token_timeout, request.send())
        .await
        .map_err(|_| AiError::Timeout {
            provider: cx.name.clone(),
            stage: "first token",
        })?
        .map_err(|e| transport_error(&cx.name, &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let body = read_capped(response).await;
    Err(status_error(cx, status, &headers, &body))
}

async fn read_capped(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

pub(crate) fn transport_error(name: &str, e: &reqwest::Error) -> AiError {
    if e.is_timeout() {
        AiError::Timeout {
            provider: name.to_owned(),
            stage: if e.is_connect() { "connect" } else { "request" },
        }
    } else {
        AiError::ProviderDown {
            provider: name.to_owned(),
            detail: error_chain(e),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After` in seconds (the form OpenAI and Anthropic send); HTTP dates are not used by them.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The provider's `{"error": {"message", "param"|"type"}}` body (both vendors use this shape).
pub(crate) fn error_message(body: &str) -> (String, Option<String>) {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let t = body.trim();
            if t.is_empty() {
                "no details given".to_owned()
            } else {
                t.chars().take(300).collect()
            }
        });
    let field = error
        .and_then(|e| e.get("param"))
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    (message, field)
}

pub(crate) fn status_error(
    cx: &Context,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> AiError {
    let provider = cx.name.clone();
    let (message, field) = error_message(body);
    match status.as_u16() {
        401 | 403 => AiError::Unauthorized {
            provider,
            message,
            hint: cx.key_hint.clone(),
        },
        429 => AiError::RateLimited {
            provider,
            retry_after: retry_after(headers),
        },
        529 => AiError::Overloaded { provider },
        408 => AiError::Timeout {
            provider,
            stage: "request",
        },
        s if s >= 500 => AiError::ProviderDown {
            provider,
            detail: format!("HTTP {status}: {message}"),
        },
        _ => AiError::InvalidRequest {
            provider,
            field,
            message: format!("HTTP {status}: {message}"),
        },
    }
}

/// What one SSE event means to a provider's parser.
pub(crate) enum Step {
    /// More text.
    Text(String),
    /// Nothing to deliver (pings, block starts, usage-only events).
    Skip,
    /// The final event of a complete answer.
    Done(Finish),
}

/// A provider's reading of its SSE events.
pub(crate) trait EventParser: Send + 'static {
    fn event(&mut self, name: &str, event: &Event) -> Result<Step, AiError>;
}

type Events =
    std::pin::Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

struct State<P> {
    events: Events,
    parser: P,
    name: String,
    first_token_timeout: Duration,
    got_text: bool,
    finished: bool,
}

/// Turns an accepted SSE response into a [`ChatStream`] using `parser`.
pub(crate) fn sse_stream<P: EventParser>(
    cx: &Context,
    response: Response,
    parser: P,
) -> ChatStream {
    let state = State {
        events: Box::pin(response.bytes_stream().eventsource()),
        parser,
        name: cx.name.clone(),
        first_token_timeout: cx.first_token_timeout,
        got_text: false,
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            let next = if st.got_text {
                st.events.next().await
            } else {
                match tokio::time::timeout(st.first_token_timeout, st.events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        st.finished = true;
                        let e = AiError::Timeout {
                            provider: st.name.clone(),
                            stage: "first token",
                        };
                        return Some((Err(e), st));
                    }
                }
            };
            let item = match next {
                None => Err(AiError::StreamCut {
                    provider: st.name.clone(),
                }),
                Some(Err(EventStreamError::Transport(e))) if e.is_timeout() => {
                    Err(transport_error(&st.name, &e))
                }
                Some(Err(EventStreamError::Transport(_))) => Err(AiError::StreamCut {
                    provider: st.name.clone(),
                }),
                Some(Err(e)) => Err(AiError::Malformed {
                    provider: st.name.clone(),
                    detail: format!("not a valid event stream: {e}"),
                }),
                Some(Ok(event)) => match st.parser.event(&st.name, &event) {
                    Ok(Step::Skip) => continue,
                    Ok(Step::Text(t)) => {
                        st.got_text = true;
                        Ok(Chunk::Text(t))
                    }
                    Ok(Step::Done(f)) => {
                        st.finished = true;
                        Ok(Chunk::Done(f))
                    }
                    Err(e) => Err(e),
                },
            };
            if item.is_err() {
                st.finished = true;
            }
            return Some((item, st));
        }
    }))
}

/// Parses one event's JSON data, or says why it is not.
pub(crate) fn json<T: serde::de::DeserializeOwned>(name: &str, data: &str) -> Result<T, AiError> {
    serde_json::from_str(data).map_err(|e| AiError::Malformed {
        provider: name.to_owned(),
        detail: format!(
            "invalid JSON in the stream ({e}): {}",
            data.chars().take(120).collect::<String>()
        ),
    })
}
