//! The memory tier: the shared contract, its byte bound, its stale window, and its metrics.

mod recorded;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::DebuggingRecorder;
use recorded::Recorded;
use spike_store::conformance;
use spike_store::{Key, MemoryTier, Metered, PutOptions, StoreError, Tier};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn kv(key: &str) -> Result<Key, StoreError> {
    Key::kv("mem", key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tier_keeps_the_tier_contract() {
    conformance::check_tier(Arc::new(MemoryTier::new(16 * 1024 * 1024))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_compare_and_set_is_atomic_under_concurrent_writers() -> TestResult {
    let tier: Arc<dyn Tier> = Arc::new(MemoryTier::new(1024 * 1024));
    conformance::check_compare_and_set_is_atomic(tier, 8, 200).await?;
    Ok(())
}

#[tokio::test]
async fn memory_stays_within_its_byte_bound_evicting_the_least_recently_used() -> TestResult {
    let bound = 64 * 1024;
    let tier = MemoryTier::new(bound);
    let body = Bytes::from(vec![1u8; 4000]);
    for i in 0..10 {
        tier.put(&kv(&format!("k{i}"))?, body.clone(), PutOptions::default())
            .await?;
    }
    // k0 is read, so it is more recently used than k1..k9 when the bound starts to bite.
    assert!(tier.get(&kv("k0")?).await?.is_some());
    let _ = tier.weighted_bytes();
    for i in 10..40 {
        tier.put(&kv(&format!("k{i}"))?, body.clone(), PutOptions::default())
            .await?;
        if i % 4 == 0 {
            assert!(tier.get(&kv("k0")?).await?.is_some(), "k0 read at {i}");
            let _ = tier.weighted_bytes();
        }
    }
    let used = tier.weighted_bytes();
    assert!(used <= bound, "{used} bytes over the bound {bound}");
    // ~4.2 KB per entry: 15 fit; far fewer than the 40 written.
    let len = tier.len();
    assert!((10..=15).contains(&len), "{len} entries");
    assert!(
        tier.get(&kv("k39")?).await?.is_some(),
        "the newest entry stays"
    );
    assert!(
        tier.get(&kv("k0")?).await?.is_some(),
        "the recently read entry stays"
    );
    assert!(
        tier.get(&kv("k1")?).await?.is_none(),
        "the least recently used went"
    );
    Ok(())
}

#[tokio::test]
async fn memory_refuses_a_body_larger_than_its_bound() -> TestResult {
    let tier = MemoryTier::new(10_000);
    match tier
        .put(
            &kv("big")?,
            Bytes::from(vec![0u8; 20_000]),
            PutOptions::default(),
        )
        .await
    {
        Err(StoreError::TooLarge {
            size: 20_000,
            limit: 10_000,
        }) => Ok(()),
        other => Err(format!("expected TooLarge, got {other:?}").into()),
    }
}

#[tokio::test]
async fn memory_keeps_an_expired_entry_for_its_stale_window_then_forgets_it() -> TestResult {
    // Generous margins: the checks must hold on a loaded CI machine.
    let tier = MemoryTier::with_stale_window(1024 * 1024, Duration::from_millis(1500));
    let options = PutOptions {
        ttl: Some(Duration::from_millis(20)),
        ..PutOptions::default()
    };
    tier.put(&kv("ttl")?, Bytes::from_static(b"v"), options)
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let expired = tier
        .get(&kv("ttl")?)
        .await?
        .ok_or("gone inside the stale window")?;
    assert!(expired.meta.is_expired_at(std::time::SystemTime::now()));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(
        tier.get(&kv("ttl")?).await?.is_none(),
        "kept past the stale window"
    );
    Ok(())
}

#[test]
fn memory_records_hits_misses_bytes_latency_and_evictions() -> TestResult {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || -> TestResult {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        runtime.block_on(async {
            let tier = Metered::new(MemoryTier::new(20_000));
            for i in 0..10 {
                tier.put(
                    &kv(&format!("k{i}"))?,
                    Bytes::from(vec![0u8; 3000]),
                    PutOptions::default(),
                )
                .await?;
            }
            tier.inner().weighted_bytes();
            assert!(tier.get(&kv("k9")?).await?.is_some());
            assert!(tier.get(&kv("nope")?).await?.is_none());
            Ok::<_, Box<dyn std::error::Error>>(())
        })
    })?;
    let recorded = Recorded::take(&snapshotter);
    let tier = [("tier", "memory")];
    assert_eq!(recorded.get("spike_store_hits_total", &tier), Some(1));
    assert_eq!(recorded.get("spike_store_misses_total", &tier), Some(1));
    assert_eq!(
        recorded.get(
            "spike_store_bytes_total",
            &[("tier", "memory"), ("op", "put")]
        ),
        Some(30_000)
    );
    assert_eq!(
        recorded.get(
            "spike_store_bytes_total",
            &[("tier", "memory"), ("op", "get")]
        ),
        Some(3000)
    );
    assert_eq!(
        recorded.get(
            "spike_store_latency_seconds",
            &[("tier", "memory"), ("op", "put")]
        ),
        Some(10)
    );
    // 3,000-byte bodies (+ key + overhead) in a 20,000-byte bound: 6 fit, 4 were evicted.
    assert_eq!(recorded.get("spike_store_evictions_total", &tier), Some(4));
    Ok(())
}
