//! Configuration of what verdicts become and where they point: alerts and
//! trace links.

use serde::{Deserialize, Serialize};

/// `links:`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// URL of a trace in the tracing UI; `{trace_id}` is replaced by the
    /// 32-digit hex ID. Put into alerts and API answers.
    /// `{span_id}` is replaced by a span's 16-digit hex ID (the first
    /// failing one where there is one; else nothing), for Jaeger's `uiFind`.
    pub trace_url: Option<String>,
    /// The daemon's own admin URL, as people reach it (not configured
    /// here: set from `alerts.external_url` or `admin.endpoint`). Without a
    /// `trace_url`, traces link to its trace page, `/ui/trace/{trace_id}`.
    #[serde(skip)]
    pub admin_url: Option<String>,
}

impl LinksConfig {
    /// The trace's link: the tracing UI's when configured, else the
    /// daemon's own trace page.
    pub fn trace_url(&self, trace_id: &crate::ids::TraceId) -> Option<String> {
        self.external_trace_url(trace_id, None)
            .or_else(|| self.ui_trace_url(trace_id))
    }

    /// The configured tracing UI's link to the trace, pointing at `span`
    /// when the template has `{span_id}`.
    pub fn external_trace_url(
        &self,
        trace_id: &crate::ids::TraceId,
        span: Option<&crate::ids::SpanId>,
    ) -> Option<String> {
        self.trace_url.as_ref().map(|t| {
            t.replace("{trace_id}", &trace_id.to_hex()).replace(
                "{span_id}",
                &span.map(crate::ids::SpanId::to_hex).unwrap_or_default(),
            )
        })
    }

    /// The daemon's trace page for the trace, when its URL is known.
    pub fn ui_trace_url(&self, trace_id: &crate::ids::TraceId) -> Option<String> {
        self.admin_url
            .as_ref()
            .map(|u| format!("{}/ui/trace/{}", u.trim_end_matches('/'), trace_id))
    }
}

/// `alerts:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub alertmanager: Option<AlertmanagerConfig>,
    pub webhooks: Vec<WebhookConfig>,
    /// Repeated failures of one model update its alert at most this often.
    #[serde(with = "crate::duration")]
    pub group_interval: std::time::Duration,
    /// A firing alert is re-sent this often so Alertmanager keeps it alive
    /// (its `resolve_timeout` must be longer).
    #[serde(with = "crate::duration")]
    pub resend_interval: std::time::Duration,
    /// A model's alert resolves after this long without failures.
    #[serde(with = "crate::duration")]
    pub resolve_after: std::time::Duration,
    /// The admin URL put into `generatorURL`, as reachable by people
    /// (defaults to `http://` + `admin.endpoint`).
    pub external_url: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            alertmanager: None,
            webhooks: Vec::new(),
            group_interval: std::time::Duration::from_secs(10),
            resend_interval: std::time::Duration::from_secs(60),
            resolve_after: std::time::Duration::from_secs(300),
            external_url: None,
        }
    }
}

/// `alerts.alertmanager`: every alert goes to each URL, as Prometheus
/// sends to each Alertmanager of a cluster.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// One Alertmanager (the short form of `urls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    /// For `https://` URLs: `ca_file` (else the system's CA certificates),
    /// `cert_file` and `key_file` for a client certificate.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ClientTlsConfig>,
    /// Credentials for an Alertmanager behind a proxy or a hosted one.
    #[serde(default)]
    pub auth: Option<AlertAuth>,
    /// Extra request headers (a tenant header such as `X-Scope-OrgID`).
    /// Values are secrets: never logged.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::net::secret::Secret>,
}

/// `alerts.alertmanager.auth`: one of the two.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertAuth {
    /// Sent as `Authorization: Bearer <token>`; write `${env:NAME}`.
    #[serde(default)]
    pub bearer_token: Option<crate::net::secret::Secret>,
    #[serde(default)]
    pub basic: Option<BasicAuth>,
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: crate::net::secret::Secret,
}

impl AlertmanagerConfig {
    /// `url` and `urls` together, in that order.
    pub fn all_urls(&self) -> impl Iterator<Item = &String> {
        self.url.iter().chain(self.urls.iter())
    }
}

/// `alerts.webhooks[]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// As for Alertmanager.
    #[serde(default)]
    pub tls: Option<crate::net::tls::ClientTlsConfig>,
}
