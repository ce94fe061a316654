//! The evaluation stage: every completed trace gets a verdict from every
//! model in force; verdicts are counted, stored and handed to listeners.
//!
//! A model with `within` whose verdict would be `fail` only because an
//! expected span is missing waits: late fragments of the trace (which the
//! assembler hands on) are added and the model is evaluated again, until it
//! passes or `within` runs out. A model that panics is contained: counted in
//! `tracecheck_model_errors_total`, logged with the trace ID, and the other
//! models still give their verdicts.
//!
//! A model cannot be stopped safely in the middle of an evaluation (it runs
//! on this thread with no point at which to give up), so the evaluation
//! budget is a report, not a deadline: when evaluating the whole set on one
//! trace takes longer than `models.evaluation_budget`, the trace is
//! evaluated once more, one model at a time, and every model that alone
//! took longer than the budget is counted in
//! `tracecheck_model_slow_evaluations_total{model}` and logged with the trace
//! ID (at most one line per [`SLOW_LOG_INTERVAL`]). The first pass's
//! verdicts stand; a slow trace therefore costs about twice its time, which
//! is the price of naming the culprit without timing every model on every
//! trace.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::alerts::{AlertEvent, AlertSender};
use super::config::LinksConfig;
use super::feed::VerdictFeed;
use super::metrics::{Metrics, ModelLabels, SpecLabels};
use super::registry::{LoadedModels, ModelRegistry};
use super::store::{ResultStore, VerdictRecord};
use crate::assembler::{CompletedTrace, TraceConsumer};
use crate::engine::{EvalContext, ModelVerdict, Trace, TraceBuilder, Verdict};
use crate::ids::TraceId;
use crate::otlp::RawSpan;
use crate::results::metrics::CompletionReason;

/// The default of `models.evaluation_budget`.
pub const DEFAULT_EVALUATION_BUDGET: Duration = Duration::from_millis(100);

/// Slow evaluations are logged at most once per this interval; the counter
/// counts every one.
pub const SLOW_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Verdicts waiting for late spans of one trace.
struct Pending {
    spans: Vec<RawSpan>,
    models: Arc<LoadedModels>,
    waiting: Vec<Waiting>,
    completion: Completion,
}

/// What completed a trace, and whether spans of it were left out at a
/// per-trace bound: together they say whether its verdicts are incomplete.
#[derive(Debug, Clone, Copy)]
struct Completion {
    reason: CompletionReason,
    truncated: bool,
}

impl Completion {
    fn of(t: &CompletedTrace) -> Self {
        Self {
            reason: t.reason,
            truncated: t.truncated,
        }
    }

    /// Completed before its condition was met (evicted at a bound, or cut
    /// short by shutdown — an instance leaving a gateway tier), or spans
    /// left out at a per-trace bound: spans may be missing.
    fn incomplete(self) -> bool {
        matches!(
            self.reason,
            CompletionReason::evicted | CompletionReason::shutdown
        ) || self.truncated
    }
}

struct Waiting {
    model: usize,
    deadline: Instant,
    last: ModelVerdict,
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

/// The daemon's evaluation: [`Evaluator`]s on `models.evaluation_threads`
/// threads, each trace evaluated by one of them.
pub type EvaluatorPool = crate::assembler::Parallel<Evaluator>;

pub struct Evaluator {
    registry: Arc<ModelRegistry>,
    store: Arc<ResultStore>,
    metrics: Arc<Metrics>,
    links: LinksConfig,
    pending: HashMap<TraceId, Pending>,
    verdicts: VerdictFeed,
    alerts: Option<AlertSender>,
    /// Completed traces a test run waits for (`testrun`).
    tap: Option<Arc<crate::testrun::TraceWaiters>>,
    budget: Duration,
    /// When a slow evaluation was last logged, and how many were not
    /// logged since.
    slow_logged: Cell<Option<std::time::Instant>>,
    slow_unlogged: Cell<u64>,
    skips: Option<SkipBacklog>,
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
            pending: HashMap::new(),
            verdicts,
            alerts,
            tap: None,
            budget: DEFAULT_EVALUATION_BUDGET,
            slow_logged: Cell::new(None),
            slow_unlogged: Cell::new(0),
            skips: None,
        }
    }

    /// Notes which models one trace woke; the rest skipped it.
    fn note_woken(&mut self, models: &Arc<LoadedModels>, verdicts: &[ModelVerdict]) {
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
            for v in verdicts {
                if let Some(w) = b.woken.get_mut(v.model) {
                    *w += 1;
                }
            }
        }
    }

    /// From the trace's completion condition to its verdicts.
    fn observe_delay(&self, t: &CompletedTrace) {
        self.metrics.verdict_delay.observe(
            Instant::now()
                .saturating_duration_since(t.due)
                .as_secs_f64(),
        );
    }

    fn flush_skips(&mut self) {
        if let Some(b) = &mut self.skips {
            b.flush();
        }
    }

    /// Sets `models.evaluation_budget`.
    pub fn with_evaluation_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Also hands every completed trace (and late fragment) to `tap`.
    pub fn with_tap(mut self, tap: Arc<crate::testrun::TraceWaiters>) -> Self {
        self.tap = Some(tap);
        self
    }

    fn evaluate(&self, models: &LoadedModels, trace: &Trace) -> Vec<ModelVerdict> {
        let ctx = EvalContext::default();
        let engine = &models.engine;
        let started = std::time::Instant::now();
        // The verdicts of the models the trace wakes; the others skip it.
        let whole = catch_unwind(AssertUnwindSafe(|| engine.evaluate_woken(trace, &ctx)));
        let over_budget = started.elapsed() > self.budget;
        let whole = match whole {
            Ok(v) if !over_budget => return v,
            other => other,
        };
        // A model panicked, or the set was over budget: go one model at a
        // time to name the culprit(s); the rest still count.
        let mut one_by_one = Vec::with_capacity(engine.len());
        for i in 0..engine.len() {
            let started = std::time::Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| engine.evaluate_model(i, trace, &ctx)));
            self.check_budget(models, i, trace, started.elapsed());
            match result {
                Ok(v) => one_by_one.extend(v),
                Err(_) => self.model_panicked(models, i, trace),
            }
        }
        whole.unwrap_or(one_by_one)
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

    /// Counts and (rate-limited) logs one model's evaluation over budget.
    fn check_budget(&self, models: &LoadedModels, model: usize, trace: &Trace, took: Duration) {
        if took <= self.budget {
            return;
        }
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
                took_ms = took.as_secs_f64() * 1e3,
                budget_ms = self.budget.as_secs_f64() * 1e3,
                not_logged_since_last = self.slow_unlogged.get(),
                "Model evaluation took longer than models.evaluation_budget."
            );
            self.slow_logged.set(Some(now));
            self.slow_unlogged.set(0);
        } else {
            self.slow_unlogged.set(self.slow_unlogged.get() + 1);
        }
    }

    fn record(
        &self,
        models: &LoadedModels,
        trace_id: TraceId,
        trace: &Trace,
        spans: &[RawSpan],
        verdicts: impl IntoIterator<Item = (ModelVerdict, bool)>,
        completion: Completion,
    ) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut records = Vec::new();
        // One URL for every verdict of the trace, made only if one is kept.
        let mut trace_url: Option<Option<Arc<str>>> = None;
        // Passes are counted, and recorded as a sample (ResultStore::
        // admit_pass) or for a watcher that asked for them; failures always.
        let watching_passes = self.verdicts.wants(Verdict::Pass);
        let mut pass_admitted: Option<bool> = None;
        for (v, waited) in verdicts {
            let Some(counters) = models.counters.get(v.model) else {
                continue;
            };
            counters.record(v.verdict, &trace_id);
            if v.verdict == Verdict::Skip {
                continue;
            }
            let keep = v.verdict == Verdict::Fail
                || *pass_admitted.get_or_insert_with(|| self.store.admit_pass());
            if !keep && !watching_passes {
                continue;
            }
            let Some(model) = models.engine.models().get(v.model) else {
                continue;
            };
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
            let summary = (v.verdict == Verdict::Fail)
                .then(|| models.engine.render_summary(v.model, trace))
                .flatten();
            let Some((id, name)) = models.names.get(v.model) else {
                continue;
            };
            let trace_url = trace_url
                .get_or_insert_with(|| self.links.trace_url(&trace_id).map(Arc::from))
                .clone();
            let record = Arc::new(VerdictRecord {
                seq: self.store.next_seq(),
                trace_id,
                model: Arc::clone(id),
                model_name: Arc::clone(name),
                verdict: v.verdict,
                failures: v.failures,
                trace_url,
                summary,
                evaluated_at_unix_ms: now_ms,
                // Evicted early, or spans left out at a per-trace bound.
                incomplete: completion.incomplete(),
                completion_reason: completion.reason,
                waited_for_late_spans: waited,
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
        self.store.record(trace_id, spans, records);
    }

    fn settle(&mut self, trace_id: TraceId, now: Instant, force: bool) {
        let Some(mut p) = self.pending.remove(&trace_id) else {
            return;
        };
        let (done, still): (Vec<Waiting>, Vec<Waiting>) = p
            .waiting
            .drain(..)
            .partition(|w| force || w.deadline <= now);
        if !done.is_empty() {
            if let Some(trace) = build_trace_for(&p.models.engine, &p.spans) {
                let models = Arc::clone(&p.models);
                self.record(
                    &models,
                    trace_id,
                    &trace,
                    &p.spans,
                    done.into_iter().map(|w| (w.last, true)),
                    p.completion,
                );
            }
        }
        if !still.is_empty() {
            p.waiting = still;
            self.pending.insert(trace_id, p);
        }
    }
}

impl TraceConsumer for Evaluator {
    fn consume(&mut self, t: CompletedTrace) {
        if let Some(tap) = &self.tap {
            tap.deliver(&t);
        }
        let now = Instant::now();
        if t.late {
            let Some(mut p) = self.pending.remove(&t.trace_id) else {
                tracing::debug!(trace_id = %t.trace_id, spans = t.spans.len(), "Late spans for a trace whose verdicts are final.");
                return;
            };
            p.spans.extend(t.spans);
            p.completion.truncated |= t.truncated;
            let Some(trace) = build_trace_for(&p.models.engine, &p.spans) else {
                return;
            };
            let ctx = EvalContext::default();
            let mut final_now = Vec::new();
            let mut still = Vec::new();
            for mut w in p.waiting.drain(..) {
                let engine = &p.models.engine;
                let started = std::time::Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    engine.evaluate_model(w.model, &trace, &ctx)
                }));
                self.check_budget(&p.models, w.model, &trace, started.elapsed());
                match result {
                    Ok(Some(v)) if v.verdict == Verdict::Fail && v.awaiting_spans => {
                        w.last = v;
                        still.push(w);
                    }
                    Ok(Some(v)) => final_now.push((v, true)),
                    Ok(None) => still.push(w),
                    // Its verdict stays what it was before the late spans,
                    // settled at its deadline.
                    Err(_) => {
                        self.model_panicked(&p.models, w.model, &trace);
                        still.push(w);
                    }
                }
            }
            let models = Arc::clone(&p.models);
            self.record(
                &models,
                t.trace_id,
                &trace,
                &p.spans,
                final_now,
                p.completion,
            );
            if !still.is_empty() {
                p.waiting = still;
                self.pending.insert(t.trace_id, p);
            }
            return;
        }
        let models = self.registry.current();
        if !wakes_any(&models, &t.spans) {
            // Every model skips it: nothing to build or evaluate.
            self.note_woken(&models, &[]);
            self.observe_delay(&t);
            return;
        }
        let Some(trace) = build_trace_for(&models.engine, &t.spans) else {
            tracing::warn!(trace_id = %t.trace_id, "Trace could not be decoded for evaluation.");
            return;
        };
        let started = std::time::Instant::now();
        let verdicts = self.evaluate(&models, &trace);
        self.note_woken(&models, &verdicts);
        let failed = verdicts.iter().any(|v| v.verdict == Verdict::Fail);
        self.metrics.evaluation_duration.observe(
            started.elapsed().as_secs_f64(),
            failed.then(|| super::metrics::TraceExemplar {
                trace_id: t.trace_id.to_hex(),
            }),
            None,
        );
        let mut waiting = Vec::new();
        let mut final_now = Vec::new();
        for v in verdicts {
            let within = models.engine.models().get(v.model).and_then(|m| m.within);
            match within {
                Some(d)
                    if v.verdict == Verdict::Fail
                        && v.awaiting_spans
                        && t.reason != CompletionReason::shutdown =>
                {
                    waiting.push(Waiting {
                        model: v.model,
                        deadline: now + d,
                        last: v,
                    });
                }
                _ => final_now.push((v, false)),
            }
        }
        self.record(
            &models,
            t.trace_id,
            &trace,
            &t.spans,
            final_now,
            Completion::of(&t),
        );
        self.observe_delay(&t);
        if !waiting.is_empty() {
            self.store.hold(t.trace_id, &t.spans);
            self.pending.insert(
                t.trace_id,
                Pending {
                    spans: t.spans,
                    models,
                    waiting,
                    completion: Completion {
                        reason: t.reason,
                        truncated: t.truncated,
                    },
                },
            );
        }
    }

    fn tick(&mut self, now: Instant) {
        let due: Vec<TraceId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.waiting.iter().any(|w| w.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.settle(id, now, false);
        }
        self.flush_skips();
    }

    fn finish(&mut self) {
        let ids: Vec<TraceId> = self.pending.keys().copied().collect();
        for id in ids {
            self.settle(id, Instant::now(), true);
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
    models.engine.wakes_any(
        spans
            .iter()
            .filter_map(|s| crate::otlp::wire::span_trace_id_and_name(&s.bytes).ok())
            .map(|(_, name)| name),
    )
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
    use crate::otlp::{to_resource_spans, walk, LazyExportRequest};
    use crate::results::metrics::CompletionReason;
    use crate::results::registry::{ModelRegistry, ModelSource};

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
        let spans = names
            .iter()
            .enumerate()
            .map(|(i, n)| Span {
                trace_id: vec![9; 16],
                span_id: vec![i as u8 + 1; 8],
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
        use prometheus_client::registry::Registry;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("models.yaml"),
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
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new(&mut Registry::default()));
        let (registry, report) = ModelRegistry::load(
            vec![ModelSource::Path {
                path: dir.path().to_owned(),
                optional: false,
            }],
            Arc::clone(&metrics),
        );
        assert!(report.errors.is_empty(), "{report:?}");
        let verdicts = VerdictFeed::new(16);
        let mut watcher = verdicts.subscribe(true);
        let mut evaluator = Evaluator::new(
            Arc::new(registry),
            Arc::new(ResultStore::default()),
            Arc::clone(&metrics),
            LinksConfig::default(),
            verdicts,
            None,
        );
        let now = Instant::now();
        for (id, names) in [(1u8, &["__panic__", "ok"][..]), (2, &["ok"][..])] {
            let mut spans = trace_named(names);
            for s in &mut spans {
                // A distinct trace ID per trace: rewrite it in place.
                let mut b = s.bytes.to_vec();
                b[2..18].copy_from_slice(&[id; 16]);
                s.bytes = Bytes::from(b);
            }
            evaluator.consume(CompletedTrace {
                trace_id: TraceId([id; 16]),
                reason: CompletionReason::idle,
                late: false,
                truncated: false,
                bytes: 0,
                spans,
                first_seen: now,
                due: now,
                completed_at: now,
            });
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
}
