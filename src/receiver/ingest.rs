//! The one path every export request takes, whatever its transport: walk it,
//! admit it, buffer its spans and queue it for forwarding.
//!
//! Admission happens before anything is taken, so a refused request leaves
//! no trace in the buffer or the queue and the sender's retry cannot create
//! duplicates.
//!
//! Every span taken is one the evaluator and the downstream can decode: the
//! walk checks each span, resource and scope as prost's decoder would
//! (`otlp::limits`). Limits, and how each is answered:
//! - framing that is not OTLP anywhere (bad varints or lengths, a known
//!   field with the wrong wire type): the request is refused whole
//!   (INVALID_ARGUMENT / 400) with the path of the field, nothing taken;
//! - a span with bad IDs, with a `string` field that is not UTF-8, or over a
//!   `receivers.otlp.limits` bound (or whose resource or scope has such a
//!   string or is over a bound): that span is rejected through partial
//!   success with the path of the field, counted by reason, the rest taken
//!   and forwarded. Refusing it rather than taking it tells the sender, and
//!   keeps bytes the downstream cannot decode out of the batches forwarded
//!   (one such span would make it refuse the whole batch). Its trace, when
//!   its ID can be read, is marked in the assembler
//!   ([`Assembler::mark_unreadable`]): its verdicts are `inconclusive`
//!   (`unreadable`), never a `fail` for a span that was sent but refused;
//! - buffer at a count bound, the process's memory account
//!   ([`crate::memory`], this request's body included) above its soft
//!   limit, forwarding queue full: the request is refused whole with a
//!   retryable answer;
//! - a trace at `max_spans_per_trace`/`max_bytes_per_trace`: its further
//!   spans are taken and forwarded but not evaluated; the sender gets a
//!   partial-success warning (0 rejected, a message).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::assembler::{AdmitError, Assembler, Held};
use crate::exporter::{ForwardItem, ForwardQueue, QueueError};
use crate::memory::CopyRoom;
use crate::metrics::Metrics;
use crate::metrics::{RefuseReason, RefusedLabels, Transport, TransportLabels};
use crate::otlp::{walk_into, LazyExportRequest, Rejections, WalkLimits};

/// How long senders are asked to wait before retrying an overload refusal.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long the traces of a request refused with [`RETRY_AFTER`] wait for
/// its retry before they may complete: twice the delay asked for, as SDKs
/// add jitter and a retry may itself be refused once (which holds again).
pub const RETRY_HOLD: Duration = Duration::from_secs(2);

/// A request taken, possibly in part (OTLP partial success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub accepted_spans: usize,
    pub rejected_spans: usize,
    /// Why spans were rejected; empty when none were.
    pub message: String,
}

/// A request refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Not OTLP: the sender must not retry it.
    #[error("{0}")]
    Invalid(String),
    /// Buffer full or above its memory limit, forwarding queue full: the
    /// sender should retry.
    #[error("{message}")]
    Overloaded {
        reason: RefuseReason,
        message: String,
        retry_after: Duration,
    },
    #[error("tracecheck is shutting down")]
    ShuttingDown,
}

/// A request queued for some exporters but not answered yet. Dropped
/// unanswered — refused after some queues took it, or its sender gone
/// (the request future cancelled while a persistent queue wrote it) — it
/// counts what will be forwarded twice: the sender retries, and the queues
/// that have it (and a write in flight, which the queue's writer finishes)
/// forward it again. Answered, it is forgotten.
struct Unanswered<'a> {
    metrics: &'a Metrics,
    spans: usize,
    queued: usize,
    writing: bool,
}

impl Unanswered<'_> {
    /// Refused by the queue being written: that one does not have it.
    fn refused(&mut self) {
        self.writing = false;
    }

    /// Taken: the sender is told so, and will not send it again.
    fn answered(mut self) {
        self.queued = 0;
        self.writing = false;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let copies = self.queued + usize::from(self.writing);
        if copies > 0 {
            self.metrics
                .exporter_duplicated_spans
                .inc_by((self.spans * copies) as u64);
        }
    }
}

/// Shared by the gRPC and HTTP receivers.
pub struct Ingest {
    assembler: Arc<Assembler>,
    /// One queue per exporter: a request is taken once every one has it.
    forward: Vec<ForwardQueue>,
    metrics: Arc<Metrics>,
    closed: AtomicBool,
}

impl Ingest {
    pub fn new(
        assembler: Arc<Assembler>,
        forward: Vec<ForwardQueue>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            assembler,
            forward,
            metrics,
            closed: AtomicBool::new(false),
        }
    }

    /// From now on every request is refused as `ShuttingDown`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The process's memory account, which admission consults.
    pub fn memory(&self) -> &Arc<crate::memory::MemoryAccount> {
        self.assembler.memory()
    }

    /// Takes a request: everything or nothing, except spans refused through
    /// partial success. With the persistent forwarding queue this waits
    /// until the request is on disk, so that `Ok` may be answered.
    pub async fn ingest(
        &self,
        request: LazyExportRequest,
        transport: Transport,
        limits: &WalkLimits,
    ) -> Result<Accepted, IngestError> {
        let mut request = request;
        // Counted as long as anything keeps a slice of it: the buffer, the
        // queue, a trace being evaluated. Admission sees it.
        let memory = self.assembler.memory();
        let own = memory.track_request(&mut request.resource_spans);
        let copy_room = Arc::new(CopyRoom::new(memory));
        let mut walked = walk_into(request, limits, Some(Arc::clone(&copy_room))).map_err(|e| {
            self.metrics.refused(transport, RefuseReason::malformed, 0);
            IngestError::Invalid(format!("malformed OTLP request: {e}"))
        })?;
        let spans = walked.spans.len();
        let refuse = |reason: RefuseReason, err: IngestError| {
            self.metrics
                .refused(transport, reason, spans + walked.rejected);
            Err(err)
        };
        if self.closed.load(Ordering::Acquire) {
            return refuse(RefuseReason::shutting_down, IngestError::ShuttingDown);
        }
        // Marks of traces that lost spans here go into the buffer too.
        let mut reservation = None;
        if spans > 0 || !walked.refused_traces.is_empty() {
            let span_bytes = walked.spans.iter().map(|s| s.span.bytes.len()).sum();
            match self.assembler.admit(own, spans, span_bytes) {
                Ok(mut r) => {
                    copy_room.take_from(&mut r, span_bytes);
                    reservation = Some(r);
                }
                Err(e) => {
                    let reason = match e {
                        AdmitError::Full { .. } => RefuseReason::buffer_full,
                        AdmitError::Memory { .. } => RefuseReason::memory_limit,
                        AdmitError::TooLarge { .. } => {
                            return refuse(
                                RefuseReason::too_large,
                                IngestError::Invalid(e.to_string()),
                            )
                        }
                    };
                    self.hold_for_retry(&walked.spans, reason);
                    return refuse(
                        reason,
                        IngestError::Overloaded {
                            reason,
                            message: e.to_string(),
                            retry_after: RETRY_AFTER,
                        },
                    );
                }
            }
        }
        let overloaded = |reason: RefuseReason, e: QueueError| {
            self.hold_for_retry(&walked.spans, reason);
            refuse(
                reason,
                IngestError::Overloaded {
                    reason,
                    message: e.to_string(),
                    retry_after: RETRY_AFTER,
                },
            )
        };
        let bytes = crate::exporter::split::request_len(&walked.forward);
        let mut permits = Vec::with_capacity(self.forward.len());
        if spans > 0 {
            for q in &self.forward {
                match q.reserve(bytes) {
                    Ok(p) => permits.push(p),
                    Err(QueueError::Closed) => {
                        return refuse(RefuseReason::shutting_down, IngestError::ShuttingDown)
                    }
                    Err(e) => return overloaded(RefuseReason::exporter_queue_full, e),
                }
            }
        }
        // Queued first: if a persistent queue cannot write it, the request
        // is refused whole, before the buffer has taken any of it; and
        // persistent queues before in-memory ones, which cannot fail, so
        // that a refusal leaves it in as few queues as can be.
        permits.sort_by_key(|p| !p.is_persistent());
        let mut permits = permits.into_iter().peekable();
        let mut unanswered = Unanswered {
            metrics: &self.metrics,
            spans,
            queued: 0,
            writing: false,
        };
        while let Some(permit) = permits.next() {
            let resource_spans = if permits.peek().is_some() {
                walked.forward.clone()
            } else {
                std::mem::take(&mut walked.forward)
            };
            unanswered.writing = permit.is_persistent();
            let sent = permit.send(ForwardItem::new(resource_spans, spans)).await;
            unanswered.writing = false;
            match sent {
                Ok(()) => unanswered.queued += 1,
                Err(QueueError::Closed) => {
                    unanswered.refused();
                    return refuse(RefuseReason::shutting_down, IngestError::ShuttingDown);
                }
                Err(e) => {
                    unanswered.refused();
                    return overloaded(RefuseReason::exporter_queue_unwritable, e);
                }
            }
        }
        // No await from here on: the request is answered as it stands.
        unanswered.answered();
        if walked.rejected > 0 {
            self.count_rejected(transport, &walked.rejected_by);
        }
        let mut message = walked.rejected_message.unwrap_or_default();
        let now = Instant::now();
        if !walked.refused_traces.is_empty() {
            // Before the insert: marked after it, a trace could complete in
            // between and be judged without the mark.
            self.assembler.mark_unreadable(walked.refused_traces, now);
        }
        if spans > 0 {
            self.metrics
                .accepted_spans
                .get_or_create(&TransportLabels { transport })
                .inc_by(spans as u64);
            let outcome = self.assembler.insert(walked.spans, now);
            // Charged by the insert now.
            drop(reservation.take());
            if let (Some((reason, n)), true) = (outcome.truncated, message.is_empty()) {
                message = format!(
                    "{n} spans accepted and forwarded but not evaluated: their trace is at assembler.{reason:?}; its verdicts will be marked incomplete"
                );
            }
        }
        Ok(Accepted {
            accepted_spans: spans,
            rejected_spans: walked.rejected,
            message,
        })
    }

    /// The request is refused with "retry after [`RETRY_AFTER`]": its
    /// traces wait for the retry instead of completing without it.
    fn hold_for_retry(&self, spans: &[crate::otlp::KeyedSpan], reason: RefuseReason) {
        let now = Instant::now();
        let which = if reason == RefuseReason::memory_limit {
            Held::Buffered
        } else {
            Held::All
        };
        self.assembler.hold(
            spans.iter().map(|s| s.trace_id).collect(),
            now,
            now + RETRY_HOLD,
            which,
        );
    }

    fn count_rejected(&self, transport: Transport, by: &Rejections) {
        for (reason, n) in [
            (RefuseReason::invalid_id, by.invalid_id),
            (RefuseReason::attribute_too_deep, by.too_deep),
            (RefuseReason::too_many_attributes, by.too_many_attributes),
            (RefuseReason::attribute_too_large, by.too_large),
            (RefuseReason::invalid_utf8, by.invalid_utf8),
        ] {
            if n > 0 {
                self.metrics
                    .refused_spans
                    .get_or_create(&RefusedLabels { transport, reason })
                    .inc_by(n as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// A sender that goes away while its request is written to a
    /// persistent queue gets no answer and sends it again; the record the
    /// queue's writer finishes is forwarded too. That second copy is
    /// counted, not lost from sight; the buffer has not taken it (the
    /// retry is what gets evaluated).
    #[tokio::test]
    async fn a_request_cancelled_during_a_persistent_write_counts_its_duplicate() {
        // The writer thread may finish the write and its fsync during the
        // first poll on a loaded machine; the scenario needs the request
        // still waiting then, so it starts again until it is.
        for _ in 0..ATTEMPTS {
            if cancelled_during_the_write().await {
                return;
            }
        }
        panic!("the write was done within the first poll {ATTEMPTS} times out of {ATTEMPTS}");
    }

    const ATTEMPTS: usize = 20;

    /// Whether the request was still waiting for the write when polled
    /// once; if it was, what its cancellation left is checked.
    async fn cancelled_during_the_write() -> bool {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::unregistered());
        let workers = Arc::new(crate::health::Workers::new(Arc::clone(&metrics)));
        let config: crate::exporter::config::OtlpExporterConfig =
            serde_yaml_ng::from_str(&format!(
                "endpoint: http://127.0.0.1:9\ndrain_timeout: 10ms\nqueue: {{ directory: {} }}\n",
                dir.path().display()
            ))
            .expect("exporter config");
        let (disk, exporter) =
            crate::exporter::Exporter::start("otlp", config, Arc::clone(&metrics), &workers)
                .expect("exporter starts");
        let assembler = Arc::new(Assembler::new(Default::default(), Arc::clone(&metrics)));
        let ingest = Ingest::new(Arc::clone(&assembler), vec![disk], Arc::clone(&metrics));
        let request = crate::bench::traffic::TrafficGenerator::new(
            Default::default(),
            crate::bench::traffic::Rng::new(3),
        )
        .next_batch(10)
        .request;
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let lazy = LazyExportRequest::decode(bytes::Bytes::from(request.encode_to_vec()))
            .expect("encoded by prost");
        // Polled once: it gets as far as waiting for the write (an fsync
        // away), then its sender is gone.
        let limits = WalkLimits::default();
        let mut taking = Box::pin(ingest.ingest(lazy, Transport::grpc, &limits));
        use std::future::Future as _;
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(taking.as_mut().poll(cx))).await;
        let waiting = first.is_pending();
        drop(taking);
        if waiting {
            assert_eq!(metrics.exporter_duplicated_spans.get(), spans as u64);
            assert_eq!(assembler.len().1, 0, "not buffered");
        } else {
            // Answered: written, then buffered, and nothing to count twice.
            assert!(matches!(first, std::task::Poll::Ready(Ok(_))), "{first:?}");
            assert_eq!(metrics.exporter_duplicated_spans.get(), 0);
            assert_eq!(assembler.len().1, spans, "buffered once answered");
        }
        exporter.shutdown().await;
        waiting
    }
}
