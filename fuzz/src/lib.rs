//! The fuzz harnesses, one function per target. They drive the daemon's own
//! code paths: OTLP bodies go through the receiver's decode, the ingest walk
//! with its limits, the assembler and the evaluation of the example models;
//! text goes through the config loader and the model loader, compiler and
//! engine.
//!
//! `fuzz_targets/*.rs` call these under libFuzzer; `tests/fuzz_regressions.rs`
//! in the main crate includes this file to replay the corpus and every crash
//! ever found under `cargo test`.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message as _;
use tokio::time::Instant;
use tracecheck::assembler::config::AssemblerConfig;
use tracecheck::assembler::Assembler;
use tracecheck::config::Config;
use tracecheck::engine::{Engine, EvalContext, Trace};
use tracecheck::evaluator::build_trace;
use tracecheck::metrics::{Metrics, Transport};
use tracecheck::model::{self, Document, Model};
use tracecheck::otlp::{self, json, LazyExportRequest, WalkLimits};
use tracecheck::receiver::ingest::Ingest;

/// What a receiver may decompress: small, so that a bomb is cheap to find.
const GZIP_LIMIT: usize = 1024 * 1024;

/// The example models, compiled once.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut models = Vec::new();
        for (name, text) in [
            ("bank.yaml", include_str!("../../config/models/bank.yaml")),
            (
                "http-errors.yaml",
                include_str!("../../config/models/http-errors.yaml"),
            ),
            (
                "database.yaml",
                include_str!("../../config/models/database.yaml"),
            ),
        ] {
            if let Ok(docs) = model::load_str(name, text) {
                models.extend(as_models(&docs));
            }
        }
        Engine::compile(models).unwrap_or_else(|_| panic!("the example models compile"))
    })
}

fn metrics() -> Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    Arc::clone(METRICS.get_or_init(|| Arc::new(Metrics::unregistered())))
}

/// Small bounds, so that the per-trace and memory paths are reached.
fn assembler() -> Arc<Assembler> {
    Arc::new(Assembler::new(
        AssemblerConfig {
            max_spans_per_trace: 64,
            max_bytes_per_trace: 64 * 1024,
            max_memory_mib: 1,
            ..AssemblerConfig::default()
        },
        metrics(),
    ))
}

/// Without a forwarding queue, ingest never waits: one poll finishes it.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("ingest without a forwarding queue waited"),
    }
}

/// Small limits, so that the limit paths are reached.
const LIMITS: WalkLimits = WalkLimits {
    max_attribute_depth: 4,
    max_attributes: 16,
    max_attribute_value_bytes: 256,
};

/// A request as the receivers hand it on: walked, admitted, buffered; then
/// every trace completed, rebuilt for the engine and evaluated.
fn ingest_and_evaluate(request: LazyExportRequest, transport: Transport) {
    let assembler = assembler();
    let ingest = Ingest::new(Arc::clone(&assembler), Vec::new(), metrics());
    if ready(ingest.ingest(request, transport, &LIMITS)).is_err() {
        return;
    }
    for trace in assembler.drain(Instant::now()) {
        if let Some(t) = build_trace(&trace.spans) {
            evaluate(engine(), &t);
        }
    }
}

fn evaluate(engine: &Engine, trace: &Trace) {
    let ctx = EvalContext::default();
    for v in engine.evaluate(trace, &ctx) {
        let _ = engine.render_summary(v.model, trace);
    }
}

/// OTLP/protobuf bodies (gRPC and HTTP/protobuf).
pub fn otlp_protobuf(data: &[u8]) {
    if let Ok(request) = LazyExportRequest::decode(Bytes::copy_from_slice(data)) {
        ingest_and_evaluate(request, Transport::grpc);
    }
}

/// OTLP/JSON bodies: decoded, re-encoded once as the HTTP receiver does.
/// What the codec decodes it must also encode into JSON it decodes again.
pub fn otlp_json(data: &[u8]) {
    let Ok(full) = json::decode_export_request(data) else {
        return;
    };
    let again = json::encode_export_request(&full);
    if let Err(e) = json::decode_export_request(again.as_bytes()) {
        panic!("the codec's own JSON does not decode: {e}\n{again}");
    }
    if let Ok(request) = LazyExportRequest::decode(Bytes::from(full.encode_to_vec())) {
        ingest_and_evaluate(request, Transport::http);
    }
}

/// `Content-Encoding: gzip` bodies: bounded decompression, then protobuf.
pub fn gzip(data: &[u8]) {
    if let Ok(body) = otlp::gunzip_limited(data, GZIP_LIMIT) {
        assert!(body.len() <= GZIP_LIMIT, "gunzip went past its limit");
        if let Ok(request) = LazyExportRequest::decode(body) {
            ingest_and_evaluate(request, Transport::http);
        }
    }
}

/// Config files, `${env:…}` expansion included (`FUZZ` is set, others not).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_yaml("fuzz.yaml", text, |name| {
        (name == "FUZZ").then(|| "value".to_owned())
    });
}

/// A small bank trace, for evaluating whatever models the input defines.
fn sample_traces() -> &'static [Trace] {
    static TRACES: OnceLock<Vec<Trace>> = OnceLock::new();
    TRACES.get_or_init(|| {
        let request = tracecheck::bench::traffic::TrafficGenerator::new(
            tracecheck::bench::traffic::TrafficMix::default(),
            tracecheck::bench::traffic::Rng::new(7),
        )
        .next_batch(24)
        .request;
        Trace::from_resource_spans(&request.resource_spans)
    })
}

fn as_models(docs: &[Document]) -> Vec<Model> {
    docs.iter()
        .filter_map(|d| match d {
            Document::Model(m) => Some(m.clone()),
            Document::Test(t) => Some(t.as_model()),
            _ => None,
        })
        .collect()
}

/// Model files: loaded (parsed, type-checked), compiled, and evaluated on
/// sample traces.
fn load_compile_evaluate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = model::load_str("fuzz.yaml", text) else {
        return;
    };
    for d in &docs {
        let _ = d.variable_refs();
    }
    let Ok(engine) = Engine::compile(as_models(&docs)) else {
        return;
    };
    for trace in sample_traces() {
        evaluate(&engine, trace);
    }
}

/// The model language (`type: Model` documents).
pub fn model(data: &[u8]) {
    load_compile_evaluate(data);
}

/// Tracetest files (`type: Test`, `Transaction`/`TestSuite`,
/// `VariableSet`/`Environment`): the same loader, tests run as models.
pub fn tracetest(data: &[u8]) {
    load_compile_evaluate(data);
}
