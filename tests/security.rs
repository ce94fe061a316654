//! Security as a user meets it: TLS and mTLS on the receivers and the admin
//! port with certificates made in the test (rcgen), certificates replaced
//! while running, bearer tokens on the receivers and the admin API, the
//! exporter talking to a TLS downstream, and secrets that do not leak.
//! Loopback only; every wait is a poll with a deadline.
//!
//! Run with `cargo test --test security`.

mod util;

#[path = "security/auth.rs"]
mod auth;
#[path = "security/cli.rs"]
mod cli;
#[path = "security/exporter.rs"]
mod exporter;
#[path = "security/pki.rs"]
mod pki;
#[path = "security/reload.rs"]
mod reload;
#[path = "security/secrets.rs"]
mod secrets;
#[path = "security/tls.rs"]
mod tls;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// An HTTPS client (HTTP/1.1 and HTTP/2) trusting `ca_pem`, optionally
/// showing a client certificate: rustls with ring through hyper-rustls.
pub fn https_client(
    ca_pem: &str,
    client_cert: Option<(&str, &str)>,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.expect("client cert PEM"))
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key PEM"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_all_versions()
        .build();
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

/// An answer's status, headers and body.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends `request` and reads the whole answer; a transport or TLS failure
/// is the error, as text.
pub async fn send(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> Result<Answer, String> {
    let resp = util::bounded("HTTPS request", client.request(request))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `POST /v1/traces` with a protobuf body of `spans` spans.
pub fn export_request(url: &str, spans: usize, token: Option<&str>) -> http::Request<Full<Bytes>> {
    use prost::Message as _;
    let body = util::request_of(spans, spans as u64).encode_to_vec();
    let mut b = http::Request::post(url).header("content-type", "application/x-protobuf");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::from(body))).expect("request")
}
