//! Waiting for a test's trace: the daemon-side tap that keeps the completed
//! traces a runner asked for ([`TraceWaiters`]), and the runner's view of
//! where traces come from ([`TraceSource`]: this process, or a daemon's
//! `GET /api/v1/traces/{id}?wait=…`).
//!
//! A trace is "complete" when the assembler says so (idle for its
//! `idle_timeout`); spans that arrive after that (an async worker) come as
//! further completions of the same trace, so a runner that still misses a
//! span can wait for the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::assembler::{Assembler, CompletedTrace, TraceConsumer};
use crate::ids::TraceId;
use crate::otlp::{json as otlp_json, to_resource_spans, RawSpan};

/// Traces watched at once; beyond it new watches are refused (the oldest
/// expired ones are dropped first).
const MAX_SLOTS: usize = 4096;
/// Bytes of encoded spans kept for watched traces, all together.
const MAX_BYTES: usize = 64 << 20;
/// How long a watched trace is kept after the last wait on it, so that the
/// runner's next request (late spans, the trace link) still finds it.
pub const LINGER: Duration = Duration::from_secs(600);

/// Too many traces are being waited for.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many traces are being waited for ({MAX_SLOTS}); retry shortly")]
pub struct WaitersFull;

struct Slot {
    spans: Vec<RawSpan>,
    bytes: usize,
    /// Spans refused because [`MAX_BYTES`] was reached.
    truncated: bool,
    /// Completions seen: the trace, then each fragment of late spans.
    tx: watch::Sender<u64>,
    expires: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<TraceId, Slot>,
    bytes: usize,
}

/// Completed traces that someone waits for, delivered by the daemon's
/// consumer of completed traces. Bounded in traces and bytes.
#[derive(Default)]
pub struct TraceWaiters {
    inner: Mutex<Inner>,
    /// Lets [`TraceWaiters::deliver`] skip the lock when nothing is watched
    /// (the daemon's usual state).
    len: AtomicUsize,
}

/// What a watched trace holds now.
#[derive(Debug, Clone)]
pub struct Collected {
    pub spans: Vec<RawSpan>,
    /// How many times the trace (or a fragment of late spans) completed.
    pub completions: u64,
    pub truncated: bool,
}

impl TraceWaiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts (or extends) keeping trace `id` when it completes. `seed`
    /// gives spans already known complete (a trace the result store kept
    /// before anyone asked), counted as one completion.
    pub fn watch(
        self: &Arc<Self>,
        id: TraceId,
        linger: Duration,
        seed: Option<&[RawSpan]>,
    ) -> Result<TraceWatch, WaitersFull> {
        let now = std::time::Instant::now();
        let mut i = self.inner.lock();
        if !i.slots.contains_key(&id) {
            if i.slots.len() >= MAX_SLOTS {
                i.prune(now);
            }
            if i.slots.len() >= MAX_SLOTS {
                return Err(WaitersFull);
            }
            let (tx, _) = watch::channel(0);
            i.slots.insert(
                id,
                Slot {
                    spans: Vec::new(),
                    bytes: 0,
                    truncated: false,
                    tx,
                    expires: now + linger,
                },
            );
            if let Some(spans) = seed {
                i.append(&id, spans);
            }
            self.len.store(i.slots.len(), Ordering::Release);
        }
        let Some(slot) = i.slots.get_mut(&id) else {
            return Err(WaitersFull);
        };
        slot.expires = slot.expires.max(now + linger);
        Ok(TraceWatch {
            id,
            rx: slot.tx.subscribe(),
            waiters: Arc::clone(self),
        })
    }

    /// What trace `id` holds, if it is watched.
    pub fn collected(&self, id: &TraceId) -> Option<Collected> {
        let i = self.inner.lock();
        i.slots.get(id).map(|s| Collected {
            spans: s.spans.clone(),
            completions: *s.tx.borrow(),
            truncated: s.truncated,
        })
    }

    /// Hands a completed trace (or fragment) to whoever watches it.
    pub fn deliver(&self, t: &CompletedTrace) {
        // An early copy's spans come again when the trace settles.
        if t.early || self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut i = self.inner.lock();
        if i.slots.contains_key(&t.trace_id) {
            i.append(&t.trace_id, &t.spans);
        }
    }

    /// Traces watched now (for tests and bounds).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn append(&mut self, id: &TraceId, spans: &[RawSpan]) {
        let room = MAX_BYTES.saturating_sub(self.bytes);
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let mut added = 0;
        for s in spans {
            if added + s.bytes.len() > room {
                slot.truncated = true;
                break;
            }
            added += s.bytes.len();
            slot.spans.push(s.clone());
        }
        slot.bytes += added;
        slot.tx.send_modify(|n| *n += 1);
        self.bytes += added;
    }

    /// Drops expired slots, oldest expiry first.
    fn prune(&mut self, now: std::time::Instant) {
        let expired: Vec<TraceId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(s) = self.slots.remove(&id) {
                self.bytes -= s.bytes;
            }
        }
    }
}

/// A wait on one trace.
pub struct TraceWatch {
    id: TraceId,
    rx: watch::Receiver<u64>,
    waiters: Arc<TraceWaiters>,
}

impl TraceWatch {
    /// Waits until the trace has completed more than `after` times, or the
    /// deadline; answers what it holds then.
    pub async fn wait(&mut self, after: u64, deadline: Instant) -> Option<Collected> {
        let _ = tokio::time::timeout_at(deadline, self.rx.wait_for(|n| *n > after)).await;
        self.waiters.collected(&self.id)
    }
}

/// The embedded daemon's consumer when `test run` runs without `--server`:
/// completed traces go to the runner's waits and nowhere else.
pub struct TapConsumer(pub Arc<TraceWaiters>);

impl TraceConsumer for TapConsumer {
    fn consume(&mut self, trace: CompletedTrace) {
        self.0.deliver(&trace);
    }
}

/// A trace as the runner gets it.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub resource_spans: Vec<ResourceSpans>,
    pub completions: u64,
    /// The assembler completed it (else: what was buffered at the deadline).
    pub complete: bool,
    pub trace_url: Option<String>,
}

/// Why the trace could not be fetched (setup, not the system under test).
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Full(#[from] WaitersFull),
    #[error("tracecheck server {url}: {message}")]
    Server { url: String, message: String },
    #[error("trace {0} could not be decoded: {1}")]
    Decode(TraceId, String),
}

/// Where the runner's traces come from.
#[derive(Clone)]
pub enum TraceSource {
    /// A daemon in this process (embedded for the run, or the daemon
    /// serving `POST /api/v1/runs`).
    Local {
        waiters: Arc<TraceWaiters>,
        assembler: Arc<Assembler>,
        links: crate::results::config::LinksConfig,
    },
    /// A running daemon's admin endpoint.
    Remote {
        client: reqwest::Client,
        /// Admin base URL without trailing slash.
        base: String,
    },
}

/// A trace being waited for.
pub enum Pending {
    Local(TraceWatch),
    Remote(TraceId),
}

#[derive(Deserialize)]
struct TraceAnswer {
    #[serde(default)]
    complete: bool,
    #[serde(default)]
    completions: u64,
    trace_url: Option<String>,
    otlp: Option<serde_json::Value>,
}

impl TraceSource {
    /// Starts waiting for `id` before its trigger is sent, so that a trace
    /// completing quickly is not missed.
    pub async fn prepare(&self, id: TraceId) -> Result<Pending, WaitError> {
        match self {
            TraceSource::Local { waiters, .. } => {
                Ok(Pending::Local(waiters.watch(id, LINGER, None)?))
            }
            TraceSource::Remote { .. } => {
                // A zero wait registers the watch and answers at once.
                self.remote_get(id, Duration::ZERO, 0).await?;
                Ok(Pending::Remote(id))
            }
        }
    }

    /// The trace once it completed more than `after` times; at the
    /// deadline whatever is there (`complete: false`), `None` if nothing.
    pub async fn wait(
        &self,
        pending: &mut Pending,
        after: u64,
        deadline: Instant,
    ) -> Result<Option<Fetched>, WaitError> {
        match (self, pending) {
            (
                TraceSource::Local {
                    assembler, links, ..
                },
                Pending::Local(w),
            ) => {
                let id = w.id;
                let got = w.wait(after, deadline).await;
                let (spans, completions, complete) = match got {
                    Some(c) if c.completions > 0 => (c.spans, c.completions, true),
                    _ => match assembler.snapshot(&id) {
                        Some(s) => (s, 0, false),
                        None => return Ok(None),
                    },
                };
                let resource_spans =
                    to_resource_spans(&spans).map_err(|e| WaitError::Decode(id, e.to_string()))?;
                Ok(Some(Fetched {
                    resource_spans,
                    completions,
                    complete,
                    trace_url: links.trace_url(&id),
                }))
            }
            (TraceSource::Remote { .. }, Pending::Remote(id)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                self.remote_get(*id, left, after).await
            }
            _ => Err(WaitError::Server {
                url: String::new(),
                message: "wait used with the wrong source".into(),
            }),
        }
    }

    async fn remote_get(
        &self,
        id: TraceId,
        wait: Duration,
        after: u64,
    ) -> Result<Option<Fetched>, WaitError> {
        let TraceSource::Remote { client, base } = self else {
            return Ok(None);
        };
        let url = format!(
            "{base}/api/v1/traces/{}?format=otlp&wait={}ms&after={after}",
            id.to_hex(),
            wait.as_millis()
        );
        let err = |message: String| WaitError::Server {
            url: base.clone(),
            message,
        };
        let resp = client
            .get(&url)
            .timeout(wait + Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| {
                err(format!(
                    "cannot reach it: {}",
                    crate::net::client::error_chain(&e)
                ))
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| err(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(err(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let answer: TraceAnswer = serde_json::from_slice(&body)
            .map_err(|e| err(format!("unexpected answer (is it tracecheck?): {e}")))?;
        let resource_spans = match answer.otlp {
            Some(v) => {
                let text = v.to_string();
                otlp_json::decode_export_request(text.as_bytes())
                    .map_err(|e| WaitError::Decode(id, e.to_string()))?
                    .resource_spans
            }
            None => Vec::new(),
        };
        Ok(Some(Fetched {
            resource_spans,
            completions: answer.completions,
            complete: answer.complete,
            trace_url: answer.trace_url,
        }))
    }
}

/// OTLP JSON of spans, as the trace API's `format=otlp` answers them.
pub fn otlp_json_of(spans: &[RawSpan]) -> Result<serde_json::Value, String> {
    let resource_spans = to_resource_spans(spans).map_err(|e| e.to_string())?;
    let text = otlp_json::encode_export_request(&ExportTraceServiceRequest { resource_spans });
    serde_json::from_str(&text).map_err(|e| e.to_string())
}
