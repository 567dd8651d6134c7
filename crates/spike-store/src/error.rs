//! The one error type of every tier.

use crate::{BlobHash, ETag};

/// Everything a [`crate::Tier`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A key (or key text from outside: a URL path, a header) is not valid. `key` is the text as
    /// given, `reason` says which rule it broke.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending text.
        key: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A blob was put under a hash that is not the hash of its bytes.
    #[error("blob body hashes to {actual}, not {expected}")]
    HashMismatch {
        /// The hash the caller named.
        expected: BlobHash,
        /// The hash of the bytes sent.
        actual: BlobHash,
    },
    /// A body over the tier's size limit, in bytes.
    #[error("{size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused body, bytes.
        size: u64,
        /// The limit, bytes.
        limit: u64,
    },
    /// A [`crate::Condition`] did not hold: the entry's current ETag (`None`: it does not exist).
    #[error("precondition failed for {key}: current ETag is {}", current.as_ref().map_or("none (absent)", |e| e.as_str()))]
    PreconditionFailed {
        /// The key, as text.
        key: String,
        /// The entry's ETag now, if it exists.
        current: Option<ETag>,
    },
    /// The tier cannot be reached now (network error, timeout, 5xx after retries, circuit
    /// breaker open). A composed store may serve a stale copy from a faster tier instead.
    #[error("{tier} unavailable: {reason}")]
    Unavailable {
        /// The tier's [`crate::Tier::name`].
        tier: &'static str,
        /// What happened, for a person.
        reason: String,
    },
    /// The tier refused the caller (401/403 from a remote, with its reason).
    #[error("{tier} refused access: {reason}")]
    Forbidden {
        /// The tier's [`crate::Tier::name`].
        tier: &'static str,
        /// The reason the tier gave.
        reason: String,
    },
    /// The tier's storage is full (the disk, a quota, SQLite's `max_page_count`); the write was
    /// rolled back and nothing already stored was lost. HTTP 507 Insufficient Storage.
    #[error("{tier} is full: {reason}")]
    Full {
        /// The tier's [`crate::Tier::name`].
        tier: &'static str,
        /// What filled up, for a person.
        reason: String,
    },
    /// The tier's backend failed (SQLite, file system, object store, an unexpected HTTP answer).
    #[error("{tier}: {source}")]
    Backend {
        /// The tier's [`crate::Tier::name`].
        tier: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error of tier `tier`.
    pub fn backend(
        tier: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            tier,
            source: source.into(),
        }
    }
}
