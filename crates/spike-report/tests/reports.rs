//! Error events become reports stored by the real room server, over loopback with tokens.

mod common;

use common::{reporter, start_server, stored, subscribe, token, TestResult, T};
use spike_report::{salt_path, DropReason, Target, ROOM_ID_HEX};

#[derive(Debug, thiserror::Error)]
#[error("writing the update log")]
struct LogError {
    #[source]
    source: std::io::Error,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_event_is_stored_by_the_server_without_secrets_or_the_room_name() -> TestResult {
    let server_dir = tempfile::tempdir()?;
    let client_dir = tempfile::tempdir()?;
    let server = start_server("127.0.0.1:0".parse()?, server_dir.path()).await;
    let queue = client_dir.path().join("reports.sqlite");
    let (layer, handle) = reporter(&queue, &server.rooms_url(), Some(token("any-room")));
    handle.set_room(Some("team-secret-room"));
    let _guard = subscribe(layer);

    let error = LogError {
        source: std::io::Error::other("disk full"),
    };
    let line = line!() + 1;
    tracing::error!(
        kind = "storage",
        path = "App.tsx",
        token = "tok-SECRET-1",
        api_key = "sk-SECRET-2",
        file_content = "export const SECRET_3 = 1;",
        error = &error as &dyn std::error::Error,
        "could not save"
    );
    tracing::warn!("a warning is not reported");
    tracing::error!(target: "spike_report::sender", "the reporter's own errors are not reported");
    // No explicit kind: it comes from the target; an anyhow `{:#}` chain is split; the event's
    // own room wins over the handle's.
    tracing::error!(
        target: "spike_mirror::engine",
        room = "other-secret-room",
        error = "syncing: connecting: Connection refused (os error 111)",
        "mirror stopped"
    );
    assert!(handle.flush(T).await, "the queue did not empty");

    let reports = stored(server_dir.path());
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let first = &reports[0].report;
    assert_eq!(first.kind, "storage");
    assert_eq!(
        first.message,
        format!(
            "could not save {{path=App.tsx}} at reports (crates/spike-report/tests/reports.rs:{line})"
        )
    );
    assert_eq!(first.chain, vec!["writing the update log", "disk full"]);
    assert_eq!(first.version, "9.9.9-test");
    assert_eq!(
        first.os,
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    assert!(
        first.at.is_some_and(|at| now.as_secs() - at < 600),
        "{:?}",
        first.at
    );

    // The room id is the keyed BLAKE3 hash under the salt beside the queue.
    let salt_hex = std::fs::read_to_string(salt_path(&queue))?;
    let salt: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&salt_hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()?;
    let salt: [u8; 32] = salt.try_into().map_err(|_| "a 32-byte salt")?;
    let expected =
        blake3::keyed_hash(&salt, b"team-secret-room").to_hex()[..ROOM_ID_HEX].to_owned();
    assert_eq!(first.room.as_deref(), Some(expected.as_str()));
    assert_eq!(handle.room_id("team-secret-room"), expected);

    let second = &reports[1].report;
    assert_eq!(second.kind, "sync");
    assert!(
        second
            .message
            .starts_with("mirror stopped at spike_mirror::engine ("),
        "{}",
        second.message
    );
    assert_eq!(
        second.chain,
        vec!["syncing", "connecting", "Connection refused (os error 111)"]
    );
    assert_eq!(second.room, Some(handle.room_id("other-secret-room")));
    assert_ne!(second.room, first.room);

    // Nothing secret reached the server's files, in any form.
    server.stop(T).await?;
    for entry in std::fs::read_dir(server_dir.path())? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["SECRET", "team-secret-room", "other-secret-room", "tok-"] {
            assert!(!text.contains(secret), "{secret} in {}", path.display());
        }
    }
    assert_eq!(handle.dropped(DropReason::Refused), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_keeps_reports_queued_until_the_target_changes() -> TestResult {
    let server_dir = tempfile::tempdir()?;
    let client_dir = tempfile::tempdir()?;
    let server = start_server("127.0.0.1:0".parse()?, server_dir.path()).await;
    let queue = client_dir.path().join("reports.sqlite");
    let (layer, handle) = reporter(&queue, &server.rooms_url(), Some("forged".into()));
    let _guard = subscribe(layer);

    tracing::error!("first");
    assert!(!handle.flush(std::time::Duration::from_millis(500)).await);
    assert_eq!(handle.queued(), 1);
    assert!(stored(server_dir.path()).is_empty());

    handle.set_target(Some(Target::from_rooms_url(
        &server.rooms_url(),
        Some(token("r")),
    )?));
    assert!(handle.flush(T).await, "the queue did not empty");
    let reports = stored(server_dir.path());
    assert_eq!(reports.len(), 1);
    assert!(reports[0].report.message.starts_with("first at reports"));
    server.stop(T).await?;
    Ok(())
}
