//! Qualifies references to the members a merged namespace exports from its other blocks.
//!
//! TypeScript merges every `namespace N {}` block of one scope into one namespace, and the members
//! exported by any block are in scope, unqualified, in all of them (TypeScript handbook,
//! "Declaration Merging", "Merging Namespaces"; `tsc` and esbuild emit `N.x` for such a
//! reference):
//!
//! ```ts
//! namespace A { export const x = 1 }
//! namespace A { console.log(x) } // tsc: console.log(A.x)
//! ```
//!
//! swc's TypeScript strip rewrites references only to the members exported by the same block, so
//! the `x` of the second block would be left unbound: a `ReferenceError` at run time. This pass
//! runs after swc's resolver and before the strip, and rewrites such references into member
//! expressions on the namespace object. A reference is rewritten when
//! - its name is a value (`var`/`let`/`const`, function, class, enum, instantiated namespace,
//!   `export import`) exported by another block of the same namespace, and
//! - the resolver did not bind it to a declaration inside the block (a local, a parameter, a
//!   nested function or class of the same name shadows the member, as in TypeScript).
//!
//! A call `f()` becomes `(0, N.f)()`, as in esbuild, so `this` stays `undefined` in `f` as it is
//! in the source (tsc emits `N.f()`). An assignment `x = 1` becomes `N.x = 1`, as in tsc
//! (esbuild leaves it unqualified).
//!
//! Nested namespaces merge the same way: `namespace A.B {}` blocks (and `export namespace B {}`
//! blocks inside different `namespace A {}` blocks) are the blocks of one `A.B`, and a reference
//! in one of them may name a member of another `A.B` block (`B.q`) or of another `A` block
//! (`A.x`); the innermost namespace that exports the name wins. Non-exported nested namespaces
//! merge only within one block of their parent, as in TypeScript. Members of a `declare
//! namespace` block of the same file count too; those declared in other files cannot be seen
//! (Spike transpiles one file at a time, as esbuild does).

use std::collections::{HashMap, HashSet};

use swc_core::{
    atoms::Atom,
    common::util::take::Take,
    ecma::{
        ast::{
            ArrowExpr, Callee, CatchClause, ClassDecl, ClassExpr, Decl, Expr, FnDecl, FnExpr, Id,
            Ident, IdentName, JSXElementName, JSXMemberExpr, JSXObject, MemberExpr, MemberProp,
            Module, ModuleDecl, ModuleItem, ObjectPatProp, Param, Pat, Prop, SetterProp,
            SimpleAssignTarget, Stmt, TaggedTpl, TsEnumDecl, TsImportEqualsDecl, TsModuleDecl,
            TsModuleName, TsNamespaceBody, TsNamespaceDecl, TsParamProp, TsParamPropParam,
            VarDeclarator,
        },
        utils::{find_pat_ids, DestructuringFinder, IntoIndirectCall, QueryRef, RefRewriter},
        visit::{noop_visit_mut_type, noop_visit_type, Visit, VisitMut, VisitMutWith, VisitWith},
    },
};

/// Rewrites, in every merged namespace of `module`, the references to members exported by its
/// other blocks. `module` must have been through swc's resolver.
pub(crate) fn qualify(module: &mut Module) {
    let mut groups: HashMap<Atom, Vec<Block<'_>>> = HashMap::new();
    for item in &mut module.body {
        if let Some(block) = namespace_of_item(item) {
            groups
                .entry(block.name.sym.clone())
                .or_default()
                .push(block);
        }
    }
    for blocks in groups.into_values() {
        qualify_namespace(blocks);
    }
}

/// One block of a namespace: its name as declared there (the parameter of the function swc
/// emits for the block) and its body. For `namespace A.B {}`, `A`'s block is the body `B {}`.
struct Block<'a> {
    name: Ident,
    body: &'a mut TsNamespaceBody,
}

/// The namespace an item declares, with its own name and a body (not `declare global`, not
/// `declare module "name"`, not a body-less `declare namespace N;`).
fn namespace_of_item(item: &mut ModuleItem) -> Option<Block<'_>> {
    let decl = match item {
        ModuleItem::Stmt(Stmt::Decl(Decl::TsModule(decl))) => decl,
        ModuleItem::ModuleDecl(ModuleDecl::ExportDecl(export)) => match &mut export.decl {
            Decl::TsModule(decl) => decl,
            _ => return None,
        },
        _ => return None,
    };
    namespace_block(decl)
}

fn namespace_block(decl: &mut TsModuleDecl) -> Option<Block<'_>> {
    let TsModuleDecl {
        global: false,
        id: TsModuleName::Ident(name),
        body: Some(body),
        ..
    } = decl
    else {
        return None;
    };
    Some(Block {
        name: name.clone(),
        body,
    })
}

/// Qualifies the references in `blocks`, all the blocks of one namespace; inner namespaces
/// first, so that a name their blocks export is not taken for a member of this one.
fn qualify_namespace(mut blocks: Vec<Block<'_>>) {
    let exported: Vec<HashSet<Atom>> = blocks.iter().map(|b| exported_values(b.body)).collect();
    {
        // Exported nested namespaces merge across all blocks; local ones within their block.
        let mut groups: HashMap<(Option<usize>, Atom), Vec<Block<'_>>> = HashMap::new();
        for (index, block) in blocks.iter_mut().enumerate() {
            match &mut *block.body {
                TsNamespaceBody::TsNamespaceDecl(TsNamespaceDecl { id, body, .. }) => {
                    groups
                        .entry((None, id.sym.clone()))
                        .or_default()
                        .push(Block {
                            name: id.clone(),
                            body,
                        });
                }
                TsNamespaceBody::TsModuleBlock(module_block) => {
                    for item in &mut module_block.body {
                        let exported = matches!(item, ModuleItem::ModuleDecl(_));
                        if let Some(inner) = namespace_of_item(item) {
                            let scope = (!exported).then_some(index);
                            groups
                                .entry((scope, inner.name.sym.clone()))
                                .or_default()
                                .push(inner);
                        }
                    }
                }
            }
        }
        for inner in groups.into_values() {
            qualify_namespace(inner);
        }
    }
    if blocks.len() < 2 {
        return;
    }
    for (index, block) in blocks.iter_mut().enumerate() {
        let members: HashSet<Atom> = exported
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .flat_map(|(_, names)| names.iter().cloned())
            .collect();
        if members.is_empty() {
            continue;
        }
        let mut locals = Bindings::default();
        block.body.visit_with(&mut locals);
        block.body.visit_mut_with(&mut Qualify(RefRewriter {
            query: MemberQuery {
                namespace: &block.name,
                members: &members,
                locals: &locals.0,
            },
        }));
    }
}

/// The names of the values a namespace block exports.
fn exported_values(body: &TsNamespaceBody) -> HashSet<Atom> {
    let mut names = HashSet::new();
    match body {
        TsNamespaceBody::TsNamespaceDecl(inner) => {
            if is_instantiated(&inner.body) {
                names.insert(inner.id.sym.clone());
            }
        }
        TsNamespaceBody::TsModuleBlock(block) => {
            for item in &block.body {
                match item {
                    ModuleItem::ModuleDecl(ModuleDecl::ExportDecl(export)) => match &export.decl {
                        Decl::Var(var) => names.extend(
                            find_pat_ids::<_, Id>(&var.decls)
                                .into_iter()
                                .map(|(sym, _)| sym),
                        ),
                        Decl::Fn(FnDecl { ident, .. }) | Decl::Class(ClassDecl { ident, .. }) => {
                            names.insert(ident.sym.clone());
                        }
                        Decl::TsEnum(decl) => {
                            names.insert(decl.id.sym.clone());
                        }
                        Decl::TsModule(decl) => {
                            if let TsModuleDecl {
                                id: TsModuleName::Ident(id),
                                body: Some(body),
                                ..
                            } = &**decl
                            {
                                if is_instantiated(body) {
                                    names.insert(id.sym.clone());
                                }
                            }
                        }
                        _ => {}
                    },
                    ModuleItem::ModuleDecl(ModuleDecl::TsImportEquals(import))
                        if import.is_export && !import.is_type_only =>
                    {
                        names.insert(import.id.sym.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    names
}

/// False for a namespace of types only, which has no value (TypeScript's "non-instantiated"
/// namespace): a reference to its name is not a reference to it.
fn is_instantiated(body: &TsNamespaceBody) -> bool {
    match body {
        TsNamespaceBody::TsNamespaceDecl(inner) => is_instantiated(&inner.body),
        TsNamespaceBody::TsModuleBlock(block) => block.body.iter().any(|item| {
            let decl = match item {
                ModuleItem::Stmt(Stmt::Decl(decl)) => decl,
                ModuleItem::ModuleDecl(ModuleDecl::ExportDecl(export)) => &export.decl,
                _ => return true,
            };
            match decl {
                Decl::TsInterface(_) | Decl::TsTypeAlias(_) => false,
                Decl::TsModule(decl) => decl.body.as_ref().is_some_and(is_instantiated),
                _ => true,
            }
        }),
    }
}

/// Answers [`RefRewriter`]: which references become `namespace.member`.
struct MemberQuery<'a> {
    namespace: &'a Ident,
    members: &'a HashSet<Atom>,
    locals: &'a HashSet<Id>,
}

impl MemberQuery<'_> {
    fn is_member(&self, ident: &Ident) -> bool {
        self.members.contains(&ident.sym) && !self.locals.contains(&ident.to_id())
    }
}

impl QueryRef for MemberQuery<'_> {
    fn query_ref(&self, ident: &Ident) -> Option<Box<Expr>> {
        self.is_member(ident).then(|| {
            Box::new(Expr::Member(MemberExpr {
                span: ident.span,
                obj: Box::new(Expr::Ident(self.namespace.clone())),
                prop: MemberProp::Ident(IdentName::new(ident.sym.clone(), ident.span)),
            }))
        })
    }

    fn query_lhs(&self, ident: &Ident) -> Option<Box<Expr>> {
        self.query_ref(ident)
    }

    fn query_jsx(&self, ident: &Ident) -> Option<JSXElementName> {
        self.is_member(ident).then(|| {
            JSXElementName::JSXMemberExpr(JSXMemberExpr {
                span: ident.span,
                obj: JSXObject::Ident(self.namespace.clone()),
                prop: IdentName::new(ident.sym.clone(), ident.span),
            })
        })
    }
}

/// Drives [`RefRewriter`] over a block, as its own `VisitMut` does, and also over the shorthand
/// properties of object assignment patterns (`({ x } = o)`), which that one skips.
struct Qualify<'a>(RefRewriter<MemberQuery<'a>>);

impl VisitMut for Qualify<'_> {
    noop_visit_mut_type!();

    fn visit_mut_prop(&mut self, n: &mut Prop) {
        n.visit_mut_children_with(self);
        self.0.exit_prop(n);
    }

    fn visit_mut_var_declarator(&mut self, n: &mut VarDeclarator) {
        // A declared name is a binding of the block, never a member of another block.
        if !n.name.is_ident() {
            n.name.visit_mut_with(self);
        }
        n.init.visit_mut_with(self);
    }

    fn visit_mut_pat(&mut self, n: &mut Pat) {
        n.visit_mut_children_with(self);
        self.0.exit_pat(n);
    }

    fn visit_mut_object_pat_prop(&mut self, n: &mut ObjectPatProp) {
        n.visit_mut_children_with(self);
        self.0.exit_object_pat_prop(n);
    }

    fn visit_mut_expr(&mut self, n: &mut Expr) {
        n.visit_mut_children_with(self);
        self.0.exit_expr(n);
    }

    fn visit_mut_simple_assign_target(&mut self, n: &mut SimpleAssignTarget) {
        n.visit_mut_children_with(self);
        self.0.exit_simple_assign_target(n);
    }

    fn visit_mut_callee(&mut self, n: &mut Callee) {
        let indirect =
            matches!(n, Callee::Expr(e) if e.as_ident().is_some_and(|i| self.0.query.is_member(i)));
        n.visit_mut_children_with(self);
        if indirect {
            *n = n.take().into_indirect();
        }
    }

    fn visit_mut_tagged_tpl(&mut self, n: &mut TaggedTpl) {
        let indirect = n.tag.as_ident().is_some_and(|i| self.0.query.is_member(i));
        n.visit_mut_children_with(self);
        if indirect {
            *n = n.take().into_indirect();
        }
    }

    fn visit_mut_jsx_element_name(&mut self, n: &mut JSXElementName) {
        n.visit_mut_children_with(self);
        self.0.exit_jsx_element_name(n);
    }

    fn visit_mut_jsx_object(&mut self, n: &mut JSXObject) {
        n.visit_mut_children_with(self);
        self.0.exit_jsx_object(n);
    }
}

/// Every binding declared anywhere inside a node, as the resolver marked it.
#[derive(Default)]
struct Bindings(HashSet<Id>);

impl Bindings {
    fn add_pat<T: VisitWith<DestructuringFinder<Id>>>(&mut self, pat: &T) {
        self.0.extend(find_pat_ids::<_, Id>(pat));
    }
}

impl Visit for Bindings {
    noop_visit_type!();

    fn visit_var_declarator(&mut self, n: &VarDeclarator) {
        self.add_pat(&n.name);
        n.visit_children_with(self);
    }

    fn visit_param(&mut self, n: &Param) {
        self.add_pat(&n.pat);
        n.visit_children_with(self);
    }

    fn visit_arrow_expr(&mut self, n: &ArrowExpr) {
        self.add_pat(&n.params);
        n.visit_children_with(self);
    }

    fn visit_setter_prop(&mut self, n: &SetterProp) {
        self.add_pat(&n.param);
        n.visit_children_with(self);
    }

    fn visit_catch_clause(&mut self, n: &CatchClause) {
        if let Some(param) = &n.param {
            self.add_pat(param);
        }
        n.visit_children_with(self);
    }

    fn visit_ts_param_prop(&mut self, n: &TsParamProp) {
        match &n.param {
            TsParamPropParam::Ident(binding) => {
                self.0.insert(binding.to_id());
            }
            TsParamPropParam::Assign(assign) => self.add_pat(&assign.left),
        }
        n.visit_children_with(self);
    }

    fn visit_fn_decl(&mut self, n: &FnDecl) {
        self.0.insert(n.ident.to_id());
        n.visit_children_with(self);
    }

    fn visit_fn_expr(&mut self, n: &FnExpr) {
        if let Some(ident) = &n.ident {
            self.0.insert(ident.to_id());
        }
        n.visit_children_with(self);
    }

    fn visit_class_decl(&mut self, n: &ClassDecl) {
        self.0.insert(n.ident.to_id());
        n.visit_children_with(self);
    }

    fn visit_class_expr(&mut self, n: &ClassExpr) {
        if let Some(ident) = &n.ident {
            self.0.insert(ident.to_id());
        }
        n.visit_children_with(self);
    }

    fn visit_ts_enum_decl(&mut self, n: &TsEnumDecl) {
        self.0.insert(n.id.to_id());
        n.visit_children_with(self);
    }

    fn visit_ts_module_decl(&mut self, n: &TsModuleDecl) {
        if let TsModuleName::Ident(id) = &n.id {
            self.0.insert(id.to_id());
        }
        n.visit_children_with(self);
    }

    fn visit_ts_namespace_decl(&mut self, n: &TsNamespaceDecl) {
        self.0.insert(n.id.to_id());
        n.visit_children_with(self);
    }

    fn visit_ts_import_equals_decl(&mut self, n: &TsImportEqualsDecl) {
        self.0.insert(n.id.to_id());
        n.visit_children_with(self);
    }
}
