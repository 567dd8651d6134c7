//! `spike serve`: the room server (spike-server) on a loopback or public address. The flags,
//! access rules, logs, limits file and AI proxy are `spike_server::cli`'s, shared with the
//! standalone `spike-server` binary.

use std::process::ExitCode;

use anyhow::Context as _;

/// Arguments of `spike serve`.
pub type Args = spike_server::cli::ServeArgs;

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(spike_server::cli::serve(&args))?;
    Ok(ExitCode::SUCCESS)
}
