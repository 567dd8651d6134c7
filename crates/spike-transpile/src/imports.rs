//! The list of modules a transpiled module imports at run time.

use serde::Serialize;
use swc_core::ecma::{
    ast::{CallExpr, Callee, Expr, Lit, Module, ModuleDecl, ModuleItem, Tpl},
    visit::{Visit, VisitWith},
};

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

/// Collects the imports of an already transformed module, in source order, without duplicates.
pub(crate) fn collect(module: &Module) -> Vec<Import> {
    let mut collector = Collector::default();
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
                collector.push(src.value.to_atom_lossy().to_string(), statement);
            }
        }
    }
    module.visit_with(&mut collector);
    collector.imports
}

#[derive(Default)]
struct Collector {
    imports: Vec<Import>,
}

impl Collector {
    fn push(&mut self, specifier: String, statement: ImportStatement) {
        if !self
            .imports
            .iter()
            .any(|i| i.specifier == specifier && i.statement == statement)
        {
            self.imports.push(Import {
                kind: ImportKind::of(&specifier),
                specifier,
                statement,
            });
        }
    }
}

impl Visit for Collector {
    fn visit_call_expr(&mut self, call: &CallExpr) {
        if let (Callee::Import(_), Some(arg)) = (&call.callee, call.args.first()) {
            match &*arg.expr {
                Expr::Lit(Lit::Str(s)) => self.push(
                    s.value.to_atom_lossy().to_string(),
                    ImportStatement::Dynamic,
                ),
                Expr::Tpl(Tpl { exprs, quasis, .. }) if exprs.is_empty() => {
                    if let Some(cooked) = quasis.first().and_then(|q| q.cooked.as_ref()) {
                        self.push(cooked.to_atom_lossy().to_string(), ImportStatement::Dynamic);
                    }
                }
                _ => {}
            }
        }
        call.visit_children_with(self);
    }
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
