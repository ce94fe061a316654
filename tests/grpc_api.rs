//! tracecheck's own gRPC API (`proto/tracecheck/v1`) from the outside: a
//! Python grpcio client built from the .proto files alone, the `tracecheck
//! watch` command, a watcher that never reads, reflection and health, and
//! `watch` surviving a daemon restart.
//!
//! Everything listens on loopback ports; every test is bounded in time.

mod grpc_util;
mod models_util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grpc_util::*;
use models_util::{bounded, config, export, poll_until, python, repo_path, Live, Metrics};
use prost::Message as _;
use serde_json::Value;
use tracecheck::admin::grpc_api::pb;
use tracecheck::admin::grpc_api::pb::verdict_service_client::VerdictServiceClient;
use tracecheck::bench::traffic::{GeneratedTrace, TraceShape};
use tracecheck::evaluator::registry::ModelSource;

const BANK_MODEL: &str = "overdraft-rolls-back";

fn bank_source() -> Vec<ModelSource> {
    vec![ModelSource::Path {
        path: repo_path("config/models/bank.yaml"),
        optional: false,
    }]
}

async fn bank_daemon() -> Live {
    Live::start(
        config(
            "  settle: 1s\n  idle_timeout: 1s\n  root_settle: 100ms\n",
            None,
        ),
        bank_source(),
    )
    .await
}

async fn scrape(admin: SocketAddr) -> Option<Metrics> {
    let body = models_util::client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(Metrics::parse(&body))
}

/// Waits until `model` has given `total` verdicts (of any kind), then
/// returns (pass, fail, skip).
async fn all_verdicts(
    admin: SocketAddr,
    model: &str,
    total: u64,
    limit: Duration,
) -> (u64, u64, u64) {
    poll_until(limit, &format!("{total} verdicts of {model}"), || async {
        let c = scrape(admin).await?.verdicts(model);
        (c.0 + c.1 + c.2 >= total).then_some(c)
    })
    .await
}

fn mix(seed: u64, n: usize, m: usize, k: usize) -> Vec<GeneratedTrace> {
    let mut g = generator(seed);
    let mut traces = Vec::new();
    for i in 0..n.max(m).max(k) {
        for (count, shape) in [
            (n, TraceShape::BankViolation),
            (m, TraceShape::BankRollback),
            (k, TraceShape::Web),
        ] {
            if i < count {
                traces.push(g.trace_of(shape));
            }
        }
    }
    traces
}

// ---------------------------------------------------------------------------
// 1. A Python grpcio client generated from the .proto files.

fn verdict_of<'a>(verdicts: &'a [Value], trace: &str, model: &str) -> &'a Value {
    let found: Vec<&Value> = verdicts
        .iter()
        .filter(|v| v["trace_id"] == trace && v["model"] == model)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one verdict of {model} on {trace}: {verdicts:?}"
    );
    found[0]
}

/// List shows the bank model; Evaluate on an encoded OTLP request (loaded
/// models, then the same model inline) fails the violating trace and passes
/// the rolled-back one; garbage is INVALID_ARGUMENT; Watch(verdicts=[FAIL])
/// gets exactly the violating traces sent while it watches, not the passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_lists_evaluates_and_watches() {
    if !python_ready() {
        return;
    }
    bounded(Duration::from_secs(45), async {
        let live = bank_daemon().await;
        let dir = tempfile::tempdir().unwrap();
        let mut g = generator(11);
        let (bad, good) = (
            g.trace_of(TraceShape::BankViolation),
            g.trace_of(TraceShape::BankRollback),
        );
        let otlp = dir.path().join("request.bin");
        std::fs::write(
            &otlp,
            one_request(&[bad.clone(), good.clone()]).encode_to_vec(),
        )
        .unwrap();
        let (bad_id, good_id) = (hex(&bad.trace_id), hex(&good.trace_id));

        // Traces sent while the script watches: 3 violating, 3 passing.
        let watched: Vec<GeneratedTrace> = mix(12, 3, 3, 0);
        let violating = ids_of(&watched, TraceShape::BankViolation);

        let mut py = Proc::spawn(
            std::process::Command::new(python())
                .arg(script())
                .args(["api", &live.admin.to_string()])
                .arg("--otlp")
                .arg(&otlp)
                .arg("--models-yaml")
                .arg(repo_path("config/models/bank.yaml"))
                .args(["--watch-count", &violating.len().to_string()]),
        );
        poll_until(Duration::from_secs(25), "the script to watch", || async {
            let lines = py.stdout_lines();
            let watching = lines.iter().any(|l| l == "WATCHING");
            let ended = lines.iter().any(|l| l.starts_with('{'));
            assert!(
                !ended || watching,
                "script ended: {lines:?}\n{}",
                py.stderr_text()
            );
            watching.then_some(())
        })
        .await;
        for t in &watched {
            live.export(t.to_request()).await;
        }
        let status = py
            .wait_exit(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("script did not finish: {:?}", py.stdout_lines()));
        let out = py.stdout_lines();
        let stderr = py.stderr_text();
        let last = out.last().cloned().unwrap_or_default();
        let result: Value = serde_json::from_str(&last)
            .unwrap_or_else(|e| panic!("script output not JSON ({e}): {out:?}\n{stderr}"));
        assert!(status.success(), "script failed: {result}\n{stderr}");
        eprintln!("python client took {}s", result["seconds"]);

        // List.
        let bank = result["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == BANK_MODEL)
            .unwrap_or_else(|| panic!("{BANK_MODEL} not listed: {}", result["list"]));
        assert_eq!(bank["within"], "30s");
        assert_eq!(bank["labels"]["team"], "payments");
        assert!(bank["file"]
            .as_str()
            .unwrap()
            .ends_with("config/models/bank.yaml"));

        // Evaluate, loaded models and inline YAML alike.
        for key in ["evaluate_loaded", "evaluate_inline"] {
            let verdicts = result[key].as_array().unwrap();
            assert_eq!(
                verdicts.len(),
                2,
                "{key}: one per (trace, model): {verdicts:?}"
            );
            let fail = verdict_of(verdicts, &bad_id, BANK_MODEL);
            assert_eq!(fail["verdict"], "VERDICT_KIND_FAIL", "{key}: {fail}");
            let specs: BTreeSet<&str> = fail["failures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            assert!(specs.contains("never commits"), "{key}: {fail}");
            let pass = verdict_of(verdicts, &good_id, BANK_MODEL);
            assert_eq!(pass["verdict"], "VERDICT_KIND_PASS", "{key}: {pass}");
        }
        assert_eq!(result["evaluate_garbage"], "INVALID_ARGUMENT");
        // Evaluate records nothing: only the 6 watched traces are counted.
        all_verdicts(live.admin, BANK_MODEL, 6, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(live.metrics().await.verdicts(BANK_MODEL), (3, 3, 0));

        // Watch: exactly the violating traces, as failures.
        assert!(result.get("watch_error").is_none(), "{result}");
        let got = result["watch"].as_array().unwrap();
        let ids: BTreeSet<String> = got
            .iter()
            .map(|v| v["trace_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, violating, "watched: {got:?}");
        for v in got {
            assert_eq!(v["verdict"], "VERDICT_KIND_FAIL", "{v}");
            assert_eq!(v["model"], BANK_MODEL, "{v}");
            assert_eq!(v["labels"]["severity"], "critical", "{v}");
            assert_eq!(v["completion_reason"], "root", "{v}");
            assert_eq!(v["missed_before"], 0, "{v}");
        }
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. `tracecheck watch --verdict fail --format json`.

/// A known mix (N violating, M rolled back, K web): the watch prints the
/// violating traces, each once, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_command_prints_exactly_the_violations() {
    bounded(Duration::from_secs(40), async {
        let live = bank_daemon().await;
        let watch = watch_failures(live.admin);
        // A first violation proves the watch is connected.
        let probe = generator(20).trace_of(TraceShape::BankViolation);
        let probe_id = hex(&probe.trace_id);
        live.export(probe.to_request()).await;
        poll_until(
            Duration::from_secs(15),
            "the watch to print the probe",
            || async {
                watch
                    .stdout_lines()
                    .iter()
                    .any(|l| l.contains(&probe_id))
                    .then_some(())
            },
        )
        .await;

        let (n, m, k) = (7, 5, 6);
        let traces = mix(21, n, m, k);
        let mut violating = ids_of(&traces, TraceShape::BankViolation);
        for t in &traces {
            live.export(t.to_request()).await;
        }
        let counts = all_verdicts(
            live.admin,
            BANK_MODEL,
            (n + m + k + 1) as u64,
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(counts, (m as u64, n as u64 + 1, k as u64));
        // Whatever the watch will print, it prints within this.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        violating.insert(probe_id);

        let lines = json_lines(&watch.stdout_lines());
        let ids: Vec<String> = lines
            .iter()
            .map(|v| v["trace_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), violating.len(), "each violation once: {ids:?}");
        assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), violating);
        for v in &lines {
            assert_eq!(v["verdict"], "fail", "{v}");
            assert_eq!(v["model"], BANK_MODEL, "{v}");
            assert!(!v["failures"].as_array().unwrap().is_empty(), "{v}");
        }
        drop(watch);
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. A watcher that never reads.

fn bank_copy(id: &str) -> String {
    let text = std::fs::read_to_string(repo_path("config/models/bank.yaml")).unwrap();
    text.replace("id: overdraft-rolls-back", &format!("id: {id}"))
        .replace("  within: 30s\n", "")
}

/// Three copies of the bank model, so each violating trace gives three
/// failures. A watcher opened with small HTTP/2 windows and never read
/// cannot slow evaluation: every verdict is counted, promptly; reading
/// later shows `missed_before`, and received + missed is exactly what was
/// given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_never_slows_evaluation() {
    bounded(Duration::from_secs(50), async {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["overdraft-a", "overdraft-b", "overdraft-c"];
        for id in ids {
            std::fs::write(dir.path().join(format!("{id}.yaml")), bank_copy(id)).unwrap();
        }
        let live = Live::start(
            config(
                "  settle: 1s\n  idle_timeout: 1s\n  root_settle: 100ms\n",
                None,
            ),
            vec![ModelSource::Path {
                path: dir.path().to_path_buf(),
                optional: false,
            }],
        )
        .await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", live.admin))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .expect("connect to the admin port");
        let mut client = VerdictServiceClient::new(channel);
        let mut stream = client
            .watch(pb::WatchRequest {
                verdicts: vec![pb::VerdictKind::Fail as i32],
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();

        const TRACES: usize = 3000;
        let mut g = generator(30);
        let traces: Vec<GeneratedTrace> = (0..TRACES)
            .map(|_| g.trace_of(TraceShape::BankViolation))
            .collect();
        let sent_at = Instant::now();
        for chunk in traces.chunks(250) {
            live.export(one_request(chunk)).await;
        }
        for id in ids {
            let c = all_verdicts(live.admin, id, TRACES as u64, Duration::from_secs(30)).await;
            assert_eq!(c, (0, TRACES as u64, 0), "{id}");
        }
        let took = sent_at.elapsed();
        eprintln!("{} verdicts with a stalled watcher in {took:?}", 3 * TRACES);
        assert!(
            took < Duration::from_secs(30),
            "evaluation slowed: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = live.metrics().await;
        for id in ids {
            assert_eq!(
                again.verdicts(id),
                (0, TRACES as u64, 0),
                "{id} kept counting"
            );
        }

        // Now read what was kept.
        let (mut received, mut missed, mut max_missed) = (0u64, 0u64, 0u64);
        macro_rules! read {
            ($v:expr) => {{
                let v: pb::Verdict = $v;
                assert_eq!(v.verdict, pb::VerdictKind::Fail as i32);
                received += 1;
                missed += v.missed_before;
                max_missed = max_missed.max(v.missed_before);
            }};
        }
        while let Ok(next) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            read!(next.expect("stream ok").expect("stream open"));
        }
        assert!(received > 0, "nothing kept");
        // One more violation: its three failures carry the last misses.
        live.export(
            generator(31)
                .trace_of(TraceShape::BankViolation)
                .to_request(),
        )
        .await;
        for _ in 0..3 {
            let v = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a verdict after catching up")
                .expect("stream ok")
                .expect("stream open");
            read!(v);
        }
        eprintln!(
            "slow watcher: received {received}, missed {missed}, max missed_before {max_missed}"
        );
        assert!(max_missed > 0, "no message had missed_before > 0");
        assert_eq!(received + missed, 3 * (TRACES as u64 + 1));
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Reflection and health.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    bounded(Duration::from_secs(40), async {
        let live = bank_daemon().await;
        let url = format!("http://{}", live.admin);

        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel.clone());
        for service in [
            "",
            "tracecheck.v1.VerdictService",
            "tracecheck.v1.ModelService",
        ] {
            let status = poll_until(Duration::from_secs(5), "SERVING", || {
                let mut health = health.clone();
                async move {
                    let s = health
                        .check(HealthCheckRequest {
                            service: service.to_owned(),
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .status;
                    (s == ServingStatus::Serving as i32).then_some(s)
                }
            })
            .await;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        // Reflection v1 (Rust client).
        let mut reflection = ServerReflectionClient::new(channel);
        let ask = |r: MessageRequest| {
            tokio_stream::iter(vec![ServerReflectionRequest {
                host: String::new(),
                message_request: Some(r),
            }])
        };
        let mut answers = reflection
            .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
        for s in ["tracecheck.v1.VerdictService", "tracecheck.v1.ModelService"] {
            assert!(names.contains(s), "{s} not listed: {names:?}");
        }
        let mut answers = reflection
            .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
                "tracecheck.v1.VerdictService".into(),
            )))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
            panic!("no descriptor for VerdictService: {answer:?}");
        };
        let file = prost_types_decode(&files.file_descriptor_proto[0]);
        assert_eq!(file.0, "tracecheck/v1/verdicts.proto");
        assert!(file.1.contains(&"VerdictService".to_owned()), "{file:?}");

        // Python: raw health, and grpcio-reflection if installed.
        if python_ready() {
            let admin = live.admin.to_string();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(python())
                    .arg(script())
                    .args(["reflection", &admin])
                    .output()
                    .expect("run python3")
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let result: Value = serde_json::from_str(text.lines().last().unwrap_or(""))
                .unwrap_or_else(|e| {
                    panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr))
                });
            assert!(out.status.success(), "{result}");
            assert_eq!(result["health"], "SERVING", "{result}");
            {
                assert_eq!(result["reflection"], "ok", "Python reflection: {result}");
                let services: Vec<&str> = result["reflection_services"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect();
                assert!(
                    services.contains(&"tracecheck.v1.VerdictService"),
                    "{result}"
                );
                assert_eq!(
                    result["reflection_methods"],
                    serde_json::json!(["Evaluate", "Watch"])
                );
            }
        }
        live.stop().await;
    })
    .await;
}

/// (file name, service names) of an encoded FileDescriptorProto, read with
/// prost's wire format by hand (fields 1 = name, 6 = service{1 = name}).
fn prost_types_decode(bytes: &[u8]) -> (String, Vec<String>) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Service {
        #[prost(string, tag = "1")]
        name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }
    let f = File::decode(bytes).expect("a FileDescriptorProto");
    (f.name, f.service.into_iter().map(|s| s.name).collect())
}

// ---------------------------------------------------------------------------
// 5. `tracecheck watch` across a daemon restart.

/// The watch keeps running when its daemon stops (SIGTERM) and prints the
/// violations of a new daemon on the same admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_after_daemon_restart() {
    bounded(Duration::from_secs(50), async {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, admin) = (free_port(), free_port());
        let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
        let grpc_addr: SocketAddr = ([127, 0, 0, 1], grpc).into();
        let mut first = serve(dir.path(), grpc, admin);
        let watch = watch_failures(admin_addr);
        let mut g = generator(50);

        // The daemon and the watch start together: violations until one is
        // printed (one sent before the watch subscribed is never shown).
        let (before_id, _) =
            until_shown(&watch, grpc_addr, admin_addr, &mut g, "the first daemon").await;

        first.sigterm();
        let status = first.wait_exit(Duration::from_secs(15)).await;
        assert!(
            status.is_some(),
            "the daemon did not stop on SIGTERM with a watcher connected; stderr:\n{}",
            first.stderr_text()
        );
        assert_eq!(status.unwrap().code(), Some(0));
        let stopped_at = Instant::now();

        let _second = serve(dir.path(), grpc, admin);
        poll_until(
            Duration::from_secs(15),
            "the second daemon ready",
            || async { ready(admin_addr).await.then_some(()) },
        )
        .await;
        let (shown_id, sent) =
            until_shown(&watch, grpc_addr, admin_addr, &mut g, "the second daemon").await;
        eprintln!(
            "watch showed {shown_id} {:?} after the first daemon stopped ({sent} sent)",
            stopped_at.elapsed(),
        );
        let lines = json_lines(&watch.stdout_lines());
        let ids: BTreeMap<String, usize> = lines.iter().fold(BTreeMap::new(), |mut m, v| {
            *m.entry(v["trace_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
            m
        });
        assert_eq!(ids.get(&before_id), Some(&1), "{ids:?}");
        assert!(
            ids.values().all(|n| *n == 1),
            "a verdict printed twice: {ids:?}"
        );
        assert!(lines.iter().all(|v| v["verdict"] == "fail"));
        assert!(
            watch.stderr_text().contains("reconnecting"),
            "{}",
            watch.stderr_text()
        );
    })
    .await;
}

/// Sends a new violating trace every 700 ms until the watch prints one;
/// returns its id and how many were sent.
async fn until_shown(
    watch: &Proc,
    grpc: SocketAddr,
    admin: SocketAddr,
    g: &mut tracecheck::bench::traffic::TrafficGenerator,
    what: &str,
) -> (String, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent: Vec<String> = Vec::new();
    loop {
        let lines = watch.stdout_lines();
        if let Some(id) = sent
            .iter()
            .find(|id| lines.iter().any(|l| l.contains(id.as_str())))
        {
            return (id.clone(), sent.len());
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the watch printed none of {} violations; watch stdout {lines:?}\nwatch stderr:\n{}",
            sent.len(),
            watch.stderr_text()
        );
        if ready(admin).await {
            let t = g.trace_of(TraceShape::BankViolation);
            let ok = tokio::time::timeout(Duration::from_secs(2), export(grpc, t.to_request()))
                .await
                .is_ok();
            if ok {
                sent.push(hex(&t.trace_id));
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

async fn ready(admin: SocketAddr) -> bool {
    models_util::client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 200)
}
