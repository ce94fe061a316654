#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::model;

// === fixtures ===

const TRACE: [u8; 16] = [0xab; 16];

fn sv(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}
fn iv(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}
fn fv(x: f64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::DoubleValue(x)),
    }
}
fn bv(b: bool) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BoolValue(b)),
    }
}
fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(v),
        ..Default::default()
    }
}

/// A span with id `id` (one byte repeated), times in milliseconds.
fn sp(id: u8, parent: Option<u8>, name: &str, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.to_string(),
        kind: 1,
        start_time_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
        ..Default::default()
    }
}

trait SpanExt {
    fn attr(self, k: &str, v: AnyValue) -> Self;
    fn kind(self, k: i32) -> Self;
    fn status(self, code: i32, msg: &str) -> Self;
}

impl SpanExt for Span {
    fn attr(mut self, k: &str, v: AnyValue) -> Self {
        self.attributes.push(kv(k, v));
        self
    }
    fn kind(mut self, k: i32) -> Self {
        self.kind = k;
        self
    }
    fn status(mut self, code: i32, msg: &str) -> Self {
        self.status = Some(Status {
            code,
            message: msg.to_string(),
        });
        self
    }
}

fn rs(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", sv(service)),
                kv("deployment.environment", sv("prod")),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn trace_of(resource_spans: Vec<ResourceSpans>) -> Trace {
    let mut t = Trace::from_resource_spans(&resource_spans);
    assert_eq!(t.len(), 1);
    t.remove(0)
}

/// A checkout: POST /checkout (server, 200) > GetCart (rpc) > HGET x2
/// (redis), Charge (payment, error), orders publish > orders process.
fn checkout() -> Trace {
    trace_of(vec![
        rs(
            "frontend",
            vec![sp(1, None, "POST /checkout", 0, 400)
                .kind(2)
                .attr("http.request.method", sv("POST"))
                .attr("http.response.status_code", iv(200))
                .attr("http.route", sv("/checkout"))
                .attr("deployment.environment", sv("canary"))],
        ),
        rs(
            "cart",
            vec![
                sp(2, Some(1), "GetCart", 5, 35)
                    .kind(3)
                    .attr("rpc.system", sv("grpc")),
                sp(3, Some(2), "HGET", 10, 12)
                    .kind(3)
                    .attr("db.system.name", sv("redis"))
                    .attr("server.port", iv(6379)),
                sp(4, Some(2), "HGET", 13, 15)
                    .kind(3)
                    .attr("db.system", sv("redis")),
            ],
        ),
        rs(
            "payment",
            vec![sp(5, Some(1), "Charge", 40, 160)
                .kind(2)
                .attr("rpc.system", sv("grpc"))
                .attr("app.payment.amount", fv(42.5))
                .attr("app.payment.currency", sv("EUR"))
                .attr("app.retry", bv(false))
                .attr("app.count_str", sv("500"))
                .attr(
                    "app.items",
                    AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![sv("a"), sv("b"), sv("c")],
                        })),
                    },
                )
                .attr(
                    "app.meta",
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![kv("region", sv("eu")), kv("priority", iv(2))],
                        })),
                    },
                )
                .attr(
                    "app.body",
                    sv(r#"{"id": 52, "tags": ["x", "y"], "name": "pikachu"}"#),
                )
                .status(2, "card declined")],
        ),
        rs(
            "checkout",
            vec![
                sp(6, Some(1), "orders publish", 200, 204)
                    .kind(4)
                    .attr("messaging.system", sv("kafka")),
                {
                    let mut s = sp(7, Some(6), "orders process", 300, 350)
                        .kind(5)
                        .attr("messaging.system", sv("kafka"))
                        .status(1, "");
                    s.events.push(Event {
                        name: "exception".to_string(),
                        time_unix_nano: 1_700_000_000_310_000_000,
                        attributes: vec![kv("exception.message", sv("boom"))],
                        ..Default::default()
                    });
                    s
                },
                sp(8, Some(1), "lambda", 360, 370).attr("faas.trigger", sv("http")),
                sp(9, Some(1), "git", 370, 380).attr("process.command", sv("git")),
                sp(10, Some(1), "GET /legacy", 380, 390).attr("http.method", sv("GET")),
            ],
        ),
    ])
}

fn engine(yaml: &str) -> Engine {
    let docs = model::load_str("test.yaml", yaml).unwrap_or_else(|e| panic!("{e:#?}"));
    Engine::compile(model::models(&docs)).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn verdict_of(yaml: &str, trace: &Trace) -> ModelVerdict {
    let e = engine(yaml);
    let mut v = e.evaluate(trace, &EvalContext::default());
    assert_eq!(v.len(), 1);
    v.remove(0)
}

/// A model with one spec: `selector` and `assertion`.
fn spec_model(selector: &str, assertion: &str) -> String {
    format!(
        "type: Model\nspec:\n  id: m\n  specs:\n    - selector: '{}'\n      assertions:\n        - '{}'\n",
        selector.replace('\'', "''"),
        assertion.replace('\'', "''")
    )
}

fn holds(selector: &str, assertion: &str) -> bool {
    let v = verdict_of(&spec_model(selector, assertion), &checkout());
    assert_ne!(v.verdict, Verdict::Skip);
    v.verdict == Verdict::Pass
}

/// `check!(name, selector, assertion, passes)`: one assertion on the checkout trace.
macro_rules! check {
    ($name:ident, $sel:expr, $assertion:expr, $pass:expr) => {
        #[test]
        fn $name() {
            assert_eq!(holds($sel, $assertion), $pass, "{} on {}", $assertion, $sel);
        }
    };
}

/// `selects!(name, selector, [span names in start order])`.
macro_rules! selects {
    ($name:ident, $sel:expr, [$($n:expr),*]) => {
        #[test]
        fn $name() {
            assert_eq!(selected_names($sel), vec![$($n),*] as Vec<&str>, "{}", $sel);
        }
    };
}

/// The spans `selector` selects in `t`, with no deadline.
fn select_in(t: &Trace, selector: &str) -> Vec<SpanIndex> {
    let yaml = format!(
        "type: Model\nspec:\n  id: m\n  outputs:\n    - name: X\n      selector: '{}'\n      value: attr:name\n",
        selector.replace('\'', "''")
    );
    let e = engine(&yaml);
    let cache = eval::KeyCache::new(e.keys.names.len());
    let ctx = EvalContext::default();
    let env = Env {
        trace: t,
        names: &e.keys.names,
        cache: &cache,
        ctx: &ctx,
        outputs: &[],
        selected: 0,
    };
    let sel = e.compiled[0].outputs[0].selector.as_ref().unwrap();
    env.select(sel).into_vec()
}

fn selected_names(selector: &str) -> Vec<String> {
    names_selected_in(&checkout(), selector)
}

fn names_selected_in(t: &Trace, selector: &str) -> Vec<String> {
    select_in(t, selector)
        .into_iter()
        .map(|i| t.span_info(i).unwrap().name)
        .collect()
}

// === trace building ===

#[test]
fn groups_by_trace_id_and_orders_by_start() {
    let mut other = sp(1, None, "other", 0, 1);
    other.trace_id = vec![0xcd; 16];
    let mut bad = sp(2, None, "bad id", 0, 1);
    bad.trace_id = vec![1, 2, 3];
    let traces = Trace::from_resource_spans(&[rs(
        "svc",
        vec![
            sp(2, Some(1), "late", 50, 60),
            other,
            sp(1, None, "early", 10, 70),
            bad,
        ],
    )]);
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0].trace_id().to_string(), "ab".repeat(16));
    assert_eq!(traces[0].span_info(0).unwrap().name, "early");
    assert_eq!(traces[0].span_info(1).unwrap().name, "late");
    assert_eq!(traces[1].len(), 1);
}

/// A span id sent twice names the later span (in start-time order), as
/// the last write wins: for lookups and for its children's parent links.
#[test]
fn a_repeated_span_id_names_the_later_span() {
    let t = trace_of(vec![rs(
        "svc",
        vec![
            sp(3, Some(1), "child", 30, 40),
            sp(1, None, "second", 20, 50),
            sp(1, None, "first", 10, 60),
            sp(2, None, "other", 0, 5),
        ],
    )]);
    let id = SpanId::from_slice(&[1; 8]).unwrap();
    let named = |i: SpanIndex| t.span_info(i).unwrap().name;
    assert_eq!(named(t.span_index(id).unwrap()), "second");
    assert_eq!(t.spans_named("first").len(), 1);
    assert_eq!(t.spans_named("nothing"), &[] as &[SpanIndex]);
    let m = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span[name = \"second\"] > span[name = \"child\"]\n";
    assert_eq!(verdict_of(m, &t).verdict, Verdict::Pass);
    let m = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span[name = \"first\"] > span[name = \"child\"]\n";
    assert_eq!(verdict_of(m, &t).verdict, Verdict::Fail);
}

#[test]
fn parent_cycles_do_not_hang() {
    let t = trace_of(vec![rs(
        "svc",
        vec![sp(1, Some(2), "a", 0, 1), sp(2, Some(1), "b", 1, 2)],
    )]);
    let m = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span[name = \"a\"] span[name = \"b\"]\n";
    let _ = verdict_of(m, &t);
}

// === attributes (spec §1) ===
check!(
    attr_span_attribute,
    r#"span[name = "Charge"]"#,
    r#"attr:app.payment.currency = "EUR""#,
    true
);
check!(
    attr_resource_attribute,
    r#"span[name = "Charge"]"#,
    r#"attr:deployment.environment = "prod""#,
    true
);
check!(
    attr_span_wins_over_resource,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:deployment.environment = "canary""#,
    true
);
check!(
    attr_name,
    r#"span[name = "Charge"]"#,
    r#"attr:name = "Charge""#,
    true
);
check!(
    attr_tracetest_name,
    r#"span[name = "Charge"]"#,
    r#"attr:tracetest.span.name = "Charge""#,
    true
);
check!(
    attr_kind_server,
    r#"span[name = "Charge"]"#,
    r#"attr:kind = "server""#,
    true
);
check!(
    attr_kind_client,
    r#"span[name = "GetCart"]"#,
    r#"attr:tracetest.span.kind = "client""#,
    true
);
check!(
    attr_kind_producer,
    r#"span[name = "orders publish"]"#,
    r#"attr:kind = "producer""#,
    true
);
check!(
    attr_kind_consumer,
    r#"span[name = "orders process"]"#,
    r#"attr:kind = "consumer""#,
    true
);
check!(
    attr_kind_internal,
    r#"span[name = "lambda"]"#,
    r#"attr:kind = "internal""#,
    true
);
check!(
    attr_status_error,
    r#"span[name = "Charge"]"#,
    r#"attr:status = "error""#,
    true
);
check!(
    attr_status_ok,
    r#"span[name = "orders process"]"#,
    r#"attr:tracetest.span.status = "ok""#,
    true
);
check!(
    attr_status_unset,
    r#"span[name = "GetCart"]"#,
    r#"attr:tracetest.span.status_code = "unset""#,
    true
);
check!(
    attr_status_message,
    r#"span[name = "Charge"]"#,
    r#"attr:status.message = "card declined""#,
    true
);
check!(
    attr_status_description,
    r#"span[name = "Charge"]"#,
    r#"attr:tracetest.span.status_description contains "declined""#,
    true
);
check!(
    attr_type_http_new,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:tracetest.span.type = "http""#,
    true
);
check!(
    attr_type_http_old,
    r#"span[name = "GET /legacy"]"#,
    r#"attr:tracetest.span.type = "http""#,
    true
);
check!(
    attr_type_rpc,
    r#"span[name = "GetCart"]"#,
    r#"attr:tracetest.span.type = "rpc""#,
    true
);
check!(
    attr_type_db_new,
    r#"span[name = "HGET"]:first"#,
    r#"attr:tracetest.span.type = "database""#,
    true
);
check!(
    attr_type_db_old,
    r#"span[name = "HGET"]:last"#,
    r#"attr:tracetest.span.type = "database""#,
    true
);
check!(
    attr_type_messaging,
    r#"span[name = "orders publish"]"#,
    r#"attr:tracetest.span.type = "messaging""#,
    true
);
check!(
    attr_type_faas,
    r#"span[name = "lambda"]"#,
    r#"attr:tracetest.span.type = "faas""#,
    true
);
check!(
    attr_type_exec,
    r#"span[name = "git"]"#,
    r#"attr:tracetest.span.type = "exec""#,
    true
);
check!(
    attr_duration,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.duration = 120ms",
    true
);
check!(
    attr_duration_lt,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.duration < 0.5s",
    true
);
check!(
    attr_duration_gt,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.duration > 2m",
    false
);
check!(
    attr_duration_ns_int,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.duration = 120000000",
    true
);
check!(
    attr_start_time,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.start_time = 1700000000040000000",
    true
);
check!(
    attr_end_time,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.end_time = 1700000000160000000",
    true
);
check!(
    attr_span_id,
    r#"span[name = "Charge"]"#,
    r#"attr:span_id = "0505050505050505""#,
    true
);
check!(
    attr_tracetest_span_id,
    r#"span[name = "Charge"]"#,
    r#"attr:tracetest.span.id = "0505050505050505""#,
    true
);
check!(
    attr_parent_id,
    r#"span[name = "Charge"]"#,
    r#"attr:parent_id = "0101010101010101""#,
    true
);
check!(
    attr_tracetest_parent_id,
    r#"span[name = "Charge"]"#,
    r#"attr:tracetest.span.parent_id = "0101010101010101""#,
    true
);
check!(
    attr_root_parent_id_empty,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:parent_id = """#,
    true
);
check!(
    attr_trace_id,
    r#"span[name = "Charge"]"#,
    r#"attr:trace_id = "abababababababababababababababab""#,
    true
);
check!(
    attr_service_name,
    r#"span[name = "Charge"]"#,
    r#"attr:service.name = "payment""#,
    true
);
check!(
    attr_events,
    r#"span[name = "orders process"]"#,
    r#"attr:events | json_path '$[0].attributes["exception.message"]' = "boom""#,
    true
);
check!(
    attr_events_name,
    r#"span[name = "orders process"]"#,
    r#"attr:events | json_path '$[0].name' = "exception""#,
    true
);
check!(
    attr_events_count,
    r#"span[name = "orders process"]"#,
    "attr:events | count = 1",
    true
);
/// `attr:span.events` is Tracetest's JSON text (server/traces/
/// span_entitiess.go): the Pokeshop quick start's `not-contains
/// "exception"` is a text search. (selector, assertion, holds) on the
/// checkout trace, whose `orders process` has an exception event.
const SPAN_EVENTS_CASES: &[(&str, &str, bool)] = &[
    (
        r#"span[name = "Charge"]"#,
        r#"attr:span.events not-contains "exception""#,
        true,
    ),
    (
        r#"span[name = "orders process"]"#,
        r#"attr:span.events not-contains "exception""#,
        false,
    ),
    (
        r#"span[name = "Charge"]"#,
        r#"attr:span.events = "[]""#,
        true,
    ),
    (
        r#"span[name = "orders process"]"#,
        r#"attr:span.events | json_path '$[0].name' = "exception""#,
        true,
    ),
    (
        r#"span[name = "orders process"]"#,
        r#"attr:span.events | json_path '$[0].attributes["exception.message"]' = "boom""#,
        true,
    ),
    (
        r#"span[span.events contains "boom"]"#,
        r#"attr:name = "orders process""#,
        true,
    ),
];

#[test]
fn span_events_as_tracetest_reads_them() {
    for (selector, assertion, pass) in SPAN_EVENTS_CASES {
        assert_eq!(
            holds(selector, assertion),
            *pass,
            "{assertion} on {selector}"
        );
    }
}

#[test]
fn span_events_text_is_tracetests() {
    // TestEventsAreInjectedIntoAttributes (server/traces/traces_test.go),
    // with the timestamp Tracetest writes and values as strings.
    let mut s = sp(1, None, "Root", 0, 10);
    for (name, key, time) in [
        ("event 1", "attribute1", 1_700_000_000_000_000_000),
        ("event 2", "attribute2", 0),
    ] {
        s.events.push(Event {
            name: name.to_string(),
            time_unix_nano: time,
            attributes: vec![kv(key, sv("value")), kv("n", iv(3)), kv("n", iv(4))],
            ..Default::default()
        });
    }
    let t = trace_of(vec![rs("svc", vec![s, sp(2, Some(1), "child", 1, 2)])]);
    assert_eq!(
        t.span_events_text(0),
        Value::str(concat!(
            r#"[{"name":"event 1","timestamp":"2023-11-14T22:13:20Z","attributes":{"attribute1":"value","n":"4"}},"#,
            r#"{"name":"event 2","timestamp":"0001-01-01T00:00:00Z","attributes":{"attribute2":"value","n":"4"}}]"#
        ))
    );
    assert_eq!(t.span_events_text(1), Value::str("[]"));
}

#[test]
fn span_events_kept_for_an_engine_that_reads_them() {
    use prost::Message as _;
    let e = engine(&spec_model(
        r#"span[name = "orders process"]"#,
        r#"attr:span.events contains "boom""#,
    ));
    let mut b = TraceBuilder::keeping(crate::ids::TraceId(TRACE), e.key_set().clone());
    let mut s = sp(7, None, "orders process", 0, 1);
    s.events.push(Event {
        name: "exception".to_string(),
        attributes: vec![kv("exception.message", sv("boom"))],
        ..Default::default()
    });
    b.add_encoded(&[], &s.encode_to_vec()).unwrap();
    let v = e.evaluate(&b.build(), &EvalContext::default());
    assert_eq!(v[0].verdict, Verdict::Pass);
}

check!(
    attr_selected_count,
    "span[tracetest.span.type = \"database\"]",
    "attr:tracetest.selected_spans.count = 2",
    true
);
check!(
    attr_missing_fails,
    r#"span[name = "Charge"]"#,
    r#"attr:app.nonexistent = "x""#,
    false
);
check!(
    attr_missing_fails_ne_too,
    r#"span[name = "Charge"]"#,
    r#"attr:app.nonexistent != "x""#,
    false
);

// === operators and coercion ===
check!(
    op_eq_int,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code = 200",
    true
);
check!(
    op_eq_int_as_string_literal,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:http.response.status_code = "200""#,
    true
);
check!(
    op_string_attr_vs_number,
    r#"span[name = "Charge"]"#,
    "attr:app.count_str = 500",
    true
);
check!(
    op_string_attr_lt_number,
    r#"span[name = "Charge"]"#,
    "attr:app.count_str < 1000",
    true
);
check!(
    op_unparseable_string_vs_number,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.currency = 500",
    false
);
check!(
    op_unparseable_string_lt_number,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.currency < 500",
    false
);
check!(
    op_ne,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code != 500",
    true
);
check!(
    op_lt,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code < 500",
    true
);
check!(
    op_le,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code <= 200",
    true
);
check!(
    op_gt,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code > 200",
    false
);
check!(
    op_ge,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code >= 200",
    true
);
check!(
    op_float_int,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.amount > 42",
    true
);
check!(
    op_float_float,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.amount = 42.5",
    true
);
check!(
    op_bool,
    r#"span[name = "Charge"]"#,
    "attr:app.retry = false",
    true
);
check!(
    op_bool_string,
    r#"span[name = "Charge"]"#,
    r#"attr:app.retry = "false""#,
    true
);
check!(
    op_contains_string,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:http.route contains "check""#,
    true
);
check!(
    op_not_contains_string,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:http.route not-contains "cart""#,
    true
);
check!(
    op_contains_array,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items contains "b""#,
    true
);
check!(
    op_contains_array_missing,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items contains "z""#,
    false
);
check!(
    op_contains_map_key,
    r#"span[name = "Charge"]"#,
    r#"attr:app.meta contains "region""#,
    true
);
check!(
    op_matches,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:http.route matches "^/check(out)?$""#,
    true
);
check!(
    op_matches_fails,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:http.route matches "^/cart""#,
    false
);
check!(
    op_array_eq_json,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items = '["a","b","c"]'"#,
    true
);
check!(
    op_string_lexicographic,
    r#"span[name = "Charge"]"#,
    r#"attr:app.payment.currency < "USD""#,
    true
);
check!(
    op_lhs_literal,
    r#"span[name = "Charge"]"#,
    r#""EUR" = attr:app.payment.currency"#,
    true
);

// === arithmetic and interpolation ===
check!(
    arith_int,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code = 100 + 100",
    true
);
check!(
    arith_precedence,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code = 2 + 2 * 99",
    true
);
check!(
    arith_division,
    r#"span[name = "POST /checkout"]"#,
    "attr:http.response.status_code / 2 = 100",
    true
);
check!(
    arith_float,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.amount * 2 = 85",
    true
);
check!(
    arith_duration,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.duration = 100ms + 20ms",
    true
);
check!(
    arith_duration_scale,
    r#"span[name = "Charge"]"#,
    "attr:tracetest.span.duration * 2 = 240ms",
    true
);
check!(
    arith_div_zero_fails,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.amount / 0 = 1",
    false
);
check!(
    interp_attr,
    r#"span[name = "Charge"]"#,
    r#"attr:status.message = "card ${"declined"}""#,
    true
);
check!(
    interp_single_quoted,
    r#"span[name = "Charge"]"#,
    r#"attr:status.message = 'card ${"declined"}'"#,
    true
);
check!(
    interp_number,
    r#"span[name = "POST /checkout"]"#,
    r#"attr:http.route = "/${"check"}out""#,
    true
);

// === filters ===
check!(
    filter_json_path,
    r#"span[name = "Charge"]"#,
    "attr:app.body | json_path '$.id' = 52",
    true
);
check!(
    filter_json_path_string,
    r#"span[name = "Charge"]"#,
    r#"attr:app.body | json_path '$.name' = "pikachu""#,
    true
);
check!(
    filter_json_path_map,
    r#"span[name = "Charge"]"#,
    "attr:app.meta | json_path '$.priority' = 2",
    true
);
check!(
    filter_json_path_many_count,
    r#"span[name = "Charge"]"#,
    "attr:app.body | json_path '$.tags[*]' | count = 2",
    true
);
check!(
    filter_json_path_not_json_fails,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.currency | json_path '$.x' = 1",
    false
);
check!(
    filter_regex,
    r#"span[name = "Charge"]"#,
    r#"attr:status.message | regex 'dec\w+' = "declined""#,
    true
);
check!(
    filter_regex_group,
    r#"span[name = "Charge"]"#,
    r#"attr:app.body | regex_group '"id": (\d+)' = 52"#,
    true
);
check!(
    filter_count_array,
    r#"span[name = "Charge"]"#,
    "attr:app.items | count = 3",
    true
);
check!(
    filter_count_scalar,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.currency | count = 1",
    true
);
check!(
    filter_get_index,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items | get_index 1 = "b""#,
    true
);
check!(
    filter_get_index_last,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items | get_index 'last' = "c""#,
    true
);
check!(
    filter_get_index_out_of_range,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items | get_index 9 = "c""#,
    false
);
check!(
    filter_first,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items | first = "a""#,
    true
);
check!(
    filter_last,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items | last = "c""#,
    true
);
check!(
    filter_type_string,
    r#"span[name = "Charge"]"#,
    r#"attr:app.payment.currency | type = "string""#,
    true
);
check!(
    filter_type_number,
    r#"span[name = "Charge"]"#,
    r#"attr:app.payment.amount | type = "number""#,
    true
);
check!(
    filter_type_array,
    r#"span[name = "Charge"]"#,
    r#"attr:app.items | type = "array""#,
    true
);
// Tracetest's `length` counts the items of a list, the bytes of a string.
check!(
    filter_length_string,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.currency | length = 3",
    true
);
check!(
    filter_length_single_number,
    r#"span[name = "Charge"]"#,
    "attr:app.payment.amount | length = 1",
    true
);
check!(
    filter_type_json_text,
    r#"span[name = "Charge"]"#,
    r#"attr:app.body | type = "json""#,
    true
);
check!(
    filter_type_map,
    r#"span[name = "Charge"]"#,
    r#"attr:app.meta | type = "json""#,
    true
);
check!(
    json_contains_subset_of_attribute,
    r#"span[name = "Charge"]"#,
    r#"attr:app.body contains '{"name": "pikachu", "tags": ["x", "y"]}'"#,
    true
);
check!(
    json_not_contains_is_the_negation,
    r#"span[name = "Charge"]"#,
    r#"attr:app.body not-contains '{"name": "raichu"}'"#,
    true
);
check!(
    json_contains_of_a_map_attribute,
    r#"span[name = "Charge"]"#,
    r#"attr:app.meta contains '{"region": "eu"}'"#,
    true
);
check!(
    filter_length_array,
    r#"span[name = "Charge"]"#,
    "attr:app.items | length = 3",
    true
);

/// The rule of Tracetest's `jsonContains` (`server/assertions/comparator/
/// basic.go`, which has no unit test of its own), case by case: (actual,
/// expected, what Tracetest answers).
const TRACETEST_JSON_CONTAINS_CASES: &[(&str, &str, bool)] = &[
    (r#"{"a": 1, "b": 2}"#, r#"{"a": 1}"#, true),
    (r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#, false),
    (r#"{"a": {"b": 1, "c": 2}}"#, r#"{"a": {"c": 2}}"#, true),
    (r#"[{"a": 1}, {"b": 2}]"#, r#"{"b": 2}"#, true),
    (r#"[{"a": 1}, {"b": 2}]"#, r#"[{"a": 1}, {"c": 3}]"#, false),
    (r#"{"a": 1.0}"#, r#"{"a": 1}"#, true),
    (
        r#"{"a": [{"x": 1, "y": 2}]}"#,
        r#"{"a": [{"y": 2, "x": 1}]}"#,
        true,
    ),
];

#[test]
fn tracetest_json_contains_cases_agree() {
    for (actual, expected, holds) in TRACETEST_JSON_CONTAINS_CASES {
        assert_eq!(
            value::contains(&Value::str(actual), &Value::str(expected)),
            *holds,
            "{actual} contains {expected}"
        );
    }
}

/// The moment the generator tests run at: 2026-03-07T09:05:03.120Z.
const GENERATOR_NOW: u64 = 1_772_874_303_120_000_000;

/// Whether `statement` holds on one span at [`GENERATOR_NOW`] for every
/// seed of a few dozen: generated values must not pass by luck.
fn holds_for_every_seed(statement: &str) -> Result<(), String> {
    let e = engine(&spec_model(r#"span[name = "s"]"#, statement));
    let trace = trace_of(vec![rs("svc", vec![sp(1, None, "s", 0, 1)])]);
    for seed in 0..64u64 {
        let ctx = EvalContext {
            now_unix_nanos: GENERATOR_NOW,
            seed: seed.wrapping_mul(0x1234_5678_9abc_def1),
            ..EvalContext::default()
        };
        let v = e.evaluate(&trace, &ctx).remove(0);
        if v.verdict != Verdict::Pass {
            return Err(format!("seed {seed}: {:?}", v.failures));
        }
    }
    Ok(())
}

/// Every generator function, with the shape of what it gives (the values
/// are random, so only their form is checked, as in Tracetest's tests).
const GENERATOR_SHAPES: &[(&str, &str)] = &[
    (
        "uuid()",
        "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
    ),
    ("firstName()", "^[A-Z][a-z]+$"),
    ("lastName()", "^[A-Z][a-z]+$"),
    ("fullName()", "^[A-Z][a-z]+ [A-Z][a-z]+$"),
    ("email()", r"^[a-z]+@[a-z]+\.[a-z]+$"),
    ("phone()", r"^\d{10}$"),
    ("date()", r"^\d{4}-\d{2}-\d{2}$"),
    ("dateTime()", r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"),
    (r#"date("DD/MM/YYYY")"#, r"^\d{2}/\d{2}/\d{4}$"),
    (
        r#"dateTime("YYYY-MM-DD hh:mm:ss")"#,
        r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
    ),
    ("creditCard()", r"^(4\d{15}|5[1-5]\d{14}|3[47]\d{13})$"),
    ("creditCardCvv()", r"^\d{3}$"),
    ("creditCardExpDate()", r"^(0[1-9]|1[0-2])/(2[7-9]|3[0-6])$"),
    ("randomInt(1, 100)", r"^([1-9]|[1-9]\d|100)$"),
    ("randomInt(-5, -5)", r"^-5$"),
    (r#""id-${uuid()}" | length"#, "^39$"),
];

#[test]
fn generator_functions_give_values_of_their_shape() {
    for (expr, shape) in GENERATOR_SHAPES {
        let statement = format!("{expr} matches \"{}\"", shape.replace('\\', "\\\\"));
        assert_eq!(holds_for_every_seed(&statement), Ok(()), "{statement}");
    }
}

/// The triggers of `test run` render `${...}` with the same functions.
#[test]
fn templates_call_generator_functions() {
    let doc = "type: Test\nspec:\n  name: t\n  trigger:\n    type: http\n    httpRequest:\n      url: http://localhost/${uuid()}/${randomInt(3, 3)}\n      method: GET\n";
    let docs = model::load_str("t.yaml", doc).unwrap_or_else(|e| panic!("{e:#?}"));
    let Some(model::Document::Test(t)) = docs.first() else {
        panic!("not a test: {docs:#?}");
    };
    let Some(model::Trigger::Http(h)) = &t.trigger else {
        panic!("not an http trigger");
    };
    let ctx = EvalContext {
        seed: 9,
        ..EvalContext::default()
    };
    let url = render_template(&h.url, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let re =
        regex::Regex::new("^http://localhost/[0-9a-f-]{36}/3$").unwrap_or_else(|e| panic!("{e}"));
    assert!(re.is_match(&url), "{url}");
}

// === selectors ===
selects!(
    sel_all_empty,
    "",
    [
        "POST /checkout",
        "GetCart",
        "HGET",
        "HGET",
        "Charge",
        "orders publish",
        "orders process",
        "lambda",
        "git",
        "GET /legacy"
    ]
);
selects!(
    sel_all_span,
    "span",
    [
        "POST /checkout",
        "GetCart",
        "HGET",
        "HGET",
        "Charge",
        "orders publish",
        "orders process",
        "lambda",
        "git",
        "GET /legacy"
    ]
);
selects!(sel_by_name, r#"span[name = "HGET"]"#, ["HGET", "HGET"]);
selects!(
    sel_ne,
    r#"span[tracetest.span.type = "database" name != "HGET"]"#,
    []
);
selects!(
    sel_contains,
    r#"span[name contains "orders"]"#,
    ["orders publish", "orders process"]
);
selects!(
    sel_not_contains,
    r#"span[service.name = "checkout" name not-contains "orders"]"#,
    ["lambda", "git", "GET /legacy"]
);
selects!(
    sel_matches,
    r#"span[name matches "^(GET|POST) "]"#,
    ["POST /checkout", "GET /legacy"]
);
selects!(sel_number, "span[server.port = 6379]", ["HGET"]);
selects!(
    sel_duration,
    "span[tracetest.span.duration >= 100ms]",
    ["POST /checkout", "Charge"]
);
selects!(
    sel_resource_attr,
    r#"span[service.name = "cart"]"#,
    ["GetCart", "HGET", "HGET"]
);
selects!(
    sel_descendant,
    r#"span[name = "POST /checkout"] span[name = "HGET"]"#,
    ["HGET", "HGET"]
);
selects!(
    sel_descendant_none,
    r#"span[name = "Charge"] span[name = "HGET"]"#,
    []
);
selects!(
    sel_child,
    r#"span[name = "POST /checkout"] > span[tracetest.span.type = "rpc"]"#,
    ["GetCart", "Charge"]
);
selects!(
    sel_child_not_grandchild,
    r#"span[name = "POST /checkout"] > span[name = "HGET"]"#,
    []
);
selects!(
    sel_sibling,
    r#"span[name = "GetCart"] ~ span[kind = "server"]"#,
    ["Charge"]
);
selects!(
    sel_sibling_same_name,
    r#"span[name = "HGET"] ~ span[name = "HGET"]"#,
    ["HGET", "HGET"]
);
selects!(
    sel_union,
    r#"span[name = "lambda"], span[name = "Charge"]"#,
    ["Charge", "lambda"]
);
selects!(
    sel_union_dedup,
    r#"span[name = "Charge"], span[name = "Charge"]"#,
    ["Charge"]
);
selects!(
    sel_first,
    r#"span[service.name = "checkout"]:first"#,
    ["orders publish"]
);
selects!(
    sel_last,
    r#"span[service.name = "checkout"]:last"#,
    ["GET /legacy"]
);
selects!(
    sel_nth_child,
    r#"span[service.name = "checkout"]:nth_child(3)"#,
    ["lambda"]
);
selects!(
    sel_nth_child_out_of_range,
    r#"span[service.name = "checkout"]:nth_child(30)"#,
    []
);
selects!(
    sel_pseudo_mid_path,
    r#"span[name = "GetCart"]:first span[name = "HGET"]:last"#,
    ["HGET"]
);
selects!(sel_env_value, r#"span[name = env:NOPE]"#, []);

/// R > A1 > {B1, B2 > C2}, R > A2 > {B3 > C3, B4}, children starting in
/// that order: two parents with two children each, where the first child
/// under A1 has none of its own.
fn nested_parents() -> Trace {
    trace_of(vec![rs(
        "svc",
        vec![
            sp(1, None, "R", 0, 100),
            sp(2, Some(1), "A1", 1, 50),
            sp(3, Some(2), "B1", 2, 10),
            sp(4, Some(2), "B2", 5, 20),
            sp(8, Some(4), "C2", 8, 9),
            sp(5, Some(1), "A2", 3, 60),
            sp(6, Some(5), "B3", 4, 30),
            sp(9, Some(6), "C3", 9, 10),
            sp(7, Some(5), "B4", 6, 40),
        ],
    )])
}

/// A pseudo-class after the first step picks per span of the step before,
/// as Tracetest's `filterSpans` (`server/assertions/selectors/search.go`)
/// does: its recursion applies a step's pseudo-class to what the rest of
/// the path finds under one parent span. Expected spans worked out by
/// hand with that algorithm.
#[test]
fn pseudo_classes_pick_per_parent() {
    let t = nested_parents();
    for (selector, want) in [
        (
            r#"span[name contains "A"] span[name contains "B"]:first"#,
            vec!["B1", "B3"],
        ),
        (
            r#"span[name contains "A"] span[name contains "B"]:last"#,
            vec!["B2", "B4"],
        ),
        (
            r#"span[name contains "A"] span[name contains "B"]:nth_child(2)"#,
            vec!["B2", "B4"],
        ),
        (
            r#"span[name contains "A"] span[name contains "B"]:nth_child(3)"#,
            vec![],
        ),
        // One parent: the same as across all.
        (
            r#"span[name = "R"] span[name contains "B"]:first"#,
            vec!["B1"],
        ),
        // The first step's pseudo-class still picks among its own spans.
        (
            r#"span[name contains "A"]:first span[name contains "B"]:last"#,
            vec!["B2"],
        ),
        // Tracetest applies B's :first to the C spans found under each A
        // (through any B), not to the Bs: B1 has no C, yet A1 gives C2.
        (
            r#"span[name contains "A"] span[name contains "B"]:first span[name contains "C"]"#,
            vec!["C2", "C3"],
        ),
        (
            r#"span[name contains "A"] span[name contains "B"] span[name contains "C"]:last"#,
            vec!["C2", "C3"],
        ),
        // Per span under R, the first span below it: A1 gives B1, B2
        // gives C2, A2 gives B3, B3 gives C3. (Tracetest's search starts
        // at the parent itself, so its :first is the parent, removed: none.)
        (
            r#"span[name = "R"] span span:first"#,
            vec!["B1", "B3", "C2", "C3"],
        ),
        (r#"span[name = "R"] > span > span:last"#, vec!["B2", "B4"]),
        // The middle :first picks among what the path finds under R (B1
        // to B4), not among R's children.
        (r#"span[name = "R"] > span:first > span"#, vec!["B1"]),
        (
            r#"span[name contains "B"] ~ span:first"#,
            vec!["B1", "B3", "B2", "B4"],
        ),
        (r#"span[name = "B1"] ~ span:first"#, vec!["B2"]),
        (
            r#"span[name contains "A"] > span[name contains "C"]:first"#,
            vec![],
        ),
    ] {
        assert_eq!(names_selected_in(&t, selector), want, "{selector}");
    }
}

/// A walk up the ancestors of the per-parent evaluation accounts for its
/// hops: past the deadline the selection is empty, never partial.
#[test]
fn per_parent_selection_stops_at_the_deadline() {
    let t = nested_parents();
    let yaml = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: 'span[name = \"R\"] span span:first'\n";
    let e = engine(yaml);
    let cache = eval::KeyCache::expiring_after(e.keys.names.len(), 3);
    let ctx = EvalContext::default();
    let env = Env {
        trace: &t,
        names: &e.keys.names,
        cache: &cache,
        ctx: &ctx,
        outputs: &[],
        selected: 0,
    };
    let spec = &e.compiled[0].specs[0];
    assert!(env.select(&spec.selector).is_empty());
    assert!(env.out_of_budget());
}

// === verdict table (spec §4) ===

const WITHDRAW: &str = r#"type: Model
spec:
  id: overdraft
  match: span[name = "POST /withdraw"]
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
      selector: span[name = "POST /withdraw"]
      assertions:
        - attr:http.response.status_code = 500
  not_expect:
    - name: never commits
      selector: span[name = "commit"]
  alert:
    summary: "Overdraft committed for account ${attr:account.id} (${var:AMOUNT} > ${var:BALANCE})"
"#;

fn withdraw(balance: Option<i64>, amount: i64, status: i64, tail: &[&str]) -> Trace {
    let mut spans = vec![
        sp(1, None, "POST /withdraw", 0, 40)
            .kind(2)
            .attr("http.response.status_code", iv(status))
            .attr("account.id", sv("123")),
        sp(3, Some(1), "withdrawal", 8, 28).attr("amount", iv(amount)),
    ];
    if let Some(b) = balance {
        spans.push(sp(2, Some(1), "fetch-balance", 2, 7).attr("amount", iv(b)));
    }
    for (i, name) in tail.iter().enumerate() {
        spans.push(sp(
            10 + i as u8,
            Some(3),
            name,
            20 + i as u64,
            23 + i as u64,
        ));
    }
    trace_of(vec![rs("bank", spans)])
}

#[test]
fn verdict_pass() {
    let v = verdict_of(WITHDRAW, &withdraw(Some(300), 500, 500, &["rollback"]));
    assert_eq!(v.verdict, Verdict::Pass, "{v:#?}");
    assert!(v.failures.is_empty());
    assert!(!v.awaiting_spans);
}

#[test]
fn verdict_skip_when_match_selects_nothing() {
    let t = trace_of(vec![rs("x", vec![sp(1, None, "GET /", 0, 1)])]);
    let v = verdict_of(WITHDRAW, &t);
    assert_eq!(v.verdict, Verdict::Skip);
    assert_eq!(v.skip_reason.as_deref(), Some("match selected no span"));
}

#[test]
fn verdict_skip_when_match_without_precondition_selects_nothing() {
    let m = "type: Model\nspec:\n  id: m\n  match: span[kind = \"producer\" name contains \"x\"]\n  specs:\n    - selector: span\n";
    let v = verdict_of(m, &checkout());
    assert_eq!(v.verdict, Verdict::Skip);
}

#[test]
fn verdict_skip_when_needed_output_missing() {
    let v = verdict_of(WITHDRAW, &withdraw(None, 500, 200, &["commit"]));
    assert_eq!(v.verdict, Verdict::Skip);
    assert_eq!(v.skip_reason.as_deref(), Some("output BALANCE is missing"));
}

#[test]
fn verdict_skip_when_condition_false() {
    let v = verdict_of(WITHDRAW, &withdraw(Some(800), 120, 200, &["commit"]));
    assert_eq!(v.verdict, Verdict::Skip);
    assert_eq!(
        v.skip_reason.as_deref(),
        Some("when condition `var:BALANCE < var:AMOUNT` is false")
    );
}

#[test]
fn verdict_fail_on_assertion_and_not_expect() {
    let v = verdict_of(WITHDRAW, &withdraw(Some(300), 500, 200, &["commit"]));
    assert_eq!(v.verdict, Verdict::Fail);
    assert!(!v.awaiting_spans);
    let kinds: Vec<FailureKind> = v.failures.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        vec![
            FailureKind::NoSpan,
            FailureKind::Assertion,
            FailureKind::NotExpect
        ]
    );
    let a = &v.failures[1];
    assert_eq!(a.spec, "API answers 500");
    assert_eq!(
        a.assertion.as_deref(),
        Some("attr:http.response.status_code = 500")
    );
    assert_eq!(a.span_name.as_deref(), Some("POST /withdraw"));
    assert_eq!(a.service.as_deref(), Some("bank"));
    assert_eq!(
        a.span_id.map(|s| s.to_string()).as_deref(),
        Some("0101010101010101")
    );
    assert_eq!(a.observed.as_deref(), Some("200"));
    assert_eq!(a.expected.as_deref(), Some("500"));
    assert_eq!(
        a.message,
        "expected attr:http.response.status_code = 500, observed 200"
    );
    let n = &v.failures[2];
    assert_eq!(n.spec, "never commits");
    assert_eq!(n.span_name.as_deref(), Some("commit"));
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["failures"][0]["kind"], "no_span");
    assert_eq!(json["failures"][2]["kind"], "not_expect");
}

#[test]
fn verdict_fail_only_for_missing_span_is_awaiting() {
    let v = verdict_of(WITHDRAW, &withdraw(Some(300), 500, 500, &[]));
    assert_eq!(v.verdict, Verdict::Fail);
    assert!(v.awaiting_spans);
    assert_eq!(v.failures.len(), 1);
    assert_eq!(v.failures[0].spec, "rollback happens");
    assert_eq!(
        v.failures[0].message,
        r#"selector span[name = "rollback"] selected no span"#
    );
}

#[test]
fn verdict_not_expect_alone() {
    let m =
        "type: Model\nspec:\n  id: m\n  not_expect:\n    - selector: span[status = \"error\"]\n";
    let v = verdict_of(m, &checkout());
    assert_eq!(v.verdict, Verdict::Fail);
    assert_eq!(v.failures[0].kind, FailureKind::NotExpect);
    assert_eq!(v.failures[0].spec, r#"span[status = "error"]"#);
    let m = "type: Model\nspec:\n  id: m\n  not_expect:\n    - span[name = \"nope\"]\n";
    assert_eq!(verdict_of(m, &checkout()).verdict, Verdict::Pass);
}

#[test]
fn verdict_model_without_specs_passes() {
    let m = "type: Model\nspec:\n  id: m\n";
    assert_eq!(verdict_of(m, &checkout()).verdict, Verdict::Pass);
}

#[test]
fn assertion_must_hold_on_every_selected_span() {
    assert!(!holds(r#"span[name = "HGET"]"#, "attr:server.port = 6379"));
    assert!(holds(
        r#"span[name = "HGET"]"#,
        r#"attr:service.name = "cart""#
    ));
}

#[test]
fn count_assertions_hold_with_zero_spans() {
    let m = spec_model(
        r#"span[name = "nope"]"#,
        "attr:tracetest.selected_spans.count = 0",
    );
    assert_eq!(verdict_of(&m, &checkout()).verdict, Verdict::Pass);
    let m = spec_model(
        r#"span[name = "nope"]"#,
        "attr:tracetest.selected_spans.count = 1",
    );
    let v = verdict_of(&m, &checkout());
    assert_eq!(v.verdict, Verdict::Fail);
    assert!(v.awaiting_spans);
    let m = spec_model(
        r#"span[name = "HGET"]"#,
        "attr:tracetest.selected_spans.count = 1",
    );
    let v = verdict_of(&m, &checkout());
    assert_eq!(v.failures.len(), 1, "a count assertion is reported once");
    assert_eq!(v.failures[0].observed.as_deref(), Some("2"));
    assert!(!v.awaiting_spans);
}

#[test]
fn failures_per_assertion_are_capped() {
    let spans: Vec<Span> = (1..=30)
        .map(|i| sp(i, None, "x", u64::from(i), u64::from(i) + 1))
        .collect();
    let t = trace_of(vec![rs("s", spans)]);
    let v = verdict_of(&spec_model("span", "attr:name = \"y\""), &t);
    assert_eq!(v.failures.len(), verdict::MAX_FAILURES_PER_CHECK);
    assert!(
        v.failures[9]
            .message
            .ends_with("(20 more spans failed this assertion)"),
        "{}",
        v.failures[9].message
    );
}

#[test]
fn one_verdict_per_model_in_order() {
    let yaml = format!(
        "{WITHDRAW}---\n{}",
        spec_model("span", "attr:name != \"\"").replace("id: m", "id: second")
    );
    let e = engine(&yaml);
    let v = e.evaluate(&checkout(), &EvalContext::default());
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].model, v[0].verdict), (0, Verdict::Skip));
    assert_eq!((v[1].model, v[1].verdict), (1, Verdict::Pass));
    assert_eq!(e.index_of("second"), Some(1));
    assert_eq!(
        e.evaluate_model(1, &checkout(), &EvalContext::default())
            .unwrap()
            .verdict,
        Verdict::Pass
    );
}

#[test]
fn duplicate_ids_are_rejected_by_compile() {
    let docs = model::load_str("a.yaml", "type: Model\nspec:\n  id: x\n").unwrap();
    let mut models = model::models(&docs);
    models.push(models[0].clone());
    let errs = Engine::compile(models).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "a.yaml:3:7: duplicate model id 'x', first defined at a.yaml:3:7"
    );
}

// === variables ===

#[test]
fn env_and_vars_are_read_in_order() {
    let m = spec_model(
        r#"span[name = "Charge"]"#,
        "attr:app.payment.currency = env:CUR",
    );
    let e = engine(&m);
    let mut env = BTreeMap::new();
    env.insert("CUR".to_string(), "EUR".to_string());
    let mut vars = BTreeMap::new();
    let ctx = EvalContext {
        env: &env,
        vars: &vars,
        trigger_response: None,
        ..EvalContext::default()
    };
    assert_eq!(e.evaluate(&checkout(), &ctx)[0].verdict, Verdict::Pass);
    vars.insert("CUR".to_string(), "USD".to_string());
    let ctx = EvalContext {
        env: &env,
        vars: &vars,
        trigger_response: None,
        ..EvalContext::default()
    };
    assert_eq!(
        e.evaluate(&checkout(), &ctx)[0].verdict,
        Verdict::Fail,
        "vars win over env"
    );
    let v = e.evaluate(&checkout(), &EvalContext::default());
    assert_eq!(v[0].failures[0].message, "variable CUR is not defined");
}

#[test]
fn outputs_win_over_vars() {
    let m = "type: Model\nspec:\n  id: m\n  outputs:\n    - name: CUR\n      selector: span[name = \"Charge\"]\n      value: attr:app.payment.currency\n  specs:\n    - selector: span[name = \"Charge\"]\n      assertions: ['attr:app.payment.currency = var:CUR', 'attr:app.payment.currency = env:CUR']\n";
    let mut vars = BTreeMap::new();
    vars.insert("CUR".to_string(), "USD".to_string());
    let ctx = EvalContext {
        env: &vars,
        vars: &vars,
        trigger_response: None,
        ..EvalContext::default()
    };
    assert_eq!(
        engine(m).evaluate(&checkout(), &ctx)[0].verdict,
        Verdict::Pass
    );
}

/// Issue 21: Tracetest interpolates `${...}` in single-quoted strings too.
#[test]
fn single_quoted_strings_interpolate_variables() {
    let m = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span[name = \"Charge\"]\n      assertions:\n        - \"attr:app.payment.currency = '${env:CUR}'\"\n        - \"attr:status.message = 'card ${env:WORD}'\"\n";
    let mut vars = BTreeMap::new();
    vars.insert("CUR".to_string(), "EUR".to_string());
    vars.insert("WORD".to_string(), "declined".to_string());
    let mut ctx = EvalContext {
        env: &vars,
        vars: &vars,
        trigger_response: None,
        ..EvalContext::default()
    };
    assert_eq!(
        engine(m).evaluate(&checkout(), &ctx)[0].verdict,
        Verdict::Pass
    );
    let mut other = vars.clone();
    other.insert("CUR".to_string(), "USD".to_string());
    ctx.vars = &other;
    ctx.env = &other;
    assert_eq!(
        engine(m).evaluate(&checkout(), &ctx)[0].verdict,
        Verdict::Fail
    );
}

/// A trace of one span lasting `ns` nanoseconds.
fn one_span_of(ns: u64) -> Trace {
    let mut s = sp(1, None, "work", 0, 0);
    s.end_time_unix_nano = s.start_time_unix_nano + ns;
    trace_of(vec![rs("svc", vec![s])])
}

fn duration_holds(ns: u64, assertion: &str) -> bool {
    let m = spec_model(r#"span[name = "work"]"#, assertion);
    verdict_of(&m, &one_span_of(ns)).verdict == Verdict::Pass
}

/// Issue 21: durations compare as Tracetest compares them, each side
/// rounded to the unit of its size, and `200 ms` is a duration.
#[test]
fn durations_compare_rounded_as_tracetest_does() {
    assert!(duration_holds(
        120_400_000,
        "attr:tracetest.span.duration = 120ms"
    ));
    assert!(duration_holds(
        120_000_000,
        "attr:tracetest.span.duration = 120.4ms"
    ));
    assert!(!duration_holds(
        120_600_000,
        "attr:tracetest.span.duration = 120ms"
    ));
    assert!(duration_holds(
        120_600_000,
        "attr:tracetest.span.duration = 121ms"
    ));
    assert!(duration_holds(
        1_040_000_000,
        "attr:tracetest.span.duration = 1s"
    ));
    assert!(!duration_holds(
        1_060_000_000,
        "attr:tracetest.span.duration = 1s"
    ));
    // Rounded before ordering too: 499.6ms is 500ms.
    assert!(!duration_holds(
        499_600_000,
        "attr:tracetest.span.duration < 500ms"
    ));
    assert!(duration_holds(
        499_400_000,
        "attr:tracetest.span.duration < 500ms"
    ));
    // A space between number and unit.
    assert!(duration_holds(
        150_000_000,
        "attr:tracetest.span.duration < 200 ms"
    ));
    assert!(!duration_holds(
        250_000_000,
        "attr:tracetest.span.duration < 200 ms"
    ));
    // Before the operator too (a selector filter reads `5 m =` as an
    // attribute `m` compared, an assertion cannot).
    assert!(duration_holds(
        150_000_000,
        "150 ms = attr:tracetest.span.duration"
    ));
    assert!(!duration_holds(
        150_000_000,
        "200 ms = attr:tracetest.span.duration"
    ));
}

#[test]
fn tracetest_rounding_of_each_unit() {
    use super::value::tracetest_rounded;
    use std::time::Duration;
    let r = |ns: u64| tracetest_rounded(Duration::from_nanos(ns)).as_nanos() as u64;
    assert_eq!(r(999), 999);
    assert_eq!(r(1_499), 1_000);
    assert_eq!(r(120_400_000), 120_000_000);
    // Half to even, as Go's formatting.
    assert_eq!(r(2_500), 2_000);
    assert_eq!(r(3_500), 4_000);
    assert_eq!(r(1_540_000_000), 1_500_000_000);
    assert_eq!(r(61_000_000_000), 60_000_000_000);
    assert_eq!(r(90_000_000_000), 90_000_000_000);
    assert_eq!(r(5_400_000_000_000), 5_400_000_000_000);
}

/// Below a second the rounding is done in integers; it gives what the
/// float quotient rounded half to even (Go's `%.0f`) gives, on every
/// remainder around the ties and on a spread of other durations.
#[test]
fn tracetest_rounding_below_a_second_matches_the_float_quotient() {
    use super::value::tracetest_rounded;
    use std::time::Duration;
    let by_float = |ns: u64| -> u64 {
        let unit = if ns < 1_000_000 { 1e3 } else { 1e6 };
        ((ns as f64 / unit).round_ties_even() * unit) as u64
    };
    let mut checked = 0;
    let mut check = |ns: u64| {
        assert_eq!(
            tracetest_rounded(Duration::from_nanos(ns)).as_nanos() as u64,
            by_float(ns),
            "{ns} ns"
        );
        checked += 1;
    };
    for q in 0..1_000u64 {
        for unit in [1_000u64, 1_000_000] {
            for r in [0, 1, unit / 2 - 1, unit / 2, unit / 2 + 1, unit - 1] {
                let ns = q * unit + r;
                if (1_000..1_000_000_000).contains(&ns) {
                    check(ns);
                }
            }
        }
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        check(1_000 + x % 999_999_000);
    }
    assert!(checked > 110_000);
}

// === summaries ===

#[test]
fn summary_reads_matched_spans_and_outputs() {
    let e = engine(WITHDRAW);
    let t = withdraw(Some(300), 500, 200, &["commit"]);
    assert_eq!(
        e.render_summary(0, &t).as_deref(),
        Some("Overdraft committed for account 123 (500 > 300)")
    );
    let plain = engine(&spec_model("span", "attr:name != \"\""));
    assert_eq!(plain.render_summary(0, &t), None);
}

#[test]
fn example_bank_model_gives_the_expected_verdicts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/models/bank.yaml");
    let docs = model::load_path(&dir).unwrap();
    let e = Engine::compile(model::models(&docs)).unwrap();
    let fix = |t: Trace| {
        // The example matches on a server span named like the spec's route.
        let spans: Vec<Span> = (0..t.len() as u32)
            .map(|i| {
                let info = t.span_info(i).unwrap();
                let name = if info.name == "POST /withdraw" {
                    "POST /:account/withdraw".to_string()
                } else {
                    info.name
                };
                let mut s = sp(
                    info.span_id.0[0],
                    None,
                    &name,
                    u64::from(i),
                    u64::from(i) + 1,
                );
                s.parent_span_id = if i == 0 { vec![] } else { vec![1; 8] };
                s.kind = if i == 0 { 2 } else { 1 };
                for k in ["http.response.status_code", "account.id", "amount"] {
                    if let Some(v) = t.attribute(i, k) {
                        s.attributes.push(kv(
                            k,
                            match v {
                                Value::Int(x) => iv(x),
                                other => sv(&other.to_string()),
                            },
                        ));
                    }
                }
                s
            })
            .collect();
        trace_of(vec![rs("bank", spans)])
    };
    let ctx = EvalContext::default();
    let pass = e.evaluate(&fix(withdraw(Some(300), 500, 500, &["rollback"])), &ctx);
    assert_eq!(pass[0].verdict, Verdict::Pass, "{pass:#?}");
    let fail = fix(withdraw(Some(300), 500, 200, &["commit"]));
    assert_eq!(e.evaluate(&fail, &ctx)[0].verdict, Verdict::Fail);
    assert_eq!(
        e.render_summary(0, &fail).as_deref(),
        Some("Overdraft committed for account 123")
    );
    assert_eq!(
        e.evaluate(&fix(withdraw(Some(900), 500, 200, &["commit"])), &ctx)[0].verdict,
        Verdict::Skip
    );
}

// === indexed dispatch ===

#[test]
fn precondition_is_derived_from_match_names() {
    let yaml = r#"type: Model
spec:
  id: a
  match: span[name = "x"] span[name = "y"], span[name = "z"]
---
type: Model
spec:
  id: b
  match: span[name = "x"], span[kind = "server"]
---
type: Model
spec:
  id: c
"#;
    let e = engine(yaml);
    let names = |i: usize| {
        e.compiled[i].precondition.as_ref().map(|alts| {
            alts.iter()
                .map(|a| a.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        names(0),
        Some(vec![
            vec!["x".to_string(), "y".to_string()],
            vec!["z".to_string()]
        ])
    );
    assert_eq!(names(1), None);
    assert_eq!(names(2), None);
}

/// The name index may only skip models whose `match` cannot select
/// anything: on every trace, `evaluate` (indexed) must agree with
/// evaluating each model on its own (never indexed).
#[test]
fn indexed_dispatch_agrees_with_evaluating_each_model() {
    let names = ["a", "b", "c", "d"];
    let matches = [
        r#"span[name = "a"]"#,
        r#"span[name = "b"] span[name = "c"]"#,
        r#"span[name = "d"], span[name = "a"] span[name = "b"]"#,
        r#"span[name = "c"], span[kind = "server"]"#,
        r#"span[name = "absent"]"#,
        r#"span[name = "b"]:first"#,
    ];
    let mut yaml = String::new();
    for (i, m) in matches.iter().enumerate() {
        yaml.push_str(&format!(
            "---\ntype: Model\nspec:\n  id: m{i}\n  match: '{m}'\n  specs:\n    - selector: span\n      assertions: ['attr:tracetest.span.duration < 1s']\n"
        ));
    }
    yaml.push_str(
        "---\ntype: Model\nspec:\n  id: unindexed\n  specs:\n    - selector: span[name = \"a\"]\n",
    );
    let e = engine(&yaml);
    let ctx = EvalContext::default();
    // Every subset of the names, as a chain (each span the parent of the
    // next) and reversed, so descendant selectors both hold and fail.
    for subset in 1u32..16 {
        for reversed in [false, true] {
            let mut chosen: Vec<&str> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect();
            if reversed {
                chosen.reverse();
            }
            let spans = chosen
                .iter()
                .enumerate()
                .map(|(i, n)| sp(i as u8 + 1, (i > 0).then_some(i as u8), n, i as u64, 10).kind(2))
                .collect();
            let t = trace_of(vec![rs("svc", spans)]);
            let indexed = e.evaluate(&t, &ctx);
            let each: Vec<ModelVerdict> = (0..e.len())
                .map(|i| e.evaluate_model(i, &t, &ctx).unwrap())
                .collect();
            assert_eq!(indexed, each, "names {chosen:?}");
        }
    }
    let idle = e.evaluate(
        &trace_of(vec![rs("svc", vec![sp(1, None, "zzz", 0, 1)])]),
        &ctx,
    );
    assert_eq!(idle[0].verdict, Verdict::Skip);
    assert_eq!(
        idle[0].skip_reason.as_deref(),
        Some("match selected no span")
    );
}

// === test runs ===

const POKEMON: &str = r#"type: Test
spec:
  id: import-pokemon
  trigger:
    type: http
    httpRequest:
      method: POST
      url: http://api/pokemon/import
  specs:
    - name: trigger answered
      selector: span[name = "Tracetest trigger"]
      assertions:
        - attr:tracetest.response.status = 200
        - attr:tracetest.response.body | json_path '$.id' = 52
    - selector: span[name = "import pokemon"]
      assertions:
        - attr:tracetest.selected_spans.count = 1
        - attr:pokemon.id = 52
    - selector: span[name = "missing"]
  outputs:
    - name: POKEMON_ID
      selector: span[name = "import pokemon"]
      value: attr:pokemon.id
"#;

#[test]
fn run_test_reports_specs_assertions_and_outputs() {
    let docs = model::load_str("t.yaml", POKEMON).unwrap();
    let model::Document::Test(t) = &docs[0] else {
        panic!()
    };
    let ct = CompiledTest::compile(t).unwrap();
    let trace = trace_of(vec![rs(
        "worker",
        vec![
            sp(1, None, "POST /pokemon/import", 0, 10),
            sp(2, Some(1), "import pokemon", 20, 30).attr("pokemon.id", iv(52)),
        ],
    )]);
    let resp = TriggerResponse {
        status: 200,
        body: r#"{"id": 52}"#.to_string(),
        headers: vec![("Content-Type".to_string(), "application/json".to_string())],
        duration: Some(std::time::Duration::from_millis(120)),
    };
    let ctx = EvalContext {
        trigger_response: Some(&resp),
        ..EvalContext::default()
    };
    let r = run_test(&ct, &trace, &ctx);
    assert_eq!(r.specs.len(), 3);
    assert!(r.specs[0].passed, "{:#?}", r.specs[0]);
    assert!(r.specs[1].passed, "{:#?}", r.specs[1]);
    assert_eq!(r.specs[1].assertions[0].spans.len(), 1);
    assert_eq!(
        r.specs[1].assertions[1].spans[0].span_name.as_deref(),
        Some("import pokemon")
    );
    assert!(!r.specs[2].passed);
    assert_eq!(
        r.specs[2].message.as_deref(),
        Some(r#"selector span[name = "missing"] selected no span"#)
    );
    assert!(!r.passed);
    assert_eq!(r.outputs.get("POKEMON_ID").map(String::as_str), Some("52"));
    // Without a trigger response there is no trigger span.
    let r = run_test(&ct, &trace, &EvalContext::default());
    assert!(!r.specs[0].passed);
}

#[test]
fn trigger_span_is_parent_of_roots() {
    let mut t = checkout();
    t.add_trigger_span(&TriggerResponse::default());
    assert_eq!(t.span_info(0).unwrap().name, TRIGGER_SPAN_NAME);
    let m = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span[name = \"Tracetest trigger\"] > span[name = \"POST /checkout\"]\n      assertions: ['attr:tracetest.span.type = \"http\"']\n    - selector: span[name = \"Tracetest trigger\"]\n      assertions: ['attr:tracetest.span.type = \"general\"', 'attr:tracetest.response.status = 0']\n";
    assert_eq!(verdict_of(m, &t).verdict, Verdict::Pass);
}

#[test]
fn test_as_model_uses_first_spec_selector_as_match() {
    let docs = model::load_str("t.yaml", POKEMON).unwrap();
    let model::Document::Test(t) = &docs[0] else {
        panic!()
    };
    let e = Engine::compile(vec![t.as_model()]).unwrap();
    let v = e.evaluate(&checkout(), &EvalContext::default());
    assert_eq!(v[0].verdict, Verdict::Skip);
}

#[test]
fn variable_refs_list_positions() {
    let docs = model::load_str("t.yaml", "type: Test\nspec:\n  id: t\n  specs:\n    - selector: span[name = env:N]\n      assertions: ['attr:a = var:X']\n").unwrap();
    let refs = docs[0].variable_refs();
    let got: Vec<(String, usize, usize)> = refs
        .iter()
        .map(|r| (r.name.clone(), r.line, r.column))
        .collect();
    assert_eq!(
        got,
        vec![("N".to_string(), 5, 29), ("X".to_string(), 6, 30)]
    );
}

#[test]
fn observed_is_the_side_that_reads_the_trace() {
    let v = verdict_of(
        &spec_model(
            r#"span[name = "Charge"]"#,
            r#""USD" = attr:app.payment.currency"#,
        ),
        &checkout(),
    );
    let f = &v.failures[0];
    assert_eq!(f.observed.as_deref(), Some("EUR"));
    assert_eq!(f.expected.as_deref(), Some("USD"));
    assert_eq!(
        f.message,
        r#"expected "USD" = attr:app.payment.currency, observed "EUR""#
    );
}

#[test]
fn missing_attribute_is_reported() {
    let v = verdict_of(
        &spec_model(r#"span[name = "Charge"]"#, r#"attr:app.nonexistent = "x""#),
        &checkout(),
    );
    let f = &v.failures[0];
    assert_eq!(f.observed, None);
    assert_eq!(f.expected.as_deref(), Some("x"));
    assert_eq!(f.message, "attribute app.nonexistent not found");
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
    check::<Trace>();
    check::<TraceBuilder>();
    check::<ModelVerdict>();
    check::<CompiledTest>();
    check::<TestResult>();
    check::<model::Document>();
    check::<model::Diagnostic>();
}

#[test]
fn value_coercions() {
    use crate::model::ast::CmpOp;
    use std::time::Duration;
    let s = Value::str;
    assert!(value::equals(&Value::Int(500), &s("500")));
    assert!(value::equals(&s("500"), &Value::Float(500.0)));
    assert!(!value::equals(&s("5x"), &Value::Int(5)));
    assert!(!value::equals(&s("NaN"), &Value::Float(f64::NAN)));
    assert!(value::equals(
        &Value::Duration(Duration::from_millis(1)),
        &s("1ms")
    ));
    assert!(value::equals(
        &Value::Duration(Duration::from_millis(1)),
        &Value::Int(1_000_000)
    ));
    assert!(!value::equals(
        &Value::Duration(Duration::from_millis(1)),
        &s("soon")
    ));
    assert!(value::equals(&Value::Bool(true), &s("TRUE")));
    assert!(!value::equals(&Value::Bool(true), &Value::Int(1)));
    assert!(
        value::compare(CmpOp::Lt, &s("9"), &s("10"), None),
        "numeric strings compare as numbers"
    );
    assert!(value::compare(CmpOp::Lt, &s("b"), &s("c"), None));
    assert!(!value::compare(
        CmpOp::Lt,
        &Value::Bool(false),
        &Value::Bool(true),
        None
    ));
    assert!(value::compare(
        CmpOp::Ne,
        &Value::Bool(false),
        &Value::Int(0),
        None
    ));
    assert_eq!(
        value::arith(
            crate::model::ast::ArithOp::Div,
            &Value::Int(i64::MIN),
            &Value::Int(-1)
        )
        .map(|v| v.type_name()),
        Ok("number")
    );
    assert_eq!(
        value::arith(crate::model::ast::ArithOp::Add, &s("a"), &s("b")),
        Ok(s("ab"))
    );
    assert_eq!(
        value::arith(crate::model::ast::ArithOp::Add, &s("1"), &Value::Int(2)),
        Ok(Value::Int(3))
    );
    assert!(value::arith(
        crate::model::ast::ArithOp::Mul,
        &Value::Bool(true),
        &Value::Int(2)
    )
    .is_err());
}

#[test]
fn trace_indexes() {
    let t = checkout();
    let charge = t.span_index(crate::ids::SpanId([5; 8])).unwrap();
    assert_eq!(
        t.span_info(charge).unwrap().service.as_deref(),
        Some("payment")
    );
    assert_eq!(t.spans_named("HGET").len(), 2);
    assert!(t.spans_named("nope").is_empty());
    assert_eq!(
        t.attribute(charge, "app.payment.currency"),
        Some(Value::str("EUR"))
    );
    assert_eq!(
        t.attribute(charge, "deployment.environment"),
        Some(Value::str("prod"))
    );
}

#[test]
fn tracetest_style_test_file_runs() {
    // The shape Tracetest's own CLI writes: no spaces around `=`, `name`
    // after `selector`, doubled spaces in assertions.
    let text = r#"type: Test
spec:
  id: Xy12AbCd
  name: checkout works
  trigger:
    type: http
    httpRequest:
      method: GET
      url: http://frontend:8080/checkout
      headers:
      - key: Content-Type
        value: application/json
  specs:
  - selector: span[tracetest.span.type="http" kind="server"]
    name: "Every HTTP server span answers 200"
    assertions:
    - attr:http.response.status_code  =  200
  - selector: span[tracetest.span.type="general" name="Tracetest trigger"]
    name: "Trigger answered quickly"
    assertions:
    - attr:tracetest.span.duration < 200ms
    - attr:tracetest.response.headers | json_path '$[?(@.key == "Content-Type")].value' = "application/json"
"#;
    let docs = model::load_str("tt.yaml", text).unwrap_or_else(|e| panic!("{e:#?}"));
    let model::Document::Test(t) = &docs[0] else {
        panic!()
    };
    let ct = CompiledTest::compile(t).unwrap();
    let resp = TriggerResponse {
        status: 200,
        body: String::new(),
        headers: vec![("Content-Type".to_string(), "application/json".to_string())],
        duration: Some(std::time::Duration::from_millis(150)),
    };
    let ctx = EvalContext {
        trigger_response: Some(&resp),
        ..EvalContext::default()
    };
    let r = run_test(&ct, &checkout(), &ctx);
    assert!(r.passed, "{r:#?}");
}

#[test]
fn example_http_and_database_models() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/models");
    let docs = model::load_path(&dir).unwrap();
    let e = Engine::compile(model::models(&docs)).unwrap();
    let ctx = EvalContext::default();
    let verdicts = e.evaluate(&checkout(), &ctx);
    let of = |id: &str| verdicts[e.index_of(id).unwrap()].verdict;
    assert_eq!(of("overdraft-rolls-back"), Verdict::Skip);
    assert_eq!(of("http-server-no-5xx"), Verdict::Pass);
    assert_eq!(of("errors-have-messages"), Verdict::Pass);
    assert_eq!(of("db-calls-are-fast"), Verdict::Pass);
    let failing = trace_of(vec![rs(
        "api",
        vec![
            sp(1, None, "GET /x", 0, 10)
                .kind(2)
                .attr("http.method", sv("GET"))
                .attr("http.status_code", iv(503))
                .status(2, ""),
            sp(2, Some(1), "SELECT", 1, 500)
                .kind(3)
                .attr("db.system", sv("postgresql")),
        ],
    )]);
    let verdicts = e.evaluate(&failing, &ctx);
    let of = |id: &str| verdicts[e.index_of(id).unwrap()].verdict;
    assert_eq!(of("http-server-no-5xx"), Verdict::Fail);
    assert_eq!(of("errors-have-messages"), Verdict::Fail);
    assert_eq!(of("db-calls-are-fast"), Verdict::Fail);
    assert_eq!(
        e.render_summary(e.index_of("http-server-no-5xx").unwrap(), &failing)
            .as_deref(),
        Some("HTTP server error behind GET /x (api)")
    );
}

mod scale;
mod tracetest;

// Issue 21: Tracetest spells span statuses as OTLP's enum names.
check!(
    status_code_tracetest_ok,
    r#"span[name = "orders process"]"#,
    r#"attr:tracetest.span.status_code = "STATUS_CODE_OK""#,
    true
);
check!(
    status_code_tracetest_error,
    r#"span[name = "Charge"]"#,
    r#"attr:tracetest.span.status_code = "STATUS_CODE_ERROR""#,
    true
);
check!(
    status_code_tracetest_unset,
    r#"span[name = "GetCart"]"#,
    r#"attr:tracetest.span.status_code = "STATUS_CODE_UNSET""#,
    true
);
check!(
    status_code_tracetest_not_error,
    r#"span[name = "GetCart"]"#,
    r#"attr:tracetest.span.status_code != "STATUS_CODE_ERROR""#,
    true
);
check!(
    status_code_tracetest_mismatch_fails,
    r#"span[name = "Charge"]"#,
    r#"attr:tracetest.span.status_code = "STATUS_CODE_OK""#,
    false
);
selects!(
    status_code_tracetest_in_selector,
    r#"span[tracetest.span.status_code = "STATUS_CODE_ERROR"]"#,
    ["Charge"]
);

/// Issue 21: `tracetest.span.type` as Tracetest infers it, from attribute
/// prefixes (span and resource attributes), browser spans `general`.
fn typed_spans() -> Trace {
    trace_of(typed_spans_request())
}

fn typed_spans_request() -> Vec<ResourceSpans> {
    vec![
        rs(
            "svc",
            vec![
                sp(1, None, "root", 0, 100).attr("http.target", sv("/x")),
                sp(2, Some(1), "query", 10, 20).attr("db.statement", sv("SELECT 1")),
                sp(3, Some(1), "call", 20, 30).attr("rpc.service", sv("Cart")),
                sp(4, Some(1), "consume", 30, 40).attr("messaging.destination.name", sv("orders")),
                sp(5, Some(1), "fn", 40, 50).attr("faas.execution", sv("abc")),
                sp(6, Some(1), "oops", 50, 60).attr("exception.type", sv("Boom")),
                sp(7, Some(1), "click", 60, 70)
                    .attr("event_type", sv("click"))
                    .attr("http.url", sv("http://x")),
                sp(8, Some(1), "documentLoad", 70, 80).attr("http.url", sv("http://x")),
                sp(9, Some(1), "plain", 80, 90).attr("app.x", sv("y")),
                // Two kinds: the order http, db, rpc, messaging, faas,
                // exception decides.
                sp(10, Some(1), "both", 90, 95)
                    .attr("rpc.system", sv("grpc"))
                    .attr("db.system", sv("redis")),
            ],
        ),
        {
            // A Lambda's resource says faas for every span of it.
            let mut r = rs("lambda", vec![sp(11, Some(1), "handler", 95, 99)]);
            r.resource
                .as_mut()
                .unwrap()
                .attributes
                .push(kv("faas.name", sv("fn")));
            r
        },
    ]
}

fn types_select(sel: &str) -> Vec<String> {
    names_selected_in(&typed_spans(), sel)
}

#[test]
fn span_type_follows_tracetest_prefixes() {
    for (ty, names) in [
        ("http", vec!["root"]),
        ("database", vec!["query", "both"]),
        ("rpc", vec!["call"]),
        ("messaging", vec!["consume"]),
        ("faas", vec!["fn", "handler"]),
        ("exception", vec!["oops"]),
        ("general", vec!["click", "documentLoad", "plain"]),
    ] {
        let mut got = types_select(&format!("span[tracetest.span.type = \"{ty}\"]"));
        got.sort();
        let mut want: Vec<String> = names.iter().map(ToString::to_string).collect();
        want.sort();
        assert_eq!(got, want, "{ty}");
    }
}

/// The daemon's path: spans decoded from their bytes, keeping only the
/// keys a model names (none of the typing ones here), give the same types.
#[test]
fn span_type_from_encoded_spans_keeping_no_attribute() {
    use prost::Message as _;
    let keep = std::sync::Arc::new(KeySet::new(std::iter::empty()));
    let mut b = TraceBuilder::keeping(crate::ids::TraceId(TRACE), keep);
    {
        for rs in typed_spans_request() {
            let res = rs.resource.clone().unwrap_or_default().encode_to_vec();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    b.add_encoded(&res, &s.encode_to_vec()).unwrap();
                }
            }
        }
    }
    let t = b.build();
    let typed = typed_spans();
    assert_eq!(t.spans.len(), typed.spans.len());
    for want in &typed.spans {
        let got = t.spans.iter().find(|s| s.name == want.name).unwrap();
        assert_eq!(got.span_type, want.span_type, "{}", want.name);
    }
}

/// The span ids (their first byte) `selector` selects, sorted, or the
/// errors loading it.
fn try_select_ids(t: &Trace, selector: &str) -> Result<Vec<u8>, String> {
    let yaml = format!(
        "type: Model\nspec:\n  id: m\n  outputs:\n    - name: X\n      selector: '{}'\n      value: attr:name\n",
        selector.replace('\'', "''")
    );
    let docs = model::load_str("test.yaml", &yaml).map_err(|errs| {
        errs.iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let e = Engine::compile(model::models(&docs)).map_err(|e| format!("{e:?}"))?;
    let cache = eval::KeyCache::new(e.keys.names.len());
    let ctx = EvalContext::default();
    let env = Env {
        trace: t,
        names: &e.keys.names,
        cache: &cache,
        ctx: &ctx,
        outputs: &[],
        selected: 0,
    };
    let sel = e.compiled[0].outputs[0].selector.as_ref().unwrap();
    let mut ids: Vec<u8> = env
        .select(sel)
        .into_vec()
        .into_iter()
        .map(|i| t.span_info(i).unwrap().span_id.0[0])
        .collect();
    ids.sort_unstable();
    Ok(ids)
}
