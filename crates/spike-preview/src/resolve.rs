//! Which file or package a module request or an import names.

use crate::ModuleSource;

/// Extensions tried, in order, for an import without one.
pub const RESOLVE_EXTENSIONS: &[&str] = &[".tsx", ".ts", ".jsx", ".js", ".mjs"];

/// The import map: bare specifier → URL path on the scheme. These are the only packages the
/// preview can load, all with no network: React, vendored into the app's build
/// (`ui/scripts/vendor-react.mjs`) and served under `/vendor/`, and `react-dom/client` wrapped by
/// Spike so re-renders reuse the root.
pub const IMPORT_MAP: &[(&str, &str)] = &[
    ("react", "/vendor/react.js"),
    ("react/jsx-runtime", "/vendor/react-jsx-runtime.js"),
    ("react/jsx-dev-runtime", "/vendor/react-jsx-dev-runtime.js"),
    ("react-dom", "/vendor/react-dom.js"),
    ("react-dom/client", "/__spike/react-dom-client.js"),
];

/// The project file a module request names (`request_path` is the URL path after
/// `/g<generation>/`, e.g. `components/Counter`): the exact path, else the path with one of
/// [`RESOLVE_EXTENSIONS`], else the folder's `index` with one of them. `None` when none exists.
pub fn resolve(source: &dyn ModuleSource, request_path: &str) -> Option<String> {
    let exists = |p: &str| source.read(p).is_some();
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

/// `/g<digits>/<path>` → `<path>`.
pub(crate) fn module_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/g")?;
    let (generation, file) = rest.split_once('/')?;
    (!generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit()) && !file.is_empty())
        .then_some(file)
}

/// Whether the import map provides the bare specifier `specifier`.
pub(crate) fn is_mapped(specifier: &str) -> bool {
    IMPORT_MAP.iter().any(|(k, _)| *k == specifier)
}

/// The package a bare specifier names: `lodash/debounce` → `lodash`,
/// `@scope/pkg/sub` → `@scope/pkg`.
pub(crate) fn package_name(specifier: &str) -> &str {
    crate::npm::split_specifier(specifier).0
}

/// The module request a relative `specifier` makes from the module requested as `from`, the way
/// the page's URL resolution does it (relative to the request path, not to the file it resolved
/// to): `components/Counter` + `../lib/format` → `lib/format`. `None` when it leaves the project
/// or is root-relative (`/x`, which is not a module URL).
pub(crate) fn join(from: &str, specifier: &str) -> Option<String> {
    if specifier.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in specifier.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn relative_specifiers_join_like_urls() {
        assert_eq!(
            join("App", "./components/Counter").as_deref(),
            Some("components/Counter")
        );
        assert_eq!(
            join("components/Counter", "../lib/format").as_deref(),
            Some("lib/format")
        );
        assert_eq!(join("a/b/c.tsx", "./d").as_deref(), Some("a/b/d"));
        assert_eq!(join("App", "../outside"), None);
        assert_eq!(join("App", "/abs"), None);
    }

    #[test]
    fn package_names_of_bare_specifiers() {
        assert_eq!(package_name("lodash"), "lodash");
        assert_eq!(package_name("lodash/debounce"), "lodash");
        assert_eq!(
            package_name("@tanstack/react-query"),
            "@tanstack/react-query"
        );
        assert_eq!(package_name("@scope/pkg/sub/path"), "@scope/pkg");
        assert!(is_mapped("react/jsx-runtime"));
        assert!(!is_mapped("react/server"));
    }
}
