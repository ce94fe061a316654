//! Offline checks: models evaluated on OTLP JSON trace files (what the
//! Collector's file exporter writes), for CI and for trying a model before
//! it goes live. Same engine, same verdicts as the daemon.

use std::io::Read;
use std::path::Path;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Serialize;

use crate::engine::{EvalContext, Failure, Trace, Verdict};
use crate::ids::TraceId;
use crate::model::{self, Diagnostic, Document, Model};
use crate::otlp::json;

/// A trace file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Decode {
        path: String,
        line: usize,
        message: String,
    },
}

/// Loads models (and tests, as models) from files or folders.
pub fn load_models(paths: &[impl AsRef<Path>]) -> Result<Vec<Model>, Vec<Diagnostic>> {
    let mut models = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        match model::load_path(p.as_ref()) {
            Ok(docs) => models.extend(docs.iter().filter_map(|d| match d {
                Document::Model(m) => Some(m.clone()),
                Document::Test(t) => Some(t.as_model()),
                _ => None,
            })),
            Err(d) => diags.extend(d),
        }
    }
    if diags.is_empty() {
        Ok(models)
    } else {
        Err(diags)
    }
}

/// Reads OTLP JSON: one `ExportTraceServiceRequest` per line, or one object
/// over several lines; gzip files are recognised by their magic bytes.
pub fn read_trace_file(path: &Path) -> Result<Vec<ResourceSpans>, TraceFileError> {
    let p = path.display().to_string();
    let raw = std::fs::read(path).map_err(|source| TraceFileError::Read {
        path: p.clone(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| TraceFileError::Read {
                path: p.clone(),
                source,
            })?;
        out
    } else {
        raw
    };
    let text = String::from_utf8_lossy(&bytes);
    // One object spread over lines: decode it whole.
    if let Ok(req) = json::decode_export_request(text.trim().as_bytes()) {
        return Ok(req.resource_spans);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let req =
            json::decode_export_request(line.as_bytes()).map_err(|e| TraceFileError::Decode {
                path: p.clone(),
                line: i + 1,
                message: e.to_string(),
            })?;
        out.extend(req.resource_spans);
    }
    Ok(out)
}

/// One verdict of the offline check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub trace_id: TraceId,
    pub model: String,
    pub model_name: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Why the verdict is `inconclusive` (e.g. a span that could not be
    /// read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<crate::engine::Inconclusive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
}

/// Every (trace, model) verdict, traces in order of first appearance.
pub fn check(
    engine: &crate::engine::Engine,
    resource_spans: &[ResourceSpans],
    trace_url: Option<&str>,
) -> Vec<CheckResult> {
    let traces = Trace::from_resource_spans(resource_spans);
    let ctx = EvalContext {
        now_unix_nanos: crate::civil::now_unix_nanos(),
        seed: fastrand::u64(..),
        ..EvalContext::default()
    };
    let mut out = Vec::new();
    for trace in &traces {
        let id = trace.trace_id();
        for v in engine.evaluate(trace, &ctx) {
            let Some(m) = engine.models().get(v.model) else {
                continue;
            };
            out.push(CheckResult {
                trace_id: id,
                model: m.id.clone(),
                model_name: m.name.clone(),
                verdict: v.verdict,
                failures: v.failures,
                skip_reason: v.skip_reason.map(std::borrow::Cow::into_owned),
                inconclusive: v.inconclusive,
                trace_url: trace_url.map(|t| t.replace("{trace_id}", &id.to_hex())),
            });
        }
    }
    out
}

/// Human-readable report.
pub fn render_text(results: &[CheckResult]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let (mut pass, mut fail, mut skip, mut inconclusive) = (0, 0, 0, 0);
    for r in results {
        match r.verdict {
            Verdict::Pass => pass += 1,
            Verdict::Fail => fail += 1,
            Verdict::Skip => skip += 1,
            Verdict::Inconclusive => inconclusive += 1,
        }
        let _ = write!(
            s,
            "{:<4} {} trace {}",
            r.verdict.as_str().to_uppercase(),
            r.model,
            r.trace_id
        );
        if let Some(u) = &r.trace_url {
            let _ = write!(s, " {u}");
        }
        if let Some(why) = &r.skip_reason {
            let _ = write!(s, " ({why})");
        }
        if let Some(why) = &r.inconclusive {
            let _ = write!(s, " (cut short: {why})");
        }
        s.push('\n');
        for f in &r.failures {
            let _ = write!(s, "     ✗ {}: {}", f.spec, f.message);
            if let Some(a) = &f.assertion {
                let _ = write!(s, "\n       assertion: {a}");
            }
            if let (Some(id), Some(name)) = (&f.span_id, &f.span_name) {
                let _ = write!(
                    s,
                    "\n       span: {name} ({id}{})",
                    f.service
                        .as_deref()
                        .map(|x| format!(", service {x}"))
                        .unwrap_or_default()
                );
            }
            if let Some(o) = &f.observed {
                let _ = write!(s, "\n       observed: {o}");
            }
            if let Some(e) = &f.expected {
                let _ = write!(s, "\n       expected: {e}");
            }
            s.push('\n');
        }
    }
    let _ = write!(s, "\n{pass} passed, {fail} failed, {skip} skipped");
    if inconclusive > 0 {
        let _ = write!(s, ", {inconclusive} inconclusive");
    }
    s.push('\n');
    s
}

/// JUnit XML: a test suite per model, a test case per trace it applied to.
pub fn render_junit(results: &[CheckResult]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut by_model: BTreeMap<&str, Vec<&CheckResult>> = BTreeMap::new();
    for r in results {
        by_model.entry(&r.model).or_default().push(r);
    }
    let fails = results
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .count();
    // JUnit has no inconclusive: such a case is skipped, with its reason.
    let skips = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Skip | Verdict::Inconclusive))
        .count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"tracecheck\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skips}\">",
        results.len()
    );
    for (model, rs) in by_model {
        let f = rs.iter().filter(|r| r.verdict == Verdict::Fail).count();
        let k = rs
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Skip | Verdict::Inconclusive))
            .count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" skipped=\"{k}\">",
            xml(model),
            rs.len()
        );
        for r in rs {
            let _ = write!(
                s,
                "    <testcase classname=\"{}\" name=\"trace {}\"",
                xml(model),
                r.trace_id
            );
            match r.verdict {
                Verdict::Pass => s.push_str("/>\n"),
                Verdict::Skip => {
                    let _ = writeln!(
                        s,
                        "><skipped message=\"{}\"/></testcase>",
                        xml(r.skip_reason.as_deref().unwrap_or(""))
                    );
                }
                Verdict::Inconclusive => {
                    let why = r.inconclusive.map(|i| i.as_str()).unwrap_or("cut short");
                    let _ = writeln!(
                        s,
                        "><skipped message=\"inconclusive: {}\"/></testcase>",
                        xml(why)
                    );
                }
                Verdict::Fail => {
                    let msg = r
                        .failures
                        .first()
                        .map(|f| format!("{}: {}", f.spec, f.message))
                        .unwrap_or_default();
                    let body: Vec<String> = r
                        .failures
                        .iter()
                        .map(|f| format!("{}: {}", f.spec, f.message))
                        .collect();
                    let _ = writeln!(
                        s,
                        "><failure message=\"{}\">{}{}</failure></testcase>",
                        xml(&msg),
                        xml(&body.join("\n")),
                        r.trace_url
                            .as_deref()
                            .map(|u| format!("\ntrace: {}", xml(u)))
                            .unwrap_or_default()
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
