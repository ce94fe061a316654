//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip-compressed. Answers are in the
//! request's encoding, errors as a `google.rpc.Status` body as the OTLP spec
//! prescribes.
//!
//! Decompressing and decoding JSON cost CPU and memory in proportion to the
//! body (a JSON body takes 10–35× its size while it is decoded): they run at
//! most one per core at a time, charged to the memory account
//! ([`crate::memory`], `decode`) before the expansion happens (gzip by its
//! trailer's size, JSON by [`json::decode_cost`]), so that over the soft
//! limit the sender is told to retry instead of the process growing; work
//! over [`INLINE_DECODE`] runs on the blocking pool, off the runtime's
//! workers that serve every other request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;

use tokio::sync::Semaphore;

use super::ingest::{Ingest, IngestError};
use crate::memory::Part;
use crate::metrics::{RefuseReason, Transport};
use crate::otlp::lazy::{ExportTracePartialSuccess, ExportTraceServiceResponse, RpcStatus};
use crate::otlp::{json, GunzipError, LazyExportRequest, WalkLimits};

/// Bodies to decompress or decode up to this size are decoded on the
/// request's own task: handing them to the blocking pool costs more than
/// decoding them.
const INLINE_DECODE: usize = 64 * 1024;

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    max_body: usize,
    limits: WalkLimits,
    /// One permit per decode running: as many as there are cores.
    decodes: Arc<Semaphore>,
}

pub fn router(ingest: Arc<Ingest>, max_body: usize, limits: WalkLimits) -> Router {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(HttpState {
            ingest,
            max_body,
            limits,
            decodes: Arc::new(Semaphore::new(cores)),
        })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

// gRPC status codes used in error bodies.
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

async fn export(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let metrics = s.ingest.metrics();
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let encoding = match media.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        other => {
            metrics.refused(Transport::http, RefuseReason::unsupported_media_type, 0);
            let msg = format!(
                "unsupported content type {:?}, expected application/x-protobuf or application/json",
                other.unwrap_or("")
            );
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).into_response();
        }
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip") => true,
        Some(other) => {
            metrics.refused(Transport::http, RefuseReason::unsupported_media_type, 0);
            let msg = format!("unsupported content encoding {other:?}, expected gzip or none");
            return error(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                &msg,
                None,
            );
        }
    };
    let too_large = |what: &str| {
        metrics.refused(Transport::http, RefuseReason::too_large, 0);
        let msg = format!("{what} larger than the limit of {} bytes", s.max_body);
        error(
            encoding,
            StatusCode::PAYLOAD_TOO_LARGE,
            RESOURCE_EXHAUSTED,
            &msg,
            None,
        )
    };
    let raw = match Limited::new(body, s.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large("body"),
        Err(e) => {
            let msg = format!("cannot read request body: {e}");
            return error(
                encoding,
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                &msg,
                None,
            );
        }
    };
    let request = if gzip || encoding == Encoding::Json {
        match expand(&s, encoding, gzip, raw).await {
            Ok(r) => r,
            Err(refusal) => return refusal.answer(&s, encoding),
        }
    } else {
        match contained(&s, || decode(encoding, raw)) {
            Ok(Ok(r)) => r,
            Ok(Err(msg)) => return Refusal::Malformed(msg).answer(&s, encoding),
            Err(refusal) => return refusal.answer(&s, encoding),
        }
    };
    match s.ingest.ingest(request, Transport::http, &s.limits).await {
        Ok(a) => {
            let body = match encoding {
                Encoding::Protobuf => ExportTraceServiceResponse {
                    partial_success: (a.rejected_spans > 0 || !a.message.is_empty()).then_some(
                        ExportTracePartialSuccess {
                            rejected_spans: a.rejected_spans as i64,
                            error_message: a.message,
                        },
                    ),
                }
                .encode_to_vec(),
                Encoding::Json => {
                    json::encode_export_response(a.rejected_spans as i64, &a.message).into_bytes()
                }
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(e @ IngestError::Invalid(_)) => error(
            encoding,
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            &e.to_string(),
            None,
        ),
        Err(IngestError::Overloaded {
            message,
            retry_after,
            ..
        }) => error(
            encoding,
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            &message,
            Some(retry_after.as_secs().max(1)),
        ),
        Err(e @ IngestError::ShuttingDown) => error(
            encoding,
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            &e.to_string(),
            Some(super::ingest::RETRY_AFTER.as_secs().max(1)),
        ),
    }
}

/// Why a body was not decoded.
enum Refusal {
    Malformed(String),
    /// Decompressed, larger than the body limit.
    TooLarge,
    /// The memory account is above its soft limit: retry.
    Memory(crate::memory::OverLimit),
    /// Decoding it would need more memory than the limit leaves: never.
    NeverFits {
        needed: usize,
        limit: usize,
    },
    /// The decode panicked (a bug).
    Internal,
}

impl Refusal {
    fn answer(self, s: &HttpState, encoding: Encoding) -> Response {
        let retry = Some(super::ingest::RETRY_AFTER.as_secs().max(1));
        let (reason, status, code, msg, retry_after) = match self {
            Refusal::Malformed(msg) => (
                Some(RefuseReason::malformed),
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                msg,
                None,
            ),
            Refusal::TooLarge => (
                Some(RefuseReason::too_large),
                StatusCode::PAYLOAD_TOO_LARGE,
                RESOURCE_EXHAUSTED,
                format!(
                    "decompressed body larger than the limit of {} bytes",
                    s.max_body
                ),
                None,
            ),
            Refusal::NeverFits { needed, limit } => (
                Some(RefuseReason::too_large),
                StatusCode::PAYLOAD_TOO_LARGE,
                RESOURCE_EXHAUSTED,
                format!("decoding this body takes about {needed} bytes, more than the memory limit of {limit} bytes (assembler.max_memory_mib); send smaller batches (and protobuf rather than JSON)"),
                None,
            ),
            Refusal::Memory(e) => (
                Some(RefuseReason::memory_limit),
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                e.to_string(),
                retry,
            ),
            Refusal::Internal => (
                None,
                StatusCode::INTERNAL_SERVER_ERROR,
                INTERNAL,
                "decoding the request failed inside tracecheck (a bug; please report it)".into(),
                None,
            ),
        };
        if let Some(reason) = reason {
            s.ingest.metrics().refused(Transport::http, reason, 0);
        }
        error(encoding, status, code, &msg, retry_after)
    }
}

/// Decompresses and decodes a gzip or JSON body, one per core at a time,
/// charging what it takes to the memory account before taking it. The
/// body is charged from the start, also while it waits for its turn; the
/// work owns its turn and its charges, so a sender that goes away does not
/// leave a decode running uncounted.
async fn expand(
    s: &HttpState,
    encoding: Encoding,
    gzip: bool,
    raw: Bytes,
) -> Result<LazyExportRequest, Refusal> {
    let memory = Arc::clone(s.ingest.memory());
    let charge = memory.charge(Part::decode, raw.len());
    // The semaphore is never closed.
    let slot = Arc::clone(&s.decodes)
        .acquire_owned()
        .await
        .map_err(|_| Refusal::Internal)?;
    // What inflating will take, by the gzip trailer's own figure, is
    // reserved before any of it is taken, and inflating stops there.
    let inflate_limit = if gzip {
        crate::otlp::gzip_size(&raw)
            .min(s.max_body)
            .min(raw.len().saturating_mul(crate::otlp::MAX_INFLATION))
    } else {
        0
    };
    let size = raw.len().max(inflate_limit);
    let job = Expansion {
        memory,
        raw,
        charge,
        gzip,
        encoding,
        inflate_limit,
        max_body: s.max_body,
        _slot: slot,
    };
    let job = if size <= INLINE_DECODE {
        match contained(s, || job.run(true))? {
            Step::Done(result) => return result,
            Step::OffRuntime(job) => job,
        }
    } else {
        Box::new(job)
    };
    let step = match tokio::task::spawn_blocking(move || job.run(false)).await {
        Ok(step) => step,
        Err(e) if e.is_panic() => return Err(panicked(s, &e)),
        // Not run: the runtime is shutting down.
        Err(_) => return Err(Refusal::Internal),
    };
    match step {
        Step::Done(result) => result,
        // Only an inline run hands the work on.
        Step::OffRuntime(_) => Err(Refusal::Internal),
    }
}

/// One body's decompression and decoding, with the memory and the turn it
/// holds.
struct Expansion {
    memory: Arc<crate::memory::MemoryAccount>,
    raw: Bytes,
    /// The body as it is now: compressed, then inflated.
    charge: crate::memory::Charge,
    gzip: bool,
    encoding: Encoding,
    /// How far inflating may go: the trailer's figure, then `max_body`.
    inflate_limit: usize,
    max_body: usize,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

enum Step {
    Done(Result<LazyExportRequest, Refusal>),
    /// The body inflates to more than its trailer said (several gzip
    /// members, or a trailer that lies): inflating it again, to
    /// `max_body`, is not for the runtime's workers.
    OffRuntime(Box<Expansion>),
}

impl Expansion {
    fn run(mut self, inline: bool) -> Step {
        let body = if self.gzip {
            let needed = self.charge.bytes().saturating_add(self.inflate_limit);
            if !self.memory.fits(needed) {
                return Step::Done(Err(Refusal::NeverFits {
                    needed,
                    limit: self.memory.limit(),
                }));
            }
            let room =
                match self
                    .memory
                    .reserve(Part::decode, self.charge.bytes(), self.inflate_limit)
                {
                    Ok(room) => room,
                    Err(e) => return Step::Done(Err(Refusal::Memory(e))),
                };
            match crate::otlp::gunzip_limited(&self.raw, self.inflate_limit) {
                Ok(body) => {
                    self.raw = Bytes::new();
                    self.charge.set(body.len());
                    drop(room);
                    body
                }
                Err(GunzipError::TooLarge) if self.inflate_limit < self.ceiling() => {
                    drop(room);
                    self.inflate_limit = self.ceiling();
                    if inline {
                        return Step::OffRuntime(Box::new(self));
                    }
                    return self.run(false);
                }
                Err(GunzipError::TooLarge) => return Step::Done(Err(Refusal::TooLarge)),
                Err(GunzipError::Corrupt(e)) => {
                    return Step::Done(Err(Refusal::Malformed(format!("invalid gzip body: {e}"))))
                }
            }
        } else {
            std::mem::take(&mut self.raw)
        };
        Step::Done(self.decode(body))
    }

    /// The most inflating may give: the body limit, or what deflate can
    /// make of the body, if less.
    fn ceiling(&self) -> usize {
        self.max_body
            .min(self.raw.len().saturating_mul(crate::otlp::MAX_INFLATION))
    }

    fn decode(&self, body: Bytes) -> Result<LazyExportRequest, Refusal> {
        let _room = if self.encoding == Encoding::Json {
            let needed = self.charge.bytes().saturating_add(json::decode_cost(&body));
            if !self.memory.fits(needed) {
                return Err(Refusal::NeverFits {
                    needed,
                    limit: self.memory.limit(),
                });
            }
            Some(
                self.memory
                    .reserve(
                        Part::decode,
                        self.charge.bytes(),
                        needed - self.charge.bytes(),
                    )
                    .map_err(Refusal::Memory)?,
            )
        } else {
            None
        };
        decode(self.encoding, body).map_err(Refusal::Malformed)
    }
}

/// Runs decoding work on the request's own task with a panic kept to this
/// request: answered 500 and counted, the connection and the process live on.
fn contained<T>(s: &HttpState, work: impl FnOnce() -> T) -> Result<T, Refusal> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|e| {
        let what = e
            .downcast_ref::<&str>()
            .map(|m| (*m).to_owned())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        panicked(s, &what)
    })
}

fn panicked(s: &HttpState, error: &dyn std::fmt::Display) -> Refusal {
    s.ingest
        .metrics()
        .internal_panics
        .get_or_create(&crate::metrics::PanicLabels { stage: "receiver" })
        .inc();
    tracing::error!(error = %error, "Decoding an OTLP/HTTP body panicked (a bug; please report it).");
    Refusal::Internal
}

fn decode(encoding: Encoding, body: Bytes) -> Result<LazyExportRequest, String> {
    match encoding {
        Encoding::Protobuf => {
            LazyExportRequest::decode(body).map_err(|e| format!("invalid OTLP protobuf body: {e}"))
        }
        Encoding::Json => {
            let full = json::decode_export_request(&body)
                .map_err(|e| format!("invalid OTLP JSON body: {e}"))?;
            // JSON is the rare path: re-encode once so that everything after
            // the receiver sees one wire format.
            LazyExportRequest::decode(Bytes::from(full.encode_to_vec()))
                .map_err(|e| format!("invalid OTLP JSON body: {e}"))
        }
    }
}

fn error(
    encoding: Encoding,
    status: StatusCode,
    code: i32,
    message: &str,
    retry_after_secs: Option<u64>,
) -> Response {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(secs) = retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `receivers.otlp.auth` on HTTP: a request without the right bearer token
/// is answered 401 from its headers alone; its body is never read. Without
/// a token the router is returned untouched.
/// Answers browsers' preflights and marks answers for the origins
/// `cors` allows. Outermost: a preflight carries no token, and must not be
/// refused for want of one.
pub fn with_cors(app: Router, cors: Option<&super::config::CorsConfig>) -> Router {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    let Some(c) = cors.filter(|c| !c.allowed_origins.is_empty()) else {
        return app;
    };
    let patterns = c.allowed_origins.clone();
    let origin = if patterns.iter().any(|p| p == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| patterns.iter().any(|p| glob_match(p, o)))
        })
    };
    let headers = if c.allowed_headers.iter().any(|h| h == "*") {
        AllowHeaders::mirror_request()
    } else {
        let mut names = vec![
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            header::ACCEPT,
        ];
        names.extend(
            c.allowed_headers
                .iter()
                .filter_map(|h| header::HeaderName::from_bytes(h.as_bytes()).ok()),
        );
        AllowHeaders::list(names)
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers(headers);
    if let Some(secs) = c.max_age {
        layer = layer.max_age(std::time::Duration::from_secs(secs));
    }
    app.layer(layer)
}

/// `*` matches any run of characters (the Collector's origin patterns).
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

pub fn with_auth(
    app: Router,
    token: Option<Arc<crate::net::auth::BearerToken>>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Router {
    let Some(token) = token else {
        return app;
    };
    app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let admitted = token.admits(request.headers());
            let metrics = Arc::clone(&metrics);
            async move {
                if admitted {
                    return next.run(request).await;
                }
                metrics.refused(Transport::http, RefuseReason::unauthenticated, 0);
                let json = request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                let encoding = if json {
                    Encoding::Json
                } else {
                    Encoding::Protobuf
                };
                let mut resp = error(
                    encoding,
                    StatusCode::UNAUTHORIZED,
                    UNAUTHENTICATED,
                    crate::net::auth::REFUSAL,
                    None,
                );
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                resp
            }
        },
    ))
}

const UNAUTHENTICATED: i32 = 16;

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn origin_patterns_as_the_collector_writes_them() {
        for (pattern, origin, allowed) in [
            ("https://*.example.com", "https://app.example.com", true),
            ("https://*.example.com", "https://a.b.example.com", true),
            ("https://*.example.com", "https://example.com", false),
            ("https://*.example.com", "http://app.example.com", false),
            (
                "https://*.example.com",
                "https://app.example.com.evil.test",
                false,
            ),
            ("http://localhost:*", "http://localhost:3000", true),
            ("https://app.example.com", "https://app.example.com", true),
            ("https://app.example.com", "https://app.example.co", false),
            ("*", "https://anything", true),
        ] {
            assert_eq!(glob_match(pattern, origin), allowed, "{pattern} {origin}");
        }
    }
}
