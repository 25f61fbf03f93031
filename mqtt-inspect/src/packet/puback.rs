//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 §3.4 to §3.7): one shape, four reason-code sets.

use super::{PacketId, PacketType, read_packet_id};
use crate::encode::{Sink, put_packet, put_u8, put_u16};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::version::ProtocolVersion;

/// Which of the four acknowledgement packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckKind {
    /// PUBACK (QoS 1).
    Puback,
    /// PUBREC (QoS 2, step 1).
    Pubrec,
    /// PUBREL (QoS 2, step 2).
    Pubrel,
    /// PUBCOMP (QoS 2, step 3).
    Pubcomp,
}

impl AckKind {
    pub(crate) const fn from_packet_type(t: PacketType) -> Option<Self> {
        match t {
            PacketType::Puback => Some(Self::Puback),
            PacketType::Pubrec => Some(Self::Pubrec),
            PacketType::Pubrel => Some(Self::Pubrel),
            PacketType::Pubcomp => Some(Self::Pubcomp),
            _ => None,
        }
    }

    /// The packet type.
    #[must_use]
    pub const fn packet_type(self) -> PacketType {
        match self {
            Self::Puback => PacketType::Puback,
            Self::Pubrec => PacketType::Pubrec,
            Self::Pubrel => PacketType::Pubrel,
            Self::Pubcomp => PacketType::Pubcomp,
        }
    }

    /// The fixed-header flags: 0b0010 for PUBREL ([MQTT-3.6.1-1]), 0 for the others.
    pub(crate) const fn flags(self) -> u8 {
        match self {
            Self::Pubrel => 0b0010,
            _ => 0,
        }
    }

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Puback => "PUBACK",
            Self::Pubrec => "PUBREC",
            Self::Pubrel => "PUBREL",
            Self::Pubcomp => "PUBCOMP",
        }
    }

    const fn type_nibble(self) -> u8 {
        match self {
            Self::Puback => 4,
            Self::Pubrec => 5,
            Self::Pubrel => 6,
            Self::Pubcomp => 7,
        }
    }

    /// Whether `code` is allowed in this packet (MQTT 5.0 §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1).
    fn allows(self, code: u8) -> bool {
        match self {
            Self::Puback | Self::Pubrec => {
                matches!(
                    code,
                    0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
                )
            }
            Self::Pubrel | Self::Pubcomp => matches!(code, 0x00 | 0x92),
        }
    }
}

/// A decoded PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    /// Which packet.
    pub kind: AckKind,
    /// The Packet Identifier it acknowledges.
    pub packet_id: PacketId,
    /// Reason code (always Success before MQTT 5).
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
}

impl<'a> Ack<'a> {
    /// An acknowledgement with a reason code and no properties.
    #[must_use]
    pub const fn new(kind: AckKind, packet_id: PacketId, reason: ReasonCode) -> Self {
        Self {
            kind,
            packet_id,
            reason,
            properties: Properties::EMPTY,
        }
    }

    pub(crate) fn decode(
        kind: AckKind,
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, kind.name())?;
        let mut reason = ReasonCode::Success;
        let mut properties = Properties::EMPTY;
        if version.is_v5() && !r.is_empty() {
            // MQTT 5.0 §3.4.2.1: Remaining Length 2 means Success with no properties; the property
            // length may be omitted when there are none.
            let byte = r.u8("reason code")?;
            if !kind.allows(byte) {
                return Err(DecodeError::InvalidReasonCode(byte));
            }
            reason = ReasonCode::from_u8(byte).ok_or(DecodeError::InvalidReasonCode(byte))?;
            if !r.is_empty() {
                properties = Properties::decode(r, PropertyContext::Ack)?;
            }
        }
        r.finish(kind.name())?;
        Ok(Self {
            kind,
            packet_id,
            reason,
            properties,
        })
    }

    /// Encodes the acknowledgement: the short form (Remaining Length 2) when it is a Success
    /// without properties, as brokers send it.
    ///
    /// # Errors
    /// A reason code other than Success, or properties, before MQTT 5; a code the packet may not carry.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        let code = self.reason.to_u8();
        let short = code == 0 && self.properties.is_empty();
        if !version.is_v5() && !short {
            return Err(EncodeError::InvalidValue(
                "reason code or properties before MQTT 5",
            ));
        }
        if !self.kind.allows(code) {
            return Err(EncodeError::InvalidValue(
                "reason code not allowed in this acknowledgement",
            ));
        }
        let first_byte = (self.kind.type_nibble() << 4) | self.kind.flags();
        put_packet(out, first_byte, |s| {
            put_u16(s, self.packet_id.get());
            if !short {
                put_u8(s, code);
                if !self.properties.is_empty() {
                    self.properties.write(s)?;
                }
            }
            Ok(())
        })
    }
}
