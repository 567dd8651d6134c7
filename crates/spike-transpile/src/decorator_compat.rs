//! Brings the output of swc's decorator passes in line with TypeScript and esbuild: the order in
//! which decorators are applied, and the metadata of legacy class decorators.
//!
//! # Standard decorators
//!
//! TypeScript 5 and esbuild, following the proposal's specification, apply the decorators of a
//! class's elements in this order: static methods and accessors, then instance methods and
//! accessors, then static fields, then instance fields, each group in source order; the class's
//! own decorators last. swc's pass applies static fields before instance methods.
//!
//! swc lowers a decorated class to one call of its `_apply_decs_2203_r` helper, which applies the
//! element decorators in the order of its second argument, an array of `[decorator, kind, name,
//! private accessor?]` entries, and returns the initializers and private accessors it made, in
//! the same order, followed by the class's instance and static initializer runners:
//!
//! ```js
//! ({ e: [_init_a, _call_b, _initProto], c: [_C, _initClass] } =
//!     _apply_decs_2203_r(this, [[_dec, 0, "a"], [_dec1, 2, "b", function () {}]], []));
//! ```
//!
//! This pass reorders the entries and, with them, the targets of `e` they produce. The decorator
//! expressions are evaluated earlier, in source order, into temporaries (or are plain names and
//! functions), so only the order of application changes. A call of another shape is left alone.
//!
//! Not changed (a limit of the 2022-03 helper): initializers added with `addInitializer` by field
//! and accessor decorators run with those of the methods, before any field is defined; the 2023
//! editions run them right after their own field is defined.
//!
//! # Legacy decorators (`experimentalDecorators`)
//!
//! `tsc` and esbuild decorate the instance members of a class first, then its static members,
//! each in source order, then the class (decorator expressions are evaluated as each member is
//! decorated). swc's legacy pass decorates the members in source order, with one
//! `_ts_decorate([decorators], target, "name", descriptor)` call per member after the class, as
//! statements or as the parts of a sequence expression (a class expression):
//!
//! ```js
//! _ts_decorate([d("s")], C, "s", void 0);
//! _ts_decorate([d("i")], C.prototype, "i", void 0);
//! ```
//!
//! [`legacy_like_tsc`] moves, within each run of such calls on one class, the calls on
//! `C.prototype` before the calls on `C`.
//!
//! # Legacy decorator metadata (`emitDecoratorMetadata`)
//!
//! `tsc` gives a decorated class `design:paramtypes` only; swc adds `design:type` (`Function`),
//! which [`legacy_like_tsc`] removes from the class's `_ts_decorate([decorators], C)` call.
//! Still different from `tsc` (swc emits them without the type checker's help): members without
//! a type annotation get no `design:type` or `void 0` where `tsc` says `Object`, and a union
//! with `undefined` or `null` is `Object` where `tsc` names the other member's type.

use swc_core::{
    common::{Mark, SyntaxContext},
    ecma::{
        ast::{
            ArrayLit, AssignExpr, AssignTarget, AssignTargetPat, CallExpr, Callee, Expr,
            ExprOrSpread, Id, Lit, MemberExpr, MemberProp, ModuleItem, ObjectPatProp, Pat, Program,
            PropName, SeqExpr, Stmt,
        },
        visit::{noop_visit_mut_type, VisitMut, VisitMutWith},
    },
};

/// Reorders every `_apply_decs_2203_r` call of `program`; `helpers` is the mark of swc's helpers
/// (the helper is recognised by its name and mark, not by a user's function of the same name).
pub(crate) fn standard_in_proposal_order(program: &mut Program, helpers: Mark) {
    program.visit_mut_with(&mut Reorder {
        helper_ctxt: SyntaxContext::empty().apply_mark(helpers),
    });
}

/// Reorders the `_ts_decorate` member calls of `program` and drops `design:type` from class
/// decorations (see the module docs); `helpers` is the mark of swc's helpers.
pub(crate) fn legacy_like_tsc(program: &mut Program, helpers: Mark) {
    program.visit_mut_with(&mut LegacyReorder {
        helper_ctxt: SyntaxContext::empty().apply_mark(helpers),
    });
}

struct LegacyReorder {
    helper_ctxt: SyntaxContext,
}

/// Where a `_ts_decorate` call on a member puts its decorators.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Placement {
    Instance,
    Static,
}

impl LegacyReorder {
    fn is_helper(&self, callee: &Callee, name: &str) -> bool {
        matches!(callee, Callee::Expr(e) if matches!(&**e, Expr::Ident(i) if i.sym == name && i.ctxt == self.helper_ctxt))
    }

    /// True for `_ts_metadata("design:type", ...)`.
    fn is_design_type(&self, element: &Option<ExprOrSpread>) -> bool {
        let Some(ExprOrSpread { spread: None, expr }) = element else {
            return false;
        };
        let Expr::Call(call) = &**expr else {
            return false;
        };
        self.is_helper(&call.callee, "_ts_metadata")
            && matches!(call.args.first().map(|a| &*a.expr), Some(Expr::Lit(Lit::Str(s))) if s.value == *"design:type")
    }

    /// The class (its name's symbol and context) and placement of a `_ts_decorate(decorators,
    /// target, key, descriptor)` call on a member.
    fn member_call(&self, expr: &Expr) -> Option<(Id, Placement)> {
        let Expr::Call(call) = expr else { return None };
        if !self.is_helper(&call.callee, "_ts_decorate")
            || call.args.len() != 4
            || call.args.iter().any(|a| a.spread.is_some())
        {
            return None;
        }
        match &*call.args[1].expr {
            Expr::Ident(class) => Some((class.to_id(), Placement::Static)),
            Expr::Member(MemberExpr {
                obj,
                prop: MemberProp::Ident(prop),
                ..
            }) if prop.sym == "prototype" => match &**obj {
                Expr::Ident(class) => Some((class.to_id(), Placement::Instance)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Stably moves, in each run of consecutive items that `key` maps to the same class, the
/// instance placements before the static ones.
fn instance_first<T>(items: &mut Vec<T>, key: impl Fn(&T) -> Option<(Id, Placement)>) {
    let keys: Vec<_> = items.iter().map(&key).collect();
    if !keys
        .iter()
        .any(|k| matches!(k, Some((_, Placement::Static))))
    {
        return;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    let mut start = 0;
    while start < items.len() {
        let Some((class, _)) = &keys[start] else {
            start += 1;
            continue;
        };
        let end = (start..items.len())
            .find(|&i| !matches!(&keys[i], Some((c, _)) if c == class))
            .unwrap_or(items.len());
        order[start..end].sort_by_key(|&i| matches!(keys[i], Some((_, Placement::Static))));
        start = end;
    }
    let mut old: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| old[i].take()));
}

impl VisitMut for LegacyReorder {
    noop_visit_mut_type!();

    fn visit_mut_module_items(&mut self, n: &mut Vec<ModuleItem>) {
        n.visit_mut_children_with(self);
        instance_first(n, |item| match item {
            ModuleItem::Stmt(Stmt::Expr(e)) => self.member_call(&e.expr),
            _ => None,
        });
    }

    fn visit_mut_stmts(&mut self, n: &mut Vec<Stmt>) {
        n.visit_mut_children_with(self);
        instance_first(n, |stmt| match stmt {
            Stmt::Expr(e) => self.member_call(&e.expr),
            _ => None,
        });
    }

    fn visit_mut_seq_expr(&mut self, n: &mut SeqExpr) {
        n.visit_mut_children_with(self);
        instance_first(&mut n.exprs, |e| self.member_call(e));
    }

    fn visit_mut_call_expr(&mut self, n: &mut CallExpr) {
        n.visit_mut_children_with(self);
        // `_ts_decorate([decorators], C)`: the class's own decorators.
        if n.args.len() == 2 && self.is_helper(&n.callee, "_ts_decorate") {
            if let Expr::Array(decorators) = &mut *n.args[0].expr {
                decorators.elems.retain(|e| !self.is_design_type(e));
            }
        }
    }
}

struct Reorder {
    helper_ctxt: SyntaxContext,
}

impl VisitMut for Reorder {
    noop_visit_mut_type!();

    fn visit_mut_assign_expr(&mut self, n: &mut AssignExpr) {
        n.visit_mut_children_with(self);
        let Some(entries) = self.decorator_entries(&mut n.right) else {
            return;
        };
        let AssignTarget::Pat(AssignTargetPat::Object(pattern)) = &mut n.left else {
            return;
        };
        let targets = pattern.props.iter_mut().find_map(|prop| match prop {
            ObjectPatProp::KeyValue(kv) if matches!(&kv.key, PropName::Ident(k) if k.sym == "e") => {
                match &mut *kv.value {
                    Pat::Array(array) => Some(&mut array.elems),
                    _ => None,
                }
            }
            _ => None,
        });
        let mut no_targets = Vec::new();
        reorder(entries, targets.unwrap_or(&mut no_targets));
    }
}

impl Reorder {
    /// The element entries of `expr` if it is a call of the helper.
    fn decorator_entries<'a>(
        &self,
        expr: &'a mut Expr,
    ) -> Option<&'a mut Vec<Option<ExprOrSpread>>> {
        let Expr::Call(call) = expr else { return None };
        let Callee::Expr(callee) = &call.callee else {
            return None;
        };
        let Expr::Ident(callee) = &**callee else {
            return None;
        };
        if callee.sym != "_apply_decs_2203_r" || callee.ctxt != self.helper_ctxt {
            return None;
        }
        match call.args.get_mut(1) {
            Some(ExprOrSpread { spread: None, expr }) => match &mut **expr {
                Expr::Array(ArrayLit { elems, .. }) => Some(elems),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The place of an element in the order of application: static non-fields, instance
/// non-fields, static fields, instance fields.
fn group(kind: u8) -> u8 {
    let is_static = kind >= 5;
    let is_field = kind.is_multiple_of(5);
    match (is_field, is_static) {
        (false, true) => 0,
        (false, false) => 1,
        (true, true) => 2,
        (true, false) => 3,
    }
}

/// How many values the helper returns for an entry of `kind` (0 field, 1 accessor, 2 method,
/// 3 getter, 4 setter; plus 5 when static): an initializer for fields and accessors, and the
/// functions that stand for a private element's methods.
fn returned(kind: u8, private: bool) -> usize {
    let kind = kind % 5;
    let init = usize::from(kind <= 1);
    let accessors = match (private, kind) {
        (false, _) | (true, 0) => 0,
        (true, 1) => 2,
        (true, _) => 1,
    };
    init + accessors
}

/// `[decorator, kind, name]` or `[decorator, kind, name, get or method, set?]` (a private
/// element): kind and privacy.
fn entry_kind(entry: &Option<ExprOrSpread>) -> Option<(u8, bool)> {
    let Some(ExprOrSpread { spread: None, expr }) = entry else {
        return None;
    };
    let Expr::Array(ArrayLit { elems, .. }) = &**expr else {
        return None;
    };
    let kind = match elems.get(1) {
        Some(Some(ExprOrSpread { spread: None, expr })) => match &**expr {
            Expr::Lit(Lit::Num(n)) if n.value.fract() == 0.0 && (0.0..10.0).contains(&n.value) => {
                n.value as u8
            }
            _ => return None,
        },
        _ => return None,
    };
    // The helper takes an entry with more than a name for a private element.
    match elems.len() {
        3 => Some((kind, false)),
        4 | 5 => Some((kind, true)),
        _ => None,
    }
}

/// Sorts `entries` into the proposal's order and moves each one's slice of `targets` with it.
/// Leaves both alone unless every entry and the number of targets are what the helper expects.
fn reorder(entries: &mut Vec<Option<ExprOrSpread>>, targets: &mut Vec<Option<Pat>>) {
    let Some(kinds) = entries.iter().map(entry_kind).collect::<Option<Vec<_>>>() else {
        return;
    };
    let counts: Vec<usize> = kinds.iter().map(|&(k, p)| returned(k, p)).collect();
    let produced: usize = counts.iter().sum();
    // After the entries' values come the instance and static initializer runners (0 to 2).
    if produced > targets.len() || targets.len() - produced > 2 {
        return;
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| group(kinds[i].0));
    if order.iter().enumerate().all(|(at, &i)| at == i) {
        return;
    }
    let mut slices = Vec::with_capacity(entries.len());
    let mut rest = std::mem::take(targets);
    let runners = rest.split_off(produced);
    let mut rest = rest.into_iter();
    for &count in &counts {
        slices.push(rest.by_ref().take(count).collect::<Vec<_>>());
    }
    let mut old: Vec<Option<Option<ExprOrSpread>>> = entries.drain(..).map(Some).collect();
    for &i in &order {
        entries.extend(old[i].take());
        targets.append(&mut slices[i]);
    }
    targets.extend(runners);
}

#[cfg(test)]
mod tests {
    use super::{group, returned};

    #[test]
    fn groups_follow_the_proposal() {
        // static method, instance accessor, static field, instance field
        assert_eq!([7, 1, 5, 0].map(group), [0, 1, 2, 3]);
    }

    #[test]
    fn returned_values_match_the_helper() {
        assert_eq!(returned(0, false), 1);
        assert_eq!(returned(2, false), 0);
        assert_eq!(returned(6, true), 3);
        assert_eq!(returned(8, true), 1);
        assert_eq!(returned(5, true), 1);
    }
}
