//! An HTTP origin: where an entry comes from when no tier has it (the preview's ESM CDN), for
//! [`crate::Store::get_or_fetch`].
//!
//! A `GET` with a connect timeout and a total timeout, redirects followed (up to 10), and
//! retries with exponential backoff and jitter (backon) on network errors, 5xx and 429,
//! honouring `Retry-After` up to [`OriginConfig::max_retry_after`]. A circuit breaker (failsafe)
//! opens after [`OriginConfig::breaker_failures`] fetches in a row could not reach the origin, so
//! an origin that hangs costs one timeout, not one per module; while it is open fetches fail at
//! once, and after a pause one trial fetch decides whether it closes. The response's
//! `Cache-Control` sets how long the copy stays fresh (RFC 9111 §5.2.2.1 `max-age`; `no-store` and
//! `no-cache` make it stale at once, so it is revalidated at the next read and still served when
//! the origin is unreachable).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use failsafe::futures::CircuitBreaker as _;
use failsafe::{backoff, failure_policy, Config, StateMachine};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use reqwest::StatusCode;

use crate::{Fetched, StoreError};

/// The tier name origin errors carry.
const NAME: &str = "origin";

/// How an [`HttpOrigin`] fetches.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Time allowed to connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for one whole attempt, body included. Default 30 s.
    pub timeout: Duration,
    /// Retries after the first attempt. Default 2.
    pub max_retries: usize,
    /// First backoff delay. Default 200 ms.
    pub min_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the fetch fails. Default 10 s.
    pub max_retry_after: Duration,
    /// Largest body accepted, bytes. Default 32 MiB.
    pub max_body_bytes: u64,
    /// Freshness when the origin sends no `max-age`. Default 10 minutes.
    pub default_ttl: Duration,
    /// Fetches in a row that could not reach the origin (after their retries) before the
    /// breaker opens. Default 3.
    pub breaker_failures: u32,
    /// How long the breaker first stays open; at least 1 s (failsafe's backoff counts whole
    /// seconds). It doubles while trial fetches fail, up to 60 s. Default 5 s.
    pub breaker_open_for: Duration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_retries: 2,
            min_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(10),
            max_body_bytes: 32 << 20,
            default_ttl: Duration::from_secs(600),
            breaker_failures: 3,
            breaker_open_for: Duration::from_secs(5),
        }
    }
}

type Breaker = StateMachine<failure_policy::ConsecutiveFailures<backoff::Exponential>, ()>;

/// Fetches whole bodies over HTTP(S) (reqwest on rustls/ring). Cheap to clone (clones share the
/// breaker).
#[derive(Clone)]
pub struct HttpOrigin {
    client: reqwest::Client,
    config: OriginConfig,
    breaker: Breaker,
}

impl std::fmt::Debug for HttpOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOrigin")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Only "could not reach the origin" opens the breaker; a 404 is an answer.
struct Unreachable;

impl failsafe::FailurePredicate<StoreError> for Unreachable {
    fn is_err(&self, err: &StoreError) -> bool {
        matches!(err, StoreError::Unavailable { .. })
    }
}

enum Attempt {
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    Final(StoreError),
}

impl HttpOrigin {
    /// An origin client. Errors: [`StoreError::Backend`] when the HTTP client cannot be built.
    pub fn new(config: OriginConfig) -> Result<Self, StoreError> {
        // reqwest is built without a default crypto provider (so aws-lc-sys is never compiled);
        // installing ours fails harmlessly when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| StoreError::backend(NAME, e))?;
        let open_for = config.breaker_open_for.max(Duration::from_secs(1));
        let breaker = Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                config.breaker_failures.max(1),
                backoff::exponential(open_for, Duration::from_secs(60).max(open_for)),
            ))
            .build();
        Ok(Self {
            client,
            config,
            breaker,
        })
    }

    /// The body at `url`, its content type and freshness.
    ///
    /// Errors: [`StoreError::Unavailable`] when the origin cannot be reached or keeps failing
    /// (network errors, timeouts, 5xx, 429) after the retries, naming the URL and the cause;
    /// [`StoreError::Backend`] for another status (`404 Not Found from <url>: <the origin's
    /// text>`); [`StoreError::TooLarge`] past [`OriginConfig::max_body_bytes`]; while the
    /// breaker is open, [`StoreError::Unavailable`] at once, saying so.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, StoreError> {
        match self
            .breaker
            .call_with(Unreachable, self.fetch_with_retries(url))
            .await
        {
            Ok(fetched) => Ok(fetched),
            Err(failsafe::Error::Inner(e)) => Err(e),
            Err(failsafe::Error::Rejected) => Err(StoreError::Unavailable {
                tier: NAME,
                reason: format!(
                    "{url}: not tried: the origin failed {} times in a row (circuit breaker open)",
                    self.config.breaker_failures.max(1)
                ),
            }),
        }
    }

    async fn fetch_with_retries(&self, url: &str) -> Result<Fetched, StoreError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.min_delay)
            .with_max_times(self.config.max_retries)
            .with_jitter();
        let max_retry_after = self.config.max_retry_after;
        (|| self.attempt(url))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, Attempt::Transient { .. }))
            .adjust(move |e, delay| match e {
                Attempt::Transient {
                    retry_after: Some(wait),
                    ..
                } if *wait > max_retry_after => None,
                Attempt::Transient {
                    retry_after: Some(wait),
                    ..
                } => delay.map(|_| *wait),
                _ => delay,
            })
            .await
            .map_err(|e| match e {
                Attempt::Transient { reason, .. } => StoreError::Unavailable { tier: NAME, reason },
                Attempt::Final(e) => e,
            })
    }

    async fn attempt(&self, url: &str) -> Result<Fetched, Attempt> {
        let transient = |reason: String, retry_after| Attempt::Transient {
            reason,
            retry_after,
        };
        let response = self.client.get(url).send().await.map_err(|e| {
            let cause = if e.is_connect() {
                "could not connect (offline?)"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            transient(format!("{url}: {cause}: {}", error_chain(&e)), None)
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(transient(
                format!("{status} from {url}"),
                crate::remote::retry_after(&headers),
            ));
        }
        let too_large = |size: u64| {
            Attempt::Final(StoreError::TooLarge {
                size,
                limit: self.config.max_body_bytes,
            })
        };
        if let Some(size) = response.content_length() {
            if size > self.config.max_body_bytes {
                return Err(too_large(size));
            }
        }
        let body = response.bytes().await.map_err(|e| {
            transient(
                format!("{url}: reading the body: {}", error_chain(&e)),
                None,
            )
        })?;
        if body.len() as u64 > self.config.max_body_bytes {
            return Err(too_large(body.len() as u64));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.trim().chars().take(200).collect();
            return Err(Attempt::Final(StoreError::backend(
                NAME,
                format!("{status} from {url}: {excerpt}"),
            )));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let cache_control = headers
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(Fetched {
            body,
            content_type,
            ttl: Some(freshness(cache_control).unwrap_or(self.config.default_ttl)),
        })
    }
}

/// The freshness lifetime a `Cache-Control` value gives (RFC 9111 §5.2.2): `max-age`, or zero
/// for `no-store` / `no-cache`; `None` when it says neither.
pub(crate) fn freshness(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return Some(Duration::ZERO),
            "max-age" => {
                max_age = value
                    .trim_matches('"')
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
            }
            _ => {}
        }
    }
    max_age
}

/// An error and its sources, `: `-separated (reqwest's own text omits the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_gives_the_freshness() {
        assert_eq!(
            freshness("public, max-age=31536000, immutable"),
            Some(Duration::from_secs(31_536_000))
        );
        assert_eq!(freshness("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(freshness("no-cache"), Some(Duration::ZERO));
        assert_eq!(
            freshness("public, max-age=60, No-Store"),
            Some(Duration::ZERO)
        );
        assert_eq!(freshness("public"), None);
        assert_eq!(freshness(""), None);
    }
}
