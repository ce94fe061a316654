//! Helpers for `tests/models_live.rs`: a daemon wired exactly as the binary
//! wires it (models stage inside `Daemon::start_with`), an OTLP gRPC sender,
//! a small HTTP client for the admin endpoint, a Prometheus text parser, a
//! poll-until helper and a tiny XML well-formedness checker.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
// Each suite uses a different subset of these.
#[allow(unused_imports)]
pub use common::{
    bounded, hex, now_nanos, poll_until, python, python_with, repo_path, request, span, str_attr,
    tool_missing,
};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use tracecheck::config::Config;
use tracecheck::daemon::Daemon;
use tracecheck::daemon::ModelsStage;
use tracecheck::evaluator::registry::ModelSource;
use tracecheck::evaluator::EvaluatorPool;

/// A daemon started as `run_daemon` starts it, on loopback ports chosen by
/// the OS.
pub struct Live {
    pub daemon: Daemon<EvaluatorPool>,
    pub models: Arc<ModelsStage>,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
    http: reqwest::Client,
}

/// Config text with every listener on `127.0.0.1:0` and the given
/// `assembler:` block (YAML, indented two spaces).
pub fn config(assembler: &str, trace_url: Option<&str>) -> Config {
    let mut text = String::from(
        "receivers:\n  otlp:\n    grpc: { endpoint: 127.0.0.1:0 }\n    http: { endpoint: 127.0.0.1:0 }\nadmin: { endpoint: 127.0.0.1:0 }\n",
    );
    text.push_str("assembler:\n");
    text.push_str(assembler);
    if let Some(u) = trace_url {
        text.push_str(&format!("links: {{ trace_url: \"{u}\" }}\n"));
    }
    Config::from_yaml("models_live.yaml", &text, |_| None)
        .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
        .config
}

impl Live {
    pub async fn start(config: Config, sources: Vec<ModelSource>) -> Live {
        let (daemon, models) = tracecheck::daemon::start_daemon(config, sources)
            .await
            .expect("daemon starts");
        Live {
            admin: daemon.admin_addr,
            grpc: daemon.grpc_addr.expect("gRPC receiver bound"),
            daemon,
            models,
            http: client(),
        }
    }

    pub async fn stop(self) {
        let _ = self.daemon.shutdown().await;
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_request(&self.http, reqwest::Method::GET, self.admin, path).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        (status, parse_json(path, &body))
    }

    pub async fn post(&self, path: &str) -> (u16, String) {
        http_request(&self.http, reqwest::Method::POST, self.admin, path).await
    }

    pub async fn post_json(&self, path: &str) -> (u16, Value) {
        let (status, body) =
            http_request(&self.http, reqwest::Method::POST, self.admin, path).await;
        (status, parse_json(path, &body))
    }

    pub async fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Metrics::parse(&body)
    }

    /// Sends one export request over OTLP gRPC and insists it was taken whole.
    pub async fn export(&self, request: ExportTraceServiceRequest) {
        export(self.grpc, request).await;
    }

    /// Results of one model (and verdict) from `/api/v1/results`.
    pub async fn results(&self, model: &str, verdict: Option<&str>) -> Vec<Value> {
        let mut path = format!("/api/v1/results?model={model}&limit=1000");
        if let Some(v) = verdict {
            path.push_str(&format!("&verdict={v}"));
        }
        let (status, body) = self.get_json(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no results array: {body}"))
            .clone()
    }

    /// Ids of the models in force, from `/api/v1/models`.
    pub async fn model_ids(&self) -> Vec<String> {
        let (status, body) = self.get_json("/api/v1/models").await;
        assert_eq!(status, 200, "/api/v1/models: {body}");
        body["models"]
            .as_array()
            .expect("models array")
            .iter()
            .map(|m| m["id"].as_str().expect("model id").to_owned())
            .collect()
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

pub async fn http_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    addr: SocketAddr,
    path: &str,
) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let answer = http
        .request(method, &url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    (status, body)
}

fn parse_json(what: &str, body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
}

pub async fn export(grpc: SocketAddr, request: ExportTraceServiceRequest) {
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

/// Samples of a Prometheus text exposition.
pub struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let (labels, after) = parse_labels(&line[open + 1..])
                        .unwrap_or_else(|| panic!("bad metric line: {line}"));
                    (line[..open].to_owned(), labels, after)
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
        Metrics { samples }
    }

    /// The sample with this name whose labels include `labels`; 0 when absent
    /// (a counter never touched). Panics if several samples match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied().unwrap_or(0.0)
    }

    pub fn verdicts(&self, model: &str) -> (u64, u64, u64) {
        let v = |verdict| {
            self.get(
                "tracecheck_model_verdicts_total",
                &[("model", model), ("verdict", verdict)],
            ) as u64
        };
        (v("pass"), v("fail"), v("skip"))
    }
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows `}`.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        rest = &rest[end?..];
        labels.insert(key, value);
    }
}

// ---------------------------------------------------------------------------
// Hand-made spans (for shapes the traffic generator does not make).

pub fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

/// Writes `text` to `path` whole (via a rename), so that a watcher polling
/// the folder never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).expect("write model file");
    std::fs::rename(&tmp, path).expect("rename model file");
}

// ---------------------------------------------------------------------------
// XML well-formedness (enough for JUnit reports).

/// An element met while checking a document: its name and attributes.
#[derive(Debug, Clone)]
pub struct Element {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    /// Names of the enclosing elements, outermost first.
    pub ancestors: Vec<String>,
}

/// Checks that `doc` is well-formed XML (one root, balanced tags, quoted
/// attributes, only the predefined or numeric entities, no stray `<`/`&`)
/// and returns its elements in document order.
pub fn check_xml(doc: &str) -> Result<Vec<Element>, String> {
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = doc;
    let mut pos = 0usize;
    let advance = |rest: &mut &str, pos: &mut usize, n: usize| {
        *rest = &rest[n..];
        *pos += n;
    };
    if let Some(r) = rest.strip_prefix("<?xml") {
        let end = r.find("?>").ok_or("unterminated XML declaration")?;
        advance(&mut rest, &mut pos, 5 + end + 2);
    }
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..lt];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root element at byte {pos}"));
        }
        check_text(text).map_err(|e| format!("{e} at byte {pos}"))?;
        advance(&mut rest, &mut pos, lt);
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("unterminated comment")?;
            advance(&mut rest, &mut pos, 4 + end + 3);
            continue;
        }
        if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unterminated end tag")?;
            let name = r[..end].trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("end tag </{name}> at byte {pos} closes {other:?}")),
            }
            advance(&mut rest, &mut pos, 2 + end + 1);
            continue;
        }
        // A start tag: name, attributes, then `>` or `/>`.
        let body = &rest[1..];
        let name_len = body
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .ok_or("unterminated start tag")?;
        let name = &body[..name_len];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(format!("bad element name {name:?} at byte {pos}"));
        }
        let mut attrs = BTreeMap::new();
        let mut i = name_len;
        let self_closing;
        loop {
            let t = &body[i..];
            let trimmed = t.trim_start();
            i += t.len() - trimmed.len();
            if let Some(_r) = trimmed.strip_prefix("/>") {
                self_closing = true;
                i += 2;
                break;
            }
            if trimmed.starts_with('>') {
                self_closing = false;
                i += 1;
                break;
            }
            let eq = trimmed
                .find('=')
                .ok_or_else(|| format!("attribute without value in <{name}> at byte {pos}"))?;
            let key = trimmed[..eq].trim();
            let after = &trimmed[eq + 1..];
            let quote = after
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or_else(|| format!("unquoted attribute {key} in <{name}> at byte {pos}"))?;
            let close = after[1..]
                .find(quote)
                .ok_or_else(|| format!("unterminated attribute {key} at byte {pos}"))?;
            let value = &after[1..1 + close];
            if value.contains('<') {
                return Err(format!("'<' in attribute {key} at byte {pos}"));
            }
            check_text(value).map_err(|e| format!("{e} in attribute {key} at byte {pos}"))?;
            if attrs.insert(key.to_owned(), unescape(value)).is_some() {
                return Err(format!("duplicate attribute {key} at byte {pos}"));
            }
            i += eq + 1 + 1 + close + 1;
        }
        if stack.is_empty() {
            roots += 1;
            if roots > 1 {
                return Err(format!("second root element <{name}> at byte {pos}"));
            }
        }
        out.push(Element {
            name: name.to_owned(),
            attrs,
            ancestors: stack.clone(),
        });
        if !self_closing {
            stack.push(name.to_owned());
        }
        advance(&mut rest, &mut pos, 1 + i);
    }
    if let Some(open) = stack.pop() {
        return Err(format!("<{open}> is never closed"));
    }
    if roots == 0 {
        return Err("no root element".into());
    }
    Ok(out)
}

fn check_text(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("'&' without ';'")?;
        let entity = &after[..semi];
        let ok = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
            || entity
                .strip_prefix("#x")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            || entity
                .strip_prefix('#')
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(format!("unknown entity &{entity};"));
        }
        rest = &after[semi + 1..];
    }
    Ok(())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
