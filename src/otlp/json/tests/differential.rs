//! The streaming decoder against the tree decoder it replaced (`tree.rs`,
//! kept for this): for every body here both give the same request or the
//! same error, path, kind and, for a syntax error, serde_json's message.
//! The bodies: the other tests' inputs, generated requests, and those
//! mutated (a value of every type at every place, repeated and twin-named
//! members, truncation, stray bytes, nesting at and past the limits).

use super::*;
use crate::bench::traffic::{Rng, TrafficGenerator, TrafficMix};
use crate::otlp::json::{decode, tree};

/// Asserts both decoders agree on `body`, and returns what they said.
fn agree(
    body: &[u8],
    options: &DecodeOptions,
) -> Result<ExportTraceServiceRequest, JsonDecodeError> {
    let new = decode::decode(body, options);
    let old = tree::decode(body, options);
    // Debug, not ==, so that NaN attribute values compare equal.
    let (new_text, old_text) = (format!("{new:?}"), format!("{old:?}"));
    if new_text != old_text {
        let shown: String = String::from_utf8_lossy(body).chars().take(2_000).collect();
        panic!("decoders differ on {shown}\n new: {new_text:.2000}\n old: {old_text:.2000}");
    }
    new
}

/// What a run covered: the outcomes seen, so that a corpus that stopped
/// reaching some error fails instead of passing vacuously.
#[derive(Default)]
struct Seen {
    ok: usize,
    errors: std::collections::BTreeMap<&'static str, usize>,
}

impl Seen {
    fn check(&mut self, body: &[u8], options: &DecodeOptions) {
        match agree(body, options) {
            Ok(_) => self.ok += 1,
            Err(e) => *self.errors.entry(kind_name(&e.kind)).or_default() += 1,
        }
    }

    fn check_default(&mut self, body: &str) {
        self.check(body.as_bytes(), &DecodeOptions::default());
    }

    fn assert_covers(&self, kinds: &[&str]) {
        assert!(self.ok > 0, "no body decoded");
        for kind in kinds {
            assert!(
                self.errors.contains_key(kind),
                "no {kind} error among {:?}",
                self.errors
            );
        }
    }
}

fn kind_name(kind: &JsonErrorKind) -> &'static str {
    match kind {
        JsonErrorKind::Syntax(_) => "Syntax",
        JsonErrorKind::WrongType { .. } => "WrongType",
        JsonErrorKind::InvalidHexDigit(_) => "InvalidHexDigit",
        JsonErrorKind::OddHexLength(_) => "OddHexLength",
        JsonErrorKind::InvalidBase64(_) => "InvalidBase64",
        JsonErrorKind::InvalidInteger(_) => "InvalidInteger",
        JsonErrorKind::IntegerOutOfRange { .. } => "IntegerOutOfRange",
        JsonErrorKind::InvalidNumber(_) => "InvalidNumber",
        JsonErrorKind::UnknownEnumName { .. } => "UnknownEnumName",
        JsonErrorKind::JsonTooDeep(_) => "JsonTooDeep",
        JsonErrorKind::AnyValueTooDeep(_) => "AnyValueTooDeep",
        JsonErrorKind::MultipleValues(..) => "MultipleValues",
        JsonErrorKind::NullInList => "NullInList",
    }
}

const ALL_KINDS: &[&str] = &[
    "Syntax",
    "WrongType",
    "InvalidHexDigit",
    "OddHexLength",
    "InvalidBase64",
    "InvalidInteger",
    "IntegerOutOfRange",
    "InvalidNumber",
    "UnknownEnumName",
    "JsonTooDeep",
    "AnyValueTooDeep",
    "MultipleValues",
    "NullInList",
];

// ---------------------------------------------------------------------------
// The other tests' inputs

fn existing_inputs() -> Vec<String> {
    let mut inputs = vec![
        encode_export_request(&rich_request()),
        "{}".to_owned(),
        "[]".to_owned(),
        String::new(),
        r#"{"resourceSpans":[}"#.to_owned(),
        r#"{"resourceSpans":{}}"#.to_owned(),
        r#"{"resourceSpans":null}"#.to_owned(),
        r#"{"resourceSpans":[null]}"#.to_owned(),
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[7]}]}]}"#.to_owned(),
        r#"{"resourceSpans":[{"scopeSpans":[{"scope":{"version":3}}]}]}"#.to_owned(),
        CAMEL_CASE_REQUEST.to_owned(),
        SNAKE_CASE_REQUEST.to_owned(),
        UNKNOWN_FIELDS_REQUEST.to_owned(),
        r#"{"resourceSpans":[{"resource":null,"schemaUrl":null,"scopeSpans":[{"scope":null,
            "spans":[{"traceId":null,"spanId":null,"name":null,"kind":null,"status":null,
            "startTimeUnixNano":null,"attributes":[{"key":"k","value":null},
            {"key":"j","value":{"stringValue":null,"intValue":"5"}}],"events":null,"links":null}]}]}]}"#
            .to_owned(),
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[]},{"spans":[{},{},{},
            {"traceId":"5b8efff798038103d269b633813fc6zz"}]}]}]}"#
            .to_owned(),
        r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"ok","value":{"intValue":1}},
            {"key":"bad","value":{"kvlistValue":{"values":[{"key":"x","value":{"arrayValue":{"values":[
            {"intValue":"1"},{"intValue":"abc"}]}}}]}}}]}}]}"#
            .to_owned(),
    ];
    let span_members = [
        r#""kind":"SPAN_KIND_SERVER""#,
        r#""kind":"SPAN_KIND_CONSUMER""#,
        r#""kind":"SPAN_KIND_UNSPECIFIED""#,
        r#""kind":3"#,
        r#""kind":"4""#,
        r#""kind":42"#,
        r#""kind":"SERVER""#,
        r#""kind":true"#,
        r#""kind":4294967296"#,
        r#""status":{"code":"STATUS_CODE_ERROR"}"#,
        r#""status":{"code":"STATUS_CODE_OK"}"#,
        r#""status":{"code":"STATUS_CODE_UNSET"}"#,
        r#""status":{"code":2}"#,
        r#""status":{"code":"ERROR"}"#,
        r#""startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000000000001,"droppedAttributesCount":"7","flags":"256""#,
        r#""endTimeUnixNano":"18446744073709551615""#,
        r#""startTimeUnixNano":1e3,"flags":"2.0""#,
        r#""startTimeUnixNano":"-1""#,
        r#""startTimeUnixNano":"soon""#,
        r#""startTimeUnixNano":1.5"#,
        r#""droppedAttributesCount":4294967296"#,
        r#""traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"B7AD6B7169203331","parentSpanId":"00F067AA0BA902B7""#,
        r#""traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"00f067aa0ba902b7""#,
        r#""traceId":"0aF7651916Cd43dD8448eB211c80319C","spanId":"B7ad6b7169203331","parentSpanId":"00F067aa0BA902b7""#,
        r#""traceId":"abcd","spanId":"","parentSpanId":"0102030405060708090a","links":[{"traceId":"ff","spanId":"00"}]"#,
        r#""spanId":"abc""#,
        r#""links":[{"spanId":"0g"}]"#,
        r#""parentSpanId":"é1""#,
        r#""traceId":12"#,
        r#""events":[{"attributes":[{"key":"k","value":{"doubleValue":{}}}]}]"#,
    ];
    inputs.extend(span_members.iter().map(|m| span_json(m)));
    let attr_values = [
        r#"{"intValue":"-9223372036854775808"}"#,
        r#"{"intValue":9223372036854775807}"#,
        r#"{"intValue":-17}"#,
        r#"{"intValue":"9223372036854775808"}"#,
        r#"{"intValue":true}"#,
        r#"{"doubleValue":1.25}"#,
        r#"{"doubleValue":3}"#,
        r#"{"doubleValue":-1e300}"#,
        r#"{"doubleValue":"2.5"}"#,
        r#"{"doubleValue":"NaN"}"#,
        r#"{"doubleValue":"Infinity"}"#,
        r#"{"doubleValue":"-Infinity"}"#,
        r#"{"doubleValue":"inf"}"#,
        r#"{"doubleValue":"lots"}"#,
        r#"{"doubleValue":[1]}"#,
        r#"{"bytesValue":"AAH/+w=="}"#,
        r#"{"bytesValue":"AAH/+w"}"#,
        r#"{"bytesValue":"AAH_-w=="}"#,
        r#"{"bytesValue":""}"#,
        r#"{"bytesValue":"not base64!"}"#,
        r#"{"unheardOf":1}"#,
        r#"{"stringValue":"a","intValue":"1"}"#,
        r#"{"boolValue":"true"}"#,
    ];
    inputs.extend(attr_values.iter().map(|v| attr_json(v)));
    for levels in [1, 2, 3, 31, 32, 33, 34, 5_000] {
        inputs.push(attr_json(&nested_arrays(levels)));
    }
    for levels in [1, 2, 3, 31, 32, 33, 34, 200] {
        inputs.push(attr_json(&nested_kvlists(levels)));
        inputs.push(span_json(&format!(
            r#""events":[{{"attributes":[{{"key":"k","value":{}}}]}}]"#,
            nested_kvlists(levels)
        )));
    }
    for opener in ["[", "{\"a\":", "{\"resourceSpans\":["] {
        inputs.push(opener.repeat(100_000));
    }
    inputs.push(format!(
        r#"{{"x":{}1{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    ));
    inputs
}

fn conformance_inputs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(conformance_dir().join("cases")) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for entry in entries.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("traces.jsonl")) {
            lines.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
    }
    lines
}

const OPTIONS: [usize; 6] = [0, 1, 2, 3, DEFAULT_MAX_ANY_VALUE_DEPTH, usize::MAX];

/// Runs `f` on a thread of its own: with the options' deepest nesting
/// (1 024 levels), both decoders need more than a test thread's 2 MiB of
/// stack in a debug build.
fn on_a_large_stack(f: fn()) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic");
}

#[test]
fn the_other_tests_inputs_decode_alike() {
    on_a_large_stack(the_other_tests_inputs);
}

fn the_other_tests_inputs() {
    let mut seen = Seen::default();
    for input in existing_inputs().iter().chain(&conformance_inputs()) {
        for depth in OPTIONS {
            let options = DecodeOptions {
                max_any_value_depth: depth,
            };
            seen.check(input.as_bytes(), &options);
        }
    }
    seen.assert_covers(ALL_KINDS);
}

// ---------------------------------------------------------------------------
// A JSON tree that keeps member order and repeated names, to write bodies a
// map would not

#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    /// As written, so that any number text can be tried.
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn from_value(v: &Value) -> J {
        match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => J::Num(n.to_string()),
            Value::String(s) => J::Str(s.clone()),
            Value::Array(items) => J::Arr(items.iter().map(J::from_value).collect()),
            Value::Object(map) => J::Obj(
                map.iter()
                    .map(|(k, v)| (k.clone(), J::from_value(v)))
                    .collect(),
            ),
        }
    }

    fn parse(text: &str) -> J {
        J::from_value(&serde_json::from_str(text).expect("seed bodies are JSON"))
    }

    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => write_str(out, s),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Nodes in pre-order, this one included.
    fn count(&self) -> usize {
        1 + match self {
            J::Arr(items) => items.iter().map(J::count).sum(),
            J::Obj(members) => members.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }

    /// The `n`th node in pre-order.
    fn node_mut(&mut self, mut n: usize) -> &mut J {
        if n == 0 {
            return self;
        }
        n -= 1;
        let children: Vec<&mut J> = match self {
            J::Arr(items) => items.iter_mut().collect(),
            J::Obj(members) => members.iter_mut().map(|(_, v)| v).collect(),
            _ => unreachable!("n is below count()"),
        };
        for child in children {
            let size = child.count();
            if n < size {
                return child.node_mut(n);
            }
            n -= size;
        }
        unreachable!("n is below count()")
    }
}

/// Field names with a proto name of their own.
const TWIN_NAMES: &[(&str, &str)] = &[
    ("resourceSpans", "resource_spans"),
    ("scopeSpans", "scope_spans"),
    ("schemaUrl", "schema_url"),
    ("droppedAttributesCount", "dropped_attributes_count"),
    ("entityRefs", "entity_refs"),
    ("idKeys", "id_keys"),
    ("descriptionKeys", "description_keys"),
    ("traceId", "trace_id"),
    ("spanId", "span_id"),
    ("traceState", "trace_state"),
    ("parentSpanId", "parent_span_id"),
    ("startTimeUnixNano", "start_time_unix_nano"),
    ("endTimeUnixNano", "end_time_unix_nano"),
    ("droppedEventsCount", "dropped_events_count"),
    ("droppedLinksCount", "dropped_links_count"),
    ("timeUnixNano", "time_unix_nano"),
    ("keyStrindex", "key_strindex"),
    ("stringValue", "string_value"),
    ("boolValue", "bool_value"),
    ("intValue", "int_value"),
    ("doubleValue", "double_value"),
    ("arrayValue", "array_value"),
    ("kvlistValue", "kvlist_value"),
    ("bytesValue", "bytes_value"),
    ("stringValueStrindex", "string_value_strindex"),
];

fn twin(name: &str) -> Option<&'static str> {
    TWIN_NAMES.iter().find_map(|(json, proto)| {
        if *json == name {
            Some(*proto)
        } else if *proto == name {
            Some(*json)
        } else {
            None
        }
    })
}

/// Values of every JSON type, and strings and numbers each field form
/// accepts or refuses.
fn replacements() -> Vec<J> {
    let num = |s: &str| J::Num(s.to_owned());
    let st = |s: &str| J::Str(s.to_owned());
    vec![
        J::Null,
        J::Bool(true),
        J::Bool(false),
        num("0"),
        num("-1"),
        num("7"),
        num("1.5"),
        num("1e3"),
        num("-0"),
        num("4294967296"),
        num("18446744073709551615"),
        num("18446744073709551616"),
        num("-9223372036854775809"),
        num("1e400"),
        st(""),
        st("x"),
        st("0102"),
        st("abc"),
        st("zz"),
        st("é1"),
        st("5.0"),
        st("-1"),
        st("1e3"),
        st("soon"),
        st("NaN"),
        st("Infinity"),
        st("SPAN_KIND_SERVER"),
        st("STATUS_CODE_ERROR"),
        st("AQ=="),
        st("AQ"),
        st("A_-w"),
        st("not base64!"),
        J::Arr(vec![]),
        J::Arr(vec![J::Null]),
        J::Arr(vec![num("1"), st("a")]),
        J::Obj(vec![]),
        J::Obj(vec![("x".to_owned(), num("1"))]),
        J::Obj(vec![("stringValue".to_owned(), st("v"))]),
        J::Obj(vec![
            ("intValue".to_owned(), st("1")),
            ("boolValue".to_owned(), J::Bool(true)),
        ]),
    ]
}

// ---------------------------------------------------------------------------
// Generated bodies

/// A small request of every field (the rich request), one as the load
/// generator sends, and the same with proto names.
fn seeds() -> Vec<J> {
    let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(11));
    let generated = encode_export_request(&generator.next_batch(4).request);
    let rich = encode_export_request(&rich_request());
    let mut snake = J::parse(&rich);
    rename_all(&mut snake);
    vec![J::parse(&rich), J::parse(&generated), snake]
}

fn rename_all(j: &mut J) {
    match j {
        J::Arr(items) => items.iter_mut().for_each(rename_all),
        J::Obj(members) => {
            for (key, value) in members.iter_mut() {
                if let Some(other) = twin(key) {
                    *key = other.to_owned();
                }
                rename_all(value);
            }
        }
        _ => {}
    }
}

#[test]
fn every_value_at_every_place_decodes_alike() {
    let mut seen = Seen::default();
    let rich = J::parse(&encode_export_request(&rich_request()));
    let values = replacements();
    for n in 0..rich.count() {
        for value in &values {
            let mut body = rich.clone();
            *body.node_mut(n) = value.clone();
            seen.check_default(&body.text());
        }
    }
    seen.assert_covers(&[
        "WrongType",
        "InvalidHexDigit",
        "OddHexLength",
        "InvalidBase64",
        "InvalidInteger",
        "IntegerOutOfRange",
        "InvalidNumber",
        "UnknownEnumName",
        "MultipleValues",
        "NullInList",
        "Syntax",
    ]);
}

#[test]
fn repeated_and_twin_members_decode_alike() {
    let mut seen = Seen::default();
    let values = replacements();
    for seed in seeds().iter().take(2) {
        for n in 0..seed.count() {
            let mut probe = seed.clone();
            let J::Obj(members) = probe.node_mut(n) else {
                continue;
            };
            for m in 0..members.len() {
                let (key, original) = members[m].clone();
                let mut names = vec![key.clone()];
                names.extend(twin(&key).map(str::to_owned));
                for name in &names {
                    for value in values.iter().step_by(4).chain([&original]) {
                        for before in [true, false] {
                            let mut body = seed.clone();
                            let J::Obj(members) = body.node_mut(n) else {
                                unreachable!()
                            };
                            let at = if before { m } else { m + 1 };
                            members.insert(at, (name.clone(), value.clone()));
                            seen.check_default(&body.text());
                        }
                    }
                }
            }
        }
    }
    seen.assert_covers(&["WrongType", "MultipleValues"]);
}

#[test]
fn truncated_bodies_decode_alike() {
    let mut seen = Seen::default();
    for seed in seeds() {
        let text = seed.text();
        for end in 0..text.len() {
            if text.is_char_boundary(end) {
                seen.check_default(&text[..end]);
            }
        }
        seen.check_default(&text);
    }
    seen.assert_covers(&["Syntax"]);
}

/// Bodies nested around each limit: the JSON nesting limit (unknown fields,
/// values of the wrong type, lists), and the AnyValue one, with each of a
/// few limits set.
#[test]
fn nesting_at_the_limits_decodes_alike() {
    on_a_large_stack(nesting_at_the_limits);
}

fn nesting_at_the_limits() {
    let mut seen = Seen::default();
    for depth in OPTIONS {
        let options = DecodeOptions {
            max_any_value_depth: depth,
        };
        let limit = json_nesting_limit(depth);
        for total in [limit - 2, limit - 1, limit, limit + 1, limit + 2] {
            // `total` arrays/objects in all, the innermost at the end.
            let unknown = format!(
                r#"{{"x":{}1{}}}"#,
                "[".repeat(total - 1),
                "]".repeat(total - 1)
            );
            seen.check(unknown.as_bytes(), &options);
            let in_span = span_json(&format!(
                r#""mystery":{}{}"#,
                "[".repeat(total - 7),
                "]".repeat(total - 7)
            ));
            seen.check(in_span.as_bytes(), &options);
            let wrong_type = span_json(&format!(
                r#""traceId":{}{}"#,
                "[".repeat(total - 7),
                "]".repeat(total - 7)
            ));
            seen.check(wrong_type.as_bytes(), &options);
            let lists = format!(
                r#"{{"resourceSpans":{}{}}}"#,
                "[".repeat(total - 1),
                "]".repeat(total - 1)
            );
            seen.check(lists.as_bytes(), &options);
        }
        for levels in (1..8).chain(30..36).chain(250..260) {
            for body in [
                attr_json(&nested_arrays(levels)),
                attr_json(&nested_kvlists(levels)),
                span_json(&format!(
                    r#""events":[{{"attributes":[{{"key":"k","value":{}}}]}}]"#,
                    nested_kvlists(levels)
                )),
                // An error below the level past the limit: which one wins.
                attr_json(&nested_arrays(levels).replace(r#""1""#, r#""x""#)),
                attr_json(&nested_kvlists(levels).replace("true", "1")),
                // An AnyValue past the limit that is null or not an object.
                attr_json(&nested_arrays(levels).replace(r#"{"intValue":"1"}"#, "null")),
                attr_json(&nested_arrays(levels).replace(r#"{"intValue":"1"}"#, "7")),
                attr_json(&nested_arrays(levels).replace(r#"{"intValue":"1"}"#, "[[1]]")),
            ] {
                seen.check(body.as_bytes(), &options);
            }
        }
    }
    seen.assert_covers(&["JsonTooDeep", "AnyValueTooDeep", "NullInList", "WrongType"]);
}

/// Strings and numbers a skipping parser might let through where the tree
/// decoder, parsing everything, refused them.
#[test]
fn bytes_only_a_full_parse_refuses_decode_alike() {
    let mut seen = Seen::default();
    let places = [
        r#"{"x":@}"#,
        r#"{"resourceSpans":[{"x":@}]}"#,
        r#"{"resourceSpans":[{"resource":@}]}"#,
        r#"{"resourceSpans":[null,@]}"#,
        r#"{"resourceSpans":[7,@]}"#,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","x":@}]}]}]}"#,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":@}]}]}]}"#,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"value":{"intValue":"1","stringValue":@}}]}]}]}]}"#,
    ];
    let values: [&[u8]; 12] = [
        b"\"\xff\"",
        b"\"\xc3\"",
        b"\"\\ud800\"",
        b"\"\\u00e9\"",
        b"\"\\x\"",
        b"\"a\tb\"",
        b"1e400",
        b"-1e400",
        b"01",
        b"1.",
        b"[1,]",
        b"{\"\xff\":1}",
    ];
    for place in places {
        let (head, tail) = place.split_once('@').expect("one @");
        for value in values {
            let mut body = head.as_bytes().to_vec();
            body.extend_from_slice(value);
            body.extend_from_slice(tail.as_bytes());
            seen.check(&body, &DecodeOptions::default());
        }
        // Escaped member names are the same names.
        let escaped = place.replace('@', "1").replace("traceId", "trace\\u0049d");
        seen.check_default(&escaped);
    }
    seen.assert_covers(&["Syntax"]);
}

/// One random change to `body`: a value replaced, a member repeated,
/// renamed to its twin, dropped or moved, an element added or dropped.
fn mutate(body: &mut J, rng: &mut fastrand::Rng, values: &[J]) {
    let n = rng.usize(0..body.count());
    let node = body.node_mut(n);
    match node {
        J::Obj(members) if !members.is_empty() && rng.bool() => {
            let m = rng.usize(0..members.len());
            match rng.u8(0..6) {
                0 => {
                    let member = members[m].clone();
                    members.insert(rng.usize(0..=members.len()), member);
                }
                1 => {
                    if let Some(other) = twin(&members[m].0) {
                        members[m].0 = other.to_owned();
                    }
                }
                2 => {
                    if let Some(other) = twin(&members[m].0) {
                        let value = rng.choice(values).cloned().unwrap_or(J::Null);
                        members.insert(rng.usize(0..=members.len()), (other.to_owned(), value));
                    }
                }
                3 => {
                    members.remove(m);
                }
                4 => rng.shuffle(members),
                _ => members[m].1 = J::Null,
            }
        }
        J::Arr(items) if !items.is_empty() && rng.bool() => {
            let i = rng.usize(0..items.len());
            match rng.u8(0..3) {
                0 => {
                    let item = items[i].clone();
                    items.insert(i, item);
                }
                1 => {
                    items.remove(i);
                }
                _ => items.insert(i, rng.choice(values).cloned().unwrap_or(J::Null)),
            }
        }
        _ => *node = rng.choice(values).cloned().unwrap_or(J::Null),
    }
}

#[test]
fn mutated_requests_decode_alike() {
    let mut seen = Seen::default();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let seeds = seeds();
    let values = replacements();
    for round in 0..3_000 {
        let mut body = seeds[round % seeds.len()].clone();
        for _ in 0..rng.usize(1..4) {
            mutate(&mut body, &mut rng, &values);
        }
        let mut text = body.text().into_bytes();
        match rng.u8(0..8) {
            0 => text.truncate(rng.usize(0..=text.len())),
            1 if !text.is_empty() => {
                let at = rng.usize(0..text.len());
                text[at] = *rng.choice(b"{}[],:\"\\0 \xff".as_slice()).unwrap_or(&b' ');
            }
            _ => {}
        }
        seen.check(&text, &DecodeOptions::default());
    }
    seen.assert_covers(&["Syntax", "WrongType", "MultipleValues", "NullInList"]);
}

#[test]
fn generated_requests_decode_alike() {
    let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(3));
    let mut seen = Seen::default();
    for spans in [1, 50, 400] {
        let request = generator.next_batch(spans).request;
        let body = encode_export_request(&request);
        seen.check_default(&body);
        let decoded = decode_export_request(body.as_bytes()).expect("generated bodies decode");
        assert_eq!(decoded, request);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_json_decodes_alike(tree in json_tree()) {
        let text = tree.to_string();
        agree(text.as_bytes(), &DecodeOptions::default()).ok();
        agree(attr_json(&text).as_bytes(), &DecodeOptions::default()).ok();
        let as_span = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{text}]}}]}}]}}"#);
        agree(as_span.as_bytes(), &DecodeOptions::default()).ok();
    }

    #[test]
    fn random_bytes_decode_alike(body in prop::collection::vec(any::<u8>(), 0..256)) {
        agree(&body, &DecodeOptions::default()).ok();
    }

    #[test]
    fn random_requests_decode_alike(spans in prop::collection::vec(span_strategy(), 0..6)) {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        };
        let body = encode_export_request(&request);
        agree(body.as_bytes(), &DecodeOptions::default()).ok();
    }
}
