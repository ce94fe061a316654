//! Certificates replaced on disk while the daemon runs.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::pki::Pki;
use crate::util::{self, bounded};

/// The leaf certificate a new TLS connection to `addr` is shown, by a
/// client that trusts every CA in `cas`.
async fn leaf(addr: SocketAddr, cas: &[&str]) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA PEM"))
            .expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = bounded("TLS handshake", connector.connect(name, tcp))
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| "no peer certificate".to_string())
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

/// Replacing the certificate and key files puts the new certificate in
/// force for new connections without a restart; a broken file afterwards
/// is refused, counted, and the last good certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificates_are_used_and_broken_ones_refused() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let mut config = util::config();
    // The files the daemon watches are the first PKI's; the test rewrites them.
    config.receivers.otlp.tls = Some(first.server_tls(false));
    let daemon = util::start_daemon(config).await;
    let addr = daemon.http_addr.expect("HTTP");
    let both = [first.ca_pem.as_str(), second.ca_pem.as_str()];

    assert_eq!(leaf(addr, &both).await, Ok(der(&first.server_cert_pem)));

    second.write_into(first.dir.path());
    util::wait_until("the new certificate on new connections", || async {
        match leaf(addr, &both).await {
            Ok(c) if c == der(&second.server_cert_pem) => Ok(()),
            other => Err(format!("{:?}", other.map(|_| "the old certificate"))),
        }
    })
    .await;
    // A client trusting only the new CA now gets its spans taken.
    let client = crate::https_client(&second.ca_pem, None);
    let url = format!("https://localhost:{}/v1/traces", addr.port());
    let answer = crate::send(&client, crate::export_request(&url, 3, None))
        .await
        .expect("export under the new certificate");
    assert_eq!(answer.status, 200);
    assert!(
        util::metric(
            daemon.admin_addr,
            "tracecheck_tls_reloads_total",
            &[("listener", "otlp_http")]
        )
        .await
            >= 1.0
    );

    let failures = |text: &str| {
        util::sample(
            text,
            "tracecheck_tls_reload_failures_total",
            &[("listener", "otlp_http")],
        )
    };
    let before = failures(&util::scrape(daemon.admin_addr).await);
    std::fs::write(first.path("server.pem"), "not a certificate\n").expect("break the file");
    util::wait_until("the broken certificate to be refused", || async {
        let now = failures(&util::scrape(daemon.admin_addr).await);
        if now > before {
            Ok(())
        } else {
            Err(format!("{now} reload failures"))
        }
    })
    .await;
    assert_eq!(
        leaf(addr, &both).await,
        Ok(der(&second.server_cert_pem)),
        "the last good certificate stays in force"
    );
    daemon.shutdown().await;
}
