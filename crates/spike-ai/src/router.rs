//! The [`Router`]: retries a provider with backoff, then falls back to the next one.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};

use crate::{AiError, BoxFuture, ChatRequest, ChatStream, Provider};

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

struct Route {
    provider: Arc<dyn Provider>,
    model: Option<String>,
}

/// Providers in order of preference. Each is retried under the [`RetryPolicy`] for errors where
/// that can help ([`AiError::is_retryable`]: network, timeouts, 429 honouring `Retry-After`, 5xx,
/// 529); when its retries are exhausted the next provider is tried. Other errors (401, 4xx) are
/// returned at once. Retries happen only before the answer starts: once text has been streamed,
/// a mid-stream error goes to the caller.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    policy: RetryPolicy,
}

impl Router {
    /// An empty router with the default policy.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a provider; `model`, if given, replaces the request's model for this provider (model
    /// ids differ between vendors).
    pub fn route(mut self, provider: impl Provider + 'static, model: Option<String>) -> Self {
        self.routes.push(Route {
            provider: Arc::new(provider),
            model,
        });
        self
    }

    /// Replaces the retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    async fn attempt(&self, route: &Route, request: &ChatRequest) -> Result<ChatStream, AiError> {
        let mut owned;
        let request = match &route.model {
            Some(model) => {
                owned = request.clone();
                owned.model.clone_from(model);
                &owned
            }
            None => request,
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.max_retries)
            .with_jitter();
        let max_retry_after = self.policy.max_retry_after;
        (|| route.provider.stream(request))
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

impl Provider for Router {
    fn name(&self) -> &str {
        "router"
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, AiError>> {
        Box::pin(async move {
            let mut last = AiError::Config("no AI provider is configured".to_owned());
            for route in &self.routes {
                match self.attempt(route, request).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(provider = route.provider.name(), error = %e, "falling back");
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        })
    }
}
