//! Running: each step's trigger, the wait for its trace, the specs on it,
//! its outputs into the context, and the transaction rules (a step without
//! a trace stops the chain; failed assertions do not).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::context::RunContext;
use super::load::{Runnable, Step, Suite};
use super::propagation::Propagation;
use super::report::{RunReport, StepReport, StepStatus, SuiteReport};
use super::trigger;
use super::wait::{TraceSource, WaitError};
use crate::engine::{run_test, Trace};

/// Per-test limit when none is given (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Called with a line to show while a step waits (a TTY's progress line),
/// and with `None` when the wait is over.
pub type Progress = Arc<dyn Fn(Option<&str>) + Send + Sync>;

#[derive(Clone)]
pub struct RunOptions {
    /// From sending the trigger to the last span a spec waits for.
    pub timeout: Duration,
    pub progress: Option<Progress>,
    /// Trace context formats the `http` and `grpc` triggers send.
    pub propagation: Propagation,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            progress: None,
            propagation: Propagation::default(),
        }
    }
}

/// Runs every runnable of the suite, each with its own context copied
/// from `base`. An error means the runner itself could not work (the
/// daemon it was pointed at is unreachable): nothing is known about the
/// tests then.
pub async fn run_suite(
    suite: &Suite,
    base: &RunContext,
    source: &TraceSource,
    opts: &RunOptions,
) -> Result<SuiteReport, WaitError> {
    let mut runs = Vec::with_capacity(suite.runs.len());
    for r in &suite.runs {
        runs.push(run(r, base.clone(), source, opts).await?);
    }
    Ok(SuiteReport::new(runs))
}

/// Runs one test or transaction.
pub async fn run(
    runnable: &Runnable,
    mut ctx: RunContext,
    source: &TraceSource,
    opts: &RunOptions,
) -> Result<RunReport, WaitError> {
    let started = std::time::Instant::now();
    let mut steps = Vec::with_capacity(runnable.steps.len());
    let mut stopped_by: Option<usize> = None;
    for (i, step) in runnable.steps.iter().enumerate() {
        if let Some(at) = stopped_by {
            steps.push(StepReport::not_executed(i + 1, step, at + 1));
            continue;
        }
        let report = run_step(i + 1, step, &ctx, source, opts).await?;
        ctx.add_outputs(&report.outputs);
        if report.status.stops_chain() {
            stopped_by = Some(i);
        }
        steps.push(report);
    }
    Ok(RunReport::new(runnable, steps, started.elapsed()))
}

async fn run_step(
    index: usize,
    step: &Step,
    ctx: &RunContext,
    source: &TraceSource,
    opts: &RunOptions,
) -> Result<StepReport, WaitError> {
    let started = std::time::Instant::now();
    let test = step.test();
    let mut report = StepReport::new(index, step);
    let Some(trig) = test.trigger.as_ref() else {
        // The loader refuses tests without a trigger; kept total anyway.
        report.finish(
            StepStatus::Error,
            Some("test has no trigger".into()),
            started,
        );
        return Ok(report);
    };
    let trace_id = match trigger::trace_id_for(trig, ctx, &opts.propagation) {
        Ok(id) => id,
        Err(e) => {
            report.finish(StepStatus::Error, Some(e.to_string()), started);
            return Ok(report);
        }
    };
    report.trace_id = Some(trace_id);
    let pending = match test.skip_trace_collection {
        true => None,
        false => Some(source.prepare(trace_id).await?),
    };
    let deadline = Instant::now() + opts.timeout;
    let triggered = match trigger::fire(
        trig,
        trace_id,
        &opts.propagation,
        ctx,
        &step.base_dir(),
        opts.timeout,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            report.finish(
                StepStatus::Error,
                Some(format!("trigger failed: {e}")),
                started,
            );
            return Ok(report);
        }
    };
    report.trigger = Some(triggered.description.clone());
    report.response_status = triggered.response.as_ref().map(|r| r.status);

    let Some(mut pending) = pending else {
        // skipTraceCollection: only the trigger's response is asserted on,
        // as an empty trace to which evaluation adds the trigger span.
        let trace = crate::engine::TraceBuilder::new(trace_id).build();
        let result = run_test(
            &step.compiled,
            &trace,
            &ctx.eval(triggered.response.as_ref()),
        );
        report.outputs = result.outputs.clone();
        let status = if result.passed {
            StepStatus::Passed
        } else {
            StepStatus::Failed
        };
        report.specs = result.specs;
        report.finish(
            status,
            Some("skipTraceCollection: only the trigger's response was checked".into()),
            started,
        );
        return Ok(report);
    };

    let mut after = 0;
    loop {
        let fetched = {
            let wait = source.wait(&mut pending, after, deadline);
            with_progress(opts, &test.name, trace_id, started, wait).await?
        };
        let Some(fetched) = fetched else {
            report.finish(
                StepStatus::NoTrace,
                Some(format!(
                    "no span of trace {} arrived within {}: is the service instrumented, and does it export OTLP to tracecheck?",
                    trace_id.to_hex(),
                    crate::model::format_duration(opts.timeout)
                )),
                started,
            );
            return Ok(report);
        };
        report.trace_url = fetched.trace_url.clone();
        let Some(trace) = Trace::from_resource_spans(&fetched.resource_spans)
            .into_iter()
            .find(|t| t.trace_id() == trace_id)
        else {
            report.finish(
                StepStatus::NoTrace,
                Some(format!(
                    "trace {} holds no decodable span",
                    trace_id.to_hex()
                )),
                started,
            );
            return Ok(report);
        };
        let result = run_test(
            &step.compiled,
            &trace,
            &ctx.eval(triggered.response.as_ref()),
        );
        // A spec that selected nothing may be about a span still on its way
        // (a queue's worker): wait for the trace's next completion.
        let missing_spans = result.specs.iter().any(|s| !s.passed && s.span_count == 0);
        let more_time = Instant::now() < deadline;
        if result.passed || !missing_spans || !more_time || !fetched.complete {
            report.span_count = trace.len();
            report.trace_complete = fetched.complete;
            report.outputs = result.outputs.clone();
            let status = if result.passed {
                StepStatus::Passed
            } else {
                StepStatus::Failed
            };
            let message = (!fetched.complete).then(|| {
                format!(
                    "the trace was still receiving spans at the {} timeout; evaluated what had arrived",
                    crate::model::format_duration(opts.timeout)
                )
            });
            report.specs = result.specs;
            report.finish(status, message, started);
            return Ok(report);
        }
        after = fetched.completions;
    }
}

/// Runs `wait`, refreshing the progress line meanwhile.
async fn with_progress<T>(
    opts: &RunOptions,
    name: &str,
    trace_id: crate::ids::TraceId,
    started: std::time::Instant,
    wait: impl std::future::Future<Output = T>,
) -> T {
    let Some(progress) = &opts.progress else {
        return wait.await;
    };
    const SPIN: [char; 4] = ['|', '/', '-', '\\'];
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut n = 0usize;
    let out = loop {
        tokio::select! {
            v = &mut wait => break v,
            _ = tick.tick() => {
                n += 1;
                let line = format!(
                    "{} {name}: waiting for trace {} ({}s)",
                    SPIN[n % SPIN.len()],
                    trace_id.to_hex(),
                    started.elapsed().as_secs()
                );
                progress(Some(&line));
            }
        }
    };
    progress(None);
    out
}

/// Outputs of every executed step, in order (later steps win).
pub fn collected_outputs(report: &RunReport) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in &report.steps {
        out.extend(s.outputs.clone());
    }
    out
}
