use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::ids::SpanId;
use crate::otlp::ScopeContext;

fn config() -> AssemblerConfig {
    AssemblerConfig {
        idle_timeout: Duration::from_secs(2),
        root_settle: Duration::from_millis(500),
        max_trace_age: Duration::from_secs(10),
        max_traces: 100,
        max_spans: 1000,
        late_span_window: Duration::from_secs(60),
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

#[tokio::test(start_paused = true)]
async fn root_settle_completes_sooner() {
    let a = assembler(config());
    let t0 = Instant::now();
    a.insert(vec![span(1, 2, false), span(1, 1, true)], t0);
    let done = a.poll_completed(t0 + Duration::from_millis(500));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].reason, CompletionReason::root);
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
    assert_eq!(a.poll_completed(t0 + Duration::from_secs(1)).len(), 1);
    a.insert(
        vec![span(1, 2, false), span(1, 3, false)],
        t0 + Duration::from_secs(5),
    );
    let done = a.poll_completed(t0 + Duration::from_secs(8));
    assert_eq!(done.len(), 1);
    assert!(done[0].late);
    assert_eq!(done[0].spans.len(), 2);
    assert_eq!(metrics.late_spans.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn bounds_refuse_then_evict_the_oldest() {
    let a = assembler(AssemblerConfig {
        max_traces: 10,
        ..config()
    });
    let t0 = Instant::now();
    for i in 0..10u8 {
        assert!(a.admit().is_ok());
        a.insert(
            vec![span(i, 1, false)],
            t0 + Duration::from_millis(u64::from(i)),
        );
    }
    let full = a.admit().unwrap_err();
    assert_eq!(full.traces, 10);
    let done = a.poll_completed(t0 + Duration::from_millis(20));
    // Down to 90% of 10: one trace evicted, the oldest.
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].reason, CompletionReason::evicted);
    assert_eq!(done[0].trace_id, TraceId([0; 16]));
    assert!(a.admit().is_ok());
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
