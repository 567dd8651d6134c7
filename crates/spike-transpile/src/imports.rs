//! The list of modules a transpiled module imports at run time.

use serde::Serialize;
use swc_core::ecma::ast::{Module, ModuleDecl, ModuleItem};

/// Where an import specifier points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportKind {
    /// `./x`, `../x` or `/x`: a file of the same project.
    Relative,
    /// `react`, `@scope/pkg/sub`, `node:fs`-free package names: resolved through the import map.
    Bare,
    /// An absolute URL such as `https://esm.sh/react` or `data:…`.
    Url,
}

impl ImportKind {
    /// Classifies a specifier the way browsers and import maps do.
    pub fn of(specifier: &str) -> ImportKind {
        if specifier.starts_with("./") || specifier.starts_with("../") || specifier.starts_with('/')
        {
            return ImportKind::Relative;
        }
        let scheme = specifier.split_once(':').map(|(s, _)| s);
        match scheme {
            Some(s)
                if s.len() > 1
                    && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                ImportKind::Url
            }
            _ => ImportKind::Bare,
        }
    }
}

/// How the module refers to the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportStatement {
    /// `import … from "x"` or `import "x"`.
    Static,
    /// `export … from "x"`.
    Reexport,
    /// `import("x")` with a string literal.
    Dynamic,
}

/// One module the output imports at run time. Type-only imports are not listed: they are erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Import {
    /// The specifier as written, e.g. `./Button` or `react`.
    pub specifier: String,
    /// Relative, bare or URL.
    pub kind: ImportKind,
    /// Static import, re-export or dynamic `import()`.
    pub statement: ImportStatement,
}

/// The imports of an already transformed module, in source order, without duplicates: its
/// static imports and re-exports, then the `dynamic` specifiers found before the transform.
pub(crate) fn collect(module: &Module, dynamic: Vec<String>) -> Vec<Import> {
    let mut imports: Vec<Import> = Vec::new();
    let mut push = |specifier: String, statement: ImportStatement| {
        if !imports
            .iter()
            .any(|i| i.specifier == specifier && i.statement == statement)
        {
            imports.push(Import {
                kind: ImportKind::of(&specifier),
                specifier,
                statement,
            });
        }
    };
    for item in &module.body {
        if let ModuleItem::ModuleDecl(decl) = item {
            let found = match decl {
                ModuleDecl::Import(i) if !i.type_only => Some((&i.src, ImportStatement::Static)),
                ModuleDecl::ExportAll(e) if !e.type_only => {
                    Some((&e.src, ImportStatement::Reexport))
                }
                ModuleDecl::ExportNamed(e) if !e.type_only => {
                    e.src.as_ref().map(|s| (s, ImportStatement::Reexport))
                }
                _ => None,
            };
            if let Some((src, statement)) = found {
                push(src.value.to_atom_lossy().to_string(), statement);
            }
        }
    }
    for specifier in dynamic {
        push(specifier, ImportStatement::Dynamic);
    }
    imports
}

#[cfg(test)]
mod tests {
    use super::ImportKind;

    #[test]
    fn classifies_specifiers() {
        for (s, k) in [
            ("./a", ImportKind::Relative),
            ("../a/b.tsx", ImportKind::Relative),
            ("/abs.js", ImportKind::Relative),
            ("react", ImportKind::Bare),
            ("@scope/pkg/sub", ImportKind::Bare),
            ("https://esm.sh/react@19", ImportKind::Url),
            ("data:text/javascript,export default 1", ImportKind::Url),
            ("node:fs", ImportKind::Url),
            ("c:", ImportKind::Bare),
        ] {
            assert_eq!(ImportKind::of(s), k, "{s}");
        }
    }
}
