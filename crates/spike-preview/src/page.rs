//! The page's HTML shell, its CSP, and the scripts the host evaluates in it.

use spike_transpile::Diagnostic;

use crate::resolve::IMPORT_MAP;

/// The scheme's name: pages load from `preview://localhost/`.
pub const SCHEME: &str = "preview";

/// The runtime that renders the entry module and bridges console and errors.
pub(crate) const RUNTIME_JS: &str = include_str!("assets/runtime.js");
/// `react-dom/client` as the preview sees it: the vendored module, with `createRoot` returning the
/// existing root for a container, so a re-render reconciles into the same DOM instead of
/// stacking a second root on it.
pub(crate) const REACT_DOM_CLIENT_JS: &str = include_str!("assets/react-dom-client.js");
/// The error overlay's and the page's base styles.
pub(crate) const PREVIEW_CSS: &str = include_str!("assets/preview.css");

/// The page's Content-Security-Policy: scripts, styles, fetches and images from this scheme only
/// (plus the one inline import map carrying `nonce`); no `eval`, plugins, frames, forms or base
/// changes. `nonce` is sent as given (the handler makes 32 hex digits per response).
pub fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self' preview: 'nonce-{nonce}'; \
         style-src 'self' preview: 'unsafe-inline'; img-src 'self' preview: data: blob:; \
         font-src 'self' preview: data:; connect-src 'self' preview:; \
         media-src 'self' preview: data: blob:; base-uri 'none'; form-action 'none'; \
         frame-src 'none'; object-src 'none'"
    )
}

/// JavaScript for the host to evaluate in the preview: load the page again (its import map
/// changes only that way).
pub fn reload_script() -> &'static str {
    "location.reload();"
}

/// JavaScript for the host to evaluate in the preview: render generation `generation`.
pub fn render_script(generation: u64) -> String {
    format!("window.__spike && window.__spike.render({generation});")
}

/// JavaScript for the host to evaluate in the preview: show these transpile errors over the last
/// good render.
pub fn errors_script(diagnostics: &[Diagnostic]) -> String {
    let list = serde_json::to_string(diagnostics).unwrap_or_else(|_| "[]".into());
    format!("window.__spike && window.__spike.showErrors({list});")
}

/// The HTML shell of the page: `entry` and `generation` for the runtime, the import map (with
/// the npm `packages`) under `nonce`.
pub(crate) fn page(
    entry: &str,
    generation: u64,
    title: &str,
    nonce: &str,
    packages: &std::collections::BTreeSet<String>,
) -> String {
    let mut imports: serde_json::Map<String, serde_json::Value> = IMPORT_MAP
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    // npm packages: the package and its subpaths, through the preview's npm route.
    for package in packages {
        let to = format!("{}{package}", crate::npm::NPM_PREFIX);
        imports.insert(package.clone(), to.clone().into());
        imports.insert(format!("{package}/"), format!("{to}/").into());
    }
    let map = serde_json::json!({ "imports": imports });
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
        entry = html_escape(entry),
        title = html_escape(title),
    )
}

/// A fresh CSP nonce: 32 hex digits.
pub(crate) fn nonce() -> String {
    // RandomState is seeded from the OS per process and perturbed per instance: unguessable by
    // the page, which is all a CSP nonce needs.
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = std::collections::hash_map::RandomState::new().hash_one(n);
    let b = std::collections::hash_map::RandomState::new().hash_one(n.wrapping_add(1));
    format!("{a:016x}{b:016x}")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one directive of a policy, e.g. `script-src` → `'self' preview: …`.
    fn directive<'a>(policy: &'a str, name: &str) -> Option<&'a str> {
        policy
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name)?.strip_prefix(' '))
    }

    #[test]
    fn the_csp_forbids_eval_and_limits_scripts_to_the_scheme() {
        let policy = csp("0123abcd");
        assert_eq!(directive(&policy, "default-src"), Some("'none'"));
        // Scripts: this scheme, and inline only with the nonce. No 'unsafe-eval' (so no eval,
        // new Function or string timers) and no 'unsafe-inline'.
        assert_eq!(
            directive(&policy, "script-src"),
            Some("'self' preview: 'nonce-0123abcd'")
        );
        assert_eq!(
            directive(&policy, "connect-src"),
            Some("'self' preview:"),
            "fetches reach the scheme only"
        );
        assert!(!policy.contains("unsafe-eval"), "{policy}");
        assert!(
            !policy.contains("http"),
            "no network origin anywhere: {policy}"
        );
        for closed in ["object-src", "frame-src", "base-uri", "form-action"] {
            assert_eq!(directive(&policy, closed), Some("'none'"), "{closed}");
        }
    }

    #[test]
    fn nonces_are_32_hex_digits_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_page_escapes_the_title_and_entry() {
        let html = page("a\"b.tsx", 7, "<Tom & Jerry>", "n0", &Default::default());
        assert!(
            html.contains("<title>&lt;Tom &amp; Jerry&gt;</title>"),
            "{html}"
        );
        assert!(html.contains("<meta name=\"spike-entry\" content=\"a&quot;b.tsx\">"));
        assert!(html.contains("<meta name=\"spike-generation\" content=\"7\">"));
    }

    #[test]
    fn npm_packages_and_their_subpaths_are_in_the_import_map() {
        let packages = ["@scope/pkg".to_owned(), "canvas-confetti".to_owned()].into();
        let html = page("main.tsx", 1, "t", "n0", &packages);
        let map = html
            .split("<script type=\"importmap\" nonce=\"n0\">")
            .nth(1)
            .and_then(|rest| rest.split("</script>").next())
            .unwrap_or_default();
        let map: serde_json::Value = serde_json::from_str(map).unwrap_or_default();
        assert_eq!(
            map["imports"]["canvas-confetti"],
            "/__spike/npm/canvas-confetti"
        );
        assert_eq!(
            map["imports"]["canvas-confetti/"],
            "/__spike/npm/canvas-confetti/"
        );
        assert_eq!(map["imports"]["@scope/pkg/"], "/__spike/npm/@scope/pkg/");
        assert_eq!(map["imports"]["react"], "/vendor/react.js");
    }

    #[test]
    fn scripts_for_the_host_call_the_runtime() {
        assert_eq!(
            render_script(12),
            "window.__spike && window.__spike.render(12);"
        );
        assert_eq!(
            errors_script(&[]),
            "window.__spike && window.__spike.showErrors([]);"
        );
    }
}
