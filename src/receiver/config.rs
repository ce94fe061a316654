//! Configuration of the OTLP receivers (`receivers.otlp` in the config file).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `receivers:` — only `otlp` exists.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiversConfig {
    pub otlp: OtlpReceiverConfig,
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        Self {
            otlp: OtlpReceiverConfig {
                protocols: None,
                grpc: Some(GrpcConfig::default()),
                http: Some(HttpConfig::default()),
                tls: None,
                auth: None,
                limits: LimitsConfig::default(),
            },
        }
    }
}

/// `receivers.otlp`: a protocol that is not listed is not started, as in the
/// Collector; one listed with no settings (`grpc:`) is started on its
/// defaults. Both are on in the embedded defaults. The protocols go under
/// `protocols:` as in the Collector; written directly under `otlp:` (the
/// short form) they mean the same.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// The Collector's nesting; moved into `grpc` and `http` once read
    /// ([`OtlpReceiverConfig::normalize`]).
    #[serde(default, skip_serializing)]
    pub protocols: Option<ProtocolsConfig>,
    #[serde(default, deserialize_with = "listed")]
    pub grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "listed")]
    pub http: Option<HttpConfig>,
    /// TLS on both receivers (the Collector's configtls server keys);
    /// absent → plain TCP. A protocol's own `tls` takes its place.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ServerTlsConfig>,
    /// Senders must send `Authorization: Bearer <token>` (the Collector's
    /// bearertokenauth); absent → no authentication. A protocol's own
    /// `auth` takes its place.
    #[serde(default)]
    pub auth: Option<crate::net::auth::AuthConfig>,
    /// Per-span input limits, on both protocols.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `receivers.otlp.protocols`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProtocolsConfig {
    #[serde(default, deserialize_with = "listed")]
    pub grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "listed")]
    pub http: Option<HttpConfig>,
}

/// A protocol listed with no settings (`grpc:`, YAML's null) is on with
/// its defaults, as in the Collector; one not listed stays off.
fn listed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(|t| Some(t.unwrap_or_default()))
}

impl OtlpReceiverConfig {
    /// Moves `protocols:` into place. Both forms at once would leave it
    /// unclear which was meant.
    pub fn normalize(&mut self) -> Result<(), String> {
        let Some(p) = self.protocols.take() else {
            return Ok(());
        };
        if self.grpc.is_some() || self.http.is_some() {
            return Err("receivers.otlp: write grpc and http under protocols: (the Collector's form) or directly under otlp:, not both".into());
        }
        self.grpc = p.grpc;
        self.http = p.http;
        Ok(())
    }
}

/// `receivers.otlp.limits`: spans beyond them are rejected through OTLP
/// partial success (`rejected_spans` and a message naming the limit) and
/// counted in `tracecheck_receiver_refused_spans_total{reason}`; the rest of
/// the request is taken. The defaults are far above what SDKs send.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Deepest `AnyValue` nesting (a plain attribute value is 1, a value in
    /// an array or kvlist value one more); at most 32.
    pub max_attribute_depth: usize,
    /// Most attributes on one span, event, link, resource or scope.
    pub max_attributes: usize,
    /// Largest attribute key, string value or bytes value, in bytes.
    pub max_attribute_value_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::otlp::WalkLimits::default();
        Self {
            max_attribute_depth: d.max_attribute_depth,
            max_attributes: d.max_attributes,
            max_attribute_value_bytes: d.max_attribute_value_bytes,
        }
    }
}

impl LimitsConfig {
    /// The limits as the walk applies them.
    pub fn walk_limits(&self) -> crate::otlp::WalkLimits {
        crate::otlp::WalkLimits {
            max_attribute_depth: self.max_attribute_depth,
            max_attributes: self.max_attributes,
            max_attribute_value_bytes: self.max_attribute_value_bytes,
        }
    }
}

/// `receivers.otlp.protocols.grpc`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on (`host:port`, a hostname resolved once);
    /// loopback unless configured.
    #[serde(
        default = "default_grpc_endpoint",
        deserialize_with = "crate::net::listen::deserialize"
    )]
    pub endpoint: SocketAddr,
    /// Largest accepted message, after decompression, in MiB.
    #[serde(default = "default_max_recv_msg_size_mib")]
    pub max_recv_msg_size_mib: usize,
    /// TLS on this receiver, in place of `receivers.otlp.tls`.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ServerTlsConfig>,
    /// A bearer token on this receiver, in place of `receivers.otlp.auth`.
    #[serde(default)]
    pub auth: Option<crate::net::auth::AuthConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_max_recv_msg_size_mib(),
            tls: None,
            auth: None,
        }
    }
}

/// `receivers.otlp.protocols.http`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (`host:port`, a hostname resolved once);
    /// loopback unless configured.
    #[serde(
        default = "default_http_endpoint",
        deserialize_with = "crate::net::listen::deserialize"
    )]
    pub endpoint: SocketAddr,
    /// Largest accepted body, after decompression, in MiB (the Collector's
    /// default is 20).
    #[serde(default = "default_max_request_body_size_mib")]
    pub max_request_body_size_mib: usize,
    /// TLS on this receiver, in place of `receivers.otlp.tls`.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ServerTlsConfig>,
    /// A bearer token on this receiver, in place of `receivers.otlp.auth`.
    #[serde(default)]
    pub auth: Option<crate::net::auth::AuthConfig>,
    /// Cross-origin requests from browsers (the OpenTelemetry JS SDK in a
    /// page): off unless origins are listed, as in the Collector.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

/// `receivers.otlp.protocols.http.cors`, the Collector's keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to send, e.g. `https://*.example.com`: `*` stands
    /// for any characters; `*` alone allows every origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond the CORS-safelisted ones and
    /// `Content-Type`, `Content-Encoding`, `Authorization`; `*` allows any.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// How long, in seconds, a browser may keep a preflight's answer.
    #[serde(default)]
    pub max_age: Option<u64>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            endpoint: default_http_endpoint(),
            max_request_body_size_mib: default_max_request_body_size_mib(),
            tls: None,
            auth: None,
            cors: None,
        }
    }
}

fn default_grpc_endpoint() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4317))
}

fn default_http_endpoint() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4318))
}

const fn default_max_recv_msg_size_mib() -> usize {
    4
}

const fn default_max_request_body_size_mib() -> usize {
    20
}
