//! The pages' HTML. Every value that comes from outside the daemon's own
//! text (span names and attributes, model files, failure messages, query
//! parameters) goes through [`escape`]; no page has inline script or
//! style (the CSP would refuse them), so positions are SVG attributes.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Verdict;
use crate::evaluator::registry::{LoadedModels, ReloadReport};
use crate::ids::{SpanId, TraceId};
use crate::model::Model;
use crate::results::config::LinksConfig;
use crate::results::store::{ResultStore, StoredTrace, VerdictRecord};
use crate::testrun::api::RunRecord;

/// Rows of one failures page.
pub const PAGE_SIZE: usize = 50;

/// `s` as HTML text or a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query parameter's value, percent-encoded.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn time(ms: u64) -> String {
    let at = crate::results::alerts::rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
    format!("<time datetime=\"{at}\">{}</time>", at.replace('T', " "))
}

fn layout(title: &str, page: &str, body: &str) -> String {
    let nav = [
        ("overview", "/ui/", "Overview"),
        ("failures", "/ui/failures", "Failures"),
        ("live", "/ui/live", "Live"),
        ("runs", "/ui/runs", "Test runs"),
    ]
    .iter()
    .map(|(id, href, label)| {
        let current = if *id == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    })
    .collect::<Vec<_>>()
    .join(" ");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tracecheck</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/ui.css\">\
         <script src=\"/ui/assets/ui.js\" defer></script></head>\
         <body data-page=\"{page}\"><header><strong>tracecheck</strong> <nav>{nav}</nav></header>\
         <main>{body}</main></body></html>\n",
        escape(title)
    )
}

/// A page that only says something (a trace not kept, a bad ID).
pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        "",
        &format!(
            "<h1>{}</h1><p class=\"message\">{}</p>",
            escape(title),
            escape(text)
        ),
    )
}

fn verdict_badge(v: Verdict) -> String {
    format!("<span class=\"verdict {0}\">{0}</span>", v.as_str())
}

// ---------------------------------------------------------------------------
// Overview.

/// One model of the overview.
pub struct ModelRow<'a> {
    pub model: &'a Model,
    /// Pass, fail, inconclusive since the daemon started.
    pub totals: [u64; 3],
    /// Per minute, oldest first, the minute under way last.
    pub minutes: Vec<[u64; 3]>,
}

const CHART_BAR: usize = 4;
const CHART_HEIGHT: u64 = 32;

/// The last hour per minute as stacked bars (failures red at the bottom,
/// inconclusive grey, passes green), scaled to the busiest minute.
fn chart(minutes: &[[u64; 3]]) -> String {
    let width = super::RATE_MINUTES * CHART_BAR;
    let max = minutes
        .iter()
        .map(|m| m.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {CHART_HEIGHT}\" width=\"{width}\" height=\"{CHART_HEIGHT}\" role=\"img\">"
    );
    let hour: [u64; 3] = std::array::from_fn(|k| minutes.iter().map(|m| m[k]).sum());
    let _ = write!(
        out,
        "<title>last hour: {} pass, {} fail, {} inconclusive</title>",
        hour[0], hour[1], hour[2]
    );
    let offset = super::RATE_MINUTES.saturating_sub(minutes.len());
    for (i, m) in minutes.iter().enumerate() {
        let x = (offset + i) * CHART_BAR;
        let mut y = CHART_HEIGHT;
        for (k, fill) in [(1, "#d33"), (2, "#999"), (0, "#3a3")] {
            let h = (m[k] * CHART_HEIGHT).div_ceil(max);
            if h == 0 {
                continue;
            }
            y = y.saturating_sub(h);
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{fill}\"/>",
                CHART_BAR - 1
            );
        }
    }
    out.push_str("</svg>");
    out
}

pub fn overview(
    models: &[ModelRow<'_>],
    report: &ReloadReport,
    versions: &[crate::results::versions::Row],
) -> String {
    let mut b = String::from("<h1>Models in force</h1>");
    if !report.errors.is_empty() {
        b.push_str("<section class=\"errors\"><h2>Model load errors</h2>");
        if report.kept_previous {
            b.push_str("<p>The last reload was refused; the previous models stay in force.</p>");
        }
        b.push_str("<ul>");
        for e in &report.errors {
            let _ = write!(
                b,
                "<li class=\"load-error\"><code>{}:{}:{}</code> {}</li>",
                escape(&e.file),
                e.line,
                e.column,
                escape(&e.message)
            );
        }
        b.push_str("</ul></section>");
    }
    if models.is_empty() {
        b.push_str("<p class=\"message\">No model is in force.</p>");
        // Tallies of models since unloaded still answer the canary question.
        versions_table(&mut b, versions);
        return layout("Overview", "overview", &b);
    }
    b.push_str(
        "<table class=\"models\"><thead><tr><th>Model</th><th>Labels</th><th>Source</th>\
         <th class=\"n\">Pass</th><th class=\"n\">Fail</th><th class=\"n\">Inconclusive</th>\
         <th>Last hour, per minute</th></tr></thead><tbody>",
    );
    for r in models {
        let m = r.model;
        let labels: String = m
            .labels
            .iter()
            .map(|(k, v)| format!("<span class=\"label\">{}={}</span>", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            b,
            "<tr class=\"model\" data-model=\"{id}\"><td><a class=\"model-link\" href=\"/ui/failures?model={q}\">{id}</a><br><small>{name}</small></td>\
             <td>{labels}</td><td><code>{file}:{line}</code></td>\
             <td class=\"n pass\">{p}</td><td class=\"n fail\">{f}</td><td class=\"n inconclusive\">{i}</td><td>{chart}</td></tr>",
            id = escape(&m.id),
            q = escape(&urlencode(&m.id)),
            name = escape(&m.name),
            file = escape(&m.file),
            line = m.position.line,
            p = r.totals[0],
            f = r.totals[1],
            i = r.totals[2],
            chart = chart(&r.minutes),
        );
    }
    b.push_str("</tbody></table>");
    versions_table(&mut b, versions);
    layout("Overview", "overview", &b)
}

/// Canary vs stable: each model's verdicts per version of the root
/// service, the versions of one service and model on adjacent rows, the
/// fail rate beside each (`GET /api/v1/versions` has the same figures).
fn versions_table(b: &mut String, rows: &[crate::results::versions::Row]) {
    if rows.is_empty() {
        return;
    }
    b.push_str(
        "<h2>Versions side by side</h2><table class=\"versions\"><thead><tr><th>Service</th><th>Model</th>\
         <th>Version</th><th>Pass</th><th>Fail</th><th>Inconclusive</th><th>Fail rate</th></tr></thead><tbody>",
    );
    for r in rows {
        let rate = r
            .fail_rate
            .map_or_else(|| "—".to_owned(), |f| format!("{:.1} %", f * 100.0));
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{rate}</td></tr>",
            escape(&r.service),
            escape(&r.model),
            escape(&r.version),
            r.tally.pass,
            r.tally.fail,
            r.tally.inconclusive,
        );
    }
    b.push_str("</tbody></table>");
}

// ---------------------------------------------------------------------------
// Failures.

/// The failures page's filters (its query string).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FailuresQuery {
    /// A model's id; empty: every model.
    pub model: String,
    /// The trace's root service or one a failure names; empty: any.
    pub service: String,
    /// The root service's `service.version` (a canary's); empty: any.
    pub version: String,
    /// `fail` or `inconclusive`; empty: both.
    pub verdict: String,
    /// How far back, such as `1h`; empty: everything kept.
    pub since: String,
    /// Older than this record (the previous page's last).
    pub before: Option<u64>,
}

impl FailuresQuery {
    fn link(&self, before: Option<u64>) -> String {
        let mut q = format!(
            "/ui/failures?model={}&service={}&version={}&verdict={}&since={}",
            urlencode(&self.model),
            urlencode(&self.service),
            urlencode(&self.version),
            urlencode(&self.verdict),
            urlencode(&self.since)
        );
        if let Some(b) = before {
            let _ = write!(q, "&before={b}");
        }
        q
    }
}

fn select(name: &str, current: &str, options: &[(&str, &str)]) -> String {
    let mut s = format!("<select name=\"{name}\" id=\"f-{name}\">");
    for (value, label) in options {
        let sel = if *value == current { " selected" } else { "" };
        let _ = write!(
            s,
            "<option value=\"{}\"{sel}>{}</option>",
            escape(value),
            escape(label)
        );
    }
    s.push_str("</select>");
    s
}

/// The trace's root service, then the services its failures name, in
/// order, once each.
fn services(r: &VerdictRecord) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let named = r.failures.iter().filter_map(|f| f.service.as_deref());
    for s in r.service.as_deref().into_iter().chain(named) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The failures page: one [`PAGE_SIZE`] page of the failing and
/// inconclusive verdicts kept, newest first, as `q` filters them.
pub fn render_failures(
    store: &ResultStore,
    q: &FailuresQuery,
    models: &[&str],
    now_ms: u64,
) -> String {
    let verdicts: &[Verdict] = match q.verdict.as_str() {
        "fail" => &[Verdict::Fail],
        "inconclusive" => &[Verdict::Inconclusive],
        _ => &[Verdict::Fail, Verdict::Inconclusive],
    };
    let since = crate::model::parse::parse_duration(&q.since)
        .map(|d| now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    let (rows, more) = store.page(
        (!q.model.is_empty()).then_some(q.model.as_str()),
        q.before,
        PAGE_SIZE,
        |r| {
            verdicts.contains(&r.verdict)
                && since.is_none_or(|s| r.evaluated_at_unix_ms >= s)
                // Compared in place: a list per record cost 10x the page
                // (BENCHMARKS.md, "UI failures page").
                && (q.service.is_empty()
                    || r.service.as_deref() == Some(q.service.as_str())
                    || r.failures
                        .iter()
                        .any(|f| f.service.as_deref() == Some(q.service.as_str())))
                && (q.version.is_empty() || r.service_version.as_deref() == Some(q.version.as_str()))
        },
    );

    let mut b = String::from(
        "<h1>Failures</h1><form class=\"filters\" method=\"get\" action=\"/ui/failures\">",
    );
    let mut model_options = vec![("", "every model")];
    model_options.extend(models.iter().map(|m| (*m, *m)));
    if !q.model.is_empty() && !models.contains(&q.model.as_str()) {
        model_options.push((q.model.as_str(), q.model.as_str()));
    }
    let _ = write!(
        b,
        "<label>Model {}</label> <label>Service <input name=\"service\" id=\"f-service\" value=\"{}\"></label> \
         <label>Version <input name=\"version\" id=\"f-version\" value=\"{}\"></label> \
         <label>Verdict {}</label> <label>Since {}</label> <button type=\"submit\">Filter</button></form>",
        select("model", &q.model, &model_options),
        escape(&q.service),
        escape(&q.version),
        select(
            "verdict",
            &q.verdict,
            &[("", "fail and inconclusive"), ("fail", "fail"), ("inconclusive", "inconclusive")]
        ),
        select(
            "since",
            &q.since,
            &[("", "all kept"), ("15m", "15 minutes"), ("1h", "1 hour"), ("6h", "6 hours"), ("24h", "24 hours")]
        ),
    );
    if rows.is_empty() {
        b.push_str("<p class=\"message\">No failing or inconclusive verdict kept matches.</p>");
    } else {
        b.push_str(
            "<table class=\"failures\"><thead><tr><th>Evaluated</th><th>Verdict</th><th>Model</th>\
             <th>Trace</th><th>Services</th><th>What failed</th></tr></thead><tbody>",
        );
        for r in &rows {
            let what = match r.failures.first() {
                Some(f) => {
                    let mut s = format!("<b>{}</b>", escape(&f.spec));
                    match (&f.observed, &f.expected) {
                        (Some(o), Some(e)) => {
                            let _ = write!(
                                s,
                                ": observed <code>{}</code>, expected <code>{}</code>",
                                escape(o),
                                escape(e)
                            );
                        }
                        _ => {
                            let _ = write!(s, ": {}", escape(&f.message));
                        }
                    }
                    if r.failures.len() > 1 {
                        let _ = write!(s, " <small>(+{} more)</small>", r.failures.len() - 1);
                    }
                    s
                }
                None => escape(r.inconclusive.map_or("", |i| i.as_str())),
            };
            let _ = write!(
                b,
                "<tr class=\"failure\" data-seq=\"{seq}\"><td>{at}</td><td>{v}</td><td>{model}</td>\
                 <td><a class=\"trace-link\" href=\"/ui/trace/{id}\"><code>{id}</code></a></td><td>{svc}</td><td>{what}</td></tr>",
                seq = r.seq,
                at = time(r.evaluated_at_unix_ms),
                v = verdict_badge(r.verdict),
                model = escape(&r.model),
                id = r.trace_id,
                svc = escape(&services(r).join(", ")),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<p class=\"paging\">");
    if q.before.is_some() {
        let _ = write!(b, "<a href=\"{}\">Newest</a> ", escape(&q.link(None)));
    }
    if let (true, Some(last)) = (more, rows.last()) {
        let _ = write!(
            b,
            "<a class=\"older\" href=\"{}\">Older</a>",
            escape(&q.link(Some(last.seq)))
        );
    }
    b.push_str("</p>");
    layout("Failures", "failures", &b)
}

// ---------------------------------------------------------------------------
// Trace.

/// A span of the waterfall.
struct Row<'a> {
    depth: usize,
    span: &'a Value,
    start: u64,
    end: u64,
}

fn flatten<'a>(v: &'a Value, depth: usize, out: &mut Vec<Row<'a>>) {
    let start = v["start_time_unix_nano"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let ms = v["duration_ms"].as_f64().unwrap_or(0.0);
    out.push(Row {
        depth,
        span: v,
        start,
        end: start.saturating_add((ms * 1e6) as u64),
    });
    if let Some(kids) = v["children"].as_array() {
        for k in kids {
            flatten(k, depth + 1, out);
        }
    }
}

/// Colours of services, in the order they first appear.
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7",
];

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The selector of the spec (or `not_expect` entry) a failure names.
fn spec_selector<'m>(model: &'m Model, spec: &str) -> Option<&'m str> {
    model
        .specs
        .iter()
        .find(|s| s.name.as_deref() == Some(spec) || (s.name.is_none() && s.selector.text == spec))
        .map(|s| s.selector.text.as_str())
        .or_else(|| {
            model
                .not_expect
                .iter()
                .find(|n| n.label() == spec)
                .map(|n| n.selector.text.as_str())
        })
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The lines (0-based) of the list item in `text` that writes the spec
/// named `spec`, in the YAML document holding line `model_line` (1-based):
/// the item whose `name:` (or, unnamed, `selector:`) is `spec`, with its
/// nested lines.
pub fn spec_lines(text: &str, model_line: usize, spec: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let at = model_line.saturating_sub(1).min(lines.len());
    let first = lines[..at]
        .iter()
        .rposition(|l| l.starts_with("---"))
        .map_or(0, |i| i + 1);
    let last = lines[at..]
        .iter()
        .position(|l| l.starts_with("---"))
        .map_or(lines.len(), |i| at + i);
    let unquote = |v: &str| {
        let v = v.trim();
        let v = v.split(" #").next().unwrap_or(v).trim();
        v.strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v)
            .to_owned()
    };
    let found = (first..last).find(|&i| {
        let t = lines[i].trim_start();
        let t = t.strip_prefix("- ").unwrap_or(t).trim_start();
        ["name:", "selector:"]
            .iter()
            .any(|k| t.strip_prefix(k).is_some_and(|v| unquote(v) == spec))
    });
    let Some(found) = found else {
        return Vec::new();
    };
    // The list item holding that key: the line itself, or the nearest
    // `- ` above it indented less.
    let item = if lines[found].trim_start().starts_with("- ") {
        found
    } else {
        let key_indent = indent(lines[found]);
        (first..found)
            .rev()
            .find(|&i| lines[i].trim_start().starts_with("- ") && indent(lines[i]) < key_indent)
            .unwrap_or(found)
    };
    let dash = indent(lines[item]);
    let mut out = vec![item];
    for (i, l) in lines.iter().enumerate().take(last).skip(item + 1) {
        if l.trim().is_empty() || indent(l) <= dash {
            break;
        }
        out.push(i);
    }
    out
}

/// The trace page.
pub fn trace_page(
    id: &TraceId,
    stored: &StoredTrace,
    loaded: &LoadedModels,
    links: &LinksConfig,
    source: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut verdicts: Vec<&Arc<VerdictRecord>> = stored.verdicts.iter().collect();
    verdicts.sort_by_key(|r| r.seq);
    let failing: Vec<&Arc<VerdictRecord>> = verdicts
        .iter()
        .copied()
        .filter(|r| r.verdict == Verdict::Fail)
        .collect();
    let failing_spans: Vec<SpanId> = failing
        .iter()
        .flat_map(|r| r.failures.iter().filter_map(|f| f.span_id))
        .collect();
    let model_of = |id: &str| loaded.engine.models().iter().find(|m| m.id == id);

    let mut b = format!("<h1>Trace <code id=\"trace-id\">{id}</code></h1><p class=\"actions\">");
    if let Some(url) = links.external_trace_url(id, failing_spans.first()) {
        let _ = write!(
            b,
            "<a id=\"jaeger\" href=\"{}\" rel=\"noopener noreferrer\">Open in Jaeger</a> · ",
            escape(&url)
        );
    }
    let _ = write!(
        b,
        "<a id=\"download-test\" href=\"/api/v1/traces/{id}/test.tar.gz\" download>Download as test</a> · \
         <a href=\"/api/v1/traces/{id}\">JSON</a></p>"
    );

    // What failed.
    if !failing.is_empty() {
        b.push_str(
            "<h2>Failed specs</h2><table class=\"failed-specs\"><thead><tr><th>Model</th><th>Spec</th>\
             <th>Selector</th><th>Span</th><th>Observed</th><th>Expected</th><th>Message</th></tr></thead><tbody>",
        );
        for r in &failing {
            let model = model_of(&r.model);
            for f in &r.failures {
                let selector = model.and_then(|m| spec_selector(m, &f.spec)).unwrap_or("");
                let span = match (&f.span_id, &f.span_name) {
                    (Some(s), name) => format!(
                        "<a href=\"#span-{s}\">{}</a>",
                        escape(name.as_deref().unwrap_or("span"))
                    ),
                    (None, _) => "<i>no span selected</i>".into(),
                };
                let _ = write!(
                    b,
                    "<tr class=\"failed-spec\"><td>{}</td><td class=\"spec\">{}</td><td class=\"selector\"><code>{}</code></td>\
                     <td class=\"span\">{span}</td><td class=\"observed\">{}</td><td class=\"expected\">{}</td><td class=\"message\">{}</td></tr>",
                    escape(&r.model),
                    escape(&f.spec),
                    escape(selector),
                    escape(f.observed.as_deref().unwrap_or("")),
                    escape(f.expected.as_deref().unwrap_or("")),
                    escape(&f.message),
                );
            }
        }
        b.push_str("</tbody></table>");
    }

    // The spans.
    b.push_str("<h2>Spans</h2>");
    match crate::admin::api::span_tree(&stored.spans) {
        Err(e) => {
            let _ = write!(b, "<p class=\"message\">{}</p>", escape(&e));
        }
        Ok(tree) => {
            let mut rows = Vec::new();
            for root in &tree {
                flatten(root, 0, &mut rows);
            }
            let t0 = rows.iter().map(|r| r.start).min().unwrap_or(0);
            let t1 = rows.iter().map(|r| r.end).max().unwrap_or(t0).max(t0 + 1);
            let span_ns = (t1 - t0) as f64;
            let mut colours: HashMap<String, &str> = HashMap::new();
            b.push_str(&format!(
                "<table class=\"waterfall\"><thead><tr><th>Span</th><th>Service</th><th class=\"timeline\">0 – {:.3} ms</th><th class=\"n\">ms</th></tr></thead><tbody>",
                span_ns / 1e6
            ));
            for r in &rows {
                let s = r.span;
                let sid = s["span_id"].as_str().unwrap_or("");
                let service = s["service"].as_str().unwrap_or("");
                let next = PALETTE[colours.len() % PALETTE.len()];
                let colour = *colours.entry(service.to_owned()).or_insert(next);
                let failing = SpanId::parse_hex(sid).is_ok_and(|x| failing_spans.contains(&x));
                let x = ((r.start - t0) as f64 / span_ns * 1000.0).clamp(0.0, 1000.0);
                let w =
                    ((r.end - r.start) as f64 / span_ns * 1000.0).clamp(2.0, 1000.0 - x.min(998.0));
                let mut attrs = String::new();
                if let Some(map) = s["attributes"].as_object() {
                    for (k, v) in map {
                        let _ = write!(
                            attrs,
                            "<dt>{}</dt><dd>{}</dd>",
                            escape(k),
                            escape(&value_text(v))
                        );
                    }
                }
                let status = s["status"].as_str().unwrap_or("unset");
                let _ = write!(
                    b,
                    "<tr class=\"span{fclass}\" id=\"span-{sid}\" data-span-id=\"{sid}\">\
                     <td>{ind}<details><summary>{mark}<span class=\"name\">{name}</span> <small>{kind}, {status}</small></summary>\
                     <dl>{attrs}</dl></details></td>\
                     <td><span class=\"service\"><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" fill=\"{colour}\"/></svg> {svc}</span></td>\
                     <td class=\"timeline\"><svg class=\"bar\" viewBox=\"0 0 1000 12\" preserveAspectRatio=\"none\">\
                     <rect x=\"{x:.1}\" y=\"1\" width=\"{w:.1}\" height=\"10\" fill=\"{colour}\"{stroke}/></svg></td>\
                     <td class=\"n\">{ms:.3}</td></tr>",
                    fclass = if failing { " failing" } else { "" },
                    sid = escape(sid),
                    ind = "<span class=\"indent\"></span>".repeat(r.depth.min(24)),
                    mark = if failing {
                        "<span class=\"mark\" title=\"a spec failed on this span\">✗ failing</span> "
                    } else {
                        ""
                    },
                    name = escape(s["name"].as_str().unwrap_or("")),
                    kind = escape(s["kind"].as_str().unwrap_or("")),
                    status = escape(status),
                    svc = escape(service),
                    stroke = if failing {
                        " stroke=\"#d00\" stroke-width=\"3\""
                    } else {
                        ""
                    },
                    ms = (r.end - r.start) as f64 / 1e6,
                );
            }
            b.push_str("</tbody></table>");
        }
    }

    // The failing models as written.
    let mut shown = BTreeSet::new();
    for r in &failing {
        if !shown.insert(r.model.to_string()) {
            continue;
        }
        let Some(model) = model_of(&r.model) else {
            continue;
        };
        let _ = write!(
            b,
            "<h2>Model <code>{}</code></h2><p><code>{}:{}</code></p>",
            escape(&model.id),
            escape(&model.file),
            model.position.line
        );
        let Some(text) = source(&model.file) else {
            b.push_str("<p class=\"message\">The model's file cannot be read now.</p>");
            continue;
        };
        let mut marked = BTreeSet::new();
        for f in failing
            .iter()
            .filter(|x| x.model == r.model)
            .flat_map(|x| x.failures.iter())
        {
            marked.extend(spec_lines(&text, model.position.line, &f.spec));
        }
        b.push_str("<pre class=\"yaml\"><code>");
        for (i, line) in text.lines().enumerate() {
            let class = if marked.contains(&i) { "ln hl" } else { "ln" };
            // Block spans: a newline as well would double the spacing.
            let _ = write!(b, "<span class=\"{class}\">{}</span>", escape(line));
        }
        b.push_str("</code></pre>");
    }

    // Every verdict on the trace.
    b.push_str(
        "<h2>Verdicts on this trace</h2><table class=\"verdicts\"><thead><tr><th>Model</th><th>Verdict</th>\
         <th>Evaluated</th><th>Failures</th><th>Notes</th></tr></thead><tbody>",
    );
    for r in &verdicts {
        let mut notes = Vec::new();
        if r.early {
            notes.push("decided early".to_owned());
        }
        if r.waited_for_late_spans {
            notes.push("waited for late spans".to_owned());
        }
        if let Some(f) = r.flipped_from {
            notes.push(format!("was {}", f.as_str()));
        }
        if let Some(i) = r.inconclusive {
            notes.push(i.as_str().to_owned());
        }
        if r.incomplete {
            notes.push("trace incomplete".to_owned());
        }
        let _ = write!(
            b,
            "<tr class=\"verdict-row\"><td><a href=\"/ui/failures?model={q}\">{m}</a></td><td>{v}</td><td>{at}</td><td class=\"n\">{n}</td><td>{notes}</td></tr>",
            q = escape(&urlencode(&r.model)),
            m = escape(&r.model),
            v = verdict_badge(r.verdict),
            at = time(r.evaluated_at_unix_ms),
            n = r.failures.len(),
            notes = escape(&notes.join(", ")),
        );
    }
    b.push_str("</tbody></table>");
    layout(&format!("Trace {id}"), "trace", &b)
}

// ---------------------------------------------------------------------------
// Live.

pub fn live(models: &[&str], model: &str, verdict: &str) -> String {
    let mut options = vec![("", "every model")];
    options.extend(models.iter().map(|m| (*m, *m)));
    let b = format!(
        "<h1>Live verdicts</h1><form class=\"filters\" method=\"get\" action=\"/ui/live\">\
         <label>Model {}</label> <label>Verdict {}</label> <button type=\"submit\">Watch</button></form>\
         <p id=\"live-status\">connecting…</p>\
         <table class=\"live\"><thead><tr><th>Evaluated</th><th>Verdict</th><th>Model</th><th>Trace</th><th>What failed</th></tr></thead>\
         <tbody id=\"live-rows\"></tbody></table>",
        select("model", model, &options),
        select(
            "verdict",
            verdict,
            &[("", "every verdict"), ("fail", "fail"), ("inconclusive", "inconclusive"), ("pass", "pass")]
        ),
    );
    layout("Live", "live", &b)
}

/// One record as the live page's script reads it (it sets text, never
/// HTML, from these).
pub fn live_event(r: &VerdictRecord) -> Value {
    let what = r
        .failures
        .first()
        .map(|f| match (&f.observed, &f.expected) {
            (Some(o), Some(e)) => format!("{}: observed {o}, expected {e}", f.spec),
            _ => format!("{}: {}", f.spec, f.message),
        });
    json!({
        "seq": r.seq,
        "trace_id": r.trace_id,
        "model": r.model,
        "verdict": r.verdict.as_str(),
        "at": crate::results::alerts::rfc3339(UNIX_EPOCH + Duration::from_millis(r.evaluated_at_unix_ms)),
        "what": what,
    })
}

// ---------------------------------------------------------------------------
// Test runs.

pub fn runs(records: &[RunRecord]) -> String {
    let mut b = String::from("<h1>Test runs</h1>");
    if records.is_empty() {
        b.push_str("<p class=\"message\">No run was submitted through <code>POST /api/v1/runs</code> (or none is kept).</p>");
        return layout("Test runs", "runs", &b);
    }
    for r in records {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = write!(
            b,
            "<section class=\"run\" data-run=\"{id}\"><h2>Run <code>{id}</code> <span class=\"state {state}\">{state}</span></h2><p>submitted {at}</p>",
            id = escape(&r.id),
            state = escape(&state),
            at = time(r.submitted_at_unix_ms),
        );
        if let Some(e) = &r.error {
            let _ = write!(b, "<p class=\"message\">{}</p>", escape(e));
        }
        let Some(report) = &r.report else {
            b.push_str("</section>");
            continue;
        };
        for run in &report.runs {
            let _ = write!(
                b,
                "<h3>{} <small><code>{}</code></small></h3><table class=\"steps\"><thead><tr><th>Step</th><th>Test</th>\
                 <th>Status</th><th>Trace</th><th class=\"n\">Spans</th><th>Message</th></tr></thead><tbody>",
                escape(&run.name),
                escape(&run.file)
            );
            for s in &run.steps {
                let trace = match &s.trace_id {
                    Some(t) => format!(
                        "<a class=\"trace-link\" href=\"/ui/trace/{t}\"><code>{t}</code></a>"
                    ),
                    None => String::new(),
                };
                let _ = write!(
                    b,
                    "<tr class=\"step\"><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{trace}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    s.step,
                    escape(&s.name),
                    escape(s.status.label()),
                    s.span_count,
                    escape(s.message.as_deref().unwrap_or("")),
                );
            }
            b.push_str("</tbody></table>");
        }
        b.push_str("</section>");
    }
    layout("Test runs", "runs", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_text() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        // An attribute value cannot end its quotes.
        assert_eq!(escape("\" onmouseover=\"x"), "&quot; onmouseover=&quot;x");
        assert_eq!(escape("plain ✓"), "plain ✓");
    }

    fn failure(store: &ResultStore, i: u32, service: &str) -> Arc<VerdictRecord> {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        Arc::new(VerdictRecord {
            seq: store.next_seq(),
            trace_id: TraceId(id),
            model: "m".into(),
            model_name: "M".into(),
            verdict: Verdict::Fail,
            inconclusive: None,
            failures: vec![crate::engine::Failure {
                spec: "answers 500".into(),
                kind: crate::engine::FailureKind::Assertion,
                assertion: None,
                span_id: None,
                span_name: None,
                service: Some(service.into()),
                observed: Some("<b>200</b>".into()),
                expected: Some("500".into()),
                message: String::new(),
            }],
            trace_url: None,
            summary: None,
            evaluated_at_unix_ms: 1_000,
            incomplete: false,
            completion_reason: crate::metrics::CompletionReason::idle,
            waited_for_late_spans: false,
            early: false,
            flipped_from: None,
            service: None,
            service_version: None,
        })
    }

    /// The `before` of the page's "Older" link, if it has one.
    fn older(page: &str) -> Option<u64> {
        let at = page.find("class=\"older\" href=\"")?;
        let rest = &page[at..];
        let b = rest.find("before=")? + "before=".len();
        rest[b..].split('"').next()?.parse().ok()
    }

    #[test]
    fn the_failures_page_pages_newest_first_and_escapes() {
        let store = ResultStore::default();
        for i in 0..(PAGE_SIZE as u32 * 2 + 7) {
            let service = if i % 2 == 0 { "bank-api" } else { "bank-db" };
            store.record(TraceId([0; 16]), &[], vec![failure(&store, i, service)]);
        }
        let mut q = FailuresQuery::default();
        let mut seqs = Vec::new();
        let mut pages = 0;
        loop {
            let page = render_failures(&store, &q, &["m"], 2_000);
            pages += 1;
            assert!(page.matches("<tr class=\"failure\"").count() <= PAGE_SIZE);
            seqs.extend(
                page.split("data-seq=\"")
                    .skip(1)
                    .filter_map(|s| s.split('"').next()?.parse::<u64>().ok()),
            );
            // Values are text: the observed `<b>` is shown, not bold.
            assert!(page.contains("<code>&lt;b&gt;200&lt;/b&gt;</code>"));
            assert!(!page.contains("<b>200"));
            match older(&page) {
                Some(b) => q.before = Some(b),
                None => break,
            }
        }
        // The store keeps 100 of a model: two full pages, the second
        // without an "Older" link.
        assert_eq!(pages, 2);
        // Every record kept, once, newest first.
        let mut want: Vec<u64> = (8..=(PAGE_SIZE as u64 * 2 + 7)).rev().collect();
        want.truncate(100);
        assert_eq!(seqs, want);

        // A service filter keeps only its failures, and stays in the link.
        let q = FailuresQuery {
            service: "bank-db".into(),
            before: Some(60),
            ..FailuresQuery::default()
        };
        let page = render_failures(&store, &q, &["m"], 2_000);
        assert!(page.contains("<td>bank-db</td>") && !page.contains("<td>bank-api</td>"));
        assert!(!page.contains("data-seq=\"60\"") && page.contains("data-seq=\"58\""));
        assert!(
            page.contains("href=\"/ui/failures?model=&amp;service=bank-db&amp;"),
            "the way back to the newest keeps the filter"
        );
        // A window that ends before them shows none.
        let q = FailuresQuery {
            since: "1s".into(),
            ..FailuresQuery::default()
        };
        assert!(render_failures(&store, &q, &["m"], 10_000).contains("No failing"));
    }

    /// An inconclusive verdict names no failing span, but its trace's root
    /// service still finds it; the overview puts a service's versions side
    /// by side with their fail rates.
    #[test]
    fn the_root_service_filters_and_versions_sit_side_by_side() {
        let store = ResultStore::default();
        let mut r = (*failure(&store, 1, "bank-db")).clone();
        r.failures.clear();
        r.verdict = Verdict::Inconclusive;
        r.service = Some("checkout".into());
        store.record(TraceId([1; 16]), &[], vec![Arc::new(r)]);
        let q = FailuresQuery {
            service: "checkout".into(),
            ..FailuresQuery::default()
        };
        let page = render_failures(&store, &q, &["m"], 2_000);
        assert!(page.contains("data-seq=\"1\""), "{page}");
        // The canary's version finds it; the stable's does not.
        let mut canary = (*failure(&store, 2, "bank-db")).clone();
        canary.service = Some("checkout".into());
        canary.service_version = Some("1.5.0".into());
        store.record(TraceId([2; 16]), &[], vec![Arc::new(canary)]);
        let by_version = |version: &str| {
            let q = FailuresQuery {
                version: version.into(),
                ..FailuresQuery::default()
            };
            render_failures(&store, &q, &["m"], 2_000)
        };
        let canary_page = by_version("1.5.0");
        assert!(canary_page.contains("data-seq=\"2\"") && !canary_page.contains("data-seq=\"1\""));
        assert!(
            canary_page.contains("id=\"f-version\" value=\"1.5.0\""),
            "the filter stays in the form"
        );
        let next = FailuresQuery {
            version: "1.5.0".into(),
            ..FailuresQuery::default()
        }
        .link(Some(9));
        assert!(
            next.contains("version=1.5.0"),
            "and in the paging links: {next}"
        );
        assert!(!by_version("1.4.0").contains("data-seq=\"2\""));

        let counted = |verdict| crate::results::versions::Counted {
            model: "paid",
            verdict,
            undo: None,
        };
        store
            .versions
            .count("checkout", "1.4.0", &[counted(Verdict::Pass)]);
        store
            .versions
            .count("checkout", "<1.5>", &[counted(Verdict::Fail)]);
        let report = crate::evaluator::registry::ReloadReport {
            models: Vec::new(),
            errors: Vec::new(),
            kept_previous: false,
        };
        let page = overview(&[], &report, &store.versions.table(None, None));
        let stable = page.find("<td>1.4.0</td>").expect("the stable version");
        let canary = page
            .find("<td>&lt;1.5&gt;</td>")
            .expect("the canary, escaped");
        assert!(stable < canary, "side by side, in version order");
        assert!(page.contains("<td>0.0 %</td>") && page.contains("<td>100.0 %</td>"));
    }

    /// Each step of a run links to its trace's page; a step without a
    /// trace says why, and names are text.
    #[test]
    fn runs_link_each_step_to_its_trace() {
        use crate::testrun::{RunKind, RunReport, StepReport, StepStatus, SuiteReport};
        let step = |n: usize, status, trace: Option<TraceId>, message: Option<&str>| StepReport {
            step: n,
            test_id: format!("t{n}"),
            name: format!("<i>step {n}</i>"),
            file: "tx.yaml".into(),
            status,
            message: message.map(str::to_owned),
            trigger: None,
            response_status: None,
            trace_id: trace,
            trace_url: None,
            span_count: 4,
            trace_complete: true,
            specs: Vec::new(),
            outputs: Default::default(),
            duration_ms: 10,
        };
        let run = RunRecord {
            id: "0123456789abcdef".into(),
            state: crate::testrun::api::RunState::Failed,
            submitted_at_unix_ms: 0,
            error: None,
            report: Some(SuiteReport::new(vec![RunReport {
                kind: RunKind::Transaction,
                id: "tx".into(),
                name: "withdrawals".into(),
                file: "tx.yaml".into(),
                passed: false,
                steps: vec![
                    step(1, StepStatus::Failed, Some(TraceId([0xab; 16])), None),
                    step(2, StepStatus::NoTrace, None, Some("no span arrived in 30s")),
                ],
                duration_ms: 20,
            }])),
        };
        let page = runs(&[run]);
        let trace = TraceId([0xab; 16]);
        assert!(page.contains(&format!("href=\"/ui/trace/{trace}\"")));
        assert_eq!(page.matches("href=\"/ui/trace/").count(), 1);
        assert!(page.contains("<td>FAIL</td>") && page.contains("<td>NO TRACE</td>"));
        assert!(page.contains("no span arrived in 30s"));
        assert!(page.contains("&lt;i&gt;step 1&lt;/i&gt;") && !page.contains("<i>step"));
        assert!(page.contains("<span class=\"state failed\">failed</span>"));
    }

    #[test]
    fn a_failing_spec_is_found_in_its_document() {
        let text = "type: Model\nspec:\n  id: other\n  specs:\n    - name: rollback happens\n      selector: x\n---\n\
                    type: Model\nspec:\n  id: bank\n  specs:\n    - name: rollback happens\n      selector: span[name = \"rollback\"]\n\
                    \n    - selector: span[name = \"y\"]\n      name: \"API answers 500\"\n      assertions:\n        - attr:a = 1\n    - name: after\n";
        // The second document's item, not the first's.
        assert_eq!(spec_lines(text, 10, "rollback happens"), vec![11, 12]);
        // A name on the item's second line: the whole item.
        assert_eq!(
            spec_lines(text, 10, "API answers 500"),
            vec![14, 15, 16, 17]
        );
        assert!(spec_lines(text, 10, "absent").is_empty());
    }
}
