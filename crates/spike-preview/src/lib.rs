//! The live preview of a project: the page, its import map, and the modules it runs, served from
//! a `preview://` scheme by whichever face hosts it (the desktop shell today).
//!
//! - **The page** (`GET /`): an HTML shell with an import map and a small runtime
//!   (`runtime.js`) that imports the entry module, re-renders when told to, shows transpile and
//!   runtime errors in an overlay over the last good render, and reports console output and
//!   errors back as `POST /__spike/report` requests (the page has no IPC).
//! - **Modules** (`GET /g<generation>/<path>`): the project's file at `path`, read through a
//!   [`ModuleSource`] and transpiled on demand by spike-transpile, cached by content hash, so a
//!   re-render re-transpiles only what changed. A new generation gives every module a fresh URL,
//!   which is how the runtime re-imports the graph without reloading the page. CSS files become
//!   modules that add a `<style>`, JSON files modules that export the value.
//! - **Resolution** ([`resolve`]): relative imports resolve like a bundler's: the exact path,
//!   then with `.tsx .ts .jsx .js .mjs`, then `/index.*`. Bare imports go through the import map
//!   ([`IMPORT_MAP`]) to React, vendored into the app's build, so a first preview works offline.
//!   A missing file, a transpile error, or a package the import map does not provide is served
//!   as a module that throws a message saying so, which the overlay shows.
//! - **npm packages** ([`npm`], on when the host gives [`Preview::set_npm`] a fetcher): other
//!   bare imports map to `/__spike/npm/<specifier>`, answered with an ESM CDN's module (esm.sh by
//!   default, React left to the page's own), and the CDN modules' own imports come back through
//!   the preview too. A package that cannot be fetched makes the entry throw a message naming
//!   the package and why, so the overlay says so. The page is reloaded (not re-rendered) when
//!   the project starts importing a package its import map lacks ([`Preview::needs_reload`]).
//! - **Error locations** ([`Preview::locate`]): a position in a served module, as a stack trace
//!   prints it, maps back to the project file's line and column through the module's source map.
//! - **The CSP** ([`csp`]): every response carries a strict `Content-Security-Policy`: scripts
//!   only from the scheme plus the one nonce'd inline import map, no `eval`, no plugins, frames,
//!   forms or base changes.
//!
//! The host supplies the files ([`ModuleSource`]), the app's build files under `/vendor/`, and
//! a sink for the page's reports; it turns [`PreviewResponse`]s into its protocol's responses.
//!
//! ```
//! use std::borrow::Cow;
//! use spike_preview::{ModuleSource, Preview, PreviewRequest};
//!
//! struct One;
//! impl ModuleSource for One {
//!     fn read(&self, path: &str) -> Option<String> {
//!         (path == "main.tsx").then(|| "export const n: number = 1;\n".to_owned())
//!     }
//!     fn paths(&self) -> Vec<String> {
//!         vec!["main.tsx".into()]
//!     }
//!     fn entry(&self) -> String {
//!         "main.tsx".into()
//!     }
//! }
//!
//! let preview = Preview::new();
//! let request = PreviewRequest { method: "GET", path: "/g1/main.tsx", body: &[] };
//! let no_assets = |_: &str| -> Option<Cow<'static, [u8]>> { None };
//! let response = preview.respond(&One, &request, &no_assets, &|_| {});
//! assert_eq!(response.status, 200);
//! assert!(String::from_utf8_lossy(&response.body).starts_with("export const n = 1;"));
//! ```

pub mod npm;
mod page;
mod preview;
mod resolve;
mod source;

pub use npm::{NpmFetcher, NpmModule};
pub use page::{csp, errors_script, reload_script, render_script, SCHEME};
pub use preview::{
    Module, ModuleResult, Preview, PreviewReport, PreviewRequest, PreviewResponse, SourceLocation,
    MAX_REPORT_BYTES,
};
pub use resolve::{resolve, IMPORT_MAP, RESOLVE_EXTENSIONS};
pub use source::ModuleSource;
