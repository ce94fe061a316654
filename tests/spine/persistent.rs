//! Ends of the process under traffic: `kill -9` with the persistent
//! forwarding queue (`exporters.otlp.queue.directory`) and SIGTERM with the
//! in-memory one. What a user checks: every span a sender was told was
//! taken arrives downstream; duplicates only where the daemon says it
//! replayed spans that were in flight.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tracecheck::bench::loadgen::{self, LoadReport, Protocol};
use tracecheck::bench::sink::Faults;

use crate::binary::{free_addrs, logged_field, write_config, Served};
use crate::util::{self, bounded};

fn config_text(
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    downstream: &str,
    queue: Option<&Path>,
) -> String {
    let queue = queue.map_or_else(String::new, |dir| {
        format!(
            "    queue: {{ directory: \"{}\", max_size_mib: 256, segment_size_mib: 1 }}\n",
            dir.display()
        )
    });
    format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"{grpc}\" }}\n    http: {{ endpoint: \"{http}\" }}\n\
         assembler:\n  settle: 300ms\n  idle_timeout: 300ms\n\
         models:\n  paths: []\n\
         exporters:\n  otlp:\n    endpoint: {downstream}\n    protocol: grpc\n    timeout: 2s\n    \
         batch: {{ timeout: 20ms, max_spans: 1000 }}\n    \
         retry: {{ initial_interval: 50ms, max_interval: 200ms }}\n{queue}\
         admin:\n  endpoint: \"{admin}\"\n"
    )
}

/// The daemon with its persistent queue in `queue`, forwarding to
/// `downstream`, ready; and its config file, to start it again.
async fn serve_queued(
    dir: &Path,
    [grpc, http, admin]: [SocketAddr; 3],
    downstream: &str,
    queue: &Path,
) -> (Served, String) {
    let config = write_config(
        dir,
        "tracecheck.yaml",
        &config_text(grpc, http, admin, downstream, Some(queue)),
    );
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;
    (served, config)
}

/// A sender that keeps retrying through refusals, refused connections and
/// timeouts: what an SDK or Collector in front of tracecheck does.
fn retrying_load(grpc: SocketAddr, requests: u64, spans: usize) -> loadgen::LoadConfig {
    let mut load = util::load(format!("http://{grpc}"), Protocol::Grpc, requests, spans);
    load.senders = 2;
    load.request_timeout = Duration::from_secs(5);
    load.retry = Some(loadgen::RetryPolicy {
        max_retries: 400,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(250),
    });
    load
}

async fn queue_metric(admin: SocketAddr, name: &str) -> f64 {
    util::metric(admin, name, &[("exporter", "otlp")]).await
}

/// The downstream is down while senders are answered OK, then the daemon is
/// killed with SIGKILL. After a restart with the downstream up, every span
/// arrives, once: nothing had been delivered, so a replay duplicates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_outage_then_kill_9_loses_nothing_acknowledged() {
    let [grpc, http, admin, downstream] = free_addrs::<4>();
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let (mut served, config) = serve_queued(
        dir.path(),
        [grpc, http, admin],
        &format!("http://{downstream}"),
        &queue,
    )
    .await;
    let report = bounded(
        "load",
        loadgen::run(util::load(
            format!("http://{grpc}"),
            Protocol::Grpc,
            60,
            200,
        )),
    )
    .await
    .expect("load runs");
    assert_eq!(report.spans_accepted, report.spans_sent, "{report}");
    let sent = report.spans_sent;
    assert!(queue_metric(admin, "tracecheck_exporter_queue_bytes").await > 0.0);
    assert_eq!(
        util::metric(admin, "tracecheck_exporter_sent_spans_total", &[]).await,
        0.0,
        "the downstream is down"
    );
    served.kill9();

    let sink = util::start_sink_at(downstream).await;
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;
    let stats = util::wait_for_sink(&sink, sent).await;
    assert_eq!(stats.duplicate_spans, 0, "{stats}");
    // Delivered segments are deleted: only the one being written is left.
    util::wait_until("delivered segments deleted", || async {
        let segments = std::fs::read_dir(&queue)
            .expect("queue dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
            })
            .count();
        let size = queue_metric(admin, "tracecheck_exporter_queue_size").await;
        if segments == 1 && size == 0.0 {
            Ok(())
        } else {
            Err(format!("{segments} segments, {size} requests queued"))
        }
    })
    .await;
    served.sigterm();
    assert_eq!(served.exit().await.code(), Some(0), "{}", served.stderr());
}

/// SIGKILL in the middle of traffic, with the downstream up and senders
/// retrying through the restart: every span the senders sent arrives. A span
/// may arrive twice only if it was in flight at the kill: in a batch being
/// forwarded (the restarted daemon counts those in
/// `tracecheck_exporter_queue_replayed_spans_total`) or in a request whose
/// answer the sender never got (at most one request per sender).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_traffic_delivers_every_acknowledged_span() {
    // A slow downstream keeps a backlog on disk at the moment of the kill.
    let sink = util::start_sink(Faults {
        fail_first: 20,
        retry_after: Some(Duration::from_millis(100)),
        ..Faults::default()
    })
    .await;
    let [grpc, http, admin] = free_addrs::<3>();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut served, config) = serve_queued(
        dir.path(),
        [grpc, http, admin],
        &sink.grpc_endpoint().expect("sink gRPC"),
        &dir.path().join("queue"),
    )
    .await;

    let (senders, spans_per_request) = (2u64, 100usize);
    let load = tokio::spawn(loadgen::run(retrying_load(grpc, 400, spans_per_request)));
    // Kill once a good part of the load was taken.
    util::wait_until("half the load accepted", || async {
        let accepted = util::metric(admin, "tracecheck_receiver_accepted_spans_total", &[]).await;
        if accepted >= 15_000.0 {
            Ok(())
        } else {
            Err(format!("{accepted} spans accepted"))
        }
    })
    .await;
    served.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;

    let report: LoadReport = bounded("load", load)
        .await
        .expect("load task")
        .expect("load runs");
    // A request whose connection the kill cut is answered with a transport
    // error (gRPC UNKNOWN) that OTLP senders do not retry: those few were
    // never acknowledged, and may or may not have been taken.
    assert!(
        report.requests_failed <= 2 * senders,
        "more requests failed than were in flight around the kill: {report:?}"
    );
    let accepted = report.spans_accepted;
    util::wait_until("every accepted span at the sink", || async {
        let s = sink.stats();
        if s.unique_spans >= accepted {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = sink.stats();
    assert!(
        stats.unique_spans <= report.spans_sent,
        "{stats} for {report}"
    );
    let replayed =
        queue_metric(admin, "tracecheck_exporter_queue_replayed_spans_total").await as u64;
    // A sender's retry duplicates a request only if the first attempt was
    // taken and its answer lost: at most every retried request.
    let retried = report.retries * spans_per_request as u64;
    assert!(
        stats.duplicate_spans <= replayed + retried,
        "{} duplicates, but only {replayed} spans replayed + {retried} in retried requests: {stats}",
        stats.duplicate_spans
    );
    eprintln!("kill -9 under traffic: {stats}; replayed {replayed}; {report}");
    served.sigterm();
    assert_eq!(served.exit().await.code(), Some(0), "{}", served.stderr());
}

/// SIGTERM while four senders send flat out (in-memory queue): every request
/// is either answered OK and then forwarded, or refused; none is taken and
/// then lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_full_load_forwards_or_refuses_every_span() {
    let sink = util::start_sink(Faults::default()).await;
    let [grpc, http, admin] = free_addrs::<3>();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "tracecheck.yaml",
        &config_text(
            grpc,
            http,
            admin,
            &sink.grpc_endpoint().expect("sink gRPC"),
            None,
        ),
    );
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;

    let mut load = util::load(format!("http://{grpc}"), Protocol::Grpc, 1_000_000, 200);
    load.requests = None;
    load.duration = Some(Duration::from_secs(6));
    load.request_timeout = Duration::from_secs(5);
    let load = tokio::spawn(loadgen::run(load));
    util::wait_until("traffic flowing", || async {
        let accepted = util::metric(admin, "tracecheck_receiver_accepted_spans_total", &[]).await;
        if accepted >= 20_000.0 {
            Ok(())
        } else {
            Err(format!("{accepted} spans accepted"))
        }
    })
    .await;
    served.sigterm();
    let status = served.exit().await;
    let stderr = served.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(
        logged_field(&stderr, "tracecheck stopped", "undelivered_spans"),
        Some(0),
        "stderr:\n{stderr}"
    );
    let report = bounded("load", load)
        .await
        .expect("load task")
        .expect("load runs");
    assert!(
        report.spans_refused > 0,
        "the stop refused nothing: {report}"
    );
    // Every span answered OK reached the sink; nothing else can have, but a
    // request cut off mid-answer may have been taken without the sender
    // knowing: at most one per sender.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = sink.stats();
    assert_eq!(stats.duplicate_spans, 0, "{stats}");
    assert!(
        stats.unique_spans >= report.spans_accepted,
        "accepted {} spans but only {} arrived: {stats}",
        report.spans_accepted,
        stats.unique_spans
    );
    assert!(
        stats.unique_spans <= report.spans_accepted + 4 * 200,
        "{} spans arrived for {} accepted: {report}",
        stats.unique_spans,
        report.spans_accepted
    );
}

/// A tmpfs of `size` mounted on `dir` for the life of the guard, or `None`
/// where this process may not mount (not root, no CAP_SYS_ADMIN).
struct SmallFs {
    dir: std::path::PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// The queue's filesystem fills up while the downstream is away: a request
/// the queue cannot write is refused (retryable) and never forwarded; then
/// SIGKILL, and a restart on the still-full filesystem with the downstream
/// back delivers exactly the spans that were acknowledged: none lost, none
/// of the refused ones, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_filesystem_then_kill_9_forwards_exactly_what_was_acknowledged() {
    let [grpc, http, admin, downstream] = free_addrs::<4>();
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let Some(_fs) = SmallFs::mount(&queue, "3m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-filesystem case is not exercised");
        return;
    };
    let (mut served, config) = serve_queued(
        dir.path(),
        [grpc, http, admin],
        &format!("http://{downstream}"),
        &queue,
    )
    .await;
    // ~6 MB offered to a 3 MiB filesystem; refused requests are not retried,
    // so that a refused span reaching the downstream would show.
    let report = bounded(
        "load",
        loadgen::run(util::load(
            format!("http://{grpc}"),
            Protocol::Grpc,
            240,
            100,
        )),
    )
    .await
    .expect("load runs");
    let accepted = report.spans_accepted;
    assert!(
        report.spans_refused > 0 && accepted > 0,
        "the filesystem never filled: {report}"
    );
    let unwritable = util::metric(
        admin,
        "tracecheck_receiver_refused_requests_total",
        &[
            ("transport", "grpc"),
            ("reason", "exporter_queue_unwritable"),
        ],
    )
    .await;
    assert!(unwritable > 0.0, "refused for another reason: {report}");
    served.kill9();

    let sink = util::start_sink_at(downstream).await;
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;
    let stats = util::wait_for_sink(&sink, accepted).await;
    // Nothing more comes: the refused requests' spans were never queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats_later = sink.stats();
    assert_eq!(
        stats_later.unique_spans, accepted,
        "{stats_later} for {report}"
    );
    assert_eq!(stats.duplicate_spans, 0, "{stats}");
    eprintln!("full filesystem then kill -9: {report}; downstream {stats_later}");
    served.sigterm();
    assert_eq!(served.exit().await.code(), Some(0), "{}", served.stderr());
}
