//! Issue 3's "done when": 200 gRPC and 200 HTTP requests of 400 spans from
//! four concurrent senders are all accepted, every trace is completed once,
//! every span is forwarded once, and a garbage body still gets a 400.

use std::time::Duration;

use reqwest::StatusCode;
use tracecheck::bench::loadgen::{self, Protocol};
use tracecheck::bench::sink::Faults;

use crate::util::{self, bounded};

const REQUESTS: u64 = 200;
const SPANS_PER_REQUEST: usize = 400;
const SENDERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_senders_400_requests_of_400_spans_arrive_whole_and_once() {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    // A trace split across two requests of one sender must not complete
    // between them, even on a loaded debug build.
    config.assembler.idle_timeout = Duration::from_secs(1);
    let daemon = util::start_daemon(config).await;
    let admin = daemon.admin_addr;

    let mut sent_spans = 0;
    let mut whole_traces = 0;
    for (protocol, endpoint) in [
        (Protocol::Grpc, util::grpc_endpoint(&daemon)),
        (Protocol::Http, util::http_url(&daemon)),
    ] {
        let mut load = util::load(endpoint, protocol, REQUESTS, SPANS_PER_REQUEST);
        load.senders = SENDERS;
        let report = bounded("load", loadgen::run(load))
            .await
            .expect("load runs");
        assert_eq!(report.requests, REQUESTS, "{report}");
        assert_eq!(report.requests_ok, REQUESTS, "{report}");
        assert_eq!(report.spans_sent, REQUESTS * SPANS_PER_REQUEST as u64);
        assert_eq!(report.spans_accepted, report.spans_sent, "{report}");
        assert!(report.errors.is_empty(), "{report}");
        let transport = protocol.to_string();
        assert_eq!(
            util::metric(
                admin,
                "tracecheck_receiver_accepted_spans_total",
                &[("transport", &transport)]
            )
            .await,
            report.spans_sent as f64
        );
        sent_spans += report.spans_sent;
        whole_traces += report.traces_sent;
    }

    let stats = util::wait_for_sink(&sink, sent_spans).await;
    assert_eq!(stats.spans, sent_spans, "{stats}");
    assert_eq!(stats.invalid_id_spans, 0, "{stats}");
    // Each distinct trace is completed exactly once. The load generator
    // counts traces it delivered whole; each sender may end a run with one
    // trace begun but not finished, which the daemon completes as it is.
    let text = util::wait_for_completed(admin, stats.unique_traces).await;
    assert!(
        (whole_traces..=whole_traces + 2 * SENDERS as u64).contains(&stats.unique_traces),
        "{} traces delivered whole, {} completed",
        whole_traces,
        stats.unique_traces
    );
    assert_eq!(util::sample(&text, "tracecheck_late_spans_total", &[]), 0.0);
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_refused_requests_total", &[]),
        0.0
    );

    let resp = util::post(&daemon, "application/x-protobuf", false, vec![0xff; 128]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let stopped = daemon.shutdown().await;
    assert_eq!(stopped.flushed_traces, 0);
    assert_eq!(stopped.undelivered_spans, 0);
}
