//! Input, per-trace and memory limits as a sender meets them over real gRPC
//! and HTTP: the answer it gets, the refusal counted by reason on
//! `/metrics`, and good traffic still taken and forwarded to a counting
//! sink. Also spans no decoder can read (a string that is not UTF-8) and
//! the verdicts on their traces, and the evaluation budget.
//!
//! Run with `cargo test --test limits`.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use reqwest::StatusCode;
use tonic::Code;
use tonic_types::StatusExt as _;
use tracecheck::bench::sink::Faults;
use tracecheck::config::Config;
use tracecheck::evaluator::registry::ModelSource;
use tracecheck::receiver::config::LimitsConfig;

use crate::util::{post, sample, RpcStatus};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
const KIB: usize = 1024;

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

/// A value `depth` levels deep (1 = a plain string), kvlists in arrays.
fn nested(depth: usize) -> any_value::Value {
    let mut v = text("leaf");
    for level in 1..depth {
        v = if level % 2 == 0 {
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(v) }],
            })
        } else {
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![attr("inner", v)],
            })
        };
    }
    v
}

fn id16(seed: u64) -> Vec<u8> {
    let mut v = seed.to_be_bytes().to_vec();
    v.extend_from_slice(&(!seed).to_be_bytes());
    v
}

fn id8(seed: u64) -> Vec<u8> {
    (seed | 1 << 63).to_be_bytes().to_vec()
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn span(trace: u64, id: u64, parent: Option<u64>, name: &str) -> Span {
    Span {
        trace_id: id16(trace),
        span_id: id8(id),
        parent_span_id: parent.map(id8).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        // Now, not a fixed instant: a trace that began before the daemon
        // started is judged as cut by a restart.
        start_time_unix_nano: now_nanos(),
        end_time_unix_nano: now_nanos() + 100_000_000,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", text("limits-test"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `good` ordinary spans (of the project's synthetic traffic), then one span
/// over each attribute limit of [`small_limits`].
fn mixed_request(seed: u64, good: usize) -> ExportTraceServiceRequest {
    let mut req = util::request_of(good, seed);
    let mut deep = span(seed, 1, None, "too deep");
    deep.attributes.push(attr("deep", nested(4)));
    let mut many = span(seed, 2, None, "too many attributes");
    many.attributes = (0..40)
        .map(|i| attr(&format!("a{i}"), any_value::Value::IntValue(i)))
        .collect();
    let mut large = span(seed, 3, None, "too large");
    large
        .attributes
        .push(attr("db.statement", text(&"x".repeat(2 * KIB))));
    req.resource_spans
        .push(request(vec![deep, many, large]).resource_spans.remove(0));
    req
}

fn small_limits() -> LimitsConfig {
    LimitsConfig {
        max_attribute_depth: 3,
        max_attributes: 32,
        max_attribute_value_bytes: KIB,
    }
}

fn refused_spans(text: &str, transport: &str, reason: &str) -> f64 {
    sample(
        text,
        "tracecheck_receiver_refused_spans_total",
        &[("transport", transport), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_attribute_limits_are_rejected_by_partial_success_on_every_transport() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    config.receivers.otlp.limits = small_limits();
    let daemon = util::start_daemon(config).await;

    // gRPC.
    let answer = util::grpc_client(&daemon)
        .await
        .export(mixed_request(1, 10))
        .await
        .expect("partially accepted")
        .into_inner();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3, "{partial:?}");
    assert!(
        partial.error_message.contains("max_attribute_depth"),
        "the message names the limit: {partial:?}"
    );

    // HTTP/protobuf.
    let resp = post(
        &daemon,
        PROTOBUF,
        false,
        mixed_request(2, 10).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer = ExportTraceServiceResponse::decode(resp.bytes().await.expect("body"))
        .expect("protobuf answer");
    assert_eq!(answer.partial_success.expect("partial").rejected_spans, 3);

    // HTTP/JSON.
    let body = tracecheck::otlp::json::encode_export_request(&mixed_request(3, 10));
    let resp = post(&daemon, JSON, false, body.into_bytes()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON answer");
    let rejected = &answer["partialSuccess"]["rejectedSpans"];
    assert!(*rejected == 3 || *rejected == "3", "{answer}");

    // Exactly the good spans went downstream.
    let stats = util::wait_for_sink(&sink, 30).await;
    assert_eq!(stats.spans, 30, "{stats}");

    let text = util::scrape(daemon.admin_addr).await;
    for reason in [
        "attribute_too_deep",
        "too_many_attributes",
        "attribute_too_large",
    ] {
        assert_eq!(
            refused_spans(&text, "grpc", reason),
            1.0,
            "{reason}\n{text}"
        );
        assert_eq!(
            refused_spans(&text, "http", reason),
            2.0,
            "{reason}\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        30.0
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_over_a_limit_rejects_its_spans_and_keeps_the_others() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    config.receivers.otlp.limits = small_limits();
    let daemon = util::start_daemon(config).await;

    let mut req = util::request_of(5, 20);
    let mut bad = request(vec![span(21, 1, None, "a"), span(21, 2, Some(1), "b")]);
    if let Some(r) = bad.resource_spans[0].resource.as_mut() {
        r.attributes
            .push(attr("host.blob", text(&"y".repeat(2 * KIB))));
    }
    req.resource_spans.append(&mut bad.resource_spans);
    let answer = util::grpc_client(&daemon)
        .await
        .export(req)
        .await
        .expect("partially accepted")
        .into_inner();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("resource"), "{partial:?}");
    util::wait_for_sink(&sink, 5).await;
    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(refused_spans(&text, "grpc", "attribute_too_large"), 2.0);
    daemon.shutdown().await;
}

/// The daemon with models, as `serve` runs it, forwarding to `sink`.
async fn start_with_models(
    mut config: Config,
    sink: &tracecheck::bench::sink::SinkHandle,
    models: &str,
) -> tracecheck::daemon::Daemon<tracecheck::evaluator::EvaluatorPool> {
    config.exporters.set_otlp(util::forward_to(
        &sink.grpc_endpoint().expect("sink gRPC"),
        "grpc",
    ));
    let (daemon, _models) = tracecheck::daemon::start_daemon(
        config,
        vec![ModelSource::Embedded {
            name: "limits.yaml".into(),
            text: models.into(),
        }],
    )
    .await
    .expect("daemon starts");
    daemon
}

const ROOT_MODEL: &str = r#"type: Model
spec:
  id: root-seen
  match: span[name = "root"]
  specs:
    - name: there is a root
      selector: span[name = "root"]
"#;

async fn results(admin: SocketAddr, model: &str) -> Vec<serde_json::Value> {
    let body: serde_json::Value = util::http_client()
        .get(format!(
            "http://{admin}/api/v1/results?model={model}&limit=100"
        ))
        .send()
        .await
        .expect("GET /api/v1/results")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("JSON results"))
        .expect("results body");
    body["results"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_past_the_per_trace_bounds_are_forwarded_and_the_verdict_is_incomplete() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config();
    config.assembler.max_spans_per_trace = 4;
    config.assembler.max_bytes_per_trace = 4 * KIB;
    let daemon = start_with_models(config, &sink, ROOT_MODEL).await;
    let grpc = format!("http://{}", daemon.grpc_addr.expect("gRPC"));
    let http = format!("http://{}/v1/traces", daemon.http_addr.expect("HTTP"));

    // Trace 1: ten spans, six past max_spans_per_trace, over gRPC and HTTP.
    let mut spans: Vec<Span> = vec![span(1, 1, None, "root")];
    spans.extend((2..=10).map(|i| span(1, i, Some(1), "child")));
    let second_half = spans.split_off(6);
    let mut client = TraceServiceClient::connect(grpc).await.expect("connect");
    let answer = client
        .export(request(spans))
        .await
        .expect("taken")
        .into_inner();
    let warning = answer.partial_success.expect("a warning");
    assert_eq!(warning.rejected_spans, 0, "nothing is rejected");
    assert!(
        warning.error_message.contains("max_spans_per_trace"),
        "{warning:?}"
    );
    let resp = util::http_client()
        .post(&http)
        .header("content-type", PROTOBUF)
        .body(request(second_half).encode_to_vec())
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);

    // Trace 2: three spans of 3 KiB; the first is kept, the rest are past
    // max_bytes_per_trace.
    let blob = |mut s: Span| {
        s.attributes
            .push(attr("payload", text(&"z".repeat(3 * KIB))));
        s
    };
    client
        .export(request(vec![
            blob(span(2, 1, None, "root")),
            blob(span(2, 2, Some(1), "child")),
            blob(span(2, 3, Some(1), "child")),
        ]))
        .await
        .expect("taken");

    // Every span went downstream.
    util::wait_for_sink(&sink, 13).await;
    let admin = daemon.admin_addr;
    let verdicts = util::wait_until("two verdicts", || async move {
        let r = results(admin, "root-seen").await;
        if r.len() >= 2 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    for v in &verdicts {
        assert_eq!(v["verdict"], "pass", "{v}");
        assert_eq!(v["incomplete"], true, "{v}");
    }
    let text = util::scrape(admin).await;
    let truncated = |reason| {
        sample(
            &text,
            "tracecheck_buffer_truncated_spans_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(truncated("max_spans_per_trace"), 6.0, "{text}");
    assert_eq!(truncated("max_bytes_per_trace"), 2.0, "{text}");
    assert_eq!(
        sample(&text, "tracecheck_receiver_refused_spans_total", &[]),
        0.0
    );
    // Well within the default budget.
    assert_eq!(
        sample(&text, "tracecheck_model_slow_evaluations_total", &[]),
        0.0
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_trace_is_not_marked_incomplete() {
    let sink = util::start_sink(Faults::default()).await;
    let daemon = start_with_models(util::config(), &sink, ROOT_MODEL).await;
    let mut client =
        TraceServiceClient::connect(format!("http://{}", daemon.grpc_addr.expect("gRPC")))
            .await
            .expect("connect");
    let answer = client
        .export(request(vec![
            span(5, 1, None, "root"),
            span(5, 2, Some(1), "child"),
        ]))
        .await
        .expect("taken")
        .into_inner();
    assert_eq!(answer.partial_success, None);
    let admin = daemon.admin_addr;
    let verdicts = util::wait_until("a verdict", || async move {
        let r = results(admin, "root-seen").await;
        if r.is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(r)
        }
    })
    .await;
    assert_eq!(verdicts[0]["incomplete"], false, "{}", verdicts[0]);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The budget is a deadline: a model still evaluating when it passes gives
/// `inconclusive` (`budget`), never a guess, and is named in
/// `tracecheck_model_slow_evaluations_total`.
async fn a_model_over_the_evaluation_budget_is_inconclusive_and_counted() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config();
    // Nothing evaluates in a nanosecond: every evaluation is over budget.
    config.models.evaluation_budget = Duration::from_nanos(1);
    let daemon = start_with_models(config, &sink, ROOT_MODEL).await;
    let mut client =
        TraceServiceClient::connect(format!("http://{}", daemon.grpc_addr.expect("gRPC")))
            .await
            .expect("connect");
    client
        .export(request(vec![span(6, 1, None, "root")]))
        .await
        .expect("taken");
    let admin = daemon.admin_addr;
    let verdicts = util::wait_until("a verdict", || async move {
        let r = results(admin, "root-seen").await;
        if r.is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(r)
        }
    })
    .await;
    assert_eq!(verdicts[0]["verdict"], "inconclusive", "{}", verdicts[0]);
    assert_eq!(verdicts[0]["inconclusive"], "budget", "{}", verdicts[0]);
    let slow = util::metric(
        admin,
        "tracecheck_model_slow_evaluations_total",
        &[("model", "root-seen")],
    )
    .await;
    assert_eq!(slow, 1.0);
    daemon.shutdown().await;
}

/// One span carrying `bytes` of attribute payload, in a trace of its own.
fn heavy(trace: u64, bytes: usize) -> Span {
    let mut s = span(trace, 1, None, "heavy");
    s.attributes.push(attr("payload", text(&"p".repeat(bytes))));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_soft_memory_limit_senders_are_told_to_retry() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    config.assembler.max_memory_mib = 1;
    config.assembler.idle_timeout = Duration::from_secs(3);
    let daemon = util::start_daemon(config).await;
    let mut client = util::grpc_client(&daemon).await;

    // 450 KiB buffered, and as much reserved to copy it out of its
    // request: above 80% of 1 MiB, below 1 MiB.
    client
        .export(request(vec![heavy(1, 450 * KIB)]))
        .await
        .expect("taken below the soft limit");

    let err = client
        .export(request(vec![span(2, 1, None, "small")]))
        .await
        .expect_err("refused above the soft limit");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.get_details_retry_info().is_some(), "{err:?}");

    let resp = post(
        &daemon,
        PROTOBUF,
        false,
        request(vec![span(3, 1, None, "small")]).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let status = RpcStatus::decode(resp.bytes().await.expect("body")).expect("status");
    assert_eq!(status.code, 14, "{status:?}");
    assert!(status.message.contains("memory"), "{status:?}");

    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(refused_spans(&text, "grpc", "memory_limit"), 1.0, "{text}");
    assert_eq!(refused_spans(&text, "http", "memory_limit"), 1.0, "{text}");
    assert!(sample(&text, "tracecheck_buffer_bytes", &[]) >= (450 * KIB) as f64);
    // Below the hard limit nothing is evicted.
    assert_eq!(
        sample(
            &text,
            "tracecheck_traces_completed_total",
            &[("reason", "evicted")]
        ),
        0.0
    );

    // Once the big span is copied out of its request and the request is
    // forwarded (or the trace completes), the retry goes through.
    let retried = util::wait_until("a retry to be taken", || {
        let mut client = client.clone();
        async move {
            client
                .export(request(vec![span(2, 1, None, "small")]))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(retried.into_inner().partial_success, None);
    util::wait_for_sink(&sink, 2).await;
    daemon.shutdown().await;
}

/// The memory limit is never passed by a request: one that with its spans'
/// bookkeeping is larger than the whole limit can never be taken, so it is
/// refused for good (retrying it would loop forever), on both transports;
/// one that fits is taken and forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_the_memory_limit_is_refused_for_good() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    config.assembler.max_memory_mib = 1;
    let daemon = util::start_daemon(config).await;

    // 1.2 MiB in four traces.
    let too_big = || request((1..=4).map(|t| heavy(t, 300 * KIB)).collect());
    let resp = post(&daemon, PROTOBUF, false, too_big().encode_to_vec()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let status = RpcStatus::decode(resp.bytes().await.expect("body")).expect("status");
    assert!(
        status.message.contains("more than the memory limit"),
        "{status:?}"
    );
    let err = util::grpc_client(&daemon)
        .await
        .export(too_big())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(refused_spans(&text, "http", "too_large"), 4.0, "{text}");
    assert_eq!(refused_spans(&text, "grpc", "too_large"), 4.0, "{text}");
    assert_eq!(sample(&text, "tracecheck_buffer_traces", &[]), 0.0);

    // A quarter of it fits, with the room to copy it out of its request.
    let answer = util::grpc_client(&daemon)
        .await
        .export(request(vec![heavy(5, 300 * KIB)]))
        .await
        .expect("taken")
        .into_inner();
    assert_eq!(answer.partial_success, None);
    util::wait_for_sink(&sink, 1).await;
    daemon.shutdown().await;
}

const ROLLBACK_MODEL: &str = r#"type: Model
spec:
  id: rolls-back
  match: span[name = "withdraw"]
  specs:
    - name: rollback happens
      selector: span[name = "rollback"]
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span whose name is not UTF-8 is one no protobuf decoder that checks
/// strings reads (prost, the Collector's Go decoder): the sender is told
/// through partial success, the refusal is counted by reason, the rest of
/// the request is taken and forwarded, and the trace it belonged to, which
/// now lacks a span, is judged `inconclusive` (`unreadable`) instead of
/// failing. The other traces of the request are judged as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_name_not_utf8_is_refused_and_its_trace_judged_inconclusive_not_failed() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config();
    config.assembler.settle = Duration::from_millis(500);
    let daemon = start_with_models(config, &sink, ROLLBACK_MODEL).await;

    // Trace 31's rollback is sent with a name that is not UTF-8; without
    // it the trace would fail. Trace 32 rolls back (pass), 33 does not
    // (fail).
    let request = request(vec![
        span(31, 1, None, "withdraw"),
        span(31, 2, Some(1), "rollback#"),
        span(32, 1, None, "withdraw"),
        span(32, 2, Some(1), "rollback"),
        span(33, 1, None, "withdraw"),
    ]);
    let mut body = request.encode_to_vec();
    let at = body
        .windows(9)
        .position(|w| w == b"rollback#")
        .expect("the marked name");
    body[at + 8] = 0xff;
    assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_err());

    let resp = util::http_client()
        .post(format!(
            "http://{}/v1/traces",
            daemon.http_addr.expect("HTTP")
        ))
        .header("content-type", PROTOBUF)
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);
    let answer = ExportTraceServiceResponse::decode(resp.bytes().await.expect("body"))
        .expect("protobuf answer");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1, "{partial:?}");
    assert_eq!(
        partial.error_message,
        "resource_spans[0].scope_spans[0].spans[1].name: invalid string value: data is not UTF-8 encoded"
    );

    // The four other spans go downstream, and only they.
    let stats = util::wait_for_sink(&sink, 4).await;
    assert_eq!(stats.spans, 4, "{stats}");

    let admin = daemon.admin_addr;
    let verdicts = util::wait_until("three verdicts", || async move {
        let r = results(admin, "rolls-back").await;
        if r.len() >= 3 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    let verdict_of = |trace: u64| {
        let id = hex(&id16(trace));
        let v: Vec<&serde_json::Value> = verdicts.iter().filter(|v| v["trace_id"] == id).collect();
        assert_eq!(v.len(), 1, "one verdict for trace {trace}: {verdicts:?}");
        v[0].clone()
    };
    let marked = verdict_of(31);
    assert_eq!(marked["verdict"], "inconclusive", "{marked}");
    assert_eq!(marked["inconclusive"], "unreadable", "{marked}");
    assert_eq!(marked["incomplete"], true, "{marked}");
    assert_eq!(verdict_of(32)["verdict"], "pass");
    assert_eq!(verdict_of(33)["verdict"], "fail");

    let text = util::scrape(admin).await;
    assert_eq!(refused_spans(&text, "http", "invalid_utf8"), 1.0, "{text}");
    assert_eq!(
        sample(&text, "tracecheck_receiver_refused_spans_total", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            "tracecheck_model_verdicts_total",
            &[("model", "rolls-back"), ("verdict", "inconclusive")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tracecheck_inconclusive_verdicts_total",
            &[("reason", "unreadable")]
        ),
        1.0,
        "{text}"
    );
    daemon.shutdown().await;
}
