//! OTLP wire formats shared by the receiver and the exporter: the lazy
//! protobuf view of trace exports (see `proto/tracecheck/internal/otlp_lazy.proto`)
//! and the walk that splits a request into spans without copying them.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

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

use limits::{NotOtlp, Problem, ViolationKind};

/// The resource and instrumentation scope a group of spans was sent with,
/// shared by every span of that group while they are buffered.
#[derive(Debug, Clone, Default)]
pub struct ScopeContext {
    /// Encoded `Resource`.
    pub resource: Bytes,
    pub resource_schema_url: String,
    /// Encoded `InstrumentationScope`.
    pub scope: Bytes,
    pub scope_schema_url: String,
    /// The memory account's room for copying out the spans of the request
    /// they came in ([`RawSpan::detach`]); `None` on copies.
    pub copy_room: Option<Arc<crate::memory::CopyRoom>>,
    /// On a context as received, its copy once a span of it was copied
    /// out, by whichever shard or evaluator came first: a request's spans
    /// go to many traces, each copied out on its own, and hashing and
    /// comparing the resource's bytes (~0.5 KB) for each was 6 % of the
    /// daemon on split traffic. `None` on copies, which are never copied
    /// again through it (a copy holding its own copy would be a cycle).
    pub copy: Option<std::sync::OnceLock<Arc<ScopeContext>>>,
}

/// Equal when they say the same: where the bytes are, and the accounting
/// of their copying, do not matter.
impl PartialEq for ScopeContext {
    fn eq(&self, other: &Self) -> bool {
        self.resource == other.resource
            && self.resource_schema_url == other.resource_schema_url
            && self.scope == other.scope
            && self.scope_schema_url == other.scope_schema_url
    }
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
    /// one buffer of their own, so that keeping them keeps only their own
    /// bytes: a slice keeps its whole request (hundreds of other spans)
    /// alive. Their resources and scopes are shared through `scopes`. The
    /// caller charges the copies to the memory account: the room reserved
    /// for them when their request was admitted is given back
    /// ([`crate::memory::CopyRoom`]).
    pub fn detach(spans: &[RawSpan], scopes: &mut ScopeInterner) -> Vec<RawSpan> {
        Self::copy(spans, scopes, true)
    }

    /// [`RawSpan::detach`] for a copy kept outside the memory account (the
    /// result store, bounded on its own): the room stays reserved for the
    /// copy the pipeline makes.
    pub fn copy_out(spans: &[RawSpan], scopes: &mut ScopeInterner) -> Vec<RawSpan> {
        Self::copy(spans, scopes, false)
    }

    fn copy(spans: &[RawSpan], scopes: &mut ScopeInterner, hand_over: bool) -> Vec<RawSpan> {
        let mut buf = bytes::BytesMut::with_capacity(spans.iter().map(|s| s.bytes.len()).sum());
        let mut ranges = Vec::with_capacity(spans.len());
        for s in spans {
            let start = buf.len();
            buf.extend_from_slice(&s.bytes);
            ranges.push(start..buf.len());
        }
        let buf = buf.freeze();
        // Spans of one request share one context: the pointer finds it
        // again without hashing its bytes.
        struct Seen<'a> {
            original: &'a Arc<ScopeContext>,
            shared: Arc<ScopeContext>,
            copied: usize,
        }
        let mut seen: Vec<Seen<'_>> = Vec::new();
        let detached = spans
            .iter()
            .zip(ranges)
            .map(|(s, r)| {
                let len = r.len();
                let scope = match seen.iter_mut().find(|k| Arc::ptr_eq(k.original, &s.scope)) {
                    Some(k) => {
                        k.copied += len;
                        Arc::clone(&k.shared)
                    }
                    None => {
                        let shared = match &s.scope.copy {
                            Some(copy) => Arc::clone(copy.get_or_init(|| scopes.intern(&s.scope))),
                            None => scopes.intern(&s.scope),
                        };
                        seen.push(Seen {
                            original: &s.scope,
                            shared: Arc::clone(&shared),
                            copied: len,
                        });
                        shared
                    }
                };
                RawSpan {
                    bytes: buf.slice(r),
                    scope,
                }
            })
            .collect();
        if hand_over {
            for k in &seen {
                if let Some(room) = &k.original.copy_room {
                    room.used(k.copied);
                }
            }
        }
        detached
    }

    /// `spans`, every one holding only its own bytes: the first `own`
    /// already do (detached before), the rest are detached now.
    pub fn detach_rest(
        mut spans: Vec<RawSpan>,
        own: usize,
        scopes: &mut ScopeInterner,
    ) -> Vec<RawSpan> {
        if own >= spans.len() {
            return spans;
        }
        let rest = RawSpan::detach(&spans[own..], scopes);
        spans.truncate(own);
        spans.extend(rest);
        spans
    }
}

/// Contexts a table tracks at most; past it the ones no span holds any more
/// are dropped, and if that is not enough the table starts again (the
/// copies handed out live on in the spans that hold them).
const MAX_INTERNED_SCOPES: usize = 1024;

/// Copies of resources and scopes, one per distinct content, for spans
/// kept beyond their request ([`RawSpan::detach`]). Every span an SDK
/// process sends carries the same resource, so the traces kept share a
/// few copies instead of holding one per trace and fragment: measured
/// under split traffic, those copies were as large as the spans' own bytes
/// (BENCHMARKS.md, "Waiting costs little"). The table holds weak
/// references: a copy lives as long as a span or the request it was
/// copied from holds it ([`ScopeContext::copy`]), not longer.
#[derive(Default)]
pub struct ScopeInterner {
    by_hash: HashMap<u64, Vec<Weak<ScopeContext>>>,
    hasher: ahash::RandomState,
    len: usize,
}

impl ScopeInterner {
    /// A copy of `c` owning its bytes, shared with every earlier call for
    /// the same content.
    pub fn intern(&mut self, c: &ScopeContext) -> Arc<ScopeContext> {
        let hash = self.hasher.hash_one((
            &c.resource[..],
            &c.resource_schema_url,
            &c.scope[..],
            &c.scope_schema_url,
        ));
        if let Some(found) = self
            .by_hash
            .get(&hash)
            .and_then(|v| v.iter().filter_map(Weak::upgrade).find(|k| **k == *c))
        {
            return found;
        }
        if self.len >= MAX_INTERNED_SCOPES {
            self.by_hash.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            self.len = self.by_hash.values().map(Vec::len).sum();
            if self.len >= MAX_INTERNED_SCOPES {
                self.by_hash.clear();
                self.len = 0;
            }
        }
        let copy = Arc::new(ScopeContext {
            resource: Bytes::copy_from_slice(&c.resource),
            resource_schema_url: c.resource_schema_url.clone(),
            scope: Bytes::copy_from_slice(&c.scope),
            scope_schema_url: c.scope_schema_url.clone(),
            copy_room: None,
            copy: None,
        });
        self.by_hash
            .entry(hash)
            .or_default()
            .push(Arc::downgrade(&copy));
        self.len += 1;
        copy
    }

    /// Contexts the table tracks now (some may be held by no span any
    /// more, until it is full).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
    /// A `string` field (of the span, or of its resource or scope) that
    /// is not UTF-8: no protobuf decoder that checks strings would read it.
    pub invalid_utf8: usize,
}

impl Rejections {
    fn count(&mut self, p: &Problem, spans: usize) {
        let n = match p {
            Problem::Limit(v) => match v.kind {
                ViolationKind::TooDeep => &mut self.too_deep,
                ViolationKind::TooManyAttributes => &mut self.too_many_attributes,
                ViolationKind::ValueTooLarge => &mut self.too_large,
            },
            Problem::NotUtf8 => &mut self.invalid_utf8,
        };
        *n += spans;
    }
}

/// What a request holds once walked.
#[derive(Debug, Default)]
pub struct Walked {
    pub spans: Vec<KeyedSpan>,
    /// Spans refused for their IDs, for a field no decoder would read or
    /// for breaking a limit (OTLP partial success); [`Walked::rejected_by`]
    /// says why.
    pub rejected: usize,
    pub rejected_by: Rejections,
    /// The first refusal, for the partial-success message.
    pub rejected_message: Option<String>,
    /// The traces of the refused spans whose trace ID could be read (one
    /// entry per span, so IDs may repeat): they are knowingly incomplete,
    /// and their verdicts must say so rather than fail for a span that
    /// was sent but refused.
    pub refused_traces: Vec<TraceId>,
    /// The request to forward: the received one unchanged, or, when spans
    /// were refused, rebuilt from the received slices without them.
    pub forward: Vec<Bytes>,
}

impl Walked {
    /// Counts one refused span, noting its trace and, for the first,
    /// the partial-success message.
    fn refuse(&mut self, trace_id: Option<TraceId>, message: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.rejected_message.is_none() {
            self.rejected_message = Some(message());
        }
        if let Some(t) = trace_id {
            self.refused_traces.push(t);
        }
    }
}

/// A request whose framing is not OTLP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WalkError {
    pub path: String,
    pub message: String,
}

impl WalkError {
    /// `e`, found in the message at `prefix`.
    fn at(prefix: &str, e: NotOtlp) -> WalkError {
        WalkError {
            path: e.path.under(prefix),
            message: e.error.to_string(),
        }
    }
}

/// Splits a lazily decoded export request into spans with the default
/// [`WalkLimits`]; see [`walk_with`].
pub fn walk(request: LazyExportRequest) -> Result<Walked, WalkError> {
    walk_with(request, &WalkLimits::default())
}

/// A span's trace ID, if it is one (16 bytes, not all zero).
fn trace_id_of(bytes: &[u8]) -> Option<TraceId> {
    TraceId::from_slice(bytes).filter(TraceId::is_valid)
}

/// Splits a lazily decoded export request into spans. Nothing is copied: each
/// span is a slice of `request`'s buffers. Every span, resource and scope is
/// checked as prost's decode would check it ([`limits`]); framing that is not
/// OTLP anywhere refuses the request. Spans whose trace ID is not 16 bytes
/// or whose span ID is not 8 bytes (or all zero), spans with a `string`
/// field that is not UTF-8, and spans that break one of `limits` (or whose
/// resource or scope does either) are refused and left out of
/// [`Walked::forward`].
pub fn walk_with(request: LazyExportRequest, limits: &WalkLimits) -> Result<Walked, WalkError> {
    walk_into(request, limits, None)
}

/// [`walk_with`], the spans' contexts carrying `copy_room`: the memory
/// account's room for copying them out of `request` later.
pub fn walk_into(
    request: LazyExportRequest,
    limits: &WalkLimits,
    copy_room: Option<Arc<crate::memory::CopyRoom>>,
) -> Result<Walked, WalkError> {
    let mut out = Walked::default();
    let mut rebuilt: Option<Vec<Bytes>> = None;
    for (ri, rs_bytes) in request.resource_spans.iter().enumerate() {
        let rs = lazy::LazyResourceSpans::decode(rs_bytes.clone()).map_err(|e| WalkError {
            path: format!("resource_spans[{ri}]"),
            message: e.to_string(),
        })?;
        // A refusal of the resource (or the resource spans' schema URL),
        // with where it is.
        let resource_refusal = match limits::scan_resource(&rs.resource, limits)
            .map_err(|e| WalkError::at(&format!("resource_spans[{ri}].resource"), e))?
        {
            Some(r) => Some((r, format!("resource_spans[{ri}].resource"))),
            None => limits::check_string(&rs.schema_url, "schema_url")
                .map(|r| (r, format!("resource_spans[{ri}]"))),
        };
        let mut kept_scopes: Vec<Bytes> = Vec::with_capacity(rs.scope_spans.len());
        let mut resource_changed = false;
        for (si, ss_bytes) in rs.scope_spans.iter().enumerate() {
            let ss = lazy::LazyScopeSpans::decode(ss_bytes.clone()).map_err(|e| WalkError {
                path: format!("resource_spans[{ri}].scope_spans[{si}]"),
                message: e.to_string(),
            })?;
            // Likewise for the scope.
            let scope_refusal = match limits::scan_scope(&ss.scope, limits).map_err(|e| {
                WalkError::at(&format!("resource_spans[{ri}].scope_spans[{si}].scope"), e)
            })? {
                Some(r) => Some((r, format!("resource_spans[{ri}].scope_spans[{si}].scope"))),
                None => limits::check_string(&ss.schema_url, "schema_url")
                    .map(|r| (r, format!("resource_spans[{ri}].scope_spans[{si}]"))),
            };
            let span_path =
                |pi: usize| format!("resource_spans[{ri}].scope_spans[{si}].spans[{pi}]");
            if let Some((refusal, at)) = resource_refusal.as_ref().or(scope_refusal.as_ref()) {
                // Every span of this scope goes: it cannot be taken without
                // the resource and scope it was sent with. Each is still
                // scanned: for framing, and for its trace, to be marked.
                for (pi, span_bytes) in ss.spans.iter().enumerate() {
                    let scanned = limits::scan_span(span_bytes, limits)
                        .map_err(|e| WalkError::at(&span_path(pi), e))?;
                    out.refuse(trace_id_of(scanned.keys.trace_id), || refusal.message(at));
                }
                out.rejected_by.count(&refusal.problem, ss.spans.len());
                resource_changed = true;
                continue;
            }
            let ctx = Arc::new(ScopeContext {
                resource: rs.resource.clone(),
                // UTF-8: checked above.
                resource_schema_url: String::from_utf8_lossy(&rs.schema_url).into_owned(),
                scope: ss.scope.clone(),
                scope_schema_url: String::from_utf8_lossy(&ss.schema_url).into_owned(),
                copy_room: copy_room.clone(),
                copy: Some(std::sync::OnceLock::new()),
            });
            let mut kept_spans: Option<Vec<Bytes>> = None;
            for (pi, span_bytes) in ss.spans.iter().enumerate() {
                let scanned = limits::scan_span(span_bytes, limits)
                    .map_err(|e| WalkError::at(&span_path(pi), e))?;
                let keys = scanned.keys;
                let trace_id = trace_id_of(keys.trace_id);
                let span_id = SpanId::from_slice(keys.span_id).filter(SpanId::is_valid);
                let (trace_id, span_id) = match (&scanned.refusal, trace_id, span_id) {
                    (None, Some(t), Some(s)) => (t, s),
                    (Some(refusal), _, _) => {
                        out.rejected_by.count(&refusal.problem, 1);
                        out.refuse(trace_id, || refusal.message(&span_path(pi)));
                        kept_spans.get_or_insert_with(|| ss.spans[..pi].to_vec());
                        continue;
                    }
                    (None, _, _) => {
                        out.rejected_by.invalid_id += 1;
                        out.refuse(trace_id, || {
                            format!(
                                "{}: trace_id must be 16 bytes and span_id 8 bytes, not all zero (got {} and {} bytes)",
                                span_path(pi),
                                keys.trace_id.len(),
                                keys.span_id.len()
                            )
                        });
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
                let is_root = SpanId::from_slice(keys.parent_span_id)
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

/// How far deflate can inflate: about 1032 bytes out per byte in. What a
/// gzip body may claim beyond this is a lie, so nothing is reserved for it.
pub const MAX_INFLATION: usize = 1032;

/// The uncompressed size a gzip member's trailer gives (ISIZE, modulo
/// 4 GiB); 0 if there is no trailer.
pub fn gzip_size(raw: &[u8]) -> usize {
    match raw.len().checked_sub(4).and_then(|at| raw.get(at..)) {
        Some(&[a, b, c, d]) if raw.len() >= 18 => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// Decompresses at most `limit` bytes: a gzip bomb stops at the limit
/// instead of allocating what it claims. Concatenated gzip members are read
/// as one body, as HTTP allows.
pub fn gunzip_limited(data: &[u8], limit: usize) -> Result<Bytes, GunzipError> {
    use std::io::Read as _;
    // Sized for the limit (deflate inflates at most about 1032:1) so that
    // reading to the end does not double the buffer past what the caller
    // reserved; handed back no larger than what it holds, as that is
    // what the caller's account goes on to count.
    let mut out = Vec::with_capacity(limit.saturating_add(1).min(data.len().saturating_mul(1032)));
    let decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(GunzipError::Corrupt)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    if out.capacity() - out.len() > out.len() / 8 + 64 {
        out.shrink_to_fit();
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
