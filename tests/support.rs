//! Shared by the cross-crate tests: the npm folder with the peers and the corpus, scratch folders
//! inside it, and running Node.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `<workspace>/tests/node`, where `cargo xtask test` installs esbuild, React and the corpus.
///
/// # Panics
/// If the packages are not installed, with the command that installs them.
pub fn node_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/esbuild").is_dir(),
        "{}/node_modules is missing: run `cargo xtask test` (or `cargo xtask setup`) to install \
         the npm packages the tests need",
        dir.display()
    );
    dir
}

/// A scratch folder inside `tests/node`, so that Node resolves `react` from its `node_modules`.
///
/// # Panics
/// If the folder cannot be created.
pub fn work_dir(node_dir: &Path) -> tempfile::TempDir {
    let parent = node_dir.join(".work");
    std::fs::create_dir_all(&parent).expect("create tests/node/.work");
    tempfile::tempdir_in(parent).expect("create a scratch folder")
}

/// Runs `node <args>` in `dir` and returns its stdout; on failure, the status, stderr and stdout.
///
/// # Errors
/// When Node cannot start or exits unsuccessfully.
pub fn node<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Result<String, String> {
    let out = Command::new("node")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot start node: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Every file under `dir` (recursively) whose name ends with one of `suffixes`, sorted.
pub fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
