//! Helpers for `tests/grpc_api.rs`: the Python interop script, the
//! `tracecheck` binary as child processes (daemon and `watch`), traffic.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracecheck::bench::traffic::{GeneratedTrace, Rng, TraceShape, TrafficGenerator, TrafficMix};

pub const BIN: &str = env!("CARGO_BIN_EXE_tracecheck");

pub fn generator(seed: u64) -> TrafficGenerator {
    TrafficGenerator::new(TrafficMix::default(), Rng::new(seed))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn ids_of(traces: &[GeneratedTrace], shape: TraceShape) -> BTreeSet<String> {
    traces
        .iter()
        .filter(|t| t.shape == shape)
        .map(|t| hex(&t.trace_id))
        .collect()
}

/// Several whole traces in one export request.
pub fn one_request(traces: &[GeneratedTrace]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: traces
            .iter()
            .flat_map(|t| t.to_request().resource_spans)
            .collect(),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether `python3` can run the interop script (installing grpcio,
/// grpcio-tools and grpcio-reflection with pip if they are missing). `false`
/// only outside CI; under `CI=true` a missing tool fails the test.
pub fn python_ready() -> bool {
    crate::models_util::python_with(
        "grpc_api",
        "import grpc, grpc_tools, grpc_reflection",
        &["grpcio", "grpcio-tools", "grpcio-reflection"],
    )
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_api_client.py")
}

/// A child process whose stdout and stderr lines are collected as they are
/// written; killed on drop.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.child.id());
    }

    /// Waits for the exit (polling, so it can run inside async tests).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tracecheck serve` on the given loopback ports with the bank model.
pub fn serve(dir: &Path, grpc: u16, admin: u16) -> Proc {
    let cfg = dir.join(format!("tracecheck-{admin}-{grpc}.yaml"));
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/models/bank.yaml");
    std::fs::write(
        &cfg,
        format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: 127.0.0.1:{grpc} }}\nadmin: {{ endpoint: 127.0.0.1:{admin} }}\nassembler: {{ settle: 1s, idle_timeout: 1s, root_settle: 100ms }}\nmodels: {{ paths: [{}] }}\n",
            models.display()
        ),
    )
    .unwrap();
    Proc::spawn(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn,tracecheck=info")
            .env("NO_COLOR", "1"),
    )
}

/// `tracecheck watch --verdict fail --format json` against `admin`.
pub fn watch_failures(admin: SocketAddr) -> Proc {
    Proc::spawn(
        Command::new(BIN)
            .args(["watch", "--server", &format!("http://{admin}")])
            .args(["--verdict", "fail", "--format", "json"])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn"),
    )
}

/// The trace ids in a watcher's JSON lines (every line must be JSON).
pub fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}
