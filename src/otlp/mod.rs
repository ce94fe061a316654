//! OTLP wire formats shared by the receiver and the exporter: the lazy
//! protobuf view of trace exports (see `proto/tracecheck/internal/otlp_lazy.proto`)
//! and the walk that splits a request into spans without copying them.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::ids::{SpanId, TraceId};

/// Generated from `proto/tracecheck/internal/otlp_lazy.proto`.
#[allow(clippy::all, missing_docs)]
pub mod json;
pub mod limits;
pub(crate) mod wire;

pub mod lazy {
    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
}

pub use lazy::ExportTraceServiceRequest as LazyExportRequest;
pub use limits::WalkLimits;

use limits::{Violation, ViolationKind};

/// The resource and instrumentation scope a group of spans was sent with,
/// shared by every span of that group while they are buffered.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeContext {
    /// Encoded `Resource`.
    pub resource: Bytes,
    pub resource_schema_url: String,
    /// Encoded `InstrumentationScope`.
    pub scope: Bytes,
    pub scope_schema_url: String,
}

/// One span as received: its encoded bytes (a slice of the request buffer)
/// and the resource/scope it came with.
#[derive(Debug, Clone)]
pub struct RawSpan {
    pub bytes: Bytes,
    pub scope: Arc<ScopeContext>,
}

impl RawSpan {
    /// The spans copied out of the request buffers they are slices of, into
    /// one buffer of their own (and their resources and scopes likewise),
    /// so that keeping them keeps only their own bytes: a slice keeps its
    /// whole request (hundreds of other spans) alive.
    pub fn detach(spans: &[RawSpan]) -> Vec<RawSpan> {
        let mut buf = bytes::BytesMut::with_capacity(spans.iter().map(|s| s.bytes.len()).sum());
        let mut ranges = Vec::with_capacity(spans.len());
        for s in spans {
            let start = buf.len();
            buf.extend_from_slice(&s.bytes);
            ranges.push(start..buf.len());
        }
        let buf = buf.freeze();
        let mut scopes: Vec<(*const ScopeContext, Arc<ScopeContext>)> = Vec::new();
        spans
            .iter()
            .zip(ranges)
            .map(|(s, r)| {
                let at = Arc::as_ptr(&s.scope);
                let scope = match scopes.iter().find(|(p, _)| *p == at) {
                    Some((_, c)) => Arc::clone(c),
                    None => {
                        let copy = Arc::new(ScopeContext {
                            resource: Bytes::copy_from_slice(&s.scope.resource),
                            resource_schema_url: s.scope.resource_schema_url.clone(),
                            scope: Bytes::copy_from_slice(&s.scope.scope),
                            scope_schema_url: s.scope.scope_schema_url.clone(),
                        });
                        scopes.push((at, Arc::clone(&copy)));
                        copy
                    }
                };
                RawSpan {
                    bytes: buf.slice(r),
                    scope,
                }
            })
            .collect()
    }
}

/// A span taken from a request, with the keys the assembler needs.
#[derive(Debug, Clone)]
pub struct KeyedSpan {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub is_root: bool,
    pub span: RawSpan,
}

/// Spans rejected by a walk, by why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rejections {
    /// Trace ID not 16 bytes or span ID not 8 bytes (or all zero).
    pub invalid_id: usize,
    /// An attribute value nested deeper than `max_attribute_depth`.
    pub too_deep: usize,
    /// An attribute list longer than `max_attributes`.
    pub too_many_attributes: usize,
    /// An attribute key or value longer than `max_attribute_value_bytes`.
    pub too_large: usize,
}

impl Rejections {
    fn count(&mut self, v: &Violation) {
        match v.kind {
            ViolationKind::TooDeep => self.too_deep += 1,
            ViolationKind::TooManyAttributes => self.too_many_attributes += 1,
            ViolationKind::ValueTooLarge => self.too_large += 1,
        }
    }
}

/// What a request holds once walked.
#[derive(Debug, Default)]
pub struct Walked {
    pub spans: Vec<KeyedSpan>,
    /// Spans refused for their IDs or for breaking a limit (OTLP partial
    /// success); [`Walked::rejected_by`] says why.
    pub rejected: usize,
    pub rejected_by: Rejections,
    /// The first refusal, for the partial-success message.
    pub rejected_message: Option<String>,
    /// The request to forward: the received one unchanged, or, when spans
    /// were refused, rebuilt from the received slices without them.
    pub forward: Vec<Bytes>,
}

/// A request whose framing is not OTLP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WalkError {
    pub path: String,
    pub message: String,
}

/// Splits a lazily decoded export request into spans with the default
/// [`WalkLimits`]; see [`walk_with`].
pub fn walk(request: LazyExportRequest) -> Result<Walked, WalkError> {
    walk_with(request, &WalkLimits::default())
}

/// Splits a lazily decoded export request into spans. Nothing is copied: each
/// span is a slice of `request`'s buffers. Spans whose trace ID is not 16
/// bytes or whose span ID is not 8 bytes (or all zero), and spans that break
/// one of `limits` (or whose resource or scope does), are refused and left
/// out of [`Walked::forward`].
pub fn walk_with(request: LazyExportRequest, limits: &WalkLimits) -> Result<Walked, WalkError> {
    let mut out = Walked::default();
    let mut rebuilt: Option<Vec<Bytes>> = None;
    for (ri, rs_bytes) in request.resource_spans.iter().enumerate() {
        let rs = lazy::LazyResourceSpans::decode(rs_bytes.clone()).map_err(|e| WalkError {
            path: format!("resource_spans[{ri}]"),
            message: e.to_string(),
        })?;
        let resource_violation = limits::scan_resource(&rs.resource, limits)
            .map_err(|e| WalkError {
                path: format!("resource_spans[{ri}].resource"),
                message: e.to_string(),
            })?
            .err();
        let mut kept_scopes: Vec<Bytes> = Vec::with_capacity(rs.scope_spans.len());
        let mut resource_changed = false;
        for (si, ss_bytes) in rs.scope_spans.iter().enumerate() {
            let ss = lazy::LazyScopeSpans::decode(ss_bytes.clone()).map_err(|e| WalkError {
                path: format!("resource_spans[{ri}].scope_spans[{si}]"),
                message: e.to_string(),
            })?;
            let group_violation = match resource_violation {
                Some(v) => Some((v, "resource")),
                None => limits::scan_scope(&ss.scope, limits)
                    .map_err(|e| WalkError {
                        path: format!("resource_spans[{ri}].scope_spans[{si}].scope"),
                        message: e.to_string(),
                    })?
                    .err()
                    .map(|v| (v, "scope")),
            };
            if let Some((v, what)) = group_violation {
                // Every span of this scope goes: it cannot be taken without
                // the resource and scope it was sent with.
                let n = ss.spans.len();
                out.rejected += n;
                for _ in 0..n {
                    out.rejected_by.count(&v);
                }
                if n > 0 && out.rejected_message.is_none() {
                    out.rejected_message = Some(format!(
                        "resource_spans[{ri}].scope_spans[{si}]: {what}: {v}"
                    ));
                }
                resource_changed = true;
                continue;
            }
            let ctx = Arc::new(ScopeContext {
                resource: rs.resource.clone(),
                resource_schema_url: rs.schema_url.clone(),
                scope: ss.scope.clone(),
                scope_schema_url: ss.schema_url.clone(),
            });
            let mut kept_spans: Option<Vec<Bytes>> = None;
            for (pi, span_bytes) in ss.spans.iter().enumerate() {
                let scanned = limits::scan_span(span_bytes, limits).map_err(|e| WalkError {
                    path: format!("resource_spans[{ri}].scope_spans[{si}].spans[{pi}]"),
                    message: e.to_string(),
                })?;
                let checked = scanned.map_err(|v| v.to_string()).and_then(|keys| {
                    let trace_id = TraceId::from_slice(keys.trace_id).filter(TraceId::is_valid);
                    let span_id = SpanId::from_slice(keys.span_id).filter(SpanId::is_valid);
                    match (trace_id, span_id) {
                        (Some(t), Some(s)) => Ok((t, s, keys.parent_span_id)),
                        _ => Err(format!(
                            "trace_id must be 16 bytes and span_id 8 bytes, not all zero (got {} and {} bytes)",
                            keys.trace_id.len(),
                            keys.span_id.len()
                        )),
                    }
                });
                let (trace_id, span_id, parent) = match checked {
                    Ok(k) => k,
                    Err(why) => {
                        out.rejected += 1;
                        match scanned {
                            Err(v) => out.rejected_by.count(&v),
                            Ok(_) => out.rejected_by.invalid_id += 1,
                        }
                        if out.rejected_message.is_none() {
                            out.rejected_message = Some(format!(
                                "resource_spans[{ri}].scope_spans[{si}].spans[{pi}]: {why}"
                            ));
                        }
                        kept_spans.get_or_insert_with(|| ss.spans[..pi].to_vec());
                        continue;
                    }
                };
                if let Some(kept) = kept_spans.as_mut() {
                    kept.push(span_bytes.clone());
                }
                // A parent ID of the wrong length is treated as absent: the
                // span is still forwarded unchanged; only root detection
                // cares, and a broken parent cannot name a span anyway.
                let is_root = SpanId::from_slice(parent)
                    .filter(SpanId::is_valid)
                    .is_none();
                out.spans.push(KeyedSpan {
                    trace_id,
                    span_id,
                    is_root,
                    span: RawSpan {
                        bytes: span_bytes.clone(),
                        scope: Arc::clone(&ctx),
                    },
                });
            }
            match kept_spans {
                None => kept_scopes.push(ss_bytes.clone()),
                Some(spans) => {
                    resource_changed = true;
                    if !spans.is_empty() {
                        kept_scopes.push(Bytes::from(
                            lazy::LazyScopeSpans { spans, ..ss }.encode_to_vec(),
                        ));
                    }
                }
            }
        }
        if resource_changed && rebuilt.is_none() {
            rebuilt = Some(request.resource_spans[..ri].to_vec());
        }
        if let Some(r) = rebuilt.as_mut() {
            if resource_changed {
                if !kept_scopes.is_empty() {
                    r.push(Bytes::from(
                        lazy::LazyResourceSpans {
                            scope_spans: kept_scopes,
                            ..rs
                        }
                        .encode_to_vec(),
                    ));
                }
            } else {
                r.push(rs_bytes.clone());
            }
        }
    }
    out.forward = rebuilt.unwrap_or(request.resource_spans);
    Ok(out)
}

/// A gzip body that cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("decompressed body larger than the limit")]
    TooLarge,
    #[error("{0}")]
    Corrupt(std::io::Error),
}

/// Decompresses at most `limit` bytes: a gzip bomb stops at the limit
/// instead of allocating what it claims. Concatenated gzip members are read
/// as one body, as HTTP allows.
pub fn gunzip_limited(data: &[u8], limit: usize) -> Result<Bytes, GunzipError> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(GunzipError::Corrupt)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// Re-assembles buffered spans into OTLP `ResourceSpans` messages, grouping
/// spans that share a resource and scope, for evaluation, the API and
/// forwarding of single traces.
pub fn to_resource_spans(
    spans: &[RawSpan],
) -> Result<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>, prost::DecodeError> {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut last: Option<*const ScopeContext> = None;
    for s in spans {
        let span = Span::decode(s.bytes.clone())?;
        let ptr = Arc::as_ptr(&s.scope);
        if last == Some(ptr) {
            if let Some(ss) = out.last_mut().and_then(|r| r.scope_spans.last_mut()) {
                ss.spans.push(span);
                continue;
            }
        }
        last = Some(ptr);
        let resource = if s.scope.resource.is_empty() {
            None
        } else {
            Some(Resource::decode(s.scope.resource.clone())?)
        };
        let scope = if s.scope.scope.is_empty() {
            None
        } else {
            Some(InstrumentationScope::decode(s.scope.scope.clone())?)
        };
        out.push(ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                scope,
                spans: vec![span],
                schema_url: s.scope.scope_schema_url.clone(),
            }],
            schema_url: s.scope.resource_schema_url.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
