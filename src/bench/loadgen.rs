//! The load generator: concurrent senders exporting synthetic traffic over
//! OTLP/gRPC or OTLP/HTTP (protobuf, optionally gzip), flat out or at a fixed
//! span rate, for a duration or a request count, retrying retryable answers
//! when asked, and the report of what the receiver accepted, refused and
//! rejected, how long export calls took, and how many whole (and violating)
//! traces were delivered.
//!
//! With `split` above 1 the traffic takes production's shape
//! ([`SplitSchedule`]): every trace cut into fragments that different
//! senders send over `spread`, the root's last. A run then stops beginning
//! traces at its duration or request count and sends the fragments of the
//! traces begun to the end, so that none is left half sent.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::rpc::retry_delay_of;
use super::traffic::{
    Batch, ChainTrace, LongLived, MixError, Rng, SplitConfig, SplitSchedule, SplitSender,
    TrafficGenerator, TrafficMix,
};

/// The OTLP transport used to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    Http,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        })
    }
}

/// How retryable answers are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt of one request.
    pub max_retries: u32,
    /// First pause when the receiver gave no delay; doubles each retry.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Longest pause a receiver's Retry-After / RetryInfo may impose.
const MAX_SERVER_DELAY: Duration = Duration::from_secs(30);

/// Largest response body read from an HTTP receiver.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// What to send, where, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// `http://host:port` for gRPC; for HTTP a URL whose empty path becomes
    /// `/v1/traces`. A missing scheme means `http://`.
    pub endpoint: String,
    pub protocol: Protocol,
    pub gzip: bool,
    pub senders: usize,
    pub spans_per_request: usize,
    /// Spans per second over all senders; `None` sends flat out.
    pub rate: Option<f64>,
    /// Stop sending new requests after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests over all senders (retries not counted).
    pub requests: Option<u64>,
    /// `None` gives up on the first failed attempt.
    pub retry: Option<RetryPolicy>,
    pub request_timeout: Duration,
    pub mix: TrafficMix,
    /// Makes the traffic reproducible (ids and timestamps aside from the clock).
    pub seed: Option<u64>,
    /// Pathological chain traces sent beside the traffic, if any.
    pub chain: Option<ChainConfig>,
    /// Fragments each trace is cut into, sent by different senders; 1
    /// sends whole traces (a trace only straddles two consecutive
    /// requests of one sender to keep requests exact).
    pub split: usize,
    /// With `split` above 1: from a trace's first fragment to its last,
    /// the one holding the root.
    pub spread: Duration,
    /// With `split` above 1: one trace in this many is long-lived, its
    /// fragments over `long_spread` instead (0: none).
    pub long_lived_every: u32,
    pub long_spread: Duration,
    /// Of the senders, how many send OTLP/HTTP with JSON bodies (to
    /// `json_endpoint`) instead of `protocol`: the share of a fleet that
    /// exports JSON (browser SDKs, some languages' defaults). With `split`,
    /// their fragments belong to the same traces as everybody else's.
    pub json_senders: usize,
    /// Where JSON senders post: a URL as for HTTP `endpoint`.
    pub json_endpoint: String,
}

/// One chain trace ([`super::traffic::ChainTrace`]: every span the child
/// of the one before) every `every`, from the start of the run while it
/// lasts, by a sender of its own on a connection of its own; without a
/// duration, one chain at the start. A chain that has begun is sent to its
/// end even past the run's duration, so the receiver never holds half a
/// chain because the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainConfig {
    pub spans: usize,
    pub every: Duration,
    /// Spans in each of the chain's export requests. At ~130 B a span the
    /// default 5 000 makes requests of ~0.65 MB, well under the 4 MiB a
    /// gRPC receiver takes by default.
    pub spans_per_request: usize,
}

impl ChainConfig {
    /// `spans` spans every ten seconds, in requests of 5 000 spans.
    pub fn new(spans: usize) -> Self {
        Self {
            spans,
            every: Duration::from_secs(10),
            spans_per_request: DEFAULT_CHAIN_SPANS_PER_REQUEST,
        }
    }
}

/// Default of [`ChainConfig::spans_per_request`].
pub const DEFAULT_CHAIN_SPANS_PER_REQUEST: usize = 5_000;

/// A chain request larger than this is refused before it is sent: the
/// default gRPC message limit of tracecheck and the Collector.
pub const MAX_CHAIN_REQUEST_BYTES: usize = 4 * 1024 * 1024;

impl LoadConfig {
    /// Four senders, 400 spans a request, flat out, ten seconds, no retries.
    pub fn new(endpoint: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            gzip: false,
            senders: 4,
            spans_per_request: 400,
            rate: None,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            retry: None,
            request_timeout: Duration::from_secs(10),
            mix: TrafficMix::default(),
            seed: None,
            chain: None,
            split: 1,
            spread: DEFAULT_SPREAD,
            long_lived_every: 0,
            long_spread: DEFAULT_LONG_SPREAD,
            json_senders: 0,
            json_endpoint: DEFAULT_HTTP_ENDPOINT.to_owned(),
        }
    }

    /// The split traffic's shape, if traces are split.
    pub fn split_config(&self) -> Option<SplitConfig> {
        (self.split > 1).then_some(SplitConfig {
            fragments: self.split,
            spread: self.spread,
            long_lived: (self.long_lived_every > 0).then_some(LongLived {
                every: self.long_lived_every,
                spread: self.long_spread,
            }),
        })
    }
}

/// Where OTLP/HTTP is usually served.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";

/// Default of [`LoadConfig::spread`].
pub const DEFAULT_SPREAD: Duration = Duration::from_millis(300);

/// Default of [`LoadConfig::long_spread`]: longer than the daemon's
/// `idle_timeout` and `settle`, so a long-lived trace's requests are held
/// and its spans copied out, as a batch job's trace makes them.
pub const DEFAULT_LONG_SPREAD: Duration = Duration::from_secs(30);

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("a run needs a duration or a request count")]
    Unbounded,
    #[error("invalid setting: {0}")]
    Setting(&'static str),
    #[error("invalid traffic mix: {0}")]
    Mix(#[from] MixError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("a sender task failed: {0}")]
    Sender(String),
}

/// Export-call latency over every attempt, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    fn from_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((samples.len() as f64) * q).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
        };
        Self {
            count: samples.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1] as f64 / 1000.0,
        }
    }
}

/// The outcome of a load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub protocol: Option<Protocol>,
    pub senders: usize,
    /// Of `senders`, those that sent OTLP/HTTP JSON.
    #[serde(default)]
    pub json_senders: usize,
    pub spans_per_request: usize,
    pub elapsed_secs: f64,
    /// Export requests sent (each counted once, however often retried).
    pub requests: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Export calls made, retries included.
    pub attempts: u64,
    pub retries: u64,
    pub spans_sent: u64,
    /// Spans in successful requests, less those rejected by partial success.
    pub spans_accepted: u64,
    /// Protobuf-encoded size (uncompressed) of the accepted requests, for
    /// per-span memory and bandwidth figures.
    pub bytes_accepted: u64,
    /// Spans in requests that finally failed.
    pub spans_refused: u64,
    /// Spans the receiver rejected through partial success.
    pub spans_rejected: u64,
    pub accepted_spans_per_sec: f64,
    /// Traces all of whose spans were in successful requests.
    pub traces_sent: u64,
    /// Of `traces_sent`, the bank traces that violate the overdraft rule.
    pub violating_traces_sent: u64,
    pub latency: LatencySummary,
    /// Failed attempts by cause, e.g. `grpc Unavailable` or `http 503`.
    pub errors: BTreeMap<String, u64>,
    /// The chain traces, counted apart from everything above (which is the
    /// ordinary traffic only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainReport>,
    /// How traces were split, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitReport>,
}

/// The shape of a split run. Its `traces_sent` count traces all of whose
/// fragments were accepted; `elapsed_secs` includes the drain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// Fragments a trace was cut into (fewer for a trace of fewer spans).
    pub fragments: usize,
    pub spread_secs: f64,
    /// Traces begun; every one was sent to its last fragment.
    pub traces_started: u64,
    /// Of them, those spread over `long_spread_secs`.
    #[serde(default)]
    pub long_lived_traces: u64,
    #[serde(default)]
    pub long_spread_secs: f64,
    /// From the moment the last sender stopped beginning traces to the
    /// last fragment's answer.
    pub drain_secs: f64,
}

/// What became of the chain traces of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    pub spans_per_trace: usize,
    pub spans_per_request: usize,
    /// Chains begun.
    pub traces_started: u64,
    /// Chains all of whose requests were accepted.
    pub traces_sent: u64,
    /// Hex IDs of the chains sent whole, in order.
    pub trace_ids: Vec<String>,
    pub requests: u64,
    pub requests_failed: u64,
    pub spans_accepted: u64,
    /// Largest request, protobuf-encoded.
    pub largest_request_bytes: u64,
    /// Longest time from a chain's first request to its last one's answer.
    pub longest_send_secs: f64,
    pub latency: LatencySummary,
    pub errors: BTreeMap<String, u64>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = self
            .protocol
            .map_or_else(|| "?".to_owned(), |p| p.to_string());
        writeln!(
            f,
            "protocol {protocol}, {} senders{}, {} spans/request, {:.2} s",
            self.senders,
            if self.json_senders > 0 {
                format!(" ({} of them OTLP/HTTP JSON)", self.json_senders)
            } else {
                String::new()
            },
            self.spans_per_request,
            self.elapsed_secs
        )?;
        writeln!(
            f,
            "requests: {} sent, {} ok, {} failed ({} attempts, {} retries)",
            self.requests, self.requests_ok, self.requests_failed, self.attempts, self.retries
        )?;
        writeln!(
            f,
            "spans: {} sent, {} accepted ({:.0}/s), {} refused, {} rejected",
            self.spans_sent,
            self.spans_accepted,
            self.accepted_spans_per_sec,
            self.spans_refused,
            self.spans_rejected
        )?;
        writeln!(
            f,
            "traces: {} delivered whole, {} of them violating",
            self.traces_sent, self.violating_traces_sent
        )?;
        if let Some(split) = &self.split {
            writeln!(
                f,
                "split: {} fragments a trace on different senders over {:.3} s, root last; \
                 {} traces begun, drained in {:.2} s",
                split.fragments, split.spread_secs, split.traces_started, split.drain_secs
            )?;
            if split.long_lived_traces > 0 {
                writeln!(
                    f,
                    "long-lived: {} of those traces over {:.1} s",
                    split.long_lived_traces, split.long_spread_secs
                )?;
            }
        }
        write!(
            f,
            "export latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} calls)",
            self.latency.p50_ms, self.latency.p99_ms, self.latency.max_ms, self.latency.count
        )?;
        for (cause, count) in &self.errors {
            write!(f, "\nerror: {cause} x{count}")?;
        }
        if let Some(c) = &self.chain {
            write!(
                f,
                "\nchains: {} of {} sent whole ({} spans each, {} a request, largest {} B), \
                 {} spans accepted, {} requests failed, longest send {:.2} s",
                c.traces_sent,
                c.traces_started,
                c.spans_per_trace,
                c.spans_per_request,
                c.largest_request_bytes,
                c.spans_accepted,
                c.requests_failed,
                c.longest_send_secs
            )?;
            for (cause, count) in &c.errors {
                write!(f, "\nchain error: {cause} x{count}")?;
            }
        }
        Ok(())
    }
}

/// Runs a load test to completion and reports on it.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    validate(&config)?;
    // The JSON senders are the last ones.
    let mut exporters = (0..config.senders)
        .map(|i| Exporter::new(&config, i >= config.senders - config.json_senders))
        .collect::<Result<Vec<_>, _>>()?;
    let chain_exporter = match config.chain {
        Some(_) => Some(Exporter::new(&config, false)?),
        None => None,
    };
    let plan = Arc::new(Plan {
        deadline: config.duration.map(|d| Instant::now() + d),
        issued: AtomicU64::new(0),
        config,
    });
    let started = Instant::now();
    let base_seed = plan.config.seed.unwrap_or_else(clock_seed);
    let schedule = plan
        .config
        .split_config()
        .map(|split| SplitSchedule::new(split, plan.config.senders));
    let mut tasks = Vec::with_capacity(plan.config.senders);
    for (index, exporter) in exporters.drain(..).enumerate() {
        let generator = TrafficGenerator::new(
            plan.config.mix,
            Rng::new(base_seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        let traffic = match &schedule {
            Some(schedule) => Traffic::Split(schedule.sender(index, generator)),
            None => Traffic::whole(generator),
        };
        let sender = Sender {
            index,
            plan: Arc::clone(&plan),
            exporter,
            jitter: Rng::new(base_seed.rotate_left(17) ^ index as u64),
            tally: Tally::default(),
            latencies_us: Vec::new(),
            // A trace begun is sent whole, past the run's end if need be.
            past_run: schedule.is_some(),
        };
        tasks.push(tokio::spawn(sender.run(traffic)));
    }
    let chain_task = chain_exporter.map(|exporter| {
        let sender = Sender {
            index: plan.config.senders,
            plan: Arc::clone(&plan),
            exporter,
            jitter: Rng::new(base_seed.rotate_left(29)),
            tally: Tally::default(),
            latencies_us: Vec::new(),
            past_run: true,
        };
        let rng = Rng::new(base_seed.rotate_left(41) ^ 0xc4a1_0000);
        tokio::spawn(sender.run_chains(rng))
    });
    let mut tally = Tally::default();
    let mut latencies = Vec::new();
    for task in tasks {
        let (t, l) = task.await.map_err(|e| LoadError::Sender(e.to_string()))?;
        tally.merge(t);
        latencies.extend(l);
    }
    // The chains' own figures; they may end after the traffic (a chain
    // begun is sent whole), which does not count in `elapsed`.
    let ended = Instant::now();
    let elapsed = (ended - started).as_secs_f64();
    let split = schedule.map(|schedule| {
        let config = schedule.config();
        SplitReport {
            fragments: config.fragments,
            spread_secs: config.spread.as_secs_f64(),
            traces_started: schedule.traces_started(),
            long_lived_traces: schedule.long_lived_started(),
            long_spread_secs: config.long_lived.map_or(0.0, |l| l.spread.as_secs_f64()),
            drain_secs: schedule.stopped_at().map_or(0.0, |stopped| {
                ended
                    .into_std()
                    .saturating_duration_since(stopped)
                    .as_secs_f64()
            }),
        }
    });
    let chain = match chain_task {
        Some(task) => Some(task.await.map_err(|e| LoadError::Sender(e.to_string()))?),
        None => None,
    };
    let config = &plan.config;
    Ok(LoadReport {
        protocol: Some(config.protocol),
        senders: config.senders,
        json_senders: config.json_senders,
        spans_per_request: config.spans_per_request,
        elapsed_secs: elapsed,
        requests: tally.requests,
        requests_ok: tally.requests_ok,
        requests_failed: tally.requests_failed,
        attempts: tally.attempts,
        retries: tally.retries,
        spans_sent: tally.spans_sent,
        spans_accepted: tally.spans_accepted,
        bytes_accepted: tally.bytes_accepted,
        spans_refused: tally.spans_refused,
        spans_rejected: tally.spans_rejected,
        accepted_spans_per_sec: if elapsed > 0.0 {
            tally.spans_accepted as f64 / elapsed
        } else {
            0.0
        },
        traces_sent: tally.traces_sent,
        violating_traces_sent: tally.violating_traces_sent,
        latency: LatencySummary::from_micros(latencies),
        errors: tally.errors,
        chain,
        split,
    })
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    if config.duration.is_none() && config.requests.is_none() {
        return Err(LoadError::Unbounded);
    }
    if config.senders == 0 {
        return Err(LoadError::Setting("senders must be at least 1"));
    }
    if config.spans_per_request == 0 {
        return Err(LoadError::Setting("spans per request must be at least 1"));
    }
    if let Some(rate) = config.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadError::Setting("rate must be a positive number"));
        }
    }
    if config.request_timeout.is_zero() {
        return Err(LoadError::Setting("request timeout must be positive"));
    }
    config.mix.validate()?;
    if config.split == 0 {
        return Err(LoadError::Setting("split must be at least 1"));
    }
    if config.json_senders > config.senders {
        return Err(LoadError::Setting(
            "JSON senders are some of the senders: at most --senders",
        ));
    }
    if config.long_lived_every > 0 && config.split < 2 {
        return Err(LoadError::Setting(
            "long-lived traces are split traces: give --split too",
        ));
    }
    if config.long_lived_every > 0 && config.long_spread <= config.spread {
        return Err(LoadError::Setting(
            "--long-spread must be longer than --spread",
        ));
    }
    if config.split > config.senders {
        return Err(LoadError::Setting(
            "split needs at least as many senders as fragments: each goes on another",
        ));
    }
    if let Some(chain) = config.chain {
        if chain.spans == 0 || chain.spans_per_request == 0 {
            return Err(LoadError::Setting(
                "chain spans and chain spans per request must be at least 1",
            ));
        }
        if chain.every.is_zero() {
            return Err(LoadError::Setting("chain interval must be positive"));
        }
    }
    Ok(())
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Plan {
    config: LoadConfig,
    deadline: Option<Instant>,
    issued: AtomicU64,
}

impl Plan {
    fn past_deadline(&self, at: Instant) -> bool {
        self.deadline.is_some_and(|d| at >= d)
    }

    /// Claims the next request of the budget, if any is left.
    fn claim_request(&self) -> bool {
        match self.config.requests {
            Some(max) => self.issued.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    requests_ok: u64,
    requests_failed: u64,
    attempts: u64,
    retries: u64,
    spans_sent: u64,
    spans_accepted: u64,
    bytes_accepted: u64,
    spans_refused: u64,
    spans_rejected: u64,
    traces_sent: u64,
    violating_traces_sent: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        self.attempts += other.attempts;
        self.retries += other.retries;
        self.spans_sent += other.spans_sent;
        self.spans_accepted += other.spans_accepted;
        self.bytes_accepted += other.bytes_accepted;
        self.spans_refused += other.spans_refused;
        self.spans_rejected += other.spans_rejected;
        self.traces_sent += other.traces_sent;
        self.violating_traces_sent += other.violating_traces_sent;
        for (cause, count) in other.errors {
            *self.errors.entry(cause).or_default() += count;
        }
    }

    fn error(&mut self, cause: String) {
        *self.errors.entry(cause).or_default() += 1;
    }
}

/// Counts traces delivered whole when traces straddle batches: a split
/// trace counts only if every batch that carried part of it succeeded.
#[derive(Debug, Default)]
struct TraceLedger {
    open_trace_lost: bool,
}

impl TraceLedger {
    fn settle(&mut self, batch: &Batch, delivered: bool, tally: &mut Tally) {
        for (i, shape) in batch.completed.iter().enumerate() {
            let carried_in = i == 0 && batch.continues_open_trace;
            if delivered && !(carried_in && self.open_trace_lost) {
                tally.traces_sent += 1;
                if shape.is_violating() {
                    tally.violating_traces_sent += 1;
                }
            }
        }
        self.open_trace_lost = if batch.leaves_open_trace {
            let same_trace_still_open = batch.continues_open_trace && batch.completed.is_empty();
            !delivered || (same_trace_still_open && self.open_trace_lost)
        } else {
            false
        };
    }
}

/// The result of one export call.
#[derive(Debug)]
enum Attempt {
    Accepted {
        rejected: u64,
    },
    Retryable {
        cause: String,
        delay: Option<Duration>,
    },
    Failed {
        cause: String,
    },
}

/// One sender's connection to the receiver (each sender has its own).
enum Exporter {
    Grpc {
        client: TraceServiceClient<Channel>,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: Arc<str>,
        gzip: bool,
        /// OTLP/JSON bodies, not protobuf.
        json: bool,
        timeout: Duration,
    },
}

fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

fn http_url(endpoint: &str) -> Result<String, LoadError> {
    let url = with_scheme(endpoint);
    let parsed: http_uri::Uri =
        url.parse()
            .map_err(|e: http_uri::InvalidUri| LoadError::Endpoint {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
    if parsed.host().is_none() {
        return Err(LoadError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: "no host".to_owned(),
        });
    }
    let path = parsed.path();
    Ok(if path.is_empty() || path == "/" {
        format!("{}/v1/traces", url.trim_end_matches('/'))
    } else {
        url
    })
}

/// `http::Uri` through tonic's re-export, to avoid another dependency line.
mod http_uri {
    pub use tonic::codegen::http::uri::InvalidUri;
    pub use tonic::codegen::http::Uri;
}

impl Exporter {
    fn new(config: &LoadConfig, json: bool) -> Result<Self, LoadError> {
        let timeout = config.request_timeout;
        let protocol = if json {
            Protocol::Http
        } else {
            config.protocol
        };
        match protocol {
            Protocol::Grpc => {
                let url = with_scheme(&config.endpoint);
                let endpoint = Endpoint::from_shared(url)
                    .map_err(|e| LoadError::Endpoint {
                        endpoint: config.endpoint.clone(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(timeout)
                    .timeout(timeout);
                let mut client = TraceServiceClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(MAX_RESPONSE_BYTES as usize);
                if config.gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                Ok(Exporter::Grpc { client, timeout })
            }
            Protocol::Http => {
                let url = http_url(if json {
                    &config.json_endpoint
                } else {
                    &config.endpoint
                })?;
                let client = crate::net::client::builder(None, "bench load")
                    .map_err(|e| LoadError::Client(e.to_string()))?
                    .no_proxy()
                    .connect_timeout(timeout)
                    .build()
                    .map_err(|e| LoadError::Client(e.to_string()))?;
                Ok(Exporter::Http {
                    client,
                    url: url.into(),
                    gzip: config.gzip,
                    json,
                    timeout,
                })
            }
        }
    }

    /// Bytes to send for a batch; the protobuf or JSON body (gzipped if
    /// asked) for HTTP, nothing for gRPC, which encodes the message itself.
    fn prepare(&self, request: &ExportTraceServiceRequest) -> Option<Bytes> {
        match self {
            Exporter::Grpc { .. } => None,
            Exporter::Http { gzip, json, .. } => {
                let plain = if *json {
                    crate::otlp::json::encode_export_request(request).into_bytes()
                } else {
                    request.encode_to_vec()
                };
                if *gzip {
                    let mut encoder =
                        GzEncoder::new(Vec::with_capacity(plain.len() / 4), Compression::fast());
                    // Writing into a Vec cannot fail.
                    let _ = encoder.write_all(&plain);
                    Some(Bytes::from(encoder.finish().unwrap_or_default()))
                } else {
                    Some(Bytes::from(plain))
                }
            }
        }
    }

    async fn attempt(
        &mut self,
        request: &ExportTraceServiceRequest,
        body: Option<&Bytes>,
    ) -> Attempt {
        match self {
            Exporter::Grpc { client, timeout } => {
                let mut call = tonic::Request::new(request.clone());
                call.set_timeout(*timeout);
                let answer = tokio::time::timeout(*timeout, client.export(call)).await;
                match answer {
                    Err(_) => Attempt::Retryable {
                        cause: "grpc timeout".to_owned(),
                        delay: None,
                    },
                    Ok(Ok(response)) => Attempt::Accepted {
                        rejected: rejected_of(&response.into_inner()),
                    },
                    Ok(Err(status)) => grpc_failure(&status),
                }
            }
            Exporter::Http {
                client,
                url,
                gzip,
                json,
                timeout,
            } => {
                let content_type = if *json {
                    "application/json"
                } else {
                    "application/x-protobuf"
                };
                let mut call = client
                    .post(url.as_ref())
                    .header(CONTENT_TYPE, content_type)
                    .timeout(*timeout)
                    .body(body.cloned().unwrap_or_default());
                if *gzip {
                    call = call.header(CONTENT_ENCODING, "gzip");
                }
                match call.send().await {
                    Err(e) => Attempt::Retryable {
                        cause: http_transport_cause(&e),
                        delay: None,
                    },
                    Ok(response) => http_answer(response, *json).await,
                }
            }
        }
    }
}

fn rejected_of(response: &ExportTraceServiceResponse) -> u64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

fn grpc_failure(status: &tonic::Status) -> Attempt {
    let cause = format!("grpc {:?}", status.code());
    match status.code() {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Attempt::Retryable {
            cause,
            delay: retry_delay_of(status.details()),
        },
        _ => Attempt::Failed { cause },
    }
}

fn http_transport_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "http timeout".to_owned()
    } else if e.is_connect() {
        "http connect".to_owned()
    } else {
        "http transport".to_owned()
    }
}

async fn http_answer(response: reqwest::Response, json: bool) -> Attempt {
    let status = response.status();
    if status.is_success() {
        let gzipped = response
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let rejected = match response.bytes().await {
            Ok(body) if json => json_rejected(&body, gzipped),
            Ok(body) => decode_http_response(&body, gzipped).map_or(0, |r| rejected_of(&r)),
            Err(_) => 0,
        };
        return Attempt::Accepted { rejected };
    }
    let cause = format!("http {}", status.as_u16());
    match status.as_u16() {
        429 | 502 | 503 | 504 => Attempt::Retryable {
            cause,
            delay: response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        },
        _ => Attempt::Failed { cause },
    }
}

/// `partialSuccess.rejectedSpans` of an OTLP/JSON answer (an int64, so
/// written as a string, or as a number by some servers).
fn json_rejected(body: &[u8], gzipped: bool) -> u64 {
    let mut plain = Vec::new();
    let body = if gzipped {
        if GzDecoder::new(body)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut plain)
            .is_err()
        {
            return 0;
        }
        &plain[..]
    } else {
        body
    };
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    match &answer["partialSuccess"]["rejectedSpans"] {
        serde_json::Value::String(n) => n.parse().unwrap_or(0),
        n => n.as_u64().unwrap_or(0),
    }
}

fn decode_http_response(body: &[u8], gzipped: bool) -> Option<ExportTraceServiceResponse> {
    if gzipped {
        let mut plain = Vec::new();
        GzDecoder::new(body)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut plain)
            .ok()?;
        ExportTraceServiceResponse::decode(plain.as_slice()).ok()
    } else {
        ExportTraceServiceResponse::decode(body).ok()
    }
}

/// `Retry-After` as delay-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    let mut parts = value.split_ascii_whitespace();
    let _weekday = parts.next()?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let hour: u64 = hms.next()?.parse().ok()?;
    let minute: u64 = hms.next()?.parse().ok()?;
    let second: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60
    {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// What a sender sends.
enum Traffic {
    /// Whole traces, packed in order into exact requests.
    Whole {
        generator: TrafficGenerator,
        ledger: TraceLedger,
    },
    /// This sender's side of split traffic.
    Split(SplitSender),
}

impl Traffic {
    fn whole(generator: TrafficGenerator) -> Self {
        Traffic::Whole {
            generator,
            ledger: TraceLedger::default(),
        }
    }
}

struct Sender {
    index: usize,
    plan: Arc<Plan>,
    exporter: Exporter,
    jitter: Rng,
    tally: Tally,
    latencies_us: Vec<u64>,
    /// Retries go on past the run's deadline (the chain sender and split
    /// senders: a chain or trace begun is sent whole).
    past_run: bool,
}

/// How long a split sender with nothing to send waits at most before it
/// looks again (for fragments come due, roots released by other senders,
/// or, flat out, the next traces to begin).
const SPLIT_POLL: Duration = Duration::from_millis(5);

/// A split request carries fragments come due of at most this many times
/// `spans_per_request` spans; the others wait for the next request.
const MAX_DUE_REQUESTS: usize = 4;

/// When a split sender begins traces: at a steady rate in spans a second
/// (every fragment counted), whatever comes due meanwhile, as traces begin
/// in production. Beginning traces to fill each request instead makes a
/// feedback loop: the later fragments of the traces begun take the room
/// of new ones a spread later, so beginnings come in waves that do not die
/// down (flat out, with 4 fragments, a wave every 4/3 of the spread).
///
/// With `--rate` the rate is this sender's share, and a request goes on
/// each tick. Flat out a request goes once a request's worth of traces is
/// earned, or at once if that took longer than the last answer; the rate
/// is adapted after each answer towards `spans_per_request` over the
/// answer's round trip, smoothed over `max(1 s, spread)`. Requests then
/// carry about `spans_per_request` spans back to back, as whole traces do
/// flat out. (Sending whatever is due as soon as the last answer came
/// makes requests of a few spans, answered fast, that stay small.)
#[derive(Debug)]
struct BeginPace {
    /// Spans a second.
    rate: f64,
    /// Spans' worth of traces to begin; begun traces overdraw it a little.
    credit: f64,
    last: Option<Instant>,
    spans_per_request: f64,
    /// Flat out: the smoothing time.
    adapt: Option<Duration>,
}

impl BeginPace {
    /// Flat out, the first guess: a request every 10 ms.
    const FIRST_ROUND_TRIP: Duration = Duration::from_millis(10);

    fn new(config: &LoadConfig) -> Self {
        let spans_per_request = config.spans_per_request as f64;
        let (rate, adapt) = match config.rate {
            Some(rate) => (rate / config.senders as f64, None),
            None => (
                spans_per_request / Self::FIRST_ROUND_TRIP.as_secs_f64(),
                Some(config.spread.max(Duration::from_secs(1))),
            ),
        };
        Self {
            rate,
            credit: 0.0,
            last: None,
            spans_per_request,
            adapt,
        }
    }

    fn earn(&mut self, now: Instant) {
        let earned = match self.last {
            None => self.spans_per_request,
            Some(last) => self.rate * (now - last).as_secs_f64(),
        };
        self.last = Some(now);
        // A stall does not turn into a burst of beginnings.
        self.credit = (self.credit + earned).min(2.0 * self.spans_per_request);
    }

    /// Flat out: how long until a request's worth of traces is earned.
    fn wait(&mut self, now: Instant) -> Duration {
        if self.adapt.is_none() {
            return Duration::ZERO;
        }
        self.earn(now);
        let missing = self.spans_per_request - self.credit;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate)
        }
    }

    /// Spans' worth of traces to begin now: a request's worth at first,
    /// then what the rate earned since.
    fn take(&mut self, now: Instant) -> usize {
        self.earn(now);
        if self.credit >= 1.0 {
            self.credit as usize
        } else {
            0
        }
    }

    fn begun(&mut self, spans: usize) {
        self.credit -= spans as f64;
    }

    /// Flat out: moves the rate towards a request's worth a round trip.
    fn answered(&mut self, round_trip: Duration) {
        let Some(smoothing) = self.adapt else {
            return;
        };
        let round_trip = round_trip.max(Duration::from_micros(100)).as_secs_f64();
        let weight = (round_trip / smoothing.as_secs_f64()).min(1.0);
        self.rate += (self.spans_per_request / round_trip - self.rate) * weight;
    }
}

impl Sender {
    /// This sender's share of the rate: a tick per request.
    fn ticker(&self) -> Option<tokio::time::Interval> {
        let config = &self.plan.config;
        config.rate.map(|rate| {
            let per_sender = rate / config.senders as f64;
            let period =
                Duration::from_secs_f64((config.spans_per_request as f64 / per_sender).max(1e-6));
            let offset = period.mul_f64(self.index as f64 / config.senders as f64);
            let mut ticker = tokio::time::interval_at(Instant::now() + offset, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            ticker
        })
    }

    /// Waits for the next tick, if paced; false once the run's deadline
    /// has come first.
    async fn tick(&self, ticker: Option<&mut tokio::time::Interval>) -> bool {
        let Some(ticker) = ticker else {
            return true;
        };
        match self.plan.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, ticker.tick())
                .await
                .is_ok(),
            None => {
                ticker.tick().await;
                true
            }
        }
    }

    async fn run(self, traffic: Traffic) -> (Tally, Vec<u64>) {
        match traffic {
            Traffic::Whole { generator, ledger } => self.run_whole(generator, ledger).await,
            Traffic::Split(split) => self.run_split(split).await,
        }
    }

    /// Whole traces: each request the next `spans_per_request` spans.
    async fn run_whole(
        mut self,
        mut generator: TrafficGenerator,
        mut ledger: TraceLedger,
    ) -> (Tally, Vec<u64>) {
        let mut ticker = self.ticker();
        loop {
            if self.plan.past_deadline(Instant::now()) {
                break;
            }
            if !self.tick(ticker.as_mut()).await {
                break;
            }
            if !self.plan.claim_request() {
                break;
            }
            let batch = generator.next_batch(self.plan.config.spans_per_request);
            let delivered = self.send(&batch.request, batch.span_count).await;
            ledger.settle(&batch, delivered, &mut self.tally);
        }
        (self.tally, self.latencies_us)
    }

    /// Split traffic: while the run lasts, each request (on the ticks of
    /// `--rate`, or back to back) carries the fragments come due to this
    /// sender and the first fragments of the traces it begins
    /// ([`BeginPace`]); then, until every fragment of every trace begun is
    /// settled, the fragments as they come due.
    async fn run_split(mut self, mut split: SplitSender) -> (Tally, Vec<u64>) {
        let mut ticker = self.ticker();
        let mut pace = BeginPace::new(&self.plan.config);
        let max_due = self.plan.config.spans_per_request * MAX_DUE_REQUESTS;
        // A request of the budget taken, and its tick, not yet sent.
        let mut claimed = false;
        loop {
            if split.is_starting()
                && !claimed
                && (self.plan.past_deadline(Instant::now())
                    || !self.tick(ticker.as_mut()).await
                    || !self.plan.claim_request())
            {
                split.stop_starting();
            }
            claimed = split.is_starting();
            let mut now = Instant::now();
            if split.is_starting() {
                let wait = pace.wait(now);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    now = Instant::now();
                }
            }
            let begin = if split.is_starting() {
                pace.take(now)
            } else if split.is_done() {
                break;
            } else {
                0
            };
            let Some(batch) = split.next_batch(now.into_std(), max_due, begin) else {
                // Nothing due and nothing to begin yet.
                let next = split.next_due().map_or(now + SPLIT_POLL, Instant::from_std);
                tokio::time::sleep_until(
                    next.clamp(now + Duration::from_micros(200), now + SPLIT_POLL),
                )
                .await;
                continue;
            };
            claimed = false;
            pace.begun(batch.begun_spans);
            let began = Instant::now();
            let delivered = self.send(&batch.request, batch.span_count).await;
            pace.answered(began.elapsed());
            let whole = split.settle(&batch.fragments, delivered);
            self.tally.traces_sent += whole.traces;
            self.tally.violating_traces_sent += whole.violating;
        }
        (self.tally, self.latencies_us)
    }

    /// Sends a chain trace every `every` while the run lasts (one if it has
    /// no duration), each whole; reports them apart from the traffic.
    async fn run_chains(mut self, mut rng: Rng) -> ChainReport {
        let Some(chain) = self.plan.config.chain else {
            return ChainReport::default();
        };
        let mut report = ChainReport {
            spans_per_trace: chain.spans,
            spans_per_request: chain.spans_per_request,
            ..ChainReport::default()
        };
        let started = Instant::now();
        for k in 0u32.. {
            let at = started + chain.every * k;
            if k > 0 && (self.plan.deadline.is_none() || self.plan.past_deadline(at)) {
                break;
            }
            tokio::time::sleep_until(at).await;
            report.traces_started += 1;
            let trace = ChainTrace::new(&mut rng, chain.spans, chain.spans_per_request);
            let trace_id = trace.trace_id;
            let began = Instant::now();
            let mut whole = true;
            for request in trace {
                let bytes = request.encoded_len();
                report.largest_request_bytes = report.largest_request_bytes.max(bytes as u64);
                report.requests += 1;
                if bytes > MAX_CHAIN_REQUEST_BYTES {
                    report.requests_failed += 1;
                    *report
                        .errors
                        .entry("request over 4 MiB, not sent".to_owned())
                        .or_default() += 1;
                    whole = false;
                    continue;
                }
                let span_count = request
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                let accepted_before = self.tally.spans_accepted;
                if self.send(&request, span_count).await {
                    report.spans_accepted += self.tally.spans_accepted - accepted_before;
                } else {
                    report.requests_failed += 1;
                    whole = false;
                }
            }
            report.longest_send_secs = report.longest_send_secs.max(began.elapsed().as_secs_f64());
            if whole {
                report.traces_sent += 1;
                report
                    .trace_ids
                    .push(crate::ids::TraceId(trace_id).to_hex());
            }
        }
        report.latency = LatencySummary::from_micros(std::mem::take(&mut self.latencies_us));
        report.errors = std::mem::take(&mut self.tally.errors);
        report
    }

    /// Sends one request of `spans` spans, retrying as configured; true if
    /// it was accepted.
    async fn send(&mut self, request: &ExportTraceServiceRequest, spans: usize) -> bool {
        let spans = spans as u64;
        self.tally.requests += 1;
        self.tally.spans_sent += spans;
        let body = self.exporter.prepare(request);
        let retry = self.plan.config.retry;
        let mut backoff = retry.map_or(Duration::ZERO, |r| r.initial_backoff);
        let mut retries_done = 0u32;
        loop {
            let began = Instant::now();
            let attempt = self.exporter.attempt(request, body.as_ref()).await;
            self.latencies_us
                .push(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
            self.tally.attempts += 1;
            let (cause, server_delay) = match attempt {
                Attempt::Accepted { rejected } => {
                    let rejected = rejected.min(spans);
                    self.tally.requests_ok += 1;
                    self.tally.spans_rejected += rejected;
                    self.tally.spans_accepted += spans - rejected;
                    self.tally.bytes_accepted += request.encoded_len() as u64;
                    return true;
                }
                Attempt::Failed { cause } => {
                    self.tally.error(cause);
                    break;
                }
                Attempt::Retryable { cause, delay } => (cause, delay),
            };
            self.tally.error(cause);
            let Some(policy) = retry else { break };
            if retries_done >= policy.max_retries {
                break;
            }
            let pause = match server_delay {
                Some(delay) => delay.min(MAX_SERVER_DELAY),
                None => {
                    let jitter = backoff.mul_f64(self.jitter.below(200) as f64 / 1000.0);
                    backoff + jitter
                }
            };
            backoff = (backoff * 2).min(policy.max_backoff);
            if !self.past_run && self.plan.past_deadline(Instant::now() + pause) {
                break;
            }
            tokio::time::sleep(pause).await;
            retries_done += 1;
            self.tally.retries += 1;
        }
        self.tally.requests_failed += 1;
        self.tally.spans_refused += spans;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::traffic::TraceShape;

    fn batch(completed: Vec<TraceShape>, continues: bool, leaves: bool) -> Batch {
        Batch {
            request: ExportTraceServiceRequest::default(),
            span_count: 1,
            completed,
            continues_open_trace: continues,
            leaves_open_trace: leaves,
        }
    }

    #[test]
    fn split_traces_count_only_when_every_part_arrived() {
        use TraceShape::*;
        let mut ledger = TraceLedger::default();
        let mut tally = Tally::default();
        ledger.settle(
            &batch(vec![Web, BankViolation], false, true),
            true,
            &mut tally,
        );
        assert_eq!((tally.traces_sent, tally.violating_traces_sent), (2, 1));
        // The open trace's second part is lost: it does not count.
        ledger.settle(&batch(vec![BankViolation], true, true), false, &mut tally);
        assert_eq!((tally.traces_sent, tally.violating_traces_sent), (2, 1));
        // The next trace began in the failed batch and ends here: lost too.
        ledger.settle(
            &batch(vec![BankViolation, Web], true, false),
            true,
            &mut tally,
        );
        assert_eq!((tally.traces_sent, tally.violating_traces_sent), (3, 1));
        // A trace spanning three batches, the middle one failing.
        ledger.settle(&batch(vec![], false, true), true, &mut tally);
        ledger.settle(&batch(vec![], true, true), false, &mut tally);
        ledger.settle(&batch(vec![BankViolation], true, false), true, &mut tally);
        assert_eq!((tally.traces_sent, tally.violating_traces_sent), (3, 1));
        // And one where all three arrive.
        ledger.settle(&batch(vec![], false, true), true, &mut tally);
        ledger.settle(&batch(vec![], true, true), true, &mut tally);
        ledger.settle(&batch(vec![BankViolation], true, false), true, &mut tally);
        assert_eq!((tally.traces_sent, tally.violating_traces_sent), (4, 2));
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                now + Duration::from_secs(60)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
            None
        );
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn latency_quantiles() {
        let summary = LatencySummary::from_micros((1..=1000).rev().collect());
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_ms, 0.5);
        assert_eq!(summary.p99_ms, 0.99);
        assert_eq!(summary.max_ms, 1.0);
        assert_eq!(
            LatencySummary::from_micros(vec![]),
            LatencySummary::default()
        );
    }

    #[test]
    fn http_urls_get_the_traces_path() {
        assert_eq!(
            http_url("127.0.0.1:4318").ok(),
            Some("http://127.0.0.1:4318/v1/traces".to_owned())
        );
        assert_eq!(
            http_url("http://localhost:4318/").ok(),
            Some("http://localhost:4318/v1/traces".to_owned())
        );
        assert_eq!(
            http_url("http://localhost:4318/custom").ok(),
            Some("http://localhost:4318/custom".to_owned())
        );
        assert!(http_url("http://").is_err());
    }
}
