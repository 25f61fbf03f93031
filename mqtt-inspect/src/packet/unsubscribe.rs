//! UNSUBSCRIBE (MQTT 5.0 §3.10): a non-empty list of valid filters.

use super::{
    Entries, ListPacket, PacketId, put_id_and_properties, read_entries, read_id_and_properties,
};
use crate::encode::{Sink, put_packet, put_str};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::reader::Reader;
use crate::topic::TopicFilter;
use crate::version::ProtocolVersion;

/// A decoded UNSUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
    filters: Entries<'a>,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (packet_id, properties) = read_id_and_properties(r, version, ListPacket::Unsubscribe)?;
        let filters = read_entries(r, ListPacket::Unsubscribe, |fr| {
            TopicFilter::new(fr.utf8("topic filter")?)?;
            Ok(())
        })?;
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    /// Number of filters.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.filters.len()
    }

    /// Always false: an UNSUBSCRIBE holds at least one filter.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.filters.len() == 0
    }

    /// The filters, in order.
    #[must_use]
    pub fn filters(&self) -> UnsubscribeFilters<'a> {
        UnsubscribeFilters {
            r: self.filters.reader(),
        }
    }

    /// Encodes the UNSUBSCRIBE for `version`.
    ///
    /// # Errors
    /// Properties before MQTT 5, or a field too long.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        if !version.is_v5() && !self.properties.is_empty() {
            return Err(EncodeError::InvalidValue("properties before MQTT 5"));
        }
        put_packet(out, 0xa2, |s| {
            put_id_and_properties(s, version, self.packet_id, &self.properties)?;
            for filter in self.filters() {
                put_str(s, filter.as_str(), "topic filter")?;
            }
            Ok(())
        })
    }
}

/// Iterator over the filters of an [`Unsubscribe`].
#[derive(Debug, Clone)]
pub struct UnsubscribeFilters<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for UnsubscribeFilters<'a> {
    type Item = TopicFilter<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        Some(TopicFilter::trusted(
            self.r.utf8_trusted("topic filter").ok()?,
        ))
    }
}
