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
    /// senders with a retryable refusal instead of dropping. (With `queue`,
    /// the bound is the directory's `max_size_mib` instead.)
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// …and at most this many MiB of them (requests are up to 20 MiB each:
    /// a count alone does not bound memory). A request alone in an empty
    /// queue is taken whatever its size.
    #[serde(default = "default_queue_max_mib")]
    pub queue_max_mib: u64,
    /// Keep waiting requests on disk instead of in memory (opt-in): a
    /// downstream outage, a restart or a `kill -9` then loses nothing that
    /// senders were told was taken. See [`super::disk`].
    #[serde(default)]
    pub queue: Option<DiskQueueConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    /// The largest message sent (an encoded export request, before
    /// compression): what the downstream's receiver takes. The Collector's
    /// and Jaeger's OTLP receivers take 4 MiB by default. A received
    /// request larger than this is cut into several messages; a message
    /// the downstream still refuses as too large is sent again in halves.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
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
    /// A batch is sent once it holds this many spans, and no message holds
    /// more (a larger request is cut): some downstreams drop what does not
    /// fit their own batches (rotel)…
    pub max_spans: usize,
    /// …or this many encoded bytes (never more than `max_request_bytes`).
    /// A received request larger than this is packed by its
    /// `ResourceSpans`, and one over `max_request_bytes` is cut.
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
    /// `tracecheck_exporter_failed_spans_total`; `0s` never gives up.
    /// Unset: 5m with the in-memory queue; never with a persistent `queue`,
    /// whose point is to outlast outages (the directory's size bound then
    /// pushes back on senders instead).
    #[serde(default, with = "crate::config::duration::option")]
    pub max_elapsed_time: Option<Duration>,
}

impl RetryConfig {
    /// How long one batch is retried; `None`: until it is delivered.
    pub fn give_up_after(&self, persistent: bool) -> Option<Duration> {
        match self.max_elapsed_time {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None if persistent => None,
            None => Some(DEFAULT_MAX_ELAPSED),
        }
    }
}

const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(300);

/// `exporters.otlp.queue` — the persistent forwarding queue.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskQueueConfig {
    /// Where segments are kept; created if missing. One process per
    /// directory (it is locked while in use).
    pub directory: std::path::PathBuf,
    /// Bound on the queue's bytes on disk; beyond it senders get a
    /// retryable refusal (`reason="exporter_queue_full"`).
    #[serde(default = "default_queue_max_size_mib")]
    pub max_size_mib: u64,
    /// Size at which a segment is closed and the next one started; a
    /// segment is deleted once everything in it was delivered.
    #[serde(default = "default_segment_size_mib")]
    pub segment_size_mib: u64,
    /// When written requests are forced to the device: `always` (before the
    /// sender is answered; the default), a duration such as `1s` (at most
    /// that much acknowledged data lost on a power failure), or `never`
    /// (left to the kernel). A process crash loses nothing in any case.
    #[serde(default)]
    pub fsync: FsyncPolicy,
}

/// `exporters.otlp.queue.fsync`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    #[default]
    Always,
    Every(Duration),
    Never,
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match crate::config::duration::parse(other) {
                Ok(d) if !d.is_zero() => Ok(FsyncPolicy::Every(d)),
                _ => Err(serde::de::Error::custom(format!(
                    "fsync {other:?}: expected always, never or a duration such as 1s"
                ))),
            },
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FsyncPolicy::Always => s.serialize_str("always"),
            FsyncPolicy::Never => s.serialize_str("never"),
            FsyncPolicy::Every(d) => s.serialize_str(&crate::config::duration::format(*d)),
        }
    }
}

const fn default_queue_max_size_mib() -> u64 {
    1024
}

const fn default_segment_size_mib() -> u64 {
    16
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: None,
        }
    }
}

/// The Collector's OTLP receivers' default `max_recv_msg_size_mib`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

const fn default_max_request_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}

const fn default_queue_max_mib() -> u64 {
    256
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
