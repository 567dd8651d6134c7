//! Checks swc does not make on its own, run on the parsed (not yet transformed) module.
//!
//! Seen with the pinned swc: it accepts duplicate exports, and it leaves parameter decorators in
//! the output under standard decorators, which is not valid JavaScript. Both become diagnostics
//! here, with the same wording as esbuild and `tsc` where they have one.

use std::collections::HashSet;

use swc_core::{
    common::{BytePos, Span, Spanned},
    ecma::{
        ast::{
            ArrayLit, AutoAccessor, BinExpr, BinaryOp, BlockStmt, CallExpr, Callee, Class, Decl,
            Decorator, DefaultDecl, ExportSpecifier, Expr, JSXElement, JSXExprContainer,
            JSXFragment, Lit, Module, ModuleDecl, ModuleExportName, ModuleItem, NewExpr, ObjectLit,
            Param, ParenExpr, Program, Tpl, TsModuleDecl, TsModuleRef, TsParamProp, TsTypeLit,
            UsingDecl,
        },
        utils::find_pat_ids,
        visit::{Visit, VisitWith},
    },
};

/// A problem found by a check: where (a span of the parsed module) and what.
#[derive(Debug)]
pub(crate) struct Finding {
    pub span: Span,
    pub message: String,
}

/// Reports every export name that is declared more than once (ES2015 §16.2.1.1 early error).
///
/// TypeScript declarations that merge (namespaces, enums, overload signatures) and type-only
/// exports are not values and are not counted.
pub(crate) fn duplicate_exports(module: &Module) -> Vec<Finding> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut findings = Vec::new();
    let mut add = |name: String, span: Span| {
        if !seen.insert(name.clone()) {
            findings.push(Finding {
                span,
                message: format!("Multiple exports with the same name \"{name}\""),
            });
        }
    };
    for item in &module.body {
        let ModuleItem::ModuleDecl(decl) = item else {
            continue;
        };
        match decl {
            ModuleDecl::ExportDecl(e) => match &e.decl {
                Decl::Var(v) if !v.declare => {
                    for d in &v.decls {
                        for id in find_pat_ids::<_, swc_core::ecma::ast::Ident>(&d.name) {
                            add(id.sym.to_string(), id.span);
                        }
                    }
                }
                Decl::Fn(f) if !f.declare && f.function.body.is_some() => {
                    add(f.ident.sym.to_string(), f.ident.span)
                }
                Decl::Class(c) if !c.declare => add(c.ident.sym.to_string(), c.ident.span),
                _ => {}
            },
            ModuleDecl::ExportNamed(e) if !e.type_only => {
                for s in &e.specifiers {
                    match s {
                        ExportSpecifier::Named(n) if !n.is_type_only => {
                            let name = n.exported.as_ref().unwrap_or(&n.orig);
                            add(export_name(name), name.span());
                        }
                        ExportSpecifier::Namespace(n) => add(export_name(&n.name), n.name.span()),
                        ExportSpecifier::Default(d) => add("default".into(), d.exported.span),
                        _ => {}
                    }
                }
            }
            ModuleDecl::ExportDefaultDecl(d) => match &d.decl {
                DefaultDecl::Fn(f) if f.function.body.is_none() => {}
                DefaultDecl::TsInterfaceDecl(_) => {}
                _ => add("default".into(), d.span),
            },
            ModuleDecl::ExportDefaultExpr(d) => add("default".into(), d.span),
            _ => {}
        }
    }
    findings
}

fn export_name(name: &ModuleExportName) -> String {
    match name {
        ModuleExportName::Ident(i) => i.sym.to_string(),
        ModuleExportName::Str(s) => s.value.to_atom_lossy().to_string(),
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

/// Reports `import x = require("m")` and `export = x`, which have no meaning in an ES module
/// (TypeScript's TS1202 and TS1203), whether or not the import is used.
pub(crate) fn import_export_assignments(module: &Module) -> Vec<Finding> {
    module
        .body
        .iter()
        .filter_map(|item| match item {
            ModuleItem::ModuleDecl(ModuleDecl::TsImportEquals(i))
                if !i.is_type_only
                    && matches!(i.module_ref, TsModuleRef::TsExternalModuleRef(_)) =>
            {
                Some(Finding {
                    span: i.span,
                    message: "Import assignment cannot be used when targeting ECMAScript \
                              modules; use `import * as ns from \"mod\"`, `import { a } from \
                              \"mod\"` or `import d from \"mod\"` instead"
                        .into(),
                })
            }
            ModuleItem::ModuleDecl(ModuleDecl::TsExportAssignment(e)) => Some(Finding {
                span: e.span,
                message: "Export assignment cannot be used when targeting ECMAScript modules; \
                          use `export default` instead"
                    .into(),
            }),
            _ => None,
        })
        .collect()
}

/// What one traversal of the parsed module finds: the syntax that needs a transform even in plain
/// JavaScript at the newest target, parameter decorators (which only TypeScript's
/// `experimentalDecorators` defines), and dynamic `import("…")` specifiers (never type-only, so
/// they can be read before the transform).
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub jsx: bool,
    pub decorators: bool,
    pub auto_accessors: bool,
    pub using: bool,
    /// A `namespace` or `module` declaration with a body (TypeScript only).
    pub namespaces: bool,
    pub parameter_decorators: Vec<Finding>,
    pub dynamic_imports: Vec<String>,
    /// `#x in obj` brand checks: swc's lowering below ES2022 emits a helper variable out of its
    /// scope (a `ReferenceError` at run time), so older targets refuse them.
    pub private_in: Vec<Finding>,
}

impl Scan {
    pub fn of(module: &Module) -> Scan {
        let mut scan = Scan::default();
        module.visit_with(&mut scan);
        scan
    }

    /// True when the module needs a transform beyond parse and print.
    pub fn needs_transform(&self) -> bool {
        self.jsx || self.decorators || self.auto_accessors || self.using
    }

    fn parameter(&mut self, decorators: &[Decorator]) {
        if let Some(d) = decorators.first() {
            self.parameter_decorators.push(Finding {
                span: d.span,
                message: "Parameter decorators are only supported with legacy \
                          (experimentalDecorators) decorators; standard decorators cannot \
                          decorate parameters"
                    .into(),
            });
        }
    }
}

impl Visit for Scan {
    fn visit_ts_module_decl(&mut self, d: &TsModuleDecl) {
        self.namespaces |= d.body.is_some();
        d.visit_children_with(self);
    }

    fn visit_jsx_element(&mut self, e: &JSXElement) {
        self.jsx = true;
        e.visit_children_with(self);
    }
    fn visit_jsx_fragment(&mut self, e: &JSXFragment) {
        self.jsx = true;
        e.visit_children_with(self);
    }
    fn visit_decorator(&mut self, d: &Decorator) {
        self.decorators = true;
        d.visit_children_with(self);
    }
    fn visit_auto_accessor(&mut self, a: &AutoAccessor) {
        self.auto_accessors = true;
        a.visit_children_with(self);
    }
    fn visit_using_decl(&mut self, u: &UsingDecl) {
        self.using = true;
        u.visit_children_with(self);
    }
    fn visit_param(&mut self, p: &Param) {
        self.parameter(&p.decorators);
        p.visit_children_with(self);
    }
    fn visit_ts_param_prop(&mut self, p: &TsParamProp) {
        self.parameter(&p.decorators);
        p.visit_children_with(self);
    }
    fn visit_bin_expr(&mut self, e: &BinExpr) {
        if e.op == BinaryOp::In && matches!(&*e.left, Expr::PrivateName(_)) {
            self.private_in.push(Finding {
                span: e.span,
                message: "`#name in object` cannot be lowered below ES2022 yet (swc emits code \
                          that fails at run time); use --target es2022 or newer"
                    .into(),
            });
        }
        e.visit_children_with(self);
    }
    fn visit_call_expr(&mut self, call: &CallExpr) {
        if let (Callee::Import(_), Some(arg)) = (&call.callee, call.args.first()) {
            let specifier = match &*arg.expr {
                Expr::Lit(Lit::Str(s)) => Some(s.value.to_atom_lossy().to_string()),
                Expr::Tpl(Tpl { exprs, quasis, .. }) if exprs.is_empty() => quasis
                    .first()
                    .and_then(|q| q.cooked.as_ref())
                    .map(|c| c.to_atom_lossy().to_string()),
                _ => None,
            };
            self.dynamic_imports.extend(specifier);
        }
        call.visit_children_with(self);
    }
}

/// The deepest nesting of constructs that formatters indent, and where it starts.
pub(crate) fn nesting(program: &Program) -> (usize, BytePos) {
    let mut n = Nesting::default();
    program.visit_with(&mut n);
    (n.max, n.at)
}

#[derive(Default)]
struct Nesting {
    depth: usize,
    max: usize,
    at: BytePos,
}

impl Nesting {
    fn enter<N: VisitWith<Self> + Spanned>(&mut self, node: &N) {
        self.depth += 1;
        if self.depth > self.max {
            self.max = self.depth;
            self.at = node.span().lo;
        }
        node.visit_children_with(self);
        self.depth -= 1;
    }
}

impl Visit for Nesting {
    fn visit_block_stmt(&mut self, n: &BlockStmt) {
        self.enter(n)
    }
    fn visit_object_lit(&mut self, n: &ObjectLit) {
        self.enter(n)
    }
    fn visit_array_lit(&mut self, n: &ArrayLit) {
        self.enter(n)
    }
    fn visit_call_expr(&mut self, n: &CallExpr) {
        self.enter(n)
    }
    fn visit_new_expr(&mut self, n: &NewExpr) {
        self.enter(n)
    }
    fn visit_paren_expr(&mut self, n: &ParenExpr) {
        self.enter(n)
    }
    fn visit_class(&mut self, n: &Class) {
        self.enter(n)
    }
    fn visit_ts_type_lit(&mut self, n: &TsTypeLit) {
        self.enter(n)
    }
    fn visit_jsx_element(&mut self, n: &JSXElement) {
        self.enter(n)
    }
    fn visit_jsx_fragment(&mut self, n: &JSXFragment) {
        self.enter(n)
    }
    fn visit_jsx_expr_container(&mut self, n: &JSXExprContainer) {
        self.enter(n)
    }
}
