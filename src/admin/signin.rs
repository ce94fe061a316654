//! Who may read the admin face when `admin.auth` is set.
//!
//! Everything that shows trace data or changes something — the HTTP API,
//! the pages under `/ui/`, the gRPC API (`Watch`, `Evaluate` and `List`
//! included) — takes one of: the bearer token (`Authorization: Bearer`),
//! basic auth with the token as the password (any user name; what a
//! browser's own prompt and `curl -u` send), or, for a browser, the
//! session cookie that signing in at `/ui/login` sets (HTTP-only,
//! `SameSite=Strict`, `Secure` over TLS, 12 h). Open without credentials:
//! `/healthz`, `/readyz`, gRPC health and reflection, the sign-in page,
//! and `/metrics` unless `admin.protect_metrics` (Prometheus scrapes it,
//! and it holds no span data).
//!
//! Cross-site requests: the cookie is `SameSite=Strict`, so another site
//! cannot make a browser send it; but a browser adds basic auth it was once
//! given to any site's request, so every request that changes something
//! must also come from this origin (`Origin` or `Sec-Fetch-Site`), however
//! it showed the token, as must the sign-in form.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::net::auth::BearerToken;
use crate::net::secret::Secret;

/// How long a browser stays signed in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Sessions held at once; past it the oldest goes.
const MAX_SESSIONS: usize = 10_000;

const COOKIE: &str = "tracecheck_session";
pub const LOGIN_PATH: &str = "/ui/login";
const LOGOUT_PATH: &str = "/ui/logout";

/// The admin endpoint's credentials and the browsers signed in.
pub struct Gate {
    token: Arc<BearerToken>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The admin endpoint is on TLS: cookies are `Secure`.
    secure: bool,
    protect_metrics: bool,
}

struct Session {
    expires: Instant,
    /// The token it was signed in with: a changed token ends it.
    token: Secret,
}

/// How a request showed who it is. A browser may add either by itself (the
/// cookie, or basic auth typed once at its prompt), which is why a change
/// must come from this origin whichever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A header: bearer or basic.
    Header,
    /// The session cookie.
    Cookie,
}

impl Gate {
    pub fn new(token: Arc<BearerToken>, secure: bool, protect_metrics: bool) -> Self {
        Self {
            token,
            sessions: Mutex::new(HashMap::new()),
            secure,
            protect_metrics,
        }
    }

    /// Whether a request may be answered without credentials.
    pub fn is_open(&self, grpc: bool, method: &Method, path: &str) -> bool {
        if grpc {
            return path.starts_with("/grpc.health.v1.Health/")
                || path.starts_with("/grpc.reflection.");
        }
        match path {
            "/healthz" | "/readyz" => true,
            "/metrics" => !self.protect_metrics,
            LOGIN_PATH => matches!(*method, Method::GET | Method::HEAD | Method::POST),
            _ => false,
        }
    }

    /// What the request shows that admits it, if anything.
    pub fn shown(&self, headers: &HeaderMap) -> Option<Shown> {
        if self.token.admits(headers) || self.basic(headers) {
            return Some(Shown::Header);
        }
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock();
        let live = sessions.get(id).is_some_and(|s| {
            s.expires > Instant::now() && self.token.matches(s.token.expose().as_bytes())
        });
        if !live {
            sessions.remove(id);
            return None;
        }
        Some(Shown::Cookie)
    }

    /// `Authorization: Basic` whose password is the token.
    fn basic(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) else {
            return false;
        };
        let Some(encoded) = v
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case(b"basic "))
            .map(|_| v[6..].trim_ascii())
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => self.token.matches(&decoded[i + 1..]),
            None => false,
        }
    }

    /// A new session for a browser that showed the token: its cookie.
    fn sign_in(&self) -> Option<String> {
        let mut raw = [0u8; 32];
        crate::net::tls::provider()
            .secure_random
            .fill(&mut raw)
            .ok()?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                expires: now + SESSION_TTL,
                token: self.token.secret(),
            },
        );
        Some(self.cookie_header(&id, SESSION_TTL.as_secs()))
    }

    fn cookie_header(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }
}

/// The value of cookie `name`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request comes from a page of this origin (or from no page at
/// all: a tool sends neither header). A browser sends `Origin` on every
/// POST and `Sec-Fetch-Site` on every request. Our own host is the `Host`
/// header, or over HTTP/2 the URI's authority (`:authority`).
pub fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    origin_host.is_some() && origin_host == host
}

/// `/ui/login` and `/ui/logout`.
pub fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route(LOGIN_PATH, get(login_page).post(login))
        .route(LOGOUT_PATH, post(logout))
        .with_state(gate)
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
    failed: Option<u8>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Where to go after signing in: a path of ours, never another site. Only
/// printable ASCII without spaces: browsers drop tabs and line breaks from
/// a URL, so `/\t/evil.example` would become `//evil.example`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n
        }
        _ => "/ui/",
    }
}

async fn login_page(Query(q): Query<Next>) -> Response {
    let next = super::ui::pages::escape(safe_next(q.next.as_deref()));
    let failed = if q.failed.is_some() {
        "<p role=\"alert\">That is not the admin token.</p>"
    } else {
        ""
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in · tracecheck</title></head>\
         <body><main><h1>tracecheck</h1>{failed}\
         <form method=\"post\" action=\"{LOGIN_PATH}\">\
         <label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label>\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <button type=\"submit\">Sign in</button></form></main></body></html>"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn login(
    State(gate): State<Arc<Gate>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers, &uri) {
        return (StatusCode::FORBIDDEN, "sign in from this site's own page\n").into_response();
    }
    let next = safe_next(f.next.as_deref()).to_owned();
    if !gate.token.matches(f.token.trim().as_bytes()) {
        tracing::info!("Admin sign-in refused: wrong token.");
        let back = format!("{LOGIN_PATH}?failed=1&next={}", url_encode(&next));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, back)]).into_response();
    }
    let Some(cookie) = gate.sign_in() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session\n",
        )
            .into_response();
    };
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
    )
        .into_response()
}

async fn logout(State(gate): State<Arc<Gate>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        gate.sessions.lock().remove(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, LOGIN_PATH.to_owned()),
            (header::SET_COOKIE, gate.cookie_header("", 0)),
        ],
    )
        .into_response()
}

/// `s` percent-encoded for a query value (`/` kept, for legible paths).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        let token = BearerToken::load(
            &crate::net::auth::AuthConfig {
                bearer_token: Some(Secret::new("s3cret")),
                bearer_token_file: None,
            },
            "admin.auth",
        )
        .expect("token");
        Gate::new(token, false, false)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn bearer_basic_and_a_session_admit_nothing_else_does() {
        let g = gate();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            g.shown(&headers(&[("authorization", "Bearer s3cret")])),
            Some(Shown::Header)
        );
        assert_eq!(
            g.shown(&headers(&[("authorization", &basic("me:s3cret"))])),
            Some(Shown::Header)
        );
        assert_eq!(
            g.shown(&headers(&[("authorization", &basic("me:wrong"))])),
            None
        );
        assert_eq!(
            g.shown(&headers(&[("authorization", &basic("s3cret"))])),
            None
        );
        assert_eq!(
            g.shown(&headers(&[("cookie", "tracecheck_session=made-up")])),
            None
        );
        let set = g.sign_in().expect("a session");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let id = set
            .strip_prefix("tracecheck_session=")
            .and_then(|v| v.split(';').next())
            .expect("cookie value");
        let cookie = format!("theme=dark; tracecheck_session={id}");
        assert_eq!(
            g.shown(&headers(&[("cookie", &cookie)])),
            Some(Shown::Cookie)
        );
        assert_eq!(g.shown(&HeaderMap::new()), None);
    }

    #[test]
    fn health_metrics_and_sign_in_are_open_the_rest_is_not() {
        let g = gate();
        for path in ["/healthz", "/readyz", "/metrics", LOGIN_PATH] {
            assert!(g.is_open(false, &Method::GET, path), "{path}");
        }
        for path in [
            "/api/v1/results",
            "/api/v1/traces/ab",
            "/ui/",
            "/ui/trace/ab",
            "/api/v1/models",
        ] {
            assert!(!g.is_open(false, &Method::GET, path), "{path}");
        }
        assert!(g.is_open(true, &Method::POST, "/grpc.health.v1.Health/Check"));
        assert!(!g.is_open(true, &Method::POST, "/tracecheck.v1.VerdictService/Watch"));
        assert!(!g.is_open(
            true,
            &Method::POST,
            "/tracecheck.v1.VerdictService/Evaluate"
        ));
        let protected = Gate::new(Arc::clone(&g.token), false, true);
        assert!(!protected.is_open(false, &Method::GET, "/metrics"));
    }

    #[test]
    fn only_this_origin_counts_as_same_origin() {
        let here = [("host", "tc:9464")];
        let path = axum::http::Uri::from_static("/api/v1/models/reload");
        let same = |h: &[(&'static str, &str)]| same_origin(&headers(h), &path);
        assert!(same(&here), "a tool sends no Origin");
        assert!(same(&[here[0], ("origin", "https://tc:9464")]));
        assert!(!same(&[here[0], ("origin", "https://evil.example")]));
        assert!(!same(&[here[0], ("sec-fetch-site", "cross-site")]));
        assert!(!same(&[here[0], ("origin", "null")]));
        // HTTP/2: no Host header, the authority is in the URI.
        let h2 = axum::http::Uri::from_static("https://tc:9464/api/v1/models/reload");
        assert!(same_origin(&headers(&[("origin", "https://tc:9464")]), &h2));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            &h2
        ));
    }

    #[test]
    fn after_sign_in_only_our_own_paths() {
        assert_eq!(safe_next(Some("/ui/trace/ab")), "/ui/trace/ab");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil",
            "ui",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
    }
}
