//! tracecheck: trace-based testing in production.
//!
//! The daemon is a pipeline, one module per stage, data flowing one way:
//!
//! ```text
//! receiver ──▶ assembler ──▶ engine (models) ──▶ results
//!     └──────▶ exporter (every span, unchanged, as it arrives)
//! ```
//!
//! [`config`] loads the file, [`daemon`] wires the stages, [`otlp`] holds the
//! wire formats shared by receiver and exporter.
#![forbid(unsafe_code)]

pub mod admin;
pub mod assembler;
pub mod bench;
pub mod check;
pub mod civil;
pub mod config;
pub mod daemon;
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
