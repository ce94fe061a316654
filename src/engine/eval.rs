//! Evaluating compiled selectors and expressions against one indexed trace.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use smallvec::{smallvec, SmallVec};

use super::compile::*;
use super::generate::{generate, Draw};
use super::trace::{SpanIndex, Trace, ValueRef};
use super::value::{arith, as_compared, compare, Value};
use super::EvalContext;
use crate::model::ast::{Combinator, Pseudo};
use crate::model::builtins::Builtin;

/// The spans a selector selects, in start-time order: inline up to eight,
/// which is almost every selection of almost every trace, so selecting
/// allocates nothing.
pub(crate) type Selection = SmallVec<[SpanIndex; 8]>;

/// Flags per span of a trace, inline for traces of up to 64 spans.
type SpanFlags = SmallVec<[bool; 64]>;

/// Evaluation ran past [`super::EvalContext::deadline`]: whatever was being
/// computed is incomplete and must not be trusted, shared or memoized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded;

/// Units of work between two readings of the clock. A unit is about one
/// span looked at (its filters, an assertion on it, a hop up its
/// ancestors), tens of nanoseconds: reading the clock (~20 ns) every 256 of
/// them costs well under 1 %, and a deadline is overrun by microseconds.
const CLOCK_STRIDE: u32 = 256;

/// A loop over spans accounts for them this many at a time: one check for
/// the handful of spans most loops see, where a check per span would be a
/// measurable part of the hot path, and still one per 256 on a huge trace.
const SPAN_CHUNK: usize = CLOCK_STRIDE as usize;

/// The time one evaluation of one trace may take, shared by the models it
/// evaluates: once the deadline has passed, every loop over spans stops at
/// its next check and every model not yet started is not started.
///
/// The clock is read only when a countdown of units of work runs out, so a
/// check is a decrement and a branch; without a deadline the countdown
/// only restarts when it runs out, and the clock is never read.
pub(crate) struct Budget {
    deadline: Option<Instant>,
    /// Units of work left before the clock is read again.
    left: Cell<u32>,
    /// Sticky: once past the deadline, every later check fails without
    /// reading the clock.
    exceeded: Cell<bool>,
}

impl Budget {
    pub fn new(deadline: Option<Instant>) -> Budget {
        Budget {
            deadline,
            // With a deadline the first check reads the clock: a trace that
            // waited past its deadline in a queue must not start at all.
            left: Cell::new(if deadline.is_some() { 0 } else { u32::MAX }),
            exceeded: Cell::new(false),
        }
    }

    /// Accounts for `units` units of work; `Err` once past the deadline.
    #[inline]
    pub fn spend(&self, units: u32) -> Result<(), Exceeded> {
        let left = self.left.get();
        if left > units {
            self.left.set(left - units);
            Ok(())
        } else {
            self.check_clock()
        }
    }

    #[cold]
    #[inline(never)]
    fn check_clock(&self) -> Result<(), Exceeded> {
        let Some(deadline) = self.deadline else {
            self.left.set(u32::MAX);
            return Ok(());
        };
        if self.exceeded.get() || Instant::now() >= deadline {
            self.exceeded.set(true);
            self.left.set(0);
            return Err(Exceeded);
        }
        self.left.set(CLOCK_STRIDE);
        Ok(())
    }

    /// Whether some check found the deadline passed: then anything computed
    /// since may rest on a selection or a loop that was cut short.
    pub fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
}

/// What [`Env::below_prev`] knows of a span: whether one of its ancestors
/// is among the previous step's spans.
const ANCESTRY_UNKNOWN: u8 = 0;
/// On the path being walked up from a candidate, answer not known yet.
const ANCESTRY_WALKING: u8 = 1;
const ANCESTRY_NO: u8 = 2;
const ANCESTRY_YES: u8 = 3;

const UNRESOLVED: u32 = u32::MAX;
const ABSENT: u32 = u32::MAX - 1;

/// What one evaluation on one trace computes once for every model: the
/// engine's interned keys mapped to this trace's keys (lazily, so a model
/// that is never evaluated costs no lookups), and the spans of the
/// selectors models share ([`CSelector::memo`]). It also holds the
/// evaluation's [`Budget`], which its models share the same way.
pub(crate) struct KeyCache {
    slots: Vec<Cell<u32>>,
    selections: std::cell::RefCell<Vec<(u32, Selection)>>,
    pub budget: Budget,
    /// Generator function calls made so far in this evaluation.
    calls: Cell<u64>,
}

impl KeyCache {
    /// Without a deadline: for the test runner and alert summaries, which
    /// have no inconclusive outcome to give and so must always finish.
    pub fn new(len: usize) -> KeyCache {
        KeyCache::with_deadline(len, None)
    }

    pub fn with_deadline(len: usize, deadline: Option<Instant>) -> KeyCache {
        KeyCache {
            slots: vec![Cell::new(UNRESOLVED); len],
            selections: std::cell::RefCell::new(Vec::new()),
            budget: Budget::new(deadline),
            calls: Cell::new(0),
        }
    }

    /// A deadline that passes after `units` units of work: what happens
    /// when it passes mid-evaluation, testable without racing a clock.
    #[cfg(test)]
    pub fn expiring_after(len: usize, units: u32) -> KeyCache {
        let cache = KeyCache::with_deadline(len, Some(Instant::now()));
        cache.budget.left.set(units);
        cache
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
                Builtin::SpanEvents => Cow::Owned(self.trace.span_events_text(span?)),
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
            CExpr::Array(items) => self
                .eval_all(items, span)
                .map(|v| Cow::Owned(Value::Array(v))),
            CExpr::Call(function, args) => {
                let args = self.eval_all(args, span)?;
                let call = self.cache.calls.get();
                self.cache.calls.set(call.wrapping_add(1));
                let draw = Draw {
                    now_unix_nanos: self.ctx.now_unix_nanos,
                    seed: self.ctx.seed,
                    call,
                };
                generate(*function, &args, draw)
                    .map(Cow::Owned)
                    .map_err(EvalError::Invalid)
            }
        }
    }

    fn eval_all(
        &self,
        items: &'a [CExpr],
        span: Option<SpanIndex>,
    ) -> Result<Vec<Value>, EvalError> {
        items
            .iter()
            .map(|e| self.eval(e, span).map(Cow::into_owned))
            .collect()
    }

    pub fn render(&self, parts: &'a [CPart], span: Option<SpanIndex>) -> Result<String, EvalError> {
        let mut out = String::new();
        for p in parts {
            match p {
                CPart::Text(t) => out.push_str(t),
                // A duration is written as whole nanoseconds, as
                // Tracetest's executor writes its value (`${1ms + 1ns}`
                // is `1000001`).
                CPart::Expr(e) => match self.eval(e, span)?.as_ref() {
                    Value::Duration(d) => out.push_str(&d.as_nanos().to_string()),
                    v => out.push_str(&v.to_string()),
                },
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
        let shown = |v: &Value, other: &Result<Cow<'_, Value>, EvalError>| match other {
            Ok(o) => as_compared(a.op, v, o).to_string(),
            Err(_) => v.to_string(),
        };
        let observed = obs.as_ref().ok().map(|v| shown(v, exp));
        let expected = exp.as_ref().ok().map(|v| shown(v, obs));
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
            let (l, r) = (as_compared(a.op, l, r), as_compared(a.op, r, l));
            if a.observed_right {
                format!(
                    "expected {} {op} {}, observed {}",
                    quote_if_str(&l),
                    a.right_text,
                    quote_if_str(&r)
                )
            } else {
                format!(
                    "expected {} {op} {}, observed {}",
                    a.left_text,
                    quote_if_str(&r),
                    quote_if_str(&l)
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

    /// Accounts for one unit of work (see [`Budget`]).
    #[inline]
    pub fn tick(&self) -> Result<(), Exceeded> {
        self.cache.budget.spend(1)
    }

    /// In a loop over `len` spans, accounts for the chunk starting at span
    /// `at`, when it starts one (see [`SPAN_CHUNK`]): call it for every span.
    #[inline]
    pub fn tick_span(&self, at: usize, len: usize) -> Result<(), Exceeded> {
        if at % SPAN_CHUNK != 0 {
            return Ok(());
        }
        self.cache.budget.spend((len - at).min(SPAN_CHUNK) as u32)
    }

    /// Accounts for a pass over every span whose work per span (setting a
    /// flag, a counter) is too small to check each time: paid up front.
    #[inline]
    fn spend_per_span(&self) -> Result<(), Exceeded> {
        let n = u32::try_from(self.trace.spans.len()).unwrap_or(u32::MAX);
        self.cache.budget.spend(n)
    }

    /// Whether the deadline has passed (see [`Budget::exceeded`]).
    #[inline]
    pub fn out_of_budget(&self) -> bool {
        self.cache.budget.exceeded()
    }

    /// The spans a selector selects, in start-time order.
    ///
    /// A selection the deadline cut short is empty, never partial, so a
    /// caller needs to ask [`Env::out_of_budget`] only when it gets no span:
    /// a `Result` here would cost every selection a copy of its spans, on
    /// the hot path, to tell apart a case that is almost never there.
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
        // Only a complete selection is shared.
        if !(spans.is_empty() && self.out_of_budget()) {
            self.cache.selections.borrow_mut().push((id, spans.clone()));
        }
        spans
    }

    fn select_now(&self, sel: &'a CSelector) -> Selection {
        let n = self.trace.spans.len();
        match sel.paths.as_slice() {
            [] => {
                if self.spend_per_span().is_err() {
                    return Selection::new();
                }
                return (0..n as SpanIndex).collect();
            }
            // Already in start-time order, each span once.
            [one] => return self.select_path(one),
            _ => {}
        }
        if self.spend_per_span().is_err() {
            return Selection::new();
        }
        let mut union: SpanFlags = smallvec![false; n];
        for p in &sel.paths {
            for i in self.select_path(p) {
                if let Some(slot) = union.get_mut(i as usize) {
                    *slot = true;
                }
            }
        }
        // A path cut short selected nothing; the others are not enough.
        if self.out_of_budget() {
            return Selection::new();
        }
        union
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(i, _)| i as SpanIndex)
            .collect()
    }

    /// The spans a step's filters accept; none past the deadline.
    fn candidates(&self, step: &'a CStep) -> Selection {
        match &step.name_eq {
            Some(name) => self.accepted(step, self.trace.spans_named(name).iter().copied()),
            None => self.accepted(step, 0..self.trace.spans.len() as SpanIndex),
        }
    }

    /// The spans of `spans` `step`'s filters accept; none past the deadline.
    fn accepted(
        &self,
        step: &'a CStep,
        spans: impl ExactSizeIterator<Item = SpanIndex>,
    ) -> Selection {
        let len = spans.len();
        // Almost always a handful of spans: one check, then the plain filter,
        // which a check per span would slow.
        if len <= SPAN_CHUNK {
            if self.tick_span(0, len).is_err() {
                return Selection::new();
            }
            return spans.filter(|&i| self.step_matches(step, i)).collect();
        }
        let mut out = Selection::new();
        for (k, i) in spans.enumerate() {
            if self.tick_span(k, len).is_err() {
                return Selection::new();
            }
            if self.step_matches(step, i) {
                out.push(i);
            }
        }
        out
    }

    fn parent(&self, i: SpanIndex) -> Option<SpanIndex> {
        self.trace.spans.get(i as usize).and_then(|s| s.parent)
    }

    /// The spans a path selects when a step after the first has a
    /// pseudo-class, by Tracetest's rule (`server/assertions/selectors/
    /// search.go`): that step's pseudo-class picks, for each span of the
    /// step before, among what the rest of the path selects from it, not
    /// once among them all. Worked from the last step back: `below` holds,
    /// per span of the step before the one being worked, what the path
    /// selects from it. None past the deadline.
    fn select_path_per_parent(&self, p: &'a CPath) -> Selection {
        let Some((first, rest)) = p.steps.split_first() else {
            return Selection::new();
        };
        let top = apply_pseudo(self.candidates(first), first.pseudo);
        if top.is_empty() {
            return top;
        }
        let cands: Vec<Selection> = rest.iter().map(|s| self.candidates(s)).collect();
        if self.out_of_budget() {
            return Selection::new();
        }
        let mut below: Option<Vec<Selection>> = None;
        for (k, step) in rest.iter().enumerate().rev() {
            let parents = match k.checked_sub(1) {
                None => &top,
                Some(before) => match cands.get(before) {
                    Some(c) => c,
                    None => return Selection::new(),
                },
            };
            let Some(found) = cands.get(k) else {
                return Selection::new();
            };
            let Ok(mut groups) = self.related(step.combinator, parents, found) else {
                return Selection::new();
            };
            if let Some(b) = &below {
                for &s in parents {
                    if let Some(g) = groups.get_mut(s as usize) {
                        *g = union_of(g, b);
                    }
                }
            }
            for &s in parents {
                if let Some(g) = groups.get_mut(s as usize) {
                    *g = apply_pseudo(std::mem::take(g), step.pseudo);
                }
            }
            below = Some(groups);
        }
        match &below {
            Some(b) => union_of(&top, b),
            None => top,
        }
    }

    /// For each span of `parents` (by index), the spans of `cands` that
    /// `combinator` relates to it, in start-time order.
    fn related(
        &self,
        combinator: Combinator,
        parents: &Selection,
        cands: &Selection,
    ) -> Result<Vec<Selection>, Exceeded> {
        let n = self.trace.spans.len();
        self.spend_per_span()?;
        let mut is_parent: SpanFlags = smallvec![false; n];
        for &s in parents {
            if let Some(f) = is_parent.get_mut(s as usize) {
                *f = true;
            }
        }
        let mut groups: Vec<Selection> = vec![Selection::new(); n];
        let mut add = |to: SpanIndex, c: SpanIndex| {
            if let Some(g) = groups.get_mut(to as usize) {
                g.push(c);
            }
        };
        match combinator {
            Combinator::Child => {
                for &c in cands {
                    if let Some(p) = self.parent(c).filter(|&p| is_set(&is_parent, p)) {
                        add(p, c);
                    }
                }
            }
            Combinator::Descendant => {
                for &c in cands {
                    let mut up = self.parent(c);
                    // `break_cycles` left none; the bound keeps a walk
                    // finite whatever the trace.
                    for _ in 0..n {
                        let Some(a) = up else { break };
                        self.tick()?;
                        if is_set(&is_parent, a) {
                            add(a, c);
                        }
                        up = self.parent(a);
                    }
                }
            }
            Combinator::Sibling => {
                let mut children: Vec<Selection> = vec![Selection::new(); n];
                for &s in parents {
                    if let Some(kids) = self.parent(s).and_then(|pp| children.get_mut(pp as usize))
                    {
                        kids.push(s);
                    }
                }
                for &c in cands {
                    let Some(kids) = self.parent(c).and_then(|pp| children.get(pp as usize)) else {
                        continue;
                    };
                    for &s in kids.iter().filter(|&&s| s != c) {
                        self.tick()?;
                        add(s, c);
                    }
                }
            }
        }
        Ok(groups)
    }

    /// The spans a path selects; none past the deadline (an empty step
    /// ends the path).
    fn select_path(&self, p: &'a CPath) -> Selection {
        let n = self.trace.spans.len();
        if p.steps.iter().skip(1).any(|s| s.pseudo.is_some()) {
            return self.select_path_per_parent(p);
        }
        let mut current = Selection::new();
        for (k, step) in p.steps.iter().enumerate() {
            let cands = self.candidates(step);
            let next = if k == 0 {
                cands
            } else {
                // The flags, the counts and the child filter below.
                if current.is_empty() || self.spend_per_span().is_err() {
                    return Selection::new();
                }
                let mut prev: SpanFlags = smallvec![false; n];
                for i in &current {
                    if let Some(s) = prev.get_mut(*i as usize) {
                        *s = true;
                    }
                }
                match step.combinator {
                    Combinator::Descendant => self.below_prev(cands, &prev),
                    Combinator::Child => cands
                        .into_iter()
                        .filter(|&c| self.parent(c).is_some_and(|p| is_set(&prev, p)))
                        .collect(),
                    Combinator::Sibling => self.beside_prev(cands, &prev),
                }
            };
            current = apply_pseudo(next, step.pseudo);
            if current.is_empty() {
                break;
            }
        }
        current
    }

    /// The candidates with an ancestor among the previous step's spans;
    /// none past the deadline.
    ///
    /// Walking up from each candidate to the root is quadratic on a deep
    /// trace (a 100 000-span chain under a `span[name="root"]` took 23 s).
    /// Instead the answer is remembered for every span a walk passes, and a
    /// walk stops at the first span whose answer is known, so each span is
    /// walked through at most once per step: linear in the trace whatever
    /// its depth, and a loop, not a recursion, so depth costs no stack.
    fn below_prev(&self, cands: Selection, prev: &SpanFlags) -> Selection {
        // Filled on the first walk: most steps need none.
        let mut ancestry: SmallVec<[u8; 64]> = SmallVec::new();
        let mut path: SmallVec<[SpanIndex; 32]> = SmallVec::new();
        let mut out = Selection::new();
        for c in cands {
            // Most candidates are children of a marked span (`span[a]
            // span[b]` where b is called by a): answered without a walk.
            let found = match self.parent(c) {
                None => false,
                Some(p) if is_set(prev, p) => true,
                Some(p) => {
                    if ancestry.is_empty() {
                        ancestry.resize(self.trace.spans.len(), ANCESTRY_UNKNOWN);
                    }
                    match self.has_marked_ancestor(p, prev, &mut ancestry, &mut path) {
                        Ok(found) => found,
                        Err(Exceeded) => return Selection::new(),
                    }
                }
            };
            if found {
                out.push(c);
            }
        }
        out
    }

    /// Whether `span` has an ancestor in `prev`, remembered in `ancestry`
    /// for every span walked through ([`Env::below_prev`]).
    ///
    /// Every span on one walk gets the same answer: a walk climbs to a
    /// parent only when that parent is not in `prev`, so the child has a
    /// marked ancestor exactly when the parent has one.
    fn has_marked_ancestor(
        &self,
        span: SpanIndex,
        prev: &SpanFlags,
        ancestry: &mut [u8],
        path: &mut SmallVec<[SpanIndex; 32]>,
    ) -> Result<bool, Exceeded> {
        path.clear();
        let mut cur = span;
        let found = loop {
            match ancestry.get(cur as usize).copied() {
                Some(ANCESTRY_UNKNOWN) => {}
                Some(ANCESTRY_YES) => break true,
                // `ANCESTRY_WALKING`: back on the path being walked, a
                // cycle, which `break_cycles` cut when the trace was built;
                // treated as a root, as that cut would.
                _ => break false,
            }
            self.tick()?;
            if let Some(a) = ancestry.get_mut(cur as usize) {
                *a = ANCESTRY_WALKING;
            }
            path.push(cur);
            match self.parent(cur) {
                None => break false,
                Some(p) if is_set(prev, p) => break true,
                Some(p) => cur = p,
            }
        };
        let answer = if found { ANCESTRY_YES } else { ANCESTRY_NO };
        for &i in path.iter() {
            if let Some(a) = ancestry.get_mut(i as usize) {
                *a = answer;
            }
        }
        Ok(found)
    }

    /// The candidates with a sibling among the previous step's spans.
    ///
    /// Counting the marked children of each parent once makes each
    /// candidate's question one lookup, where scanning its parent's children
    /// was quadratic in the fan-out. A candidate that is itself marked does
    /// not count as its own sibling.
    fn beside_prev(&self, cands: Selection, prev: &SpanFlags) -> Selection {
        let mut marked_children: SmallVec<[u32; 64]> = smallvec![0; self.trace.spans.len()];
        for (i, _) in prev.iter().enumerate().filter(|(_, m)| **m) {
            if let Some(count) = self
                .parent(i as SpanIndex)
                .and_then(|p| marked_children.get_mut(p as usize))
            {
                *count += 1;
            }
        }
        cands
            .into_iter()
            .filter(|&c| {
                let itself = u32::from(is_set(prev, c));
                self.parent(c)
                    .and_then(|p| marked_children.get(p as usize))
                    .is_some_and(|&count| count > itself)
            })
            .collect()
    }
}

/// The spans `below` holds for the spans of `of`, each once, in start-time
/// order.
fn union_of(of: &Selection, below: &[Selection]) -> Selection {
    let mut out: Selection = of
        .iter()
        .filter_map(|&s| below.get(s as usize))
        .flatten()
        .copied()
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn is_set(flags: &SpanFlags, i: SpanIndex) -> bool {
    flags.get(i as usize).copied().unwrap_or(false)
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
        CFilter::Type => Value::str(v.tracetest_type()),
        // Tracetest (`server/expression/filters/length.go`): the items of a
        // list, the bytes of a string. Tracetest refuses other values; here
        // a single one counts 1.
        CFilter::Length => Value::Int(match v {
            Value::Array(a) => a.len(),
            Value::Str(s) => s.len(),
            _ => 1,
        } as i64),
    })
}
