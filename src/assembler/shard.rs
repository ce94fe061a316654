//! One shard of the buffer: its traces, their deadlines, their arrival order
//! and the IDs of traces it completed recently. Everything here runs under
//! the shard's lock, so it is plain single-threaded code.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::config::AssemblerConfig;
use super::deadlines::Deadlines;
use super::CompletedTrace;
use crate::ids::TraceId;
use crate::metrics::{CompletionReason, TruncateReason};
use crate::otlp::{RawSpan, ScopeInterner};

/// Bytes accounted for each buffered span beyond its encoding: its
/// `RawSpan` handle (40 bytes), the slack of the trace's growing `Vec`, and
/// the allocator's rounding of the request buffers it points into.
///
/// With [`TRACE_OVERHEAD`] this is calibrated on the measured resident
/// memory: 1 000 000 buffered spans of 233 B (7.7 a trace) grew the
/// process by 413 B a span, 180 B beyond their encoding (BENCHMARKS.md,
/// "Memory"); 128 + 512 / 7.7 = 194 B. So `assembler.max_memory_mib` is
/// close to what the buffer holds in RAM, not a fraction of it.
pub(super) const SPAN_OVERHEAD: usize = 128;

/// Bytes accounted for each buffered trace: its map entry, its deadline and
/// arrival entries, and hash map slack.
pub(super) const TRACE_OVERHEAD: usize = 512;

/// Bytes a completed trace's ID takes while it is remembered for late
/// spans (`late_span_window`): its map entry and its place in the order of
/// forgetting, with their slack (measured: 126 B, heaptrack on
/// `benches/pinning.py`). Charged to the memory account's `buffer` part,
/// not to the buffer's own bound; likewise a hold's entries
/// ([`Shard::hold`]), 64 B each.
pub(super) const RECENT_OVERHEAD: usize = 128;

/// Trace table room a shard keeps however few traces it holds: shrinking
/// below it saves little and would rehash on every quiet spell.
const TRACES_ROOM: usize = 256;
pub(super) const HELD_OVERHEAD: usize = 64;

pub(super) struct TraceBuf {
    pub spans: Vec<RawSpan>,
    /// The first `own` spans hold their own bytes (compacted at the early
    /// point, or `idle_timeout` after they came: [`Shard::expire`]).
    pub own: usize,
    /// When the oldest span not yet compacted came.
    pub uncompacted_since: Option<Instant>,
    pub first_seen: Instant,
    pub last_seen: Instant,
    pub root_at: Option<Instant>,
    /// Spans of a trace completed before: handed on as a late fragment.
    pub late: bool,
    /// Accounted bytes: spans, their overhead and the trace's.
    pub bytes: usize,
    /// Spans were left out at a per-trace bound.
    pub truncated: bool,
    /// Spans of it were refused at ingest ([`Shard::mark_unreadable`]).
    pub unreadable: bool,
    /// The early evaluation ([`Due::Early`]) was handed on.
    pub early_sent: bool,
}

/// What is due next for a buffered trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// A copy goes to the evaluator for the passes no later span can change;
    /// the trace stays buffered.
    Early,
    /// The trace leaves the buffer, for this reason.
    Complete(CompletionReason),
    /// Spans have pinned their requests for `idle_timeout` (a long-lived
    /// trace that reaches no early point): they are copied out.
    Compact,
}

impl TraceBuf {
    /// Copies the spans that are still slices of their requests into a
    /// buffer of their own (the first `own` already are).
    /// Returns the bytes copied: they now count as the buffer's own.
    fn compact(&mut self, scopes: &mut ScopeInterner) -> usize {
        let copied = borrowed_bytes(&self.spans, self.own);
        if self.own < self.spans.len() {
            let spans = std::mem::take(&mut self.spans);
            self.spans = RawSpan::detach_rest(spans, self.own, scopes);
            self.own = self.spans.len();
        }
        self.uncompacted_since = None;
        copied
    }

    /// The earliest of its conditions and which one it is.
    fn due(&self, c: &AssemblerConfig) -> (Instant, Due) {
        let reason = if self.root_at.is_some() {
            CompletionReason::root
        } else {
            CompletionReason::idle
        };
        let mut due = (self.last_seen + c.settle, Due::Complete(reason));
        if !self.early_sent {
            let early = match self.root_at {
                Some(root) => (root + c.root_settle).min(self.last_seen + c.idle_timeout),
                None => self.last_seen + c.idle_timeout,
            };
            if early < due.0 {
                due = (early, Due::Early);
            }
        }
        let age_due = self.first_seen + c.max_trace_age;
        if age_due < due.0 {
            due = (age_due, Due::Complete(CompletionReason::max_age));
        }
        if let Some(since) = self.uncompacted_since {
            let compact = since + c.idle_timeout;
            if compact < due.0 {
                due = (compact, Due::Compact);
            }
        }
        due
    }
}

/// The encoded bytes of `spans` past the first `own`: slices of their
/// requests, which the memory account counts as `requests`.
pub(super) fn borrowed_bytes(spans: &[RawSpan], own: usize) -> usize {
    spans
        .get(own..)
        .map_or(0, |rest| rest.iter().map(|s| s.bytes.len()).sum())
}

/// Stale arrivals tolerated before a sweep, and spare capacity kept.
const ARRIVALS_SLACK: usize = 1024;

#[derive(Default)]
pub(super) struct Shard {
    traces: HashMap<TraceId, TraceBuf, ahash::RandomState>,
    /// (deadline, trace). Entries go stale when a trace gets new spans or
    /// completes; they are checked when taken instead of updated.
    deadlines: Deadlines,
    /// The deadlines [`Shard::expire`] took, kept for its next call.
    due: Vec<(Instant, TraceId)>,
    /// Traces by first arrival, for evicting the oldest. Completed traces
    /// leave stale entries; [`Shard::prune_arrivals`] drops them as expiry
    /// runs, so the queue stays proportional to the traces buffered.
    arrivals: VecDeque<(Instant, TraceId)>,
    recent: HashMap<TraceId, Instant, ahash::RandomState>,
    recent_order: VecDeque<(Instant, TraceId)>,
    /// Traces some of whose spans were just refused with "retry later":
    /// their completion waits until the time given (see
    /// [`super::Assembler::hold`]), so the retried spans are judged with the
    /// rest of their trace instead of as a late fragment after its verdict.
    held: HashMap<TraceId, Instant, ahash::RandomState>,
    /// Holds in the order given, for forgetting them; every hold lasts as
    /// long, so this is also the order they run out in.
    held_order: VecDeque<(Instant, TraceId)>,
    /// The resources and scopes of compacted traces, shared.
    scopes: ScopeInterner,
    /// Span bytes copied out of their requests since the assembler last
    /// took this ([`Shard::take_compacted`]).
    compacted: usize,
}

/// Per-call settings of [`Shard::expire`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    /// Completed trace IDs remembered per shard.
    pub recent: usize,
    /// Holds kept per shard.
    pub held: usize,
    /// Whether early copies are wanted ([`super::Assembler::early_gate`]).
    pub early: bool,
}

/// What an insert changed, for the buffer's counters.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InsertDelta {
    pub new_traces: usize,
    pub spans: usize,
    pub bytes: usize,
    /// The part of `bytes` that are spans' encodings still in their
    /// requests (not the buffer's own memory).
    pub borrowed: usize,
    /// Spans not buffered because their trace was at `max_spans_per_trace`…
    pub over_span_bound: usize,
    /// …or at `max_bytes_per_trace`.
    pub over_byte_bound: usize,
}

impl InsertDelta {
    /// The first per-trace bound met, for the sender's warning.
    pub fn truncated(&self) -> Option<(TruncateReason, usize)> {
        if self.over_span_bound > 0 {
            Some((TruncateReason::max_spans_per_trace, self.over_span_bound))
        } else if self.over_byte_bound > 0 {
            Some((TruncateReason::max_bytes_per_trace, self.over_byte_bound))
        } else {
            None
        }
    }
}

impl Shard {
    pub fn insert(
        &mut self,
        trace_id: TraceId,
        is_root: bool,
        span: RawSpan,
        now: Instant,
        config: &AssemblerConfig,
        delta: &mut InsertDelta,
    ) {
        let size = span.bytes.len() + SPAN_OVERHEAD;
        if let Some(t) = self.traces.get_mut(&trace_id) {
            // A span past a bound still counts as activity and may be the
            // root: completion does not depend on what was kept.
            t.last_seen = now;
            if is_root && t.root_at.is_none() {
                t.root_at = Some(now);
                // The root can only bring the early deadline forward, so
                // schedule it; deadlines moving later are found when taken.
                if !t.early_sent {
                    self.deadlines.push(now + config.root_settle, trace_id);
                }
            }
            if t.spans.len() >= config.max_spans_per_trace {
                t.truncated = true;
                delta.over_span_bound += 1;
                return;
            }
            // A trace's first span is always kept, also when the trace was
            // buffered empty by a mark.
            if !t.spans.is_empty() && t.bytes.saturating_add(size) > config.max_bytes_per_trace {
                t.truncated = true;
                delta.over_byte_bound += 1;
                return;
            }
            if t.own == t.spans.len() && t.uncompacted_since.is_none() {
                t.uncompacted_since = Some(now);
                // Before the early point its deadline (at the latest
                // `idle_timeout` after the last span) comes first and finds
                // the compaction; after it, the next is `settle` away.
                if t.early_sent {
                    self.deadlines.push(now + config.idle_timeout, trace_id);
                }
            }
            delta.borrowed += span.bytes.len();
            t.spans.push(span);
            t.bytes += size;
            delta.spans += 1;
            delta.bytes += size;
            return;
        }
        delta.spans += 1;
        delta.borrowed += span.bytes.len();
        self.start(
            trace_id,
            vec![span],
            size,
            is_root,
            false,
            now,
            config,
            delta,
        );
    }

    /// Buffers a new trace with `spans` (of `size` accounted bytes).
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        trace_id: TraceId,
        spans: Vec<RawSpan>,
        size: usize,
        is_root: bool,
        unreadable: bool,
        now: Instant,
        config: &AssemblerConfig,
        delta: &mut InsertDelta,
    ) {
        delta.bytes += size + TRACE_OVERHEAD;
        let late = self.recent.contains_key(&trace_id);
        let buf = TraceBuf {
            uncompacted_since: (!spans.is_empty()).then_some(now),
            spans,
            own: 0,
            first_seen: now,
            last_seen: now,
            root_at: is_root.then_some(now),
            late,
            bytes: size + TRACE_OVERHEAD,
            truncated: false,
            unreadable,
            // A late fragment is merged into a trace that settled: there is
            // nothing early left to publish.
            early_sent: late,
        };
        self.deadlines.push(buf.due(config).0, trace_id);
        self.arrivals.push_back((now, trace_id));
        self.traces.insert(trace_id, buf);
        delta.new_traces += 1;
    }

    /// Marks a trace as having lost spans at ingest. The refused span
    /// came, so it counts as activity. A trace not buffered is buffered
    /// with no span: the mark then waits for its other spans, or, if none
    /// come, completes with nothing to judge (a late fragment if the trace
    /// completed recently, which makes its verdicts be judged again).
    pub fn mark_unreadable(
        &mut self,
        trace_id: TraceId,
        now: Instant,
        config: &AssemblerConfig,
        delta: &mut InsertDelta,
    ) {
        match self.traces.get_mut(&trace_id) {
            Some(t) => {
                t.unreadable = true;
                t.last_seen = now;
            }
            None => self.start(trace_id, Vec::new(), 0, false, true, now, config, delta),
        }
    }

    /// Every buffered trace scheduled again at its next condition.
    pub fn reschedule(&mut self, config: &AssemblerConfig) {
        self.due.clear();
        for (id, t) in &self.traces {
            self.deadlines.push(t.due(config).0, *id);
        }
    }

    /// Completes every trace whose condition was met by `now`.
    pub fn expire(
        &mut self,
        now: Instant,
        config: &AssemblerConfig,
        caps: Caps,
        out: &mut Vec<CompletedTrace>,
    ) {
        let Caps {
            recent: recent_cap,
            held: held_cap,
            early: early_wanted,
        } = caps;
        crate::memory::shrink_idle(&mut self.traces, TRACES_ROOM);
        let mut taken = std::mem::take(&mut self.due);
        self.deadlines.take_due(now, &mut taken);
        for (_, id) in taken.drain(..) {
            let Some(t) = self.traces.get(&id) else {
                continue;
            };
            let (due, what) = t.due(config);
            // Holds exist only while senders are being refused: the usual
            // case skips the lookup and its hash.
            let held = if self.held.is_empty() {
                None
            } else {
                self.held.get(&id).copied()
            };
            // A hold waits for spans being retried before judging; it never
            // delays copying spans out of their requests (below: a trace
            // held by every refused request would otherwise pin them, the
            // memory they hold would keep the refusals coming, and nothing
            // would ever be freed), nor the `max_trace_age` bound.
            let holdable = !matches!(
                what,
                Due::Compact | Due::Complete(CompletionReason::max_age)
            );
            let age_due = t.first_seen + config.max_trace_age;
            let (due, what) = match held {
                Some(until) if until > due && holdable => {
                    if until >= age_due {
                        (age_due, Due::Complete(CompletionReason::max_age))
                    } else {
                        (until, what)
                    }
                }
                _ => (due, what),
            };
            if due > now {
                // Held: spans due to be copied out still are.
                let mut next = due;
                if let Some(t) = self.traces.get_mut(&id) {
                    if let Some(since) = t.uncompacted_since {
                        let at = since + config.idle_timeout;
                        if at <= now {
                            self.compacted += t.compact(&mut self.scopes);
                        } else {
                            next = next.min(at);
                        }
                    }
                }
                self.deadlines.push(next, id);
                continue;
            }
            match what {
                Due::Early => {
                    if let Some(t) = self.traces.get_mut(&id) {
                        t.early_sent = true;
                        // It waits for `settle` now, seconds in which the
                        // requests its spans are slices of would stay alive
                        // for its sake: it keeps its own bytes instead.
                        self.compacted += t.compact(&mut self.scopes);
                        if early_wanted {
                            out.push(CompletedTrace {
                                trace_id: id,
                                reason: CompletionReason::root,
                                early: true,
                                late: t.late,
                                truncated: t.truncated,
                                unreadable: t.unreadable,
                                rootless: t.root_at.is_none(),
                                bytes: t.bytes,
                                spans: t.spans.clone(),
                                own_spans: t.own,
                                first_seen: t.first_seen,
                                last_seen: t.last_seen,
                                due,
                                completed_at: now,
                                charge: None,
                            });
                        }
                        self.deadlines.push(t.due(config).0, id);
                    }
                }
                Due::Complete(reason) => {
                    if let Some(c) = self.complete(id, reason, due, now, config, recent_cap) {
                        out.push(c);
                    }
                }
                Due::Compact => {
                    if let Some(t) = self.traces.get_mut(&id) {
                        self.compacted += t.compact(&mut self.scopes);
                        self.deadlines.push(t.due(config).0, id);
                    }
                }
            }
        }
        self.due = taken;
        self.prune_recent(now, config, recent_cap);
        self.prune_held(now, held_cap);
        self.prune_arrivals();
    }

    /// Drops the arrivals of completed traces. Those at the front go at
    /// once; those behind a trace still buffered (a long one holds the
    /// front for up to `max_trace_age`) go in a sweep once they outnumber
    /// the live ones, which costs O(1) a trace amortized. Without this the
    /// queue kept an entry for every trace ever seen: 32 bytes a trace,
    /// ~450 MiB over the 10-minute soak.
    fn prune_arrivals(&mut self) {
        self.oldest();
        let live = self.traces.len();
        if self.arrivals.len() > 2 * live + ARRIVALS_SLACK {
            let traces = &self.traces;
            self.arrivals
                .retain(|(seen, id)| traces.get(id).is_some_and(|t| t.first_seen == *seen));
        }
        if self.arrivals.capacity() > 4 * self.arrivals.len() + ARRIVALS_SLACK {
            self.arrivals
                .shrink_to(2 * self.arrivals.len() + ARRIVALS_SLACK);
        }
    }

    pub fn buffers(&self, id: &TraceId) -> bool {
        self.traces.contains_key(id)
    }

    /// Bytes it holds beyond what its traces are charged: the IDs it
    /// remembers (completed traces' for late spans, and holds), and its
    /// trace table's empty room.
    pub fn remembered_bytes(&self) -> usize {
        self.recent_order.len() * RECENT_OVERHEAD
            + (self.held.len() + self.held_order.len()) * HELD_OVERHEAD
            + crate::memory::map_slack(&self.traces, TRACES_ROOM)
    }

    /// Span bytes compacted since the last call.
    pub fn take_compacted(&mut self) -> usize {
        std::mem::take(&mut self.compacted)
    }

    #[cfg(test)]
    pub fn arrivals_len(&self) -> usize {
        self.arrivals.len()
    }

    /// Holds the completion of a trace, buffered or not yet, until `until`.
    /// At most `cap` holds are kept; beyond, the oldest are forgotten (the
    /// trace then completes as it would have, and a retried span comes late).
    pub fn hold(&mut self, id: TraceId, now: Instant, until: Instant, cap: usize) {
        let at = self.held.entry(id).or_insert(until);
        *at = (*at).max(until);
        self.held_order.push_back((until, id));
        self.prune_held(now, cap);
    }

    #[cfg(test)]
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    fn prune_held(&mut self, now: Instant, cap: usize) {
        while let Some(&(until, id)) = self.held_order.front() {
            if until > now && self.held_order.len() <= cap {
                break;
            }
            self.held_order.pop_front();
            if self.held.get(&id) == Some(&until) {
                self.held.remove(&id);
            }
        }
    }

    /// First-seen time of the oldest buffered trace, dropping stale entries.
    pub fn oldest(&mut self) -> Option<Instant> {
        while let Some(&(seen, id)) = self.arrivals.front() {
            match self.traces.get(&id) {
                Some(t) if t.first_seen == seen => return Some(seen),
                _ => {
                    self.arrivals.pop_front();
                }
            }
        }
        None
    }

    /// Completes the oldest trace early (`reason="evicted"`).
    pub fn evict_oldest(
        &mut self,
        now: Instant,
        config: &AssemblerConfig,
        recent_cap: usize,
    ) -> Option<CompletedTrace> {
        self.oldest()?;
        let (_, id) = self.arrivals.pop_front()?;
        self.complete(id, CompletionReason::evicted, now, now, config, recent_cap)
    }

    pub fn snapshot(&self, id: &TraceId) -> Option<Vec<RawSpan>> {
        self.traces.get(id).map(|t| t.spans.clone())
    }

    /// Completes everything (`reason="shutdown"`).
    pub fn drain(&mut self, now: Instant, out: &mut Vec<CompletedTrace>) {
        self.deadlines.clear();
        self.arrivals.clear();
        for (trace_id, t) in self.traces.drain() {
            out.push(CompletedTrace {
                trace_id,
                reason: CompletionReason::shutdown,
                early: false,
                late: t.late,
                truncated: t.truncated,
                unreadable: t.unreadable,
                rootless: t.root_at.is_none(),
                bytes: t.bytes,
                own_spans: t.own,
                spans: t.spans,
                first_seen: t.first_seen,
                last_seen: t.last_seen,
                due: now,
                completed_at: now,
                charge: None,
            });
        }
    }

    fn complete(
        &mut self,
        id: TraceId,
        reason: CompletionReason,
        due: Instant,
        now: Instant,
        config: &AssemblerConfig,
        recent_cap: usize,
    ) -> Option<CompletedTrace> {
        let t = self.traces.remove(&id)?;
        self.recent.insert(id, now);
        self.recent_order.push_back((now, id));
        self.prune_recent(now, config, recent_cap);
        Some(CompletedTrace {
            trace_id: id,
            reason,
            early: false,
            late: t.late,
            truncated: t.truncated,
            unreadable: t.unreadable,
            rootless: t.root_at.is_none(),
            bytes: t.bytes,
            own_spans: t.own,
            spans: t.spans,
            first_seen: t.first_seen,
            last_seen: t.last_seen,
            due,
            completed_at: now,
            charge: None,
        })
    }

    fn prune_recent(&mut self, now: Instant, config: &AssemblerConfig, cap: usize) {
        while let Some(&(at, id)) = self.recent_order.front() {
            let expired = now.saturating_duration_since(at) > config.late_span_window;
            if !expired && self.recent_order.len() <= cap {
                break;
            }
            self.recent_order.pop_front();
            // Only forget the ID if this entry is its newest completion.
            if self.recent.get(&id) == Some(&at) {
                self.recent.remove(&id);
            }
        }
    }
}
