//! The admin face: every way a person or a tool reads the daemon, on the
//! admin port — the HTTP API ([`api`]), the gRPC API ([`grpc_api`]),
//! `/metrics` ([`exposition`]), the pages under `/ui/` ([`ui`]) with
//! sign-in ([`signin`]), and the server side of promoting a failure to a
//! regression test ([`promote`]). It reads the evaluator's models and
//! verdict feed and the results' store; nothing below it imports it.
//!
//! This file is the admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz`
//! (and, with models, the API). Loopback-only unless configured otherwise;
//! with `admin.auth`, [`guard`] asks a bearer token of every request that
//! changes something.

pub mod api;
pub mod config;
pub mod exposition;
pub mod grpc_api;
pub mod promote;
pub mod signin;
pub mod ui;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use crate::health::AdminState;

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

/// `admin.auth`: every request but the open ones ([`Gate::is_open`]) must
/// show the token ([`self::signin`]). Decided by path, not per route, so
/// that routes added later are guarded without anyone remembering to.
/// Apply it to the finished router (axum layers only cover the routes
/// present when they are added).
///
/// [`Gate::is_open`]: self::signin::Gate::is_open
pub fn guard(
    app: Router,
    gate: Option<Arc<self::signin::Gate>>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Router {
    let Some(gate) = gate else {
        return app;
    };
    app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let refusal = refusal(&gate, &request);
            let metrics = Arc::clone(&metrics);
            async move {
                match refusal {
                    None => next.run(request).await,
                    Some(r) => {
                        metrics.admin_unauthenticated.inc();
                        tracing::info!(method = %request.method(), path = request.uri().path(), "Admin request refused: {}.", r.why());
                        r.into_response()
                    }
                }
            }
        },
    ))
}

/// Why a request is not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No credentials, or wrong ones.
    Unauthenticated { grpc: bool, page: Option<String> },
    /// A change asked on the session cookie's say-so from another site.
    CrossSite,
}

impl Refusal {
    fn why(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated { .. } => "missing or wrong credentials",
            Refusal::CrossSite => "a change asked from another site",
        }
    }

    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated { grpc: true, .. } => {
                crate::net::auth::grpc_unauthenticated().into_http::<axum::body::Body>()
            }
            // A person at a page: to the sign-in form, and back after.
            Refusal::Unauthenticated {
                page: Some(path), ..
            } => (
                StatusCode::SEE_OTHER,
                [(
                    header::LOCATION,
                    format!("{}?next={path}", self::signin::LOGIN_PATH),
                )],
            )
                .into_response(),
            Refusal::Unauthenticated { .. } => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer, Basic realm=\"tracecheck\"")],
                axum::Json(serde_json::json!({ "error": crate::net::auth::REFUSAL })),
            )
                .into_response(),
            Refusal::CrossSite => (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({ "error": "changes are taken only from this site's own pages" })),
            )
                .into_response(),
        }
    }
}

fn refusal(gate: &self::signin::Gate, request: &axum::extract::Request) -> Option<Refusal> {
    let headers = request.headers();
    let grpc = crate::net::auth::is_grpc(headers);
    let method = request.method();
    let path = request.uri().path();
    if gate.is_open(grpc, method, path) {
        return None;
    }
    let safe = matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if gate.shown(headers).is_none() {
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        return Some(Refusal::Unauthenticated {
            grpc,
            // A person at a page, not a script (the live page's events).
            page: (!grpc && safe && wants_html && path.starts_with("/ui/")).then(|| {
                let target = request.uri().path_and_query().map_or(path, |p| p.as_str());
                self::signin::url_encode(target)
            }),
        });
    }
    // A change must come from this origin however it showed the token: a
    // browser adds basic auth it once typed to any site's request, as it
    // adds the cookie. Tools send no `Origin` and pass; gRPC needs a
    // content type no cross-site form or simple fetch can send.
    if !grpc && !safe && !self::signin::same_origin(headers, request.uri()) {
        return Some(Refusal::CrossSite);
    }
    None
}

/// Unknown paths: 404 for HTTP, UNIMPLEMENTED for gRPC (the admin port
/// serves both).
pub(crate) async fn not_found(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("no such gRPC method")
            .into_http::<axum::body::Body>()
            .into_response();
    }
    (axum::http::StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::signin::Gate;

    fn gate() -> Gate {
        let token = crate::net::auth::BearerToken::load(
            &crate::net::auth::AuthConfig {
                bearer_token: Some(crate::net::secret::Secret::new("s3cret")),
                bearer_token_file: None,
            },
            "admin.auth",
        )
        .expect("token");
        Gate::new(token, false, false)
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> axum::extract::Request {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    /// With `admin.auth`, reading trace data needs the token as much as
    /// changing something: results, traces, pages, gRPC Watch and
    /// Evaluate. Health and metrics stay open.
    #[test]
    fn reads_of_trace_data_need_the_token_too() {
        let g = gate();
        for (method, path) in [
            ("GET", "/api/v1/results"),
            ("GET", "/api/v1/traces/0123"),
            ("GET", "/api/v1/models"),
            ("POST", "/api/v1/models/reload"),
            ("POST", "/api/v1/runs"),
        ] {
            let r = refusal(&g, &request(method, path, &[]));
            assert!(
                matches!(
                    r,
                    Some(Refusal::Unauthenticated {
                        grpc: false,
                        page: None
                    })
                ),
                "{method} {path}: {r:?}"
            );
            let bearer = request(method, path, &[("authorization", "Bearer s3cret")]);
            assert_eq!(refusal(&g, &bearer), None, "{method} {path} with the token");
        }
        for path in [
            "/tracecheck.v1.VerdictService/Watch",
            "/tracecheck.v1.VerdictService/Evaluate",
        ] {
            let r = refusal(
                &g,
                &request("POST", path, &[("content-type", "application/grpc")]),
            );
            assert!(
                matches!(r, Some(Refusal::Unauthenticated { grpc: true, .. })),
                "{path}"
            );
        }
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(refusal(&g, &request("GET", path, &[])), None, "{path}");
        }
    }

    #[test]
    fn a_page_without_a_session_goes_to_sign_in_and_back() {
        let html = [("accept", "text/html,*/*")];
        let r = refusal(&gate(), &request("GET", "/ui/trace/ab?x=1&y=a%2Bb", &html));
        assert_eq!(
            r,
            Some(Refusal::Unauthenticated {
                grpc: false,
                page: Some("/ui/trace/ab%3Fx%3D1%26y%3Da%252Bb".into())
            })
        );
        // The live page's event stream is a script's request: a 401.
        let events = [("accept", "text/event-stream")];
        let r = refusal(&gate(), &request("GET", "/ui/live/events", &events));
        assert_eq!(
            r,
            Some(Refusal::Unauthenticated {
                grpc: false,
                page: None
            })
        );
    }

    /// Basic auth a browser once typed goes with any site's request: a
    /// change needs this origin whatever showed the token.
    #[test]
    fn a_change_from_another_site_is_refused_with_basic_auth_too() {
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("me:s3cret")
        );
        let from = |origin: &str| {
            refusal(
                &gate(),
                &request(
                    "POST",
                    "/api/v1/runs",
                    &[
                        ("authorization", &basic),
                        ("host", "tc:9464"),
                        ("origin", origin),
                    ],
                ),
            )
        };
        assert_eq!(from("https://evil.example"), Some(Refusal::CrossSite));
        assert_eq!(from("https://tc:9464"), None);
        let tool = request(
            "POST",
            "/api/v1/runs",
            &[("authorization", "Bearer s3cret")],
        );
        assert_eq!(refusal(&gate(), &tool), None, "a tool sends no Origin");
    }
}
