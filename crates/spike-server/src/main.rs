//! `spike-server`: the room server alone (what `spike serve` runs, with the same flags), for
//! deployments without the CLI and for the tests that must kill a server process. See
//! `spike_server::cli` for the flags, access, logs, limits and the AI proxy.

use clap::Parser;

/// The Spike room server: y-websocket rooms at ws://<listen>/rooms/<room>, persisted in --data.
#[derive(Parser)]
#[command(name = "spike-server", version)]
struct Cli {
    #[command(flatten)]
    serve: spike_server::cli::ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.serve.init_logs();
    spike_server::cli::serve(&cli.serve).await?;
    Ok(())
}
