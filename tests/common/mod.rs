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

/// The Python the suites run their helpers with (OpenTelemetry SDK
/// services, the gRPC client): a virtual environment in `target/python`,
/// made on first use, so that `cargo test` never installs into the
/// system's Python. `.ci/run` makes the same one and puts it first on
/// `PATH` for its scripts.
pub fn python() -> PathBuf {
    venv().join("bin").join("python")
}

/// `target/python` (beside `target/tmp`, wherever `CARGO_TARGET_DIR` is).
fn venv() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("python")
}

/// Makes the virtual environment unless it is there. Made beside its
/// place and renamed into it, so that two test processes starting at once
/// never use a half-made one (`python -m` does not need the venv's path).
fn make_venv() -> Result<(), String> {
    let dir = venv();
    if dir.join("bin").join("python").exists() {
        return Ok(());
    }
    let building = dir.with_file_name(format!("python.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    // With the system's site packages: what the machine has already (a
    // Debian python3-grpcio, or what an older run installed) is used, and
    // only what is missing is downloaded, into the venv.
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&building)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !made.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    if std::fs::rename(&building, &dir).is_err() {
        // Another process made it first.
        let _ = std::fs::remove_dir_all(&building);
    }
    Ok(())
}

/// Whether [`python`] can `IMPORTS`, installing `pkgs` into its virtual
/// environment (made first if need be) once if not.
pub fn python_with(test: &str, imports: &str, pkgs: &[&str]) -> bool {
    // Tests of one binary run on parallel threads; one installs at a time.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let has = || {
        std::process::Command::new(python())
            .args(["-c", imports])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = || {
        std::process::Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(pkgs)
            .status()
            .is_ok_and(|s| s.success())
    };
    let made = make_venv();
    if made.is_ok() && (has() || (install() && has())) {
        return true;
    }
    let why = match made {
        Err(e) => format!("a virtual environment in {} ({e})", venv().display()),
        Ok(()) => format!("{} with {}", python().display(), pkgs.join(", ")),
    };
    tool_missing(
        test,
        &why,
        "python3 with venv (Debian: apt-get install python3-venv) and network access to PyPI",
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
