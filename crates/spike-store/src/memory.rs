//! The memory tier: a moka cache bounded by bytes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use crate::metered::evicted;
use crate::{
    check_blob, Condition, Entry, Freshness, Key, Listed, Meta, Prefix, PutOptions, StoreError,
    Tier,
};

/// What one cached entry costs besides its body and key, bytes: the [`Meta`] and moka's own
/// bookkeeping, roughly. It keeps a cache of many tiny entries honest about its size.
const ENTRY_OVERHEAD_BYTES: u64 = 160;

/// How long the memory tier keeps an entry past its expiry by default: see [`MemoryTier`].
pub const DEFAULT_STALE_WINDOW: Duration = Duration::from_secs(60 * 60);

struct Stored {
    meta: Meta,
    body: Bytes,
}

/// The fastest tier: entries in a [moka](https://docs.rs/moka) cache in this process.
///
/// - **Bound**: the sum of body sizes plus keys plus a fixed per-entry overhead
///   (160 bytes) stays under `max_bytes`; past it, the least recently used entries are evicted
///   (moka's LRU policy rather than its default TinyLFU, so a freshly fetched module is always
///   admitted and the next read of it hits). A body larger than the bound is refused with
///   [`StoreError::TooLarge`]. The bound is enforced by moka's housekeeping, so it may be
///   exceeded briefly between writes.
/// - **TTL**: an entry is kept past [`Meta::expires_at`] for a *stale window* (default one hour,
///   [`DEFAULT_STALE_WINDOW`]) and then dropped. Inside the window the [`Tier`] contract holds
///   (an expired entry is returned as stored, so [`crate::Store`] can revalidate it by ETag or
///   serve it stale-if-error); past it memory forgets the entry, which for a cache is an
///   eviction: the SQLite tier below still keeps it for stale-if-error. Blobs never expire.
/// - **Conditions**: every write runs in moka's per-key compute (`and_try_compute_with`),
///   which serialises writers of the same key, so a compare-and-set is atomic.
/// - **Metrics**: evictions (by size or past the stale window) count in
///   `spike_store_evictions_total{tier="memory"}`; wrap in [`crate::Metered`] for the rest.
pub struct MemoryTier {
    cache: Cache<Key, Arc<Stored>>,
    max_bytes: u64,
}

struct StaleWindow(Duration);

impl moka::Expiry<Key, Arc<Stored>> for StaleWindow {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Stored>,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.keep_for(value)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Arc<Stored>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.keep_for(value)
    }
}

impl StaleWindow {
    fn keep_for(&self, value: &Stored) -> Option<Duration> {
        let at = value.meta.expires_at?;
        let fresh_for = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(fresh_for.saturating_add(self.0))
    }
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (see [`MemoryTier`] for how they are counted), with
    /// the default stale window.
    pub fn new(max_bytes: u64) -> Self {
        Self::with_stale_window(max_bytes, DEFAULT_STALE_WINDOW)
    }

    /// A tier holding at most `max_bytes` that keeps an expired entry for `stale_window` past
    /// its expiry.
    pub fn with_stale_window(max_bytes: u64, stale_window: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &Key, value: &Arc<Stored>| {
                u32::try_from(weight(key, value.body.len())).unwrap_or(u32::MAX)
            })
            .expire_after(StaleWindow(stale_window))
            .eviction_listener(|_key, _value, cause| {
                if cause.was_evicted() {
                    evicted("memory", 1);
                }
            })
            .build();
        Self { cache, max_bytes }
    }

    /// The bytes the cache counts now (after pending housekeeping), for tests and diagnostics.
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// The number of entries now (after pending housekeeping).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn weight(key: &Key, body_len: usize) -> u64 {
    let key_len = match key {
        Key::Blob(_) => 32,
        Key::Kv(k) => k.namespace().len() + k.key().len(),
    };
    (body_len + key_len) as u64 + ENTRY_OVERHEAD_BYTES
}

#[async_trait::async_trait]
impl Tier for MemoryTier {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        Ok(self.cache.get(key).map(|stored| Entry {
            meta: stored.meta.clone(),
            body: stored.body.clone(),
            freshness: Freshness::Fresh,
        }))
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        Ok(self.cache.get(key).map(|stored| stored.meta.clone()))
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        check_blob(key, &body)?;
        let size = weight(key, body.len());
        if size > self.max_bytes || size > u64::from(u32::MAX) {
            return Err(StoreError::TooLarge {
                size: body.len() as u64,
                limit: self.max_bytes,
            });
        }
        let is_blob = matches!(key, Key::Blob(_));
        let mut options = options;
        if is_blob {
            options.ttl = None;
        }
        let result = self
            .cache
            .entry_by_ref(key)
            .and_try_compute_with(|current| {
                let current = current.map(|e| e.into_value());
                options
                    .condition
                    .check(key, current.as_ref().map(|s| &s.meta.etag))?;
                if is_blob && current.is_some() {
                    return Ok::<_, StoreError>(Op::Nop);
                }
                let meta = Meta::for_body(&body, &options);
                Ok(Op::Put(Arc::new(Stored {
                    meta,
                    body: body.clone(),
                })))
            })?;
        match result.into_entry() {
            Some(entry) => Ok(entry.into_value().meta.clone()),
            // Unreachable: every branch above puts or keeps an entry.
            None => Err(StoreError::backend(
                "memory",
                format!("moka kept no entry for {key} after a put"),
            )),
        }
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        let condition = condition.for_delete().clone();
        let result = self
            .cache
            .entry_by_ref(key)
            .and_try_compute_with(|current| {
                let current = current.map(|e| e.into_value());
                condition.check(key, current.as_ref().map(|s| &s.meta.etag))?;
                Ok::<_, StoreError>(if current.is_some() {
                    Op::Remove
                } else {
                    Op::Nop
                })
            })?;
        Ok(matches!(result, CompResult::Removed(_)))
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let mut listed: Vec<Listed> = self
            .cache
            .iter()
            .filter(|(key, _)| prefix.matches(key))
            .map(|(key, stored)| Listed {
                key: (*key).clone(),
                meta: stored.meta.clone(),
            })
            .collect();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}
