//! Helpers every in-process integration test needs: bounded waits, polling,
//! repository paths, and spans and requests to send. Included by the
//! per-suite util modules.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// Fails the test instead of hanging it.
pub async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what`.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when running under CI (`CI` set to anything but empty/0/false).
/// `.ci/run` sets it, and installs every tool the suites use.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// A suite's external tool is missing: outside CI the test is skipped with a
/// line saying how to get the tool; under CI that is a failure, so a CI run
/// can never pass by skipping what it was meant to prove.
pub fn tool_missing(test: &str, what: &str, install: &str) {
    assert!(!in_ci(), "{test}: {what} is required under CI ({install})");
    eprintln!("SKIPPED {test}: {what} not available ({install}); under CI=true this fails");
}

/// `python3 -m pip install PKGS`, retried with `--break-system-packages`
/// for Debian's externally managed Python (PEP 668).
pub fn pip_install(pkgs: &[&str]) -> bool {
    let run = |extra: &[&str]| {
        std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(extra)
            .args(pkgs)
            .status()
            .is_ok_and(|s| s.success())
    };
    run(&[]) || run(&["--break-system-packages"])
}

/// Whether `python3 -c IMPORTS` succeeds, installing `pkgs` once if not.
pub fn python_with(test: &str, imports: &str, pkgs: &[&str]) -> bool {
    let has = || {
        std::process::Command::new("python3")
            .args(["-c", imports])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() || (pip_install(pkgs) && has()) {
        return true;
    }
    tool_missing(
        test,
        &format!("python3 with {}", pkgs.join(", ")),
        &format!("pip install {}", pkgs.join(" ")),
    );
    false
}

pub fn str_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A span of `trace`, starting now and lasting 5 ms.
pub fn span(trace: [u8; 16], id: [u8; 8], parent: Option<[u8; 8]>, name: &str, kind: i32) -> Span {
    let start = now_nanos();
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.to_owned(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 5_000_000,
        ..Span::default()
    }
}

/// One export request carrying `spans` from `service`.
pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![str_attr("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}
