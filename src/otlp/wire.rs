//! The protobuf wire format, read by hand: the receivers' ingest scan and
//! the evaluator's span decoding both walk encoded spans without building
//! prost messages (which would allocate a `String` per key and value). What
//! it refuses, it refuses as prost's decoder does.

use std::fmt;

/// The bytes are not a valid protobuf encoding of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const START_GROUP: u8 = 3;
pub(crate) const END_GROUP: u8 = 4;
pub(crate) const FIXED32: u8 = 5;

/// prost's own bound on nested groups and messages.
pub(crate) const RECURSION_LIMIT: usize = 100;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, Malformed> {
        // Most varints on the wire are one byte (field keys, short
        // lengths, small enums): take those inline, the rest out of line.
        if let Some((&b, rest)) = self.buf.split_first() {
            if b < 0x80 {
                self.buf = rest;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, Malformed> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(Malformed("truncated varint"));
            };
            self.buf = rest;
            // The tenth byte may only carry the 64th bit.
            if i == 9 && b > 1 {
                return Err(Malformed("invalid varint"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed("invalid varint"))
    }

    /// A field key: (field number, wire type).
    #[inline]
    pub(crate) fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(Malformed("invalid key value"));
        }
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(Malformed("invalid wire type"));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(Malformed("invalid tag value: 0"));
        }
        Ok((field, wire))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed("buffer underflow"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A `string` field: UTF-8, as prost requires.
    pub(crate) fn string(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.len_delimited()?)
            .map_err(|_| Malformed("invalid string value: data is not UTF-8 encoded"))
    }

    pub(crate) fn len_delimited(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Malformed("buffer underflow"))?;
        self.take(len)
    }

    /// Skips a field the scan does not read, checking its framing as prost
    /// does (groups included). `depth`: how many messages (and groups) the
    /// field is nested in, the message decoded being 0; like prost's
    /// `skip_field`, nothing is skipped at [`RECURSION_LIMIT`].
    pub(crate) fn skip(&mut self, field: u32, wire: u8, depth: usize) -> Result<(), Malformed> {
        if depth >= RECURSION_LIMIT {
            return Err(Malformed("recursion limit reached"));
        }
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => loop {
                let (f, w) = self.key()?;
                if w == END_GROUP {
                    if f != field {
                        return Err(Malformed("unexpected end group tag"));
                    }
                    return Ok(());
                }
                self.skip(f, w, depth + 1)?;
            },
            _ => Err(Malformed("unexpected end group tag")),
        }
    }
}

/// Fails unless a field the scan reads arrived with the wire type it has.
pub(crate) fn expect(wire: u8, want: u8) -> Result<(), Malformed> {
    if wire == want {
        Ok(())
    } else {
        Err(Malformed("invalid wire type"))
    }
}

/// A span's trace ID and name, read from its encoding without decoding the
/// rest: what the evaluator needs to know whether any model wants the trace.
pub fn span_trace_id_and_name(span: &[u8]) -> Result<(&[u8], &str), Malformed> {
    let mut r = Reader::new(span);
    let (mut trace_id, mut name): (&[u8], &str) = (&[], "");
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                expect(wire, LEN)?;
                trace_id = r.len_delimited()?;
            }
            5 => {
                expect(wire, LEN)?;
                name = r.string()?;
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok((trace_id, name))
}
