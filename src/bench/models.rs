//! The model sets the benchmarks evaluate: the bank model, nine models that
//! match every generated trace, and idle models whose `match` selects
//! nothing: the performance issue's "most matching nothing, ten matching".
//! One definition, used by the criterion benches and by
//! `tracecheck bench models` for `benches/compare.sh`.

const BANK_MODEL: &str = include_str!("../../config/models/bank.yaml");

/// A model that matches every trace (both shapes have a server root),
/// in one of three flavours so the ten matching models are not identical.
fn matching_model(i: usize) -> String {
    match i % 3 {
        0 => format!(
            r#"type: Model
spec:
  id: server-health-{i}
  name: Servers answer in time ({i})
  labels: {{ team: bench }}
  match: span[kind = "server"]
  specs:
    - name: servers answer in time
      selector: span[kind = "server"]
      assertions:
        - attr:tracetest.span.duration < {secs}s
    - name: database calls below a server are fast
      selector: span[kind = "server"] span[tracetest.span.type = "database"]
      assertions:
        - attr:tracetest.span.duration < 250ms
  not_expect:
    - name: no server error
      selector: span[kind = "server" http.response.status_code >= 500]
"#,
            secs = i + 1
        ),
        1 => format!(
            r#"type: Model
spec:
  id: status-consistent-{i}
  name: Error status matches the HTTP status ({i})
  match: span[kind = "server" http.request.method != ""]
  outputs:
    - name: STATUS
      selector: span[kind = "server"]
      value: attr:http.response.status_code
  when:
    - var:STATUS >= 100
  specs:
    - name: a status below 600
      selector: span[kind = "server"]
      assertions:
        - attr:http.response.status_code < 600
        - attr:http.request.method != "TRACE"
  within: 5s
  alert:
    severity: info
    summary: "status check {i} failed on ${{attr:name}} (${{attr:service.name}})"
"#
        ),
        _ => format!(
            r#"type: Model
spec:
  id: errors-explained-{i}
  name: Errors carry a message ({i})
  match: span[tracetest.span.type = "http"]
  specs:
    - name: clients got an answer
      selector: span[kind = "client"]
      assertions:
        - attr:tracetest.span.duration < 2s
  not_expect:
    - name: no error without message
      selector: span[status = "error" status.message = ""]
"#
        ),
    }
}

/// A model whose `match` selects nothing in the generated traffic.
fn idle_model(i: usize) -> String {
    format!(
        r#"type: Model
spec:
  id: op-{i}
  name: Operation {i} is fast and never fails
  match: span[name = "op-{i}"]
  specs:
    - name: op-{i} is fast
      selector: span[name = "op-{i}"]
      assertions:
        - attr:tracetest.span.duration < 500ms
  not_expect:
    - name: op-{i} never fails
      selector: span[name = "op-{i}" status = "error"]
"#
    )
}

/// Two models that match every generated trace (each has a server span)
/// and differ only in when their verdict can be decided (issue 17):
/// `verdict-early` only asks that a server span exist, so it passes
/// `assembler.root_settle` after the root arrives; `verdict-settled` adds
/// an assertion a later span could break, so it waits for the trace to
/// settle (`assembler.settle`). `benches/latency.sh` reads the verdict
/// delay of each.
pub const TIMING_MODELS: &str = r#"type: Model
spec:
  id: verdict-early
  name: A server span exists (can pass early)
  match: span[kind = "server"]
  specs:
    - name: a server span
      selector: span[kind = "server"]
---
type: Model
spec:
  id: verdict-settled
  name: Server spans answer in time (waits to settle)
  match: span[kind = "server"]
  specs:
    - name: servers answer in time
      selector: span[kind = "server"]
      assertions:
        - attr:tracetest.span.duration < 10s
"#;

/// A descendant selector with an assertion on every link of the chain
/// traces `tracecheck bench load --chain-spans N` sends (a
/// [`super::traffic::ChainTrace`]: `chain-root`, then `link` below `link`).
/// Its `match` names `chain-root`, so ordinary traffic does not wake it.
pub const CHAIN_MODEL: &str = r#"type: Model
spec:
  id: chain-descendants
  name: Every link below a chain root is quick
  match: span[name = "chain-root"]
  specs:
    - name: links are quick
      selector: span[name = "chain-root"] span[name = "link"]
      assertions:
        - attr:tracetest.span.duration < 1h
"#;

/// `count` models as one YAML stream: the bank model, then up to nine
/// matching models, then idle ones.
pub fn model_set(count: usize) -> String {
    model_set_matching(count, 10)
}

/// `count` models of which `matching` (the bank model among them) match
/// every generated trace and have to be evaluated; the rest are idle.
pub fn model_set_matching(count: usize, matching: usize) -> String {
    let matching = matching.clamp(1, count.max(1));
    let mut docs = Vec::with_capacity(count);
    if count > 0 {
        docs.push(BANK_MODEL.to_owned());
    }
    docs.extend((1..matching.min(count)).map(matching_model));
    docs.extend((matching..count).map(idle_model));
    docs.join("\n---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_loads_with_the_requested_count() {
        for count in [1, 10, 100, 1000] {
            let docs = crate::model::load_str("set.yaml", &model_set(count))
                .unwrap_or_else(|d| panic!("{count} models: {d:#?}"));
            let models = crate::model::models(&docs);
            assert_eq!(models.len(), count);
            crate::engine::Engine::compile(models)
                .unwrap_or_else(|d| panic!("{count} models: {d:#?}"));
        }
    }

    #[test]
    fn a_set_with_more_matching_models_wakes_them_on_every_trace() {
        use crate::bench::traffic::{Rng, TrafficGenerator, TrafficMix};
        use crate::engine::{EvalContext, Trace};
        let yaml = model_set_matching(1000, 100);
        let docs = crate::model::load_str("set.yaml", &yaml).unwrap_or_else(|d| panic!("{d:#?}"));
        let engine = crate::engine::Engine::compile(crate::model::models(&docs))
            .unwrap_or_else(|d| panic!("{d:#?}"));
        assert_eq!(engine.models().len(), 1000);
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(3));
        for _ in 0..20 {
            let request = g.next_trace().to_request();
            let traces = Trace::from_resource_spans(&request.resource_spans);
            let verdicts = engine.evaluate_woken(&traces[0], &EvalContext::default());
            // The bank model skips web traces but is woken on bank ones.
            assert!(
                (99..=100).contains(&verdicts.len()),
                "{} models evaluated",
                verdicts.len()
            );
        }
    }

    fn engine(yaml: &str) -> crate::engine::Engine {
        let docs = crate::model::load_str("m.yaml", yaml).unwrap_or_else(|d| panic!("{d:#?}"));
        crate::engine::Engine::compile(crate::model::models(&docs))
            .unwrap_or_else(|d| panic!("{d:#?}"))
    }

    #[test]
    fn timing_models_decide_early_and_settled() {
        let engine = engine(TIMING_MODELS);
        let ids: Vec<&str> = engine.models().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["verdict-early", "verdict-settled"]);
        assert!(engine.can_pass_early(0));
        assert!(!engine.can_pass_early(1));
    }

    #[test]
    fn the_chain_model_passes_on_a_chain_and_ignores_traffic() {
        use crate::bench::traffic::{ChainTrace, Rng, TrafficGenerator, TrafficMix};
        use crate::engine::{EvalContext, Trace, Verdict};
        let engine = engine(CHAIN_MODEL);
        assert!(!engine.can_pass_early(0));
        let mut rng = Rng::new(7);
        let chain = ChainTrace::new(&mut rng, 300, 128);
        let resource_spans: Vec<_> = chain.flat_map(|r| r.resource_spans).collect();
        let traces = Trace::from_resource_spans(&resource_spans);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].spans.len(), 300);
        let trace = &traces[0];
        let verdicts = engine.evaluate_woken(trace, &EvalContext::default());
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].verdict, Verdict::Pass, "{verdicts:?}");
        let mut g = TrafficGenerator::new(TrafficMix::default(), Rng::new(8));
        for _ in 0..50 {
            let request = g.next_trace().to_request();
            for trace in Trace::from_resource_spans(&request.resource_spans) {
                assert!(engine
                    .evaluate_woken(&trace, &EvalContext::default())
                    .is_empty());
            }
        }
    }
}
