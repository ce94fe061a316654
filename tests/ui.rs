//! The pages under `/ui/` in a real browser: headless Chromium (Debian's
//! `chromium`, driven through `chromium-driver` over the WebDriver
//! protocol, spoken here with reqwest). Violating bank traffic is sent to a
//! daemon with the bank model; the test goes from the overview to the
//! failures to one failing trace, checks what a person would look for
//! there, and watches the live page receive a verdict. A screenshot of each
//! page is written to `target/ui-screenshots/`, and one of the page a
//! failing step was on.
//!
//! Without Chromium the test is skipped with a message, unless `CI` is set,
//! where it fails (`.ci/run` installs it).

mod alerts_util;
#[path = "security/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alerts_util::*;
use base64::Engine as _;
use serde_json::{json, Value};
use tracecheck::bench::traffic::{Rng, TraceShape, TrafficGenerator, TrafficMix};
use tracecheck::config::Config;

const BANK_MODEL: &str = "overdraft-rolls-back";
const JAEGER: &str = "http://jaeger.example/trace/{trace_id}?uiFind={span_id}";
/// Put on a violating trace's span: the trace page must show it as text.
const HOSTILE: &str = "<script>window.pwned = 1</script><b>bold</b>";

fn find(env: &str, path: &str) -> Option<PathBuf> {
    let p = std::env::var_os(env).map_or_else(|| PathBuf::from(path), PathBuf::from);
    p.is_file().then_some(p)
}

fn screenshots() -> PathBuf {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir
}

/// One WebDriver session of a chromedriver child (killed on drop).
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: ChildGuard,
}

impl Browser {
    async fn start(chromium: &std::path::Path, driver: &std::path::Path) -> Browser {
        Browser::start_with(chromium, driver, &[]).await
    }

    /// With `extra` Chromium flags.
    async fn start_with(
        chromium: &std::path::Path,
        driver: &std::path::Path,
        extra: &[&str],
    ) -> Browser {
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"));
        let log = screenshots().join("chromedriver.log");
        let mut guard = ChildGuard::spawn("chromedriver", cmd, log);
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            guard.assert_running();
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer: {}",
                guard.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1600",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            },
        }}});
        let answer = http
            .post(format!("{base}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("new WebDriver session");
        let v: Value = serde_json::from_str(&answer.text().await.expect("session answer"))
            .expect("session answer is JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}\n{}", guard.log_tail(20)))
            .to_owned();
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: guard,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let answer = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {path}: {status} {text}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Clicks the first element `css` selects, as a user does.
    async fn click(&self, css: &str) {
        let e = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {e}"))
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// Every URL the page loaded (itself and its resources) is of its
    /// own origin; and it loaded its stylesheet and script.
    async fn assert_same_origin(&self, page: &str) {
        let v = self
            .run(
                "return {origin: location.origin, \
                 urls: performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name)};",
            )
            .await;
        let origin = v["origin"].as_str().unwrap_or_default().to_owned();
        let urls: Vec<&str> = v["urls"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(
            urls.iter().any(|u| u.ends_with("/ui/assets/ui.css"))
                && urls.iter().any(|u| u.ends_with("/ui/assets/ui.js")),
            "{page}: stylesheet and script loaded: {urls:?}"
        );
        for u in &urls {
            assert!(
                u.starts_with(&format!("{origin}/")),
                "{page} loaded {u}, not of {origin}"
            );
        }
    }

    async fn quit(&self) {
        let _ = self
            .http
            .delete(&self.session)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    }
}

/// Polls a script in the page until it returns something truthy.
async fn wait_for(b: &Browser, what: &str, script: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let v = b.run(script).await;
        if !(v.is_null() || v == false || v == "" || v == 0) {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(admin: std::net::SocketAddr) -> MetricsText {
    let (status, body) = get_text(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    MetricsText::parse(&body)
}

fn config() -> Config {
    let text = format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: 127.0.0.1:0 }}\nadmin: {{ endpoint: 127.0.0.1:0 }}\n\
         assembler:\n  settle: 1s\n  idle_timeout: 1s\n  root_settle: 200ms\n\
         links: {{ trace_url: \"{JAEGER}\" }}\n"
    );
    Config::from_yaml("ui.yaml", &text, |_| None)
        .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
        .config
}

/// A violating bank trace, one of its spans carrying markup in an
/// attribute.
fn violation(
    g: &mut TrafficGenerator,
) -> (
    String,
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    let mut t = g.trace_of(TraceShape::BankViolation);
    if let Some((_, span)) = t.spans.first_mut() {
        span.attributes.push(str_attr("note", HOSTILE));
    }
    (hex(&t.trace_id), t.to_request())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_found_and_explained_in_a_browser() {
    let (Some(chromium), Some(driver)) = (
        find("CHROMIUM_BIN", "/usr/bin/chromium"),
        find("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"),
    ) else {
        tool_missing(
            "a_failure_is_found_and_explained_in_a_browser",
            "chromium and chromedriver (/usr/bin, or CHROMIUM_BIN and CHROMEDRIVER_BIN)",
            "Debian: apt-get install chromium chromium-driver",
        );
        return;
    };
    bounded(Duration::from_secs(150), async {
        let live = Live::start(config()).await;
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(20));
        let mut violating = Vec::new();
        for i in 0..3 {
            let (id, request) = violation(&mut g);
            violating.push(id);
            live.export(request).await;
            live.export(
                g.trace_of([TraceShape::BankCommit, TraceShape::Web][i % 2])
                    .to_request(),
            )
            .await;
        }
        poll_until(
            Duration::from_secs(20),
            "the violations' verdicts",
            || async {
                let (_, r) = live
                    .get_json(&format!("/api/v1/results?model={BANK_MODEL}&verdict=fail"))
                    .await;
                (r["results"].as_array().map_or(0, Vec::len) >= violating.len()).then_some(())
            },
        )
        .await;

        let browser = Arc::new(Browser::start(&chromium, &driver).await);
        let base = format!("http://{}", live.admin);
        // The steps run as a task of their own, so that a failing one
        // leaves a screenshot of where it failed before the test fails.
        let steps = tokio::spawn(browse(
            Arc::clone(&browser),
            base,
            (live.admin, live.grpc),
            violating,
        ));
        let outcome = steps.await;
        if outcome.is_err() {
            browser.screenshot("failed").await;
        }
        browser.quit().await;
        live.stop().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

async fn browse(
    b: Arc<Browser>,
    base: String,
    (admin, grpc): (std::net::SocketAddr, std::net::SocketAddr),
    violating: Vec<String>,
) {
    // Overview: the bank model with its failures counted.
    b.go(&format!("{base}/ui/")).await;
    b.screenshot("overview").await;
    let fails = b
        .run(&format!(
            "return document.querySelector('tr.model[data-model=\"{BANK_MODEL}\"] td.fail').textContent;"
        ))
        .await;
    let fails: u64 = fails.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(
        fails >= violating.len() as u64,
        "overview shows {fails} failures"
    );
    assert!(
        b.run(&format!("return document.querySelector('tr.model[data-model=\"{BANK_MODEL}\"] svg.chart rect') !== null;"))
            .await
            == true,
        "the chart shows this minute's verdicts"
    );
    b.assert_same_origin("overview").await;

    // Its failures, newest first, each linking to its trace.
    b.click(&format!(
        "tr.model[data-model=\"{BANK_MODEL}\"] a.model-link"
    ))
    .await;
    wait_for(
        &b,
        "the failures page",
        "return document.body.dataset.page === 'failures';",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("failures").await;
    let listed = b
        .run("return Array.from(document.querySelectorAll('tr.failure a.trace-link')).map(a => a.textContent);")
        .await;
    let listed: Vec<String> = listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Newest first: the order the results API gives (verdicts are given
    // as traces settle, not in the order they were sent).
    let (_, results) = get_json(
        admin,
        &format!("/api/v1/results?model={BANK_MODEL}&verdict=fail"),
    )
    .await;
    let newest_first: Vec<String> = results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["trace_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, newest_first, "the violations, newest first");
    let mut sorted = listed.clone();
    sorted.sort();
    let mut sent = violating.clone();
    sent.sort();
    assert_eq!(sorted, sent, "every violation listed");
    b.assert_same_origin("failures").await;

    // The newest failure's trace.
    b.click("tr.failure a.trace-link").await;
    wait_for(
        &b,
        "the trace page",
        "return document.body.dataset.page === 'trace';",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("trace").await;
    let id = listed.first().cloned().unwrap_or_default();
    assert!(b.url().await.ends_with(&format!("/ui/trace/{id}")));
    b.assert_same_origin("trace").await;

    // What the API says failed, the page shows: each failure's spec,
    // observed and expected value, and its span marked in the waterfall.
    let (_, api) = get_json(admin, &format!("/api/v1/traces/{id}")).await;
    let failures: Vec<Value> = api["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["model"] == BANK_MODEL && v["verdict"] == "fail")
        .flat_map(|v| v["failures"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!failures.is_empty(), "{api}");
    let shown = b
        .run("return Array.from(document.querySelectorAll('tr.failed-spec')).map(tr => ({\
              spec: tr.querySelector('.spec').textContent, observed: tr.querySelector('.observed').textContent,\
              expected: tr.querySelector('.expected').textContent, selector: tr.querySelector('.selector').textContent}));")
        .await;
    let shown = shown.as_array().cloned().unwrap_or_default();
    let mut with_values = 0;
    for f in &failures {
        let row = shown
            .iter()
            .find(|r| r["spec"] == f["spec"])
            .unwrap_or_else(|| panic!("failure {f} not shown: {shown:?}"));
        assert!(
            row["selector"]
                .as_str()
                .is_some_and(|s| s.starts_with("span[")),
            "{row}"
        );
        if let (Some(o), Some(e)) = (f["observed"].as_str(), f["expected"].as_str()) {
            assert_eq!(row["observed"], o, "{row}");
            assert_eq!(row["expected"], e, "{row}");
            with_values += 1;
        }
    }
    assert!(
        with_values > 0,
        "a failure with observed and expected values: {failures:?}"
    );
    let failing_spans: Vec<String> = failures
        .iter()
        .filter_map(|f| f["span_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!failing_spans.is_empty(), "{failures:?}");
    let marked = b
        .run("return Array.from(document.querySelectorAll('tr.span.failing')).map(tr => tr.dataset.spanId);")
        .await;
    let mut marked: Vec<String> = marked
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    marked.sort();
    let mut want = failing_spans.clone();
    want.sort();
    want.dedup();
    assert_eq!(marked, want, "the failing spans, and only they, are marked");
    let spans = b
        .run("return document.querySelectorAll('tr.span').length;")
        .await;
    assert!(
        spans.as_u64().unwrap_or(0) > marked.len() as u64,
        "other spans shown unmarked"
    );

    // The model as written, the failing specs highlighted.
    let highlighted = b
        .run("return Array.from(document.querySelectorAll('pre.yaml .ln.hl')).map(l => l.textContent).join('\\n');")
        .await;
    let highlighted = highlighted.as_str().unwrap_or_default().to_owned();
    for f in &failures {
        let spec = f["spec"].as_str().unwrap_or_default();
        assert!(
            highlighted.contains(spec),
            "{spec} highlighted in: {highlighted}"
        );
    }
    assert!(
        !highlighted.contains("id: "),
        "only the specs: {highlighted}"
    );

    // Jaeger, at the first failing span.
    let jaeger = b
        .run("return document.getElementById('jaeger').getAttribute('href');")
        .await;
    let jaeger = jaeger.as_str().unwrap_or_default().to_owned();
    let span = jaeger
        .rsplit("uiFind=")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        jaeger,
        JAEGER
            .replace("{trace_id}", &id)
            .replace("{span_id}", &span),
        "the trace's link"
    );
    assert!(
        failing_spans.contains(&span),
        "uiFind={span} is a failing span: {failing_spans:?}"
    );
    let download = b
        .run("return document.getElementById('download-test').getAttribute('href');")
        .await;
    assert_eq!(
        download,
        format!("/api/v1/traces/{id}/test.tar.gz").as_str()
    );

    // A span attribute's markup is text, never run.
    let hostile = b
        .run(
            "return {pwned: window.pwned === undefined ? null : window.pwned, \
              text: Array.from(document.querySelectorAll('dd')).map(d => d.textContent), \
              bold: document.querySelectorAll('dd b').length};",
        )
        .await;
    assert!(
        hostile["pwned"].is_null(),
        "the attribute's script ran: {hostile}"
    );
    assert_eq!(hostile["bold"], 0, "the attribute's markup became elements");
    assert!(
        hostile["text"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t == HOSTILE)),
        "the attribute shown as written: {hostile}"
    );

    // Live: a new failure appears without reloading.
    b.go(&format!("{base}/ui/live?model={BANK_MODEL}&verdict=fail"))
        .await;
    wait_for(
        &b,
        "the live page to connect",
        "return document.getElementById('live-status').textContent.startsWith('connected');",
        Duration::from_secs(10),
    )
    .await;
    let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(21));
    let fresh = g.trace_of(TraceShape::BankViolation);
    let fresh_id = hex(&fresh.trace_id);
    // A passing trace first: filtered out, it must not show.
    let passes = |m: MetricsText| m.verdicts(BANK_MODEL).0;
    let passed_before = passes(metrics(admin).await);
    export_to(grpc, g.trace_of(TraceShape::BankRollback).to_request()).await;
    export_to(grpc, fresh.to_request()).await;
    wait_for(
        &b,
        "the new failure on the live page",
        "return document.querySelectorAll('tr.live-verdict').length;",
        Duration::from_secs(20),
    )
    .await;
    // The pass was given too by now (or soon): it still must not show.
    poll_until(
        Duration::from_secs(10),
        "the passing trace's verdict",
        || async { (passes(metrics(admin).await) > passed_before).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = b
        .run("return Array.from(document.querySelectorAll('tr.live-verdict')).map(tr => tr.textContent);")
        .await;
    b.screenshot("live").await;
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(
        rows.len(),
        1,
        "one failure, the passing trace filtered out: {rows:?}"
    );
    assert!(
        rows[0]
            .as_str()
            .is_some_and(|r| r.contains(&fresh_id) && r.contains("fail")),
        "{rows:?}"
    );
    b.assert_same_origin("live").await;

    // Test runs: none submitted, said so.
    b.go(&format!("{base}/ui/runs")).await;
    b.screenshot("runs").await;
    let said = b
        .run("return document.querySelector('main .message').textContent;")
        .await;
    assert!(
        said.as_str().is_some_and(|s| s.contains("No run")),
        "{said}"
    );
}

/// With `admin.auth` on an admin endpoint with TLS: a page asked for
/// without signing in goes to the sign-in form, and neither the pages nor
/// the API show trace data; once signed in with the token, every page
/// works and shows the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_once_signed_in_over_tls_and_none_before() {
    let (Some(chromium), Some(driver)) = (
        find("CHROMIUM_BIN", "/usr/bin/chromium"),
        find("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"),
    ) else {
        tool_missing(
            "every_page_works_once_signed_in_over_tls_and_none_before",
            "chromium and chromedriver (/usr/bin, or CHROMIUM_BIN and CHROMEDRIVER_BIN)",
            "Debian: apt-get install chromium chromium-driver",
        );
        return;
    };
    const TOKEN: &str = "ui-s3cret";
    bounded(Duration::from_secs(150), async {
        let pki = pki::Pki::new("ui");
        let mut config = config();
        config.admin.tls = Some(pki.server_tls(false));
        config.admin.auth = Some(tracecheck::net::auth::AuthConfig {
            bearer_token: Some(tracecheck::net::secret::Secret::new(TOKEN)),
            bearer_token_file: None,
        });
        let live = Live::start(config).await;
        let base = format!("https://localhost:{}", live.admin.port());
        let trust = tracecheck::net::tls::ClientTlsConfig {
            ca_file: Some(pki.path("ca.pem")),
            ..Default::default()
        };
        let api = tracecheck::net::client::builder(Some(&trust), "test")
            .expect("TLS")
            .build()
            .expect("client");
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(21));
        let (id, request) = violation(&mut g);
        live.export(request).await;
        poll_until(Duration::from_secs(20), "the violation's verdict", || async {
            let r = api
                .get(format!("{base}/api/v1/results?verdict=fail"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?;
            r.text().await.ok()?.contains(&id).then_some(())
        })
        .await;

        // The browser does not know the test CA.
        let b = Arc::new(Browser::start_with(&chromium, &driver, &["--ignore-certificate-errors"]).await);
        let steps = {
            let b = Arc::clone(&b);
            let id = id.clone();
            tokio::spawn(async move {
                let text = "document.body ? document.body.innerText : ''";
                for path in ["/ui/", "/ui/failures", &format!("/ui/trace/{id}"), "/ui/live", "/ui/runs", "/api/v1/results"] {
                    b.go(&format!("{base}{path}")).await;
                    let url = b.url().await;
                    let shown = b.run(&format!("return {text};")).await;
                    if path.starts_with("/ui/") {
                        assert!(url.contains("/ui/login?next="), "{path} without signing in: {url}");
                    }
                    assert!(!shown.as_str().unwrap_or("").contains(&id), "{path} showed the trace before sign-in");
                }
                b.go(&format!("{base}/ui/failures")).await;
                b.screenshot("signin").await;
                b.run(&format!(
                    "document.querySelector('input[name=token]').value = '{TOKEN}'; document.querySelector('form').submit(); return 0;"
                ))
                .await;
                wait_for(&b, "the failures page after signing in", &format!(
                    "return location.pathname === '/ui/failures' && document.body.innerText.includes('{id}');"
                ), Duration::from_secs(15)).await;
                for (path, heading) in [
                    ("/ui/".to_owned(), "Overview"),
                    (format!("/ui/trace/{id}"), &id[..8]),
                    ("/ui/live".to_owned(), "Live"),
                    ("/ui/runs".to_owned(), "runs"),
                ] {
                    b.go(&format!("{base}{path}")).await;
                    let url = b.url().await;
                    assert!(!url.contains("/ui/login"), "{path} signed in: {url}");
                    let shown = b.run(&format!("return {text};")).await;
                    assert!(
                        shown.as_str().unwrap_or("").contains(heading),
                        "{path} signed in shows {heading:?}: {shown}"
                    );
                }
                b.screenshot("signed-in-trace").await;
            })
        };
        let outcome = steps.await;
        if outcome.is_err() {
            b.screenshot("failed-signin").await;
        }
        b.quit().await;
        live.stop().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}
