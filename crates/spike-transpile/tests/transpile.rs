//! The transpiler's contract, file by file: diagnostics, source maps, imports, JSX runtimes,
//! targets, and bad input that must give a clear error and never a panic.

use spike_transpile::{
    transpile, transpile_bytes, Decorators, ImportKind, ImportStatement, JsxRuntime, Severity,
    SourceMapMode, Target, TranspileError, TranspileOptions,
};

fn ok(source: &str, file: &str) -> String {
    match transpile(source, &TranspileOptions::new(file)) {
        Ok(t) => t.code,
        Err(e) => panic!("{file} should transpile:\n{e}"),
    }
}

fn errors(source: &str, options: &TranspileOptions) -> Vec<spike_transpile::Diagnostic> {
    match transpile(source, options) {
        Err(TranspileError::Diagnostics(d)) => d,
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

#[test]
fn import_equals_require_is_an_error_at_its_position() {
    let src = "const a = 1;\nimport fs = require(\"fs\");\nexport { a };\nexport = a;\n";
    let d = errors(src, &TranspileOptions::new("m.ts"));
    assert_eq!(d.len(), 2);
    assert_eq!((d[1].line, d[1].column), (4, 1));
    assert!(
        d[1].message.starts_with("Export assignment cannot be used"),
        "{}",
        d[1].message
    );
    assert_eq!(
        (d[0].line, d[0].column, d[0].severity),
        (2, 1, Severity::Error)
    );
    assert!(
        d[0].message.contains("Import assignment cannot be used"),
        "{}",
        d[0].message
    );
    assert_eq!(d[0].source_line, "import fs = require(\"fs\");");
    // A namespace alias is not a require and stays valid.
    assert!(ok(
        "namespace N { export const x = 1 }\nimport y = N.x;\nconsole.log(y);",
        "n.ts"
    )
    .contains("N.x"));
}

#[test]
fn duplicate_exports_are_errors_but_merging_declarations_are_not() {
    let src = "export const a = 1;\nexport function b() {}\nexport { b as a };\n";
    let d = errors(src, &TranspileOptions::new("m.ts"));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "Multiple exports with the same name \"a\"");
    assert_eq!((d[0].line, d[0].column), (3, 15));

    let d = errors(
        "export default 1;\nexport default 2;\n",
        &TranspileOptions::new("m.js"),
    );
    assert_eq!(
        (d[0].line, d[0].message.as_str()),
        (2, "Multiple exports with the same name \"default\"")
    );

    let merging =
        "export namespace N { export const x = 1 }\nexport namespace N { export const y = 2 }\n\
                   export enum E { A }\nexport enum E { B = 1 }\n\
                   export function f(a: string): void;\nexport function f(a: any) {}\n\
                   export interface I {}\nexport const I = 1;\nexport type T = 1;\n";
    let code = ok(merging, "m.ts");
    assert!(code.contains("export function f(a)"), "{code}");
}

#[test]
fn parameter_decorators_need_legacy_decorators() {
    let src =
        "class A {\n  constructor(@inject x: number) {}\n}\nfunction inject(..._: unknown[]) {}\n";
    let d = errors(src, &TranspileOptions::new("a.ts"));
    assert_eq!((d[0].line, d[0].column), (2, 15));
    assert!(
        d[0].message.contains("experimentalDecorators"),
        "{}",
        d[0].message
    );
    let legacy = TranspileOptions::new("a.ts").with_decorators(Decorators::Legacy {
        emit_metadata: false,
    });
    let out = transpile(src, &legacy).expect("legacy decorators accept parameter decorators");
    assert!(
        !out.code.contains('@'),
        "decorator syntax left in the output:\n{}",
        out.code
    );
    assert!(
        out.imports.is_empty(),
        "helpers must be inlined: {:?}",
        out.imports
    );
}

#[test]
fn every_recoverable_syntax_error_is_reported() {
    // swc recovers from these (strict-mode and early errors) and goes on parsing.
    let src = "let ok = 1;\nfunction f(eval) {}\nlet x = 2;\nfunction g(arguments) {}\n";
    let d = errors(src, &TranspileOptions::new("e.ts"));
    let at: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, vec![(2, 12), (4, 12)], "{d:#?}");
    assert!(d.iter().all(|d| d.file == "e.ts"));
    // A fatal error stops the parser: it is reported with its position.
    let d = errors("let a = ;\n", &TranspileOptions::new("e.ts"));
    let rendered = TranspileError::Diagnostics(d).to_string();
    assert_eq!(
        rendered,
        "e.ts:1:9: error: Expression expected\n  let a = ;\n          ^"
    );
}

#[test]
fn const_enums_are_inlined_and_type_only_imports_erased() {
    let code = ok(
        "import type { T } from './types';\nimport { U } from './types';\n\
         const enum Size { S = 1, L = S * 10 }\nlet t: T | U;\nconsole.log(Size.L);\n",
        "c.ts",
    );
    assert!(code.contains("console.log(10"), "{code}");
    assert!(!code.contains("./types"), "type-only import kept:\n{code}");
}

#[test]
fn imports_are_listed_with_their_kind() {
    let src = "import React from 'react';\nimport type { X } from './x';\nimport './side.css.js';\n\
               export { y } from '../y';\nexport * from 'https://esm.sh/zod';\n\
               const lazy = () => import('@scope/pkg/sub');\nexport const App = () => <div>{React.version}</div>;\n";
    let out = transpile(src, &TranspileOptions::new("App.tsx")).expect("transpiles");
    let got: Vec<(&str, ImportKind, ImportStatement)> = out
        .imports
        .iter()
        .map(|i| (i.specifier.as_str(), i.kind, i.statement))
        .collect();
    use ImportKind::*;
    use ImportStatement::*;
    assert_eq!(
        got,
        vec![
            ("react/jsx-runtime", Bare, Static),
            ("react", Bare, Static),
            ("./side.css.js", Relative, Static),
            ("../y", Relative, Reexport),
            ("https://esm.sh/zod", Url, Reexport),
            ("@scope/pkg/sub", Bare, Dynamic),
        ]
    );
}

#[test]
fn jsx_runtimes_and_pragmas() {
    let automatic = TranspileOptions::new("a.tsx").with_jsx(JsxRuntime::Automatic {
        import_source: "preact".into(),
    });
    let code = transpile("export const A = () => <p>hi</p>;", &automatic)
        .expect("ok")
        .code;
    assert!(code.contains("from \"preact/jsx-runtime\""), "{code}");

    let pragma = "/** @jsxImportSource solid-js */\nexport const A = () => <p>hi</p>;";
    assert!(ok(pragma, "a.tsx").contains("solid-js/jsx-runtime"));

    let classic = TranspileOptions::new("a.tsx").with_jsx(JsxRuntime::Classic {
        factory: "h".into(),
        fragment_factory: "Fragment".into(),
    });
    let src = "import { h, Fragment } from 'preact';\nexport const A = () => <><p>hi</p></>;";
    let code = transpile(src, &classic).expect("ok").code;
    assert!(
        code.contains("import { h, Fragment } from 'preact'")
            || code.contains("import { h, Fragment } from \"preact\""),
        "pragma import dropped:\n{code}"
    );
    assert!(
        code.contains("h(Fragment, null, /*#__PURE__*/ h(\"p\", null, \"hi\"))"),
        "{code}"
    );
}

#[test]
fn targets_lower_newer_syntax() {
    let src = "export const f = (a?: { b?: number }) => a?.b ?? 0;\nexport class C { #x = 1; static { } get x() { return this.#x; } }\n";
    let es2019 = transpile(
        src,
        &TranspileOptions::new("t.ts").with_target(Target::Es2019),
    )
    .expect("ok")
    .code;
    assert!(
        !es2019.contains("??") && !es2019.contains("?.") && !es2019.contains("#x"),
        "{es2019}"
    );
    let es2022 = ok(src, "t.ts");
    assert!(es2022.contains("??") && es2022.contains("#x"), "{es2022}");
    assert_eq!("es2020".parse::<Target>().ok(), Some(Target::Es2020));
    assert!("es5".parse::<Target>().is_err());
}

#[test]
fn source_maps_carry_the_source_text() {
    let src =
        "const greet = (name: string): string => `hi ${name}`;\nconsole.log(greet(\"map\"));\n";
    let ext = transpile(
        src,
        &TranspileOptions::new("src/greet.ts").with_source_map(SourceMapMode::External),
    )
    .expect("ok");
    assert!(
        ext.code.ends_with("//# sourceMappingURL=greet.js.map\n"),
        "{}",
        ext.code
    );
    let map: serde_json::Value =
        serde_json::from_str(ext.source_map.as_deref().expect("a map")).expect("map is JSON");
    assert_eq!(map["version"], 3);
    assert_eq!(map["sources"][0], "src/greet.ts");
    assert_eq!(map["sourcesContent"][0], src);
    assert_eq!(map["file"], "greet.js");
    let named = TranspileOptions::new("src/greet.ts")
        .with_source_map(SourceMapMode::External)
        .with_source_map_source("../src/greet.ts");
    let map: serde_json::Value = serde_json::from_str(
        transpile(src, &named)
            .expect("ok")
            .source_map
            .as_deref()
            .expect("a map"),
    )
    .expect("map is JSON");
    assert_eq!(map["sources"][0], "../src/greet.ts");
    assert!(
        map["mappings"].as_str().is_some_and(|m| m.contains(';')),
        "{map}"
    );

    let inline = transpile(
        src,
        &TranspileOptions::new("greet.ts").with_source_map(SourceMapMode::Inline),
    )
    .expect("ok");
    assert!(inline.source_map.is_none());
    assert!(inline
        .code
        .contains("//# sourceMappingURL=data:application/json;base64,"));
    assert!(transpile(src, &TranspileOptions::new("greet.ts"))
        .expect("ok")
        .source_map
        .is_none());
}

#[test]
fn empty_files_are_empty_modules() {
    assert_eq!(ok("", "empty.ts").trim(), "");
    assert_eq!(ok("\u{feff}", "bom.js").trim(), "");
    assert_eq!(
        ok("// only a comment\n", "c.tsx").trim(),
        "// only a comment"
    );
}

#[test]
fn declaration_files_are_checked_and_emit_nothing() {
    let script = "declare function f(...arguments: any[]): void;\ninterface I { a: string }\n";
    assert_eq!(ok(script, "lib.d.ts"), "");
    let module = "import ts = require('x');\nexport = ts;\n";
    assert_eq!(ok(module, "index.d.ts"), "");
    assert!(matches!(
        transpile("declare const = ;", &TranspileOptions::new("x.d.ts")),
        Err(TranspileError::Diagnostics(_))
    ));
}

#[test]
fn binary_garbage_is_a_diagnostic() {
    let garbage: String = (0..4096u32)
        .map(|i| char::from_u32((i * 7919) % 0x7f).unwrap_or('x'))
        .collect();
    let d = errors(&garbage, &TranspileOptions::new("junk.tsx"));
    assert!(!d.is_empty() && d[0].line >= 1);
}

#[test]
fn invalid_utf8_names_the_first_bad_byte() {
    let bytes = b"const a = 1;\nconst b = \"\xff\xfe\";\n";
    match transpile_bytes(bytes, &TranspileOptions::new("bad.ts")) {
        Err(TranspileError::InvalidUtf8 {
            line,
            column,
            offset,
            ..
        }) => {
            assert_eq!((line, column, offset), (2, 12, 24));
        }
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
}

#[test]
fn a_20_mb_file_is_refused_with_its_size() {
    let big = "export const x = 1;\n".repeat(1_048_576);
    assert_eq!(big.len(), 20_971_520);
    match transpile(&big, &TranspileOptions::new("big.ts")) {
        Err(
            e @ TranspileError::TooLarge {
                size: 20_971_520,
                limit: 16_777_216,
                ..
            },
        ) => {
            assert_eq!(
                e.to_string(),
                "big.ts: 20971520 bytes is larger than the limit of 16777216 bytes"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn deeply_nested_jsx_does_not_overflow_the_stack() {
    let depth = 10_000;
    let src = format!(
        "export const A = () => {}x{};\n",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    );
    let out = transpile(&src, &TranspileOptions::new("deep.tsx")).expect("deep JSX transpiles");
    assert_eq!(out.code.matches("_jsx(\"div\"").count(), depth);
    let parens = format!(
        "export const n = {}1{};\n",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    assert!(transpile(&parens, &TranspileOptions::new("deep.ts")).is_ok());
}

#[test]
fn unknown_extensions_are_refused() {
    match transpile("body {}", &TranspileOptions::new("style.css")) {
        Err(e @ TranspileError::UnsupportedExtension { .. }) => {
            assert!(e
                .to_string()
                .starts_with("style.css: unsupported file type"));
        }
        other => panic!("expected UnsupportedExtension, got {other:?}"),
    }
}

#[test]
fn a_jsx_factory_pragma_selects_the_classic_runtime() {
    let src = "/** @jsx h */\nimport { h } from 'preact';\nexport const A = <div id=\"a\" />;\n";
    let code = ok(src, "p.tsx");
    assert!(code.contains("h(\"div\", {"), "{code}");
    assert!(!code.contains("jsx-runtime"), "{code}");
}

#[test]
fn namespaced_jsx_names_are_attributes() {
    let src = "export const A = () => <svg xmlns:xlink=\"http://www.w3.org/1999/xlink\"><use xlink:href=\"#a\" /></svg>;\n";
    let code = ok(src, "svg.tsx");
    assert!(code.contains("\"xlink:href\": \"#a\""), "{code}");
}

#[test]
fn private_brand_checks_are_refused_below_es2022() {
    let src = "class K {\n  #p = 1;\n  has(o: object) { return #p in o; }\n}\nclass S {}\nexport { K, S };\n";
    let d = errors(
        src,
        &TranspileOptions::new("k.ts").with_target(Target::Es2021),
    );
    assert_eq!((d[0].line, d[0].column), (3, 27));
    assert!(d[0].message.contains("--target es2022"), "{}", d[0].message);
    assert!(ok(src, "k.ts").contains("#p in o"));
}

#[test]
fn merged_namespace_members_are_qualified_like_tsc() {
    // Assignments too, as tsc does (esbuild leaves `n = 2` unqualified, a ReferenceError).
    let code = ok(
        "namespace N { export let n = 1; export let m = 1 }\n\
         namespace N { n = 2; n++; [n] = [3]; ({ n } = { n: 4 }); ({ m = 5 } = {}); }\n",
        "m.ts",
    );
    let flat: String = code.split_whitespace().collect();
    for expected in ["N.n=2", "N.n++", "[N.n]=[", "({n:N.n}={", "({m:N.m=5}={"] {
        assert!(flat.contains(expected), "{expected} missing:\n{code}");
    }
    // A parameter, a local or a nested declaration of the same name shadows the member.
    let code = ok(
        "namespace N { export const x = 1; export function f() {} }\n\
         namespace N { function g(x: number) { return x } { const f = 2; console.log(f) } \
         console.log(g(x), f()) }\n",
        "s.ts",
    );
    let flat: String = code.split_whitespace().collect();
    assert!(flat.contains("returnx;"), "{code}");
    assert!(flat.contains("console.log(f)"), "{code}");
    assert!(flat.contains("console.log(g(N.x),(0,N.f)())"), "{code}");
}
