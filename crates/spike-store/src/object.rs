//! The server's backing store: a [`Tier`] over the `object_store` crate (a local folder, or S3 /
//! R2 / MinIO by URL).
//!
//! Layout (the same on every backend): a blob lives at `blobs/<64 hex>` and a KV entry at
//! `kv/<namespace>/<key>~`, i.e. [`Key::path`] with each key segment percent-encoded the way
//! `object_store` encodes path parts and a `~` after the last one. The `~` (which that encoding
//! never leaves bare) keeps an entry's object from colliding with the folder of a longer key on a
//! file system: `a` and `a/b` are the files `a~` and `a/b~`.
//!
//! Every object is an envelope, so that meta travels with the bytes in one atomic write on any
//! backend (the local file system has no object attributes): the 8 bytes `SPKSTOR1`, a 4-byte
//! little-endian header length, a JSON header (`size`, `etag`, `content_type`, `expires_at_ms`,
//! `modified_at_ms`; times in milliseconds since the Unix epoch), then the body. A read checks
//! the body's size and [`crate::ETag`] against the header and reports a mismatch as
//! [`StoreError::Backend`].
//!
//! Conditions: [`Condition::IfAbsent`] is `PutMode::Create` on every backend. For
//! [`Condition::IfMatch`] the tier reads the current object, compares our ETag, and writes with
//! `PutMode::Update` on the backend's own ETag where the backend has it (S3); the local file
//! system has no `Update`, so there the write is an overwrite. Writers of one `ObjectTier` are
//! serialized per key in-process (64 striped locks), which makes conditions atomic among the
//! writers of one process; across processes they are atomic only where the backend has
//! `Update` (S3), and `IfAbsent` everywhere.
//!
//! Metrics (`metrics` facade, label `tier="object"`): `spike_store_hits_total` and
//! `spike_store_misses_total` (reads), `spike_store_read_bytes_total` and
//! `spike_store_written_bytes_total` (bodies), `spike_store_latency_seconds{op}` (a histogram).
//!
//! Limits: a key segment longer than the file system allows (255 bytes on most) fails on the
//! local backend with [`StoreError::Backend`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::{Path, PathPart};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions as StorePutOptions,
    PutPayload, UpdateVersion,
};

use crate::{
    check_blob, BlobHash, Condition, ETag, Entry, Freshness, Key, KvKey, Listed, Meta, Prefix,
    PutOptions, StoreError, Tier,
};

const NAME: &str = "object";
const MAGIC: &[u8; 8] = b"SPKSTOR1";
/// Bytes read by `head` in the hope that the header fits (a longer header costs a second read).
const HEAD_PROBE: u64 = 4096;
const LOCK_STRIPES: usize = 64;
/// How many objects `list` reads at once.
const LIST_CONCURRENCY: usize = 8;

/// Errors building an [`ObjectTier`] from a URL.
#[derive(Debug, thiserror::Error)]
pub enum ObjectUrlError {
    /// The URL's scheme is not one this tier knows.
    #[error("object store URL {url:?}: unknown scheme (expected a folder path, file://, or s3://bucket/prefix)")]
    UnknownScheme {
        /// The URL as given.
        url: String,
    },
    /// `s3://` without a bucket.
    #[error("object store URL {url:?}: no bucket (expected s3://bucket/prefix)")]
    NoBucket {
        /// The URL as given.
        url: String,
    },
    /// The backend refused its configuration (credentials, endpoint, folder).
    #[error("object store URL {url:?}: {source}")]
    Backend {
        /// The URL as given.
        url: String,
        /// What the backend said.
        #[source]
        source: object_store::Error,
    },
    /// The local folder could not be created.
    #[error("object store folder {path}: {source}")]
    Folder {
        /// The folder.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// A [`Tier`] over an `object_store` backend (see the module docs for layout and conditions).
/// Cheap to clone: clones share the backend and the write locks.
#[derive(Clone)]
pub struct ObjectTier {
    store: Arc<dyn ObjectStore>,
    describe: Arc<str>,
    conditional_update: bool,
    locks: Arc<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for ObjectTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectTier({})", self.describe)
    }
}

impl ObjectTier {
    /// A tier on `url`:
    /// - a folder path or `file:///abs/path` → the local file system (the folder is created);
    /// - `s3://bucket/prefix` → S3 configured from the environment (`AWS_ACCESS_KEY_ID`,
    ///   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …; `AWS_ENDPOINT_URL` or `AWS_ENDPOINT` for R2 or
    ///   MinIO, path-style requests). Plain `http://` endpoints are allowed on loopback only
    ///   (or with `AWS_ALLOW_HTTP=true`).
    ///
    /// Errors: [`ObjectUrlError`].
    pub fn from_url(url: &str) -> Result<Self, ObjectUrlError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ObjectUrlError::NoBucket { url: url.into() });
            }
            let mut builder =
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok();
            if let Some(endpoint) = endpoint.filter(|e| is_loopback_http(e)) {
                builder = builder.with_endpoint(endpoint).with_allow_http(true);
            }
            let s3 = builder.build().map_err(|source| ObjectUrlError::Backend {
                url: url.into(),
                source,
            })?;
            return Ok(Self::s3(s3, prefix, url));
        }
        let folder = match url.strip_prefix("file://") {
            Some(path) => path,
            None if url.contains("://") => {
                return Err(ObjectUrlError::UnknownScheme { url: url.into() })
            }
            None => url,
        };
        Self::local(std::path::Path::new(folder))
    }

    /// A tier on the local folder `folder` (created if missing).
    pub fn local(folder: &std::path::Path) -> Result<Self, ObjectUrlError> {
        std::fs::create_dir_all(folder).map_err(|source| ObjectUrlError::Folder {
            path: folder.to_owned(),
            source,
        })?;
        let fs =
            object_store::local::LocalFileSystem::new_with_prefix(folder).map_err(|source| {
                ObjectUrlError::Backend {
                    url: folder.display().to_string(),
                    source,
                }
            })?;
        Ok(Self::with_store(
            Arc::new(fs),
            format!("file://{}", folder.display()),
            false,
        ))
    }

    /// A tier on a built S3 client, under `prefix` (may be empty); `describe` names it in logs.
    pub fn s3(s3: object_store::aws::AmazonS3, prefix: &str, describe: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        };
        Self::with_store(store, describe.to_owned(), true)
    }

    /// A tier on any `object_store` backend. `conditional_update`: whether it implements
    /// `PutMode::Update` (S3 does; the local file system does not).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        describe: String,
        conditional_update: bool,
    ) -> Self {
        Self {
            store,
            describe: describe.into(),
            conditional_update,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn lock_for(&self, path: &Path) -> &tokio::sync::Mutex<()> {
        let hash = blake3::hash(path.as_ref().as_bytes());
        let index = usize::from(hash.as_bytes()[0]) % self.locks.len();
        &self.locks[index]
    }

    /// The current object under `path`: its entry and the backend's version of it.
    async fn read(&self, path: &Path) -> Result<Option<(Entry, UpdateVersion)>, StoreError> {
        let result = match self.store.get_opts(path, GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::backend(NAME, e)),
        };
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(|e| StoreError::backend(NAME, e))?;
        let (meta, body) = open_envelope(path, &bytes)?;
        Ok(Some((
            Entry {
                meta,
                body,
                freshness: Freshness::Fresh,
            },
            version,
        )))
    }

    async fn write(&self, path: &Path, envelope: Bytes, mode: PutMode) -> Result<(), StoreError> {
        let options = StorePutOptions {
            mode,
            ..Default::default()
        };
        self.store
            .put_opts(path, PutPayload::from(envelope), options)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => StoreError::PreconditionFailed {
                    key: path.to_string(),
                    current: None,
                },
                e => StoreError::backend(NAME, e),
            })
    }

    /// The precondition error for `key`, with the ETag found now.
    async fn precondition_failed(&self, key: &Key, path: &Path) -> StoreError {
        let current = match self.read(path).await {
            Ok(found) => found.map(|(entry, _)| entry.meta.etag),
            Err(e) => return e,
        };
        StoreError::PreconditionFailed {
            key: key.to_string(),
            current,
        }
    }
}

/// Counts a read that found `found` bytes (`None`: a miss) and its latency.
fn record_read(started: std::time::Instant, op: &'static str, found: Option<usize>) {
    match found {
        Some(bytes) => {
            metrics::counter!("spike_store_hits_total", "tier" => NAME).increment(1);
            metrics::counter!("spike_store_read_bytes_total", "tier" => NAME)
                .increment(bytes as u64);
        }
        None => metrics::counter!("spike_store_misses_total", "tier" => NAME).increment(1),
    }
    metrics::histogram!("spike_store_latency_seconds", "tier" => NAME, "op" => op)
        .record(started.elapsed().as_secs_f64());
}

fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where `key` lives (see the module docs).
pub(crate) fn object_path(key: &Key) -> Path {
    match key {
        Key::Blob(h) => Path::from_iter(["blobs".to_owned(), h.to_hex()]),
        Key::Kv(k) => {
            let mut text = format!("kv/{}/", k.namespace());
            text.push_str(&encode_segments(k.key()));
            text.push('~');
            // Every part is either checked namespace text or object_store's own encoding.
            Path::parse(&text).unwrap_or_else(|_| Path::from(text.as_str()))
        }
    }
}

fn encode_segments(key: &str) -> String {
    key.split('/')
        .map(|segment| PathPart::from(segment).as_ref().to_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The key of a listed object, or `None` for objects this tier did not write.
fn key_of_path(path: &Path) -> Option<Key> {
    let text = path.as_ref();
    if let Some(hex) = text.strip_prefix("blobs/") {
        return format!("{}{hex}", BlobHash::PREFIX)
            .parse()
            .ok()
            .map(Key::Blob);
    }
    let rest = text.strip_prefix("kv/")?.strip_suffix('~')?;
    let (namespace, key) = rest.split_once('/')?;
    let decoded: Option<Vec<String>> = key
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        })
        .collect();
    KvKey::new(namespace, decoded?.join("/")).ok().map(Key::Kv)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    size: u64,
    etag: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    modified_at_ms: u64,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn seal_envelope(meta: &Meta, body: &[u8]) -> Result<Bytes, StoreError> {
    let header = Header {
        size: meta.size,
        etag: meta.etag.as_str().to_owned(),
        content_type: meta.content_type.clone(),
        expires_at_ms: meta.expires_at.map(to_ms),
        modified_at_ms: to_ms(meta.modified_at),
    };
    let json = serde_json::to_vec(&header).map_err(|e| StoreError::backend(NAME, e))?;
    let len = u32::try_from(json.len())
        .map_err(|_| StoreError::backend(NAME, "envelope header over 4 GiB"))?;
    let mut out = BytesMut::with_capacity(12 + json.len() + body.len());
    out.put_slice(MAGIC);
    out.put_u32_le(len);
    out.put_slice(&json);
    out.put_slice(body);
    Ok(out.freeze())
}

/// The header length of an envelope, from its first 12 bytes.
fn header_len(path: &Path, bytes: &[u8]) -> Result<usize, StoreError> {
    let bad = |what: &str| StoreError::backend(NAME, format!("object {path}: {what}"));
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("not a spike-store envelope (no SPKSTOR1 magic)"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[8..12]);
    Ok(u32::from_le_bytes(len) as usize)
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(Meta, usize), StoreError> {
    let len = header_len(path, bytes)?;
    let end = 12 + len;
    let json = bytes.get(12..end).ok_or_else(|| {
        StoreError::backend(NAME, format!("object {path}: envelope header cut short"))
    })?;
    let header: Header = serde_json::from_slice(json)
        .map_err(|e| StoreError::backend(NAME, format!("object {path}: envelope header: {e}")))?;
    let meta = Meta {
        size: header.size,
        etag: ETag::from_raw(header.etag),
        content_type: header.content_type,
        expires_at: header.expires_at_ms.map(from_ms),
        modified_at: from_ms(header.modified_at_ms),
    };
    Ok((meta, end))
}

fn open_envelope(path: &Path, bytes: &Bytes) -> Result<(Meta, Bytes), StoreError> {
    let (meta, start) = parse_header(path, bytes)?;
    let body = bytes.slice(start..);
    if body.len() as u64 != meta.size || ETag::of(&body) != meta.etag {
        return Err(StoreError::backend(
            NAME,
            format!(
                "object {path}: body does not match its header ({} bytes, header says {})",
                body.len(),
                meta.size
            ),
        ));
    }
    Ok((meta, body))
}

#[async_trait::async_trait]
impl Tier for ObjectTier {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let started = std::time::Instant::now();
        let found = self.read(&object_path(key)).await?.map(|(entry, _)| entry);
        record_read(started, "get", found.as_ref().map(|e| e.body.len()));
        Ok(found)
    }

    async fn head(&self, key: &Key) -> Result<Option<Meta>, StoreError> {
        let path = object_path(key);
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..HEAD_PROBE)),
            ..Default::default()
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::backend(NAME, e)),
        };
        let probe = result
            .bytes()
            .await
            .map_err(|e| StoreError::backend(NAME, e))?;
        if 12 + header_len(&path, &probe)? as u64 > probe.len() as u64 {
            return Ok(self.read(&path).await?.map(|(entry, _)| entry.meta));
        }
        Ok(Some(parse_header(&path, &probe)?.0))
    }

    async fn put(&self, key: &Key, body: Bytes, options: PutOptions) -> Result<Meta, StoreError> {
        check_blob(key, &body)?;
        let path = object_path(key);
        let mut options = options;
        if matches!(key, Key::Blob(_)) {
            options.ttl = None;
        }
        let _guard = self.lock_for(&path).lock().await;
        if matches!(key, Key::Blob(_)) {
            // A blob's bytes are fixed by its name: one that exists is kept (only its meta read).
            if let Some(meta) = self.head(key).await? {
                return match &options.condition {
                    Condition::IfAbsent => Err(StoreError::PreconditionFailed {
                        key: key.to_string(),
                        current: Some(meta.etag),
                    }),
                    Condition::IfMatch(want) if *want != meta.etag => {
                        Err(StoreError::PreconditionFailed {
                            key: key.to_string(),
                            current: Some(meta.etag),
                        })
                    }
                    _ => Ok(meta),
                };
            }
        }
        let current = match &options.condition {
            Condition::IfMatch(_) => self.read(&path).await?,
            _ => None,
        };
        let mode = match (&options.condition, &current) {
            (Condition::None, _) => PutMode::Overwrite,
            (Condition::IfAbsent, _) => PutMode::Create,
            (Condition::IfMatch(_), None) => {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                    current: None,
                })
            }
            (Condition::IfMatch(want), Some((entry, version))) => {
                if *want != entry.meta.etag {
                    return Err(StoreError::PreconditionFailed {
                        key: key.to_string(),
                        current: Some(entry.meta.etag.clone()),
                    });
                }
                if self.conditional_update && version.e_tag.is_some() {
                    PutMode::Update(version.clone())
                } else {
                    PutMode::Overwrite
                }
            }
        };
        let started = std::time::Instant::now();
        let meta = Meta::for_body(&body, &options);
        let envelope = seal_envelope(&meta, &body)?;
        match self.write(&path, envelope, mode).await {
            Ok(()) => {
                metrics::counter!("spike_store_written_bytes_total", "tier" => NAME)
                    .increment(meta.size);
                metrics::histogram!("spike_store_latency_seconds", "tier" => NAME, "op" => "put")
                    .record(started.elapsed().as_secs_f64());
                Ok(meta)
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                Err(self.precondition_failed(key, &path).await)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<bool, StoreError> {
        let path = object_path(key);
        let _guard = self.lock_for(&path).lock().await;
        let Some(current) = self.head(key).await? else {
            return match condition {
                Condition::IfMatch(_) => Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                    current: None,
                }),
                _ => Ok(false),
            };
        };
        if let Condition::IfMatch(want) = &condition {
            if *want != current.etag {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                    current: Some(current.etag),
                });
            }
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(StoreError::backend(NAME, e)),
        }
    }

    async fn list(&self, prefix: &Prefix) -> Result<Vec<Listed>, StoreError> {
        let folder = match prefix {
            Prefix::Blobs => Path::from("blobs"),
            Prefix::Kv {
                namespace,
                key_prefix,
            } => {
                let mut text = format!("kv/{namespace}");
                if let Some((dirs, _)) = key_prefix.rsplit_once('/') {
                    text.push('/');
                    text.push_str(&encode_segments(dirs));
                }
                Path::parse(&text).map_err(|e| StoreError::backend(NAME, e))?
            }
        };
        let paths: Vec<(Key, Path)> = self
            .store
            .list(Some(&folder))
            .map_err(|e| StoreError::backend(NAME, e))
            .try_filter_map(|object| async move {
                Ok(key_of_path(&object.location)
                    .filter(|key| prefix.matches(key))
                    .map(|key| (key, object.location)))
            })
            .try_collect()
            .await?;
        let mut listed: Vec<Listed> = futures_util::stream::iter(paths)
            .map(|(key, _path)| async move {
                Ok::<_, StoreError>(self.head(&key).await?.map(|meta| Listed { key, meta }))
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_entries_apart_from_longer_keys_folders() -> Result<(), StoreError> {
        let a = object_path(&Key::kv("npm", "a")?);
        let ab = object_path(&Key::kv("npm", "a/b")?);
        assert_eq!(a.as_ref(), "kv/npm/a~");
        assert_eq!(ab.as_ref(), "kv/npm/a/b~");
        let odd = Key::kv("npm", "a~/100%/x#y")?;
        let path = object_path(&odd);
        assert_eq!(path.as_ref(), "kv/npm/a%7E/100%25/x%23y~");
        assert_eq!(key_of_path(&path), Some(odd));
        let blob = Key::blob_of(b"x");
        assert_eq!(key_of_path(&object_path(&blob)), Some(blob));
        assert_eq!(key_of_path(&Path::from("kv/npm/not-ours")), None);
        Ok(())
    }

    #[test]
    fn loopback_endpoints_only_get_plain_http() {
        assert!(is_loopback_http("http://127.0.0.1:9000"));
        assert!(is_loopback_http("http://localhost:9000/"));
        assert!(is_loopback_http("http://[::1]:9000"));
        assert!(!is_loopback_http("http://10.0.0.1:9000"));
        assert!(!is_loopback_http("https://127.0.0.1:9000"));
    }

    #[test]
    fn envelopes_round_trip_and_refuse_damage() -> Result<(), StoreError> {
        let options = PutOptions {
            content_type: Some("text/plain".into()),
            ttl: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let meta = Meta::for_body(b"hello", &options);
        let sealed = seal_envelope(&meta, b"hello")?;
        let path = Path::from("kv/x/y~");
        let (back, body) = open_envelope(&path, &sealed)?;
        assert_eq!(&body[..], b"hello");
        assert_eq!(back.etag, meta.etag);
        assert_eq!(back.content_type.as_deref(), Some("text/plain"));
        assert_eq!(back.expires_at.map(to_ms), meta.expires_at.map(to_ms));
        let mut damaged = sealed.to_vec();
        if let Some(last) = damaged.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            open_envelope(&path, &Bytes::from(damaged)),
            Err(StoreError::Backend { .. })
        ));
        assert!(matches!(
            open_envelope(&path, &Bytes::from_static(b"plain bytes")),
            Err(StoreError::Backend { .. })
        ));
        Ok(())
    }
}
