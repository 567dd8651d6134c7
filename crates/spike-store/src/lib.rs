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

mod entry;
mod error;
mod key;
mod tier;

pub use entry::{Condition, ETag, Entry, Freshness, Listed, Meta, PutOptions};
pub use error::StoreError;
pub use key::{BlobHash, Key, KvKey, Prefix};
pub use tier::{check_blob, Tier};
