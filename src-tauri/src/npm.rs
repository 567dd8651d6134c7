//! npm packages in the preview: spike-preview's [`NpmFetcher`] over the tiered store. A CDN
//! module is looked up in memory, then in the SQLite cache under the app's data folder, then on
//! the room server's blob/KV API (so a team shares one cache), and only then fetched from the
//! ESM CDN, after which the local tiers keep it: what was fetched once works offline and across
//! restarts. An expired copy is revalidated when the CDN is reachable and served as it is when
//! not (stale-if-error).
//!
//! The room server's tier is read, never written ([`Store::with_read_only_authority`]): its
//! `npm` namespace is shared by every room, so only the server writes it, filling it itself
//! from the CDNs it allows (`spike serve --npm-cdn`). A module it does not have (another CDN)
//! is a miss there, fetched here and kept locally.

use std::sync::Arc;

use spike_preview::{NpmFetcher, NpmModule};
use spike_store::{
    Freshness, HttpOrigin, Key, MemoryTier, OriginConfig, RemoteConfig, RemoteTier, SqliteOptions,
    SqliteTier, Store, StoreError, Tier,
};

use crate::DesktopError;

/// The KV namespace CDN modules are kept under.
const NAMESPACE: &str = "npm";
/// The memory tier's bound, bytes.
const MEMORY_BYTES: u64 = 64 << 20;

/// The local tiers, kept for the app's lifetime; the remote tier changes with the room server.
pub(crate) struct NpmCache {
    memory: Arc<MemoryTier>,
    sqlite: Arc<SqliteTier>,
    origin: HttpOrigin,
}

impl NpmCache {
    /// Opens (or creates, or rebuilds when damaged) the cache file `path`.
    /// Errors: [`DesktopError::Store`] when it cannot be opened at all.
    pub(crate) fn open(path: &std::path::Path) -> Result<Self, DesktopError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DesktopError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        Ok(Self {
            memory: Arc::new(MemoryTier::new(MEMORY_BYTES)),
            sqlite: Arc::new(SqliteTier::open(path, SqliteOptions::default())?),
            origin: HttpOrigin::new(OriginConfig::default())?,
        })
    }

    /// A fetcher from `cdn` for a room on `room_server` (`ws://host:port/rooms`), which reaches
    /// the server's store with `token`.
    pub(crate) fn fetcher(
        &self,
        cdn: &str,
        room_server: &str,
        token: Option<String>,
    ) -> CdnFetcher {
        let mut tiers: Vec<Arc<dyn Tier>> = vec![self.memory.clone(), self.sqlite.clone()];
        let mut remote = false;
        if let Ok(base) = spike_collab::http_base(room_server) {
            let mut config = RemoteConfig::new(base.as_str());
            config.token = token;
            match RemoteTier::new(config) {
                Ok(tier) => {
                    tiers.push(Arc::new(tier));
                    remote = true;
                }
                Err(e) => tracing::warn!("the room server's store is not used: {e}"),
            }
        }
        let store = Store::new(tiers);
        CdnFetcher {
            cdn: cdn.trim_end_matches('/').to_owned(),
            // Only the server writes its shared `npm` namespace (see the module docs).
            store: if remote {
                store.with_read_only_authority()
            } else {
                store
            },
            origin: self.origin.clone(),
        }
    }
}

/// Fetches CDN modules through the store.
pub(crate) struct CdnFetcher {
    cdn: String,
    store: Store,
    origin: HttpOrigin,
}

impl std::fmt::Debug for CdnFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CdnFetcher({}, {:?})", self.cdn, self.store.tier_names())
    }
}

impl NpmFetcher for CdnFetcher {
    fn cdn(&self) -> &str {
        &self.cdn
    }

    fn fetch(&self, url: &str) -> Result<NpmModule, String> {
        let name = url.split_once("://").map_or(url, |(_, rest)| rest);
        let key = Key::kv(NAMESPACE, name).map_err(|e| e.to_string())?;
        // Called on the preview's request threads, never on the async runtime's.
        let entry = tauri::async_runtime::block_on(
            self.store.get_or_fetch(&key, || self.origin.fetch(url)),
        )
        .map_err(|e| reason(&e))?;
        Ok(NpmModule {
            body: entry.body.to_vec(),
            stale: match entry.freshness {
                Freshness::Fresh => None,
                Freshness::Stale { reason } => Some(reason),
            },
        })
    }
}

/// What the preview says when a module cannot be had.
fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { reason, .. } => {
            format!("offline or unreachable, and not in the cache ({reason})")
        }
        StoreError::Backend { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}
