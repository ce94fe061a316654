//! The evaluation stage: every trace gets a verdict from every model in
//! force, decided as the interfaces page's "When a verdict is decided"
//! says (`docs/design.md`, "When a verdict is decided", has the worked
//! examples); verdicts are counted, stored and handed to listeners.
//!
//! - **Early**: `root_settle` after a trace's root, the assembler hands on a
//!   copy of the spans so far (while a model in force can pass early).
//!   Only the models whose pass no later span can change
//!   ([`Engine::can_pass_early`]) are evaluated on it, and only their
//!   passes are published and counted then.
//! - **Settled**: once no span of the trace has come for `settle`, every
//!   other model is evaluated and its verdict counted: `pass`, `fail`,
//!   `skip`, or `inconclusive` when the trace was cut short (shutdown,
//!   eviction, per-trace bounds, evaluation budget, an unreadable span
//!   (one the receivers refused, or, from elsewhere, one that cannot be
//!   decoded), or
//!   a trace that began before this daemon did). A model with `within`
//!   whose `fail` is only a missing span waits up to `within` more.
//! - **Late**: the settled trace is kept (its spans copied out of the
//!   request buffers, mostly by the assembler already when the trace began
//!   to wait; bounded in bytes and by `late_span_window`); spans
//!   that come later are merged into it and every model is evaluated
//!   again. A counted verdict that changes is counted in
//!   `tracecheck_verdicts_flipped_total` and published (a new failure is
//!   alerted); the verdict counters keep one verdict per trace and model.
//!
//! A model that panics is contained: counted in
//! `tracecheck_model_errors_total`, logged with the trace ID, and the other
//! models still give their verdicts. The evaluation budget is a deadline
//! ([`EvalContext::deadline`]): the model running when it passes, and every
//! model after it, is `inconclusive` (`budget`), so no trace holds up the
//! others for longer than the budget; the first such model is counted in
//! `tracecheck_model_slow_evaluations_total{model}` and logged (at most one
//! line per [`SLOW_LOG_INTERVAL`]).
//!
//! This module owns the evaluator stage, between the assembler and the
//! results: the evaluation threads ([`Evaluator`], [`EvaluatorPool`]), the
//! models in force and their reloads ([`registry`]), and the live feed of
//! verdicts ([`feed`]). What the verdicts become — the result store, the
//! alerts — is `results`; who reads them is `admin`.

pub mod config;
pub mod feed;
pub mod registry;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use self::feed::VerdictFeed;
use self::registry::{LoadedModels, ModelRegistry};
use crate::assembler::{CompletedTrace, TraceConsumer};
use crate::engine::{EvalContext, Inconclusive, ModelVerdict, Trace, TraceBuilder, Verdict};
use crate::ids::TraceId;
use crate::metrics::CompletionReason;
use crate::metrics::{
    FlipLabels, InconclusiveLabels, LateLabels, Metrics, ModelLabels, SpecLabels,
};
use crate::otlp::{RawSpan, ScopeInterner};
use crate::results::alerts::{AlertEvent, AlertSender};
use crate::results::config::LinksConfig;
use crate::results::store::{ResultStore, VerdictRecord};
use crate::results::versions::Counted;

/// The default of `models.evaluation_budget`.
pub const DEFAULT_EVALUATION_BUDGET: Duration = Duration::from_millis(100);

/// Slow evaluations are logged at most once per this interval; the counter
/// counts every one.
pub const SLOW_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Traces waiting on `within` may hold this many times the bytes kept for
/// late spans; past it a new wait is not taken and its verdict is
/// `inconclusive` (`bounds`), never a guess.
pub const WAITING_BYTES_FACTOR: usize = 4;

/// Bytes of settled traces each evaluator keeps for late spans to merge
/// into. At the daemon's full rate (~200 000 spans/s) this is about a
/// second of traffic, at ordinary rates minutes; `late_span_window` bounds
/// it in time. Spans of a trace no longer kept are counted as late
/// (`merged="false"`) and not judged.
pub const DEFAULT_KEEP_BYTES: usize = 32 << 20;

/// What completed a trace, and whether spans of it were left out at a
/// per-trace bound or refused at ingest: together they say whether its
/// verdicts are incomplete.
#[derive(Debug, Clone, Copy)]
struct Completion {
    reason: CompletionReason,
    truncated: bool,
    unreadable: bool,
}

impl Completion {
    fn of(t: &CompletedTrace) -> Self {
        Self {
            reason: t.reason,
            truncated: t.truncated,
            unreadable: t.unreadable,
        }
    }

    /// What cut the trace short, if anything: spans may be missing.
    fn cut_short(self) -> Option<Inconclusive> {
        match self.reason {
            CompletionReason::shutdown => Some(Inconclusive::Shutdown),
            CompletionReason::evicted => Some(Inconclusive::Evicted),
            // Completed at max_trace_age only while spans still came.
            CompletionReason::max_age => Some(Inconclusive::MaxAge),
            // A span of it was sent but refused at ingest, for a field no
            // decoder would read or a limit: the rest may look like a
            // failure only for lack of it.
            _ if self.unreadable => Some(Inconclusive::Unreadable),
            _ if self.truncated => Some(Inconclusive::Bounds),
            _ => None,
        }
    }

    fn incomplete(self) -> bool {
        self.cut_short().is_some()
    }
}

/// A model whose `fail` is only a missing span, waiting up to its `within`.
struct Waiting {
    model: usize,
    deadline: Instant,
    last: ModelVerdict,
}

/// Bytes counted for each settled trace kept beyond its spans' (its map
/// entry, order entry and verdicts), so that traces with few or no spans
/// (those marked at ingest) are bounded by `keep_bytes` too.
const SETTLED_OVERHEAD: usize = 256;

/// Room the kept traces' tables keep however few they hold.
const KEPT_ROOM: usize = 1024;

/// A settled trace, kept so that late spans merge into it.
/// What is kept of a settled trace once its spans are forgotten (past the
/// byte bound, or under memory pressure, before `late_span_window` ends):
/// the verdicts it was given. Spans of it that come too late to be merged
/// make every verdict they could have changed `inconclusive` (`late`)
/// instead of leaving a pass or a skip that was given without them: under
/// overload, when senders' retries split traces over many seconds, the
/// part judged first may lack exactly the span that fails the model.
struct Forgotten {
    models: Arc<LoadedModels>,
    /// As [`Settled::counted`].
    counted: Vec<(usize, Verdict)>,
    /// As [`Settled::exported`].
    exported: u64,
    at: Instant,
}

/// Bytes a [`Forgotten`] trace holds besides its verdicts: its map entry
/// (64 B) and order entry (32 B), each at up to twice that in a table or
/// queue just grown (heaptrack on the split soak: the map doubled from 16
/// to 32 MB while the entries stayed bounded), and the allocation of its
/// verdicts.
const FORGOTTEN_OVERHEAD: usize = 208;

/// Bytes of forgotten traces kept even when no bytes are kept for late
/// spans (`keep_bytes` smaller): what a trace was judged on is worth
/// remembering for its window at a fraction of the cost of its spans.
const MIN_FORGOTTEN_BYTES: usize = 1 << 20;

impl Forgotten {
    fn bytes(&self) -> usize {
        FORGOTTEN_OVERHEAD + self.counted.capacity() * std::mem::size_of::<(usize, Verdict)>()
    }
}

struct Settled {
    /// Copied out of the request buffers: keeping a trace keeps its own
    /// bytes, not the requests its spans came in.
    spans: Vec<RawSpan>,
    bytes: usize,
    models: Arc<LoadedModels>,
    /// The verdict counted for each model that was not a skip; every other
    /// model of `models` was counted as a skip.
    counted: Vec<(usize, Verdict)>,
    waiting: Vec<Waiting>,
    completion: Completion,
    /// Part of the trace may have gone to another instance: it began
    /// before this daemon started (`restart`) or a tier change split it
    /// (`tier_change`).
    began_elsewhere: Option<Inconclusive>,
    settled_at: Instant,
    /// When its last span came, for `tracecheck_verdict_delay_seconds`.
    last_seen: Instant,
    /// When its first span came and whether its root did: a verdict that
    /// waited on `within` is checked against tier changes again.
    first_seen: Instant,
    rootless: bool,
    /// No root came and its spans are not the stale remains of a trace
    /// settled long since: most likely a part whose root is still to come
    /// (the root ends last), kept in `rootless_order`.
    awaits_root: bool,
    /// The exporters fed by verdicts that have the trace (a bit each):
    /// spans that come later follow it there.
    exported: u64,
}

impl Settled {
    /// Whether it is in `rootless_order` and its bytes in `rootless_bytes`.
    fn queued_rootless(&self) -> bool {
        self.awaits_root && self.waiting.is_empty()
    }

    /// `t` as settled now, its spans holding their own bytes: copied out
    /// of their requests, unless the assembler did when the trace began to
    /// wait.
    fn new(
        t: CompletedTrace,
        scopes: &mut ScopeInterner,
        models: Arc<LoadedModels>,
        counted: Vec<(usize, Verdict)>,
        waiting: Vec<Waiting>,
        began_elsewhere: Option<Inconclusive>,
        now: Instant,
    ) -> Self {
        Settled {
            bytes: span_bytes(&t.spans) + SETTLED_OVERHEAD,
            completion: Completion::of(&t),
            spans: RawSpan::detach_rest(t.spans, t.own_spans, scopes),
            models,
            counted,
            waiting,
            began_elsewhere,
            settled_at: now,
            last_seen: t.last_seen,
            first_seen: t.first_seen,
            rootless: t.rootless,
            awaits_root: t.rootless,
            exported: 0,
        }
    }
}

/// Skips of the models a trace did not wake ([`Engine::evaluate_woken`]),
/// counted in bulk: per trace only the woken models are touched, and every
/// `CONSUMER_TICK` the others' skip counters get `traces - woken` at once.
/// At a thousand mostly idle models that is the difference between a
/// counter update per model per trace and one per woken model.
///
/// [`Engine::evaluate_woken`]: crate::engine::Engine::evaluate_woken
struct SkipBacklog {
    models: Arc<LoadedModels>,
    traces: u64,
    woken: Vec<u64>,
}

impl SkipBacklog {
    fn flush(&mut self) {
        for (c, &w) in self.models.counters.iter().zip(&self.woken) {
            c.add_skips(self.traces - w);
        }
        self.traces = 0;
        self.woken.iter_mut().for_each(|w| *w = 0);
    }
}

/// The trace verdicts are published on: its ID, the engine's view of it
/// when it could be built, and its spans (kept with failures).
#[derive(Clone, Copy)]
struct On<'a> {
    trace_id: TraceId,
    trace: Option<&'a Trace>,
    spans: &'a [RawSpan],
}

/// How a verdict is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Counted in `tracecheck_model_verdicts_total`.
    Count { waited: bool, early: bool },
    /// A counted verdict changed by late spans: published, not counted
    /// again.
    Flip { from: Verdict },
}

impl Publish {
    /// Counted when the trace settled.
    const SETTLED: Publish = Publish::Count {
        waited: false,
        early: false,
    };
    /// Counted after waiting on `within`.
    const WAITED: Publish = Publish::Count {
        waited: true,
        early: false,
    };
    /// Counted on the early copy.
    const EARLY: Publish = Publish::Count {
        waited: false,
        early: true,
    };
}

/// The daemon's evaluation: [`Evaluator`]s on `models.evaluation_threads`
/// threads, each trace evaluated by one of them.
pub type EvaluatorPool = crate::assembler::Parallel<Evaluator>;

pub struct Evaluator {
    registry: Arc<ModelRegistry>,
    store: Arc<ResultStore>,
    metrics: Arc<Metrics>,
    links: LinksConfig,
    /// Models that passed early, per trace still buffered.
    early: HashMap<TraceId, (Arc<LoadedModels>, Vec<usize>)>,
    settled: HashMap<TraceId, Settled>,
    /// The resources and scopes of the settled traces' spans, shared.
    scopes: ScopeInterner,
    /// Settled traces with a root and nothing waiting, oldest first, for
    /// forgetting them; entries of traces since forgotten, waiting again or
    /// moved to the other queue are stale.
    settled_order: VecDeque<(Instant, TraceId)>,
    /// As `settled_order`, for traces awaiting their root
    /// ([`Settled::awaits_root`]): the byte bound forgets traces with a
    /// root first, since a root-less trace's root is most likely still to
    /// come (a long-lived trace's earlier parts, or a trace split by its
    /// senders' retries) and only merged with it can it still fail; but
    /// only while they hold at most half of `keep_bytes`
    /// (`rootless_bytes`), as some never get one (orphans of an
    /// uninstrumented caller, a sidecar's view) and must not crowd out the
    /// late spans of every trace with a root.
    rootless_order: VecDeque<(Instant, TraceId)>,
    rootless_bytes: usize,
    settled_bytes: usize,
    /// `settled_bytes` charged to the process's memory account (`settled`).
    settled_charge: Option<crate::memory::Charge>,
    /// The part of `settled_bytes` held by traces waiting on `within`: not
    /// forgotten by the byte bound (their verdicts are still to come), so
    /// bounded on their own ([`WAITING_BYTES_FACTOR`]).
    waiting_bytes: usize,
    /// Settled traces with verdicts waiting on `within`.
    waiting: std::collections::HashSet<TraceId>,
    /// Settled traces forgotten before the late window ended, oldest
    /// first; bounded by [`Evaluator::forgotten_bound`], charged with
    /// `settled_bytes`.
    forgotten: HashMap<TraceId, Forgotten>,
    forgotten_order: VecDeque<(Instant, TraceId)>,
    forgotten_bytes: usize,
    keep_bytes: usize,
    late_window: Duration,
    /// `assembler.settle`: a span of a trace that settled comes as a late
    /// fragment this long after it arrived, so `within` waits this much
    /// more for it.
    settle: Duration,
    verdicts: VerdictFeed,
    alerts: Option<AlertSender>,
    /// Completed traces a test run waits for (`testrun`).
    tap: Option<Arc<crate::testrun::TraceWaiters>>,
    budget: Duration,
    /// When this evaluator started, in unix nanoseconds: a trace whose
    /// first span started before is judged as cut by a restart.
    /// `None`: no trace is taken for one begun before a restart.
    started_unix_nanos: Option<u64>,
    /// Changes of the scale-out tier announced to this instance.
    tier: Option<Arc<crate::tier::Changes>>,
    /// When a slow evaluation was last logged, and how many were not
    /// logged since.
    slow_logged: Cell<Option<std::time::Instant>>,
    slow_unlogged: Cell<u64>,
    skips: Option<SkipBacklog>,
    /// Exporters fed by verdicts (`traces: failing`).
    exports: crate::exporter::by_verdict::VerdictExports,
    /// `metrics.version_label`: counted verdicts also by service version.
    version_label: bool,
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

impl Evaluator {
    pub fn new(
        registry: Arc<ModelRegistry>,
        store: Arc<ResultStore>,
        metrics: Arc<Metrics>,
        links: LinksConfig,
        verdicts: VerdictFeed,
        alerts: Option<AlertSender>,
    ) -> Self {
        Self {
            registry,
            store,
            metrics,
            links,
            early: HashMap::new(),
            settled: HashMap::new(),
            scopes: ScopeInterner::default(),
            settled_order: VecDeque::new(),
            rootless_order: VecDeque::new(),
            rootless_bytes: 0,
            settled_bytes: 0,
            settled_charge: None,
            waiting_bytes: 0,
            waiting: std::collections::HashSet::new(),
            forgotten: HashMap::new(),
            forgotten_order: VecDeque::new(),
            forgotten_bytes: 0,
            keep_bytes: DEFAULT_KEEP_BYTES,
            late_window: crate::assembler::config::AssemblerConfig::default().late_span_window,
            settle: crate::assembler::config::DEFAULT_SETTLE,
            verdicts,
            alerts,
            tap: None,
            budget: DEFAULT_EVALUATION_BUDGET,
            started_unix_nanos: Some(unix_nanos(SystemTime::now())),
            tier: None,
            slow_logged: Cell::new(None),
            slow_unlogged: Cell::new(0),
            skips: None,
            exports: Default::default(),
            version_label: false,
        }
    }

    /// Also counts verdicts in `tracecheck_model_verdicts_by_version_total`
    /// (`metrics.version_label`).
    pub fn with_version_label(mut self, on: bool) -> Self {
        self.version_label = on;
        self
    }

    /// Tallies a trace's counted verdicts (flips taking back what they
    /// replace) under its root service's version.
    fn count_versions(&self, root: Option<(&str, Option<&str>)>, counted: &[Counted<'_>]) {
        let Some((service, Some(version))) = root else {
            return;
        };
        if counted.is_empty() {
            return;
        }
        self.store.versions.count(service, version, counted);
        if self.version_label {
            use std::sync::atomic::Ordering::Relaxed;
            let family = &self.metrics.model_verdicts_by_version;
            for c in counted.iter().filter(|c| c.verdict != Verdict::Skip) {
                let labels = super::metrics::VersionLabels {
                    model: c.model.to_owned(),
                    service: service.to_owned(),
                    version: version.to_owned(),
                    verdict: c.verdict.as_str(),
                };
                // A new series only while under the bound: the labels are
                // the senders' to choose.
                if family.get(&labels).is_none()
                    && self.metrics.version_series.fetch_add(1, Relaxed)
                        >= super::metrics::MAX_VERSION_SERIES
                {
                    self.metrics.version_series.fetch_sub(1, Relaxed);
                    continue;
                }
                family.get_or_create(&labels).inc();
            }
        }
    }

    /// Hands the traces with verdicts they select to `exports`.
    pub fn with_exports(mut self, exports: crate::exporter::by_verdict::VerdictExports) -> Self {
        self.exports = exports;
        self
    }

    /// Offers a trace to the exporters fed by verdicts: `whole` to those
    /// its counted verdicts now select, `fragment` (spans just merged) to
    /// those that have it already.
    fn export(
        &self,
        exported: &mut u64,
        models: &LoadedModels,
        counted: &[(usize, Verdict)],
        whole: &[RawSpan],
        fragment: &[RawSpan],
    ) {
        if self.exports.is_empty() {
            return;
        }
        let id = |m: usize| models.names.get(m).map(|(id, _)| Arc::clone(id));
        self.exports.offer(exported, counted, id, whole, fragment);
    }

    /// Sets `models.evaluation_budget`.
    pub fn with_evaluation_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// How long, and in how many bytes, settled traces are kept for late
    /// spans (`assembler.late_span_window`), and how long a late fragment
    /// takes to come (`assembler.settle`).
    pub fn with_late_window(
        mut self,
        window: Duration,
        keep_bytes: usize,
        settle: Duration,
    ) -> Self {
        self.late_window = window;
        self.keep_bytes = keep_bytes;
        self.settle = settle;
        self
    }

    /// Charges the settled traces it keeps to `memory`.
    pub fn with_memory(mut self, memory: &Arc<crate::memory::MemoryAccount>) -> Self {
        self.settled_charge = Some(memory.charge(crate::memory::Part::settled, self.settled_bytes));
        self
    }

    /// Also hands every completed trace (and late fragment) to `tap`.
    pub fn with_tap(mut self, tap: Arc<crate::testrun::TraceWaiters>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Judges the fragments of traces split by a change of the scale-out
    /// tier as cut short (`tier_change`), from the changes in `changes`.
    pub fn with_tier(mut self, changes: Arc<crate::tier::Changes>) -> Self {
        self.tier = Some(changes);
        self
    }

    /// Whether part of the trace may have gone to another instance: it
    /// began before this daemon did, or a tier change split it.
    fn began_elsewhere(
        &self,
        t: &CompletedTrace,
        trace: &Trace,
        now: Instant,
    ) -> Option<Inconclusive> {
        let first = first_start(trace);
        if self
            .started_unix_nanos
            .is_some_and(|started| first.is_some_and(|s| s < started))
        {
            return Some(Inconclusive::Restart);
        }
        self.split_by_tier(t.first_seen, t.last_seen, t.rootless, first, now)
    }

    /// `tier_change` if a change of the tier may have split the trace
    /// judged at `now` (`crate::tier::Changes::may_be_split`).
    fn split_by_tier(
        &self,
        first_seen: Instant,
        last_seen: Instant,
        rootless: bool,
        first_start_unix_nanos: Option<u64>,
        now: Instant,
    ) -> Option<Inconclusive> {
        let split = self.tier.as_ref().is_some_and(|changes| {
            changes.may_be_split(&crate::tier::Seen {
                first_seen,
                completed: now,
                first_start_unix_nanos,
                last_seen,
                rootless,
            })
        });
        split.then_some(Inconclusive::TierChange)
    }

    /// Takes the daemon's start as `at`; `None` judges every trace as if
    /// it began after (tests whose spans start at the epoch).
    pub fn started_at(mut self, at: Option<SystemTime>) -> Self {
        self.started_unix_nanos = at.map(unix_nanos);
        self
    }

    /// Notes which models one trace woke; the rest skipped it.
    fn note_woken(&mut self, models: &Arc<LoadedModels>, woken: impl Iterator<Item = usize>) {
        if !self
            .skips
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(&b.models, models))
        {
            self.flush_skips();
            self.skips = Some(SkipBacklog {
                models: Arc::clone(models),
                traces: 0,
                woken: vec![0; models.counters.len()],
            });
        }
        if let Some(b) = &mut self.skips {
            b.traces += 1;
            for m in woken {
                if let Some(w) = b.woken.get_mut(m) {
                    *w += 1;
                }
            }
        }
    }

    fn flush_skips(&mut self) {
        if let Some(b) = &mut self.skips {
            b.flush();
        }
    }

    fn context(&self) -> EvalContext<'static> {
        EvalContext {
            deadline: Some(std::time::Instant::now() + self.budget),
            now_unix_nanos: crate::civil::now_unix_nanos(),
            seed: fastrand::u64(..),
            ..EvalContext::default()
        }
    }

    /// The verdicts of the models `trace` wakes, within the budget.
    fn evaluate(&self, models: &LoadedModels, trace: &Trace) -> Vec<ModelVerdict> {
        let engine = &models.engine;
        let ctx = self.context();
        let started = std::time::Instant::now();
        let verdicts = match catch_unwind(AssertUnwindSafe(|| engine.evaluate_woken(trace, &ctx))) {
            Ok(v) => v,
            // A model panicked: go one model at a time to name the
            // culprit(s); the rest still count.
            Err(_) => {
                let mut one_by_one = Vec::new();
                for i in engine.woken_by(trace.span_names()) {
                    let ctx = self.context();
                    match catch_unwind(AssertUnwindSafe(|| engine.evaluate_model(i, trace, &ctx))) {
                        Ok(v) => one_by_one.extend(v),
                        Err(_) => self.model_panicked(models, i, trace),
                    }
                }
                one_by_one
            }
        };
        if let Some(v) = verdicts
            .iter()
            .find(|v| v.inconclusive == Some(Inconclusive::Budget))
        {
            self.over_budget(models, v.model, trace, started.elapsed());
        }
        verdicts
    }

    /// A panic while evaluating one model on one trace: counted, logged
    /// with the trace ID; that verdict is withheld, nothing else is.
    fn model_panicked(&self, models: &LoadedModels, model: usize, trace: &Trace) {
        let id = model_id(models, model);
        self.metrics
            .model_errors
            .get_or_create(&ModelLabels { model: id.clone() })
            .inc();
        tracing::error!(model = %id, trace_id = %trace.trace_id(), "Model evaluation panicked; verdict withheld.");
    }

    /// Counts and (rate-limited) logs the model that was running when the
    /// budget ran out.
    fn over_budget(&self, models: &LoadedModels, model: usize, trace: &Trace, took: Duration) {
        let id = model_id(models, model);
        self.metrics
            .model_slow_evaluations
            .get_or_create(&ModelLabels { model: id.clone() })
            .inc();
        let now = std::time::Instant::now();
        let due = self
            .slow_logged
            .get()
            .is_none_or(|at| now.duration_since(at) >= SLOW_LOG_INTERVAL);
        if due {
            tracing::warn!(
                model = %id,
                trace_id = %trace.trace_id(),
                spans = trace.spans.len(),
                took_ms = took.as_secs_f64() * 1e3,
                budget_ms = self.budget.as_secs_f64() * 1e3,
                not_logged_since_last = self.slow_unlogged.get(),
                "Evaluation ran past models.evaluation_budget; this model and those after it are inconclusive on this trace."
            );
            self.slow_logged.set(Some(now));
            self.slow_unlogged.set(0);
        } else {
            self.slow_unlogged.set(self.slow_unlogged.get() + 1);
        }
    }

    /// Publishes verdicts: counts them (or their flips), stores them with
    /// the trace, hands them to watchers, and alerts on failures.
    /// `last_seen` is when the trace's last span came, for
    /// `tracecheck_verdict_delay_seconds`.
    fn record(
        &self,
        models: &LoadedModels,
        on: On<'_>,
        verdicts: impl IntoIterator<Item = (ModelVerdict, Publish)>,
        completion: Completion,
        last_seen: Option<Instant>,
    ) {
        let On {
            trace_id,
            trace,
            spans,
        } = on;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let delay = last_seen.map(|at| Instant::now().saturating_duration_since(at).as_secs_f64());
        let mut records = Vec::new();
        // One URL for every verdict of the trace, made only if one is kept.
        let mut trace_url: Option<Option<Arc<str>>> = None;
        // Passes are counted, and recorded as a sample (ResultStore::
        // admit_pass) or for a watcher that asked for them; failures always.
        let watching_passes = self.verdicts.wants(Verdict::Pass);
        let mut pass_admitted: Option<bool> = None;
        let root = trace.and_then(|t| t.root_service());
        let mut tallied: Vec<Counted<'_>> = Vec::new();
        for (v, how) in verdicts {
            let Some(counters) = models.counters.get(v.model) else {
                continue;
            };
            let Some(model) = models.engine.models().get(v.model) else {
                continue;
            };
            let versioned = root.is_some_and(|(_, version)| version.is_some());
            if let (true, Some((id, _))) = (versioned, models.names.get(v.model)) {
                tallied.push(Counted {
                    model: id,
                    verdict: v.verdict,
                    undo: match how {
                        Publish::Flip { from } => Some(from),
                        Publish::Count { .. } => None,
                    },
                });
            }
            match how {
                Publish::Count { .. } => {
                    counters.record(v.verdict, &trace_id);
                    // A skip is no verdict anyone waits for.
                    if let (Some(d), false) = (delay, v.verdict == Verdict::Skip) {
                        counters.delay.observe(d);
                    }
                    if let Some(reason) = v.inconclusive {
                        self.metrics
                            .inconclusive
                            .get_or_create(&InconclusiveLabels {
                                reason: reason.as_str(),
                            })
                            .inc();
                    }
                }
                Publish::Flip { from } => {
                    self.metrics
                        .verdicts_flipped
                        .get_or_create(&FlipLabels {
                            model: model.id.clone(),
                            from: from.as_str(),
                            to: v.verdict.as_str(),
                        })
                        .inc();
                    // The page was false: the alert must stop saying so.
                    if let (Verdict::Fail, Some(alerts), Some((id, _))) =
                        (from, &self.alerts, models.names.get(v.model))
                    {
                        alerts.retract(Arc::clone(id), trace_id);
                    }
                }
            }
            if v.verdict == Verdict::Skip {
                continue;
            }
            let keep = v.verdict != Verdict::Pass
                || *pass_admitted.get_or_insert_with(|| self.store.admit_pass());
            if !keep && !watching_passes {
                continue;
            }
            if v.verdict == Verdict::Fail {
                let mut seen_specs: Vec<&str> = Vec::new();
                for f in &v.failures {
                    if !seen_specs.contains(&f.spec.as_str()) {
                        seen_specs.push(&f.spec);
                        self.metrics
                            .spec_failures
                            .get_or_create(&SpecLabels {
                                model: model.id.clone(),
                                spec: f.spec.clone(),
                            })
                            .inc();
                    }
                }
            }
            let summary = (v.verdict == Verdict::Fail)
                .then(|| trace.and_then(|t| models.engine.render_summary(v.model, t)))
                .flatten();
            let Some((id, name)) = models.names.get(v.model) else {
                continue;
            };
            let trace_url = trace_url
                .get_or_insert_with(|| self.links.trace_url(&trace_id).map(Arc::from))
                .clone();
            let (waited, early, flipped_from) = match how {
                Publish::Count { waited, early } => (waited, early, None),
                Publish::Flip { from } => (true, false, Some(from)),
            };
            let record = Arc::new(VerdictRecord {
                seq: self.store.next_seq(),
                trace_id,
                model: Arc::clone(id),
                model_name: Arc::clone(name),
                verdict: v.verdict,
                inconclusive: v.inconclusive,
                failures: v.failures,
                trace_url,
                summary,
                evaluated_at_unix_ms: now_ms,
                incomplete: completion.incomplete() || v.inconclusive.is_some(),
                completion_reason: completion.reason,
                waited_for_late_spans: waited,
                early,
                flipped_from,
                service: root.map(|(s, _)| Arc::from(s)),
                service_version: root.and_then(|(_, v)| v.map(Arc::from)),
            });
            if self.verdicts.wants(record.verdict) {
                self.verdicts.send(Arc::clone(&record));
            }
            if let (Some(alerts), Verdict::Fail) = (&self.alerts, record.verdict) {
                let severity = model
                    .alert
                    .as_ref()
                    .and_then(|a| a.severity.clone())
                    .or_else(|| model.labels.get("severity").cloned())
                    .unwrap_or_else(|| "warning".to_owned());
                alerts.send(AlertEvent {
                    record: Arc::clone(&record),
                    severity,
                    model_labels: model.labels.clone(),
                });
            }
            if keep {
                records.push(record);
            }
        }
        self.count_versions(root, &tallied);
        self.store.record(trace_id, spans, records);
    }

    /// A copy of a still-buffered trace: publishes the passes no later span
    /// can change.
    fn consume_early(&mut self, t: CompletedTrace) {
        let models = self.registry.current();
        // Built only if a model that can pass early is woken: most traces
        // wake none, and building costs what evaluating does.
        if !models.engine.has_early()
            || !models
                .engine
                .woken_by(span_names(&t.spans))
                .into_iter()
                .any(|i| models.engine.can_pass_early(i))
        {
            return;
        }
        let Some(trace) = build_trace_for(&models.engine, &t.spans) else {
            return;
        };
        let ctx = self.context();
        let engine = &models.engine;
        let Ok(passes) = catch_unwind(AssertUnwindSafe(|| engine.evaluate_early(&trace, &ctx)))
        else {
            // The settled evaluation names the model that panics.
            return;
        };
        if passes.is_empty() {
            return;
        }
        let passed: Vec<usize> = passes.iter().map(|v| v.model).collect();
        self.record(
            &models,
            On {
                trace_id: t.trace_id,
                trace: Some(&trace),
                spans: &t.spans,
            },
            passes.into_iter().map(|v| (v, Publish::EARLY)),
            Completion::of(&t),
            Some(t.last_seen),
        );
        self.early.insert(t.trace_id, (models, passed));
    }

    /// A trace that settled (or was cut short): every model's verdict.
    fn consume_settled(&mut self, t: CompletedTrace) {
        if t.rootless {
            self.metrics.rootless_traces.inc();
        }
        let models = self.registry.current();
        let early = self
            .early
            .remove(&t.trace_id)
            .map(|(at, passed)| passed_in(&at, passed, &models))
            .unwrap_or_default();
        let completion = Completion::of(&t);
        let now = Instant::now();
        if !wakes_any(&models, &t.spans) {
            // Every model skips it: nothing to evaluate. It is still kept,
            // since a late span (a queue worker's) may be the one a model
            // applies to.
            self.note_woken(&models, std::iter::empty());
            if t.reason != CompletionReason::shutdown {
                let id = t.trace_id;
                let s = Settled::new(
                    t,
                    &mut self.scopes,
                    models,
                    Vec::new(),
                    Vec::new(),
                    None,
                    now,
                );
                self.keep(id, s);
            }
            return;
        }
        let Some(trace) = build_trace_for(&models.engine, &t.spans) else {
            self.unreadable(&models, &t, &early);
            return;
        };
        let started = std::time::Instant::now();
        let verdicts = self.evaluate(&models, &trace);
        self.note_woken(&models, verdicts.iter().map(|v| v.model));
        let failed = verdicts.iter().any(|v| v.verdict == Verdict::Fail);
        self.metrics.evaluation_duration.observe(
            started.elapsed().as_secs_f64(),
            failed.then(|| super::metrics::TraceExemplar {
                trace_id: t.trace_id.to_hex(),
            }),
            None,
        );
        let began_elsewhere = self.began_elsewhere(&t, &trace, now);
        // Root-less spans that all ended before the late-span window: the
        // rest of a trace settled long since whose ID was forgotten. Judged
        // alone they would fail models for spans that are simply elsewhere.
        let stale = t.rootless && self.is_stale(&trace);
        let cut = completion
            .cut_short()
            .or(began_elsewhere)
            .or(stale.then_some(Inconclusive::Late));
        let mut counted = Vec::new();
        let mut waiting = Vec::new();
        let mut publish = Vec::new();
        for v in verdicts {
            if early.contains(&v.model) {
                // Counted when it passed early. Should the whole trace say
                // otherwise, that is published as a flip, not counted again.
                if v.verdict != Verdict::Pass && v.inconclusive.is_none() {
                    counted.push((v.model, v.verdict));
                    publish.push((
                        v,
                        Publish::Flip {
                            from: Verdict::Pass,
                        },
                    ));
                } else {
                    counted.push((v.model, Verdict::Pass));
                }
                continue;
            }
            let v = models.engine.cut_short(v, cut);
            let within = models.engine.models().get(v.model).and_then(|m| m.within);
            match within {
                Some(d) if v.verdict == Verdict::Fail && v.awaiting_spans => {
                    waiting.push(Waiting {
                        model: v.model,
                        // A span that comes at `within` is handed on as a
                        // late fragment `settle` later.
                        deadline: now + d + self.settle,
                        last: v,
                    });
                }
                _ => {
                    if v.verdict != Verdict::Skip {
                        counted.push((v.model, v.verdict));
                    }
                    publish.push((v, Publish::SETTLED));
                }
            }
        }
        if !waiting.is_empty()
            && self.waiting_bytes + span_bytes(&t.spans)
                > self.keep_bytes.saturating_mul(WAITING_BYTES_FACTOR)
        {
            // No room to wait: the span it waits for may still come, so
            // neither pass nor fail.
            for w in waiting.drain(..) {
                let v = models.engine.cut_short(w.last, Some(Inconclusive::Bounds));
                counted.push((v.model, v.verdict));
                publish.push((v, Publish::SETTLED));
            }
        }
        self.record(
            &models,
            On {
                trace_id: t.trace_id,
                trace: Some(&trace),
                spans: &t.spans,
            },
            publish,
            completion,
            Some(t.last_seen),
        );
        if !waiting.is_empty() {
            self.store.hold(t.trace_id, &t.spans);
        }
        let mut exported = 0;
        self.export(&mut exported, &models, &counted, &t.spans, &[]);
        // Nothing comes after a shutdown.
        if t.reason == CompletionReason::shutdown {
            return;
        }
        let id = t.trace_id;
        let mut s = Settled::new(
            t,
            &mut self.scopes,
            models,
            counted,
            waiting,
            began_elsewhere,
            now,
        );
        s.exported = exported;
        // Stale remains wait for nothing: their trace settled long since.
        s.awaits_root &= !stale;
        self.keep(id, s);
    }

    /// A trace a span of which could not be decoded after all: every model
    /// its span names wake is `inconclusive` (`unreadable`), so a failure
    /// it may hold is never silently dropped.
    /// Models that passed early (`early`) keep their pass.
    fn unreadable(&mut self, models: &Arc<LoadedModels>, t: &CompletedTrace, early: &[usize]) {
        let woken = models.engine.woken_by(span_names(&t.spans));
        tracing::warn!(trace_id = %t.trace_id, models = woken.len(), "A span of this trace could not be decoded for evaluation; its verdicts are inconclusive.");
        self.note_woken(models, woken.iter().copied());
        let judged: Vec<usize> = woken.into_iter().filter(|m| !early.contains(m)).collect();
        let counted: Vec<(usize, Verdict)> =
            judged.iter().map(|&m| (m, Verdict::Inconclusive)).collect();
        let verdicts = judged.into_iter().map(|model| {
            (
                ModelVerdict::inconclusive(model, Inconclusive::Unreadable),
                Publish::SETTLED,
            )
        });
        self.record(
            models,
            On {
                trace_id: t.trace_id,
                trace: None,
                spans: &t.spans,
            },
            verdicts,
            Completion::of(t),
            Some(t.last_seen),
        );
        self.export(&mut 0, models, &counted, &t.spans, &[]);
    }

    /// Spans of a trace that settled: merged into it, every model evaluated
    /// again.
    fn consume_late(&mut self, t: CompletedTrace) {
        self.early.remove(&t.trace_id);
        let n = t.spans.len() as u64;
        let Some(mut s) = self.take(&t.trace_id) else {
            self.metrics
                .late_spans
                .get_or_create(&LateLabels { merged: "false" })
                .inc_by(n);
            tracing::debug!(trace_id = %t.trace_id, spans = n, "Late spans for a trace no longer kept; not judged.");
            if !self.unsettle_forgotten(&t) {
                self.unsettle_unknown(&t);
            }
            return;
        };
        self.metrics
            .late_spans
            .get_or_create(&LateLabels { merged: "true" })
            .inc_by(n);
        let added = span_bytes(&t.spans);
        let merged_from = s.spans.len();
        s.spans
            .extend(RawSpan::detach_rest(t.spans, t.own_spans, &mut self.scopes));
        s.bytes += added;
        s.last_seen = t.last_seen;
        // Its root came: it is kept as any trace with a root from now on.
        s.awaits_root &= t.rootless;
        s.completion.truncated |= t.truncated;
        s.completion.unreadable |= t.unreadable;

        let Some(trace) = build_trace_for(&s.models.engine, &s.spans) else {
            tracing::warn!(trace_id = %t.trace_id, "Late spans could not be decoded; the verdicts given stand.");
            let mut exported = s.exported;
            let fragment = &s.spans[merged_from..];
            self.export(&mut exported, &s.models, &s.counted, &s.spans, fragment);
            s.exported = exported;
            self.keep(t.trace_id, s);
            return;
        };
        let verdicts = self.evaluate(&s.models, &trace);
        let cut = s.completion.cut_short().or(s.began_elsewhere);
        let mut publish = Vec::new();
        let mut still = Vec::new();
        let mut waiting = std::mem::take(&mut s.waiting);
        for v in verdicts {
            let v = s.models.engine.cut_short(v, cut);
            if let Some(i) = waiting.iter().position(|w| w.model == v.model) {
                let mut w = waiting.swap_remove(i);
                if v.verdict == Verdict::Fail && v.awaiting_spans {
                    w.last = v;
                    still.push(w);
                } else {
                    s.counted.push((v.model, v.verdict));
                    publish.push((v, Publish::WAITED));
                }
                continue;
            }
            let from = s
                .counted
                .iter()
                .find(|(m, _)| *m == v.model)
                .map_or(Verdict::Skip, |(_, c)| *c);
            // Running out of budget on the merged trace says nothing about
            // the verdict given on the settled one; nor do spans missing
            // from a fragment undo a failure already seen.
            if from == v.verdict
                || v.inconclusive == Some(Inconclusive::Budget)
                || (from == Verdict::Fail && v.verdict == Verdict::Inconclusive)
            {
                continue;
            }
            match s.counted.iter_mut().find(|(m, _)| *m == v.model) {
                Some(c) => c.1 = v.verdict,
                None => s.counted.push((v.model, v.verdict)),
            }
            publish.push((v, Publish::Flip { from }));
        }
        // Waiting models the merged trace no longer wakes keep waiting.
        still.extend(waiting);
        s.waiting = still;
        let models = Arc::clone(&s.models);
        self.record(
            &models,
            On {
                trace_id: t.trace_id,
                trace: Some(&trace),
                spans: &s.spans,
            },
            publish,
            s.completion,
            Some(t.last_seen),
        );
        let mut exported = s.exported;
        let fragment = &s.spans[merged_from..];
        self.export(&mut exported, &models, &s.counted, &s.spans, fragment);
        s.exported = exported;
        if !s.waiting.is_empty() {
            self.store.hold(t.trace_id, &s.spans);
        }
        self.keep(t.trace_id, s);
    }

    /// Spans of a forgotten trace came: they cannot be merged, so every
    /// verdict they could have changed becomes `inconclusive` (`late`), a
    /// counted flip: a pass no span can change and a failure already seen
    /// stand; a skip of a model these spans may make apply does not.
    /// Returns whether the trace's verdicts were still held.
    fn unsettle_forgotten(&mut self, t: &CompletedTrace) -> bool {
        let Some(f) = self.forgotten.get_mut(&t.trace_id) else {
            return false;
        };
        let before = f.bytes();
        let engine = &f.models.engine;
        let mut publish = Vec::new();
        let late = |model| ModelVerdict::inconclusive(model, Inconclusive::Late);
        for (model, verdict) in &mut f.counted {
            if *verdict == Verdict::Pass && !engine.can_pass_early(*model) {
                publish.push((
                    late(*model),
                    Publish::Flip {
                        from: Verdict::Pass,
                    },
                ));
                *verdict = Verdict::Inconclusive;
            }
        }
        for model in engine.may_wake(span_names(&t.spans)) {
            if f.counted.iter().all(|(m, _)| *m != model) {
                publish.push((
                    late(model),
                    Publish::Flip {
                        from: Verdict::Skip,
                    },
                ));
                f.counted.push((model, Verdict::Inconclusive));
            }
        }
        // Its bytes as counted, whatever the pushes did to its capacity.
        let after = f.bytes();
        let mut exported = f.exported;
        let counted = f.counted.clone();
        let models = Arc::clone(&f.models);
        self.forgotten_bytes = self.forgotten_bytes + after - before;
        // Only these spans are left to send: the rest went, if selected,
        // while the trace was kept.
        self.export(&mut exported, &models, &counted, &t.spans, &t.spans);
        if let Some(f) = self.forgotten.get_mut(&t.trace_id) {
            f.exported = exported;
        }
        if !publish.is_empty() {
            self.publish_late(&models, t, publish);
        }
        true
    }

    /// Spans of a trace whose verdicts are no longer held at all (its
    /// `Forgotten` entry gone too: a long-lived trace's parts further apart
    /// than those entries last). What it was judged on is unknown, so every
    /// model these spans could wake is made `inconclusive` (`late`),
    /// published as a flip from a skip (the common case: the part judged
    /// lacked the span the model matches, as a long-lived trace's root that
    /// comes last), rather than leaving whatever was given standing; a
    /// `Forgotten` entry records it, so later parts flip nothing twice.
    fn unsettle_unknown(&mut self, t: &CompletedTrace) {
        let models = self.registry.current();
        let woken = models.engine.may_wake(span_names(&t.spans));
        if woken.is_empty() {
            return;
        }
        let publish: Vec<_> = woken
            .iter()
            .map(|&model| {
                (
                    ModelVerdict::inconclusive(model, Inconclusive::Late),
                    Publish::Flip {
                        from: Verdict::Skip,
                    },
                )
            })
            .collect();
        self.insert_forgotten(
            t.trace_id,
            Forgotten {
                models: Arc::clone(&models),
                counted: woken.iter().map(|&m| (m, Verdict::Inconclusive)).collect(),
                exported: 0,
                at: Instant::now(),
            },
        );
        self.charge_settled();
        self.publish_late(&models, t, publish);
    }

    /// Publishes what late spans of a trace no longer kept changed: there
    /// is no trace to show, only these spans.
    fn publish_late(
        &self,
        models: &LoadedModels,
        t: &CompletedTrace,
        publish: Vec<(ModelVerdict, Publish)>,
    ) {
        self.record(
            models,
            On {
                trace_id: t.trace_id,
                trace: None,
                spans: &t.spans,
            },
            publish,
            Completion::of(t),
            Some(t.last_seen),
        );
    }

    /// Keeps a settled trace for late spans, forgetting the oldest beyond
    /// the byte bound. Traces with verdicts waiting on `within` are kept
    /// until those settle.
    fn keep(&mut self, id: TraceId, s: Settled) {
        self.settled_bytes += s.bytes;
        if !s.waiting.is_empty() {
            self.waiting_bytes += s.bytes;
        }
        if s.waiting.is_empty() {
            self.waiting.remove(&id);
            let order = if s.awaits_root {
                self.add_rootless(s.bytes);
                &mut self.rootless_order
            } else {
                &mut self.settled_order
            };
            order.push_back((s.settled_at, id));
        } else {
            self.waiting.insert(id);
        }
        self.settled.insert(id, s);
        // The account sees it before `forget` asks whether it is past its
        // limit.
        self.charge_settled();
        self.forget(Instant::now());
    }

    /// `rootless_bytes` and its gauge, summed over the evaluation threads.
    fn add_rootless(&mut self, bytes: usize) {
        self.rootless_bytes += bytes;
        self.metrics
            .settled_rootless_bytes
            .inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn sub_rootless(&mut self, bytes: usize) {
        self.rootless_bytes -= bytes;
        self.metrics
            .settled_rootless_bytes
            .dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn charge_settled(&mut self) {
        if let Some(c) = &mut self.settled_charge {
            let room = crate::memory::map_slack(&self.settled, KEPT_ROOM)
                + crate::memory::map_slack(&self.forgotten, KEPT_ROOM);
            c.set(self.settled_bytes + self.forgotten_bytes + room);
        }
    }

    /// Takes a kept trace out, off the byte counts (`keep` puts it back).
    fn take(&mut self, id: &TraceId) -> Option<Settled> {
        let s = self.settled.remove(id)?;
        self.settled_bytes -= s.bytes;
        if s.queued_rootless() {
            self.sub_rootless(s.bytes);
        }
        if !s.waiting.is_empty() {
            self.waiting_bytes -= s.bytes;
        }
        self.charge_settled();
        Some(s)
    }

    /// Forgets settled traces past the late-span window or the byte bound.
    /// The byte bound takes traces with a root first, oldest first, and
    /// root-less ones (awaiting their root, [`Settled::awaits_root`]) only
    /// once none with a root is left or they hold more than half of
    /// `keep_bytes`: a root-less trace is most likely a long-lived trace's
    /// earlier part whose root comes last, and forgotten, the root's part
    /// could make its verdicts only inconclusive, never the failure they
    /// may be; the half bounds the traces whose root never comes. Under
    /// memory pressure ([`crate::memory::MemoryAccount::pressed`]) those
    /// settled longer than `settle` ago give way too, oldest first in each
    /// queue: the memory is wanted for traces still to be judged. The
    /// recently settled stay: a sender refused for that very pressure
    /// retries within seconds, and its spans must still be able to flip a
    /// verdict given without them. Past the account's limit, recently
    /// settled traces with no failure give way too, until the excess is
    /// freed (a root-less one behind a trace with a root and a failure
    /// among them): settled traces are the one part that grows without
    /// admission (their spans are copied out of their requests as they
    /// settle), and a forgotten trace's late spans still make its
    /// changeable passes inconclusive. One with a failure stays, as a late
    /// span may undo it, and a forgotten trace's failure would stand.
    fn forget(&mut self, now: Instant) {
        let mut excess = self.settled_charge.as_ref().map_or(0, |c| {
            let a = c.account();
            a.used().saturating_sub(a.limit())
        });
        loop {
            let over_bytes = self.settled_bytes - self.waiting_bytes > self.keep_bytes;
            let rootless_first = over_bytes
                && (self.rootless_bytes > self.keep_bytes / 2 || self.settled_order.is_empty());
            let due = |order: &VecDeque<(Instant, TraceId)>, by_bytes: bool| {
                let &(at, id) = order.front()?;
                (by_bytes || self.must_forget(at, &id, now, excess)).then_some((at, id))
            };
            let picked = if rootless_first {
                due(&self.rootless_order, true)
                    .map(|front| (true, front))
                    .or_else(|| due(&self.settled_order, true).map(|front| (false, front)))
            } else {
                due(&self.settled_order, over_bytes)
                    .map(|front| (false, front))
                    .or_else(|| due(&self.rootless_order, false).map(|front| (true, front)))
            };
            let Some((rootless, (at, id))) = picked else {
                break;
            };
            if rootless {
                self.rootless_order.pop_front();
            } else {
                self.settled_order.pop_front();
            }
            let live = self.settled.get(&id).is_some_and(|s| {
                s.settled_at == at && s.waiting.is_empty() && s.queued_rootless() == rootless
            });
            if live {
                if let Some(s) = self.settled.remove(&id) {
                    self.settled_bytes -= s.bytes;
                    if rootless {
                        self.sub_rootless(s.bytes);
                    }
                    excess = excess.saturating_sub(s.bytes);
                    if now.saturating_duration_since(at) <= self.late_window {
                        self.remember_forgotten(id, s, at);
                    }
                    // The account sees it at once: the pressure test reads
                    // the account.
                    self.charge_settled();
                }
            }
        }
        while let Some(&(at, id)) = self.forgotten_order.front() {
            let expired = now.saturating_duration_since(at) > self.late_window;
            // Those forgotten within `settle` stay whatever the bound: their
            // senders' retries are still to come, and without the entry
            // their late spans would leave a pass standing.
            let recent = now.saturating_duration_since(at) <= self.settle;
            if !expired && (self.forgotten_bytes <= self.forgotten_bound() || recent) {
                break;
            }
            self.forgotten_order.pop_front();
            if self.forgotten.get(&id).is_some_and(|f| f.at == at) {
                if let Some(f) = self.forgotten.remove(&id) {
                    self.forgotten_bytes -= f.bytes();
                }
            }
        }
        crate::memory::shrink_idle(&mut self.settled, KEPT_ROOM);
        crate::memory::shrink_idle(&mut self.forgotten, KEPT_ROOM);
        self.charge_settled();
    }

    /// Whether a kept trace settled at `at` goes whatever the byte bound:
    /// past the late-span window, under memory pressure, or past the
    /// account's limit without a failure (see [`Evaluator::forget`]).
    fn must_forget(&self, at: Instant, id: &TraceId, now: Instant, excess: usize) -> bool {
        let age = now.saturating_duration_since(at);
        let pressed = age > self.settle
            && self
                .settled_charge
                .as_ref()
                .is_some_and(|c| c.account().pressed());
        let over = excess > 0
            && self
                .settled
                .get(id)
                .is_some_and(|s| s.counted.iter().all(|(_, v)| *v != Verdict::Fail));
        age > self.late_window || pressed || over
    }

    /// Half the bytes kept for late spans: settled traces and what is left
    /// of forgotten ones together stay within 1.5 times `keep_bytes`.
    fn forgotten_bound(&self) -> usize {
        (self.keep_bytes / 2).max(MIN_FORGOTTEN_BYTES)
    }

    fn remember_forgotten(&mut self, id: TraceId, s: Settled, at: Instant) {
        let mut counted = s.counted;
        counted.shrink_to_fit();
        self.insert_forgotten(
            id,
            Forgotten {
                models: s.models,
                counted,
                exported: s.exported,
                at,
            },
        );
    }

    fn insert_forgotten(&mut self, id: TraceId, f: Forgotten) {
        self.forgotten_bytes += f.bytes();
        self.forgotten_order.push_back((f.at, id));
        if let Some(old) = self.forgotten.insert(id, f) {
            self.forgotten_bytes -= old.bytes();
        }
    }

    /// Verdicts whose `within` ran out (or all of them, `force`, at
    /// shutdown, when they are cut short instead) are published.
    fn settle_waiting(&mut self, trace_id: TraceId, now: Instant, force: bool) {
        let Some(mut s) = self.take(&trace_id) else {
            self.waiting.remove(&trace_id);
            return;
        };
        self.waiting.remove(&trace_id);
        let (done, still): (Vec<Waiting>, Vec<Waiting>) = s
            .waiting
            .drain(..)
            .partition(|w| force || w.deadline <= now);
        if !done.is_empty() {
            let trace = build_trace_for(&s.models.engine, &s.spans);
            let models = Arc::clone(&s.models);
            let mut publish = Vec::new();
            // The span waited for may have gone to an instance that joined
            // while it waited.
            let cut = if force {
                Some(Inconclusive::Shutdown)
            } else {
                self.split_by_tier(
                    s.first_seen,
                    s.last_seen,
                    s.rootless,
                    trace.as_ref().and_then(first_start),
                    now,
                )
            };
            for w in done {
                let v = models.engine.cut_short(w.last, cut);
                s.counted.push((v.model, v.verdict));
                publish.push((v, Publish::WAITED));
            }
            self.record(
                &models,
                On {
                    trace_id,
                    trace: trace.as_ref(),
                    spans: &s.spans,
                },
                publish,
                s.completion,
                Some(s.last_seen),
            );
            let mut exported = s.exported;
            self.export(&mut exported, &models, &s.counted, &s.spans, &[]);
            s.exported = exported;
        }
        s.waiting = still;
        if !force {
            s.settled_at = now;
            self.keep(trace_id, s);
        }
    }
}

impl Evaluator {
    /// Whether every span of the trace ended longer than the late-span
    /// window ago (by the senders' clocks): the remains of a trace that
    /// settled long since, not a trace of its own.
    fn is_stale(&self, trace: &Trace) -> bool {
        let now = unix_nanos(SystemTime::now());
        let window = self.late_window.as_nanos().min(u128::from(u64::MAX)) as u64;
        let last_end = trace.spans.iter().map(|s| s.end.max(s.start)).max();
        last_end.is_some_and(|end| end > 0 && end < now.saturating_sub(window))
    }
}

/// The models of `now` that passed early under `then`.
fn passed_in(then: &Arc<LoadedModels>, passed: Vec<usize>, now: &Arc<LoadedModels>) -> Vec<usize> {
    // After a reload a model of the same id may say something else: the
    // settled trace is judged by the models in force then, from scratch.
    if Arc::ptr_eq(then, now) {
        passed
    } else {
        Vec::new()
    }
}

/// Whether the trace's first span started before `started` (unix
/// nanoseconds): part of it may have gone to the instance this one
/// replaced. Start times are the senders' clocks: one behind ours makes a
/// few traces of the first seconds inconclusive; one ahead by more than the
/// time a trace takes is not caught.
/// The earliest span start of `trace` (unix nanoseconds), if any has one.
fn first_start(trace: &Trace) -> Option<u64> {
    trace.spans.iter().map(|s| s.start).filter(|&s| s > 0).min()
}

impl TraceConsumer for Evaluator {
    fn consume(&mut self, t: CompletedTrace) {
        if t.early {
            // A trace kept here since it settled has had its verdicts.
            if !self.settled.contains_key(&t.trace_id) {
                self.consume_early(t);
            }
            return;
        }
        if let Some(tap) = &self.tap {
            tap.deliver(&t);
        }
        // The assembler forgets settled IDs by its own bounds; a trace still
        // kept here is merged into, never judged twice.
        if t.late || self.settled.contains_key(&t.trace_id) {
            self.consume_late(t);
        } else {
            self.consume_settled(t);
        }
    }

    fn tick(&mut self, now: Instant) {
        let due: Vec<TraceId> = self
            .waiting
            .iter()
            .filter(|id| {
                self.settled
                    .get(id)
                    .is_some_and(|s| s.waiting.iter().any(|w| w.deadline <= now))
            })
            .copied()
            .collect();
        for id in due {
            self.settle_waiting(id, now, false);
        }
        self.forget(now);
        self.flush_skips();
    }

    fn finish(&mut self) {
        let ids: Vec<TraceId> = self.waiting.iter().copied().collect();
        for id in ids {
            self.settle_waiting(id, Instant::now(), true);
        }
        self.flush_skips();
    }
}

fn model_id(models: &LoadedModels, i: usize) -> String {
    models
        .engine
        .models()
        .get(i)
        .map(|m| m.id.clone())
        .unwrap_or_default()
}

/// The engine's view of buffered spans (all of one trace, as the assembler
/// hands them over), decoded straight from their bytes. `None` if a span is
/// not valid protobuf after all.
pub fn build_trace(spans: &[RawSpan]) -> Option<Trace> {
    build_with(spans, TraceBuilder::new)
}

/// The trace as `engine` will read it: attributes no model names are left
/// undecoded ([`crate::engine::Engine::key_set`]).
pub fn build_trace_for(engine: &crate::engine::Engine, spans: &[RawSpan]) -> Option<Trace> {
    let keep = engine.key_set();
    build_with(spans, |id| TraceBuilder::keeping(id, Arc::clone(keep)))
}

fn build_with(spans: &[RawSpan], builder: impl FnOnce(TraceId) -> TraceBuilder) -> Option<Trace> {
    let first = spans.first()?;
    let (trace_id, _) = crate::otlp::wire::span_trace_id_and_name(&first.bytes).ok()?;
    let mut b = builder(TraceId::from_slice(trace_id)?);
    b.reserve(spans.len());
    for s in spans {
        b.add_encoded(&s.scope.resource, &s.bytes).ok()?;
    }
    Some(b.build())
}

/// Whether any loaded model can give this trace anything but a skip: its
/// span names against the engine's dispatch index, read from the span bytes
/// without building the trace.
fn wakes_any(models: &LoadedModels, spans: &[RawSpan]) -> bool {
    models.engine.wakes_any(span_names(spans))
}

/// The encoded size of spans, as the evaluator's byte bounds count them.
fn span_bytes(spans: &[RawSpan]) -> usize {
    spans.iter().map(|s| s.bytes.len()).sum()
}

/// The names of the spans that can be read, from their bytes.
fn span_names(spans: &[RawSpan]) -> impl Iterator<Item = &str> {
    spans
        .iter()
        .filter_map(|s| crate::otlp::wire::span_trace_id_and_name(&s.bytes).ok())
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message as _;

    use super::*;
    use crate::assembler::CompletedTrace;
    use crate::bench::traffic::{Rng, TrafficGenerator, TrafficMix};
    use crate::engine::Value;
    use crate::evaluator::registry::{ModelRegistry, ModelSource};
    use crate::metrics::CompletionReason;
    use crate::otlp::{to_resource_spans, walk, LazyExportRequest};

    /// Everything evaluation can read from a trace, with keys by name (key
    /// ids depend on interning order, which both builders share anyway).
    fn canonical(t: &Trace) -> Vec<String> {
        let names: HashMap<_, String> = t
            .keys
            .iter()
            .into_iter()
            .map(|(k, id)| (id, k.to_string()))
            .collect();
        let named = |attrs: &[(u32, Value)]| {
            let mut v: Vec<String> = attrs
                .iter()
                .map(|(k, v)| format!("{}={v:?}", names[k]))
                .collect();
            v.sort();
            v
        };
        t.spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{:?} {:?} {:?} {} {:?} {:?} {:?} {:?} {}..{} attrs={:?} resource={:?} events={:?}",
                    s.id,
                    s.parent_id,
                    s.parent,
                    s.name,
                    s.kind,
                    s.status,
                    s.status_message,
                    s.span_type,
                    s.start,
                    s.end,
                    named(t.span_attrs(i as u32)),
                    named(&t.resources[s.resource as usize]),
                    s.events,
                )
            })
            .collect()
    }

    /// The raw spans of each trace in `request`, as the assembler groups them.
    fn raw_traces(request: &ExportTraceServiceRequest) -> Vec<Vec<RawSpan>> {
        let lazy = LazyExportRequest::decode(Bytes::from(request.encode_to_vec())).unwrap();
        let mut by_trace: Vec<(TraceId, Vec<RawSpan>)> = Vec::new();
        for k in walk(lazy).unwrap().spans {
            match by_trace.iter_mut().find(|(t, _)| *t == k.trace_id) {
                Some((_, v)) => v.push(k.span),
                None => by_trace.push((k.trace_id, vec![k.span])),
            }
        }
        by_trace.into_iter().map(|(_, v)| v).collect()
    }

    fn through_prost(spans: &[RawSpan]) -> Trace {
        let rs = to_resource_spans(spans).unwrap();
        Trace::from_resource_spans(&rs).remove(0)
    }

    fn assert_same(spans: &[RawSpan]) {
        let direct = build_trace(spans).expect("decodes");
        let prost = through_prost(spans);
        assert_eq!(direct.trace_id(), prost.trace_id());
        assert_eq!(canonical(&direct), canonical(&prost));
    }

    #[test]
    fn decoding_span_bytes_gives_the_trace_prost_gives() {
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(7));
        for _ in 0..20 {
            let batch = g.next_batch(400);
            for spans in raw_traces(&batch.request) {
                assert_same(&spans);
            }
        }
    }

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn every_value_kind_status_event_and_duplicate_key_decodes_alike() {
        use any_value::Value as V;
        let nested = V::KvlistValue(KeyValueList {
            values: vec![
                kv("a", V::IntValue(-3)),
                kv(
                    "b",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(V::BoolValue(true)),
                            },
                            AnyValue { value: None },
                            AnyValue {
                                value: Some(V::DoubleValue(2.5)),
                            },
                        ],
                    }),
                ),
            ],
        });
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "GET /ünïcode".into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 10,
            end_time_unix_nano: 99,
            attributes: vec![
                kv("http.request.method", V::StringValue("GET".into())),
                kv("dup", V::StringValue("first".into())),
                kv("bytes", V::BytesValue(vec![0, 0xab, 0xff])),
                kv("nested", nested),
                KeyValue {
                    key: "no-value".into(),
                    value: None,
                    ..Default::default()
                },
                kv("dup", V::StringValue("last".into())),
            ],
            events: vec![span::Event {
                time_unix_nano: 50,
                name: "retry".into(),
                attributes: vec![kv("attempt", V::IntValue(2))],
                dropped_attributes_count: 0,
            }],
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            ..Default::default()
        };
        let mut second = span.clone();
        second.span_id = vec![3; 8];
        second.parent_span_id = Vec::new();
        second.status = None;
        second.attributes = vec![kv("db.system", V::StringValue("pg".into()))];
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", V::StringValue("old".into())),
                        kv("service.name", V::StringValue("api".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span, second],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let traces = raw_traces(&request);
        assert_eq!(traces.len(), 1);
        assert_same(&traces[0]);
        let t = build_trace(&traces[0]).unwrap();
        let i = t.spans_named("GET /ünïcode")[0];
        assert_eq!(t.attribute(i, "dup"), Some(Value::str("last")));
        assert_eq!(t.attribute(i, "bytes"), Some(Value::str("00abff")));
        assert_eq!(t.attribute(i, "service.name"), Some(Value::str("api")));
    }

    fn engine_of(origin: &str, yaml: &str) -> crate::engine::Engine {
        let loaded = crate::model::load_str(origin, yaml).expect("models load");
        crate::engine::Engine::compile(crate::model::models(&loaded)).expect("models compile")
    }

    /// A trace built with only the keys an engine reads gets exactly the
    /// verdicts (and failure details) the whole trace gets.
    #[test]
    fn a_trace_of_only_the_read_keys_gets_the_same_verdicts() {
        let mut engines = vec![engine_of(
            "bench.yaml",
            &crate::bench::models::model_set(100),
        )];
        for f in ["bank.yaml", "database.yaml", "http-errors.yaml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/models")
                .join(f);
            engines.push(engine_of(f, &std::fs::read_to_string(path).unwrap()));
        }
        let ctx = EvalContext::default();
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(3));
        let mut compared = 0;
        for _ in 0..10 {
            for spans in raw_traces(&g.next_batch(400).request) {
                let whole = build_trace(&spans).unwrap();
                for engine in &engines {
                    let keep = Arc::clone(engine.key_set());
                    let part = build_with(&spans, |id| TraceBuilder::keeping(id, keep)).unwrap();
                    let a = format!("{:?}", engine.evaluate(&whole, &ctx));
                    let b = format!("{:?}", engine.evaluate(&part, &ctx));
                    assert_eq!(a, b);
                    compared += 1;
                }
            }
        }
        assert!(compared > 1000, "{compared}");
    }

    /// Keys are looked up by their bytes when a trace is built for an
    /// engine: a key no model reads is not decoded, even if it is not
    /// UTF-8 (the whole trace, which prost would refuse, is not built), and
    /// a read key of the same length as a kept one but other bytes is not
    /// taken for it.
    #[test]
    fn keys_no_model_reads_are_not_decoded() {
        let engine = engine_of(
            "m.yaml",
            r#"type: Model
spec:
  id: status
  match: span[name = "GET /"]
  specs:
    - selector: span[name = "GET /"]
      assertions:
        - attr:http.status = 200
"#,
        );
        let attr = |key: &str, v: i64| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            }),
            ..Default::default()
        };
        let span = Span {
            trace_id: vec![9; 16],
            span_id: vec![1; 8],
            name: "GET /".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                attr("Xot.read", 1),
                attr("http.statuX", 500),
                attr("http.status", 200),
            ],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut spans = raw_traces(&request).remove(0);
        let mut bytes = spans[0].bytes.to_vec();
        let at = bytes.windows(8).position(|w| w == b"Xot.read").unwrap();
        bytes[at] = 0xff;
        spans[0].bytes = Bytes::from(bytes);
        assert!(
            build_trace(&spans).is_none(),
            "prost refuses a key that is not UTF-8"
        );
        let trace = build_trace_for(&engine, &spans).expect("the key is never read");
        let v = engine.evaluate(&trace, &EvalContext::default());
        assert_eq!(v[0].verdict, Verdict::Pass, "{v:?}");
        assert_eq!(trace.attribute(0, "http.status"), Some(Value::Int(200)));
    }

    /// A trace with spans of these names (one trace, one resource).
    fn trace_named(names: &[&str]) -> Vec<RawSpan> {
        trace_named_from(1, names)
    }

    /// As [`trace_named`], span IDs counted from `first_id`: a later part
    /// of the same trace.
    fn trace_named_from(first_id: u8, names: &[&str]) -> Vec<RawSpan> {
        let spans = names
            .iter()
            .enumerate()
            .map(|(i, n)| Span {
                trace_id: vec![9; 16],
                span_id: vec![i as u8 + first_id; 8],
                name: (*n).into(),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        raw_traces(&request).remove(0)
    }

    /// A model that panics on a trace is counted in
    /// `tracecheck_model_errors_total{model}` and withheld; the other model
    /// on the same trace still gives its verdict, and the evaluator goes on.
    #[test]
    fn a_panicking_model_is_contained_and_counted() {
        let (mut evaluator, metrics, mut watcher, _dir) = evaluator_for(
            r#"type: Model
spec:
  id: panics
  match: span[name = "__panic__"]
  specs:
    - selector: span[name = "__panic__"]
---
type: Model
spec:
  id: fine
  match: span[name = "ok"]
  specs:
    - selector: span[name = "ok"]
"#,
        );
        for (id, names) in [(1u8, &["__panic__", "ok"][..]), (2, &["ok"][..])] {
            let mut spans = trace_named(names);
            for s in &mut spans {
                // A distinct trace ID per trace: rewrite it in place.
                let mut b = s.bytes.to_vec();
                b[2..18].copy_from_slice(&[id; 16]);
                s.bytes = Bytes::from(b);
            }
            let mut t = completed(spans, CompletionReason::idle, false, false);
            t.trace_id = TraceId([id; 16]);
            evaluator.consume(t);
        }
        let errors = |model: &str| {
            metrics
                .model_errors
                .get_or_create(&ModelLabels {
                    model: model.into(),
                })
                .get()
        };
        assert_eq!(errors("panics"), 1);
        assert_eq!(errors("fine"), 0);
        let mut seen = Vec::new();
        while let Ok(r) = watcher.try_recv() {
            seen.push((r.trace_id, r.model.to_string(), r.verdict));
        }
        assert_eq!(
            seen,
            vec![
                (TraceId([1; 16]), "fine".to_string(), Verdict::Pass),
                (TraceId([2; 16]), "fine".to_string(), Verdict::Pass),
            ]
        );
    }

    /// Selectors shared by several models are computed once per trace
    /// (`CSelector::memo`): evaluating all models together gives what
    /// evaluating each alone gives.
    #[test]
    fn shared_selectors_give_each_model_its_own_verdict() {
        let engine = engine_of("bench.yaml", &crate::bench::models::model_set(100));
        let ctx = EvalContext::default();
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(11));
        for spans in raw_traces(&g.next_batch(400).request) {
            let trace = build_trace_for(&engine, &spans).unwrap();
            let together: Vec<String> = engine
                .evaluate(&trace, &ctx)
                .iter()
                .map(|v| format!("{v:?}"))
                .collect();
            let alone: Vec<String> = (0..engine.len())
                .map(|i| format!("{:?}", engine.evaluate_model(i, &trace, &ctx).unwrap()))
                .collect();
            assert_eq!(together, alone);
        }
    }

    #[test]
    fn a_span_that_is_not_protobuf_gives_no_trace() {
        let request = TrafficGenerator::new(TrafficMix::default(), Rng::new(1))
            .next_trace()
            .to_request();
        let mut spans = raw_traces(&request).remove(0);
        spans[0].bytes = Bytes::from_static(&[0x0a, 0x10, 0x01]);
        assert!(build_trace(&spans).is_none());
    }

    /// An evaluator over `yaml`'s models, its metrics, and a watcher of
    /// every verdict it publishes.
    fn evaluator_for(
        yaml: &str,
    ) -> (
        Evaluator,
        Arc<Metrics>,
        crate::evaluator::feed::Listener,
        tempfile::TempDir,
    ) {
        use prometheus_client::registry::Registry;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("models.yaml"), yaml).unwrap();
        let metrics = Arc::new(Metrics::new(&mut Registry::default()));
        let (registry, report) = ModelRegistry::load(
            vec![ModelSource::Path {
                path: dir.path().to_owned(),
                optional: false,
            }],
            Arc::clone(&metrics),
        );
        assert!(report.errors.is_empty(), "{report:?}");
        let verdicts = VerdictFeed::new(64);
        let watcher = verdicts.subscribe(true);
        let evaluator = Evaluator::new(
            Arc::new(registry),
            Arc::new(ResultStore::default()),
            Arc::clone(&metrics),
            LinksConfig::default(),
            verdicts,
            None,
        )
        // The test spans start at 1 ns: long before the evaluator started.
        .started_at(None);
        (evaluator, metrics, watcher, dir)
    }

    fn completed(
        spans: Vec<RawSpan>,
        reason: CompletionReason,
        early: bool,
        late: bool,
    ) -> CompletedTrace {
        let now = Instant::now();
        CompletedTrace {
            trace_id: TraceId([9; 16]),
            reason,
            early,
            late,
            rootless: false,
            truncated: false,
            unreadable: false,
            bytes: 0,
            spans,
            own_spans: 0,
            first_seen: now,
            last_seen: now,
            due: now,
            completed_at: now,
            charge: None,
        }
    }

    /// As [`completed`] (not early), for trace `[id; 16]`.
    fn completed_as(
        id: u8,
        spans: Vec<RawSpan>,
        reason: CompletionReason,
        late: bool,
    ) -> CompletedTrace {
        let mut t = completed(spans, reason, false, late);
        t.trace_id = TraceId([id; 16]);
        t
    }

    fn count(metrics: &Metrics, model: &str, verdict: &str) -> u64 {
        metrics
            .model_verdicts
            .get_or_create(&super::super::metrics::VerdictLabels {
                model: model.into(),
                verdict: verdict.into(),
            })
            .get()
    }

    fn inconclusive(metrics: &Metrics, reason: &'static str) -> u64 {
        metrics
            .inconclusive
            .get_or_create(&InconclusiveLabels { reason })
            .get()
    }

    fn flipped(metrics: &Metrics, model: &str, from: &'static str, to: &'static str) -> u64 {
        metrics
            .verdicts_flipped
            .get_or_create(&FlipLabels {
                model: model.into(),
                from,
                to,
            })
            .get()
    }

    fn late(metrics: &Metrics, merged: &'static str) -> u64 {
        metrics
            .late_spans
            .get_or_create(&LateLabels { merged })
            .get()
    }

    const EXISTS_AND_NEVER: &str = r#"type: Model
spec:
  id: charged
  match: span[name = "checkout"]
  specs:
    - selector: span[name = "charge"]
---
type: Model
spec:
  id: never-release
  match: span[name = "checkout"]
  specs:
    - selector: span[name = "checkout"]
  not_expect:
    - selector: span[name = "release"]
"#;

    /// The early copy publishes only the pass no span can change; the
    /// settled trace decides the rest, and the early pass is not counted
    /// twice. Each model ends with exactly one verdict for the trace.
    #[test]
    fn an_existence_model_passes_early_and_the_rest_wait_to_settle() {
        let (mut e, metrics, mut watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let spans = trace_named(&["checkout", "charge"]);
        e.consume(completed(
            spans.clone(),
            CompletionReason::root,
            true,
            false,
        ));
        assert_eq!(count(&metrics, "charged", "pass"), 1);
        assert_eq!(
            count(&metrics, "never-release", "pass"),
            0,
            "a not_expect waits to settle"
        );
        let r = watcher.try_recv().unwrap();
        assert!(r.early && &*r.model == "charged");
        e.consume(completed(spans, CompletionReason::root, false, false));
        e.flush_skips();
        for m in ["charged", "never-release"] {
            let total: u64 = ["pass", "fail", "skip", "inconclusive"]
                .iter()
                .map(|v| count(&metrics, m, v))
                .sum();
            assert_eq!(total, 1, "{m}: one verdict per trace");
            assert_eq!(count(&metrics, m, "pass"), 1, "{m}");
        }
    }

    /// A span that comes after the trace settled is merged into it and
    /// every model evaluated again: a `not_expect` it breaks flips the
    /// counted pass to fail (counted as a flip, published), and the
    /// verdict counters still hold one verdict for the trace.
    #[test]
    fn a_late_span_that_breaks_a_settled_pass_is_a_counted_flip() {
        let (mut e, metrics, mut watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let all = trace_named(&["checkout", "charge", "release"]);
        e.consume(completed(
            all[..2].to_vec(),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "never-release", "pass"), 1);
        e.consume(completed(
            all[2..].to_vec(),
            CompletionReason::idle,
            false,
            true,
        ));
        assert_eq!(count(&metrics, "never-release", "pass"), 1);
        assert_eq!(count(&metrics, "never-release", "fail"), 0);
        let flips = flipped(&metrics, "never-release", "pass", "fail");
        assert_eq!(flips, 1);
        assert_eq!(late(&metrics, "true"), 1);
        let mut seen = Vec::new();
        while let Ok(r) = watcher.try_recv() {
            seen.push((r.model.to_string(), r.verdict, r.flipped_from));
        }
        assert!(
            seen.contains(&("never-release".into(), Verdict::Fail, Some(Verdict::Pass))),
            "{seen:?}"
        );
    }

    /// An exporter with `traces: failing` gets nothing of a passing trace;
    /// once late spans make it fail, the whole trace as merged, once; and
    /// after that each fragment that comes.
    #[test]
    fn a_trace_failed_by_late_spans_is_exported_whole_then_its_fragments() {
        use crate::exporter::config::TraceSelection;
        let (e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let (exports, mut sent) =
            crate::exporter::by_verdict::VerdictExports::channel(TraceSelection::Failing, false, 8);
        let mut e = e.with_exports(exports);
        let all = trace_named(&["checkout", "charge", "release", "refund"]);
        let fragment = |spans: &[RawSpan], reason| completed(spans.to_vec(), reason, false, true);
        e.consume(completed(
            all[..2].to_vec(),
            CompletionReason::root,
            false,
            false,
        ));
        assert!(sent.try_recv().is_err(), "a passing trace is not exported");
        e.consume(fragment(&all[2..3], CompletionReason::idle));
        assert_eq!(flipped(&metrics, "never-release", "pass", "fail"), 1);
        assert_eq!(sent.try_recv().expect("the trace, now failing").spans, 3);
        e.consume(fragment(&all[3..], CompletionReason::idle));
        assert_eq!(sent.try_recv().expect("the later fragment").spans, 1);
        assert!(sent.try_recv().is_err(), "nothing sent twice");
    }

    /// A trace cut short by shutdown is never a failure: its missing span
    /// may have gone elsewhere. A pass that could not change stays a pass.
    #[test]
    fn a_trace_cut_short_by_shutdown_is_inconclusive_not_failed() {
        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        e.consume(completed(
            trace_named(&["checkout"]),
            CompletionReason::shutdown,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "charged", "fail"), 0);
        assert_eq!(count(&metrics, "charged", "inconclusive"), 1);
        assert_eq!(count(&metrics, "never-release", "inconclusive"), 1);
        assert_eq!(inconclusive(&metrics, "shutdown"), 2);
    }

    /// A trace that began before the daemon started may have sent part of
    /// itself to the instance this one replaced: inconclusive, not fail.
    #[test]
    fn a_trace_begun_before_the_daemon_started_is_inconclusive() {
        let (e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let mut e = e.started_at(Some(SystemTime::now()));
        e.consume(completed(
            trace_named(&["checkout"]),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "charged", "fail"), 0);
        assert_eq!(count(&metrics, "charged", "inconclusive"), 1);
    }

    /// Spans of a trace that settled longer ago than the late-span window,
    /// whose ID is forgotten, come as a trace without a root: counted, but
    /// `inconclusive` (`late`), never a failure of their own.
    #[test]
    fn spans_older_than_the_late_window_are_inconclusive_not_failed() {
        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        // These spans ended at 2 ns past the epoch.
        let mut t = completed(
            trace_named(&["checkout", "release"]),
            CompletionReason::idle,
            false,
            false,
        );
        t.rootless = true;
        e.consume(t);
        e.flush_skips();
        for m in ["charged", "never-release"] {
            assert_eq!(count(&metrics, m, "fail"), 0, "{m}");
            assert_eq!(count(&metrics, m, "inconclusive"), 1, "{m}");
        }
        assert_eq!(inconclusive(&metrics, "late"), 2);
    }

    /// A model's `match` may be a span that comes late (a queue worker's):
    /// a trace no model applied to is kept all the same, and the late span
    /// makes the model apply: skip → fail is published as a flip.
    #[test]
    fn a_late_span_can_make_a_skipped_model_apply() {
        let (mut e, metrics, mut watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let all = trace_named(&["cart", "checkout", "release"]);
        e.consume(completed(
            all[..1].to_vec(),
            CompletionReason::root,
            false,
            false,
        ));
        e.consume(completed(
            all[1..].to_vec(),
            CompletionReason::idle,
            false,
            true,
        ));
        let flips = flipped(&metrics, "never-release", "skip", "fail");
        assert_eq!(flips, 1);
        let mut failed = Vec::new();
        while let Ok(r) = watcher.try_recv() {
            if r.verdict == Verdict::Fail {
                failed.push(r.model.to_string());
            }
        }
        assert!(failed.contains(&"never-release".to_string()), "{failed:?}");
    }

    /// Traces waiting on `within` are bounded in bytes: past the bound a
    /// new wait is not taken and the verdict is inconclusive (`bounds`),
    /// never a failure for a span that may still come.
    #[test]
    fn a_wait_past_its_byte_bound_is_inconclusive_not_failed() {
        const WORKER: &str = r#"type: Model
spec:
  id: fulfilled
  match: span[name = "checkout"]
  specs:
    - selector: span[name = "fulfil"]
  within: 30s
"#;
        let (e, metrics, _watcher, _dir) = evaluator_for(WORKER);
        let mut roomy = e;
        roomy.consume(completed(
            trace_named(&["checkout"]),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "fulfilled", "fail"), 0, "it waits");
        assert_eq!(count(&metrics, "fulfilled", "inconclusive"), 0, "it waits");

        let (e, metrics, _watcher, _dir) = evaluator_for(WORKER);
        let mut cramped = e.with_late_window(Duration::from_secs(300), 1, Duration::from_secs(6));
        cramped.consume(completed(
            trace_named(&["checkout"]),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "fulfilled", "fail"), 0);
        assert_eq!(count(&metrics, "fulfilled", "inconclusive"), 1);
        assert_eq!(inconclusive(&metrics, "bounds"), 1);
    }

    /// A span that cannot be decoded is never silent: every model the
    /// trace's other spans wake is `inconclusive` (`unreadable`), counted.
    #[test]
    fn a_trace_with_an_unreadable_span_is_inconclusive_not_hidden() {
        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let mut spans = trace_named(&["checkout", "release"]);
        spans[1].bytes = Bytes::from_static(&[0x0a, 0x10, 0x01]);
        e.consume(completed(spans, CompletionReason::root, false, false));
        for m in ["charged", "never-release"] {
            assert_eq!(count(&metrics, m, "inconclusive"), 1, "{m}");
            assert_eq!(count(&metrics, m, "pass") + count(&metrics, m, "fail"), 0);
        }
        assert_eq!(inconclusive(&metrics, "unreadable"), 2);
    }

    /// A trace some of whose spans the receivers refused (partial
    /// success) is knowingly incomplete: what would have been a `fail` (or
    /// a pass a later span could change) is `inconclusive` (`unreadable`),
    /// counted; a pass no span could change stays a pass. The same trace
    /// unmarked fails.
    #[test]
    fn a_trace_that_lost_spans_at_ingest_is_inconclusive_not_failed() {
        let marked = |names: &[&str]| {
            let mut t = completed(trace_named(names), CompletionReason::root, false, false);
            t.unreadable = true;
            t
        };
        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        e.consume(marked(&["checkout"]));
        assert_eq!(count(&metrics, "charged", "fail"), 0);
        assert_eq!(count(&metrics, "charged", "inconclusive"), 1);
        assert_eq!(count(&metrics, "never-release", "pass"), 0);
        assert_eq!(count(&metrics, "never-release", "inconclusive"), 1);
        assert_eq!(inconclusive(&metrics, "unreadable"), 2);

        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        e.consume(marked(&["checkout", "charge"]));
        assert_eq!(count(&metrics, "charged", "pass"), 1, "a final pass");
        assert_eq!(count(&metrics, "never-release", "inconclusive"), 1);

        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        e.consume(completed(
            trace_named(&["checkout"]),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "charged", "fail"), 1, "unmarked, it fails");
    }

    /// A refused span of a trace already judged comes as a late fragment
    /// with no span: a pass it could have changed becomes `inconclusive`
    /// (published as a flip); a pass no span could change stands.
    #[test]
    fn a_span_refused_after_its_trace_settled_flips_its_changeable_passes() {
        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        e.consume(completed(
            trace_named(&["checkout", "charge"]),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "never-release", "pass"), 1);
        let mut mark = completed(Vec::new(), CompletionReason::idle, false, true);
        mark.unreadable = true;
        e.consume(mark);
        let flips = |model: &str| flipped(&metrics, model, "pass", "inconclusive");
        assert_eq!(flips("never-release"), 1);
        assert_eq!(flips("charged"), 0);
    }

    /// Spans that come after their trace's spans were forgotten (past the
    /// byte bound for late spans: under overload, senders' retries split
    /// traces over many seconds) cannot be merged; every verdict they could
    /// have changed becomes inconclusive (`late`), so that a violation in
    /// them is never hidden behind a pass or a skip given without them.
    #[test]
    fn late_spans_of_a_trace_forgotten_early_make_what_they_could_change_inconclusive() {
        let yaml = format!(
            "{EXISTS_AND_NEVER}---\ntype: Model\nspec:\n  id: refunds\n  match: span[name = \"refund\"]\n  specs:\n    - selector: span[name = \"ledger\"]\n---\ntype: Model\nspec:\n  id: audits\n  match: span[name = \"audit\"]\n  specs:\n    - selector: span[name = \"ledger\"]\n"
        );
        let (e, metrics, _watcher, _dir) = evaluator_for(&yaml);
        // No bytes kept for late spans: the trace is forgotten as it settles.
        let mut e = e.with_late_window(Duration::from_secs(300), 0, Duration::from_secs(6));
        e.consume(completed(
            trace_named(&["checkout", "charge"]),
            CompletionReason::root,
            false,
            false,
        ));
        assert_eq!(count(&metrics, "charged", "pass"), 1);
        assert_eq!(count(&metrics, "never-release", "pass"), 1);
        e.consume(completed(
            trace_named(&["release", "refund"]),
            CompletionReason::idle,
            false,
            true,
        ));
        assert_eq!(late(&metrics, "false"), 2);
        let flips = |model: &str, from| flipped(&metrics, model, from, "inconclusive");
        // The release would have failed never-release, the refund may make
        // refunds apply: neither is left standing.
        assert_eq!(flips("never-release", "pass"), 1);
        assert_eq!(flips("refunds", "skip"), 1);
        // A pass no span can change stands; a model these spans cannot make
        // apply stays a skip.
        assert_eq!(flips("charged", "pass"), 0);
        assert_eq!(flips("audits", "skip"), 0);
        // The same spans again change nothing more.
        e.consume(completed(
            trace_named(&["release", "refund"]),
            CompletionReason::idle,
            false,
            true,
        ));
        assert_eq!(flips("never-release", "pass"), 1);
        assert_eq!(flips("refunds", "skip"), 1);
    }

    /// Settled traces are the one part of the account that grows without
    /// admission (their spans are copied out of their requests as they
    /// settle): past the limit a trace settled a moment ago gives way if
    /// it has no failure, and its late spans still cannot leave a pass
    /// standing; one with a failure stays, so a late span can undo it.
    #[test]
    fn past_the_memory_limit_recently_settled_passes_give_way_and_failures_stay() {
        use crate::memory::{MemoryAccount, Part};
        let (e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let memory = MemoryAccount::for_tests(1 << 20);
        let mut e = e
            .with_late_window(Duration::from_secs(300), 1 << 30, Duration::from_secs(60))
            .with_memory(&memory);
        let trace = |id: u8, names: &[&str]| {
            completed_as(id, trace_named(names), CompletionReason::root, false)
        };
        // Trace 1 passes both models; trace 2 fails `charged` (no charge).
        e.consume(trace(1, &["checkout", "charge"]));
        e.consume(trace(2, &["checkout"]));
        assert_eq!(count(&metrics, "charged", "fail"), 1);

        // The buffer takes the account past its limit: the next trace to
        // settle makes the settled traces without a failure give way.
        memory.add(Part::buffer, (1 << 20) - memory.used() + 1);
        e.consume(trace(3, &["checkout", "charge"]));
        // What is left past the limit is the forgotten trace's verdicts,
        // not its spans.
        assert!(
            memory.used() <= (1 << 20) + FORGOTTEN_OVERHEAD + 64,
            "account {} past its limit by more than one trace's verdicts",
            memory.used()
        );

        // A late span of the first makes its changeable pass inconclusive
        // (kept, it would have been merged into a failure).
        e.consume(completed_as(
            1,
            trace_named(&["release"]),
            CompletionReason::idle,
            true,
        ));
        assert_eq!(
            flipped(&metrics, "never-release", "pass", "inconclusive"),
            1
        );
        // The failing trace was kept: its late `charge` undoes the failure.
        e.consume(completed_as(
            2,
            trace_named(&["charge"]),
            CompletionReason::idle,
            true,
        ));
        assert_eq!(flipped(&metrics, "charged", "fail", "pass"), 1);
    }

    /// Late spans of a trace nothing is held of (its verdicts forgotten
    /// too: a long-lived trace's parts far apart) are not judged alone,
    /// which could fail a trace for the spans it lacks here; every model
    /// they could wake is made inconclusive instead of leaving what the
    /// first part was given (a skip, its root still to come) standing, and
    /// only once however many parts follow.
    #[test]
    fn late_spans_of_a_trace_nothing_is_held_of_make_what_they_could_wake_inconclusive() {
        let (mut e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let late_part = || {
            completed(
                trace_named(&["checkout", "release"]),
                CompletionReason::idle,
                false,
                true,
            )
        };
        e.consume(late_part());
        assert_eq!(count(&metrics, "never-release", "fail"), 0);
        assert_eq!(late(&metrics, "false"), 2);
        for model in ["charged", "never-release"] {
            assert_eq!(
                flipped(&metrics, model, "skip", "inconclusive"),
                1,
                "{model}"
            );
        }
        e.consume(late_part());
        assert_eq!(late(&metrics, "false"), 4);
        for model in ["charged", "never-release"] {
            assert_eq!(
                flipped(&metrics, model, "skip", "inconclusive"),
                1,
                "{model}"
            );
            assert_eq!(count(&metrics, model, "fail"), 0, "{model}");
        }
    }

    /// A long-lived trace's first part settles without its root (a skip:
    /// the model matches the root); traces with a root that settle after
    /// it go past the bytes kept for late spans. They are forgotten first,
    /// so when the root's part comes it is merged and the violation fails,
    /// rather than being made inconclusive against a forgotten part.
    #[test]
    fn a_rootless_part_outlasts_rooted_traces_in_the_byte_bound_so_its_root_can_fail_it() {
        let (e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let mut first = completed(
            trace_named(&["release"]),
            CompletionReason::idle,
            false,
            false,
        );
        first.rootless = true;
        let kept = span_bytes(&first.spans) + SETTLED_OVERHEAD;
        // Room for the root-less part and one more trace.
        let mut e = e.with_late_window(
            Duration::from_secs(300),
            kept + span_bytes(&trace_named(&["checkout", "charge"])) + SETTLED_OVERHEAD,
            Duration::from_secs(6),
        );
        e.consume(first);
        assert_eq!(
            metrics.settled_rootless_bytes.get(),
            i64::try_from(kept).unwrap(),
            "the gauge shows the root-less part"
        );
        for id in 1..=3 {
            e.consume(completed_as(
                id,
                trace_named(&["checkout", "charge"]),
                CompletionReason::root,
                false,
            ));
        }
        assert_eq!(count(&metrics, "never-release", "pass"), 3);
        let mut kept: Vec<TraceId> = e.settled.keys().copied().collect();
        kept.sort_by_key(|id| id.0);
        assert_eq!(
            kept,
            [TraceId([3; 16]), TraceId([9; 16])],
            "the root-less part and the newest trace are kept"
        );
        e.consume(completed(
            trace_named_from(2, &["checkout", "charge"]),
            CompletionReason::root,
            false,
            true,
        ));
        assert_eq!(late(&metrics, "true"), 2);
        assert_eq!(flipped(&metrics, "never-release", "skip", "fail"), 1);
        assert_eq!(flipped(&metrics, "charged", "skip", "pass"), 1);
        assert_eq!(inconclusive(&metrics, "late"), 0);
        assert_eq!(metrics.settled_rootless_bytes.get(), 0, "it has its root");
        // Merged with its root, it is forgotten as any trace with one.
        e.consume(completed_as(
            4,
            trace_named(&["checkout", "charge"]),
            CompletionReason::root,
            false,
        ));
        assert!(!e.settled.contains_key(&TraceId([9; 16])));
    }

    /// Root-less traces whose root never comes (orphans of an
    /// uninstrumented caller) hold at most half the bytes kept for late
    /// spans: a trace with a root settled after them is still kept, so its
    /// late span undoes a failure given without it instead of leaving a
    /// false failure standing.
    #[test]
    fn root_less_orphans_do_not_crowd_out_the_late_spans_of_traces_with_a_root() {
        let (e, metrics, _watcher, _dir) = evaluator_for(EXISTS_AND_NEVER);
        let rooted = span_bytes(&trace_named(&["checkout", "charge"])) + SETTLED_OVERHEAD;
        let mut e =
            e.with_late_window(Duration::from_secs(300), 4 * rooted, Duration::from_secs(6));
        let mut orphans = 0;
        for id in 1..=10 {
            let mut orphan = completed_as(
                id,
                trace_named(&["queue-work"; 6]),
                CompletionReason::idle,
                false,
            );
            orphan.rootless = true;
            orphans += span_bytes(&orphan.spans) + SETTLED_OVERHEAD;
            e.consume(orphan);
        }
        // Orphans were forgotten, off the gauge too.
        assert!(e.rootless_bytes < orphans);
        assert_eq!(
            metrics.settled_rootless_bytes.get(),
            i64::try_from(e.rootless_bytes).unwrap()
        );
        assert!(
            e.settled_bytes > 3 * rooted,
            "the orphans leave less room than a trace: {} bytes kept",
            e.settled_bytes
        );
        // `charged` fails: its charge comes late, from a retried request.
        e.consume(completed_as(
            20,
            trace_named(&["checkout"]),
            CompletionReason::root,
            false,
        ));
        assert_eq!(count(&metrics, "charged", "fail"), 1);
        assert!(e.settled.contains_key(&TraceId([20; 16])));
        e.consume(completed_as(
            20,
            trace_named_from(2, &["charge"]),
            CompletionReason::idle,
            true,
        ));
        assert_eq!(late(&metrics, "true"), 1, "merged");
        assert_eq!(flipped(&metrics, "charged", "fail", "pass"), 1);
    }
}
