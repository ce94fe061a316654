//! Forwarding loses nothing a downstream would take: a request larger than
//! the downstream's message limit arrives whole, cut to the limit; a batch
//! the downstream refuses for one bad span costs only that span. Each test
//! ends with the sink's exact count and the daemon's own.

mod util;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tracecheck::bench::sink::Faults;

use crate::util::{
    forward_to, free_addr, http_url, metric, post, request_of, start_daemon, start_sink,
    start_sink_at, wait_for_sink, wait_until,
};

const MIB: usize = 1 << 20;

/// Synthetic requests of `spans` spans each until one is at least `bytes`
/// large, merged into one request.
fn request_of_at_least(bytes: usize, seed: u64) -> (ExportTraceServiceRequest, u64) {
    let mut merged = ExportTraceServiceRequest::default();
    let mut spans = 0;
    let mut seed = seed;
    while merged.encoded_len() < bytes {
        let r = request_of(1000, seed);
        seed += 1;
        spans += 1000;
        merged.resource_spans.extend(r.resource_spans);
    }
    (merged, spans)
}

/// A request of one `ResourceSpans` holding every span: what one SDK
/// process sends; the exporter has to cut inside it.
fn one_resource(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    let mut it = request.resource_spans.into_iter();
    let mut first = it.next().expect("a resource");
    for rs in it {
        first.scope_spans.extend(rs.scope_spans);
    }
    ExportTraceServiceRequest {
        resource_spans: vec![first],
    }
}

async fn forwarded_whole(protocol: &str, sink_limit: usize, max_request_bytes: Option<usize>) {
    let sink = start_sink(Faults {
        max_message_bytes: Some(sink_limit),
        ..Faults::default()
    })
    .await;
    let mut config = util::config();
    let endpoint = match protocol {
        "grpc" => sink.grpc_endpoint().expect("sink gRPC"),
        _ => sink.http_endpoint().expect("sink HTTP"),
    };
    let mut exporter = forward_to(&endpoint, protocol);
    if let Some(max) = max_request_bytes {
        exporter.max_request_bytes = max;
    }
    config.exporters.set_otlp(exporter);
    let daemon = start_daemon(config).await;

    let (request, spans) = request_of_at_least(15 * MIB, 17);
    let request = one_resource(request);
    let body = request.encode_to_vec();
    assert!(body.len() >= 15 * MIB && body.len() < 20 * MIB);
    let resp = post(&daemon, "application/x-protobuf", false, body).await;
    assert!(
        resp.status().is_success(),
        "{}: {:?}",
        http_url(&daemon),
        resp.status()
    );

    let stats = wait_for_sink(&sink, spans).await;
    assert_eq!(stats.rejected_spans, 0, "sink: {stats}");
    let admin = daemon.admin_addr;
    // Counted once the downstream's answer is in, a moment after the sink
    // counted.
    let sent = wait_until("every span counted as sent", || async move {
        let sent = metric(admin, "tracecheck_exporter_sent_spans_total", &[]).await;
        if sent >= spans as f64 {
            Ok(sent)
        } else {
            Err(format!("{sent} sent"))
        }
    })
    .await;
    assert_eq!(sent, spans as f64);
    let failed = metric(admin, "tracecheck_exporter_failed_spans_total", &[]).await;
    assert_eq!(failed, 0.0);
    match max_request_bytes {
        // Cut to the limit before sending: nothing was refused.
        None => assert_eq!(stats.refused_too_large, 0, "sink: {stats}"),
        // A downstream that takes less than configured: refused, then halved.
        Some(_) => assert!(stats.refused_too_large > 0, "sink: {stats}"),
    }
    daemon.shutdown().await;
}

/// The issue's measurement: a 15 MiB OTLP/HTTP request (one resource,
/// ~18 000 spans) answered 200, the downstream taking at most 4 MiB a
/// message, as the Collector's receivers do by default. Every span arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_mib_request_reaches_a_downstream_that_takes_4_mib_over_grpc() {
    forwarded_whole("grpc", 4 * MIB, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_mib_request_reaches_a_downstream_that_takes_4_mib_over_http() {
    forwarded_whole("http/protobuf", 4 * MIB, None).await;
}

/// A downstream whose limit is below `max_request_bytes` refuses the
/// messages as too large; they are sent again in halves until they fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_with_a_smaller_limit_than_configured_still_gets_every_span() {
    forwarded_whole("grpc", MIB, Some(4 * MIB)).await;
}

/// With the persistent queue, a record cut into several messages leaves the
/// disk once every part was delivered: a restart on the same directory
/// sends nothing again (a record never acknowledged would be replayed and
/// arrive twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_record_leaves_the_persistent_queue_once_all_its_parts_are_delivered() {
    let sink = start_sink(Faults {
        max_message_bytes: Some(4 * MIB),
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("queue directory");
    let daemon_config = || {
        let mut config = util::config();
        let mut exporter = forward_to(&sink.grpc_endpoint().expect("sink gRPC"), "grpc");
        exporter.queue = Some(
            serde_yaml_ng::from_str(&format!(
                "{{ directory: \"{}\", max_size_mib: 256, segment_size_mib: 64 }}",
                dir.path().display()
            ))
            .expect("queue config"),
        );
        config.exporters.set_otlp(exporter);
        config
    };
    let daemon = start_daemon(daemon_config()).await;
    let (request, spans) = request_of_at_least(15 * MIB, 91);
    let resp = post(
        &daemon,
        "application/x-protobuf",
        false,
        one_resource(request).encode_to_vec(),
    )
    .await;
    assert!(resp.status().is_success());
    wait_for_sink(&sink, spans).await;
    daemon.shutdown().await;

    let again = start_daemon(daemon_config()).await;
    let replayed = metric(
        again.admin_addr,
        "tracecheck_exporter_queue_replayed_spans_total",
        &[],
    )
    .await;
    assert_eq!(replayed, 0.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = sink.stats();
    assert_eq!(stats.unique_spans, spans, "sink: {stats}");
    assert_eq!(stats.duplicate_spans, 0, "sink: {stats}");
    again.shutdown().await;
}

/// The in-memory queue is bounded in bytes, not only in requests: with
/// the downstream down, requests of ~280 kB fill a 1 MiB queue after a few,
/// and the next sender is told to retry (503 + Retry-After) instead of the
/// queue growing with every request (10 000 requests of up to 20 MiB by
/// count alone). Once the downstream is up, every span taken arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_queue_is_bounded_in_bytes() {
    let downstream = free_addr();
    let mut config = util::config();
    let mut exporter = forward_to(&format!("http://{downstream}"), "grpc");
    exporter.queue_max_mib = 1;
    exporter.max_in_flight = 1;
    exporter.batch.max_bytes = 256 << 10;
    config.exporters.set_otlp(exporter);
    let daemon = start_daemon(config).await;
    let admin = daemon.admin_addr;

    let mut taken = 0u64;
    let mut refused = 0;
    for i in 0..40u64 {
        let body = request_of(1200, 5000 + i).encode_to_vec();
        let resp = post(&daemon, "application/x-protobuf", false, body).await;
        if resp.status().is_success() {
            taken += 1200;
        } else {
            assert_eq!(resp.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
            assert!(resp.headers().contains_key(reqwest::header::RETRY_AFTER));
            refused += 1;
        }
        let queued = metric(admin, "tracecheck_exporter_queue_bytes", &[]).await;
        assert!(queued <= (MIB + 300_000) as f64, "{queued} bytes queued");
    }
    assert!(refused > 0, "never refused; {taken} spans taken");
    assert!(taken > 0);
    let full = metric(
        admin,
        "tracecheck_receiver_refused_spans_total",
        &[("reason", "exporter_queue_full")],
    )
    .await;
    assert_eq!(
        full,
        (refused * 1200) as f64,
        "refused for the queue, not another bound"
    );

    let sink = start_sink_at(downstream).await;
    wait_for_sink(&sink, taken).await;
    daemon.shutdown().await;
}

/// Many senders' requests merged into one batch; one span in it is one the
/// downstream refuses (INVALID_ARGUMENT, the whole message). Only that span
/// is lost, counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_downstream_refuses_for_one_span_loses_only_that_span() {
    for protocol in ["grpc", "http/protobuf"] {
        let sink = start_sink(Faults {
            refuse_span_named: Some("poison".into()),
            ..Faults::default()
        })
        .await;
        let endpoint = match protocol {
            "grpc" => sink.grpc_endpoint().expect("sink gRPC"),
            _ => sink.http_endpoint().expect("sink HTTP"),
        };
        let mut config = util::config();
        let mut exporter = forward_to(&endpoint, protocol);
        // One batch for everything sent below.
        exporter.batch.timeout = Duration::from_secs(1);
        config.exporters.set_otlp(exporter);
        let daemon = start_daemon(config).await;

        let mut sent = 0u64;
        for i in 0..40u64 {
            let mut request = request_of(100, 1000 + i);
            if i == 23 {
                request.resource_spans[0].scope_spans[0].spans[0].name = "poison".into();
            }
            sent += 100;
            let resp = post(
                &daemon,
                "application/x-protobuf",
                false,
                request.encode_to_vec(),
            )
            .await;
            assert!(resp.status().is_success());
        }

        let stats = wait_for_sink(&sink, sent - 1).await;
        assert!(stats.refused_invalid > 0, "{protocol}: sink: {stats}");
        let admin = daemon.admin_addr;
        let failed = wait_until("the refused span counted", || async move {
            let failed = metric(admin, "tracecheck_exporter_failed_spans_total", &[]).await;
            if failed > 0.0 {
                Ok(failed)
            } else {
                Err("no failed span yet".to_owned())
            }
        })
        .await;
        assert_eq!(failed, 1.0, "{protocol}");
        let delivered = wait_until("the other spans counted as sent", || async move {
            let n = metric(admin, "tracecheck_exporter_sent_spans_total", &[]).await;
            if n >= (sent - 1) as f64 {
                Ok(n)
            } else {
                Err(format!("{n} sent"))
            }
        })
        .await;
        assert_eq!(delivered, (sent - 1) as f64, "{protocol}");
        // A few dozen sends to find one span among 4 000, not thousands.
        let refusals = sink.stats().refused_invalid;
        assert!(refusals <= 2 * 13, "{protocol}: {refusals} refusals");
        daemon.shutdown().await;
    }
}

/// Two exporters written as in a Collector config (`otlp/jaeger` over gRPC
/// with an endpoint without a scheme and `tls.insecure`, `otlphttp/tempo`
/// over HTTP, a pipeline naming both): every span reaches each downstream
/// once, and each exporter counts its own under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_goes_to_every_exporter_of_the_pipeline() {
    let jaeger = start_sink(Faults::default()).await;
    let tempo = start_sink(Faults::default()).await;
    let jaeger_at = jaeger.grpc_endpoint().expect("sink gRPC");
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:0\" }}\n      http: {{ endpoint: \"127.0.0.1:0\" }}\n\
         models: {{ paths: [] }}\nadmin: {{ endpoint: \"127.0.0.1:0\" }}\n\
         exporters:\n  otlp/jaeger:\n    endpoint: {}\n    tls: {{ insecure: true }}\n    retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms }}\n\
         \x20 otlphttp/tempo:\n    endpoint: {}\n\
         processors:\n  batch: {{ timeout: 20ms }}\n\
         service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [batch], exporters: [otlp/jaeger, otlphttp/tempo] }}\n",
        jaeger_at.trim_start_matches("http://"),
        // A base URL: otlphttp adds /v1/traces, as in the Collector.
        tempo
            .http_endpoint()
            .expect("sink HTTP")
            .trim_end_matches("/v1/traces"),
    );
    let config = tracecheck::config::Config::from_yaml("collector.yaml", &text, |_| None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;
    let daemon = start_daemon(config).await;
    let mut sent = 0;
    for seed in 0..5 {
        let body = request_of(200, 100 + seed).encode_to_vec();
        let resp = post(&daemon, "application/x-protobuf", false, body).await;
        assert!(resp.status().is_success(), "{:?}", resp.status());
        sent += 200;
    }
    for (sink, name) in [(&jaeger, "otlp/jaeger"), (&tempo, "otlphttp/tempo")] {
        let stats = wait_for_sink(sink, sent).await;
        assert_eq!(stats.unique_spans, sent, "{name}: {stats}");
        assert_eq!(stats.duplicate_spans, 0, "{name}: {stats}");
        // Counted once the downstream's answer is read, just after the
        // sink counted them.
        wait_until(&format!("{name} counts {sent} spans sent"), || async {
            let n = metric(
                daemon.admin_addr,
                "tracecheck_exporter_sent_spans_total",
                &[("exporter", name)],
            )
            .await;
            if n == sent as f64 {
                Ok(())
            } else {
                Err(format!("{n} counted"))
            }
        })
        .await;
    }
    daemon.shutdown().await;
}

/// An OTLP/HTTP downstream that keeps every span it is sent, by trace.
#[derive(Clone, Default)]
struct Recorder {
    spans: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

impl Recorder {
    async fn start(&self) -> String {
        use axum::http::{HeaderMap, StatusCode};
        let kept = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let gzip = headers
                        .get("content-encoding")
                        .is_some_and(|v| v.as_bytes() == b"gzip");
                    let body = if gzip {
                        let mut out = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&body[..]),
                            &mut out,
                        )
                        .expect("gzip body");
                        out
                    } else {
                        body.to_vec()
                    };
                    let request = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP");
                    let mut spans = kept.spans.lock().expect("not poisoned");
                    for rs in request.resource_spans {
                        for ss in rs.scope_spans {
                            spans.extend(ss.spans);
                        }
                    }
                    (
                        StatusCode::OK,
                        [("content-type", "application/x-protobuf")],
                        Vec::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let at = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{at}")
    }

    fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.spans.lock().expect("not poisoned").clone()
    }
}

/// Tail sampling by verdict: beside an exporter that gets every span, an
/// `otlphttp/failing` exporter with `traces: failing` gets exactly the
/// traces the model failed, each whole and once, its root span marked with
/// the verdict and the model. Each trace comes as production sends it: the
/// children first, the root in a later request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_traces_exporter_gets_exactly_the_violating_traces_whole() {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::collections::{BTreeMap, BTreeSet};

    let all = start_sink(Faults::default()).await;
    let failing = Recorder::default();
    let failing_at = failing.start().await;
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:0\" }}\n      http: {{ endpoint: \"127.0.0.1:0\" }}\n\
         admin: {{ endpoint: \"127.0.0.1:0\" }}\n\
         assembler: {{ settle: 400ms, root_settle: 100ms }}\n\
         exporters:\n  otlp/all:\n    endpoint: {}\n    tls: {{ insecure: true }}\n\
         \x20 otlphttp/failing:\n    endpoint: {failing_at}\n    traces: failing\n    verdict_attributes: true\n\
         \x20   retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms }}\n\
         processors:\n  batch: {{ timeout: 20ms }}\n\
         service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [batch], exporters: [otlp/all, otlphttp/failing] }}\n",
        all.grpc_endpoint()
            .expect("sink gRPC")
            .trim_start_matches("http://"),
    );
    let config = tracecheck::config::Config::from_yaml("collector.yaml", &text, |_| None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;
    let model = "type: Model\nspec:\n  id: checkout-paid\n  match: span[name = \"checkout\"]\n  specs:\n    - name: payment charged\n      selector: span[name = \"charge\"]\n";
    let (daemon, _models) = tracecheck::daemon::start_daemon(
        config,
        vec![tracecheck::evaluator::registry::ModelSource::Embedded {
            name: "checkout.yaml".into(),
            text: model.into(),
        }],
    )
    .await
    .expect("daemon starts");

    // Begun after the daemon started: earlier would be judged as cut by a
    // restart (inconclusive).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    let span = |trace: u8, id: u8, parent: Option<u8>, name: &str| Span {
        trace_id: vec![trace; 16],
        span_id: vec![trace, id, 0, 0, 0, 0, 0, 1],
        parent_span_id: parent.map_or(Vec::new(), |p| vec![trace, p, 0, 0, 0, 0, 0, 1]),
        name: name.into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        ..Default::default()
    };
    let request = |spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    // 20 traces; every third lacks its charge.
    let traces: Vec<u8> = (1..=20).collect();
    let violating: BTreeSet<u8> = traces.iter().copied().filter(|t| t % 3 == 0).collect();
    let mut children = Vec::new();
    let mut roots = Vec::new();
    let mut sizes = BTreeMap::new();
    for &t in &traces {
        children.push(span(t, 2, Some(1), "reserve"));
        if !violating.contains(&t) {
            children.push(span(t, 3, Some(1), "charge"));
        }
        roots.push(span(t, 1, None, "checkout"));
        sizes.insert(t, if violating.contains(&t) { 2 } else { 3 });
    }
    let sent: usize = sizes.values().sum();
    for part in [children, roots] {
        let resp = post(
            &daemon,
            "application/x-protobuf",
            false,
            request(part).encode_to_vec(),
        )
        .await;
        assert!(resp.status().is_success(), "{:?}", resp.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let stats = wait_for_sink(&all, sent as u64).await;
    assert_eq!(stats.unique_spans, sent as u64, "otlp/all: {stats}");
    let want: usize = violating.iter().map(|t| sizes[t]).sum();
    wait_until("the failing traces reach otlphttp/failing", || async {
        let n = failing.spans().len();
        if n >= want {
            Ok(())
        } else {
            Err(format!("{n} of {want} spans"))
        }
    })
    .await;
    // Anything sent twice, or a passing trace, would come within this.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = failing.spans();
    let mut by_trace: BTreeMap<u8, Vec<&Span>> = BTreeMap::new();
    for s in &got {
        by_trace.entry(s.trace_id[0]).or_default().push(s);
    }
    assert_eq!(
        by_trace.keys().copied().collect::<BTreeSet<_>>(),
        violating,
        "exactly the violating traces"
    );
    for (t, spans) in &by_trace {
        assert_eq!(spans.len(), sizes[t], "trace {t} whole and once");
        let root = spans
            .iter()
            .find(|s| s.parent_span_id.is_empty())
            .expect("its root");
        let attr = |key: &str| {
            root.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref()?.value.clone())
        };
        use opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue;
        assert_eq!(attr("tracecheck.verdict"), Some(StringValue("fail".into())));
        assert_eq!(
            attr("tracecheck.model"),
            Some(StringValue("checkout-paid".into()))
        );
    }
    daemon.shutdown().await;
}

/// The "Coming from the OpenTelemetry Collector" section of
/// `docs/operations.md` shows a tracecheck config beside a Collector's; it
/// must be one that tracecheck reads as written, with the exporters it says.
#[test]
fn the_operations_guides_side_by_side_config_runs() {
    let guide = include_str!("../docs/operations.md");
    let block = guide
        .split("```yaml\n# tracecheck.yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/operations.md has the tracecheck.yaml block");
    let config = tracecheck::config::Config::from_yaml("operations.md", block, |_| None)
        .unwrap_or_else(|e| panic!("{e}\n{block}"))
        .config;
    let exporters: Vec<(&str, tracecheck::exporter::config::TraceSelection)> = config
        .exporters
        .list
        .iter()
        .map(|e| (e.name.as_str(), e.config.traces))
        .collect();
    use tracecheck::exporter::config::TraceSelection::{All, Failing};
    assert_eq!(
        exporters,
        [("otlphttp/store", All), ("otlp/jaeger", Failing)]
    );
    assert_eq!(config.assembler.max_memory_mib, 512);

    // The Collector's own file, pasted unchanged, is refused for its
    // tail_sampling, with what to write instead.
    let collector = guide
        .split("```yaml\n# otelcol.yaml (the OpenTelemetry Collector)\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/operations.md has the Collector's block");
    let refused = match tracecheck::config::Config::from_yaml("otelcol.yaml", collector, |_| None) {
        Ok(_) => panic!("tail_sampling taken"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("traces: failing"), "{refused}");
}
