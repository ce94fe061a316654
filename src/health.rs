//! Whether the daemon's long-running workers are alive, for `/readyz` and
//! `/healthz` on the admin endpoint.
//!
//! Panics are contained where the work is (per request, per trace, per
//! completion pass, per batch), so a worker's loop is not expected to end
//! early. Should one do so anyway, it must not go unseen: a worker that can
//! be started again in place (the assembler's completion loop) is
//! [`supervise`]d, restarted after a pause during which the daemon reports
//! not ready; one whose state cannot be rebuilt in place (the evaluation
//! threads with their settled traces, the exporter with its batches) holds
//! an [`Alive`] guard, and its death by panic makes `/healthz` fail, so
//! that the orchestrator restarts the process, and `/readyz` fail, so that
//! no balancer sends to it meanwhile. Either way it is counted in
//! `tracecheck_internal_panics_total{stage}` and logged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;

use crate::metrics::{Metrics, PanicLabels};

/// What the admin endpoint reads (re-exported as `admin::AdminState`): kept
/// here, below the stages, so that a stage that changes readiness (the
/// tier, on leave) does not import the admin face.
pub struct AdminState {
    pub registry: Registry,
    /// Receivers bound and models loaded.
    pub ready: AtomicBool,
    /// Workers down: not ready while one is, not live while one is dead.
    pub workers: Arc<Workers>,
}

impl AdminState {
    pub fn new(registry: Registry, workers: Arc<Workers>) -> Self {
        Self {
            registry,
            ready: AtomicBool::new(false),
            workers,
        }
    }
}

/// Why a worker is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// Ended by a panic; it is being started again.
    Restarting,
    /// Ended by a panic and not restartable in place: the process must be.
    Dead,
}

/// The workers that are down, by name (the stage, and for one of several,
/// which: `exporter otlp/jaeger`).
pub struct Workers {
    down: Mutex<BTreeMap<String, Down>>,
    metrics: Arc<Metrics>,
}

/// How long a restarted worker waits before it starts again: a worker that
/// panics at once on every start must not spin.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

impl Workers {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            down: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// A guard for a worker that cannot be restarted in place: dropped by
    /// a panic's unwinding, it marks the worker dead.
    pub fn alive(self: &Arc<Self>, worker: &'static str) -> Alive {
        Alive {
            workers: Arc::clone(self),
            worker,
            name: None,
        }
    }

    /// [`Workers::alive`] for one of several workers of a stage (an
    /// exporter): reported down as `worker name`, counted under `worker`.
    pub fn alive_named(self: &Arc<Self>, worker: &'static str, name: &str) -> Alive {
        Alive {
            workers: Arc::clone(self),
            worker,
            name: Some(format!("{worker} {name}")),
        }
    }

    /// Why the daemon is not ready, if a worker is down.
    pub fn not_ready(&self) -> Option<String> {
        let down = self.down.lock();
        (!down.is_empty()).then(|| describe(&down, |_| true))
    }

    /// Why the process should be restarted, if a worker is dead.
    pub fn not_live(&self) -> Option<String> {
        let down = self.down.lock();
        down.values()
            .any(|d| *d == Down::Dead)
            .then(|| describe(&down, |d| d == Down::Dead))
    }

    fn mark(&self, worker: &str, down: Option<Down>) {
        let mut map = self.down.lock();
        match down {
            Some(d) => {
                map.insert(worker.to_owned(), d);
            }
            None => {
                map.remove(worker);
            }
        }
    }

    fn count_panic(&self, worker: &'static str) {
        self.metrics
            .internal_panics
            .get_or_create(&PanicLabels { stage: worker })
            .inc();
    }
}

fn describe(down: &BTreeMap<String, Down>, which: impl Fn(Down) -> bool) -> String {
    let names: Vec<String> = down
        .iter()
        .filter(|(_, d)| which(**d))
        .map(|(name, d)| match d {
            Down::Restarting => format!("{name} (restarting)"),
            Down::Dead => format!("{name} (stopped by a panic; restart the process)"),
        })
        .collect();
    format!("workers down: {}\n", names.join(", "))
}

/// Held by a worker for as long as it runs; see [`Workers::alive`].
pub struct Alive {
    workers: Arc<Workers>,
    worker: &'static str,
    name: Option<String>,
}

impl Drop for Alive {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let name = self.name.as_deref().unwrap_or(self.worker);
            self.workers.count_panic(self.worker);
            self.workers.mark(name, Some(Down::Dead));
            tracing::error!(
                worker = name,
                "A worker stopped with a panic (a bug; please report it). The daemon reports itself not live and not ready until restarted."
            );
        }
    }
}

/// Runs the worker `start` makes, on a task of its own, and starts it
/// again after [`RESTART_PAUSE`] each time it ends by a panic, the daemon
/// not ready meanwhile. It ends when the worker returns (its stop was
/// asked for), when `stop` is cancelled during a pause, or when the
/// runtime shuts down.
pub fn supervise<F, Fut>(
    worker: &'static str,
    workers: Arc<Workers>,
    stop: tokio_util::sync::CancellationToken,
    mut start: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(start()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    workers.count_panic(worker);
                    workers.mark(worker, Some(Down::Restarting));
                    tracing::error!(
                        worker,
                        pause = ?RESTART_PAUSE,
                        "A worker stopped with a panic (a bug; please report it); starting it again. Not ready until then."
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESTART_PAUSE) => {}
                    }
                    workers.mark(worker, None);
                }
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn workers() -> (Arc<Workers>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::unregistered());
        (Arc::new(Workers::new(Arc::clone(&metrics))), metrics)
    }

    fn panics(metrics: &Metrics, stage: &'static str) -> u64 {
        metrics
            .internal_panics
            .get_or_create(&PanicLabels { stage })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_supervised_worker_that_panics_is_restarted_not_ready_meanwhile() {
        let (workers, metrics) = workers();
        let starts = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = supervise("assembler", Arc::clone(&workers), stop.clone(), {
            let starts = Arc::clone(&starts);
            let stop = stop.clone();
            move || {
                let first = starts.fetch_add(1, Ordering::SeqCst) == 0;
                let stop = stop.clone();
                async move {
                    if first {
                        panic!("a bug in the loop");
                    }
                    stop.cancelled().await;
                }
            }
        });
        tokio::time::sleep(RESTART_PAUSE / 2).await;
        assert_eq!(
            workers.not_ready().as_deref(),
            Some("workers down: assembler (restarting)\n")
        );
        assert_eq!(workers.not_live(), None, "restarting in place, not dead");
        assert_eq!(panics(&metrics, "assembler"), 1);
        tokio::time::sleep(RESTART_PAUSE).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(workers.not_ready(), None);
        stop.cancel();
        task.await.expect("the supervisor ends with its worker");
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "not restarted after a stop"
        );
    }

    #[test]
    fn a_worker_dead_by_panic_makes_the_process_not_live_and_not_ready() {
        let (workers, metrics) = workers();
        // Ending normally is no death.
        drop(workers.alive("exporter"));
        assert_eq!(workers.not_live(), None);
        let guard = workers.alive("evaluator");
        let exporter = workers.alive_named("exporter", "otlp/jaeger");
        let _other = workers.alive_named("exporter", "otlphttp/tempo");
        assert!(std::thread::spawn(move || {
            let _guard = exporter;
            panic!("a bug in one exporter");
        })
        .join()
        .is_err());
        let died = std::thread::spawn(move || {
            let _guard = guard;
            panic!("a bug in the thread");
        })
        .join();
        assert!(died.is_err());
        let why = workers.not_live().expect("not live");
        assert!(why.contains("evaluator (stopped by a panic"), "{why}");
        assert!(why.contains("exporter otlp/jaeger (stopped"), "{why}");
        assert!(!why.contains("tempo"), "only the dead exporter: {why}");
        assert_eq!(workers.not_ready(), Some(why));
        assert_eq!(panics(&metrics, "evaluator"), 1);
        assert_eq!(panics(&metrics, "exporter"), 1);
    }
}
