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
