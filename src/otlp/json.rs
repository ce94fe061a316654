//! OTLP/JSON codec for trace export requests and responses.
//!
//! Owns the mapping between the OTLP/HTTP JSON encoding (protobuf JSON with
//! the OTLP overrides: hex trace/span ids, integer enums, lowerCamelCase
//! names) and the `opentelemetry-proto` message types, in both directions,
//! plus the plain-JSON view of attribute values used by API output.
//!
//! Decoding is lenient where the protocol asks receivers to be: unknown
//! fields are ignored, `null` is an absent field, snake_case proto names and
//! enum names are accepted, 64-bit integers may be strings or numbers, and
//! ids of the wrong length are returned as they are so the receiver can
//! reject only the spans that carry them. Every error names the path of the
//! offending field.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, EntityRef, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Map, Value};

/// How many `AnyValue`s may nest inside one another (an attribute value is
/// level 1, an element of an array value level 2, ...) before decoding fails.
pub const DEFAULT_MAX_ANY_VALUE_DEPTH: usize = 32;

/// Knobs of [`decode_export_request_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Deepest accepted `AnyValue` nesting; see [`DEFAULT_MAX_ANY_VALUE_DEPTH`].
    ///
    /// The JSON text as a whole may nest as deep as this many AnyValues need
    /// (at least 128 and at most 1024 arrays/objects), so unknown fields
    /// cannot nest without bound either.
    pub max_any_value_depth: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_any_value_depth: DEFAULT_MAX_ANY_VALUE_DEPTH,
        }
    }
}

/// A request body that is not a valid OTLP/JSON trace export request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{kind}", PathPrefix(.path))]
pub struct JsonDecodeError {
    /// Where the problem is, e.g. `resourceSpans[0].scopeSpans[1].spans[3].traceId`;
    /// empty when the body is not JSON at all or the top level is wrong.
    pub path: String,
    pub kind: JsonErrorKind,
}

struct PathPrefix<'a>(&'a str);

impl fmt::Display for PathPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// What is wrong at [`JsonDecodeError::path`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonErrorKind {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("invalid hex digit {0:?}")]
    InvalidHexDigit(char),
    #[error("odd number of hex digits ({0})")]
    OddHexLength(usize),
    #[error("invalid base64: {0}")]
    InvalidBase64(String),
    #[error("invalid integer {0:?}")]
    InvalidInteger(String),
    #[error("integer {value} out of range for {target}")]
    IntegerOutOfRange { value: String, target: &'static str },
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    #[error("unknown {enum_name} name {name:?}")]
    UnknownEnumName {
        enum_name: &'static str,
        name: String,
    },
    #[error("JSON nested deeper than {0} arrays/objects")]
    JsonTooDeep(usize),
    #[error("AnyValue nested deeper than {0} levels")]
    AnyValueTooDeep(usize),
    #[error("AnyValue sets both {0} and {1}")]
    MultipleValues(&'static str, &'static str),
    #[error("null is not allowed as a list element")]
    NullInList,
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` with default options.
pub fn decode_export_request(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonDecodeError> {
    decode_export_request_with(body, &DecodeOptions::default())
}

/// Bytes a JSON object may cost while a body is decoded. Any object may be
/// a span: 264 bytes of decoded request, in a list that doubles as it
/// grows, so that while the list moves, the old and the new buffer hold
/// up to three spans' room for each span decoded (792 bytes, against the
/// 866 an empty span's `{},` is charged). The charge was set for the
/// `serde_json::Value` tree the decoder once built (~650 bytes an object,
/// whatever its size); it bounds the request's lists too, with less to
/// spare.
const OBJECT_COST: usize = 700;

/// Bytes an array element (each `[` and `,`) may cost besides its object:
/// a string in a list of strings is 24 bytes, three times over while the
/// list moves.
const VALUE_COST: usize = 160;

/// Bytes per byte of body besides: strings copied out, the decoded request's
/// fields, its protobuf encoding.
const BYTE_COST: usize = 2;

/// What decoding `body` (and encoding it once as protobuf) may allocate at
/// its peak, read off the body with one scan, so it can be charged to the
/// memory account before any of it is allocated. The decoded request's
/// size goes by the number of objects more than bytes: the worst is a list
/// of empty spans, 264 bytes of request for the 3 bytes of `{},`. Every
/// `{` is charged as if it could be a span, also one inside a string, and
/// every `,` and `[` as a list element, so this errs high, the more so for
/// real traffic. Measured against a counting allocator in
/// `tests/json_decode_memory.rs`: generated traffic takes 2.1× its body
/// and is charged 20×, dense small attributes 2.0× and 44×, a list of
/// empty spans 264× and 289×.
pub fn decode_cost(body: &[u8]) -> usize {
    let (mut objects, mut values) = (0usize, 0usize);
    for &b in body {
        match b {
            b'{' => objects += 1,
            b'[' | b',' => values += 1,
            _ => {}
        }
    }
    objects
        .saturating_mul(OBJECT_COST)
        .saturating_add(values.saturating_mul(VALUE_COST))
        .saturating_add(body.len().saturating_mul(BYTE_COST))
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_export_request_with(
    body: &[u8],
    options: &DecodeOptions,
) -> Result<ExportTraceServiceRequest, JsonDecodeError> {
    decode::decode(body, options)
}

// ---------------------------------------------------------------------------
// Nesting

const JSON_NESTING_FLOOR: usize = 128;
const JSON_NESTING_CAP: usize = 1024;

/// JSON nesting that lets `max_any_value_depth` kvlists sit in event
/// attributes (8 levels of envelope plus 4 per kvlist level), with room to
/// reach and report the first level past the limit.
fn json_nesting_limit(max_any_value_depth: usize) -> usize {
    max_any_value_depth
        .saturating_add(1)
        .saturating_mul(4)
        .saturating_add(16)
        .clamp(JSON_NESTING_FLOOR, JSON_NESTING_CAP)
}

// ---------------------------------------------------------------------------
// Paths

#[derive(Clone, Copy)]
enum Segment {
    Root,
    Field(&'static str),
    Index(usize),
}

/// A field path kept as a chain of stack frames; rendered only on error.
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment,
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        segment: Segment::Root,
    };

    fn field(&'a self, name: &'static str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Field(name),
        }
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Index(i),
        }
    }

    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut cursor = Some(self);
        while let Some(p) = cursor {
            segments.push(p.segment);
            cursor = p.parent;
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    fn err(&self, kind: JsonErrorKind) -> JsonDecodeError {
        JsonDecodeError {
            path: self.render(),
            kind,
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Encodes a request as OTLP/JSON: lowerCamelCase names, lowercase hex ids,
/// integer enums, 64-bit integers as strings, default values omitted.
pub fn encode_export_request(request: &ExportTraceServiceRequest) -> String {
    let mut out = String::with_capacity(256);
    let mut obj = Obj::open(&mut out);
    if !request.resource_spans.is_empty() {
        obj.key("resourceSpans");
        list(obj.out, &request.resource_spans, write_resource_spans);
    }
    obj.close();
    out
}

/// The OTLP/JSON `ExportTraceServiceResponse`: `{}` when the export was a
/// full success, otherwise `{"partialSuccess":{...}}`. A message with zero
/// rejected spans is a warning, which the protocol allows, so it is kept.
pub fn encode_export_response(rejected_spans: i64, error_message: &str) -> String {
    if rejected_spans == 0 && error_message.is_empty() {
        return "{}".to_owned();
    }
    let mut out = String::with_capacity(64 + error_message.len());
    let mut obj = Obj::open(&mut out);
    obj.key("partialSuccess");
    let mut inner = Obj::open(obj.out);
    if rejected_spans != 0 {
        inner.key("rejectedSpans");
        write_i64_string(inner.out, rejected_spans);
    }
    if !error_message.is_empty() {
        inner.key("errorMessage");
        write_str(inner.out, error_message);
    }
    inner.close();
    obj.close();
    out
}

/// Plain JSON for an attribute value: strings, numbers and booleans as
/// themselves, arrays as arrays, kvlists as objects (a repeated key keeps its
/// last value), bytes as standard base64, non-finite doubles as `"NaN"`,
/// `"Infinity"`, `"-Infinity"`, and an empty value as `null`.
pub fn any_value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None => Value::String(non_finite_name(*d).to_owned()),
        },
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let mut map = Map::new();
            for entry in &kv.values {
                let v = entry.value.as_ref().map_or(Value::Null, any_value_to_json);
                map.insert(entry.key.clone(), v);
            }
            Value::Object(map)
        }
        Some(any_value::Value::BytesValue(b)) => Value::String(STANDARD.encode(b)),
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
    }
}

fn non_finite_name(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Writes one JSON object, placing commas between members.
struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, empty: true }
    }

    fn key(&mut self, name: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        write_str(self.out, name);
        self.out.push(':');
    }

    fn string(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.key(name);
            write_str(self.out, value);
        }
    }

    fn hex(&mut self, name: &str, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.key(name);
            write_hex(self.out, bytes);
        }
    }

    fn number<N: Copy + Default + PartialEq + fmt::Display>(&mut self, name: &str, value: N) {
        if value != N::default() {
            self.key(name);
            push_display(self.out, value);
        }
    }

    fn u64_string(&mut self, name: &str, value: u64) {
        if value != 0 {
            self.key(name);
            self.out.push('"');
            push_display(self.out, value);
            self.out.push('"');
        }
    }

    fn attributes(&mut self, attributes: &[KeyValue]) {
        if !attributes.is_empty() {
            self.key("attributes");
            list(self.out, attributes, write_key_value);
        }
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn push_display(out: &mut String, value: impl fmt::Display) {
    use fmt::Write as _;
    // Writing into a String cannot fail.
    let _ = write!(out, "{value}");
}

fn list<T>(out: &mut String, items: &[T], write: fn(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item);
    }
    out.push(']');
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => push_display(out, format_args!("\\u{:04x}", c as u32)),
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out.push('"');
}

fn write_i64_string(out: &mut String, value: i64) {
    out.push('"');
    push_display(out, value);
    out.push('"');
}

fn write_resource_spans(out: &mut String, rs: &ResourceSpans) {
    let mut obj = Obj::open(out);
    if let Some(resource) = &rs.resource {
        obj.key("resource");
        write_resource(obj.out, resource);
    }
    if !rs.scope_spans.is_empty() {
        obj.key("scopeSpans");
        list(obj.out, &rs.scope_spans, write_scope_spans);
    }
    obj.string("schemaUrl", &rs.schema_url);
    obj.close();
}

fn write_resource(out: &mut String, resource: &Resource) {
    let mut obj = Obj::open(out);
    obj.attributes(&resource.attributes);
    obj.number("droppedAttributesCount", resource.dropped_attributes_count);
    if !resource.entity_refs.is_empty() {
        obj.key("entityRefs");
        list(obj.out, &resource.entity_refs, write_entity_ref);
    }
    obj.close();
}

fn write_entity_ref(out: &mut String, entity: &EntityRef) {
    let mut obj = Obj::open(out);
    obj.string("schemaUrl", &entity.schema_url);
    obj.string("type", &entity.r#type);
    if !entity.id_keys.is_empty() {
        obj.key("idKeys");
        list(obj.out, &entity.id_keys, |o, s| write_str(o, s));
    }
    if !entity.description_keys.is_empty() {
        obj.key("descriptionKeys");
        list(obj.out, &entity.description_keys, |o, s| write_str(o, s));
    }
    obj.close();
}

fn write_scope_spans(out: &mut String, ss: &ScopeSpans) {
    let mut obj = Obj::open(out);
    if let Some(scope) = &ss.scope {
        obj.key("scope");
        let mut inner = Obj::open(obj.out);
        inner.string("name", &scope.name);
        inner.string("version", &scope.version);
        inner.attributes(&scope.attributes);
        inner.number("droppedAttributesCount", scope.dropped_attributes_count);
        inner.close();
    }
    if !ss.spans.is_empty() {
        obj.key("spans");
        list(obj.out, &ss.spans, write_span);
    }
    obj.string("schemaUrl", &ss.schema_url);
    obj.close();
}

fn write_span(out: &mut String, span: &Span) {
    let mut obj = Obj::open(out);
    obj.hex("traceId", &span.trace_id);
    obj.hex("spanId", &span.span_id);
    obj.string("traceState", &span.trace_state);
    obj.hex("parentSpanId", &span.parent_span_id);
    obj.number("flags", span.flags);
    obj.string("name", &span.name);
    obj.number("kind", span.kind);
    obj.u64_string("startTimeUnixNano", span.start_time_unix_nano);
    obj.u64_string("endTimeUnixNano", span.end_time_unix_nano);
    obj.attributes(&span.attributes);
    obj.number("droppedAttributesCount", span.dropped_attributes_count);
    if !span.events.is_empty() {
        obj.key("events");
        list(obj.out, &span.events, write_event);
    }
    obj.number("droppedEventsCount", span.dropped_events_count);
    if !span.links.is_empty() {
        obj.key("links");
        list(obj.out, &span.links, write_link);
    }
    obj.number("droppedLinksCount", span.dropped_links_count);
    if let Some(status) = &span.status {
        obj.key("status");
        let mut inner = Obj::open(obj.out);
        inner.string("message", &status.message);
        inner.number("code", status.code);
        inner.close();
    }
    obj.close();
}

fn write_event(out: &mut String, event: &Event) {
    let mut obj = Obj::open(out);
    obj.u64_string("timeUnixNano", event.time_unix_nano);
    obj.string("name", &event.name);
    obj.attributes(&event.attributes);
    obj.number("droppedAttributesCount", event.dropped_attributes_count);
    obj.close();
}

fn write_link(out: &mut String, link: &Link) {
    let mut obj = Obj::open(out);
    obj.hex("traceId", &link.trace_id);
    obj.hex("spanId", &link.span_id);
    obj.string("traceState", &link.trace_state);
    obj.attributes(&link.attributes);
    obj.number("droppedAttributesCount", link.dropped_attributes_count);
    obj.number("flags", link.flags);
    obj.close();
}

fn write_key_value(out: &mut String, kv: &KeyValue) {
    let mut obj = Obj::open(out);
    obj.key("key");
    write_str(obj.out, &kv.key);
    if let Some(value) = &kv.value {
        obj.key("value");
        write_any_value(obj.out, value);
    }
    obj.number("keyStrindex", kv.key_strindex);
    obj.close();
}

fn write_any_value(out: &mut String, value: &AnyValue) {
    let mut obj = Obj::open(out);
    match &value.value {
        None => {}
        Some(any_value::Value::StringValue(s)) => {
            obj.key("stringValue");
            write_str(obj.out, s);
        }
        Some(any_value::Value::BoolValue(b)) => {
            obj.key("boolValue");
            obj.out.push_str(if *b { "true" } else { "false" });
        }
        Some(any_value::Value::IntValue(i)) => {
            obj.key("intValue");
            write_i64_string(obj.out, *i);
        }
        Some(any_value::Value::DoubleValue(d)) => {
            obj.key("doubleValue");
            match serde_json::Number::from_f64(*d) {
                Some(n) => push_display(obj.out, n),
                None => write_str(obj.out, non_finite_name(*d)),
            }
        }
        Some(any_value::Value::ArrayValue(a)) => {
            obj.key("arrayValue");
            let mut inner = Obj::open(obj.out);
            inner.key("values");
            list(inner.out, &a.values, write_any_value);
            inner.close();
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            obj.key("kvlistValue");
            let mut inner = Obj::open(obj.out);
            inner.key("values");
            list(inner.out, &kv.values, write_key_value);
            inner.close();
        }
        Some(any_value::Value::BytesValue(b)) => {
            obj.key("bytesValue");
            obj.out.push('"');
            obj.out.push_str(&STANDARD.encode(b));
            obj.out.push('"');
        }
        Some(any_value::Value::StringValueStrindex(i)) => {
            obj.key("stringValueStrindex");
            push_display(obj.out, i);
        }
    }
    obj.close();
}

mod decode;

/// The decoder `decode` replaced, which the tests compare it with.
#[cfg(test)]
mod tree;

#[cfg(test)]
mod tests;
