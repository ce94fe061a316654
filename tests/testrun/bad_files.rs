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
