//! A bounded store of recent verdicts per model and of the traces they were
//! given on, so that every failure in the API comes with its trace.
//!
//! Failing traces and passing traces are kept apart, each bounded by count
//! and bytes, so a flood of passes never pushes out the failures an
//! operator is looking for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::engine::{Failure, Verdict};
use crate::ids::TraceId;
use crate::otlp::RawSpan;
use crate::results::metrics::CompletionReason;

/// Verdicts kept per model.
const PER_MODEL: usize = 100;
/// Traces kept, per kind (failing / passing).
const MAX_TRACES: usize = 1000;
/// Bytes of encoded spans kept for failing traces…
const MAX_FAIL_BYTES: usize = 64 << 20;
/// …and for passing ones.
const MAX_PASS_BYTES: usize = 16 << 20;

/// One verdict as the API, alerts and watchers show it.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictRecord {
    /// Increases with every record; newest first means highest first.
    pub seq: u64,
    pub trace_id: TraceId,
    pub model: String,
    pub model_name: String,
    pub verdict: Verdict,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    /// The model's `alert.summary`, rendered from the trace (failures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub evaluated_at_unix_ms: u64,
    /// The trace was completed early (evicted at the buffer's bounds) and
    /// may have been missing spans.
    pub incomplete: bool,
    pub completion_reason: CompletionReason,
    /// The verdict waited for late spans (`within`).
    pub waited_for_late_spans: bool,
}

struct Retained {
    spans: Vec<RawSpan>,
    verdicts: Vec<Arc<VerdictRecord>>,
    bytes: usize,
    /// Kept among the failing traces (`fail_order`, `fail_bytes`).
    failing: bool,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    per_model: HashMap<String, VecDeque<Arc<VerdictRecord>>>,
    traces: HashMap<TraceId, Retained>,
    fail_order: VecDeque<TraceId>,
    pass_order: VecDeque<TraceId>,
    fail_bytes: usize,
    pass_bytes: usize,
}

#[derive(Default)]
pub struct ResultStore {
    inner: Mutex<Inner>,
}

/// A retained trace and every verdict recorded on it.
pub struct StoredTrace {
    pub spans: Vec<RawSpan>,
    pub verdicts: Vec<Arc<VerdictRecord>>,
}

impl ResultStore {
    pub fn next_seq(&self) -> u64 {
        let mut i = self.inner.lock();
        i.seq += 1;
        i.seq
    }

    /// Records verdicts (not skips) and keeps the trace they were given on.
    pub fn record(&self, trace_id: TraceId, spans: &[RawSpan], records: Vec<Arc<VerdictRecord>>) {
        self.put(trace_id, spans, records, false);
    }

    /// Keeps a trace whose verdicts are still waiting on `within`, so the
    /// API can show it meanwhile; its verdicts join it when they come.
    pub fn hold(&self, trace_id: TraceId, spans: &[RawSpan]) {
        self.put(trace_id, spans, Vec::new(), true);
    }

    fn put(
        &self,
        trace_id: TraceId,
        spans: &[RawSpan],
        records: Vec<Arc<VerdictRecord>>,
        hold: bool,
    ) {
        if records.is_empty() && !hold {
            return;
        }
        let failing = records.iter().any(|r| r.verdict == Verdict::Fail);
        let mut i = self.inner.lock();
        for r in &records {
            let ring = i.per_model.entry(r.model.clone()).or_default();
            if ring.len() == PER_MODEL {
                ring.pop_front();
            }
            ring.push_back(Arc::clone(r));
        }
        let bytes: usize = spans.iter().map(|s| s.bytes.len()).sum();
        if let Some(t) = i.traces.get_mut(&trace_id) {
            // A late fragment's verdicts join the trace already kept; the
            // trace they were given on (with the late spans) replaces it,
            // and a late failure moves it among the failing traces.
            t.verdicts.extend(records);
            let old_bytes = t.bytes;
            if spans.len() > t.spans.len() {
                t.spans = spans.to_vec();
                t.bytes = bytes;
            }
            let new_bytes = t.bytes;
            let was_failing = t.failing;
            t.failing |= failing;
            if was_failing {
                i.fail_bytes = i.fail_bytes - old_bytes + new_bytes;
            } else if failing {
                if let Some(pos) = i.pass_order.iter().position(|id| *id == trace_id) {
                    i.pass_order.remove(pos);
                }
                i.pass_bytes -= old_bytes;
                i.fail_order.push_back(trace_id);
                i.fail_bytes += new_bytes;
            } else {
                i.pass_bytes = i.pass_bytes - old_bytes + new_bytes;
            }
            i.prune();
            return;
        }
        i.traces.insert(
            trace_id,
            Retained {
                spans: spans.to_vec(),
                verdicts: records,
                bytes,
                failing,
            },
        );
        if failing {
            i.fail_order.push_back(trace_id);
            i.fail_bytes += bytes;
        } else {
            i.pass_order.push_back(trace_id);
            i.pass_bytes += bytes;
        }
        i.prune();
    }

    /// Recent verdicts, newest first.
    pub fn results(
        &self,
        model: Option<&str>,
        verdict: Option<Verdict>,
        limit: usize,
    ) -> Vec<Arc<VerdictRecord>> {
        let i = self.inner.lock();
        let mut out: Vec<Arc<VerdictRecord>> = match model {
            Some(m) => i
                .per_model
                .get(m)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
            None => i
                .per_model
                .values()
                .flat_map(|r| r.iter().cloned())
                .collect(),
        };
        out.retain(|r| verdict.is_none_or(|v| r.verdict == v));
        out.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
        out.truncate(limit);
        out
    }

    pub fn trace(&self, id: &TraceId) -> Option<StoredTrace> {
        let i = self.inner.lock();
        i.traces.get(id).map(|t| StoredTrace {
            spans: t.spans.clone(),
            verdicts: t.verdicts.clone(),
        })
    }

    /// Verdict records of one model held now, for `/api/v1/models` counts.
    pub fn models_seen(&self) -> Vec<String> {
        self.inner.lock().per_model.keys().cloned().collect()
    }
}

impl Inner {
    fn prune(&mut self) {
        while self.fail_order.len() > MAX_TRACES || self.fail_bytes > MAX_FAIL_BYTES {
            let Some(id) = self.fail_order.pop_front() else {
                break;
            };
            if let Some(t) = self.traces.remove(&id) {
                self.fail_bytes -= t.bytes;
            }
        }
        while self.pass_order.len() > MAX_TRACES || self.pass_bytes > MAX_PASS_BYTES {
            let Some(id) = self.pass_order.pop_front() else {
                break;
            };
            if let Some(t) = self.traces.remove(&id) {
                self.pass_bytes -= t.bytes;
            }
        }
    }
}
