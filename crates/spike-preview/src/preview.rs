//! The preview's state and its request handler.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use spike_transpile::{
    Diagnostic, Import, ImportKind, ImportStatement, SourceKind, SourceMapMode, TranspileOptions,
};

use crate::npm::{self, NpmFetcher, NPM_PREFIX};
use crate::page::{self, csp, nonce, PREVIEW_CSS, REACT_DOM_CLIENT_JS, RUNTIME_JS};
use crate::resolve::{is_mapped, join, module_path, package_name, resolve};
use crate::ModuleSource;

/// Largest console or error report accepted from the page, in bytes; a larger body gets a 413.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

const JS: &str = "text/javascript; charset=utf-8";

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
    /// HTTP status: 200, or 400 (malformed report), 404 (no such resource), 405 (method other
    /// than GET or POST), 413 (report over [`MAX_REPORT_BYTES`]).
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// The `Content-Security-Policy` header (set on every response, see [`csp`]).
    pub csp: String,
}

/// Something the page reported through the scheme: the JSON body of `POST /__spike/report`,
/// tagged by `type` (`console`, `error`, `rendered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
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
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        generation: u64,
        /// Whether the entry module imported and ran without throwing.
        ok: bool,
        /// When the page had painted this render (two animation frames after React's commit),
        /// in epoch milliseconds (`performance.timeOrigin + performance.now()`, a clock the
        /// editor's webview shares); 0 when the page did not say. For latency measurements.
        #[serde(rename = "paintedAt", default)]
        painted_at: f64,
    },
}

/// One transpiled module: the ES module, its source map, and what it imports.
#[derive(Debug)]
pub struct Module {
    /// The JavaScript served to the page.
    pub code: String,
    /// The map from `code` back to the project's file (Source Map Revision 3 JSON).
    pub source_map: Option<String>,
    /// The modules `code` imports at run time, in source order.
    pub imports: Vec<Import>,
}

/// One transpiled module, or the transpile errors (1-based lines and character columns) that
/// keep it from having one.
pub type ModuleResult = Result<Module, Vec<Diagnostic>>;

/// A position in a project file, 1-based line and column, as the overlay shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    /// The project file.
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

/// The preview's state: the current generation and the transpile cache (one entry per path,
/// replaced when the file's text hashes differently).
#[derive(Debug)]
pub struct Preview {
    generation: AtomicU64,
    cache: Mutex<HashMap<String, Cached>>,
    /// Where npm packages come from; `None`: only the import map's packages exist.
    npm: RwLock<Option<Arc<dyn NpmFetcher>>>,
    /// The npm packages the page's import map was built with.
    page_packages: Mutex<BTreeSet<String>>,
}

impl Default for Preview {
    fn default() -> Self {
        Self::new()
    }
}

impl Preview {
    /// A preview at generation 1 with an empty cache.
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(1),
            cache: Mutex::new(HashMap::new()),
            npm: RwLock::new(None),
            page_packages: Mutex::new(BTreeSet::new()),
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

    /// The transpiled module of the file `path` (`None` when there is no such file or it is not
    /// a script). Transpiles only when the text's hash changed since the last call for `path`;
    /// otherwise returns the same `Arc`.
    pub fn module(&self, source: &dyn ModuleSource, path: &str) -> Option<Arc<ModuleResult>> {
        SourceKind::from_path(path)?;
        let text = source.read(path)?;
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(c) = lock(&self.cache).get(path) {
            if c.hash == hash {
                return Some(c.result.clone());
            }
        }
        let started = std::time::Instant::now();
        let options = TranspileOptions::new(path).with_source_map(SourceMapMode::External);
        let result = match spike_transpile::transpile(&text, &options) {
            Ok(t) => Ok(Module {
                code: t.code,
                source_map: t.source_map,
                imports: t.imports,
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
    pub fn diagnostics(&self, source: &dyn ModuleSource, path: &str) -> Vec<Diagnostic> {
        match self.module(source, path).as_deref() {
            Some(Err(d)) => d.clone(),
            _ => Vec::new(),
        }
    }

    /// Every transpile error of the project, file by file in the order of
    /// [`ModuleSource::paths`]; declaration files (`.d.ts`) are skipped.
    pub fn room_errors(&self, source: &dyn ModuleSource) -> Vec<Diagnostic> {
        source
            .paths()
            .iter()
            .filter(|p| !SourceKind::is_declaration_file(p))
            .flat_map(|p| self.diagnostics(source, p))
            .collect()
    }

    /// Answers one request. `assets` reads a file of the app's build by its path without the
    /// leading `/` (`vendor/react.js`); `report` receives what the page posts to
    /// `/__spike/report`.
    pub fn respond(
        &self,
        source: &dyn ModuleSource,
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
            "/" | "/index.html" => {
                let title = source.title().unwrap_or_else(|| "Preview".into());
                let packages = if self.npm().is_some() {
                    self.packages(source)
                } else {
                    BTreeSet::new()
                };
                let html = page::page(
                    &source.entry(),
                    self.generation(),
                    &title,
                    &nonce,
                    &packages,
                );
                *lock(&self.page_packages) = packages;
                ok("text/html; charset=utf-8", html.into_bytes())
            }
            "/__spike/runtime.js" => ok(JS, RUNTIME_JS.as_bytes().to_vec()),
            "/__spike/react-dom-client.js" => ok(JS, REACT_DOM_CLIENT_JS.as_bytes().to_vec()),
            "/__spike/preview.css" => {
                ok("text/css; charset=utf-8", PREVIEW_CSS.as_bytes().to_vec())
            }
            _ if path.starts_with("/__spike/locate/") => {
                match self.locate(source, &path["/__spike/locate".len()..]) {
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
            _ if path.starts_with(NPM_PREFIX) => {
                let specifier = &path[NPM_PREFIX.len()..];
                ok(JS, self.npm_module(source, specifier))
            }
            _ => match module_path(path) {
                Some(request_path) => ok(JS, self.module_code(source, request_path).into_bytes()),
                None if npm::is_cdn_path(path) && self.npm().is_some() => {
                    ok(JS, self.cdn_module(path))
                }
                None => fail(404, format!("no such resource {path}")),
            },
        }
    }

    /// The JavaScript served for the module request `request_path`: the module, or one that
    /// throws why there is none.
    fn module_code(&self, source: &dyn ModuleSource, request_path: &str) -> String {
        let Some(path) = resolve(source, request_path) else {
            // A module that throws names the missing file in the overlay; a 404 would only say
            // that "a module failed to load".
            return throwing_module(&format!(
                "Cannot find module {request_path:?} in this room."
            ));
        };
        if path.ends_with(".css") {
            let css = source.read(&path).unwrap_or_default();
            return format!(
                "const s = document.createElement('style');\ns.dataset.file = {};\ns.textContent = {};\ndocument.head.append(s);\n",
                json(&path),
                json(&css)
            );
        }
        if path.ends_with(".json") {
            let text = source.read(&path).unwrap_or_default();
            return match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => format!("export default {v};\n"),
                Err(e) => throwing_module(&format!("{path}: invalid JSON: {e}")),
            };
        }
        if resolve(source, &source.entry()).as_deref() == Some(path.as_str()) {
            if let Some(message) = self.unavailable_package(source, request_path) {
                // The page would fail to resolve or link the package before running anything,
                // with a message that differs per engine; say what is wrong instead. Only the
                // entry is replaced (the runtime imports it dynamically, by no name): an empty
                // stand-in for a module deeper in the graph would break its importers' named
                // imports. A string, not an Error: no stack, so the overlay shows no made-up
                // position.
                return format!("throw {};\n", json(&message));
            }
        }
        match self.module(source, &path).as_deref() {
            Some(Ok(module)) => module.code.clone(),
            Some(Err(diagnostics)) => {
                let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                throwing_module(&text.join("\n"))
            }
            None => throwing_module(&format!("{path} is not a module the preview can run")),
        }
    }

    /// Why the page cannot load the packages the static import graph of the module request
    /// `entry` imports, if it cannot: a package the import map does not provide when npm is off,
    /// else the first one that cannot be fetched (which also warms the host's cache with every
    /// package the graph imports directly). `None` when they all load.
    fn unavailable_package(&self, source: &dyn ModuleSource, entry: &str) -> Option<String> {
        let npm = self.npm();
        for (file, specifier) in self.bare_imports(source, entry) {
            let package = package_name(&specifier);
            let Some(npm) = &npm else {
                return Some(format!(
                    "The package \"{package}\" is not available in the preview yet: only \
                     react and react-dom are bundled with Spike (imported by {file})."
                ));
            };
            if !npm::is_npm_specifier(&specifier) {
                return Some(format!(
                    "\"{specifier}\" is not an npm package name (imported by {file})."
                ));
            }
            let version = source.package_version(package);
            let url = npm::bare_url(npm.cdn(), &specifier, version.as_deref());
            if let Err(reason) = npm.fetch(&url) {
                return Some(format!(
                    "The package \"{package}\" could not be loaded from {}: {reason} (imported by {file}).",
                    npm.cdn()
                ));
            }
        }
        None
    }

    /// The bare imports the import map does not provide in the static import graph of the
    /// module request `entry`, with the file importing each, walking the graph the way the page
    /// will load it.
    fn bare_imports(&self, source: &dyn ModuleSource, entry: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::from([entry.to_owned()]);
        let mut queue = vec![entry.to_owned()];
        while let Some(request_path) = queue.pop() {
            let Some(file) = resolve(source, &request_path) else {
                continue;
            };
            let Some(module) = self.module(source, &file) else {
                continue;
            };
            let Ok(module) = module.as_ref() else {
                continue;
            };
            // Dynamic imports fail only when they run, and the code may catch that.
            let imports = module
                .imports
                .iter()
                .filter(|i| i.statement != ImportStatement::Dynamic);
            for import in imports {
                match import.kind {
                    ImportKind::Bare
                        if !is_mapped(&import.specifier)
                            && seen.insert(format!("bare:{}", import.specifier)) =>
                    {
                        found.push((file.clone(), import.specifier.clone()));
                    }
                    ImportKind::Relative => {
                        if let Some(next) = join(&request_path, &import.specifier) {
                            if seen.insert(next.clone()) {
                                queue.push(next);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// Sets where npm packages come from (`None`: nowhere; only the import map's packages load).
    /// The page picks it up at its next load.
    pub fn set_npm(&self, npm: Option<Arc<dyn NpmFetcher>>) {
        *self
            .npm
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = npm;
    }

    fn npm(&self) -> Option<Arc<dyn NpmFetcher>> {
        self.npm
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The npm packages the project's modules import (bare imports the import map does not
    /// provide, by package name), which the page's import map maps to `/__spike/npm/`.
    pub fn packages(&self, source: &dyn ModuleSource) -> BTreeSet<String> {
        let mut packages = BTreeSet::new();
        for path in source.paths() {
            if let Some(module) = self.module(source, &path) {
                if let Ok(module) = module.as_ref() {
                    for import in &module.imports {
                        if import.kind == ImportKind::Bare
                            && !is_mapped(&import.specifier)
                            && npm::is_npm_specifier(&import.specifier)
                        {
                            packages.insert(package_name(&import.specifier).to_owned());
                        }
                    }
                }
            }
        }
        packages
    }

    /// Whether the page must be loaded again rather than re-rendered: npm is on and the project
    /// now imports packages the page's import map does not map (import maps are fixed once a
    /// page has loaded a module).
    pub fn needs_reload(&self, source: &dyn ModuleSource) -> bool {
        self.npm().is_some() && self.packages(source) != *lock(&self.page_packages)
    }

    /// The module served for the bare import `specifier` (`/__spike/npm/<specifier>`): the CDN's
    /// module, or one that throws why it cannot be had.
    fn npm_module(&self, source: &dyn ModuleSource, specifier: &str) -> Vec<u8> {
        let Some(npm) = self.npm() else {
            return throwing_module("npm packages are off in this preview").into_bytes();
        };
        if !npm::is_npm_specifier(specifier) {
            return throwing_module(&format!("{specifier:?} is not an npm package name"))
                .into_bytes();
        }
        let package = package_name(specifier);
        let url = npm::bare_url(
            npm.cdn(),
            specifier,
            source.package_version(package).as_deref(),
        );
        self.fetched(npm.as_ref(), &url, package)
    }

    /// The module a CDN module imports by the absolute path `path`.
    fn cdn_module(&self, path: &str) -> Vec<u8> {
        let Some(npm) = self.npm() else {
            return throwing_module("npm packages are off in this preview").into_bytes();
        };
        let url = format!("{}{path}", npm.cdn());
        let package = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or(path);
        self.fetched(npm.as_ref(), &url, package)
    }

    fn fetched(&self, npm: &dyn NpmFetcher, url: &str, package: &str) -> Vec<u8> {
        match npm.fetch(url) {
            Ok(module) => {
                if let Some(reason) = &module.stale {
                    tracing::info!(url, reason, "serving a cached npm module past its expiry");
                }
                npm::rewrite_cdn_urls(&module.body, npm.cdn())
            }
            Err(reason) => throwing_module(&format!(
                "The package \"{package}\" could not be loaded from {url}: {reason}"
            ))
            .into_bytes(),
        }
    }

    /// Maps a position in a served module (`/g3/App:20:27`: the module URL path, then the 1-based
    /// line and column as a stack trace prints them) to the project file's line and column
    /// through the module's source map. `None` when the text is not such a position, the module
    /// does not exist or did not transpile, or the map has nothing there.
    pub fn locate(&self, source: &dyn ModuleSource, at: &str) -> Option<SourceLocation> {
        let (rest, column) = at.rsplit_once(':')?;
        let (url_path, line) = rest.rsplit_once(':')?;
        let (line, column): (u32, u32) = (line.parse().ok()?, column.parse().ok()?);
        let file = resolve(source, module_path(url_path)?)?;
        let module = self.module(source, &file)?;
        let map = module.as_ref().as_ref().ok()?.source_map.as_deref()?;
        let map = swc_sourcemap::SourceMap::from_slice(map.as_bytes()).ok()?;
        let token = map.lookup_token(line.checked_sub(1)?, column.saturating_sub(1))?;
        Some(SourceLocation {
            file,
            line: token.get_src_line() + 1,
            column: token.get_src_col() + 1,
        })
    }
}

fn throwing_module(message: &str) -> String {
    format!("throw new Error({});\n", json(message))
}

fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
