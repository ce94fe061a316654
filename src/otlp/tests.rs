use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;

fn span(trace: &[u8], id: &[u8], parent: &[u8], name: &str) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.to_vec(),
        name: name.into(),
        attributes: vec![KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("v".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("svc".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
        }],
    }
}

fn lazy_of(req: &ExportTraceServiceRequest) -> LazyExportRequest {
    LazyExportRequest::decode(Bytes::from(req.encode_to_vec())).unwrap()
}

#[test]
fn walk_keeps_bytes_unchanged_when_all_valid() {
    let req = request(vec![
        span(&[1; 16], &[1; 8], &[], "root"),
        span(&[1; 16], &[2; 8], &[1; 8], "child"),
    ]);
    let walked = walk(lazy_of(&req)).unwrap();
    assert_eq!(walked.spans.len(), 2);
    assert_eq!(walked.rejected, 0);
    assert!(walked.spans[0].is_root && !walked.spans[1].is_root);
    let forwarded = ExportTraceServiceRequest::decode(
        LazyExportRequest {
            resource_spans: walked.forward,
        }
        .encode_to_vec()
        .as_slice(),
    )
    .unwrap();
    assert_eq!(forwarded, req);
}

#[test]
fn walk_rejects_bad_ids_and_forwards_the_rest() {
    let req = request(vec![
        span(&[1; 15], &[1; 8], &[], "short trace id"),
        span(&[1; 16], &[2; 8], &[], "good"),
        span(&[1; 16], &[0; 8], &[], "zero span id"),
    ]);
    let walked = walk(lazy_of(&req)).unwrap();
    assert_eq!(walked.rejected, 2);
    assert_eq!(walked.spans.len(), 1);
    assert!(walked.rejected_message.unwrap().contains("spans[0]"));
    let forwarded = ExportTraceServiceRequest::decode(
        LazyExportRequest {
            resource_spans: walked.forward,
        }
        .encode_to_vec()
        .as_slice(),
    )
    .unwrap();
    let expected = request(vec![span(&[1; 16], &[2; 8], &[], "good")]);
    assert_eq!(
        forwarded, expected,
        "resource and scope kept, bad spans gone"
    );
}

#[test]
fn walk_refuses_garbage_framing() {
    let garbage = LazyExportRequest {
        resource_spans: vec![Bytes::from_static(&[0x0a, 0xff, 0x01])],
    };
    let err = walk(garbage).unwrap_err();
    assert_eq!(err.path, "resource_spans[0]");
}

#[test]
fn to_resource_spans_regroups() {
    let req = request(vec![
        span(&[1; 16], &[1; 8], &[], "a"),
        span(&[1; 16], &[2; 8], &[1; 8], "b"),
    ]);
    let walked = walk(lazy_of(&req)).unwrap();
    let raw: Vec<RawSpan> = walked.spans.into_iter().map(|k| k.span).collect();
    let rs = to_resource_spans(&raw).unwrap();
    assert_eq!(rs, req.resource_spans);
}

/// Detached spans hold copies: the same bytes, the same trace, and none
/// of them points into the request buffer any more.
#[test]
fn detached_spans_keep_only_their_own_bytes() {
    let req = request(vec![
        span(&[1; 16], &[1; 8], &[], "a"),
        span(&[1; 16], &[2; 8], &[1; 8], "b"),
    ]);
    let lazy = lazy_of(&req);
    let request_bytes: Vec<(usize, usize)> = lazy
        .resource_spans
        .iter()
        .map(|b| (b.as_ptr() as usize, b.as_ptr() as usize + b.len()))
        .collect();
    let walked = walk(lazy).unwrap();
    let raw: Vec<RawSpan> = walked.spans.into_iter().map(|k| k.span).collect();
    let detached = RawSpan::detach(&raw, &mut ScopeInterner::default());
    assert_eq!(
        to_resource_spans(&detached).unwrap(),
        to_resource_spans(&raw).unwrap()
    );
    let inside = |p: *const u8| {
        request_bytes
            .iter()
            .any(|(lo, hi)| (*lo..*hi).contains(&(p as usize)))
    };
    for (d, r) in detached.iter().zip(&raw) {
        assert!(
            inside(r.bytes.as_ptr()),
            "the walk's spans are slices of the request"
        );
        assert!(!inside(d.bytes.as_ptr()));
        assert!(!inside(d.scope.resource.as_ptr()) || d.scope.resource.is_empty());
    }
    // Spans that shared a scope still share one copy of it.
    assert!(Arc::ptr_eq(&detached[0].scope, &detached[1].scope));
}

/// The spans of a one-span request (trace and span ids of `id`) whose
/// resource says `n = i`: a request of its own resource.
fn walked_with_resource(i: u64, id: u8) -> Vec<RawSpan> {
    let mut r = request(vec![span(&[id; 16], &[id; 8], &[], "s")]);
    r.resource_spans[0].resource = Some(Resource {
        attributes: vec![attr("n", any_value::Value::IntValue(i as i64))],
        ..Default::default()
    });
    walk(lazy_of(&r))
        .unwrap()
        .spans
        .into_iter()
        .map(|k| k.span)
        .collect()
}

/// Traces kept apart still share their resource: one copy per distinct
/// resource and scope, however many requests and traces carried it, and
/// a different resource is a copy of its own.
#[test]
fn detached_traces_from_separate_requests_share_one_copy_of_their_resource() {
    let mut scopes = ScopeInterner::default();
    let detach_request = |spans: Vec<Span>, scopes: &mut ScopeInterner| {
        let raw: Vec<RawSpan> = walk(lazy_of(&request(spans)))
            .unwrap()
            .spans
            .into_iter()
            .map(|k| k.span)
            .collect();
        RawSpan::detach(&raw, scopes)
    };
    let first = detach_request(vec![span(&[1; 16], &[1; 8], &[], "a")], &mut scopes);
    let second = detach_request(vec![span(&[2; 16], &[2; 8], &[], "b")], &mut scopes);
    assert!(Arc::ptr_eq(&first[0].scope, &second[0].scope));
    assert_eq!(scopes.len(), 1);

    let mut other = request(vec![span(&[3; 16], &[3; 8], &[], "c")]);
    other.resource_spans[0].resource = Some(Resource {
        attributes: vec![attr(
            "service.name",
            any_value::Value::StringValue("elsewhere".into()),
        )],
        ..Default::default()
    });
    let raw: Vec<RawSpan> = walk(lazy_of(&other))
        .unwrap()
        .spans
        .into_iter()
        .map(|k| k.span)
        .collect();
    let third = RawSpan::detach(&raw, &mut scopes);
    assert!(!Arc::ptr_eq(&first[0].scope, &third[0].scope));
    assert_ne!(first[0].scope.resource, third[0].scope.resource);
    assert_eq!(scopes.len(), 2);

    // The table keeps no copy alive: once no span and no request holds
    // it, it is gone.
    let weak = Arc::downgrade(&third[0].scope);
    drop(third);
    assert!(weak.upgrade().is_some(), "its request holds it");
    drop(raw);
    assert!(weak.upgrade().is_none());
    // A full table drops the dead entries first and keeps the live ones.
    for i in 0..2000u64 {
        let raw = walked_with_resource(i, 4);
        drop(RawSpan::detach(&raw, &mut scopes));
    }
    assert!(scopes.len() < 1024);
    let again = detach_request(vec![span(&[5; 16], &[5; 8], &[], "e")], &mut scopes);
    assert!(Arc::ptr_eq(&first[0].scope, &again[0].scope));
}

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// An attribute value nested `depth` levels deep (1 = a plain string),
/// alternating kvlists and arrays.
fn nested(depth: usize) -> any_value::Value {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    let mut v = any_value::Value::StringValue("leaf".into());
    for level in 1..depth {
        v = if level % 2 == 0 {
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(v) }],
            })
        } else {
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![attr("k", v)],
            })
        };
    }
    v
}

const SMALL: WalkLimits = WalkLimits {
    max_attribute_depth: 4,
    max_attributes: 5,
    max_attribute_value_bytes: 100,
};

#[test]
fn walk_rejects_spans_over_each_limit_and_forwards_the_rest() {
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    let mut deep = span(&[1; 16], &[2; 8], &[], "deep");
    deep.attributes.push(attr("deep", nested(5)));
    let mut many = span(&[1; 16], &[3; 8], &[], "many");
    for i in 0..5 {
        many.attributes
            .push(attr(&format!("a{i}"), any_value::Value::IntValue(i)));
    }
    let mut large = span(&[1; 16], &[4; 8], &[], "large");
    large.events.push(Event {
        name: "exception".into(),
        attributes: vec![attr(
            "exception.stacktrace",
            any_value::Value::StringValue("x".repeat(101)),
        )],
        ..Default::default()
    });
    let mut at_limits = span(&[1; 16], &[5; 8], &[], "at the limits");
    at_limits.attributes = vec![
        attr("deep", nested(4)),
        attr("v", any_value::Value::StringValue("x".repeat(100))),
    ];
    at_limits
        .attributes
        .extend((0..3).map(|i| attr(&format!("b{i}"), any_value::Value::BoolValue(true))));
    let good = span(&[1; 16], &[1; 8], &[], "good");
    let req = request(vec![good.clone(), deep, many, large, at_limits.clone()]);

    let walked = walk_with(lazy_of(&req), &SMALL).unwrap();
    assert_eq!(walked.spans.len(), 2);
    assert_eq!(walked.rejected, 3);
    assert_eq!(
        walked.rejected_by,
        Rejections {
            invalid_id: 0,
            too_deep: 1,
            too_many_attributes: 1,
            too_large: 1,
            invalid_utf8: 0,
        }
    );
    let msg = walked.rejected_message.unwrap();
    assert!(
        msg.contains("spans[1]") && msg.contains("max_attribute_depth"),
        "{msg}"
    );
    let forwarded = ExportTraceServiceRequest::decode(
        LazyExportRequest {
            resource_spans: walked.forward,
        }
        .encode_to_vec()
        .as_slice(),
    )
    .unwrap();
    assert_eq!(forwarded, request(vec![good, at_limits]));

    // The same request is whole under the default limits.
    let walked = walk(lazy_of(&req)).unwrap();
    assert_eq!((walked.spans.len(), walked.rejected), (5, 0));
}

#[test]
fn a_resource_over_a_limit_rejects_every_span_sent_with_it() {
    let mut req = request(vec![
        span(&[1; 16], &[1; 8], &[], "a"),
        span(&[1; 16], &[2; 8], &[1; 8], "b"),
    ]);
    if let Some(r) = req.resource_spans[0].resource.as_mut() {
        r.attributes
            .push(attr("huge", any_value::Value::BytesValue(vec![0; 101])));
    }
    let mut other = request(vec![span(&[2; 16], &[1; 8], &[], "c")]);
    req.resource_spans.append(&mut other.resource_spans);
    let walked = walk_with(lazy_of(&req), &SMALL).unwrap();
    assert_eq!(walked.rejected, 2);
    assert_eq!(walked.rejected_by.too_large, 2);
    assert_eq!(walked.spans.len(), 1);
    assert!(walked.rejected_message.unwrap().contains("resource"));
    assert_eq!(walked.forward.len(), 1);
}

#[test]
fn malformed_attributes_refuse_the_request() {
    // Field 9 (attributes) as a varint: not a KeyValue.
    let mut bytes = span(&[1; 16], &[1; 8], &[], "x").encode_to_vec();
    bytes.extend_from_slice(&[9 << 3, 1]);
    let mut rs = lazy::LazyScopeSpans::default();
    rs.spans.push(Bytes::from(bytes));
    let req = LazyExportRequest {
        resource_spans: vec![Bytes::from(
            lazy::LazyResourceSpans {
                scope_spans: vec![Bytes::from(rs.encode_to_vec())],
                ..Default::default()
            }
            .encode_to_vec(),
        )],
    };
    let err = walk(req).unwrap_err();
    // The span's own attribute is attributes[0]; the broken one follows.
    assert_eq!(
        err.path, "resource_spans[0].scope_spans[0].spans[0].attributes[1]",
        "{err}"
    );
    assert_eq!(err.message, "invalid wire type");
}

/// Every field of the messages a span is made of, set, with each `string`
/// field holding a marker that occurs once in the encoding: a test breaks
/// one of them by overwriting a byte of its marker.
mod every_field {
    use opentelemetry_proto::tonic::common::v1::{
        ArrayValue, EntityRef, InstrumentationScope, KeyValueList,
    };
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::Status;

    use super::*;
    use crate::engine::TraceBuilder;

    fn text(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    fn value(v: any_value::Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    /// The span's string fields: (marker, path in the span).
    pub(super) const SPAN_STRINGS: &[(&str, &str)] = &[
        ("~trace-state~", "trace_state"),
        ("~span-name~", "name"),
        ("~attr-key~", "attributes[0].key"),
        ("~attr-value~", "attributes[0].value.string_value"),
        (
            "~array-item~",
            "attributes[1].value.array_value.values[1].string_value",
        ),
        (
            "~kvlist-key~",
            "attributes[2].value.kvlist_value.values[0].key",
        ),
        (
            "~kvlist-value~",
            "attributes[2].value.kvlist_value.values[0].value.string_value",
        ),
        ("~event-name~", "events[0].name"),
        ("~event-key~", "events[0].attributes[0].key"),
        (
            "~event-value~",
            "events[0].attributes[0].value.string_value",
        ),
        ("~link-state~", "links[0].trace_state"),
        ("~link-key~", "links[0].attributes[0].key"),
        ("~link-value~", "links[0].attributes[0].value.string_value"),
        ("~status-message~", "status.message"),
    ];

    const RESOURCE_STRINGS: &[(&str, &str)] = &[
        ("~resource-key~", "attributes[0].key"),
        ("~resource-value~", "attributes[0].value.string_value"),
        ("~entity-schema~", "entity_refs[0].schema_url"),
        ("~entity-type~", "entity_refs[0].type"),
        ("~entity-id-key~", "entity_refs[0].id_keys[1]"),
        ("~entity-description~", "entity_refs[0].description_keys[0]"),
    ];

    const SCOPE_STRINGS: &[(&str, &str)] = &[
        ("~scope-name~", "name"),
        ("~scope-version~", "version"),
        ("~scope-key~", "attributes[0].key"),
        ("~scope-value~", "attributes[0].value.string_value"),
    ];

    /// A span with every field of `Span` and of what it nests set.
    pub(super) fn full_span() -> Span {
        Span {
            trace_id: vec![2; 16],
            span_id: vec![2; 8],
            trace_state: "~trace-state~".into(),
            parent_span_id: vec![1; 8],
            flags: 0x301,
            name: "~span-name~".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: vec![
                attr("~attr-key~", text("~attr-value~")),
                attr(
                    "array",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            value(any_value::Value::IntValue(-5)),
                            value(text("~array-item~")),
                            value(any_value::Value::BoolValue(true)),
                            value(any_value::Value::DoubleValue(1.5)),
                            // Bytes, not a string: need not be UTF-8.
                            value(any_value::Value::BytesValue(vec![0xff, 0xfe, 0])),
                            AnyValue { value: None },
                        ],
                    }),
                ),
                attr(
                    "kvlist",
                    any_value::Value::KvlistValue(KeyValueList {
                        values: vec![
                            attr("~kvlist-key~", text("~kvlist-value~")),
                            attr("empty", any_value::Value::ArrayValue(ArrayValue::default())),
                        ],
                    }),
                ),
                attr("strindex", any_value::Value::StringValueStrindex(3)),
                KeyValue {
                    key: String::new(),
                    value: None,
                    key_strindex: 4,
                },
            ],
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 1_700_000_000_050_000_000,
                name: "~event-name~".into(),
                attributes: vec![attr("~event-key~", text("~event-value~"))],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: vec![7; 16],
                span_id: vec![7; 8],
                trace_state: "~link-state~".into(),
                attributes: vec![attr("~link-key~", text("~link-value~"))],
                dropped_attributes_count: 4,
                flags: 0x100,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: "~status-message~".into(),
                code: 2,
            }),
        }
    }

    pub(super) fn full_resource() -> Resource {
        Resource {
            attributes: vec![attr("~resource-key~", text("~resource-value~"))],
            dropped_attributes_count: 1,
            entity_refs: vec![EntityRef {
                schema_url: "~entity-schema~".into(),
                r#type: "~entity-type~".into(),
                id_keys: vec!["service.name".into(), "~entity-id-key~".into()],
                description_keys: vec!["~entity-description~".into()],
            }],
        }
    }

    pub(super) fn full_scope() -> InstrumentationScope {
        InstrumentationScope {
            name: "~scope-name~".into(),
            version: "~scope-version~".into(),
            attributes: vec![attr("~scope-key~", text("~scope-value~"))],
            dropped_attributes_count: 1,
        }
    }

    /// The full span between two plain ones of other traces, with the full
    /// resource and scope; then another resource with a plain span.
    fn full_request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(full_resource()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(full_scope()),
                        spans: vec![
                            span(&[1; 16], &[1; 8], &[], "before"),
                            full_span(),
                            span(&[3; 16], &[3; 8], &[], "after"),
                        ],
                        schema_url: "~scope-schema~".into(),
                    }],
                    schema_url: "~resource-schema~".into(),
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(&[4; 16], &[4; 8], &[], "elsewhere")],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    /// `bytes` with the byte after `marker`'s first `~` made 0xff, which
    /// no UTF-8 text has; the framing is unchanged.
    fn break_utf8(mut bytes: Vec<u8>, marker: &str) -> Vec<u8> {
        let m = marker.as_bytes();
        let at: Vec<usize> = (0..=bytes.len() - m.len())
            .filter(|&i| &bytes[i..i + m.len()] == m)
            .collect();
        assert_eq!(at.len(), 1, "{marker} occurs once");
        bytes[at[0] + 1] = 0xff;
        bytes
    }

    fn lazy_bytes(bytes: Vec<u8>) -> LazyExportRequest {
        LazyExportRequest::decode(Bytes::from(bytes)).unwrap()
    }

    fn decode_forwarded(forward: Vec<Bytes>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(
            LazyExportRequest {
                resource_spans: forward,
            }
            .encode_to_vec()
            .as_slice(),
        )
        .expect("what is forwarded decodes")
    }

    /// A span prost encodes with every field set (events, links, status,
    /// flags, nested arrays and kvlists, entity refs) is taken, forwarded
    /// byte for byte as received, and read by prost and the evaluator.
    #[test]
    fn a_span_with_every_field_set_is_taken_and_forwarded_unchanged() {
        let req = full_request();
        let lazy = lazy_bytes(req.encode_to_vec());
        let received = lazy.resource_spans.clone();
        let walked = walk(lazy).unwrap();
        assert_eq!((walked.spans.len(), walked.rejected), (4, 0));
        assert_eq!(walked.rejected_message, None);
        assert!(walked.refused_traces.is_empty());
        assert_eq!(walked.forward, received, "forwarded as received");
        for k in &walked.spans {
            Span::decode(k.span.bytes.clone()).expect("prost reads it");
            TraceBuilder::new(k.trace_id)
                .add_encoded(&k.span.scope.resource, &k.span.bytes)
                .expect("the evaluator reads it");
        }
        let raw: Vec<RawSpan> = walked.spans.into_iter().map(|k| k.span).collect();
        assert_eq!(to_resource_spans(&raw).unwrap(), req.resource_spans);
    }

    /// Each string field of a span that is not UTF-8 rejects that span
    /// alone, counted as `invalid_utf8`, with a message naming the field;
    /// what is forwarded is what was received without it, and prost reads
    /// it (it would not read the request as received).
    #[test]
    fn a_span_string_field_not_utf8_rejects_that_span_naming_the_field() {
        let good = full_request().encode_to_vec();
        for (marker, path) in SPAN_STRINGS {
            let bytes = break_utf8(good.clone(), marker);
            assert!(
                ExportTraceServiceRequest::decode(bytes.as_slice()).is_err(),
                "{path}: prost refuses the request as received"
            );
            let lazy = lazy_bytes(bytes);
            let received = lazy.resource_spans.clone();
            let walked = walk(lazy).unwrap();
            assert_eq!((walked.spans.len(), walked.rejected), (3, 1), "{path}");
            assert_eq!(
                walked.rejected_by,
                Rejections {
                    invalid_utf8: 1,
                    ..Rejections::default()
                },
                "{path}"
            );
            assert_eq!(
                walked.rejected_message.as_deref(),
                Some(
                    format!(
                        "resource_spans[0].scope_spans[0].spans[1].{path}: invalid string value: data is not UTF-8 encoded"
                    )
                    .as_str()
                )
            );
            assert_eq!(walked.refused_traces, vec![TraceId([2; 16])], "{path}");

            // The received bytes minus the span: the other resource as it
            // came, this one with its resource, scope and other spans as
            // they came.
            assert_eq!(walked.forward[1], received[1]);
            let rs = lazy::LazyResourceSpans::decode(walked.forward[0].clone()).unwrap();
            let was = lazy::LazyResourceSpans::decode(received[0].clone()).unwrap();
            assert_eq!(
                (&rs.resource, &rs.schema_url),
                (&was.resource, &was.schema_url)
            );
            let ss = lazy::LazyScopeSpans::decode(rs.scope_spans[0].clone()).unwrap();
            let was = lazy::LazyScopeSpans::decode(was.scope_spans[0].clone()).unwrap();
            assert_eq!(ss.scope, was.scope);
            assert_eq!(ss.spans, vec![was.spans[0].clone(), was.spans[2].clone()]);
            let mut expected = full_request();
            expected.resource_spans[0].scope_spans[0].spans.remove(1);
            assert_eq!(decode_forwarded(walked.forward), expected, "{path}");
        }
    }

    /// A string of the resource or scope (or a schema URL of the resource
    /// spans or scope spans) that is not UTF-8 rejects every span sent
    /// with it, and marks each of their traces.
    #[test]
    fn a_resource_or_scope_string_not_utf8_rejects_the_spans_sent_with_it() {
        let good = full_request().encode_to_vec();
        let cases = RESOURCE_STRINGS
            .iter()
            .map(|(m, p)| (*m, format!("resource_spans[0].resource.{p}")))
            .chain(
                SCOPE_STRINGS
                    .iter()
                    .map(|(m, p)| (*m, format!("resource_spans[0].scope_spans[0].scope.{p}"))),
            )
            // Read by the walk itself, not by the scan.
            .chain([
                (
                    "~resource-schema~",
                    "resource_spans[0].schema_url".to_owned(),
                ),
                (
                    "~scope-schema~",
                    "resource_spans[0].scope_spans[0].schema_url".to_owned(),
                ),
            ]);
        for (marker, path) in cases {
            let lazy = lazy_bytes(break_utf8(good.clone(), marker));
            let received = lazy.resource_spans.clone();
            let walked = walk(lazy).unwrap();
            assert_eq!((walked.spans.len(), walked.rejected), (1, 3), "{path}");
            assert_eq!(walked.rejected_by.invalid_utf8, 3, "{path}");
            assert_eq!(
                walked.rejected_message,
                Some(format!(
                    "{path}: invalid string value: data is not UTF-8 encoded"
                ))
            );
            let mut traces = walked.refused_traces.clone();
            traces.sort();
            assert_eq!(
                traces,
                vec![TraceId([1; 16]), TraceId([2; 16]), TraceId([3; 16])]
            );
            assert_eq!(walked.forward, vec![received[1].clone()], "{path}");
        }
    }

    const VARINT: u8 = 0;
    const FIXED64: u8 = 1;
    const LEN: u8 = 2;
    const START_GROUP: u8 = 3;
    const END_GROUP: u8 = 4;
    const FIXED32: u8 = 5;

    pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub(super) fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
        put_varint(out, u64::from(field << 3 | u32::from(wire)));
    }

    pub(super) fn put_len(out: &mut Vec<u8>, field: u32, payload: &[u8]) {
        put_key(out, field, LEN);
        put_varint(out, payload.len() as u64);
        out.extend_from_slice(payload);
    }

    /// Field `field` as `wire`, with a well-framed value of that type.
    fn put_as(out: &mut Vec<u8>, field: u32, wire: u8) {
        put_key(out, field, wire);
        match wire {
            VARINT => out.push(1),
            FIXED64 => out.extend_from_slice(&[0; 8]),
            // Empty: a string, bytes or message alike.
            LEN => out.push(0),
            START_GROUP => put_key(out, field, END_GROUP),
            END_GROUP => {}
            _ => out.extend_from_slice(&[0; 4]),
        }
    }

    /// The messages a span is made of, their fields (number, wire type,
    /// path when it is first in the message), and where the test puts it.
    #[derive(Debug, Clone, Copy)]
    enum In {
        Span,
        Event,
        Link,
        Status,
        KeyValue,
        AnyValue,
        ArrayValue,
        KeyValueList,
        Resource,
        EntityRef,
        Scope,
    }

    /// A message's fields: number, wire type, path.
    type Fields = &'static [(u32, u8, &'static str)];

    const FIELDS: &[(In, Fields)] = &[
        (
            In::Span,
            &[
                (1, LEN, "trace_id"),
                (2, LEN, "span_id"),
                (3, LEN, "trace_state"),
                (4, LEN, "parent_span_id"),
                (5, LEN, "name"),
                (6, VARINT, "kind"),
                (7, FIXED64, "start_time_unix_nano"),
                (8, FIXED64, "end_time_unix_nano"),
                // The plain span has one attribute already.
                (9, LEN, "attributes[1]"),
                (10, VARINT, "dropped_attributes_count"),
                (11, LEN, "events[0]"),
                (12, VARINT, "dropped_events_count"),
                (13, LEN, "links[0]"),
                (14, VARINT, "dropped_links_count"),
                (15, LEN, "status"),
                (16, FIXED32, "flags"),
            ],
        ),
        (
            In::Event,
            &[
                (1, FIXED64, "time_unix_nano"),
                (2, LEN, "name"),
                (3, LEN, "attributes[0]"),
                (4, VARINT, "dropped_attributes_count"),
            ],
        ),
        (
            In::Link,
            &[
                (1, LEN, "trace_id"),
                (2, LEN, "span_id"),
                (3, LEN, "trace_state"),
                (4, LEN, "attributes[0]"),
                (5, VARINT, "dropped_attributes_count"),
                (6, FIXED32, "flags"),
            ],
        ),
        (In::Status, &[(2, LEN, "message"), (3, VARINT, "code")]),
        (
            In::KeyValue,
            &[
                (1, LEN, "key"),
                (2, LEN, "value"),
                (3, VARINT, "key_strindex"),
            ],
        ),
        (
            In::AnyValue,
            &[
                (1, LEN, "string_value"),
                (2, VARINT, "bool_value"),
                (3, VARINT, "int_value"),
                (4, FIXED64, "double_value"),
                (5, LEN, "array_value"),
                (6, LEN, "kvlist_value"),
                (7, LEN, "bytes_value"),
                (8, VARINT, "string_value_strindex"),
            ],
        ),
        (In::ArrayValue, &[(1, LEN, "values[0]")]),
        (In::KeyValueList, &[(1, LEN, "values[0]")]),
        (
            In::Resource,
            &[
                (1, LEN, "attributes[0]"),
                (2, VARINT, "dropped_attributes_count"),
                (3, LEN, "entity_refs[0]"),
            ],
        ),
        (
            In::EntityRef,
            &[
                (1, LEN, "schema_url"),
                (2, LEN, "type"),
                (3, LEN, "id_keys[0]"),
                (4, LEN, "description_keys[0]"),
            ],
        ),
        (
            In::Scope,
            &[
                (1, LEN, "name"),
                (2, LEN, "version"),
                (3, LEN, "attributes[0]"),
                (4, VARINT, "dropped_attributes_count"),
            ],
        ),
    ];

    /// A request whose one span (or its resource or scope) holds the
    /// message `message` of kind `inside`, and the path of that message.
    fn request_holding(inside: In, message: &[u8]) -> (Vec<u8>, &'static str) {
        let mut span = span(&[1; 16], &[1; 8], &[], "plain").encode_to_vec();
        let (mut resource, mut scope) = (Vec::new(), Vec::new());
        let attribute = |span: &mut Vec<u8>, any_value: &[u8]| {
            let mut kv = Vec::new();
            put_len(&mut kv, 1, b"k");
            put_len(&mut kv, 2, any_value);
            put_len(span, 9, &kv);
        };
        let at = match inside {
            In::Span => {
                span.extend_from_slice(message);
                "resource_spans[0].scope_spans[0].spans[0]"
            }
            In::Event => {
                put_len(&mut span, 11, message);
                "resource_spans[0].scope_spans[0].spans[0].events[0]"
            }
            In::Link => {
                put_len(&mut span, 13, message);
                "resource_spans[0].scope_spans[0].spans[0].links[0]"
            }
            In::Status => {
                put_len(&mut span, 15, message);
                "resource_spans[0].scope_spans[0].spans[0].status"
            }
            In::KeyValue => {
                put_len(&mut span, 9, message);
                "resource_spans[0].scope_spans[0].spans[0].attributes[1]"
            }
            In::AnyValue => {
                attribute(&mut span, message);
                "resource_spans[0].scope_spans[0].spans[0].attributes[1].value"
            }
            In::ArrayValue | In::KeyValueList => {
                let mut v = Vec::new();
                let array = matches!(inside, In::ArrayValue);
                put_len(&mut v, if array { 5 } else { 6 }, message);
                attribute(&mut span, &v);
                if array {
                    "resource_spans[0].scope_spans[0].spans[0].attributes[1].value.array_value"
                } else {
                    "resource_spans[0].scope_spans[0].spans[0].attributes[1].value.kvlist_value"
                }
            }
            In::Resource => {
                resource = message.to_vec();
                "resource_spans[0].resource"
            }
            In::EntityRef => {
                put_len(&mut resource, 3, message);
                "resource_spans[0].resource.entity_refs[0]"
            }
            In::Scope => {
                scope = message.to_vec();
                "resource_spans[0].scope_spans[0].scope"
            }
        };
        let ss = lazy::LazyScopeSpans {
            scope: Bytes::from(scope),
            spans: vec![Bytes::from(span)],
            schema_url: Bytes::new(),
        };
        let rs = lazy::LazyResourceSpans {
            resource: Bytes::from(resource),
            scope_spans: vec![Bytes::from(ss.encode_to_vec())],
            schema_url: Bytes::new(),
        };
        let req = LazyExportRequest {
            resource_spans: vec![Bytes::from(rs.encode_to_vec())],
        };
        (req.encode_to_vec(), at)
    }

    /// Every known field sent with any other wire type refuses the whole
    /// request (prost would not decode it either), naming the field.
    #[test]
    fn a_known_field_with_another_wire_type_refuses_the_request() {
        let mut cases = 0;
        for (inside, fields) in FIELDS {
            for &(field, wire, name) in *fields {
                for other in [VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32] {
                    if other == wire {
                        continue;
                    }
                    let mut message = Vec::new();
                    put_as(&mut message, field, other);
                    let (bytes, at) = request_holding(*inside, &message);
                    let what = format!("{inside:?}.{name} as wire type {other}");
                    assert!(
                        ExportTraceServiceRequest::decode(bytes.as_slice()).is_err(),
                        "{what}: prost refuses it"
                    );
                    let err = walk(lazy_bytes(bytes)).expect_err(&what);
                    assert_eq!(err.path, format!("{at}.{name}"), "{what}");
                    assert_eq!(err.message, "invalid wire type", "{what}");
                    cases += 1;
                }
            }
            // And with the right wire type, each field alone is taken.
            for &(field, wire, name) in *fields {
                let mut message = Vec::new();
                put_as(&mut message, field, wire);
                let (bytes, _) = request_holding(*inside, &message);
                let what = format!("{inside:?}.{name}");
                ExportTraceServiceRequest::decode(bytes.as_slice()).expect(&what);
                let walked = walk(lazy_bytes(bytes)).expect(&what);
                // An empty trace or span ID is taken as framing, then
                // refused as an ID.
                let by_id = walked.rejected_by.invalid_id;
                assert_eq!(
                    (walked.spans.len() + by_id, walked.rejected - by_id),
                    (1, 0),
                    "{what}"
                );
            }
        }
        // 52 fields of 11 messages, each in five wrong wire types.
        assert_eq!(cases, 52 * 5);
    }

    /// Framing broken inside a nested message refuses the request with
    /// the path to it; so does a stray end-group tag in an unknown field.
    #[test]
    fn broken_framing_inside_a_span_refuses_the_request_with_its_path() {
        // An event whose name claims ten bytes and has two.
        let mut event = Vec::new();
        put_key(&mut event, 2, LEN);
        event.extend_from_slice(&[10, b'a', b'b']);
        let (bytes, _) = request_holding(In::Event, &event);
        let err = walk(lazy_bytes(bytes)).unwrap_err();
        assert_eq!(
            err.path,
            "resource_spans[0].scope_spans[0].spans[0].events[0].name"
        );
        assert_eq!(err.message, "buffer underflow");

        let mut status = Vec::new();
        put_key(&mut status, 20, END_GROUP);
        let (bytes, _) = request_holding(In::Status, &status);
        let err = walk(lazy_bytes(bytes)).unwrap_err();
        assert_eq!(
            err.path,
            "resource_spans[0].scope_spans[0].spans[0].status.<unknown field 20>"
        );
        assert_eq!(err.message, "unexpected end group tag");
    }

    /// Unknown fields are skipped as prost skips them, groups included, up
    /// to prost's bound of 100 nested messages and groups, counted from the
    /// request as the downstream decodes it.
    #[test]
    fn unknown_groups_are_taken_exactly_as_deep_as_prost_takes_them() {
        let groups = |n: usize| {
            let mut g = Vec::new();
            for _ in 0..n {
                put_key(&mut g, 20, START_GROUP);
            }
            for _ in 0..n {
                put_key(&mut g, 20, END_GROUP);
            }
            g
        };
        // Request > ResourceSpans > ScopeSpans > Span > KeyValue > AnyValue.
        for (inside, deepest) in [
            (In::Span, 97),
            (In::Event, 96),
            (In::AnyValue, 95),
            (In::Resource, 98),
            (In::Scope, 97),
        ] {
            for n in [deepest - 1, deepest, deepest + 1] {
                let (bytes, _) = request_holding(inside, &groups(n));
                let what = format!("{inside:?} with {n} nested groups");
                let prost = ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok();
                assert_eq!(prost, n <= deepest, "{what}");
                let walked = walk(lazy_bytes(bytes));
                assert_eq!(walked.is_ok(), prost, "{what}: {walked:?}");
                for k in walked.map(|w| w.spans).unwrap_or_default() {
                    Span::decode(k.span.bytes).expect(&what);
                }
            }
        }
    }
}

mod scan_parity {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use proptest::prelude::*;
    use prost::Message;

    use bytes::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::super::lazy::{LazyResourceSpans, LazyScopeSpans, SpanKeys};
    use super::super::limits::{scan_resource, scan_scope, scan_span, WalkLimits};
    use super::super::wire::span_trace_id_and_name;
    use super::super::LazyExportRequest;
    use super::every_field::{full_resource, full_scope, full_span, put_key, put_len, put_varint};
    use crate::engine::TraceBuilder;
    use crate::ids::TraceId;

    /// Limits no generated message reaches: the scan then refuses only
    /// what a decoder cannot read.
    const GENEROUS: WalkLimits = WalkLimits {
        max_attribute_depth: 32,
        max_attributes: usize::MAX,
        max_attribute_value_bytes: usize::MAX,
    };

    /// A protobuf field as the generator makes it: any number a span,
    /// resource or scope or what they nest uses (and 17, which none does),
    /// any wire type, nested messages and groups.
    #[derive(Debug, Clone)]
    enum Node {
        Varint(u32, u64),
        Fixed64(u32),
        Fixed32(u32),
        Bytes(u32, Vec<u8>),
        Message(u32, Vec<Node>),
        Group(u32, Vec<Node>),
    }

    fn encode(nodes: &[Node], out: &mut Vec<u8>) {
        for n in nodes {
            match n {
                Node::Varint(f, v) => {
                    put_key(out, *f, 0);
                    put_varint(out, *v);
                }
                Node::Fixed64(f) => {
                    put_key(out, *f, 1);
                    out.extend_from_slice(&1.5f64.to_le_bytes());
                }
                Node::Fixed32(f) => {
                    put_key(out, *f, 5);
                    out.extend_from_slice(&[1, 0, 0, 0]);
                }
                Node::Bytes(f, b) => put_len(out, *f, b),
                Node::Message(f, inner) => {
                    let mut m = Vec::new();
                    encode(inner, &mut m);
                    put_len(out, *f, &m);
                }
                Node::Group(f, inner) => {
                    put_key(out, *f, 3);
                    encode(inner, out);
                    put_key(out, *f, 4);
                }
            }
        }
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET /".to_vec()),
            Just("héllo".as_bytes().to_vec()),
            Just(vec![b'a', 0xff]),
            Just(vec![0xc3]),
            Just(vec![7; 16]),
            Just(vec![7; 8]),
            proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    fn nodes() -> impl Strategy<Value = Vec<Node>> {
        let field = 1u32..=17;
        let leaf = prop_oneof![
            (field.clone(), any::<u64>()).prop_map(|(f, v)| Node::Varint(f, v)),
            field.clone().prop_map(Node::Fixed64),
            field.clone().prop_map(Node::Fixed32),
            (field.clone(), payload()).prop_map(|(f, b)| Node::Bytes(f, b)),
        ];
        let node = leaf.prop_recursive(5, 48, 4, move |inner| {
            prop_oneof![
                3 => (1u32..=17, proptest::collection::vec(inner.clone(), 0..4))
                    .prop_map(|(f, n)| Node::Message(f, n)),
                1 => (1u32..=17, proptest::collection::vec(inner, 0..3))
                    .prop_map(|(f, n)| Node::Group(f, n)),
            ]
        });
        proptest::collection::vec(node, 0..8)
    }

    /// `bytes` with `junk` written over them at `at` (`edit` 0), put in
    /// there (1) or as many bytes cut there (2).
    fn damage(mut bytes: Vec<u8>, at: prop::sample::Index, edit: u8, junk: Vec<u8>) -> Vec<u8> {
        let i = at.index(bytes.len());
        match edit {
            0 => {
                for (k, b) in junk.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            1 => {
                bytes.splice(i..i, junk);
            }
            _ => {
                bytes.drain(i..(i + junk.len()).min(bytes.len()));
            }
        }
        bytes
    }

    fn bytes_of(nodes: &[Node]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(nodes, &mut out);
        out
    }

    /// A request carrying `span` with `resource` and `scope`, as the
    /// downstream receives it.
    fn request_of(resource: &[u8], scope: &[u8], span: &[u8]) -> Vec<u8> {
        let ss = LazyScopeSpans {
            scope: Bytes::copy_from_slice(scope),
            spans: vec![Bytes::copy_from_slice(span)],
            schema_url: Bytes::new(),
        };
        let rs = LazyResourceSpans {
            resource: Bytes::copy_from_slice(resource),
            scope_spans: vec![Bytes::from(ss.encode_to_vec())],
            schema_url: Bytes::new(),
        };
        LazyExportRequest {
            resource_spans: vec![Bytes::from(rs.encode_to_vec())],
        }
        .encode_to_vec()
    }

    /// The invariant of the ingest walk: a span it takes is one the
    /// evaluator and prost read, on its own and in the request forwarded
    /// downstream; and it takes every span that request decodes with,
    /// limits apart.
    fn check_span(bytes: &[u8]) -> Result<(), TestCaseError> {
        let downstream = ExportTraceServiceRequest::decode(request_of(&[], &[], bytes).as_slice());
        let scanned = scan_span(bytes, &GENEROUS);
        let taken = matches!(&scanned, Ok(s) if s.refusal.is_none());
        prop_assert_eq!(
            taken,
            downstream.is_ok(),
            "scan {:?}, prost {:?}",
            scanned,
            downstream
        );
        if taken {
            prop_assert!(Span::decode(bytes).is_ok(), "prost cannot read it alone");
            let mut b = TraceBuilder::new(TraceId([1; 16]));
            prop_assert!(
                b.add_encoded(&[], bytes).is_ok(),
                "the evaluator cannot read it"
            );
            prop_assert!(span_trace_id_and_name(bytes).is_ok());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whatever bytes it is given, the scanner never reads IDs that
        /// prost would not: if it takes a span, prost decodes the same keys.
        #[test]
        fn scanner_agrees_with_prost(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(scanned) = scan_span(&bytes, &WalkLimits::default()) {
                let keys = scanned.keys;
                let prost = SpanKeys::decode(bytes.as_slice());
                prop_assert!(prost.is_ok(), "scanner took what prost refuses: {prost:?}");
                let prost = prost.unwrap();
                prop_assert_eq!(keys.trace_id, &prost.trace_id[..]);
                prop_assert_eq!(keys.span_id, &prost.span_id[..]);
                prop_assert_eq!(keys.parent_span_id, &prost.parent_span_id[..]);
            }
            check_span(&bytes)?;
        }

        /// Spans made of arbitrary fields, wire types, strings and nesting:
        /// the scan takes exactly those prost decodes, and the evaluator
        /// reads every one it takes.
        #[test]
        fn a_span_is_taken_exactly_when_prost_and_the_evaluator_read_it(nodes in nodes()) {
            check_span(&bytes_of(&nodes))?;
        }

        /// Arbitrary bytes inside a span that is whole otherwise: any byte
        /// of the full span overwritten, or bytes inserted or cut.
        #[test]
        fn a_span_with_damaged_bytes_is_taken_exactly_when_prost_reads_it(
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            junk in proptest::collection::vec(any::<u8>(), 1..4),
        ) {
            let bytes = damage(full_span().encode_to_vec(), at, edit, junk);
            check_span(&bytes)?;
        }

        /// The same for the full resource and scope.
        #[test]
        fn a_resource_or_scope_with_damaged_bytes_is_taken_exactly_when_prost_reads_it(
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            junk in proptest::collection::vec(any::<u8>(), 1..4),
        ) {
            let span = full_span().encode_to_vec();
            let resource = damage(full_resource().encode_to_vec(), at, edit, junk.clone());
            let downstream = ExportTraceServiceRequest::decode(request_of(&resource, &[], &span).as_slice());
            let scanned = scan_resource(&resource, &GENEROUS);
            prop_assert_eq!(matches!(&scanned, Ok(None)), downstream.is_ok(), "scan {:?}, prost {:?}", scanned, downstream);
            let scope = damage(full_scope().encode_to_vec(), at, edit, junk);
            let downstream = ExportTraceServiceRequest::decode(request_of(&[], &scope, &span).as_slice());
            let scanned = scan_scope(&scope, &GENEROUS);
            prop_assert_eq!(matches!(&scanned, Ok(None)), downstream.is_ok(), "scan {:?}, prost {:?}", scanned, downstream);
        }

        /// The same for a resource and a scope, and the evaluator reads the
        /// resource it is given.
        #[test]
        fn a_resource_or_scope_is_taken_exactly_when_prost_reads_it(nodes in nodes()) {
            let bytes = bytes_of(&nodes);
            let span = full_span().encode_to_vec();
            let resource = scan_resource(&bytes, &GENEROUS);
            let taken = matches!(&resource, Ok(None));
            let downstream = ExportTraceServiceRequest::decode(request_of(&bytes, &[], &span).as_slice());
            prop_assert_eq!(taken, downstream.is_ok(), "scan {:?}, prost {:?}", resource, downstream);
            if taken {
                prop_assert!(Resource::decode(bytes.as_slice()).is_ok());
                let mut b = TraceBuilder::new(TraceId([1; 16]));
                prop_assert!(b.add_encoded(&bytes, &span).is_ok());
            }
            let scope = scan_scope(&bytes, &GENEROUS);
            let taken = matches!(&scope, Ok(None));
            let downstream = ExportTraceServiceRequest::decode(request_of(&[], &bytes, &span).as_slice());
            prop_assert_eq!(taken, downstream.is_ok(), "scan {:?}, prost {:?}", scope, downstream);
            if taken {
                prop_assert!(InstrumentationScope::decode(bytes.as_slice()).is_ok());
            }
        }
    }
}

proptest::proptest! {
    /// The scan's ASCII test agrees with the standard library's, at every
    /// length around its word size.
    #[test]
    fn the_ascii_test_agrees_with_std(bytes in proptest::collection::vec(0u8..=0x80, 0..40)) {
        proptest::prop_assert_eq!(limits::ascii_for_test(&bytes), bytes.is_ascii());
    }
}

/// A request's spans go to many traces, copied out by different shards:
/// they all get the one copy of the request's resource made first, each
/// request its own.
#[test]
fn traces_of_one_request_copied_by_different_shards_share_its_one_copy() {
    let mut shards = [ScopeInterner::default(), ScopeInterner::default()];
    let mut kept = Vec::new();
    for i in 0..100u64 {
        let raw = walked_with_resource(i, 5);
        let first = RawSpan::detach(&raw, &mut shards[0]);
        let second = RawSpan::detach(&raw, &mut shards[1]);
        assert!(Arc::ptr_eq(&first[0].scope, &second[0].scope));
        assert_eq!(
            first[0].scope.resource, raw[0].scope.resource,
            "request {i}"
        );
        // Only the shard that copied first hashed and kept it.
        assert_eq!((shards[0].len(), shards[1].len()), (i as usize + 1, 0));
        kept.push(first);
    }
}
