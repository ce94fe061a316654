//! Real files from Tracetest's repository (examples, its own test suites,
//! and YAML blocks of its documentation), copied unchanged into
//! `tests/tracetest_files/` with its license; the README there says where
//! each came from.
//!
//! Every file lints on its own, as Tracetest reads one file at a time
//! (two examples may share an id). The `http` tests are then run against a
//! local service: their URLs name hosts of Tracetest's demo environments
//! (`demo-api:8081`, `${env:POKESHOP_API_URL}`, …), so each runs from a
//! copy whose `url:` scheme and host (literal or one `${env:…}`/`${var:…}`)
//! point at that service, the path kept, and whose variables are all set
//! to `1`. The service continues the trace with a server span, so the run
//! proves the trigger is rendered and sent and its trace found and judged;
//! whether the specs hold depends on spans of apps that are not here, so
//! passing and failing are both accepted, never `error` or `no_trace`.
//! Transactions, `grpc`, `traceid` and the triggers tracecheck does not
//! send are only linted: their steps or services are not here either.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::util::*;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read tests/tracetest_files")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files(&repo_path("tests/tracetest_files"), &mut files);
    files
}

#[test]
fn every_copied_tracetest_file_lints() {
    let files = all_files();
    assert!(files.len() >= 45, "{} files", files.len());
    let refused: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let out = tracecheck(&["models", "lint", &s(f)]);
            (out.code != 0).then(|| format!("{}\n{}{}", f.display(), out.stdout, out.stderr))
        })
        .collect();
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

/// The `url:` line of an http trigger, pointed at `base` with its path kept.
fn point_url_at(line: &str, base: &str) -> Option<String> {
    let (indent, value) = line.split_once("url:")?;
    if !indent.trim().is_empty() {
        return None;
    }
    let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
    let rest = if let Some(after_scheme) = v.split_once("://").map(|(_, r)| r) {
        after_scheme.find('/').map_or("", |i| &after_scheme[i..])
    } else if v.starts_with("${") {
        v.find('}').map_or("", |i| &v[i + 1..])
    } else if !v.is_empty() {
        // A host without a scheme, which Tracetest reads as http://.
        v.find('/').map_or("", |i| &v[i..])
    } else {
        return None;
    };
    Some(format!("{indent}url: \"{base}{rest}\""))
}

/// Every `env:NAME` and `var:NAME` the text reads.
fn variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["env:", "var:"] {
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Answers every request with `{}` and reports a server span in the trace
/// named by its `traceparent`.
async fn service(reporter: Reporter) -> std::net::SocketAddr {
    serve(
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let reporter = reporter.clone();
            async move {
                let name = format!("{} {}", req.method(), req.uri().path());
                let parent = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_traceparent);
                if let Some((trace, parent)) = parent {
                    reporter
                        .send(&[SpanOut {
                            trace_id: &trace,
                            span_id: span_id(),
                            parent: Some(parent),
                            name: &name,
                            kind: 2,
                            offset_ms: 0,
                            attrs: vec![("http.response.status_code", json!(200))],
                        }])
                        .await;
                }
                axum::Json(json!({}))
            }
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tests_run_against_a_local_service() {
    let served = Served::start("100ms").await;
    let addr = service(Reporter::new(served.otlp_http)).await;
    let base = format!("http://{addr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ran = 0;
    for (n, f) in all_files().iter().enumerate() {
        let text = std::fs::read_to_string(f).expect("read copied file");
        let is_http_test = text.lines().any(|l| l.trim() == "type: Test")
            && text
                .lines()
                .any(|l| matches!(l.trim(), "type: http" | "type: \"http\""));
        if !is_http_test {
            continue;
        }
        let pointed: String = text
            .lines()
            .map(|l| point_url_at(l, &base).unwrap_or_else(|| l.to_string()) + "\n")
            .collect();
        let test = write(dir.path(), &format!("test-{n}.yaml"), &pointed);
        let values: String = variables(&text)
            .iter()
            .map(|k| format!("    - key: {k}\n      value: \"1\"\n"))
            .collect();
        let vars = write(
            dir.path(),
            &format!("vars-{n}.yaml"),
            &format!("type: VariableSet\nspec:\n  id: v\n  values:\n{values}"),
        );
        let args = [
            "test",
            "run",
            "--format=json",
            "--timeout=10s",
            &format!("--file={}", s(&test)),
            &format!("--vars={}", s(&vars)),
            &format!("--server={}", served.admin),
        ];
        let out = bounded(
            LIMIT,
            tracecheck_async(args.iter().map(|a| a.to_string()).collect()),
        )
        .await;
        assert!(
            out.code == 0 || out.code == 1,
            "{}: exit {}\n{}\n{}",
            f.display(),
            out.code,
            out.stdout,
            out.stderr
        );
        let report = out.json();
        for step in report["runs"][0]["steps"].as_array().expect("steps") {
            let status = step["status"].as_str().unwrap_or("?");
            assert!(
                status == "passed" || status == "failed",
                "{}: step {status}\n{}",
                f.display(),
                out.stdout
            );
        }
        ran += 1;
    }
    assert!(ran >= 25, "only {ran} http tests ran");
    served.stop().await;
}
