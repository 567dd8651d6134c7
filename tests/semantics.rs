//! Semantic equivalence: every program under `tests/data/semantics/` is transpiled by Spike and by
//! esbuild (the reference), both outputs run in Node, and what they print must be identical.
//!
//! A program may start with `// @target es2019` or `// @decorators legacy` to choose options;
//! `@jsx` pragmas select the classic runtime in both. esbuild does not emit decorator metadata, so
//! a program headed `// @decorators legacy-metadata` (legacy decorators with
//! `emitDecoratorMetadata`) is compared with TypeScript's `transpileModule` instead.

use spike_tests as support;

use std::{fs, path::Path};

use spike_transpile::{transpile, Decorators, JsxRuntime, Target, TranspileOptions};

#[test]
fn programs_print_the_same_as_after_esbuild() {
    let node_dir = support::node_dir();
    let work = support::work_dir(&node_dir);
    let programs = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/semantics");
    let mut entries: Vec<_> = fs::read_dir(&programs)
        .expect("tests/semantics exists")
        .map(|e| e.expect("readable dir entry").path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 10, "the semantic corpus went missing");

    let mut manifest = Vec::new();
    let mut tsc_manifest = Vec::new();
    let mut jobs = Vec::new();
    for path in &entries {
        let source = fs::read_to_string(path).expect("utf-8 program");
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let header = |key: &str| {
            source
                .lines()
                .take(3)
                .find_map(|l| l.strip_prefix(&format!("// @{key} ")).map(str::trim))
        };
        let target: Target = header("target")
            .unwrap_or("es2022")
            .parse()
            .expect("target");
        let metadata = header("decorators") == Some("legacy-metadata");
        let legacy = metadata || header("decorators") == Some("legacy");
        let classic = source.contains("@jsx h");
        let mut options = TranspileOptions::new(path.to_string_lossy()).with_target(target);
        if legacy {
            options = options.with_decorators(Decorators::Legacy {
                emit_metadata: metadata,
            });
        }
        if classic {
            options = options.with_jsx(JsxRuntime::Classic {
                factory: "React.createElement".into(),
                fragment_factory: "React.Fragment".into(),
            });
        }
        let out = transpile(&source, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The output imports only what the program imports (helpers are inlined, never
        // imported from @swc/helpers), plus the JSX runtime.
        for import in &out.imports {
            assert!(
                source.contains(&format!("\"{}\"", import.specifier))
                    || import.specifier == "react/jsx-runtime",
                "{name}: the output imports {:?}, which the program does not",
                import.specifier
            );
        }
        let spike_out = work.path().join(format!("{name}.spike.mjs"));
        let esbuild_out = work.path().join(format!("{name}.esbuild.mjs"));
        fs::write(&spike_out, &out.code).expect("write spike output");
        if metadata {
            let tsc_out = work.path().join(format!("{name}.tsc.mjs"));
            tsc_manifest.push(serde_json::json!({
                "input": path, "output": tsc_out, "target": target.name(),
            }));
            jobs.push((name, spike_out, tsc_out));
            continue;
        }
        manifest.push(serde_json::json!({
            "input": path, "output": esbuild_out, "target": target.name(),
            "decorators": if legacy { "legacy" } else { "standard" },
            "jsx": if classic { "classic" } else { "automatic" },
        }));
        jobs.push((name, spike_out, esbuild_out));
    }
    let manifest_path = work.path().join("manifest.json");
    fs::write(
        &manifest_path,
        serde_json::to_string(&manifest).expect("json"),
    )
    .expect("write");
    support::node(
        &node_dir,
        &[node_dir.join("esbuild-transform.mjs"), manifest_path],
    )
    .expect("esbuild transforms every program");
    if !tsc_manifest.is_empty() {
        let manifest_path = work.path().join("tsc-manifest.json");
        fs::write(
            &manifest_path,
            serde_json::to_string(&tsc_manifest).expect("json"),
        )
        .expect("write");
        let driver = work.path().join("tsc-transform.mjs");
        fs::write(&driver, TSC_TRANSFORM).expect("write the tsc driver");
        support::node(&node_dir, &[driver, manifest_path])
            .expect("TypeScript transforms every metadata program");
    }

    let mut failures = Vec::new();
    for (name, spike_out, reference_out) in &jobs {
        let expected = support::node(&node_dir, &[reference_out])
            .unwrap_or_else(|e| panic!("{name}: the reference output does not run: {e}"));
        assert!(!expected.trim().is_empty(), "{name} prints nothing");
        match support::node(&node_dir, &[spike_out]) {
            Ok(actual) if actual == expected => {}
            Ok(actual) => failures.push(format!(
                "{name}: output differs\n--- reference\n{expected}--- spike\n{actual}--- code\n{}",
                fs::read_to_string(spike_out).unwrap_or_default()
            )),
            Err(e) => failures.push(format!(
                "{name}: spike's output fails: {e}\n--- code\n{}",
                fs::read_to_string(spike_out).unwrap_or_default()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Transforms the programs of a manifest (`[{input, output, target}]`) with TypeScript's
/// `transpileModule`: legacy decorators with `emitDecoratorMetadata`, class fields defined as in
/// the rest of these tests. Runs from the scratch folder inside `tests/node`, where `typescript`
/// is installed.
const TSC_TRANSFORM: &str = r#"
import { readFileSync, writeFileSync } from "node:fs";
import ts from "typescript";
for (const job of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const { outputText } = ts.transpileModule(readFileSync(job.input, "utf8"), {
    fileName: job.input,
    compilerOptions: {
      target: ts.ScriptTarget[job.target === "esnext" ? "ESNext" : job.target.toUpperCase()],
      module: ts.ModuleKind.ESNext,
      experimentalDecorators: true,
      emitDecoratorMetadata: true,
      useDefineForClassFields: true,
    },
  });
  writeFileSync(job.output, outputText);
}
"#;
