//! The topology: builds every stage from the config and wires them in the
//! one direction data flows — receivers → assembler → consumer (models),
//! receivers → exporter — and takes them down in the same order on shutdown.
//!
//! The top of the layout: it imports the stages, the config that assembles
//! theirs, and the admin face; no stage imports it. [`serve`] is the daemon
//! as `tracecheck serve` runs it (the evaluator and the admin routes wired
//! in), [`embedded`] the receivers and assembler `tracecheck test run`
//! starts without `--server`.

pub mod embedded;
pub mod serve;

pub use embedded::{Embedded, EmbeddedConfig};
pub use serve::{start_daemon, ModelsStage, Settings};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::assembler::{spawn_consumer, Assembler, CompletedTrace, TraceConsumer};
use crate::config::Config;
use crate::exporter::config::TraceSelection;
use crate::exporter::Exporter;
use crate::metrics::Metrics;
use crate::receiver::ingest::Ingest;
use crate::receiver::{self, Receivers};
use crate::tier::Tier;

/// Completed traces waiting for the consumer. When it is full the assembler
/// waits, the buffer fills, and senders are asked to retry.
const COMPLETED_QUEUE: usize = 4096;

/// How long shutdown waits for open admin connections once the endpoint
/// stops accepting. Long-lived gRPC streams (`VerdictService.Watch`) never
/// end on their own; past this they are cut instead of holding shutdown.
const ADMIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] receiver::BindError),
    #[error(transparent)]
    Receiver(#[from] receiver::ReceiverError),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::net::auth::AuthError),
    #[error("exporters.{name}: {source}")]
    Exporter {
        name: String,
        source: crate::exporter::ExporterError,
    },
    #[error(transparent)]
    TierTls(crate::net::tls::TlsError),
}

/// The running stages a consumer may need.
pub struct Stages {
    pub metrics: Arc<Metrics>,
    pub assembler: Arc<Assembler>,
    /// Changes of the scale-out tier announced to this instance.
    pub tier: Arc<crate::tier::Changes>,
    /// Where workers that die say so.
    pub workers: Arc<crate::health::Workers>,
    /// Exporters fed by verdicts (`traces: failing`).
    pub verdict_exports: crate::exporter::by_verdict::VerdictExports,
}

/// A running daemon.
pub struct Daemon<C: TraceConsumer> {
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub admin: Arc<AdminState>,
    pub tier: Arc<Tier>,
    ingest: Arc<Ingest>,
    receivers: Receivers,
    assembler: Arc<Assembler>,
    assembler_stop: CancellationToken,
    assembler_task: JoinHandle<()>,
    completed_tx: mpsc::Sender<CompletedTrace>,
    consumer: JoinHandle<C>,
    exporters: Vec<Exporter>,
    verdict_pumps: crate::exporter::by_verdict::Pumps,
    admin_stop: CancellationToken,
    admin_task: JoinHandle<()>,
}

/// What shutdown did.
#[derive(Debug)]
pub struct Stopped<C> {
    /// Traces completed with reason `shutdown`.
    pub flushed_traces: usize,
    /// Spans the exporter could not deliver before its drain deadline.
    pub undelivered_spans: u64,
    pub consumer: Option<C>,
}

impl<C: TraceConsumer> Daemon<C> {
    /// Starts with a fixed consumer of completed traces.
    pub async fn start(config: Config, consumer: C) -> Result<Self, StartError> {
        Self::start_with(config, move |_| (consumer, None)).await
    }

    /// Starts with a consumer built from the running stages; it may add
    /// routes to the admin endpoint.
    pub async fn start_with(
        config: Config,
        build: impl FnOnce(&Stages) -> (C, Option<axum::Router>),
    ) -> Result<Self, StartError> {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let workers = Arc::new(crate::health::Workers::new(Arc::clone(&metrics)));

        let mut forward = Vec::with_capacity(config.exporters.list.len());
        let mut by_verdict = Vec::new();
        let mut exporters = Vec::with_capacity(config.exporters.list.len());
        for e in &config.exporters.list {
            let (q, x) = Exporter::start(&e.name, e.config.clone(), Arc::clone(&metrics), &workers)
                .map_err(|source| StartError::Exporter {
                    name: e.name.clone(),
                    source,
                })?;
            match e.config.traces {
                TraceSelection::All => forward.push(q),
                selection => by_verdict.push(crate::exporter::by_verdict::Feed {
                    name: e.name.clone(),
                    selection,
                    attributes: e.config.verdict_attributes,
                    queue: q,
                }),
            }
            exporters.push(x);
        }
        let (verdict_exports, verdict_pumps) =
            crate::exporter::by_verdict::VerdictExports::start(by_verdict, &metrics);

        let assembler = Arc::new(Assembler::new(
            config.assembler.clone(),
            Arc::clone(&metrics),
        ));
        let (completed_tx, completed_rx) = mpsc::channel(COMPLETED_QUEUE);
        let admin = Arc::new(AdminState::new(registry, Arc::clone(&workers)));
        let admin_stop = CancellationToken::new();
        let admin_token = match &config.admin.auth {
            Some(a) => {
                let t = crate::net::auth::BearerToken::load(a, "admin.auth")?;
                t.spawn_watch(admin_stop.clone());
                Some(t)
            }
            None => None,
        };
        if !config.tier.peers.is_empty() && config.admin.auth.is_none() {
            tracing::warn!("tier.peers without admin.auth: anyone who reaches the admin port can announce tier changes (making verdicts inconclusive) or make this instance leave.");
        }
        // A change matters while a trace it split can still be buffered.
        let horizon = config.assembler.max_trace_age + config.assembler.settle;
        let tier = Arc::new(
            Tier::new(
                config.tier.clone(),
                horizon,
                Arc::clone(&admin),
                Arc::clone(&metrics),
                admin_token.clone(),
                config.admin.tls.is_some(),
            )
            .map_err(StartError::TierTls)?,
        );
        let (consumer, routes) = build(&Stages {
            metrics: Arc::clone(&metrics),
            assembler: Arc::clone(&assembler),
            tier: Arc::clone(&tier.changes),
            workers: Arc::clone(&workers),
            verdict_exports,
        });
        let consumer = spawn_consumer(completed_rx, consumer, workers.alive("evaluator_feed"));
        let assembler_stop = CancellationToken::new();
        let assembler_task =
            crate::health::supervise("assembler", Arc::clone(&workers), assembler_stop.clone(), {
                let (assembler, tx, stop) = (
                    Arc::clone(&assembler),
                    completed_tx.clone(),
                    assembler_stop.clone(),
                );
                move || Arc::clone(&assembler).run(tx.clone(), stop.clone())
            });

        if !config.admin.endpoint.ip().is_loopback() && config.admin.auth.is_none() {
            tracing::warn!(
                endpoint = %config.admin.endpoint,
                "The admin endpoint listens beyond loopback without admin.auth: whoever reaches it can reload models and start test runs."
            );
        }
        let admin_tls = match &config.admin.tls {
            Some(t) => Some(crate::net::tls::ServerTls::load(
                t,
                "admin.tls",
                receiver::ALPN_H2_HTTP1,
            )?),
            None => None,
        };
        let admin_listener = receiver::bind(config.admin.endpoint, "admin").await?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.endpoint);
        let admin_task = {
            let mut app =
                admin::router(Arc::clone(&admin)).merge(crate::tier::router(Arc::clone(&tier)));
            if let Some(routes) = routes {
                app = app.merge(routes);
            }
            let gate = admin_token.map(|t| {
                Arc::new(crate::admin::signin::Gate::new(
                    t,
                    config.admin.tls.is_some(),
                    config.admin.protect_metrics,
                ))
            });
            if let Some(g) = &gate {
                app = app.merge(crate::admin::signin::router(Arc::clone(g)));
            }
            // Last, so that it covers every route merged above.
            let app = admin::guard(app, gate, Arc::clone(&metrics));
            let shutdown = admin_stop.clone().cancelled_owned();
            let stopped = |e: std::io::Error| {
                tracing::error!(error = %e, "Admin endpoint stopped.");
            };
            match &admin_tls {
                None => tokio::spawn(async move {
                    let served = axum::serve(admin_listener, app).with_graceful_shutdown(shutdown);
                    served.await.unwrap_or_else(stopped);
                }),
                Some(tls) => {
                    tls.spawn_reload("admin", Arc::clone(&metrics), admin_stop.clone());
                    let incoming = receiver::tls_incoming(
                        admin_listener,
                        tls,
                        "admin",
                        &metrics,
                        &admin_stop,
                    )?;
                    tokio::spawn(async move {
                        let served = axum::serve(incoming, app).with_graceful_shutdown(shutdown);
                        served.await.unwrap_or_else(stopped);
                    })
                }
            }
        };

        let ingest = Arc::new(Ingest::new(
            Arc::clone(&assembler),
            forward,
            Arc::clone(&metrics),
        ));
        let receivers = Receivers::start(
            &config.receivers.otlp,
            Arc::clone(&ingest),
            Arc::clone(&metrics),
        )
        .await?;
        admin.ready.store(true, Ordering::Release);
        if tier.is_configured() {
            tokio::spawn(join_when_sent_to(
                Arc::clone(&tier),
                Arc::clone(&metrics),
                admin_stop.clone(),
            ));
        }

        Ok(Self {
            grpc_addr: receivers.grpc_addr,
            http_addr: receivers.http_addr,
            admin_addr,
            metrics,
            admin,
            tier,
            ingest,
            receivers,
            assembler,
            assembler_stop,
            assembler_task,
            completed_tx,
            consumer,
            exporters,
            verdict_pumps,
            admin_stop,
            admin_task,
        })
    }

    /// Stops the receivers, completes every buffered trace with reason
    /// `shutdown`, lets the consumer finish, drains the forwarding queue
    /// within its deadline, and stops the admin endpoint last so the final
    /// state can still be scraped until then.
    pub async fn shutdown(self) -> Stopped<C> {
        // Announced before the receivers close, without a preStop hook
        // as early as this instance can (a no-op if `tracecheck tier leave`
        // did it already); the peers allow for balancers that moved first.
        self.tier.leave().await;
        self.ingest.close();
        self.receivers.stop().await;
        self.assembler_stop.cancel();
        let _ = self.assembler_task.await;
        let flushed = self.assembler.drain(tokio::time::Instant::now());
        let flushed_traces = flushed.len();
        for t in flushed {
            if self.completed_tx.send(t).await.is_err() {
                break;
            }
        }
        drop(self.completed_tx);
        let consumer = self.consumer.await.ok();
        // What the evaluators selected while finishing, into the queues
        // before those drain.
        self.verdict_pumps.finish().await;
        // Drained side by side: each has its own drain deadline, and one
        // slow downstream must not eat another's.
        let drains: Vec<_> = self
            .exporters
            .into_iter()
            .map(|e| tokio::spawn(e.shutdown()))
            .collect();
        let mut undelivered_spans = 0;
        for d in drains {
            undelivered_spans += d.await.unwrap_or(0);
        }
        self.admin_stop.cancel();
        let mut admin_task = self.admin_task;
        if tokio::time::timeout(ADMIN_DRAIN, &mut admin_task)
            .await
            .is_err()
        {
            admin_task.abort();
        }
        Stopped {
            flushed_traces,
            undelivered_spans,
            consumer,
        }
    }
}

/// How often a tier instance checks whether spans have come yet.
const JOIN_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Announces `joined` once spans arrive: that is when a balancer has put
/// this instance in its ring, which is the moment its peers must know.
async fn join_when_sent_to(tier: Arc<Tier>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let received = || {
        [
            crate::metrics::Transport::grpc,
            crate::metrics::Transport::http,
        ]
        .into_iter()
        .map(|transport| {
            metrics
                .accepted_spans
                .get_or_create(&crate::metrics::TransportLabels { transport })
                .get()
        })
        .sum::<u64>()
    };
    let mut tick = tokio::time::interval(JOIN_POLL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if received() > 0 {
            tier.join().await;
            return;
        }
    }
}
