//! Framing: the fixed header, the Remaining Length, and where one packet ends in a byte stream.
//!
//! [`peek_frame`] is incremental: given whatever bytes have arrived, it answers "need N more bytes",
//! "a frame of N bytes is complete", or an error. A frame larger than the caller's maximum is refused
//! as soon as its fixed header is complete, before a byte of its body has to be buffered.

use crate::error::DecodeError;
use crate::reader::decode_varint;

/// The largest Remaining Length the 4-byte encoding can express (MQTT 5.0 §1.5.5).
pub const MAX_REMAINING_LENGTH: u32 = 268_435_455;

/// The largest packet at all: a 5-byte fixed header plus the largest Remaining Length.
pub const MAX_PACKET_SIZE: u32 = MAX_REMAINING_LENGTH + 5;

/// A decoded fixed header (MQTT 5.0 §2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type in the high nibble, flags in the low nibble.
    pub first_byte: u8,
    /// The Remaining Length: bytes after the fixed header.
    pub remaining_length: u32,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: u8,
}

impl FixedHeader {
    /// The packet type number (1 to 15).
    #[must_use]
    pub const fn packet_type(&self) -> u8 {
        self.first_byte >> 4
    }

    /// The four flag bits.
    #[must_use]
    pub const fn flags(&self) -> u8 {
        self.first_byte & 0x0f
    }

    /// Total size of the packet: fixed header plus Remaining Length.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        usize::from(self.header_len).saturating_add(usize_from_u32(self.remaining_length))
    }
}

/// What [`peek_frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A whole frame: `header.frame_len()` bytes at the start of the buffer are one packet.
    Complete(FixedHeader),
    /// More bytes are needed: at least `needed` more (exactly that many once the header is known).
    Incomplete {
        /// Bytes still missing.
        needed: usize,
        /// The fixed header, when it is already complete.
        header: Option<FixedHeader>,
    },
}

/// Looks at the start of `buf` for one MQTT frame of at most `max_packet_size` bytes in total.
///
/// # Errors
/// [`DecodeError::InvalidPacketType`] for type 0, [`DecodeError::MalformedVarInt`] for a Remaining
/// Length that is longer than 4 bytes or not minimal, [`DecodeError::PacketTooLarge`] when the
/// announced size exceeds `max_packet_size` (reported before the body arrives).
pub fn peek_frame(buf: &[u8], max_packet_size: u32) -> Result<Peek, DecodeError> {
    let Some((&first_byte, rest)) = buf.split_first() else {
        return Ok(Peek::Incomplete {
            needed: 2,
            header: None,
        });
    };
    if first_byte >> 4 == 0 {
        return Err(DecodeError::InvalidPacketType(0));
    }
    let Some((remaining_length, len_bytes)) = decode_varint(rest, "remaining length")? else {
        return Ok(Peek::Incomplete {
            needed: 1,
            header: None,
        });
    };
    let header_len = u8::try_from(len_bytes + 1)
        .map_err(|_| DecodeError::MalformedVarInt("remaining length"))?;
    let header = FixedHeader {
        first_byte,
        remaining_length,
        header_len,
    };
    let size = u64::from(header_len) + u64::from(remaining_length);
    if size > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    let total = header.frame_len();
    if buf.len() >= total {
        Ok(Peek::Complete(header))
    } else {
        Ok(Peek::Incomplete {
            needed: total - buf.len(),
            header: Some(header),
        })
    }
}

/// One frame and the bytes after it.
pub(crate) type FrameAndRest<'a> = (&'a [u8], &'a [u8]);

/// Splits one complete frame off the front of `buf`: `Ok(Some((frame, rest)))`, or `Ok(None)` when
/// more bytes are needed.
///
/// # Errors
/// As [`peek_frame`].
pub fn split_frame(
    buf: &[u8],
    max_packet_size: u32,
) -> Result<Option<FrameAndRest<'_>>, DecodeError> {
    match peek_frame(buf, max_packet_size)? {
        Peek::Complete(header) => Ok(buf.split_at_checked(header.frame_len())),
        Peek::Incomplete { .. } => Ok(None),
    }
}

/// Number of bytes the Variable Byte Integer encoding of `value` takes.
#[must_use]
pub const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// `u32` → `usize`, saturating on (theoretical) 16-bit targets.
pub(crate) fn usize_from_u32(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_until_whole() {
        let frame = [0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'];
        for n in 0..frame.len() {
            assert!(
                matches!(peek_frame(&frame[..n], 1024), Ok(Peek::Incomplete { .. })),
                "prefix {n}"
            );
        }
        assert_eq!(
            peek_frame(&frame[..2], 1024),
            Ok(Peek::Incomplete {
                needed: 5,
                header: Some(FixedHeader {
                    first_byte: 0x30,
                    remaining_length: 5,
                    header_len: 2
                })
            })
        );
        let Ok(Peek::Complete(h)) = peek_frame(&frame, 1024) else {
            panic!("complete frame not found")
        };
        assert_eq!(h.frame_len(), 7);
        assert_eq!(h.packet_type(), 3);
    }

    #[test]
    fn oversize_refused_before_the_body() {
        // Remaining Length 268,435,455 announced with only the header present.
        let header = [0x30, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            peek_frame(&header, 256 * 1024),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 262_144
            })
        );
        // Exactly at the limit is fine.
        assert!(matches!(
            peek_frame(&[0x30, 0x02], 4),
            Ok(Peek::Incomplete { needed: 2, .. })
        ));
        assert!(peek_frame(&[0x30, 0x03], 4).is_err());
    }

    #[test]
    fn type_zero_and_five_byte_lengths_refused() {
        assert_eq!(
            peek_frame(&[0x00, 0x00], 10),
            Err(DecodeError::InvalidPacketType(0))
        );
        assert_eq!(
            peek_frame(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], u32::MAX),
            Err(DecodeError::MalformedVarInt("remaining length"))
        );
    }

    #[test]
    fn split_frame_leaves_the_rest() {
        let buf = [0xc0, 0x00, 0xd0, 0x00, 0xe0];
        let (frame, rest) = split_frame(&buf, 10).unwrap().unwrap();
        assert_eq!(frame, &[0xc0, 0x00]);
        assert_eq!(rest, &[0xd0, 0x00, 0xe0]);
        assert_eq!(split_frame(&buf[4..], 10), Ok(None));
    }
}
