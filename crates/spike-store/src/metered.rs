//! Per-tier metrics through the `metrics` facade, recorded by a wrapper so that every tier (ours
//! and any other implementation of [`Tier`]) is measured the same way.

use std::time::Instant;

use bytes::Bytes;

use crate::{
    Condition, ETag, Entry, Key, Listed, Meta, Prefix, PutOptions, Revalidated, StoreError, Tier,
};

/// Counter: `get` calls that found an entry (fresh or expired), label `tier`.
pub const HITS_TOTAL: &str = "spike_store_hits_total";
/// Counter: `get` calls that found nothing, label `tier`.
pub const MISSES_TOTAL: &str = "spike_store_misses_total";
/// Counter, bytes: body bytes read (`op="get"`) and written (`op="put"`), labels `tier`, `op`.
pub const BYTES_TOTAL: &str = "spike_store_bytes_total";
/// Counter: entries a tier dropped to stay within its byte bound (or, in memory, past their
/// stale window), label `tier`. Recorded by the tiers themselves.
pub const EVICTIONS_TOTAL: &str = "spike_store_evictions_total";
/// Histogram, seconds: duration of each call, successful or not, labels `tier` and `op`
/// (`get`, `head`, `put`, `delete`, `list`, `revalidate`).
pub const LATENCY_SECONDS: &str = "spike_store_latency_seconds";

/// Counts an eviction of `n` entries from tier `tier`.
pub(crate) fn evicted(tier: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(EVICTIONS_TOTAL, "tier" => tier).increment(n);
    }
}

/// A [`Tier`] that records hits, misses, bytes and latency of the tier it wraps under that
/// tier's [`Tier::name`]. [`crate::Store`] wraps every tier it is given in one; wrap a tier
/// yourself when you use it alone (the server's object store). With no recorder installed the
/// cost is two clock reads per call.
pub struct Metered<T: ?Sized> {
    inner: T,
}

impl<T: Tier> Metered<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self { inner }
    }
}

impl<T: ?Sized> Metered<T> {
    /// The wrapped tier.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

fn latency(tier: &'static str, op: &'static str, start: Instant) {
    metrics::histogram!(LATENCY_SECONDS, "tier" => tier, "op" => op)
        .record(start.elapsed().as_secs_f64());
}

fn bytes(tier: &'static str, op: &'static str, n: u64) {
    metrics::counter!(BYTES_TOTAL, "tier" => tier, "op" => op).increment(n);
}

/// A shared tier is a tier, so a [`crate::Store`] can hold `Arc<dyn Tier>`s that the caller also
/// keeps.
#[async_trait::async_trait]
impl<T: Tier + ?Sized> Tier for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        (**self).get(key).await
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        (**self).head(key).await
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        (**self).put(key, body, options).await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        (**self).delete(key, condition).await
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        (**self).list(prefix).await
    }

    async fn revalidate(&self, key: &Key, etag: &ETag) -> Result<Revalidated, StoreError> {
        (**self).revalidate(key, etag).await
    }
}

#[async_trait::async_trait]
impl<T: Tier + ?Sized> Tier for Metered<T> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let (tier, start) = (self.inner.name(), Instant::now());
        let got = self.inner.get(key).await;
        latency(tier, "get", start);
        match &got {
            Ok(Some(entry)) => {
                metrics::counter!(HITS_TOTAL, "tier" => tier).increment(1);
                bytes(tier, "get", entry.body.len() as u64);
            }
            Ok(None) => metrics::counter!(MISSES_TOTAL, "tier" => tier).increment(1),
            Err(_) => {}
        }
        got
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        let start = Instant::now();
        let got = self.inner.head(key).await;
        latency(self.inner.name(), "head", start);
        got
    }

    /// The inner tier's own revalidation (a remote's `If-None-Match`), counted as a read: a hit
    /// when the entry is there (its body's bytes when it changed), a miss when it is gone.
    async fn revalidate(&self, key: &Key, etag: &ETag) -> Result<Revalidated, StoreError> {
        let (tier, start) = (self.inner.name(), Instant::now());
        let got = self.inner.revalidate(key, etag).await;
        latency(tier, "revalidate", start);
        match &got {
            Ok(Revalidated::NotModified(_)) => {
                metrics::counter!(HITS_TOTAL, "tier" => tier).increment(1)
            }
            Ok(Revalidated::Modified(entry)) => {
                metrics::counter!(HITS_TOTAL, "tier" => tier).increment(1);
                bytes(tier, "get", entry.body.len() as u64);
            }
            Ok(Revalidated::Missing) => {
                metrics::counter!(MISSES_TOTAL, "tier" => tier).increment(1)
            }
            Err(_) => {}
        }
        got
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        let (tier, start, n) = (self.inner.name(), Instant::now(), body.len() as u64);
        let put = self.inner.put(key, body, options).await;
        latency(tier, "put", start);
        if put.is_ok() {
            bytes(tier, "put", n);
        }
        put
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        let start = Instant::now();
        let deleted = self.inner.delete(key, condition).await;
        latency(self.inner.name(), "delete", start);
        deleted
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let start = Instant::now();
        let listed = self.inner.list(prefix).await;
        latency(self.inner.name(), "list", start);
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A tier with nothing to read whose own revalidation says "not modified" (as a remote's
    /// 304 does): the default revalidation, which reads, would say "missing".
    struct AnswersNotModified;

    #[async_trait::async_trait]
    impl Tier for AnswersNotModified {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn get(&self, _: &Key) -> Result<Option<Entry>, StoreError> {
            Ok(None)
        }
        async fn head(&self, _: &Key) -> Result<Option<Meta>, StoreError> {
            Ok(None)
        }
        async fn put(&self, _: &Key, body: Bytes, o: PutOptions) -> Result<Meta, StoreError> {
            Ok(Meta::for_body(&body, &o))
        }
        async fn delete(&self, _: &Key, _: Condition) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn list(&self, _: &Prefix) -> Result<Vec<Listed>, StoreError> {
            Ok(Vec::new())
        }
        async fn revalidate(&self, _: &Key, _: &ETag) -> Result<Revalidated, StoreError> {
            Ok(Revalidated::NotModified(Meta::for_body(
                b"x",
                &PutOptions::default(),
            )))
        }
    }

    #[tokio::test]
    async fn wrappers_keep_the_inner_tiers_revalidation() -> Result<(), StoreError> {
        let key = Key::kv("app", "a.js")?;
        let etag = Meta::for_body(b"x", &PutOptions::default()).etag;
        let shared: Arc<dyn Tier> = Arc::new(AnswersNotModified);
        let wrapped = Metered::new(shared);
        assert!(matches!(
            wrapped.revalidate(&key, &etag).await?,
            Revalidated::NotModified(_)
        ));
        Ok(())
    }
}
