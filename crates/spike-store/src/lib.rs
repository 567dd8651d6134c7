//! `spike-store`: the tiered store behind the preview's modules and a room's assets (DESIGN.md,
//! flow 4).
//!
//! Everything is addressed by a [`Key`], one of two kinds:
//!
//! - a content-addressed blob, [`BlobHash`] (`blake3:<64 hex digits>`, the BLAKE3 hash of the
//!   bytes; <https://github.com/BLAKE3-team/BLAKE3-specs>), immutable by construction;
//! - a named KV entry, [`KvKey`] (a namespace and a `/`-separated key), mutable, with an [`ETag`]
//!   for revalidation and compare-and-set.
//!
//! A store tier implements [`Tier`] (get / head / put / delete / list). Tiers compose read-through
//! and write-through, fastest first: memory → local SQLite → the room server's HTTP API → (on the
//! server) object storage. Every tier speaks the same [`Meta`], [`Entry`] and [`StoreError`], so a
//! tier can be tested with the same suite as any other.
//!
//! The local tiers and the composition: [`MemoryTier`] (moka, bounded by bytes, LRU, expired
//! entries kept for a stale window), [`SqliteTier`] (one SQLite file in WAL mode shared by any
//! number of processes, bounded by bytes with LRU eviction, moved aside and rebuilt when damaged
//! or foreign) and [`Store`], which reads through the tiers fastest first (filling the faster
//! ones, revalidating expired copies by ETag, serving them stale-if-error), writes through them
//! authority first, and fetches from an origin on a miss ([`Store::get_or_fetch`]). [`Metered`]
//! records `spike_store_*` metrics per tier (names in [`metrics`]).
//!
//! Where entries come from when no tier has them: [`HttpOrigin`] (an ESM CDN for the preview),
//! fetched with timeouts, redirects and retries, fresh for the origin's `Cache-Control: max-age`.
//!
//! The two remote tiers: [`ObjectTier`] is the server's backing store over the
//! `object_store` crate: a local folder by default, or S3 / R2 / MinIO by URL
//! ([`ObjectTier::from_url`]); meta travels in an envelope inside each object. [`RemoteTier`]
//! is a client of the room server's blob/KV HTTP API (`/v1/blobs`, `/v1/kv`): reqwest on
//! rustls/ring, a per-call timeout, retries with backoff and jitter (backon) on network errors,
//! 5xx and 429 (honouring `Retry-After`), ETag revalidation ([`RemoteTier::revalidate`]), and a
//! circuit breaker (failsafe) so that an unreachable server costs one fast
//! [`StoreError::Unavailable`]. The `test-support` feature adds `conformance`: the shared
//! suite every tier passes, and a real S3-protocol server (moto) for tests.

mod condition;
mod entry;
mod error;
mod key;
mod memory;
mod metered;
mod object;
mod origin;
mod remote;
mod sqlite;
mod store;
mod tier;

#[cfg(feature = "test-support")]
pub mod conformance;

/// The names of the metrics every tier records (through [`Metered`]).
pub mod metrics {
    pub use crate::metered::{
        BYTES_TOTAL, EVICTIONS_TOTAL, HITS_TOTAL, LATENCY_SECONDS, MISSES_TOTAL,
    };
}

pub use entry::{Condition, ETag, Entry, Freshness, Listed, Meta, PutOptions};
pub use error::StoreError;
pub use key::{BlobHash, Key, KvKey, Prefix};
pub use memory::{MemoryTier, DEFAULT_STALE_WINDOW};
pub use metered::Metered;
pub use object::{ObjectTier, ObjectUrlError};
pub use origin::{HttpOrigin, OriginConfig};
pub use remote::{retry_after, BreakerState, RemoteConfig, RemoteTier};
pub use sqlite::{SqliteOptions, SqliteTier, APPLICATION_ID};
pub use store::{Fetched, Store};
pub use tier::{check_blob, Revalidated, Tier};
