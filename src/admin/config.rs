//! `admin:` — the admin endpoint's address, TLS and auth.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `admin:` — metrics, health and the API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Loopback unless configured: the API can reload models. `host:port`
    /// as the receivers' endpoints.
    #[serde(deserialize_with = "crate::net::listen::deserialize")]
    pub endpoint: SocketAddr,
    /// TLS on the admin port (HTTP and the gRPC API alike); absent → plain.
    pub tls: Option<crate::net::tls::ServerTlsConfig>,
    /// Guards everything that shows trace data or changes something: the
    /// API, the pages, the gRPC API ([`super::signin`] says how a request
    /// shows the token). Health and `/metrics` stay open, so that probes
    /// and Prometheus need no token.
    pub auth: Option<crate::net::auth::AuthConfig>,
    /// With `auth`: `/metrics` needs the token too (Prometheus then sends
    /// it with `authorization: { credentials_file: … }`).
    pub protect_metrics: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 9464)),
            tls: None,
            auth: None,
            protect_metrics: false,
        }
    }
}
