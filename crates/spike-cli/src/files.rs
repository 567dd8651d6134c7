//! Expanding the command line's files and folders into source files.

use std::path::{Path, PathBuf};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use spike_transpile::SourceKind;

/// One source file to process, and where it sits relative to the folder it was found in.
pub struct Input {
    pub path: PathBuf,
    /// The path under the argument it was found through (the file name for a file argument).
    pub relative: PathBuf,
}

/// Expands files and folders. Folders are walked recursively, respecting `.gitignore`, `.ignore`
/// and hidden files; only files with a supported extension are kept, and `.d.ts` files only when
/// `declarations` is true. A file named explicitly is kept whatever its extension, so that the
/// caller reports it as unsupported.
///
/// Folders that cannot be read are reported on stderr and counted in `walk_errors`.
pub fn expand(
    paths: &[PathBuf],
    declarations: bool,
    walk_errors: &mut usize,
) -> anyhow::Result<Vec<Input>> {
    let mut out = Vec::new();
    for root in paths {
        if root.is_file() {
            let name = root
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| root.clone());
            out.push(Input {
                path: root.clone(),
                relative: name,
            });
            continue;
        }
        if !root.is_dir() {
            bail!("{}: no such file or folder", root.display());
        }
        let walker = ignore::WalkBuilder::new(root).require_git(false).build();
        let mut found = Vec::new();
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                // An unreadable folder is one failure among the files, not the end of the run.
                Err(e) => {
                    eprintln!("error: {e}");
                    *walk_errors += 1;
                    continue;
                }
            };
            let path = entry.path();
            if !entry.file_type().is_some_and(|t| t.is_file()) || !is_source(path, declarations) {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(path).to_path_buf();
            found.push(Input {
                path: path.to_path_buf(),
                relative,
            });
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        out.extend(found);
    }
    Ok(out)
}

fn is_source(path: &Path, declarations: bool) -> bool {
    let name = path.to_string_lossy();
    SourceKind::from_path(&name).is_some()
        && (declarations
            || !(name.ends_with(".d.ts") || name.ends_with(".d.mts") || name.ends_with(".d.cts")))
}

/// A progress bar on stderr when it is a terminal and the job is large enough to need one.
pub fn progress(len: usize) -> ProgressBar {
    use std::io::IsTerminal;
    if len < 200 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed}") {
        bar.set_style(style);
    }
    bar
}
