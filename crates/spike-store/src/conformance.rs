//! The shared test suite of the [`Tier`] contract, and a real S3-protocol server for tests
//! (feature `test-support`).
//!
//! [`check_tier`] runs every rule of the contract written on [`Tier`] against a tier and panics
//! with the rule that failed. Every tier (memory, SQLite, remote, object on a folder and on S3)
//! runs the same suite, so they agree on meaning, not only on types.
//!
//! [`Moto`] starts `moto_server` (PyPI `moto[server]`, an S3 implementation) on a free loopback
//! port, installing it into a venv first if needed, and kills it when dropped.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{BlobHash, Condition, ETag, Key, KvKey, Prefix, PutOptions, StoreError, Tier};

/// The namespace the suite writes to.
pub const NAMESPACE: &str = "conformance";

fn kv(key: &str) -> Key {
    match Key::kv(NAMESPACE, key) {
        Ok(k) => k,
        Err(e) => panic!("suite key {key:?}: {e}"),
    }
}

fn ok<T>(step: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{step}: unexpected error: {e}"),
    }
}

fn precondition(step: &str, result: Result<impl std::fmt::Debug, StoreError>) -> Option<ETag> {
    match result {
        Err(StoreError::PreconditionFailed { current, .. }) => current,
        other => panic!("{step}: expected PreconditionFailed, got {other:?}"),
    }
}

/// Runs the whole [`Tier`] contract against `tier`, which must hold nothing under the
/// [`NAMESPACE`] namespace (blobs may exist). Panics naming the first rule broken. Takes about
/// 1.2 s (one real TTL has to pass). Writes race only within `tier`: a tier that serializes
/// its writers passes that part by construction.
pub async fn check_tier(tier: &dyn Tier) {
    let name = tier.name();
    assert!(!name.is_empty(), "a tier has a name");
    check_blobs(tier).await;
    check_kv(tier).await;
    check_conditions(tier).await;
    check_delete(tier).await;
    check_list(tier).await;
    check_ttl(tier).await;
    check_racing_writers(tier).await;
    check_invalid_keys();
}

async fn check_blobs(tier: &dyn Tier) {
    let body = Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
    let key = Key::blob_of(&body);
    assert_eq!(ok("get absent blob", tier.get(&key).await), None);
    assert_eq!(ok("head absent blob", tier.head(&key).await), None);
    let options = PutOptions {
        content_type: Some("application/octet-stream".into()),
        ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let meta = ok(
        "put blob",
        tier.put(&key, body.clone(), options.clone()).await,
    );
    assert_eq!(meta.size, 3000, "blob size");
    assert_eq!(meta.etag, ETag::of(&body), "blob ETag is ETag::of(body)");
    assert_eq!(meta.expires_at, None, "blobs ignore ttl");
    let entry = ok("get blob", tier.get(&key).await)
        .unwrap_or_else(|| panic!("get blob: a stored blob is found"));
    assert_eq!(entry.body, body, "blob bytes round-trip");
    assert_eq!(entry.meta.etag, meta.etag, "get blob ETag");
    assert_eq!(entry.meta.size, 3000, "get blob size");
    let head = ok("head blob", tier.head(&key).await)
        .unwrap_or_else(|| panic!("head blob: a stored blob is found"));
    assert_eq!((head.size, &head.etag), (3000, &meta.etag), "head blob");
    let again = ok(
        "put blob again",
        tier.put(&key, body.clone(), options).await,
    );
    assert_eq!(again.etag, meta.etag, "writing a blob again keeps it");

    let wrong = Key::blob_of(b"other bytes");
    match tier.put(&wrong, body.clone(), PutOptions::default()).await {
        Err(StoreError::HashMismatch { expected, actual }) => {
            assert_eq!(
                expected,
                BlobHash::of(b"other bytes"),
                "mismatch names the key"
            );
            assert_eq!(
                actual,
                BlobHash::of(&body),
                "mismatch names the body's hash"
            );
        }
        other => panic!("put blob under a wrong hash: expected HashMismatch, got {other:?}"),
    }
    assert_eq!(ok("wrong blob absent", tier.get(&wrong).await), None);
    let listed = ok("list blobs", tier.list(&Prefix::Blobs).await);
    assert!(
        listed
            .iter()
            .any(|l| l.key == key && l.meta.etag == meta.etag),
        "list blobs includes the stored blob"
    );
    assert!(
        listed.iter().all(|l| matches!(l.key, Key::Blob(_))),
        "list blobs lists blobs only"
    );
}

async fn check_kv(tier: &dyn Tier) {
    let key = kv("esm.sh/react@19.1.0/index.js");
    assert_eq!(ok("get absent kv", tier.get(&key).await), None);
    let options = PutOptions {
        content_type: Some("text/javascript; charset=utf-8".into()),
        ..Default::default()
    };
    let first = Bytes::from_static(b"export default 1;\n");
    let meta = ok(
        "put kv",
        tier.put(&key, first.clone(), options.clone()).await,
    );
    assert_eq!(meta.etag, ETag::of(&first), "kv ETag is ETag::of(body)");
    assert_eq!(meta.size, first.len() as u64, "kv size");
    assert_eq!(meta.expires_at, None, "no ttl: no expiry");
    let entry = ok("get kv", tier.get(&key).await)
        .unwrap_or_else(|| panic!("get kv: a stored entry is found"));
    assert_eq!(entry.body, first, "kv bytes round-trip");
    assert_eq!(
        entry.meta.content_type.as_deref(),
        Some("text/javascript; charset=utf-8"),
        "content type is kept"
    );
    assert!(
        !entry.meta.is_expired_at(SystemTime::now()),
        "no ttl: never expired"
    );
    let head = ok("head kv", tier.head(&key).await)
        .unwrap_or_else(|| panic!("head kv: a stored entry is found"));
    assert_eq!(
        (head.size, &head.etag, &head.content_type),
        (meta.size, &meta.etag, &meta.content_type),
        "head agrees with put"
    );

    let second = Bytes::from_static(b"export default 2;\n");
    let meta2 = ok(
        "overwrite kv",
        tier.put(&key, second.clone(), options).await,
    );
    assert_ne!(meta2.etag, meta.etag, "new bytes, new ETag");
    let entry = ok("get overwritten", tier.get(&key).await)
        .unwrap_or_else(|| panic!("get overwritten: found"));
    assert_eq!(entry.body, second, "overwrite is visible");

    let empty = kv("empty");
    let meta = ok(
        "put empty",
        tier.put(&empty, Bytes::new(), PutOptions::default()).await,
    );
    assert_eq!(meta.size, 0, "empty body");
    let entry =
        ok("get empty", tier.get(&empty).await).unwrap_or_else(|| panic!("get empty: found"));
    assert!(entry.body.is_empty(), "empty body round-trips");
    assert_eq!(entry.meta.content_type, None, "no content type given: none");

    let odd = kv("odd chars/100%~#?*[x] é");
    let body = Bytes::from_static(b"odd");
    ok(
        "put odd key",
        tier.put(&odd, body.clone(), PutOptions::default()).await,
    );
    let entry =
        ok("get odd key", tier.get(&odd).await).unwrap_or_else(|| panic!("get odd key: found"));
    assert_eq!(
        entry.body, body,
        "a key with reserved characters round-trips"
    );
}

async fn check_conditions(tier: &dyn Tier) {
    let key = kv("cas/counter");
    let create = |_: &[u8]| PutOptions {
        condition: Condition::IfAbsent,
        ..PutOptions::default()
    };
    let v1 = ok(
        "create if absent",
        tier.put(&key, Bytes::from_static(b"1"), create(b"1")).await,
    );
    let current = precondition(
        "create if absent over an existing entry",
        tier.put(&key, Bytes::from_static(b"x"), create(b"x")).await,
    );
    assert_eq!(
        current,
        Some(v1.etag.clone()),
        "the failure carries the current ETag"
    );

    let if_match = |etag: &ETag| PutOptions {
        condition: Condition::IfMatch(etag.clone()),
        ..PutOptions::default()
    };
    let stale = ETag::of(b"not the current body");
    let current = precondition(
        "if-match with a stale ETag",
        tier.put(&key, Bytes::from_static(b"2"), if_match(&stale))
            .await,
    );
    assert_eq!(
        current,
        Some(v1.etag.clone()),
        "if-match failure carries the current ETag"
    );
    let still = ok("get after refused write", tier.get(&key).await)
        .unwrap_or_else(|| panic!("get after refused write: found"));
    assert_eq!(&still.body[..], b"1", "a refused write changes nothing");

    let v2 = ok(
        "if-match with the current ETag",
        tier.put(&key, Bytes::from_static(b"2"), if_match(&v1.etag))
            .await,
    );
    assert_eq!(v2.etag, ETag::of(b"2"), "compare-and-set wrote");
    let current = precondition(
        "if-match with the ETag just replaced",
        tier.put(&key, Bytes::from_static(b"3"), if_match(&v1.etag))
            .await,
    );
    assert_eq!(
        current,
        Some(v2.etag.clone()),
        "the second CAS sees the first"
    );

    let absent = kv("cas/absent");
    let current = precondition(
        "if-match on an absent entry",
        tier.put(&absent, Bytes::from_static(b"x"), if_match(&v1.etag))
            .await,
    );
    assert_eq!(current, None, "absent: no current ETag");
    assert_eq!(
        ok("if-match created nothing", tier.get(&absent).await),
        None
    );
}

async fn check_delete(tier: &dyn Tier) {
    let key = kv("delete/me");
    assert!(
        !ok("delete absent", tier.delete(&key, Condition::None).await),
        "deleting an absent entry says nothing was there"
    );
    let meta = ok(
        "put for delete",
        tier.put(&key, Bytes::from_static(b"bye"), PutOptions::default())
            .await,
    );
    let current = precondition(
        "delete if-match with a stale ETag",
        tier.delete(&key, Condition::IfMatch(ETag::of(b"stale")))
            .await,
    );
    assert_eq!(
        current,
        Some(meta.etag.clone()),
        "delete refusal carries the ETag"
    );
    assert!(
        ok("still there", tier.get(&key).await).is_some(),
        "a refused delete keeps the entry"
    );
    assert!(
        ok(
            "delete if-match",
            tier.delete(&key, Condition::IfMatch(meta.etag)).await
        ),
        "delete says the entry was there"
    );
    assert_eq!(ok("get deleted", tier.get(&key).await), None, "deleted");
    assert_eq!(
        ok("head deleted", tier.head(&key).await),
        None,
        "deleted (head)"
    );
}

async fn check_list(tier: &dyn Tier) {
    let names = [
        "list/dir/b",
        "list/other/z",
        "list/dir/sub/c",
        "list/dirx",
        "list/dir/a",
    ];
    for name in names {
        ok(
            "put for list",
            tier.put(
                &kv(name),
                Bytes::from(name.as_bytes().to_vec()),
                PutOptions::default(),
            )
            .await,
        );
    }
    let keys = |listed: Vec<crate::Listed>| {
        listed
            .into_iter()
            .map(|l| {
                let Key::Kv(k) = &l.key else {
                    panic!("list of a KV prefix returned {:?}", l.key)
                };
                assert_eq!(l.meta.etag, ETag::of(k.key().as_bytes()), "listed meta");
                k.key().to_owned()
            })
            .collect::<Vec<_>>()
    };
    let prefix = |p: &str| match Prefix::kv(NAMESPACE, p) {
        Ok(p) => p,
        Err(e) => panic!("prefix {p:?}: {e}"),
    };
    assert_eq!(
        keys(ok("list dir/", tier.list(&prefix("list/dir/")).await)),
        ["list/dir/a", "list/dir/b", "list/dir/sub/c"],
        "list by folder prefix, in key order"
    );
    assert_eq!(
        keys(ok("list dir", tier.list(&prefix("list/dir")).await)),
        ["list/dir/a", "list/dir/b", "list/dir/sub/c", "list/dirx"],
        "a prefix is a string prefix, not only a folder"
    );
    assert_eq!(
        keys(ok("list all", tier.list(&prefix("list/")).await)),
        [
            "list/dir/a",
            "list/dir/b",
            "list/dir/sub/c",
            "list/dirx",
            "list/other/z"
        ],
        "list everything under list/"
    );
    let other = match Prefix::kv("conformance-other", "") {
        Ok(p) => p,
        Err(e) => panic!("prefix: {e}"),
    };
    assert!(
        ok("list another namespace", tier.list(&other).await).is_empty(),
        "namespaces are separate"
    );
}

async fn check_ttl(tier: &dyn Tier) {
    let long = kv("ttl/long");
    let before = SystemTime::now();
    let meta = ok(
        "put with ttl",
        tier.put(
            &long,
            Bytes::from_static(b"fresh"),
            PutOptions {
                ttl: Some(Duration::from_secs(3600)),
                ..Default::default()
            },
        )
        .await,
    );
    let at = meta
        .expires_at
        .unwrap_or_else(|| panic!("a ttl gives an expiry"));
    let lo = before + Duration::from_secs(3599);
    let hi = SystemTime::now() + Duration::from_secs(3601);
    assert!(at > lo && at < hi, "expiry is about now + ttl");
    let got = ok("head with ttl", tier.head(&long).await)
        .unwrap_or_else(|| panic!("head with ttl: found"));
    let got_at = got
        .expires_at
        .unwrap_or_else(|| panic!("the expiry is stored"));
    assert!(
        got_at > lo && got_at < hi,
        "stored expiry is about now + ttl"
    );

    let short = kv("ttl/short");
    ok(
        "put with a 1 s ttl",
        tier.put(
            &short,
            Bytes::from_static(b"soon stale"),
            PutOptions {
                ttl: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let entry = ok("get expired", tier.get(&short).await)
        .unwrap_or_else(|| panic!("an expired entry is still returned, as stored"));
    assert_eq!(&entry.body[..], b"soon stale", "expired body as stored");
    assert!(
        entry.meta.is_expired_at(SystemTime::now()),
        "its expiry is in the past"
    );
}

/// Writers racing on one entry: of 8 compare-and-sets from the same ETag exactly one wins, and
/// of 8 create-onlys on an absent key exactly one wins.
async fn check_racing_writers(tier: &dyn Tier) {
    let key = kv("race/cas");
    let base = ok(
        "put for race",
        tier.put(&key, Bytes::from_static(b"0"), PutOptions::default())
            .await,
    );
    let writes = (1..=8u8).map(|i| {
        let options = PutOptions {
            condition: Condition::IfMatch(base.etag.clone()),
            ..Default::default()
        };
        tier.put(&key, Bytes::from(vec![b'0' + i]), options)
    });
    let results = futures_util::future::join_all(writes).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one compare-and-set wins: {results:?}"
    );
    for lost in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(
                lost,
                Err(StoreError::PreconditionFailed {
                    current: Some(_),
                    ..
                })
            ),
            "a losing compare-and-set is a PreconditionFailed: {lost:?}"
        );
    }
    let stored = ok("get after race", tier.get(&key).await)
        .unwrap_or_else(|| panic!("get after race: found"));
    assert_eq!(
        stored.meta.etag, won[0].etag,
        "the winner's write is the one stored"
    );

    let fresh = kv("race/create");
    let creates = (1..=8u8).map(|i| {
        let options = PutOptions {
            condition: Condition::IfAbsent,
            ..Default::default()
        };
        tier.put(&fresh, Bytes::from(vec![b'0' + i]), options)
    });
    let results = futures_util::future::join_all(creates).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one create-only wins: {results:?}"
    );
}

fn check_invalid_keys() {
    for (ns, key) in [
        ("conformance", "../x"),
        ("conformance", "/abs"),
        ("Bad", "x"),
    ] {
        assert!(
            matches!(KvKey::new(ns, key), Err(StoreError::InvalidKey { .. })),
            "{ns}/{key} is refused"
        );
    }
}

pub use moto::Moto;

mod moto {
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running `moto_server` on loopback; killed on drop.
    #[derive(Debug)]
    pub struct Moto {
        child: Child,
        /// `http://127.0.0.1:<port>`.
        pub endpoint: String,
        /// The port it listens on.
        pub port: u16,
    }

    /// Where the venv lives: `SPIKE_MOTO_VENV`, else `<workspace>/target/moto`.
    pub fn venv() -> PathBuf {
        match std::env::var_os("SPIKE_MOTO_VENV") {
            Some(v) => PathBuf::from(v),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/moto"),
        }
    }

    fn run(command: &mut Command) -> Result<(), String> {
        let out = command
            .output()
            .map_err(|e| format!("running {command:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{command:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Installs `moto[server]` into [`venv`] unless it is there (one installer at a time:
    /// a lock folder beside the venv).
    pub fn install() -> Result<PathBuf, String> {
        let venv = venv();
        let server = venv.join("bin/moto_server");
        if server.is_file() {
            return Ok(server);
        }
        let lock = venv.with_extension("lock");
        if let Some(parent) = lock.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let started = Instant::now();
        while std::fs::create_dir(&lock).is_err() {
            if server.is_file() {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(format!("waited 10 min for {} to go", lock.display()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let result = (|| {
            if server.is_file() {
                return Ok(());
            }
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run(Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "moto[server]",
            ]))
        })();
        let _ = std::fs::remove_dir(&lock);
        result.map(|()| server).map_err(|e| {
            format!(
                "cannot install moto_server (PyPI moto[server]) into {}: {e}",
                venv.display()
            )
        })
    }

    impl Moto {
        /// Installs (if needed) and starts `moto_server` on a free loopback port, and waits
        /// until it accepts connections. Errors say why (install or start failed).
        pub fn start() -> Result<Self, String> {
            let server = install()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", server.display()))?;
            let mut moto = Self {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
            };
            let started = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = moto.child.try_wait() {
                    return Err(format!("moto_server exited at start: {status}"));
                }
                if started.elapsed() > Duration::from_secs(60) {
                    return Err("moto_server did not listen within 60 s".into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(moto)
        }

        /// Creates `bucket` (moto accepts unsigned requests).
        pub async fn create_bucket(&self, bucket: &str) -> Result<(), String> {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::new();
            let response = client
                .put(format!("{}/{bucket}", self.endpoint))
                .send()
                .await
                .map_err(|e| format!("creating bucket {bucket}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!(
                    "creating bucket {bucket}: HTTP {}",
                    response.status()
                ));
            }
            Ok(())
        }

        /// An S3 client for `bucket` on this server (test credentials, path-style, plain HTTP).
        pub fn s3(&self, bucket: &str) -> Result<object_store::aws::AmazonS3, String> {
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .map_err(|e| format!("S3 client for {bucket}: {e}"))
        }

        /// A fresh bucket `bucket` as an [`crate::ObjectTier`] under `prefix`.
        pub async fn tier(&self, bucket: &str, prefix: &str) -> Result<crate::ObjectTier, String> {
            self.create_bucket(bucket).await?;
            Ok(crate::ObjectTier::s3(
                self.s3(bucket)?,
                prefix,
                &format!("s3://{bucket}/{prefix}"),
            ))
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
