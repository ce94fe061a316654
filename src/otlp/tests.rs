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
    let detached = RawSpan::detach(&raw);
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
    assert!(err.path.ends_with("spans[0]"), "{err}");
}

mod scan_parity {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::lazy::SpanKeys;
    use super::super::limits::{scan_span, WalkLimits};

    proptest! {
        /// Whatever bytes it is given, the scanner never reads IDs that
        /// prost would not: if it takes a span, prost decodes the same keys.
        #[test]
        fn scanner_agrees_with_prost(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Ok(keys)) = scan_span(&bytes, &WalkLimits::default()) {
                let prost = SpanKeys::decode(bytes.as_slice());
                prop_assert!(prost.is_ok(), "scanner took what prost refuses: {prost:?}");
                let prost = prost.unwrap();
                prop_assert_eq!(keys.trace_id, &prost.trace_id[..]);
                prop_assert_eq!(keys.span_id, &prost.span_id[..]);
                prop_assert_eq!(keys.parent_span_id, &prost.parent_span_id[..]);
            }
        }
    }
}
