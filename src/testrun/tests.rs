//! Unit tests of the run context, loading and transaction rules.

use std::sync::Arc;
use std::time::Duration;

use super::context::RunContext;
use super::load::{load_text, RunKind};
use super::report::StepStatus;
use super::runner::{run, RunOptions};
use super::wait::{TraceSource, TraceWaiters};
use crate::model::{Position, Variable, VariableSet};

fn set(pairs: &[(&str, &str)]) -> VariableSet {
    VariableSet {
        id: "vs".into(),
        id_derived: false,
        name: "vs".into(),
        description: None,
        values: pairs
            .iter()
            .map(|(k, v)| Variable {
                key: k.to_string(),
                value: v.to_string(),
                position: Position { line: 1, column: 1 },
            })
            .collect(),
        file: "vars.yaml".into(),
        position: Position { line: 1, column: 1 },
    }
}

fn test_doc(id: &str, url: &str, outputs: &str) -> String {
    format!(
        "type: Test\nspec:\n  id: {id}\n  trigger:\n    type: http\n    httpRequest:\n      url: {url}\n  specs:\n    - selector: span\n{outputs}---\n"
    )
}

#[test]
fn outputs_are_added_for_later_steps_and_never_reach_the_variable_set() {
    let vs = set(&[("HOST", "h"), ("ID", "from-set")]);
    let mut ctx = RunContext::new(Some(&vs));
    let mut outs = std::collections::BTreeMap::new();
    outs.insert("ID".to_string(), "from-output".to_string());
    ctx.add_outputs(&outs);
    // Outputs win over the variable set when read…
    let e = ctx.eval(None);
    assert_eq!(e.vars.get("ID").map(String::as_str), Some("from-output"));
    // …but the set (and the context's copy of it) are unchanged.
    assert_eq!(
        ctx.variables().get("ID").map(String::as_str),
        Some("from-set")
    );
    assert_eq!(vs.values[1].value, "from-set");
    assert!(ctx.defines("HOST") && ctx.defines("ID") && !ctx.defines("NOPE"));
}

#[test]
fn transaction_steps_resolve_by_id_in_order() {
    let text = format!(
        "{}{}type: Transaction\nspec:\n  id: tx\n  steps: [b, a]\n",
        test_doc("a", "http://x/${var:B_OUT}", ""),
        test_doc(
            "b",
            "http://x/",
            "  outputs:\n    - { name: B_OUT, selector: span, value: attr:id }\n"
        )
    );
    let suite = load_text("t.yaml", &text, None).expect("loads");
    assert_eq!(suite.runs.len(), 1, "only the transaction runs");
    let r = &suite.runs[0];
    assert_eq!(r.kind, RunKind::Transaction);
    let ids: Vec<&str> = r.steps.iter().map(|s| s.test().id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
}

#[test]
fn a_step_reading_a_later_steps_output_is_refused_at_its_position() {
    let text = format!(
        "{}{}type: Transaction\nspec:\n  id: tx\n  steps: [a, b]\n",
        test_doc("a", "http://x/${var:B_OUT}", ""),
        test_doc(
            "b",
            "http://x/",
            "  outputs:\n    - { name: B_OUT, selector: span, value: attr:id }\n"
        )
    );
    let diags = load_text("t.yaml", &text, None).expect_err("refused");
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].line, diags[0].column), (7, 23), "points at var:");
    assert!(diags[0].message.contains("undefined variable var:B_OUT"));
}

#[test]
fn tests_without_transaction_each_run_and_api_steps_cannot_name_files() {
    let text = format!(
        "{}{}",
        test_doc("a", "http://x/", ""),
        test_doc("b", "http://x/", "")
    );
    let suite = load_text("t.yaml", &text, None).expect("loads");
    assert_eq!(suite.runs.len(), 2);
    assert!(suite.runs.iter().all(|r| r.kind == RunKind::Test));

    let tx = "type: Transaction\nspec:\n  id: tx\n  steps: [./a.yaml]\n";
    let diags = load_text("t.yaml", tx, None).expect_err("no files over the API");
    assert!(diags[0].message.contains("names no test"), "{diags:?}");
}

#[test]
fn a_test_without_trigger_cannot_run() {
    let text = "type: Test\nspec:\n  id: a\n  specs: [{ selector: span }]\n";
    let diags = load_text("t.yaml", text, None).expect_err("refused");
    assert!(diags[0].message.contains("no 'trigger'"), "{diags:?}");
    assert_eq!((diags[0].line, diags[0].column), (3, 7));
}

fn local_source() -> TraceSource {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(crate::metrics::Metrics::new(&mut registry));
    TraceSource::Local {
        waiters: Arc::new(TraceWaiters::new()),
        assembler: Arc::new(crate::assembler::Assembler::new(
            Default::default(),
            metrics,
        )),
        links: Default::default(),
    }
}

/// A step that cannot get a trace stops the chain; the rest are reported
/// as not executed and the transaction fails.
#[tokio::test]
async fn a_step_without_trace_stops_the_transaction() {
    // Port 1 on loopback: nothing listens, the trigger fails at once.
    let text = format!(
        "{}{}type: Transaction\nspec:\n  id: tx\n  steps: [a, b]\n",
        test_doc("a", "http://127.0.0.1:1/", ""),
        test_doc("b", "http://127.0.0.1:1/", "")
    );
    let suite = load_text("t.yaml", &text, None).expect("loads");
    let opts = RunOptions {
        timeout: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let report = run(
        &suite.runs[0],
        RunContext::default(),
        &local_source(),
        &opts,
    )
    .await
    .expect("runs");
    let st: Vec<StepStatus> = report.steps.iter().map(|s| s.status).collect();
    assert_eq!(st, [StepStatus::Error, StepStatus::NotExecuted]);
    assert!(!report.passed);
    assert!(
        report.steps[0].trace_id.is_some(),
        "the trace ID is known before sending"
    );
}

#[test]
fn only_missing_traces_stop_the_chain() {
    assert!(StepStatus::NoTrace.stops_chain());
    assert!(StepStatus::Error.stops_chain());
    assert!(!StepStatus::Failed.stops_chain());
    assert!(!StepStatus::Passed.stops_chain());
}
