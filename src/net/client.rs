//! The one way an outbound HTTP client is made (alerts, webhooks, tier
//! announcements, test runs, the load generator): reqwest over rustls with
//! the ring provider, trusting `ca_file` or else the system's CA
//! certificates, so that an `https://` URL works wherever one is taken.
//! reqwest has no TLS provider of its own here (its default would bring
//! aws-lc-rs), so a client made any other way has no `https://`, and
//! reqwest panics building one: make them all here.

use std::time::Duration;

use super::tls::{self, ClientTlsConfig, TlsError};

/// ALPN offered: HTTP/2 where the server takes it.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A client builder with TLS from `tls` (`key` names it in errors), or,
/// without `tls`, the system's CA certificates. On a machine with none of
/// those, plain `http://` still works and every `https://` request fails
/// with an unknown-issuer error naming the server, rather than nothing
/// starting at all.
pub fn builder(
    tls: Option<&ClientTlsConfig>,
    key: &'static str,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let config = match tls {
        Some(t) => tls::client_config(t, key, ALPN)?,
        None => tls::client_config(&ClientTlsConfig::default(), key, ALPN)
            .or_else(|_| tls::client_config_without_roots(ALPN))?,
    };
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
}

/// A client trusting the system's CA certificates, with a per-request
/// `timeout` (none if zero).
pub fn plain(timeout: Duration) -> reqwest::Client {
    // Neither step depends on input: without `tls` the builder falls back
    // to a config trusting nothing, which ring always makes, and reqwest
    // fails to build only for a TLS backend it has not got.
    #[allow(clippy::expect_used)]
    let b = builder(None, "outbound HTTP client").expect("a TLS config without files");
    let b = if timeout.is_zero() {
        b
    } else {
        b.timeout(timeout)
    };
    #[allow(clippy::expect_used)]
    b.build()
        .expect("an HTTP client with a preconfigured rustls backend")
}

/// A gRPC channel to `uri` (lazy: it connects on the first call), made by
/// `tune` from its endpoint. `https://` goes over rustls with `tls` (or
/// the system's CA certificates), whatever TLS tonic was built with: the
/// endpoint is given to tonic as `http://` and [`https_connector`] puts
/// https back, since tonic built with its own TLS feature (the SDK the
/// tests use turns it on) refuses an `https://` URI whose TLS it does not
/// do itself.
pub fn grpc_channel(
    uri: &str,
    tls: Option<&ClientTlsConfig>,
    key: &'static str,
    tune: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
) -> Result<tonic::transport::Channel, GrpcChannelError> {
    let endpoint = |u: String| {
        tonic::transport::Endpoint::from_shared(u).map_err(|e| GrpcChannelError::Uri {
            uri: uri.to_owned(),
            detail: e.to_string(),
        })
    };
    match uri.get(..8).filter(|s| s.eq_ignore_ascii_case("https://")) {
        None => Ok(tune(endpoint(uri.to_owned())?).connect_lazy()),
        Some(_) => {
            // No ALPN here: the connector offers h2 itself (and panics
            // on a config that has some already).
            let config = tls::client_config(tls.unwrap_or(&ClientTlsConfig::default()), key, &[])?;
            let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
            tcp.enforce_http(false);
            tcp.set_nodelay(true);
            let e = tune(endpoint(format!("http://{}", &uri[8..]))?);
            Ok(e.connect_with_connector_lazy(https_connector(config, tcp)))
        }
    }
}

/// A connector for a tonic endpoint given as `http://` that connects over
/// TLS ([`grpc_channel`]).
pub fn https_connector(
    config: rustls::ClientConfig,
    tcp: hyper_util::client::legacy::connect::HttpConnector,
) -> tower::util::MapRequest<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    fn(http::Uri) -> http::Uri,
> {
    fn to_https(uri: http::Uri) -> http::Uri {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        // Cannot fail for a URI that has an authority; if it did,
        // https_only refuses the original with a message.
        http::Uri::from_parts(parts).unwrap_or(uri)
    }
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http2()
        .wrap_connector(tcp);
    tower::ServiceExt::map_request(connector, to_https as fn(http::Uri) -> http::Uri)
}

/// An error with its causes, as reqwest and hyper keep the useful part
/// (the certificate refused, the connection reset) in them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        source = c.source();
    }
    s
}

/// A gRPC channel cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum GrpcChannelError {
    #[error("{uri:?} is not a gRPC URL: {detail}")]
    Uri { uri: String, detail: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_build_without_a_process_wide_provider() {
        let c = plain(Duration::from_secs(1));
        drop(c);
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = ClientTlsConfig {
            ca_file: Some(dir.path().join("absent.pem")),
            ..ClientTlsConfig::default()
        };
        let Err(err) = builder(Some(&missing), "alerts.webhooks[0].tls") else {
            panic!("a missing ca_file is an error");
        };
        assert!(err.to_string().contains("alerts.webhooks[0].tls"), "{err}");
    }
}
