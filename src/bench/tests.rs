use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::loadgen::{self, LoadConfig, LoadError, LoadReport, Protocol, RetryPolicy};
use super::sink::{Faults, Sink, SinkConfig, SinkHandle, SinkStats};
use super::traffic::{
    ChainTrace, GeneratedTrace, Rng, Service, SplitBatch, SplitConfig, SplitSchedule, SplitSender,
    SplitTrace, TraceShape, TrafficGenerator, TrafficMix, WholeTraces, CHAIN_LINK, CHAIN_ROOT,
};
use super::{parse_duration, BenchCommand};
use crate::otlp::json as otlp_json;

const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, future)
        .await
        .expect("test exceeded its time limit")
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(any_value::Value::IntValue(i)) => *i,
        other => panic!("{key} is not an int on {}: {other:?}", span.name),
    }
}

fn has_string_attr(span: &Span, key: &str) -> bool {
    matches!(attr(span, key), Some(any_value::Value::StringValue(s)) if !s.is_empty())
}

fn only(mix: &str) -> TrafficMix {
    mix.parse().expect("mix")
}

fn all_spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
}

// ---------------------------------------------------------------------------
// traffic

#[test]
fn rng_is_seeded_bounded_and_never_zero() {
    let mut a = Rng::new(7);
    let mut b = Rng::new(7);
    let mut c = Rng::new(8);
    let from_a: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let from_b: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    let from_c: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
    assert_eq!(from_a, from_b);
    assert_ne!(from_a, from_c);
    assert!(from_a.iter().all(|x| *x != 0));
    let mut rng = Rng::new(0);
    let mut seen = [false; 10];
    for _ in 0..10_000 {
        let x = rng.below(10);
        assert!(x < 10);
        seen[x as usize] = true;
        let y = rng.between(5, 7);
        assert!((5..=7).contains(&y));
    }
    assert!(seen.iter().all(|s| *s));
    assert_ne!(Rng::from_time(0).next_u64(), Rng::from_time(1).next_u64());
}

#[test]
fn mixes_parse_and_print() {
    let mix: TrafficMix = "web=5, violation=2".parse().expect("mix");
    assert_eq!(
        mix,
        TrafficMix {
            web: 5,
            bank_commit: 0,
            bank_rollback: 0,
            bank_violation: 2
        }
    );
    assert_eq!(mix.to_string().parse::<TrafficMix>(), Ok(mix));
    assert_eq!(
        TrafficMix::default().to_string(),
        "web=90,commit=6,rollback=3,violation=1"
    );
    assert!("web".parse::<TrafficMix>().is_err());
    assert!("web=x".parse::<TrafficMix>().is_err());
    assert!("refund=1".parse::<TrafficMix>().is_err());
    assert!("web=0".parse::<TrafficMix>().is_err());
}

#[test]
fn mix_ratios_are_respected() {
    let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(42));
    let mut counts: HashMap<TraceShape, u32> = HashMap::new();
    for _ in 0..20_000 {
        *counts.entry(generator.next_trace().shape).or_default() += 1;
    }
    let share = |shape| f64::from(counts.get(&shape).copied().unwrap_or(0)) / 20_000.0;
    assert!((0.87..0.93).contains(&share(TraceShape::Web)));
    assert!((0.05..0.07).contains(&share(TraceShape::BankCommit)));
    assert!((0.02..0.04).contains(&share(TraceShape::BankRollback)));
    assert!((0.005..0.015).contains(&share(TraceShape::BankViolation)));
}

fn check_tree(trace: &GeneratedTrace) {
    let ids: HashSet<&[u8]> = trace
        .spans
        .iter()
        .map(|(_, s)| s.span_id.as_slice())
        .collect();
    assert_eq!(ids.len(), trace.spans.len(), "span ids are unique");
    let roots: Vec<&Span> = trace
        .spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].kind, SpanKind::Server as i32);
    let root = roots[0];
    for (_, span) in &trace.spans {
        assert!(span.start_time_unix_nano >= root.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= root.end_time_unix_nano);
        assert_eq!(span.trace_id, trace.trace_id.to_vec());
        assert_eq!(span.span_id.len(), 8);
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
        if !span.parent_span_id.is_empty() {
            assert!(
                ids.contains(span.parent_span_id.as_slice()),
                "parent exists"
            );
        }
    }
}

#[test]
fn web_traces_look_like_real_requests() {
    let mut generator = TrafficGenerator::new(only("web=1"), Rng::new(3));
    let mut trace_ids = HashSet::new();
    let mut services = HashSet::new();
    let mut spans = 0usize;
    let traces = 2_000;
    for _ in 0..traces {
        let trace = generator.next_trace();
        assert_eq!(trace.shape, TraceShape::Web);
        assert!(trace_ids.insert(trace.trace_id), "trace ids are unique");
        check_tree(&trace);
        spans += trace.spans.len();
        for (service, span) in &trace.spans {
            services.insert(*service);
            if span.parent_span_id.is_empty() {
                for key in [
                    "http.request.method",
                    "http.route",
                    "url.path",
                    "server.address",
                ] {
                    assert!(has_string_attr(span, key), "{key}");
                }
                let status = int_attr(span, "http.response.status_code");
                assert!([200, 404, 500].contains(&status));
            }
            if attr(span, "db.system.name").is_some() {
                assert_eq!(span.kind, SpanKind::Client as i32);
                for key in ["db.system.name", "db.query.text", "db.operation.name"] {
                    assert!(has_string_attr(span, key), "{key}");
                }
            }
        }
    }
    let average = spans as f64 / f64::from(traces);
    assert!((7.0..=9.5).contains(&average), "{average} spans a trace");
    assert!(services.len() >= 4);
    assert!(!services.contains(&Service::BankApi));
}

#[test]
fn spans_encode_to_about_200_bytes() {
    let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(11));
    let batch = generator.next_batch(4_000);
    let per_span = batch.request.encoded_len() as f64 / 4_000.0;
    assert!(
        (150.0..=260.0).contains(&per_span),
        "{per_span} bytes a span"
    );
}

#[test]
fn bank_traces_follow_the_scenario() {
    let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(5));
    for shape in [
        TraceShape::BankCommit,
        TraceShape::BankRollback,
        TraceShape::BankViolation,
    ] {
        for _ in 0..300 {
            let trace = generator.trace_of(shape);
            check_tree(&trace);
            assert_eq!(trace.spans.len(), 4);
            let by_name: HashMap<&str, (Service, &Span)> = trace
                .spans
                .iter()
                .map(|(service, span)| (span.name.as_str(), (*service, span)))
                .collect();
            let (root_service, root) = by_name["POST /:account/withdraw"];
            assert_eq!(root_service, Service::BankApi);
            assert_eq!(root.kind, SpanKind::Server as i32);
            assert!(has_string_attr(root, "account.id"));
            let status = int_attr(root, "http.response.status_code");
            let balance = int_attr(by_name["fetch-balance"].1, "amount");
            let withdrawal = by_name["withdrawal"].1;
            let amount = int_attr(withdrawal, "amount");
            let (finish, finish_span) = if let Some((service, span)) = by_name.get("commit") {
                assert_eq!(*service, Service::BankDb);
                ("commit", *span)
            } else {
                let (service, span) = by_name["rollback"];
                assert_eq!(service, Service::BankDb);
                ("rollback", span)
            };
            assert_eq!(finish_span.parent_span_id, withdrawal.span_id);
            match shape {
                TraceShape::BankCommit => {
                    assert!(amount <= balance);
                    assert_eq!((finish, status), ("commit", 200));
                }
                TraceShape::BankRollback => {
                    assert!(amount > balance);
                    assert_eq!((finish, status), ("rollback", 500));
                }
                _ => {
                    assert!(amount > balance);
                    assert_eq!((finish, status), ("commit", 200));
                }
            }
            assert_eq!(
                trace.shape.is_violating(),
                shape == TraceShape::BankViolation
            );
            let request = trace.to_request();
            assert_eq!(request.resource_spans.len(), 2);
            assert_eq!(all_spans(&request).count(), 4);
        }
    }
}

#[test]
fn batches_are_exact_and_carry_whole_traces_in_order() {
    let mix = TrafficMix::default();
    let mut batches = TrafficGenerator::new(mix, Rng::new(99));
    let mut reference = TrafficGenerator::new(mix, Rng::new(99));
    let mut spans_by_trace: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut completed = Vec::new();
    let mut open = false;
    for size in [1usize, 3, 37, 5, 400, 2, 64, 7].iter().cycle().take(200) {
        let batch = batches.next_batch(*size);
        assert_eq!(batch.span_count, *size);
        assert_eq!(all_spans(&batch.request).count(), *size);
        assert_eq!(batch.continues_open_trace, open);
        open = batch.leaves_open_trace;
        for span in all_spans(&batch.request) {
            *spans_by_trace.entry(span.trace_id.clone()).or_default() += 1;
        }
        completed.extend(batch.completed);
    }
    for shape in &completed {
        let trace = reference.next_trace();
        assert_eq!(trace.shape, *shape);
        assert_eq!(
            spans_by_trace.get(trace.trace_id.as_slice()),
            Some(&trace.spans.len())
        );
    }
    assert!(completed.len() > 500);
}

#[test]
fn a_chain_is_one_trace_each_span_the_child_of_the_one_before() {
    let mut rng = Rng::new(3);
    let chain = ChainTrace::new(&mut rng, 1_001, 250);
    assert_eq!((chain.len(), chain.requests()), (1_001, 5));
    let trace_id = chain.trace_id.to_vec();
    let requests: Vec<ExportTraceServiceRequest> = chain.collect();
    assert_eq!(
        requests
            .iter()
            .map(|r| all_spans(r).count())
            .collect::<Vec<_>>(),
        [250, 250, 250, 250, 1]
    );
    // In the order they end: the deepest link first, the root last.
    let spans: Vec<&Span> = requests.iter().flat_map(all_spans).collect();
    assert_eq!(spans.last().map(|s| s.name.as_str()), Some(CHAIN_ROOT));
    assert!(spans.last().is_some_and(|s| s.parent_span_id.is_empty()));
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], *s)).collect();
    assert_eq!(by_id.len(), 1_001, "span IDs are unique");
    for (i, span) in spans.iter().enumerate() {
        assert_eq!(span.trace_id, trace_id);
        assert!(span.span_id.iter().any(|&b| b != 0));
        let depth = int_attr(span, "chain.depth");
        assert_eq!(depth as usize, 1_000 - i);
        if depth == 0 {
            continue;
        }
        assert_eq!(span.name, CHAIN_LINK);
        // Its parent is the next span sent, one level up, and covers it.
        let parent = by_id[&span.parent_span_id[..]];
        assert_eq!(int_attr(parent, "chain.depth"), depth - 1);
        assert!(parent.start_time_unix_nano < span.start_time_unix_nano);
        assert!(parent.end_time_unix_nano > span.end_time_unix_nano);
    }
    // Well under the receivers' 4 MiB at the default request size.
    let big = ChainTrace::new(&mut rng, 10_000, loadgen::DEFAULT_CHAIN_SPANS_PER_REQUEST)
        .map(|r| r.encoded_len())
        .max()
        .unwrap_or(0);
    assert!(big < loadgen::MAX_CHAIN_REQUEST_BYTES / 4, "{big} bytes");
}

// ---------------------------------------------------------------------------
// split traffic: the schedule alone, on a clock of its own

fn split_schedule(
    senders: usize,
    fragments: usize,
    spread: Duration,
    mix: TrafficMix,
) -> (Arc<SplitSchedule>, Vec<SplitSender>) {
    let schedule = SplitSchedule::new(
        SplitConfig {
            fragments,
            spread,
            long_lived: None,
        },
        senders,
    );
    let split = (0..senders)
        .map(|i| schedule.sender(i, TrafficGenerator::new(mix, Rng::new(100 + i as u64))))
        .collect();
    (schedule, split)
}

/// Trace IDs of the root spans (no parent) a request carries.
fn roots_in(request: &ExportTraceServiceRequest) -> HashSet<Vec<u8>> {
    all_spans(request)
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.trace_id.clone())
        .collect()
}

/// One trace followed fragment by fragment: each on its own sender, due
/// evenly over the spread, the root's held back until every other
/// fragment was answered, the trace counted when the last is accepted.
#[test]
fn a_split_trace_goes_fragment_by_fragment_root_last_and_counts_when_whole() {
    let spread = Duration::from_millis(300);
    let (schedule, mut senders) = split_schedule(4, 4, spread, only("violation=1"));
    let t0 = Instant::now();
    let step = spread / 3;
    // One span's worth begins exactly one trace: its first fragment goes now.
    let first = senders[1].next_batch(t0, 100, 1).expect("a first fragment");
    for sender in &mut senders {
        sender.stop_starting();
    }
    assert_eq!(schedule.traces_started(), 1);
    assert_eq!(first.fragments.len(), 1);
    assert_eq!(first.begun_spans, 4);
    let trace = Arc::clone(&first.fragments[0].trace);
    assert_eq!(
        (trace.fragments, trace.spans),
        (4, 4),
        "bank traces: 4 spans"
    );
    assert!(!first.fragments[0].holds_root);
    assert!(roots_in(&first.request).is_empty());
    assert_eq!(schedule.unsettled(), 4);

    // Nothing else is due yet, anywhere.
    for sender in &mut senders {
        assert!(sender.next_batch(t0, 100, 0).is_none());
    }
    assert_eq!(
        senders[1].settle(&first.fragments, true),
        WholeTraces::default()
    );
    // The next fragments on the next senders in turn, a third of the spread apart.
    let second = senders[2].next_batch(t0 + step, 100, 0).expect("second");
    assert!(senders[3].next_batch(t0 + step, 100, 0).is_none());
    assert_eq!(senders[2].next_due(), None);
    assert_eq!(senders[3].next_due(), Some(t0 + 2 * step));
    let third = senders[3].next_batch(t0 + 2 * step, 100, 0).expect("third");
    assert_eq!(senders[2].settle(&second.fragments, true).traces, 0);
    // The root is due, but the third fragment is still in flight: held back.
    assert!(senders[0].next_batch(t0 + spread, 100, 0).is_none());
    assert_eq!(senders[0].next_due(), None);
    assert_eq!(senders[3].settle(&third.fragments, true).traces, 0);
    assert_eq!(senders[0].next_due(), Some(t0 + spread));
    // Handed over, it still waits for its due time.
    assert!(senders[0].next_batch(t0 + 2 * step, 100, 0).is_none());
    let root = senders[0].next_batch(t0 + spread, 100, 0).expect("root");
    assert!(root.fragments[0].holds_root);
    assert_eq!(
        roots_in(&root.request),
        HashSet::from([trace.trace_id.to_vec()])
    );
    for batch in [&first, &second, &third, &root] {
        assert_eq!(batch.span_count, 1);
        assert!(all_spans(&batch.request).all(|s| s.trace_id == trace.trace_id));
    }
    assert!(
        senders.iter().all(|s| !s.is_done()),
        "the root is in flight"
    );
    // Whole (and violating) once its last fragment is accepted.
    assert_eq!(
        senders[0].settle(&root.fragments, true),
        WholeTraces {
            traces: 1,
            violating: 1
        }
    );
    assert!(senders.iter().all(SplitSender::is_done));
    assert_eq!(schedule.unsettled(), 0);
}

/// A refused fragment: the root is still sent last, the trace never counts.
#[test]
fn a_split_trace_with_a_refused_fragment_is_not_counted() {
    let spread = Duration::from_millis(90);
    let (_, mut senders) = split_schedule(3, 3, spread, only("commit=1"));
    let t0 = Instant::now();
    let first = senders[0].next_batch(t0, 10, 1).expect("first");
    for sender in &mut senders {
        sender.stop_starting();
    }
    let trace = Arc::clone(&first.fragments[0].trace);
    assert_eq!(trace.fragments, 3);
    // 4 spans in 3 fragments: 1, 1, then the root with one more.
    assert_eq!(first.span_count, 1);
    assert_eq!(senders[0].settle(&first.fragments, false).traces, 0);
    let second = senders[1]
        .next_batch(t0 + spread / 2, 10, 0)
        .expect("second");
    assert_eq!(senders[1].settle(&second.fragments, true).traces, 0);
    let root = senders[2].next_batch(t0 + spread, 10, 0).expect("root");
    assert_eq!(root.span_count, 2);
    assert_eq!(senders[2].settle(&root.fragments, true).traces, 0);
    assert!(senders.iter().all(SplitSender::is_done));
}

/// Many traces, requests of many fragments, some refused, answers a step
/// late: every span sent once, each trace's fragments on distinct senders,
/// the root's after every other was answered and not before the spread,
/// and a trace counted exactly when its last fragment is accepted.
#[test]
fn split_traffic_sends_every_span_once_root_last_and_counts_whole_traces() {
    for (fragments, spread_ms) in [(4, 300), (3, 0), (2, 5_000)] {
        let senders_n = 4;
        let spread = Duration::from_millis(spread_ms);
        let (schedule, mut senders) =
            split_schedule(senders_n, fragments, spread, TrafficMix::default());
        let t0 = Instant::now();
        let tick = Duration::from_millis(10);
        let mut refuse = Rng::new(fragments as u64);
        #[derive(Default)]
        struct Seen {
            senders: Vec<usize>,
            sent_at: Vec<(u64, Instant)>,
            settled_at: Vec<u64>,
            root_sent: Option<(u64, Instant)>,
            begun: Option<Instant>,
            accepted: usize,
            counted: bool,
        }
        let mut traces: HashMap<[u8; 16], (Arc<SplitTrace>, Seen)> = HashMap::new();
        let mut span_ids: HashSet<Vec<u8>> = HashSet::new();
        let mut spans_by_trace: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut in_flight: Vec<(usize, SplitBatch, bool)> = Vec::new();
        let mut event = 0u64;
        let mut whole = WholeTraces::default();
        let mut step = 0u32;
        // Two seconds of steady traffic after the first spread.
        let stop = 200 + u32::try_from(spread.as_millis() / tick.as_millis()).expect("steps");
        let mut steady_sizes = Vec::new();
        loop {
            let now = t0 + tick * step;
            // Last step's requests are answered now.
            for (sender, batch, accepted) in in_flight.drain(..) {
                let mut expected = WholeTraces::default();
                for sent in &batch.fragments {
                    event += 1;
                    let (trace, seen) = traces.get_mut(&sent.trace.trace_id).expect("seen");
                    seen.settled_at.push(event);
                    if accepted {
                        seen.accepted += 1;
                        if seen.accepted == trace.fragments {
                            assert!(!seen.counted);
                            seen.counted = true;
                            expected.traces += 1;
                            expected.violating += u64::from(trace.shape.is_violating());
                        }
                    }
                }
                let got = senders[sender].settle(&batch.fragments, accepted);
                assert_eq!(got, expected, "counted exactly when whole");
                whole.traces += got.traces;
                whole.violating += got.violating;
            }
            if step == stop {
                for sender in &mut senders {
                    sender.stop_starting();
                }
            }
            if senders.iter().all(SplitSender::is_done) {
                break;
            }
            assert!(step < 2_000, "the schedule drains");
            for (index, sender) in senders.iter_mut().enumerate() {
                let begin = if sender.is_starting() { 40 } else { 0 };
                let Some(batch) = sender.next_batch(now, 160, begin) else {
                    continue;
                };
                assert_eq!(all_spans(&batch.request).count(), batch.span_count);
                assert_eq!(
                    batch.fragments.iter().map(|f| f.spans).sum::<usize>(),
                    batch.span_count
                );
                assert!(batch.span_count < 160 + 40, "{}", batch.span_count);
                if sender.is_starting() {
                    assert!((40..40 + 10).contains(&batch.begun_spans));
                    if now > t0 + spread + 2 * tick {
                        steady_sizes.push(batch.span_count);
                    }
                }
                for span in all_spans(&batch.request) {
                    let id = [span.trace_id.clone(), span.span_id.clone()].concat();
                    assert!(span_ids.insert(id), "a span sent twice");
                    *spans_by_trace.entry(span.trace_id.clone()).or_default() += 1;
                }
                let roots = roots_in(&batch.request);
                for sent in &batch.fragments {
                    event += 1;
                    let id = sent.trace.trace_id;
                    let (_, seen) = traces
                        .entry(id)
                        .or_insert_with(|| (Arc::clone(&sent.trace), Seen::default()));
                    seen.begun.get_or_insert(now);
                    seen.senders.push(index);
                    if sent.holds_root {
                        assert!(seen.root_sent.is_none());
                        seen.root_sent = Some((event, now));
                    } else {
                        seen.sent_at.push((event, now));
                    }
                    assert_eq!(roots.contains(&id[..]), sent.holds_root, "root span");
                }
                in_flight.push((index, batch, !refuse.percent(5)));
            }
            step += 1;
        }
        // Once the first spread is over, requests carry about what they begin.
        let mean = steady_sizes.iter().sum::<usize>() as f64 / steady_sizes.len() as f64;
        assert!((40.0..52.0).contains(&mean), "{mean} spans a request");
        assert_eq!(schedule.traces_started(), traces.len() as u64);
        assert!(traces.len() > 1_000, "{} traces", traces.len());
        let mut expected = WholeTraces::default();
        for (id, (trace, seen)) in &traces {
            assert_eq!(trace.fragments, fragments.min(trace.spans));
            assert_eq!(seen.senders.len(), trace.fragments, "every fragment sent");
            let distinct: HashSet<usize> = seen.senders.iter().copied().collect();
            assert_eq!(distinct.len(), trace.fragments, "one sender a fragment");
            assert_eq!(spans_by_trace[&id[..]], trace.spans, "no span lost");
            let (root_event, root_at) = seen.root_sent.expect("root sent");
            let begun = seen.begun.expect("begun");
            assert!(root_at >= begun + spread, "root after the spread");
            assert!(root_at <= begun + spread + 3 * tick);
            for (sent_event, _) in &seen.sent_at {
                assert!(*sent_event < root_event, "root sent last");
            }
            // Every other fragment was answered before the root went out.
            assert_eq!(seen.settled_at.len(), trace.fragments);
            assert_eq!(
                seen.settled_at.iter().filter(|e| **e < root_event).count(),
                trace.fragments - 1
            );
            for (_, at) in &seen.sent_at {
                assert!(*at >= begun && *at <= begun + spread + tick);
            }
            if seen.counted {
                expected.traces += 1;
                expected.violating += u64::from(trace.shape.is_violating());
            }
        }
        assert_eq!(whole, expected);
        assert!(expected.traces < traces.len() as u64, "some were refused");
        assert!(expected.violating > 0);
    }
}

// ---------------------------------------------------------------------------
// loadgen + sink, end to end on loopback

async fn start_sink(faults: Faults) -> SinkHandle {
    let mut config = SinkConfig::loopback();
    config.stats = Some(([127, 0, 0, 1], 0).into());
    config.faults = faults;
    Sink::start(config).await.expect("sink starts")
}

fn load_config(sink: &SinkHandle, protocol: Protocol) -> LoadConfig {
    let endpoint = match protocol {
        Protocol::Grpc => sink.grpc_endpoint(),
        Protocol::Http => sink.http_endpoint(),
    }
    .expect("endpoint");
    let mut config = LoadConfig::new(endpoint, protocol);
    config.senders = 3;
    config.spans_per_request = 50;
    config.duration = None;
    config.requests = Some(20);
    config.request_timeout = Duration::from_secs(10);
    config.seed = Some(1);
    config
}

fn fast_retry() -> Option<RetryPolicy> {
    Some(RetryPolicy {
        max_retries: 5,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
    })
}

fn assert_exact_delivery(report: &LoadReport, stats: &SinkStats, requests: u64, spans: u64) {
    assert_eq!(report.requests, requests, "{report}");
    assert_eq!(report.requests_ok, requests, "{report}");
    assert_eq!(report.requests_failed, 0, "{report}");
    assert_eq!(report.spans_sent, requests * spans);
    assert_eq!(report.spans_accepted, requests * spans);
    assert_eq!(report.spans_refused, 0);
    assert_eq!(stats.spans, requests * spans, "{stats}");
    assert_eq!(stats.unique_spans, requests * spans, "{stats}");
    assert_eq!(stats.duplicate_spans, 0, "{stats}");
    assert_eq!(stats.invalid_id_spans, 0, "{stats}");
    assert!(report.traces_sent <= stats.unique_traces);
    assert!(report.traces_sent > 0);
    assert_eq!(report.latency.count, report.attempts);
}

async fn exact_delivery(protocol: Protocol, gzip: bool) {
    let sink = start_sink(Faults::default()).await;
    let mut config = load_config(&sink, protocol);
    config.gzip = gzip;
    let report = loadgen::run(config).await.expect("load runs");
    let stats = sink.stats();
    assert_exact_delivery(&report, &stats, 20, 50);
    match protocol {
        Protocol::Grpc => assert_eq!(stats.grpc_requests, 20),
        Protocol::Http => assert_eq!(stats.http_requests, 20),
    }
    assert_eq!(sink.shutdown().await, stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_load_arrives_exactly_once() {
    bounded(exact_delivery(Protocol::Grpc, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_load_arrives_exactly_once() {
    bounded(exact_delivery(Protocol::Grpc, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_load_arrives_exactly_once() {
    bounded(exact_delivery(Protocol::Http, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_load_arrives_exactly_once() {
    bounded(exact_delivery(Protocol::Http, true)).await;
}

async fn retries_until_accepted(protocol: Protocol, retry_after: Option<Duration>) {
    let sink = start_sink(Faults {
        fail_first: 3,
        retry_after,
        ..Faults::default()
    })
    .await;
    let mut config = load_config(&sink, protocol);
    config.senders = 1;
    config.requests = Some(5);
    config.spans_per_request = 10;
    config.retry = fast_retry();
    let report = loadgen::run(config).await.expect("load runs");
    let stats = sink.stats();
    assert_eq!(report.retries, 3, "{report}");
    assert_eq!(report.attempts, 8);
    let cause = match protocol {
        Protocol::Grpc => "grpc Unavailable",
        Protocol::Http => "http 503",
    };
    assert_eq!(report.errors.get(cause), Some(&3), "{report}");
    assert_eq!(stats.failed_requests, 3);
    assert_eq!(stats.requests, 8);
    assert_exact_delivery(&report, &stats, 5, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retries_past_refusals() {
    bounded(retries_until_accepted(Protocol::Grpc, None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retries_honour_retry_info() {
    bounded(retries_until_accepted(
        Protocol::Grpc,
        Some(Duration::from_millis(20)),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retries_honour_retry_after() {
    bounded(retries_until_accepted(Protocol::Http, Some(Duration::ZERO))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_retry_delay_is_waited_for() {
    bounded(async {
        let sink = start_sink(Faults {
            fail_first: 1,
            retry_after: Some(Duration::from_millis(300)),
            ..Faults::default()
        })
        .await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.senders = 1;
        config.requests = Some(1);
        config.retry = fast_retry();
        let started = std::time::Instant::now();
        let report = loadgen::run(config).await.expect("load runs");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(report.requests_ok, 1);
        assert_eq!(report.retries, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_refusals_are_reported() {
    bounded(async {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let sink = start_sink(Faults {
                fail_first: 2,
                ..Faults::default()
            })
            .await;
            let mut config = load_config(&sink, protocol);
            config.senders = 1;
            config.requests = Some(5);
            config.spans_per_request = 10;
            let report = loadgen::run(config).await.expect("load runs");
            assert_eq!(report.requests_failed, 2, "{report}");
            assert_eq!(report.spans_refused, 20);
            assert_eq!(report.spans_accepted, 30);
            assert_eq!(report.retries, 0);
            assert_eq!(sink.stats().spans, 30);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_rejections_are_reported() {
    bounded(async {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let sink = start_sink(Faults {
                partial_reject: 3,
                ..Faults::default()
            })
            .await;
            let mut config = load_config(&sink, protocol);
            config.requests = Some(4);
            config.spans_per_request = 10;
            let report = loadgen::run(config).await.expect("load runs");
            assert_eq!(report.requests_ok, 4, "{report}");
            assert_eq!(report.spans_rejected, 12);
            assert_eq!(report.spans_accepted, 28);
            let stats = sink.stats();
            assert_eq!(stats.rejected_spans, 12);
            assert_eq!(stats.spans, 28);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violating_traces_are_counted_across_split_batches() {
    bounded(async {
        let sink = start_sink(Faults::default()).await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.mix = only("violation=1");
        config.senders = 1;
        config.spans_per_request = 6;
        config.requests = Some(10);
        let report = loadgen::run(config).await.expect("load runs");
        assert_eq!(report.traces_sent, 15, "{report}");
        assert_eq!(report.violating_traces_sent, 15);
        assert_eq!(sink.stats().unique_traces, 15);

        let sink = start_sink(Faults::default()).await;
        let mut config = load_config(&sink, Protocol::Http);
        config.mix = only("commit=1,rollback=1");
        config.requests = Some(6);
        config.spans_per_request = 8;
        let report = loadgen::run(config).await.expect("load runs");
        assert_eq!(report.violating_traces_sent, 0);
        assert_eq!(report.traces_sent, 12);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_paces_requests_and_duration_stops_the_run() {
    bounded(async {
        let sink = start_sink(Faults::default()).await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.senders = 2;
        config.spans_per_request = 50;
        config.requests = None;
        config.rate = Some(1_000.0);
        config.duration = Some(Duration::from_millis(1_500));
        let report = loadgen::run(config).await.expect("load runs");
        // 1,000 spans/s of 50-span requests: 20 a second, 30 in 1.5 s.
        assert!((15..=32).contains(&report.requests), "{report}");
        assert!(report.elapsed_secs < 5.0);
        assert_eq!(sink.stats().spans, report.spans_accepted);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_are_sent_whole_beside_the_traffic_and_counted_apart() {
    bounded(async {
        let sink = start_sink(Faults::default()).await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.senders = 2;
        config.requests = None;
        config.rate = Some(2_000.0);
        config.duration = Some(Duration::from_millis(1_200));
        config.chain = Some(loadgen::ChainConfig {
            spans: 2_500,
            every: Duration::from_millis(500),
            spans_per_request: 1_000,
        });
        let report = loadgen::run(config).await.expect("load runs");
        let chain = report.chain.clone().expect("a chain report");
        // At 0, 0.5 and 1.0 s of a 1.2 s run.
        assert_eq!(
            (chain.traces_started, chain.traces_sent),
            (3, 3),
            "{report}"
        );
        assert_eq!(chain.trace_ids.len(), 3);
        assert_eq!((chain.requests, chain.requests_failed), (9, 0));
        assert_eq!(chain.spans_accepted, 7_500);
        assert!(chain.largest_request_bytes > 0);
        assert_eq!(chain.latency.count, 9);
        let stats = sink.stats();
        assert_eq!(stats.unique_spans, report.spans_accepted + 7_500, "{stats}");
        assert_eq!(stats.duplicate_spans, 0);
        assert_eq!(report.latency.count, report.attempts, "chain calls apart");
        let text = report.to_string();
        assert!(text.contains("chains: 3 of 3 sent whole"), "{text}");
        let json = serde_json::to_string(&report).expect("JSON");
        let back: LoadReport = serde_json::from_str(&json).expect("parses back");
        assert_eq!(back, report);

        let mut config = load_config(&sink, Protocol::Grpc);
        config.chain = Some(loadgen::ChainConfig::new(0));
        assert!(matches!(
            loadgen::run(config).await,
            Err(LoadError::Setting(_))
        ));
    })
    .await;
}

async fn split_delivery(protocol: Protocol, gzip: bool, json_senders: usize) {
    let sink = start_sink(Faults {
        fail_first: 3,
        ..Faults::default()
    })
    .await;
    let mut config = load_config(&sink, protocol);
    config.gzip = gzip;
    config.json_senders = json_senders;
    config.json_endpoint = sink.http_endpoint().expect("endpoint");
    config.senders = 4;
    config.split = 4;
    config.spread = Duration::from_millis(100);
    config.requests = Some(40);
    config.mix = only("web=9,violation=1");
    config.retry = fast_retry();
    let report = loadgen::run(config).await.expect("load runs");
    let split = report.split.clone().expect("a split report");
    assert_eq!(split.fragments, 4);
    // 40 requests begin traces; the drain sends the rest of them after.
    assert!(report.requests > 40, "{report}");
    assert_eq!(report.retries, 3, "{report}");
    assert_eq!(report.requests_failed, 0, "{report}");
    assert_eq!(report.spans_refused, 0);
    assert_eq!(report.spans_accepted, report.spans_sent);
    let stats = sink.stats();
    assert_eq!(stats.unique_spans, report.spans_accepted, "{stats}");
    assert_eq!(stats.duplicate_spans, 0, "{stats}");
    // Every trace begun was sent whole, and counted once.
    assert_eq!(report.traces_sent, split.traces_started, "{report}");
    assert_eq!(stats.unique_traces, report.traces_sent, "{stats}");
    assert!(report.violating_traces_sent > 0, "{report}");
    // Fragments were still sent after the senders stopped beginning
    // traces. (How long after depends on where the last trace begun was in
    // its 100 ms spread when the run stopped: not a fixed figure on a
    // loaded machine.)
    assert!(split.drain_secs > 0.0, "{report}");
    assert_eq!(report.latency.count, report.attempts);
    assert_eq!(report.json_senders, json_senders);
    assert_eq!(
        report.to_string().contains("of them OTLP/HTTP JSON"),
        json_senders > 0
    );
    // The JSON senders posted, and their bodies were read as JSON.
    if protocol == Protocol::Grpc {
        assert_eq!(stats.http_requests > 0, json_senders > 0, "{stats}");
    }
    assert_eq!(stats.bad_requests, 0, "{stats}");
    let text = report.to_string();
    assert!(text.contains("split: 4 fragments"), "{text}");
    let json = serde_json::to_string(&report).expect("JSON");
    let back: LoadReport = serde_json::from_str(&json).expect("parses back");
    assert_eq!(back, report);
    sink.shutdown().await;
}

/// A share of long-lived traces: their fragments over a spread of their
/// own, far longer than the others', still root last, still counted once
/// when whole.
#[test]
fn long_lived_traces_take_their_own_spread() {
    let spread = Duration::from_millis(300);
    let long = Duration::from_secs(30);
    let schedule = SplitSchedule::new(
        SplitConfig {
            fragments: 2,
            spread,
            long_lived: Some(crate::bench::traffic::LongLived {
                every: 2,
                spread: long,
            }),
        },
        2,
    );
    let mut senders: Vec<SplitSender> = (0..2)
        .map(|i| {
            schedule.sender(
                i,
                TrafficGenerator::new(only("violation=1"), Rng::new(7 + i as u64)),
            )
        })
        .collect();
    let t0 = Instant::now();
    // Two traces begun by sender 0: the second of every two is long-lived.
    let first = senders[0].next_batch(t0, 100, 5).expect("first fragments");
    for sender in &mut senders {
        sender.stop_starting();
    }
    assert_eq!(schedule.traces_started(), 2);
    assert_eq!(schedule.long_lived_started(), 1);
    assert_eq!(senders[0].settle(&first.fragments, true).traces, 0);
    // The ordinary trace's root is due after the spread; the long-lived
    // one's only after its own.
    assert_eq!(senders[1].next_due(), Some(t0 + spread));
    let root = senders[1].next_batch(t0 + spread, 100, 0).expect("a root");
    assert_eq!(root.fragments.len(), 1, "only the ordinary trace's root");
    assert_eq!(senders[1].settle(&root.fragments, true).traces, 1);
    assert_eq!(senders[1].next_due(), Some(t0 + long));
    assert!(senders[1].next_batch(t0 + long / 2, 100, 0).is_none());
    let late = senders[1]
        .next_batch(t0 + long, 100, 0)
        .expect("the long root");
    assert!(late.fragments[0].holds_root);
    assert_eq!(senders[1].settle(&late.fragments, true).traces, 1);
    assert!(senders.iter().all(SplitSender::is_done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_split_load_with_long_lived_traces_arrives_whole_exactly_once() {
    bounded(async {
        let sink = start_sink(Faults::default()).await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.senders = 4;
        config.split = 4;
        config.spread = Duration::from_millis(50);
        config.long_lived_every = 10;
        config.long_spread = Duration::from_millis(800);
        config.requests = Some(20);
        config.mix = only("web=9,violation=1");
        config.retry = fast_retry();
        let report = loadgen::run(config).await.expect("load runs");
        let split = report.split.clone().expect("a split report");
        assert!(split.long_lived_traces > 0, "{report}");
        assert!(split.long_lived_traces < split.traces_started, "{report}");
        assert!(report.to_string().contains("long-lived"), "{report}");
        let stats = sink.stats();
        assert_eq!(stats.unique_spans, report.spans_accepted, "{stats}");
        assert_eq!(stats.duplicate_spans, 0, "{stats}");
        assert_eq!(report.traces_sent, split.traces_started, "{report}");
        assert_eq!(stats.unique_traces, report.traces_sent, "{stats}");
        // The last long-lived roots came long after the others stopped.
        assert!(split.drain_secs >= 0.4, "{report}");
        sink.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_split_load_arrives_whole_exactly_once() {
    bounded(split_delivery(Protocol::Grpc, false, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_split_load_with_json_senders_arrives_whole_exactly_once() {
    bounded(split_delivery(Protocol::Grpc, false, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_split_load_arrives_whole_exactly_once() {
    bounded(split_delivery(Protocol::Http, true, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_split_load_with_json_senders_arrives_whole_exactly_once() {
    bounded(split_delivery(Protocol::Http, true, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_split_load_at_a_rate_drains_after_the_duration() {
    bounded(async {
        let sink = start_sink(Faults::default()).await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.gzip = true;
        config.senders = 3;
        config.split = 3;
        config.spread = Duration::from_millis(400);
        config.requests = None;
        config.rate = Some(3_000.0);
        config.duration = Some(Duration::from_millis(1_000));
        let report = loadgen::run(config).await.expect("load runs");
        let split = report.split.clone().expect("a split report");
        // 3,000 spans/s for 1 s, then the last traces' fragments.
        assert!((2_000..=4_500).contains(&report.spans_accepted), "{report}");
        assert!((0.35..1.5).contains(&split.drain_secs), "{report}");
        assert!(report.elapsed_secs < 3.0, "{report}");
        assert_eq!(report.traces_sent, split.traces_started, "{report}");
        let stats = sink.stats();
        assert_eq!(stats.unique_spans, report.spans_accepted, "{stats}");
        assert_eq!(stats.unique_traces, report.traces_sent, "{stats}");
        assert_eq!(stats.duplicate_spans, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_traces_with_a_refused_fragment_are_not_counted() {
    bounded(async {
        let sink = start_sink(Faults {
            fail_first: 3,
            ..Faults::default()
        })
        .await;
        let mut config = load_config(&sink, Protocol::Grpc);
        config.senders = 4;
        config.split = 4;
        config.spread = Duration::from_millis(50);
        config.requests = Some(20);
        let report = loadgen::run(config).await.expect("load runs");
        let split = report.split.clone().expect("a split report");
        assert_eq!(report.requests_failed, 3, "{report}");
        assert_eq!(report.errors.get("grpc Unavailable"), Some(&3));
        assert!(report.spans_refused > 0);
        assert_eq!(
            report.spans_accepted + report.spans_refused,
            report.spans_sent
        );
        let stats = sink.stats();
        assert_eq!(stats.unique_spans, report.spans_accepted, "{stats}");
        // Each refused request held a fragment of some trace: those are
        // not counted, though their other fragments arrived.
        assert!(report.traces_sent < split.traces_started, "{report}");
        assert!(
            report.traces_sent + 3 * 50 >= split.traces_started,
            "{report}"
        );
        assert_eq!(stats.unique_traces, split.traces_started, "{stats}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_receivers_fail_fast_without_retry() {
    bounded(async {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        for (protocol, cause) in [
            (Protocol::Grpc, "grpc Unavailable"),
            (Protocol::Http, "http connect"),
        ] {
            let mut config = LoadConfig::new(format!("http://{closed}"), protocol);
            config.senders = 1;
            config.duration = None;
            config.requests = Some(3);
            config.spans_per_request = 5;
            let report = loadgen::run(config).await.expect("load runs");
            assert_eq!(report.requests_failed, 3, "{report}");
            assert_eq!(report.spans_refused, 15);
            assert_eq!(report.errors.get(cause), Some(&3), "{report}");
            assert_eq!(report.traces_sent, 0);
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_load_settings_are_refused() {
    let mut config = LoadConfig::new("http://127.0.0.1:1", Protocol::Grpc);
    config.duration = None;
    assert!(matches!(
        loadgen::run(config.clone()).await,
        Err(LoadError::Unbounded)
    ));
    config.requests = Some(1);
    config.senders = 0;
    assert!(matches!(
        loadgen::run(config.clone()).await,
        Err(LoadError::Setting(_))
    ));
    config.senders = 1;
    config.rate = Some(-1.0);
    assert!(matches!(
        loadgen::run(config.clone()).await,
        Err(LoadError::Setting(_))
    ));
    config.rate = None;
    config.split = 0;
    assert!(matches!(
        loadgen::run(config.clone()).await,
        Err(LoadError::Setting(_))
    ));
    // Each fragment of a trace on another sender: no more fragments than senders.
    config.split = 2;
    assert!(matches!(
        loadgen::run(config.clone()).await,
        Err(LoadError::Setting(_))
    ));
    config.split = 1;
    config.endpoint = "http://bad host".to_owned();
    assert!(matches!(
        loadgen::run(config).await,
        Err(LoadError::Endpoint { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_http_speaks_json_protobuf_and_stats() {
    bounded(async {
        let sink = start_sink(Faults::default()).await;
        let client = crate::net::client::builder(None, "test client")
            .expect("TLS config")
            .no_proxy()
            .build()
            .expect("client");
        let url = sink.http_endpoint().expect("http");
        let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(8));
        let batch = generator.next_batch(25);

        let json = otlp_json::encode_export_request(&batch.request);
        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .body(json.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.expect("body"), "{}");

        // The same spans again, as protobuf: all duplicates.
        let answer = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(batch.request.encode_to_vec())
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 200);

        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}")
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 400);
        let message = answer.text().await.expect("body");
        assert!(
            message.contains("traceId: invalid hex digit 'z'"),
            "{message}"
        );

        let answer = client
            .post(&url)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 415);

        let stats = sink.stats();
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.spans, 50);
        assert_eq!(stats.unique_spans, 25);
        assert_eq!(stats.duplicate_spans, 25);
        assert_eq!(stats.bad_requests, 2);

        let stats_port = sink.stats_addr().expect("stats port");
        for base in [
            format!("http://{stats_port}"),
            format!("http://{}", sink.http_addr().expect("http")),
        ] {
            let body = client
                .get(format!("{base}/stats"))
                .send()
                .await
                .expect("stats")
                .bytes()
                .await
                .expect("stats body");
            let served: SinkStats = serde_json::from_slice(&body).expect("stats JSON");
            assert_eq!(served, stats);
        }
        let reset = client
            .post(format!("http://{stats_port}/reset"))
            .send()
            .await
            .expect("reset");
        assert_eq!(reset.status(), 204);
        assert_eq!(sink.stats(), SinkStats::default());
        sink.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_json_answers_carry_partial_success() {
    bounded(async {
        let sink = start_sink(Faults {
            partial_reject: 2,
            ..Faults::default()
        })
        .await;
        let client = crate::net::client::builder(None, "test client")
            .expect("TLS config")
            .no_proxy()
            .build()
            .expect("client");
        let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(9));
        let json = otlp_json::encode_export_request(&generator.next_batch(5).request);
        let body = client
            .post(sink.http_endpoint().expect("http"))
            .header("content-type", "application/json")
            .body(json)
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("answer body");
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
        assert_eq!(answer["partialSuccess"]["rejectedSpans"], "2");
        assert_eq!(sink.stats().spans, 3);
    })
    .await;
}

#[tokio::test]
async fn sink_needs_something_to_serve() {
    let config = SinkConfig {
        grpc: None,
        http: None,
        stats: Some(([127, 0, 0, 1], 0).into()),
        faults: Faults::default(),
        track_unique: true,
    };
    assert!(Sink::start(config).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_without_unique_tracking_still_counts_spans() {
    bounded(async {
        let mut config = SinkConfig::loopback();
        config.track_unique = false;
        let sink = Sink::start(config).await.expect("sink");
        let mut load = LoadConfig::new(sink.grpc_endpoint().expect("grpc"), Protocol::Grpc);
        load.duration = None;
        load.requests = Some(4);
        load.spans_per_request = 10;
        let report = loadgen::run(load).await.expect("load");
        assert_eq!(report.spans_accepted, 40);
        let stats = sink.stats();
        assert_eq!(stats.spans, 40);
        assert_eq!(stats.unique_spans, 0);
    })
    .await;
}

// ---------------------------------------------------------------------------
// command line and report

#[derive(Debug, Parser)]
struct TestCli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[test]
fn load_arguments_become_a_config() {
    let cli = TestCli::try_parse_from([
        "t",
        "load",
        "--protocol",
        "http",
        "--gzip",
        "--senders",
        "2",
        "--spans-per-request",
        "100",
        "--rate",
        "5000",
        "--requests",
        "50",
        "--retry",
        "--max-retries",
        "3",
        "--timeout",
        "2s",
        "--mix",
        "web=1,violation=1",
        "--seed",
        "4",
    ])
    .expect("parses");
    let BenchCommand::Load(args) = cli.command else {
        panic!("not load");
    };
    let config = args.to_config();
    assert_eq!(config.endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(config.protocol, Protocol::Http);
    assert!(config.gzip);
    assert_eq!(config.senders, 2);
    assert_eq!(config.spans_per_request, 100);
    assert_eq!(config.rate, Some(5000.0));
    assert_eq!(config.requests, Some(50));
    assert_eq!(config.duration, None);
    assert_eq!(config.retry.map(|r| r.max_retries), Some(3));
    assert_eq!(config.request_timeout, Duration::from_secs(2));
    assert_eq!(config.mix, only("web=1,violation=1"));
    assert_eq!(config.seed, Some(4));
    assert_eq!(config.chain, None);
    assert_eq!(config.split, 1);
    assert_eq!(config.split_config(), None);

    let cli =
        TestCli::try_parse_from(["t", "load", "--split", "4", "--spread", "5s"]).expect("parses");
    let BenchCommand::Load(args) = cli.command else {
        panic!("not load");
    };
    assert_eq!(
        args.to_config().split_config(),
        Some(SplitConfig {
            fragments: 4,
            spread: Duration::from_secs(5),
            long_lived: None,
        })
    );

    let cli = TestCli::try_parse_from([
        "t",
        "load",
        "--split",
        "4",
        "--long-lived",
        "0.01",
        "--long-spread",
        "20s",
    ])
    .expect("parses");
    let BenchCommand::Load(args) = cli.command else {
        panic!("not load");
    };
    assert_eq!(
        args.to_config()
            .split_config()
            .and_then(|split| split.long_lived),
        Some(crate::bench::traffic::LongLived {
            every: 100,
            spread: Duration::from_secs(20),
        })
    );
    for bad in ["0", "1.5", "x"] {
        assert!(
            TestCli::try_parse_from(["t", "load", "--split", "4", "--long-lived", bad]).is_err(),
            "{bad}"
        );
    }

    let cli = TestCli::try_parse_from([
        "t",
        "load",
        "--chain-spans",
        "100000",
        "--chain-every",
        "15s",
    ])
    .expect("parses");
    let BenchCommand::Load(args) = cli.command else {
        panic!("not load");
    };
    assert_eq!(
        args.to_config().chain,
        Some(loadgen::ChainConfig {
            spans: 100_000,
            every: Duration::from_secs(15),
            spans_per_request: loadgen::DEFAULT_CHAIN_SPANS_PER_REQUEST,
        })
    );

    let cli = TestCli::try_parse_from(["t", "load"]).expect("defaults");
    let BenchCommand::Load(args) = cli.command else {
        panic!("not load");
    };
    let config = args.to_config();
    assert_eq!(config.endpoint, "http://127.0.0.1:4317");
    assert_eq!(config.duration, Some(Duration::from_secs(10)));
    assert_eq!(config.spans_per_request, 400);
    assert!(config.retry.is_none());
    assert_eq!(
        (config.split, config.spread),
        (1, Duration::from_millis(300))
    );
}

#[test]
fn sink_arguments_become_a_config() {
    let cli = TestCli::try_parse_from([
        "t",
        "sink",
        "--grpc",
        "127.0.0.1:14317",
        "--stats",
        "127.0.0.1:14319",
        "--fail-first",
        "5",
        "--partial-reject",
        "2",
        "--retry-after",
        "1s",
        "--no-unique",
    ])
    .expect("parses");
    let BenchCommand::Sink(args) = cli.command else {
        panic!("not sink");
    };
    let config = args.to_config();
    assert_eq!(config.grpc, Some(([127, 0, 0, 1], 14317).into()));
    assert_eq!(config.http, None);
    assert_eq!(config.stats, Some(([127, 0, 0, 1], 14319).into()));
    assert_eq!(
        config.faults,
        Faults {
            fail_first: 5,
            partial_reject: 2,
            retry_after: Some(Duration::from_secs(1)),
            max_message_bytes: None,
            refuse_span_named: None,
        }
    );
    assert!(!config.track_unique);
    assert!(TestCli::try_parse_from(["t", "load", "--mix", "nope=1"]).is_err());
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("10 parsecs").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn reports_print_as_text_and_json() {
    let mut report = LoadReport {
        protocol: Some(Protocol::Grpc),
        senders: 2,
        spans_per_request: 400,
        elapsed_secs: 1.5,
        requests: 10,
        requests_ok: 9,
        requests_failed: 1,
        spans_accepted: 3600,
        violating_traces_sent: 4,
        ..LoadReport::default()
    };
    report.errors.insert("grpc Unavailable".to_owned(), 2);
    let text = report.to_string();
    assert!(text.contains("requests: 10 sent, 9 ok, 1 failed"), "{text}");
    assert!(text.contains("4 of them violating"), "{text}");
    assert!(text.contains("error: grpc Unavailable x2"), "{text}");
    let json = serde_json::to_string(&report).expect("JSON");
    assert!(json.contains("\"protocol\":\"grpc\""), "{json}");
    assert!(json.contains("\"violating_traces_sent\":4"), "{json}");
    let back: LoadReport = serde_json::from_str(&json).expect("parses back");
    assert_eq!(back, report);
}
