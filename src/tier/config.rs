//! `tier:` — the other instances of a scale-out tier.

use serde::{Deserialize, Serialize};

/// `tier:` — set when tracecheck runs as several instances behind a load
/// balancer that routes by trace ID (the gateway overlay).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// Admin endpoints of the tier's instances, `host:port`. Each host is
    /// resolved to all its addresses when a change is announced, so one
    /// headless Service name (`tracecheck-headless.observability:9464`)
    /// names every ready instance. Empty: not a tier, nothing announced.
    pub peers: Vec<String>,
    /// This instance's name in announcements and logs [default: the
    /// `HOSTNAME` variable, the pod name under Kubernetes].
    pub instance: Option<String>,
    /// How long an announcement may take in all, resolution included.
    #[serde(with = "crate::duration")]
    pub announce_timeout: std::time::Duration,
    /// With `admin.tls`, announcements go over HTTPS to each address of a
    /// peer, its certificate checked against the peer's host name: this
    /// says what to trust (`ca_file`, else the system's CA certificates)
    /// and the client certificate for peers whose admin endpoint wants one
    /// (`admin.tls.client_ca_file`).
    pub tls: Option<crate::net::tls::ClientTlsConfig>,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            instance: None,
            announce_timeout: std::time::Duration::from_secs(2),
            tls: None,
        }
    }
}

impl TierConfig {
    /// [`TierConfig::instance`], else `HOSTNAME`, else `tracecheck`.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "tracecheck".to_owned())
    }
}
