//! Bearer tokens: `receivers.otlp.auth` and `admin.auth`.

use tracecheck::admin::grpc_api::pb;
use tracecheck::admin::grpc_api::pb::model_service_client::ModelServiceClient;
use tracecheck::admin::grpc_api::pb::verdict_service_client::VerdictServiceClient;
use tracecheck::net::auth::AuthConfig;
use tracecheck::net::secret::Secret;

use crate::util::{self, bounded};

const TOKEN: &str = "correct-horse-battery-staple";

fn auth() -> Option<AuthConfig> {
    Some(AuthConfig {
        bearer_token: Some(Secret::new(TOKEN)),
        bearer_token_file: None,
    })
}

/// An OTLP/HTTP protobuf post, with a bearer token and a browser's
/// `Origin` when given.
fn post_protobuf(
    daemon: &util::TestDaemon,
    body: Vec<u8>,
    token: Option<&str>,
    origin: Option<&str>,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    let mut req = util::http_client()
        .post(util::http_url(daemon))
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send()
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("metadata value"),
        );
    }
    r
}

/// gRPC: no token and a wrong token are UNAUTHENTICATED, counted as
/// refused requests, and take nothing; the right token is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_receiver_refuses_missing_and_wrong_tokens() {
    let mut config = util::config();
    config.receivers.otlp.auth = auth();
    let daemon = util::start_daemon(config).await;
    let mut client = util::grpc_client(&daemon).await;
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let status = bounded(
            "export",
            client.export(with_token(util::request_of(4, 1), token)),
        )
        .await
        .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}");
        assert!(!status.message().contains(TOKEN));
        assert_eq!(
            status
                .metadata()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap_or("")),
            Some("Bearer")
        );
    }
    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        0.0
    );
    assert_eq!(util::sample(&text, "tracecheck_buffer_spans", &[]), 0.0);
    assert_eq!(
        util::sample(
            &text,
            "tracecheck_receiver_refused_requests_total",
            &[("transport", "grpc"), ("reason", "unauthenticated")]
        ),
        3.0
    );

    bounded(
        "export",
        client.export(with_token(util::request_of(4, 2), Some(TOKEN))),
    )
    .await
    .expect("the right token is served");
    assert_eq!(util::accepted_spans(&daemon).await, 4.0);
    daemon.shutdown().await;
}

/// HTTP: 401 with `WWW-Authenticate: Bearer`, nothing taken; the right
/// token is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_receiver_refuses_missing_and_wrong_tokens() {
    use prost::Message as _;
    let mut config = util::config();
    config.receivers.otlp.auth = auth();
    let daemon = util::start_daemon(config).await;
    let body = util::request_of(6, 3).encode_to_vec();
    let post = |token: Option<&str>| post_protobuf(&daemon, body.clone(), token, None);
    for token in [None, Some("wrong")] {
        let resp = bounded("POST", post(token)).await.expect("answered");
        assert_eq!(resp.status(), 401, "{token:?}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        0.0
    );
    assert_eq!(
        util::sample(
            &text,
            "tracecheck_receiver_refused_requests_total",
            &[("transport", "http"), ("reason", "unauthenticated")]
        ),
        2.0
    );
    let resp = bounded("POST", post(Some(TOKEN))).await.expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(util::accepted_spans(&daemon).await, 6.0);
    daemon.shutdown().await;
}

/// A protocol's own `auth` (the Collector's place for it,
/// `receivers.otlp.protocols.http.auth`) guards that protocol alone: the
/// HTTP receiver wants the token, the gRPC one beside it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocols_own_token_guards_that_protocol_alone() {
    use prost::Message as _;
    let mut config = util::config();
    if let Some(http) = config.receivers.otlp.http.as_mut() {
        http.auth = auth();
    }
    let daemon = util::start_daemon(config).await;
    let body = util::request_of(3, 5).encode_to_vec();
    let post = |token: Option<&str>| post_protobuf(&daemon, body.clone(), token, None);
    let resp = bounded("POST", post(None)).await.expect("answered");
    assert_eq!(resp.status(), 401);
    let resp = bounded("POST", post(Some(TOKEN))).await.expect("answered");
    assert_eq!(resp.status(), 200);
    let mut client = util::grpc_client(&daemon).await;
    bounded(
        "export",
        client.export(with_token(util::request_of(4, 6), None)),
    )
    .await
    .expect("gRPC has no token to ask for");
    assert_eq!(util::accepted_spans(&daemon).await, 7.0);
    daemon.shutdown().await;
}

/// A browser SDK on an allowed origin (`cors.allowed_origins`, the
/// Collector's key) can send: its preflight is answered without a token
/// (browsers send none on it), its post with the token is taken and
/// marked for that origin. Another origin's preflight gets no permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_allowed_origins_pass_cors_and_still_need_the_token() {
    use prost::Message as _;
    let mut config = util::config();
    if let Some(http) = config.receivers.otlp.http.as_mut() {
        http.auth = auth();
        http.cors = Some(tracecheck::receiver::config::CorsConfig {
            allowed_origins: vec!["https://*.example.com".into()],
            allowed_headers: vec!["X-Custom".into()],
            max_age: Some(600),
        });
    }
    let daemon = util::start_daemon(config).await;
    let preflight = |origin: &'static str| {
        util::http_client()
            .request(reqwest::Method::OPTIONS, util::http_url(&daemon))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization,x-custom",
            )
            .send()
    };
    let resp = bounded("preflight", preflight("https://shop.example.com"))
        .await
        .expect("answered");
    assert!(resp.status().is_success(), "{:?}", resp.status());
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("https://shop.example.com")
    );
    let allowed = header(&resp, "access-control-allow-headers").unwrap_or_default();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-custom"),
        "{allowed}"
    );
    assert_eq!(
        header(&resp, "access-control-max-age").as_deref(),
        Some("600")
    );

    let resp = bounded("preflight", preflight("https://evil.test"))
        .await
        .expect("answered");
    assert!(header(&resp, "access-control-allow-origin").is_none());

    let body = util::request_of(2, 9).encode_to_vec();
    let post = |token: Option<&str>| {
        post_protobuf(
            &daemon,
            body.clone(),
            token,
            Some("https://shop.example.com"),
        )
    };
    let resp = bounded("POST", post(None)).await.expect("answered");
    assert_eq!(resp.status(), 401, "CORS does not stand in for the token");
    let resp = bounded("POST", post(Some(TOKEN))).await.expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("https://shop.example.com")
    );
    daemon.shutdown().await;
}

/// A token file is re-read when it changes: the new token is taken, the
/// old one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_token_file_takes_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "first-token\n").expect("write token");
    let mut config = util::config();
    config.receivers.otlp.auth = Some(AuthConfig {
        bearer_token: None,
        bearer_token_file: Some(file.clone()),
    });
    let daemon = util::start_daemon(config).await;
    let url = util::http_url(&daemon);
    let status = |token: &'static str| {
        let url = url.clone();
        async move {
            util::http_client()
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body("{}")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(status("first-token").await, Ok(200));
    std::fs::write(&file, "second-token\n").expect("rewrite token");
    util::wait_until("the new token to be in force", || async {
        match status("second-token").await {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(status("first-token").await, Ok(401));
    daemon.shutdown().await;
}

/// `admin.auth`: everything that changes something or shows trace data
/// needs the token — the API's writes and reads, gRPC Reload, List and
/// Watch — shown as a bearer token or as basic auth's password; health and
/// `/metrics` stay open for probes and Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_auth_guards_trace_data_and_writes_not_health_or_metrics() {
    let mut config = util::config();
    config.admin.auth = auth();
    let (daemon, _models) = tracecheck::daemon::start_daemon(config, Vec::new())
        .await
        .expect("daemon starts");
    let base = format!("http://{}", daemon.admin_addr);
    let client = util::http_client();
    let reload = |token: Option<&str>| {
        let mut req = client.post(format!("{base}/api/v1/models/reload"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    for token in [None, Some("wrong")] {
        let resp = bounded("reload", reload(token)).await.expect("answered");
        assert_eq!(resp.status(), 401, "{token:?}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer, Basic realm=\"tracecheck\"")
        );
        assert!(!resp.text().await.unwrap_or_default().contains(TOKEN));
    }
    // Any other write, existing or not yet, is guarded the same way.
    let resp = bounded(
        "POST elsewhere",
        client.post(format!("{base}/api/v1/runs")).send(),
    )
    .await
    .expect("answered");
    assert_eq!(resp.status(), 401);
    let resp = bounded("reload", reload(Some(TOKEN)))
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    for path in ["/metrics", "/healthz"] {
        let resp = bounded("GET", client.get(format!("{base}{path}")).send())
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200, "GET {path} needs no token");
    }
    // Trace data: refused without the token, given with it (either way).
    for path in [
        "/api/v1/models",
        "/api/v1/results",
        "/api/v1/traces/0123456789abcdef0123456789abcdef",
    ] {
        let resp = bounded("GET", client.get(format!("{base}{path}")).send())
            .await
            .expect("answered");
        assert_eq!(resp.status(), 401, "GET {path} without the token");
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"results\"") && !body.contains("\"models\""),
            "{path}: {body}"
        );
        let resp = bounded(
            "GET",
            client
                .get(format!("{base}{path}"))
                .basic_auth("anyone", Some(TOKEN))
                .send(),
        )
        .await
        .expect("answered");
        assert_ne!(
            resp.status(),
            401,
            "GET {path} with the token as basic auth"
        );
        let resp = bounded(
            "GET",
            client
                .get(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .send(),
        )
        .await
        .expect("answered");
        assert_ne!(resp.status(), 401, "GET {path} with the bearer token");
    }
    assert_eq!(
        util::metric(
            daemon.admin_addr,
            "tracecheck_admin_unauthenticated_requests_total",
            &[]
        )
        .await,
        6.0
    );

    let mut models = ModelServiceClient::connect(base.clone())
        .await
        .expect("connect");
    let status = bounded("List", models.list(pb::ListModelsRequest::default()))
        .await
        .expect_err("List without a token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    bounded(
        "List",
        models.list(with_token(pb::ListModelsRequest::default(), Some(TOKEN))),
    )
    .await
    .expect("List with the token");
    let mut verdicts = VerdictServiceClient::connect(base.clone())
        .await
        .expect("connect");
    let status = bounded("Watch", verdicts.watch(pb::WatchRequest::default()))
        .await
        .expect_err("Watch without a token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = bounded(
        "Reload",
        models.reload(with_token(pb::ReloadModelsRequest::default(), None)),
    )
    .await
    .expect_err("Reload without a token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = bounded(
        "Reload",
        models.reload(with_token(
            pb::ReloadModelsRequest::default(),
            Some("wrong"),
        )),
    )
    .await
    .expect_err("Reload with a wrong token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    bounded(
        "Reload",
        models.reload(with_token(pb::ReloadModelsRequest::default(), Some(TOKEN))),
    )
    .await
    .expect("Reload with the token");
    daemon.shutdown().await;
}

/// A browser signs in once at `/ui/login` with the admin token (over the
/// admin endpoint's TLS): a page asked for without it goes to the form and
/// back; the session cookie is HTTP-only, `SameSite=Strict` and `Secure`,
/// and reads trace data; a change on the cookie's say-so from another site
/// is refused, as is a sign-in posted from another site; signing out ends
/// the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_once_and_other_sites_cannot_use_its_session() {
    let pki = crate::pki::Pki::new("signin");
    let mut config = util::config();
    config.admin.auth = auth();
    config.admin.tls = Some(pki.server_tls(false));
    let (daemon, _models) = tracecheck::daemon::start_daemon(config, Vec::new())
        .await
        .expect("daemon starts");
    let origin = format!("https://localhost:{}", daemon.admin_addr.port());
    let trust = tracecheck::net::tls::ClientTlsConfig {
        ca_file: Some(pki.path("ca.pem")),
        ..Default::default()
    };
    // Redirects are read, not followed, as a test of what the browser is told.
    let client = tracecheck::net::client::builder(Some(&trust), "test")
        .expect("TLS")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = bounded(
        "GET a page",
        client
            .get(format!("{origin}/ui/failures?model=m"))
            .header("accept", "text/html")
            .send(),
    )
    .await
    .expect("answered");
    assert_eq!(page.status(), 303);
    assert_eq!(
        page.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui/login?next=/ui/failures%3Fmodel%3Dm")
    );
    let form = bounded(
        "GET the form",
        client.get(format!("{origin}/ui/login")).send(),
    )
    .await
    .expect("answered");
    assert_eq!(form.status(), 200);
    assert!(form
        .text()
        .await
        .unwrap_or_default()
        .contains("type=\"password\""));

    let sign_in = |origin_header: &str, token: &str| {
        client
            .post(format!("{origin}/ui/login"))
            .header("origin", origin_header)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next=%2Fui%2Ffailures"))
            .send()
    };
    let elsewhere = bounded("sign in", sign_in("https://evil.example", TOKEN))
        .await
        .expect("answered");
    assert_eq!(
        elsewhere.status(),
        403,
        "a sign-in posted from another site"
    );
    let wrong = bounded("sign in", sign_in(&origin, "wrong"))
        .await
        .expect("answered");
    assert_eq!(wrong.status(), 303);
    assert!(wrong.headers().get("set-cookie").is_none());
    let signed = bounded("sign in", sign_in(&origin, TOKEN))
        .await
        .expect("answered");
    assert_eq!(signed.status(), 303);
    assert_eq!(
        signed
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/ui/failures")
    );
    let set = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let cookie = set.split(';').next().expect("name=value").to_owned();

    let results = |what: &'static str| {
        let request = client
            .get(format!("{origin}/api/v1/results"))
            .header("cookie", &cookie)
            .send();
        async move { bounded(what, request).await.expect("answered").status() }
    };
    assert_eq!(results("GET with the session").await, 200);
    let reload = |from: &str| {
        client
            .post(format!("{origin}/api/v1/models/reload"))
            .header("cookie", &cookie)
            .header("origin", from)
            .send()
    };
    let forged = bounded("reload from elsewhere", reload("https://evil.example"))
        .await
        .expect("answered");
    assert_eq!(forged.status(), 403);
    let own = bounded("reload from our page", reload(&origin))
        .await
        .expect("answered");
    assert_eq!(own.status(), 200);

    let out = bounded(
        "sign out",
        client
            .post(format!("{origin}/ui/logout"))
            .header("cookie", &cookie)
            .header("origin", &origin)
            .send(),
    )
    .await
    .expect("answered");
    assert_eq!(out.status(), 303);
    assert_eq!(results("GET after signing out").await, 401);
    daemon.shutdown().await;
}
