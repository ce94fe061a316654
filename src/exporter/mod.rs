//! The exporter: forwards every received span, unchanged, to a downstream
//! OTLP endpoint (Jaeger, a Collector, any OTLP backend).
//!
//! Receivers hand over each accepted request as it arrives — not after its
//! trace is assembled — so the downstream sees spans as soon as it would
//! without tracecheck. Requests wait in a bounded queue; a receiver reserves
//! a place *before* it accepts a request, so a full queue becomes a
//! retryable refusal to the sender instead of a drop. A batcher merges
//! requests (by span count, bytes and time) and sends at most
//! `max_in_flight` batches at once, each retried with exponential backoff on
//! the answers the OTLP spec calls retryable. While all sends are busy the
//! batcher stops reading the queue: that is the back-pressure.
//!
//! No message is larger than the downstream takes (`max_request_bytes`):
//! a larger request is cut ([`split`]), and a message refused as too large
//! is sent again in halves. A batch refused as invalid is bisected, so
//! that only the spans the downstream refuses are dropped, each counted in
//! `tracecheck_exporter_failed_spans_total` and logged with its answer.
//!
//! The queue is in memory (`queue_size` requests, `queue_max_mib` of them)
//! unless `exporters.otlp.queue.directory` is set: then requests are
//! written to disk before their senders are answered ([`disk`]), and a
//! record leaves the disk only once its batch was delivered.
//!
//! An exporter with `traces: failing` is fed by the evaluator instead of
//! the receivers, with the traces the models failed ([`by_verdict`]).

pub mod by_verdict;
pub mod client;
pub mod config;
pub mod disk;
pub mod split;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::{Client, ClientError, Refused};
use self::config::OtlpExporterConfig;
use crate::metrics::{ExporterLabels, Metrics};

/// Batches up to this many bytes are encoded on the sending task: handing
/// them to the blocking pool costs more than encoding them.
const ENCODE_INLINE: usize = 64 * 1024;

/// One accepted export request, on its way out.
#[derive(Debug, Clone)]
pub struct ForwardItem {
    /// Encoded `ResourceSpans`, as received (or rebuilt without refused spans).
    pub resource_spans: Vec<Bytes>,
    pub spans: usize,
    /// Set when the item was read back from the persistent queue: what to
    /// acknowledge once its batch is done.
    pub receipt: Option<disk::Receipt>,
}

impl ForwardItem {
    pub fn new(resource_spans: Vec<Bytes>, spans: usize) -> Self {
        Self {
            resource_spans,
            spans,
            receipt: None,
        }
    }
}

/// Why a request cannot be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("forwarding queue full; retry shortly")]
    Full,
    #[error("forwarding queue cannot be written (see the daemon's log); retry shortly")]
    Unwritable,
    #[error("exporter stopped")]
    Closed,
}

/// The receivers' end of the forwarding queue.
#[derive(Clone)]
pub struct ForwardQueue {
    kind: QueueKind,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
    pending_spans: Arc<AtomicU64>,
}

#[derive(Clone)]
enum QueueKind {
    Memory(mpsc::Sender<Queued>, Arc<QueueBytes>),
    Disk(disk::DiskQueue),
}

/// A request in the in-memory queue, with the bytes it holds there.
struct Queued {
    item: ForwardItem,
    _held: Held,
}

/// The in-memory queue's bytes (`queue_max_mib`): counted from reservation
/// until the batcher takes the request (batches in flight are bounded by
/// `max_in_flight` × `max_request_bytes` apart from this).
struct QueueBytes {
    used: AtomicU64,
    max: u64,
    /// `tracecheck_exporter_queue_bytes{exporter}`, looked up once: it is
    /// set twice per request.
    gauge: Gauge,
}

impl QueueBytes {
    /// Takes `n` bytes, unless that would pass the bound; a request alone
    /// in an empty queue is always taken, however large.
    fn take(self: &Arc<Self>, n: u64) -> Option<Held> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used > 0 && used + n > self.max {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.gauge();
        Some(Held {
            bytes: Arc::clone(self),
            n,
        })
    }

    fn gauge(&self) {
        self.gauge.set(self.used.load(Ordering::Acquire) as i64);
    }
}

/// Bytes of the in-memory queue held by one request; given back on drop.
struct Held {
    bytes: Arc<QueueBytes>,
    n: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.bytes.used.fetch_sub(self.n, Ordering::AcqRel);
        self.bytes.gauge();
    }
}

/// A reserved place in the queue.
pub struct ForwardPermit<'a> {
    kind: PermitKind<'a>,
    queue: &'a ForwardQueue,
}

enum PermitKind<'a> {
    Memory(mpsc::Permit<'a, Queued>, Held),
    Disk(disk::Reservation),
}

impl ForwardQueue {
    /// Reserves room for a request of `bytes` encoded bytes
    /// ([`split::request_len`] of what will be queued).
    pub fn reserve(&self, bytes: usize) -> Result<ForwardPermit<'_>, QueueError> {
        let kind = match &self.kind {
            QueueKind::Memory(tx, queued) => {
                let held = queued.take(bytes as u64).ok_or(QueueError::Full)?;
                match tx.try_reserve() {
                    Ok(permit) => PermitKind::Memory(permit, held),
                    Err(mpsc::error::TrySendError::Full(())) => return Err(QueueError::Full),
                    Err(mpsc::error::TrySendError::Closed(())) => return Err(QueueError::Closed),
                }
            }
            QueueKind::Disk(q) => PermitKind::Disk(q.reserve(bytes).ok_or(QueueError::Full)?),
        };
        Ok(ForwardPermit { kind, queue: self })
    }
}

impl ForwardPermit<'_> {
    /// Whether it is room in a persistent queue, whose write can fail.
    pub fn is_persistent(&self) -> bool {
        matches!(self.kind, PermitKind::Disk(_))
    }

    /// Queues the request. In memory this cannot fail; on disk it resolves
    /// once the request is written as the fsync policy promises, and only
    /// then may the sender be told it was taken.
    pub async fn send(self, item: ForwardItem) -> Result<(), QueueError> {
        let spans = item.spans as u64;
        match self.kind {
            PermitKind::Memory(permit, held) => {
                self.queue
                    .metrics
                    .exporter_queue_size
                    .get_or_create(&self.queue.labels)
                    .inc();
                permit.send(Queued { item, _held: held });
            }
            PermitKind::Disk(reservation) => {
                if let Err(e) = reservation.append(&item).await {
                    tracing::error!(error = %e, "Cannot write to the forwarding queue; refusing the request (retryable).");
                    return Err(QueueError::Unwritable);
                }
            }
        }
        // Counted from here, so that a drain timeout also reports what was
        // still waiting in the queue.
        self.queue.pending_spans.fetch_add(spans, Ordering::Relaxed);
        Ok(())
    }
}

/// The running exporter task.
pub struct Exporter {
    drain: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
    pending_spans: Arc<AtomicU64>,
    disk: Option<disk::DiskQueue>,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
}

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Queue(#[from] disk::DiskQueueError),
}

impl Exporter {
    /// Starts forwarding; `name` is the `exporter` metric label.
    pub fn start(
        name: &str,
        config: OtlpExporterConfig,
        metrics: Arc<Metrics>,
        workers: &Arc<crate::health::Workers>,
    ) -> Result<(ForwardQueue, Exporter), ExporterError> {
        let client = Arc::new(Client::new(&config, &metrics)?);
        let labels = ExporterLabels {
            exporter: name.to_owned(),
        };
        let pending_spans = Arc::new(AtomicU64::new(0));
        let (kind, inbox, disk) = match &config.queue {
            None => {
                metrics
                    .exporter_queue_capacity
                    .get_or_create(&labels)
                    .set(config.queue_size as i64);
                let max = config.queue_max_mib.saturating_mul(1 << 20);
                metrics
                    .exporter_queue_max_bytes
                    .get_or_create(&labels)
                    .set(max.min(i64::MAX as u64) as i64);
                let bytes = Arc::new(QueueBytes {
                    used: AtomicU64::new(0),
                    max,
                    gauge: metrics.exporter_queue_bytes.get_or_create(&labels).clone(),
                });
                let (tx, rx) = mpsc::channel(config.queue_size);
                (QueueKind::Memory(tx, bytes), Inbox::Memory(rx), None)
            }
            Some(dq) => {
                let (q, reader) = disk::DiskQueue::open(
                    dq,
                    Arc::clone(&metrics),
                    labels.clone(),
                    Some(workers.alive_named("queue_writer", name)),
                )?;
                pending_spans.store(reader.backlog_spans(), Ordering::Relaxed);
                (QueueKind::Disk(q.clone()), Inbox::Disk(reader), Some(q))
            }
        };
        let drain = CancellationToken::new();
        let runner = Runner {
            client,
            metrics: Arc::clone(&metrics),
            labels: labels.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            pending_spans: Arc::clone(&pending_spans),
            give_up_after: config.retry.give_up_after(disk.is_some()),
            disk: disk.clone(),
            config: config.clone(),
        };
        let task =
            tokio::spawn(runner.run(inbox, drain.clone(), workers.alive_named("exporter", name)));
        Ok((
            ForwardQueue {
                kind,
                metrics: Arc::clone(&metrics),
                labels: labels.clone(),
                pending_spans: Arc::clone(&pending_spans),
            },
            Exporter {
                drain,
                task,
                drain_timeout: config.drain_timeout,
                pending_spans,
                disk,
                metrics,
                labels,
            },
        ))
    }

    /// Stops taking requests and sends what is queued, within the drain
    /// deadline. Returns the spans that could not be delivered in time and
    /// are lost: with the persistent queue, none are (they stay on disk
    /// for the next start).
    pub async fn shutdown(self) -> u64 {
        self.drain.cancel();
        if let Some(q) = &self.disk {
            q.close().await;
        }
        let abort = self.task.abort_handle();
        let why = match tokio::time::timeout(self.drain_timeout, self.task).await {
            Ok(Ok(())) => return 0,
            // Already counted (internal_panics, /healthz): what it left
            // pending is lost all the same.
            Ok(Err(_)) => "the forwarding worker had stopped",
            Err(_) => {
                abort.abort();
                "not drained before the deadline"
            }
        };
        let pending = self.pending_spans.load(Ordering::Relaxed);
        if self.disk.is_some() {
            tracing::warn!(
                spans = pending,
                "Forwarding queue {why}; the spans stay in the queue directory and are sent after the next start."
            );
            return 0;
        }
        self.metrics
            .exporter_failed_spans
            .get_or_create(&self.labels)
            .inc_by(pending);
        tracing::error!(
            spans = pending,
            "Forwarding queue {why}; spans not delivered."
        );
        pending
    }
}

/// Where the batcher takes requests from.
enum Inbox {
    Memory(mpsc::Receiver<Queued>),
    Disk(disk::Reader),
}

impl Inbox {
    async fn recv(&mut self) -> Option<ForwardItem> {
        match self {
            // Its bytes leave the queue's count here, with the request.
            Inbox::Memory(rx) => rx.recv().await.map(|q| q.item),
            Inbox::Disk(reader) => reader.next().await.map(|(mut item, receipt)| {
                item.receipt = Some(receipt);
                item
            }),
        }
    }

    /// No more requests will be queued: read what is there, then end.
    /// (The persistent queue ends when [`disk::DiskQueue::close`] ran.)
    fn close(&mut self) {
        if let Inbox::Memory(rx) = self {
            rx.close();
        }
    }
}

struct Runner {
    client: Arc<Client>,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
    in_flight: Arc<Semaphore>,
    /// Spans queued or in a batch, not yet sent or given up: what a drain
    /// timeout loses.
    pending_spans: Arc<AtomicU64>,
    give_up_after: Option<Duration>,
    disk: Option<disk::DiskQueue>,
    config: OtlpExporterConfig,
}

#[derive(Default)]
struct Batch {
    resource_spans: Vec<Bytes>,
    acks: Vec<Ack>,
    spans: usize,
    bytes: usize,
}

/// What to acknowledge to the persistent queue once a batch is done.
#[derive(Debug, Clone)]
enum Ack {
    /// A whole record.
    Whole(disk::Receipt),
    /// A record cut into parts that went into several batches: it leaves
    /// the queue when the last of them is done.
    Part(Arc<SharedReceipt>),
}

#[derive(Debug)]
struct SharedReceipt {
    receipt: disk::Receipt,
    parts_left: AtomicU64,
}

impl Ack {
    /// The record to acknowledge now, if this was its last part.
    fn done(self) -> Option<disk::Receipt> {
        match self {
            Ack::Whole(r) => Some(r),
            Ack::Part(shared) => {
                (shared.parts_left.fetch_sub(1, Ordering::AcqRel) == 1).then_some(shared.receipt)
            }
        }
    }
}

/// Part of a received request, as the batcher packs it.
struct Chunk {
    resource_spans: Vec<Bytes>,
    spans: usize,
    /// Its size in a request ([`split::request_len`]).
    bytes: usize,
    ack: Option<Ack>,
}

/// Extra sends a batch of `spans` spans may cost in cutting what the
/// downstream refused: isolating one bad span among n costs ~2·log2(n)
/// sends, so this finds about four; past it, what is still refused is
/// dropped and counted. It also bounds halving on "too large" answers
/// (from a downstream whose limit is below one span, say).
fn cut_budget(spans: u64) -> u32 {
    let log2 = u64::BITS - spans.max(1).leading_zeros();
    8 * (log2 + 1)
}

impl Runner {
    async fn run(self, mut inbox: Inbox, drain: CancellationToken, _alive: crate::health::Alive) {
        let mut batch = Batch::default();
        let mut deadline: Option<Instant> = None;
        let mut sends = JoinSet::new();
        let mut draining = false;
        loop {
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    inbox.close();
                }
                _ = timer => {
                    self.flush(&mut batch, &mut sends).await;
                    deadline = None;
                }
                item = inbox.recv() => {
                    let Some(item) = item else { break };
                    if matches!(inbox, Inbox::Memory(_)) {
                        self.metrics.exporter_queue_size.get_or_create(&self.labels).dec();
                    }
                    let max_bytes = self.max_batch_bytes();
                    let max_spans = self.config.batch.max_spans;
                    for chunk in self.chunks(item) {
                        if batch.spans > 0
                            && (batch.bytes + chunk.bytes > max_bytes
                                || batch.spans + chunk.spans > max_spans)
                        {
                            self.flush(&mut batch, &mut sends).await;
                        }
                        batch.spans += chunk.spans;
                        batch.bytes += chunk.bytes;
                        batch.resource_spans.extend(chunk.resource_spans);
                        batch.acks.extend(chunk.ack);
                        if batch.spans >= self.config.batch.max_spans || batch.bytes >= max_bytes {
                            self.flush(&mut batch, &mut sends).await;
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(Instant::now() + self.config.batch.timeout);
                        }
                    }
                }
                Some(_) = sends.join_next(), if !sends.is_empty() => {}
            }
        }
        self.flush(&mut batch, &mut sends).await;
        while sends.join_next().await.is_some() {}
    }

    /// A batch's bound: `batch.max_bytes`, and never over what the
    /// downstream takes.
    fn max_batch_bytes(&self) -> usize {
        self.config
            .batch
            .max_bytes
            .min(self.config.max_request_bytes)
            .max(1)
    }

    /// `item` as the batcher packs it: whole if it fits in a batch, else
    /// each `ResourceSpans` on its own, those over `max_request_bytes` or
    /// `batch.max_spans` cut to them ([`split`]).
    fn chunks(&self, item: ForwardItem) -> Vec<Chunk> {
        let bytes = split::request_len(&item.resource_spans);
        let max_spans = self.config.batch.max_spans.max(1);
        let parts = if bytes <= self.max_batch_bytes() && item.spans <= max_spans {
            None
        } else {
            self.cut(&item.resource_spans, max_spans)
                .map_err(|e| {
                    // The receivers checked every field: this is a bug. Send
                    // it as it came; the downstream's answer is counted.
                    tracing::error!(error = %e, "Cannot cut a received request to the exporter's max_request_bytes; sending it whole.");
                })
                .ok()
        };
        let Some(parts) = parts else {
            return vec![Chunk {
                resource_spans: item.resource_spans,
                spans: item.spans,
                bytes,
                ack: item.receipt.map(Ack::Whole),
            }];
        };
        let shared = item.receipt.map(|receipt| {
            Arc::new(SharedReceipt {
                receipt,
                parts_left: AtomicU64::new(parts.len() as u64),
            })
        });
        parts
            .into_iter()
            .map(|p| Chunk {
                bytes: split::request_len([&p.resource_spans]),
                resource_spans: vec![p.resource_spans],
                spans: p.spans,
                ack: shared.clone().map(Ack::Part),
            })
            .collect()
    }

    /// Each of `resource_spans` as a part, those over `max_request_bytes`
    /// or `max_spans` cut.
    fn cut(
        &self,
        resource_spans: &[Bytes],
        max_spans: usize,
    ) -> Result<Vec<split::Part>, prost::DecodeError> {
        let limit = self.config.max_request_bytes;
        let mut parts = Vec::new();
        for rs in resource_spans {
            match split::count_spans(rs)? {
                spans if spans <= max_spans && split::request_len([rs]) <= limit => {
                    parts.push(split::Part {
                        resource_spans: rs.clone(),
                        spans,
                    })
                }
                _ => parts.extend(split::split(rs, limit, max_spans)?),
            }
        }
        Ok(parts)
    }

    /// Hands the batch to a send task once an in-flight slot is free.
    async fn flush(&self, batch: &mut Batch, sends: &mut JoinSet<()>) {
        if batch.spans == 0 && batch.acks.is_empty() {
            return;
        }
        let batch = std::mem::take(batch);
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return;
        };
        let ctx = SendCtx {
            client: Arc::clone(&self.client),
            metrics: Arc::clone(&self.metrics),
            labels: self.labels.clone(),
            retry: self.config.retry.clone(),
            give_up_after: self.give_up_after,
        };
        let spans = batch.spans as u64;
        let metrics = Arc::clone(&self.metrics);
        let labels = self.labels.clone();
        let pending = Arc::clone(&self.pending_spans);
        let disk = self.disk.clone();
        sends.spawn(async move {
            // On a task of its own, so that a panic while sending (a bug)
            // is seen here: the batch is counted as failed, never lost
            // silently. Aborted with this task at the drain deadline.
            let sending = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                ctx.send(batch.resource_spans, spans),
            ));
            if let Err(e) = sending.await {
                if e.is_panic() {
                    metrics
                        .internal_panics
                        .get_or_create(&crate::metrics::PanicLabels { stage: "exporter" })
                        .inc();
                    metrics
                        .exporter_failed_spans
                        .get_or_create(&labels)
                        .inc_by(spans);
                    tracing::error!(spans, "Sending a batch panicked (a bug; please report it); its spans are counted as failed.");
                }
            }
            leave_queue(disk.as_ref(), batch.acks);
            pending.fetch_sub(spans, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// A batch delivered or refused for good (or lost to a bug, counted):
/// either way it leaves the queue. With the persistent queue that is a
/// 48-byte progress record written to the page cache and now and then a
/// delivered segment deleted: done here rather than on the blocking pool,
/// where a shutdown could drop it and have the batch sent again.
fn leave_queue(disk: Option<&disk::DiskQueue>, acks: Vec<Ack>) {
    if let Some(q) = disk {
        let done: Vec<disk::Receipt> = acks.into_iter().filter_map(Ack::done).collect();
        q.ack(&done);
    }
}

struct SendCtx {
    client: Arc<Client>,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
    retry: config::RetryConfig,
    give_up_after: Option<Duration>,
}

impl SendCtx {
    /// Delivers a batch and counts what became of its spans; the caller
    /// then takes it off the queue ([`leave_queue`]).
    async fn send(self, resource_spans: Vec<Bytes>, spans: u64) {
        let mut budget = cut_budget(spans);
        let (sent, failed) = self
            .deliver(resource_spans, spans, Instant::now(), &mut budget)
            .await;
        if sent > 0 {
            self.metrics
                .exporter_sent_spans
                .get_or_create(&self.labels)
                .inc_by(sent);
        }
        if failed > 0 {
            self.metrics
                .exporter_failed_spans
                .get_or_create(&self.labels)
                .inc_by(failed);
        }
    }

    /// The batch encoded and compressed, off the async runtime's workers
    /// when it is large enough for that to matter (gzip of a 4 MiB batch
    /// takes milliseconds, which every other request on the worker would
    /// wait for).
    async fn payload(&self, resource_spans: &[Bytes]) -> client::Payload {
        let encoding = self.client.encoding();
        let bytes: usize = resource_spans.iter().map(Bytes::len).sum();
        if bytes <= ENCODE_INLINE {
            return encoding.payload(resource_spans.to_vec());
        }
        let batch = resource_spans.to_vec();
        match tokio::task::spawn_blocking(move || encoding.payload(batch)).await {
            Ok(payload) => payload,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: this task is about to end too.
            Err(_) => encoding.payload(resource_spans.to_vec()),
        }
    }

    /// Sends until delivered or refused for good: (sent, refused) spans. A
    /// message over the downstream's size limit is sent again in halves; so
    /// is one refused as invalid, while `budget` lasts, so that only the
    /// spans the downstream refuses on their own are dropped.
    fn deliver<'a>(
        &'a self,
        resource_spans: Vec<Bytes>,
        spans: u64,
        started: Instant,
        budget: &'a mut u32,
    ) -> Pin<Box<dyn Future<Output = (u64, u64)> + Send + 'a>> {
        Box::pin(async move {
            if spans == 0 {
                return (0, 0);
            }
            let payload = self.payload(&resource_spans).await;
            let mut backoff = self.retry.initial_interval;
            loop {
                let e = match self.client.export(&payload).await {
                    Ok(done) => {
                        let rejected = done.rejected_spans.min(spans);
                        if rejected > 0 {
                            tracing::warn!(
                                rejected,
                                message = %done.message,
                                "Downstream refused part of a batch (partial success); not retrying those spans."
                            );
                        }
                        return (spans - rejected, rejected);
                    }
                    Err(e) => e,
                };
                let cut = match e.refused {
                    Refused::TooLarge | Refused::BadData => *budget >= 2,
                    Refused::Other => false,
                };
                if cut {
                    if let Some((left, right)) = halves(&resource_spans) {
                        *budget -= 2;
                        tracing::debug!(spans, error = %e, "Downstream refused a batch; sending it in halves.");
                        let (ls, lf) = self
                            .deliver(left.resource_spans, left.spans, started, budget)
                            .await;
                        let (rs, rf) = self
                            .deliver(right.resource_spans, right.spans, started, budget)
                            .await;
                        return (ls + rs, lf + rf);
                    }
                }
                let wait = e
                    .retry_after
                    .unwrap_or(backoff)
                    .min(self.retry.max_interval);
                let wait = jitter(wait);
                let out_of_time = self
                    .give_up_after
                    .is_some_and(|limit| started.elapsed() + wait > limit);
                if !e.retryable || out_of_time {
                    tracing::error!(
                        spans,
                        error = %e,
                        retryable = e.retryable,
                        "Export failed; spans dropped."
                    );
                    return (0, spans);
                }
                tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "Export failed; retrying.");
                self.metrics
                    .exporter_retries
                    .get_or_create(&self.labels)
                    .inc();
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(self.retry.max_interval);
            }
        })
    }
}

/// Spans to send apart from others, after a refusal.
struct Side {
    resource_spans: Vec<Bytes>,
    spans: u64,
}

/// `resource_spans` in two halves of about half the spans each; `None` for
/// a single span, or if they cannot be read (the receivers checked them:
/// not expected).
fn halves(resource_spans: &[Bytes]) -> Option<(Side, Side)> {
    let parts: Vec<split::Part> = resource_spans
        .iter()
        .map(|rs| {
            split::count_spans(rs).map(|spans| split::Part {
                resource_spans: rs.clone(),
                spans,
            })
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let (left, right) = split::halve(parts).ok()??;
    let side = |v: Vec<split::Part>| Side {
        spans: v.iter().map(|p| p.spans as u64).sum(),
        resource_spans: v.into_iter().map(|p| p.resource_spans).collect(),
    };
    Some((side(left), side(right)))
}

/// ±20%, so that many senders retrying do not march in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}
