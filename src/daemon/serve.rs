//! The daemon as `tracecheck serve` runs it: the evaluator stage wired to
//! the running stages (its threads, the models in force and their reloads,
//! the result store and alerts) and the admin face's routes over them.

use std::sync::Arc;
use std::time::Duration;

use super::Stages;
use crate::admin::{api, grpc_api, not_found, ui};
use crate::evaluator::feed::VerdictFeed;
use crate::evaluator::registry::{ModelRegistry, ModelSource, ReloadReport};
use crate::evaluator::{self, Evaluator, EvaluatorPool};
use crate::metrics;
use crate::results::alerts;
use crate::results::config::{AlertsConfig, LinksConfig};
use crate::results::store::ResultStore;

/// How often model files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Verdicts buffered per listener (watchers) before it is told it lagged.
const VERDICT_CHANNEL: usize = 4096;

/// The models stage of a daemon: what `Daemon::start_with` needs, and the
/// handles the binary keeps (reload on SIGHUP, listeners).
pub struct ModelsStage {
    pub registry: Arc<ModelRegistry>,
    pub store: Arc<ResultStore>,
    pub verdicts: VerdictFeed,
    pub initial_load: ReloadReport,
    /// Completed traces that trace API waits and test runs wait for.
    pub waiters: Arc<crate::testrun::TraceWaiters>,
}

impl ModelsStage {
    /// Loads the models (bad files reported, the rest in force).
    pub fn load(sources: Vec<ModelSource>, stages_metrics: Arc<metrics::Metrics>) -> Self {
        let (registry, initial_load) = ModelRegistry::load(sources, stages_metrics);
        let verdicts = VerdictFeed::new(VERDICT_CHANNEL);
        Self {
            registry: Arc::new(registry),
            store: Arc::new(ResultStore::default()),
            verdicts,
            initial_load,
            waiters: Arc::new(crate::testrun::TraceWaiters::new()),
        }
    }

    /// The evaluator and the API routes, wired to the running stages, and a
    /// task that reloads when model files change.
    pub fn build(&self, stages: &Stages, settings: Settings) -> (EvaluatorPool, axum::Router) {
        let Settings {
            mut links,
            alerts,
            admin_url,
            threads,
            budget,
            version_label,
        } = settings;
        let external = alerts.external_url.clone().unwrap_or(admin_url);
        // Without a tracing UI, traces link to the daemon's own page.
        links.admin_url = Some(external.clone());
        let alert_sender = alerts::start(
            alerts,
            external,
            Arc::clone(&stages.metrics),
            tokio_util::sync::CancellationToken::new(),
        );
        self.registry.set_early_gate(stages.assembler.early_gate());
        let evaluators = (0..threads.max(1))
            .map(|_| {
                Evaluator::new(
                    Arc::clone(&self.registry),
                    Arc::clone(&self.store),
                    Arc::clone(&stages.metrics),
                    links.clone(),
                    self.verdicts.clone(),
                    alert_sender.clone(),
                )
                .with_tap(Arc::clone(&self.waiters))
                .with_tier(Arc::clone(&stages.tier))
                .with_exports(stages.verdict_exports.clone())
                .with_version_label(version_label)
                .with_memory(stages.assembler.memory())
                .with_evaluation_budget(budget)
                .with_late_window(
                    stages.assembler.config().late_span_window,
                    // At most a quarter of the memory limit, so that a small
                    // limit is not mostly settled traces.
                    evaluator::DEFAULT_KEEP_BYTES.min(stages.assembler.memory().limit() / 4)
                        / threads.max(1),
                    stages.assembler.config().settle,
                )
            })
            .collect();
        let panics = stages
            .metrics
            .internal_panics
            .get_or_create(&metrics::PanicLabels { stage: "evaluator" })
            .clone();
        let evaluator =
            match crate::assembler::Parallel::supervised(evaluators, panics, &stages.workers) {
                Ok(p) => p,
                // Threads cannot be started only when the process is at its
                // limits; nothing sensible runs then.
                Err(e) => panic!("cannot start evaluation threads: {e}"),
            };
        let runs = crate::testrun::api::Runs::new(crate::testrun::TraceSource::Local {
            waiters: Arc::clone(&self.waiters),
            assembler: Arc::clone(&stages.assembler),
            links: links.clone(),
        });
        let ui = ui::Ui::new(
            Arc::clone(&self.registry),
            Arc::clone(&self.store),
            self.verdicts.clone(),
            Arc::clone(&runs),
            links.clone(),
        );
        let api = Arc::new(api::Api {
            registry: Arc::clone(&self.registry),
            store: Arc::clone(&self.store),
            assembler: Arc::clone(&stages.assembler),
            links,
            waiters: Arc::clone(&self.waiters),
        });
        let weak = Arc::downgrade(&self.registry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                if registry.changed_on_disk() {
                    tracing::info!("Model files changed; reloading.");
                    let _ = tokio::task::spawn_blocking(move || registry.reload()).await;
                }
            }
        });
        let grpc = grpc_api::routes(Arc::new(grpc_api::GrpcApi {
            registry: Arc::clone(&self.registry),
            verdicts: self.verdicts.clone(),
        }));
        let routes = api::router(api)
            .merge(crate::testrun::api::router(runs))
            .merge(ui::router(ui))
            .merge(grpc)
            .fallback(not_found);
        (evaluator, routes)
    }
}

/// What of the config the models stage takes ([`ModelsStage::build`]).
pub struct Settings {
    pub links: LinksConfig,
    pub alerts: AlertsConfig,
    /// The admin endpoint's URL, for alerts' links unless
    /// `alerts.external_url` says otherwise.
    pub admin_url: String,
    /// `models.evaluation_threads`, resolved.
    pub threads: usize,
    /// `models.evaluation_budget`.
    pub budget: std::time::Duration,
    /// `metrics.version_label`.
    pub version_label: bool,
}

/// `OTEL_BSP_SCHEDULE_DELAY`'s default in every OpenTelemetry SDK.
const SDK_EXPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The daemon as `tracecheck serve` runs it: every stage of the config,
/// with the models of `sources` evaluated on every completed trace. The
/// binary and the integration tests start it the same way through here.
pub async fn start_daemon(
    config: crate::config::Config,
    sources: Vec<ModelSource>,
) -> Result<(crate::daemon::Daemon<EvaluatorPool>, Arc<ModelsStage>), crate::daemon::StartError> {
    if config.assembler.settle < SDK_EXPORT_INTERVAL {
        tracing::warn!(
            settle = ?config.assembler.settle,
            "assembler.settle is shorter than the OpenTelemetry SDKs' default export interval (5s): spans of one trace exported by different services may arrive after it settled, as late spans that flip verdicts (tracecheck_verdicts_flipped_total)."
        );
    }
    let scheme = if config.admin.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let settings = Settings {
        links: config.links.clone(),
        alerts: config.alerts.clone(),
        admin_url: format!("{scheme}://{}", config.admin.endpoint),
        threads: config.models.threads(),
        budget: config.models.evaluation_budget,
        version_label: config.metrics.version_label,
    };
    let slot: Arc<std::sync::OnceLock<Arc<ModelsStage>>> = Arc::new(std::sync::OnceLock::new());
    let slot_in = Arc::clone(&slot);
    let daemon = crate::daemon::Daemon::start_with(config, move |stages| {
        let models = Arc::new(ModelsStage::load(sources, Arc::clone(&stages.metrics)));
        let (evaluator, routes) = models.build(stages, settings);
        let _ = slot_in.set(models);
        (evaluator, Some(routes))
    })
    .await?;
    // start_with runs the builder before it returns, so the slot is set.
    let models = match slot.get() {
        Some(m) => Arc::clone(m),
        None => unreachable!("Daemon::start_with runs its builder before returning"),
    };
    Ok((daemon, models))
}
