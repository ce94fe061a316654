//! Configuration of the per-trace buffer (`assembler:` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `assembler:` — when a trace counts as complete, and the buffer's bounds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AssemblerConfig {
    /// A trace has **settled** once no span of it has come for this long:
    /// then every model's verdict on it is decided and counted. It must
    /// cover the senders' batching, because the spans of one trace come
    /// from several services, each exporting on its own timer (the
    /// OpenTelemetry SDKs every 5 s by default), and the root, which ends
    /// last, may well be exported first. Raise it for senders that batch
    /// longer (`docs/operations.md`).
    #[serde(with = "crate::duration")]
    pub settle: Duration,
    /// This long after its root span (no parent) arrived, a trace is
    /// evaluated once before it settles, for the models whose pass no later
    /// span could change: those passes are published and counted at once.
    /// Nothing else is decided then.
    #[serde(with = "crate::duration")]
    pub root_settle: Duration,
    /// The same early evaluation for a trace whose root has not come, once
    /// no span of it has come for this long.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
    /// Hard cap from a trace's first span.
    #[serde(with = "crate::duration")]
    pub max_trace_age: Duration,
    /// Buffered traces at most. At the bound new spans are refused with a
    /// retryable answer while the oldest traces are completed early
    /// (`reason="evicted"`) to make room.
    pub max_traces: usize,
    /// Buffered spans at most; same behaviour as `max_traces`.
    pub max_spans: usize,
    /// How long a settled trace's ID is remembered, so that spans arriving
    /// after it are recognised as late (`tracecheck_late_spans_total`),
    /// merged into it and every model evaluated again, instead of starting
    /// a new trace that would be judged on its own.
    #[serde(with = "crate::duration")]
    pub late_span_window: Duration,
    /// Trace IDs remembered for `late_span_window` at most (~128 bytes
    /// each, charged to the memory account; never more than an eighth of
    /// `max_memory_mib`'s worth). At more settled traces a second than this
    /// over the window,
    /// the oldest are forgotten sooner: at 10 000 traces/s the default
    /// keeps 100 s. The evaluator keeps the settled traces' spans to merge
    /// late spans into by its own, smaller, byte bound; spans of a trace
    /// forgotten by either are counted as late (`merged="false"`), never
    /// judged as a trace of their own.
    pub late_span_window_max_traces: usize,
    /// Spans buffered for one trace at most. Further spans of that trace are
    /// still forwarded, but not evaluated: its verdicts are marked
    /// `incomplete` (`tracecheck_buffer_truncated_spans_total`).
    pub max_spans_per_trace: usize,
    /// Bytes buffered for one trace at most (spans as received plus
    /// bookkeeping); beyond it as `max_spans_per_trace`. A trace's first
    /// span is always kept.
    pub max_bytes_per_trace: usize,
    /// The buffer's memory limit, on its own accounting of what it holds
    /// (`tracecheck_buffer_bytes`). Above 80% of it new spans are refused
    /// with a retryable answer (`reason="memory_limit"`); above it the oldest
    /// traces are completed early (`reason="evicted"`) until the buffer is
    /// back under 80%. Resident memory is this plus the overhead measured in
    /// RELIABILITY.md.
    pub max_memory_mib: usize,
}

impl AssemblerConfig {
    /// `max_memory_mib` in bytes.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_mib.saturating_mul(1024 * 1024)
    }

    /// Accounted bytes at which new spans are refused.
    pub fn soft_memory_bytes(&self) -> usize {
        self.max_memory_bytes() / 100 * SOFT_MEMORY_PERCENT
    }
}

/// The default of `settle`: the OpenTelemetry SDKs' batch span processors
/// export every 5 s (`OTEL_BSP_SCHEDULE_DELAY`), so a child span ended just
/// before its root may arrive up to 5 s after the root; one more second
/// covers the export itself and the network.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(6);

/// Share of `max_memory_mib` above which new spans are refused: the gap to
/// the hard limit absorbs requests admitted at the same moment.
pub const SOFT_MEMORY_PERCENT: usize = 80;

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            settle: DEFAULT_SETTLE,
            root_settle: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(60),
            max_traces: 1_000_000,
            max_spans: 5_000_000,
            late_span_window: Duration::from_secs(300),
            late_span_window_max_traces: 1_000_000,
            max_spans_per_trace: 100_000,
            max_bytes_per_trace: 64 * 1024 * 1024,
            max_memory_mib: 1024,
        }
    }
}
