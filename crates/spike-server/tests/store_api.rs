//! The blob/KV HTTP API over real sockets on loopback, on both backends: the default local
//! folder and S3 (a real moto_server). Tokens, limits and path validation on the local one; the
//! shared namespaces kept to the server, which fills `npm` from a CDN on loopback.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::StatusCode;
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::{Access, Server, ServerConfig};
use spike_store::conformance::Moto;
use spike_store::BlobHash;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A server on a loopback port with its data folder; shut down when dropped.
struct Started {
    base: String,
    addr: std::net::SocketAddr,
    _running: spike_server::Running,
    _data: tempfile::TempDir,
}

async fn start(
    configure: impl FnOnce(&mut ServerConfig),
) -> Result<Started, Box<dyn std::error::Error>> {
    let data = tempfile::tempdir()?;
    let mut config = ServerConfig::new(data.path());
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = Server::new(config)?.spawn(listener)?;
    Ok(Started {
        base: running.http_url(),
        addr: running.addr(),
        _running: running,
        _data: data,
    })
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The API's behaviour, the same on every backend.
async fn scenario(base: &str) -> TestResult {
    let http = client();
    // Blobs: PUT answers the hash, GET serves it immutable with its ETag, 304 on a match.
    let body = b"console.log('hi')\n".to_vec();
    let hash = BlobHash::of(&body);
    let put = http
        .put(format!("{base}/v1/blobs"))
        .header(CONTENT_TYPE, "text/javascript")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(header(&put, "location"), format!("/v1/blobs/{hash}"));
    let json: serde_json::Value = put.json().await?;
    assert_eq!(
        json,
        serde_json::json!({
            "hash": hash.to_string(),
            "size": body.len(),
            "content_type": "text/javascript"
        })
    );
    let get = http.get(format!("{base}/v1/blobs/{hash}")).send().await?;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        header(&get, CACHE_CONTROL.as_str()),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&get, CONTENT_TYPE.as_str()), "text/javascript");
    let etag = header(&get, ETAG.as_str()).to_owned();
    assert_eq!(etag, format!("\"{}\"", &hash.to_hex()[..32]));
    assert_eq!(get.bytes().await?.to_vec(), body);
    let again = http
        .get(format!("{base}/v1/blobs/{hash}"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let head = http.head(format!("{base}/v1/blobs/{hash}")).send().await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "spike-size"), body.len().to_string());
    assert!(head.bytes().await?.is_empty());
    // Past axum's default 2 MB extractor limit: the API's own limit (64 MiB) is the one applied.
    let large: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let put = http
        .put(format!("{base}/v1/blobs"))
        .body(large.clone())
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::CREATED);
    let large_hash = BlobHash::of(&large);
    let got = http
        .get(format!("{base}/v1/blobs/{large_hash}"))
        .send()
        .await?;
    assert_eq!(got.bytes().await?.to_vec(), large);

    let missing = BlobHash::of(b"never stored");
    let get = http
        .get(format!("{base}/v1/blobs/{missing}"))
        .send()
        .await?;
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    let bad = http
        .get(format!("{base}/v1/blobs/sha256:00"))
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad
        .text()
        .await?
        .contains("a blob hash starts with `blake3:`"));

    // KV: content type and TTL kept, ETags for revalidation and compare-and-set.
    let url = format!("{base}/v1/kv/npm/esm.sh/react@19.1.0/index.js");
    let put = http
        .put(&url)
        .header(CONTENT_TYPE, "text/javascript; charset=utf-8")
        .header("spike-ttl", "3600")
        .body("export default 1")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::OK);
    let v1 = header(&put, ETAG.as_str()).to_owned();
    let json: serde_json::Value = put.json().await?;
    assert_eq!(json["size"], 16);
    assert_eq!(json["key"], "npm/esm.sh/react@19.1.0/index.js");
    let get = http.get(&url).send().await?;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        header(&get, CONTENT_TYPE.as_str()),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&get, ETAG.as_str()), v1);
    let expires = httpdate::parse_http_date(header(&get, "expires"))?;
    let in_an_hour = std::time::SystemTime::now() + Duration::from_secs(3600);
    assert!(
        expires <= in_an_hour && expires + Duration::from_secs(10) > in_an_hour,
        "Expires is about an hour away"
    );
    assert_eq!(get.text().await?, "export default 1");
    let cached = http.get(&url).header(IF_NONE_MATCH, &v1).send().await?;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    let create = http
        .put(&url)
        .header(IF_NONE_MATCH, "*")
        .body("other")
        .send()
        .await?;
    assert_eq!(create.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&create, ETAG.as_str()), v1);
    let stale = http
        .put(&url)
        .header(IF_MATCH, "\"0123456789abcdef0123456789abcdef\"")
        .body("other")
        .send()
        .await?;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&stale, ETAG.as_str()), v1);
    let cas = http
        .put(&url)
        .header(IF_MATCH, &v1)
        .body("export default 2")
        .send()
        .await?;
    assert_eq!(cas.status(), StatusCode::OK);
    let v2 = header(&cas, ETAG.as_str()).to_owned();
    assert_ne!(v1, v2);
    let get = http.get(&url).header(IF_NONE_MATCH, &v1).send().await?;
    assert_eq!(
        get.status(),
        StatusCode::OK,
        "an old ETag gets the new body"
    );
    assert_eq!(get.text().await?, "export default 2");

    for key in ["esm.sh/a.js", "esm.sh/b/c.js", "other.js"] {
        let put = http
            .put(format!("{base}/v1/kv/npm/{key}"))
            .body(key)
            .send()
            .await?;
        assert_eq!(put.status(), StatusCode::OK);
    }
    let list: serde_json::Value = http
        .get(format!("{base}/v1/kv/npm?prefix=esm.sh/"))
        .send()
        .await?
        .json()
        .await?;
    let keys: Vec<&str> = list["entries"]
        .as_array()
        .ok_or("entries")?
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "esm.sh/a.js",
            "esm.sh/b/c.js",
            "esm.sh/react@19.1.0/index.js"
        ]
    );

    let delete = http.delete(&url).header(IF_MATCH, &v1).send().await?;
    assert_eq!(delete.status(), StatusCode::PRECONDITION_FAILED);
    let delete = http.delete(&url).header(IF_MATCH, &v2).send().await?;
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert_eq!(http.get(&url).send().await?.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        http.delete(&url).send().await?.status(),
        StatusCode::NOT_FOUND
    );

    let ttl = http
        .put(format!("{base}/v1/kv/npm/x"))
        .header("spike-ttl", "soon")
        .body("x")
        .send()
        .await?;
    assert_eq!(ttl.status(), StatusCode::BAD_REQUEST);
    assert!(ttl.text().await?.contains("Spike-TTL"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_on_the_local_folder() -> TestResult {
    let server = start(|_| {}).await?;
    scenario(&server.base).await?;
    assert!(
        server
            ._data
            .path()
            .join("objects/kv/npm/esm.sh/a.js~")
            .is_file(),
        "the default backend is <data>/objects"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_on_s3() -> TestResult {
    // Never skipped: if moto cannot be installed or started this fails with the reason.
    let moto = Moto::start()?;
    let tier = moto.tier("spike", "server").await?;
    let server = start(|c| c.store.backend = Some(std::sync::Arc::new(tier))).await?;
    scenario(&server.base).await?;
    // The objects are in the bucket, under the prefix.
    let raw = spike_store::ObjectTier::s3(moto.s3("spike")?, "server", "check");
    let key = spike_store::Key::kv("npm", "esm.sh/a.js")?;
    let entry = spike_store::Tier::get(&raw, &key).await?.ok_or("in S3")?;
    assert_eq!(&entry.body[..], b"esm.sh/a.js");
    Ok(())
}

/// Sends `request` as raw bytes (so that no client normalizes the path) and returns the status
/// line and body.
async fn raw(
    addr: std::net::SocketAddr,
    request: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_refuses_bad_paths_and_large_bodies() -> TestResult {
    let server = start(|c| {
        c.store.max_kv_bytes = 16;
        c.store.max_blob_bytes = 32;
    })
    .await?;
    for (path, rule) in [
        ("/v1/kv/npm/a/../../etc/passwd", "no `.` or `..` segment"),
        ("/v1/kv/npm/a/%2E%2E/b", "no `.` or `..` segment"),
        ("/v1/kv/npm/a//b", "no empty segment"),
        ("/v1/kv/npm/a%5Cb", "no backslash"),
        ("/v1/kv/NPM/a", "a namespace starts with a-z or 0-9"),
        ("/v1/kv/npm/%2Fabs", "a key is relative"),
    ] {
        let answer = raw(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
        .await?;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains(rule),
            "{path} names the rule {rule:?}: {answer}"
        );
    }
    let http = client();
    let big = http
        .put(format!("{}/v1/kv/npm/big", server.base))
        .body(vec![b'x'; 17])
        .send()
        .await?;
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(big.text().await?.contains("over the limit of 16 bytes"));
    let fits = http
        .put(format!("{}/v1/kv/npm/big", server.base))
        .body(vec![b'x'; 16])
        .send()
        .await?;
    assert_eq!(fits.status(), StatusCode::OK);
    // A chunked body declares no length: it is cut off at the limit all the same.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'y'; 10]))),
    );
    let streamed = http
        .put(format!("{}/v1/blobs", server.base))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(streamed.text().await?.contains("limit of 32 bytes"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_needs_tokens_and_keeps_view_tokens_read_only() -> TestResult {
    let key = TokenKey::new(&Secret::new(vec![9u8; 32])?);
    let server = start(|c| c.access = Access::Tokens(key.clone())).await?;
    let base = &server.base;
    let http = client();
    let issue = |room: &str, role| key.issue(&Claims::new(room, role, Duration::from_secs(600)));
    let edit_any = issue("*", Role::Edit)?;
    let edit_a = issue("team-a", Role::Edit)?;
    let view_a = issue("team-a", Role::View)?;
    let forged = TokenKey::new(&Secret::new(vec![1u8; 32])?).issue(&Claims::new(
        "*",
        Role::Edit,
        Duration::from_secs(600),
    ))?;

    let none = http.get(format!("{base}/v1/kv/npm/a")).send().await?;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.text().await?.contains("requires an access token"));
    let bad = http
        .get(format!("{base}/v1/kv/npm/a"))
        .bearer_auth(&forged)
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.text().await?.contains("signature is invalid"));

    // Any edit token puts blobs; tokens go by header or query parameter.
    let put = http
        .put(format!("{base}/v1/blobs"))
        .bearer_auth(&edit_a)
        .body("shared")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::CREATED);
    // This PUT was to `npm/a`, which any token could write: the hole closed by making shared
    // namespaces the server's (see the shared-namespace test). The query parameter is still
    // taken, here for the token's own room.
    let put = http
        .put(format!("{base}/v1/kv/room.team-a/a?token={edit_a}"))
        .body("x")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::OK);
    let put = http
        .put(format!("{base}/v1/kv/npm/a?token={edit_a}"))
        .body("x")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::FORBIDDEN);

    // room.<room> needs a token for that room.
    let room_url = format!("{base}/v1/kv/room.team-a/assets/logo.svg");
    let other_room = issue("team-b", Role::Edit)?;
    let wrong = http
        .put(&room_url)
        .bearer_auth(&other_room)
        .body("<svg/>")
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(wrong.text().await?.contains("team-a"));
    let right = http
        .put(&room_url)
        .bearer_auth(&edit_a)
        .body("<svg/>")
        .send()
        .await?;
    assert_eq!(right.status(), StatusCode::OK);
    let star = http.get(&room_url).bearer_auth(&edit_any).send().await?;
    assert_eq!(star.status(), StatusCode::OK);

    // A view token reads and never writes.
    let read = http.get(&room_url).bearer_auth(&view_a).send().await?;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.text().await?, "<svg/>");
    for request in [
        http.put(&room_url).body("defaced"),
        http.delete(&room_url),
        http.put(format!("{base}/v1/blobs")).body("y"),
    ] {
        let refused = request.bearer_auth(&view_a).send().await?;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.text().await?.contains("view token may only read"));
    }
    let after = http.get(&room_url).bearer_auth(&edit_a).send().await?;
    assert_eq!(after.text().await?, "<svg/>");
    Ok(())
}

fn hex_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_keeps_shared_namespaces_and_the_blob_list_to_the_server() -> TestResult {
    let key = TokenKey::new(&Secret::new(vec![5u8; 32])?);
    let server = start(|c| c.access = Access::Tokens(key.clone())).await?;
    let base = &server.base;
    let http = client();
    let issue = |room: &str, role| key.issue(&Claims::new(room, role, Duration::from_secs(600)));
    let edit_a = issue("team-a", Role::Edit)?;
    let view_a = issue("team-a", Role::View)?;
    let edit_all = issue("*", Role::Edit)?;
    let admin_a = issue("team-a", Role::Admin)?;
    let admin = issue("*", Role::Admin)?;
    let refusals =
        |reason: &str| common::metric(&format!("spike_auth_refusals_total{{reason=\"{reason}\"}}"));
    let (shared_before, list_before) = (refusals("shared_namespace"), refusals("list_blobs"));

    // The desktop's shared CDN cache: a room's editor must not plant code in it.
    let module = format!("{base}/v1/kv/npm/esm.sh/react@19.1.0/index.js");
    for (token, role, room) in [
        (&edit_a, "edit", "team-a"),
        (&edit_all, "edit", "*"),
        (&admin_a, "admin", "team-a"),
    ] {
        for request in [
            http.put(&module).body("alert('pwned')"),
            http.delete(&module),
        ] {
            let refused = request.bearer_auth(token).send().await?;
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                refused.text().await?,
                format!(
                    "namespace \"npm\" is shared by every room: only the server itself and an \
                     admin token for every room (`*`) write it, not this {role} token for room \
                     {room:?}; a room's own entries go under namespace `room.<room>`"
                )
            );
        }
    }
    let view = http
        .put(&module)
        .bearer_auth(&view_a)
        .body("x")
        .send()
        .await?;
    assert_eq!(view.status(), StatusCode::FORBIDDEN);
    assert_eq!(view.text().await?, "a view token may only read (GET, HEAD)");
    assert_eq!(
        http.get(&module)
            .bearer_auth(&edit_a)
            .send()
            .await?
            .status(),
        StatusCode::NOT_FOUND,
        "nothing was written"
    );

    // Every blob of every room is listed for the server's admin only; blobs are still put and
    // read by hash with a room's token.
    let put = http
        .put(format!("{base}/v1/blobs"))
        .bearer_auth(&edit_a)
        .body("logo")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::CREATED);
    let hash = BlobHash::of(b"logo");
    let got = http
        .get(format!("{base}/v1/blobs/{hash}"))
        .bearer_auth(&view_a)
        .send()
        .await?;
    assert_eq!(got.status(), StatusCode::OK);
    for token in [&edit_a, &view_a, &edit_all, &admin_a] {
        let list = http
            .get(format!("{base}/v1/blobs"))
            .bearer_auth(token)
            .send()
            .await?;
        assert_eq!(list.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            list.text().await?,
            "listing every blob takes an admin token for every room (`*`); a room's token \
             reads blobs by their hash"
        );
    }
    assert!(refusals("shared_namespace") - shared_before >= 6.0);
    assert!(refusals("list_blobs") - list_before >= 4.0);

    // The admin token for every room writes shared namespaces and lists blobs; room tokens read.
    let put = http
        .put(&module)
        .bearer_auth(&admin)
        .body("export default 1")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::OK);
    let read = http.get(&module).bearer_auth(&view_a).send().await?;
    assert_eq!(read.text().await?, "export default 1");
    let list = http
        .get(format!("{base}/v1/kv/npm?prefix=esm.sh/"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(list.status(), StatusCode::OK);
    let list = http
        .get(format!("{base}/v1/blobs"))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(list.status(), StatusCode::OK);
    let json: serde_json::Value = list.json().await?;
    assert_eq!(json["blobs"][0]["hash"], hash.to_string());
    let delete = http.delete(&module).bearer_auth(&admin).send().await?;
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);

    // A room's namespace is listed only with a token for that room.
    let other = http
        .get(format!("{base}/v1/kv/room.team-b"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        other.text().await?,
        "the access token is for room \"team-a\", not \"team-b\""
    );
    let own = http
        .get(format!("{base}/v1/kv/room.team-a"))
        .bearer_auth(&view_a)
        .send()
        .await?;
    assert_eq!(own.status(), StatusCode::OK);
    Ok(())
}

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// An ESM CDN in miniature on loopback, counting requests per path: `/m@1.0.0/index.js`
/// (immutable), `/slow.js` (after 300 ms), `/short.js` (fresh for 1 s, then the CDN fails),
/// anything else 404.
async fn cdn() -> Result<(String, Hits, tokio::task::JoinHandle<()>), Box<dyn std::error::Error>> {
    use axum::response::IntoResponse as _;
    let hits = Hits::default();
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let counter = counter.clone();
        async move {
            let path = uri.path().to_owned();
            let n = {
                let mut hits = counter.lock().unwrap_or_else(PoisonError::into_inner);
                let n = hits.entry(path.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let js = "application/javascript; charset=utf-8";
            match path.as_str() {
                "/m@1.0.0/index.js" => (
                    [
                        ("content-type", js),
                        ("cache-control", "public, max-age=31536000, immutable"),
                    ],
                    "export default 'm';\n",
                )
                    .into_response(),
                "/slow.js" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    (
                        [("cache-control", "max-age=3600")],
                        "export const slow = 1;\n",
                    )
                        .into_response()
                }
                "/short.js" if n == 1 => {
                    ([("cache-control", "max-age=1")], "export const v = 1;\n").into_response()
                }
                "/short.js" => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
                _ => (StatusCode::NOT_FOUND, format!("no module at {path}")).into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, hits, task))
}

fn hits_of(hits: &Hits, path: &str) -> usize {
    hits.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_fills_npm_from_allow_listed_cdns_only() -> TestResult {
    let (cdn_base, hits, _cdn) = cdn().await?;
    // A CDN that is down: a port nothing listens on.
    let down = format!("http://127.0.0.1:{}", common::free_port());
    let key = TokenKey::new(&Secret::new(vec![6u8; 32])?);
    let server = start(|c| {
        c.access = Access::Tokens(key.clone());
        c.store.npm_cdns = vec![
            cdn_base.parse().expect("the CDN's URL"),
            down.parse().expect("the down CDN's URL"),
        ];
    })
    .await?;
    let base = &server.base;
    let http = client();
    let edit_a = key.issue(&Claims::new("team-a", Role::Edit, Duration::from_secs(600)))?;
    let host = cdn_base.trim_start_matches("http://");
    let npm = |path: &str| format!("{base}/v1/kv/npm/{host}{path}");

    // A miss: the server fetches it from the CDN, keeps it, answers it.
    let first = http
        .get(npm("/m@1.0.0/index.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        header(&first, CONTENT_TYPE.as_str()),
        "application/javascript; charset=utf-8"
    );
    let etag = header(&first, ETAG.as_str()).to_owned();
    assert_eq!(first.text().await?, "export default 'm';\n");
    assert_eq!(hits_of(&hits, "/m@1.0.0/index.js"), 1);
    // Then from the store: GET, HEAD and a revalidation never reach the CDN again.
    let second = http
        .get(npm("/m@1.0.0/index.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header(&second, ETAG.as_str()), etag);
    assert_eq!(second.text().await?, "export default 'm';\n");
    let head = http
        .head(npm("/m@1.0.0/index.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(head.status(), StatusCode::OK);
    let revalidated = http
        .get(npm("/m@1.0.0/index.js"))
        .header(IF_NONE_MATCH, &etag)
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(hits_of(&hits, "/m@1.0.0/index.js"), 1);
    assert!(server
        ._data
        .path()
        .join(format!("objects/kv/npm/{host}/m@1.0.0/index.js~"))
        .is_file());

    // Concurrent misses on one module fetch it once.
    let reads = (0..4).map(|_| {
        let request = http.get(npm("/slow.js")).bearer_auth(&edit_a);
        async move {
            let answer = request.send().await?;
            Ok::<_, reqwest::Error>((answer.status(), answer.text().await?))
        }
    });
    for answer in futures_util::future::join_all(reads).await {
        assert_eq!(
            answer?,
            (StatusCode::OK, "export const slow = 1;\n".to_owned())
        );
    }
    assert_eq!(hits_of(&hits, "/slow.js"), 1);

    // A host that is not allow-listed is never fetched: a miss (404) naming the allow-list, so
    // that the desktop fetches the module itself; a 403 would fail its import instead.
    for (key, host_named) in [
        ("esm.sh/react@19.1.0", "esm.sh"),
        ("127.0.0.2/m@1.0.0/index.js", "127.0.0.2"),
        ("evil.example/x.js", "evil.example"),
    ] {
        let miss = http
            .get(format!("{base}/v1/kv/npm/{key}"))
            .bearer_auth(&edit_a)
            .send()
            .await?;
        assert_eq!(miss.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            miss.text().await?,
            format!(
                "npm/{key} not found; this server fills `npm` only from {cdn_base}, {down}, \
                 and not from {host_named:?}"
            )
        );
    }
    let total: usize = hits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .sum();
    assert_eq!(total, 2, "only the two allow-listed modules were fetched");

    // The CDN's own 404 is the answer, and nothing is kept.
    let gone = http
        .get(npm("/gone.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        gone.text().await?,
        format!(
            "npm/{host}/gone.js not found: the CDN answered 404 Not Found from \
             {cdn_base}/gone.js: no module at /gone.js"
        )
    );

    // Expired: fetched again; the CDN failing, the expired copy is served as it was stored.
    let short = http
        .get(npm("/short.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(short.text().await?, "export const v = 1;\n");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = http
        .get(npm("/short.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.text().await?, "export const v = 1;\n");
    assert!(hits_of(&hits, "/short.js") >= 2, "it was fetched again");

    // A CDN that cannot be reached: 502, a generic text with an error id.
    let down_host = down.trim_start_matches("http://");
    let unreachable = http
        .get(format!("{base}/v1/kv/npm/{down_host}/x.js"))
        .bearer_auth(&edit_a)
        .send()
        .await?;
    assert_eq!(unreachable.status(), StatusCode::BAD_GATEWAY);
    let text = unreachable.text().await?;
    let id = text
        .strip_prefix(&format!(
            "could not fetch {down}/x.js from the CDN (cdn; error id "
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("unexpected 502 text {text:?}"))?;
    assert!(hex_id(id), "{text}");

    // The fill is the server's: room tokens still cannot write there.
    let planted = http
        .put(npm("/m@1.0.0/index.js"))
        .bearer_auth(&edit_a)
        .body("alert(1)")
        .send()
        .await?;
    assert_eq!(planted.status(), StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_cuts_chunked_bodies_off_at_the_limit() -> TestResult {
    let server = start(|c| {
        c.store.max_blob_bytes = 4096;
        c.store.max_kv_bytes = 1024;
    })
    .await?;
    let http = client();
    // An endless chunked body, 1 KiB every 10 ms: the answer must come at the limit.
    for (url, limit) in [
        (format!("{}/v1/blobs", server.base), 4096),
        (format!("{}/v1/kv/npm/endless", server.base), 1024),
    ] {
        let endless = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'z'; 1024])),
                (),
            ))
        });
        let answer = tokio::time::timeout(
            common::T,
            http.put(&url)
                .body(reqwest::Body::wrap_stream(endless))
                .send(),
        )
        .await??;
        assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let text = answer.text().await?;
        let received: usize = text
            .strip_prefix(&format!(
                "the body is over the limit of {limit} bytes (cut off at "
            ))
            .and_then(|rest| rest.strip_suffix(" bytes received; the rest was not read)"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected 413 text {text:?}"))?;
        assert!(received > limit && received <= limit + 1024, "{text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_refuses_keys_the_backend_cannot_hold_with_400() -> TestResult {
    let server = start(|_| {}).await?;
    let data = server._data.path().display().to_string();
    let http = client();
    // 250 bytes as stored fit a file name with the backend's `~` and `#<n>`.
    let fits = "a".repeat(250);
    let put = http
        .put(format!("{}/v1/kv/npm/x/{fits}", server.base))
        .body("ok")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::OK);
    let got = http
        .get(format!("{}/v1/kv/npm/x/{fits}", server.base))
        .send()
        .await?;
    assert_eq!(got.text().await?, "ok");
    let segment_rule = "a key segment has at most 250 bytes as stored (a byte outside \
                        printable ASCII, or one of \\ { } ^ % ` [ ] \" < > ~ # | * ?, takes 3)";
    for key in [
        "a".repeat(251),
        format!("x/{}", "a".repeat(300)),
        // 42 characters of 2 bytes, each byte escaped: 252 bytes as stored.
        "é".repeat(42),
        "~".repeat(84),
    ] {
        let path = key
            .split('/')
            .map(|s| s.replace('~', "%7E").replace('é', "%C3%A9"))
            .collect::<Vec<_>>()
            .join("/");
        for request in [
            http.put(format!("{}/v1/kv/npm/{path}", server.base))
                .body("x"),
            http.get(format!("{}/v1/kv/npm/{path}", server.base)),
        ] {
            let refused = request.send().await?;
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{key}");
            let text = refused.text().await?;
            assert_eq!(text, format!("invalid key {key:?}: {segment_rule}"));
            assert!(!text.contains(&data));
        }
    }
    let prefix = http
        .get(format!(
            "{}/v1/kv/npm?prefix={}/",
            server.base,
            "b".repeat(251)
        ))
        .send()
        .await?;
    assert_eq!(prefix.status(), StatusCode::BAD_REQUEST);
    // Short segments that escape heavily: the whole key is over what S3 holds.
    let long = [
        "~".repeat(80),
        "~".repeat(80),
        "~".repeat(80),
        "~".repeat(80),
    ]
    .join("/");
    let refused = http
        .put(format!(
            "{}/v1/kv/npm/{}",
            server.base,
            long.replace('~', "%7E")
        ))
        .body("x")
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.text().await?,
        format!(
            "invalid key {long:?}: a namespace and key have at most 900 bytes together as stored \
             (a byte outside printable ASCII, or one of \\ {{ }} ^ % ` [ ] \" < > ~ # | * ?, \
             takes 3)"
        )
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_api_failures_name_no_server_file() -> TestResult {
    // A backend that fails for real: where the KV folder should be there is a file.
    let server = start(|c| {
        let objects = c.data_dir.join("objects");
        std::fs::create_dir_all(&objects).expect("objects folder");
        std::fs::write(objects.join("kv"), b"not a folder").expect("kv file");
    })
    .await?;
    let data = server._data.path().display().to_string();
    let http = client();
    let put = http
        .put(format!("{}/v1/kv/npm/a/b.js", server.base))
        .body("x")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = put.text().await?;
    let id = text
        .strip_prefix("the store failed (backend; error id ")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("unexpected 500 text {text:?}"))?;
    assert!(hex_id(id), "{text}");
    for request in [
        http.get(format!("{}/v1/kv/npm/a/b.js", server.base)),
        http.head(format!("{}/v1/kv/npm/a/b.js", server.base)),
        http.delete(format!("{}/v1/kv/npm/a/b.js", server.base)),
        http.get(format!("{}/v1/kv/npm?prefix=a/", server.base)),
    ] {
        let answer = request.send().await?;
        let status = answer.status();
        let text = answer.text().await?;
        assert!(!text.contains(&data), "{status}: {text}");
        // (A HEAD answer has no body to name anything.)
        if status.is_server_error() && !text.is_empty() {
            assert!(text.contains("; error id "), "{status}: {text}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spike_serve_fills_npm_from_its_npm_cdn_flags() -> TestResult {
    let (cdn_base, hits, _cdn) = cdn().await?;
    let data = tempfile::tempdir()?;
    let (_child, rooms) = common::spawn_server_with(data.path(), &["--npm-cdn", &cdn_base])
        .await
        .map_err(|e| e.to_string())?;
    let base = rooms.replace("ws://", "http://").replace("/rooms", "");
    let host = cdn_base.trim_start_matches("http://");
    let http = client();
    for _ in 0..2 {
        let got = http
            .get(format!("{base}/v1/kv/npm/{host}/m@1.0.0/index.js"))
            .send()
            .await?;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.text().await?, "export default 'm';\n");
    }
    assert_eq!(hits_of(&hits, "/m@1.0.0/index.js"), 1);
    // The default CDN is replaced by the flag: esm.sh is not fetched from.
    let esm = http
        .get(format!("{base}/v1/kv/npm/esm.sh/react@19.1.0"))
        .send()
        .await?;
    assert_eq!(esm.status(), StatusCode::NOT_FOUND);

    // Plain http:// only on loopback; the flag is refused before the server starts.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_spike-server"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(["--npm-cdn", "http://cdn.example"])
        .output()
        .await?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "CDN \"http://cdn.example\": plain http:// is for loopback hosts only; use https://"
        ),
        "{stderr}"
    );
    Ok(())
}
