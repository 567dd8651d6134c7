//! The blob/KV HTTP API over the server's backing store (a [`spike_store::Tier`], by default an
//! [`spike_store::ObjectTier`] on `<data>/objects`).
//!
//! | request | answer |
//! |---|---|
//! | `PUT /v1/blobs` (body) | `201` `{"hash":"blake3:<64 hex>","size":N}`, `Location: /v1/blobs/<hash>` |
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
//! [`spike_store::BlobHash`]; a bad one is `400` with the rule it broke. Bodies over
//! [`StoreConfig::max_blob_bytes`] / [`StoreConfig::max_kv_bytes`] are `413` naming the limit.
//!
//! Access: with [`crate::Access::Tokens`] every request needs a valid token (`Authorization:
//! Bearer <JWT>` or `?token=<JWT>`). Namespace `room.<room>` needs a token covering `<room>`;
//! other namespaces and blobs take any valid token. A `view` token may `GET`/`HEAD` only (`403`
//! on writes). Refusals are logged without the token and counted in
//! `spike_auth_refusals_total{reason}` like room refusals (`view_only` for a write with a view
//! token).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use spike_store::{
    BlobHash, Condition, ETag, Key, KvKey, Meta, Prefix, PutOptions, StoreError, Tier,
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: None,
            max_blob_bytes: 64 << 20,
            max_kv_bytes: 16 << 20,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend.as_ref().map(|b| b.name()))
            .field("max_blob_bytes", &self.max_blob_bytes)
            .field("max_kv_bytes", &self.max_kv_bytes)
            .finish()
    }
}

impl StoreConfig {
    /// This configuration with its default backend filled in: an
    /// [`spike_store::ObjectTier`] on `<data_dir>/objects`.
    pub(crate) fn resolved(
        mut self,
        data_dir: &std::path::Path,
    ) -> Result<Self, spike_store::ObjectUrlError> {
        if self.backend.is_none() {
            let tier = spike_store::ObjectTier::local(&data_dir.join("objects"))?;
            self.backend = Some(Arc::new(tier));
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

/// Checks the token for a request on `namespace` (`None`: blobs); `write` for PUT/DELETE.
fn authorize(
    inner: &Inner,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    namespace: Option<&str>,
    write: bool,
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
    match verified {
        Ok(claims) if write && claims.role == Role::View => Err(refused(
            "view_only",
            StatusCode::FORBIDDEN,
            "a view token may only read (GET, HEAD)".into(),
        )),
        Ok(_) => Ok(()),
        Err(refusal) => Err(refused(
            refusal.kind(),
            refusal.status(),
            refusal_text(&refusal),
        )),
    }
}

fn refusal_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Missing => "this server requires an access token \
            (`Authorization: Bearer <token>` or the `token` query parameter)"
            .into(),
        other => other.to_string(),
    }
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
        StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Forbidden { .. } => StatusCode::FORBIDDEN,
        // RFC 4918 §11.5: the server cannot store what is needed to complete the request.
        StoreError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::Backend { .. } => {
            tracing::error!("store backend failed: {error}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    refuse(status, error.to_string())
}

/// Reads the body, refusing it (413) past `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, Refused> {
    let too_large = |size: u64| store_error(StoreError::TooLarge { size, limit });
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|size| *size > limit) {
        return Err(too_large(size));
    }
    let mut out = BytesMut::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        let size = (out.len() + chunk.len()) as u64;
        if size > limit {
            return Err(too_large(size));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
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

/// Answers a read: 304 when `If-None-Match` names the current ETag (or is `*`), a header-only
/// answer for HEAD, or the body.
async fn read(
    tier: &dyn Tier,
    key: &Key,
    headers: &HeaderMap,
    method: Method,
    cache_control: &str,
) -> Answer {
    let found = if method == Method::HEAD {
        tier.head(key).await.map(|m| m.map(|m| (m, Bytes::new())))
    } else {
        tier.get(key).await.map(|e| e.map(|e| (e.meta, e.body)))
    };
    let Some((meta, body)) = found.map_err(store_error)? else {
        return Err(refuse(StatusCode::NOT_FOUND, format!("{key} not found")));
    };
    let not_modified = match header_text(headers, &header::IF_NONE_MATCH)? {
        None => false,
        Some(v) => etags(v).is_none_or(|tags| tags.contains(&meta.etag)),
    };
    let out = meta_headers(&meta, cache_control);
    Ok(if not_modified {
        (StatusCode::NOT_MODIFIED, out).into_response()
    } else if method == Method::HEAD {
        (StatusCode::OK, out).into_response()
    } else {
        // A plain `Body`: `Bytes` would add `Content-Type: application/octet-stream` to an
        // entry that was stored without one.
        (StatusCode::OK, out, Body::from(body)).into_response()
    })
}

fn kv_key(namespace: String, key: String) -> Result<Key, Refused> {
    KvKey::new(namespace, key).map(Key::Kv).map_err(store_error)
}

async fn put_blob(
    State(inner): State<Arc<Inner>>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    authorize(&inner, &headers, &params, None, true)?;
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
    let json = serde_json::json!({ "hash": hash.to_string(), "size": meta.size });
    Ok(json_body(StatusCode::CREATED, out, &json))
}

async fn list_blobs(
    State(inner): State<Arc<Inner>>,
    Query(params): Params,
    headers: HeaderMap,
) -> Answer {
    authorize(&inner, &headers, &params, None, false)?;
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
    authorize(inner, headers, params, None, false)?;
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
    authorize(inner, headers, params, Some(&namespace), false)?;
    let tier = backend(inner)?;
    let key = kv_key(namespace, key)?;
    read(tier.as_ref(), &key, headers, method, "no-cache").await
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
    authorize(&inner, &headers, &params, Some(&namespace), true)?;
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
    authorize(&inner, &headers, &params, Some(&namespace), true)?;
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
    authorize(&inner, &headers, &params, Some(&namespace), false)?;
    let tier = backend(&inner)?;
    let key_prefix = params.get("prefix").cloned().unwrap_or_default();
    let prefix = Prefix::kv(namespace.clone(), key_prefix).map_err(store_error)?;
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
