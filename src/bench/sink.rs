//! A counting OTLP trace sink for load and integration tests: an OTLP/gRPC
//! `TraceService` and an OTLP/HTTP `/v1/traces` endpoint (protobuf or JSON,
//! plain or gzip) that count requests, spans, unique spans by
//! (trace id, span id), duplicates and unique traces, with optional fault
//! injection, and serve those counts as JSON on `GET /stats`.
//!
//! It runs in-process ([`Sink::start`] gives a [`SinkHandle`]) or as the
//! `sink` command.

use std::collections::HashSet;
use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flate2::read::GzDecoder;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::rpc;
use crate::otlp::json as otlp_json;

/// Largest request body accepted, after decompression.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How long [`SinkHandle::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Faults the sink injects so that client behaviour can be tested.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The first N export requests (over both transports) are refused with
    /// gRPC UNAVAILABLE / HTTP 503.
    pub fail_first: u64,
    /// Every accepted request has up to N spans rejected through partial success.
    pub partial_reject: u64,
    /// Delay advertised with refusals (gRPC RetryInfo, HTTP Retry-After).
    pub retry_after: Option<Duration>,
    /// Requests larger than this (decoded, as the Collector measures) are
    /// refused as grpc-go and the Collector do: RESOURCE_EXHAUSTED
    /// "received message larger than max" / HTTP 413.
    pub max_message_bytes: Option<usize>,
    /// Requests holding a span of this name are refused whole, as invalid
    /// (INVALID_ARGUMENT / HTTP 400), as a downstream refuses a bad span.
    pub refuse_span_named: Option<String>,
}

/// Why the sink refused a request it could decode.
enum Refusal {
    TooLarge(String),
    Invalid(String),
}

/// Where the sink listens and how it behaves; port 0 picks a free port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP `POST /v1/traces`; also answers `GET /stats`.
    pub http: Option<SocketAddr>,
    /// A separate small port for `GET /stats` and `POST /reset`.
    pub stats: Option<SocketAddr>,
    pub faults: Faults,
    /// Keep (trace id, span id) and trace id sets for unique and duplicate
    /// counts; costs about 60 bytes a span.
    pub track_unique: bool,
}

impl SinkConfig {
    /// gRPC and HTTP on free loopback ports, no stats port, no faults.
    pub fn loopback() -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            grpc: Some(any_port),
            http: Some(any_port),
            stats: None,
            faults: Faults::default(),
            track_unique: true,
        }
    }
}

/// What the sink has counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// Export requests received, refused and malformed ones included.
    pub requests: u64,
    /// Requests refused as over `max_message_bytes`.
    #[serde(default)]
    pub refused_too_large: u64,
    /// Requests refused for a span named `refuse_span_named`.
    #[serde(default)]
    pub refused_invalid: u64,
    pub grpc_requests: u64,
    pub http_requests: u64,
    /// Requests refused by fault injection.
    pub failed_requests: u64,
    /// HTTP requests whose body could not be read or decoded.
    pub bad_requests: u64,
    /// Spans accepted (rejected ones excluded), duplicates included.
    pub spans: u64,
    pub rejected_spans: u64,
    pub unique_spans: u64,
    pub duplicate_spans: u64,
    pub unique_traces: u64,
    /// Accepted spans whose trace id is not 16 bytes or span id not 8.
    pub invalid_id_spans: u64,
}

impl fmt::Display for SinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests {} (grpc {}, http {}, refused {}, bad {}); spans {} (unique {}, duplicates {}, rejected {}, invalid ids {}); unique traces {}",
            self.requests,
            self.grpc_requests,
            self.http_requests,
            self.failed_requests,
            self.bad_requests,
            self.spans,
            self.unique_spans,
            self.duplicate_spans,
            self.rejected_spans,
            self.invalid_id_spans,
            self.unique_traces
        )
    }
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("nothing to serve: give a gRPC or an HTTP address")]
    NothingToServe,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts sinks.
pub struct Sink;

impl Sink {
    /// Binds every configured address and serves until the handle is shut
    /// down or dropped.
    pub async fn start(config: SinkConfig) -> Result<SinkHandle, SinkError> {
        if config.grpc.is_none() && config.http.is_none() {
            return Err(SinkError::NothingToServe);
        }
        let state = Arc::new(SinkState {
            faults: config.faults,
            track_unique: config.track_unique,
            arrivals: AtomicU64::new(0),
            tally: Mutex::new(Tally::default()),
            seen: seen_shards(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut handle = SinkHandle {
            grpc_addr: None,
            http_addr: None,
            stats_addr: None,
            state: Arc::clone(&state),
            stop,
            tasks: Vec::new(),
        };
        if let Some(addr) = config.grpc {
            let (listener, local) = bind(addr).await?;
            handle.grpc_addr = Some(local);
            handle.tasks.push(tokio::spawn(serve_grpc(
                listener,
                Arc::clone(&state),
                stopped.clone(),
            )));
        }
        if let Some(addr) = config.http {
            let (listener, local) = bind(addr).await?;
            handle.http_addr = Some(local);
            let app = Router::new()
                .route("/v1/traces", post(http_export))
                .route("/stats", get(http_stats))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .with_state(Arc::clone(&state));
            handle.tasks.push(tokio::spawn(serve_http(
                listener,
                app,
                "http",
                stopped.clone(),
            )));
        }
        if let Some(addr) = config.stats {
            let (listener, local) = bind(addr).await?;
            handle.stats_addr = Some(local);
            let app = Router::new()
                .route("/stats", get(http_stats))
                .route("/reset", post(http_reset))
                .with_state(Arc::clone(&state));
            handle.tasks.push(tokio::spawn(serve_http(
                listener,
                app,
                "stats",
                stopped.clone(),
            )));
        }
        Ok(handle)
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SinkError> {
    let bind_error = |source| SinkError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn serve_grpc(listener: TcpListener, state: Arc<SinkState>, stopped: watch::Receiver<bool>) {
    let service = TraceServiceServer::new(GrpcSink { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_BODY_BYTES);
    let served = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), until_stopped(stopped))
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "sink gRPC server stopped");
    }
}

async fn serve_http(
    listener: TcpListener,
    app: Router,
    name: &'static str,
    stopped: watch::Receiver<bool>,
) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(until_stopped(stopped))
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, server = name, "sink HTTP server stopped");
    }
}

/// A running sink; dropping it stops the servers.
pub struct SinkHandle {
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    stats_addr: Option<SocketAddr>,
    state: Arc<SinkState>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SinkHandle {
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    /// `http://addr` of the gRPC endpoint, as the load generator takes it.
    pub fn grpc_endpoint(&self) -> Option<String> {
        self.grpc_addr.map(|a| format!("http://{a}"))
    }

    /// `http://addr/v1/traces` of the HTTP endpoint.
    pub fn http_endpoint(&self) -> Option<String> {
        self.http_addr.map(|a| format!("http://{a}/v1/traces"))
    }

    pub fn stats(&self) -> SinkStats {
        self.state.snapshot()
    }

    /// Forgets everything counted so far; fault injection starts over too.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops the servers, waiting briefly for open connections, and returns
    /// the final counts.
    pub async fn shutdown(mut self) -> SinkStats {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        self.state.snapshot()
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    stats: SinkStats,
}

/// The IDs seen, split by trace ID over [`SEEN_SHARDS`] locks. One set of a
/// hundred million IDs stalled every request for seconds each time it
/// grew (a rehash under the lock), long enough for a sender's export
/// timeout to fire and its retry to show up as duplicates that the sink
/// itself had caused. Sharded, each rehash is a few hundred times smaller.
#[derive(Debug, Default)]
struct Seen {
    spans: HashSet<(u128, u64), ahash::RandomState>,
    traces: HashSet<u128, ahash::RandomState>,
}

const SEEN_SHARDS: usize = 256;

fn seen_shards() -> Box<[Mutex<Seen>]> {
    (0..SEEN_SHARDS).map(|_| Mutex::default()).collect()
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc,
    Http,
}

struct SinkState {
    faults: Faults,
    track_unique: bool,
    arrivals: AtomicU64,
    tally: Mutex<Tally>,
    seen: Box<[Mutex<Seen>]>,
}

impl SinkState {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> SinkStats {
        self.tally().stats.clone()
    }

    fn reset(&self) {
        let mut tally = self.tally();
        *tally = Tally::default();
        for shard in &*self.seen {
            *shard.lock().unwrap_or_else(PoisonError::into_inner) = Seen::default();
        }
        self.arrivals.store(0, Ordering::Relaxed);
    }

    /// Counts a request; false if fault injection refuses it.
    fn admit(&self, transport: Transport) -> bool {
        let ordinal = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let refused = ordinal < self.faults.fail_first;
        let mut tally = self.tally();
        let stats = &mut tally.stats;
        stats.requests += 1;
        match transport {
            Transport::Grpc => stats.grpc_requests += 1,
            Transport::Http => stats.http_requests += 1,
        }
        if refused {
            stats.failed_requests += 1;
        }
        !refused
    }

    fn bad_request(&self) {
        self.tally().stats.bad_requests += 1;
    }

    /// A refusal `faults` asks for, counted; `size` is the decoded
    /// request's.
    fn refusal(&self, request: &ExportTraceServiceRequest, size: usize) -> Option<Refusal> {
        let refusal = if let Some(max) = self.faults.max_message_bytes.filter(|&m| size > m) {
            self.tally().stats.refused_too_large += 1;
            Refusal::TooLarge(format!(
                "grpc: received message larger than max ({size} vs. {max})"
            ))
        } else {
            let name = self.faults.refuse_span_named.as_deref()?;
            request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .find(|s| s.name == name)?;
            self.tally().stats.refused_invalid += 1;
            Refusal::Invalid(format!("span {name:?} is invalid"))
        };
        Some(refusal)
    }

    /// Counts the spans of an admitted request; returns how many it rejects.
    fn ingest(&self, request: &ExportTraceServiceRequest) -> u64 {
        let spans = || {
            request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
        };
        let total = spans().count() as u64;
        let rejected = self.faults.partial_reject.min(total);
        let accepted = total - rejected;
        let mut guard = self.tally();
        let tally = &mut *guard;
        tally.stats.rejected_spans += rejected;
        for span in spans().take(usize::try_from(accepted).unwrap_or(usize::MAX)) {
            tally.stats.spans += 1;
            let ids = (
                <[u8; 16]>::try_from(span.trace_id.as_slice()),
                <[u8; 8]>::try_from(span.span_id.as_slice()),
            );
            let (Ok(trace_id), Ok(span_id)) = ids else {
                tally.stats.invalid_id_spans += 1;
                continue;
            };
            if !self.track_unique {
                continue;
            }
            let trace_id = u128::from_be_bytes(trace_id);
            let mut seen = self.seen[trace_id as usize % SEEN_SHARDS]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if seen.spans.insert((trace_id, u64::from_be_bytes(span_id))) {
                tally.stats.unique_spans += 1;
            } else {
                tally.stats.duplicate_spans += 1;
            }
            if seen.traces.insert(trace_id) {
                tally.stats.unique_traces += 1;
            }
        }
        rejected
    }

    fn response(&self, rejected: u64) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: rejection_message(rejected),
            }),
        }
    }
}

fn rejection_message(rejected: u64) -> String {
    format!("{rejected} spans rejected by fault injection")
}

struct GrpcSink {
    state: Arc<SinkState>,
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if !self.state.admit(Transport::Grpc) {
            let message = "refused by fault injection";
            return Err(match self.state.faults.retry_after {
                Some(delay) => tonic::Status::with_details(
                    tonic::Code::Unavailable,
                    message,
                    rpc::unavailable_with_retry_info(message, delay),
                ),
                None => tonic::Status::unavailable(message),
            });
        }
        let size = request.get_ref().encoded_len();
        match self.state.refusal(request.get_ref(), size) {
            Some(Refusal::TooLarge(m)) => return Err(tonic::Status::resource_exhausted(m)),
            Some(Refusal::Invalid(m)) => return Err(tonic::Status::invalid_argument(m)),
            None => {}
        }
        let rejected = self.state.ingest(request.get_ref());
        Ok(tonic::Response::new(self.state.response(rejected)))
    }
}

fn plain_error(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// The body as sent, after undoing `Content-Encoding`.
fn decoded_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, (StatusCode, String)> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") => {
            let mut plain = Vec::with_capacity(body.len() * 4);
            let read = GzDecoder::new(body.as_ref())
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut plain);
            match read {
                Err(e) => Err((StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}"))),
                Ok(n) if n > MAX_BODY_BYTES => Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "decompressed body too large".to_owned(),
                )),
                Ok(_) => Ok(Bytes::from(plain)),
            }
        }
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {other:?}"),
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Protobuf,
    Json,
}

fn body_format(headers: &HeaderMap) -> Option<BodyFormat> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(BodyFormat::Protobuf),
        "application/json" => Some(BodyFormat::Json),
        _ => None,
    }
}

async fn http_export(
    State(state): State<Arc<SinkState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.admit(Transport::Http) {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            rpc::status_bytes(rpc::UNAVAILABLE, "refused by fault injection"),
        )
            .into_response();
        if let Some(delay) = state.faults.retry_after {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
    let Some(format) = body_format(&headers) else {
        state.bad_request();
        return plain_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/x-protobuf or application/json".to_owned(),
        );
    };
    let body = match decoded_body(&headers, body) {
        Ok(body) => body,
        Err((status, message)) => {
            state.bad_request();
            return plain_error(status, message);
        }
    };
    let request = match format {
        BodyFormat::Protobuf => {
            ExportTraceServiceRequest::decode(body.as_ref()).map_err(|e| e.to_string())
        }
        BodyFormat::Json => otlp_json::decode_export_request(&body).map_err(|e| e.to_string()),
    };
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            state.bad_request();
            return plain_error(StatusCode::BAD_REQUEST, message);
        }
    };
    match state.refusal(&request, body.len()) {
        Some(Refusal::TooLarge(m)) => return plain_error(StatusCode::PAYLOAD_TOO_LARGE, m),
        Some(Refusal::Invalid(m)) => return plain_error(StatusCode::BAD_REQUEST, m),
        None => {}
    }
    let rejected = state.ingest(&request);
    match format {
        BodyFormat::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            state.response(rejected).encode_to_vec(),
        )
            .into_response(),
        BodyFormat::Json => {
            let message = if rejected > 0 {
                rejection_message(rejected)
            } else {
                String::new()
            };
            (
                [(header::CONTENT_TYPE, "application/json")],
                otlp_json::encode_export_response(
                    i64::try_from(rejected).unwrap_or(i64::MAX),
                    &message,
                ),
            )
                .into_response()
        }
    }
}

async fn http_stats(State(state): State<Arc<SinkState>>) -> Json<SinkStats> {
    Json(state.snapshot())
}

async fn http_reset(State(state): State<Arc<SinkState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}
