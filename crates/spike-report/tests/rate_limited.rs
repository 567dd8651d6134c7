//! A server that answers 429 with `Retry-After` is waited for, not hammered: every report
//! arrives, with one retry per refusal. One test in this binary, so the process-wide counters
//! it reads are its own.

mod common;

use std::time::{Duration, Instant};

use common::{key, metric, reporter, start_server_with, stored, token, TestResult, T};
use spike_report::Report;
use spike_server::{Access, Rate, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() -> TestResult {
    let server_dir = tempfile::tempdir()?;
    let client_dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(server_dir.path());
    config.access = Access::Tokens(key());
    // One report a second: the second and third are refused with `Retry-After: 1`.
    config.limits.report_rate = Some(Rate::new(1, 1));
    let server = start_server_with("127.0.0.1:0".parse()?, config).await;
    let queue = client_dir.path().join("reports.sqlite");
    // The sender's own backoff (20–200 ms) would retry several times a second.
    let (_layer, handle) = reporter(&queue, &server.rooms_url(), Some(token("r")));

    let started = Instant::now();
    for i in 0..3 {
        handle.report(&Report {
            kind: "network".into(),
            message: format!("report {i}"),
            chain: vec![],
            version: "1".into(),
            os: "linux".into(),
            room: None,
            at: None,
        });
    }
    assert!(handle.flush(T).await, "the queue did not empty");
    let elapsed = started.elapsed();

    let messages: Vec<String> = stored(server_dir.path())
        .into_iter()
        .map(|r| r.report.message)
        .collect();
    assert_eq!(messages, vec!["report 0", "report 1", "report 2"]);
    let refused = metric("spike_limit_refusals_total{kind=\"report_rate\"}");
    assert!((1.0..=2.0).contains(&refused), "{refused} refusals");
    assert_eq!(metric("spike_report_attempts_total"), 3.0 + refused);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    server.stop(T).await?;
    Ok(())
}
