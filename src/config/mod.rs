//! Config loading: the Collector-shaped YAML file, `${env:…}` expansion, and
//! errors that name the key and its line and column.
//!
//! Each stage owns its config struct beside its code (`receiver::config`,
//! `evaluator::config`, `results::config`, `admin::config`,
//! `assembler::config`, …); [`Config`] only composes them.

pub mod env;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::admin::config::AdminConfig;
use crate::assembler::config::AssemblerConfig;
use crate::duration;
pub use crate::evaluator::config::{ModelsConfig, DEFAULT_MODELS_DIR};
use crate::exporter::config::ExportersConfig;
use crate::receiver::config::ReceiversConfig;
use crate::results::config::{AlertsConfig, LinksConfig};

/// `exporters.otlp.max_request_bytes` below this would cost a send per
/// span or two.
const MIN_MAX_REQUEST_BYTES: usize = 64 << 10;

/// The whole config file. Every section is optional; what is absent takes the
/// embedded defaults of the interfaces spec (loopback only, no forwarding).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receivers: ReceiversConfig,
    pub assembler: AssemblerConfig,
    pub models: ModelsConfig,
    pub exporters: ExportersConfig,
    pub alerts: AlertsConfig,
    pub links: LinksConfig,
    pub admin: AdminConfig,
    pub service: ServiceConfig,
    pub tier: crate::tier::TierConfig,
    pub metrics: MetricsConfig,
    /// The Collector's processors: `batch` and `memory_limiter` are mapped
    /// onto tracecheck's own settings ([`Config::adopt_collector`]); any
    /// other is an error.
    #[serde(skip_serializing)]
    pub processors: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
    /// The Collector's extensions: none is needed (health, metrics and the
    /// API are on `admin.endpoint`); each is noted and ignored.
    #[serde(skip_serializing)]
    pub extensions: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
}

/// `metrics:` — what the Prometheus exposition carries beyond the default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Also count verdicts by the version of each trace's root service
    /// (`tracecheck_model_verdicts_by_version_total{model,service,version,
    /// verdict}`): a series per model, service and version, so off unless
    /// asked for. `GET /api/v1/versions` has the same figures either way.
    pub version_label: bool,
}

/// `service:` — the process as a whole.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// How long shutdown (SIGTERM/SIGINT) may take in all: receivers
    /// closed, buffered traces judged (`inconclusive`, `shutdown`), the
    /// forwarding queue drained. Past it, or at a second signal, the
    /// process exits at once, logging what it left. The default fits
    /// inside Kubernetes' 30 s grace period with the manifests' 5 s
    /// `preStop`.
    #[serde(with = "crate::duration")]
    pub shutdown_timeout: std::time::Duration,
    /// The Collector's `service.pipelines`: only `traces`, from `otlp`, to
    /// the exporters it lists.
    #[serde(skip_serializing)]
    pub pipelines: Option<PipelinesConfig>,
    /// The Collector's `service.extensions`: noted and ignored.
    #[serde(skip_serializing)]
    pub extensions: Vec<String>,
    /// A traces pipeline was written (its processors are then the ones in
    /// use).
    #[serde(skip)]
    pub pipelines_given: bool,
    pub telemetry: TelemetryConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: std::time::Duration::from_secs(20),
            pipelines: None,
            extensions: Vec::new(),
            pipelines_given: false,
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// `service.pipelines`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelinesConfig {
    pub traces: Option<TracesPipeline>,
}

/// `service.pipelines.traces`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracesPipeline {
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    /// Absent: every exporter defined.
    pub exporters: Option<Vec<String>>,
}

/// `service.telemetry`: the daemon's own logs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub logs: LogsConfig,
    /// The Collector's own metrics settings: tracecheck serves its metrics
    /// on `admin.endpoint`; noted and ignored.
    #[serde(skip_serializing)]
    pub metrics: Option<serde_yaml_ng::Value>,
}

/// `service.telemetry.logs`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// tracecheck's own level (`debug`, `info`, `warn`, `error`); its
    /// libraries stay at `warn`. `RUST_LOG`, when set, wins.
    pub level: Option<LogLevel>,
    pub encoding: LogEncoding,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How log lines are written: for a person, or one JSON object a line for
/// a log pipeline.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    #[default]
    Console,
    Json,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Positioned errors render as `file:line:col: message`.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Unpositioned { file: String, message: String },
}

/// A loaded config and the warnings met on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `${env:NAME}` references without default whose variable was unset.
    pub unset_env: Vec<String>,
    /// What was made of the Collector's components (to log at start).
    pub notes: Vec<String>,
}

impl Config {
    /// Reads, expands and parses a config file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&path.display().to_string(), &text, |n| {
            std::env::var(n).ok()
        })
    }

    /// Parses config text; `origin` names it in errors.
    pub fn from_yaml(
        origin: &str,
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let expanded = env::expand(text, lookup).map_err(|e| ConfigError::Invalid {
            file: origin.to_owned(),
            line: e.line,
            column: e.column,
            message: e.kind.to_string(),
        })?;
        // An empty file (or only comments) is the embedded defaults.
        let config = if expanded.text.trim().lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        }) {
            Config::default()
        } else {
            serde_yaml_ng::from_str::<Config>(&expanded.text)
                .map_err(|e| yaml_error(origin, &expanded.text, &e))?
        };
        let mut config = config;
        let unpositioned = |message| ConfigError::Unpositioned {
            file: origin.to_owned(),
            message,
        };
        config.receivers.otlp.normalize().map_err(unpositioned)?;
        let notes = config.adopt_collector().map_err(unpositioned)?;
        config.validate(origin)?;
        Ok(Loaded {
            config,
            unset_env: expanded.unset,
            notes,
        })
    }

    /// Takes the Collector's components into tracecheck's settings: the
    /// traces pipeline (its receivers must be `otlp`; its exporters are
    /// the ones used), the `batch` and `memory_limiter` processors, the
    /// extensions. Returns a line for each thing mapped or ignored.
    fn adopt_collector(&mut self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let pipeline = self.service.pipelines.take().and_then(|p| p.traces);
        self.service.pipelines_given = pipeline.is_some();
        let pipeline = pipeline.unwrap_or_default();
        for r in &pipeline.receivers {
            if r != "otlp" {
                return Err(format!(
                    "service.pipelines.traces.receivers: {r:?} is not a receiver tracecheck has; it takes OTLP (gRPC and HTTP) on receivers.otlp: list otlp"
                ));
            }
        }
        let kind = |name: &str| name.split('/').next().unwrap_or_default().to_owned();
        for name in pipeline.processors.iter().chain(self.processors.keys()) {
            let k = kind(name);
            if k == "tail_sampling" {
                return Err(format!(
                    "processor {name:?}: tracecheck samples by verdict instead: give an exporter `traces: failing` (or failing_or_inconclusive) and it gets only the traces the models failed, whole; other exporters still get every span"
                ));
            }
            if k != "batch" && k != "memory_limiter" {
                return Err(format!(
                    "processor {name:?}: tracecheck has no processors but batch and memory_limiter (mapped onto its own settings); it forwards every span unchanged. Remove it, or keep a Collector for it behind tracecheck's exporter"
                ));
            }
            if pipeline.processors.contains(name) && !self.processors.contains_key(name) {
                return Err(format!(
                    "service.pipelines.traces.processors lists {name}, which processors: does not define"
                ));
            }
        }
        let number = |v: &serde_yaml_ng::Value, key: &str| v.get(key).and_then(|x| x.as_u64());
        let duration = |v: &serde_yaml_ng::Value, key: &str| {
            v.get(key)
                .and_then(|x| x.as_str())
                .map(duration::parse)
                .transpose()
                .map_err(|e| format!("{key}: {e}"))
        };
        for (name, v) in &self.processors {
            // Defined but left out of the pipeline: not in use, as in the
            // Collector.
            if self.service.pipelines_given && !pipeline.processors.contains(name) {
                notes.push(format!(
                    "processor {name}: not in service.pipelines.traces; ignored"
                ));
                continue;
            }
            match kind(name).as_str() {
                "batch" => {
                    // 0 is the Collector's "no limit".
                    let nonzero = |key| number(v, key).filter(|n| *n > 0);
                    let size = nonzero("send_batch_max_size").or(nonzero("send_batch_size"));
                    let timeout =
                        duration(v, "timeout").map_err(|e| format!("processors.{name}.{e}"))?;
                    for e in &mut self.exporters.list {
                        if let Some(n) = size {
                            e.config.batch.max_spans = n as usize;
                        }
                        if let Some(t) = timeout {
                            e.config.batch.timeout = t;
                        }
                    }
                    notes.push(format!(
                        "processor {name}: tracecheck batches per exporter (exporters.NAME.batch); taken as batch.max_spans {} and batch.timeout {}",
                        size.map_or("unchanged".into(), |n| n.to_string()),
                        timeout.map_or("unchanged".into(), duration::format)
                    ));
                }
                _ => {
                    if let Some(mib) = number(v, "limit_mib") {
                        self.assembler.max_memory_mib = mib as usize;
                        notes.push(format!(
                            "processor {name}: taken as assembler.max_memory_mib {mib} (one memory account for the process; over 80 % of it senders are told to retry)"
                        ));
                    } else {
                        notes.push(format!(
                            "processor {name}: only limit_mib is mapped (onto assembler.max_memory_mib); the limit stays {} MiB",
                            self.assembler.max_memory_mib
                        ));
                    }
                }
            }
        }
        if let Some(names) = &pipeline.exporters {
            self.exporters.select(names)?;
        }
        // The Collector's sending_queue.storage names a file_storage
        // extension: its directory, a folder per exporter in it.
        for e in &mut self.exporters.list {
            let Some(q) = e.config.queue.as_mut() else {
                continue;
            };
            let Some(name) = q.directory.to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(ext) = self.extensions.get(&name) {
                let dir = ext
                    .get("directory")
                    .and_then(|d| d.as_str())
                    .ok_or_else(|| {
                        format!(
                            "exporters.{}: sending_queue.storage names extension {name}, which has no directory",
                            e.name
                        )
                    })?;
                q.directory = std::path::Path::new(dir).join(e.name.replace('/', "_"));
                notes.push(format!(
                    "exporters.{}: the persistent queue is in {} (extension {name}'s directory)",
                    e.name,
                    q.directory.display()
                ));
            } else if kind(&name) == "file_storage" {
                return Err(format!(
                    "exporters.{}: sending_queue.storage names {name}, which extensions: does not define",
                    e.name
                ));
            }
        }
        let extensions: std::collections::BTreeSet<&String> = self
            .extensions
            .keys()
            .chain(self.service.extensions.iter())
            .collect();
        for name in extensions {
            notes.push(format!(
                "extension {name}: not needed and ignored (health, metrics and the API are on admin.endpoint; bearer tokens are receivers' and exporters' auth:)"
            ));
        }
        if self.service.telemetry.metrics.take().is_some() {
            notes.push("service.telemetry.metrics: ignored; tracecheck's metrics are served on admin.endpoint at /metrics".into());
        }
        Ok(notes)
    }

    /// Checks what types cannot: relations between values.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |message: String| {
            Err(ConfigError::Unpositioned {
                file: origin.to_owned(),
                message,
            })
        };
        let a = &self.assembler;
        if a.max_traces == 0 || a.max_spans == 0 {
            return bad("assembler.max_traces and assembler.max_spans must be at least 1".into());
        }
        if a.settle.is_zero() || a.idle_timeout.is_zero() || a.max_trace_age.is_zero() {
            return bad(
                "assembler.settle, assembler.idle_timeout and assembler.max_trace_age must be above 0"
                    .into(),
            );
        }
        if a.late_span_window_max_traces == 0 {
            return bad("assembler.late_span_window_max_traces must be at least 1".into());
        }
        if a.max_spans_per_trace == 0 || a.max_bytes_per_trace == 0 || a.max_memory_mib == 0 {
            return bad("assembler.max_spans_per_trace, max_bytes_per_trace and max_memory_mib must be at least 1".into());
        }
        let l = &self.receivers.otlp.limits;
        if l.max_attribute_depth == 0
            || l.max_attribute_depth > crate::otlp::limits::MAX_ATTRIBUTE_DEPTH_CEILING
        {
            return bad(format!(
                "receivers.otlp.limits.max_attribute_depth must be between 1 and {} (deeper values cannot be decoded for evaluation)",
                crate::otlp::limits::MAX_ATTRIBUTE_DEPTH_CEILING
            ));
        }
        if l.max_attributes == 0 || l.max_attribute_value_bytes == 0 {
            return bad("receivers.otlp.limits.max_attributes and max_attribute_value_bytes must be at least 1".into());
        }
        for named in &self.exporters.list {
            let (n, e) = (&named.name, &named.config);
            if e.queue_size == 0
                || e.queue_max_mib == 0
                || e.max_in_flight == 0
                || e.batch.max_spans == 0
            {
                return bad(format!("exporters.{n}: queue_size, queue_max_mib, max_in_flight and batch.max_spans must be at least 1"));
            }
            if e.max_request_bytes < MIN_MAX_REQUEST_BYTES {
                return bad(format!(
                    "exporters.{n}.max_request_bytes: {} is below {MIN_MAX_REQUEST_BYTES} (64 KiB); it is the largest message the downstream takes, 4194304 for the Collector's receivers",
                    e.max_request_bytes
                ));
            }
            if !(e.endpoint.starts_with("http://") || e.endpoint.starts_with("https://")) {
                return bad(format!(
                    "exporters.{n}.endpoint: {:?} must start with http:// or https://",
                    e.endpoint
                ));
            }
            if e.tls.is_some() && !e.endpoint.to_ascii_lowercase().starts_with("https://") {
                return bad(format!(
                    "exporters.{n}.tls: the endpoint {:?} is http://, which is plain text; use https://, or tls: {{ insecure: true }} alone",
                    e.endpoint
                ));
            }
            let by_verdict = self
                .exporters
                .list
                .iter()
                .filter(|o| o.config.traces != crate::exporter::config::TraceSelection::All)
                .count();
            if by_verdict > crate::exporter::by_verdict::MAX_EXPORTERS {
                return bad(format!(
                    "exporters: {by_verdict} have traces: failing…; at most {} can",
                    crate::exporter::by_verdict::MAX_EXPORTERS
                ));
            }
            let dirs = self
                .exporters
                .list
                .iter()
                .filter_map(|o| o.config.queue.as_ref().map(|q| &q.directory));
            if let Some(q) = &e.queue {
                if dirs.filter(|d| same_dir(d, &q.directory)).count() > 1 {
                    return bad(format!(
                        "exporters.{n}: its queue directory {} is another exporter's too; each needs its own",
                        q.directory.display()
                    ));
                }
            }
        }
        let otlp = &self.receivers.otlp;
        if let Some(cors) = otlp.http.as_ref().and_then(|h| h.cors.as_ref()) {
            for h in cors.allowed_headers.iter().filter(|h| *h != "*") {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return bad(format!(
                        "receivers.otlp.protocols.http.cors.allowed_headers: {h:?} is not a header name"
                    ));
                }
            }
        }
        for (key, auth) in [
            ("receivers.otlp.auth", &otlp.auth),
            (
                "receivers.otlp.protocols.grpc.auth",
                &otlp.grpc.as_ref().and_then(|g| g.auth.clone()),
            ),
            (
                "receivers.otlp.protocols.http.auth",
                &otlp.http.as_ref().and_then(|h| h.auth.clone()),
            ),
            ("admin.auth", &self.admin.auth),
        ]
        .into_iter()
        .map(|(k, a)| (k.to_owned(), a.clone()))
        .chain(
            self.exporters
                .list
                .iter()
                .map(|e| (format!("exporters.{}.auth", e.name), e.config.auth.clone())),
        ) {
            if let Some(a) = auth {
                if a.bearer_token.is_some() == a.bearer_token_file.is_some() {
                    return bad(format!(
                        "{key}: set exactly one of bearer_token and bearer_token_file"
                    ));
                }
                if a.bearer_token.as_ref().is_some_and(|t| t.is_empty()) {
                    return bad(format!(
                        "{key}.bearer_token is empty (an unset ${{env:…}} variable?)"
                    ));
                }
            }
        }
        let a = &self.alerts;
        let mut alert_targets: Vec<(String, &String, Option<&crate::net::tls::ClientTlsConfig>)> =
            Vec::new();
        if let Some(am) = &a.alertmanager {
            if am.all_urls().next().is_none() {
                return bad("alerts.alertmanager: set url or urls".into());
            }
            if let Some(auth) = &am.auth {
                if auth.bearer_token.is_some() == auth.basic.is_some() {
                    return bad(
                        "alerts.alertmanager.auth: set exactly one of bearer_token and basic"
                            .into(),
                    );
                }
            }
            for (name, value) in &am.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return bad(format!(
                        "alerts.alertmanager.headers: {name:?} is not a valid header name"
                    ));
                }
                if http::HeaderValue::from_str(value.expose()).is_err() {
                    return bad(format!(
                        "alerts.alertmanager.headers.{name}: its value is not a valid header value (a line break?)"
                    ));
                }
                if am.auth.is_some() && name.eq_ignore_ascii_case("authorization") {
                    return bad(
                        "alerts.alertmanager: auth and an Authorization header both set; keep one"
                            .into(),
                    );
                }
            }
            let credentials = am.auth.as_ref().and_then(|a| {
                a.bearer_token
                    .as_ref()
                    .map(|t| t.expose().to_owned())
                    .or_else(|| {
                        a.basic
                            .as_ref()
                            .map(|b| format!("{}{}", b.username, b.password.expose()))
                    })
            });
            if credentials.is_some_and(|c| http::HeaderValue::from_str(&c).is_err()) {
                return bad("alerts.alertmanager.auth: the credentials hold a character a header cannot (a line break?)".into());
            }
            for u in am.all_urls() {
                alert_targets.push(("alerts.alertmanager".into(), u, am.tls.as_ref()));
            }
        }
        for (i, w) in a.webhooks.iter().enumerate() {
            alert_targets.push((format!("alerts.webhooks[{i}]"), &w.url, w.tls.as_ref()));
        }
        for (key, url, tls) in alert_targets {
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return bad(format!(
                    "{key}: {url:?} must start with http:// or https://"
                ));
            }
            if let Some(t) = tls {
                if t.insecure {
                    return bad(format!(
                        "{key}.tls.insecure: an exporter's key; write the URL as http:// for plain text"
                    ));
                }
                if !lower.starts_with("https://") {
                    return bad(format!(
                        "{key}.tls: {url:?} is http://, which is plain text; use https:// or remove tls"
                    ));
                }
                // Read now, so that a wrong path stops the start with its name.
                let _ = crate::net::client::builder(Some(t), "alerts tls").map_err(|e| {
                    ConfigError::Unpositioned {
                        file: origin.to_owned(),
                        message: format!("{key}.tls: {e}"),
                    }
                })?;
            }
        }
        if let Some(url) = &self.links.trace_url {
            if !url.contains("{trace_id}") {
                return bad(format!(
                    "links.trace_url: {url:?} has no {{trace_id}} placeholder"
                ));
            }
        }
        Ok(())
    }
}

/// Turns a YAML error into `file:line:col: message` without repeating the
/// position serde_yaml puts at the end of its own message.
fn yaml_error(origin: &str, text: &str, e: &serde_yaml_ng::Error) -> ConfigError {
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    match e.location() {
        Some(loc) => {
            // serde's path stops at the struct whose field failed, so a bad
            // value would read "assembler: …"; name the key at the position.
            if let Some(key) = key_at(text, loc.line(), loc.column()) {
                if !message.contains(&format!("`{key}`")) {
                    message = match message.split_once(": ") {
                        Some((path, rest)) if !path.contains(' ') => {
                            format!("{path}.{key}: {rest}")
                        }
                        _ => format!("{key}: {message}"),
                    };
                }
            }
            ConfigError::Invalid {
                file: origin.to_owned(),
                line: loc.line(),
                column: loc.column(),
                message,
            }
        }
        None => ConfigError::Unpositioned {
            file: origin.to_owned(),
            message,
        },
    }
}

/// The mapping key written at 1-based `line`/`column`, if one is there.
fn key_at(text: &str, line: usize, column: usize) -> Option<&str> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let rest = l.get(column.checked_sub(1)?..)?;
    let rest = rest.trim_start_matches(['{', ',', ' ', '-']);
    let (key, _) = rest.split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(key)
}

/// Whether two paths name one directory: the same once written alike
/// (`q/` and `./q`), or, where they exist, the same place (a symbolic
/// link, `..`).
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.components().eq(b.components())
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

#[cfg(test)]
mod tests;
