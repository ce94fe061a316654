//! Reports of a run: the result types (also the JSON of `--format json`
//! and of `GET /api/v1/runs/{id}`), the human text, and JUnit XML with one
//! `<testcase>` per step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::load::{RunKind, Runnable, Step};
use crate::engine::SpecResult;
use crate::ids::TraceId;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    /// Specs did not hold; later steps still run.
    Failed,
    /// No span of its trace arrived in time; later steps do not run.
    NoTrace,
    /// The trigger could not be sent (or its variables read); later steps
    /// do not run.
    Error,
    /// An earlier step could not get its trace.
    NotExecuted,
}

impl StepStatus {
    pub fn stops_chain(self) -> bool {
        matches!(self, StepStatus::NoTrace | StepStatus::Error)
    }

    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Passed => "PASS",
            StepStatus::Failed => "FAIL",
            StepStatus::NoTrace => "NO TRACE",
            StepStatus::Error => "ERROR",
            StepStatus::NotExecuted => "NOT EXECUTED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based position in the run.
    pub step: usize,
    pub test_id: String,
    pub name: String,
    pub file: String,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What was sent, e.g. `POST http://localhost:8080/pokemon`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<TraceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub span_count: usize,
    /// The trace was complete when evaluated (not cut by the timeout).
    pub trace_complete: bool,
    pub specs: Vec<SpecResult>,
    pub outputs: BTreeMap<String, String>,
    pub duration_ms: u64,
}

impl StepReport {
    pub(crate) fn new(step: usize, s: &Step) -> Self {
        let t = s.test();
        Self {
            step,
            test_id: t.id.clone(),
            name: t.name.clone(),
            file: t.file.clone(),
            status: StepStatus::NotExecuted,
            message: None,
            trigger: None,
            response_status: None,
            trace_id: None,
            trace_url: None,
            span_count: 0,
            trace_complete: false,
            specs: Vec::new(),
            outputs: BTreeMap::new(),
            duration_ms: 0,
        }
    }

    pub(crate) fn not_executed(step: usize, s: &Step, stopped_at: usize) -> Self {
        let mut r = Self::new(step, s);
        r.message = Some(format!(
            "not executed: step {stopped_at} did not get its trace"
        ));
        r
    }

    pub(crate) fn finish(
        &mut self,
        status: StepStatus,
        message: Option<String>,
        started: std::time::Instant,
    ) {
        self.status = status;
        self.message = message;
        self.duration_ms = started.elapsed().as_millis() as u64;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub kind: RunKind,
    pub id: String,
    pub name: String,
    pub file: String,
    pub passed: bool,
    pub steps: Vec<StepReport>,
    pub duration_ms: u64,
}

impl RunReport {
    pub(crate) fn new(r: &Runnable, steps: Vec<StepReport>, took: Duration) -> Self {
        Self {
            kind: r.kind,
            id: r.id.clone(),
            name: r.name.clone(),
            file: r.file.clone(),
            // Any failed or not executed step fails the transaction.
            passed: !steps.is_empty() && steps.iter().all(|s| s.status == StepStatus::Passed),
            steps,
            duration_ms: took.as_millis() as u64,
        }
    }

    fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}

/// Everything one `test run` ran.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub passed: bool,
    pub runs: Vec<RunReport>,
}

impl SuiteReport {
    pub fn new(runs: Vec<RunReport>) -> Self {
        Self {
            passed: runs.iter().all(|r| r.passed),
            runs,
        }
    }
}

/// The terminal report: each step, each spec, each failing assertion with
/// its span, observed and expected value; the trace of every step.
pub fn render_text(report: &SuiteReport) -> String {
    let mut o = String::new();
    for run in &report.runs {
        let what = match run.kind {
            RunKind::Test => "Test",
            RunKind::Transaction => "Transaction",
        };
        let _ = writeln!(o, "{what} {} ({})  {}", run.name, run.id, run.file);
        for s in &run.steps {
            text_step(&mut o, run, s);
        }
        let _ = writeln!(
            o,
            "{}: {} passed, {} failed, {} without trace, {} errors, {} not executed ({:.1}s)\n",
            if run.passed { "PASS" } else { "FAIL" },
            run.count(StepStatus::Passed),
            run.count(StepStatus::Failed),
            run.count(StepStatus::NoTrace),
            run.count(StepStatus::Error),
            run.count(StepStatus::NotExecuted),
            run.duration_ms as f64 / 1000.0
        );
    }
    o
}

fn text_step(o: &mut String, run: &RunReport, s: &StepReport) {
    let pos = if run.kind == RunKind::Transaction {
        format!("{}/{} ", s.step, run.steps.len())
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "  {:<12} {pos}{} ({})",
        s.status.label(),
        s.name,
        s.test_id
    );
    let pad = "               ";
    if let Some(t) = &s.trigger {
        match s.response_status {
            Some(st) => {
                let _ = writeln!(o, "{pad}trigger: {t} -> {st}");
            }
            None => {
                let _ = writeln!(o, "{pad}trigger: {t}");
            }
        }
    }
    if let Some(id) = &s.trace_id {
        match &s.trace_url {
            Some(url) => {
                let _ = writeln!(o, "{pad}trace: {} {url}", id.to_hex());
            }
            None => {
                let _ = writeln!(o, "{pad}trace: {}", id.to_hex());
            }
        }
        if s.status != StepStatus::NotExecuted && s.span_count > 0 {
            let _ = writeln!(o, "{pad}spans: {}", s.span_count);
        }
    }
    if let Some(m) = &s.message {
        let _ = writeln!(o, "{pad}{m}");
    }
    for spec in &s.specs {
        let mark = if spec.passed { "PASS" } else { "FAIL" };
        let spans = match spec.span_count {
            1 => "1 span".to_string(),
            n => format!("{n} spans"),
        };
        let _ = writeln!(o, "{pad}{mark} {} ({spans})", spec.name);
        if spec.name != spec.selector {
            let _ = writeln!(o, "{pad}     selector: {}", spec.selector);
        }
        if let Some(m) = &spec.message {
            let _ = writeln!(o, "{pad}     {m}");
        }
        for a in &spec.assertions {
            let mark = if a.passed { "pass" } else { "FAIL" };
            let _ = writeln!(o, "{pad}     {mark} {}", a.text);
            if a.passed {
                continue;
            }
            for sp in a.spans.iter().filter(|r| !r.passed) {
                let span = match (&sp.span_id, &sp.span_name) {
                    (Some(id), Some(n)) if id.is_valid() => format!("span {} {n:?}", id.to_hex()),
                    (_, Some(n)) => format!("span {n:?}"),
                    _ => "selected spans".to_string(),
                };
                let observed = sp.observed.as_deref().unwrap_or("(none)");
                let expected = sp.expected.as_deref().unwrap_or("(none)");
                let _ = write!(
                    o,
                    "{pad}          {span}: observed {observed}, expected {expected}"
                );
                // The message repeats observed/expected when both are known.
                if !sp.message.is_empty() && (sp.observed.is_none() || sp.expected.is_none()) {
                    let _ = write!(o, " ({})", sp.message);
                }
                o.push('\n');
            }
        }
    }
    if !s.outputs.is_empty() {
        let list: Vec<String> = s.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, "{pad}outputs: {}", list.join(", "));
    }
}

/// JUnit XML: a `<testsuite>` per test or transaction, a `<testcase>` per
/// step; the trace ID and URL of each step in its `<system-out>`.
pub fn render_junit(report: &SuiteReport) -> String {
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = report.runs.iter().map(|r| r.steps.len()).sum();
    let failures: usize = report
        .runs
        .iter()
        .map(|r| r.count(StepStatus::Failed))
        .sum();
    let errors: usize = report
        .runs
        .iter()
        .map(|r| r.count(StepStatus::NoTrace) + r.count(StepStatus::Error))
        .sum();
    let _ = writeln!(
        o,
        "<testsuites name=\"tracecheck test run\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">"
    );
    for run in &report.runs {
        let _ = writeln!(
            o,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            xml(&run.name),
            run.steps.len(),
            run.count(StepStatus::Failed),
            run.count(StepStatus::NoTrace) + run.count(StepStatus::Error),
            run.count(StepStatus::NotExecuted),
            run.duration_ms as f64 / 1000.0
        );
        for s in &run.steps {
            let _ = writeln!(
                o,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\">",
                xml(&run.id),
                xml(&format!("{}. {}", s.step, s.name)),
                xml(&s.file),
                s.duration_ms as f64 / 1000.0
            );
            let message = s.message.clone().unwrap_or_default();
            match s.status {
                StepStatus::Passed => {}
                StepStatus::Failed => {
                    let details = failure_details(s);
                    let first = details.lines().next().unwrap_or("specs failed").to_string();
                    let _ = writeln!(
                        o,
                        "      <failure message=\"{}\" type=\"assertion\">{}</failure>",
                        xml(&first),
                        xml(&details)
                    );
                }
                StepStatus::NoTrace | StepStatus::Error => {
                    let kind = if s.status == StepStatus::NoTrace {
                        "no_trace"
                    } else {
                        "trigger"
                    };
                    let _ = writeln!(
                        o,
                        "      <error message=\"{}\" type=\"{kind}\"/>",
                        xml(&message)
                    );
                }
                StepStatus::NotExecuted => {
                    let _ = writeln!(o, "      <skipped message=\"{}\"/>", xml(&message));
                }
            }
            if let Some(id) = &s.trace_id {
                let mut out = format!("trace_id: {}", id.to_hex());
                if let Some(u) = &s.trace_url {
                    let _ = write!(out, "\ntrace_url: {u}");
                }
                let _ = writeln!(o, "      <system-out>{}</system-out>", xml(&out));
            }
            o.push_str("    </testcase>\n");
        }
        o.push_str("  </testsuite>\n");
    }
    o.push_str("</testsuites>\n");
    o
}

/// The failing specs and assertions of a step, one per line.
fn failure_details(s: &StepReport) -> String {
    let mut o = String::new();
    for spec in s.specs.iter().filter(|x| !x.passed) {
        if let Some(m) = &spec.message {
            let _ = writeln!(o, "{}: {m}", spec.name);
        }
        for a in spec.assertions.iter().filter(|a| !a.passed) {
            for sp in a.spans.iter().filter(|r| !r.passed) {
                let _ = writeln!(
                    o,
                    "{}: {} on span {} {}: observed {}, expected {}",
                    spec.name,
                    a.text,
                    sp.span_id.map(|i| i.to_hex()).unwrap_or_default(),
                    sp.span_name.as_deref().unwrap_or(""),
                    sp.observed.as_deref().unwrap_or("(none)"),
                    sp.expected.as_deref().unwrap_or("(none)")
                );
            }
        }
    }
    o
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}
