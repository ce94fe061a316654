//! Evaluating compiled selectors and expressions against one indexed trace.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};

use super::compile::*;
use super::trace::{SpanIndex, Trace, ValueRef};
use super::value::{arith, compare, Value};
use super::EvalContext;
use crate::model::ast::{Combinator, Pseudo};
use crate::model::builtins::Builtin;

/// The spans a selector selects, in start-time order: inline up to eight,
/// which is almost every selection of almost every trace, so selecting
/// allocates nothing.
pub(crate) type Selection = SmallVec<[SpanIndex; 8]>;

/// Flags per span of a trace, inline for traces of up to 64 spans.
type SpanFlags = SmallVec<[bool; 64]>;

const UNRESOLVED: u32 = u32::MAX;
const ABSENT: u32 = u32::MAX - 1;

/// What one evaluation on one trace computes once for every model: the
/// engine's interned keys mapped to this trace's keys (lazily, so a model
/// that is never evaluated costs no lookups), and the spans of the
/// selectors models share ([`CSelector::memo`]).
pub(crate) struct KeyCache {
    slots: Vec<Cell<u32>>,
    selections: std::cell::RefCell<Vec<(u32, Selection)>>,
}

impl KeyCache {
    pub fn new(len: usize) -> KeyCache {
        KeyCache {
            slots: vec![Cell::new(UNRESOLVED); len],
            selections: std::cell::RefCell::new(Vec::new()),
        }
    }
}

/// Why an expression has no value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EvalError {
    /// An attribute or variable that is not there.
    Missing(String),
    /// Operands or filter inputs that do not fit.
    Invalid(String),
}

impl EvalError {
    pub fn message(&self) -> &str {
        match self {
            EvalError::Missing(m) | EvalError::Invalid(m) => m,
        }
    }
}

/// Everything an evaluation reads.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub trace: &'a Trace,
    pub names: &'a [Arc<str>],
    pub cache: &'a KeyCache,
    pub ctx: &'a EvalContext<'a>,
    /// Outputs of the model computed so far.
    pub outputs: &'a [(Arc<str>, Value)],
    /// `tracetest.selected_spans.count` for the enclosing selector.
    pub selected: usize,
}

/// The result of one assertion on one span (or on no span).
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub passed: bool,
    pub observed: Option<String>,
    pub expected: Option<String>,
    pub message: String,
}

impl<'a> Env<'a> {
    fn key(&self, global: u32) -> Option<u32> {
        let slot = self.cache.slots.get(global as usize)?;
        let mut v = slot.get();
        if v == UNRESOLVED {
            v = self
                .names
                .get(global as usize)
                .and_then(|n| self.trace.keys.get(n))
                .unwrap_or(ABSENT);
            slot.set(v);
        }
        (v != ABSENT).then_some(v)
    }

    fn attr_name(&self, a: &CAttr) -> &str {
        self.names.get(a.key as usize).map_or("?", |n| n)
    }

    /// An attribute of a span; builtins first (spec §1), then the span's
    /// attributes, then its resource's.
    pub fn attr(&self, span: Option<SpanIndex>, a: &CAttr) -> Option<ValueRef<'a>> {
        if let Some(b) = a.builtin {
            match b {
                Builtin::SelectedSpansCount => {
                    return Some(Cow::Owned(Value::Int(self.selected as i64)))
                }
                Builtin::ResponseStatus | Builtin::ResponseBody | Builtin::ResponseHeaders => {
                    if let Some(r) = self.ctx.trigger_response {
                        return Some(Cow::Owned(r.attribute(b)));
                    }
                    // Else the synthetic trigger span may hold it.
                    return span
                        .and_then(|s| self.trace.lookup(s, self.key(a.key)))
                        .map(Cow::Borrowed);
                }
                _ => {}
            }
            let s = self.trace.spans.get(span? as usize)?;
            let v = match b {
                Builtin::Name => Cow::Borrowed(&s.name_value),
                Builtin::Kind => Cow::Borrowed(s.kind.value()),
                Builtin::Status => Cow::Borrowed(s.status.value()),
                Builtin::StatusMessage => Cow::Borrowed(&s.status_message),
                Builtin::SpanType => Cow::Borrowed(s.span_type.value()),
                Builtin::Duration => Cow::Owned(Value::Duration(self.trace.duration(span?)?)),
                Builtin::StartTime => Cow::Owned(Value::Int(s.start as i64)),
                Builtin::EndTime => Cow::Owned(Value::Int(s.end as i64)),
                Builtin::SpanId => Cow::Owned(Value::str(&s.id.to_string())),
                Builtin::ParentId => Cow::Owned(if s.parent_id.is_valid() {
                    Value::str(&s.parent_id.to_string())
                } else {
                    Value::str("")
                }),
                Builtin::TraceId => Cow::Owned(Value::str(&self.trace.trace_id().to_string())),
                Builtin::Events => Cow::Owned(self.trace.events_value(span?)),
                Builtin::SelectedSpansCount
                | Builtin::ResponseStatus
                | Builtin::ResponseBody
                | Builtin::ResponseHeaders => return None,
            };
            return Some(v);
        }
        self.trace.lookup(span?, self.key(a.key)).map(Cow::Borrowed)
    }

    /// `env:X` / `var:X`: this model's outputs, then the vars, then the env.
    fn var(&self, name: &str) -> Option<ValueRef<'a>> {
        if let Some((_, v)) = self.outputs.iter().find(|(n, _)| &**n == name) {
            return Some(Cow::Borrowed(v));
        }
        self.ctx
            .vars
            .get(name)
            .or_else(|| self.ctx.env.get(name))
            .map(|s| Cow::Owned(Value::str(s)))
    }

    pub fn eval(&self, e: &'a CExpr, span: Option<SpanIndex>) -> Result<ValueRef<'a>, EvalError> {
        match e {
            CExpr::Lit(v) => Ok(Cow::Borrowed(v)),
            CExpr::Attr(a) => self.attr(span, a).ok_or_else(|| {
                EvalError::Missing(format!("attribute {} not found", self.attr_name(a)))
            }),
            CExpr::Var(name) => self
                .var(name)
                .ok_or_else(|| EvalError::Missing(format!("variable {name} is not defined"))),
            CExpr::Interp(parts) => Ok(Cow::Owned(Value::Str(self.render(parts, span)?.into()))),
            CExpr::Binary(op, l, r) => {
                let l = self.eval(l, span)?;
                let r = self.eval(r, span)?;
                arith(*op, &l, &r)
                    .map(Cow::Owned)
                    .map_err(EvalError::Invalid)
            }
            CExpr::Pipe(input, f) => {
                let v = self.eval(input, span)?;
                apply_filter(f, &v).map(Cow::Owned)
            }
            CExpr::Array(items) => items
                .iter()
                .map(|e| self.eval(e, span).map(Cow::into_owned))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Cow::Owned(Value::Array(v))),
        }
    }

    pub fn render(&self, parts: &'a [CPart], span: Option<SpanIndex>) -> Result<String, EvalError> {
        let mut out = String::new();
        for p in parts {
            match p {
                CPart::Text(t) => out.push_str(t),
                CPart::Expr(e) => out.push_str(&self.eval(e, span)?.to_string()),
            }
        }
        Ok(out)
    }

    /// Checks an assertion on one span.
    /// Whether an assertion holds, and nothing else: the daemon's path,
    /// where almost every assertion holds and the observed and expected
    /// texts [`Env::assert`] renders would be thrown away.
    pub fn holds(&self, a: &'a CAssertion, span: Option<SpanIndex>) -> bool {
        match (self.eval(&a.left, span), self.eval(&a.right, span)) {
            (Ok(l), Ok(r)) => compare(a.op, &l, &r, a.regex.as_ref()),
            _ => false,
        }
    }

    /// An assertion's outcome with what was observed and expected, for
    /// reports.
    pub fn assert(&self, a: &'a CAssertion, span: Option<SpanIndex>) -> Outcome {
        let left = self.eval(&a.left, span);
        let right = self.eval(&a.right, span);
        // The observed value is the side that reads the trace; with
        // `"EUR" = attr:x` that is the right one.
        let (obs, exp) = if a.observed_right {
            (&right, &left)
        } else {
            (&left, &right)
        };
        let observed = obs.as_ref().ok().map(|v| v.to_string());
        let expected = exp.as_ref().ok().map(|v| v.to_string());
        let (l, r) = match (&left, &right) {
            (Ok(l), Ok(r)) => (l, r),
            (Err(e), _) | (_, Err(e)) => {
                return Outcome {
                    passed: false,
                    observed,
                    expected,
                    message: e.message().to_string(),
                }
            }
        };
        let passed = compare(a.op, l, r, a.regex.as_ref());
        let message = if passed {
            String::new()
        } else {
            let op = a.op.as_str();
            if a.observed_right {
                format!(
                    "expected {} {op} {}, observed {}",
                    quote_if_str(l),
                    a.right_text,
                    quote_if_str(r)
                )
            } else {
                format!(
                    "expected {} {op} {}, observed {}",
                    a.left_text,
                    quote_if_str(r),
                    quote_if_str(l)
                )
            }
        };
        Outcome {
            passed,
            observed,
            expected,
            message,
        }
    }

    fn filter_matches(&self, f: &'a CSpanFilter, span: SpanIndex) -> bool {
        let Some(left) = self.attr(Some(span), &f.attr) else {
            return false;
        };
        let Ok(right) = self.eval(&f.value, None) else {
            return false;
        };
        compare(f.op, &left, &right, f.regex.as_ref())
    }

    fn step_matches(&self, step: &'a CStep, span: SpanIndex) -> bool {
        step.filters.iter().all(|f| self.filter_matches(f, span))
    }

    /// The spans a selector selects, in start-time order.
    pub fn select(&self, sel: &'a CSelector) -> Selection {
        let Some(id) = sel.memo else {
            return self.select_now(sel);
        };
        // A handful of shared selectors per trace: a scan beats a map.
        if let Some((_, spans)) = self
            .cache
            .selections
            .borrow()
            .iter()
            .find(|(k, _)| *k == id)
        {
            return spans.clone();
        }
        let spans = self.select_now(sel);
        self.cache.selections.borrow_mut().push((id, spans.clone()));
        spans
    }

    fn select_now(&self, sel: &'a CSelector) -> Selection {
        let n = self.trace.spans.len();
        match sel.paths.as_slice() {
            [] => return (0..n as SpanIndex).collect(),
            // Already in start-time order, each span once.
            [one] => return self.select_path(one),
            _ => {}
        }
        let mut union: SpanFlags = smallvec![false; n];
        for p in &sel.paths {
            for i in self.select_path(p) {
                if let Some(slot) = union.get_mut(i as usize) {
                    *slot = true;
                }
            }
        }
        union
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(i, _)| i as SpanIndex)
            .collect()
    }

    fn candidates(&self, step: &'a CStep) -> Selection {
        match &step.name_eq {
            Some(name) => self
                .trace
                .spans_named(name)
                .iter()
                .copied()
                .filter(|&i| self.step_matches(step, i))
                .collect(),
            None => (0..self.trace.spans.len() as SpanIndex)
                .filter(|&i| self.step_matches(step, i))
                .collect(),
        }
    }

    fn select_path(&self, p: &'a CPath) -> Selection {
        let n = self.trace.spans.len();
        let mut current = Selection::new();
        for (k, step) in p.steps.iter().enumerate() {
            let cands = self.candidates(step);
            let mut next = if k == 0 {
                cands
            } else {
                if current.is_empty() {
                    return Selection::new();
                }
                let mut prev: SpanFlags = smallvec![false; n];
                for i in &current {
                    if let Some(s) = prev.get_mut(*i as usize) {
                        *s = true;
                    }
                }
                let is_prev = |i: SpanIndex| prev.get(i as usize).copied().unwrap_or(false);
                let parent = |i: SpanIndex| self.trace.spans.get(i as usize).and_then(|s| s.parent);
                match step.combinator {
                    Combinator::Descendant => cands
                        .into_iter()
                        .filter(|&c| {
                            let mut cur = parent(c);
                            // Cycles were cut when the trace was built; the
                            // bound only guards against a bug.
                            let mut hops = 0;
                            while let Some(p) = cur {
                                if is_prev(p) {
                                    return true;
                                }
                                hops += 1;
                                if hops > n {
                                    break;
                                }
                                cur = parent(p);
                            }
                            false
                        })
                        .collect(),
                    Combinator::Child => cands
                        .into_iter()
                        .filter(|&c| parent(c).is_some_and(is_prev))
                        .collect(),
                    Combinator::Sibling => cands
                        .into_iter()
                        .filter(|&c| {
                            let Some(p) = parent(c) else { return false };
                            self.trace.children(p).iter().any(|&s| s != c && is_prev(s))
                        })
                        .collect(),
                }
            };
            next = apply_pseudo(next, step.pseudo);
            current = next;
            if current.is_empty() {
                break;
            }
        }
        current
    }
}

fn quote_if_str(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{:?}", &**s),
        other => other.to_string(),
    }
}

/// `:first`, `:last`, `:nth_child(n)` among the matched spans, which are in
/// start-time order.
fn apply_pseudo(spans: Selection, pseudo: Option<Pseudo>) -> Selection {
    match pseudo {
        None => spans,
        Some(Pseudo::First) => spans.first().copied().into_iter().collect(),
        Some(Pseudo::Last) => spans.last().copied().into_iter().collect(),
        Some(Pseudo::NthChild(n)) => spans
            .get(n.saturating_sub(1))
            .copied()
            .into_iter()
            .collect(),
    }
}

fn as_list(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => std::slice::from_ref(other),
    }
}

fn one_or_many(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.pop().unwrap_or(Value::Array(Vec::new()))
    } else {
        Value::Array(items)
    }
}

fn text_of(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Str(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

pub(crate) fn apply_filter(f: &CFilter, v: &Value) -> Result<Value, EvalError> {
    Ok(match f {
        CFilter::JsonPath(path) => {
            let json = match v {
                Value::Str(s) => serde_json::from_str::<serde_json::Value>(s).map_err(|e| {
                    EvalError::Invalid(format!("json_path: value is not JSON: {e}"))
                })?,
                other => other.to_json(),
            };
            one_or_many(
                path.query(&json)
                    .all()
                    .into_iter()
                    .map(Value::from_json)
                    .collect(),
            )
        }
        CFilter::Regex(re) => {
            let s = text_of(v);
            one_or_many(re.find_iter(&s).map(|m| Value::str(m.as_str())).collect())
        }
        CFilter::RegexGroup(re) => {
            let s = text_of(v);
            let mut out = Vec::new();
            for caps in re.captures_iter(&s) {
                for g in caps.iter().skip(1).flatten() {
                    out.push(Value::str(g.as_str()));
                }
            }
            one_or_many(out)
        }
        CFilter::Count => Value::Int(as_list(v).len() as i64),
        CFilter::GetIndex(idx) => {
            let list = as_list(v);
            let item = match idx {
                Index::At(i) => list.get(*i),
                Index::Last => list.last(),
            };
            item.cloned().ok_or_else(|| {
                EvalError::Invalid(format!(
                    "get_index: index out of range (length {})",
                    list.len()
                ))
            })?
        }
        CFilter::First => as_list(v)
            .first()
            .cloned()
            .ok_or_else(|| EvalError::Invalid("first: empty list".to_string()))?,
        CFilter::Last => as_list(v)
            .last()
            .cloned()
            .ok_or_else(|| EvalError::Invalid("last: empty list".to_string()))?,
        CFilter::Type => Value::str(v.type_name()),
        // Tracetest: "the size of the input array; a single value is 1".
        CFilter::Length => Value::Int(match v {
            Value::Array(a) => a.len(),
            _ => 1,
        } as i64),
    })
}
