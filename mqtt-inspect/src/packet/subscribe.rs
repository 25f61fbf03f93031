//! SUBSCRIBE (MQTT 5.0 §3.8): filters with their options, validated at decode and iterated without
//! allocation; and the re-encoding that drops the filters a policy denied.

use super::{
    Entries, ListPacket, PacketId, QoS, put_id_and_properties, read_entries, read_id_and_properties,
};
use crate::encode::{Sink, put_packet, put_str, put_u8};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::reader::Reader;
use crate::topic::TopicFilter;
use crate::version::ProtocolVersion;

/// Retain Handling of a subscription (MQTT 5.0 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    SendAtSubscribe,
    /// 1: send them only if the subscription did not exist.
    SendIfNew,
    /// 2: do not send retained messages.
    DoNotSend,
}

/// Subscription Options (the byte after each filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (MQTT 5).
    pub no_local: bool,
    /// Retain As Published (MQTT 5).
    pub retain_as_published: bool,
    /// Retain Handling (MQTT 5).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with only a QoS, as MQTT 3.x sends them.
    #[must_use]
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            // MQTT 3.1.1 [MQTT-3-8.3-4]: the upper 6 bits are reserved.
            if byte & 0xfc != 0 {
                return Err(DecodeError::ReservedFlags("SUBSCRIBE requested QoS"));
            }
            return Ok(Self::qos(QoS::from_bits(byte, "SUBSCRIBE requested QoS")?));
        }
        // [MQTT-3.8.3-5]: bits 7 and 6 are reserved.
        if byte & 0xc0 != 0 {
            return Err(DecodeError::ReservedFlags("subscription options"));
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidValue("retain handling 3")),
        };
        Ok(Self {
            qos: QoS::from_bits(byte & 0x03, "subscription options")?,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    /// The options byte.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        let rh = match self.retain_handling {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        };
        self.qos.bits()
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | (rh << 4)
    }
}

/// A decoded SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties (Subscription Identifier, User Properties).
    pub properties: Properties<'a>,
    filters: Entries<'a>,
    version: ProtocolVersion,
}

impl<'a> Subscribe<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (packet_id, properties) = read_id_and_properties(r, version, ListPacket::Subscribe)?;
        let filters = read_entries(r, ListPacket::Subscribe, |fr| {
            let filter = TopicFilter::new(fr.utf8("topic filter")?)?;
            let options = SubscriptionOptions::decode(fr.u8("subscription options")?, version)?;
            // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
            if options.no_local && filter.shared().is_some() {
                return Err(DecodeError::ProtocolViolation(
                    "No Local on a shared subscription",
                ));
            }
            Ok(())
        })?;
        Ok(Self {
            packet_id,
            properties,
            filters,
            version,
        })
    }

    /// Number of filters (at least one).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.filters.len()
    }

    /// Always false: a SUBSCRIBE holds at least one filter.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.filters.len() == 0
    }

    /// The filters and their options, in order.
    #[must_use]
    pub fn filters(&self) -> SubscribeFilters<'a> {
        SubscribeFilters {
            r: self.filters.reader(),
            version: self.version,
        }
    }

    /// Encodes this SUBSCRIBE for `version`.
    ///
    /// # Errors
    /// Properties before MQTT 5, or a field too long.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        self.encode_filtered(version, |_| true, out)
    }

    /// Encodes this SUBSCRIBE with only the filters whose index `keep` accepts (the gateway's
    /// rewrite when a policy denies some of them). Packet identifier and properties are kept.
    ///
    /// # Errors
    /// No filter kept, properties before MQTT 5, or a field too long.
    pub fn encode_filtered<F: Fn(usize) -> bool>(
        &self,
        version: ProtocolVersion,
        keep: F,
        out: &mut dyn Sink,
    ) -> Result<(), EncodeError> {
        if !version.is_v5() && !self.properties.is_empty() {
            return Err(EncodeError::InvalidValue("properties before MQTT 5"));
        }
        if !(0..self.filters.len()).any(&keep) {
            return Err(EncodeError::InvalidValue(
                "SUBSCRIBE without a topic filter",
            ));
        }
        put_packet(out, 0x82, |s| {
            put_id_and_properties(s, version, self.packet_id, &self.properties)?;
            for (i, (filter, options)) in self.filters().enumerate() {
                if keep(i) {
                    put_str(s, filter.as_str(), "topic filter")?;
                    put_u8(s, options.to_byte());
                }
            }
            Ok(())
        })
    }
}

/// Iterator over the filters of a [`Subscribe`].
#[derive(Debug, Clone)]
pub struct SubscribeFilters<'a> {
    r: Reader<'a>,
    version: ProtocolVersion,
}

impl<'a> Iterator for SubscribeFilters<'a> {
    type Item = (TopicFilter<'a>, SubscriptionOptions);

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        // Validated at decode: these cannot fail.
        let filter = TopicFilter::trusted(self.r.utf8_trusted("topic filter").ok()?);
        let options =
            SubscriptionOptions::decode(self.r.u8("subscription options").ok()?, self.version)
                .ok()?;
        Some((filter, options))
    }
}
