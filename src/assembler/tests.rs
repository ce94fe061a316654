use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::ids::SpanId;
use crate::metrics::{TruncateLabels, TruncateReason};
use crate::otlp::ScopeContext;

fn config() -> AssemblerConfig {
    AssemblerConfig {
        settle: Duration::from_secs(2),
        // As `settle`: a trace without a root gets no early copy here.
        idle_timeout: Duration::from_secs(2),
        root_settle: Duration::from_millis(500),
        max_trace_age: Duration::from_secs(10),
        max_traces: 100,
        max_spans: 1000,
        late_span_window: Duration::from_secs(60),
        ..AssemblerConfig::default()
    }
}

fn span(trace: u8, id: u8, root: bool) -> KeyedSpan {
    KeyedSpan {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([id; 8]),
        is_root: root,
        span: RawSpan {
            bytes: Bytes::from(vec![id]),
            scope: Arc::new(ScopeContext {
                resource: Bytes::new(),
                resource_schema_url: String::new(),
                scope: Bytes::new(),
                scope_schema_url: String::new(),
                copy_room: None,
                copy: None,
            }),
        },
    }
}

fn assembler(c: AssemblerConfig) -> Assembler {
    Assembler::new(c, Arc::new(Metrics::unregistered()))
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_completes_after_last_span() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.insert(vec![span(1, 1, false)], t0);
    a.insert(vec![span(1, 2, false)], t0 + Duration::from_secs(1));
    assert!(a
        .poll_completed(t0 + Duration::from_millis(2500))
        .is_empty());
    let done = a.poll_completed(t0 + Duration::from_secs(3));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].reason, CompletionReason::idle);
    assert_eq!(done[0].spans.len(), 2);
    assert_eq!(done[0].due, t0 + Duration::from_secs(3));
    assert_eq!(a.len(), (0, 0));
}

/// `root_settle` after the root, an early copy goes out and the trace stays
/// buffered; spans that come after it join the trace, which completes, whole,
/// only once it has been quiet for `settle`.
#[tokio::test(start_paused = true)]
async fn root_settle_hands_on_an_early_copy_and_the_trace_settles_later() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.insert(vec![span(1, 2, false), span(1, 1, true)], t0);
    let early = a.poll_completed(t0 + Duration::from_millis(500));
    assert_eq!(early.len(), 1);
    assert!(early[0].early);
    assert!(!early[0].rootless);
    assert_eq!(early[0].spans.len(), 2);
    assert_eq!(a.len(), (1, 2), "the early copy leaves the trace buffered");
    // A child exported by another service's batch, after the root.
    a.insert(vec![span(1, 3, false)], t0 + Duration::from_millis(1900));
    assert!(a.poll_completed(t0 + Duration::from_secs(3)).is_empty());
    let done = a.poll_completed(t0 + Duration::from_millis(3900));
    assert_eq!(done.len(), 1);
    assert!(!done[0].early && !done[0].late);
    assert_eq!(done[0].reason, CompletionReason::root);
    assert_eq!(done[0].spans.len(), 3);
    assert_eq!(a.len(), (0, 0));
}

/// Once its early point has passed a trace waits for `settle` (seconds)
/// holding its own bytes: a request that carried one span of it among
/// many others is not kept alive for its sake. Spans that come later are
/// handed on as they came, and say so.
#[tokio::test(start_paused = true)]
async fn a_trace_waiting_to_settle_keeps_its_own_bytes_not_its_requests() {
    let a = assembler(config());
    let t0 = Instant::now();
    // One request of 64 KiB, whose first bytes are trace 1's spans.
    let request = Bytes::from(vec![7u8; 64 << 10]);
    let scope = Arc::new(ScopeContext {
        resource: request.slice(100..140),
        resource_schema_url: String::new(),
        scope: Bytes::new(),
        scope_schema_url: String::new(),
        copy_room: None,
        copy: None,
    });
    let slice = |id: u8, range: std::ops::Range<usize>, root: bool| KeyedSpan {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([id; 8]),
        is_root: root,
        span: RawSpan {
            bytes: request.slice(range),
            scope: Arc::clone(&scope),
        },
    };
    a.insert(vec![slice(2, 0..40, false), slice(1, 40..100, true)], t0);
    let inside = |p: *const u8| request.as_ptr_range().contains(&p);
    let early = a.poll_completed(t0 + Duration::from_millis(500));
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].own_spans, 2);
    for s in &early[0].spans {
        assert!(!inside(s.bytes.as_ptr()) && !inside(s.scope.resource.as_ptr()));
    }
    drop(early);
    drop(scope);
    // Only the test's handle keeps the request now: the buffer holds none.
    let request = request
        .try_into_mut()
        .expect("no span holds the request any more");

    let later = Bytes::from(vec![8u8; 16]);
    let mut late = span(1, 3, false);
    late.span.bytes = later.clone();
    a.insert(vec![late], t0 + Duration::from_secs(1));
    let done = a.poll_completed(t0 + Duration::from_secs(3));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].spans.len(), 3);
    assert_eq!(done[0].own_spans, 2, "the span that came later is a slice");
    assert_eq!(&done[0].spans[0].bytes[..], &request[0..40]);
    assert_eq!(&done[0].spans[1].bytes[..], &request[40..100]);
    assert_eq!(done[0].spans[2].bytes.as_ptr(), later.as_ptr());
}

/// A long-lived trace that reaches no early point (spans keep coming, no
/// root) does not pin the requests its spans came in for `max_trace_age`:
/// `idle_timeout` after a span came, it is copied out of its request.
#[tokio::test(start_paused = true)]
async fn a_long_lived_trace_lets_go_of_its_requests_after_idle_timeout() {
    let a = assembler(config());
    let t0 = Instant::now();
    let mut requests: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 64 << 10])).collect();
    let scope = Arc::new(ScopeContext {
        resource: Bytes::new(),
        resource_schema_url: String::new(),
        scope: Bytes::new(),
        scope_schema_url: String::new(),
        copy_room: None,
        copy: None,
    });
    for (i, request) in requests.iter().enumerate() {
        let at = t0 + Duration::from_secs(i as u64);
        a.insert(
            vec![KeyedSpan {
                trace_id: TraceId([1; 16]),
                span_id: SpanId([i as u8 + 1; 8]),
                is_root: false,
                span: RawSpan {
                    bytes: request.slice(0..50),
                    scope: Arc::clone(&scope),
                },
            }],
            at,
        );
        assert!(a.poll_completed(at).is_empty(), "never quiet for settle");
    }
    // Spans 0-2 were copied out at t0 + 2 s; span 3 came at t0 + 3 s.
    let last = requests.pop().expect("four requests");
    for (i, request) in requests.into_iter().enumerate() {
        assert!(request.try_into_mut().is_ok(), "request {i} still pinned");
    }
    let done = a.poll_completed(t0 + Duration::from_secs(5));
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].spans.len(), done[0].own_spans), (4, 3));
    for (i, s) in done[0].spans.iter().enumerate() {
        assert_eq!(&s.bytes[..], &[i as u8; 50][..]);
    }
    assert_eq!(done[0].spans[3].bytes.as_ptr(), last.as_ptr());
}

/// While no model in force can pass early, no early copy is handed on;
/// the trace still waits with its own bytes and settles as before.
#[tokio::test(start_paused = true)]
async fn without_models_that_can_pass_early_no_early_copy_goes_out() {
    let a = assembler(config());
    a.early_gate()
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    a.insert(vec![span(1, 2, false), span(1, 1, true)], t0);
    assert!(a.poll_completed(t0 + Duration::from_millis(500)).is_empty());
    assert_eq!(a.len(), (1, 2));
    let done = a.poll_completed(t0 + Duration::from_secs(2));
    assert_eq!(done.len(), 1);
    assert!(!done[0].early);
    assert_eq!((done[0].spans.len(), done[0].own_spans), (2, 2));

    a.early_gate()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    a.insert(vec![span(2, 1, true)], t0 + Duration::from_secs(3));
    let early = a.poll_completed(t0 + Duration::from_millis(3500));
    assert_eq!(early.len(), 1);
    assert!(early[0].early);
}

/// A trace without a root gets its early copy `idle_timeout` after its last
/// span and settles `settle` after it, marked root-less.
#[tokio::test(start_paused = true)]
async fn a_rootless_trace_is_marked_and_settles_when_quiet() {
    let a = assembler(AssemblerConfig {
        idle_timeout: Duration::from_secs(1),
        ..config()
    });
    let t0 = Instant::now();
    a.insert(vec![span(1, 2, false)], t0);
    let early = a.poll_completed(t0 + Duration::from_secs(1));
    assert_eq!(early.len(), 1);
    assert!(early[0].early && early[0].rootless);
    let done = a.poll_completed(t0 + Duration::from_secs(2));
    assert_eq!(done.len(), 1);
    assert!(!done[0].early && done[0].rootless);
    assert_eq!(done[0].reason, CompletionReason::idle);
}

/// The default `settle` covers the OpenTelemetry SDKs' 5 s batching: a
/// child that comes 5 s after its root is part of the trace, not late.
#[tokio::test(start_paused = true)]
async fn by_default_a_span_five_seconds_after_the_root_is_not_late() {
    let a = assembler(AssemblerConfig::default());
    let t0 = Instant::now();
    a.insert(vec![span(1, 1, true)], t0);
    let early = a.poll_completed(t0 + Duration::from_millis(600));
    assert!(early.iter().all(|c| c.early), "{early:?}");
    a.insert(vec![span(1, 2, false)], t0 + Duration::from_secs(5));
    let mut done = Vec::new();
    for ms in (0..=12_000).step_by(100) {
        done.extend(a.poll_completed(t0 + Duration::from_millis(ms)));
    }
    let whole: Vec<_> = done.iter().filter(|c| !c.early).collect();
    assert_eq!(whole.len(), 1, "{done:?}");
    assert_eq!(whole[0].spans.len(), 2);
    assert!(!whole[0].late);
}

#[tokio::test(start_paused = true)]
async fn max_age_caps_a_trace_that_never_goes_idle() {
    let a = assembler(config());
    let t0 = Instant::now();
    for s in 0..12u8 {
        let now = t0 + Duration::from_secs(u64::from(s));
        a.insert(vec![span(1, s + 1, false)], now);
        let done = a.poll_completed(now);
        if s < 10 {
            assert!(done.is_empty(), "completed early at {s}s");
        } else {
            assert_eq!(done.len(), 1);
            assert_eq!(done[0].reason, CompletionReason::max_age);
            return;
        }
    }
    panic!("never completed");
}

#[tokio::test(start_paused = true)]
async fn late_spans_are_counted_and_handed_on_as_a_fragment() {
    let metrics = Arc::new(Metrics::unregistered());
    let a = Assembler::new(config(), Arc::clone(&metrics));
    let t0 = Instant::now();
    a.insert(vec![span(1, 1, true)], t0);
    assert!(a.poll_completed(t0 + Duration::from_secs(1))[0].early);
    let settled = a.poll_completed(t0 + Duration::from_secs(3));
    assert!(!settled[0].early && !settled[0].late);
    a.insert(
        vec![span(1, 2, false), span(1, 3, false)],
        t0 + Duration::from_secs(5),
    );
    let done = a.poll_completed(t0 + Duration::from_secs(8));
    assert_eq!(done.len(), 1);
    assert!(done[0].late);
    assert_eq!(done[0].spans.len(), 2);
    // The trace, then its late fragment: two completions, one of them late.
    assert_eq!(metrics.late_fragments.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn bounds_refuse_then_evict_the_oldest() {
    let a = assembler(AssemblerConfig {
        max_traces: 10,
        ..config()
    });
    let t0 = Instant::now();
    for i in 0..10u8 {
        assert!(a.admit(0, 0, 0).is_ok());
        a.insert(
            vec![span(i, 1, false)],
            t0 + Duration::from_millis(u64::from(i)),
        );
    }
    let full = a.admit(0, 0, 0).unwrap_err();
    assert!(
        matches!(full, AdmitError::Full { traces: 10, .. }),
        "{full:?}"
    );
    let done = a.poll_completed(t0 + Duration::from_millis(20));
    // Down to 90% of 10: one trace evicted, the oldest.
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].reason, CompletionReason::evicted);
    assert_eq!(done[0].trace_id, TraceId([0; 16]));
    assert!(a.admit(0, 0, 0).is_ok());
}

/// Eviction takes the oldest traces first across every shard, however the
/// traces' IDs spread over the shards.
#[tokio::test(start_paused = true)]
async fn eviction_takes_the_oldest_first_across_shards() {
    let a = assembler(AssemblerConfig {
        max_traces: 100,
        ..config()
    });
    let t0 = Instant::now();
    // Trace i first seen at (i × 37) mod 100 ms: age and ID order differ.
    let seen = |i: u8| t0 + Duration::from_millis(u64::from(i) * 37 % 100);
    let mut order: Vec<u8> = (0..100).collect();
    order.sort_by_key(|&i| seen(i));
    for &i in &order {
        a.insert(vec![span(i, 1, false)], seen(i));
    }
    // Full: the refusal asks for eviction, down to 90 of 100.
    assert!(a.admit(0, 0, 0).is_err());
    let done = a.poll_completed(t0 + Duration::from_millis(150));
    let evicted: Vec<TraceId> = done
        .iter()
        .filter(|c| c.reason == CompletionReason::evicted)
        .map(|c| c.trace_id)
        .collect();
    let oldest: Vec<TraceId> = order[..10].iter().map(|&i| TraceId([i; 16])).collect();
    assert_eq!(evicted, oldest);
}

#[tokio::test(start_paused = true)]
async fn drain_completes_everything_as_shutdown() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.insert((0..50u8).map(|i| span(i, 1, false)).collect(), t0);
    let done = a.drain(t0);
    assert_eq!(done.len(), 50);
    assert!(done.iter().all(|c| c.reason == CompletionReason::shutdown));
    assert!(a.is_empty());
}

#[tokio::test(start_paused = true)]
async fn run_sends_completed_traces_on_the_channel() {
    let a = Arc::new(assembler(config()));
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&a).run(tx, cancel.clone()));
    a.insert(vec![span(7, 1, true)], Instant::now());
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.trace_id, TraceId([7; 16]));
    // Completed within one tick of its condition.
    assert!(got.completed_at - got.due <= TICK);
    cancel.cancel();
    task.await.unwrap();
}

/// A span of `trace` whose encoding is `size` bytes.
fn sized_span(trace: u8, id: u8, size: usize) -> KeyedSpan {
    let mut s = span(trace, id, false);
    s.span.bytes = Bytes::from(vec![id; size]);
    s
}

#[tokio::test(start_paused = true)]
async fn spans_past_max_spans_per_trace_are_left_out_and_the_trace_marked() {
    let metrics = Arc::new(Metrics::unregistered());
    let a = Assembler::new(
        AssemblerConfig {
            max_spans_per_trace: 3,
            ..config()
        },
        Arc::clone(&metrics),
    );
    let t0 = Instant::now();
    let first = a.insert((1..=2).map(|i| span(1, i, false)).collect(), t0);
    assert_eq!(first.truncated, None);
    // Other traces are not affected by one trace's bound.
    let second = a.insert(
        (3..=5)
            .map(|i| span(1, i, false))
            .chain([span(2, 1, false)])
            .collect(),
        t0,
    );
    assert_eq!(
        second.truncated,
        Some((TruncateReason::max_spans_per_trace, 2))
    );
    assert_eq!(a.len(), (2, 4));
    let mut done = a.poll_completed(t0 + Duration::from_secs(3));
    done.sort_by_key(|c| c.trace_id);
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].spans.len(), 3);
    assert!(done[0].truncated);
    assert!(!done[1].truncated);
    assert_eq!(
        metrics
            .buffer_truncated_spans
            .get_or_create(&TruncateLabels {
                reason: TruncateReason::max_spans_per_trace
            })
            .get(),
        2
    );
    assert_eq!(a.bytes(), 0, "accounting returns to zero");
}

#[tokio::test(start_paused = true)]
async fn spans_past_max_bytes_per_trace_are_left_out_but_the_first_is_kept() {
    let a = assembler(AssemblerConfig {
        max_bytes_per_trace: 1000,
        ..config()
    });
    let t0 = Instant::now();
    // The first span alone is over the bound and still kept.
    a.insert(vec![sized_span(1, 1, 2000)], t0);
    let out = a.insert(vec![sized_span(1, 2, 10)], t0);
    assert_eq!(
        out.truncated,
        Some((TruncateReason::max_bytes_per_trace, 1))
    );
    let done = a.poll_completed(t0 + Duration::from_secs(3));
    assert_eq!(done[0].spans.len(), 1);
    assert!(done[0].truncated);
}

#[tokio::test(start_paused = true)]
async fn above_the_soft_memory_limit_admission_is_refused() {
    let a = assembler(AssemblerConfig {
        max_memory_mib: 1,
        ..config()
    });
    let t0 = Instant::now();
    assert!(a.admit(0, 0, 0).is_ok());
    // As the receivers hand it over: its request counted by the account.
    let mut big = sized_span(1, 1, 900 * 1024);
    big.span.bytes = a.memory().track(big.span.bytes);
    a.insert(vec![big], t0);
    let refused = a.admit(0, 0, 0).unwrap_err();
    assert!(matches!(refused, AdmitError::Memory { .. }), "{refused:?}");
    // Below the hard limit nothing is evicted: the trace completes normally.
    assert!(a.poll_completed(t0 + Duration::from_millis(20)).is_empty());
    let done = a.poll_completed(t0 + Duration::from_secs(3));
    assert_eq!(done[0].reason, CompletionReason::idle);
    // Still counted while the evaluators have it…
    assert!(a.admit(0, 0, 0).is_err());
    drop(done);
    // …and not once it is gone.
    assert!(a.admit(0, 0, 0).is_ok());
    assert_eq!(a.bytes(), 0);
    // What is left is its ID, remembered for late spans.
    assert_eq!(a.memory().used(), super::shard::RECENT_OVERHEAD);
}

#[tokio::test(start_paused = true)]
async fn the_memory_account_follows_spans_from_request_to_buffer_to_evaluation() {
    use crate::memory::Part;
    let a = assembler(config());
    let m = Arc::clone(a.memory());
    let t0 = Instant::now();
    let mut keyed = vec![sized_span(1, 1, 1000), sized_span(1, 2, 3000)];
    keyed[0].is_root = true;
    for k in &mut keyed {
        k.span.bytes = m.track(k.span.bytes.clone());
    }
    a.insert(keyed, t0);
    // Slices of their request: the buffer owns only its bookkeeping.
    assert_eq!(m.get(Part::requests), 4000);
    assert_eq!(m.get(Part::buffer), a.bytes() - 4000);
    // The early point copies them out: the request is let go.
    let early = a.poll_completed(t0 + a.config().root_settle);
    drop(early);
    assert_eq!(m.get(Part::requests), 0);
    assert_eq!(m.get(Part::buffer), a.bytes());
    // Completed, the trace is charged to evaluation until it is dropped.
    let done = a.poll_completed(t0 + a.config().settle + Duration::from_secs(1));
    assert_eq!(done.len(), 1);
    // Of the buffer, only its ID is left, remembered for late spans.
    assert_eq!(m.get(Part::buffer), super::shard::RECENT_OVERHEAD);
    assert_eq!(m.get(Part::evaluating), done[0].bytes);
    drop(done);
    assert_eq!(m.used(), super::shard::RECENT_OVERHEAD);
    // Forgotten after `late_span_window`.
    drop(a.poll_completed(t0 + a.config().late_span_window + Duration::from_secs(10)));
    assert_eq!(m.used(), 0);
}

#[tokio::test(start_paused = true)]
async fn above_the_hard_memory_limit_the_oldest_are_evicted_to_the_soft_limit() {
    let a = assembler(AssemblerConfig {
        max_memory_mib: 1,
        ..config()
    });
    let t0 = Instant::now();
    // Five traces of 300 KiB: 1.5 MiB, admitted together past the limit.
    for i in 0..5u8 {
        a.insert(
            vec![sized_span(i, 1, 300 * 1024)],
            t0 + Duration::from_millis(u64::from(i)),
        );
    }
    assert!(a.bytes() > a.config().max_memory_bytes());
    let done = a.poll_completed(t0 + Duration::from_millis(10));
    // 1.5 MiB down to under 0.8 MiB: the three oldest go.
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|c| c.reason == CompletionReason::evicted));
    let mut evicted: Vec<u8> = done.iter().map(|c| c.trace_id.0[0]).collect();
    evicted.sort_unstable();
    assert_eq!(evicted, [0, 1, 2]);
    assert!(a.bytes() <= a.config().soft_memory_bytes());
    assert!(a.admit(0, 0, 0).is_ok());
}

/// Records which trace IDs it saw and whether it was finished.
#[derive(Default)]
struct Recording {
    seen: Vec<TraceId>,
    finished: bool,
}

impl TraceConsumer for Recording {
    fn consume(&mut self, trace: CompletedTrace) {
        self.seen.push(trace.trace_id);
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

/// An empty completed trace `id`, as the assembler hands one on.
fn completed(id: u8, late: bool, now: Instant) -> CompletedTrace {
    CompletedTrace {
        trace_id: TraceId([id; 16]),
        reason: CompletionReason::idle,
        early: false,
        late,
        rootless: false,
        truncated: false,
        unreadable: false,
        bytes: 0,
        spans: Vec::new(),
        own_spans: 0,
        first_seen: now,
        last_seen: now,
        due: now,
        completed_at: now,
        charge: None,
    }
}

/// Panics on trace 13 and on its first tick.
#[derive(Default)]
struct Flaky {
    seen: Vec<TraceId>,
    ticked: bool,
}

impl TraceConsumer for Flaky {
    fn consume(&mut self, trace: CompletedTrace) {
        if trace.trace_id == TraceId([13; 16]) {
            panic!("a bug on trace 13");
        }
        self.seen.push(trace.trace_id);
    }
    fn tick(&mut self, _now: Instant) {
        if !self.ticked {
            self.ticked = true;
            panic!("a bug in the tick");
        }
    }
}

/// A panic in a consumer (a bug outside the per-model containment) costs
/// that trace or that tick, counted; the thread and every trace hashed to
/// it live on.
#[test]
fn a_consumer_that_panics_is_counted_and_its_thread_lives_on() {
    let now = Instant::now();
    let panics = prometheus_client::metrics::counter::Counter::<u64>::default();
    let mut p = Parallel::counting_panics(vec![Flaky::default()], panics.clone()).unwrap();
    let trace = |id: u8| completed(id, false, now);
    for id in 0..20u8 {
        p.consume(trace(id));
        if id == 10 {
            // Past a tick.
            std::thread::sleep(2 * CONSUMER_TICK);
        }
    }
    p.finish();
    let consumers = p.into_inner();
    assert_eq!(consumers.len(), 1, "the thread was joined, not lost");
    let want: Vec<TraceId> = (0..20u8)
        .filter(|i| *i != 13)
        .map(|i| TraceId([i; 16]))
        .collect();
    assert_eq!(consumers[0].seen, want);
    assert!(consumers[0].ticked);
    assert_eq!(panics.get(), 2);
}

#[test]
fn parallel_consumers_see_every_trace_once_and_fragments_where_their_trace_went() {
    let now = Instant::now();
    let trace = |id: u8, late: bool| completed(id, late, now);
    let mut p = Parallel::new((0..3).map(|_| Recording::default()).collect()).unwrap();
    for id in 0..200u8 {
        p.consume(trace(id, false));
    }
    for id in (0..200u8).step_by(7) {
        p.consume(trace(id, true));
    }
    p.finish();
    let consumers = p.into_inner();
    assert_eq!(consumers.len(), 3);
    assert!(consumers.iter().all(|c| c.finished));
    assert!(
        consumers.iter().all(|c| !c.seen.is_empty()),
        "spread over all"
    );
    for id in 0..200u8 {
        let holders: Vec<usize> = consumers
            .iter()
            .map(|c| c.seen.iter().filter(|t| **t == TraceId([id; 16])).count())
            .filter(|n| *n > 0)
            .collect();
        let want = if id % 7 == 0 { 2 } else { 1 };
        assert_eq!(holders, vec![want], "trace {id}");
    }
}

/// Records what it was handed, trace by trace and batch by batch.
#[derive(Default)]
struct Batches {
    seen: Vec<(TraceId, bool)>,
    batches: usize,
}

impl TraceConsumer for Batches {
    fn consume(&mut self, trace: CompletedTrace) {
        self.seen.push((trace.trace_id, trace.late));
    }
    fn consume_batch(&mut self, traces: &mut Vec<CompletedTrace>) {
        self.batches += 1;
        for t in traces.drain(..) {
            self.consume(t);
        }
    }
}

/// The assembler's channel holding traces 0..200 and, after them, a late
/// fragment of every seventh.
async fn queued(
    now: Instant,
) -> (
    tokio::sync::mpsc::Sender<CompletedTrace>,
    tokio::sync::mpsc::Receiver<CompletedTrace>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    for id in 0..200u8 {
        tx.send(completed(id, false, now)).await.unwrap();
    }
    for id in (0..200u8).step_by(7) {
        tx.send(completed(id, true, now)).await.unwrap();
    }
    (tx, rx)
}

/// The relay from the assembler's channel hands on what is queued as one
/// batch, and the evaluation threads get every trace once, a trace's
/// later copy after its first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_hands_on_queued_traces_in_batches_in_order() {
    let now = Instant::now();
    // Queued before the relay starts: it takes them in a few batches.
    let (tx, rx) = queued(now).await;
    let workers = Arc::new(crate::health::Workers::new(Arc::new(
        crate::metrics::Metrics::unregistered(),
    )));
    let relay = spawn_consumer(rx, Batches::default(), workers.alive("test"));
    drop(tx);
    let relayed = relay.await.unwrap();
    assert_eq!(relayed.seen.len(), 229);
    assert!(
        (1..=2).contains(&relayed.batches),
        "229 queued traces came in {} batches",
        relayed.batches
    );

    let (tx, rx) = queued(now).await;
    let parallel = Parallel::new((0..3).map(|_| Batches::default()).collect()).unwrap();
    drop(tx);
    let consumers = spawn_consumer(rx, parallel, workers.alive("test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(consumers.len(), 3);
    for id in 0..200u8 {
        let id = TraceId([id; 16]);
        let holders: Vec<Vec<bool>> = consumers
            .iter()
            .map(|c| {
                c.seen
                    .iter()
                    .filter(|(t, _)| *t == id)
                    .map(|(_, late)| *late)
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty())
            .collect();
        let want = if id.0[0] % 7 == 0 {
            vec![false, true]
        } else {
            vec![false]
        };
        assert_eq!(holders, vec![want], "trace {}", id.0[0]);
    }
}

/// Holds up its thread on trace 0 until told to go on; tells what it saw.
struct Gate {
    go: std::sync::mpsc::Receiver<()>,
    seen: Arc<std::sync::Mutex<Vec<TraceId>>>,
}

impl TraceConsumer for Gate {
    fn consume(&mut self, trace: CompletedTrace) {
        if trace.trace_id == TraceId([0; 16]) {
            let _ = self.go.recv();
        }
        self.seen.lock().unwrap().push(trace.trace_id);
    }
}

/// A thread held up by a slow trace takes up to its bound of traces
/// whatever the batches they come in: one-trace batches for it do not stop
/// the relay, so the other threads go on with theirs meanwhile.
#[test]
fn a_thread_held_up_does_not_hold_up_the_others_before_its_queue_is_full() {
    let now = Instant::now();
    let seen: Vec<_> = (0..2)
        .map(|_| Arc::new(std::sync::Mutex::new(Vec::new())))
        .collect();
    let (go, gates): (Vec<_>, Vec<_>) = seen
        .iter()
        .map(|seen| {
            let (tx, rx) = std::sync::mpsc::channel();
            (
                tx,
                Gate {
                    go: rx,
                    seen: Arc::clone(seen),
                },
            )
        })
        .unzip();
    let mut p = Parallel::new(gates).unwrap();
    let slow = p.thread_of(&completed(0, false, now));
    let (mine, others): (Vec<u8>, Vec<u8>) =
        (1..=250u8).partition(|&id| p.thread_of(&completed(id, false, now)) == slow);
    assert!(mine.len() > 20 && others.len() > 20);
    let expected_others = others.len();
    let sender = std::thread::spawn(move || {
        p.consume(completed(0, false, now));
        // One trace a batch, as at a light load.
        for &id in mine.iter().chain(&others) {
            p.consume_batch(&mut vec![completed(id, false, now)]);
        }
        p
    });
    let other = 1 - slow;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen[other].lock().unwrap().len() < expected_others {
        assert!(
            std::time::Instant::now() < deadline,
            "the other thread got {} of its {expected_others} traces while one was held up",
            seen[other].lock().unwrap().len(),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for g in &go {
        let _ = g.send(());
    }
    let mut p = sender.join().unwrap();
    p.finish();
    assert_eq!(seen[slow].lock().unwrap().len(), 1 + 250 - expected_others);
}

/// A batch waits for room for all of it, and is let go as soon as there is
/// (no wake-up lost), or when the thread is gone.
#[test]
fn a_batch_waits_for_room_for_all_of_it() {
    let backlog = Arc::new(Backlog::default());
    assert!(backlog.reserve(PARALLEL_QUEUE));
    let waiting = {
        let backlog = Arc::clone(&backlog);
        std::thread::spawn(move || backlog.reserve(256))
    };
    backlog.release(100);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished(), "156 places short");
    backlog.release(156);
    assert!(waiting.join().unwrap());
    assert_eq!(backlog.state.lock().queued, PARALLEL_QUEUE);

    // A batch larger than the bound goes to an empty queue.
    let waiting = {
        let backlog = Arc::clone(&backlog);
        std::thread::spawn(move || backlog.reserve(2 * PARALLEL_QUEUE))
    };
    backlog.release(PARALLEL_QUEUE - 1);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished());
    backlog.release(1);
    assert!(waiting.join().unwrap());

    // The thread is gone: nothing waits on it.
    let waiting = {
        let backlog = Arc::clone(&backlog);
        std::thread::spawn(move || backlog.reserve(1))
    };
    std::thread::sleep(Duration::from_millis(50));
    backlog.close();
    assert!(!waiting.join().unwrap());
}

/// Spans refused with "retry later" hold their trace: a trace whose root
/// was taken does not complete at `root_settle` while the rest of it is
/// being retried, and the retried spans are judged with it, not late.
#[tokio::test(start_paused = true)]
async fn a_held_trace_waits_for_its_retried_spans() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.insert(vec![span(1, 1, true)], t0);
    // The request with its child was refused; the sender retries after 1 s.
    a.hold(
        vec![TraceId([1; 16])],
        t0,
        t0 + Duration::from_secs(2),
        Held::All,
    );
    assert!(a.poll_completed(t0 + Duration::from_secs(1)).is_empty());
    a.insert(vec![span(1, 2, false)], t0 + Duration::from_millis(1100));
    assert!(a
        .poll_completed(t0 + Duration::from_millis(1900))
        .is_empty());
    let done = a.poll_completed(t0 + Duration::from_secs(2));
    assert_eq!(done.len(), 1);
    assert!(!done[0].late);
    assert_eq!(done[0].spans.len(), 2);
    assert_eq!(done[0].reason, CompletionReason::root);
    // The verdict delay counts from the end of the hold.
    assert_eq!(done[0].due, t0 + Duration::from_secs(2));
}

/// Holds delay judging, never copying spans out of their requests nor the
/// `max_trace_age` bound: a long-lived trace with a span in every refused
/// request would otherwise pin every request body for as long as senders
/// retry, and the memory pinned would keep them refused.
#[tokio::test(start_paused = true)]
async fn holds_delay_neither_compaction_nor_max_age() {
    use crate::memory::Part;
    let a = assembler(AssemblerConfig {
        settle: Duration::from_secs(6),
        ..config()
    });
    let m = Arc::clone(a.memory());
    let t0 = Instant::now();
    let mut last = t0;
    let mut pinned_longest = Duration::ZERO;
    let mut since = None;
    let mut done = Vec::new();
    // A span every second, and a refused request holding the trace every
    // 300 ms, for 12 s.
    for step in 0..40u32 {
        let now = t0 + Duration::from_millis(300) * step;
        if now >= last + Duration::from_secs(1) || step == 0 {
            let mut s = sized_span(4, (step % 250) as u8 + 1, 1000);
            s.span.bytes = m.track(s.span.bytes);
            a.insert(vec![s], now);
            last = now;
        }
        if step == 0 {
            // A second trace gets one span and then only holds.
            a.insert(vec![span(6, 1, false)], now);
        }
        a.hold(
            vec![TraceId([4; 16]), TraceId([6; 16])],
            now,
            now + Duration::from_secs(2),
            Held::All,
        );
        done.extend(a.poll_completed(now).into_iter().filter(|c| !c.early));
        match (m.get(Part::requests) > 0, since) {
            (true, None) => since = Some(now),
            (false, Some(s)) => {
                pinned_longest = pinned_longest.max(now - s);
                since = None;
            }
            _ => {}
        }
    }
    assert!(
        pinned_longest <= a.config().idle_timeout + Duration::from_millis(300),
        "a request stayed pinned {pinned_longest:?}"
    );
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(
        done.iter().all(|c| c.reason == CompletionReason::max_age),
        "{done:?}"
    );
}

/// A trace none of whose spans were buffered yet is held too (its first
/// spans may be the refused ones); holds run out, and are bounded.
#[tokio::test(start_paused = true)]
async fn holds_apply_to_traces_not_yet_seen_and_run_out() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.hold(
        vec![TraceId([2; 16]), TraceId([2; 16])],
        t0,
        t0 + Duration::from_secs(2),
        Held::All,
    );
    a.insert(vec![span(2, 1, true)], t0 + Duration::from_millis(100));
    assert!(a
        .poll_completed(t0 + Duration::from_millis(1500))
        .is_empty());
    let early = a.poll_completed(t0 + Duration::from_secs(2));
    assert!(early.len() == 1 && early[0].early, "{early:?}");
    let done = a.poll_completed(t0 + Duration::from_millis(2100));
    assert!(done.len() == 1 && !done[0].early, "{done:?}");

    // Refused for memory, a trace not buffered is not held: the hold
    // itself would take memory.
    a.hold(
        vec![TraceId([5; 16])],
        t0,
        t0 + Duration::from_secs(9),
        Held::Buffered,
    );
    a.insert(vec![span(5, 1, true)], t0 + Duration::from_millis(2200));
    let early = a.poll_completed(t0 + Duration::from_millis(2800));
    assert!(early.iter().all(|c| c.early), "{early:?}");
    let done = a.poll_completed(t0 + Duration::from_millis(4300));
    assert!(
        done.iter()
            .any(|c| c.trace_id == TraceId([5; 16]) && !c.early),
        "{done:?}"
    );

    // Long after the hold ran out, a new trace completes on its own terms.
    let t1 = t0 + Duration::from_secs(10);
    a.hold(
        vec![TraceId([3; 16])],
        t1,
        t1 + Duration::from_secs(2),
        Held::All,
    );
    assert!(a.poll_completed(t1 + Duration::from_secs(3)).is_empty());
    a.insert(vec![span(3, 1, true)], t1 + Duration::from_secs(3));
    let done = a.poll_completed(t1 + Duration::from_millis(3500));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].due, t1 + Duration::from_millis(3500));
}

#[test]
fn holds_are_bounded_per_shard() {
    let mut shard = super::shard::Shard::default();
    let t0 = std::time::Instant::now();
    for i in 0..100u8 {
        shard.hold(
            TraceId([i; 16]),
            t0.into(),
            (t0 + Duration::from_secs(2)).into(),
            10,
        );
    }
    assert_eq!(shard.held_len(), 10);
}

/// Traces that complete on their own (no eviction) leave nothing behind in
/// the shard's arrival queue: it stays proportional to what is buffered,
/// not to every trace ever seen. One long trace at the front does not keep
/// the completed ones behind it.
#[test]
fn completed_traces_leave_no_arrivals_behind() {
    let config = AssemblerConfig {
        max_traces: 1_000_000,
        max_spans: 1_000_000,
        settle: Duration::from_millis(500),
        ..config()
    };
    let mut shard = super::shard::Shard::default();
    let t0: Instant = std::time::Instant::now().into();
    let mut delta = super::shard::InsertDelta::default();
    let mut out = Vec::new();
    // A long-lived trace first: it stays buffered throughout.
    let long = span(255, 1, false);
    shard.insert(long.trace_id, false, long.span, t0, &config, &mut delta);
    for round in 0..100u32 {
        let now = t0 + Duration::from_millis(10 * u64::from(round));
        for i in 0..100u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&round.to_be_bytes());
            id[4..8].copy_from_slice(&i.to_be_bytes());
            let s = span(1, 1, true);
            shard.insert(TraceId(id), true, s.span, now, &config, &mut delta);
        }
        // The long trace is never quiet for `settle`.
        shard.insert(
            TraceId([255; 16]),
            false,
            span(255, 2, false).span,
            now + Duration::from_millis(600),
            &config,
            &mut delta,
        );
        let caps = super::shard::Caps {
            recent: 1000,
            held: 1000,
            early: true,
        };
        shard.expire(now + Duration::from_millis(600), &config, caps, &mut out);
    }
    assert_eq!(out.len(), 10_000, "every short trace completed by its root");
    // One live trace: at most twice the live ones plus the sweep's slack,
    // plus the round not yet swept.
    let live = 1;
    assert!(
        shard.arrivals_len() <= 2 * live + 1024 + 100,
        "{} arrivals kept for {live} buffered trace",
        shard.arrivals_len()
    );
}

/// A trace some of whose spans were refused at ingest completes marked,
/// whether the mark came after its spans, before them, or alone (then it
/// completes with no span); the refused span counts as activity; a trace
/// completed recently gets the mark as a late fragment. Nothing else is
/// marked, and the buffer's accounting returns to zero.
#[tokio::test(start_paused = true)]
async fn traces_that_lost_spans_at_ingest_complete_marked() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.insert(vec![span(5, 1, false)], t0);
    let done = a.poll_completed(t0 + Duration::from_secs(2));
    assert_eq!(done.len(), 1);
    assert!(!done[0].unreadable);

    a.insert(vec![span(1, 1, false), span(3, 1, false)], t0 + SECOND * 2);
    // Trace 1 after its spans, 2 before any, 4 alone, 5 after it completed.
    a.mark_unreadable(
        vec![
            TraceId([1; 16]),
            TraceId([2; 16]),
            TraceId([4; 16]),
            TraceId([5; 16]),
        ],
        t0 + SECOND * 3,
    );
    assert_eq!(a.len(), (5, 2), "traces 2, 4 and 5 are buffered, empty");
    a.insert(vec![span(2, 1, false)], t0 + SECOND * 4);
    // Trace 3 completes at 4 s; trace 1 would have then, but its refused
    // span came at 3 s.
    let done = a.poll_completed(t0 + SECOND * 4);
    assert_eq!(
        done.iter()
            .map(|c| (c.trace_id.0[0], c.unreadable))
            .collect::<Vec<_>>(),
        vec![(3, false)]
    );
    let mut done = a.poll_completed(t0 + SECOND * 5);
    done.sort_by_key(|c| c.trace_id);
    let seen: Vec<(u8, bool, usize, bool)> = done
        .iter()
        .map(|c| (c.trace_id.0[0], c.unreadable, c.spans.len(), c.late))
        .collect();
    assert_eq!(
        seen,
        vec![(1, true, 1, false), (4, true, 0, false), (5, true, 0, true)]
    );
    let done = a.poll_completed(t0 + SECOND * 6);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].trace_id, TraceId([2; 16]));
    assert!(done[0].unreadable);
    assert_eq!(done[0].spans.len(), 1);
    assert_eq!((a.len(), a.bytes()), ((0, 0), 0));
}

/// A trace buffered empty by a mark keeps its first span whatever its
/// size, as any trace does.
#[tokio::test(start_paused = true)]
async fn a_trace_buffered_empty_by_a_mark_keeps_its_first_span() {
    let a = assembler(AssemblerConfig {
        max_bytes_per_trace: 1000,
        ..config()
    });
    let t0 = Instant::now();
    a.mark_unreadable(vec![TraceId([1; 16])], t0);
    let out = a.insert(vec![sized_span(1, 1, 2000)], t0);
    assert_eq!(out.truncated, None);
    let done = a.poll_completed(t0 + SECOND * 3);
    assert_eq!(done[0].spans.len(), 1);
    assert!(done[0].unreadable && !done[0].truncated);
}

const SECOND: Duration = Duration::from_secs(1);
