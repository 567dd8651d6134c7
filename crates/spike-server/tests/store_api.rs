//! The blob/KV HTTP API over real sockets on loopback, on both backends: the default local
//! folder and S3 (a real moto_server). Tokens, limits and path validation on the local one.

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
        serde_json::json!({ "hash": hash.to_string(), "size": body.len() })
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

    // Any valid token for blobs and other namespaces, by header or query parameter.
    let put = http
        .put(format!("{base}/v1/blobs"))
        .bearer_auth(&edit_a)
        .body("shared")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::CREATED);
    let put = http
        .put(format!("{base}/v1/kv/npm/a?token={edit_a}"))
        .body("x")
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::OK);

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
