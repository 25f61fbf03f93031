//! AUTH (MQTT 5.0 §3.15): enhanced authentication exchanges. MQTT 5 only.

use crate::encode::{Sink, put_packet, put_u8};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::version::ProtocolVersion;

/// A decoded AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    /// Success (0x00), Continue authentication (0x18) or Re-authenticate (0x19).
    pub reason: ReasonCode,
    /// Properties: Authentication Method and Data, Reason String, User Properties.
    pub properties: Properties<'a>,
}

impl<'a> Auth<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let mut out = Self {
            reason: ReasonCode::Success,
            properties: Properties::EMPTY,
        };
        if !r.is_empty() {
            let byte = r.u8("auth reason code")?;
            out.reason = match byte {
                0x00 => ReasonCode::Success,
                0x18 => ReasonCode::ContinueAuthentication,
                0x19 => ReasonCode::ReAuthenticate,
                other => return Err(DecodeError::InvalidReasonCode(other)),
            };
            if !r.is_empty() {
                out.properties = Properties::decode(r, PropertyContext::Auth)?;
            }
        }
        r.finish("AUTH")?;
        Ok(out)
    }

    /// Encodes the AUTH (MQTT 5 only).
    ///
    /// # Errors
    /// Any version before 5, or a reason code AUTH may not carry.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::InvalidValue("AUTH before MQTT 5"));
        }
        let code = self.reason.to_u8();
        if !matches!(code, 0x00 | 0x18 | 0x19) {
            return Err(EncodeError::InvalidValue("reason code not allowed in AUTH"));
        }
        let empty = code == 0 && self.properties.is_empty();
        put_packet(out, 0xf0, |s| {
            if !empty {
                put_u8(s, code);
                self.properties.write(s)?;
            }
            Ok(())
        })
    }
}
