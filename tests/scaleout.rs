//! tracecheck scaled out by trace ID, as the gateway overlay runs it
//! (deploy/kubernetes/gateway): three daemons behind a router that does what
//! the OpenTelemetry Collector's `loadbalancing` exporter does with
//! `routing_key: traceID`:
//!
//! - each endpoint (`ip:port`, the k8s resolver's form) takes 100 positions
//!   on a ring of 36 000: CRC-32 (IEEE) of the endpoint's bytes followed by
//!   one byte 0..99, modulo 36 000; a position already taken is skipped;
//! - a span goes to the first ring position at or after CRC-32 of its 16
//!   trace-ID bytes modulo 36 000, wrapping to the first;
//! - a batch is split per endpoint, each part keeping its resource and scope.
//!
//! 1. Bank traffic through three instances: the per-instance verdict counts
//!    (scraped from each `/metrics`) add up to the exact totals, every trace
//!    completes exactly once, and each violating/rolled-back trace has its
//!    verdict on its ring owner and nowhere else.
//! 2. One instance is removed mid-traffic (ring rebuilt without it, then the
//!    instance shut down, as a StatefulSet scale-down does): nothing is lost
//!    in spans, but the traces in flight at that moment are split; the test
//!    counts them exactly and prints what their fragments were judged.
//!
//! Run with `cargo test --test scaleout -- --nocapture` to see the figures.

mod models_util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use models_util::{bounded, config, poll_until, repo_path, Live};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tonic::transport::Channel;
use tracecheck::bench::traffic::{GeneratedTrace, Rng, TraceShape, TrafficGenerator, TrafficMix};
use tracecheck::daemon::ModelsStage;
use tracecheck::engine::Verdict;
use tracecheck::evaluator::feed::RecvError;
use tracecheck::evaluator::registry::ModelSource;
use tracecheck::metrics::{CompletionReason, ReasonLabels, Transport, TransportLabels};

const BANK: &str = "overdraft-rolls-back";
const REASONS: [&str; 5] = ["idle", "root", "max_age", "evicted", "shutdown"];

// ------------------------------------------------------------------ ring

/// Positions on the ring: 360 degrees with two decimals.
const RING_POSITIONS: u32 = 36_000;
/// Positions per endpoint.
const POINTS_PER_ENDPOINT: u8 = 100;

fn crc32(parts: &[&[u8]]) -> u32 {
    // flate2's CRC is gzip's: CRC-32 with the IEEE polynomial, as Go's
    // crc32.ChecksumIEEE.
    let mut crc = flate2::Crc::new();
    for p in parts {
        crc.update(p);
    }
    crc.sum()
}

/// The loadbalancing exporter's consistent-hash ring.
struct Ring {
    points: Vec<(u32, String)>,
}

impl Ring {
    fn new(endpoints: &[String]) -> Ring {
        // The resolvers hand over a sorted list; the order decides which
        // endpoint keeps a position two of them hash to.
        let mut sorted = endpoints.to_vec();
        sorted.sort();
        let mut taken = HashSet::new();
        let mut points = Vec::new();
        for endpoint in &sorted {
            for i in 0..POINTS_PER_ENDPOINT {
                let pos = crc32(&[endpoint.as_bytes(), &[i]]) % RING_POSITIONS;
                if taken.insert(pos) {
                    points.push((pos, endpoint.clone()));
                }
            }
        }
        points.sort_by_key(|p| p.0);
        Ring { points }
    }

    fn owner(&self, trace_id: &[u8; 16]) -> &str {
        let pos = crc32(&[trace_id]) % RING_POSITIONS;
        let i = self.points.partition_point(|p| p.0 < pos);
        &self.points[if i == self.points.len() { 0 } else { i }].1
    }
}

#[test]
fn ring_is_the_collectors() {
    // The standard CRC-32/IEEE check value.
    assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    let endpoints: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:4317")).collect();
    let three = Ring::new(&endpoints);
    let two = Ring::new(&endpoints[..2]);
    let mut rng = Rng::new(7);
    let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut moved = 0;
    for _ in 0..30_000 {
        let id = rng.trace_id();
        let before = three.owner(&id);
        *owned.entry(before).or_default() += 1;
        // Consistent hashing: removing a member moves only its own traces.
        if before != endpoints[2] {
            assert_eq!(two.owner(&id), before);
        } else {
            moved += 1;
        }
    }
    // Every member owns a fair share (each third within 20-47%).
    for (endpoint, n) in &owned {
        assert!((6_000..14_000).contains(n), "{endpoint} owns {n} of 30000");
    }
    assert_eq!(moved, owned[endpoints[2].as_str()]);
}

// ------------------------------------------------------------------ router

/// One span with the resource and scope it came with.
#[derive(Clone)]
struct Unit {
    trace_id: [u8; 16],
    resource: Option<Resource>,
    scope: Option<InstrumentationScope>,
    span: Span,
}

fn units(trace: &GeneratedTrace) -> Vec<Unit> {
    let mut out = Vec::new();
    for rs in trace.to_request().resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Unit {
                    trace_id: trace.trace_id,
                    resource: rs.resource.clone(),
                    scope: ss.scope.clone(),
                    span,
                });
            }
        }
    }
    out
}

/// Spans regrouped under their resources and scopes.
fn pack(units: &[&Unit]) -> ExportTraceServiceRequest {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for u in units {
        let r = match out.iter().position(|rs| rs.resource == u.resource) {
            Some(i) => i,
            None => {
                out.push(ResourceSpans {
                    resource: u.resource.clone(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let rs = &mut out[r];
        let s = match rs.scope_spans.iter().position(|ss| ss.scope == u.scope) {
            Some(i) => i,
            None => {
                rs.scope_spans.push(ScopeSpans {
                    scope: u.scope.clone(),
                    ..Default::default()
                });
                rs.scope_spans.len() - 1
            }
        };
        rs.scope_spans[s].spans.push(u.span.clone());
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

/// The Collector's loadbalancing exporter, as far as routing goes.
struct Router {
    ring: Ring,
    clients: HashMap<String, TraceServiceClient<Channel>>,
    /// Which endpoints received spans of each trace.
    holders: HashMap<[u8; 16], HashSet<String>>,
    spans_sent: u64,
}

impl Router {
    async fn new(endpoints: &[String]) -> Router {
        let mut clients = HashMap::new();
        for e in endpoints {
            let client = TraceServiceClient::connect(format!("http://{e}"))
                .await
                .unwrap_or_else(|err| panic!("connect {e}: {err}"));
            clients.insert(e.clone(), client);
        }
        Router {
            ring: Ring::new(endpoints),
            clients,
            holders: HashMap::new(),
            spans_sent: 0,
        }
    }

    /// Ring rebuilt from the new member list (the resolver saw a change).
    fn set_members(&mut self, endpoints: &[String]) {
        self.ring = Ring::new(endpoints);
        self.clients.retain(|e, _| endpoints.contains(e));
    }

    /// One incoming batch: split by owner, one export per owner.
    async fn export(&mut self, batch: &[Unit]) {
        let mut parts: BTreeMap<String, Vec<&Unit>> = BTreeMap::new();
        for u in batch {
            let owner = self.ring.owner(&u.trace_id).to_owned();
            self.holders
                .entry(u.trace_id)
                .or_default()
                .insert(owner.clone());
            parts.entry(owner).or_default().push(u);
        }
        for (endpoint, units) in parts {
            let client = self
                .clients
                .get_mut(&endpoint)
                .unwrap_or_else(|| panic!("no client for {endpoint}"));
            let answer = client
                .export(pack(&units))
                .await
                .unwrap_or_else(|e| panic!("export to {endpoint}: {e}"))
                .into_inner();
            if let Some(p) = answer.partial_success {
                assert_eq!(p.rejected_spans, 0, "{endpoint}: {}", p.error_message);
            }
            self.spans_sent += units.len() as u64;
        }
    }
}

// ------------------------------------------------------------------ set-up

/// The example models, with the bank model's `within` cut from 30s to 1s so
/// violating traces get their final verdict within the test.
fn models() -> Vec<ModelSource> {
    ["bank.yaml", "http-errors.yaml", "database.yaml"]
        .iter()
        .map(|f| {
            let path = repo_path(&format!("config/models/{f}"));
            let mut text = std::fs::read_to_string(&path).expect("example model");
            if *f == "bank.yaml" {
                assert!(text.contains("within: 30s"), "bank.yaml changed its within");
                text = text.replace("within: 30s", "within: 1s");
            }
            ModelSource::Embedded {
                name: path.display().to_string(),
                text,
            }
        })
        .collect()
}

async fn start(n: usize) -> Vec<Live> {
    let mut out = Vec::new();
    for _ in 0..n {
        // Short timeouts keep the test fast, yet long beside the ~50 ms over
        // which a window of traces is sent, so the removed instance still
        // holds its fragments of the split traces when it stops, even on a
        // loaded machine.
        let c = config(
            "  settle: 1s\n  idle_timeout: 1s\n  root_settle: 800ms\n",
            None,
        );
        out.push(Live::start(c, models()).await);
    }
    out
}

fn endpoint(live: &Live) -> String {
    live.grpc.to_string()
}

fn traces(n: usize, seed: u64) -> Vec<GeneratedTrace> {
    // Bank-heavy (the demo's mix), so every verdict kind is common.
    let mix = TrafficMix {
        web: 40,
        bank_commit: 30,
        bank_rollback: 20,
        bank_violation: 10,
    };
    let mut generator = TrafficGenerator::new(mix, Rng::new(seed));
    (0..n).map(|_| generator.next_trace()).collect()
}

/// What each instance reports on `/metrics`.
#[derive(Debug, Default, Clone)]
struct Counts {
    completed: BTreeMap<&'static str, u64>,
    accepted_spans: u64,
    /// (pass, fail, skip, inconclusive) per model.
    verdicts: BTreeMap<String, (u64, u64, u64, u64)>,
}

impl Counts {
    fn completed(&self) -> u64 {
        self.completed.values().sum()
    }

    fn verdicts_given(&self, model: &str) -> u64 {
        let (p, f, s, i) = self.verdicts.get(model).copied().unwrap_or_default();
        p + f + s + i
    }

    async fn scrape(live: &Live) -> Counts {
        let m = live.metrics().await;
        let mut c = Counts {
            accepted_spans: m.get("tracecheck_receiver_accepted_spans_total", &[]) as u64,
            ..Default::default()
        };
        for reason in REASONS {
            c.completed.insert(
                reason,
                m.get("tracecheck_traces_completed_total", &[("reason", reason)]) as u64,
            );
        }
        for id in live.model_ids().await {
            let (p, f, s) = m.verdicts(&id);
            let i = m.get(
                "tracecheck_model_verdicts_total",
                &[("model", &id), ("verdict", "inconclusive")],
            ) as u64;
            c.verdicts.insert(id, (p, f, s, i));
        }
        c
    }

    /// The same figures read in-process, for an instance whose admin
    /// endpoint is already closed.
    fn of_stopped(metrics: &tracecheck::metrics::Metrics, models: &ModelsStage) -> Counts {
        let reasons = [
            ("idle", CompletionReason::idle),
            ("root", CompletionReason::root),
            ("max_age", CompletionReason::max_age),
            ("evicted", CompletionReason::evicted),
            ("shutdown", CompletionReason::shutdown),
        ];
        let mut c = Counts {
            accepted_spans: metrics
                .accepted_spans
                .get_or_create(&TransportLabels {
                    transport: Transport::grpc,
                })
                .get(),
            ..Default::default()
        };
        for (name, reason) in reasons {
            c.completed.insert(
                name,
                metrics
                    .traces_completed
                    .get_or_create(&ReasonLabels { reason })
                    .get(),
            );
        }
        let loaded = models.registry.current();
        for (m, counters) in loaded.engine.models().iter().zip(&loaded.counters) {
            c.verdicts.insert(
                m.id.clone(),
                (
                    counters.count(Verdict::Pass),
                    counters.count(Verdict::Fail),
                    counters.count(Verdict::Skip),
                    counters.count(Verdict::Inconclusive),
                ),
            );
        }
        c
    }
}

fn sum(counts: &[Counts]) -> Counts {
    let mut total = Counts::default();
    for c in counts {
        total.accepted_spans += c.accepted_spans;
        for (r, n) in &c.completed {
            *total.completed.entry(r).or_default() += n;
        }
        for (m, (p, f, s, i)) in &c.verdicts {
            let t = total.verdicts.entry(m.clone()).or_default();
            t.0 += p;
            t.1 += f;
            t.2 += s;
            t.3 += i;
        }
    }
    total
}

/// The bank model's verdict on a whole trace of this shape.
fn bank_verdict(shape: TraceShape) -> Verdict {
    match shape {
        TraceShape::BankRollback => Verdict::Pass,
        TraceShape::BankViolation => Verdict::Fail,
        // `when` (balance < amount) is false for a commit; web traces do
        // not match.
        TraceShape::BankCommit | TraceShape::Web => Verdict::Skip,
    }
}

/// Every bank-model verdict an instance gives, per trace, as a watcher of
/// its verdict stream sees them (the result store keeps only a sample of
/// passes; the stream carries them all while someone listens).
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<VerdictsByTrace>>);

type VerdictsByTrace = HashMap<[u8; 16], Vec<(Verdict, CompletionReason)>>;

impl Seen {
    fn watch(models: &ModelsStage) -> Seen {
        let seen = Seen::default();
        let mut rx = models.verdicts.subscribe(true);
        let map = Arc::clone(&seen.0);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(r) if &*r.model == BANK => map
                        .lock()
                        .expect("verdict map")
                        .entry(r.trace_id.0)
                        .or_default()
                        .push((r.verdict, r.completion_reason)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        panic!("the verdict watcher fell {n} behind")
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        seen
    }

    fn of(&self, id: &[u8; 16]) -> Vec<(Verdict, CompletionReason)> {
        self.0
            .lock()
            .expect("verdict map")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_give_exact_totals_with_no_trace_split() {
    bounded(Duration::from_secs(60), async {
        let lives = start(3).await;
        let seen: Vec<Seen> = lives.iter().map(|l| Seen::watch(&l.models)).collect();
        let endpoints: Vec<String> = lives.iter().map(endpoint).collect();
        let mut router = Router::new(&endpoints).await;

        const TRACES: usize = 1_500;
        let traces = traces(TRACES, 42);
        let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &traces {
            let v = bank_verdict(t.shape);
            *expected
                .entry(match v {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "fail",
                    Verdict::Skip => "skip",
                    Verdict::Inconclusive => "inconclusive",
                })
                .or_default() += 1;
        }
        // Spans in order, cut into batches of 200 regardless of trace
        // boundaries (as a Collector's batch processor does): a trace may
        // span two batches, and every batch carries many traces.
        let stream: Vec<Unit> = traces.iter().flat_map(units).collect();
        let started = Instant::now();
        for batch in stream.chunks(200) {
            router.export(batch).await;
        }
        let sent_in = started.elapsed();

        let counts = poll_until(Duration::from_secs(30), "every verdict", || async {
            let mut all = Vec::new();
            for l in &lives {
                all.push(Counts::scrape(l).await);
            }
            let total = sum(&all);
            (total.completed() >= TRACES as u64 && total.verdicts_given(BANK) >= TRACES as u64)
                .then_some(all)
        })
        .await;
        // A moment more: nothing may arrive beyond the exact totals.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut counts_after = Vec::new();
        for l in &lives {
            counts_after.push(Counts::scrape(l).await);
        }
        let total = sum(&counts_after);

        eprintln!("scale-out, 3 instances: {TRACES} traces, {} spans sent in {sent_in:?}", stream.len());
        for (i, c) in counts_after.iter().enumerate() {
            eprintln!(
                "  instance {i} ({}): {} traces completed {:?}, {} spans, bank (pass, fail, skip, inconclusive) = {:?}",
                endpoints[i],
                c.completed(),
                c.completed,
                c.accepted_spans,
                c.verdicts[BANK]
            );
        }
        eprintln!("  total bank (pass, fail, skip) = {:?}, expected {expected:?}", total.verdicts[BANK]);

        assert_eq!(counts.len(), 3);
        // Every span arrived once, every trace completed once: a trace split
        // over two instances would complete twice.
        assert_eq!(total.accepted_spans, stream.len() as u64);
        assert_eq!(router.spans_sent, stream.len() as u64);
        assert_eq!(total.completed(), TRACES as u64, "{:?}", total.completed);
        assert!(router.holders.values().all(|h| h.len() == 1), "a trace reached two instances");
        for c in &counts_after {
            assert!(c.completed() > TRACES as u64 / 6, "an instance got too little: {c:?}");
            assert_eq!(c.completed["evicted"] + c.completed["shutdown"], 0);
        }
        // Every model gave every trace exactly one verdict…
        for model in total.verdicts.keys() {
            assert_eq!(total.verdicts_given(model), TRACES as u64, "{model}");
        }
        // …and the bank model the right one, in total…
        assert_eq!(
            total.verdicts[BANK],
            (expected["pass"], expected["fail"], expected["skip"], 0)
        );
        // …and per trace, on the instance the ring assigns, and only there.
        let index: HashMap<&str, usize> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.as_str(), i))
            .collect();
        for t in &traces {
            let want = bank_verdict(t.shape);
            if want == Verdict::Skip {
                continue;
            }
            let owner = index[router.ring.owner(&t.trace_id)];
            for (i, seen) in seen.iter().enumerate() {
                let kept = seen.of(&t.trace_id);
                if i == owner {
                    assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![want], "{:?} on its owner", t.shape);
                } else {
                    assert!(kept.is_empty(), "trace verdict on a non-owner");
                }
            }
        }
        for l in lives {
            l.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_instance_mid_traffic_splits_only_the_traces_in_flight() {
    bounded(Duration::from_secs(60), async {
        let mut lives = start(3).await;
        let seen: Vec<Seen> = lives.iter().map(|l| Seen::watch(&l.models)).collect();
        let endpoints: Vec<String> = lives.iter().map(endpoint).collect();
        let mut router = Router::new(&endpoints).await;

        // Traces in flight at once: spans of 150 traces interleaved, so each
        // trace's spans arrive over ~20 batches, as from many services whose
        // SDKs export on their own schedules.
        const TRACES: usize = 1_500;
        const WINDOW: usize = 150;
        let traces = traces(TRACES, 4242);
        let shapes: HashMap<[u8; 16], TraceShape> =
            traces.iter().map(|t| (t.trace_id, t.shape)).collect();
        let mut stream = Vec::new();
        let mut window_starts = Vec::new();
        for window in traces.chunks(WINDOW) {
            window_starts.push(stream.len());
            let mut per_trace: Vec<std::collections::VecDeque<Unit>> =
                window.iter().map(|t| units(t).into()).collect();
            while per_trace.iter().any(|q| !q.is_empty()) {
                for q in per_trace.iter_mut() {
                    if let Some(u) = q.pop_front() {
                        stream.push(u);
                    }
                }
            }
        }
        const BATCH: usize = 50;
        let batches: Vec<&[Unit]> = stream.chunks(BATCH).collect();
        // Halfway through the sixth window: its traces are half sent.
        let switch_at = (window_starts[5] + window_starts[6]) / 2 / BATCH;

        // Instance 2 leaves: the Collector's resolver drops it from the ring
        // (it turned unready), then it gets SIGTERM and shuts down
        // gracefully: receivers closed, buffered traces completed with
        // reason="shutdown" and evaluated.
        let leaving = lives.pop().expect("three instances");
        let leaving_endpoint = endpoint(&leaving);
        let mut leaving = Some(leaving);
        let mut leaving_counts = None;
        let mut before: HashSet<[u8; 16]> = HashSet::new();
        for (k, batch) in batches.iter().enumerate() {
            if k == switch_at {
                before = router.holders.keys().copied().collect();
                router.set_members(&endpoints[..2]);
                let l = leaving.take().expect("leaves once");
                let metrics = Arc::clone(&l.daemon.metrics);
                let models = Arc::clone(&l.models);
                l.stop().await;
                leaving_counts = Some((Counts::of_stopped(&metrics, &models), models));
            }
            router.export(batch).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (left, left_models) = leaving_counts.expect("instance removed");

        let split: Vec<[u8; 16]> = router
            .holders
            .iter()
            .filter(|(_, h)| h.len() > 1)
            .map(|(id, _)| *id)
            .collect();
        // Traces begun after the switch that the old ring gave the removed
        // instance: re-routed whole, judged correctly by a survivor.
        let three = Ring::new(&endpoints);
        let moved_whole = router
            .holders
            .iter()
            .filter(|(id, h)| {
                h.len() == 1 && !before.contains(*id) && three.owner(id) == leaving_endpoint
            })
            .count();
        let expected_completions = TRACES as u64 + split.len() as u64;

        let survivors = poll_until(Duration::from_secs(30), "survivors' verdicts", || async {
            let mut all = Vec::new();
            for l in &lives {
                all.push(Counts::scrape(l).await);
            }
            let total = sum(&all);
            (total.completed() + left.completed() >= expected_completions
                && total.verdicts_given(BANK) + left.verdicts_given(BANK) >= expected_completions)
                .then_some(all)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut survivors_after = Vec::new();
        for l in &lives {
            survivors_after.push(Counts::scrape(l).await);
        }
        let total = sum(&[survivors_after.clone(), vec![left.clone()]].concat());

        // What the split traces' fragments were judged, per shape.
        let mut judged: BTreeMap<String, usize> = BTreeMap::new();
        let mut wrong_on_unsplit = 0;
        for (id, holders) in &router.holders {
            let shape = shapes[id];
            let mut verdicts = Vec::new();
            // `seen` is in start order; the leaving instance was the last.
            for (e, seen) in lives
                .iter()
                .map(endpoint)
                .chain([leaving_endpoint.clone()])
                .zip(&seen)
            {
                if holders.contains(&e) {
                    let kept = seen.of(id);
                    let side = if e == leaving_endpoint { "removed" } else { "survivor" };
                    verdicts.push(match kept.first() {
                        Some((v, r)) => format!("{side}:{v:?}/{r:?}"),
                        None => format!("{side}:Skip"),
                    });
                }
            }
            if holders.len() > 1 {
                verdicts.sort();
                *judged
                    .entry(format!("{shape:?} -> {}", verdicts.join(" + ")))
                    .or_default() += 1;
            } else {
                let want = match bank_verdict(shape) {
                    Verdict::Skip => "Skip",
                    Verdict::Pass => "Pass",
                    Verdict::Fail => "Fail",
                    Verdict::Inconclusive => "Inconclusive",
                };
                // What the removed instance still held at SIGTERM is cut
                // short: inconclusive, whatever it would have been.
                let cut_short = verdicts[0].starts_with("removed:Inconclusive/shutdown");
                if !verdicts[0].contains(want) && !cut_short {
                    wrong_on_unsplit += 1;
                }
            }
        }

        eprintln!(
            "scale-out, removal: {TRACES} traces ({} spans) in {} batches, instance {leaving_endpoint} removed before batch {switch_at}",
            stream.len(),
            batches.len()
        );
        eprintln!(
            "  removed instance: {} traces completed {:?}, {} spans, bank {:?}",
            left.completed(),
            left.completed,
            left.accepted_spans,
            left.verdicts[BANK]
        );
        for (i, c) in survivors_after.iter().enumerate() {
            eprintln!(
                "  survivor {i}: {} traces completed {:?}, {} spans, bank {:?}",
                c.completed(),
                c.completed,
                c.accepted_spans,
                c.verdicts[BANK]
            );
        }
        eprintln!(
            "  split traces: {} of {TRACES} (in flight at the switch); re-routed whole: {moved_whole}; wrong verdicts on unsplit traces: {wrong_on_unsplit}",
            split.len()
        );
        for (what, n) in &judged {
            eprintln!("    {n:4} x {what}");
        }

        assert_eq!(survivors.len(), 2);
        // Graceful removal loses no span: the removed instance took all it
        // was sent before it stopped, the survivors everything after.
        assert_eq!(total.accepted_spans, stream.len() as u64);
        // Only traces in flight at the switch are split, and the removed
        // instance held at most a window's worth of them.
        assert!(!split.is_empty(), "the switch happened mid-traffic");
        assert!(split.len() <= WINDOW, "{} split traces", split.len());
        // Each fragment completes (and is judged) once: the split traces
        // count twice, everything else once.
        assert_eq!(total.completed(), expected_completions, "{:?}", total.completed);
        for model in total.verdicts.keys() {
            assert_eq!(total.verdicts_given(model), expected_completions, "{model}");
        }
        // tracecheck's part is visible: what the removed instance still
        // held at SIGTERM completed with reason="shutdown"; that includes
        // the fragments of every split trace.
        assert!(left.completed["shutdown"] >= split.len() as u64, "{:?}", left.completed);
        // ... and its verdicts on them say they may be missing spans.
        let cut_short: Vec<_> = left_models
            .store
            .results(Some(BANK), None, 1000)
            .into_iter()
            .filter(|r| r.completion_reason == CompletionReason::shutdown)
            .collect();
        assert!(!cut_short.is_empty(), "no verdict of a trace cut short by the removal");
        assert!(cut_short.iter().all(|r| r.incomplete), "a verdict cut short by shutdown not marked incomplete");
        assert_eq!(wrong_on_unsplit, 0, "a trace that stayed whole was judged wrongly");
        for l in lives {
            l.stop().await;
        }
    })
    .await;
}

// ------------------------------------------------------- rolling restart

/// Ports free now, for admin endpoints that must be known before their
/// daemons start (each instance names all of them in `tier.peers`).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// An instance of the tier: admin on `admin`, every port of `peers`
/// announced to, the same short timers as [`start`].
async fn start_in_tier(admin: u16, peers: &[u16]) -> Live {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: 127.0.0.1:0 }}\n    http: {{ endpoint: 127.0.0.1:0 }}\n\
         admin: {{ endpoint: 127.0.0.1:{admin} }}\n\
         assembler:\n  settle: 1s\n  idle_timeout: 1s\n  root_settle: 800ms\n\
         tier:\n  peers: [{}]\n  announce_timeout: 1s\n",
        peers.join(", ")
    );
    let c = tracecheck::config::Config::from_yaml("tier.yaml", &text, |_| None)
        .unwrap_or_else(|e| panic!("tier config: {e}\n{text}"));
    Live::start(c.config, models()).await
}

impl Router {
    /// The ring rebuilt with `endpoints`, connecting to new members.
    async fn set_members_connecting(&mut self, endpoints: &[String]) {
        for e in endpoints {
            if !self.clients.contains_key(e) {
                let client = TraceServiceClient::connect(format!("http://{e}"))
                    .await
                    .unwrap_or_else(|err| panic!("connect {e}: {err}"));
                self.clients.insert(e.clone(), client);
            }
        }
        self.set_members(endpoints);
    }
}

/// What happens before a window of traffic is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Send,
    /// Halfway through the window, instance `k` leaves the tier as the
    /// manifests' preStop makes it: `POST /api/v1/tier/leave`, then the
    /// balancer drops it, then SIGTERM.
    Leave(usize),
    /// Halfway through the window, instance `k`'s replacement joins.
    Join(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_tier_fails_no_correct_trace() {
    bounded(Duration::from_secs(150), async {
        // Ports 0..3 for the instances, 3..6 for their replacements.
        let ports = free_ports(6);
        let mut lives: Vec<Option<Live>> = Vec::new();
        for k in 0..3 {
            lives.push(Some(start_in_tier(ports[k], &ports).await));
        }
        let mut members: Vec<String> = lives.iter().flatten().map(endpoint).collect();
        let mut seen: HashMap<String, Seen> = lives
            .iter()
            .flatten()
            .map(|l| (endpoint(l), Seen::watch(&l.models)))
            .collect();
        let mut router = Router::new(&members).await;
        // The generator dates a trace's spans back from when it is made;
        // traces begun before an instance started are (rightly) judged as
        // cut by its restart.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // A StatefulSet's rolling update: each instance in turn leaves, and
        // its replacement (a new address) joins, while traffic goes on.
        // Quiet windows between changes leave traces that no change could
        // touch, which must be judged exactly.
        use Step::*;
        let plan = [
            Send,
            Send,
            Send,
            Leave(0),
            Send,
            Join(0),
            Send,
            Leave(1),
            Send,
            Join(1),
            Send,
            Leave(2),
            Send,
            Join(2),
            Send,
            Send,
            Send,
        ];
        const PER_WINDOW: usize = 40;
        const BATCH: usize = 50;
        const PAUSE: Duration = Duration::from_millis(1_200);
        let mut generator = TrafficGenerator::new(
            TrafficMix {
                web: 20,
                bank_commit: 20,
                bank_rollback: 40,
                bank_violation: 20,
            },
            Rng::new(77),
        );
        let mut shapes: HashMap<[u8; 16], TraceShape> = HashMap::new();
        // When each trace's first and last spans were sent.
        let mut sent: HashMap<[u8; 16], (Instant, Instant)> = HashMap::new();
        let mut changes: Vec<(Instant, Step)> = Vec::new();
        let mut stopping: Option<Live> = None;
        for step in plan {
            // Generated now, so their spans start now, as live traffic's do.
            let window: Vec<GeneratedTrace> =
                (0..PER_WINDOW).map(|_| generator.next_trace()).collect();
            let mut per_trace: Vec<std::collections::VecDeque<Unit>> =
                window.iter().map(|t| units(t).into()).collect();
            let mut stream = Vec::new();
            while per_trace.iter().any(|q| !q.is_empty()) {
                for q in per_trace.iter_mut() {
                    stream.extend(q.pop_front());
                }
            }
            for t in &window {
                shapes.insert(t.trace_id, t.shape);
            }
            let batches: Vec<&[Unit]> = stream.chunks(BATCH).collect();
            let half = batches.len() / 2;
            for (i, batch) in batches.iter().enumerate() {
                if i == half {
                    match step {
                        Send => {}
                        Leave(k) => {
                            let l = lives[k].take().expect("leaves once");
                            members.retain(|e| *e != endpoint(&l));
                            // Kubernetes takes the pod out of the endpoints
                            // as preStop starts: for the second replica the
                            // balancer moves first, then the announcement.
                            if k == 1 {
                                router.set_members_connecting(&members).await;
                            }
                            let (status, _) = l.post(tracecheck::tier::LEAVE_PATH).await;
                            assert_eq!(status, 204, "tier leave");
                            changes.push((Instant::now(), step));
                            router.set_members_connecting(&members).await;
                            // SIGTERM after the preStop wait, traffic going
                            // on elsewhere meanwhile.
                            stopping = Some(l);
                        }
                        Join(k) => {
                            let l = start_in_tier(ports[3 + k], &ports).await;
                            seen.insert(endpoint(&l), Seen::watch(&l.models));
                            members.push(endpoint(&l));
                            router.set_members_connecting(&members).await;
                            changes.push((Instant::now(), step));
                            lives[k] = Some(l);
                        }
                    }
                }
                let now = Instant::now();
                for u in batch.iter() {
                    sent.entry(u.trace_id)
                        .and_modify(|(_, last)| *last = now)
                        .or_insert((now, now));
                }
                router.export(batch).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(PAUSE).await;
            if let Some(l) = stopping.take() {
                l.stop().await;
            }
        }

        // Every whole trace the bank model applies to has been judged
        // (settle 1s, within 1s). Skips are counted, not published: a split
        // trace neither part of which holds the model's `match` and `when`
        // spans is a skip on both sides, with nothing to wait for.
        let judged = |id: &[u8; 16]| bank_verdict(shapes[id]) != Verdict::Skip;
        let unjudged = || {
            router
                .holders
                .iter()
                .filter(|(id, holders)| {
                    judged(id)
                        && holders.len() == 1
                        && holders.iter().all(|h| seen[h].of(id).is_empty())
                })
                .map(|(id, holders)| (shapes[id], holders.clone(), sent[id].0.elapsed()))
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !unjudged().is_empty() {
            assert!(Instant::now() < deadline, "never judged: {:?}", unjudged());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A fragment none of whose spans wakes the model gives no verdict
        // to wait for; the others come within settle + within of the last.
        tokio::time::sleep(Duration::from_secs(3)).await;

        // A trace no change could touch: judged before the first change
        // that could matter, or first sent after every balancer had it.
        let margin = Duration::from_millis(500);
        let grace = tracecheck::tier::JOIN_GRACE + margin;
        // settle, then `within` for a violation's verdict.
        let settle = Duration::from_secs(2) + margin;
        let quiet = |(first, last): (Instant, Instant)| {
            changes
                .iter()
                .all(|(c, _)| last + settle < *c || first > *c + grace)
        };
        let mut false_failures = Vec::new();
        let mut wrong_quiet = Vec::new();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for (id, holders) in &router.holders {
            let shape = shapes[id];
            let verdicts: Vec<Verdict> = holders
                .iter()
                .flat_map(|h| seen[h].of(id))
                .map(|(v, _)| v)
                .collect();
            let correct = bank_verdict(shape) != Verdict::Fail;
            if correct && verdicts.contains(&Verdict::Fail) {
                false_failures.push((shape, holders.len(), verdicts.clone()));
            }
            let whole = holders.len() == 1;
            let q = quiet(sent[id]);
            if judged(id) && whole && q && verdicts != [bank_verdict(shape)] {
                let reasons: Vec<_> = holders.iter().flat_map(|h| seen[h].of(id)).collect();
                let t = sent[id];
                wrong_quiet.push((
                    shape,
                    reasons,
                    changes
                        .iter()
                        .map(|(c, _)| {
                            (c.duration_since(t.0.min(*c)).as_millis() as i64)
                                - (t.0.duration_since(t.0.min(*c)).as_millis() as i64)
                        })
                        .collect::<Vec<_>>(),
                ));
            }
            let mut v: Vec<String> = verdicts.iter().map(|v| format!("{v:?}")).collect();
            v.sort();
            *outcomes
                .entry(format!(
                    "{shape:?} {} {} -> {}",
                    if whole { "whole" } else { "split" },
                    if q { "quiet" } else { "at-change" },
                    v.join("+")
                ))
                .or_default() += 1;
        }
        eprintln!(
            "rolling restart: {} traces, {} split, changes at {:?}",
            router.holders.len(),
            router.holders.values().filter(|h| h.len() > 1).count(),
            changes.iter().map(|(_, s)| s).collect::<Vec<_>>()
        );
        for (what, n) in &outcomes {
            eprintln!("  {n:4} x {what}");
        }
        assert!(
            router.holders.values().any(|h| h.len() > 1),
            "no trace was split: the test proves nothing"
        );
        assert!(
            outcomes
                .keys()
                .any(|k| k.starts_with("BankViolation whole quiet")),
            "no violating trace away from the changes"
        );
        assert_eq!(false_failures, Vec::new(), "correct traces failed");
        assert_eq!(
            wrong_quiet,
            Vec::new(),
            "traces away from every change judged wrongly"
        );
        for l in lives.into_iter().flatten() {
            l.stop().await;
        }
    })
    .await;
}
