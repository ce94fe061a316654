//! Typed attribute values and the rules for comparing them: coercion only
//! where it is unambiguous (an integer with `500`, `"500"` with `500` only
//! because it parses, a duration with `500ms`).

use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smol_str::SmolStr;

use crate::model::ast::{ArithOp, CmpOp, Literal};
use crate::model::format_duration;
use crate::model::parse::parse_duration;

/// A value read from a span, a variable or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Inline up to 23 bytes, shared beyond: cloning never copies a long
    /// string, and building a trace allocates nothing for a short one.
    Str(SmolStr),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(Duration),
    Array(Vec<Value>),
    /// OTLP `KvlistValue`, in its order.
    Map(Vec<(Arc<str>, Value)>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(SmolStr::new(s))
    }

    pub fn from_literal(l: &Literal) -> Value {
        match l {
            Literal::Str(s) => Value::str(s),
            Literal::Int(i) => Value::Int(*i),
            Literal::Float(x) => Value::Float(*x),
            Literal::Bool(b) => Value::Bool(*b),
            Literal::Duration(d) => Value::Duration(*d),
        }
    }

    /// The name `| type` gives the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Duration(_) => "duration",
            Value::Array(_) => "array",
            Value::Map(_) => "object",
        }
    }

    /// What `| type` answers, as Tracetest types a value
    /// (`server/expression/types/types.go`): a string by what it holds
    /// (`"42"` a number, `"5ms"` a duration, a JSON object or list of
    /// objects `json`, other bracketed text an `array`), a map `json`.
    pub fn tracetest_type(&self) -> &'static str {
        match self {
            Value::Str(s) => type_of_text(s),
            Value::Map(_) => "json",
            other => other.type_name(),
        }
    }

    /// JSON form, for `| json_path` and for showing arrays and maps.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Duration(d) => serde_json::Value::from(d.as_nanos() as u64),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::str("null"),
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::str(s),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    fn as_number(&self) -> Option<Num> {
        match self {
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(x) => Some(Num::Float(*x)),
            Value::Str(s) => parse_number(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Duration(d) => f.write_str(&format_duration(*d)),
            Value::Array(_) | Value::Map(_) => write!(f, "{}", self.to_json()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(x) => x,
        }
    }
    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.f().partial_cmp(&b.f()),
        }
    }
}

fn parse_number(s: &str) -> Option<Num> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Num::Int(i));
    }
    // Only plain decimal notation: "inf" or "NaN" strings are not numbers.
    if t.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return t
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Num::Float);
    }
    None
}

/// A duration from a string: `500ms`, or a bare number of nanoseconds.
fn duration_of_str(s: &str) -> Option<Duration> {
    parse_duration(s).or_else(|| match parse_number(s)? {
        Num::Int(i) if i >= 0 => Some(Duration::from_nanos(i as u64)),
        _ => None,
    })
}

fn duration_of(v: &Value) -> Option<Duration> {
    match v {
        Value::Duration(d) => Some(*d),
        // Integers compared with durations are nanoseconds, as in Tracetest.
        Value::Int(i) if *i >= 0 => Some(Duration::from_nanos(*i as u64)),
        Value::Float(x) if *x >= 0.0 && x.is_finite() => Some(Duration::from_nanos(*x as u64)),
        Value::Str(s) => duration_of_str(s),
        _ => None,
    }
}

/// A duration as Tracetest compares it: written in the largest unit of
/// ns, us, ms and s that it reaches, rounded to a whole number of that unit
/// (to a tenth for seconds, minutes and hours, the unit becoming minutes
/// from 60 s and hours from 60 min), so that `120.4ms = 120ms` and
/// `1.04s = 1s` hold. Both sides of a comparison with a duration are
/// rounded this way (Tracetest's executor, issue kubeshop/tracetest#1203).
pub fn tracetest_rounded(d: Duration) -> Duration {
    let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    if ns < US {
        return d;
    }
    if ns < S {
        // Go's `%.0f` rounds the binary quotient half to even. Below a
        // second that quotient is a tie only when the remainder is exactly
        // half the unit (any other remainder is a whole number of ns, at
        // least 1e-6 of the unit from the half, far more than an ulp), so
        // integers give the same result, at a fraction of the float
        // divisions' cost: 6 % of the daemon with 100 models comparing
        // durations (BENCHMARKS.md, "Profile", item 8).
        let rounded = if ns < MS {
            half_to_even(ns, US)
        } else {
            half_to_even(ns, MS)
        };
        return Duration::from_nanos(rounded);
    }
    let secs = ns as f64 / S as f64;
    let (x, unit) = if secs < 60.0 {
        (secs, S as f64)
    } else if secs / 60.0 < 60.0 {
        (secs / 60.0, 60.0 * S as f64)
    } else {
        (secs / 3600.0, 3600.0 * S as f64)
    };
    // `%.1f`, read back as Tracetest does: see `round_tenths`.
    let out = round_tenths(x) * unit;
    if out.is_finite() && out >= 0.0 && out < u64::MAX as f64 {
        Duration::from_nanos(out as u64)
    } else {
        d
    }
}

/// `ns` rounded half to even to a whole `unit`. Inlined where `unit` is a
/// constant, so that the division is a multiplication: this runs for every
/// duration compared, millions of times a second with 100 models.
#[inline(always)]
fn half_to_even(ns: u64, unit: u64) -> u64 {
    let (q, r) = (ns / unit, ns % unit);
    let up = match (2 * r).cmp(&unit) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => q % 2 == 1,
    };
    (q + u64::from(up)) * unit
}

/// `x` rounded to a tenth as `%.1f` rounds it (the exact binary value,
/// half to even) and read back. Formatting does that exactly but costs a
/// big-number division per call (`flt2dec::dragon`: 4 % of the evaluation
/// threads on split traffic, BENCHMARKS.md "Profile", item 6); `x * 10`
/// is off the exact product by at most an ulp, which decides the rounding
/// only within a hair of a tie, so only there is the text made.
fn round_tenths(x: f64) -> f64 {
    let scaled = x * 10.0;
    let frac = scaled - scaled.floor();
    if (frac - 0.5).abs() > 1e-6 {
        scaled.round() / 10.0
    } else {
        format!("{x:.1}").parse().unwrap_or(x)
    }
}

fn rounded_durations(left: &Value, right: &Value) -> Option<(Duration, Duration)> {
    Some((
        tracetest_rounded(duration_of(left)?),
        tracetest_rounded(duration_of(right)?),
    ))
}

/// Whether `left == right` under the coercion rules.
pub fn equals(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Bool(b), Value::Str(s)) | (Value::Str(s), Value::Bool(b)) => s
            .trim()
            .eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        (Value::Duration(_), _) | (_, Value::Duration(_)) => {
            matches!(rounded_durations(left, right), Some((a, b)) if a == b)
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equals(x, y))
        }
        (Value::Map(_), Value::Map(_)) => left.to_json() == right.to_json(),
        // A JSON text against a structured value: compared item by item
        // with these same rules, so `regex_group`'s captured "8" equals the
        // 8 of `'["Marcus", 8]'`, as in Tracetest.
        (Value::Array(_) | Value::Map(_), Value::Str(s))
        | (Value::Str(s), Value::Array(_) | Value::Map(_)) => {
            let structured = if matches!(left, Value::Str(_)) {
                right
            } else {
                left
            };
            serde_json::from_str::<serde_json::Value>(s).is_ok_and(|j| match structured {
                Value::Array(_) => equals(structured, &Value::from_json(&j)),
                _ => j == structured.to_json(),
            })
        }
        _ => match (left.as_number(), right.as_number()) {
            (Some(a), Some(b)) => a.cmp(b) == Some(Ordering::Equal),
            _ => false,
        },
    }
}

/// The order of two values, when they can be ordered.
pub fn order(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Duration(_), _) | (_, Value::Duration(_)) => {
            let (a, b) = rounded_durations(left, right)?;
            Some(a.cmp(&b))
        }
        (Value::Str(a), Value::Str(b)) => match (parse_number(a), parse_number(b)) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => Some(a.cmp(b)),
        },
        _ => left.as_number()?.cmp(right.as_number()?),
    }
}

/// Tracetest's type of a text (`GetType`): its number and duration
/// patterns, then JSON, then its array pattern, which is unanchored.
fn type_of_text(s: &str) -> &'static str {
    static PATTERNS: OnceLock<Option<[regex::Regex; 3]>> = OnceLock::new();
    let Some([number, duration, array]) = PATTERNS
        .get_or_init(|| {
            Some([
                regex::Regex::new(r"^[0-9]+(\.[0-9]+)?$").ok()?,
                regex::Regex::new(r"^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)$").ok()?,
                regex::Regex::new(r"\[[^,]*(,[^\],]+)*\]").ok()?,
            ])
        })
        .as_ref()
    else {
        return "string";
    };
    if number.is_match(s) {
        "number"
    } else if duration.is_match(s) {
        "duration"
    } else if json_objects_of_text(s).is_some() {
        "json"
    } else if array.is_match(s) {
        "array"
    } else {
        "string"
    }
}

/// The objects of a JSON text that is an object or a list of objects,
/// which is what Tracetest calls JSON (`jsonContains.parseJson`).
fn json_objects_of_text(s: &str) -> Option<Vec<serde_json::Value>> {
    let t = s.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    objects_of(serde_json::from_str(t).ok()?)
}

fn objects_of(j: serde_json::Value) -> Option<Vec<serde_json::Value>> {
    match j {
        serde_json::Value::Object(_) => Some(vec![j]),
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_object) => {
            Some(items)
        }
        _ => None,
    }
}

/// The objects of a left side for a JSON `contains`: a JSON text, a map,
/// or a list of maps.
fn json_objects_of(v: &Value) -> Option<Vec<serde_json::Value>> {
    match v {
        Value::Str(s) => json_objects_of_text(s),
        Value::Map(_) | Value::Array(_) => objects_of(v.to_json()),
        _ => None,
    }
}

/// Tracetest's `json-contains` (`server/assertions/comparator/basic.go`):
/// every expected object is a subset of some actual object. A subset has
/// each of its keys, nested objects compared as subsets again, anything
/// else (arrays too: same items, same order) equal.
fn json_subset(actual: &[serde_json::Value], expected: &[serde_json::Value]) -> bool {
    expected
        .iter()
        .all(|e| actual.iter().any(|a| object_subset(a, e)))
}

fn object_subset(actual: &serde_json::Value, expected: &serde_json::Value) -> bool {
    let (Some(actual), Some(expected)) = (actual.as_object(), expected.as_object()) else {
        return false;
    };
    expected.iter().all(|(k, e)| match actual.get(k) {
        Some(a @ serde_json::Value::Object(_)) => object_subset(a, e),
        Some(a) => json_same(a, e),
        None => false,
    })
}

/// JSON equality as Go's round trip sees it: numbers by value (`1` is
/// `1.0`), objects whatever their key order.
fn json_same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_same(p, q))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_same(v, w)))
        }
        _ => a == b,
    }
}

/// `left contains right`: with a right side that is a JSON object or list
/// of objects and a left side that is JSON too, Tracetest's subset match
/// ([`json_subset`]); else substring for strings, membership for arrays,
/// key for maps.
pub fn contains(left: &Value, right: &Value) -> bool {
    if let Value::Str(r) = right {
        if let Some(expected) = json_objects_of_text(r) {
            if let Some(actual) = json_objects_of(left) {
                return json_subset(&actual, &expected);
            }
        }
    }
    match left {
        Value::Array(items) => items.iter().any(|x| equals(x, right)),
        Value::Map(entries) => {
            let key = right.to_string();
            entries.iter().any(|(k, _)| **k == *key)
        }
        Value::Str(s) => match right {
            Value::Str(r) => s.contains(&**r),
            other => s.contains(&other.to_string()),
        },
        other => other.to_string().contains(&right.to_string()),
    }
}

/// `v` as a comparison by `op` with `other` reads it, for showing: a
/// duration compared with a duration is rounded as Tracetest rounds it
/// (25.19 ms passing `<= 25ms` shows `25ms`, 499.6 ms failing `< 500ms`
/// shows `500ms`), so the value shown explains the verdict.
pub fn as_compared<'v>(op: CmpOp, v: &'v Value, other: &Value) -> std::borrow::Cow<'v, Value> {
    use std::borrow::Cow;
    let ordered = matches!(
        op,
        CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge
    );
    match v {
        Value::Duration(d) if ordered && duration_of(other).is_some() => {
            Cow::Owned(Value::Duration(tracetest_rounded(*d)))
        }
        _ => Cow::Borrowed(v),
    }
}

/// Applies a comparison; `regex` is the compiled right side of `matches`.
pub fn compare(op: CmpOp, left: &Value, right: &Value, regex: Option<&regex::Regex>) -> bool {
    match op {
        CmpOp::Eq => equals(left, right),
        CmpOp::Ne => !equals(left, right),
        CmpOp::Lt => order(left, right) == Some(Ordering::Less),
        CmpOp::Le => matches!(order(left, right), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => order(left, right) == Some(Ordering::Greater),
        CmpOp::Ge => matches!(
            order(left, right),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        CmpOp::Contains => contains(left, right),
        CmpOp::NotContains => !contains(left, right),
        CmpOp::Matches => match regex {
            Some(re) => match left {
                Value::Str(s) => re.is_match(s),
                other => re.is_match(&other.to_string()),
            },
            None => false,
        },
    }
}

/// Arithmetic on values; `Err` says why the operands do not combine.
pub fn arith(op: ArithOp, left: &Value, right: &Value) -> Result<Value, String> {
    use ArithOp::*;
    let mismatch = || {
        format!(
            "cannot apply '{}' to {} and {}",
            op.as_str(),
            left.type_name(),
            right.type_name()
        )
    };
    match (left, right) {
        (Value::Duration(a), Value::Duration(b)) => match op {
            Add => a
                .checked_add(*b)
                .map(Value::Duration)
                .ok_or_else(|| "duration overflow".to_string()),
            Sub => Ok(Value::Duration(a.saturating_sub(*b))),
            Div if !b.is_zero() => Ok(Value::Float(a.as_nanos() as f64 / b.as_nanos() as f64)),
            Div => Err("division by zero".to_string()),
            Mul => Err(mismatch()),
        },
        (Value::Duration(d), other) | (other, Value::Duration(d)) => {
            let n = other.as_number().ok_or_else(mismatch)?.f();
            let ns = d.as_nanos() as f64;
            let out = match op {
                Add => ns + n,
                Sub if matches!(left, Value::Duration(_)) => ns - n,
                Sub => n - ns,
                Mul => ns * n,
                Div if matches!(left, Value::Duration(_)) && n != 0.0 => ns / n,
                Div => return Err(mismatch()),
            };
            if !out.is_finite() {
                return Err("duration overflow".to_string());
            }
            Ok(Value::Duration(Duration::from_nanos(out.max(0.0) as u64)))
        }
        (Value::Str(a), Value::Str(b))
            if op == Add && (parse_number(a).is_none() || parse_number(b).is_none()) =>
        {
            Ok(Value::Str(smol_str::format_smolstr!("{a}{b}")))
        }
        _ => {
            let (a, b) = match (left.as_number(), right.as_number()) {
                (Some(a), Some(b)) => (a, b),
                _ if op == Add
                    && (matches!(left, Value::Str(_)) || matches!(right, Value::Str(_))) =>
                {
                    return Ok(Value::Str(smol_str::format_smolstr!("{left}{right}")))
                }
                _ => return Err(mismatch()),
            };
            if let (Num::Int(x), Num::Int(y)) = (a, b) {
                let r = match op {
                    Add => x.checked_add(y),
                    Sub => x.checked_sub(y),
                    Mul => x.checked_mul(y),
                    Div if y == 0 => return Err("division by zero".to_string()),
                    Div if x.checked_rem(y) == Some(0) => x.checked_div(y),
                    Div => None,
                };
                if let Some(r) = r {
                    return Ok(Value::Int(r));
                }
            }
            let (x, y) = (a.f(), b.f());
            let r = match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div if y == 0.0 => return Err("division by zero".to_string()),
                Div => x / y,
            };
            Ok(Value::Float(r))
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::round_tenths;

    fn formatted(x: f64) -> f64 {
        format!("{x:.1}").parse().expect("a number")
    }

    #[test]
    fn tenths_are_rounded_as_formatting_rounds_them() {
        // Durations from 1 s to an hour in odd steps, as seconds, minutes
        // or hours.
        for ns in (1_000_000_000u64..3_600_000_000_000).step_by(7_654_321) {
            for x in [ns as f64 / 1e9, ns as f64 / 6e10, ns as f64 / 3.6e12] {
                assert_eq!(round_tenths(x), formatted(x), "{x:e}");
            }
        }
        // Ties and the floats either side of them: half to even on the
        // exact binary value, which only the text gets right.
        for k in 0..100_000u64 {
            let tie = k as f64 / 10.0 + 0.05;
            for step in -3i64..=3 {
                let x = f64::from_bits(tie.to_bits().wrapping_add_signed(step));
                assert_eq!(round_tenths(x), formatted(x), "{x:e}");
            }
        }
    }
}
