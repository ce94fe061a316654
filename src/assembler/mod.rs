//! The assembler: gathers spans per trace ID in a concurrent, bounded buffer
//! and decides when each trace is complete.
//!
//! A trace is complete `idle_timeout` after its last span, or `root_settle`
//! after its root span arrived if sooner, or `max_trace_age` after its first
//! span. The buffer is split into shards, each behind its own lock with its
//! own deadlines (a timing wheel), so concurrent receivers rarely meet and
//! expiry never scans every trace. At `max_traces`/`max_spans` new spans are refused with a
//! retryable answer ([`Assembler::admit`]) and the expiry task completes the
//! oldest traces early (`evicted`) until the buffer is back under 90% of its
//! bounds. Spans of a recently completed trace are counted as late and handed
//! on as a late fragment of it.
//!
//! The buffer accounts the bytes it holds (each span's encoding plus fixed
//! bookkeeping per span and per trace). Above 80% of `max_memory_mib` new
//! spans are refused with a retryable answer; above `max_memory_mib` itself
//! (reachable only by requests admitted together just below the soft limit)
//! the oldest traces are completed early until it is back under 80%. One
//! trace holds at most `max_spans_per_trace` spans and `max_bytes_per_trace`
//! bytes; spans beyond are forwarded but not buffered, and the trace's
//! verdicts are marked incomplete. A trace some of whose spans the
//! receivers refused ([`Assembler::mark_unreadable`]) is marked likewise,
//! buffered with no span at all if none of its spans was taken.
//!
//! Completed traces leave on a bounded channel; when the consumer falls behind
//! the buffer fills and senders are asked to retry: back-pressure, not loss.

pub mod config;
mod deadlines;
mod shard;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::config::AssemblerConfig;
use self::shard::{Caps, InsertDelta, Shard};
use crate::ids::TraceId;
use crate::memory::{Charge, MemoryAccount, Part};
use crate::metrics::{CompletionReason, Metrics, PanicLabels, TruncateLabels, TruncateReason};
use crate::otlp::{KeyedSpan, RawSpan};

/// How often deadlines are checked; bounds how late past its condition a
/// trace is completed.
const TICK: Duration = Duration::from_millis(10);

/// Shards of the buffer: enough that two cores' worth of receivers rarely
/// contend, few enough that eviction's scan of shard heads stays cheap.
const SHARDS: usize = 64;

/// Fraction of the bounds eviction brings the buffer down to, so that a full
/// buffer does not flip between refusing and accepting on every request.
const LOW_WATERMARK: f64 = 0.9;

/// A trace the assembler considers complete, or (`early`) a copy of one
/// still buffered, for the verdicts that cannot wait on it to settle.
#[derive(Debug)]
pub struct CompletedTrace {
    pub trace_id: TraceId,
    pub reason: CompletionReason,
    /// A copy of the spans so far, handed on `root_settle` after the root
    /// (or `idle_timeout` after the last span of a root-less trace): only
    /// passes no later span can change may be decided on it. The trace
    /// stays buffered and comes again, whole, when it settles.
    pub early: bool,
    /// A fragment of a trace completed earlier (late spans only).
    pub late: bool,
    /// No span without a parent came: a sidecar's share of a trace whose
    /// root went elsewhere, or a trace whose root was lost.
    pub rootless: bool,
    /// Spans of it were forwarded but not kept, at `max_spans_per_trace` or
    /// `max_bytes_per_trace`: its verdicts are incomplete.
    pub truncated: bool,
    /// Spans of it were refused at ingest (partial success: a field no
    /// decoder would read, or over a limit), so it is knowingly
    /// incomplete: its verdicts are `inconclusive` (`unreadable`) rather
    /// than a `fail` for a span that was sent. May come with no spans at
    /// all, when every span of it was refused.
    pub unreadable: bool,
    /// What the buffer accounted for it.
    pub bytes: usize,
    /// In arrival order.
    pub spans: Vec<RawSpan>,
    /// How many of `spans`, from the first, hold only their own bytes: a
    /// trace is compacted when its early point passes, so that waiting to
    /// settle keeps the trace's bytes and not the requests its spans came
    /// in ([`RawSpan::detach`]); spans that come after are request slices.
    pub own_spans: usize,
    pub first_seen: Instant,
    /// When its last span arrived.
    pub last_seen: Instant,
    /// When its completion condition was met.
    pub due: Instant,
    pub completed_at: Instant,
    /// What it is charged to the memory account (`evaluating`) until it is
    /// dropped: its own bytes, not the request slices among its spans
    /// (those count as `requests`). `None` on early copies, which share
    /// the buffer's spans.
    pub charge: Option<Charge>,
}

impl CompletedTrace {
    /// Its accounted bytes that are its own, not slices of requests.
    pub fn own_bytes(&self) -> usize {
        self.bytes
            .saturating_sub(shard::borrowed_bytes(&self.spans, self.own_spans))
    }
}

/// Which traces of a refused request [`Assembler::hold`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    All,
    Buffered,
}

/// Where completed traces go. Until models exist it only counts.
pub trait TraceConsumer: Send + 'static {
    fn consume(&mut self, trace: CompletedTrace);

    /// Traces completed together, in the order completed; leaves `traces`
    /// empty. A consumer that hands traces on to threads of its own
    /// ([`Parallel`]) hands on each thread's share at once: one wake-up a
    /// batch instead of one a trace.
    fn consume_batch(&mut self, traces: &mut Vec<CompletedTrace>) {
        for t in traces.drain(..) {
            self.consume(t);
        }
    }

    /// Called at least every [`CONSUMER_TICK`] while the channel is idle,
    /// for work driven by time (verdicts waiting on `within`).
    fn tick(&mut self, _now: Instant) {}

    /// Called once when no trace will come any more.
    fn finish(&mut self) {}
}

/// Upper bound between two [`TraceConsumer::tick`] calls.
pub const CONSUMER_TICK: Duration = Duration::from_millis(50);

/// New spans cannot be buffered now; the sender should retry shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// At `max_traces` or `max_spans`.
    #[error("trace buffer full ({traces} traces, {spans} spans buffered); retry shortly")]
    Full { traces: usize, spans: usize },
    /// The request alone, with its spans' bookkeeping, is larger than the
    /// memory limit: it can never be taken.
    #[error("request of {body} bytes needs {needs} bytes of memory to be taken (its body, room to copy its spans out, their bookkeeping), more than the memory limit of {limit} bytes (assembler.max_memory_mib); send smaller batches")]
    TooLarge {
        body: usize,
        needs: usize,
        limit: usize,
    },
    /// The process's memory account above its soft limit.
    #[error("memory in use above the limit ({used} of {limit} bytes, refusing above {soft}); retry shortly")]
    Memory {
        used: usize,
        soft: usize,
        limit: usize,
    },
}

/// What an insert could not keep: spans forwarded but not buffered because
/// their trace was at a per-trace bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// The first bound met and how many spans it left out.
    pub truncated: Option<(TruncateReason, usize)>,
}

pub struct Assembler {
    config: AssemblerConfig,
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    traces: AtomicUsize,
    spans: AtomicUsize,
    bytes: AtomicUsize,
    evict_wanted: AtomicBool,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// Completed trace IDs remembered per shard (`late_span_window_max_traces`).
    recent_cap: usize,
    /// What the IDs remembered beyond the buffered traces (completed ones
    /// for late spans, holds) are charged to the memory account, as of the
    /// last pass.
    remembered_charged: AtomicUsize,
    /// Holds kept per shard.
    held_cap: usize,
    /// Whether a model in force can pass early ([`Assembler::early_gate`]).
    early_wanted: Arc<AtomicBool>,
    /// The process's memory account, whose limit is `max_memory_mib`.
    memory: Arc<MemoryAccount>,
}

impl Assembler {
    pub fn new(config: AssemblerConfig, metrics: Arc<Metrics>) -> Self {
        metrics.buffer_max_traces.set(config.max_traces as i64);
        // At 0 from the start: a series whose first sample is 1 has no
        // increase for the alert to see.
        drop(
            metrics
                .internal_panics
                .get_or_create(&PanicLabels { stage: "assembler" }),
        );
        metrics.buffer_max_spans.set(config.max_spans as i64);
        metrics
            .buffer_max_bytes
            .set(config.max_memory_bytes().min(i64::MAX as usize) as i64);
        metrics
            .memory_limit_bytes
            .set(config.max_memory_bytes().min(i64::MAX as usize) as i64);
        let memory = Arc::new(MemoryAccount::new(
            config.max_memory_bytes(),
            config.soft_memory_bytes(),
            &metrics.memory_bytes,
        ));
        Self {
            // At most an eighth of the memory limit for remembered IDs and
            // a sixteenth for holds, whatever the counts allow: the defaults
            // (1 000 000 IDs, 128 MiB) fit the default limit, and a small
            // limit (a sidecar's 96 MiB) is not filled by IDs alone.
            recent_cap: config
                .late_span_window_max_traces
                .min(config.max_memory_bytes() / 8 / shard::RECENT_OVERHEAD)
                / SHARDS
                + 1,
            remembered_charged: AtomicUsize::new(0),
            held_cap: config
                .max_traces
                .min(config.max_memory_bytes() / 16 / (2 * shard::HELD_OVERHEAD))
                / SHARDS
                + 1,
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: ahash::RandomState::new(),
            traces: AtomicUsize::new(0),
            spans: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            evict_wanted: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
            early_wanted: Arc::new(AtomicBool::new(true)),
            memory,
        }
    }

    /// The process's memory account; its limit is `max_memory_mib`.
    pub fn memory(&self) -> &Arc<MemoryAccount> {
        &self.memory
    }

    /// Set to whether any model in force can pass a trace early, by whoever
    /// loads the models: while none can, no early copy of a trace is handed
    /// on (one per trace, for nothing). A trace's early point still passes
    /// and it is compacted then.
    pub fn early_gate(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.early_wanted)
    }

    pub fn config(&self) -> &AssemblerConfig {
        &self.config
    }

    /// Whether new spans may come in. At a count bound it refuses and asks
    /// the expiry task to evict, so a retry shortly after succeeds. With the
    /// process's memory account (the request's own body already charged)
    /// at its soft limit it refuses until traces complete (at the latest
    /// `max_trace_age` later), requests are forwarded, or the buffer's hard
    /// limit makes it evict. A request admitted just below a count bound
    /// may overshoot it by its own size, which the receivers' message size
    /// limit bounds.
    ///
    /// `own`: what the account already counts for the request asking (its
    /// body); `spans`: how many spans it brings, `copies`: their bytes.
    /// Reserved in one step with the admission, and returned as one charge:
    /// the spans' bookkeeping (each span's and a new trace's), until
    /// [`Assembler::insert`] has charged it, and `copies`, room to copy the
    /// spans out of the body later, which the caller moves into the
    /// request's [`crate::memory::CopyRoom`].
    pub fn admit(&self, own: usize, spans: usize, copies: usize) -> Result<Charge, AdmitError> {
        let bookkeeping = spans.saturating_mul(shard::SPAN_OVERHEAD + shard::TRACE_OVERHEAD);
        let reserved = bookkeeping.saturating_add(copies);
        if !self.memory.fits(own.saturating_add(reserved)) {
            return Err(AdmitError::TooLarge {
                body: own,
                needs: own.saturating_add(reserved),
                limit: self.memory.limit(),
            });
        }
        let traces = self.traces.load(Ordering::Relaxed);
        let spans = self.spans.load(Ordering::Relaxed);
        if traces >= self.config.max_traces || spans >= self.config.max_spans {
            self.want_eviction();
            return Err(AdmitError::Full { traces, spans });
        }
        self.memory
            .reserve(Part::buffer, own, reserved)
            .map_err(|e| AdmitError::Memory {
                used: e.used,
                soft: e.soft,
                limit: e.limit,
            })
    }

    /// Holds the completion of these traces until `until`: the receivers
    /// just refused some of their spans with "retry later", and without the
    /// hold a trace whose root was taken would complete (`root_settle`)
    /// before the retry, and the refused spans, perhaps the very ones a
    /// model fails on, would come as a late fragment after its verdict.
    /// Traces not buffered yet are held too (`Held::All`): their first
    /// spans may be the ones being retried. Refused for memory, only those
    /// buffered are (`Held::Buffered`): a hold takes memory too, and
    /// holding every trace of every refused request would keep the account
    /// at its limit for as long as senders retry. Each shard is locked once.
    pub fn hold(&self, mut ids: Vec<TraceId>, now: Instant, until: Instant, which: Held) {
        ids.sort_unstable_by_key(|id| (self.shard_of(id), *id));
        ids.dedup();
        let mut iter = ids.into_iter().peekable();
        while let Some(first) = iter.next() {
            let idx = self.shard_of(&first);
            let mut shard = self.shards[idx].lock();
            for id in std::iter::once(first).chain(std::iter::from_fn(|| {
                iter.next_if(|id| self.shard_of(id) == idx)
            })) {
                if which == Held::All || shard.buffers(&id) {
                    shard.hold(id, now, until, self.held_cap);
                }
            }
        }
    }

    /// Marks these traces as having lost spans at ingest (refused through
    /// partial success): when they complete, their verdicts are
    /// `inconclusive` (`unreadable`) instead of a `fail` for a span that
    /// was sent. A trace not buffered is buffered with no span, so that
    /// the mark is there when its other spans come, or completes on its
    /// own (with nothing to judge); one completed recently gets the mark
    /// as a late fragment. Each shard is locked once.
    pub fn mark_unreadable(&self, mut ids: Vec<TraceId>, now: Instant) {
        ids.sort_unstable_by_key(|id| (self.shard_of(id), *id));
        ids.dedup();
        let mut delta = InsertDelta::default();
        let mut iter = ids.into_iter().peekable();
        while let Some(first) = iter.next() {
            let idx = self.shard_of(&first);
            let mut shard = self.shards[idx].lock();
            let before = delta;
            shard.mark_unreadable(first, now, &self.config, &mut delta);
            while let Some(next) = iter.next_if(|id| self.shard_of(id) == idx) {
                shard.mark_unreadable(next, now, &self.config, &mut delta);
            }
            // Counted under the lock, as in `insert`.
            self.traces
                .fetch_add(delta.new_traces - before.new_traces, Ordering::Relaxed);
            self.bytes
                .fetch_add(delta.bytes - before.bytes, Ordering::Relaxed);
            self.memory.add(Part::buffer, delta.bytes - before.bytes);
            drop(shard);
        }
        if delta.new_traces > 0 {
            self.publish_gauges();
        }
    }

    fn want_eviction(&self) {
        if !self.evict_wanted.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Buffers spans; each shard is locked once per call. Spans of a trace
    /// at its per-trace bounds are not kept; the outcome says how many.
    pub fn insert(&self, spans: Vec<KeyedSpan>, now: Instant) -> InsertOutcome {
        let mut delta = InsertDelta::default();
        let mut iter = self.by_shard(spans).into_iter().flatten().peekable();
        while let Some((idx, first)) = iter.next() {
            let mut shard = self.shards[idx].lock();
            let before = delta;
            shard.insert(
                first.trace_id,
                first.is_root,
                first.span,
                now,
                &self.config,
                &mut delta,
            );
            while let Some((_, next)) = iter.next_if(|(i, _)| *i == idx) {
                shard.insert(
                    next.trace_id,
                    next.is_root,
                    next.span,
                    now,
                    &self.config,
                    &mut delta,
                );
            }
            // Counted before the lock is released: completing these traces
            // needs the lock, so their subtraction can never come first and
            // wrap the counters below zero.
            self.traces
                .fetch_add(delta.new_traces - before.new_traces, Ordering::Relaxed);
            self.spans
                .fetch_add(delta.spans - before.spans, Ordering::Relaxed);
            self.bytes
                .fetch_add(delta.bytes - before.bytes, Ordering::Relaxed);
            // Span encodings stay in their requests (`requests`) until
            // compacted.
            self.memory.add(
                Part::buffer,
                (delta.bytes - before.bytes) - (delta.borrowed - before.borrowed),
            );
            drop(shard);
        }
        if self.bytes() > self.config.max_memory_bytes() {
            self.want_eviction();
        }
        for (reason, n) in [
            (TruncateReason::max_spans_per_trace, delta.over_span_bound),
            (TruncateReason::max_bytes_per_trace, delta.over_byte_bound),
        ] {
            if n > 0 {
                self.metrics
                    .buffer_truncated_spans
                    .get_or_create(&TruncateLabels { reason })
                    .inc_by(n as u64);
            }
        }
        self.publish_gauges();
        InsertOutcome {
            truncated: delta.truncated(),
        }
    }

    /// Bytes buffered now, by the buffer's own accounting.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Traces and spans buffered now.
    pub fn len(&self) -> (usize, usize) {
        (
            self.traces.load(Ordering::Relaxed),
            self.spans.load(Ordering::Relaxed),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }

    /// Completes every trace whose condition was met by `now`, and, if a
    /// bound was hit, the oldest traces down to the low watermark.
    pub fn poll_completed(&self, now: Instant) -> Vec<CompletedTrace> {
        let mut out = Vec::new();
        self.poll_into(now, &mut out);
        self.account(&mut out);
        out
    }

    /// [`Assembler::poll_completed`] with a panic caught: what was completed
    /// before it is accounted and handed on all the same, and every buffered
    /// trace gets its deadline again (the pass may have dropped some), so
    /// the counters stay true and no trace is left without a deadline.
    fn poll_completed_caught(&self, now: Instant) -> Vec<CompletedTrace> {
        let mut out = Vec::new();
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.poll_into(now, &mut out)
        }));
        if polled.is_err() {
            self.metrics
                .internal_panics
                .get_or_create(&PanicLabels { stage: "assembler" })
                .inc();
            tracing::error!(completed = out.len(), "Completing traces panicked (a bug; please report it); what was completed goes on, every buffered trace is scheduled again.");
            for shard in self.shards.iter() {
                shard.lock().reschedule(&self.config);
            }
        }
        self.account(&mut out);
        out
    }

    fn poll_into(&self, now: Instant, out: &mut Vec<CompletedTrace>) {
        let caps = Caps {
            recent: self.recent_cap,
            held: self.held_cap,
            early: self.early_wanted.load(Ordering::Relaxed),
        };
        let mut remembered = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.expire(now, &self.config, caps, out);
            // Under the lock, as the traces' completion is accounted.
            self.memory.add(Part::buffer, shard.take_compacted());
            remembered += shard.remembered_bytes();
        }
        let before = self.remembered_charged.swap(remembered, Ordering::Relaxed);
        if remembered >= before {
            self.memory.add(Part::buffer, remembered - before);
        } else {
            self.memory.sub(Part::buffer, before - remembered);
        }
        if self.evict_wanted.swap(false, Ordering::AcqRel) {
            self.evict(now, out);
        }
    }

    /// The spans buffered for a trace right now, for the API.
    pub fn snapshot(&self, trace_id: &TraceId) -> Option<Vec<RawSpan>> {
        self.shards[self.shard_of(trace_id)]
            .lock()
            .snapshot(trace_id)
    }

    /// Completes everything buffered with reason `shutdown`.
    pub fn drain(&self, now: Instant) -> Vec<CompletedTrace> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            shard.lock().drain(now, &mut out);
        }
        self.account(&mut out);
        out
    }

    fn evict(&self, now: Instant, out: &mut Vec<CompletedTrace>) {
        let low_traces = (self.config.max_traces as f64 * LOW_WATERMARK) as usize;
        let low_spans = (self.config.max_spans as f64 * LOW_WATERMARK) as usize;
        let (mut traces, mut spans) = self.len();
        let mut bytes = self.bytes();
        // Already-completed traces in `out` still count until accounted.
        for c in out.iter().filter(|c| !c.early) {
            traces = traces.saturating_sub(1);
            spans = spans.saturating_sub(c.spans.len());
            bytes = bytes.saturating_sub(c.bytes);
        }
        // Memory evicts only past the hard limit, and then down to the soft
        // one, where admission resumes.
        let low_bytes = if bytes > self.config.max_memory_bytes() {
            self.config.soft_memory_bytes()
        } else {
            usize::MAX
        };
        if traces <= low_traces && spans <= low_spans && bytes <= low_bytes {
            return;
        }
        // Oldest first across the shards: each shard's oldest is read once,
        // then only the shard just evicted from is asked again, so evicting
        // n traces takes n + shards locks, not n × shards. Traces arriving
        // meanwhile are newer than any here, so the order stays right.
        let mut oldest: BinaryHeap<Reverse<(Instant, usize)>> = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.lock().oldest().map(|t| Reverse((t, i))))
            .collect();
        while traces > low_traces || spans > low_spans || bytes > low_bytes {
            let Some(Reverse((_, idx))) = oldest.pop() else {
                break;
            };
            let mut shard = self.shards[idx].lock();
            let Some(c) = shard.evict_oldest(now, &self.config, self.recent_cap) else {
                continue;
            };
            if let Some(next) = shard.oldest() {
                oldest.push(Reverse((next, idx)));
            }
            drop(shard);
            traces = traces.saturating_sub(1);
            spans = spans.saturating_sub(c.spans.len());
            bytes = bytes.saturating_sub(c.bytes);
            out.push(c);
        }
    }

    /// Takes traces that left the buffer off its counters; early copies
    /// are still buffered.
    /// Each is charged to the memory account's `evaluating` part instead.
    fn account(&self, completed: &mut [CompletedTrace]) {
        let mut left = completed.iter_mut().filter(|c| !c.early).peekable();
        if left.peek().is_none() {
            return;
        }
        let (mut traces, mut spans, mut bytes, mut own) = (0, 0, 0, 0);
        for c in left {
            traces += 1;
            spans += c.spans.len();
            bytes += c.bytes;
            let charge = self.memory.charge(Part::evaluating, c.own_bytes());
            own += charge.bytes();
            c.charge = Some(charge);
        }
        self.traces.fetch_sub(traces, Ordering::Relaxed);
        self.spans.fetch_sub(spans, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.memory.sub(Part::buffer, own);
        for c in completed.iter().filter(|c| !c.early) {
            self.metrics.completed(c.reason);
            if c.late {
                self.metrics.late_fragments.inc();
            }
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let (t, s) = self.len();
        self.metrics.buffer_traces.set(t as i64);
        self.metrics.buffer_spans.set(s as i64);
        self.metrics
            .buffer_bytes
            .set(self.bytes().min(i64::MAX as usize) as i64);
    }

    /// The spans grouped by shard, each with its shard, so that a request
    /// takes each shard's lock once. A counting sort: one hash a span,
    /// where sorting by shard hashed two trace IDs a comparison.
    fn by_shard(&self, spans: Vec<KeyedSpan>) -> Vec<Option<(usize, KeyedSpan)>> {
        let shard_ids: Vec<usize> = spans.iter().map(|s| self.shard_of(&s.trace_id)).collect();
        // Spans per shard, then where each shard's run starts.
        let mut next = vec![0usize; self.shards.len() + 1];
        for &k in &shard_ids {
            next[k + 1] += 1;
        }
        for i in 1..next.len() {
            next[i] += next[i - 1];
        }
        let mut grouped: Vec<Option<(usize, KeyedSpan)>> =
            std::iter::repeat_with(|| None).take(spans.len()).collect();
        for (span, k) in spans.into_iter().zip(shard_ids) {
            grouped[next[k]] = Some((k, span));
            next[k] += 1;
        }
        grouped
    }

    fn shard_of(&self, id: &TraceId) -> usize {
        (self.hasher.hash_one(id) as usize) % self.shards.len()
    }

    /// Drives completion until `cancel`: every tick (or at once when a bound
    /// is hit) completed traces are sent to `out`. Waiting on a full `out`
    /// is the back-pressure that eventually refuses senders.
    pub async fn run(
        self: Arc<Self>,
        out: mpsc::Sender<CompletedTrace>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            // A bug here must not stop every trace from completing for the
            // rest of the process's life, unseen.
            for trace in self.poll_completed_caught(Instant::now()) {
                if out.send(trace).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Traces [`spawn_consumer`] hands on at once, at most.
const RELAY_BATCH: usize = 256;

/// Runs `consumer` on a thread of its own until the channel closes:
/// evaluation is CPU work and must not hold up the async receivers. Traces
/// go to it in batches ([`TraceConsumer::consume_batch`]) of what was
/// queued: handed on one by one, they woke this thread and the evaluation
/// threads ~1 800 times a second at 100 000 spans/s; in batches the daemon
/// switches ~15 % less a span (BENCHMARKS.md, "Profile", item 8).
pub fn spawn_consumer<C: TraceConsumer>(
    mut rx: mpsc::Receiver<CompletedTrace>,
    mut consumer: C,
    alive: crate::health::Alive,
) -> tokio::task::JoinHandle<C> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _alive = alive;
        let mut last_tick = Instant::now();
        let mut batch = Vec::with_capacity(RELAY_BATCH);
        loop {
            // What is queued is taken without waiting, up to a batch; the
            // thread sleeps only when nothing is.
            let mut closed = false;
            while batch.len() < RELAY_BATCH {
                match rx.try_recv() {
                    Ok(t) => batch.push(t),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if batch.is_empty() && !closed {
                let waited = handle.block_on(tokio::time::timeout(
                    CONSUMER_TICK,
                    rx.recv_many(&mut batch, RELAY_BATCH),
                ));
                // `recv_many` takes nothing only once the channel is closed.
                closed = matches!(waited, Ok(0));
            }
            if !batch.is_empty() {
                consumer.consume_batch(&mut batch);
            }
            if closed {
                break;
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= CONSUMER_TICK {
                consumer.tick(now);
                last_tick = now;
            }
        }
        consumer.finish();
        consumer
    })
}

/// Completed traces spread over several consumers, each on a thread of its
/// own, by trace ID: a trace's late fragments reach the consumer that
/// judged it, and evaluation uses as many cores as it is given. Each
/// consumer's queue is bounded; when one is full, handing it a trace waits,
/// which backs up into the assembler and from there to senders as a
/// retryable refusal.
pub struct Parallel<C: TraceConsumer> {
    senders: Vec<(std::sync::mpsc::Sender<Vec<CompletedTrace>>, Arc<Backlog>)>,
    threads: Vec<std::thread::JoinHandle<C>>,
    finished: Vec<C>,
    hasher: ahash::RandomState,
}

/// Traces waiting per parallel consumer.
const PARALLEL_QUEUE: usize = 1024;

/// Traces handed to one evaluation thread and not yet consumed. It bounds
/// that thread's queue in traces, whatever the size of the batches they
/// came in: bounded in batches, a thread held up by a slow trace would stop
/// the relay after a few one-trace batches and leave the other threads
/// idle.
#[derive(Default)]
struct Backlog {
    state: parking_lot::Mutex<BacklogState>,
    room: parking_lot::Condvar,
}

#[derive(Default)]
struct BacklogState {
    queued: usize,
    /// How many traces the relay waits to hand on, if it waits.
    wanted: Option<usize>,
    /// The thread is gone: nothing will make room again.
    closed: bool,
}

impl BacklogState {
    /// A batch larger than the bound goes to an empty queue.
    fn fits(&self, n: usize) -> bool {
        self.closed || self.queued == 0 || self.queued + n <= PARALLEL_QUEUE
    }
}

impl Backlog {
    /// Waits until `n` more traces fit. False once the thread is gone.
    fn reserve(&self, n: usize) -> bool {
        let mut state = self.state.lock();
        while !state.fits(n) {
            state.wanted = Some(n);
            self.room.wait(&mut state);
        }
        state.wanted = None;
        state.queued += n;
        !state.closed
    }

    fn release(&self, n: usize) {
        let mut state = self.state.lock();
        state.queued = state.queued.saturating_sub(n);
        // Woken only once its batch fits: a wake-up for every trace
        // evaluated while the relay waits for room for a batch of 256
        // would be a context switch each.
        if state.wanted.is_some_and(|wanted| state.fits(wanted)) {
            state.wanted = None;
            drop(state);
            self.room.notify_one();
        }
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_all();
    }
}

/// Closes its thread's backlog however the thread ends.
struct CloseOnExit(Arc<Backlog>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<C: TraceConsumer> Parallel<C> {
    /// Starts one thread per consumer.
    pub fn new(consumers: Vec<C>) -> std::io::Result<Self> {
        Self::counting_panics(consumers, Counter::default())
    }

    /// Starts one thread per consumer; panics they survive are counted in
    /// `panics`.
    pub fn counting_panics(consumers: Vec<C>, panics: Counter) -> std::io::Result<Self> {
        Self::start(consumers, panics, None)
    }

    /// As [`Parallel::counting_panics`], each thread holding an
    /// [`crate::health::Alive`] guard of `workers`.
    pub fn supervised(
        consumers: Vec<C>,
        panics: Counter,
        workers: &Arc<crate::health::Workers>,
    ) -> std::io::Result<Self> {
        Self::start(consumers, panics, Some(workers))
    }

    fn start(
        consumers: Vec<C>,
        panics: Counter,
        workers: Option<&Arc<crate::health::Workers>>,
    ) -> std::io::Result<Self> {
        let mut senders = Vec::with_capacity(consumers.len());
        let mut threads = Vec::with_capacity(consumers.len());
        for (i, mut consumer) in consumers.into_iter().enumerate() {
            let panics = panics.clone();
            let alive = workers.map(|w| w.alive("evaluator"));
            let (tx, rx) = std::sync::mpsc::channel::<Vec<CompletedTrace>>();
            let backlog = Arc::new(Backlog::default());
            let closing = CloseOnExit(Arc::clone(&backlog));
            senders.push((tx, backlog));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tracecheck-eval-{i}"))
                    .spawn(move || {
                        let _alive = alive;
                        // Held whole, so that it closes the backlog when
                        // the thread ends, however it ends.
                        let closing = closing;
                        let mut last_tick = Instant::now();
                        // As below: the thread, and every trace hashed to
                        // it, lives on.
                        let mut tick_if_due = |consumer: &mut C| {
                            let now = Instant::now();
                            if now.duration_since(last_tick) >= CONSUMER_TICK {
                                let ticked = std::panic::catch_unwind(
                                    std::panic::AssertUnwindSafe(|| consumer.tick(now)),
                                );
                                if ticked.is_err() {
                                    panics.inc();
                                    tracing::error!("An evaluation thread's timed work panicked (a bug; please report it); it goes on.");
                                }
                                last_tick = now;
                            }
                        };
                        loop {
                            match rx.recv_timeout(CONSUMER_TICK) {
                                // Models are contained one by one; this
                                // catches what is not (a bug elsewhere in
                                // the evaluator), so the thread and every
                                // trace hashed to it live on.
                                Ok(batch) => {
                                    for t in batch {
                                        let trace_id = t.trace_id;
                                        let caught = std::panic::catch_unwind(
                                            std::panic::AssertUnwindSafe(|| consumer.consume(t)),
                                        );
                                        closing.0.release(1);
                                        if caught.is_err() {
                                            panics.inc();
                                            tracing::error!(trace_id = %trace_id, "Evaluation of a trace panicked (a bug; please report it); it has no verdicts.");
                                        }
                                        // Time-driven work (verdicts
                                        // waiting on `within`) does not
                                        // wait for the rest of a batch.
                                        tick_if_due(&mut consumer);
                                    }
                                }
                                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                    tick_if_due(&mut consumer);
                                }
                                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        consumer.finish();
                        consumer
                    })?,
            );
        }
        Ok(Self {
            senders,
            threads,
            finished: Vec::new(),
            hasher: ahash::RandomState::new(),
        })
    }

    /// The consumers, once [`TraceConsumer::finish`] has run.
    pub fn into_inner(self) -> Vec<C> {
        self.finished
    }
}

impl<C: TraceConsumer> Parallel<C> {
    fn thread_of(&self, trace: &CompletedTrace) -> usize {
        (self.hasher.hash_one(trace.trace_id) as usize) % self.senders.len().max(1)
    }

    /// Hands `batch` to thread `i`, once its queue has room: a full queue
    /// waits, which backs up into the assembler.
    fn send(&self, i: usize, batch: Vec<CompletedTrace>) {
        if let Some((tx, backlog)) = self.senders.get(i) {
            let traces = batch.len();
            // Fails only if that thread is gone (it panicked outside the
            // per-model containment); its traces are then not evaluated.
            if !backlog.reserve(traces) || tx.send(batch).is_err() {
                tracing::error!(
                    consumer = i,
                    traces,
                    "Evaluation thread stopped; traces not evaluated."
                );
            }
        }
    }
}

impl<C: TraceConsumer> TraceConsumer for Parallel<C> {
    fn consume(&mut self, trace: CompletedTrace) {
        self.send(self.thread_of(&trace), vec![trace]);
    }

    /// Each thread's share, in order (a trace's early copy and its settled
    /// trace reach its thread in the order completed).
    fn consume_batch(&mut self, traces: &mut Vec<CompletedTrace>) {
        let mut shares: Vec<Vec<CompletedTrace>> =
            self.senders.iter().map(|_| Vec::new()).collect();
        for t in traces.drain(..) {
            let i = self.thread_of(&t);
            if let Some(share) = shares.get_mut(i) {
                share.push(t);
            }
        }
        for (i, share) in shares.into_iter().enumerate() {
            if !share.is_empty() {
                self.send(i, share);
            }
        }
    }

    fn finish(&mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(c) => self.finished.push(c),
                Err(_) => tracing::error!("An evaluation thread panicked."),
            }
        }
    }
}

/// A consumer that only counts, for when no model engine is attached.
#[derive(Debug, Default, Clone)]
pub struct CountingConsumer {
    pub traces: usize,
    pub spans: usize,
}

impl TraceConsumer for CountingConsumer {
    fn consume(&mut self, trace: CompletedTrace) {
        self.traces += 1;
        self.spans += trace.spans.len();
    }
}

#[cfg(test)]
mod tests;
