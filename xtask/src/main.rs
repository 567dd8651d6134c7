//! The project's tasks: `cargo xtask test | run | e2e | bundle | ui | bench | check-swc | example`.
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
        Some("run") => run_app(&root, &args[1..]),
        Some("example") => run(&root, &args[1..]),
        Some("e2e") => e2e(&root, &args[1..]),
        Some("bundle") => bundle_task(&root, &args[1..]),
        Some("ui") => build_ui(&root),
        Some("bench") => bench(&root, &args[1..]),
        Some("check-swc") => check_swc(&root),
        Some("setup") => setup(&root),
        Some("fuzz-rooms") => fuzz_rooms(&root, &args[1..]),
        Some("fuzz-decoder") => fuzz_decoder(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test       install what the tests need, then fmt, clippy, check-swc and every test\n  \
                 run        build the UI and the desktop app, and open it on the example room\n  \
                 e2e        build the app and run the end-to-end suite under Xvfb (tauri-driver)\n  \
                 bundle     the Linux .deb (cargo-deb); --debug: dev profile; --test: then test it\n  \
                 ui         install the UI's npm packages and build ui/dist (vendored React too)\n  \
                 example    write the example project to target/spike-example with the CLI\n  \
                 bench      release-build benchmarks: engine vs esbuild, @swc/core, Prettier; rooms; app latency\n  \
                 check-swc  fail if the build holds two versions of any swc crate\n  \
                 fuzz-rooms    randomized multi-client room sessions over many seeds [SEEDS] [FIRST]\n  \
                 fuzz-decoder  coverage-guided fuzzing of the decoding boundary (libFuzzer) [RUNS] [SEED]\n  \
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
    npm_ci(&node_dir(root), "the tests")?;
    if !have("cargo-nextest", "--version") && !cargo_has("nextest") {
        sh(cargo().args(["install", "cargo-nextest", "--locked"]))?;
    }
    Ok(())
}

/// `npm ci --ignore-scripts` in `dir` unless its `node_modules` is newer than its lock file.
/// `who` names what needs the packages, for the error when Node is missing.
fn npm_ci(dir: &Path, who: &str) -> anyhow::Result<()> {
    if !have("node", "--version") || !have("npm", "--version") {
        bail!("{who} need Node.js 20+ and npm on PATH");
    }
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
            .current_dir(dir))?;
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
    // The desktop shell is a workspace member: clippy and nextest below build it, and it embeds
    // ui/dist, so the system libraries and the UI build come first.
    ensure_apt()?;
    build_ui(root)?;
    sh(Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(root.join("ui")))?;
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
    // `cargo xtask fuzz-decoder` is not run here while it still finds crashes inside yrs
    // (fuzz/open/): a check that fails on what is known and unfixed blocks every landing.
    e2e(root, &[])?;
    if cfg!(target_os = "linux") {
        // Reuses the debug build cache: only tauri and the app rebuild with custom-protocol.
        bundle_test(root, &bundle(root, Profile::Debug)?)?;
    }
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

/// The Debian packages the desktop app builds against (webkit2gtk, gtk-3, soup-3, and libdbus for
/// the keychain's Secret Service) and the ones its tests use (Xvfb, WebKitWebDriver, ImageMagick's
/// `import` for screenshots, Python venvs for selenium and moto).
const APT_PACKAGES: &[&str] = &[
    "libwebkit2gtk-4.1-dev",
    "libdbus-1-dev",
    "python3-venv",
    "build-essential",
    "pkg-config",
    "xvfb",
    "xauth",
    "webkit2gtk-driver",
    "imagemagick",
];

/// Installs the missing [`APT_PACKAGES`] (Debian/Ubuntu, as root). Elsewhere it does nothing:
/// macOS and Windows ship their webviews.
fn ensure_apt() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") || !have("dpkg", "--version") {
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            // `dpkg -s` succeeds for removed-but-configured packages too; check the status line.
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        bail!(
            "missing system packages; install them as root:\n  apt-get install -y \
             --no-install-recommends {}",
            missing.join(" ")
        );
    }
    sh(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `npm ci` in ui/ when the lock is newer than the install, then `npm run build` (vendors React
/// into ui/public/vendor, type-checks, builds ui/dist).
fn build_ui(root: &Path) -> anyhow::Result<()> {
    let ui = root.join("ui");
    npm_ci(&ui, "the UI")?;
    sh(Command::new("npm").args(["run", "build"]).current_dir(&ui))
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<root>/target`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the UI and the debug desktop app; returns the app binary.
fn build_app(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_apt()?;
    build_ui(root)?;
    sh(cargo()
        .args(["build", "-p", "spike-desktop"])
        .current_dir(root))?;
    let exe = target_dir(root)
        .join("debug")
        .join(format!("spike-desktop{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        bail!("the build did not produce {}", exe.display());
    }
    Ok(exe)
}

/// `cargo xtask run`: the desktop app on the example room (seeded on first start, kept in the app
/// data directory; `SPIKE_DATA_DIR` and `SPIKE_ROOM` override where and which).
fn run_app(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let exe = build_app(root)?;
    sh(Command::new(exe).args(extra).current_dir(root))
}

/// `cargo xtask e2e`: the end-to-end suite (tests/e2e, pytest + selenium) against the real app
/// under Xvfb, through tauri-driver and WebKitWebDriver. Screenshots of every step land in
/// `<target>/e2e/`.
fn e2e(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let exe = build_app(root)?;
    let artifacts = target_dir(root).join("e2e");
    let mut args = vec!["tests/e2e".to_string()];
    args.extend_from_slice(extra);
    pytest_e2e(root, &args, &[("SPIKE_APP", exe.as_os_str())], &artifacts)?;
    eprintln!("e2e screenshots: {}", artifacts.display());
    Ok(())
}

/// Runs pytest with `args` from the root, under Xvfb when it is there, with `env` and
/// `SPIKE_E2E_ARTIFACTS=artifacts` (emptied first). Installs tauri-driver and the pinned venv
/// (`.e2e/venv`, from tests/e2e/requirements.txt) when missing or stale.
fn pytest_e2e(
    root: &Path,
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    artifacts: &Path,
) -> anyhow::Result<()> {
    if !have("tauri-driver", "--help") {
        sh(cargo().args(["install", "tauri-driver", "--locked"]))?;
    }
    let venv = root.join(".e2e/venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/e2e/requirements.txt");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if !python.is_file() {
            sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        sh(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))?;
        std::fs::write(&stamp, &wanted).context("writing the venv stamp")?;
    }
    let _ = std::fs::remove_dir_all(artifacts);
    // Always on a virtual screen when Xvfb is there (CI, and no windows popping up on a
    // developer's desktop); otherwise on the current display.
    let xvfb = Command::new("sh")
        .args(["-c", "command -v xvfb-run"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if xvfb {
        let mut c = Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1680x1000x24"]).arg(&python);
        c
    } else {
        Command::new(&python)
    };
    cmd.args(["-m", "pytest", "-v", "-p", "no:cacheprovider"])
        .args(args)
        .envs(env.iter().copied())
        .env("SPIKE_E2E_ARTIFACTS", artifacts)
        .current_dir(root);
    sh(&mut cmd)
}

/// The cargo profile a bundle is built with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Release,
    /// The dev profile, so CI reuses the debug build of clippy, nextest and e2e.
    Debug,
}

/// `cargo xtask bundle [--debug] [--test]`.
fn bundle_task(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let mut profile = Profile::Release;
    let mut then_test = false;
    for arg in extra {
        match arg.as_str() {
            "--debug" => profile = Profile::Debug,
            "--test" => then_test = true,
            _ => bail!("usage: cargo xtask bundle [--debug] [--test]"),
        }
    }
    let deb = bundle(root, profile)?;
    if then_test {
        bundle_test(root, &deb)?;
    }
    Ok(())
}

/// The cargo-deb release whose flags and `[package.metadata.deb]` keys this file uses. Newer
/// releases plan to refuse the dev profile, which `--debug` relies on.
const CARGO_DEB: &str = "3.8.0";

/// Builds the UI, then the Linux .deb of spike-desktop with cargo-deb (installed when missing),
/// from `[package.metadata.deb]` in src-tauri/Cargo.toml; the app is built with its
/// `custom-protocol` feature, so it embeds ui/dist and needs no dev server. Returns the .deb:
/// `<target>/debian/` (release, with its `-dbgsym.ddeb`) or `<target>/debian/debug/`.
///
/// The other formats in tauri.conf.json are not made here: AppImage downloads its tools at
/// bundle time, .dmg/.app and .msi need macOS and Windows (see the README).
fn bundle(root: &Path, profile: Profile) -> anyhow::Result<PathBuf> {
    if !cfg!(target_os = "linux") {
        bail!("cargo xtask bundle makes the Linux .deb; run it on Linux");
    }
    ensure_apt()?;
    if !cargo_has("deb") {
        sh(cargo().args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB]))?;
    }
    build_ui(root)?;
    let mut out = target_dir(root).join("debian");
    let mut cmd = cargo();
    cmd.args(["deb", "-p", "spike-desktop", "--locked"]);
    match profile {
        // The release profile keeps line tables (backtraces): they go to a separate
        // `spike-dbgsym_*.ddeb` (/usr/lib/debug/.build-id), so the .deb stays ~7 MB.
        Profile::Release => {
            cmd.arg("--dbgsym");
        }
        // cargo-deb warns that the dev profile is unsupported; it builds and packages it the
        // same way. --fast: gzip-fast instead of xz, for a test package.
        Profile::Debug => {
            out.push("debug");
            cmd.args(["--profile", "dev", "--fast"]);
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    cmd.arg("-o").arg(&out).current_dir(root);
    eprintln!("$ {cmd:?}");
    let started = std::time::Instant::now();
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !output.status.success() {
        bail!("{cmd:?} failed with {}", output.status);
    }
    // cargo-deb prints the path of the package it wrote on stdout.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deb = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .with_context(|| format!("cargo-deb did not name the .deb it wrote: {stdout}"))?;
    let size = deb.metadata().map_or(0, |m| m.len());
    eprintln!(
        "bundle: {} ({:.1} MB, {:.0} s)",
        deb.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("{}", deb.display());
    Ok(deb)
}

/// The bundle's test (tests/e2e/test_bundle.py): extracts `deb` with `dpkg-deb -x` into
/// `<target>/bundle-test/`, checks the package's contents, and drives the EXTRACTED app under
/// Xvfb like the e2e suite does. Screenshots land in `<target>/e2e-bundle/`.
fn bundle_test(root: &Path, deb: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let tree = target_dir(root).join("bundle-test");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    sh(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    let app = tree.join("usr/bin/spike-desktop");
    let artifacts = target_dir(root).join("e2e-bundle");
    pytest_e2e(
        root,
        &["tests/e2e/test_bundle.py".to_string()],
        &[
            ("SPIKE_BUNDLE_DEB", deb.as_os_str()),
            ("SPIKE_BUNDLE_APP", app.as_os_str()),
        ],
        &artifacts,
    )?;
    eprintln!(
        "bundle test passed in {:.0} s; screenshots: {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
    Ok(())
}

/// `cargo xtask bench [--desktop-only] [--desktop-debug] [spike-bench flags]`: the engine benches
/// (spike-bench, the store's tier latencies, the rooms load test), then the desktop app's
/// latency bench. `--desktop-only` skips the engine benches; `--desktop-debug` measures the debug
/// app too. Benches report; they fail only when they cannot run.
fn bench(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let flag = |name: &str| extra.iter().any(|a| a == name);
    let (desktop_only, desktop_debug) = (flag("--desktop-only"), flag("--desktop-debug"));
    let extra: Vec<&String> = extra
        .iter()
        .filter(|a| !matches!(a.as_str(), "--desktop-only" | "--desktop-debug"))
        .collect();
    if !desktop_only {
        bench_engine(root, &extra)?;
    }
    bench_desktop(root, desktop_debug)
}

fn bench_engine(root: &Path, extra: &[&String]) -> anyhow::Result<()> {
    setup(root)?;
    sh(cargo()
        .args(["run", "--release", "-p", "spike-bench", "--"])
        .arg(node_dir(root))
        .args(extra)
        .current_dir(root))?;
    // The store: p50/p99 of a hit in the memory, SQLite and remote tiers, the remote one on a
    // spike-server process (crates/spike-store/benches).
    sh(cargo()
        .args(["bench", "-p", "spike-store", "--bench", "tiers"])
        .current_dir(root))?;
    // Rooms: spike-server against @y/websocket-server and Hocuspocus under the same load (1,000
    // clients in 100 rooms by default), then an editing-trace replay. See crates/spike-loadgen.
    sh(cargo()
        .args([
            "build",
            "--release",
            "-p",
            "spike-server",
            "-p",
            "spike-loadgen",
        ])
        .current_dir(root))?;
    let release = target_dir(root).join("release");
    let exe = |name: &str| release.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    sh(Command::new(exe("spike-loadgen"))
        .arg("--node-dir")
        .arg(node_dir(root))
        .arg("--spike-server")
        .arg(exe("spike-server"))
        .current_dir(root))
}

/// The desktop app's latency bench (tests/e2e/bench_desktop.py, run by pytest like the e2e suite,
/// under Xvfb): keystroke -> preview painted for a 500-line component (median, p95, max of 100
/// edits), cold start to editable and to the first preview, idle RSS/PSS per process. Measures
/// the release app built as it ships (`custom-protocol`, UI embedded), and the debug app of
/// `cargo xtask e2e` too with `debug`. Details land in `<target>/bench-desktop/`.
fn bench_desktop(root: &Path, debug: bool) -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        eprintln!("bench-desktop: skipped (it reads process memory from /proc: Linux only)");
        return Ok(());
    }
    let mut apps = std::ffi::OsString::new();
    if debug {
        // build_app builds the UI first, as the release build below needs.
        apps.push("debug=");
        apps.push(build_app(root)?);
    } else {
        ensure_apt()?;
        build_ui(root)?;
    }
    sh(cargo()
        .args([
            "build",
            "--release",
            "-p",
            "spike-desktop",
            "--features",
            "custom-protocol",
        ])
        .current_dir(root))?;
    let release = target_dir(root)
        .join("release")
        .join(format!("spike-desktop{}", std::env::consts::EXE_SUFFIX));
    let artifacts = target_dir(root).join("bench-desktop");
    pytest_e2e(
        root,
        &["tests/e2e/bench_desktop.py".to_string(), "-s".to_string()],
        &[
            ("SPIKE_APP", release.as_os_str()),
            ("SPIKE_BENCH_APPS", apps.as_os_str()),
        ],
        &artifacts,
    )
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

/// The flags cargo-fuzz gives rustc for libFuzzer's coverage feedback, less the address
/// sanitizer (which needs a nightly compiler): edge counters, the PC table and comparison
/// tracing, and `cfg(fuzzing)`.
const FUZZ_RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";

/// `cargo xtask fuzz-decoder [RUNS] [SEED]`: the coverage-guided fuzz target of the decoding
/// boundary (`fuzz/fuzz_targets/decode_frame.rs`: frames and updates as a room decodes and
/// applies them), libFuzzer through libfuzzer-sys on the stable compiler, from real seed frames
/// and the inputs of `fuzz/regressions/` (what it found before, each run first). Builds it in
/// `target/fuzz` for the host triple (so that the coverage flags reach the target's code and
/// not build scripts), seeds a fresh corpus with real frames, and runs RUNS inputs (default
/// 1,000,000, about half a minute here) from SEED (default 1). A crash,
/// a leak of the 2 GiB RSS limit, a single allocation over it or an input taking over 10 s
/// fails it, with the input written to `target/fuzz/crashes/`.
fn fuzz_decoder(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let runs = extra.first().map_or("1000000", String::as_str);
    let seed = extra.get(1).map_or("1", String::as_str);
    let rustc = Command::new("rustc").arg("-vV").output()?;
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")?;
    let dir = root.join("target/fuzz");
    let flags: Vec<&str> = FUZZ_RUSTFLAGS.split_whitespace().collect();
    sh(cargo()
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "decode_frame",
            "--target",
        ])
        .arg(&host)
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTFLAGS", flags.join(" "))
        .current_dir(root.join("fuzz")))?;
    let corpus = dir.join("corpus");
    let crashes = dir.join("crashes");
    let _ = std::fs::remove_dir_all(&corpus);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&crashes)?;
    sh(Command::new(dir.join(&host).join("release/decode_frame"))
        .arg(format!("-runs={runs}"))
        .arg(format!("-seed={seed}"))
        .args([
            "-rss_limit_mb=2048",
            "-max_len=65536",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .arg(format!("-artifact_prefix={}/", crashes.display()))
        .arg(&corpus)
        .arg(root.join("fuzz/regressions"))
        .env("SPIKE_FUZZ_SEEDS", &corpus))
}

/// `cargo xtask fuzz-rooms [SEEDS] [FIRST_SEED]`: the randomized multi-client room sessions of
/// `crates/spike-server/tests/random.rs` over many seeds (default 5000 from seed 1000; CI runs
/// 200 from 1), release-built. A failure prints the seed and how to replay it.
fn fuzz_rooms(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    let seeds = extra.first().map_or("5000", String::as_str);
    let first = extra.get(1).map_or("1000", String::as_str);
    sh(cargo()
        .args([
            "test",
            "--release",
            "-p",
            "spike-server",
            "--test",
            "random",
        ])
        .args(["--", "--nocapture"])
        .env("SPIKE_FUZZ_SEEDS", seeds)
        .env("SPIKE_FUZZ_FIRST_SEED", first)
        .current_dir(root))
}
