//! Configuration of what tracecheck serves and sends: the admin endpoint,
//! alerts and trace links.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `admin:` — metrics, health and the API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Loopback unless configured: the API can reload models.
    pub endpoint: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `links:`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// URL of a trace in the tracing UI; `{trace_id}` is replaced by the
    /// 32-digit hex ID. Put into alerts and API answers.
    pub trace_url: Option<String>,
}

impl LinksConfig {
    pub fn trace_url(&self, trace_id: &crate::ids::TraceId) -> Option<String> {
        self.trace_url
            .as_ref()
            .map(|t| t.replace("{trace_id}", &trace_id.to_hex()))
    }
}

/// `alerts:`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub alertmanager: Option<AlertmanagerConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
}
