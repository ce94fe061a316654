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

/// `count` models as one YAML stream: the bank model, then up to nine
/// matching models, then idle ones.
pub fn model_set(count: usize) -> String {
    let mut docs = Vec::with_capacity(count);
    if count > 0 {
        docs.push(BANK_MODEL.to_owned());
    }
    docs.extend((1..count.min(10)).map(matching_model));
    docs.extend((10..count).map(idle_model));
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
}
