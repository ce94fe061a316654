//! The downstream goes away or refuses for a while: senders are not held
//! up, the exporter queues and retries, and once the downstream is back
//! every span arrives exactly once.

use tracecheck::bench::loadgen::{self, Protocol};
use tracecheck::bench::sink::Faults;

use crate::util::{self, bounded};

const EXPORTER: (&str, &str) = ("exporter", "otlp");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_down_then_up_gets_every_span_once() {
    // The downstream's port is known but nothing listens there yet.
    let downstream = util::free_addr();
    let mut config = util::config();
    let mut export = util::forward_to(&format!("http://{downstream}"), "grpc");
    // One batch per request and one send at a time, so that requests wait
    // in the queue while the first batch is retried.
    export.max_in_flight = 1;
    export.batch.max_spans = 100;
    config.exporters.set_otlp(export);
    let daemon = util::start_daemon(config).await;
    let admin = daemon.admin_addr;

    let report = bounded(
        "load",
        loadgen::run(util::load(
            util::grpc_endpoint(&daemon),
            Protocol::Grpc,
            12,
            100,
        )),
    )
    .await
    .expect("load runs");
    // Senders are not made to wait for the downstream.
    assert_eq!(report.spans_accepted, 1200, "{report}");
    assert_eq!(report.requests_failed, 0, "{report}");

    // While it is down: retries climb, requests wait in the queue, nothing
    // is counted as sent or lost.
    util::wait_until(
        "retries and a queue while the downstream is down",
        move || async move {
            let text = util::scrape(admin).await;
            let retries = util::sample(&text, "tracecheck_exporter_retries_total", &[EXPORTER]);
            let queued = util::sample(&text, "tracecheck_exporter_queue_size", &[EXPORTER]);
            if retries >= 3.0 && queued >= 1.0 {
                Ok(())
            } else {
                Err(format!("retries {retries}, queue {queued}"))
            }
        },
    )
    .await;
    let text = util::scrape(admin).await;
    assert_eq!(
        util::sample(&text, "tracecheck_exporter_sent_spans_total", &[EXPORTER]),
        0.0
    );
    assert_eq!(
        util::sample(&text, "tracecheck_exporter_failed_spans_total", &[EXPORTER]),
        0.0
    );

    // Up again.
    let sink = util::start_sink_at(downstream).await;
    let stats = util::wait_for_sink(&sink, 1200).await;
    util::wait_for_completed(admin, stats.unique_traces).await;
    util::wait_until(
        "the queue drained and every span counted as sent",
        move || async move {
            let text = util::scrape(admin).await;
            let queued = util::sample(&text, "tracecheck_exporter_queue_size", &[EXPORTER]);
            let sent = util::sample(&text, "tracecheck_exporter_sent_spans_total", &[EXPORTER]);
            if queued == 0.0 && sent == 1200.0 {
                Ok(())
            } else {
                Err(format!("queue {queued}, sent {sent}"))
            }
        },
    )
    .await;
    assert_eq!(
        util::metric(admin, "tracecheck_exporter_failed_spans_total", &[EXPORTER]).await,
        0.0
    );
    let stopped = daemon.shutdown().await;
    assert_eq!(stopped.undelivered_spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_refusals_are_retried_over_http_protobuf() {
    let sink = util::start_sink(Faults {
        fail_first: 6,
        ..Faults::default()
    })
    .await;
    let mut config = util::config();
    config.exporters.set_otlp(util::forward_to(
        &sink.http_endpoint().expect("sink HTTP"),
        "http/protobuf",
    ));
    let daemon = util::start_daemon(config).await;
    let report = bounded(
        "load",
        loadgen::run(util::load(util::http_url(&daemon), Protocol::Http, 8, 100)),
    )
    .await
    .expect("load runs");
    assert_eq!(report.spans_accepted, 800, "{report}");

    let stats = util::wait_for_sink(&sink, 800).await;
    assert_eq!(stats.failed_requests, 6, "{stats}");
    let text = util::scrape(daemon.admin_addr).await;
    assert!(
        util::sample(&text, "tracecheck_exporter_retries_total", &[EXPORTER]) >= 6.0,
        "{text}"
    );
    let stopped = daemon.shutdown().await;
    assert_eq!(stopped.undelivered_spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_downstream_down_counts_every_undelivered_span() {
    let downstream = util::free_addr();
    let mut config = util::config();
    let mut export = util::forward_to(&format!("http://{downstream}"), "grpc");
    export.max_in_flight = 1;
    export.batch.max_spans = 100;
    export.drain_timeout = std::time::Duration::from_millis(300);
    config.exporters.set_otlp(export);
    let daemon = util::start_daemon(config).await;
    let admin = daemon.admin_addr;
    let report = bounded(
        "load",
        loadgen::run(util::load(
            util::grpc_endpoint(&daemon),
            Protocol::Grpc,
            10,
            100,
        )),
    )
    .await
    .expect("load runs");
    assert_eq!(report.spans_accepted, 1000, "{report}");
    util::wait_until("the first batch retried", move || async move {
        let retries = util::metric(admin, "tracecheck_exporter_retries_total", &[EXPORTER]).await;
        if retries >= 1.0 {
            Ok(())
        } else {
            Err(format!("{retries} retries"))
        }
    })
    .await;

    // The drain deadline passes with every span still undelivered: all of
    // them are reported, those still queued included.
    let metrics = std::sync::Arc::clone(&daemon.metrics);
    let stopped = daemon.shutdown().await;
    assert_eq!(stopped.undelivered_spans, 1000);
    let failed = metrics
        .exporter_failed_spans
        .get_or_create(&tracecheck::metrics::ExporterLabels {
            exporter: "otlp".into(),
        })
        .get();
    assert_eq!(failed, 1000);
}
