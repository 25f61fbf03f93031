//! `Reader<'a>`: the one borrowing cursor through which every byte of a packet is read.
//!
//! This is the only module that indexes into peer bytes; every other module asks it for typed
//! fields, and a read past the end is an error ([`DecodeError::UnexpectedEnd`]), never a panic.

use crate::error::DecodeError;

/// A cursor over a borrowed byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not read yet.
    #[cfg(test)]
    pub(crate) const fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    /// Takes exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        match self.rest.split_first() {
            Some((&b, tail)) => {
                self.rest = tail;
                Ok(b)
            }
            None => Err(DecodeError::UnexpectedEnd(what)),
        }
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        match self.take(2, what)? {
            &[a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::UnexpectedEnd(what)),
        }
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match self.take(4, what)? {
            &[a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DecodeError::UnexpectedEnd(what)),
        }
    }

    /// A Variable Byte Integer (1 to 4 bytes, minimally encoded) ([MQTT-1.5.5-1]).
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match decode_varint(self.rest, what)? {
            Some((value, len)) => {
                self.take(len, what)?;
                Ok(value)
            }
            None => Err(DecodeError::UnexpectedEnd(what)),
        }
    }

    /// Two-byte length-prefixed binary data.
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    /// A UTF-8 Encoded String, validated per [`check_utf8`].
    pub(crate) fn utf8(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.binary(what)?;
        check_utf8(bytes, what)
    }

    /// A UTF-8 Encoded String and the [`scan`] flags of its bytes (for topic checks).
    pub(crate) fn utf8_scanned(
        &mut self,
        what: &'static str,
    ) -> Result<(&'a str, u8), DecodeError> {
        let bytes = self.binary(what)?;
        let flags = scan(bytes);
        check_utf8_scanned(bytes, flags, what).map(|s| (s, flags))
    }

    /// A string that an earlier pass has already validated: well-formedness only.
    pub(crate) fn utf8_trusted(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.binary(what)?;
        core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8(what))
    }

    /// Errors unless every byte has been read.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(what))
        }
    }
}

/// Decodes a Variable Byte Integer at the start of `bytes`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((value, len)))`: `len` bytes encode `value`.
/// A fifth continuation byte, or a non-minimal encoding (a trailing `0x00` group after a
/// continuation), is malformed.
pub(crate) fn decode_varint(
    bytes: &[u8],
    what: &'static str,
) -> Result<Option<(u32, usize)>, DecodeError> {
    // The common case: one byte.
    if let Some(&b) = bytes.first()
        && b & 0x80 == 0
    {
        return Ok(Some((u32::from(b), 1)));
    }
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(4) {
        let shift = 7 * u32::try_from(i).map_err(|_| DecodeError::MalformedVarInt(what))?;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            // Minimal encoding: a last byte of zero after at least one byte is redundant.
            if i > 0 && byte == 0 {
                return Err(DecodeError::MalformedVarInt(what));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::MalformedVarInt(what))
    } else {
        Ok(None)
    }
}

/// What one pass over a string's bytes found (see [`scan`]).
pub(crate) const HIGH: u8 = 1;
/// A C0 control character (U+0000 included) or DEL.
pub(crate) const CONTROL: u8 = 2;
/// A `+` or `#`.
pub(crate) const WILDCARD: u8 = 4;

/// One pass over `bytes`, eight at a time (SWAR on `u64` words): which of [`HIGH`], [`CONTROL`]
/// and [`WILDCARD`] occur. Topic checks and the UTF-8 rules share it, so a topic is read once.
#[inline]
pub(crate) fn scan(bytes: &[u8]) -> u8 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `x` is zero (exact as a yes/no answer).
    const fn has_zero(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }
    let mut high = 0u64;
    let mut control = 0u64;
    let mut wildcard = 0u64;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        let w = u64::from_le_bytes(le);
        high |= w & HI;
        // A byte below 0x20: with its top bit forced on, subtracting 0x20 leaves the top bit
        // clear only for low 7 bits below 0x20 (and never borrows across bytes); `& !w` keeps
        // only the bytes that were ASCII to begin with.
        control |= !((w | HI).wrapping_sub(0x20 * LO)) & !w & HI;
        control |= has_zero(w ^ (0x7f * LO));
        wildcard |= has_zero(w ^ (u64::from(b'+') * LO)) | has_zero(w ^ (u64::from(b'#') * LO));
    }
    let mut flags =
        u8::from(high != 0) | (u8::from(control != 0) << 1) | (u8::from(wildcard != 0) << 2);
    for &b in words.remainder() {
        flags |= (b >> 7)
            | (u8::from(b < 0x20 || b == 0x7f) << 1)
            | (u8::from(b == b'+' || b == b'#') << 2);
    }
    flags
}

/// Checks a UTF-8 Encoded String as [MQTT-1.5.4-1] and [MQTT-1.5.4-2] require, and refuses the code
/// points that [MQTT-1.5.4] allows a receiver to treat as malformed: U+0001..U+001F, U+007F..U+009F
/// and the Unicode non-characters. A security gateway takes that option: such names break log lines
/// and terminal output and no legitimate topic or client id needs them. For the same reason it also
/// refuses the line and paragraph separators U+2028 and U+2029 (line breaks to JavaScript and many
/// log viewers) and the bidirectional embeddings, overrides and isolates U+202A..U+202E and
/// U+2066..U+2069 (they reorder what an operator reads: "Trojan Source", CVE-2021-42574).
pub fn check_utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
    check_utf8_scanned(bytes, scan(bytes), what)
}

/// [`check_utf8`] with the result of [`scan`] already at hand.
#[inline]
pub(crate) fn check_utf8_scanned<'a>(
    bytes: &'a [u8],
    flags: u8,
    what: &'static str,
) -> Result<&'a str, DecodeError> {
    let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8(what))?;
    if flags & CONTROL != 0 {
        return Err(DecodeError::DisallowedCodePoint(what));
    }
    if flags & HIGH != 0 && s.chars().any(is_disallowed) {
        return Err(DecodeError::DisallowedCodePoint(what));
    }
    Ok(s)
}

fn is_disallowed(c: char) -> bool {
    let cp = u32::from(c);
    cp < 0x20
        || (0x7f..=0x9f).contains(&cp)
        || (0xfdd0..=0xfdef).contains(&cp)
        || (cp & 0xfffe) == 0xfffe
        || (0x2028..=0x202e).contains(&cp)
        || (0x2066..=0x2069).contains(&cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries() {
        // [MQTT-1.5.5-1]: 1 to 4 bytes; the table of 2.2.3.
        for (bytes, value) in [
            (&[0x00][..], 0u32),
            (&[0x7f][..], 127),
            (&[0x80, 0x01][..], 128),
            (&[0xff, 0x7f][..], 16_383),
            (&[0x80, 0x80, 0x01][..], 16_384),
            (&[0xff, 0xff, 0x7f][..], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01][..], 2_097_152),
            (&[0xff, 0xff, 0xff, 0x7f][..], 268_435_455),
        ] {
            assert_eq!(
                decode_varint(bytes, "t"),
                Ok(Some((value, bytes.len()))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn varint_refuses_five_bytes_and_non_minimal() {
        assert_eq!(
            decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f], "t"),
            Err(DecodeError::MalformedVarInt("t"))
        );
        assert_eq!(
            decode_varint(&[0x80, 0x00], "t"),
            Err(DecodeError::MalformedVarInt("t"))
        );
        assert_eq!(
            decode_varint(&[0xff, 0x80, 0x00], "t"),
            Err(DecodeError::MalformedVarInt("t"))
        );
        assert_eq!(decode_varint(&[0x80, 0x80], "t"), Ok(None));
        assert_eq!(decode_varint(&[], "t"), Ok(None));
    }

    #[test]
    fn utf8_rules() {
        assert_eq!(check_utf8(b"a/b", "t"), Ok("a/b"));
        assert_eq!(check_utf8("añ/€/😀".as_bytes(), "t"), Ok("añ/€/😀"));
        // [MQTT-1.5.4-2] U+0000
        assert_eq!(
            check_utf8(b"a\0b", "t"),
            Err(DecodeError::DisallowedCodePoint("t"))
        );
        // [MQTT-1.5.4-1] ill-formed UTF-8 and encoded surrogates (U+D800 as ED A0 80)
        assert_eq!(
            check_utf8(&[0xc3, 0x28], "t"),
            Err(DecodeError::InvalidUtf8("t"))
        );
        assert_eq!(
            check_utf8(&[0xed, 0xa0, 0x80], "t"),
            Err(DecodeError::InvalidUtf8("t"))
        );
        // overlong encoding of '/'
        assert_eq!(
            check_utf8(&[0xc0, 0xaf], "t"),
            Err(DecodeError::InvalidUtf8("t"))
        );
        for bad in [
            "\u{1}",
            "a\nb",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
            "\u{fdd0}",
            "\u{fffe}",
            "\u{1ffff}",
            "\u{10ffff}",
            // Line and paragraph separators, bidi embeddings, overrides and isolates.
            "a\u{2028}b",
            "\u{2029}",
            "\u{202a}",
            "x/\u{202e}gpj.exe",
            "\u{2066}",
            "\u{2069}",
        ] {
            assert_eq!(
                check_utf8(bad.as_bytes(), "t"),
                Err(DecodeError::DisallowedCodePoint("t")),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_utf8("\u{a0}\u{fffd}".as_bytes(), "t"),
            Ok("\u{a0}\u{fffd}")
        );
        // Their neighbours stay allowed (dashes, per mille, the word joiner, the math operators
        // after the isolates), as do right-to-left scripts themselves.
        for good in [
            "\u{2010}\u{2027}",
            "\u{2030}",
            "\u{2060}",
            "\u{206a}",
            "\u{5e9}\u{5dc}\u{5d5}\u{5dd}/\u{645}\u{631}\u{62d}\u{628}\u{627}",
        ] {
            assert_eq!(check_utf8(good.as_bytes(), "t"), Ok(good), "{good:?}");
        }
    }

    #[test]
    fn scan_flags() {
        assert_eq!(scan(b"a/b"), 0);
        assert_eq!(scan(b"a/+"), WILDCARD);
        assert_eq!(scan(b"#"), WILDCARD);
        assert_eq!(scan(b"a\0"), CONTROL);
        assert_eq!(scan(b"a\x7f"), CONTROL);
        assert_eq!(scan("é".as_bytes()), HIGH);
        assert_eq!(scan("é\n+".as_bytes()), HIGH | CONTROL | WILDCARD);
        // Every byte value, at every position of a word and in the remainder.
        for len in [1usize, 7, 8, 9, 16, 17] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    let want = (b >> 7)
                        | (u8::from(b < 0x20 || b == 0x7f) << 1)
                        | (u8::from(b == b'+' || b == b'#') << 2);
                    assert_eq!(scan(&v), want, "byte {b:#x} at {pos} of {len}");
                }
            }
        }
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[0x00, 0x05, b'a']);
        assert_eq!(r.utf8("s"), Err(DecodeError::UnexpectedEnd("s")));
        let mut r = Reader::new(&[0x01]);
        assert_eq!(r.u16("n"), Err(DecodeError::UnexpectedEnd("n")));
        let mut r = Reader::new(&[0x01, 0x02, 0x03]);
        assert_eq!(r.u32("n"), Err(DecodeError::UnexpectedEnd("n")));
        assert_eq!(r.remaining(), 3, "a failed read consumes nothing");
    }
}
