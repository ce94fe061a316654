//! The web pages under `/ui/` on the admin port: what a person reads of
//! the daemon — the models in force with their verdict rates, recent
//! failures, one trace with what failed on it, verdicts as they happen and
//! test runs. Server-rendered HTML; the stylesheet and the one script are
//! embedded in the binary ([`assets`]) and nothing is loaded from another
//! origin (`Content-Security-Policy: default-src 'self'` on every answer).
//! Owns the per-minute verdict counts the overview charts; reads everything
//! else from the registry, the result store, the verdict feed and the runs.

pub(crate) mod pages;

pub use pages::{escape, render_failures, FailuresQuery};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::engine::Verdict;
use crate::evaluator::feed::{RecvError, VerdictFeed};
use crate::evaluator::registry::{LoadedModels, ModelRegistry};
use crate::ids::TraceId;
use crate::results::config::LinksConfig;
use crate::results::store::ResultStore;
use crate::testrun::api::Runs;

/// What the pages read.
pub struct Ui {
    pub registry: Arc<ModelRegistry>,
    pub store: Arc<ResultStore>,
    pub verdicts: VerdictFeed,
    pub runs: Arc<Runs>,
    pub links: LinksConfig,
    rates: Mutex<Rates>,
}

/// Minutes of verdict counts the overview charts.
const RATE_MINUTES: usize = 60;

/// Per model, the verdicts (pass, fail, inconclusive) of each of the last
/// [`RATE_MINUTES`] minutes, sampled from the counters once a minute so
/// that evaluation pays nothing for the chart.
#[derive(Default)]
struct Rates {
    models: HashMap<String, Ring>,
}

#[derive(Default)]
struct Ring {
    minutes: VecDeque<[u64; 3]>,
    /// The counters at the last sample.
    last: [u64; 3],
}

fn totals(loaded: &LoadedModels, i: usize) -> [u64; 3] {
    loaded.counters.get(i).map_or([0; 3], |c| {
        [
            c.count(Verdict::Pass),
            c.count(Verdict::Fail),
            c.count(Verdict::Inconclusive),
        ]
    })
}

impl Rates {
    fn sample(&mut self, loaded: &LoadedModels) {
        let mut seen = HashMap::with_capacity(loaded.engine.len());
        for (i, m) in loaded.engine.models().iter().enumerate() {
            let now = totals(loaded, i);
            let ring = match self.models.remove(&m.id) {
                Some(mut ring) => {
                    // The counters are the process's (kept across reloads),
                    // so they only grow.
                    let delta: [u64; 3] =
                        std::array::from_fn(|k| now[k].saturating_sub(ring.last[k]));
                    if ring.minutes.len() == RATE_MINUTES - 1 {
                        ring.minutes.pop_front();
                    }
                    ring.minutes.push_back(delta);
                    ring.last = now;
                    ring
                }
                None => Ring {
                    minutes: VecDeque::new(),
                    last: now,
                },
            };
            seen.insert(m.id.clone(), ring);
        }
        // Models no longer in force are forgotten.
        self.models = seen;
    }

    /// The minutes of a model, oldest first, the minute under way last.
    fn minutes(&self, id: &str, now: [u64; 3]) -> Vec<[u64; 3]> {
        match self.models.get(id) {
            Some(r) => {
                let mut out: Vec<[u64; 3]> = r.minutes.iter().copied().collect();
                out.push(std::array::from_fn(|k| now[k].saturating_sub(r.last[k])));
                out
            }
            None => vec![now],
        }
    }
}

impl Ui {
    /// The pages' state; samples the verdict counters every minute while
    /// the pages are served.
    pub fn new(
        registry: Arc<ModelRegistry>,
        store: Arc<ResultStore>,
        verdicts: VerdictFeed,
        runs: Arc<Runs>,
        links: LinksConfig,
    ) -> Arc<Self> {
        let ui = Arc::new(Self {
            registry,
            store,
            verdicts,
            runs,
            links,
            rates: Mutex::new(Rates::default()),
        });
        let weak: Weak<Ui> = Arc::downgrade(&ui);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ui) = weak.upgrade() else {
                    return;
                };
                let loaded = ui.registry.current();
                ui.rates.lock().sample(&loaded);
            }
        });
        ui
    }
}

pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/failures", get(failures))
        .route("/ui/trace/{trace_id}", get(trace))
        .route("/ui/live", get(live))
        .route("/ui/live/events", get(live_events))
        .route("/ui/runs", get(runs))
        .route("/ui/assets/{file}", get(asset))
        .with_state(ui)
        .layer(axum::middleware::map_response(secure))
}

/// Every UI answer: nothing from elsewhere, no inline script or style, not
/// framed by another site, no referrer (trace IDs) sent on with links, not
/// stored by the browser.
async fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Pages show span data: not kept where the back button finds it once
    // signed out (the embedded assets set their own caching).
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "ui.css" => (include_str!("assets/ui.css"), "text/css; charset=utf-8"),
        "ui.js" => (
            include_str!("assets/ui.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn overview(State(ui): State<Arc<Ui>>) -> Html<String> {
    let loaded = ui.registry.current();
    let report = ui.registry.last_report();
    let rates = ui.rates.lock();
    let models: Vec<pages::ModelRow<'_>> = loaded
        .engine
        .models()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let now = totals(&loaded, i);
            pages::ModelRow {
                model: m,
                totals: now,
                minutes: rates.minutes(&m.id, now),
            }
        })
        .collect();
    let versions = ui.store.versions.table(None, None);
    Html(pages::overview(&models, &report, &versions))
}

/// The ids of the models in force, for the pages' model filters.
fn model_ids(loaded: &LoadedModels) -> Vec<&str> {
    loaded.names.iter().map(|(id, _)| &**id).collect()
}

async fn failures(State(ui): State<Arc<Ui>>, Query(q): Query<FailuresQuery>) -> Html<String> {
    let loaded = ui.registry.current();
    let ids = model_ids(&loaded);
    Html(pages::render_failures(&ui.store, &q, &ids, now_ms()))
}

async fn trace(State(ui): State<Arc<Ui>>, Path(trace_id): Path<String>) -> Response {
    let id = match TraceId::parse_hex(&trace_id) {
        Ok(id) => id,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::message(
                    "Trace",
                    &format!("trace id {trace_id:?}: {e}"),
                )),
            )
                .into_response()
        }
    };
    let Some(stored) = ui.store.trace(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html(pages::message(
                "Trace",
                &format!(
                    "Trace {id} is not retained: the daemon keeps the latest failing traces and a sample of passing ones."
                ),
            )),
        )
            .into_response();
    };
    let loaded = ui.registry.current();
    let registry = Arc::clone(&ui.registry);
    let page = pages::trace_page(&id, &stored, &loaded, &ui.links, &|file: &str| {
        registry.source_text(file)
    });
    Html(page).into_response()
}

#[derive(Deserialize, Default)]
struct LiveQuery {
    #[serde(default)]
    model: String,
    #[serde(default)]
    verdict: String,
}

fn verdict_filter(v: &str) -> Vec<Verdict> {
    match v {
        "pass" => vec![Verdict::Pass],
        "fail" => vec![Verdict::Fail],
        "inconclusive" => vec![Verdict::Inconclusive],
        // As `Watch` without a verdict: every kind.
        _ => vec![Verdict::Pass, Verdict::Fail, Verdict::Inconclusive],
    }
}

async fn live(State(ui): State<Arc<Ui>>, Query(q): Query<LiveQuery>) -> Html<String> {
    let loaded = ui.registry.current();
    let ids = model_ids(&loaded);
    Html(pages::live(&ids, &q.model, &q.verdict))
}

/// Records a live page may fall behind by before it is told it missed some.
const LIVE_BUFFER: usize = 256;

/// The live page's stream: the records of the verdict feed (as `Watch`
/// gets them), filtered by model and verdict, one JSON event each.
async fn live_events(State(ui): State<Arc<Ui>>, Query(q): Query<LiveQuery>) -> Response {
    let wanted = verdict_filter(&q.verdict);
    let mut rx = ui.verdicts.subscribe(wanted.contains(&Verdict::Pass));
    let (tx, out) = mpsc::channel::<Result<Event, std::convert::Infallible>>(LIVE_BUFFER);
    tokio::spawn(async move {
        let mut dropped = 0u64;
        loop {
            // A page gone unsubscribes at once, not at the next verdict
            // (a pass listener costs the evaluator a record per pass).
            let got = tokio::select! {
                () = tx.closed() => return,
                got = rx.recv() => got,
            };
            let event = match got {
                Ok(r) => {
                    if !wanted.contains(&r.verdict) || !(q.model.is_empty() || *r.model == *q.model)
                    {
                        continue;
                    }
                    Event::default()
                        .event("verdict")
                        .data(pages::live_event(&r).to_string())
                }
                Err(RecvError::Lagged(n)) => Event::default().event("missed").data(n.to_string()),
                Err(RecvError::Closed) => return,
            };
            // A full buffer is a page not keeping up: it misses this one
            // rather than slow the feed, and is told how many once there
            // is room again; a closed one has gone.
            if dropped > 0 {
                let told = Event::default().event("missed").data(dropped.to_string());
                match tx.try_send(Ok(told)) {
                    Ok(()) => dropped = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            match tx.try_send(Ok(event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn runs(State(ui): State<Arc<Ui>>) -> Html<String> {
    Html(pages::runs(&ui.runs.recent()))
}
