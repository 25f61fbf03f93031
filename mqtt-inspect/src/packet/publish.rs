//! PUBLISH (MQTT 5.0 §3.3): the packet on the hot path. Decoding borrows the topic, the properties
//! and the payload from the frame and allocates nothing.

use super::{PacketId, QoS, read_packet_id};
use crate::encode::{Sink, put_packet, put_str, put_u16};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::topic::TopicName;
use crate::version::ProtocolVersion;

/// A decoded PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name as sent: empty only in MQTT 5 with a Topic Alias (resolve it with
    /// [`crate::TopicAliases`]).
    pub topic: &'a str,
    /// Packet Identifier, present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
    /// Application payload.
    pub payload: &'a [u8],
}

impl<'a> Publish<'a> {
    pub(crate) fn decode(
        flags: u8,
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let dup = flags & 0x08 != 0;
        let qos = QoS::from_bits((flags >> 1) & 0x03, "PUBLISH")?;
        let retain = flags & 0x01 != 0;
        if dup && qos == QoS::AtMostOnce {
            // [MQTT-3.3.1-2]: DUP is 0 for QoS 0.
            return Err(DecodeError::ReservedFlags("DUP set on a QoS 0 PUBLISH"));
        }
        let (topic, flags) = r.utf8_scanned("topic name")?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(read_packet_id(r, "PUBLISH packet identifier")?)
        };
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Publish)?
        } else {
            Properties::EMPTY
        };
        // [MQTT-3.3.2-2]: no wildcards; an empty topic only with a Topic Alias (MQTT 5.0 §3.3.2.1).
        if !(topic.is_empty() && properties.topic_alias().is_some()) {
            TopicName::from_scanned(topic, flags)?;
        }
        let payload = r.rest();
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    /// The first byte of the fixed header.
    #[must_use]
    pub fn first_byte(&self) -> u8 {
        0x30 | (u8::from(self.dup) << 3) | (self.qos.bits() << 1) | u8::from(self.retain)
    }

    /// Encodes the PUBLISH for `version`.
    ///
    /// # Errors
    /// A packet identifier missing for QoS > 0 (or present for QoS 0), properties before MQTT 5, or
    /// a topic over 65,535 bytes.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::InvalidValue(
                "packet identifier must be present exactly for QoS > 0",
            ));
        }
        if !version.is_v5() && !self.properties.is_empty() {
            return Err(EncodeError::InvalidValue("properties before MQTT 5"));
        }
        put_packet(out, self.first_byte(), |s| {
            put_str(s, self.topic, "topic name")?;
            if let Some(id) = self.packet_id {
                put_u16(s, id.get());
            }
            if version.is_v5() {
                self.properties.write(s)?;
            }
            s.put(self.payload);
            Ok(())
        })
    }
}
