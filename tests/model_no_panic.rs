//! Random input never panics the parsers or the loader.

use proptest::prelude::*;
use tracecheck::model::{self, parse};

/// Characters that matter to the grammars, so random strings get deep
/// into them instead of failing at the first character.
fn grammar_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "span",
        "[",
        "]",
        " ",
        ",",
        ">",
        "~",
        ":first",
        ":last",
        ":nth_child(",
        ")",
        "(",
        "name",
        "=",
        "!=",
        "<",
        "<=",
        ">=",
        "contains",
        "not-contains",
        "matches",
        "\"",
        "'",
        "\\",
        "${",
        "}",
        "attr:",
        "env:",
        "var:",
        "|",
        "json_path",
        "regex",
        "count",
        "get_index",
        "'last'",
        "1",
        "-",
        "2.5",
        "200ms",
        "1.5s",
        "ns",
        "+",
        "*",
        "/",
        "x.y-z/w",
        "true",
        "µ",
        "é",
        "\n",
        "\t",
        "$",
        ".",
        "99999999999999999999999",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

fn yamlish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "type: Model\n",
        "type: Test\n",
        "type: Transaction\n",
        "type: VariableSet\n",
        "spec:\n",
        "---\n",
        "  id: a\n",
        "  id: [x\n",
        "  match: span[name = \"a\"]\n",
        "  specs:\n",
        "    - selector: ",
        "span[x = 1]\n",
        "'span[",
        "\"span[\\\"",
        "      assertions:\n",
        "        - attr:a = 1\n",
        "        - ",
        "  outputs:\n",
        "    - name: X\n",
        "      value: attr:x\n",
        "  when: [var:X < 1]\n",
        "  within: 5s\n",
        "  alert: {summary: \"${attr:a\"}\n",
        "  trigger:\n",
        "    type: http\n",
        "    httpRequest: {url: ${env:U}}\n",
        "&a x\n",
        "*a\n",
        "*b\n",
        "  ",
        ":",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "|\n",
        ">\n",
        "\"",
        "'",
        "#",
        "\n",
        "\t",
        "%YAML 1.2\n",
        "!!str ",
        "? ",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn selector_parser_never_panics(s in grammar_text()) {
        if let Err(e) = parse::parse_selector(&s) {
            let _ = e.message(&s, "selector");
        }
    }

    #[test]
    fn expression_parsers_never_panic(s in grammar_text()) {
        let _ = parse::parse_expression(&s);
        let _ = parse::parse_assertion(&s);
        let _ = parse::parse_template(&s);
    }

    #[test]
    fn parsers_never_panic_on_any_string(s in any::<String>()) {
        let _ = parse::parse_selector(&s).map_err(|e| e.message(&s, "selector"));
        let _ = parse::parse_assertion(&s).map_err(|e| e.message(&s, "assertion"));
    }

    #[test]
    fn loader_never_panics(s in yamlish()) {
        let _ = model::load_str("fuzz.yaml", &s);
    }

    #[test]
    fn loader_never_panics_on_any_string(s in any::<String>()) {
        let _ = model::load_str("fuzz.yaml", &s);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("attr:a = {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse::parse_assertion(&deep).is_err());
    let interp = format!("attr:a = {}", "\"${".repeat(5_000));
    assert!(parse::parse_assertion(&interp).is_err());
    let yaml = format!("type: Model\nspec: {}", "[".repeat(10_000));
    assert!(model::load_str("deep.yaml", &yaml).is_err());
}

mod support;

const TRACE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeSpans":[{"spans":[{"traceId":"8adc4032c3ab98a44aef9324e8bab119","spanId":"4a8d1f4db08017c5","name":"POST /x","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000040000000","attributes":[{"key":"x.y-z/w","value":{"intValue":"-9223372036854775808"}},{"key":"name","value":{"stringValue":"{\"a\": [1, 2]}"}},{"key":"arr","value":{"arrayValue":{"values":[{"doubleValue":1e308},{"boolValue":true}]}}}],"status":{"code":2}},{"traceId":"8adc4032c3ab98a44aef9324e8bab119","spanId":"cd4aac731132667a","parentSpanId":"4a8d1f4db08017c5","name":"child","startTimeUnixNano":"1700000000002000000","endTimeUnixNano":"1700000000001000000"}]}]}]}"#;

fn selector_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "span",
            "span[name = \"child\"]",
            "span:last",
            "span:nth_child(2)",
            "span span",
            "span > span",
            "span ~ span",
            "span[x.y-z/w < 0] span:first",
            "span[name contains \"a\"], span",
            "span[tracetest.span.duration > 1ms]",
            "span[arr contains true]",
        ])
        .prop_map(str::to_string),
        grammar_text(),
    ]
}

fn assertion_text() -> impl Strategy<Value = String> {
    let operand = prop::sample::select(vec![
        "attr:x.y-z/w",
        "attr:name",
        "attr:arr",
        "attr:tracetest.span.duration",
        "attr:events",
        "attr:tracetest.selected_spans.count",
        "attr:tracetest.span.start_time",
        "-1",
        "0",
        "2.5",
        "1e3",
        "200ms",
        "\"abc\"",
        "'[1,2]'",
        "true",
        "env:E",
        "\"${attr:name}\"",
        "9223372036854775807",
    ]);
    let filter = prop::sample::select(vec![
        "",
        " | count",
        " | first",
        " | last",
        " | type",
        " | length",
        " | get_index 0",
        " | get_index 'last'",
        " | json_path '$.a[*]'",
        " | json_path '$'",
        " | regex '\\d'",
        " | regex_group '(.)(.)?'",
    ]);
    let arith = prop::sample::select(vec!["", " + ", " - ", " * ", " / "]);
    let op = prop::sample::select(vec![
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "contains",
        "not-contains",
    ]);
    (
        operand.clone(),
        filter.clone(),
        arith,
        operand.clone(),
        op,
        operand,
        filter,
    )
        .prop_map(|(a, f1, ar, b, op, c, f2)| {
            let left = if ar.is_empty() {
                format!("{a}{f1}")
            } else {
                format!("{a}{f1}{ar}{b}")
            };
            format!("{left} {op} {c}{f2}")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_never_panics(a in assertion_text(), sel in selector_text()) {
        use tracecheck::engine::{Engine, EvalContext, Trace};
        let yaml = format!(
            "type: Model\nspec:\n  id: m\n  specs:\n    - selector: '{}'\n      assertions: ['{}']\n    - selector: span\n      assertions: ['{}']\n",
            sel.replace('\'', "''").replace('\n', " "),
            a.replace('\'', "''"),
            a.replace('\'', "''"),
        );
        let traces = Trace::from_resource_spans(&support::decode(TRACE));
        if let Ok(docs) = model::load_str("p.yaml", &yaml) {
            let engine = Engine::compile(model::models(&docs)).expect("checked models compile");
            for t in &traces {
                let v = engine.evaluate(t, &EvalContext::default());
                prop_assert_eq!(v.len(), 1);
                let _ = serde_json::to_string(&v);
            }
        }
    }
}
