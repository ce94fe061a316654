//! Results: what tracecheck tells operators — Prometheus metrics, the admin
//! HTTP endpoint (health, readiness, API) and, with models, verdicts.

pub mod admin;
pub mod config;
pub mod exposition;
pub mod metrics;
