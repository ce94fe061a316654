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
