//! HTTPS triggers and `skipTraceCollection`, as Tracetest's documentation
//! writes them: an uninstrumented HTTPS service with a self-signed
//! certificate (made here with rcgen), so the only thing to assert on is
//! the trigger's response.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracecheck::metrics::Metrics;
use tracecheck::net::tls::{ServerTls, ServerTlsConfig};

use crate::util::*;

/// `GET /health` → 200 `ok` over TLS with a certificate no CA signed.
async fn https_service(dir: &std::path::Path, stop: &CancellationToken) -> std::net::SocketAddr {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let tls = ServerTls::load(
        &ServerTlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
            reload_interval: std::time::Duration::from_secs(60),
        },
        "test https service",
        tracecheck::receiver::ALPN_H2_HTTP1,
    )
    .expect("TLS config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let incoming =
        tracecheck::receiver::tls_incoming(listener, &tls, "test", &metrics, stop).unwrap();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(incoming, app).await;
    });
    addr
}

fn test_file(addr: std::net::SocketAddr, ssl_verification: Option<bool>) -> String {
    let verify =
        ssl_verification.map_or_else(String::new, |v| format!("      sslVerification: {v}\n"));
    format!(
        r#"type: Test
spec:
  id: https-health
  name: health over https
  skipTraceCollection: true
  trigger:
    type: http
    httpRequest:
      method: GET
      url: https://{addr}/health
{verify}  specs:
    - selector: span[tracetest.span.type="general" name="Tracetest trigger"]
      name: the service answers
      assertions:
        - attr:tracetest.response.status = 200
        - attr:tracetest.response.body = "ok"
"#
    )
}

fn run(file: &std::path::Path) -> Output {
    let (grpc, http) = (free_addr(), free_addr());
    tracecheck(&[
        "test",
        "run",
        "--file",
        &s(file),
        "--format",
        "json",
        "--otlp-grpc",
        &grpc.to_string(),
        "--otlp-http",
        &http.to_string(),
        "--timeout",
        "10s",
    ])
}

/// Documented forms: an `https://` trigger URL, `sslVerification: false`
/// (a self-signed certificate), `skipTraceCollection: true` (assertions on
/// the trigger span only; the service sends no spans at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trigger_without_verification_and_without_trace_passes() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let addr = https_service(dir.path(), &stop).await;
    let file = write(dir.path(), "https.yaml", &test_file(addr, Some(false)));
    let out = tokio::task::spawn_blocking(move || run(&file))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let step = &report["runs"][0]["steps"][0];
    assert_eq!(step["status"], "passed", "{report:#}");
    assert_eq!(step["response_status"], 200, "{report:#}");
    stop.cancel();
}

/// Verification is on unless the file turns it off: a certificate no CA
/// signed fails the trigger (exit 1) with the TLS reason, and nothing waits
/// for a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trigger_refuses_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let addr = https_service(dir.path(), &stop).await;
    let file = write(dir.path(), "https.yaml", &test_file(addr, None));
    let out = tokio::task::spawn_blocking(move || run(&file))
        .await
        .unwrap();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let step = &report["runs"][0]["steps"][0];
    assert_eq!(step["status"], "error", "{report:#}");
    let message = step["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("trigger failed") && message.to_lowercase().contains("certificate"),
        "{message}"
    );
    stop.cancel();
}

/// A failed assertion does not stop a transaction: the next step still runs
/// (and passes), and the transaction fails (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_does_not_stop_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let addr = https_service(dir.path(), &stop).await;
    let passing = test_file(addr, Some(false));
    let failing = passing
        .replace("id: https-health", "id: expects-500")
        .replace("status = 200", "status = 500");
    write(dir.path(), "fails.yaml", &failing);
    write(dir.path(), "passes.yaml", &passing);
    let suite = write(
        dir.path(),
        "suite.yaml",
        "type: Transaction\nspec:\n  id: chain\n  name: a failure, then a pass\n  steps:\n    - ./fails.yaml\n    - ./passes.yaml\n",
    );
    let out = tokio::task::spawn_blocking(move || run(&suite))
        .await
        .unwrap();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let steps = &report["runs"][0]["steps"];
    assert_eq!(steps[0]["status"], "failed", "{report:#}");
    assert_eq!(steps[1]["status"], "passed", "{report:#}");
    assert_eq!(report["runs"][0]["passed"], false);
    stop.cancel();
}
