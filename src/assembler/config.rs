//! Configuration of the per-trace buffer (`assembler:` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `assembler:` — when a trace counts as complete, and the buffer's bounds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AssemblerConfig {
    /// A trace is complete this long after its last span arrived…
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// …or this long after its root span (no parent) arrived, if sooner.
    #[serde(with = "crate::config::duration")]
    pub root_settle: Duration,
    /// Hard cap from a trace's first span.
    #[serde(with = "crate::config::duration")]
    pub max_trace_age: Duration,
    /// Buffered traces at most. At the bound new spans are refused with a
    /// retryable answer while the oldest traces are completed early
    /// (`reason="evicted"`) to make room.
    pub max_traces: usize,
    /// Buffered spans at most; same behaviour as `max_traces`.
    pub max_spans: usize,
    /// How long a completed trace's ID is remembered, so that spans arriving
    /// after it are recognised as late (`tracecheck_late_spans_total`)
    /// instead of starting a new trace.
    #[serde(with = "crate::config::duration")]
    pub late_span_window: Duration,
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

/// Share of `max_memory_mib` above which new spans are refused: the gap to
/// the hard limit absorbs requests admitted at the same moment.
pub const SOFT_MEMORY_PERCENT: usize = 80;

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(2),
            root_settle: Duration::from_millis(500),
            max_trace_age: Duration::from_secs(60),
            max_traces: 200_000,
            max_spans: 5_000_000,
            late_span_window: Duration::from_secs(300),
            max_spans_per_trace: 100_000,
            max_bytes_per_trace: 64 * 1024 * 1024,
            max_memory_mib: 1024,
        }
    }
}
