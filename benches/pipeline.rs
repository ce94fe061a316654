//! Criterion micro-benchmarks of the pipeline stages, on synthetic but
//! realistic traffic from `tracecheck::bench::traffic` (web traces of about
//! eight spans, the four-span bank-withdrawal traces, ~230 B a span in protobuf):
//!
//! - `decode`: one 400-span OTLP export request, walked lazily the way the
//!   receiver does it (`LazyExportRequest::decode` + `otlp::walk`), against a
//!   full prost decode of `ExportTraceServiceRequest` and the OTLP/JSON
//!   decoder (alone, and with the receiver's re-encode + walk);
//!   `decode/json_decode`: the JSON decoder on the same 400 spans with ten
//!   attributes each, what instrumented HTTP servers tend to send.
//! - `assemble`: `Assembler::insert` of a 400-span request plus
//!   `poll_completed`, on a long-lived assembler in steady state.
//! - `build_trace`: the engine's `Trace` from `ResourceSpans`, and from the
//!   assembler's raw span slices decoded directly (`from_raw_spans`, every
//!   attribute; `for_100_models`, only the keys the 100-model set reads: the
//!   daemon's path).
//! - `evaluate`: `Engine::evaluate_woken` (the daemon's path: the models a trace
//!   does not wake are left out and counted as skips in bulk) with 1, 10, 100
//!   and 1000 models on bank and web traces. 1 = the bank model; 10 = the
//!   bank model and nine models that match every trace; 100 and 1000 = those ten plus models matching
//!   nothing (`match: span[name = "op-N"]`), the issue's "most matching
//!   nothing, ten matching".
//!
//! After the criterion groups, `evaluate/paired_ratio` measures the issue's
//! target head to head: 10 and 1000 models alternated on the same traces,
//! the median of per-round ratios (saved to `target/criterion/paired_ratio.json`).
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) on
//! Linux, not wall time: the target is CPU per span, and on a shared
//! two-core machine wall time mostly measures the neighbours. Set
//! `TRACECHECK_BENCH_CLOCK=wall` for wall time (always used off Linux).
//!
//! Run with `cargo bench --bench pipeline`; `python3 benches/summarize.py`
//! turns the results under `target/criterion` into the BENCHMARKS.md table
//! and the 1000-vs-10-models ratio. Under `cargo test --all-targets` each
//! benchmark runs once, as a smoke test.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, BatchSize, BenchmarkId, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use tokio::time::Instant;

use tracecheck::assembler::config::AssemblerConfig;
use tracecheck::assembler::Assembler;
use tracecheck::bench::traffic::{GeneratedTrace, Rng, TraceShape, TrafficGenerator, TrafficMix};
use tracecheck::engine::{Engine, EvalContext, Trace, Verdict};
use tracecheck::evaluator::{build_trace, build_trace_for};
use tracecheck::metrics::Metrics;
use tracecheck::otlp::{self, KeyedSpan, LazyExportRequest, RawSpan};

/// Spans in each export request of the decode and assemble benchmarks.
const REQUEST_SPANS: usize = 400;
/// Traces evaluated per iteration of the evaluate/build_trace benchmarks.
const TRACES_PER_ITER: usize = 32;
/// Model counts of the evaluate benchmark.
const MODEL_COUNTS: [usize; 4] = [1, 10, 100, 1000];
const SEED: u64 = 0x7ace_c4ec;

type Criterion = criterion::Criterion<Clock>;

/// Criterion measurement: CPU time of the measuring thread, or wall time.
struct Clock {
    wall: bool,
    base: std::time::Instant,
    /// Values are nanoseconds either way, formatted as durations.
    format: WallTime,
}

impl Clock {
    fn from_env() -> Clock {
        let wall = !cfg!(target_os = "linux")
            || std::env::var("TRACECHECK_BENCH_CLOCK").is_ok_and(|v| v == "wall");
        Clock {
            wall,
            base: std::time::Instant::now(),
            format: WallTime,
        }
    }

    fn now_ns(&self) -> u64 {
        #[cfg(target_os = "linux")]
        if !self.wall {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            return t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
        }
        self.base.elapsed().as_nanos() as u64
    }
}

impl Measurement for Clock {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        self.now_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.format.formatter()
    }
}

fn generator(seed: u64) -> TrafficGenerator {
    TrafficGenerator::new(TrafficMix::default(), Rng::new(seed))
}

fn request_400() -> ExportTraceServiceRequest {
    generator(SEED).next_batch(REQUEST_SPANS).request
}

/// The 400-span request with every span's attributes filled up to ten (the
/// generator's spans carry two to five), with the value types SDKs send.
fn request_400_ten_attributes() -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    let mut request = request_400();
    let spans = request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans);
    for (n, span) in spans.enumerate() {
        let mut i = 0;
        while span.attributes.len() < 10 {
            let value = match i % 4 {
                0 => any_value::Value::StringValue(format!("value-{n}-{i}")),
                1 => any_value::Value::IntValue(n as i64 * 1_000 + i),
                2 => any_value::Value::DoubleValue(n as f64 / 7.0),
                _ => any_value::Value::BoolValue(n % 2 == 0),
            };
            span.attributes.push(KeyValue {
                key: format!("app.extra.{i}"),
                value: Some(AnyValue { value: Some(value) }),
                ..KeyValue::default()
            });
            i += 1;
        }
    }
    request
}

fn walk_bytes(bytes: Bytes) -> otlp::Walked {
    let lazy = LazyExportRequest::decode(bytes).expect("lazy decode");
    otlp::walk(lazy).expect("walk")
}

// ---------------------------------------------------------------- decode

fn decode(c: &mut Criterion) {
    let request = request_400();
    let proto = Bytes::from(request.encode_to_vec());
    let json = Bytes::from(otlp::json::encode_export_request(&request));
    eprintln!(
        "decode data: {REQUEST_SPANS} spans in {} resource spans; protobuf {} B ({} B/span), JSON {} B ({} B/span)",
        request.resource_spans.len(),
        proto.len(),
        proto.len() / REQUEST_SPANS,
        json.len(),
        json.len() / REQUEST_SPANS
    );
    assert_eq!(walk_bytes(proto.clone()).spans.len(), REQUEST_SPANS);

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(REQUEST_SPANS as u64));
    // What the gRPC and HTTP/protobuf receivers do: nested messages stay
    // slices of the request buffer.
    g.bench_function("lazy_walk", |b| {
        b.iter(|| walk_bytes(black_box(proto.clone())))
    });
    // For comparison: every span, attribute and string copied out.
    g.bench_function("prost_full", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&proto[..])).expect("decode"))
    });
    g.bench_function("json", |b| {
        b.iter(|| otlp::json::decode_export_request(black_box(&json[..])).expect("json"))
    });
    // The HTTP/JSON receiver's whole path: decode, re-encode once, walk.
    g.bench_function("json_ingest", |b| {
        b.iter(|| {
            let full = otlp::json::decode_export_request(black_box(&json[..])).expect("json");
            walk_bytes(Bytes::from(full.encode_to_vec()))
        })
    });
    let ten = otlp::json::encode_export_request(&request_400_ten_attributes());
    eprintln!(
        "decode/json_decode data: {REQUEST_SPANS} spans of 10 attributes, JSON {} B ({} B/span)",
        ten.len(),
        ten.len() / REQUEST_SPANS
    );
    g.bench_function("json_decode", |b| {
        b.iter(|| otlp::json::decode_export_request(black_box(ten.as_bytes())).expect("json"))
    });
    g.finish();
}

// -------------------------------------------------------------- assemble

/// Consecutive requests of one generator, walked (a trace may continue from
/// one request into the next, as with a real exporter's batches).
fn walked_requests(count: usize) -> Vec<Vec<KeyedSpan>> {
    let mut gen = generator(SEED);
    (0..count)
        .map(|_| {
            let bytes = Bytes::from(gen.next_batch(REQUEST_SPANS).request.encode_to_vec());
            walk_bytes(bytes).spans
        })
        .collect()
}

fn assemble(c: &mut Criterion) {
    const ROUND: usize = 16;
    /// Arrival interval of the requests: 400 spans / 5 ms = 80k spans/s, so
    /// the buffer holds ~100 requests' worth (root_settle 500 ms) in steady
    /// state.
    const STEP: Duration = Duration::from_millis(5);
    let requests = walked_requests(ROUND);
    let assembler = Assembler::new(
        AssemblerConfig::default(),
        Arc::new(Metrics::unregistered()),
    );
    let start = Instant::now();
    let n = Cell::new(0u64);

    let mut g = c.benchmark_group("assemble");
    g.throughput(Throughput::Elements(REQUEST_SPANS as u64));
    g.bench_function("insert_poll", |b| {
        b.iter_batched(
            || {
                // Fresh trace IDs every round of requests, so that no trace
                // is ever seen again as late; and a clock that advances.
                let i = n.get();
                n.set(i + 1);
                let round = i / ROUND as u64;
                let mut spans = requests[(i % ROUND as u64) as usize].clone();
                for s in &mut spans {
                    s.trace_id.0[..8]
                        .iter_mut()
                        .zip(round.to_le_bytes())
                        .for_each(|(b, r)| *b ^= r);
                }
                (spans, start + STEP * (i as u32))
            },
            |(spans, now)| {
                assembler.insert(spans, now);
                assembler.poll_completed(now)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let (traces, spans) = assembler.len();
    eprintln!(
        "assemble: {} requests inserted; {traces} traces / {spans} spans buffered at the end",
        n.get()
    );
    evict(c, &requests);
}

/// `assemble/evict`: a buffer full at `max_traces` (20 000 traces) is asked
/// to make room, and evicts the oldest tenth, 2 000 traces, across its 64
/// shards.
fn evict(c: &mut Criterion, requests: &[Vec<KeyedSpan>]) {
    const MAX_TRACES: usize = 20_000;
    let config = AssemblerConfig {
        max_traces: MAX_TRACES,
        ..AssemblerConfig::default()
    };
    let start = Instant::now();
    let full = || {
        let assembler = Assembler::new(config.clone(), Arc::new(Metrics::unregistered()));
        let mut round = 0u64;
        while assembler.len().0 < MAX_TRACES {
            let mut spans = requests[(round % requests.len() as u64) as usize].clone();
            let salt = round / requests.len() as u64 + 1;
            for s in &mut spans {
                s.trace_id.0[..8]
                    .iter_mut()
                    .zip(salt.to_le_bytes())
                    .for_each(|(b, r)| *b ^= r);
            }
            assembler.insert(spans, start + Duration::from_micros(round));
            round += 1;
        }
        assembler
    };
    let mut g = c.benchmark_group("assemble");
    g.throughput(Throughput::Elements((MAX_TRACES / 10) as u64));
    g.bench_function("evict", |b| {
        b.iter_batched(
            full,
            |assembler| {
                // The refusal asks for room; the next pass evicts.
                let _ = assembler.admit(0, 0, 0);
                let done = assembler.poll_completed(start + Duration::from_millis(100));
                assert!(done.len() >= MAX_TRACES / 10, "{}", done.len());
                (assembler, done)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

// --------------------------------------------------- build_trace/evaluate

struct Sample {
    /// One `ResourceSpans` per service, as an exporter sends it.
    resource_spans: Vec<ResourceSpans>,
    /// The same spans as the assembler hands them on.
    raw: Vec<RawSpan>,
    trace: Trace,
}

fn samples(kind: &str) -> Vec<Sample> {
    let mut gen = generator(SEED ^ kind.len() as u64);
    (0..TRACES_PER_ITER)
        .map(|i| {
            let generated: GeneratedTrace = match kind {
                "web" => gen.trace_of(TraceShape::Web),
                // Mostly correct withdrawals, some rollbacks, a violation.
                _ => gen.trace_of(match i % 8 {
                    0..=4 => TraceShape::BankCommit,
                    5 | 6 => TraceShape::BankRollback,
                    _ => TraceShape::BankViolation,
                }),
            };
            let request = generated.to_request();
            let raw: Vec<RawSpan> = walk_bytes(Bytes::from(request.encode_to_vec()))
                .spans
                .into_iter()
                .map(|k| k.span)
                .collect();
            let mut traces = Trace::from_resource_spans(&request.resource_spans);
            assert_eq!(traces.len(), 1);
            Sample {
                resource_spans: request.resource_spans,
                raw,
                trace: traces.remove(0),
            }
        })
        .collect()
}

fn span_count(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.trace.len() as u64).sum()
}

fn build_traces(c: &mut Criterion) {
    let engine = engine_with(100);
    let mut g = c.benchmark_group("build_trace");
    for kind in ["bank", "web"] {
        let samples = samples(kind);
        g.throughput(Throughput::Elements(span_count(&samples)));
        g.bench_function(BenchmarkId::new("from_resource_spans", kind), |b| {
            b.iter(|| {
                for s in &samples {
                    black_box(Trace::from_resource_spans(black_box(&s.resource_spans)));
                }
            })
        });
        g.bench_function(BenchmarkId::new("from_raw_spans", kind), |b| {
            b.iter(|| {
                for s in &samples {
                    black_box(build_trace(black_box(&s.raw)).expect("trace"));
                }
            })
        });
        // The daemon's path: only the attributes the 100 models read.
        g.bench_function(BenchmarkId::new("for_100_models", kind), |b| {
            b.iter(|| {
                for s in &samples {
                    black_box(build_trace_for(&engine, black_box(&s.raw)).expect("trace"));
                }
            })
        });
    }
    g.finish();
}

/// The bank model, then up to nine matching models, then idle ones.
fn engine_with(count: usize) -> Engine {
    let yaml = tracecheck::bench::models::model_set(count);
    let loaded = tracecheck::model::load_str("bench-models.yaml", &yaml).unwrap_or_else(|d| {
        panic!("generated models do not load: {d:#?}");
    });
    let models = tracecheck::model::models(&loaded);
    assert_eq!(models.len(), count);
    Engine::compile(models).unwrap_or_else(|d| panic!("generated models do not compile: {d:#?}"))
}

fn evaluate(c: &mut Criterion) {
    let ctx = EvalContext::default();
    let engines: Vec<(usize, Engine)> = MODEL_COUNTS.iter().map(|&n| (n, engine_with(n))).collect();
    let mut g = c.benchmark_group("evaluate");
    for kind in ["bank", "web"] {
        let samples = samples(kind);
        let spans = span_count(&samples);
        // Sanity: the verdicts are real, and the idle models skip.
        let (_, big) = engines.last().expect("engines");
        let verdicts = big.evaluate(&samples[0].trace, &ctx);
        let evaluated = verdicts
            .iter()
            .filter(|v| v.verdict != Verdict::Skip)
            .count();
        eprintln!(
            "evaluate {kind}: {} traces, {spans} spans; 1000 models: {evaluated} not skipped on the first trace",
            samples.len()
        );
        assert!(
            (1..=10).contains(&evaluated),
            "{evaluated} models evaluated"
        );
        g.throughput(Throughput::Elements(spans));
        for (n, engine) in &engines {
            g.bench_with_input(BenchmarkId::new(kind, n), engine, |b, engine| {
                b.iter(|| {
                    for s in &samples {
                        black_box(engine.evaluate_woken(black_box(&s.trace), &ctx));
                    }
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    let clock = Clock::from_env();
    eprintln!(
        "measuring {}",
        if clock.wall {
            "wall time"
        } else {
            "thread CPU time"
        }
    );
    // 17 benchmarks x (1 s warm-up + 5 s measurement + analysis) keeps
    // `cargo bench --bench pipeline` near two minutes once built.
    criterion::Criterion::<WallTime>::default()
        .with_measurement(clock)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(40)
}

/// The target, measured head to head: 10 and 1000 models evaluated
/// on the same traces in alternation, round after round, so that both see
/// the same neighbours on a shared machine; the ratio is the median of the
/// per-round ratios. Criterion's separate runs of `evaluate/*/10` and
/// `evaluate/*/1000` are minutes apart and can land in differently busy
/// periods.
fn paired_ratio(rounds: usize, save: bool) {
    const REPEAT: usize = 4;
    let clock = Clock::from_env();
    let ctx = EvalContext::default();
    let (ten, thousand) = (engine_with(10), engine_with(1000));
    let kinds: Vec<(&str, Vec<Sample>)> =
        ["bank", "web"].iter().map(|k| (*k, samples(k))).collect();
    let run = |engine: &Engine, samples: &[Sample]| {
        let start = clock.start();
        for _ in 0..REPEAT {
            for s in samples {
                black_box(engine.evaluate_woken(black_box(&s.trace), &ctx));
            }
        }
        clock.to_f64(&clock.end(start))
    };
    // [kind][0 = 10 models, 1 = 1000 models] per round.
    let mut times: Vec<[[f64; 2]; 2]> = Vec::with_capacity(rounds);
    for round in 0..rounds + 2 {
        let mut t = [[0.0; 2]; 2];
        for (k, (_, samples)) in kinds.iter().enumerate() {
            // Alternate which engine goes first.
            if round % 2 == 0 {
                t[k][0] = run(&ten, samples);
                t[k][1] = run(&thousand, samples);
            } else {
                t[k][1] = run(&thousand, samples);
                t[k][0] = run(&ten, samples);
            }
        }
        if round >= 2 {
            times.push(t); // the first two rounds warm up
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let spans: Vec<f64> = kinds.iter().map(|(_, s)| span_count(s) as f64).collect();
    let mut json = Vec::new();
    for (k, (kind, _)) in kinds.iter().enumerate() {
        let ratio = median(times.iter().map(|t| t[k][1] / t[k][0]).collect());
        let per_span =
            |m: usize| median(times.iter().map(|t| t[k][m]).collect()) / (REPEAT as f64 * spans[k]);
        println!(
            "paired ratio {kind}: 1000 models {:.0} ns/span, 10 models {:.0} ns/span, ratio {ratio:.2}",
            per_span(1),
            per_span(0)
        );
        json.push(format!("\"{kind}\": {ratio:.4}"));
        json.push(format!("\"{kind}_10_ns_per_span\": {:.1}", per_span(0)));
        json.push(format!("\"{kind}_1000_ns_per_span\": {:.1}", per_span(1)));
        json.push(format!(
            "\"{kind}_spans_per_trace\": {:.3}",
            spans[k] / TRACES_PER_ITER as f64
        ));
    }
    // The default traffic mix: 90 web traces for 10 bank traces.
    let (w_bank, w_web) = (0.1 / TRACES_PER_ITER as f64, 0.9 / TRACES_PER_ITER as f64);
    let mixed = median(
        times
            .iter()
            .map(|t| (w_bank * t[0][1] + w_web * t[1][1]) / (w_bank * t[0][0] + w_web * t[1][0]))
            .collect(),
    );
    println!(
        "paired ratio, default mix (90% web / 10% bank traces): {mixed:.2} over {} rounds (target: <= 3)",
        times.len()
    );
    json.push(format!("\"mix\": {mixed:.4}"));
    json.push(format!("\"rounds\": {}", times.len()));
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion");
    if save && std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("paired_ratio.json"),
            format!("{{{}}}\n", json.join(", ")),
        );
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, assemble, build_traces, evaluate
}

fn main() {
    benches();
    criterion::Criterion::<WallTime>::default()
        .configure_from_args()
        .final_summary();
    // `cargo bench` passes `--bench`; without it (cargo test) one round only
    // checks that the measurement runs. A name filter other than one
    // matching "paired_ratio" skips it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if filters.is_empty()
        || filters
            .iter()
            .any(|f| "evaluate/paired_ratio".contains(f.as_str()))
    {
        paired_ratio(if bench { 150 } else { 1 }, bench);
    }
}
