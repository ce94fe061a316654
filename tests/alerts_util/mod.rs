//! Helpers for `tests/alerts_live.rs`: the daemon wired as `run_daemon`
//! wires it, real Prometheus and Alertmanager child processes (killed on
//! drop), a webhook receiver that counts and can refuse posts, and small
//! HTTP/JSON/metrics helpers. Loopback only.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{bounded, hex, poll_until, repo_path, request, span, str_attr, tool_missing};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use tracecheck::config::Config;
use tracecheck::daemon::Daemon;
use tracecheck::daemon::ModelsStage;
use tracecheck::evaluator::registry::ModelSource;
use tracecheck::evaluator::EvaluatorPool;

/// A loopback port that was free a moment ago (for child processes, which
/// cannot be handed a bound socket).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved kept).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// External binaries.

pub use common::in_ci;

fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Paths of `prometheus` and `alertmanager` (`PROMETHEUS_BIN` and
/// `ALERTMANAGER_BIN` override). `None` means: skip this test, which is
/// only allowed outside CI — under CI a missing binary fails the test.
pub fn binaries(test: &str) -> Option<(PathBuf, PathBuf)> {
    let prom = find_binary("PROMETHEUS_BIN", &["prometheus"]);
    let am = find_binary(
        "ALERTMANAGER_BIN",
        &["alertmanager", "prometheus-alertmanager"],
    );
    match (prom, am) {
        (Some(p), Some(a)) => Some((p, a)),
        (p, a) => {
            let missing = [("prometheus", p.is_none()), ("alertmanager", a.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" and ");
            assert!(
                !in_ci(),
                "{test}: {missing} not found (PATH, /usr/bin, PROMETHEUS_BIN/ALERTMANAGER_BIN) and CI is set: \
                 install them (Debian: apt-get install prometheus prometheus-alertmanager)"
            );
            eprintln!(
                "SKIPPED {test}: {missing} not found (install prometheus and prometheus-alertmanager, \
                 or set PROMETHEUS_BIN/ALERTMANAGER_BIN); under CI=true this is a failure"
            );
            None
        }
    }
}

/// A child process, killed (and reaped) when dropped. Its output goes to a
/// log file whose tail is printed if the test panics.
pub struct ChildGuard {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> ChildGuard {
        let out = std::fs::File::create(&log).expect("create child log");
        let err = out.try_clone().expect("clone child log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard { name, child, log }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics if the process already exited (with its log).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}):\n{}",
                self.name,
                self.log_tail(30)
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log (last 20 lines) ----\n{}",
                self.name,
                self.log_tail(20)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET http://addr/-/ready` answers 200.
pub async fn wait_ready(guard: &mut ChildGuard, addr: SocketAddr, limit: Duration) {
    let http = client();
    let url = format!("http://{addr}/-/ready");
    let start = Instant::now();
    loop {
        guard.assert_running();
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if start.elapsed() > limit {
            panic!(
                "{} not ready on {addr} after {limit:?}:\n{}",
                guard.name,
                guard.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real Alertmanager on a loopback port, no clustering, that notifies
/// nobody (the test reads its API).
pub struct Alertmanager {
    pub addr: SocketAddr,
    pub guard: ChildGuard,
    /// `http://addr` or `https://localhost:port`.
    pub url: String,
    client: reqwest::Client,
    basic: Option<(String, String)>,
}

/// How an Alertmanager's own web server is secured (its
/// `--web.config.file`, Prometheus' exporter-toolkit format).
#[derive(Default)]
pub struct WebSecurity {
    /// Serve HTTPS with this certificate and key (PEM files); clients
    /// trust `ca_file`.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Require this user and password (stored as a bcrypt hash).
    pub basic: Option<(String, String)>,
}

impl Alertmanager {
    pub async fn start(bin: &Path, dir: &Path) -> Alertmanager {
        Alertmanager::start_secured(bin, dir, WebSecurity::default()).await
    }

    pub async fn start_secured(bin: &Path, dir: &Path, web: WebSecurity) -> Alertmanager {
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: blackhole\n",
        )
        .expect("write alertmanager config");
        let storage = dir.join("am-data");
        std::fs::create_dir_all(&storage).expect("alertmanager storage");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=");
        let mut web_config = String::new();
        let mut client = tracecheck::net::client::builder(None, "test client").expect("TLS config");
        let mut url = format!("http://{addr}");
        if let Some((cert, key, ca)) = &web.tls {
            web_config.push_str(&format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                cert.display(),
                key.display()
            ));
            let trust = tracecheck::net::tls::ClientTlsConfig {
                ca_file: Some(ca.clone()),
                ..Default::default()
            };
            client = tracecheck::net::client::builder(Some(&trust), "test client").expect("CA");
            url = format!("https://localhost:{}", addr.port());
        }
        if let Some((user, password)) = &web.basic {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            web_config.push_str(&format!("basic_auth_users:\n  {user}: {hash}\n"));
        }
        if !web_config.is_empty() {
            let file = dir.join("web.yml");
            std::fs::write(&file, web_config).expect("write web config");
            cmd.arg(format!("--web.config.file={}", file.display()));
        }
        let client = client
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let mut guard = ChildGuard::spawn("alertmanager", cmd, dir.join("alertmanager.log"));
        let am = async {
            let start = Instant::now();
            loop {
                guard.assert_running();
                let mut ready = client.get(format!("{url}/-/ready"));
                if let Some((u, p)) = &web.basic {
                    ready = ready.basic_auth(u, Some(p));
                }
                if ready.send().await.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "alertmanager not ready on {url}:\n{}",
                    guard.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        am.await;
        Alertmanager {
            addr,
            guard,
            url,
            client,
            basic: web.basic,
        }
    }

    /// `GET /api/v2/alerts` (active, silenced, inhibited, unprocessed;
    /// resolved alerts are not listed).
    pub async fn alerts(&self) -> Vec<Value> {
        let mut get = self.client.get(format!("{}/api/v2/alerts", self.url));
        if let Some((u, p)) = &self.basic {
            get = get.basic_auth(u, Some(p));
        }
        let resp = get.send().await.expect("alertmanager /api/v2/alerts");
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, 200, "alertmanager /api/v2/alerts: {body}");
        body.as_array().cloned().unwrap_or_default()
    }
}

/// A real Prometheus scraping `target` every second, exemplar storage on.
pub struct Prometheus {
    pub addr: SocketAddr,
    pub guard: ChildGuard,
}

impl Prometheus {
    pub async fn start(bin: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tracecheck\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus config");
        let storage = dir.join("prom-data");
        std::fs::create_dir_all(&storage).expect("prometheus storage");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--enable-feature=exemplar-storage")
            .current_dir(dir);
        let mut guard = ChildGuard::spawn("prometheus", cmd, dir.join("prometheus.log"));
        wait_ready(&mut guard, addr, Duration::from_secs(30)).await;
        Prometheus { addr, guard }
    }

    /// `GET /api/v1/query`: the result vector.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (status, body) = get_json(self.addr, &path).await;
        assert_eq!(status, 200, "prometheus {path}: {body}");
        assert_eq!(body["status"], "success", "prometheus {path}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `GET /api/v1/query_exemplars` over `[start, end]` (unix seconds).
    pub async fn exemplars(&self, promql: &str, start: f64, end: f64) -> Vec<Value> {
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={start:.3}&end={end:.3}",
            urlencode(promql)
        );
        let (status, body) = get_json(self.addr, &path).await;
        assert_eq!(status, 200, "prometheus {path}: {body}");
        assert_eq!(body["status"], "success", "prometheus {path}: {body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }
}

/// The value of an instant-vector sample (`"value": [ts, "5"]`).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample value in {sample}"))
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Webhook receiver.

/// One post a webhook receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Post {
    pub at: Instant,
    pub status: u16,
    pub body: Value,
    pub path: String,
    pub headers: axum::http::HeaderMap,
}

/// An HTTP server taking alert posts on any path: answers 503 to the first
/// `refuse_first` posts, 200 afterwards, and keeps every post.
pub struct Webhook {
    pub addr: SocketAddr,
    pub posts: Arc<Mutex<Vec<Post>>>,
    stop: tokio_util::sync::CancellationToken,
    https: bool,
}

impl Webhook {
    pub async fn start(refuse_first: usize) -> Webhook {
        Webhook::start_with(refuse_first, None).await
    }

    /// Over TLS with `tls`' certificate when given (`https://`).
    pub async fn start_with(
        refuse_first: usize,
        tls: Option<tracecheck::net::tls::ServerTlsConfig>,
    ) -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let addr = listener.local_addr().expect("webhook addr");
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let posts_in = Arc::clone(&posts);
        let handler = move |uri: axum::http::Uri,
                            headers: axum::http::HeaderMap,
                            body: bytes::Bytes| {
            let posts = Arc::clone(&posts_in);
            let seen = Arc::clone(&seen);
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let status = if n < refuse_first { 503 } else { 200 };
                let body = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
                posts.lock().expect("posts lock").push(Post {
                    at: Instant::now(),
                    status,
                    body,
                    path: uri.path().to_owned(),
                    headers,
                });
                axum::http::StatusCode::from_u16(status).expect("status code")
            }
        };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        let stop = tokio_util::sync::CancellationToken::new();
        let stop_in = stop.clone();
        let https = tls.is_some();
        match tls {
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stop_in.cancelled_owned())
                        .await;
                });
            }
            Some(t) => {
                let tls = tracecheck::net::tls::ServerTls::load(
                    &t,
                    "webhook",
                    tracecheck::receiver::ALPN_H2_HTTP1,
                )
                .expect("webhook certificate");
                let metrics = Arc::new(tracecheck::metrics::Metrics::new(
                    &mut prometheus_client::registry::Registry::default(),
                ));
                let incoming = tracecheck::net::TlsIncoming::start(
                    listener,
                    tls,
                    "webhook",
                    metrics,
                    stop.clone(),
                )
                .expect("TLS listener");
                tokio::spawn(async move {
                    let _ = axum::serve(incoming, app)
                        .with_graceful_shutdown(stop_in.cancelled_owned())
                        .await;
                });
            }
        }
        Webhook {
            addr,
            posts,
            stop,
            https,
        }
    }

    pub fn url(&self) -> String {
        // `localhost`: the name the test certificate is for.
        match self.https {
            true => format!("https://localhost:{}/hook", self.addr.port()),
            false => format!("http://{}/hook", self.addr),
        }
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().expect("posts lock").clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------
// The daemon.

/// Alert settings of a test daemon.
pub struct AlertSettings {
    pub alertmanager: Option<String>,
    pub webhooks: Vec<String>,
    pub group_interval: &'static str,
    pub resend_interval: &'static str,
    pub resolve_after: &'static str,
}

pub const TRACE_URL: &str = "http://jaeger.example/trace/{trace_id}";

/// Config with every listener on `127.0.0.1:0`, the bank model, a trace
/// link template and the given alerts.
pub fn config(alerts: &AlertSettings) -> Config {
    let mut text = String::from(
        "receivers:\n  otlp:\n    grpc: { endpoint: 127.0.0.1:0 }\nadmin: { endpoint: 127.0.0.1:0 }\n\
         assembler:\n  settle: 1s\n  idle_timeout: 1s\n  root_settle: 200ms\n",
    );
    text.push_str(&format!("links: {{ trace_url: \"{TRACE_URL}\" }}\n"));
    text.push_str("alerts:\n");
    if let Some(am) = &alerts.alertmanager {
        text.push_str(&format!("  alertmanager: {{ url: \"{am}\" }}\n"));
    }
    if !alerts.webhooks.is_empty() {
        text.push_str("  webhooks:\n");
        for w in &alerts.webhooks {
            text.push_str(&format!("    - url: \"{w}\"\n"));
        }
    }
    text.push_str(&format!(
        "  group_interval: {}\n  resend_interval: {}\n  resolve_after: {}\n",
        alerts.group_interval, alerts.resend_interval, alerts.resolve_after
    ));
    Config::from_yaml("alerts_live.yaml", &text, |_| None)
        .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
        .config
}

/// A daemon started as `run_daemon` starts it (models stage built inside
/// `Daemon::start_with`), with the bank model.
pub struct Live {
    pub daemon: Daemon<EvaluatorPool>,
    pub models: Arc<ModelsStage>,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
    otlp: tokio::sync::Mutex<Option<TraceServiceClient<tonic::transport::Channel>>>,
}

impl Live {
    pub async fn start(config: Config) -> Live {
        Live::start_with_model(config, repo_path("config/models/bank.yaml")).await
    }

    /// A daemon with the one model in `model` (a file).
    pub async fn start_with_model(config: Config, model: PathBuf) -> Live {
        let sources = vec![ModelSource::Path {
            path: model,
            optional: false,
        }];
        let (daemon, models) = tracecheck::daemon::start_daemon(config, sources)
            .await
            .expect("daemon starts");
        assert_eq!(
            models.initial_load.models.len(),
            1,
            "model loaded: {:?}",
            models.initial_load.errors
        );
        Live {
            admin: daemon.admin_addr,
            grpc: daemon.grpc_addr.expect("gRPC receiver bound"),
            daemon,
            models,
            otlp: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn stop(self) {
        let _ = self.daemon.shutdown().await;
    }

    /// Sends one export request over OTLP gRPC (one reused connection) and
    /// insists it was taken whole.
    pub async fn export(&self, request: ExportTraceServiceRequest) {
        let mut slot = self.otlp.lock().await;
        if slot.is_none() {
            *slot = Some(
                TraceServiceClient::connect(format!("http://{}", self.grpc))
                    .await
                    .expect("connect to the gRPC receiver"),
            );
        }
        let client = slot.as_mut().expect("client");
        let answer = client
            .export(request)
            .await
            .expect("export accepted")
            .into_inner();
        if let Some(p) = answer.partial_success {
            assert_eq!(p.rejected_spans, 0, "spans rejected: {}", p.error_message);
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        get_json(self.admin, path).await
    }

    /// The daemon's own `/metrics` (classic text format).
    pub async fn metrics(&self) -> MetricsText {
        let (status, body) = get_text(self.admin, "/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        MetricsText::parse(&body)
    }
}

/// Sends one export request over a new OTLP gRPC connection to `grpc`.
pub async fn export_to(grpc: SocketAddr, request: ExportTraceServiceRequest) {
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to the gRPC receiver");
    let answer = client
        .export(request)
        .await
        .expect("export accepted")
        .into_inner();
    if let Some(p) = answer.partial_success {
        assert_eq!(p.rejected_spans, 0, "spans rejected: {}", p.error_message);
    }
}

pub fn client() -> reqwest::Client {
    tracecheck::net::client::builder(None, "test client")
        .expect("TLS config")
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

fn shared_client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(client)
}

pub async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let answer = shared_client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    (status, body)
}

pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = get_text(addr, path).await;
    let v =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, v)
}

/// Samples of a Prometheus text exposition: name, labels, value.
pub struct MetricsText {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl MetricsText {
    pub fn parse(text: &str) -> MetricsText {
        let mut samples = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close = line.rfind('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    // Label values in these tests hold no `,` `=` or `"`.
                    for pair in line[open + 1..close].split(',').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').expect("label pair");
                        labels.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
                    }
                    (line[..open].to_owned(), labels, &line[close + 1..])
                }
                None => {
                    let (n, r) = line.split_once(' ').expect("metric line has a value");
                    (n.to_owned(), BTreeMap::new(), r)
                }
            };
            let value = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("bad metric value: {line}"));
            samples.push((name, labels, value));
        }
        MetricsText { samples }
    }

    /// The sample with this name whose labels include `labels`; 0 if absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .fold(0.0, |acc, (_, _, v)| acc + v)
    }

    /// (pass, fail, skip) of a model.
    pub fn verdicts(&self, model: &str) -> (u64, u64, u64) {
        let v = |verdict| {
            self.get(
                "tracecheck_model_verdicts_total",
                &[("model", model), ("verdict", verdict)],
            ) as u64
        };
        (v("pass"), v("fail"), v("skip"))
    }

    pub fn alerts_sent(&self, receiver: &str, outcome: &str) -> f64 {
        self.get(
            "tracecheck_alerts_sent_total",
            &[("receiver", receiver), ("outcome", outcome)],
        )
    }
}

/// A receiver that accepts connections and never answers: each post to it
/// hangs until the client's timeout. Abort the task to close it.
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind black hole");
    let addr = hole.local_addr().expect("black hole addr");
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    (addr, held)
}
