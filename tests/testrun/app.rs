//! Against a real instrumented app: examples/pokeshop (Python, the
//! OpenTelemetry SDK exporting OTLP/HTTP) and the example's own Tracetest
//! files, run by the real binary.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn statuses(report: &Value) -> Vec<String> {
    report["runs"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A transaction naming its steps by id, the tests given by several --file.
fn id_transaction(dir: &std::path::Path, steps: &[&str]) -> std::path::PathBuf {
    let list: String = steps.iter().map(|s| format!("    - {s}\n")).collect();
    write(
        dir,
        "transaction.yaml",
        &format!("type: Transaction\nspec:\n  id: chain\n  name: chain\n  steps:\n{list}"),
    )
}

fn example(name: &str) -> String {
    s(&repo_path(&format!("examples/pokeshop/tracetest/{name}")))
}

/// The runner's embedded receiver on free ports, the app exporting to it.
struct Embedded {
    grpc: String,
    http: std::net::SocketAddr,
}

impl Embedded {
    fn new() -> Self {
        Self {
            grpc: free_addr().to_string(),
            http: free_addr(),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--otlp-grpc".into(),
            self.grpc.clone(),
            "--otlp-http".into(),
            self.http.to_string(),
            "--idle-timeout".into(),
            "500ms".into(),
        ]
    }
}

/// Issue: "a two-step transaction passes with the first step's output used
/// in the second step's request" — the example's transaction (steps named
/// by relative path), including the asynchronous import whose worker span
/// comes from a queue consumer.
#[test]
fn two_step_transaction_passes_with_first_output_in_second_request() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let emb = Embedded::new();
    let shop = Pokeshop::start(emb.http, false, 300);
    let vars = shop.vars(dir.path());
    let mut args = vec![
        "test".to_string(),
        "run".into(),
        "--file".into(),
        example("transaction.yaml"),
        "--vars".into(),
        s(&vars),
        "--format".into(),
        "json".into(),
    ];
    args.extend(emb.args());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tracecheck(&a);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(statuses(&report), ["passed", "passed", "passed"]);
    let steps = &report["runs"][0]["steps"];
    let id = steps[0]["outputs"]["POKEMON_ID"]
        .as_str()
        .expect("step 1 outputs POKEMON_ID");
    assert_eq!(
        steps[1]["trigger"].as_str(),
        Some(format!("GET http://127.0.0.1:{}/pokemon/{id}", shop.port).as_str()),
        "step 2's request carries step 1's output"
    );
    // The worker's span (another span of the same trace, via the queue).
    let worker = &steps[2]["specs"][1];
    assert_eq!(worker["span_count"], 1, "{worker}");
    assert_eq!(worker["passed"], true);
    for s in steps.as_array().expect("steps") {
        assert_eq!(s["trace_id"].as_str().map(str::len), Some(32), "{s}");
    }
}

/// Issue: "a bug in the app makes a test fail with exit 1 and the failing
/// assertion shown".
#[test]
fn app_bug_fails_the_test_with_exit_1_and_shows_the_failing_assertion() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let emb = Embedded::new();
    let shop = Pokeshop::start(emb.http, true, 300);
    let vars = shop.vars(dir.path());
    let tx = id_transaction(dir.path(), &["add-pokemon", "get-pokemon"]);
    let mut args = vec![
        "test".to_string(),
        "run".into(),
        "--file".into(),
        s(&tx),
        "--file".into(),
        example("add-pokemon.yaml"),
        "--file".into(),
        example("get-pokemon.yaml"),
        "--vars".into(),
        s(&vars),
    ];
    args.extend(emb.args());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tracecheck(&a);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let text = &out.stdout;
    assert!(text.contains("PASS         1/2 Add a pokemon"), "{text}");
    assert!(
        text.contains("FAIL         2/2 Read the pokemon back"),
        "{text}"
    );
    assert!(
        text.contains("FAIL attr:http.response.status_code = 200"),
        "{text}"
    );
    let detail = text
        .lines()
        .find(|l| l.contains("\"GET /pokemon/{id}\": observed 500, expected 200"))
        .unwrap_or_else(|| panic!("failing span with observed and expected:\n{text}"));
    assert!(detail.trim_start().starts_with("span "), "{detail}");
    assert!(text.contains("trace: "), "{text}");
}

/// Issue: "a step whose trace never arrives (an uninstrumented endpoint)
/// stops the chain, later steps not executed, exit 1".
#[test]
fn uninstrumented_step_stops_the_chain_and_later_steps_are_not_executed() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let emb = Embedded::new();
    let shop = Pokeshop::start(emb.http, false, 300);
    let vars = shop.vars(dir.path());
    let tx = id_transaction(dir.path(), &["add-pokemon", "stats", "get-pokemon"]);
    let mut args = vec![
        "test".to_string(),
        "run".into(),
        "--file".into(),
        s(&tx),
        "--file".into(),
        example("add-pokemon.yaml"),
        "--file".into(),
        example("stats.yaml"),
        "--file".into(),
        example("get-pokemon.yaml"),
        "--vars".into(),
        s(&vars),
        "--timeout".into(),
        "3s".into(),
        "--format".into(),
        "json".into(),
    ];
    args.extend(emb.args());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tracecheck(&a);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let tx_run = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["id"] == "chain")
        .expect("the chain transaction ran");
    let st: Vec<&str> = tx_run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(st, ["passed", "no_trace", "not_executed"]);
    assert_eq!(tx_run["passed"], false);
    let msg = tx_run["steps"][2]["message"].as_str().unwrap_or("");
    assert!(msg.contains("not executed"), "{msg}");
}

/// Issue: "the JUnit file has one testcase per step".
#[test]
fn junit_file_has_one_testcase_per_step() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let emb = Embedded::new();
    let shop = Pokeshop::start(emb.http, false, 300);
    let vars = shop.vars(dir.path());
    let tx = id_transaction(dir.path(), &["add-pokemon", "stats", "get-pokemon"]);
    let junit = dir.path().join("junit.xml");
    let mut args = vec![
        "test".to_string(),
        "run".into(),
        "--file".into(),
        s(&tx),
        "--file".into(),
        example("add-pokemon.yaml"),
        "--file".into(),
        example("stats.yaml"),
        "--file".into(),
        example("get-pokemon.yaml"),
        "--vars".into(),
        s(&vars),
        "--timeout".into(),
        "3s".into(),
        "--junit".into(),
        s(&junit),
    ];
    args.extend(emb.args());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tracecheck(&a);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let xml = std::fs::read_to_string(&junit).expect("JUnit file written");
    let cases: Vec<&str> = xml.split("<testcase ").skip(1).collect();
    assert_eq!(cases.len(), 3, "{xml}");
    assert!(cases[0].contains("name=\"1. Add a pokemon\""), "{xml}");
    assert!(
        !cases[0].contains("<failure") && !cases[0].contains("<error"),
        "{xml}"
    );
    assert!(
        cases[0].contains("trace_id: "),
        "every step has its trace: {xml}"
    );
    assert!(
        cases[1].contains("<error ") && cases[1].contains("type=\"no_trace\""),
        "{xml}"
    );
    assert!(cases[2].contains("<skipped "), "{xml}");
    assert!(
        xml.contains(
            "<testsuite name=\"chain\" tests=\"3\" failures=\"0\" errors=\"1\" skipped=\"1\""
        ),
        "{xml}"
    );
}

/// `--server`: traces come from a running daemon through
/// `GET /api/v1/traces/{id}?wait=`. The worker picks the import up 1.5 s
/// later, after the daemon completed the trace (idle 300 ms): the runner
/// waits for the late span instead of failing, and links every trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_waits_for_a_late_worker_span_and_links_the_trace() {
    if !python_ready() {
        return;
    }
    let served = Served::start("100ms").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shop = Pokeshop::start(served.otlp_http, false, 1500);
    let vars = shop.vars(dir.path());
    let out = bounded(
        LIMIT,
        tracecheck_async(vec![
            "test".into(),
            "run".into(),
            "--file".into(),
            example("transaction.yaml"),
            "--vars".into(),
            s(&vars),
            "--server".into(),
            served.admin.clone(),
            "--format".into(),
            "json".into(),
        ]),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let import = &report["runs"][0]["steps"][2];
    assert_eq!(import["status"], "passed", "{import}");
    assert!(
        import["duration_ms"].as_u64().unwrap_or(0) >= 1500,
        "the worker's span came 1.5 s after the request: {import}"
    );
    let id = import["trace_id"].as_str().expect("trace id");
    assert_eq!(
        import["trace_url"].as_str(),
        Some(format!("http://traces.example/t/{id}").as_str())
    );
    served.stop().await;
}

/// `POST /api/v1/runs` runs a test through the daemon; `GET
/// /api/v1/runs/{id}?wait=` answers its result. A bad file is refused with
/// its line and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_api_runs_a_test_through_the_daemon() {
    if !python_ready() {
        return;
    }
    let served = Served::start("100ms").await;
    let shop = Pokeshop::start(served.otlp_http, false, 300);
    let client = tracecheck::net::client::plain(std::time::Duration::ZERO);
    let file = std::fs::read_to_string(repo_path("examples/pokeshop/tracetest/add-pokemon.yaml"))
        .expect("example test");
    let body = serde_json::json!({
        "file": file,
        "variables": { "POKESHOP_URL": format!("http://127.0.0.1:{}", shop.port), "POKEMON_NAME": "eevee" },
        "timeout": "20s",
    });
    let resp = client
        .post(format!("{}/api/v1/runs", served.admin))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /api/v1/runs");
    assert_eq!(resp.status().as_u16(), 202);
    let accepted = body_json(resp).await;
    let id = accepted["id"].as_str().expect("run id").to_string();
    let result = body_json(
        client
            .get(format!("{}/api/v1/runs/{id}?wait=40s", served.admin))
            .send()
            .await
            .expect("GET run"),
    )
    .await;
    assert_eq!(result["state"], "passed", "{result}");
    let step = &result["report"]["runs"][0]["steps"][0];
    assert_eq!(step["response_status"], 201);
    assert_eq!(step["outputs"]["POKEMON_ID"], "1");

    let bad = client
        .post(format!("{}/api/v1/runs", served.admin))
        .body(serde_json::json!({ "file": "type: Tset\nspec: {}\n" }).to_string())
        .send()
        .await
        .expect("POST bad run");
    assert_eq!(bad.status().as_u16(), 422);
    let bad = body_json(bad).await;
    assert_eq!(bad["errors"][0]["line"], 1, "{bad}");
    let missing = client
        .get(format!("{}/api/v1/runs/nope", served.admin))
        .send()
        .await
        .expect("GET unknown run");
    assert_eq!(missing.status().as_u16(), 404);
    drop(shop);
    tokio::time::sleep(Duration::from_millis(10)).await;
    served.stop().await;
}
