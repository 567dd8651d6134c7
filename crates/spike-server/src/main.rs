//! `spike-server`: the room server alone (what `spike serve` runs), for deployments without the
//! CLI and for the tests that must kill a server process.
//!
//! Usage: `spike-server [--listen 127.0.0.1:8787] [--data DIR] [--grace-ms N] [--secret-file F]
//! [--open] [--log-format text|json] [--alert-rules FILE]`. Access as in `spike serve`
//! ([`spike_server::Access::choose`]; `SPIKE_SECRET`); logs and alerts as in `spike serve`.

use anyhow::{bail, Context as _};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:8787".to_owned();
    let mut data = std::path::PathBuf::from("spike-data");
    let mut grace = None;
    let mut secret_file: Option<std::path::PathBuf> = None;
    let mut open = false;
    let mut json = false;
    let mut alert_rules: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--data" => data = value()?.into(),
            "--grace-ms" => grace = Some(value()?.parse::<u64>().context("--grace-ms")?),
            "--secret-file" => secret_file = Some(value()?.into()),
            "--open" => open = true,
            "--log-format" => {
                json = match value()?.as_str() {
                    "json" => true,
                    "text" => false,
                    other => bail!("--log-format {other:?}: expected text or json"),
                }
            }
            "--alert-rules" => alert_rules = Some(value()?.into()),
            other => bail!("unknown argument {other:?}; usage: spike-server [--listen ADDR] [--data DIR] [--grace-ms N] [--secret-file F] [--open] [--log-format text|json] [--alert-rules FILE]"),
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        logs.init();
    }
    let listen: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:8787"))?;
    let env_secret = std::env::var("SPIKE_SECRET").ok();
    let (access, how) = spike_server::Access::choose(
        listen,
        &data,
        secret_file.as_deref(),
        env_secret.as_deref(),
        open,
    )?;
    let mut config = spike_server::ServerConfig::new(data);
    config.access = access;
    config.check_listen(listen)?;
    if let Some(path) = &alert_rules {
        config.alerts = Some(spike_server::alerts::AlertRules::from_file(path)?);
    }
    if let Some(ms) = grace {
        config.unload_grace = std::time::Duration::from_millis(ms);
    }
    let server = spike_server::Server::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!("{how}");
    // The address line is what scripts and tests wait for (the port may have been 0).
    println!("listening on ws://{}/rooms", listener.local_addr()?);
    server
        .serve(listener, spike_server::shutdown_signal())
        .await?;
    Ok(())
}
