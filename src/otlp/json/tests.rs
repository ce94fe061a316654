use super::*;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Status;
use proptest::prelude::*;
use prost::Message as _;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_owned())
}

fn rich_request() -> ExportTraceServiceRequest {
    let nested = any_value::Value::KvlistValue(KeyValueList {
        values: vec![
            kv("inner", s("x")),
            kv(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        },
                        AnyValue { value: None },
                        AnyValue {
                            value: Some(any_value::Value::KvlistValue(KeyValueList {
                                values: vec![kv("deep", any_value::Value::BoolValue(false))],
                            })),
                        },
                    ],
                }),
            ),
            KeyValue {
                key: "no-value".to_owned(),
                value: None,
                key_strindex: 0,
            },
        ],
    });
    let span = Span {
        trace_id: (1..=16).collect(),
        span_id: vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3],
        trace_state: "vendor=opaque,other=1".to_owned(),
        parent_span_id: vec![0xff; 8],
        flags: 0x301,
        name: "GET /users/:id \"quoted\" \\ tab\t newline\n \u{1} é ☃".to_owned(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: u64::MAX,
        attributes: vec![
            kv("str", s("hello")),
            kv("empty-str", s("")),
            kv("bool", any_value::Value::BoolValue(true)),
            kv("int-max", any_value::Value::IntValue(i64::MAX)),
            kv("int-min", any_value::Value::IntValue(i64::MIN)),
            kv("int-zero", any_value::Value::IntValue(0)),
            kv("double", any_value::Value::DoubleValue(-12.5e-7)),
            kv("double-int", any_value::Value::DoubleValue(3.0)),
            kv("double-inf", any_value::Value::DoubleValue(f64::INFINITY)),
            kv(
                "double-neg-inf",
                any_value::Value::DoubleValue(f64::NEG_INFINITY),
            ),
            kv("double-max", any_value::Value::DoubleValue(f64::MAX)),
            kv(
                "bytes",
                any_value::Value::BytesValue(vec![0, 1, 2, 250, 251]),
            ),
            kv("bytes-empty", any_value::Value::BytesValue(vec![])),
            kv("nested", nested),
            kv("strindex", any_value::Value::StringValueStrindex(7)),
            KeyValue {
                key: String::new(),
                value: Some(AnyValue { value: None }),
                key_strindex: 3,
            },
        ],
        dropped_attributes_count: 2,
        events: vec![
            Event {
                time_unix_nano: 1_700_000_000_000_000_001,
                name: "exception".to_owned(),
                attributes: vec![kv("exception.message", s("boom"))],
                dropped_attributes_count: 1,
            },
            Event::default(),
        ],
        dropped_events_count: 3,
        links: vec![Link {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            trace_state: "a=b".to_owned(),
            attributes: vec![kv("link.kind", s("follows"))],
            dropped_attributes_count: 4,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status {
            message: "it broke".to_owned(),
            code: StatusCode::Error as i32,
        }),
    };
    let bare_span = Span {
        status: Some(Status::default()),
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout"))],
                    dropped_attributes_count: 9,
                    entity_refs: vec![EntityRef {
                        schema_url: "https://example.com/schema".to_owned(),
                        r#type: "service".to_owned(),
                        id_keys: vec!["service.name".to_owned()],
                        description_keys: vec!["a".to_owned(), "b".to_owned()],
                    }],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "lib".to_owned(),
                            version: "1.2.3".to_owned(),
                            attributes: vec![kv("scope.attr", s("v"))],
                            dropped_attributes_count: 6,
                        }),
                        spans: vec![span, bare_span],
                        schema_url: "https://opentelemetry.io/schemas/1.30.0".to_owned(),
                    },
                    ScopeSpans::default(),
                ],
                schema_url: "https://opentelemetry.io/schemas/1.29.0".to_owned(),
            },
            ResourceSpans {
                resource: Some(Resource::default()),
                ..ResourceSpans::default()
            },
            ResourceSpans::default(),
        ],
    }
}

fn decode_str(json: &str) -> Result<ExportTraceServiceRequest, JsonDecodeError> {
    decode_export_request(json.as_bytes())
}

/// A request holding one span built from the given JSON members.
fn span_json(members: &str) -> String {
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{members}}}]}}]}}]}}"#)
}

fn only_span(request: &ExportTraceServiceRequest) -> &Span {
    &request.resource_spans[0].scope_spans[0].spans[0]
}

/// A request whose one span carries one attribute with the given AnyValue JSON.
fn attr_json(any_value: &str) -> String {
    span_json(&format!(
        r#""attributes":[{{"key":"a","value":{any_value}}}]"#
    ))
}

fn only_attr(request: &ExportTraceServiceRequest) -> Option<&any_value::Value> {
    only_span(request).attributes[0]
        .value
        .as_ref()
        .and_then(|v| v.value.as_ref())
}

fn decode_attr(any_value: &str) -> Option<any_value::Value> {
    let request = decode_str(&attr_json(any_value)).expect("decodes");
    only_attr(&request).cloned()
}

fn err_string(json: &str) -> String {
    decode_str(json).expect_err("must fail").to_string()
}

#[test]
fn rich_request_round_trips() {
    let request = rich_request();
    let json = encode_export_request(&request);
    let parsed: Value = serde_json::from_str(&json).expect("encoder writes valid JSON");
    assert!(parsed.is_object());
    let decoded = decode_str(&json).expect("decodes");
    assert_eq!(decoded, request);
    assert_eq!(encode_export_request(&decoded), json);
}

#[test]
fn round_trip_agrees_with_protobuf() {
    let request = rich_request();
    let via_proto =
        ExportTraceServiceRequest::decode(request.encode_to_vec().as_slice()).expect("protobuf");
    let via_json = decode_str(&encode_export_request(&request)).expect("json");
    assert_eq!(via_proto, via_json);
}

#[test]
fn nan_round_trips() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    attributes: vec![kv("nan", any_value::Value::DoubleValue(f64::NAN))],
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let json = encode_export_request(&request);
    assert!(json.contains(r#""doubleValue":"NaN""#), "{json}");
    let decoded = decode_str(&json).expect("decodes");
    assert!(matches!(only_attr(&decoded), Some(any_value::Value::DoubleValue(d)) if d.is_nan()));
}

#[test]
fn encoding_follows_otlp_json_rules() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("api"))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0xAB; 16],
                    span_id: vec![0x0C; 8],
                    name: "root".to_owned(),
                    kind: SpanKind::Client as i32,
                    start_time_unix_nano: 5,
                    attributes: vec![kv("n", any_value::Value::IntValue(-42))],
                    status: Some(Status {
                        message: String::new(),
                        code: StatusCode::Ok as i32,
                    }),
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    assert_eq!(
        encode_export_request(&request),
        concat!(
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},"#,
            r#""scopeSpans":[{"spans":[{"traceId":"abababababababababababababababab","spanId":"0c0c0c0c0c0c0c0c","#,
            r#""name":"root","kind":3,"startTimeUnixNano":"5","attributes":[{"key":"n","value":{"intValue":"-42"}}],"#,
            r#""status":{"code":1}}]}]}]}"#
        )
    );
    assert_eq!(
        encode_export_request(&ExportTraceServiceRequest::default()),
        "{}"
    );
}

/// A request using every field, by lowerCamelCase names.
const CAMEL_CASE_REQUEST: &str = r#"{"resourceSpans":[{"schemaUrl":"u","resource":{"droppedAttributesCount":1},
            "scopeSpans":[{"schemaUrl":"v","scope":{"name":"n","droppedAttributesCount":2},
            "spans":[{"traceId":"0102","spanId":"03","parentSpanId":"04","traceState":"t",
            "startTimeUnixNano":"1","endTimeUnixNano":"2","droppedAttributesCount":3,
            "droppedEventsCount":4,"droppedLinksCount":5,
            "events":[{"timeUnixNano":"6","droppedAttributesCount":7}],
            "links":[{"traceId":"05","spanId":"06","traceState":"l","droppedAttributesCount":8}],
            "attributes":[{"key":"k","keyStrindex":9,"value":{"kvlistValue":{"values":[
                {"key":"a","value":{"stringValue":"s"}},{"key":"b","value":{"boolValue":true}},
                {"key":"c","value":{"intValue":"1"}},{"key":"d","value":{"doubleValue":1.5}},
                {"key":"e","value":{"bytesValue":"AQ=="}},{"key":"f","value":{"arrayValue":{"values":[]}}},
                {"key":"g","value":{"stringValueStrindex":2}}]}}}]}]}]}]}"#;

/// [`CAMEL_CASE_REQUEST`] by the proto (snake_case) names.
const SNAKE_CASE_REQUEST: &str = r#"{"resource_spans":[{"schema_url":"u","resource":{"dropped_attributes_count":1},
            "scope_spans":[{"schema_url":"v","scope":{"name":"n","dropped_attributes_count":2},
            "spans":[{"trace_id":"0102","span_id":"03","parent_span_id":"04","trace_state":"t",
            "start_time_unix_nano":"1","end_time_unix_nano":"2","dropped_attributes_count":3,
            "dropped_events_count":4,"dropped_links_count":5,
            "events":[{"time_unix_nano":"6","dropped_attributes_count":7}],
            "links":[{"trace_id":"05","span_id":"06","trace_state":"l","dropped_attributes_count":8}],
            "attributes":[{"key":"k","key_strindex":9,"value":{"kvlist_value":{"values":[
                {"key":"a","value":{"string_value":"s"}},{"key":"b","value":{"bool_value":true}},
                {"key":"c","value":{"int_value":"1"}},{"key":"d","value":{"double_value":1.5}},
                {"key":"e","value":{"bytes_value":"AQ=="}},{"key":"f","value":{"array_value":{"values":[]}}},
                {"key":"g","value":{"string_value_strindex":2}}]}}}]}]}]}]}"#;

#[test]
fn snake_case_names_are_accepted() {
    let camel = decode_str(CAMEL_CASE_REQUEST).expect("camel");
    let snake = decode_str(SNAKE_CASE_REQUEST).expect("snake");
    assert_eq!(camel, snake);
    let span = only_span(&camel);
    assert_eq!(span.trace_id, vec![1, 2]);
    assert_eq!(span.events[0].time_unix_nano, 6);
    assert_eq!(span.links[0].dropped_attributes_count, 8);
    assert_eq!(span.attributes[0].key_strindex, 9);
}

#[test]
fn enums_accept_integers_and_names() {
    for (kind, expected) in [
        (r#""SPAN_KIND_SERVER""#, SpanKind::Server as i32),
        (r#""SPAN_KIND_CONSUMER""#, SpanKind::Consumer as i32),
        (r#""SPAN_KIND_UNSPECIFIED""#, 0),
        ("3", 3),
        (r#""4""#, 4),
        ("42", 42),
    ] {
        let request = decode_str(&span_json(&format!(r#""kind":{kind}"#))).expect("kind");
        assert_eq!(only_span(&request).kind, expected, "{kind}");
    }
    for (code, expected) in [
        (r#""STATUS_CODE_ERROR""#, StatusCode::Error as i32),
        (r#""STATUS_CODE_OK""#, StatusCode::Ok as i32),
        (r#""STATUS_CODE_UNSET""#, 0),
        ("2", 2),
    ] {
        let request =
            decode_str(&span_json(&format!(r#""status":{{"code":{code}}}"#))).expect("code");
        let status = only_span(&request).status.as_ref().expect("status");
        assert_eq!(status.code, expected, "{code}");
    }
    assert_eq!(
        err_string(&span_json(r#""kind":"SERVER""#)),
        r#"resourceSpans[0].scopeSpans[0].spans[0].kind: unknown SpanKind name "SERVER""#
    );
    assert_eq!(
        err_string(&span_json(r#""status":{"code":"ERROR"}"#)),
        r#"resourceSpans[0].scopeSpans[0].spans[0].status.code: unknown StatusCode name "ERROR""#
    );
    assert!(decode_str(&span_json(r#""kind":true"#)).is_err());
    assert!(decode_str(&span_json(r#""kind":4294967296"#)).is_err());
}

#[test]
fn integers_accept_strings_and_numbers() {
    let a = decode_str(&span_json(
        r#""startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000000000001,"droppedAttributesCount":"7","flags":"256""#,
    ))
    .expect("decodes");
    let span = only_span(&a);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_000_001);
    assert_eq!(span.dropped_attributes_count, 7);
    assert_eq!(span.flags, 256);

    let max = decode_str(&span_json(r#""endTimeUnixNano":"18446744073709551615""#)).expect("max");
    assert_eq!(only_span(&max).end_time_unix_nano, u64::MAX);
    let exp = decode_str(&span_json(r#""startTimeUnixNano":1e3,"flags":"2.0""#)).expect("exp");
    assert_eq!(only_span(&exp).start_time_unix_nano, 1000);
    assert_eq!(only_span(&exp).flags, 2);

    assert_eq!(
        decode_attr(r#"{"intValue":"-9223372036854775808"}"#),
        Some(any_value::Value::IntValue(i64::MIN))
    );
    assert_eq!(
        decode_attr(r#"{"intValue":9223372036854775807}"#),
        Some(any_value::Value::IntValue(i64::MAX))
    );
    assert_eq!(
        decode_attr(r#"{"intValue":-17}"#),
        Some(any_value::Value::IntValue(-17))
    );

    assert_eq!(
        err_string(&attr_json(r#"{"intValue":"9223372036854775808"}"#)),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue: integer 9223372036854775808 out of range for int64"
    );
    assert_eq!(
        err_string(&span_json(r#""startTimeUnixNano":"-1""#)),
        "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: integer -1 out of range for uint64"
    );
    assert_eq!(
        err_string(&span_json(r#""startTimeUnixNano":"soon""#)),
        r#"resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: invalid integer "soon""#
    );
    assert!(decode_str(&span_json(r#""startTimeUnixNano":1.5"#)).is_err());
    assert!(decode_str(&span_json(r#""droppedAttributesCount":4294967296"#)).is_err());
    assert!(decode_str(&attr_json(r#"{"intValue":true}"#)).is_err());
}

#[test]
fn doubles_accept_numbers_and_special_strings() {
    let double = |json: &str| match decode_attr(json) {
        Some(any_value::Value::DoubleValue(d)) => d,
        other => panic!("not a double: {other:?}"),
    };
    assert_eq!(double(r#"{"doubleValue":1.25}"#), 1.25);
    assert_eq!(double(r#"{"doubleValue":3}"#), 3.0);
    assert_eq!(double(r#"{"doubleValue":-1e300}"#), -1e300);
    assert_eq!(double(r#"{"doubleValue":"2.5"}"#), 2.5);
    assert!(double(r#"{"doubleValue":"NaN"}"#).is_nan());
    assert_eq!(double(r#"{"doubleValue":"Infinity"}"#), f64::INFINITY);
    assert_eq!(double(r#"{"doubleValue":"-Infinity"}"#), f64::NEG_INFINITY);
    assert_eq!(
        err_string(&attr_json(r#"{"doubleValue":"inf"}"#)),
        r#"resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.doubleValue: invalid number "inf""#
    );
    assert!(decode_str(&attr_json(r#"{"doubleValue":"lots"}"#)).is_err());
    assert!(decode_str(&attr_json(r#"{"doubleValue":[1]}"#)).is_err());
}

#[test]
fn bytes_are_base64() {
    let bytes = |json: &str| match decode_attr(json) {
        Some(any_value::Value::BytesValue(b)) => b,
        other => panic!("not bytes: {other:?}"),
    };
    assert_eq!(bytes(r#"{"bytesValue":"AAH/+w=="}"#), vec![0, 1, 255, 251]);
    assert_eq!(bytes(r#"{"bytesValue":"AAH/+w"}"#), vec![0, 1, 255, 251]);
    assert_eq!(bytes(r#"{"bytesValue":"AAH_-w=="}"#), vec![0, 1, 255, 251]);
    assert_eq!(bytes(r#"{"bytesValue":""}"#), Vec::<u8>::new());
    let err = err_string(&attr_json(r#"{"bytesValue":"not base64!"}"#));
    assert!(
        err.starts_with(
            "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.bytesValue: invalid base64"
        ),
        "{err}"
    );
}

#[test]
fn ids_are_hex_in_any_case() {
    let upper = decode_str(&span_json(
        r#""traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"B7AD6B7169203331","parentSpanId":"00F067AA0BA902B7""#,
    ))
    .expect("upper");
    let lower = decode_str(&span_json(
        r#""traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"00f067aa0ba902b7""#,
    ))
    .expect("lower");
    let mixed = decode_str(&span_json(
        r#""traceId":"0aF7651916Cd43dD8448eB211c80319C","spanId":"B7ad6b7169203331","parentSpanId":"00F067aa0BA902b7""#,
    ))
    .expect("mixed");
    assert_eq!(upper, lower);
    assert_eq!(mixed, lower);
    let span = only_span(&lower);
    assert_eq!(
        span.trace_id,
        vec![
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c
        ]
    );
    assert_eq!(
        span.span_id,
        vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
    );
}

#[test]
fn wrong_length_and_empty_ids_are_kept() {
    let request = decode_str(&span_json(
        r#""traceId":"abcd","spanId":"","parentSpanId":"0102030405060708090a","links":[{"traceId":"ff","spanId":"00"}]"#,
    ))
    .expect("wrong lengths are the receiver's business");
    let span = only_span(&request);
    assert_eq!(span.trace_id, vec![0xab, 0xcd]);
    assert!(span.span_id.is_empty());
    assert_eq!(span.parent_span_id, (1..=10).collect::<Vec<u8>>());
    assert_eq!(span.links[0].trace_id, vec![0xff]);
    assert_eq!(span.links[0].span_id, vec![0]);
}

#[test]
fn invalid_hex_is_an_error_with_its_path() {
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[]},{"spans":[{},{},{},
        {"traceId":"5b8efff798038103d269b633813fc6zz"}]}]}]}"#;
    assert_eq!(
        err_string(json),
        "resourceSpans[0].scopeSpans[1].spans[3].traceId: invalid hex digit 'z'"
    );
    assert_eq!(
        err_string(&span_json(r#""spanId":"abc""#)),
        "resourceSpans[0].scopeSpans[0].spans[0].spanId: odd number of hex digits (3)"
    );
    assert_eq!(
        err_string(&span_json(r#""links":[{"spanId":"0g"}]"#)),
        "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: invalid hex digit 'g'"
    );
    assert_eq!(
        err_string(&span_json(r#""parentSpanId":"é1""#)),
        "resourceSpans[0].scopeSpans[0].spans[0].parentSpanId: invalid hex digit 'é'"
    );
    assert_eq!(
        err_string(&span_json(r#""traceId":12"#)),
        "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected string, found number"
    );
}

/// A request with unknown fields at every level.
const UNKNOWN_FIELDS_REQUEST: &str = r#"{"future":{"deep":[1,{"x":null}]},"resourceSpans":[{"newField":1,
            "resource":{"attributes":[],"what":"ever","entityRefs":[{"extra":true}]},
            "scopeSpans":[{"scope":{"name":"s","x":[1]},"y":"z",
            "spans":[{"traceId":"01","unknownId":"zz-not-hex","kind":1,"mystery":{"a":[]},
            "events":[{"name":"e","extra":1}],"links":[{"spanId":"02","extra":{}}],
            "status":{"code":0,"deprecatedCode":5,"more":"x"},
            "attributes":[{"key":"k","value":{"stringValue":"v","futureValue":{"x":1}},"note":"n"}]}]}]}]}"#;

#[test]
fn unknown_fields_are_ignored() {
    let with_unknown = decode_str(UNKNOWN_FIELDS_REQUEST).expect("unknown fields are ignored");
    let plain = decode_str(
        r#"{"resourceSpans":[{"resource":{"entityRefs":[{}]},"scopeSpans":[{"scope":{"name":"s"},
            "spans":[{"traceId":"01","kind":1,"events":[{"name":"e"}],"links":[{"spanId":"02"}],
            "status":{},"attributes":[{"key":"k","value":{"stringValue":"v"}}]}]}]}]}"#,
    )
    .expect("plain");
    assert_eq!(with_unknown, plain);
    assert_eq!(decode_attr(r#"{"unheardOf":1}"#), None);
}

#[test]
fn null_means_absent() {
    let request = decode_str(
        r#"{"resourceSpans":[{"resource":null,"schemaUrl":null,"scopeSpans":[{"scope":null,
            "spans":[{"traceId":null,"spanId":null,"name":null,"kind":null,"status":null,
            "startTimeUnixNano":null,"attributes":[{"key":"k","value":null},
            {"key":"j","value":{"stringValue":null,"intValue":"5"}}],"events":null,"links":null}]}]}]}"#,
    )
    .expect("nulls are absent");
    let rs = &request.resource_spans[0];
    assert!(rs.resource.is_none());
    assert!(rs.scope_spans[0].scope.is_none());
    let span = only_span(&request);
    assert!(span.trace_id.is_empty());
    assert!(span.status.is_none());
    assert_eq!(span.kind, 0);
    assert!(span.attributes[0].value.is_none());
    assert_eq!(
        span.attributes[1].value,
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(5))
        })
    );
    assert_eq!(
        decode_str(r#"{"resourceSpans":null}"#).expect("null list"),
        ExportTraceServiceRequest::default()
    );
    assert_eq!(
        err_string(r#"{"resourceSpans":[null]}"#),
        "resourceSpans[0]: null is not allowed as a list element"
    );
}

#[test]
fn empty_and_wrongly_shaped_documents() {
    assert_eq!(
        decode_str("{}").expect("empty"),
        ExportTraceServiceRequest::default()
    );
    assert_eq!(err_string("[]"), "expected object, found array");
    assert!(err_string("").starts_with("invalid JSON: "));
    assert!(err_string(r#"{"resourceSpans":[}"#).starts_with("invalid JSON: "));
    assert_eq!(
        err_string(r#"{"resourceSpans":{}}"#),
        "resourceSpans: expected array, found object"
    );
    assert_eq!(
        err_string(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[7]}]}]}"#),
        "resourceSpans[0].scopeSpans[0].spans[0]: expected object, found number"
    );
    assert_eq!(
        err_string(&attr_json(r#"{"stringValue":"a","intValue":"1"}"#)),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value: AnyValue sets both intValue and stringValue"
    );
    assert_eq!(
        err_string(&attr_json(r#"{"boolValue":"true"}"#)),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.boolValue: expected boolean, found string"
    );
}

#[test]
fn error_paths_reach_into_nested_values() {
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"ok","value":{"intValue":1}},
        {"key":"bad","value":{"kvlistValue":{"values":[{"key":"x","value":{"arrayValue":{"values":[
        {"intValue":"1"},{"intValue":"abc"}]}}}]}}}]}}]}"#;
    assert_eq!(
        err_string(json),
        r#"resourceSpans[0].resource.attributes[1].value.kvlistValue.values[0].value.arrayValue.values[1].intValue: invalid integer "abc""#
    );
    let event = span_json(r#""events":[{"attributes":[{"key":"k","value":{"doubleValue":{}}}]}]"#);
    assert_eq!(
        err_string(&event),
        "resourceSpans[0].scopeSpans[0].spans[0].events[0].attributes[0].value.doubleValue: expected number, found object"
    );
    let scope = r#"{"resourceSpans":[{"scopeSpans":[{"scope":{"version":3}}]}]}"#;
    assert_eq!(
        err_string(scope),
        "resourceSpans[0].scopeSpans[0].scope.version: expected string, found number"
    );
    let err = decode_str(scope).expect_err("fails");
    assert_eq!(err.path, "resourceSpans[0].scopeSpans[0].scope.version");
    assert_eq!(
        err.kind,
        JsonErrorKind::WrongType {
            expected: "string",
            found: "number"
        }
    );
}

fn nested_arrays(levels: usize) -> String {
    let mut v = r#"{"intValue":"1"}"#.to_owned();
    for _ in 1..levels {
        v = format!(r#"{{"arrayValue":{{"values":[{v}]}}}}"#);
    }
    v
}

fn nested_kvlists(levels: usize) -> String {
    let mut v = r#"{"boolValue":true}"#.to_owned();
    for _ in 1..levels {
        v = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{v}}}]}}}}"#);
    }
    v
}

#[test]
fn any_value_depth_is_limited() {
    assert!(decode_str(&attr_json(&nested_arrays(DEFAULT_MAX_ANY_VALUE_DEPTH))).is_ok());
    let err = decode_str(&attr_json(&nested_arrays(DEFAULT_MAX_ANY_VALUE_DEPTH + 1)))
        .expect_err("too deep");
    assert_eq!(
        err.kind,
        JsonErrorKind::AnyValueTooDeep(DEFAULT_MAX_ANY_VALUE_DEPTH)
    );
    assert!(err.path.ends_with(".arrayValue.values[0]"), "{}", err.path);
    assert!(err
        .path
        .starts_with("resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.arrayValue"));

    assert!(decode_str(&attr_json(&nested_kvlists(DEFAULT_MAX_ANY_VALUE_DEPTH))).is_ok());
    let in_event = span_json(&format!(
        r#""events":[{{"attributes":[{{"key":"k","value":{}}}]}}]"#,
        nested_kvlists(DEFAULT_MAX_ANY_VALUE_DEPTH)
    ));
    assert!(decode_str(&in_event).is_ok());
    let in_event = span_json(&format!(
        r#""events":[{{"attributes":[{{"key":"k","value":{}}}]}}]"#,
        nested_kvlists(DEFAULT_MAX_ANY_VALUE_DEPTH + 1)
    ));
    assert_eq!(
        decode_str(&in_event).map_err(|e| e.kind),
        Err(JsonErrorKind::AnyValueTooDeep(DEFAULT_MAX_ANY_VALUE_DEPTH))
    );
    let err = decode_str(&attr_json(&nested_kvlists(DEFAULT_MAX_ANY_VALUE_DEPTH + 1)))
        .expect_err("too deep");
    assert_eq!(
        err.kind,
        JsonErrorKind::AnyValueTooDeep(DEFAULT_MAX_ANY_VALUE_DEPTH)
    );

    let shallow = DecodeOptions {
        max_any_value_depth: 2,
    };
    assert!(decode_export_request_with(attr_json(&nested_arrays(2)).as_bytes(), &shallow).is_ok());
    let err = decode_export_request_with(attr_json(&nested_arrays(3)).as_bytes(), &shallow)
        .expect_err("too deep");
    assert_eq!(
        err.to_string(),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.arrayValue.values[0].arrayValue.values[0]: AnyValue nested deeper than 2 levels"
    );
    let zero = DecodeOptions {
        max_any_value_depth: 0,
    };
    assert!(decode_export_request_with(attr_json(r#"{"intValue":1}"#).as_bytes(), &zero).is_err());
}

#[test]
fn absurd_nesting_is_an_error_not_a_crash() {
    for opener in ["[", "{\"a\":", "{\"resourceSpans\":["] {
        let json = opener.repeat(100_000);
        let err = decode_str(&json).expect_err("too deep");
        assert_eq!(err.kind, JsonErrorKind::JsonTooDeep(148), "{opener}");
        assert_eq!(
            err.to_string(),
            "JSON nested deeper than 148 arrays/objects"
        );
    }
    let deep_value = attr_json(&nested_arrays(5_000));
    assert!(matches!(
        decode_str(&deep_value).map_err(|e| e.kind),
        Err(JsonErrorKind::JsonTooDeep(_))
    ));
    let deep_unknown = format!(r#"{{"x":{}1{}}}"#, "[".repeat(50_000), "]".repeat(50_000));
    assert!(decode_str(&deep_unknown).is_err());
    let huge = DecodeOptions {
        max_any_value_depth: usize::MAX,
    };
    let err = decode_export_request_with("[".repeat(100_000).as_bytes(), &huge).expect_err("deep");
    assert_eq!(err.kind, JsonErrorKind::JsonTooDeep(1024));
    let fits = decode_export_request_with(attr_json(&nested_kvlists(200)).as_bytes(), &huge);
    assert!(fits.is_ok());
}

#[test]
fn export_response_encoding() {
    assert_eq!(encode_export_response(0, ""), "{}");
    assert_eq!(
        encode_export_response(3, "3 spans had invalid ids"),
        r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"3 spans had invalid ids"}}"#
    );
    assert_eq!(
        encode_export_response(0, "slow down"),
        r#"{"partialSuccess":{"errorMessage":"slow down"}}"#
    );
    assert_eq!(
        encode_export_response(1, "bad \"id\"\n"),
        r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"bad \"id\"\n"}}"#
    );
    let parsed: Value = serde_json::from_str(&encode_export_response(7, "x")).expect("valid JSON");
    assert_eq!(parsed["partialSuccess"]["rejectedSpans"], "7");
}

#[test]
fn any_value_as_plain_json() {
    use serde_json::json;
    let value = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("s", s("text")),
                kv("b", any_value::Value::BoolValue(true)),
                kv("i", any_value::Value::IntValue(-3)),
                kv("d", any_value::Value::DoubleValue(0.5)),
                kv("nan", any_value::Value::DoubleValue(f64::NAN)),
                kv("inf", any_value::Value::DoubleValue(f64::NEG_INFINITY)),
                kv("bytes", any_value::Value::BytesValue(vec![1, 2, 3])),
                kv(
                    "arr",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(s("x")),
                            },
                            AnyValue { value: None },
                        ],
                    }),
                ),
                KeyValue {
                    key: "none".to_owned(),
                    value: None,
                    key_strindex: 0,
                },
                kv("dup", s("first")),
                kv("dup", s("last")),
            ],
        })),
    };
    assert_eq!(
        any_value_to_json(&value),
        json!({
            "s": "text", "b": true, "i": -3, "d": 0.5, "nan": "NaN", "inf": "-Infinity",
            "bytes": "AQID", "arr": ["x", null], "none": null, "dup": "last"
        })
    );
    assert_eq!(any_value_to_json(&AnyValue { value: None }), Value::Null);
    assert_eq!(
        any_value_to_json(&AnyValue {
            value: Some(any_value::Value::IntValue(i64::MIN))
        }),
        json!(i64::MIN)
    );
}

fn conformance_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("TRACECHECK_CONFORMANCE_DIR") {
        return dir.into();
    }
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    if beside.is_dir() {
        return beside;
    }
    std::path::PathBuf::from("/work/shared/conformance")
}

#[test]
fn conformance_fixtures_decode() {
    let cases = conformance_dir().join("cases");
    let entries = std::fs::read_dir(&cases)
        .unwrap_or_else(|e| panic!("conformance cases at {}: {e}", cases.display()));
    let mut lines = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path().join("traces.jsonl");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let request =
                decode_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1));
            for span in request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                assert_eq!(span.trace_id.len(), 16, "{}:{}", path.display(), n + 1);
                assert_eq!(span.span_id.len(), 8, "{}:{}", path.display(), n + 1);
            }
            let again = decode_str(&encode_export_request(&request)).expect("re-decodes");
            assert_eq!(again, request);
            lines += 1;
        }
    }
    assert!(
        lines > 0,
        "no conformance traces found under {}",
        cases.display()
    );
}

// ---------------------------------------------------------------------------
// Properties

const FIELD_NAMES: &[&str] = &[
    "resourceSpans",
    "resource_spans",
    "resource",
    "scopeSpans",
    "scope",
    "spans",
    "traceId",
    "spanId",
    "parentSpanId",
    "name",
    "kind",
    "status",
    "code",
    "message",
    "attributes",
    "key",
    "value",
    "stringValue",
    "intValue",
    "doubleValue",
    "boolValue",
    "bytesValue",
    "arrayValue",
    "kvlistValue",
    "values",
    "events",
    "links",
    "startTimeUnixNano",
    "flags",
    "droppedAttributesCount",
    "entityRefs",
    "idKeys",
    "zzz",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[0-9a-fA-FzZ]{0,34}".prop_map(Value::String),
        prop::sample::select(vec![
            "NaN",
            "Infinity",
            "-Infinity",
            "SPAN_KIND_SERVER",
            "STATUS_CODE_ERROR",
            "1e3",
            "-1",
            "18446744073709551616",
            "AQ==",
            "",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_tree() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(8, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELD_NAMES), inner), 0..6).prop_map(
                |members| Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| ((*k).to_owned(), v))
                        .collect()
                )
            ),
        ]
    })
}

fn any_value_strategy() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        ".{0,10}".prop_map(|s| Some(any_value::Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(any_value::Value::IntValue(i))),
        any::<f64>()
            .prop_filter("NaN never equals itself", |d| !d.is_nan())
            .prop_map(|d| Some(any_value::Value::DoubleValue(d))),
        prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| Some(any_value::Value::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec((".{0,6}", prop::option::of(inner)), 0..4).prop_map(|entries| {
                AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: entries
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value,
                                key_strindex: 0,
                            })
                            .collect(),
                    })),
                }
            }),
        ]
    })
}

fn span_strategy() -> impl Strategy<Value = Span> {
    (
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..10),
        prop::collection::vec(any::<u8>(), 0..10),
        ".{0,16}",
        -1i32..8,
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec((".{0,8}", any_value_strategy()), 0..5),
        any::<u32>(),
        prop::option::of((".{0,8}", 0i32..4)),
    )
        .prop_map(
            |(trace_id, span_id, parent_span_id, name, kind, start, end, attrs, flags, status)| {
                Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: attrs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value: Some(value),
                            key_strindex: 0,
                        })
                        .collect(),
                    flags,
                    status: status.map(|(message, code)| Status { message, code }),
                    ..Span::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_export_request(&body);
    }

    #[test]
    fn random_json_never_panics(tree in json_tree()) {
        let text = tree.to_string();
        let _ = decode_export_request(text.as_bytes());
        let wrapped = attr_json(&text);
        let _ = decode_export_request(wrapped.as_bytes());
        let as_span = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{text}]}}]}}]}}"#);
        let _ = decode_export_request(as_span.as_bytes());
    }

    #[test]
    fn random_requests_round_trip(
        spans in prop::collection::vec(span_strategy(), 0..6),
        service in ".{0,10}",
    ) {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", any_value::Value::StringValue(service))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        };
        let json = encode_export_request(&request);
        let decoded = decode_export_request(json.as_bytes());
        prop_assert_eq!(decoded, Ok(request));
    }
}

mod differential;
