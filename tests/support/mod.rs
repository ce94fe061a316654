//! Shared test fixtures: OTLP JSON lines decoded with tracecheck's own codec.
#![allow(dead_code)]

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Decodes one OTLP JSON `ExportTraceServiceRequest`; panics with the reason.
pub fn decode(line: &str) -> Vec<ResourceSpans> {
    tracecheck::otlp::json::decode_export_request(line.as_bytes())
        .unwrap_or_else(|e| panic!("fixture is not OTLP JSON: {e}"))
        .resource_spans
}
