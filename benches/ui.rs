//! Server-side render time of the UI's failures page (`/ui/failures`) with
//! 10 000 failures stored: 100 models with 100 failures each (the store
//! keeps 100 verdicts per model), three failed specs per verdict. Each
//! iteration renders one 50-row page to HTML, as the handler does, minus
//! the socket.
//!
//! Run with `cargo bench --bench ui`; under `cargo test --all-targets`
//! each benchmark runs once, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use tracecheck::admin::ui::{render_failures, FailuresQuery};
use tracecheck::engine::{Failure, FailureKind, Verdict};
use tracecheck::ids::{SpanId, TraceId};
use tracecheck::metrics::CompletionReason;
use tracecheck::results::store::{ResultStore, VerdictRecord};

const MODELS: u32 = 100;
const PER_MODEL: u32 = 100;
const NOW_MS: u64 = 1_800_000_000_000;

fn failure(spec: &str, service: &str, span: u64) -> Failure {
    Failure {
        spec: spec.to_owned(),
        kind: FailureKind::Assertion,
        assertion: Some("attr:http.response.status_code = 500".to_owned()),
        span_id: Some(SpanId(span.to_be_bytes())),
        span_name: Some("POST /:account/withdraw".to_owned()),
        service: Some(service.to_owned()),
        observed: Some("200".to_owned()),
        expected: Some("500".to_owned()),
        message: "expected attr:http.response.status_code = 500, observed 200".to_owned(),
    }
}

/// A store holding `MODELS * PER_MODEL` failures, one trace each.
fn store(models: &[String]) -> ResultStore {
    let store = ResultStore::default();
    for i in 0..PER_MODEL {
        for (m, model) in models.iter().enumerate() {
            let n = i * MODELS + m as u32;
            let mut id = [7u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            let service = ["bank-api", "bank-db", "checkout", "frontend"][n as usize % 4];
            let record = Arc::new(VerdictRecord {
                seq: store.next_seq(),
                trace_id: TraceId(id),
                model: Arc::from(model.as_str()),
                model_name: Arc::from("A model"),
                verdict: if n % 10 == 0 {
                    Verdict::Inconclusive
                } else {
                    Verdict::Fail
                },
                inconclusive: None,
                failures: vec![
                    failure("API answers 500", service, u64::from(n)),
                    failure("rollback happens", service, u64::from(n) + 1),
                    failure("never commits", "bank-db", u64::from(n) + 2),
                ],
                trace_url: None,
                summary: Some("Overdraft committed".to_owned()),
                evaluated_at_unix_ms: NOW_MS - u64::from(PER_MODEL - i) * 1000,
                incomplete: false,
                completion_reason: CompletionReason::root,
                waited_for_late_spans: false,
                early: false,
                flipped_from: None,
                service: None,
                service_version: None,
            });
            store.record(TraceId(id), &[], vec![record]);
        }
    }
    store
}

fn failures_page(c: &mut Criterion) {
    let models: Vec<String> = (0..MODELS).map(|m| format!("model-{m:03}")).collect();
    let ids: Vec<&str> = models.iter().map(String::as_str).collect();
    let store = store(&models);
    let (all, _) = store.page(None, None, usize::MAX, |_| true);
    assert_eq!(all.len(), (MODELS * PER_MODEL) as usize, "10 000 stored");
    let middle = all[all.len() / 2].seq;

    let mut g = c.benchmark_group("ui/failures_page_10k");
    let cases = [
        ("first_page", FailuresQuery::default()),
        (
            "one_model",
            FailuresQuery {
                model: "model-042".into(),
                ..FailuresQuery::default()
            },
        ),
        (
            "service_and_last_hour",
            FailuresQuery {
                service: "checkout".into(),
                since: "1h".into(),
                ..FailuresQuery::default()
            },
        ),
        (
            "page_in_the_middle",
            FailuresQuery {
                before: Some(middle),
                ..FailuresQuery::default()
            },
        ),
    ];
    for (name, q) in &cases {
        let page = render_failures(&store, q, &ids, NOW_MS);
        assert!(
            page.contains("<tr class=\"failure\""),
            "{name} lists failures"
        );
        g.bench_function(*name, |b| {
            b.iter(|| render_failures(black_box(&store), black_box(q), &ids, NOW_MS))
        });
    }
    g.finish();
}

criterion_group!(benches, failures_page);
criterion_main!(benches);
