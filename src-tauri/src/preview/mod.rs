//! The sandboxed live preview: the `preview://` scheme that serves it, the module cache, and the
//! messages the shell sends it.
//!
//! The page is an HTML shell with an import map and a small runtime (`runtime.js`). Modules are
//! served at `/g<generation>/<path>`: the room's file at `path`, transpiled on demand and cached by
//! content hash, so a re-render re-transpiles only what changed. A new generation number gives
//! every module a fresh URL, which is how the runtime re-imports the graph without reloading the
//! page. Relative imports resolve like a bundler's: the exact path, then with `.tsx .ts .jsx .js
//! .mjs`, then `/index.*`. Bare imports go through the import map to React, vendored into the UI
//! build (`ui/scripts/vendor-react.mjs`), so a first preview works offline.
//!
//! The page can reach nothing but this scheme (a strict CSP header on every response), and it has
//! no IPC capability: its console output and runtime errors come back as `POST /__spike/console`
//! and `POST /__spike/error` requests to the scheme.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use spike_transpile::{Diagnostic, SourceKind, SourceMapMode, TranspileOptions};

use crate::room::Room;

/// The scheme's name: pages load from `preview://localhost/`.
pub const SCHEME: &str = "preview";

/// The runtime that renders the entry module and bridges console and errors.
const RUNTIME_JS: &str = include_str!("runtime.js");
/// `react-dom/client` as the preview sees it: the vendored module, with `createRoot` returning the
/// existing root for a container, so a re-render reconciles into the same DOM instead of
/// stacking a second root on it.
const REACT_DOM_CLIENT_JS: &str = include_str!("react-dom-client.js");
/// The error overlay's and the page's base styles.
const PREVIEW_CSS: &str = include_str!("preview.css");

/// Extensions tried, in order, for an import without one.
const RESOLVE_EXTENSIONS: &[&str] = &[".tsx", ".ts", ".jsx", ".js", ".mjs"];

/// Largest console or error report accepted from the page.
const MAX_REPORT_BYTES: usize = 64 * 1024;

/// The import map: bare specifiers the preview can load with no network.
const IMPORT_MAP: &[(&str, &str)] = &[
    ("react", "/vendor/react.js"),
    ("react/jsx-runtime", "/vendor/react-jsx-runtime.js"),
    ("react/jsx-dev-runtime", "/vendor/react-jsx-dev-runtime.js"),
    ("react-dom", "/vendor/react-dom.js"),
    ("react-dom/client", "/__spike/react-dom-client.js"),
];

/// A request to the scheme, reduced to what the handler needs.
#[derive(Debug, Clone)]
pub struct PreviewRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The URL path, percent-decoded, starting with `/`.
    pub path: &'a str,
    /// The request body (reports from the page).
    pub body: &'a [u8],
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// The `Content-Security-Policy` header (set on every response).
    pub csp: String,
}

/// Something the page reported through the scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PreviewReport {
    /// A `console.*` call: the level (`log`, `info`, `warn`, `error`, `debug`) and the arguments
    /// rendered as text.
    Console {
        /// The console method.
        level: String,
        /// The arguments, each rendered as text.
        args: Vec<String>,
    },
    /// An uncaught error or rejection while importing or rendering.
    Error {
        /// The error's message.
        message: String,
        /// Where it happened, as the page saw it (`/g3/App.tsx:12:5`), if known.
        location: Option<String>,
    },
    /// A render of generation `generation` finished (successfully or not).
    Rendered {
        /// The generation rendered.
        generation: u64,
        /// Whether the entry module imported and ran without throwing.
        ok: bool,
    },
}

/// One transpiled module: the ES module and its source map (Source Map Revision 3 JSON).
#[derive(Debug)]
pub struct Module {
    /// The JavaScript served to the page.
    pub code: String,
    /// The map from `code` back to the room's file.
    pub source_map: Option<String>,
}

/// One transpiled module, or why it has none.
pub type ModuleResult = Result<Module, Vec<Diagnostic>>;

/// A position in a room file, 1-based line and column, as the overlay shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    /// The room file.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

#[derive(Debug)]
struct Cached {
    hash: u64,
    result: Arc<ModuleResult>,
}

/// The preview's state: the current generation and the transpile cache.
#[derive(Debug, Default)]
pub struct Preview {
    generation: AtomicU64,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Preview {
    /// A preview at generation 1 with an empty cache.
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The current generation (module URLs are `/g<generation>/…`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a new generation and returns it.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The transpiled module of the room's file `path` (`None` when there is no such file or it
    /// is not a script). Transpiles only when the text changed since the last call.
    pub fn module(&self, room: &Room, path: &str) -> Option<Arc<ModuleResult>> {
        SourceKind::from_path(path)?;
        let source = room.read(path)?;
        let mut hasher = DefaultHasher::new();
        source.hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(c) = lock(&self.cache).get(path) {
            if c.hash == hash {
                return Some(c.result.clone());
            }
        }
        let started = std::time::Instant::now();
        let options = TranspileOptions::new(path).with_source_map(SourceMapMode::External);
        let result = match spike_transpile::transpile(&source, &options) {
            Ok(t) => Ok(Module {
                code: t.code,
                source_map: t.source_map,
            }),
            Err(e) => Err(e.diagnostics()),
        };
        tracing::debug!(path, elapsed = ?started.elapsed(), ok = result.is_ok(), "transpiled");
        let result = Arc::new(result);
        lock(&self.cache).insert(
            path.to_owned(),
            Cached {
                hash,
                result: result.clone(),
            },
        );
        Some(result)
    }

    /// Diagnostics of `path`: the transpile errors, or empty when it transpiles (or is not a
    /// script, or is gone).
    pub fn diagnostics(&self, room: &Room, path: &str) -> Vec<Diagnostic> {
        match self.module(room, path).as_deref() {
            Some(Err(d)) => d.clone(),
            _ => Vec::new(),
        }
    }

    /// Every transpile error in the room, by file.
    pub fn room_errors(&self, room: &Room) -> Vec<Diagnostic> {
        room.paths()
            .iter()
            .filter(|p| !SourceKind::is_declaration_file(p))
            .flat_map(|p| self.diagnostics(room, p))
            .collect()
    }

    /// Answers one request. `assets` reads a file of the UI build (`vendor/react.js`).
    pub fn respond(
        &self,
        room: &Room,
        request: &PreviewRequest<'_>,
        assets: &dyn Fn(&str) -> Option<Cow<'static, [u8]>>,
        report: &dyn Fn(PreviewReport),
    ) -> PreviewResponse {
        let nonce = nonce();
        let ok = |content_type: &'static str, body: Vec<u8>| PreviewResponse {
            status: 200,
            content_type,
            body,
            csp: csp(&nonce),
        };
        let fail = |status: u16, message: String| PreviewResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: message.into_bytes(),
            csp: csp(&nonce),
        };
        let path = request.path;
        if request.method == "POST" {
            if request.body.len() > MAX_REPORT_BYTES {
                return fail(413, "report too large".into());
            }
            return match serde_json::from_slice::<PreviewReport>(request.body) {
                Ok(r) if path == "/__spike/report" => {
                    report(r);
                    ok("text/plain; charset=utf-8", Vec::new())
                }
                Ok(_) => fail(404, format!("no endpoint {path}")),
                Err(e) => fail(400, format!("malformed report: {e}")),
            };
        }
        if request.method != "GET" {
            return fail(405, format!("{} is not allowed", request.method));
        }
        match path {
            "/" | "/index.html" => ok(
                "text/html; charset=utf-8",
                self.page(room, &nonce).into_bytes(),
            ),
            "/__spike/runtime.js" => ok(JS, RUNTIME_JS.as_bytes().to_vec()),
            "/__spike/react-dom-client.js" => ok(JS, REACT_DOM_CLIENT_JS.as_bytes().to_vec()),
            "/__spike/preview.css" => {
                ok("text/css; charset=utf-8", PREVIEW_CSS.as_bytes().to_vec())
            }
            _ if path.starts_with("/__spike/locate/") => {
                match self.locate(room, &path["/__spike/locate".len()..]) {
                    Some(found) => ok(
                        "application/json",
                        serde_json::to_vec(&found).unwrap_or_default(),
                    ),
                    None => fail(404, format!("no source position for {path}")),
                }
            }
            _ if path.starts_with("/vendor/") && !path.contains("..") => {
                match assets(path.trim_start_matches('/')) {
                    Some(bytes) => ok(JS, bytes.into_owned()),
                    None => fail(
                        404,
                        format!("{path} is not in the app's build; run `npm run vendor` in ui/"),
                    ),
                }
            }
            _ => match module_path(path) {
                Some(request_path) => self.serve_module(room, request_path, &ok),
                None => fail(404, format!("no such resource {path}")),
            },
        }
    }

    fn serve_module(
        &self,
        room: &Room,
        request_path: &str,
        ok: &dyn Fn(&'static str, Vec<u8>) -> PreviewResponse,
    ) -> PreviewResponse {
        let Some(path) = resolve(room, request_path) else {
            // A module that throws names the missing file in the overlay; a 404 would only say
            // that "a module failed to load".
            let message = format!("Cannot find module {request_path:?} in this room.");
            return ok(JS, throwing_module(&message).into_bytes());
        };
        if path.ends_with(".css") {
            let css = room.read(&path).unwrap_or_default();
            let code = format!(
                "const s = document.createElement('style');\ns.dataset.file = {};\ns.textContent = {};\ndocument.head.append(s);\n",
                json(&path),
                json(&css)
            );
            return ok(JS, code.into_bytes());
        }
        if path.ends_with(".json") {
            let text = room.read(&path).unwrap_or_default();
            return match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => ok(JS, format!("export default {v};\n").into_bytes()),
                Err(e) => ok(
                    JS,
                    throwing_module(&format!("{path}: invalid JSON: {e}")).into_bytes(),
                ),
            };
        }
        match self.module(room, &path).as_deref() {
            Some(Ok(module)) => ok(JS, module.code.as_bytes().to_vec()),
            Some(Err(diagnostics)) => {
                let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                ok(JS, throwing_module(&text.join("\n")).into_bytes())
            }
            None => ok(
                JS,
                throwing_module(&format!("{path} is not a module the preview can run"))
                    .into_bytes(),
            ),
        }
    }

    /// Maps a position in a served module (`/g3/App:20:27`, 1-based, as a stack trace prints it)
    /// to the room file's line and column through the module's source map.
    pub fn locate(&self, room: &Room, at: &str) -> Option<SourceLocation> {
        let (rest, column) = at.rsplit_once(':')?;
        let (url_path, line) = rest.rsplit_once(':')?;
        let (line, column): (u32, u32) = (line.parse().ok()?, column.parse().ok()?);
        let file = resolve(room, module_path(url_path)?)?;
        let module = self.module(room, &file)?;
        let map = module.as_ref().as_ref().ok()?.source_map.as_deref()?;
        let map = swc_sourcemap::SourceMap::from_slice(map.as_bytes()).ok()?;
        let token = map.lookup_token(line.checked_sub(1)?, column.saturating_sub(1))?;
        Some(SourceLocation {
            file,
            line: token.get_src_line() + 1,
            column: token.get_src_col() + 1,
        })
    }

    /// The HTML shell of the page at the current generation.
    fn page(&self, room: &Room, nonce: &str) -> String {
        let imports: serde_json::Map<String, serde_json::Value> = IMPORT_MAP
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let map = serde_json::json!({ "imports": imports });
        let title = room.meta("title").unwrap_or_else(|| "Preview".into());
        format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"spike-entry\" content=\"{entry}\">\n\
             <meta name=\"spike-generation\" content=\"{generation}\">\n\
             <title>{title}</title>\n\
             <link rel=\"stylesheet\" href=\"/__spike/preview.css\">\n\
             <script type=\"importmap\" nonce=\"{nonce}\">{map}</script>\n\
             <script type=\"module\" src=\"/__spike/runtime.js\"></script>\n\
             </head>\n<body>\n<div id=\"root\"></div>\n</body>\n</html>\n",
            entry = html_escape(&room.entry()),
            generation = self.generation(),
            title = html_escape(&title),
        )
    }
}

const JS: &str = "text/javascript; charset=utf-8";

/// `/g<digits>/<path>` → `<path>`.
fn module_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/g")?;
    let (generation, file) = rest.split_once('/')?;
    (!generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit()) && !file.is_empty())
        .then_some(file)
}

/// The room file a module request names: exact, with an extension, or a folder's index.
pub fn resolve(room: &Room, request_path: &str) -> Option<String> {
    let exists = |p: &str| room.read(p).is_some();
    if exists(request_path) {
        return Some(request_path.to_owned());
    }
    let bases = [request_path.to_owned(), format!("{request_path}/index")];
    for base in bases {
        for ext in RESOLVE_EXTENSIONS {
            let candidate = format!("{base}{ext}");
            if exists(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// The page's Content-Security-Policy: scripts, styles, fetches and images from this scheme only
/// (plus the one nonce'd inline import map); no plugins, frames, forms or base changes.
pub fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self' preview: 'nonce-{nonce}'; \
         style-src 'self' preview: 'unsafe-inline'; img-src 'self' preview: data: blob:; \
         font-src 'self' preview: data:; connect-src 'self' preview:; \
         media-src 'self' preview: data: blob:; base-uri 'none'; form-action 'none'; \
         frame-src 'none'; object-src 'none'"
    )
}

fn nonce() -> String {
    // RandomState is seeded from the OS per process and perturbed per instance: unguessable by
    // the page, which is all a CSP nonce needs.
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = std::collections::hash_map::RandomState::new().hash_one(n);
    let b = std::collections::hash_map::RandomState::new().hash_one(n.wrapping_add(1));
    format!("{a:016x}{b:016x}")
}

fn throwing_module(message: &str) -> String {
    format!("throw new Error({});\n", json(message))
}

fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JavaScript for the shell to evaluate in the preview: render `generation`.
pub fn render_script(generation: u64) -> String {
    format!("window.__spike && window.__spike.render({generation});")
}

/// JavaScript for the shell to evaluate in the preview: show these transpile errors over the last
/// good render.
pub fn errors_script(diagnostics: &[Diagnostic]) -> String {
    let list = serde_json::to_string(diagnostics).unwrap_or_else(|_| "[]".into());
    format!("window.__spike && window.__spike.showErrors({list});")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offline room holding the example project.
    fn room() -> (crate::room::tests::TestServer, tempfile::TempDir, Room) {
        let server = crate::room::tests::TestServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let room = server.open(dir.path(), "preview-test", false);
        for (path, text) in spike_collab::example::FILES {
            room.create_file(path, text).expect("create");
        }
        for (key, value) in spike_collab::example::META {
            room.set_meta(key, value).expect("meta");
        }
        (server, dir, room)
    }

    fn get(preview: &Preview, room: &Room, path: &str) -> PreviewResponse {
        let assets = |p: &str| (p == "vendor/react.js").then(|| Cow::Borrowed(&b"export {}"[..]));
        preview.respond(
            room,
            &PreviewRequest {
                method: "GET",
                path,
                body: &[],
            },
            &assets,
            &|_| {},
        )
    }

    #[test]
    fn the_page_has_the_entry_an_import_map_with_its_nonce_and_a_strict_csp() {
        let (_s, _d, room) = room();
        let preview = Preview::new();
        let page = get(&preview, &room, "/");
        assert_eq!(page.status, 200);
        let html = String::from_utf8(page.body).expect("utf8");
        assert!(html.contains("<meta name=\"spike-entry\" content=\"main.tsx\">"));
        assert!(html.contains("\"react-dom/client\":\"/__spike/react-dom-client.js\""));
        let nonce = page
            .csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .expect("nonce in CSP");
        assert_eq!(nonce.len(), 32);
        assert!(html.contains(&format!("<script type=\"importmap\" nonce=\"{nonce}\">")));
        assert!(page
            .csp
            .starts_with("default-src 'none'; script-src 'self' preview: 'nonce-"));
        assert!(!page.csp.contains("unsafe-eval"));
    }

    #[test]
    fn modules_resolve_like_a_bundler_and_are_transpiled() {
        let (_s, _d, room) = room();
        let preview = Preview::new();
        // `./App` from main.tsx arrives as /g1/App.
        let app = get(&preview, &room, "/g1/App");
        assert_eq!(app.content_type, JS);
        let code = String::from_utf8(app.body).expect("utf8");
        assert!(code.contains("from \"react/jsx-runtime\""), "{code}");
        assert!(code.contains("from \"./components/Counter\""), "{code}");
        assert!(!code.contains("type Todo"), "types are stripped: {code}");
        assert_eq!(
            resolve(&room, "components/Counter").as_deref(),
            Some("components/Counter.tsx")
        );
        assert_eq!(
            resolve(&room, "lib/format").as_deref(),
            Some("lib/format.ts")
        );
        assert_eq!(resolve(&room, "nope"), None);
    }

    #[test]
    fn a_missing_module_or_a_syntax_error_becomes_a_module_that_throws_the_reason() {
        let (_s, _d, room) = room();
        let preview = Preview::new();
        let missing = String::from_utf8(get(&preview, &room, "/g4/nope").body).expect("utf8");
        assert_eq!(
            missing,
            "throw new Error(\"Cannot find module \\\"nope\\\" in this room.\");\n"
        );
        room.create_file("Broken.tsx", "export const x = <div>;\n")
            .expect("create");
        let broken = String::from_utf8(get(&preview, &room, "/g4/Broken").body).expect("utf8");
        // The unclosed `<div>` is found at the end of the file: line 2, column 1.
        assert_eq!(
            broken,
            "throw new Error(\"Broken.tsx:2:1: error: Expected '</', got '<eof>'\");\n"
        );
        assert_eq!(preview.room_errors(&room)[0].file, "Broken.tsx");
        assert_eq!(preview.room_errors(&room)[0].line, 2);
    }

    #[test]
    fn the_cache_transpiles_a_file_again_only_when_its_text_changes() {
        let (_s, _d, room) = room();
        let preview = Preview::new();
        let first = preview.module(&room, "App.tsx").expect("module");
        let again = preview.module(&room, "App.tsx").expect("module");
        assert!(Arc::ptr_eq(&first, &again));
        room.create_file("B.ts", "export const b = 1;\n")
            .expect("create");
        let len = room.read("App.tsx").map(|s| s.encode_utf16().count());
        room.edit(
            "App.tsx",
            &[spike_collab::TextEdit::insert(
                len.expect("file") as u32,
                "\n// end\n",
            )],
        )
        .expect("edit");
        let changed = preview.module(&room, "App.tsx").expect("module");
        assert!(!Arc::ptr_eq(&first, &changed));
    }

    #[test]
    fn vendor_files_come_from_the_ui_build_and_reports_are_parsed() {
        let (_s, _d, room) = room();
        let preview = Preview::new();
        assert_eq!(get(&preview, &room, "/vendor/react.js").body, b"export {}");
        assert_eq!(get(&preview, &room, "/vendor/nope.js").status, 404);
        let got = Mutex::new(Vec::new());
        let body = br#"{"type":"console","level":"log","args":["hi",  "2"]}"#;
        let response = preview.respond(
            &room,
            &PreviewRequest {
                method: "POST",
                path: "/__spike/report",
                body,
            },
            &|_| None,
            &|r| lock(&got).push(r),
        );
        assert_eq!(response.status, 200);
        assert_eq!(
            lock(&got).as_slice(),
            &[PreviewReport::Console {
                level: "log".into(),
                args: vec!["hi".into(), "2".into()]
            }]
        );
    }

    #[test]
    fn a_position_in_a_served_module_maps_back_to_the_tsx_line() {
        let (_s, _d, room) = room();
        let preview = Preview::new();
        room.create_file(
            "Boom.tsx",
            "type P = { n: number };\n\nexport function Boom(p: P) {\n  throw new Error(`boom ${p.n}`);\n}\n",
        )
        .expect("create");
        let code = match preview.module(&room, "Boom.tsx").as_deref() {
            Some(Ok(m)) => m.code.clone(),
            other => panic!("no module: {other:?}"),
        };
        // Find where the served code throws, as a stack trace would report it (1-based).
        let (line, text) = code
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains("throw new Error"))
            .expect("the throw");
        let column = text.find("throw").expect("column") + 1;
        let at = format!("/g7/Boom:{}:{column}", line + 1);
        assert_eq!(
            preview.locate(&room, &at),
            Some(SourceLocation {
                file: "Boom.tsx".into(),
                line: 4,
                column: 3
            })
        );
        let response = get(&preview, &room, &format!("/__spike/locate{at}"));
        assert_eq!(response.status, 200);
        assert_eq!(
            String::from_utf8(response.body).expect("utf8"),
            r#"{"file":"Boom.tsx","line":4,"column":3}"#
        );
        assert_eq!(preview.locate(&room, "/g7/Nope:1:1"), None);
        assert_eq!(preview.locate(&room, "garbage"), None);
    }

    #[test]
    fn module_paths_need_a_generation() {
        assert_eq!(
            module_path("/g12/components/Counter"),
            Some("components/Counter")
        );
        assert_eq!(module_path("/g/App.tsx"), None);
        assert_eq!(module_path("/gx/App.tsx"), None);
        assert_eq!(module_path("/g1/"), None);
        assert_eq!(module_path("/App.tsx"), None);
    }
}
