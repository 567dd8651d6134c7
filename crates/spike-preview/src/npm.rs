//! npm packages in the preview, from an ESM CDN through the host's store.
//!
//! A bare import the import map does not provide (`canvas-confetti`, `@scope/pkg/sub`) is mapped
//! by the page's import map to `/__spike/npm/<specifier>`; the preview answers that with the
//! module the CDN serves at `<cdn>/<package>[@<version>]<subpath>?external=react,react-dom`
//! (esm.sh's interface: `external` leaves `react` and `react-dom` as bare imports, which the
//! import map points at the app's bundled React, so every package shares one React). The version
//! comes from the room's pins ([`crate::ModuleSource::package_version`]), else the CDN picks.
//!
//! CDN modules import each other by absolute path (`/canvas-confetti@1.9.3/es2022/x.mjs`) or by
//! relative path; both resolve to the preview's own origin, and the preview answers any such path
//! that is not one of its own with the CDN's module at the same path. Quoted absolute URLs of the
//! CDN (`"https://esm.sh/…"`) are rewritten to paths, since the preview's CSP allows scripts
//! from its own scheme only.
//!
//! The host fetches ([`NpmFetcher`]): in the desktop app through the tiered store (memory →
//! SQLite → room server → the CDN), so what was fetched once works offline and across restarts.

/// The URL path prefix of bare npm imports on the preview's scheme.
pub const NPM_PREFIX: &str = "/__spike/npm/";

/// The query sent with every bare import: esm.sh's way of leaving React to the page.
pub const EXTERNAL_QUERY: &str = "external=react,react-dom";

/// The default ESM CDN.
pub const DEFAULT_CDN: &str = "https://esm.sh";

/// A module the host fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpmModule {
    /// The JavaScript.
    pub body: Vec<u8>,
    /// Set when it is an old copy served because the CDN could not be reached (the reason).
    pub stale: Option<String>,
}

/// How the preview gets npm modules: the host's fetcher, with the CDN it fetches from.
pub trait NpmFetcher: Send + Sync + std::fmt::Debug {
    /// The CDN's base URL without a trailing `/` (e.g. `https://esm.sh`).
    fn cdn(&self) -> &str;

    /// The module at `url` (a URL under [`NpmFetcher::cdn`]), or why it cannot be had, for a
    /// person: `offline and not cached (connection refused)`, `404 Not Found: <the CDN's text>`.
    fn fetch(&self, url: &str) -> Result<NpmModule, String>;
}

/// Whether `specifier` is a bare npm specifier the preview may request: an optional
/// `@scope/`, a package name of lowercase letters, digits, `-`, `.`, `_` and `~` (npm's rules)
/// that does not start with `.` or `_`, then an optional subpath of `/`-separated segments of
/// URL-safe characters, with no `.`/`..` segment.
pub fn is_npm_specifier(specifier: &str) -> bool {
    let (package, subpath) = split_specifier(specifier);
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= 214
            && !name.starts_with(['.', '_'])
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    };
    let package_ok = match package.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, name)) => name_ok(scope) && name_ok(name),
            None => false,
        },
        None => name_ok(package),
    };
    let subpath_ok = subpath.is_empty()
        || subpath[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~@+".contains(&b))
        });
    package_ok && subpath_ok
}

/// `@scope/pkg/sub/path` → (`@scope/pkg`, `/sub/path`); `lodash` → (`lodash`, ``).
pub(crate) fn split_specifier(specifier: &str) -> (&str, &str) {
    let parts = if specifier.starts_with('@') { 2 } else { 1 };
    match specifier.match_indices('/').nth(parts - 1) {
        Some((i, _)) => specifier.split_at(i),
        None => (specifier, ""),
    }
}

/// The CDN URL of a bare `specifier`, pinned to `version` when given.
pub fn bare_url(cdn: &str, specifier: &str, version: Option<&str>) -> String {
    let (package, subpath) = split_specifier(specifier);
    let pin = version.map(|v| format!("@{v}")).unwrap_or_default();
    format!("{cdn}/{package}{pin}{subpath}?{EXTERNAL_QUERY}")
}

/// Whether a request path is one a CDN module would make (an absolute path of its own): not one
/// of the preview's, and with no `.`/`..` segment.
pub(crate) fn is_cdn_path(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && !path.starts_with("/__spike/")
        && !path.starts_with("/vendor/")
        && crate::resolve::module_path(path).is_none()
        && path[1..]
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// `body` with the CDN's quoted absolute URLs (`"https://esm.sh/x"`) turned into paths
/// (`"/x"`), which the preview serves from the CDN too.
pub(crate) fn rewrite_cdn_urls(body: &[u8], cdn: &str) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return body.to_vec();
    };
    let mut out = text.to_owned();
    for quote in ['"', '\'', '`'] {
        out = out.replace(&format!("{quote}{cdn}/"), &format!("{quote}/"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_specifiers_follow_npm_names_and_never_traverse() {
        for ok in [
            "lodash-es",
            "canvas-confetti",
            "@tanstack/react-query",
            "lodash/debounce",
            "@scope/pkg/sub/path.js",
            "date-fns/locale/en-US",
        ] {
            assert!(is_npm_specifier(ok), "{ok}");
        }
        for bad in [
            "",
            "Lodash",
            ".hidden",
            "_private",
            "@scope",
            "@/x",
            "pkg/../../etc",
            "pkg/./x",
            "pkg//x",
            "pkg/x?y",
            "pkg name",
        ] {
            assert!(!is_npm_specifier(bad), "{bad}");
        }
    }

    #[test]
    fn bare_urls_pin_the_package_not_the_subpath() {
        assert_eq!(
            bare_url("https://esm.sh", "canvas-confetti", None),
            "https://esm.sh/canvas-confetti?external=react,react-dom"
        );
        assert_eq!(
            bare_url("http://127.0.0.1:9/cdn", "@scope/pkg/sub", Some("1.2.3")),
            "http://127.0.0.1:9/cdn/@scope/pkg@1.2.3/sub?external=react,react-dom"
        );
    }

    #[test]
    fn cdn_paths_are_everything_the_preview_does_not_serve_itself() {
        assert!(is_cdn_path(
            "/canvas-confetti@1.9.3/es2022/canvas-confetti.mjs"
        ));
        assert!(is_cdn_path("/v135/react@18.2.0/es2022/react.mjs"));
        for own in [
            "/",
            "/g3/App",
            "/__spike/runtime.js",
            "/vendor/react.js",
            "/a/../b",
            "/a//b",
        ] {
            assert!(!is_cdn_path(own), "{own}");
        }
    }

    #[test]
    fn quoted_cdn_urls_become_paths() {
        let body = br#"import a from"https://esm.sh/a@1/x.mjs";import('https://esm.sh/b');// https://esm.sh/c"#;
        assert_eq!(
            String::from_utf8(rewrite_cdn_urls(body, "https://esm.sh"))
                .ok()
                .as_deref(),
            Some(r#"import a from"/a@1/x.mjs";import('/b');// https://esm.sh/c"#)
        );
    }
}
