//! `spike-loadgen`: the rooms half of `cargo xtask bench`.
//!
//! Starts each server in turn (spike-server, `@y/websocket-server`, Hocuspocus) as a child process
//! on a free loopback port, drives it with the same load from one single-threaded tokio runtime
//! (`--clients` clients in `--rooms` rooms, each inserting `--rate` characters a second for
//! `--warmup` + `--seconds` seconds), kills it, and prints a markdown table: deliveries per second
//! (an update received by a client other than its author), p50/p99 delivery latency, the server's
//! CPU seconds (user + system, `/proc/<pid>/stat`) per 1,000 deliveries inside the measured
//! window, its peak RSS (`VmHWM`) and each peer's CPU per delivery as a multiple of Spike's.
//! Then replays a seeded synthetic editing trace through a Spike room document.
//!
//! Usage: `spike-loadgen --node-dir tests/node --spike-server target/release/spike-server
//! [--clients 1000] [--rooms 100] [--rate 1] [--seconds 20] [--warmup 5]
//! [--servers spike,y-websocket-server,hocuspocus] [--trace-ops 20000]`.

mod load;
mod proc;
mod servers;
mod trace;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::load::LoadConfig;
use crate::servers::{Kind, Programs};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Load-test Spike's room server against @y/websocket-server and Hocuspocus")]
struct Args {
    /// Clients in all.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Rooms; clients are spread round-robin.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Inserts per client per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Unmeasured typing before the window, seconds.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Servers to run, comma-separated: spike, y-websocket-server, hocuspocus.
    #[arg(long, default_value = "spike,y-websocket-server,hocuspocus")]
    servers: String,
    /// `tests/node` with its node_modules installed.
    #[arg(long, default_value = "tests/node")]
    node_dir: PathBuf,
    /// The spike-server binary (default: next to this one).
    #[arg(long)]
    spike_server: Option<PathBuf>,
    /// Where the spike server's temporary data folder goes (default: the system temp dir).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Operations of the synthetic editing trace; 0 skips the replay. `RoomDoc::edit` copies the
    /// whole text per edit (quadratic: 100,000 ops take ~50 s), hence the modest default.
    #[arg(long, default_value_t = 20_000)]
    trace_ops: usize,
    /// Seed of the trace.
    #[arg(long, default_value_t = 42)]
    trace_seed: u64,
}

/// One server's row.
struct Row {
    name: &'static str,
    report: load::LoadReport,
    peak_rss_mib: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kinds = args
        .servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Kind::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spike_server = match args.spike_server.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no folder")?
            .join(format!("spike-server{}", std::env::consts::EXE_SUFFIX)),
    };
    let node_dir = std::path::absolute(&args.node_dir)?;
    let programs = Programs {
        spike_server: std::path::absolute(spike_server)?,
        node_dir,
        scratch: args.scratch.clone().unwrap_or_else(std::env::temp_dir),
    };
    if let Some(limit) = proc::open_files_limit() {
        if limit < args.clients as u64 + 64 {
            tracing::warn!(
                limit,
                clients = args.clients,
                "the open-files limit is below the client count: raise it (ulimit -n)"
            );
        }
    }
    let config = LoadConfig {
        clients: args.clients,
        rooms: args.rooms,
        rate: args.rate,
        warmup: Duration::from_secs_f64(args.warmup),
        seconds: Duration::from_secs_f64(args.seconds),
        room_prefix: format!("bench{}", fastrand::u32(..)),
    };
    // One thread: the generator must stay far cheaper than the servers it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for kind in kinds {
        tracing::info!(server = kind.name(), "starting");
        let server = servers::start(kind, &programs)?;
        let report = rt.block_on(load::run(&server.target, &config, &server))?;
        let peak_rss_mib = proc::peak_rss_mib(server.pid());
        drop(server);
        if report.delivered < report.expected {
            tracing::warn!(
                server = kind.name(),
                delivered = report.delivered,
                expected = report.expected,
                "some updates were not delivered"
            );
        }
        tracing::info!(
            server = kind.name(),
            loadgen_cpu_s = report.loadgen_cpu_seconds,
            "done"
        );
        rows.push(Row {
            name: kind.name(),
            report,
            peak_rss_mib,
        });
    }
    print_table(&rows, &config);

    if args.trace_ops > 0 {
        let ops = trace::synthetic(args.trace_ops, args.trace_seed);
        let r = trace::replay(&ops)?;
        println!();
        println!(
            "Editing trace (synthetic, seed {}, {} single-character ops, final length {} UTF-16 units):",
            args.trace_seed, r.ops, r.final_len
        );
        println!();
        println!("| replay | time ms | ops/s |");
        println!("|---|---:|---:|");
        for (name, d) in [
            ("RoomDoc::edit, one transaction per op", r.local),
            (
                "plain yrs Y.Text (UTF-16), one transaction per op",
                r.plain_yrs,
            ),
            ("apply the per-op updates to a fresh RoomDoc", r.remote),
            ("load the final state into a fresh RoomDoc", r.load),
        ] {
            println!(
                "| {name} | {:.1} | {:.0} |",
                d.as_secs_f64() * 1e3,
                r.ops as f64 / d.as_secs_f64().max(1e-9)
            );
        }
        println!();
        println!(
            "Encoded: final state {} bytes (encode_state, lib0 v1); per-op updates {} bytes in all.",
            r.state_bytes, r.updates_bytes
        );
    }
    Ok(())
}

fn print_table(rows: &[Row], config: &LoadConfig) {
    let spike_cpu = rows
        .iter()
        .find(|r| r.name == Kind::Spike.name())
        .and_then(|r| r.report.cpu_per_1k());
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".to_owned(),
    };
    println!(
        "Rooms load: {} clients in {} rooms, {} inserts/client/s, {:.0} s measured after {:.0} s warm-up.",
        config.clients,
        config.rooms,
        config.rate,
        config.seconds.as_secs_f64(),
        config.warmup.as_secs_f64()
    );
    println!();
    println!("| server | clients | rooms | updates/s delivered | p50 ms | p99 ms | CPU s per 1k delivered | peak RSS MB | CPU/update vs Spike | server CPU % (of it kernel) | delivered/expected | loadgen CPU % |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let r = &row.report;
        let w = r.window_seconds.max(1e-9);
        let ratio = r
            .cpu_per_1k()
            .zip(spike_cpu)
            .filter(|(_, s)| *s > 0.0)
            .map(|(c, s)| format!("{:.1}×", c / s));
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} ({}) | {}/{} | {} |",
            row.name,
            config.clients,
            config.rooms,
            r.delivered_per_second(),
            opt(r.latency_ms(0.5), 1),
            opt(r.latency_ms(0.99), 1),
            opt(r.cpu_per_1k(), 4),
            opt(row.peak_rss_mib, 0),
            ratio.unwrap_or_else(|| "n/a".into()),
            opt(r.server_cpu_seconds.map(|c| 100.0 * c / w), 0),
            opt(r.server_system_seconds.map(|c| 100.0 * c / w), 0),
            r.delivered,
            r.expected,
            opt(r.loadgen_cpu_seconds.map(|c| 100.0 * c / w), 0),
        );
    }
}
