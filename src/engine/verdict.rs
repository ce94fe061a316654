//! The verdict of one model on one trace (spec §4's table): skip when
//! `match` selects nothing, a needed output is missing or a `when` is false;
//! pass when every spec and every `not_expect` holds; fail otherwise.

use std::borrow::Cow;
use std::sync::Arc;

use super::compile::{CAssertion, CModel, COutput, CPart, CTemplate};
use super::eval::{Env, Outcome};
use super::trace::SpanIndex;
use super::value::Value;
use super::{Failure, FailureKind, Inconclusive, ModelVerdict, Verdict};

/// More failing spans than this per assertion are counted, not listed.
pub(crate) const MAX_FAILURES_PER_CHECK: usize = 10;

/// Why most skipped models are skipped. Static, because at 1000 models
/// almost every verdict is this one and allocating it per model per trace
/// was a third of evaluation time.
pub(crate) const NO_MATCH: &str = "match selected no span";

pub(crate) fn skip(model: usize, reason: Cow<'static, str>) -> ModelVerdict {
    ModelVerdict {
        model,
        verdict: Verdict::Skip,
        failures: Vec::new(),
        skip_reason: Some(reason),
        awaiting_spans: false,
        inconclusive: None,
    }
}

/// The verdict of a model the deadline cut short, or did not let start.
/// Without failures: those found before the deadline may rest on a
/// selection that was cut short, and the model was not seen to apply.
pub(crate) fn out_of_budget(model: usize) -> ModelVerdict {
    ModelVerdict::inconclusive(model, Inconclusive::Budget)
}

/// Computes outputs in order; an output whose selector selects nothing or
/// whose value cannot be read is missing. Past the deadline every selection
/// is empty, so the outputs left are missing: [`evaluate_model`] then
/// gives no verdict from them.
pub(crate) fn compute_outputs<'a>(outputs: &'a [COutput], env: Env<'a>) -> Vec<(Arc<str>, Value)> {
    let mut out: Vec<(Arc<str>, Value)> = Vec::with_capacity(outputs.len());
    for o in outputs {
        let value = {
            let env = Env {
                outputs: &out,
                ..env
            };
            let (span, selected) = match &o.selector {
                Some(sel) => {
                    let spans = env.select(sel);
                    match spans.first() {
                        Some(s) => (Some(*s), spans.len()),
                        None => continue,
                    }
                }
                None => (None, 0),
            };
            let env = Env { selected, ..env };
            match env.eval(&o.value, span) {
                Ok(v) => v.into_owned(),
                Err(_) => continue,
            }
        };
        out.push((o.name.clone(), value));
    }
    out
}

fn failure(env: &Env<'_>, spec: &str, kind: FailureKind, span: Option<SpanIndex>) -> Failure {
    let info = span.and_then(|s| env.trace.span_info(s));
    Failure {
        spec: spec.to_string(),
        kind,
        assertion: None,
        span_id: info.as_ref().map(|i| i.span_id),
        span_name: info.as_ref().map(|i| i.name.clone()),
        service: info.and_then(|i| i.service),
        observed: None,
        expected: None,
        message: String::new(),
    }
}

fn assertion_failure(
    env: &Env<'_>,
    spec: &str,
    kind: FailureKind,
    a: &CAssertion,
    span: Option<SpanIndex>,
    o: Outcome,
) -> Failure {
    Failure {
        assertion: Some(a.text.clone()),
        observed: o.observed,
        expected: o.expected,
        message: o.message,
        ..failure(env, spec, kind, span)
    }
}

/// Whether a `when` condition holds: on any span `match` selected, or
/// without a span when there is no `match`. False past the deadline.
fn when_holds<'a>(w: &'a CAssertion, env: Env<'a>, matched: &[SpanIndex]) -> bool {
    if matched.is_empty() {
        return env.holds(w, None);
    }
    let env = Env {
        selected: matched.len(),
        ..env
    };
    for (k, &s) in matched.iter().enumerate() {
        if env.tick_span(k, matched.len()).is_err() {
            return false;
        }
        if env.holds(w, Some(s)) {
            return true;
        }
    }
    false
}

/// A skip, unless the deadline has passed: then what found nothing to
/// check may have been a selection cut short.
fn skip_in_budget(env: &Env<'_>, model: usize, reason: Cow<'static, str>) -> ModelVerdict {
    if env.out_of_budget() {
        out_of_budget(model)
    } else {
        skip(model, reason)
    }
}

/// The verdict of one model, [`Verdict::Inconclusive`] when the deadline
/// passed before or while it was evaluated.
///
/// A selection the deadline cut short is empty ([`Env::select`]), so the
/// budget is asked only where an empty selection or a false condition
/// leads, and once before the verdict: not after every selection, which
/// would cost the hot path.
pub(crate) fn evaluate_model<'a>(index: usize, cm: &'a CModel, base: Env<'a>) -> ModelVerdict {
    // Starting a model is a unit of work: past the deadline, the models
    // left are not started.
    if base.tick().is_err() {
        return out_of_budget(index);
    }
    // The daemon's containment tests need a model that panics; no model
    // language construct does (that is what the fuzzers look for).
    #[cfg(test)]
    if cm
        .match_selector
        .as_ref()
        .is_some_and(|s| s.text.contains("__panic__"))
        && base.trace.has_span_named("__panic__")
    {
        panic!("test model panics on purpose");
    }
    // Indexed dispatch: a model whose `match` names spans the trace lacks
    // is skipped with one hash lookup per name.
    if let Some(pre) = &cm.precondition {
        if !pre
            .iter()
            .any(|names| names.iter().all(|n| base.trace.has_span_named(n)))
        {
            return skip(index, Cow::Borrowed(NO_MATCH));
        }
    }
    let matched = match &cm.match_selector {
        Some(sel) => {
            let m = base.select(sel);
            if m.is_empty() {
                return skip_in_budget(&base, index, Cow::Borrowed(NO_MATCH));
            }
            m
        }
        None => Default::default(),
    };
    let outputs = compute_outputs(&cm.outputs, base);
    let env = Env {
        outputs: &outputs,
        ..base
    };
    for (w, needs) in &cm.when {
        if let Some(missing) = needs.iter().find(|n| !outputs.iter().any(|(o, _)| o == *n)) {
            return skip_in_budget(
                &env,
                index,
                Cow::Owned(format!("output {missing} is missing")),
            );
        }
        if !when_holds(w, env, &matched) {
            return skip_in_budget(
                &env,
                index,
                Cow::Owned(format!("when condition `{}` is false", w.text)),
            );
        }
    }

    let mut failures = Vec::new();
    for spec in &cm.specs {
        let spans = env.select(&spec.selector);
        let env = Env {
            selected: spans.len(),
            ..env
        };
        if spans.is_empty() {
            if env.out_of_budget() {
                return out_of_budget(index);
            }
            let count_only =
                !spec.assertions.is_empty() && spec.assertions.iter().all(|a| a.count_only);
            if count_only {
                for a in &spec.assertions {
                    if !env.holds(a, None) {
                        let o = env.assert(a, None);
                        failures.push(assertion_failure(
                            &env,
                            &spec.label,
                            FailureKind::NoSpan,
                            a,
                            None,
                            o,
                        ));
                    }
                }
            } else {
                let mut f = failure(&env, &spec.label, FailureKind::NoSpan, None);
                f.message = format!("selector {} selected no span", spec.selector.text);
                failures.push(f);
            }
            continue;
        }
        for a in &spec.assertions {
            if a.count_only {
                if !env.holds(a, None) {
                    let o = env.assert(a, None);
                    failures.push(assertion_failure(
                        &env,
                        &spec.label,
                        FailureKind::Assertion,
                        a,
                        None,
                        o,
                    ));
                }
                continue;
            }
            let mut failed = 0usize;
            for (k, &s) in spans.iter().enumerate() {
                if env.tick_span(k, spans.len()).is_err() {
                    return out_of_budget(index);
                }
                if env.holds(a, Some(s)) {
                    continue;
                }
                failed += 1;
                if failed <= MAX_FAILURES_PER_CHECK {
                    let o = env.assert(a, Some(s));
                    failures.push(assertion_failure(
                        &env,
                        &spec.label,
                        FailureKind::Assertion,
                        a,
                        Some(s),
                        o,
                    ));
                }
            }
            note_more(&mut failures, failed);
        }
    }
    for ne in &cm.not_expect {
        let spans = env.select(&ne.selector);
        for &s in spans.iter().take(MAX_FAILURES_PER_CHECK) {
            let mut f = failure(&env, &ne.label, FailureKind::NotExpect, Some(s));
            f.message = format!(
                "selector {} must select nothing, selected {} span(s)",
                ne.selector.text,
                spans.len()
            );
            failures.push(f);
        }
    }
    // An output or a `not_expect` selection may have been cut short.
    if env.out_of_budget() {
        return out_of_budget(index);
    }
    let verdict = if failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let awaiting_spans =
        !failures.is_empty() && failures.iter().all(|f| f.kind == FailureKind::NoSpan);
    ModelVerdict {
        model: index,
        verdict,
        failures,
        skip_reason: None,
        awaiting_spans,
        inconclusive: None,
    }
}

fn note_more(failures: &mut [Failure], failed: usize) {
    if failed > MAX_FAILURES_PER_CHECK {
        if let Some(last) = failures.last_mut() {
            last.message.push_str(&format!(
                " ({} more spans failed this assertion)",
                failed - MAX_FAILURES_PER_CHECK
            ));
        }
    }
}

pub(crate) fn render_summary<'a>(cm: &'a CModel, template: &'a CTemplate, base: Env<'a>) -> String {
    let matched = cm
        .match_selector
        .as_ref()
        .map(|s| base.select(s))
        .unwrap_or_default();
    let outputs = compute_outputs(&cm.outputs, base);
    let env = Env {
        outputs: &outputs,
        ..base
    };
    let all = 0..env.trace.len() as SpanIndex;
    let mut out = String::new();
    for p in &template.parts {
        match p {
            CPart::Text(t) => out.push_str(t),
            CPart::Expr(e) => {
                let v = matched
                    .iter()
                    .copied()
                    .chain(all.clone())
                    .find_map(|s| env.eval(e, Some(s)).ok())
                    .or_else(|| env.eval(e, None).ok());
                match v {
                    Some(v) => out.push_str(&v.to_string()),
                    None => out.push_str("<unknown>"),
                }
            }
        }
    }
    out
}
