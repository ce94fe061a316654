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
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(2),
            root_settle: Duration::from_millis(500),
            max_trace_age: Duration::from_secs(60),
            max_traces: 200_000,
            max_spans: 5_000_000,
            late_span_window: Duration::from_secs(300),
        }
    }
}
