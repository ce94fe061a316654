//! Durations as users write them: `500ms`, `2s`, `1.5m`, `1h`, and Go's
//! compound form the Collector's configs use (`1m30s`).

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration, expected a number with a unit like 2s")]
    Empty,
    #[error("duration {0:?} has no unit, expected one of ns, us, ms, s, m, h (e.g. 2s)")]
    NoUnit(String),
    #[error("invalid duration {0:?}, expected a number with a unit like 500ms, 2s, 1m or 1h")]
    Invalid(String),
}

/// Parses a duration as Go writes it (the Collector's form): one or more
/// `<number><unit>` parts, unit `ns`, `us` (`µs`), `ms`, `s`, `m` or `h`,
/// e.g. `500ms`, `1.5m`, `1m30s`, `2h45m`; a bare `0` is zero.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(s.to_owned());
    let mut rest = s;
    let mut nanos = 0.0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::NoUnit(s.to_owned()))?;
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| invalid())?;
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        nanos += value * nanos_per_unit;
        rest = next.trim_start();
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Renders a duration in the largest unit that keeps it whole.
pub fn format(d: Duration) -> String {
    let n = d.as_nanos();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if n >= size && n % size == 0 {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}ns")
}

/// `#[serde(with = "crate::duration")]` for `Duration` fields.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(de::Error::custom)
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// `#[serde(default, with = "crate::duration::option")]` for
/// `Option<Duration>` fields: absent is `None`.
pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Some).map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn go_durations_as_the_collector_writes_them() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h45m"), Ok(Duration::from_secs(2 * 3600 + 45 * 60)));
        assert_eq!(parse("1h0m0.5s"), Ok(Duration::from_millis(3_600_500)));
        assert_eq!(parse("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("200 ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("1m30"), Err(DurationError::NoUnit("1m30".into())));
        assert_eq!(
            parse("1m-30s"),
            Err(DurationError::Invalid("1m-30s".into()))
        );
        assert_eq!(parse("m"), Err(DurationError::Invalid("m".into())));
    }

    #[test]
    fn refusals_say_what_is_expected() {
        assert_eq!(parse("5"), Err(DurationError::NoUnit("5".into())));
        assert_eq!(
            parse("5 parsecs"),
            Err(DurationError::Invalid("5 parsecs".into()))
        );
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(parse("1e400s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["2s", "500ms", "5m", "1h", "10us", "7ns"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
