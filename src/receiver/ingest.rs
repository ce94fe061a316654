//! The one path every export request takes, whatever its transport: walk it,
//! admit it, buffer its spans and queue it for forwarding.
//!
//! Admission happens before anything is taken, so a refused request leaves
//! no trace in the buffer or the queue and the sender's retry cannot create
//! duplicates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::assembler::Assembler;
use crate::exporter::{ForwardItem, ForwardQueue, QueueError};
use crate::otlp::{walk, LazyExportRequest};
use crate::results::metrics::Metrics;
use crate::results::metrics::{RefuseReason, Transport, TransportLabels};

/// How long senders are asked to wait before retrying an overload refusal.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

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
    /// Buffer or forwarding queue full: the sender should retry.
    #[error("{message}")]
    Overloaded {
        reason: RefuseReason,
        message: String,
        retry_after: Duration,
    },
    #[error("tracecheck is shutting down")]
    ShuttingDown,
}

/// Shared by the gRPC and HTTP receivers.
pub struct Ingest {
    assembler: Arc<Assembler>,
    forward: Option<ForwardQueue>,
    metrics: Arc<Metrics>,
    closed: AtomicBool,
}

impl Ingest {
    pub fn new(
        assembler: Arc<Assembler>,
        forward: Option<ForwardQueue>,
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

    pub fn ingest(
        &self,
        request: LazyExportRequest,
        transport: Transport,
    ) -> Result<Accepted, IngestError> {
        let walked = walk(request).map_err(|e| {
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
        if spans > 0 {
            if let Err(full) = self.assembler.admit() {
                return refuse(
                    RefuseReason::buffer_full,
                    IngestError::Overloaded {
                        reason: RefuseReason::buffer_full,
                        message: full.to_string(),
                        retry_after: RETRY_AFTER,
                    },
                );
            }
        }
        let permit = match (&self.forward, spans) {
            (Some(q), 1..) => match q.reserve() {
                Ok(p) => Some(p),
                Err(QueueError::Full) => {
                    return refuse(
                        RefuseReason::exporter_queue_full,
                        IngestError::Overloaded {
                            reason: RefuseReason::exporter_queue_full,
                            message: QueueError::Full.to_string(),
                            retry_after: RETRY_AFTER,
                        },
                    )
                }
                Err(QueueError::Closed) => {
                    return refuse(RefuseReason::shutting_down, IngestError::ShuttingDown)
                }
            },
            _ => None,
        };
        if walked.rejected > 0 {
            self.metrics
                .refused_spans
                .get_or_create(&crate::results::metrics::RefusedLabels {
                    transport,
                    reason: RefuseReason::invalid_id,
                })
                .inc_by(walked.rejected as u64);
        }
        if spans > 0 {
            self.metrics
                .accepted_spans
                .get_or_create(&TransportLabels { transport })
                .inc_by(spans as u64);
            self.assembler.insert(walked.spans, Instant::now());
        }
        if let Some(permit) = permit {
            permit.send(ForwardItem {
                resource_spans: walked.forward,
                spans,
            });
        }
        Ok(Accepted {
            accepted_spans: spans,
            rejected_spans: walked.rejected,
            message: walked.rejected_message.unwrap_or_default(),
        })
    }
}
