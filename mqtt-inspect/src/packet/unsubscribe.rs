//! UNSUBSCRIBE (MQTT 5.0 §3.10): a non-empty list of valid filters.

use super::{PacketId, read_packet_id};
use crate::encode::{Sink, put_packet, put_str, put_u16};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
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
    filters: &'a [u8],
    count: usize,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, "UNSUBSCRIBE packet identifier")?;
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Unsubscribe)?
        } else {
            Properties::EMPTY
        };
        let filters = r.rest();
        let mut fr = Reader::new(filters);
        let mut count = 0usize;
        while !fr.is_empty() {
            TopicFilter::new(fr.utf8("topic filter")?)?;
            count += 1;
        }
        if count == 0 {
            // [MQTT-3.10.3-2]: at least one filter.
            return Err(DecodeError::ProtocolViolation(
                "UNSUBSCRIBE without a topic filter",
            ));
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
            count,
        })
    }

    /// Number of filters.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.count
    }

    /// Always false: an UNSUBSCRIBE holds at least one filter.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The filters, in order.
    #[must_use]
    pub fn filters(&self) -> UnsubscribeFilters<'a> {
        UnsubscribeFilters {
            r: Reader::new(self.filters),
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
            put_u16(s, self.packet_id.get());
            if version.is_v5() {
                self.properties.write(s)?;
            }
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
