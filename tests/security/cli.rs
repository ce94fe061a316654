//! The command-line clients against a daemon whose admin endpoint is on
//! TLS with its own CA: `tracecheck watch` (gRPC) and `tracecheck test run
//! --server` (HTTP) reach it with `--ca-file`, and without it refuse the
//! certificate with a message saying so.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use tracecheck::evaluator::registry::ModelSource;

use crate::pki::Pki;
use crate::util;

#[path = "../common/mod.rs"]
mod common;

const MODEL: &str = "type: Model\nspec:\n  id: must-charge\n  match: span[name = \"checkout\"]\n  specs:\n    - name: charged\n      selector: span[name = \"charge\"]\n";

const WAIT: Duration = Duration::from_secs(30);

/// The lines a child writes to stdout and stderr, collected as they come.
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn of(stream: impl std::io::Read + Send + 'static) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("not poisoned").push(line);
            }
        });
        Self(lines)
    }

    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.0.lock().expect("not poisoned").iter().find(|l| f(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {what} within {WAIT:?}: {:?}",
                self.0.lock().expect("not poisoned")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A child killed (and reaped) when dropped, panics included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tracecheck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracecheck"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_test_run_reach_an_admin_endpoint_on_tls_with_ca_file() {
    let pki = Pki::new("admin-cli");
    let mut config = util::config();
    config.admin.tls = Some(pki.server_tls(false));
    config.assembler.root_settle = Duration::from_millis(100);
    config.assembler.settle = Duration::from_millis(300);
    let (daemon, _models) = tracecheck::daemon::start_daemon(
        config,
        vec![ModelSource::Embedded {
            name: "must-charge.yaml".into(),
            text: MODEL.into(),
        }],
    )
    .await
    .expect("daemon starts");
    // The certificate names localhost and 127.0.0.1.
    let admin = format!("https://localhost:{}", daemon.admin_addr.port());
    let ca = pki.path("ca.pem");

    let mut watch = tracecheck()
        .args([
            "watch",
            "--server",
            &admin,
            "--verdict",
            "fail",
            "--format",
            "json",
        ])
        .arg("--ca-file")
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Killed)
        .expect("tracecheck watch");
    let watched = Lines::of(watch.0.stdout.take().expect("stdout"));
    let watch_errors = Lines::of(watch.0.stderr.take().expect("stderr"));
    let mut untrusting = tracecheck()
        .args(["watch", "--server", &admin])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Killed)
        .expect("tracecheck watch without --ca-file");
    let refused = Lines::of(untrusting.0.stderr.take().expect("stderr"));
    // Connected before the verdict comes: a watch sees verdicts from then.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let trace = [0x5a; 16];
    let root = common::span(trace, [1; 8], None, "checkout", 2);
    let request = common::request("shop", vec![root]);
    let resp = util::post(
        &daemon,
        "application/x-protobuf",
        false,
        request.encode_to_vec(),
    )
    .await;
    assert!(resp.status().is_success(), "{:?}", resp.status());
    let trace_hex = common::hex(&trace);
    let line = tokio::task::spawn_blocking(move || {
        watched.wait_for("the failing trace", |l| l.contains(&trace_hex))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; the watch said: {:?}", watch_errors.0.lock()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["verdict"], "fail", "{line}");
    assert_eq!(v["model"], "must-charge", "{line}");
    let why = tokio::task::spawn_blocking(move || {
        refused.wait_for("a certificate error", |l| {
            l.contains("certificate") || l.contains("UnknownIssuer")
        })
    })
    .await
    .expect("stderr reader");
    assert!(why.contains("reconnecting"), "{why}");
    drop((watch, untrusting));

    // `test run --server`: the trace started elsewhere (a traceid trigger),
    // read from the admin API over TLS.
    let dir = tempfile::tempdir().expect("tempdir");
    let test = dir.path().join("checkout.yaml");
    std::fs::write(
        &test,
        format!(
            "type: Test\nspec:\n  id: checkout-seen\n  name: the checkout trace\n  trigger:\n    type: traceid\n    traceid:\n      id: {}\n  specs:\n    - selector: span[name = \"checkout\"]\n      assertions:\n        - attr:tracetest.span.name = \"checkout\"\n",
            common::hex(&trace)
        ),
    )
    .expect("write test");
    let run = move |ca: Option<&std::path::Path>| {
        let mut c = tracecheck();
        c.args([
            "test",
            "run",
            "--server",
            &admin,
            "--timeout",
            "20s",
            "--file",
        ])
        .arg(&test);
        if let Some(ca) = ca {
            c.arg("--ca-file").arg(ca);
        }
        c.output().expect("tracecheck test run")
    };
    let (trusted, untrusted) = tokio::task::spawn_blocking(move || (run(Some(&ca)), run(None)))
        .await
        .expect("test runs");
    let text = |o: &std::process::Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted));
    assert_ne!(untrusted.status.code(), Some(0), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains("certificate") || text(&untrusted).contains("UnknownIssuer"),
        "{}",
        text(&untrusted)
    );
    daemon.shutdown().await;
}
