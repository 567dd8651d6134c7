//! The blob/KV HTTP API over the server's backing store (a [`spike_store::Tier`], by default an
//! [`spike_store::ObjectTier`] on `<data>/objects`).
//!
//! | request | answer |
//! |---|---|
//! | `PUT /v1/blobs` (body) | `201` `{"hash":"blake3:<64 hex>","size":N,"content_type":…}` (the stored one, or `null`), `Location: /v1/blobs/<hash>` |
//! | `GET /v1/blobs` | `200` `{"blobs":[{"hash","size","etag","content_type","modified_at_ms"}…]}` in hash order |
//! | `GET\|HEAD /v1/blobs/<hash>` | the bytes; `Cache-Control: public, max-age=31536000, immutable` |
//! | `GET\|HEAD /v1/kv/<namespace>/<key…>` | the value; `Cache-Control: no-cache` |
//! | `PUT /v1/kv/<namespace>/<key…>` (body) | `200` `{"key":…,"etag":…,"size":N}` |
//! | `DELETE /v1/kv/<namespace>/<key…>` | `204`, or `404` when nothing was there |
//! | `GET /v1/kv/<namespace>?prefix=<p>` | `200` `{"namespace":…,"entries":[{"key","size","etag","content_type","expires_at_ms","modified_at_ms"}…]}` in key order |
//!
//! Every stored answer carries its meta as headers: `ETag` (quoted, [`spike_store::ETag`]: the
//! same on every tier), `Content-Type` (as it was put), `Last-Modified` and `Expires` (HTTP
//! dates) and, precise to the millisecond for [`spike_store::RemoteTier`], `Spike-Size`,
//! `Spike-Modified-Ms` and `Spike-Expires-Ms` (milliseconds since the Unix epoch).
//!
//! Conditional requests (RFC 9110 §13.1): `If-None-Match` on a read → `304` when it names the
//! current ETag (or is `*`); on a KV `PUT`, `If-Match: "<etag>"` is compare-and-set and
//! `If-None-Match: *` is create-only, both `412 Precondition Failed` when they do not hold, with
//! the current `ETag` (if any) in the answer. `DELETE` honours `If-Match` the same way.
//! A KV `PUT` may carry `Spike-TTL: <seconds>` (a whole number, 1 to 315360000): the entry's
//! `Expires`. It is returned as stored after that; the reader decides.
//!
//! Validation: keys follow [`spike_store::KvKey`] (no traversal, no absolute keys) and hashes
//! [`spike_store::BlobHash`]; a bad one is `400` with the rule it broke. So that every key fits
//! every backend, a key segment is at most [`MAX_STORED_SEGMENT_BYTES`] and a whole key at most
//! [`MAX_STORED_KEY_BYTES`] *as stored*: the object store percent-encodes bytes outside
//! printable ASCII, the characters `\` `{` `}` `^` `%` `[` `]` `"` `<` `>` `~` `#` `|` `*` `?`
//! and the backtick (each then takes 3 bytes); a segment is a file name on the local backend
//! (255 bytes, less the `~` and the `#<n>` of a staged write), and S3 holds keys of 1024
//! bytes. Bodies over
//! [`StoreConfig::max_blob_bytes`] / [`StoreConfig::max_kv_bytes`] are `413` naming the limit,
//! as soon as the limit is passed: a declared `Content-Length` over it is refused before the
//! body is read, and a body without one (chunked) is cut off at the limit; no more than the
//! limit is ever held.
//!
//! Failures of the server (`5xx`) answer a generic text with the failure's kind and an error id
//! (`the store failed (backend; error id 3f…)`); the detail, which may name files of the
//! server, is logged under that id and never sent.
//!
//! Access: with [`crate::Access::Tokens`] every request needs a valid token (`Authorization:
//! Bearer <JWT>` or `?token=<JWT>`). Namespace `room.<room>` needs a token covering `<room>`
//! (to read, list or write). The other namespaces (`npm`, …) are shared by every room: any valid
//! token reads and lists them, but only the server itself and an `admin` token for every room
//! (`*`, see [`crate::auth`]) write them; a room's `edit` or `view` token gets `403`
//! (`shared_namespace`). Blobs are read by hash and put with any `edit` token (a blob is named
//! by its bytes, so nobody can change what a hash names), but listing every blob (`GET
//! /v1/blobs`) takes that `admin` token (`403`, `list_blobs`, for a room's token). A `view`
//! token may `GET`/`HEAD` only (`403`, `view_only`, on writes). Refusals are logged without the
//! token and counted in `spike_auth_refusals_total{reason}` like room refusals. In
//! [`crate::Access::Open`] mode (loopback only) there are no tokens and no refusals.
//!
//! The shared npm cache: the server fills namespace `npm` itself. A read (`GET`/`HEAD`) of
//! `npm/<host>/<path>` that finds nothing, or an expired entry, fetches `<scheme>://<host>/<path>`
//! with [`spike_store::HttpOrigin`] when `<host>` (with its port, if any) is one of
//! [`StoreConfig::npm_cdns`], stores it (fresh for the CDN's `Cache-Control: max-age`) and
//! answers it; concurrent misses on one key fetch once. A host that is not allow-listed is never
//! fetched: `404` saying so (a miss, so the desktop's [`spike_store::RemoteTier`] falls back to
//! fetching the module itself, which a `403` would turn into an error). The CDN answering `4xx`
//! is `404` with its answer; the CDN unreachable is `502` (an expired copy, if any, is served as
//! stored instead).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use futures_util::StreamExt as _;
use spike_store::{
    BlobHash, Condition, ETag, HttpOrigin, Key, KvKey, Meta, OriginConfig, Prefix, PutOptions,
    StoreError, Tier,
};

use crate::auth::{Refusal, Role};
use crate::{Access, Inner};

/// `Cache-Control` of a blob: its name is its hash, so it never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Request header: seconds a KV entry stays fresh.
pub const TTL_HEADER: &str = "spike-ttl";
/// Response header: the body's size in bytes (also on `HEAD` and `304`).
pub const SIZE_HEADER: &str = "spike-size";
/// Response header: when the entry was written, milliseconds since the Unix epoch.
pub const MODIFIED_MS_HEADER: &str = "spike-modified-ms";
/// Response header: when the entry stops being fresh, milliseconds since the Unix epoch.
pub const EXPIRES_MS_HEADER: &str = "spike-expires-ms";
/// The longest accepted `Spike-TTL`, seconds (10 years).
pub const MAX_TTL_SECS: u64 = 315_360_000;
/// The KV namespace prefix whose entries belong to a room: `room.<room>`.
pub const ROOM_NAMESPACE_PREFIX: &str = "room.";
/// The shared KV namespace of CDN modules, which the server fills from
/// [`StoreConfig::npm_cdns`].
pub const NPM_NAMESPACE: &str = "npm";
/// The CDN `spike serve` fills [`NPM_NAMESPACE`] from unless told otherwise.
pub const DEFAULT_NPM_CDN: &str = "https://esm.sh";
/// The longest key segment as stored (see the module docs): a file name on the local backend
/// is at most 255 bytes, and the last segment takes a `~` and, while written, `#<n>`.
pub const MAX_STORED_SEGMENT_BYTES: usize = 250;
/// The longest key (`<namespace>/<key>`) as stored: S3 keys are at most 1024 bytes, and the
/// backend adds `kv/`, the `~` and its own prefix.
pub const MAX_STORED_KEY_BYTES: usize = 900;

/// A CDN the server fills [`NPM_NAMESPACE`] from: a base URL, `https://host[:port]` (plain
/// `http://` only for a loopback host: a test's origin, a local mirror). It parses from that
/// text, or from a bare host (`esm.sh`, meaning `https://esm.sh`); it displays as its base URL.
#[derive(Clone, PartialEq, Eq)]
pub struct NpmCdn {
    base: reqwest::Url,
    /// `host[:port]`: the first key segment of its modules (`npm/esm.sh/react@19`).
    name: String,
}

impl NpmCdn {
    /// `host[:port]` (no port when it is the scheme's default): the first segment of the keys
    /// this CDN's modules are stored under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of `path` (a key without its first segment) on this CDN, or `None` if the
    /// result would not be on this CDN.
    fn url_of(&self, path: &str) -> Option<reqwest::Url> {
        let url = reqwest::Url::parse(&format!("{}/{path}", self)).ok()?;
        let same = url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none();
        same.then_some(url)
    }
}

impl std::fmt::Display for NpmCdn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.base.scheme(), self.name)
    }
}

impl std::fmt::Debug for NpmCdn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NpmCdn({self})")
    }
}

impl std::str::FromStr for NpmCdn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let full = if text.contains("://") {
            text.to_owned()
        } else {
            format!("https://{text}")
        };
        let bad = |why: &str| format!("CDN {text:?}: {why}");
        let base = reqwest::Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
        let host = base.host_str().ok_or_else(|| bad("no host"))?.to_owned();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match base.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(bad(
                    "plain http:// is for loopback hosts only; use https://",
                ))
            }
            _ => return Err(bad("the scheme is https:// (or http:// on loopback)")),
        }
        if base.path() != "/"
            || base.query().is_some()
            || base.fragment().is_some()
            || !base.username().is_empty()
            || base.password().is_some()
        {
            return Err(bad(
                "a CDN is a scheme and a host (and port), like https://esm.sh, nothing more",
            ));
        }
        let name = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Self { base, name })
    }
}

/// The server's filler of [`NPM_NAMESPACE`]: one origin client per CDN (each with its own
/// circuit breaker) and one gate per key being fetched.
struct NpmFill {
    cdns: Vec<(NpmCdn, HttpOrigin)>,
    gates: std::sync::Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl NpmFill {
    fn new(cdns: &[NpmCdn], max_body_bytes: u64) -> Result<Self, StoreError> {
        let config = OriginConfig {
            max_body_bytes,
            ..OriginConfig::default()
        };
        let cdns = cdns
            .iter()
            .map(|cdn| Ok((cdn.clone(), HttpOrigin::new(config.clone())?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            cdns,
            gates: std::sync::Mutex::default(),
        })
    }

    /// The gate of `key`: shared while anyone holds it, dropped once nobody does.
    fn gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = gates.get(key).and_then(std::sync::Weak::upgrade) {
            return gate;
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        gates.insert(key.to_owned(), Arc::downgrade(&gate));
        gate
    }

    fn names(&self) -> String {
        let names: Vec<String> = self.cdns.iter().map(|(cdn, _)| cdn.to_string()).collect();
        names.join(", ")
    }
}

/// The backing store of the blob/KV API and its limits.
#[derive(Clone)]
pub struct StoreConfig {
    /// Where blobs and KV entries live. `None`: an [`spike_store::ObjectTier`] on
    /// `<data>/objects`, made by [`crate::Server::new`].
    pub backend: Option<Arc<dyn Tier>>,
    /// Largest blob accepted, bytes. Default 64 MiB.
    pub max_blob_bytes: u64,
    /// Largest KV value accepted, bytes. Default 16 MiB.
    pub max_kv_bytes: u64,
    /// The CDNs the server fills [`NPM_NAMESPACE`] from on a miss (see the module docs). Empty
    /// (the library's default, so that an embedded or test server never reaches the network
    /// unasked): the server fills nothing. `spike serve` defaults to [`DEFAULT_NPM_CDN`].
    pub npm_cdns: Vec<NpmCdn>,
    /// The filler of `npm`, made from `npm_cdns` by [`StoreConfig::resolved`].
    npm_fill: Option<Arc<NpmFill>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: None,
            max_blob_bytes: 64 << 20,
            max_kv_bytes: 16 << 20,
            npm_cdns: Vec::new(),
            npm_fill: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend.as_ref().map(|b| b.name()))
            .field("max_blob_bytes", &self.max_blob_bytes)
            .field("max_kv_bytes", &self.max_kv_bytes)
            .field("npm_cdns", &self.npm_cdns)
            .finish()
    }
}

impl StoreConfig {
    /// This configuration with its default backend filled in (an
    /// [`spike_store::ObjectTier`] on `<data_dir>/objects`), and the filler of `npm` made from
    /// [`StoreConfig::npm_cdns`].
    pub(crate) fn resolved(
        mut self,
        data_dir: &std::path::Path,
    ) -> Result<Self, spike_store::ObjectUrlError> {
        if self.backend.is_none() {
            let tier = spike_store::ObjectTier::local(&data_dir.join("objects"))?;
            self.backend = Some(Arc::new(tier));
        }
        self.npm_fill = None;
        if !self.npm_cdns.is_empty() {
            match NpmFill::new(&self.npm_cdns, self.max_kv_bytes) {
                Ok(fill) => {
                    tracing::info!(cdns = %fill.names(), "the npm cache fills itself from these CDNs");
                    self.npm_fill = Some(Arc::new(fill));
                }
                // Only when no HTTP client can be built at all; the store works without it.
                Err(e) => tracing::error!("the npm cache will not fill itself: {e}"),
            }
        }
        Ok(self)
    }
}

/// The routes of the API, to merge into the server's router.
pub(crate) fn routes() -> axum::Router<Arc<Inner>> {
    axum::Router::new()
        .route("/v1/blobs", put(put_blob).get(list_blobs))
        .route("/v1/blobs/{hash}", get(get_blob).head(head_blob))
        .route("/v1/kv/{namespace}", get(list_kv))
        .route(
            "/v1/kv/{namespace}/{*key}",
            get(get_kv).head(head_kv).put(put_kv).delete(delete_kv),
        )
}

type Params = Query<HashMap<String, String>>;

/// A refused request: the answer to send instead (boxed: a `Response` is large).
pub(crate) struct Refused(Box<Response>);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for Refused {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

type Answer = Result<Response, Refused>;

fn refuse(status: StatusCode, message: impl Into<String>) -> Refused {
    (status, message.into()).into_response().into()
}

fn backend(inner: &Inner) -> Result<Arc<dyn Tier>, Refused> {
    inner.config.store.backend.clone().ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server has no backing store",
        )
    })
}

/// What a request does, for [`authorize`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// GET, HEAD, or a listing of one namespace.
    Read,
    /// PUT, DELETE.
    Write,
    /// `GET /v1/blobs`: every blob of every room.
    ListBlobs,
}

/// Checks the token for `op` on `namespace` (`None`: blobs); see the module docs.
fn authorize(
    inner: &Inner,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    namespace: Option<&str>,
    op: Op,
) -> Result<(), Refused> {
    let Access::Tokens(key) = &inner.config.access else {
        return Ok(());
    };
    let token = crate::conn::bearer(headers).or_else(|| params.get("token").map(String::as_str));
    let room = namespace.and_then(|ns| ns.strip_prefix(ROOM_NAMESPACE_PREFIX));
    let verified = match room {
        Some(room) => key.verify(token, room),
        None => key.verify_any(token),
    };
    let refused = |kind: &'static str, status: StatusCode, reason: String| {
        // The reason only: the token itself never reaches the logs.
        tracing::warn!(
            namespace = namespace.unwrap_or("(blobs)"),
            reason = kind,
            "refused a store request: {reason}"
        );
        metrics::counter!("spike_auth_refusals_total", "reason" => kind).increment(1);
        refuse(status, reason)
    };
    let claims = verified
        .map_err(|refusal| refused(refusal.kind(), refusal.status(), refusal_text(&refusal)))?;
    if op == Op::Write && claims.role == Role::View {
        return Err(refused(
            "view_only",
            StatusCode::FORBIDDEN,
            "a view token may only read (GET, HEAD)".into(),
        ));
    }
    if let (Op::Write, Some(shared), None) = (op, namespace, room) {
        if !claims.is_store_admin() {
            return Err(refused(
                "shared_namespace",
                StatusCode::FORBIDDEN,
                format!(
                    "namespace {shared:?} is shared by every room: only the server itself and an \
                     admin token for every room (`*`) write it, not this {} token for room {:?}; \
                     a room's own entries go under namespace `{ROOM_NAMESPACE_PREFIX}<room>`",
                    claims.role.as_str(),
                    claims.room
                ),
            ));
        }
    }
    if op == Op::ListBlobs && !claims.is_store_admin() {
        return Err(refused(
            "list_blobs",
            StatusCode::FORBIDDEN,
            "listing every blob takes an admin token for every room (`*`); a room's token \
             reads blobs by their hash"
                .into(),
        ));
    }
    Ok(())
}

fn refusal_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Missing => "this server requires an access token \
            (`Authorization: Bearer <token>` or the `token` query parameter)"
            .into(),
        other => other.to_string(),
    }
}

/// A short random id that ties a generic `5xx` answer to its logged detail.
fn error_id() -> String {
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut raw = [0u8; 6];
    if getrandom::fill(&mut raw).is_err() {
        let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        raw.copy_from_slice(&n.to_be_bytes()[2..]);
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A failure of the server: the detail (which may name the server's files) is logged under a
/// new error id, and the answer says only `public` (never a path), the `kind` and that id.
fn failure(
    status: StatusCode,
    kind: &'static str,
    public: &str,
    detail: &dyn std::fmt::Display,
) -> Refused {
    let id = error_id();
    tracing::error!(error_id = %id, kind, "store API: {public}: {detail}");
    refuse(status, format!("{public} ({kind}; error id {id})"))
}

/// The answer for a store error.
fn store_error(error: StoreError) -> Refused {
    let status = match &error {
        StoreError::InvalidKey { .. } | StoreError::HashMismatch { .. } => StatusCode::BAD_REQUEST,
        StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::PreconditionFailed { current, .. } => {
            let mut response = (StatusCode::PRECONDITION_FAILED, error.to_string()).into_response();
            if let Some(value) = current
                .as_ref()
                .and_then(|etag| HeaderValue::from_str(&etag.to_header()).ok())
            {
                response.headers_mut().insert(header::ETAG, value);
            }
            return response.into();
        }
        StoreError::Unavailable { .. } => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is unavailable now; try again later",
                &error,
            )
        }
        StoreError::Forbidden { .. } => StatusCode::FORBIDDEN,
        // RFC 4918 §11.5: the server cannot store what is needed to complete the request.
        StoreError::Full { .. } => {
            return failure(
                StatusCode::INSUFFICIENT_STORAGE,
                "full",
                "the store is full",
                &error,
            )
        }
        StoreError::Backend { .. } => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backend",
                "the store failed",
                &error,
            )
        }
    };
    refuse(status, error.to_string())
}

/// Reads the body, refusing it (413) as soon as it passes `limit` bytes: at once when its
/// `Content-Length` says so, else (chunked) when the bytes received pass it, without reading
/// the rest. What is held never exceeds `limit` bytes (the buffer grows by doubling, capped at
/// the limit, and at first by at most 64 KiB whatever the body declares).
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, Refused> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(size) = declared.filter(|size| *size > limit) {
        return Err(store_error(StoreError::TooLarge { size, limit }));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let first = declared.map_or(0, |d| usize::try_from(d).unwrap_or(cap));
    let mut out: Vec<u8> = Vec::with_capacity(first.min(cap).min(64 << 10));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        let size = out.len().saturating_add(chunk.len());
        if size as u64 > limit {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over the limit of {limit} bytes (cut off at {size} bytes \
                     received; the rest was not read)"
                ),
            ));
        }
        if size > out.capacity() {
            let grown = out.capacity().saturating_mul(2).clamp(size, cap);
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

fn json_body(status: StatusCode, headers: HeaderMap, value: &serde_json::Value) -> Response {
    let mut headers = headers;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, headers, value.to_string()).into_response()
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The meta headers of a stored answer (see the module docs).
fn meta_headers(meta: &Meta, cache_control: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    set(&mut h, header::ETAG, &meta.etag.to_header());
    set(&mut h, header::CACHE_CONTROL, cache_control);
    set(
        &mut h,
        HeaderName::from_static(SIZE_HEADER),
        &meta.size.to_string(),
    );
    set(
        &mut h,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(meta.modified_at),
    );
    set(
        &mut h,
        HeaderName::from_static(MODIFIED_MS_HEADER),
        &ms(meta.modified_at).to_string(),
    );
    if let Some(at) = meta.expires_at {
        set(&mut h, header::EXPIRES, &httpdate::fmt_http_date(at));
        set(
            &mut h,
            HeaderName::from_static(EXPIRES_MS_HEADER),
            &ms(at).to_string(),
        );
    }
    if let Some(ct) = &meta.content_type {
        set(&mut h, header::CONTENT_TYPE, ct);
    }
    h
}

/// The ETags of an `If-None-Match` / `If-Match` header: `None` for `*`.
fn etags(value: &str) -> Option<Vec<ETag>> {
    if value.trim() == "*" {
        return None;
    }
    Some(
        value
            .split(',')
            .map(|t| {
                let t = t.trim();
                let t = t.strip_prefix("W/").unwrap_or(t);
                ETag::from_raw(t.trim_matches('"'))
            })
            .collect(),
    )
}

fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Refused> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("header {name} is not text"),
                )
            })
        })
        .transpose()
}

/// What a read found: the meta, and the body (empty for HEAD).
type Found = Option<(Meta, Bytes)>;

/// Looks `key` up in `tier`: its meta only for HEAD.
async fn lookup(tier: &dyn Tier, key: &Key, method: &Method) -> Result<Found, Refused> {
    let found = if *method == Method::HEAD {
        tier.head(key).await.map(|m| m.map(|m| (m, Bytes::new())))
    } else {
        tier.get(key).await.map(|e| e.map(|e| (e.meta, e.body)))
    };
    found.map_err(store_error)
}

/// Answers a read: 304 when `If-None-Match` names the current ETag (or is `*`), a header-only
/// answer for HEAD, or the body.
async fn read(
    tier: &dyn Tier,
    key: &Key,
    headers: &HeaderMap,
    method: Method,
    cache_control: &str,
) -> Answer {
    let found = lookup(tier, key, &method).await?;
    answer(found, key, headers, &method, cache_control)
}

/// The answer to a read that found `found` (see [`read`]).
fn answer(
    found: Found,
    key: &Key,
    headers: &HeaderMap,
    method: &Method,
    cache_control: &str,
) -> Answer {
    let Some((meta, body)) = found else {
        return Err(refuse(StatusCode::NOT_FOUND, format!("{key} not found")));
    };
    let not_modified = match header_text(headers, &header::IF_NONE_MATCH)? {
        None => false,
        Some(v) => etags(v).is_none_or(|tags| tags.contains(&meta.etag)),
    };
    let out = meta_headers(&meta, cache_control);
    Ok(if not_modified {
        (StatusCode::NOT_MODIFIED, out).into_response()
    } else if *method == Method::HEAD {
        (StatusCode::OK, out).into_response()
    } else {
        // A plain `Body`: `Bytes` would add `Content-Type: application/octet-stream` to an
        // entry that was stored without one.
        (StatusCode::OK, out, Body::from(body)).into_response()
    })
}

/// Whether the object store escapes `byte` in a key segment (as `%XX`): `object_store`'s
/// path-part encoding (bytes outside ASCII, controls, and the characters listed in the module
/// docs).
fn escaped(byte: u8) -> bool {
    !byte.is_ascii() || byte.is_ascii_control() || b"/\\{^}%`]\">[~<#|*?".contains(&byte)
}

/// The bytes `text` takes once the object store has escaped it.
fn stored_len(text: &str) -> usize {
    text.bytes().map(|b| if escaped(b) { 3 } else { 1 }).sum()
}

/// Checks that the key segments in `key` (a key, or a list prefix) and the whole key fit every
/// backend (see [`MAX_STORED_SEGMENT_BYTES`], [`MAX_STORED_KEY_BYTES`]).
fn check_stored_size(namespace: &str, key: &str) -> Result<(), Refused> {
    let invalid = |reason| {
        store_error(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key
        .split('/')
        .any(|segment| stored_len(segment) > MAX_STORED_SEGMENT_BYTES)
    {
        return Err(invalid(
            "a key segment has at most 250 bytes as stored (a byte outside printable ASCII, \
             or one of \\ { } ^ % ` [ ] \" < > ~ # | * ?, takes 3)",
        ));
    }
    if namespace.len() + 1 + stored_len(key) > MAX_STORED_KEY_BYTES {
        return Err(invalid(
            "a namespace and key have at most 900 bytes together as stored (a byte outside \
             printable ASCII, or one of \\ { } ^ % ` [ ] \" < > ~ # | * ?, takes 3)",
        ));
    }
    Ok(())
}

fn kv_key(namespace: String, key: String) -> Result<Key, Refused> {
    let key = KvKey::new(namespace, key).map_err(store_error)?;
    check_stored_size(key.namespace(), key.key())?;
    Ok(Key::Kv(key))
}

async fn put_blob(
    State(inner): State<Arc<Inner>>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    authorize(&inner, &headers, &params, None, Op::Write)?;
    let tier = backend(&inner)?;
    let content_type = header_text(&headers, &header::CONTENT_TYPE)?.map(str::to_owned);
    let body = read_body(&headers, body, inner.config.store.max_blob_bytes).await?;
    let hash = BlobHash::of(&body);
    let options = PutOptions {
        content_type,
        ..Default::default()
    };
    let meta = tier
        .put(&Key::Blob(hash), body, options)
        .await
        .map_err(store_error)?;
    let mut out = meta_headers(&meta, IMMUTABLE);
    set(&mut out, header::LOCATION, &format!("/v1/blobs/{hash}"));
    // The stored content type: a blob written again keeps its first one, and the JSON body's own
    // Content-Type hides the meta header.
    let json = serde_json::json!({
        "hash": hash.to_string(),
        "size": meta.size,
        "content_type": meta.content_type,
    });
    Ok(json_body(StatusCode::CREATED, out, &json))
}

async fn list_blobs(
    State(inner): State<Arc<Inner>>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    authorize(&inner, &headers, &params, None, Op::ListBlobs)?;
    let listed = backend(&inner)?
        .list(&Prefix::Blobs)
        .await
        .map_err(store_error)?;
    let blobs: Vec<_> = listed
        .iter()
        .map(|l| {
            serde_json::json!({
                "hash": l.key.to_string(),
                "size": l.meta.size,
                "etag": l.meta.etag.as_str(),
                "content_type": l.meta.content_type,
                "modified_at_ms": ms(l.meta.modified_at),
            })
        })
        .collect();
    Ok(json_body(
        StatusCode::OK,
        HeaderMap::new(),
        &serde_json::json!({ "blobs": blobs }),
    ))
}

async fn get_blob(
    State(inner): State<Arc<Inner>>,
    Path(hash): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    blob_read(&inner, &hash, &params, &headers, Method::GET).await
}

async fn head_blob(
    State(inner): State<Arc<Inner>>,
    Path(hash): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    blob_read(&inner, &hash, &params, &headers, Method::HEAD).await
}

async fn blob_read(
    inner: &Inner,
    hash: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    method: Method,
) -> Answer {
    authorize(inner, headers, params, None, Op::Read)?;
    let tier = backend(inner)?;
    let key = hash
        .parse::<BlobHash>()
        .map(Key::Blob)
        .map_err(store_error)?;
    read(tier.as_ref(), &key, headers, method, IMMUTABLE).await
}

async fn get_kv(
    State(inner): State<Arc<Inner>>,
    Path((namespace, key)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    kv_read(&inner, namespace, key, &params, &headers, Method::GET).await
}

async fn head_kv(
    State(inner): State<Arc<Inner>>,
    Path((namespace, key)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    kv_read(&inner, namespace, key, &params, &headers, Method::HEAD).await
}

async fn kv_read(
    inner: &Inner,
    namespace: String,
    key: String,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    method: Method,
) -> Answer {
    authorize(inner, headers, params, Some(&namespace), Op::Read)?;
    let tier = backend(inner)?;
    let key = kv_key(namespace, key)?;
    let found = lookup(tier.as_ref(), &key, &method).await?;
    let found = match (&key, &inner.config.store.npm_fill) {
        (Key::Kv(kv), Some(fill)) if kv.namespace() == NPM_NAMESPACE && !is_fresh(&found) => {
            npm_fill(fill, tier.as_ref(), kv, &key, found).await?
        }
        _ => found,
    };
    answer(found, &key, headers, &method, "no-cache")
}

fn is_fresh(found: &Found) -> bool {
    found
        .as_ref()
        .is_some_and(|(meta, _)| !meta.is_expired_at(SystemTime::now()))
}

/// Fills `npm/<host>/<path>` from its CDN (see the module docs) after a read found `held`
/// (nothing, or an expired copy); returns what to answer.
async fn npm_fill(
    fill: &NpmFill,
    tier: &dyn Tier,
    kv: &KvKey,
    key: &Key,
    held: Found,
) -> Result<Found, Refused> {
    let (host, path) = kv.key().split_once('/').unwrap_or((kv.key(), ""));
    let Some((cdn, origin)) = fill.cdns.iter().find(|(cdn, _)| cdn.name() == host) else {
        if held.is_some() {
            return Ok(held);
        }
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "{key} not found; this server fills `{NPM_NAMESPACE}` only from {}, and not \
                 from {host:?}",
                fill.names()
            ),
        ));
    };
    let Some(url) = cdn.url_of(path).filter(|_| !path.is_empty()) else {
        return match held {
            Some(_) => Ok(held),
            None => Err(refuse(StatusCode::NOT_FOUND, format!("{key} not found"))),
        };
    };
    // One fetch per key at a time: whoever waited reads what the first one stored.
    let gate = fill.gate(kv.key());
    let _turn = gate.lock().await;
    let held = match tier.get(key).await {
        Ok(Some(entry)) if !entry.meta.is_expired_at(SystemTime::now()) => {
            return Ok(Some((entry.meta, entry.body)))
        }
        Ok(Some(expired)) => Some((expired.meta, expired.body)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(%key, error = %e, "npm fill: the store could not be read");
            held
        }
    };
    let fetched = match origin.fetch(url.as_str()).await {
        Ok(fetched) => fetched,
        Err(e) if held.is_some() => {
            tracing::info!(%key, error = %e, "npm fill: the CDN failed; serving the expired copy");
            return Ok(held);
        }
        // The CDN answered (a 404, a 403…): that is the answer, and it names no file of ours.
        Err(StoreError::Backend { source, .. }) => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("{key} not found: the CDN answered {source}"),
            ))
        }
        Err(e) => {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                "cdn",
                &format!("could not fetch {url} from the CDN"),
                &e,
            ))
        }
    };
    let options = PutOptions {
        content_type: fetched.content_type,
        ttl: fetched.ttl,
        condition: Condition::None,
    };
    let meta = match tier.put(key, fetched.body.clone(), options.clone()).await {
        Ok(meta) => meta,
        Err(e) => {
            // The module was had: answer it; the next read fetches again.
            tracing::warn!(%key, error = %e, "npm fill: could not keep the fetched module");
            Meta::for_body(&fetched.body, &options)
        }
    };
    tracing::debug!(%key, %url, size = meta.size, "npm fill: fetched from the CDN");
    Ok(Some((meta, fetched.body)))
}

/// The write condition of a request: `If-Match` or `If-None-Match: *`.
fn condition(headers: &HeaderMap) -> Result<Condition, Refused> {
    let if_match = header_text(headers, &header::IF_MATCH)?;
    let if_none = header_text(headers, &header::IF_NONE_MATCH)?;
    let bad = |m: &str| refuse(StatusCode::BAD_REQUEST, m.to_owned());
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(bad("send If-Match or If-None-Match, not both")),
        (Some(v), None) => match etags(v) {
            Some(mut tags) if tags.len() == 1 => Ok(Condition::IfMatch(tags.remove(0))),
            Some(_) => Err(bad("If-Match names exactly one ETag")),
            None => Err(bad(
                "If-Match: * is not supported; send the ETag to compare",
            )),
        },
        (None, Some(v)) if v.trim() == "*" => Ok(Condition::IfAbsent),
        (None, Some(_)) => Err(bad(
            "on a write, If-None-Match may only be `*` (create only)",
        )),
        (None, None) => Ok(Condition::None),
    }
}

fn ttl(headers: &HeaderMap) -> Result<Option<Duration>, Refused> {
    let name = HeaderName::from_static(TTL_HEADER);
    let Some(v) = header_text(headers, &name)? else {
        return Ok(None);
    };
    match v.trim().parse::<u64>() {
        Ok(secs) if (1..=MAX_TTL_SECS).contains(&secs) => Ok(Some(Duration::from_secs(secs))),
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("header Spike-TTL is {v:?}; it is whole seconds from 1 to {MAX_TTL_SECS}"),
        )),
    }
}

async fn put_kv(
    State(inner): State<Arc<Inner>>,
    Path((namespace, key)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    authorize(&inner, &headers, &params, Some(&namespace), Op::Write)?;
    let tier = backend(&inner)?;
    let key = kv_key(namespace, key)?;
    let options = PutOptions {
        content_type: header_text(&headers, &header::CONTENT_TYPE)?.map(str::to_owned),
        ttl: ttl(&headers)?,
        condition: condition(&headers)?,
    };
    let body = read_body(&headers, body, inner.config.store.max_kv_bytes).await?;
    let meta = tier.put(&key, body, options).await.map_err(store_error)?;
    let json = serde_json::json!({
        "key": key.to_string(),
        "etag": meta.etag.as_str(),
        "size": meta.size,
    });
    Ok(json_body(
        StatusCode::OK,
        meta_headers(&meta, "no-cache"),
        &json,
    ))
}

async fn delete_kv(
    State(inner): State<Arc<Inner>>,
    Path((namespace, key)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    authorize(&inner, &headers, &params, Some(&namespace), Op::Write)?;
    let tier = backend(&inner)?;
    let key = kv_key(namespace, key)?;
    let condition = match condition(&headers)? {
        Condition::IfAbsent => Condition::None,
        other => other,
    };
    match tier.delete(&key, condition).await.map_err(store_error)? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(refuse(StatusCode::NOT_FOUND, format!("{key} not found"))),
    }
}

async fn list_kv(
    State(inner): State<Arc<Inner>>,
    Path(namespace): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    authorize(&inner, &headers, &params, Some(&namespace), Op::Read)?;
    let tier = backend(&inner)?;
    let key_prefix = params.get("prefix").cloned().unwrap_or_default();
    let prefix = Prefix::kv(namespace.clone(), key_prefix.clone()).map_err(store_error)?;
    check_stored_size(&namespace, &key_prefix)?;
    let listed = tier.list(&prefix).await.map_err(store_error)?;
    let entries: Vec<_> = listed
        .iter()
        .filter_map(|l| match &l.key {
            Key::Kv(k) => Some(serde_json::json!({
                "key": k.key(),
                "size": l.meta.size,
                "etag": l.meta.etag.as_str(),
                "content_type": l.meta.content_type,
                "expires_at_ms": l.meta.expires_at.map(ms),
                "modified_at_ms": ms(l.meta.modified_at),
            })),
            Key::Blob(_) => None,
        })
        .collect();
    Ok(json_body(
        StatusCode::OK,
        HeaderMap::new(),
        &serde_json::json!({ "namespace": namespace, "entries": entries }),
    ))
}
