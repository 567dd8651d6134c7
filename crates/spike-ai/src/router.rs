//! The [`Router`]: the seed's order of rate limit → cache → provider with retry → circuit
//! breaker with fallback → cache store.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{backoff, StateMachine};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{AiError, BoxFuture, ChatRequest, ChatStream, Chunk, Provider, ResponseCache};

/// When and how long to retry one provider before falling back.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts per provider).
    pub max_retries: usize,
    /// First backoff delay; it doubles each retry, with jitter.
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` we are willing to wait; a longer one falls back at once.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Local request quotas, enforced before any provider is called (GCRA, from `governor`).
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    /// Requests each provider may be sent (one per router request, retries included), across
    /// all callers. Over it, that provider is skipped as if it had answered 429.
    pub per_provider: Option<Quota>,
    /// Requests each caller (see [`Router::stream_for`]) may make, across all providers. Over
    /// it, the request is refused at once with [`AiError::RateLimited`].
    pub per_caller: Option<Quota>,
}

impl RateLimits {
    /// `n` requests per minute with bursts of up to `n`, for both providers and callers.
    pub fn per_minute(provider: NonZeroU32, caller: NonZeroU32) -> Self {
        RateLimits {
            per_provider: Some(Quota::per_minute(provider)),
            per_caller: Some(Quota::per_minute(caller)),
        }
    }
}

/// When a provider's circuit breaker (from `failsafe`) opens and for how long.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker: attempts refused for a retryable reason
    /// (network, timeout, 429, 5xx, 529) and accepted answers that broke off before `Done`.
    pub failures: u32,
    /// How long it stays open; then one call is let through (half-open), and its success closes
    /// the breaker while its failure opens it again.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

type Breaker = StateMachine<ConsecutiveFailures<std::iter::Repeat<Duration>>, ()>;

fn breaker(policy: &BreakerPolicy) -> Breaker {
    StateMachine::new(
        consecutive_failures(policy.failures.max(1), backoff::constant(policy.open_for)),
        (),
    )
}

struct Route {
    provider: Arc<dyn Provider>,
    model: Option<String>,
    limiter: Option<DefaultDirectRateLimiter>,
    breaker: Breaker,
}

/// Providers in order of preference, behind local rate limits, a response cache and a circuit
/// breaker each. A request goes:
///
/// 1. **Caller quota** ([`RateLimits::per_caller`]): over it → [`AiError::RateLimited`] with the
///    wait until the quota allows one more.
/// 2. For each provider in order:
///    - **cache** ([`Router::cache`]): a cacheable request ([`ChatRequest::is_cacheable`]) whose
///      answer from this provider and model is stored is replayed from it;
///    - **provider quota** ([`RateLimits::per_provider`]): over it → next provider;
///    - **breaker** ([`BreakerPolicy`]): open → next provider, without calling it;
///    - **retry** ([`RetryPolicy`]) for errors where that can help ([`AiError::is_retryable`]:
///      network, timeouts, 429 honouring `Retry-After` and the rate-limit headers, 5xx, 529);
///      exhausted → next provider. Other errors (401, 4xx) are returned at once;
///    - on success the answer streams to the caller, and is stored in the cache if it completes.
///
/// When every provider was skipped or failed, the last error is returned. Retries and fallback
/// happen only before the answer starts: once text has been streamed, a mid-stream error goes to
/// the caller.
///
/// Each provider consulted counts once in `spike_ai_requests_total{provider, outcome}` (the
/// `metrics` facade), retries included: `ok` (it accepted; the answer streams), `cache_hit`,
/// `local_quota` (its [`RateLimits::per_provider`] was spent), or the error that ended the
/// attempt ([`AiError`] as `rate_limited`, `unauthorized`, `overloaded`, `down`,
/// `invalid_request`, `timeout`, `malformed`, `cut`, `circuit_open`, `error`).
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    policy: RetryPolicy,
    limits: RateLimits,
    caller_limiter: Option<DefaultKeyedRateLimiter<String>>,
    breaker_policy: BreakerPolicy,
    cache: Option<Arc<ResponseCache>>,
}

impl Router {
    /// An empty router: default retry and breaker policies, no quotas, no cache.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a provider; `model`, if given, replaces the request's model for this provider (model
    /// ids differ between vendors).
    pub fn route(mut self, provider: impl Provider + 'static, model: Option<String>) -> Self {
        self.routes.push(Route {
            provider: Arc::new(provider),
            model,
            limiter: self.limits.per_provider.map(RateLimiter::direct),
            breaker: breaker(&self.breaker_policy),
        });
        self
    }

    /// Replaces the retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the local quotas (fresh, full buckets for every provider and caller).
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        for route in &mut self.routes {
            route.limiter = limits.per_provider.map(RateLimiter::direct);
        }
        self.caller_limiter = limits.per_caller.map(RateLimiter::keyed);
        self.limits = limits;
        self
    }

    /// Replaces the circuit breaker policy (every provider's breaker starts closed).
    pub fn breaker_policy(mut self, policy: BreakerPolicy) -> Self {
        for route in &mut self.routes {
            route.breaker = breaker(&policy);
        }
        self.breaker_policy = policy;
        self
    }

    /// Serves cacheable requests from, and stores their complete answers in, `cache`.
    pub fn cache(mut self, cache: Arc<ResponseCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Routes `request` on behalf of `caller` (a user, a room, an API token: any stable id),
    /// whose quota is [`RateLimits::per_caller`]. Resolves once a provider (or the cache)
    /// accepted the request; see [`Router`] for the order of things.
    pub async fn stream_for(
        &self,
        caller: &str,
        request: &ChatRequest,
    ) -> Result<ChatStream, AiError> {
        if let Some(limiter) = &self.caller_limiter {
            if let Err(not_until) = limiter.check_key(&caller.to_owned()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("spike_ai_rate_limited_total", "scope" => "caller").increment(1);
                return Err(AiError::RateLimited {
                    provider: format!("local quota of caller `{caller}`"),
                    retry_after: Some(wait),
                });
            }
            // Buckets of callers who went quiet are full again; drop them so the map stays small.
            if limiter.len() > 10_000 {
                limiter.retain_recent();
            }
        }
        self.stream_routes(request).await
    }

    async fn stream_routes(&self, request: &ChatRequest) -> Result<ChatStream, AiError> {
        let mut last = AiError::Config("no AI provider is configured".to_owned());
        for route in &self.routes {
            let name = route.provider.name();
            let mut owned;
            let request = match &route.model {
                Some(model) => {
                    owned = request.clone();
                    owned.model.clone_from(model);
                    &owned
                }
                None => request,
            };
            let cache = self.cache.as_ref().filter(|_| request.is_cacheable());
            let key = cache.map(|_| ResponseCache::key(name, request));
            if let (Some(cache), Some(key)) = (cache, &key) {
                if let Some(chunks) = cache.get(key) {
                    tracing::debug!(provider = name, "AI answer served from the cache");
                    metrics::counter!("spike_ai_cache_hits_total").increment(1);
                    count(name, "cache_hit");
                    return Ok(ResponseCache::replay(chunks));
                }
                metrics::counter!("spike_ai_cache_misses_total").increment(1);
            }
            if let Some(limiter) = &route.limiter {
                if let Err(not_until) = limiter.check() {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    metrics::counter!("spike_ai_rate_limited_total", "scope" => "provider")
                        .increment(1);
                    count(name, "local_quota");
                    tracing::warn!(
                        provider = name,
                        ?wait,
                        "local quota exhausted; falling back"
                    );
                    last = AiError::RateLimited {
                        provider: format!("{name} (local quota)"),
                        retry_after: Some(wait),
                    };
                    continue;
                }
            }
            let attempt = self.attempt(route, request).await;
            count(name, attempt.as_ref().map_or_else(outcome, |_| "ok"));
            match attempt {
                Ok(stream) => {
                    return Ok(match (cache, key) {
                        (Some(cache), Some(key)) => {
                            cache.record(stream, key, name.to_owned(), request.model.clone())
                        }
                        _ => stream,
                    })
                }
                Err(e) if e.falls_back() => {
                    tracing::warn!(provider = name, error = %e, "falling back");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// One provider call through its breaker: an open breaker refuses without calling. A
    /// retryable refusal (network, timeout, 429, 5xx, 529) counts as a failure at once; an
    /// accepted answer counts when it ends: a success at `Done`, a failure when it breaks off
    /// (cut, timed out, provider error), nothing when the caller drops it. A 4xx is the request's
    /// fault, not the provider's, and counts as neither.
    async fn call(&self, route: &Route, request: &ChatRequest) -> Result<ChatStream, AiError> {
        if !route.breaker.is_call_permitted() {
            return Err(AiError::CircuitOpen {
                provider: route.provider.name().to_owned(),
            });
        }
        match route.provider.stream(request).await {
            Ok(stream) => Ok(breaker_accounted(stream, route.breaker.clone())),
            Err(e) => {
                if e.is_retryable() {
                    route.breaker.on_error();
                    metrics::counter!("spike_ai_provider_failures_total").increment(1);
                }
                Err(e)
            }
        }
    }

    async fn attempt(&self, route: &Route, request: &ChatRequest) -> Result<ChatStream, AiError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.max_retries)
            .with_jitter();
        let max_retry_after = self.policy.max_retry_after;
        (|| self.call(route, request))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(AiError::is_retryable)
            .adjust(move |e, delay| match (e.retry_after(), delay) {
                (Some(wait), Some(_)) if wait <= max_retry_after => Some(wait),
                (Some(_), _) => None,
                (None, delay) => delay,
            })
            .notify(|e, delay| {
                tracing::warn!(provider = route.provider.name(), error = %e, ?delay, "retrying");
            })
            .await
    }
}

/// One provider's part in one router request, for `spike_ai_requests_total`.
fn count(provider: &str, outcome: &'static str) {
    metrics::counter!("spike_ai_requests_total",
        "provider" => provider.to_owned(), "outcome" => outcome)
    .increment(1);
}

/// The `outcome` label of an error.
fn outcome(e: &AiError) -> &'static str {
    match e {
        AiError::RateLimited { .. } => "rate_limited",
        AiError::Unauthorized { .. } => "unauthorized",
        AiError::Overloaded { .. } => "overloaded",
        AiError::ProviderDown { .. } => "down",
        AiError::InvalidRequest { .. } => "invalid_request",
        AiError::Timeout { .. } => "timeout",
        AiError::Malformed { .. } => "malformed",
        AiError::StreamCut { .. } => "cut",
        AiError::CircuitOpen { .. } => "circuit_open",
        _ => "error",
    }
}

/// Reports how an accepted answer ended to the provider's breaker (see [`Router::call`]).
fn breaker_accounted(stream: ChatStream, breaker: Breaker) -> ChatStream {
    use futures_util::StreamExt as _;
    Box::pin(stream.inspect(move |item| match item {
        Ok(Chunk::Done(_)) => breaker.on_success(),
        Ok(_) => {}
        Err(AiError::InvalidRequest { .. } | AiError::Unauthorized { .. }) => {}
        Err(_) => {
            breaker.on_error();
            metrics::counter!("spike_ai_provider_failures_total").increment(1);
        }
    }))
}

impl Provider for Router {
    fn name(&self) -> &str {
        "router"
    }

    /// Routes with no caller quota applied (as [`Router::stream_for`] without a caller).
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, AiError>> {
        Box::pin(self.stream_routes(request))
    }
}
