//! The `tracecheck` binary as an operator runs it: `serve --config FILE`,
//! stopped with SIGTERM, and refusing a bad config with exit code 2.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracecheck::bench::loadgen::{self, Protocol};
use tracecheck::bench::sink::Faults;

use crate::util::{self, bounded};

const BIN: &str = env!("CARGO_BIN_EXE_tracecheck");

/// `n` distinct loopback addresses that were free a moment ago.
pub(crate) fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind(util::any_port()).expect("bind"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr"))
}

/// A child process killed if the test fails before it exits, with its
/// stderr collected as it is written.
pub(crate) struct Served {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    pub(crate) fn spawn(args: &[&str]) -> Self {
        Self::spawn_logging(args, "warn,tracecheck=info")
    }

    /// With `RUST_LOG` set to `filter`.
    pub(crate) fn spawn_logging(args: &[&str], filter: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracecheck");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits for the process to exit, failing the test after `LIMIT`.
    pub(crate) async fn exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + util::LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tracecheck did not exit; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/readyz` until it answers 200, failing the test if the
    /// process exits or `LIMIT` passes first.
    pub(crate) async fn ready(&mut self, admin: SocketAddr) {
        let client = util::http_client();
        let deadline = tokio::time::Instant::now() + util::LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("tracecheck exited with {status}:\n{}", self.stderr());
            }
            let ready = client.get(format!("http://{admin}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tracecheck not ready; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: no shutdown code runs.
    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `key=N` in the log line containing `message`. The log goes
/// to a pipe here, so it must be plain text: no ANSI colour codes.
pub(crate) fn logged_field(stderr: &str, message: &str, key: &str) -> Option<u64> {
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log written to a pipe:\n{stderr}"
    );
    let line = stderr.lines().find(|l| l.contains(message))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub(crate) fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_buffered_traces_and_delivers_every_span() {
    let sink = util::start_sink(Faults::default()).await;
    let [grpc, http, admin] = free_addrs::<3>();
    let dir = tempfile::tempdir().expect("tempdir");
    // Traces stay buffered until shutdown completes them.
    let config = write_config(
        dir.path(),
        "tracecheck.yaml",
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"{grpc}\" }}\n    http: {{ endpoint: \"{http}\" }}\n\
             assembler:\n  settle: 60s\n  idle_timeout: 60s\n  root_settle: 60s\n  max_trace_age: 120s\n\
             models:\n  paths: []\n\
             exporters:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n    batch: {{ timeout: 20ms }}\n    \
             retry: {{ initial_interval: 50ms, max_interval: 200ms }}\n\
             admin:\n  endpoint: \"{admin}\"\n",
            sink.grpc_endpoint().expect("sink gRPC")
        ),
    );
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;

    let mut sent = 0;
    for (protocol, endpoint) in [
        (Protocol::Grpc, format!("http://{grpc}")),
        (Protocol::Http, format!("http://{http}/v1/traces")),
    ] {
        let report = bounded("load", loadgen::run(util::load(endpoint, protocol, 6, 50)))
            .await
            .expect("load runs");
        assert_eq!(report.spans_accepted, report.spans_sent, "{report}");
        sent += report.spans_sent;
    }
    // Everything is buffered, nothing completed yet.
    let text = util::scrape(admin).await;
    assert_eq!(
        util::sample(&text, "tracecheck_buffer_spans", &[]),
        sent as f64,
        "{text}"
    );
    assert_eq!(
        util::sample(&text, "tracecheck_traces_completed_total", &[]),
        0.0
    );
    let buffered = util::sample(&text, "tracecheck_buffer_traces", &[]) as u64;
    assert!(buffered > 0);

    served.sigterm();
    let status = served.exit().await;
    let stderr = served.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(
        logged_field(&stderr, "tracecheck stopped", "flushed_traces"),
        Some(buffered),
        "the shutdown line reports every buffered trace completed; stderr:\n{stderr}"
    );
    assert_eq!(
        logged_field(&stderr, "tracecheck stopped", "undelivered_spans"),
        Some(0),
        "stderr:\n{stderr}"
    );
    let stats = util::wait_for_sink(&sink, sent).await;
    assert_eq!(stats.unique_traces, buffered, "{stats}");
}

#[tokio::test]
async fn bad_config_exits_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "unknown-key.yaml",
            "receivers:\n  otlp:\n    grpc:\n      endpoint: 127.0.0.1:0\n      max_recv_msg_size_mb: 4\n",
            ":5:7",
            "max_recv_msg_size_mb",
        ),
        (
            "bad-duration.yaml",
            "assembler:\n  idle_timeout: soon\n",
            ":2:",
            "idle_timeout",
        ),
    ];
    for (name, text, position, names) in cases {
        let path = write_config(dir.path(), name, text);
        let mut served = Served::spawn(&["serve", "--config", &path]);
        let status = served.exit().await;
        let stderr = served.stderr();
        assert_eq!(status.code(), Some(2), "{name}: stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("{path}{position}")),
            "{name}: no {path}{position} in stderr:\n{stderr}"
        );
        assert!(stderr.contains(names), "{name}: stderr:\n{stderr}");
    }
}

/// Secrets (the receivers' token, the exporter's header and token, the
/// admin token) appear nowhere in the daemon's own log, at its most verbose,
/// while it is refusing wrong tokens and forwarding with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    const SECRETS: [&str; 4] = [
        "rx-token-7d1f",
        "export-header-93ab",
        "export-token-5c2e",
        "admin-token-e40b",
    ];
    let sink = util::start_sink(Faults::default()).await;
    let [grpc, http, admin] = free_addrs::<3>();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "tracecheck.yaml",
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"{grpc}\" }}\n    http: {{ endpoint: \"{http}\" }}\n    \
             auth: {{ bearer_token: {} }}\n\
             models:\n  paths: []\n\
             exporters:\n  otlp:\n    endpoint: {}\n    headers: {{ x-api-key: {} }}\n    auth: {{ bearer_token: {} }}\n\
             admin:\n  endpoint: \"{admin}\"\n  auth: {{ bearer_token: {} }}\n",
            SECRETS[0],
            sink.grpc_endpoint().expect("sink gRPC"),
            SECRETS[1],
            SECRETS[2],
            SECRETS[3],
        ),
    );
    let mut served = Served::spawn_logging(&["serve", "--config", &config], "trace");
    served.ready(admin).await;
    let client = util::http_client();
    let body = util::request_of(20, 1);
    let encoded = prost::Message::encode_to_vec(&body);
    for token in ["wrong-token", SECRETS[0]] {
        let _ = client
            .post(format!("http://{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .header("authorization", format!("Bearer {token}"))
            .body(encoded.clone())
            .send()
            .await;
    }
    let _ = client
        .post(format!("http://{admin}/api/v1/models/reload"))
        .header("authorization", "Bearer wrong")
        .send()
        .await;
    util::wait_for_sink(&sink, 20).await;
    served.sigterm();
    assert_eq!(served.exit().await.code(), Some(0));
    let log = served.stderr();
    assert!(log.lines().count() > 20, "trace-level log expected:\n{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// `serve` forwarding to a downstream that refuses every span, so draining
/// the forwarding queue at shutdown would take `drain_timeout` (30 s), with
/// spans accepted and queued. The sink and temporary directory live as long
/// as the process is needed.
async fn serving_a_stuck_downstream(
    shutdown_timeout: &str,
) -> (
    Served,
    tracecheck::bench::sink::SinkHandle,
    tempfile::TempDir,
) {
    let sink = util::start_sink(Faults {
        fail_first: u64::MAX,
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let [grpc, admin] = free_addrs::<2>();
    let config = write_config(
        dir.path(),
        "tracecheck.yaml",
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"{grpc}\" }}\n\
             models:\n  paths: []\n\
             exporters:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n    batch: {{ timeout: 20ms }}\n    \
             drain_timeout: 30s\n    retry: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 1h }}\n\
             admin:\n  endpoint: \"{admin}\"\n\
             service:\n  shutdown_timeout: {shutdown_timeout}\n",
            sink.grpc_endpoint().expect("sink gRPC")
        ),
    );
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;
    let report = bounded(
        "load",
        loadgen::run(util::load(format!("http://{grpc}"), Protocol::Grpc, 2, 20)),
    )
    .await
    .expect("load runs");
    assert_eq!(report.spans_accepted, report.spans_sent, "{report}");
    (served, sink, dir)
}

/// Shutdown that cannot finish (the downstream refuses everything) ends at
/// `service.shutdown_timeout`, inside Kubernetes' grace period, with exit 1
/// and a line saying what was left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_at_its_deadline_when_draining_cannot_finish() {
    let (mut served, _sink, _dir) = serving_a_stuck_downstream("1s").await;
    let asked = std::time::Instant::now();
    served.sigterm();
    let status = served.exit().await;
    let took = asked.elapsed();
    let stderr = served.stderr();
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} against a 1s deadline; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("service.shutdown_timeout passed"),
        "stderr:\n{stderr}"
    );
}

/// A second SIGTERM during a shutdown that would take long exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let (mut served, _sink, _dir) = serving_a_stuck_downstream("60s").await;
    served.sigterm();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    served.sigterm();
    let status = served.exit().await;
    let took = asked.elapsed();
    let stderr = served.stderr();
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} after the second signal; stderr:\n{stderr}"
    );
    assert!(stderr.contains("a second signal came"), "stderr:\n{stderr}");
}

/// `service.telemetry.logs.encoding: json`, as a log pipeline wants: every
/// line the daemon writes, from start to stop, is one JSON object; what
/// was made of the Collector's processors is among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_when_the_config_asks() {
    let [grpc, admin] = free_addrs::<2>();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "collector.yaml",
        &format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"{grpc}\" }}\n\
             processors:\n  batch:\n\
             models:\n  paths: []\n\
             admin:\n  endpoint: \"{admin}\"\n\
             service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [batch] }}\n  telemetry:\n    logs: {{ encoding: json }}\n"
        ),
    );
    let mut served = Served::spawn(&["serve", "--config", &config]);
    served.ready(admin).await;
    served.sigterm();
    let status = served.exit().await;
    let stderr = served.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "start and stop lines at least:\n{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("processor batch"))),
        "the batch processor's note:\n{stderr}"
    );
}
