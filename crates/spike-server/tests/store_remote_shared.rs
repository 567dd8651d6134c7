//! The remote tier's side of the room server's shared store: blobs are verified against their
//! hash on read, and a store whose remote tier is read-only (the desktop's npm cache) reads the
//! server's `npm` namespace, which the server fills itself, and never writes it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse as _;
use bytes::Bytes;
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::{Access, Server, ServerConfig};
use spike_store::{
    BlobHash, Condition, ETag, Fetched, Key, MemoryTier, PutOptions, RemoteConfig, RemoteTier,
    Store, StoreError, Tier,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Serves `app` on a loopback port; its base URL.
async fn serve(app: axum::Router) -> Result<String, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(base)
}

fn remote(base: &str, token: Option<String>) -> Result<RemoteTier, StoreError> {
    let mut config = RemoteConfig::new(base);
    config.token = token;
    config.max_retries = 0;
    RemoteTier::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tier_refuses_a_blob_whose_bytes_are_not_its_hash() -> TestResult {
    // A server (or something between) that answers every blob with the same bytes.
    let app = axum::Router::new().route(
        "/v1/blobs/{hash}",
        axum::routing::get(|| async {
            (
                [
                    ("etag", "\"0123456789abcdef0123456789abcdef\""),
                    ("spike-size", "8"),
                ],
                "planted!",
            )
                .into_response()
        }),
    );
    let tier = remote(&serve(app).await?, None)?;
    let asked = BlobHash::of(b"export default 1");
    let key = Key::Blob(asked);
    match tier.get(&key).await {
        Err(StoreError::HashMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (asked, BlobHash::of(b"planted!")));
        }
        other => return Err(format!("expected HashMismatch, got {other:?}").into()),
    }
    let etag = ETag::from_raw("ffffffffffffffffffffffffffffffff");
    assert!(matches!(
        tier.revalidate(&key, &etag).await,
        Err(StoreError::HashMismatch { .. })
    ));
    // The bytes that are what they are named: a hit.
    let honest = Key::Blob(BlobHash::of(b"planted!"));
    let entry = tier.get(&honest).await?.ok_or("the honest blob")?;
    assert_eq!(&entry.body[..], b"planted!");

    // Through a store: an error, not a hit, and no faster tier keeps the bytes.
    let memory = Arc::new(MemoryTier::new(1 << 20));
    let store = Store::new([memory.clone() as Arc<dyn Tier>, Arc::new(tier)]);
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::HashMismatch { .. })
    ));
    assert!(memory.get(&key).await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_remote_tier_reads_the_servers_npm_cache_and_never_writes_it() -> TestResult {
    // The CDN the server is allowed to fill from, counting its hits.
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let cdn = serve(axum::Router::new().route(
        "/m@1.0.0/index.js",
        axum::routing::get(move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            ([("cache-control", "max-age=3600")], "export default 'm';\n").into_response()
        }),
    ))
    .await?;
    let data = tempfile::tempdir()?;
    let key = TokenKey::new(&Secret::new(vec![3u8; 32])?);
    let mut config = ServerConfig::new(data.path());
    config.access = Access::Tokens(key.clone());
    config.store.npm_cdns = vec![cdn.parse()?];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = Server::new(config)?.spawn(listener)?;
    // What the desktop holds: a room's edit token.
    let token = key.issue(&Claims::new("team-a", Role::Edit, Duration::from_secs(600)))?;
    let server = Arc::new(remote(&running.http_url(), Some(token))?);
    let memory = Arc::new(MemoryTier::new(1 << 20));
    let tiers = || {
        [
            memory.clone() as Arc<dyn Tier>,
            server.clone() as Arc<dyn Tier>,
        ]
    };
    let store = Store::new(tiers()).with_read_only_authority();
    let not_called = || async {
        Err::<Fetched, _>(StoreError::Unavailable {
            tier: "origin",
            reason: "must not be called".to_owned(),
        })
    };

    // An allow-listed module: the server fills it; this client fetches nothing.
    let host = cdn.trim_start_matches("http://");
    let filled = Key::kv("npm", format!("{host}/m@1.0.0/index.js"))?;
    let entry = store.get_or_fetch(&filled, not_called).await?;
    assert_eq!(&entry.body[..], b"export default 'm';\n");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(memory.get(&filled).await?.is_some(), "kept locally");

    // Another CDN's module: a miss on the server, fetched here, kept here only.
    let own = Key::kv("npm", "cdn.example/x.js")?;
    let fetched = store
        .get_or_fetch(&own, || async {
            Ok(Fetched {
                body: Bytes::from_static(b"export const x = 1;"),
                content_type: None,
                ttl: None,
            })
        })
        .await?;
    assert_eq!(&fetched.body[..], b"export const x = 1;");
    assert!(memory.get(&own).await?.is_some());
    assert!(
        server.get(&own).await?.is_none(),
        "the server was not written"
    );

    // Writes and deletes go to the other tiers only.
    let written = Key::kv("npm", format!("{host}/local.js"))?;
    store
        .put(
            &written,
            Bytes::from_static(b"local"),
            PutOptions::default(),
        )
        .await?;
    assert!(memory.get(&written).await?.is_some());
    assert!(store.delete(&written, Condition::None).await?);
    assert!(store.delete(&filled, Condition::None).await?);
    assert!(server.get(&filled).await?.is_some(), "the server keeps it");

    // Without the option, the write would reach the server, which refuses a room's token.
    match Store::new(tiers())
        .put(&written, Bytes::from_static(b"x"), PutOptions::default())
        .await
    {
        Err(StoreError::Forbidden { reason, .. }) => {
            assert!(reason.contains("shared by every room"), "{reason}")
        }
        other => return Err(format!("expected Forbidden, got {other:?}").into()),
    }
    // A store of one read-only tier takes no writes at all.
    let only = Store::new([server.clone() as Arc<dyn Tier>]).with_read_only_authority();
    assert!(matches!(
        only.put(&written, Bytes::from_static(b"x"), PutOptions::default())
            .await,
        Err(StoreError::Forbidden { tier: "store", .. })
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    Ok(())
}
