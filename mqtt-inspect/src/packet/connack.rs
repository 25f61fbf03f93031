//! CONNACK (MQTT 5.0 §3.2, 3.1.1 §3.2): what the gateway sends when it refuses a CONNECT, and what it
//! reads from the broker when it accepts one.

use crate::encode::{Sink, put_packet, put_u8};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::reason::{ConnectReturnCode, ReasonCode};
use crate::version::ProtocolVersion;

/// The result code of a CONNACK, in the vocabulary of its protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackCode {
    /// MQTT 3.1 / 3.1.1 return code.
    V3(ConnectReturnCode),
    /// MQTT 5 reason code.
    V5(ReasonCode),
}

impl ConnackCode {
    /// The code for `version` that says `reason` (an MQTT 5 reason, mapped down for 3.x clients).
    #[must_use]
    pub fn for_version(version: ProtocolVersion, reason: ReasonCode) -> Self {
        if version.is_v5() {
            Self::V5(reason)
        } else {
            Self::V3(reason.to_connect_return_code())
        }
    }

    /// True when the connection was accepted.
    #[must_use]
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Self::V3(ConnectReturnCode::Accepted) | Self::V5(ReasonCode::Success)
        )
    }

    /// The wire byte.
    #[must_use]
    pub fn to_u8(self) -> u8 {
        match self {
            Self::V3(c) => c.to_u8(),
            Self::V5(c) => c.to_u8(),
        }
    }
}

/// Reason codes a CONNACK may carry (MQTT 5.0 §3.2.2.2).
const CONNACK_REASONS: [u8; 22] = [
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97,
    0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
];

/// A decoded CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connack<'a> {
    /// Session Present.
    pub session_present: bool,
    /// The return or reason code.
    pub code: ConnackCode,
    /// MQTT 5 properties (empty before 5).
    pub properties: Properties<'a>,
}

impl<'a> Connack<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let ack_flags = r.u8("connect acknowledge flags")?;
        // [MQTT-3.2.2-1]: bits 7-1 are reserved. MQTT 3.1 left the whole byte unused.
        if ack_flags & 0xfe != 0 && version != ProtocolVersion::V31 {
            return Err(DecodeError::ReservedFlags("CONNACK acknowledge flags"));
        }
        let session_present = ack_flags & 0x01 != 0 && version != ProtocolVersion::V31;
        let byte = r.u8("connect reason code")?;
        let code = if version.is_v5() {
            if !CONNACK_REASONS.contains(&byte) {
                return Err(DecodeError::InvalidReasonCode(byte));
            }
            ConnackCode::V5(ReasonCode::from_u8(byte).ok_or(DecodeError::InvalidReasonCode(byte))?)
        } else {
            ConnackCode::V3(
                ConnectReturnCode::from_u8(byte).ok_or(DecodeError::InvalidReasonCode(byte))?,
            )
        };
        // [MQTT-3.2.2-6] (5.0) / [MQTT-3.2.2-4] (3.1.1): no session on a refusal.
        if session_present && !code.is_success() {
            return Err(DecodeError::ProtocolViolation(
                "session present on a refused CONNACK",
            ));
        }
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Connack)?
        } else {
            Properties::EMPTY
        };
        r.finish("CONNACK")?;
        Ok(Self {
            session_present,
            code,
            properties,
        })
    }

    /// Encodes the CONNACK for `version`.
    ///
    /// # Errors
    /// A code from the other protocol version, or properties on 3.x.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        match (self.code, version.is_v5()) {
            (ConnackCode::V5(_), true) | (ConnackCode::V3(_), false) => {}
            _ => {
                return Err(EncodeError::InvalidValue(
                    "CONNACK code of another protocol version",
                ));
            }
        }
        if !version.is_v5() && !self.properties.is_empty() {
            return Err(EncodeError::InvalidValue("properties before MQTT 5"));
        }
        put_packet(out, 0x20, |s| {
            put_u8(s, u8::from(self.session_present));
            put_u8(s, self.code.to_u8());
            if version.is_v5() {
                self.properties.write(s)?;
            }
            Ok(())
        })
    }
}
