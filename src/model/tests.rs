#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::parse::{parse_assertion, parse_expression, parse_selector, parse_template};
use super::*;

/// `syntax!(name, "selector", "canonical form")`: parses and prints back.
macro_rules! selector {
    ($name:ident, $text:expr, $canon:expr) => {
        #[test]
        fn $name() {
            let ast = parse_selector($text)
                .unwrap_or_else(|e| panic!("{}", e.message($text, "selector")));
            assert_eq!(ast.to_string(), $canon);
        }
    };
}

/// `selector_err!(name, "selector", offset, "message")`.
macro_rules! selector_err {
    ($name:ident, $text:expr, $offset:expr, $msg:expr) => {
        #[test]
        fn $name() {
            let e = parse_selector($text).expect_err("should not parse");
            assert_eq!(e.message($text, "selector"), $msg);
            assert_eq!(e.offset, $offset, "offset");
        }
    };
}

macro_rules! assertion {
    ($name:ident, $text:expr, $canon:expr) => {
        #[test]
        fn $name() {
            let ast = parse_assertion($text)
                .unwrap_or_else(|e| panic!("{}", e.message($text, "assertion")));
            assert_eq!(ast.to_string(), $canon);
        }
    };
}

macro_rules! assertion_err {
    ($name:ident, $text:expr, $offset:expr, $msg:expr) => {
        #[test]
        fn $name() {
            let e = parse_assertion($text).expect_err("should not parse");
            assert_eq!(e.message($text, "assertion"), $msg);
            assert_eq!(e.offset, $offset, "offset");
        }
    };
}

macro_rules! expression {
    ($name:ident, $text:expr, $canon:expr) => {
        #[test]
        fn $name() {
            let ast = parse_expression($text)
                .unwrap_or_else(|e| panic!("{}", e.message($text, "expression")));
            assert_eq!(ast.to_string(), $canon);
        }
    };
}

macro_rules! expression_err {
    ($name:ident, $text:expr, $offset:expr, $msg:expr) => {
        #[test]
        fn $name() {
            let e = parse_expression($text).expect_err("should not parse");
            assert_eq!(e.message($text, "expression"), $msg);
            assert_eq!(e.offset, $offset, "offset");
        }
    };
}

// === selectors ===
selector!(sel_empty, "", "");
selector!(sel_blank, "   ", "");
selector!(sel_bare_span, "span", "span");
selector!(
    sel_name_eq,
    r#"span[name = "POST /import"]"#,
    r#"span[name = "POST /import"]"#
);
selector!(
    sel_no_spaces_around_op,
    r#"span[name="x"]"#,
    r#"span[name = "x"]"#
);
selector!(
    sel_two_filters,
    r#"span[tracetest.span.type = "http" name = "POST /import"]"#,
    r#"span[tracetest.span.type = "http" name = "POST /import"]"#
);
selector!(
    sel_single_quotes,
    "span[name = 'a \\'b\\'']",
    r#"span[name = "a 'b'"]"#
);
selector!(
    sel_escaped_double_quote,
    r#"span[name = "say \"hi\""]"#,
    r#"span[name = "say \"hi\""]"#
);
selector!(
    sel_attr_dashes_slashes,
    r#"span[http.request.header.x-api-key = "k" a/b = 1]"#,
    r#"span[http.request.header.x-api-key = "k" a/b = 1]"#
);
selector!(
    sel_ops,
    r#"span[a != 1 b < 2 c <= 3 d > 4 e >= 5]"#,
    r#"span[a != 1 b < 2 c <= 3 d > 4 e >= 5]"#
);
selector!(
    sel_word_ops,
    r#"span[a contains "x" b not-contains "y" c matches "^z"]"#,
    r#"span[a contains "x" b not-contains "y" c matches "^z"]"#
);
selector!(sel_float, "span[x = 1.5]", "span[x = 1.5]");
selector!(sel_negative, "span[x > -3]", "span[x > -3]");
selector!(
    sel_duration_ms,
    "span[tracetest.span.duration > 200ms]",
    "span[tracetest.span.duration > 200ms]"
);
selector!(
    sel_duration_fraction,
    "span[tracetest.span.duration > 1.5s]",
    "span[tracetest.span.duration > 1.5s]"
);
selector!(
    sel_duration_minutes,
    "span[tracetest.span.duration < 2m]",
    "span[tracetest.span.duration < 2m]"
);
selector!(
    sel_duration_units,
    "span[a = 1ns b = 1us c = 1h]",
    "span[a = 1ns b = 1us c = 1h]"
);
selector!(sel_bool, "span[error = true]", "span[error = true]");
selector!(
    sel_env_value,
    "span[name = env:NAME]",
    "span[name = env:NAME]"
);
selector!(
    sel_descendant,
    r#"span[name = "a"] span[name = "b"]"#,
    r#"span[name = "a"] span[name = "b"]"#
);
selector!(
    sel_child,
    r#"span[name = "a"] > span[name = "b"]"#,
    r#"span[name = "a"] > span[name = "b"]"#
);
selector!(
    sel_child_tight,
    r#"span[name = "a"]>span[name = "b"]"#,
    r#"span[name = "a"] > span[name = "b"]"#
);
selector!(
    sel_sibling,
    r#"span[name = "a"] ~ span[name = "b"]"#,
    r#"span[name = "a"] ~ span[name = "b"]"#
);
selector!(
    sel_union,
    r#"span[name = "a"], span[name = "b"]"#,
    r#"span[name = "a"], span[name = "b"]"#
);
selector!(
    sel_first,
    r#"span[name = "a"]:first"#,
    r#"span[name = "a"]:first"#
);
selector!(sel_last, "span:last", "span:last");
selector!(
    sel_nth_child,
    r#"span[name = "a"]:nth_child(2)"#,
    r#"span[name = "a"]:nth_child(2)"#
);
selector!(
    sel_attr_prefix,
    r#"span[attr:name = "a"]"#,
    r#"span[name = "a"]"#
);
selector!(sel_empty_brackets, "span[]", "span");
selector!(
    sel_surrounding_space,
    r#"  span[ name = "a" ]  "#,
    r#"span[name = "a"]"#
);

selector_err!(sel_err_missing_op, r#"span[name x "a"]"#, 10, "unexpected 'x' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)");
selector_err!(
    sel_err_not_span,
    "spam",
    0,
    "unexpected 's' in selector, expected 'span'"
);
selector_err!(
    sel_err_unclosed_bracket,
    r#"span[name = "a""#,
    15,
    "unexpected end of input in selector, expected ']' to close the filters"
);
selector_err!(
    sel_err_unclosed_string,
    r#"span[name = "a]"#,
    15,
    "unexpected end of input in selector, expected '\"' to close the string"
);
selector_err!(sel_err_missing_value, "span[name = ]", 12, "unexpected ']' in selector, expected a value (a quoted string, a number, a duration, true/false, env:NAME or var:NAME)");
selector_err!(
    sel_err_missing_name,
    r#"span[= "a"]"#,
    5,
    "unexpected '=' in selector, expected an attribute name"
);
selector_err!(
    sel_err_bad_pseudo,
    "span:middle",
    5,
    "unknown pseudo-class ':middle', expected :first, :last or :nth_child(n)"
);
selector_err!(
    sel_err_nth_zero,
    "span:nth_child(0)",
    15,
    "invalid :nth_child position 0, expected 1 or more"
);
selector_err!(
    sel_err_nth_unclosed,
    "span:nth_child(2",
    16,
    "unexpected end of input in selector, expected ')'"
);
selector_err!(
    sel_err_trailing_comma,
    r#"span[name = "a"],"#,
    17,
    "unexpected end of input in selector, expected 'span'"
);
selector_err!(
    sel_err_garbage_after,
    r#"span[name = "a"] x"#,
    17,
    "unexpected 'x' in selector, expected ',', '>', '~' or another span"
);
selector_err!(
    sel_err_glued_steps,
    "spanspan",
    0,
    "unexpected 's' in selector, expected 'span'"
);
selector_err!(
    sel_err_bad_unit,
    "span[d > 5parsecs]",
    10,
    "unknown duration unit 'parsecs', expected ns, us, ms, s, m or h"
);
selector_err!(
    sel_err_filters_glued,
    r#"span[a = "x"b = 1]"#,
    12,
    "unexpected 'b' in selector, expected a space or ',' between filters, or ']'"
);
// Tracetest's selector documentation (parent-child section) writes
// `span[service.name="cart-api", name="purchase products"]`.
selector!(
    sel_comma_between_filters,
    r#"span[service.name="cart-api", name="purchase products"] span[service.name="auth-api" tracetest.span.type="http"]"#,
    r#"span[service.name = "cart-api" name = "purchase products"] span[service.name = "auth-api" tracetest.span.type = "http"]"#
);
selector_err!(
    sel_err_comma_before_bracket,
    r#"span[a = "x",]"#,
    13,
    "unexpected ']' in selector, expected a filter after ','"
);
selector_err!(
    sel_err_child_nothing,
    r#"span[name = "a"] >"#,
    18,
    "unexpected end of input in selector, expected 'span'"
);

// === assertions and expressions ===
assertion!(
    as_int,
    "attr:http.status_code = 200",
    "attr:http.status_code = 200"
);
assertion!(
    as_duration,
    "attr:tracetest.span.duration < 500ms",
    "attr:tracetest.span.duration < 500ms"
);
assertion!(
    as_string,
    r#"attr:app.payment.currency = "EUR""#,
    r#"attr:app.payment.currency = "EUR""#
);
assertion!(
    as_ne,
    r#"attr:tracetest.span.status != "error""#,
    r#"attr:tracetest.span.status != "error""#
);
assertion!(
    as_contains,
    r#"attr:db.statement contains "SELECT""#,
    r#"attr:db.statement contains "SELECT""#
);
assertion!(
    as_not_contains,
    r#"attr:db.statement not-contains "DROP""#,
    r#"attr:db.statement not-contains "DROP""#
);
assertion!(
    as_matches,
    r#"attr:url matches "^https://""#,
    r#"attr:url matches "^https://""#
);
assertion!(
    as_vars,
    "var:BALANCE < var:AMOUNT",
    "var:BALANCE < var:AMOUNT"
);
assertion!(as_env, "attr:x = env:EXPECTED", "attr:x = env:EXPECTED");
assertion!(
    as_arith_precedence,
    "attr:a = 1 + 2 * 3",
    "attr:a = (1 + (2 * 3))"
);
assertion!(
    as_arith_parens,
    "attr:a = (1 + 2) * 3",
    "attr:a = ((1 + 2) * 3)"
);
assertion!(
    as_arith_left_assoc,
    "attr:a = 10 - 2 - 3",
    "attr:a = ((10 - 2) - 3)"
);
assertion!(
    as_duration_arith,
    "attr:tracetest.span.duration < 1s + 500ms",
    "attr:tracetest.span.duration < (1s + 500ms)"
);
assertion!(
    as_pipe_json,
    r#"attr:tracetest.response.body | json_path '$.id' = 52"#,
    "attr:tracetest.response.body | json_path '$.id' = 52"
);
assertion!(
    as_pipe_chain,
    r#"attr:body | json_path '$.items' | count = 3"#,
    "attr:body | json_path '$.items' | count = 3"
);
assertion!(
    as_pipe_then_arith,
    "attr:items | count + 1 = 3",
    "(attr:items | count + 1) = 3"
);
assertion!(
    as_get_index,
    "attr:items | get_index 1 = \"b\"",
    "attr:items | get_index 1 = \"b\""
);
assertion!(
    as_get_index_last,
    "attr:items | get_index 'last' = \"b\"",
    "attr:items | get_index 'last' = \"b\""
);
assertion!(
    as_regex_group,
    r#"attr:msg | regex_group 'id=(\d+)' = 42"#,
    r#"attr:msg | regex_group 'id=(\d+)' = 42"#
);
assertion!(
    as_interp,
    r#"attr:url = "${env:HOST}/api""#,
    r#"attr:url = "${env:HOST}/api""#
);
assertion!(
    as_interp_single_quoted,
    r#"attr:url = '${env:HOST}/api'"#,
    r#"attr:url = "${env:HOST}/api""#
);
assertion!(
    as_single_quoted_keeps_backslashes,
    r#"attr:msg = 'a\d \' b'"#,
    r#"attr:msg = "a\\d ' b""#
);
assertion!(
    as_duration_with_space,
    "attr:tracetest.span.duration < 200 ms",
    "attr:tracetest.span.duration < 200ms"
);
selector!(
    sel_number_then_attribute_named_like_a_unit,
    "span[a = 5 m = 1]",
    "span[a = 5 m = 1]"
);
selector!(
    sel_duration_with_space,
    "span[tracetest.span.duration > 5 ms name = \"x\"]",
    "span[tracetest.span.duration > 5ms name = \"x\"]"
);
assertion!(
    as_interp_expr,
    r#"attr:msg = "sum ${1 + 2}!""#,
    r#"attr:msg = "sum ${(1 + 2)}!""#
);
assertion!(
    as_count,
    "attr:tracetest.selected_spans.count = 1",
    "attr:tracetest.selected_spans.count = 1"
);
assertion!(as_bool, "attr:cache.hit = true", "attr:cache.hit = true");
assertion!(
    as_float,
    "attr:app.payment.amount < 42.6",
    "attr:app.payment.amount < 42.6"
);
assertion!(as_no_spaces, "attr:a<=5", "attr:a <= 5");
assertion!(as_double_equals, "attr:a == 5", "attr:a = 5");
assertion!(
    as_filters_noarg,
    "attr:a | first | last | type | length = 1",
    "attr:a | first | last | type | length = 1"
);
expression!(ex_attr, "attr:pokemon.id", "attr:pokemon.id");
expression!(ex_string_escape_regex, r#""\d+""#, r#""\\d+""#);
expression!(ex_literal_dollar, r#""cost \${x}""#, r#""cost \${x}""#);
expression!(ex_negative_float, "-1.5", "-1.5");

assertion_err!(as_err_missing_op, "attr:a 5", 7, "unexpected '5' in assertion, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches), an arithmetic operator or '|'");
assertion_err!(as_err_no_op, "attr:a", 6, "unexpected end of input in assertion, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)");
assertion_err!(as_err_bad_term, "attr:a = @", 9, "unexpected '@' in assertion, expected an expression (attr:NAME, env:NAME, var:NAME, a string, a number, a duration, true/false, [an, array] or a function such as uuid())");
assertion_err!(
    as_err_attr_no_name,
    "attr: = 1",
    5,
    "unexpected ' ' in assertion, expected an attribute name after 'attr:'"
);
assertion_err!(
    as_err_unclosed_interp,
    r#"attr:a = "${env:X""#,
    17,
    "unexpected '\"' in assertion, expected '}' to close '${'"
);
assertion_err!(as_err_trailing, "attr:a = 1 2", 11, "unexpected '2' in assertion, expected an arithmetic operator (+, -, *, /), '|' and a filter, or the end of the assertion");
assertion_err!(as_err_filter_missing, "attr:a | = 1", 9, "unexpected '=' in assertion, expected a filter name (json_path, regex, regex_group, count, get_index, first, last, type, length)");
assertion_err!(as_err_unit, "attr:tracetest.span.duration < 5 sec", 33, "unexpected 's' in assertion, expected an arithmetic operator (+, -, *, /), '|' and a filter, or the end of the assertion");
assertion_err!(
    as_err_neg_duration,
    "attr:tracetest.span.duration < -5ms",
    31,
    "a duration cannot be negative"
);
assertion_err!(
    as_err_unclosed_paren,
    "attr:a = (1 + 2",
    15,
    "unexpected end of input in assertion, expected ')'"
);
assertion_err!(
    as_err_big_int,
    "attr:a = 99999999999999999999",
    9,
    "number 99999999999999999999 is too large"
);
expression_err!(ex_err_empty, "", 0, "unexpected end of input in expression, expected an expression (attr:NAME, env:NAME, var:NAME, a string, a number, a duration, true/false, [an, array] or a function such as uuid())");
expression_err!(ex_err_op, "attr:a = 1", 7, "unexpected '=' in expression, expected an arithmetic operator (+, -, *, /), '|' and a filter, or the end of the expression");

#[test]
fn template_parts() {
    let parts = parse_template("Overdraft for ${attr:account.id} at ${env:HOST}").unwrap();
    assert_eq!(parts.len(), 4);
    let parts = parse_template("no vars $ here").unwrap();
    assert_eq!(parts.len(), 1);
    let e = parse_template("x ${attr:a").unwrap_err();
    assert_eq!(
        e.message("x ${attr:a", "template"),
        "unexpected end of input in template, expected '}' to close '${'"
    );
}

#[test]
fn durations() {
    use std::time::Duration;
    assert_eq!(parse::parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(
        parse::parse_duration("1.5s"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(parse::parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(
        parse::parse_duration("200ms"),
        Some(Duration::from_millis(200))
    );
    assert_eq!(parse::parse_duration("7us"), Some(Duration::from_micros(7)));
    assert_eq!(parse::parse_duration("7ns"), Some(Duration::from_nanos(7)));
    assert_eq!(parse::parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse::parse_duration("5"), None);
    assert_eq!(parse::parse_duration("5 parsecs"), None);
    assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
}

// === loading files ===

fn load_err(text: &str) -> Vec<String> {
    load_str("m.yaml", text)
        .expect_err("should fail")
        .iter()
        .map(ToString::to_string)
        .collect()
}

const BANK: &str = r#"type: Model
spec:
  id: overdraft-rolls-back
  name: Accounts cannot withdraw more than their balance
  labels: { team: payments, severity: critical }
  match: span[name = "POST /:account/withdraw" kind = "server"]
  outputs:
    - name: BALANCE
      selector: span[name = "fetch-balance"]
      value: attr:amount
    - name: AMOUNT
      selector: span[name = "withdrawal"]
      value: attr:amount
  when:
    - var:BALANCE < var:AMOUNT
  specs:
    - name: rollback happens
      selector: span[name = "rollback"]
    - name: API answers 500
      selector: span[name = "POST /:account/withdraw"]
      assertions:
        - attr:http.response.status_code = 500
  not_expect:
    - name: never commits
      selector: span[name = "commit"]
  within: 30s
  alert:
    severity: critical
    summary: "Overdraft committed for account ${attr:account.id}"
"#;

#[test]
fn loads_the_spec_model() {
    let docs = load_str("bank.yaml", BANK).unwrap();
    let [Document::Model(m)] = docs.as_slice() else {
        panic!("one model expected")
    };
    assert_eq!(m.id, "overdraft-rolls-back");
    assert_eq!(m.labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(m.outputs.len(), 2);
    assert_eq!(m.when.len(), 1);
    assert_eq!(m.specs.len(), 2);
    assert_eq!(m.not_expect.len(), 1);
    assert_eq!(m.within, Some(std::time::Duration::from_secs(30)));
    assert_eq!(
        m.alert.as_ref().and_then(|a| a.severity.as_deref()),
        Some("critical")
    );
    assert_eq!(m.file, "bank.yaml");
    assert_eq!((m.position.line, m.position.column), (3, 7));
}

#[test]
fn several_documents_and_kinds() {
    let text = r#"type: Test
spec:
  id: import-pokemon
  name: Import a Pokemon
  trigger:
    type: http
    httpRequest:
      method: POST
      url: ${env:API_URL}/pokemon/import
      headers: [{ key: Content-Type, value: application/json }]
      body: '{"id": 52}'
  specs:
    - selector: span[tracetest.span.type = "http" name = "POST /pokemon/import"]
      assertions:
        - attr:http.status_code = 200
    - selector: span[name = "import pokemon"]
      assertions:
        - attr:tracetest.selected_spans.count = 1
  outputs:
    - name: POKEMON_ID
      selector: span[name = "import pokemon"]
      value: attr:pokemon.id
---
type: Transaction
spec:
  id: tx
  name: flow
  steps: [import-pokemon, ./other.yaml]
---
type: TestSuite
spec:
  id: suite
  steps: [import-pokemon]
---
type: VariableSet
spec:
  id: vars
  name: local
  values:
    - key: API_URL
      value: http://localhost:8080
---
type: Environment
spec:
  id: env2
  values: [{ key: PORT, value: 8080 }]
"#;
    let docs = load_str("t.yaml", text).unwrap();
    assert_eq!(docs.len(), 5);
    let Document::Test(t) = &docs[0] else {
        panic!()
    };
    let Some(Trigger::Http(h)) = &t.trigger else {
        panic!()
    };
    assert_eq!(h.method, "POST");
    assert_eq!(h.headers[0].key, "Content-Type");
    let m = t.as_model();
    assert_eq!(
        m.match_selector.as_ref().map(|s| s.text.as_str()),
        Some(r#"span[tracetest.span.type = "http" name = "POST /pokemon/import"]"#)
    );
    let refs = docs[0].variable_refs();
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (refs[0].name.as_str(), refs[0].line, refs[0].column),
        ("API_URL", 9, 14)
    );
    let Document::Transaction(tx) = &docs[1] else {
        panic!()
    };
    assert_eq!(tx.steps.len(), 2);
    let Document::VariableSet(v) = &docs[4] else {
        panic!()
    };
    assert_eq!(v.values[0].value, "8080");
}

#[test]
fn grpc_and_traceid_triggers() {
    let text = r#"type: Test
spec:
  id: g
  trigger:
    type: grpc
    grpc:
      protobufFile: ./api.proto
      address: ${env:ADDR}
      method: pokeshop.Pokeshop.importPokemon
      request: '{"id": 52}'
      metadata: [{ key: x, value: y }]
  specs: []
---
type: Test
spec:
  id: t
  trigger:
    type: traceid
    traceid:
      id: ${var:TRACE_ID}
"#;
    let docs = load_str("t.yaml", text).unwrap();
    assert!(matches!(
        &docs[0],
        Document::Test(Test {
            trigger: Some(Trigger::Grpc(_)),
            ..
        })
    ));
    assert!(matches!(
        &docs[1],
        Document::Test(Test {
            trigger: Some(Trigger::TraceId { .. }),
            ..
        })
    ));
}

#[test]
fn error_inside_selector_points_into_the_file() {
    let text = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span[name x \"a\"]\n";
    assert_eq!(
        load_err(text),
        vec!["m.yaml:5:27: unexpected 'x' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)"]
    );
}

#[test]
fn error_inside_quoted_scalar_counts_the_quote_and_escapes() {
    let text = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: 'span[name = ''a'' x]'\n";
    // The value is `span[name = 'a' x]` (`x` is an attribute missing its
    // operator); `]` is value offset 17, shifted by the quote and two `''`.
    assert_eq!(load_err(text), vec!["m.yaml:5:37: unexpected ']' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)"]);
    let text =
        "type: Model\nspec:\n  id: m\n  specs:\n    - selector: \"span[name = \\\"a\\\" x]\"\n";
    assert_eq!(load_err(text), vec!["m.yaml:5:37: unexpected ']' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)"]);
}

#[test]
fn error_in_assertion_points_into_the_file() {
    let text = "type: Model\nspec:\n  id: m\n  specs:\n    - selector: span\n      assertions:\n        - attr:a = @\n";
    assert_eq!(
        load_err(text),
        vec!["m.yaml:7:20: unexpected '@' in assertion, expected an expression (attr:NAME, env:NAME, var:NAME, a string, a number, a duration, true/false, [an, array] or a function such as uuid())"]
    );
}

#[test]
fn literal_block_scalar_maps_lines() {
    let text =
        "type: Model\nspec:\n  id: m\n  match: |\n    span[name = \"a\"],\n    span[name x 1]\n";
    assert_eq!(load_err(text)[0], "m.yaml:6:15: unexpected 'x' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)");
}

#[test]
fn structural_errors_have_positions_and_are_all_reported() {
    let text = "type: Model\nspec:\n  id: m\n  colour: red\n  specs:\n    - selector: span\n      assertion: [attr:a = 1]\n  within: soon\n";
    let errs = load_err(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("m.yaml:4:3: unknown key 'colour' in model, expected one of: id, name"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("m.yaml:7:7: unknown key 'assertion' in a spec, expected one of: name, selector, assertions"), "{}", errs[1]);
    assert!(
        errs[2].starts_with("m.yaml:8:11: invalid duration 'soon' for 'within'"),
        "{}",
        errs[2]
    );
}

#[test]
fn missing_id_and_wrong_types() {
    let errs = load_err("type: Model\nspec:\n  name: x\n  specs: 5\n");
    assert_eq!(
        errs,
        vec![
            "m.yaml:3:3: missing 'id' in model",
            "m.yaml:4:10: expected a list for 'specs', found a scalar"
        ]
    );
    let errs = load_err("type: Model\nspec: [1]\n");
    assert_eq!(
        errs,
        vec!["m.yaml:2:7: expected a mapping for model, found a list"]
    );
    let errs = load_err("type: Modle\nspec: {}\n");
    assert_eq!(errs, vec!["m.yaml:1:7: unknown document type 'Modle', expected Model, Test, Transaction, TestSuite, VariableSet or Environment"]);
}

#[test]
fn errors_of_every_document_are_collected() {
    let text = "type: Model\nspec:\n  id: a\n  match: spam\n---\ntype: Model\nspec:\n  id: b\n  match: span[x ~ 1]\n";
    let errs = load_err(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("m.yaml:4:10:"));
    assert!(errs[1].starts_with("m.yaml:9:17:"), "{}", errs[1]);
}

#[test]
fn yaml_syntax_error_has_position() {
    let errs = load_err("type: Model\nspec:\n  id: [unclosed\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("m.yaml:"), "{}", errs[0]);
    assert!(errs[0].contains("invalid YAML"), "{}", errs[0]);
}

// === type checker ===

fn model_with(assertion: &str) -> String {
    format!("type: Model\nspec:\n  id: m\n  specs:\n    - selector: span\n      assertions:\n        - '{assertion}'\n")
}

#[test]
fn checker_unknown_filter() {
    let errs = load_err(&model_with("attr:a | frobnicate = 1"));
    assert_eq!(errs, vec!["m.yaml:7:21: unknown filter 'frobnicate', expected one of: json_path, regex, regex_group, count, get_index, first, last, type, length"]);
}

#[test]
fn checker_undefined_var_in_model() {
    let errs = load_err(&model_with("attr:a = var:NOPE"));
    assert_eq!(
        errs,
        vec!["m.yaml:7:21: var:NOPE is not defined: no output of this model is named NOPE"]
    );
}

#[test]
fn checker_env_is_not_checked_and_tests_may_read_any_var() {
    assert!(load_str("m.yaml", &model_with("attr:a = env:ANY")).is_ok());
    let t = "type: Test\nspec:\n  id: t\n  specs:\n    - selector: span\n      assertions: ['attr:a = var:FROM_EARLIER_STEP']\n";
    assert!(load_str("t.yaml", t).is_ok());
}

#[test]
fn checker_duration_vs_string() {
    let errs = load_err(&model_with(r#"attr:tracetest.span.duration < "abc""#));
    assert_eq!(
        errs,
        vec![
            r#"m.yaml:7:43: cannot compare a duration with "abc", expected a duration such as 500ms"#
        ]
    );
    assert!(load_str(
        "m.yaml",
        &model_with(r#"attr:tracetest.span.duration < "500ms""#)
    )
    .is_ok());
    assert!(load_str("m.yaml", &model_with("attr:tracetest.span.duration < 500")).is_ok());
}

#[test]
fn checker_bad_regexes_and_json_path() {
    let errs = load_err(&model_with(r#"attr:a matches "(""#));
    assert_eq!(
        errs,
        vec![r#"m.yaml:7:27: invalid regular expression "(": unclosed group"#]
    );
    let errs = load_err(&model_with(r#"attr:a | regex "[" = 1"#));
    assert!(
        errs[0].starts_with("m.yaml:7:27: invalid regular expression"),
        "{}",
        errs[0]
    );
    let errs = load_err(&model_with(r#"attr:a | regex_group "(" = 1"#));
    assert!(
        errs[0].starts_with("m.yaml:7:33: invalid regular expression"),
        "{}",
        errs[0]
    );
    let errs = load_err(&model_with(r#"attr:a | json_path "$[" = 1"#));
    assert!(
        errs[0].starts_with("m.yaml:7:31: invalid JSONPath '$[':"),
        "{}",
        errs[0]
    );
    let errs = load_err(&model_with("attr:a | json_path = 1"));
    assert!(
        errs[0].contains("filter 'json_path' expects a quoted argument"),
        "{}",
        errs[0]
    );
    let errs = load_err(&model_with("attr:a | count 3 = 1"));
    assert!(
        errs[0].contains("filter 'count' takes no argument"),
        "{}",
        errs[0]
    );
    let errs = load_err("type: Model\nspec:\n  id: m\n  match: span[name matches \"(\"]\n");
    assert!(
        errs[0].starts_with("m.yaml:4:28: invalid regular expression \"(\": unclosed group"),
        "{}",
        errs[0]
    );
}

#[test]
fn checker_enumerated_values() {
    let errs = load_err(&model_with(r#"attr:status = "failed""#));
    assert_eq!(
        errs,
        vec![
            r#"m.yaml:7:26: "failed" is never a span status (status), expected one of: ok, error, unset"#
        ]
    );
    let errs = load_err("type: Model\nspec:\n  id: m\n  match: span[kind = \"Server\"]\n");
    assert_eq!(
        errs,
        vec![
            r#"m.yaml:4:22: "Server" is never a span kind (kind), expected one of: server, client, producer, consumer, internal, unspecified"#
        ]
    );
}

#[test]
fn duplicate_ids_within_a_load() {
    let text = "type: Model\nspec:\n  id: a\n---\ntype: Model\nspec:\n  id: a\n";
    assert_eq!(
        load_err(text),
        vec!["m.yaml:7:7: duplicate model id 'a', first defined at m.yaml:3:7"]
    );
}

#[test]
fn duplicate_output_names() {
    let text = "type: Model\nspec:\n  id: a\n  outputs:\n    - {name: X, value: '1'}\n    - {name: X, value: '2'}\n";
    assert_eq!(load_err(text), vec!["m.yaml:6:7: duplicate output 'X'"]);
}

#[test]
fn load_path_reads_a_directory_recursively_sorted() {
    let dir = std::env::temp_dir().join(format!("tcmodel-load-{}", std::process::id()));
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(dir.join("b.yaml"), "type: Model\nspec:\n  id: b\n").unwrap();
    std::fs::write(sub.join("a.yml"), "type: Model\nspec:\n  id: a\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
    let docs = load_path(&dir).unwrap();
    let ids: Vec<&str> = docs.iter().map(Document::id).collect();
    assert_eq!(ids, vec!["b", "a"]);
    std::fs::write(sub.join("c.yaml"), "type: Model\nspec:\n  id: b\n").unwrap();
    let errs = load_path(&dir).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.starts_with("duplicate model id 'b'"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_models_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/models");
    let docs = load_path(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(docs.iter().any(|d| d.id() == "overdraft-rolls-back"));
}

#[test]
fn folded_plain_scalar_points_at_its_start() {
    let text = "type: Model\nspec:\n  id: m\n  match: span[name = \"a\"]\n    span[name x 1]\n";
    assert_eq!(
        load_err(text),
        vec!["m.yaml:4:10: unexpected 'x' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)"]
    );
}

#[test]
fn crlf_bom_and_empty_documents() {
    let text = "\u{feff}type: Model\r\nspec:\r\n  id: a\r\n  match: span[name x 1]\r\n";
    assert_eq!(
        load_err(text),
        vec!["m.yaml:4:20: unexpected 'x' in selector, expected an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)"]
    );
    assert!(load_str("e.yaml", "").unwrap().is_empty());
    assert!(load_str("e.yaml", "---\n# only a comment\n")
        .unwrap()
        .is_empty());
    let docs = load_str("e.yaml", "---\ntype: Model\nspec:\n  id: a\n---\n").unwrap();
    assert_eq!(docs.len(), 1);
}

#[test]
fn anchors_and_aliases_are_resolved() {
    let text = "type: Model\nspec:\n  id: a\n  match: &m span[name = \"x\"]\n  specs:\n    - selector: *m\n";
    let docs = load_str("a.yaml", text).unwrap();
    let Document::Model(m) = &docs[0] else {
        panic!()
    };
    assert_eq!(m.specs[0].selector.text, "span[name = \"x\"]");
}

#[test]
fn type_errors_are_reported_next_to_structural_errors() {
    let text = "type: Model\nspec:\n  id: m\n  colour: red\n  outputs:\n    - {name: X, value: 'attr:a ='}\n  specs:\n    - selector: span\n      assertions: ['attr:a | nope = var:X']\n";
    let errs = load_err(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("m.yaml:4:3: unknown key 'colour'"));
    assert!(
        errs[1].starts_with("m.yaml:6:32: unexpected '=' in expression"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("m.yaml:9:30: unknown filter 'nope'"),
        "{}",
        errs[2]
    );
}

// Tracetest's documented array literal (concepts/expressions, Type).
assertion!(
    as_array_literal,
    r#"[1, 2s, "this is a string"] | type = "array""#,
    r#"[1, 2s, "this is a string"] | type = "array""#
);
assertion!(
    as_array_contains,
    r#"["number", "string"] contains attr:my_attribute | type"#,
    r#"["number", "string"] contains attr:my_attribute | type"#
);

// === Tracetest files as Tracetest's repository writes them (issue 21) ===

fn only_test(docs: &[Document]) -> &Test {
    match docs {
        [Document::Test(t)] => t,
        other => panic!("expected one test, got {other:?}"),
    }
}

#[test]
fn test_without_id_gets_a_stable_id_from_its_name() {
    // Tracetest's getting-started tests have no `spec.id`.
    let text = "type: Test\nspec:\n  name: Import a Pokemon!\n  trigger:\n    type: http\n    httpRequest:\n      url: http://localhost:8081/pokemon/import\n  specs:\n    - selector: span[name = \"import pokemon\"]\n";
    let a = load_str("tests/import.yaml", text).unwrap();
    let b = load_str("tests/import.yaml", text).unwrap();
    assert_eq!(only_test(&a).id, "import-a-pokemon");
    assert_eq!(only_test(&a).id, only_test(&b).id, "same file, same id");
    // No name either: the file's name.
    let text = "type: Test\nspec:\n  trigger:\n    type: traceid\n    traceid: { id: '${var:TRACE_ID}' }\n";
    let docs = load_str("dir/My_Test File.yaml", text).unwrap();
    assert_eq!(only_test(&docs).id, "my-test-file");
    // An explicit id is kept as written; an empty one is made up too.
    let docs = load_str("t.yaml", "type: Test\nspec:\n  id: ''\n  name: x\n").unwrap();
    assert_eq!(only_test(&docs).id, "x");
}

#[test]
fn transaction_and_variable_set_without_id_get_one() {
    let text = "type: Transaction\nspec:\n  name: Pokeshop flow\n  steps: [./add.yaml]\n---\ntype: VariableSet\nspec:\n  name: Local env\n  values: [{ key: A, value: b }]\n";
    let docs = load_str("t.yaml", text).unwrap();
    assert_eq!(docs[0].id(), "pokeshop-flow");
    assert_eq!(docs[1].id(), "local-env");
}

#[test]
fn two_tests_deriving_the_same_id_say_how_to_fix_it() {
    let text = "type: Test\nspec:\n  name: Same\n---\ntype: Test\nspec:\n  name: same\n";
    let errs = load_err(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("m.yaml:7:3: duplicate test id 'same'"),
        "{errs:?}"
    );
    assert!(errs[0].contains("give one of them an 'id'"), "{errs:?}");
    // With ids written, the hint is not given.
    let errs = load_err("type: Test\nspec:\n  id: a\n---\ntype: Test\nspec:\n  id: a\n");
    assert_eq!(
        errs,
        vec!["m.yaml:7:7: duplicate test id 'a', first defined at m.yaml:3:7"]
    );
}

#[test]
fn model_still_needs_an_id() {
    let errs = load_err("type: Model\nspec:\n  name: x\n  specs: [{ selector: span }]\n");
    assert_eq!(errs, vec!["m.yaml:3:3: missing 'id' in model"]);
}

#[test]
fn every_tracetest_trigger_type_lints_and_its_specs_are_checked() {
    for (ty, section) in [
        ("http", "    httpRequest: { url: http://x }\n"),
        ("grpc", "    grpc: { address: x:1, method: a.B/C }\n"),
        ("graphql", "    graphql: { url: http://x, body: { query: '{ a }' } }\n"),
        ("traceid", "    traceid: { id: '${var:TRACE_ID}' }\n"),
        ("kafka", "    kafka:\n      brokerUrls: [kafka:9092]\n      topic: messaging\n      headers: [{ key: a, value: b }]\n      messageKey: k\n      messageValue: '{}'\n      authentication: { type: plain, plain: { username: u, password: p } }\n"),
        ("playwrightengine", "    playwrightEngine: { target: http://api:8081, script: ./script.js, method: importPokemon }\n"),
        ("k6", ""),
        ("cypress", ""),
        ("playwright", ""),
        ("artillery", ""),
    ] {
        let text = format!("type: Test\nspec:\n  id: t\n  trigger:\n    type: {ty}\n{section}  specs:\n    - selector: span[tracetest.span.type=\"messaging\" name=\"messaging receive\"]\n      assertions:\n        - attr:tracetest.selected_spans.count = 1\n");
        let docs = load_str("t.yaml", &text).unwrap_or_else(|e| panic!("{ty}: {e:?}"));
        let t = only_test(&docs);
        assert_eq!(t.specs.len(), 1, "{ty}");
        let sent = matches!(ty, "http" | "grpc" | "graphql" | "traceid");
        assert_eq!(
            t.trigger.as_ref().unwrap().not_sent_advice().is_none(),
            sent,
            "{ty}"
        );
        // Its specs are linted like any other.
        let bad = text.replace("count = 1", "count = = 1");
        let errs = load_err(&bad);
        let line = 9 + section.lines().count();
        assert!(
            errs[0].starts_with(&format!("m.yaml:{line}:")),
            "{ty}: {errs:?}"
        );
    }
}

#[test]
fn integration_triggers_advise_the_traceid_trigger() {
    let docs = load_str(
        "t.yaml",
        "type: Test\nspec:\n  id: t\n  trigger:\n    type: k6\n",
    )
    .unwrap();
    let advice = only_test(&docs)
        .trigger
        .as_ref()
        .unwrap()
        .not_sent_advice()
        .unwrap();
    assert!(!advice.contains('\n'), "{advice}");
    assert!(
        advice.contains("'k6'") && advice.contains("type: traceid"),
        "{advice}"
    );
}

#[test]
fn unknown_trigger_type_lists_every_known_one() {
    let errs = load_err("type: Test\nspec:\n  id: t\n  trigger:\n    type: smtp\n");
    assert_eq!(errs, vec!["m.yaml:5:11: unknown trigger type 'smtp', expected one of: http, grpc, graphql, traceid, kafka, playwrightengine, k6, cypress, playwright, artillery"]);
}

#[test]
fn keys_tracetest_ignores_are_accepted() {
    let text = r#"type: Test
spec:
  id: t
  name: n
  version: 3
  createdAt: 2024-01-01T00:00:00Z
  trigger:
    type: http
    httpRequest:
      url: http://x
      auth:
        apiKey: {}
        basic: {}
        bearer: {}
  specs:
    - selector: span
      selectorParsed: { query: span }
      assertions: [attr:name != ""]
  summary: { runs: 2 }
---
type: Environment
spec:
  id: env
  name: Cloud env
  resources: ./resources
  agentConfiguration: { serverless: true }
---
type: Transaction
spec:
  id: tx
  version: 1
  steps: [t]
  fullSteps: []
"#;
    let docs = load_str("t.yaml", text).unwrap();
    let t = only_test(&docs[..1]);
    let Some(Trigger::Http(h)) = &t.trigger else {
        panic!()
    };
    assert!(h.auth.is_none(), "auth without a type is no auth");
}

#[test]
fn other_unknown_keys_in_tracetest_files_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.yaml");
    std::fs::write(&f, "type: Test\nspec:\n  id: t\n  owner: team-a\n").unwrap();
    let mut warnings = Vec::new();
    load_path_warning(&f, &mut warnings).unwrap();
    let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(&format!(
            "{}:4:3: warning: unknown key 'owner' in test is ignored",
            f.display()
        )),
        "{w:?}"
    );
}

#[test]
fn misspelt_keys_stay_errors_in_tracetest_files() {
    let errs = load_err("type: Test\nspec:\n  id: t\n  specs:\n    - selector: span\n      asertions: [attr:name = \"x\"]\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("m.yaml:6:7: unknown key 'asertions' in a spec"),
        "{errs:?}"
    );
    assert!(
        errs[0].ends_with("(did you mean 'assertions'?)"),
        "{errs:?}"
    );
    // And in tracecheck's own models every unknown key is one.
    let errs = load_err("type: Model\nspec:\n  id: m\n  owner: x\n");
    assert!(
        errs[0].starts_with("m.yaml:4:3: unknown key 'owner' in model"),
        "{errs:?}"
    );
}

#[test]
fn tracetest_status_code_spellings_lint() {
    let text = "type: Test\nspec:\n  id: t\n  specs:\n    - selector: span[tracetest.span.status_code = \"STATUS_CODE_ERROR\"]\n      assertions:\n        - attr:tracetest.span.status_code = \"STATUS_CODE_OK\"\n        - attr:tracetest.span.status_code != \"STATUS_CODE_UNSET\"\n";
    load_str("t.yaml", text).unwrap();
    let errs = load_err("type: Test\nspec:\n  id: t\n  specs:\n    - selector: span\n      assertions: ['attr:tracetest.span.status_code = \"STATUS_CODE_FINE\"']\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("\"STATUS_CODE_FINE\" is never a span status"),
        "{errs:?}"
    );
}

// === generator functions (Tracetest's `server/expression/functions`) ===

expression!(ex_call_no_args, "uuid()", "uuid()");
expression!(ex_call_spaced, "randomInt( 1 ,10 )", "randomInt(1, 10)");
expression!(
    ex_call_in_string,
    r#""user-${firstName()}" | length"#,
    r#""user-${firstName()}" | length"#
);
expression!(
    ex_call_format,
    r#"dateTime("DD/MM/YYYY hh:mm")"#,
    r#"dateTime("DD/MM/YYYY hh:mm")"#
);
expression_err!(
    ex_err_unknown_function,
    "thisShouldNotExist()",
    0,
    "unknown function 'thisShouldNotExist', expected one of: uuid(), firstName(), lastName(), fullName(), email(), phone(), date([format]), dateTime([format]), creditCard(), creditCardCvv(), creditCardExpDate(), randomInt(min, max)"
);
expression_err!(
    ex_err_missing_args,
    "randomInt()",
    9,
    "randomInt() takes 2 arguments, got 0"
);
expression_err!(
    ex_err_extra_arg,
    r#"date("YYYY", "MM")"#,
    13,
    "date() takes at most 1 argument, got 2"
);
expression_err!(
    ex_err_args_to_uuid,
    "uuid(1)",
    5,
    "uuid() takes no arguments, got 1"
);
expression_err!(
    ex_err_unclosed_call,
    "randomInt(1, 2",
    14,
    "unexpected end of input in expression, expected ',' or ')' in the function's arguments"
);

/// Tracetest's registry refuses a required parameter after an optional one
/// (`TestFunctionValidation`): none of the functions has one.
#[test]
fn function_parameters_put_optional_ones_last() {
    use crate::model::builtins::Function;
    for name in [
        "uuid",
        "firstName",
        "lastName",
        "fullName",
        "email",
        "phone",
        "date",
        "dateTime",
        "creditCard",
        "creditCardCvv",
        "creditCardExpDate",
        "randomInt",
    ] {
        let f = Function::from_name(name).unwrap_or_else(|| panic!("{name} unknown"));
        assert_eq!(f.name(), name);
        let params = f.params();
        assert!(
            params.windows(2).all(|w| !w[0].1 || w[1].1),
            "{name}: a required parameter after an optional one"
        );
    }
}

/// `TestFunctionWithWrongArgNumber`, `TestFunctionWithWrongArgType` and
/// `TestInexistentFunction`, as lint errors at their place in the file.
#[test]
fn function_errors_point_into_the_file() {
    let file = |assertion: &str| {
        format!("type: Model\nspec:\n  id: m\n  specs:\n    - selector: span\n      assertions:\n        - '{assertion}'\n")
    };
    assert_eq!(
        load_err(&file("randomInt() > 0")),
        vec!["m.yaml:7:21: randomInt() takes 2 arguments, got 0"]
    );
    assert_eq!(
        load_err(&file(r#"randomInt(1, "string") > 0"#)),
        vec!["m.yaml:7:25: argument 2 of randomInt() must be an integer, not \"string\""]
    );
    assert_eq!(
        load_err(&file("date(5) != \"\"")),
        vec!["m.yaml:7:17: argument 1 of date() must be a string, such as \"DD/MM/YYYY\", not 5"]
    );
    assert_eq!(
        load_err(&file("nope() = 1")),
        vec!["m.yaml:7:12: unknown function 'nope', expected one of: uuid(), firstName(), lastName(), fullName(), email(), phone(), date([format]), dateTime([format]), creditCard(), creditCardCvv(), creditCardExpDate(), randomInt(min, max)"]
    );
    assert!(load_str("m.yaml", &file(r#"randomInt(1, "7") = 1"#)).is_ok());
}
