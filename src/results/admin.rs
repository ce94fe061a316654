//! The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz` (and, with
//! models, the API). Loopback-only unless configured otherwise.

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
}

impl AdminState {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            ready: AtomicBool::new(false),
        }
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
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
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
