//! One export call to the downstream, over gRPC or HTTP/protobuf, and what
//! its answer means for retrying.
//!
//! gRPC is framed here rather than by a generated tonic client: a batch is
//! encoded, gzip-compressed (at the fast level unless `compression_params`
//! says otherwise) and framed once, and every
//! attempt sends the same bytes over tonic's `Channel`. tonic's own
//! compression runs at level 6 on every attempt and was ~40% of the
//! daemon's CPU (BENCHMARKS.md, "Profile").
//!
//! `http://` endpoints are plain text, through tonic's own connector and
//! reqwest as before. `https://` endpoints go through rustls (ring) by way
//! of hyper-rustls, for both protocols: reqwest's own rustls feature would
//! bring aws-lc-rs, and without it reqwest has no TLS.

use std::io::Read as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use bytes::Bytes;
use prost::Message;
use tonic::transport::Channel;

use super::config::{Compression, OtlpExporterConfig, Protocol};
use crate::net::auth::{AuthError, BearerToken};
use crate::net::client::error_chain;
use crate::net::tls::{self, TlsError};
use crate::otlp::lazy::{ExportTraceServiceResponse, RpcStatus};
use crate::otlp::LazyExportRequest;

/// A failed export call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    /// Whether the OTLP spec allows sending the same data again.
    pub retryable: bool,
    /// What the refusal says about the data, for what to send instead.
    pub refused: Refused,
    /// The downstream's own wish (gRPC RetryInfo, HTTP Retry-After).
    pub retry_after: Option<Duration>,
    pub message: String,
}

/// What a refusal says about the message refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Nothing about the data (unavailable, unauthorized, a timeout…).
    Other,
    /// The message is over the downstream's size limit: smaller ones go.
    TooLarge,
    /// Something in the message is invalid (gRPC `INVALID_ARGUMENT`, HTTP
    /// 400): it may be one span of many.
    BadData,
}

/// The downstream took the call; it may still have refused some spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    pub rejected_spans: u64,
    pub message: String,
}

/// A config the exporter cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("exporters.otlp.endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("exporters.otlp.headers: {0:?} is not a valid header")]
    Header(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("exporters.otlp.tls is set but the endpoint {0:?} is not https://")]
    TlsWithoutHttps(String),
}

pub enum Client {
    Grpc {
        channel: Channel,
        /// The gzip level, if compressed.
        gzip: Option<u32>,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        auth: Option<Arc<BearerToken>>,
        timeout: Duration,
    },
    Http {
        backend: HttpBackend,
        url: String,
        gzip: Option<u32>,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        auth: Option<Arc<BearerToken>>,
        timeout: Duration,
    },
}

/// How HTTP/protobuf reaches the downstream.
pub enum HttpBackend {
    /// `http://`
    Plain(reqwest::Client),
    /// `https://` (boxed: the client is large, and one per exporter)
    Tls(Box<TlsHttpClient>),
}

type TlsHttpClient =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, http_body_util::Full<Bytes>>;

/// Largest answer body read from a downstream (answers are a few bytes).
const MAX_ANSWER: usize = 1 << 20;

/// A TCP connector for rustls to wrap: it must let `https://` through.
fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

fn is_https(endpoint: &str) -> bool {
    endpoint
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// A batch encoded, compressed and (for gRPC) framed once, for every attempt.
pub enum Payload {
    Grpc(Bytes),
    Http { body: Bytes, gzipped: bool },
}

/// The OTLP trace export method.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Client {
    pub fn new(
        c: &OtlpExporterConfig,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Result<Self, ClientError> {
        let https = is_https(&c.endpoint);
        if c.tls.is_some() && !https {
            return Err(ClientError::TlsWithoutHttps(c.endpoint.clone()));
        }
        let tls_config = c.tls.clone().unwrap_or_default();
        let connect_timeout = c.timeout.min(Duration::from_secs(5));
        let auth = match &c.auth {
            Some(a) => {
                let t = BearerToken::load(a, "exporters.otlp.auth")?;
                // Ends with the client: the watch holds only a weak reference.
                t.spawn_watch(tokio_util::sync::CancellationToken::new());
                Some(t)
            }
            None => None,
        };
        match c.protocol {
            Protocol::Grpc => {
                // With TLS, tonic is given the endpoint as http:// and the
                // connector puts https back (`net::client::grpc_channel`
                // says why); here the TLS config reloads its files.
                let uri = if https {
                    format!("http://{}", &c.endpoint[8..])
                } else {
                    c.endpoint.clone()
                };
                // HTTP/2 pings, so that a downstream which keeps the TCP
                // connection open but stops answering (a hung process, a
                // black-holing middlebox) is noticed and the connection
                // replaced; without them every retry would queue on the
                // same dead connection for ever.
                let ping = c.timeout.max(Duration::from_secs(1));
                let endpoint = Channel::from_shared(uri)
                    .map_err(|e| ClientError::Endpoint(c.endpoint.clone(), e.to_string()))?
                    .timeout(c.timeout)
                    .connect_timeout(connect_timeout)
                    .http2_keep_alive_interval(ping)
                    .keep_alive_timeout(ping)
                    .keep_alive_while_idle(false);
                let channel = if https {
                    let config = client_tls(&tls_config, metrics)?;
                    let connector =
                        crate::net::client::https_connector(config, tcp_connector(connect_timeout));
                    endpoint.connect_with_connector_lazy(connector)
                } else {
                    endpoint.connect_lazy()
                };
                Ok(Client::Grpc {
                    channel,
                    gzip: (c.compression == Compression::Gzip).then(|| c.gzip_level()),
                    headers: header_list(c)?,
                    auth,
                    timeout: c.timeout,
                })
            }
            Protocol::HttpProtobuf => {
                let url = http_url(&c.endpoint)
                    .map_err(|e| ClientError::Endpoint(c.endpoint.clone(), e))?;
                let backend = if https {
                    let config = client_tls(&tls_config, metrics)?;
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_only()
                        .enable_all_versions()
                        .wrap_connector(tcp_connector(connect_timeout));
                    HttpBackend::Tls(Box::new(
                        hyper_util::client::legacy::Client::builder(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .build(connector),
                    ))
                } else {
                    HttpBackend::Plain(
                        crate::net::client::builder(None, "exporters.otlp")?
                            .timeout(c.timeout)
                            .build()
                            .map_err(|e| {
                                ClientError::Endpoint(c.endpoint.clone(), e.to_string())
                            })?,
                    )
                };
                Ok(Client::Http {
                    backend,
                    url,
                    gzip: (c.compression == Compression::Gzip).then(|| c.gzip_level()),
                    headers: header_list(c)?,
                    auth,
                    timeout: c.timeout,
                })
            }
        }
    }

    /// How this client's payloads are made, to make them away from it.
    pub fn encoding(&self) -> Encoding {
        match self {
            Client::Grpc { gzip, .. } => Encoding::Grpc { gzip: *gzip },
            Client::Http { gzip, .. } => Encoding::Http { gzip: *gzip },
        }
    }
}

/// How a batch becomes what is sent: framed for gRPC or a plain body, and
/// compressed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip`: the level, if compressed.
    Grpc {
        gzip: Option<u32>,
    },
    Http {
        gzip: Option<u32>,
    },
}

impl Encoding {
    /// Encodes a batch once, for every attempt. CPU in proportion to the
    /// batch (compression above all): the caller runs large ones off the
    /// async runtime.
    pub fn payload(self, resource_spans: Vec<Bytes>) -> Payload {
        let body = LazyExportRequest { resource_spans }.encode_to_vec();
        match self {
            Encoding::Grpc { gzip } => {
                let (flag, message) = match gzip.and_then(|level| gzip_at(&body, level)) {
                    Some(gz) => (1u8, gz),
                    None => (0u8, body),
                };
                // gRPC message frame: compressed flag, big-endian length.
                let mut framed = Vec::with_capacity(5 + message.len());
                framed.push(flag);
                framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                framed.extend_from_slice(&message);
                Payload::Grpc(Bytes::from(framed))
            }
            Encoding::Http { gzip } => {
                let (body, gzipped) = match gzip.and_then(|level| gzip_at(&body, level)) {
                    Some(gz) => (gz, true),
                    None => (body, false),
                };
                Payload::Http {
                    body: Bytes::from(body),
                    gzipped,
                }
            }
        }
    }
}

impl Client {
    pub async fn export(&self, payload: &Payload) -> Result<Exported, ExportError> {
        match (self, payload) {
            (
                Client::Grpc {
                    channel,
                    gzip,
                    headers,
                    auth,
                    timeout,
                },
                Payload::Grpc(framed),
            ) => {
                let call = grpc_call(
                    channel,
                    gzip.is_some(),
                    headers,
                    auth.as_deref(),
                    framed,
                    *timeout,
                );
                match tokio::time::timeout(*timeout, call).await {
                    Ok(Ok(answer)) => Ok(exported(answer)),
                    Ok(Err(status)) => Err(grpc_error(&status)),
                    Err(_) => Err(grpc_error(&tonic::Status::deadline_exceeded(format!(
                        "no answer within {timeout:?}"
                    )))),
                }
            }
            (
                Client::Http {
                    backend,
                    url,
                    headers,
                    auth,
                    timeout,
                    ..
                },
                Payload::Http { body, gzipped },
            ) => {
                let mut all = http::HeaderMap::with_capacity(headers.len() + 3);
                all.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                if *gzipped {
                    all.insert(
                        http::header::CONTENT_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                }
                for (k, v) in headers {
                    all.insert(k.clone(), v.clone());
                }
                if let Some(token) = auth {
                    all.insert(http::header::AUTHORIZATION, token.header_value());
                }
                let (status, resp_headers, body) = post(backend, url, all, body.clone(), *timeout)
                    .await
                    .map_err(|message| ExportError {
                        retryable: true,
                        refused: Refused::Other,
                        retry_after: None,
                        message: format!("POST {url}: {message}"),
                    })?;
                let retry_after = resp_headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if status.is_success() {
                    let answer = ExportTraceServiceResponse::decode(body).unwrap_or_default();
                    return Ok(exported(answer));
                }
                let detail = RpcStatus::decode(body.clone())
                    .ok()
                    .map(|s| s.message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                Err(ExportError {
                    retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    // The Collector answers a body over its limit with 400
                    // ("http: request body too large"), not 413.
                    refused: match status.as_u16() {
                        413 => Refused::TooLarge,
                        400 if says_too_large(&detail) => Refused::TooLarge,
                        400 => Refused::BadData,
                        _ => Refused::Other,
                    },
                    retry_after,
                    message: format!("POST {url}: HTTP {status}: {detail}"),
                })
            }
            _ => Err(ExportError {
                retryable: false,
                refused: Refused::Other,
                retry_after: None,
                message: "payload encoded for another protocol".into(),
            }),
        }
    }
}

/// The exporter's TLS: certificates re-read when their files change,
/// labelled `exporter` in the TLS reload metrics.
fn client_tls(
    c: &tls::ClientTlsConfig,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<rustls::ClientConfig, ClientError> {
    let t = tls::ClientTls::load(c, "exporters.otlp.tls")?;
    t.spawn_reload("exporter", Arc::clone(metrics));
    Ok(t.rustls_config()?)
}

/// `exporters.otlp.headers` as request headers (gRPC metadata keys are
/// lowercase); values stay marked sensitive.
fn header_list(
    c: &OtlpExporterConfig,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ClientError> {
    c.headers
        .iter()
        .map(|(k, v)| {
            let key = http::HeaderName::from_str(&k.to_ascii_lowercase())
                .map_err(|_| ClientError::Header(k.clone()))?;
            let mut value = http::HeaderValue::from_str(v.expose())
                .map_err(|_| ClientError::Header(k.clone()))?;
            value.set_sensitive(true);
            Ok((key, value))
        })
        .collect()
}

/// gzip at `level` (1, the fast level, unless `compression_params.level`
/// says otherwise: OTLP's repeated keys and IDs compress nearly as well at
/// level 1 as at level 6, for a fraction of the CPU).
///
/// The deflate state (a few hundred KiB of window and hash tables) is kept
/// per thread and reset between bodies: allocating and zeroing it for every
/// batch cost more than compressing a small one. A thread that meets
/// another level (exporters configured apart) makes a new one.
///
/// `None` if deflate failed, which it does not on a valid state: the body
/// then goes uncompressed and says so.
fn gzip_at(body: &[u8], level: u32) -> Option<Vec<u8>> {
    thread_local! {
        static DEFLATE: std::cell::RefCell<(u32, flate2::Compress)> =
            std::cell::RefCell::new((1, flate2::Compress::new(flate2::Compression::fast(), false)));
    }
    // RFC 1952: magic, CM=deflate, no flags, no mtime, XFL, OS=unknown.
    let xfl = if level <= 1 { 4 } else { 0 };
    let header: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255];
    let mut out = Vec::with_capacity(header.len() + body.len() / 4 + 64);
    out.extend_from_slice(&header);
    let deflated = DEFLATE.with(|cell| {
        let mut state = cell.borrow_mut();
        if state.0 != level {
            *state = (
                level,
                flate2::Compress::new(flate2::Compression::new(level), false),
            );
        }
        let d = &mut state.1;
        d.reset();
        loop {
            let consumed = d.total_in() as usize;
            match d.compress_vec(&body[consumed..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => return true,
                Ok(_) => out.reserve(out.capacity().max(4096)),
                Err(_) => return false,
            }
        }
    });
    if !deflated {
        return None;
    }
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    Some(out)
}

/// One unary `TraceService/Export` call with a pre-framed message. A
/// transport failure is UNAVAILABLE, as tonic would report it.
async fn grpc_call(
    channel: &Channel,
    gzip: bool,
    headers: &[(http::HeaderName, http::HeaderValue)],
    auth: Option<&BearerToken>,
    framed: &Bytes,
    timeout: Duration,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    use tower::ServiceExt as _;

    let mut req = http::Request::post(GRPC_PATH)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-accept-encoding", "gzip,identity")
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
        .body(tonic::body::Body::new(http_body_util::Full::new(
            framed.clone(),
        )))
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let h = req.headers_mut();
    if gzip {
        h.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
    }
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    if let Some(token) = auth {
        h.insert(http::header::AUTHORIZATION, token.header_value());
    }
    let resp = channel
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("transport: {}", error_chain(&e))))?;
    let (parts, body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        // Not a gRPC answer (a proxy's error page): map as gRPC does.
        let code = match parts.status.as_u16() {
            429 | 502 | 503 | 504 => tonic::Code::Unavailable,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::Unimplemented,
            _ => tonic::Code::Unknown,
        };
        return Err(tonic::Status::new(
            code,
            format!("HTTP {} instead of a gRPC answer", parts.status),
        ));
    }
    // A trailers-only answer carries the status in the headers.
    if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
        return Ok(ExportTraceServiceResponse::default());
    }
    let collected = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("reading the answer: {e}")))?;
    // No grpc-status at all: the stream was cut (a proxy's timeout resets
    // it, which reads as a clean end); the batch may not have been taken.
    match collected
        .trailers()
        .and_then(tonic::Status::from_header_map)
    {
        Some(status) if status.code() != tonic::Code::Ok => return Err(status),
        Some(_) => {}
        None => {
            return Err(tonic::Status::unavailable(
                "the answer ended without a grpc-status",
            ))
        }
    }
    let data = collected.to_bytes();
    if data.len() < 5 {
        // No message: an empty answer means nothing was rejected.
        return Ok(ExportTraceServiceResponse::default());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let message = data.slice(5..(5 + len).min(data.len()));
    let message = if data[0] == 1 {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(&message[..]).take(MAX_ANSWER as u64);
        std::io::Read::read_to_end(&mut dec, &mut out)
            .map_err(|e| tonic::Status::internal(format!("answer not gzip: {e}")))?;
        Bytes::from(out)
    } else {
        message
    };
    ExportTraceServiceResponse::decode(message)
        .map_err(|e| tonic::Status::internal(format!("answer not OTLP: {e}")))
}

/// One POST; a transport failure (connect, TLS, timeout) is the error.
async fn post(
    backend: &HttpBackend,
    url: &str,
    headers: http::HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
    match backend {
        HttpBackend::Plain(client) => {
            let resp = client
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            Ok((status, headers, resp.bytes().await.unwrap_or_default()))
        }
        HttpBackend::Tls(client) => {
            let mut req = http::Request::post(url)
                .body(http_body_util::Full::new(body))
                .map_err(|e| e.to_string())?;
            *req.headers_mut() = headers;
            let call = async {
                let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
                let (parts, body) = resp.into_parts();
                let body = http_body_util::Limited::new(body, MAX_ANSWER)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok((parts.status, parts.headers, body))
            };
            tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?
        }
    }
}

fn exported(resp: ExportTraceServiceResponse) -> Exported {
    match resp.partial_success {
        Some(p) => Exported {
            rejected_spans: p.rejected_spans.max(0) as u64,
            message: p.error_message,
        },
        None => Exported::default(),
    }
}

/// The OTLP spec's retryable gRPC codes; RESOURCE_EXHAUSTED only when the
/// server says when to come back. A message over the server's size limit
/// is refused with RESOURCE_EXHAUSTED by grpc-go (the Collector, Jaeger)
/// and OUT_OF_RANGE by tonic: sending it again cannot help, smaller
/// messages can.
fn grpc_error(status: &tonic::Status) -> ExportError {
    use tonic::Code;
    use tonic_types::StatusExt;
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let too_large = matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange)
        && retry_after.is_none()
        && says_too_large(status.message());
    let retryable = !too_large
        && match status.code() {
            Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss => true,
            Code::ResourceExhausted => retry_after.is_some(),
            _ => false,
        };
    let refused = if too_large {
        Refused::TooLarge
    } else if status.code() == Code::InvalidArgument {
        Refused::BadData
    } else {
        Refused::Other
    };
    let mut message = format!("{:?}: {}", status.code(), status.message());
    if let Some(src) = std::error::Error::source(status) {
        message.push_str(&format!(" ({})", error_chain(src)));
    }
    ExportError {
        retryable,
        refused,
        retry_after,
        message,
    }
}

/// Whether a refusal's message is a size limit's: grpc-go's "received
/// message larger than max (N vs. M)", tonic's "decoded message length too
/// large", Go's net/http "request body too large" (the Collector's
/// OTLP/HTTP receiver). Only these: a "too large" that is about something
/// else (a rate) must not make the exporter cut messages.
fn says_too_large(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "larger than max",
        "length too large",
        "body too large",
        "message too large",
        "entity too large",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// `http://host:4318` → `http://host:4318/v1/traces`; a URL with a path is
/// taken as the full traces URL, as the Collector does.
fn http_url(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if uri.host().is_none() {
        return Err("has no host".into());
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread deflate state is reset between bodies: each one is a
    /// whole gzip member of its own, whatever came before it on the thread,
    /// and bodies that do not compress still fit.
    #[test]
    fn gzip_bodies_are_independent_members() {
        let text = b"service.name=bank span=transfer ".repeat(200);
        let mut noise = vec![0u8; 300_000];
        let mut x: u32 = 1;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for body in [&text[..], &noise[..], &[][..], &text[..]] {
            let gz = gzip_at(body, 1).expect("deflate");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .expect("a valid gzip member");
            assert_eq!(back, body);
        }
        assert!(gzip_at(&text, 1).expect("deflate").len() < text.len() / 10);
        // Another level on the same thread: still a valid member, smaller.
        let six = gzip_at(&text, 6).expect("deflate");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&six[..]), &mut back)
            .expect("a valid gzip member");
        assert_eq!(back, text);
        assert!(six.len() <= gzip_at(&text, 1).expect("deflate").len());
    }

    #[test]
    fn http_url_appends_the_traces_path() {
        assert_eq!(
            http_url("http://j:4318").unwrap(),
            "http://j:4318/v1/traces"
        );
        assert_eq!(
            http_url("http://j:4318/").unwrap(),
            "http://j:4318/v1/traces"
        );
        assert_eq!(
            http_url("http://j:4318/custom").unwrap(),
            "http://j:4318/custom"
        );
    }

    #[test]
    fn grpc_codes_follow_the_otlp_retry_rules() {
        assert!(grpc_error(&tonic::Status::unavailable("x")).retryable);
        assert!(!grpc_error(&tonic::Status::invalid_argument("x")).retryable);
        assert!(!grpc_error(&tonic::Status::resource_exhausted("x")).retryable);
    }

    /// The size refusals of grpc-go and tonic, as they word them, are told
    /// apart from a server out of resources and from bad data.
    #[test]
    fn size_refusals_are_recognised_and_not_retried_as_they_are() {
        let grpc_go = tonic::Status::resource_exhausted(
            "grpc: received message larger than max (15728640 vs. 4194304)",
        );
        let tonic = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 15728640 bytes, the limit is: 4194304 bytes",
        );
        for status in [grpc_go, tonic] {
            let e = grpc_error(&status);
            assert_eq!(e.refused, Refused::TooLarge, "{status:?}");
            assert!(!e.retryable);
        }
        let busy = grpc_error(&tonic::Status::resource_exhausted("queue full"));
        assert_eq!(busy.refused, Refused::Other);
        let rate = grpc_error(&tonic::Status::resource_exhausted("request rate too large"));
        assert_eq!(rate.refused, Refused::Other);
        assert!(says_too_large("http: request body too large"));
        let range = grpc_error(&tonic::Status::out_of_range("seek past end"));
        assert!(range.retryable);
        assert_eq!(range.refused, Refused::Other);
        let bad = grpc_error(&tonic::Status::invalid_argument("span name is empty"));
        assert_eq!(bad.refused, Refused::BadData);
        assert!(!bad.retryable);
    }
}
