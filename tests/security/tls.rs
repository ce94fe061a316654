//! TLS and mTLS on the receivers and the admin port.

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracecheck::config::Config;

use crate::pki::Pki;
use crate::util::{self, bounded};

const SPANS: u64 = 20;

fn tls_config(pki: &Pki, mtls: bool) -> Config {
    let mut c = util::config();
    c.receivers.otlp.tls = Some(pki.server_tls(mtls));
    c
}

fn https(addr: std::net::SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

async fn accepted(d: &util::TestDaemon, transport: &str) -> f64 {
    util::metric(
        d.admin_addr,
        "tracecheck_receiver_accepted_spans_total",
        &[("transport", transport)],
    )
    .await
}

/// The OpenTelemetry SDK's gRPC exporter, configured for TLS as an
/// application would, sends `SPANS` spans; the daemon takes every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_exporter_over_tls_is_taken() {
    let pki = Pki::new("sdk");
    let daemon = util::start_daemon(tls_config(&pki, false)).await;
    let endpoint = https(daemon.grpc_addr.expect("gRPC"));
    let tls = pki.tonic_client(false);
    bounded("SDK export over TLS", async move {
        tokio::task::spawn_blocking(move || {
            let exporter = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_tls_config(tls)
                .build()
                .expect("SDK exporter");
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("security");
            for i in 0..SPANS {
                tracer.start(format!("op {i}")).end();
            }
            provider.force_flush().expect("the daemon took every batch");
            provider.shutdown().expect("SDK shutdown");
        })
        .await
        .expect("SDK thread");
    })
    .await;
    assert_eq!(accepted(&daemon, "grpc").await, SPANS as f64);
    daemon.shutdown().await;
}

/// OTLP/HTTP over TLS (HTTP/1.1 and HTTP/2 both offered) is taken; a
/// client that does not trust the server's CA never gets to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_tls_is_taken_and_an_untrusted_server_is_not_talked_to() {
    let pki = Pki::new("http");
    let daemon = util::start_daemon(tls_config(&pki, false)).await;
    let url = format!("{}/v1/traces", https(daemon.http_addr.expect("HTTP")));

    let client = crate::https_client(&pki.ca_pem, None);
    let answer = crate::send(&client, crate::export_request(&url, 7, None))
        .await
        .expect("HTTPS export");
    assert_eq!(answer.status, 200);
    assert_eq!(accepted(&daemon, "http").await, 7.0);

    let stranger = Pki::new("stranger");
    let untrusting = crate::https_client(&stranger.ca_pem, None);
    let err = crate::send(&untrusting, crate::export_request(&url, 7, None))
        .await
        .err()
        .expect("a client trusting another CA refuses the server");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(accepted(&daemon, "http").await, 7.0);
    daemon.shutdown().await;
}

/// With `client_ca_file`, a client without a certificate is refused during
/// the handshake — nothing it sends is taken, and the refusal is counted —
/// while a client with a certificate from that CA is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate() {
    let pki = Pki::new("mtls");
    let daemon = util::start_daemon(tls_config(&pki, true)).await;
    let grpc = https(daemon.grpc_addr.expect("gRPC"));
    let http = format!("{}/v1/traces", https(daemon.http_addr.expect("HTTP")));

    // gRPC without a client certificate.
    let channel = tonic::transport::Channel::from_shared(grpc.clone())
        .expect("endpoint")
        .tls_config(pki.tonic_client(false))
        .expect("TLS config");
    let result = bounded("gRPC export without client certificate", async {
        let mut client =
            opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(
                channel.connect().await?,
            );
        client
            .export(util::request_of(5, 1))
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)
    })
    .await;
    assert!(
        result.is_err(),
        "export without a client certificate went through"
    );

    // HTTP without a client certificate. Under TLS 1.3 the client learns of
    // the refusal only when it reads; on a loaded machine that read has
    // been seen to hang (1 run in many), so a refusal that never answers
    // counts as one: what matters is that no span was taken (below).
    let anonymous = crate::https_client(&pki.ca_pem, None);
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        crate::send(&anonymous, crate::export_request(&http, 5, None)),
    )
    .await;
    assert!(
        !matches!(sent, Ok(Ok(_))),
        "HTTP export without a client certificate went through"
    );

    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        0.0
    );
    assert!(
        util::sample(&text, "tracecheck_tls_handshake_failures_total", &[]) >= 2.0,
        "handshake refusals are counted:\n{text}"
    );

    // With the certificate: both are served.
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(
            tonic::transport::Channel::from_shared(grpc)
                .expect("endpoint")
                .tls_config(pki.tonic_client(true))
                .expect("TLS config")
                .connect()
                .await
                .expect("mTLS connect"),
        );
    bounded(
        "gRPC export with client certificate",
        client.export(util::request_of(5, 2)),
    )
    .await
    .expect("export with a client certificate");
    let known = crate::https_client(
        &pki.ca_pem,
        Some((&pki.client_cert_pem, &pki.client_key_pem)),
    );
    let answer = crate::send(&known, crate::export_request(&http, 5, None))
        .await
        .expect("HTTP export with a client certificate");
    assert_eq!(answer.status, 200);
    assert_eq!(util::accepted_spans(&daemon).await, 10.0);
    daemon.shutdown().await;
}

/// A plain-text client on a TLS port gets nowhere and nothing is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_on_a_tls_port_is_refused() {
    let pki = Pki::new("plain");
    let daemon = util::start_daemon(tls_config(&pki, false)).await;
    let result = bounded("plain HTTP to a TLS port", async {
        util::http_client()
            .post(format!(
                "http://{}/v1/traces",
                daemon.http_addr.expect("HTTP")
            ))
            .header("content-type", "application/x-protobuf")
            .body(Vec::new())
            .send()
            .await
    })
    .await;
    assert!(result.is_err(), "plain text was answered: {result:?}");
    assert_eq!(util::accepted_spans(&daemon).await, 0.0);
    daemon.shutdown().await;
}

/// `GET /metrics` of the admin endpoint at `addr`, over TLS, answered 200.
async fn metrics_over_tls(
    client: &hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
    addr: std::net::SocketAddr,
) -> String {
    let url = format!("{}/metrics", https(addr));
    let page = crate::send(
        client,
        http::Request::get(url)
            .body(Default::default())
            .expect("request"),
    )
    .await
    .expect("GET /metrics over TLS");
    assert_eq!(page.status, 200);
    String::from_utf8_lossy(&page.body).into_owned()
}

/// `admin.tls`: metrics and the API over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_serves_over_tls() {
    let pki = Pki::new("admin");
    let mut config = util::config();
    config.admin.tls = Some(pki.server_tls(false));
    let daemon = util::start_daemon(config).await;
    let client = crate::https_client(&pki.ca_pem, None);
    let text = metrics_over_tls(&client, daemon.admin_addr).await;
    assert!(text.contains("tracecheck_buffer_traces"));
    daemon.shutdown().await;
}

/// `admin.tls.client_ca_file`: the admin endpoint (metrics, API) answers
/// only clients that show a certificate of that CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_with_mtls_refuses_clients_without_a_certificate() {
    let pki = Pki::new("admin-mtls");
    let mut config = util::config();
    config.admin.tls = Some(pki.server_tls(true));
    let daemon = util::start_daemon(config).await;
    let url = format!("{}/metrics", https(daemon.admin_addr));
    let get = || {
        http::Request::get(url.clone())
            .body(Default::default())
            .expect("request")
    };
    let anonymous = crate::https_client(&pki.ca_pem, None);
    assert!(
        crate::send(&anonymous, get()).await.is_err(),
        "a client without a certificate was answered"
    );
    let known = crate::https_client(
        &pki.ca_pem,
        Some((&pki.client_cert_pem, &pki.client_key_pem)),
    );
    let answer = crate::send(&known, get())
        .await
        .expect("GET /metrics with a client certificate");
    assert_eq!(answer.status, 200);
    daemon.shutdown().await;
}

/// A scale-out tier whose admin endpoints are on TLS (`admin.tls`): an
/// instance announces to its peer over HTTPS, the certificate checked
/// against the peer's host name, trusting `tier.tls.ca_file`; without that
/// CA the peer is not told, and that is counted, never sent in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_announcements_reach_peers_whose_admin_is_on_tls() {
    use tracecheck::tier::ChangeKind;
    let pki = Pki::new("tier");
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        })
        .collect();
    let start = |admin: u16, peer: u16, ca: bool| {
        let mut config = util::config();
        config.admin.endpoint = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
        config.admin.tls = Some(pki.server_tls(false));
        // By name: the certificate is checked against it.
        config.tier.peers = vec![format!("localhost:{peer}")];
        config.tier.tls = ca.then(|| tracecheck::net::tls::ClientTlsConfig {
            ca_file: Some(pki.path("ca.pem")),
            ..Default::default()
        });
        util::start_daemon(config)
    };
    let a = start(ports[0], ports[1], true).await;
    let b = start(ports[1], ports[0], false).await;
    // localhost may also resolve to ::1, where nothing listens.
    let told = a.tier.announce(ChangeKind::Leaving).await;
    assert_eq!(told, 1, "a told b over TLS");
    let client = crate::https_client(&pki.ca_pem, None);
    let notices = |daemon: std::net::SocketAddr, outcome: &'static str| {
        let client = client.clone();
        async move {
            let text = metrics_over_tls(&client, daemon).await;
            let line = format!(
                "tracecheck_tier_notices_total{{change=\"leaving\",outcome=\"{outcome}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    assert_eq!(notices(b.admin_addr, "received").await, 1.0);
    // b trusts only the system's CAs: a's certificate is refused.
    assert_eq!(b.tier.announce(ChangeKind::Leaving).await, 0);
    let failed = notices(b.admin_addr, "failed").await;
    assert!(failed >= 1.0, "counted: {failed}");
    assert_eq!(notices(a.admin_addr, "received").await, 0.0, "not told");
    a.shutdown().await;
    b.shutdown().await;
}
