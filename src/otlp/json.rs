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

use std::cell::Cell;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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

/// Bytes a JSON object costs while a body is decoded: the tree node its
/// members go in (a `BTreeMap` leaf holds room for eleven) and its share
/// of the decoded request.
const OBJECT_COST: usize = 700;

/// growth slack.
const VALUE_COST: usize = 160;

/// Bytes per byte of body besides: strings copied out, the decoded request's
/// fields, its protobuf encoding.
const BYTE_COST: usize = 2;

/// What decoding `body` (and encoding it once as protobuf) may allocate at
/// its peak, read off the body with one scan, so it can be charged to the
/// memory account before any of it is allocated. The JSON tree dominates,
/// and its size goes by the number of objects, not bytes: an attribute
/// `{"key":"k","value":{"intValue":"1"}}` is two tree nodes of ~650 bytes
/// for 37 bytes of body. Every `{` counts, also one inside a string, so
/// this errs high; so does counting every `,` and `[` as an array element
/// (a value in an array of scalars costs ~137 bytes for 2 of body, which a
/// sender could fill a body with). Measured against a counting allocator in
/// `tests/json_decode_memory.rs` (generated traffic: 11.5× the body; dense
/// small attributes: 32×; an array of zeros: 69×).
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
    let root = parse_json(body, json_nesting_limit(options.max_any_value_depth))?;
    let decoder = Decoder {
        max_depth: options.max_any_value_depth,
    };
    decoder.request(root, &Path::ROOT)
}

// ---------------------------------------------------------------------------
// Parsing

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

fn parse_json(body: &[u8], limit: usize) -> Decoded<Value> {
    let exceeded = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    let seed = NestingLimited {
        remaining: limit,
        exceeded: &exceeded,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| JsonDecodeError {
        path: String::new(),
        kind: if exceeded.get() {
            JsonErrorKind::JsonTooDeep(limit)
        } else {
            JsonErrorKind::Syntax(e.to_string())
        },
    })
}

/// Builds a `serde_json::Value` like its own `Deserialize` does, but refuses
/// to nest deeper than `remaining` arrays/objects.
#[derive(Clone, Copy)]
struct NestingLimited<'a> {
    remaining: usize,
    exceeded: &'a Cell<bool>,
}

impl NestingLimited<'_> {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        match self.remaining.checked_sub(1) {
            Some(remaining) => Ok(Self { remaining, ..self }),
            None => {
                self.exceeded.set(true);
                Err(E::custom("JSON nested too deep"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for NestingLimited<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NestingLimited<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
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

type Decoded<T> = Result<T, JsonDecodeError>;

// ---------------------------------------------------------------------------
// Scalars

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong_type(path: &Path, expected: &'static str, found: &Value) -> JsonDecodeError {
    path.err(JsonErrorKind::WrongType {
        expected,
        found: type_name(found),
    })
}

fn object(v: Value, path: &Path) -> Decoded<Map<String, Value>> {
    match v {
        Value::Object(map) => Ok(map),
        other => Err(wrong_type(path, "object", &other)),
    }
}

fn array(v: Value, path: &Path) -> Decoded<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(wrong_type(path, "array", &other)),
    }
}

fn string(v: Value, path: &Path) -> Decoded<String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(wrong_type(path, "string", &other)),
    }
}

fn boolean(v: Value, path: &Path) -> Decoded<bool> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(wrong_type(path, "boolean", &other)),
    }
}

/// Any JSON integer form protobuf JSON allows: a number or a decimal string,
/// including integral exponent/fraction forms such as `1e3` or `"5.0"`.
fn integer(v: &Value, path: &Path) -> Decoded<i128> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                integral_f64(f)
                    .ok_or_else(|| path.err(JsonErrorKind::InvalidInteger(n.to_string())))
            }
        }
        Value::String(s) => {
            if let Ok(i) = s.parse::<i128>() {
                return Ok(i);
            }
            s.parse::<f64>()
                .ok()
                .and_then(integral_f64)
                .ok_or_else(|| path.err(JsonErrorKind::InvalidInteger(s.clone())))
        }
        other => Err(wrong_type(path, "integer", other)),
    }
}

fn integral_f64(f: f64) -> Option<i128> {
    // 2^64 bounds every target type; anything beyond is out of range anyway.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= LIMIT {
        Some(f as i128)
    } else {
        None
    }
}

fn int_as<T: TryFrom<i128>>(v: Value, path: &Path, target: &'static str) -> Decoded<T> {
    let i = integer(&v, path)?;
    T::try_from(i).map_err(|_| {
        path.err(JsonErrorKind::IntegerOutOfRange {
            value: i.to_string(),
            target,
        })
    })
}

fn u32_value(v: Value, path: &Path) -> Decoded<u32> {
    int_as(v, path, "uint32")
}

fn i32_value(v: Value, path: &Path) -> Decoded<i32> {
    int_as(v, path, "int32")
}

fn u64_value(v: Value, path: &Path) -> Decoded<u64> {
    int_as(v, path, "uint64")
}

fn i64_value(v: Value, path: &Path) -> Decoded<i64> {
    int_as(v, path, "int64")
}

fn f64_value(v: Value, path: &Path) -> Decoded<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| path.err(JsonErrorKind::InvalidNumber(n.to_string()))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| path.err(JsonErrorKind::InvalidNumber(s.clone()))),
        },
        other => Err(wrong_type(path, "number", &other)),
    }
}

fn enum_value(
    v: Value,
    path: &Path,
    enum_name: &'static str,
    from_name: fn(&str) -> Option<i32>,
) -> Decoded<i32> {
    if let Value::String(s) = &v {
        if let Some(known) = from_name(s) {
            return Ok(known);
        }
        if s.parse::<f64>().is_err() {
            return Err(path.err(JsonErrorKind::UnknownEnumName {
                enum_name,
                name: s.clone(),
            }));
        }
    }
    i32_value(v, path)
}

fn span_kind_from_name(name: &str) -> Option<i32> {
    SpanKind::from_str_name(name).map(|k| k as i32)
}

fn status_code_from_name(name: &str) -> Option<i32> {
    StatusCode::from_str_name(name).map(|c| c as i32)
}

fn hex_digit(c: char) -> Option<u8> {
    c.to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Hex trace/span ids, any case, any even length (the length is the
/// receiver's business).
fn hex_bytes(v: Value, path: &Path) -> Decoded<Vec<u8>> {
    let s = string(v, path)?;
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0usize;
    for c in s.chars() {
        let d = hex_digit(c).ok_or_else(|| path.err(JsonErrorKind::InvalidHexDigit(c)))?;
        digits += 1;
        match high.take() {
            Some(h) => out.push(h << 4 | d),
            None => high = Some(d),
        }
    }
    if high.is_some() {
        return Err(path.err(JsonErrorKind::OddHexLength(digits)));
    }
    Ok(out)
}

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const BASE64_URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard or URL-safe base64, padded or not, as protobuf JSON accepts.
fn base64_bytes(v: Value, path: &Path) -> Decoded<Vec<u8>> {
    let s = string(v, path)?;
    BASE64_LENIENT
        .decode(s.as_bytes())
        .or_else(|first| {
            if s.contains(['-', '_']) {
                BASE64_URL_LENIENT.decode(s.as_bytes())
            } else {
                Err(first)
            }
        })
        .map_err(|e| path.err(JsonErrorKind::InvalidBase64(e.to_string())))
}

// ---------------------------------------------------------------------------
// Messages

/// Removes a field under its JSON name or its proto name; `null` is absent.
fn take(map: &mut Map<String, Value>, json_name: &str, proto_name: &str) -> Option<Value> {
    let primary = map.remove(json_name).filter(|v| !v.is_null());
    let secondary = if json_name == proto_name {
        None
    } else {
        map.remove(proto_name).filter(|v| !v.is_null())
    };
    primary.or(secondary)
}

struct Decoder {
    max_depth: usize,
}

impl Decoder {
    fn list<T>(
        &self,
        map: &mut Map<String, Value>,
        json_name: &'static str,
        proto_name: &str,
        path: &Path,
        mut item: impl FnMut(&Self, Value, &Path) -> Decoded<T>,
    ) -> Decoded<Vec<T>> {
        let Some(v) = take(map, json_name, proto_name) else {
            return Ok(Vec::new());
        };
        let field_path = path.field(json_name);
        let items = array(v, &field_path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, element) in items.into_iter().enumerate() {
            let element_path = field_path.index(i);
            if element.is_null() {
                return Err(element_path.err(JsonErrorKind::NullInList));
            }
            out.push(item(self, element, &element_path)?);
        }
        Ok(out)
    }

    fn request(&self, v: Value, path: &Path) -> Decoded<ExportTraceServiceRequest> {
        let mut map = object(v, path)?;
        Ok(ExportTraceServiceRequest {
            resource_spans: self.list(
                &mut map,
                "resourceSpans",
                "resource_spans",
                path,
                Self::resource_spans,
            )?,
        })
    }

    fn resource_spans(&self, v: Value, path: &Path) -> Decoded<ResourceSpans> {
        let mut map = object(v, path)?;
        let resource = match take(&mut map, "resource", "resource") {
            Some(r) => Some(self.resource(r, &path.field("resource"))?),
            None => None,
        };
        Ok(ResourceSpans {
            resource,
            scope_spans: self.list(
                &mut map,
                "scopeSpans",
                "scope_spans",
                path,
                Self::scope_spans,
            )?,
            schema_url: opt_string(&mut map, "schemaUrl", "schema_url", path)?,
        })
    }

    fn resource(&self, v: Value, path: &Path) -> Decoded<Resource> {
        let mut map = object(v, path)?;
        Ok(Resource {
            attributes: self.attributes(&mut map, path)?,
            dropped_attributes_count: opt_u32(
                &mut map,
                "droppedAttributesCount",
                "dropped_attributes_count",
                path,
            )?,
            entity_refs: self.list(
                &mut map,
                "entityRefs",
                "entity_refs",
                path,
                Self::entity_ref,
            )?,
        })
    }

    fn entity_ref(&self, v: Value, path: &Path) -> Decoded<EntityRef> {
        let mut map = object(v, path)?;
        Ok(EntityRef {
            schema_url: opt_string(&mut map, "schemaUrl", "schema_url", path)?,
            r#type: opt_string(&mut map, "type", "type", path)?,
            id_keys: self.list(&mut map, "idKeys", "id_keys", path, string_item)?,
            description_keys: self.list(
                &mut map,
                "descriptionKeys",
                "description_keys",
                path,
                string_item,
            )?,
        })
    }

    fn scope_spans(&self, v: Value, path: &Path) -> Decoded<ScopeSpans> {
        let mut map = object(v, path)?;
        let scope = match take(&mut map, "scope", "scope") {
            Some(s) => Some(self.scope(s, &path.field("scope"))?),
            None => None,
        };
        Ok(ScopeSpans {
            scope,
            spans: self.list(&mut map, "spans", "spans", path, Self::span)?,
            schema_url: opt_string(&mut map, "schemaUrl", "schema_url", path)?,
        })
    }

    fn scope(&self, v: Value, path: &Path) -> Decoded<InstrumentationScope> {
        let mut map = object(v, path)?;
        Ok(InstrumentationScope {
            name: opt_string(&mut map, "name", "name", path)?,
            version: opt_string(&mut map, "version", "version", path)?,
            attributes: self.attributes(&mut map, path)?,
            dropped_attributes_count: opt_u32(
                &mut map,
                "droppedAttributesCount",
                "dropped_attributes_count",
                path,
            )?,
        })
    }

    fn span(&self, v: Value, path: &Path) -> Decoded<Span> {
        let mut map = object(v, path)?;
        let status = match take(&mut map, "status", "status") {
            Some(s) => Some(status(s, &path.field("status"))?),
            None => None,
        };
        Ok(Span {
            trace_id: opt_hex(&mut map, "traceId", "trace_id", path)?,
            span_id: opt_hex(&mut map, "spanId", "span_id", path)?,
            trace_state: opt_string(&mut map, "traceState", "trace_state", path)?,
            parent_span_id: opt_hex(&mut map, "parentSpanId", "parent_span_id", path)?,
            flags: opt_u32(&mut map, "flags", "flags", path)?,
            name: opt_string(&mut map, "name", "name", path)?,
            kind: opt_enum(&mut map, "kind", path, "SpanKind", span_kind_from_name)?,
            start_time_unix_nano: opt_u64(
                &mut map,
                "startTimeUnixNano",
                "start_time_unix_nano",
                path,
            )?,
            end_time_unix_nano: opt_u64(&mut map, "endTimeUnixNano", "end_time_unix_nano", path)?,
            attributes: self.attributes(&mut map, path)?,
            dropped_attributes_count: opt_u32(
                &mut map,
                "droppedAttributesCount",
                "dropped_attributes_count",
                path,
            )?,
            events: self.list(&mut map, "events", "events", path, Self::event)?,
            dropped_events_count: opt_u32(
                &mut map,
                "droppedEventsCount",
                "dropped_events_count",
                path,
            )?,
            links: self.list(&mut map, "links", "links", path, Self::link)?,
            dropped_links_count: opt_u32(
                &mut map,
                "droppedLinksCount",
                "dropped_links_count",
                path,
            )?,
            status,
        })
    }

    fn event(&self, v: Value, path: &Path) -> Decoded<Event> {
        let mut map = object(v, path)?;
        Ok(Event {
            time_unix_nano: opt_u64(&mut map, "timeUnixNano", "time_unix_nano", path)?,
            name: opt_string(&mut map, "name", "name", path)?,
            attributes: self.attributes(&mut map, path)?,
            dropped_attributes_count: opt_u32(
                &mut map,
                "droppedAttributesCount",
                "dropped_attributes_count",
                path,
            )?,
        })
    }

    fn link(&self, v: Value, path: &Path) -> Decoded<Link> {
        let mut map = object(v, path)?;
        Ok(Link {
            trace_id: opt_hex(&mut map, "traceId", "trace_id", path)?,
            span_id: opt_hex(&mut map, "spanId", "span_id", path)?,
            trace_state: opt_string(&mut map, "traceState", "trace_state", path)?,
            attributes: self.attributes(&mut map, path)?,
            dropped_attributes_count: opt_u32(
                &mut map,
                "droppedAttributesCount",
                "dropped_attributes_count",
                path,
            )?,
            flags: opt_u32(&mut map, "flags", "flags", path)?,
        })
    }

    fn attributes(&self, map: &mut Map<String, Value>, path: &Path) -> Decoded<Vec<KeyValue>> {
        self.list(map, "attributes", "attributes", path, |d, v, p| {
            d.key_value(v, p, 1)
        })
    }

    fn key_value(&self, v: Value, path: &Path, level: usize) -> Decoded<KeyValue> {
        let mut map = object(v, path)?;
        let value = match take(&mut map, "value", "value") {
            Some(v) => Some(self.any_value(v, &path.field("value"), level)?),
            None => None,
        };
        Ok(KeyValue {
            key: opt_string(&mut map, "key", "key", path)?,
            value,
            key_strindex: opt_i32(&mut map, "keyStrindex", "key_strindex", path)?,
        })
    }

    fn any_value(&self, v: Value, path: &Path, level: usize) -> Decoded<AnyValue> {
        if level > self.max_depth {
            return Err(path.err(JsonErrorKind::AnyValueTooDeep(self.max_depth)));
        }
        let map = object(v, path)?;
        let mut found: Option<(&'static str, any_value::Value)> = None;
        for (key, field) in map {
            if field.is_null() {
                continue;
            }
            let name: &'static str = match key.as_str() {
                "stringValue" | "string_value" => "stringValue",
                "boolValue" | "bool_value" => "boolValue",
                "intValue" | "int_value" => "intValue",
                "doubleValue" | "double_value" => "doubleValue",
                "arrayValue" | "array_value" => "arrayValue",
                "kvlistValue" | "kvlist_value" => "kvlistValue",
                "bytesValue" | "bytes_value" => "bytesValue",
                "stringValueStrindex" | "string_value_strindex" => "stringValueStrindex",
                _ => continue,
            };
            if let Some((previous, _)) = &found {
                return Err(path.err(JsonErrorKind::MultipleValues(previous, name)));
            }
            let field_path = path.field(name);
            let decoded = match name {
                "stringValue" => any_value::Value::StringValue(string(field, &field_path)?),
                "boolValue" => any_value::Value::BoolValue(boolean(field, &field_path)?),
                "intValue" => any_value::Value::IntValue(i64_value(field, &field_path)?),
                "doubleValue" => any_value::Value::DoubleValue(f64_value(field, &field_path)?),
                "arrayValue" => {
                    let mut inner = object(field, &field_path)?;
                    let values =
                        self.list(&mut inner, "values", "values", &field_path, |d, v, p| {
                            d.any_value(v, p, level + 1)
                        })?;
                    any_value::Value::ArrayValue(ArrayValue { values })
                }
                "kvlistValue" => {
                    let mut inner = object(field, &field_path)?;
                    let values =
                        self.list(&mut inner, "values", "values", &field_path, |d, v, p| {
                            d.key_value(v, p, level + 1)
                        })?;
                    any_value::Value::KvlistValue(KeyValueList { values })
                }
                "bytesValue" => any_value::Value::BytesValue(base64_bytes(field, &field_path)?),
                _ => any_value::Value::StringValueStrindex(i32_value(field, &field_path)?),
            };
            found = Some((name, decoded));
        }
        Ok(AnyValue {
            value: found.map(|(_, v)| v),
        })
    }
}

fn string_item(_: &Decoder, v: Value, path: &Path) -> Decoded<String> {
    string(v, path)
}

fn status(v: Value, path: &Path) -> Decoded<Status> {
    let mut map = object(v, path)?;
    Ok(Status {
        message: opt_string(&mut map, "message", "message", path)?,
        code: opt_enum(&mut map, "code", path, "StatusCode", status_code_from_name)?,
    })
}

fn opt_string(
    map: &mut Map<String, Value>,
    json_name: &'static str,
    proto_name: &str,
    path: &Path,
) -> Decoded<String> {
    take(map, json_name, proto_name)
        .map(|v| string(v, &path.field(json_name)))
        .unwrap_or_else(|| Ok(String::new()))
}

fn opt_hex(
    map: &mut Map<String, Value>,
    json_name: &'static str,
    proto_name: &str,
    path: &Path,
) -> Decoded<Vec<u8>> {
    take(map, json_name, proto_name)
        .map(|v| hex_bytes(v, &path.field(json_name)))
        .unwrap_or_else(|| Ok(Vec::new()))
}

fn opt_u32(
    map: &mut Map<String, Value>,
    json_name: &'static str,
    proto_name: &str,
    path: &Path,
) -> Decoded<u32> {
    take(map, json_name, proto_name)
        .map(|v| u32_value(v, &path.field(json_name)))
        .unwrap_or(Ok(0))
}

fn opt_i32(
    map: &mut Map<String, Value>,
    json_name: &'static str,
    proto_name: &str,
    path: &Path,
) -> Decoded<i32> {
    take(map, json_name, proto_name)
        .map(|v| i32_value(v, &path.field(json_name)))
        .unwrap_or(Ok(0))
}

fn opt_u64(
    map: &mut Map<String, Value>,
    json_name: &'static str,
    proto_name: &str,
    path: &Path,
) -> Decoded<u64> {
    take(map, json_name, proto_name)
        .map(|v| u64_value(v, &path.field(json_name)))
        .unwrap_or(Ok(0))
}

fn opt_enum(
    map: &mut Map<String, Value>,
    name: &'static str,
    path: &Path,
    enum_name: &'static str,
    from_name: fn(&str) -> Option<i32>,
) -> Decoded<i32> {
    take(map, name, name)
        .map(|v| enum_value(v, &path.field(name), enum_name, from_name))
        .unwrap_or(Ok(0))
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

#[cfg(test)]
mod tests;
