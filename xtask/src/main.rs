//! The project's tasks: `cargo xtask test | run | bench | check-swc`.
//!
//! `test` installs what the tests need and is missing (npm packages for the peers and the corpus,
//! cargo tools), then runs the format check, clippy, the swc single-version check and every test
//! of the workspace. It is the README's test command and what `.ci/run` calls.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root()?;
    match args.first().map(String::as_str) {
        Some("test") => test(&root, &args[1..]),
        Some("run") => run(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("check-swc") => check_swc(&root),
        Some("setup") => setup(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test       install what the tests need, then fmt, clippy, check-swc and every test\n  \
                 run        build and run the main job on the embedded example project\n  \
                 bench      release-build benchmarks against esbuild, @swc/core and Prettier\n  \
                 check-swc  fail if the build holds two versions of any swc crate\n  \
                 setup      only install what the tests need"
            );
            std::process::exit(2);
        }
    }
}

fn root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

/// Runs a command, echoing it, and fails if it fails.
fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The npm folder that holds the test peers (esbuild, @swc/core, Prettier, React) and the corpus.
pub fn node_dir(root: &Path) -> PathBuf {
    root.join("tests/node")
}

fn setup(root: &Path) -> anyhow::Result<()> {
    if !have("node", "--version") || !have("npm", "--version") {
        bail!("the tests need Node.js 20+ and npm on PATH");
    }
    let dir = node_dir(root);
    let installed = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = match (installed.metadata(), lock.metadata()) {
        (Ok(i), Ok(l)) => i.modified().ok() >= l.modified().ok(),
        _ => false,
    };
    if !fresh {
        // --ignore-scripts: nothing from the registry runs code at install time.
        sh(Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&dir))?;
    }
    if !have("cargo-nextest", "--version") && !cargo_has("nextest") {
        sh(cargo().args(["install", "cargo-nextest", "--locked"]))?;
    }
    Ok(())
}

fn cargo_has(sub: &str) -> bool {
    cargo()
        .args([sub, "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn test(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    setup(root)?;
    sh(cargo().args(["fmt", "--all", "--check"]).current_dir(root))?;
    check_swc(root)?;
    sh(cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(root))?;
    sh(cargo()
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(extra)
        .current_dir(root))?;
    sh(cargo()
        .args(["test", "--workspace", "--doc"])
        .current_dir(root))?;
    eprintln!("all checks and tests passed");
    Ok(())
}

fn run(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let dir = root.join("target/spike-example");
    sh(cargo()
        .args(["run", "--quiet", "-p", "spike-cli", "--", "example"])
        .arg(&dir)
        .args(extra)
        .current_dir(root))
}

fn bench(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    setup(root)?;
    sh(cargo()
        .args(["run", "--release", "-p", "spike-bench", "--"])
        .arg(node_dir(root))
        .args(extra)
        .current_dir(root))
}

/// `swc_core` and `dprint-plugin-typescript` must share one set of swc crates: fail if any crate
/// whose name starts with `swc` resolves to two versions.
fn check_swc(root: &Path) -> anyhow::Result<()> {
    let out = cargo()
        .args([
            "tree",
            "--workspace",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(root)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(version)) = (parts.next(), parts.next()) {
            if name.starts_with("swc") {
                versions.entry(name).or_default().insert(version);
            }
        }
    }
    let doubled: Vec<String> = versions
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(n, v)| format!("{n}: {}", v.iter().copied().collect::<Vec<_>>().join(", ")))
        .collect();
    if versions.is_empty() {
        bail!("check-swc found no swc crates at all; is the dependency tree readable?");
    }
    if !doubled.is_empty() {
        bail!(
            "two versions of swc crates in the build (swc_core and dprint-plugin-typescript must \
             share one set; see crates/spike-transpile/src/lib.rs):\n  {}",
            doubled.join("\n  ")
        );
    }
    eprintln!("check-swc: {} swc crates, one version each", versions.len());
    Ok(())
}
