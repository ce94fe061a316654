//! Cutting what is forwarded to what the downstream takes: received
//! requests (up to the receivers' 20 MiB) into messages of at most
//! `max_request_bytes`, and a batch the downstream refused into parts, so
//! that a size limit or one bad span does not cost every span sent with it.
//!
//! A part is an encoded `ResourceSpans` carrying the resource and scope of
//! the spans it holds, the spans' own bytes unchanged. Only what has to be
//! cut is re-framed: a `ResourceSpans` or `ScopeSpans` cut in pieces loses
//! fields that OTLP does not define (those a newer sender might add beside
//! the resource, scope and spans), which the lazy view does not keep.

use bytes::Bytes;
use prost::encoding::encoded_len_varint;
use prost::Message;

use crate::otlp::lazy::{LazyResourceSpans, LazyScopeSpans};

/// One encoded `ResourceSpans` and the spans it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub resource_spans: Bytes,
    pub spans: usize,
}

/// Bytes a `bytes` field of `len` takes in its message (tag, length, body),
/// or none when empty (proto3 leaves it out).
fn field(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + encoded_len_varint(len as u64) + len
    }
}

/// Bytes an element of a repeated `bytes` field of `len` takes (written
/// even when empty).
fn element(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Size of an `ExportTraceServiceRequest` holding these `ResourceSpans`.
pub fn request_len<'a>(resource_spans: impl IntoIterator<Item = &'a Bytes>) -> usize {
    resource_spans.into_iter().map(|b| element(b.len())).sum()
}

/// Spans in one encoded `ResourceSpans`.
pub fn count_spans(resource_spans: &Bytes) -> Result<usize, prost::DecodeError> {
    let rs = LazyResourceSpans::decode(resource_spans.clone())?;
    rs.scope_spans.into_iter().try_fold(0, |n, ss| {
        LazyScopeSpans::decode(ss).map(|ss| n + ss.spans.len())
    })
}

/// `resource_spans` as parts each of which, alone in a request, makes a
/// request of at most `limit` bytes and holds at most `max_spans` spans,
/// the spans in their order. A span too large for `limit` on its own is a
/// part of its own (the downstream will refuse it, and it is counted then).
pub fn split(
    resource_spans: &Bytes,
    limit: usize,
    max_spans: usize,
) -> Result<Vec<Part>, prost::DecodeError> {
    let mut rs = LazyResourceSpans::decode(resource_spans.clone())?;
    let rs_fixed = field(rs.resource.len()) + field(rs.schema_url.len());
    let mut parts = Vec::new();
    let mut open = Open::new(rs_fixed);
    for ss in std::mem::take(&mut rs.scope_spans) {
        let mut ss = LazyScopeSpans::decode(ss)?;
        let ss_fixed = field(ss.scope.len()) + field(ss.schema_url.len());
        let mut chunk: Vec<Bytes> = Vec::new();
        let mut chunk_len = ss_fixed;
        for span in std::mem::take(&mut ss.spans) {
            let add = element(span.len());
            let after = element(open.len + element(chunk_len + add));
            if (after > limit || open.spans >= max_spans) && open.spans > 0 {
                open.close_chunk(&ss, std::mem::take(&mut chunk), chunk_len);
                parts.push(open.finish(&rs));
                open = Open::new(rs_fixed);
                chunk_len = ss_fixed;
            }
            chunk.push(span);
            chunk_len += add;
            open.spans += 1;
        }
        if !chunk.is_empty() {
            open.close_chunk(&ss, chunk, chunk_len);
        }
    }
    if open.spans > 0 || parts.is_empty() {
        parts.push(open.finish(&rs));
    }
    Ok(parts)
}

/// The part being filled by [`split`].
struct Open {
    scope_spans: Vec<Bytes>,
    /// Encoded length of the `ResourceSpans` so far.
    len: usize,
    spans: usize,
}

impl Open {
    fn new(fixed: usize) -> Self {
        Self {
            scope_spans: Vec::new(),
            len: fixed,
            spans: 0,
        }
    }

    fn close_chunk(&mut self, ss: &LazyScopeSpans, spans: Vec<Bytes>, len: usize) {
        if spans.is_empty() {
            return;
        }
        let encoded = LazyScopeSpans {
            scope: ss.scope.clone(),
            spans,
            schema_url: ss.schema_url.clone(),
        }
        .encode_to_vec();
        debug_assert_eq!(encoded.len(), len);
        self.len += element(encoded.len());
        self.scope_spans.push(Bytes::from(encoded));
    }

    fn finish(self, rs: &LazyResourceSpans) -> Part {
        let encoded = LazyResourceSpans {
            resource: rs.resource.clone(),
            scope_spans: self.scope_spans,
            schema_url: rs.schema_url.clone(),
        }
        .encode_to_vec();
        debug_assert_eq!(encoded.len(), self.len);
        Part {
            resource_spans: Bytes::from(encoded),
            spans: self.spans,
        }
    }
}

/// Two halves of a message: the parts to send first, and the rest.
pub type Halves = (Vec<Part>, Vec<Part>);

/// A refused message cut in two, to be sent apart: by whole elements at
/// about half the spans, or, for a single element, at about half its bytes; `None` when it holds a single span (or none), which cannot be
/// cut. Each part's `spans` must be its count, as [`count_spans`] gives.
pub fn halve(parts: Vec<Part>) -> Result<Option<Halves>, prost::DecodeError> {
    // An element without spans carries nothing to deliver.
    let parts: Vec<Part> = parts.into_iter().filter(|p| p.spans > 0).collect();
    let total: usize = parts.iter().map(|p| p.spans).sum();
    if total <= 1 {
        return Ok(None);
    }
    if let [only] = parts.as_slice() {
        // Half its size makes at least two parts of one or more spans.
        let half = (request_len([&only.resource_spans]) / 2).max(1);
        let mut pieces = split(&only.resource_spans, half, usize::MAX)?;
        if pieces.len() < 2 {
            return Ok(None);
        }
        let right = pieces.split_off(pieces.len() / 2);
        return Ok(Some((pieces, right)));
    }
    // Whole elements, in order, cut where the count of spans passes half:
    // every element has a span, so the last one always goes right.
    let mut left = Vec::new();
    let mut right = Vec::new();
    let mut seen = 0;
    for p in parts {
        if right.is_empty() && (left.is_empty() || seen + p.spans <= total / 2) {
            seen += p.spans;
            left.push(p);
        } else {
            right.push(p);
        }
    }
    Ok(Some((left, right)))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::otlp::LazyExportRequest;

    fn span(i: u32, pad: usize) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: (u64::from(i) + 1).to_be_bytes().to_vec(),
            name: format!("span {i} {}", "x".repeat(pad)),
            ..Default::default()
        }
    }

    fn resource_spans(scopes: &[(&str, Vec<Span>)]) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: scopes
                .iter()
                .map(|(name, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: (*name).into(),
                        ..Default::default()
                    }),
                    spans: spans.clone(),
                    schema_url: format!("https://schemas/{name}"),
                })
                .collect(),
            schema_url: "https://schemas/resource".into(),
        }
    }

    /// Each part decoded as OTLP, flattened to (resource, scope, span).
    fn flatten(parts: &[Part]) -> Vec<(Option<Resource>, Option<InstrumentationScope>, Span)> {
        let request = ExportTraceServiceRequest::decode(
            LazyExportRequest {
                resource_spans: parts.iter().map(|p| p.resource_spans.clone()).collect(),
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        request
            .resource_spans
            .into_iter()
            .flat_map(|rs| {
                assert_eq!(rs.schema_url, "https://schemas/resource");
                let resource = rs.resource;
                rs.scope_spans.into_iter().flat_map(move |ss| {
                    let resource = resource.clone();
                    ss.spans
                        .into_iter()
                        .map(move |s| (resource.clone(), ss.scope.clone(), s))
                })
            })
            .collect()
    }

    fn encoded(rs: &ResourceSpans) -> Bytes {
        Bytes::from(rs.encode_to_vec())
    }

    #[test]
    fn an_oversize_resource_spans_becomes_parts_under_the_limit_with_every_span_once() {
        let spans = |from: u32, n: u32| (from..from + n).map(|i| span(i, 300)).collect();
        let rs = resource_spans(&[("http", spans(0, 40)), ("db", spans(40, 25))]);
        let whole = encoded(&rs);
        let limit = 4096;
        assert!(request_len([&whole]) > limit);

        let parts = split(&whole, limit, usize::MAX).unwrap();
        assert!(parts.len() > 3, "{} parts", parts.len());
        for p in &parts {
            assert!(request_len([&p.resource_spans]) <= limit);
            assert_eq!(count_spans(&p.resource_spans).unwrap(), p.spans);
        }
        assert_eq!(parts.iter().map(|p| p.spans).sum::<usize>(), 65);
        let before = flatten(&[Part {
            resource_spans: whole,
            spans: 65,
        }]);
        assert_eq!(
            flatten(&parts),
            before,
            "same spans, order, resource and scopes"
        );
    }

    #[test]
    fn a_resource_spans_under_the_limit_is_one_part_and_a_huge_span_is_a_part_alone() {
        let rs = resource_spans(&[("http", vec![span(0, 10), span(1, 10)])]);
        let whole = encoded(&rs);
        let parts = split(&whole, 1 << 20, usize::MAX).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].spans, 2);
        assert_eq!(
            flatten(&parts),
            flatten(&[Part {
                resource_spans: whole,
                spans: 2
            }])
        );

        let rs = resource_spans(&[("http", vec![span(0, 10), span(1, 5000), span(2, 10)])]);
        let parts = split(&encoded(&rs), 1000, usize::MAX).unwrap();
        assert_eq!(parts.iter().map(|p| p.spans).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(request_len([&parts[1].resource_spans]) > 1000);
    }

    /// Some downstreams take a bounded count of spans a message as well
    /// (rotel drops what it cannot fit in two of its batches).
    #[test]
    fn parts_hold_at_most_max_spans() {
        let rs = resource_spans(&[
            ("http", (0..10).map(|i| span(i, 5)).collect()),
            ("db", (10..17).map(|i| span(i, 5)).collect()),
        ]);
        let whole = encoded(&rs);
        let parts = split(&whole, 1 << 20, 4).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.spans).collect::<Vec<_>>(),
            [4, 4, 4, 4, 1]
        );
        assert_eq!(
            flatten(&parts),
            flatten(&[Part {
                resource_spans: whole,
                spans: 17
            }])
        );
    }

    #[test]
    fn halving_cuts_until_single_spans_and_keeps_every_span() {
        let rs = resource_spans(&[("http", (0..7).map(|i| span(i, 20)).collect())]);
        let whole = Part {
            resource_spans: encoded(&rs),
            spans: 7,
        };
        let everything = flatten(std::slice::from_ref(&whole));
        let mut queue = vec![vec![whole]];
        let mut singles = Vec::new();
        while let Some(parts) = queue.pop() {
            match halve(parts.clone()).unwrap() {
                Some((left, right)) => {
                    let n = |v: &[Part]| v.iter().map(|p| p.spans).sum::<usize>();
                    assert!(n(&left) >= 1 && n(&right) >= 1);
                    assert_eq!(n(&left) + n(&right), n(&parts));
                    queue.push(right);
                    queue.push(left);
                }
                None => {
                    assert_eq!(parts.iter().map(|p| p.spans).sum::<usize>(), 1);
                    singles.extend(parts);
                }
            }
        }
        assert_eq!(singles.len(), 7);
        assert_eq!(flatten(&singles), everything);
    }
}
