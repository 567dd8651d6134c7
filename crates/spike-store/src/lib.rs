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

mod condition;
mod entry;
mod error;
mod key;
mod memory;
mod metered;
mod sqlite;
mod store;
mod tier;

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
pub use sqlite::{SqliteOptions, SqliteTier, APPLICATION_ID};
pub use store::{Fetched, Store};
pub use tier::{check_blob, Tier};
