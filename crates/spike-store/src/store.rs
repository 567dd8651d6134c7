//! The composition: tiers read through and written through, fastest first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{
    check_blob, Condition, ETag, Entry, Freshness, Key, Listed, Meta, Metered, Prefix, PutOptions,
    StoreError, Tier,
};

/// What an origin (an ESM CDN, for the preview) produced for a key that no tier had; see
/// [`Store::get_or_fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes.
    pub body: Bytes,
    /// Their media type, as the origin gave it.
    pub content_type: Option<String>,
    /// How long they stay fresh (from the origin's `Cache-Control: max-age`, say); `None`
    /// forever. Ignored for blobs.
    pub ttl: Option<Duration>,
}

/// What a read saw in one tier, so that filling it later cannot overwrite a newer write.
enum Seen {
    Absent,
    Expired(ETag),
    Failed,
}

/// One tier of a [`Store`], measured.
type StoreTier = Metered<Arc<dyn Tier>>;

/// Tiers composed into one store: an ordered list, fastest first (memory, SQLite, the room
/// server). The slowest tier is the authority; the faster ones are caches of it.
///
/// - [`Store::get`] reads through: the first tier with a fresh entry answers, and the faster
///   tiers that missed are filled. An expired entry is revalidated against the slower tiers by
///   ETag: their `head` answers, and when the ETag matches, only the expiry of the faster copies
///   is refreshed (the body is not fetched again). When no slower tier can answer because one
///   failed ([`StoreError::Unavailable`], or a backend error), the expired copy is served marked
///   [`Freshness::Stale`] with that error as its reason (stale-if-error, RFC 5861 §4).
/// - [`Store::put`] and [`Store::delete`] write through **slowest first**: the authority checks
///   the [`Condition`] and is written before any cache, so a refused or failed write leaves no
///   cache holding a value the authority never accepted. The faster tiers are then written
///   unconditionally (the authority has decided); a cache that fails to take the new value
///   has the key deleted instead, so it cannot keep serving the old one.
/// - Fills use conditions (`IfAbsent` where a tier had nothing, `IfMatch` of the expired copy
///   it had), so a read filling a cache cannot overwrite a newer value written meanwhile.
///
/// - A store made [`Store::with_read_only_authority`] reads its slowest tier as above but never
///   writes it: writes go through the other tiers (the slowest of them checks conditions), and
///   what [`Store::get_or_fetch`] fetches is kept in them only. For a source that fills itself
///   and takes no writes from this client (the desktop's view of the room server's shared
///   `npm` namespace).
///
/// Every tier is wrapped in [`Metered`], so hits, misses, bytes and latency are recorded per
/// tier. A store is itself a [`Tier`] (named `store`), so stores nest.
pub struct Store {
    tiers: Vec<StoreTier>,
    /// Whether the slowest tier is only read ([`Store::with_read_only_authority`]).
    read_only_authority: bool,
    /// One gate per key being fetched from an origin by [`Store::get_or_fetch`], so concurrent
    /// misses on one key fetch once (the others wait, then read what it stored).
    fetching: std::sync::Mutex<HashMap<Key, Weak<tokio::sync::Mutex<()>>>>,
}

/// Whether an error from a tier means "this tier cannot answer now" (skip it, maybe serve
/// stale) rather than an answer the caller must see.
fn is_tier_failure(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Unavailable { .. } | StoreError::Backend { .. }
    )
}

/// Time left until `expires_at`, as a TTL for another tier.
fn remaining(expires_at: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    expires_at.map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl Store {
    /// A store over `tiers`, fastest first; the last is the authority.
    pub fn new(tiers: impl IntoIterator<Item = Arc<dyn Tier>>) -> Self {
        Self {
            tiers: tiers.into_iter().map(Metered::new).collect(),
            read_only_authority: false,
            fetching: std::sync::Mutex::default(),
        }
    }

    /// This store with its slowest tier read but never written (see [`Store`]): reads go
    /// through it and a miss there is still the answer, while [`Store::put`] and
    /// [`Store::delete`] take the slowest of the *other* tiers as the authority of writes, and
    /// [`Store::get_or_fetch`] keeps what it fetched in the other tiers only. With no other
    /// tier, writes fail with [`StoreError::Forbidden`].
    pub fn with_read_only_authority(mut self) -> Self {
        self.read_only_authority = true;
        self
    }

    /// The tiers writes go to, fastest first.
    fn writable(&self) -> &[StoreTier] {
        match (self.read_only_authority, self.tiers.split_last()) {
            (true, Some((_, others))) => others,
            _ => &self.tiers,
        }
    }

    /// The gate of `key` for [`Store::get_or_fetch`]: shared while anyone holds it, dropped
    /// from the map once nobody does.
    fn fetch_gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self
            .fetching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = gates.get(key).and_then(Weak::upgrade) {
            return gate;
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        gates.insert(key.clone(), Arc::downgrade(&gate));
        gate
    }

    /// The tiers' names, fastest first.
    pub fn tier_names(&self) -> Vec<&'static str> {
        self.tiers.iter().map(|t| t.name()).collect()
    }

    fn authority(&self) -> Result<(&StoreTier, &[StoreTier]), StoreError> {
        self.tiers
            .split_last()
            .ok_or_else(|| StoreError::Unavailable {
                tier: "store",
                reason: "the store has no tiers".to_owned(),
            })
    }

    /// The entry under `key`, read through the tiers (see [`Store`]); `Ok(None)` when the
    /// authority has nothing. An expired copy that no slower tier could revalidate is returned
    /// [`Freshness::Stale`], its reason the first slower tier's error, or "expired, and no
    /// slower tier has a fresh copy" when they all answered (the caller decides; see
    /// [`Store::get_or_fetch`]).
    ///
    /// Errors: the authority's failure when nothing was found and the authority could not
    /// answer ([`StoreError::Unavailable`], [`StoreError::Backend`]); any other error of any
    /// tier ([`StoreError::Forbidden`]) as it came.
    pub async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let now = SystemTime::now();
        let mut seen: Vec<Seen> = Vec::with_capacity(self.tiers.len());
        let mut held: Option<Entry> = None;
        // Why the held expired copy could not be revalidated: the first failure after it.
        let mut revalidation_failure: Option<String> = None;
        // A miss is only an answer when the authority gave it.
        let mut authority_failure: Option<StoreError> = None;
        let last = self.tiers.len().saturating_sub(1);
        for (i, tier) in self.tiers.iter().enumerate() {
            let outcome = match &held {
                None => tier.get(key).await,
                Some(stale) => match tier.head(key).await {
                    Ok(Some(meta)) if !meta.is_expired_at(now) && meta.etag == stale.meta.etag => {
                        // Revalidated: the slower tier has the same bytes, fresh.
                        let entry = Entry {
                            meta,
                            body: stale.body.clone(),
                            freshness: Freshness::Fresh,
                        };
                        self.fill(key, &entry, &seen).await;
                        return Ok(Some(entry));
                    }
                    // Changed there: now the body is worth fetching.
                    Ok(Some(meta)) if !meta.is_expired_at(now) => tier.get(key).await,
                    other => other.map(|m| {
                        m.map(|meta| Entry {
                            meta,
                            body: Bytes::new(),
                            freshness: Freshness::Fresh,
                        })
                    }),
                },
            };
            match outcome {
                Ok(Some(entry)) if !entry.meta.is_expired_at(now) => {
                    self.fill(key, &entry, &seen).await;
                    return Ok(Some(entry));
                }
                Ok(Some(expired)) => {
                    seen.push(Seen::Expired(expired.meta.etag.clone()));
                    held.get_or_insert(expired);
                }
                Ok(None) => seen.push(Seen::Absent),
                Err(e) if is_tier_failure(&e) => {
                    tracing::debug!(tier = tier.name(), %key, error = %e, "store: tier failed a read");
                    seen.push(Seen::Failed);
                    if held.is_some() && revalidation_failure.is_none() {
                        revalidation_failure = Some(e.to_string());
                    }
                    if i == last {
                        authority_failure = Some(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match (held, authority_failure) {
            (Some(mut stale), _) => {
                let reason = revalidation_failure
                    .unwrap_or_else(|| "expired, and no slower tier has a fresh copy".to_owned());
                tracing::info!(%key, %reason, "store: serving an expired entry");
                stale.freshness = Freshness::Stale { reason };
                Ok(Some(stale))
            }
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// Writes `entry` into the faster tiers that `seen` describes, each on the condition that it
    /// still holds what the read saw there. Failures only cost a later miss, so they are logged.
    async fn fill(&self, key: &Key, entry: &Entry, seen: &[Seen]) {
        // From now, not from the read's start: a copy must not outlive the one it came from.
        let ttl = remaining(entry.meta.expires_at, SystemTime::now());
        for (tier, seen) in self.tiers.iter().zip(seen) {
            let condition = match (key, seen) {
                (_, Seen::Failed) => continue,
                (Key::Blob(_), _) => Condition::None,
                (Key::Kv(_), Seen::Absent) => Condition::IfAbsent,
                (Key::Kv(_), Seen::Expired(etag)) => Condition::IfMatch(etag.clone()),
            };
            let options = PutOptions {
                content_type: entry.meta.content_type.clone(),
                ttl,
                condition,
            };
            match tier.put(key, entry.body.clone(), options).await {
                Ok(_) => {}
                Err(e @ (StoreError::PreconditionFailed { .. } | StoreError::TooLarge { .. })) => {
                    tracing::debug!(tier = tier.name(), %key, error = %e, "store: fill skipped");
                }
                Err(e) => {
                    tracing::warn!(tier = tier.name(), %key, error = %e, "store: fill failed");
                }
            }
        }
    }

    /// The metadata under `key`: the first tier with a fresh entry answers (no fill); else the
    /// first expired one (a [`Meta`] carries no freshness: compare [`Meta::expires_at`]).
    /// Errors as [`Store::get`].
    pub async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        let now = SystemTime::now();
        let mut expired = None;
        let mut failure = None;
        let last = self.tiers.len().saturating_sub(1);
        for (i, tier) in self.tiers.iter().enumerate() {
            match tier.head(key).await {
                Ok(Some(meta)) if !meta.is_expired_at(now) => return Ok(Some(meta)),
                Ok(Some(meta)) => {
                    expired.get_or_insert(meta);
                }
                Ok(None) => {}
                Err(e) if is_tier_failure(&e) && i < last => {}
                Err(e) if is_tier_failure(&e) => failure = Some(e),
                Err(e) => return Err(e),
            }
        }
        match (expired, failure) {
            (Some(meta), _) => Ok(Some(meta)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// The authority of writes and the faster tiers: the slowest writable tier.
    fn write_authority(&self) -> Result<(&StoreTier, &[StoreTier]), StoreError> {
        if self.read_only_authority {
            if let [only] = self.tiers.as_slice() {
                return Err(StoreError::Forbidden {
                    tier: "store",
                    reason: format!("the store's only tier ({}) is read-only", only.name()),
                });
            }
        }
        let writable = self.writable();
        writable
            .split_last()
            .ok_or_else(|| StoreError::Unavailable {
                tier: "store",
                reason: "the store has no tiers".to_owned(),
            })
    }

    /// Writes `body` under `key` through every writable tier, slowest (the authority, which
    /// checks `options.condition`) first; returns the authority's metadata.
    ///
    /// Errors: the authority's (precondition, hash mismatch, size, unavailable). A faster tier
    /// that fails is logged and has the key deleted, never an error: the write happened.
    pub async fn put(
        &self,
        key: &Key,
        body: Bytes,
        options: PutOptions,
    ) -> Result<Meta, StoreError> {
        let (authority, caches) = self.write_authority()?;
        let meta = authority.put(key, body.clone(), options.clone()).await?;
        let cache_options = PutOptions {
            content_type: options.content_type,
            ttl: remaining(meta.expires_at, SystemTime::now()),
            condition: Condition::None,
        };
        for tier in caches.iter().rev() {
            if let Err(e) = tier.put(key, body.clone(), cache_options.clone()).await {
                tracing::warn!(tier = tier.name(), %key, error = %e, "store: write-through failed; dropping the cached copy");
                if let Err(e) = tier.delete(key, Condition::None).await {
                    tracing::warn!(tier = tier.name(), %key, error = %e, "store: could not drop the cached copy");
                }
            }
        }
        Ok(meta)
    }

    /// Deletes `key` from every writable tier if `condition` holds at the authority of writes
    /// (checked there, slowest first); whether that authority had it.
    ///
    /// Errors: the authority's. A faster tier that fails is logged.
    pub async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        let (authority, caches) = self.write_authority()?;
        let deleted = authority.delete(key, condition).await?;
        for tier in caches.iter().rev() {
            if let Err(e) = tier.delete(key, Condition::None).await {
                tracing::warn!(tier = tier.name(), %key, error = %e, "store: delete-through failed");
            }
        }
        Ok(deleted)
    }

    /// The authority's entries under `prefix`, in key order (the caches hold a subset).
    /// Errors: the authority's.
    pub async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let (authority, _) = self.authority()?;
        authority.list(prefix).await
    }

    /// [`Store::get`], and on a miss everywhere (or an expired entry, or a miss while the
    /// authority is unavailable) calls `fetch` for the bytes from an origin (the preview's ESM
    /// CDN), stores them in every writable tier that will take them, and returns them fresh.
    ///
    /// Concurrent calls for one key fetch once (single flight): the first to miss fetches while
    /// the others wait, then read what it stored. If that fetch failed, the next waiter tries
    /// its own.
    ///
    /// Storing is best effort per tier, slowest first, unconditional: a fetched module must
    /// land in the local tiers even when the room server is unreachable. When `fetch` fails and
    /// an expired copy exists, that copy is returned marked [`Freshness::Stale`] with the
    /// origin's error as reason; otherwise the origin's error is returned.
    ///
    /// Errors: [`StoreError::HashMismatch`] when a blob's fetched bytes are not the blob; the
    /// origin's error; a non-failure error of a tier (e.g. [`StoreError::Forbidden`]).
    pub async fn get_or_fetch<F, Fut>(&self, key: &Key, fetch: F) -> Result<Entry, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Fetched, StoreError>> + Send,
    {
        let mut found = match self.get(key).await {
            Ok(Some(entry)) if entry.freshness == Freshness::Fresh => return Ok(entry),
            other => other,
        };
        let gate = self.fetch_gate(key);
        let _turn = match gate.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                // Another caller is fetching this key: wait for it, then look again.
                let turn = gate.lock().await;
                found = self.get(key).await;
                turn
            }
        };
        let held = match found {
            Ok(Some(entry)) if entry.freshness == Freshness::Fresh => return Ok(entry),
            Ok(stale) => stale,
            Err(e) if is_tier_failure(&e) => None,
            Err(e) => return Err(e),
        };
        let fetched = match fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                return match held {
                    Some(mut stale) => {
                        stale.freshness = Freshness::Stale {
                            reason: format!("origin: {e}"),
                        };
                        Ok(stale)
                    }
                    None => Err(e),
                }
            }
        };
        check_blob(key, &fetched.body)?;
        let options = PutOptions {
            content_type: fetched.content_type,
            ttl: if matches!(key, Key::Blob(_)) {
                None
            } else {
                fetched.ttl
            },
            condition: Condition::None,
        };
        let meta = Meta::for_body(&fetched.body, &options);
        for tier in self.writable().iter().rev() {
            if let Err(e) = tier.put(key, fetched.body.clone(), options.clone()).await {
                tracing::warn!(tier = tier.name(), %key, error = %e, "store: could not keep a fetched entry");
            }
        }
        Ok(Entry {
            meta,
            body: fetched.body,
            freshness: Freshness::Fresh,
        })
    }
}

#[async_trait::async_trait]
impl Tier for Store {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        Store::get(self, key).await
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        Store::head(self, key).await
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        Store::put(self, key, body, options).await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        Store::delete(self, key, condition).await
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        Store::list(self, prefix).await
    }
}
