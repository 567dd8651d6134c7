//! A fresh server's first `/metrics` scrape already holds every series, at zero, and the
//! process series, as Prometheus exporters publish them. A server process of its own, so that
//! no other test's traffic is in its counters.

mod common;

use common::{spawn_server, TestResult, T};

/// The value of `series` (name and labels exactly as rendered) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_scrape_publishes_every_series_at_zero() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_server, url) = spawn_server(dir.path()).await?;
    let http = url
        .replace("ws://", "http://")
        .replace("/rooms", "/metrics");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = tokio::time::timeout(T, reqwest::get(&http))
        .await??
        .text()
        .await?;
    for series in [
        "spike_connections",
        "spike_rooms_open",
        "spike_updates_in_total",
        "spike_updates_out_total",
        "spike_bytes_in_total",
        "spike_bytes_out_total",
        "spike_view_writes_dropped_total",
        "spike_update_gaps_total",
        "spike_pending_expired_total",
        "spike_room_reloads_total",
        "spike_limit_refusals_total{kind=\"slow_client\"}",
        "spike_limit_refusals_total{kind=\"room_size\"}",
        "spike_limit_refusals_total{kind=\"handshake_timeout\"}",
        "spike_auth_refusals_total{reason=\"forged\"}",
        "spike_auth_refusals_total{reason=\"shared_namespace\"}",
        "spike_awareness_refused_total{reason=\"not_owner\"}",
        "spike_fanout_seconds_count",
        "spike_persist_seconds_count",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("spike_limit_refusals_total{"))
            .count(),
        spike_server::LimitKind::ALL.len(),
        "{text}"
    );
    // The process series, read at the scrape.
    let rss = value(&text, "process_resident_memory_bytes").ok_or("no process RSS")?;
    assert!(rss > 1e6, "RSS {rss}");
    let fds = value(&text, "process_open_fds").ok_or("no open fds")?;
    assert!(fds >= 3.0, "open fds {fds}");
    assert!(
        value(&text, "process_cpu_seconds_total").is_some(),
        "{text}"
    );
    assert!(value(&text, "process_start_time_seconds").is_some_and(|t| t > 1.6e9));
    Ok(())
}
