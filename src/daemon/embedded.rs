//! A daemon inside `tracecheck test run` when it has no `--server`: OTLP
//! receivers and the assembler, its completed traces tapped for the run's
//! waits ([`crate::testrun::TraceWaiters`]), no models.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Daemon, StartError};
use crate::config::Config;
use crate::receiver::config::{GrpcConfig, HttpConfig};
use crate::results::config::LinksConfig;
use crate::testrun::{TapConsumer, TraceSource, TraceWaiters};

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
