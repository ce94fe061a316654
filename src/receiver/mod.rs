//! The receivers: OTLP over gRPC (4317) and HTTP (4318), both feeding one
//! [`ingest::Ingest`] that validates, admits, buffers and queues for
//! forwarding.
//!
//! Bad input gets the OTLP spec's answer and nothing else is lost: malformed
//! bodies are refused with INVALID_ARGUMENT/400, oversized ones with
//! RESOURCE_EXHAUSTED/413, spans with bad IDs through partial success, and
//! overload with a retryable UNAVAILABLE/503.
//!
//! With `receivers.otlp.tls` both listeners take connections through
//! [`crate::net::TlsIncoming`]; without it they are served from the TCP
//! listener directly, as plain as ever. With `receivers.otlp.auth` a request
//! without the right bearer token is refused on its headers (gRPC
//! UNAUTHENTICATED, HTTP 401), before its body is read.

pub mod config;
pub mod grpc;
pub mod grpc_gzip;
pub mod http;
pub mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::config::OtlpReceiverConfig;
use self::ingest::Ingest;
use crate::metrics::{Metrics, RefuseReason, Transport};
use crate::net::auth::{AuthConfig, AuthError, BearerToken};
use crate::net::tls::{ServerTls, ServerTlsConfig, TlsError};
use crate::net::TlsIncoming;

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

/// The receivers could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// ALPN of the gRPC receiver: gRPC is HTTP/2 only.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP receiver and the admin endpoint.
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

impl Receivers {
    /// Binds every configured receiver, then serves until [`Receivers::stop`].
    pub async fn start(
        config: &OtlpReceiverConfig,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ReceiverError> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut grpc_addr = None;
        let mut http_addr = None;
        // A protocol's own `auth` and `tls` take the place of the shared ones.
        let token = |own: Option<&AuthConfig>, key: &'static str| match own {
            Some(a) => {
                let t = BearerToken::load(a, key)?;
                t.spawn_watch(stop.clone());
                Ok::<_, ReceiverError>(Some(t))
            }
            None => match &config.auth {
                Some(a) => {
                    let t = BearerToken::load(a, "receivers.otlp.auth")?;
                    t.spawn_watch(stop.clone());
                    Ok(Some(t))
                }
                None => Ok(None),
            },
        };
        // Loaded before anything is bound, so that a bad certificate stops
        // the start with nothing half running.
        let tls = |own: Option<&ServerTlsConfig>, key: &'static str, alpn| {
            match own {
                Some(t) => Some((t, key)),
                None => config.tls.as_ref().map(|t| (t, "receivers.otlp.tls")),
            }
            .map(|(t, key)| ServerTls::load(t, key, alpn))
            .transpose()
        };
        let grpc = config.grpc.as_ref();
        let http = config.http.as_ref();
        let grpc_tls = tls(
            grpc.and_then(|g| g.tls.as_ref()),
            "receivers.otlp.protocols.grpc.tls",
            ALPN_H2,
        )?;
        let http_tls = tls(
            http.and_then(|h| h.tls.as_ref()),
            "receivers.otlp.protocols.http.tls",
            ALPN_H2_HTTP1,
        )?;
        let grpc_token = token(
            grpc.and_then(|g| g.auth.as_ref()),
            "receivers.otlp.protocols.grpc.auth",
        )?;
        let http_token = token(
            http.and_then(|h| h.auth.as_ref()),
            "receivers.otlp.protocols.http.auth",
        )?;
        let limits = config.limits.walk_limits();
        if let Some(g) = &config.grpc {
            let listener = bind(g.endpoint, "OTLP gRPC").await?;
            grpc_addr = listener.local_addr().ok();
            let max_message = g.max_recv_msg_size_mib * MIB;
            let svc = grpc_gzip::Inflate::new(
                grpc::service(Arc::clone(&ingest), max_message, limits),
                Arc::clone(ingest.memory()),
                Arc::clone(&metrics),
                max_message,
            );
            let server = tonic::transport::Server::builder()
                .layer(tower::util::MapResponseLayer::new({
                    let metrics = Arc::clone(&metrics);
                    move |r| refusal_status(r, &metrics)
                }))
                .layer(grpc::BearerAuth::layer(grpc_token, Arc::clone(&metrics)))
                .add_service(svc);
            let shutdown = stop.clone().cancelled_owned();
            let stopped = |e: tonic::transport::Error| {
                tracing::error!(error = %e, "OTLP gRPC receiver stopped.");
            };
            tasks.push(match &grpc_tls {
                None => {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    tokio::spawn(async move {
                        let served = server.serve_with_incoming_shutdown(incoming, shutdown);
                        served.await.unwrap_or_else(stopped);
                    })
                }
                Some(tls) => {
                    tls.spawn_reload("otlp_grpc", Arc::clone(&metrics), stop.clone());
                    let incoming = tls_incoming(listener, tls, "otlp_grpc", &metrics, &stop)?;
                    tokio::spawn(async move {
                        let served = server.serve_with_incoming_shutdown(incoming, shutdown);
                        served.await.unwrap_or_else(stopped);
                    })
                }
            });
        }
        if let Some(h) = &config.http {
            let listener = bind(h.endpoint, "OTLP HTTP").await?;
            http_addr = listener.local_addr().ok();
            let app = http::router(
                Arc::clone(&ingest),
                h.max_request_body_size_mib * MIB,
                limits,
            );
            let app = http::with_auth(app, http_token, Arc::clone(&metrics));
            let app = http::with_cors(app, h.cors.as_ref());
            let shutdown = stop.clone().cancelled_owned();
            let stopped = |e: std::io::Error| {
                tracing::error!(error = %e, "OTLP HTTP receiver stopped.");
            };
            tasks.push(match &http_tls {
                None => tokio::spawn(async move {
                    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                    served.await.unwrap_or_else(stopped);
                }),
                Some(tls) => {
                    tls.spawn_reload("otlp_http", Arc::clone(&metrics), stop.clone());
                    let incoming = tls_incoming(listener, tls, "otlp_http", &metrics, &stop)?;
                    tokio::spawn(async move {
                        let served = axum::serve(incoming, app).with_graceful_shutdown(shutdown);
                        served.await.unwrap_or_else(stopped);
                    })
                }
            });
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

/// The TLS accept loop of a bound listener.
pub fn tls_incoming(
    listener: TcpListener,
    tls: &Arc<ServerTls>,
    name: &'static str,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<TlsIncoming, BindError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    TlsIncoming::start(
        listener,
        Arc::clone(tls),
        name,
        Arc::clone(metrics),
        stop.clone(),
    )
    .map_err(|source| BindError {
        addr,
        what: name,
        source,
    })
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
