//! What the ingest walk checks in every span, resource and scope, so that
//! every span accepted is one the evaluator and the downstream can read.
//!
//! The walk reads every span anyway (for its IDs), so the checks ride on that
//! one pass: a hand-written protobuf scanner goes through every field of
//! `Span`, `Resource` and `InstrumentationScope` and of what they nest
//! (`KeyValue`, `AnyValue`, `ArrayValue`, `KeyValueList`, `Span.Event`,
//! `Span.Link`, `Status`, `EntityRef`) and checks exactly what prost's decode
//! of those messages checks (opentelemetry-proto 0.33): each known field's
//! wire type, every `string` field's UTF-8, varints, fixed64 and fixed32
//! fields read as such, the framing of nested messages, unknown fields
//! skipped as prost skips them (groups included), and prost's bound of 100
//! nested messages, counted from the request as the downstream decodes it
//! (the evaluator decodes a span on its own: that allows more). On the way
//! it reads the span's IDs and checks the receiver's limits: how deep
//! `AnyValue`s nest, how many attributes one list holds, how large one key
//! or value is. Nothing is copied or allocated unless something is wrong.
//! Recursion follows `AnyValue` nesting and stops one level past
//! `max_attribute_depth`, so a hostile body cannot make it deep.
//!
//! Two kinds of trouble, answered differently:
//! - framing errors (bad varints, lengths past the end, a known field with
//!   the wrong wire type, a stray end-group tag) are [`NotOtlp`]: the
//!   request is not OTLP and is refused whole;
//! - a well-framed span with a `string` field that is not UTF-8, or over a
//!   limit, is a [`Refusal`]: that span alone (or every span sent with the
//!   resource or scope at fault) is rejected through OTLP partial success,
//!   with the path of the field. A span that prost could not decode would
//!   otherwise be accepted, then be unreadable to the evaluator and make the
//!   downstream's decode of the whole forwarded batch fail.
//!
//! The scan goes on after a refusal, so that framing is checked everywhere
//! whatever the order of the fields, and reports the first refusal. It
//! notes no path on the way: a span, resource or scope found wrong is
//! scanned a second time, noting where, for the message.
//! `otlp::tests::scan_parity` checks against prost that the scan takes a
//! span, resource or scope exactly when prost decodes the request carrying
//! it, and that the evaluator's decoder reads every span it takes.

use std::fmt;

/// The receiver's per-span limits (`receivers.otlp.limits`), in the form the
/// walk needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Deepest `AnyValue` nesting: an attribute's value is level 1, an
    /// element of an array value or a value in a kvlist value one deeper.
    pub max_attribute_depth: usize,
    /// Most attributes in one list: a span's, an event's, a link's, the
    /// resource's or the scope's.
    pub max_attributes: usize,
    /// Largest attribute key, string value or bytes value, in bytes.
    pub max_attribute_value_bytes: usize,
}

/// Deepest nesting [`WalkLimits::max_attribute_depth`] may allow: each level
/// is three nested protobuf messages (KeyValueList, KeyValue, AnyValue), and
/// the decoders stop at 100 nested messages, so a deeper value could never
/// be read. (At this depth an event's or a link's attribute can still reach
/// the bound, counted from the request: the scan then refuses the request,
/// as prost would.)
pub const MAX_ATTRIBUTE_DEPTH_CEILING: usize = 32;

impl Default for WalkLimits {
    /// Far above what any SDK sends: the OpenTelemetry SDKs cap a span at 128
    /// attributes by default, and nest values once or twice at most.
    fn default() -> Self {
        Self {
            max_attribute_depth: 16,
            max_attributes: 1024,
            max_attribute_value_bytes: 1024 * 1024,
        }
    }
}

/// Which limit a span broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    TooDeep,
    TooManyAttributes,
    ValueTooLarge,
}

/// A span (or the resource or scope it came with) over one of the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The limit that was passed.
    pub limit: usize,
    /// For sizes and counts, what was seen (at least `limit + 1`).
    pub seen: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ViolationKind::TooDeep => write!(
                f,
                "attribute value nested deeper than receivers.otlp.limits.max_attribute_depth ({})",
                self.limit
            ),
            ViolationKind::TooManyAttributes => write!(
                f,
                "more than receivers.otlp.limits.max_attributes ({}) attributes in one list",
                self.limit
            ),
            ViolationKind::ValueTooLarge => write!(
                f,
                "attribute key or value of {} bytes, over receivers.otlp.limits.max_attribute_value_bytes ({})",
                self.seen, self.limit
            ),
        }
    }
}

/// Why well-framed data cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Over one of the receiver's limits.
    Limit(Violation),
    /// A `string` field that is not UTF-8: prost refuses to decode the
    /// message, as do the other protobuf libraries that check proto3
    /// strings (Go's, the Collector's).
    NotUtf8,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Limit(v) => v.fmt(f),
            // prost's own words.
            Problem::NotUtf8 => f.write_str("invalid string value: data is not UTF-8 encoded"),
        }
    }
}

/// One step of a [`FieldPath`], named as in the `.proto` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `name`
    Field(&'static str),
    /// `attributes[2]`
    Item(&'static str, u32),
    /// A field the message does not define, by number.
    Unknown(u32),
}

/// Where a field is in a span, resource or scope: `attributes[2].value.
/// string_value`. Empty for the message itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath {
    /// Innermost step first: the path is built as the scan returns.
    steps: Vec<Step>,
}

impl FieldPath {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn push_outer(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// `prefix` (the message's own path in the request) joined with this
    /// path, as a partial-success message or an error names the field.
    pub fn under(&self, prefix: &str) -> String {
        if self.is_empty() {
            prefix.to_owned()
        } else if prefix.is_empty() {
            self.to_string()
        } else {
            format!("{prefix}.{self}")
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match step {
                Step::Field(name) => f.write_str(name)?,
                Step::Item(name, at) => write!(f, "{name}[{at}]")?,
                Step::Unknown(field) => write!(f, "<unknown field {field}>")?,
            }
        }
        Ok(())
    }
}

/// A span, resource or scope that is well framed but cannot be taken:
/// what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub problem: Problem,
    pub path: FieldPath,
}

impl Refusal {
    /// The partial-success message for it, the message at `prefix`.
    pub fn message(&self, prefix: &str) -> String {
        format!("{}: {}", self.path.under(prefix), self.problem)
    }
}

/// Framing that is not OTLP, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOtlp {
    pub error: Malformed,
    pub path: FieldPath,
}

impl fmt::Display for NotOtlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            self.error.fmt(f)
        } else {
            write!(f, "{}: {}", self.path, self.error)
        }
    }
}

/// A span's IDs as slices of its encoding (empty when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanKeysRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
}

/// What a span scan found: its IDs (read even when it is refused, so that
/// its trace can be marked incomplete) and why it cannot be taken, if so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedSpan<'a> {
    pub keys: SpanKeysRef<'a>,
    pub refusal: Option<Refusal>,
}

pub use super::wire::Malformed;
use super::wire::{expect, Reader, FIXED32, FIXED64, LEN, RECURSION_LIMIT, VARINT};

type Scanned<T = ()> = Result<T, Malformed>;

/// How deep a span is nested in the request that carries it
/// (`ExportTraceServiceRequest` > `ResourceSpans` > `ScopeSpans` > `Span`),
/// and a resource and a scope: prost's bound of 100 nested messages is
/// counted from the request, as the downstream decodes it. The evaluator
/// decodes each span (or resource) on its own, which allows more.
const SPAN_LEVEL: usize = 3;
const SCOPE_LEVEL: usize = 3;
const RESOURCE_LEVEL: usize = 2;

use Step::{Field, Item, Unknown};

/// One scan: the limits, the first refusal met, and the path of a framing
/// error as it unwinds. With `PATH` false no path is noted, which is what
/// the spans taken cost; a span found wrong is scanned again with it.
struct Scan<'l, const PATH: bool> {
    limits: &'l WalkLimits,
    refusal: Option<Refusal>,
    broken: FieldPath,
}

fn bytes<'a>(r: &mut Reader<'a>, wire: u8) -> Scanned<&'a [u8]> {
    expect(wire, LEN)?;
    r.len_delimited()
}

fn varint(r: &mut Reader<'_>, wire: u8) -> Scanned {
    expect(wire, VARINT)?;
    r.varint().map(drop)
}

fn fixed64(r: &mut Reader<'_>, wire: u8) -> Scanned {
    expect(wire, FIXED64)?;
    r.take(8).map(drop)
}

fn fixed32(r: &mut Reader<'_>, wire: u8) -> Scanned {
    expect(wire, FIXED32)?;
    r.take(4).map(drop)
}

/// Whether a `string` field's bytes are UTF-8. Most are short and ASCII:
/// that is tested first, without a branch per byte.
#[inline(always)]
fn utf8(s: &[u8]) -> bool {
    ascii(s) || std::str::from_utf8(s).is_ok()
}

/// Whether no byte has its high bit set, with few branches however long
/// the string: its bytes ORed together eight at a time (the last eight
/// overlapping the rest), below eight two overlapping halves of four,
/// below four the first, middle and last byte.
#[inline(always)]
fn ascii(s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = s.len();
    let word = |b: &[u8]| <[u8; 8]>::try_from(b).map_or(HIGH, u64::from_le_bytes);
    let half = |b: &[u8]| <[u8; 4]>::try_from(b).map_or(0x8080_8080, u32::from_le_bytes);
    let acc = if n >= 8 {
        let mut acc = word(&s[n - 8..]);
        for c in s.chunks_exact(8) {
            acc |= word(c);
        }
        acc
    } else if n >= 4 {
        u64::from(half(&s[..4]) | half(&s[n - 4..]))
    } else if n > 0 {
        u64::from(s[0] | s[n / 2] | s[n - 1])
    } else {
        0
    };
    acc & HIGH == 0
}

impl<'l, const PATH: bool> Scan<'l, PATH> {
    fn new(limits: &'l WalkLimits) -> Self {
        Self {
            limits,
            refusal: None,
            broken: FieldPath::default(),
        }
    }

    /// Notes a refusal, unless one was met before (the first is reported);
    /// the steps to it are added as the scan returns.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, problem: Problem) {
        if self.refusal.is_none() {
            self.refusal = Some(Refusal {
                problem,
                path: FieldPath::default(),
            });
        }
    }

    #[cold]
    #[inline(never)]
    fn violation(&mut self, kind: ViolationKind, limit: usize, seen: usize) {
        self.refuse(Problem::Limit(Violation { kind, limit, seen }));
    }

    /// Reads the field at `step` with `f`: a refusal first met inside it,
    /// or a framing error, gets `step` on its path.
    #[inline(always)]
    fn at<T>(&mut self, step: Step, f: impl FnOnce(&mut Self) -> Scanned<T>) -> Scanned<T> {
        if !PATH {
            return f(self);
        }
        let clean = self.refusal.is_none();
        let out = f(self);
        if out.is_err() {
            self.broken.push_outer(step);
        } else if clean {
            if let Some(r) = self.refusal.as_mut() {
                r.path.push_outer(step);
            }
        }
        out
    }

    /// A `string` field; `sized`: an attribute key or string value, held to
    /// `max_attribute_value_bytes`.
    #[inline(always)]
    fn string(&mut self, r: &mut Reader<'_>, wire: u8, sized: bool) -> Scanned {
        let s = bytes(r, wire)?;
        if sized && s.len() > self.limits.max_attribute_value_bytes {
            self.violation(
                ViolationKind::ValueTooLarge,
                self.limits.max_attribute_value_bytes,
                s.len(),
            );
        } else if !utf8(s) {
            self.refuse(Problem::NotUtf8);
        }
        Ok(())
    }

    /// An attribute's `bytes_value`, held to `max_attribute_value_bytes`.
    fn sized_bytes(&mut self, r: &mut Reader<'_>, wire: u8) -> Scanned {
        let b = bytes(r, wire)?;
        if b.len() > self.limits.max_attribute_value_bytes {
            self.violation(
                ViolationKind::ValueTooLarge,
                self.limits.max_attribute_value_bytes,
                b.len(),
            );
        }
        Ok(())
    }

    /// A nested message at `level` (counted from the request: a span is
    /// at [`SPAN_LEVEL`]), read with `f`: past prost's bound of nested
    /// messages the request is not decodable.
    #[inline(always)]
    fn message<'a>(
        &mut self,
        r: &mut Reader<'a>,
        wire: u8,
        level: usize,
        f: impl FnOnce(&mut Self, &'a [u8]) -> Scanned,
    ) -> Scanned {
        let buf = bytes(r, wire)?;
        if level > RECURSION_LIMIT {
            return Err(Malformed("recursion limit reached"));
        }
        f(self, buf)
    }

    /// The `index`th `KeyValue` of an attribute list (a span's, an
    /// event's, ...), at `level`.
    #[inline]
    fn attribute(&mut self, r: &mut Reader<'_>, wire: u8, index: u32, level: usize) -> Scanned {
        let count = index as usize + 1;
        if count > self.limits.max_attributes {
            self.violation(
                ViolationKind::TooManyAttributes,
                self.limits.max_attributes,
                count,
            );
        }
        self.message(r, wire, level, |s, b| s.key_value(b, level, 1))
    }

    /// `KeyValue { string key = 1; AnyValue value = 2; int32 key_strindex
    /// = 3 }` at `level`, its value at attribute depth `depth`.
    fn key_value(&mut self, buf: &[u8], level: usize, depth: usize) -> Scanned {
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => self.at(Field("key"), |s| s.string(&mut r, wire, true))?,
                2 => self.at(Field("value"), |s| {
                    s.message(&mut r, wire, level + 1, |s, b| {
                        s.any_value(b, level + 1, depth)
                    })
                })?,
                3 => self.at(Field("key_strindex"), |_| varint(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, level))?,
            }
        }
        Ok(())
    }

    /// `AnyValue`: string 1, bool 2, int 3, double 4, array 5, kvlist 6,
    /// bytes 7, string_value_strindex 8 (int32). A value deeper than the
    /// limit is not read: its span is refused anyway.
    fn any_value(&mut self, buf: &[u8], level: usize, depth: usize) -> Scanned {
        if depth > self.limits.max_attribute_depth {
            self.violation(
                ViolationKind::TooDeep,
                self.limits.max_attribute_depth,
                depth,
            );
            return Ok(());
        }
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => self.at(Field("string_value"), |s| s.string(&mut r, wire, true))?,
                2 => self.at(Field("bool_value"), |_| varint(&mut r, wire))?,
                3 => self.at(Field("int_value"), |_| varint(&mut r, wire))?,
                4 => self.at(Field("double_value"), |_| fixed64(&mut r, wire))?,
                5 => self.at(Field("array_value"), |s| {
                    s.message(&mut r, wire, level + 1, |s, b| {
                        s.list(b, level + 1, depth, false)
                    })
                })?,
                6 => self.at(Field("kvlist_value"), |s| {
                    s.message(&mut r, wire, level + 1, |s, b| {
                        s.list(b, level + 1, depth, true)
                    })
                })?,
                7 => self.at(Field("bytes_value"), |s| s.sized_bytes(&mut r, wire))?,
                8 => self.at(Field("string_value_strindex"), |_| varint(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, level))?,
            }
        }
        Ok(())
    }

    /// `ArrayValue { repeated AnyValue values = 1 }` or (`pairs`)
    /// `KeyValueList { repeated KeyValue values = 1 }` at `level`, inside a
    /// value at `depth`: its items are one level deeper.
    fn list(&mut self, buf: &[u8], level: usize, depth: usize, pairs: bool) -> Scanned {
        let mut r = Reader::new(buf);
        let mut items = 0u32;
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            if field != 1 {
                self.at(Unknown(field), |_| r.skip(field, wire, level))?;
                continue;
            }
            let at = items;
            items = items.wrapping_add(1);
            self.at(Item("values", at), |s| {
                s.message(&mut r, wire, level + 1, |s, b| {
                    if pairs {
                        s.key_value(b, level + 1, depth + 1)
                    } else {
                        s.any_value(b, level + 1, depth + 1)
                    }
                })
            })?;
        }
        Ok(())
    }

    /// `Span`: trace_id 1, span_id 2, trace_state 3, parent_span_id 4,
    /// name 5, kind 6, start and end 7 and 8 (fixed64), attributes 9,
    /// dropped_attributes_count 10, events 11, dropped_events_count 12,
    /// links 13, dropped_links_count 14, status 15, flags 16 (fixed32).
    fn span<'a>(&mut self, buf: &'a [u8]) -> Scanned<SpanKeysRef<'a>> {
        const L: usize = SPAN_LEVEL;
        let mut keys = SpanKeysRef::default();
        let (mut attributes, mut events, mut links) = (0u32, 0u32, 0u32);
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            // proto3: the last occurrence of a scalar field wins.
            match field {
                1 => keys.trace_id = self.at(Field("trace_id"), |_| bytes(&mut r, wire))?,
                2 => keys.span_id = self.at(Field("span_id"), |_| bytes(&mut r, wire))?,
                3 => self.at(Field("trace_state"), |s| s.string(&mut r, wire, false))?,
                4 => {
                    keys.parent_span_id =
                        self.at(Field("parent_span_id"), |_| bytes(&mut r, wire))?;
                }
                5 => self.at(Field("name"), |s| s.string(&mut r, wire, false))?,
                6 => self.at(Field("kind"), |_| varint(&mut r, wire))?,
                7 => self.at(Field("start_time_unix_nano"), |_| fixed64(&mut r, wire))?,
                8 => self.at(Field("end_time_unix_nano"), |_| fixed64(&mut r, wire))?,
                9 => {
                    let i = attributes;
                    attributes = attributes.wrapping_add(1);
                    self.at(Item("attributes", i), |s| {
                        s.attribute(&mut r, wire, i, L + 1)
                    })?;
                }
                10 => self.at(Field("dropped_attributes_count"), |_| varint(&mut r, wire))?,
                11 => {
                    let i = events;
                    events = events.wrapping_add(1);
                    self.at(Item("events", i), |s| {
                        s.message(&mut r, wire, L + 1, |s, b| s.event(b, L + 1))
                    })?;
                }
                12 => self.at(Field("dropped_events_count"), |_| varint(&mut r, wire))?,
                13 => {
                    let i = links;
                    links = links.wrapping_add(1);
                    self.at(Item("links", i), |s| {
                        s.message(&mut r, wire, L + 1, |s, b| s.link(b, L + 1))
                    })?;
                }
                14 => self.at(Field("dropped_links_count"), |_| varint(&mut r, wire))?,
                15 => self.at(Field("status"), |s| {
                    s.message(&mut r, wire, L + 1, |s, b| s.status(b, L + 1))
                })?,
                16 => self.at(Field("flags"), |_| fixed32(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, L))?,
            }
        }
        Ok(keys)
    }

    /// `Span.Event` at `level`: time_unix_nano 1 (fixed64), name 2,
    /// attributes 3, dropped_attributes_count 4.
    fn event(&mut self, buf: &[u8], level: usize) -> Scanned {
        let mut r = Reader::new(buf);
        let mut attributes = 0u32;
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => self.at(Field("time_unix_nano"), |_| fixed64(&mut r, wire))?,
                2 => self.at(Field("name"), |s| s.string(&mut r, wire, false))?,
                3 => {
                    let i = attributes;
                    attributes = attributes.wrapping_add(1);
                    self.at(Item("attributes", i), |s| {
                        s.attribute(&mut r, wire, i, level + 1)
                    })?;
                }
                4 => self.at(Field("dropped_attributes_count"), |_| varint(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, level))?,
            }
        }
        Ok(())
    }

    /// `Span.Link` at `level`: trace_id 1, span_id 2, trace_state 3,
    /// attributes 4, dropped_attributes_count 5, flags 6 (fixed32).
    fn link(&mut self, buf: &[u8], level: usize) -> Scanned {
        let mut r = Reader::new(buf);
        let mut attributes = 0u32;
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => self.at(Field("trace_id"), |_| bytes(&mut r, wire).map(drop))?,
                2 => self.at(Field("span_id"), |_| bytes(&mut r, wire).map(drop))?,
                3 => self.at(Field("trace_state"), |s| s.string(&mut r, wire, false))?,
                4 => {
                    let i = attributes;
                    attributes = attributes.wrapping_add(1);
                    self.at(Item("attributes", i), |s| {
                        s.attribute(&mut r, wire, i, level + 1)
                    })?;
                }
                5 => self.at(Field("dropped_attributes_count"), |_| varint(&mut r, wire))?,
                6 => self.at(Field("flags"), |_| fixed32(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, level))?,
            }
        }
        Ok(())
    }

    /// `Status` at `level`: message 2, code 3 (field 1 is reserved).
    fn status(&mut self, buf: &[u8], level: usize) -> Scanned {
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                2 => self.at(Field("message"), |s| s.string(&mut r, wire, false))?,
                3 => self.at(Field("code"), |_| varint(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, level))?,
            }
        }
        Ok(())
    }

    /// `Resource`: attributes 1, dropped_attributes_count 2, entity_refs 3.
    fn resource(&mut self, buf: &[u8]) -> Scanned {
        const L: usize = RESOURCE_LEVEL;
        let mut r = Reader::new(buf);
        let (mut attributes, mut entities) = (0u32, 0u32);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => {
                    let i = attributes;
                    attributes = attributes.wrapping_add(1);
                    self.at(Item("attributes", i), |s| {
                        s.attribute(&mut r, wire, i, L + 1)
                    })?;
                }
                2 => self.at(Field("dropped_attributes_count"), |_| varint(&mut r, wire))?,
                3 => {
                    let i = entities;
                    entities = entities.wrapping_add(1);
                    self.at(Item("entity_refs", i), |s| {
                        s.message(&mut r, wire, L + 1, |s, b| s.entity_ref(b, L + 1))
                    })?;
                }
                _ => self.at(Unknown(field), |_| r.skip(field, wire, L))?,
            }
        }
        Ok(())
    }

    /// `EntityRef` at `level`: schema_url 1, type 2, id_keys 3 and
    /// description_keys 4 (repeated strings).
    fn entity_ref(&mut self, buf: &[u8], level: usize) -> Scanned {
        let mut r = Reader::new(buf);
        let (mut ids, mut descriptions) = (0u32, 0u32);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => self.at(Field("schema_url"), |s| s.string(&mut r, wire, false))?,
                2 => self.at(Field("type"), |s| s.string(&mut r, wire, false))?,
                3 => {
                    let i = ids;
                    ids = ids.wrapping_add(1);
                    self.at(Item("id_keys", i), |s| s.string(&mut r, wire, false))?;
                }
                4 => {
                    let i = descriptions;
                    descriptions = descriptions.wrapping_add(1);
                    self.at(Item("description_keys", i), |s| {
                        s.string(&mut r, wire, false)
                    })?;
                }
                _ => self.at(Unknown(field), |_| r.skip(field, wire, level))?,
            }
        }
        Ok(())
    }

    /// `InstrumentationScope`: name 1, version 2, attributes 3,
    /// dropped_attributes_count 4.
    fn scope(&mut self, buf: &[u8]) -> Scanned {
        const L: usize = SCOPE_LEVEL;
        let mut r = Reader::new(buf);
        let mut attributes = 0u32;
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => self.at(Field("name"), |s| s.string(&mut r, wire, false))?,
                2 => self.at(Field("version"), |s| s.string(&mut r, wire, false))?,
                3 => {
                    let i = attributes;
                    attributes = attributes.wrapping_add(1);
                    self.at(Item("attributes", i), |s| {
                        s.attribute(&mut r, wire, i, L + 1)
                    })?;
                }
                4 => self.at(Field("dropped_attributes_count"), |_| varint(&mut r, wire))?,
                _ => self.at(Unknown(field), |_| r.skip(field, wire, L))?,
            }
        }
        Ok(())
    }

    /// The scan's outcome: `found` and the refusal, or where the framing
    /// broke.
    fn finish<T>(self, found: Scanned<T>) -> Result<(T, Option<Refusal>), NotOtlp> {
        match found {
            Ok(t) => Ok((t, self.refusal)),
            Err(error) => Err(NotOtlp {
                error,
                path: self.broken,
            }),
        }
    }
}

/// Checks a `string` field the walk reads itself (a `schema_url` of
/// `ResourceSpans` or `ScopeSpans`, named `name`).
pub fn check_string(bytes: &[u8], name: &'static str) -> Option<Refusal> {
    (!utf8(bytes)).then(|| Refusal {
        problem: Problem::NotUtf8,
        path: FieldPath {
            steps: vec![Field(name)],
        },
    })
}

/// Scans with `scan` (`Scan::span` and the like); if anything is wrong,
/// scans again noting where.
fn scan_twice<T>(
    limits: &WalkLimits,
    scan: impl Fn(&mut Scan<'_, false>) -> Scanned<T>,
    again: impl Fn(&mut Scan<'_, true>) -> Scanned<T>,
) -> Result<(T, Option<Refusal>), NotOtlp> {
    let mut fast = Scan::<false>::new(limits);
    match scan(&mut fast) {
        Ok(found) if fast.refusal.is_none() => Ok((found, None)),
        _ => {
            let mut slow = Scan::<true>::new(limits);
            let found = again(&mut slow);
            slow.finish(found)
        }
    }
}

/// Checks an encoded `Resource`.
pub fn scan_resource(buf: &[u8], limits: &WalkLimits) -> Result<Option<Refusal>, NotOtlp> {
    scan_twice(limits, |s| s.resource(buf), |s| s.resource(buf)).map(|((), refusal)| refusal)
}

/// Checks an encoded `InstrumentationScope`.
pub fn scan_scope(buf: &[u8], limits: &WalkLimits) -> Result<Option<Refusal>, NotOtlp> {
    scan_twice(limits, |s| s.scope(buf), |s| s.scope(buf)).map(|((), refusal)| refusal)
}

/// Checks an encoded `Span` and reads its IDs.
pub fn scan_span<'a>(buf: &'a [u8], limits: &WalkLimits) -> Result<ScannedSpan<'a>, NotOtlp> {
    scan_twice(limits, |s| s.span(buf), |s| s.span(buf))
        .map(|(keys, refusal)| ScannedSpan { keys, refusal })
}

#[cfg(test)]
pub(crate) fn ascii_for_test(s: &[u8]) -> bool {
    ascii(s)
}
