//! The trait every tier implements.

use bytes::Bytes;

use crate::{Condition, ETag, Entry, Key, Listed, Meta, Prefix, PutOptions, StoreError};

/// The answer to [`Tier::revalidate`]: whether a copy the caller holds is still current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revalidated {
    /// The caller's copy (the ETag it sent) is current; here is the tier's meta for it (its
    /// expiry may have moved on).
    NotModified(Meta),
    /// The entry changed: the new one.
    Modified(Entry),
    /// The entry is gone.
    Missing,
}

/// One tier of the store: memory, SQLite, the room server's HTTP API, an object store.
///
/// Contract, shared by every implementation (and checked by the shared test suite):
/// - `put` of a [`Key::Blob`] whose hash is not the body's is [`StoreError::HashMismatch`];
///   blobs ignore `ttl`, and writing an existing blob again is a no-op returning its meta.
/// - `put` honours [`PutOptions::condition`] atomically with respect to other writers of the
///   same tier, failing with [`StoreError::PreconditionFailed`].
/// - `get`/`head` of an absent key is `Ok(None)`; an expired entry is returned as stored, with
///   its [`Meta::expires_at`] in the past (expiry is the caller's decision: a composed store
///   revalidates it, or serves it stale when the next tier is unavailable).
/// - `delete` says whether something was there.
/// - `list` returns entries under the prefix in key order.
#[async_trait::async_trait]
pub trait Tier: Send + Sync {
    /// A short stable name for logs and metrics labels: `memory`, `sqlite`, `remote`, `object`.
    fn name(&self) -> &'static str;

    /// The entry under `key`, or `None`.
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError>;

    /// The metadata of the entry under `key`, or `None`. The default reads the whole entry.
    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        Ok(self.get(key).await?.map(|e| e.meta))
    }

    /// Stores `body` under `key`; returns the stored metadata.
    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError>;

    /// Removes the entry under `key` if `condition` holds ([`Condition::IfAbsent`] is
    /// meaningless here and treated as [`Condition::None`]); whether one was there.
    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError>;

    /// The entries under `prefix`, in key order.
    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError>;

    /// Whether the caller's copy of `key`, whose ETag is `etag`, is current (HTTP
    /// `If-None-Match` revalidation, RFC 9110 §13.1.2). The default reads the entry; a remote
    /// tier overrides it so that an unchanged entry costs a 304 without its body.
    async fn revalidate(&self, key: &Key, etag: &ETag) -> Result<Revalidated, StoreError> {
        Ok(match self.get(key).await? {
            None => Revalidated::Missing,
            Some(entry) if entry.meta.etag == *etag => Revalidated::NotModified(entry.meta),
            Some(entry) => Revalidated::Modified(entry),
        })
    }
}

/// Checks the blob rule of [`Tier::put`]: `Ok` for KV keys and for blobs whose hash matches.
pub fn check_blob(key: &Key, body: &[u8]) -> Result<(), StoreError> {
    if let Key::Blob(expected) = key {
        let actual = crate::BlobHash::of(body);
        if actual != *expected {
            return Err(StoreError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
    }
    Ok(())
}
