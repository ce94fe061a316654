//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip-compressed. Answers are in the
//! request's encoding, errors as a `google.rpc.Status` body as the OTLP spec
//! prescribes.

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

use super::ingest::{Ingest, IngestError};
use crate::otlp::lazy::{ExportTracePartialSuccess, ExportTraceServiceResponse, RpcStatus};
use crate::otlp::{json, GunzipError, LazyExportRequest, WalkLimits};
use crate::results::metrics::{RefuseReason, Transport};

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    max_body: usize,
    limits: WalkLimits,
}

pub fn router(ingest: Arc<Ingest>, max_body: usize, limits: WalkLimits) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(HttpState {
            ingest,
            max_body,
            limits,
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
    let body = if gzip {
        match crate::otlp::gunzip_limited(&raw, s.max_body) {
            Ok(b) => b,
            Err(GunzipError::TooLarge) => return too_large("decompressed body"),
            Err(GunzipError::Corrupt(e)) => {
                metrics.refused(Transport::http, RefuseReason::malformed, 0);
                let msg = format!("invalid gzip body: {e}");
                return error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    INVALID_ARGUMENT,
                    &msg,
                    None,
                );
            }
        }
    } else {
        raw
    };
    let request = match decode(encoding, body) {
        Ok(r) => r,
        Err(msg) => {
            metrics.refused(Transport::http, RefuseReason::malformed, 0);
            return error(
                encoding,
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                &msg,
                None,
            );
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
pub fn with_auth(
    app: Router,
    token: Option<Arc<crate::net::auth::BearerToken>>,
    metrics: Arc<crate::results::metrics::Metrics>,
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
