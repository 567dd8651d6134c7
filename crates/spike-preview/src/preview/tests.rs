use std::collections::BTreeMap;

use super::*;
use crate::IMPORT_MAP;

/// An in-memory project.
struct Files {
    files: BTreeMap<String, String>,
    entry: &'static str,
}

impl ModuleSource for Files {
    fn read(&self, path: &str) -> Option<String> {
        self.files.get(path).cloned()
    }

    fn paths(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    fn entry(&self) -> String {
        self.entry.to_owned()
    }

    fn title(&self) -> Option<String> {
        Some("Counter demo".into())
    }
}

impl Files {
    fn set(&mut self, path: &str, text: &str) {
        self.files.insert(path.to_owned(), text.to_owned());
    }
}

/// A small React project: an entry, a component tree over relative imports of every shape, a
/// stylesheet and a JSON file.
fn project() -> Files {
    let files = [
        (
            "main.tsx",
            "import { createRoot } from \"react-dom/client\";\n\
             import { App } from \"./App\";\n\
             import \"./styles.css\";\n\
             createRoot(document.getElementById(\"root\")!).render(<App />);\n",
        ),
        (
            "App.tsx",
            "import { useState } from \"react\";\n\
             import { Counter } from \"./components/Counter\";\n\
             import { Panel } from \"./panel/index.tsx\";\n\
             import { Badge } from \"./badge\";\n\
             import data from \"./data.json\";\n\
             export function App() {\n  const [n] = useState(data.start);\n  \
             return <Panel><Counter n={n} /><Badge /></Panel>;\n}\n",
        ),
        (
            "components/Counter.tsx",
            "import { format } from \"../lib/format\";\n\
             export function Counter({ n }: { n: number }) {\n  return <b>{format(n)}</b>;\n}\n",
        ),
        (
            "lib/format.ts",
            "export const format = (n: number): string => `#${n}`;\n",
        ),
        (
            "panel/index.tsx",
            "export const Panel = (p: { children: unknown }) => <section>{p.children as any}</section>;\n",
        ),
        (
            "badge/index.tsx",
            "export const Badge = () => <i>badge-from-folder-index</i>;\n",
        ),
        ("styles.css", "b { color: red; }\n"),
        ("data.json", "{ \"start\": 3 }\n"),
        ("types.d.ts", "declare const broken: = ;\n"),
    ];
    Files {
        files: files
            .into_iter()
            .map(|(p, t)| (p.to_owned(), t.to_owned()))
            .collect(),
        entry: "main.tsx",
    }
}

fn get(preview: &Preview, source: &Files, path: &str) -> PreviewResponse {
    let assets = |p: &str| match p {
        "vendor/react.js" => Some(Cow::Borrowed(&b"export default 'react';"[..])),
        "vendor/react-jsx-runtime.js" => Some(Cow::Borrowed(&b"export const jsx = 1;"[..])),
        _ => None,
    };
    preview.respond(
        source,
        &PreviewRequest {
            method: "GET",
            path,
            body: &[],
        },
        &assets,
        &|_| {},
    )
}

fn get_text(preview: &Preview, source: &Files, path: &str) -> String {
    let response = get(preview, source, path);
    assert_eq!(response.status, 200, "{path}");
    String::from_utf8(response.body).expect("utf8")
}

fn post(preview: &Preview, path: &str, body: &[u8], got: &Mutex<Vec<PreviewReport>>) -> u16 {
    preview
        .respond(
            &project(),
            &PreviewRequest {
                method: "POST",
                path,
                body,
            },
            &|_| None,
            &|r| lock(got).push(r),
        )
        .status
}

fn transpiled(preview: &Preview, source: &Files, path: &str) -> Arc<ModuleResult> {
    preview.module(source, path).expect("a script")
}

fn code_of(result: &ModuleResult) -> &str {
    match result {
        Ok(m) => &m.code,
        Err(d) => panic!("did not transpile: {d:?}"),
    }
}

#[test]
fn relative_imports_resolve_with_or_without_an_extension_and_to_a_folder_index() {
    let mut p = project();
    // Without an extension, with one, and a folder's index, as written or implied.
    assert_eq!(resolve(&p, "App").as_deref(), Some("App.tsx"));
    assert_eq!(resolve(&p, "App.tsx").as_deref(), Some("App.tsx"));
    assert_eq!(
        resolve(&p, "components/Counter").as_deref(),
        Some("components/Counter.tsx")
    );
    assert_eq!(resolve(&p, "lib/format").as_deref(), Some("lib/format.ts"));
    assert_eq!(
        resolve(&p, "panel/index.tsx").as_deref(),
        Some("panel/index.tsx")
    );
    assert_eq!(
        resolve(&p, "panel/index").as_deref(),
        Some("panel/index.tsx")
    );
    assert_eq!(resolve(&p, "badge").as_deref(), Some("badge/index.tsx"));
    assert_eq!(resolve(&p, "styles.css").as_deref(), Some("styles.css"));
    assert_eq!(resolve(&p, "nope"), None);
    assert_eq!(resolve(&p, "components"), None, "a folder without an index");
    // The order: .tsx before .ts, and a file before a folder's index.
    p.set("lib/format.tsx", "export const format = 0;\n");
    p.set("lib/format/index.ts", "export const format = 1;\n");
    assert_eq!(resolve(&p, "lib/format").as_deref(), Some("lib/format.tsx"));
    p.set("badge.js", "export const Badge = 2;\n");
    assert_eq!(resolve(&p, "badge").as_deref(), Some("badge.js"));

    // Served: `./components/Counter` from App arrives as /g1/components/Counter, and a folder as
    // its index module.
    let p = project();
    let preview = Preview::new();
    let counter = get(&preview, &p, "/g1/components/Counter");
    assert_eq!(counter.content_type, "text/javascript; charset=utf-8");
    let counter = String::from_utf8(counter.body).expect("utf8");
    assert!(
        counter.starts_with("import { jsx as _jsx } from \"react/jsx-runtime\";\nimport { format } from \"../lib/format\";\n"),
        "{counter}"
    );
    assert!(
        !counter.contains(": number"),
        "types are stripped: {counter}"
    );
    assert!(get_text(&preview, &p, "/g1/badge").contains("\"badge-from-folder-index\""));
    assert!(get_text(&preview, &p, "/g1/panel/index.tsx").contains("export const Panel ="));
    assert_eq!(
        get_text(&preview, &p, "/g1/lib/format"),
        get_text(&preview, &p, "/g9/lib/format.ts"),
        "every generation serves the same file"
    );
}

#[test]
fn bare_react_imports_go_through_the_import_map() {
    let p = project();
    let preview = Preview::new();
    let html = get_text(&preview, &p, "/");
    let map = html
        .split_once("<script type=\"importmap\" nonce=\"")
        .and_then(|(_, rest)| rest.split_once("\">"))
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(map, _)| map)
        .expect("an import map");
    let map: serde_json::Value = serde_json::from_str(map).expect("JSON");
    assert_eq!(map["imports"]["react"], "/vendor/react.js");
    assert_eq!(
        map["imports"]["react-dom/client"],
        "/__spike/react-dom-client.js"
    );
    assert_eq!(
        map["imports"]["react/jsx-runtime"],
        "/vendor/react-jsx-runtime.js"
    );
    assert_eq!(
        map["imports"].as_object().map(|m| m.len()),
        Some(IMPORT_MAP.len())
    );

    // The served modules keep the bare specifiers for the page's import map to resolve ...
    let main = get_text(&preview, &p, "/g1/main.tsx");
    assert!(
        main.contains("import { createRoot } from \"react-dom/client\";"),
        "{main}"
    );
    let app = get_text(&preview, &p, "/g1/App");
    assert!(app.contains("import { useState } from \"react\";"), "{app}");
    assert!(app.contains("from \"react/jsx-runtime\";"), "{app}");
    // ... and the map's targets are served: React from the app's build, react-dom/client as
    // Spike's wrapper around the vendored one.
    assert_eq!(
        get(&preview, &p, "/vendor/react.js").body,
        b"export default 'react';"
    );
    assert_eq!(
        get(&preview, &p, "/vendor/react-jsx-runtime.js").body,
        b"export const jsx = 1;"
    );
    let client = get_text(&preview, &p, "/__spike/react-dom-client.js");
    assert!(client.contains("import * as client from \"/vendor/react-dom-client.js\";"));
    assert!(client.contains("export function createRoot(container, options)"));
    let missing = get(&preview, &p, "/vendor/react-dom.js");
    assert_eq!(missing.status, 404);
    assert_eq!(
        String::from_utf8(missing.body).expect("utf8"),
        "/vendor/react-dom.js is not in the app's build; run `npm run vendor` in ui/"
    );
    assert_eq!(get(&preview, &p, "/vendor/../secret").status, 404);
}

#[test]
fn an_unknown_bare_package_is_named_in_the_message_the_preview_shows() {
    let mut p = project();
    let preview = Preview::new();
    p.set(
        "components/Counter.tsx",
        "import debounce from \"lodash/debounce\";\nimport { format } from \"../lib/format\";\n\
         export const Counter = ({ n }: { n: number }) => <b onClick={debounce(() => {}, 9)}>{format(n)}</b>;\n",
    );
    // The entry, which the runtime imports, throws the reason: the package (not the subpath)
    // and the file that imports it, two relative hops away.
    assert_eq!(
        get_text(&preview, &p, "/g2/main.tsx"),
        "throw \"The package \\\"lodash\\\" is not available in the preview yet: only react and \
         react-dom are bundled with Spike (imported by components/Counter.tsx).\";\n"
    );
    // The module itself is served as written: only the entry stands in for the graph.
    let counter = get_text(&preview, &p, "/g2/components/Counter");
    assert!(
        counter.contains("\nimport debounce from \"lodash/debounce\";\n"),
        "{counter}"
    );
    // A scoped package is named with its scope.
    p.set(
        "lib/format.ts",
        "export { format } from \"@acme/fmt/number\";\n",
    );
    p.set(
        "components/Counter.tsx",
        "import { format } from \"../lib/format\";\nexport const Counter = () => format(1);\n",
    );
    assert_eq!(
        get_text(&preview, &p, "/g3/main.tsx"),
        "throw \"The package \\\"@acme/fmt\\\" is not available in the preview yet: only react and \
         react-dom are bundled with Spike (imported by lib/format.ts).\";\n"
    );
    // A dynamic import fails only if it runs (and may be caught): the entry runs.
    p.set(
        "lib/format.ts",
        "export const format = () => import(\"left-pad\");\n",
    );
    let main = get_text(&preview, &p, "/g4/main.tsx");
    assert!(
        main.starts_with("import { jsx as _jsx } from \"react/jsx-runtime\";"),
        "{main}"
    );
}

#[test]
fn a_module_with_a_syntax_error_yields_diagnostics_with_line_and_column() {
    let mut p = project();
    let preview = Preview::new();
    // Line 2: two spaces, `return` (3-8), a space, `"é"` (10-12), a space, `+` (14), `;` (15):
    // the expression is missing at character column 15 (byte 16: `é` is two bytes).
    p.set(
        "Broken.tsx",
        "export function f() {\n  return \"é\" +;\n}\n",
    );
    let diagnostics = preview.diagnostics(&p, "Broken.tsx");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].file, "Broken.tsx");
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (2, 15));
    assert_eq!(diagnostics[0].source_line, "  return \"é\" +;");
    assert_eq!(diagnostics[0].message, "Expression expected");
    // Served, it throws the diagnostic as `file:line:col: error: message`.
    assert_eq!(
        get_text(&preview, &p, "/g4/Broken"),
        "throw new Error(\"Broken.tsx:2:15: error: Expression expected\\n    return \\\"é\\\" +;\\n                ^\");\n"
    );
    // An unclosed tag is found at the end of the file: line 2, column 1.
    p.set("Broken.tsx", "export const x = <div>;\n");
    let diagnostics = preview.diagnostics(&p, "Broken.tsx");
    assert_eq!(
        (diagnostics[0].line, diagnostics[0].column),
        (2, 1),
        "{diagnostics:?}"
    );
    // The project-wide list: every script but declaration files, in path order.
    p.set(
        "lib/format.ts",
        "export const format = (n: number) => n +;\n",
    );
    let errors = preview.room_errors(&p);
    let at: Vec<(&str, usize, usize)> = errors
        .iter()
        .map(|d| (d.file.as_str(), d.line, d.column))
        .collect();
    assert_eq!(at, [("Broken.tsx", 2, 1), ("lib/format.ts", 1, 41)]);
    // Clean files have none; files that are not scripts have none.
    assert_eq!(preview.diagnostics(&p, "App.tsx"), []);
    assert_eq!(preview.diagnostics(&p, "styles.css"), []);
    assert_eq!(preview.diagnostics(&p, "gone.tsx"), []);
}

#[test]
fn the_cache_returns_the_same_module_until_the_content_changes() {
    let mut p = project();
    let preview = Preview::new();
    let first = transpiled(&preview, &p, "App.tsx");
    assert!(Arc::ptr_eq(&first, &transpiled(&preview, &p, "App.tsx")));
    // Other files changing, or a new generation, leave it alone.
    p.set("B.ts", "export const b = 1;\n");
    p.set("lib/format.ts", "export const format = String;\n");
    preview.next_generation();
    assert!(Arc::ptr_eq(&first, &transpiled(&preview, &p, "App.tsx")));
    // Its own text changing transpiles it again, once.
    let original = p.read("App.tsx").expect("App.tsx");
    p.set("App.tsx", &format!("{original}export const edited = 42;\n"));
    let changed = transpiled(&preview, &p, "App.tsx");
    assert!(!Arc::ptr_eq(&first, &changed));
    assert!(code_of(&changed).contains("\nexport const edited = 42;\n"));
    assert!(!code_of(&first).contains("edited"));
    assert!(Arc::ptr_eq(&changed, &transpiled(&preview, &p, "App.tsx")));
    // Back to the first text: the same code as the first time, from a fresh transpile.
    p.set("App.tsx", &original);
    let reverted = transpiled(&preview, &p, "App.tsx");
    assert!(!Arc::ptr_eq(&changed, &reverted));
    assert_eq!(code_of(&reverted), code_of(&first));
    // A file that is not a script, or is gone, has no module.
    assert!(preview.module(&p, "styles.css").is_none());
    assert!(preview.module(&p, "gone.tsx").is_none());
}

#[test]
fn a_runtime_error_location_maps_back_to_the_tsx_line_and_column() {
    let mut p = project();
    let preview = Preview::new();
    p.set(
        "Boom.tsx",
        "type P = { n: number };\n\ninterface Q {\n  q: string;\n}\n\nexport function Boom(p: P) {\n  const s: Q[\"q\"] = \"x\";\n  throw new Error(`boom ${p.n} ${s}`);\n}\n",
    );
    let module = transpiled(&preview, &p, "Boom.tsx");
    let code = code_of(&module);
    // Where the served code throws, as a stack trace reports it (1-based). The types are gone,
    // so the served line differs from the TSX line (9).
    let (index, text) = code
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("throw new Error"))
        .expect("the throw");
    let (line, column) = (index + 1, text.find("throw").expect("column") + 1);
    assert_eq!((line, column), (3, 5), "{code}");
    let at = format!("/g7/Boom:{line}:{column}");
    let expected = SourceLocation {
        file: "Boom.tsx".into(),
        line: 9,
        column: 3,
    };
    assert_eq!(preview.locate(&p, &at), Some(expected));
    // The runtime asks the scheme.
    let response = get(&preview, &p, &format!("/__spike/locate{at}"));
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type, "application/json");
    assert_eq!(
        String::from_utf8(response.body).expect("utf8"),
        r#"{"file":"Boom.tsx","line":9,"column":3}"#
    );
    // Any generation, and the request path with its extension, map the same way.
    assert_eq!(
        preview
            .locate(&p, "/g1/Boom.tsx:3:5")
            .map(|l| (l.line, l.column)),
        Some((9, 3))
    );
    assert_eq!(preview.locate(&p, "/g7/Nope:1:1"), None);
    assert_eq!(
        preview.locate(&p, "/g7/Boom:0:1"),
        None,
        "lines are 1-based"
    );
    assert_eq!(preview.locate(&p, "garbage"), None);
    assert_eq!(get(&preview, &p, "/__spike/locate/g7/Nope:1:1").status, 404);
}

#[test]
fn the_page_has_the_entry_an_import_map_with_its_nonce_and_a_strict_csp() {
    let p = project();
    let preview = Preview::new();
    preview.next_generation();
    let page = get(&preview, &p, "/");
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = String::from_utf8(page.body).expect("utf8");
    assert!(html.contains("<meta name=\"spike-entry\" content=\"main.tsx\">"));
    assert!(html.contains("<meta name=\"spike-generation\" content=\"2\">"));
    assert!(html.contains("<title>Counter demo</title>"));
    assert!(html.contains("<script type=\"module\" src=\"/__spike/runtime.js\"></script>"));
    let nonce = page
        .csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("nonce in CSP");
    assert_eq!(nonce.len(), 32);
    assert_eq!(page.csp, csp(nonce));
    assert!(html.contains(&format!("<script type=\"importmap\" nonce=\"{nonce}\">")));
    // Every response carries the policy, each with a fresh nonce.
    let other = get(&preview, &p, "/g1/App");
    assert!(other
        .csp
        .starts_with("default-src 'none'; script-src 'self' preview: 'nonce-"));
    assert_ne!(other.csp, page.csp);
    assert_eq!(get(&preview, &p, "/nope").status, 404);
    assert!(get_text(&preview, &p, "/__spike/runtime.js").contains("window.__spike = {"));
    assert_eq!(
        get(&preview, &p, "/__spike/preview.css").content_type,
        "text/css; charset=utf-8"
    );
}

#[test]
fn stylesheets_and_json_become_modules_and_missing_files_throw() {
    let mut p = project();
    let preview = Preview::new();
    assert_eq!(
        get_text(&preview, &p, "/g1/styles.css"),
        "const s = document.createElement('style');\ns.dataset.file = \"styles.css\";\n\
         s.textContent = \"b { color: red; }\\n\";\ndocument.head.append(s);\n"
    );
    assert_eq!(
        get_text(&preview, &p, "/g1/data.json"),
        "export default {\"start\":3};\n"
    );
    p.set("bad.json", "{ start: 3 }");
    assert_eq!(
        get_text(&preview, &p, "/g1/bad.json"),
        "throw new Error(\"bad.json: invalid JSON: key must be a string at line 1 column 3\");\n"
    );
    assert_eq!(
        get_text(&preview, &p, "/g4/nope"),
        "throw new Error(\"Cannot find module \\\"nope\\\" in this room.\");\n"
    );
    p.set("notes.md", "# hi\n");
    assert_eq!(
        get_text(&preview, &p, "/g4/notes.md"),
        "throw new Error(\"notes.md is not a module the preview can run\");\n"
    );
}

#[test]
fn reports_from_the_page_are_parsed_and_bounded() {
    let preview = Preview::new();
    let got = Mutex::new(Vec::new());
    let console = br#"{"type":"console","level":"log","args":["hi",  "2"]}"#;
    assert_eq!(post(&preview, "/__spike/report", console, &got), 200);
    let error = br#"{"type":"error","message":"boom","location":"App.tsx:9:3"}"#;
    assert_eq!(post(&preview, "/__spike/report", error, &got), 200);
    let rendered = br#"{"type":"rendered","generation":4,"ok":false}"#;
    assert_eq!(post(&preview, "/__spike/report", rendered, &got), 200);
    let painted = br#"{"type":"rendered","generation":5,"ok":true,"paintedAt":1700000000123.5}"#;
    assert_eq!(post(&preview, "/__spike/report", painted, &got), 200);
    assert_eq!(
        lock(&got).as_slice(),
        &[
            PreviewReport::Console {
                level: "log".into(),
                args: vec!["hi".into(), "2".into()]
            },
            PreviewReport::Error {
                message: "boom".into(),
                location: Some("App.tsx:9:3".into())
            },
            PreviewReport::Rendered {
                generation: 4,
                ok: false,
                painted_at: 0.0
            },
            PreviewReport::Rendered {
                generation: 5,
                ok: true,
                painted_at: 1_700_000_000_123.5
            },
        ]
    );
    // Malformed, too large, to another endpoint, or another method: refused, not reported.
    assert_eq!(
        post(&preview, "/__spike/report", b"{\"type\":\"x\"}", &got),
        400
    );
    let huge = vec![b' '; MAX_REPORT_BYTES + 1];
    assert_eq!(post(&preview, "/__spike/report", &huge, &got), 413);
    assert_eq!(post(&preview, "/__spike/other", console, &got), 404);
    let put = preview.respond(
        &project(),
        &PreviewRequest {
            method: "PUT",
            path: "/",
            body: &[],
        },
        &|_| None,
        &|_| {},
    );
    assert_eq!(put.status, 405);
    assert_eq!(lock(&got).len(), 4);
}

/// The host's side of npm for these tests: what a CDN at `https://cdn.test` serves, by URL;
/// every other URL fails as an offline fetch does. Records the URLs asked for.
#[derive(Debug, Default)]
struct Cdn {
    modules: BTreeMap<String, String>,
    asked: Mutex<Vec<String>>,
}

impl NpmFetcher for Cdn {
    fn cdn(&self) -> &str {
        "https://cdn.test"
    }

    fn fetch(&self, url: &str) -> Result<crate::NpmModule, String> {
        lock(&self.asked).push(url.to_owned());
        match self.modules.get(url) {
            Some(body) => Ok(crate::NpmModule {
                body: body.clone().into_bytes(),
                stale: None,
            }),
            None => Err("offline, and not in the cache".into()),
        }
    }
}

#[test]
fn npm_packages_come_from_the_cdn_and_a_missing_one_is_named() {
    let mut p = project();
    p.set(
        "lib/format.ts",
        "import confetti from \"canvas-confetti\";\nexport const format = (n: number) => `${n}${confetti}`;\n",
    );
    let cdn = Arc::new(Cdn {
        modules: [
            (
                "https://cdn.test/canvas-confetti?external=react,react-dom",
                "export { default } from \"https://cdn.test/canvas-confetti@1.9.3/es2022/confetti.mjs\";\n",
            ),
            (
                "https://cdn.test/canvas-confetti@1.9.3/es2022/confetti.mjs",
                "import \"./util.mjs\";\nexport default \"🎉\";\n",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Cdn::default()
    });
    let preview = Preview::new();
    preview.set_npm(Some(cdn.clone()));

    let page = get_text(&preview, &p, "/");
    assert!(
        page.contains(r#""canvas-confetti":"/__spike/npm/canvas-confetti""#),
        "{page}"
    );
    assert!(!preview.needs_reload(&p));
    // The entry runs (the package is fetched, warming the cache, before the page needs it).
    let main = get_text(&preview, &p, "/g2/main.tsx");
    assert!(!main.starts_with("throw"), "{main}");
    // The bare import and the CDN's own absolute import both come through the preview.
    assert_eq!(
        get_text(&preview, &p, "/__spike/npm/canvas-confetti"),
        "export { default } from \"/canvas-confetti@1.9.3/es2022/confetti.mjs\";\n"
    );
    assert_eq!(
        get_text(&preview, &p, "/canvas-confetti@1.9.3/es2022/confetti.mjs"),
        "import \"./util.mjs\";\nexport default \"🎉\";\n"
    );
    // A nested module the CDN cannot give throws, naming the package and the reason.
    assert_eq!(
        get_text(&preview, &p, "/canvas-confetti@1.9.3/es2022/util.mjs"),
        "throw new Error(\"The package \\\"canvas-confetti@1.9.3\\\" could not be loaded from \
         https://cdn.test/canvas-confetti@1.9.3/es2022/util.mjs: offline, and not in the cache\");\n"
    );

    // A new package: the page must reload for its import map, and the entry names it.
    p.set(
        "components/Counter.tsx",
        "import pad from \"left-pad/lib\";\nexport const Counter = ({ n }: { n: number }) => <b>{pad(n)}</b>;\n",
    );
    assert!(preview.needs_reload(&p));
    assert_eq!(
        get_text(&preview, &p, "/g3/main.tsx"),
        "throw \"The package \\\"left-pad\\\" could not be loaded from https://cdn.test: offline, \
         and not in the cache (imported by components/Counter.tsx).\";\n"
    );
    assert!(lock(&cdn.asked)
        .iter()
        .any(|u| u == "https://cdn.test/left-pad/lib?external=react,react-dom"));
    // Traversal is not a package.
    assert!(get_text(&preview, &p, "/__spike/npm/x/../../etc").starts_with("throw new Error("));
}
