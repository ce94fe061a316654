//! Runs in the daemon: `POST /api/v1/runs` runs a posted test or
//! transaction (its triggers sent from the daemon, its trace taken from
//! the daemon's own pipeline) and answers an id; `GET /api/v1/runs/{id}`
//! answers its result (`?wait=30s` waits for it). Bounded: a few runs at
//! once, the latest finished ones kept.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use super::context::RunContext;
use super::load::load_text;
use super::propagation::Propagation;
use super::report::SuiteReport;
use super::runner::{run_suite, RunOptions, DEFAULT_TIMEOUT};
use super::wait::TraceSource;

/// Runs executing at once; more are refused with 429.
pub const MAX_RUNNING: usize = 16;
/// Finished runs kept for `GET`; the oldest go first.
pub const MAX_RETAINED: usize = 256;
/// Longest per-test timeout and `wait` a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest posted document.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Passed,
    Failed,
    /// The runner could not work (see `error`).
    Error,
}

/// One run as `GET /api/v1/runs/{id}` answers it (and the UI shows it).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub state: RunState,
    pub submitted_at_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<SuiteReport>,
}

struct Entry {
    record: RunRecord,
    done: watch::Receiver<bool>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<String, Entry>,
    finished: VecDeque<String>,
}

/// The daemon's runs.
pub struct Runs {
    source: TraceSource,
    slots: Arc<Semaphore>,
    inner: Mutex<Inner>,
}

impl Runs {
    pub fn new(source: TraceSource) -> Arc<Self> {
        Arc::new(Self {
            source,
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The runs kept (running and finished), newest first.
    pub fn recent(&self) -> Vec<RunRecord> {
        let mut out: Vec<RunRecord> = self
            .inner
            .lock()
            .runs
            .values()
            .map(|e| e.record.clone())
            .collect();
        out.sort_by(|a, b| {
            b.submitted_at_unix_ms
                .cmp(&a.submitted_at_unix_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        out
    }

    fn finish(&self, id: &str, result: Result<SuiteReport, String>) {
        let mut i = self.inner.lock();
        if let Some(e) = i.runs.get_mut(id) {
            match result {
                Ok(report) => {
                    e.record.state = if report.passed {
                        RunState::Passed
                    } else {
                        RunState::Failed
                    };
                    e.record.report = Some(report);
                }
                Err(msg) => {
                    e.record.state = RunState::Error;
                    e.record.error = Some(msg);
                }
            }
        }
        i.finished.push_back(id.to_string());
        while i.finished.len() > MAX_RETAINED {
            if let Some(old) = i.finished.pop_front() {
                i.runs.remove(&old);
            }
        }
    }
}

pub fn router(runs: Arc<Runs>) -> Router {
    Router::new()
        .route("/api/v1/runs", post(submit))
        .route("/api/v1/runs/{id}", get(status))
        .with_state(runs)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `POST /api/v1/runs`: JSON `{"file": "<YAML of the Test or Transaction
/// and the tests its steps name>", "variables": {"K": "V"}, "timeout":
/// "30s", "propagation": "w3c,b3"}`; or the YAML itself with a YAML
/// content type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    file: String,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    timeout: Option<String>,
    /// As `test run --propagation`.
    propagation: Option<String>,
}

async fn submit(
    State(runs): State<Arc<Runs>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "run request larger than 1 MiB",
        );
    }
    let yaml = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    let req = if yaml {
        Submit {
            file: String::from_utf8_lossy(&body).into_owned(),
            variables: BTreeMap::new(),
            timeout: None,
            propagation: None,
        }
    } else {
        match serde_json::from_slice::<Submit>(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected JSON {{\"file\": \"<yaml>\", \"variables\": {{…}}, \"timeout\": \"30s\", \"propagation\": \"w3c\"}}: {e}"),
                )
            }
        }
    };
    let timeout = match req.timeout.as_deref() {
        None => DEFAULT_TIMEOUT,
        Some(t) => match crate::model::parse::parse_duration(t) {
            Some(d) if d <= MAX_TIMEOUT && !d.is_zero() => d,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("timeout {t:?}: expected a duration up to 10m such as 30s"),
                )
            }
        },
    };
    let propagation = match req.propagation.as_deref() {
        None => Propagation::default(),
        Some(p) => match p.parse() {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("propagation: {e}")),
        },
    };
    // Variables posted alongside count as the variable set.
    let set = (!req.variables.is_empty()).then(|| crate::model::VariableSet {
        id: "request".into(),
        id_derived: false,
        name: "request".into(),
        description: None,
        values: req
            .variables
            .iter()
            .map(|(k, v)| crate::model::Variable {
                key: k.clone(),
                value: v.clone(),
                position: crate::model::Position { line: 1, column: 1 },
            })
            .collect(),
        file: "request".into(),
        position: crate::model::Position { line: 1, column: 1 },
    });
    let suite = match load_text("request", &req.file, set) {
        Ok(s) => s,
        Err(diags) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": "the file cannot be run",
                    "errors": diags.iter().map(|d| json!({
                        "line": d.line, "column": d.column, "message": d.message,
                        "text": d.to_string(),
                    })).collect::<Vec<_>>(),
                })),
            )
                .into_response()
        }
    };
    let Ok(permit) = Arc::clone(&runs.slots).try_acquire_owned() else {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_RUNNING} runs are in progress; retry shortly"),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return r;
    };
    let id = super::trigger::new_trace_id().to_hex()[..16].to_string();
    let (tx, rx) = watch::channel(false);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    runs.inner.lock().runs.insert(
        id.clone(),
        Entry {
            record: RunRecord {
                id: id.clone(),
                state: RunState::Running,
                submitted_at_unix_ms: now_ms,
                error: None,
                report: None,
            },
            done: rx,
        },
    );
    let base = suite
        .variables
        .as_ref()
        .map(|s| RunContext::new(Some(s)))
        .unwrap_or_default();
    let task_runs = Arc::clone(&runs);
    let task_id = id.clone();
    tokio::spawn(async move {
        let opts = RunOptions {
            timeout,
            progress: None,
            propagation,
        };
        let result = run_suite(&suite, &base, &task_runs.source, &opts)
            .await
            .map_err(|e| e.to_string());
        task_runs.finish(&task_id, result);
        drop(permit);
        let _ = tx.send(true);
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "id": id,
            "state": RunState::Running,
            "url": format!("/api/v1/runs/{id}"),
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct StatusQuery {
    wait: Option<String>,
}

async fn status(
    State(runs): State<Arc<Runs>>,
    Path(id): Path<String>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => match crate::model::parse::parse_duration(w) {
            Some(d) => d.min(MAX_TIMEOUT),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("wait {w:?}: expected a duration such as 30s"),
                )
            }
        },
    };
    let done = runs.inner.lock().runs.get(&id).map(|e| e.done.clone());
    let Some(mut done) = done else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} (finished runs are kept {MAX_RETAINED} at most)"),
        );
    };
    if !wait.is_zero() {
        let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
    }
    match runs.inner.lock().runs.get(&id) {
        Some(e) => Json(e.record.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("run {id:?} is no longer kept"),
        ),
    }
}
