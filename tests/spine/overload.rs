//! Overload is never a silent drop: a full buffer or a full forwarding
//! queue tells senders to come back (gRPC UNAVAILABLE with RetryInfo, HTTP
//! 503 with Retry-After), and a sender that does gets everything through,
//! once.

use std::time::Duration;

use prost::Message as _;
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use tonic::Code;
use tonic_types::StatusExt as _;
use tracecheck::bench::loadgen::{self, LoadReport, Protocol};
use tracecheck::bench::sink::Faults;

use crate::util::{self, bounded, RpcStatus, TestDaemon};

const UNAVAILABLE: i32 = 14;

async fn post(daemon: &TestDaemon, spans: usize, seed: u64) -> reqwest::Response {
    let body = util::request_of(spans, seed).encode_to_vec();
    util::post(daemon, "application/x-protobuf", false, body).await
}

/// A refusal the sender must retry: 503, `Retry-After` in seconds, and a
/// `google.rpc.Status` saying UNAVAILABLE.
async fn assert_http_retry_later(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let after: u64 = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&after), "Retry-After {after}");
    let status = RpcStatus::decode(resp.bytes().await.expect("body")).expect("google.rpc.Status");
    assert_eq!(status.code, UNAVAILABLE, "{status:?}");
}

fn assert_grpc_retry_later(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(60));
}

fn assert_all_through(report: &LoadReport) {
    assert_eq!(report.requests_failed, 0, "{report}");
    assert_eq!(report.spans_accepted, report.spans_sent, "{report}");
    assert!(report.retries > 0, "the test meant to overload: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_asks_senders_to_retry_and_they_lose_nothing() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    let a = &mut config.assembler;
    a.max_spans = 500;
    // Nothing completes on its own during the test: only eviction makes room.
    a.idle_timeout = Duration::from_secs(120);
    a.root_settle = Duration::from_secs(120);
    a.max_trace_age = Duration::from_secs(240);
    let daemon = util::start_daemon(config).await;
    let admin = daemon.admin_addr;
    let mut grpc = util::grpc_client(&daemon).await;

    // One request past the bound fills the buffer; the next is refused.
    assert_eq!(post(&daemon, 600, 1).await.status(), StatusCode::OK);
    let refused = grpc
        .export(util::request_of(10, 2))
        .await
        .expect_err("buffer full");
    assert_grpc_retry_later(&refused);
    // The refusal made the oldest traces give way.
    util::wait_until("eviction below the bound", move || async move {
        let spans = util::metric(admin, "tracecheck_buffer_spans", &[]).await;
        if spans < 500.0 {
            Ok(())
        } else {
            Err(format!("{spans} spans buffered"))
        }
    })
    .await;
    grpc.export(util::request_of(600, 3))
        .await
        .expect("room again after eviction");
    assert_http_retry_later(post(&daemon, 10, 4).await).await;

    // Retrying senders over both transports get every span through.
    let mut sent = 1200;
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let endpoint = match protocol {
            Protocol::Grpc => util::grpc_endpoint(&daemon),
            Protocol::Http => util::http_url(&daemon),
        };
        let mut load = util::load(endpoint, protocol, 16, 100);
        load.retry = Some(util::patient());
        let report = bounded("load", loadgen::run(load))
            .await
            .expect("load runs");
        assert_all_through(&report);
        sent += report.spans_sent;
    }
    let stats = util::wait_for_sink(&sink, sent).await;
    assert_eq!(stats.spans, sent, "{stats}");

    let text = util::scrape(admin).await;
    let full = |transport| {
        util::sample(
            &text,
            "tracecheck_receiver_refused_requests_total",
            &[("transport", transport), ("reason", "buffer_full")],
        )
    };
    assert!(full("grpc") >= 1.0 && full("http") >= 1.0, "{text}");
    assert!(
        util::sample(
            &text,
            "tracecheck_traces_completed_total",
            &[("reason", "evicted")]
        ) > 0.0,
        "{text}"
    );
    // Bounded: at most one request per sender past the bound.
    assert!(util::sample(&text, "tracecheck_buffer_spans", &[]) <= 900.0);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_forwarding_queue_asks_senders_to_retry_until_downstream_is_back() {
    let downstream = util::free_addr();
    let mut config = util::config();
    let mut export = util::forward_to(&format!("http://{downstream}"), "grpc");
    export.queue_size = 1;
    export.max_in_flight = 1;
    export.batch.max_spans = 1;
    config.exporters.set_otlp(export);
    let daemon = util::start_daemon(config).await;
    let admin = daemon.admin_addr;

    // With the downstream down, one batch is in flight, one waits for it and
    // one fills the queue: a few requests in, the next is refused.
    let mut accepted = 0;
    let mut seed = 0;
    let refusal = loop {
        seed += 1;
        assert!(seed <= 20, "the forwarding queue never filled");
        let resp = post(&daemon, 20, seed).await;
        if resp.status() == StatusCode::OK {
            accepted += 20;
            continue;
        }
        break resp;
    };
    assert_http_retry_later(refusal).await;
    let mut grpc = util::grpc_client(&daemon).await;
    let refused = grpc
        .export(util::request_of(20, 100))
        .await
        .expect_err("queue full");
    assert_grpc_retry_later(&refused);

    // A retrying sender keeps at it while the downstream is away…
    let mut load = util::load(util::grpc_endpoint(&daemon), Protocol::Grpc, 8, 50);
    load.retry = Some(util::patient());
    let load = tokio::spawn(loadgen::run(load));
    util::wait_until("the retrying sender refused too", move || async move {
        let n = util::metric(
            admin,
            "tracecheck_receiver_refused_requests_total",
            &[("reason", "exporter_queue_full")],
        )
        .await;
        if n >= 3.0 {
            Ok(())
        } else {
            Err(format!("{n} refusals"))
        }
    })
    .await;

    // …and once it is back, everything arrives, once.
    let sink = util::start_sink_at(downstream).await;
    let report = bounded("load", load)
        .await
        .expect("load task")
        .expect("load runs");
    assert_all_through(&report);
    util::wait_for_sink(&sink, accepted + report.spans_sent).await;
    let text = util::scrape(admin).await;
    assert!(
        util::sample(
            &text,
            "tracecheck_receiver_refused_requests_total",
            &[("transport", "http"), ("reason", "exporter_queue_full")]
        ) >= 1.0
    );
    let stopped = daemon.shutdown().await;
    assert_eq!(stopped.undelivered_spans, 0);
}
