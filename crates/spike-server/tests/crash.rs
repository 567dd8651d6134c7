//! SIGKILL the server process in the middle of a stream of edits: everything a client saw
//! confirmed must be there after a restart.

mod common;

use common::{open, session, spawn_server, TestResult, T};
use spike_collab::{SessionState, TextEdit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_keeps_every_confirmed_update() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut server, url) = spawn_server(dir.path()).await?;
    let mut config = session(&url, "crash");
    config.client_id = Some(4242);
    let a = open(config);
    a.create_file("stream.txt", "")?;
    a.wait_confirmed(T).await?;
    let own = spike_collab::yrs::ClientID::new(4242);

    // Stream edits; kill the server once 150 of them are confirmed, and keep typing.
    let mut clocks = Vec::new();
    let mut killed_at = None;
    for i in 0..5000usize {
        let at = a.read("stream.txt").map_or(0, |t| t.encode_utf16().count()) as u32;
        a.edit("stream.txt", &[TextEdit::insert(at, format!("<{i}>"))])?;
        clocks.push(a.state_vector().get(&own));
        if killed_at.is_none() && clocks.len() > 150 && a.confirmed().get(&own) >= clocks[150] {
            server.start_kill()?;
            killed_at = Some(i);
        }
        if let Some(k) = killed_at {
            if i >= k + 50 {
                break;
            }
        }
        if i % 4 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let killed_at = killed_at.ok_or("never saw 150 confirmed edits")?;
    server.wait().await?;
    a.wait_status(T, "offline after the kill", |s| {
        s.state != SessionState::Synced
    })
    .await?;
    let confirmed = a.confirmed().get(&own);
    let acknowledged: Vec<usize> = (0..clocks.len())
        .filter(|i| clocks[*i] <= confirmed)
        .collect();
    assert!(
        acknowledged.len() > 150,
        "only {} acknowledged",
        acknowledged.len()
    );
    // The client (which has no log) goes away: only the server's disk can bring them back.
    drop(a);

    let (_server, url) = spawn_server(dir.path()).await?;
    let b = open(session(&url, "crash"));
    b.wait_status(T, "synced", |s| s.state == SessionState::Synced)
        .await?;
    let text = b
        .read("stream.txt")
        .ok_or("stream.txt missing after restart")?;
    for i in &acknowledged {
        assert!(
            text.contains(&format!("<{i}>")),
            "acknowledged edit {i} lost (killed at {killed_at})"
        );
    }
    eprintln!(
        "killed after edit {killed_at}; {} of {} edits acknowledged, all {} present; {} survived in total",
        acknowledged.len(),
        clocks.len(),
        acknowledged.len(),
        (0..clocks.len()).filter(|i| text.contains(&format!("<{i}>"))).count()
    );
    b.close().await;
    Ok(())
}
