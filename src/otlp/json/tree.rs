//! The OTLP/JSON decoder `decode.rs` replaced, kept for the tests that
//! compare the two (`tests/differential.rs`): the body parsed into a
//! `serde_json::Value` tree (nesting limited), then the tree converted to
//! the request types. What it answers for a body is what the daemon
//! answered before.

use std::cell::Cell;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
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

use super::{json_nesting_limit, DecodeOptions, JsonDecodeError, JsonErrorKind, Path};

type Decoded<T> = Result<T, JsonDecodeError>;

pub(super) fn decode(
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
