//! The real-world corpus: TypeScript and TSX that no one here wrote, installed by name and pinned
//! version from npm (`tests/node/package.json`): the `src/` of react-aria-components,
//! @tanstack/react-router and @tanstack/react-query, TypeScript's own `lib/*.d.ts`, and
//! `typescript/lib/typescript.js` (~9 MB) for size.
//!
//! Every file must transpile without error and its output must pass `node --check` as a module;
//! formatting must be idempotent and must not change the program.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use spike_format::{format, FormatConfig};
use spike_tests as support;
use spike_transpile::TranspileOptions;

/// Files known to fail, with the reason. Empty: every corpus file is expected to pass.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

fn corpus() -> Vec<PathBuf> {
    let nm = support::node_dir().join("node_modules");
    let mut files = Vec::new();
    for pkg in [
        "react-aria-components",
        "@tanstack/react-router",
        "@tanstack/react-query",
    ] {
        let found = support::files_under(&nm.join(pkg).join("src"), &[".ts", ".tsx"]);
        assert!(found.len() >= 20, "{pkg} ships fewer sources than expected");
        files.extend(found);
    }
    let libs: Vec<_> = support::files_under(&nm.join("typescript/lib"), &[".d.ts"]);
    assert!(
        libs.len() >= 80,
        "typescript/lib has {} .d.ts files",
        libs.len()
    );
    files.extend(libs);
    files.push(nm.join("typescript/lib/typescript.js"));
    files
}

fn expected_to_fail(path: &Path) -> bool {
    EXPECTED_FAILURES
        .iter()
        .any(|(name, _)| path.to_string_lossy().ends_with(name))
}

/// Runs `f` over `items` on two threads (the machine's cores), collecting the error messages.
fn par_check<T: Sync>(
    items: &[T],
    f: impl Fn(usize, &T) -> Result<(), String> + Sync,
) -> Vec<String> {
    let errors = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("lock");
                    *n += 1;
                    *n - 1
                };
                let Some(item) = items.get(i) else { break };
                if let Err(e) = f(i, item) {
                    errors.lock().expect("lock").push(e);
                }
            });
        }
    });
    errors.into_inner().expect("lock")
}

#[test]
fn every_corpus_file_transpiles_and_passes_node_check() {
    let files = corpus();
    let node_dir = support::node_dir();
    let work = support::work_dir(&node_dir);
    let outputs = Mutex::new(Vec::new());
    let errors = par_check(&files, |i, path| {
        let name = path.to_string_lossy();
        let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
        match spike_transpile::transpile_bytes(&bytes, &TranspileOptions::new(name.clone())) {
            Ok(out) if !expected_to_fail(path) => {
                let dest = work.path().join(format!("{i}.mjs"));
                std::fs::write(&dest, out.code).map_err(|e| format!("{name}: {e}"))?;
                outputs.lock().expect("lock").push((dest, path.clone()));
                Ok(())
            }
            Ok(_) => Err(format!(
                "{name} is listed as expected to fail but transpiles"
            )),
            Err(_) if expected_to_fail(path) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    assert!(
        errors.is_empty(),
        "{} files failed:\n{}",
        errors.len(),
        errors.join("\n")
    );

    let outputs = outputs.into_inner().expect("lock");
    assert_eq!(outputs.len(), files.len() - EXPECTED_FAILURES.len());
    let errors = par_check(&outputs, |_, (out, src)| {
        support::node(&node_dir, &[Path::new("--check"), out])
            .map(drop)
            .map_err(|e| format!("{}: output fails node --check: {e}", src.display()))
    });
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn formatting_is_idempotent_and_keeps_the_program() {
    let files = corpus();
    let config = FormatConfig::default();
    let compare = |name: &str, text: &str| {
        spike_format::program_text(name, text).map_err(|e| format!("{name}: {e}"))
    };
    let errors = par_check(&files, |_, path| {
        let name = path.to_string_lossy();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
        let once = format(&name, &text, &config)
            .map_err(|e| format!("{name}: {e}"))?
            .unwrap_or_else(|| text.clone());
        if let Some(twice) = format(&name, &once, &config).map_err(|e| format!("{name}: {e}"))? {
            return Err(format!(
                "{name}: formatting is not idempotent; the second pass changes {} bytes",
                twice.len().abs_diff(once.len())
            ));
        }
        if compare(&name, &text)? != compare(&name, &once)? {
            return Err(format!("{name}: formatting changed the transpiled program"));
        }
        Ok(())
    });
    assert!(
        errors.is_empty(),
        "{} files failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
}
