//! `POST /v1/reports` over loopback: tokens, validation, size and rate limits, SQLite storage,
//! and the count by kind. This binary holds this one test, so the process-wide counters it
//! reads are its own (under nextest and `cargo test` alike).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{config, metric, TestResult, TestServer};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::reports::{Report, ReportStore};
use spike_server::{Access, Rate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `body` to `/v1/reports`; returns the status and the answer's body.
async fn post(
    addr: SocketAddr,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    let status = out.get(9..12).ok_or("short answer")?.parse::<u16>()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_checked_stored_and_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = TokenKey::new(&Secret::new(vec![6u8; 32])?);
    let mut cfg = config(dir.path());
    cfg.access = Access::Tokens(key.clone());
    cfg.limits.report_rate = Some(Rate::new(1, 8));
    cfg.limits.max_report_bytes = 2048;
    let server = TestServer::start(cfg).await;
    // A view token of any room may report.
    let token = key.issue(&Claims::new("any", Role::View, Duration::from_secs(60)))?;
    let good = r#"{"kind":"sync","message":"sync failed","chain":["connection refused","os error 111"],"version":"0.1.0","os":"linux","room":"9f86d081884c7d65","at":1764457200}"#;

    assert_eq!(post(server.addr, None, good).await?.0, 401);
    let forged = TokenKey::new(&Secret::new(vec![7u8; 32])?).issue(&Claims::new(
        "any",
        Role::Edit,
        Duration::from_secs(60),
    ))?;
    let (status, body) = post(server.addr, Some(&forged), good).await?;
    assert_eq!(
        (status, body.contains("signature is invalid")),
        (401, true),
        "{body}"
    );

    assert_eq!(
        post(server.addr, Some(&token), good).await?,
        (201, r#"{"id":1}"#.to_owned())
    );
    let (status, body) = post(
        server.addr,
        Some(&token),
        r#"{"kind":"error","message":"m","version":"1","os":"linux","room":"team-secret"}"#,
    )
    .await?;
    assert_eq!(status, 400);
    assert!(body.starts_with("report field `room`"), "{body}");
    let (status, body) = post(server.addr, Some(&token), "{\n\"kind\": \"error\",\n}").await?;
    assert_eq!(status, 400);
    assert!(body.contains("line 3"), "{body}");
    let big = format!(
        r#"{{"kind":"error","message":"{}","version":"1","os":"linux"}}"#,
        "x".repeat(3000)
    );
    let (status, body) = post(server.addr, Some(&token), &big).await?;
    assert_eq!(status, 413);
    assert!(body.contains("over the limit of 2048 bytes"), "{body}");
    let other = r#"{"kind":"weird-thing","message":"m","version":"1","os":"linux"}"#;
    assert_eq!(post(server.addr, Some(&token), other).await?.0, 201);

    // Seven reports so far; the eighth fits the burst, the ninth does not.
    assert_eq!(post(server.addr, Some(&token), other).await?.0, 201);
    let (status, body) = post(server.addr, Some(&token), other).await?;
    assert_eq!(status, 429, "{body}");
    assert!(body.starts_with("report rate limit"), "{body}");

    let stored = ReportStore::open(dir.path())?.since(0)?;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].report, Report::parse(good.as_bytes())?);
    assert_eq!(stored[1].report.kind, "weird-thing");
    assert_eq!(metric("spike_reports_total{kind=\"sync\"}"), 1.0);
    assert_eq!(metric("spike_reports_total{kind=\"other\"}"), 2.0);
    assert_eq!(
        metric("spike_limit_refusals_total{kind=\"report_rate\"}"),
        1.0
    );
    assert_eq!(
        metric("spike_limit_refusals_total{kind=\"body_size\"}"),
        1.0
    );
    assert_eq!(metric("spike_auth_refusals_total{reason=\"missing\"}"), 1.0);
    assert_eq!(metric("spike_auth_refusals_total{reason=\"forged\"}"), 1.0);
    server.stop().await;
    Ok(())
}
