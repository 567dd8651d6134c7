//! The one test suite of the [`Tier`] contract, and a real S3-protocol server for tests
//! (feature `test-support`).
//!
//! [`check_tier`] runs every rule of the contract written on [`Tier`] against a tier and panics
//! naming the tier and the rule that failed. Every tier runs this same suite (memory, SQLite,
//! object on a folder and on S3 in this crate's tests; remote against a real server in
//! `spike-server`'s tests), so they agree on meaning, not only on types.
//! [`check_compare_and_set_is_atomic`] (part of [`check_tier`], public for heavier runs) and the
//! counter helpers [`increment`] / [`read_counter`] are the concurrent-writer part.
//!
//! [`Moto`] starts `moto_server` (PyPI `moto[server]`, an S3 implementation) on a free loopback
//! port, installing it into a venv first if needed, and kills it when dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{
    BlobHash, Condition, ETag, Key, KvKey, Listed, Meta, Prefix, PutOptions, Revalidated,
    StoreError, Tier,
};

/// The namespace the suite writes to. It also writes [`LIST_NAMESPACE`] and reads
/// [`OTHER_NAMESPACE`]; all three must be empty when the suite starts (blobs may exist).
pub const NAMESPACE: &str = "conformance";
/// The namespace whose whole listing the suite checks.
pub const LIST_NAMESPACE: &str = "conformance-lst";
/// A namespace beside [`LIST_NAMESPACE`] (a string prefix of neither) that the suite writes and
/// expects never to see in the other's listing.
pub const OTHER_NAMESPACE: &str = "conformance-other";

/// Concurrent compare-and-set writers [`check_tier`] runs, and the rounds each does.
pub const CAS_TASKS: u64 = 4;
/// See [`CAS_TASKS`].
pub const CAS_ROUNDS: u64 = 20;

fn kv(key: &str) -> Key {
    match Key::kv(NAMESPACE, key) {
        Ok(k) => k,
        Err(e) => panic!("suite key {key:?}: {e}"),
    }
}

fn key_in(namespace: &str, key: &str) -> Key {
    match Key::kv(namespace, key) {
        Ok(k) => k,
        Err(e) => panic!("suite key {namespace}/{key}: {e}"),
    }
}

fn prefix_in(namespace: &str, prefix: &str) -> Prefix {
    match Prefix::kv(namespace, prefix) {
        Ok(p) => p,
        Err(e) => panic!("suite prefix {namespace}/{prefix}: {e}"),
    }
}

fn opts(content_type: Option<&str>, ttl: Option<Duration>, condition: Condition) -> PutOptions {
    PutOptions {
        content_type: content_type.map(str::to_owned),
        ttl,
        condition,
    }
}

/// `at` to the millisecond: the precision of the server's API (`Spike-Modified-Ms`) and of
/// [`crate::ObjectTier`]'s envelope. The contract says "the stored metadata" and names no clock
/// precision; a tier that stores milliseconds answers a put with nanoseconds the first time.
fn millis(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Whether two metas are the same entry's: size, ETag, content type, and expiry and
/// modification time to the millisecond ([`millis`]).
pub fn same_meta(a: &Meta, b: &Meta) -> bool {
    (a.size, &a.etag, &a.content_type) == (b.size, &b.etag, &b.content_type)
        && a.expires_at.map(millis) == b.expires_at.map(millis)
        && millis(a.modified_at) == millis(b.modified_at)
}

/// The value of `result`, or a panic naming the tier and the step.
fn ok<T>(tier: &dyn Tier, step: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{}: {step}: unexpected error: {e}", tier.name()),
    }
}

/// The `current` of a [`StoreError::PreconditionFailed`], or a panic naming the tier and step.
fn precondition(
    tier: &dyn Tier,
    step: &str,
    result: Result<impl std::fmt::Debug, StoreError>,
) -> Option<ETag> {
    match result {
        Err(StoreError::PreconditionFailed { current, .. }) => current,
        other => panic!(
            "{}: {step}: expected PreconditionFailed, got {other:?}",
            tier.name()
        ),
    }
}

/// Runs the whole [`Tier`] contract against `tier`, which must hold nothing under the suite's
/// namespaces ([`NAMESPACE`], [`LIST_NAMESPACE`], [`OTHER_NAMESPACE`]; blobs may exist). Panics
/// naming the tier and the first rule broken. Takes about 1.2 s (one real TTL has to pass) plus
/// [`CAS_TASKS`] × [`CAS_ROUNDS`] compare-and-sets. Must run inside a tokio runtime (the
/// concurrent writers are spawned tasks; a multi-thread runtime makes them truly parallel).
pub async fn check_tier(tier: Arc<dyn Tier>) {
    let t = &*tier;
    assert!(!t.name().is_empty(), "a tier has a name");
    check_absent_and_round_trip(t).await;
    check_blobs(t).await;
    check_kv(t).await;
    check_conditions(t).await;
    check_delete(t).await;
    check_list(t).await;
    check_revalidate(t).await;
    check_ttl(t).await;
    check_racing_writers(t).await;
    check_invalid_keys();
    if let Err(e) = check_compare_and_set_is_atomic(Arc::clone(&tier), CAS_TASKS, CAS_ROUNDS).await
    {
        panic!("{e}");
    }
}

/// An absent key reads as `None`; a put's meta (size, ETag, content type, expiry about now +
/// ttl) is what get and head return; an overwrite replaces ETag, expiry and content type.
async fn check_absent_and_round_trip(tier: &dyn Tier) {
    let name = tier.name();
    let key = kv("round/trip.js");
    assert_eq!(
        ok(tier, "get of an absent key", tier.get(&key).await),
        None,
        "{name}: get of an absent key is None"
    );
    assert_eq!(
        ok(tier, "head of an absent key", tier.head(&key).await),
        None,
        "{name}: head of an absent key is None"
    );
    let body = Bytes::from_static(b"export default 42;\n");
    let before = SystemTime::now();
    let meta = ok(
        tier,
        "put",
        tier.put(
            &key,
            body.clone(),
            opts(
                Some("text/javascript"),
                Some(Duration::from_secs(3600)),
                Condition::None,
            ),
        )
        .await,
    );
    assert_eq!(
        (meta.size, &meta.etag, meta.content_type.as_deref()),
        (19u64, &ETag::of(&body), Some("text/javascript")),
        "{name}: put returns size, ETag::of(body), content type"
    );
    let expires = meta
        .expires_at
        .unwrap_or_else(|| panic!("{name}: a TTL sets expires_at: {meta:?}"));
    let lo = before + Duration::from_secs(3599);
    let hi = SystemTime::now() + Duration::from_secs(3601);
    assert!(
        expires >= lo && expires <= hi,
        "{name}: expires_at is about now + ttl: {meta:?}"
    );
    match ok(tier, "get", tier.get(&key).await) {
        Some(e) if e.body == body && same_meta(&e.meta, &meta) => {}
        other => panic!("{name}: get returns the body and the meta put returned; got {other:?}"),
    }
    let head = ok(tier, "head", tier.head(&key).await);
    assert!(
        head.as_ref().is_some_and(|h| same_meta(h, &meta)),
        "{name}: head returns the meta put returned: {head:?}, put {meta:?}"
    );
    let newer = ok(
        tier,
        "overwrite",
        tier.put(
            &key,
            Bytes::from_static(b"export default 43;\n"),
            PutOptions::default(),
        )
        .await,
    );
    assert!(
        newer.etag != meta.etag && newer.expires_at.is_none() && newer.content_type.is_none(),
        "{name}: an overwrite replaces ETag, expiry and content type: {newer:?}"
    );
}

async fn check_blobs(tier: &dyn Tier) {
    let name = tier.name();
    let body = Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
    let key = Key::blob_of(&body);
    assert_eq!(ok(tier, "get absent blob", tier.get(&key).await), None);
    assert_eq!(ok(tier, "head absent blob", tier.head(&key).await), None);

    let wrong = Key::blob_of(b"other bytes");
    match tier.put(&wrong, body.clone(), PutOptions::default()).await {
        Err(StoreError::HashMismatch { expected, actual }) => {
            assert_eq!(
                expected,
                BlobHash::of(b"other bytes"),
                "{name}: mismatch names the key"
            );
            assert_eq!(
                actual,
                BlobHash::of(&body),
                "{name}: mismatch names the body's hash"
            );
        }
        other => {
            panic!("{name}: put blob under a wrong hash: expected HashMismatch, got {other:?}")
        }
    }
    assert_eq!(ok(tier, "wrong blob absent", tier.get(&wrong).await), None);

    let options = opts(
        Some("application/octet-stream"),
        Some(Duration::from_millis(1)),
        Condition::None,
    );
    let meta = ok(
        tier,
        "put blob",
        tier.put(&key, body.clone(), options).await,
    );
    assert_eq!(meta.size, 3000, "{name}: blob size");
    assert_eq!(
        meta.etag,
        ETag::of(&body),
        "{name}: blob ETag is ETag::of(body)"
    );
    assert_eq!(meta.expires_at, None, "{name}: blobs ignore ttl");
    let entry = ok(tier, "get blob", tier.get(&key).await)
        .unwrap_or_else(|| panic!("{name}: get blob: a stored blob is found"));
    assert_eq!(entry.body, body, "{name}: blob bytes round-trip");
    assert_eq!(entry.meta.etag, meta.etag, "{name}: get blob ETag");
    assert_eq!(entry.meta.size, 3000, "{name}: get blob size");
    let head = ok(tier, "head blob", tier.head(&key).await)
        .unwrap_or_else(|| panic!("{name}: head blob: a stored blob is found"));
    assert_eq!(
        (head.size, &head.etag),
        (3000, &meta.etag),
        "{name}: head blob"
    );
    // Long enough for a rewrite to get a later modified_at, were it a rewrite.
    tokio::time::sleep(Duration::from_millis(15)).await;
    let again = ok(
        tier,
        "put blob again",
        tier.put(&key, body.clone(), PutOptions::default()).await,
    );
    // The contract: "a no-op returning its meta" (the content type it was first stored with
    // included, though this put named none).
    assert!(
        same_meta(&again, &meta),
        "{name}: writing an existing blob again is a no-op returning its meta: {again:?}, first \
         {meta:?}"
    );
    let stored = ok(tier, "head blob after rewrite", tier.head(&key).await);
    assert!(
        stored.as_ref().is_some_and(|h| same_meta(h, &meta)),
        "{name}: writing an existing blob again changes nothing stored: {stored:?}, first \
         {meta:?}"
    );

    let listed = ok(tier, "list blobs", tier.list(&Prefix::Blobs).await);
    assert!(
        listed
            .iter()
            .any(|l| l.key == key && l.meta.etag == meta.etag),
        "{name}: list blobs includes the stored blob"
    );
    assert!(
        listed.iter().all(|l| matches!(l.key, Key::Blob(_))),
        "{name}: list blobs lists blobs only"
    );

    let bodies = [b"one".as_slice(), b"two", b"three"];
    for b in bodies {
        ok(
            tier,
            "blob put",
            tier.put(
                &Key::blob_of(b),
                Bytes::copy_from_slice(b),
                PutOptions::default(),
            )
            .await,
        );
    }
    let mine: Vec<Key> = bodies.iter().map(|b| Key::blob_of(b)).collect();
    let listed: Vec<Key> = ok(tier, "list blobs", tier.list(&Prefix::Blobs).await)
        .into_iter()
        .map(|l| l.key)
        .filter(|k| mine.contains(k))
        .collect();
    let mut sorted = mine.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "{name}: blobs listed in hash order");
}

async fn check_kv(tier: &dyn Tier) {
    let name = tier.name();
    let key = kv("esm.sh/react@19.1.0/index.js");
    assert_eq!(ok(tier, "get absent kv", tier.get(&key).await), None);
    let options = opts(
        Some("text/javascript; charset=utf-8"),
        None,
        Condition::None,
    );
    let first = Bytes::from_static(b"export default 1;\n");
    let meta = ok(
        tier,
        "put kv",
        tier.put(&key, first.clone(), options.clone()).await,
    );
    assert_eq!(
        meta.etag,
        ETag::of(&first),
        "{name}: kv ETag is ETag::of(body)"
    );
    assert_eq!(meta.size, first.len() as u64, "{name}: kv size");
    assert_eq!(meta.expires_at, None, "{name}: no ttl: no expiry");
    let entry = ok(tier, "get kv", tier.get(&key).await)
        .unwrap_or_else(|| panic!("{name}: get kv: a stored entry is found"));
    assert_eq!(entry.body, first, "{name}: kv bytes round-trip");
    assert_eq!(
        entry.meta.content_type.as_deref(),
        Some("text/javascript; charset=utf-8"),
        "{name}: content type is kept"
    );
    assert!(
        !entry.meta.is_expired_at(SystemTime::now()),
        "{name}: no ttl: never expired"
    );
    let head = ok(tier, "head kv", tier.head(&key).await)
        .unwrap_or_else(|| panic!("{name}: head kv: a stored entry is found"));
    assert_eq!(
        (head.size, &head.etag, &head.content_type),
        (meta.size, &meta.etag, &meta.content_type),
        "{name}: head agrees with put"
    );

    let second = Bytes::from_static(b"export default 2;\n");
    let meta2 = ok(
        tier,
        "overwrite kv",
        tier.put(&key, second.clone(), options).await,
    );
    assert_ne!(meta2.etag, meta.etag, "{name}: new bytes, new ETag");
    let entry = ok(tier, "get overwritten", tier.get(&key).await)
        .unwrap_or_else(|| panic!("{name}: get overwritten: found"));
    assert_eq!(entry.body, second, "{name}: overwrite is visible");

    let empty = kv("empty");
    let meta = ok(
        tier,
        "put empty",
        tier.put(&empty, Bytes::new(), PutOptions::default()).await,
    );
    assert_eq!(meta.size, 0, "{name}: empty body");
    let entry = ok(tier, "get empty", tier.get(&empty).await)
        .unwrap_or_else(|| panic!("{name}: get empty: found"));
    assert!(entry.body.is_empty(), "{name}: empty body round-trips");
    assert_eq!(
        entry.meta.content_type, None,
        "{name}: no content type given: none"
    );

    let odd = kv("odd chars/100%~#?*[x] é");
    let body = Bytes::from_static(b"odd");
    ok(
        tier,
        "put odd key",
        tier.put(&odd, body.clone(), PutOptions::default()).await,
    );
    let entry = ok(tier, "get odd key", tier.get(&odd).await)
        .unwrap_or_else(|| panic!("{name}: get odd key: found"));
    assert_eq!(
        entry.body, body,
        "{name}: a key with reserved characters round-trips"
    );
}

async fn check_conditions(tier: &dyn Tier) {
    let name = tier.name();
    let key = kv("cas/value");
    let if_match = |etag: &ETag| opts(None, None, Condition::IfMatch(etag.clone()));
    let create = || opts(None, None, Condition::IfAbsent);

    let current = precondition(
        tier,
        "if-match on an absent entry",
        tier.put(&key, Bytes::from_static(b"1"), if_match(&ETag::of(b"0")))
            .await,
    );
    assert_eq!(current, None, "{name}: absent: no current ETag");
    assert_eq!(
        ok(tier, "if-match created nothing", tier.get(&key).await),
        None,
        "{name}: a refused if-match on an absent key creates nothing"
    );

    let v1 = ok(
        tier,
        "create if absent",
        tier.put(&key, Bytes::from_static(b"1"), create()).await,
    );
    match tier.put(&key, Bytes::from_static(b"x"), create()).await {
        Err(StoreError::PreconditionFailed {
            key: k,
            current: Some(c),
        }) if k == format!("{NAMESPACE}/cas/value") && c == v1.etag => {}
        other => panic!(
            "{name}: create if absent over an existing entry fails naming key and current \
             ETag; got {other:?}"
        ),
    }

    let stale = ETag::of(b"not the current body");
    let current = precondition(
        tier,
        "if-match with a stale ETag",
        tier.put(&key, Bytes::from_static(b"2"), if_match(&stale))
            .await,
    );
    assert_eq!(
        current,
        Some(v1.etag.clone()),
        "{name}: if-match failure carries the current ETag"
    );
    let still = ok(tier, "get after refused write", tier.get(&key).await)
        .unwrap_or_else(|| panic!("{name}: get after refused write: found"));
    assert_eq!(
        &still.body[..],
        b"1",
        "{name}: a refused write changes nothing"
    );

    let v2 = ok(
        tier,
        "if-match with the current ETag",
        tier.put(&key, Bytes::from_static(b"2"), if_match(&v1.etag))
            .await,
    );
    assert_eq!(v2.etag, ETag::of(b"2"), "{name}: compare-and-set wrote");
    let body = ok(tier, "get after compare-and-set", tier.get(&key).await).map(|e| e.body);
    assert_eq!(
        body.as_deref(),
        Some(b"2".as_slice()),
        "{name}: a held condition writes"
    );
    let current = precondition(
        tier,
        "if-match with the ETag just replaced",
        tier.put(&key, Bytes::from_static(b"3"), if_match(&v1.etag))
            .await,
    );
    assert_eq!(
        current,
        Some(v2.etag.clone()),
        "{name}: the second CAS sees the first"
    );
}

async fn check_delete(tier: &dyn Tier) {
    let name = tier.name();
    let key = kv("delete/me");
    assert!(
        !ok(
            tier,
            "delete absent",
            tier.delete(&key, Condition::None).await
        ),
        "{name}: deleting an absent entry says nothing was there"
    );
    let meta = ok(
        tier,
        "put for delete",
        tier.put(&key, Bytes::from_static(b"bye"), PutOptions::default())
            .await,
    );
    let current = precondition(
        tier,
        "delete if-match with a stale ETag",
        tier.delete(&key, Condition::IfMatch(ETag::of(b"stale")))
            .await,
    );
    assert_eq!(
        current,
        Some(meta.etag.clone()),
        "{name}: delete refusal carries the ETag"
    );
    assert!(
        ok(tier, "still there", tier.head(&key).await).is_some(),
        "{name}: a refused delete keeps the entry"
    );
    assert!(
        ok(
            tier,
            "delete if-match",
            tier.delete(&key, Condition::IfMatch(meta.etag)).await
        ),
        "{name}: delete of a present key says the entry was there"
    );
    assert!(
        !ok(
            tier,
            "delete again, if absent",
            tier.delete(&key, Condition::IfAbsent).await
        ),
        "{name}: delete of an absent key is false (IfAbsent reads as None)"
    );
    assert_eq!(
        ok(tier, "get deleted", tier.get(&key).await),
        None,
        "{name}: deleted"
    );
    assert_eq!(
        ok(tier, "head deleted", tier.head(&key).await),
        None,
        "{name}: deleted (head)"
    );
}

async fn check_list(tier: &dyn Tier) {
    let name = tier.name();
    let names = [
        "list/dir/b",
        "list/other/z",
        "list/dir/sub/c",
        "list/dirx",
        "list/dir/a",
    ];
    for key in names {
        ok(
            tier,
            "put for list",
            tier.put(
                &kv(key),
                Bytes::from(key.as_bytes().to_vec()),
                PutOptions::default(),
            )
            .await,
        );
    }
    let keys = |listed: Vec<Listed>| {
        listed
            .into_iter()
            .map(|l| {
                let Key::Kv(k) = &l.key else {
                    panic!("{name}: list of a KV prefix returned {:?}", l.key)
                };
                assert_eq!(
                    l.meta.etag,
                    ETag::of(k.key().as_bytes()),
                    "{name}: listed meta"
                );
                k.key().to_owned()
            })
            .collect::<Vec<_>>()
    };
    let prefix = |p: &str| prefix_in(NAMESPACE, p);
    assert_eq!(
        keys(ok(tier, "list dir/", tier.list(&prefix("list/dir/")).await)),
        ["list/dir/a", "list/dir/b", "list/dir/sub/c"],
        "{name}: list by folder prefix, in key order"
    );
    assert_eq!(
        keys(ok(tier, "list dir", tier.list(&prefix("list/dir")).await)),
        ["list/dir/a", "list/dir/b", "list/dir/sub/c", "list/dirx"],
        "{name}: a prefix is a string prefix, not only a folder"
    );
    assert_eq!(
        keys(ok(tier, "list all", tier.list(&prefix("list/")).await)),
        [
            "list/dir/a",
            "list/dir/b",
            "list/dir/sub/c",
            "list/dirx",
            "list/other/z"
        ],
        "{name}: list everything under list/"
    );

    // A whole namespace lists only itself, with sizes.
    for (ns, key) in [
        (LIST_NAMESPACE, "b"),
        (LIST_NAMESPACE, "a/2"),
        (LIST_NAMESPACE, "a10"),
        (LIST_NAMESPACE, "a/1"),
        (LIST_NAMESPACE, "a/1/x"),
        (OTHER_NAMESPACE, "a/0"),
    ] {
        ok(
            tier,
            "put for list",
            tier.put(
                &key_in(ns, key),
                Bytes::from(key.to_owned()),
                PutOptions::default(),
            )
            .await,
        );
    }
    let full =
        |listed: &[Listed]| -> Vec<String> { listed.iter().map(|l| l.key.to_string()).collect() };
    let under_a = ok(
        tier,
        "list a/",
        tier.list(&prefix_in(LIST_NAMESPACE, "a/")).await,
    );
    let sizes: Vec<u64> = under_a.iter().map(|l| l.meta.size).collect();
    let lst = |k: &str| format!("{LIST_NAMESPACE}/{k}");
    assert_eq!(
        (full(&under_a), sizes),
        (vec![lst("a/1"), lst("a/1/x"), lst("a/2")], vec![3, 5, 3]),
        "{name}: list of a/ in key order with metas"
    );
    let all = ok(
        tier,
        "list a namespace",
        tier.list(&prefix_in(LIST_NAMESPACE, "")).await,
    );
    assert_eq!(
        full(&all),
        [lst("a/1"), lst("a/1/x"), lst("a/2"), lst("a10"), lst("b")],
        "{name}: list of a whole namespace, only it, in key order"
    );
    let other = ok(
        tier,
        "list another namespace",
        tier.list(&prefix_in(OTHER_NAMESPACE, "")).await,
    );
    assert_eq!(
        full(&other),
        [format!("{OTHER_NAMESPACE}/a/0")],
        "{name}: namespaces are separate"
    );
}

/// [`Tier::revalidate`]: the current ETag is `NotModified` with the meta, an old one
/// `Modified` with the new entry, a deleted entry `Missing`.
async fn check_revalidate(tier: &dyn Tier) {
    let name = tier.name();
    let key = kv("revalidate/config.json");
    let v1 = ok(
        tier,
        "put for revalidate",
        tier.put(
            &key,
            Bytes::from_static(b"{\"a\":1}"),
            PutOptions::default(),
        )
        .await,
    );
    match ok(
        tier,
        "revalidate current",
        tier.revalidate(&key, &v1.etag).await,
    ) {
        Revalidated::NotModified(meta) => assert_eq!(
            (meta.etag, meta.size),
            (v1.etag.clone(), 7),
            "{name}: not modified carries the meta"
        ),
        other => {
            panic!("{name}: revalidate with the current ETag: expected NotModified, got {other:?}")
        }
    }
    ok(
        tier,
        "overwrite for revalidate",
        tier.put(
            &key,
            Bytes::from_static(b"{\"a\":2}"),
            PutOptions::default(),
        )
        .await,
    );
    match ok(
        tier,
        "revalidate old",
        tier.revalidate(&key, &v1.etag).await,
    ) {
        Revalidated::Modified(entry) => assert_eq!(
            &entry.body[..],
            b"{\"a\":2}",
            "{name}: modified carries the new entry"
        ),
        other => panic!("{name}: revalidate with an old ETag: expected Modified, got {other:?}"),
    }
    ok(
        tier,
        "delete for revalidate",
        tier.delete(&key, Condition::None).await,
    );
    assert_eq!(
        ok(
            tier,
            "revalidate deleted",
            tier.revalidate(&key, &v1.etag).await
        ),
        Revalidated::Missing,
        "{name}: revalidating a deleted entry"
    );
}

async fn check_ttl(tier: &dyn Tier) {
    let name = tier.name();
    let long = kv("ttl/long");
    let before = SystemTime::now();
    let meta = ok(
        tier,
        "put with ttl",
        tier.put(
            &long,
            Bytes::from_static(b"fresh"),
            opts(None, Some(Duration::from_secs(3600)), Condition::None),
        )
        .await,
    );
    let at = meta
        .expires_at
        .unwrap_or_else(|| panic!("{name}: a ttl gives an expiry"));
    let lo = before + Duration::from_secs(3599);
    let hi = SystemTime::now() + Duration::from_secs(3601);
    assert!(at > lo && at < hi, "{name}: expiry is about now + ttl");
    let got = ok(tier, "head with ttl", tier.head(&long).await)
        .unwrap_or_else(|| panic!("{name}: head with ttl: found"));
    let got_at = got
        .expires_at
        .unwrap_or_else(|| panic!("{name}: the expiry is stored"));
    assert!(
        got_at > lo && got_at < hi,
        "{name}: stored expiry is about now + ttl"
    );

    // One second: the shortest TTL every tier can hold (the server's API takes whole seconds).
    let short = kv("ttl/short");
    ok(
        tier,
        "put with a 1 s ttl",
        tier.put(
            &short,
            Bytes::from_static(b"soon stale"),
            opts(None, Some(Duration::from_secs(1)), Condition::None),
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let entry = ok(tier, "get expired", tier.get(&short).await)
        .unwrap_or_else(|| panic!("{name}: an expired entry is still returned, as stored"));
    assert_eq!(
        &entry.body[..],
        b"soon stale",
        "{name}: expired body as stored"
    );
    assert!(
        entry.meta.is_expired_at(SystemTime::now()),
        "{name}: its expiry is in the past"
    );
}

/// Writers racing on one entry: of 8 compare-and-sets from the same ETag exactly one wins, and
/// of 8 create-onlys on an absent key exactly one wins.
async fn check_racing_writers(tier: &dyn Tier) {
    let name = tier.name();
    let key = kv("race/cas");
    let base = ok(
        tier,
        "put for race",
        tier.put(&key, Bytes::from_static(b"0"), PutOptions::default())
            .await,
    );
    let writes = (1..=8u8).map(|i| {
        tier.put(
            &key,
            Bytes::from(vec![b'0' + i]),
            opts(None, None, Condition::IfMatch(base.etag.clone())),
        )
    });
    let results = futures_util::future::join_all(writes).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        won.len(),
        1,
        "{name}: exactly one compare-and-set wins: {results:?}"
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
            "{name}: a losing compare-and-set is a PreconditionFailed: {lost:?}"
        );
    }
    let stored = ok(tier, "get after race", tier.get(&key).await)
        .unwrap_or_else(|| panic!("{name}: get after race: found"));
    assert_eq!(
        stored.meta.etag, won[0].etag,
        "{name}: the winner's write is the one stored"
    );

    let fresh = kv("race/create");
    let creates = (1..=8u8).map(|i| {
        tier.put(
            &fresh,
            Bytes::from(vec![b'0' + i]),
            opts(None, None, Condition::IfAbsent),
        )
    });
    let results = futures_util::future::join_all(creates).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{name}: exactly one create-only wins: {results:?}"
    );
}

fn check_invalid_keys() {
    for (ns, key) in [(NAMESPACE, "../x"), (NAMESPACE, "/abs"), ("Bad", "x")] {
        assert!(
            matches!(KvKey::new(ns, key), Err(StoreError::InvalidKey { .. })),
            "{ns}/{key} is refused"
        );
    }
}

/// `tasks` concurrent writers (spawned tokio tasks) each add 1 to a counter `rounds` times with
/// compare-and-set (read, `IfMatch` the read ETag or `IfAbsent`, retry on
/// `PreconditionFailed`); the counter must end at `tasks * rounds`: a lost update means the
/// condition was not atomic. The counter is `conformance/cas/counter` (absent at the start).
/// Errors name the tier and what broke.
pub async fn check_compare_and_set_is_atomic(
    tier: Arc<dyn Tier>,
    tasks: u64,
    rounds: u64,
) -> Result<(), String> {
    let key = kv("cas/counter");
    let start = read_counter(&*tier, &key).await?;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (tier, key) = (Arc::clone(&tier), key.clone());
        handles.push(tokio::spawn(async move {
            increment(&*tier, &key, rounds).await
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    let value = read_counter(&*tier, &key).await?;
    if value != start + tasks * rounds {
        return Err(format!(
            "{}: counter is {value}, want {}: lost updates",
            tier.name(),
            start + tasks * rounds
        ));
    }
    Ok(())
}

/// Reads a counter written by [`increment`] (absent: 0).
pub async fn read_counter(tier: &dyn Tier, key: &Key) -> Result<u64, String> {
    let fail =
        |what: &str, got: &dyn std::fmt::Debug| format!("{}: {what}; got {got:?}", tier.name());
    match tier.get(key).await.map_err(|e| fail("get counter", &e))? {
        None => Ok(0),
        Some(e) => std::str::from_utf8(&e.body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail("a counter is a number", &e.body)),
    }
}

/// Adds 1 to the counter at `key`, `rounds` times, by compare-and-set.
pub async fn increment(tier: &dyn Tier, key: &Key, rounds: u64) -> Result<(), String> {
    let fail =
        |what: &str, got: &dyn std::fmt::Debug| format!("{}: {what}; got {got:?}", tier.name());
    for _ in 0..rounds {
        loop {
            let current = tier.get(key).await.map_err(|e| fail("get counter", &e))?;
            let (value, condition) = match &current {
                None => (0, Condition::IfAbsent),
                Some(e) => (
                    std::str::from_utf8(&e.body)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                    Condition::IfMatch(e.meta.etag.clone()),
                ),
            };
            let next = Bytes::from((value + 1).to_string());
            match tier.put(key, next, opts(None, None, condition)).await {
                Ok(_) => break,
                Err(StoreError::PreconditionFailed { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(fail("counter put", &e)),
            }
        }
    }
    Ok(())
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
