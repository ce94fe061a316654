//! Trace and span identifiers: fixed-size byte arrays, shown as lowercase hex.
//!
//! OTLP carries IDs as `bytes`; everything past the receiver holds them in
//! these types so a malformed length can only be met (and refused) once.

use std::fmt;

/// A 16-byte W3C / OTLP trace ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte W3C / OTLP span ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

/// Why a hex string is not an ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} hex digits, found {found}")]
    Length { expected: usize, found: usize },
    #[error("invalid hex digit {0:?}")]
    Digit(char),
}

macro_rules! id_impl {
    ($ty:ident, $n:literal) => {
        impl $ty {
            /// The all-zero ID, which OTLP treats as "absent".
            pub const INVALID: $ty = $ty([0; $n]);

            /// Takes exactly `$n` bytes, as OTLP requires; `None` otherwise.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $n]>::try_from(bytes).ok().map($ty)
            }

            /// Parses lowercase or uppercase hex of exactly `2 * $n` digits.
            pub fn parse_hex(s: &str) -> Result<Self, IdError> {
                let mut out = [0u8; $n];
                decode_hex(s, &mut out)?;
                Ok($ty(out))
            }

            pub fn is_valid(&self) -> bool {
                *self != Self::INVALID
            }

            pub fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }

            /// Lowercase hex, allocated; use `Display` to avoid the allocation.
            pub fn to_hex(&self) -> String {
                self.to_string()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; 2 * $n];
                encode_hex(&self.0, &mut buf);
                // encode_hex writes only ASCII hex digits.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse_hex(s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

id_impl!(TraceId, 16);
id_impl!(SpanId, 8);

const HEX: &[u8; 16] = b"0123456789abcdef";

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
}

fn decode_hex(s: &str, out: &mut [u8]) -> Result<(), IdError> {
    let bytes = s.as_bytes();
    if bytes.len() != out.len() * 2 {
        return Err(IdError::Length {
            expected: out.len() * 2,
            found: s.chars().count(),
        });
    }
    fn nibble(c: u8) -> Result<u8, IdError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(IdError::Digit(c as char)),
        }
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = TraceId::parse_hex("8adc4032c3ab98a44aef9324e8bab119").unwrap();
        assert_eq!(id.to_string(), "8adc4032c3ab98a44aef9324e8bab119");
        assert_eq!(
            TraceId::parse_hex("8ADC4032C3AB98A44AEF9324E8BAB119").unwrap(),
            id
        );
    }

    #[test]
    fn wrong_length_and_digit_are_errors() {
        assert_eq!(
            SpanId::parse_hex("abc"),
            Err(IdError::Length {
                expected: 16,
                found: 3
            })
        );
        assert_eq!(
            SpanId::parse_hex("zz00000000000000"),
            Err(IdError::Digit('z'))
        );
        assert!(TraceId::from_slice(&[0; 15]).is_none());
        assert!(SpanId::from_slice(&[1; 8]).unwrap().is_valid());
    }
}
