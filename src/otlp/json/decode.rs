//! OTLP/JSON straight into the request types: serde visitors build each
//! message while the body is parsed, with no `serde_json::Value` tree in
//! between (the tree cost ~650 B an object and most of the decode time).
//!
//! It answers what the tree decoder it replaced answered, for every body
//! (`tree.rs`, kept for the tests that compare the two). That asks more
//! than streaming alone would:
//!
//! - A syntax error, or nesting past the limit, anywhere in the body wins
//!   over every other error, as when the body was parsed whole before
//!   anything was looked at. So what is wrong with the request's content
//!   travels up as a value ([`Decoded`]) while parsing goes on to the end;
//!   only syntax and nesting errors stop it.
//! - An object's members count as they did in a map: a repeated name only
//!   with its last value (an earlier value's error is forgotten with it), and
//!   a field's lowerCamelCase name before its proto name, in whichever order
//!   they come. Each name has a slot that a later member overwrites.
//! - A message's fields are checked in one fixed order, not the order they
//!   come in, so of two errors in one message the same one is reported.
//! - An AnyValue's members are weighed in the byte order of their names
//!   (the map was sorted): the first non-null one is the value, a second
//!   one an error.
//! - Once a list has a bad element, the rest of it is only parsed: the tree
//!   decoder stopped at the first.
//!
//! Nested AnyValues recurse through these visitors, a few frames for each
//! JSON level, up to the nesting `DecodeOptions` allow (1 024 at most) on
//! whatever thread decodes, so the frames are kept small: errors are
//! boxed, what travels with each visitor is three words and its shape, and
//! a visitor writes its value where the caller wants it rather than return
//! it through serde_json's generic code. That code is instantiated here,
//! for each visitor, and in a debug build its frames hold several copies
//! of the visitor and of what it returns; there a test thread's 2 MiB
//! still holds the 200 nested kvlists `tests.rs` decodes.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

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
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

use super::{json_nesting_limit, DecodeOptions, JsonDecodeError, JsonErrorKind, Path};

/// What one part of the request decodes to; an error is boxed to keep the
/// recursion's frames small.
type Decoded<T> = Result<T, Box<JsonDecodeError>>;

fn error(path: &Path<'_>, kind: JsonErrorKind) -> Box<JsonDecodeError> {
    Box::new(path.err(kind))
}

pub(super) fn decode(
    body: &[u8],
    options: &DecodeOptions,
) -> Result<ExportTraceServiceRequest, JsonDecodeError> {
    let limit = json_nesting_limit(options.max_any_value_depth);
    let shared = Shared {
        remaining: Cell::new(limit),
        exceeded: Cell::new(false),
        max_any_value_depth: options.max_any_value_depth,
    };
    let mut request = None;
    let seed = ValueSeed {
        shape: Message::<RequestFields>::SHAPE,
        ctx: Ctx(&shared),
        path: &Path::ROOT,
        out: &mut request,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    // serde_json's own limit is a fixed 128 levels, fewer than the options
    // may allow; `Ctx` counts instead, for known and unknown fields alike.
    de.disable_recursion_limit();
    if let Err(e) = seed.deserialize(&mut de).and_then(|()| de.end()) {
        return Err(JsonDecodeError {
            path: String::new(),
            kind: if shared.exceeded.get() {
                JsonErrorKind::JsonTooDeep(limit)
            } else {
                JsonErrorKind::Syntax(e.to_string())
            },
        });
    }
    match request {
        Some(decoded) => decoded.map_err(|e| *e),
        None => Err(Path::ROOT.err(JsonErrorKind::WrongType {
            expected: "object",
            found: "null",
        })),
    }
}

/// What every value's visitor carries besides its path: one reference,
/// since serde_json's frames, instantiated for each visitor, hold several
/// copies of it.
#[derive(Clone, Copy)]
struct Ctx<'a>(&'a Shared);

struct Shared {
    /// How many more arrays/objects may open inside the current one.
    remaining: Cell<usize>,
    /// Set when `remaining` ran out, to tell that error from a syntax error
    /// once serde_json hands it back.
    exceeded: Cell<bool>,
    max_any_value_depth: usize,
}

impl Ctx<'_> {
    /// Opens an array or object; an error ends the parse, so only a
    /// successful one is [`Ctx::leave`]d.
    fn enter<E: de::Error>(self) -> Result<(), E> {
        match self.0.remaining.get().checked_sub(1) {
            Some(remaining) => {
                self.0.remaining.set(remaining);
                Ok(())
            }
            None => {
                self.0.exceeded.set(true);
                Err(E::custom("JSON nested too deep"))
            }
        }
    }

    fn leave(self) {
        self.0.remaining.set(self.0.remaining.get() + 1);
    }

    fn max_any_value_depth(self) -> usize {
        self.0.max_any_value_depth
    }
}

/// A JSON value that is neither null nor an array or object. A string is
/// borrowed while the visitor runs: the shapes that keep one copy it, the
/// others (ids, integers, base64) read it in place.
#[derive(Clone, Copy)]
enum Scalar<'s> {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'s str),
}

impl Scalar<'_> {
    fn type_name(self) -> &'static str {
        match self {
            Scalar::Bool(_) => "boolean",
            Scalar::U64(_) | Scalar::I64(_) | Scalar::F64(_) => "number",
            Scalar::Str(_) => "string",
        }
    }
}

// ---------------------------------------------------------------------------
// Values

/// What a JSON value at one place in the request decodes to. A shape
/// overrides the forms the place accepts; any other form is parsed and
/// reported as the wrong type.
trait Shape: Copy {
    type Out;

    /// The JSON type a wrong-type error names as expected.
    fn expected(self) -> &'static str;

    /// An error for this place whatever its value is (an AnyValue nested
    /// too deep); the value is then only parsed.
    fn refuse(self, _ctx: Ctx<'_>, _path: &Path<'_>) -> Option<Box<JsonDecodeError>> {
        None
    }

    fn wrong(self, path: &Path<'_>, found: &'static str) -> Box<JsonDecodeError> {
        error(
            path,
            JsonErrorKind::WrongType {
                expected: self.expected(),
                found,
            },
        )
    }

    /// Reads an object's members, once `ctx` has entered it, and writes
    /// what they make to `out`.
    fn object<'de, A: MapAccess<'de>>(
        self,
        map: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<Self::Out>>,
    ) -> Result<(), A::Error> {
        skip_members(map, ctx)?;
        *out = Some(Err(self.wrong(path, "object")));
        Ok(())
    }

    /// Reads an array's elements, once `ctx` has entered it, and writes
    /// what they make to `out`.
    fn array<'de, A: SeqAccess<'de>>(
        self,
        seq: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<Self::Out>>,
    ) -> Result<(), A::Error> {
        skip_elements(seq, ctx)?;
        *out = Some(Err(self.wrong(path, "array")));
        Ok(())
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<Self::Out> {
        Err(self.wrong(path, value.type_name()))
    }
}

/// One value at a known place, written to `out`: `None` for `null`, which
/// every field takes as absent (and a list as an error of its own).
struct ValueSeed<'a, 'o, S: Shape> {
    shape: S,
    ctx: Ctx<'a>,
    path: &'a Path<'a>,
    out: &'o mut Option<Decoded<S::Out>>,
}

impl<'de, S: Shape> DeserializeSeed<'de> for ValueSeed<'_, '_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<S: Shape> ValueSeed<'_, '_, S> {
    fn scalar(self, value: Scalar<'_>) {
        *self.out = Some(match self.shape.refuse(self.ctx, self.path) {
            Some(e) => Err(e),
            None => self.shape.scalar(value, self.path),
        });
    }
}

impl<'de, S: Shape> Visitor<'de> for ValueSeed<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::I64(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::U64(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::F64(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.ctx.enter()?;
        if let Some(e) = self.shape.refuse(self.ctx, self.path) {
            skip_members(map, self.ctx)?;
            *self.out = Some(Err(e));
        } else {
            self.shape.object(map, self.ctx, self.path, self.out)?;
        }
        self.ctx.leave();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.ctx.enter()?;
        if let Some(e) = self.shape.refuse(self.ctx, self.path) {
            skip_elements(seq, self.ctx)?;
            *self.out = Some(Err(e));
        } else {
            self.shape.array(seq, self.ctx, self.path, self.out)?;
        }
        self.ctx.leave();
        Ok(())
    }
}

/// Parses a value nothing reads (an unknown field, a value of the wrong
/// type, what follows a list's first bad element) and drops it. Not
/// `IgnoredAny` itself: serde_json skips that without counting nesting
/// (its own limit is off), and without checking that strings are UTF-8 or
/// numbers in range, where the tree decoder, parsing everything, refused.
#[derive(Clone, Copy)]
struct Skip<'a>(Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.enter()?;
        skip_members(map, self.0)?;
        self.0.leave();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.enter()?;
        skip_elements(seq, self.0)?;
        self.0.leave();
        Ok(())
    }
}

fn skip_members<'de, A: MapAccess<'de>>(mut map: A, ctx: Ctx<'_>) -> Result<(), A::Error> {
    // A name is parsed in full even as `IgnoredAny`: serde_json reads every
    // member name as a string.
    while map.next_key::<IgnoredAny>()?.is_some() {
        map.next_value_seed(Skip(ctx))?;
    }
    Ok(())
}

fn skip_elements<'de, A: SeqAccess<'de>>(mut seq: A, ctx: Ctx<'_>) -> Result<(), A::Error> {
    while seq.next_element_seed(Skip(ctx))?.is_some() {}
    Ok(())
}

/// A repeated field: a `null` element is an error, and the first bad
/// element is the list's error.
#[derive(Clone, Copy)]
struct List<S>(S);

impl<S: Shape> Shape for List<S> {
    type Out = Vec<S::Out>;

    fn expected(self) -> &'static str {
        "array"
    }

    fn array<'de, A: SeqAccess<'de>>(
        self,
        mut seq: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<Self::Out>>,
    ) -> Result<(), A::Error> {
        let mut items = Vec::new();
        loop {
            let element_path = path.index(items.len());
            let mut element = None;
            let seed = ValueSeed {
                shape: self.0,
                ctx,
                path: &element_path,
                out: &mut element,
            };
            if seq.next_element_seed(seed)?.is_none() {
                *out = Some(Ok(items));
                return Ok(());
            }
            let e = match element {
                Some(Ok(item)) => {
                    items.push(item);
                    continue;
                }
                Some(Err(e)) => e,
                None => error(&element_path, JsonErrorKind::NullInList),
            };
            skip_elements(seq, ctx)?;
            *out = Some(Err(e));
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Scalars

#[derive(Clone, Copy)]
struct Str;

impl Shape for Str {
    type Out = String;

    fn expected(self) -> &'static str {
        "string"
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<String> {
        match value {
            Scalar::Str(s) => Ok(s.to_owned()),
            other => Err(self.wrong(path, other.type_name())),
        }
    }
}

#[derive(Clone, Copy)]
struct Bool;

impl Shape for Bool {
    type Out = bool;

    fn expected(self) -> &'static str {
        "boolean"
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<bool> {
        match value {
            Scalar::Bool(b) => Ok(b),
            other => Err(self.wrong(path, other.type_name())),
        }
    }
}

/// The integer types of the request's fields.
trait IntTarget: TryFrom<i128> + Copy {
    /// As an out-of-range error names it.
    const NAME: &'static str;
}

impl IntTarget for u32 {
    const NAME: &'static str = "uint32";
}

impl IntTarget for i32 {
    const NAME: &'static str = "int32";
}

impl IntTarget for u64 {
    const NAME: &'static str = "uint64";
}

impl IntTarget for i64 {
    const NAME: &'static str = "int64";
}

/// Any JSON integer form protobuf JSON allows: a number or a decimal
/// string, including integral exponent/fraction forms such as `1e3` or
/// `"5.0"`.
#[derive(Clone, Copy)]
struct Int<T>(PhantomData<T>);

const U32: Int<u32> = Int(PhantomData);
const I32: Int<i32> = Int(PhantomData);
const U64: Int<u64> = Int(PhantomData);
const I64: Int<i64> = Int(PhantomData);

impl<T: IntTarget> Shape for Int<T> {
    type Out = T;

    fn expected(self) -> &'static str {
        "integer"
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<T> {
        let i = match value {
            Scalar::U64(u) => i128::from(u),
            Scalar::I64(i) => i128::from(i),
            Scalar::F64(f) => integral_f64(f)
                .ok_or_else(|| error(path, JsonErrorKind::InvalidInteger(number_text(f))))?,
            Scalar::Str(s) => match s.parse::<i128>() {
                Ok(i) => i,
                Err(_) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(integral_f64)
                    .ok_or_else(|| error(path, JsonErrorKind::InvalidInteger(s.to_owned())))?,
            },
            Scalar::Bool(_) => return Err(self.wrong(path, "boolean")),
        };
        T::try_from(i).map_err(|_| {
            error(
                path,
                JsonErrorKind::IntegerOutOfRange {
                    value: i.to_string(),
                    target: T::NAME,
                },
            )
        })
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

/// A parsed number as serde_json writes it, for an error to quote.
fn number_text(f: f64) -> String {
    serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string())
}

/// A double: a number, a decimal string, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
#[derive(Clone, Copy)]
struct Double;

impl Shape for Double {
    type Out = f64;

    fn expected(self) -> &'static str {
        "number"
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<f64> {
        match value {
            Scalar::U64(u) => Ok(u as f64),
            Scalar::I64(i) => Ok(i as f64),
            Scalar::F64(f) => Ok(f),
            Scalar::Str("NaN") => Ok(f64::NAN),
            Scalar::Str("Infinity") => Ok(f64::INFINITY),
            Scalar::Str("-Infinity") => Ok(f64::NEG_INFINITY),
            Scalar::Str(s) => s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| error(path, JsonErrorKind::InvalidNumber(s.to_owned()))),
            Scalar::Bool(_) => Err(self.wrong(path, "boolean")),
        }
    }
}

/// An enum: the name of one of its values, or its number in any integer
/// form.
#[derive(Clone, Copy)]
struct Enum {
    name: &'static str,
    from_name: fn(&str) -> Option<i32>,
}

const SPAN_KIND: Enum = Enum {
    name: "SpanKind",
    from_name: |name| SpanKind::from_str_name(name).map(|k| k as i32),
};

const STATUS_CODE: Enum = Enum {
    name: "StatusCode",
    from_name: |name| StatusCode::from_str_name(name).map(|c| c as i32),
};

impl Shape for Enum {
    type Out = i32;

    fn expected(self) -> &'static str {
        I32.expected()
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<i32> {
        if let Scalar::Str(s) = value {
            if let Some(known) = (self.from_name)(s) {
                return Ok(known);
            }
            if s.parse::<f64>().is_err() {
                return Err(error(
                    path,
                    JsonErrorKind::UnknownEnumName {
                        enum_name: self.name,
                        name: s.to_owned(),
                    },
                ));
            }
        }
        I32.scalar(value, path)
    }
}

/// Hex trace/span ids, any case, any even length (the length is the
/// receiver's business).
#[derive(Clone, Copy)]
struct Hex;

impl Shape for Hex {
    type Out = Vec<u8>;

    fn expected(self) -> &'static str {
        "string"
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<Vec<u8>> {
        let Scalar::Str(s) = value else {
            return Err(self.wrong(path, value.type_name()));
        };
        let mut out = Vec::with_capacity(s.len() / 2);
        let mut high: Option<u8> = None;
        let mut digits = 0usize;
        for c in s.chars() {
            let d = c
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
                .ok_or_else(|| error(path, JsonErrorKind::InvalidHexDigit(c)))?;
            digits += 1;
            match high.take() {
                Some(h) => out.push(h << 4 | d),
                None => high = Some(d),
            }
        }
        if high.is_some() {
            return Err(error(path, JsonErrorKind::OddHexLength(digits)));
        }
        Ok(out)
    }
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
#[derive(Clone, Copy)]
struct Base64;

impl Shape for Base64 {
    type Out = Vec<u8>;

    fn expected(self) -> &'static str {
        "string"
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<Vec<u8>> {
        let Scalar::Str(s) = value else {
            return Err(self.wrong(path, value.type_name()));
        };
        BASE64_LENIENT
            .decode(s.as_bytes())
            .or_else(|first| {
                if s.contains(['-', '_']) {
                    BASE64_URL_LENIENT.decode(s.as_bytes())
                } else {
                    Err(first)
                }
            })
            .map_err(|e| error(path, JsonErrorKind::InvalidBase64(e.to_string())))
    }
}

// ---------------------------------------------------------------------------
// Messages

/// A field's last value under its lowerCamelCase name and under its proto
/// name; `None` while absent or `null`.
struct Slot<T> {
    json: Option<Decoded<T>>,
    proto: Option<Decoded<T>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            json: None,
            proto: None,
        }
    }
}

impl<T> Slot<T> {
    /// The value under the lowerCamelCase name, else under the proto name.
    fn get(self) -> Decoded<Option<T>> {
        self.json.or(self.proto).transpose()
    }

    fn or_default(self) -> Decoded<T>
    where
        T: Default,
    {
        self.get().map(Option::unwrap_or_default)
    }
}

/// A message's fields while its object is read.
trait Fields: Default {
    type Out;

    /// Reads the value of the member called `name` into its slot; `false`
    /// (nothing read) when the message has no such field.
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        name: &str,
        map: &mut A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
    ) -> Result<bool, A::Error>;

    /// The message, or the error of the first field that has one, in the
    /// order the tree decoder took them out of its map.
    fn finish(self) -> Decoded<Self::Out>;
}

/// The shape of a message: an object whose members fill an `F`.
struct Message<F>(PhantomData<F>);

impl<F> Message<F> {
    const SHAPE: Self = Message(PhantomData);
}

impl<F> Clone for Message<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for Message<F> {}

impl<F: Fields> Shape for Message<F> {
    type Out = F::Out;

    fn expected(self) -> &'static str {
        "object"
    }

    fn object<'de, A: MapAccess<'de>>(
        self,
        mut map: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<F::Out>>,
    ) -> Result<(), A::Error> {
        let mut fields = F::default();
        while let Some(name) = map.next_key_seed(MemberName)? {
            if !fields.read(&name, &mut map, ctx, path)? {
                map.next_value_seed(Skip(ctx))?;
            }
        }
        *out = Some(fields.finish());
        Ok(())
    }
}

/// A member's name, borrowed from the body unless it had escapes.
struct MemberName;

enum Name<'de> {
    Borrowed(&'de str),
    Unescaped(String),
}

impl Deref for Name<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Name::Borrowed(s) => s,
            Name::Unescaped(s) => s,
        }
    }
}

impl<'de> DeserializeSeed<'de> for MemberName {
    type Value = Name<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Name<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberName {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
        Ok(Name::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
        Ok(Name::Unescaped(v.to_owned()))
    }
}

/// Reads the value of the member just named, at `path.name`, into `out`.
fn value<'de, A: MapAccess<'de>, S: Shape>(
    map: &mut A,
    shape: S,
    ctx: Ctx<'_>,
    path: &Path<'_>,
    name: &'static str,
    out: &mut Option<Decoded<S::Out>>,
) -> Result<(), A::Error> {
    let path = path.field(name);
    map.next_value_seed(ValueSeed {
        shape,
        ctx,
        path: &path,
        out,
    })
}

/// The `Fields` of a message that sits anywhere: a slot for each field,
/// filled from a member named by the field's lowerCamelCase name or, where
/// it has one of its own, its proto name (an error's path names the field
/// by the first either way); `finish` makes the message of the slots.
macro_rules! message_fields {
    (
        $(#[$meta:meta])*
        $fields:ident => $out:ty {
            $( $field:ident: $ty:ty = $shape:expr => $json:literal $(| $proto:literal)? ),+ $(,)?
        }
        finish($f:ident) $finish:block
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        struct $fields {
            $( $field: Slot<$ty>, )+
        }

        impl Fields for $fields {
            type Out = $out;

            fn read<'de, A: MapAccess<'de>>(
                &mut self,
                name: &str,
                map: &mut A,
                ctx: Ctx<'_>,
                path: &Path<'_>,
            ) -> Result<bool, A::Error> {
                match name {
                    $(
                        $json => value(map, $shape, ctx, path, $json, &mut self.$field.json)?,
                        $( $proto => value(map, $shape, ctx, path, $json, &mut self.$field.proto)?, )?
                    )+
                    _ => return Ok(false),
                }
                Ok(true)
            }

            fn finish(self) -> Decoded<$out> {
                let $f = self;
                $finish
            }
        }
    };
}

const RESOURCE_SPANS: Message<ResourceSpansFields> = Message::SHAPE;
const RESOURCE: Message<ResourceFields> = Message::SHAPE;
const ENTITY_REF: Message<EntityRefFields> = Message::SHAPE;
const SCOPE_SPANS: Message<ScopeSpansFields> = Message::SHAPE;
const SCOPE: Message<ScopeFields> = Message::SHAPE;
const SPAN: Message<SpanFields> = Message::SHAPE;
const STATUS: Message<StatusFields> = Message::SHAPE;
const EVENT: Message<EventFields> = Message::SHAPE;
const LINK: Message<LinkFields> = Message::SHAPE;

// The `finish` of each message takes its fields in the order the tree
// decoder did, which decides which of two errors in one message shows.

message_fields! {
    RequestFields => ExportTraceServiceRequest {
        resource_spans: Vec<ResourceSpans> = List(RESOURCE_SPANS) => "resourceSpans" | "resource_spans",
    }
    finish(f) {
        Ok(ExportTraceServiceRequest {
            resource_spans: f.resource_spans.or_default()?,
        })
    }
}

message_fields! {
    ResourceSpansFields => ResourceSpans {
        resource: Resource = RESOURCE => "resource",
        scope_spans: Vec<ScopeSpans> = List(SCOPE_SPANS) => "scopeSpans" | "scope_spans",
        schema_url: String = Str => "schemaUrl" | "schema_url",
    }
    finish(f) {
        Ok(ResourceSpans {
            resource: f.resource.get()?,
            scope_spans: f.scope_spans.or_default()?,
            schema_url: f.schema_url.or_default()?,
        })
    }
}

message_fields! {
    ResourceFields => Resource {
        attributes: Vec<KeyValue> = ATTRIBUTES => "attributes",
        dropped_attributes_count: u32 = U32 => "droppedAttributesCount" | "dropped_attributes_count",
        entity_refs: Vec<EntityRef> = List(ENTITY_REF) => "entityRefs" | "entity_refs",
    }
    finish(f) {
        Ok(Resource {
            attributes: f.attributes.or_default()?,
            dropped_attributes_count: f.dropped_attributes_count.or_default()?,
            entity_refs: f.entity_refs.or_default()?,
        })
    }
}

message_fields! {
    EntityRefFields => EntityRef {
        schema_url: String = Str => "schemaUrl" | "schema_url",
        r#type: String = Str => "type",
        id_keys: Vec<String> = List(Str) => "idKeys" | "id_keys",
        description_keys: Vec<String> = List(Str) => "descriptionKeys" | "description_keys",
    }
    finish(f) {
        Ok(EntityRef {
            schema_url: f.schema_url.or_default()?,
            r#type: f.r#type.or_default()?,
            id_keys: f.id_keys.or_default()?,
            description_keys: f.description_keys.or_default()?,
        })
    }
}

message_fields! {
    ScopeSpansFields => ScopeSpans {
        scope: InstrumentationScope = SCOPE => "scope",
        spans: Vec<Span> = List(SPAN) => "spans",
        schema_url: String = Str => "schemaUrl" | "schema_url",
    }
    finish(f) {
        Ok(ScopeSpans {
            scope: f.scope.get()?,
            spans: f.spans.or_default()?,
            schema_url: f.schema_url.or_default()?,
        })
    }
}

message_fields! {
    ScopeFields => InstrumentationScope {
        name: String = Str => "name",
        version: String = Str => "version",
        attributes: Vec<KeyValue> = ATTRIBUTES => "attributes",
        dropped_attributes_count: u32 = U32 => "droppedAttributesCount" | "dropped_attributes_count",
    }
    finish(f) {
        Ok(InstrumentationScope {
            name: f.name.or_default()?,
            version: f.version.or_default()?,
            attributes: f.attributes.or_default()?,
            dropped_attributes_count: f.dropped_attributes_count.or_default()?,
        })
    }
}

message_fields! {
    SpanFields => Span {
        trace_id: Vec<u8> = Hex => "traceId" | "trace_id",
        span_id: Vec<u8> = Hex => "spanId" | "span_id",
        trace_state: String = Str => "traceState" | "trace_state",
        parent_span_id: Vec<u8> = Hex => "parentSpanId" | "parent_span_id",
        flags: u32 = U32 => "flags",
        name: String = Str => "name",
        kind: i32 = SPAN_KIND => "kind",
        start_time_unix_nano: u64 = U64 => "startTimeUnixNano" | "start_time_unix_nano",
        end_time_unix_nano: u64 = U64 => "endTimeUnixNano" | "end_time_unix_nano",
        attributes: Vec<KeyValue> = ATTRIBUTES => "attributes",
        dropped_attributes_count: u32 = U32 => "droppedAttributesCount" | "dropped_attributes_count",
        events: Vec<Event> = List(EVENT) => "events",
        dropped_events_count: u32 = U32 => "droppedEventsCount" | "dropped_events_count",
        links: Vec<Link> = List(LINK) => "links",
        dropped_links_count: u32 = U32 => "droppedLinksCount" | "dropped_links_count",
        status: Status = STATUS => "status",
    }
    finish(f) {
        let status = f.status.get()?;
        Ok(Span {
            trace_id: f.trace_id.or_default()?,
            span_id: f.span_id.or_default()?,
            trace_state: f.trace_state.or_default()?,
            parent_span_id: f.parent_span_id.or_default()?,
            flags: f.flags.or_default()?,
            name: f.name.or_default()?,
            kind: f.kind.or_default()?,
            start_time_unix_nano: f.start_time_unix_nano.or_default()?,
            end_time_unix_nano: f.end_time_unix_nano.or_default()?,
            attributes: f.attributes.or_default()?,
            dropped_attributes_count: f.dropped_attributes_count.or_default()?,
            events: f.events.or_default()?,
            dropped_events_count: f.dropped_events_count.or_default()?,
            links: f.links.or_default()?,
            dropped_links_count: f.dropped_links_count.or_default()?,
            status,
        })
    }
}

message_fields! {
    StatusFields => Status {
        message: String = Str => "message",
        code: i32 = STATUS_CODE => "code",
    }
    finish(f) {
        Ok(Status {
            message: f.message.or_default()?,
            code: f.code.or_default()?,
        })
    }
}

message_fields! {
    EventFields => Event {
        time_unix_nano: u64 = U64 => "timeUnixNano" | "time_unix_nano",
        name: String = Str => "name",
        attributes: Vec<KeyValue> = ATTRIBUTES => "attributes",
        dropped_attributes_count: u32 = U32 => "droppedAttributesCount" | "dropped_attributes_count",
    }
    finish(f) {
        Ok(Event {
            time_unix_nano: f.time_unix_nano.or_default()?,
            name: f.name.or_default()?,
            attributes: f.attributes.or_default()?,
            dropped_attributes_count: f.dropped_attributes_count.or_default()?,
        })
    }
}

message_fields! {
    LinkFields => Link {
        trace_id: Vec<u8> = Hex => "traceId" | "trace_id",
        span_id: Vec<u8> = Hex => "spanId" | "span_id",
        trace_state: String = Str => "traceState" | "trace_state",
        attributes: Vec<KeyValue> = ATTRIBUTES => "attributes",
        dropped_attributes_count: u32 = U32 => "droppedAttributesCount" | "dropped_attributes_count",
        flags: u32 = U32 => "flags",
    }
    finish(f) {
        Ok(Link {
            trace_id: f.trace_id.or_default()?,
            span_id: f.span_id.or_default()?,
            trace_state: f.trace_state.or_default()?,
            attributes: f.attributes.or_default()?,
            dropped_attributes_count: f.dropped_attributes_count.or_default()?,
            flags: f.flags.or_default()?,
        })
    }
}

// ---------------------------------------------------------------------------
// Attribute values
//
// They nest, so the shapes that recurse read their objects themselves
// rather than through `Message`: a frame a JSON level fewer, as the
// nesting allowed by `DecodeOptions` must fit the stack of a debug build
// too.

/// How deep an AnyValue sits (an attribute's value is at 1). Never more
/// than a few hundred, under the JSON nesting limit; small, to keep the
/// shapes that carry it one word.
type Level = u32;

/// A key and its AnyValue, the value at the level given.
#[derive(Clone, Copy)]
struct KeyValueShape(Level);

impl Shape for KeyValueShape {
    type Out = KeyValue;

    fn expected(self) -> &'static str {
        "object"
    }

    fn object<'de, A: MapAccess<'de>>(
        self,
        mut map: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<KeyValue>>,
    ) -> Result<(), A::Error> {
        let (value_path, key_path) = (path.field("value"), path.field("key"));
        let strindex_path = path.field("keyStrindex");
        let mut value = None;
        let mut key = None;
        let mut key_strindex = Slot::default();
        while let Some(name) = map.next_key_seed(MemberName)? {
            match &*name {
                "value" => map.next_value_seed(ValueSeed {
                    shape: AnyValueShape(self.0),
                    ctx,
                    path: &value_path,
                    out: &mut value,
                })?,
                "key" => map.next_value_seed(ValueSeed {
                    shape: Str,
                    ctx,
                    path: &key_path,
                    out: &mut key,
                })?,
                "keyStrindex" | "key_strindex" => {
                    let out = if &*name == "keyStrindex" {
                        &mut key_strindex.json
                    } else {
                        &mut key_strindex.proto
                    };
                    map.next_value_seed(ValueSeed {
                        shape: I32,
                        ctx,
                        path: &strindex_path,
                        out,
                    })?
                }
                _ => map.next_value_seed(Skip(ctx))?,
            }
        }
        *out = Some(key_value(value, key, key_strindex));
        Ok(())
    }
}

/// In the tree decoder's order: the value, the key, the key's index.
fn key_value(
    value: Option<Decoded<AnyValue>>,
    key: Option<Decoded<String>>,
    key_strindex: Slot<i32>,
) -> Decoded<KeyValue> {
    let value = value.transpose()?;
    Ok(KeyValue {
        key: key.transpose()?.unwrap_or_default(),
        value,
        key_strindex: key_strindex.or_default()?,
    })
}

/// A message's attributes: their values are AnyValues of level 1.
const ATTRIBUTES: List<KeyValueShape> = List(KeyValueShape(1));

/// The member names of an AnyValue in byte order, the order the tree
/// decoder's map kept them in, which decides which two a "sets both" error
/// names.
const MEMBER_NAMES: [(&str, Member); 16] = [
    ("arrayValue", Member::Array),
    ("array_value", Member::Array),
    ("boolValue", Member::Bool),
    ("bool_value", Member::Bool),
    ("bytesValue", Member::Bytes),
    ("bytes_value", Member::Bytes),
    ("doubleValue", Member::Double),
    ("double_value", Member::Double),
    ("intValue", Member::Int),
    ("int_value", Member::Int),
    ("kvlistValue", Member::Kvlist),
    ("kvlist_value", Member::Kvlist),
    ("stringValue", Member::String),
    ("stringValueStrindex", Member::StringStrindex),
    ("string_value", Member::String),
    ("string_value_strindex", Member::StringStrindex),
];

/// Where `name` is in `MEMBER_NAMES`.
fn member_index(name: &str) -> Option<u8> {
    Some(match name {
        "arrayValue" => 0,
        "array_value" => 1,
        "boolValue" => 2,
        "bool_value" => 3,
        "bytesValue" => 4,
        "bytes_value" => 5,
        "doubleValue" => 6,
        "double_value" => 7,
        "intValue" => 8,
        "int_value" => 9,
        "kvlistValue" => 10,
        "kvlist_value" => 11,
        "stringValue" => 12,
        "stringValueStrindex" => 13,
        "string_value" => 14,
        "string_value_strindex" => 15,
        _ => return None,
    })
}

/// One of an AnyValue's alternatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    String,
    Bool,
    Int,
    Double,
    Array,
    Kvlist,
    Bytes,
    StringStrindex,
}

impl Member {
    /// Its lowerCamelCase name, which errors use whichever name the body
    /// gave.
    fn name(self) -> &'static str {
        match self {
            Member::String => "stringValue",
            Member::Bool => "boolValue",
            Member::Int => "intValue",
            Member::Double => "doubleValue",
            Member::Array => "arrayValue",
            Member::Kvlist => "kvlistValue",
            Member::Bytes => "bytesValue",
            Member::StringStrindex => "stringValueStrindex",
        }
    }
}

/// An AnyValue at the level given.
#[derive(Clone, Copy)]
struct AnyValueShape(Level);

/// An AnyValue's non-null members so far, by index in `MEMBER_NAMES`
/// (both names of one alternative count apart, as in the tree decoder's
/// map), each with its last value. A valid AnyValue has one, kept inline.
type Members = SmallVec<[(u8, Decoded<any_value::Value>); 1]>;

impl Shape for AnyValueShape {
    type Out = AnyValue;

    fn expected(self) -> &'static str {
        "object"
    }

    fn refuse(self, ctx: Ctx<'_>, path: &Path<'_>) -> Option<Box<JsonDecodeError>> {
        let max = ctx.max_any_value_depth();
        usize::try_from(self.0)
            .map_or(true, |level| level > max)
            .then(|| error(path, JsonErrorKind::AnyValueTooDeep(max)))
    }

    fn object<'de, A: MapAccess<'de>>(
        self,
        mut map: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<AnyValue>>,
    ) -> Result<(), A::Error> {
        let mut members = Members::new();
        while let Some(name) = map.next_key_seed(MemberName)? {
            let Some(index) = member_index(&name) else {
                map.next_value_seed(Skip(ctx))?;
                continue;
            };
            let member = MEMBER_NAMES[usize::from(index)].1;
            let mut decoded = None;
            map.next_value_seed(ValueSeed {
                shape: MemberShape {
                    member,
                    level: self.0,
                },
                ctx,
                path: &path.field(member.name()),
                out: &mut decoded,
            })?;
            set_member(&mut members, index, decoded);
        }
        *out = Some(any_value(members, path));
        Ok(())
    }
}

fn set_member(members: &mut Members, index: u8, decoded: Option<Decoded<any_value::Value>>) {
    members.retain(|(i, _)| *i != index);
    if let Some(decoded) = decoded {
        members.push((index, decoded));
    }
}

/// The first member in name order is the value, unless it is an error; a
/// second one is an error.
fn any_value(mut members: Members, path: &Path<'_>) -> Decoded<AnyValue> {
    members.sort_unstable_by_key(|(i, _)| *i);
    let mut members = members.into_iter();
    let Some((first, value)) = members.next() else {
        return Ok(AnyValue { value: None });
    };
    let value = value?;
    if let Some((second, _)) = members.next() {
        let name = |i: u8| MEMBER_NAMES[usize::from(i)].1.name();
        return Err(error(
            path,
            JsonErrorKind::MultipleValues(name(first), name(second)),
        ));
    }
    Ok(AnyValue { value: Some(value) })
}

/// The value of one AnyValue member, the AnyValue at `level`.
#[derive(Clone, Copy)]
struct MemberShape {
    member: Member,
    level: Level,
}

impl Shape for MemberShape {
    type Out = any_value::Value;

    fn expected(self) -> &'static str {
        match self.member {
            Member::String | Member::Bytes => "string",
            Member::Bool => "boolean",
            Member::Int | Member::StringStrindex => "integer",
            Member::Double => "number",
            Member::Array | Member::Kvlist => "object",
        }
    }

    fn scalar(self, value: Scalar<'_>, path: &Path<'_>) -> Decoded<any_value::Value> {
        use any_value::Value as V;
        match self.member {
            Member::String => Str.scalar(value, path).map(V::StringValue),
            Member::Bool => Bool.scalar(value, path).map(V::BoolValue),
            Member::Int => I64.scalar(value, path).map(V::IntValue),
            Member::Double => Double.scalar(value, path).map(V::DoubleValue),
            Member::Bytes => Base64.scalar(value, path).map(V::BytesValue),
            Member::StringStrindex => I32.scalar(value, path).map(V::StringValueStrindex),
            Member::Array | Member::Kvlist => Err(self.wrong(path, value.type_name())),
        }
    }

    /// An array or kvlist value: an object whose one field is `values`.
    fn object<'de, A: MapAccess<'de>>(
        self,
        map: A,
        ctx: Ctx<'_>,
        path: &Path<'_>,
        out: &mut Option<Decoded<any_value::Value>>,
    ) -> Result<(), A::Error> {
        use any_value::Value as V;
        let below = self.level + 1;
        *out = Some(match self.member {
            Member::Array => values(map, List(AnyValueShape(below)), ctx, path)?
                .map(|values| V::ArrayValue(ArrayValue { values })),
            Member::Kvlist => values(map, List(KeyValueShape(below)), ctx, path)?
                .map(|values| V::KvlistValue(KeyValueList { values })),
            _ => {
                skip_members(map, ctx)?;
                Err(self.wrong(path, "object"))
            }
        });
        Ok(())
    }
}

/// The `values` of an array or kvlist value's object.
fn values<'de, A: MapAccess<'de>, S: Shape>(
    mut map: A,
    list: List<S>,
    ctx: Ctx<'_>,
    path: &Path<'_>,
) -> Result<Decoded<Vec<S::Out>>, A::Error> {
    let values_path = path.field("values");
    let mut values = None;
    while let Some(name) = map.next_key_seed(MemberName)? {
        if &*name == "values" {
            map.next_value_seed(ValueSeed {
                shape: list,
                ctx,
                path: &values_path,
                out: &mut values,
            })?;
        } else {
            map.next_value_seed(Skip(ctx))?;
        }
    }
    Ok(values.transpose().map(Option::unwrap_or_default))
}

#[cfg(test)]
mod tests {
    use super::{member_index, MEMBER_NAMES};

    #[test]
    fn member_names_are_in_byte_order() {
        for pair in MEMBER_NAMES.windows(2) {
            assert!(pair[0].0.as_bytes() < pair[1].0.as_bytes(), "{pair:?}");
        }
        for (index, (name, _)) in MEMBER_NAMES.iter().enumerate() {
            assert_eq!(member_index(name).map(usize::from), Some(index), "{name}");
        }
    }
}
