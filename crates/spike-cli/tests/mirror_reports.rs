//! `spike mirror` reports its errors to the room's server: a state file that cannot be written
//! (a folder sits where it goes) becomes a report in the server's store, with the local folder
//! replaced by `<dir>` and the room anonymised.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kill, Serve};
use spike_server::reports::{ReportStore, StoredReport};

#[test]
fn mirror_errors_reach_the_room_servers_report_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &["--open", "--data", "srv"], &[], Stdio::null());
    let base = &serve.base;

    let folder = dir.path().join("m");
    std::fs::create_dir_all(folder.join(".spike/errs.mirror.json")).expect("a folder in the way");
    let mirror = Command::new(env!("CARGO_BIN_EXE_spike"))
        .arg("mirror")
        .arg(format!("{base}/errs"))
        .arg(&folder)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn spike mirror");
    let mirror = Kill(mirror);

    let deadline = Instant::now() + Duration::from_secs(60);
    let reports: Vec<StoredReport> = loop {
        let stored = ReportStore::open(&dir.path().join("srv"))
            .and_then(|s| s.since(0))
            .unwrap_or_default();
        if !stored.is_empty() {
            break stored;
        }
        assert!(Instant::now() < deadline, "no report reached the server");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(mirror);
    drop(serve);

    let report = &reports[0].report;
    assert_eq!(report.kind, "sync");
    assert!(
        report
            .message
            .starts_with("mirroring failed at spike_mirror::reported ("),
        "{}",
        report.message
    );
    let chain = report.chain.join(": ");
    assert!(chain.contains("<dir>"), "{chain}");
    let local = dir.path().display().to_string();
    assert!(!chain.contains(&local), "{chain}");
    assert!(!report.message.contains(&local), "{}", report.message);
    assert_eq!(report.version, env!("CARGO_PKG_VERSION"));
    let room = report.room.as_deref().expect("an anonymised room id");
    assert_eq!(room.len(), 32);
    assert!(room.bytes().all(|b| b.is_ascii_hexdigit()), "{room}");
    assert!(folder.join(".spike/reports.sqlite").is_file());
}
