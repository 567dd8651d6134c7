//! The room server's blob/KV HTTP API as a [`Tier`] (the wire format is documented in
//! `spike_server::store_api`).
//!
//! Every call: a per-attempt timeout ([`RemoteConfig::timeout`]); retries with exponential
//! backoff and full jitter (backon) on network errors, timeouts, 5xx and 429, waiting what
//! `Retry-After` asks (seconds or an HTTP date) when it is at most
//! [`RemoteConfig::max_retry_after`]; and one circuit breaker per remote (failsafe: it opens
//! after [`RemoteConfig::breaker_failures`] consecutive failed attempts and lets one trial call
//! through after [`RemoteConfig::breaker_open_for`], doubling up to
//! [`RemoteConfig::breaker_max_open`] while trials fail). While it is open a call fails at once
//! with [`StoreError::Unavailable`], with no request and no retry. Answers that show the server
//! is up (2xx, 304, 4xx but 429) count as successes.
//!
//! Blobs are checked on read: a blob's body (from `get`, or a changed one from `revalidate`)
//! whose BLAKE3 hash is not the one asked for is [`StoreError::HashMismatch`] (the server, or
//! something between, answered other bytes), never an entry; it is logged and counted as
//! `spike_store_errors_total{tier="remote",kind="hash_mismatch"}`.
//!
//! Metrics (`metrics` facade): hits, misses, bytes and latency are recorded by
//! [`crate::Metered`], which a [`crate::Store`] wraps every tier in (wrap a `RemoteTier` used
//! alone yourself). This tier adds `spike_store_errors_total{tier="remote",kind}`,
//! `spike_store_breaker_transitions_total{remote,state}`, `spike_store_breaker_open{remote}` (a
//! gauge, 1 while open) and `spike_store_breaker_rejections_total{remote}`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use failsafe::futures::CircuitBreaker as _;
use failsafe::{backoff, failure_policy, Config, StateMachine};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, StatusCode, Url};

use crate::{
    check_blob, BlobHash, Condition, ETag, Entry, Freshness, Key, Listed, Meta, Prefix, PutOptions,
    Revalidated, StoreError, Tier,
};

const NAME: &str = "remote";

/// How a [`RemoteTier`] talks to its server.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The server's base URL, `http://host:port` (the API is under `/v1/`).
    pub base_url: String,
    /// The access token sent as `Authorization: Bearer`, if the server needs one.
    pub token: Option<String>,
    /// Longest one attempt may take, start to last body byte. Default 10 s.
    pub timeout: Duration,
    /// Longest a TCP connect may take. Default 3 s.
    pub connect_timeout: Duration,
    /// Retries after the first attempt. Default 3.
    pub max_retries: usize,
    /// First backoff delay. Default 100 ms.
    pub min_delay: Duration,
    /// Longest backoff delay. Default 5 s.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the call fails. Default 30 s.
    pub max_retry_after: Duration,
    /// Consecutive failed attempts that open the breaker. Default 5.
    pub breaker_failures: u32,
    /// How long the breaker first stays open before a trial call; at least 1 s (failsafe's
    /// backoff counts whole seconds). Default 2 s.
    pub breaker_open_for: Duration,
    /// The longest it stays open (the wait doubles while trials fail). Default 60 s.
    pub breaker_max_open: Duration,
}

impl RemoteConfig {
    /// Defaults for a server at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_retries: 3,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(2),
            breaker_max_open: Duration::from_secs(60),
        }
    }
}

/// The state of a [`RemoteTier`]'s circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once.
    Open,
    /// One trial call goes through; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// Reports breaker transitions to logs and metrics, and remembers the state.
#[derive(Clone, Debug)]
struct BreakerWatch {
    remote: Arc<str>,
    state: Arc<AtomicU8>,
}

impl BreakerWatch {
    fn set(&self, state: BreakerState, label: &'static str) {
        self.state.store(state as u8, Ordering::Relaxed);
        let remote = self.remote.to_string();
        metrics::counter!("spike_store_breaker_transitions_total", "remote" => remote.clone(), "state" => label)
            .increment(1);
        metrics::gauge!("spike_store_breaker_open", "remote" => remote).set(
            if state == BreakerState::Open {
                1.0
            } else {
                0.0
            },
        );
    }
}

impl failsafe::Instrument for BreakerWatch {
    fn on_call_rejected(&self) {
        metrics::counter!("spike_store_breaker_rejections_total", "remote" => self.remote.to_string())
            .increment(1);
    }
    fn on_open(&self) {
        tracing::warn!(remote = %self.remote, "circuit breaker open: calls fail fast until a trial succeeds");
        self.set(BreakerState::Open, "open");
    }
    fn on_half_open(&self) {
        tracing::info!(remote = %self.remote, "circuit breaker half-open: trying one call");
        self.set(BreakerState::HalfOpen, "half_open");
    }
    fn on_closed(&self) {
        tracing::info!(remote = %self.remote, "circuit breaker closed");
        self.set(BreakerState::Closed, "closed");
    }
}

type Breaker =
    StateMachine<failure_policy::ConsecutiveFailures<backoff::Exponential>, BreakerWatch>;

/// A [`Tier`] over the room server's HTTP API (see the module docs). Cheap to clone: clones
/// share the connection pool and the breaker.
#[derive(Clone)]
pub struct RemoteTier {
    client: reqwest::Client,
    base: Url,
    config: Arc<RemoteConfig>,
    breaker: Breaker,
    watch: BreakerWatch,
}

impl std::fmt::Debug for RemoteTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteTier({})", self.base)
    }
}

/// One attempt's failure: worth retrying (and a breaker failure) or final.
#[derive(Debug)]
enum Attempt {
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    Final(StoreError),
}

impl Attempt {
    fn is_transient(&self) -> bool {
        matches!(self, Attempt::Transient { .. })
    }
}

struct IsTransient;

impl failsafe::FailurePredicate<Attempt> for IsTransient {
    fn is_err(&self, err: &Attempt) -> bool {
        err.is_transient()
    }
}

/// A response's `ETag`, unquoted.
fn etag_of(headers: &HeaderMap) -> Option<ETag> {
    let text = headers.get(ETAG)?.to_str().ok()?.trim();
    Some(ETag::from_raw(
        text.trim_start_matches("W/").trim_matches('"'),
    ))
}

/// A response's meta headers (see `spike_server::store_api`).
fn meta_of(headers: &HeaderMap, body_len: Option<u64>) -> Result<Meta, StoreError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
    let etag = etag_of(headers)
        .ok_or_else(|| StoreError::backend(NAME, "the server's answer has no ETag"))?;
    let size = number("spike-size")
        .or(body_len)
        .ok_or_else(|| StoreError::backend(NAME, "the server's answer has no Spike-Size"))?;
    let from_ms = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    Ok(Meta {
        size,
        etag,
        content_type: text(CONTENT_TYPE.as_str()).map(str::to_owned),
        expires_at: number("spike-expires-ms").map(from_ms),
        modified_at: number("spike-modified-ms").map_or_else(SystemTime::now, from_ms),
    })
}

/// How long an HTTP answer's `Retry-After` asks to wait: delay-seconds or an HTTP date
/// (RFC 9110 §10.2.3), a date in the past being zero. `None` without the header or with a
/// value that is neither. Used by the remote tier, the HTTP origin and spike-report's sender.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// What a server's 413 text says the limit is ("… over the limit of N bytes").
fn limit_of(text: &str) -> u64 {
    text.split("limit of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn quoted(etag: &ETag) -> Result<HeaderValue, StoreError> {
    HeaderValue::from_str(&etag.to_header())
        .map_err(|_| StoreError::backend(NAME, format!("ETag {etag} is not a header value")))
}

/// Checks that a blob read from the server is the blob asked for (see the module docs).
fn verified(key: &Key, body: &[u8]) -> Result<(), StoreError> {
    check_blob(key, body).inspect_err(|e| {
        tracing::warn!(%key, error = %e, "the server answered a blob with other bytes");
        metrics::counter!("spike_store_errors_total", "tier" => NAME, "kind" => "hash_mismatch")
            .increment(1);
    })
}

/// The answer of one attempt: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl RemoteTier {
    /// A tier talking to `config.base_url`. Errors: [`StoreError::Backend`] when the URL does
    /// not parse or the HTTP client cannot start.
    pub fn new(config: RemoteConfig) -> Result<Self, StoreError> {
        let base = Url::parse(&config.base_url).map_err(|e| {
            StoreError::backend(NAME, format!("remote URL {:?}: {e}", config.base_url))
        })?;
        if base.cannot_be_a_base() {
            return Err(StoreError::backend(
                NAME,
                format!("remote URL {:?} cannot hold a path", config.base_url),
            ));
        }
        // reqwest is built without a default crypto provider (so aws-lc-sys is never compiled);
        // installing ours fails harmlessly when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| StoreError::backend(NAME, e))?;
        let watch = BreakerWatch {
            remote: base.as_str().trim_end_matches('/').into(),
            state: Arc::new(AtomicU8::new(BreakerState::Closed as u8)),
        };
        // failsafe's exponential backoff counts whole seconds and panics below one.
        let open_for = config.breaker_open_for.max(Duration::from_secs(1));
        let policy = failure_policy::consecutive_failures(
            config.breaker_failures.max(1),
            backoff::exponential(open_for, config.breaker_max_open.max(open_for)),
        );
        let breaker = Config::new()
            .failure_policy(policy)
            .instrument(watch.clone())
            .build();
        Ok(Self {
            client,
            base,
            config: Arc::new(config),
            breaker,
            watch,
        })
    }

    /// The breaker's state now (as of its last transition).
    pub fn breaker_state(&self) -> BreakerState {
        match self.watch.state.load(Ordering::Relaxed) {
            x if x == BreakerState::Open as u8 => BreakerState::Open,
            x if x == BreakerState::HalfOpen as u8 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// The URL of `segments` under the base (each segment percent-encoded).
    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Result<Url, StoreError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| StoreError::backend(NAME, "remote URL cannot hold a path"))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    fn key_url(&self, key: &Key) -> Result<Url, StoreError> {
        match key {
            Key::Blob(h) => self.url(["v1", "blobs", &h.to_string()]),
            Key::Kv(k) => self.url(
                ["v1", "kv", k.namespace()]
                    .into_iter()
                    .chain(k.key().split('/')),
            ),
        }
    }

    /// Sends one request (one attempt); transport failures, 5xx and 429 are transient.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Option<Bytes>,
    ) -> Result<Answer, Attempt> {
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .timeout(self.config.timeout)
            .headers(headers.clone());
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body.clone());
        }
        let transient = |e: reqwest::Error| Attempt::Transient {
            reason: if e.is_timeout() {
                format!("no answer within {:?}", self.config.timeout)
            } else {
                format!("{e}")
            },
            retry_after: None,
        };
        let response = request.send().await.map_err(transient)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transient)?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt::Transient {
                reason: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
                retry_after: retry_after(&headers),
            });
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// One call: breaker, retries, latency. Transient failures that outlast the retries are
    /// [`StoreError::Unavailable`].
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Answer, StoreError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.min_delay)
            .with_max_delay(self.config.max_delay)
            .with_max_times(self.config.max_retries)
            .with_jitter();
        let max_retry_after = self.config.max_retry_after;
        let one = || async {
            match self
                .breaker
                .call_with(IsTransient, self.attempt(&method, &url, &headers, &body))
                .await
            {
                Ok(answer) => Ok(answer),
                Err(failsafe::Error::Inner(e)) => Err(e),
                Err(failsafe::Error::Rejected) => Err(Attempt::Final(StoreError::Unavailable {
                    tier: NAME,
                    reason: format!(
                        "circuit breaker open for {} after repeated failures",
                        self.watch.remote
                    ),
                })),
            }
        };
        let result = one
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(Attempt::is_transient)
            .adjust(move |e, delay| match (e, delay) {
                (
                    Attempt::Transient {
                        retry_after: Some(wait),
                        ..
                    },
                    Some(_),
                ) if *wait <= max_retry_after => Some(*wait),
                (
                    Attempt::Transient {
                        retry_after: Some(_),
                        ..
                    },
                    _,
                ) => None,
                (_, delay) => delay,
            })
            .notify(|e, delay| {
                tracing::debug!(remote = %self.watch.remote, op, ?delay, error = ?e, "retrying");
            })
            .await
            .map_err(|e| match e {
                Attempt::Transient { reason, .. } => StoreError::Unavailable { tier: NAME, reason },
                Attempt::Final(e) => e,
            });
        if let Err(e) = &result {
            let kind = match e {
                StoreError::Unavailable { .. } => "unavailable",
                StoreError::Forbidden { .. } => "forbidden",
                _ => "other",
            };
            metrics::counter!("spike_store_errors_total", "tier" => NAME, "kind" => kind)
                .increment(1);
        }
        result
    }

    /// The typed error of an unexpected answer.
    fn refusal(&self, key: &str, answer: &Answer) -> StoreError {
        let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(1024)]);
        match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Forbidden {
                tier: NAME,
                reason: text.into_owned(),
            },
            StatusCode::PRECONDITION_FAILED => StoreError::PreconditionFailed {
                key: key.to_owned(),
                current: etag_of(&answer.headers),
            },
            StatusCode::PAYLOAD_TOO_LARGE => StoreError::TooLarge {
                size: 0,
                limit: limit_of(&text),
            },
            status => StoreError::backend(
                NAME,
                format!("{} answered HTTP {status}: {text}", self.watch.remote),
            ),
        }
    }

    async fn list_json(&self, url: Url) -> Result<serde_json::Value, StoreError> {
        let answer = self
            .call("list", Method::GET, url, HeaderMap::new(), None)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(self.refusal("list", &answer));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| StoreError::backend(NAME, format!("list answer: {e}")))
    }
}

/// A listed entry's meta from its JSON row.
fn listed_meta(row: &serde_json::Value) -> Option<Meta> {
    let from_ms = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    Some(Meta {
        size: row.get("size")?.as_u64()?,
        etag: ETag::from_raw(row.get("etag")?.as_str()?),
        content_type: row
            .get("content_type")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        expires_at: row
            .get("expires_at_ms")
            .and_then(|v| v.as_u64())
            .map(from_ms),
        modified_at: from_ms(row.get("modified_at_ms")?.as_u64()?),
    })
}

#[async_trait::async_trait]
impl Tier for RemoteTier {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let answer = self
            .call(
                "get",
                Method::GET,
                self.key_url(key)?,
                HeaderMap::new(),
                None,
            )
            .await?;
        match answer.status {
            StatusCode::OK => {
                verified(key, &answer.body)?;
                let meta = meta_of(&answer.headers, Some(answer.body.len() as u64))?;
                Ok(Some(Entry {
                    meta,
                    body: answer.body,
                    freshness: Freshness::Fresh,
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refusal(&key.to_string(), &answer)),
        }
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        let answer = self
            .call(
                "head",
                Method::HEAD,
                self.key_url(key)?,
                HeaderMap::new(),
                None,
            )
            .await?;
        match answer.status {
            StatusCode::OK => Ok(Some(meta_of(&answer.headers, None)?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refusal(&key.to_string(), &answer)),
        }
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        check_blob(key, &body)?;
        let mut headers = HeaderMap::new();
        if let Some(ct) = &options.content_type {
            let value = HeaderValue::from_str(ct).map_err(|_| {
                StoreError::backend(NAME, format!("content type {ct:?} is not a header value"))
            })?;
            headers.insert(CONTENT_TYPE, value);
        }
        let url = match key {
            Key::Blob(_) => {
                // The blob API has no conditions: check them here against the server's copy.
                if options.condition != Condition::None {
                    let current = self.head(key).await?.map(|m| m.etag);
                    let holds = match (&options.condition, &current) {
                        (Condition::IfAbsent, None) => true,
                        (Condition::IfMatch(want), Some(have)) => want == have,
                        _ => false,
                    };
                    if !holds {
                        return Err(StoreError::PreconditionFailed {
                            key: key.to_string(),
                            current,
                        });
                    }
                }
                self.url(["v1", "blobs"])?
            }
            Key::Kv(_) => {
                if let Some(ttl) = options.ttl {
                    // The API takes whole seconds; round up so an entry is never shorter-lived.
                    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                    headers.insert("spike-ttl", HeaderValue::from(secs.max(1)));
                }
                match &options.condition {
                    Condition::None => {}
                    Condition::IfAbsent => {
                        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
                    }
                    Condition::IfMatch(etag) => {
                        headers.insert(IF_MATCH, quoted(etag)?);
                    }
                }
                self.key_url(key)?
            }
        };
        let answer = self
            .call("put", Method::PUT, url, headers, Some(body.clone()))
            .await?;
        if !answer.status.is_success() {
            return Err(self.refusal(&key.to_string(), &answer));
        }
        let mut content_type = options.content_type;
        if let Key::Blob(expected) = key {
            let json = serde_json::from_slice::<serde_json::Value>(&answer.body).ok();
            let said: Option<BlobHash> = json
                .as_ref()
                .and_then(|v| v.get("hash")?.as_str()?.parse().ok());
            if said != Some(*expected) {
                return Err(StoreError::backend(
                    NAME,
                    format!("the server stored the blob as {said:?}, not {expected}"),
                ));
            }
            // A blob written again keeps the content type it was first stored with; the server
            // says which (a server without the field: the caller's).
            if let Some(stored) = json.as_ref().and_then(|v| v.get("content_type")) {
                content_type = stored.as_str().map(str::to_owned);
            }
        }
        let mut meta = meta_of(&answer.headers, Some(body.len() as u64))?;
        meta.content_type = content_type;
        Ok(meta)
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        let mut headers = HeaderMap::new();
        if let Condition::IfMatch(etag) = &condition {
            headers.insert(IF_MATCH, quoted(etag)?);
        }
        if matches!(key, Key::Blob(_)) {
            return Err(StoreError::backend(
                NAME,
                "the server's API does not delete blobs (they are immutable and shared)",
            ));
        }
        let answer = self
            .call("delete", Method::DELETE, self.key_url(key)?, headers, None)
            .await?;
        match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => match condition {
                Condition::IfMatch(_) => Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                    current: None,
                }),
                _ => Ok(false),
            },
            _ => Err(self.refusal(&key.to_string(), &answer)),
        }
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let bad_row = || StoreError::backend(NAME, "a list row is not {key, size, etag, …}");
        let mut listed = Vec::new();
        match prefix {
            Prefix::Blobs => {
                let json = self.list_json(self.url(["v1", "blobs"])?).await?;
                for row in json
                    .get("blobs")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    let hash: BlobHash = row
                        .get("hash")
                        .and_then(|v| v.as_str())
                        .ok_or_else(bad_row)?
                        .parse()?;
                    let meta = listed_meta(row).ok_or_else(bad_row)?;
                    listed.push(Listed {
                        key: Key::Blob(hash),
                        meta,
                    });
                }
            }
            Prefix::Kv {
                namespace,
                key_prefix,
            } => {
                let mut url = self.url(["v1", "kv", namespace])?;
                url.query_pairs_mut().append_pair("prefix", key_prefix);
                let json = self.list_json(url).await?;
                for row in json
                    .get("entries")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    let key = row
                        .get("key")
                        .and_then(|v| v.as_str())
                        .ok_or_else(bad_row)?;
                    let meta = listed_meta(row).ok_or_else(bad_row)?;
                    listed.push(Listed {
                        key: Key::kv(namespace.clone(), key)?,
                        meta,
                    });
                }
            }
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }

    async fn revalidate(&self, key: &Key, etag: &ETag) -> Result<Revalidated, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, quoted(etag)?);
        let answer = self
            .call("revalidate", Method::GET, self.key_url(key)?, headers, None)
            .await?;
        match answer.status {
            StatusCode::NOT_MODIFIED => {
                Ok(Revalidated::NotModified(meta_of(&answer.headers, None)?))
            }
            StatusCode::OK => {
                verified(key, &answer.body)?;
                let meta = meta_of(&answer.headers, Some(answer.body.len() as u64))?;
                Ok(Revalidated::Modified(Entry {
                    meta,
                    body: answer.body,
                    freshness: Freshness::Fresh,
                }))
            }
            StatusCode::NOT_FOUND => Ok(Revalidated::Missing),
            _ => Err(self.refusal(&key.to_string(), &answer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(&later).unwrap_or(HeaderValue::from_static("x")),
        );
        let wait = retry_after(&h).unwrap_or_default();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("soon"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn limits_are_read_from_413_text() {
        assert_eq!(limit_of("20 bytes is over the limit of 16 bytes"), 16);
        assert_eq!(limit_of("too large"), 0);
    }

    #[test]
    fn key_urls_encode_each_segment() -> Result<(), StoreError> {
        let tier = RemoteTier::new(RemoteConfig::new("http://127.0.0.1:1/"))?;
        let url = tier.key_url(&Key::kv("npm", "a b/100%/x?y#z")?)?;
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/v1/kv/npm/a%20b/100%25/x%3Fy%23z"
        );
        Ok(())
    }
}
