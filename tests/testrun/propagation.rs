//! `test run --propagation`: a service that reads only one trace context
//! format (as one instrumented with Zipkin's B3 or AWS X-Ray does) gets it
//! from the trigger, and the run finds the trace that service continued.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::util::*;

/// Headers of every request the service got, lower-cased names.
type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// `(trace id, parent span id)` as the service's own propagator reads it.
type Reader = fn(&axum::http::HeaderMap) -> Option<(String, String)>;

fn b3_single(h: &axum::http::HeaderMap) -> Option<(String, String)> {
    let v = h.get("b3")?.to_str().ok()?;
    let mut parts = v.split('-');
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

fn xray(h: &axum::http::HeaderMap) -> Option<(String, String)> {
    let v = h.get("x-amzn-trace-id")?.to_str().ok()?;
    let mut trace = None;
    let mut parent = None;
    for field in v.split(';') {
        if let Some(root) = field.strip_prefix("Root=1-") {
            trace = Some(root.replace('-', ""));
        } else if let Some(p) = field.strip_prefix("Parent=") {
            parent = Some(p.to_string());
        }
    }
    Some((trace?, parent?))
}

/// A service that continues the trace named in the one format `read`
/// understands, reporting a server span, and keeps the headers it got.
async fn service(reporter: Reporter, read: Reader, seen: Seen) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let reporter = reporter.clone();
        let seen = Arc::clone(&seen);
        async move {
            let headers = req.headers();
            seen.lock().expect("seen lock").push(
                headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            v.to_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            );
            if let Some((trace, parent)) = read(headers) {
                reporter
                    .send(&[SpanOut {
                        trace_id: &trace,
                        span_id: span_id(),
                        parent: Some(parent),
                        name: "GET /orders",
                        kind: 2,
                        offset_ms: 0,
                        attrs: vec![("http.response.status_code", json!(200))],
                    }])
                    .await;
            }
            "ok"
        }
    });
    serve(app).await
}

/// Runs a test against the service with `--propagation formats`; the run's
/// JSON report and the headers the service got.
async fn run_with(formats: &str, read: Reader) -> (serde_json::Value, Vec<(String, String)>) {
    let served = Served::start("100ms").await;
    let seen: Seen = Arc::default();
    let addr = service(Reporter::new(served.otlp_http), read, Arc::clone(&seen)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let test = write(
        dir.path(),
        "orders.yaml",
        &format!(
            "type: Test\nspec:\n  id: orders\n  name: orders\n  trigger:\n    type: http\n    httpRequest:\n      method: GET\n      url: http://{addr}/orders\n  specs:\n    - selector: span[name = \"GET /orders\"]\n      assertions:\n        - attr:http.response.status_code = 200\n"
        ),
    );
    let args = [
        "test",
        "run",
        "--format=json",
        "--timeout=20s",
        &format!("--file={}", s(&test)),
        &format!("--server={}", served.admin),
        &format!("--propagation={formats}"),
    ];
    let out = bounded(
        LIMIT,
        tracecheck_async(args.iter().map(|a| a.to_string()).collect()),
    )
    .await;
    served.stop().await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let got = seen.lock().expect("seen lock").clone();
    assert_eq!(got.len(), 1, "{got:?}");
    (out.json(), got.into_iter().next().unwrap_or_default())
}

fn header<'a>(got: &'a [(String, String)], name: &str) -> Option<&'a str> {
    got.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn trace_id_of(report: &serde_json::Value) -> String {
    let text = report.to_string();
    let at = text
        .find("\"trace_id\":\"")
        .expect("trace_id in the report")
        + 12;
    text[at..at + 32].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_alone_sends_the_single_header_and_no_traceparent() {
    let (report, got) = run_with("b3", b3_single).await;
    let trace = trace_id_of(&report);
    let b3 = header(&got, "b3").expect("b3 header");
    let parts: Vec<&str> = b3.split('-').collect();
    assert_eq!(parts.len(), 3, "{b3}");
    assert_eq!(parts[0], trace);
    assert_eq!(parts[1].len(), 16);
    assert_eq!(parts[2], "1");
    assert_eq!(header(&got, "traceparent"), None, "{got:?}");
    assert_eq!(header(&got, "x-b3-traceid"), None, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xray_with_b3_multi_and_jaeger_name_one_trace_with_its_time_first() {
    let (report, got) = run_with("xray,b3multi,jaeger", xray).await;
    let trace = trace_id_of(&report);
    let amzn = header(&got, "x-amzn-trace-id").expect("X-Amzn-Trace-Id");
    let span = header(&got, "x-b3-spanid").expect("X-B3-SpanId");
    assert_eq!(
        amzn,
        format!(
            "Root=1-{}-{};Parent={span};Sampled=1",
            &trace[..8],
            &trace[8..]
        )
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let at = u64::from_str_radix(&trace[..8], 16).expect("hex time");
    assert!(now.abs_diff(at) < 120, "{at} vs {now}");
    assert_eq!(header(&got, "x-b3-traceid"), Some(trace.as_str()));
    assert_eq!(header(&got, "x-b3-sampled"), Some("1"));
    assert_eq!(
        header(&got, "uber-trace-id"),
        Some(format!("{trace}:{span}:0:1").as_str())
    );
    assert_eq!(header(&got, "traceparent"), None, "{got:?}");
}
