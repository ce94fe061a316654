//! Helpers for the spine tests: a daemon on ephemeral loopback ports, a
//! counting sink, `/metrics` scraping, and polling with a deadline instead
//! of sleeping.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use tracecheck::assembler::CountingConsumer;
use tracecheck::bench::loadgen::{LoadConfig, Protocol, RetryPolicy};
use tracecheck::bench::sink::{Faults, Sink, SinkConfig, SinkHandle, SinkStats};
use tracecheck::bench::traffic::{Rng, TrafficGenerator, TrafficMix};
use tracecheck::config::Config;
use tracecheck::daemon::Daemon;
use tracecheck::exporter::config::OtlpExporterConfig;
use tracecheck::receiver::config::{GrpcConfig, HttpConfig};

/// Longest any single wait in a test may take before it fails.
pub const LIMIT: Duration = Duration::from_secs(60);

pub type TestDaemon = Daemon<CountingConsumer>;

/// `127.0.0.1:0`: the kernel picks a free port when it is bound.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback address that was free a moment ago: bound, then released.
/// For things that must be told a port before they listen (a downstream that
/// comes up later, the real binary's config file).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind(any_port()).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// Both receivers and the admin endpoint on ephemeral loopback ports, no
/// models, traces complete 300 ms after their last span (roots do not
/// shorten it, so that traces split across requests complete once), no
/// forwarding.
pub fn config() -> Config {
    let mut c = Config::default();
    c.receivers.otlp.grpc = Some(GrpcConfig {
        endpoint: any_port(),
        ..GrpcConfig::default()
    });
    c.receivers.otlp.http = Some(HttpConfig {
        endpoint: any_port(),
        ..HttpConfig::default()
    });
    c.admin.endpoint = any_port();
    c.models.paths = Vec::new();
    c.assembler.idle_timeout = Duration::from_millis(300);
    c.assembler.root_settle = Duration::from_secs(30);
    c
}

/// Forwarding to `endpoint` with short batch, retry and drain intervals.
/// `protocol` is `grpc` or `http/protobuf`.
pub fn forward_to(endpoint: &str, protocol: &str) -> OtlpExporterConfig {
    serde_yaml_ng::from_str(&format!(
        "endpoint: {endpoint}\n\
         protocol: {protocol}\n\
         timeout: 2s\n\
         drain_timeout: 10s\n\
         batch: {{ timeout: 20ms }}\n\
         retry: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 120s }}\n"
    ))
    .expect("exporter config")
}

/// [`config`] forwarding to the sink's gRPC endpoint.
pub fn config_forwarding_to(sink: &SinkHandle) -> Config {
    let mut c = config();
    c.exporters.set_otlp(forward_to(
        &sink.grpc_endpoint().expect("sink has gRPC"),
        "grpc",
    ));
    c
}

pub async fn start_daemon(config: Config) -> TestDaemon {
    Daemon::start(config, CountingConsumer::default())
        .await
        .expect("daemon starts")
}

/// A sink on ephemeral loopback ports (gRPC and HTTP).
pub async fn start_sink(faults: Faults) -> SinkHandle {
    Sink::start(SinkConfig {
        faults,
        ..SinkConfig::loopback()
    })
    .await
    .expect("sink starts")
}

/// A gRPC-only sink on a given address.
pub async fn start_sink_at(grpc: SocketAddr) -> SinkHandle {
    Sink::start(SinkConfig {
        grpc: Some(grpc),
        http: None,
        ..SinkConfig::loopback()
    })
    .await
    .expect("sink starts on its reserved port")
}

pub fn grpc_endpoint(d: &TestDaemon) -> String {
    format!("http://{}", d.grpc_addr.expect("gRPC receiver"))
}

pub fn http_url<C: tracecheck::assembler::TraceConsumer>(d: &Daemon<C>) -> String {
    format!("http://{}/v1/traces", d.http_addr.expect("HTTP receiver"))
}

/// A load run of `requests` requests, no pacing, no time limit but the
/// request count. Seeded from the clock, so that two runs into one sink
/// never send the same IDs.
pub fn load(endpoint: String, protocol: Protocol, requests: u64, spans: usize) -> LoadConfig {
    LoadConfig {
        duration: None,
        requests: Some(requests),
        spans_per_request: spans,
        request_timeout: Duration::from_secs(20),
        ..LoadConfig::new(endpoint, protocol)
    }
}

/// A retry policy patient enough for the overload tests: the daemon asks for
/// one second between attempts.
pub fn patient() -> RetryPolicy {
    RetryPolicy {
        max_retries: 120,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

/// One export request of exactly `spans` synthetic spans.
pub fn request_of(spans: usize, seed: u64) -> ExportTraceServiceRequest {
    TrafficGenerator::new(TrafficMix::default(), Rng::new(seed))
        .next_batch(spans)
        .request
}

pub fn http_client() -> reqwest::Client {
    tracecheck::net::client::builder(None, "test client")
        .expect("TLS config")
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// `POST /v1/traces` with a body as given, `Content-Encoding: gzip` if
/// `gzip` (the body must then be compressed already).
pub async fn post<C: tracecheck::assembler::TraceConsumer>(
    daemon: &Daemon<C>,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = http_client()
        .post(http_url(daemon))
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if gzip {
        req = req.header(CONTENT_ENCODING, "gzip");
    }
    req.send().await.expect("POST /v1/traces")
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

pub async fn grpc_client(daemon: &TestDaemon) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(grpc_endpoint(daemon))
        .await
        .expect("gRPC connect")
}

/// `GET /metrics` in the Prometheus text format.
pub async fn scrape(admin: SocketAddr) -> String {
    let resp = http_client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert!(
        resp.status().is_success(),
        "GET /metrics: {}",
        resp.status()
    );
    resp.text().await.expect("metrics body")
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (0 when there is none). `name` is the sample name, e.g.
/// `tracecheck_traces_completed_total`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let has = |(k, v): &(&str, &str)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(has) {
            sum += value.parse::<f64>().unwrap_or_else(|_| {
                panic!("sample {line:?} has no numeric value");
            });
        }
    }
    sum
}

/// [`sample`] from a fresh scrape.
/// Spans the daemon's receivers took, both transports.
pub async fn accepted_spans(d: &TestDaemon) -> f64 {
    metric(
        d.admin_addr,
        "tracecheck_receiver_accepted_spans_total",
        &[],
    )
    .await
}

pub async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&scrape(admin).await, name, labels)
}

/// Polls `check` every 20 ms until it returns `Ok`, failing the test with
/// the last `Err` (what was seen instead) after `LIMIT`.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {LIMIT:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the sink holds `spans` unique spans, then checks that none
/// came twice.
pub async fn wait_for_sink(sink: &SinkHandle, spans: u64) -> SinkStats {
    let stats = wait_until(
        &format!("{spans} unique spans at the sink"),
        move || async move {
            let s = sink.stats();
            if s.unique_spans >= spans {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    assert_eq!(stats.unique_spans, spans, "sink: {stats}");
    assert_eq!(stats.duplicate_spans, 0, "sink: {stats}");
    stats
}

/// Waits until the buffer is empty and every buffered trace was completed:
/// `tracecheck_traces_completed_total` summed over reasons equals `traces`.
/// Returns the last scrape.
pub async fn wait_for_completed(admin: SocketAddr, traces: u64) -> String {
    let text = wait_until(&format!("{traces} traces completed"), move || async move {
        let text = scrape(admin).await;
        let completed = sample(&text, "tracecheck_traces_completed_total", &[]);
        let buffered = sample(&text, "tracecheck_buffer_traces", &[]);
        if completed >= traces as f64 && buffered == 0.0 {
            Ok(text)
        } else {
            Err(format!("completed {completed}, buffered {buffered}"))
        }
    })
    .await;
    assert_eq!(
        sample(&text, "tracecheck_traces_completed_total", &[]),
        traces as f64,
        "traces completed more often than there are traces"
    );
    text
}

/// Runs a future under [`LIMIT`] twice over: a hung test fails instead of
/// blocking CI.
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT * 2, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {:?}", LIMIT * 2))
}
