//! The admin API (`/api/v1/…`): loaded models, recent verdicts, traces with
//! every verdict on them, and model reload. JSON in, JSON out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::assembler::Assembler;
use crate::engine::Verdict;
use crate::evaluator::registry::ModelRegistry;
use crate::ids::TraceId;
use crate::otlp::{json as otlp_json, to_resource_spans, RawSpan};
use crate::results::config::LinksConfig;
use crate::results::store::ResultStore;

pub struct Api {
    pub registry: Arc<ModelRegistry>,
    pub store: Arc<ResultStore>,
    pub assembler: Arc<Assembler>,
    pub links: LinksConfig,
    /// Traces someone waits for (`?wait=`), kept when they complete.
    pub waiters: Arc<crate::testrun::TraceWaiters>,
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/models", get(models))
        .route("/api/v1/models/reload", post(reload))
        .route("/api/v1/results", get(results))
        .route("/api/v1/versions", get(versions))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/traces/{trace_id}/test.tar.gz", get(promoted))
        .with_state(api)
}

/// A trace ID from a path, or what is wrong with it.
fn parse_trace_id(text: &str) -> Result<TraceId, String> {
    TraceId::parse_hex(text).map_err(|e| format!("trace id {text:?}: {e}"))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn models(State(api): State<Arc<Api>>) -> Json<Value> {
    let loaded = api.registry.current();
    let models: Vec<Value> = loaded
        .engine
        .models()
        .iter()
        .zip(&loaded.counters)
        .map(|(m, c)| {
            json!({
                "id": m.id,
                "name": m.name,
                "labels": m.labels,
                "file": m.file,
                "within": m.within.map(crate::model::format_duration),
                "verdicts": {
                    "pass": c.count(Verdict::Pass),
                    "fail": c.count(Verdict::Fail),
                    "skip": c.count(Verdict::Skip),
                },
            })
        })
        .collect();
    let report = api.registry.last_report();
    Json(json!({
        "models": models,
        "loaded_at_unix_ms": loaded.loaded_at_unix_ms,
        "last_load": report,
    }))
}

async fn reload(State(api): State<Arc<Api>>) -> Response {
    let registry = Arc::clone(&api.registry);
    let report = match tokio::task::spawn_blocking(move || registry.reload()).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed: {e}"),
            )
        }
    };
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(report)).into_response()
}

#[derive(Deserialize)]
struct ResultsQuery {
    model: Option<String>,
    verdict: Option<String>,
    limit: Option<usize>,
}

async fn results(State(api): State<Arc<Api>>, Query(q): Query<ResultsQuery>) -> Response {
    let verdict = match q.verdict.as_deref() {
        None => None,
        Some("pass") => Some(Verdict::Pass),
        Some("fail") => Some(Verdict::Fail),
        Some("inconclusive") => Some(Verdict::Inconclusive),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("verdict {other:?}: expected pass, fail or inconclusive (skips are counted, not stored)"),
            )
        }
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    let results = api.store.results(q.model.as_deref(), verdict, limit);
    Json(json!({ "results": results })).into_response()
}

#[derive(Deserialize)]
struct VersionsQuery {
    service: Option<String>,
    model: Option<String>,
}

/// `GET /api/v1/versions[?service=S][&model=M]`: counted verdicts per
/// model and version of each root service, versions side by side
/// ([`crate::results::versions`]): does the canary fail what the stable passes?
async fn versions(State(api): State<Arc<Api>>, Query(q): Query<VersionsQuery>) -> Response {
    let rows = api
        .store
        .versions
        .table(q.service.as_deref(), q.model.as_deref());
    Json(json!({ "versions": rows })).into_response()
}

/// Longest `?wait=` on a trace.
const MAX_TRACE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Deserialize)]
struct TraceQuery {
    /// Long-poll: answer once the trace completed (more than `after`
    /// times), or after this long with what there is.
    wait: Option<String>,
    after: Option<u64>,
    /// `tree` (default) or `otlp` (an ExportTraceServiceRequest as JSON).
    format: Option<String>,
}

async fn trace(
    State(api): State<Arc<Api>>,
    Path(trace_id): Path<String>,
    Query(q): Query<TraceQuery>,
) -> Response {
    let id = match parse_trace_id(&trace_id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let otlp = match q.format.as_deref() {
        None | Some("tree") => false,
        Some("otlp") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("format {other:?}: expected tree or otlp"),
            )
        }
    };
    if let Some(w) = q.wait.as_deref() {
        let Some(wait) = crate::model::parse::parse_duration(w) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("wait {w:?}: expected a duration such as 30s"),
            );
        };
        // Watching also keeps the trace when it completes, for a later
        // request (late spans, the link in a test report) to find.
        let seed = api.store.trace(&id).map(|t| t.spans);
        let mut watch = match api
            .waiters
            .watch(id, crate::testrun::wait::LINGER, seed.as_deref())
        {
            Ok(w) => w,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let deadline = tokio::time::Instant::now() + wait.min(MAX_TRACE_WAIT);
        watch.wait(q.after.unwrap_or(0), deadline).await;
    }
    let collected = api.waiters.collected(&id).filter(|c| c.completions > 0);
    let (state, spans, verdicts, completions) = match (api.store.trace(&id), collected) {
        (Some(t), c) => {
            let completions = c.as_ref().map_or(1, |c| c.completions);
            // Late spans the store did not keep are in the watched copy.
            let spans = match c {
                Some(c) if c.spans.len() > t.spans.len() => c.spans,
                _ => t.spans,
            };
            ("retained", spans, t.verdicts, completions)
        }
        (None, Some(c)) => ("complete", c.spans, Vec::new(), c.completions),
        (None, None) => match api.assembler.snapshot(&id) {
            Some(spans) => ("buffered", spans, Vec::new(), 0),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("trace {id} is neither buffered nor retained"),
                )
            }
        },
    };
    let mut answer = json!({
        "trace_id": id,
        "trace_url": api.links.trace_url(&id),
        "state": state,
        "complete": state != "buffered",
        "completions": completions,
        "span_count": spans.len(),
        "verdicts": verdicts,
    });
    if otlp {
        match crate::testrun::wait::otlp_json_of(&spans) {
            Ok(v) => answer["otlp"] = v,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    } else {
        match span_tree(&spans) {
            Ok(t) => answer["spans"] = Value::Array(t),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    Json(answer).into_response()
}

/// `GET /api/v1/traces/{id}/test.tar.gz`: the trace and the models that
/// failed on it, as a regression test ([`super::promote`]).
async fn promoted(State(api): State<Arc<Api>>, Path(trace_id): Path<String>) -> Response {
    let id = match parse_trace_id(&trace_id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(stored) = api.store.trace(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("trace {id} is not retained (failing traces are kept while the result store has room)"),
        );
    };
    // Late spans the store did not keep are in the watched copy.
    let spans = match api.waiters.collected(&id) {
        Some(c) if c.spans.len() > stored.spans.len() => c.spans,
        _ => stored.spans,
    };
    let loaded = api.registry.current();
    let mut failed: Vec<super::promote::FailedModel<'_>> = Vec::new();
    // The latest verdict of each model counts: a failure late spans undid
    // is no failure to reproduce.
    let mut latest: Vec<&crate::results::store::VerdictRecord> = Vec::new();
    for v in stored.verdicts.iter().rev() {
        if latest.iter().all(|l| l.model != v.model) {
            latest.push(v);
        }
    }
    for v in latest.iter().rev().filter(|v| v.verdict == Verdict::Fail) {
        let Some(i) = loaded.index(&v.model) else {
            continue;
        };
        let mut specs: Vec<&str> = v.failures.iter().map(|f| f.spec.as_str()).collect();
        specs.dedup();
        failed.push(super::promote::FailedModel {
            id: &v.model,
            source: &loaded.sources[i],
            specs,
        });
    }
    if failed.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("trace {id} has no failure of a model in force to promote"),
        );
    }
    match super::promote::bundle(&id, &spans, &failed) {
        Ok(bytes) => (
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/gzip".to_owned(),
                ),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}.tar.gz\"",
                        super::promote::folder(&id)
                    ),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Spans as a tree: roots (no parent, or a parent not in the trace) with
/// their children nested, each list in start-time order.
pub fn span_tree(spans: &[RawSpan]) -> Result<Vec<Value>, String> {
    let rs = to_resource_spans(spans).map_err(|e| format!("stored span undecodable: {e}"))?;
    struct Node {
        id: String,
        parent: String,
        start: u64,
        json: Value,
    }
    let mut nodes = Vec::new();
    for r in &rs {
        let service = r
            .resource
            .as_ref()
            .and_then(|res| res.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(otlp_json::any_value_to_json);
        for ss in &r.scope_spans {
            for s in &ss.spans {
                let id = hex(&s.span_id);
                let parent = hex(&s.parent_span_id);
                let attrs: serde_json::Map<String, Value> = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            kv.value
                                .as_ref()
                                .map(otlp_json::any_value_to_json)
                                .unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                let status = s.status.as_ref();
                nodes.push(Node {
                    json: json!({
                        "span_id": id,
                        "parent_id": if parent.is_empty() { Value::Null } else { Value::String(parent.clone()) },
                        "name": s.name,
                        "service": service,
                        "kind": kind_name(s.kind),
                        "status": match status.map(|st| st.code) { Some(1) => "ok", Some(2) => "error", _ => "unset" },
                        "status_message": status.map(|st| st.message.clone()).unwrap_or_default(),
                        "start_time_unix_nano": s.start_time_unix_nano.to_string(),
                        "duration_ms": s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6,
                        "attributes": attrs,
                    }),
                    id,
                    parent,
                    start: s.start_time_unix_nano,
                });
            }
        }
    }
    nodes.sort_by_key(|n| n.start);
    let ids: std::collections::HashSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.parent.is_empty() || !ids.contains(&n.parent) || n.parent == n.id {
            roots.push(i);
        } else {
            children.entry(n.parent.clone()).or_default().push(i);
        }
    }
    fn build(
        i: usize,
        nodes: &[Node],
        children: &HashMap<String, Vec<usize>>,
        depth: usize,
    ) -> Value {
        let mut v = nodes[i].json.clone();
        let kids: Vec<Value> = if depth > 256 {
            Vec::new()
        } else {
            children
                .get(&nodes[i].id)
                .map(|c| {
                    c.iter()
                        .map(|&k| build(k, nodes, children, depth + 1))
                        .collect()
                })
                .unwrap_or_default()
        };
        v["children"] = Value::Array(kids);
        v
    }
    Ok(roots
        .into_iter()
        .map(|i| build(i, &nodes, &children, 0))
        .collect())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn kind_name(k: i32) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}
