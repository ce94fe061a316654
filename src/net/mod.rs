//! Transport security, owned here for every listener and client:
//!
//! - [`tls`]: the `tls:` config keys, rustls configs (ring provider), and
//!   server certificates reloaded when their files change;
//! - [`TlsIncoming`]: the accept loop of a TLS listener, feeding both tonic
//!   (as a stream) and axum (as a listener);
//! - [`auth`]: bearer tokens, checked on headers before a body is read;
//! - [`secret`]: [`Secret`](secret::Secret), which never prints its value;
//! - [`listen`]: listen addresses in the Collector's `host:port` forms;
//! - [`client`]: every outbound HTTP client, `https://` included.
//!
//! Without `tls:` the listeners do not come through here at all: plain TCP
//! is served exactly as before.

pub mod auth;
pub mod client;
pub mod listen;
pub mod secret;
pub mod tls;
mod watch;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::tls::ServerTls;
use crate::metrics::{Metrics, TlsLabels};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 256;

/// The connections of a TLS listener, handshake done.
///
/// One task accepts TCP connections and spawns a task per handshake, so a
/// slow or stalled client delays only itself; finished handshakes queue for
/// the server (tonic takes them as a `Stream`, axum as a `Listener`).
pub struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// Starts accepting on `listener` until `stop`. `name` labels
    /// `tracecheck_tls_handshake_failures_total{listener}`.
    pub fn start(
        listener: TcpListener,
        tls: Arc<ServerTls>,
        name: &'static str,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let failures = metrics
            .tls_handshake_failures
            .get_or_create(&TlsLabels::new(name))
            .clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning.
                        tracing::warn!(listener = name, error = %e, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // TLS handshakes and small gRPC frames suffer from Nagle's
                // algorithm meeting delayed ACKs.
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(tls.current());
                let tx = tx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            failures.inc();
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed.");
                        }
                        Err(_) => {
                            failures.inc();
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out.");
                        }
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|c| c.map(|(s, _)| Ok(s)))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop stopped: so is the server, by its shutdown
            // signal; there is nothing more to hand out.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
