//! One export call to the downstream, over gRPC or HTTP/protobuf, and what
//! its answer means for retrying.

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;

use super::config::{Compression, OtlpExporterConfig, Protocol};
use crate::otlp::lazy::trace_service_client::TraceServiceClient;
use crate::otlp::lazy::{ExportTraceServiceResponse, RpcStatus};
use crate::otlp::LazyExportRequest;

/// A failed export call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    /// Whether the OTLP spec allows sending the same data again.
    pub retryable: bool,
    /// The downstream's own wish (gRPC RetryInfo, HTTP Retry-After).
    pub retry_after: Option<Duration>,
    pub message: String,
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
}

pub enum Client {
    Grpc {
        client: TraceServiceClient<Channel>,
        headers: Vec<(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )>,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

/// A batch encoded for the wire: gRPC re-frames the slices per attempt (a
/// memcpy), HTTP keeps one encoded and compressed body for all attempts.
pub enum Payload {
    Grpc(Vec<Bytes>),
    Http(Bytes),
}

impl Client {
    pub fn new(c: &OtlpExporterConfig) -> Result<Self, ClientError> {
        match c.protocol {
            Protocol::Grpc => {
                let endpoint = Channel::from_shared(c.endpoint.clone())
                    .map_err(|e| ClientError::Endpoint(c.endpoint.clone(), e.to_string()))?
                    .timeout(c.timeout)
                    .connect_timeout(c.timeout.min(Duration::from_secs(5)));
                let mut client = TraceServiceClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(16 << 20);
                if c.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let headers = c
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let key = MetadataKey::from_str(&k.to_ascii_lowercase())
                            .map_err(|_| ClientError::Header(k.clone()))?;
                        let value = MetadataValue::from_str(v)
                            .map_err(|_| ClientError::Header(k.clone()))?;
                        Ok((key, value))
                    })
                    .collect::<Result<_, ClientError>>()?;
                Ok(Client::Grpc {
                    client,
                    headers,
                    timeout: c.timeout,
                })
            }
            Protocol::HttpProtobuf => {
                let url = http_url(&c.endpoint)
                    .map_err(|e| ClientError::Endpoint(c.endpoint.clone(), e))?;
                let client = reqwest::Client::builder()
                    .timeout(c.timeout)
                    .build()
                    .map_err(|e| ClientError::Endpoint(c.endpoint.clone(), e.to_string()))?;
                let headers = c
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let key = http::HeaderName::from_str(k)
                            .map_err(|_| ClientError::Header(k.clone()))?;
                        let value = http::HeaderValue::from_str(v)
                            .map_err(|_| ClientError::Header(k.clone()))?;
                        Ok((key, value))
                    })
                    .collect::<Result<_, ClientError>>()?;
                Ok(Client::Http {
                    client,
                    url,
                    gzip: c.compression == Compression::Gzip,
                    headers,
                })
            }
        }
    }

    /// Encodes a batch once, for every attempt.
    pub fn payload(&self, resource_spans: Vec<Bytes>) -> Payload {
        match self {
            Client::Grpc { .. } => Payload::Grpc(resource_spans),
            Client::Http { gzip, .. } => {
                let body = LazyExportRequest { resource_spans }.encode_to_vec();
                if *gzip {
                    let mut enc = flate2::write::GzEncoder::new(
                        Vec::with_capacity(body.len() / 4),
                        flate2::Compression::fast(),
                    );
                    // Writing to a Vec cannot fail.
                    if enc.write_all(&body).is_ok() {
                        if let Ok(gz) = enc.finish() {
                            return Payload::Http(Bytes::from(gz));
                        }
                    }
                }
                Payload::Http(Bytes::from(body))
            }
        }
    }

    pub async fn export(&self, payload: &Payload) -> Result<Exported, ExportError> {
        match (self, payload) {
            (
                Client::Grpc {
                    client,
                    headers,
                    timeout,
                },
                Payload::Grpc(rs),
            ) => {
                let mut req = tonic::Request::new(LazyExportRequest {
                    resource_spans: rs.clone(),
                });
                req.set_timeout(*timeout);
                for (k, v) in headers {
                    req.metadata_mut().insert(k.clone(), v.clone());
                }
                match client.clone().export(req).await {
                    Ok(resp) => Ok(exported(resp.into_inner())),
                    Err(status) => Err(grpc_error(&status)),
                }
            }
            (
                Client::Http {
                    client,
                    url,
                    gzip,
                    headers,
                },
                Payload::Http(body),
            ) => {
                let mut req = client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body.clone());
                if *gzip {
                    req = req.header(http::header::CONTENT_ENCODING, "gzip");
                }
                for (k, v) in headers {
                    req = req.header(k.clone(), v.clone());
                }
                let resp = req.send().await.map_err(|e| ExportError {
                    retryable: true,
                    retry_after: None,
                    message: format!("POST {url}: {}", error_chain(&e)),
                })?;
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = resp.bytes().await.unwrap_or_default();
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
                    retry_after,
                    message: format!("POST {url}: HTTP {status}: {detail}"),
                })
            }
            _ => Err(ExportError {
                retryable: false,
                retry_after: None,
                message: "payload encoded for another protocol".into(),
            }),
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
/// server says when to come back.
fn grpc_error(status: &tonic::Status) -> ExportError {
    use tonic::Code;
    use tonic_types::StatusExt;
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    };
    let mut message = format!("{:?}: {}", status.code(), status.message());
    if let Some(src) = std::error::Error::source(status) {
        message.push_str(&format!(" ({})", error_chain(src)));
    }
    ExportError {
        retryable,
        retry_after,
        message,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
}
