//! Room files damaged on disk while the server is stopped: after a restart each room loads with
//! what survived, and the damaged file is kept aside beside it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, metric, open, session, TestResult, TestServer, T};
use spike_collab::{RoomDoc, Session, SessionState, TextEdit};

/// Waits (up to [`T`]) until no room log has a `-wal` left: every room's log is closed. (A
/// moved-aside file keeps the WAL it was found with.)
async fn wait_closed(rooms: &Path) -> TestResult {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let open_wal = std::fs::read_dir(rooms)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .any(|n| n.ends_with("-wal") && !n.contains(".damaged-"));
        if !open_wal {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("a room log was never closed".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The files in `rooms` named `<room>.damaged-*.sqlite3`.
fn aside(rooms: &Path, room: &str) -> Result<Vec<PathBuf>, std::io::Error> {
    let prefix = format!("{room}.damaged-");
    Ok(std::fs::read_dir(rooms)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".sqlite3"))
        })
        .collect())
}

async fn synced(
    url: &str,
    room: &str,
) -> Result<Session, Box<dyn std::error::Error + Send + Sync>> {
    let s = open(session(url, room));
    s.wait_status(T, "synced", |st| st.state == SessionState::Synced)
        .await?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_room_files_load_what_survived_and_are_kept_aside() -> TestResult {
    let dir = tempfile::tempdir()?;
    let rooms = dir.path().join("rooms");

    // Room `header`: one author's files and edits. Room `blob`: three authors, one file each.
    let server = TestServer::start(config(dir.path())).await;
    let a = synced(&server.url(), "header").await?;
    a.create_file("App.tsx", "export default 1;\n")?;
    a.create_file("big.txt", &"0123456789".repeat(2000))?;
    for i in 0..30 {
        a.edit("App.tsx", &[TextEdit::insert(0, format!("// {i}\n"))])?;
    }
    a.wait_confirmed(T).await?;
    let header_files = a.files();
    a.close().await;
    for name in ["one.ts", "two.ts", "three.ts"] {
        let b = synced(&server.url(), "blob").await?;
        b.create_file(
            name,
            &format!("export const {} = 1;\n", name.replace(".ts", "")),
        )?;
        b.wait_confirmed(T).await?;
        b.close().await;
    }
    server.stop().await;
    wait_closed(&rooms).await?;

    // Damage both files while the server is stopped.
    let header_path = rooms.join("header.sqlite3");
    let mut bytes = std::fs::read(&header_path)?;
    bytes[..100].fill(0);
    std::fs::write(&header_path, &bytes)?;
    let blob_path = rooms.join("blob.sqlite3");
    {
        // Unloading compacted the room into its snapshot: add a garbage row, then a good one.
        let conn = rusqlite::Connection::open(&blob_path)?;
        let four = RoomDoc::with_client_id(99)
            .create_file("four.ts", "export const four = 1;\n")?
            .ok_or("no update")?;
        conn.execute(
            "INSERT INTO updates (data) VALUES (?1), (?2)",
            rusqlite::params![&b"\x01\x05garbage"[..], four],
        )?;
    }

    let before = metric("spike_log_recoveries_total{kind=\"not_a_database\"}");
    let server = TestServer::start(config(dir.path())).await;
    let a = synced(&server.url(), "header").await?;
    assert_eq!(
        a.files(),
        header_files,
        "every update of `header` recovered"
    );
    let b = synced(&server.url(), "blob").await?;
    let expected: BTreeMap<String, String> = ["one", "two", "three", "four"]
        .map(|n| (format!("{n}.ts"), format!("export const {n} = 1;\n")))
        .into();
    assert_eq!(b.files(), expected, "all but the garbage update of `blob`");
    assert_eq!(aside(&rooms, "header")?.len(), 1);
    assert_eq!(aside(&rooms, "blob")?.len(), 1);
    assert_eq!(
        std::fs::read(&aside(&rooms, "header")?[0])?.len(),
        bytes.len(),
        "the damaged file is kept as it was"
    );
    assert!(metric("spike_log_recoveries_total{kind=\"not_a_database\"}") >= before + 1.0);
    assert!(metric("spike_log_recoveries_total{kind=\"bad_update\"}") >= 1.0);

    // The recovered rooms keep working.
    a.edit("App.tsx", &[TextEdit::insert(0, "// after\n")])?;
    a.wait_confirmed(T).await?;
    a.close().await;
    b.close().await;
    server.stop().await;
    wait_closed(&rooms).await?;
    let server = TestServer::start(config(dir.path())).await;
    let c = synced(&server.url(), "header").await?;
    assert!(c
        .read("App.tsx")
        .is_some_and(|t| t.starts_with("// after\n// 29\n")));
    assert_eq!(aside(&rooms, "header")?.len(), 1, "no second recovery");
    c.close().await;
    server.stop().await;
    Ok(())
}
