//! `ObjectTier` passes the shared conformance suite on a local folder and on a real
//! S3-protocol server (moto_server on loopback).

use std::sync::Arc;

use spike_store::conformance::{check_tier, Moto};
use spike_store::{Key, ObjectTier, PutOptions, Tier};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_tier_on_a_local_folder_passes_the_suite() -> Result<(), Box<dyn std::error::Error>>
{
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    let dir = tempfile::tempdir()?;
    let tier = ObjectTier::from_url(&dir.path().join("objects").display().to_string())?;
    check_tier(Arc::new(tier)).await;
    // The same folder through a file:// URL sees what the first tier wrote.
    let url = format!("file://{}", dir.path().join("objects").display());
    let again = ObjectTier::from_url(&url)?;
    let key = Key::kv("conformance", "esm.sh/react@19.1.0/index.js")?;
    let entry = again.get(&key).await?.ok_or("written entry is on disk")?;
    assert_eq!(&entry.body[..], b"export default 2;\n");
    assert!(dir
        .path()
        .join("objects/kv/conformance/esm.sh/react@19.1.0/index.js~")
        .is_file());

    // The suite's reads and writes are counted (at least: other tests may share the recorder
    // under `cargo test`).
    let snapshot = snapshotter.snapshot().into_vec();
    let counted = |name: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(k, _, _, _)| k.key().name() == name)
            .map(|(_, _, _, v)| match v {
                metrics_util::debugging::DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert!(counted("spike_store_hits_total") >= 10);
    assert!(counted("spike_store_misses_total") >= 5);
    assert!(counted("spike_store_written_bytes_total") >= 3000);
    assert!(counted("spike_store_read_bytes_total") >= 3000);
    Ok(())
}

#[tokio::test]
async fn object_tier_refuses_unknown_urls() {
    for url in ["gs://bucket/x", "http://example.com/x", "s3://"] {
        assert!(ObjectTier::from_url(url).is_err(), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_tier_on_s3_passes_the_suite() -> Result<(), Box<dyn std::error::Error>> {
    // Never skipped: if moto cannot be installed or started this fails with the reason.
    let moto = Moto::start()?;
    let tier = moto.tier("suite", "some/prefix").await?;
    check_tier(Arc::new(tier)).await;

    // The URL form, configured from the environment the way `spike serve --object-store` is.
    moto.create_bucket("byurl").await?;
    std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
    let by_url = ObjectTier::from_url("s3://byurl/p")?;
    let key = Key::kv("ns", "a/b")?;
    by_url
        .put(
            &key,
            bytes::Bytes::from_static(b"via url"),
            PutOptions::default(),
        )
        .await?;
    // Seen through a client without the prefix: the object sits under p/.
    let raw = ObjectTier::s3(moto.s3("byurl")?, "", "raw");
    let listed = raw.list(&spike_store::Prefix::kv("ns", "")?).await?;
    assert!(
        listed.is_empty(),
        "the prefix keeps objects out of the bucket root"
    );
    let under = ObjectTier::s3(moto.s3("byurl")?, "p", "under p");
    assert_eq!(
        under.get(&key).await?.map(|e| e.body),
        Some(bytes::Bytes::from_static(b"via url"))
    );
    Ok(())
}

/// What makes conditions hold across processes on S3: the backend itself refuses a stale
/// `PutMode::Update` and a `PutMode::Create` over an existing object (conditional writes,
/// `If-Match` / `If-None-Match: *`), so `ObjectTier`'s in-process locks are not the only guard.
#[tokio::test]
async fn object_s3_backend_enforces_conditional_writes() -> Result<(), Box<dyn std::error::Error>> {
    use object_store::{ObjectStore as _, PutMode, PutOptions as StorePut, UpdateVersion};
    let moto = Moto::start()?;
    moto.create_bucket("cond").await?;
    let s3 = moto.s3("cond")?;
    let path = object_store::path::Path::from("x");
    let put = |mode| StorePut {
        mode,
        ..Default::default()
    };
    let first = s3.put_opts(&path, "1".into(), put(PutMode::Create)).await?;
    let again = s3.put_opts(&path, "2".into(), put(PutMode::Create)).await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let stale = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: first.version.clone(),
    };
    s3.put_opts(&path, "2".into(), put(PutMode::Update(stale.clone())))
        .await?;
    let late = s3
        .put_opts(&path, "3".into(), put(PutMode::Update(stale)))
        .await;
    assert!(
        matches!(late, Err(object_store::Error::Precondition { .. })),
        "{late:?}"
    );
    Ok(())
}
