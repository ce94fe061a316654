//! Files in every form Tracetest's documentation shows, written here (not
//! copied), run unchanged by the real binary against systems under test in
//! this process that report their spans over OTLP like an instrumented
//! service. Each test and assertion names the documented form it covers.

use std::net::SocketAddr;

use serde_json::json;
use tracecheck::admin::grpc_api::pb;

use crate::util::*;

/// An HTTP service: every request gets a server span (with what arrived:
/// headers, query, body), a database client span and three `step` spans.
async fn http_sut(reporter: Reporter) -> SocketAddr {
    async fn handle(
        axum::extract::State(reporter): axum::extract::State<Reporter>,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let header = |k: &str| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some((trace, parent)) = header("traceparent").as_deref().and_then(parse_traceparent)
        {
            let server = span_id();
            let path = parts.uri.path().to_string();
            let name = format!("{} {path}", parts.method);
            let mut attrs = vec![
                ("http.request.method", json!(parts.method.as_str())),
                ("http.route", json!(path)),
                ("url.path", json!(path)),
                ("url.query", json!(parts.uri.query().unwrap_or(""))),
                ("http.response.status_code", json!(200)),
                ("http.request.body", json!(String::from_utf8_lossy(&body))),
                ("user.id", json!(7)),
                ("cart.items", json!(3)),
            ];
            for h in ["authorization", "x-api-key", "x-team", "content-type"] {
                if let Some(v) = header(h) {
                    attrs.push((
                        match h {
                            "authorization" => "http.request.header.authorization",
                            "x-api-key" => "http.request.header.x-api-key",
                            "x-team" => "http.request.header.x-team",
                            _ => "http.request.header.content-type",
                        },
                        json!(v),
                    ));
                }
            }
            let mut spans = vec![
                SpanOut {
                    trace_id: &trace,
                    span_id: server.clone(),
                    parent: Some(parent.clone()),
                    name: &name,
                    kind: 2,
                    offset_ms: 0,
                    attrs,
                },
                SpanOut {
                    trace_id: &trace,
                    span_id: span_id(),
                    parent: Some(server.clone()),
                    name: "db query",
                    kind: 3,
                    offset_ms: 1,
                    attrs: vec![
                        ("db.system", json!("postgresql")),
                        ("db.statement", json!("SELECT * FROM users WHERE id = 7")),
                    ],
                },
            ];
            for n in 1..=3u64 {
                spans.push(SpanOut {
                    trace_id: &trace,
                    span_id: span_id(),
                    parent: Some(server.clone()),
                    name: "step",
                    kind: 1,
                    offset_ms: n + 1,
                    attrs: vec![("n", json!(n))],
                });
            }
            reporter.send(&spans).await;
        }
        (
            [("x-request-id", "req-1"), ("content-type", "application/json")],
            json!({"id": 7, "name": "Ada Lovelace", "tags": ["math", "code", "poetry"], "token": "tok-9f3a"})
                .to_string(),
        )
            .into_response()
    }
    serve(axum::Router::new().fallback(handle).with_state(reporter)).await
}

/// A gRPC service (tracecheck's own `VerdictService` definition, with
/// reflection) whose `Evaluate` reports a server span with the request's
/// field and metadata, and echoes the field back.
struct GrpcSut(Reporter);

#[tonic::async_trait]
impl pb::verdict_service_server::VerdictService for GrpcSut {
    type WatchStream = tokio_stream::Empty<Result<pb::Verdict, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn evaluate(
        &self,
        request: tonic::Request<pb::EvaluateRequest>,
    ) -> Result<tonic::Response<pb::EvaluateResponse>, tonic::Status> {
        let md = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let team = md("x-team").unwrap_or_default();
        let authorization = md("authorization").unwrap_or_default();
        let models_yaml = request.get_ref().models_yaml.clone();
        if let Some((trace, parent)) = md("traceparent").as_deref().and_then(parse_traceparent) {
            self.0
                .send(&[SpanOut {
                    trace_id: &trace,
                    span_id: span_id(),
                    parent: Some(parent),
                    name: "tracecheck.v1.VerdictService/Evaluate",
                    kind: 2,
                    offset_ms: 0,
                    attrs: vec![
                        ("rpc.system", json!("grpc")),
                        ("rpc.service", json!("tracecheck.v1.VerdictService")),
                        ("rpc.method", json!("Evaluate")),
                        ("rpc.grpc.status_code", json!(0)),
                        ("request.models_yaml", json!(models_yaml)),
                        ("metadata.x-team", json!(team)),
                        ("metadata.authorization", json!(authorization)),
                    ],
                }])
                .await;
        }
        Ok(tonic::Response::new(pb::EvaluateResponse {
            verdicts: vec![pb::Verdict {
                model: models_yaml,
                ..Default::default()
            }],
        }))
    }
}

async fn grpc_sut(reporter: Reporter, v1alpha_only: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tracecheck::admin::grpc_api::FILE_DESCRIPTOR_SET);
    let service = pb::verdict_service_server::VerdictServiceServer::new(GrpcSut(reporter));
    let router = if v1alpha_only {
        // As servers built before reflection v1 answer.
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(reflection.build_v1alpha().expect("reflection service"))
    } else {
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(reflection.build_v1().expect("reflection service"))
    };
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    addr
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// Every documented trigger form (http with headers, body and each `auth`
/// type; grpc by reflection, by `protobufFile` path and inline, with
/// request JSON and metadata), selector form, filter and output form, an
/// `Environment` and a `TestSuite` (the older names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_trigger_selector_filter_and_output_form_runs_unchanged() {
    let served = Served::start("100ms").await;
    let reporter = Reporter::new(served.otlp_http);
    let http = http_sut(reporter.clone()).await;
    let grpc = grpc_sut(reporter.clone(), false).await;
    let grpc_v1alpha = grpc_sut(reporter.clone(), true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let proto_path = repo_path("proto/tracecheck/v1/verdicts.proto");
    let proto_text = std::fs::read_to_string(&proto_path).expect("verdicts.proto");

    // Documented form: `type: Environment` (the older VariableSet name).
    let env = write(
        dir.path(),
        "env.yaml",
        &format!(
            r#"type: Environment
spec:
  id: forms-env
  name: forms
  values:
    - key: BASE_URL
      value: http://{http}
    - key: GRPC_ADDR
      value: {grpc}
    - key: GRPC_V1ALPHA_ADDR
      value: {grpc_v1alpha}
    - key: TEAM
      value: payments
    - key: USER
      value: user
    - key: PASSWORD
      value: s3cret
    - key: TOKEN
      value: abc
    - key: API_KEY
      value: k-123
"#
        ),
    );

    let http_tests = r#"# Documented form: an http trigger with only method and url; an empty
# selector, an attribute filter; outputs from the trigger response
# (json_path), with regex_group, and from a span attribute. (`span` alone is
# this project's extension: Tracetest's documentation calls it an error.)
type: Test
spec:
  id: get-plain
  name: GET, minimal trigger
  trigger:
    type: http
    httpRequest:
      method: GET
      url: ${env:BASE_URL}/users
  specs:
    - selector: span[tracetest.span.type = "http"]
      assertions:
        - attr:http.response.status_code = 200
        - attr:tracetest.span.duration < 5s
    - selector: span
      assertions:
        - attr:tracetest.selected_spans.count > 5
    - selector: ""
      assertions:
        - attr:tracetest.selected_spans.count > 5
  outputs:
    - name: USER_ID
      selector: span[name = "Tracetest trigger"]
      value: attr:tracetest.response.body | json_path '$.id'
    - name: TOKEN_SUFFIX
      selector: span[name = "Tracetest trigger"]
      value: attr:tracetest.response.body | json_path '$.token' | regex_group 'tok-(.*)'
    - name: DB_STATEMENT
      selector: span[tracetest.span.type = "database"]
      value: attr:db.statement
    - name: FIRST_START
      selector: span[kind = "server"]
      value: attr:tracetest.span.start_time
---
# Documented form: http with headers, body, basic auth, ${env:} and ${var:}
# in url/headers/body; every comparison operator; descendant selector;
# :first, :last, :nth_child; a union; every filter on the trigger response.
type: Test
spec:
  id: post-basic
  name: POST with basic auth
  trigger:
    type: http
    httpRequest:
      method: POST
      url: ${env:BASE_URL}/users/${var:USER_ID}?source=test
      headers:
        - key: Content-Type
          value: application/json
        - key: X-Team
          value: ${env:TEAM}
      body: '{"id": ${var:USER_ID}, "token": "${var:TOKEN_SUFFIX}"}'
      auth:
        type: basic
        basic:
          username: ${env:USER}
          password: ${env:PASSWORD}
  specs:
    - name: the server got what was sent
      selector: span[tracetest.span.type = "http" kind = "server"]
      assertions:
        - attr:http.request.header.authorization = "Basic dXNlcjpzM2NyZXQ="
        - attr:http.request.header.x-team = env:TEAM
        - attr:http.request.body contains "9f3a"
        - attr:http.request.body | json_path '$.id' = var:USER_ID
        - attr:url.query = "source=test"
        - attr:http.request.method != "GET"
        - attr:url.path not-contains "admin"
        - attr:cart.items >= 3
        - attr:cart.items <= 3
        - attr:user.id > 6
        - attr:user.id < 8
        - attr:http.route matches "^/users/[0-9]+$"
        - attr:tracetest.span.start_time > var:FIRST_START
    - name: descendant selector
      selector: span[kind = "server"] span[name = "db query"]
      assertions:
        - attr:db.statement = var:DB_STATEMENT
        - attr:db.statement = "SELECT * FROM users WHERE id = ${var:USER_ID}"
    - selector: span[name = "step"]:first
      assertions: [attr:n = 1]
    - selector: span[name = "step"]:last
      assertions: [attr:n = 3]
    - selector: span[name = "step"]:nth_child(2)
      assertions: [attr:n = 2]
    - name: union
      selector: span[name = "db query"], span[name = "step"]
      assertions:
        - attr:tracetest.selected_spans.count = 4
    - name: trigger response and filters
      selector: span[name = "Tracetest trigger"]
      assertions:
        - attr:tracetest.response.status = 200
        - attr:tracetest.response.body | json_path '$.tags' | count = 3
        - attr:tracetest.response.body | json_path '$.tags' | get_index 1 = "code"
        - attr:tracetest.response.body | json_path '$.tags' | first = "math"
        - attr:tracetest.response.body | json_path '$.tags' | last = "poetry"
        - attr:tracetest.response.body | json_path '$.name' | regex 'Ada' = "Ada"
        - attr:tracetest.response.body | json_path '$.name' | length = 12
        - attr:tracetest.response.body | json_path '$.id' | type = "number"
        - attr:tracetest.response.headers | json_path '$[?(@.key == "x-request-id")].value' = "req-1"
---
# Documented forms of concepts/selectors: filters without spaces around the
# operator, filters separated by a comma (parent-child section), `contains`
# in a selector, service.name (a resource attribute) in a selector.
# Documented forms of concepts/expressions: arithmetic, string
# interpolation of an attribute, every filter on literals (json_path with
# one and several matches, regex, regex_group with several groups, get_index
# with an index and 'last', length of an array and of a single value, type
# of a number, duration, string and array), and an array literal that
# `contains` an attribute's type.
type: Test
spec:
  id: expressions
  name: documented selectors and expressions
  trigger:
    type: http
    httpRequest:
      method: GET
      url: ${env:BASE_URL}/exprs/7
  specs:
    - name: selector forms
      selector: span[service.name="sut", tracetest.span.type="http"] span[name contains "db"]
      assertions:
        - attr:db.system = "postgresql"
        - attr:tracetest.selected_spans.count = 1
    - name: expression forms
      selector: span[kind="server" service.name contains "su"]
      assertions:
        - attr:user.id = attr:cart.items + 4
        - attr:url.path = "/exprs/${attr:user.id}"
        - attr:url.path = "/exprs/${attr:cart.items + 4}"
        # YAML block scalars: these assertions start with a quote or '['.
        - |-
          '{ "name": "Jorge", "age": 27, "email": "jorge@company.com" }' | json_path '.age' = 27
        - |-
          '{ "array": [{"name": "Jorge", "age": 27}, {"name": "Tim", "age": 52}]}' | json_path '$.array[*]..["name", "age"]' = '["Jorge", 27, "Tim", 52]'
        - |-
          'My account balance is $48.52' | regex '\$\d+(\.\d+)?' = '$48.52'
        - |-
          'Hello Marcus, today you have 8 meetings' | regex_group 'Hello (\w+), today you have (\d+) meetings' = '["Marcus", 8]'
        - |-
          '{ "array": [1, 2, 3] }' | json_path '$.array[*]' | get_index 1 = 2
        - |-
          '{ "array": [1, 2, 3] }' | json_path '$.array[*]' | get_index 'last' = 3
        - |-
          '{ "array": [1, 2, 3] }' | json_path '$.array[*]' | length = 3
        - |-
          "my string" | length = 9
        - 2 | type = "number"
        - 2s | type = "duration"
        - |-
          "something" | type = "string"
        - |-
          [1, 2s, "this is a string"] | type = "array"
        - |-
          ["number", "string"] contains attr:user.id | type
---
# Documented form: a graphql trigger (Tracetest's "Defining GraphQL Tests as
# Text Files"): the query in a file beside the test, variables,
# operationName, headers, sslVerification and a schema file.
type: Test
spec:
  id: graphql
  name: GraphQL trigger
  trigger:
    type: graphql
    graphql:
      url: ${env:BASE_URL}/graphql
      headers:
        - key: Content-Type
          value: application/json
      body:
        query: ./query.graphql
        variables: { id: 7, verbose: true }
        operationName: User
      sslVerification: false
      schema: ./schema.graphql
  specs:
    - selector: span[kind = "server"]
      assertions:
        - attr:http.request.method = "POST"
        - attr:http.request.body | json_path '$.operationName' = "User"
        - attr:http.request.body | json_path '$.variables.id' = 7
        - attr:http.request.body | json_path '$.variables.verbose' = true
        - attr:http.request.body | json_path '$.query' contains "query User($id"
---
# Documented form: bearer auth.
type: Test
spec:
  id: bearer
  name: bearer auth
  trigger:
    type: http
    httpRequest:
      method: GET
      url: ${env:BASE_URL}/me
      auth:
        type: bearer
        bearer:
          token: ${env:TOKEN}
  specs:
    - selector: span[kind = "server"]
      assertions:
        - attr:http.request.header.authorization = "Bearer abc"
---
# Documented form: apiKey auth in a header.
type: Test
spec:
  id: apikey-header
  name: apiKey auth in a header
  trigger:
    type: http
    httpRequest:
      method: GET
      url: ${env:BASE_URL}/keys
      auth:
        type: apiKey
        apiKey:
          key: X-Api-Key
          value: ${env:API_KEY}
          in: header
  specs:
    - selector: span[kind = "server"]
      assertions:
        - attr:http.request.header.x-api-key = "k-123"
---
# Documented form: apiKey auth in the query.
type: Test
spec:
  id: apikey-query
  name: apiKey auth in the query
  trigger:
    type: http
    httpRequest:
      method: GET
      url: ${env:BASE_URL}/keys
      auth:
        type: apiKey
        apiKey:
          key: api_key
          value: ${env:API_KEY}
          in: query
  specs:
    - selector: span[kind = "server"]
      assertions:
        - attr:url.query = "api_key=k-123"
"#;
    write(dir.path(), "http.yaml", http_tests);
    write(
        dir.path(),
        "query.graphql",
        "query User($id: Int!) { user(id: $id) { name } }\n",
    );
    write(
        dir.path(),
        "schema.graphql",
        "type Query { user(id: Int!): User }\n",
    );

    let grpc_tests = format!(
        r#"# Documented form: grpc trigger without protobufFile (server reflection),
# Tracetest's dotted method name, request JSON with a variable, metadata.
type: Test
spec:
  id: grpc-reflection
  name: gRPC by reflection
  trigger:
    type: grpc
    grpc:
      address: ${{env:GRPC_ADDR}}
      method: tracecheck.v1.VerdictService.Evaluate
      request: '{{"modelsYaml": "${{var:USER_ID}}"}}'
      metadata:
        - key: x-team
          value: ${{env:TEAM}}
  specs:
    - selector: span[tracetest.span.type = "rpc" name = "tracecheck.v1.VerdictService/Evaluate"]
      assertions:
        - attr:request.models_yaml = "7"
        - attr:metadata.x-team = "payments"
    - selector: span[name = "Tracetest trigger"]
      assertions:
        - attr:tracetest.response.status = 0
        - attr:tracetest.response.body | json_path '$.verdicts[0].model' = "7"
---
# Documented form: grpc by reflection against a server that serves only
# the older reflection v1alpha; `auth` (bearer) on a grpc trigger.
type: Test
spec:
  id: grpc-reflection-v1alpha
  name: gRPC by v1alpha reflection, with auth
  trigger:
    type: grpc
    grpc:
      address: ${{env:GRPC_V1ALPHA_ADDR}}
      method: tracecheck.v1.VerdictService.Evaluate
      request: '{{"modelsYaml": "v1alpha"}}'
      auth:
        type: bearer
        bearer:
          token: ${{env:TOKEN}}
  specs:
    - selector: span[tracetest.span.type = "rpc"]
      assertions:
        - attr:request.models_yaml = "v1alpha"
        - attr:metadata.authorization = "Bearer abc"
---
# Documented form: grpc with protobufFile given as a path.
type: Test
spec:
  id: grpc-proto-path
  name: gRPC with a .proto path
  trigger:
    type: grpc
    grpc:
      protobufFile: {proto}
      address: ${{env:GRPC_ADDR}}
      method: tracecheck.v1.VerdictService/Evaluate
      request: '{{"modelsYaml": "by-path"}}'
  specs:
    - selector: span[kind = "server"]
      assertions:
        - attr:request.models_yaml = "by-path"
---
# Documented form: grpc with the .proto inline (as Tracetest stores it).
type: Test
spec:
  id: grpc-proto-inline
  name: gRPC with an inline .proto
  trigger:
    type: grpc
    grpc:
      protobufFile: |
{inline}      address: ${{env:GRPC_ADDR}}
      method: tracecheck.v1.VerdictService.Evaluate
      request: '{{"modelsYaml": "inline"}}'
  specs:
    - selector: span[kind = "server"]
      assertions:
        - attr:request.models_yaml = "inline"
"#,
        proto = proto_path.display(),
        inline = indent(&proto_text, 8),
    );
    write(dir.path(), "grpc.yaml", &grpc_tests);
    // Documented form: `type: TestSuite` (the older Transaction name), steps
    // by test id.
    let suite = write(
        dir.path(),
        "suite.yaml",
        "type: TestSuite\nspec:\n  id: forms\n  name: every form\n  steps:\n    - get-plain\n    - post-basic\n    - expressions\n    - graphql\n    - bearer\n    - apikey-header\n    - apikey-query\n    - grpc-reflection\n    - grpc-reflection-v1alpha\n    - grpc-proto-path\n    - grpc-proto-inline\n",
    );
    let out = bounded(
        LIMIT,
        tracecheck_async(vec![
            "test".into(),
            "run".into(),
            "--file".into(),
            s(&suite),
            "--file".into(),
            s(&dir.path().join("http.yaml")),
            "--file".into(),
            s(&dir.path().join("grpc.yaml")),
            "--vars".into(),
            s(&env),
            "--server".into(),
            served.admin.clone(),
            "--timeout".into(),
            "15s".into(),
            "--format".into(),
            "json".into(),
        ]),
    )
    .await;
    let report = out.json();
    let steps = report["runs"][0]["steps"]
        .as_array()
        .expect("steps")
        .clone();
    for s in &steps {
        assert_eq!(
            s["status"],
            "passed",
            "step {} failed:\n{}\n{}",
            s["test_id"],
            serde_json::to_string_pretty(s).unwrap_or_default(),
            out.stderr
        );
    }
    assert_eq!(steps.len(), 11);
    assert_eq!(out.code, 0, "{}", out.stderr);
    served.stop().await;
}

/// Documented form: the `traceid` trigger — a trace started elsewhere, its
/// ID from a variable (`id: ${var:TRACE_ID}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceid_trigger_waits_for_a_trace_started_elsewhere() {
    let served = Served::start("100ms").await;
    let reporter = Reporter::new(served.otlp_http);
    let dir = tempfile::tempdir().expect("tempdir");
    let trace_id = format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(1..));
    let vars = write(
        dir.path(),
        "vars.yaml",
        &format!("type: VariableSet\nspec:\n  id: v\n  values:\n    - key: TRACE_ID\n      value: {trace_id}\n"),
    );
    let test = write(
        dir.path(),
        "traceid.yaml",
        "type: Test\nspec:\n  id: nightly-job\n  name: a job started by cron\n  trigger:\n    type: traceid\n    traceid:\n      id: ${var:TRACE_ID}\n  specs:\n    - selector: span[name = \"nightly job\"]\n      assertions:\n        - attr:job.items = 12\n",
    );
    let run = tracecheck_async(vec![
        "test".into(),
        "run".into(),
        "--file".into(),
        s(&test),
        "--vars".into(),
        s(&vars),
        "--server".into(),
        served.admin.clone(),
        "--timeout".into(),
        "20s".into(),
    ]);
    let runner = tokio::spawn(run);
    // The flow starts elsewhere, after the runner began waiting.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    reporter
        .send(&[SpanOut {
            trace_id: &trace_id,
            span_id: span_id(),
            parent: None,
            name: "nightly job",
            kind: 1,
            offset_ms: 0,
            attrs: vec![("job.items", json!(12))],
        }])
        .await;
    let out = bounded(LIMIT, runner).await.expect("runner task");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&trace_id), "{}", out.stdout);
    served.stop().await;
}

/// The wait parameter of the trace API, as a script would use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_api_wait_answers_once_the_trace_is_complete() {
    let served = Served::start("30s").await;
    let reporter = Reporter::new(served.otlp_http);
    let trace_id = format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(1..));
    let client = tracecheck::net::client::plain(std::time::Duration::ZERO);
    let url = format!("{}/api/v1/traces/{trace_id}", served.admin);
    let r = client
        .get(format!("{url}?wait=0s"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 404, "nothing yet");
    reporter
        .send(&[SpanOut {
            trace_id: &trace_id,
            span_id: span_id(),
            parent: None,
            name: "root",
            kind: 2,
            offset_ms: 0,
            attrs: vec![],
        }])
        .await;
    let started = std::time::Instant::now();
    let answer = body_json(
        client
            .get(format!("{url}?wait=20s&format=otlp"))
            .send()
            .await
            .expect("GET wait"),
    )
    .await;
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["span_count"], 1);
    assert!(answer["otlp"]["resourceSpans"].is_array(), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Without models the store keeps nothing; the watched copy still answers.
    let plain = body_json(client.get(&url).send().await.expect("GET")).await;
    assert_eq!(plain["state"], "complete", "{plain}");
    served.stop().await;
}
