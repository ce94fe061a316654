//! Triggers: what starts a test's trace. `http` and `grpc` send the request
//! themselves with fresh trace context headers (W3C `traceparent` unless
//! the run chose other formats, see [`super::propagation`]), so the trace
//! ID is known before the system under test sees the request; `traceid`
//! waits for a trace started elsewhere, its ID read from a variable.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::context::RunContext;
use super::grpc;
use super::propagation::Propagation;
use crate::engine::{render_template, TriggerResponse};
use crate::ids::{SpanId, TraceId};
use crate::model::{ApiKeyLocation, Auth, HttpRequest, Template, Trigger};

/// Response bodies kept for assertions (`attr:tracetest.response.body`).
const MAX_BODY: usize = 4 << 20;

/// Why a trigger could not produce a trace.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{0}")]
    Render(String),
    #[error("trace id {value:?} from the traceid trigger is not a 32-digit hex trace ID")]
    BadTraceId { value: String },
    #[error("{method} {url}: {message}")]
    Http {
        method: String,
        url: String,
        message: String,
    },
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcError),
    /// A trigger type tracecheck does not send (loading refuses it first).
    #[error("{0}")]
    NotSent(String),
}

/// What a trigger did: the trace it started, and the response to assert
/// on (none for `traceid`).
#[derive(Debug, Clone)]
pub struct Triggered {
    pub trace_id: TraceId,
    pub response: Option<TriggerResponse>,
    /// `GET http://…`, `grpc pkg.Service/Method @ addr`, `traceid`.
    pub description: String,
}

/// A fresh trace ID (random, never all zero).
pub fn new_trace_id() -> TraceId {
    loop {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        b[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        let id = TraceId(b);
        if id.is_valid() {
            return id;
        }
    }
}

pub(crate) fn new_span_id() -> SpanId {
    loop {
        let id = SpanId(fastrand::u64(..).to_be_bytes());
        if id.is_valid() {
            return id;
        }
    }
}

pub(crate) fn render(t: &Template, ctx: &RunContext) -> Result<String, TriggerError> {
    render_template(t, &ctx.eval(None)).map_err(|e| {
        let p = t.loc.start();
        TriggerError::Render(format!("{}:{}:{}: {e}", t.loc.file(), p.line, p.column))
    })
}

/// The trace the trigger will start (known before sending: `traceid`
/// reads it, the others make one up that suits every format sent).
pub fn trace_id_for(
    trigger: &Trigger,
    ctx: &RunContext,
    propagation: &Propagation,
) -> Result<TraceId, TriggerError> {
    match trigger {
        Trigger::TraceId { id } => {
            let value = render(id, ctx)?;
            TraceId::parse_hex(value.trim())
                .ok()
                .filter(TraceId::is_valid)
                .ok_or(TriggerError::BadTraceId { value })
        }
        _ => Ok(propagation.new_trace_id()),
    }
}

/// Sends the trigger's request in trace `trace_id`, its context in each
/// of `propagation`'s formats.
pub async fn fire(
    trigger: &Trigger,
    trace_id: TraceId,
    propagation: &Propagation,
    ctx: &RunContext,
    base_dir: &Path,
    timeout: Duration,
) -> Result<Triggered, TriggerError> {
    match trigger {
        Trigger::Http(h) => http(h, trace_id, propagation, ctx, timeout).await,
        Trigger::Grpc(g) => {
            let (description, response) =
                grpc::call(g, trace_id, propagation, ctx, base_dir, timeout).await?;
            Ok(Triggered {
                trace_id,
                response: Some(response),
                description,
            })
        }
        Trigger::TraceId { .. } => Ok(Triggered {
            trace_id,
            response: None,
            description: format!("traceid {}", trace_id.to_hex()),
        }),
        Trigger::NotSent { .. } => Err(TriggerError::NotSent(
            trigger.not_sent_advice().unwrap_or_default(),
        )),
    }
}

/// `(header name, value)` pairs of an `auth` block, and query parameters.
pub(crate) struct AuthParts {
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
}

pub(crate) fn auth_parts(auth: Option<&Auth>, ctx: &RunContext) -> Result<AuthParts, TriggerError> {
    let mut parts = AuthParts {
        headers: Vec::new(),
        query: Vec::new(),
    };
    match auth {
        None => {}
        Some(Auth::Basic { username, password }) => {
            let raw = format!("{}:{}", render(username, ctx)?, render(password, ctx)?);
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
            parts
                .headers
                .push(("authorization".into(), format!("Basic {encoded}")));
        }
        Some(Auth::Bearer { token }) => {
            parts.headers.push((
                "authorization".into(),
                format!("Bearer {}", render(token, ctx)?),
            ));
        }
        Some(Auth::ApiKey {
            key,
            value,
            location,
        }) => {
            let v = render(value, ctx)?;
            match location {
                ApiKeyLocation::Header => parts.headers.push((key.clone(), v)),
                ApiKeyLocation::Query => parts.query.push((key.clone(), v)),
            }
        }
    }
    Ok(parts)
}

async fn http(
    h: &HttpRequest,
    trace_id: TraceId,
    propagation: &Propagation,
    ctx: &RunContext,
    timeout: Duration,
) -> Result<Triggered, TriggerError> {
    let url = render(&h.url, ctx)?;
    let method = h.method.clone();
    let fail = |message: String| TriggerError::Http {
        method: method.clone(),
        url: url.clone(),
        message,
    };
    // Tracetest upper-cases the method and reads a URL without a scheme
    // (`url: facebook.com` in its run-groups documentation) as http://, as
    // its urlx.Parse does (agent/workers/trigger/http.go).
    let m = http::Method::from_bytes(h.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| fail(format!("invalid HTTP method {:?}", h.method)))?;
    let auth = auth_parts(h.auth.as_ref(), ctx)?;
    let absolute = match url.contains("://") {
        true => url.clone(),
        false => format!("http://{url}"),
    };
    let mut target =
        reqwest::Url::parse(&absolute).map_err(|e| fail(format!("invalid URL: {e}")))?;
    if !auth.query.is_empty() {
        let mut q = target.query_pairs_mut();
        for (k, v) in &auth.query {
            q.append_pair(k, v);
        }
    }
    let mut req = http::Request::builder().method(m).uri(target.as_str());
    for hd in &h.headers {
        req = req.header(hd.key.as_str(), render(&hd.value, ctx)?);
    }
    for (k, v) in &auth.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    for (k, v) in propagation.headers(trace_id, new_span_id()) {
        req = req.header(k, v);
    }
    let body = match &h.body {
        Some(b) => bytes::Bytes::from(render(b, ctx)?),
        None => bytes::Bytes::new(),
    };
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| fail(format!("invalid request: {e}")))?;
    let https = target.scheme() == "https";
    let client = http_client(https, h.ssl_verification != Some(false)).map_err(&fail)?;
    let started = Instant::now();
    let (status, headers, body) = tokio::time::timeout(timeout, send(&client, req))
        .await
        .map_err(|_| {
            fail(format!(
                "no response within {}",
                crate::model::format_duration(timeout)
            ))
        })?
        .map_err(&fail)?;
    Ok(Triggered {
        trace_id,
        response: Some(TriggerResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            headers,
            duration: Some(started.elapsed()),
        }),
        description: format!("{} {url}", h.method),
    })
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A client for one trigger: plain HTTP, or HTTPS trusting the system's CA
/// certificates (or, with `sslVerification: false`, any certificate).
fn http_client(https: bool, verify: bool) -> Result<HttpClient, String> {
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let tls = if https {
        crate::net::tls::trigger_client_config(verify).map_err(|e| e.to_string())?
    } else {
        // Never used for an http:// URL, but the connector wants one.
        crate::net::tls::trigger_client_config(false).map_err(|e| e.to_string())?
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// Sends the request; the response's status, headers and up to
/// [`MAX_BODY`] bytes of its body.
async fn send(
    client: &HttpClient,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    use http_body_util::BodyExt as _;
    let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let mut stream = resp.into_body();
    while let Some(frame) = stream.frame().await {
        let frame = frame.map_err(|e| format!("reading the response: {}", error_chain(&e)))?;
        if let Some(data) = frame.data_ref() {
            let room = MAX_BODY.saturating_sub(body.len());
            body.extend_from_slice(&data[..data.len().min(room)]);
            if body.len() >= MAX_BODY {
                break;
            }
        }
    }
    Ok((status, headers, body))
}

pub(crate) use crate::net::client::error_chain;
