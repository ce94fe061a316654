//! TLS configuration (the Collector's `configtls` keys) turned into rustls
//! configs, with the ring provider, and server certificates that reload when
//! their files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::watch::FileWatch;
use crate::metrics::{Metrics, TlsLabels};

/// `tls:` of a server (receivers, admin endpoint).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates. Set → every client must present a certificate
    /// signed by one of them (mTLS); the handshake fails otherwise.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often the three files are checked for changes. New connections
    /// get new certificates; a change that does not load keeps the old ones.
    #[serde(default = "default_reload_interval", with = "crate::duration")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}

/// `exporters.otlp.tls`: how the exporter trusts an `https://` downstream
/// and, for mTLS, which certificate it shows.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM CA certificates to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for downstreams that require one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for changes; new connections use
    /// what loaded last (a change that does not load keeps the old ones).
    #[serde(default = "default_reload_interval", with = "crate::duration")]
    pub reload_interval: Duration,
    /// The Collector's `insecure: true`: plain text, no TLS at all (taken
    /// into the endpoint's scheme when the config is read; exporters only).
    #[serde(default, skip_serializing)]
    pub insecure: bool,
    /// TLS without checking the server's certificate (the Collector's key;
    /// a test set-up's self-signed downstream). Logged at start: anyone on
    /// the path can read and change what is sent.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            reload_interval: default_reload_interval(),
            insecure: false,
            insecure_skip_verify: false,
        }
    }
}

/// Certificates or keys that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {path} holds no PEM certificate")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{key}: {path} holds no usable PEM private key ({detail})")]
    Key {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{key}: {detail}")]
    Invalid { key: &'static str, detail: String },
}

/// The one crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A client config for test triggers: the system's CA certificates, or
/// with `verify == false` (a test file's `sslVerification: false`) none at
/// all: any certificate is taken, as the file asks. Never used for
/// telemetry (exporter, receivers), only for a test's own request.
///
/// No ALPN is set: hyper-rustls offers the HTTP versions it enables.
pub fn trigger_client_config(verify: bool) -> Result<ClientConfig, TlsError> {
    if verify {
        return client_config(&ClientTlsConfig::default(), "trigger (https://)", &[]);
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid("trigger (https://)"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        .with_no_client_auth())
}

fn warn_unverified(key: &'static str) {
    tracing::warn!(key, "insecure_skip_verify: the server's certificate is not checked; anyone on the path can read and change what is sent.");
}

/// `sslVerification: false`: signatures are still checked to be well-formed
/// for the negotiated scheme, but no certificate is judged.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Key {
        key,
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(key, path)? {
        store.add(c).map_err(|e| TlsError::Invalid {
            key,
            detail: format!("CA certificate in {}: {e}", path.display()),
        })?;
    }
    Ok(store)
}

fn invalid(key: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |e| TlsError::Invalid {
        key,
        detail: e.to_string(),
    }
}

/// A rustls server config from the files as they are now.
fn server_config(
    c: &ServerTlsConfig,
    key: &'static str,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let chain = certs(key, &c.cert_file)?;
    let private = private_key(key, &c.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid(key))?;
    let builder = match &c.client_ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(key, ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Invalid {
                        key,
                        detail: format!("client_ca_file {}: {e}", ca.display()),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // with_single_cert also checks that the key belongs to the certificate.
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(invalid(key))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server's TLS config, swapped whole when its files change.
///
/// Swapping the whole `ServerConfig` (rather than only the certificate
/// through a `ResolvesServerCert`) also reloads `client_ca_file`. Each
/// connection takes the config in force when it was accepted; connections
/// already open keep theirs.
pub struct ServerTls {
    key: &'static str,
    config: ServerTlsConfig,
    alpn: Vec<&'static [u8]>,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files; `key` names the config section in errors, `alpn` is
    /// what the listener speaks (`h2` for gRPC, plus `http/1.1` for HTTP).
    pub fn load(
        config: &ServerTlsConfig,
        key: &'static str,
        alpn: &[&'static [u8]],
    ) -> Result<Arc<Self>, TlsError> {
        let current = server_config(config, key, alpn)?;
        Ok(Arc::new(Self {
            key,
            config: config.clone(),
            alpn: alpn.to_vec(),
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// The config for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read())
    }

    /// Checks the files every `reload_interval` until `stop`; a change that
    /// loads replaces the config, one that does not is logged and counted in
    /// `tracecheck_tls_reload_failures_total{listener}` and the previous
    /// config stays in force.
    pub fn spawn_reload(
        self: &Arc<Self>,
        listener: &'static str,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        if self.config.reload_interval.is_zero() {
            return;
        }
        let mut paths = vec![self.config.cert_file.clone(), self.config.key_file.clone()];
        paths.extend(self.config.client_ca_file.clone());
        let mut watch = FileWatch::new(paths);
        let weak = Arc::downgrade(self);
        let interval = self.config.reload_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if weak.strong_count() == 0 {
                    return;
                }
                if !watch.changed() {
                    continue;
                }
                let Some(this) = weak.upgrade() else { return };
                match server_config(&this.config, this.key, &this.alpn) {
                    Ok(c) => {
                        *this.current.write() = Arc::new(c);
                        metrics
                            .tls_reloads
                            .get_or_create(&TlsLabels::new(listener))
                            .inc();
                        tracing::info!(
                            listener,
                            "TLS certificates changed; new ones in force for new connections."
                        );
                    }
                    Err(e) => {
                        metrics
                            .tls_reload_failures
                            .get_or_create(&TlsLabels::new(listener))
                            .inc();
                        tracing::error!(listener, error = %e, "TLS certificate reload refused; the previous certificates stay in force.");
                    }
                }
            }
        });
    }
}

/// The exporter's side of TLS: trust and client certificate re-read from
/// their files when they change, like the servers' ([`ServerTls`]). The
/// rustls config handed to the connector asks this for the current
/// verifier and certificate at every handshake, so new connections use
/// rotated certificates and open ones keep theirs.
pub struct ClientTls {
    key: &'static str,
    config: ClientTlsConfig,
    current: RwLock<ClientMaterial>,
}

struct ClientMaterial {
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    cert: Option<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("key", &self.key).finish()
    }
}

impl ClientTls {
    /// Loads the files; `key` names the config section in errors.
    pub fn load(config: &ClientTlsConfig, key: &'static str) -> Result<Arc<Self>, TlsError> {
        let current = client_material(config, key)?;
        Ok(Arc::new(Self {
            key,
            config: config.clone(),
            current: RwLock::new(current),
        }))
    }

    /// A rustls config that reads this at each handshake. No ALPN is set:
    /// the HTTP connector offers what it speaks.
    pub fn rustls_config(self: &Arc<Self>) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid(self.key))?
            .dangerous();
        let builder = if self.config.insecure_skip_verify {
            warn_unverified(self.key);
            builder.with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else {
            builder.with_custom_certificate_verifier(Arc::new(CurrentVerifier(Arc::clone(self))))
        };
        Ok(if self.config.cert_file.is_some() {
            builder.with_client_cert_resolver(Arc::new(CurrentCert(Arc::clone(self))))
        } else {
            builder.with_no_client_auth()
        })
    }

    /// Checks the files every `reload_interval` while this is alive; a
    /// change that loads is used for new connections, one that does not is
    /// logged and counted (`tracecheck_tls_reload_failures_total{listener}`).
    pub fn spawn_reload(self: &Arc<Self>, name: &'static str, metrics: Arc<Metrics>) {
        if self.config.reload_interval.is_zero() {
            return;
        }
        let paths: Vec<PathBuf> = [
            &self.config.ca_file,
            &self.config.cert_file,
            &self.config.key_file,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        if paths.is_empty() {
            return;
        }
        let mut watch = FileWatch::new(paths);
        let weak = Arc::downgrade(self);
        let interval = self.config.reload_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                if !watch.changed() {
                    continue;
                }
                match client_material(&this.config, this.key) {
                    Ok(m) => {
                        *this.current.write() = m;
                        metrics
                            .tls_reloads
                            .get_or_create(&TlsLabels::new(name))
                            .inc();
                        tracing::info!(
                            name,
                            "TLS client certificates changed; new connections use them."
                        );
                    }
                    Err(e) => {
                        metrics
                            .tls_reload_failures
                            .get_or_create(&TlsLabels::new(name))
                            .inc();
                        tracing::error!(name, error = %e, "TLS client certificate reload refused; the previous ones stay in force.");
                    }
                }
            }
        });
    }
}

fn client_material(c: &ClientTlsConfig, key: &'static str) -> Result<ClientMaterial, TlsError> {
    let roots = Arc::new(trust_roots(c, key)?);
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Invalid {
            key,
            detail: e.to_string(),
        })?;
    let cert = match (&c.cert_file, &c.key_file) {
        (Some(cert), Some(k)) => {
            let signing = provider()
                .key_provider
                .load_private_key(private_key(key, k)?)
                .map_err(invalid(key))?;
            Some(Arc::new(rustls::sign::CertifiedKey::new(
                certs(key, cert)?,
                signing,
            )))
        }
        (None, None) => None,
        _ => {
            return Err(TlsError::Invalid {
                key,
                detail: "cert_file and key_file go together".into(),
            })
        }
    };
    Ok(ClientMaterial { verifier, cert })
}

#[derive(Debug)]
struct CurrentVerifier(Arc<ClientTls>);

impl rustls::client::danger::ServerCertVerifier for CurrentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verifier = Arc::clone(&self.0.current.read().verifier);
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let verifier = Arc::clone(&self.0.current.read().verifier);
        verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let verifier = Arc::clone(&self.0.current.read().verifier);
        verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.current.read().verifier.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct CurrentCert(Arc<ClientTls>);

impl rustls::client::ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.current.read().cert.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.current.read().cert.is_some()
    }
}

/// `ca_file`, or else the system's CA certificates.
fn trust_roots(c: &ClientTlsConfig, key: &'static str) -> Result<RootCertStore, TlsError> {
    match &c.ca_file {
        Some(ca) => roots(key, ca),
        None => {
            let native = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsError::Invalid {
                    key,
                    detail: format!(
                        "no ca_file and no usable system CA certificates ({} errors)",
                        native.errors.len()
                    ),
                });
            }
            Ok(store)
        }
    }
}

/// A rustls client config trusting nothing: for a machine without CA
/// certificates, where `http://` must still work.
pub fn client_config_without_roots(alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let key = "outbound HTTP client";
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid(key))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A rustls client config: `ca_file` or else the system's roots, and the
/// client certificate when both `cert_file` and `key_file` are set.
pub fn client_config(
    c: &ClientTlsConfig,
    key: &'static str,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid(key))?;
    let builder = if c.insecure_skip_verify {
        warn_unverified(key);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        builder.with_root_certificates(trust_roots(c, key)?)
    };
    let mut config = match (&c.cert_file, &c.key_file) {
        (Some(cert), Some(k)) => builder
            .with_client_auth_cert(certs(key, cert)?, private_key(key, k)?)
            .map_err(invalid(key))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Invalid {
                key,
                detail: "cert_file and key_file go together".into(),
            })
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
