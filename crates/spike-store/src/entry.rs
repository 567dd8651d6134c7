//! What a tier stores beside the bytes, and how a write may be conditioned.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::Key;

/// An entity tag: the first 32 hex digits (128 bits) of the BLAKE3 hash of the body. The same
/// bytes have the same ETag on every tier and backend, so a faster tier can revalidate its copy
/// against a slower one by ETag alone. In HTTP it is sent quoted (`"…"`, RFC 9110 §8.8.3).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// The ETag of `body`.
    pub fn of(body: &[u8]) -> Self {
        let hex = blake3::hash(body).to_hex();
        Self(hex[..32].to_owned())
    }

    /// An ETag received from elsewhere (an HTTP header without its quotes, a database row).
    /// Not validated: an unknown ETag simply never matches.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The tag without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag in HTTP form, quoted.
    pub fn to_header(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

/// What a tier knows about a stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Body length, bytes.
    pub size: u64,
    /// [`ETag::of`] the body.
    pub etag: ETag,
    /// The body's media type (`text/javascript; charset=utf-8`), if one was given.
    pub content_type: Option<String>,
    /// When the entry stops being fresh; `None` never expires. Blobs never expire.
    pub expires_at: Option<SystemTime>,
    /// When the entry was written to the tier that answered.
    pub modified_at: SystemTime,
}

impl Meta {
    /// Metadata for `body` written now with `options`.
    pub fn for_body(body: &[u8], options: &PutOptions) -> Self {
        let now = SystemTime::now();
        Self {
            size: body.len() as u64,
            etag: ETag::of(body),
            content_type: options.content_type.clone(),
            expires_at: options.ttl.and_then(|ttl| now.checked_add(ttl)),
            modified_at: now,
        }
    }

    /// Whether the entry is past its expiry at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Whether an answer is current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Within its TTL, or revalidated.
    Fresh,
    /// Served past its expiry because the tier that could revalidate it was unavailable
    /// (stale-if-error, RFC 5861 §4); `reason` is that tier's error.
    Stale {
        /// Why it could not be revalidated.
        reason: String,
    },
}

/// A stored entry: its bytes and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What the tier knows about it.
    pub meta: Meta,
    /// The bytes.
    pub body: Bytes,
    /// Whether it is current ([`Freshness::Stale`] only from a composed store).
    pub freshness: Freshness,
}

/// One row of [`crate::Tier::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The entry's key.
    pub key: Key,
    /// Its metadata.
    pub meta: Meta,
}

/// A condition on a write (HTTP `If-Match` / `If-None-Match: *`, RFC 9110 §13.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Write whatever is there.
    #[default]
    None,
    /// Write only if the entry exists with this ETag (compare-and-set).
    IfMatch(ETag),
    /// Write only if the entry does not exist (create).
    IfAbsent,
}

/// How to write an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The body's media type.
    pub content_type: Option<String>,
    /// How long the entry stays fresh; `None` forever. Ignored for blobs.
    pub ttl: Option<Duration>,
    /// A precondition; a failed one is [`crate::StoreError::PreconditionFailed`].
    pub condition: Condition,
}
