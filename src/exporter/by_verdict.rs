//! Exporters fed by verdicts: tail sampling by what the models said.
//!
//! An exporter with `traces: failing` (or `failing_or_inconclusive`) is not
//! fed by the receivers. The evaluator hands it each trace once that trace
//! has a counted verdict the exporter selects, whole (every span kept of it
//! by then), once; every fragment of the trace that comes after is handed
//! on too, so the copy downstream ends up as whole as tracecheck's. A team
//! keeps every span in a cheap store through an `all` exporter and the
//! failing traces in Jaeger through one of these.
//!
//! The evaluator runs on its own threads and must never wait on a
//! downstream: it offers a trace to a bounded channel, and a pump task per
//! exporter moves what the channel holds into that exporter's queue,
//! waiting while the queue is full. A trace offered to a full channel is
//! dropped and counted in `tracecheck_exporter_failed_spans_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::TraceSelection;
use super::{ForwardItem, ForwardQueue, QueueError};
use crate::engine::Verdict;
use crate::metrics::{ExporterLabels, Metrics};
use crate::otlp::RawSpan;

/// Exporters fed by verdicts a daemon can have: which have a trace is one
/// bit each of a `u64` kept with it.
pub const MAX_EXPORTERS: usize = 64;

/// Traces waiting between the evaluators and one exporter's queue. Failing
/// traces are few; this absorbs a burst while the queue is full.
const CHANNEL: usize = 1024;

/// How long a pump keeps trying to queue what is left once the daemon
/// stops (the exporter's own drain comes after).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Drops are logged at most once per this interval; the counter counts
/// every one.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The evaluators' end: every exporter fed by verdicts. Cheap to clone.
#[derive(Clone, Default)]
pub struct VerdictExports {
    targets: Arc<[Target]>,
}

struct Target {
    labels: ExporterLabels,
    selection: TraceSelection,
    attributes: bool,
    tx: mpsc::Sender<ForwardItem>,
    metrics: Arc<Metrics>,
    /// Unix seconds of the last drop logged, and drops since.
    drop_logged: AtomicU64,
    drops_unlogged: AtomicU64,
}

/// The daemon's end: the pumps, stopped after the evaluators are done.
pub struct Pumps {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// One exporter to feed by verdicts: its name, what it selects, whether the
/// root span carries the verdict, and its queue.
pub struct Feed {
    pub name: String,
    pub selection: TraceSelection,
    pub attributes: bool,
    pub queue: ForwardQueue,
}

impl VerdictExports {
    /// Starts a pump per exporter in `feeds`.
    pub fn start(feeds: Vec<Feed>, metrics: &Arc<Metrics>) -> (Self, Pumps) {
        let stop = CancellationToken::new();
        let mut targets = Vec::with_capacity(feeds.len());
        let mut tasks = Vec::with_capacity(feeds.len());
        for f in feeds {
            let (tx, rx) = mpsc::channel(CHANNEL);
            let labels = ExporterLabels { exporter: f.name };
            tasks.push(tokio::spawn(pump(
                f.queue,
                rx,
                stop.clone(),
                Arc::clone(metrics),
                labels.clone(),
            )));
            targets.push(Target {
                labels,
                selection: f.selection,
                attributes: f.attributes,
                tx,
                metrics: Arc::clone(metrics),
                drop_logged: AtomicU64::new(0),
                drops_unlogged: AtomicU64::new(0),
            });
        }
        (
            Self {
                targets: targets.into(),
            },
            Pumps { stop, tasks },
        )
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Hands a trace on to the exporters that select it.
    ///
    /// `exported` says which exporters have the trace already (a bit per
    /// exporter, kept with the trace by the caller): they get `fragment`,
    /// the spans that just came. The others get `whole` if `verdicts` (the
    /// trace's counted verdicts, by model) now hold one they select;
    /// `model_id` names a model for the root span's attributes.
    pub fn offer(
        &self,
        exported: &mut u64,
        verdicts: &[(usize, Verdict)],
        model_id: impl Fn(usize) -> Option<Arc<str>>,
        whole: &[RawSpan],
        fragment: &[RawSpan],
    ) {
        // At most [`MAX_EXPORTERS`]: the config refuses more.
        for (i, t) in self.targets.iter().enumerate().take(MAX_EXPORTERS) {
            let bit = 1u64 << i;
            let has_it = *exported & bit != 0;
            let spans = if has_it {
                fragment
            } else if verdicts.iter().any(|(_, v)| t.selection.selects(*v)) {
                whole
            } else {
                continue;
            };
            if spans.is_empty() {
                continue;
            }
            let marks = t.attributes.then(|| Marks::of(verdicts, &model_id));
            // Marked as sent only once it is: a trace dropped at a full
            // channel is offered whole again with its next fragment or
            // verdict, not followed by fragments of a trace never sent.
            if t.send(spans, marks.as_ref()) && !has_it {
                *exported |= bit;
            }
        }
    }
}

#[cfg(test)]
impl VerdictExports {
    /// One exporter `otlp/failing` whose channel (of `capacity`) the
    /// caller reads, in place of a pump and a queue.
    pub(crate) fn channel(
        selection: TraceSelection,
        attributes: bool,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<ForwardItem>) {
        let (tx, rx) = mpsc::channel(capacity);
        let metrics = Arc::new(Metrics::new(
            &mut prometheus_client::registry::Registry::default(),
        ));
        let target = Target {
            labels: ExporterLabels {
                exporter: "otlp/failing".into(),
            },
            selection,
            attributes,
            tx,
            metrics,
            drop_logged: AtomicU64::new(0),
            drops_unlogged: AtomicU64::new(0),
        };
        (
            Self {
                targets: vec![target].into(),
            },
            rx,
        )
    }
}

impl TraceSelection {
    fn selects(self, v: Verdict) -> bool {
        match self {
            TraceSelection::All => false,
            TraceSelection::Failing => v == Verdict::Fail,
            TraceSelection::FailingOrInconclusive => {
                matches!(v, Verdict::Fail | Verdict::Inconclusive)
            }
        }
    }
}

/// The attributes put on a root span: the trace's worst verdict and the
/// models that gave it.
struct Marks {
    verdict: &'static str,
    models: String,
}

impl Marks {
    fn of(verdicts: &[(usize, Verdict)], model_id: &impl Fn(usize) -> Option<Arc<str>>) -> Self {
        let worst = if verdicts.iter().any(|(_, v)| *v == Verdict::Fail) {
            Verdict::Fail
        } else {
            Verdict::Inconclusive
        };
        let mut ids: Vec<Arc<str>> = verdicts
            .iter()
            .filter(|(_, v)| *v == worst)
            .filter_map(|(m, _)| model_id(*m))
            .collect();
        ids.sort();
        ids.dedup();
        Self {
            verdict: worst.as_str(),
            models: ids.join(","),
        }
    }
}

impl Target {
    /// Whether the spans were handed on.
    fn send(&self, spans: &[RawSpan], marks: Option<&Marks>) -> bool {
        let item = match encode(spans, marks) {
            Ok(item) => item,
            Err(e) => {
                // Spans that reached the evaluator were decoded at ingest;
                // this is a bug, not a sender's error.
                tracing::error!(exporter = %self.labels.exporter, error = %e, "Cannot re-encode a selected trace; not exported.");
                self.dropped(spans.len());
                return false;
            }
        };
        let n = item.spans;
        if self.tx.try_send(item).is_err() {
            self.dropped(n);
            return false;
        }
        true
    }

    fn dropped(&self, spans: usize) {
        self.metrics
            .exporter_failed_spans
            .get_or_create(&self.labels)
            .inc_by(spans as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.drop_logged.load(Ordering::Relaxed);
        let unlogged = self.drops_unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        if now >= last + DROP_LOG_INTERVAL.as_secs()
            && self
                .drop_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.drops_unlogged.store(0, Ordering::Relaxed);
            tracing::warn!(
                exporter = %self.labels.exporter,
                traces = unlogged,
                "Selected traces dropped: this exporter's queue is full (its downstream is slow or down). Counted in tracecheck_exporter_failed_spans_total."
            );
        }
    }
}

/// The spans as `ResourceSpans` messages, with `marks` on each root span.
fn encode(spans: &[RawSpan], marks: Option<&Marks>) -> Result<ForwardItem, prost::DecodeError> {
    let mut resource_spans = crate::otlp::to_resource_spans(spans)?;
    if let Some(m) = marks {
        let roots = resource_spans
            .iter_mut()
            .flat_map(|r| r.scope_spans.iter_mut())
            .flat_map(|s| s.spans.iter_mut())
            .filter(|s| s.parent_span_id.is_empty());
        for root in roots {
            root.attributes
                .push(string_kv("tracecheck.verdict", m.verdict));
            root.attributes
                .push(string_kv("tracecheck.model", &m.models));
        }
    }
    let encoded = resource_spans
        .iter()
        .map(|r| Bytes::from(r.encode_to_vec()))
        .collect();
    Ok(ForwardItem::new(encoded, spans.len()))
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Moves selected traces into the exporter's queue, waiting while it is
/// full: the channel behind it absorbs the wait.
async fn pump(
    queue: ForwardQueue,
    mut rx: mpsc::Receiver<ForwardItem>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
) {
    let failed = metrics.exporter_failed_spans.get_or_create(&labels).clone();
    let mut stopping = Stopping {
        stop,
        deadline: None,
    };
    loop {
        let item = tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
            _ = stopping.stop.cancelled() => break,
        };
        if let Err(lost) = enqueue(&queue, item, &mut stopping).await {
            failed.inc_by(lost as u64);
        }
    }
    // Stopping: what the evaluators handed on before they finished still
    // goes, for a bounded time.
    while let Ok(item) = rx.try_recv() {
        if let Err(lost) = enqueue(&queue, item, &mut stopping).await {
            failed.inc_by(lost as u64);
        }
    }
}

/// The daemon's stop, and once it came, how long a full queue is waited
/// for ([`STOP_GRACE`] in all).
struct Stopping {
    stop: CancellationToken,
    deadline: Option<tokio::time::Instant>,
}

impl Stopping {
    /// Waits `backoff` (less if the stop comes); false once the grace after
    /// the stop would pass.
    async fn wait(&mut self, backoff: Duration) -> bool {
        if !self.stop.is_cancelled() {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => return true,
                _ = self.stop.cancelled() => {}
            }
        }
        let now = tokio::time::Instant::now();
        let deadline = *self.deadline.get_or_insert(now + STOP_GRACE);
        if now + backoff > deadline {
            return false;
        }
        tokio::time::sleep(backoff).await;
        true
    }
}

/// Queues `item`, retrying while the queue is full (and, once the daemon
/// stops, for at most [`STOP_GRACE`]). Err: the spans that could not be
/// queued.
async fn enqueue(
    queue: &ForwardQueue,
    item: ForwardItem,
    stopping: &mut Stopping,
) -> Result<(), usize> {
    let bytes = super::split::request_len(&item.resource_spans);
    let mut backoff = Duration::from_millis(10);
    loop {
        match queue.reserve(bytes) {
            Ok(permit) => {
                let n = item.spans;
                return permit.send(item).await.map_err(|_| n);
            }
            Err(QueueError::Full) => {
                if !stopping.wait(backoff).await {
                    return Err(item.spans);
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(QueueError::Unwritable | QueueError::Closed) => return Err(item.spans),
        }
    }
}

impl Pumps {
    /// Once the evaluators are done: moves what is left into the queues
    /// (for at most [`STOP_GRACE`]), then returns.
    pub async fn finish(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(names: &[(&str, bool)]) -> Vec<RawSpan> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: names
                        .iter()
                        .enumerate()
                        .map(|(i, (name, root))| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![i as u8 + 1; 8],
                            parent_span_id: if *root { vec![] } else { vec![1; 8] },
                            name: (*name).into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let lazy = crate::otlp::LazyExportRequest::decode(Bytes::from(request.encode_to_vec()))
            .expect("encoded by prost");
        crate::otlp::walk(lazy)
            .expect("a valid request")
            .spans
            .into_iter()
            .map(|k| k.span)
            .collect()
    }

    fn decoded(item: &ForwardItem) -> Vec<Span> {
        item.resource_spans
            .iter()
            .map(|b| ResourceSpans::decode(b.clone()).expect("encoded by us"))
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    fn exports(
        selection: TraceSelection,
        attributes: bool,
    ) -> (VerdictExports, mpsc::Receiver<ForwardItem>) {
        VerdictExports::channel(selection, attributes, 8)
    }

    fn id(m: usize) -> Option<Arc<str>> {
        Some(Arc::from(["checkout-paid", "stock-reserved"][m]))
    }

    #[test]
    fn a_failing_trace_goes_whole_once_then_its_late_fragments() {
        let (x, mut rx) = exports(TraceSelection::Failing, false);
        let whole = spans(&[("root", true), ("charge", false)]);
        let late = spans(&[("worker", false)]);
        let mut exported = 0;

        x.offer(&mut exported, &[(0, Verdict::Pass)], id, &whole, &[]);
        assert!(rx.try_recv().is_err(), "a passing trace is not selected");

        x.offer(&mut exported, &[(0, Verdict::Fail)], id, &whole, &[]);
        let first = rx.try_recv().expect("the failing trace");
        assert_eq!(first.spans, 2);
        // Evaluated again (a waited verdict): not sent again.
        x.offer(
            &mut exported,
            &[(0, Verdict::Fail), (1, Verdict::Fail)],
            id,
            &whole,
            &[],
        );
        assert!(rx.try_recv().is_err(), "sent once");
        // A late fragment follows the trace, even after a flip to pass.
        x.offer(&mut exported, &[(0, Verdict::Pass)], id, &whole, &late);
        let names: Vec<String> = decoded(&rx.try_recv().expect("the fragment"))
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["worker"]);
    }

    #[test]
    fn inconclusive_is_selected_only_when_asked_for() {
        let whole = spans(&[("root", true)]);
        let (failing, mut rx) = exports(TraceSelection::Failing, false);
        failing.offer(&mut 0, &[(0, Verdict::Inconclusive)], id, &whole, &[]);
        assert!(rx.try_recv().is_err());
        let (both, mut rx) = exports(TraceSelection::FailingOrInconclusive, false);
        both.offer(&mut 0, &[(0, Verdict::Inconclusive)], id, &whole, &[]);
        assert_eq!(rx.try_recv().expect("selected").spans, 1);
    }

    #[test]
    fn the_root_span_carries_the_verdict_and_the_failing_models() {
        let (x, mut rx) = exports(TraceSelection::FailingOrInconclusive, true);
        let whole = spans(&[("root", true), ("charge", false)]);
        let verdicts = [(1, Verdict::Fail), (0, Verdict::Fail), (2, Verdict::Pass)];
        x.offer(
            &mut 0,
            &verdicts,
            |m| if m < 2 { id(m) } else { Some("other".into()) },
            &whole,
            &[],
        );
        let sent = decoded(&rx.try_recv().expect("sent"));
        let attrs = |s: &Span| {
            s.attributes
                .iter()
                .map(|kv| {
                    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        other => panic!("{other:?}"),
                    };
                    (kv.key.clone(), v)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            attrs(&sent[0]),
            [
                ("tracecheck.verdict".to_owned(), "fail".to_owned()),
                (
                    "tracecheck.model".to_owned(),
                    "checkout-paid,stock-reserved".to_owned()
                ),
            ]
        );
        assert!(attrs(&sent[1]).is_empty(), "only the root is marked");
    }

    /// A queue that takes one request and is never read: full after it.
    fn stuck_queue(metrics: &Arc<Metrics>) -> (ForwardQueue, impl Send) {
        let (tx, rx) = mpsc::channel(1);
        let labels = ExporterLabels {
            exporter: "otlp/failing".into(),
        };
        let bytes = Arc::new(super::super::QueueBytes {
            used: AtomicU64::new(0),
            max: u64::MAX,
            gauge: Default::default(),
        });
        let queue = ForwardQueue {
            kind: super::super::QueueKind::Memory(tx, bytes),
            metrics: Arc::clone(metrics),
            labels,
            pending_spans: Arc::new(AtomicU64::new(0)),
        };
        (queue, rx)
    }

    /// A downstream that takes nothing does not hold shutdown: a pump
    /// waiting for room in a full queue gives up [`STOP_GRACE`] after the
    /// stop, counting what it could not queue.
    #[tokio::test(start_paused = true)]
    async fn a_full_queue_does_not_hold_shutdown_up() {
        let metrics = Arc::new(Metrics::new(
            &mut prometheus_client::registry::Registry::default(),
        ));
        let (queue, _unread) = stuck_queue(&metrics);
        let (x, pumps) = VerdictExports::start(
            vec![Feed {
                name: "otlp/failing".into(),
                selection: TraceSelection::Failing,
                attributes: false,
                queue,
            }],
            &metrics,
        );
        let first = spans(&[("root", true)]);
        let second = spans(&[("root", true), ("charge", false)]);
        x.offer(&mut 0, &[(0, Verdict::Fail)], id, &first, &[]);
        x.offer(&mut 0, &[(0, Verdict::Fail)], id, &second, &[]);
        // The pump takes the first, then waits for room for the second.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let stopped = tokio::time::timeout(STOP_GRACE * 2, pumps.finish()).await;
        assert!(stopped.is_ok(), "shutdown waited on a full queue");
        let failed = metrics
            .exporter_failed_spans
            .get_or_create(&ExporterLabels {
                exporter: "otlp/failing".into(),
            })
            .get();
        assert_eq!(failed, 2, "the trace that found no room is counted");
    }

    /// A trace dropped at a full channel is not marked as sent: it goes
    /// whole once there is room, not as a headless fragment.
    #[test]
    fn a_trace_dropped_at_a_full_channel_goes_whole_later() {
        let (x, mut rx) = VerdictExports::channel(TraceSelection::Failing, false, 1);
        let filler = spans(&[("other", true)]);
        x.offer(&mut 0, &[(0, Verdict::Fail)], id, &filler, &[]);
        let whole = spans(&[("root", true), ("charge", false)]);
        let mut exported = 0;
        x.offer(&mut exported, &[(0, Verdict::Fail)], id, &whole, &[]);
        assert_eq!(exported, 0, "dropped, so not marked");
        assert_eq!(rx.try_recv().expect("the filler").spans, 1);
        let late = spans(&[("worker", false)]);
        let mut merged = whole.clone();
        merged.extend(late.iter().cloned());
        x.offer(&mut exported, &[(0, Verdict::Fail)], id, &merged, &late);
        assert_eq!(rx.try_recv().expect("the trace, whole").spans, 3);
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let (x, _rx) = exports(TraceSelection::Failing, false);
        let whole = spans(&[("root", true), ("a", false), ("b", false)]);
        for _ in 0..10 {
            x.offer(&mut 0, &[(0, Verdict::Fail)], id, &whole, &[]);
        }
        let t = &x.targets[0];
        let failed = t
            .metrics
            .exporter_failed_spans
            .get_or_create(&t.labels)
            .get();
        assert_eq!(
            failed,
            2 * 3,
            "8 traces fit the channel, 2 of 3 spans did not"
        );
    }
}
