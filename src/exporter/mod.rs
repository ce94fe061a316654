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

pub mod client;
pub mod config;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::{Client, ClientError, Payload};
use self::config::OtlpExporterConfig;
use crate::results::metrics::{ExporterLabels, Metrics};

/// One accepted export request, on its way out.
#[derive(Debug, Clone)]
pub struct ForwardItem {
    /// Encoded `ResourceSpans`, as received (or rebuilt without refused spans).
    pub resource_spans: Vec<Bytes>,
    pub spans: usize,
}

impl ForwardItem {
    fn encoded_len(&self) -> usize {
        self.resource_spans.iter().map(|b| b.len() + 5).sum()
    }
}

/// Why a request cannot be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("forwarding queue full; retry shortly")]
    Full,
    #[error("exporter stopped")]
    Closed,
}

/// The receivers' end of the forwarding queue.
#[derive(Clone)]
pub struct ForwardQueue {
    tx: mpsc::Sender<ForwardItem>,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
    pending_spans: Arc<AtomicU64>,
}

/// A reserved place in the queue: sending into it cannot fail.
pub struct ForwardPermit<'a> {
    permit: mpsc::Permit<'a, ForwardItem>,
    queue: &'a ForwardQueue,
}

impl ForwardQueue {
    pub fn reserve(&self) -> Result<ForwardPermit<'_>, QueueError> {
        match self.tx.try_reserve() {
            Ok(permit) => Ok(ForwardPermit {
                permit,
                queue: self,
            }),
            Err(mpsc::error::TrySendError::Full(())) => Err(QueueError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => Err(QueueError::Closed),
        }
    }
}

impl ForwardPermit<'_> {
    pub fn send(self, item: ForwardItem) {
        // Counted from here, so that a drain timeout also reports what was
        // still waiting in the queue.
        self.queue
            .pending_spans
            .fetch_add(item.spans as u64, Ordering::Relaxed);
        self.queue
            .metrics
            .exporter_queue_size
            .get_or_create(&self.queue.labels)
            .inc();
        self.permit.send(item);
    }
}

/// The running exporter task.
pub struct Exporter {
    drain: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
    pending_spans: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
}

impl Exporter {
    /// Starts forwarding; `name` is the `exporter` metric label.
    pub fn start(
        name: &str,
        config: OtlpExporterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(ForwardQueue, Exporter), ClientError> {
        let client = Arc::new(Client::new(&config)?);
        let labels = ExporterLabels {
            exporter: name.to_owned(),
        };
        metrics
            .exporter_queue_capacity
            .get_or_create(&labels)
            .set(config.queue_size as i64);
        let (tx, rx) = mpsc::channel(config.queue_size);
        let drain = CancellationToken::new();
        let pending_spans = Arc::new(AtomicU64::new(0));
        let runner = Runner {
            client,
            metrics: Arc::clone(&metrics),
            labels: labels.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            pending_spans: Arc::clone(&pending_spans),
            config: config.clone(),
        };
        let task = tokio::spawn(runner.run(rx, drain.clone()));
        Ok((
            ForwardQueue {
                tx,
                metrics: Arc::clone(&metrics),
                labels: labels.clone(),
                pending_spans: Arc::clone(&pending_spans),
            },
            Exporter {
                drain,
                task,
                drain_timeout: config.drain_timeout,
                pending_spans,
                metrics,
                labels,
            },
        ))
    }

    /// Stops taking requests and sends what is queued, within the drain
    /// deadline. Returns the spans that could not be delivered in time.
    pub async fn shutdown(self) -> u64 {
        self.drain.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(self.drain_timeout, self.task)
            .await
            .is_err()
        {
            abort.abort();
            let lost = self.pending_spans.load(Ordering::Relaxed);
            self.metrics
                .exporter_failed_spans
                .get_or_create(&self.labels)
                .inc_by(lost);
            tracing::error!(
                spans = lost,
                "Forwarding queue not drained before the deadline; spans not delivered."
            );
            return lost;
        }
        0
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
    config: OtlpExporterConfig,
}

#[derive(Default)]
struct Batch {
    resource_spans: Vec<Bytes>,
    spans: usize,
    bytes: usize,
}

impl Runner {
    async fn run(self, mut rx: mpsc::Receiver<ForwardItem>, drain: CancellationToken) {
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
                    rx.close();
                }
                _ = timer => {
                    self.flush(&mut batch, &mut sends).await;
                    deadline = None;
                }
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    self.metrics.exporter_queue_size.get_or_create(&self.labels).dec();
                    if batch.spans > 0 && batch.bytes + item.encoded_len() > self.config.batch.max_bytes {
                        self.flush(&mut batch, &mut sends).await;
                    }
                    batch.spans += item.spans;
                    batch.bytes += item.encoded_len();
                    batch.resource_spans.extend(item.resource_spans);
                    if batch.spans >= self.config.batch.max_spans || batch.bytes >= self.config.batch.max_bytes {
                        self.flush(&mut batch, &mut sends).await;
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + self.config.batch.timeout);
                    }
                }
                Some(_) = sends.join_next(), if !sends.is_empty() => {}
            }
        }
        self.flush(&mut batch, &mut sends).await;
        while sends.join_next().await.is_some() {}
    }

    /// Hands the batch to a send task once an in-flight slot is free.
    async fn flush(&self, batch: &mut Batch, sends: &mut JoinSet<()>) {
        if batch.spans == 0 {
            return;
        }
        let batch = std::mem::take(batch);
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return;
        };
        let payload = self.client.payload(batch.resource_spans);
        let ctx = SendCtx {
            client: Arc::clone(&self.client),
            metrics: Arc::clone(&self.metrics),
            labels: self.labels.clone(),
            pending_spans: Arc::clone(&self.pending_spans),
            retry: self.config.retry.clone(),
        };
        sends.spawn(async move {
            ctx.send(payload, batch.spans as u64).await;
            drop(permit);
        });
    }
}

struct SendCtx {
    client: Arc<Client>,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
    pending_spans: Arc<AtomicU64>,
    retry: config::RetryConfig,
}

impl SendCtx {
    async fn send(self, payload: Payload, spans: u64) {
        let started = Instant::now();
        let mut backoff = self.retry.initial_interval;
        let (sent, failed) = loop {
            match self.client.export(&payload).await {
                Ok(done) => {
                    let rejected = done.rejected_spans.min(spans);
                    if rejected > 0 {
                        tracing::warn!(
                            rejected,
                            message = %done.message,
                            "Downstream refused part of a batch (partial success); not retrying those spans."
                        );
                    }
                    break (spans - rejected, rejected);
                }
                Err(e) => {
                    let wait = e
                        .retry_after
                        .unwrap_or(backoff)
                        .min(self.retry.max_interval);
                    let wait = jitter(wait);
                    if !e.retryable || started.elapsed() + wait > self.retry.max_elapsed_time {
                        tracing::error!(
                            spans,
                            error = %e,
                            retryable = e.retryable,
                            "Export failed; batch dropped."
                        );
                        break (0, spans);
                    }
                    tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "Export failed; retrying.");
                    self.metrics
                        .exporter_retries
                        .get_or_create(&self.labels)
                        .inc();
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.retry.max_interval);
                }
            }
        };
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
        self.pending_spans.fetch_sub(spans, Ordering::Relaxed);
    }
}

/// ±20%, so that many senders retrying do not march in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}
