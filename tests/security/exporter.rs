//! The exporter towards a downstream that wants TLS, a client certificate
//! and a bearer token: here a second tracecheck whose receivers ask for all
//! three (they are tested against the real SDK in `tls.rs` and `auth.rs`).

use tracecheck::net::auth::AuthConfig;
use tracecheck::net::secret::Secret;
use tracecheck::net::tls::ClientTlsConfig;

use crate::pki::Pki;
use crate::util::{self, bounded};

const TOKEN: &str = "downstream-token";

async fn forwards_over_mtls(protocol: &str) {
    let pki = Pki::new("downstream");
    let mut down = util::config();
    down.receivers.otlp.tls = Some(pki.server_tls(true));
    down.receivers.otlp.auth = Some(AuthConfig {
        bearer_token: Some(Secret::new(TOKEN)),
        bearer_token_file: None,
    });
    let downstream = util::start_daemon(down).await;
    let port = match protocol {
        "grpc" => downstream.grpc_addr,
        _ => downstream.http_addr,
    }
    .expect("downstream listens")
    .port();

    let mut up = util::config();
    let mut exporter = util::forward_to(&format!("https://localhost:{port}"), protocol);
    exporter.tls = Some(ClientTlsConfig {
        ca_file: Some(pki.path("ca.pem")),
        cert_file: Some(pki.path("client.pem")),
        key_file: Some(pki.path("client.key")),
    });
    exporter.auth = Some(AuthConfig {
        bearer_token: Some(Secret::new(TOKEN)),
        bearer_token_file: None,
    });
    up.exporters.otlp = Some(exporter);
    let upstream = util::start_daemon(up).await;

    let mut client = util::grpc_client(&upstream).await;
    for seed in 0..3 {
        bounded("export", client.export(util::request_of(10, seed)))
            .await
            .expect("upstream takes the spans");
    }
    util::wait_until("30 spans accepted downstream", || async {
        let text = util::scrape(downstream.admin_addr).await;
        let n = util::sample(&text, "tracecheck_receiver_accepted_spans_total", &[]);
        if n >= 30.0 {
            Ok(n)
        } else {
            Err(format!(
                "{n} accepted downstream; upstream exporter: {}",
                util::scrape(upstream.admin_addr)
                    .await
                    .lines()
                    .filter(|l| l.starts_with("tracecheck_exporter"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        }
    })
    .await;
    let text = util::scrape(downstream.admin_addr).await;
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        30.0
    );
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_refused_requests_total", &[]),
        0.0
    );
    assert_eq!(
        util::metric(
            upstream.admin_addr,
            "tracecheck_exporter_failed_spans_total",
            &[]
        )
        .await,
        0.0
    );
    upstream.shutdown().await;
    downstream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_forwards_over_mtls_with_a_token() {
    forwards_over_mtls("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exporter_forwards_over_mtls_with_a_token() {
    forwards_over_mtls("http/protobuf").await;
}
