//! `bench`: the load generator and counting sink used to measure and
//! soak-test the daemon, as library code (for in-process integration tests)
//! and as the `load` and `sink` commands.
//!
//! - [`traffic`]: synthetic web and bank-withdrawal traces, batched.
//! - [`loadgen`]: concurrent OTLP/gRPC or OTLP/HTTP senders and their report.
//! - [`sink`]: an OTLP receiver that counts what it gets, with fault injection.
//! - [`models`]: the model sets evaluated in benchmarks.

pub mod loadgen;
pub mod models;
pub mod sink;
pub mod traffic;

use std::net::SocketAddr;
use std::time::Duration;

use self::loadgen::{ChainConfig, LoadConfig, LoadError, Protocol, RetryPolicy};
use self::sink::{Faults, Sink, SinkConfig, SinkError};
use self::traffic::TrafficMix;

/// The `bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Send synthetic traces to an OTLP receiver and report what it accepted.
    Load(LoadArgs),
    /// Receive OTLP traces and count them.
    Sink(SinkArgs),
    /// Print the benchmarks' model set as YAML: the bank model, nine models
    /// (or `--matching`) matching every generated trace, the rest matching
    /// nothing.
    Models {
        /// How many models.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// How many of them (the bank model included) match every
        /// generated trace; the rest match nothing.
        #[arg(long, default_value_t = 10)]
        matching: usize,
        /// Add the two verdict-timing models: `verdict-early` (can pass
        /// early) and `verdict-settled` (waits for the trace to settle).
        #[arg(long)]
        timing: bool,
        /// Add `chain-descendants`, a descendant selector with an assertion
        /// on the chain traces of `load --chain-spans`.
        #[arg(long)]
        chain: bool,
    },
}

/// Arguments of `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Receiver address [default: http://127.0.0.1:4317 for grpc,
    /// http://127.0.0.1:4318/v1/traces for http].
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// Compress requests with gzip.
    #[arg(long)]
    pub gzip: bool,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    #[arg(long, default_value_t = 400)]
    pub spans_per_request: usize,
    /// Target spans per second over all senders [default: flat out].
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to send, e.g. 30s, 500ms, 2m [default: 10s unless --requests].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Total export requests to send over all senders.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Retry UNAVAILABLE / RESOURCE_EXHAUSTED / 429 / 502 / 503 / 504 answers
    /// and transport errors, honouring RetryInfo and Retry-After.
    #[arg(long)]
    pub retry: bool,
    #[arg(long, default_value_t = 10)]
    pub max_retries: u32,
    /// First retry pause when the receiver names none; doubles up to 5s.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub retry_backoff: Duration,
    /// Per export call.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Trace shape weights.
    #[arg(long, default_value_t = TrafficMix::default())]
    pub mix: TrafficMix,
    /// Seed for reproducible traffic.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also send a chain trace of this many spans (each the child of the
    /// one before) every --chain-every, on a connection of its own,
    /// reported apart from the traffic [default: none].
    #[arg(long)]
    pub chain_spans: Option<usize>,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub chain_every: Duration,
    /// Spans in each export request of a chain (mind the receiver's 4 MiB
    /// message limit: ~130 B a span).
    #[arg(long, default_value_t = loadgen::DEFAULT_CHAIN_SPANS_PER_REQUEST)]
    pub chain_spans_per_request: usize,
    /// Cut every trace into N fragments sent by different senders (N at
    /// most --senders), the one holding the root last, each request
    /// carrying fragments of many traces, as SDKs in several services
    /// export them; the run then sends the fragments of the traces begun
    /// to the end. 1: whole traces.
    #[arg(long, default_value_t = 1)]
    pub split: usize,
    /// With --split: from a trace's first fragment to its last, e.g. 300ms,
    /// or 5s as SDKs' batching gives.
    #[arg(long, value_parser = parse_duration, default_value = "300ms")]
    pub spread: Duration,
    /// With --split: the share of traces that are long-lived (e.g. 0.01:
    /// one trace in round(1/SHARE) over the run), their --split fragments
    /// over --long-spread instead, the root last.
    #[arg(long, value_parser = parse_share)]
    pub long_lived: Option<f64>,
    /// With --long-lived: from such a trace's first fragment to its root.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub long_spread: Duration,
    /// Of --senders, how many send OTLP/HTTP with JSON bodies to
    /// --json-endpoint instead of --protocol; with --split, fragments of
    /// the same traces as the others'.
    #[arg(long, default_value_t = 0)]
    pub json_senders: usize,
    /// Where the JSON senders post [default: --endpoint with --protocol
    /// http, else http://127.0.0.1:4318/v1/traces].
    #[arg(long)]
    pub json_endpoint: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    pub fn to_config(&self) -> LoadConfig {
        let endpoint = self.endpoint.clone().unwrap_or_else(|| {
            match self.protocol {
                Protocol::Grpc => "http://127.0.0.1:4317",
                Protocol::Http => "http://127.0.0.1:4318/v1/traces",
            }
            .to_owned()
        });
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (duration, _) => duration,
        };
        let json_endpoint = self
            .json_endpoint
            .clone()
            .unwrap_or_else(|| match self.protocol {
                Protocol::Http => endpoint.clone(),
                Protocol::Grpc => loadgen::DEFAULT_HTTP_ENDPOINT.to_owned(),
            });
        LoadConfig {
            endpoint,
            protocol: self.protocol,
            gzip: self.gzip,
            senders: self.senders,
            spans_per_request: self.spans_per_request,
            rate: self.rate,
            duration,
            requests: self.requests,
            retry: self.retry.then(|| RetryPolicy {
                max_retries: self.max_retries,
                initial_backoff: self.retry_backoff,
                ..RetryPolicy::default()
            }),
            request_timeout: self.timeout,
            mix: self.mix,
            seed: self.seed,
            chain: self.chain_spans.map(|spans| ChainConfig {
                spans,
                every: self.chain_every,
                spans_per_request: self.chain_spans_per_request,
            }),
            split: self.split,
            spread: self.spread,
            long_lived_every: self.long_lived.map_or(0, |share| {
                (1.0 / share).round().clamp(1.0, f64::from(u32::MAX)) as u32
            }),
            long_spread: self.long_spread,
            json_senders: self.json_senders,
            json_endpoint,
        }
    }
}

/// Arguments of `sink`.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// OTLP/gRPC listen address, e.g. 127.0.0.1:14317.
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address (POST /v1/traces, GET /stats).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Listen address of a separate stats port (GET /stats, POST /reset).
    #[arg(long)]
    pub stats: Option<SocketAddr>,
    /// Refuse the first N export requests with UNAVAILABLE / 503.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,
    /// Reject up to N spans of every request through partial success.
    #[arg(long, default_value_t = 0)]
    pub partial_reject: u64,
    /// Delay to advertise with refusals (RetryInfo / Retry-After).
    #[arg(long, value_parser = parse_duration)]
    pub retry_after: Option<Duration>,
    /// Refuse requests larger than this many bytes (decoded), as the
    /// Collector's receivers do over their `max_recv_msg_size_mib`.
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Refuse, as invalid, every request holding a span of this name.
    #[arg(long)]
    pub refuse_span_named: Option<String>,
    /// Do not keep id sets (no unique/duplicate counts; constant memory).
    #[arg(long)]
    pub no_unique: bool,
    /// Print the final counts as JSON only.
    #[arg(long)]
    pub json: bool,
}

impl SinkArgs {
    pub fn to_config(&self) -> SinkConfig {
        SinkConfig {
            grpc: self.grpc,
            http: self.http,
            stats: self.stats,
            faults: Faults {
                fail_first: self.fail_first,
                partial_reject: self.partial_reject,
                retry_after: self.retry_after,
                max_message_bytes: self.max_message_bytes,
                refuse_span_named: self.refuse_span_named.clone(),
            },
            track_unique: !self.no_unique,
        }
    }
}

/// Why a `bench` command failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot write the report: {0}")]
    Report(#[from] serde_json::Error),
}

/// Runs a `bench` subcommand, printing its results to stdout.
pub async fn run(command: BenchCommand) -> Result<(), BenchError> {
    match command {
        BenchCommand::Load(args) => {
            let report = loadgen::run(args.to_config()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        BenchCommand::Models {
            count,
            matching,
            timing,
            chain,
        } => {
            let mut set = models::model_set_matching(count, matching);
            for (wanted, extra) in [
                (timing, models::TIMING_MODELS),
                (chain, models::CHAIN_MODEL),
            ] {
                if wanted {
                    if !set.is_empty() {
                        set.push_str("\n---\n");
                    }
                    set.push_str(extra);
                }
            }
            println!("{set}");
            Ok(())
        }
        BenchCommand::Sink(args) => {
            let handle = Sink::start(args.to_config()).await?;
            let listening = [
                ("grpc", handle.grpc_addr()),
                ("http", handle.http_addr()),
                ("stats", handle.stats_addr()),
            ]
            .iter()
            .filter_map(|(name, addr)| addr.map(|a| format!("{name} {a}")))
            .collect::<Vec<_>>()
            .join(", ");
            eprintln!("sink listening: {listening}");
            wait_for_termination().await;
            let stats = handle.shutdown().await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!("{stats}");
                println!("{}", serde_json::to_string(&stats)?);
            }
            Ok(())
        }
    }
}

async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Parses a share of traces: a number above 0 and at most 1.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        _ => Err(format!(
            "invalid share {text:?}: a number above 0 and at most 1, e.g. 0.01"
        )),
    }
}

/// Parses `250ms`, `10s`, `1.5s`, `2m`, `1h`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" => value / 1_000_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// The few `google.rpc` messages OTLP clients and servers exchange about
/// throttling, declared here rather than pulling in a crate for them.
mod rpc {
    use std::time::Duration;

    use bytes::Bytes;
    use prost::Message as _;

    pub const UNAVAILABLE: i32 = 14;
    const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<ProtoAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoAny {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<ProtoDuration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoDuration {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }

    /// An encoded `google.rpc.Status` without details.
    pub fn status_bytes(code: i32, message: &str) -> Vec<u8> {
        RpcStatus {
            code,
            message: message.to_owned(),
            details: Vec::new(),
        }
        .encode_to_vec()
    }

    /// `grpc-status-details-bin` for UNAVAILABLE carrying a RetryInfo.
    pub fn unavailable_with_retry_info(message: &str, delay: Duration) -> Bytes {
        let retry_info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
            }),
        };
        let status = RpcStatus {
            code: UNAVAILABLE,
            message: message.to_owned(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE_URL.to_owned(),
                value: retry_info.encode_to_vec(),
            }],
        };
        Bytes::from(status.encode_to_vec())
    }

    /// The RetryInfo delay in a `grpc-status-details-bin` value, if any.
    pub fn retry_delay_of(details: &[u8]) -> Option<Duration> {
        let status = RpcStatus::decode(details).ok()?;
        let info = status
            .details
            .iter()
            .find(|any| any.type_url.ends_with("/google.rpc.RetryInfo"))?;
        let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
        let seconds = u64::try_from(delay.seconds).ok()?;
        let nanos = u32::try_from(delay.nanos).ok()?;
        Some(Duration::new(seconds, 0).saturating_add(Duration::from_nanos(u64::from(nanos))))
    }
}

#[cfg(test)]
mod tests;
