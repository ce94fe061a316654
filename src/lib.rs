//! tracecheck: trace-based testing in production.
//!
//! The daemon is a pipeline, one module per stage, data flowing one way:
//!
//! ```text
//! receiver ──▶ assembler ──▶ evaluator ──▶ results ◀── admin
//!     │                     (engine runs   (store,     (HTTP API, gRPC API,
//!     │                      the models)    alerts)     /metrics, /ui/)
//!     └──────▶ exporter (every span, unchanged, as it arrives)
//! ```
//!
//! Imports point down this list, never up, so the modules form no cycle:
//!
//! ```text
//! daemon       wires the stages: serve (evaluator + admin routes), embedded (test run)
//! config       loads the file; assembles the configs that sit beside each stage
//! admin        every way a person or a tool reads the daemon
//! evaluator    the evaluator stage: threads, models in force and reloads, verdict feed
//! receiver     OTLP in
//! testrun      Tracetest tests and transactions (their waits tap completed traces)
//! assembler    the per-trace buffer
//! exporter     OTLP forwarding out
//! tier         the scale-out tier
//! results      what verdicts become: the result store, alerts, per-version counts
//! bench check  load generator; `tracecheck check`
//! engine model otlp    the language and its evaluation; the wire formats
//! net health   TLS, auth, clients; liveness and readiness
//! metrics memory duration ids civil    used by every stage
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod assembler;
pub mod bench;
pub mod check;
pub mod civil;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod engine;
pub mod evaluator;
pub mod exporter;
pub mod health;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod net;
pub mod otlp;
pub mod receiver;
pub mod results;
pub mod testrun;
pub mod tier;
