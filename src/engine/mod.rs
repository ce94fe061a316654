//! The evaluation engine: compiles models once and gives every completed
//! trace a verdict per model (spec §4), with the failing spans and values.
//! Pure: no I/O, no logging, no metrics; callers report what it returns.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod compile;
mod eval;
mod generate;
mod testrun;
mod trace;
mod value;
mod verdict;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::ids::SpanId;
use crate::model::builtins::Builtin;
use crate::model::{Diagnostic, Model};

pub use testrun::{
    render_template, run_test, AssertionResult, CompiledTest, SpanAssertionResult, SpecResult,
    TestResult,
};
pub use trace::{
    any_to_value, KeySet, SpanIndex, SpanInfo, SpanKind, SpanType, StatusCode, Trace, TraceBuilder,
    TRIGGER_SPAN_NAME,
};
pub use value::Value;

use compile::{CModel, Compiler, Keys};
use eval::{Env, KeyCache};
use trace::FastMap;

/// Why a model is skipped when its `match` selects no span, and the
/// verdict of every model [`Engine::evaluate_woken`] leaves out.
pub const SKIP_NO_MATCH: &str = verdict::NO_MATCH;

/// The outcome of one model on one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    /// The trace was cut short, so neither pass nor fail can be trusted;
    /// [`ModelVerdict::inconclusive`] says why. Never alerted as a failure.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Why a verdict is [`Verdict::Inconclusive`]: what cut the trace short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// The daemon stopped before the trace settled.
    Shutdown,
    /// Completed early to make room at the buffer's bounds.
    Evicted,
    /// Spans were left out at `max_spans_per_trace`/`max_bytes_per_trace`.
    Bounds,
    /// Evaluation took longer than `models.evaluation_budget`.
    Budget,
    /// A span of the trace could not be read.
    Unreadable,
    /// The trace began before this daemon started: part of it may have gone
    /// to the instance before it (a restart, a rolling update).
    Restart,
    /// An instance of the scale-out tier joined or left while the trace was
    /// in flight, and this is the part of it routed here (`tier`).
    TierChange,
    /// Completed at `max_trace_age` while spans still came: it never
    /// settled, so a missing span may still come.
    MaxAge,
    /// Root-less spans that all ended longer than `late_span_window` ago:
    /// the rest of a trace settled long since, whose ID was forgotten.
    Late,
}

impl Inconclusive {
    pub fn as_str(self) -> &'static str {
        match self {
            Inconclusive::Shutdown => "shutdown",
            Inconclusive::Evicted => "evicted",
            Inconclusive::Bounds => "bounds",
            Inconclusive::Budget => "budget",
            Inconclusive::Unreadable => "unreadable",
            Inconclusive::Restart => "restart",
            Inconclusive::TierChange => "tier_change",
            Inconclusive::MaxAge => "max_age",
            Inconclusive::Late => "late",
        }
    }
}

impl std::fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A spec's selector selected no span.
    NoSpan,
    /// An assertion did not hold on a selected span.
    Assertion,
    /// A `not_expect` selector selected a span.
    NotExpect,
}

/// One failed check, with the span and values involved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The spec's (or not_expect entry's) name, else its selector text.
    pub spec: String,
    pub kind: FailureKind,
    /// The assertion as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    pub message: String,
}

/// The verdict of the model at index `model` on one trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVerdict {
    /// Index of the model in the engine (`Engine::models`).
    pub model: usize,
    pub verdict: Verdict,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<Cow<'static, str>>,
    /// The verdict is `fail` only because some spec selected no span: late
    /// spans may still turn it into a pass (the model's `within`).
    pub awaiting_spans: bool,
    /// Set exactly when the verdict is [`Verdict::Inconclusive`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<Inconclusive>,
}

impl ModelVerdict {
    /// `inconclusive` for `reason`, with nothing seen: the model was not
    /// run, or what it would have seen is missing.
    pub fn inconclusive(model: usize, reason: Inconclusive) -> Self {
        Self {
            model,
            verdict: Verdict::Inconclusive,
            failures: Vec::new(),
            skip_reason: None,
            awaiting_spans: false,
            inconclusive: Some(reason),
        }
    }

    /// This verdict made inconclusive for `reason`, unless it is a skip (a
    /// model that does not apply stays so) or a pass that no span could
    /// have changed (`final_pass`). Its failures are kept: they say what
    /// was seen of the trace before it was cut short.
    pub fn cut_short(mut self, reason: Inconclusive, final_pass: bool) -> Self {
        match self.verdict {
            Verdict::Skip | Verdict::Inconclusive => {}
            Verdict::Pass if final_pass => {}
            Verdict::Pass | Verdict::Fail => {
                self.verdict = Verdict::Inconclusive;
                self.inconclusive = Some(reason);
                self.awaiting_spans = false;
            }
        }
        self
    }
}

/// The response the test runner got from its trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerResponse {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// How long the trigger took; the synthetic `Tracetest trigger` span
    /// lasts this long (the whole trace when unknown).
    pub duration: Option<std::time::Duration>,
}

impl TriggerResponse {
    fn headers_value(&self) -> Value {
        // Tracetest's shape: a list of {key, value}, its trigger's
        // `HTTPHeader` in JSON (`agent/workers/trigger/http.go`).
        Value::Array(
            self.headers
                .iter()
                .map(|(k, v)| {
                    Value::Map(vec![
                        (Arc::from("key"), Value::str(k)),
                        (Arc::from("value"), Value::str(v)),
                    ])
                })
                .collect(),
        )
    }

    pub(crate) fn attribute(&self, b: Builtin) -> Value {
        match b {
            Builtin::ResponseStatus => Value::Int(i64::from(self.status)),
            Builtin::ResponseBody => Value::str(&self.body),
            _ => self.headers_value(),
        }
    }

    pub(crate) fn attributes(&self) -> Vec<(&'static str, Value)> {
        vec![
            (
                "tracetest.response.status",
                Value::Int(i64::from(self.status)),
            ),
            ("tracetest.response.body", Value::str(&self.body)),
            ("tracetest.response.headers", self.headers_value()),
        ]
    }
}

static EMPTY_VARS: BTreeMap<String, String> = BTreeMap::new();

/// What expressions read besides the trace.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    /// The environment / variable set (`env:X`).
    pub env: &'a BTreeMap<String, String>,
    /// Variables of the run, e.g. outputs of earlier transaction steps
    /// (`var:X`). Both `env:` and `var:` read this model's outputs first,
    /// then `vars`, then `env`.
    pub vars: &'a BTreeMap<String, String>,
    /// When set, `attr:tracetest.response.*` read it and a synthetic
    /// `Tracetest trigger` span is added to the trace.
    pub trigger_response: Option<&'a TriggerResponse>,
    /// When evaluation must stop (`models.evaluation_budget`): a model
    /// still running then, and every model after it, gives
    /// [`Verdict::Inconclusive`] ([`Inconclusive::Budget`]).
    pub deadline: Option<std::time::Instant>,
    /// The moment `date()` and `dateTime()` format, in nanoseconds since
    /// the Unix epoch: the engine reads no clock, so the caller does.
    pub now_unix_nanos: u64,
    /// Where the generator functions (`uuid()`, `firstName()`, ...) draw
    /// from; each call of one evaluation draws something else. The caller
    /// picks it at random; tests fix it.
    pub seed: u64,
}

impl Default for EvalContext<'_> {
    fn default() -> Self {
        EvalContext {
            env: &EMPTY_VARS,
            vars: &EMPTY_VARS,
            trigger_response: None,
            deadline: None,
            now_unix_nanos: 0,
            seed: 0,
        }
    }
}

/// The trace with the synthetic trigger span when a trigger response is
/// given (Tracetest shows its trigger as a span).
pub(crate) fn with_trigger<'t>(trace: &'t Trace, ctx: &EvalContext<'_>) -> Cow<'t, Trace> {
    match ctx.trigger_response {
        Some(r) if !trace.has_span_named(TRIGGER_SPAN_NAME) => {
            let mut t = trace.clone();
            t.add_trigger_span(r);
            Cow::Owned(t)
        }
        _ => Cow::Borrowed(trace),
    }
}

/// A compiled set of models.
#[derive(Debug)]
pub struct Engine {
    models: Vec<Model>,
    compiled: Vec<CModel>,
    keys: Keys,
    by_id: HashMap<String, usize>,
    /// Indexed dispatch: for each span name, the models whose `match`
    /// needs it (the first name of each alternative of their precondition).
    /// A trace wakes only the models its span names lead to; every other
    /// model with a precondition is skipped without being looked at, so
    /// idle models cost a bit in a bitmap, not a hash lookup each.
    dispatch: FastMap<Arc<str>, Vec<usize>>,
    /// Models without a precondition: every trace wakes them.
    unindexed: Vec<usize>,
    /// For each span name, the models any alternative of whose
    /// precondition names it (not only first): the models a span of that
    /// name may help apply, with spans seen before it.
    mentions: FastMap<Arc<str>, Vec<usize>>,
    /// Every attribute key the models can read.
    key_set: Arc<KeySet>,
    /// Per model: [`compile::CModel::can_pass_early`].
    early: Vec<bool>,
    /// Some model can pass early: asked per trace, so kept, not computed.
    any_early: bool,
}

impl Engine {
    /// Compiles models; rejects duplicate ids and anything the checker
    /// would have rejected (for models built without `model::load_*`).
    pub fn compile(models: Vec<Model>) -> Result<Engine, Vec<Diagnostic>> {
        let mut keys = Keys::default();
        let mut diags = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        for (i, m) in models.iter().enumerate() {
            if let Some(f) = by_id.get(&m.id).and_then(|&first| models.get(first)) {
                diags.push(Diagnostic {
                    file: m.file.clone(),
                    line: m.position.line,
                    column: m.position.column,
                    message: format!(
                        "duplicate model id '{}', first defined at {}:{}:{}",
                        m.id, f.file, f.position.line, f.position.column
                    ),
                });
            } else {
                by_id.insert(m.id.clone(), i);
            }
        }
        let mut compiled = Vec::with_capacity(models.len());
        {
            let mut c = Compiler {
                keys: &mut keys,
                diags: Vec::new(),
            };
            for m in &models {
                compiled.push(c.model(m));
            }
            diags.extend(c.diags);
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        // Sharing a selector's result only pays where it occurs twice.
        for cm in &mut compiled {
            for sel in cm.selectors_mut() {
                if sel.memo.is_some_and(|id| !keys.selector_shared(id)) {
                    sel.memo = None;
                }
            }
        }
        let mut dispatch: FastMap<Arc<str>, Vec<usize>> = FastMap::default();
        let mut mentions: FastMap<Arc<str>, Vec<usize>> = FastMap::default();
        let mut unindexed = Vec::new();
        for (i, cm) in compiled.iter().enumerate() {
            if cm.precondition.is_none() {
                unindexed.push(i);
            }
            for name in cm.precondition.iter().flatten().flatten() {
                let models = mentions.entry(Arc::clone(name)).or_default();
                if models.last() != Some(&i) {
                    models.push(i);
                }
            }
            for first in cm
                .precondition
                .iter()
                .flatten()
                .filter_map(|alt| alt.first())
            {
                let models = dispatch.entry(Arc::clone(first)).or_default();
                if models.last() != Some(&i) {
                    models.push(i);
                }
            }
        }
        let key_set = Arc::new(KeySet::new(&keys.names));
        let early: Vec<bool> = compiled.iter().map(|cm| cm.can_pass_early()).collect();
        Ok(Engine {
            any_early: early.iter().any(|&e| e),
            early,
            models,
            compiled,
            keys,
            by_id,
            dispatch,
            unindexed,
            mentions,
            key_set,
        })
    }

    /// The models, in the order verdicts refer to them.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Index of the model with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// One verdict per model, in model order.
    pub fn evaluate(&self, trace: &Trace, ctx: &EvalContext<'_>) -> Vec<ModelVerdict> {
        let mut all = Vec::with_capacity(self.compiled.len());
        for v in self.evaluate_woken(trace, ctx) {
            while all.len() < v.model {
                all.push(verdict::skip(all.len(), Cow::Borrowed(verdict::NO_MATCH)));
            }
            all.push(v);
        }
        while all.len() < self.compiled.len() {
            all.push(verdict::skip(all.len(), Cow::Borrowed(verdict::NO_MATCH)));
        }
        all
    }

    /// The verdicts of the models this trace's span names wake, in model
    /// order; every model left out is a `skip` because its `match` cannot
    /// select anything ([`SKIP_NO_MATCH`]). With many models that watch
    /// other operations, this is most of them, and leaving them out keeps
    /// the cost of a trace independent of how many models are idle.
    pub fn evaluate_woken(&self, trace: &Trace, ctx: &EvalContext<'_>) -> Vec<ModelVerdict> {
        let trace = with_trigger(trace, ctx);
        // One budget for all the models: past the deadline, the model being
        // evaluated stops and those after it do not start.
        let cache = KeyCache::with_deadline(self.keys.names.len(), ctx.deadline);
        let env = Env {
            trace: &trace,
            names: &self.keys.names,
            cache: &cache,
            ctx,
            outputs: &[],
            selected: 0,
        };
        // Not checked against the deadline: a hash lookup per distinct name
        // costs less than building the trace did, and a model a cut-short
        // wake left out would be reported as not applying, which is not
        // known. The woken models are each checked before they start.
        let mut woken: Vec<usize> = self.unindexed.clone();
        for name in trace.span_names() {
            if let Some(models) = self.dispatch.get(name) {
                woken.extend_from_slice(models);
            }
        }
        woken.sort_unstable();
        woken.dedup();
        woken
            .into_iter()
            .filter_map(|i| {
                let cm = self.compiled.get(i)?;
                Some(verdict::evaluate_model(i, cm, env))
            })
            .collect()
    }

    /// The models that spans of these names could make apply to a trace,
    /// whatever other spans it has: those without a precondition and those
    /// whose precondition names any of them. A superset of what the whole
    /// trace would wake, for when the rest of it is no longer known.
    pub fn may_wake<'a>(&self, span_names: impl Iterator<Item = &'a str>) -> Vec<usize> {
        let mut woken: Vec<usize> = self.unindexed.clone();
        for name in span_names {
            if let Some(models) = self.mentions.get(name) {
                woken.extend_from_slice(models);
            }
        }
        woken.sort_unstable();
        woken.dedup();
        woken
    }

    /// Whether a pass of this model, once seen, stands whatever spans of the
    /// trace come later (it only asks that spans exist), so it may be
    /// published before the trace settles.
    pub fn can_pass_early(&self, model: usize) -> bool {
        self.early.get(model).copied().unwrap_or(false)
    }

    /// `v` as given on a trace cut short for `reason` (if any): pass or
    /// fail become inconclusive, except a pass this model could have given
    /// early ([`ModelVerdict::cut_short`]).
    pub fn cut_short(&self, v: ModelVerdict, reason: Option<Inconclusive>) -> ModelVerdict {
        match reason {
            Some(reason) => {
                let final_pass = self.can_pass_early(v.model);
                v.cut_short(reason, final_pass)
            }
            None => v,
        }
    }

    /// Whether any model can pass early: if none, a trace's early
    /// evaluation has nothing to publish.
    pub fn has_early(&self) -> bool {
        self.any_early
    }

    /// The passes, on the spans so far, of the woken models that can pass
    /// early ([`Engine::can_pass_early`]): verdicts no later span can
    /// change. Other models are not evaluated.
    pub fn evaluate_early(&self, trace: &Trace, ctx: &EvalContext<'_>) -> Vec<ModelVerdict> {
        let mut woken = self.woken_by(trace.span_names());
        woken.retain(|&i| self.can_pass_early(i));
        woken
            .into_iter()
            .filter_map(|i| self.evaluate_model(i, trace, ctx))
            .filter(|v| v.verdict == Verdict::Pass)
            .collect()
    }

    /// The models a trace with these span names wakes, in model order.
    pub fn woken_by<'a>(&self, span_names: impl Iterator<Item = &'a str>) -> Vec<usize> {
        let mut woken: Vec<usize> = self.unindexed.clone();
        for name in span_names {
            if let Some(models) = self.dispatch.get(name) {
                woken.extend_from_slice(models);
            }
        }
        woken.sort_unstable();
        woken.dedup();
        woken
    }

    /// The attribute keys these models can read: build traces for them with
    /// [`TraceBuilder::keeping`] and nothing else need be decoded.
    pub fn key_set(&self) -> &Arc<KeySet> {
        &self.key_set
    }

    /// Whether a trace with these span names wakes any model, i.e. whether
    /// [`Engine::evaluate_woken`] would give it any verdict at all.
    pub fn wakes_any<'a>(&self, mut span_names: impl Iterator<Item = &'a str>) -> bool {
        !self.unindexed.is_empty() || span_names.any(|n| self.dispatch.contains_key(n))
    }

    /// The verdict of one model.
    pub fn evaluate_model(
        &self,
        model: usize,
        trace: &Trace,
        ctx: &EvalContext<'_>,
    ) -> Option<ModelVerdict> {
        let cm = self.compiled.get(model)?;
        let trace = with_trigger(trace, ctx);
        let cache = KeyCache::with_deadline(self.keys.names.len(), ctx.deadline);
        let env = Env {
            trace: &trace,
            names: &self.keys.names,
            cache: &cache,
            ctx,
            outputs: &[],
            selected: 0,
        };
        Some(verdict::evaluate_model(model, cm, env))
    }

    /// The model's `alert.summary` with `${attr:X}` read from the trace:
    /// from the spans `match` selected first, else from any span.
    pub fn render_summary(&self, model: usize, trace: &Trace) -> Option<String> {
        let cm = self.compiled.get(model)?;
        let template = cm.summary.as_ref()?;
        let cache = KeyCache::new(self.keys.names.len());
        let ctx = EvalContext::default();
        let env = Env {
            trace,
            names: &self.keys.names,
            cache: &cache,
            ctx: &ctx,
            outputs: &[],
            selected: 0,
        };
        Some(verdict::render_summary(cm, template, env))
    }
}
