//! Compiling models once: attribute keys interned, regexes and JSONPaths
//! built, selectors turned into matchers, and a cheap precondition derived
//! from each `match` selector for indexed dispatch.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use serde_json_path::JsonPath;

use super::value::Value;
use crate::model::ast::*;
use crate::model::builtins::Builtin;
use crate::model::check::FilterKind;
use crate::model::{Assertion, Diagnostic, Model, Selector, SourceLoc, Template};

/// Attribute names interned across everything one engine compiled, and the
/// selectors that read nothing but the trace, numbered by their canonical
/// text with how often each occurs (see [`CSelector::memo`]).
#[derive(Debug, Default)]
pub(crate) struct Keys {
    map: HashMap<Arc<str>, u32>,
    pub names: Vec<Arc<str>>,
    selectors: HashMap<String, u32>,
    /// Occurrences of each numbered selector.
    selector_uses: Vec<usize>,
}

impl Keys {
    fn selector_id(&mut self, canonical: String) -> u32 {
        let next = self.selector_uses.len() as u32;
        let id = *self.selectors.entry(canonical).or_insert(next);
        match self.selector_uses.get_mut(id as usize) {
            Some(n) => *n += 1,
            None => self.selector_uses.push(1),
        }
        id
    }

    /// Whether the selector numbered `id` occurs more than once.
    pub fn selector_shared(&self, id: u32) -> bool {
        self.selector_uses.get(id as usize).is_some_and(|n| *n > 1)
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.map.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.map.insert(name, id);
        id
    }
}

/// An attribute reference: a builtin, or an interned key.
#[derive(Debug, Clone)]
pub(crate) struct CAttr {
    pub builtin: Option<Builtin>,
    pub key: u32,
}

#[derive(Debug)]
pub(crate) enum CExpr {
    Lit(Value),
    Attr(CAttr),
    /// `env:` and `var:` read the same chain: outputs, vars, env.
    Var(Arc<str>),
    Interp(Vec<CPart>),
    Binary(ArithOp, Box<CExpr>, Box<CExpr>),
    Pipe(Box<CExpr>, CFilter),
    Array(Vec<CExpr>),
    Call(Function, Vec<CExpr>),
}

#[derive(Debug)]
pub(crate) enum CPart {
    Text(String),
    Expr(CExpr),
}

#[derive(Debug)]
pub(crate) enum CFilter {
    JsonPath(Box<JsonPath>),
    Regex(Regex),
    RegexGroup(Regex),
    Count,
    GetIndex(Index),
    First,
    Last,
    Type,
    Length,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Index {
    At(usize),
    Last,
}

#[derive(Debug)]
pub(crate) struct CAssertion {
    pub text: String,
    /// The sides as written, for messages.
    pub left_text: String,
    pub right_text: String,
    /// The right side reads the trace and the left does not.
    pub observed_right: bool,
    pub left: CExpr,
    pub op: CmpOp,
    pub right: CExpr,
    /// The compiled right side of `matches`.
    pub regex: Option<Regex>,
    /// Reads only `tracetest.selected_spans.count`, so it can be checked
    /// even when the selector selected nothing.
    pub count_only: bool,
}

#[derive(Debug)]
pub(crate) struct CSelector {
    pub text: String,
    pub paths: Vec<CPath>,
    /// Set when the selector depends on the trace alone (its filters
    /// compare with literals) and occurs in more than one place: its
    /// result is computed once per trace and shared (models often repeat
    /// `span[kind = "server"]` and the like).
    pub memo: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct CPath {
    pub steps: Vec<CStep>,
}

#[derive(Debug)]
pub(crate) struct CStep {
    pub combinator: Combinator,
    pub filters: Vec<CSpanFilter>,
    pub pseudo: Option<Pseudo>,
    /// A `name = "literal"` filter lets candidates come from the name index.
    pub name_eq: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct CSpanFilter {
    pub attr: CAttr,
    pub op: CmpOp,
    pub value: CExpr,
    pub regex: Option<Regex>,
}

#[derive(Debug)]
pub(crate) struct CSpec {
    pub label: String,
    pub selector: CSelector,
    pub assertions: Vec<CAssertion>,
}

#[derive(Debug)]
pub(crate) struct COutput {
    pub name: Arc<str>,
    pub selector: Option<CSelector>,
    pub value: CExpr,
}

#[derive(Debug)]
pub(crate) struct CNotExpect {
    pub label: String,
    pub selector: CSelector,
}

#[derive(Debug)]
pub(crate) struct CTemplate {
    pub parts: Vec<CPart>,
}

impl CModel {
    /// Whether a pass, once seen, stands whatever other spans of the trace
    /// come later, so it may be published before the trace settles. True
    /// exactly when every part of the model only asks that some span exist:
    /// `match` and every spec's selector select more as spans are added
    /// (filters compare a span's own attributes with literals, no
    /// `:first`/`:last`/`:nth_child`), and no spec has assertions (a new
    /// selected span could fail one), no `not_expect` (a new span could
    /// match it), no `when` (outputs it reads could change).
    pub fn can_pass_early(&self) -> bool {
        // One step per path: which span is whose parent can change as spans
        // come (a duplicate span ID, a cycle cut elsewhere), so a selection
        // through `>`, `~` or a descendant step is not sure to stay.
        fn grows(s: &CSelector) -> bool {
            s.paths.iter().all(|p| {
                p.steps.len() == 1
                    && p.steps.iter().all(|st| {
                        st.pseudo.is_none()
                            && st.filters.iter().all(|f| {
                                matches!(f.value, CExpr::Lit(_))
                                    && f.attr.builtin != Some(Builtin::SelectedSpansCount)
                            })
                    })
            })
        }
        self.when.is_empty()
            && self.not_expect.is_empty()
            && !self.specs.is_empty()
            && self.match_selector.as_ref().is_none_or(grows)
            && self
                .specs
                .iter()
                .all(|s| s.assertions.is_empty() && grows(&s.selector))
    }

    /// Every selector of the model.
    pub fn selectors_mut(&mut self) -> impl Iterator<Item = &mut CSelector> {
        self.match_selector
            .iter_mut()
            .chain(self.outputs.iter_mut().filter_map(|o| o.selector.as_mut()))
            .chain(self.specs.iter_mut().map(|s| &mut s.selector))
            .chain(self.not_expect.iter_mut().map(|n| &mut n.selector))
    }
}

#[derive(Debug)]
pub(crate) struct CModel {
    pub match_selector: Option<CSelector>,
    /// Span names the trace must contain for `match` to select anything:
    /// one list per alternative of the union; `None` when unknown.
    pub precondition: Option<Vec<Vec<Arc<str>>>>,
    pub outputs: Vec<COutput>,
    /// Output names each `when` condition reads.
    pub when: Vec<(CAssertion, Vec<Arc<str>>)>,
    pub specs: Vec<CSpec>,
    pub not_expect: Vec<CNotExpect>,
    pub summary: Option<CTemplate>,
}

pub(crate) struct Compiler<'k> {
    pub keys: &'k mut Keys,
    pub diags: Vec<Diagnostic>,
}

impl Compiler<'_> {
    fn attr(&mut self, name: &str) -> CAttr {
        CAttr {
            builtin: Builtin::from_name(name),
            key: self.keys.intern(name),
        }
    }

    fn err(&mut self, loc: &SourceLoc, text: &str, offset: usize, msg: String) {
        self.diags.push(loc.diagnostic(text, offset, msg));
    }

    pub fn expr(&mut self, e: &Expr, loc: &SourceLoc, text: &str) -> CExpr {
        match e {
            Expr::Lit { value, .. } => CExpr::Lit(Value::from_literal(value)),
            Expr::Attr { name, .. } => CExpr::Attr(self.attr(name)),
            Expr::Env { name, .. } | Expr::Var { name, .. } => CExpr::Var(Arc::from(name.as_str())),
            Expr::Interp { parts, .. } => CExpr::Interp(self.parts(parts, loc, text)),
            Expr::Binary {
                op, left, right, ..
            } => CExpr::Binary(
                *op,
                Box::new(self.expr(left, loc, text)),
                Box::new(self.expr(right, loc, text)),
            ),
            Expr::Pipe { input, filter, .. } => {
                let input = Box::new(self.expr(input, loc, text));
                let f = self.filter(filter, loc, text);
                CExpr::Pipe(input, f)
            }
            Expr::Array { items, .. } => {
                CExpr::Array(items.iter().map(|e| self.expr(e, loc, text)).collect())
            }
            Expr::Call { function, args, .. } => CExpr::Call(
                *function,
                args.iter().map(|e| self.expr(e, loc, text)).collect(),
            ),
        }
    }

    fn parts(&mut self, parts: &[InterpPart], loc: &SourceLoc, text: &str) -> Vec<CPart> {
        parts
            .iter()
            .map(|p| match p {
                InterpPart::Text(t) => CPart::Text(t.clone()),
                InterpPart::Expr(e) => CPart::Expr(self.expr(e, loc, text)),
            })
            .collect()
    }

    fn filter(&mut self, f: &FilterCall, loc: &SourceLoc, text: &str) -> CFilter {
        let at = f.arg_span.as_ref().map_or(f.name_span.start, |s| s.start);
        let arg_str = match &f.arg {
            Some(FilterArg::Str(s)) => Some(s.as_str()),
            _ => None,
        };
        match (FilterKind::from_name(&f.name), arg_str) {
            (Some(FilterKind::JsonPath), Some(p)) => {
                match crate::model::check::parse_json_path(p) {
                    Ok(jp) => CFilter::JsonPath(Box::new(jp)),
                    Err(e) => {
                        self.err(loc, text, at, format!("invalid JSONPath '{p}': {e}"));
                        CFilter::First
                    }
                }
            }
            (Some(k @ (FilterKind::Regex | FilterKind::RegexGroup)), Some(re)) => {
                match Regex::new(re) {
                    Ok(r) if k == FilterKind::Regex => CFilter::Regex(r),
                    Ok(r) => CFilter::RegexGroup(r),
                    Err(e) => {
                        self.err(loc, text, at, crate::model::check::regex_message(re, &e));
                        CFilter::First
                    }
                }
            }
            (Some(FilterKind::Count), _) => CFilter::Count,
            (Some(FilterKind::GetIndex), _) => match &f.arg {
                Some(FilterArg::Int(i)) if *i >= 0 => CFilter::GetIndex(Index::At(*i as usize)),
                Some(FilterArg::Str(s)) if s == "last" => CFilter::GetIndex(Index::Last),
                _ => {
                    self.err(
                        loc,
                        text,
                        at,
                        "filter 'get_index' expects an index or 'last'".to_string(),
                    );
                    CFilter::First
                }
            },
            (Some(FilterKind::First), _) => CFilter::First,
            (Some(FilterKind::Last), _) => CFilter::Last,
            (Some(FilterKind::Type), _) => CFilter::Type,
            (Some(FilterKind::Length), _) => CFilter::Length,
            (Some(_), None) => {
                self.err(
                    loc,
                    text,
                    at,
                    format!("filter '{}' expects a quoted argument", f.name),
                );
                CFilter::First
            }
            (None, _) => {
                self.err(
                    loc,
                    text,
                    f.name_span.start,
                    format!("unknown filter '{}'", f.name),
                );
                CFilter::First
            }
        }
    }

    fn regex_of(&mut self, op: CmpOp, right: &Expr, loc: &SourceLoc, text: &str) -> Option<Regex> {
        if op != CmpOp::Matches {
            return None;
        }
        match right {
            Expr::Lit {
                value: Literal::Str(re),
                span,
            } => match Regex::new(re) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.err(
                        loc,
                        text,
                        span.start,
                        crate::model::check::regex_message(re, &e),
                    );
                    None
                }
            },
            other => {
                self.err(
                    loc,
                    text,
                    other.span().start,
                    "'matches' expects a regular expression in quotes".to_string(),
                );
                None
            }
        }
    }

    pub fn assertion(&mut self, a: &Assertion) -> CAssertion {
        let mut attrs = Vec::new();
        for side in [&a.ast.left, &a.ast.right] {
            side.walk(&mut |x| {
                if let Expr::Attr { name, .. } = x {
                    attrs.push(Builtin::from_name(name));
                }
            });
        }
        let count_only = !attrs.is_empty()
            && attrs
                .iter()
                .all(|b| *b == Some(Builtin::SelectedSpansCount));
        let side_text = |e: &Expr| {
            a.text
                .get(e.span().clone())
                .unwrap_or(&a.text)
                .trim()
                .to_string()
        };
        CAssertion {
            text: a.text.clone(),
            left_text: side_text(&a.ast.left),
            right_text: side_text(&a.ast.right),
            observed_right: !reads_trace(&a.ast.left) && reads_trace(&a.ast.right),
            left: self.expr(&a.ast.left, &a.loc, &a.text),
            op: a.ast.op,
            right: self.expr(&a.ast.right, &a.loc, &a.text),
            regex: self.regex_of(a.ast.op, &a.ast.right, &a.loc, &a.text),
            count_only,
        }
    }

    pub fn selector(&mut self, s: &Selector) -> CSelector {
        let mut paths = Vec::with_capacity(s.ast.paths.len());
        for p in &s.ast.paths {
            let mut steps = Vec::with_capacity(p.steps.len());
            for st in &p.steps {
                let mut filters = Vec::with_capacity(st.filters.len());
                let mut name_eq = None;
                for f in &st.filters {
                    let attr = self.attr(&f.attr);
                    if f.op == CmpOp::Eq && attr.builtin == Some(Builtin::Name) {
                        if let Expr::Lit {
                            value: Literal::Str(n),
                            ..
                        } = &f.value
                        {
                            name_eq = Some(Arc::from(n.as_str()));
                        }
                    }
                    filters.push(CSpanFilter {
                        attr,
                        op: f.op,
                        value: self.expr(&f.value, &s.loc, &s.text),
                        regex: self.regex_of(f.op, &f.value, &s.loc, &s.text),
                    });
                }
                steps.push(CStep {
                    combinator: st.combinator,
                    filters,
                    pseudo: st.pseudo,
                    name_eq,
                });
            }
            paths.push(CPath { steps });
        }
        let pure = s
            .ast
            .paths
            .iter()
            .flat_map(|p| &p.steps)
            .flat_map(|st| &st.filters)
            .all(|f| {
                matches!(f.value, Expr::Lit { .. })
                    && Builtin::from_name(&f.attr) != Some(Builtin::SelectedSpansCount)
            });
        // Keyed by the compiled form, exact (durations in nanoseconds,
        // keys by id): the source text would tell `span[x]` from `span[ x ]`
        // and its display rounds durations.
        let memo = pure.then(|| self.keys.selector_id(format!("{paths:?}")));
        CSelector {
            text: s.text.clone(),
            paths,
            memo,
        }
    }

    pub fn template(&mut self, t: &Template) -> CTemplate {
        CTemplate {
            parts: self.parts(&t.parts, &t.loc, &t.text),
        }
    }

    pub fn model(&mut self, m: &Model) -> CModel {
        let match_selector = m.match_selector.as_ref().map(|s| self.selector(s));
        let precondition = match_selector.as_ref().and_then(precondition);
        let outputs = m
            .outputs
            .iter()
            .map(|o| COutput {
                name: Arc::from(o.name.as_str()),
                selector: o.selector.as_ref().map(|s| self.selector(s)),
                value: self.expr(&o.value.ast, &o.value.loc, &o.value.text),
            })
            .collect();
        let output_names: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
        let when = m
            .when
            .iter()
            .map(|a| {
                let mut needs: Vec<Arc<str>> = Vec::new();
                for side in [&a.ast.left, &a.ast.right] {
                    side.walk(&mut |x| {
                        if let Expr::Var { name, .. } | Expr::Env { name, .. } = x {
                            if output_names.contains(&name.as_str()) {
                                needs.push(Arc::from(name.as_str()));
                            }
                        }
                    });
                }
                (self.assertion(a), needs)
            })
            .collect();
        let specs = m
            .specs
            .iter()
            .map(|s| CSpec {
                label: s.label().to_string(),
                selector: self.selector(&s.selector),
                assertions: s.assertions.iter().map(|a| self.assertion(a)).collect(),
            })
            .collect();
        let not_expect = m
            .not_expect
            .iter()
            .map(|n| CNotExpect {
                label: n.label().to_string(),
                selector: self.selector(&n.selector),
            })
            .collect();
        let summary = m
            .alert
            .as_ref()
            .and_then(|a| a.summary.as_ref())
            .map(|t| self.template(t));
        CModel {
            match_selector,
            precondition,
            outputs,
            when,
            specs,
            not_expect,
            summary,
        }
    }
}

fn reads_trace(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| found |= matches!(x, Expr::Attr { .. }));
    found
}

/// The span names a selector cannot match without: for each alternative,
/// every `name = "..."` of every step (each step must match some span).
/// `None` when some alternative has no such name, or the selector is empty.
fn precondition(s: &CSelector) -> Option<Vec<Vec<Arc<str>>>> {
    if s.paths.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(s.paths.len());
    for p in &s.paths {
        let names: Vec<Arc<str>> = p.steps.iter().filter_map(|st| st.name_eq.clone()).collect();
        if names.is_empty() {
            return None;
        }
        out.push(names);
    }
    Some(out)
}
