//! Test runs: the stage that runs Tracetest-style `Test` and `Transaction`
//! documents — trigger a request, wait for its trace, assert on it, chain
//! steps through their outputs — for `tracecheck test run` and the
//! daemon's `/api/v1/runs`.
//!
//! ```text
//! load ─▶ context ─▶ trigger (http | grpc | traceid) ─▶ wait (tap on the
//!   daemon's completed traces) ─▶ engine::run_test ─▶ outputs ─▶ next step
//! ```
//!
//! The engine evaluates; this module does the I/O around it.

pub mod api;
pub mod context;
pub mod grpc;
pub mod load;
pub mod propagation;
pub mod report;
pub mod runner;
pub mod trigger;
pub mod wait;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use context::RunContext;
pub use load::{load_files, load_text, RunKind, Runnable, Suite};
pub use propagation::Propagation;
pub use report::{render_junit, render_text, RunReport, StepReport, StepStatus, SuiteReport};
pub use runner::{run, run_suite, RunOptions, DEFAULT_TIMEOUT};
pub use wait::{TapConsumer, TraceSource, TraceWaiters};

use crate::config::Config;
use crate::daemon::{Daemon, StartError};
use crate::receiver::config::{GrpcConfig, HttpConfig};
use crate::results::config::LinksConfig;

/// Where the embedded receiver listens when `test run` has no `--server`.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// A trace is complete this long after its last span.
    pub idle_timeout: Duration,
    pub links: LinksConfig,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            idle_timeout: Duration::from_secs(2),
            links: LinksConfig::default(),
        }
    }
}

/// A receiver and assembler in this process for the length of a run.
pub struct Embedded {
    pub daemon: Daemon<TapConsumer>,
    pub source: TraceSource,
}

impl Embedded {
    /// Starts OTLP receivers on `cfg`'s addresses; traces complete after
    /// `idle_timeout` without spans (a root span does not cut that short:
    /// async workers report after the root ended).
    pub async fn start(cfg: EmbeddedConfig) -> Result<Embedded, StartError> {
        let mut config = Config::default();
        config.receivers.otlp.grpc = Some(GrpcConfig {
            endpoint: cfg.grpc,
            ..GrpcConfig::default()
        });
        config.receivers.otlp.http = Some(HttpConfig {
            endpoint: cfg.http,
            ..HttpConfig::default()
        });
        config.admin.endpoint = SocketAddr::from(([127, 0, 0, 1], 0));
        config.models.paths = Vec::new();
        // Quiet for `idle_timeout` settles the trace; with no models there
        // is nothing to decide early.
        config.assembler.settle = cfg.idle_timeout;
        config.assembler.idle_timeout = cfg.idle_timeout;
        config.assembler.root_settle = config.assembler.max_trace_age;
        config.links = cfg.links.clone();
        let waiters = Arc::new(TraceWaiters::new());
        let tap = Arc::clone(&waiters);
        let mut assembler = None;
        let daemon = Daemon::start_with(config, |stages| {
            assembler = Some(Arc::clone(&stages.assembler));
            (TapConsumer(tap), None)
        })
        .await?;
        let Some(assembler) = assembler else {
            unreachable!("Daemon::start_with runs its builder before returning")
        };
        Ok(Embedded {
            daemon,
            source: TraceSource::Local {
                waiters,
                assembler,
                links: cfg.links,
            },
        })
    }

    pub async fn stop(self) {
        let _ = self.daemon.shutdown().await;
    }
}

/// A source reading a running daemon's admin endpoint, over `https://`
/// trusting `ca_file` (else the system's CA certificates), showing `token`
/// (`admin.auth`).
pub fn remote(
    server: &str,
    ca_file: Option<&std::path::Path>,
    token: Option<reqwest::header::HeaderValue>,
) -> Result<TraceSource, crate::net::tls::TlsError> {
    let tls = ca_file.map(|ca| crate::net::tls::ClientTlsConfig {
        ca_file: Some(ca.to_owned()),
        ..Default::default()
    });
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, t);
    }
    let client = crate::net::client::builder(tls.as_ref(), "--ca-file")?
        .default_headers(headers)
        .build()
        .map_err(|e| crate::net::tls::TlsError::Invalid {
            key: "--ca-file",
            detail: e.to_string(),
        })?;
    Ok(TraceSource::Remote {
        client,
        base: server.trim_end_matches('/').to_string(),
    })
}
