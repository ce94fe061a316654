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
