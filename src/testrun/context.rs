//! The run context: the variables a test reads. It starts as a copy of the
//! chosen variable set; each step's outputs are added for the steps after
//! it. The variable set itself is never changed.

use std::collections::BTreeMap;

use crate::engine::{EvalContext, TriggerResponse};
use crate::model::VariableSet;

/// Variables of one run (a test, or every step of a transaction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunContext {
    /// The variable set's values (`env:X`).
    env: BTreeMap<String, String>,
    /// Outputs of the steps run so far (`var:X`).
    outputs: BTreeMap<String, String>,
}

impl RunContext {
    /// A context starting from `set` (copied: outputs never reach it).
    pub fn new(set: Option<&VariableSet>) -> Self {
        let env = set
            .map(|s| {
                s.values
                    .iter()
                    .map(|v| (v.key.clone(), v.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            env,
            outputs: BTreeMap::new(),
        }
    }

    /// A context from plain key/values (the runs API).
    pub fn from_values(values: BTreeMap<String, String>) -> Self {
        Self {
            env: values,
            outputs: BTreeMap::new(),
        }
    }

    /// Adds a step's outputs; a later step's output of the same name wins.
    pub fn add_outputs(&mut self, outputs: &BTreeMap<String, String>) {
        for (k, v) in outputs {
            self.outputs.insert(k.clone(), v.clone());
        }
    }

    pub fn outputs(&self) -> &BTreeMap<String, String> {
        &self.outputs
    }

    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Whether `name` can be read (as `env:` or `var:`, which Tracetest
    /// users mix).
    pub fn defines(&self, name: &str) -> bool {
        self.outputs.contains_key(name) || self.env.contains_key(name)
    }

    /// What the engine reads: outputs first, then the variable set. Each
    /// context draws a new seed, so generator functions in two templates
    /// of a trigger (`${uuid()}` in the URL and in the body) differ.
    pub fn eval<'a>(&'a self, response: Option<&'a TriggerResponse>) -> EvalContext<'a> {
        EvalContext {
            env: &self.env,
            vars: &self.outputs,
            trigger_response: response,
            deadline: None,
            now_unix_nanos: crate::civil::now_unix_nanos(),
            seed: fastrand::u64(..),
        }
    }
}
