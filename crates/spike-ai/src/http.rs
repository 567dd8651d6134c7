//! What the HTTP providers share: the client, status → [`AiError`] mapping, and the SSE loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use reqwest::{header::HeaderMap, RequestBuilder, Response, StatusCode};

use crate::{AiError, ChatStream, Chunk, HttpOptions};

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

/// Who is talking, for error messages, and the deadlines of this one request.
pub(crate) struct Context {
    pub name: String,
    /// Where the key comes from, for [`AiError::Unauthorized`].
    pub key_hint: String,
    /// The first text or tool call must arrive by then.
    pub first_token_by: Instant,
    /// The whole answer must have arrived by then.
    pub done_by: Instant,
}

impl Context {
    /// Deadlines count from now, the moment the request is about to be sent.
    pub fn new(name: &str, key_hint: &str, options: &HttpOptions) -> Context {
        let now = Instant::now();
        let done_by = now + options.total_timeout;
        Context {
            name: name.to_owned(),
            key_hint: key_hint.to_owned(),
            first_token_by: (now + options.first_token_timeout).min(done_by),
            done_by,
        }
    }

    fn timeout(&self, stage: &'static str) -> AiError {
        AiError::Timeout {
            provider: self.name.clone(),
            stage,
        }
    }
}

/// Which deadline comes first and what its expiry is called.
fn next_deadline(
    first_token_by: Instant,
    done_by: Instant,
    got_token: bool,
) -> (Instant, &'static str) {
    if got_token || done_by <= first_token_by {
        (done_by, "total")
    } else {
        (first_token_by, "first token")
    }
}

/// Sends the request and checks the status; a non-2xx answer becomes its typed error.
pub(crate) async fn send(cx: &Context, request: RequestBuilder) -> Result<Response, AiError> {
    let (by, stage) = next_deadline(cx.first_token_by, cx.done_by, false);
    let response = tokio::time::timeout_at(by.into(), request.send())
        .await
        .map_err(|_| cx.timeout(stage))?
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

/// How long a 429 asks us to wait: `Retry-After` in seconds (the form OpenAI and Anthropic
/// send) when present; otherwise the providers' rate-limit headers:
///
/// - OpenAI (<https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers>):
///   `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens`, Go durations such as `6m0s`,
///   `1s`, `20ms`. The reset of an exhausted limit (`x-ratelimit-remaining-* = 0`) wins; with
///   none marked exhausted, the longer of the two.
/// - Anthropic (<https://docs.anthropic.com/en/api/rate-limits#response-headers>):
///   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`, RFC 3339 times;
///   the wait is until the latest of them that is exhausted (or of all, when none says so).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

pub(crate) fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = text(reqwest::header::RETRY_AFTER.as_str()) {
        let secs: f64 = value.parse().ok()?;
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let exhausted = |limit: &str, prefix: &str, suffix: &str| {
        text(&format!("{prefix}{limit}{suffix}")).is_some_and(|r| r == "0")
    };
    let pick = |waits: Vec<(bool, Duration)>| {
        let any_exhausted = waits.iter().any(|(e, _)| *e);
        waits
            .into_iter()
            .filter(|(e, _)| *e || !any_exhausted)
            .map(|(_, d)| d)
            .max()
    };
    let openai: Vec<(bool, Duration)> = ["requests", "tokens"]
        .into_iter()
        .filter_map(|limit| {
            let reset = go_duration(text(&format!("x-ratelimit-reset-{limit}"))?)?;
            Some((exhausted(limit, "x-ratelimit-remaining-", ""), reset))
        })
        .collect();
    if !openai.is_empty() {
        return pick(openai);
    }
    let anthropic: Vec<(bool, Duration)> = ["requests", "tokens", "input-tokens", "output-tokens"]
        .into_iter()
        .filter_map(|limit| {
            let at =
                humantime::parse_rfc3339_weak(text(&format!("anthropic-ratelimit-{limit}-reset"))?)
                    .ok()?;
            let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
            Some((exhausted(limit, "anthropic-ratelimit-", "-remaining"), wait))
        })
        .collect();
    pick(anthropic)
}

/// A Go `time.Duration` string as OpenAI sends it (`6m0s`, `1.5s`, `20ms`, `1h2m`): decimal
/// numbers each followed by a unit `h`, `m`, `s`, `ms`, `us`/`µs` or `ns`
/// (<https://pkg.go.dev/time#ParseDuration>, without the sign). `None` when it is not one.
pub(crate) fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per;
    }
    Duration::try_from_secs_f64(total).ok()
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
        408 => cx.timeout("request"),
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

/// A provider's reading of its SSE events: each event gives zero or more chunks (text, complete
/// tool calls, and last the one `Done` of a complete answer).
pub(crate) trait EventParser: Send + 'static {
    fn event(&mut self, name: &str, event: &Event) -> Result<Vec<Chunk>, AiError>;
}

type Events =
    std::pin::Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

struct State<P> {
    events: Events,
    parser: P,
    name: String,
    first_token_by: Instant,
    done_by: Instant,
    got_token: bool,
    pending: VecDeque<Chunk>,
    finished: bool,
}

/// Turns an accepted SSE response into a [`ChatStream`] using `parser`. The stream owns the
/// response: dropping it closes the connection.
pub(crate) fn sse_stream<P: EventParser>(
    cx: &Context,
    response: Response,
    parser: P,
) -> ChatStream {
    let state = State {
        events: Box::pin(response.bytes_stream().eventsource()),
        parser,
        name: cx.name.clone(),
        first_token_by: cx.first_token_by,
        done_by: cx.done_by,
        got_token: false,
        pending: VecDeque::new(),
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(chunk) = st.pending.pop_front() {
                st.got_token = true;
                if matches!(chunk, Chunk::Done(_)) {
                    st.finished = true;
                    st.pending.clear();
                }
                return Some((Ok(chunk), st));
            }
            if st.finished {
                return None;
            }
            let (by, stage) = next_deadline(st.first_token_by, st.done_by, st.got_token);
            let next = match tokio::time::timeout_at(by.into(), st.events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    st.finished = true;
                    let e = AiError::Timeout {
                        provider: st.name.clone(),
                        stage,
                    };
                    return Some((Err(e), st));
                }
            };
            let error = match next {
                None => AiError::StreamCut {
                    provider: st.name.clone(),
                },
                Some(Err(EventStreamError::Transport(e))) if e.is_timeout() => {
                    transport_error(&st.name, &e)
                }
                Some(Err(EventStreamError::Transport(_))) => AiError::StreamCut {
                    provider: st.name.clone(),
                },
                Some(Err(e)) => AiError::Malformed {
                    provider: st.name.clone(),
                    detail: format!("not a valid event stream: {e}"),
                },
                Some(Ok(event)) => match st.parser.event(&st.name, &event) {
                    Ok(chunks) => {
                        st.pending.extend(chunks);
                        continue;
                    }
                    Err(e) => e,
                },
            };
            st.finished = true;
            return Some((Err(error), st));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_openai_sends_them() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(go_duration("6m0s"), ms(360_000));
        assert_eq!(go_duration("1s"), ms(1_000));
        assert_eq!(go_duration("20ms"), ms(20));
        assert_eq!(go_duration("1.5s"), ms(1_500));
        assert_eq!(go_duration("1h2m3s"), ms(3_723_000));
        assert_eq!(go_duration("7m12.5s"), ms(432_500));
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("6"), None);
        assert_eq!(go_duration("6x"), None);
        assert_eq!(go_duration("-1s"), None);
    }
}
