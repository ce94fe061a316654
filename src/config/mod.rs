//! Config loading: the Collector-shaped YAML file, `${env:…}` expansion, and
//! errors that name the key and its line and column.
//!
//! Each stage owns its config struct beside its code (`receiver::config`,
//! `assembler::config`, …); [`Config`] only composes them.

pub mod duration;
pub mod env;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::assembler::config::AssemblerConfig;
use crate::exporter::config::ExportersConfig;
use crate::receiver::config::ReceiversConfig;
use crate::results::config::{AdminConfig, AlertsConfig, LinksConfig};

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
    #[serde(with = "crate::config::duration")]
    pub shutdown_timeout: std::time::Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: std::time::Duration::from_secs(20),
        }
    }
}

/// `models:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Files and folders (`*.yaml`, `*.yml`), reloaded on change and SIGHUP.
    /// A path that does not exist is an error, except the default `./models`.
    pub paths: Vec<PathBuf>,
    /// A model whose evaluation on one trace takes longer is counted in
    /// `tracecheck_model_slow_evaluations_total{model}` and logged with the
    /// trace ID. It is not interrupted: evaluation cannot be stopped safely.
    #[serde(with = "crate::config::duration")]
    pub evaluation_budget: std::time::Duration,
    /// Threads that evaluate completed traces (each trace on one of them,
    /// chosen by its ID); 0 (the default) means one per CPU.
    pub evaluation_threads: usize,
}

impl ModelsConfig {
    /// [`ModelsConfig::evaluation_threads`], with 0 resolved to the CPUs.
    pub fn threads(&self) -> usize {
        match self.evaluation_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            paths: vec![PathBuf::from(DEFAULT_MODELS_DIR)],
            evaluation_budget: crate::results::evaluator::DEFAULT_EVALUATION_BUDGET,
            evaluation_threads: 0,
        }
    }
}

/// Where models are read from when the config names none.
pub const DEFAULT_MODELS_DIR: &str = "./models";

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
        config
            .receivers
            .otlp
            .normalize()
            .map_err(|message| ConfigError::Unpositioned {
                file: origin.to_owned(),
                message,
            })?;
        config.validate(origin)?;
        Ok(Loaded {
            config,
            unset_env: expanded.unset,
        })
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
        if let Some(e) = &self.exporters.otlp {
            if e.queue_size == 0
                || e.queue_max_mib == 0
                || e.max_in_flight == 0
                || e.batch.max_spans == 0
            {
                return bad("exporters.otlp.queue_size, queue_max_mib, max_in_flight and batch.max_spans must be at least 1".into());
            }
            if e.max_request_bytes < MIN_MAX_REQUEST_BYTES {
                return bad(format!(
                    "exporters.otlp.max_request_bytes: {} is below {MIN_MAX_REQUEST_BYTES} (64 KiB); it is the largest message the downstream takes, 4194304 for the Collector's receivers",
                    e.max_request_bytes
                ));
            }
            if !(e.endpoint.starts_with("http://") || e.endpoint.starts_with("https://")) {
                return bad(format!(
                    "exporters.otlp.endpoint: {:?} must start with http:// or https://",
                    e.endpoint
                ));
            }
        }
        if let Some(e) = &self.exporters.otlp {
            if e.tls.is_some() && !e.endpoint.to_ascii_lowercase().starts_with("https://") {
                return bad(format!(
                    "exporters.otlp.tls: the endpoint {:?} is http://, which is plain text; use https:// or remove tls",
                    e.endpoint
                ));
            }
        }
        let otlp = &self.receivers.otlp;
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
            (
                "exporters.otlp.auth",
                &self.exporters.otlp.as_ref().and_then(|e| e.auth.clone()),
            ),
        ] {
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

#[cfg(test)]
mod tests;
