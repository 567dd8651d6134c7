//! `cargo xtask bench`: Spike's transpiler and formatter against esbuild, @swc/core and Prettier,
//! measured in one run on the same files, one thread each.
//!
//! Usage: `spike-bench <tests/node folder> [--iterations N] [--spike-only [--set NAME]]`. Prints a table of files, bytes, best
//! time of N passes (after a warm-up), throughput and the ratio of each peer's time to Spike's
//! (above 1 means Spike is faster). A benchmark reports; it never fails on a figure.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};
use spike_format::{format, FormatConfig};
use spike_transpile::{transpile, TranspileOptions};

// The allocator the `spike` binary and the app use too: swc and dprint allocate many small nodes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct File {
    path: PathBuf,
    name: String,
    text: String,
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.extension().is_some_and(|x| x == "ts" || x == "tsx")
            && !p.to_string_lossy().ends_with(".d.ts")
        {
            out.push(p);
        }
    }
}

fn load(paths: Vec<PathBuf>) -> anyhow::Result<Vec<File>> {
    paths
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            Ok(File {
                name: path.to_string_lossy().into_owned(),
                path,
                text,
            })
        })
        .collect()
}

/// Best wall time in ms of `iterations` passes of `f` over `files`, after one warm-up pass.
fn best_ms(
    iterations: usize,
    files: &[File],
    f: impl Fn(&File) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for i in 0..=iterations {
        let start = Instant::now();
        for file in files {
            f(file)?;
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if i > 0 {
            best = best.min(ms);
        }
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let node_dir = std::fs::canonicalize(
        args.first()
            .context("usage: spike-bench <tests/node> [--iterations N]")?,
    )
    .context("the tests/node folder")?;
    let iterations: usize = match args.iter().position(|a| a == "--iterations") {
        Some(i) => args
            .get(i + 1)
            .context("--iterations needs a number")?
            .parse()?,
        None => 5,
    };
    let nm = node_dir.join("node_modules");
    let mut components = Vec::new();
    for pkg in [
        "react-aria-components",
        "@tanstack/react-router",
        "@tanstack/react-query",
    ] {
        files_under(&nm.join(pkg).join("src"), &mut components);
    }
    components.sort();
    if components.is_empty() {
        bail!("no corpus under {}: run `cargo xtask setup`", nm.display());
    }
    let sets = [
        ("components", load(components)?),
        (
            "typescript.js",
            load(vec![nm.join("typescript/lib/typescript.js")])?,
        ),
    ];

    let set_paths: serde_json::Map<String, serde_json::Value> = sets
        .iter()
        .map(|(name, files)| {
            let paths = files.iter().map(|f| f.path.to_string_lossy().into_owned());
            (name.to_string(), paths.collect::<Vec<_>>().into())
        })
        .collect();
    let manifest = serde_json::json!({ "iterations": iterations, "sets": set_paths });
    if args.iter().any(|a| a == "--spike-only") {
        // For profiling Spike alone (e.g. under perf), without the Node peers.
        let only = args
            .iter()
            .position(|a| a == "--set")
            .and_then(|i| args.get(i + 1));
        for (set, files) in sets.iter().filter(|(n, _)| only.is_none_or(|o| o == n)) {
            let ms = best_ms(iterations, files, |f| {
                transpile(&f.text, &TranspileOptions::new(f.name.clone()))
                    .map(drop)
                    .with_context(|| f.name.clone())
            })?;
            let config = FormatConfig::default();
            let fmt_ms = best_ms(iterations, files, |f| {
                format(&f.name, &f.text, &config)
                    .map(drop)
                    .with_context(|| f.name.clone())
            })?;
            println!("{set}: spike-transpile {ms:.1} ms, spike-format {fmt_ms:.1} ms");
        }
        return Ok(());
    }
    let manifest_path =
        std::env::temp_dir().join(format!("spike-bench-{}.json", std::process::id()));
    std::fs::write(&manifest_path, manifest.to_string())?;
    eprintln!("running the Node peers ({iterations} passes per set)…");
    let out = Command::new("node")
        .arg(node_dir.join("bench-peers.mjs"))
        .arg(&manifest_path)
        .current_dir(&node_dir)
        .output()
        .context("starting node")?;
    let _ = std::fs::remove_file(&manifest_path);
    if !out.status.success() {
        bail!(
            "bench-peers.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).context("peer results")?;

    let config = FormatConfig::default();
    println!("\n| set | tool | files | bytes | ms | MB/s | peer ms ÷ Spike ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (set, files) in &sets {
        let bytes: usize = files.iter().map(|f| f.text.len()).sum();
        eprintln!("running Spike on {set}…");
        let transpile_ms = best_ms(iterations, files, |f| {
            transpile(&f.text, &TranspileOptions::new(f.name.clone()))
                .map(drop)
                .with_context(|| f.name.clone())
        })?;
        let format_ms = best_ms(iterations, files, |f| {
            format(&f.name, &f.text, &config)
                .map(drop)
                .with_context(|| f.name.clone())
        })?;
        let row = |tool: &str, ms: f64, against: Option<f64>| {
            let mbs = bytes as f64 / 1e6 / (ms / 1000.0);
            let ratio = against.map_or("—".to_string(), |spike| format!("{:.2}×", ms / spike));
            println!(
                "| {set} | {tool} | {} | {bytes} | {ms:.1} | {mbs:.1} | {ratio} |",
                files.len()
            );
        };
        row("spike-transpile", transpile_ms, None);
        for peer in ["esbuild", "@swc/core"] {
            if let Some(ms) = peers[set][peer].as_f64() {
                row(peer, ms, Some(transpile_ms));
            }
        }
        row("spike-format", format_ms, None);
        if let Some(ms) = peers[set]["prettier"].as_f64() {
            row("prettier", ms, Some(format_ms));
        }
    }
    println!("\n(best of {iterations} passes after a warm-up, one thread each; release build)");
    Ok(())
}
