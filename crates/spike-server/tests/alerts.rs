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
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "thanks"
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
