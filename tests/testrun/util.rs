//! Helpers for the test-run suite: the binary, the example app, a daemon in
//! this process, and systems under test that report their own spans.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
pub use common::{bounded, repo_path, tool_missing};

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracecheck::config::Config;
use tracecheck::daemon::Daemon;
use tracecheck::evaluator::EvaluatorPool;

pub const LIMIT: Duration = Duration::from_secs(90);

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Serves `app` on an ephemeral loopback port for the rest of the test.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// What a run of the binary printed, and its exit code.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `tracecheck ARGS` to the end.
pub fn tracecheck(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tracecheck"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tracecheck");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The same, off the async runtime (the daemon and systems under test of
/// the calling test keep serving meanwhile).
pub async fn tracecheck_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        tracecheck(&a)
    })
    .await
    .expect("tracecheck thread")
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Whether python3 has the OpenTelemetry SDK for the example app
/// (installed with pip if missing). `false` only outside CI.
pub fn python_ready() -> bool {
    common::python_with(
        "testrun",
        "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        &[
            "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-http",
        ],
    )
}

/// examples/pokeshop/app.py, exporting OTLP/HTTP to `otlp_http`; killed on drop.
pub struct Pokeshop {
    child: Child,
    pub port: u16,
}

impl Pokeshop {
    pub fn start(otlp_http: SocketAddr, bug: bool, import_delay_ms: u64) -> Pokeshop {
        let port = free_addr().port();
        let child = Command::new(common::python())
            .arg(repo_path("examples/pokeshop/app.py"))
            .env("PORT", port.to_string())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_http}"))
            .env("POKESHOP_BUG", if bug { "1" } else { "0" })
            .env("IMPORT_DELAY_MS", import_delay_ms.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start examples/pokeshop/app.py");
        let shop = Pokeshop { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return shop;
            }
            assert!(
                Instant::now() < deadline,
                "pokeshop did not listen within 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A variable set pointing the example's tests at this instance.
    pub fn vars(&self, dir: &Path) -> PathBuf {
        write(
            dir,
            "vars.yaml",
            &format!(
                "type: VariableSet\nspec:\n  id: test\n  values:\n    - key: POKESHOP_URL\n      value: http://127.0.0.1:{}\n    - key: POKEMON_NAME\n      value: bulbasaur\n",
                self.port
            ),
        )
    }
}

impl Drop for Pokeshop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon as `tracecheck serve` runs it, every listener on an ephemeral
/// loopback port, traces complete 300 ms after their last span.
pub struct Served {
    pub daemon: Daemon<EvaluatorPool>,
    pub admin: String,
    pub otlp_http: SocketAddr,
}

impl Served {
    pub async fn start(root_settle: &str) -> Served {
        let text = format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: 127.0.0.1:0 }}\n    http: {{ endpoint: 127.0.0.1:0 }}\nadmin: {{ endpoint: 127.0.0.1:0 }}\nmodels: {{ paths: [] }}\nassembler: {{ settle: 300ms, idle_timeout: 300ms, root_settle: {root_settle} }}\nlinks: {{ trace_url: \"http://traces.example/t/{{trace_id}}\" }}\n"
        );
        let config = Config::from_yaml("testrun.yaml", &text, |_| None)
            .expect("test config")
            .config;
        let (daemon, _) = tracecheck::daemon::start_daemon(config, Vec::new())
            .await
            .expect("daemon starts");
        Served {
            admin: format!("http://{}", daemon.admin_addr),
            otlp_http: daemon.http_addr.expect("HTTP receiver"),
            daemon,
        }
    }

    pub async fn stop(self) {
        let _ = self.daemon.shutdown().await;
    }
}

/// Sends spans as OTLP/JSON, as an instrumented service would.
#[derive(Clone)]
pub struct Reporter {
    pub url: String,
    client: reqwest::Client,
}

/// One span to report.
pub struct SpanOut<'a> {
    pub trace_id: &'a str,
    pub span_id: String,
    pub parent: Option<String>,
    pub name: &'a str,
    /// OTLP kind number: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: u8,
    pub offset_ms: u64,
    pub attrs: Vec<(&'a str, Value)>,
}

pub fn span_id() -> String {
    format!("{:016x}", fastrand::u64(1..))
}

/// `(trace id, parent span id)` of a `traceparent` value.
pub fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = v.split('-').collect();
    (parts.len() == 4).then(|| (parts[1].to_string(), parts[2].to_string()))
}

impl Reporter {
    pub fn new(otlp_http: SocketAddr) -> Self {
        Self {
            url: format!("http://{otlp_http}/v1/traces"),
            client: tracecheck::net::client::plain(std::time::Duration::ZERO),
        }
    }

    pub async fn send(&self, spans: &[SpanOut<'_>]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        let spans: Vec<Value> = spans
            .iter()
            .map(|s| {
                let start = now + s.offset_ms * 1_000_000;
                let attrs: Vec<Value> = s
                    .attrs
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            Value::String(x) => json!({ "stringValue": x }),
                            Value::Bool(b) => json!({ "boolValue": b }),
                            Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
                            Value::Number(n) => json!({ "doubleValue": n }),
                            other => json!({ "stringValue": other.to_string() }),
                        };
                        json!({ "key": k, "value": value })
                    })
                    .collect();
                json!({
                    "traceId": s.trace_id,
                    "spanId": s.span_id,
                    "parentSpanId": s.parent.clone().unwrap_or_default(),
                    "name": s.name,
                    "kind": s.kind,
                    "startTimeUnixNano": start.to_string(),
                    "endTimeUnixNano": (start + 2_000_000).to_string(),
                    "attributes": attrs,
                })
            })
            .collect();
        let body = json!({ "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "sut" } }] },
            "scopeSpans": [{ "spans": spans }],
        }]});
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("report spans");
        assert!(
            resp.status().is_success(),
            "OTLP export answered {}",
            resp.status()
        );
    }
}

/// A response body as JSON.
pub async fn body_json(r: reqwest::Response) -> Value {
    let bytes = r.bytes().await.expect("response body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}
