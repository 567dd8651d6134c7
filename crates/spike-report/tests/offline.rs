//! Issue 7's "a report sent offline arrives after reconnect": a report made while no server
//! listens stays in the queue file across a restart of the reporter, and reaches the server
//! once it starts on that port.

mod common;

use std::time::Duration;

use common::{free_port, reporter, start_server, stored, subscribe, token, TestResult, T};
use spike_report::{Queue, QueueLimits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_made_offline_arrives_after_reconnect() -> TestResult {
    // The server installs the process' metrics recorder; install it now to count the attempts
    // made before any server runs.
    spike_server::observe::install_recorder();
    let server_dir = tempfile::tempdir()?;
    let client_dir = tempfile::tempdir()?;
    let queue = client_dir.path().join("reports.sqlite");
    let port = free_port();
    let rooms_url = format!("ws://127.0.0.1:{port}/rooms");

    let (layer, handle) = reporter(&queue, &rooms_url, Some(token("r")));
    {
        let _guard = subscribe(layer);
        tracing::error!(attempt = 3, "offline failure");
    }
    // Several attempts fail (connection refused) and the report stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(common::metric("spike_report_attempts_total") >= 2.0);
    assert_eq!(handle.queued(), 1);
    handle.stop().await;

    // The app restarts: the file still holds the report.
    assert_eq!(Queue::open(&queue, QueueLimits::default())?.len()?, 1);
    let (_layer, handle) = reporter(&queue, &rooms_url, Some(token("r")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handle.queued(), 1);
    assert!(stored(server_dir.path()).is_empty());

    let server = start_server(format!("127.0.0.1:{port}").parse()?, server_dir.path()).await;
    assert!(handle.flush(T).await, "the queued report was not delivered");
    let reports = stored(server_dir.path());
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert!(
        reports[0]
            .report
            .message
            .starts_with("offline failure {attempt=3} at offline ("),
        "{}",
        reports[0].report.message
    );
    assert_eq!(common::metric("spike_report_sent_total"), 1.0);
    assert_eq!(Queue::open(&queue, QueueLimits::default())?.len()?, 0);
    server.stop(T).await?;
    Ok(())
}
