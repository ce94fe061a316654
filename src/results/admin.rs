//! The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz` (and, with
//! models, the API). Loopback-only unless configured otherwise; with
//! `admin.auth`, [`guard`] asks a bearer token of every request that
//! changes something.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use super::exposition;

/// What the admin endpoint reads.
pub struct AdminState {
    pub registry: Registry,
    /// Receivers bound and models loaded.
    pub ready: AtomicBool,
    /// Workers down: not ready while one is, not live while one is dead.
    pub workers: Arc<crate::health::Workers>,
}

impl AdminState {
    pub fn new(registry: Registry, workers: Arc<crate::health::Workers>) -> Self {
        Self {
            registry,
            ready: AtomicBool::new(false),
            workers,
        }
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        (
            [(header::CONTENT_TYPE, exposition::OPENMETRICS_CONTENT_TYPE)],
            exposition::openmetrics(&s.registry),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_CONTENT_TYPE)],
            exposition::prometheus_text(&s.registry),
        )
            .into_response()
    }
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if let Some(why) = s.workers.not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn healthz(State(s): State<Arc<AdminState>>) -> Response {
    match s.workers.not_live() {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
        None => (StatusCode::OK, "ok\n").into_response(),
    }
}

/// `admin.auth`: every request that may change something needs the bearer
/// token — HTTP methods other than GET, HEAD and OPTIONS, and gRPC methods
/// not in [`READ_ONLY_METHODS`](super::grpc_api::READ_ONLY_METHODS) (gRPC
/// calls are all POSTs, so the method tells nothing there). Decided by
/// method and path, not per route, so that routes added later are guarded
/// without anyone remembering to. Apply it to the finished router (axum
/// layers only cover the routes present when they are added).
pub fn guard(
    app: Router,
    token: Option<Arc<crate::net::auth::BearerToken>>,
    metrics: Arc<super::metrics::Metrics>,
) -> Router {
    let Some(token) = token else {
        return app;
    };
    app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let grpc = crate::net::auth::is_grpc(request.headers());
            let refused = needs_token(grpc, request.method(), request.uri().path())
                && !token.admits(request.headers());
            let metrics = Arc::clone(&metrics);
            async move {
                if !refused {
                    return next.run(request).await;
                }
                metrics.admin_unauthenticated.inc();
                tracing::info!(method = %request.method(), path = request.uri().path(), "Admin request refused: missing or wrong bearer token.");
                if grpc {
                    return crate::net::auth::grpc_unauthenticated().into_http::<axum::body::Body>();
                }
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    axum::Json(serde_json::json!({ "error": crate::net::auth::REFUSAL })),
                )
                    .into_response()
            }
        },
    ))
}

fn needs_token(grpc: bool, method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    if grpc {
        return !super::grpc_api::READ_ONLY_METHODS.iter().any(|m| {
            if m.ends_with('/') {
                path.starts_with(m)
            } else {
                path == *m
            }
        });
    }
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::needs_token;
    use axum::http::Method;

    #[test]
    fn writes_need_the_token_reads_do_not() {
        assert!(needs_token(false, &Method::POST, "/api/v1/models/reload"));
        assert!(needs_token(false, &Method::POST, "/api/v1/runs"));
        assert!(needs_token(false, &Method::DELETE, "/api/v1/anything"));
        assert!(!needs_token(false, &Method::GET, "/api/v1/models"));
        assert!(!needs_token(false, &Method::GET, "/metrics"));
        assert!(needs_token(
            true,
            &Method::POST,
            "/tracecheck.v1.ModelService/Reload"
        ));
        assert!(needs_token(
            true,
            &Method::POST,
            "/tracecheck.v1.NewService/Start"
        ));
        assert!(!needs_token(
            true,
            &Method::POST,
            "/tracecheck.v1.ModelService/List"
        ));
        assert!(!needs_token(
            true,
            &Method::POST,
            "/grpc.health.v1.Health/Check"
        ));
    }
}
