//! tracecheck's own gRPC API (`proto/tracecheck/v1`): verdicts streamed as
//! they happen, evaluation on demand, model listing and reload. It reads the
//! same registry, store and verdict channel as the HTTP API; neither wraps
//! the other. Served on the admin port with reflection and gRPC health.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, EvalContext, Failure, Trace, Verdict};
use crate::evaluator::feed::{RecvError, VerdictFeed};
use crate::evaluator::registry::ModelRegistry;
use crate::results::store::VerdictRecord;

/// Generated from `proto/tracecheck/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("tracecheck.v1");
}

/// The encoded descriptors of `proto/tracecheck/v1`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("tracecheck_v1_descriptor");

/// gRPC methods on the admin port that change nothing, open without
/// `admin.auth`'s token; every other method (`ModelService/Reload`, and any
/// method added later until it is listed here) needs it. Entries ending in
/// `/` cover a whole service.
pub const READ_ONLY_METHODS: &[&str] = &[
    "/tracecheck.v1.VerdictService/Watch",
    "/tracecheck.v1.VerdictService/Evaluate",
    "/tracecheck.v1.ModelService/List",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Verdicts queued per watcher; beyond it the watcher misses verdicts and
/// is told how many.
const WATCH_BUFFER: usize = 1024;

pub struct GrpcApi {
    pub registry: Arc<ModelRegistry>,
    pub verdicts: VerdictFeed,
}

fn kind(v: Verdict) -> pb::VerdictKind {
    match v {
        Verdict::Pass => pb::VerdictKind::Pass,
        Verdict::Fail => pb::VerdictKind::Fail,
        Verdict::Skip => pb::VerdictKind::Skip,
        Verdict::Inconclusive => pb::VerdictKind::Inconclusive,
    }
}

fn failure(f: &Failure) -> pb::Failure {
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    pb::Failure {
        spec: f.spec.clone(),
        kind,
        assertion: f.assertion.clone().unwrap_or_default(),
        span_id: f.span_id.map(|s| s.to_hex()).unwrap_or_default(),
        span_name: f.span_name.clone().unwrap_or_default(),
        service: f.service.clone().unwrap_or_default(),
        observed: f.observed.clone().unwrap_or_default(),
        expected: f.expected.clone().unwrap_or_default(),
        message: f.message.clone(),
    }
}

/// The wire form of a recorded verdict.
pub fn verdict_message(
    r: &VerdictRecord,
    labels: BTreeMap<String, String>,
    missed_before: u64,
) -> pb::Verdict {
    pb::Verdict {
        trace_id: r.trace_id.to_hex(),
        model: r.model.to_string(),
        model_name: r.model_name.to_string(),
        verdict: kind(r.verdict) as i32,
        failures: r.failures.iter().map(failure).collect(),
        trace_url: r.trace_url.as_deref().unwrap_or_default().to_owned(),
        evaluated_at_unix_ms: r.evaluated_at_unix_ms as i64,
        incomplete: r.incomplete,
        completion_reason: format!("{:?}", r.completion_reason),
        summary: r.summary.clone().unwrap_or_default(),
        labels: labels.into_iter().collect(),
        missed_before,
        waited_for_late_spans: r.waited_for_late_spans,
        skip_reason: String::new(),
        inconclusive_reason: r
            .inconclusive
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default(),
        early: r.early,
        flipped_from: r
            .flipped_from
            .map(kind)
            .unwrap_or(pb::VerdictKind::Unspecified) as i32,
    }
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Verdict, Status>> + Send>>;

#[tonic::async_trait]
impl pb::verdict_service_server::VerdictService for Arc<GrpcApi> {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = request.into_inner();
        let mut wanted: Vec<Verdict> = req
            .verdicts
            .iter()
            .filter_map(|v| match pb::VerdictKind::try_from(*v) {
                Ok(pb::VerdictKind::Pass) => Some(Verdict::Pass),
                Ok(pb::VerdictKind::Fail) => Some(Verdict::Fail),
                Ok(pb::VerdictKind::Inconclusive) => Some(Verdict::Inconclusive),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            wanted = vec![Verdict::Pass, Verdict::Fail, Verdict::Inconclusive];
        }
        let mut rx = self.verdicts.subscribe(wanted.contains(&Verdict::Pass));
        let (tx, out) = mpsc::channel(WATCH_BUFFER);
        let registry = Arc::clone(&self.registry);
        tokio::spawn(async move {
            let mut missed: u64 = 0;
            loop {
                let record = match rx.recv().await {
                    Ok(r) => r,
                    Err(RecvError::Lagged(n)) => {
                        missed += n;
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if !wanted.contains(&record.verdict)
                    || !(req.models.is_empty() || req.models.iter().any(|m| **m == *record.model))
                {
                    continue;
                }
                let labels = registry
                    .current()
                    .engine
                    .models()
                    .iter()
                    .find(|m| *m.id == *record.model)
                    .map(|m| m.labels.clone())
                    .unwrap_or_default();
                if !req.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    continue;
                }
                match tx.try_send(Ok(verdict_message(&record, labels, missed))) {
                    Ok(()) => missed = 0,
                    // The watcher's own buffer is full: it misses this one.
                    Err(mpsc::error::TrySendError::Full(_)) => missed += 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let req = request.into_inner();
        let otlp =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                req.otlp_request.as_slice(),
            )
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "otlp_request is not an ExportTraceServiceRequest: {e}"
                ))
            })?;
        let inline;
        let loaded;
        let engine: &Engine = if req.models_yaml.trim().is_empty() {
            loaded = self.registry.current();
            &loaded.engine
        } else {
            let docs =
                crate::model::load_str("<request>", &req.models_yaml).map_err(diag_status)?;
            let models: Vec<_> = docs
                .iter()
                .filter_map(|d| match d {
                    crate::model::Document::Model(m) => Some(m.clone()),
                    crate::model::Document::Test(t) => Some(t.as_model()),
                    _ => None,
                })
                .collect();
            inline = Engine::compile(models).map_err(diag_status)?;
            &inline
        };
        let mut verdicts = Vec::new();
        for trace in Trace::from_resource_spans(&otlp.resource_spans) {
            for v in engine.evaluate(&trace, &EvalContext::default()) {
                let Some(m) = engine.models().get(v.model) else {
                    continue;
                };
                verdicts.push(pb::Verdict {
                    trace_id: trace.trace_id().to_hex(),
                    model: m.id.clone(),
                    model_name: m.name.clone(),
                    verdict: kind(v.verdict) as i32,
                    failures: v.failures.iter().map(failure).collect(),
                    labels: m.labels.clone().into_iter().collect(),
                    skip_reason: v.skip_reason.map(Into::into).unwrap_or_default(),
                    ..Default::default()
                });
            }
        }
        Ok(Response::new(pb::EvaluateResponse { verdicts }))
    }
}

fn diag_status(diags: Vec<crate::model::Diagnostic>) -> Status {
    let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    Status::invalid_argument(text.join("\n"))
}

#[tonic::async_trait]
impl pb::model_service_server::ModelService for Arc<GrpcApi> {
    async fn list(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let loaded = self.registry.current();
        let models = loaded
            .engine
            .models()
            .iter()
            .zip(&loaded.counters)
            .map(|(m, c)| pb::Model {
                id: m.id.clone(),
                name: m.name.clone(),
                labels: m.labels.clone().into_iter().collect(),
                file: m.file.clone(),
                within: m
                    .within
                    .map(crate::model::format_duration)
                    .unwrap_or_default(),
                pass: c.count(Verdict::Pass),
                fail: c.count(Verdict::Fail),
                skip: c.count(Verdict::Skip),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse {
            models,
            loaded_at_unix_ms: loaded.loaded_at_unix_ms as i64,
        }))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadModelsRequest>,
    ) -> Result<Response<pb::ReloadModelsResponse>, Status> {
        let registry = Arc::clone(&self.registry);
        let report = tokio::task::spawn_blocking(move || registry.reload())
            .await
            .map_err(|e| Status::internal(format!("reload failed: {e}")))?;
        Ok(Response::new(pb::ReloadModelsResponse {
            models: report.models,
            errors: report
                .errors
                .iter()
                .map(|d| pb::ModelError {
                    file: d.file.clone(),
                    line: d.line as u32,
                    column: d.column as u32,
                    message: d.message.clone(),
                })
                .collect(),
            kept_previous: report.kept_previous,
        }))
    }
}

/// The gRPC services, reflection and health as routes for the admin port.
pub fn routes(api: Arc<GrpcApi>) -> axum::Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        health
            .set_serving::<pb::verdict_service_server::VerdictServiceServer<Arc<GrpcApi>>>()
            .await;
        health
            .set_serving::<pb::model_service_server::ModelServiceServer<Arc<GrpcApi>>>()
            .await;
    });
    let mut routes = tonic::service::Routes::new(health_service)
        .add_service(pb::verdict_service_server::VerdictServiceServer::new(
            Arc::clone(&api),
        ))
        .add_service(pb::model_service_server::ModelServiceServer::new(api));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    match reflection().build_v1() {
        Ok(reflection) => routes = routes.add_service(reflection),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection unavailable."),
    }
    // v1alpha too: many clients (grpcio-reflection, grpc_cli, older
    // grpcurl and IDE plugins) only speak it.
    match reflection().build_v1alpha() {
        Ok(reflection) => routes = routes.add_service(reflection),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection (v1alpha) unavailable."),
    }
    routes.into_axum_router()
}
