//! A report the server refuses with 400 is dropped and counted after one attempt, and the
//! queue moves on. One test in this binary, so the process-wide counters it reads are its own.

mod common;

use common::{metric, reporter, start_server, stored, token, TestResult, T};
use spike_report::{DropReason, Report};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_refused_with_400_is_dropped_without_retrying() -> TestResult {
    let server_dir = tempfile::tempdir()?;
    let client_dir = tempfile::tempdir()?;
    let server = start_server("127.0.0.1:0".parse()?, server_dir.path()).await;
    let queue = client_dir.path().join("reports.sqlite");
    let (_layer, handle) = reporter(&queue, &server.rooms_url(), Some(token("r")));

    let good = Report {
        kind: "sync".into(),
        message: "after the bad one".into(),
        chain: vec![],
        version: "1".into(),
        os: "linux".into(),
        room: None,
        at: None,
    };
    // A room name where the server wants an anonymised id: 400 naming `room`.
    let bad = Report {
        room: Some("team-secret".into()),
        message: "bad".into(),
        ..good.clone()
    };
    handle.report(&bad);
    handle.report(&good);
    assert!(handle.flush(T).await, "the queue did not empty");

    let reports = stored(server_dir.path());
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].report, good);
    assert_eq!(handle.dropped(DropReason::Refused), 1);
    assert_eq!(
        metric("spike_report_dropped_total{reason=\"refused\"}"),
        1.0
    );
    // Exactly one request per report: the refused one was never retried.
    assert_eq!(metric("spike_report_attempts_total"), 2.0);
    assert_eq!(metric("spike_report_sent_total"), 1.0);
    server.stop(T).await?;
    Ok(())
}
