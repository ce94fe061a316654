//! The receivers: OTLP over gRPC (4317) and HTTP (4318), both feeding one
//! [`ingest::Ingest`] that validates, admits, buffers and queues for
//! forwarding.
//!
//! Bad input gets the OTLP spec's answer and nothing else is lost: malformed
//! bodies are refused with INVALID_ARGUMENT/400, oversized ones with
//! RESOURCE_EXHAUSTED/413, spans with bad IDs through partial success, and
//! overload with a retryable UNAVAILABLE/503.

pub mod config;
pub mod grpc;
pub mod http;
pub mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::config::OtlpReceiverConfig;
use self::ingest::Ingest;
use crate::results::metrics::{Metrics, RefuseReason, Transport};

const MIB: usize = 1024 * 1024;

/// Running receivers and where they listen.
pub struct Receivers {
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub what: &'static str,
    pub source: std::io::Error,
}

impl Receivers {
    /// Binds every configured receiver, then serves until [`Receivers::stop`].
    pub async fn start(
        config: &OtlpReceiverConfig,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BindError> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut grpc_addr = None;
        let mut http_addr = None;
        if let Some(g) = &config.grpc {
            let listener = bind(g.endpoint, "OTLP gRPC").await?;
            grpc_addr = listener.local_addr().ok();
            let svc = grpc::service(Arc::clone(&ingest), g.max_recv_msg_size_mib * MIB);
            let stop = stop.clone();
            let metrics = Arc::clone(&metrics);
            tasks.push(tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let result = tonic::transport::Server::builder()
                    .layer(tower::util::MapResponseLayer::new(move |r| {
                        refusal_status(r, &metrics)
                    }))
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "OTLP gRPC receiver stopped.");
                }
            }));
        }
        if let Some(h) = &config.http {
            let listener = bind(h.endpoint, "OTLP HTTP").await?;
            http_addr = listener.local_addr().ok();
            let app = http::router(Arc::clone(&ingest), h.max_request_body_size_mib * MIB);
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "OTLP HTTP receiver stopped.");
                }
            }));
        }
        Ok(Self {
            grpc_addr,
            http_addr,
            tasks,
            stop,
        })
    }

    /// Stops listening and waits for requests in progress to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, what, source })
}

/// tonic refuses some requests before the service sees them, with codes the
/// OTLP spec does not use there; this puts them right and counts them:
/// - a message over the size limit comes as OUT_OF_RANGE; the spec wants
///   RESOURCE_EXHAUSTED without retry info, so that the sender drops the
///   request instead of retrying it forever. Decompression past the limit
///   already comes as RESOURCE_EXHAUSTED.
/// - a body that is not protobuf (or not gzip) comes as INTERNAL, which
///   reads as a server fault; it is INVALID_ARGUMENT, final for the sender.
fn refusal_status<B>(mut resp: ::http::Response<B>, metrics: &Metrics) -> ::http::Response<B> {
    let refused = match resp.headers().get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"11") => Some(("8", RefuseReason::too_large)),
        Some(b"8") if message_starts_with(&resp, "Error decompressing") => {
            Some(("8", RefuseReason::too_large))
        }
        Some(b"13")
            if [
                "failed to decode Protobuf message",
                "Error decompressing",
                "protocol error",
            ]
            .iter()
            .any(|p| message_starts_with(&resp, p)) =>
        {
            Some(("3", RefuseReason::malformed))
        }
        _ => None,
    };
    if let Some((code, reason)) = refused {
        resp.headers_mut()
            .insert("grpc-status", ::http::HeaderValue::from_static(code));
        metrics.refused(Transport::grpc, reason, 0);
    }
    resp
}

/// Whether `grpc-message` begins with `prefix`, percent-encoded or not.
fn message_starts_with<B>(resp: &::http::Response<B>, prefix: &str) -> bool {
    resp.headers().get("grpc-message").is_some_and(|m| {
        let m = m.as_bytes();
        m.starts_with(prefix.as_bytes()) || m.starts_with(prefix.replace(' ', "%20").as_bytes())
    })
}
