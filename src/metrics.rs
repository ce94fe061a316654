//! Every Prometheus metric tracecheck serves, registered in one place so the
//! names of the interfaces spec are visible side by side.
//!
//! Stages receive an `Arc<Metrics>` and bump what they own; nothing else
//! registers metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The exemplar on verdict and latency series: a failing trace to open.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}
use prometheus_client::registry::Registry;

/// How spans arrived.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    grpc,
    http,
}

/// Why spans or requests were refused. Bounded: new reasons are new variants.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefuseReason {
    /// The body could not be decoded as OTLP.
    malformed,
    /// Trace ID not 16 bytes or span ID not 8 bytes (partial success).
    invalid_id,
    /// Body over the size limit, before or after decompression.
    too_large,
    /// Neither protobuf nor JSON, or an unknown content encoding.
    unsupported_media_type,
    /// The buffer is at `max_traces`/`max_spans`; the sender retries.
    buffer_full,
    /// The forwarding queue is full; the sender retries.
    exporter_queue_full,
    /// The persistent forwarding queue could not write the request (disk
    /// full, I/O error); the sender retries.
    exporter_queue_unwritable,
    /// The daemon is stopping; the sender retries elsewhere or later.
    shutting_down,
    /// `receivers.otlp.auth` is set and the request's bearer token is
    /// missing or wrong; refused before its body is read, so only
    /// `tracecheck_receiver_refused_requests_total` counts it.
    unauthenticated,
    /// An attribute value nested deeper than
    /// `receivers.otlp.limits.max_attribute_depth` (partial success).
    attribute_too_deep,
    /// An attribute list longer than `receivers.otlp.limits.max_attributes`
    /// (partial success).
    too_many_attributes,
    /// An attribute key or value over
    /// `receivers.otlp.limits.max_attribute_value_bytes` (partial success).
    attribute_too_large,
    /// A `string` field of the span (or of its resource or scope) that is
    /// not UTF-8, which no protobuf decoder checking strings would read
    /// (partial success).
    invalid_utf8,
    /// The buffer's accounted bytes are above the soft memory limit
    /// (`assembler.max_memory_mib`); the sender retries.
    memory_limit,
}

/// Why spans of a trace were forwarded but not buffered for evaluation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TruncateReason {
    /// The trace already had `assembler.max_spans_per_trace` spans.
    max_spans_per_trace,
    /// The trace already held `assembler.max_bytes_per_trace` bytes.
    max_bytes_per_trace,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TruncateLabels {
    pub reason: TruncateReason,
}

/// Why a trace was completed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue, serde::Serialize)]
#[allow(non_camel_case_types)]
pub enum CompletionReason {
    idle,
    root,
    max_age,
    evicted,
    shutdown,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: Transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub transport: Transport,
    pub reason: RefuseReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: CompletionReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub model: String,
    pub verdict: String,
}

/// Series `tracecheck_model_verdicts_by_version_total` may have; past it
/// new versions are in `GET /api/v1/versions` only.
pub const MAX_VERSION_SERIES: usize = 2048;

/// `tracecheck_model_verdicts_by_version_total` (opt-in,
/// `metrics.version_label`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub service: String,
    pub version: String,
    pub verdict: &'static str,
}

/// Buckets of `tracecheck_verdict_delay_seconds`: from the milliseconds of
/// an early pass to the seconds of `settle` and the minutes of `within`.
/// Fine just above the defaults of `root_settle` (0.5 s) and `settle`
/// (6 s), where nearly every verdict falls: with coarse buckets there the
/// interpolated p50/p99 would say nothing about the daemon's own delay.
fn verdict_delay_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.505, 0.51, 0.525, 0.55, 0.6, 0.75, 1.0, 2.5,
        5.0, 6.0, 6.005, 6.01, 6.025, 6.05, 6.1, 6.25, 6.5, 7.5, 10.0, 30.0, 60.0, 300.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LateLabels {
    pub merged: &'static str,
}

/// `stage` of `tracecheck_internal_panics_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PanicLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlipLabels {
    pub model: String,
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// `joined` or `leaving`.
    pub change: &'static str,
    /// `received` from a peer, `ignored` (a `joined` while this instance
    /// had itself only begun serving), `sent` to one, `failed` to reach one.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InconclusiveLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpecLabels {
    pub model: String,
    pub spec: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub receiver: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: String,
}

/// Which TLS listener: `otlp_grpc`, `otlp_http` or `admin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub listener: String,
}

impl TlsLabels {
    pub fn new(listener: &str) -> Self {
        Self {
            listener: listener.to_owned(),
        }
    }
}

/// The metrics of the OTLP path: receiver, buffer, completion, exporter.
pub struct Metrics {
    pub accepted_spans: Family<TransportLabels, Counter>,
    pub refused_spans: Family<RefusedLabels, Counter>,
    pub refused_requests: Family<RefusedLabels, Counter>,
    pub buffer_traces: Gauge,
    pub buffer_spans: Gauge,
    pub buffer_max_traces: Gauge,
    pub buffer_max_spans: Gauge,
    pub buffer_bytes: Gauge,
    pub buffer_max_bytes: Gauge,
    pub buffer_truncated_spans: Family<TruncateLabels, Counter>,
    pub memory_bytes: Family<crate::memory::MemoryLabels, Gauge>,
    pub memory_limit_bytes: Gauge,
    pub traces_completed: Family<ReasonLabels, Counter>,
    pub late_spans: Family<LateLabels, Counter>,
    pub internal_panics: Family<PanicLabels, Counter>,
    pub late_fragments: Counter,
    pub rootless_traces: Counter,
    pub settled_rootless_bytes: Gauge,
    pub verdicts_flipped: Family<FlipLabels, Counter>,
    pub inconclusive: Family<InconclusiveLabels, Counter>,
    pub tier_notices: Family<TierLabels, Counter>,
    pub exporter_sent_spans: Family<ExporterLabels, Counter>,
    pub exporter_failed_spans: Family<ExporterLabels, Counter>,
    /// Spans queued for some exporters of a request then refused because
    /// another exporter's persistent queue could not write it: those
    /// exporters forward them again when the sender retries.
    pub exporter_duplicated_spans: Counter,
    pub exporter_retries: Family<ExporterLabels, Counter>,
    pub exporter_queue_size: Family<ExporterLabels, Gauge>,
    pub exporter_queue_capacity: Family<ExporterLabels, Gauge>,
    pub exporter_queue_bytes: Family<ExporterLabels, Gauge>,
    pub exporter_queue_max_bytes: Family<ExporterLabels, Gauge>,
    pub exporter_queue_corrupt_segments: Family<ExporterLabels, Counter>,
    pub exporter_queue_replayed_spans: Family<ExporterLabels, Counter>,
    pub model_verdicts: Family<VerdictLabels, VerdictCounter>,
    pub model_verdicts_by_version: Family<VersionLabels, Counter>,
    /// Series made in `model_verdicts_by_version`: its labels come from
    /// senders' data, so their number is bounded
    /// ([`MAX_VERSION_SERIES`]).
    pub version_series: std::sync::atomic::AtomicUsize,
    pub spec_failures: Family<SpecLabels, Counter>,
    pub model_errors: Family<ModelLabels, Counter>,
    pub model_slow_evaluations: Family<ModelLabels, Counter>,
    pub evaluation_duration: HistogramWithExemplars<TraceExemplar>,
    pub verdict_delay: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub models_loaded: Gauge,
    pub alerts_sent: Family<AlertLabels, Counter>,
    pub model_reload_failures: Counter,
    pub tls_handshake_failures: Family<TlsLabels, Counter>,
    pub tls_reloads: Family<TlsLabels, Counter>,
    pub tls_reload_failures: Family<TlsLabels, Counter>,
    pub admin_unauthenticated: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            accepted_spans: Family::default(),
            refused_spans: Family::default(),
            refused_requests: Family::default(),
            buffer_traces: Gauge::default(),
            buffer_spans: Gauge::default(),
            buffer_max_traces: Gauge::default(),
            buffer_max_spans: Gauge::default(),
            buffer_bytes: Gauge::default(),
            buffer_max_bytes: Gauge::default(),
            buffer_truncated_spans: Family::default(),
            memory_bytes: Family::default(),
            memory_limit_bytes: Gauge::default(),
            traces_completed: Family::default(),
            late_spans: Family::default(),
            internal_panics: Family::default(),
            late_fragments: Counter::default(),
            rootless_traces: Counter::default(),
            settled_rootless_bytes: Gauge::default(),
            verdicts_flipped: Family::default(),
            inconclusive: Family::default(),
            tier_notices: Family::default(),
            exporter_sent_spans: Family::default(),
            exporter_failed_spans: Family::default(),
            exporter_duplicated_spans: Counter::default(),
            exporter_retries: Family::default(),
            exporter_queue_size: Family::default(),
            exporter_queue_capacity: Family::default(),
            exporter_queue_bytes: Family::default(),
            exporter_queue_max_bytes: Family::default(),
            exporter_queue_corrupt_segments: Family::default(),
            exporter_queue_replayed_spans: Family::default(),
            model_verdicts: Family::default(),
            model_verdicts_by_version: Family::default(),
            version_series: std::sync::atomic::AtomicUsize::new(0),
            spec_failures: Family::default(),
            model_errors: Family::default(),
            model_slow_evaluations: Family::default(),
            // 10µs … ~5s: one trace against 1 to 1000 models.
            evaluation_duration: HistogramWithExemplars::new(exponential_buckets(0.00001, 2.5, 15)),
            verdict_delay: Family::new_with_constructor(verdict_delay_histogram),
            models_loaded: Gauge::default(),
            alerts_sent: Family::default(),
            model_reload_failures: Counter::default(),
            tls_handshake_failures: Family::default(),
            tls_reloads: Family::default(),
            tls_reload_failures: Family::default(),
            admin_unauthenticated: Counter::default(),
        };
        let r = registry;
        r.register(
            "tracecheck_receiver_accepted_spans",
            "Spans taken from senders",
            m.accepted_spans.clone(),
        );
        r.register(
            "tracecheck_receiver_refused_spans",
            "Spans refused, by reason (senders were told)",
            m.refused_spans.clone(),
        );
        r.register(
            "tracecheck_receiver_refused_requests",
            "Export requests refused whole, by reason",
            m.refused_requests.clone(),
        );
        r.register(
            "tracecheck_buffer_traces",
            "Traces in the assembly buffer",
            m.buffer_traces.clone(),
        );
        r.register(
            "tracecheck_buffer_spans",
            "Spans in the assembly buffer",
            m.buffer_spans.clone(),
        );
        r.register(
            "tracecheck_buffer_max_traces",
            "Configured bound assembler.max_traces",
            m.buffer_max_traces.clone(),
        );
        r.register(
            "tracecheck_buffer_max_spans",
            "Configured bound assembler.max_spans",
            m.buffer_max_spans.clone(),
        );
        r.register(
            "tracecheck_buffer_bytes",
            "Bytes in the assembly buffer by its own accounting (spans as received plus bookkeeping)",
            m.buffer_bytes.clone(),
        );
        r.register(
            "tracecheck_buffer_max_bytes",
            "Configured bound assembler.max_memory_mib, in bytes",
            m.buffer_max_bytes.clone(),
        );
        r.register(
            "tracecheck_memory_bytes",
            "The process's memory account by part: request bodies still referenced, the buffer's own bytes, traces being evaluated, settled traces kept for late spans, bodies being decoded",
            m.memory_bytes.clone(),
        );
        r.register(
            "tracecheck_memory_limit_bytes",
            "Configured limit of the memory account (assembler.max_memory_mib), in bytes; above 80% senders are told to retry",
            m.memory_limit_bytes.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            ResidentMemory,
        );
        for (name, help, which) in [
            (
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                Process::CpuSeconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                Process::OpenFds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                Process::MaxFds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                Process::VirtualMemory,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                Process::StartTime,
            ),
        ] {
            r.register(name, help, which);
        }
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                revision: env!("TRACECHECK_REVISION").into(),
            })
            .set(1);
        r.register(
            "tracecheck_build_info",
            "The running build: version and revision (always 1)",
            build,
        );
        r.register(
            "tracecheck_buffer_truncated_spans",
            "Spans forwarded but not buffered for evaluation because their trace was at a per-trace bound (its verdicts are marked incomplete)",
            m.buffer_truncated_spans.clone(),
        );
        r.register(
            "tracecheck_traces_completed",
            "Traces completed, by the condition that completed them",
            m.traces_completed.clone(),
        );
        r.register(
            "tracecheck_internal_panics",
            "Panics caught on the data path, a bug to report: stage=assembler (a completion pass; the traces it was completing are lost) or evaluator (one trace, or one tick); the stage goes on",
            m.internal_panics.clone(),
        );
        r.register(
            "tracecheck_late_spans",
            "Spans that arrived after their trace settled: merged=true were merged into it and every model evaluated again; merged=false came after the late-span window and were not judged (never as a trace of their own)",
            m.late_spans.clone(),
        );
        r.register(
            "tracecheck_traces_rootless",
            "Traces that settled without a root span (a sidecar's share of a trace, or a lost root): judged on what came, counted here so 'nothing to judge' can be told from 'judged'",
            m.rootless_traces.clone(),
        );
        r.register(
            "tracecheck_settled_rootless_bytes",
            "Bytes of the settled traces kept for late spans that have no root yet (most are a trace's first parts waiting for its root's part): kept before rooted traces while they hold at most half of what is kept",
            m.settled_rootless_bytes.clone(),
        );
        r.register(
            "tracecheck_verdicts_flipped",
            "Counted verdicts changed by spans that came after the trace settled",
            m.verdicts_flipped.clone(),
        );
        r.register(
            "tracecheck_tier_notices",
            "Announcements that an instance of the scale-out tier joined or is leaving (tier.peers), by what happened to them here",
            m.tier_notices.clone(),
        );
        r.register(
            "tracecheck_inconclusive_verdicts",
            "Verdicts that could be neither pass nor fail because the trace was cut short, by reason",
            m.inconclusive.clone(),
        );
        r.register(
            "tracecheck_late_fragments",
            "Completions of late spans of an already completed trace (each also counted in tracecheck_traces_completed_total, by its condition)",
            m.late_fragments.clone(),
        );
        r.register(
            "tracecheck_exporter_sent_spans",
            "Spans the downstream accepted",
            m.exporter_sent_spans.clone(),
        );
        r.register(
            "tracecheck_exporter_failed_spans",
            "Spans given up on (downstream refused them or retries ran out)",
            m.exporter_failed_spans.clone(),
        );
        r.register(
            "tracecheck_exporter_duplicated_spans",
            "Spans forwarded twice by some exporters: their request was queued for them but not answered (another exporter's persistent queue could not write it, or its sender went away during a persistent write), and the sender sends it again",
            m.exporter_duplicated_spans.clone(),
        );
        r.register(
            "tracecheck_exporter_retries",
            "Export calls retried after a retryable failure",
            m.exporter_retries.clone(),
        );
        r.register(
            "tracecheck_exporter_queue_size",
            "Requests waiting in the forwarding queue",
            m.exporter_queue_size.clone(),
        );
        r.register(
            "tracecheck_exporter_queue_capacity",
            "Configured bound exporters.otlp.queue_size (in-memory queue)",
            m.exporter_queue_capacity.clone(),
        );
        r.register(
            "tracecheck_exporter_queue_bytes",
            "Bytes the forwarding queue holds: on disk with exporters.otlp.queue, else in memory",
            m.exporter_queue_bytes.clone(),
        );
        r.register(
            "tracecheck_exporter_queue_max_bytes",
            "Bound of the forwarding queue in bytes: exporters.otlp.queue.max_size_mib, else queue_max_mib",
            m.exporter_queue_max_bytes.clone(),
        );
        r.register(
            "tracecheck_exporter_queue_corrupt_segments",
            "Persistent queue segments found damaged (the damaged part skipped)",
            m.exporter_queue_corrupt_segments.clone(),
        );
        r.register(
            "tracecheck_exporter_queue_replayed_spans",
            "Spans in flight when the previous process stopped, sent again after the restart (may arrive twice)",
            m.exporter_queue_replayed_spans.clone(),
        );
        r.register(
            "tracecheck_model_verdicts",
            "Verdicts per model: pass, fail or skip",
            m.model_verdicts.clone(),
        );
        r.register(
            "tracecheck_model_verdicts_by_version",
            "Counted verdicts per model and version of the trace's root service (service.version); only with metrics.version_label: true. Flips count here as the verdict they became",
            m.model_verdicts_by_version.clone(),
        );
        r.register(
            "tracecheck_spec_failures",
            "Failed specs (and not_expect entries) per model",
            m.spec_failures.clone(),
        );
        r.register(
            "tracecheck_model_errors",
            "Evaluations of a model that crashed and were contained",
            m.model_errors.clone(),
        );
        r.register(
            "tracecheck_model_slow_evaluations",
            "Evaluations of a model on one trace that took longer than models.evaluation_budget",
            m.model_slow_evaluations.clone(),
        );
        r.register(
            "tracecheck_evaluation_duration_seconds",
            "Time to evaluate every loaded model on one trace",
            m.evaluation_duration.clone(),
        );
        r.register(
            "tracecheck_verdict_delay_seconds",
            "Time from the last span of a trace received to a model's verdict settled (early passes are decided sooner than verdicts that wait for the trace to settle)",
            m.verdict_delay.clone(),
        );
        r.register(
            "tracecheck_alerts_sent",
            "Alert posts to Alertmanager and webhooks, by outcome (success, failure, dropped)",
            m.alerts_sent.clone(),
        );
        r.register(
            "tracecheck_models_loaded",
            "Models in force",
            m.models_loaded.clone(),
        );
        r.register(
            "tracecheck_model_reload_failures",
            "Model loads or reloads that met a bad file",
            m.model_reload_failures.clone(),
        );
        r.register(
            "tracecheck_tls_handshake_failures",
            "TLS handshakes that failed or timed out (no or bad client certificate, plain text on a TLS port, ...)",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "tracecheck_tls_reloads",
            "Certificate changes on disk put in force",
            m.tls_reloads.clone(),
        );
        r.register(
            "tracecheck_tls_reload_failures",
            "Certificate changes on disk refused (the previous certificates stay in force)",
            m.tls_reload_failures.clone(),
        );
        r.register(
            "tracecheck_admin_unauthenticated_requests",
            "Admin requests refused for a missing or wrong bearer token (admin.auth)",
            m.admin_unauthenticated.clone(),
        );
        m
    }

    /// Metrics registered nowhere, for unit tests of a single stage.
    pub fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }

    pub fn refused(&self, transport: Transport, reason: RefuseReason, spans: usize) {
        self.refused_requests
            .get_or_create(&RefusedLabels { transport, reason })
            .inc();
        if spans > 0 {
            self.refused_spans
                .get_or_create(&RefusedLabels { transport, reason })
                .inc_by(spans as u64);
        }
    }

    pub fn completed(&self, reason: CompletionReason) {
        self.traces_completed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// One `tracecheck_model_verdicts_total` series.
///
/// `CounterWithExemplar` takes a write lock on every increment. With a
/// thousand models nearly every verdict is an idle model's `skip`, so a
/// trace would take a thousand locks; here only increments that carry an
/// exemplar (failures) take it, the others are one atomic add.
#[derive(Debug, Default, Clone)]
pub struct VerdictCounter {
    plain: Counter,
    with_exemplar: CounterWithExemplar<TraceExemplar>,
}

impl VerdictCounter {
    pub fn inc(&self) {
        self.plain.inc();
    }

    pub fn inc_by(&self, n: u64) {
        self.plain.inc_by(n);
    }

    /// Counts one and makes `exemplar` the series' exemplar.
    pub fn inc_with_exemplar(&self, exemplar: TraceExemplar, at: std::time::SystemTime) {
        self.with_exemplar.inc_by(1, Some(exemplar), Some(at));
    }

    pub fn get(&self) -> u64 {
        self.plain.get() + self.with_exemplar.get().0
    }
}

impl prometheus_client::metrics::TypedMetric for VerdictCounter {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Counter;
}

impl prometheus_client::encoding::EncodeMetric for VerdictCounter {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let (exemplar_count, exemplar) = self.with_exemplar.get();
        encoder.encode_counter(&(self.plain.get() + exemplar_count), exemplar.as_ref())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub revision: String,
}

/// The standard `process_*` metrics (Prometheus' client conventions), read
/// from procfs when scraped; absent where there is none.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    CpuSeconds,
    OpenFds,
    MaxFds,
    VirtualMemory,
    StartTime,
}

/// `/proc` counts CPU time and start time in these (`USER_HZ`, fixed at
/// 100 by Linux's ABI whatever the kernel's own tick).
const USER_HZ: f64 = 100.0;

impl Process {
    /// Fields of `/proc/self/stat` after the command name (which may hold
    /// spaces): field 3 of the man page is index 0.
    fn stat() -> Option<Vec<String>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = stat.rsplit_once(')')?.1;
        Some(after.split_whitespace().map(str::to_owned).collect())
    }

    pub fn read(self) -> Option<f64> {
        let field = |i: usize| -> Option<f64> { Self::stat()?.get(i)?.parse().ok() };
        match self {
            // utime and stime: fields 14 and 15.
            Process::CpuSeconds => Some((field(11)? + field(12)?) / USER_HZ),
            Process::VirtualMemory => field(20),
            Process::StartTime => {
                let stat = std::fs::read_to_string("/proc/stat").ok()?;
                let boot: f64 = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("btime "))?
                    .trim()
                    .parse()
                    .ok()?;
                Some(boot + field(19)? / USER_HZ)
            }
            // The listing's own directory handle is counted, as the Go and
            // Python clients count it: the figure compares with theirs.
            Process::OpenFds => Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64),
            Process::MaxFds => {
                let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
                let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
                line.split_whitespace().nth(3)?.parse().ok()
            }
        }
    }
}

impl prometheus_client::metrics::TypedMetric for Process {}

impl prometheus_client::encoding::EncodeMetric for Process {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match (self.read(), self.metric_type()) {
            (Some(v), prometheus_client::metrics::MetricType::Counter) => {
                encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
            }
            (Some(v), _) => encoder.encode_gauge(&v),
            (None, _) => Ok(()),
        }
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        match self {
            Process::CpuSeconds => prometheus_client::metrics::MetricType::Counter,
            _ => prometheus_client::metrics::MetricType::Gauge,
        }
    }
}

/// `process_resident_memory_bytes`, read from `/proc/self/status` when
/// scraped, so that the memory account can be compared with what the
/// kernel sees. Absent where there is no procfs.
#[derive(Debug, Default)]
pub struct ResidentMemory;

impl ResidentMemory {
    /// Resident memory now, where the platform says.
    pub fn read() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl prometheus_client::metrics::TypedMetric for ResidentMemory {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Gauge;
}

impl prometheus_client::encoding::EncodeMetric for ResidentMemory {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match Self::read() {
            Some(bytes) => encoder.encode_gauge(&(bytes as i64)),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_and_build_info_are_exposed() {
        let mut registry = Registry::default();
        let _m = Metrics::new(&mut registry);
        // Some CPU time for the counter to show (it counts in 10 ms ticks).
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total") > 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_virtual_memory_bytes") > 1e6);
        assert!(value("process_resident_memory_bytes") > 1e6);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        let build = text
            .lines()
            .find(|l| l.starts_with("tracecheck_build_info{"))
            .unwrap_or_else(|| panic!("no build info in\n{text}"));
        assert!(
            build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{build}"
        );
        assert!(build.contains("revision=\""), "{build}");
        assert!(build.ends_with(" 1"), "{build}");
    }

    #[test]
    fn verdict_counter_sums_plain_and_exemplar_increments() {
        let mut registry = Registry::default();
        let family = Family::<VerdictLabels, VerdictCounter>::default();
        registry.register("v", "verdicts", family.clone());
        let c = family.get_or_create(&VerdictLabels {
            model: "m".into(),
            verdict: "fail".into(),
        });
        c.inc();
        c.inc_by(2);
        c.inc_with_exemplar(
            TraceExemplar {
                trace_id: "ab".repeat(16),
            },
            std::time::UNIX_EPOCH,
        );
        assert_eq!(c.get(), 4);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let line = text
            .lines()
            .find(|l| l.starts_with("v_total{"))
            .unwrap_or_else(|| panic!("no series in {text}"));
        assert!(line.contains(" 4 # {trace_id=\""), "{line}");
        assert!(line.contains(&"ab".repeat(16)), "{line}");
    }
}
