//! Encoding primitives shared by the packet modules, and [`Sink`], which lets one body writer both
//! measure and write a packet (so no packet is written twice or into a temporary buffer).
//!
//! The packets themselves encode in their own modules (`packet/*.rs`), next to their decoders.

use crate::error::EncodeError;
use crate::framing::MAX_REMAINING_LENGTH;

/// Where encoded bytes go: a buffer, or a counter that measures a body before it is written.
pub trait Sink {
    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that only counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counter(pub usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

pub(crate) fn put_u8<S: Sink + ?Sized>(s: &mut S, v: u8) {
    s.put(&[v]);
}

pub(crate) fn put_u16<S: Sink + ?Sized>(s: &mut S, v: u16) {
    s.put(&v.to_be_bytes());
}

pub(crate) fn put_u32<S: Sink + ?Sized>(s: &mut S, v: u32) {
    s.put(&v.to_be_bytes());
}

/// Writes a Variable Byte Integer; values above 268,435,455 are refused.
pub(crate) fn put_varint<S: Sink + ?Sized>(s: &mut S, v: u32) -> Result<(), EncodeError> {
    if v > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge);
    }
    let mut v = v;
    let mut buf = [0u8; 4];
    let mut n = 0;
    for slot in &mut buf {
        let low = u8::try_from(v & 0x7f).unwrap_or(0);
        v >>= 7;
        *slot = if v > 0 { low | 0x80 } else { low };
        n += 1;
        if v == 0 {
            break;
        }
    }
    s.put(buf.get(..n).unwrap_or(&buf));
    Ok(())
}

/// Writes two-byte length-prefixed binary data.
pub(crate) fn put_binary<S: Sink + ?Sized>(
    s: &mut S,
    v: &[u8],
    what: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::FieldTooLong(what))?;
    put_u16(s, len);
    s.put(v);
    Ok(())
}

pub(crate) fn put_str<S: Sink + ?Sized>(
    s: &mut S,
    v: &str,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_binary(s, v.as_bytes(), what)
}

/// Writes a whole packet: the fixed header with `first_byte` and the Remaining Length that `body`
/// produces, then the body. `body` runs twice: once into a [`Counter`], once into `out`.
pub(crate) fn put_packet<F>(out: &mut dyn Sink, first_byte: u8, body: F) -> Result<(), EncodeError>
where
    F: Fn(&mut dyn Sink) -> Result<(), EncodeError>,
{
    let mut counter = Counter(0);
    body(&mut counter)?;
    let len = u32::try_from(counter.0).map_err(|_| EncodeError::PacketTooLarge)?;
    put_u8(out, first_byte);
    put_varint(out, len)?;
    body(out)
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn put(&mut self, bytes: &[u8]) {
        (**self).put(bytes);
    }
}
