//! Selectors on deep and wide traces, and the evaluation budget.
//!
//! The combinators are checked against the obvious quadratic definitions on
//! random forests (children before parents in start-time order included),
//! then on a 100 000-span chain and fan-out, where those definitions were
//! too slow to run: the results are what the selectors mean, and the tests
//! finishing at all is the point (timings are in the change's report, not
//! asserted here).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::ids::TraceId;

const BIG: u64 = 100_000;

/// A span with a 64-bit id, starting `start` ns into the trace.
fn span(id: u64, parent: Option<u64>, name: &str, start: u64) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.to_string(),
        start_time_unix_nano: 1_700_000_000_000_000_000 + start,
        end_time_unix_nano: 1_700_000_000_000_000_000 + start + 1,
        ..Default::default()
    }
}

fn build(spans: impl IntoIterator<Item = Span>) -> Trace {
    let mut b = TraceBuilder::new(TraceId(TRACE));
    for s in spans {
        b.add_span(None, &s);
    }
    b.build()
}

/// `root` > `s` > `s` > ... with `n` spans in all. `skewed`: each child
/// starts before its parent, so start-time order is leaves first.
fn chain(n: u64, skewed: bool) -> Trace {
    build((1..=n).map(|i| {
        let name = if i == 1 { "root" } else { "s" };
        let parent = (i > 1).then(|| i - 1);
        span(i, parent, name, if skewed { n - i } else { i })
    }))
}

/// `root` with `n - 1` children named `s`.
fn fan_out(n: u64) -> Trace {
    build((1..=n).map(|i| {
        let name = if i == 1 { "root" } else { "s" };
        span(i, (i > 1).then_some(1), name, i)
    }))
}

fn count_in(t: &Trace, selector: &str) -> usize {
    select_in(t, selector).len()
}

/// What a path of steps selects, by the definitions: walking up for
/// descendants, scanning every span for siblings. A step is a combinator
/// (`""` for the first) and a span name (`None`: any span).
fn by_definition(t: &Trace, steps: &[(&str, Option<&str>)]) -> Vec<SpanIndex> {
    let n = t.spans.len() as SpanIndex;
    let parent = |i: SpanIndex| t.spans[i as usize].parent;
    let named = |name: Option<&str>| -> Vec<SpanIndex> {
        (0..n)
            .filter(|&i| name.is_none_or(|name| t.spans[i as usize].name == name))
            .collect()
    };
    let mut current = Vec::new();
    for (k, &(combinator, name)) in steps.iter().enumerate() {
        let candidates = named(name);
        if k == 0 {
            current = candidates;
            continue;
        }
        let prev = current;
        current = candidates
            .into_iter()
            .filter(|&c| match combinator {
                ">" => parent(c).is_some_and(|p| prev.contains(&p)),
                "~" => parent(c).is_some_and(|p| {
                    (0..n).any(|s| s != c && parent(s) == Some(p) && prev.contains(&s))
                }),
                _ => {
                    let mut up = parent(c);
                    let mut hops = 0;
                    while let Some(p) = up {
                        if prev.contains(&p) {
                            return true;
                        }
                        hops += 1;
                        assert!(hops <= n, "a cycle survived the trace's build");
                        up = parent(p);
                    }
                    false
                }
            })
            .collect();
    }
    current
}

fn selector_text(steps: &[(&str, Option<&str>)]) -> String {
    let mut text = String::new();
    for &(combinator, name) in steps {
        if !text.is_empty() {
            text.push(' ');
            if !combinator.is_empty() {
                text.push_str(combinator);
                text.push(' ');
            }
        }
        match name {
            Some(name) => text.push_str(&format!("span[name = \"{name}\"]")),
            None => text.push_str("span"),
        }
    }
    text
}

const NAMES: [Option<&str>; 4] = [Some("a"), Some("b"), Some("c"), None];
const COMBINATORS: [&str; 3] = ["", ">", "~"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random forests, parent links to any span (cycles included, cut when
    /// the trace is built), random start times: every combinator selects
    /// what its definition says.
    #[test]
    fn combinators_select_what_they_define(
        spans in prop::collection::vec((0usize..4, 0u64..40, 0u64..1000), 1..40),
        steps in prop::collection::vec((0usize..3, 0usize..4), 1..4),
    ) {
        let n = spans.len() as u64;
        let t = build(spans.iter().enumerate().map(|(i, &(name, parent, start))| {
            let id = i as u64 + 1;
            // Parent 0, or one past the last span: no parent in the trace.
            let parent = (1..=n).contains(&parent).then_some(parent);
            span(id, parent, NAMES[name % 3].unwrap(), start)
        }));
        let steps: Vec<(&str, Option<&str>)> = steps
            .iter()
            .map(|&(c, name)| (COMBINATORS[c], NAMES[name]))
            .collect();
        let text = selector_text(&steps);
        prop_assert_eq!(select_in(&t, &text), by_definition(&t, &steps), "{}", text);
    }
}

#[test]
fn descendants_in_a_deep_chain() {
    for skewed in [false, true] {
        let t = chain(BIG, skewed);
        let big = BIG as usize;
        // Every walk up goes all the way to the root.
        assert_eq!(
            count_in(&t, r#"span[name = "root"] span[name = "s"]"#),
            big - 1
        );
        // The parent of every candidate is marked: walks of one hop.
        assert_eq!(
            count_in(&t, r#"span[name = "s"] span[name = "s"]"#),
            big - 2
        );
        assert_eq!(count_in(&t, "span span span"), big - 2);
        // The only marked span is the leaf, below every candidate: no walk
        // finds it, each goes to the root.
        let leaf = if skewed {
            "span[name = \"s\"]:first"
        } else {
            "span[name = \"s\"]:last"
        };
        assert_eq!(count_in(&t, &format!(r#"{leaf} span[name = "s"]"#)), 0);
        // Marked in the middle: exactly the spans below it.
        let mid = select_in(&t, r#"span[name = "s"]:nth_child(50000)"#);
        assert_eq!(mid.len(), 1);
        let below = if skewed { 50_000 - 1 } else { big - 1 - 50_000 };
        assert_eq!(
            count_in(&t, r#"span[name = "s"]:nth_child(50000) span"#),
            below
        );
        assert_eq!(
            count_in(&t, r#"span[name = "s"]:nth_child(50000) > span"#),
            1
        );
        assert_eq!(count_in(&t, r#"span[name = "root"] ~ span"#), 0);
    }
}

#[test]
fn siblings_in_a_wide_fan_out() {
    let t = fan_out(BIG);
    let big = BIG as usize;
    // One marked sibling, the last: every other child scanned every child.
    assert_eq!(
        count_in(&t, r#"span[name = "s"]:last ~ span[name = "s"]"#),
        big - 2
    );
    assert_eq!(
        count_in(&t, r#"span[name = "s"]:first ~ span[name = "s"]"#),
        big - 2
    );
    // Every child marked: each has a marked sibling other than itself.
    assert_eq!(
        count_in(&t, r#"span[name = "s"] ~ span[name = "s"]"#),
        big - 1
    );
    // The root has no parent, so no sibling.
    assert_eq!(count_in(&t, r#"span ~ span[name = "root"]"#), 0);
    assert_eq!(count_in(&t, r#"span[name = "root"] span"#), big - 1);
    assert_eq!(count_in(&t, r#"span[name = "root"] > span"#), big - 1);
}

#[test]
fn only_child_is_not_its_own_sibling() {
    let t = build([span(1, None, "root", 0), span(2, Some(1), "s", 1)]);
    assert_eq!(count_in(&t, "span ~ span"), 0);
    let t = build([
        span(1, None, "root", 0),
        span(2, Some(1), "s", 1),
        span(3, Some(1), "t", 2),
    ]);
    assert_eq!(count_in(&t, r#"span[name = "s"] ~ span"#), 1);
    assert_eq!(count_in(&t, r#"span[name = "s"] ~ span[name = "s"]"#), 0);
}

// === the evaluation budget ===

/// A model checking every span of the trace.
const EVERY_SPAN: &str = "type: Model\nspec:\n  id: every-span\n  specs:\n    - selector: span[name = \"s\"]\n      assertions: ['attr:name = \"s\"']\n";

fn budget_ctx(deadline: Option<Instant>) -> EvalContext<'static> {
    EvalContext {
        deadline,
        ..EvalContext::default()
    }
}

fn assert_out_of_budget(v: &ModelVerdict) {
    assert_eq!(v.verdict, Verdict::Inconclusive, "{v:?}");
    assert_eq!(v.inconclusive, Some(Inconclusive::Budget), "{v:?}");
    assert!(v.failures.is_empty(), "{v:?}");
    assert!(!v.awaiting_spans);
}

#[test]
fn past_deadline_makes_a_huge_trace_inconclusive() {
    let e = engine(EVERY_SPAN);
    let t = chain(BIG, false);
    let past = budget_ctx(Some(Instant::now()));
    assert_out_of_budget(&e.evaluate_model(0, &t, &past).unwrap());
    let all = e.evaluate(&t, &past);
    assert_eq!(all.len(), 1);
    assert_out_of_budget(&all[0]);
}

#[test]
fn no_deadline_or_a_distant_one_gives_the_verdict() {
    let e = engine(EVERY_SPAN);
    let t = chain(BIG, false);
    for deadline in [None, Some(Instant::now() + Duration::from_secs(3600))] {
        let v = e.evaluate_model(0, &t, &budget_ctx(deadline)).unwrap();
        assert_eq!(v.verdict, Verdict::Pass, "{deadline:?}: {v:?}");
        assert_eq!(v.inconclusive, None);
    }
    // And a failure stays a failure, with its failing spans.
    let fails = EVERY_SPAN.replace(r#"= "s"'"#, r#"= "t"'"#);
    assert_ne!(fails, EVERY_SPAN);
    let v = engine(&fails)
        .evaluate_model(
            0,
            &t,
            &budget_ctx(Some(Instant::now() + Duration::from_secs(3600))),
        )
        .unwrap();
    assert_eq!(v.verdict, Verdict::Fail);
    assert_eq!(v.failures.len(), verdict::MAX_FAILURES_PER_CHECK);
}

#[test]
fn past_deadline_starts_no_woken_model() {
    let models = r#"
type: Model
spec:
  id: cart
  match: span[name = "GetCart"]
  specs:
    - selector: span[name = "HGET"]
      assertions: ['attr:db.system.name = "redis"']
---
type: Model
spec:
  id: everywhere
  specs:
    - selector: span
      assertions: ['attr:tracetest.span.duration < 1s']
---
type: Model
spec:
  id: shared-selector
  match: span[name = "GetCart"]
  specs:
    - selector: span[name = "HGET"]
      assertions: ['attr:server.port = 6379']
---
type: Model
spec:
  id: not-woken
  match: span[name = "Refund"]
  specs:
    - selector: span
      assertions: ['attr:name = "x"']
"#;
    let e = engine(models);
    let t = checkout();
    let normal = e.evaluate_woken(&t, &EvalContext::default());
    let woken: Vec<usize> = normal.iter().map(|v| v.model).collect();
    assert_eq!(woken, vec![0, 1, 2]);
    assert!(normal.iter().all(|v| v.verdict != Verdict::Inconclusive));

    let past = budget_ctx(Some(Instant::now()));
    let cut = e.evaluate_woken(&t, &past);
    assert_eq!(cut.iter().map(|v| v.model).collect::<Vec<_>>(), woken);
    cut.iter().for_each(assert_out_of_budget);
    // A model no span wakes does not apply, deadline or not.
    let all = e.evaluate(&t, &past);
    assert_eq!(all[3].verdict, Verdict::Skip);
}

#[test]
fn budget_is_sticky_and_free_without_deadline() {
    let none = eval::Budget::new(None);
    // Running the countdown out without a deadline only restarts it.
    for _ in 0..3 {
        assert_eq!(none.spend(u32::MAX), Ok(()));
    }
    assert!(!none.exceeded());

    let distant = eval::Budget::new(Some(Instant::now() + Duration::from_secs(3600)));
    for _ in 0..10_000 {
        assert_eq!(distant.spend(1), Ok(()));
    }
    assert!(!distant.exceeded());

    let past = eval::Budget::new(Some(Instant::now()));
    assert_eq!(past.spend(1), Err(eval::Exceeded));
    assert!(past.exceeded());
    // Every check after the first failed one fails too.
    assert_eq!(past.spend(0), Err(eval::Exceeded));
    assert_eq!(past.spend(1), Err(eval::Exceeded));
}

/// An `Env` over `t` for `e`'s models, its budget in `cache`.
fn env_with<'a>(
    e: &'a Engine,
    t: &'a Trace,
    cache: &'a eval::KeyCache,
    ctx: &'a EvalContext<'a>,
) -> Env<'a> {
    Env {
        trace: t,
        names: &e.keys.names,
        cache,
        ctx,
        outputs: &[],
        selected: 0,
    }
}

#[test]
fn deadline_passing_mid_selection_stops_the_model() {
    let e = engine(EVERY_SPAN);
    let t = chain(BIG, false);
    let cache = eval::KeyCache::expiring_after(e.keys.names.len(), 1_000);
    let ctx = EvalContext::default();
    let env = env_with(&e, &t, &cache, &ctx);
    let v = verdict::evaluate_model(0, &e.compiled[0], env);
    assert_out_of_budget(&v);
    // The selection it was making is not left behind half done.
    let spec = &e.compiled[0].specs[0].selector;
    assert!(env.select(spec).is_empty());
    assert!(env.out_of_budget());
}

#[test]
fn deadline_passing_mid_model_stops_the_models_after_it() {
    let models = r#"
type: Model
spec:
  id: small
  specs:
    - selector: span[name = "root"]
      assertions: ['attr:name = "root"']
---
type: Model
spec:
  id: big
  specs:
    - selector: span[name = "s"]
      assertions: ['attr:name = "s"']
---
type: Model
spec:
  id: small-again
  specs:
    - selector: span[name = "root"]
      assertions: ['attr:name = "root"']
"#;
    let e = engine(models);
    let t = chain(1_000, false);
    // Enough for the small model, not for the 999 spans of the big one.
    let cache = eval::KeyCache::expiring_after(e.keys.names.len(), 100);
    let ctx = EvalContext::default();
    let env = env_with(&e, &t, &cache, &ctx);
    let verdicts: Vec<ModelVerdict> = (0..3)
        .map(|i| verdict::evaluate_model(i, &e.compiled[i], env))
        .collect();
    assert_eq!(verdicts[0].verdict, Verdict::Pass, "{:?}", verdicts[0]);
    assert_out_of_budget(&verdicts[1]);
    assert_out_of_budget(&verdicts[2]);
    // Without a deadline, the same three pass.
    for v in e.evaluate(&t, &EvalContext::default()) {
        assert_eq!(v.verdict, Verdict::Pass, "{v:?}");
    }
}

#[test]
fn deadline_passing_mid_selection_selects_nothing() {
    let chain = chain(BIG, false);
    let fan_out = fan_out(BIG);
    let ctx = EvalContext::default();
    // Units: about one per candidate, one per span for each step after the
    // first, one per hop up the chain.
    for (t, units, selector) in [
        // In the walks up the chain, past 200 000 units of candidates.
        (&chain, 250_000, r#"span[name = "root"] span[name = "s"]"#),
        // In the candidates of the second step.
        (&chain, 50_000, r#"span[name = "root"] span[name = "s"]"#),
        (&fan_out, 150_000, r#"span[name = "s"]:last ~ span"#),
        // In the second path of a union.
        (&chain, 150_000, r#"span[name = "root"], span[name = "s"]"#),
    ] {
        let yaml = format!(
            "type: Model\nspec:\n  id: m\n  outputs:\n    - name: X\n      selector: '{selector}'\n      value: attr:name\n"
        );
        let m = engine(&yaml);
        let cache = eval::KeyCache::expiring_after(m.keys.names.len(), units);
        let env = env_with(&m, t, &cache, &ctx);
        let sel = m.compiled[0].outputs[0].selector.as_ref().unwrap();
        assert!(env.select(sel).is_empty(), "{selector} after {units} units");
        assert!(env.out_of_budget(), "{selector} after {units} units");
        // And with the budget it needs, the whole selection.
        let cache = eval::KeyCache::expiring_after(m.keys.names.len(), u32::MAX);
        let env = env_with(&m, t, &cache, &ctx);
        assert!(!env.select(sel).is_empty(), "{selector}");
        assert!(!env.out_of_budget());
    }
}
