//! # Checking your own code's traces against tracecheck models in a unit test
//!
//! The same models the tracecheck daemon runs on production traffic can run
//! at the "unit-test level": instrument the code under test with the
//! OpenTelemetry SDK, capture its spans in memory instead of exporting them,
//! and evaluate the model on that trace inside an ordinary `#[test]`.
//!
//! The steps, each a few lines below:
//!
//! 1. Build an `SdkTracerProvider` with an `InMemorySpanExporter` behind a
//!    *simple* (synchronous) span processor, so every span is captured as
//!    soon as it ends: no runtime, no flushing races.
//!    (`opentelemetry_sdk` needs its `testing` feature for the exporter.)
//! 2. Run the code under test with a tracer from that provider.
//! 3. Convert the captured `SpanData` to OTLP `ResourceSpans` with
//!    `opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope`
//!    (`opentelemetry-proto`'s `trace` feature; tracecheck already enables it),
//!    and group them into traces with `tracecheck::engine::Trace::from_resource_spans`.
//! 4. Load the model from YAML with `tracecheck::model::load_str`, compile it
//!    with `Engine::compile`, and `evaluate` each trace.
//! 5. Assert the verdict; on failure, print what failed (spec, span, observed
//!    and expected values), which is what makes the test failure readable.
//!
//! Run it with `cargo run --example unit_test_models`: it checks a correct
//! withdrawal (the model passes) and a buggy one that commits an overdraft
//! (the model fails, and the failures are printed), and exits 0 when both
//! verdicts are the expected ones. The `tests` module at the bottom is the
//! same thing written as the `#[test]` functions an application would keep;
//! `cargo test --example unit_test_models` runs them.
//!
//! In an application with tests running in parallel on one *global* tracer
//! provider, every test sees every test's spans: group by trace (as done
//! here) and check only the trace your test started, or give each test its
//! own provider and pass the tracer in, as this example does.

use std::fmt::Write as _;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracecheck::engine::{Engine, EvalContext, Trace, Verdict};

// ---------------------------------------------------------------------------
// The application code under test: a withdrawal handler, instrumented the
// usual way. `commit_overdrafts` switches on the bug the model catches.

/// What the handler answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
}

/// `POST /:account/withdraw`: refuses (and rolls back) a withdrawal larger
/// than the balance.
pub fn withdraw<T>(
    tracer: &T,
    account: &str,
    balance: i64,
    amount: i64,
    commit_overdrafts: bool,
) -> Response
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let server = tracer
        .span_builder("POST /:account/withdraw")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/:account/withdraw"),
            KeyValue::new("account.id", account.to_owned()),
        ]);
    tracer.in_span_with_builder(server, |cx| {
        let current = tracer.in_span("fetch-balance", |cx| {
            cx.span().set_attribute(KeyValue::new("amount", balance));
            balance
        });
        let ok = tracer.in_span("withdrawal", |cx| {
            cx.span().set_attribute(KeyValue::new("amount", amount));
            let ok = amount <= current || commit_overdrafts;
            let finish = if ok { "commit" } else { "rollback" };
            let db = tracer
                .span_builder(finish)
                .with_kind(SpanKind::Client)
                .with_attributes([
                    KeyValue::new("db.system.name", "postgresql"),
                    KeyValue::new("db.operation.name", finish.to_ascii_uppercase()),
                ]);
            tracer.in_span_with_builder(db, |_| {});
            ok
        });
        let status: u16 = if ok { 200 } else { 500 };
        cx.span().set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if !ok {
            cx.span().set_status(Status::error("insufficient funds"));
        }
        Response { status }
    })
}

// ---------------------------------------------------------------------------
// The model, as it would sit in the service's repository (the same file can
// be deployed to the tracecheck daemon for production traffic).

const OVERDRAFT_MODEL: &str = r#"
type: Model
spec:
  id: overdraft-rolls-back
  name: Accounts cannot withdraw more than their balance
  match: span[name = "POST /:account/withdraw" kind = "server"]
  outputs:
    - name: BALANCE
      selector: span[name = "fetch-balance"]
      value: attr:amount
    - name: AMOUNT
      selector: span[name = "withdrawal"]
      value: attr:amount
  when:
    - var:BALANCE < var:AMOUNT
  specs:
    - name: rollback happens
      selector: span[name = "rollback"]
    - name: API answers 500
      selector: span[name = "POST /:account/withdraw"]
      assertions:
        - attr:http.response.status_code = 500
  not_expect:
    - name: never commits
      selector: span[name = "commit"]
"#;

// ---------------------------------------------------------------------------
// Test support: what an application would put in its test helpers.

/// A tracer provider whose spans land in memory.
fn capturing_provider(service: &str) -> (SdkTracerProvider, InMemorySpanExporter, Resource) {
    let exporter = InMemorySpanExporter::default();
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_resource(resource.clone())
        .build();
    (provider, exporter, resource)
}

/// The spans captured so far, as the OTLP messages an exporter would send.
/// `SpanData` does not carry the resource: pass the provider's.
fn captured_resource_spans(
    exporter: &InMemorySpanExporter,
    resource: &Resource,
) -> Vec<ResourceSpans> {
    let spans = exporter.get_finished_spans().expect("in-memory exporter");
    group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource))
}

/// Compiles the models of a YAML text; a model with errors panics with the
/// diagnostics (`file:line:col: message`).
fn compile_models(origin: &str, yaml: &str) -> Engine {
    let docs = tracecheck::model::load_str(origin, yaml).unwrap_or_else(|diags| {
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        panic!("{origin} does not load:\n{}", text.join("\n"))
    });
    Engine::compile(tracecheck::model::models(&docs)).unwrap_or_else(|diags| {
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        panic!("{origin} does not compile:\n{}", text.join("\n"))
    })
}

/// Every model's verdict on every captured trace, `Err` with a readable
/// report when any model fails.
fn check_traces(
    engine: &Engine,
    resource_spans: &[ResourceSpans],
) -> Result<Vec<(String, Verdict)>, String> {
    let traces = Trace::from_resource_spans(resource_spans);
    assert!(!traces.is_empty(), "no trace was captured");
    let mut verdicts = Vec::new();
    let mut report = String::new();
    for trace in &traces {
        for v in engine.evaluate(trace, &EvalContext::default()) {
            let model = &engine.models()[v.model];
            verdicts.push((model.id.clone(), v.verdict));
            if v.verdict != Verdict::Fail {
                continue;
            }
            let _ = writeln!(
                report,
                "model {} failed on trace {}:",
                model.id,
                trace.trace_id()
            );
            for f in &v.failures {
                let _ = write!(report, "  - {} ({:?})", f.spec, f.kind);
                if let Some(span) = &f.span_name {
                    let _ = write!(report, " on span '{span}'");
                }
                // The message names the check and the observed and
                // expected values; `f.assertion`, `f.observed` and
                // `f.expected` hold them separately.
                if !f.message.is_empty() {
                    let _ = write!(report, ": {}", f.message);
                } else if let Some(a) = &f.assertion {
                    let _ = write!(report, ": {a}");
                }
                report.push('\n');
            }
        }
    }
    if report.is_empty() {
        Ok(verdicts)
    } else {
        Err(report)
    }
}

/// Runs one withdrawal under a capturing provider and checks its trace.
fn run_and_check(
    balance: i64,
    amount: i64,
    commit_overdrafts: bool,
) -> (Response, Result<Vec<(String, Verdict)>, String>) {
    let (provider, exporter, resource) = capturing_provider("bank-api");
    let tracer = provider.tracer("bank");
    let response = withdraw(&tracer, "ACC-42", balance, amount, commit_overdrafts);
    let engine = compile_models("overdraft.yaml", OVERDRAFT_MODEL);
    let result = check_traces(&engine, &captured_resource_spans(&exporter, &resource));
    provider.shutdown().expect("tracer provider shutdown");
    (response, result)
}

fn main() {
    // 1. Correct code, overdraft attempt: the model applies and passes.
    let (response, result) = run_and_check(100, 250, false);
    assert_eq!(response.status, 500);
    match &result {
        Ok(verdicts) => {
            println!("correct handler: {verdicts:?}");
            assert_eq!(
                verdicts,
                &[("overdraft-rolls-back".to_owned(), Verdict::Pass)]
            );
        }
        Err(report) => panic!("the correct handler should pass:\n{report}"),
    }

    // 2. Correct code, ordinary withdrawal: `when` is false, the model skips.
    let (_, result) = run_and_check(100, 30, false);
    let verdicts = result.expect("a skipped model is not a failure");
    println!("ordinary withdrawal: {verdicts:?}");
    assert_eq!(
        verdicts,
        &[("overdraft-rolls-back".to_owned(), Verdict::Skip)]
    );

    // 3. Buggy code commits the overdraft: the model fails, and says why.
    let (response, result) = run_and_check(100, 250, true);
    assert_eq!(response.status, 200);
    match result {
        Ok(verdicts) => panic!("the buggy handler should fail the model, got {verdicts:?}"),
        Err(report) => {
            println!("buggy handler, as a failing test would print it:\n{report}");
            assert!(report.contains("never commits"), "{report}");
            assert!(report.contains("rollback happens"), "{report}");
        }
    }
    println!("all verdicts as expected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdraft_is_rolled_back() {
        let (response, result) = run_and_check(100, 250, false);
        assert_eq!(response.status, 500);
        // In an application test this line is the whole check: the report
        // is the panic message when a model fails.
        if let Err(report) = result {
            panic!("{report}");
        }
    }

    #[test]
    fn committed_overdraft_fails_the_model() {
        let (_, result) = run_and_check(100, 250, true);
        let report = result.expect_err("the bug must be caught");
        assert!(report.contains("never commits"), "{report}");
    }
}
