//! Configuration of span forwarding (`exporters.otlp` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `exporters:` — named as in the Collector: `otlp` and `otlp/NAME` send
/// over gRPC, `otlphttp` and `otlphttp/NAME` over HTTP/protobuf. Every
/// span goes to every one (of `service.pipelines.traces.exporters`, when
/// that is written), each with its own queue, retries and `exporter`
/// metrics label. None: no forwarding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportersConfig {
    /// In the file's order.
    pub list: Vec<NamedExporter>,
}

/// One exporter and its component name (`otlp/jaeger`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedExporter {
    pub name: String,
    pub config: OtlpExporterConfig,
}

impl ExportersConfig {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sets the exporter named `otlp` (tests, programs building a config).
    pub fn set_otlp(&mut self, config: OtlpExporterConfig) {
        self.list.retain(|e| e.name != "otlp");
        self.list.push(NamedExporter {
            name: "otlp".into(),
            config,
        });
    }

    /// The exporter named `name`.
    pub fn get(&self, name: &str) -> Option<&OtlpExporterConfig> {
        self.list.iter().find(|e| e.name == name).map(|e| &e.config)
    }

    /// Keeps the exporters `names` lists, in its order (a pipeline's); a
    /// name not defined is an error.
    pub fn select(&mut self, names: &[String]) -> Result<(), String> {
        let mut kept = Vec::with_capacity(names.len());
        for n in names {
            match self.list.iter().position(|e| &e.name == n) {
                Some(i) => kept.push(self.list.remove(i)),
                None if kept.iter().any(|e: &NamedExporter| &e.name == n) => {
                    return Err(format!(
                        "service.pipelines.traces.exporters lists {n} twice"
                    ))
                }
                None => {
                    return Err(format!(
                        "service.pipelines.traces.exporters lists {n}, which exporters: does not define"
                    ))
                }
            }
        }
        self.list = kept;
        Ok(())
    }
}

/// What tracecheck says of a Collector exporter it does not have.
fn unsupported_exporter(kind: &str) -> String {
    let instead = match kind {
        "jaeger" | "jaeger_thrift" => "Jaeger takes OTLP: use otlp (gRPC, port 4317) or otlphttp (port 4318)",
        "zipkin" | "kafka" | "file" | "loadbalancing" => {
            "tracecheck forwards over OTLP only: put a Collector behind an otlp exporter for it"
        }
        "debug" | "logging" | "nop" => "tracecheck has no debug exporter: its verdicts are in the admin API and `tracecheck watch`",
        _ => "tracecheck forwards over OTLP only: use otlp (gRPC) or otlphttp (HTTP)",
    };
    format!("exporter type {kind:?} is not one tracecheck has. {instead}")
}

impl<'de> Deserialize<'de> for ExportersConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ExportersConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("exporters by name: otlp, otlp/NAME, otlphttp, otlphttp/NAME")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(ExportersConfig::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let mut list: Vec<NamedExporter> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let (kind, suffix) = match name.split_once('/') {
                        Some((k, n)) => (k, Some(n)),
                        None => (name.as_str(), None),
                    };
                    if suffix.is_some_and(|n| n.is_empty()) {
                        return Err(A::Error::custom(format!(
                            "exporter {name:?}: the name after / is empty"
                        )));
                    }
                    let http = match kind {
                        "otlp" => false,
                        "otlphttp" => true,
                        other => return Err(A::Error::custom(unsupported_exporter(other))),
                    };
                    if list.iter().any(|e| e.name == name) {
                        return Err(A::Error::custom(format!(
                            "exporter {name} is defined twice"
                        )));
                    }
                    let mut config: OtlpExporterConfig = map.next_value()?;
                    config
                        .adopt_collector_keys(http)
                        .map_err(|e| A::Error::custom(format!("exporters.{name}: {e}")))?;
                    list.push(NamedExporter { name, config });
                }
                Ok(ExportersConfig { list })
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Serialize for ExportersConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.list.len()))?;
        for e in &self.list {
            m.serialize_entry(&e.name, &e.config)?;
        }
        m.end()
    }
}

/// The Collector's `retry_on_failure`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectorRetry {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, with = "crate::duration::option")]
    pub initial_interval: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    pub max_interval: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    pub max_elapsed_time: Option<Duration>,
    /// Accepted for pasted configs; tracecheck's backoff doubles.
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Accepted for pasted configs; tracecheck adds no jitter.
    #[serde(default)]
    pub randomization_factor: Option<f64>,
}

/// The Collector's `sending_queue`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SendingQueue {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Batches sent at once (tracecheck's `max_in_flight`).
    #[serde(default)]
    pub num_consumers: Option<usize>,
    #[serde(default)]
    pub queue_size: Option<usize>,
    /// A directory: the persistent queue (the Collector names a storage
    /// extension here; tracecheck has the queue built in).
    #[serde(default)]
    pub storage: Option<std::path::PathBuf>,
}

fn yes() -> bool {
    true
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
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Batches sent concurrently.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// On shutdown, how long to keep sending what is queued.
    #[serde(default = "default_drain_timeout", with = "crate::duration")]
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
    /// certificates; `http://` is plain text and takes no `tls` but
    /// `insecure: true`.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ClientTlsConfig>,
    /// The Collector's name for `retry`; folded into it once read.
    #[serde(default, skip_serializing)]
    pub retry_on_failure: Option<CollectorRetry>,
    /// `otlphttp`'s exact URL for traces, in place of `endpoint` +
    /// `/v1/traces`.
    #[serde(default, skip_serializing)]
    pub traces_endpoint: Option<String>,
    /// The Collector's `sending_queue`; folded into `queue_size`,
    /// `max_in_flight` and `queue` once read.
    #[serde(default, skip_serializing)]
    pub sending_queue: Option<SendingQueue>,
    /// The Collector's `compression_params`: `level` 1–9 for gzip (-1:
    /// zlib's default, 6). Without it, 1: OTLP compresses nearly as well at
    /// the fast level for a fraction of the CPU.
    #[serde(default)]
    pub compression_params: Option<CompressionParams>,
    /// Which traces this exporter gets ([`TraceSelection`]): every span as
    /// it comes (`all`), or, for tail sampling by verdict, only the traces
    /// the models failed ([`super::by_verdict`]).
    #[serde(default)]
    pub traces: TraceSelection,
    /// With `traces: failing…`: the root span of each trace sent carries
    /// `tracecheck.verdict` and `tracecheck.model` (the models that gave
    /// it, comma-separated), so the trace can be searched for downstream.
    #[serde(default)]
    pub verdict_attributes: bool,
}

/// `exporters.<name>.compression_params`
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    pub level: i32,
}

/// `exporters.<name>.traces`
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TraceSelection {
    /// Every span, unchanged, as it arrives (before any verdict).
    #[default]
    All,
    /// Only traces with a counted `fail`, whole, once the verdict is
    /// counted (when the trace settles, or after `within`), and any span of
    /// them that comes later.
    Failing,
    /// As `failing`, and traces with an `inconclusive` verdict too.
    FailingOrInconclusive,
}

impl OtlpExporterConfig {
    /// Takes the Collector's spellings into tracecheck's own settings:
    /// `otlphttp` is HTTP/protobuf; an endpoint without a scheme is TLS
    /// unless `tls.insecure: true` (the Collector's rule for gRPC);
    /// `retry_on_failure` and `sending_queue`.
    /// The gzip level to compress at.
    pub fn gzip_level(&self) -> u32 {
        match self.compression_params {
            Some(CompressionParams { level: -1 }) => 6,
            Some(CompressionParams { level }) => level.clamp(1, 9) as u32,
            None => 1,
        }
    }

    pub fn adopt_collector_keys(&mut self, http: bool) -> Result<(), String> {
        if let Some(CompressionParams { level }) = self.compression_params {
            if !(level == -1 || (1..=9).contains(&level)) {
                return Err(format!(
                    "compression_params.level {level}: gzip takes 1 (fastest) to 9 (smallest), or -1 for its default (6)"
                ));
            }
        }
        if self.verdict_attributes && self.traces == TraceSelection::All {
            return Err("verdict_attributes needs traces: failing (or failing_or_inconclusive): with traces: all, spans are forwarded unchanged as they arrive, before any verdict".into());
        }
        if http {
            self.protocol = Protocol::HttpProtobuf;
        }
        let insecure = self.tls.as_ref().is_some_and(|t| t.insecure);
        if insecure {
            let t = self.tls.take().unwrap_or_default();
            if t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some() {
                return Err("tls.insecure: true sends plain text; it takes no ca_file, cert_file or key_file".into());
            }
        }
        if http {
            // The Collector's otlphttp endpoint is a base URL to which the
            // signal's path is always added (tracecheck's own form adds it
            // only to a URL without a path), or traces_endpoint is exact.
            match self.traces_endpoint.take() {
                Some(exact) => self.endpoint = exact,
                None if self.endpoint.contains("://") => {
                    self.endpoint = format!("{}/v1/traces", self.endpoint.trim_end_matches('/'));
                }
                None => {}
            }
        } else if self.traces_endpoint.is_some() {
            return Err(
                "traces_endpoint is otlphttp's; an otlp (gRPC) exporter takes endpoint".into(),
            );
        }
        if !self.endpoint.contains("://") {
            if http {
                return Err(format!(
                    "endpoint {:?} needs its scheme, as in the Collector: https://{0} or http://{0}",
                    self.endpoint
                ));
            }
            let scheme = if insecure { "http" } else { "https" };
            self.endpoint = format!("{scheme}://{}", self.endpoint);
        } else if insecure && self.endpoint.to_ascii_lowercase().starts_with("https://") {
            return Err(format!(
                "tls.insecure: true, but the endpoint {:?} is https://",
                self.endpoint
            ));
        }
        if let Some(r) = self.retry_on_failure.take() {
            if let Some(d) = r.initial_interval {
                self.retry.initial_interval = d;
            }
            if let Some(d) = r.max_interval {
                self.retry.max_interval = d;
            }
            if let Some(d) = r.max_elapsed_time {
                self.retry.max_elapsed_time = Some(d);
            }
            if !r.enabled {
                // One try, then the batch is given up and counted; after
                // the other keys, which must not undo it.
                self.retry.max_elapsed_time = Some(Duration::from_nanos(1));
            }
        }
        if let Some(q) = self.sending_queue.take() {
            if !q.enabled {
                return Err("sending_queue.enabled: false is not available: tracecheck always queues what it forwards, so that a slow downstream pushes back on senders instead of losing spans".into());
            }
            if let Some(n) = q.num_consumers {
                self.max_in_flight = n;
            }
            if let Some(n) = q.queue_size {
                self.queue_size = n;
            }
            if let Some(dir) = q.storage {
                if self.queue.is_some() {
                    return Err(
                        "sending_queue.storage and queue both name a directory; keep one".into(),
                    );
                }
                self.queue = Some(DiskQueueConfig {
                    directory: dir,
                    max_size_mib: default_queue_max_size_mib(),
                    segment_size_mib: default_segment_size_mib(),
                    fsync: FsyncPolicy::default(),
                });
            }
        }
        Ok(())
    }
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
    #[serde(with = "crate::duration")]
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
    #[serde(with = "crate::duration")]
    pub initial_interval: Duration,
    #[serde(with = "crate::duration")]
    pub max_interval: Duration,
    /// After this long a batch is given up and counted in
    /// `tracecheck_exporter_failed_spans_total`; `0s` never gives up.
    /// Unset: 5m with the in-memory queue; never with a persistent `queue`,
    /// whose point is to outlast outages (the directory's size bound then
    /// pushes back on senders instead).
    #[serde(default, with = "crate::duration::option")]
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
            other => match crate::duration::parse(other) {
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
            FsyncPolicy::Every(d) => s.serialize_str(&crate::duration::format(*d)),
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
