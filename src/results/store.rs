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

use crate::engine::{Failure, Inconclusive, Verdict};
use crate::ids::TraceId;
use crate::metrics::CompletionReason;
use crate::otlp::{RawSpan, ScopeInterner};

/// Verdicts kept per model.
const PER_MODEL: usize = 100;
/// Traces kept, per kind (failing / passing).
const MAX_TRACES: usize = 1000;
/// Bytes of encoded spans kept for failing traces…
const MAX_FAIL_BYTES: usize = 64 << 20;
/// …and for passing ones.
const MAX_PASS_BYTES: usize = 16 << 20;
/// Passing traces recorded per second, at most (with a burst of as many):
/// their verdict records and the trace. Every failure is recorded; at
/// thousands of passes a second, recording each would only churn the store
/// (each would stay a few milliseconds) at ~10% of the daemon's CPU, so
/// passes are sampled. Counters count every verdict.
const PASS_TRACES_PER_SEC: f64 = 100.0;

/// One verdict as the API, alerts and watchers show it.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictRecord {
    /// Increases with every record; newest first means highest first.
    pub seq: u64,
    pub trace_id: TraceId,
    pub model: Arc<str>,
    pub model_name: Arc<str>,
    pub verdict: Verdict,
    /// Why the verdict is `inconclusive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<Inconclusive>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<Arc<str>>,
    /// The model's `alert.summary`, rendered from the trace (failures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub evaluated_at_unix_ms: u64,
    /// The trace was cut short (shutdown, evicted, per-trace bounds, …)
    /// and may have been missing spans; the verdict is then never `fail`.
    pub incomplete: bool,
    pub completion_reason: CompletionReason,
    /// The verdict waited for late spans (`within`), or was changed by them.
    pub waited_for_late_spans: bool,
    /// Decided before the trace settled: a pass no later span can change.
    pub early: bool,
    /// Late spans changed the verdict counted before, which was this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flipped_from: Option<Verdict>,
    /// The service of the trace's root span, and its `service.version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_version: Option<Arc<str>>,
}

struct Retained {
    spans: Vec<RawSpan>,
    verdicts: Vec<Arc<VerdictRecord>>,
    bytes: usize,
    /// Kept among the failing traces (`fail_order`, `fail_bytes`).
    failing: bool,
}

struct Inner {
    /// Token bucket of [`PASS_TRACES_PER_SEC`]: (tokens, last refill).
    pass_tokens: (f64, std::time::Instant),
    per_model: HashMap<String, VecDeque<Arc<VerdictRecord>>>,
    traces: HashMap<TraceId, Retained>,
    fail_order: VecDeque<TraceId>,
    pass_order: VecDeque<TraceId>,
    fail_bytes: usize,
    pass_bytes: usize,
    /// The resources and scopes of the retained spans, shared.
    scopes: ScopeInterner,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            pass_tokens: (PASS_TRACES_PER_SEC, std::time::Instant::now()),
            per_model: HashMap::new(),
            traces: HashMap::new(),
            fail_order: VecDeque::new(),
            pass_order: VecDeque::new(),
            fail_bytes: 0,
            pass_bytes: 0,
            scopes: ScopeInterner::default(),
        }
    }
}

#[derive(Default)]
pub struct ResultStore {
    seq: std::sync::atomic::AtomicU64,
    inner: Mutex<Inner>,
    /// Counted verdicts per version of each trace's root service.
    pub versions: super::versions::Versions,
}

/// A retained trace and every verdict recorded on it.
pub struct StoredTrace {
    pub spans: Vec<RawSpan>,
    pub verdicts: Vec<Arc<VerdictRecord>>,
}

impl ResultStore {
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Whether a passing trace may be recorded now: up to
    /// [`PASS_TRACES_PER_SEC`]. The evaluator asks once per trace whose
    /// verdicts all pass; without a yes, those verdicts are only counted.
    pub fn admit_pass(&self) -> bool {
        self.inner.lock().take_pass_token()
    }

    /// Records verdicts (not skips) and keeps the trace they were given on:
    /// every failure, and the passes [`ResultStore::admit_pass`] let in.
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
        let mut guard = self.inner.lock();
        let i = &mut *guard;
        for r in &records {
            let ring = match i.per_model.get_mut(&*r.model) {
                Some(ring) => ring,
                None => i.per_model.entry(r.model.to_string()).or_default(),
            };
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
                t.spans = RawSpan::copy_out(spans, &mut i.scopes);
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
        // Copied: the retained traces' bytes are what the bounds count, not
        // whole requests they happen to share.
        let spans = RawSpan::copy_out(spans, &mut i.scopes);
        i.traces.insert(
            trace_id,
            Retained {
                spans,
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

    /// One page of recent verdicts, newest first: at most `size` of those
    /// `keep` accepts with a sequence number below `before`, and whether
    /// more follow. Only the page is cloned and sorted, not every match,
    /// so a page costs one pass over the store whatever it holds.
    pub fn page(
        &self,
        model: Option<&str>,
        before: Option<u64>,
        size: usize,
        keep: impl Fn(&VerdictRecord) -> bool,
    ) -> (Vec<Arc<VerdictRecord>>, bool) {
        let i = self.inner.lock();
        let rings: Vec<&VecDeque<Arc<VerdictRecord>>> = match model {
            Some(m) => i.per_model.get(m).into_iter().collect(),
            None => i.per_model.values().collect(),
        };
        let mut matching: Vec<&Arc<VerdictRecord>> = rings
            .into_iter()
            .flatten()
            .filter(|r| before.is_none_or(|b| r.seq < b) && keep(r))
            .collect();
        let more = matching.len() > size;
        if more {
            matching.select_nth_unstable_by_key(size, |r| std::cmp::Reverse(r.seq));
            matching.truncate(size);
        }
        matching.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
        (matching.into_iter().cloned().collect(), more)
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
    fn take_pass_token(&mut self) -> bool {
        let now = std::time::Instant::now();
        let (tokens, last) = &mut self.pass_tokens;
        let refill = now.duration_since(*last).as_secs_f64() * PASS_TRACES_PER_SEC;
        *tokens = (*tokens + refill).min(PASS_TRACES_PER_SEC);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &ResultStore, id: u8, verdict: Verdict) -> Arc<VerdictRecord> {
        Arc::new(VerdictRecord {
            seq: store.next_seq(),
            trace_id: TraceId([id; 16]),
            model: "m".into(),
            model_name: "M".into(),
            verdict,
            failures: Vec::new(),
            trace_url: None,
            summary: None,
            evaluated_at_unix_ms: 0,
            incomplete: false,
            completion_reason: CompletionReason::idle,
            waited_for_late_spans: false,
            early: false,
            flipped_from: None,
            inconclusive: None,
            service: None,
            service_version: None,
        })
    }

    /// Pages of the failures page: newest first, each page starting below
    /// the last one's oldest, none lost or repeated, the filter applied.
    #[test]
    fn pages_walk_every_match_once_newest_first() {
        let store = ResultStore::default();
        let mut fails = Vec::new();
        for id in 0..60u8 {
            let v = if id % 3 == 0 {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            let r = record(&store, id, v);
            if v == Verdict::Fail {
                fails.push(r.seq);
            }
            store.record(TraceId([id; 16]), &[], vec![r]);
        }
        fails.reverse();
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let (page, more) = store.page(Some("m"), before, 7, |r| r.verdict == Verdict::Fail);
            assert!(page.len() <= 7);
            seen.extend(page.iter().map(|r| r.seq));
            before = page.last().map(|r| r.seq);
            if !more {
                break;
            }
        }
        assert_eq!(seen, fails);
        let (none, more) = store.page(Some("other"), None, 7, |_| true);
        assert!(none.is_empty() && !more);
    }

    #[test]
    fn every_failing_trace_is_kept_and_passing_ones_are_sampled() {
        let store = ResultStore::default();
        // A burst far over the pass budget, failures among the passes; as
        // the evaluator does, a pass is recorded only when admitted.
        for id in 1..=250u8 {
            let v = if id % 50 == 0 {
                Verdict::Fail
            } else {
                Verdict::Pass
            };
            if v == Verdict::Fail || store.admit_pass() {
                store.record(TraceId([id; 16]), &[], vec![record(&store, id, v)]);
            }
        }
        for id in [50u8, 100, 150, 200, 250] {
            let t = store.trace(&TraceId([id; 16])).expect("failing trace kept");
            assert_eq!(t.verdicts[0].verdict, Verdict::Fail);
        }
        let kept_passes = (1..=250u8)
            .filter(|id| id % 50 != 0 && store.trace(&TraceId([*id; 16])).is_some())
            .count();
        assert!(
            (100..=101).contains(&kept_passes),
            "{kept_passes} passing traces kept"
        );
        // Every failure is listed, with the passes that were let in.
        assert_eq!(store.results(Some("m"), Some(Verdict::Fail), 1000).len(), 5);
        assert_eq!(store.results(Some("m"), None, 1000).len(), PER_MODEL);
    }
}
