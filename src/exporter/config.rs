//! Configuration of span forwarding (`exporters.otlp` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `exporters:` — only `otlp` exists; absent means no forwarding.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportersConfig {
    pub otlp: Option<OtlpExporterConfig>,
}

/// Wire protocol to the downstream.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Body compression towards the downstream.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `exporters.otlp`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `http://host:4317` for gRPC; for `http/protobuf` the base URL, to
    /// which `/v1/traces` is appended unless the URL already has a path.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub compression: Compression,
    /// Requests waiting to be batched and sent. When full, receivers answer
    /// senders with a retryable refusal instead of dropping.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Deadline of one export call.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Batches sent concurrently.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// On shutdown, how long to keep sending what is queued.
    #[serde(default = "default_drain_timeout", with = "crate::config::duration")]
    pub drain_timeout: Duration,
    /// Extra request headers / gRPC metadata (e.g. an API key). Values are
    /// secrets: they never appear in logs, errors or Debug output.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::net::secret::Secret>,
    /// Sends `Authorization: Bearer <token>` (token or token file, as for
    /// the receivers; a token file is re-read when it changes).
    #[serde(default)]
    pub auth: Option<crate::net::auth::AuthConfig>,
    /// Trust and client certificate for an `https://` endpoint (the
    /// Collector's configtls client keys `ca_file`, `cert_file`,
    /// `key_file`). `https://` without it trusts the system's CA
    /// certificates; `http://` is plain text and takes no `tls`.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ClientTlsConfig>,
}

/// `exporters.otlp.batch`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is sent once it holds this many spans…
    pub max_spans: usize,
    /// …or this many encoded bytes (keep it under the downstream's message
    /// limit: 4 MiB by default for gRPC servers). A single received request
    /// larger than this is sent alone, unsplit.
    pub max_bytes: usize,
    /// …or this long after its first span, whichever is first.
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_spans: 8192,
            max_bytes: 3 * 1024 * 1024,
            timeout: Duration::from_millis(200),
        }
    }
}

/// `exporters.otlp.retry` — exponential backoff on retryable answers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    #[serde(with = "crate::config::duration")]
    pub initial_interval: Duration,
    #[serde(with = "crate::config::duration")]
    pub max_interval: Duration,
    /// After this long a batch is given up and counted in
    /// `tracecheck_exporter_failed_spans_total`.
    #[serde(with = "crate::config::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

const fn default_queue_size() -> usize {
    10_000
}

const fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

const fn default_max_in_flight() -> usize {
    4
}

const fn default_drain_timeout() -> Duration {
    Duration::from_secs(15)
}
