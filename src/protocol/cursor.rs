//! Checked reads over one packet's body, and the primitive writers the encoder shares.
//!
//! The decoder only ever sees a body whose full length has arrived (framing happens first), so
//! running off the end here means the remaining length was too short for the content: a malformed
//! packet, never "need more bytes".
//!
//! This is the leaf of `protocol`'s module graph (it needs only the error type): `properties`,
//! `decode` and `encode` all build on it, and none of them on each other but in that order.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::DecodeError;

/// The content runs past the end of the declared remaining length (or of a property block).
pub(crate) const SHORT: DecodeError =
    DecodeError::Malformed("MQTT-2.2.3: content runs past the remaining length");

/// Largest value a Variable Byte Integer can carry (four bytes).
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Longest string or binary field: its length is a two-byte integer (MQTT 5.0 section 1.5.4).
pub(crate) const MAX_FIELD: usize = 65_535;

/// Reads from the front of a `Bytes`; every read is bounds-checked and binary data is returned as
/// zero-copy slices of the packet.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the next `n` bytes as a slice of the packet.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.buf.len() {
            return Err(SHORT);
        }
        Ok(self.buf.split_to(n))
    }

    /// Takes everything that is left (PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.buf.try_get_u8().map_err(|_| SHORT)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.buf.try_get_u16().map_err(|_| SHORT)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.buf.try_get_u32().map_err(|_| SHORT)
    }

    /// A Variable Byte Integer (MQTT 5.0 section 1.5.5): at most four bytes, minimally encoded.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf = self.buf.slice(len..);
                Ok(value)
            }
            None => Err(SHORT),
        }
    }

    /// Binary Data: a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String: well-formed UTF-8 (MQTT-1.5.3-1) without U+0000 (MQTT-1.5.3-2).
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str_with(str::to_owned)
    }

    /// Like [`Reader::string`], handing the checked `&str` to `f` so that a topic can go straight
    /// into an `Arc<str>` without an intermediate `String`.
    pub(crate) fn str_with<T>(&mut self, f: impl FnOnce(&str) -> T) -> Result<T, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw)
            .map_err(|_| DecodeError::Malformed("MQTT-1.5.3-1: string is not well-formed UTF-8"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed(
                "MQTT-1.5.3-2: string contains U+0000",
            ));
        }
        Ok(f(s))
    }
}

/// Decodes a Variable Byte Integer from the front of `buf`: `Ok(None)` if it is not complete yet,
/// `Ok(Some((value, bytes used)))` otherwise. More than four bytes, or a non-minimal encoding (a
/// final byte of zero after a continuation), is malformed.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "MQTT-1.5.5-1: variable byte integer not minimally encoded",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::Malformed(
            "MQTT-2.2.3: variable byte integer longer than four bytes",
        ));
    }
    Ok(None)
}

/// Where encoded bytes go: a real buffer, or a [`Counter`] that adds up lengths (and notes fields
/// that did not fit). Both see the same calls, so a length prefix can never disagree with the
/// bytes behind it, whatever the fields hold.
pub(crate) trait Sink {
    fn u8(&mut self, v: u8);
    fn slice(&mut self, s: &[u8]);
    /// A field or block was too long for its length prefix; what was written is cut to fit.
    fn oversized(&mut self) {}

    fn u16(&mut self, v: u16) {
        self.slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.slice(&v.to_be_bytes());
    }
    /// A Variable Byte Integer; values over 268,435,455 are written as that and noted.
    fn varint(&mut self, v: usize) {
        if v > VARINT_MAX as usize {
            self.oversized();
        }
        let mut v = v.min(VARINT_MAX as usize);
        loop {
            let mut byte = (v % 128) as u8;
            v /= 128;
            if v > 0 {
                byte |= 0x80;
            }
            self.u8(byte);
            if v == 0 {
                break;
            }
        }
    }
    /// Binary Data, or a string a peer acts on (topic, identifier, filter): two-byte length,
    /// then the bytes. Over 65,535 bytes only the first 65,535 are written, and noted, so the
    /// encoder refuses the packet rather than send a cut topic or password.
    fn binary(&mut self, data: &[u8]) {
        if data.len() > MAX_FIELD {
            return self.binary_cut(data);
        }
        self.u16(data.len() as u16);
        self.slice(data);
    }
    #[cold]
    fn binary_cut(&mut self, data: &[u8]) {
        self.oversized();
        let head = data.get(..MAX_FIELD).unwrap_or(data);
        self.u16(head.len() as u16);
        self.slice(head);
    }
    /// A block behind a Variable Byte Integer length (a property block): `counted` is the block
    /// as counted already, `write` writes it. A [`Counter`] takes the count instead of counting
    /// again.
    fn prefixed(&mut self, counted: &Counter, write: impl FnOnce(&mut Self)) {
        self.varint(counted.len);
        write(self);
    }
    /// Text for people (Reason String, User Property): over 65,535 bytes it is cut on a char
    /// boundary, which leaves it well-formed UTF-8 and the packet worth sending.
    fn text(&mut self, s: &str) {
        let s = fit_str(s, MAX_FIELD);
        self.u16(s.len() as u16);
        self.slice(s.as_bytes());
    }
}

// Inlined: every PUBLISH to every subscriber goes through these.
impl Sink for BytesMut {
    #[inline]
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    #[inline]
    fn slice(&mut self, s: &[u8]) {
        self.put_slice(s);
    }
}

/// Counts the bytes a [`Sink`] would be given.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    pub(crate) len: usize,
    /// Some field was longer than its length prefix can say (see [`Sink::binary`]).
    pub(crate) oversized: bool,
}

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.len += 1;
    }
    fn slice(&mut self, s: &[u8]) {
        self.len += s.len();
    }
    fn oversized(&mut self) {
        self.oversized = true;
    }
    fn varint(&mut self, v: usize) {
        if v > VARINT_MAX as usize {
            self.oversized = true;
        }
        self.len += varint_len(v);
    }
    fn prefixed(&mut self, counted: &Counter, _: impl FnOnce(&mut Self)) {
        self.varint(counted.len);
        self.len += counted.len;
        self.oversized |= counted.oversized;
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn fit_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Number of bytes `value` takes as a Variable Byte Integer.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = BytesMut::new();
            out.varint(v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(read_varint(&out), Ok(Some((v as u32, out.len()))));
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal() {
        assert!(read_varint(&[0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(read_varint(&[0x80, 0x00]).is_err());
        assert!(read_varint(&[0xFF, 0x80, 0x00]).is_err());
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF]), Ok(None));
        assert_eq!(read_varint(&[]), Ok(None));
    }

    #[test]
    fn strings_are_checked() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0x28]));
        assert!(r.string().is_err());
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', 0, b'b']));
        assert!(r.string().is_err());
        let mut r = Reader::new(Bytes::from_static(&[0, 5, b'a']));
        assert_eq!(r.string(), Err(SHORT));
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0xA9]));
        assert_eq!(r.string().as_deref(), Ok("é"));
    }

    #[test]
    fn long_fields_are_cut_and_noted() {
        let long = vec![b'a'; MAX_FIELD + 10];
        let mut out = BytesMut::new();
        let mut c = Counter::default();
        out.binary(&long);
        c.binary(&long);
        assert_eq!(
            (out.len(), c.len, c.oversized),
            (2 + MAX_FIELD, 2 + MAX_FIELD, true)
        );
        assert_eq!(&out[..2], &[0xFF, 0xFF]);

        // Text is cut on a char boundary, without complaint: 65,536 bytes of two-byte chars.
        let text = "é".repeat(32_768);
        let mut out = BytesMut::new();
        let mut c = Counter::default();
        out.text(&text);
        c.text(&text);
        assert_eq!(
            (out.len(), c.len, c.oversized),
            (2 + 65_534, 2 + 65_534, false)
        );
        let mut r = Reader::new(out.freeze());
        assert_eq!(r.string().map(|s| s.chars().count()), Ok(32_767));

        let mut c = Counter::default();
        c.varint(VARINT_MAX as usize + 1);
        assert!(c.oversized);
        assert_eq!(fit_str("é", 1), "");
        assert_eq!(fit_str("aé", 2), "a");
    }
}
