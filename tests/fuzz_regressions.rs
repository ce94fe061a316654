//! The fuzz targets under `cargo test`: every file of the seed corpus
//! (`fuzz/corpus/<target>/`) and every crash ever found
//! (`fuzz/regressions/<target>/`) is replayed through the same harness
//! functions libFuzzer drives (`fuzz/src/lib.rs`), so a fixed crash stays
//! fixed without a nightly toolchain.
//!
//! `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`
//! rewrites the seed corpus from the project's own test data.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message as _;
use tracecheck::bench::traffic::{Rng, TrafficGenerator, TrafficMix};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every input kept for `target`: seeds and regressions.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("read corpus file");
                out.push((path, data));
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        !inputs.is_empty(),
        "no seed corpus for {target}: run write_seed_corpus"
    );
    for (path, data) in inputs {
        // A panic names the file that caused it.
        eprintln!("{}", path.display());
        run(&data);
    }
}

#[test]
fn otlp_protobuf_corpus_and_regressions() {
    replay("otlp_protobuf", harness::otlp_protobuf);
}

#[test]
fn otlp_json_corpus_and_regressions() {
    replay("otlp_json", harness::otlp_json);
}

#[test]
fn gzip_corpus_and_regressions() {
    replay("gzip", harness::gzip);
}

#[test]
fn config_corpus_and_regressions() {
    replay("config", harness::config);
}

#[test]
fn model_corpus_and_regressions() {
    replay("model", harness::model);
}

#[test]
fn tracetest_corpus_and_regressions() {
    replay("tracetest", harness::tracetest);
}

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Synthetic traffic plus spans that reach the limit paths: nested values,
/// events and links with attributes, a bad ID.
fn seed_requests() -> Vec<ExportTraceServiceRequest> {
    let mut out = Vec::new();
    let mut gen = TrafficGenerator::new(TrafficMix::default(), Rng::new(42));
    for n in [1, 3, 8] {
        out.push(gen.next_batch(n).request);
    }
    let mut odd = gen.next_batch(2).request;
    if let Some(span) = odd
        .resource_spans
        .first_mut()
        .and_then(|rs| rs.scope_spans.first_mut())
        .and_then(|ss| ss.spans.first_mut())
    {
        span.attributes.push(attr(
            "nested",
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![attr(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::BytesValue(vec![1, 2, 3])),
                        }],
                    }),
                )],
            }),
        ));
        span.events.push(Event {
            name: "exception".into(),
            attributes: vec![attr(
                "exception.message",
                any_value::Value::StringValue("boom".into()),
            )],
            ..Default::default()
        });
        span.links.push(Link {
            trace_id: vec![7; 16],
            span_id: vec![7; 8],
            attributes: vec![attr("link.kind", any_value::Value::DoubleValue(0.5))],
            ..Default::default()
        });
        let mut bad = span.clone();
        bad.trace_id.truncate(15);
        if let Some(ss) = odd
            .resource_spans
            .first_mut()
            .and_then(|rs| rs.scope_spans.first_mut())
        {
            ss.spans.push(bad);
        }
    }
    out.push(odd);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

const CONFIG_SMALL: &str = "receivers:\n  otlp:\n    grpc: { endpoint: 127.0.0.1:4317 }\n    limits: { max_attribute_depth: 8 }\nassembler:\n  idle_timeout: 2s\n  max_memory_mib: 64\nmodels:\n  paths: [./models]\n  evaluation_budget: 50ms\n";
const CONFIG_ENV: &str = "admin:\n  endpoint: ${env:FUZZ:-127.0.0.1:9464}\nlinks:\n  trace_url: http://jaeger/trace/{trace_id}\n";
const CONFIG_BAD: &str = "assembler:\n  idle_timeout: 2 parsecs\n  unknown_key: 1\n";

const TEST_DOC: &str = r#"type: Test
spec:
  id: import-pokemon
  name: Import a Pokemon
  trigger:
    type: http
    httpRequest:
      method: POST
      url: ${env:API_URL}/pokemon/import
      headers: [{ key: Content-Type, value: application/json }]
      body: '{"id": 52}'
  specs:
    - selector: span[tracetest.span.type = "http" name = "POST /pokemon/import"]
      assertions:
        - attr:http.status_code = 200
        - attr:tracetest.span.duration < 1s
  outputs:
    - name: POKEMON_ID
      selector: span[name = "import pokemon"]
      value: attr:pokemon.id
"#;
const TRANSACTION_DOC: &str = r#"type: Transaction
spec:
  id: tx
  name: import then read
  steps: [import-pokemon, ./other.yaml]
---
type: VariableSet
spec:
  id: vars
  name: local
  values:
    - key: API_URL
      value: http://localhost:8080
"#;
const GRPC_TEST_DOC: &str = r#"type: Test
spec:
  id: g
  trigger:
    type: grpc
    grpc:
      protobufFile: ./api.proto
      address: ${env:ADDR}
      method: pokeshop.Pokeshop.importPokemon
      request: '{"id": 52}'
  specs:
    - selector: span[name = "queue"] span[kind = "consumer"]:first
      assertions: [attr:messaging.system = "kafka"]
---
type: Environment
spec:
  id: env2
  values: [{ key: PORT, value: 8080 }]
"#;

/// Rewrites `fuzz/corpus/` from the project's own data; a few KB a target.
#[test]
#[ignore = "writes files into the repository; run on purpose"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), data).expect("write seed");
    };
    for (i, req) in seed_requests().iter().enumerate() {
        let pb = req.encode_to_vec();
        write("otlp_protobuf", &format!("request-{i}.pb"), &pb);
        write(
            "otlp_json",
            &format!("request-{i}.json"),
            tracecheck::otlp::json::encode_export_request(req).as_bytes(),
        );
        if i % 2 == 1 {
            write("gzip", &format!("request-{i}.pb.gz"), &gzip(&pb));
        }
    }
    // Two gzip members in one body, as HTTP allows.
    let mut two = gzip(&seed_requests()[0].encode_to_vec());
    two.extend(gzip(b""));
    write("gzip", "two-members.gz", &two);
    let bad_ids = std::fs::read(root.join("tests/spine/bad_input.rs")).expect("bad_input.rs");
    let bad_ids = String::from_utf8_lossy(&bad_ids);
    if let Some(start) = bad_ids.find(r#"{"resourceSpans""#) {
        if let Some(len) = bad_ids[start..].find("\"#;") {
            write(
                "otlp_json",
                "bad-ids.json",
                bad_ids[start..start + len].as_bytes(),
            );
        }
    }
    write(
        "config",
        "tracecheck.yaml",
        &std::fs::read(root.join("config/tracecheck.yaml")).expect("config"),
    );
    write("config", "small.yaml", CONFIG_SMALL.as_bytes());
    write("config", "env.yaml", CONFIG_ENV.as_bytes());
    write("config", "bad.yaml", CONFIG_BAD.as_bytes());
    for name in ["bank.yaml", "database.yaml", "http-errors.yaml"] {
        write(
            "model",
            name,
            &std::fs::read(root.join("config/models").join(name)).expect("model"),
        );
    }
    write("tracetest", "test.yaml", TEST_DOC.as_bytes());
    write("tracetest", "transaction.yaml", TRANSACTION_DOC.as_bytes());
    write("tracetest", "grpc-test.yaml", GRPC_TEST_DOC.as_bytes());
}
