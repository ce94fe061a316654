//! `models:` — which models the evaluator loads and how it runs them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    #[serde(with = "crate::duration")]
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
            evaluation_budget: super::DEFAULT_EVALUATION_BUDGET,
            evaluation_threads: 0,
        }
    }
}

/// Where models are read from when the config names none.
pub const DEFAULT_MODELS_DIR: &str = "./models";
