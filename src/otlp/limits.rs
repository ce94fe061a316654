//! Input limits checked while a request is walked: how deep `AnyValue`s
//! nest, how many attributes one list holds, how large one key or value is.
//!
//! The walk reads every span anyway (for its IDs), so the checks ride on that
//! one pass: a hand-written protobuf scanner reads the span's IDs and, on the
//! way, steps into its attributes, events and links. Nothing is copied or
//! allocated; a value is only looked at for its length. Recursion follows
//! `AnyValue` nesting and stops one level past the limit, so a hostile body
//! cannot make it deep.
//!
//! Framing errors (bad varints, lengths past the end, wrong wire types on the
//! fields read) are [`Malformed`]: the request is not OTLP and is refused
//! whole. A well-formed span over a limit is a [`Violation`]: that span alone
//! is rejected through OTLP partial success.

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
/// the decoders used for evaluation stop at 100 nested messages, so a deeper
/// value would pass the receiver and then fail to decode.
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

/// What a span scan found: its keys, or the limit it broke.
pub type Scanned<'a> = Result<SpanKeysRef<'a>, Violation>;

/// A span's IDs as slices of its encoding (empty when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanKeysRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
}

pub use super::wire::Malformed;
use super::wire::{expect, Reader, FIXED64, LEN, VARINT};

/// `Result<Result<(), Violation>, Malformed>` with `?` for both layers.
enum Stop {
    Malformed(Malformed),
    Violation(Violation),
}

impl From<Malformed> for Stop {
    fn from(m: Malformed) -> Self {
        Stop::Malformed(m)
    }
}

fn violation(kind: ViolationKind, limit: usize, seen: usize) -> Stop {
    Stop::Violation(Violation { kind, limit, seen })
}

fn split(r: Result<(), Stop>) -> Result<Result<(), Violation>, Malformed> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(Stop::Violation(v)) => Ok(Err(v)),
        Err(Stop::Malformed(m)) => Err(m),
    }
}

fn check_len(len: usize, limits: &WalkLimits) -> Result<(), Stop> {
    if len > limits.max_attribute_value_bytes {
        return Err(violation(
            ViolationKind::ValueTooLarge,
            limits.max_attribute_value_bytes,
            len,
        ));
    }
    Ok(())
}

/// Counts one more attribute of a list.
fn count_attribute(count: &mut usize, limits: &WalkLimits) -> Result<(), Stop> {
    *count += 1;
    if *count > limits.max_attributes {
        return Err(violation(
            ViolationKind::TooManyAttributes,
            limits.max_attributes,
            *count,
        ));
    }
    Ok(())
}

/// `KeyValue { key = 1; value = 2 }`, its value at `level`.
fn scan_key_value(buf: &[u8], level: usize, limits: &WalkLimits) -> Result<(), Stop> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                expect(wire, LEN)?;
                check_len(r.len_delimited()?.len(), limits)?;
            }
            2 => {
                expect(wire, LEN)?;
                scan_any_value(r.len_delimited()?, level, limits)?;
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(())
}

/// `AnyValue`: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7.
fn scan_any_value(buf: &[u8], level: usize, limits: &WalkLimits) -> Result<(), Stop> {
    if level > limits.max_attribute_depth {
        return Err(violation(
            ViolationKind::TooDeep,
            limits.max_attribute_depth,
            level,
        ));
    }
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 | 7 => {
                expect(wire, LEN)?;
                check_len(r.len_delimited()?.len(), limits)?;
            }
            2 | 3 => {
                expect(wire, VARINT)?;
                r.varint()?;
            }
            4 => {
                expect(wire, FIXED64)?;
                r.take(8)?;
            }
            // ArrayValue { repeated AnyValue values = 1 } and
            // KeyValueList { repeated KeyValue values = 1 }: one level deeper.
            5 | 6 => {
                expect(wire, LEN)?;
                let mut inner = Reader::new(r.len_delimited()?);
                while !inner.is_empty() {
                    let (f, w) = inner.key()?;
                    if f != 1 {
                        inner.skip(f, w, 0)?;
                        continue;
                    }
                    expect(w, LEN)?;
                    let item = inner.len_delimited()?;
                    if field == 5 {
                        scan_any_value(item, level + 1, limits)?;
                    } else {
                        scan_key_value(item, level + 1, limits)?;
                    }
                }
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(())
}

/// A message whose only field of interest is its attribute list (field
/// `attributes_field`): an event, a link, a resource, a scope.
fn scan_attributes_of(buf: &[u8], attributes_field: u32, limits: &WalkLimits) -> Result<(), Stop> {
    let mut r = Reader::new(buf);
    let mut count = 0;
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        if field == attributes_field {
            expect(wire, LEN)?;
            count_attribute(&mut count, limits)?;
            scan_key_value(r.len_delimited()?, 1, limits)?;
        } else {
            r.skip(field, wire, 0)?;
        }
    }
    Ok(())
}

/// Checks an encoded `Resource` (attributes = 1).
pub fn scan_resource(buf: &[u8], limits: &WalkLimits) -> Result<Result<(), Violation>, Malformed> {
    split(scan_attributes_of(buf, 1, limits))
}

/// Checks an encoded `InstrumentationScope` (attributes = 3).
pub fn scan_scope(buf: &[u8], limits: &WalkLimits) -> Result<Result<(), Violation>, Malformed> {
    split(scan_attributes_of(buf, 3, limits))
}

/// Reads an encoded `Span`'s IDs and checks its attributes, its events'
/// (field 11, attributes = 3) and its links' (field 13, attributes = 4).
/// Once a limit is broken the rest of the span is not read: it is rejected
/// anyway.
pub fn scan_span<'a>(buf: &'a [u8], limits: &WalkLimits) -> Result<Scanned<'a>, Malformed> {
    let mut keys = SpanKeysRef::default();
    let mut attributes = 0;
    let mut r = Reader::new(buf);
    let run = (|| -> Result<(), Stop> {
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 | 2 | 4 => {
                    expect(wire, LEN)?;
                    let v = r.len_delimited()?;
                    // proto3: the last occurrence of a scalar field wins.
                    match field {
                        1 => keys.trace_id = v,
                        2 => keys.span_id = v,
                        _ => keys.parent_span_id = v,
                    }
                }
                9 => {
                    expect(wire, LEN)?;
                    count_attribute(&mut attributes, limits)?;
                    scan_key_value(r.len_delimited()?, 1, limits)?;
                }
                11 => {
                    expect(wire, LEN)?;
                    scan_attributes_of(r.len_delimited()?, 3, limits)?;
                }
                13 => {
                    expect(wire, LEN)?;
                    scan_attributes_of(r.len_delimited()?, 4, limits)?;
                }
                _ => r.skip(field, wire, 0)?,
            }
        }
        Ok(())
    })();
    match run {
        Ok(()) => Ok(Ok(keys)),
        Err(Stop::Violation(v)) => Ok(Err(v)),
        Err(Stop::Malformed(m)) => Err(m),
    }
}
