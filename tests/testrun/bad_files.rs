//! Issue: "bad files: unknown type, missing trigger url, undefined variable
//! → exit 2 with file:line:col". Nothing is sent for a bad file.

use crate::util::*;

fn run(dir: &std::path::Path, name: &str, text: &str, extra: &[&str]) -> (Output, String) {
    let f = write(dir, name, text);
    let path = s(&f);
    let mut args = vec!["test", "run", "--file", path.as_str()];
    args.extend_from_slice(extra);
    // Never reached: the runner must stop before listening or sending.
    args.extend_from_slice(&["--server", "http://127.0.0.1:9"]);
    (tracecheck(&args), path)
}

#[test]
fn unknown_document_type_is_exit_2_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, path) = run(dir.path(), "t.yaml", "type: Tset\nspec:\n  id: x\n", &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{path}:1:7: unknown document type 'Tset'")),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_trigger_url_is_exit_2_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, path) = run(
        dir.path(),
        "t.yaml",
        "type: Test\nspec:\n  id: x\n  trigger:\n    type: http\n    httpRequest:\n      method: GET\n  specs:\n    - selector: span\n",
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{path}:7:7: missing 'url' in 'httpRequest'")),
        "{}",
        out.stderr
    );
}

#[test]
fn undefined_variable_is_exit_2_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = write(
        dir.path(),
        "vars.yaml",
        "type: VariableSet\nspec:\n  id: v\n  values:\n    - key: HOST\n      value: http://127.0.0.1:1\n",
    );
    let (out, path) = run(
        dir.path(),
        "t.yaml",
        "type: Test\nspec:\n  id: x\n  trigger:\n    type: http\n    httpRequest:\n      url: ${env:HOST}/users/${env:USER_ID}\n  specs:\n    - selector: span\n      assertions:\n        - attr:user.id = var:NOPE\n",
        &["--vars", &s(&vars)],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{path}:7:32: undefined variable env:USER_ID")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("{path}:11:26: undefined variable var:NOPE")),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("HOST"),
        "HOST is defined: {}",
        out.stderr
    );
}

/// A transaction step may read an earlier step's output, not a later one's.
#[test]
fn output_of_a_later_step_is_undefined_in_an_earlier_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a.yaml",
        "type: Test\nspec:\n  id: a\n  trigger:\n    type: http\n    httpRequest:\n      url: http://127.0.0.1:1/${var:B_ID}\n  specs: []\n",
    );
    write(
        dir.path(),
        "b.yaml",
        "type: Test\nspec:\n  id: b\n  trigger:\n    type: http\n    httpRequest:\n      url: http://127.0.0.1:1/\n  outputs:\n    - name: B_ID\n      selector: span\n      value: attr:id\n",
    );
    let (out, _) = run(
        dir.path(),
        "tx.yaml",
        "type: TestSuite\nspec:\n  id: tx\n  steps: [./a.yaml, ./b.yaml]\n",
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    let a = s(&dir.path().join("a.yaml"));
    assert!(
        out.stderr
            .contains(&format!("{a}:7:33: undefined variable var:B_ID")),
        "{}",
        out.stderr
    );
}

#[test]
fn step_that_is_neither_a_test_id_nor_a_file_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, path) = run(
        dir.path(),
        "tx.yaml",
        "type: Transaction\nspec:\n  id: tx\n  steps:\n    - ./missing.yaml\n",
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{path}:5:7: step './missing.yaml' is neither")),
        "{}",
        out.stderr
    );
}

const GOOD: &str = "type: Test\nspec:\n  id: ok\n  trigger:\n    type: http\n    httpRequest:\n      method: GET\n      url: http://127.0.0.1:9/\n  specs:\n    - selector: span[name = \"x\"]\n";

/// Setup, not the system under test: a daemon that is not there is exit 2
/// with what could not be reached.
#[test]
fn an_unreachable_server_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(dir.path(), "t.yaml", GOOD);
    let out = tracecheck(&[
        "test",
        "run",
        "--file",
        &s(&f),
        "--server",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("127.0.0.1:9"), "{}", out.stderr);
}

/// The embedded receiver's port already taken: exit 2 naming the address.
#[test]
fn a_busy_otlp_port_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(dir.path(), "t.yaml", GOOD);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let http = free_addr().to_string();
    let out = tracecheck(&[
        "test",
        "run",
        "--file",
        &s(&f),
        "--otlp-grpc",
        &addr,
        "--otlp-http",
        &http,
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
}

/// On a terminal the runner shows what it waits for (a spinner line with
/// the trace ID); through a pipe it does not. `script` gives it a terminal.
#[test]
fn a_terminal_shows_a_progress_line_while_waiting_for_the_trace() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        return crate::util::tool_missing(
            "testrun spinner",
            "script (util-linux)",
            "apt-get install bsdutils",
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A service that answers but sends no spans: the runner waits the
    // whole timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let f = write(
        dir.path(),
        "t.yaml",
        &GOOD.replace("127.0.0.1:9", &format!("127.0.0.1:{port}")),
    );
    // Ports free a moment ago may be taken by another test before the
    // runner binds them: another pair then, a few times.
    let mut text = String::new();
    for _ in 0..5 {
        let (grpc, http) = (free_addr().to_string(), free_addr().to_string());
        let cmd = format!(
            "{} test run --file {} --timeout 2s --otlp-grpc {grpc} --otlp-http {http}",
            env!("CARGO_BIN_EXE_tracecheck"),
            s(&f)
        );
        let tty = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .expect("run under script");
        text = String::from_utf8_lossy(&tty.stdout).into_owned();
        if !text.contains("Address already in use") {
            break;
        }
    }
    assert!(text.contains("waiting for trace"), "{text}");
    // Through a pipe: no progress line, and the same outcome (no trace).
    let piped = tracecheck(&[
        "test",
        "run",
        "--file",
        &s(&f),
        "--timeout",
        "2s",
        "--otlp-grpc",
        &free_addr().to_string(),
        "--otlp-http",
        &free_addr().to_string(),
    ]);
    assert_eq!(piped.code, 1, "{piped:?}");
    assert!(
        !piped.stderr.contains("waiting for trace"),
        "{}",
        piped.stderr
    );
}

/// Issue 21: a trigger type Tracetest knows but tracecheck cannot send is
/// exit 2 with one line that says what to do instead; `models lint` accepts
/// the same file.
#[test]
fn integration_trigger_is_exit_2_with_what_to_do_instead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "type: Test\nspec:\n  name: K6 import\n  trigger:\n    type: k6\n  specs:\n    - selector: span[tracetest.span.type=\"general\" name=\"import pokemon\"]\n      assertions:\n        - attr:tracetest.selected_spans.count = 1\n";
    let (out, path) = run(dir.path(), "k6.yaml", text, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with(&path))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "{path}:5:11: tracecheck cannot send trigger type 'k6'"
        )),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("type: traceid"), "{}", lines[0]);

    let lint = tracecheck(&["models", "lint", &path]);
    assert_eq!(lint.code, 0, "{lint:?}");

    // Kafka: publish it yourself.
    let kafka = "type: Test\nspec:\n  trigger:\n    type: kafka\n    kafka: { brokerUrls: [kafka:9092], topic: t, messageValue: '{}' }\n";
    let (out, path) = run(dir.path(), "kafka.yaml", kafka, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{path}:4:11: tracecheck cannot send trigger type 'kafka': publish the message yourself"
        )),
        "{}",
        out.stderr
    );
}

/// Issue 21: Tracetest's getting-started tests have no `spec.id` and carry
/// keys only Tracetest's server reads; lint accepts them (exit 0).
#[test]
fn lint_accepts_a_test_without_id_and_with_tracetest_only_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "getting-started.yaml",
        "type: Test\nspec:\n  name: Get a Pokemon\n  version: 2\n  createdAt: 2023-05-04T10:00:00Z\n  owner: me\n  trigger:\n    type: http\n    httpRequest:\n      method: GET\n      url: http://localhost:8081/pokemon/1\n      auth: {}\n  specs:\n    - selector: span[tracetest.span.type=\"http\"]\n      assertions:\n        - attr:tracetest.span.status_code = \"STATUS_CODE_OK\"\n        - attr:tracetest.span.duration < 200 ms\n",
    );
    let out = tracecheck(&["models", "lint", &s(&f)]);
    assert_eq!(out.code, 0, "{out:?}");
    // The key neither knows is named, as a warning.
    assert!(
        out.stderr.contains(&format!(
            "{}:6:3: warning: unknown key 'owner' in test is ignored",
            s(&f)
        )),
        "{}",
        out.stderr
    );
}
