//! The OpenTelemetry Rust SDK's own OTLP exporter, as an application would
//! configure it, sending to a daemon that forwards to a counting sink.

use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracecheck::bench::sink::Faults;

use crate::util::{self, bounded};

const TRACES: usize = 25;
/// A root and its children.
const SPANS_PER_TRACE: usize = 6;

/// Emits `TRACES` traces (a root with children) through `exporter` with the
/// SDK's batch processor, then flushes and shuts the provider down. Blocking:
/// call it off the async workers.
fn emit(exporter: SpanExporter) {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("spine-sdk").build())
        .build();
    let tracer = provider.tracer("tracecheck-spine");
    for t in 0..TRACES {
        let root = tracer.start(format!("GET /orders/{t}"));
        let cx = Context::current_with_span(root);
        for c in 1..SPANS_PER_TRACE {
            let mut child = tracer.start_with_context(format!("SELECT orders {c}"), &cx);
            child.end();
        }
        cx.span().end();
    }
    provider
        .force_flush()
        .expect("SDK flush: the daemon took every batch");
    provider.shutdown().expect("SDK shutdown");
}

/// What the user checks after pointing an SDK at tracecheck: every span
/// reached the backend once, and every trace was completed once.
async fn assert_delivered(
    daemon: &util::TestDaemon,
    sink: &tracecheck::bench::sink::SinkHandle,
    transport: &str,
) {
    let spans = (TRACES * SPANS_PER_TRACE) as u64;
    let stats = util::wait_for_sink(sink, spans).await;
    assert_eq!(stats.unique_traces, TRACES as u64, "sink: {stats}");
    assert_eq!(stats.invalid_id_spans, 0, "sink: {stats}");
    let text = util::wait_for_completed(daemon.admin_addr, TRACES as u64).await;
    assert_eq!(
        util::sample(
            &text,
            "tracecheck_receiver_accepted_spans_total",
            &[("transport", transport)]
        ),
        spans as f64
    );
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_refused_requests_total", &[]),
        0.0
    );
    assert_eq!(util::sample(&text, "tracecheck_late_spans_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_exporter_delivers_every_span_once() {
    let sink = util::start_sink(Faults::default()).await;
    let daemon = util::start_daemon(util::config_forwarding_to(&sink)).await;
    let endpoint = util::grpc_endpoint(&daemon);
    bounded("SDK gRPC export", async move {
        // The tonic exporter needs the runtime's context; the batch
        // processor and its flush block, so they run on a blocking thread.
        tokio::task::spawn_blocking(move || {
            let exporter = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build()
                .expect("tonic exporter");
            emit(exporter);
        })
        .await
        .expect("SDK thread");
    })
    .await;
    assert_delivered(&daemon, &sink, "grpc").await;
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf_exporter_delivers_every_span_once() {
    let sink = util::start_sink(Faults::default()).await;
    let daemon = util::start_daemon(util::config_forwarding_to(&sink)).await;
    let url = util::http_url(&daemon);
    bounded("SDK HTTP export", async move {
        // The SDK's default set-up for HTTP: batch processor on its own
        // thread, blocking reqwest client, no async runtime around it.
        let app = std::thread::spawn(move || {
            // reqwest has TLS without a provider of its own in this build
            // (src/net/client.rs): the SDK's client takes the process's.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url)
                .with_http_client(reqwest::blocking::Client::new())
                .build()
                .expect("HTTP exporter");
            emit(exporter);
        });
        tokio::task::spawn_blocking(move || app.join())
            .await
            .expect("join")
            .expect("SDK thread");
    })
    .await;
    assert_delivered(&daemon, &sink, "http").await;
    daemon.shutdown().await;
}
