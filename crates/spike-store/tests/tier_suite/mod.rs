//! The behaviour every [`Tier`] promises (its written contract), as functions any tier's tests
//! call on a fresh, empty instance: `check_tier` for the single-caller contract,
//! `check_compare_and_set_is_atomic` for concurrent writers.

#![allow(dead_code)] // each test binary uses the checks it needs

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use spike_store::{Condition, ETag, Key, Meta, Prefix, PutOptions, StoreError, Tier};

/// A `Result` for checks: every failure names the tier and what broke.
pub type Checked = Result<(), String>;

fn fail<T: std::fmt::Debug>(tier: &dyn Tier, what: &str, got: T) -> String {
    format!("{}: {what}; got {got:?}", tier.name())
}

fn kv(key: &str) -> Key {
    Key::kv("suite", key).unwrap_or_else(|e| panic!("test key {key}: {e}"))
}

fn opts(content_type: Option<&str>, ttl: Option<Duration>, condition: Condition) -> PutOptions {
    PutOptions {
        content_type: content_type.map(str::to_owned),
        ttl,
        condition,
    }
}

/// Every single-caller rule of the [`Tier`] contract, on an empty tier.
pub async fn check_tier(tier: &dyn Tier) -> Checked {
    check_absent_and_round_trip(tier).await?;
    check_conditions(tier).await?;
    check_blobs(tier).await?;
    check_delete(tier).await?;
    check_list(tier).await?;
    check_expired_is_returned_as_stored(tier).await?;
    Ok(())
}

async fn check_absent_and_round_trip(tier: &dyn Tier) -> Checked {
    let key = kv("round/trip.js");
    let got = tier
        .get(&key)
        .await
        .map_err(|e| fail(tier, "get of an absent key", e))?;
    if got.is_some() {
        return Err(fail(tier, "get of an absent key is None", got));
    }
    let head = tier
        .head(&key)
        .await
        .map_err(|e| fail(tier, "head of an absent key", e))?;
    if head.is_some() {
        return Err(fail(tier, "head of an absent key is None", head));
    }
    let body = Bytes::from_static(b"export default 42;\n");
    let before = SystemTime::now();
    let meta = tier
        .put(
            &key,
            body.clone(),
            opts(
                Some("text/javascript"),
                Some(Duration::from_secs(3600)),
                Condition::None,
            ),
        )
        .await
        .map_err(|e| fail(tier, "put", e))?;
    let want = (19u64, ETag::of(&body), Some("text/javascript".to_owned()));
    if (meta.size, meta.etag.clone(), meta.content_type.clone()) != want {
        return Err(fail(
            tier,
            "put returns size, ETag::of(body), content type",
            &meta,
        ));
    }
    let expires = meta
        .expires_at
        .ok_or_else(|| fail(tier, "a TTL sets expires_at", &meta))?;
    let lo = before + Duration::from_secs(3599);
    let hi = SystemTime::now() + Duration::from_secs(3601);
    if expires < lo || expires > hi {
        return Err(fail(tier, "expires_at is about now + ttl", &meta));
    }
    let entry = tier.get(&key).await.map_err(|e| fail(tier, "get", e))?;
    match &entry {
        Some(e) if e.body == body && e.meta == meta => {}
        other => {
            return Err(fail(
                tier,
                "get returns the body and the meta put returned",
                other,
            ))
        }
    }
    let head = tier.head(&key).await.map_err(|e| fail(tier, "head", e))?;
    if head.as_ref() != Some(&meta) {
        return Err(fail(tier, "head returns the meta put returned", head));
    }
    let newer = tier
        .put(
            &key,
            Bytes::from_static(b"export default 43;\n"),
            PutOptions::default(),
        )
        .await
        .map_err(|e| fail(tier, "overwrite", e))?;
    if newer.etag == meta.etag || newer.expires_at.is_some() || newer.content_type.is_some() {
        return Err(fail(
            tier,
            "an overwrite replaces ETag, expiry and content type",
            newer,
        ));
    }
    Ok(())
}

async fn check_conditions(tier: &dyn Tier) -> Checked {
    let key = kv("cas/value");
    let absent = tier
        .put(
            &key,
            Bytes::from_static(b"1"),
            opts(None, None, Condition::IfMatch(ETag::of(b"0"))),
        )
        .await;
    if !matches!(
        absent,
        Err(StoreError::PreconditionFailed { current: None, .. })
    ) {
        return Err(fail(
            tier,
            "IfMatch on an absent key fails with current None",
            absent,
        ));
    }
    let v1 = tier
        .put(
            &key,
            Bytes::from_static(b"1"),
            opts(None, None, Condition::IfAbsent),
        )
        .await
        .map_err(|e| fail(tier, "IfAbsent on an absent key", e))?;
    let again = tier
        .put(
            &key,
            Bytes::from_static(b"x"),
            opts(None, None, Condition::IfAbsent),
        )
        .await;
    match &again {
        Err(StoreError::PreconditionFailed {
            key: k,
            current: Some(c),
        }) if k == "suite/cas/value" && *c == v1.etag => {}
        other => {
            return Err(fail(
                tier,
                "IfAbsent on an existing key fails naming key and ETag",
                other,
            ))
        }
    }
    let wrong = tier
        .put(
            &key,
            Bytes::from_static(b"x"),
            opts(None, None, Condition::IfMatch(ETag::of(b"x"))),
        )
        .await;
    if !matches!(&wrong, Err(StoreError::PreconditionFailed { current: Some(c), .. }) if *c == v1.etag)
    {
        return Err(fail(tier, "IfMatch with a stale ETag fails", wrong));
    }
    let v2 = tier
        .put(
            &key,
            Bytes::from_static(b"2"),
            opts(None, None, Condition::IfMatch(v1.etag.clone())),
        )
        .await
        .map_err(|e| fail(tier, "IfMatch with the current ETag", e))?;
    let body = tier
        .get(&key)
        .await
        .map_err(|e| fail(tier, "get", e))?
        .map(|e| e.body);
    if body.as_deref() != Some(b"2".as_slice()) || v2.etag != ETag::of(b"2") {
        return Err(fail(
            tier,
            "a failed condition writes nothing; a held one writes",
            body,
        ));
    }
    Ok(())
}

async fn check_blobs(tier: &dyn Tier) -> Checked {
    let body = Bytes::from(vec![7u8; 3000]);
    let key = Key::blob_of(&body);
    let wrong = tier
        .put(&Key::blob_of(b"other"), body.clone(), PutOptions::default())
        .await;
    match &wrong {
        Err(StoreError::HashMismatch { expected, actual })
            if Key::Blob(*expected) == Key::blob_of(b"other") && Key::Blob(*actual) == key => {}
        other => {
            return Err(fail(
                tier,
                "a blob under another hash is HashMismatch",
                other,
            ))
        }
    }
    let first = tier
        .put(
            &key,
            body.clone(),
            opts(
                Some("application/octet-stream"),
                Some(Duration::from_millis(1)),
                Condition::None,
            ),
        )
        .await
        .map_err(|e| fail(tier, "blob put", e))?;
    if first.expires_at.is_some() || first.size != 3000 {
        return Err(fail(tier, "blobs ignore ttl", first));
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    let second = tier
        .put(&key, body.clone(), PutOptions::default())
        .await
        .map_err(|e| fail(tier, "blob put again", e))?;
    if second != first {
        return Err(fail(
            tier,
            "writing an existing blob again returns its meta unchanged",
            (first, second),
        ));
    }
    let got = tier
        .get(&key)
        .await
        .map_err(|e| fail(tier, "blob get", e))?;
    if got.as_ref().map(|e| &e.body) != Some(&body) {
        return Err(fail(
            tier,
            "blob get returns the bytes",
            got.map(|e| e.meta),
        ));
    }
    Ok(())
}

async fn check_delete(tier: &dyn Tier) -> Checked {
    let key = kv("delete/me");
    let meta = tier
        .put(&key, Bytes::from_static(b"bye"), PutOptions::default())
        .await
        .map_err(|e| fail(tier, "put", e))?;
    let refused = tier
        .delete(&key, Condition::IfMatch(ETag::of(b"other")))
        .await;
    if !matches!(refused, Err(StoreError::PreconditionFailed { .. })) {
        return Err(fail(tier, "delete with a stale IfMatch fails", refused));
    }
    if tier
        .head(&key)
        .await
        .map_err(|e| fail(tier, "head", e))?
        .is_none()
    {
        return Err(fail(tier, "a refused delete removes nothing", ()));
    }
    let deleted = tier.delete(&key, Condition::IfMatch(meta.etag)).await;
    if !matches!(deleted, Ok(true)) {
        return Err(fail(tier, "delete of a present key is true", deleted));
    }
    let again = tier.delete(&key, Condition::IfAbsent).await;
    if !matches!(again, Ok(false)) {
        return Err(fail(
            tier,
            "delete of an absent key is false (IfAbsent reads as None)",
            again,
        ));
    }
    let gone = tier.get(&key).await.map_err(|e| fail(tier, "get", e))?;
    if gone.is_some() {
        return Err(fail(tier, "a deleted key is gone", gone));
    }
    Ok(())
}

async fn check_list(tier: &dyn Tier) -> Checked {
    for (ns, key) in [
        ("lst", "b"),
        ("lst", "a/2"),
        ("lst", "a10"),
        ("lst", "a/1"),
        ("lst", "a/1/x"),
        ("lsu", "a/0"),
    ] {
        let k = Key::kv(ns, key).map_err(|e| e.to_string())?;
        tier.put(&k, Bytes::from(key.to_owned()), PutOptions::default())
            .await
            .map_err(|e| fail(tier, "put", e))?;
    }
    let names = |listed: Vec<spike_store::Listed>| -> Vec<String> {
        listed.into_iter().map(|l| l.key.to_string()).collect()
    };
    let under_a = tier
        .list(&Prefix::kv("lst", "a/").map_err(|e| e.to_string())?)
        .await
        .map_err(|e| fail(tier, "list", e))?;
    let sizes: Vec<u64> = under_a.iter().map(|l| l.meta.size).collect();
    let under_a = names(under_a);
    if under_a != ["lst/a/1", "lst/a/1/x", "lst/a/2"] || sizes != [3, 5, 3] {
        return Err(fail(
            tier,
            "list of lst/a/ in key order with metas",
            (under_a, sizes),
        ));
    }
    let all = names(
        tier.list(&Prefix::kv("lst", "").map_err(|e| e.to_string())?)
            .await
            .map_err(|e| fail(tier, "list", e))?,
    );
    if all != ["lst/a/1", "lst/a/1/x", "lst/a/2", "lst/a10", "lst/b"] {
        return Err(fail(
            tier,
            "list of a whole namespace, only it, in key order",
            all,
        ));
    }
    let blobs: Vec<Key> = [b"one".as_slice(), b"two", b"three"]
        .iter()
        .map(|b| Key::blob_of(b))
        .collect();
    for b in [b"one".as_slice(), b"two", b"three"] {
        tier.put(
            &Key::blob_of(b),
            Bytes::copy_from_slice(b),
            PutOptions::default(),
        )
        .await
        .map_err(|e| fail(tier, "blob put", e))?;
    }
    let listed: Vec<Key> = tier
        .list(&Prefix::Blobs)
        .await
        .map_err(|e| fail(tier, "list blobs", e))?
        .into_iter()
        .map(|l| l.key)
        .filter(|k| blobs.contains(k))
        .collect();
    let mut sorted = blobs.clone();
    sorted.sort();
    if listed != sorted {
        return Err(fail(tier, "blobs listed in hash order", listed));
    }
    Ok(())
}

async fn check_expired_is_returned_as_stored(tier: &dyn Tier) -> Checked {
    let key = kv("short/lived");
    tier.put(
        &key,
        Bytes::from_static(b"soon stale"),
        opts(None, Some(Duration::from_millis(5)), Condition::None),
    )
    .await
    .map_err(|e| fail(tier, "put", e))?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let got = tier.get(&key).await.map_err(|e| fail(tier, "get", e))?;
    match &got {
        Some(e) if e.body.as_ref() == b"soon stale" && e.meta.is_expired_at(SystemTime::now()) => {
            Ok(())
        }
        other => Err(fail(
            tier,
            "an expired entry is returned as stored, expiry in the past",
            other.as_ref().map(|e| &e.meta),
        )),
    }
}

/// `tasks` concurrent writers each add 1 to a counter `rounds` times with compare-and-set
/// (read, `IfMatch` the read ETag, retry on `PreconditionFailed`); the counter must end at
/// `tasks * rounds`: a lost update means the condition was not atomic.
pub async fn check_compare_and_set_is_atomic(
    tier: Arc<dyn Tier>,
    tasks: u64,
    rounds: u64,
) -> Checked {
    let key = kv("cas/counter");
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
    if value != tasks * rounds {
        return Err(format!(
            "{}: counter is {value}, want {}: lost updates",
            tier.name(),
            tasks * rounds
        ));
    }
    Ok(())
}

/// Reads a counter written by [`increment`] (absent: 0).
pub async fn read_counter(tier: &dyn Tier, key: &Key) -> Result<u64, String> {
    match tier
        .get(key)
        .await
        .map_err(|e| fail(tier, "get counter", e))?
    {
        None => Ok(0),
        Some(e) => std::str::from_utf8(&e.body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(tier, "a counter is a number", e.body)),
    }
}

/// Adds 1 to the counter at `key`, `rounds` times, by compare-and-set.
pub async fn increment(tier: &dyn Tier, key: &Key, rounds: u64) -> Checked {
    for _ in 0..rounds {
        loop {
            let current = tier
                .get(key)
                .await
                .map_err(|e| fail(tier, "get counter", e))?;
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
                Err(e) => return Err(fail(tier, "counter put", e)),
            }
        }
    }
    Ok(())
}

/// The meta a test expects back, for readable assertions.
pub fn same_bytes(meta: &Meta, body: &[u8]) -> bool {
    meta.size == body.len() as u64 && meta.etag == ETag::of(body)
}
