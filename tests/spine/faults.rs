//! A downstream that misbehaves on the wire: it drops connections in the
//! middle of a request, it stops answering until the exporter's timeout,
//! or it refuses part of each batch. The faults sit in a TCP proxy in
//! front of the counting sink (or in the sink itself for partial success),
//! so the exporter meets them exactly as it would on a network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tracecheck::bench::loadgen::{self, Protocol};
use tracecheck::bench::sink::Faults;

use crate::util::{self, bounded};

const EXPORTER: (&str, &str) = ("exporter", "otlp");

/// What the proxy does to the first `count` connections; later ones are
/// piped to the target untouched.
#[derive(Clone, Copy)]
enum Fault {
    /// Reads the start of the request, then closes the connection without
    /// forwarding anything: the request dies in flight.
    Drop,
    /// Reads and never answers: the client's timeout is all that ends it.
    Hang,
}

struct FaultyProxy {
    addr: SocketAddr,
    faulted: Arc<AtomicU64>,
}

impl FaultyProxy {
    async fn start(target: SocketAddr, fault: Fault, count: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let faulted = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&faulted);
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((mut client, _)) = listener.accept().await {
                n += 1;
                if n <= count {
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = client.read(&mut buf).await;
                        seen.fetch_add(1, Ordering::Relaxed);
                        match fault {
                            Fault::Drop => drop(client),
                            Fault::Hang => {
                                // Keep reading (so the client's writes do not
                                // fail) and never answer.
                                while matches!(client.read(&mut buf).await, Ok(1..)) {}
                            }
                        }
                    });
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { addr, faulted }
    }
}

async fn forward_through(proxy: SocketAddr, timeout: &str) -> util::TestDaemon {
    let mut config = util::config();
    config.exporters.set_otlp(
        serde_yaml_ng::from_str(&format!(
            "endpoint: http://{proxy}\nprotocol: grpc\ntimeout: {timeout}\nbatch: {{ timeout: 20ms }}\n\
             retry: {{ initial_interval: 50ms, max_interval: 200ms }}\n"
        ))
        .expect("exporter config"),
    );
    util::start_daemon(config).await
}

async fn send(daemon: &util::TestDaemon, requests: u64, spans: usize) -> u64 {
    let report = bounded(
        "load",
        loadgen::run(util::load(
            util::grpc_endpoint(daemon),
            Protocol::Grpc,
            requests,
            spans,
        )),
    )
    .await
    .expect("load runs");
    assert_eq!(report.spans_accepted, report.spans_sent, "{report}");
    report.spans_sent
}

/// Connections cut mid-request: the exporter reconnects and sends again;
/// every span arrives once, and the retries show in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_drops_connections_gets_every_span_once() {
    let sink = util::start_sink(Faults::default()).await;
    let proxy = FaultyProxy::start(sink.grpc_addr().expect("sink gRPC"), Fault::Drop, 3).await;
    let daemon = forward_through(proxy.addr, "2s").await;
    let sent = send(&daemon, 20, 200).await;
    let stats = util::wait_for_sink(&sink, sent).await;
    assert_eq!(stats.duplicate_spans, 0);
    assert!(proxy.faulted.load(Ordering::Relaxed) >= 1);
    let admin = daemon.admin_addr;
    assert!(util::metric(admin, "tracecheck_exporter_retries_total", &[EXPORTER]).await >= 1.0);
    sent_metric_reaches(admin, sent).await;
    assert_eq!(
        util::metric(admin, "tracecheck_exporter_failed_spans_total", &[EXPORTER]).await,
        0.0
    );
}

/// The sink counts a batch before the exporter reads its answer.
async fn sent_metric_reaches(admin: SocketAddr, sent: u64) {
    util::wait_until("the sent-spans counter", || async {
        let n = util::metric(admin, "tracecheck_exporter_sent_spans_total", &[EXPORTER]).await;
        if n == sent as f64 {
            Ok(())
        } else {
            Err(format!("{n} of {sent}"))
        }
    })
    .await;
}

/// A downstream that takes requests and never answers: each attempt ends
/// at the exporter's timeout and is retried on a new connection; nothing is
/// lost and the daemon keeps taking traffic meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_hangs_is_timed_out_and_retried() {
    let sink = util::start_sink(Faults::default()).await;
    let proxy = FaultyProxy::start(sink.grpc_addr().expect("sink gRPC"), Fault::Hang, 2).await;
    let daemon = forward_through(proxy.addr, "500ms").await;
    let sent = send(&daemon, 10, 100).await;
    let stats = util::wait_for_sink(&sink, sent).await;
    assert_eq!(stats.duplicate_spans, 0);
    assert!(proxy.faulted.load(Ordering::Relaxed) >= 1);
    let admin = daemon.admin_addr;
    assert!(util::metric(admin, "tracecheck_exporter_retries_total", &[EXPORTER]).await >= 1.0);
    sent_metric_reaches(admin, sent).await;
}

/// Partial success from the downstream: the refused spans are counted as
/// failed (not retried, as OTLP says), the rest as sent, and the two add up
/// to what was received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_from_the_downstream_is_counted_not_retried() {
    let sink = util::start_sink(Faults {
        partial_reject: 7,
        ..Faults::default()
    })
    .await;
    let daemon = forward_through(sink.grpc_addr().expect("sink gRPC"), "2s").await;
    let sent = send(&daemon, 10, 100).await;
    let admin = daemon.admin_addr;
    let (delivered, failed) = util::wait_until("every span sent or refused", || async {
        let text = util::scrape(admin).await;
        let ok = util::sample(&text, "tracecheck_exporter_sent_spans_total", &[EXPORTER]);
        let failed = util::sample(&text, "tracecheck_exporter_failed_spans_total", &[EXPORTER]);
        if (ok + failed) as u64 >= sent {
            Ok((ok as u64, failed as u64))
        } else {
            Err(format!("{ok} sent, {failed} failed of {sent}"))
        }
    })
    .await;
    let stats = sink.stats();
    assert_eq!(delivered + failed, sent);
    assert_eq!(failed, stats.rejected_spans, "{stats}");
    assert_eq!(delivered, stats.spans, "{stats}");
    assert!(failed > 0);
    assert_eq!(
        stats.duplicate_spans, 0,
        "refused spans were not sent again"
    );
    assert_eq!(
        util::metric(admin, "tracecheck_exporter_retries_total", &[EXPORTER]).await,
        0.0
    );
}

/// A downstream (or a proxy before it) that ends the answer without a
/// `grpc-status`, as a reset stream reads: the batch is not counted as
/// delivered, it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_grpc_status_is_not_taken_for_delivery() {
    let app = axum::Router::new().route(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        axum::routing::post(|| async { ([("content-type", "application/grpc")], "") }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let daemon = forward_through(addr, "1s").await;
    send(&daemon, 2, 50).await;
    let admin = daemon.admin_addr;
    util::wait_until("retries", || async {
        let n = util::metric(admin, "tracecheck_exporter_retries_total", &[EXPORTER]).await;
        if n >= 2.0 {
            Ok(())
        } else {
            Err(format!("{n} retries"))
        }
    })
    .await;
    assert_eq!(
        util::metric(admin, "tracecheck_exporter_sent_spans_total", &[EXPORTER]).await,
        0.0
    );
}
