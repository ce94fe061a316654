//! Tracetest's own expression and selector unit tests, ported as data
//! (`tests/tracetest_ported/`): every row is run through the engine and
//! must give Tracetest's outcome, or, where a row is marked `differs`, the
//! outcome tracecheck gives on purpose (listed in `docs/design.md`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::*;

const EXPRESSIONS: &str = include_str!("../../../tests/tracetest_ported/expressions.yaml");
const SELECTORS: &str = include_str!("../../../tests/tracetest_ported/selectors.yaml");

/// Seeds each statement is evaluated with: a generated value must not
/// give Tracetest's answer by luck.
const SEEDS: u64 = 64;

/// A row of `expressions.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprRow {
    test: String,
    /// Evaluated as an assertion on the spans.
    statement: Option<String>,
    /// Resolved as a test's output from the first span.
    expression: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// The span's name, `s` unless given.
    #[serde(default = "default_name")]
    name: String,
    #[serde(default)]
    events: Vec<EventRow>,
    /// How many spans the selector selects, each with `attributes`.
    #[serde(default = "one")]
    spans: u8,
    /// How long each span lasts.
    #[serde(default = "one_ms")]
    duration_ns: u64,
    /// The value a statement's result shows for the first span.
    observed: Option<String>,
    /// `pass` / `fail` for a statement, `resolves` / `error` for an
    /// expression, or, for either, only whether it `parses` or is
    /// `refused`.
    tracetest: String,
    /// What the expression resolves to, as a literal of the language.
    value: Option<String>,
    /// tracecheck's outcome, where it differs on purpose.
    tracecheck: Option<String>,
    refused_with: Option<String>,
    differs: Option<String>,
}

/// An event of the row's spans.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRow {
    name: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

fn default_name() -> String {
    "s".to_string()
}

const fn one() -> u8 {
    1
}

const fn one_ms() -> u64 {
    1_000_000
}

/// What tracecheck makes of a row.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Pass,
    Fail,
    /// Passes for some seeds and fails for others.
    Varies,
    Resolves,
    /// The expression gives no value when run.
    Error,
    /// Loaded (not run).
    Parses,
    /// Not loaded: the lint errors.
    Refused(String),
    /// Resolves or is evaluated, but to another value (or shows another
    /// observed value) than Tracetest's test names.
    Shows(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("pass"),
            Outcome::Fail => f.write_str("fail"),
            Outcome::Varies => f.write_str("varies"),
            Outcome::Resolves => f.write_str("resolves"),
            Outcome::Error => f.write_str("error"),
            Outcome::Parses => f.write_str("parses"),
            Outcome::Refused(m) => write!(f, "refused ({m})"),
            Outcome::Shows(m) => write!(f, "{m}"),
        }
    }
}

fn row_trace(row: &ExprRow) -> Trace {
    let spans = (1..=row.spans)
        .map(|i| {
            let mut s = sp(i, None, &row.name, 0, 0);
            s.end_time_unix_nano += row.duration_ns;
            s.events = row
                .events
                .iter()
                .map(|e| Event {
                    name: e.name.clone(),
                    attributes: e.attributes.iter().map(|(k, v)| kv(k, sv(v))).collect(),
                    ..Default::default()
                })
                .collect();
            row.attributes.iter().fold(s, |s, (k, v)| s.attr(k, sv(v)))
        })
        .collect();
    // A trace with no span selected still needs a span to be a trace.
    let other = sp(0xee, None, "other", 0, 1);
    trace_of(vec![rs("svc", spans), rs("svc", vec![other])])
}

fn load_errors(yaml: &str) -> Result<Vec<model::Document>, String> {
    model::load_str("row.yaml", yaml).map_err(|errs| {
        errs.iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn ctx_for(seed: u64) -> EvalContext<'static> {
    EvalContext {
        now_unix_nanos: GENERATOR_NOW,
        seed: seed.wrapping_mul(0x1234_5678_9abc_def1),
        ..EvalContext::default()
    }
}

/// A `type: Test` (what Tracetest runs these statements in) with `body`
/// under `spec:`, compiled, or the lint errors.
fn compiled_test(body: &str) -> Result<CompiledTest, String> {
    let yaml = format!(
        "type: Test\nspec:\n  id: t\n  trigger:\n    type: traceid\n    traceid:\n      id: x\n{body}"
    );
    let docs = load_errors(&yaml)?;
    let Some(model::Document::Test(t)) = docs.first() else {
        return Err("not a test".into());
    };
    CompiledTest::compile(t).map_err(|errs| {
        errs.iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// A spec asserting `statement` on the spans named `s`.
fn statement_body(span: &str, statement: &str) -> String {
    format!(
        "  specs:\n    - selector: span[name = {span:?}]\n      assertions:\n        - '{}'\n",
        statement.replace('\'', "''")
    )
}

/// An output `X` reading `expression` from the span named `s`.
fn output_body(span: &str, expression: &str) -> String {
    format!(
        "  outputs:\n    - name: X\n      selector: span[name = {span:?}]\n      value: '{}'\n",
        expression.replace('\'', "''")
    )
}

fn parse_outcome(body: &str) -> Outcome {
    match compiled_test(body) {
        Ok(_) => Outcome::Parses,
        Err(e) => Outcome::Refused(e),
    }
}

fn statement_outcome(span: &str, statement: &str, trace: &Trace) -> Outcome {
    let ct = match compiled_test(&statement_body(span, statement)) {
        Ok(ct) => ct,
        Err(e) => return Outcome::Refused(e),
    };
    let passes = (0..SEEDS)
        .filter(|seed| run_test(&ct, trace, &ctx_for(*seed)).passed)
        .count() as u64;
    match passes {
        0 => Outcome::Fail,
        SEEDS => Outcome::Pass,
        _ => Outcome::Varies,
    }
}

/// What the result of `statement` shows as observed on its first span.
fn observed(span: &str, statement: &str, trace: &Trace) -> Option<String> {
    let ct = compiled_test(&statement_body(span, statement)).ok()?;
    let r = run_test(&ct, trace, &ctx_for(0));
    r.specs
        .first()?
        .assertions
        .first()?
        .spans
        .first()?
        .observed
        .clone()
}

fn expression_outcome(span: &str, expression: &str, trace: &Trace) -> Outcome {
    let ct = match compiled_test(&output_body(span, expression)) {
        Ok(ct) => ct,
        Err(e) => return Outcome::Refused(e),
    };
    if run_test(&ct, trace, &ctx_for(0)).outputs.contains_key("X") {
        Outcome::Resolves
    } else {
        Outcome::Error
    }
}

fn expected_outcome(word: &str, refused_with: Option<&str>) -> Outcome {
    match word {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        "resolves" => Outcome::Resolves,
        "error" => Outcome::Error,
        "parses" => Outcome::Parses,
        "refused" => Outcome::Refused(refused_with.unwrap_or_default().to_string()),
        other => panic!("unknown outcome {other:?}"),
    }
}

/// Whether `got` is `want`; a refusal matches when its message contains
/// the text the row expects.
fn same(got: &Outcome, want: &Outcome) -> bool {
    match (got, want) {
        (Outcome::Refused(g), Outcome::Refused(w)) => g.contains(w.as_str()),
        _ => got == want,
    }
}

/// Tally of the rows of one table.
#[derive(Debug, Default)]
struct Tally {
    rows: usize,
    agree: usize,
    differ: usize,
    wrong: Vec<String>,
}

impl Tally {
    /// Records a row whose Tracetest outcome is `tracetest` and, where it
    /// differs on purpose, tracecheck's is `marked`.
    fn record(&mut self, test: &str, got: &Outcome, tracetest: &Outcome, marked: Option<&Outcome>) {
        self.rows += 1;
        match marked {
            None if same(got, tracetest) => self.agree += 1,
            None => self
                .wrong
                .push(format!("{test}: Tracetest {tracetest}, tracecheck {got}")),
            // A mark that no longer differs is stale: the row agrees now.
            Some(_) if same(got, tracetest) => self.wrong.push(format!(
                "{test}: marked as differing but agrees with Tracetest ({got})"
            )),
            Some(m) if same(got, m) => self.differ += 1,
            Some(m) => self
                .wrong
                .push(format!("{test}: marked as {m}, tracecheck {got}")),
        }
    }
}

fn marked(
    test: &str,
    tracecheck: Option<&str>,
    refused_with: Option<&str>,
    differs: Option<&str>,
) -> Option<Outcome> {
    assert_eq!(
        tracecheck.is_some(),
        differs.is_some(),
        "{test}: `tracecheck` and `differs` go together"
    );
    tracecheck.map(|w| expected_outcome(w, refused_with))
}

#[test]
fn tracetest_expression_tests_agree() {
    let rows: Vec<ExprRow> = serde_yaml_ng::from_str(EXPRESSIONS).unwrap();
    let mut tally = Tally::default();
    for row in &rows {
        let trace = row_trace(row);
        let parse_only = matches!(row.tracetest.as_str(), "parses" | "refused");
        let got = match (&row.statement, &row.expression) {
            (Some(s), None) if parse_only => parse_outcome(&statement_body(&row.name, s)),
            (None, Some(e)) if parse_only => parse_outcome(&output_body(&row.name, e)),
            (Some(s), None) => {
                let got = statement_outcome(&row.name, s, &trace);
                match &row.observed {
                    Some(want) => {
                        let seen = observed(&row.name, s, &trace);
                        if seen.as_deref() == Some(want.as_str()) {
                            got
                        } else {
                            Outcome::Shows(format!("observed {seen:?}, not {want:?}"))
                        }
                    }
                    None => got,
                }
            }
            (None, Some(e)) => {
                let got = expression_outcome(&row.name, e, &trace);
                // The value Tracetest's test names, compared as `=` does.
                match (&got, &row.value) {
                    (Outcome::Resolves, Some(v)) => {
                        match statement_outcome(&row.name, &format!("{e} = {v}"), &trace) {
                            Outcome::Pass => got,
                            other => Outcome::Shows(format!("value is not {v}: {other}")),
                        }
                    }
                    _ => got,
                }
            }
            _ => panic!("{}: one of statement or expression", row.test),
        };
        let tracetest = expected_outcome(&row.tracetest, None);
        let mark = marked(
            &row.test,
            row.tracecheck.as_deref(),
            row.refused_with.as_deref(),
            row.differs.as_deref(),
        );
        tally.record(&row.test, &got, &tracetest, mark.as_ref());
    }
    assert!(tally.wrong.is_empty(), "{:#?}", tally.wrong);
    assert_eq!(tally.rows, tally.agree + tally.differ);
    eprintln!(
        "Tracetest expression rows: {}, {} agree, {} differ on purpose",
        tally.rows, tally.agree, tally.differ
    );
}

/// `selectors.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorTable {
    trace: Vec<TableSpan>,
    rows: Vec<SelectorRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpan {
    name: String,
    parent: Option<String>,
    service: String,
    kind: String,
    start_ms: u64,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorRow {
    test: String,
    /// Not Tracetest's: the marked row before it, with the values a real
    /// trace has.
    #[serde(default)]
    twin: bool,
    selector: String,
    /// The names of the spans selected (as a set), `parses` or `refused`.
    tracetest: Selection,
    tracecheck: Option<Selection>,
    refused_with: Option<String>,
    differs: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Selection {
    Spans(Vec<String>),
    Word(String),
}

fn table_trace(spans: &[TableSpan]) -> Trace {
    let id = |name: &str| {
        let i = spans.iter().position(|s| s.name == name).unwrap();
        u8::try_from(i + 1).unwrap()
    };
    let kind = |k: &str| match k {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        other => panic!("unknown kind {other}"),
    };
    trace_of(
        spans
            .iter()
            .map(|s| {
                let span = s.attributes.iter().fold(
                    sp(
                        id(&s.name),
                        s.parent.as_deref().map(id),
                        &s.name,
                        s.start_ms,
                        s.start_ms + 1,
                    )
                    .kind(kind(&s.kind)),
                    |span, (k, v)| span.attr(k, sv(v)),
                );
                rs(&s.service, vec![span])
            })
            .collect(),
    )
}

/// What the selector gives: the names of the spans selected, sorted, or
/// `Refused` with the lint errors.
fn selection_outcome(t: &Trace, spans: &[TableSpan], selector: &str) -> Selected {
    match try_select_ids(t, selector) {
        Ok(ids) => {
            let mut names: Vec<String> = ids
                .into_iter()
                .map(|i| spans[usize::from(i) - 1].name.clone())
                .collect();
            names.sort();
            Selected::Spans(names)
        }
        Err(e) => Selected::Refused(e),
    }
}

/// What tracecheck makes of a selector row.
#[derive(Debug, Clone, PartialEq)]
enum Selected {
    Spans(Vec<String>),
    Refused(String),
}

fn selection_matches(got: &Selected, want: &Selection, refused_with: Option<&str>) -> bool {
    match (got, want) {
        (Selected::Spans(g), Selection::Spans(w)) => {
            let mut w = w.clone();
            w.sort();
            *g == w
        }
        (Selected::Spans(_), Selection::Word(w)) => w == "parses",
        (Selected::Refused(e), Selection::Word(w)) => {
            w == "refused" && e.contains(refused_with.unwrap_or_default())
        }
        (Selected::Refused(_), Selection::Spans(_)) => false,
    }
}

#[test]
fn tracetest_selector_tests_agree() {
    let table: SelectorTable = serde_yaml_ng::from_str(SELECTORS).unwrap();
    let t = table_trace(&table.trace);
    let (mut agree, mut differ, mut twins, mut wrong) = (0, 0, 0, Vec::new());
    for row in &table.rows {
        let got = selection_outcome(&t, &table.trace, &row.selector);
        assert_eq!(
            row.tracecheck.is_some(),
            row.differs.is_some(),
            "{}: `tracecheck` and `differs` go together",
            row.test
        );
        let with_tracetest = selection_matches(&got, &row.tracetest, None);
        match &row.tracecheck {
            None if with_tracetest && row.twin => twins += 1,
            None if with_tracetest => agree += 1,
            Some(_) if with_tracetest => wrong.push(format!(
                "{}: marked as differing but agrees with Tracetest ({got:?})",
                row.test
            )),
            Some(m) if selection_matches(&got, m, row.refused_with.as_deref()) => differ += 1,
            _ => wrong.push(format!(
                "{}: Tracetest {:?}, tracecheck {got:?}",
                row.test, row.tracetest
            )),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    eprintln!(
        "Tracetest selector rows: {}, {agree} agree, {differ} differ on purpose; {twins} twins agree",
        table.rows.len() - twins
    );
}
