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
        ..ClientTlsConfig::default()
    });
    exporter.auth = Some(AuthConfig {
        bearer_token: Some(Secret::new(TOKEN)),
        bearer_token_file: None,
    });
    up.exporters.set_otlp(exporter);
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

/// The downstream's CA is rotated: it comes back (same address) with a
/// server certificate of a new CA and wanting client certificates of that
/// CA. Once the exporter's files are replaced, it picks them up without a
/// restart (`tracecheck_tls_reloads_total{listener="exporter"}`) and the
/// spans sent after the rotation are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_certificates_reload_when_their_files_change() {
    let (old, new) = (Pki::new("old"), Pki::new("new"));
    let files = tempfile::tempdir().expect("tempdir");
    old.write_into(files.path());

    let mut down = util::config();
    down.receivers.otlp.tls = Some(old.server_tls(true));
    let first = util::start_daemon(down).await;
    let addr = first.grpc_addr.expect("downstream gRPC");

    let mut up = util::config();
    let mut exporter = util::forward_to(&format!("https://localhost:{}", addr.port()), "grpc");
    exporter.tls = Some(ClientTlsConfig {
        ca_file: Some(files.path().join("ca.pem")),
        cert_file: Some(files.path().join("client.pem")),
        key_file: Some(files.path().join("client.key")),
        reload_interval: std::time::Duration::from_millis(100),
        ..ClientTlsConfig::default()
    });
    up.exporters.set_otlp(exporter);
    let upstream = util::start_daemon(up).await;
    let mut client = util::grpc_client(&upstream).await;
    let accepted = |d: std::net::SocketAddr, n: f64| async move {
        util::wait_until(&format!("{n} spans accepted downstream"), || async {
            let got = util::metric(d, "tracecheck_receiver_accepted_spans_total", &[]).await;
            if got >= n {
                Ok(())
            } else {
                Err(format!("{got}"))
            }
        })
        .await
    };
    bounded("export", client.export(util::request_of(10, 1)))
        .await
        .expect("upstream takes the spans");
    accepted(first.admin_addr, 10.0).await;
    first.shutdown().await;

    // The rotation: the downstream trusts and shows only the new CA now.
    let mut down = util::config();
    down.receivers
        .otlp
        .grpc
        .as_mut()
        .expect("gRPC receiver")
        .endpoint = addr;
    down.receivers.otlp.tls = Some(new.server_tls(true));
    let second = util::start_daemon(down).await;
    new.write_into(files.path());
    util::wait_until("the exporter to reload its certificates", || async {
        let n = util::metric(
            upstream.admin_addr,
            "tracecheck_tls_reloads_total",
            &[("listener", "exporter")],
        )
        .await;
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n} reloads"))
        }
    })
    .await;
    bounded("export", client.export(util::request_of(10, 2)))
        .await
        .expect("upstream takes the spans");
    accepted(second.admin_addr, 10.0).await;
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
    second.shutdown().await;
}
