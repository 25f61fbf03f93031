//! SUBACK (MQTT 5.0 §3.9) and UNSUBACK (§3.11): a packet identifier and one code per filter.

use super::{
    ListPacket, PacketId, put_id_and_properties, read_codes, read_id_and_properties, read_packet_id,
};
use crate::encode::{Sink, put_packet};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::version::ProtocolVersion;

/// SUBACK return codes of MQTT 3.1.1 (§3.9.3); 3.1 knew only 0 to 2, 0x80 is accepted for it too.
fn suback_code_ok(version: ProtocolVersion, code: u8) -> bool {
    if version.is_v5() {
        // MQTT 5.0 §3.9.3.
        matches!(
            code,
            0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8f | 0x91 | 0x97 | 0x9e | 0xa1 | 0xa2
        )
    } else {
        matches!(code, 0x00..=0x02 | 0x80)
    }
}

/// UNSUBACK reason codes of MQTT 5.0 §3.11.3.
fn unsuback_code_ok(code: u8) -> bool {
    matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8f | 0x91)
}

/// A decoded (or gateway-built) SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suback<'a> {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
    /// One return or reason code per filter, in order.
    pub codes: &'a [u8],
}

impl<'a> Suback<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (packet_id, properties) = read_id_and_properties(r, version, ListPacket::Suback)?;
        let codes = read_codes(r, "SUBACK return codes", |c| suback_code_ok(version, c))?;
        Ok(Self {
            packet_id,
            properties,
            codes,
        })
    }

    /// Encodes the SUBACK for `version`.
    ///
    /// # Errors
    /// No codes, a code `version` does not define, or properties before MQTT 5.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        if self.codes.is_empty() || self.codes.iter().any(|&c| !suback_code_ok(version, c)) {
            return Err(EncodeError::InvalidValue("SUBACK codes"));
        }
        if !version.is_v5() && !self.properties.is_empty() {
            return Err(EncodeError::InvalidValue("properties before MQTT 5"));
        }
        put_packet(out, 0x90, |s| {
            put_id_and_properties(s, version, self.packet_id, &self.properties)?;
            s.put(self.codes);
            Ok(())
        })
    }
}

/// A decoded UNSUBACK. Before MQTT 5 it carries only the packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsuback<'a> {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
    /// MQTT 5: one reason code per filter. Empty before MQTT 5.
    pub codes: &'a [u8],
}

impl<'a> Unsuback<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, "UNSUBACK packet identifier")?;
        if !version.is_v5() {
            r.finish("UNSUBACK")?;
            return Ok(Self {
                packet_id,
                properties: Properties::EMPTY,
                codes: &[],
            });
        }
        let properties = Properties::decode(r, PropertyContext::Unsuback)?;
        let codes = read_codes(r, "UNSUBACK reason codes", unsuback_code_ok)?;
        Ok(Self {
            packet_id,
            properties,
            codes,
        })
    }

    /// Encodes the UNSUBACK for `version`.
    ///
    /// # Errors
    /// Codes or properties before MQTT 5; no codes or an undefined code in MQTT 5.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        if version.is_v5() {
            if self.codes.is_empty() || self.codes.iter().any(|&c| !unsuback_code_ok(c)) {
                return Err(EncodeError::InvalidValue("UNSUBACK codes"));
            }
        } else if !self.codes.is_empty() || !self.properties.is_empty() {
            return Err(EncodeError::InvalidValue(
                "UNSUBACK codes or properties before MQTT 5",
            ));
        }
        put_packet(out, 0xb0, |s| {
            put_id_and_properties(s, version, self.packet_id, &self.properties)?;
            if version.is_v5() {
                s.put(self.codes);
            }
            Ok(())
        })
    }
}
