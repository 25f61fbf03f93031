//! DISCONNECT (MQTT 5.0 §3.14): empty before MQTT 5; a reason code and properties in MQTT 5.

use crate::encode::{Sink, put_packet, put_u8};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::version::ProtocolVersion;

/// Reason codes a DISCONNECT may carry (MQTT 5.0 §3.14.2.1).
fn allowed(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8b | 0x8d..=0x90 | 0x93..=0xa2
    )
}

/// A decoded DISCONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// Reason code (Normal disconnection before MQTT 5).
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
}

impl<'a> Disconnect<'a> {
    /// A DISCONNECT with a reason code and no properties.
    #[must_use]
    pub const fn new(reason: ReasonCode) -> Self {
        Self {
            reason,
            properties: Properties::EMPTY,
        }
    }

    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut out = Self::new(ReasonCode::Success);
        if version.is_v5() && !r.is_empty() {
            let byte = r.u8("disconnect reason code")?;
            if !allowed(byte) {
                return Err(DecodeError::InvalidReasonCode(byte));
            }
            out.reason = ReasonCode::from_u8(byte).ok_or(DecodeError::InvalidReasonCode(byte))?;
            if !r.is_empty() {
                out.properties = Properties::decode(r, PropertyContext::Disconnect)?;
            }
        }
        r.finish("DISCONNECT")?;
        Ok(out)
    }

    /// Encodes the DISCONNECT for `version` (MQTT 5: Remaining Length 0 for a normal one without
    /// properties).
    ///
    /// # Errors
    /// A reason or properties before MQTT 5, or a code a DISCONNECT may not carry.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        let code = self.reason.to_u8();
        let empty = code == 0 && self.properties.is_empty();
        if !version.is_v5() && !empty {
            return Err(EncodeError::InvalidValue("DISCONNECT reason before MQTT 5"));
        }
        if !allowed(code) {
            return Err(EncodeError::InvalidValue(
                "reason code not allowed in DISCONNECT",
            ));
        }
        put_packet(out, 0xe0, |s| {
            if !empty {
                put_u8(s, code);
                if !self.properties.is_empty() {
                    self.properties.write(s)?;
                }
            }
            Ok(())
        })
    }
}
