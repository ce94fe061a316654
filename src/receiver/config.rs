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
/// Collector. Both are on in the embedded defaults.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    pub grpc: Option<GrpcConfig>,
    pub http: Option<HttpConfig>,
    /// TLS on both receivers (the Collector's configtls server keys);
    /// absent → plain TCP.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ServerTlsConfig>,
    /// Senders must send `Authorization: Bearer <token>` (the Collector's
    /// bearertokenauth); absent → no authentication.
    #[serde(default)]
    pub auth: Option<crate::net::auth::AuthConfig>,
    /// Per-span input limits, on both protocols.
    #[serde(default)]
    pub limits: LimitsConfig,
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

/// `receivers.otlp.grpc`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on; loopback unless configured.
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: SocketAddr,
    /// Largest accepted message, after decompression, in MiB.
    #[serde(default = "default_max_recv_msg_size_mib")]
    pub max_recv_msg_size_mib: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_max_recv_msg_size_mib(),
        }
    }
}

/// `receivers.otlp.http`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; loopback unless configured.
    #[serde(default = "default_http_endpoint")]
    pub endpoint: SocketAddr,
    /// Largest accepted body, after decompression, in MiB (the Collector's
    /// default is 20).
    #[serde(default = "default_max_request_body_size_mib")]
    pub max_request_body_size_mib: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            endpoint: default_http_endpoint(),
            max_request_body_size_mib: default_max_request_body_size_mib(),
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
