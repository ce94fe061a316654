//! Issue 4 from the outside: a daemon wired as the binary wires it gives
//! exact verdicts on live OTLP traffic (metrics, results API, trace API),
//! `within` waits for late spans and no longer, model reloads are all or
//! nothing (API and file watcher), and the `check`, `models lint` and
//! `serve` commands keep their output formats and exit codes.
//!
//! Everything listens on loopback ports chosen by the OS; every test is
//! bounded in time.

mod models_util;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use models_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use tracecheck::bench::traffic::{GeneratedTrace, Rng, TraceShape, TrafficGenerator, TrafficMix};
use tracecheck::evaluator::registry::ModelSource;
use tracecheck::otlp::json::encode_export_request;

const BANK_MODEL: &str = "overdraft-rolls-back";
const TRACE_URL: &str = "http://jaeger.test/trace/{trace_id}";

fn generator(seed: u64) -> TrafficGenerator {
    TrafficGenerator::new(TrafficMix::default(), Rng::new(seed))
}

fn path_source(path: &Path) -> ModelSource {
    ModelSource::Path {
        path: path.to_path_buf(),
        optional: false,
    }
}

/// Each trace in its own export request (as separate services would send).
async fn send_all(live: &Live, traces: &[GeneratedTrace]) {
    for t in traces {
        live.export(t.to_request()).await;
    }
}

fn ids_of(traces: &[GeneratedTrace], shape: TraceShape) -> BTreeSet<String> {
    traces
        .iter()
        .filter(|t| t.shape == shape)
        .map(|t| hex(&t.trace_id))
        .collect()
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

// ---------------------------------------------------------------------------
// 1. Exact verdicts on live traffic.

/// N violating overdrafts fail, M rolled-back overdrafts pass, K web traces
/// and J ordinary withdrawals are skipped — exactly, in the metric, in
/// `/api/v1/models`, in `/api/v1/results` (with failure details) and in
/// `/api/v1/traces/{id}` (span tree with the verdict). The bank model has
/// `within: 30s`, yet violations fail at once: a committed overdraft breaks
/// a `not_expect` and an assertion, which no late span can repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_bank_traffic_gets_exact_verdicts() {
    bounded(Duration::from_secs(30), async {
        let config = config(
            "  settle: 1s\n  idle_timeout: 1s\n  root_settle: 200ms\n",
            Some(TRACE_URL),
        );
        let live = Live::start(
            config,
            vec![path_source(&repo_path("config/models/bank.yaml"))],
        )
        .await;
        assert_eq!(live.model_ids().await, vec![BANK_MODEL.to_owned()]);

        let (n, m, k, j) = (5, 4, 6, 3);
        let mut g = generator(41);
        let mut traces = Vec::new();
        // Interleaved, so no shape arrives as one block.
        for i in 0..n.max(m).max(k).max(j) {
            for (count, shape) in [
                (n, TraceShape::BankViolation),
                (m, TraceShape::BankRollback),
                (k, TraceShape::Web),
                (j, TraceShape::BankCommit),
            ] {
                if i < count {
                    traces.push(g.trace_of(shape));
                }
            }
        }
        let violating = ids_of(&traces, TraceShape::BankViolation);
        let rolled_back = ids_of(&traces, TraceShape::BankRollback);
        assert_eq!((violating.len(), rolled_back.len()), (n, m));
        let sent_at = Instant::now();
        send_all(&live, &traces).await;

        let total = (n + m + k + j) as u64;
        let counts = poll_until(Duration::from_secs(10), "every trace's verdict", || async {
            let c = live.metrics().await.verdicts(BANK_MODEL);
            (c.0 + c.1 + c.2 >= total).then_some(c)
        })
        .await;
        // Nothing more may come (no trace counted twice, none held back).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let metrics = live.metrics().await;
        let again = metrics.verdicts(BANK_MODEL);
        assert_eq!(counts, again, "verdicts kept coming after all were in");
        assert_eq!(
            again,
            (m as u64, n as u64, (k + j) as u64),
            "(pass, fail, skip) of {BANK_MODEL}"
        );
        // `within: 30s` did not hold the failures back.
        assert!(
            sent_at.elapsed() < Duration::from_secs(10),
            "failures waited for late spans: {:?}",
            sent_at.elapsed()
        );
        assert_eq!(
            metrics.get(
                "tracecheck_spec_failures_total",
                &[("model", BANK_MODEL), ("spec", "never commits")]
            ),
            n as f64
        );

        // /api/v1/models: the same counts.
        let (status, models) = live.get_json("/api/v1/models").await;
        assert_eq!(status, 200);
        let bank = &models["models"][0];
        assert_eq!(bank["id"], BANK_MODEL);
        assert!(
            str_field(bank, "file").ends_with("config/models/bank.yaml"),
            "{bank}"
        );
        assert_eq!(bank["within"], "30s");
        assert_eq!(
            bank["verdicts"],
            serde_json::json!({ "pass": m, "fail": n, "skip": k + j })
        );

        // /api/v1/results: exactly the violating traces fail…
        let fails = live.results(BANK_MODEL, Some("fail")).await;
        let failed_ids: BTreeSet<String> = fails
            .iter()
            .map(|r| str_field(r, "trace_id").to_owned())
            .collect();
        assert_eq!(fails.len(), n, "one fail record per violating trace");
        assert_eq!(failed_ids, violating);
        // …and exactly the rolled-back ones pass.
        let passes = live.results(BANK_MODEL, Some("pass")).await;
        let passed_ids: BTreeSet<String> = passes
            .iter()
            .map(|r| str_field(r, "trace_id").to_owned())
            .collect();
        assert_eq!(passed_ids, rolled_back);
        // Newest first.
        let seqs: Vec<u64> = fails.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "not newest first: {seqs:?}"
        );

        let by_id: HashMap<String, &GeneratedTrace> =
            traces.iter().map(|t| (hex(&t.trace_id), t)).collect();
        for r in &fails {
            let id = str_field(r, "trace_id");
            let trace = by_id[id];
            assert_eq!(r["model"], BANK_MODEL);
            assert_eq!(r["verdict"], "fail");
            assert_eq!(r["waited_for_late_spans"], false, "{r}");
            assert_eq!(r["incomplete"], false, "{r}");
            assert_eq!(r["completion_reason"], "root", "{r}");
            assert_eq!(
                str_field(r, "trace_url"),
                TRACE_URL.replace("{trace_id}", id)
            );
            let account = trace.spans[0]
                .1
                .attributes
                .iter()
                .find(|kv| kv.key == "account.id")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .expect("bank root has account.id");
            assert_eq!(
                str_field(r, "summary"),
                format!("Overdraft committed for account {account}")
            );
            let span_id_of = |name: &str| {
                trace
                    .spans
                    .iter()
                    .find(|(_, s)| s.name == name)
                    .map(|(_, s)| hex(&s.span_id))
                    .unwrap()
            };
            let failures = r["failures"].as_array().expect("failures");
            let by_spec: HashMap<&str, &Value> =
                failures.iter().map(|f| (str_field(f, "spec"), f)).collect();
            assert_eq!(failures.len(), 3, "three checks fail: {r}");
            // The commit that must not happen: named by span.
            let commit = by_spec["never commits"];
            assert_eq!(commit["kind"], "not_expect");
            assert_eq!(commit["span_name"], "commit");
            assert_eq!(commit["service"], "bank-db");
            assert_eq!(str_field(commit, "span_id"), span_id_of("commit"));
            assert!(str_field(commit, "message").contains("must select nothing"));
            // The wrong status: span, observed and expected values.
            let status = by_spec["API answers 500"];
            assert_eq!(status["kind"], "assertion");
            assert_eq!(status["span_name"], "POST /:account/withdraw");
            assert_eq!(status["service"], "bank-api");
            assert_eq!(
                str_field(status, "span_id"),
                span_id_of("POST /:account/withdraw")
            );
            assert_eq!(status["assertion"], "attr:http.response.status_code = 500");
            assert!(str_field(status, "observed").contains("200"), "{status}");
            assert!(str_field(status, "expected").contains("500"), "{status}");
            // The missing rollback.
            let rollback = by_spec["rollback happens"];
            assert_eq!(rollback["kind"], "no_span");
            assert!(str_field(rollback, "message").contains("selected no span"));
        }

        // /api/v1/traces/{id}: the spans as a tree, with the failed verdict.
        for id in &violating {
            let (status, t) = live.get_json(&format!("/api/v1/traces/{id}")).await;
            assert_eq!(status, 200, "{t}");
            assert_eq!(t["trace_id"], id.as_str());
            assert_eq!(t["state"], "retained");
            assert_eq!(t["span_count"], 4);
            assert_eq!(
                str_field(&t, "trace_url"),
                TRACE_URL.replace("{trace_id}", id)
            );
            let roots = t["spans"].as_array().expect("span tree");
            assert_eq!(roots.len(), 1, "one root: {t}");
            let root = &roots[0];
            assert_eq!(root["name"], "POST /:account/withdraw");
            assert_eq!(root["parent_id"], Value::Null);
            assert_eq!(root["service"], "bank-api");
            assert_eq!(root["kind"], "server");
            assert_eq!(root["attributes"]["http.response.status_code"], 200);
            let children: Vec<&str> = root["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| str_field(c, "name"))
                .collect();
            assert_eq!(
                children,
                ["fetch-balance", "withdrawal"],
                "start-time order"
            );
            let withdrawal = &root["children"][1];
            assert_eq!(withdrawal["parent_id"], root["span_id"]);
            let grandchildren = withdrawal["children"].as_array().unwrap();
            assert_eq!(grandchildren.len(), 1);
            assert_eq!(grandchildren[0]["name"], "commit");
            assert_eq!(grandchildren[0]["parent_id"], withdrawal["span_id"]);
            assert_eq!(grandchildren[0]["service"], "bank-db");
            let verdicts = t["verdicts"].as_array().expect("verdicts");
            assert_eq!(verdicts.len(), 1, "{t}");
            assert_eq!(verdicts[0]["model"], BANK_MODEL);
            assert_eq!(verdicts[0]["verdict"], "fail");
            assert_eq!(verdicts[0]["failures"].as_array().unwrap().len(), 3);
        }
        // A skipped trace is counted, not kept.
        let web = ids_of(&traces, TraceShape::Web);
        let some_web = web.iter().next().unwrap();
        let (status, _) = live.get_json(&format!("/api/v1/traces/{some_web}")).await;
        assert_eq!(status, 404);
        // Skips are counted, not stored: asking for them is a client error.
        let (status, _) = live
            .get_json(&format!("/api/v1/results?model={BANK_MODEL}&verdict=skip"))
            .await;
        assert_eq!(status, 400);
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. `within`: late spans are waited for, and no longer than `within`.

const IMPORT_MODEL: &str = "\
type: Model
spec:
  id: import-completes
  name: Imports are processed by the worker
  match: span[name = \"POST /import\"]
  specs:
    - name: worker imports
      selector: span[name = \"import pokemon\"]
  within: 8s
";

/// Gives its verdict at once on the same traces, so they are retained
/// before `import-completes` has decided.
const SERVED_MODEL: &str = "\
type: Model
spec:
  id: import-is-served
  name: Imports are answered by a server span
  match: span[name = \"POST /import\"]
  specs:
    - name: server span
      selector: span[name = \"POST /import\" kind = \"server\"]
";

const SERVER: i32 = 2;
const CONSUMER: i32 = 5;

/// Trace A's worker span arrives 4 s after A was completed (a late
/// fragment): A passes, marked `waited_for_late_spans`. Trace B's worker
/// never comes: B has no verdict while `within` runs and fails once it has
/// run out (8 s after completion), not before. Trace C, whole from the
/// start, passes at once without waiting. A second model without `within`
/// decides at once, so the trace is retained before the late span comes:
/// the trace API must still show the trace the late verdict was given on,
/// and a failure given late must be kept as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_waits_for_late_spans_then_fails() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("import.yaml"), IMPORT_MODEL).unwrap();
        std::fs::write(dir.path().join("served.yaml"), SERVED_MODEL).unwrap();
        let config = config(
            "  settle: 1s\n  idle_timeout: 1s\n  root_settle: 200ms\n",
            None,
        );
        let live = Live::start(config, vec![path_source(dir.path())]).await;
        assert_eq!(
            live.model_ids().await,
            vec!["import-completes".to_owned(), "import-is-served".to_owned()]
        );
        let late_before = live.metrics().await.get("tracecheck_late_spans_total", &[]);

        let mut rng = Rng::new(7);
        let (a, b, c) = (rng.trace_id(), rng.trace_id(), rng.trace_id());
        let (a_root, b_root, c_root) = (rng.span_id(), rng.span_id(), rng.span_id());
        let (a_hex, b_hex, c_hex) = (hex(&a), hex(&b), hex(&c));
        let api = |t, id| span(t, id, None, "POST /import", SERVER);
        let worker = |t, parent, rng: &mut Rng| {
            span(t, rng.span_id(), Some(parent), "import pokemon", CONSUMER)
        };

        let t0 = Instant::now();
        let t0_ms = now_ms();
        live.export(request(
            "pokemon-api",
            vec![api(a, a_root), api(b, b_root), api(c, c_root)],
        ))
        .await;
        live.export(request("pokemon-worker", vec![worker(c, c_root, &mut rng)]))
            .await;

        // C is whole: it passes at once, without waiting.
        let c_result = poll_until(Duration::from_secs(5), "C's verdict", || async {
            live.results("import-completes", None)
                .await
                .into_iter()
                .find(|r| r["trace_id"] == c_hex.as_str())
        })
        .await;
        assert_eq!(c_result["verdict"], "pass");
        assert_eq!(c_result["waited_for_late_spans"], false);

        // At ~3.5 s A and B are complete but still waiting: no verdict.
        tokio::time::sleep_until((t0 + Duration::from_millis(3500)).into()).await;
        let results = live.results("import-completes", None).await;
        assert_eq!(results.len(), 1, "only C has a verdict yet: {results:?}");
        assert_eq!(
            live.metrics().await.verdicts("import-completes"),
            (1, 0, 0),
            "A and B are not counted while they wait"
        );
        // Both were completed (nothing is buffered): A's worker span will
        // be a late fragment.
        assert_eq!(
            live.metrics().await.get("tracecheck_buffer_traces", &[]),
            0.0
        );

        // A's worker, 4 s after A's API span.
        tokio::time::sleep_until((t0 + Duration::from_secs(4)).into()).await;
        live.export(request("pokemon-worker", vec![worker(a, a_root, &mut rng)]))
            .await;
        let a_result = poll_until(Duration::from_secs(4), "A's verdict", || async {
            live.results("import-completes", None)
                .await
                .into_iter()
                .find(|r| r["trace_id"] == a_hex.as_str())
        })
        .await;
        assert_eq!(a_result["verdict"], "pass", "{a_result}");
        assert_eq!(a_result["waited_for_late_spans"], true, "{a_result}");
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "A's pass came with the late span, not at the deadline: {:?}",
            t0.elapsed()
        );
        let late = live.metrics().await.get("tracecheck_late_spans_total", &[]);
        assert!(
            late >= late_before + 1.0,
            "late spans {late_before} → {late}"
        );
        // A's trace now has both spans, the worker under the API span.
        let (status, t) = live.get_json(&format!("/api/v1/traces/{a_hex}")).await;
        assert_eq!(status, 200, "{t}");
        assert_eq!(
            t["span_count"], 2,
            "the trace the late verdict was given on: {t}"
        );
        assert_eq!(t["spans"][0]["name"], "POST /import");
        assert_eq!(t["spans"][0]["children"][0]["name"], "import pokemon");
        let verdicts: BTreeSet<(String, String)> = t["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    str_field(v, "model").to_owned(),
                    str_field(v, "verdict").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            verdicts,
            [("import-completes", "pass"), ("import-is-served", "pass")]
                .map(|(m, v)| (m.to_owned(), v.to_owned()))
                .into()
        );

        // B still waits before its `within` ran out…
        tokio::time::sleep_until((t0 + Duration::from_millis(7500)).into()).await;
        assert!(
            !live
                .results("import-completes", None)
                .await
                .iter()
                .any(|r| r["trace_id"] == b_hex.as_str()),
            "B failed before within ran out"
        );
        // …and fails once it has.
        let b_result = poll_until(Duration::from_secs(5), "B's verdict", || async {
            live.results("import-completes", None)
                .await
                .into_iter()
                .find(|r| r["trace_id"] == b_hex.as_str())
        })
        .await;
        assert_eq!(b_result["verdict"], "fail", "{b_result}");
        assert_eq!(b_result["waited_for_late_spans"], true, "{b_result}");
        let at = b_result["evaluated_at_unix_ms"].as_u64().unwrap();
        assert!(
            at >= t0_ms + 8000,
            "B failed {} ms after its span was sent, before within (8 s) ran out",
            at - t0_ms
        );
        assert!(
            t0.elapsed() < Duration::from_secs(11),
            "B's failure came late: {:?}",
            t0.elapsed()
        );
        let f = &b_result["failures"][0];
        assert_eq!(f["spec"], "worker imports");
        assert_eq!(f["kind"], "no_span");
        assert_eq!(
            live.metrics().await.verdicts("import-completes"),
            (2, 1, 0),
            "(pass, fail, skip)"
        );
        assert_eq!(
            live.metrics().await.verdicts("import-is-served"),
            (3, 0, 0),
            "the other model decided at once"
        );

        // B's failure is kept as a failure: a flood of passing traces (more
        // than the store keeps) does not push it out.
        for _ in 0..11 {
            let mut api_spans = Vec::new();
            let mut worker_spans = Vec::new();
            for _ in 0..100 {
                let (t, root) = (rng.trace_id(), rng.span_id());
                api_spans.push(api(t, root));
                worker_spans.push(worker(t, root, &mut rng));
            }
            live.export(request("pokemon-worker", worker_spans)).await;
            live.export(request("pokemon-api", api_spans)).await;
        }
        poll_until(Duration::from_secs(10), "the flood's verdicts", || async {
            let (pass, _, _) = live.metrics().await.verdicts("import-is-served");
            (pass >= 3 + 1100).then_some(())
        })
        .await;
        let (status, t) = live.get_json(&format!("/api/v1/traces/{b_hex}")).await;
        assert_eq!(
            status, 200,
            "B's failing trace was pushed out by passes: {t}"
        );
        assert!(
            t["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["model"] == "import-completes" && v["verdict"] == "fail"),
            "{t}"
        );
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. Reload: all or nothing, by API and by the file watcher.

fn balance_model(selector: &str) -> String {
    format!(
        "type: Model
spec:
  id: withdraw-reads-balance
  name: Withdrawals read the balance
  match: span[name = \"POST /:account/withdraw\"]
  specs:
    - name: balance is read
      selector: {selector}
"
    )
}

const DECIDES_MODEL: &str = "\
type: Model
spec:
  id: withdraw-decides
  name: Withdrawals commit or roll back
  match: span[name = \"POST /:account/withdraw\"]
  specs:
    - name: commit or rollback
      selector: span[name = \"commit\"], span[name = \"rollback\"]
";

const SERVER_MODEL: &str = "\
type: Model
spec:
  id: withdraw-is-served
  name: Withdrawals are answered by a server span
  match: span[name = \"POST /:account/withdraw\"]
  specs:
    - name: server span
      selector: span[name = \"POST /:account/withdraw\" kind = \"server\"]
";

/// Good model → verdicts. Broken file + `POST reload` → 422 naming
/// file:line:col, the previous model stays in force and keeps giving
/// verdicts, the failure is counted. Another good model + reload → 200,
/// new model in force, old one gone. A change without any POST is picked
/// up by the watcher within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_all_or_nothing_and_watches_files() {
    bounded(Duration::from_secs(40), async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.yaml");
        write_atomically(&file, &balance_model("span[name = \"fetch-balance\"]"));
        let config = config(
            "  settle: 1s\n  idle_timeout: 1s\n  root_settle: 100ms\n",
            None,
        );
        let live = Live::start(config, vec![path_source(dir.path())]).await;
        assert!(live.models.initial_load.is_ok());
        assert_eq!(live.model_ids().await, ["withdraw-reads-balance"]);
        let mut g = generator(5);
        let mut bank = move || g.trace_of(TraceShape::BankCommit);

        let wait_for = |model: &'static str, expected: (u64, u64, u64)| {
            let live = &live;
            async move {
                poll_until(
                    Duration::from_secs(5),
                    &format!("{model} verdicts {expected:?}"),
                    || async {
                        let v = live.metrics().await.verdicts(model);
                        (v == expected).then_some(())
                    },
                )
                .await
            }
        };

        send_all(&live, &[bank(), bank(), bank()]).await;
        wait_for("withdraw-reads-balance", (3, 0, 0)).await;

        // A selector with a syntax error: refused whole, previous set kept.
        write_atomically(&file, &balance_model("span[name = \"fetch-balance\""));
        let failures_before = live
            .metrics()
            .await
            .get("tracecheck_model_reload_failures_total", &[]);
        let (status, report) = live.post_json("/api/v1/models/reload").await;
        assert_eq!(status, 422, "{report}");
        assert_eq!(report["kept_previous"], true, "{report}");
        assert_eq!(
            report["models"],
            serde_json::json!(["withdraw-reads-balance"])
        );
        let errors = report["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{report}");
        let e = &errors[0];
        assert_eq!(str_field(e, "file"), file.display().to_string());
        // `      selector: span[name = "fetch-balance"` ends at column 43.
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(8), Some(44)),
            "{e}"
        );
        assert!(str_field(e, "message").contains("']'"), "{e}");
        let failures_after = live
            .metrics()
            .await
            .get("tracecheck_model_reload_failures_total", &[]);
        assert!(
            failures_after >= failures_before + 1.0,
            "reload failures {failures_before} → {failures_after}"
        );
        let (status, models) = live.get_json("/api/v1/models").await;
        assert_eq!(status, 200);
        assert_eq!(models["models"][0]["id"], "withdraw-reads-balance");
        assert_eq!(models["models"].as_array().unwrap().len(), 1);
        assert_eq!(models["last_load"]["kept_previous"], true);
        assert_eq!(
            models["last_load"]["errors"][0]["line"], 8,
            "the refusal is visible in /api/v1/models: {models}"
        );
        // Traffic still gets verdicts from the model kept in force.
        send_all(&live, &[bank(), bank()]).await;
        wait_for("withdraw-reads-balance", (5, 0, 0)).await;

        // A different good model: in force, the old one gone.
        write_atomically(&file, DECIDES_MODEL);
        let (status, report) = live.post_json("/api/v1/models/reload").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["models"], serde_json::json!(["withdraw-decides"]));
        assert_eq!(report["errors"], serde_json::json!([]));
        assert_eq!(live.model_ids().await, ["withdraw-decides"]);
        send_all(&live, &[bank(), bank()]).await;
        wait_for("withdraw-decides", (2, 0, 0)).await;
        assert_eq!(
            live.metrics().await.verdicts("withdraw-reads-balance"),
            (5, 0, 0),
            "the replaced model gives no more verdicts"
        );
        let failures_now = live
            .metrics()
            .await
            .get("tracecheck_model_reload_failures_total", &[]);
        assert_eq!(failures_now, failures_after, "a good reload is no failure");

        // The watcher: a change on disk, no POST.
        let changed = Instant::now();
        write_atomically(&file, SERVER_MODEL);
        poll_until(Duration::from_secs(6), "the watcher's reload", || async {
            (live.model_ids().await == ["withdraw-is-served"]).then_some(())
        })
        .await;
        assert!(
            changed.elapsed() <= Duration::from_secs(5),
            "watcher took {:?}",
            changed.elapsed()
        );
        send_all(&live, &[bank()]).await;
        wait_for("withdraw-is-served", (1, 0, 0)).await;
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. Readiness, in process and from the binary.

/// In process: once `start_with` returned (models loaded, receivers bound)
/// `/readyz` answers 200 and `/healthz` ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_in_process_after_start() {
    bounded(Duration::from_secs(15), async {
        let config = config("  settle: 1s\n  idle_timeout: 1s\n", None);
        let live = Live::start(config, vec![path_source(&repo_path("config/models"))]).await;
        let (status, body) = live.get("/readyz").await;
        assert_eq!((status, body.trim()), (200, "ready"));
        let (status, _) = live.get("/healthz").await;
        assert_eq!(status, 200);
        assert_eq!(live.model_ids().await.len(), 5);
        TcpStream::connect(live.grpc).expect("gRPC receiver bound");
        live.stop().await;
    })
    .await;
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tracecheck"));
    c.env("RUST_LOG", "warn");
    c
}

/// Kills the child on drop, so a failed assertion does not leave a daemon.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `tracecheck serve`: `/readyz` is 503 or unreachable until it is ready,
/// and the first 200 comes only when the models are in force and both OTLP
/// ports accept connections. SIGTERM then stops it with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_ready_only_with_models_and_receivers() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let cfg = dir.path().join("tracecheck.yaml");
        std::fs::write(
            &cfg,
            format!(
                "receivers:\n  otlp:\n    grpc: {{ endpoint: 127.0.0.1:{grpc} }}\n    http: {{ endpoint: 127.0.0.1:{http} }}\nadmin: {{ endpoint: 127.0.0.1:{admin} }}\nmodels: {{ paths: [{}] }}\n",
                repo_path("config/models").display()
            ),
        )
        .unwrap();
        let child = bin()
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tracecheck serve");
        let mut child = ChildGuard(child);
        let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
        let http_client = client();
        poll_until(Duration::from_secs(15), "/readyz 200", || {
            let http_client = http_client.clone();
            async move {
                let answer = http_client
                    .get(format!("http://{admin_addr}/readyz"))
                    .send()
                    .await
                    .ok()?;
                match answer.status().as_u16() {
                    200 => Some(()),
                    503 => None,
                    other => panic!("/readyz answered {other}"),
                }
            }
        })
        .await;
        // Ready means: models loaded…
        let (status, body) =
            http_request(&http_client, reqwest::Method::GET, admin_addr, "/api/v1/models").await;
        assert_eq!(status, 200);
        let models: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(models["models"].as_array().unwrap().len(), 5, "{models}");
        // …and receivers bound.
        TcpStream::connect(("127.0.0.1", grpc)).expect("gRPC port bound when ready");
        TcpStream::connect(("127.0.0.1", http)).expect("HTTP port bound when ready");

        // SIGTERM (to the child we started, by its id): clean exit 0.
        let pid = child.0.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(0), "serve after SIGTERM");
    })
    .await;
}

/// A config with an unknown key stops `serve` with exit 2, naming the key
/// and its position (item 6 of the issue).
#[test]
fn serve_bad_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "receivers:\n  otlp:\n    grpc: { endpoint: 127.0.0.1:0, bogus_key: 1 }\n",
    )
    .unwrap();
    let out = run(bin().args(["serve", "--config"]).arg(&cfg));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bogus_key"), "{err}");
    assert!(err.contains(&format!("{}:3:", cfg.display())), "{err}");
}

// ---------------------------------------------------------------------------
// 4. The command line: `models lint` and `check`.

fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tracecheck");
    // Bounded: a command that hangs fails the test instead.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const BROKEN_MODEL: &str = "\
type: Model
spec:
  id: broken
  match: span[name = \"POST /:account/withdraw\"]
  specs:
    - name: bad selector
      selector: span[name ~ \"x\"]
";

#[test]
fn lint_reports_file_line_col_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.yaml");
    std::fs::write(&bad, BROKEN_MODEL).unwrap();
    let out = run(bin().args(["models", "lint"]).arg(&bad));
    assert_eq!(out.status.code(), Some(2), "lint on a broken model");
    let stdout = text(&out.stdout);
    // file:line:col: message, the column at the '~' of the selector.
    let prefix = format!("{}:7:27: ", bad.display());
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}message line in {stdout:?}"));
    assert!(line.contains("expected an operator"), "{line}");

    // Good files, a folder and a single file: exit 0.
    let out = run(bin()
        .args(["models", "lint"])
        .arg(repo_path("config/models"))
        .arg(repo_path("config/models/bank.yaml")));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A good and a bad one together: the bad one still fails the lint.
    let out = run(bin()
        .args(["models", "lint"])
        .arg(repo_path("config/models"))
        .arg(&bad));
    assert_eq!(out.status.code(), Some(2));
}

/// Writes `traces` as OTLP JSON lines (one request per line, two traces per
/// request so that a line is not always a trace).
fn write_traces(path: &Path, traces: &[GeneratedTrace]) {
    let mut text = String::new();
    for pair in traces.chunks(2) {
        let mut req = ExportTraceServiceRequest::default();
        for t in pair {
            req.resource_spans.extend(t.to_request().resource_spans);
        }
        text.push_str(&encode_export_request(&req));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn gzip(path: &Path) -> PathBuf {
    let gz = path.with_extension("jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(path).unwrap()).unwrap();
    enc.finish().unwrap();
    gz
}

fn check_json(models: &Path, traces: &Path) -> (Option<i32>, Vec<Value>, String) {
    let out = run(bin()
        .args(["check", "--format", "json", "--models"])
        .arg(models)
        .arg("--traces")
        .arg(traces));
    let lines = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect();
    (out.status.code(), lines, text(&out.stderr))
}

fn verdict_map(lines: &[Value]) -> BTreeMap<(String, String), String> {
    lines
        .iter()
        .map(|l| {
            (
                (
                    str_field(l, "trace_id").to_owned(),
                    str_field(l, "model").to_owned(),
                ),
                str_field(l, "verdict").to_owned(),
            )
        })
        .collect()
}

#[test]
fn check_json_verdicts_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bank = repo_path("config/models/bank.yaml");
    let mut g = generator(99);
    let mut traces = Vec::new();
    for shape in [
        TraceShape::BankViolation,
        TraceShape::BankRollback,
        TraceShape::Web,
        TraceShape::BankCommit,
        TraceShape::BankViolation,
        TraceShape::BankRollback,
        TraceShape::Web,
    ] {
        traces.push(g.trace_of(shape));
    }
    let file = dir.path().join("traces.jsonl");
    write_traces(&file, &traces);

    // With violations: exit 1, one object per (trace, model).
    let (code, lines, err) = check_json(&bank, &file);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        lines.len(),
        traces.len(),
        "one line per trace for one model"
    );
    let got = verdict_map(&lines);
    for t in &traces {
        let expected = match t.shape {
            TraceShape::BankViolation => "fail",
            TraceShape::BankRollback => "pass",
            TraceShape::Web | TraceShape::BankCommit => "skip",
        };
        let id = hex(&t.trace_id);
        assert_eq!(
            got.get(&(id.clone(), BANK_MODEL.to_owned()))
                .map(String::as_str),
            Some(expected),
            "{:?} trace {id}",
            t.shape
        );
    }
    for l in &lines {
        let id = str_field(l, "trace_id");
        assert!(
            id.len() == 32
                && id
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "trace_id is lowercase hex: {id}"
        );
        if l["verdict"] == "fail" {
            let failures = l["failures"].as_array().expect("failures on a fail");
            let status = failures
                .iter()
                .find(|f| f["kind"] == "assertion")
                .expect("the status assertion failed");
            assert_eq!(status["span_name"], "POST /:account/withdraw");
            assert!(str_field(status, "observed").contains("200"));
            assert!(str_field(status, "expected").contains("500"));
            assert!(failures
                .iter()
                .any(|f| f["kind"] == "not_expect" && f["span_name"] == "commit"));
        }
    }

    // gzip: same verdicts.
    let (code, gz_lines, err) = check_json(&bank, &gzip(&file));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        verdict_map(&gz_lines),
        got,
        "gzip file gives the same verdicts"
    );

    // No violations: exit 0.
    let clean: Vec<GeneratedTrace> = traces
        .iter()
        .filter(|t| t.shape != TraceShape::BankViolation)
        .cloned()
        .collect();
    let clean_file = dir.path().join("clean.jsonl");
    write_traces(&clean_file, &clean);
    let (code, lines, err) = check_json(&bank, &clean_file);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines.len(), clean.len());
    assert!(lines.iter().all(|l| l["verdict"] != "fail"));

    // A bad trace file: exit 2, naming file:line.
    let bad = dir.path().join("bad.jsonl");
    let first_line = encode_export_request(&traces[0].to_request());
    std::fs::write(&bad, format!("{first_line}\n{{\"resourceSpans\": [\n")).unwrap();
    let (code, lines, err) = check_json(&bank, &bad);
    assert_eq!(code, Some(2), "bad trace file: {err}");
    assert!(lines.is_empty(), "no verdicts on bad input");
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");

    // A bad model: exit 2, naming file:line:col.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, BROKEN_MODEL).unwrap();
    let (code, lines, err) = check_json(&broken, &file);
    assert_eq!(code, Some(2), "bad model: {err}");
    assert!(lines.is_empty());
    assert!(
        err.contains(&format!("{}:7:27: ", broken.display())),
        "{err}"
    );
}

/// JUnit: well-formed XML with one testcase per (model, trace), failures
/// where the JSON says fail.
#[test]
fn check_junit_is_well_formed_with_a_testcase_per_model_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let models = repo_path("config/models");
    let mut g = generator(3);
    let traces: Vec<GeneratedTrace> = [
        TraceShape::BankViolation,
        TraceShape::BankRollback,
        TraceShape::Web,
        TraceShape::BankCommit,
        TraceShape::Web,
    ]
    .into_iter()
    .map(|s| g.trace_of(s))
    .collect();
    let file = dir.path().join("traces.jsonl");
    write_traces(&file, &traces);

    let (code, lines, err) = check_json(&models, &file);
    assert_eq!(code, Some(1), "{err}");
    let model_ids: BTreeSet<String> = lines
        .iter()
        .map(|l| str_field(l, "model").to_owned())
        .collect();
    assert_eq!(
        model_ids.len(),
        5,
        "every model of config/models: {model_ids:?}"
    );
    assert_eq!(lines.len(), 5 * traces.len());
    let json = verdict_map(&lines);

    let out = run(bin()
        .args(["check", "--format", "junit", "--models"])
        .arg(&models)
        .arg("--traces")
        .arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let xml = text(&out.stdout);
    let elements = check_xml(&xml).unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{xml}"));
    assert_eq!(elements[0].name, "testsuites");
    let cases: Vec<&Element> = elements.iter().filter(|e| e.name == "testcase").collect();
    assert_eq!(
        cases.len(),
        5 * traces.len(),
        "one testcase per (model, trace)"
    );
    let mut seen = BTreeSet::new();
    for (i, c) in elements.iter().enumerate() {
        if c.name != "testcase" {
            continue;
        }
        let model = c.attrs["classname"].clone();
        let id = c.attrs["name"]
            .rsplit(' ')
            .next()
            .expect("testcase name ends with the trace id")
            .to_owned();
        assert!(
            seen.insert((id.clone(), model.clone())),
            "duplicate testcase"
        );
        // The testcase's own children follow it in document order.
        let children: Vec<&str> = elements[i + 1..]
            .iter()
            .take_while(|e| e.ancestors.len() > c.ancestors.len())
            .map(|e| e.name.as_str())
            .collect();
        let verdict = &json[&(id.clone(), model.clone())];
        let expected: &[&str] = match verdict.as_str() {
            "fail" => &["failure"],
            "skip" => &["skipped"],
            _ => &[],
        };
        assert_eq!(children, expected, "testcase {model} / {id} ({verdict})");
    }
    let suites = elements.iter().filter(|e| e.name == "testsuite").count();
    assert_eq!(suites, 5, "a suite per model");
    let root = &elements[0].attrs;
    assert_eq!(root["tests"], (5 * traces.len()).to_string());
    let fails = json.values().filter(|v| *v == "fail").count();
    assert_eq!(root["failures"], fails.to_string());
}

/// The model file is rewritten again and again while retrying senders keep
/// sending (a cosmetic change, then a file that does not parse, then the
/// original): every span is forwarded once, every trace gets exactly one
/// verdict of the model, and every violating trace fails once. A reload
/// that meets a bad file keeps the model in force, so no trace goes
/// unjudged in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_rewritten_during_traffic_loses_no_verdict() {
    use tracecheck::bench::loadgen;
    use tracecheck::bench::sink::{Sink, SinkConfig};
    bounded(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bank.yaml");
        let original = std::fs::read_to_string(repo_path("config/models/bank.yaml")).unwrap();
        write_atomically(&file, &original);
        let sink = Sink::start(SinkConfig::loopback()).await.expect("sink");
        let mut config = config(
            "  settle: 300ms\n  idle_timeout: 300ms\n  root_settle: 30s\n",
            None,
        );
        config.exporters.set_otlp(
            serde_yaml_ng::from_str(&format!(
                "endpoint: {}\nbatch: {{ timeout: 20ms }}\n",
                sink.grpc_endpoint().expect("sink gRPC")
            ))
            .unwrap(),
        );
        let live = Live::start(config, vec![path_source(dir.path())]).await;

        let mut load =
            loadgen::LoadConfig::new(format!("http://{}", live.grpc), loadgen::Protocol::Grpc);
        load.senders = 2;
        load.spans_per_request = 200;
        load.duration = None;
        load.requests = Some(150);
        load.retry = Some(loadgen::RetryPolicy {
            max_retries: 100,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
        });
        let traffic = tokio::spawn(loadgen::run(load));

        let renamed = original.replacen("name:", "name: (renamed)", 1);
        let broken = original.replacen("match:", "match: span[name = ", 1);
        let mut rewrites = 0;
        while !traffic.is_finished() {
            for text in [&renamed, &broken, &original] {
                write_atomically(&file, text);
                let _ = live.post_json("/api/v1/models/reload").await;
                rewrites += 1;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
        write_atomically(&file, &original);
        let report = traffic.await.expect("load task").expect("load runs");
        assert_eq!(report.requests_failed, 0, "{report}");
        assert!(rewrites >= 6, "only {rewrites} rewrites during the traffic");

        poll_until(
            Duration::from_secs(30),
            "every span at the sink",
            || async { (sink.stats().unique_spans >= report.spans_sent).then_some(()) },
        )
        .await;
        let stats = sink.stats();
        assert_eq!(stats.unique_spans, report.spans_sent, "{stats}");
        assert_eq!(stats.duplicate_spans, 0, "{stats}");

        // Traces still open when the load stopped were sent in part: at
        // most one per sender beyond `traces_sent`.
        poll_until(Duration::from_secs(30), "a verdict per trace", || async {
            let v = live.metrics().await.verdicts(BANK_MODEL);
            (v.0 + v.1 + v.2 >= report.traces_sent).then_some(())
        })
        .await;
        // Settled: skips are counted in bulk every 50 ms.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (pass, fail, skip) = live.metrics().await.verdicts(BANK_MODEL);
        assert!(
            pass + fail + skip <= report.traces_sent + 2,
            "({pass}, {fail}, {skip}) verdicts for {report}"
        );
        assert_eq!(
            fail, report.violating_traces_sent,
            "(pass {pass}, fail {fail}, skip {skip}) for {report}"
        );
        let failures = live
            .metrics()
            .await
            .get("tracecheck_model_reload_failures_total", &[]);
        assert!(failures >= 1.0, "the broken file was never refused");
        live.stop().await;
    })
    .await;
}

/// Issue 21: a Tracetest test as Tracetest's docs write it — no `spec.id`,
/// a k6 trigger, status in Tracetest's spelling, span types from attribute
/// prefixes, a duration compared at its unit — is a model `check` judges,
/// under an id made from its name.
#[test]
fn check_judges_a_tracetest_file_as_tracetest_would() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("get-pokemon.yaml");
    std::fs::write(
        &test,
        "type: Test\nspec:\n  name: Get a Pokemon\n  version: 1\n  trigger:\n    type: k6\n  specs:\n    - selector: span[tracetest.span.type = \"http\"]\n      assertions:\n        - attr:tracetest.span.status_code = \"STATUS_CODE_OK\"\n        - attr:tracetest.span.duration = 120ms\n    - selector: span[tracetest.span.type = \"database\"]\n      assertions:\n        - attr:tracetest.selected_spans.count = 1\n",
    )
    .unwrap();
    let span = |id: &str, parent: &str, name: &str, end: &str, status: u8, attr: &str| {
        format!(
            r#"{{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"{id}","parentSpanId":"{parent}","name":"{name}","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"{end}","status":{{"code":{status}}},"attributes":[{{"key":"{attr}","value":{{"stringValue":"x"}}}}]}}"#
        )
    };
    let trace = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}}]}},"scopeSpans":[{{"spans":[{},{}]}}]}}]}}"#,
        // 120.4 ms, an http.* attribute that is not http.method.
        span(
            "b7ad6b7169203331",
            "",
            "GET /pokemon/1",
            "1700000000120400000",
            1,
            "http.route"
        ),
        span(
            "b7ad6b7169203332",
            "b7ad6b7169203331",
            "SELECT pokemon",
            "1700000000010000000",
            0,
            "db.statement"
        ),
    );
    let traces = dir.path().join("trace.jsonl");
    std::fs::write(&traces, format!("{trace}\n")).unwrap();
    let (code, lines, err) = check_json(&test, &traces);
    assert_eq!(code, Some(0), "{err} {lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(str_field(&lines[0], "model"), "get-a-pokemon");
    assert_eq!(str_field(&lines[0], "verdict"), "pass", "{lines:?}");
}

// ---------------------------------------------------------------------------
// 5. A failure promoted to a regression test.

/// `tracecheck promote` writes a failing trace beside the model that failed
/// on it; `check` on what it wrote gives the daemon's failure again (exit
/// 1, the same specs, observed and expected values), and the same model
/// passes (exit 0) the trace a fixed service sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_failure_reproduces_with_check_and_passes_once_fixed() {
    bounded(Duration::from_secs(60), async {
        let live = Live::start(
            config(
                "  settle: 300ms\n  idle_timeout: 300ms\n  root_settle: 100ms\n",
                None,
            ),
            vec![path_source(&repo_path("config/models/bank.yaml"))],
        )
        .await;
        let mut g = generator(91);
        let bad = g.trace_of(TraceShape::BankViolation);
        let id = hex(&bad.trace_id);
        live.export(bad.to_request()).await;
        let failure = poll_until(Duration::from_secs(20), "the failure", || async {
            live.results(BANK_MODEL, Some("fail"))
                .await
                .into_iter()
                .find(|r| r["trace_id"] == id.as_str())
        })
        .await;

        let dir = tempfile::tempdir().expect("tempdir");
        let promoted = run(bin()
            .args([
                "promote",
                &id,
                "--server",
                &format!("http://{}", live.admin),
            ])
            .arg("--out")
            .arg(dir.path()));
        assert!(
            promoted.status.success(),
            "{}\n{}",
            text(&promoted.stdout),
            text(&promoted.stderr)
        );
        let folder = dir.path().join(format!("trace-{id}"));
        assert!(text(&promoted.stdout).contains("reproduce: tracecheck check"));
        let check = |traces: &Path| {
            run(bin()
                .args(["check", "--format", "json", "--models"])
                .arg(folder.join("models"))
                .arg("--traces")
                .arg(traces))
        };
        let again = check(&folder.join("trace.json"));
        assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
        let results: Vec<Value> = text(&again.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(results.len(), 1, "one model, one trace: {results:?}");
        assert_eq!(results[0]["model"], BANK_MODEL);
        assert_eq!(results[0]["verdict"], "fail");
        assert_eq!(results[0]["trace_id"], id.as_str());
        assert_eq!(
            results[0]["failures"], failure["failures"],
            "the daemon's failure, spec for spec"
        );

        let fixed = dir.path().join("fixed.json");
        let rolled_back = g.trace_of(TraceShape::BankRollback);
        std::fs::write(&fixed, encode_export_request(&rolled_back.to_request()))
            .expect("write the fixed trace");
        let passes = check(&fixed);
        assert_eq!(passes.status.code(), Some(0), "{}", text(&passes.stdout));

        // Nothing to promote: a trace with no failure is refused, saying so.
        let none = run(bin().args([
            "promote",
            &"0".repeat(32),
            "--server",
            &format!("http://{}", live.admin),
        ]));
        assert_ne!(none.status.code(), Some(0));
        assert!(
            text(&none.stderr).contains("not retained"),
            "{}",
            text(&none.stderr)
        );
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. Canary vs stable: verdicts per service version.

/// Each verdict carries its root service's `service.version`, and
/// `/api/v1/versions` puts the versions side by side: the stable version
/// passes the model, the canary fails it. The Prometheus family with the
/// version label appears only with `metrics.version_label: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_fails_what_the_stable_version_passes_side_by_side() {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    bounded(Duration::from_secs(60), async {
        for label in [true, false] {
            let mut config = config(
                "  settle: 300ms\n  idle_timeout: 300ms\n  root_settle: 100ms\n",
                None,
            );
            config.metrics.version_label = label;
            let live = Live::start(
                config,
                vec![path_source(&repo_path("config/models/bank.yaml"))],
            )
            .await;
            let versioned = |t: &GeneratedTrace, version: &str| {
                let mut r = t.to_request();
                for rs in &mut r.resource_spans {
                    rs.resource
                        .get_or_insert_with(Default::default)
                        .attributes
                        .push(KeyValue {
                            key: "service.version".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(version.into())),
                            }),
                            ..Default::default()
                        });
                }
                r
            };
            let mut g = generator(93);
            let stable: Vec<GeneratedTrace> = (0..6)
                .map(|_| g.trace_of(TraceShape::BankRollback))
                .collect();
            let canary: Vec<GeneratedTrace> = (0..4)
                .map(|_| g.trace_of(TraceShape::BankViolation))
                .collect();
            for t in &stable {
                live.export(versioned(t, "1.4.0")).await;
            }
            for t in &canary {
                live.export(versioned(t, "1.5.0-rc1")).await;
            }
            let rows = poll_until(Duration::from_secs(20), "every verdict tallied", || async {
                let (status, body) = live
                    .get_json(&format!("/api/v1/versions?model={BANK_MODEL}"))
                    .await;
                assert_eq!(status, 200, "{body}");
                let rows = body["versions"].as_array().cloned().unwrap_or_default();
                let total: u64 = rows
                    .iter()
                    .map(|r| r["pass"].as_u64().unwrap_or(0) + r["fail"].as_u64().unwrap_or(0))
                    .sum();
                (total == 10).then_some(rows)
            })
            .await;
            let got: Vec<(String, u64, u64)> = rows
                .iter()
                .map(|r| {
                    (
                        str_field(r, "version").to_owned(),
                        r["pass"].as_u64().unwrap_or(0),
                        r["fail"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [("1.4.0".to_owned(), 6, 0), ("1.5.0-rc1".to_owned(), 0, 4)],
                "{rows:?}"
            );
            let service = str_field(&rows[0], "service").to_owned();
            let failures = live.results(BANK_MODEL, Some("fail")).await;
            assert!(!failures.is_empty());
            for f in &failures {
                assert_eq!(f["service_version"], "1.5.0-rc1", "{f}");
                assert_eq!(f["service"], service.as_str(), "{f}");
            }
            let m = live.metrics().await;
            let series = |version: &str, verdict: &str| {
                m.get(
                    "tracecheck_model_verdicts_by_version_total",
                    &[
                        ("model", BANK_MODEL),
                        ("service", service.as_str()),
                        ("version", version),
                        ("verdict", verdict),
                    ],
                )
            };
            if label {
                assert_eq!(series("1.4.0", "pass"), 6.0);
                assert_eq!(series("1.5.0-rc1", "fail"), 4.0);
            } else {
                let (_, text) = live.get("/metrics").await;
                assert!(
                    !text.contains("tracecheck_model_verdicts_by_version_total{"),
                    "a series per version without version_label"
                );
            }
            live.stop().await;
        }
    })
    .await;
}
