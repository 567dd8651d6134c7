//! An alert rule on the server's own metrics fires once and only once per window, and reaches a
//! local webhook as one JSON POST.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{config, TestResult, TestServer, T};
use spike_server::alerts::{Alert, AlertRule, AlertRules, Condition};
use spike_server::auth::{Claims, Role, Secret, TokenKey};
use spike_server::Access;
use tokio::sync::mpsc;

/// A webhook on a loopback port that hands every POSTed body to the returned channel.
async fn webhook() -> Result<(String, mpsc::UnboundedReceiver<String>), std::io::Error> {
    webhook_answering(Vec::new()).await
}

/// A webhook whose first answers are `statuses` (then 200). Each POST reaches the returned
/// channel as `<status> <body>` (the status it was answered), or as the body alone when
/// `statuses` is empty.
async fn webhook_answering(
    statuses: Vec<u16>,
) -> Result<(String, mpsc::UnboundedReceiver<String>), std::io::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let scripted = !statuses.is_empty();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(
        statuses
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            let status = statuses
                .lock()
                .map(|mut s| s.pop_front().unwrap_or(200))
                .unwrap_or(200);
            async move {
                let _ = tx.send(if scripted {
                    format!("{status} {body}")
                } else {
                    body
                });
                (
                    axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK),
                    "thanks",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, rx))
}

/// `n` connections with a forged token, each refused with 401.
async fn forge(url: &str, n: usize) -> TestResult {
    let forged = TokenKey::new(&Secret::new(vec![9u8; 32])?).issue(&Claims::new(
        "r",
        Role::Edit,
        Duration::from_secs(60),
    ))?;
    for _ in 0..n {
        match tokio_tungstenite::connect_async(format!("{url}/r?token={forged}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401)
            }
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_fires_once_per_window_and_posts_to_the_webhook() -> TestResult {
    let (hook, mut posts) = webhook().await?;
    let window = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.access = Access::Tokens(TokenKey::new(&Secret::new(vec![1u8; 32])?));
    cfg.alerts = Some(AlertRules {
        webhook: Some(hook),
        interval_secs: 0.05,
        rules: vec![AlertRule {
            name: "token-guessing".into(),
            metric: "spike_auth_refusals_total".into(),
            labels: BTreeMap::from([("reason".into(), "forged".into())]),
            condition: Condition::Increase,
            over: 2.0,
            window_secs: window.as_secs_f64(),
        }],
    });
    let server = TestServer::start(cfg).await;
    // Let the evaluator take its baseline sample.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Two refusals are not over 2: nothing fires.
    forge(&server.url(), 2).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(posts.try_recv().is_err(), "fired at 2");

    // A third one is: exactly one POST, with the rule and the increase.
    forge(&server.url(), 1).await?;
    let body = tokio::time::timeout(T, posts.recv())
        .await?
        .ok_or("webhook gone")?;
    let alert: Alert = serde_json::from_str(&body)?;
    assert_eq!(alert.rule, "token-guessing");
    assert_eq!(alert.metric, "spike_auth_refusals_total");
    assert_eq!(alert.value, 3.0);
    assert_eq!(alert.over, 2.0);
    // More refusals half a window later do not fire again within the window.
    tokio::time::sleep(window / 2).await;
    forge(&server.url(), 5).await?;
    tokio::time::sleep(window * 3 / 10).await;
    assert!(posts.try_recv().is_err(), "fired twice within one window");

    // When the window after the first alert ends, the last window's increase is those five:
    // it fires once more, then stays quiet with nothing new.
    let body = tokio::time::timeout(T, posts.recv())
        .await?
        .ok_or("webhook gone")?;
    let again: Alert = serde_json::from_str(&body)?;
    assert_eq!(again.value, 5.0);
    tokio::time::sleep(window * 2).await;
    assert!(posts.try_recv().is_err(), "fired with nothing new");
    server.stop().await;
    Ok(())
}

/// A server whose rule fires at the first wrong-room token (a counter the other test here does
/// not move: metrics are process-wide), posting to `hook`; one such token is sent.
async fn fire_once(
    hook: String,
) -> Result<(TestServer, tempfile::TempDir), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    let key = TokenKey::new(&Secret::new(vec![1u8; 32])?);
    cfg.access = Access::Tokens(key.clone());
    cfg.alerts = Some(AlertRules {
        webhook: Some(hook),
        interval_secs: 0.05,
        rules: vec![AlertRule {
            name: "wrong-room".into(),
            metric: "spike_auth_refusals_total".into(),
            labels: BTreeMap::from([("reason".into(), "wrong_room".into())]),
            condition: Condition::Increase,
            over: 0.0,
            window_secs: 60.0,
        }],
    });
    let server = TestServer::start(cfg).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other_room = key.issue(&Claims::new("other", Role::Edit, Duration::from_secs(60)))?;
    match tokio_tungstenite::connect_async(format!("{}/r?token={other_room}", server.url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    Ok((server, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_is_retried_and_one_that_refuses_is_not() -> TestResult {
    // 503, then 429, then taken: three POSTs of the same alert.
    let (hook, mut posts) = webhook_answering(vec![503, 429]).await?;
    let (server, _data) = fire_once(hook).await?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let post = tokio::time::timeout(T, posts.recv()).await?.ok_or("gone")?;
        seen.push(post);
    }
    let statuses: Vec<&str> = seen.iter().filter_map(|p| p.split(' ').next()).collect();
    assert_eq!(statuses, ["503", "429", "200"]);
    let bodies: Vec<&str> = seen
        .iter()
        .filter_map(|p| p.split_once(' ').map(|(_, b)| b))
        .collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    let alert: Alert = serde_json::from_str(bodies[0])?;
    assert_eq!(alert.rule, "wrong-room");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(posts.try_recv().is_err(), "posted again after it was taken");
    server.stop().await;

    // 400: the webhook will not take it; one POST only.
    let (hook, mut posts) = webhook_answering(vec![400]).await?;
    let (server, _data) = fire_once(hook).await?;
    let post = tokio::time::timeout(T, posts.recv()).await?.ok_or("gone")?;
    assert!(post.starts_with("400 "), "{post}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(posts.try_recv().is_err(), "a refused alert was retried");
    server.stop().await;
    Ok(())
}
