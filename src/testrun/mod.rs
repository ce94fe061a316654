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

pub use context::RunContext;
pub use load::{load_files, load_text, RunKind, Runnable, Suite};
pub use propagation::Propagation;
pub use report::{render_junit, render_text, RunReport, StepReport, StepStatus, SuiteReport};
pub use runner::{run, run_suite, RunOptions, DEFAULT_TIMEOUT};
pub use wait::{TapConsumer, TraceSource, TraceWaiters};

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
