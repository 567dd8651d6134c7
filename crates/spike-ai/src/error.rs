//! The one error type of `spike-ai`.

use std::time::Duration;

/// What went wrong talking to a provider, phrased so a person knows what to do next.
///
/// [`AiError::is_retryable`] says which ones the [`crate::Router`] retries; mid-stream errors
/// ([`AiError::Malformed`], [`AiError::StreamCut`]) are never retried because text was already
/// delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AiError {
    /// HTTP 429: too many requests or tokens for the account's limits.
    #[error("{provider}: rate limited{}; wait and try again, or raise the account's limits", retry_after_text(.retry_after))]
    RateLimited {
        /// The provider's name.
        provider: String,
        /// How long the provider asked us to wait (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// HTTP 401/403: the key is missing, wrong, revoked or lacks access.
    #[error("{provider}: the API key was refused ({message}); check {hint}")]
    Unauthorized {
        /// The provider's name.
        provider: String,
        /// The provider's own message.
        message: String,
        /// Where the key comes from (e.g. the environment variable).
        hint: String,
    },
    /// HTTP 529 (Anthropic) or an `overloaded_error` event: the provider is temporarily overloaded.
    #[error("{provider}: overloaded right now; try again in a moment or use another provider")]
    Overloaded {
        /// The provider's name.
        provider: String,
    },
    /// HTTP 5xx or an unreachable host: the provider (or the network to it) is down.
    #[error("{provider}: unavailable ({detail}); check the base URL and your connection, or try again later")]
    ProviderDown {
        /// The provider's name.
        provider: String,
        /// Status code or transport error.
        detail: String,
    },
    /// HTTP 400/404/422: the provider rejected the request itself; retrying will not help.
    #[error("{provider}: invalid request{}: {message}", field_text(.field))]
    InvalidRequest {
        /// The provider's name.
        provider: String,
        /// The offending parameter, when the provider names it (e.g. `model`).
        field: Option<String>,
        /// The provider's own message.
        message: String,
    },
    /// No answer in time.
    #[error("{provider}: timed out ({stage}); the provider is slow or unreachable, try again")]
    Timeout {
        /// The provider's name.
        provider: String,
        /// What timed out: `connect` (TCP/TLS), `first token` (nothing streamed yet), `total`
        /// (the whole answer) or `request` (HTTP 408).
        stage: &'static str,
    },
    /// The stream carried something that is not the provider's documented format.
    #[error(
        "{provider}: malformed response ({detail}); is the base URL really a {provider} endpoint?"
    )]
    Malformed {
        /// The provider's name.
        provider: String,
        /// What could not be parsed.
        detail: String,
    },
    /// The stream ended before the provider's final event: the answer is incomplete.
    #[error("{provider}: the answer was cut off before it finished; try again")]
    StreamCut {
        /// The provider's name.
        provider: String,
    },
    /// The provider's circuit breaker is open after repeated failures: it is not called until
    /// the breaker's delay has passed (see [`crate::BreakerPolicy`]).
    #[error("{provider}: failing repeatedly, paused for a while; try again later or use another provider")]
    CircuitOpen {
        /// The provider's name.
        provider: String,
    },
    /// The response cache's SQLite file could not be opened or rebuilt.
    #[error(
        "AI response cache {path}: {detail}; check the folder is writable, or delete the file"
    )]
    Cache {
        /// The cache file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// Something about the local setup, before any request (e.g. a missing key).
    #[error("{0}")]
    Config(String),
}

fn retry_after_text(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {} s)", d.as_secs_f64().ceil() as u64),
        None => String::new(),
    }
}

fn field_text(f: &Option<String>) -> String {
    match f {
        Some(f) => format!(" (field `{f}`)"),
        None => String::new(),
    }
}

impl AiError {
    /// Whether the same request may succeed if sent again later: rate limits, overload, 5xx,
    /// network errors and timeouts. Never 4xx or parse errors.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AiError::RateLimited { .. }
                | AiError::Overloaded { .. }
                | AiError::ProviderDown { .. }
                | AiError::Timeout { .. }
        )
    }

    /// Whether the [`crate::Router`] should try the next provider after this error: the
    /// retryable ones, and an open circuit breaker.
    pub fn falls_back(&self) -> bool {
        self.is_retryable() || matches!(self, AiError::CircuitOpen { .. })
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AiError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
