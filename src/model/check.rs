//! The type checker: finds, before any trace, what can only be wrong
//! (unknown filters, undefined `var:`, impossible comparisons, bad regexes
//! and JSONPaths) and reports it at its position in the file.

use std::collections::HashSet;

use super::ast::*;
use super::builtins::{Builtin, Function, Ty};
use super::document::*;
use super::parse::{parse_duration, FILTER_NAMES};
use super::source::{Diagnostic, SourceLoc};

/// The filters of spec §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    JsonPath,
    Regex,
    RegexGroup,
    Count,
    GetIndex,
    First,
    Last,
    Type,
    Length,
}

impl FilterKind {
    pub fn from_name(name: &str) -> Option<FilterKind> {
        Some(match name {
            "json_path" => FilterKind::JsonPath,
            "regex" => FilterKind::Regex,
            "regex_group" => FilterKind::RegexGroup,
            "count" => FilterKind::Count,
            "get_index" => FilterKind::GetIndex,
            "first" => FilterKind::First,
            "last" => FilterKind::Last,
            "type" => FilterKind::Type,
            "length" => FilterKind::Length,
            _ => return None,
        })
    }
}

/// Which `var:` names a document may read; `None` means any (tests read
/// variables of the transaction and the variable set).
pub(crate) struct Checker<'a> {
    pub diags: &'a mut Vec<Diagnostic>,
    pub defined_vars: Option<HashSet<String>>,
}

struct At<'t> {
    text: &'t str,
    loc: &'t SourceLoc,
}

impl Checker<'_> {
    fn error(&mut self, at: &At<'_>, offset: usize, message: String) {
        self.diags.push(at.loc.diagnostic(at.text, offset, message));
    }

    pub fn model(&mut self, m: &Model, check_vars: bool) {
        let mut names = HashSet::new();
        for o in &m.outputs {
            if !names.insert(o.name.clone()) {
                self.diags.push(Diagnostic {
                    file: m.file.clone(),
                    line: o.position.line,
                    column: o.position.column,
                    message: format!("duplicate output '{}'", o.name),
                });
            }
        }
        self.defined_vars = check_vars.then_some(names);
        if let Some(s) = &m.match_selector {
            self.selector(s);
        }
        self.outputs(&m.outputs);
        for a in &m.when {
            self.assertion(a);
        }
        self.specs(&m.specs);
        for n in &m.not_expect {
            self.selector(&n.selector);
        }
        if let Some(t) = m.alert.as_ref().and_then(|a| a.summary.as_ref()) {
            self.template(t);
        }
    }

    pub fn test(&mut self, t: &Test) {
        self.defined_vars = None;
        if let Some(s) = &t.match_selector {
            self.selector(s);
        }
        if let Some(tr) = &t.trigger {
            for tpl in tr.templates() {
                self.template(tpl);
            }
        }
        self.specs(&t.specs);
        self.outputs(&t.outputs);
    }

    fn outputs(&mut self, outputs: &[Output]) {
        for o in outputs {
            if let Some(s) = &o.selector {
                self.selector(s);
            }
            let at = At {
                text: &o.value.text,
                loc: &o.value.loc,
            };
            self.expr(&o.value.ast, &at);
        }
    }

    fn specs(&mut self, specs: &[Spec]) {
        for s in specs {
            self.selector(&s.selector);
            for a in &s.assertions {
                self.assertion(a);
            }
        }
    }

    fn template(&mut self, t: &Template) {
        let at = At {
            text: &t.text,
            loc: &t.loc,
        };
        for e in t.expressions() {
            self.expr(e, &at);
        }
    }

    pub fn selector(&mut self, s: &Selector) {
        let at = At {
            text: &s.text,
            loc: &s.loc,
        };
        for p in &s.ast.paths {
            for st in &p.steps {
                for f in &st.filters {
                    self.expr(&f.value, &at);
                    let left = Expr::Attr {
                        name: f.attr.clone(),
                        span: f.attr_span.clone(),
                    };
                    self.comparison(&left, f.op, &f.value, &at);
                }
            }
        }
    }

    pub fn assertion(&mut self, a: &Assertion) {
        let at = At {
            text: &a.text,
            loc: &a.loc,
        };
        self.expr(&a.ast.left, &at);
        self.expr(&a.ast.right, &at);
        self.comparison(&a.ast.left, a.ast.op, &a.ast.right, &at);
    }

    fn comparison(&mut self, left: &Expr, op: CmpOp, right: &Expr, at: &At<'_>) {
        if op == CmpOp::Matches {
            match right {
                Expr::Lit {
                    value: Literal::Str(re),
                    span,
                } => {
                    if let Err(e) = regex::Regex::new(re) {
                        self.error(at, span.start, regex_message(re, &e));
                    }
                }
                other => self.error(
                    at,
                    other.span().start,
                    "'matches' expects a regular expression in quotes".to_string(),
                ),
            }
            return;
        }
        let (lt, rt) = (static_type(left), static_type(right));
        for (a, b, b_expr) in [(lt, rt, right), (rt, lt, left)] {
            if a != Ty::Duration {
                continue;
            }
            let bad = match b_expr {
                Expr::Lit {
                    value: Literal::Str(s),
                    ..
                } => parse_duration(s).is_none() && s.trim().parse::<f64>().is_err(),
                _ => b == Ty::Bool,
            };
            if bad {
                self.error(
                    at,
                    b_expr.span().start,
                    format!("cannot compare a duration with {b_expr}, expected a duration such as 500ms"),
                );
                return;
            }
        }
        // `attr:status = "failed"` can never hold: say so now.
        if matches!(op, CmpOp::Eq | CmpOp::Ne) {
            for (side, other) in [(left, right), (right, left)] {
                let Expr::Attr { name, .. } = side else {
                    continue;
                };
                let Some(b) = Builtin::from_name(name) else {
                    continue;
                };
                let Some(allowed) = b.allowed_values() else {
                    continue;
                };
                if let Expr::Lit {
                    value: Literal::Str(v),
                    span,
                } = other
                {
                    if !allowed.contains(&v.as_str()) {
                        self.error(
                            at,
                            span.start,
                            format!(
                                "\"{v}\" is never {} ({name}), expected one of: {}",
                                b.describe(),
                                allowed.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }

    fn expr(&mut self, e: &Expr, at: &At<'_>) {
        e.walk(&mut |x| match x {
            Expr::Var { name, span } => {
                if let Some(defined) = &self.defined_vars {
                    if !defined.contains(name) {
                        let msg = format!(
                            "var:{name} is not defined: no output of this model is named {name}"
                        );
                        self.diags.push(at.loc.diagnostic(at.text, span.start, msg));
                    }
                }
            }
            Expr::Pipe { filter, .. } => self.filter(filter, at),
            Expr::Call { function, args, .. } => self.call_args(*function, args, at),
            _ => {}
        });
    }

    /// Arguments of a type the function cannot take, when known before a
    /// trace (Tracetest refuses them when the function runs).
    fn call_args(&mut self, function: Function, args: &[Expr], at: &At<'_>) {
        for (n, (arg, (want, _))) in args.iter().zip(function.params()).enumerate() {
            let fits = match (want, static_type(arg)) {
                (_, Ty::Unknown) => true,
                (Ty::Int, Ty::Int) => true,
                (Ty::Int, Ty::Str) => matches!(
                    arg,
                    Expr::Lit { value: Literal::Str(s), .. } if s.trim().parse::<i64>().is_ok()
                ),
                (Ty::Str, got) => got == Ty::Str,
                _ => false,
            };
            if !fits {
                let wanted = match want {
                    Ty::Int => "an integer",
                    _ => "a string, such as \"DD/MM/YYYY\"",
                };
                self.error(
                    at,
                    arg.span().start,
                    format!(
                        "argument {} of {}() must be {wanted}, not {arg}",
                        n + 1,
                        function.name()
                    ),
                );
            }
        }
    }

    fn filter(&mut self, f: &FilterCall, at: &At<'_>) {
        let Some(kind) = FilterKind::from_name(&f.name) else {
            self.error(
                at,
                f.name_span.start,
                format!(
                    "unknown filter '{}', expected one of: {FILTER_NAMES}",
                    f.name
                ),
            );
            return;
        };
        let arg_at = f.arg_span.as_ref().map_or(f.name_span.end, |s| s.start);
        match (kind, &f.arg) {
            (FilterKind::JsonPath, Some(FilterArg::Str(p))) => {
                if let Err(e) = parse_json_path(p) {
                    self.error(
                        at,
                        arg_at,
                        format!("invalid JSONPath '{p}': {}", one_line(&e.to_string())),
                    );
                }
            }
            (FilterKind::Regex | FilterKind::RegexGroup, Some(FilterArg::Str(re))) => {
                if let Err(e) = regex::Regex::new(re) {
                    self.error(at, arg_at, regex_message(re, &e));
                }
            }
            (FilterKind::JsonPath | FilterKind::Regex | FilterKind::RegexGroup, _) => self.error(
                at,
                arg_at,
                format!(
                    "filter '{}' expects a quoted argument, such as {} '...'",
                    f.name, f.name
                ),
            ),
            (FilterKind::GetIndex, Some(FilterArg::Int(_))) => {}
            (FilterKind::GetIndex, Some(FilterArg::Str(s))) if s == "last" => {}
            (FilterKind::GetIndex, _) => self.error(
                at,
                arg_at,
                "filter 'get_index' expects an index (0, 1, ...) or 'last'".to_string(),
            ),
            (_, Some(_)) => {
                self.error(at, arg_at, format!("filter '{}' takes no argument", f.name))
            }
            (_, None) => {}
        }
    }
}

/// A `json_path` argument. Tracetest's documentation also writes paths
/// without the root (`.age`, `[0].name`); they are read from the root.
pub(crate) fn parse_json_path(
    p: &str,
) -> Result<serde_json_path::JsonPath, serde_json_path::ParseError> {
    match p.trim_start().chars().next() {
        Some('.' | '[') => serde_json_path::JsonPath::parse(&format!("${}", p.trim_start())),
        _ => serde_json_path::JsonPath::parse(p),
    }
}

/// The regex crate's message ends with the reason on its last line.
pub(crate) fn regex_message(re: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text.lines().last().unwrap_or("").trim();
    let reason = reason.strip_prefix("error: ").unwrap_or(reason);
    format!("invalid regular expression {re:?}: {reason}")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The type of an expression when it is known without a trace.
pub fn static_type(e: &Expr) -> Ty {
    match e {
        Expr::Lit { value, .. } => match value {
            Literal::Str(_) => Ty::Str,
            Literal::Int(_) => Ty::Int,
            Literal::Float(_) => Ty::Float,
            Literal::Bool(_) => Ty::Bool,
            Literal::Duration(_) => Ty::Duration,
        },
        Expr::Attr { name, .. } => Builtin::from_name(name).map_or(Ty::Unknown, Builtin::ty),
        Expr::Interp { .. } => Ty::Str,
        Expr::Array { .. } => Ty::Array,
        Expr::Call { function, .. } => function.ty(),
        Expr::Env { .. } | Expr::Var { .. } => Ty::Unknown,
        Expr::Binary {
            op, left, right, ..
        } => match (static_type(left), static_type(right)) {
            (Ty::Duration, Ty::Duration) if matches!(op, ArithOp::Add | ArithOp::Sub) => {
                Ty::Duration
            }
            (Ty::Duration, Ty::Int | Ty::Float) if matches!(op, ArithOp::Mul | ArithOp::Div) => {
                Ty::Duration
            }
            _ => Ty::Unknown,
        },
        Expr::Pipe { filter, .. } => match FilterKind::from_name(&filter.name) {
            Some(FilterKind::Count | FilterKind::Length) => Ty::Int,
            Some(FilterKind::Type) => Ty::Str,
            _ => Ty::Unknown,
        },
    }
}
