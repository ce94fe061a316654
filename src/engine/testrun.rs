//! Running a `type: Test` document's specs on its trace, with a result per
//! assertion and per span, and its outputs (the test runner's view).

use std::collections::BTreeMap;

use serde::Serialize;

use super::compile::{COutput, CSpec, Compiler, Keys};
use super::eval::{Env, KeyCache};
use super::trace::{Trace, TraceBuilder};
use super::verdict::compute_outputs;
use super::{with_trigger, EvalContext};
use crate::ids::{SpanId, TraceId};
use crate::model::{Diagnostic, Template, Test};

/// A test compiled for running.
#[derive(Debug)]
pub struct CompiledTest {
    test: Test,
    keys: Keys,
    specs: Vec<CSpec>,
    outputs: Vec<COutput>,
}

impl CompiledTest {
    pub fn compile(test: &Test) -> Result<CompiledTest, Vec<Diagnostic>> {
        let mut keys = Keys::default();
        let mut c = Compiler {
            keys: &mut keys,
            diags: Vec::new(),
        };
        let specs = test
            .specs
            .iter()
            .map(|s| CSpec {
                label: s.label().to_string(),
                selector: c.selector(&s.selector),
                assertions: s.assertions.iter().map(|a| c.assertion(a)).collect(),
            })
            .collect();
        let outputs = test
            .outputs
            .iter()
            .map(|o| COutput {
                name: std::sync::Arc::from(o.name.as_str()),
                selector: o.selector.as_ref().map(|s| c.selector(s)),
                value: c.expr(&o.value.ast, &o.value.loc, &o.value.text),
            })
            .collect();
        let diags = std::mem::take(&mut c.diags);
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(CompiledTest {
            test: test.clone(),
            keys,
            specs,
            outputs,
        })
    }

    pub fn test(&self) -> &Test {
        &self.test
    }
}

/// The result of a test run on its trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    pub specs: Vec<SpecResult>,
    /// Outputs that could be read, as strings (they become variables of
    /// the following transaction steps).
    pub outputs: BTreeMap<String, String>,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecResult {
    /// The spec's name, else its selector.
    pub name: String,
    pub selector: String,
    pub passed: bool,
    /// How many spans the selector selected.
    pub span_count: usize,
    /// Why the spec failed apart from its assertions (no span selected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub assertions: Vec<AssertionResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssertionResult {
    pub text: String,
    pub passed: bool,
    /// One entry per selected span (one without span for assertions about
    /// `tracetest.selected_spans.count`).
    pub spans: Vec<SpanAssertionResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanAssertionResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_name: Option<String>,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Runs the test's specs on `trace` and reads its outputs.
pub fn run_test(test: &CompiledTest, trace: &Trace, ctx: &EvalContext<'_>) -> TestResult {
    let trace = with_trigger(trace, ctx);
    let cache = KeyCache::new(test.keys.names.len());
    let base = Env {
        trace: &trace,
        names: &test.keys.names,
        cache: &cache,
        ctx,
        outputs: &[],
        selected: 0,
    };
    let outputs = compute_outputs(&test.outputs, base);
    let env = Env {
        outputs: &outputs,
        ..base
    };
    let mut specs = Vec::with_capacity(test.specs.len());
    for spec in &test.specs {
        let spans = env.select(&spec.selector);
        let env = Env {
            selected: spans.len(),
            ..env
        };
        let count_only =
            !spec.assertions.is_empty() && spec.assertions.iter().all(|a| a.count_only);
        let mut message = None;
        if spans.is_empty() && !count_only {
            message = Some(format!("selector {} selected no span", spec.selector.text));
        }
        let mut assertions = Vec::with_capacity(spec.assertions.len());
        for a in &spec.assertions {
            let targets: Vec<Option<u32>> = if a.count_only {
                vec![None]
            } else {
                spans.iter().map(|s| Some(*s)).collect()
            };
            let mut results = Vec::with_capacity(targets.len());
            for t in targets {
                let o = env.assert(a, t);
                let info = t.and_then(|s| env.trace.span_info(s));
                results.push(SpanAssertionResult {
                    span_id: info.as_ref().map(|i| i.span_id),
                    span_name: info.map(|i| i.name),
                    passed: o.passed,
                    observed: o.observed,
                    expected: o.expected,
                    message: o.message,
                });
            }
            let passed = !results.is_empty() && results.iter().all(|r| r.passed);
            assertions.push(AssertionResult {
                text: a.text.clone(),
                passed,
                spans: results,
            });
        }
        let passed = message.is_none() && assertions.iter().all(|a| a.passed);
        specs.push(SpecResult {
            name: spec.label.clone(),
            selector: spec.selector.text.clone(),
            passed,
            span_count: spans.len(),
            message,
            assertions,
        });
    }
    let passed = specs.iter().all(|s| s.passed);
    TestResult {
        specs,
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        passed,
    }
}

/// Renders a template that reads no trace (a trigger's URL, headers, body)
/// from the run's variables; the error names what could not be read.
pub fn render_template(template: &Template, ctx: &EvalContext<'_>) -> Result<String, String> {
    let mut keys = Keys::default();
    let mut c = Compiler {
        keys: &mut keys,
        diags: Vec::new(),
    };
    let compiled = c.template(template);
    if let Some(d) = c.diags.first() {
        return Err(d.to_string());
    }
    let trace = TraceBuilder::new(TraceId::INVALID).build();
    let cache = KeyCache::new(keys.names.len());
    let env = Env {
        trace: &trace,
        names: &keys.names,
        cache: &cache,
        ctx,
        outputs: &[],
        selected: 0,
    };
    env.render(&compiled.parts, None)
        .map_err(|e| e.message().to_string())
}
